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
//! postsuper run by root works as `mail_owner` (as Postfix's does), so that hash directories
//! it makes are the mail system's.
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
//! `postcat [-behoq]` prints queue files as Postfix 3.7's postcat does (`postcat(1)`).
//!
//! `postsuper -r ID|ALL` requeues (to `maildrop/`), `postsuper -s` checks the structure;
//! `postqueue -s site` and `-i ID` move deferred mail to `incoming/` and wake the queue
//! manager, as Postfix's flush service does.
//!
//! Known limits (XXX): `postsuper` has no `-p`, `-S`, `-e`, `-f`;
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

use crate::sys::time::asctime;

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
    let mut operand = String::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" => dir = it.next().map(PathBuf::from),
            "-p" | "-f" | "-j" => mode = Some(a.clone()),
            "-s" | "-i" => {
                mode = Some(a.clone());
                match it.next() {
                    Some(v) => operand = v.clone(),
                    None => {
                        eprintln!(
                            "postqueue: fatal: option requires an argument -- '{}'",
                            &a[1..]
                        );
                        return 64;
                    }
                }
            }
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
    // Log lines go where main.cf says (`maillog_file`), stderr gets Postfix's echo.
    let _ = log::configure(&cfg);
    match mode.as_deref() {
        Some("-p") => print_queue(&cfg),
        Some("-j") => {
            let qdir = PathBuf::from(cfg.get("queue_directory").unwrap_or_default().trim());
            print!("{}", list_queue_json(&qdir));
            0
        }
        Some("-s") => flush_site(&cfg, &operand),
        Some("-i") => flush_one(&cfg, &operand),
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

/// `postqueue -s`/`-i` with no queue manager listening: Postfix's words when its flush
/// service cannot be reached.
fn flush_down(cfg: &PostfixConfig) -> i32 {
    let ident = log::ident(cfg, "postqueue");
    log::warning(&ident, "connect to public/flush: Connection refused");
    log::fatal(&ident, "Cannot flush mail queue - mail system is down");
    eprintln!("postqueue: warning: connect to public/flush: Connection refused");
    eprintln!("postqueue: fatal: Cannot flush mail queue - mail system is down");
    log::flush();
    69
}

/// What Postfix's flush service does with a deferred message it is asked to deliver now
/// (`flush_send_path()`): the time stamp is set to now and the file moves to `incoming/`,
/// where the queue manager takes it at its next look (it is woken as well).
fn send_deferred_now(qdir: &Path, id: &str, path: &Path) -> bool {
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
    std::fs::rename(path, qdir.join("incoming").join(id)).is_ok()
}

/// `postqueue -s site`: deliver now the deferred mail with a pending recipient in `site`.
/// As in Postfix, the site must be eligible for the flush service (`fast_flush_domains`,
/// default `$relay_domains`, which matches subdomains).
///
/// XXX Postfix's flush service keeps per-site logs of the deferred messages; Postern finds
/// them by reading the deferred queue files' pending recipients.
fn flush_site(cfg: &PostfixConfig, site: &str) -> i32 {
    let ident = log::ident(cfg, "postqueue");
    let list: Vec<String> = cfg
        .get("fast_flush_domains")
        .unwrap_or_default()
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let parents = cfg
        .get("parent_domain_matches_subdomains")
        .unwrap_or_default()
        .split(|c: char| c == ',' || c.is_whitespace())
        .any(|f| f == "fast_flush_domains");
    if !crate::resolve::lists::domain_list_match(&list, site, parents) {
        let why = format!("Flush service is not configured for destination \"{site}\"");
        log::fatal(&ident, &why);
        eprintln!("postqueue: fatal: {why}");
        log::flush();
        return 69;
    }
    let qdir = PathBuf::from(cfg.get("queue_directory").unwrap_or_default().trim());
    if !crate::qmgr::wake(&qdir, b'W') {
        return flush_down(cfg);
    }
    let mut files = Vec::new();
    scan(&qdir.join("deferred"), true, &mut files);
    for (id, path) in files {
        let Ok(msg) = crate::queue::read_queue_file(&path) else {
            continue;
        };
        let for_site = msg.recipients.iter().filter(|r| !r.done).any(|r| {
            r.address
                .rsplit_once('@')
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(site))
        });
        if for_site {
            send_deferred_now(&qdir, &id, &path);
        }
    }
    crate::qmgr::wake(&qdir, b'W');
    log::flush();
    0
}

/// `postqueue -i ID`: deliver one deferred message now. An ID that is not in the deferred
/// queue is not an error (Postfix's flush service ignores it as well).
fn flush_one(cfg: &PostfixConfig, id: &str) -> i32 {
    let qdir = PathBuf::from(cfg.get("queue_directory").unwrap_or_default().trim());
    if !crate::qmgr::wake(&qdir, b'W') {
        return flush_down(cfg);
    }
    if crate::queue::QueueId::parse(id).is_some() {
        let path = qdir
            .join("deferred")
            .join(id.get(..1).unwrap_or("0"))
            .join(id);
        if path.is_file() {
            send_deferred_now(&qdir, id, &path);
        }
    }
    crate::qmgr::wake(&qdir, b'W');
    0
}

/// What `postsuper` does to the messages it selects.
#[derive(Clone, Copy, PartialEq)]
enum SuperOp {
    Delete,
    Hold,
    Release,
    Requeue,
}

/// `postsuper [-c DIR] [-s] [-d ID|ALL|-] [-h …] [-H …] [-r …] [queue]`.
///
/// Output as Postfix 3.7's postsuper (recorded in `compat-fixtures/postsuper/`): each
/// message named by its ID is logged `ID: removed` (`placed on hold`, `released from
/// hold`, `requeued`), `ALL` logs only the summary, and the summary (`Deleted: N
/// messages`, also for 0) is logged for every operation asked for; every line goes to
/// the log and, prefixed `postsuper: `, to stderr.
pub fn postsuper_main(args: &[String]) -> i32 {
    let mut dir = None;
    let mut ops: Vec<(SuperOp, String)> = Vec::new();
    let mut queue: Option<String> = None;
    let mut structure = false;
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
            "-r" => SuperOp::Requeue,
            "-s" => {
                structure = true;
                continue;
            }
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
    // As Postfix's postsuper: run by root, it works as mail_owner, so that what it creates
    // in the queue (hash subdirectories) is the mail system's.
    if crate::sys::privs::is_root() {
        let dropped =
            crate::sys::privs::mail_owner(&cfg).and_then(|o| crate::sys::privs::drop_to(&o));
        if let Err(e) = dropped {
            log::fatal(&ident, &e);
            eprintln!("postsuper: fatal: {e}");
            return 1;
        }
    }
    let say = |line: &str| {
        log::info(&ident, line);
        eprintln!("postsuper: {line}");
    };
    let warn = |line: &str| {
        log::warning(&ident, line);
        eprintln!("postsuper: warning: {line}");
    };
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
    if structure {
        structure_check(&qdir, queue.as_deref(), &warn);
    }
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    for kind in [
        SuperOp::Delete,
        SuperOp::Hold,
        SuperOp::Release,
        SuperOp::Requeue,
    ] {
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
            (None, SuperOp::Requeue) => vec!["hold", "incoming", "active", "deferred"],
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
                        let _ = crate::queue::make_queue_dir(&qdir.join("hold"));
                        std::fs::rename(&path, qdir.join("hold").join(&id))
                            .is_ok()
                            .then_some("placed on hold")
                    }
                    SuperOp::Release => {
                        let d = qdir.join("deferred").join(id.get(..1).unwrap_or("0"));
                        let _ = crate::queue::make_queue_dir(&d);
                        // Due at once: the queue manager's next deferred scan takes it.
                        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
                            let _ = f.set_modified(std::time::SystemTime::now());
                        }
                        std::fs::rename(&path, d.join(&id))
                            .is_ok()
                            .then_some("released from hold")
                    }
                    SuperOp::Requeue => requeue(&qdir, &id, &path).then_some("requeued"),
                };
                if let Some(what) = done {
                    // Postfix names each message only when it was named on the command
                    // line; ALL gets the summary alone.
                    if !all {
                        say(&format!("{id}: {what}"));
                    }
                    n += 1;
                }
            }
        }
        let summary = match kind {
            SuperOp::Delete => format!("Deleted: {n} message{}", plural(n)),
            SuperOp::Hold => format!("Placed on hold: {n} message{}", plural(n)),
            SuperOp::Release => format!("Released from hold: {n} message{}", plural(n)),
            SuperOp::Requeue => format!("Requeued: {n} message{}", plural(n)),
        };
        say(&summary);
    }
    log::flush();
    0
}

/// `postsuper -r`: as Postfix, the file moves to `maildrop/` (mode 0700, owned by the
/// queue's owner), where it is taken up again as newly submitted mail (Postern's queue
/// manager logs the `pickup` line and resolves every pending recipient afresh); its defer
/// log goes, so old reasons are not shown again. XXX Postfix's pickup gives it a new queue
/// ID through cleanup (re-running header and address rewriting); Postern keeps the ID.
fn requeue(qdir: &Path, id: &str, path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let dest = qdir.join("maildrop").join(id);
    if dest.symlink_metadata().is_ok() {
        return false;
    }
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    if std::fs::rename(path, &dest).is_err() {
        return false;
    }
    let _ = std::fs::remove_file(defer::log_path(qdir, id));
    for log in ["bounce", "trace"] {
        let _ = std::fs::remove_file(qdir.join(log).join(id.get(..1).unwrap_or("0")).join(id));
    }
    true
}

/// The queues `postsuper -s` checks, and whether each is hashed (Postfix's defaults:
/// `hash_queue_names = deferred, defer`, Postern also hashes `bounce` and `trace`).
const STRUCTURE_QUEUES: &[(&str, bool)] = &[
    ("maildrop", false),
    ("incoming", false),
    ("active", false),
    ("deferred", true),
    ("hold", false),
    ("defer", true),
    ("bounce", true),
    ("trace", true),
];

/// `postsuper -s`: every file moves to where its name says it belongs (the hash
/// subdirectory of its first character in a hashed queue, the top in another); a name
/// that is not a queue ID is reported as Postfix does (`warning: bogus file name:
/// incoming/NAME`) and left alone. XXX Postfix also renames short queue IDs to match the
/// file's inode number; Postern's IDs do not encode the inode (see `queue::id`), so names
/// are kept.
fn structure_check(qdir: &Path, only: Option<&str>, warn: &dyn Fn(&str)) {
    for &(q, hashed) in STRUCTURE_QUEUES {
        if only.is_some_and(|o| o != q) {
            continue;
        }
        let top = qdir.join(q);
        let mut found: Vec<(String, PathBuf, String)> = Vec::new();
        let Ok(rd) = std::fs::read_dir(&top) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir {
                if let Ok(sub) = std::fs::read_dir(e.path()) {
                    for f in sub.flatten() {
                        let fname = f.file_name().to_string_lossy().into_owned();
                        if f.file_type().is_ok_and(|t| t.is_file()) {
                            found.push((fname.clone(), f.path(), format!("{q}/{name}/{fname}")));
                        }
                    }
                }
            } else {
                found.push((name.clone(), e.path(), format!("{q}/{name}")));
            }
        }
        for (name, path, shown) in found {
            if crate::queue::QueueId::parse(&name).is_none() {
                warn(&format!("bogus file name: {shown}"));
                continue;
            }
            let want = if hashed {
                top.join(name.get(..1).unwrap_or("0")).join(&name)
            } else {
                top.join(&name)
            };
            if want != path && want.symlink_metadata().is_err() {
                if let Some(parent) = want.parent() {
                    let _ = crate::queue::make_queue_dir(parent);
                }
                if let Err(e) = std::fs::rename(&path, &want) {
                    warn(&format!(
                        "rename file {} as {}: {e}",
                        path.strip_prefix(qdir).unwrap_or(&path).display(),
                        want.strip_prefix(qdir).unwrap_or(&want).display()
                    ));
                }
            }
        }
    }
}

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
