//! One logged-in POP3 connection (Dovecot's `pop3` process; the AUTHORIZATION state is
//! the login stage's, [`crate::login::pop3`]): the credentials checked by the service
//! ([`take_over`]), then, in the user's mail process (`dovecot/pop3`, running as the
//! user: [`crate::login::mailproc`]), the TRANSACTION state on the user's mailbox and the
//! UPDATE state at QUIT ([`serve`]). Replies are
//! queued and flushed only before the session blocks for input, so pipelined commands
//! (RFC 2449 PIPELINING) are answered in one write.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::Pop3State;
use super::uidl;
use crate::auth::dovecot::{RequestInfo, UserInfo};
use crate::login::Protocol;
use crate::login::conn::{Conn, End, Io};
use crate::login::handoff::{Channel, Credentials, LoginRequest, Msg, Verdict};
use crate::login::mailproc::MailProcs;
use crate::login::service::{Checker, Refused};
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
    /// `pop3_lock_session`: held until the session ends.
    _session_lock: Option<crate::mailbox::lock::DotLock>,
}

struct Session {
    st: Arc<Pop3State>,
    conn: Conn,
    bad: u32,
    /// The mail stage failed after authentication (as Dovecot's `pop3` process): the
    /// connection is closed after the reply.
    closing: bool,
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

/// The mail process's side: serve a logged-in session (the service has counted it, and
/// learns of its end from the caller).
pub async fn serve(
    st: Arc<Pop3State>,
    mut req: LoginRequest,
    fd: OwnedFd,
    user: String,
    info: UserInfo,
) {
    let Ok(io) = Io::from_handed(fd, req.tls) else {
        return;
    };
    let mut conn = Conn::new(io, req.remote, req.local);
    conn.tls = req.tls;
    conn.session_id = std::mem::take(&mut req.session_id);
    conn.rbuf = std::mem::take(&mut req.leftover);
    let mut s = Session {
        st,
        conn,
        bad: 0,
        closing: false,
    };
    if let Some(mail) = s.start_mail(user, info, &req.method).await {
        s.transaction(mail).await;
    }
    s.flush().await;
}

/// Service: check the password (or the APOP digest), look the user up, check the uid
/// and `mail_max_userip_connections` (counting this session in). `Err` is what the login
/// process is to do instead.
async fn check(
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
    let checker = Checker {
        protocol: Protocol::Pop3,
        auth: &st.auth,
        cache: st.auth_cache.as_ref(),
        log: &st.log,
        first_valid_uid: st.first_valid_uid,
        userip: &st.userip,
    };
    checker
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
    fn reply(&mut self, line: &str) {
        self.conn.reply(line);
    }

    async fn flush(&mut self) {
        self.conn.flush().await;
    }

    fn secured(&self) -> bool {
        self.st
            .login
            .is_secured(self.conn.tls, self.conn.remote, self.conn.local)
    }

    /// Read one line without its CRLF (replies are flushed first).
    async fn read_line(&mut self, limit: usize) -> Result<Vec<u8>, End> {
        self.conn.read_line(limit, self.st.idle_timeout).await
    }

    /// Mail process, once the login process let go of the client: log the login, take the
    /// POP3 session lock, answer `+OK Logged in.` and open the INBOX. `None` when the
    /// session ends here (the reply is queued).
    async fn start_mail(&mut self, user: String, info: UserInfo, method: &str) -> Option<Mail> {
        let sec = if self.conn.tls {
            ", TLS"
        } else if self.secured() {
            ", secured"
        } else {
            ""
        };
        self.st.log.info(&format!(
            "pop3-login: Login: user=<{}>, method={method}, rip={}, lip={}, mpid={}{sec}, session=<{}>",
            user,
            self.conn.remote.ip(),
            self.conn.local.ip(),
            std::process::id(),
            self.conn.session_id
        ));
        let res_user = user;
        let home = info.home.clone().unwrap_or_default();
        let location = info
            .extra
            .iter()
            .find(|(k, _)| k == "mail")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| self.st.mail_location.clone());
        let uname = res_user.clone();
        // pop3_lock_session: Dovecot's mail process takes the session lock before it
        // answers "+OK Logged in.", waiting about 10 s for another session to end.
        let mut session_lock = None;
        if self.st.lock_session {
            let (l, n, h) = (location.clone(), uname.clone(), home.clone());
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
                        self.st.log.error(&format!(
                            "pop3({})<{}><{}>: pop3_lock_session: {e}",
                            res_user,
                            std::process::id(),
                            self.conn.session_id
                        ));
                    }
                    self.st.log.info(&format!(
                        "pop3({})<{}><{}>: Disconnected: Couldn't lock POP3 session top=0/0, retr=0/0, del=0/0, size=0",
                        res_user,
                        std::process::id(),
                        self.conn.session_id
                    ));
                    self.reply("-ERR [IN-USE] Mailbox is locked by another POP3 session.");
                    self.closing = true;
                    return None;
                }
            }
        }
        // As Dovecot: the login stage answers first, then the mail process opens the
        // INBOX (and may wait for its lock up to mbox_lock_timeout).
        // The mail process's output (`%o` of pop3_logout_format) starts with it.
        self.conn.counting = true;
        self.reply("+OK Logged in.");
        self.flush().await;
        let mut opts = self.st.mbox.clone();
        // A dotlock the user may not create is logged as this session's error, as
        // Dovecot's mail process logs it (`pop3(USER)<PID><SESSION>: Error: Mailbox INBOX:
        // file_dotlock_create(…) failed: Permission denied (…)`).
        let (log, prefix) = (
            self.st.log.clone(),
            format!(
                "pop3({})<{}><{}>: ",
                res_user,
                std::process::id(),
                self.conn.session_id
            ),
        );
        opts.lock_errors = Some(crate::mailbox::lock::LockErrors(std::sync::Arc::new(
            move |text: &str| log.error(&format!("{prefix}{text}")),
        )));
        let drop_recent = !self.st.no_flag_updates;
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
                Some(Mail {
                    user: res_user,
                    mailbox,
                    deleted: vec![false; n],
                    seen: vec![false; n],
                    chunk: Vec::new(),
                    top: (0, 0),
                    retr: (0, 0),
                    uidl_hashes: None,
                    lowest_retr: 0,
                    any_deleted: false,
                    _session_lock: session_lock,
                })
            }
            other => {
                // Dovecot's texts: a lock timeout is told to the client, other errors
                // only to the log.
                let (why, client) = match other {
                    Some(Err(MailboxError::Locked(_))) => (
                        "Timeout while waiting for lock".to_string(),
                        "Timeout while waiting for lock".to_string(),
                    ),
                    Some(Err(e)) => (
                        e.to_string(),
                        "Internal error occurred. Refer to server log for more information."
                            .to_string(),
                    ),
                    _ => (
                        "internal error".to_string(),
                        "Internal error occurred. Refer to server log for more information."
                            .to_string(),
                    ),
                };
                let who = format!(
                    "pop3({})<{}><{}>",
                    res_user,
                    std::process::id(),
                    self.conn.session_id
                );
                self.st
                    .log
                    .error(&format!("{who}: Couldn't init INBOX: {why}"));
                self.st.log.info(&format!(
                    "{who}: Disconnected: Couldn't init INBOX: {why} top=0/0, retr=0/0, del=0/0, size=0"
                ));
                self.reply(&format!("-ERR [SYS/TEMP] {client}"));
                self.closing = true;
                None
            }
        }
    }

    /// The TRANSACTION state, then UPDATE on QUIT.
    async fn transaction(&mut self, mut m: Mail) {
        let count = m.mailbox.messages().len();
        let total: u64 = m.mailbox.messages().iter().map(|x| x.size).sum();
        let reason = loop {
            let line = match self.read_line(MAX_LINE).await {
                Ok(l) => l,
                Err(End::TooLong) => {
                    self.reply("-ERR Input line too long.");
                    break "Disconnected: Input line too long".to_string();
                }
                Err(End::Timeout) => break "Disconnected: Inactivity".to_string(),
                Err(End::Lost) if crate::login::mailproc::shutting_down() => {
                    // `dovecot stop` (shutdown_clients = yes), as Dovecot's pop3 says it.
                    self.reply("-ERR [SYS/TEMP] Server shutting down.");
                    break "Disconnected: Server shutting down.".to_string();
                }
                // QueueFull comes only before login (the login process).
                Err(End::Lost | End::QueueFull) => {
                    break "Disconnected: Connection closed".to_string();
                }
            };
            let line = String::from_utf8_lossy(&line).into_owned();
            let (verb, arg) = line.split_once(' ').unwrap_or((&line, ""));
            let verb = verb.to_ascii_uppercase();
            match verb.as_str() {
                "CAPA" => {
                    let c = crate::login::pop3::capa(true, false, false, &[]);
                    self.reply(&c);
                }
                "NOOP" => self.reply("+OK"),
                "STAT" => {
                    let (n, sz) = live(&m);
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
                            format!("+OK {} messages:", live(&m).0)
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
                                s.push_str(&item(i, &m));
                            }
                        }
                        if hashing {
                            m.uidl_hashes = Some(hashes);
                        }
                        s.push_str("\r\n.");
                        self.reply(&s);
                    } else if let Some((i, _)) = self.msgnum(&m, arg, false) {
                        let s = format!("+OK {}", item(i, &m));
                        self.reply(&s);
                    }
                }
                "DELE" => {
                    if let Some((i, _)) = self.msgnum(&m, arg, false) {
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
                    if let Some((i, _)) = self.msgnum(&m, arg, false) {
                        if m.lowest_retr == 0 || i + 1 < m.lowest_retr {
                            m.lowest_retr = i + 1;
                        }
                        self.send_message(&mut m, i, None).await;
                    }
                }
                "TOP" => {
                    if let Some((i, rest)) = self.msgnum(&m, arg, true)
                        && let Some(n) = self.size_arg(&rest)
                    {
                        self.send_message(&mut m, i, Some(n)).await;
                    }
                }
                "QUIT" => {
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
                        break "Disconnected: Logged out".to_string();
                    }
                    let deleting = !gone.is_empty();
                    let mut mailbox = std::mem::replace(&mut m.mailbox, Folder::empty());
                    // The UPDATE state: \Seen for the messages RETR'd, DELE'd ones gone,
                    // in one write of the mailbox.
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
                            break "Disconnected: Logged out".to_string();
                        }
                        Some((mb, Err(e))) => {
                            m.mailbox = mb;
                            self.st.log.error(&format!(
                                "pop3({})<{}><{}>: Failed to delete messages: {e}",
                                m.user,
                                std::process::id(),
                                self.conn.session_id
                            ));
                            self.reply("-ERR [SYS/TEMP] Internal error occurred. Refer to server log for more information.");
                            m.deleted.iter_mut().for_each(|d| *d = false);
                            break "Disconnected: Logged out".to_string();
                        }
                        None => {
                            m.deleted.iter_mut().for_each(|d| *d = false);
                            break "Disconnected: Logged out".to_string();
                        }
                    }
                }
                _ => {
                    self.reply(&format!("-ERR Unknown command: {verb}"));
                    self.bad += 1;
                    if self.bad >= MAX_BAD_COMMANDS {
                        self.reply("-ERR Too many bad commands.");
                        break "Disconnected: Too many bad commands".to_string();
                    }
                }
            }
            if self.conn.gone() {
                break "Disconnected: Connection closed".to_string();
            }
        };
        self.flush().await;
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
            messages: count as u64,
            size: total,
            input: self.conn.in_bytes,
            output: self.conn.out_bytes,
            uidl_change: uidl_change(&m),
        };
        self.st.log.info(&format!(
            "pop3({})<{}><{}>: {reason} {}",
            m.user,
            std::process::id(),
            self.conn.session_id,
            stats.expand(&self.st.logout_format)
        ));
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
    /// bytes at a time and written out as the output queue fills, so a session holds
    /// no whole message.
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
        let (mut reader, mut n, mut buf) = match first {
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
                self.st.log.error(&format!(
                    "pop3({})<{}><{}>: {e}",
                    m.user,
                    std::process::id(),
                    self.conn.session_id
                ));
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
        let mut sent = head.len() as u64 + 2;
        self.reply(&head);
        let mut out = Stuffer {
            at_start: true,
            pending_cr: false,
            line_len: 0,
            in_body: false,
            body_lines: 0,
            max_lines: lines,
            done: false,
            nul80: self.st.outlook_no_nuls,
        };
        loop {
            let before = self.conn.wbuf.len();
            out.feed(&buf[..n], &mut self.conn.wbuf);
            sent += (self.conn.wbuf.len() - before) as u64;
            if n < buf.len() || out.done {
                break;
            }
            if self.conn.wbuf.len() >= WBUF_FLUSH {
                self.flush().await;
            }
            match fill(&mut reader, &mut buf) {
                Ok(k) => n = k,
                Err(e) => {
                    // Part of the message is out: as Dovecot, the connection is closed.
                    m.chunk = buf;
                    self.st.log.error(&format!(
                        "pop3({})<{}><{}>: {e}",
                        m.user,
                        std::process::id(),
                        self.conn.session_id
                    ));
                    self.flush().await;
                    self.conn.io = Io::Gone;
                    return;
                }
            }
        }
        drop(reader);
        m.chunk = buf;
        let before = self.conn.wbuf.len();
        out.finish(&mut self.conn.wbuf);
        if self.st.oe_ns_eoh && !out.in_body {
            // pop3_client_workarounds = oe-ns-eoh: the missing end-of-headers line is
            // sent (the octet count of RETR stays the message's size, as in Dovecot).
            self.conn.wbuf.extend_from_slice(b"\r\n");
        }
        sent += (self.conn.wbuf.len() - before) as u64;
        self.conn.wbuf.extend_from_slice(b".\r\n");
        if lines.is_some() {
            m.top.0 += 1;
            m.top.1 += sent;
        } else {
            m.retr.0 += 1;
            m.retr.1 += sent;
            // Dovecot marks only RETR'd messages \Seen (TOP never, even of the whole).
            m.seen[i] = true;
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
