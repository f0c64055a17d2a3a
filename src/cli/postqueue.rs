//! `postqueue`: `-p` (the `mailq` listing, [`super::mailq`]), `-j` (its JSON form), `-f`
//! (flush the queue), `-s site` and `-i ID` (move deferred mail to `incoming/` and wake
//! the queue manager, as Postfix's flush service does), with Postfix 3.7's output. The
//! other queue tools are [`super::postsuper`] and [`super::postcat`].

use std::path::{Path, PathBuf};

use super::mailq::{print_queue, write_queue_json};
use crate::config::postfix::{LoadOptions, PostfixConfig};
use crate::log;
use crate::queue::store::{Store, scan_dir};

pub(super) fn load(config_dir: Option<PathBuf>, prog: &str) -> Option<PostfixConfig> {
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
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            // A reader that went away ends the listing quietly.
            let _ = write_queue_json(&qdir, &mut out);
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
    Store::new(qdir).flush(path, id).is_ok()
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
    let files = scan_dir(&qdir.join("deferred"), true);
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
