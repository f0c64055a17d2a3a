//! The master's lock files, as Postfix 3.7 keeps them (master/master.c, util/open_lock.c):
//!
//! * `queue_directory/pid/master.pid`: created by the master (mode 0600), held under an
//!   exclusive `flock(2)` for the master's life, and holding the PID right-aligned in
//!   `sizeof(unsigned long) * 4` = 32 columns plus a newline. `postfix status/stop/reload`
//!   ask "is it running?" by trying that lock (Postfix's `master -t`), then read the PID
//!   from the file's first line. The same lock style means a real Postfix and Postern see
//!   each other's master on a shared queue directory.
//! * `data_directory/master.lock`: the same content, owned by `mail_owner`, so that two
//!   masters configured with the same data directory cannot run.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::error::strerror;

/// An open, exclusively locked lock file. The lock lasts as long as the value.
#[derive(Debug)]
pub struct LockFile {
    pub path: PathBuf,
    pub file: File,
}

impl LockFile {
    /// Create/open `path` and take the exclusive lock without waiting. The error text is
    /// Postfix's: `open lock file PATH: unable to set exclusive lock: Resource temporarily
    /// unavailable`.
    pub fn acquire(path: &Path) -> Result<LockFile, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| format!("open lock file {}: {}", path.display(), strerror(&e)))?;
        // flock(LOCK_EX | LOCK_NB), as Postfix's myflock().
        if let Err(e) = file.try_lock() {
            let e = match e {
                std::fs::TryLockError::WouldBlock => {
                    std::io::Error::from_raw_os_error(libc::EWOULDBLOCK)
                }
                std::fs::TryLockError::Error(e) => e,
            };
            return Err(format!(
                "open lock file {}: unable to set exclusive lock: {}",
                path.display(),
                strerror(&e)
            ));
        }
        Ok(LockFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Replace the content with `pid` in Postfix's format.
    pub fn write_pid(&mut self, pid: u32) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(pid_line(pid).as_bytes())?;
        self.file.sync_data()
    }

    /// Give the file to `uid:gid` (master.lock belongs to mail_owner).
    pub fn chown(&self, uid: u32, gid: u32) -> std::io::Result<()> {
        std::os::unix::fs::fchown(&self.file, Some(uid), Some(gid))
    }

    /// Remove the file at exit. When the directory is not writable any more (a root-started
    /// master that dropped to mail_owner cannot unlink from the root-owned `pid/`), empty
    /// it instead through the descriptor still open, so that no stale PID is left behind.
    pub fn remove(self) {
        if std::fs::remove_file(&self.path).is_err() {
            let _ = self.file.set_len(0);
        }
    }
}

/// The PID as master.c writes it: `%*lu\n` with width 32.
pub fn pid_line(pid: u32) -> String {
    format!("{pid:>32}\n")
}

/// Postfix's `master -t`: `Some(pid)` when a master holds the lock on `path`, `None` when
/// the file is missing or unlocked. The PID is the file's first field (0 if unreadable).
pub fn running_pid(path: &Path) -> Option<u32> {
    let mut file = File::open(path).ok()?;
    // The lock is released when `file` closes.
    let locked = file.try_lock().is_err();
    if !locked {
        return None;
    }
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    Some(
        text.split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_format_is_postfix_width() {
        let l = pid_line(3637);
        assert_eq!(l.len(), 33);
        assert_eq!(l, format!("{}3637\n", " ".repeat(28)));
    }

    #[test]
    fn second_lock_refused_and_seen_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("master.pid");
        assert_eq!(running_pid(&p), None);
        let mut l = LockFile::acquire(&p).expect("first lock");
        l.write_pid(42).expect("write");
        let e = LockFile::acquire(&p).expect_err("second lock");
        assert!(e.ends_with("unable to set exclusive lock: Resource temporarily unavailable"));
        assert_eq!(running_pid(&p), Some(42));
        l.remove();
        assert_eq!(running_pid(&p), None);
    }
}
