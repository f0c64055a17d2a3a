//! mbox locks, as Postfix's `mailbox_delivery_lock` and Dovecot's `mbox_read_locks` /
//! `mbox_write_locks` take them: first the dotlock `NAME.lock` (created with `O_EXCL`,
//! stale after `stale_lock_time`, 500 s as in Postfix), then an `fcntl` lock on the whole
//! file. Both are retried, at growing intervals up to a tenth of a second, until the
//! timeout (`mbox_lock_timeout`).
//!
//! Also Dovecot's POP3 session lock (`pop3_lock_session`): `dovecot-pop3-session.lock`
//! in the control directory, holding `PID:HOST`.
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

/// Waits between tries of a lock: 1 ms, doubling up to 100 ms, so an uncontended wait
/// ends quickly and a long one polls ten times a second.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff {
            next: Duration::from_millis(1),
        }
    }

    pub(crate) fn wait(&mut self) {
        std::thread::sleep(self.next);
        self.next = (self.next * 2).min(Duration::from_millis(100));
    }
}

/// Why [`create_lock_file`] gave up.
pub(crate) enum LockFileError {
    /// Another holder kept the lock past the timeout.
    Busy,
    Io(io::Error),
}

/// Create the lock file `path` exclusively (`O_EXCL`, `mode`) with `contents`, retrying
/// until `timeout`; a lock that `stale` declares abandoned is removed and retried at once.
/// The one dotlock loop of the mbox dotlock, the POP3 session lock and Maildir's
/// `dovecot-uidlist.lock`.
pub(crate) fn create_lock_file(
    path: &Path,
    mode: u32,
    contents: &[u8],
    timeout: Duration,
    stale: impl Fn(&Path) -> bool,
) -> Result<File, LockFileError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let start = Instant::now();
    let mut backoff = Backoff::new();
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
        {
            Ok(mut f) => {
                if !contents.is_empty() {
                    let _ = f.write_all(contents);
                }
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if stale(path) {
                    let _ = std::fs::remove_file(path);
                    continue;
                }
            }
            Err(e) => return Err(LockFileError::Io(e)),
        }
        if start.elapsed() >= timeout {
            return Err(LockFileError::Busy);
        }
        backoff.wait();
    }
}

/// A file last modified more than `age` ago (or whose time cannot be read: no).
pub(crate) fn older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|a| a > age)
}

/// Take `mbox`'s dotlock, waiting up to `timeout`.
pub fn dotlock(mbox: &Path, timeout: Duration) -> Result<DotLock, MailboxError> {
    let path = dotlock_path(mbox);
    let pid = format!("{}\n", std::process::id());
    match create_lock_file(&path, 0o666, pid.as_bytes(), timeout, |p| {
        older_than(p, STALE_DOTLOCK)
    }) {
        Ok(_) => Ok(DotLock { path: Some(path) }),
        // A spool directory the caller cannot write: fcntl alone (see the module note).
        Err(LockFileError::Io(e)) if e.kind() == io::ErrorKind::PermissionDenied => {
            Ok(DotLock { path: None })
        }
        Err(LockFileError::Io(e)) => Err(MailboxError::io(&path, e)),
        Err(LockFileError::Busy) => Err(MailboxError::Locked(mbox.to_path_buf())),
    }
}

/// The name of Dovecot's POP3 session lock (`pop3_lock_session`).
pub const POP3_SESSION_LOCK: &str = "dovecot-pop3-session.lock";
/// How long Dovecot 2.3 waits for the POP3 session lock (measured: the second session's
/// `-ERR [IN-USE]` comes after 10 to 12 s).
pub const POP3_SESSION_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The directory of the POP3 session lock: the mailbox list's control directory, where
/// Dovecot 2.3 puts it (mbox: `ROOT/.imap`, Maildir: the root).
pub fn pop3_session_lock_dir(loc: &super::MailLocation) -> PathBuf {
    match loc.format {
        super::Format::Mbox => loc.root.join(".imap"),
        super::Format::Maildir => loc.root.clone(),
    }
}

/// Take the POP3 session lock of `loc` as Dovecot's `pop3_lock_session` does: the dotlock
/// `dovecot-pop3-session.lock` in the control directory, holding `PID:HOST` (Dovecot's
/// dotlock contents, so either program sees the other's lock as live). A lock whose
/// process is gone on this host is stale and replaced. Waits up to `timeout`; `Locked`
/// when another session keeps it.
pub fn pop3_session_lock(
    loc: &super::MailLocation,
    timeout: Duration,
) -> Result<DotLock, MailboxError> {
    let dir = pop3_session_lock_dir(loc);
    std::fs::create_dir_all(&dir).map_err(|e| MailboxError::io(&dir, e))?;
    let path = dir.join(POP3_SESSION_LOCK);
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let contents = format!("{}:{host}", std::process::id());
    match create_lock_file(&path, 0o666, contents.as_bytes(), timeout, |p| {
        session_lock_is_stale(p, &host)
    }) {
        Ok(_) => Ok(DotLock { path: Some(path) }),
        Err(LockFileError::Io(e)) => Err(MailboxError::io(&path, e)),
        Err(LockFileError::Busy) => Err(MailboxError::Locked(path)),
    }
}

/// `PID:HOST` of a dead process on this host (or an unreadable, old lock) is stale.
fn session_lock_is_stale(path: &Path, host: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let (pid, h) = text.trim().split_once(':').unwrap_or((text.trim(), ""));
    match pid.parse::<i32>() {
        Ok(pid) if pid > 0 && (h.is_empty() || h == host) => {
            // SAFETY: signal 0 only checks that the process exists.
            let r = unsafe { libc::kill(pid, 0) };
            r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        }
        Ok(_) => false,
        Err(_) => older_than(path, STALE_DOTLOCK),
    }
}

/// Take an `fcntl` lock (write or read) on all of `file`, waiting up to `timeout`. The lock
/// goes away when the file is closed. It is an open-file-description lock
/// (`F_OFD_SETLK`): other processes' POSIX `fcntl`/`lockf` locks conflict with it as with a
/// classic one, and, unlike a classic one, it belongs to this open file, so that sessions
/// of one process exclude each other and closing another descriptor of the same mbox (a
/// reader in another session) does not drop it.
pub fn fcntl_lock(
    file: &File,
    path: &Path,
    write: bool,
    timeout: Duration,
) -> Result<(), MailboxError> {
    let start = Instant::now();
    let mut backoff = Backoff::new();
    loop {
        // SAFETY: a zeroed `flock` is a valid value; the fields set below describe the
        // whole file.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = if write { libc::F_WRLCK } else { libc::F_RDLCK } as _;
        fl.l_whence = libc::SEEK_SET as _;
        fl.l_start = 0;
        fl.l_len = 0;
        // SAFETY: the descriptor is open for the lifetime of `file`; `fl` is initialised.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
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
        backoff.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::{Format, MailLocation};

    #[test]
    fn pop3_session_lock_excludes_and_replaces_dead_holders() {
        let d = tempfile::tempdir().expect("tempdir");
        let loc = MailLocation {
            format: Format::Mbox,
            root: d.path().join("mail"),
            inbox: d.path().join("inbox"),
            ..MailLocation::default()
        };
        let held = pop3_session_lock(&loc, Duration::ZERO).expect("lock");
        let path = d.path().join("mail/.imap").join(POP3_SESSION_LOCK);
        let text = std::fs::read_to_string(&path).expect("lock file");
        assert!(
            text.starts_with(&format!("{}:", std::process::id())),
            "{text}"
        );
        assert!(matches!(
            pop3_session_lock(&loc, Duration::from_millis(150)),
            Err(MailboxError::Locked(_))
        ));
        drop(held);
        assert!(!path.exists());
        // A lock left by a process that is gone is replaced at once.
        std::fs::write(&path, "2147483646:").expect("stale");
        let again = pop3_session_lock(&loc, Duration::ZERO).expect("stale lock replaced");
        drop(again);
        let md = MailLocation {
            format: Format::Maildir,
            root: d.path().join("Maildir"),
            inbox: d.path().join("Maildir"),
            ..MailLocation::default()
        };
        assert_eq!(pop3_session_lock_dir(&md), d.path().join("Maildir"));
    }
}
