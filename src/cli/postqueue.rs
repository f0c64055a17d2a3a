//! `postqueue -p` / `mailq`, `postqueue -f`, and `postsuper -d`: the queue tools admins use,
//! with Postfix 3.7's output.
//!
//! `mailq` lists `maildrop/`, `incoming/`, `active/` (`*` after the ID), `deferred/` and
//! `hold/` (`!`), each message as `ID SIZE ARRIVAL SENDER`, then the reasons from the defer
//! log (right-aligned in 78 columns, each printed once for consecutive recipients sharing
//! it) with their recipients, then the recipients still pending; `-- N Kbytes in M
//! Requests.` at the end (the sum of the message sizes shown, as Postfix 3.7 counts), or `Mail queue is empty`.
//! Files are listed in directory order, as Postfix's showq does.
//!
//! `postsuper -h ID|ALL` puts messages on hold (`hold/`, not delivered, `!` in `mailq`,
//! logged `ID: placed on hold`), `-H` releases them to `deferred/` (`ID: released from
//! hold`), due at the queue manager's next deferred scan.
//!
//! `postsuper -d ID` / `-d ALL` [`queue`] deletes queue files (and their defer logs),
//! logging `ID: removed` and `Deleted: N messages` under `postfix/postsuper` (echoed to a
//! terminal as `postsuper: Deleted: N messages`), as Postfix does.
//!
//! `postqueue -j` prints one JSON object per message as Postfix 3.7 does (`queue_name`,
//! `queue_id`, `arrival_time`, `message_size`, `forced_expire`, `sender`, `recipients` with
//! `address` and, when deferred, `delay_reason`).
//!
//! Known limits (XXX): no `-s site`, `-i ID`; `postsuper` has no `-r`, `-s`, `-p`;
//! `mailq` reads the queue directly (Postfix asks the `showq` service), so it needs read
//! access to the queue (root or `mail_owner`).

use std::path::{Path, PathBuf};

use crate::config::postfix::{LoadOptions, PostfixConfig};
use crate::log;
use crate::qmgr::defer;
use crate::queue::header::quote_822_local;

fn load(config_dir: Option<PathBuf>, prog: &str) -> Option<PostfixConfig> {
    match PostfixConfig::load(&LoadOptions {
        config_dir,
        overrides: Vec::new(),
    }) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("{prog}: fatal: {e}");
            None
        }
    }
}

/// `asctime(3)` of a time in local time, without the newline (`Sat Nov 28 14:37:12 2026`).
fn asctime(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: a zeroed tm is valid; localtime_r fills it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    unsafe { libc::localtime_r(&secs, &mut tm) };
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[tm.tm_wday.rem_euclid(7) as usize],
        MONTHS[tm.tm_mon.rem_euclid(12) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        tm.tm_year + 1900
    )
}

/// Queue files of one queue in directory order (one hash level for hashed queues).
fn scan(dir: &Path, hashed: bool, out: &mut Vec<(String, PathBuf)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if hashed && e.file_type().is_ok_and(|t| t.is_dir()) {
            scan(&e.path(), false, out);
        } else if crate::queue::QueueId::parse(&name).is_some() {
            out.push((name, e.path()));
        }
    }
}

/// The `mailq` listing of the queue under `queue_directory`.
pub fn list_queue(queue_directory: &Path) -> String {
    let mut out = String::new();
    let mut count = 0usize;
    let mut total: u64 = 0;
    for (queue, hashed, status) in [
        ("maildrop", false, ""),
        ("incoming", true, ""),
        ("active", true, "*"),
        ("deferred", true, ""),
        ("hold", true, "!"),
    ] {
        let mut files = Vec::new();
        scan(&queue_directory.join(queue), hashed, &mut files);
        for (id, path) in files {
            let Ok(msg) = crate::queue::read_queue_file(&path) else {
                continue;
            };
            let fsize = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if count == 0 {
                out.push_str(&format!(
                    "{:<11} {:>7} {:<20} {}\n",
                    "-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------"
                ));
            } else {
                out.push('\n');
            }
            count += 1;
            let size = if msg.message_size > 0 {
                msg.message_size
            } else {
                fsize
            };
            total += size;
            let sender = if msg.sender.is_empty() {
                "MAILER-DAEMON".to_string()
            } else {
                quote_822_local(&msg.sender)
            };
            let date = asctime(msg.arrival);
            out.push_str(&format!(
                "{:<11} {:>7} {:<20.20} {}\n",
                format!("{id}{status}"),
                size,
                date + " ",
                sender
            ));
            let mut shown = std::collections::HashSet::new();
            let mut last_reason: Option<String> = None;
            for e in defer::read_log(queue_directory, &id) {
                if last_reason.as_deref() != Some(e.reason.as_str()) {
                    let pad = 76usize.saturating_sub(e.reason.len());
                    out.push_str(&format!("{:pad$}({})\n", "", e.reason));
                    last_reason = Some(e.reason.clone());
                }
                out.push_str(&format!(
                    "{:<11} {:>7} {:<20} {}\n",
                    "", "", "", e.recipient
                ));
                shown.insert(e.recipient);
            }
            for r in msg.recipients.iter().filter(|r| !r.done) {
                let a = quote_822_local(&r.address);
                if !shown.contains(&a) {
                    out.push_str(&format!("{:<11} {:>7} {:<20} {}\n", "", "", "", a));
                }
            }
        }
    }
    if count == 0 {
        out.push_str("Mail queue is empty\n");
    } else {
        out.push_str(&format!(
            "\n-- {} Kbytes in {} Request{}.\n",
            total / 1024,
            count,
            if count == 1 { "" } else { "s" }
        ));
    }
    out
}

/// A JSON string as Postfix's `postqueue -j` writes it (`quote_for_json`).
fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '\u{8}' => o.push_str("\\b"),
            '\u{c}' => o.push_str("\\f"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04X}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The `postqueue -j` listing: one JSON object per message, in `mailq` order.
pub fn list_queue_json(queue_directory: &Path) -> String {
    let mut out = String::new();
    for (queue, hashed) in [
        ("maildrop", false),
        ("incoming", true),
        ("active", true),
        ("deferred", true),
        ("hold", false),
    ] {
        let mut files = Vec::new();
        scan(&queue_directory.join(queue), hashed, &mut files);
        for (id, path) in files {
            let Ok(msg) = crate::queue::read_queue_file(&path) else {
                continue;
            };
            let size = if msg.message_size > 0 {
                msg.message_size
            } else {
                std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
            };
            let arrival = msg
                .arrival
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let sender = if msg.sender.is_empty() {
                "MAILER-DAEMON".to_string()
            } else {
                quote_822_local(&msg.sender)
            };
            let mut rcpts = Vec::new();
            let mut shown = std::collections::HashSet::new();
            for e in defer::read_log(queue_directory, &id) {
                rcpts.push(format!(
                    "{{\"address\": {}, \"delay_reason\": {}}}",
                    json_str(&e.recipient),
                    json_str(&e.reason)
                ));
                shown.insert(e.recipient);
            }
            for r in msg.recipients.iter().filter(|r| !r.done) {
                let a = quote_822_local(&r.address);
                if shown.insert(a.clone()) {
                    rcpts.push(format!("{{\"address\": {}}}", json_str(&a)));
                }
            }
            out.push_str(&format!(
                "{{\"queue_name\": {}, \"queue_id\": {}, \"arrival_time\": {arrival}, \"message_size\": {size}, \"forced_expire\": false, \"sender\": {}, \"recipients\": [{}]}}\n",
                json_str(queue),
                json_str(&id),
                json_str(&sender),
                rcpts.join(", ")
            ));
        }
    }
    out
}

/// `mailq [-c DIR]` (also `sendmail -bp`).
pub fn mailq_main(args: &[String]) -> i32 {
    let mut dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-C" || a == "-c" {
            dir = it.next().map(PathBuf::from);
        }
    }
    let Some(cfg) = load(dir, "mailq") else {
        return 75;
    };
    print_queue(&cfg)
}

fn print_queue(cfg: &PostfixConfig) -> i32 {
    let qdir = PathBuf::from(cfg.get("queue_directory").unwrap_or_default().trim());
    print!("{}", list_queue(&qdir));
    0
}

const POSTQUEUE_USAGE: &str =
    "usage: postqueue -f | postqueue -i queueid | postqueue -j | postqueue -p | postqueue -s site";

/// `postqueue [-c DIR] -p | -f`.
pub fn postqueue_main(args: &[String]) -> i32 {
    let mut dir = None;
    let mut mode = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" => dir = it.next().map(PathBuf::from),
            "-p" | "-f" | "-j" => mode = Some(a.clone()),
            "-v" => {}
            other => {
                eprintln!("postqueue: fatal: option {other} is not implemented by Postern");
                return 64;
            }
        }
    }
    let Some(cfg) = load(dir, "postqueue") else {
        return 75;
    };
    match mode.as_deref() {
        Some("-p") => print_queue(&cfg),
        Some("-j") => {
            let qdir = PathBuf::from(cfg.get("queue_directory").unwrap_or_default().trim());
            print!("{}", list_queue_json(&qdir));
            0
        }
        Some("-f") => {
            let qdir = PathBuf::from(cfg.get("queue_directory").unwrap_or_default().trim());
            if crate::qmgr::wake(&qdir, b'F') {
                0
            } else {
                let ident = log::ident(&cfg, "postqueue");
                log::fatal(&ident, "Cannot flush mail queue - mail system is down");
                eprintln!("postqueue: fatal: Cannot flush mail queue - mail system is down");
                log::flush();
                69
            }
        }
        _ => {
            eprintln!("postqueue: fatal: {POSTQUEUE_USAGE}");
            64
        }
    }
}

/// What `postsuper` does to the messages it selects.
#[derive(Clone, Copy, PartialEq)]
enum SuperOp {
    Delete,
    Hold,
    Release,
}

/// `postsuper [-c DIR] [-d ID|ALL|-] [-h ID|ALL|-] [-H ID|ALL|-] [queue]`.
pub fn postsuper_main(args: &[String]) -> i32 {
    let mut dir = None;
    let mut ops: Vec<(SuperOp, String)> = Vec::new();
    let mut queue: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let op = match a.as_str() {
            "-c" => {
                dir = it.next().map(PathBuf::from);
                continue;
            }
            "-d" => SuperOp::Delete,
            "-h" => SuperOp::Hold,
            "-H" => SuperOp::Release,
            "-v" => continue,
            q if !q.starts_with('-') => {
                queue = Some(q.to_string());
                continue;
            }
            other => {
                eprintln!("postsuper: fatal: option {other} is not implemented by Postern");
                return 1;
            }
        };
        match it.next() {
            Some(id) => ops.push((op, id.clone())),
            None => {
                eprintln!(
                    "postsuper: fatal: option requires an argument -- '{}'",
                    a.trim_start_matches('-')
                );
                return 1;
            }
        }
    }
    let Some(cfg) = load(dir, "postsuper") else {
        return 1;
    };
    let _ = log::configure(&cfg);
    let ident = log::ident(&cfg, "postsuper");
    let qdir = PathBuf::from(cfg.get("queue_directory").unwrap_or_default().trim());
    if ops.iter().any(|(_, i)| i == "-") {
        use std::io::BufRead;
        let stdin_ids: Vec<String> = std::io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .flat_map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .collect();
        let mut expanded = Vec::new();
        for (op, id) in ops {
            if id == "-" {
                expanded.extend(stdin_ids.iter().map(|i| (op, i.clone())));
            } else {
                expanded.push((op, id));
            }
        }
        ops = expanded;
    }
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    for kind in [SuperOp::Delete, SuperOp::Hold, SuperOp::Release] {
        let ids: Vec<&String> = ops
            .iter()
            .filter(|(o, _)| *o == kind)
            .map(|(_, i)| i)
            .collect();
        if ids.is_empty() {
            continue;
        }
        let all = ids.iter().any(|i| *i == "ALL");
        let queues: Vec<&str> = match (&queue, kind) {
            (Some(q), _) => vec![q.as_str()],
            (None, SuperOp::Delete) => vec!["hold", "incoming", "active", "deferred", "maildrop"],
            (None, SuperOp::Hold) => vec!["incoming", "active", "deferred"],
            (None, SuperOp::Release) => vec!["hold"],
        };
        let mut n = 0;
        for q in queues {
            let mut files = Vec::new();
            scan(&qdir.join(q), q != "maildrop" && q != "hold", &mut files);
            for (id, path) in files {
                if !(all || ids.iter().any(|i| **i == id)) {
                    continue;
                }
                let done = match kind {
                    SuperOp::Delete => std::fs::remove_file(&path).is_ok().then(|| {
                        let _ = std::fs::remove_file(defer::log_path(&qdir, &id));
                        "removed"
                    }),
                    SuperOp::Hold => {
                        let _ = std::fs::create_dir_all(qdir.join("hold"));
                        std::fs::rename(&path, qdir.join("hold").join(&id))
                            .is_ok()
                            .then_some("placed on hold")
                    }
                    SuperOp::Release => {
                        let d = qdir.join("deferred").join(id.get(..1).unwrap_or("0"));
                        let _ = std::fs::create_dir_all(&d);
                        // Due at once: the queue manager's next deferred scan takes it.
                        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
                            let _ = f.set_modified(std::time::SystemTime::now());
                        }
                        std::fs::rename(&path, d.join(&id))
                            .is_ok()
                            .then_some("released from hold")
                    }
                };
                if let Some(what) = done {
                    log::info(&ident, &format!("{id}: {what}"));
                    n += 1;
                }
            }
        }
        if n > 0 {
            let summary = match kind {
                SuperOp::Delete => format!("Deleted: {n} message{}", plural(n)),
                SuperOp::Hold => format!("Placed on hold: {n} message{}", plural(n)),
                SuperOp::Release => format!("Released from hold: {n} message{}", plural(n)),
            };
            log::info(&ident, &summary);
            // Postfix echoes its messages to stderr only when that is a terminal.
            if log::stderr_is_tty() {
                eprintln!("postsuper: {summary}");
            }
        }
    }
    log::flush();
    0
}
