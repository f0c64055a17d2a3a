//! The queue directory behind one API: where a file of a queue lives, the one scan of a
//! queue, the one durable write outside the group commit, and the moves every writer and
//! mover makes (hold, release, requeue, defer, flush, activate, corrupt, delete). The SMTP
//! server, the queue manager, pickup, bounce, `sendmail`, `postdrop` and `postsuper` go
//! through [`Store`]; a second backend (DESIGN.md §7) would be one more implementation of
//! these operations.
//!
//! # Layout
//! Postfix 3.7's: one directory per queue under `queue_directory`; `deferred`, `defer`,
//! `bounce` and `trace` hashed one level deep on the first character of the queue ID
//! (`hash_queue_depth = 1`); a file is named by its queue ID, and one with `u+x` is complete.
//!
//! # The durable write ([`write_durable`])
//! The steps of the group commit in [`super::writer`] (see the argument there), for one file
//! at a time: a temporary name (`.tmp.PID.SEQ.ID`, removed by [`super::writer::remove_stale`]
//! when its writer died), created exclusively without following a symlink; the contents;
//! the "complete" mode; `fsync`; a rename that never replaces a file already there; an
//! `fsync` of the directory. A failure removes the temporary file. Used by pickup, bounce,
//! `sendmail` and `postdrop`; `smtpd` commits through [`super::Queue::commit`], which batches
//! the same steps.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::writer::{create_new, mark_complete, rename_noreplace};

/// Queues hashed one level deep (`hash_queue_names` plus Postern's `bounce` and `trace`).
pub fn is_hashed(queue: &str) -> bool {
    matches!(queue, "deferred" | "defer" | "bounce" | "trace")
}

/// Modes of a file written by [`write_durable`].
#[derive(Debug, Clone, Copy)]
pub struct Modes {
    /// While it is being written (0600 for the mail system's own files, 0644 for a
    /// user's file in `maildrop/` that the mail system must read).
    pub writing: u32,
    /// Once complete (`u+x` added: 0700, 0744).
    pub complete: u32,
}

/// The mail system's own queue files: 0600, then 0700 (Postfix's cleanup).
pub const OWN: Modes = Modes {
    writing: 0o600,
    complete: 0o700,
};

/// A user's file in `maildrop/`: 0644, then 0744 (Postfix's postdrop), readable by the
/// queue manager, which does not own it.
pub const MAILDROP: Modes = Modes {
    writing: 0o644,
    complete: 0o744,
};

/// Write `data` as `dir/name` durably (see the module header): on stable storage, complete,
/// and never replacing a file of that name (`AlreadyExists` then). `mtime`, when given,
/// becomes the file's modification time (pickup keeps the submission time). The directory
/// fsync is skipped when the directory cannot be opened (`maildrop/` is mode 0730: the
/// `postdrop` group may write but not read it; Postfix's postdrop does not sync it either).
pub fn write_durable(
    dir: &Path,
    name: &str,
    data: &[u8],
    modes: Modes,
    mtime: Option<SystemTime>,
) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".tmp.{}.{seq}.{name}", std::process::id()));
    let dest = dir.join(name);
    let run = || -> io::Result<()> {
        let mut f = create_new(&tmp, modes.writing)?;
        // The umask may have taken bits the readers need.
        f.set_permissions(std::fs::Permissions::from_mode(modes.writing))?;
        f.write_all(data)?;
        mark_complete(&f, modes.complete)?;
        if let Some(t) = mtime {
            f.set_modified(t)?;
        }
        f.sync_all()?;
        rename_noreplace(&tmp, &dest)?;
        match std::fs::File::open(dir) {
            Ok(d) => d.sync_all(),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
            Err(e) => Err(e),
        }
    };
    let r = run();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Queue files (named like queue IDs) in `dir` in directory order, and in its
/// subdirectories one level down when `descend` (a hashed queue, or one that `postsuper -s`
/// has not put right yet).
pub fn scan_dir(dir: &Path, descend: bool) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    walk(
        dir,
        descend,
        false,
        &|name, _, _| super::QueueId::parse(name).is_some(),
        &mut out,
    );
    out
}

/// A queue directory opened once, whose files are opened relative to it (`openat`): a
/// listing of 100,000 queue files then walks no path per file (issue 18: path lookups were
/// the largest single cost of `mailq` on a large queue).
#[derive(Debug)]
pub struct QueueDir {
    dir: std::os::fd::OwnedFd,
    path: PathBuf,
}

impl QueueDir {
    pub fn open(path: &Path) -> io::Result<QueueDir> {
        use nix::fcntl::OFlag;
        let dir = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(io::Error::from)?;
        Ok(QueueDir {
            dir,
            path: path.to_path_buf(),
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open the file `name` in this directory for reading (following a symbolic link as
    /// `File::open` on its path would).
    pub fn open_file(&self, name: &str) -> io::Result<std::fs::File> {
        use nix::fcntl::OFlag;
        let fd = nix::fcntl::openat(
            &self.dir,
            name,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(io::Error::from)?;
        Ok(std::fs::File::from(fd))
    }
}

/// The one queue directory walk: the entries of `dir` that `keep` (name, entry, whether in
/// a subdirectory) accepts, in directory order, going one level down into subdirectories
/// when `descend`.
fn walk(
    dir: &Path,
    descend: bool,
    nested: bool,
    keep: &dyn Fn(&str, &std::fs::DirEntry, bool) -> bool,
    out: &mut Vec<(String, PathBuf)>,
) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if descend && e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&e.path(), false, true, keep, out);
        } else if keep(&name, &e, nested) {
            out.push((name, e.path()));
        }
    }
}

/// The queue under one `queue_directory`.
#[derive(Debug, Clone)]
pub struct Store {
    base: PathBuf,
}

impl Store {
    pub fn new(queue_directory: impl Into<PathBuf>) -> Store {
        Store {
            base: queue_directory.into(),
        }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The directory of `queue` where a file named `id` belongs (its hash subdirectory in a
    /// hashed queue).
    pub fn dir_for(&self, queue: &str, id: &str) -> PathBuf {
        let base = self.base.join(queue);
        if is_hashed(queue) {
            base.join(id.get(..1).unwrap_or("0"))
        } else {
            base
        }
    }

    /// Where a file of `id` lives in `queue`.
    pub fn path(&self, queue: &str, id: &str) -> PathBuf {
        self.dir_for(queue, id).join(id)
    }

    /// The queue files of `queue` in directory order (see [`scan_dir`]).
    pub fn scan(&self, queue: &str, descend: bool) -> Vec<(String, PathBuf)> {
        scan_dir(&self.base.join(queue), descend)
    }

    /// Every entry of `queue`, named like a queue ID or not (`postsuper -s` reports the
    /// others): the non-directories at its top and the files in its subdirectories.
    pub fn scan_all(&self, queue: &str) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        walk(
            &self.base.join(queue),
            true,
            false,
            &|_, e, nested| !nested || e.file_type().is_ok_and(|t| t.is_file()),
            &mut out,
        );
        out
    }

    /// Move the file at `from` to `queue` as `id` (the hash directory made when missing),
    /// replacing nothing only when `noreplace`. Returns the new path.
    fn move_to(&self, from: &Path, queue: &str, id: &str, noreplace: bool) -> io::Result<PathBuf> {
        let dir = self.dir_for(queue, id);
        let dest = dir.join(id);
        let rename = || {
            if noreplace {
                rename_noreplace(from, &dest)
            } else {
                std::fs::rename(from, &dest)
            }
        };
        // The directory is made only when the rename finds it missing (it nearly always
        // exists: `postsuper -h ALL` made one mkdir per message before).
        match rename() {
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    && (is_hashed(queue) || queue == "hold" || queue == "corrupt")
                    && from.symlink_metadata().is_ok() =>
            {
                let _ = super::make_queue_dir(&dir);
                rename()?;
            }
            other => other?,
        }
        Ok(dest)
    }

    /// Put a message on hold (`postsuper -h`, an access table's HOLD). `durable` also
    /// syncs `hold/`, so that the move survives a crash (smtpd, which has just replied 250).
    pub fn hold(&self, from: &Path, id: &str, durable: bool) -> io::Result<()> {
        let to = self.move_to(from, "hold", id, false)?;
        if durable {
            std::fs::File::open(to.parent().unwrap_or(Path::new(".")))?.sync_all()?;
        }
        Ok(())
    }

    /// Take a message off hold (`postsuper -H`): into `deferred/`, its modification time
    /// kept, as Postfix 3.7's postsuper does (a rename and nothing else; recorded in
    /// `compat-fixtures/postsuper-moves/`): a message held from `incoming/`, or from
    /// `deferred/` once its retry time had passed, is due at the queue manager's next
    /// deferred scan; one held before its retry time waits until then.
    pub fn release(&self, from: &Path, id: &str) -> io::Result<()> {
        self.move_to(from, "deferred", id, false).map(drop)
    }

    /// A message deferred until `next` (the queue manager, after an attempt).
    pub fn defer(&self, from: &Path, id: &str, next: SystemTime) -> io::Result<PathBuf> {
        touch(from, next);
        self.move_to(from, "deferred", id, false)
    }

    /// What Postfix's flush service does with a deferred message to be delivered now: the
    /// time stamp set to now and the file moved to `incoming/`.
    pub fn flush(&self, from: &Path, id: &str) -> io::Result<()> {
        touch(from, SystemTime::now());
        self.move_to(from, "incoming", id, false).map(drop)
    }

    /// Into `active/` (the queue manager); never replacing a file already there under the
    /// same name (`AlreadyExists`).
    pub fn activate(&self, from: &Path, id: &str) -> io::Result<PathBuf> {
        self.move_to(from, "active", id, true)
    }

    /// A file that cannot be read as a queue file goes to `corrupt/`.
    pub fn corrupt(&self, from: &Path, id: &str) -> io::Result<()> {
        self.move_to(from, "corrupt", id, false).map(drop)
    }

    /// `postsuper -r`: the file moves to `maildrop/`, where the queue manager takes it up
    /// again as newly submitted mail (it logs the `pickup` line and resolves every pending
    /// recipient afresh). As Postfix 3.7's postsuper (`requeue_one` and the `-r ALL` pass of
    /// `super()` in postsuper.c; recorded in `compat-fixtures/postsuper-moves/`): a rename,
    /// nothing else; the mode is kept and so are the defer, bounce and trace logs (Postfix's
    /// `mailq` shows a requeued message in `maildrop/` with its old reasons until pickup
    /// takes it). `now` (a message named by its ID, not `ALL`) also sets the access and
    /// modification times to now, as `requeue_one` does. False when a file of that name is
    /// in `maildrop/` already (Postfix's `rename` would replace it) or the move failed.
    /// XXX Postfix's pickup gives it a new queue ID through cleanup (re-running header and
    /// address rewriting), which leaves the old ID's logs behind for good; Postern keeps
    /// the ID, and its pickup removes the logs instead ([`Store::remove_logs`]).
    pub fn requeue(&self, from: &Path, id: &str, now: bool) -> bool {
        let dest = self.path("maildrop", id);
        // Never replacing a file of that name: refused by the rename itself, not by a look
        // before it (one system call fewer per message, and no window between the two).
        if rename_noreplace(from, &dest).is_err() {
            return false;
        }
        if now {
            touch_now(nix::fcntl::AT_FDCWD, &dest);
        }
        true
    }

    /// Remove the defer, bounce and trace logs of `id` (those there are). Pickup does this
    /// before it takes a requeued message into `incoming/` under the same ID, as Postfix's
    /// cleanup removes any log of the new queue ID it gives the message (`cleanup_open`:
    /// "otherwise mailq produces nonsense").
    pub fn remove_logs(&self, id: &str) {
        for log in ["defer", "bounce", "trace"] {
            let _ = std::fs::remove_file(self.path(log, id));
        }
    }

    /// `postsuper -s`: the file at `from`, named `id`, moves to where its name says it
    /// belongs in `queue` (its hash subdirectory in a hashed queue, the top in another),
    /// never replacing a file already there. `Ok(false)` when it is in place already or
    /// its place is taken.
    pub fn rehome(&self, from: &Path, queue: &str, id: &str) -> io::Result<bool> {
        let want = self.path(queue, id);
        if want == from || want.symlink_metadata().is_ok() {
            return Ok(false);
        }
        self.move_to(from, queue, id, true).map(|_| true)
    }

    /// Remove a message: its defer log, then the queue file (the file's result is returned).
    pub fn delete(&self, path: &Path, id: &str) -> io::Result<()> {
        let _ = std::fs::remove_file(self.path("defer", id));
        std::fs::remove_file(path)
    }
}

/// [`Store`]'s moves for a run over many messages (`postsuper -h|-H|-r|-d ALL`): every
/// directory a file leaves or enters, and the defer log directories, opened once, and each
/// move made relative to them (`renameat`, `renameat2`, `unlinkat`: one single-component
/// lookup instead of a path walk from the root per name). `-h`, `-H` and `-r ALL` are one
/// rename per message, as Postfix's; `-d` also removes the defer log. That is all that
/// changes: where a directory cannot be opened, or a move finds a name missing, the
/// [`Store`] operation on paths does it, as before (issue 18: `postsuper -r ALL` on
/// 100,000 messages made 200,000 failing path-walking `unlink`s of logs that were not
/// there, then a `fchmodat` and an `unlinkat` per message that Postfix's does not make).
pub struct Mover<'a> {
    store: &'a Store,
    /// Opened directories by path (`None`: could not be opened).
    dirs: std::collections::HashMap<PathBuf, Option<std::rc::Rc<QueueDir>>>,
}

impl<'a> Mover<'a> {
    pub fn new(store: &'a Store) -> Mover<'a> {
        Mover {
            store,
            dirs: std::collections::HashMap::new(),
        }
    }

    fn dir(&mut self, path: &Path) -> Option<std::rc::Rc<QueueDir>> {
        if let Some(d) = self.dirs.get(path) {
            return d.clone();
        }
        let d = QueueDir::open(path).ok().map(std::rc::Rc::new);
        self.dirs.insert(path.to_path_buf(), d.clone());
        d
    }

    /// The directory `from` is in and the one `queue` keeps `id` in, both opened.
    fn dirs_for(
        &mut self,
        from: &Path,
        queue: &str,
        id: &str,
    ) -> Option<(std::rc::Rc<QueueDir>, std::rc::Rc<QueueDir>)> {
        let src = self.dir(from.parent()?)?;
        let dest = self.dir(&self.store.dir_for(queue, id))?;
        Some((src, dest))
    }

    /// Rename `id` from the directory `src` to `dest` (both open for the whole run).
    fn rename(src: &QueueDir, dest: &QueueDir, id: &str, noreplace: bool) -> nix::Result<()> {
        let (s, d) = (&src.dir, &dest.dir);
        if noreplace {
            nix::fcntl::renameat2(s, id, d, id, nix::fcntl::RenameFlags::RENAME_NOREPLACE)
        } else {
            nix::fcntl::renameat(s, id, d, id)
        }
    }

    /// Remove the log of `id` in the log queue `log` (`defer`, `bounce`, `trace`) if there
    /// is one.
    fn remove_log(&mut self, log: &str, id: &str) {
        let dir = self.store.dir_for(log, id);
        if let Some(qd) = self.dir(&dir) {
            let _ = nix::unistd::unlinkat(&qd.dir, id, nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
    }

    /// [`Store::hold`], not durable.
    pub fn hold(&mut self, from: &Path, id: &str) -> io::Result<()> {
        match self.dirs_for(from, "hold", id) {
            Some((src, dest)) => match Self::rename(&src, &dest, id, false) {
                Ok(()) => Ok(()),
                Err(nix::errno::Errno::ENOENT) => self.store.hold(from, id, false),
                Err(e) => Err(e.into()),
            },
            None => self.store.hold(from, id, false),
        }
    }

    /// [`Store::release`]: into `deferred/H/`, one rename (as [`Mover::hold`]).
    pub fn release(&mut self, from: &Path, id: &str) -> io::Result<()> {
        match self.dirs_for(from, "deferred", id) {
            Some((src, dest)) => match Self::rename(&src, &dest, id, false) {
                Ok(()) => Ok(()),
                Err(nix::errno::Errno::ENOENT) => self.store.release(from, id),
                Err(e) => Err(e.into()),
            },
            None => self.store.release(from, id),
        }
    }

    /// [`Store::requeue`]: one `renameat2` (and, for `now`, a `utimensat`).
    pub fn requeue(&mut self, from: &Path, id: &str, now: bool) -> bool {
        let Some((src, dest)) = self.dirs_for(from, "maildrop", id) else {
            return self.store.requeue(from, id, now);
        };
        match Self::rename(&src, &dest, id, true) {
            Ok(()) => {}
            // No RENAME_NOREPLACE here: the path operation links and unlinks instead.
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
                return self.store.requeue(from, id, now);
            }
            Err(_) => return false,
        }
        if now {
            touch_now(&dest.dir, Path::new(id));
        }
        true
    }

    /// [`Store::delete`].
    pub fn delete(&mut self, path: &Path, id: &str) -> io::Result<()> {
        self.remove_log("defer", id);
        let Some(dir) = path.parent().and_then(|p| self.dir(p)) else {
            return std::fs::remove_file(path);
        };
        nix::unistd::unlinkat(&dir.dir, id, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(io::Error::from)
    }
}

/// Set the access and modification times of `path` (relative to `dir`) to now, as
/// `utime(path, now)` (postsuper's `requeue_one`); a failure is ignored.
fn touch_now<Fd: std::os::fd::AsFd>(dir: Fd, path: &Path) {
    use nix::sys::time::TimeSpec;
    let _ = nix::sys::stat::utimensat(
        dir,
        path,
        &TimeSpec::UTIME_NOW,
        &TimeSpec::UTIME_NOW,
        nix::sys::stat::UtimensatFlags::FollowSymlink,
    );
}

/// Set a queue file's modification time (the queue manager's "due at" for `deferred/`).
fn touch(path: &Path, t: SystemTime) {
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
        let _ = f.set_modified(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_write_is_complete_and_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        write_durable(d.path(), "4AB2C3D4E5", b"one", OWN, None).unwrap();
        let p = d.path().join("4AB2C3D4E5");
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let e = write_durable(d.path(), "4AB2C3D4E5", b"two", MAILDROP, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn moves_follow_the_hashed_layout() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path());
        for q in ["incoming", "active", "hold", "deferred", "maildrop"] {
            std::fs::create_dir(d.path().join(q)).unwrap();
        }
        let id = "4AB2C3D4E5";
        std::fs::write(s.path("incoming", id), b"x").unwrap();
        let active = s.activate(&s.path("incoming", id), id).unwrap();
        assert_eq!(active, d.path().join("active").join(id));
        s.hold(&active, id, true).unwrap();
        s.release(&s.path("hold", id), id).unwrap();
        assert!(d.path().join("deferred/4").join(id).is_file());
        assert_eq!(
            s.scan("deferred", true),
            vec![(id.to_string(), s.path("deferred", id))]
        );
        assert!(s.requeue(&s.path("deferred", id), id, false));
        assert!(s.path("maildrop", id).is_file());
        s.delete(&s.path("maildrop", id), id).unwrap();
        assert!(s.scan("maildrop", false).is_empty());
    }

    #[test]
    fn mover_moves_as_the_store_does() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path());
        for q in [
            "incoming", "hold", "deferred", "maildrop", "defer", "bounce",
        ] {
            std::fs::create_dir(d.path().join(q)).unwrap();
        }
        let mut m = Mover::new(&s);
        let id = "4AB2C3D4E5";
        std::fs::write(s.path("incoming", id), b"x").unwrap();
        m.hold(&s.path("incoming", id), id).unwrap();
        assert!(s.path("hold", id).is_file());
        // deferred/4/ is missing: made by the path operation the mover falls back to.
        let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        std::fs::File::options()
            .write(true)
            .open(s.path("hold", id))
            .unwrap()
            .set_modified(old)
            .unwrap();
        m.release(&s.path("hold", id), id).unwrap();
        // As Postfix's postsuper -H: the time stamp kept (due when it says).
        let released = std::fs::metadata(s.path("deferred", id)).unwrap();
        assert_eq!(released.modified().unwrap(), old);
        // A requeue is a rename: the mode, the time stamps and the logs stay, as Postfix's
        // postsuper -r ALL leaves them (pickup removes the logs).
        crate::queue::make_queue_dir(&d.path().join("defer/4")).unwrap();
        std::fs::write(s.path("defer", id), b"log").unwrap();
        std::fs::set_permissions(
            s.path("deferred", id),
            std::fs::Permissions::from_mode(0o710),
        )
        .unwrap();
        assert!(m.requeue(&s.path("deferred", id), id, false));
        let meta = std::fs::metadata(s.path("maildrop", id)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o710);
        assert_eq!(meta.modified().unwrap(), old);
        assert!(s.path("defer", id).exists());
        // Named by its ID (`now`): the time stamps set to now, as Postfix's requeue_one.
        std::fs::rename(s.path("maildrop", id), s.path("hold", id)).unwrap();
        assert!(m.requeue(&s.path("hold", id), id, true));
        let meta = std::fs::metadata(s.path("maildrop", id)).unwrap();
        assert!(meta.modified().unwrap() > old && meta.accessed().unwrap() > old);
        s.remove_logs(id);
        assert!(!s.path("defer", id).exists());
        // Never replacing a file of that name in maildrop/.
        std::fs::write(s.path("hold", id), b"y").unwrap();
        assert!(!m.requeue(&s.path("hold", id), id, false));
        assert_eq!(std::fs::read(s.path("maildrop", id)).unwrap(), b"x");
        m.delete(&s.path("maildrop", id), id).unwrap();
        m.delete(&s.path("hold", id), id).unwrap();
        assert!(m.delete(&s.path("hold", id), id).is_err());
        assert!(s.scan("maildrop", false).is_empty() && s.scan("hold", false).is_empty());
    }
}
