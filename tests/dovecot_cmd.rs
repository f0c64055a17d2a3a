//! `dovecot` as a command (`postern dovecot …`), beside the real Dovecot 2.3.19 run the
//! same way where it is installed: `--version`, `--help`, an unknown option, `stop` with
//! nothing running, a missing file, `-n`; a start as admins do it (detached) that returns
//! once the master serves, a second start refused with Dovecot's message, a pid file left
//! by a killed master taken over, and `listen = *, ::` bound on both families.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const REAL: &str = REAL_DOVECOT;

fn ours(args: &[&str]) -> Output {
    Dovecot::command(Which::Postern)
        .args(args)
        .output()
        .expect("postern dovecot")
}

/// The real dovecot, when installed (and root, which it needs to start).
fn real(args: &[&str]) -> Option<Output> {
    if !Path::new(REAL).exists() || !nix::unistd::geteuid().is_root() {
        eprintln!("note: no real dovecot comparison (needs root and {REAL})");
        return None;
    }
    Some(Command::new(REAL).args(args).output().expect("dovecot"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The program name getopt puts first (`/usr/sbin/dovecot: invalid option`), made equal.
fn unprogram(s: &str) -> String {
    s.replace("/usr/sbin/dovecot: ", "dovecot: ")
}

fn conf(d: &Path, port: u16, listen: &str, base: &str) -> String {
    let dd = d.display();
    format!(
        "protocols = pop3\nbase_dir = {dd}/{base}\nlisten = {listen}\nlog_path = {dd}/{base}.log\n\
         ssl = no\n\
         passdb {{\n  driver = passwd-file\n  args = {dd}/passwd\n}}\n\
         userdb {{\n  driver = static\n  args = uid=65534 gid=65534 home=/nonexistent\n}}\n\
         service pop3-login {{\n  inet_listener pop3 {{\n    port = {port}\n  }}\n  inet_listener pop3s {{\n    port = 0\n  }}\n}}\n\
         service imap-login {{\n  inet_listener imap {{\n    port = 0\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n"
    )
}

fn greeting(addr: std::net::SocketAddr) -> String {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("greeting");
    line
}

/// Stops a started master on drop (`dovecot -c FILE stop`, ours or the real one).
struct Running {
    program: &'static str,
    conf: std::path::PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut c = Command::new(self.program);
        if self.program != REAL {
            c.arg("dovecot");
        }
        let _ = c.arg("-c").arg(&self.conf).arg("stop").output();
    }
}

#[test]
fn command_line_as_dovecot_answers_it() {
    let v = ours(&["--version"]);
    assert_eq!(v.status.code(), Some(0));
    let line = text(&v.stdout);
    assert!(
        line.starts_with("2.3.19 (Postern ") && line.ends_with(")\n"),
        "{line}"
    );
    // Scripts read the version's first word; the real one has the same shape.
    if let Some(r) = real(&["--version"]) {
        assert_eq!(r.status.code(), Some(0));
        assert!(text(&r.stdout).starts_with("2.3."));
    }
    for args in [
        &["--help"][..],
        &["-h"],
        &["--bogus"],
        &["-c"],
        &["-c", "/nonexistent/dovecot.conf"],
        &["-c", "/nonexistent/dovecot.conf", "stop"],
    ] {
        let o = ours(args);
        if let Some(r) = real(args) {
            assert_eq!(
                (o.status.code(), unprogram(&text(&o.stderr))),
                (r.status.code(), unprogram(&text(&r.stderr))),
                "dovecot {args:?}"
            );
        }
    }
    let o = ours(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stderr).starts_with("Usage: dovecot [-F] [-c <config file>]"));
    assert_eq!(ours(&["--bogus"]).status.code(), Some(89));
    let b = ours(&["--build-options"]);
    assert_eq!(b.status.code(), Some(0));
    assert!(text(&b.stdout).starts_with("Build options: "));
    // A doveadm command Postern does not have: doveadm's usage status.
    assert_eq!(ours(&["-c", "/dev/null", "who"]).status.code(), Some(64));
    if let Some(r) = real(&["-c", "/dev/null", "nosuchcommand"]) {
        assert_eq!(r.status.code(), Some(64));
    }
}

/// `dovecot -n` is `doveconf -n` on the same file.
#[test]
fn dash_n_is_doveconf() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = tmp.path().join("dovecot.conf");
    std::fs::write(&f, conf(tmp.path(), 110, "*", "base")).expect("conf");
    let f = f.to_str().expect("utf8");
    let a = ours(&["-c", f, "-n"]);
    let b = postern("doveconf", &["-c", f, "-n"]);
    assert_eq!(a.status.code(), Some(0), "{}", text(&a.stderr));
    assert_eq!(text(&a.stdout), text(&b.stdout));
}

#[test]
fn start_twice_and_stale_pid_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    std::fs::write(d.join("passwd"), "").expect("passwd");
    let port = free_port();
    let f = d.join("dovecot.conf");
    std::fs::write(&f, conf(d, port, "127.0.0.1", "base")).expect("conf");
    let fs = f.to_str().expect("utf8");
    let _running = Running {
        program: BIN,
        conf: f.clone(),
    };
    let o = ours(&["-c", fs]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // Returned once serving: the pid file is written and the port answers.
    let pid_file = d.join("base/master.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("master.pid")
        .trim()
        .parse()
        .expect("pid");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&pid_file)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(greeting(([127, 0, 0, 1], port).into()).starts_with("+OK "));
    let again = ours(&["-c", fs]);
    let want = format!(
        "Fatal: Dovecot is already running with PID {pid} (read from {})\n",
        pid_file.display()
    );
    assert_eq!(
        (again.status.code(), text(&again.stderr)),
        (Some(89), want.clone())
    );
    let log = std::fs::read_to_string(d.join("base.log")).expect("log");
    assert!(log.contains(&format!("master: {want}")), "{log}");
    // The real Dovecot says the same of itself.
    if real(&["--version"]).is_some() {
        let rport = free_port();
        let rf = d.join("real.conf");
        std::fs::write(&rf, conf(d, rport, "127.0.0.1", "real-base")).expect("conf");
        let rfs = rf.to_str().expect("utf8");
        let _real = Running {
            program: REAL,
            conf: rf.clone(),
        };
        // Started with status(): the real master keeps stderr open once detached, so
        // reading it to the end would wait for the master's exit.
        let err_file = d.join("real-start.err");
        let first = Command::new(REAL)
            .arg("-c")
            .arg(&rf)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&err_file).expect("err file"))
            .status()
            .expect("dovecot");
        assert!(
            first.success(),
            "{}",
            std::fs::read_to_string(&err_file).unwrap_or_default()
        );
        // The real master writes its pid file after the starting command has returned.
        let rpid = wait_for(Duration::from_secs(10), "the real pid file", || {
            std::fs::read_to_string(d.join("real-base/master.pid"))
                .ok()
                .filter(|p| p.ends_with('\n'))
        });
        let second = real(&["-c", rfs]).expect("real");
        assert_eq!(
            (second.status.code(), text(&second.stderr)),
            (
                Some(89),
                format!(
                    "Fatal: Dovecot is already running with PID {} (read from {}/real-base/master.pid)\n",
                    rpid.trim(),
                    d.display()
                )
            )
        );
    }
    let stop = ours(&["-c", fs, "stop"]);
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop.stderr));
    assert!(!pid_file.exists(), "the master removes master.pid");
    let stop = ours(&["-c", fs, "stop"]);
    assert_eq!(
        (stop.status.code(), text(&stop.stderr)),
        (
            Some(75),
            format!(
                "Fatal: Dovecot is not running (read from {})\n",
                pid_file.display()
            )
        )
    );

    // A pid file naming a process that is gone (a killed master's) is overridden; an
    // empty one too, with Dovecot's remark.
    let mut gone = Command::new("true").spawn().expect("true");
    let gone_pid = gone.id();
    gone.wait().expect("wait");
    std::fs::write(&pid_file, format!("{gone_pid}\n")).expect("stale pid");
    let o = ours(&["-c", fs]);
    assert_eq!((o.status.code(), text(&o.stderr)), (Some(0), String::new()));
    let new_pid = std::fs::read_to_string(&pid_file).expect("pid");
    assert_ne!(new_pid.trim(), gone_pid.to_string());
    assert_eq!(ours(&["-c", fs, "stop"]).status.code(), Some(0));
    std::fs::write(&pid_file, "").expect("empty pid file");
    let o = ours(&["-c", fs]);
    assert_eq!(
        (o.status.code(), text(&o.stderr)),
        (
            Some(0),
            format!(
                "Error: Empty PID file in {}, overriding\n",
                pid_file.display()
            )
        )
    );
    assert_eq!(ours(&["-c", fs, "stop"]).status.code(), Some(0));
}

/// Debian's stock `listen = *, ::`: IPv4 and IPv6 on the same port (the IPv6 socket is
/// IPv6-only), as Dovecot 2.3 binds them.
#[test]
fn listen_any_v4_and_v6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 on this host");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    std::fs::write(d.join("passwd"), "").expect("passwd");
    // A port free on both families.
    let port = loop {
        let p = free_port();
        if std::net::TcpListener::bind(("::", p)).is_ok() {
            break p;
        }
    };
    let f = d.join("dovecot.conf");
    std::fs::write(&f, conf(d, port, "*, ::", "base")).expect("conf");
    let fs = f.to_str().expect("utf8");
    let _running = Running {
        program: BIN,
        conf: f.clone(),
    };
    let o = ours(&["-c", fs]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(greeting(([127, 0, 0, 1], port).into()).starts_with("+OK "));
    let v6: std::net::SocketAddr = format!("[::1]:{port}").parse().expect("addr");
    assert!(greeting(v6).starts_with("+OK "));
    assert_eq!(ours(&["-c", fs, "stop"]).status.code(), Some(0));
    assert!(
        wait_port_closed(port, Duration::from_secs(10)),
        "port still open"
    );
}
