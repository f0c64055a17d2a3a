//! The login process (Dovecot's `pop3-login`, `imap-login`): the part of a mail service
//! that talks to clients before they have logged in runs without privileges.
//!
//! The master (root when started as root) binds the listeners, then starts one such
//! process per protocol (`dovecot/pop3-login`, `dovecot/imap-login` in `ps`) with the
//! protocol's listening sockets and one end of a [`handoff`](super::handoff) channel.
//! Here, as root only while starting: the config is read and the TLS key loaded, then the
//! process chroots to `base_dir/login` (`service PROTO-login { chroot }`), takes the login
//! user's uid and gid (`service PROTO-login { user }`, else `default_login_user`, default
//! `dovenull`; a 0.99/1.x file without `login_user` gets that era's `dovecot`, pinned by
//! the config layer) and no other group — as Dovecot 2.3 runs it. A missing user is
//! refused at start in Dovecot's words for each case ([`LoginUserError`]). It greets
//! clients, speaks TLS, reads the protocol's pre-login commands ([`super::pop3`],
//! [`super::imap`]) and sends the credentials with the client's socket to the service,
//! which checks them and, on success, serves the session itself. A TLS client stays
//! proxied through this process (the TLS state lives here). Log lines go to the service
//! (this process may not open `log_path`). The process exits when the service goes away,
//! and after a reload (a [`Msg::Drain`]) once its last client is gone.
//!
//! Limits ([`ClientLimit`], [`Slots`]): Dovecot runs up to `process_limit` login processes
//! per protocol, each with one client (`service_count = 1`, the default) or up to
//! `client_limit` (`service_count = 0`); 1.x's `login_max_processes_count`,
//! `login_max_connections` and `login_process_per_connection` are mapped to those by the
//! config layer. One Postern process holds them all, so the limit is on clients: at most
//! `process_limit` × (1 or `client_limit`) at once, counting a logged-in TLS client the
//! process still proxies (Dovecot's proxying login process stays too). A client that
//! comes when they are all taken makes room as in Dovecot: the master's warning
//! (`master: Warning: service(imap-login): process_limit (100) reached, client
//! connections are being dropped`, at most once a second), then the oldest client that is
//! waiting for its next pre-login command (or its TLS handshake) is told `-ERR` / `* BYE
//! Connection queue full` and logged `Disconnected: Connection queue full (…)`; one
//! waiting for the service's verdict or proxied is never chosen. When no client can be
//! dropped, the new connection is closed at once (Dovecot's master leaves it in the
//! listen queue for up to 10 s, then accepts and closes it).

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::handoff::{Channel, LoginRequest, Msg, Verdict};
use super::{DovecotLog, LoginConf, Protocol};
use crate::config::dovecot::DovecotConf;

/// How many clients a login service takes at once, and the limit's name and value as
/// Dovecot's master words its warning (`service_log_drop_warning`, master/service-monitor.c).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimit {
    pub total: usize,
    pub name: &'static str,
    pub shown: u64,
}

/// `service PROTO-login { process_limit client_limit service_count }`: `0` limits mean
/// `default_process_limit` (100) and `default_client_limit` (1000); a login service's
/// `service_count` defaults to 1, which makes each process's client limit 1.
pub fn client_limit(conf: &DovecotConf, protocol: Protocol) -> ClientLimit {
    let svc = conf.root.block("service", protocol.login_service());
    let num = |v: Option<&str>| v.and_then(|v| v.trim().parse::<u64>().ok());
    let own = |k: &str| num(svc.and_then(|b| b.get(k))).filter(|&n| n > 0);
    let global = |k: &str, d: u64| num(conf.get(k)).filter(|&n| n > 0).unwrap_or(d);
    let process_limit =
        own("process_limit").unwrap_or_else(|| global("default_process_limit", 100));
    let service_count = num(svc.and_then(|b| b.get("service_count"))).unwrap_or(1);
    let client_limit = if service_count == 1 {
        1
    } else {
        own("client_limit").unwrap_or_else(|| global("default_client_limit", 1000))
    };
    let (name, shown) = if process_limit > 1 {
        ("process_limit", process_limit)
    } else if service_count == 1 {
        ("client_limit/service_count", 1)
    } else {
        ("client_limit", client_limit)
    };
    ClientLimit {
        total: usize::try_from(process_limit.saturating_mul(client_limit)).unwrap_or(usize::MAX),
        name,
        shown,
    }
}

/// One client's place in [`Slots`].
#[derive(Default)]
pub struct Slot {
    /// Waiting for the client (its next command, or its TLS handshake): may be dropped.
    pub waiting: AtomicBool,
    pub kicked: AtomicBool,
    pub kick: tokio::sync::Notify,
}

tokio::task_local! {
    /// The slot of the client the current task serves (set in the login process only);
    /// [`super::conn::Conn`] reads it to end a wait when the client is dropped.
    pub static CLIENT_SLOT: Arc<Slot>;
}

/// The clients of a login process, oldest first, under the service's [`ClientLimit`].
pub struct Slots {
    limit: ClientLimit,
    service: &'static str,
    log: DovecotLog,
    clients: Mutex<BTreeMap<u64, Arc<Slot>>>,
    next: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

/// A client's hold on its slot, given up when dropped.
pub struct SlotGuard {
    slots: Arc<Slots>,
    id: u64,
    pub slot: Arc<Slot>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Ok(mut c) = self.slots.clients.lock() {
            c.remove(&self.id);
        }
    }
}

impl Slots {
    pub fn new(limit: ClientLimit, protocol: Protocol, log: DovecotLog) -> Arc<Slots> {
        Arc::new(Slots {
            limit,
            service: protocol.login_service(),
            log,
            clients: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        })
    }

    /// A place for a new client; when all are taken, the oldest waiting client is told to
    /// go first. `None`: none can go, the new connection is to be closed.
    pub fn admit(self: &Arc<Self>) -> Option<SlotGuard> {
        let mut c = self.clients.lock().ok()?;
        let live = c
            .values()
            .filter(|s| !s.kicked.load(Ordering::Relaxed))
            .count();
        if live >= self.limit.total {
            self.warn();
            let victim = c
                .values()
                .find(|s| s.waiting.load(Ordering::Relaxed) && !s.kicked.load(Ordering::Relaxed))?;
            victim.kicked.store(true, Ordering::Relaxed);
            victim.kick.notify_one();
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::default());
        c.insert(id, slot.clone());
        Some(SlotGuard {
            slots: self.clone(),
            id,
            slot,
        })
    }

    /// The master's warning, at most once a second (`SERVICE_DROP_WARN_INTERVAL_SECS`).
    fn warn(&self) {
        let Ok(mut last) = self.last_warning.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        self.log.warning(&format!(
            "master: service({}): {} ({}) reached, client connections are being dropped",
            self.service, self.limit.name, self.limit.shown
        ));
    }
}

/// The login process's end of the channel, with the requests waiting for a verdict.
pub struct LoginCtl {
    ch: Channel,
    pending: Mutex<HashMap<u64, oneshot::Sender<Verdict>>>,
    next: AtomicU64,
}

impl LoginCtl {
    pub fn new(ch: Channel) -> LoginCtl {
        LoginCtl {
            ch,
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// Send `req` with the client's descriptor and wait for the service's verdict;
    /// `None` when the service is gone. `fd` is closed here once sent.
    pub async fn ask(&self, mut req: LoginRequest, fd: OwnedFd) -> Option<Verdict> {
        use std::os::fd::AsRawFd;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        req.id = id;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().ok()?.insert(id, tx);
        if self
            .ch
            .send(&Msg::Login(req), Some(fd.as_raw_fd()))
            .await
            .is_err()
        {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&id);
            }
            return None;
        }
        drop(fd);
        rx.await.ok()
    }

    fn answer(&self, id: u64, verdict: Verdict) {
        let tx = self.pending.lock().ok().and_then(|mut p| p.remove(&id));
        if let Some(tx) = tx {
            let _ = tx.send(verdict);
        }
    }
}

impl AsRef<Channel> for LoginCtl {
    fn as_ref(&self) -> &Channel {
        &self.ch
    }
}

/// A login user that does not exist, worded as Dovecot 2.3.19 words each case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginUserError {
    /// `default_login_user` (1.x files: `dovecot`, pinned by the config layer) names no
    /// user: doveconf's check, `default_login_user doesn't exist: X`, reported as an error
    /// in the configuration file.
    Default(String),
    /// `service PROTO-login { user }` (1.x `login_user`) names no user: the master's
    /// `service(pop3-login) User doesn't exist: X (See service pop3-login { user }
    /// setting)`.
    Service(&'static str, String),
}

impl std::fmt::Display for LoginUserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginUserError::Default(u) => write!(f, "default_login_user doesn't exist: {u}"),
            LoginUserError::Service(svc, u) => write!(
                f,
                "service({svc}) User doesn't exist: {u} (See service {svc} {{ user }} setting)"
            ),
        }
    }
}

/// The login user's uid and gid for `protocol`, when running as root (`None` when not
/// root: everything runs as the invoking user).
pub fn login_identity(
    conf: &DovecotConf,
    protocol: Protocol,
) -> Result<Option<(u32, u32)>, LoginUserError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let (name, from_service) = conf.login_user_setting(protocol.name());
    match nix::unistd::User::from_name(&name) {
        Ok(Some(u)) => Ok(Some((u.uid.as_raw(), u.gid.as_raw()))),
        _ if from_service => Err(LoginUserError::Service(protocol.login_service(), name)),
        _ => Err(LoginUserError::Default(name)),
    }
}

/// Chroot (when configured) and become the login user for good.
fn drop_privileges(conf: &DovecotConf, protocol: Protocol) -> Result<(), String> {
    let Some((uid, gid)) = login_identity(conf, protocol).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    if let Some(dir) = conf.login_chroot(protocol.name()) {
        // As Dovecot makes it: root-owned, readable by the login group only.
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir({}): {e}", dir.display()))?;
        let _ = nix::unistd::chown(&dir, Some(0.into()), Some(gid.into()));
        let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o750));
        nix::unistd::chroot(&dir).map_err(|e| format!("chroot({}): {e}", dir.display()))?;
        nix::unistd::chdir("/").map_err(|e| format!("chdir(/): {e}"))?;
    }
    nix::unistd::setgroups(&[gid.into()]).map_err(|e| format!("setgroups({gid}): {e}"))?;
    nix::unistd::setgid(gid.into()).map_err(|e| format!("setgid({gid}): {e}"))?;
    nix::unistd::setuid(uid.into()).map_err(|e| format!("setuid({uid}): {e}"))?;
    if uid != 0 && nix::unistd::setuid(0.into()).is_ok() {
        return Err("root privileges could not be dropped".into());
    }
    Ok(())
}

/// Entry point of a login process: `ctl` and the `listeners` (descriptor, implicit TLS)
/// are inherited from the master. Returns the exit status.
pub fn main(conf_path: &Path, protocol: Protocol, ctl: RawFd, listeners: &[(RawFd, bool)]) -> i32 {
    // The descriptors were left open for this process by the master, which named them
    // on the command line; nothing else here owns them.
    let ctl = crate::sys::take_inherited_fd(ctl);
    let listeners: Vec<(std::net::TcpListener, bool)> = listeners
        .iter()
        .map(|&(fd, ssl)| (crate::sys::take_inherited_fd(fd).into(), ssl))
        .collect();
    for (l, _) in &listeners {
        let _ = l.set_nonblocking(true);
    }
    let svc = protocol.login_service();
    let fatal = |m: &str| {
        eprintln!("Fatal: {svc}: {m}");
        89
    };
    let conf = match DovecotConf::load(conf_path) {
        Ok(c) => c,
        Err(e) => return fatal(&e.to_string()),
    };
    let st = match LoginConf::from_conf(&conf, protocol) {
        Ok(s) => Arc::new(s),
        Err(e) => return fatal(&e.to_string()),
    };
    // Found through /proc, so before the chroot.
    let code = crate::memory::code_ranges();
    super::limit_malloc_arenas();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fatal(&format!("tokio: {e}")),
    };
    rt.block_on(async move {
        let ch = match Channel::new(ctl) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("Fatal: {svc}: {e}");
                return;
            }
        };
        let ctl = Arc::new(LoginCtl::new(ch));
        super::handoff::relay_logs_to(ctl.clone());
        // Start-up code out of memory while still root: the kernel pages out a file's
        // pages only for its owner or a writer. Then the privileges go (glibc applies
        // set*id to every thread), before the first client is accepted.
        crate::memory::release_code(&code);
        if let Err(e) = drop_privileges(&conf, protocol) {
            eprintln!("Fatal: {svc}: {e}");
            std::process::exit(89);
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let alive = Arc::new(());
        let slots = Slots::new(client_limit(&conf, protocol), protocol, st.log.clone());
        for (l, ssl) in listeners {
            if let Ok(l) = tokio::net::TcpListener::from_std(l) {
                tokio::spawn(serve(
                    l,
                    ssl,
                    st.clone(),
                    ctl.clone(),
                    slots.clone(),
                    stop_rx.clone(),
                    alive.clone(),
                ));
            }
        }
        loop {
            match ctl.ch.recv().await {
                Ok(Some((Msg::Verdict { id, verdict }, _))) => ctl.answer(id, verdict),
                Ok(Some((Msg::Drain, _))) => {
                    let _ = stop_tx.send(true);
                    // The listeners' tasks end (dropping their `alive`); wait for the
                    // clients' tasks, still answering their requests meanwhile.
                    let ctl2 = ctl.clone();
                    tokio::spawn(async move {
                        loop {
                            match ctl2.ch.recv().await {
                                Ok(Some((Msg::Verdict { id, verdict }, _))) => {
                                    ctl2.answer(id, verdict)
                                }
                                Ok(Some(_)) => {}
                                _ => std::process::exit(0),
                            }
                        }
                    });
                    while Arc::strong_count(&alive) > 1 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    return;
                }
                Ok(Some(_)) => {}
                // The service is gone: so are its login processes (as Dovecot's).
                Ok(None) | Err(_) => return,
            }
        }
    });
    0
}

/// Accept clients on `listener` until `stop` turns true; `implicit_tls` for `pop3s` and
/// `imaps`. `alive` is cloned into each client's task, so that a draining process knows
/// when its last client is gone; each client holds a place in `slots` while its task runs.
async fn serve(
    listener: tokio::net::TcpListener,
    implicit_tls: bool,
    st: Arc<LoginConf>,
    ctl: Arc<LoginCtl>,
    slots: Arc<Slots>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    alive: Arc<()>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        };
        let Ok((tcp, remote)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Some(guard) = slots.admit() else {
            drop(tcp);
            continue;
        };
        let (st, ctl, alive) = (st.clone(), ctl.clone(), alive.clone());
        tokio::spawn(async move {
            let session = async move {
                match st.protocol {
                    Protocol::Pop3 => super::pop3::run(tcp, remote, implicit_tls, st, ctl).await,
                    Protocol::Imap => super::imap::run(tcp, remote, implicit_tls, st, ctl).await,
                }
            };
            CLIENT_SLOT.scope(guard.slot.clone(), session).await;
            drop(guard);
            crate::memory::trim_heap();
            drop(alive);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(text: &str, protocol: Protocol) -> ClientLimit {
        let conf = DovecotConf::from_str(text, Path::new("/tmp/dovecot.conf")).expect("conf");
        client_limit(&conf, protocol)
    }

    #[test]
    fn client_limits_as_dovecot() {
        // Defaults: service_count 1, process_limit = default_process_limit.
        let l = limit("protocols = imap pop3\n", Protocol::Imap);
        assert_eq!((l.total, l.name, l.shown), (100, "process_limit", 100));
        let l = limit(
            "default_process_limit = 7\nservice pop3-login {\n  process_limit = 3\n}\n",
            Protocol::Pop3,
        );
        assert_eq!((l.total, l.name, l.shown), (3, "process_limit", 3));
        assert_eq!(
            limit("default_process_limit = 7\n", Protocol::Imap).total,
            7
        );
        // High-performance mode: each process takes client_limit clients.
        let l = limit(
            "service imap-login {\n  service_count = 0\n  process_limit = 2\n  client_limit = 5\n}\n",
            Protocol::Imap,
        );
        assert_eq!((l.total, l.name, l.shown), (10, "process_limit", 2));
        let l = limit(
            "service imap-login {\n  service_count = 0\n  process_limit = 1\n  client_limit = 5\n}\n",
            Protocol::Imap,
        );
        assert_eq!((l.total, l.name, l.shown), (5, "client_limit", 5));
        let l = limit(
            "service imap-login {\n  process_limit = 1\n}\n",
            Protocol::Imap,
        );
        assert_eq!(
            (l.total, l.name, l.shown),
            (1, "client_limit/service_count", 1)
        );
        // 1.x names, mapped by the config layer.
        let l = limit(
            "protocols = imap\nlogin_max_processes_count = 4\n",
            Protocol::Imap,
        );
        assert_eq!(l.total, 4);
        let l = limit(
            "protocols = imap\nlogin_process_per_connection = no\nlogin_max_processes_count = 2\nlogin_max_connections = 6\n",
            Protocol::Imap,
        );
        assert_eq!(l.total, 12);
    }

    #[test]
    fn the_oldest_waiting_client_goes_first() {
        let limit = ClientLimit {
            total: 2,
            name: "process_limit",
            shown: 2,
        };
        let slots = Slots::new(limit, Protocol::Pop3, DovecotLog::Stderr);
        let a = slots.admit().expect("a");
        let b = slots.admit().expect("b");
        // Neither waits for its client (both are with the service): nobody can go.
        assert!(slots.admit().is_none());
        a.slot.waiting.store(true, Ordering::Relaxed);
        b.slot.waiting.store(true, Ordering::Relaxed);
        let c = slots.admit().expect("c");
        assert!(a.slot.kicked.load(Ordering::Relaxed));
        assert!(!b.slot.kicked.load(Ordering::Relaxed));
        c.slot.waiting.store(true, Ordering::Relaxed);
        let _d = slots.admit().expect("d");
        assert!(b.slot.kicked.load(Ordering::Relaxed));
        assert!(!c.slot.kicked.load(Ordering::Relaxed));
        drop(a);
        drop(b);
        assert_eq!(slots.clients.lock().expect("lock").len(), 2);
    }
}
