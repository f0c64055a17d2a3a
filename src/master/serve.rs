//! The smtpd process (`postern smtpd -c DIR`, started by the master): one accept loop per
//! listening socket it inherited, signals, reload.
//!
//! Started as root, it builds each service (reading root-only files such as TLS keys),
//! then becomes `mail_owner` for good ([`super::privs::drop_to`]) before it accepts a
//! connection; every smtpd session runs in it. It tells the master on its status socket
//! (`ok`, or `fatal: REASON`; `reloaded` after each `SIGHUP`) and exits at once when that
//! socket reads end of file (the master is gone).
//!
//! Each master.cf service has a `Slot`: the [`SmtpdService`] new connections get and the
//! semaphore that caps its normal sessions at master.cf's maxproc (`-` =
//! `default_process_limit`, `0` = no limit). Over the limit, where Postfix's master stops
//! accepting, the accept loop goes on accepting and runs the session in stress mode
//! (`stress = yes`: Postfix's `${stress?…}` defaults, a 10 s `smtpd_timeout`), logging
//! Postfix's master warning (`service "smtp" (25) has reached its process limit …`, once
//! per 1000 s), so that a flood of idle connections does not keep good clients in the
//! listen queue (issue 17). Stress-mode sessions are bounded from the open-files limit;
//! past that the loop waits for a permit before accepting, as before. A reload swaps the
//! slot's contents; sessions in progress keep the service (and permit) they started with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::ServiceSpec;
use crate::config::postfix::PostfixConfig;
use crate::log;
use crate::smtpd::SmtpdService;

/// What a service's new connections get.
struct SlotState {
    service: Arc<SmtpdService>,
    limit: Option<Arc<Semaphore>>,
    limit_value: Option<usize>,
}

struct Slot {
    state: RwLock<SlotState>,
}

impl Slot {
    fn limit_value(&self) -> Option<usize> {
        match self.state.read() {
            Ok(s) => s.limit_value,
            Err(p) => p.into_inner().limit_value,
        }
    }

    fn current(&self) -> (Arc<SmtpdService>, Option<Arc<Semaphore>>) {
        match self.state.read() {
            Ok(s) => (s.service.clone(), s.limit.clone()),
            Err(p) => {
                let s = p.into_inner();
                (s.service.clone(), s.limit.clone())
            }
        }
    }
}

struct Running {
    slot: Arc<Slot>,
    tasks: Vec<JoinHandle<()>>,
}

fn new_state(cfg: &PostfixConfig, spec: &ServiceSpec) -> anyhow::Result<SlotState> {
    let svc_cfg = cfg.with_overrides(&spec.entry.overrides());
    Ok(SlotState {
        service: SmtpdService::new(svc_cfg, &spec.name)?,
        limit: spec.limit.map(|n| Arc::new(Semaphore::new(n))),
        limit_value: spec.limit,
    })
}

/// The signals the master acts on, registered before anything else starts.
pub struct Signals {
    pub hup: tokio::signal::unix::Signal,
    pub term: tokio::signal::unix::Signal,
    pub int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Register SIGHUP, SIGTERM and SIGINT (inside the runtime's context).
    pub fn install() -> Result<Signals, String> {
        let sig =
            |k: SignalKind| signal(k).map_err(|e| format!("cannot install signal handlers: {e}"));
        Ok(Signals {
            hup: sig(SignalKind::hangup())?,
            term: sig(SignalKind::terminate())?,
            int: sig(SignalKind::interrupt())?,
        })
    }
}

/// `postern smtpd -c DIR`: the smtpd process. Returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let mut config_dir = None;
    let mut it = args.iter().skip_while(|a| a.as_str() == "smtpd");
    while let Some(a) = it.next() {
        if a == "-c" {
            config_dir = it.next().map(std::path::PathBuf::from);
        }
    }
    let fd_env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|fd| *fd > 2)
    };
    let Some(status_fd) = fd_env(super::children::STATUS_FD_ENV) else {
        eprintln!("postern smtpd: started by the master only");
        return 1;
    };
    // The master passed these descriptors to this process alone.
    let status = std::os::unix::net::UnixStream::from(crate::sys::take_inherited_fd(status_fd));
    let _pid_lock = fd_env(super::children::PID_LOCK_FD_ENV)
        .map(|fd| std::fs::File::from(crate::sys::take_inherited_fd(fd)));
    let mut inherited: HashMap<String, Vec<std::net::TcpListener>> = HashMap::new();
    for part in std::env::var(super::children::LISTEN_FDS_ENV)
        .unwrap_or_default()
        .split(';')
        .filter(|p| !p.is_empty())
    {
        let Some((name, fds)) = part.rsplit_once('=') else {
            continue;
        };
        let ls = fds
            .split(',')
            .filter_map(|f| f.parse::<i32>().ok())
            .filter(|fd| *fd > 2)
            // Listening sockets the master bound for this process.
            .map(|fd| std::net::TcpListener::from(crate::sys::take_inherited_fd(fd)))
            .collect();
        inherited.insert(name.to_string(), ls);
    }
    // Our own descriptors close-on-exec: no command inherits them.
    use std::os::fd::AsFd;
    for fd in std::iter::once(status.as_fd())
        .chain(_pid_lock.iter().map(|f| f.as_fd()))
        .chain(inherited.values().flatten().map(|l| l.as_fd()))
    {
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    let report = |status: &std::os::unix::net::UnixStream, line: &str| {
        let _ = std::io::Write::write_all(&mut &*status, format!("{line}\n").as_bytes());
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("smtpd")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(&status, &format!("fatal: cannot start the runtime: {e}"));
            return 1;
        }
    };
    let signals = {
        let _guard = rt.enter();
        match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                report(&status, &format!("fatal: {e}"));
                return 1;
            }
        }
    };
    let cfg = match super::load_config(config_dir.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            report(&status, &format!("fatal: {e}"));
            return 1;
        }
    };
    let ident = log::ident(&cfg, "master");
    log::set_panic_ident(&log::ident(&cfg, "smtpd"));
    if let Err(e) = log::configure(&cfg) {
        report(&status, &format!("fatal: {e}"));
        return 1;
    }
    let specs = match super::smtpd_services_quiet(&cfg, &ident, true) {
        Ok(s) => s,
        Err(e) => {
            report(&status, &format!("fatal: {e}"));
            return 1;
        }
    };
    // Each service's smtpd instance, built while still root (root-only TLS keys).
    let mut services = Vec::new();
    for spec in specs {
        let Some(ls) = inherited.remove(&spec.name) else {
            continue;
        };
        match SmtpdService::new(cfg.with_overrides(&spec.entry.overrides()), &spec.name) {
            Ok(svc) => services.push((spec, svc, ls)),
            Err(e) => {
                report(&status, &format!("fatal: service {}: {e:#}", spec.name));
                return 1;
            }
        }
    }
    if super::privs::is_root() {
        let dropped = super::privs::mail_owner(&cfg).and_then(|o| super::privs::drop_to(&o));
        if let Err(e) = dropped {
            report(&status, &format!("fatal: {e}"));
            return 1;
        }
    }
    report(&status, "ok");
    let code = rt.block_on(main_loop(signals, cfg, ident, services, status));
    rt.shutdown_background();
    log::flush();
    code
}

async fn main_loop(
    signals: Signals,
    mut cfg: PostfixConfig,
    ident: String,
    services: super::StartedServices,
    status: std::os::unix::net::UnixStream,
) -> i32 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Signals {
        mut hup,
        mut term,
        mut int,
    } = signals;
    let status = match status
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(status))
    {
        Ok(s) => s,
        Err(e) => {
            log::fatal(&ident, &format!("status socket: {e}"));
            return 1;
        }
    };
    let (mut status_r, mut status_w) = status.into_split();
    let mut running: HashMap<String, Running> = HashMap::new();
    for (spec, service, listeners) in services {
        let state = SlotState {
            service,
            limit: spec.limit.map(|n| Arc::new(Semaphore::new(n))),
            limit_value: spec.limit,
        };
        match start_service(state, &ident, &spec, listeners) {
            Ok(r) => {
                running.insert(spec.name.clone(), r);
            }
            Err(e) => {
                log::fatal(&ident, &e);
                return 1;
            }
        }
    }
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            _ = hup.recv() => {
                // Every table is read again, as Postfix's daemons are restarted (a table
                // that could not be opened is tried again at once).
                crate::maps::cache::global().clear();
                reload(&mut cfg, &ident, &mut running);
                let _ = status_w.write_all(b"reloaded\n").await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            r = status_r.read(&mut buf) => {
                if !matches!(r, Ok(n) if n > 0) {
                    // The master is gone: so are its listeners, at once.
                    log::flush();
                    std::process::exit(0);
                }
            }
        }
    }
    for r in running.values() {
        for t in &r.tasks {
            t.abort();
        }
    }
    0
}

fn start_service(
    state: SlotState,
    ident: &str,
    spec: &ServiceSpec,
    listeners: Vec<std::net::TcpListener>,
) -> Result<Running, String> {
    let slot = Arc::new(Slot {
        state: RwLock::new(state),
    });
    let mut tasks = Vec::new();
    for l in listeners {
        let local = l.local_addr().ok();
        let l = TcpListener::from_std(l)
            .map_err(|e| format!("service {}: listener: {e}", spec.name))?;
        tasks.push(tokio::spawn(accept_loop(
            l,
            local,
            slot.clone(),
            ident.to_string(),
            spec.name.clone(),
        )));
    }
    Ok(Running { slot, tasks })
}

/// Connections served beyond a service's process limit, in stress mode, across all
/// services: a bound from the open-files limit (each costs a descriptor and a few tens of
/// kilobytes), set by [`raise_nofile`].
static OVERLOAD: std::sync::OnceLock<Arc<Semaphore>> = std::sync::OnceLock::new();

/// Raise the soft open-files limit to the hard one (a flood must not run this process out
/// of descriptors before its own bound does) and size the stress-mode allowance from it:
/// half of what is left after 256 descriptors for queue files, tables and sockets, at most
/// 20,000.
fn raise_nofile() -> usize {
    let soft = crate::sys::raise_nofile_limit();
    (soft.saturating_sub(256) / 2).min(20_000) as usize
}

/// Postfix's master warning when a service is at its process limit, at most once per
/// 1000 s per service (`master_avail.c`).
fn warn_process_limit(
    ident: &str,
    name: &str,
    endpoint: &str,
    limit: usize,
    last: &mut Option<std::time::Instant>,
) {
    if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1000)) {
        return;
    }
    *last = Some(std::time::Instant::now());
    log::warning(
        ident,
        &format!(
            "service \"{name}\" ({endpoint}) has reached its process limit \"{limit}\": new clients may experience noticeable delays"
        ),
    );
    log::warning(
        ident,
        "to avoid this condition, increase the process count in master.cf or reduce the service time per client",
    );
    log::warning(
        ident,
        "see http://www.postfix.org/STRESS_README.html for examples of stress-adapting configuration settings",
    );
}

/// Accept connections for one listener. Up to maxproc sessions run normally (a permit of
/// the service's semaphore each). Past it, where Postfix's master stops accepting (and
/// clients wait in the listen queue, a well-behaved one among them, for minutes under a
/// flood), Postern keeps accepting: the session runs in stress mode (`stress = yes`: Postfix's
/// `${stress?…}` defaults, a 10 s `smtpd_timeout`, one error allowed), so that an idle or
/// slow connection costs a task and a descriptor, not a turn, and is dropped quickly; a
/// good client gets its banner at once. Only past the stress allowance ([`OVERLOAD`]) does
/// the loop wait for a permit as before.
async fn accept_loop(
    listener: TcpListener,
    bound: Option<SocketAddr>,
    slot: Arc<Slot>,
    ident: String,
    name: String,
) {
    let overload = OVERLOAD
        .get_or_init(|| Arc::new(Semaphore::new(raise_nofile())))
        .clone();
    let endpoint = if name.contains(':') {
        name.clone()
    } else {
        bound
            .map(|b| b.port().to_string())
            .unwrap_or_else(|| name.clone())
    };
    let mut warned: Option<std::time::Instant> = None;
    loop {
        let (service, limit) = slot.current();
        let mut stressed = None;
        let permit = match &limit {
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(tokio::sync::TryAcquireError::Closed) => return,
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    match overload.clone().try_acquire_owned() {
                        Ok(o) => {
                            stressed = Some(o);
                            None
                        }
                        Err(_) => match sem.clone().acquire_owned().await {
                            Ok(p) => Some(p),
                            Err(_) => return,
                        },
                    }
                }
            },
            None => None,
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: say so and back off rather than spin.
                log::warning(&ident, &format!("service {name}: accept: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let local = stream
            .local_addr()
            .ok()
            .or(bound)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        match stressed {
            Some(o) => {
                let limit = slot.limit_value().unwrap_or(0);
                warn_process_limit(&ident, &name, &endpoint, limit, &mut warned);
                tokio::spawn(async move {
                    service.handle_stressed(stream, peer).await;
                    drop(o);
                });
            }
            None => {
                tokio::spawn(async move {
                    service.handle(stream, peer, local).await;
                    drop(permit);
                });
            }
        }
    }
}

/// SIGHUP: re-read main.cf and master.cf; new connections get the new configuration.
fn reload(cfg: &mut PostfixConfig, ident: &str, running: &mut HashMap<String, Running>) {
    let dir = cfg.config_dir.clone();
    let new_cfg = match super::load_config(Some(&dir)) {
        Ok(c) => c,
        Err(e) => {
            log::warning(
                ident,
                &format!("reload: {e}; keeping the previous configuration"),
            );
            return;
        }
    };
    if let Err(e) = log::configure(&new_cfg) {
        log::warning(
            ident,
            &format!("reload: {e}; keeping the previous log settings"),
        );
    }
    for w in &new_cfg.warnings {
        log::warning(ident, w);
    }
    let specs = match super::smtpd_services(&new_cfg, ident) {
        Ok(s) => s,
        Err(e) => {
            log::warning(
                ident,
                &format!("reload: {e}; keeping the previous configuration"),
            );
            return;
        }
    };
    let mut seen = Vec::new();
    for spec in &specs {
        seen.push(spec.name.clone());
        if let Some(r) = running.get(&spec.name) {
            let state = match new_state(&new_cfg, spec) {
                Ok(s) => s,
                Err(e) => {
                    log::warning(
                        ident,
                        &format!(
                            "reload: service {}: {e:#}; keeping its previous configuration",
                            spec.name
                        ),
                    );
                    continue;
                }
            };
            let mut guard = match r.slot.state.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            guard.service = state.service;
            if guard.limit_value != state.limit_value {
                guard.limit = state.limit;
                guard.limit_value = state.limit_value;
            }
            continue;
        }
        // A service new in master.cf.
        let mut ls = Vec::new();
        for a in &spec.addrs {
            match super::listen::bind_listener(*a, 100) {
                Ok(l) => ls.push(l),
                Err(e) => log::warning(ident, &format!("service {}: {e}", spec.name)),
            }
        }
        if ls.is_empty() {
            continue;
        }
        let started = new_state(&new_cfg, spec)
            .map_err(|e| format!("service {}: {e:#}", spec.name))
            .and_then(|state| start_service(state, ident, spec, ls));
        match started {
            Ok(r) => {
                running.insert(spec.name.clone(), r);
            }
            Err(e) => log::warning(ident, &e),
        }
    }
    // Services gone from master.cf stop accepting; their sessions finish.
    running.retain(|name, r| {
        let keep = seen.contains(name);
        if !keep {
            for t in &r.tasks {
                t.abort();
            }
        }
        keep
    });
    *cfg = new_cfg;
}
