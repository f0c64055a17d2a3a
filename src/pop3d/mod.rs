//! pop3d: Dovecot's POP3 service (`pop3-login` + `pop3`), RFC 1939 with CAPA and
//! RESP-CODES (RFC 2449), STLS (RFC 2595) and AUTH (RFC 5034), replies worded exactly as
//! Dovecot 2.3.19 words them (recorded from the real program; see `man/pop3d.8`).
//!
//! `dovecot.conf` settings read: `protocols`, the `pop3`/`pop3s` listeners, `ssl`,
//! `ssl_cert`/`ssl_key` (`<file` form; 1.x `ssl_cert_file`/`ssl_key_file` through the
//! config layer), `disable_plaintext_auth`, `login_trusted_networks`, `login_greeting`,
//! `auth_mechanisms`, `auth_failure_delay`, `auth_username_format`, passdbs and userdbs
//! (through [`crate::auth::dovecot`]), `mail_location`, `pop3_uidl_format`,
//! `mail_max_userip_connections`, `first_valid_uid`, `mbox_lock_timeout`,
//! `mbox_write_locks` (a dotlock only when it names `dotlock`), `mail_privileged_group`
//! (the group a spool dotlock is made with, [`crate::mailbox::lock`]), `log_path`,
//! `pop3_lock_session` (Dovecot's `dovecot-pop3-session.lock`, see
//! [`crate::mailbox::lock::pop3_session_lock`]).
//!
//! Mailbox access goes through [`crate::mailbox`]'s store: the INBOX is a
//! [`crate::mailbox::Folder`] opened for POP3 (no MODSEQs or \\Recent kept); UIDLs
//! ([`uidl`]) and the UPDATE state are this module's. Deletions are kept in the session and
//! committed only by QUIT (the UPDATE state): a client that vanishes deletes nothing.
//!
//! Privileges (`DESIGN.md` §3): clients are served until they have logged in by an
//! unprivileged login process ([`login`]), which hands credentials and connections to
//! the service process over a [`handoff`] channel. In the service (root when started as
//! root), each mailbox operation runs with the filesystem uid/gid (`setfsuid`/
//! `setfsgid`, per thread on Linux) of the user from the userdb, so the file checks are
//! the user's own.
//!
//! APOP (with `apop` in `auth_mechanisms`): Dovecot's timestamp in the greeting, the
//! digest checked against the plaintext password of a `passwd-file` passdb
//! ([`crate::auth::dovecot::DovecotAuth::plaintext_password`]).
//!
//! Flags as Dovecot 2.3.19 (`pop3_no_flag_updates`, default no): Maildir `new/` → `cur/`
//! when the INBOX is opened, \Seen for RETR'd messages at QUIT (`man/pop3d.8`).
//! `auth_cache_size`/`auth_cache_ttl`/`auth_cache_negative_ttl`:
//! [`crate::auth::dovecot::AuthCache`].
//!
//! Known limits (XXX): no supplementary groups in the per-thread identity; logged-in
//! sessions share the service process (Dovecot forks one per user).

pub mod handoff;
pub mod login;
pub mod session;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::auth::dovecot::DovecotAuth;
use crate::config::dovecot::DovecotConf;

/// Render `pop3_uidl_format` for one message: `%u` UID, `%v` UIDVALIDITY, `%f` Maildir file
/// base name, `%%`, with Dovecot's width, zero padding and modifiers (`%08Xu`: lower-case
/// hex, as Dovecot prints it). `%m` (header MD5) and `%g` (GUID) are not supported and
/// render empty (XXX).
pub fn uidl(format: &str, uid_validity: u32, uid: u32, file_base: &str) -> String {
    let value = |key: &str| match key {
        "u" => Some(uid.to_string()),
        "v" => Some(uid_validity.to_string()),
        "f" => Some(file_base.to_string()),
        _ => None,
    };
    crate::config::dovecot::var_expand::var_expand(format, value, |_| String::new())
}

/// Settings and shared state of the POP3 service.
pub struct Pop3State {
    pub greeting: String,
    pub disable_plaintext_auth: bool,
    /// `ssl = required`.
    pub ssl_required: bool,
    pub trusted: Vec<(IpAddr, u8)>,
    pub uidl_format: String,
    pub mail_location: String,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Arc<DovecotAuth>,
    /// `auth_cache_size` > 0: Dovecot's authentication cache. A reload starts an empty
    /// one, as the restarted auth process of Dovecot does.
    pub auth_cache: Option<Arc<crate::auth::dovecot::AuthCache>>,
    pub max_userip: u32,
    pub log: DovecotLog,
    /// Logged-in sessions per (user, remote IP).
    pub userip: Mutex<std::collections::HashMap<(String, IpAddr), u32>>,
    pub idle_timeout: Duration,
    /// `first_valid_uid` (default 500): lower mail uids are refused, as in Dovecot.
    pub first_valid_uid: u32,
    /// `mbox_lock_timeout` (default 5 min).
    pub mbox: crate::mailbox::MboxOptions,
    /// `pop3_lock_session` (default no): one POP3 session per mailbox at a time.
    pub lock_session: bool,
    /// `pop3_client_workarounds`: `outlook-no-nuls` (NUL bytes sent as 0x80).
    pub outlook_no_nuls: bool,
    /// `pop3_client_workarounds`: `oe-ns-eoh` (a missing end-of-headers line is sent).
    pub oe_ns_eoh: bool,
    /// `pop3_no_flag_updates` (default no): with `no`, RETR'd messages are marked \\Seen
    /// at QUIT and Maildir messages leave `new/` when the session opens the INBOX.
    pub no_flag_updates: bool,
    /// `pop3_logout_format` (default `top=%t/%p, retr=%r/%b, del=%d/%m, size=%s`).
    pub logout_format: String,
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

    /// Log `text` at `level` (`Info`, `Warning`, `Error`). In the login process the line
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
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: a zeroed `tm` is valid and localtime_r fills it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    unsafe { libc::localtime_r(&now, &mut tm) };
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

/// Parse `login_trusted_networks` entries (`10.0.0.0/8`, `192.0.2.1`, `::1/128`).
pub fn parse_networks(words: &[String]) -> Vec<(IpAddr, u8)> {
    words
        .iter()
        .filter_map(|w| {
            let (a, p) = w.split_once('/').unwrap_or((w, ""));
            let ip: IpAddr = a.parse().ok()?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let p = if p.is_empty() { max } else { p.parse().ok()? };
            Some((ip, p.min(max)))
        })
        .collect()
}

fn in_network(ip: IpAddr, (net, prefix): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl Pop3State {
    /// Build from a loaded `dovecot.conf`.
    pub fn from_conf(conf: &DovecotConf) -> anyhow::Result<Pop3State> {
        let auth = DovecotAuth::from_conf(conf).map_err(|e| anyhow::anyhow!("{e}"))?;
        let ssl = conf.ssl();
        let tls = if ssl != "no" && !conf.ssl_cert().is_empty() {
            Some(Arc::new(load_tls(conf.ssl_cert(), conf.ssl_key())?))
        } else {
            None
        };
        Ok(Pop3State {
            greeting: conf.login_greeting().to_string(),
            disable_plaintext_auth: conf.disable_plaintext_auth(),
            ssl_required: ssl == "required",
            trusted: parse_networks(&conf.login_trusted_networks()),
            uidl_format: conf.pop3_uidl_format().to_string(),
            mail_location: conf.mail_location().to_string(),
            tls,
            auth: Arc::new(auth),
            auth_cache: crate::auth::dovecot::AuthCache::from_conf(conf),
            max_userip: conf.mail_max_userip_connections("pop3"),
            log: DovecotLog::from_conf(conf),
            userip: Mutex::new(Default::default()),
            idle_timeout: Duration::from_secs(600),
            first_valid_uid: conf
                .get("first_valid_uid")
                .and_then(|v| v.parse().ok())
                .unwrap_or(500),
            mbox: crate::mailbox::MboxOptions {
                lock_timeout: Duration::from_secs(
                    conf.get("mbox_lock_timeout")
                        .and_then(|v| crate::config::dovecot::settings::parse_time(v).ok())
                        .unwrap_or(300),
                ),
                // `mbox_write_locks` (default `fcntl dotlock`): the dotlock only if named.
                dotlock: conf
                    .get("mbox_write_locks")
                    .unwrap_or("fcntl dotlock")
                    .split_whitespace()
                    .any(|m| m == "dotlock" || m == "dotlock_try"),
                privileged_gid: privileged_gid(conf)?,
                ..Default::default()
            },
            outlook_no_nuls: workaround(conf, "outlook-no-nuls"),
            oe_ns_eoh: workaround(conf, "oe-ns-eoh"),
            lock_session: conf
                .get("pop3_lock_session")
                .is_some_and(|v| crate::config::dovecot::settings::parse_bool(v).unwrap_or(false)),
            no_flag_updates: conf
                .get("pop3_no_flag_updates")
                .is_some_and(|v| crate::config::dovecot::settings::parse_bool(v).unwrap_or(false)),
            logout_format: conf
                .get_for("pop3", "pop3_logout_format")
                .unwrap_or("top=%t/%p, retr=%r/%b, del=%d/%m, size=%s")
                .to_string(),
        })
    }

    /// Dovecot 2.3's "secured" (`login-common/client-common.c`): TLS, or a client
    /// connecting from the address it connected to (a local client: `127.0.0.1` to
    /// `127.0.0.1`), or from a `login_trusted_networks` entry. Another loopback address
    /// (`127.0.0.2` to `127.0.0.1`) is not secured, as in Dovecot.
    /// A session of `key` (user, remote IP) ended: it no longer counts against
    /// `mail_max_userip_connections`.
    pub fn userip_release(&self, key: &(String, IpAddr)) {
        if let Ok(mut m) = self.userip.lock()
            && let Some(n) = m.get_mut(key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(key);
            }
        }
    }

    pub fn is_secured(&self, tls: bool, remote: SocketAddr, local: SocketAddr) -> bool {
        tls || remote.ip() == local.ip() || self.trusted.iter().any(|n| in_network(remote.ip(), *n))
    }
}

/// `mail_privileged_group` resolved to its gid (Dovecot refuses to start with a group that
/// does not exist: `mail_privileged_group: Unknown group name 'X'`).
fn privileged_gid(conf: &DovecotConf) -> anyhow::Result<Option<u32>> {
    let name = conf.get("mail_privileged_group").unwrap_or("").trim();
    if name.is_empty() {
        return Ok(None);
    }
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(Some(gid));
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(Some(g.gid.as_raw())),
        _ => Err(anyhow::anyhow!(
            "mail_privileged_group: Unknown group name '{name}'"
        )),
    }
}

/// Whether `pop3_client_workarounds` lists `name`.
fn workaround(conf: &DovecotConf, name: &str) -> bool {
    conf.get_for("pop3", "pop3_client_workarounds")
        .is_some_and(|v| v.split([' ', ',']).any(|w| w == name))
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
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; M_ARENA_MAX takes any positive value.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Login process: accept POP3 clients on `listener` until `stop` turns true;
/// `implicit_tls` for `pop3s`. `alive` is cloned into each client's task, so that a
/// draining process knows when its last client is gone.
pub async fn serve(
    listener: tokio::net::TcpListener,
    implicit_tls: bool,
    st: Arc<Pop3State>,
    ctl: Arc<login::LoginCtl>,
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
        let (st, ctl, alive) = (st.clone(), ctl.clone(), alive.clone());
        tokio::spawn(async move {
            session::run_login(tcp, remote, implicit_tls, st, ctl).await;
            drop(alive);
        });
    }
}

/// Service process: answer one login process's requests on `ch` until it goes away.
/// Each login request is served with the settings current when it arrives.
pub async fn serve_login_process(
    ch: Arc<handoff::Channel>,
    settings: tokio::sync::watch::Receiver<Arc<Pop3State>>,
) {
    use handoff::{Msg, Verdict};
    while let Ok(Some((msg, fd))) = ch.recv().await {
        match msg {
            Msg::Login(req) => {
                let st = settings.borrow().clone();
                match fd {
                    Some(fd) => {
                        tokio::spawn(session::take_over(st, req, fd, ch.clone()));
                    }
                    None => {
                        let v = Verdict::ReplyClose(
                            "-ERR [SYS/TEMP] Temporary authentication failure.".into(),
                        );
                        let _ = ch
                            .send(
                                &Msg::Verdict {
                                    id: req.id,
                                    verdict: v,
                                },
                                None,
                            )
                            .await;
                    }
                }
            }
            Msg::Log { level, text } => settings.borrow().log.line(&level, &text),
            Msg::Verdict { .. } | Msg::Drain => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mbox_write_locks` decides the dotlock; `mail_privileged_group` must name a group.
    #[test]
    fn mbox_lock_settings() {
        let state = |extra: &str| {
            let c = DovecotConf::from_str(
                &format!(
                    "ssl = no\npassdb {{\n  driver = passwd-file\n  args = /dev/null\n}}\n{extra}"
                ),
                Path::new("t.conf"),
            )
            .expect("conf");
            Pop3State::from_conf(&c)
        };
        assert!(state("").expect("state").mbox.dotlock);
        assert!(
            !state("mbox_write_locks = fcntl\n")
                .expect("state")
                .mbox
                .dotlock
        );
        assert!(
            state("mbox_write_locks = dotlock_try fcntl\n")
                .expect("state")
                .mbox
                .dotlock
        );
        assert_eq!(
            state("mail_privileged_group = 4242\n")
                .expect("state")
                .mbox
                .privileged_gid,
            Some(4242)
        );
        assert_eq!(
            state("mail_privileged_group = no-such-group-here\n")
                .err()
                .map(|e| e.to_string()),
            Some("mail_privileged_group: Unknown group name 'no-such-group-here'".into())
        );
    }

    #[test]
    fn networks() {
        let n = parse_networks(&["10.0.0.0/8".into(), "192.0.2.1".into(), "bad".into()]);
        assert_eq!(n.len(), 2);
        assert!(in_network("10.1.2.3".parse().expect("ip"), n[0]));
        assert!(!in_network("11.1.2.3".parse().expect("ip"), n[0]));
        assert!(in_network("192.0.2.1".parse().expect("ip"), n[1]));
    }

    #[test]
    fn uidl_default_format() {
        assert_eq!(uidl("%08Xu%08Xv", 1795876603, 1, ""), "000000016b0ae6fb");
        assert_eq!(uidl("%v.%u", 7, 1, ""), "7.1");
        assert_eq!(uidl("%f", 7, 1, "123.M1P2.host"), "123.M1P2.host");
    }
}
