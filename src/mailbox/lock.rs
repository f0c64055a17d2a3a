//! mbox locks, as Postfix's `mailbox_delivery_lock` and Dovecot's `mbox_read_locks` /
//! `mbox_write_locks` take them: first the dotlock `NAME.lock` (created with `O_EXCL`,
//! holding the creator's `PID`), then, on the open file, a `flock(2)` lock and an `fcntl`
//! lock on the whole file (Postfix's `mbox_open()` order). Which of the three a delivery
//! takes is [`LockKinds`], read from `mailbox_delivery_lock` / `virtual_mailbox_lock` as
//! Postfix's `mbox_lock_mask()` reads them (Linux: `flock`, `fcntl`, `dotlock`; default
//! `fcntl, dotlock`; an unknown name or an empty value is the agent's `fatal:` text,
//! compat-fixtures/locks). Sessions (POP3, IMAP) take what Dovecot's `mbox_write_locks`
//! names to write and what `mbox_read_locks` names to read ([`SessionLocks`], read by
//! [`session_locks`] as Dovecot 2.3.19 reads them; defaults `fcntl dotlock` and `fcntl`):
//! each of dotlock, `flock` (shared for reading), `fcntl` (a read lock for reading) and
//! `lockf` (always exclusive) only when named, in this order whatever the lists' order
//! (Dovecot takes them in the lists' order; this one, the dotlock first as for
//! deliveries, means a session and a delivery never each hold a lock the other waits
//! for). Lists Dovecot refuses end a session at its first mbox lock with Dovecot's
//! `Fatal:` text; empty lists make every lock fail at once (compat-fixtures/locks/
//! dovecot-2.3.txt, from the real Dovecot 2.3.19).
//!
//! A delivery's dotlock is stale, and removed and replaced at once, when its status change time is
//! more than `stale_lock_time` ago (500 s; Postfix's `dot_lockfile.c`), or when it names a
//! process of this host that no longer exists (Dovecot's `file-dotlock.c`, which reads
//! `PID:HOST`; Postern reads that and its own bare `PID`; a lock naming this process, or
//! a PID that is alive or belongs to another host, is kept). Neither program logs the
//! removal, so neither does Postern. A SIGKILLed delivery therefore never blocks its
//! mailbox for longer than it takes to notice that its PID is gone. A session's dotlock
//! goes by Dovecot's rule ([`session_dotlock_is_stale`], `mbox_dotlock_change_timeout`).
//!
//! A process that takes many locks (the local delivery workers, [`keep_link_sources`]) keeps
//! one hidden file per lock it takes (`.NAME.lock.PID.src`, holding its PID, removed when
//! the worker ends) and takes the lock by `link(2)`ing that file to `NAME.lock`: the same
//! lock for every other program, without allocating and freeing an inode per delivery.
//! While a lock stays taken, it is looked at for staleness at the first refusal and then
//! every 200 ms, not at each retry.
//!
//! Two ways of waiting:
//! * sessions (POP3, IMAP): retried at growing intervals up to a tenth of a second, until
//!   the timeout (Dovecot's `mbox_lock_timeout`);
//! * deliveries ([`DeliveryLock`]): as Postfix's `dot_lockfile()` and `deliver_flock()`,
//!   each lock is given up after `deliver_lock_attempts` tries `deliver_lock_delay` apart
//!   (20 × 1 s: after 19 s; `flock` as `fcntl`), with Postfix's words
//!   (`unable to create lock file PATH: File exists`, `unable to lock for exclusive
//!   access: Resource temporarily unavailable`), which local(8) and virtual(8) defer with
//!   `4.2.0`. Within that time it is tried at the sessions' growing intervals (up to a
//!   tenth of a second), not once per `deliver_lock_delay` as Postfix does: two deliveries
//!   to one mailbox (`local_destination_concurrency_limit` is 2) would otherwise wait a
//!   second for each other whenever they meet.
//!
//! Also Dovecot's POP3 session lock (`pop3_lock_session`): `dovecot-pop3-session.lock`
//! in the control directory, holding `PID:HOST`.
//!
//! A spool directory the caller may not write (Debian's `/var/mail` root:mail 2775, a
//! POP3 session running as the user): as Dovecot 2.3 (`mbox-lock.c`), the dotlock of an
//! INBOX outside the mail root is created with `mail_privileged_group` when one is set
//! (here the thread's filesystem gid for the one `O_EXCL` create and the unlink, after
//! checking that the user may read the mbox); otherwise, or when that fails too, the
//! error is reported in Dovecot's words (`file_dotlock_create(PATH) failed: Permission
//! denied (euid=… egid=… missing +w perm: DIR, we're not in group 8(mail), dir owned by
//! 0:8 mode=0775) (set mail_privileged_group=mail)`) through
//! [`MboxOptions::lock_errors`](super::MboxOptions) and the operation goes on under
//! `fcntl` alone, as Dovecot's does (seen from 2.3.19: the error, then the session
//! carries on and rewrites the file).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::MailboxError;

/// Which locks a delivery takes: Postfix's `mailbox_delivery_lock` (local(8)) or
/// `virtual_mailbox_lock` (virtual(8)), read as `mbox_lock_mask()` reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockKinds {
    /// `flock`: `flock(2)` on the open mailbox.
    pub flock: bool,
    /// `fcntl`: a whole-file `fcntl` write lock.
    pub fcntl: bool,
    /// `dotlock`: `NAME.lock`, taken before the mailbox is opened.
    pub dotlock: bool,
}

impl Default for LockKinds {
    /// Postfix's default on Linux (`sys_defs.h`): `fcntl, dotlock`.
    fn default() -> Self {
        LockKinds {
            flock: false,
            fcntl: true,
            dotlock: true,
        }
    }
}

impl LockKinds {
    /// The names Postfix 3.7 knows on Linux, in `mbox_conf.c`'s order (`postconf -l`).
    pub const NAMES: [&'static str; 3] = ["flock", "fcntl", "dotlock"];

    /// Read the value of `param` as Postfix does: the parameter must not be empty
    /// (`bad string length 0 < 1: PARAM = `), and each name, split at commas and white
    /// space, must be one of [`Self::NAMES`] in that case (`name_mask()`; its message
    /// always names `mailbox_delivery_lock`, whichever parameter was read:
    /// `unknown mailbox_delivery_lock value "bogus" in "flock, bogus"`). `Err` is the text
    /// of Postfix's `fatal:` line. A value of delimiters only gives no locks at all (what
    /// virtual(8) then takes; local(8) refuses it, see [`Self::require_some`]).
    pub fn parse(param: &str, value: &str) -> Result<LockKinds, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("bad string length 0 < 1: {param} = "));
        }
        let mut k = LockKinds {
            flock: false,
            fcntl: false,
            dotlock: false,
        };
        for name in value
            .split([',', ' ', '\t', '\r', '\n'])
            .filter(|n| !n.is_empty())
        {
            match name {
                "flock" => k.flock = true,
                "fcntl" => k.fcntl = true,
                "dotlock" => k.dotlock = true,
                _ => {
                    return Err(format!(
                        "unknown mailbox_delivery_lock value \"{name}\" in \"{value}\""
                    ));
                }
            }
        }
        Ok(k)
    }

    /// local(8)'s extra check: `parameter mailbox_delivery_lock specifies no applicable
    /// mailbox locking method` when no lock is named.
    pub fn require_some(self) -> Result<LockKinds, String> {
        if self.flock || self.fcntl || self.dotlock {
            Ok(self)
        } else {
            Err(
                "parameter mailbox_delivery_lock specifies no applicable mailbox locking method"
                    .into(),
            )
        }
    }
}

/// Which locks a session takes on an mbox, for reading or for writing: one of Dovecot's
/// `mbox_read_locks` / `mbox_write_locks` lists as a set. `dotlock_try` is `dotlock`
/// (Dovecot logs a dotlock it may not create in both cases, and goes on without it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionLocks {
    pub dotlock: bool,
    /// `flock(2)`: shared for reading, exclusive for writing.
    pub flock: bool,
    /// A whole-file `fcntl` lock: a read lock for reading, a write lock for writing.
    pub fcntl: bool,
    /// `lockf(3)`: always exclusive (a POSIX write lock on the whole file), for reading
    /// too, as Dovecot's `mbox_lock_lockf()` takes it.
    pub lockf: bool,
}

impl SessionLocks {
    /// No lock named: every lock of this kind fails at once with `Timeout while waiting
    /// for lock` (Dovecot's `mbox_lock_list()` with an empty list; seen from 2.3.19,
    /// compat-fixtures/locks/dovecot-2.3.txt).
    pub fn is_empty(self) -> bool {
        !(self.dotlock || self.flock || self.fcntl || self.lockf)
    }
}

/// Dovecot 2.3's lock names in `mbox-lock.c`'s table, compared without case.
const SESSION_LOCK_NAMES: [&str; 5] = ["dotlock", "dotlock_try", "fcntl", "flock", "lockf"];

/// One list as `mbox_read_lock_methods()` reads it: split at single spaces (two spaces
/// make an empty name), each name one of [`SESSION_LOCK_NAMES`] without case, none twice;
/// `Err` is Dovecot's fatal text (`mbox_read_locks: Invalid value bogus`,
/// `mbox_write_locks: Duplicated value fcntl`). The list keeps its order (indexes into
/// the names, `dotlock_try` as itself) for the order check.
fn read_lock_methods(env: &str, value: &str) -> Result<Vec<usize>, String> {
    let mut out: Vec<usize> = Vec::new();
    if value.is_empty() {
        return Ok(out);
    }
    for name in value.split(' ') {
        let Some(i) = SESSION_LOCK_NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
        else {
            return Err(format!("{env}: Invalid value {name}"));
        };
        if out.contains(&i) {
            return Err(format!("{env}: Duplicated value {name}"));
        }
        out.push(i);
    }
    Ok(out)
}

/// Dovecot's `mbox_read_locks` and `mbox_write_locks` (defaults `fcntl` and, Debian's,
/// `fcntl dotlock`) as Dovecot 2.3's `mbox_init_lock_settings()` reads them: each list as
/// [`read_lock_methods`] reads it (the read list first), then the two must be in the same
/// order with every read lock among the write locks. `Err` is the text of Dovecot's
/// `Fatal:` line, which Dovecot prints at a session's first mbox lock, not at start (its
/// mail process then dies: the client's connection closes without a reply).
pub fn session_locks(read: &str, write: &str) -> Result<(SessionLocks, SessionLocks), String> {
    let r = read_lock_methods("mbox_read_locks", read)?;
    let w = read_lock_methods("mbox_write_locks", write)?;
    let mut ri = 0;
    for m in &w {
        if ri == r.len() {
            break;
        }
        if r[ri] == *m {
            ri += 1;
        }
    }
    if ri != r.len() {
        return Err("mbox read/write lock list settings are invalid. Lock ordering must be the same with both, and write locks must contain all read locks (and possibly more)".into());
    }
    let set = |l: &[usize]| SessionLocks {
        dotlock: l.contains(&0) || l.contains(&1),
        fcntl: l.contains(&2),
        flock: l.contains(&3),
        lockf: l.contains(&4),
    };
    Ok((set(&r), set(&w)))
}

/// How stale a dotlock must be before it is removed (Postfix `stale_lock_time`).
pub const STALE_DOTLOCK: Duration = Duration::from_secs(500);

/// Postfix's delivery lock retries: `deliver_lock_attempts` tries `deliver_lock_delay`
/// apart bound the wait (see the module header for how often it is tried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryLock {
    pub attempts: u32,
    pub delay: Duration,
}

impl Default for DeliveryLock {
    fn default() -> Self {
        DeliveryLock {
            attempts: 20,
            delay: Duration::from_secs(1),
        }
    }
}

/// How a lock is waited for: until a timeout, polling at growing intervals, or a number
/// of tries (Postfix's delivery locks).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    Timeout(Duration),
    Tries(DeliveryLock),
}

/// One wait in progress.
struct Waiter {
    how: Wait,
    start: Instant,
    backoff: Backoff,
}

impl Waiter {
    fn new(how: Wait) -> Waiter {
        Waiter {
            how,
            start: Instant::now(),
            backoff: Backoff::new(),
        }
    }

    /// After a failed try: wait before the next one, or `false` when there is none.
    fn again(&mut self) -> bool {
        match self.how {
            Wait::Timeout(t) => {
                if self.start.elapsed() >= t {
                    return false;
                }
                self.backoff.wait();
                true
            }
            Wait::Tries(d) => {
                // The budget of Postfix's tries, (attempts - 1) × delay, polled at growing
                // intervals rather than one sleep of `delay` between tries: two deliveries
                // to one mailbox (local_destination_concurrency_limit = 2) would otherwise
                // wait a second for each other at every collision.
                let budget = d.delay.saturating_mul(d.attempts.max(1) - 1);
                if self.start.elapsed() >= budget {
                    return false;
                }
                self.backoff.wait();
                true
            }
        }
    }
}

/// A held dotlock; removed on drop (with the privileged group it was made with).
#[derive(Debug)]
pub struct DotLock {
    path: Option<PathBuf>,
    privileged_gid: Option<u32>,
}

impl Drop for DotLock {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            match self.privileged_gid {
                Some(g) => {
                    let _ = with_fsgid(g, || std::fs::remove_file(p));
                }
                None => {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }
}

/// Where lock errors are reported: a session's log, prefixed as Dovecot prefixes them.
#[derive(Clone)]
pub struct LockErrors(pub std::sync::Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for LockErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockErrors")
    }
}

use crate::sys::fsid::{current as fs_ids, with_fsgid};

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

/// How often a lock that stays taken is looked at again for staleness while waiting.
const STALE_CHECK_EVERY: Duration = Duration::from_millis(200);

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
    create_lock_file_waiting(path, mode, contents, Wait::Timeout(timeout), stale)
}

/// [`create_lock_file`], waiting as `how` says.
pub(crate) fn create_lock_file_waiting(
    path: &Path,
    mode: u32,
    contents: &[u8],
    how: Wait,
    stale: impl Fn(&Path) -> bool,
) -> Result<File, LockFileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut waiter = Waiter::new(how);
    // When the lock was last looked at for staleness: at the first refusal, then at most
    // every STALE_CHECK_EVERY (a look is a dozen system calls: the lock's status and text,
    // the holder's signal 0 and /proc/PID/stat), not at each of the many retries while two
    // deliveries to one mailbox take turns.
    let mut checked: Option<Instant> = None;
    loop {
        let made = if contents.is_empty() {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(path)
        } else {
            create_with_contents(path, mode, contents)
        };
        match made {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let look = checked.is_none_or(|t| t.elapsed() >= STALE_CHECK_EVERY);
                if look {
                    checked = Some(Instant::now());
                }
                if look && stale(path) {
                    // Given up when a stale lock cannot be removed, as Postfix's
                    // dot_lockfile() does (never a busy loop).
                    match std::fs::remove_file(path) {
                        Ok(()) => continue,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(LockFileError::Io(e)),
                    }
                }
            }
            Err(e) => return Err(LockFileError::Io(e)),
        }
        if !waiter.again() {
            return Err(LockFileError::Busy);
        }
    }
}

/// Create `path` holding `contents` at once, as Dovecot's file_dotlock does: the contents go
/// into a temporary file beside it, which is then hard-linked to `path` (`EEXIST` when the
/// lock is taken). A lock file created empty and written afterwards stayed empty when its
/// process was killed in between, and an empty lock names no process, so it blocked the
/// mailbox until `stale_lock_time` (seen under repeated SIGKILLs of the mail system: a
/// mailbox's deliveries deferred with `unable to create lock file …: File exists`). A file
/// system without hard links gets the file created and then written.
fn create_with_contents(path: &Path, mode: u32, contents: &[u8]) -> io::Result<File> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match link_from_kept_source(path, mode, contents) {
        Some(Ok(f)) => return Ok(f),
        Some(Err(e)) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
        // Anything else: the one-off temporary file below, as without a kept source.
        _ => {}
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = path.with_file_name(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let linked = f
        .write_all(contents)
        .and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(path)?;
            let _ = f.write_all(contents);
            Ok(f)
        }
        Err(e) => Err(e),
    }
}

/// Lock files' link sources kept for the life of this process ([`keep_link_sources`]).
static LINK_SOURCES: std::sync::Mutex<Option<Vec<LinkSource>>> = std::sync::Mutex::new(None);

/// A hidden file beside a lock, holding the lock's contents, that each acquisition links to
/// the lock's name.
struct LinkSource {
    lock: PathBuf,
    tmp: PathBuf,
    uid: u32,
    gid: u32,
    contents: Vec<u8>,
    file: File,
}

/// From now on, this process keeps the temporary file of each lock it takes (per lock
/// path, effective uid and gid) and takes the lock again by linking that same file to the
/// lock's name, instead of creating, linking and removing a new one each time. The lock
/// is the same to every other program (`NAME.lock` made by `link(2)`, which fails with
/// `EEXIST` as `O_EXCL` does, holding this process's PID, its status change time that of
/// the link); what is saved is an inode allocated and freed per lock, which on ext4
/// without a journal scans past every inode freed in the last minutes (`recently_deleted`
/// in the kernel's profile: a quarter of the CPU of a delivery to one mbox, issue 18).
/// For a process that takes many locks and ends soon: the local delivery workers, which
/// call [`remove_link_sources`] before they exit (a worker killed leaves its
/// `.NAME.lock.PID.src` behind).
pub fn keep_link_sources() {
    let mut g = LINK_SOURCES.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert_with(Vec::new);
}

/// Remove the files [`keep_link_sources`] kept (as root: any owner).
pub fn remove_link_sources() {
    let mut g = LINK_SOURCES.lock().unwrap_or_else(|p| p.into_inner());
    for s in g.take().unwrap_or_default() {
        let _ = std::fs::remove_file(&s.tmp);
    }
}

/// Take the lock `path` by linking this process's kept source for it (made now if there
/// is none); `None` when sources are not kept or the source cannot be made or linked.
fn link_from_kept_source(path: &Path, mode: u32, contents: &[u8]) -> Option<io::Result<File>> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let mut g = LINK_SOURCES.lock().unwrap_or_else(|p| p.into_inner());
    let sources = g.as_mut()?;
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let found = sources
        .iter()
        .position(|s| s.lock == path && s.uid == uid && s.gid == gid && s.contents == contents);
    let i = match found {
        Some(i) => i,
        None => {
            let name = path.file_name()?.to_string_lossy().into_owned();
            let tmp = path.with_file_name(format!(".{name}.{}.src", crate::sys::pid()));
            let open = || {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&tmp)
            };
            // One left by a killed process that had this PID: ours now.
            let mut f = match open() {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let _ = std::fs::remove_file(&tmp);
                    open()
                }
                r => r,
            }
            .ok()?;
            if f.write_all(contents).is_err() {
                let _ = std::fs::remove_file(&tmp);
                return None;
            }
            sources.push(LinkSource {
                lock: path.to_path_buf(),
                tmp,
                uid,
                gid,
                contents: contents.to_vec(),
                file: f,
            });
            sources.len() - 1
        }
    };
    let s = &sources[i];
    // Linked through the descriptor, not the name: whatever someone put in the name's
    // place, the lock is this file.
    let proc_path = format!("/proc/self/fd/{}", s.file.as_raw_fd());
    let linked = nix::unistd::linkat(
        nix::fcntl::AT_FDCWD,
        proc_path.as_str(),
        nix::fcntl::AT_FDCWD,
        path,
        nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
    );
    match linked {
        Ok(()) => Some(s.file.try_clone()),
        Err(nix::errno::Errno::EEXIST) => Some(Err(io::ErrorKind::AlreadyExists.into())),
        Err(e) => {
            // No /proc, or the source is gone: forget it, use the one-off way.
            let s = sources.swap_remove(i);
            let _ = std::fs::remove_file(&s.tmp);
            Some(Err(io::Error::from(e)))
        }
    }
}

/// A dotlock is stale when its status changed more than `stale_lock_time` ago (Postfix
/// looks at `st_ctime`) or when the process it names is gone (Dovecot).
pub(crate) fn dotlock_is_stale(path: &Path, stale_lock_time: Duration) -> bool {
    use std::os::unix::fs::MetadataExt;
    let old = std::fs::symlink_metadata(path).ok().is_some_and(|m| {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        now > m.ctime().saturating_add(stale_lock_time.as_secs() as i64)
    });
    old || holder_is_gone(path)
}

/// A dotlock as a session sees it (Dovecot's `file_dotlock_create()` with
/// `mbox_dotlock_change_timeout`): stale when it names a process that is gone (as
/// [`holder_is_gone`]), never while it names a live process of this host as `PID:HOST`
/// (Dovecot's own locks), and otherwise (a bare `PID`, Postfix's and Postern's, or no
/// PID) when its status has not changed for `change_timeout` (Dovecot also looks at the
/// mbox's own times; Postern at the lock's alone).
pub(crate) fn session_dotlock_is_stale(path: &Path, change_timeout: Duration) -> bool {
    if holder_is_gone(path) {
        return true;
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let here = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let live_here = text
        .trim()
        .split_once(':')
        .is_some_and(|(pid, host)| host == here && pid.parse::<i32>().is_ok_and(|p| p > 0));
    !live_here && dotlock_is_stale(path, change_timeout)
}

/// Whether the lock file names a process of this host that no longer exists: `PID` (what
/// Postern writes) or `PID:HOST` (Dovecot's dotlocks and POP3 session locks). A lock of
/// this very process (another session's, in a threaded server) is not stale.
pub(crate) fn holder_is_gone(path: &Path) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 256];
    let n = match File::open(path).and_then(|mut f| f.read(&mut buf)) {
        Ok(n) => n,
        Err(_) => return false,
    };
    let Ok(text) = std::str::from_utf8(&buf[..n]) else {
        return false;
    };
    let text = text.trim();
    let (pid, host) = text.split_once(':').unwrap_or((text, ""));
    if !host.is_empty() {
        let here = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        if host != here {
            return false;
        }
    }
    match pid.parse::<i32>() {
        Ok(pid) if pid > 0 && pid as u32 != std::process::id() => {
            // Signal 0 only checks that the process exists.
            let r = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None);
            r == Err(nix::errno::Errno::ESRCH) || crate::sys::is_zombie(pid as u32)
        }
        _ => false,
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

/// Take `mbox`'s dotlock, waiting up to `opts.lock_timeout`; see the module header for a
/// directory the caller may not write.
pub fn dotlock(mbox: &Path, opts: &super::MboxOptions) -> Result<DotLock, MailboxError> {
    let path = dotlock_path(mbox);
    let pid = format!("{}\n", std::process::id());
    let how = match opts.delivery_lock {
        Some(d) => Wait::Tries(d),
        None => Wait::Timeout(opts.lock_timeout),
    };
    let create = || {
        create_lock_file_waiting(&path, 0o666, pid.as_bytes(), how, |p| {
            match opts.delivery_lock {
                Some(_) => dotlock_is_stale(p, opts.stale_lock_time),
                // A session: Dovecot's rule, with `mbox_dotlock_change_timeout`.
                None => session_dotlock_is_stale(p, opts.stale_lock_time),
            }
        })
    };
    // Postfix's words when a delivery gives up (errno is EEXIST after the last try).
    let busy = || match opts.delivery_lock {
        Some(_) => MailboxError::LockFailed(format!(
            "unable to create lock file {}: File exists",
            path.display()
        )),
        None => MailboxError::Locked(mbox.to_path_buf()),
    };
    match create() {
        Ok(_) => {
            return Ok(DotLock {
                path: Some(path),
                privileged_gid: None,
            });
        }
        Err(LockFileError::Io(e)) if e.kind() == io::ErrorKind::PermissionDenied => {}
        Err(LockFileError::Io(e)) => return Err(MailboxError::io(&path, e)),
        Err(LockFileError::Busy) => return Err(busy()),
    }
    let report = |text: String| {
        if let Some(l) = &opts.lock_errors {
            (l.0)(&format!("Mailbox INBOX: {text}"));
        }
    };
    let privileged = opts
        .mail_root
        .as_deref()
        .is_none_or(|root| !mbox.starts_with(root));
    if let (Some(gid), true) = (opts.privileged_gid, privileged) {
        // Dovecot: only for a file the user can read, so that the group's right cannot
        // lock (or plant locks beside) what the user has no business with.
        if let Err(e) = File::open(mbox) {
            report(format!(
                "access({}) failed: {}",
                mbox.display(),
                crate::config::error::strerror(&e)
            ));
            return Ok(DotLock {
                path: None,
                privileged_gid: None,
            });
        }
        match with_fsgid(gid, create) {
            Ok(_) => {
                return Ok(DotLock {
                    path: Some(path),
                    privileged_gid: Some(gid),
                });
            }
            Err(LockFileError::Io(e)) if e.kind() == io::ErrorKind::PermissionDenied => {
                let msg = with_fsgid(gid, || eacces_error_creating("file_dotlock_create", mbox));
                report(msg);
                return Ok(DotLock {
                    path: None,
                    privileged_gid: None,
                });
            }
            Err(LockFileError::Io(e)) => return Err(MailboxError::io(&path, e)),
            Err(LockFileError::Busy) => return Err(busy()),
        }
    }
    let msg = eacces_error_creating("file_dotlock_create", mbox);
    let dir = mbox.parent().unwrap_or(Path::new("."));
    let hint = if !privileged {
        format!(
            "(under root dir {} -> no privileged locking)",
            opts.mail_root
                .as_deref()
                .unwrap_or(Path::new("."))
                .display()
        )
    } else {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(dir) {
            Ok(st) if st.mode() & 0o002 == 0 && st.mode() & 0o020 != 0 => {
                let name = nix::unistd::Group::from_gid(st.gid().into())
                    .ok()
                    .flatten()
                    .map_or_else(|| st.gid().to_string(), |g| g.name);
                format!("(set mail_privileged_group={name})")
            }
            _ => format!("(nonstandard permissions in {})", dir.display()),
        }
    };
    report(format!("{msg} {hint}"));
    Ok(DotLock {
        path: None,
        privileged_gid: None,
    })
}

/// Postfix's `mbox_open(…, MBOX_DOT_LOCK_MAY_FAIL)`, as local(8) locks a file named in a
/// `.forward` or alias (`local/file.c`) with the recipient's rights: the dotlock taken as
/// [`dotlock`] takes it for a delivery (waited for up to `deliver_lock_attempts`, then
/// `unable to create lock file PATH: File exists`), but one that cannot be created for any
/// other reason (a directory the recipient may not write) is not an error: the second
/// value is `dot_lockfile()`'s reason for the caller to log as a warning (`unable to create
/// lock file PATH.lock: Permission denied`), and the delivery goes on under `fcntl` alone.
pub fn dotlock_may_fail(
    mbox: &Path,
    opts: &super::MboxOptions,
) -> Result<(Option<DotLock>, Option<String>), MailboxError> {
    let path = dotlock_path(mbox);
    let pid = format!("{}\n", std::process::id());
    let how = match opts.delivery_lock {
        Some(d) => Wait::Tries(d),
        None => Wait::Timeout(opts.lock_timeout),
    };
    match create_lock_file_waiting(&path, 0o666, pid.as_bytes(), how, |p| {
        dotlock_is_stale(p, opts.stale_lock_time)
    }) {
        Ok(_) => Ok((
            Some(DotLock {
                path: Some(path),
                privileged_gid: None,
            }),
            None,
        )),
        Err(LockFileError::Busy) => Err(MailboxError::LockFailed(format!(
            "unable to create lock file {}: File exists",
            path.display()
        ))),
        Err(LockFileError::Io(e)) => Ok((
            None,
            Some(format!(
                "unable to create lock file {}: {}",
                path.display(),
                crate::config::error::strerror(&e)
            )),
        )),
    }
}

/// Dovecot's `eacces_error_get_creating(func, path)` (`lib/eacces-error.c`): why creating
/// beside `path` is denied, with this thread's filesystem ids (the mail user's).
pub fn eacces_error_creating(func: &str, path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let (uid, gid) = fs_ids();
    let user = nix::unistd::User::from_uid(uid.into()).ok().flatten();
    let group = nix::unistd::Group::from_gid(gid.into()).ok().flatten();
    let mut m = format!(
        "{func}({}) failed: Permission denied (euid={uid}",
        path.display()
    );
    m.push_str(&match &user {
        Some(u) => format!("({})", u.name),
        None => "(<unknown>)".into(),
    });
    m.push_str(&format!(" egid={gid}"));
    m.push_str(&match &group {
        Some(g) => format!("({})", g.name),
        None => "(<unknown>)".into(),
    });
    // The first parent directory that can be looked at.
    let mut dir = path.parent().map(Path::to_path_buf);
    let mut st = None;
    while let Some(d) = dir {
        match std::fs::metadata(&d) {
            Ok(s) => {
                st = Some((d, s));
                break;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound
                ) && d != Path::new("/") =>
            {
                dir = d.parent().map(Path::to_path_buf);
            }
            Err(e) => {
                m.push_str(&format!(
                    " stat({}) failed: {}",
                    d.display(),
                    crate::config::error::strerror(&e)
                ));
                break;
            }
        }
    }
    if let Some((d, s)) = &st {
        // The mode bits that apply to us, and whether the group's would have done.
        let check = |bit: u32| -> (bool, bool) {
            let mode = s.mode();
            if s.uid() == uid {
                (mode >> 6 & bit != 0, false)
            } else if s.gid() == gid {
                (mode >> 3 & bit != 0, false)
            } else {
                (mode & bit != 0, mode >> 3 & bit != 0)
            }
        };
        let mut missing = 0;
        for (bit, c) in [(1, 'x'), (2, 'w')] {
            let (ok, group_would) = check(bit);
            if !ok {
                m.push_str(&format!(" missing +{c} perm: {}", d.display()));
                if group_would {
                    m.push_str(&format!(", we're not in group {}", s.gid()));
                    if let Ok(Some(g)) = nix::unistd::Group::from_gid(s.gid().into()) {
                        m.push_str(&format!("({})", g.name));
                    }
                }
                missing = bit;
                break;
            }
        }
        if missing == 0 {
            m.push_str(" UNIX perms appear ok (ACL/MAC wrong?)");
        }
        if s.uid() != uid {
            let same_name = user.as_ref().is_some_and(|u| {
                nix::unistd::User::from_uid(s.uid().into())
                    .ok()
                    .flatten()
                    .is_some_and(|o| o.name == u.name)
            });
            if same_name {
                m.push_str(&format!(
                    ", conflicting dir uid={}({})",
                    s.uid(),
                    user.as_ref().map_or("", |u| u.name.as_str())
                ));
            } else {
                m.push_str(&format!(
                    ", dir owned by {}:{} mode=0{:o}",
                    s.uid(),
                    s.gid(),
                    s.mode() & 0o777
                ));
            }
        } else if missing != 0 && (s.mode() >> 6) & missing == 0 {
            m.push_str(", dir owner missing perms");
        }
        if let Some(g) = &group
            && s.gid() != gid
            && nix::unistd::Group::from_gid(s.gid().into())
                .ok()
                .flatten()
                .is_some_and(|dg| dg.name == g.name)
        {
            m.push_str(&format!(", conflicting dir gid={}({})", s.gid(), g.name));
        }
    }
    m.push(')');
    m
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
        session_lock_is_stale(p)
    }) {
        Ok(_) => Ok(DotLock {
            path: Some(path),
            privileged_gid: None,
        }),
        Err(LockFileError::Io(e)) => Err(MailboxError::io(&path, e)),
        Err(LockFileError::Busy) => Err(MailboxError::Locked(path)),
    }
}

/// `PID:HOST` of a dead process on this host (or an unreadable, old lock) is stale.
fn session_lock_is_stale(path: &Path) -> bool {
    holder_is_gone(path) || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let pid = text.trim().split(':').next().unwrap_or("");
        pid.parse::<i32>().is_err() && older_than(path, STALE_DOTLOCK)
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
    fcntl_lock_waiting(file, path, write, Wait::Timeout(timeout))
}

/// [`fcntl_lock`] for a delivery: `attempts` tries, then Postfix's `deliver_flock()`
/// words (`unable to lock for exclusive access: Resource temporarily unavailable`).
pub fn fcntl_lock_delivery(file: &File, path: &Path, d: DeliveryLock) -> Result<(), MailboxError> {
    fcntl_lock_waiting(file, path, true, Wait::Tries(d)).map_err(|e| match e {
        MailboxError::Locked(_) => MailboxError::LockFailed(
            "unable to lock for exclusive access: Resource temporarily unavailable".into(),
        ),
        e => e,
    })
}

/// A `flock(2)` exclusive lock on `file` for a delivery (`mailbox_delivery_lock =
/// flock`): tried as [`fcntl_lock_delivery`] is, then Postfix's `deliver_flock()` words.
/// The lock belongs to the open file and goes away when it is closed. Dovecot's sessions
/// do not take it unless `mbox_read_locks`/`mbox_write_locks` name `flock`, so it does not
/// keep them out (nor do Postern's sessions, which take Dovecot's default locks).
pub fn flock_lock_delivery(file: &File, path: &Path, d: DeliveryLock) -> Result<(), MailboxError> {
    flock_lock_waiting(file, path, false, Wait::Tries(d))
}

/// [`flock_lock_delivery`] for a session whose `mbox_write_locks` names `flock`: waited
/// for up to `timeout` (`mbox_lock_timeout`), then [`MailboxError::Locked`].
pub fn flock_lock(file: &File, path: &Path, timeout: Duration) -> Result<(), MailboxError> {
    flock_lock_waiting(file, path, false, Wait::Timeout(timeout)).map_err(|e| match e {
        MailboxError::LockFailed(_) => MailboxError::Locked(path.to_path_buf()),
        e => e,
    })
}

/// A shared `flock(2)` lock for a session whose `mbox_read_locks` names `flock` (Dovecot's
/// `LOCK_SH` when reading): waited for up to `timeout`, then [`MailboxError::Locked`].
pub fn flock_lock_shared(file: &File, path: &Path, timeout: Duration) -> Result<(), MailboxError> {
    flock_lock_waiting(file, path, true, Wait::Timeout(timeout)).map_err(|e| match e {
        MailboxError::LockFailed(_) => MailboxError::Locked(path.to_path_buf()),
        e => e,
    })
}

fn flock_lock_waiting(
    file: &File,
    path: &Path,
    shared: bool,
    how: Wait,
) -> Result<(), MailboxError> {
    let mut waiter = Waiter::new(how);
    loop {
        let got = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match got {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(MailboxError::io(path, e)),
        }
        if !waiter.again() {
            return Err(MailboxError::LockFailed(
                "unable to lock for exclusive access: Resource temporarily unavailable".into(),
            ));
        }
    }
}

fn fcntl_lock_waiting(
    file: &File,
    path: &Path,
    write: bool,
    how: Wait,
) -> Result<(), MailboxError> {
    let mut waiter = Waiter::new(how);
    loop {
        match crate::sys::lock_whole_file(file, write, false) {
            Ok(_) => return Ok(()),
            Err(
                nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES | nix::errno::Errno::EINTR,
            ) => {}
            Err(e) => return Err(MailboxError::io(path, io::Error::from(e))),
        }
        if !waiter.again() {
            return Err(MailboxError::Locked(path.to_path_buf()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::{Format, MailLocation};

    fn delivery_opts(attempts: u32) -> crate::mailbox::MboxOptions {
        crate::mailbox::MboxOptions {
            delivery_lock: Some(DeliveryLock {
                attempts,
                delay: Duration::from_millis(20),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn dotlock_of_a_dead_process_is_replaced_and_a_live_one_kept() {
        let d = tempfile::tempdir().expect("tempdir");
        let mbox = d.path().join("user");
        let lock = dotlock_path(&mbox);
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let dead = child.id();
        child.wait().expect("wait");
        for text in [format!("{dead}\n"), format!("{dead}:{}", hostname())] {
            std::fs::write(&lock, &text).expect("lock");
            let held = dotlock(&mbox, &delivery_opts(1)).expect("taken over");
            assert_eq!(
                std::fs::read_to_string(&lock).expect("ours"),
                format!("{}\n", std::process::id())
            );
            drop(held);
            assert!(!lock.exists());
        }
        // A live process (and another host's, and an unreadable one) keeps its lock;
        // three tries, then Postfix's words.
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        for text in [
            format!("{}\n", live.id()),
            format!("{dead}:elsewhere.example"),
            String::new(),
        ] {
            std::fs::write(&lock, &text).expect("lock");
            let e = dotlock(&mbox, &delivery_opts(3)).expect_err("busy");
            assert_eq!(
                e.to_string(),
                format!("unable to create lock file {}: File exists", lock.display())
            );
        }
        let _ = live.kill();
        let _ = live.wait();
        // Older than stale_lock_time: removed whatever it holds.
        std::fs::write(&lock, "").expect("lock");
        let opts = crate::mailbox::MboxOptions {
            stale_lock_time: Duration::ZERO,
            ..delivery_opts(1)
        };
        std::thread::sleep(Duration::from_millis(1100));
        drop(dotlock(&mbox, &opts).expect("stale by age"));
    }

    fn hostname() -> String {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default()
    }

    #[test]
    fn delivery_fcntl_lock_gives_up_with_postfix_words() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("box");
        let a = File::create(&p).expect("create");
        fcntl_lock(&a, &p, true, Duration::ZERO).expect("first");
        let b = std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .expect("open");
        let e = fcntl_lock_delivery(
            &b,
            &p,
            DeliveryLock {
                attempts: 2,
                delay: Duration::from_millis(10),
            },
        )
        .expect_err("held");
        assert_eq!(
            e.to_string(),
            "unable to lock for exclusive access: Resource temporarily unavailable"
        );
        drop(a);
        fcntl_lock_delivery(&b, &p, DeliveryLock::default()).expect("free");
    }

    #[test]
    fn lock_kinds_are_read_as_postfix_mbox_lock_mask_reads_them() {
        let k = |v| LockKinds::parse("mailbox_delivery_lock", v);
        let kinds = |f, c, d| LockKinds {
            flock: f,
            fcntl: c,
            dotlock: d,
        };
        assert_eq!(k("fcntl, dotlock"), Ok(LockKinds::default()));
        assert_eq!(k("flock"), Ok(kinds(true, false, false)));
        assert_eq!(k(" dotlock,flock\tfcntl "), Ok(kinds(true, true, true)));
        // compat-fixtures/locks/postfix-3.7.txt
        assert_eq!(
            k("flock, bogus"),
            Err("unknown mailbox_delivery_lock value \"bogus\" in \"flock, bogus\"".into())
        );
        // Names are compared with their case (strcmp).
        assert!(k("FLOCK").is_err());
        // virtual(8)'s parameter, with name_mask()'s context of mailbox_delivery_lock.
        assert_eq!(
            LockKinds::parse("virtual_mailbox_lock", "bogus"),
            Err("unknown mailbox_delivery_lock value \"bogus\" in \"bogus\"".into())
        );
        assert_eq!(
            LockKinds::parse("virtual_mailbox_lock", " "),
            Err("bad string length 0 < 1: virtual_mailbox_lock = ".into())
        );
        // Delimiters only: no lock, which local(8) refuses and virtual(8) accepts.
        let none = k(",").expect("no names");
        assert_eq!(none, kinds(false, false, false));
        assert_eq!(
            none.require_some(),
            Err(
                "parameter mailbox_delivery_lock specifies no applicable mailbox locking method"
                    .into()
            )
        );
    }

    /// Dovecot 2.3.19's `mbox_init_lock_settings()`: the texts of its fatal lines are
    /// compat-fixtures/locks/dovecot-2.3.txt's (`lists:` cases).
    #[test]
    fn session_lock_lists_are_read_as_dovecot_reads_them() {
        let set = |d, fl, fc, lf| SessionLocks {
            dotlock: d,
            flock: fl,
            fcntl: fc,
            lockf: lf,
        };
        assert_eq!(
            session_locks("fcntl", "fcntl dotlock"),
            Ok((
                set(false, false, true, false),
                set(true, false, true, false)
            ))
        );
        // Upstream's default order, names without case, dotlock_try as dotlock.
        assert_eq!(
            session_locks("FCNTL", "Dotlock_Try fcntl"),
            Ok((
                set(false, false, true, false),
                set(true, false, true, false)
            ))
        );
        assert_eq!(
            session_locks("dotlock", "fcntl dotlock"),
            Ok((
                set(true, false, false, false),
                set(true, false, true, false)
            ))
        );
        assert_eq!(
            session_locks("lockf", "flock lockf"),
            Ok((
                set(false, false, false, true),
                set(false, true, false, true)
            ))
        );
        // No locks at all: accepted (each lock then times out at once).
        let (r, w) = session_locks("", "").expect("empty");
        assert!(r.is_empty() && w.is_empty());
        let order = "mbox read/write lock list settings are invalid. Lock ordering must be the same with both, and write locks must contain all read locks (and possibly more)";
        for (r, w) in [
            ("dotlock fcntl", "fcntl dotlock"),
            ("fcntl", "flock"),
            ("fcntl", "dotlock"),
            ("dotlock", ""),
        ] {
            assert_eq!(session_locks(r, w), Err(order.into()), "{r}|{w}");
        }
        assert_eq!(
            session_locks("bogus", "fcntl dotlock"),
            Err("mbox_read_locks: Invalid value bogus".into())
        );
        assert_eq!(
            session_locks("fcntl", "fcntl bogus"),
            Err("mbox_write_locks: Invalid value bogus".into())
        );
        assert_eq!(
            session_locks("fcntl FCNTL", "fcntl"),
            Err("mbox_read_locks: Duplicated value FCNTL".into())
        );
        // Split at single spaces: two make an empty name (the read list is read first).
        assert_eq!(
            session_locks("fcntl  dotlock", "bogus"),
            Err("mbox_read_locks: Invalid value ".into())
        );
        assert_eq!(
            session_locks("fcntl\tdotlock", "fcntl dotlock"),
            Err("mbox_read_locks: Invalid value fcntl\tdotlock".into())
        );
    }

    #[test]
    fn delivery_flock_gives_up_with_postfix_words_and_ignores_fcntl_locks() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("box");
        let a = File::create(&p).expect("create");
        let b = std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .expect("open");
        let quick = DeliveryLock {
            attempts: 2,
            delay: Duration::from_millis(10),
        };
        // An fcntl lock elsewhere does not stop flock(2), and flock does not stop fcntl.
        fcntl_lock(&a, &p, true, Duration::ZERO).expect("fcntl");
        flock_lock_delivery(&b, &p, quick).expect("flock beside fcntl");
        drop(a);
        let c = File::open(&p).expect("open");
        let e = flock_lock_delivery(&c, &p, quick).expect_err("held");
        assert_eq!(
            e.to_string(),
            "unable to lock for exclusive access: Resource temporarily unavailable"
        );
        drop(b);
        flock_lock_delivery(&c, &p, quick).expect("free");
    }

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
