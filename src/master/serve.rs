//! The master's event loop: one accept loop per listening socket, signals, reload.
//!
//! Each master.cf service has a [`Slot`]: the [`SmtpdService`] new connections get and the
//! semaphore that caps its concurrent sessions at master.cf's maxproc (`-` =
//! `default_process_limit`, `0` = no limit). The accept loop takes a permit *before*
//! accepting, so that over the limit further clients wait in the kernel's listen queue, as
//! they do with Postfix's master when all smtpd processes are busy. A reload swaps the
//! slot's contents; sessions in progress keep the service (and permit) they started with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::{ServiceSpec, Started, config_directory, mail_version};
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
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
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

/// Serve until SIGTERM/SIGINT. Returns the exit status.
pub fn serve(started: Started) -> i32 {
    let Started {
        rt,
        signals,
        cfg,
        ident,
        pid_lock,
        data_lock,
        services,
    } = started;
    let code = rt.block_on(main_loop(
        signals, cfg, ident, pid_lock, data_lock, services,
    ));
    rt.shutdown_background();
    code
}

async fn main_loop(
    signals: Signals,
    mut cfg: PostfixConfig,
    ident: String,
    pid_lock: super::lock::LockFile,
    data_lock: super::lock::LockFile,
    services: super::StartedServices,
) -> i32 {
    let Signals {
        mut hup,
        mut term,
        mut int,
    } = signals;
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
                pid_lock.remove();
                return 1;
            }
        }
    }

    let signo = loop {
        tokio::select! {
            _ = hup.recv() => {
                // Every table is read again, as Postfix's daemons are restarted (a table
                // that could not be opened is tried again at once).
                crate::maps::cache::global().clear();
                log::info(&ident, &format!(
                    "reload -- version {}, configuration {}",
                    mail_version(&cfg),
                    config_directory(&cfg)
                ));
                reload(&mut cfg, &ident, &mut running);
                crate::qmgr::notify_reload();
            }
            _ = term.recv() => break libc::SIGTERM,
            _ = int.recv() => break libc::SIGINT,
        }
    };
    log::info(&ident, &format!("terminating on signal {signo}"));
    for r in running.values() {
        for t in &r.tasks {
            t.abort();
        }
    }
    pid_lock.remove();
    drop(data_lock);
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

async fn accept_loop(
    listener: TcpListener,
    bound: Option<SocketAddr>,
    slot: Arc<Slot>,
    ident: String,
    name: String,
) {
    loop {
        let (service, limit) = slot.current();
        let permit = match limit {
            Some(sem) => match sem.acquire_owned().await {
                Ok(p) => Some(p),
                Err(_) => return,
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
        tokio::spawn(async move {
            service.handle(stream, peer, local).await;
            drop(permit);
        });
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
