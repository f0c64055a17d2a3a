//! The processes the master starts (the same binary, run as `postern smtpd|qmgr|local -c
//! DIR`), what each inherits, and how they are stopped and started again.
//!
//! * `smtpd`: the listening sockets (their descriptors in `$POSTERN_LISTEN_FDS`, as
//!   `name=fd,fd;name=fd`), its end of a status socket (`$POSTERN_STATUS_FD`: it writes `ok`
//!   once serving, `fatal: TEXT` when it cannot, `reloaded` after each `SIGHUP`; it exits
//!   when it reads end of file), and a descriptor of the locked `master.pid`
//!   (`$POSTERN_PID_LOCK_FD`), which it only keeps open.
//! * `qmgr`: a pipe on standard input (`R`: reload; end of file: the master is gone), the
//!   descriptor of `pid/qmgr.lock`, opened afresh for each start (`$POSTERN_QMGR_LOCK_FD`),
//!   and its end of the delivery channel (`$POSTERN_LOCAL_FD`).
//! * `local`: a pipe on standard input (the same words) and the other end of the delivery
//!   channel.
//!
//! Every other descriptor of the master is close-on-exec.

use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::postfix::PostfixConfig;
use crate::log;

pub const LISTEN_FDS_ENV: &str = "POSTERN_LISTEN_FDS";
pub const STATUS_FD_ENV: &str = "POSTERN_STATUS_FD";
pub const PID_LOCK_FD_ENV: &str = "POSTERN_PID_LOCK_FD";

/// One started process.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub started: Instant,
}

/// The master's children and what it needs to start them again.
pub struct Children {
    exe: Option<PathBuf>,
    config_dir: PathBuf,
    queue_directory: PathBuf,
    ident: String,
    /// The listeners, kept open by the master so that a new smtpd process gets them.
    listeners: Vec<(String, Vec<std::net::TcpListener>)>,
    pid_lock_fd: RawFd,
    pub smtpd: Option<Proc>,
    /// The master's end of the smtpd process's status socket.
    pub status: Option<std::os::unix::net::UnixStream>,
    pub qmgr: Option<Proc>,
    pub local: Option<Proc>,
}

impl Children {
    pub fn new(
        cfg: &PostfixConfig,
        listeners: Vec<(String, Vec<std::net::TcpListener>)>,
        pid_lock: &super::lock::LockFile,
    ) -> Children {
        Children {
            exe: std::env::current_exe().ok(),
            config_dir: cfg.config_dir.clone(),
            queue_directory: PathBuf::from(cfg.get("queue_directory").unwrap_or_default()),
            ident: log::ident(cfg, "master"),
            listeners,
            pid_lock_fd: pid_lock.file.as_raw_fd(),
            smtpd: None,
            status: None,
            qmgr: None,
            local: None,
        }
    }

    fn command(&self, what: &str, keep: Vec<RawFd>) -> Result<Command, String> {
        let exe = self
            .exe
            .clone()
            .ok_or_else(|| "cannot find the postern binary".to_string())?;
        let mut c = Command::new(exe);
        c.arg(what).arg("-c").arg(&self.config_dir);
        crate::sys::child::keep_on_exec(&mut c, keep);
        Ok(c)
    }

    /// Start the smtpd process and wait until it serves (or says why it cannot).
    pub fn start_smtpd(&mut self) -> Result<(), String> {
        let (mine, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let mut keep = vec![theirs.as_raw_fd(), self.pid_lock_fd];
        let mut spec = Vec::new();
        for (name, ls) in &self.listeners {
            let fds: Vec<String> = ls.iter().map(|l| l.as_raw_fd().to_string()).collect();
            keep.extend(ls.iter().map(AsRawFd::as_raw_fd));
            spec.push(format!("{name}={}", fds.join(",")));
        }
        let mut c = self.command("smtpd", keep)?;
        c.env(LISTEN_FDS_ENV, spec.join(";"))
            .env(STATUS_FD_ENV, theirs.as_raw_fd().to_string())
            .env(PID_LOCK_FD_ENV, self.pid_lock_fd.to_string())
            .stdin(Stdio::null());
        let child = c
            .spawn()
            .map_err(|e| format!("cannot start the smtpd process: {e}"))?;
        drop(theirs);
        let mut proc = Proc {
            name: "smtpd",
            child,
            stdin: None,
            started: Instant::now(),
        };
        // Its first line: `ok`, or why not (a TLS key it cannot read, say).
        let _ = mine.set_read_timeout(Some(Duration::from_secs(60)));
        let mut line = String::new();
        let read = std::io::BufReader::new(&mine).read_line(&mut line);
        let _ = mine.set_read_timeout(None);
        match (read, line.trim_end()) {
            (Ok(_), "ok") => {
                self.smtpd = Some(proc);
                self.status = Some(mine);
                Ok(())
            }
            (_, l) => {
                let _ = proc.child.kill();
                let _ = proc.child.wait();
                Err(match l.strip_prefix("fatal: ") {
                    Some(why) => why.to_string(),
                    None => "the smtpd process did not start".to_string(),
                })
            }
        }
    }

    /// Start the local delivery process and the queue manager, connected to each other.
    pub fn start_delivery(&mut self) {
        if let Err(e) = self.try_start_delivery() {
            log::error(&self.ident, &format!("cannot start qmgr: {e}"));
        }
    }

    fn try_start_delivery(&mut self) -> Result<(), String> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (a, b): (OwnedFd, OwnedFd) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| format!("socketpair: {}", e.desc()))?;
        let mut c = self.command("local", vec![a.as_raw_fd()])?;
        c.env(crate::qmgr::local_server::FD_ENV, a.as_raw_fd().to_string())
            .stdin(Stdio::piped());
        let mut local = c.spawn().map_err(|e| format!("local: {e}"))?;
        let local_stdin = local.stdin.take();
        self.local = Some(Proc {
            name: "local",
            child: local,
            stdin: local_stdin,
            started: Instant::now(),
        });
        drop(a);
        // A fresh open file description of the lock for each queue manager, so that a new
        // one waits for an old one still finishing its deliveries.
        let lock_path = self.queue_directory.join("pid").join("qmgr.lock");
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| format!("open {}: {e}", lock_path.display()))?;
        let mut c = self.command("qmgr", vec![b.as_raw_fd(), lock.as_raw_fd()])?;
        c.env(crate::qmgr::local_server::FD_ENV, b.as_raw_fd().to_string())
            .env(crate::qmgr::LOCK_FD_ENV, lock.as_raw_fd().to_string())
            .stdin(Stdio::piped());
        let mut qmgr = c.spawn().map_err(|e| format!("qmgr: {e}"))?;
        let qmgr_stdin = qmgr.stdin.take();
        self.qmgr = Some(Proc {
            name: "qmgr",
            child: qmgr,
            stdin: qmgr_stdin,
            started: Instant::now(),
        });
        Ok(())
    }

    /// Tell the queue manager and the local delivery process to reload.
    pub fn notify_reload(&mut self) {
        for p in [self.qmgr.as_mut(), self.local.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Some(w) = p.stdin.as_mut() {
                let _ = w.write_all(b"R");
            }
        }
    }

    /// Stop: the smtpd process at once (SIGTERM, then SIGKILL after 5 s), the queue manager
    /// and the local delivery process by closing their input (they finish the deliveries
    /// in progress on their own).
    pub fn stop(&mut self) {
        self.status = None;
        for p in [self.qmgr.as_mut(), self.local.as_mut()]
            .into_iter()
            .flatten()
        {
            p.stdin = None;
        }
        if let Some(mut p) = self.smtpd.take() {
            signal(&p.child, libc::SIGTERM);
            let until = Instant::now() + Duration::from_secs(5);
            loop {
                match p.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= until => {
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        self.listeners.clear();
        // The other two are reaped by whoever inherits them.
        self.qmgr = None;
        self.local = None;
    }

    /// Processes that have exited since the last call, with how they ended; their entries
    /// are cleared.
    pub fn exited(&mut self) -> Vec<(&'static str, u32, String, Duration)> {
        let mut out = Vec::new();
        for slot in [&mut self.smtpd, &mut self.qmgr, &mut self.local] {
            let gone = match slot.as_mut() {
                Some(p) => match p.child.try_wait() {
                    Ok(Some(st)) => Some(describe(st)),
                    Ok(None) => None,
                    Err(e) => Some(e.to_string()),
                },
                None => None,
            };
            if let Some(how) = gone
                && let Some(p) = slot.take()
            {
                out.push((p.name, p.child.id(), how, p.started.elapsed()));
            }
        }
        out
    }

    /// The path of the binary, for log lines about its processes.
    pub fn exe_display(&self) -> String {
        self.exe
            .as_ref()
            .map(|e| e.display().to_string())
            .unwrap_or_else(|| "postern".into())
    }
}

fn describe(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".into(),
    }
}

/// Send `sig` to a child that has not been reaped yet.
pub fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // The PID of our own, not yet reaped, child.
        let sig = nix::sys::signal::Signal::try_from(sig).ok();
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}
