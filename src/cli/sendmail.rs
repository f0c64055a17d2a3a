//! `sendmail` as scripts and cron call it: reads a message from standard input and queues
//! it for delivery through `queue_directory/maildrop/`, where the queue manager picks it up
//! (Postfix's `postdrop` + `pickup`), so mail submitted while the daemon is down goes out
//! when it starts.
//!
//! `newaliases` (= `sendmail -bi`/`-I`) runs `postalias` on each table of
//! `alias_database`.
//!
//! Options: `-t` (recipients from `To:`, `Cc:`, `Bcc:`; `Bcc:` removed), `-i`/`-oi` (a line
//! with a single `.` does not end the message), `-f SENDER`/`-r SENDER`, `-F NAME` (full
//! name for a `From:` header that is added when missing), `-bp` (= `mailq`), `-bm`
//! (default), `-q` (= `postqueue -f`), `-C DIR` (configuration directory), and the ignored
//! options Postfix ignores too (`-oXXX`, `-v`, `-N dsn`, `-B type`, `-L`, `-U`).
//!
//! The queue file gets Postfix's local `Received: by HOST (Postfix, from userid UID)` header,
//! missing `Message-Id:`, `Date:`, `From:` headers as cleanup adds them for local mail, and
//! unqualified addresses get `@$myorigin`.
//!
//! Known limits (XXX): no `-bs` (SMTP on stdin), `-N` DSN options are
//! ignored; the maildrop is written directly, so a non-root user needs write access to
//! `maildrop/` (Postfix's setgid `postdrop` is not installed yet).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::config::postfix::{LoadOptions, PostfixConfig};
use crate::queue::file::{self, CleanupRules, FileRecipient, FileSpec};
use crate::queue::header::{mail_date, quote_822_local};

struct Opts {
    config_dir: Option<PathBuf>,
    extract: bool,
    ignore_dots: bool,
    sender: Option<String>,
    full_name: Option<String>,
    recipients: Vec<String>,
    mode: Mode,
}

#[derive(PartialEq)]
enum Mode {
    Deliver,
    ListQueue,
    Flush,
    Newaliases,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        config_dir: None,
        extract: false,
        ignore_dots: false,
        sender: None,
        full_name: None,
        recipients: Vec::new(),
        mode: Mode::Deliver,
    };
    let mut i = 0;
    let value = |i: &mut usize, a: &str, flag: &str| -> Result<String, String> {
        if a.len() > flag.len() {
            Ok(a[flag.len()..].to_string())
        } else {
            *i += 1;
            args.get(*i)
                .cloned()
                .ok_or_else(|| format!("option requires an argument -- '{}'", &flag[1..]))
        }
    };
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            o.recipients.extend(args[i + 1..].iter().cloned());
            break;
        }
        if !a.starts_with('-') || a == "-" {
            o.recipients.push(a.to_string());
        } else if a == "-t" {
            o.extract = true;
        } else if a == "-i" || a == "-oi" {
            o.ignore_dots = true;
        } else if a.starts_with("-f") {
            o.sender = Some(value(&mut i, a, "-f")?);
        } else if a.starts_with("-r") {
            o.sender = Some(value(&mut i, a, "-r")?);
        } else if a.starts_with("-F") {
            o.full_name = Some(value(&mut i, a, "-F")?);
        } else if a.starts_with("-C") {
            o.config_dir = Some(PathBuf::from(value(&mut i, a, "-C")?));
        } else if a.starts_with("-N") {
            value(&mut i, a, "-N")?;
        } else if a.starts_with("-B") {
            value(&mut i, a, "-B")?;
        } else if a.starts_with("-L") {
            value(&mut i, a, "-L")?;
        } else if a == "-bp" {
            o.mode = Mode::ListQueue;
        } else if a == "-q" {
            o.mode = Mode::Flush;
        } else if a == "-bi" || a == "-I" {
            o.mode = Mode::Newaliases;
        } else if a == "-bm" || a == "-v" || a == "-U" || a.starts_with("-o") || a == "-n" {
            // Accepted and ignored, as Postfix does.
        } else {
            return Err(format!("-{} option is not implemented by Postern", &a[1..]));
        }
        i += 1;
    }
    Ok(o)
}

/// Read the message: bare LF or CRLF lines; without `-i` a line with a single `.` ends it.
fn read_message(ignore_dots: bool) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin().lock().read_to_end(&mut buf)?;
    if ignore_dots {
        return Ok(buf);
    }
    let mut out = Vec::with_capacity(buf.len());
    for line in buf.split_inclusive(|&b| b == b'\n') {
        let body = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        if body == b"." {
            break;
        }
        out.extend_from_slice(line);
    }
    Ok(out)
}

/// Addresses in a header value: `Name <a@b>, c@d (Comment)` → `a@b`, `c@d`.
fn header_addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut quoted = false;
    let mut cur = String::new();
    let mut parts = Vec::new();
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            ',' if !quoted && depth == 0 => parts.push(std::mem::take(&mut cur)),
            _ if depth == 0 => cur.push(c),
            _ => {}
        }
    }
    parts.push(cur);
    for p in parts {
        let p = p.trim();
        let addr = match (p.find('<'), p.rfind('>')) {
            (Some(a), Some(b)) if a < b => p[a + 1..b].trim(),
            _ => p.split_whitespace().last().unwrap_or(""),
        };
        // A group name `undisclosed-recipients:;` has no address.
        let addr = addr.trim_end_matches(';');
        if !addr.is_empty() && !addr.ends_with(':') {
            out.push(addr.to_string());
        }
    }
    out
}

/// Split the header block off, collect `-t` recipients, and drop `Bcc:`.
fn extract_recipients(msg: &[u8]) -> (Vec<String>, Vec<u8>) {
    let mut rcpts = Vec::new();
    let mut out = Vec::with_capacity(msg.len());
    let mut in_headers = true;
    let mut current: Option<(String, String, bool)> = None; // name, value, keep
    let flush =
        |cur: &mut Option<(String, String, bool)>, rcpts: &mut Vec<String>, out: &mut Vec<u8>| {
            if let Some((name, value, raw_keep)) = cur.take() {
                let lname = name.to_ascii_lowercase();
                if matches!(lname.as_str(), "to" | "cc" | "bcc") {
                    rcpts.extend(header_addresses(&value));
                }
                if raw_keep && lname != "bcc" {
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(value.as_bytes());
                }
            }
        };
    for line in msg.split_inclusive(|&b| b == b'\n') {
        if in_headers {
            let text = String::from_utf8_lossy(line).into_owned();
            if text.trim_end().is_empty() {
                flush(&mut current, &mut rcpts, &mut out);
                in_headers = false;
                out.extend_from_slice(line);
                continue;
            }
            if (text.starts_with(' ') || text.starts_with('\t')) && current.is_some() {
                if let Some(c) = current.as_mut() {
                    c.1.push_str(&text);
                }
                continue;
            }
            if let Some(colon) = text.find(':')
                && !text[..colon].contains(char::is_whitespace)
            {
                flush(&mut current, &mut rcpts, &mut out);
                current = Some((text[..colon].to_string(), text[colon..].to_string(), true));
                // The value keeps its leading ':' so that the header is written back as is.
                if let Some(c) = current.as_mut() {
                    c.1 = text[colon..].to_string();
                }
                continue;
            }
            flush(&mut current, &mut rcpts, &mut out);
            in_headers = false;
        }
        out.extend_from_slice(line);
    }
    flush(&mut current, &mut rcpts, &mut out);
    let rcpts = rcpts
        .into_iter()
        .map(|r| r.trim_start_matches(':').trim().to_string())
        .collect();
    (rcpts, out)
}

fn has_header(msg: &[u8], name: &str) -> bool {
    for line in msg.split(|&b| b == b'\n') {
        let l = String::from_utf8_lossy(line);
        if l.trim_end().is_empty() {
            return false;
        }
        if let Some((n, _)) = l.split_once(':')
            && n.eq_ignore_ascii_case(name)
        {
            return true;
        }
    }
    false
}

fn qualify(addr: &str, myorigin: &str) -> String {
    if addr.is_empty() || addr.contains('@') {
        addr.to_string()
    } else {
        format!("{addr}@{myorigin}")
    }
}

/// `sendmail [options] [recipient ...]`.
pub fn main(args: &[String]) -> i32 {
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sendmail: fatal: {e}");
            return 64;
        }
    };
    let cfg = match PostfixConfig::load(&LoadOptions {
        config_dir: opts.config_dir.clone(),
        overrides: Vec::new(),
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sendmail: fatal: {e}");
            return 75;
        }
    };
    let _ = crate::log::configure(&cfg);
    let qdir = PathBuf::from(cfg.get("queue_directory").unwrap_or_default().trim());
    match opts.mode {
        Mode::ListQueue => {
            print!("{}", super::postqueue::list_queue(&qdir));
            return 0;
        }
        Mode::Flush => {
            crate::qmgr::wake(&qdir, b'F');
            return 0;
        }
        Mode::Newaliases => return rebuild_aliases(&cfg, opts.config_dir.as_deref()),
        Mode::Deliver => {}
    }
    match submit(&cfg, &opts) {
        Ok(_) => {
            crate::qmgr::wake(&qdir, b'W');
            0
        }
        Err((code, e)) => {
            eprintln!("sendmail: fatal: {e}");
            let ident = crate::log::ident(&cfg, "sendmail");
            crate::log::fatal(&ident, &e);
            crate::log::flush();
            code
        }
    }
}

/// `newaliases`: `postalias` on each table of `alias_database`.
fn rebuild_aliases(cfg: &PostfixConfig, config_dir: Option<&std::path::Path>) -> i32 {
    let list = cfg.get("alias_database").unwrap_or_default();
    let mut code = 0;
    for spec in list
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        let mut args = Vec::new();
        if let Some(d) = config_dir {
            args.push("-c".to_string());
            args.push(d.display().to_string());
        }
        args.push(spec.to_string());
        let rc = super::postmap::postalias_main(&args);
        if rc != 0 {
            code = rc;
        }
    }
    code
}

/// `newaliases [-C DIR]` (also `sendmail -bi`, `sendmail -I`).
pub fn newaliases_main(args: &[String]) -> i32 {
    let mut a = args.to_vec();
    a.push("-bi".into());
    main(&a)
}

/// Queue the message from stdin; returns its queue ID.
fn submit(cfg: &PostfixConfig, opts: &Opts) -> Result<String, (i32, String)> {
    let myorigin = cfg.get("myorigin").unwrap_or_else(|| "localhost".into());
    let uid = nix::unistd::getuid();
    let login = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("{uid}"));
    let sender = qualify(opts.sender.as_deref().unwrap_or(&login), &myorigin);
    let raw = read_message(opts.ignore_dots).map_err(|e| (74, format!("read stdin: {e}")))?;
    let (mut recipients, mut content) = if opts.extract {
        extract_recipients(&raw)
    } else {
        (Vec::new(), raw)
    };
    recipients.extend(opts.recipients.iter().cloned());
    let recipients: Vec<String> = recipients
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| qualify(r, &myorigin))
        .collect();
    if recipients.is_empty() {
        return Err((64, "No recipient addresses found in message header".into()));
    }
    if let Some(name) = &opts.full_name
        && !has_header(&content, "From")
    {
        let mut c = format!("From: {name} <{sender}>\n").into_bytes();
        c.extend_from_slice(&content);
        content = c;
    }
    let queue = crate::queue::Queue::open(cfg).map_err(|e| (75, format!("{e:#}")))?;
    let s = queue.settings().clone();
    if s.message_size_limit > 0 && content.len() as u64 > s.message_size_limit {
        return Err((73, "message file too big".into()));
    }
    let id = queue.new_queue_id();
    let now = SystemTime::now();
    let received = vec![
        format!(
            "Received: by {} ({}, from userid {})",
            s.myhostname, s.mail_name, uid
        ),
        format!("\tid {}; {}", id.as_str(), mail_date(now)),
    ];
    let cleaned = file::cleanup_content(
        &content,
        &CleanupRules {
            received,
            add_missing: true,
            queue_id: id.as_str(),
            long_ids: s.long_queue_ids,
            myhostname: &s.myhostname,
            sender: &sender,
            arrival: now,
            header_size_limit: s.header_size_limit.max(1),
            undisclosed_recipients_header: &s.undisclosed_recipients_header,
        },
    );
    let mut seen = std::collections::HashSet::new();
    let rcpts: Vec<FileRecipient<'_>> = recipients
        .iter()
        .filter(|r| seen.insert(r.to_string()))
        .map(|r| FileRecipient {
            address: r,
            orcpt: format!("rfc822;{}", quote_822_local(r)),
            notify: 0,
        })
        .collect();
    let data = file::build(&FileSpec {
        queue_id: id.as_str(),
        arrival: now,
        sender: &sender,
        recipients: rcpts,
        rewrite_local: true,
        envid: None,
        ret: None,
        encoding: None,
        smtputf8: 0,
        attrs: vec![("log_message_origin", "local".to_string())],
        lines: cleaned.lines,
        line_length_limit: s.line_length_limit,
    });
    let maildrop = s.queue_directory.join("maildrop");
    let tmp = maildrop.join(format!(".tmp.{}.{}", std::process::id(), id.as_str()));
    let dest = maildrop.join(id.as_str());
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(&data)?;
        // Owner-execute marks the file complete (Postfix's convention).
        f.set_permissions(std::fs::Permissions::from_mode(0o700))?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dest)?;
        std::fs::File::open(&maildrop)?.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        queue.release_queue_id(&id);
        return Err((75, format!("cannot write {}: {e}", dest.display())));
    }
    queue.release_queue_id(&id);
    Ok(id.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_addresses_parse() {
        assert_eq!(
            header_addresses(" Bob <bob@x.org>, carol@y.org (Carol), \"A, B\" <ab@z>"),
            vec!["bob@x.org", "carol@y.org", "ab@z"]
        );
    }

    #[test]
    fn extract_drops_bcc() {
        let (r, m) = extract_recipients(b"To: a@x\nBcc: b@y,\n c@z\nSubject: s\n\nTo: not@me\n");
        assert_eq!(r, vec!["a@x", "b@y", "c@z"]);
        assert_eq!(m, b"To: a@x\nSubject: s\n\nTo: not@me\n");
    }
}
