//! `postcat [-behoq]` prints queue files as Postfix 3.7's postcat does (`postcat(1)`).

use std::path::PathBuf;

use super::mailq::asctime;
use super::postqueue::load;

/// Postfix's `rec_type_name()`: the names `postcat` prints for record types.
fn rec_type_name(t: u8) -> &'static str {
    match t {
        b'W' => "warning_message_time",
        b'C' => "message_size",
        b'T' => "message_arrival_time",
        b'c' => "queue_file_create_time",
        b'F' => "sender_fullname",
        b'I' => "content_inspector",
        b'S' => "sender",
        b'D' => "done_recipient",
        b'@' => "canceled_recipient",
        b'R' => "recipient",
        b'O' => "original_recipient",
        b'A' => "named_attribute",
        b'p' => "pointer_record",
        b'M' => "message_content",
        b'L' => "unterminated_text",
        b'N' => "regular_text",
        b'w' => "padding",
        b'X' => "extracted_info",
        b'r' => "return_receipt",
        b'e' => "errors_to",
        b'P' => "priority",
        b'V' => "verp_delimiters",
        b'E' => "message_end",
        b'>' => "redirect_to",
        b'f' => "flags",
        b'<' => "dsn_return_flags",
        b'i' => "dsn_envelope_id",
        b'o' => "dsn_original_recipient",
        b'n' => "dsn_notify_flags",
        _ => "unknown_record_type",
    }
}

/// Postfix's `is_header()`: a header name (printable ASCII without `:`, optional white space)
/// followed by `:`.
fn is_header(s: &[u8]) -> bool {
    let mut saw_space = false;
    for (i, &c) in s.iter().enumerate() {
        if c == b':' {
            return i > 0;
        }
        if c == b' ' || c == b'\t' {
            if i == 0 {
                return false;
            }
            saw_space = true;
            continue;
        }
        if saw_space || !c.is_ascii() || c.is_ascii_control() {
            return false;
        }
    }
    false
}

const PC_ENV: u32 = 1;
const PC_HEADER: u32 = 2;
const PC_BODY: u32 = 4;
const PC_OFFSET: u32 = 8;

/// `postcat.c`'s state machine over one queue file, appending to `out`. `Err` is the text of
/// a fatal error (already partly printed output stays in `out`).
fn postcat_file(buf: &[u8], path: &str, flags: u32, out: &mut Vec<u8>) -> Result<(), String> {
    use crate::queue::record::records;
    #[derive(PartialEq)]
    enum St {
        Env,
        Header,
        Body,
    }
    const ENVELOPE_TYPES: &[u8] = b"CTcFILSDRO/WVA>K<ion";
    if let Some(&c) = buf.first()
        && !ENVELOPE_TYPES.contains(&c)
    {
        eprintln!("postcat: warning: {path}: input is not a valid queue file");
        return Ok(());
    }
    let marker = |out: &mut Vec<u8>, off: usize, text: &str| {
        if flags & PC_OFFSET != 0 {
            out.extend_from_slice(format!("{off:9} ").as_bytes());
        }
        out.extend_from_slice(format!("*** {text} {path} ***\n").as_bytes());
    };
    if flags & PC_ENV != 0 {
        out.extend_from_slice(format!("*** ENVELOPE RECORDS {path} ***\n").as_bytes());
    }
    let mut state = St::Env;
    let mut do_print = flags & PC_ENV != 0;
    let mut prev_type = 0u8;
    let (mut data_offset, mut data_size): (i64, i64) = (-1, -1);
    let mut pos = 0usize;
    let text = |t: u8| t == b'L' || t == b'N';
    let ctime = |secs: i64| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
        format!("{}\n", asctime(t))
    };
    loop {
        let offset = pos;
        let rec = match records(buf.get(pos..).unwrap_or_default()).next() {
            None => break,
            Some(Err(_)) => return Err("record read error".into()),
            Some(Ok(r)) => r,
        };
        pos += (rec.offset as usize)
            + 1
            + {
                let mut n = 1;
                let mut l = rec.data.len() >> 7;
                while l != 0 {
                    n += 1;
                    l >>= 7;
                }
                n
            }
            + rec.data.len();
        let (t, data) = (rec.kind, rec.data);
        if text(t) {
            if state == St::Header
                && flags & (PC_HEADER | PC_BODY) != 0
                && prev_type != b'L'
                && !(is_header(data) || data.first().is_some_and(|&c| c == b' ' || c == b'\t'))
            {
                state = St::Body;
                do_print = flags & PC_BODY != 0;
                if !do_print && flags & PC_ENV == 0 {
                    break;
                }
                if !do_print && data_offset >= 0 && data_size >= 0 {
                    pos = (data_offset + data_size) as usize;
                    continue;
                }
            }
        } else if t == b'M' {
            if state != St::Env {
                eprintln!("postcat: warning: {path}: out-of-order message content marker");
            }
            if flags & PC_ENV != 0 {
                marker(out, offset, "MESSAGE CONTENTS");
            }
            if flags & (PC_HEADER | PC_BODY) == 0 && data_offset >= 0 && data_size >= 0 {
                pos = (data_offset + data_size) as usize;
            }
            state = St::Header;
            do_print = flags & PC_HEADER != 0;
            continue;
        } else if t == b'X' {
            if state == St::Env {
                eprintln!("postcat: warning: {path}: out-of-order extracted segment marker");
            }
            if do_print && prev_type == b'L' {
                out.push(b'\n');
            }
            if flags & PC_ENV != 0 {
                marker(out, offset, "HEADER EXTRACTED");
            }
            state = St::Env;
            do_print = flags & PC_ENV != 0;
            if !do_print {
                break;
            }
            continue;
        } else if t == b'E' {
            if state != St::Env {
                eprintln!("postcat: warning: {path}: out-of-order message end marker");
            }
            if flags & PC_ENV != 0 {
                marker(out, offset, "MESSAGE FILE END");
            }
            break;
        } else if t == b'p' {
            let s = String::from_utf8_lossy(data).into_owned();
            if do_print {
                if flags & PC_OFFSET != 0 {
                    out.extend_from_slice(format!("{offset:9} ").as_bytes());
                }
                out.extend_from_slice(format!("{}: {s}\n", rec_type_name(t)).as_bytes());
            }
            match s.trim().parse::<usize>() {
                Ok(p) if p < buf.len() => pos = p,
                _ => return Err("bad pointer record, or input is not seekable".into()),
            }
            continue;
        } else if t == b'C' {
            let s = String::from_utf8_lossy(data).into_owned();
            if do_print {
                if flags & PC_OFFSET != 0 {
                    out.extend_from_slice(format!("{offset:9} ").as_bytes());
                }
                out.extend_from_slice(format!("{}: {s}\n", rec_type_name(t)).as_bytes());
            }
            if data_size >= 0 || data_offset >= 0 {
                eprintln!("postcat: warning: file contains multiple size records");
            } else {
                let mut f = s.split_whitespace().map(|x| x.parse::<i64>().unwrap_or(0));
                data_size = f.next().unwrap_or(0);
                data_offset = f.next().unwrap_or(0);
                if data_size <= 0 || data_offset <= 0 {
                    return Err(format!(
                        "invalid size record: {}",
                        s.chars().take(100).collect::<String>()
                    ));
                }
                if flags & PC_ENV == 0 {
                    pos = data_offset as usize;
                    state = St::Header;
                    do_print = flags & PC_HEADER != 0;
                }
            }
            continue;
        }
        if !do_print || t == b'w' {
            continue;
        }
        if flags & PC_OFFSET != 0 {
            out.extend_from_slice(format!("{offset:9} ").as_bytes());
        }
        let s = String::from_utf8_lossy(data);
        match t {
            b'T' | b'W' => {
                let secs = s
                    .split_whitespace()
                    .next()
                    .and_then(|x| x.parse::<i64>().ok())
                    .unwrap_or(0);
                out.extend_from_slice(format!("{}: {}", rec_type_name(t), ctime(secs)).as_bytes());
            }
            b'L' => {
                if state == St::Env {
                    out.extend_from_slice(format!("{}: ", rec_type_name(t)).as_bytes());
                }
                out.extend_from_slice(data);
                if state == St::Env || flags & PC_OFFSET != 0 {
                    out.push(b'\n');
                }
            }
            b'N' => {
                out.extend_from_slice(data);
                out.push(b'\n');
            }
            b'A' => match s.split_once('=') {
                Some((n, v)) if !n.trim().is_empty() => {
                    let (n, v) = (n.trim(), v.trim());
                    if n == "create_time" {
                        let secs = v.parse::<i64>().unwrap_or(0);
                        out.extend_from_slice(format!("create_time: {}", ctime(secs)).as_bytes());
                    } else {
                        out.extend_from_slice(format!("named_attribute: {n}={v}\n").as_bytes());
                    }
                }
                _ => eprintln!(
                    "postcat: warning: {path}: malformed attribute: missing '=' after attribute name: {}",
                    s.chars().take(100).collect::<String>()
                ),
            },
            _ => out.extend_from_slice(format!("{}: {s}\n", rec_type_name(t)).as_bytes()),
        }
        prev_type = t;
    }
    Ok(())
}

/// `postcat [-behoqv] [-c config_dir] [files...]`: print queue files as Postfix 3.7's postcat
/// does (`-q`: the arguments are queue IDs, looked up in the queues under `queue_directory`).
pub fn postcat_main(args: &[String]) -> i32 {
    use std::io::Write;
    let mut dir = None;
    let mut flags = 0u32;
    let mut by_id = false;
    let mut names = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-c" {
            dir = it.next().map(PathBuf::from);
            continue;
        }
        if let Some(opts) = a.strip_prefix('-')
            && !opts.is_empty()
            && names.is_empty()
        {
            for c in opts.chars() {
                match c {
                    'b' => flags |= PC_BODY,
                    'e' => flags |= PC_ENV,
                    'h' => flags |= PC_HEADER,
                    'o' => flags |= PC_OFFSET,
                    'q' => by_id = true,
                    'r' | 's' | 'v' => {}
                    other => {
                        eprintln!("postcat: fatal: invalid option -- '{other}'");
                        return 1;
                    }
                }
            }
            continue;
        }
        names.push(a.clone());
    }
    if flags & (PC_ENV | PC_HEADER | PC_BODY) == 0 {
        flags |= PC_ENV | PC_HEADER | PC_BODY;
    }
    let Some(cfg) = load(dir, "postcat") else {
        return 1;
    };
    let qdir = PathBuf::from(cfg.get("queue_directory").unwrap_or_default().trim());
    let stdout = std::io::stdout();
    let run = |buf: &[u8], path: &str| -> bool {
        let mut out = Vec::new();
        let r = postcat_file(buf, path, flags, &mut out);
        let _ = stdout.lock().write_all(&out);
        let _ = stdout.lock().flush();
        if let Err(e) = r {
            eprintln!("postcat: fatal: {e}");
            return false;
        }
        true
    };
    if names.is_empty() {
        if by_id {
            eprintln!("postcat: fatal: no queue ID specified");
            return 1;
        }
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf);
        return if run(&buf, "stdin") { 0 } else { 1 };
    }
    for name in &names {
        if by_id {
            let mut found = None;
            for q in [
                "maildrop", "incoming", "active", "deferred", "hold", "saved",
            ] {
                let mut cands = vec![format!("{q}/{name}")];
                if let Some(c) = name.chars().next() {
                    cands.push(format!("{q}/{c}/{name}"));
                }
                for c in cands {
                    if let Ok(b) = std::fs::read(qdir.join(&c)) {
                        found = Some((c, b));
                        break;
                    }
                }
                if found.is_some() {
                    break;
                }
            }
            let Some((path, buf)) = found else {
                eprintln!("postcat: fatal: open queue file {name}: No such file or directory");
                return 1;
            };
            if !run(&buf, &path) {
                return 1;
            }
        } else {
            match std::fs::read(name) {
                Ok(b) => {
                    if !run(&b, name) {
                        return 1;
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    let msg = msg.split(" (os error").next().unwrap_or(&msg);
                    eprintln!("postcat: fatal: open {name}: {msg}");
                    return 1;
                }
            }
        }
    }
    0
}
