//! `postern saslauthd` and `postern testsaslauthd` as real processes, against each other
//! and against the real Cyrus `saslauthd`/`testsaslauthd` (Debian `sasl2-bin`), with system
//! users created for the test (yescrypt and SHA-512 hashes, a locked and an expired
//! account) and removed after. Needs root (CI runs as root); skips otherwise.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod common;
use common::*;

/// Test users, removed on drop.
struct Users(Vec<String>);

impl Users {
    fn add(&mut self, name: &str, password: &str, method: &str) {
        let _ = Command::new("userdel").arg(name).output();
        let st = Command::new("useradd")
            .args(["-M", name])
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {name}");
        self.0.push(name.to_string());
        let mut c = Command::new("chpasswd")
            .args(["-c", method])
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(format!("{name}:{password}\n").as_bytes())
            .expect("write");
        assert!(c.wait().expect("chpasswd").success());
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        for u in &self.0 {
            let _ = Command::new("userdel").arg(u).output();
        }
    }
}

fn start(program: &str, pre: &[&str], dir: &Path, stderr: Stdio) -> Saslauthd {
    start_mech(program, pre, "shadow", dir, stderr)
}

fn start_mech(program: &str, pre: &[&str], mech: &str, dir: &Path, stderr: Stdio) -> Saslauthd {
    let mut command = vec![program];
    command.extend_from_slice(pre);
    Saslauthd::start(&command, mech, 4, dir, stderr)
}

fn postern_test(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("testsaslauthd")
        .args(args)
        .output()
        .expect("testsaslauthd")
}

fn real_test(args: &[&str]) -> Output {
    Command::new("testsaslauthd")
        .args(args)
        .output()
        .expect("testsaslauthd")
}

fn check(out: &Output, stdout: &str, code: i32) {
    assert_eq!(String::from_utf8_lossy(&out.stdout), stdout, "{out:?}");
    assert_eq!(out.status.code(), Some(code), "{out:?}");
}

const OK: &str = "0: OK \"Success.\"\n";
const NO: &str = "0: NO \"authentication failed\"\n";

/// Send raw bytes, half-close, return the reply bytes.
fn raw(mux: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(mux).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn frame(fields: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for f in fields {
        v.extend_from_slice(&(f.len() as u16).to_be_bytes());
        v.extend_from_slice(f);
    }
    v
}

#[test]
fn saslauthd_interop() {
    if !is_root() {
        eprintln!("skipped: needs root to create users and read /etc/shadow");
        return;
    }
    let mut users = Users(Vec::new());
    users.add("pstn_sy", "Yes-Crypt1", "YESCRYPT");
    users.add("pstn_s6", "Sha-512pw", "SHA512");
    users.add("pstn_slk", "Locked-pw", "SHA512");
    assert!(
        Command::new("usermod")
            .args(["-L", "pstn_slk"])
            .status()
            .expect("usermod")
            .success()
    );
    users.add("pstn_sex", "Expired-pw", "SHA512");
    assert!(
        Command::new("usermod")
            .args(["-e", "2000-01-01", "pstn_sex"])
            .status()
            .expect("usermod")
            .success()
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    let log = tmp.path().join("saslauthd.log");
    let d = start(
        BIN,
        &["saslauthd"],
        &dir,
        Stdio::from(std::fs::File::create(&log).expect("log")),
    );
    let mux = d.mux();
    let mux_s = mux.to_str().expect("utf8");
    let mode = std::fs::metadata(&mux).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o777, "socket mode as the real saslauthd sets it");

    // Postern's testsaslauthd against Postern's saslauthd.
    check(
        &postern_test(&["-u", "pstn_sy", "-p", "Yes-Crypt1", "-f", mux_s]),
        OK,
        0,
    );
    check(
        &postern_test(&[
            "-u",
            "pstn_s6",
            "-p",
            "Sha-512pw",
            "-f",
            mux_s,
            "-s",
            "smtp",
        ]),
        OK,
        0,
    );
    check(
        &postern_test(&["-u", "pstn_s6", "-p", "wrong", "-f", mux_s]),
        NO,
        255,
    );
    check(
        &postern_test(&["-u", "pstn_sy", "-p", "Yes-Crypt1", "-f", mux_s, "-R", "3"]),
        "0: OK \"Success.\"\n1: OK \"Success.\"\n2: OK \"Success.\"\n",
        0,
    );
    let out = postern_test(&["-u", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("testsaslauthd: usage: testsaslauthd -u username -p password\n")
    );
    let out = postern_test(&["-u", "x", "-p", "y", "-f", "/nonexistent/mux"]);
    check(&out, "0: ", 255);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "connect() : No such file or directory\n"
    );

    // The real testsaslauthd against Postern's saslauthd.
    if have("testsaslauthd") {
        check(
            &real_test(&["-u", "pstn_sy", "-p", "Yes-Crypt1", "-f", mux_s]),
            OK,
            0,
        );
        check(
            &real_test(&["-u", "pstn_sy", "-p", "Yes-Crypt2", "-f", mux_s]),
            NO,
            255,
        );
        check(
            &real_test(&[
                "-u",
                "pstn_s6",
                "-p",
                "Sha-512pw",
                "-f",
                mux_s,
                "-s",
                "smtp",
            ]),
            OK,
            0,
        );
        check(
            &real_test(&["-u", "pstn_s6", "-p", "sha-512pw", "-f", mux_s]),
            NO,
            255,
        );
        check(
            &real_test(&["-u", "pstn_slk", "-p", "Locked-pw", "-f", mux_s]),
            NO,
            255,
        );
        check(
            &real_test(&["-u", "pstn_sex", "-p", "Expired-pw", "-f", mux_s]),
            NO,
            255,
        );
        check(
            &real_test(&["-u", "pstn_nosuch", "-p", "x", "-f", mux_s]),
            NO,
            255,
        );
    }

    // Replies word for word, as the real daemon's.
    let reply = |login: &[u8], pw: &[u8]| raw(&mux, &frame(&[login, pw, b"smtp", b""]));
    assert_eq!(reply(b"pstn_s6", b"Sha-512pw"), b"\x00\x02OK");
    assert_eq!(reply(b"pstn_s6", b"bad"), b"\x00\x15NO Incorrect password");
    assert_eq!(
        reply(b"pstn_nosuch", b"bad"),
        b"\x00\x13NO Invalid username"
    );
    assert_eq!(
        reply(b"pstn_slk", b"Locked-pw"),
        b"\x00\x15NO Incorrect password"
    );
    assert_eq!(
        reply(b"pstn_sex", b"Expired-pw"),
        b"\x00\x12NO Account expired"
    );
    assert_eq!(reply(b"", b"x"), b"\x00\x16NO NULL login received");
    assert_eq!(reply(b"u", b""), b"\x00\x19NO NULL password received");
    // A NUL inside the password does not cut it short.
    assert_eq!(
        reply(b"pstn_s6", b"Sha-512pw\0junk"),
        b"\x00\x15NO Incorrect password"
    );

    // Bad frames: oversized fields get `NO `, truncated ones no reply; the daemon serves on.
    let long = vec![b'x'; 257];
    assert_eq!(
        raw(&mux, &frame(&[b"u", &long, b"imap", b""])),
        b"\x00\x03NO "
    );
    assert_eq!(
        raw(&mux, &frame(&[&long, b"p", b"imap", b""])),
        b"\x00\x03NO "
    );
    assert_eq!(
        raw(&mux, &frame(&[b"u", b"p", b"imap", &long])),
        b"\x00\x03NO "
    );
    assert_eq!(raw(&mux, b"\x00\x05ab"), b"");
    assert_eq!(raw(&mux, b""), b"");
    assert_eq!(
        raw(&mux, b"\xff\xff\xff\xff garbage garbage"),
        b"\x00\x03NO "
    );
    // A client that never finishes does not hold up the others.
    let mut stuck = UnixStream::connect(&mux).expect("connect");
    stuck.write_all(b"\x00\x07pst").expect("write");
    let mut stuck_many: Vec<UnixStream> = (0..8)
        .map(|_| {
            let mut s = UnixStream::connect(&mux).expect("connect");
            let _ = s.write_all(b"\x00");
            s
        })
        .collect();
    check(
        &postern_test(&["-u", "pstn_s6", "-p", "Sha-512pw", "-f", mux_s]),
        OK,
        0,
    );
    drop(stuck);
    stuck_many.clear();

    // Concurrency: many checks at once all get their answer.
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let mux = mux.clone();
            std::thread::spawn(move || {
                let pw: &[u8] = if i % 2 == 0 { b"Sha-512pw" } else { b"nope" };
                (i, raw(&mux, &frame(&[b"pstn_s6", pw, b"smtp", b""])))
            })
        })
        .collect();
    for h in handles {
        let (i, r) = h.join().expect("thread");
        if i % 2 == 0 {
            assert_eq!(r, b"\x00\x02OK");
        } else {
            assert_eq!(r, b"\x00\x15NO Incorrect password");
        }
    }
    drop(d);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains(":auth failure: [user=pstn_s6] [service=smtp] [realm=] [mech=shadow] [reason=Incorrect password]"),
        "{text}"
    );
    assert!(
        text.contains(":password exceeded MAX_REQ_LEN: 256"),
        "{text}"
    );
    assert!(
        !text.contains("Sha-512pw") && !text.contains("Yes-Crypt"),
        "no password in the log"
    );

    // Postern's testsaslauthd against the real saslauthd -a shadow.
    if have("saslauthd") {
        let rdir = tmp.path().join("real");
        let real = start("saslauthd", &[], &rdir, Stdio::null());
        let rm = real.mux();
        let rm = rm.to_str().expect("utf8");
        check(
            &postern_test(&["-u", "pstn_sy", "-p", "Yes-Crypt1", "-f", rm]),
            OK,
            0,
        );
        check(
            &postern_test(&["-u", "pstn_s6", "-p", "Sha-512pw", "-f", rm, "-s", "smtp"]),
            OK,
            0,
        );
        check(
            &postern_test(&["-u", "pstn_s6", "-p", "wrong", "-f", rm]),
            NO,
            255,
        );
        check(
            &postern_test(&["-u", "pstn_nosuch", "-p", "x", "-f", rm]),
            NO,
            255,
        );
        // And the same wire replies from both daemons.
        assert_eq!(
            raw(&real.mux(), &frame(&[b"pstn_s6", b"bad", b"smtp", b""])),
            b"\x00\x15NO Incorrect password"
        );
    }
}

#[test]
fn saslauthd_daemon_mode_pid_file_and_cleanup() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    let st = Command::new(BIN)
        .args(["saslauthd", "-a", "shadow", "-n", "2", "-m"])
        .arg(&dir)
        .status()
        .expect("spawn");
    assert!(st.success(), "the parent returns once detached");
    let pid_file = dir.join("saslauthd.pid");
    wait_file(&pid_file);
    wait_file(&dir.join("mux"));
    let pid: i32 = wait_for(Duration::from_secs(5), "pid file filled", || {
        std::fs::read_to_string(&pid_file)
            .unwrap_or_default()
            .trim()
            .parse()
            .ok()
    });
    let meta = std::fs::metadata(&pid_file).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let out = postern_test(&[
        "-u",
        "pstn_nosuch",
        "-p",
        "x",
        "-f",
        dir.join("mux").to_str().expect("utf8"),
    ]);
    check(&out, NO, 255);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    wait_until(
        Duration::from_secs(5),
        "socket and pid file removed on SIGTERM",
        || !dir.join("mux").exists() && !pid_file.exists(),
    );
}

/// Options and start-up errors: the same stderr (pids and program name aside) and exit
/// status as the real Cyrus saslauthd 2.1.28, whose `show_usage()` exits 0 (also for a
/// bad option and a missing `-a`).
#[test]
fn saslauthd_usage_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    let dir = dir.to_str().expect("utf8");
    let cases: Vec<Vec<&str>> = vec![
        vec!["-h"],
        vec!["-z"],
        vec!["-a"],
        vec!["-d", "-m", dir],
        vec!["-d", "-a", "bogus", "-m", dir],
        vec!["-d", "-a", "shadow", "-m", "relative/dir"],
        vec!["-d", "-a", "shadow", "-m", "/nonexistent/a/b"],
        vec!["-d", "-a", "shadow", "-a", "pam", "-m", dir],
    ];
    // `saslauthd[1234] :` and the version lines (the mechanisms differ) made equal.
    let norm = |b: &[u8]| -> (String, String) {
        let t = String::from_utf8_lossy(b).replace("/usr/sbin/saslauthd: ", "saslauthd: ");
        let mut lines = Vec::new();
        let mut version = String::new();
        for l in t.lines() {
            let l = match (l.strip_prefix("saslauthd["), l.find("] :")) {
                (Some(_), Some(i)) => format!("saslauthd[PID] :{}", &l[i + 3..]),
                _ => l.to_string(),
            };
            if l.starts_with("saslauthd 2.1.28") || l.starts_with("authentication mechanisms:") {
                version.push_str(&l);
                version.push('\n');
            } else {
                lines.push(l);
            }
        }
        (lines.join("\n"), version)
    };
    for args in &cases {
        let ours = Command::new(BIN)
            .arg("saslauthd")
            .args(args)
            .output()
            .expect("run");
        let (text, version) = norm(&ours.stderr);
        if args.first() == Some(&"-h") || args.first() == Some(&"-z") {
            assert!(text.contains("usage: saslauthd [options]"), "{text}");
            assert!(
                version.starts_with("saslauthd 2.1.28 (Postern "),
                "{version}"
            );
        }
        if Path::new("/usr/sbin/saslauthd").exists() {
            let real = Command::new("/usr/sbin/saslauthd")
                .args(args)
                .output()
                .expect("run");
            assert_eq!(
                (ours.status.code(), text),
                (real.status.code(), norm(&real.stderr).0),
                "saslauthd {args:?}"
            );
        }
    }
    let v = Command::new(BIN)
        .args(["saslauthd", "-v"])
        .output()
        .expect("run");
    assert_eq!(v.status.code(), Some(0));
    assert!(
        v.stdout.is_empty(),
        "the version goes to stderr, as Cyrus's"
    );
    assert_eq!(
        String::from_utf8_lossy(&v.stderr),
        format!(
            "saslauthd 2.1.28 (Postern {})\nauthentication mechanisms: getpwent pam rimap shadow\n\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// The pid file lock: a second daemon on the same directory is refused with Cyrus's words
/// and status 2, whichever of Postern and Cyrus runs first; a daemon killed outright
/// leaves a pid file the next start takes over.
/// Whether some process holds a write lock on `path` (F_OFD_GETLK sees both Cyrus's
/// process-associated lock and Postern's open-file-description lock).
fn pid_file_locked(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    else {
        return false;
    };
    let mut lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: F_OFD_GETLK with a valid, initialised flock on a descriptor we own.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    rc == 0 && lock.l_type != libc::F_UNLCK as libc::c_short
}

#[test]
fn saslauthd_second_start_and_stale_pid_file() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    let start = |program: &str| {
        let mut c = Command::new(program);
        if program == BIN {
            c.arg("saslauthd");
        }
        c.args(["-a", "shadow", "-n", "2", "-m"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("saslauthd")
    };
    let pid_of = || -> i32 {
        std::fs::read_to_string(dir.join("saslauthd.pid"))
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let stop = |pid: i32| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        wait_until(
            Duration::from_secs(10),
            format_args!("{pid} stopped"),
            || !alive(pid),
        );
    };
    let refused = |o: &Output| {
        let e = String::from_utf8_lossy(&o.stderr);
        let lines: Vec<&str> = e
            .lines()
            .map(|l| l.split_once(" :").map_or(l, |x| x.1))
            .collect();
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert_eq!(
            lines,
            vec![
                "Cannot start saslauthd",
                "Another instance of saslauthd is currently running"
            ]
        );
    };
    let first = start(BIN);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // The pid is in the file when the start returns.
    let pid = pid_of();
    assert!(pid > 0);
    refused(&start(BIN));
    assert_eq!(pid_of(), pid, "the running daemon's pid file is kept");
    check(
        &postern_test(&[
            "-u",
            "pstn_nosuch",
            "-p",
            "x",
            "-f",
            dir.join("mux").to_str().expect("utf8"),
        ]),
        NO,
        255,
    );
    if Path::new("/usr/sbin/saslauthd").exists() {
        // The real one refuses to start beside Postern's, and the other way round.
        refused(&start("/usr/sbin/saslauthd"));
        assert_eq!(pid_of(), pid);
        stop(pid);
        let real = start("/usr/sbin/saslauthd");
        assert!(real.status.success());
        wait_until(Duration::from_secs(10), "the real pid file", || {
            pid_of() != 0 && pid_of() != pid
        });
        let real_pid = pid_of();
        refused(&start(BIN));
        stop(real_pid);
        // The real master leaves its workers to end on the signal it sends its group.
        std::thread::sleep(Duration::from_millis(200));
    } else {
        stop(pid);
    }
    // Killed outright: the pid file stays, unlocked; the next start takes over.
    let o = start(BIN);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pid = pid_of();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    wait_until(
        Duration::from_secs(10),
        format_args!("{pid} killed"),
        || !alive(pid),
    );
    assert!(dir.join("saslauthd.pid").exists());
    // The leader shows Z while the killed process's other threads may still be exiting
    // with the pid file (and its lock) open: wait until the lock is gone, as a new start
    // needs, and not only the leader.
    wait_until(Duration::from_secs(10), "pid file unlocked", || {
        !pid_file_locked(&dir.join("saslauthd.pid"))
    });
    let o = start(BIN);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let new_pid = pid_of();
    assert!(new_pid > 0 && new_pid != pid);
    check(
        &postern_test(&[
            "-u",
            "pstn_nosuch",
            "-p",
            "x",
            "-f",
            dir.join("mux").to_str().expect("utf8"),
        ]),
        NO,
        255,
    );
    stop(new_pid);
    assert!(!dir.join("saslauthd.pid").exists() && !dir.join("mux").exists());
}

/// `-a pam` through the system's libpam (loaded at run time by soname): a PAM service of the
/// test's own with pam_unix, checked by Postern's saslauthd and, where installed, by the
/// real one, giving the same answers.
#[test]
fn saslauthd_pam_backend() {
    if !is_root() {
        eprintln!("skipped: needs root to create a user and a PAM service");
        return;
    }
    let service = format!("postern-pamtest-{}", std::process::id());
    let pam_file = PathBuf::from("/etc/pam.d").join(&service);
    std::fs::write(
        &pam_file,
        "auth required pam_unix.so\naccount required pam_unix.so\n",
    )
    .expect("write PAM service");
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(pam_file);
    let mut users = Users(Vec::new());
    users.add("pstn_pam", "Pam-pass1", "SHA512");

    let mut programs = vec![BIN.to_string()];
    if have("saslauthd") {
        programs.push("saslauthd".into());
    }
    for program in programs {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("run");
        let pre: &[&str] = if program == BIN { &["saslauthd"] } else { &[] };
        let d = start_mech(&program, pre, "pam", &dir, Stdio::null());
        let mux = d.mux();
        let mux_s = mux.to_str().expect("utf8");
        check(
            &postern_test(&[
                "-u",
                "pstn_pam",
                "-p",
                "Pam-pass1",
                "-f",
                mux_s,
                "-s",
                &service,
            ]),
            OK,
            0,
        );
        check(
            &postern_test(&[
                "-u",
                "pstn_pam",
                "-p",
                "Pam-pass2",
                "-f",
                mux_s,
                "-s",
                &service,
            ]),
            NO,
            255,
        );
        check(
            &postern_test(&[
                "-u",
                "pstn_nobody_x",
                "-p",
                "x",
                "-f",
                mux_s,
                "-s",
                &service,
            ]),
            NO,
            255,
        );
    }
}

/// A private instance of the real Dovecot (Debian dovecot-imapd) serving IMAP on a test
/// port, stopped on drop.
fn real_imap(dir: &Path, passwd: &str) -> Dovecot {
    let port = free_port();
    let d = dir.display();
    std::fs::write(dir.join("passwd"), passwd).expect("passwd");
    std::fs::create_dir_all(dir.join("home")).expect("home");
    let nobody = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("nobody");
    let _ = nix::unistd::chown(&dir.join("home"), Some(nobody.uid), Some(nobody.gid));
    let conf = dir.join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            "protocols = imap\nbase_dir = {d}/base\nstate_dir = {d}/state\nlisten = 127.0.0.1\n\
             log_path = {d}/dovecot.log\nssl = no\ndisable_plaintext_auth = no\n\
             auth_failure_delay = 0\nlogin_trusted_networks = 127.0.0.0/8\nmail_location = mbox:~/mail:INBOX=~/inbox\n\
             passdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid={} gid={} home={d}/home/%u\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    port = {port}\n  }}\n  \
             inet_listener imaps {{\n    port = 0\n  }}\n}}\n",
            nobody.uid, nobody.gid
        ),
    )
    .expect("conf");
    Dovecot::start(Which::Real, &conf, port, &dir.join("dovecot.log"))
}

/// The reply text of one raw request (waiting as long as the mechanism may: 30 s per
/// network step).
fn ask(mux: &Path, user: &[u8], pass: &[u8]) -> String {
    let mut s = UnixStream::connect(mux).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    s.write_all(&frame(&[user, pass, b"smtp", b""]))
        .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(out.get(2..).unwrap_or_default()).into_owned()
}

/// `-a rimap`: the password is checked by an IMAP LOGIN at the real Dovecot's imap (Debian
/// dovecot-imapd). Postern's daemon gives the replies the real Cyrus daemon gives with the
/// same server, and Dovecot's log shows the logins really happened.
#[test]
fn saslauthd_rimap_against_real_dovecot_imap() {
    if !is_root()
        || !Path::new("/usr/sbin/dovecot").exists()
        || !Path::new("/usr/lib/dovecot/imap").exists()
    {
        eprintln!("skipped: needs root and the real Dovecot with imap (dovecot-imapd)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let imap = real_imap(
        tmp.path(),
        "alice:{PLAIN}secret::::::\nbob:{PLAIN}pa\"ss\\word::::::\n",
    );
    let option = format!("127.0.0.1/{}", imap.port);
    let closed = format!("127.0.0.1/{}", free_port());
    let log_file = tmp.path().join("postern-saslauthd.log");
    let down_log = tmp.path().join("postern-saslauthd-down.log");
    let ours = start_mech(
        BIN,
        &["saslauthd", "-O", &option],
        "rimap",
        &tmp.path().join("ours"),
        Stdio::from(std::fs::File::create(&log_file).expect("log")),
    );
    let ours_down = start_mech(
        BIN,
        &["saslauthd", "-O", &closed],
        "rimap",
        &tmp.path().join("ours-down"),
        Stdio::from(std::fs::File::create(&down_log).expect("log")),
    );
    let cases: &[(&[u8], &[u8], &str)] = &[
        (b"alice", b"secret", "OK remote authentication successful"),
        (
            b"alice",
            b"wrong",
            "NO remote server rejected your credentials",
        ),
        (
            b"pstn-nobody",
            b"x",
            "NO remote server rejected your credentials",
        ),
        (
            b"bob",
            b"pa\"ss\\word",
            "OK remote authentication successful",
        ),
    ];
    for (u, p, want) in cases {
        assert_eq!(
            ask(&ours.mux(), u, p),
            *want,
            "{}",
            String::from_utf8_lossy(u)
        );
    }
    assert_eq!(
        ask(&ours_down.mux(), b"alice", b"secret"),
        "NO [ALERT] Couldn't contact remote authentication server"
    );
    // A line break cannot travel in a quoted string: refused, nothing sent.
    assert_eq!(
        ask(&ours.mux(), b"alice", b"secret\r\nsaslauthd LOGOUT"),
        "NO Incorrect password"
    );
    let mux = ours.mux();
    let mux = mux.to_str().expect("utf8");
    check(
        &postern_test(&["-u", "alice", "-p", "secret", "-f", mux]),
        OK,
        0,
    );
    check(
        &postern_test(&["-u", "alice", "-p", "nope", "-f", mux]),
        NO,
        255,
    );
    let dlog = std::fs::read_to_string(&imap.log).unwrap_or_default();
    assert!(
        dlog.contains("imap-login: Info: Login: user=<alice>, method=PLAIN"),
        "{dlog}"
    );
    drop(ours);
    drop(ours_down);
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    let down = std::fs::read_to_string(&down_log).unwrap_or_default();
    let port = closed.rsplit('/').next().unwrap_or_default();
    assert!(
        down.contains(&format!(
            ":auth_rimap: connect 127.0.0.1[127.0.0.1]/{port}: Connection refused\n"
        )),
        "{down}"
    );
    assert!(
        down.contains(&format!(
            ":auth_rimap: couldn't connect to 127.0.0.1/{port}\n"
        )),
        "{down}"
    );
    assert!(
        log.contains(":auth failure: [user=alice] [service=smtp] [realm=] [mech=rimap] [reason=remote server rejected your credentials]\n"),
        "{log}"
    );
    assert!(!log.contains("secret") && !log.contains("wrong"), "{log}");

    // The real Cyrus daemon, same server, same answers.
    if have("saslauthd") && Path::new("/usr/sbin/saslauthd").exists() {
        let real = start_mech(
            "/usr/sbin/saslauthd",
            &["-O", &option],
            "rimap",
            &tmp.path().join("real"),
            Stdio::null(),
        );
        let real_down = start_mech(
            "/usr/sbin/saslauthd",
            &["-O", &closed],
            "rimap",
            &tmp.path().join("real-down"),
            Stdio::null(),
        );
        for (u, p, want) in cases {
            assert_eq!(
                ask(&real.mux(), u, p),
                *want,
                "real, {}",
                String::from_utf8_lossy(u)
            );
        }
        assert_eq!(
            ask(&real_down.mux(), b"alice", b"secret"),
            "NO [ALERT] Couldn't contact remote authentication server"
        );
    }
}

/// `-a rimap` without `-O`, or with a host that does not resolve: the daemon does not start.
#[test]
fn saslauthd_rimap_start_up_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (extra, first) in [
        (vec![], ":rimap_init: no hostname specified\n"),
        (
            vec!["-O", "postern-no-such-host.invalid"],
            ":auth_rimap_init: getaddrinfo postern-no-such-host.invalid/imap: ",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["saslauthd", "-d", "-a", "rimap", "-m"])
            .arg(tmp.path())
            .args(&extra)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(first), "{err}");
        assert!(
            err.contains(":failed to initialize mechanism rimap\n"),
            "{err}"
        );
        assert!(!tmp.path().join("mux").exists());
    }
}
