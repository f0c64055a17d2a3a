//! Detaching a daemon so that the command that started it still learns how the start went.
//!
//! [`detach`] forks; the child starts a new session with stdin, stdout and stderr on
//! `/dev/null` (a starting init script may read the command's output until end of file),
//! and reports over a close-on-exec pipe through [`Readiness`]: `ok` once it serves (pid
//! file written, listeners handed to their processes), or an exit status with the text
//! the parent prints on stderr. The parent waits for that report and exits with it, as
//! Cyrus saslauthd's start-up pipe and `postfix start` do; a child that dies without a
//! report gives the caller's status and message. Nothing may log through a thread
//! (`crate::log`'s writer) before the fork: the child has only the forking thread.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

/// The child's end of the start-up pipe (nothing in the foreground).
pub struct Readiness(Option<OwnedFd>);

impl Readiness {
    /// No parent waits (the daemon runs in the foreground).
    pub fn none() -> Readiness {
        Readiness(None)
    }

    /// Started: the parent exits 0.
    pub fn ok(&mut self) {
        self.send("0\n");
    }

    /// Failed: the parent prints `text` on stderr and exits `code`.
    pub fn fail(&mut self, code: i32, text: &str) {
        self.send(&format!("{code}\n{text}"));
    }

    fn send(&mut self, msg: &str) {
        if let Some(fd) = self.0.take() {
            let _ = nix::unistd::write(&fd, msg.as_bytes());
        }
    }
}

/// What [`detach`] returns in each process.
pub enum Detached {
    /// In the daemon: report through this.
    Child(Readiness),
    /// In the starting command, once the daemon reported: the status to exit with.
    Parent(i32),
}

/// Fork and detach; see the module header. `silent` is the status and message for a
/// daemon that exits before reporting.
pub fn detach(silent: (i32, &str)) -> nix::Result<Detached> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the callers fork before starting any thread (see the module header), so
    // the child is a whole copy of a single-threaded process.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(w);
            let mut report = String::new();
            let _ = std::fs::File::from(r).read_to_string(&mut report);
            Ok(Detached::Parent(parent_outcome(&report, silent)))
        }
        nix::unistd::ForkResult::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                for fd in 0..=2 {
                    // SAFETY: dup2 onto the standard descriptors, which this process owns.
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                }
            }
            Ok(Detached::Child(Readiness(Some(w))))
        }
    }
}

/// The parent's side: print what the child reported and return its status.
fn parent_outcome(report: &str, silent: (i32, &str)) -> i32 {
    let Some((code, text)) = report.split_once('\n') else {
        eprintln!("{}", silent.1);
        return silent.0;
    };
    let code = code.trim().parse().unwrap_or(silent.0);
    if !text.is_empty() {
        eprintln!("{}", text.trim_end_matches('\n'));
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports() {
        assert_eq!(parent_outcome("0\n", (89, "gone")), 0);
        assert_eq!(parent_outcome("2\nAnother instance", (89, "gone")), 2);
        assert_eq!(parent_outcome("", (89, "gone")), 89);
    }
}
