//! One logged-in POP3 connection (Dovecot's `pop3` process; the AUTHORIZATION state is
//! the login stage's, [`crate::login::pop3`]): the credentials checked by the service
//! ([`take_over`]), then, in the user's mail process (`dovecot/pop3`, running as the
//! user: [`crate::login::mailproc`]), the TRANSACTION state on the user's mailbox and the
//! UPDATE state at QUIT ([`serve`]).
//!
//! [`Session`] does no client I/O of its own: it is a state machine fed what the client
//! sent ([`Session::received`], [`Session::input_ended`], [`Session::timed_out`],
//! [`Session::output_lost`]) that answers with the next [`Action`] ([`Session::next`]:
//! send these bytes, read, close). What it still awaits itself is the mailbox (opened,
//! read and rewritten on blocking threads). [`drive`] is the connection task that carries
//! the actions out on the client's socket; the unit tests in `super::tests` replay the
//! recorded Dovecot transcript against the core, and the fuzz target drives it directly.
//! Replies are queued and sent only when the session waits for input, so pipelined
//! commands (RFC 2449 PIPELINING) are answered in one write; RETR and TOP send a long
//! message in pieces as it is read.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use super::Pop3State;
use super::uidl;
use crate::auth::dovecot::{RequestInfo, UserInfo};
use crate::login::Protocol;
use crate::login::conn::{Io, take_line};
use crate::login::handoff::{Channel, Credentials, LoginRequest, Msg, Verdict};
use crate::login::mailproc::MailProcs;
use crate::login::service::{Refused, checker_of};
use crate::mailbox::{
    Access, Flags, Folder, MailLocation, MailStore, MailboxError, MessageReader, StoreOptions,
};

/// Longest command line after login.
const MAX_LINE: usize = 8192;
/// Dovecot's `CLIENT_MAX_BAD_COMMANDS`.
const MAX_BAD_COMMANDS: u32 = 20;
/// How much of a message is read from the mailbox at a time (RETR/TOP stream in pieces).
const CHUNK: usize = 32 * 1024;
/// Queued output beyond which RETR/TOP write to the client before reading on.
const WBUF_FLUSH: usize = 64 * 1024;
/// The read size (one socket read at a time).
const READ_SIZE: usize = 8192;

/// What the connection task is to do next (see [`Session::next`]).
pub enum Action {
    /// Write these bytes to the client; when that fails, tell [`Session::output_lost`].
    Send(Vec<u8>),
    /// Read what comes within `timeout`; hand it to [`Session::received`], the end of the
    /// input to [`Session::input_ended`], a timeout to [`Session::timed_out`].
    Read { timeout: Duration },
    /// The session is over: close the connection.
    Close,
}

/// The mail user after login.
struct Mail {
    user: String,
    mailbox: Folder,
    deleted: Vec<bool>,
    /// Messages sent whole by RETR: marked \\Seen at QUIT unless `pop3_no_flag_updates`.
    seen: Vec<bool>,
    /// The read buffer of RETR/TOP, kept for the session.
    chunk: Vec<u8>,
    top: (u64, u64),
    retr: (u64, u64),
    /// CRC-32 of each message's UIDL, kept when a full UIDL listing was sent and the
    /// logout format asks for `%u` (Dovecot's `message_uidl_hashes`).
    uidl_hashes: Option<Vec<u32>>,
    /// The lowest message number RETR'd (1-based; 0: none).
    lowest_retr: usize,
    /// A DELE since the last RSET.
    any_deleted: bool,
    /// The number of messages and their size when the session began (the logout line's).
    count: usize,
    total: u64,
    /// `pop3_lock_session`: held until the session ends.
    _session_lock: Option<crate::mailbox::lock::DotLock>,
}

/// The INBOX to open once `+OK Logged in.` is out.
struct Opening {
    user: String,
    location: String,
    home: String,
    session_lock: Option<crate::mailbox::lock::DotLock>,
}

/// Where the session is.
enum Phase {
    /// Log the login, take the session lock, answer `+OK Logged in.`.
    Login,
    /// Open the INBOX.
    Open(Opening),
    /// The TRANSACTION state (and UPDATE at QUIT).
    Transaction,
    /// Over.
    Done,
}

/// A RETR or TOP being sent: the rest of the message is read and stuffed as the output
/// is written.
struct Sending {
    reader: MessageReader,
    buf: Vec<u8>,
    /// `buf[..n]` is the piece read last.
    n: usize,
    /// That piece is in the output already: the next one is to be read.
    fed: bool,
    stuffer: Stuffer,
    /// Bytes sent for this command (the logout line's `%p`, `%b`).
    sent: u64,
    index: usize,
    top: bool,
}

/// One logged-in POP3 session, as a state machine without I/O.
pub struct Session {
    st: Arc<Pop3State>,
    remote: SocketAddr,
    local: SocketAddr,
    tls: bool,
    session_id: String,
    method: String,
    /// The user (after `auth_username_format`).
    user: String,
    /// The userdb's answer for the user.
    info: UserInfo,
    phase: Phase,
    mail: Option<Mail>,
    sending: Option<Sending>,
    /// What the client sent and the session has not used yet.
    rbuf: Vec<u8>,
    /// Replies queued until the session waits for input.
    wbuf: Vec<u8>,
    /// Actions for the connection task, oldest first.
    out: VecDeque<Action>,
    bad: u32,
    /// Why the session ends, once it is known (Dovecot's `Disconnected: …`).
    end: Option<&'static str>,
    /// Writing to the client failed.
    gone: bool,
    /// Bytes in and out since `+OK Logged in.` (`%i`, `%o` of `pop3_logout_format`).
    counting: bool,
    in_bytes: u64,
    out_bytes: u64,
}

/// Run `f` on a blocking thread: for work that may take long (opening and scanning a
/// mailbox, committing changes). This process runs as the mail user
/// ([`crate::login::mailproc`]): no identity is switched.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// MD5 (RFC 1321) of `data`, for APOP's digest.
fn md5(data: &[u8]) -> [u8; 16] {
    use ::md5::Digest;
    ::md5::Md5::digest(data).into()
}

/// The service's side of a client the login process authenticated: check the
/// credentials (passdb, userdb, `first_valid_uid`, `mail_max_userip_connections`), tell
/// the login process the verdict, and when it is [`Verdict::Taken`] hand `fd` (the
/// client's socket, or the login process's proxy of a TLS client) to the user's mail
/// process, which serves the TRANSACTION and UPDATE states ([`serve`]).
pub async fn take_over(
    st: Arc<Pop3State>,
    req: LoginRequest,
    fd: OwnedFd,
    ch: Arc<Channel>,
    procs: Arc<MailProcs>,
) {
    let checked = check(&st, &req.creds, req.remote.ip(), &req.session_id).await;
    let verdict = match &checked {
        Ok(_) => Verdict::Taken,
        Err(v) => v.clone(),
    };
    let sent = ch
        .send(
            &Msg::Verdict {
                id: req.id,
                verdict,
            },
            None,
        )
        .await;
    let Ok((user, info)) = checked else {
        return;
    };
    procs
        .hand_taken(
            Protocol::Pop3,
            sent.is_ok(),
            &st.userip,
            &st.groups,
            (req, user, info, fd),
        )
        .await;
}

impl crate::login::mailproc::MailService for Pop3State {
    fn threads(&self) -> bool {
        false
    }
    fn start(
        self: Arc<Self>,
        req: LoginRequest,
        fd: OwnedFd,
        user: String,
        info: UserInfo,
        guard: crate::login::mailproc::SessionGuard,
    ) {
        tokio::spawn(async move {
            serve(self, req, fd, user, info).await;
            drop(guard);
        });
    }
}

/// The mail process's side: serve a logged-in session (the service has counted it, and
/// learns of its end from the caller).
pub async fn serve(
    st: Arc<Pop3State>,
    req: LoginRequest,
    fd: OwnedFd,
    user: String,
    info: UserInfo,
) {
    let Ok(io) = Io::from_handed(fd, req.tls) else {
        return;
    };
    drive(Session::new(st, req, user, info), io).await;
}

/// The connection task: carry out `session`'s actions on `io` until it closes.
pub async fn drive(mut session: Session, mut io: Io) {
    loop {
        match session.next().await {
            Action::Send(b) => {
                if io.write_all(&b).await.is_err() {
                    io = Io::Gone;
                    session.output_lost();
                }
            }
            Action::Read { timeout } => {
                let mut buf = [0u8; READ_SIZE];
                match tokio::time::timeout(timeout, io.read(&mut buf)).await {
                    Err(_) => session.timed_out(),
                    Ok(Err(_)) | Ok(Ok(0)) => session.input_ended(),
                    Ok(Ok(n)) => session.received(&buf[..n]),
                }
            }
            Action::Close => break,
        }
    }
}

/// Service: check the password (or the APOP digest), look the user up, check the uid
/// and `mail_max_userip_connections` (counting this session in). `Err` is what the login
/// process is to do instead.
pub(crate) async fn check(
    st: &Pop3State,
    creds: &Credentials,
    remote: std::net::IpAddr,
    session_id: &str,
) -> Result<(String, UserInfo), Verdict> {
    let (user, pass) = match creds {
        Credentials::Plain { user, pass } => (user.clone(), pass.clone()),
        Credentials::Apop {
            user,
            digest,
            challenge,
        } => {
            let auth = st.auth.clone();
            let u = user.clone();
            let req = || RequestInfo {
                service: "pop3".into(),
            };
            let pw = tokio::task::spawn_blocking(move || auth.plaintext_password(&u, &req()))
                .await
                .ok()
                .flatten();
            let ok = pw.as_ref().is_some_and(|pw| {
                let d = md5(format!("{challenge}{pw}").as_bytes());
                let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
                hex.eq_ignore_ascii_case(digest)
            });
            match pw {
                Some(pw) if ok => (user.clone(), pw),
                _ => return Err(Verdict::Failed),
            }
        }
    };
    checker_of!(st, Protocol::Pop3)
        .check(&user, &pass, remote, session_id)
        .await
        .map_err(|r| match r {
            Refused::Failed => Verdict::Failed,
            Refused::TempFail => {
                Verdict::Reply("-ERR [SYS/TEMP] Temporary authentication failure.".into())
            }
            Refused::Internal => Verdict::Reply(
                "-ERR [SYS/TEMP] Internal error occurred. Refer to server log for more information."
                    .into(),
            ),
            Refused::UserIp(n) => Verdict::Reply(format!(
                "-ERR [IN-USE] Maximum number of connections from user+IP exceeded (mail_max_userip_connections={n})"
            )),
        })
}

impl Session {
    /// The session of `user` (the userdb said `info`) that the login request `req` was
    /// made for; the input the login stage had not used yet is read first.
    pub fn new(st: Arc<Pop3State>, mut req: LoginRequest, user: String, info: UserInfo) -> Session {
        Session {
            st,
            remote: req.remote,
            local: req.local,
            tls: req.tls,
            session_id: std::mem::take(&mut req.session_id),
            method: std::mem::take(&mut req.method),
            user,
            info,
            phase: Phase::Login,
            mail: None,
            sending: None,
            rbuf: std::mem::take(&mut req.leftover),
            wbuf: Vec::new(),
            out: VecDeque::new(),
            bad: 0,
            end: None,
            gone: false,
            counting: false,
            in_bytes: 0,
            out_bytes: 0,
        }
    }

    /// Bytes the client sent.
    pub fn received(&mut self, bytes: &[u8]) {
        self.rbuf.extend_from_slice(bytes);
    }

    /// The client closed the connection (or it broke).
    pub fn input_ended(&mut self) {
        self.end = Some(if crate::login::mailproc::shutting_down() {
            // `dovecot stop` (shutdown_clients = yes), as Dovecot's pop3 says it.
            self.reply("-ERR [SYS/TEMP] Server shutting down.");
            "Disconnected: Server shutting down."
        } else {
            "Disconnected: Connection closed"
        });
    }

    /// Nothing came within the idle timeout.
    pub fn timed_out(&mut self) {
        self.end = Some("Disconnected: Inactivity");
    }

    /// Writing to the client failed: the session ends (deleting nothing) and logs out.
    pub fn output_lost(&mut self) {
        self.out.clear();
        self.wbuf.clear();
        self.gone = true;
    }

    /// The next thing for the connection task to do.
    pub async fn next(&mut self) -> Action {
        loop {
            if let Some(a) = self.out.pop_front() {
                return a;
            }
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Login => self.login().await,
                Phase::Open(o) => self.open(o).await,
                Phase::Transaction => {
                    self.phase = Phase::Transaction;
                    self.advance().await;
                }
                Phase::Done => return Action::Close,
            }
        }
    }

    /// Queue `line` and CRLF.
    fn reply(&mut self, line: &str) {
        self.wbuf.extend_from_slice(line.as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Send the replies queued.
    fn flush(&mut self) {
        if self.wbuf.is_empty() || self.gone {
            self.wbuf.clear();
            return;
        }
        if self.counting {
            self.out_bytes += self.wbuf.len() as u64;
        }
        self.out
            .push_back(Action::Send(std::mem::take(&mut self.wbuf)));
    }

    fn secured(&self) -> bool {
        self.st.login.is_secured(self.tls, self.remote, self.local)
    }

    /// `pop3(USER)<PID><SESSION>`, the start of the session's log lines.
    fn who(&self, user: &str) -> String {
        format!("pop3({user})<{}><{}>", std::process::id(), self.session_id)
    }

    /// Log the login, take the POP3 session lock and answer `+OK Logged in.`; the
    /// INBOX is opened next ([`Phase::Open`]).
    async fn login(&mut self) {
        let user = self.user.clone();
        let info = &self.info;
        let sec = if self.tls {
            ", TLS"
        } else if self.secured() {
            ", secured"
        } else {
            ""
        };
        self.st.log.info(&format!(
            "pop3-login: Login: user=<{}>, method={}, rip={}, lip={}, mpid={}{sec}, session=<{}>",
            user,
            self.method,
            self.remote.ip(),
            self.local.ip(),
            std::process::id(),
            self.session_id
        ));
        let home = info.home.clone().unwrap_or_default();
        let location = info
            .extra
            .iter()
            .find(|(k, _)| k == "mail")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| self.st.mail_location.clone());
        let mut session_lock = None;
        if self.st.lock_session {
            // pop3_lock_session: Dovecot's mail process takes the session lock before it
            // answers "+OK Logged in.", waiting about 10 s for another session to end.
            let (l, n, h) = (location.clone(), user.clone(), home.clone());
            let locked = blocking(move || {
                let loc = MailLocation::expand(&l, &n, &h)?;
                crate::mailbox::lock::pop3_session_lock(
                    &loc,
                    crate::mailbox::lock::POP3_SESSION_LOCK_TIMEOUT,
                )
            })
            .await;
            match locked {
                Some(Ok(lock)) => session_lock = Some(lock),
                other => {
                    if let Some(Err(e)) = other
                        && !matches!(e, MailboxError::Locked(_))
                    {
                        self.st
                            .log
                            .error(&format!("{}: pop3_lock_session: {e}", self.who(&user)));
                    }
                    self.st.log.info(&format!(
                        "{}: Disconnected: Couldn't lock POP3 session top=0/0, retr=0/0, del=0/0, size=0",
                        self.who(&user)
                    ));
                    self.reply("-ERR [IN-USE] Mailbox is locked by another POP3 session.");
                    self.flush();
                    return;
                }
            }
        }
        // As Dovecot: the login stage answers first, then the mail process opens the
        // INBOX (and may wait for its lock up to mbox_lock_timeout).
        // The mail process's output (`%o` of pop3_logout_format) starts with it.
        self.counting = true;
        self.reply("+OK Logged in.");
        self.flush();
        self.phase = Phase::Open(Opening {
            user,
            location,
            home,
            session_lock,
        });
    }

    /// Open the INBOX, on a blocking thread.
    async fn open(&mut self, o: Opening) {
        let mut opts = self.st.mbox.clone();
        // A dotlock the user may not create is logged as this session's error, as
        // Dovecot's mail process logs it (`pop3(USER)<PID><SESSION>: Error: Mailbox INBOX:
        // file_dotlock_create(…) failed: Permission denied (…)`).
        let (log, prefix) = (self.st.log.clone(), format!("{}: ", self.who(&o.user)));
        opts.lock_errors = Some(crate::mailbox::lock::LockErrors(std::sync::Arc::new(
            move |text: &str| log.error(&format!("{prefix}{text}")),
        )));
        let drop_recent = !self.st.no_flag_updates;
        let (location, uname, home) = (o.location, o.user.clone(), o.home);
        let opened = blocking(move || -> Result<Folder, MailboxError> {
            let loc = MailLocation::expand(&location, &uname, &home)?;
            let store = MailStore::open(
                loc,
                None,
                StoreOptions {
                    mbox: opts,
                    sender: String::new(),
                },
            );
            store.select(
                "INBOX",
                Access::Pop3 {
                    move_new: drop_recent,
                },
            )
        })
        .await;
        match opened {
            Some(Ok(mailbox)) => {
                let n = mailbox.messages().len();
                let total = mailbox.messages().iter().map(|x| x.size).sum();
                self.mail = Some(Mail {
                    user: o.user,
                    mailbox,
                    deleted: vec![false; n],
                    seen: vec![false; n],
                    chunk: Vec::new(),
                    top: (0, 0),
                    retr: (0, 0),
                    uidl_hashes: None,
                    lowest_retr: 0,
                    any_deleted: false,
                    count: n,
                    total,
                    _session_lock: o.session_lock,
                });
                self.phase = Phase::Transaction;
            }
            Some(Err(MailboxError::LockSettings(text))) => {
                // Lock lists Dovecot refuses: its mail process dies at the INBOX's first
                // lock with `Fatal:`, the client's connection closes without a reply, and
                // no `Disconnected` line is logged (compat-fixtures/locks/dovecot-2.3.txt).
                let who = self.who(&o.user);
                self.st.log.fatal(&format!("{who}: {text}"));
            }
            other => {
                // Dovecot's texts: a lock timeout is told to the client, other errors
                // only to the log.
                let internal = "Internal error occurred. Refer to server log for more information.";
                let (why, client) = match other {
                    Some(Err(MailboxError::Locked(_))) => (
                        "Timeout while waiting for lock".to_string(),
                        "Timeout while waiting for lock",
                    ),
                    Some(Err(e)) => (e.to_string(), internal),
                    _ => ("internal error".to_string(), internal),
                };
                let who = self.who(&o.user);
                self.st
                    .log
                    .error(&format!("{who}: Couldn't init INBOX: {why}"));
                self.st.log.info(&format!(
                    "{who}: Disconnected: Couldn't init INBOX: {why} top=0/0, retr=0/0, del=0/0, size=0"
                ));
                self.reply(&format!("-ERR [SYS/TEMP] {client}"));
                self.flush();
            }
        }
    }

    /// One step of the TRANSACTION state: a piece of a message being sent, the end of
    /// the session, or the next command (reading when none is there).
    async fn advance(&mut self) {
        let Some(mut m) = self.mail.take() else {
            self.phase = Phase::Done;
            return;
        };
        if let Some(sd) = self.sending.take() {
            self.stream_on(&mut m, sd);
        } else if let Some(reason) = self.end.take() {
            self.logout(&m, reason);
        } else if self.gone {
            self.end = Some("Disconnected: Connection closed");
        } else {
            match take_line(&mut self.rbuf, MAX_LINE) {
                Some(Ok((line, used))) => {
                    if self.counting {
                        self.in_bytes += used as u64;
                    }
                    let line = String::from_utf8_lossy(&line).into_owned();
                    self.command(&mut m, &line).await;
                }
                Some(Err(_)) => {
                    self.reply("-ERR Input line too long.");
                    self.end = Some("Disconnected: Input line too long");
                }
                None => {
                    self.flush();
                    self.out.push_back(Action::Read {
                        timeout: self.st.idle_timeout,
                    });
                }
            }
        }
        self.mail = Some(m);
    }

    /// The end: the replies queued go out, then Dovecot's logout line.
    fn logout(&mut self, m: &Mail, reason: &str) {
        self.flush();
        // Deletions count only when committed: a vanished client deleted nothing.
        let committed = reason == "Disconnected: Logged out";
        let del = if committed {
            m.deleted.iter().filter(|d| **d).count()
        } else {
            0
        };
        let stats = LogoutStats {
            top: m.top,
            retr: m.retr,
            expunged: del as u64,
            messages: m.count as u64,
            size: m.total,
            input: self.in_bytes,
            output: self.out_bytes,
            uidl_change: uidl_change(m),
        };
        self.st.log.info(&format!(
            "{}: {reason} {}",
            self.who(&m.user),
            stats.expand(&self.st.logout_format)
        ));
        self.phase = Phase::Done;
    }

    /// One command of the TRANSACTION state (QUIT: the UPDATE state).
    async fn command(&mut self, m: &mut Mail, line: &str) {
        let count = m.count;
        let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
        let verb = verb.to_ascii_uppercase();
        match verb.as_str() {
            "CAPA" => {
                let c = crate::login::pop3::capa(true, false, false, &[]);
                self.reply(&c);
            }
            "NOOP" => self.reply("+OK"),
            "STAT" => {
                let (n, sz) = live(m);
                self.reply(&format!("+OK {n} {sz}"));
            }
            "LIST" | "UIDL" => {
                let uidl_fmt = self.st.uidl_format.clone();
                let v = m.mailbox.uid_validity();
                let item = |i: usize, m: &Mail| -> String {
                    let msg = &m.mailbox.messages()[i];
                    if verb == "LIST" {
                        format!("{} {}", i + 1, msg.size)
                    } else {
                        let base = m.mailbox.maildir_base(msg.uid).unwrap_or("");
                        format!("{} {}", i + 1, uidl(&uidl_fmt, v, msg.uid, base))
                    }
                };
                if arg.is_empty() {
                    let mut s = if verb == "LIST" {
                        format!("+OK {} messages:", live(m).0)
                    } else {
                        "+OK".to_string()
                    };
                    let hashing = verb == "UIDL" && uses_uidl_change(&self.st.logout_format);
                    let mut hashes = Vec::new();
                    for i in 0..count {
                        if hashing {
                            let msg = &m.mailbox.messages()[i];
                            let base = m.mailbox.maildir_base(msg.uid).unwrap_or("");
                            hashes.push(crc32fast::hash(
                                uidl(&uidl_fmt, v, msg.uid, base).as_bytes(),
                            ));
                        }
                        if !m.deleted[i] {
                            s.push_str("\r\n");
                            s.push_str(&item(i, m));
                        }
                    }
                    if hashing {
                        m.uidl_hashes = Some(hashes);
                    }
                    s.push_str("\r\n.");
                    self.reply(&s);
                } else if let Some((i, _)) = self.msgnum(m, arg, false) {
                    let s = format!("+OK {}", item(i, m));
                    self.reply(&s);
                }
            }
            "DELE" => {
                if let Some((i, _)) = self.msgnum(m, arg, false) {
                    m.deleted[i] = true;
                    m.any_deleted = true;
                    self.reply("+OK Marked to be deleted.");
                }
            }
            "RSET" => {
                m.deleted.iter_mut().for_each(|d| *d = false);
                m.any_deleted = false;
                self.reply("+OK");
            }
            "RETR" => {
                if let Some((i, _)) = self.msgnum(m, arg, false) {
                    if m.lowest_retr == 0 || i + 1 < m.lowest_retr {
                        m.lowest_retr = i + 1;
                    }
                    self.send_message(m, i, None).await;
                }
            }
            "TOP" => {
                if let Some((i, rest)) = self.msgnum(m, arg, true)
                    && let Some(n) = self.size_arg(&rest)
                {
                    self.send_message(m, i, Some(n)).await;
                }
            }
            "QUIT" => self.quit(m).await,
            _ => {
                self.reply(&format!("-ERR Unknown command: {verb}"));
                self.bad += 1;
                if self.bad >= MAX_BAD_COMMANDS {
                    self.reply("-ERR Too many bad commands.");
                    self.end = Some("Disconnected: Too many bad commands");
                }
            }
        }
    }

    /// QUIT: the UPDATE state. \Seen for the messages RETR'd, DELE'd ones gone, in one
    /// write of the mailbox.
    async fn quit(&mut self, m: &mut Mail) {
        self.end = Some("Disconnected: Logged out");
        let count = m.count;
        let uid = |i: usize| m.mailbox.messages()[i].uid;
        let gone: Vec<u32> = (0..count).filter(|&i| m.deleted[i]).map(uid).collect();
        let seen: Vec<u32> = if self.st.no_flag_updates {
            Vec::new()
        } else {
            (0..count)
                .filter(|&i| m.seen[i] && !m.deleted[i])
                .map(uid)
                .collect()
        };
        if gone.is_empty() && seen.is_empty() {
            self.reply("+OK Logging out.");
            return;
        }
        let deleting = !gone.is_empty();
        let mut mailbox = std::mem::replace(&mut m.mailbox, Folder::empty());
        let r = blocking(move || {
            let r = mailbox.update(Flags::SEEN, &seen, &gone);
            (mailbox, r)
        })
        .await;
        match r {
            Some((mb, Ok(()))) => {
                m.mailbox = mb;
                self.reply(if deleting {
                    "+OK Logging out, messages deleted."
                } else {
                    "+OK Logging out."
                });
            }
            Some((mb, Err(e))) => {
                m.mailbox = mb;
                self.st.log.error(&format!(
                    "{}: Failed to delete messages: {e}",
                    self.who(&m.user)
                ));
                self.reply("-ERR [SYS/TEMP] Internal error occurred. Refer to server log for more information.");
                m.deleted.iter_mut().for_each(|d| *d = false);
            }
            None => m.deleted.iter_mut().for_each(|d| *d = false),
        }
    }

    /// Dovecot's `get_msgnum`: the message index and the rest of the arguments.
    fn msgnum(&mut self, m: &Mail, args: &str, then_space: bool) -> Option<(usize, String)> {
        if !args.starts_with(|c: char| c.is_ascii_digit()) {
            self.reply(&format!("-ERR Invalid message number: {args}"));
            return None;
        }
        let digits = args.len() - args.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (num, rest) = args.split_at(digits);
        let Ok(num) = num.parse::<u32>() else {
            self.reply(&format!("-ERR Message number too large: {rest}"));
            return None;
        };
        let ok_after = if then_space {
            rest.starts_with(' ')
        } else {
            rest.is_empty()
        };
        if !ok_after {
            self.reply(&format!("-ERR Noise after message number: {rest}"));
            return None;
        }
        if num == 0 || num as usize > m.deleted.len() {
            self.reply(&format!("-ERR There's no message {num}."));
            return None;
        }
        let i = num as usize - 1;
        if m.deleted[i] {
            self.reply("-ERR Message is deleted.");
            return None;
        }
        Some((i, rest.trim_start_matches(' ').to_string()))
    }

    /// Dovecot's `get_size` for TOP's line count.
    fn size_arg(&mut self, args: &str) -> Option<u64> {
        if !args.starts_with(|c: char| c.is_ascii_digit()) {
            self.reply(&format!("-ERR Invalid size: {args}"));
            return None;
        }
        let digits = args.len() - args.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (num, rest) = args.split_at(digits);
        let Ok(n) = num.parse::<u64>() else {
            self.reply(&format!("-ERR Size too large: {rest}"));
            return None;
        };
        if !rest.is_empty() {
            self.reply(&format!("-ERR Noise after size: {rest}"));
            return None;
        }
        Some(n)
    }

    /// RETR (`lines` None) or TOP: the status line, the dot-stuffed message with CRLF
    /// line ends, the terminating `.`. The message is read from the mailbox [`CHUNK`]
    /// bytes at a time and sent as the output queue fills ([`Session::stream_on`]), so
    /// a session holds no whole message.
    async fn send_message(&mut self, m: &mut Mail, i: usize, lines: Option<u64>) {
        let mut buf = std::mem::take(&mut m.chunk);
        buf.resize(CHUNK, 0);
        let Some(msg) = m
            .mailbox
            .messages()
            .get(i)
            .and_then(|x| m.mailbox.message(x.uid))
        else {
            return;
        };
        let first_piece = |msg: &crate::mailbox::MessageRef, wait: bool, mut buf: Vec<u8>| {
            let opened = if wait { msg.open() } else { msg.open_nowait() };
            let r = opened.and_then(|mut rd| {
                let n = fill(&mut rd, &mut buf).map_err(|e| MailboxError::Format(e.to_string()))?;
                Ok((rd, n))
            });
            (r, buf)
        };
        // On this thread: a few page-cache reads, not worth two thread hand-overs.
        let mut first = Some(first_piece(&msg, false, buf));
        if let Some((Err(MailboxError::Locked(_)), _)) = &first
            && let Some((_, b)) = first.take()
        {
            // Another writer holds the mbox: wait for it on a blocking thread.
            first = blocking(move || first_piece(&msg, true, b)).await;
        }
        if let Some((Err(_), b)) = first {
            // Another session may have rewritten the mbox (flags, expunges): find the
            // messages again and retry once, as Dovecot re-syncs.
            let mut mb = std::mem::replace(&mut m.mailbox, Folder::empty());
            let mut buf = b;
            first = blocking(move || {
                let synced = mb.relocate();
                let r = synced.and_then(|()| {
                    let msg = mb
                        .messages()
                        .get(i)
                        .and_then(|x| mb.message(x.uid))
                        .ok_or_else(|| MailboxError::Format("no such message".into()))?;
                    let mut rd = msg.open()?;
                    let n =
                        fill(&mut rd, &mut buf).map_err(|e| MailboxError::Format(e.to_string()))?;
                    Ok((rd, n))
                });
                ((r, buf), mb)
            })
            .await
            .map(|(r, mb)| {
                m.mailbox = mb;
                r
            });
        }
        let (reader, n, buf) = match first {
            Some((Ok((rd, n)), buf)) => (rd, n, buf),
            other => {
                let e = match other {
                    Some((Err(MailboxError::Expunged(_)), buf)) => {
                        m.chunk = buf;
                        MailboxError::Expunged(m.mailbox.messages().get(i).map_or(0, |x| x.uid))
                    }
                    Some((Err(e), buf)) => {
                        m.chunk = buf;
                        e
                    }
                    _ => MailboxError::Format("internal error".into()),
                };
                self.st.log.error(&format!("{}: {e}", self.who(&m.user)));
                // Dovecot's reply for a message that vanished under the session (seen
                // from 2.3.19 for a Maildir file unlinked by another client); the
                // command still counts in the logout line, with no bytes.
                self.reply(&format!("-ERR Message {} expunged.", i + 1));
                if lines.is_some() {
                    m.top.0 += 1;
                } else {
                    m.retr.0 += 1;
                }
                return;
            }
        };
        let head = match lines {
            None => format!("+OK {} octets", m.mailbox.messages()[i].size),
            Some(_) => "+OK".to_string(),
        };
        let sent = head.len() as u64 + 2;
        self.reply(&head);
        let sd = Sending {
            reader,
            buf,
            n,
            fed: false,
            stuffer: Stuffer {
                at_start: true,
                pending_cr: false,
                line_len: 0,
                in_body: false,
                body_lines: 0,
                max_lines: lines,
                done: false,
                nul80: self.st.outlook_no_nuls,
            },
            sent,
            index: i,
            top: lines.is_some(),
        };
        self.stream_on(m, sd);
    }

    /// Send on a RETR or TOP: stuff the pieces read into the output until the message
    /// ends, or until the output is large enough to be written first (the session then
    /// goes on from here at its next step).
    fn stream_on(&mut self, m: &mut Mail, mut sd: Sending) {
        loop {
            if sd.fed {
                match fill(&mut sd.reader, &mut sd.buf) {
                    Ok(k) => sd.n = k,
                    Err(e) => {
                        // Part of the message is out: as Dovecot, the connection is closed.
                        m.chunk = sd.buf;
                        self.st.log.error(&format!("{}: {e}", self.who(&m.user)));
                        self.flush();
                        self.gone = true;
                        return;
                    }
                }
            }
            let before = self.wbuf.len();
            sd.stuffer.feed(&sd.buf[..sd.n], &mut self.wbuf);
            sd.sent += (self.wbuf.len() - before) as u64;
            sd.fed = true;
            if sd.n < sd.buf.len() || sd.stuffer.done {
                break;
            }
            if self.wbuf.len() >= WBUF_FLUSH {
                self.flush();
                if !self.gone {
                    self.sending = Some(sd);
                    return;
                }
            }
        }
        let Sending {
            reader,
            buf,
            mut stuffer,
            mut sent,
            index,
            top,
            ..
        } = sd;
        drop(reader);
        m.chunk = buf;
        let before = self.wbuf.len();
        stuffer.finish(&mut self.wbuf);
        if self.st.oe_ns_eoh && !stuffer.in_body {
            // pop3_client_workarounds = oe-ns-eoh: the missing end-of-headers line is
            // sent (the octet count of RETR stays the message's size, as in Dovecot).
            self.wbuf.extend_from_slice(b"\r\n");
        }
        sent += (self.wbuf.len() - before) as u64;
        self.wbuf.extend_from_slice(b".\r\n");
        if top {
            m.top.0 += 1;
            m.top.1 += sent;
        } else {
            m.retr.0 += 1;
            m.retr.1 += sent;
            // Dovecot marks only RETR'd messages \Seen (TOP never, even of the whole).
            m.seen[index] = true;
        }
    }
}

/// The values `pop3_logout_format` may use.
struct LogoutStats {
    top: (u64, u64),
    retr: (u64, u64),
    expunged: u64,
    messages: u64,
    size: u64,
    input: u64,
    output: u64,
    uidl_change: String,
}

impl LogoutStats {
    /// Dovecot's `var_expand` of the format with pop3's table: `%t`/`%{top_count}`,
    /// `%p`/`%{top_bytes}`, `%r`/`%{retr_count}`, `%b`/`%{retr_bytes}`,
    /// `%d`/`%{deleted_count}`, `%m`/`%{message_count}`, `%s`/`%{message_bytes}`,
    /// `%i`/`%{input}`, `%o`/`%{output}`, `%u`/`%{uidl_change}`, `%%` (modifiers as in
    /// [`var_expand`](crate::config::dovecot::var_expand::var_expand); `%X ` takes the
    /// space as the key, as Dovecot does); an unknown key is written
    /// `UNSUPPORTED_VARIABLE_<key>`, as 2.3.19 logs it.
    fn expand(&self, format: &str) -> String {
        let value = |key: &str| -> Option<String> {
            Some(match key {
                "t" | "top_count" => self.top.0.to_string(),
                "p" | "top_bytes" => self.top.1.to_string(),
                "r" | "retr_count" => self.retr.0.to_string(),
                "b" | "retr_bytes" => self.retr.1.to_string(),
                "d" | "deleted_count" => self.expunged.to_string(),
                "m" | "message_count" => self.messages.to_string(),
                "s" | "message_bytes" => self.size.to_string(),
                "i" | "input" => self.input.to_string(),
                "o" | "output" => self.output.to_string(),
                "u" | "uidl_change" => self.uidl_change.clone(),
                _ => return None,
            })
        };
        crate::config::dovecot::var_expand::var_expand(format, value, |key| {
            format!("UNSUPPORTED_VARIABLE_{key}")
        })
    }
}

/// The format uses `%u` / `%{uidl_change}` (the UIDL hashes are kept only then).
fn uses_uidl_change(format: &str) -> bool {
    format.contains("%u") || format.contains("%{uidl_change}")
}

/// Dovecot's `client_build_uidl_change_string`: how many messages and which (XOR of the
/// UIDLs' CRC-32) the client had before the session and has after it, `OLD/HASH` or
/// `OLD/HASH -> NEW/HASH`; empty without a full UIDL listing.
fn uidl_change(m: &Mail) -> String {
    let Some(hashes) = &m.uidl_hashes else {
        return String::new();
    };
    let count = hashes.len();
    // Messages before the first one RETR'd were probably left by an earlier session.
    let old_count = if m.lowest_retr > 0 {
        m.lowest_retr - 1
    } else {
        count
    };
    let old_hash = hashes[..old_count.min(count)].iter().fold(0, |a, h| a ^ h);
    let kept = |i: &usize| !m.any_deleted || !m.deleted[*i];
    let new_hash = (0..count).filter(kept).fold(0, |a, i| a ^ hashes[i]);
    let new_count = count - m.deleted.iter().filter(|d| **d).count();
    if old_hash == new_hash && old_count == new_count {
        format!("{old_count}/{old_hash:08x}")
    } else {
        format!("{old_count}/{old_hash:08x} -> {new_count}/{new_hash:08x}")
    }
}

/// Read from `r` until `buf` is full or the message ends.
fn fill(r: &mut MessageReader, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = std::io::Read::read(r, &mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

/// RFC 1939's byte-stuffing over a message read in pieces: CRLF line ends (a bare LF
/// becomes CRLF), a `.` doubled at the start of a line; TOP's body line limit;
/// `outlook-no-nuls` (NUL sent as 0x80).
struct Stuffer {
    at_start: bool,
    /// A CR not yet written: CRLF if an LF follows.
    pending_cr: bool,
    line_len: u64,
    in_body: bool,
    body_lines: u64,
    max_lines: Option<u64>,
    /// TOP has sent its lines.
    done: bool,
    nul80: bool,
}

impl Stuffer {
    fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < data.len() {
            if !self.pending_cr && !self.at_start {
                // Inside a line: copy up to the next byte that needs a look at once.
                let rest = &data[i..];
                let k = if self.nul80 {
                    memchr::memchr3(b'\r', b'\n', 0, rest)
                } else {
                    memchr::memchr2(b'\r', b'\n', rest)
                }
                .unwrap_or(rest.len());
                out.extend_from_slice(&rest[..k]);
                self.line_len += k as u64;
                i += k;
                if i == data.len() {
                    break;
                }
            }
            let b = data[i];
            i += 1;
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    out.extend_from_slice(b"\r\n");
                    self.end_line();
                    continue;
                }
                out.push(b'\r');
                self.line_len += 1;
            }
            if self.at_start {
                if self.in_body {
                    if self.max_lines.is_some_and(|max| self.body_lines >= max) {
                        self.done = true;
                        return;
                    }
                    self.body_lines += 1;
                }
                self.at_start = false;
                self.line_len = 0;
                if b == b'.' {
                    out.push(b'.');
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.end_line();
                }
                0 if self.nul80 => {
                    out.push(0x80);
                    self.line_len += 1;
                }
                _ => {
                    out.push(b);
                    self.line_len += 1;
                }
            }
        }
    }

    fn end_line(&mut self) {
        if !self.in_body && self.line_len == 0 {
            self.in_body = true;
        }
        self.at_start = true;
    }

    /// The end of the message: a last line without its line end gets CRLF.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if self.pending_cr {
            self.pending_cr = false;
            out.push(b'\r');
            self.line_len += 1;
        }
        if !self.at_start {
            out.extend_from_slice(b"\r\n");
            self.end_line();
        }
    }
}

fn live(m: &Mail) -> (usize, u64) {
    let msgs = m.mailbox.messages();
    let mut n = 0;
    let mut sz = 0;
    for (i, d) in m.deleted.iter().enumerate() {
        if !d {
            n += 1;
            sz += msgs[i].size;
        }
    }
    (n, sz)
}

#[cfg(test)]
mod tests {
    #[test]
    fn md5_rfc1321() {
        let hex = |d: [u8; 16]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(super::md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            hex(super::md5(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            )),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
        // RFC 1939's APOP example.
        assert_eq!(
            hex(super::md5(b"<1896.697170952@dbc.mtview.ca.us>tanstaaf")),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
    }

    fn stuffer(max_lines: Option<u64>, nul80: bool) -> super::Stuffer {
        super::Stuffer {
            at_start: true,
            pending_cr: false,
            line_len: 0,
            in_body: false,
            body_lines: 0,
            max_lines,
            done: false,
            nul80,
        }
    }

    /// RFC 1939 stuffing of a whole message, byte by byte, written out plainly.
    fn reference(msg: &[u8], max_lines: Option<u64>, nul80: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut lines: Vec<&[u8]> = msg.split(|&b| b == b'\n').collect();
        let ends_lf = msg.last() == Some(&b'\n');
        if ends_lf || msg.is_empty() {
            lines.pop();
        }
        let mut in_body = false;
        let mut body = 0;
        let count = lines.len();
        for (i, l) in lines.into_iter().enumerate() {
            // CRLF ends a line as LF does; a CR at the very end, without LF, is data.
            let terminated = i + 1 < count || ends_lf;
            let l = match l.strip_suffix(b"\r") {
                Some(short) if terminated => short,
                _ => l,
            };
            if in_body {
                if max_lines.is_some_and(|m| body >= m) {
                    return out;
                }
                body += 1;
            }
            if l.first() == Some(&b'.') {
                out.push(b'.');
            }
            for &b in l {
                out.push(if b == 0 && nul80 { 0x80 } else { b });
            }
            out.extend_from_slice(b"\r\n");
            if l.is_empty() {
                in_body = true;
            }
        }
        out
    }

    /// The fast path (runs copied up to the next CR, LF or NUL) gives what the plain
    /// definition gives, however the message is cut into pieces.
    #[test]
    fn stuffing_matches_the_definition_for_any_cut() {
        let msgs: [&[u8]; 7] = [
            b"Subject: a\n\n.dot\n..two\nx.y\n.\n",
            b"Subject: a\r\n\r\nbody\r\n.\r\nlast",
            b"H: 1\n\nbare\rcr\n\r\n\0nul\n",
            b"no header end\n.x",
            b"",
            b"H: v\n\n1\n2\n3\n4\n5\n",
            b"H: v\r\n\r\n1\r\n.2\r\n3\r",
        ];
        for msg in msgs {
            for (max, nul80) in [
                (None, false),
                (None, true),
                (Some(0), false),
                (Some(2), false),
            ] {
                let want = reference(msg, max, nul80);
                for piece in 1..=msg.len().max(1) {
                    let mut st = stuffer(max, nul80);
                    let mut out = Vec::new();
                    for chunk in msg.chunks(piece) {
                        st.feed(chunk, &mut out);
                        if st.done {
                            break;
                        }
                    }
                    st.finish(&mut out);
                    assert_eq!(
                        String::from_utf8_lossy(&out),
                        String::from_utf8_lossy(&want),
                        "{:?} in pieces of {piece}, lines {max:?}, nul80 {nul80}",
                        String::from_utf8_lossy(msg)
                    );
                }
            }
        }
    }
}
