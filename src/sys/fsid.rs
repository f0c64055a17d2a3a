//! A thread's filesystem identity (Linux `setfsuid`/`setfsgid`): file access checked as
//! a mail user while the process stays root, per thread, so that one thread's switch
//! leaves the others alone. Used by local delivery and by the mailbox store.

/// The identity switched for the life of the guard; the previous one comes back on drop
/// (so guards nest). A no-op when the process is not root.
#[must_use]
pub struct FsIdentity {
    prev: Option<(u32, u32)>,
}

/// Whether this process runs as root (asked once).
pub fn running_as_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| nix::unistd::geteuid().is_root())
}

impl FsIdentity {
    pub fn switch(uid: u32, gid: u32) -> FsIdentity {
        if !running_as_root() {
            return FsIdentity { prev: None };
        }
        // SAFETY: plain syscalls on this thread's credentials; each returns the id it
        // replaced.
        let (pg, pu) = unsafe { (libc::setfsgid(gid), libc::setfsuid(uid)) };
        FsIdentity {
            prev: Some((pu as u32, pg as u32)),
        }
    }

    /// [`switch`](Self::switch) when `ids` is given, else nothing.
    pub fn maybe(ids: Option<(u32, u32)>) -> FsIdentity {
        match ids {
            Some((u, g)) => FsIdentity::switch(u, g),
            None => FsIdentity { prev: None },
        }
    }
}

impl Drop for FsIdentity {
    fn drop(&mut self) {
        if let Some((u, g)) = self.prev {
            // SAFETY: as above, back to the ids this guard replaced.
            unsafe {
                libc::setfsuid(u);
                libc::setfsgid(g);
            }
        }
    }
}
