//! `mailq` (= `postqueue -p`, `sendmail -bp`) and `postqueue -j`: the queue listings, with
//! Postfix 3.7's output.
//!
//! `mailq` lists `maildrop/`, `incoming/`, `active/` (`*` after the ID), `deferred/` and
//! `hold/` (`!`), each message as `ID SIZE ARRIVAL SENDER`, then the reasons from the defer
//! log (right-aligned in 78 columns, each printed once for consecutive recipients sharing
//! it) with their recipients, then the recipients still pending; `-- N Kbytes in M
//! Requests.` at the end (the sum of the message sizes shown, as Postfix 3.7 counts), or `Mail queue is empty`.
//! Files are listed in directory order, as Postfix's showq does.
//!
//! `postqueue -j` prints one JSON object per message as Postfix 3.7 does (`queue_name`,
//! `queue_id`, `arrival_time`, `message_size`, `forced_expire`, `sender`, `recipients` with
//! `address` and, when deferred, `delay_reason`).
//!
//! Known limits (XXX): `mailq` reads the queue directly (Postfix asks the `showq` service),
//! so it needs read access to the queue (root or `mail_owner`).

use std::path::{Path, PathBuf};

use super::postqueue::load;
use crate::config::postfix::PostfixConfig;
use crate::qmgr::defer;
use crate::queue::header::quote_822_local;
use crate::queue::store::scan_dir;

pub(super) use crate::sys::time::asctime;

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
        let files = scan_dir(&queue_directory.join(queue), hashed);
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
        let files = scan_dir(&queue_directory.join(queue), hashed);
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

pub(super) fn print_queue(cfg: &PostfixConfig) -> i32 {
    let qdir = PathBuf::from(cfg.get("queue_directory").unwrap_or_default().trim());
    print!("{}", list_queue(&qdir));
    0
}
