//! `saslauthd` and `testsaslauthd`, with the options, output and exit codes of Cyrus SASL
//! 2.1.28's (`saslauthd/saslauthd-main.c`, `testsaslauthd.c`; checked against Debian's
//! `sasl2-bin`).
//!
//! `saslauthd -a MECH [-m DIR] [-n N] [-d] [-r] [-O OPT] [-c] [-l] [-s KB] [-t SECS] [-V]`:
//! creates `DIR` if missing (mode 0755), listens on `DIR/mux` (mode 0777), and without `-d`
//! detaches and writes `DIR/saslauthd.pid` (mode 0600), as the Fedora unit's
//! `Type=forking` + `PIDFile=` expect. On SIGTERM/SIGINT it removes the socket and the
//! pid file. `-d` stays in the foreground and logs to stderr as `saslauthd[PID] :text`;
//! otherwise lines go to syslog facility `auth`. `-c`, `-l`, `-s`, `-t`, `-V` are accepted
//! and ignored (no credential cache, no accept lock). Mechanisms: `shadow`, `getpwent`,
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

fn version_text() -> String {
    format!(
        "saslauthd {} (postern)\nauthentication mechanisms: getpwent pam rimap shadow\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// getopt(3) over `args` with `spec` (letters, `:` after those that take an argument).
/// Returns (option, argument) pairs, or the offending letter.
fn getopt(args: &[String], spec: &str) -> Result<Vec<(char, Option<String>)>, char> {
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
            let Some(pos) = spec.find(c) else {
                return Err(c);
            };
            if spec[pos + c.len_utf8()..].starts_with(':') {
                let rest: String = chars[j + 1..].iter().collect();
                let val = if !rest.is_empty() {
                    rest
                } else {
                    i += 1;
                    match args.get(i) {
                        Some(v) => v.clone(),
                        None => return Err(c),
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
    Ok(out)
}

/// `saslauthd`: returns the exit code.
pub fn saslauthd_main(args: &[String]) -> i32 {
    let opts = match getopt(args, "a:cdhlm:n:O:rs:t:vV") {
        Ok(o) => o,
        Err(_) => {
            eprint!("{SASLAUTHD_USAGE}{}", version_text());
            return 1;
        }
    };
    let mut mech_name: Option<String> = None;
    let mut run_dir = PathBuf::from(sd::DEFAULT_RUN_DIR);
    let mut workers = 5usize;
    let mut debug = false;
    let mut concat = false;
    let mut mech_option: Option<String> = None;
    for (c, v) in opts {
        match (c, v) {
            ('a', Some(v)) => mech_name = Some(v),
            ('d', _) => debug = true,
            ('m', Some(v)) => run_dir = PathBuf::from(v),
            ('n', Some(v)) => workers = v.trim().parse().unwrap_or(5),
            ('O', Some(v)) => mech_option = Some(v),
            ('r', _) => concat = true,
            ('h', _) => {
                print!("{SASLAUTHD_USAGE}{}", version_text());
                return 0;
            }
            ('v', _) => {
                print!("{}", version_text());
                return 0;
            }
            _ => {}
        }
    }
    let log = if debug {
        LogSink::Stderr
    } else {
        LogSink::Syslog
    };
    let Some(mech_name) = mech_name else {
        log.log(true, "no authentication mechanism specified");
        eprint!("{SASLAUTHD_USAGE}{}", version_text());
        return 1;
    };
    let mech = match Mech::init(&mech_name, mech_option.as_deref()) {
        Ok(m) => m,
        Err(MechError::Unknown) => {
            log.log(
                true,
                &format!("unknown authentication mechanism: {mech_name}"),
            );
            return 1;
        }
        Err(MechError::Init(why)) => {
            log.log(true, &why);
            log.log(
                true,
                &format!(
                    "failed to initialize mechanism {}",
                    mech_name.to_ascii_lowercase()
                ),
            );
            return 1;
        }
    };
    if !run_dir.is_absolute() {
        log.log(true, "path to the working directory must be absolute");
        return 1;
    }
    if !run_dir.is_dir() {
        use std::os::unix::fs::DirBuilderExt;
        if std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&run_dir)
            .is_err()
        {
            log.log(true, &format!("can not mkdir: {}", run_dir.display()));
            log.log(
                true,
                "Check to make sure the parent directory exists and is",
            );
            log.log(true, "writeable by the user this process runs as.");
            return 1;
        }
    }
    if debug {
        log.log(false, &format!("num_procs  : {workers}"));
        log.log(
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
        log.log(false, &format!("run_path   : {}", run_dir.display()));
        log.log(false, &format!("auth_mech  : {}", mech.name()));
    }
    let listener = match sd::bind(&run_dir) {
        Ok(l) => l,
        Err(e) => {
            log.log(
                true,
                &format!("bind: {}: {e}", run_dir.join("mux").display()),
            );
            return 1;
        }
    };
    if !debug {
        // Detach before any thread exists (the runtime is built after).
        if let Err(e) = nix::unistd::daemon(false, false) {
            log.log(true, &format!("daemon: {e}"));
            return 1;
        }
    }
    log.log(false, &format!("master pid is: {}", std::process::id()));
    log.log(
        false,
        &format!("listening on socket: {}", run_dir.join("mux").display()),
    );
    let pid_file = if debug {
        None
    } else {
        match sd::write_pid_file(&run_dir) {
            Ok(p) => Some(p),
            Err(e) => {
                log.log(true, &format!("could not write the pid file: {e}"));
                None
            }
        }
    };
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
            return 1;
        }
    };
    let mux = run_dir.join("mux");
    rt.block_on(async move {
        if listener.set_nonblocking(true).is_err() {
            return;
        }
        let Ok(listener) = tokio::net::UnixListener::from_std(listener) else {
            return;
        };
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = sd::serve(listener, server) => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
    let _ = std::fs::remove_file(&mux);
    if let Some(p) = pid_file {
        let _ = std::fs::remove_file(p);
    }
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
