//! The operating system's libraries and calls that neither `std` nor `nix` covers.
//!
//! [`dl`]: libxcrypt and Linux-PAM loaded at run time by soname (no `-dev` package at build).
//! [`detach`]: a daemon's fork that still tells the starting command how the start went.
//! [`fsid`]: a thread's filesystem uid/gid switched to a mail user's.
//! [`child`]: work done in a forked child under the recipient's credentials.
//! [`wire`]: the encoding of what Postern's processes send each other.
//! [`pid`]: this process's ID without a system call per log line.

pub mod child;
pub mod detach;
pub mod dl;
pub mod fsid;
pub mod privs;
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

/// Restore the default `SIGPIPE` disposition (a printing command dies quietly when its
/// reader goes away, as a C program does).
pub fn default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler code; called before any thread of ours runs
    // code that depends on the disposition.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
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
