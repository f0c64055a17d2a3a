//! The operating system's libraries and calls that neither `std` nor `nix` covers.
//!
//! [`dl`]: libxcrypt and Linux-PAM loaded at run time by soname (no `-dev` package at build).
//! [`detach`]: a daemon's fork that still tells the starting command how the start went.
//! [`fsid`]: a thread's filesystem uid/gid switched to a mail user's.
//! [`child`]: work done in a forked child under the recipient's credentials.
//! [`wire`]: the encoding of what Postern's processes send each other.

pub mod child;
pub mod detach;
pub mod dl;
pub mod fsid;
pub mod privs;
pub mod time;
pub mod wire;

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
