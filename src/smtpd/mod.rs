//! Postfix's `smtpd`: the SMTP server.
//!
//! * [`session`] — the protocol core of one connection: ESMTP commands, replies and log
//!   lines as Postfix 3.7, a state machine fed the client's input that returns what to
//!   send and do; [`session::drive`] carries that out over any [`transport::Transport`];
//! * [`transport`] — what a session reads and writes: the client socket (the
//!   [`crate::tls::Io`] POP3 and IMAP use), or a recorded script (`tests`, which
//!   replays the recorded Postfix transcripts against the core in process);
//! * [`check`] — the restriction engine (`smtpd_*_restrictions`, access maps, relay rules);
//! * [`address`] — MAIL/RCPT argument parsing, address classes;
//! * [`params`] — the main.cf parameters it reads;
//! * [`sasl`] — the SASL hook (PLAIN, LOGIN; saslauthd backend).
//!
//! A [`SmtpdService`] is one master.cf `smtpd` line. The master (`src/master/`) binds its
//! listener; the smtpd process (`src/master/serve.rs`, `mail_owner` once the services are
//! built) hands each accepted connection to [`SmtpdService::handle`]. On reload the
//! master calls [`SmtpdService::reconfigure`]; sessions in progress keep the state they
//! started with.
//!
//! Faults (issue 17): a panic in a session is logged as Postfix's `msg_panic` logs
//! (`postfix/smtpd[PID]: panic: FILE:LINE:COL: message`, [`crate::log::install_panic_hook`])
//! and ends that session alone; `$POSTERN_TEST_PANIC=VERB` in the master's environment
//! makes a session panic at that command, for the tests. RCPTs past `smtpd_recipient_limit`
//! are answered as Postfix's smtpd.c answers them (`smtpd_recipient_overshoot_limit`), an
//! over-long command line is logged (`request longer than N`), and
//! `smtpd_starttls_timeout` bounds the TLS handshake. `smtpd_tls_wrappermode = yes` (SMTPS,
//! master.cf's `-o` on a port-465 service) starts TLS before the greeting, as Postfix does.

pub mod address;
pub mod check;
pub mod params;
pub use crate::auth::sasl;
pub mod session;
pub mod transport;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::config::postfix::PostfixConfig;
use crate::log;
use crate::queue::Queue;

/// What a session needs, rebuilt on reload.
pub struct ServiceState {
    pub params: params::Params,
    pub tables: check::Tables,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Option<Arc<dyn sasl::Authenticator>>,
    /// `smtpd_sasl_type = dovecot`: the auth socket (`smtpd_sasl_path`), connected per
    /// session.
    pub dovecot_auth_socket: Option<PathBuf>,
}

/// One master.cf `smtpd` service: its configuration (main.cf with the service's `-o`
/// overrides applied) and what its sessions share.
pub struct SmtpdService {
    pub name: String,
    state: RwLock<Arc<ServiceState>>,
    /// The same with `stress = yes` (Postfix's `${stress?{…}:{…}}` defaults: 10 s
    /// `smtpd_timeout`, `smtpd_hard_error_limit` 1, …), for sessions over maxproc.
    stressed: RwLock<Arc<ServiceState>>,
    pub queue: Option<Arc<Queue>>,
    clients: Mutex<HashMap<IpAddr, u32>>,
    shutdown: AtomicBool,
}

/// Queues are shared by every service of one queue directory.
fn queue_for(cfg: &PostfixConfig) -> Option<Arc<Queue>> {
    static QUEUES: OnceLock<Mutex<HashMap<PathBuf, Arc<Queue>>>> = OnceLock::new();
    let dir = PathBuf::from(cfg.get("queue_directory").unwrap_or_default());
    let m = QUEUES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(q) = m.get(&dir) {
        return Some(q.clone());
    }
    match Queue::open(cfg) {
        Ok(q) => {
            m.insert(dir, q.clone());
            Some(q)
        }
        Err(e) => {
            log::fatal(
                "postfix/smtpd",
                &format!("cannot open the mail queue: {e:#}"),
            );
            None
        }
    }
}

impl SmtpdService {
    /// `service_name` is master.cf's first column (`smtp`, `submission`, `127.0.0.1:2525`).
    pub fn new(cfg: PostfixConfig, service_name: &str) -> anyhow::Result<Arc<Self>> {
        let queue = queue_for(&cfg);
        let state = Arc::new(build_state(&cfg));
        let stressed = stressed_state(&cfg, &state);
        Ok(Arc::new(SmtpdService {
            name: service_name.to_string(),
            state: RwLock::new(state),
            stressed: RwLock::new(stressed),
            queue,
            clients: Mutex::new(HashMap::new()),
            shutdown: AtomicBool::new(false),
        }))
    }

    /// The service of a stand-alone session (`sendmail -bs`, Postfix's `smtpd -S`): as
    /// smtpd.c does in that mode, no TLS (`smtpd_use_tls`, `smtpd_enforce_tls` and
    /// `smtpd_tls_auth_only` off) and no SASL (`smtpd_sasl_auth_enable` off), and no queue
    /// of its own: the session hands its messages to a [`session::Maildrop`].
    pub fn stand_alone(cfg: &PostfixConfig) -> Arc<Self> {
        let mut params = params::Params::from_config(cfg);
        params.tls_level = params::TlsLevel::None;
        params.tls_auth_only = false;
        params.sasl_auth_enable = false;
        let state = Arc::new(ServiceState {
            params,
            tables: check::Tables,
            tls: None,
            auth: None,
            dovecot_auth_socket: None,
        });
        Arc::new(SmtpdService {
            name: "smtp".to_string(),
            state: RwLock::new(state.clone()),
            stressed: RwLock::new(state),
            queue: None,
            clients: Mutex::new(HashMap::new()),
            shutdown: AtomicBool::new(false),
        })
    }

    /// Apply a re-read configuration to new sessions (SIGHUP).
    pub fn reconfigure(&self, cfg: PostfixConfig) {
        let st = Arc::new(build_state(&cfg));
        *self.stressed.write().unwrap_or_else(|e| e.into_inner()) = stressed_state(&cfg, &st);
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = st;
    }

    /// Ask sessions to end at their next command.
    pub fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
    }

    fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    fn state(&self) -> Arc<ServiceState> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn stressed_state(&self) -> Arc<ServiceState> {
        self.stressed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn client_connect(&self, ip: IpAddr) -> u32 {
        let mut m = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let c = m.entry(ip).or_insert(0);
        *c += 1;
        *c
    }

    fn client_disconnect(&self, ip: IpAddr) {
        let mut m = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = m.get_mut(&ip) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                m.remove(&ip);
            }
        }
    }

    /// Serve one accepted connection until the client quits or the session ends.
    pub async fn handle(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        _local: SocketAddr,
    ) {
        let _ = stream.set_nodelay(true);
        let session = session::Session::new(self, peer, false);
        session::drive(session, crate::tls::Io::Plain(stream)).await;
    }

    /// [`handle`](Self::handle) for a connection over the service's process limit: the
    /// session runs with the `stress = yes` parameters, as Postfix's smtpd does when the
    /// master says it is overloaded.
    pub async fn handle_stressed(self: Arc<Self>, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let session = session::Session::new(self, peer, true);
        session::drive(session, crate::tls::Io::Plain(stream)).await;
    }
}

/// The state for sessions over the process limit: `cfg` with `stress = yes` for the
/// parameters (TLS and SASL shared with `normal`).
fn stressed_state(cfg: &PostfixConfig, normal: &Arc<ServiceState>) -> Arc<ServiceState> {
    let cfg = cfg.with_overrides(&[("stress".to_string(), "yes".to_string())]);
    Arc::new(ServiceState {
        params: params::Params::from_config(&cfg),
        tables: check::Tables,
        tls: normal.tls.clone(),
        auth: normal.auth.clone(),
        dovecot_auth_socket: normal.dovecot_auth_socket.clone(),
    })
}

fn build_state(cfg: &PostfixConfig) -> ServiceState {
    let p = params::Params::from_config(cfg);
    // smtpd.c: TLS is set up for STARTTLS (a security level) or for wrapper mode.
    let tls = if p.tls_level != params::TlsLevel::None || p.tls_wrappermode {
        match load_tls(&p) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                log::warning(
                    &p.syslog_ident,
                    &format!("cannot load TLS certificate: {e:#}: disabling TLS support"),
                );
                None
            }
        }
    } else {
        None
    };
    let sasl_type = cfg.get("smtpd_sasl_type").unwrap_or_default();
    let dovecot_auth_socket = (p.sasl_auth_enable && sasl_type.trim() == "dovecot").then(|| {
        // A relative smtpd_sasl_path is below queue_directory, as in Postfix
        // (`private/auth`).
        let path = PathBuf::from(cfg.get("smtpd_sasl_path").unwrap_or_default().trim());
        if path.is_absolute() {
            path
        } else {
            PathBuf::from(cfg.get("queue_directory").unwrap_or_default()).join(path)
        }
    });
    let auth = if p.sasl_auth_enable && dovecot_auth_socket.is_none() {
        load_sasl(cfg, &p)
    } else {
        None
    };
    ServiceState {
        params: p,
        tables: check::Tables,
        tls,
        auth,
        dovecot_auth_socket,
    }
}

/// rustls server config from `smtpd_tls_chain_files` (key first or anywhere in the files,
/// as Postfix allows) or `smtpd_tls_cert_file` + `smtpd_tls_key_file` (PEM).
fn load_tls(p: &params::Params) -> anyhow::Result<rustls::ServerConfig> {
    let (cert_files, key_file): (Vec<String>, String) = if !p.tls_chain_files.is_empty() {
        (p.tls_chain_files.clone(), p.tls_chain_files[0].clone())
    } else {
        (vec![p.tls_cert_file.clone()], p.tls_key_file.clone())
    };
    anyhow::ensure!(
        !cert_files.iter().all(|f| f.is_empty()),
        "no smtpd_tls_cert_file or smtpd_tls_chain_files"
    );
    let mut certs = Vec::new();
    for f in &cert_files {
        certs.extend(std::fs::read(f).map_err(|e| anyhow::anyhow!("{f}: {e}"))?);
        certs.push(b'\n');
    }
    let key = std::fs::read(&key_file).map_err(|e| anyhow::anyhow!("{key_file}: {e}"))?;
    crate::tls::server_config(&certs, &key, &cert_files.join(", "))
}

/// The Cyrus SASL application file (`$smtpd_sasl_path.conf`) along Postfix's search path
/// (`config::sasl::find_app_config`): `mech_list` orders the offer, `saslauthd_path` names
/// the socket for `pwcheck_method: saslauthd`.
fn load_sasl(cfg: &PostfixConfig, p: &params::Params) -> Option<Arc<dyn sasl::Authenticator>> {
    let app = cfg.get("smtpd_sasl_path").unwrap_or_else(|| "smtpd".into());
    let conf_dir = cfg.get("config_directory").unwrap_or_default();
    let search = crate::config::sasl::find_app_config(
        &app,
        &cfg.get("cyrus_sasl_config_path").unwrap_or_default(),
        Path::new(&conf_dir),
    );
    let mut mechs = vec!["PLAIN".to_string(), "LOGIN".to_string()];
    let mut socket = PathBuf::from("/run/saslauthd/mux");
    match &search.config {
        Some(Ok(c)) => {
            if let Some(m) = c.mech_list() {
                mechs = m.into_iter().map(|m| m.to_ascii_uppercase()).collect();
            }
            if let Some(s) = c.saslauthd_path() {
                socket = PathBuf::from(s);
            }
        }
        Some(Err(e)) => log::warning(&p.syslog_ident, &format!("SASL configuration: {e}")),
        None => {}
    }
    // Only PLAIN and LOGIN are implemented: offer those, in mech_list order.
    let mechs: Vec<String> = mechs
        .into_iter()
        .filter(|m| m == "PLAIN" || m == "LOGIN")
        .collect();
    Some(Arc::new(sasl::Saslauthd { socket, mechs }))
}
