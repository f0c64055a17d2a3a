//! The per-message defer log (`queue_directory/defer/H/ID`): why each recipient was
//! deferred, in Postfix's format (a `<rcpt>: reason` line, then `recipient=`, `status=`,
//! `action=`, `reason=` lines and an empty line per entry), which `mailq` shows under the
//! message; Postfix's own defer logs read back the same way.

use std::io::Write;
use std::path::{Path, PathBuf};

/// One deferred recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferEntry {
    pub recipient: String,
    pub status: String,
    pub reason: String,
}

/// `queue_directory/defer/H/ID`.
pub fn log_path(queue_directory: &Path, id: &str) -> PathBuf {
    let first = id.get(..1).unwrap_or("0");
    queue_directory.join("defer").join(first).join(id)
}

/// Replace the defer log of `id` with `entries`.
pub fn write_log(queue_directory: &Path, id: &str, entries: &[DeferEntry]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = log_path(queue_directory, id);
    if let Some(d) = path.parent() {
        crate::queue::make_queue_dir(d)?;
    }
    let mut out = Vec::new();
    for e in entries {
        let reason = e.reason.replace('\n', " ");
        let _ = write!(
            out,
            "\n<{}>: {reason}\nrecipient={}\nstatus={}\naction=delayed\nreason={reason}\n\n",
            e.recipient, e.recipient, e.status,
        );
    }
    // Mode 0600, as Postfix's bounce(8) writes its logs (the daemons' umask is 077).
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&out)?;
    // On disk before it replaces the old log, as Postfix's bounce(8) fsyncs each defer
    // log append before it answers (bounce_append_service.c): a crash never leaves an
    // empty or half-written log that mailq would show as the reason.
    f.sync_all()?;
    drop(f);
    std::fs::rename(tmp, path)
}

/// Read a defer log back (missing file: no entries).
pub fn read_log(queue_directory: &Path, id: &str) -> Vec<DeferEntry> {
    let Ok(text) = std::fs::read_to_string(log_path(queue_directory, id)) else {
        return Vec::new();
    };
    parse_log(&text)
}

/// The entries of a defer log's text (see [`read_log`]).
pub fn parse_log(text: &str) -> Vec<DeferEntry> {
    log_entries(text)
        .map(|e| DeferEntry {
            recipient: e.recipient.to_string(),
            status: e.status.to_string(),
            reason: e.reason.to_string(),
        })
        .collect()
}

/// One entry of a defer log, borrowed from its text ([`log_entries`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferRef<'a> {
    pub recipient: &'a str,
    pub status: &'a str,
    pub reason: &'a str,
}

/// [`parse_log`] without copying (`mailq` on a large queue): the entries with a
/// recipient, in the log's order; in each, the last `recipient=`, `status=` and `reason=`
/// line wins.
pub fn log_entries(text: &str) -> impl Iterator<Item = DeferRef<'_>> {
    text.split("\n\n").filter_map(|block| {
        let mut e = DeferRef {
            recipient: "",
            status: "",
            reason: "",
        };
        for line in block.lines() {
            if let Some((k, v)) = line.split_once('=') {
                match k {
                    "recipient" => e.recipient = v,
                    "status" => e.status = v,
                    "reason" => e.reason = v,
                    _ => {}
                }
            }
        }
        (!e.recipient.is_empty()).then_some(e)
    })
}
