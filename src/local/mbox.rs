//! Mailbox writes for the local delivery agent: an mbox append under the locks other tools use
//! (dotlock `PATH.lock` plus `fcntl`), rolled back (truncated) on failure and fsynced before
//! success, and a Maildir delivery that appears only by rename from `tmp/` to `new/`.
//!
//! XXX This is a stop-gap with the signature planned for the shared `crate::mailbox` module
//! (`deliver_mbox(path, message, &MboxOptions)`, `deliver_maildir(dir, message)`); when that
//! module lands, local delivery calls it and this file goes away.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// How an mbox is opened and checked.
#[derive(Debug, Clone, Default)]
pub struct MboxOptions {
    /// Owner a newly created mbox gets (only honoured when running as root), and the owner an
    /// existing one must have.
    pub owner: Option<(u32, u32)>,
    /// `mailbox_size_limit` / `message_size_limit` for files: 0 = none.
    pub size_limit: u64,
    /// Take a `PATH.lock` dotlock (needs write access to the directory; skipped quietly when
    /// the directory is not writable, as Postfix does for `dotlock` on home files).
    pub dotlock: bool,
}

/// Why a mailbox write failed; `temporary` failures are retried, the others bounce.
#[derive(Debug)]
pub struct MailboxError {
    pub text: String,
    pub temporary: bool,
    /// The enhanced status code Postfix uses (`5.2.2` for a full mailbox).
    pub dsn: &'static str,
}

impl MailboxError {
    fn temp(text: String) -> Self {
        MailboxError {
            text,
            temporary: true,
            dsn: "4.2.0",
        }
    }
    fn perm(text: String, dsn: &'static str) -> Self {
        MailboxError {
            text,
            temporary: false,
            dsn,
        }
    }
}

fn strerror(e: &io::Error) -> String {
    crate::master::lock::strerror(e)
}

struct DotLock(PathBuf);

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Take `path.lock` the way Postfix's `dot_lockfile()` does: create it exclusively, retry
/// for a while, break a lock older than 5 minutes.
fn dotlock(path: &Path) -> Result<Option<DotLock>, MailboxError> {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    for _ in 0..100 {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock)
        {
            Ok(_) => return Ok(Some(DotLock(lock))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if let Ok(m) = std::fs::symlink_metadata(&lock)
                    && m.modified()
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(300))
                {
                    let _ = std::fs::remove_file(&lock);
                    continue;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => return Ok(None),
            Err(e) => {
                return Err(MailboxError::temp(format!(
                    "unable to create lock file {}: {}",
                    lock.display(),
                    strerror(&e)
                )));
            }
        }
    }
    Err(MailboxError::temp(format!(
        "unable to lock for exclusive access: {}: file exists",
        lock.display()
    )))
}

fn fcntl_lock(f: &File, kind: libc::c_short) -> io::Result<()> {
    // SAFETY: a zeroed flock is a valid argument; F_SETLKW only reads it.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    loop {
        // SAFETY: valid descriptor and pointer to a live flock.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLKW, &fl) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Append `data` (already in mbox form: `From ` line, quoted body, trailing empty line) to
/// the mbox at `path`. Never follows a symlink; refuses a file that is not regular, has
/// other hard links, or (with `owner`) belongs to someone else.
pub fn deliver_mbox(path: &Path, data: &[u8], opts: &MboxOptions) -> Result<(), MailboxError> {
    let _dot = if opts.dotlock { dotlock(path)? } else { None };
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                MailboxError::perm(
                    format!(
                        "cannot open file {}: file is a symbolic link",
                        path.display()
                    ),
                    "5.2.0",
                )
            } else {
                MailboxError::temp(format!(
                    "cannot open file {}: {}",
                    path.display(),
                    strerror(&e)
                ))
            }
        })?;
    let meta = f.metadata().map_err(|e| {
        MailboxError::temp(format!("cannot stat {}: {}", path.display(), strerror(&e)))
    })?;
    if !meta.file_type().is_file() {
        return Err(MailboxError::perm(
            format!("destination {} is not a regular file", path.display()),
            "5.2.0",
        ));
    }
    if meta.nlink() > 1 {
        return Err(MailboxError::perm(
            format!("destination {} has too many links", path.display()),
            "5.2.0",
        ));
    }
    if let Some((uid, gid)) = opts.owner {
        if meta.len() == 0 && meta.uid() != uid && nix::unistd::geteuid().is_root() {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(|e| {
                MailboxError::temp(format!("cannot chown {}: {}", path.display(), strerror(&e)))
            })?;
        } else if meta.uid() != uid {
            return Err(MailboxError::perm(
                format!(
                    "destination {} is owned by uid {}, not by the recipient (uid {uid})",
                    path.display(),
                    meta.uid()
                ),
                "5.2.0",
            ));
        }
    }
    fcntl_lock(&f, libc::F_WRLCK as libc::c_short).map_err(|e| {
        MailboxError::temp(format!(
            "unable to lock for exclusive access: {}: {}",
            path.display(),
            strerror(&e)
        ))
    })?;
    let start = f.metadata().map(|m| m.len()).unwrap_or(meta.len());
    if opts.size_limit > 0 && start + data.len() as u64 > opts.size_limit {
        let _ = fcntl_lock(&f, libc::F_UNLCK as libc::c_short);
        return Err(MailboxError::perm(
            format!(
                "cannot update mailbox {}. error writing message: File too large",
                path.display()
            ),
            "5.2.2",
        ));
    }
    let res = (&f).write_all(data).and_then(|()| f.sync_data());
    if let Err(e) = res {
        // Roll back a partial append so readers never see half a message.
        let _ = f.set_len(start);
        let _ = f.sync_data();
        let _ = fcntl_lock(&f, libc::F_UNLCK as libc::c_short);
        return Err(MailboxError::temp(format!(
            "cannot update mailbox {}. error writing message: {}",
            path.display(),
            strerror(&e)
        )));
    }
    let _ = fcntl_lock(&f, libc::F_UNLCK as libc::c_short);
    Ok(())
}

static MAILDIR_SEQ: AtomicU64 = AtomicU64::new(0);

/// Deliver `data` into the Maildir `dir` (creating `tmp`, `new`, `cur` when missing): write
/// and fsync `tmp/NAME`, rename it into `new/`, fsync `new/`.
pub fn deliver_maildir(dir: &Path, data: &[u8]) -> Result<PathBuf, MailboxError> {
    let tmp_err = |what: &str, p: &Path, e: io::Error| {
        MailboxError::temp(format!("{what} {}: {}", p.display(), strerror(&e)))
    };
    for sub in ["", "tmp", "new", "cur"] {
        let d = dir.join(sub);
        match std::fs::symlink_metadata(&d) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(MailboxError::perm(
                    format!("destination {} is not a directory", d.display()),
                    "5.2.0",
                ));
            }
            Err(_) => {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&d)
                    .map_err(|e| tmp_err("create maildir", &d, e))?;
            }
        }
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
        .replace('/', "\\057")
        .replace(':', "\\072");
    let name = format!(
        "{}.P{}Q{}M{}.{}",
        now.as_secs(),
        std::process::id(),
        MAILDIR_SEQ.fetch_add(1, Ordering::Relaxed),
        now.subsec_micros(),
        host
    );
    let tmp = dir.join("tmp").join(&name);
    let new = dir.join("new").join(&name);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| tmp_err("create maildir file", &tmp, e))?;
    if let Err(e) = f.write_all(data).and_then(|()| f.sync_all()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(tmp_err("write maildir file", &tmp, e));
    }
    drop(f);
    if let Err(e) = std::fs::rename(&tmp, &new) {
        let _ = std::fs::remove_file(&tmp);
        return Err(tmp_err("rename maildir file", &new, e));
    }
    if let Ok(d) = File::open(dir.join("new")) {
        let _ = d.sync_all();
    }
    Ok(new)
}
