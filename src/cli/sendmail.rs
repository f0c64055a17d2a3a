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
//! missing `Message-Id:`, `Date:`, `From:` headers as cleanup adds them for local mail
//! (the queue's one builder, [`crate::queue::cleanup`]), and unqualified addresses get
//! `@$myorigin`.
//!
//! `-bs` speaks SMTP on standard input and output: smtpd's own session core in Postfix's
//! stand-alone mode (see [`smtp_session`]); each message goes into `maildrop/` as above.
//!
//! A user who cannot write `maildrop/` hands the built queue file to the set-group-ID
//! `$command_directory/postdrop` ([`crate::cli::postdrop`]), as Postfix's sendmail does.
//!
//! Known limits (XXX): `-N` DSN options are ignored.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::postfix::{LoadOptions, PostfixConfig};
use crate::queue::cleanup::Origin;
use crate::queue::header::mail_date;
use crate::queue::{Envelope, Queue, QueueError, QueueId, Recipient};
use crate::smtpd::session::{Maildrop, Session, drive};
use crate::smtpd::transport::{TlsFail, TlsUp, Transport};

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
    /// `-bs`: an SMTP dialogue on standard input and output.
    Smtp,
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
            // Options end at the first recipient (Postfix's getopt with `+`).
            o.recipients.extend(args[i..].iter().cloned());
            break;
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
        } else if a == "-bs" {
            o.mode = Mode::Smtp;
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

/// Postfix 3.7 sendmail's option letters (`GETOPT_LIST` in sendmail.c).
const GETOPT_LIST: &str = "A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx";

/// The getopt(3) diagnostics Postfix's sendmail gives for `args` (`invalid option -- 'Z'`,
/// `option requires an argument -- 'h'`): options end at the first non-option (Postfix
/// uses getopt with `+` on Linux) or `--`; a bare `-q` is skipped as Postfix does.
fn getopt_errors(args: &[String]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" || !a.starts_with('-') || a == "-" {
            break;
        }
        if a == "-q" {
            i += 1;
            continue;
        }
        let chars: Vec<char> = a[1..].chars().collect();
        let mut k = 0;
        while k < chars.len() {
            let c = chars[k];
            match GETOPT_LIST.find(c).filter(|_| c != ':') {
                None => errors.push(format!("invalid option -- '{c}'")),
                Some(pos) if GETOPT_LIST[pos + 1..].starts_with(':') => {
                    if k + 1 == chars.len() {
                        i += 1;
                        if i >= args.len() {
                            errors.push(format!("option requires an argument -- '{c}'"));
                        }
                    }
                    break;
                }
                Some(_) => {}
            }
            k += 1;
        }
        i += 1;
    }
    errors
}

/// `sendmail [options] [recipient ...]`.
pub fn main(args: &[String]) -> i32 {
    // An option Postfix's sendmail does not know: as Postfix, getopt's words while the
    // arguments are scanned for -C, then main.cf is read, then the words again and
    // `fatal: usage: sendmail [options]`, exit 75 (measured with 3.7.11).
    let bad = getopt_errors(args);
    if let Some(first) = bad.first() {
        for e in &bad {
            eprintln!("sendmail: {e}");
        }
        let config_dir = args
            .iter()
            .position(|a| a == "-C")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
            .or_else(|| {
                args.iter()
                    .find_map(|a| a.strip_prefix("-C").filter(|d| !d.is_empty()))
                    .map(PathBuf::from)
            });
        if let Err(e) = PostfixConfig::load(&LoadOptions {
            config_dir,
            overrides: Vec::new(),
        }) {
            eprintln!("sendmail: fatal: {e}");
            return 75;
        }
        eprintln!("sendmail: {first}");
        eprintln!("sendmail: fatal: usage: sendmail [options]");
        return 75;
    }
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
            // SIGPIPE stays ignored in sendmail: a reader that went away ends the
            // listing quietly.
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            let _ = super::mailq::write_queue(&qdir, &mut out);
            return 0;
        }
        Mode::Flush => {
            crate::qmgr::wake(&qdir, b'F');
            return 0;
        }
        Mode::Newaliases => return rebuild_aliases(&cfg, opts.config_dir.as_deref()),
        Mode::Smtp => {
            return smtp_session(&cfg);
        }
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

/// `sendmail -bs`: an SMTP dialogue on standard input/output whose messages go into
/// `maildrop/` like the other sendmail paths. Postfix runs its smtpd in stand-alone mode
/// (`smtpd -S`) for this; so does this: the dialogue is smtpd's session core
/// ([`crate::smtpd::session::Session::stand_alone`]) driven over standard input and
/// output, with smtpd.c's stand-alone rules: no restriction is evaluated, no TLS, no AUTH,
/// no connection limits, ETRN refused with `458 Unable to queue messages`, the client
/// `localhost[127.0.0.1]` (`Received: from HELO (localhost [127.0.0.1])`); replies,
/// limits (`message_size_limit`, `smtpd_timeout`, the error limits) and log lines
/// (`postfix/smtpd[PID]: connect from localhost[127.0.0.1]`, `ID: client=…`) are those of
/// the SMTP server. Compared with Postfix 3.7.11 in `compat-fixtures/postsuper/sendmail-bs-*`.
fn smtp_session(cfg: &PostfixConfig) -> i32 {
    let queue = match crate::queue::Queue::open(cfg) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("sendmail: fatal: {e:#}");
            return 75;
        }
    };
    let qdir = PathBuf::from(cfg.get("queue_directory").unwrap_or_default().trim());
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sendmail: fatal: {e}");
            return 75;
        }
    };
    let svc = crate::smtpd::SmtpdService::stand_alone(cfg);
    let drop = Arc::new(BsMaildrop {
        cfg: cfg.clone(),
        queue,
        qdir,
    });
    let session = Session::stand_alone(svc, drop);
    rt.block_on(drive(
        session,
        StdioTransport {
            input: tokio::io::stdin(),
            output: tokio::io::stdout(),
            closed: false,
        },
    ));
    // The session's log lines are written by the log thread: out before the exit.
    crate::log::flush();
    0
}

/// Where `sendmail -bs` puts each message: `maildrop/`, through postdrop when this user
/// may not write there, then a wake-up for the queue manager.
struct BsMaildrop {
    cfg: PostfixConfig,
    queue: Arc<Queue>,
    qdir: PathBuf,
}

impl Maildrop for BsMaildrop {
    fn new_queue_id(&self) -> QueueId {
        self.queue.new_queue_id_unfiled()
    }

    fn release_queue_id(&self, id: &QueueId) {
        self.queue.release_queue_id(id);
    }

    fn drop_message(
        &self,
        id: &QueueId,
        sender: &str,
        recipients: &[String],
        content: &[u8],
        helo: &str,
        esmtp: bool,
    ) -> Result<(), String> {
        drop_into_maildrop(
            &self.cfg,
            &self.queue,
            id,
            sender,
            recipients,
            content,
            Some(&SmtpOrigin { helo, esmtp }),
        )
        .map_err(|(_, e)| e)?;
        crate::qmgr::wake(&self.qdir, b'W');
        Ok(())
    }
}

/// Standard input and output as an SMTP session's byte stream (no TLS).
struct StdioTransport {
    input: tokio::io::Stdin,
    output: tokio::io::Stdout,
    /// A write failed: the session sees the end of its input next.
    closed: bool,
}

impl Transport for StdioTransport {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        if self.closed {
            return Ok(0);
        }
        self.input.read(buf).await
    }

    async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        if self.closed {
            return Ok(());
        }
        self.output.write_all(b).await?;
        self.output.flush().await
    }

    fn close(&mut self) {
        self.closed = true;
    }

    async fn start_tls(
        &mut self,
        _cfg: Arc<rustls::ServerConfig>,
        _timeout: std::time::Duration,
    ) -> Result<TlsUp, TlsFail> {
        Err(TlsFail::Unavailable)
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
    let myorigin = cfg.myorigin().unwrap_or_else(|| "localhost".into());
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
    let queue = Queue::open(cfg).map_err(|e| (75, format!("{e:#}")))?;
    let id = queue.new_queue_id_unfiled();
    let r = drop_into_maildrop(cfg, &queue, &id, &sender, &recipients, &content, None);
    queue.release_queue_id(&id);
    r.map(|()| id.as_str().to_string())
}

/// How `sendmail -bs` received the message, for its `Received:` header.
struct SmtpOrigin<'a> {
    helo: &'a str,
    esmtp: bool,
}

/// Write one message into `maildrop/` under `id` (Postfix's postdrop): cleanup's header fixes, the
/// local `Received:` header, fsync, rename, fsync of the directory.
fn drop_into_maildrop(
    cfg: &PostfixConfig,
    queue: &Queue,
    id: &QueueId,
    sender: &str,
    recipients: &[String],
    content: &[u8],
    smtp: Option<&SmtpOrigin<'_>>,
) -> Result<(), (i32, String)> {
    let uid = nix::unistd::getuid();
    let s = queue.settings().clone();
    let now = SystemTime::now();
    let received = match smtp {
        // As Postfix's smtpd in `sendmail -bs` mode writes it (recorded from 3.7.11).
        Some(o) => {
            let mut r = vec![
                format!("Received: from {} (localhost [127.0.0.1])", o.helo),
                format!(
                    "\tby {} ({}) with {} id {}",
                    s.myhostname,
                    s.mail_name,
                    if o.esmtp { "ESMTP" } else { "SMTP" },
                    id.as_str()
                ),
            ];
            if recipients.len() == 1 {
                r.push(format!("\tfor <{}>; {}", recipients[0], mail_date(now)));
            } else {
                let last = r.len() - 1;
                r[last] = format!("{}; {}", r[last], mail_date(now));
            }
            r
        }
        None => vec![
            format!(
                "Received: by {} ({}, from userid {})",
                s.myhostname, s.mail_name, uid
            ),
            format!("\tid {}; {}", id.as_str(), mail_date(now)),
        ],
    };
    let env = Envelope {
        sender: sender.to_string(),
        recipients: recipients
            .iter()
            .map(|r| Recipient {
                address: r.clone(),
                ..Recipient::default()
            })
            .collect(),
        ..Envelope::default()
    };
    let origin = Origin::Local {
        received: &received,
    };
    let data = match s.build_file(id.as_str(), &env, origin, content, now) {
        Ok(built) => built.data,
        Err(QueueError::MessageTooBig { .. }) => return Err((73, "message file too big".into())),
        Err(e) => return Err((75, e.to_string())),
    };
    let maildrop = s.queue_directory.join("maildrop");
    if nix::unistd::access(&maildrop, nix::unistd::AccessFlags::W_OK).is_err() {
        // Not allowed to write maildrop/ (mode 0730, group postdrop): hand the file to the
        // set-group-ID postdrop, as Postfix's sendmail does.
        return run_postdrop(cfg, &data);
    }
    let dest = maildrop.join(id.as_str());
    let write = || {
        crate::queue::store::write_durable(
            &maildrop,
            id.as_str(),
            &data,
            crate::queue::store::MAILDROP,
            None,
        )
    };
    write().map_err(|e| (75, format!("cannot write {}: {e}", dest.display())))
}

/// Pipe a complete queue file to `$command_directory/postdrop -c DIR` (or the `postdrop`
/// beside this program) and wait for it.
fn run_postdrop(cfg: &PostfixConfig, data: &[u8]) -> Result<(), (i32, String)> {
    let dir = cfg.get("command_directory").unwrap_or_default();
    let mut prog = std::path::PathBuf::from(dir.trim()).join("postdrop");
    if !prog.is_file()
        && let Some(here) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|p| p.join("postdrop")))
    {
        prog = here;
    }
    let mut child = std::process::Command::new(&prog)
        .arg("-c")
        .arg(&cfg.config_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| (75, format!("cannot run {}: {e}", prog.display())))?;
    if let Some(mut w) = child.stdin.take() {
        let _ = w.write_all(data);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| (75, format!("{}: {e}", prog.display())))?;
    if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err((
            out.status.code().unwrap_or(75),
            if text.is_empty() {
                format!("{} failed", prog.display())
            } else {
                text
            },
        ))
    }
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
