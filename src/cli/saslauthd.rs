//! `saslauthd` and `testsaslauthd`, with the options, output and exit codes of Cyrus SASL
//! 2.1.28's (`saslauthd/saslauthd-main.c`, `testsaslauthd.c`; checked against Debian's
//! `sasl2-bin`).
//!
//! `saslauthd -a MECH [-m DIR] [-n N] [-d] [-r] [-O OPT] [-c] [-l] [-s KB] [-t SECS] [-V]`,
//! in Cyrus's order: creates `DIR` if missing (mode 0755, default `/run/saslauthd`; Fedora's
//! scripts pass `-m /var/run/saslauthd` or `/run/saslauthd`, Debian's `-m
//! /var/run/saslauthd`), checks the mechanism, chdirs to `DIR`, locks `DIR/saslauthd.pid`
//! (a second daemon on the same directory: `Cannot start saslauthd` / `Another instance of
//! saslauthd is currently running`, exit 2; the lock conflicts with Cyrus's own; a pid file
//! left by a killed daemon is not locked and is taken over), listens on `DIR/mux` (mode
//! 0777), then without `-d` detaches. The starting command returns once the daemon has
//! written `PID\n` into the pid file (mode 0600) and serves, with its status, as Cyrus's
//! start-up pipe does, so the Fedora unit's `Type=forking` + `PIDFile=` and the init
//! scripts find the pid at once. With `-d` it stays in the foreground (and writes the pid
//! file too). Until it detaches, and for good with `-d`, lines go to stderr as
//! `saslauthd[PID] :text` and to syslog (facility `auth`), as Cyrus's `logger()`; after,
//! to syslog only. SIGHUP is ignored; on SIGTERM/SIGINT the socket and the pid file are
//! removed. `-h`, a bad option and a missing `-a` print the usage and version on stderr
//! and exit 0, as Cyrus's `show_usage()` does; `-v` prints the version on stderr (`saslauthd
//! 2.1.28 (Postern VERSION)`, then the mechanisms). `-c`, `-l`, `-s`, `-t`, `-V` are
//! accepted and ignored (no credential cache, no accept lock). Mechanisms: `shadow`, `getpwent`,
//! `pam`, and `rimap` with `-O HOST[/PORT]` (an IMAP server checks the password:
//! [`crate::auth::rimap`]). `-a sasldb`, `ldap`, `kerberos5` and `httpform` are not
//! available: see [`crate::auth`].
//!
//! `testsaslauthd -u USER -p PASS [-r REALM] [-s SERVICE] [-f SOCKET] [-R N]`: prints
//! `N: ` and then `OK "Success."` or `NO "authentication failed"` per try; exits 0 when
//! the last try succeeded, 255 otherwise, 1 on a usage error (the usage text is the real
//! one's, on stderr). Connection errors go to stderr as `perror` words them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::saslauthd::{self as sd, LogSink, Mech, MechError, Server};
use crate::sys::detach::{Detached, Readiness, detach};

const SASLAUTHD_USAGE: &str = "usage: saslauthd [options]

option information:
  -a <authmech>  Selects the authentication mechanism to use.
  -c             Enable credential caching.
  -d             Debugging (don't detach from tty, implies -V)
  -r             Combine the realm with the login before passing to authentication mechanism
                 Ex. login: \"foo\" realm: \"bar\" will get passed as login: \"foo@bar\"
                 The realm name is passed untouched.
  -O <option>    Optional argument to pass to the authentication
                 mechanism.
  -l             Disable accept() locking. Increases performance, but
                 may not be compatible with some operating systems.
  -m <path>      Alternate path for the saslauthd working directory,
                 must be absolute.
  -n <procs>     Number of worker processes to create.
  -s <kilobytes> Size of the credential cache (in kilobytes)
  -t <seconds>   Timeout for items in the credential cache (in seconds)
  -v             Display version information and available mechs
  -V             Enable verbose logging
  -h             Display this message.

";

/// Cyrus's `show_version()` (on stderr, then a blank line), with Postern's own version.
fn version_text() -> String {
    format!(
        "saslauthd 2.1.28 (Postern {})\nauthentication mechanisms: getpwent pam rimap shadow\n\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// getopt(3) over `args` with `spec` (letters, `:` after those that take an argument).
/// Returns (option, argument) pairs, or the offending letter.
fn getopt(args: &[String], spec: &str) -> Result<Vec<(char, Option<String>)>, char> {
    match getopt_until_error(args, spec) {
        (out, None) => Ok(out),
        (_, Some((c, _))) => Err(c),
    }
}

/// Options read, in order, and the error that stopped getopt(3) (the letter and the text
/// getopt prints, `invalid option -- 'z'`).
type Getopt = (Vec<(char, Option<String>)>, Option<(char, String)>);

/// As [`getopt`], but keeps the options read before an error: Cyrus acts on each option
/// in order.
fn getopt_until_error(args: &[String], spec: &str) -> Getopt {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            break;
        }
        if !a.starts_with('-') || a.len() < 2 {
            break;
        }
        let chars: Vec<char> = a[1..].chars().collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            let Some(pos) = spec.find(c).filter(|_| c != ':') else {
                return (out, Some((c, format!("invalid option -- '{c}'"))));
            };
            if spec[pos + c.len_utf8()..].starts_with(':') {
                let rest: String = chars[j + 1..].iter().collect();
                let val = if !rest.is_empty() {
                    rest
                } else {
                    i += 1;
                    match args.get(i) {
                        Some(v) => v.clone(),
                        None => {
                            return (
                                out,
                                Some((c, format!("option requires an argument -- '{c}'"))),
                            );
                        }
                    }
                };
                out.push((c, Some(val)));
                break;
            }
            out.push((c, None));
            j += 1;
        }
        i += 1;
    }
    (out, None)
}

/// Cyrus's `show_usage()`: the usage and the version on stderr, and exit status 0 (for
/// `-h`, a bad option and a missing `-a` alike).
fn show_usage() -> i32 {
    eprint!("{SASLAUTHD_USAGE}{}", version_text());
    0
}

/// The pid file `DIR/saslauthd.pid`, opened and locked so that a second daemon on the
/// same directory is refused (Cyrus's fcntl lock, here an open-file-description lock so
/// that it stays with the detached child; it conflicts with Cyrus's own). A daemon that
/// was killed leaves the file unlocked: the next start takes it over.
fn lock_pid_file(run_dir: &std::path::Path) -> Result<std::fs::File, (i32, Vec<String>)> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = run_dir.join("saslauthd.pid");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| {
            (
                1,
                vec![format!(
                    "could not open pid file {}: {}",
                    path.display(),
                    crate::config::error::strerror(&e)
                )],
            )
        })?;
    if let Err(errno) = crate::sys::lock_whole_file(&f, true, false) {
        let e = std::io::Error::from(errno);
        return Err((
            2,
            vec![
                format!(
                    "could not lock pid file {}: {}",
                    path.display(),
                    crate::config::error::strerror(&e)
                ),
                "Cannot start saslauthd".into(),
                "Another instance of saslauthd is currently running".into(),
            ],
        ));
    }
    Ok(f)
}

/// Write `PID\n` into the locked pid file (Cyrus: truncate, write, fsync).
fn write_pid(f: &mut std::fs::File) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    f.set_len(0)?;
    f.seek(std::io::SeekFrom::Start(0))?;
    f.write_all(format!("{}\n", std::process::id()).as_bytes())?;
    f.sync_all()
}

/// `saslauthd`: returns the exit code.
pub fn saslauthd_main(args: &[String]) -> i32 {
    // Cyrus's logger writes to stderr and syslog until the daemon detaches.
    let early = LogSink::Both;
    let (opts, bad) = getopt_until_error(args, "a:cdhlm:n:O:rs:t:vV");
    let mut mech_name: Option<String> = None;
    let mut run_dir = PathBuf::from(sd::DEFAULT_RUN_DIR);
    let mut workers = 5usize;
    let mut debug = false;
    let mut concat = false;
    let mut mech_option: Option<String> = None;
    for (c, v) in opts {
        match (c, v) {
            // Only one at a time (Cyrus shows the usage for a second -a).
            ('a', Some(_)) if mech_name.is_some() => return show_usage(),
            ('a', Some(v)) => mech_name = Some(v),
            ('d', _) => debug = true,
            ('m', Some(v)) => {
                if !v.starts_with('/') {
                    early.log(true, "-m requires an absolute pathname");
                    return 1;
                }
                run_dir = PathBuf::from(v);
            }
            ('n', Some(v)) => workers = v.trim().parse().unwrap_or(5),
            ('O', Some(v)) => mech_option = Some(v),
            ('r', _) => concat = true,
            ('h', _) => return show_usage(),
            ('v', _) => {
                eprint!("{}", version_text());
                return 0;
            }
            _ => {}
        }
    }
    if let Some((_, text)) = bad {
        eprintln!("saslauthd: {text}");
        return show_usage();
    }
    let Some(mech_name) = mech_name else {
        early.log(true, "no authentication mechanism specified");
        return show_usage();
    };
    // Cyrus's order: the working directory first (created 0755, its parent must exist),
    // then the mechanism.
    if !run_dir.is_dir() {
        use std::os::unix::fs::DirBuilderExt;
        if std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&run_dir)
            .is_err()
        {
            early.log(true, &format!("can not mkdir: {}", run_dir.display()));
            early.log(
                true,
                "Check to make sure the parent directory exists and is",
            );
            early.log(true, "writeable by the user this process runs as.");
            return 1;
        }
    }
    let mech = match Mech::init(&mech_name, mech_option.as_deref()) {
        Ok(m) => m,
        Err(MechError::Unknown) => {
            early.log(
                true,
                &format!("unknown authentication mechanism: {mech_name}"),
            );
            return 1;
        }
        Err(MechError::Init(why)) => {
            early.log(true, &why);
            early.log(
                true,
                &format!(
                    "failed to initialize mechanism {}",
                    mech_name.to_ascii_lowercase()
                ),
            );
            return 1;
        }
    };
    if debug {
        early.log(false, &format!("num_procs  : {workers}"));
        early.log(
            false,
            // rimap's start-up cuts `/SERVICE` off the option in place, as Cyrus's does.
            &format!(
                "mech_option: {}",
                match (&mech, mech_option.as_deref()) {
                    (_, None) => "NULL",
                    (Mech::Rimap(_), Some(o)) => crate::auth::rimap::Rimap::option_host(o),
                    (_, Some(o)) => o,
                }
            ),
        );
        early.log(false, &format!("run_path   : {}", run_dir.display()));
        early.log(false, &format!("auth_mech  : {}", mech.name()));
    }
    if let Err(e) = std::env::set_current_dir(&run_dir) {
        early.log(true, &format!("could not chdir to: {}", run_dir.display()));
        early.log(
            true,
            &format!("chdir: {}", crate::config::error::strerror(&e)),
        );
        early.log(true, "Check to make sure the directory exists and is");
        early.log(true, "writeable by the user this process runs as.");
        return 1;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // The lock before the socket: a second daemon must not replace the first one's.
    let mut pid_file = match lock_pid_file(&run_dir) {
        Ok(f) => f,
        Err((code, lines)) => {
            for (i, l) in lines.iter().enumerate() {
                // As Cyrus, whose lock is taken by the detached child: the lock's own
                // error reaches syslog only, the two lines after it the screen too.
                if code == 2 && i == 0 {
                    LogSink::Syslog.log(true, l);
                } else {
                    early.log(true, l);
                }
            }
            return code;
        }
    };
    let mux = run_dir.join("mux");
    let listener = match sd::bind(&run_dir) {
        Ok(l) => l,
        Err(e) => {
            early.log(
                true,
                &format!("could not bind to socket: {}", mux.display()),
            );
            early.log(
                true,
                &format!("bind: {}", crate::config::error::strerror(&e)),
            );
            return 1;
        }
    };
    // As Cyrus: SIGHUP is ignored (a `reload` must not stop the daemon).
    crate::sys::ignore_signal(nix::sys::signal::Signal::SIGHUP);
    let mut ready = Readiness::none();
    let log = if debug {
        LogSink::Both
    } else {
        // Before any thread exists (the runtime is built after); the parent returns once
        // the pid file is written and the socket served.
        match detach((
            1,
            "saslauthd: Cannot start saslauthd (check syslog for errors)",
        )) {
            Ok(Detached::Child(r)) => ready = r,
            Ok(Detached::Parent(code)) => return code,
            Err(e) => {
                early.log(true, "Cannot start saslauthd");
                early.log(true, &format!("saslauthd master fork failed: {}", e.desc()));
                return 1;
            }
        }
        LogSink::Syslog
    };
    if let Err(e) = write_pid(&mut pid_file) {
        let text = format!(
            "could not write to pid file {}: {}",
            run_dir.join("saslauthd.pid").display(),
            crate::config::error::strerror(&e)
        );
        log.log(true, &text);
        ready.fail(1, &format!("saslauthd[{}] :{text}", std::process::id()));
        return 1;
    }
    log.log(false, &format!("master pid is: {}", std::process::id()));
    log.log(false, &format!("listening on socket: {}", mux.display()));
    let server = Arc::new(Server {
        mech,
        concat_realm: concat,
        workers,
        timeout: Duration::from_secs(30),
        log,
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(workers.clamp(1, 256) + 4)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log.log(true, &format!("runtime: {e}"));
            ready.fail(1, &format!("saslauthd: runtime: {e}"));
            let _ = std::fs::remove_file(run_dir.join("saslauthd.pid"));
            return 1;
        }
    };
    rt.block_on(async move {
        if listener.set_nonblocking(true).is_err() {
            ready.fail(1, "saslauthd: could not set the socket non-blocking");
            return;
        }
        let Ok(listener) = tokio::net::UnixListener::from_std(listener) else {
            ready.fail(1, "saslauthd: could not register the socket");
            return;
        };
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            ready.fail(1, "saslauthd: could not set the signal handlers");
            return;
        };
        ready.ok();
        tokio::select! {
            _ = sd::serve(listener, server) => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
    let _ = std::fs::remove_file(&mux);
    let _ = std::fs::remove_file(run_dir.join("saslauthd.pid"));
    drop(pid_file);
    log.log(false, &format!("master exited: {}", std::process::id()));
    rt.shutdown_timeout(Duration::from_millis(100));
    0
}

const TEST_USAGE: &str = "testsaslauthd: usage: testsaslauthd -u username -p password
              [-r realm] [-s servicename]
              [-f socket path] [-R repeatnum]
";

/// `testsaslauthd`: returns the exit code.
pub fn testsaslauthd_main(args: &[String]) -> i32 {
    use std::io::Write;
    let Ok(opts) = getopt(args, "p:u:r:s:f:R:") else {
        eprint!("{TEST_USAGE}");
        return 1;
    };
    let (mut user, mut password, mut realm, mut service, mut path) = (None, None, None, None, None);
    let mut repeat: i64 = 0;
    for (c, v) in opts {
        let v = v.unwrap_or_default();
        match c {
            'u' => user = Some(v),
            'p' => password = Some(v),
            'r' => realm = Some(v),
            's' => service = Some(v),
            'f' => path = Some(v),
            // atoi: leading digits, else 0.
            'R' => {
                let t = v.trim_start();
                let (sign, digits) = match t.strip_prefix('-') {
                    Some(d) => (-1, d),
                    None => (1, t.strip_prefix('+').unwrap_or(t)),
                };
                let n: String = digits.chars().take_while(char::is_ascii_digit).collect();
                repeat = sign * n.parse::<i64>().unwrap_or(0);
            }
            _ => {}
        }
    }
    let (Some(user), Some(password)) = (user, password) else {
        eprint!("{TEST_USAGE}");
        return 1;
    };
    if repeat == 0 {
        repeat = 1;
    }
    let socket = PathBuf::from(path.unwrap_or_else(|| format!("{}/mux", sd::DEFAULT_RUN_DIR)));
    let service = service.unwrap_or_else(|| "imap".into());
    let realm = realm.unwrap_or_default();
    let mut code = 0;
    let mut out = std::io::stdout();
    for c in 0..repeat {
        let _ = write!(out, "{c}: ");
        let _ = out.flush();
        code = match sd::query(
            &socket,
            user.as_bytes(),
            password.as_bytes(),
            service.as_bytes(),
            realm.as_bytes(),
            None,
        ) {
            Ok(reply) if reply.starts_with(b"OK") => {
                let _ = writeln!(out, "OK \"Success.\"");
                0
            }
            Ok(_) => {
                let _ = writeln!(out, "NO \"authentication failed\"");
                255
            }
            Err(e) => {
                let _ = out.flush();
                eprintln!("{e}");
                255
            }
        };
    }
    let _ = out.flush();
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }
    #[test]
    fn getopt_clusters_and_args() {
        assert_eq!(
            getopt(&s(&["-dn", "2", "-ashadow", "-m", "/x"]), "a:dm:n:"),
            Ok(vec![
                ('d', None),
                ('n', Some("2".into())),
                ('a', Some("shadow".into())),
                ('m', Some("/x".into()))
            ])
        );
        assert_eq!(getopt(&s(&["-z"]), "a:"), Err('z'));
        assert_eq!(getopt(&s(&["-a"]), "a:"), Err('a'));
    }
}
