//! Waiting for a condition with a time limit: the one poll loop of the tests. Services log,
//! write files and open ports asynchronously, so a test polls what it waits for (never a
//! fixed sleep where a condition can be polled) and gives up after a limit generous enough
//! for a loaded CI machine; tests never assert timings.

use std::fmt::Display;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How often a condition is polled.
const STEP: Duration = Duration::from_millis(25);

/// `f()` until it gives `Some`, polled every 25 ms for at most `timeout`; `None` when the
/// time ran out (one last try after the limit). For waits whose caller decides what a
/// timeout means (assert with its own message, or go on with what is there).
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(STEP);
    }
}

/// Wait until `cond()` holds; panics with `never within {timeout}: {what}` otherwise.
pub fn wait_until(timeout: Duration, what: impl Display, mut cond: impl FnMut() -> bool) {
    if poll(timeout, || cond().then_some(())).is_none() {
        panic!("never within {timeout:?}: {what}");
    }
}

/// The first `Some` of `f()`; panics with `never within {timeout}: {what}` otherwise.
pub fn wait_for<T>(timeout: Duration, what: impl Display, f: impl FnMut() -> Option<T>) -> T {
    poll(timeout, f).unwrap_or_else(|| panic!("never within {timeout:?}: {what}"))
}

/// Wait until something accepts connections on 127.0.0.1:`port` (20 s).
pub fn wait_port(port: u16) {
    wait_until(
        Duration::from_secs(20),
        format_args!("port {port} opened"),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

/// Wait until nothing accepts connections on 127.0.0.1:`port` any more; `false` if
/// something still listens after `timeout` (for cleanup paths, which must not panic).
pub fn wait_port_closed(port: u16, timeout: Duration) -> bool {
    poll(timeout, || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    })
    .is_some()
}

/// Wait until `p` exists (20 s).
pub fn wait_file(p: &Path) {
    wait_until(
        Duration::from_secs(20),
        format_args!("{} appeared", p.display()),
        || p.exists(),
    );
}

/// The text of `p` once it contains `needle`, or as it is (possibly empty) after
/// `timeout`: callers assert on it with the whole text in their message.
pub fn wait_text(p: &Path, needle: &str, timeout: Duration) -> String {
    let read = || String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    poll(timeout, || Some(read()).filter(|s| s.contains(needle))).unwrap_or_else(read)
}

/// The exit status of `child` once it has exited, or `None` after `timeout` (it runs on).
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    poll(timeout, || child.try_wait().ok().flatten())
}

/// As [`wait_text`], but panics (with the text as it is) when `needle` never came.
pub fn wait_for_text(p: &Path, needle: &str, timeout: Duration) -> String {
    let text = wait_text(p, needle, timeout);
    assert!(
        text.contains(needle),
        "{} did not get {needle:?} within {timeout:?}: {text}",
        p.display()
    );
    text
}
