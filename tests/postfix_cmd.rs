//! `postfix start-fg | start | status | reload | stop` and the master, as real processes.
//!
//! Each test writes its own main.cf/master.cf in a temp directory with a free loopback
//! port, `maillog_file` in that directory, and runs `postern postfix -c DIR …`. Run as root
//! (CI), `mail_owner` is the system user `postern-test` (created if missing) and the master
//! must end up running as that user; run as anyone else, everything runs as that user.
//! The expected texts are what Postfix 3.7.11 printed and logged for the same commands.

mod common;
use common::{
    BIN, children_of, free_port, is_root, poll, proc_status, wait_exit, wait_port_closed,
};

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const TEST_USER: &str = "postern-test";

/// Create the test mail_owner once (idempotent; `useradd -r`, no home, no shell).
fn ensure_test_user() {
    let exists = Command::new("id")
        .arg("-u")
        .arg(TEST_USER)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        let _ = Command::new("useradd")
            .args(["-r", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin"])
            .arg(TEST_USER)
            .status();
    }
}

struct Instance {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    conf: PathBuf,
    port: u16,
}

impl Instance {
    fn new(extra_main: &str) -> Instance {
        Self::with_dirs(extra_main, None)
    }

    /// With a queue manager in master.cf, as every real master.cf has: its child process
    /// must not keep `postfix start` waiting.
    fn with_qmgr(extra_main: &str) -> Instance {
        let inst = Self::with_dirs(extra_main, None);
        let mut master = std::fs::read_to_string(inst.conf.join("master.cf")).expect("master.cf");
        master.push_str("qmgr unix n - n 300 1 qmgr\n");
        std::fs::write(inst.conf.join("master.cf"), master).expect("master.cf");
        inst
    }

    /// `data_dir`: share another instance's data directory (lock test).
    fn with_dirs(extra_main: &str, data_dir: Option<&Path>) -> Instance {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        // After dropping privileges the master re-reads main.cf on SIGHUP.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let conf = root.join("conf");
        std::fs::create_dir(&conf).expect("mkdir conf");
        let port = free_port();
        let owner = if is_root() {
            ensure_test_user();
            TEST_USER.to_string()
        } else {
            whoami()
        };
        let data = data_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.join("data"));
        let main = format!(
            "queue_directory = {q}\ndata_directory = {d}\nmail_owner = {owner}\n\
             maillog_file = {log}\nmaillog_file_prefixes = {r}\nmyhostname = mx.example.org\n\
             inet_protocols = ipv4\n{extra_main}",
            q = root.join("queue").display(),
            d = data.display(),
            log = root.join("maillog").display(),
            r = root.display(),
        );
        std::fs::write(conf.join("main.cf"), main).expect("main.cf");
        std::fs::write(
            conf.join("master.cf"),
            format!(
                "# test master.cf\n127.0.0.1:{port} inet n - n - 3 smtpd\n\
                 pickup unix n - n 60 1 pickup\n"
            ),
        )
        .expect("master.cf");
        Instance {
            _tmp: tmp,
            root,
            conf,
            port,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("postfix").arg("-c").arg(&self.conf).args(args);
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run postern postfix")
    }

    fn pid_file(&self) -> PathBuf {
        self.root.join("queue/pid/master.pid")
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("maillog")).unwrap_or_default()
    }

    /// `(ident, text)` of each log line, after checking Postfix's maillog_file shape:
    /// `Mmm dd hh:mm:ss mx ident[pid]: text`.
    fn log_lines(&self) -> Vec<(String, String)> {
        self.log()
            .lines()
            .map(|l| {
                let (stamp, rest) = l.split_at(15);
                let b = stamp.as_bytes();
                assert!(b[3] == b' ' && b[6] == b' ' && b[9] == b':', "stamp: {l}");
                assert!(b[4].is_ascii_digit() && b[5].is_ascii_digit(), "day: {l}");
                let rest = rest.strip_prefix(" mx ").expect("host label");
                let (id, text) = rest.split_once(": ").expect("ident: text");
                let (ident, pid) = id.split_once('[').expect("ident[pid]");
                assert!(pid.trim_end_matches(']').parse::<u32>().is_ok(), "pid: {l}");
                (ident.to_string(), text.to_string())
            })
            .collect()
    }

    fn has_line(&self, ident: &str, text: &str) -> bool {
        self.log_lines()
            .iter()
            .any(|(i, t)| i == ident && t == text)
    }

    fn wait_line(&self, ident: &str, text: &str) {
        if poll(Duration::from_secs(10), || {
            self.has_line(ident, text).then_some(())
        })
        .is_none()
        {
            panic!("no log line {ident}: {text}\n{}", self.log());
        }
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(2),
        )
    }

    fn wait_listening(&self) {
        if poll(Duration::from_secs(10), || self.connect().ok()).is_none() {
            panic!("port {} never listened\n{}", self.port, self.log());
        }
    }
}

fn whoami() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        assert!(!pw.is_null(), "no passwd entry for the test user");
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a PID this test started.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// The pid file after the master exits: removed, or (root-started master that dropped to
/// mail_owner and cannot unlink from the root-owned pid/ directory) emptied.
fn pid_file_gone(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Err(_) => true,
        Ok(m) => is_root() && m.len() == 0,
    }
}

struct Fg {
    child: Child,
}

impl Drop for Fg {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn start_fg(inst: &Instance) -> Fg {
    let child = inst
        .cmd(&["start-fg"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn start-fg");
    let fg = Fg { child };
    inst.wait_listening();
    // The port opens before privileges are dropped; this line comes after.
    inst.wait_line(
        "postfix/master",
        &format!(
            "daemon started -- version 3.7.11 (Postern {}), configuration {}",
            env!("CARGO_PKG_VERSION"),
            inst.conf.display()
        ),
    );
    fg
}

#[test]
fn start_fg_listens_survives_hup_and_exits_on_term() {
    let inst = Instance::new("compatibility_level = 3.6\n");
    let mut fg = start_fg(&inst);
    let pid = fg.child.id();

    // The pid file: PID right-aligned in 32 columns, newline (master.c).
    let text = std::fs::read_to_string(inst.pid_file()).expect("pid file");
    assert_eq!(text, format!("{pid:>32}\n"));
    let conf = inst.conf.display().to_string();
    inst.wait_line(
        "postfix/master",
        &format!(
            "daemon started -- version 3.7.11 (Postern {}), configuration {conf}",
            env!("CARGO_PKG_VERSION")
        ),
    );
    assert!(inst.has_line("postfix/postfix-script", "starting the Postfix mail system"));
    // compatibility_level 3.6: no backwards-compatibility lines.
    assert!(!inst.log().contains("backwards-compatible"));

    let c1 = inst.connect().expect("connect before reload");
    signal(pid, libc::SIGHUP);
    inst.wait_line(
        "postfix/master",
        &format!("reload -- version 3.7.11, configuration {conf}"),
    );
    inst.connect().expect("connect after reload");
    drop(c1);
    assert!(
        !inst.log().contains("warning:"),
        "no warnings expected:\n{}",
        inst.log()
    );

    signal(pid, libc::SIGTERM);
    let st = wait_exit(&mut fg.child, Duration::from_secs(10)).expect("exit on SIGTERM");
    assert!(st.success(), "exit status {st:?}");
    assert!(inst.has_line("postfix/master", "terminating on signal 15"));
    assert!(pid_file_gone(&inst.pid_file()));
    assert!(inst.connect().is_err(), "still listening after SIGTERM");
}

#[test]
fn start_status_stop_round_trip() {
    let inst = Instance::new("compatibility_level = 3.7\n");
    let st = inst.run(&["status"]);
    assert_eq!(st.status.code(), Some(1));
    assert!(st.stdout.is_empty() && st.stderr.is_empty(), "{st:?}");
    assert!(inst.has_line(
        "postfix/postfix-script",
        "the Postfix mail system is not running"
    ));

    let st = inst.run(&["start"]);
    assert_eq!(st.status.code(), Some(0), "{st:?}\n{}", inst.log());
    // Not a terminal: Postfix prints nothing, it only logs.
    assert!(st.stdout.is_empty() && st.stderr.is_empty(), "{st:?}");
    inst.connect().expect("listening once `start` returned");
    let pid = inst.pid().expect("pid");
    assert!(inst.has_line("postfix/postfix-script", "starting the Postfix mail system"));

    let st = inst.run(&["status"]);
    assert_eq!(st.status.code(), Some(0));
    assert!(inst.has_line(
        "postfix/postfix-script",
        &format!("the Postfix mail system is running: PID: {pid}")
    ));

    let st = inst.run(&["start"]);
    assert_eq!(st.status.code(), Some(1));
    assert!(inst.has_line(
        "postfix/postfix-script",
        "fatal: the Postfix mail system is already running"
    ));

    let st = inst.run(&["reload"]);
    assert_eq!(st.status.code(), Some(0));
    assert!(inst.has_line(
        "postfix/postfix-script",
        "refreshing the Postfix mail system"
    ));

    let st = inst.run(&["stop"]);
    assert_eq!(st.status.code(), Some(0), "{}", inst.log());
    assert!(inst.has_line("postfix/postfix-script", "stopping the Postfix mail system"));
    assert!(inst.has_line("postfix/master", "terminating on signal 15"));
    assert!(inst.connect().is_err());
    assert!(pid_file_gone(&inst.pid_file()));

    for (cmd, code) in [("status", 1), ("stop", 1), ("reload", 1), ("abort", 1)] {
        let st = inst.run(&[cmd]);
        assert_eq!(st.status.code(), Some(code), "{cmd}");
    }
    let lines = inst.log_lines();
    let not_running = lines
        .iter()
        .filter(|(i, t)| {
            i == "postfix/postfix-script" && t == "fatal: the Postfix mail system is not running"
        })
        .count();
    assert_eq!(not_running, 3, "{}", inst.log());

    let st = inst.run(&["flush"]);
    assert_eq!(st.status.code(), Some(69));
    assert!(inst.has_line(
        "postfix/postqueue",
        "fatal: Cannot flush mail queue - mail system is down"
    ));
}

#[test]
fn messages_echo_to_a_terminal_only() {
    // `script` gives the command a terminal for stderr, as an admin's shell does.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no script(1)");
        return;
    }
    let inst = Instance::new("compatibility_level = 3.7\n");
    let line = format!(
        "{BIN} postfix -c {} status; echo rc=$?",
        inst.conf.display()
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert_eq!(
        text,
        "postfix/postfix-script: the Postfix mail system is not running\nrc=1\n"
    );
}

#[test]
fn old_compatibility_level_lines_and_unknown_command() {
    let inst = Instance::new("");
    let st = inst.run(&["bogus"]);
    assert_eq!(st.status.code(), Some(1));
    let lines = inst.log_lines();
    let want = [
        (
            "postfix",
            "Postfix is using backwards-compatible default settings",
        ),
        (
            "postfix",
            "See http://www.postfix.org/COMPATIBILITY_README.html for details",
        ),
        (
            "postfix",
            "To disable backwards compatibility use \"postconf compatibility_level=3.6\" and \"postfix reload\"",
        ),
        (
            "postfix/postfix-script",
            "fatal: unknown command: 'bogus'. Usage: postfix start (or stop, reload, abort, flush, check, status, set-permissions, upgrade-configuration, logrotate)",
        ),
    ];
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|(i, t)| (i.as_str(), t.as_str()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn two_masters_on_one_config_are_refused() {
    let inst = Instance::new("compatibility_level = 3.7\n");
    let _fg = start_fg(&inst);
    let st = inst.run(&["start-fg"]);
    assert_eq!(st.status.code(), Some(1));
    assert!(inst.has_line(
        "postfix/postfix-script",
        "fatal: the Postfix mail system is already running"
    ));

    // Another queue directory but the same data_directory: master.lock refuses.
    let data = inst.root.join("data");
    let other = Instance::with_dirs("compatibility_level = 3.7\n", Some(&data));
    let st = other.run(&["start-fg"]);
    assert_eq!(st.status.code(), Some(1), "{}", other.log());
    let want = format!(
        "fatal: open lock file {}: unable to set exclusive lock: Resource temporarily unavailable",
        data.join("master.lock").display()
    );
    assert!(other.has_line("postfix/master", &want), "{}", other.log());
    assert!(other.connect().is_err());
}

#[test]
fn master_stays_root_and_smtpd_runs_as_mail_owner_when_started_as_root() {
    if !is_root() {
        eprintln!("skipped: not root");
        return;
    }
    let inst = Instance::new("compatibility_level = 3.7\n");
    let _fg = start_fg(&inst);
    let pid = inst.pid().expect("pid");
    // The master keeps root, as Postfix's does.
    assert_eq!(proc_status(pid)["Uid"], vec!["0"; 4]);
    let uid = Command::new("id")
        .args(["-u", TEST_USER])
        .output()
        .expect("id");
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
    let kids = children_of(pid);
    let smtpd = kids
        .iter()
        .find(|(_, c)| c.contains(" smtpd -c "))
        .unwrap_or_else(|| panic!("no smtpd process among {kids:?}"));
    let st = proc_status(smtpd.0);
    assert_eq!(st["Uid"], vec![uid.clone(); 4]);
    assert!(st["Gid"].iter().all(|g| g != "0"));
    assert!(st["Groups"].iter().all(|g| g != "0"));
}

#[test]
fn privileged_mail_owner_is_refused_as_postfix_does() {
    if !is_root() {
        eprintln!("skipped: not root");
        return;
    }
    let inst = Instance::new("compatibility_level = 3.7\nmail_owner = root\n");
    let st = inst.run(&["start"]);
    assert_eq!(st.status.code(), Some(1));
    let want = format!(
        "fatal: file {}/main.cf: parameter mail_owner: user root has privileged user ID",
        inst.conf.display()
    );
    assert!(inst.has_line("postfix", &want), "{}", inst.log());
    assert!(inst.connect().is_err());
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn init_scripts_carry_fedora_chkconfig_headers() {
    // chkconfig reads `# chkconfig: LEVELS START STOP` (sscanf needs the trailing newline)
    // and `# description:`; the values are Fedora's (research/fedora-dropin.md §1.4-1.7).
    for (name, line) in [
        ("postfix", "# chkconfig: 2345 80 30\n"),
        ("dovecot", "# chkconfig: - 65 35\n"),
        ("saslauthd", "# chkconfig: - 65 10\n"),
    ] {
        let text = std::fs::read_to_string(repo_file(&format!("scripts/init.d/{name}")))
            .expect("init script");
        assert!(text.starts_with("#!/bin/sh\n"), "{name}");
        assert!(text.contains(line), "{name}: {line}");
        assert!(text.contains("\n# description: "), "{name}");
        let st = Command::new("sh")
            .arg("-n")
            .arg(repo_file(&format!("scripts/init.d/{name}")))
            .status()
            .expect("sh -n");
        assert!(st.success(), "{name}: sh -n");
    }
    let postfix = std::fs::read_to_string(repo_file("scripts/init.d/postfix")).expect("postfix");
    assert!(postfix.contains("# pidfile: /var/spool/postfix/pid/master.pid\n"));
    assert!(postfix.contains("### BEGIN INIT INFO\n# Provides: postfix $mail-transfer-agent\n"));
}

#[test]
fn man_page_and_units_lint_clean() {
    if let Ok(out) = Command::new("mandoc")
        .args(["-Tlint", "-Wstyle"])
        .arg(repo_file("man/postfix.1"))
        .output()
    {
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    for unit in ["postfix", "postern", "dovecot", "saslauthd"] {
        let path = repo_file(&format!("scripts/systemd/{unit}.service"));
        let Ok(out) = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
        else {
            return;
        };
        let err = String::from_utf8_lossy(&out.stderr);
        // verify also complains when the unit's commands are not installed here.
        let real: Vec<&str> = err
            .lines()
            .filter(|l| !l.contains("is not executable") && !l.contains("No such file"))
            .collect();
        assert!(real.is_empty(), "{unit}: {err}");
    }
}

/// `scripts/init.d/postfix ACTION` as an admin runs it, with the test's own binary (as
/// `postfix`, `postconf`, `newaliases` links in a bin directory) and config directory.
fn init_script(inst: &Instance, action: &str) -> Output {
    let bin = inst.root.join("bin");
    if !bin.exists() {
        std::fs::create_dir(&bin).expect("mkdir bin");
        for name in ["postfix", "postconf", "newaliases"] {
            std::os::unix::fs::symlink(BIN, bin.join(name)).expect("symlink");
        }
    }
    Command::new("sh")
        .arg(repo_file("scripts/init.d/postfix"))
        .arg(action)
        .env("POSTFIX", bin.join("postfix"))
        .env("POSTCONF", bin.join("postconf"))
        .env("NEWALIASES", bin.join("newaliases"))
        .env("MAIL_CONFIG", &inst.conf)
        .env("LOCKFILE", inst.root.join("subsys-postfix"))
        .env("POSTERN_INIT_PLAIN", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run init script")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn start_returns_once_serving_with_a_queue_manager() {
    // The readiness pipe was inherited by the qmgr child: `start` waited 60 s for an end
    // of file and failed although the master ran.
    let inst = Instance::with_qmgr("compatibility_level = 3.7\n");
    let st = inst.run(&["start"]);
    assert_eq!(st.status.code(), Some(0), "{st:?}\n{}", inst.log());
    assert!(!inst.has_line(
        "postfix/postfix-script",
        "fatal: mail system startup failed"
    ));
    inst.connect().expect("listening once `start` returned");
    let st = inst.run(&["stop"]);
    assert_eq!(st.status.code(), Some(0), "{}", inst.log());
}

#[test]
fn init_script_start_status_reload_stop_as_fedora() {
    let inst = Instance::with_qmgr("compatibility_level = 3.7\n");
    let out = init_script(&inst, "start");
    assert_eq!(out.status.code(), Some(0), "{out:?}\n{}", inst.log());
    assert_eq!(text(&out.stdout), "Starting postfix: [  OK  ]\n");
    inst.connect()
        .expect("listening after the init script's start");
    assert!(inst.root.join("subsys-postfix").exists(), "subsys lock");
    let pid = inst.pid().expect("pid");

    let out = init_script(&inst, "status");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("master (pid {pid}) is running...\n")
    );

    // Twice: postfix's own refusal, on the screen, status 1.
    let out = init_script(&inst, "start");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "Starting postfix: [FAILED]\n");
    assert_eq!(
        text(&out.stderr),
        "    postfix/postfix-script: fatal: the Postfix mail system is already running\n"
    );
    assert_eq!(inst.pid(), Some(pid), "the running master was left alone");

    let out = init_script(&inst, "reload");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "Reloading postfix: [  OK  ]\n");
    inst.wait_line(
        "postfix/master",
        &format!(
            "reload -- version 3.7.11, configuration {}",
            inst.conf.display()
        ),
    );

    let out = init_script(&inst, "restart");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        "Shutting down postfix: [  OK  ]\nStarting postfix: [  OK  ]\n"
    );
    let pid2 = inst.pid().expect("pid after restart");
    assert_ne!(pid, pid2);

    let out = init_script(&inst, "stop");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "Shutting down postfix: [  OK  ]\n");
    assert!(inst.connect().is_err());
    assert!(!inst.root.join("subsys-postfix").exists());

    let out = init_script(&inst, "stop");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "Shutting down postfix: [FAILED]\n");
    assert_eq!(
        text(&out.stderr),
        "    postfix/postfix-script: fatal: the Postfix mail system is not running\n"
    );
    let out = init_script(&inst, "status");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "master is stopped\n");
    // condrestart does nothing when stopped.
    let out = init_script(&inst, "condrestart");
    assert_eq!(out.status.code(), Some(0));
    assert!(inst.connect().is_err());

    let out = init_script(&inst, "bogus");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("Usage: postfix {start|stop|restart|reload|"));
}

#[test]
fn init_script_after_a_killed_master_and_on_a_failed_start() {
    let inst = Instance::with_qmgr("compatibility_level = 3.7\n");
    let out = init_script(&inst, "start");
    assert_eq!(out.status.code(), Some(0), "{out:?}\n{}", inst.log());
    let pid = inst.pid().expect("pid");
    signal(pid, libc::SIGKILL);
    wait_port_closed(inst.port, Duration::from_secs(10));
    // The stale master.pid: LSB "dead but pid file exists", and start works again.
    let out = init_script(&inst, "status");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stdout), "master dead but pid file exists\n");
    let out = init_script(&inst, "start");
    assert_eq!(out.status.code(), Some(0), "{out:?}\n{}", inst.log());
    let out = init_script(&inst, "stop");
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // The port taken by someone else: the reason on the screen and in the log, nothing
    // left running.
    let squatter = TcpListener::bind(("127.0.0.1", inst.port)).expect("take the port");
    let out = init_script(&inst, "start");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stdout), "Starting postfix: [FAILED]\n");
    let err = text(&out.stderr);
    let want = format!("bind 127.0.0.1 port {}: Address already in use", inst.port);
    assert!(
        err.contains(&format!("postfix/master: fatal: {want}")),
        "{err}"
    );
    assert!(
        err.contains("postfix/postfix-script: fatal: mail system startup failed"),
        "{err}"
    );
    // The log file gets the line after the terminal does.
    inst.wait_line("postfix/master", &format!("fatal: {want}"));
    drop(squatter);
    let st = inst.run(&["status"]);
    assert_eq!(st.status.code(), Some(1), "no master left behind");
}
