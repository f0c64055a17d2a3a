//! The SysV init scripts themselves (`scripts/init.d/dovecot`, `scripts/init.d/saslauthd`),
//! run as an admin runs them (`sh /etc/init.d/dovecot start`), pointed at the built binary
//! (`POSTERN=`) and at a configuration of the test's own (`DOVECOT_CONF=`, `SOCKETDIR=`,
//! `SYSCONFIG=`), on free loopback ports: start, status, start again, reload, stop, stop
//! again, and a pid file left by a killed daemon. Output is checked in the plain style
//! (`POSTERN_INIT_PLAIN=1`); one run per script also goes through the box's own function
//! library (Debian's /lib/lsb/init-functions here) and checks the statuses only.
//!
//! Daemons detach from the script, so their parent is pid 1, which in a container may
//! never reap them: a killed daemon stays a zombie, which the scripts and `dovecot`
//! count as gone (as a real init would have reaped it).

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

struct Run {
    rc: i32,
    out: String,
    err: String,
}

/// `sh scripts/init.d/NAME ACTION` with `env`, in the plain output style unless `styled`.
fn run_script(name: &str, action: &str, env: &[(&str, String)], styled: bool) -> Run {
    let mut c = Command::new("sh");
    c.arg(repo_root().join("scripts/init.d").join(name))
        .arg(action)
        .env("POSTERN", BIN)
        .env("LANG", "C");
    if !styled {
        c.env("POSTERN_INIT_PLAIN", "1");
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("sh");
    Run {
        rc: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn read_pid(p: &Path) -> i32 {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The live children of `parent`.
fn children(parent: i32) -> Vec<i32> {
    children_of(parent as u32)
        .into_iter()
        .map(|(p, _)| p as i32)
        .filter(|p| alive(*p))
        .collect()
}

/// The real uid of `pid`.
fn uid_of(pid: i32) -> u32 {
    proc_status(pid as u32)
        .get("Uid")
        .and_then(|v| v.first())
        .and_then(|v| v.parse().ok())
        .expect("Uid line")
}

fn pop3_greeting(addr: &str) -> String {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("greeting");
    line
}

/// A dovecot.conf of the test's own: POP3 on `port` (127.0.0.1), base_dir, log in `d`.
fn dovecot_conf(d: &Path, port: u16, listen: &str) -> String {
    let d = d.display();
    format!(
        "protocols = pop3\nbase_dir = {d}/base\nlisten = {listen}\nlog_path = {d}/log\n\
         ssl = no\ndisable_plaintext_auth = no\n\
         passdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
         userdb {{\n  driver = static\n  args = uid=65534 gid=65534 home=/nonexistent\n}}\n\
         service pop3-login {{\n  inet_listener pop3 {{\n    port = {port}\n  }}\n  inet_listener pop3s {{\n    port = 0\n  }}\n}}\n"
    )
}

/// Stops what a test started, whatever happened in it.
struct Cleanup {
    script: &'static str,
    env: Vec<(&'static str, String)>,
    pid_file: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = run_script(self.script, "stop", &self.env, false);
        let pid = read_pid(&self.pid_file);
        if pid > 0 && alive(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn dovecot_init_script_lifecycle() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let port = free_port();
    let conf = d.join("dovecot.conf");
    std::fs::write(&conf, dovecot_conf(d, port, "127.0.0.1")).expect("conf");
    std::fs::write(d.join("passwd"), "").expect("passwd");
    let pid_file = d.join("base/master.pid");
    let env = vec![
        ("DOVECOT_CONF", conf.display().to_string()),
        ("LOCKFILE", d.join("subsys-dovecot").display().to_string()),
        ("SYSCONFIG", d.join("no-sysconfig").display().to_string()),
        ("TMPDIR", d.display().to_string()),
    ];
    let _cleanup = Cleanup {
        script: "dovecot",
        env: env.clone(),
        pid_file: pid_file.clone(),
    };
    let r = run_script("dovecot", "status", &env, false);
    assert_eq!((r.rc, r.out.as_str()), (3, "dovecot is stopped\n"));

    let r = run_script("dovecot", "start", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str(), r.err.as_str()),
        (0, "Starting Dovecot Imap: [  OK  ]\n", "")
    );
    // The start returned once the master serves: the pid file is there and the port
    // answers at once.
    let pid = read_pid(&pid_file);
    assert!(pid > 0 && alive(pid), "master.pid names the master");
    assert!(d.join("subsys-dovecot").exists(), "subsys lock touched");
    let g = pop3_greeting(&format!("127.0.0.1:{port}"));
    assert!(
        g.starts_with("+OK Dovecot") && g.ends_with(" ready.\r\n"),
        "{g}"
    );
    let r = run_script("dovecot", "status", &env, false);
    assert_eq!(
        (r.rc, r.out),
        (0, format!("dovecot (pid {pid}) is running...\n"))
    );

    // start when running: LSB success, nothing started twice.
    let r = run_script("dovecot", "start", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str()),
        (0, "Starting Dovecot Imap: (already running) [  OK  ]\n")
    );
    assert_eq!(read_pid(&pid_file), pid);

    let r = run_script("dovecot", "reload", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str()),
        (0, "Reloading Dovecot Imap: [  OK  ]\n")
    );
    wait_until(Duration::from_secs(20), "reload logged", || {
        std::fs::read_to_string(d.join("log"))
            .unwrap_or_default()
            .contains("master: Warning: SIGHUP received - reloading configuration")
    });
    assert_eq!(read_pid(&pid_file), pid, "reload keeps the master");

    let r = run_script("dovecot", "stop", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str()),
        (0, "Stopping Dovecot Imap: [  OK  ]\n")
    );
    assert!(!alive(pid), "stop returns once the master is gone");
    assert!(!pid_file.exists(), "master.pid removed");
    assert!(!d.join("subsys-dovecot").exists());
    wait_until(Duration::from_secs(20), "port closed", || {
        TcpStream::connect(("127.0.0.1", port)).is_err()
    });

    let r = run_script("dovecot", "stop", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str()),
        (0, "Stopping Dovecot Imap: (not running) [  OK  ]\n")
    );
    let r = run_script("dovecot", "reload", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str()),
        (7, "Reloading Dovecot Imap: (not running) [FAILED]\n")
    );
    let r = run_script("dovecot", "status", &env, false);
    assert_eq!(r.rc, 3);

    // A master killed outright leaves its pid file: status says so, start takes over.
    let r = run_script("dovecot", "start", &env, false);
    assert_eq!(r.rc, 0, "{}{}", r.out, r.err);
    let pid = read_pid(&pid_file);
    let login = children(pid);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    wait_until(
        Duration::from_secs(20),
        "master and login process gone",
        || !alive(pid) && login.iter().all(|p| !alive(*p)),
    );
    let r = run_script("dovecot", "status", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str()),
        (1, "dovecot dead but pid file exists\n")
    );
    let r = run_script("dovecot", "start", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str(), r.err.as_str()),
        (0, "Starting Dovecot Imap: [  OK  ]\n", "")
    );
    let new_pid = read_pid(&pid_file);
    assert!(new_pid != pid && alive(new_pid));
    let r = run_script("dovecot", "restart", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str()),
        (
            0,
            "Stopping Dovecot Imap: [  OK  ]\nStarting Dovecot Imap: [  OK  ]\n"
        )
    );
    assert!(!alive(new_pid));
    let r = run_script("dovecot", "condrestart", &env, false);
    assert_eq!(r.rc, 0, "{}{}", r.out, r.err);
    let r = run_script("dovecot", "stop", &env, false);
    assert_eq!(r.rc, 0);
    let r = run_script("dovecot", "condrestart", &env, false);
    assert_eq!((r.rc, r.out.as_str()), (0, ""), "condrestart when stopped");

    // The box's own function library (LSB here): the same statuses.
    for (action, rc) in [
        ("start", 0),
        ("start", 0),
        ("status", 0),
        ("stop", 0),
        ("stop", 0),
    ] {
        let r = run_script("dovecot", action, &env, true);
        assert_eq!(r.rc, rc, "{action}: {}{}", r.out, r.err);
    }
    let r = run_script("dovecot", "bogus", &env, false);
    assert_eq!(r.rc, 2);
    assert!(r.err.starts_with("Usage: "), "{}", r.err);
}

/// A start that fails says why on the screen (what dovecot says, word for word as the
/// real dovecot says it) and in the log, and leaves nothing running.
#[test]
fn dovecot_init_script_failure_is_shown() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let port = free_port();
    let conf = d.join("dovecot.conf");
    std::fs::write(
        &conf,
        dovecot_conf(d, port, "127.0.0.1") + "no_such_setting = 1\n",
    )
    .expect("conf");
    std::fs::write(d.join("passwd"), "").expect("passwd");
    let env = vec![
        ("DOVECOT_CONF", conf.display().to_string()),
        ("LOCKFILE", d.join("subsys-dovecot").display().to_string()),
        ("SYSCONFIG", d.join("no-sysconfig").display().to_string()),
    ];
    let r = run_script("dovecot", "start", &env, false);
    let want = format!(
        "doveconf: Fatal: Error in configuration file {} line 23: Unknown setting: no_such_setting\n",
        conf.display()
    );
    assert_eq!(
        (r.rc, r.out.as_str(), r.err.as_str()),
        (1, "Starting Dovecot Imap: [FAILED]\n", want.as_str())
    );
    assert!(!d.join("base/master.pid").exists());
    assert!(!d.join("subsys-dovecot").exists());
    if Path::new("/usr/sbin/dovecot").exists() {
        let real = Command::new("/usr/sbin/dovecot")
            .arg("-c")
            .arg(&conf)
            .output()
            .expect("dovecot");
        assert_eq!(String::from_utf8_lossy(&real.stderr), want);
        assert_eq!(real.status.code(), Some(89));
    }

    // The port taken: Dovecot's two lines on the screen, and in log_path.
    std::fs::write(&conf, dovecot_conf(d, port, "127.0.0.1")).expect("conf");
    let holder = std::net::TcpListener::bind(("127.0.0.1", port)).expect("hold port");
    let r = run_script("dovecot", "start", &env, false);
    let want = format!(
        "Error: service(pop3-login): listen(127.0.0.1, {port}) failed: Address already in use\n\
         Fatal: Failed to start listeners\n"
    );
    assert_eq!(
        (r.rc, r.out.as_str(), r.err.as_str()),
        (1, "Starting Dovecot Imap: [FAILED]\n", want.as_str())
    );
    let log = std::fs::read_to_string(d.join("log")).expect("log");
    assert!(
        log.contains(&format!(
            "master: Error: service(pop3-login): listen(127.0.0.1, {port}) failed: Address already in use\n"
        )) && log.contains("master: Fatal: Failed to start listeners"),
        "{log}"
    );
    if Path::new("/usr/sbin/dovecot").exists() && nix::unistd::geteuid().is_root() {
        let real_conf = d.join("real.conf");
        std::fs::write(
            &real_conf,
            dovecot_conf(d, port, "127.0.0.1")
                .replace("/base\n", "/real-base\n")
                .replace("/log\n", "/real-log\n"),
        )
        .expect("conf");
        let real = Command::new("/usr/sbin/dovecot")
            .arg("-c")
            .arg(&real_conf)
            .output()
            .expect("dovecot");
        assert_eq!(String::from_utf8_lossy(&real.stderr), want);
        assert_eq!(real.status.code(), Some(89));
    }
    drop(holder);
}

/// A Dovecot 1.0 file (Fedora 7's syntax) without `login_user`: the login process runs
/// as `dovecot`, Dovecot 1.0's default, not 2.x's `dovenull` (Fedora 7 has none).
#[test]
fn dovecot_init_script_with_a_1_0_file() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (the login process switches user)");
        return;
    }
    let Some(dovecot) = nix::unistd::User::from_name("dovecot").ok().flatten() else {
        eprintln!("skipped: no dovecot user");
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let port = free_port();
    let conf = d.join("dovecot.conf");
    let dd = d.display();
    std::fs::write(
        &conf,
        format!(
            "protocols = pop3\nssl_disable = yes\nbase_dir = {dd}/base/\nlog_path = {dd}/log\n\
             protocol pop3 {{\n  listen = 127.0.0.1:{port}\n}}\n\
             auth default {{\n  mechanisms = plain\n  passdb passwd-file {{\n    args = {dd}/passwd\n  }}\n\
             \x20 userdb static {{\n    args = uid=65534 gid=65534 home=/nonexistent\n  }}\n}}\n"
        ),
    )
    .expect("conf");
    std::fs::write(d.join("passwd"), "").expect("passwd");
    let pid_file = d.join("base/master.pid");
    let env = vec![
        ("DOVECOT_CONF", conf.display().to_string()),
        ("LOCKFILE", d.join("subsys-dovecot").display().to_string()),
        ("SYSCONFIG", d.join("no-sysconfig").display().to_string()),
    ];
    let _cleanup = Cleanup {
        script: "dovecot",
        env: env.clone(),
        pid_file: pid_file.clone(),
    };
    let r = run_script("dovecot", "start", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str()),
        (0, "Starting Dovecot Imap: [  OK  ]\n"),
        "{}",
        r.err
    );
    let g = pop3_greeting(&format!("127.0.0.1:{port}"));
    assert!(
        g.starts_with("+OK Dovecot") && g.ends_with(" ready.\r\n"),
        "{g}"
    );
    let pid = read_pid(&pid_file);
    let login = children(pid);
    assert_eq!(login.len(), 1, "one login process");
    assert_eq!(uid_of(login[0]), dovecot.uid.as_raw());
    let r = run_script("dovecot", "stop", &env, false);
    assert_eq!(r.rc, 0);

    // A login_user that does not exist: the master's words for a service's user, as
    // the real Dovecot gives them for the same setting in 2.x syntax.
    let text = std::fs::read_to_string(&conf).expect("conf");
    std::fs::write(
        &conf,
        text.replace("ssl_disable", "login_user = nosuchloginuser\nssl_disable"),
    )
    .expect("conf");
    let r = run_script("dovecot", "start", &env, false);
    let want = "Fatal: service(pop3-login) User doesn't exist: nosuchloginuser (See service pop3-login { user } setting)\n";
    assert_eq!((r.rc, r.err.as_str()), (1, want));
    if Path::new("/usr/sbin/dovecot").exists() {
        let real_conf = d.join("real.conf");
        std::fs::write(
            &real_conf,
            dovecot_conf(d, free_port(), "127.0.0.1")
                .replace("/base\n", "/real-base\n")
                .replace("/log\n", "/real-log\n")
                + "service pop3-login {\n  user = nosuchloginuser\n}\n",
        )
        .expect("conf");
        let real = Command::new("/usr/sbin/dovecot")
            .arg("-c")
            .arg(&real_conf)
            .output()
            .expect("dovecot");
        assert_eq!(String::from_utf8_lossy(&real.stderr), want);
        assert_eq!(real.status.code(), Some(89));
    }
}

#[test]
fn saslauthd_init_script_lifecycle() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let run = d.join("run");
    let pid_file = run.join("saslauthd.pid");
    let env = vec![
        ("SOCKETDIR", run.display().to_string()),
        ("MECH", "shadow".to_string()),
        ("LOCKFILE", d.join("subsys-saslauthd").display().to_string()),
        ("SYSCONFIG", d.join("no-sysconfig").display().to_string()),
        ("TMPDIR", d.display().to_string()),
    ];
    let _cleanup = Cleanup {
        script: "saslauthd",
        env: env.clone(),
        pid_file: pid_file.clone(),
    };
    let ask = || {
        Command::new(BIN)
            .args(["testsaslauthd", "-u", "pstn_nosuch", "-p", "x", "-f"])
            .arg(run.join("mux"))
            .output()
            .expect("testsaslauthd")
    };
    let r = run_script("saslauthd", "status", &env, false);
    assert_eq!((r.rc, r.out.as_str()), (3, "saslauthd is stopped\n"));
    let r = run_script("saslauthd", "start", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str(), r.err.as_str()),
        (0, "Starting saslauthd: [  OK  ]\n", "")
    );
    // The pid file is written before the start returns; the socket answers.
    let pid = read_pid(&pid_file);
    assert!(pid > 0 && alive(pid));
    let a = ask();
    assert_eq!(
        String::from_utf8_lossy(&a.stdout),
        "0: NO \"authentication failed\"\n"
    );
    let r = run_script("saslauthd", "status", &env, false);
    assert_eq!(
        (r.rc, r.out),
        (0, format!("saslauthd (pid {pid}) is running...\n"))
    );
    let r = run_script("saslauthd", "start", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str()),
        (0, "Starting saslauthd: (already running) [  OK  ]\n")
    );
    assert_eq!(read_pid(&pid_file), pid);
    // reload is a restart (saslauthd rereads nothing), as in Fedora's script.
    let r = run_script("saslauthd", "reload", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str()),
        (
            0,
            "Stopping saslauthd: [  OK  ]\nStarting saslauthd: [  OK  ]\n"
        )
    );
    let pid2 = read_pid(&pid_file);
    assert!(pid2 != pid && alive(pid2) && !alive(pid));
    let r = run_script("saslauthd", "stop", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str()),
        (0, "Stopping saslauthd: [  OK  ]\n")
    );
    assert!(!alive(pid2));
    assert!(!pid_file.exists() && !run.join("mux").exists());
    let r = run_script("saslauthd", "stop", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str()),
        (0, "Stopping saslauthd: (not running) [  OK  ]\n")
    );
    let r = run_script("saslauthd", "reload", &env, false);
    assert_eq!(r.rc, 7);

    // Killed outright: the pid file stays; status says so; start takes over.
    let r = run_script("saslauthd", "start", &env, false);
    assert_eq!(r.rc, 0, "{}{}", r.out, r.err);
    let pid = read_pid(&pid_file);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    wait_until(Duration::from_secs(20), "saslauthd gone", || !alive(pid));
    let r = run_script("saslauthd", "status", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str()),
        (1, "saslauthd dead but pid file exists\n")
    );
    let r = run_script("saslauthd", "start", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str(), r.err.as_str()),
        (0, "Starting saslauthd: [  OK  ]\n", "")
    );
    assert!(alive(read_pid(&pid_file)));
    assert!(ask().status.code() == Some(255), "the new daemon answers");
    let r = run_script("saslauthd", "stop", &env, false);
    assert_eq!(r.rc, 0);

    // A bad mechanism: saslauthd's own words below [FAILED].
    let mut bad = env.clone();
    bad.retain(|(k, _)| *k != "MECH");
    bad.push(("MECH", "bogus".into()));
    let r = run_script("saslauthd", "start", &bad, false);
    assert_eq!(r.rc, 1);
    assert_eq!(r.out, "Starting saslauthd: [FAILED]\n");
    assert!(
        r.err
            .ends_with(":unknown authentication mechanism: bogus\n"),
        "{}",
        r.err
    );

    // The box's function library: the same statuses.
    for (action, rc) in [
        ("start", 0),
        ("start", 0),
        ("status", 0),
        ("stop", 0),
        ("stop", 0),
    ] {
        let r = run_script("saslauthd", action, &env, true);
        assert_eq!(r.rc, rc, "{action}: {}{}", r.out, r.err);
    }
}

/// Debian's /etc/default/saslauthd keys (MECHANISMS, OPTIONS with -m, THREADS): the
/// socket directory comes from OPTIONS' -m and is made root:sasl 0710 as Debian makes it.
#[test]
fn saslauthd_init_script_reads_debian_defaults() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let run = d.join("debian-run");
    let defaults = d.join("default-saslauthd");
    std::fs::write(
        &defaults,
        format!(
            "START=yes\nMECHANISMS=\"shadow\"\nMECH_OPTIONS=\"\"\nTHREADS=2\nOPTIONS=\"-c -m {}\"\n",
            run.display()
        ),
    )
    .expect("defaults");
    let env = vec![
        ("SYSCONFIG", defaults.display().to_string()),
        ("LOCKFILE", d.join("subsys-saslauthd").display().to_string()),
    ];
    let _cleanup = Cleanup {
        script: "saslauthd",
        env: env.clone(),
        pid_file: run.join("saslauthd.pid"),
    };
    let r = run_script("saslauthd", "start", &env, false);
    assert_eq!(
        (r.rc, r.out.as_str()),
        (0, "Starting saslauthd: [  OK  ]\n"),
        "{}",
        r.err
    );
    assert!(run.join("mux").exists());
    assert!(alive(read_pid(&run.join("saslauthd.pid"))));
    if nix::unistd::geteuid().is_root()
        && let Ok(Some(sasl)) = nix::unistd::Group::from_name("sasl")
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let m = std::fs::metadata(&run).expect("stat");
        assert_eq!(m.permissions().mode() & 0o7777, 0o710);
        assert_eq!((m.uid(), m.gid()), (0, sasl.gid.as_raw()));
    }
    let r = run_script("saslauthd", "stop", &env, false);
    assert_eq!(r.rc, 0);
}
