//! Maildir: `tmp/`, `new/`, `cur/`; a message is written to `tmp/`, fsynced, and appears
//! by rename into `new/` (then the directory is fsynced). Flags ride in the file name after
//! `:2,` (`S` seen, `R` replied, `T` trashed, `D` draft, `F` flagged).
//!
//! UIDs live where Dovecot keeps them: `dovecot-uidlist`, version 3 — a header
//! `3 V<uidvalidity> N<next uid> G<guid>` and one line per message `<uid> [ext…] :<base
//! name>` (the base name is the file name before `:2,`). New messages get the next UIDs
//! and the list is rewritten as Dovecot does: written to `dovecot-uidlist.lock` (which is
//! also the lock, taken with `O_EXCL`), fsynced and renamed over `dovecot-uidlist`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{MailboxError, MessageInfo, crlf_size};

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

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        // `/` and `:` cannot appear in a Maildir name (the Maildir spec's escapes).
        .map(|h| h.replace('/', "\\057").replace(':', "\\072"))
        .unwrap_or_else(|| "localhost".into())
}

fn fsync_dir(dir: &Path) -> Result<(), MailboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| MailboxError::io(dir, e))
}

/// Deliver `message` into the Maildir `dir` (created if missing): write to `tmp/`, fsync,
/// rename into `new/`, fsync `new/`. Returns the message's path in `new/`.
pub fn deliver_maildir(dir: &Path, message: &[u8]) -> Result<PathBuf, MailboxError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    ensure_dirs(dir)?;
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
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(&data)?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(MailboxError::io(&tmp, e));
    }
    let new = dir.join("new").join(&name);
    if let Err(e) = std::fs::rename(&tmp, &new) {
        let _ = std::fs::remove_file(&tmp);
        return Err(MailboxError::io(&new, e));
    }
    fsync_dir(&dir.join("new"))?;
    Ok(new)
}

/// `dovecot-uidlist` as read: UIDVALIDITY, next UID, GUID, base name → UID.
#[derive(Debug, Default)]
struct UidList {
    validity: u32,
    next: u32,
    guid: String,
    uids: HashMap<String, u32>,
}

fn read_uidlist(path: &Path) -> Option<UidList> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let head = lines.next()?;
    let mut words = head.split_whitespace();
    if words.next()? != "3" {
        // XXX: versions 1 and 2 (Dovecot 1.0) are not read; the box gets new UIDs.
        return None;
    }
    let mut list = UidList::default();
    for w in words {
        match w.split_at(1) {
            ("V", v) => list.validity = v.parse().ok()?,
            ("N", v) => list.next = v.parse().ok()?,
            ("G", v) => list.guid = v.to_string(),
            _ => {}
        }
    }
    for line in lines {
        let Some((left, name)) = line.split_once(':') else {
            continue;
        };
        let Some(uid) = left.split_whitespace().next().and_then(|u| u.parse().ok()) else {
            continue;
        };
        list.uids.insert(name.to_string(), uid);
    }
    Some(list)
}

fn uidlist_lock(dir: &Path) -> Result<(File, PathBuf), MailboxError> {
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

/// The size of a message as POP3 reports it: from a `,W=` part of the name (Dovecot's
/// deliveries write it), from `known` sizes, else by reading the file. `None`: the file
/// is gone.
fn vsize(base: &str, dir: &Path, rel: &str, known: &Sizes, buf: &mut [u8]) -> Option<u64> {
    if let Some(w) = base
        .split(',')
        .skip(1)
        .find_map(|part| part.strip_prefix("W="))
        .and_then(|w| w.parse().ok())
    {
        return Some(w);
    }
    if let Some(&n) = known.get(base) {
        return Some(n);
    }
    file_crlf_size(&dir.join(rel), buf).ok()
}

/// A file's size with every bare LF counted as CRLF, read through `buf`.
fn file_crlf_size(path: &Path, buf: &mut [u8]) -> std::io::Result<u64> {
    let mut f = File::open(path)?;
    let mut n = 0u64;
    let mut prev = 0u8;
    loop {
        let got = std::io::Read::read(&mut f, buf)?;
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
                let p = locate(&self.dir, &path(), &self.base).ok_or_else(|| {
                    MailboxError::Format(format!("{}: message vanished", self.base))
                })?;
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
        Ok(super::MessageReader::new(Vec::new(), f, 0, u64::MAX, p))
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

/// An opened Maildir INBOX.
#[derive(Debug)]
pub struct MaildirMailbox {
    pub dir: PathBuf,
    pub uid_validity: u32,
    pub messages: Vec<MessageInfo>,
    /// Each message's file, relative to `dir` (`cur/NAME:2,S`): one short string per
    /// message rather than a whole path.
    names: Vec<Box<str>>,
    /// `dir` opened, for opening messages relative to it.
    dirfd: Option<Arc<OwnedFd>>,
}

impl MaildirMailbox {
    /// List `new/` and `cur/`, take UIDs from `dovecot-uidlist` and give new messages the
    /// next ones (rewriting the list).
    pub fn open(dir: &Path) -> Result<MaildirMailbox, MailboxError> {
        Self::open_session(dir, false)
    }

    /// [`open`](Self::open); with `drop_recent`, messages in `new/` move to `cur/` (as
    /// `NAME:2,`), as Dovecot's POP3 session does unless `pop3_no_flag_updates = yes`.
    pub fn open_session(dir: &Path, drop_recent: bool) -> Result<MaildirMailbox, MailboxError> {
        ensure_dirs(dir)?;
        if let Some(mb) = Self::open_unlocked(dir, drop_recent)? {
            return Ok(mb);
        }
        let (lock_file, lock_path) = uidlist_lock(dir)?;
        let res = Self::open_locked(dir, lock_file, &lock_path, drop_recent);
        let _ = std::fs::remove_file(&lock_path);
        res
    }

    fn open_locked(
        dir: &Path,
        mut lock_file: File,
        lock_path: &Path,
        drop_recent: bool,
    ) -> Result<MaildirMailbox, MailboxError> {
        // (file name, path relative to `dir`)
        let mut files: Vec<(String, Box<str>)> = Vec::new();
        for sub in ["cur", "new"] {
            let d = dir.join(sub);
            let rd = std::fs::read_dir(&d).map_err(|e| MailboxError::io(&d, e))?;
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                if drop_recent && sub == "new" {
                    // Dovecot's sync moves a message it has seen out of new/.
                    let target = if name.contains(':') {
                        name.clone()
                    } else {
                        format!("{name}:2,")
                    };
                    let to = dir.join("cur").join(&target);
                    if std::fs::rename(ent.path(), &to).is_ok() {
                        let rel = format!("cur/{target}").into();
                        files.push((target, rel));
                        continue;
                    }
                }
                let rel = format!("{sub}/{name}").into();
                files.push((name, rel));
            }
        }
        let existing = read_uidlist(&dir.join("dovecot-uidlist"));
        let dirty = existing.is_none();
        let mut list = existing.unwrap_or_else(|| UidList {
            validity: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(1),
            next: 1,
            guid: String::new(),
            uids: HashMap::new(),
        });
        let mut known: Vec<(u32, String, Box<str>)> = Vec::new();
        let mut fresh: Vec<(String, Box<str>)> = Vec::new();
        for (name, path) in files {
            let base = base_name(&name).to_string();
            match list.uids.get(&base) {
                Some(&u) => known.push((u, base, path)),
                None => fresh.push((base, path)),
            }
        }
        // New files get UIDs in delivery order: the time at the start of the name, compared
        // as numbers (`SECS.MUSECS…`; microseconds are not zero-padded, so a plain string
        // sort misorders two deliveries in one second), then the name.
        fresh.sort_by_cached_key(|(base, _)| (delivery_time(base), base.clone()));
        let mut added = false;
        for (base, path) in fresh {
            let uid = list.next.max(1);
            list.next = uid + 1;
            list.uids.insert(base.clone(), uid);
            known.push((uid, base, path));
            added = true;
        }
        known.sort_by_key(|k| k.0);
        if dirty || added {
            let mut text = format!("3 V{} N{}", list.validity, list.next.max(1));
            if !list.guid.is_empty() {
                text.push_str(&format!(" G{}", list.guid));
            }
            text.push('\n');
            for (uid, base, _) in &known {
                text.push_str(&format!("{uid} :{base}\n"));
            }
            lock_file
                .write_all(text.as_bytes())
                .and_then(|()| lock_file.sync_all())
                .map_err(|e| MailboxError::io(lock_path, e))?;
            let target = dir.join("dovecot-uidlist");
            std::fs::rename(lock_path, &target).map_err(|e| MailboxError::io(&target, e))?;
        }
        Ok(Self::build(dir, list.validity, known))
    }

    /// The mailbox as `dovecot-uidlist` has it, read without its lock, when nothing is to
    /// be written: every file listed already has its UID, and no message waits in `new/`
    /// to be moved. As Dovecot, which takes `dovecot-uidlist.lock` only to change the
    /// list; sessions opening the same Maildir then do not wait for each other. `None`:
    /// open under the lock.
    fn open_unlocked(
        dir: &Path,
        drop_recent: bool,
    ) -> Result<Option<MaildirMailbox>, MailboxError> {
        // Paths relative to `dir`: `cur/NAME`.
        let mut files: Vec<Box<str>> = Vec::new();
        for sub in ["cur", "new"] {
            let d = dir.join(sub);
            let rd = std::fs::read_dir(&d).map_err(|e| MailboxError::io(&d, e))?;
            for ent in rd.flatten() {
                let name = ent.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') {
                    continue;
                }
                if drop_recent && sub == "new" {
                    return Ok(None);
                }
                files.push(format!("{sub}/{name}").into());
            }
        }
        let Some(list) = read_uidlist(&dir.join("dovecot-uidlist")) else {
            return Ok(None);
        };
        let mut known: Vec<(u32, String, Box<str>)> = Vec::with_capacity(files.len());
        for rel in files {
            let base = base_name(&rel[4..]).to_string();
            match list.uids.get(&base) {
                Some(&u) => known.push((u, base, rel)),
                None => return Ok(None),
            }
        }
        known.sort_by_key(|k| k.0);
        Ok(Some(Self::build(dir, list.validity, known)))
    }

    /// The mailbox of the messages `known` (UID order): each one's size as clients see it
    /// (see [`vsize`]).
    fn build(dir: &Path, validity: u32, known: Vec<(u32, String, Box<str>)>) -> MaildirMailbox {
        let mut mb = MaildirMailbox {
            dir: dir.to_path_buf(),
            uid_validity: validity,
            messages: Vec::with_capacity(known.len()),
            names: Vec::with_capacity(known.len()),
            dirfd: OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY)
                .open(dir)
                .ok()
                .map(|f| Arc::new(OwnedFd::from(f))),
        };
        let mut buf = vec![0u8; 16 * 1024];
        let mut cache = VSIZES.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= VSIZE_DIRS && !cache.contains_key(dir) {
            cache.clear();
        }
        let old = cache.remove(dir).unwrap_or_default();
        let mut sizes = Sizes::with_capacity(known.len());
        for (uid, base, rel) in known {
            // A file that vanished meanwhile (another session expunged it) is skipped.
            let Some(size) = vsize(&base, dir, &rel, &old, &mut buf) else {
                continue;
            };
            sizes.insert(base.as_str().into(), size);
            mb.messages.push(MessageInfo {
                uid,
                size,
                file_base: base,
            });
            mb.names.push(rel);
        }
        cache.insert(dir.to_path_buf(), sizes);
        mb
    }

    /// The path of message `index` as the mailbox last saw it.
    fn path(&self, index: usize) -> Option<PathBuf> {
        self.names.get(index).map(|n| self.dir.join(&**n))
    }

    /// Where message `index` is, to be opened by [`MaildirMessage::open`].
    pub fn message(&self, index: usize) -> Option<MaildirMessage> {
        Some(MaildirMessage {
            dir: self.dir.clone(),
            dirfd: self.dirfd.clone(),
            rel: self.names.get(index)?.clone(),
            base: self.messages.get(index)?.file_base.clone(),
        })
    }

    /// Where message `index` is now: its path, or the same base name under other flags or
    /// in the other directory (another client may have renamed it).
    fn locate(&self, index: usize) -> Option<PathBuf> {
        locate(
            &self.dir,
            &self.path(index)?,
            &self.messages.get(index)?.file_base,
        )
    }

    pub fn read(&self, index: usize) -> Result<Vec<u8>, MailboxError> {
        let p = self
            .locate(index)
            .ok_or_else(|| MailboxError::Format(format!("message {} vanished", index + 1)))?;
        std::fs::read(&p).map_err(|e| MailboxError::io(&p, e))
    }

    /// Unlink the messages at `indexes`; one already gone counts as deleted.
    pub fn expunge(&mut self, indexes: &[usize]) -> Result<(), MailboxError> {
        self.commit(indexes, &[])
    }

    /// POP3's UPDATE state: add the `S` flag to the messages at `seen` (a message still in
    /// `new/` moves to `cur/`), then unlink those at `gone`, as Dovecot 2.3 does at QUIT.
    pub fn commit(&mut self, gone: &[usize], seen: &[usize]) -> Result<(), MailboxError> {
        let mut renamed = false;
        for &i in seen {
            if gone.contains(&i) {
                continue;
            }
            // Already \Seen when the mailbox was read: nothing to do, no lookup (as
            // Dovecot goes by its index; a message read again keeps its name).
            if self
                .names
                .get(i)
                .and_then(|n| n.split_once(":2,"))
                .is_some_and(|(_, flags)| flags.contains('S'))
            {
                continue;
            }
            let Some(p) = self.locate(i) else {
                continue;
            };
            let Some(name) = p.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            let (base, flags) = match name.split_once(":2,") {
                Some((b, f)) => (b.to_string(), f.to_string()),
                None => (base_name(&name).to_string(), String::new()),
            };
            if flags.contains('S') {
                continue;
            }
            // Maildir flags are kept in ASCII order.
            let mut f: Vec<char> = flags.chars().chain(std::iter::once('S')).collect();
            f.sort_unstable();
            let to = self
                .dir
                .join("cur")
                .join(format!("{base}:2,{}", f.into_iter().collect::<String>()));
            match std::fs::rename(&p, &to) {
                Ok(()) => {
                    renamed = true;
                    if let (Some(slot), Some(rel)) = (
                        self.names.get_mut(i),
                        to.strip_prefix(&self.dir).ok().and_then(|r| r.to_str()),
                    ) {
                        *slot = rel.into();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(MailboxError::io(&p, e)),
            }
        }
        if renamed && gone.is_empty() {
            for sub in ["cur", "new"] {
                fsync_dir(&self.dir.join(sub))?;
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        for &i in gone {
            if let Some(p) = self.locate(i) {
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(MailboxError::io(&p, e)),
                }
            }
        }
        for sub in ["cur", "new"] {
            fsync_dir(&self.dir.join(sub))?;
        }
        Ok(())
    }
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
    fn new_files_are_numbered_in_delivery_order() {
        assert!(delivery_time("1764345600.M99P1Q1.h") < delivery_time("1764345600.M123456P1Q2.h"));
        assert!(delivery_time("1764345599.M999999P1.h") < delivery_time("1764345600.M5P1.h"));
        assert_eq!(delivery_time("courier-name"), (0, 0));
    }

    /// A `,W=` in the name is the size clients see, without reading the file (Dovecot's
    /// `maildir_filename_get_size`); other files are read once per process.
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
        let sizes = |mb: &MaildirMailbox| mb.messages.iter().map(|m| m.size).collect::<Vec<_>>();
        let mb = MaildirMailbox::open(&md).expect("open");
        assert_eq!(sizes(&mb), [99, 20]);
        let again = MaildirMailbox::open(&md).expect("open");
        assert_eq!(sizes(&again), [99, 20]);
        assert_eq!(
            again.message(1).expect("msg").open().map(|_| ()).ok(),
            Some(())
        );
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
        let mb = MaildirMailbox::open(&md).expect("open");
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
        let mb = MaildirMailbox::open(&md).expect("open");
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
        let mut mb = MaildirMailbox::open(&md).expect("open");
        assert_eq!(mb.messages.len(), 2);
        assert_eq!(mb.messages[0].uid, 1);
        assert_eq!(mb.messages[0].size, 20);
        let list = std::fs::read_to_string(md.join("dovecot-uidlist")).expect("uidlist");
        assert!(
            list.starts_with(&format!("3 V{} N3\n1 :", mb.uid_validity)),
            "{list}"
        );
        mb.expunge(&[0]).expect("expunge");
        deliver_maildir(&md, b"Subject: c\n\ny\n").expect("deliver");
        let again = MaildirMailbox::open(&md).expect("open");
        assert_eq!(
            again.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(again.uid_validity, mb.uid_validity);
    }
}
