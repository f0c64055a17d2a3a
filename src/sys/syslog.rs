//! The C library's `syslog(3)`, opened once with an ident, `LOG_PID | LOG_NDELAY` and a
//! facility, for daemons whose lines must look as the C program's (Cyrus saslauthd).

use std::sync::Once;

/// Log `line` at `prio` (a `LOG_*` level), opening the log with `ident` and `facility`
/// on the first call.
pub fn log(ident: &'static std::ffi::CStr, facility: libc::c_int, prio: libc::c_int, line: &str) {
    static OPEN: Once = Once::new();
    OPEN.call_once(|| {
        // SAFETY: the ident is a static C string, as openlog requires.
        unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID | libc::LOG_NDELAY, facility) };
    });
    if let Ok(c) = std::ffi::CString::new(line.replace('\0', " ")) {
        // SAFETY: a constant format with one NUL-terminated string argument.
        unsafe { libc::syslog(prio, c"%s".as_ptr(), c.as_ptr()) };
    }
}
