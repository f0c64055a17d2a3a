//! `postsuper`: the queue's maintenance tool, with Postfix 3.7's output.
//!
//! postsuper run by root works as `mail_owner` (as Postfix's does), so that hash directories
//! it makes are the mail system's.
//!
//! `postsuper -h ID|ALL` puts messages on hold (`hold/`, not delivered, `!` in `mailq`,
//! logged `ID: placed on hold`), `-H` releases them to `deferred/` (`ID: released from
//! hold`) with their modification time kept, as Postfix's: due at the queue manager's
//! next deferred scan once that time has passed.
//!
//! `postsuper -d ID` / `-d ALL` [`queue`] deletes queue files (and their defer logs),
//! logging `ID: removed` and `Deleted: N messages` under `postfix/postsuper` (echoed to a
//! terminal as `postsuper: Deleted: N messages`), as Postfix does.
//!
//! `postsuper -r ID|ALL` requeues (to `maildrop/`, mode and logs kept, as Postfix's: see
//! [`crate::queue::store::Store::requeue`]), `postsuper -s` checks the structure.
//! Every move goes through [`crate::queue::store::Store`] (a run over many messages through
//! its [`crate::queue::store::Mover`], which opens each directory once).
//!
//! Known limits (XXX): `postsuper` has no `-p`, `-S`, `-e`, `-f`.

use std::path::{Path, PathBuf};

use super::postqueue::load;
use crate::log;
use crate::queue::store::{Mover, Store, scan_dir};

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
        // A set: `postsuper -d - < list` may name every message of a large queue.
        let ids: std::collections::HashSet<&str> = ops
            .iter()
            .filter(|(o, _)| *o == kind)
            .map(|(_, i)| i.as_str())
            .collect();
        if ids.is_empty() {
            continue;
        }
        let all = ids.contains("ALL");
        let queues: Vec<&str> = match (&queue, kind) {
            (Some(q), _) => vec![q.as_str()],
            (None, SuperOp::Delete) => vec!["hold", "incoming", "active", "deferred", "maildrop"],
            (None, SuperOp::Hold) => vec!["incoming", "active", "deferred"],
            (None, SuperOp::Release) => vec!["hold"],
            (None, SuperOp::Requeue) => vec!["hold", "incoming", "active", "deferred"],
        };
        let mut n = 0;
        let store = Store::new(&qdir);
        // Each directory opened once for the run, each move relative to it.
        let mut mover = Mover::new(&store);
        for q in queues {
            let files = scan_dir(&qdir.join(q), q != "maildrop" && q != "hold");
            for (id, path) in files {
                if !(all || ids.contains(id.as_str())) {
                    continue;
                }
                let done = match kind {
                    SuperOp::Delete => mover.delete(&path, &id).is_ok().then_some("removed"),
                    SuperOp::Hold => mover.hold(&path, &id).is_ok().then_some("placed on hold"),
                    SuperOp::Release => mover
                        .release(&path, &id)
                        .is_ok()
                        .then_some("released from hold"),
                    // A message named by its ID also gets its time stamps set to now, as
                    // Postfix's requeue_one; `-r ALL` only renames.
                    SuperOp::Requeue => mover.requeue(&path, &id, !all).then_some("requeued"),
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
        // Requeued mail waits in maildrop/: the queue manager takes it up now (Postfix's
        // pickup would at its next 60 s wake-up).
        if kind == SuperOp::Requeue && n > 0 {
            crate::qmgr::wake(&qdir, crate::queue::trigger::WAKEUP);
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

/// The queues `postsuper -s` checks (hashed as [`crate::queue::store::is_hashed`] says:
/// Postfix's `hash_queue_names = deferred, defer`; Postern also hashes `bounce` and
/// `trace`).
const STRUCTURE_QUEUES: &[&str] = &[
    "maildrop", "incoming", "active", "deferred", "hold", "defer", "bounce", "trace",
];

/// `postsuper -s`: every file moves to where its name says it belongs (the hash
/// subdirectory of its first character in a hashed queue, the top in another); a name
/// that is not a queue ID is reported as Postfix does (`warning: bogus file name:
/// incoming/NAME`) and left alone. XXX Postfix also renames short queue IDs to match the
/// file's inode number; Postern's IDs do not encode the inode (see `queue::id`), so names
/// are kept.
fn structure_check(qdir: &Path, only: Option<&str>, warn: &dyn Fn(&str)) {
    let store = crate::queue::store::Store::new(qdir);
    for &q in STRUCTURE_QUEUES {
        if only.is_some_and(|o| o != q) {
            continue;
        }
        for (name, path) in store.scan_all(q) {
            if crate::queue::QueueId::parse(&name).is_none() {
                let shown = path.strip_prefix(qdir).unwrap_or(&path);
                warn(&format!("bogus file name: {}", shown.display()));
                continue;
            }
            if let Err(e) = store.rehome(&path, q, &name) {
                let want = store.path(q, &name);
                warn(&format!(
                    "rename file {} as {}: {e}",
                    path.strip_prefix(qdir).unwrap_or(&path).display(),
                    want.strip_prefix(qdir).unwrap_or(&want).display()
                ));
            }
        }
    }
}
