//! A thread's filesystem identity (Linux `setfsuid`/`setfsgid`): file access checked as
//! a mail user while the process stays root, per thread, so that one thread's switch
//! leaves the others alone. Used by local delivery and by the mailbox store.

/// The identity switched for the life of the guard; the previous one comes back when the
/// guard is dropped, also when the code it guards panics (unwinding drops it), so that a
/// thread of a pool never goes on with a mail user's ids (guards nest). A no-op when the
/// process is not root.
#[must_use]
pub struct FsIdentity {
    prev_uid: Option<u32>,
    prev_gid: Option<u32>,
}

/// Whether this process runs as root (asked once).
pub fn running_as_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| nix::unistd::geteuid().is_root())
}

impl FsIdentity {
    pub fn switch(uid: u32, gid: u32) -> FsIdentity {
        FsIdentity::switch_some(Some(uid), Some(gid))
    }

    /// Switch the ids that are given, keep the others.
    pub fn switch_some(uid: Option<u32>, gid: Option<u32>) -> FsIdentity {
        if !running_as_root() {
            return FsIdentity {
                prev_uid: None,
                prev_gid: None,
            };
        }
        // SAFETY: plain syscalls on this thread's credentials; each returns the id it
        // replaced. The group first, while the uid may still be root's.
        let prev_gid = gid.map(|g| unsafe { libc::setfsgid(g) } as u32);
        // SAFETY: as above.
        let prev_uid = uid.map(|u| unsafe { libc::setfsuid(u) } as u32);
        FsIdentity { prev_uid, prev_gid }
    }

    /// Root's ids (for opening the log file or syslog socket on a thread that has a mail
    /// user's), the thread's own back on drop.
    pub fn root() -> FsIdentity {
        FsIdentity::switch(0, 0)
    }

    /// [`switch`](Self::switch) when `ids` is given, else nothing.
    pub fn maybe(ids: Option<(u32, u32)>) -> FsIdentity {
        match ids {
            Some((u, g)) => FsIdentity::switch(u, g),
            None => FsIdentity::switch_some(None, None),
        }
    }
}

impl Drop for FsIdentity {
    fn drop(&mut self) {
        // SAFETY: as above, back to the ids this guard replaced.
        if let Some(u) = self.prev_uid {
            unsafe { libc::setfsuid(u) };
        }
        // SAFETY: as above.
        if let Some(g) = self.prev_gid {
            unsafe { libc::setfsgid(g) };
        }
    }
}

/// This thread's filesystem uid and gid (`setfsuid(-1)` changes nothing and returns the
/// current one).
pub fn current() -> (u32, u32) {
    // SAFETY: an invalid id changes nothing; the calls only report this thread's ids.
    unsafe {
        (
            libc::setfsuid(u32::MAX) as u32,
            libc::setfsgid(u32::MAX) as u32,
        )
    }
}

/// Run `f` with this thread's filesystem gid set to `gid`, then set back, whether or not
/// the process is root (Dovecot's `restrict_access_use_priv_gid()` … `drop_priv_gid()`).
/// Without the right to switch, `f` runs with the gid unchanged.
pub fn with_fsgid<T>(gid: u32, f: impl FnOnce() -> T) -> T {
    struct Back(u32);
    impl Drop for Back {
        fn drop(&mut self) {
            // SAFETY: setfsgid only changes this thread's filesystem gid.
            unsafe { libc::setfsgid(self.0) };
        }
    }
    // SAFETY: as above; `Back` restores it, also on a panic in `f`.
    let _back = Back(unsafe { libc::setfsgid(gid) } as u32);
    f()
}

#[cfg(test)]
mod guard_tests {
    use super::*;

    #[test]
    fn ids_come_back_after_a_panic() {
        if !running_as_root() {
            eprintln!("skipped: needs root");
            return;
        }
        std::thread::spawn(|| {
            assert_eq!(current(), (0, 0));
            let r = std::panic::catch_unwind(|| {
                let _g = FsIdentity::switch_some(Some(65534), None);
                assert_eq!(current(), (65534, 0));
                {
                    let _r = FsIdentity::root();
                    assert_eq!(current(), (0, 0));
                }
                assert_eq!(current(), (65534, 0));
                panic!("in the guarded code");
            });
            assert!(r.is_err());
            assert_eq!(current(), (0, 0));
        })
        .join()
        .expect("thread");
    }
}
