//! `dovecot`: start the POP3 service described by a `dovecot.conf` of any era, as Dovecot's
//! master does.
//!
//! Usage: `dovecot [-c FILE] [-F]` (foreground with `-F`, else detached, pid in
//! `base_dir/master.pid`), `dovecot [-c FILE] stop`, `dovecot [-c FILE] reload` (SIGHUP:
//! the file is read again for new sessions). Listeners come from
//! [`DovecotConf::listeners`] (0.99/1.x `pop3_listen`/`ssl_listen`, 2.x `service
//! pop3-login { inet_listener … }`, `listen`); `pop3s` listeners speak TLS from the start.
//! Only `pop3` is served from `protocols` today; `imap` is left to the imapd issue.
//! `service auth { unix_listener NAME { mode user group } }` sockets (1.x: `auth default {
//! socket listen { client { path … } } }`) speak Dovecot's auth client protocol
//! ([`crate::auth::dovecot_proto`]) from the same passdbs, for Postfix's `smtpd_sasl_type
//! = dovecot`; see [`DovecotConf::auth_client_sockets`] for which listeners count.
//! Fatal errors are worded as Dovecot's (`Fatal: …`) and exit 89.
//!
//! Processes: this one binds the listeners, then starts the unprivileged login process
//! ([`pop3d::login`], `dovecot/pop3-login`: this executable again, with
//! `--login-process CTL FD:ssl|plain…` naming the inherited channel and listeners),
//! serves its requests ([`pop3d::serve_login_process`]), replaces it when it dies and
//! starts a new one on reload while the old one drains.

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
    // `--login-process CTL FD:ssl|plain…`: this is the login process the service started.
    let mut login_process: Option<(i32, Vec<(i32, bool)>)> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--login-process" => {
                let ctl = it.next().and_then(|c| c.parse().ok());
                let mut ls = Vec::new();
                for l in it.by_ref() {
                    let (fd, kind) = l.split_once(':').unwrap_or((l, "plain"));
                    match fd.parse() {
                        Ok(fd) => ls.push((fd, kind == "ssl")),
                        Err(_) => return fatal(&format!("Invalid listener: {l}")),
                    }
                }
                match ctl {
                    Some(c) => login_process = Some((c, ls)),
                    None => return fatal("--login-process requires a descriptor"),
                }
            }
            "-c" => match it.next() {
                Some(p) => conf_path = p.clone(),
                None => return fatal("-c requires a file name"),
            },
            "-F" => foreground = true,
            "stop" | "reload" => action = Some(a.as_str()),
            other => return fatal(&format!("Unknown argument: {other}")),
        }
    }
    if let Some((ctl, listeners)) = login_process {
        return pop3d::login::main(Path::new(&conf_path), ctl, &listeners);
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
    // As Dovecot 2.3.19 started as root (seen: the same line, status 89).
    if action.is_none()
        && let Err(m) = pop3d::login::login_identity(&conf)
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
    // `service auth { unix_listener … }` owners are checked with the rest of the
    // configuration, before anything is bound (as Dovecot's config check does).
    let mut auth_owners = Vec::new();
    for s in conf.auth_client_sockets() {
        match socket_owner(&s) {
            Ok(o) => auth_owners.push((s, o)),
            Err(m) => return fatal(&m),
        }
    }
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
    // The auth client sockets (Postfix's `smtpd_sasl_type = dovecot` connects to one),
    // answered from the same passdbs as the POP3 logins.
    let mut auth_listeners = Vec::new();
    for (s, owner) in &auth_owners {
        match crate::auth::dovecot_proto::bind_std(&s.path, s.mode, *owner) {
            Ok(l) => auth_listeners.push(l),
            Err(e) => {
                // Seen from Dovecot 2.3.19: these two lines, status 89.
                eprintln!(
                    "Error: bind({}) failed: {}",
                    s.path.display(),
                    crate::config::error::strerror(&e)
                );
                return fatal("Failed to start listeners");
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
        for l in auth_listeners {
            match tokio::net::UnixListener::from_std(l) {
                Ok(l) => {
                    let rx = rx.clone();
                    tokio::spawn(crate::auth::dovecot_proto::serve_current(l, move || {
                        rx.borrow().auth.clone()
                    }));
                }
                Err(e) => state
                    .log
                    .error(&format!("master: service(auth): listener: {e}")),
            }
        }
        let spawn = |st: &Pop3State| match spawn_login(&conf_file, &listeners, rx.clone()) {
            Ok(l) => Some(l),
            Err(e) => {
                st.log
                    .error(&format!("master: service(pop3-login): fork() failed: {e}"));
                None
            }
        };
        // Before the login process starts: the kernel pages out only pages no other
        // process maps, and the login process maps the same start-up code while it
        // reads the configuration.
        crate::memory::release_startup_code();
        let mut login = if listeners.is_empty() {
            None
        } else {
            spawn(&state)
        };
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        let mut old: Vec<tokio::process::Child> = Vec::new();
        // Old login processes (after a reload) are reaped at the next tick.
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            let exited = async {
                match login.as_mut() {
                    Some(l) => l.child.wait().await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = tick.tick(), if !old.is_empty() => {}
                status = exited => {
                    // As Dovecot's master: a login process that died is logged and
                    // replaced (after a pause, so a crash at start does not spin).
                    let current = tx.borrow().clone();
                    let pid = login.as_ref().map_or(0, |l| l.pid);
                    current.log.error(&format!(
                        "master: service(pop3-login): child {pid} {}",
                        describe_exit(status)
                    ));
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    login = spawn(&current);
                }
                _ = hup.recv() => {
                    // As Dovecot's master: new sessions get the new settings, running
                    // ones keep theirs; a new login process serves new clients and the
                    // old one finishes those it has. XXX: listeners are not re-bound.
                    let current = tx.borrow().clone();
                    current.log.warning("master: SIGHUP received - reloading configuration");
                    match DovecotConf::load(&conf_file)
                        .map_err(|e| e.to_string())
                        .and_then(|c| Pop3State::from_conf(&c).map_err(|e| e.to_string()))
                    {
                        Ok(new) => {
                            let new = Arc::new(new);
                            let _ = tx.send(new.clone());
                            crate::memory::release_startup_code();
                            if let Some(fresh) = spawn(&new)
                                && let Some(prev) = login.replace(fresh)
                            {
                                let _ = prev.ch.send(&pop3d::handoff::Msg::Drain, None).await;
                                old.push(prev.child);
                            }
                        }
                        Err(e) => current.log.error(&format!("master: reload failed: {e}")),
                    }
                }
            }
            // Reap old login processes that have finished.
            old.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        }
        for mut c in old.into_iter().chain(login.map(|l| l.child)) {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        tx.borrow()
            .log
            .info("master: Dovecot v2.3.19 shutting down");
    });
    let _ = std::fs::remove_file(&pid_file);
    crate::log::flush();
    0
}

/// The owner (uid, gid) a `service auth` unix_listener's `user`/`group` name, or Dovecot's
/// error when one does not exist. `None`: keep this process's.
fn socket_owner(
    s: &crate::config::dovecot::AuthSocket,
) -> Result<Option<crate::auth::dovecot_proto::SocketOwner>, String> {
    let uid = if s.user.is_empty() {
        None
    } else {
        match nix::unistd::User::from_name(&s.user) {
            Ok(Some(u)) => Some(u.uid.as_raw()),
            _ => {
                return Err(format!(
                    "service(auth) User doesn't exist: {} (See service auth {{ unix_listener {} {{ user }} }} setting)",
                    s.user, s.name
                ));
            }
        }
    };
    let gid = if s.group.is_empty() {
        None
    } else {
        match nix::unistd::Group::from_name(&s.group) {
            Ok(Some(g)) => Some(g.gid.as_raw()),
            _ => {
                return Err(format!(
                    "service(auth) Group doesn't exist: {} (See service auth {{ unix_listener {} {{ group }} }} setting)",
                    s.group, s.name
                ));
            }
        }
    };
    Ok((uid.is_some() || gid.is_some()).then_some((uid, gid)))
}

/// A running login process and the service's end of its channel.
struct LoginProcess {
    child: tokio::process::Child,
    /// Kept: the child forgets its id once reaped.
    pid: u32,
    ch: Arc<pop3d::handoff::Channel>,
}

/// Start a login process (this executable, `dovecot/pop3-login` in `ps`) with the
/// listening sockets and a new channel, and serve its requests.
fn spawn_login(
    conf_file: &Path,
    listeners: &[(std::net::TcpListener, bool)],
    settings: tokio::sync::watch::Receiver<Arc<Pop3State>>,
) -> std::io::Result<LoginProcess> {
    use std::os::fd::AsRawFd;
    let (ours, theirs) = pop3d::handoff::pair()?;
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.arg0("dovecot/pop3-login")
        .arg("dovecot")
        .arg("-c")
        .arg(conf_file)
        .arg("--login-process")
        .arg(theirs.as_raw_fd().to_string());
    let mut keep = vec![theirs.as_raw_fd()];
    for (l, ssl) in listeners {
        let fd = l.as_raw_fd();
        cmd.arg(format!("{fd}:{}", if *ssl { "ssl" } else { "plain" }));
        keep.push(fd);
    }
    // SAFETY: only fcntl(2), async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &keep {
                if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id().unwrap_or(0);
    drop(theirs);
    let ch = Arc::new(pop3d::handoff::Channel::new(ours)?);
    tokio::spawn(pop3d::serve_login_process(ch.clone(), settings));
    Ok(LoginProcess { child, pid, ch })
}

/// `exited with status 1`, `killed with signal 9` (Dovecot's wording).
fn describe_exit(status: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) if s.signal().is_some() => {
            format!("killed with signal {}", s.signal().unwrap_or(0))
        }
        Some(s) => format!("returned error {}", s.code().unwrap_or(0)),
        None => "vanished".to_string(),
    }
}
