//! Programs other than the Postfix-style mail system, started as their admins start them
//! and stopped on drop: saslauthd (Cyrus's from Debian's sasl2-bin, or Postern's) in the
//! foreground in its own process group.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{wait_exit, wait_file};

/// End a daemon started in its own process group (`process_group(0)`): SIGTERM to the group,
/// SIGKILL after 5 s (seen once: the real `saslauthd -d` under load still running after
/// SIGTERM), and the leader reaped; a test never hangs in its cleanup.
pub fn stop_group(child: &mut Child) {
    use nix::sys::signal::{Signal, killpg};
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = killpg(group, Signal::SIGTERM);
    // Workers the leader left behind (or the leader itself) get SIGKILL.
    let exited = wait_exit(child, Duration::from_secs(5)).is_some();
    let _ = killpg(group, Signal::SIGKILL);
    if !exited {
        let _ = child.wait();
    }
}

/// A saslauthd in the foreground (`-d`) in its own process group (the real one's master
/// signals its whole group on exit), listening on `DIR/mux`; stopped with [`stop_group`]
/// on drop.
pub struct Saslauthd {
    pub child: Child,
    pub dir: PathBuf,
}

impl Saslauthd {
    /// `PROGRAM… -a MECH -d -n WORKERS -m DIR` (`program` is the command and its first
    /// arguments: `["/usr/sbin/saslauthd"]` or `[BIN, "saslauthd"]`), standard output to
    /// /dev/null and standard error to `stderr`; returns once `DIR/mux` exists.
    pub fn start(
        program: &[&str],
        mech: &str,
        workers: u32,
        dir: &Path,
        stderr: Stdio,
    ) -> Saslauthd {
        use std::os::unix::process::CommandExt;
        let child = Command::new(program[0])
            .args(&program[1..])
            .process_group(0)
            .args(["-a", mech, "-d", "-n", &workers.to_string(), "-m"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program:?}: {e}"));
        let d = Saslauthd {
            child,
            dir: dir.to_path_buf(),
        };
        wait_file(&d.mux());
        d
    }

    /// `-a shadow` with two workers, standard error discarded.
    pub fn shadow(program: &[&str], dir: &Path) -> Saslauthd {
        Self::start(program, "shadow", 2, dir, Stdio::null())
    }

    /// The socket clients connect to.
    pub fn mux(&self) -> PathBuf {
        self.dir.join("mux")
    }
}

impl Drop for Saslauthd {
    fn drop(&mut self) {
        stop_group(&mut self.child);
    }
}

/// The real Dovecot's master binary (Debian's dovecot-core).
pub const REAL_DOVECOT: &str = "/usr/sbin/dovecot";

/// Which implementation of a program a test runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Which {
    /// The built `postern`, as `postern dovecot`.
    Postern,
    /// The real program (Dovecot 2.3.19 from Debian).
    Real,
}

/// A Dovecot master, Postern's or the real one, on a dovecot.conf the test wrote.
/// [`Dovecot::start`] starts it as admins do (`dovecot -c FILE`: the master detaches and
/// the command returns once it serves) and drop runs `dovecot -c FILE stop`;
/// [`Dovecot::foreground`] runs Postern's with `-F` as a child killed on drop. Either way
/// drop waits until the port is closed, so that the next test may have it.
pub struct Dovecot {
    pub which: Which,
    pub conf: PathBuf,
    /// The listener the test talks to (0: none to wait for).
    pub port: u16,
    /// The `log_path` of the configuration.
    pub log: PathBuf,
    child: Option<Child>,
}

impl Dovecot {
    /// The real Dovecot can run here: root, `/usr/sbin/dovecot` and the protocol binary
    /// (`/usr/lib/dovecot/pop3`, `…/imap`) of Debian's packages. Says `skipped: …` when not.
    pub fn real_available(protocol: &str) -> bool {
        let ok = super::is_root()
            && Path::new(REAL_DOVECOT).exists()
            && Path::new(&format!("/usr/lib/dovecot/{protocol}")).exists();
        if !ok {
            eprintln!("skipped: needs root and Debian's dovecot-{protocol}d");
        }
        ok
    }

    /// `dovecot -c CONF` ([`Which`] says whose), asserted to succeed, then waits until
    /// `port` accepts connections.
    pub fn start(which: Which, conf: &Path, port: u16, log: &Path) -> Dovecot {
        // The real master keeps the standard output and error it inherited when it
        // detaches: its messages go to the test's own (reading them to their end would
        // wait for the master to exit).
        let mut c = Self::command(which);
        c.arg("-c").arg(conf).stdin(Stdio::null());
        let out = match which {
            Which::Postern => c.output().expect("run postern dovecot"),
            Which::Real => Output {
                status: c.status().expect("run dovecot"),
                stdout: Vec::new(),
                stderr: Vec::new(),
            },
        };
        assert!(
            out.status.success(),
            "{which:?} dovecot -c {} failed ({}): {}{}",
            conf.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let d = Dovecot {
            which,
            conf: conf.to_path_buf(),
            port,
            log: log.to_path_buf(),
            child: None,
        };
        if port != 0 {
            super::wait_port(port);
        }
        d
    }

    /// `postern dovecot -c CONF -F` as a child (the foreground mode of init systems),
    /// killed on drop; returns once `port` accepts connections.
    pub fn foreground(conf: &Path, port: u16, log: &Path) -> Dovecot {
        let child = Self::command(Which::Postern)
            .arg("-c")
            .arg(conf)
            .arg("-F")
            .spawn()
            .expect("postern dovecot -F");
        let d = Dovecot {
            which: Which::Postern,
            conf: conf.to_path_buf(),
            port,
            log: log.to_path_buf(),
            child: Some(child),
        };
        if port != 0 {
            super::wait_port(port);
        }
        d
    }

    /// `postern dovecot` or the real `dovecot`, without arguments yet.
    pub fn command(which: Which) -> Command {
        match which {
            Which::Postern => {
                let mut c = Command::new(super::BIN);
                c.arg("dovecot");
                c
            }
            Which::Real => Command::new(REAL_DOVECOT),
        }
    }

    /// The master's PID in the foreground mode.
    pub fn child_id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL the foreground master (a crash) and reap it.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The directory of the configuration file (the test's directory).
    pub fn dir(&self) -> &Path {
        self.conf.parent().expect("dovecot.conf in a directory")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once it holds `needle` (lines are written after the replies), or as it is
    /// after 10 s.
    pub fn wait_log(&self, needle: &str) -> String {
        super::wait_text(&self.log, needle, Duration::from_secs(10))
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        match self.child.as_mut() {
            Some(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            None => {
                let _ = Self::command(self.which)
                    .arg("-c")
                    .arg(&self.conf)
                    .arg("stop")
                    .output();
            }
        }
        // `dovecot stop` returns before the listener is gone.
        if self.port != 0 {
            super::wait_port_closed(self.port, Duration::from_secs(5));
        }
    }
}

/// The real Postfix (Debian's postfix 3.7) as a private instance in `DIR`:
/// `postfix -c DIR/conf start-fg` as a child, queue in `DIR/queue`, data in `DIR/data`
/// (given to the `postfix` user), log in `DIR/maillog`, one smtpd on a free loopback port;
/// `postfix stop` on drop. Needs root and the `postfix` user ([`RealPostfix::available`]).
pub struct RealPostfix {
    pub conf: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

impl RealPostfix {
    /// Root, the `postfix` command and its user; says `skipped: …` when not.
    pub fn available() -> bool {
        let ok = super::is_root()
            && super::have("postfix")
            && nix::unistd::User::from_name("postfix")
                .ok()
                .flatten()
                .is_some();
        if !ok {
            eprintln!("skipped: needs root and Debian's postfix");
        }
        ok
    }

    /// Write main.cf (a base naming the directories, `mail_owner = postfix`, 127.0.0.1
    /// over IPv4, the log file; then `main_extra`) and master.cf (smtpd, postlogd,
    /// proxymap, anvil); `setup` runs on `DIR/conf` before the start (sasl/smtpd.conf…).
    /// Returns once smtpd listens.
    pub fn start_fg(dir: &Path, main_extra: &str, setup: impl FnOnce(&Path)) -> RealPostfix {
        let port = super::free_port();
        let (conf, queue, data) = (dir.join("conf"), dir.join("queue"), dir.join("data"));
        for d in [&conf, &queue, &data] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let st = Command::new("chown")
            .arg("postfix")
            .arg(&data)
            .status()
            .expect("chown");
        assert!(st.success(), "chown postfix {}", data.display());
        std::fs::write(
            conf.join("main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {q}\ndata_directory = {d}\nmail_owner = postfix\n\
                 inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n\
                 maillog_file_prefixes = {t}\nmaillog_file = {t}/maillog\n{main_extra}",
                q = queue.display(),
                d = data.display(),
                t = dir.display()
            ),
        )
        .expect("main.cf");
        std::fs::write(
            conf.join("master.cf"),
            format!(
                "127.0.0.1:{port} inet n - n - - smtpd\npostlog unix-dgram n - n - 1 postlogd\n\
                 proxymap unix - - n - - proxymap\nanvil unix - - n - 1 anvil\n"
            ),
        )
        .expect("master.cf");
        setup(&conf);
        let child = Command::new("postfix")
            .arg("-c")
            .arg(&conf)
            .arg("start-fg")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postfix");
        let pf = RealPostfix {
            conf,
            port,
            log: dir.join("maillog"),
            child,
        };
        if super::poll(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .is_none()
        {
            panic!("postfix did not listen: {}", pf.log());
        }
        pf
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RealPostfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .output();
        if wait_exit(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
