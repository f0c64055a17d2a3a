//! The queue manager's wake-up: one byte written to the FIFO `queue_directory/public/qmgr`,
//! as Postfix's `mail_trigger()` writes one to its `public/qmgr` service. The queue manager
//! reads it ([`crate::qmgr`]) and scans `maildrop/` and `incoming/` at once instead of at its
//! next periodic scan; `F` also retries every deferred message now.
//!
//! The bytes are Postfix's (`mail_proto.h`): [`SCAN_INCOMING`] (`I`, what cleanup sends when it
//! has queued a message), [`FLUSH_DEAD`] (`F`, `postqueue -f`), [`WAKEUP`] (`W`, the master's
//! and `sendmail`'s). The FIFO is opened write-only and non-blocking: with no queue manager
//! reading it the open fails (`ENXIO`) and nothing waits; a full FIFO (the queue manager has
//! 64 KB of wake-ups unread) is a wake-up already pending, so counted as delivered.
//!
//! [`Trigger`] keeps the FIFO open for a writer that wakes often (the queue writer, once per
//! group commit): one `write(2)` per wake-up, the FIFO opened again when its reader went
//! away (`EPIPE`, a restarted queue manager).

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `QMGR_REQ_SCAN_INCOMING`: new mail in `incoming/`.
pub const SCAN_INCOMING: u8 = b'I';
/// `QMGR_REQ_FLUSH_DEAD`: retry deferred mail now.
pub const FLUSH_DEAD: u8 = b'F';
/// `TRIGGER_REQ_WAKEUP`.
pub const WAKEUP: u8 = b'W';

/// The FIFO's path under `queue_directory`.
pub fn fifo_path(queue_directory: &Path) -> PathBuf {
    queue_directory.join("public").join("qmgr")
}

fn open(fifo: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(fifo)
}

fn send(f: &mut File, what: u8) -> std::io::Result<()> {
    match f.write(&[what]) {
        Ok(_) => Ok(()),
        // The FIFO is full: the queue manager has wake-ups pending already.
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

/// Wake a running queue manager once. Returns whether one was listening.
pub fn wake(queue_directory: &Path, what: u8) -> bool {
    match open(&fifo_path(queue_directory)) {
        Ok(mut f) => send(&mut f, what).is_ok(),
        Err(_) => false,
    }
}

/// A wake-up kept open (see the module header).
pub struct Trigger {
    fifo: PathBuf,
    file: Option<File>,
}

impl Trigger {
    pub fn new(queue_directory: &Path) -> Trigger {
        Trigger {
            fifo: fifo_path(queue_directory),
            file: None,
        }
    }

    /// Wake the queue manager; whether one was listening.
    pub fn pull(&mut self, what: u8) -> bool {
        for _ in 0..2 {
            if self.file.is_none() {
                match open(&self.fifo) {
                    Ok(f) => self.file = Some(f),
                    Err(_) => return false,
                }
            }
            if let Some(f) = &mut self.file {
                if send(f, what).is_ok() {
                    return true;
                }
                // The reader went away (EPIPE): open again, once.
                self.file = None;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_kept_trigger_reaches_a_restarted_reader() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("public")).unwrap();
        let fifo = fifo_path(d.path());
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622)).unwrap();
        let mut t = Trigger::new(d.path());
        // Nobody reads: nothing waits, nothing is delivered.
        assert!(!t.pull(SCAN_INCOMING));
        assert!(!wake(d.path(), WAKEUP));
        let read_all = |r: &mut File| {
            let mut b = [0u8; 16];
            let n = r.read(&mut b).unwrap();
            b[..n].to_vec()
        };
        let mut r = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        assert!(t.pull(SCAN_INCOMING));
        assert!(t.pull(FLUSH_DEAD));
        assert_eq!(read_all(&mut r), b"IF");
        // The reader restarts: the kept descriptor gets EPIPE, the trigger opens again.
        drop(r);
        let mut r = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        assert!(t.pull(SCAN_INCOMING));
        assert_eq!(read_all(&mut r), b"I");
        drop(r);
        assert!(!t.pull(SCAN_INCOMING));
    }
}
