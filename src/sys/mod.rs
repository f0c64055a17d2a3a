//! The operating system's libraries and calls that neither `std` nor `nix` covers.
//!
//! [`dl`]: libxcrypt and Linux-PAM loaded at run time by soname (no `-dev` package at build),
//! and the PAM check made with them ([`dl::pam_check`]).
//! [`detach`]: a daemon's fork that still tells the starting command how the start went.
//! [`fsid`]: a thread's filesystem uid/gid switched to a mail user's.
//! [`lmdb`]: an LMDB file mapped as Postfix's `lmdb:` tables open it.
//! [`child`]: work done in a forked child under the recipient's credentials.
//! [`wire`]: the encoding of what Postern's processes send each other.
//! [`fdpass`]: datagrams carrying descriptors, and waiting on several descriptors.
//! [`net`]: the resolver calls std lacks (reverse lookup, canonical name).
//! [`mem`]: hints to the kernel and the allocator about memory no longer needed; a file
//! mapped read-only into memory.
//! [`regex`]: the C library's POSIX regular expressions, for `regexp:` tables.
//! [`shadow`]: the shadow password database (`getspnam_r`).
//! [`syslog`]: the C library's syslog, for daemons that log as the C programs they replace.
//! Below: this process's ID without a system call per log line, signal dispositions, the
//! environment, a standard output whose reader left, descriptors inherited from a parent,
//! the open-files limit, a file's writeback started without waiting (the queue's commit),
//! a whole file's `fcntl` lock ([`lock_whole_file`]: mbox sessions and deliveries, LMDB
//! tables, saslauthd's pid file).

pub mod child;
pub mod detach;
pub mod dl;
pub mod fdpass;
pub mod fsid;
pub mod lmdb;
pub mod mem;
pub mod net;
pub mod privs;
pub mod regex;
pub mod shadow;
pub mod syslog;
pub mod time;
pub mod wire;

/// This process's ID, asked of the kernel once and again only after a `fork()` (a
/// `pthread_atfork` child handler forgets it, here and in [`crate::log`], whose lines use
/// a cached one only once the handler is in place): every log line carries it, and
/// `getpid()` was a system call per line (issue 18's count: 8 per message).
pub fn pid() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static PID: AtomicU32 = AtomicU32::new(0);
    static HANDLER: std::sync::Once = std::sync::Once::new();
    extern "C" fn forget() {
        // Async-signal-safe: atomic stores in the child, before it runs anything else.
        PID.store(0, Ordering::Relaxed);
        crate::log::forget_pid();
    }
    let p = PID.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    HANDLER.call_once(|| {
        // SAFETY: registers a handler that only stores to atomics.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget)) };
        if rc == 0 {
            crate::log::cache_pid();
        }
    });
    let p = std::process::id();
    PID.store(p, Ordering::Relaxed);
    p
}

/// Lock all of `file` (start 0, length 0: to its end, however it grows) with an `fcntl`
/// record lock of the open file description (`F_OFD_SETLK`; `F_OFD_SETLKW` when `wait`):
/// a write lock when `write`, else a read lock. Other processes' classic POSIX
/// `fcntl`/`lockf` locks conflict with it as with one of their own; unlike those, it
/// belongs to this open file, not to the process, so two opens in one process exclude
/// each other and closing another descriptor of the same file does not drop it. It goes
/// away when the last descriptor of this open file is closed.
///
/// The error is the call's errno: `EAGAIN` (or `EACCES`) when another holds a
/// conflicting lock and `wait` is false, `EINTR` when a signal cut a wait short.
pub fn lock_whole_file(file: &impl std::os::fd::AsFd, write: bool, wait: bool) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    let lock = libc::flock {
        l_type: if write { libc::F_WRLCK } else { libc::F_RDLCK } as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    let arg = if wait {
        FcntlArg::F_OFD_SETLKW(&lock)
    } else {
        FcntlArg::F_OFD_SETLK(&lock)
    };
    fcntl(file.as_fd(), arg).map(|_| ())
}

/// Restore the default `SIGPIPE` disposition (a printing command dies quietly when its
/// reader goes away, as a C program does).
pub fn default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler code; called before any thread of ours runs
    // code that depends on the disposition.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// Ignore `sig` from now on (Cyrus saslauthd ignores SIGHUP).
pub fn ignore_signal(sig: nix::sys::signal::Signal) {
    use nix::sys::signal::{SigHandler, signal};
    // SAFETY: SIG_IGN installs no handler code.
    let _ = unsafe { signal(sig, SigHandler::SigIgn) };
}

/// Run `handler` on each of `sigs` (SA_RESTART). The handler runs in signal context: it
/// must do only what is async-signal-safe, such as storing into an atomic.
pub fn on_signals(sigs: &[nix::sys::signal::Signal], handler: extern "C" fn(libc::c_int)) {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let act = SigAction::new(
        SigHandler::Handler(handler),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for &sig in sigs {
        // SAFETY: installing a handler; what it may do is the caller's promise above.
        let _ = unsafe { sigaction(sig, &act) };
    }
}

/// Remove `name` from the environment. Only while no other thread reads the environment
/// (at the start of a command, before its runtime or pools start).
pub fn remove_env(name: &str) {
    // SAFETY: the caller's promise above: no other thread reads the environment now.
    unsafe { std::env::remove_var(name) };
}

/// Whether the reader of a pipe on standard output has gone (`POLLERR`), or a terminal
/// hung up, without writing anything.
pub fn stdout_gone() -> bool {
    let mut p = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one pollfd on the stack, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// Take ownership of descriptor `fd`, which this process's parent handed to it for its
/// own use (the master's listeners, status socket and pid lock; `postfix start`'s
/// readiness pipe), or which it just received over a socket (`SCM_RIGHTS`). Call it once
/// per descriptor received, with a number from the parent or the message.
pub fn take_inherited_fd(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller's promise above: the descriptor is open, was handed to this
    // process alone, and nothing else in it owns or closes it.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// Register `fd` with tokio's reactor for `interest` (tokio marks this `unsafe`: the
/// descriptor must stay open and the same for the `AsyncFd`'s life, which an owned one
/// does, as the `AsyncFd` owns it).
pub fn async_fd(
    fd: std::os::fd::OwnedFd,
    interest: tokio::io::Interest,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: an OwnedFd is valid and open, and keeps the same descriptor for as long as
    // the AsyncFd owns it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }
        .map_err(|e| e.into_parts().1)
}

/// Raise the soft open-files limit to the hard one; the soft limit in force after (1024
/// when it cannot be read).
pub fn raise_nofile_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        rl.rlim_cur = 1024;
    }
    if rl.rlim_max > rl.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: rl.rlim_max,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            rl.rlim_cur = rl.rlim_max;
        }
    }
    rl.rlim_cur
}

/// Start writing `file`'s dirty pages to disk without waiting for them
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which nix lacks): the queue's group commit
/// starts every file of a batch before it fsyncs them. Errors show up in the fsync that
/// must follow; this one's are ignored.
pub fn start_writeback(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: an open descriptor for the duration of the call; the call only starts
    // writeback of its pages.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Threads [`fsync_together`] syncs a batch with, the calling one included.
const FSYNC_THREADS: usize = 8;

/// Make every file of `files` durable, together: [`start_writeback`] on all of them, then
/// `fsync` on all of them from up to [`FSYNC_THREADS`] threads at once, so that the
/// filesystem folds them into few journal commits (ext4 and xfs make concurrent fsyncs wait
/// for one commit; one after the other, each commits its own). The same order as the
/// queue's group commit (`queue/writer.rs`, whose pool keeps its threads for the life of the
/// commit thread); here the threads are started for the call and joined before it returns,
/// so that a process that is otherwise single-threaded (a local delivery worker, which
/// forks and switches its effective ids: [`child::with_eugid`]) is single-threaded again
/// when it does either, and stays so for one file (no thread). Threads that cannot be
/// started leave their share to the calling thread. One result per file, in order.
pub fn fsync_together(files: &[&std::fs::File]) -> Vec<std::io::Result<()>> {
    if files.len() > 1 {
        for f in files {
            // Errors show up in the fsync below.
            start_writeback(f);
        }
    }
    let per_thread = files.len().div_ceil(FSYNC_THREADS).max(1);
    let sync = |chunk: &[&std::fs::File]| -> Vec<std::io::Result<()>> {
        chunk.iter().map(|f| f.sync_all()).collect()
    };
    std::thread::scope(|sc| {
        let mut chunks = files.chunks(per_thread);
        let mine = chunks.next();
        let started: Vec<_> = chunks
            .map(|chunk| {
                let h = std::thread::Builder::new()
                    .name("maildir-fsync".into())
                    .spawn_scoped(sc, move || sync(chunk))
                    // No thread to be had: done here, after this thread's own share.
                    .ok();
                (chunk, h)
            })
            .collect();
        let mut out = mine.map(sync).unwrap_or_default();
        for (chunk, h) in started {
            match h.map(|h| h.join()) {
                None => out.extend(sync(chunk)),
                Some(Ok(r)) => out.extend(r),
                Some(Err(_)) => out.extend(
                    chunk
                        .iter()
                        .map(|_| Err(std::io::Error::other("fsync thread panicked"))),
                ),
            }
        }
        out
    })
}

/// Whether `pid` is a zombie (ended, not reaped yet), from `/proc/PID/stat`: such a
/// process still answers `kill(pid, 0)`, yet holds nothing any more.
pub fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            st.rfind(')')
                .and_then(|i| st.get(i + 2..i + 3))
                .map(|s| s == "Z")
        })
        .unwrap_or(false)
}
