//! `postdrop`: Postfix's mail posting agent. Installed set-group-ID `setgid_group`
//! (`postdrop`), it lets a user who cannot write `queue_directory/maildrop/` (mode 0730,
//! group postdrop) hand a message to the mail system, even while the daemons are stopped.
//!
//! `sendmail` builds the queue file ([`crate::queue::cleanup`], Postfix's record format) as the
//! invoking user and, when it cannot write `maildrop/` itself, pipes it to
//! `$command_directory/postdrop -c DIR`. postdrop reads at most `message_size_limit` plus
//! 1 MiB from its standard input, parses the whole file (a stream that is not one complete
//! queue file with a valid queue ID and at least one recipient is refused, nothing
//! written), then writes it under a temporary name (mode 0644), marks it complete (0744:
//! owner-execute; readable by the queue manager, which runs as `mail_owner`), fsyncs, renames it to `maildrop/ID` without replacing an existing file, fsyncs the
//! directory when it may read it (not with maildrop's mode 0730, as with Postfix's postdrop)
//! and wakes the queue manager. The file is owned by the user (the pickup log line
//! reports the uid), its group is postdrop's.
//!
//! Its only privilege is the postdrop group, which can write nothing but maildrop
//! directories; it therefore accepts `-c DIR` from anyone (Postfix restricts `-c` to
//! `alternate_config_directories`), reads only `queue_directory` and
//! `message_size_limit` from it, and writes no log file (errors go to standard error and
//! the exit status: 0 delivered to the queue, 75 temporary failure, 65 bad input).

use std::io::Read;
use std::path::PathBuf;

use crate::config::postfix::{LoadOptions, PostfixConfig};

pub fn main(args: &[String]) -> i32 {
    let mut config_dir: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" => config_dir = it.next().map(PathBuf::from),
            "-r" | "-v" => {}
            other => {
                eprintln!("postdrop: fatal: usage: postdrop [-c config_dir] [-v] (got {other})");
                return 64;
            }
        }
    }
    let cfg = match PostfixConfig::load(&LoadOptions {
        config_dir,
        overrides: Vec::new(),
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postdrop: fatal: {e}");
            return 75;
        }
    };
    let qdir = PathBuf::from(cfg.get("queue_directory").unwrap_or_default().trim());
    let limit = cfg
        .get("message_size_limit")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(10_240_000);
    let cap = if limit == 0 {
        u64::MAX
    } else {
        limit + (1 << 20)
    };
    let mut data = Vec::new();
    if let Err(e) = std::io::stdin().take(cap).read_to_end(&mut data) {
        eprintln!("postdrop: fatal: read: {e}");
        return 75;
    }
    if data.len() as u64 >= cap {
        eprintln!("postdrop: fatal: message file too big");
        return 65;
    }
    let msg = match crate::queue::file::parse(&data, "stdin") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("postdrop: fatal: malformed input: {e}");
            return 65;
        }
    };
    let id = msg.attr("log_ident").unwrap_or("").to_string();
    if crate::queue::QueueId::parse(&id).is_none() || msg.recipients.is_empty() {
        eprintln!("postdrop: fatal: malformed input: no queue ID or no recipients");
        return 65;
    }
    let maildrop = qdir.join("maildrop");
    let dest = maildrop.join(&id);
    // Postfix's postdrop: 0644 while being written, 0744 when complete (u+x), so that the
    // mail system, which does not own the file, can read it; maildrop/ itself is not
    // readable by the postdrop group (mode 0730), so its fsync is skipped, as Postfix's
    // postdrop does not make it either.
    let write = || {
        crate::queue::store::write_durable(
            &maildrop,
            &id,
            &data,
            crate::queue::store::MAILDROP,
            None,
        )
    };
    if let Err(e) = write() {
        eprintln!("postdrop: fatal: cannot write {}: {e}", dest.display());
        return 75;
    }
    crate::qmgr::wake(&qdir, b'W');
    0
}
