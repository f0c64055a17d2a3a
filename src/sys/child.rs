//! Work done in a forked child under other credentials, its answer read back through a
//! pipe: how the local delivery process ([`crate::qmgr::local_server`]) writes a mailbox or runs
//! a command as the recipient while it stays root itself.
//!
//! [`run_as`] forks; the child gives up root for good the way Postfix's `set_ugid()` does
//! (supplementary groups set to the one group, then the gid, then the uid; a `setuid(0)`
//! that still succeeds afterwards is fatal), runs the closure, and writes what it logged
//! ([`crate::log::start_capture`]) and its result ([`Wire`]) to the pipe; the parent logs the
//! lines with the child's PID and returns the result. A child that dies without an answer
//! is an `Err`. Not root, there is nothing to switch: the closure runs in place.
//!
//! Call it from a single-threaded process (the delivery process and its children are):
//! after `fork()` only the calling thread exists, so no lock another thread held may be
//! needed in the child. The child avoids the log writer thread (it captures) and stdio.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use super::wire::{Dec, Enc, Wire};

/// Whether this process may switch credentials.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Become `uid`/`gid` with no other group, for good (Postfix's `set_ugid()`); `Err` when any
/// step fails or root can be regained.
pub fn become_user(uid: u32, gid: u32) -> Result<(), String> {
    let g = nix::unistd::Gid::from_raw(gid);
    let u = nix::unistd::Uid::from_raw(uid);
    nix::unistd::setgroups(&[g]).map_err(|e| format!("setgroups(1, &{gid}): {}", e.desc()))?;
    nix::unistd::setgid(g).map_err(|e| format!("setgid({gid}): {}", e.desc()))?;
    nix::unistd::setuid(u).map_err(|e| format!("setuid({uid}): {}", e.desc()))?;
    if uid != 0 && nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_ok() {
        return Err(format!("setuid({uid}): root could be regained"));
    }
    Ok(())
}

/// Run `f` as `uid`/`gid` (groups: `gid` only) in a forked child and return its result.
/// Not root, or asked for root: `f` runs in this process.
pub fn run_as<T: Wire>(uid: u32, gid: u32, f: impl FnOnce() -> T) -> Result<T, String> {
    if !is_root() || (uid == 0 && gid == 0) {
        return Ok(f());
    }
    fork_call(move || become_user(uid, gid).map(|()| f()))
}

/// Run `f` in this process with the effective user and group `uid`/`gid` and that group
/// alone, then take root's ids and groups back: Postfix's `set_eugid()`, which its local(8)
/// uses around every mailbox and file write (commands get a child, [`run_as`]). The kernel
/// checks the file accesses of `f` against the recipient, and what `f` creates is the
/// recipient's; the saved user ID stays root, so this process can (and does) switch back.
/// No fork: a mailbox write costs no process. Not root, or asked for root: `f` runs as is.
///
/// Only for a single-threaded process (the local delivery workers): the switch is the
/// process's. `f` may start threads that end before it returns (a Maildir batch's fsyncs,
/// [`super::fsync_together`]): they run with the ids `f` runs with, and are gone when the
/// ids are switched back. A switch or a switch back that fails ends the process (`fatal`), as in
/// Postfix: it must never go on with the wrong ids. A panic in `f` switches back too.
pub fn with_eugid<T>(ident: &str, uid: u32, gid: u32, f: impl FnOnce() -> T) -> T {
    if !is_root() || (uid == 0 && gid == 0) {
        return f();
    }
    struct Back<'a>(&'a str, Vec<nix::unistd::Gid>);
    impl Drop for Back<'_> {
        fn drop(&mut self) {
            let root = nix::unistd::Uid::from_raw(0);
            let r = nix::unistd::seteuid(root)
                .map_err(|e| format!("seteuid(0): {}", e.desc()))
                .and_then(|()| {
                    nix::unistd::setegid(nix::unistd::Gid::from_raw(0))
                        .map_err(|e| format!("setegid(0): {}", e.desc()))
                })
                .and_then(|()| {
                    nix::unistd::setgroups(&self.1).map_err(|e| format!("setgroups: {}", e.desc()))
                });
            if let Err(e) = r {
                die(self.0, &e);
            }
        }
    }
    let saved = supplementary_groups();
    let back = Back(ident, saved);
    let g = nix::unistd::Gid::from_raw(gid);
    let r = nix::unistd::setegid(g)
        .map_err(|e| format!("setegid({gid}): {}", e.desc()))
        .and_then(|()| {
            nix::unistd::setgroups(&[g]).map_err(|e| format!("setgroups(1, &{gid}): {}", e.desc()))
        })
        .and_then(|()| {
            nix::unistd::seteuid(nix::unistd::Uid::from_raw(uid))
                .map_err(|e| format!("seteuid({uid}): {}", e.desc()))
        });
    if let Err(e) = r {
        drop(back);
        die(ident, &e);
    }
    let out = f();
    drop(back);
    out
}

/// This process's supplementary groups: `getgroups(2)` asked for the count, then for the
/// list. (`nix::unistd::getgroups` sizes its buffer from `sysconf(_SC_NGROUPS_MAX)`, which
/// glibc reads from `/proc/sys/kernel/ngroups_max`: an `open`, a `read` and a `close` per
/// call, and [`with_eugid`] is called once per local delivery; issue 18.)
fn supplementary_groups() -> Vec<nix::unistd::Gid> {
    // SAFETY: a size of 0 with a null list only returns the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut list = vec![0 as libc::gid_t; n as usize];
    // SAFETY: `list` holds `n` entries, the size passed.
    let got = unsafe { libc::getgroups(n, list.as_mut_ptr()) };
    if got < 0 {
        // The list grew between the two calls (another thread's setgroups): the slow way.
        return nix::unistd::getgroups().unwrap_or_default();
    }
    list.truncate(got as usize);
    list.into_iter().map(nix::unistd::Gid::from_raw).collect()
}

/// Set by a process that is single-threaded for good (the local delivery workers):
/// [`write_as`] may then switch this process's effective ids instead of forking.
static EUGID_OK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Declare this process single-threaded for good: [`write_as`] switches ids in place.
pub fn allow_eugid_switch() {
    EUGID_OK.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A mailbox or file write as `uid`/`gid`: in place with [`with_eugid`] in a process that
/// said [`allow_eugid_switch`], else in a forked child ([`run_as`]; any other process, e.g.
/// a multi-threaded one, where switching the process's ids would switch every thread's).
pub fn write_as<T: Wire>(
    ident: &str,
    uid: u32,
    gid: u32,
    f: impl FnOnce() -> T,
) -> Result<T, String> {
    if EUGID_OK.load(std::sync::atomic::Ordering::Relaxed) {
        Ok(with_eugid(ident, uid, gid, f))
    } else {
        run_as(uid, gid, f)
    }
}

/// `fatal: set_eugid: …` and exit: ids that cannot be switched (back) end the process.
fn die(ident: &str, why: &str) -> ! {
    crate::log::fatal(ident, &format!("set_eugid: {why}"));
    crate::log::flush();
    std::process::exit(1)
}

/// Run `f` in a forked child (same credentials unless `f` changes them) and return its
/// result; `Err` with the child's reason when `f` returns one, or when the child dies.
pub fn fork_call<T: Wire>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("pipe: {}", e.desc()))?;
    // SAFETY: the child only runs our code in this (single) thread and leaves with _exit.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {}", e.desc()))? {
        nix::unistd::ForkResult::Child => {
            drop(r);
            child_main(w, f)
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let mut data = Vec::new();
            let read = std::fs::File::from(r).read_to_end(&mut data);
            let status = loop {
                match nix::sys::wait::waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            read.map_err(|e| format!("read from child: {e}"))?;
            decode_answer(&data).ok_or_else(|| match status {
                Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => {
                    format!("child process killed by signal {}", sig as i32)
                }
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => {
                    format!("child process exited with status {code} without an answer")
                }
                _ => "child process gave no answer".to_string(),
            })?
        }
    }
}

/// The child's side: run `f`, send the captured log lines and the result, `_exit`.
fn child_main<T: Wire>(w: OwnedFd, f: impl FnOnce() -> Result<T, String>) -> ! {
    // A panic must not unwind into the parent's code (this is a copy of it) nor print
    // through a stderr lock another thread of the parent may have held.
    std::panic::set_hook(Box::new(|_| {}));
    crate::log::start_capture();
    let res = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err("internal error (panic) in the child process".into()),
    };
    let mut e = Enc::new();
    crate::log::take_captured().put(&mut e);
    match &res {
        Ok(v) => {
            e.str("ok");
            v.put(&mut e);
        }
        Err(why) => {
            e.str("err").str(why);
        }
    }
    let mut f = std::fs::File::from(w);
    let ok = f.write_all(&e.0).is_ok();
    drop(f);
    // SAFETY: _exit ends this forked copy without running the parent's exit handlers.
    unsafe { libc::_exit(if ok { 0 } else { 1 }) }
}

/// The parent's side: log the child's lines (they carry its PID) and return its result;
/// `None` when the answer is missing or malformed.
fn decode_answer<T: Wire>(data: &[u8]) -> Option<Result<T, String>> {
    let mut d = Dec(data);
    let lines = Vec::<crate::log::Captured>::get(&mut d)?;
    let res = match d.string()?.as_str() {
        "ok" => Ok(T::get(&mut d)?),
        "err" => Err(d.string()?),
        _ => return None,
    };
    for l in &lines {
        crate::log::emit_as(l);
    }
    Some(res)
}

/// Fork a long-lived worker: in the child, standard input and every descriptor from 3 up
/// but `keep` are closed, `f` runs and its value is the child's exit status (`_exit`, none
/// of the parent's exit handlers). Call it from a single-threaded process, as
/// [`fork_call`]. Returns the child's PID.
pub fn fork_worker(keep: i32, f: impl FnOnce() -> i32) -> Result<u32, String> {
    // SAFETY: the caller is single-threaded; the child runs our code and leaves with _exit.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {}", e.desc()))? {
        nix::unistd::ForkResult::Child => {
            // SAFETY: the parent's pipe from the master: the child does not read it.
            unsafe { libc::close(libc::STDIN_FILENO) };
            close_from(3, &[keep]);
            let code = f();
            // SAFETY: _exit ends this forked copy without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => Ok(child.as_raw() as u32),
    }
}

/// Close every descriptor from `from` up, except those in `keep` (a forked child that must
/// not hold its parent's sockets).
pub fn close_from(from: i32, keep: &[i32]) {
    let Ok(rd) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    for fd in fds {
        if fd >= from && !keep.contains(&fd) {
            // SAFETY: closing a descriptor number this process no longer uses.
            unsafe { libc::close(fd) };
        }
    }
}

/// Let `cmd`'s child inherit the descriptors `keep` across its exec (close-on-exec
/// cleared in the child only).
pub fn keep_on_exec(cmd: &mut std::process::Command, keep: Vec<std::os::fd::RawFd>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only fcntl (async-signal-safe) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &keep {
                if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Make `cmd`'s child the leader of a new session (`setsid`, detached from the
/// terminal), with descriptor `keep` inherited across its exec (close-on-exec cleared).
pub fn new_session_keeping(cmd: &mut std::process::Command, keep: std::os::fd::RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls (setsid, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::fcntl(keep, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_answers_and_its_failures_are_errors() {
        let r: Result<String, String> = fork_call(|| Ok(format!("pid {}", std::process::id())));
        let r = r.unwrap();
        assert_ne!(r, format!("pid {}", std::process::id()));
        let r: Result<String, String> = fork_call(|| Err("no".into()));
        assert_eq!(r, Err("no".into()));
        let r: Result<String, String> = fork_call(|| {
            // SAFETY: ends the child at once, without an answer.
            unsafe { libc::_exit(3) }
        });
        assert!(r.unwrap_err().contains("status 3"));
    }

    #[test]
    fn supplementary_groups_are_those_nix_reads() {
        let ours: Vec<u32> = supplementary_groups().iter().map(|g| g.as_raw()).collect();
        let nix: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        assert_eq!(ours, nix);
    }

    #[test]
    fn with_eugid_writes_as_the_user_and_takes_root_back() {
        if !is_root() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("eugid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A directory only root may write: the write as nobody must fail there.
        let closed = dir.join("closed");
        std::fs::create_dir_all(&closed).unwrap();
        let open = dir.join("open");
        std::fs::create_dir_all(&open).unwrap();
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let (c, o) = (closed.clone(), open.clone());
        // In a forked child: the test harness has other threads, whose ids would switch too.
        let r: Result<String, String> = fork_call(move || {
            let inside = with_eugid("test", 65534, 65534, || {
                let groups = nix::unistd::getgroups().unwrap_or_default();
                (
                    nix::unistd::geteuid().as_raw(),
                    nix::unistd::getegid().as_raw(),
                    groups.iter().map(|g| g.as_raw()).collect::<Vec<_>>(),
                    std::fs::write(c.join("f"), b"x").is_err(),
                    std::fs::write(o.join("f"), b"x").is_ok(),
                )
            });
            Ok(format!(
                "{inside:?} back={}",
                nix::unistd::geteuid().as_raw()
            ))
        });
        assert_eq!(r.unwrap(), "(65534, 65534, [65534], true, true) back=0");
        assert_eq!(std::fs::metadata(open.join("f")).unwrap().uid(), 65534);
        assert!(!closed.join("f").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
