//! `dovecot`: start the POP3 service described by a `dovecot.conf` of any era, as Dovecot's
//! master does.
//!
//! Usage: `dovecot [-c FILE] [-F]` (foreground with `-F`, else detached, pid in
//! `base_dir/master.pid`), `dovecot [-c FILE] stop`, `dovecot [-c FILE] reload` (SIGHUP:
//! the file is read again for new sessions). Listeners come from
//! [`DovecotConf::listeners`] (0.99/1.x `pop3_listen`/`ssl_listen`, 2.x `service
//! pop3-login { inet_listener … }`, `listen`); `pop3s` listeners speak TLS from the start.
//! Only `pop3` is served from `protocols` today; `imap` is left to the imapd issue.
//! Fatal errors are worded as Dovecot's (`Fatal: …`) and exit 89.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::dovecot::DovecotConf;
use crate::pop3d::{self, Pop3State};

const FATAL: i32 = 89;
const DEFAULT_CONF: &str = "/etc/dovecot/dovecot.conf";

fn base_dir(conf: &DovecotConf) -> PathBuf {
    PathBuf::from(conf.get("base_dir").unwrap_or("/var/run/dovecot"))
}

fn fatal(msg: &str) -> i32 {
    eprintln!("Fatal: {msg}");
    FATAL
}

/// Entry point: `args` are the arguments after the command name.
pub fn main(args: &[String]) -> i32 {
    let mut conf_path = DEFAULT_CONF.to_string();
    let mut foreground = false;
    let mut action: Option<&str> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" => match it.next() {
                Some(p) => conf_path = p.clone(),
                None => return fatal("-c requires a file name"),
            },
            "-F" => foreground = true,
            "stop" | "reload" => action = Some(a.as_str()),
            other => return fatal(&format!("Unknown argument: {other}")),
        }
    }
    let conf = match DovecotConf::load(Path::new(&conf_path)) {
        Ok(c) => c,
        Err(e) => return fatal(&e.to_string()),
    };
    // As dovecot(1), which runs doveconf's checks first (seen from 2.3.19: this line, 89).
    if action.is_none()
        && let Err(m) = conf.check()
    {
        eprintln!("doveconf: Fatal: Error in configuration file {conf_path}: {m}");
        return FATAL;
    }
    let pid_file = base_dir(&conf).join("master.pid");
    if let Some(act) = action {
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let Some(pid) = pid else {
            return fatal(&format!(
                "Dovecot is not running (read from {})",
                pid_file.display()
            ));
        };
        let sig = if act == "stop" {
            nix::sys::signal::Signal::SIGTERM
        } else {
            nix::sys::signal::Signal::SIGHUP
        };
        return match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
            Ok(()) => 0,
            Err(e) => fatal(&format!("kill({pid}): {e}")),
        };
    }
    let state = match Pop3State::from_conf(&conf) {
        Ok(s) => Arc::new(s),
        Err(e) => return fatal(&e.to_string()),
    };
    let mut binds: Vec<(SocketAddr, bool)> = Vec::new();
    if conf.protocols().iter().any(|p| p == "pop3") {
        for l in conf.listeners("pop3") {
            if l.port == 0 {
                continue;
            }
            if l.ssl && state.tls.is_none() {
                continue;
            }
            let addrs = if l.addresses.is_empty() {
                vec!["*".to_string()]
            } else {
                l.addresses.clone()
            };
            for a in addrs {
                let ip = match a.as_str() {
                    "*" => "0.0.0.0",
                    "::" | "[::]" => "::",
                    other => other.trim_start_matches('[').trim_end_matches(']'),
                };
                match ip.parse::<std::net::IpAddr>() {
                    Ok(ip) => binds.push((SocketAddr::new(ip, l.port), l.ssl)),
                    Err(_) => return fatal(&format!("Invalid listen address: {a}")),
                }
            }
        }
    }
    // Bind before detaching, so that errors reach the admin's terminal.
    let mut listeners = Vec::new();
    for (addr, ssl) in &binds {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => {
                let _ = l.set_nonblocking(true);
                listeners.push((l, *ssl));
            }
            Err(e) => {
                return fatal(&format!(
                    "service(pop3-login): listen({}, {}) failed: {e}",
                    addr.ip(),
                    addr.port()
                ));
            }
        }
    }
    if !foreground && let Err(e) = nix::unistd::daemon(true, false) {
        return fatal(&format!("daemon(): {e}"));
    }
    if let Some(dir) = pid_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&pid_file, format!("{}\n", std::process::id()));
    for p in conf.protocols() {
        if p != "pop3" {
            state.log.warning(&format!(
                "master: protocol {p} is not served by this version of Postern"
            ));
        }
    }
    state.log.info(&format!(
        "master: Dovecot v2.3.19 (Postern {}) starting up for pop3",
        env!("CARGO_PKG_VERSION")
    ));
    pop3d::limit_malloc_arenas();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fatal(&format!("tokio: {e}")),
    };
    let conf_file = PathBuf::from(&conf_path);
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(state.clone());
        for (l, ssl) in listeners {
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    tokio::spawn(pop3d::serve(l, ssl, rx.clone()));
                }
                Err(e) => state.log.error(&format!("master: listener: {e}")),
            }
        }
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        crate::memory::release_startup_code();
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = hup.recv() => {
                    // As Dovecot's master: new sessions get the new settings, running
                    // ones keep theirs. XXX: listeners are not re-bound on reload.
                    let current = tx.borrow().clone();
                    current.log.warning("master: SIGHUP received - reloading configuration");
                    match DovecotConf::load(&conf_file)
                        .map_err(|e| e.to_string())
                        .and_then(|c| Pop3State::from_conf(&c).map_err(|e| e.to_string()))
                    {
                        Ok(new) => {
                            let _ = tx.send(Arc::new(new));
                            crate::memory::release_startup_code();
                        }
                        Err(e) => current.log.error(&format!("master: reload failed: {e}")),
                    }
                }
            }
        }
        tx.borrow()
            .log
            .info("master: Dovecot v2.3.19 shutting down");
    });
    let _ = std::fs::remove_file(&pid_file);
    crate::log::flush();
    0
}
