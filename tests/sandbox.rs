//! README's first command, `postern sandbox DIR`, run as a child process the way a newcomer
//! runs it: as root and as an unprivileged user (when the tests run as root, a system user
//! created for the test, through `setpriv`; otherwise the invoking user, and the root run is
//! skipped). The commands it prints are parsed and run as printed, by the same user: swaks
//! with SMTP AUTH, then `curl pop3://` and `curl imap://` read that message back, and
//! `testsaslauthd` (saslauthd `-a rimap`, an IMAP LOGIN) says OK. SIGINT must then
//! stop every process it started (checked in /proc) and leave the files. Also `--help`, and
//! a reader that closes the pipe (`postern sandbox | head -1`).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::*;

/// The unprivileged user of the non-root runs when the tests run as root.
const TEST_USER: &str = "postern-sbtest";

/// Who runs the sandbox and the pasted commands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum As {
    /// This process's user.
    Me,
    /// [`TEST_USER`] through setpriv (the tests run as root).
    Unprivileged,
}

/// `cmd` run by `who`: through `setpriv` for [`As::Unprivileged`].
fn command_as(who: As, program: &str) -> Command {
    match who {
        As::Me => Command::new(program),
        As::Unprivileged => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={TEST_USER}"),
                &format!("--regid={TEST_USER}"),
                "--clear-groups",
                "--reset-env",
                "--",
                program,
            ]);
            c
        }
    }
}

/// The test user, created once (idempotent), removed when the last user of it is done.
struct TestUser;

impl TestUser {
    fn create() -> TestUser {
        if nix::unistd::User::from_name(TEST_USER)
            .ok()
            .flatten()
            .is_none()
        {
            let _ = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    TEST_USER,
                ])
                .output();
        }
        assert!(
            nix::unistd::User::from_name(TEST_USER)
                .ok()
                .flatten()
                .is_some(),
            "useradd {TEST_USER}"
        );
        TestUser
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(TEST_USER).output();
    }
}

/// A running `postern sandbox DIR`, its output collected line by line.
struct Sandbox {
    child: Child,
    dir: PathBuf,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<String>>,
    /// The threads reading standard output and error.
    readers: Vec<std::thread::JoinHandle<()>>,
    _tmp: tempfile::TempDir,
}

impl Sandbox {
    fn start(who: As) -> Sandbox {
        let tmp = tempfile::tempdir().expect("tempdir");
        // The unprivileged user must reach DIR (created by the sandbox itself).
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let dir = tmp.path().join("sb");
        if who == As::Unprivileged {
            // As a user runs it in a directory of their own.
            std::fs::create_dir(&dir).expect("mkdir");
            let u = nix::unistd::User::from_name(TEST_USER)
                .ok()
                .flatten()
                .expect("test user");
            nix::unistd::chown(&dir, Some(u.uid), Some(u.gid)).expect("chown");
        }
        let mut child = command_as(who, BIN)
            .arg("sandbox")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("postern sandbox");
        let out = Arc::new(Mutex::new(Vec::new()));
        let o2 = out.clone();
        let stdout = child.stdout.take().expect("stdout");
        let out_reader = std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                o2.lock().expect("lock").push(l);
            }
        });
        let err = Arc::new(Mutex::new(String::new()));
        let e2 = err.clone();
        let mut stderr = child.stderr.take().expect("stderr");
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            e2.lock().expect("lock").push_str(&s);
        });
        Sandbox {
            child,
            dir,
            out,
            err,
            readers: vec![out_reader, err_reader],
            _tmp: tmp,
        }
    }

    fn text(&self) -> String {
        self.out.lock().expect("lock").join("\n")
    }

    fn stderr(&self) -> String {
        self.err.lock().expect("lock").clone()
    }

    /// Once the sandbox has exited: until the reader threads have read all its output
    /// (up to 5 s: a process it left behind may hold the pipes open).
    fn drain(&self) {
        let _ = poll(Duration::from_secs(5), || {
            self.readers.iter().all(|h| h.is_finished()).then_some(())
        });
    }

    /// Wait until a line satisfies `f`; returns it.
    fn wait_line(&mut self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let found = poll(Duration::from_secs(90), || {
            if let Some(l) = self.out.lock().expect("lock").iter().find(|l| f(l)) {
                return Some(Ok(l.clone()));
            }
            self.child.try_wait().ok().flatten().map(Err)
        });
        match found {
            Some(Ok(line)) => line,
            Some(Err(st)) => {
                self.drain();
                panic!(
                    "the sandbox ended ({st}) before {what}:\n{}\nstderr:\n{}",
                    self.text(),
                    self.stderr()
                );
            }
            None => panic!("no {what} in:\n{}\nstderr:\n{}", self.text(), self.stderr()),
        }
    }

    /// SIGINT, then the exit status.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("kill -INT");
        self.wait_exit()
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let Some(st) = wait_exit(&mut self.child, Duration::from_secs(60)) else {
            panic!("the sandbox did not end:\n{}", self.text());
        };
        self.drain();
        st
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // A failed test must not leave daemons behind: SIGTERM makes the sandbox stop them.
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = wait_exit(&mut self.child, Duration::from_secs(30));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes (any program) whose arguments name `dir` or a path below it.
fn processes_of(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args
            .iter()
            .any(|a| a == &dir || a.starts_with(&format!("{dir}/")))
        {
            found.push(format!("{name}: {}", args.join(" ")));
        }
    }
    found
}

/// Run a printed command line with `sh -c`, as `who`.
fn paste(who: As, line: &str) -> std::process::Output {
    command_as(who, "sh")
        .args(["-c", line])
        .stdin(Stdio::null())
        .output()
        .expect("sh")
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The printed command starting with `prefix` (after the indentation).
fn command_line(out: &str, prefix: &str) -> Option<String> {
    out.lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(prefix))
        .map(str::to_string)
}

fn port_of(line: &str, marker: &str) -> u16 {
    let rest = &line[line.find(marker).expect("marker") + marker.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().expect("port")
}

/// The whole walk-through for one user.
fn walk_through(who: As) {
    let mut sb = Sandbox::start(who);
    sb.wait_line("the commands to try", |l| {
        l.starts_with("Try, from another terminal:")
    });
    sb.wait_line("the log header", |l| l.starts_with("Logs: "));
    let out = sb.text();
    // What runs, said as it is, and as whom.
    let running = match who {
        As::Unprivileged => format!("Running ({TEST_USER}):"),
        As::Me if is_root() => "Running (root, services as ".to_string(),
        As::Me => "Running (".to_string(),
    };
    assert!(out.contains(&running), "{out}");
    assert!(out.contains("$ saslauthd -a rimap -O 127.0.0.1/"), "{out}");
    assert!(
        out.contains(&format!("$ dovecot -c {}/dovecot.conf", sb.dir.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("$ postfix -c {} start", sb.dir.display())),
        "{out}"
    );
    let swaks = command_line(&out, "swaks --server 127.0.0.1:").expect("swaks line");
    let pop3 = command_line(&out, "curl pop3://").expect("curl pop3 line");
    let password = swaks.rsplit(' ').next().expect("password").to_string();
    assert!(password.len() >= 12, "{swaks}");
    assert!(
        swaks.contains("--to sandbox@sandbox.test --auth-user sandbox"),
        "{swaks}"
    );

    // SMTP AUTH with the wrong password is refused, with the right one the mail goes in.
    let wrong = paste(who, &swaks.replace(&password, "not-the-password"));
    assert!(
        text(&wrong).contains("535 5.7.8 Error: authentication failed"),
        "{}",
        text(&wrong)
    );
    let sent = paste(
        who,
        &format!("{swaks} --header 'Subject: sandbox walk-through'"),
    );
    let sent_text = text(&sent);
    assert!(sent.status.success(), "{sent_text}");
    assert!(
        sent_text.contains("235 2.7.0 Authentication successful"),
        "{sent_text}"
    );
    assert!(sent_text.contains("250 2.0.0 Ok: queued as"), "{sent_text}");
    sb.wait_line("the AUTH log line", |l| {
        l.contains("postfix/smtpd[") && l.contains("sasl_username=sandbox")
    });
    sb.wait_line("the delivery", |l| {
        l.contains("to=<sandbox@sandbox.test>, relay=virtual") && l.contains("status=sent")
    });

    // The message read back over POP3, by the printed command.
    let got = paste(who, &pop3);
    let got_text = String::from_utf8_lossy(&got.stdout).into_owned();
    assert!(got.status.success(), "{}", text(&got));
    assert!(
        got_text.contains("Subject: sandbox walk-through"),
        "{got_text}"
    );
    assert!(
        got_text.contains("Delivered-To: sandbox@sandbox.test"),
        "{got_text}"
    );
    assert!(got_text.contains("with ESMTPA"), "{got_text}");
    sb.wait_line("the POP3 login", |l| {
        l.contains("pop3-login: Info: Login: user=<sandbox>")
    });

    // Local mail for the user who ran it goes where the sandbox says.
    let local = out
        .lines()
        .find(|l| l.starts_with("Mail to ") && l.contains("@localhost is delivered to "))
        .expect("the local mail line");
    let addr = local["Mail to ".len()..]
        .split(' ')
        .next()
        .expect("address");
    let mbox = local
        .split(" is delivered to ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .expect("mailbox path")
        .to_string();
    let smtp_port = port_of(&swaks, "127.0.0.1:");
    let sent = paste(
        who,
        &format!("swaks --server 127.0.0.1:{smtp_port} --to {addr} --header 'Subject: local one'"),
    );
    assert!(sent.status.success(), "{}", text(&sent));
    sb.wait_line("the local delivery", |l| {
        l.contains(&format!("to=<{addr}>, relay=local")) && l.contains("status=sent")
    });
    let local_box = std::fs::read_to_string(&mbox).expect("the local mailbox");
    assert!(local_box.contains("Subject: local one"), "{local_box}");

    // IMAP and saslauthd (rimap, which asks IMAP) as the sandbox says they are.
    let imap_line = out
        .lines()
        .find(|l| l.trim_start().starts_with("IMAP "))
        .expect("IMAP line");
    let imap_port = port_of(imap_line, "127.0.0.1:");
    assert!(imap_line.ends_with("  dovecot"), "{imap_line}");
    let imap = command_line(&out, "curl 'imap://").expect("the curl imap:// command");
    assert!(imap.contains(&format!("@127.0.0.1:{imap_port}/")), "{imap}");
    let sasl = command_line(&out, &format!("{BIN} testsaslauthd ")).expect("testsaslauthd");
    let got = paste(who, &imap);
    assert!(
        String::from_utf8_lossy(&got.stdout).contains("Subject: sandbox walk-through"),
        "{}",
        text(&got)
    );
    let t = paste(who, &sasl);
    assert_eq!(String::from_utf8_lossy(&t.stdout), "0: OK \"Success.\"\n");
    assert_eq!(t.status.code(), Some(0));

    // Ctrl-C: everything stops, nothing is removed.
    assert!(!processes_of(&sb.dir).is_empty(), "the daemons run");
    let st = sb.interrupt();
    let out = sb.text();
    assert_eq!(st.code(), Some(0), "{out}\n{}", sb.stderr());
    assert!(
        out.contains("postern sandbox: SIGINT: stopping everything it started"),
        "{out}"
    );
    assert!(out.contains("every process it started has ended"), "{out}");
    let left = processes_of(&sb.dir);
    assert!(left.is_empty(), "left running: {left:?}");
    assert!(
        out.contains(&format!("The files stay in {}", sb.dir.display())),
        "{out}"
    );
    let mbox = std::fs::read_to_string(sb.dir.join("vmail/sandbox")).expect("the mailbox stays");
    assert!(mbox.contains("Subject: sandbox walk-through"));
    assert!(sb.dir.join("maillog").exists() && sb.dir.join("dovecot.log").exists());
    assert!(!sb.stderr().contains("panicked"), "{}", sb.stderr());
}

#[test]
fn sandbox_walk_through_as_root() {
    if !is_root() {
        eprintln!("skipped: the root run needs root (the unprivileged run covers this user)");
        return;
    }
    if !have("swaks") || !have("curl") {
        eprintln!("skipped: needs swaks and curl (.ci/run installs them)");
        return;
    }
    walk_through(As::Me);
}

#[test]
fn sandbox_walk_through_unprivileged() {
    if !have("swaks") || !have("curl") {
        eprintln!("skipped: needs swaks and curl (.ci/run installs them)");
        return;
    }
    if is_root() {
        if !have("setpriv") {
            eprintln!("skipped: needs setpriv (util-linux) to run as an unprivileged user");
            return;
        }
        let _user = TestUser::create();
        walk_through(As::Unprivileged);
    } else {
        walk_through(As::Me);
    }
}

/// `postern sandbox --help`: the usage on stdout, exit 0, nothing started or written.
#[test]
fn sandbox_help() {
    for flag in ["--help", "-h"] {
        let out = Command::new(BIN)
            .args(["sandbox", flag])
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        assert!(
            stdout.starts_with("usage: postern sandbox [--check-only] [DIR]\n"),
            "{stdout}"
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(BIN)
        .args(["sandbox", "--bogus"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("postern: sandbox: unknown option: --bogus\nusage:"),
        "{err}"
    );
}

/// `postern sandbox | head -1`: the reader goes away after the first line, and after the
/// daemons started. No panic; the sandbox stops what it started and ends by SIGPIPE, as a
/// Unix tool does.
#[test]
fn sandbox_closed_pipe() {
    for after in ["Postern sandbox in ", "Try, from another terminal:"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("sb");
        let mut child = Command::new(BIN)
            .arg("sandbox")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut seen = String::new();
        loop {
            let mut l = String::new();
            let n = stdout.read_line(&mut l).expect("read");
            assert!(n > 0, "the sandbox ended before {after:?}: {seen}");
            seen.push_str(&l);
            if l.starts_with(after) {
                break;
            }
        }
        drop(stdout); // the reader goes away, as head(1) does
        let st = wait_exit(&mut child, Duration::from_secs(60))
            .expect("the sandbox notices the closed pipe");
        let mut err = String::new();
        let _ = child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(st.signal(), Some(libc::SIGPIPE), "{st} {err}");
        let left = processes_of(&dir);
        assert!(left.is_empty(), "left running after {after:?}: {left:?}");
    }
}

/// A second sandbox in a directory where one runs is refused, and the first one is left
/// alone.
#[test]
fn sandbox_refuses_a_directory_in_use() {
    let mut sb = Sandbox::start(As::Me);
    sb.wait_line("the log header", |l| l.starts_with("Logs: "));
    let out = Command::new(BIN)
        .arg("sandbox")
        .arg(&sb.dir)
        .stdin(Stdio::null())
        .output()
        .expect("second sandbox");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("already runs in {}", sb.dir.display())),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let before = processes_of(&sb.dir).len();
    assert!(before >= 4, "{:?}", processes_of(&sb.dir));
    let st = sb.interrupt();
    assert_eq!(st.code(), Some(0), "{}", sb.text());
    assert!(processes_of(&sb.dir).is_empty());
}
