//! IMAP's pre-login grammar (Dovecot's `imap-login`, `login-common` and
//! `imap-login-commands`): the greeting with the pre-login capabilities, then CAPABILITY,
//! NOOP, LOGOUT, ID, ENABLE, STARTTLS (RFC 2595), LOGIN and AUTHENTICATE (PLAIN, LOGIN,
//! with SASL-IR, RFC 4959) until the service takes the client. Replies as Dovecot 2.3.19
//! words them:
//! - `* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+
//!   STARTTLS AUTH=PLAIN] Dovecot ready.` (`STARTTLS` while TLS is offered and not on,
//!   `LOGINDISABLED` and no plaintext `AUTH=` while `disable_plaintext_auth` forbids a
//!   password in clear);
//! - any other command, a bad tag, or wrong arguments: `BAD Error in IMAP command received
//!   by server.`, and the third such one `* BYE Too many invalid IMAP commands.`; an
//!   argument that does not parse: `BAD` with the parser's text (`Missing ')'`);
//! - a line (with its literals) over 4 kB: `* BYE Input buffer full, aborting`;
//! - LOGIN without TLS where not allowed: `* BAD [ALERT] Plaintext authentication not
//!   allowed without SSL/TLS, but your client did it anyway. …` then `NO
//!   [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS)
//!   connections.`; AUTHENTICATE: `NO [PRIVACYREQUIRED] Plaintext authentication
//!   disabled.`; an unknown mechanism `NO [ALERT] Unsupported authentication mechanism.`;
//!   `*` aborts (`BAD Authentication aborted by client.`); bad base64 `NO [ALERT] Invalid
//!   base64 in response`; wrong credentials (after `auth_failure_delay`) `NO
//!   [AUTHENTICATIONFAILED] Authentication failed.`;
//! - a client that leaves is logged as `imap-login: Disconnected: REASON (no auth attempts
//!   in N secs): user=<>, rip=…, lip=…, secured, session=<…>` (or `auth failed, N attempts
//!   in N secs`, `tried to use unsupported auth mechanism`, `tried to use disallowed
//!   plaintext auth`), as Dovecot logs it.
//!
//! The service answers a successful login itself (`TAG OK [CAPABILITY …] Logged in`):
//! input the client pipelined after LOGIN goes with the connection.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use tokio::net::{TcpStream, UnixStream};

use super::LoginConf;
use super::conn::{Conn, End, Io, proxy};
use super::handoff::{Credentials, LoginRequest, Verdict};
use super::pop3::handed_fd;
use super::process::LoginCtl;
use crate::imap::reader::{Arg, ReadEvent, literal_marker, parse_args, split_command};

/// Dovecot's login input buffer: a command line with its literals.
const LOGIN_MAX_INBUF: usize = 4096;

/// The tag of a buffered line that starts `TAG ID (`, the only command whose line may
/// exceed [`LOGIN_MAX_INBUF`].
fn long_id_tag(buf: &[u8]) -> Option<String> {
    let sp = buf.iter().position(|&b| b == b' ')?;
    let tag = &buf[..sp];
    let rest = &buf[sp + 1..];
    let valid_tag = !tag.is_empty()
        && tag
            .iter()
            .all(|&b| b.is_ascii_graphic() && !b"(){%*\"\\+".contains(&b));
    (valid_tag && rest.len() >= 4 && rest[..4].eq_ignore_ascii_case(b"ID ("))
        .then(|| String::from_utf8_lossy(tag).into_owned())
}

/// Dovecot's `CLIENT_MAX_BAD_COMMANDS` of the login processes.
const MAX_BAD_COMMANDS: u32 = 3;
/// The capabilities every greeting starts with (Dovecot's `CAPABILITY_BANNER_STRING`
/// and LITERAL+).
pub const CAPABILITY_BANNER: &str = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+";

/// Why a pre-login client left, for the log's parenthesis.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tried {
    Nothing,
    Unsupported,
    Plaintext,
    /// AUTHENTICATE started and not finished.
    Unfinished,
}

struct PreLogin {
    st: Arc<LoginConf>,
    conn: Conn,
    ctl: Arc<LoginCtl>,
    auth_attempts: u32,
    /// The last user name and mechanism tried, for the log.
    user: String,
    method: Option<String>,
    tried: Tried,
    bad: u32,
    started: std::time::Instant,
    /// The connection is to close after the replies queued.
    closing: bool,
}

/// What a pre-login line turned out to be.
enum Line {
    /// A whole command line (literals inline as `{N}\r\n` + bytes).
    Command(Vec<u8>),
    /// The client closed, went silent or overflowed the buffer (already answered).
    End(&'static str),
}

/// What the login process keeps of a client the service took: for a TLS client, its
/// end of the proxy pair.
struct Handed(Option<UnixStream>);

/// The login process's side of one IMAP client: greeting and pre-login commands until
/// the service takes the connection over (or the client leaves). A TLS client's
/// connection stays proxied through this process, as Dovecot's `imap-login` does.
pub async fn run(
    tcp: TcpStream,
    remote: SocketAddr,
    implicit_tls: bool,
    st: Arc<LoginConf>,
    ctl: Arc<LoginCtl>,
) {
    let local = tcp.local_addr().unwrap_or(remote);
    let _ = tcp.set_nodelay(true);
    let mut s = PreLogin {
        conn: Conn::new(Io::Plain(tcp), remote, local),
        st: st.clone(),
        ctl,
        auth_attempts: 0,
        user: String::new(),
        method: None,
        tried: Tried::Nothing,
        bad: 0,
        started: std::time::Instant::now(),
        closing: false,
    };
    if implicit_tls {
        let Some(cfg) = st.tls.clone() else {
            return;
        };
        if !s.conn.start_tls(cfg, st.idle_timeout).await {
            return;
        }
    }
    let greeting = format!("* OK [CAPABILITY {}] {}", s.capability(), st.greeting);
    s.conn.reply(&greeting);
    match s.commands().await {
        Some(Handed(Some(service_end))) => {
            if let Io::Tls(tls) = std::mem::replace(&mut s.conn.io, Io::Gone) {
                drop(s);
                proxy(tls, service_end).await;
            }
        }
        Some(Handed(None)) => {}
        None => {
            s.conn.flush().await;
            s.conn.io.shutdown().await;
        }
    }
}

impl PreLogin {
    fn secured(&self) -> bool {
        self.st
            .is_secured(self.conn.tls, self.conn.remote, self.conn.local)
    }

    fn plaintext_allowed(&self) -> bool {
        self.st
            .plaintext_allowed(self.conn.tls, self.conn.remote, self.conn.local)
    }

    /// The pre-login capability list (Dovecot's `get_capability`).
    fn capability(&self) -> String {
        let mut c = String::from(CAPABILITY_BANNER);
        if self.st.tls.is_some() && !self.conn.tls {
            c.push_str(" STARTTLS");
        }
        let plain = self.plaintext_allowed();
        if !plain {
            c.push_str(" LOGINDISABLED");
        }
        for m in &self.st.mechanisms {
            // Without TLS where plaintext is refused, Dovecot lists only mechanisms that
            // send no password in clear; PLAIN and LOGIN both do.
            if matches!(m.as_str(), "PLAIN" | "LOGIN") && plain {
                c.push_str(" AUTH=");
                c.push_str(m);
            }
        }
        c
    }

    /// Read the next command line with its literals (`+ OK` for a synchronizing one).
    async fn read_line(&mut self) -> Line {
        let mut line: Vec<u8> = Vec::new();
        loop {
            let limit = LOGIN_MAX_INBUF.saturating_sub(line.len());
            match self.conn.read_line(limit, self.st.idle_timeout).await {
                Ok(part) => {
                    line.extend_from_slice(&part);
                    let Some((_, size, nonsync, _)) = literal_marker(&part) else {
                        return Line::Command(line);
                    };
                    let left = LOGIN_MAX_INBUF.saturating_sub(line.len() + 2);
                    let size = match size.and_then(|s| usize::try_from(s).ok()) {
                        Some(s) if s <= left => s,
                        _ => {
                            self.conn.reply("* BYE Input buffer full, aborting");
                            return Line::End("Input buffer full");
                        }
                    };
                    line.extend_from_slice(b"\r\n");
                    if !nonsync {
                        self.conn.reply("+ OK");
                    }
                    while self.conn.rbuf.len() < size {
                        if let Err(e) = self.conn.fill(self.st.idle_timeout).await {
                            return Line::End(end_reason(e));
                        }
                    }
                    line.extend(self.conn.rbuf.drain(..size));
                }
                Err(End::TooLong) => {
                    // ID's parameters are read as a stream by Dovecot, whatever their
                    // length: a long ID line is dropped as it comes and answered as `ID NIL`.
                    if line.is_empty()
                        && let Some(tag) = long_id_tag(&self.conn.rbuf)
                    {
                        if let Err(e) = self.conn.skip_line(self.st.idle_timeout).await {
                            return Line::End(end_reason(e));
                        }
                        return Line::Command(format!("{tag} ID NIL").into_bytes());
                    }
                    self.conn.reply("* BYE Input buffer full, aborting");
                    return Line::End("Input buffer full");
                }
                Err(e) => {
                    if e == End::QueueFull {
                        self.conn.reply("* BYE Connection queue full");
                    }
                    return Line::End(end_reason(e));
                }
            }
        }
    }

    fn bad(&mut self, tag: &str) -> bool {
        self.bad += 1;
        if self.bad >= MAX_BAD_COMMANDS {
            self.conn.reply("* BYE Too many invalid IMAP commands.");
            self.log_end("Too many invalid commands");
            return false;
        }
        self.conn.reply(&format!(
            "{tag} BAD Error in IMAP command received by server."
        ));
        true
    }

    /// The pre-login commands; `Some` once the service took the client.
    async fn commands(&mut self) -> Option<Handed> {
        loop {
            if self.closing || self.conn.gone() {
                return None;
            }
            let line = match self.read_line().await {
                Line::Command(l) => l,
                Line::End(reason) => {
                    self.log_end(reason);
                    return None;
                }
            };
            let (tag, name, rest) = match split_command(&line) {
                ReadEvent::Command(c) => (c.tag, c.name, c.line),
                _ => {
                    // An empty line, a bad tag or command name.
                    let tag = std::str::from_utf8(line.split(|&c| c == b' ').next().unwrap_or(&[]))
                        .ok()
                        .filter(|t| !t.is_empty() && !t.contains(['"', '{', '(', ')', '*']))
                        .unwrap_or("*")
                        .to_string();
                    if !self.bad(&tag) {
                        return None;
                    }
                    continue;
                }
            };
            let args = match parse_args(&rest) {
                Ok(a) => a,
                Err(e) => {
                    self.conn.reply(&format!("{tag} BAD {}", e.0));
                    continue;
                }
            };
            match name.as_str() {
                "CAPABILITY" => {
                    let c = self.capability();
                    self.conn.reply(&format!("* CAPABILITY {c}"));
                    self.conn.reply(&format!(
                        "{tag} OK Pre-login capabilities listed, post-login capabilities have more."
                    ));
                }
                "NOOP" => self.conn.reply(&format!("{tag} OK NOOP completed.")),
                "LOGOUT" => {
                    self.conn.reply("* BYE Logging out");
                    self.conn.reply(&format!("{tag} OK Logout completed."));
                    self.log_end("Aborted login by logging out");
                    return None;
                }
                "ID" => {
                    if args.len() != 1 || !matches!(args[0], Arg::Nil | Arg::List(_)) {
                        if !self.bad(&tag) {
                            return None;
                        }
                        continue;
                    }
                    self.conn.reply("* ID (\"name\" \"Dovecot\")");
                    self.conn.reply(&format!("{tag} OK ID completed."));
                }
                "ENABLE" => {
                    self.conn.reply("* ENABLED");
                    self.conn.reply(&format!(
                        "{tag} OK ENABLE ignored in non-authenticated state."
                    ));
                }
                "STARTTLS" => {
                    if let Some(cfg) = self.st.tls.clone() {
                        if self.conn.tls {
                            self.conn
                                .reply(&format!("{tag} BAD TLS is already active."));
                        } else {
                            self.conn
                                .reply(&format!("{tag} OK Begin TLS negotiation now."));
                            if !self.conn.start_tls(cfg, self.st.idle_timeout).await {
                                return None;
                            }
                        }
                    } else {
                        self.conn
                            .reply(&format!("{tag} BAD TLS support isn't enabled."));
                    }
                }
                "LOGIN" => {
                    let (Some(user), Some(pass), 2) = (
                        args.first().and_then(Arg::astring),
                        args.get(1).and_then(Arg::astring),
                        args.len(),
                    ) else {
                        if !self.bad(&tag) {
                            return None;
                        }
                        continue;
                    };
                    let (user, pass) = (
                        String::from_utf8_lossy(user).into_owned(),
                        String::from_utf8_lossy(pass).into_owned(),
                    );
                    self.user = user.clone();
                    if !self.plaintext_allowed() {
                        self.tried = Tried::Plaintext;
                        self.conn.reply(
                            "* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS, but your client did it anyway. If anyone was listening, the password was exposed.",
                        );
                        self.conn.reply(&format!(
                            "{tag} NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
                        ));
                        continue;
                    }
                    let creds = Credentials::Plain { user, pass };
                    if let Some(h) = self.login(&tag, creds, "PLAIN").await {
                        return Some(h);
                    }
                }
                "AUTHENTICATE" => {
                    if let Some(h) = self.authenticate(&tag, &args).await {
                        return Some(h);
                    }
                }
                _ => {
                    if !self.bad(&tag) {
                        return None;
                    }
                }
            }
        }
    }

    /// `AUTHENTICATE MECH [initial-response]` (RFC 3501 §6.2.2, SASL-IR of RFC 4959).
    async fn authenticate(&mut self, tag: &str, args: &[Arg]) -> Option<Handed> {
        let (Some(mech), true) = (args.first().and_then(Arg::atom), args.len() <= 2) else {
            if !self.bad(tag) {
                self.closing = true;
            }
            return None;
        };
        let mech = mech.to_ascii_uppercase();
        self.method = Some(mech.clone());
        if !self.st.mechanisms.contains(&mech) || !matches!(mech.as_str(), "PLAIN" | "LOGIN") {
            self.tried = Tried::Unsupported;
            self.conn.reply(&format!(
                "{tag} NO [ALERT] Unsupported authentication mechanism."
            ));
            return None;
        }
        if !self.plaintext_allowed() {
            self.tried = Tried::Plaintext;
            self.conn.reply(&format!(
                "{tag} NO [PRIVACYREQUIRED] Plaintext authentication disabled."
            ));
            return None;
        }
        let initial = args
            .get(1)
            .and_then(Arg::astring)
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let b64 = base64::engine::general_purpose::STANDARD;
        let decode = |s: &str| -> Option<Vec<u8>> {
            if s == "=" {
                Some(Vec::new())
            } else {
                b64.decode(s.trim()).ok()
            }
        };
        self.tried = Tried::Unfinished;
        let (user, pass) = if mech == "PLAIN" {
            let resp = match initial {
                Some(r) => r,
                None => self.challenge(tag, "").await?,
            };
            let Some(raw) = decode(&resp) else {
                self.conn
                    .reply(&format!("{tag} NO [ALERT] Invalid base64 in response"));
                self.tried = Tried::Nothing;
                return None;
            };
            let mut parts = raw.split(|&b| b == 0);
            let (_authz, authc, pass) = (parts.next(), parts.next(), parts.next());
            match (authc, pass) {
                (Some(u), Some(p)) if !u.is_empty() => (
                    String::from_utf8_lossy(u).into_owned(),
                    String::from_utf8_lossy(p).into_owned(),
                ),
                _ => {
                    self.failed(tag, "").await;
                    return None;
                }
            }
        } else {
            let user = match initial {
                Some(r) => r,
                None => self.challenge(tag, "VXNlcm5hbWU6").await?,
            };
            let Some(user) = decode(&user) else {
                self.conn
                    .reply(&format!("{tag} NO [ALERT] Invalid base64 in response"));
                self.tried = Tried::Nothing;
                return None;
            };
            let pass = self.challenge(tag, "UGFzc3dvcmQ6").await?;
            let Some(pass) = decode(&pass) else {
                self.conn
                    .reply(&format!("{tag} NO [ALERT] Invalid base64 in response"));
                self.tried = Tried::Nothing;
                return None;
            };
            (
                String::from_utf8_lossy(&user).into_owned(),
                String::from_utf8_lossy(&pass).into_owned(),
            )
        };
        self.user = user.clone();
        self.login(tag, Credentials::Plain { user, pass }, &mech)
            .await
    }

    /// Send `+ CHALLENGE` and read the client's response line; `*` aborts.
    async fn challenge(&mut self, tag: &str, text: &str) -> Option<String> {
        self.conn.reply(&format!("+ {text}"));
        let line = match self
            .conn
            .read_line(LOGIN_MAX_INBUF, self.st.idle_timeout)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                if e == End::TooLong {
                    self.conn.reply("* BYE Input buffer full, aborting");
                } else if e == End::QueueFull {
                    self.conn.reply("* BYE Connection queue full");
                }
                self.log_end(end_reason(e));
                self.closing = true;
                return None;
            }
        };
        let line = String::from_utf8_lossy(&line).into_owned();
        if line == "*" {
            self.tried = Tried::Nothing;
            self.conn
                .reply(&format!("{tag} BAD Authentication aborted by client."));
            return None;
        }
        Some(line)
    }

    async fn failed(&mut self, tag: &str, user: &str) {
        self.auth_attempts += 1;
        self.tried = Tried::Nothing;
        if !user.is_empty() {
            self.user = user.to_string();
        }
        tokio::time::sleep(self.st.failure_delay).await;
        self.conn.reply(&format!(
            "{tag} NO [AUTHENTICATIONFAILED] Authentication failed."
        ));
    }

    /// `imap-login: Disconnected: REASON (WHAT): user=<…>, method=…, rip=…, lip=…,
    /// secured, session=<…>`.
    fn log_end(&self, reason: &str) {
        let secs = self.started.elapsed().as_secs();
        let what = match self.tried {
            Tried::Unsupported => "tried to use unsupported auth mechanism".to_string(),
            Tried::Plaintext => "tried to use disallowed plaintext auth".to_string(),
            Tried::Unfinished => format!("client didn't finish SASL auth, waited {secs} secs"),
            Tried::Nothing if self.auth_attempts > 0 => format!(
                "auth failed, {} attempts in {secs} secs",
                self.auth_attempts
            ),
            Tried::Nothing => format!("no auth attempts in {secs} secs"),
        };
        let mut who = format!("user=<{}>", self.user);
        if let Some(m) = &self.method {
            who.push_str(&format!(", method={m}"));
        }
        self.st.log.info(&format!(
            "imap-login: Disconnected: {reason} ({what}): {who}, {}, session=<{}>",
            self.conn.fields(self.secured()),
            self.conn.session_id
        ));
    }

    /// Hand the credentials and the connection to the service and act on its verdict.
    async fn login(&mut self, tag: &str, creds: Credentials, method: &str) -> Option<Handed> {
        self.method = Some(method.to_string());
        self.conn.flush().await;
        let (fd, keep) = handed_fd(&self.conn.io)?;
        let user = match &creds {
            Credentials::Plain { user, .. } | Credentials::Apop { user, .. } => user.clone(),
        };
        let req = LoginRequest {
            id: 0,
            session_id: self.conn.session_id.clone(),
            remote: self.conn.remote,
            local: self.conn.local,
            tls: self.conn.tls,
            method: method.to_string(),
            tag: tag.to_string(),
            creds,
            leftover: self.conn.rbuf.clone(),
        };
        match self.ctl.ask(req, fd).await {
            Some(Verdict::Taken) => Some(Handed(keep)),
            Some(Verdict::Failed) => {
                self.failed(tag, &user).await;
                None
            }
            Some(Verdict::Reply(t)) => {
                self.tried = Tried::Nothing;
                self.auth_attempts += 1;
                self.conn.reply(&t);
                None
            }
            Some(Verdict::ReplyClose(t)) => {
                self.tried = Tried::Nothing;
                self.conn.reply(&t);
                self.closing = true;
                // `TAG NO [LIMIT] Maximum number of connections …`: Dovecot logs the
                // refusal itself as the reason.
                if let Some(reason) = t.split_once(" [LIMIT] ").map(|(_, r)| r) {
                    self.st.log.info(&format!(
                        "imap-login: Disconnected: {reason}: user=<{}>, method={method}, {}, session=<{}>",
                        self.user,
                        self.conn.fields(self.secured()),
                        self.conn.session_id
                    ));
                }
                None
            }
            None => {
                self.conn.reply(&format!(
                    "{tag} NO [UNAVAILABLE] Temporary authentication failure."
                ));
                self.closing = true;
                None
            }
        }
    }
}

fn end_reason(e: End) -> &'static str {
    match e {
        End::TooLong => "Input buffer full",
        End::Timeout => "Inactivity",
        End::Lost => "Connection closed",
        End::QueueFull => "Connection queue full",
    }
}
