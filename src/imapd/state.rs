//! The IMAP service's settings (read from `dovecot.conf` at start and on reload) and the
//! service side of a login: the credentials an `imap-login` process sends are checked
//! ([`crate::login::service`]), the verdict goes back, and a logged-in client goes with
//! its socket to the `dovecot/imap` mail process of its user's identity
//! ([`crate::login::mailproc`]), where it gets a session thread ([`super::session`]).
//!
//! Settings: `imap_max_line_length` (64k), `imap_idle_notify_interval` (2 mins),
//! `imap_logout_format`, `imap_client_workarounds` (`delay-newmail`,
//! `tb-extra-mailbox-sep`, `tb-lsub-flags`), `imap_capability` (a replacement list, or
//! `+` and words added to the default), `mail_max_userip_connections` (per protocol),
//! `mail_location` (the userdb's `mail` overrides it), `first_valid_uid`, the mbox lock
//! settings (as POP3's), `namespace inbox { separator prefix mailbox NAME { special_use
//! auto } }`, `login_trusted_networks` and the rest of the login stage's.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::dovecot::{AuthCache, DovecotAuth, UserInfo};
use crate::config::dovecot::DovecotConf;
use crate::login::handoff::{Channel, Credentials, LoginRequest, Msg, Verdict};
use crate::login::mailproc::{GroupsConf, MailProcs};
use crate::login::service::{Refused, UserIp};
use crate::login::{DovecotLog, LoginConf, Protocol};

/// What the session advertises after login: Dovecot 2.3.19's list without what Postern
/// does not serve (URL-PARTIAL, SNIPPET=FUZZY, PREVIEW=FUZZY, PREVIEW, SAVEDATE, NOTIFY),
/// in Dovecot's order.
pub const CAPABILITY: &str = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE STATUS=SIZE LITERAL+ SPECIAL-USE";

/// `imap_client_workarounds` Dovecot 2.3 knows.
pub const WORKAROUNDS: &[&str] = &["delay-newmail", "tb-extra-mailbox-sep", "tb-lsub-flags"];

/// A `mailbox NAME { special_use auto }` of the inbox namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxSetting {
    /// UTF-8, with the namespace separator.
    pub name: String,
    /// `\Drafts \Sent` … as written.
    pub special_use: Vec<String>,
    /// `auto`: `no`, `create` or `subscribe`.
    pub auto: String,
}

/// The private namespace (Dovecot's `namespace inbox`): what NAMESPACE and LIST show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    /// `prefix` (usually empty; `INBOX.` in Courier-style setups).
    pub prefix: String,
    /// `separator`; `None`: the layout's own (`.` Maildir++, `/` mbox and LAYOUT=fs).
    pub separator: Option<char>,
    pub mailboxes: Vec<MailboxSetting>,
}

impl Namespace {
    pub fn from_conf(conf: &DovecotConf) -> Namespace {
        let mut ns = Namespace::default();
        // The inbox namespace: the one with `inbox = yes`, else the first private one.
        let blocks: Vec<_> = conf.root.blocks_of("namespace").collect();
        let chosen = blocks
            .iter()
            .find(|b| b.get("inbox") == Some("yes"))
            .or_else(|| {
                blocks
                    .iter()
                    .find(|b| matches!(b.get("type"), None | Some("private")))
            });
        let Some(b) = chosen else {
            return ns;
        };
        ns.prefix = b.get("prefix").unwrap_or("").to_string();
        ns.separator = b
            .get("separator")
            .and_then(|s| crate::config::dovecot::parse::unquote(s).chars().next());
        for m in b.blocks_of("mailbox") {
            let Some(name) = m.name.clone() else { continue };
            ns.mailboxes.push(MailboxSetting {
                name: crate::config::dovecot::parse::unquote(&name),
                special_use: m
                    .get("special_use")
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
                auto: m.get("auto").unwrap_or("no").to_string(),
            });
        }
        ns
    }
}

/// Settings and shared state of the IMAP service.
pub struct ImapState {
    /// The login stage's settings (what "secured" means, TLS, the greeting).
    pub login: LoginConf,
    pub auth: Arc<DovecotAuth>,
    pub auth_cache: Option<Arc<AuthCache>>,
    pub log: DovecotLog,
    pub userip: std::sync::Arc<UserIp>,
    pub first_valid_uid: u32,
    pub mail_location: String,
    pub mbox: crate::mailbox::MboxOptions,
    /// `imap_max_line_length`.
    pub max_line: usize,
    /// `imap_idle_notify_interval`: how often an idling client hears `* OK Still here`.
    pub idle_notify: Duration,
    /// How often IDLE looks for changes (Dovecot's `mailbox_idle_check_interval`, 30 s,
    /// is its fallback: it hears of changes through inotify within half a second;
    /// Postern checks every half second, as it costs a few stat calls).
    pub idle_check: Duration,
    /// `imap_logout_format`.
    pub logout_format: String,
    /// `imap_client_workarounds`.
    pub delay_newmail: bool,
    pub tb_extra_mailbox_sep: bool,
    pub tb_lsub_flags: bool,
    /// The post-login capability list (`imap_capability` honoured).
    pub capability: String,
    pub namespace: Namespace,
    /// A silent logged-in client is disconnected after this (Dovecot: 30 min).
    pub autologout: Duration,
    /// The host name (mbox `From ` lines of APPENDed messages).
    pub hostname: String,
    /// The quota plugins' settings (`None`: no quota).
    pub quota: Option<super::quota::QuotaConf>,
    /// What the mail process's groups are made of.
    pub groups: GroupsConf,
}

impl ImapState {
    pub fn from_conf(conf: &DovecotConf) -> anyhow::Result<ImapState> {
        let auth = DovecotAuth::from_conf(conf).map_err(|e| anyhow::anyhow!("{e}"))?;
        Self::with_auth(conf, Arc::new(auth), AuthCache::from_conf(conf))
    }

    /// As [`from_conf`](Self::from_conf), with the passdbs/userdbs and the cache the
    /// master shares between its services.
    pub fn with_auth(
        conf: &DovecotConf,
        auth: Arc<DovecotAuth>,
        auth_cache: Option<Arc<AuthCache>>,
    ) -> anyhow::Result<ImapState> {
        use crate::config::dovecot::settings::{parse_size, parse_time};
        let get = |k: &str| conf.get_for("imap", k);
        let workarounds: Vec<String> = get("imap_client_workarounds")
            .unwrap_or("")
            .split([' ', ','])
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect();
        let mut capability = match get("imap_capability").unwrap_or("").trim() {
            "" => CAPABILITY.to_string(),
            c if c.starts_with('+') => format!("{CAPABILITY} {}", c[1..].trim()),
            c => c.to_string(),
        };
        let quota = super::quota::QuotaConf::from_conf(conf);
        // The imap_quota plugin adds its capability to whatever the list is (Dovecot's
        // client_add_capability).
        if quota.as_ref().is_some_and(|q| q.imap) {
            capability.push_str(" QUOTA");
        }
        let mbox = crate::login::mailproc::mbox_options(conf)?;
        Ok(ImapState {
            groups: GroupsConf::from_conf(conf, mbox.privileged_gid)?,
            login: LoginConf::from_conf(conf, Protocol::Imap)?,
            auth,
            auth_cache,
            log: DovecotLog::from_conf(conf),
            userip: std::sync::Arc::new(UserIp::new(conf.mail_max_userip_connections("imap"))),
            first_valid_uid: crate::login::mailproc::first_valid_uid(conf),
            mail_location: conf.mail_location().to_string(),
            mbox,
            max_line: get("imap_max_line_length")
                .and_then(|v| parse_size(v).ok())
                .map(|v| v as usize)
                .filter(|v| *v > 0)
                .unwrap_or(crate::imap::reader::DEFAULT_MAX_LINE),
            idle_notify: Duration::from_secs(
                get("imap_idle_notify_interval")
                    .and_then(|v| parse_time(v).ok())
                    .unwrap_or(120)
                    .max(1),
            ),
            idle_check: Duration::from_millis(500),
            logout_format: get("imap_logout_format")
                .unwrap_or("in=%i out=%o deleted=%{deleted} expunged=%{expunged} trashed=%{trashed} hdr_count=%{fetch_hdr_count} hdr_bytes=%{fetch_hdr_bytes} body_count=%{fetch_body_count} body_bytes=%{fetch_body_bytes}")
                .to_string(),
            delay_newmail: workarounds.iter().any(|w| w == "delay-newmail"),
            tb_extra_mailbox_sep: workarounds.iter().any(|w| w == "tb-extra-mailbox-sep"),
            tb_lsub_flags: workarounds.iter().any(|w| w == "tb-lsub-flags"),
            capability,
            quota,
            namespace: Namespace::from_conf(conf),
            autologout: Duration::from_secs(30 * 60),
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
        })
    }
}

/// Service process: answer one `imap-login` process's requests on `ch` until it goes
/// away. Each login is served with the settings current when it arrives.
pub async fn serve_login_process(
    ch: Arc<Channel>,
    settings: tokio::sync::watch::Receiver<Option<Arc<ImapState>>>,
    procs: Arc<MailProcs>,
) {
    while let Ok(Some((msg, fd))) = ch.recv().await {
        match msg {
            Msg::Login(req) => {
                let Some(st) = settings.borrow().clone() else {
                    continue;
                };
                match fd {
                    Some(fd) => {
                        tokio::spawn(take_over(st, req, fd, ch.clone(), procs.clone()));
                    }
                    None => {
                        let v = Verdict::ReplyClose(format!(
                            "{} NO [UNAVAILABLE] Temporary authentication failure.",
                            req.tag
                        ));
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

/// The service's check of a login request: the verdict for the login process (worded
/// with the request's tag) and, for a login taken, the user name and the userdb's
/// answer (the mail process serves the session with them).
pub async fn check(
    st: &ImapState,
    req: &LoginRequest,
) -> (Verdict, Result<(String, UserInfo), Refused>) {
    let tag = &req.tag;
    let checked = match &req.creds {
        Credentials::Plain { user, pass } => {
            crate::login::service::checker_of!(st, Protocol::Imap)
                .check(user, pass, req.remote.ip(), &req.session_id)
                .await
        }
        Credentials::Apop { .. } => Err(Refused::Failed),
    };
    let verdict = match &checked {
        Ok(_) => Verdict::Taken,
        Err(Refused::Failed) => Verdict::Failed,
        Err(Refused::TempFail) => Verdict::Reply(format!(
            "{tag} NO [UNAVAILABLE] Temporary authentication failure."
        )),
        // Dovecot's imap process fails its init after the login: the client hears so.
        Err(Refused::Internal) => Verdict::Taken,
        Err(Refused::UserIp(n)) => Verdict::ReplyClose(format!(
            "{tag} NO [LIMIT] Maximum number of connections from user+IP exceeded (mail_max_userip_connections={n})"
        )),
    };
    (verdict, checked)
}

/// The service's side of a client the login process authenticated: check the
/// credentials, tell the login process the verdict, and when it is
/// [`Verdict::Taken`] hand the socket `fd` (the client's, or the login process's proxy
/// of a TLS client) to the user's mail process.
async fn take_over(
    st: Arc<ImapState>,
    req: LoginRequest,
    fd: OwnedFd,
    ch: Arc<Channel>,
    procs: Arc<MailProcs>,
) {
    let (verdict, checked) = check(&st, &req).await;
    let sent = ch
        .send(
            &Msg::Verdict {
                id: req.id,
                verdict,
            },
            None,
        )
        .await;
    if matches!(checked, Err(Refused::Internal)) && sent.is_ok() {
        init_failed(&st, &req, fd).await;
        return;
    }
    let Ok((user, info)) = checked else {
        return;
    };
    procs
        .hand_taken(
            Protocol::Imap,
            sent.is_ok(),
            &st.userip,
            &st.groups,
            (req, user, info, fd),
        )
        .await;
}

/// Dovecot's answer when the mail process cannot start for a user who logged in (a uid
/// below `first_valid_uid`): `TAG OK Logged in, but initialization failed.`, then `* BYE
/// Internal error occurred. …` at the next command.
async fn init_failed(st: &ImapState, req: &LoginRequest, fd: OwnedFd) {
    let Ok(io) = crate::login::conn::Io::from_handed(fd, req.tls) else {
        return;
    };
    let user = match &req.creds {
        Credentials::Plain { user, .. } | Credentials::Apop { user, .. } => user.clone(),
    };
    super::session::log_login(st, req, &user);
    let mut conn = crate::login::conn::Conn::new(io, req.remote, req.local);
    conn.rbuf = req.leftover.clone();
    conn.reply(&format!(
        "{} OK Logged in, but initialization failed.",
        req.tag
    ));
    let _ = conn.read_line(st.max_line, st.autologout).await;
    conn.reply("* BYE Internal error occurred. Refer to server log for more information.");
    conn.flush().await;
    conn.io.shutdown().await;
}
