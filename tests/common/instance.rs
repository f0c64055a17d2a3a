//! Postern mail systems started as admins start them: [`Instance`] (`postfix start` on a
//! fresh directory given to `mail_owner`, one smtpd on a free port) and [`Daemon`] (a
//! configuration the test prepares as root before `postfix start`); both stopped with
//! `postfix stop` on drop. [`smtp_send`] hands one message to either.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::{BIN, Smtp, free_port, poll, test_mail_owner};

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
            let _ = Command::new("chown")
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
        poll(Duration::from_secs(10), || {
            Some(self.log()).filter(|l| l.contains(needle))
        })
        .unwrap_or_else(|| self.log())
    }

    /// The log once `pred` holds for it, or as it is after `timeout` (the caller's
    /// assertion then shows it).
    pub fn wait_log_until(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        poll(timeout, || Some(self.log()).filter(|l| pred(l))).unwrap_or_else(|| self.log())
    }

    /// Run `postern postfix -c DIR ARGS…` with the instance's environment.
    pub fn postfix(&self, args: &[&str]) -> Output {
        Command::new(BIN)
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
            let _ = poll(Duration::from_secs(5), || {
                (!self.postfix(&["status"]).status.success()).then_some(())
            });
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

/// Send one message over SMTP (EHLO, MAIL, RCPT…, DATA) and return its queue ID from the
/// `250 2.0.0 Ok: queued as ID` reply; `body` has LF line ends.
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
        Command::new(BIN)
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
        poll(Duration::from_secs(20), || {
            Some(self.log()).filter(|l| l.contains(needle))
        })
        .unwrap_or_else(|| self.log())
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
                std::os::unix::fs::symlink(BIN, bin.join(name)).unwrap();
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

/// The main.cf of a mail system that delivers: `mail.example.test` (also `localhost`) is
/// local with every user a recipient and no aliases, mboxes under the instance's `mail/`,
/// loopback clients trusted, outbound connections given up after 5 s; `extra` appended.
pub fn delivering_main_cf(extra: &str) -> String {
    format!(
        "compatibility_level = 3.7\nmyhostname = mail.example.test\nmydomain = example.test\nmyorigin = $myhostname\n\
         mydestination = $myhostname, localhost\nmynetworks = 127.0.0.0/8\n\
         local_recipient_maps =\nalias_maps =\n\
         mail_spool_directory = $queue_directory/../mail\nsmtp_connect_timeout = 5s\n{extra}"
    )
}
