//! mbox locks, as Postfix's `mailbox_delivery_lock` and Dovecot's `mbox_read_locks` /
//! `mbox_write_locks` take them: first the dotlock `NAME.lock` (created with `O_EXCL`,
//! stale after `stale_lock_time`, 500 s as in Postfix), then an `fcntl` lock on the whole
//! file. Both are retried once a second until the timeout (`mbox_lock_timeout`).
//!
//! XXX: when the spool directory is not writable by the caller (`/var/spool/mail` without
//! `mail_privileged_group`), the dotlock is skipped and `fcntl` alone protects the file;
//! Dovecot would use its privileged group for the dotlock instead.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::MailboxError;

/// How stale a dotlock must be before it is removed (Postfix `stale_lock_time`).
pub const STALE_DOTLOCK: Duration = Duration::from_secs(500);

/// A held dotlock; removed on drop.
#[derive(Debug)]
pub struct DotLock {
    path: Option<PathBuf>,
}

impl Drop for DotLock {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The dotlock path of `mbox`: `NAME.lock` in the same directory.
pub fn dotlock_path(mbox: &Path) -> PathBuf {
    let mut s = mbox.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Take `mbox`'s dotlock, waiting up to `timeout`.
pub fn dotlock(mbox: &Path, timeout: Duration) -> Result<DotLock, MailboxError> {
    let path = dotlock_path(mbox);
    let start = Instant::now();
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                use std::io::Write;
                let _ = writeln!(f, "{}", std::process::id());
                return Ok(DotLock { path: Some(path) });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let stale = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > STALE_DOTLOCK);
                if stale {
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Ok(DotLock { path: None });
            }
            Err(e) => return Err(MailboxError::io(&path, e)),
        }
        if start.elapsed() >= timeout {
            return Err(MailboxError::Locked(mbox.to_path_buf()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Take an `fcntl` lock (write or read) on all of `file`, waiting up to `timeout`. The lock
/// goes away when the file is closed.
pub fn fcntl_lock(
    file: &File,
    path: &Path,
    write: bool,
    timeout: Duration,
) -> Result<(), MailboxError> {
    let start = Instant::now();
    loop {
        // SAFETY: a zeroed `flock` is a valid value; the fields set below describe the
        // whole file.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = if write { libc::F_WRLCK } else { libc::F_RDLCK } as _;
        fl.l_whence = libc::SEEK_SET as _;
        fl.l_start = 0;
        fl.l_len = 0;
        // SAFETY: the descriptor is open for the lifetime of `file`; `fl` is initialised.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) | Some(libc::EINTR) => {}
            _ => return Err(MailboxError::io(path, e)),
        }
        if start.elapsed() >= timeout {
            return Err(MailboxError::Locked(path.to_path_buf()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
