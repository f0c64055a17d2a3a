//! `postfix [-c DIR] [-Dv] COMMAND`: start, stop and query the mail system the way
//! Postfix 3.7's `postfix` command and its `postfix-script` do.
//!
//! What each command prints and returns was checked against the real Postfix 3.7.11:
//! messages are log lines (ident `postfix/postfix-script`, or `$syslog_name/postfix-script`),
//! echoed to stderr as `postfix/postfix-script: text` only when stderr is a terminal;
//! stdout is never used.
//!
//! | command | does | exit |
//! |---|---|---|
//! | `start` | `starting the Postfix mail system`; runs the master in the background and waits until it serves (`fatal: mail system startup failed` otherwise) | 0 / 1 |
//! | `start-fg` | the same, master in the foreground (systemd, tests) | master's |
//! | `stop` | `stopping the Postfix mail system`; SIGTERM; waits up to 5 s (`waiting for the Postfix mail system to terminate`), then `warning: stopping the Postfix mail system with force` and SIGKILL | 0 |
//! | `quick-stop` | as `stop` | 0 |
//! | `abort` | `aborting the Postfix mail system`; SIGTERM, no wait | 0 |
//! | `reload` | `refreshing the Postfix mail system`; SIGHUP | 0 |
//! | `status` | `the Postfix mail system is running: PID: N` / `… is not running` | 0 / 1 |
//! | `flush` | asks the queue manager to retry deferred mail | 0, or 69 with `postqueue: fatal: Cannot flush mail queue - mail system is down` |
//! | `check` | `postfix check` (see `cli::postfix_check`) | |
//!
//! `stop`, `abort`, `reload` when no master runs: `fatal: the Postfix mail system is not
//! running`, exit 1 (`quick-stop`: exit 0). `start` when one runs: `fatal: the Postfix mail
//! system is already running`, exit 1. Unknown command: `fatal: unknown command: 'X'.
//! Usage: postfix start (or stop, …)`, exit 1.
//!
//! Before any command, as Postfix does: main.cf is read (`postfix: fatal: open DIR/main.cf:
//! …`), as root `mail_owner` is checked, and with `compatibility_level` below 3.6 (the
//! current level of Postfix 3.7) the three `Postfix is using backwards-compatible default
//! settings` lines are logged under the bare `syslog_name`.
//!
//! Whether a master runs is decided as Postfix's `master -t` does: by trying the `flock` on
//! `queue_directory/pid/master.pid` (see [`crate::master::lock`]).
//!
//! Differences (XXX): Postfix refuses non-root users (`the postfix command is reserved for
//! the superuser`); Postern lets any user run its own instance (DESIGN.md §3). Postfix's
//! `start` also runs the `post-install` permission checks, `set-permissions`,
//! `upgrade-configuration` and `logrotate` are not implemented, and the forced stop kills
//! the master's PID only (Postfix kills its process group: its children; Postern's master
//! has none).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::postfix::{LoadOptions, PostfixConfig};
use crate::log;
use crate::master::{self, MasterOptions, lock, privs};

/// Environment variable through which `postfix start` hands the readiness pipe to the
/// background master.
const READY_FD_ENV: &str = "POSTERN_MASTER_READY_FD";
/// Internal command: the background master started by `postfix start`.
const DAEMON_COMMAND: &str = "__master";

const USAGE: &str = "usage: postfix [-c config_dir] [-Dv] command";
const COMMAND_USAGE: &str = "Usage: postfix start (or stop, reload, abort, flush, check, status, set-permissions, upgrade-configuration, logrotate)";

struct Options {
    config_dir: Option<PathBuf>,
    command: String,
}

fn parse_args(args: &[String]) -> Result<Options, char> {
    let mut config_dir = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        let Some(flags) = a.strip_prefix('-').filter(|f| !f.is_empty()) else {
            break;
        };
        for (pos, c) in flags.char_indices() {
            match c {
                'v' | 'D' => {}
                'c' => {
                    let rest = &flags[pos + 1..];
                    if !rest.is_empty() {
                        config_dir = Some(PathBuf::from(rest));
                    } else {
                        i += 1;
                        match args.get(i) {
                            Some(d) => config_dir = Some(PathBuf::from(d)),
                            None => return Err('c'),
                        }
                    }
                    break;
                }
                other => return Err(other),
            }
        }
        i += 1;
    }
    Ok(Options {
        config_dir,
        command: args.get(i).cloned().unwrap_or_default(),
    })
}

/// Run `postfix` with `args` (the arguments after the command name). Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    log::set_stderr_echo(log::stderr_is_tty());
    let code = run(args);
    log::flush();
    code
}

fn run(args: &[String]) -> i32 {
    let opts = match parse_args(args) {
        Ok(o) => o,
        Err(c) => {
            if c == 'c' {
                eprintln!("postfix: option requires an argument -- 'c'");
            } else {
                eprintln!("postfix: invalid option -- '{c}'");
            }
            log::fatal("postfix", USAGE);
            return 1;
        }
    };
    // `-c` given relative is made absolute: the background master does not share our cwd
    // forever, and the log lines name the directory as given otherwise.
    let config_dir = opts
        .config_dir
        .as_ref()
        .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()));

    if opts.command == DAEMON_COMMAND {
        log::set_stderr_echo(false);
        let ready_fd = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|v| v.parse().ok());
        // SAFETY-free: only our own child environment carries the variable.
        unsafe_remove_env(READY_FD_ENV);
        return master::run(&MasterOptions {
            config_dir,
            ready_fd,
        });
    }

    // `check` reports every problem itself, also those that stop the loading below.
    if opts.command == "check" {
        let dir = config_dir
            .clone()
            .or_else(|| std::env::var_os("MAIL_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(crate::config::postfix::DEFAULT_CONFIG_DIR));
        return crate::cli::postfix_check::run(&dir);
    }
    let cfg = match PostfixConfig::load(&LoadOptions {
        config_dir: config_dir.clone(),
        overrides: Vec::new(),
    }) {
        Ok(c) => c,
        Err(e) => {
            log::fatal("postfix", &e.to_string());
            return 1;
        }
    };
    let name = log::syslog_name(&cfg);
    if let Err(e) = log::configure(&cfg) {
        log::fatal(&name, &e);
        return 1;
    }
    if privs::is_root()
        && let Err(e) = privs::mail_owner(&cfg)
    {
        log::fatal(&name, &e);
        return 1;
    }
    compat_warnings(&cfg, &name);

    let script = log::ident(&cfg, "postfix-script");
    let pid_path = PathBuf::from(cfg.get("queue_directory").unwrap_or_default())
        .join("pid")
        .join("master.pid");
    let running = || lock::running_pid(&pid_path);

    match opts.command.as_str() {
        "start" | "start-fg" => {
            if running().is_some() {
                log::fatal(&script, "the Postfix mail system is already running");
                return 1;
            }
            // postfix-script's check-warn, before the start as there.
            for w in crate::cli::postfix_check::check_warn(&cfg) {
                log::warning(&script, &w);
            }
            log::info(&script, "starting the Postfix mail system");
            log::flush();
            if opts.command == "start-fg" {
                // Postfix's master does not echo to the terminal.
                log::set_stderr_echo(false);
                master::run(&MasterOptions {
                    config_dir,
                    ready_fd: None,
                })
            } else {
                start_background(config_dir.as_deref(), &script)
            }
        }
        "stop" | "quick-stop" => {
            let Some(pid) = running() else {
                log::fatal(&script, "the Postfix mail system is not running");
                return if opts.command == "quick-stop" { 0 } else { 1 };
            };
            log::info(&script, "stopping the Postfix mail system");
            log::flush();
            send_signal(pid, libc::SIGTERM);
            for _ in 0..5 {
                if wait_stopped(&pid_path, Duration::from_secs(1)) {
                    return 0;
                }
                log::info(&script, "waiting for the Postfix mail system to terminate");
            }
            if wait_stopped(&pid_path, Duration::from_millis(1)) {
                return 0;
            }
            log::warning(&script, "stopping the Postfix mail system with force");
            send_signal(pid, libc::SIGKILL);
            0
        }
        "abort" => {
            let Some(pid) = running() else {
                log::fatal(&script, "the Postfix mail system is not running");
                return 1;
            };
            log::info(&script, "aborting the Postfix mail system");
            log::flush();
            send_signal(pid, libc::SIGTERM);
            0
        }
        "reload" => {
            let Some(pid) = running() else {
                log::fatal(&script, "the Postfix mail system is not running");
                return 1;
            };
            log::info(&script, "refreshing the Postfix mail system");
            log::flush();
            send_signal(pid, libc::SIGHUP);
            0
        }
        "status" => match running() {
            None => {
                log::info(&script, "the Postfix mail system is not running");
                1
            }
            Some(pid) => {
                log::info(
                    &script,
                    &format!("the Postfix mail system is running: PID: {pid}"),
                );
                0
            }
        },
        "flush" => {
            if running().is_none() {
                log::fatal(
                    &log::ident(&cfg, "postqueue"),
                    "Cannot flush mail queue - mail system is down",
                );
                return 69;
            }
            // Wake the queue manager: retry deferred mail now (postqueue -f).
            let qdir = PathBuf::from(cfg.get("queue_directory").unwrap_or_default());
            crate::qmgr::wake(&qdir, b'F');
            0
        }
        "check" => crate::cli::postfix_check::run(&cfg.config_dir), // handled above
        other => {
            log::fatal(
                &script,
                &format!("unknown command: '{other}'. {COMMAND_USAGE}"),
            );
            1
        }
    }
}

/// Called while this process is still single-threaded apart from the log writer thread,
/// which never reads the environment.
fn unsafe_remove_env(name: &str) {
    crate::sys::remove_env(name);
}

/// Postfix logs these from the `postfix` command on every run while `compatibility_level`
/// is below the current level (3.6 for Postfix 3.7), under the bare `syslog_name`.
fn compat_warnings(cfg: &PostfixConfig, name: &str) {
    let level = cfg.get("compatibility_level").unwrap_or_default();
    if compat_below(level.trim(), "3.6") {
        log::info(
            name,
            "Postfix is using backwards-compatible default settings",
        );
        log::info(
            name,
            "See http://www.postfix.org/COMPATIBILITY_README.html for details",
        );
        log::info(
            name,
            "To disable backwards compatibility use \"postconf compatibility_level=3.6\" and \"postfix reload\"",
        );
    }
}

/// Compare compatibility levels as Postfix does (`major[.minor[.patch]]`, numerically).
fn compat_below(level: &str, current: &str) -> bool {
    fn parts(s: &str) -> Option<[u32; 3]> {
        let mut out = [0u32; 3];
        for (i, p) in s.split('.').enumerate() {
            if i >= 3 {
                return None;
            }
            out[i] = p.parse().ok()?;
        }
        Some(out)
    }
    match (parts(level), parts(current)) {
        (Some(a), Some(b)) => a < b,
        // An unparsable level: Postfix refuses it elsewhere; do not warn here.
        _ => false,
    }
}

fn send_signal(pid: u32, sig: libc::c_int) {
    if let Ok(p) = libc::pid_t::try_from(pid)
        && p > 0
    {
        // A positive PID taken from the locked pid file.
        let sig = nix::sys::signal::Signal::try_from(sig).ok();
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
    }
}

/// Poll `master -t` until the lock is free or `limit` passes.
fn wait_stopped(pid_path: &Path, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if lock::running_pid(pid_path).is_none() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `postfix start`: run `postfix __master` detached (new session, stdio on /dev/null) and
/// wait until it reports that it serves, as Postfix's `master -w` does.
fn start_background(config_dir: Option<&Path>, script: &str) -> i32 {
    let fail = || {
        log::fatal(script, "mail system startup failed");
        1
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            log::fatal(script, &format!("cannot find the postern binary: {e}"));
            return fail();
        }
    };
    let (read_end, write_end) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            log::fatal(script, &format!("pipe: {}", e.desc()));
            return fail();
        }
    };
    use std::os::fd::AsRawFd;
    let wfd = write_end.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg0("postfix");
    if let Some(d) = config_dir {
        cmd.arg("-c").arg(d);
    }
    cmd.arg(DAEMON_COMMAND)
        .env(READY_FD_ENV, wfd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    crate::sys::child::new_session_keeping(&mut cmd, wfd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            log::fatal(script, &format!("cannot start the master: {e}"));
            return fail();
        }
    };
    drop(write_end);
    // The master writes one line: `ok` once it serves, or `fatal: IDENT: REASON`. Read that
    // line, not to end of file: whoever holds a copy of the write end must not hold us.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut f = std::io::BufReader::new(std::fs::File::from(read_end));
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut f, &mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(s) if s.trim_end() == "ok" => 0,
        Ok(s) => {
            // The master logged its reason; show it on stderr too (the master's own stderr
            // is /dev/null), so that an init script or a unit's journal shows why.
            if let Some(reason) = s.trim_end().strip_prefix("fatal: ")
                && let Some((ident, text)) = reason.split_once(": ")
            {
                eprintln!("{ident}: fatal: {text}");
            }
            fail()
        }
        Err(_) => {
            // Nothing half-started is left behind: a master that did not report within the
            // minute is stopped (it may hold the pid lock and some ports).
            let _ = child.kill();
            let _ = child.wait();
            fail()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let a = |v: &[&str]| parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let o = a(&["-c", "/x", "-v", "status"]).expect("parse");
        assert_eq!(o.config_dir, Some(PathBuf::from("/x")));
        assert_eq!(o.command, "status");
        assert_eq!(a(&["-vc/y", "stop"]).expect("parse").command, "stop");
        assert_eq!(a(&["-x", "stop"]).err(), Some('x'));
        assert_eq!(a(&[]).expect("parse").command, "");
    }

    #[test]
    fn compat_levels() {
        assert!(compat_below("0", "3.6"));
        assert!(compat_below("2", "3.6"));
        assert!(compat_below("3.5", "3.6"));
        assert!(!compat_below("3.6", "3.6"));
        assert!(!compat_below("3.7", "3.6"));
        assert!(!compat_below("3.10", "3.6"));
    }
}
