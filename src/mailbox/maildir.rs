//! Maildir: `tmp/`, `new/`, `cur/`; a message is written to `tmp/`, fsynced, and appears
//! by rename into `new/` (local delivery) or `cur/` (IMAP APPEND and COPY, with its
//! flags), then the directory is fsynced (for several local deliveries, the files fsynced
//! side by side and the directory once: [`deliver_maildir_batch`], group commit). Flags ride in the file name after `:2,`: `D`
//! draft, `F` flagged, `R` replied, `S` seen, `T` trashed, then keyword letters `a`–`z`
//! whose names `dovecot-keywords` gives (`0 $Forwarded` makes `a` that keyword).
//!
//! UIDs live where Dovecot keeps them: `dovecot-uidlist`, version 3 — a header
//! `3 V<uidvalidity> N<next uid> G<guid>` and one line per message `<uid> [ext…] :<base
//! name>` (the base name is the file name before `:2,`; extension fields such as `W` and
//! `G` are kept). New messages get the next UIDs and the list is rewritten as Dovecot
//! does: written to `dovecot-uidlist.lock` (which is also the lock, taken with
//! `O_EXCL`), fsynced and renamed over `dovecot-uidlist`. `dovecot-keywords` is replaced
//! the same way under `dovecot-keywords.lock`. Both live in the control directory
//! (`CONTROL=`), by default the Maildir itself.
//!
//! Opening a Maildir ([`MaildirBox`]) lists the directories and reads the lists, never a
//! message file: a message's size (CRLF, or `,W=` from its name) and date (the file's
//! modification time) are read when asked for ([`MaildirBox::resolve`]), except by an
//! opening that wants every size (POP3). A file such an opening cannot read is left out
//! and the Maildir read again at the next refresh.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::flags::{Flags, KeywordSet};
use super::{MailboxError, crlf_size};

fn ensure_dirs(dir: &Path) -> Result<(), MailboxError> {
    for sub in ["", "tmp", "new", "cur"] {
        let p = dir.join(sub);
        if !p.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .map_err(|e| MailboxError::io(&p, e))?;
        }
    }
    Ok(())
}

/// The host name for new file names, read once per process as Postfix's `get_hostname()`
/// does (a `uname(2)` per delivery before; issue 18).
fn hostname() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            // `/` and `:` cannot appear in a Maildir name (the Maildir spec's escapes).
            .map(|h| h.replace('/', "\\057").replace(':', "\\072"))
            .unwrap_or_else(|| "localhost".into())
    })
    .clone()
}

fn fsync_dir(dir: &Path) -> Result<(), MailboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| MailboxError::io(dir, e))
}

/// Deliver `message` into the Maildir `dir` (created if missing): write to `tmp/`, fsync,
/// rename into `new/`, fsync `new/`. Returns the message's path in `new/`. A batch of one
/// ([`deliver_maildir_batch`]): no thread is started.
pub fn deliver_maildir(dir: &Path, message: &[u8]) -> Result<PathBuf, MailboxError> {
    deliver_maildir_batch(dir, &[message])
        .pop()
        .unwrap_or_else(|| Err(MailboxError::io(dir, std::io::Error::other("no result"))))
}

/// Group commit of local deliveries to one Maildir (issue 18), in this order (the
/// durability argument):
///
/// 1. every message is written to a new file in `tmp/` (unique name, `O_EXCL`,
///    `O_NOFOLLOW`, mode 0600);
/// 2. all of them are made durable together ([`crate::sys::fsync_together`]:
///    `sync_file_range` on each starts the writeback, then the fsyncs run side by side, so
///    the filesystem folds them into few journal commits instead of one per file);
/// 3. each file whose fsync returned is renamed into `new/`;
/// 4. `new/` is fsynced once, making every rename durable (`tmp/` is not: a removal from it
///    that a crash loses leaves a second name of a delivered file there, which Maildir
///    readers clean up as any stale `tmp/` file);
/// 5. only then is each message reported delivered.
///
/// Each message has its own result: one whose file cannot be written, synced or renamed
/// fails alone, its `tmp/` file removed; when the directory cannot be created every message
/// fails, and when the fsync of `new/` fails every renamed one does (their names stay in
/// `new/`, where a crash may or may not keep them: the queue keeps them too, so nothing
/// acknowledged is lost, and a retry may deliver one twice, as after a crash between the
/// fsync and the queue file's update).
pub fn deliver_maildir_batch(dir: &Path, messages: &[&[u8]]) -> Vec<Result<PathBuf, MailboxError>> {
    // 1. Into tmp/. The directories are made when a file cannot be made for want of them,
    // as Postfix's `deliver_maildir()` does (four `stat`s per delivery before; issue 18).
    let written: Vec<(String, PathBuf, Result<File, MailboxError>)> = messages
        .iter()
        .map(|m| match write_tmp(dir, m) {
            (_, _, Err(MailboxError::Io { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                match ensure_dirs(dir) {
                    Ok(()) => write_tmp(dir, m),
                    Err(d) => (String::new(), dir.join("tmp"), Err(d)),
                }
            }
            w => w,
        })
        .collect();
    // 2. Durable, together.
    let files: Vec<&File> = written.iter().filter_map(|w| w.2.as_ref().ok()).collect();
    let mut synced = crate::sys::fsync_together(&files).into_iter();
    // 3. Into new/.
    let mut out: Vec<Result<PathBuf, MailboxError>> = written
        .into_iter()
        .map(|(name, tmp, file)| {
            let res = file.and_then(|f| {
                let r = synced
                    .next()
                    .unwrap_or_else(|| Err(std::io::Error::other("no fsync result")));
                drop(f);
                r.map_err(|e| MailboxError::io(&tmp, e))
            });
            let new = dir.join("new").join(&name);
            let rename = || std::fs::rename(&tmp, &new);
            let res = res.and_then(|()| {
                match rename() {
                    // new/ removed since (or never made, tmp/ being there): made, once more.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => ensure_dirs(dir)
                        .and_then(|()| rename().map_err(|e| MailboxError::io(&new, e))),
                    r => r.map_err(|e| MailboxError::io(&new, e)),
                }
            });
            match res {
                Ok(()) => Ok(new),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(e)
                }
            }
        })
        .collect();
    // 4. One fsync of new/ for every rename.
    if out.iter().any(Result::is_ok)
        && let Err(e) = fsync_dir(&dir.join("new"))
    {
        for r in &mut out {
            if r.is_ok() {
                *r = Err(e.duplicate());
            }
        }
    }
    out
}

/// Write `message` (CRLF stored as LF) to a new file in `tmp/` under a new unique name, not
/// synced: the name, the file's path and the open file.
fn write_tmp(dir: &Path, message: &[u8]) -> (String, PathBuf, Result<File, MailboxError>) {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed) + 1,
        hostname()
    );
    let tmp = dir.join("tmp").join(&name);
    let mut data = Vec::with_capacity(message.len());
    for line in message.split_inclusive(|&b| b == b'\n') {
        match line.strip_suffix(b"\r\n") {
            Some(l) => {
                data.extend_from_slice(l);
                data.push(b'\n');
            }
            None => data.extend_from_slice(line),
        }
    }
    let res = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| match f.write_all(&data) {
            Ok(()) => Ok(f),
            Err(e) => {
                // Only a file this call made (a name that was there is left alone).
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        })
        .map_err(|e| MailboxError::io(&tmp, e));
    (name, tmp, res)
}

/// Take `dovecot-uidlist.lock` in `dir` (the lock, and the list's next version).
/// `dovecot-uidlist.lock`, held: removed on drop unless it became the new list.
struct UidlistLock {
    file: Option<File>,
    path: PathBuf,
}

impl Drop for UidlistLock {
    fn drop(&mut self) {
        // Only a lock this session still holds: once renamed into place, the name may
        // already be another session's lock.
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn uidlist_lock(dir: &Path) -> Result<UidlistLock, MailboxError> {
    let (file, path) = uidlist_lock_file(dir)?;
    Ok(UidlistLock {
        file: Some(file),
        path,
    })
}

fn uidlist_lock_file(dir: &Path) -> Result<(File, PathBuf), MailboxError> {
    use super::lock::{LockFileError, create_lock_file, older_than};
    let path = dir.join("dovecot-uidlist.lock");
    // Dovecot's stale timeout for this lock, and how long it waits, is two minutes.
    let two_minutes = Duration::from_secs(120);
    match create_lock_file(&path, 0o600, b"", two_minutes, |p| {
        older_than(p, two_minutes)
    }) {
        Ok(f) => Ok((f, path)),
        Err(LockFileError::Io(e)) => Err(MailboxError::io(&path, e)),
        Err(LockFileError::Busy) => Err(MailboxError::Locked(path)),
    }
}

fn base_name(file: &str) -> &str {
    file.split_once(':').map(|(b, _)| b).unwrap_or(file)
}

/// Where a message is now: `path`, or the same base name under other flags or in the
/// other directory (another client may have renamed it).
fn locate(dir: &Path, path: &Path, base: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path.to_path_buf());
    }
    for sub in ["cur", "new"] {
        for ent in std::fs::read_dir(dir.join(sub)).ok()?.flatten() {
            if base_name(&ent.file_name().to_string_lossy()) == base {
                return Some(ent.path());
            }
        }
    }
    None
}

/// How many Maildir directories [`VSIZES`] remembers before it starts over.
const VSIZE_DIRS: usize = 256;

/// The sizes clients see (CRLF) of Maildir messages already read, by directory and base
/// name: a message file never changes once delivered (only its name's flags do), so a
/// session opening the same Maildir again reads only new files, as Dovecot finds the
/// sizes in its index cache. Each opening keeps only the files still there.
static VSIZES: std::sync::LazyLock<std::sync::Mutex<HashMap<PathBuf, Sizes>>> =
    std::sync::LazyLock::new(Default::default);

/// Message sizes by base name, of one Maildir.
type Sizes = HashMap<Box<str>, u64>;

/// The size clients see of a message whose name carries it (`,W=`: Dovecot's deliveries
/// write it).
fn name_vsize(base: &str) -> Option<u64> {
    base.split(',')
        .skip(1)
        .find_map(|part| part.strip_prefix("W="))
        .and_then(|w| w.parse().ok())
}

/// The size of a message as POP3 reports it: from a `,W=` part of the name, from `known`
/// sizes, else by reading the file.
fn vsize(base: &str, dir: &Path, rel: &str, known: &Sizes, buf: &mut [u8]) -> std::io::Result<u64> {
    if let Some(w) = name_vsize(base) {
        return Ok(w);
    }
    if let Some(&n) = known.get(base) {
        return Ok(n);
    }
    file_crlf_size(&dir.join(rel), buf)
}

/// A file's size with every bare LF counted as CRLF, read through `buf`.
fn file_crlf_size(path: &Path, buf: &mut [u8]) -> std::io::Result<u64> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    reader_crlf_size(f, buf)
}

/// What `r` holds, with every bare LF counted as CRLF, read through `buf`.
fn reader_crlf_size(mut f: impl std::io::Read, buf: &mut [u8]) -> std::io::Result<u64> {
    let mut n = 0u64;
    let mut prev = 0u8;
    loop {
        let got = f.read(buf)?;
        if got == 0 {
            return Ok(n);
        }
        let chunk = &buf[..got];
        n += crlf_size(chunk);
        // A CRLF split between two reads was counted as a bare LF.
        if prev == b'\r' && chunk[0] == b'\n' {
            n -= 1;
        }
        prev = chunk[got - 1];
    }
}

/// One Maildir message, ready to be opened for reading.
#[derive(Debug, Clone)]
pub struct MaildirMessage {
    dir: PathBuf,
    /// The Maildir, opened when the mailbox was (with the ids of that thread).
    dirfd: Option<Arc<OwnedFd>>,
    /// The file relative to `dir` (`cur/NAME:2,S`).
    rel: Box<str>,
    base: String,
}

impl MaildirMessage {
    /// Open the message file (found again if another client renamed it). The file is
    /// opened relative to the Maildir's descriptor (no walk of the whole path per
    /// message), never through a symlink, and read to its end (no stat).
    pub fn open(&self) -> Result<super::MessageReader, MailboxError> {
        let (f, p) = self.open_file()?;
        Ok(super::MessageReader::new(Vec::new(), f, 0, u64::MAX, p))
    }

    /// The message file opened (see [`open`](Self::open)), and its path.
    fn open_file(&self) -> Result<(File, PathBuf), MailboxError> {
        use nix::fcntl::OFlag;
        // O_NONBLOCK: a FIFO put in the Maildir must not hang the thread in open(2).
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let opened = match &self.dirfd {
            Some(d) => {
                nix::fcntl::openat(d.as_fd(), &*self.rel, flags, nix::sys::stat::Mode::empty())
                    .map(File::from)
                    .map_err(std::io::Error::from)
            }
            None => OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(self.dir.join(&*self.rel)),
        };
        let path = || self.dir.join(&*self.rel);
        let (f, p) = match opened {
            Ok(f) => (f, None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Gone (expunged by another session or program): the folder view gives
                // the UID.
                let p = locate(&self.dir, &path(), &self.base).ok_or(MailboxError::Expunged(0))?;
                let f = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(&p)
                    .map_err(|e| MailboxError::io(&p, e))?;
                (f, Some(p))
            }
            Err(e) => return Err(MailboxError::io(&path(), e)),
        };
        let p = p.unwrap_or_else(path);
        Ok((f, p))
    }

    /// The message file's status (not following a symlink; found again if renamed).
    fn stat(&self) -> std::io::Result<std::fs::Metadata> {
        let st = match &self.dirfd {
            Some(d) => {
                let fd = nix::fcntl::openat(
                    d.as_fd(),
                    &*self.rel,
                    nix::fcntl::OFlag::O_PATH
                        | nix::fcntl::OFlag::O_NOFOLLOW
                        | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                );
                match fd {
                    Ok(fd) => Some(File::from(fd).metadata()),
                    Err(nix::errno::Errno::ENOENT) => None,
                    Err(e) => return Err(e.into()),
                }
            }
            None => None,
        };
        match st {
            Some(st) => st,
            None => {
                let p = locate(&self.dir, &self.dir.join(&*self.rel), &self.base)
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
                std::fs::symlink_metadata(p)
            }
        }
    }
}

impl MaildirMessage {
    /// See [`super::MessageRef::open_if_owned`].
    pub fn open_if_owned(&self, uid: u32) -> Option<super::MessageReader> {
        use nix::fcntl::OFlag;
        let d = self.dirfd.as_ref()?;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let fd =
            nix::fcntl::openat(d.as_fd(), &*self.rel, flags, nix::sys::stat::Mode::empty()).ok()?;
        let st = nix::sys::stat::fstat(&fd).ok()?;
        let regular = st.st_mode & libc::S_IFMT == libc::S_IFREG;
        if !regular || st.st_uid != uid {
            return None;
        }
        let path = self.dir.join(&*self.rel);
        Some(super::MessageReader::new(
            Vec::new(),
            File::from(fd),
            0,
            u64::MAX,
            path,
        ))
    }
}

/// `dovecot-uidlist` (version 3) as read: the header's UIDVALIDITY, next UID, mailbox
/// GUID and other fields, and one record per message: UID, extension fields (`G`, `W`,
/// `P`, … kept as they are) and base name.
#[derive(Debug, Default, Clone)]
struct UidList {
    validity: u32,
    next: u32,
    guid: String,
    /// Header fields other than V, N and G, kept as they are.
    other: Vec<String>,
    records: Vec<(u32, String, String)>,
}

impl UidList {
    /// The list as Dovecot writes it.
    fn text(&self) -> String {
        let mut text = format!("3 V{} N{}", self.validity, self.next.max(1));
        if !self.guid.is_empty() {
            text.push_str(&format!(" G{}", self.guid));
        }
        for o in &self.other {
            text.push(' ');
            text.push_str(o);
        }
        text.push('\n');
        for (uid, ext, base) in &self.records {
            text.push_str(&uid.to_string());
            if !ext.is_empty() {
                text.push(' ');
                text.push_str(ext);
            }
            text.push_str(" :");
            text.push_str(base);
            text.push('\n');
        }
        text
    }

    /// Base name → UID.
    fn uids(&self) -> HashMap<&str, u32> {
        self.records
            .iter()
            .map(|(u, _, b)| (b.as_str(), *u))
            .collect()
    }
}

/// Read `dovecot-uidlist`; `None` if it is missing or not version 3. A last line without
/// its newline (a writer appending) is left out.
fn read_uidlist(path: &Path) -> Option<UidList> {
    let text = std::fs::read_to_string(path).ok()?;
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let mut lines = complete.lines();
    let head = lines.next()?;
    let mut words = head.split_whitespace();
    if words.next()? != "3" {
        // XXX: versions 1 and 2 (Dovecot 1.0) are not read; the box gets new UIDs.
        return None;
    }
    let mut list = UidList::default();
    for w in words {
        // `split_at_checked`: a word may begin with a multi-byte character (a damaged
        // or hostile list made `split_at` panic, found by fuzzing); such a word is kept
        // as an unknown field, as Dovecot keeps them.
        match w.split_at_checked(1) {
            Some(("V", v)) => list.validity = v.parse().ok()?,
            Some(("N", v)) => list.next = v.parse().ok()?,
            Some(("G", v)) => list.guid = v.to_string(),
            _ => list.other.push(w.to_string()),
        }
    }
    for line in lines {
        let Some((left, name)) = line.split_once(" :") else {
            continue;
        };
        let mut parts = left.splitn(2, ' ');
        let Some(uid) = parts.next().and_then(|u| u.parse().ok()) else {
            continue;
        };
        let ext = parts.next().unwrap_or("").trim().to_string();
        list.records.push((uid, ext, name.to_string()));
    }
    list.records.sort_by_key(|r| r.0);
    list.records.dedup_by_key(|r| r.0);
    // Dovecot appends records without rewriting the header: the next UID is past the
    // last record whatever `N` says.
    if let Some(last) = list.records.last() {
        list.next = list.next.max(last.0.saturating_add(1));
    }
    Some(list)
}

/// Write `list` as the new `dovecot-uidlist` of `ctl`: into the lock file (which holds
/// the lock), fsynced, renamed over the list, as Dovecot replaces it.
fn write_uidlist(ctl: &Path, list: &UidList, lock: &mut UidlistLock) -> Result<(), MailboxError> {
    let Some(lock_file) = lock.file.as_mut() else {
        return Err(MailboxError::Format(
            "dovecot-uidlist.lock: not held".into(),
        ));
    };
    lock_file
        .write_all(list.text().as_bytes())
        .and_then(|()| lock_file.sync_all())
        .map_err(|e| MailboxError::io(&lock.path, e))?;
    let target = ctl.join("dovecot-uidlist");
    std::fs::rename(&lock.path, &target).map_err(|e| MailboxError::io(&target, e))?;
    lock.file = None;
    Ok(())
}

/// A fresh UID list: UIDVALIDITY `validity` (or the time), next UID 1.
fn fresh_uidlist(validity: Option<u32>) -> UidList {
    UidList {
        validity: validity.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(1)
                .max(1)
        }),
        next: 1,
        ..UidList::default()
    }
}

/// `dovecot-keywords`: keyword names by the letter they get in file names (`0` is `a`).
fn read_keywords(ctl: &Path) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let Ok(text) = std::fs::read_to_string(ctl.join("dovecot-keywords")) else {
        return out;
    };
    for line in text.lines() {
        let Some((n, name)) = line.split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<usize>() else {
            continue;
        };
        if n >= MAX_KEYWORDS || name.is_empty() {
            continue;
        }
        if out.len() <= n {
            out.resize(n + 1, String::new());
        }
        out[n] = name.to_string();
    }
    out
}

/// How many keywords a Maildir name can carry: the letters `a` to `z`.
pub const MAX_KEYWORDS: usize = 26;

/// The letters of `names`, adding names `dovecot-keywords` does not have yet (under its
/// dotlock, replaced by rename as Dovecot does). `Err` when the 26 letters are taken.
fn keyword_letters(ctl: &Path, names: &[String]) -> Result<Vec<(String, char)>, MailboxError> {
    let letters = |list: &[String]| -> Option<Vec<(String, char)>> {
        names
            .iter()
            .map(|n| {
                list.iter()
                    .position(|x| x == n)
                    .map(|i| (n.clone(), (b'a' + i as u8) as char))
            })
            .collect()
    };
    if let Some(l) = letters(&read_keywords(ctl)) {
        return Ok(l);
    }
    use super::lock::{LockFileError, create_lock_file, older_than};
    let lock = ctl.join("dovecot-keywords.lock");
    let minute = Duration::from_secs(60);
    let mut f = match create_lock_file(&lock, 0o600, b"", minute, |p| older_than(p, minute)) {
        Ok(f) => f,
        Err(LockFileError::Io(e)) => return Err(MailboxError::io(&lock, e)),
        Err(LockFileError::Busy) => return Err(MailboxError::Locked(lock)),
    };
    let mut list = read_keywords(ctl);
    for n in names {
        if list.contains(n) {
            continue;
        }
        match list.iter().position(|x| x.is_empty()) {
            Some(i) => list[i] = n.clone(),
            None if list.len() < MAX_KEYWORDS => list.push(n.clone()),
            None => {
                let _ = std::fs::remove_file(&lock);
                return Err(MailboxError::cannot(
                    Some("LIMIT"),
                    "Too many keywords in this mailbox (Maildir names carry 26)",
                ));
            }
        }
    }
    let text: String = list
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.is_empty())
        .map(|(i, n)| format!("{i} {n}\n"))
        .collect();
    let target = ctl.join("dovecot-keywords");
    let written = f
        .write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&lock, &target));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&lock);
        return Err(MailboxError::io(&target, e));
    }
    letters(&list).ok_or_else(|| MailboxError::Format("dovecot-keywords: lost a keyword".into()))
}

/// The flags of a Maildir name's info (`:2,FLAGS`): system flags, keyword letters, and
/// other letters kept as they are (`P` passed).
fn parse_info(name: &str) -> (Flags, Vec<char>, String) {
    let mut flags = Flags::empty();
    let mut kw = Vec::new();
    let mut other = String::new();
    if let Some((_, info)) = name.split_once(":2,") {
        for c in info.chars() {
            if let Some(f) = Flags::from_maildir_letter(c) {
                flags.insert(f);
            } else if c.is_ascii_lowercase() {
                kw.push(c);
            } else {
                other.push(c);
            }
        }
    }
    (flags, kw, other)
}

/// The info part for `flags`, keyword `letters` and `other` letters: uppercase letters
/// then keyword letters, each in ASCII order (as Dovecot writes `:2,DFRTc`).
fn info(flags: Flags, other: &str, letters: &[char]) -> String {
    let mut upper: Vec<char> = flags
        .maildir_letters()
        .chars()
        .chain(other.chars())
        .collect();
    upper.sort_unstable();
    upper.dedup();
    let mut lower = letters.to_vec();
    lower.sort_unstable();
    lower.dedup();
    let mut s = String::from(":2,");
    s.extend(upper);
    s.extend(lower);
    s
}

/// What identifies the state of a Maildir cheaply: the times of `new/` and `cur/` (to the
/// nanosecond) and of `dovecot-uidlist` and `dovecot-keywords`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaildirStamp {
    new: Option<super::FileStamp>,
    cur: Option<super::FileStamp>,
    uidlist: Option<super::FileStamp>,
    keywords: Option<super::FileStamp>,
}

impl MaildirStamp {
    pub fn of(dir: &Path, ctl: &Path) -> MaildirStamp {
        MaildirStamp {
            new: super::FileStamp::of(&dir.join("new")),
            cur: super::FileStamp::of(&dir.join("cur")),
            uidlist: super::FileStamp::of(&ctl.join("dovecot-uidlist")),
            keywords: super::FileStamp::of(&ctl.join("dovecot-keywords")),
        }
    }

    /// The latest modification time of the directories (Unix seconds). The lists are
    /// left out: they are only ever replaced (a new inode), which a stamp always sees.
    pub fn newest(&self) -> i64 {
        [self.new, self.cur]
            .iter()
            .flatten()
            .map(|s| s.mtime)
            .max()
            .unwrap_or(0)
    }
}

/// One message of an opened Maildir.
#[derive(Debug, Clone)]
pub struct MaildirMsg {
    pub uid: u32,
    pub flags: Flags,
    /// Keyword letters, as indexes into [`MaildirBox::keywords`] (`a` is 0).
    pub keywords: KeywordSet,
    /// Size as clients see it (CRLF line ends); `None` until something needs it
    /// ([`MaildirBox::resolve`]) unless the name carries it or the open was asked for
    /// sizes.
    pub size: Option<u64>,
    /// The file's modification time (the internal date); `None` until something needs
    /// it ([`MaildirBox::resolve`]).
    pub date: Option<i64>,
    /// The file is in `new/`: no session has seen it (\\Recent for Dovecot).
    pub in_new: bool,
}

/// How a Maildir is opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaildirOpen {
    /// Move messages from `new/` to `cur/` (`NAME:2,`), as a Dovecot session that may
    /// change the mailbox does.
    pub move_new: bool,
    /// Read every file's size at the opening (POP3's STAT and LIST need them all); files
    /// that cannot be read are left out until a later refresh. Otherwise sizes and dates
    /// are read when asked for ([`MaildirBox::resolve`]).
    pub sizes: bool,
}

/// An opened Maildir: its messages with UIDs and flags, never their contents.
#[derive(Debug)]
pub struct MaildirBox {
    pub dir: PathBuf,
    /// Where `dovecot-uidlist` and `dovecot-keywords` are (`CONTROL=`, else `dir`).
    pub ctl: PathBuf,
    pub uid_validity: u32,
    pub uid_next: u32,
    /// Keyword names by letter (`""` for a letter not in use).
    pub keywords: Vec<String>,
    pub messages: Vec<MaildirMsg>,
    /// Each message's file, relative to `dir` (`cur/NAME:2,S`): one short string per
    /// message rather than a whole path.
    names: Vec<Box<str>>,
    /// `dir` opened, for opening messages relative to it.
    dirfd: Option<Arc<OwnedFd>>,
    /// The state the messages were read from (taken before reading).
    pub stamp: MaildirStamp,
    how: MaildirOpen,
    validity_hint: Option<u32>,
    /// A file could not be read at the last refresh: read the Maildir again at the next
    /// one even if the directories did not change.
    retry: bool,
}

impl MaildirBox {
    /// A mailbox with no messages.
    pub fn empty() -> MaildirBox {
        MaildirBox {
            dir: PathBuf::new(),
            ctl: PathBuf::new(),
            uid_validity: 0,
            uid_next: 1,
            keywords: Vec::new(),
            messages: Vec::new(),
            names: Vec::new(),
            dirfd: None,
            stamp: MaildirStamp::default(),
            how: MaildirOpen::default(),
            validity_hint: None,
            retry: false,
        }
    }

    /// List `new/` and `cur/`, take UIDs from `dovecot-uidlist` and give new messages the
    /// next ones (rewriting the list). A Maildir without a list gets UIDVALIDITY
    /// `validity_hint` (or the time). The directories are created if missing.
    pub fn open(
        dir: &Path,
        ctl: &Path,
        how: MaildirOpen,
        validity_hint: Option<u32>,
    ) -> Result<MaildirBox, MailboxError> {
        let mut mb = MaildirBox {
            dir: dir.to_path_buf(),
            ctl: ctl.to_path_buf(),
            how,
            validity_hint,
            ..MaildirBox::empty()
        };
        ensure_dirs(dir)?;
        mb.refresh()?;
        Ok(mb)
    }

    /// Whether a file could not be read at the last refresh: the Maildir is to be read
    /// again even if its [`MaildirStamp`] did not change.
    pub fn retrying(&self) -> bool {
        self.retry
    }

    /// Read the Maildir again (after its [`MaildirStamp`] changed, or while
    /// [`retrying`](Self::retrying)).
    pub fn refresh(&mut self) -> Result<(), MailboxError> {
        if self.ctl != self.dir && !self.ctl.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.ctl)
                .map_err(|e| MailboxError::io(&self.ctl, e))?;
        }
        self.stamp = MaildirStamp::of(&self.dir, &self.ctl);
        if let Some(()) = self.read_unlocked()? {
            return Ok(());
        }
        let mut lock = uidlist_lock(&self.ctl)?;
        self.read_locked(&mut lock)
    }

    /// The files of `cur/` and `new/`: (name, path relative to `dir`).
    fn list_files(&self) -> Result<Vec<(String, Box<str>)>, MailboxError> {
        let mut files = Vec::new();
        for sub in ["cur", "new"] {
            let d = self.dir.join(sub);
            let rd = std::fs::read_dir(&d).map_err(|e| MailboxError::io(&d, e))?;
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let rel = format!("{sub}/{name}").into();
                files.push((name, rel));
            }
        }
        Ok(files)
    }

    /// The mailbox as `dovecot-uidlist` has it, read without its lock, when nothing is to
    /// be written: every file listed already has its UID, and no message waits in `new/`
    /// to be moved. As Dovecot, which takes `dovecot-uidlist.lock` only to change the
    /// list; sessions opening the same Maildir then do not wait for each other. `None`:
    /// read under the lock.
    fn read_unlocked(&mut self) -> Result<Option<()>, MailboxError> {
        let files = self.list_files()?;
        if self.how.move_new && files.iter().any(|(_, rel)| rel.starts_with("new/")) {
            return Ok(None);
        }
        let Some(list) = read_uidlist(&self.ctl.join("dovecot-uidlist")) else {
            return Ok(None);
        };
        let uids = list.uids();
        let mut known: Vec<(u32, Box<str>)> = Vec::with_capacity(files.len());
        for (name, rel) in files {
            match uids.get(base_name(&name)) {
                Some(&u) => known.push((u, rel)),
                None => return Ok(None),
            }
        }
        known.sort_by_key(|k| k.0);
        self.build(&list, known);
        Ok(Some(()))
    }

    fn read_locked(&mut self, lock: &mut UidlistLock) -> Result<(), MailboxError> {
        let mut files = Vec::new();
        let mut moved: std::collections::HashSet<Box<str>> = std::collections::HashSet::new();
        for (name, rel) in self.list_files()? {
            if self.how.move_new && rel.starts_with("new/") {
                // Dovecot's sync moves a message it has seen out of new/.
                let target = if name.contains(':') {
                    name.clone()
                } else {
                    format!("{name}:2,")
                };
                let to = self.dir.join("cur").join(&target);
                if std::fs::rename(self.dir.join(&*rel), &to).is_ok() {
                    let rel: Box<str> = format!("cur/{target}").into();
                    moved.insert(rel.clone());
                    files.push((target.clone(), rel));
                    continue;
                }
            }
            files.push((name, rel));
        }
        let existing = read_uidlist(&self.ctl.join("dovecot-uidlist"));
        let dirty = existing.is_none();
        let mut list = existing.unwrap_or_else(|| fresh_uidlist(self.validity_hint));
        let uids: HashMap<String, u32> = list
            .uids()
            .into_iter()
            .map(|(b, u)| (b.to_string(), u))
            .collect();
        let mut known: Vec<(u32, Box<str>)> = Vec::new();
        let mut fresh: Vec<(String, Box<str>)> = Vec::new();
        for (name, rel) in files {
            let base = base_name(&name).to_string();
            match uids.get(&base) {
                Some(&u) => known.push((u, rel)),
                None => fresh.push((base, rel)),
            }
        }
        // New files get UIDs in delivery order: the time at the start of the name, compared
        // as numbers (`SECS.MUSECS…`; microseconds are not zero-padded, so a plain string
        // sort misorders two deliveries in one second), then the name.
        fresh.sort_by_cached_key(|(base, _)| (delivery_time(base), base.clone()));
        let added = !fresh.is_empty();
        for (base, rel) in fresh {
            let uid = list.next.max(1);
            list.next = uid + 1;
            list.records.push((uid, String::new(), base));
            known.push((uid, rel));
        }
        known.sort_by_key(|k| k.0);
        if dirty || added {
            // Records of files gone are dropped, as Dovecot does when it rewrites.
            let present: std::collections::HashSet<u32> = known.iter().map(|k| k.0).collect();
            list.records.retain(|r| present.contains(&r.0));
            list.records.sort_by_key(|r| r.0);
            write_uidlist(&self.ctl, &list, lock)?;
            // This view's own list (written under the lock): no reason to read the
            // Maildir again at the next sync.
            self.stamp.uidlist = super::FileStamp::of(&self.ctl.join("dovecot-uidlist"));
        }
        self.build(&list, known);
        // Messages this opening took out of `new/` were new until now.
        if !moved.is_empty() {
            for (m, rel) in self.messages.iter_mut().zip(&self.names) {
                if moved.contains(rel) {
                    m.in_new = true;
                }
            }
        }
        Ok(())
    }

    /// The mailbox of the files `known` (UID order): flags from their names; sizes as
    /// clients see them (see [`vsize`]) when the opening asked for them, else those
    /// already known; dates already known. No file is opened or stat'ed unless sizes
    /// were asked for.
    fn build(&mut self, list: &UidList, known: Vec<(u32, Box<str>)>) {
        self.uid_validity = list.validity;
        self.uid_next = list.next.max(1);
        self.keywords = read_keywords(&self.ctl);
        self.retry = false;
        // A file's size and time (its internal date) do not change when it is renamed:
        // what is known of messages already listed is taken over, not read again.
        let old: HashMap<u32, (Option<u64>, Option<i64>)> = self
            .messages
            .iter()
            .map(|m| (m.uid, (m.size, m.date)))
            .collect();
        // Messages this view took out of `new/` stay new to it when it reads the Maildir
        // again (its own renames change the directories' times, so the first sync after
        // the opening rereads): the folder's first index takes them as \Recent.
        let was_new: std::collections::HashSet<u32> = self
            .messages
            .iter()
            .filter(|m| m.in_new)
            .map(|m| m.uid)
            .collect();
        self.messages = Vec::with_capacity(known.len());
        self.names = Vec::with_capacity(known.len());
        self.dirfd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&self.dir)
            .ok()
            .map(|f| Arc::new(OwnedFd::from(f)));
        let dir = self.dir.clone();
        let mut buf = vec![0u8; 16 * 1024];
        let mut cache = VSIZES.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= VSIZE_DIRS && !cache.contains_key(&dir) {
            cache.clear();
        }
        let cached = cache.remove(&dir).unwrap_or_default();
        let mut sizes = Sizes::with_capacity(known.len());
        for (uid, rel) in known {
            let base = base_name(&rel[4..]);
            let (old_size, date) = old.get(&uid).copied().unwrap_or_default();
            let size = match old_size.or_else(|| name_vsize(base)) {
                Some(n) => Some(n),
                None if self.how.sizes => match vsize(base, &dir, &rel, &cached, &mut buf) {
                    Ok(n) => Some(n),
                    // Vanished meanwhile (another session expunged it): the directory
                    // changed after the stamp was taken, the next sync sees it.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    // Not readable now (a delivery that has not given it to the user
                    // yet): left out, and looked at again at the next refresh.
                    Err(_) => {
                        self.retry = true;
                        continue;
                    }
                },
                None => cached.get(base).copied(),
            };
            if let Some(n) = size {
                sizes.insert(base.into(), n);
            }
            let (flags, letters, _) = parse_info(&rel[4..]);
            self.messages.push(MaildirMsg {
                uid,
                flags,
                keywords: letters.iter().map(|c| (*c as u8 - b'a') as usize).collect(),
                size,
                date,
                in_new: rel.starts_with("new/") || was_new.contains(&uid),
            });
            self.names.push(rel);
        }
        cache.insert(dir, sizes);
    }

    /// Make the size (`size`) and the date (`date`) of message `index` known, from its
    /// file: opened (size) or stat'ed (date only) through the Maildir's descriptor,
    /// never through a symlink, found again if another client renamed it. The answer
    /// is kept in the message (and the size in the process's cache of sizes).
    pub fn resolve(&mut self, index: usize, size: bool, date: bool) -> std::io::Result<()> {
        let Some(m) = self.messages.get(index) else {
            return Err(std::io::ErrorKind::NotFound.into());
        };
        let need_size = size && m.size.is_none();
        let need_date = date && m.date.is_none();
        if !need_size && !need_date {
            return Ok(());
        }
        let msg = self
            .message(index)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        let (n, t) = if need_size {
            let (f, _) = msg.open_file().map_err(|e| match e {
                MailboxError::Io { source, .. } => source,
                _ => std::io::ErrorKind::NotFound.into(),
            })?;
            let st = f.metadata()?;
            if !st.is_file() {
                return Err(std::io::Error::other("not a regular file"));
            }
            let mut buf = vec![0u8; 16 * 1024];
            (Some(reader_crlf_size(f, &mut buf)?), st.mtime())
        } else {
            (None, msg.stat()?.mtime())
        };
        let m = &mut self.messages[index];
        if let Some(n) = n {
            m.size = Some(n);
            let mut cache = VSIZES.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(sizes) = cache.get_mut(&self.dir) {
                sizes.insert(msg.base.clone().into(), n);
            }
        }
        m.date = Some(t);
        Ok(())
    }

    /// The base name of message `index` (the file name before `:2,`: POP3's `%f`).
    pub fn base(&self, index: usize) -> Option<&str> {
        self.names.get(index).map(|n| base_name(&n[4..]))
    }

    /// The path of message `index` as the mailbox last saw it.
    fn path(&self, index: usize) -> Option<PathBuf> {
        self.names.get(index).map(|n| self.dir.join(&**n))
    }

    /// Where message `index` is, to be opened by [`MaildirMessage::open`].
    pub fn message(&self, index: usize) -> Option<MaildirMessage> {
        let rel = self.names.get(index)?.clone();
        Some(MaildirMessage {
            dir: self.dir.clone(),
            dirfd: self.dirfd.clone(),
            base: base_name(&rel[4..]).to_string(),
            rel,
        })
    }

    /// Where message `index` is now: its path, or the same base name under other flags or
    /// in the other directory (another client may have renamed it).
    fn locate(&self, index: usize) -> Option<PathBuf> {
        locate(&self.dir, &self.path(index)?, self.base(index)?)
    }

    pub fn read(&self, index: usize) -> Result<Vec<u8>, MailboxError> {
        let p = self
            .locate(index)
            .ok_or_else(|| MailboxError::Format(format!("message {} vanished", index + 1)))?;
        std::fs::read(&p).map_err(|e| MailboxError::io(&p, e))
    }

    /// The file of message `index` now, for a hard-linked copy.
    pub fn file_of(&self, index: usize) -> Option<PathBuf> {
        self.locate(index)
    }

    /// Give the messages in `changes` (by UID) their new flags and keywords by renaming
    /// their files (a message in `new/` moves to `cur/`), then unlink the messages in
    /// `expunge`; one gone already counts as done. The messages stay as they are listed
    /// (call [`refresh`](Self::refresh) to see the directories again).
    pub fn update(
        &mut self,
        changes: &HashMap<u32, (Flags, Vec<String>)>,
        expunge: &std::collections::HashSet<u32>,
    ) -> Result<(), MailboxError> {
        let index: HashMap<u32, usize> = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.uid, i))
            .collect();
        let mut renamed = false;
        let mut names: Vec<String> = Vec::new();
        for (_, kws) in changes.values() {
            for k in kws {
                if !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
        let letters: HashMap<String, char> = if names.is_empty() {
            HashMap::new()
        } else {
            keyword_letters(&self.ctl, &names)?.into_iter().collect()
        };
        for (uid, (flags, kws)) in changes {
            if expunge.contains(uid) {
                continue;
            }
            let Some(&i) = index.get(uid) else { continue };
            let Some(p) = self.locate(i) else { continue };
            let Some(name) = p.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            let (_, _, other) = parse_info(&name);
            let lets: Vec<char> = kws.iter().filter_map(|k| letters.get(k).copied()).collect();
            let target = format!("{}{}", base_name(&name), info(*flags, &other, &lets));
            let in_cur =
                p.parent().and_then(|d| d.file_name()) == Some(std::ffi::OsStr::new("cur"));
            if target == name && in_cur {
                continue;
            }
            let to = self.dir.join("cur").join(&target);
            match std::fs::rename(&p, &to) {
                Ok(()) => {
                    renamed = true;
                    self.names[i] = format!("cur/{target}").into();
                    let m = &mut self.messages[i];
                    m.flags = *flags;
                    m.in_new = false;
                    let kw_index = |c: char| (c as u8 - b'a') as usize;
                    m.keywords = lets.iter().map(|c| kw_index(*c)).collect();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(MailboxError::io(&p, e)),
            }
        }
        if !letters.is_empty() {
            self.keywords = read_keywords(&self.ctl);
        }
        let mut unlinked = false;
        for uid in expunge {
            let Some(&i) = index.get(uid) else { continue };
            if let Some(p) = self.locate(i) {
                match std::fs::remove_file(&p) {
                    Ok(()) => unlinked = true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(MailboxError::io(&p, e)),
                }
            }
        }
        if renamed || unlinked {
            for sub in ["cur", "new"] {
                fsync_dir(&self.dir.join(sub))?;
            }
        }
        if unlinked {
            let gone: Vec<usize> = expunge
                .iter()
                .filter_map(|u| index.get(u).copied())
                .collect();
            let mut keep = vec![true; self.messages.len()];
            for i in gone {
                keep[i] = false;
            }
            let mut k = keep.iter();
            self.messages.retain(|_| *k.next().unwrap_or(&true));
            let mut k = keep.iter();
            self.names.retain(|_| *k.next().unwrap_or(&true));
        }
        Ok(())
    }
}

/// A message to save into a Maildir: its bytes, or a file to hard-link (a copy from
/// another Maildir, as Dovecot's `maildir_copy_with_hardlinks`).
#[derive(Debug, Clone)]
pub enum MaildirSource<'a> {
    Data(&'a [u8]),
    Link(PathBuf),
}

/// A message to save ([`append`]).
#[derive(Debug, Clone)]
pub struct MaildirSave<'a> {
    pub source: MaildirSource<'a>,
    pub flags: Flags,
    pub keywords: Vec<String>,
    /// The internal date: the file's modification time.
    pub date: i64,
}

/// Save `msgs` into the Maildir `dir` as Dovecot's IMAP APPEND and COPY do: each one
/// written to `tmp/` (CRLF stored as LF), fsynced, its time set to the internal date and
/// renamed into `cur/` as `SECS.MUSECSPpidQn.HOST,S=size,W=vsize:2,FLAGS` (or hard-linked
/// there from its source), then given the next UIDs in `dovecot-uidlist` under its lock.
/// Returns UIDVALIDITY and the new UIDs.
pub fn append(
    dir: &Path,
    ctl: &Path,
    validity_hint: Option<u32>,
    msgs: &[MaildirSave],
) -> Result<(u32, Vec<u32>), MailboxError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    ensure_dirs(dir)?;
    let names: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for m in msgs {
            for k in &m.keywords {
                if !v.contains(k) {
                    v.push(k.clone());
                }
            }
        }
        v
    };
    let letters: HashMap<String, char> = if names.is_empty() {
        HashMap::new()
    } else {
        keyword_letters(ctl, &names)?.into_iter().collect()
    };
    let host = hostname();
    let mut placed: Vec<PathBuf> = Vec::new();
    let mut bases: Vec<String> = Vec::new();
    let undo = |placed: &[PathBuf]| {
        for p in placed {
            let _ = std::fs::remove_file(p);
        }
    };
    for m in msgs {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let unique = format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed) + 1,
            host
        );
        let lets: Vec<char> = m
            .keywords
            .iter()
            .filter_map(|k| letters.get(k).copied())
            .collect();
        let flags_part = info(m.flags, "", &lets);
        let placed_now = match &m.source {
            MaildirSource::Data(data) => {
                let mut stored = Vec::with_capacity(data.len());
                for line in data.split_inclusive(|&b| b == b'\n') {
                    match line.strip_suffix(b"\r\n") {
                        Some(l) => {
                            stored.extend_from_slice(l);
                            stored.push(b'\n');
                        }
                        None => stored.extend_from_slice(line),
                    }
                }
                let base = format!("{unique},S={},W={}", stored.len(), crlf_size(&stored));
                let tmp = dir.join("tmp").join(&base);
                let written = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&tmp)
                    .and_then(|mut f| {
                        f.write_all(&stored)?;
                        f.sync_all()?;
                        set_mtime(&f, m.date);
                        Ok(())
                    });
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&tmp);
                    undo(&placed);
                    return Err(MailboxError::io(&tmp, e));
                }
                let to = dir.join("cur").join(format!("{base}{flags_part}"));
                if let Err(e) = std::fs::rename(&tmp, &to) {
                    let _ = std::fs::remove_file(&tmp);
                    undo(&placed);
                    return Err(MailboxError::io(&to, e));
                }
                (to, base)
            }
            MaildirSource::Link(src) => {
                // Keep the source's `,S=`/`,W=` sizes: the bytes are the same.
                let src_name = src
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let sizes: String = base_name(&src_name)
                    .split(',')
                    .skip(1)
                    .filter(|p| p.starts_with("S=") || p.starts_with("W="))
                    .map(|p| format!(",{p}"))
                    .collect();
                let base = format!("{unique}{sizes}");
                let to = dir.join("cur").join(format!("{base}{flags_part}"));
                if let Err(e) = std::fs::hard_link(src, &to) {
                    // Another file system (or links not allowed): copy the bytes.
                    let copied = std::fs::read(src).and_then(|data| {
                        let tmp = dir.join("tmp").join(&base);
                        let mut f = OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .custom_flags(libc::O_NOFOLLOW)
                            .open(&tmp)?;
                        f.write_all(&data)?;
                        f.sync_all()?;
                        set_mtime(&f, m.date);
                        std::fs::rename(&tmp, &to)
                    });
                    if copied.is_err() {
                        undo(&placed);
                        return Err(MailboxError::io(&to, e));
                    }
                }
                (to, base)
            }
        };
        placed.push(placed_now.0);
        bases.push(placed_now.1);
    }
    if let Err(e) = fsync_dir(&dir.join("cur")) {
        undo(&placed);
        return Err(e);
    }
    // On failure the files stay: the next sync gives them UIDs.
    let mut lock = uidlist_lock(ctl)?;
    let mut list =
        read_uidlist(&ctl.join("dovecot-uidlist")).unwrap_or_else(|| fresh_uidlist(validity_hint));
    let mut uids = Vec::with_capacity(bases.len());
    for base in bases {
        let uid = list.next.max(1);
        list.next = uid + 1;
        list.records.push((uid, String::new(), base));
        uids.push(uid);
    }
    let validity = list.validity;
    write_uidlist(ctl, &list, &mut lock)?;
    Ok((validity, uids))
}

/// Create the `dovecot-uidlist` of a new, empty folder with UIDVALIDITY `validity` and
/// a mailbox GUID, as Dovecot does when it creates a Maildir folder.
pub fn create_uidlist(ctl: &Path, validity: u32) -> Result<(), MailboxError> {
    let mut lock = uidlist_lock(ctl)?;
    let list = read_uidlist(&ctl.join("dovecot-uidlist")).unwrap_or_else(|| UidList {
        guid: new_guid(),
        ..fresh_uidlist(Some(validity))
    });
    write_uidlist(ctl, &list, &mut lock)
}

/// A mailbox GUID (128 bits, hexadecimal) as Dovecot writes in `G` of the list header.
fn new_guid() -> String {
    let mut b = [0u8; 16];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b = (t ^ u128::from(std::process::id())).to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Set `file`'s modification time (and access time) to `t` (Unix seconds).
fn set_mtime(file: &File, t: i64) {
    let t = if t >= 0 {
        UNIX_EPOCH + std::time::Duration::from_secs(t as u64)
    } else {
        UNIX_EPOCH - std::time::Duration::from_secs(t.unsigned_abs())
    };
    let _ = file.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t));
}

/// `(seconds, microseconds)` from a Maildir name `SECS.MUSECSP…` (0 for parts that are
/// missing or not numbers, e.g. names other programs chose).
fn delivery_time(name: &str) -> (u64, u64) {
    let (secs, rest) = name.split_once('.').unwrap_or((name, ""));
    let usecs = rest
        .strip_prefix('M')
        .map(|r| {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            r[..end].parse().unwrap_or(0)
        })
        .unwrap_or(0);
    (secs.parse().unwrap_or(0), usecs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_commit_delivers_each_message_into_new() {
        let d = tempfile::tempdir().expect("tempdir");
        let md = d.path().join("Maildir");
        let msgs: [&[u8]; 3] = [b"Subject: a\r\n\r\none\r\n", b"Subject: b\n\ntwo\n", b"x"];
        let r = deliver_maildir_batch(&md, &msgs);
        let paths: Vec<PathBuf> = r.into_iter().map(|p| p.expect("delivered")).collect();
        assert_eq!(paths.len(), 3);
        for (p, want) in paths
            .iter()
            .zip(["Subject: a\n\none\n", "Subject: b\n\ntwo\n", "x"])
        {
            assert_eq!(p.parent(), Some(md.join("new").as_path()));
            assert_eq!(std::fs::read_to_string(p).expect("read"), want);
        }
        assert_eq!(std::fs::read_dir(md.join("tmp")).expect("tmp").count(), 0);
        // A Maildir that cannot be made fails every message alike.
        std::fs::write(d.path().join("file"), b"").expect("write");
        let r = deliver_maildir_batch(&d.path().join("file"), &msgs);
        assert!(r.len() == 3 && r.iter().all(Result::is_err), "{r:?}");
    }

    /// The directories are made when a delivery finds one missing (not looked up before
    /// each delivery): all three for a new Maildir, `new/` again when only it was removed.
    #[test]
    fn missing_directories_are_made_when_a_delivery_needs_them() {
        let d = tempfile::tempdir().expect("tempdir");
        let md = d.path().join("Maildir");
        let p = deliver_maildir(&md, b"Subject: a\n\none\n").expect("delivered");
        assert_eq!(p.parent(), Some(md.join("new").as_path()));
        for sub in ["tmp", "new", "cur"] {
            assert!(md.join(sub).is_dir(), "{sub}");
        }
        std::fs::remove_dir_all(md.join("new")).expect("rm new");
        let p = deliver_maildir(&md, b"Subject: b\n\ntwo\n").expect("delivered again");
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            "Subject: b\n\ntwo\n"
        );
        assert_eq!(std::fs::read_dir(md.join("tmp")).expect("tmp").count(), 0);
        std::fs::remove_dir_all(md.join("tmp")).expect("rm tmp");
        deliver_maildir(&md, b"x").expect("delivered with tmp/ made again");
        assert_eq!(std::fs::read_dir(md.join("new")).expect("new").count(), 2);
    }

    #[test]
    fn new_files_are_numbered_in_delivery_order() {
        assert!(delivery_time("1764345600.M99P1Q1.h") < delivery_time("1764345600.M123456P1Q2.h"));
        assert!(delivery_time("1764345599.M999999P1.h") < delivery_time("1764345600.M5P1.h"));
        assert_eq!(delivery_time("courier-name"), (0, 0));
    }

    /// A `,W=` in the name is the size clients see, without reading the file (Dovecot's
    /// `maildir_filename_get_size`); other files are read when asked for (POP3's opening
    /// asks for all), once per process.
    #[test]
    fn virtual_size_from_the_name_or_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let md = dir.path().join("Maildir");
        ensure_dirs(&md).expect("dirs");
        std::fs::write(
            md.join("cur/1700000000.M1P1.h,S=12,W=99:2,S"),
            "Subject: a\n\n",
        )
        .expect("w");
        std::fs::write(md.join("cur/1700000001.M2P1.h:2,"), "Subject: b\n\nbody\n").expect("w");
        let sizes = |mb: &MaildirBox| mb.messages.iter().map(|m| m.size).collect::<Vec<_>>();
        let eager = MaildirOpen {
            sizes: true,
            ..MaildirOpen::default()
        };
        let mb = MaildirBox::open(&md, &md, eager, None).expect("open");
        assert_eq!(sizes(&mb), [Some(99), Some(20)]);
        let again = MaildirBox::open(&md, &md, MaildirOpen::default(), None).expect("open");
        assert_eq!(sizes(&again), [Some(99), Some(20)], "known to the process");
        assert_eq!(
            again.message(1).expect("msg").open().map(|_| ()).ok(),
            Some(())
        );
    }

    /// An IMAP opening reads no message file, stats none: sizes and dates come when
    /// asked for.
    #[test]
    fn lazy_sizes_and_dates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let md = dir.path().join("Maildir");
        ensure_dirs(&md).expect("dirs");
        let name = "1700000002.M3P1.lazy:2,";
        std::fs::write(md.join("cur").join(name), "Subject: c\n\nbody\nmore\n").expect("w");
        let f = File::options()
            .write(true)
            .open(md.join("cur").join(name))
            .expect("open");
        set_mtime(&f, 1_600_000_000);
        let mut mb = MaildirBox::open(&md, &md, MaildirOpen::default(), None).expect("open");
        assert_eq!(mb.messages[0].size, None);
        assert_eq!(mb.messages[0].date, None);
        mb.resolve(0, false, true).expect("date");
        assert_eq!(
            (mb.messages[0].size, mb.messages[0].date),
            (None, Some(1_600_000_000))
        );
        // Renamed by another client meanwhile: found again.
        std::fs::rename(
            md.join("cur").join(name),
            md.join("cur/1700000002.M3P1.lazy:2,S"),
        )
        .expect("rename");
        mb.resolve(0, true, true).expect("size");
        assert_eq!(mb.messages[0].size, Some(26));
        // What is known survives a refresh.
        mb.refresh().expect("refresh");
        assert_eq!(
            (mb.messages[0].size, mb.messages[0].date),
            (Some(26), Some(1_600_000_000))
        );
    }

    /// A file the session cannot read when it lists the Maildir (a delivery that has not
    /// given it to the user yet) is looked at again at the next refresh, though the
    /// directories did not change.
    #[test]
    fn unreadable_file_is_retried_at_the_next_refresh() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let md = dir.path().join("Maildir");
        ensure_dirs(&md).expect("dirs");
        std::fs::write(md.join("cur/1700000003.M4P1.r:2,"), "Subject: d\n\n").expect("w");
        let late = md.join("cur/1700000004.M5P1.r:2,");
        std::fs::write(&late, "Subject: e\n\n").expect("w");
        std::fs::set_permissions(&late, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        // As root, the test looks as an unprivileged mail user (root reads any file).
        let user = crate::sys::fsid::running_as_root().then_some((65534, 65534));
        if let Some((u, g)) = user {
            for p in [
                dir.path().to_path_buf(),
                md.clone(),
                md.join("cur"),
                md.join("new"),
                md.join("tmp"),
            ] {
                nix::unistd::chown(&p, Some(u.into()), Some(g.into())).expect("chown");
            }
            for f in std::fs::read_dir(md.join("cur")).expect("ls").flatten() {
                nix::unistd::chown(&f.path(), Some(u.into()), Some(g.into())).expect("chown");
            }
        }
        let _id = crate::sys::fsid::FsIdentity::maybe(user);
        let eager = MaildirOpen {
            sizes: true,
            ..MaildirOpen::default()
        };
        let mut mb = MaildirBox::open(&md, &md, eager, None).expect("open");
        assert_eq!(mb.messages.len(), 1, "the unreadable file is left out");
        assert!(mb.retrying());
        let stamp = MaildirStamp::of(&md, &md);
        std::fs::set_permissions(&late, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            MaildirStamp::of(&md, &md),
            stamp,
            "the directories did not change"
        );
        mb.refresh().expect("refresh");
        assert_eq!(mb.messages.len(), 2, "taken at the next refresh");
        assert_eq!(mb.messages[1].size, Some(14));
        assert!(!mb.retrying());
        // Lazily, the file is listed and its size read when asked for, failing until it
        // can be read.
        std::fs::set_permissions(&late, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        let mut lazy = MaildirBox::open(&md, &md, MaildirOpen::default(), None).expect("open");
        lazy.messages[1].size = None;
        assert_eq!(lazy.messages.len(), 2);
        assert!(lazy.resolve(1, true, false).is_err());
        assert_eq!(lazy.messages[1].size, None);
        std::fs::set_permissions(&late, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        lazy.resolve(1, true, false).expect("readable now");
        assert_eq!(lazy.messages[1].size, Some(14));
    }

    /// A message is read through the Maildir's descriptor to its end; one that became a
    /// symlink under the session is refused, never followed; one renamed by another
    /// client (flags changed) is found again.
    #[test]
    fn message_open_refuses_symlinks_and_finds_renamed() {
        use std::io::Read;
        let dir = tempfile::tempdir().expect("tempdir");
        let md = dir.path().join("Maildir");
        ensure_dirs(&md).expect("dirs");
        let a = md.join("cur/1700000000.M1P1.h:2,");
        let b = md.join("cur/1700000001.M2P1.h:2,");
        std::fs::write(&a, "Subject: a\n\nbody a\n").expect("w");
        std::fs::write(&b, "Subject: b\n\nbody b\n").expect("w");
        let mb = MaildirBox::open(&md, &md, MaildirOpen::default(), None).expect("open");
        let read = |i: usize| -> Result<String, MailboxError> {
            let mut s = String::new();
            mb.message(i)
                .expect("message")
                .open()?
                .read_to_string(&mut s)
                .map_err(|e| MailboxError::Format(e.to_string()))?;
            Ok(s)
        };
        assert_eq!(read(0).expect("a"), "Subject: a\n\nbody a\n");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "not mail\n").expect("w");
        std::fs::remove_file(&a).expect("rm");
        std::os::unix::fs::symlink(&secret, &a).expect("symlink");
        assert!(read(0).is_err(), "a symlink is not followed");
        std::fs::rename(&b, md.join("cur/1700000001.M2P1.h:2,S")).expect("mv");
        assert_eq!(read(1).expect("b"), "Subject: b\n\nbody b\n");
    }

    /// The owner fast path opens only a regular file of the given owner, reached without
    /// a symlink; everything else is left to the opening with the user's ids.
    #[test]
    fn open_if_owned_only_for_the_owners_regular_files() {
        use std::io::Read;
        let me = nix::unistd::geteuid().as_raw();
        let dir = tempfile::tempdir().expect("tempdir");
        let md = dir.path().join("Maildir");
        ensure_dirs(&md).expect("dirs");
        let names = [
            "cur/1700000000.M1P1.h:2,",
            "cur/1700000001.M2P1.h:2,",
            "cur/1700000002.M3P1.h:2,",
        ];
        for n in names {
            std::fs::write(md.join(n), "Subject: x\n\nbody\n").expect("w");
        }
        let mb = MaildirBox::open(&md, &md, MaildirOpen::default(), None).expect("open");
        let mut s = String::new();
        mb.message(0)
            .expect("m")
            .open_if_owned(me)
            .expect("own file")
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "Subject: x\n\nbody\n");
        assert!(
            mb.message(0).expect("m").open_if_owned(me + 1).is_none(),
            "other owner"
        );
        std::fs::remove_file(md.join(names[1])).expect("rm");
        std::os::unix::fs::symlink(md.join(names[0]), md.join(names[1])).expect("ln");
        assert!(
            mb.message(1).expect("m").open_if_owned(me).is_none(),
            "symlink"
        );
        std::fs::remove_file(md.join(names[2])).expect("rm");
        nix::unistd::mkfifo(&md.join(names[2]), nix::sys::stat::Mode::S_IRWXU).expect("fifo");
        assert!(
            mb.message(2).expect("m").open_if_owned(me).is_none(),
            "fifo, not waited on"
        );
        assert!(mb.message(2).expect("m").open().is_ok_and(|mut r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v).is_err() || v.is_empty()
        }));
    }

    #[test]
    fn deliver_list_expunge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let md = dir.path().join("Maildir");
        let a = deliver_maildir(&md, b"Subject: a\r\n\r\nbody\r\n").expect("deliver");
        assert!(a.starts_with(md.join("new")));
        assert_eq!(std::fs::read(&a).expect("read"), b"Subject: a\n\nbody\n");
        deliver_maildir(&md, b"Subject: b\n\nx\n").expect("deliver");
        let mut mb = MaildirBox::open(&md, &md, MaildirOpen::default(), None).expect("open");
        assert_eq!(mb.messages.len(), 2);
        assert_eq!(mb.messages[0].uid, 1);
        mb.resolve(0, true, false).expect("size");
        assert_eq!(mb.messages[0].size, Some(20));
        let list = std::fs::read_to_string(md.join("dovecot-uidlist")).expect("uidlist");
        assert!(
            list.starts_with(&format!("3 V{} N3\n1 :", mb.uid_validity)),
            "{list}"
        );
        let gone: std::collections::HashSet<u32> = [mb.messages[0].uid].into();
        mb.update(&HashMap::new(), &gone).expect("expunge");
        deliver_maildir(&md, b"Subject: c\n\ny\n").expect("deliver");
        let again = MaildirBox::open(&md, &md, MaildirOpen::default(), None).expect("open");
        assert_eq!(
            again.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(again.uid_validity, mb.uid_validity);
    }
}
