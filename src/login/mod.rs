//! login: Dovecot's login stage, shared by POP3 and IMAP (`pop3-login`, `imap-login`).
//!
//! Dovecot runs one unprivileged login process per protocol (`dovecot/pop3-login`,
//! `dovecot/imap-login` in `ps`; `service PROTO-login { user chroot }`). It greets the
//! client, speaks TLS (implicit on `pop3s`/`imaps`, or STLS/STARTTLS), reads the
//! protocol's pre-login commands and hands the credentials, with the client's socket, to
//! the privileged side, which checks them (passdb, userdb) and passes the logged-in
//! session to a mail process running as the user. Postern does the same:
//!
//! * [`process`]: the login process (privileges dropped, chroot, accept loop, the
//!   requests waiting for a verdict);
//! * [`handoff`]: the `SOCK_SEQPACKET` channel between a login process and the service
//!   (credentials + descriptor one way, verdicts the other);
//! * [`conn`]: a client connection (plain, TLS, or proxied by the login process) with
//!   line reading, queued replies and STARTTLS, and the pieces the I/O-free cores share
//!   with it (taking a line from a buffer, the TLS accept, the log line's address fields);
//! * [`pop3`], [`imap`]: each protocol's pre-login grammar, replies worded as Dovecot
//!   2.3.19's `pop3-login` and `imap-login` word them. Both are state machines without
//!   I/O ([`pop3::PreLogin`], [`imap::PreLogin`]: bytes and events in, [`task::Action`]s
//!   out), as the logged-in sessions of [`crate::pop3d::session`] and
//!   [`crate::imapd::session`] are; the unit tests replay Dovecot's recorded dialogues
//!   against them;
//! * [`task`]: the one connection task that drives either core on the client's socket
//!   (reads with the idle timeout, writes, the failure delay, TLS, the login handed to
//!   the service with the client's descriptor, the TLS proxy after it);
//! * [`service`]: the service side of a login, common to both protocols (password and
//!   userdb check, `first_valid_uid`, `mail_max_userip_connections`);
//! * [`mailproc`]: the mail processes (`dovecot/imap`, `dovecot/pop3`) that serve the
//!   logged-in sessions as the mail user, one per user identity, started by the service;
//! * [`DovecotLog`]: Dovecot-format log lines (`log_path`, or syslog facility mail).
//!
//! `dovecot.conf` settings read here: `login_greeting`, `disable_plaintext_auth`, `ssl`,
//! `ssl_cert`/`ssl_key`, `login_trusted_networks`, `auth_mechanisms`,
//! `auth_failure_delay`, `service PROTO-login { user chroot }`, `default_login_user`,
//! `log_path`; `imap_max_line_length` is the post-login limit (the login stage has
//! Dovecot's fixed 4 kB input buffer).
//!
//! The master side (binding the listeners from `protocols` and the `inet_listener`s,
//! starting one login process per protocol, reloads) is `crate::cli::dovecot`.

pub mod conn;
pub mod handoff;
pub mod imap;
pub mod mailproc;
pub mod pop3;
pub mod process;
pub mod service;
pub mod task;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;

use crate::config::dovecot::DovecotConf;
use crate::maps::cidr::Cidr;

/// The protocols with a login stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Pop3,
    Imap,
}

impl Protocol {
    /// `pop3`, `imap`: the name in `protocols`, in log prefixes and in the userdb's
    /// `%s`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Pop3 => "pop3",
            Protocol::Imap => "imap",
        }
    }

    /// `pop3-login`, `imap-login`: the login service's name.
    pub fn login_service(self) -> &'static str {
        match self {
            Protocol::Pop3 => "pop3-login",
            Protocol::Imap => "imap-login",
        }
    }

    pub fn from_name(name: &str) -> Option<Protocol> {
        match name {
            "pop3" => Some(Protocol::Pop3),
            "imap" => Some(Protocol::Imap),
            _ => None,
        }
    }
}

/// What a login process needs to know (read from `dovecot.conf` at its start).
pub struct LoginConf {
    pub protocol: Protocol,
    /// `login_greeting` (default `Dovecot ready.`).
    pub greeting: String,
    pub disable_plaintext_auth: bool,
    /// `ssl = required`.
    pub ssl_required: bool,
    /// `login_trusted_networks`.
    pub trusted: Vec<Cidr>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `auth_mechanisms`, upper-cased (`PLAIN`, `LOGIN`, `APOP`).
    pub mechanisms: Vec<String>,
    /// `auth_failure_delay`.
    pub failure_delay: Duration,
    pub log: DovecotLog,
    /// How long a client may stay silent before login.
    pub idle_timeout: Duration,
}

impl LoginConf {
    pub fn from_conf(conf: &DovecotConf, protocol: Protocol) -> anyhow::Result<LoginConf> {
        Ok(LoginConf {
            protocol,
            greeting: conf.login_greeting().to_string(),
            disable_plaintext_auth: conf.disable_plaintext_auth(),
            ssl_required: conf.ssl() == "required",
            trusted: parse_networks(&conf.login_trusted_networks()),
            tls: tls_from_conf(conf)?,
            mechanisms: mechanisms(conf),
            failure_delay: Duration::from_secs(conf.auth_failure_delay()),
            log: DovecotLog::from_conf(conf),
            // Dovecot's login processes: 3 min for a client that has not logged in.
            idle_timeout: Duration::from_secs(180),
        })
    }

    /// Dovecot 2.3's "secured" (`login-common/client-common.c`): TLS, or a client
    /// connecting from the address it connected to (a local client: `127.0.0.1` to
    /// `127.0.0.1`), or from a `login_trusted_networks` entry. Another loopback address
    /// (`127.0.0.2` to `127.0.0.1`) is not secured, as in Dovecot.
    pub fn is_secured(&self, tls: bool, remote: SocketAddr, local: SocketAddr) -> bool {
        is_secured(&self.trusted, tls, remote, local)
    }

    /// Dovecot's `client_check_plaintext_auth`: whether a password may be sent in clear.
    pub fn plaintext_allowed(&self, tls: bool, remote: SocketAddr, local: SocketAddr) -> bool {
        self.is_secured(tls, remote, local) || (!self.disable_plaintext_auth && !self.ssl_required)
    }
}

/// See [`LoginConf::is_secured`].
pub fn is_secured(trusted: &[Cidr], tls: bool, remote: SocketAddr, local: SocketAddr) -> bool {
    tls || remote.ip() == local.ip() || trusted.iter().any(|n| n.contains(remote.ip()))
}

/// `auth_mechanisms` as the auth process offers them: upper-cased, default `PLAIN`.
pub fn mechanisms(conf: &DovecotConf) -> Vec<String> {
    let mut m: Vec<String> = conf
        .auth_mechanisms()
        .iter()
        .map(|m| m.to_ascii_uppercase())
        .collect();
    if m.is_empty() {
        m.push("PLAIN".into());
    }
    m
}

/// The TLS configuration `ssl`, `ssl_cert` and `ssl_key` describe (`None` with `ssl =
/// no` or without a certificate).
pub fn tls_from_conf(conf: &DovecotConf) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    if conf.ssl() != "no" && !conf.ssl_cert().is_empty() {
        Ok(Some(Arc::new(load_tls(conf.ssl_cert(), conf.ssl_key())?)))
    } else {
        Ok(None)
    }
}

/// A new session id as Dovecot prints it (`session=<…>`): 12 bytes of time and counter,
/// base64 without padding.
pub fn session_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&(t.as_micros() as u64).to_be_bytes());
    b.extend_from_slice(&(N.fetch_add(1, Ordering::Relaxed) as u32).to_be_bytes());
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)
}

/// Where Dovecot-format log lines go: `log_path` (a file, `Nov 28 14:36:43 pop3-login:
/// Info: …` as Dovecot writes it) or syslog facility `mail` (ident `dovecot`).
#[derive(Debug, Clone)]
pub enum DovecotLog {
    File(PathBuf),
    Syslog,
    Stderr,
}

impl DovecotLog {
    pub fn from_conf(conf: &DovecotConf) -> DovecotLog {
        match conf.log_path() {
            "syslog" | "" => DovecotLog::Syslog,
            "/dev/stderr" => DovecotLog::Stderr,
            p => DovecotLog::File(PathBuf::from(p)),
        }
    }

    /// Log `text` (e.g. `pop3-login: Info: Login: …`) at Info level.
    pub fn info(&self, text: &str) {
        self.line("Info", text);
    }

    pub fn warning(&self, text: &str) {
        self.line("Warning", text);
    }

    pub fn error(&self, text: &str) {
        self.line("Error", text);
    }

    /// A fatal start-up error (`master: Fatal: …`); the caller exits.
    pub fn fatal(&self, text: &str) {
        self.line("Fatal", text);
    }

    /// Log `text` at `level` (`Info`, `Warning`, `Error`). In a login process the line
    /// goes to the service process, which writes it (see [`relay_logs`]).
    pub fn line(&self, level: &str, text: &str) {
        if let Some(relay) = LOG_RELAY.get() {
            relay(level, text);
            return;
        }
        // `pop3-login: Login: …` becomes `pop3-login: Info: Login: …`.
        let (who, what) = text.split_once(": ").unwrap_or(("dovecot", text));
        match self {
            DovecotLog::File(p) => {
                use std::io::Write;
                let stamp = local_stamp();
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(p)
                {
                    // One write(2) per line: sessions on other threads log at the same
                    // time, and O_APPEND keeps whole writes apart, not pieces.
                    let line = format!("{stamp} {who}: {level}: {what}\n");
                    let _ = f.write_all(line.as_bytes());
                }
            }
            DovecotLog::Syslog => {
                // As Dovecot's syslog handler: the level word except for Info, and the
                // syslog priority to match (`dovecot: master: Fatal: …` at LOG_CRIT).
                let (prio, t) = match level {
                    "Info" => (6, format!("{who}: {what}")),
                    "Warning" => (4, format!("{who}: {level}: {what}")),
                    "Error" => (3, format!("{who}: {level}: {what}")),
                    _ => (2, format!("{who}: {level}: {what}")),
                };
                crate::log::plain(prio, "dovecot", &t);
            }
            DovecotLog::Stderr => eprintln!("{who}: {level}: {what}"),
        }
    }
}

type Relay = Box<dyn Fn(&str, &str) + Send + Sync>;

static LOG_RELAY: std::sync::OnceLock<Relay> = std::sync::OnceLock::new();

/// Send every log line of this process to `relay` instead of `log_path` or syslog: the
/// login process runs without the rights to open the log, and Dovecot's login processes
/// likewise hand their lines to the log process.
pub fn relay_logs(relay: Relay) {
    let _ = LOG_RELAY.set(relay);
}

/// `Nov 28 14:36:43` in local time, as Dovecot's `log_timestamp` default.
fn local_stamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let tm = crate::sys::time::local(now).unwrap_or_else(crate::sys::time::blank_tm);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {:02} {:02}:{:02}:{:02}",
        MONTHS[tm.tm_mon.rem_euclid(12) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// Parse `login_trusted_networks` entries (`10.0.0.0/8`, `192.0.2.1`, `::1/128`; host
/// bits may be set, as Dovecot's `net_parse_range` allows); matched with the one CIDR
/// matcher, [`crate::maps::cidr::Cidr`].
pub fn parse_networks(words: &[String]) -> Vec<Cidr> {
    words
        .iter()
        .filter_map(|w| {
            let (a, p) = w.split_once('/').unwrap_or((w, ""));
            let ip: IpAddr = a.parse().ok()?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let p = if p.is_empty() { max } else { p.parse().ok()? };
            Some(Cidr::new(ip, p))
        })
        .collect()
}

/// A `ssl_cert`/`ssl_key` value: `<FILE` (2.x: the file's contents) or a path (1.x
/// `ssl_cert_file`), or inline PEM.
fn pem_bytes(v: &str) -> anyhow::Result<Vec<u8>> {
    let v = v.trim();
    if v.starts_with("-----BEGIN") {
        return Ok(v.as_bytes().to_vec());
    }
    let p = v.strip_prefix('<').unwrap_or(v).trim();
    std::fs::read(Path::new(p)).map_err(|e| anyhow::anyhow!("{p}: {e}"))
}

/// rustls server config from `ssl_cert`/`ssl_key` (`crate::tls`).
pub fn load_tls(cert: &str, key: &str) -> anyhow::Result<rustls::ServerConfig> {
    let cert_pem = pem_bytes(cert)?;
    let key_pem = pem_bytes(if key.is_empty() { cert } else { key })?;
    crate::tls::server_config(&cert_pem, &key_pem, "ssl_cert")
}

/// Sessions run on tokio's worker threads and hop to blocking threads; glibc gives each
/// thread that allocates its own arena (up to 8 per CPU), each keeping its freed memory.
/// One arena serves a POP3 service (measured by `scripts/bench-pop3`: the same sessions
/// per second, about 1 MB less at 8 sessions than with two). To be called before the
/// runtime starts its threads: an arena a thread already has stays.
pub fn limit_malloc_arenas() {
    crate::sys::mem::limit_arenas(1);
}

/// `exited with status 1`, `killed with signal 9` (Dovecot's wording).
pub fn describe_exit(status: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) if s.signal().is_some() => {
            format!("killed with signal {}", s.signal().unwrap_or(0))
        }
        Some(s) => format!("returned error {}", s.code().unwrap_or(0)),
        None => "vanished".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let n = parse_networks(&["10.0.0.0/8".into(), "192.0.2.1".into(), "bad".into()]);
        assert_eq!(n.len(), 2);
        assert!(n[0].contains("10.1.2.3".parse().expect("ip")));
        assert!(!n[0].contains("11.1.2.3".parse().expect("ip")));
        assert!(n[1].contains("192.0.2.1".parse().expect("ip")));
        // Host bits set, as Dovecot accepts them; the family must match.
        let h = parse_networks(&["10.1.2.3/8".into()]);
        assert!(h[0].contains("10.200.0.1".parse().expect("ip")));
        assert!(!h[0].contains("::ffff:10.1.2.3".parse().expect("ip")));
    }

    #[test]
    fn secured_as_dovecot() {
        let l: SocketAddr = "127.0.0.1:143".parse().expect("addr");
        let same: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let other: SocketAddr = "127.0.0.2:5000".parse().expect("addr");
        assert!(is_secured(&[], false, same, l));
        assert!(!is_secured(&[], false, other, l));
        assert!(is_secured(&[], true, other, l));
        let t = parse_networks(&["127.0.0.0/8".into()]);
        assert!(is_secured(&t, false, other, l));
    }
}
