//! The one `postern` binary. It dispatches on the name it was called by (`argv[0]`:
//! `postconf`, `postfix`, `sendmail`, …) or, when called as `postern`, on its first argument
//! (`postern postconf -n`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Registers the fork handler that lets log lines use a cached PID (issue 18).
    let _ = postern::sys::pid();
    postern::cli::dispatch(args)
}
