//! Shared helpers for integration tests: run the built `postern` binary the way an admin
//! runs the command it replaces.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `postern CMD ARGS…` from the repository root (fixtures use relative paths).
pub fn postern(cmd: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_postern"))
        .arg(cmd)
        .args(args)
        .current_dir(repo_root())
        .env("LANG", "C")
        .env_remove("MAIL_CONFIG")
        .output()
        .expect("run postern")
}

/// Distinct stderr lines, sorted: the real postconf prints some warnings several times
/// and in hash-table order, so tests compare the set (see compat-fixtures/README.md).
pub fn line_set(s: &[u8]) -> BTreeSet<String> {
    // Fixtures made by running /usr/sbin/postconf carry that path as the program name.
    String::from_utf8_lossy(s)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix("/usr/sbin/").unwrap_or(l).to_string())
        .collect()
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

pub fn read_rc(p: &Path) -> i32 {
    String::from_utf8_lossy(&read(p))
        .trim()
        .parse()
        .expect("rc file")
}

/// Fixture directories under `compat-fixtures/<kind>/`, sorted.
pub fn fixture_dirs(kind: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo_root().join("compat-fixtures").join(kind))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A mail system started as admins start it, `postern postfix -c DIR start` (the master in
/// the background; the command returns once it serves), on a loopback port picked by the
/// test, with its own config directory, queue and data directories and `maillog_file` at
/// [`Instance::log_path`]. Stopped with `postfix stop` on drop.
pub struct Instance {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The master's PID while it runs (from `postfix status`' pid file).
    pub master_pid: Option<i32>,
    /// Extra environment for the master (e.g. `POSTERN_DNS_SERVER`), kept for restarts.
    pub env: Vec<(String, String)>,
}

/// The user services run as in tests: when root, a system user created on demand
/// (idempotent); otherwise the invoking user.
pub fn test_mail_owner() -> String {
    if nix::unistd::Uid::effective().is_root() {
        let name = "postern-test";
        if nix::unistd::User::from_name(name).ok().flatten().is_none() {
            let _ = std::process::Command::new("useradd")
                .args(["-r", "-M", "-s", "/usr/sbin/nologin", name])
                .status();
        }
        name.to_string()
    } else {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| "nobody".into())
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Instance {
    /// Write main.cf (`main_extra` appended to a loopback base) and master.cf with one smtpd
    /// listener (`master_extra` appended, `{port}` replaced), then start the master.
    pub fn start(main_extra: &str, master_extra: &str) -> Instance {
        Self::start_with(main_extra, master_extra, |_| {})
    }

    /// As [`Instance::start`], running `setup` on the instance directory before the master
    /// starts (to write `sasl/smtpd.conf`, tables, certificates).
    pub fn start_with(main_extra: &str, master_extra: &str, setup: impl FnOnce(&Path)) -> Instance {
        Self::start_env(main_extra, master_extra, Vec::new(), setup)
    }

    /// As [`Instance::start_with`], with extra environment variables for the master
    /// process (and its restarts), such as `POSTERN_DNS_SERVER` for a test DNS server.
    pub fn start_env(
        main_extra: &str,
        master_extra: &str,
        env: Vec<(String, String)>,
        setup: impl FnOnce(&Path),
    ) -> Instance {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path();
        for sub in ["etc", "spool", "data", "sasl"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let owner = test_mail_owner();
        let main = format!(
            "queue_directory = {d}/spool\ndata_directory = {d}/data\nmail_owner = {owner}\nmaillog_file = {d}/log\nmaillog_file_prefixes = {d}\ncyrus_sasl_config_path = {d}/sasl\ninet_interfaces = loopback-only\n{main_extra}",
            d = d.display()
        );
        std::fs::write(d.join("etc/main.cf"), main).unwrap();
        let master = format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n{}",
            master_extra.replace("{port}", &port.to_string())
        );
        std::fs::write(d.join("etc/master.cf"), master).unwrap();
        setup(d);
        if nix::unistd::Uid::effective().is_root() {
            let _ = std::process::Command::new("chown")
                .args(["-R", &owner, &d.display().to_string()])
                .status();
        }
        let mut inst = Instance {
            dir,
            port,
            master_pid: None,
            env,
        };
        inst.spawn();
        inst
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The log once it contains `needle` (log lines are written asynchronously), or the log
    /// as it is after 10 s.
    pub fn wait_log(&self, needle: &str) -> String {
        for _ in 0..400 {
            let l = self.log();
            if l.contains(needle) {
                return l;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        self.log()
    }

    /// Run `postern postfix -c DIR ARGS…` with the instance's environment.
    pub fn postfix(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
            .args(["postfix", "-c"])
            .arg(self.config_dir())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("MAIL_CONFIG")
            .output()
            .expect("run postfix")
    }

    /// Start (or restart) the mail system with `postfix start`, which returns once the
    /// master serves; the port then accepts connections.
    pub fn spawn(&mut self) {
        let out = self.postfix(&["start"]);
        assert!(
            out.status.success(),
            "postfix start failed ({:?}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        let pid = std::fs::read_to_string(self.dir.path().join("spool/pid/master.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        assert!(pid.is_some(), "no master.pid after postfix start");
        self.master_pid = pid;
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
            "postfix start returned but nothing listens on {}: {}",
            self.port,
            self.log()
        );
    }

    /// SIGKILL the master (crash test).
    pub fn kill9(&mut self) {
        if let Some(pid) = self.master_pid.take() {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            // Gone once its pid lock is free (`postfix status` fails).
            for _ in 0..250 {
                if !self.postfix(&["status"]).status.success() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.master_pid.take().is_some() {
            // `postfix stop` waits for the master, then forces it.
            let _ = self.postfix(&["stop"]);
        }
    }
}

/// A raw SMTP client for transcript tests: send lines, read whole (multi-line) replies.
pub struct Smtp {
    pub r: std::io::BufReader<std::net::TcpStream>,
    pub w: std::net::TcpStream,
}

impl Smtp {
    pub fn connect(port: u16) -> Smtp {
        Self::connect_from("127.0.0.1", port)
    }
    /// Connect from a given loopback source address (127.0.0.2 plays a foreign client).
    pub fn connect_from(src: &str, port: u16) -> Smtp {
        let sock = socket2_bind(src, port);
        sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        Smtp {
            r: std::io::BufReader::new(sock.try_clone().unwrap()),
            w: sock,
        }
    }
    pub fn send(&mut self, data: &str) {
        use std::io::Write;
        self.w.write_all(data.as_bytes()).unwrap();
    }
    pub fn cmd(&mut self, line: &str) -> Vec<String> {
        self.send(&format!("{line}\r\n"));
        self.reply()
    }
    /// One reply, all its lines, without CRLF.
    pub fn reply(&mut self) -> Vec<String> {
        use std::io::BufRead;
        let mut out = Vec::new();
        loop {
            let mut l = String::new();
            if self.r.read_line(&mut l).unwrap_or(0) == 0 {
                out.push("<EOF>".to_string());
                return out;
            }
            let l = l.trim_end_matches(['\r', '\n']).to_string();
            let more = l.as_bytes().get(3) == Some(&b'-');
            out.push(l);
            if !more {
                return out;
            }
        }
    }
    /// The last line of the next reply.
    pub fn line(&mut self) -> String {
        self.reply().pop().unwrap_or_default()
    }
}

fn socket2_bind(src: &str, port: u16) -> std::net::TcpStream {
    // std has no bind-before-connect: use libc through nix.
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    let local: std::net::SocketAddrV4 = format!("{src}:0").parse().unwrap();
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(local),
    )
    .unwrap();
    let remote: std::net::SocketAddrV4 = format!("127.0.0.1:{port}").parse().unwrap();
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(remote),
    )
    .unwrap();
    // SAFETY: we own `fd` and hand it to TcpStream, which closes it.
    unsafe { std::net::TcpStream::from_raw_fd(fd.into_raw_fd()) }
}

/// A system user with a known password (root only), removed on drop. `method` is
/// chpasswd's `-c` value (`YESCRYPT`, `SHA512`).
pub struct TestUser(pub String);

impl TestUser {
    pub fn create(name: &str, password: &str, method: &str) -> Option<TestUser> {
        use std::io::Write;
        if !nix::unistd::Uid::effective().is_root() {
            return None;
        }
        let _ = std::process::Command::new("userdel").arg(name).output();
        let ok = std::process::Command::new("useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return None;
        }
        let mut c = std::process::Command::new("chpasswd")
            .args(["-c", method])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        c.stdin
            .take()?
            .write_all(format!("{name}:{password}\n").as_bytes())
            .ok()?;
        c.wait().ok()?.success().then(|| TestUser(name.to_string()))
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel").arg(&self.0).output();
    }
}

static MAIL_USERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A local system user with a home directory, created once and kept (idempotent), for tests
/// that deliver mail to it; `None` when not root.
#[allow(dead_code)]
pub fn mail_user(name: &str) -> Option<PathBuf> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let _g = MAIL_USERS.lock().unwrap_or_else(|p| p.into_inner());
    if nix::unistd::User::from_name(name).ok().flatten().is_none() {
        let _ = Command::new("useradd")
            .args(["-m", "-s", "/usr/sbin/nologin", name])
            .status();
    }
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| u.dir)
}

/// Send one message over SMTP (EHLO, MAIL, RCPT…, DATA) and return its queue ID from the
/// `250 2.0.0 Ok: queued as ID` reply; `body` has LF line ends.
#[allow(dead_code)]
pub fn smtp_send(port: u16, from: &str, to: &[&str], body: &str) -> String {
    let mut s = Smtp::connect(port);
    s.line();
    let ehlo = s.cmd("EHLO client.example");
    assert!(ehlo.concat().starts_with("250"), "{ehlo:?}");
    let mail = s.cmd(&format!("MAIL FROM:<{from}>"));
    assert!(mail.concat().starts_with("250"), "{mail:?}");
    for t in to {
        let r = s.cmd(&format!("RCPT TO:<{t}>"));
        assert!(r.concat().starts_with("250"), "RCPT {t}: {r:?}");
    }
    assert!(s.cmd("DATA").concat().starts_with("354"));
    s.send(&body.replace('\n', "\r\n"));
    let r = s.cmd(".").concat();
    assert!(r.starts_with("250"), "{r}");
    s.cmd("QUIT");
    r.rsplit(' ').next().unwrap_or_default().to_string()
}

/// A configuration the test (the admin) prepares before starting the mail system with
/// `postern postfix -c DIR/etc start` ([`Daemon::start`]; stopped with `postfix stop` on
/// drop). Unlike [`Instance`], which starts at once and gives the whole directory to
/// `mail_owner`, `etc/` stays root's as /etc/postfix is, so that tables edited and built
/// by root ([`Daemon::admin`]: `postmap`, `newaliases`, `postfix reload`) are what the
/// daemons, running as `mail_owner`, must read. The directory holds `etc/`, `spool/`,
/// `data/`, `mail/` (1777, the mail spool) and `maillog` (`maillog_file`).
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub port: u16,
    started: bool,
}

impl Daemon {
    /// Write the configuration: `main_extra` after a loopback base (queue and data
    /// directories, `mail_owner`, `maillog_file`), master.cf with one smtpd listener on a
    /// free port and `master_extra` (`{port}` replaced). Not started yet.
    pub fn new(main_extra: &str, master_extra: &str) -> Daemon {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["etc", "spool", "data", "mail"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::set_permissions(d.join("mail"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let port = free_port();
        let owner = test_mail_owner();
        let main = format!(
            "queue_directory = {d}/spool\ndata_directory = {d}/data\nmail_owner = {owner}\n\
             maillog_file = {d}/maillog\nmaillog_file_prefixes = {d}\n\
             inet_interfaces = 127.0.0.1\n{main_extra}",
            d = d.display()
        );
        std::fs::write(d.join("etc/main.cf"), main).unwrap();
        let master = format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n{}",
            master_extra.replace("{port}", &port.to_string())
        );
        std::fs::write(d.join("etc/master.cf"), master).unwrap();
        if nix::unistd::Uid::effective().is_root() {
            for sub in ["spool", "data"] {
                let _ = Command::new("chown")
                    .args(["-R", &owner])
                    .arg(d.join(sub))
                    .status();
            }
        }
        Daemon {
            dir,
            port,
            started: false,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// `postern postfix -c DIR/etc ARGS…`.
    pub fn postfix(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_postern"))
            .args(["postfix", "-c"])
            .arg(self.config_dir())
            .args(args)
            .env("LANG", "C")
            .env_remove("MAIL_CONFIG")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run postern postfix")
    }

    /// `postfix start`; panics with the log when it fails.
    pub fn start(&mut self) {
        let out = self.postfix(&["start"]);
        assert!(
            out.status.success(),
            "postfix start: {out:?}\n{}",
            self.log()
        );
        self.started = true;
    }

    /// `postfix reload`.
    pub fn reload(&self) {
        let out = self.postfix(&["reload"]);
        assert!(out.status.success(), "postfix reload: {out:?}");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// The log once it contains `needle`, or as it is after 20 s.
    pub fn wait_log(&self, needle: &str) -> String {
        for _ in 0..800 {
            let l = self.log();
            if l.contains(needle) {
                return l;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        self.log()
    }

    /// A directory with the admin commands (`postmap`, `postalias`, `newaliases`,
    /// `sendmail`, `postfix`, `mailq`) as links to the built `postern`, to put first in
    /// `PATH`.
    pub fn bin_dir(&self) -> PathBuf {
        let bin = self.dir.path().join("bin");
        if !bin.exists() {
            std::fs::create_dir_all(&bin).unwrap();
            for name in [
                "postmap",
                "postalias",
                "newaliases",
                "sendmail",
                "postfix",
                "mailq",
            ] {
                std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_postern"), bin.join(name)).unwrap();
            }
        }
        bin
    }

    /// Run `sh -c SCRIPT` in `etc/` as the admin would, with Postern's commands first in
    /// `PATH` and `MAIL_CONFIG` set to this configuration.
    pub fn admin(&self, script: &str) -> Output {
        let path = format!(
            "{}:{}",
            self.bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("sh")
            .args(["-c", script])
            .current_dir(self.config_dir())
            .env("PATH", path)
            .env("MAIL_CONFIG", self.config_dir())
            .env("LANG", "C")
            .output()
            .expect("run sh")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.started {
            let _ = self.postfix(&["stop"]);
        }
    }
}

/// Run `cmd` as `cmd | head -1` runs it: standard output on a pipe (made small, 4 KB, so
/// that the command is still writing), one line read, then the reading end closed. Returns
/// the line, the exit status and standard error.
pub fn head_1(cmd: &mut Command) -> (String, std::process::ExitStatus, String) {
    use std::io::{BufRead, Read};
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    // SAFETY: fcntl on a pipe descriptor we own.
    unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&w),
            libc::F_SETPIPE_SZ,
            4096,
        )
    };
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(w))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // `cmd` holds the parent's copy of the write end until dropped by the caller; the
    // Stdio moved into the child's setup is closed in this process after spawn.
    let mut reader = std::io::BufReader::new(std::fs::File::from(r));
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    drop(reader);
    let mut err = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    let st = child.wait().expect("wait");
    (line, st, err)
}

pub mod replay;
