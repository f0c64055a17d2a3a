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
//! `mbox_dotlock_change_timeout`, `mbox_read_locks` and `mbox_write_locks` (each lock only
//! when named; lists Dovecot refuses end the session after `+OK Logged in.` with its
//! `Fatal:` line, [`crate::mailbox::lock::session_locks`]), `mail_privileged_group`
//! (the group a spool dotlock is made with, [`crate::mailbox::lock`]), `log_path`,
//! `pop3_lock_session` (Dovecot's `dovecot-pop3-session.lock`, see
//! [`crate::mailbox::lock::pop3_session_lock`]).
//!
//! Mailbox access goes through [`crate::mailbox`]'s store: the INBOX is a
//! [`crate::mailbox::Folder`] opened for POP3 (no MODSEQs or \\Recent kept); UIDLs
//! ([`uidl`]) and the UPDATE state are this module's. Deletions are kept in the session and
//! committed only by QUIT (the UPDATE state): a client that vanishes deletes nothing.
//!
//! Both POP3 stages are state machines without I/O, fed bytes and answering with actions
//! (send, read, start TLS, hand the login over, close), each driven by a thin connection
//! task: [`crate::login::pop3::PreLogin`] before login, [`session::Session`] after it. The
//! recorded Dovecot 2.3.19 dialogue (`compat-fixtures/pop3`) is replayed against the two
//! cores in this module's unit tests, with no socket.
//!
//! Privileges (`DESIGN.md` §3): clients are served until they have logged in by an
//! unprivileged login process (the shared login stage, [`crate::login`]; POP3's
//! pre-login grammar is [`crate::login::pop3`]), which hands credentials and connections
//! to the service process over a [`crate::login::handoff`] channel. The service (root
//! when started as root) checks them, then passes the session to the `dovecot/pop3`
//! mail process of the user's identity ([`crate::login::mailproc`]): uid, gid and groups
//! as Dovecot 2.3.19 gives its pop3 process, taken before any mailbox is read, so every
//! file access is the user's own.
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
//! One mail process serves all sessions of an identity (Dovecot forks one per session).

pub mod session;
#[cfg(test)]
mod transcript;

use std::sync::Arc;
use std::time::Duration;

use crate::auth::dovecot::DovecotAuth;
use crate::config::dovecot::DovecotConf;
use crate::login::service::UserIp;
use crate::login::{LoginConf, Protocol};

pub use crate::login::{DovecotLog, limit_malloc_arenas, load_tls, relay_logs};

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
    /// The login stage's settings (what "secured" means, TLS).
    pub login: LoginConf,
    pub uidl_format: String,
    pub mail_location: String,
    pub auth: Arc<DovecotAuth>,
    /// `auth_cache_size` > 0: Dovecot's authentication cache. A reload starts an empty
    /// one, as the restarted auth process of Dovecot does.
    pub auth_cache: Option<Arc<crate::auth::dovecot::AuthCache>>,
    pub log: DovecotLog,
    /// Logged-in sessions per (user, remote IP): `mail_max_userip_connections`.
    pub userip: std::sync::Arc<UserIp>,
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
    /// What the mail process's groups are made of.
    pub groups: crate::login::mailproc::GroupsConf,
}

impl Pop3State {
    /// Build from a loaded `dovecot.conf`.
    pub fn from_conf(conf: &DovecotConf) -> anyhow::Result<Pop3State> {
        let auth = DovecotAuth::from_conf(conf).map_err(|e| anyhow::anyhow!("{e}"))?;
        Self::with_auth(
            conf,
            Arc::new(auth),
            crate::auth::dovecot::AuthCache::from_conf(conf),
        )
    }

    /// As [`from_conf`](Self::from_conf), with the passdbs/userdbs and the cache the
    /// master shares between its services (Dovecot's one auth process).
    pub fn with_auth(
        conf: &DovecotConf,
        auth: Arc<DovecotAuth>,
        auth_cache: Option<Arc<crate::auth::dovecot::AuthCache>>,
    ) -> anyhow::Result<Pop3State> {
        let mbox = crate::login::mailproc::mbox_options(conf)?;
        Ok(Pop3State {
            groups: crate::login::mailproc::GroupsConf::from_conf(conf, mbox.privileged_gid)?,
            login: LoginConf::from_conf(conf, Protocol::Pop3)?,
            uidl_format: conf.pop3_uidl_format().to_string(),
            mail_location: conf.mail_location().to_string(),
            auth,
            auth_cache,
            log: DovecotLog::from_conf(conf),
            userip: std::sync::Arc::new(UserIp::new(conf.mail_max_userip_connections("pop3"))),
            idle_timeout: Duration::from_secs(600),
            first_valid_uid: crate::login::mailproc::first_valid_uid(conf),
            mbox,
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
}

/// Whether `pop3_client_workarounds` lists `name`.
fn workaround(conf: &DovecotConf, name: &str) -> bool {
    conf.get_for("pop3", "pop3_client_workarounds")
        .is_some_and(|v| v.split([' ', ',']).any(|w| w == name))
}

/// Service process: answer one `pop3-login` process's requests on `ch` until it goes
/// away. Each login request is served with the settings current when it arrives.
pub async fn serve_login_process(
    ch: Arc<crate::login::handoff::Channel>,
    settings: tokio::sync::watch::Receiver<Option<Arc<Pop3State>>>,
    procs: Arc<crate::login::mailproc::MailProcs>,
) {
    use crate::login::handoff::{Msg, Verdict};
    while let Ok(Some((msg, fd))) = ch.recv().await {
        match msg {
            Msg::Login(req) => {
                let Some(st) = settings.borrow().clone() else {
                    continue;
                };
                match fd {
                    Some(fd) => {
                        tokio::spawn(session::take_over(st, req, fd, ch.clone(), procs.clone()));
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
            Msg::Log { level, text } => {
                if let Some(st) = settings.borrow().as_ref() {
                    st.log.line(&level, &text);
                }
            }
            _ => {}
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
                std::path::Path::new("t.conf"),
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
        // flock only when named (a site whose deliveries use mailbox_delivery_lock = flock).
        assert!(!state("").expect("state").mbox.flock);
        let m = state("mbox_write_locks = flock dotlock fcntl\n")
            .expect("state")
            .mbox;
        assert!(m.flock && m.dotlock && m.fcntl && !m.lockf);
        assert!(m.read_locks.fcntl && !m.read_locks.flock && m.lock_settings_error.is_none());
        // fcntl is no longer taken when not named; lists Dovecot refuses are kept for the
        // session to fail with (not a start-up error).
        let m = state("mbox_read_locks = dotlock\nmbox_write_locks = dotlock\n")
            .expect("state")
            .mbox;
        assert!(m.dotlock && !m.fcntl && m.read_locks.dotlock && !m.read_locks.fcntl);
        let m = state("mbox_write_locks = flock dotlock\n")
            .expect("state")
            .mbox;
        assert!(
            m.lock_settings_error
                .as_deref()
                .is_some_and(|e| e.starts_with("mbox read/write lock list settings are invalid."))
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
    fn uidl_default_format() {
        assert_eq!(uidl("%08Xu%08Xv", 1795876603, 1, ""), "000000016b0ae6fb");
        assert_eq!(uidl("%v.%u", 7, 1, ""), "7.1");
        assert_eq!(uidl("%f", 7, 1, "123.M1P2.host"), "123.M1P2.host");
    }
}
