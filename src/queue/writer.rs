//! Group commit: one thread writes every queue file that arrived while the previous batch was
//! being synced, syncs them, renames them into place and syncs the directory once.
//!
//! Order for each batch (this order is the durability argument, reviewed rather than tested,
//! since a test cannot pull the power):
//!
//! 1. each file is written: the one created when its queue ID was handed out
//!    ([`super::Queue::new_queue_id`]: created under a temporary name, then renamed to
//!    `incoming/QUEUEID` at once, mode 0600, which marks it incomplete for Postern's and
//!    Postfix's queue managers), or, for an ID made without one, a new file
//!    `incoming/.tmp.PID.SEQ` (O_EXCL — a temporary name is never taken for a queue file, by
//!    Postern or by Postfix, whose `mail_queue_id_ok()` refuses the dot); then made `u+x`
//!    (complete), as Postfix's cleanup does before its fsync;
//! 2. every file of the batch is made durable: `sync_file_range(WRITE)` on all of them starts
//!    the writeback together, then `fsync` is called on all of them from a few threads at
//!    once (concurrent fsyncs share journal commits on ext4/xfs); when the batch has files
//!    written in place, the directory (which holds their names since their IDs were handed
//!    out) is fsynced at the same time on a thread of its own; a batch moves on only when
//!    every fsync has returned;
//! 3. each temporary file is renamed to `incoming/QUEUEID` with `RENAME_NOREPLACE` (never
//!    clobbering a queue file);
//! 4. if anything was renamed, the directory is fsynced once, making all renames durable;
//! 5. only now is each waiting `commit` told `Ok`.
//!
//! A crash before 5 leaves temporary files (removed by [`remove_stale`]) or incomplete files
//! under queue IDs (left alone by the queue manager; each is `flock`ed by its writer, and
//! [`remove_stale`] removes those whose lock is gone, however much was written), and no reply was
//! sent; after 5, complete queue files, name and contents durable. A
//! file can be `u+x` before its data is on disk (as with Postfix) only while no reply has
//! been sent: a crash then may leave a queue file that does not parse, never one whose
//! `250` was given and whose contents are lost. Single-message latency is one fsync round
//! (file and directory side by side) instead of two in series.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use tokio::sync::oneshot;

/// How a batch is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)` on every file, then `fsync` on all of them
    /// from several threads at once, so the filesystem folds them into few journal commits
    /// (default).
    #[default]
    ParallelFsync,
    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)` on every file, then `fsync` on each in turn.
    StartThenFsync,
    /// `fsync` on each file in turn.
    Fsync,
    /// One `syncfs()` for the batch: flushes the whole filesystem, other programs' data too.
    Syncfs,
}

pub(crate) struct Job {
    pub id: String,
    pub data: Vec<u8>,
    /// The empty temporary file made when the ID was handed out (its inode is in the ID),
    /// to be written instead of a new one.
    pub reserved: Option<(PathBuf, File)>,
    pub reply: oneshot::Sender<io::Result<()>>,
    /// Wake the queue manager once the batch holding it is committed ([`super::trigger`]).
    pub wake: bool,
}

/// The most files written per batch.
const MAX_BATCH: usize = 256;
const TMP_PREFIX: &str = ".tmp.";

pub(crate) fn spawn(dir: PathBuf, mode: SyncMode) -> io::Result<mpsc::Sender<Job>> {
    let dir_file = Arc::new(File::open(&dir)?);
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("queue-commit".into())
        .spawn(move || {
            let mut seq: u64 = 0;
            let mut pool = FsyncPool::default();
            let mut trigger = dir.parent().map(super::trigger::Trigger::new);
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(j) => batch.push(j),
                        Err(_) => break,
                    }
                }
                let wake = batch.iter().any(|j| j.wake);
                commit_batch(&dir, &dir_file, mode, &mut pool, batch, &mut seq);
                if wake && let Some(t) = &mut trigger {
                    t.pull(super::trigger::SCAN_INCOMING);
                }
            }
        })?;
    Ok(tx)
}

/// rename(2) that fails with EEXIST instead of replacing `to` (used by the queue writer and
/// by [`super::store`]: the durable write, the queue manager's activation).
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL | Errno::ENOSYS) => {
            // Filesystem without RENAME_NOREPLACE: link(2) refuses to replace too.
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e.into()),
    }
}

struct Staged {
    job: Job,
    tmp: PathBuf,
    /// Shared with the fsync threads while they sync it.
    file: Option<Arc<File>>,
    result: io::Result<()>,
    /// Written under its queue ID already (a reserved file): nothing to rename.
    in_place: bool,
}

fn write_tmp(dir: &Path, seq: u64, data: &[u8]) -> (PathBuf, io::Result<File>) {
    let tmp = dir.join(format!("{TMP_PREFIX}{}.{seq}", std::process::id()));
    let res = (|| {
        let mut f = create_new(&tmp, 0o600)?;
        f.write_all(data)?;
        mark_complete(&f, 0o700)?;
        Ok(f)
    })();
    (tmp, res)
}

/// Create `path` for a queue file about to be written: a new file (never one already
/// there, never through a symlink) with mode `mode`, not inherited by programs this
/// process runs. The durable write of [`super::store`] creates its files the same way.
pub(crate) fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// Mark a written queue file complete with `mode` (`u+x` added: 0700 for the mail
/// system's own files), as Postfix's `mail_stream_finish_file()` does before its fsync:
/// 0600 while being written, then the "ready" bit its queue manager looks for.
pub(crate) fn mark_complete(f: &File, mode: u32) -> io::Result<()> {
    f.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// Write a message into the temporary file reserved with its ID, and mark it complete
/// (u+x) as [`write_tmp`] does.
fn fill_reserved(f: File, data: &[u8]) -> io::Result<File> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(data, 0)?;
    mark_complete(&f, 0o700)?;
    Ok(f)
}

/// Create an empty temporary file in `dir` (`.tmp.PID.rSEQ`, mode 0600) for a queue ID to
/// be made from its inode number ([`super::Queue::new_queue_id`]), exclusively `flock`ed.
///
/// The lock, held until the descriptor is closed, is how [`remove_stale`] tells the file of
/// a transaction that died with its process from a live one once it carries its queue ID's
/// name: the kernel drops it when the process dies, however it dies. It is taken before the file is renamed, so that a file under an ID's name is locked for as
/// long as its writer lives; a PID written into the file would be overwritten by the
/// message before the file is marked complete, and may name a new process after a restart.
pub(crate) fn reserve_tmp(dir: &Path, seq: u64) -> io::Result<(PathBuf, File)> {
    let pid = crate::sys::pid();
    let tmp = dir.join(format!("{TMP_PREFIX}{pid}.r{seq}"));
    let f = create_new(&tmp, 0o600)?;
    if let Err(e) = f.try_lock() {
        let _ = std::fs::remove_file(&tmp);
        return Err(match e {
            std::fs::TryLockError::Error(e) => e,
            std::fs::TryLockError::WouldBlock => io::Error::from_raw_os_error(libc::EWOULDBLOCK),
        });
    }
    Ok((tmp, f))
}

/// Whether the writer's lock on `path` is gone (an exclusive `flock` can be had without
/// waiting); `false` when the file cannot be opened or the lock is held.
fn writer_gone(path: &Path) -> bool {
    let Ok(f) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    f.try_lock().is_ok()
}

/// Whether process `pid` still runs (EPERM: alive, another user's; a zombie is dead).
fn process_alive(pid: u32) -> bool {
    // Signal 0 only checks for existence.
    let r = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as libc::pid_t), None);
    let exists = r.is_ok() || r == Err(nix::errno::Errno::EPERM);
    exists && !crate::sys::is_zombie(pid)
}

/// Threads that fsync one batch concurrently.
const FSYNC_THREADS: usize = 16;

fn fsync_all(staged: &mut [Staged]) {
    for s in staged {
        if let Some(f) = &s.file
            && let Err(e) = f.sync_all()
        {
            s.result = Err(e);
        }
    }
}

/// Threads that stay for the life of the commit thread and fsync the files of a batch
/// side by side (a thread started per file and batch cost a clone, a stack mapping and
/// an exit per message: measured about one `clone3` per accepted message). Started as
/// batches need them, up to [`FSYNC_THREADS`] - 1; the commit thread takes a share itself.
#[derive(Default)]
struct FsyncPool {
    workers: Vec<mpsc::Sender<FsyncJob>>,
    /// The thread that syncs the directory beside the files' fsyncs.
    dir: Option<mpsc::Sender<FsyncJob>>,
}

/// A thread that fsyncs the descriptors it is sent, for the life of the commit thread.
fn spawn_fsync_worker(name: &str) -> Option<mpsc::Sender<FsyncJob>> {
    let (tx, rx) = mpsc::channel::<FsyncJob>();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while let Ok((files, reply)) = rx.recv() {
                // Each file is let go once synced, before the answer.
                let errs = files
                    .into_iter()
                    .map(|f| f.and_then(|f| f.sync_all().err()))
                    .collect();
                let _ = reply.send(errs);
            }
        })
        .ok()?;
    Some(tx)
}

/// Files to fsync (`None`: none), and where to send one error (or none) per entry.
type FsyncJob = (Vec<Option<Arc<File>>>, mpsc::Sender<Vec<Option<io::Error>>>);

impl FsyncPool {
    /// fsync every open file of `staged`, spread over the pool and this thread; a file's
    /// error becomes its result. Returns once every fsync has returned.
    fn fsync(&mut self, staged: &mut [Staged]) {
        let per_thread = staged.len().div_ceil(FSYNC_THREADS).max(1);
        let mut chunks = staged.chunks_mut(per_thread);
        let mine = chunks.next();
        let mut waits = Vec::new();
        for (i, chunk) in chunks.enumerate() {
            let fds: Vec<Option<Arc<File>>> = chunk.iter().map(|s| s.file.clone()).collect();
            let (tx, rx) = mpsc::channel();
            let sent = self.worker(i).is_some_and(|w| w.send((fds, tx)).is_ok());
            if sent {
                waits.push((chunk, rx));
            } else {
                // No thread to be had: do it here.
                fsync_all(chunk);
            }
        }
        if let Some(chunk) = mine {
            fsync_all(chunk);
        }
        for (chunk, rx) in waits {
            match rx.recv() {
                Ok(errs) => {
                    for (s, e) in chunk.iter_mut().zip(errs) {
                        if let Some(e) = e {
                            s.result = Err(e);
                        }
                    }
                }
                Err(_) => {
                    for s in chunk.iter_mut() {
                        if s.result.is_ok() {
                            s.result = Err(io::Error::other("fsync thread gone"));
                        }
                    }
                }
            }
        }
    }

    /// fsync the queue directory on the pool's directory thread while the caller syncs the
    /// files; `None` when no thread is to be had (the caller syncs it itself afterwards).
    fn start_dir_sync(
        &mut self,
        dir_file: &Arc<File>,
    ) -> Option<mpsc::Receiver<Vec<Option<io::Error>>>> {
        if self.dir.is_none() {
            self.dir = Some(spawn_fsync_worker("queue-dirsync")?);
        }
        let (tx, rx) = mpsc::channel();
        self.dir
            .as_ref()?
            .send((vec![Some(Arc::clone(dir_file))], tx))
            .ok()?;
        Some(rx)
    }

    /// The `i`th worker, started if need be.
    fn worker(&mut self, i: usize) -> Option<&mpsc::Sender<FsyncJob>> {
        while self.workers.len() <= i {
            let tx = spawn_fsync_worker("queue-fsync")?;
            self.workers.push(tx);
        }
        self.workers.get(i)
    }
}

fn commit_batch(
    dir: &Path,
    dir_file: &Arc<File>,
    mode: SyncMode,
    pool: &mut FsyncPool,
    batch: Vec<Job>,
    seq: &mut u64,
) {
    let mut staged: Vec<Staged> = batch
        .into_iter()
        .map(|mut job| {
            *seq += 1;
            let (tmp, res, in_place) = match job.reserved.take() {
                Some((path, f)) => {
                    let res = fill_reserved(f, &job.data);
                    (path, res, true)
                }
                None => {
                    let (tmp, res) = write_tmp(dir, *seq, &job.data);
                    (tmp, res, false)
                }
            };
            match res {
                Ok(f) => Staged {
                    job,
                    tmp,
                    file: Some(Arc::new(f)),
                    result: Ok(()),
                    in_place,
                },
                Err(e) => Staged {
                    job,
                    tmp,
                    file: None,
                    result: Err(e),
                    in_place,
                },
            }
        })
        .collect();

    // 2. Make the data durable. Files written in place already have their names (made when
    // their IDs were handed out): the directory is synced at the same time as the files,
    // on a thread of its own, instead of after them.
    let dir_sync = staged
        .iter()
        .any(|s| s.in_place && s.result.is_ok())
        .then(|| pool.start_dir_sync(dir_file));
    match mode {
        SyncMode::ParallelFsync | SyncMode::StartThenFsync | SyncMode::Fsync => {
            if mode != SyncMode::Fsync {
                for s in &staged {
                    if let Some(f) = &s.file {
                        // Errors show up in the fsync below.
                        crate::sys::start_writeback(f);
                    }
                }
            }
            if mode == SyncMode::ParallelFsync && staged.len() > 1 {
                pool.fsync(&mut staged);
            } else {
                fsync_all(&mut staged);
            }
        }
        SyncMode::Syncfs => {
            if let Err(e) = nix::unistd::syncfs(dir_file.as_ref()) {
                let e = io::Error::from(e);
                for s in &mut staged {
                    if s.result.is_ok() {
                        s.result = Err(io::Error::new(e.kind(), e.to_string()));
                    }
                }
            }
        }
    }

    if let Some(wait) = dir_sync {
        let err = match wait {
            Some(rx) => match rx.recv() {
                Ok(mut errs) => errs.pop().flatten(),
                Err(_) => Some(io::Error::other("fsync thread gone")),
            },
            None => dir_file.sync_all().err(),
        };
        if let Some(e) = err {
            for s in staged.iter_mut().filter(|s| s.in_place) {
                if s.result.is_ok() {
                    s.result = Err(io::Error::new(e.kind(), e.to_string()));
                }
            }
        }
    }

    // 3. Rename into place.
    let mut renamed = 0;
    for s in &mut staged {
        s.file = None;
        if s.result.is_ok() && !s.in_place {
            let target = dir.join(&s.job.id);
            s.result = rename_noreplace(&s.tmp, &target);
            if s.result.is_ok() {
                renamed += 1;
            }
        }
        if s.result.is_err() {
            let _ = std::fs::remove_file(&s.tmp);
        }
    }

    // 4. One directory sync for all the renames.
    if renamed > 0
        && let Err(e) = dir_file.sync_all()
    {
        for s in &mut staged {
            if s.result.is_ok() {
                // The rename may not survive a crash: take the file back and report failure,
                // so that the client retries rather than trusting a 250 we cannot keep.
                let _ = std::fs::remove_file(dir.join(&s.job.id));
                s.result = Err(io::Error::new(e.kind(), e.to_string()));
            }
        }
    }

    // 5. Tell the committers.
    for s in staged {
        let _ = s.job.reply.send(s.result);
    }
}

/// An incomplete (not `u+x`) file under a queue ID's name whose transaction is gone: no
/// process holds the lock its writer took in [`reserve_tmp`].
fn abandoned_reservation(e: &std::fs::DirEntry) -> bool {
    use std::os::unix::fs::MetadataExt;
    let name = e.file_name();
    let named_like_id = name
        .to_str()
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !named_like_id {
        return false;
    }
    let Ok(m) = e.metadata() else { return false };
    if !m.is_file() || m.mode() & 0o100 != 0 {
        return false;
    }
    writer_gone(&e.path())
}

/// Remove temporary files left by a crashed process (their PID is not running). Returns how
/// many were removed.
pub(crate) fn remove_stale(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(TMP_PREFIX) else {
            if abandoned_reservation(&e) && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
            continue;
        };
        let pid: Option<u32> = rest.split('.').next().and_then(|p| p.parse().ok());
        // (EPERM: alive, but another user's: a writer of another service.) A zombie
        // (killed, not reaped yet: right after a crash of the whole tree) is dead too.
        let alive = pid.is_some_and(process_alive);
        if !alive && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// An incomplete file under a queue ID's name is kept while its writer holds it and
    /// removed once the writer is gone, even when the message was written over its first
    /// bytes before the writer died (CI's crash-replay found one left in incoming/ when the
    /// writer's PID was kept in those bytes).
    #[test]
    fn incomplete_files_go_with_their_writer_whatever_they_hold() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, f) = reserve_tmp(dir.path(), 1).unwrap();
        let named = dir.path().join("4Dq2Vz1XkQz7Y");
        rename_noreplace(&tmp, &named).unwrap();
        f.write_all_at(b"C                                 \nT1733600000 0\n", 0)
            .unwrap();
        let done = dir.path().join("4Dq2Vz1XkQz7Z");
        std::fs::write(&done, b"complete").unwrap();
        mark_complete(&File::open(&done).unwrap(), 0o700).unwrap();
        assert_eq!(remove_stale(dir.path()), 0);
        assert!(named.exists());
        drop(f);
        assert_eq!(remove_stale(dir.path()), 1);
        assert!(!named.exists());
        assert!(done.exists(), "a complete queue file is never removed");
    }
}
