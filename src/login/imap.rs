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
//!
//! [`PreLogin`] does no client I/O of its own, as POP3's [`super::pop3::PreLogin`]: a
//! state machine fed what the client sent ([`PreLogin::received`],
//! [`PreLogin::input_ended`], [`PreLogin::timed_out`], [`PreLogin::dropped`],
//! [`PreLogin::output_lost`]), how a TLS handshake went ([`PreLogin::tls_result`]) and the
//! service's verdict on a login ([`PreLogin::verdict`]), answering with the next
//! [`Action`] ([`PreLogin::next`]: send, sleep (`auth_failure_delay`), read within the
//! idle timeout, start TLS, hand the login to the service with the input not yet used,
//! close). [`run`] drives it on the client's socket through the login stage's one
//! connection task ([`super::task::drive`]). The unit tests of [`crate::imapd`] replay the
//! pre-login part of Dovecot's recorded session (`compat-fixtures/imap/session.txt`)
//! against the core, then go on in the logged-in session's core, with no socket.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use tokio::net::TcpStream;

use super::LoginConf;
use super::conn::{End, fields, take_line};
use super::handoff::{Credentials, LoginRequest, Verdict};
use super::process::LoginCtl;
use super::task;
use crate::imap::reader::{Arg, ReadEvent, literal_marker, parse_args, split_command};

/// What the connection task is to do next (see [`PreLogin::next`]); the login stage's
/// one action type.
pub use super::task::Action;

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

/// What the core waits for.
enum Mode {
    /// A command line; [`PreLogin::line`] holds its start up to a literal already read.
    Command,
    /// The bytes of a literal announced in [`PreLogin::line`].
    Literal(usize),
    /// The rest of an ID line too long for the buffer, dropped as it comes (Dovecot reads
    /// ID's parameters as a stream); then it is answered as `TAG ID NIL`.
    SkipId(String),
    /// An AUTHENTICATE continuation line.
    Auth { tag: String, step: AuthStep },
    /// The TLS handshake of [`Action::StartTls`].
    Tls,
    /// The service's verdict on a login, with its tag, mechanism and user name.
    Verdict {
        tag: String,
        method: String,
        user: String,
    },
    /// Over.
    Done,
}

enum AuthStep {
    /// PLAIN's response after `+ `.
    Plain,
    /// LOGIN's user name after `+ VXNlcm5hbWU6`.
    LoginUser,
    /// LOGIN's password after `+ UGFzc3dvcmQ6`.
    LoginPass { user: String },
}

/// The login process's side of one IMAP client, greeting and pre-login commands until
/// the service takes the client (or the client leaves), as a state machine without I/O.
pub struct PreLogin {
    st: Arc<LoginConf>,
    remote: SocketAddr,
    local: SocketAddr,
    /// TLS is spoken with the client.
    tls: bool,
    session_id: String,
    /// What the client sent and the core has not used yet.
    rbuf: Vec<u8>,
    /// The command line being read, up to its last literal (`{N}\r\n` + bytes inline).
    line: Vec<u8>,
    /// Replies queued until the core waits for input.
    wbuf: Vec<u8>,
    /// Actions for the connection task, oldest first.
    out: VecDeque<Action>,
    mode: Mode,
    /// The greeting waits for the implicit TLS handshake.
    greet: bool,
    /// Writing to the client failed: replies are dropped, and the next read finds the
    /// connection closed.
    gone: bool,
    auth_attempts: u32,
    /// The last user name and mechanism tried, for the log.
    user: String,
    method: Option<String>,
    tried: Tried,
    bad: u32,
    started: Instant,
}

/// The login process's side of one IMAP client: the connection task of a [`PreLogin`]
/// on the client's socket, until the service takes the connection over (or the client
/// leaves). A TLS client's connection then stays proxied through this process, as
/// Dovecot's `imap-login` does.
pub async fn run(
    tcp: TcpStream,
    remote: SocketAddr,
    implicit_tls: bool,
    st: Arc<LoginConf>,
    ctl: Arc<LoginCtl>,
) {
    let local = task::local_addr(&tcp, remote);
    let core = PreLogin::new(st, remote, local, implicit_tls);
    task::drive(core, tcp, ctl, true).await;
}

impl task::Core for PreLogin {
    fn next(&mut self) -> Action {
        PreLogin::next(self)
    }
    fn received(&mut self, bytes: &[u8]) {
        PreLogin::received(self, bytes)
    }
    fn input_ended(&mut self) {
        PreLogin::input_ended(self)
    }
    fn timed_out(&mut self) {
        PreLogin::timed_out(self)
    }
    fn dropped(&mut self) {
        PreLogin::dropped(self)
    }
    fn output_lost(&mut self) {
        PreLogin::output_lost(self)
    }
    fn tls_result(&mut self, up: bool) {
        PreLogin::tls_result(self, up)
    }
    fn verdict(&mut self, verdict: Option<Verdict>) {
        PreLogin::verdict(self, verdict)
    }
}

impl PreLogin {
    /// A new client from `remote` on `local`; with `implicit_tls` (`imaps`) the first
    /// action is the TLS handshake, else the greeting.
    pub fn new(
        st: Arc<LoginConf>,
        remote: SocketAddr,
        local: SocketAddr,
        implicit_tls: bool,
    ) -> PreLogin {
        let mut s = PreLogin {
            st,
            remote,
            local,
            tls: false,
            session_id: super::session_id(),
            rbuf: Vec::new(),
            line: Vec::new(),
            wbuf: Vec::new(),
            out: VecDeque::new(),
            mode: Mode::Command,
            greet: true,
            gone: false,
            auth_attempts: 0,
            user: String::new(),
            method: None,
            tried: Tried::Nothing,
            bad: 0,
            started: Instant::now(),
        };
        if implicit_tls {
            match s.st.tls.clone() {
                Some(cfg) => s.start_tls(cfg),
                None => s.mode = Mode::Done,
            }
        } else {
            s.greeting();
        }
        s
    }

    /// Bytes the client sent.
    pub fn received(&mut self, bytes: &[u8]) {
        self.rbuf.extend_from_slice(bytes);
    }

    /// The client closed the connection (or it broke).
    pub fn input_ended(&mut self) {
        self.ended(End::Lost);
    }

    /// Nothing came within the idle timeout.
    pub fn timed_out(&mut self) {
        self.ended(End::Timeout);
    }

    /// The login process dropped the client to make room for a new one.
    pub fn dropped(&mut self) {
        self.ended(End::QueueFull);
    }

    /// Writing to the client failed: what is queued is dropped, a login or TLS
    /// handshake asked for is not made (the session ends without a log line), and the
    /// next read finds the connection closed.
    pub fn output_lost(&mut self) {
        self.out.clear();
        self.wbuf.clear();
        self.gone = true;
    }

    /// How the TLS handshake of [`Action::StartTls`] went; input read before it is
    /// dropped, as RFC 2595 §3.1 asks.
    pub fn tls_result(&mut self, up: bool) {
        if !matches!(self.mode, Mode::Tls) {
            return;
        }
        self.rbuf.clear();
        if !up {
            self.mode = Mode::Done;
            return;
        }
        self.tls = true;
        self.mode = Mode::Command;
        if self.greet {
            self.greeting();
        }
    }

    /// The service's verdict on the [`Action::Login`] (`None`: none came).
    pub fn verdict(&mut self, verdict: Option<Verdict>) {
        let Mode::Verdict { tag, method, user } = std::mem::replace(&mut self.mode, Mode::Command)
        else {
            return;
        };
        match verdict {
            Some(Verdict::Taken) => self.mode = Mode::Done,
            Some(Verdict::Failed) => self.failed(&tag, &user),
            Some(Verdict::Reply(t)) => {
                self.tried = Tried::Nothing;
                self.auth_attempts += 1;
                self.reply(&t);
            }
            Some(Verdict::ReplyClose(t)) => {
                self.tried = Tried::Nothing;
                self.reply(&t);
                // `TAG NO [LIMIT] Maximum number of connections …`: Dovecot logs the
                // refusal itself as the reason.
                if let Some(reason) = t.split_once(" [LIMIT] ").map(|(_, r)| r) {
                    self.st.log.info(&format!(
                        "imap-login: Disconnected: {reason}: user=<{}>, method={method}, {}, session=<{}>",
                        self.user,
                        fields(self.remote, self.local, self.tls, self.secured()),
                        self.session_id
                    ));
                }
                self.finish();
            }
            None => {
                self.reply(&format!(
                    "{tag} NO [UNAVAILABLE] Temporary authentication failure."
                ));
                self.finish();
            }
        }
    }

    /// The session ID of the log lines (`session=<…>`).
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The next thing for the connection task to do.
    #[allow(clippy::should_implement_trait)] // `next` as the other protocol cores name it
    pub fn next(&mut self) -> Action {
        loop {
            if let Some(a) = self.out.pop_front() {
                return a;
            }
            match std::mem::replace(&mut self.mode, Mode::Done) {
                Mode::Done | Mode::Tls | Mode::Verdict { .. } => {
                    // Over, or waiting for an outcome the task did not hand over.
                    return Action::Close;
                }
                Mode::Command => self.command_input(),
                Mode::Literal(size) => self.literal_input(size),
                Mode::SkipId(tag) => self.skip_id_input(tag),
                Mode::Auth { tag, step } => self.auth_input(tag, step),
            }
        }
    }

    fn greeting(&mut self) {
        self.greet = false;
        let g = format!(
            "* OK [CAPABILITY {}] {}",
            self.capability(),
            self.st.greeting
        );
        self.reply(&g);
    }

    /// Queue `line` and CRLF.
    fn reply(&mut self, line: &str) {
        if self.gone {
            return;
        }
        self.wbuf.extend_from_slice(line.as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Send the replies queued.
    fn flush(&mut self) {
        if !self.wbuf.is_empty() {
            self.out
                .push_back(Action::Send(std::mem::take(&mut self.wbuf)));
        }
    }

    /// Send the replies queued, then close.
    fn finish(&mut self) {
        self.flush();
        self.mode = Mode::Done;
    }

    /// Log why the client left (`reason`), send the replies queued, close.
    fn end(&mut self, reason: &str) {
        self.log_end(reason);
        self.finish();
    }

    /// Wait in `mode` for more input: the replies queued go out first. On a connection
    /// whose output is lost the read finds the input ended, as a read on it would.
    fn wait(&mut self, mode: Mode) {
        self.mode = mode;
        if self.gone {
            self.ended(End::Lost);
            return;
        }
        self.flush();
        self.out.push_back(Action::Read {
            timeout: self.st.idle_timeout,
        });
    }

    fn start_tls(&mut self, cfg: Arc<rustls::ServerConfig>) {
        self.flush();
        self.out.push_back(Action::StartTls {
            cfg,
            timeout: self.st.idle_timeout,
        });
        self.mode = Mode::Tls;
    }

    fn secured(&self) -> bool {
        self.st.is_secured(self.tls, self.remote, self.local)
    }

    fn plaintext_allowed(&self) -> bool {
        self.st.plaintext_allowed(self.tls, self.remote, self.local)
    }

    /// The input ended (or timed out, or the client was dropped) while the core waited
    /// in its mode: Dovecot's reply, if any, and its log line.
    fn ended(&mut self, e: End) {
        match self.mode {
            Mode::Command | Mode::Auth { .. } => {
                if e == End::QueueFull {
                    self.reply("* BYE Connection queue full");
                }
            }
            Mode::Literal(_) | Mode::SkipId(_) => {}
            Mode::Tls | Mode::Verdict { .. } | Mode::Done => {
                self.mode = Mode::Done;
                return;
            }
        }
        self.end(end_reason(e));
    }

    /// The pre-login capability list (Dovecot's `get_capability`).
    fn capability(&self) -> String {
        let mut c = String::from(CAPABILITY_BANNER);
        if self.st.tls.is_some() && !self.tls {
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

    /// The next part of a command line: up to its end, or to a literal's announcement
    /// (`+ OK` for a synchronizing one); a line with its literals over 4 kB is refused.
    fn command_input(&mut self) {
        let limit = LOGIN_MAX_INBUF.saturating_sub(self.line.len());
        match take_line(&mut self.rbuf, limit) {
            None => self.wait(Mode::Command),
            Some(Ok((part, _))) => {
                self.line.extend_from_slice(&part);
                self.mode = Mode::Command;
                let Some((_, size, nonsync, _)) = literal_marker(&part) else {
                    let line = std::mem::take(&mut self.line);
                    self.command(&line);
                    return;
                };
                let left = LOGIN_MAX_INBUF.saturating_sub(self.line.len() + 2);
                let size = match size.and_then(|s| usize::try_from(s).ok()) {
                    Some(s) if s <= left => s,
                    _ => {
                        self.reply("* BYE Input buffer full, aborting");
                        self.end("Input buffer full");
                        return;
                    }
                };
                self.line.extend_from_slice(b"\r\n");
                if !nonsync {
                    self.reply("+ OK");
                }
                self.mode = Mode::Literal(size);
            }
            Some(Err(_)) => {
                // ID's parameters are read as a stream by Dovecot, whatever their
                // length: a long ID line is dropped as it comes and answered as `ID NIL`.
                if self.line.is_empty()
                    && let Some(tag) = long_id_tag(&self.rbuf)
                {
                    self.mode = Mode::SkipId(tag);
                } else {
                    self.reply("* BYE Input buffer full, aborting");
                    self.end("Input buffer full");
                }
            }
        }
    }

    /// A literal's bytes, once all of them are there.
    fn literal_input(&mut self, size: usize) {
        if self.rbuf.len() < size {
            self.wait(Mode::Literal(size));
            return;
        }
        self.line.extend(self.rbuf.drain(..size));
        self.mode = Mode::Command;
    }

    /// Drop a long ID line up to its end, holding no more of it than one read.
    fn skip_id_input(&mut self, tag: String) {
        match memchr::memchr(b'\n', &self.rbuf) {
            Some(pos) => {
                self.rbuf.drain(..=pos);
                self.mode = Mode::Command;
                self.command(format!("{tag} ID NIL").as_bytes());
            }
            None => {
                self.rbuf.clear();
                self.wait(Mode::SkipId(tag));
            }
        }
    }

    /// A bad command: `BAD`, or at the third the end of the session. `false` when the
    /// session ends.
    fn bad(&mut self, tag: &str) -> bool {
        self.bad += 1;
        if self.bad >= MAX_BAD_COMMANDS {
            self.reply("* BYE Too many invalid IMAP commands.");
            self.end("Too many invalid commands");
            return false;
        }
        self.reply(&format!(
            "{tag} BAD Error in IMAP command received by server."
        ));
        true
    }

    /// One pre-login command line (literals inline).
    fn command(&mut self, line: &[u8]) {
        let (tag, name, rest) = match split_command(line) {
            ReadEvent::Command(c) => (c.tag, c.name, c.line),
            _ => {
                // An empty line, a bad tag or command name.
                let tag = std::str::from_utf8(line.split(|&c| c == b' ').next().unwrap_or(&[]))
                    .ok()
                    .filter(|t| !t.is_empty() && !t.contains(['"', '{', '(', ')', '*']))
                    .unwrap_or("*")
                    .to_string();
                self.bad(&tag);
                return;
            }
        };
        let args = match parse_args(&rest) {
            Ok(a) => a,
            Err(e) => {
                self.reply(&format!("{tag} BAD {}", e.0));
                return;
            }
        };
        match name.as_str() {
            "CAPABILITY" => {
                let c = self.capability();
                self.reply(&format!("* CAPABILITY {c}"));
                self.reply(&format!(
                    "{tag} OK Pre-login capabilities listed, post-login capabilities have more."
                ));
            }
            "NOOP" => self.reply(&format!("{tag} OK NOOP completed.")),
            "LOGOUT" => {
                self.reply("* BYE Logging out");
                self.reply(&format!("{tag} OK Logout completed."));
                self.end("Aborted login by logging out");
            }
            "ID" => {
                if args.len() != 1 || !matches!(args[0], Arg::Nil | Arg::List(_)) {
                    self.bad(&tag);
                    return;
                }
                self.reply("* ID (\"name\" \"Dovecot\")");
                self.reply(&format!("{tag} OK ID completed."));
            }
            "ENABLE" => {
                self.reply("* ENABLED");
                self.reply(&format!(
                    "{tag} OK ENABLE ignored in non-authenticated state."
                ));
            }
            "STARTTLS" => {
                if let Some(cfg) = self.st.tls.clone() {
                    if self.tls {
                        self.reply(&format!("{tag} BAD TLS is already active."));
                    } else {
                        self.reply(&format!("{tag} OK Begin TLS negotiation now."));
                        self.start_tls(cfg);
                    }
                } else {
                    self.reply(&format!("{tag} BAD TLS support isn't enabled."));
                }
            }
            "LOGIN" => {
                let (Some(user), Some(pass), 2) = (
                    args.first().and_then(Arg::astring),
                    args.get(1).and_then(Arg::astring),
                    args.len(),
                ) else {
                    self.bad(&tag);
                    return;
                };
                let (user, pass) = (
                    String::from_utf8_lossy(user).into_owned(),
                    String::from_utf8_lossy(pass).into_owned(),
                );
                self.user = user.clone();
                if !self.plaintext_allowed() {
                    self.tried = Tried::Plaintext;
                    self.reply(
                        "* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS, but your client did it anyway. If anyone was listening, the password was exposed.",
                    );
                    self.reply(&format!(
                        "{tag} NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
                    ));
                    return;
                }
                self.login(&tag, Credentials::Plain { user, pass }, "PLAIN");
            }
            "AUTHENTICATE" => self.authenticate(&tag, &args),
            _ => {
                self.bad(&tag);
            }
        }
    }

    /// `AUTHENTICATE MECH [initial-response]` (RFC 3501 §6.2.2, SASL-IR of RFC 4959).
    fn authenticate(&mut self, tag: &str, args: &[Arg]) {
        let (Some(mech), true) = (args.first().and_then(Arg::atom), args.len() <= 2) else {
            self.bad(tag);
            return;
        };
        let mech = mech.to_ascii_uppercase();
        self.method = Some(mech.clone());
        if !self.st.mechanisms.contains(&mech) || !matches!(mech.as_str(), "PLAIN" | "LOGIN") {
            self.tried = Tried::Unsupported;
            self.reply(&format!(
                "{tag} NO [ALERT] Unsupported authentication mechanism."
            ));
            return;
        }
        if !self.plaintext_allowed() {
            self.tried = Tried::Plaintext;
            self.reply(&format!(
                "{tag} NO [PRIVACYREQUIRED] Plaintext authentication disabled."
            ));
            return;
        }
        let initial = args
            .get(1)
            .and_then(Arg::astring)
            .map(|b| String::from_utf8_lossy(b).into_owned());
        self.tried = Tried::Unfinished;
        match (mech.as_str(), initial) {
            ("PLAIN", Some(r)) => self.auth_plain(tag, &r),
            ("PLAIN", None) => self.challenge(tag, "", AuthStep::Plain),
            (_, Some(r)) => self.login_user(tag, &r),
            (_, None) => self.challenge(tag, "VXNlcm5hbWU6", AuthStep::LoginUser),
        }
    }

    /// Send `+ CHALLENGE` and wait for the client's response line.
    fn challenge(&mut self, tag: &str, text: &str, step: AuthStep) {
        self.reply(&format!("+ {text}"));
        self.mode = Mode::Auth {
            tag: tag.to_string(),
            step,
        };
    }

    /// A response line to a challenge; `*` aborts.
    fn auth_input(&mut self, tag: String, step: AuthStep) {
        match take_line(&mut self.rbuf, LOGIN_MAX_INBUF) {
            None => self.wait(Mode::Auth { tag, step }),
            Some(Err(_)) => {
                self.reply("* BYE Input buffer full, aborting");
                self.end("Input buffer full");
            }
            Some(Ok((line, _))) => {
                self.mode = Mode::Command;
                let line = String::from_utf8_lossy(&line).into_owned();
                if line == "*" {
                    self.tried = Tried::Nothing;
                    self.reply(&format!("{tag} BAD Authentication aborted by client."));
                    return;
                }
                match step {
                    AuthStep::Plain => self.auth_plain(&tag, &line),
                    AuthStep::LoginUser => self.login_user(&tag, &line),
                    AuthStep::LoginPass { user } => {
                        let Some(pass) = self.decode(&tag, &line) else {
                            return;
                        };
                        let pass = String::from_utf8_lossy(&pass).into_owned();
                        self.user = user.clone();
                        self.login(&tag, Credentials::Plain { user, pass }, "LOGIN");
                    }
                }
            }
        }
    }

    /// A SASL response's bytes (`=`: none); bad base64 is answered here (`None`).
    fn decode(&mut self, tag: &str, s: &str) -> Option<Vec<u8>> {
        let raw = if s == "=" {
            Some(Vec::new())
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .ok()
        };
        if raw.is_none() {
            self.reply(&format!("{tag} NO [ALERT] Invalid base64 in response"));
            self.tried = Tried::Nothing;
        }
        raw
    }

    /// PLAIN's response (RFC 4616): authorization identity, user, password.
    fn auth_plain(&mut self, tag: &str, resp: &str) {
        let Some(raw) = self.decode(tag, resp) else {
            return;
        };
        let mut parts = raw.split(|&b| b == 0);
        let (_authz, authc, pass) = (parts.next(), parts.next(), parts.next());
        match (authc, pass) {
            (Some(u), Some(p)) if !u.is_empty() => {
                let user = String::from_utf8_lossy(u).into_owned();
                let pass = String::from_utf8_lossy(p).into_owned();
                self.user = user.clone();
                self.login(tag, Credentials::Plain { user, pass }, "PLAIN");
            }
            _ => self.failed(tag, ""),
        }
    }

    /// LOGIN's user name (a response or the initial response): the password is asked.
    fn login_user(&mut self, tag: &str, resp: &str) {
        let Some(user) = self.decode(tag, resp) else {
            return;
        };
        let user = String::from_utf8_lossy(&user).into_owned();
        self.challenge(tag, "UGFzc3dvcmQ6", AuthStep::LoginPass { user });
    }

    /// A failed attempt: `auth_failure_delay`, then the reply.
    fn failed(&mut self, tag: &str, user: &str) {
        self.auth_attempts += 1;
        self.tried = Tried::Nothing;
        if !user.is_empty() {
            self.user = user.to_string();
        }
        self.out.push_back(Action::Sleep(self.st.failure_delay));
        self.reply(&format!(
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
            fields(self.remote, self.local, self.tls, self.secured()),
            self.session_id
        ));
    }

    /// Hand the credentials and the connection to the service ([`Action::Login`]) and
    /// wait for its verdict. Replies queued so far are sent first; input not used yet
    /// goes with the request (the client's pipelined commands).
    fn login(&mut self, tag: &str, creds: Credentials, method: &str) {
        self.method = Some(method.to_string());
        let user = match &creds {
            Credentials::Plain { user, .. } | Credentials::Apop { user, .. } => user.clone(),
        };
        self.flush();
        self.out.push_back(Action::Login(Box::new(LoginRequest {
            id: 0,
            session_id: self.session_id.clone(),
            remote: self.remote,
            local: self.local,
            tls: self.tls,
            method: method.to_string(),
            tag: tag.to_string(),
            creds,
            leftover: self.rbuf.clone(),
        })));
        self.mode = Mode::Verdict {
            tag: tag.to_string(),
            method: method.to_string(),
            user,
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::dovecot::DovecotConf;
    use crate::login::Protocol;

    fn core(dir: &std::path::Path) -> PreLogin {
        let conf = format!(
            "protocols = imap\nssl = no\ndisable_plaintext_auth = no\n\
             auth_mechanisms = plain login\nlog_path = {}/log\n",
            dir.display()
        );
        let conf = DovecotConf::from_str(&conf, &dir.join("dovecot.conf")).expect("conf");
        let lc = Arc::new(LoginConf::from_conf(&conf, Protocol::Imap).expect("login settings"));
        let addr = SocketAddr::from(([127, 0, 0, 1], 143));
        PreLogin::new(lc, addr, addr, false)
    }

    /// Run to the next read or close; what was sent, and the login asked for.
    fn run(c: &mut PreLogin) -> (String, Option<Box<LoginRequest>>, bool) {
        let mut sent = Vec::new();
        loop {
            match c.next() {
                Action::Send(b) => sent.extend(b),
                Action::Sleep(_) => {}
                Action::Read { .. } => return (String::from_utf8_lossy(&sent).into(), None, false),
                Action::Close => return (String::from_utf8_lossy(&sent).into(), None, true),
                Action::StartTls { .. } => panic!("no TLS here"),
                Action::Login(req) => {
                    return (String::from_utf8_lossy(&sent).into(), Some(req), false);
                }
            }
        }
    }

    /// AUTHENTICATE LOGIN through its two continuations, a failed verdict, then a LOGIN
    /// pipelined with commands: the commands after it go with the request.
    #[test]
    fn sasl_continuations_and_pipelined_login() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = core(dir.path());
        let (greeting, _, _) = run(&mut c);
        assert!(greeting.starts_with("* OK [CAPABILITY "), "{greeting}");
        c.received(b"a AUTHENTICATE LOGIN\r\n");
        assert_eq!(run(&mut c).0, "+ VXNlcm5hbWU6\r\n");
        c.received(b"Ym9i\r\n");
        assert_eq!(run(&mut c).0, "+ UGFzc3dvcmQ6\r\n");
        c.received(b"d3Jvbmc=\r\n");
        let (_, req, _) = run(&mut c);
        let req = req.expect("a login");
        assert_eq!((req.method.as_str(), req.tag.as_str()), ("LOGIN", "a"));
        assert!(
            matches!(&req.creds, Credentials::Plain { user, pass } if user == "bob" && pass == "wrong")
        );
        c.verdict(Some(Verdict::Failed));
        assert_eq!(
            run(&mut c).0,
            "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
        );
        c.received(b"b LOGIN bob {6}\r\n");
        assert_eq!(run(&mut c).0, "+ OK\r\n");
        c.received(b"secret\r\nc SELECT INBOX\r\nd LOGOUT\r\n");
        let (_, req, _) = run(&mut c);
        let req = req.expect("a login");
        assert_eq!(req.leftover, b"c SELECT INBOX\r\nd LOGOUT\r\n");
        c.verdict(Some(Verdict::Taken));
        assert!(matches!(c.next(), Action::Close));
    }

    /// A client gone while the core wrote: the next read finds the connection closed,
    /// logged as Dovecot logs a client that left in the middle of AUTHENTICATE.
    #[test]
    fn lost_output_ends_with_the_log_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = core(dir.path());
        run(&mut c);
        c.received(b"a AUTHENTICATE PLAIN\r\n");
        assert!(matches!(c.next(), Action::Send(_)));
        c.output_lost();
        let (sent, _, closed) = run(&mut c);
        assert!(sent.is_empty() && closed);
        let log = std::fs::read_to_string(dir.path().join("log")).expect("log");
        assert!(
            log.contains(
                "imap-login: Info: Disconnected: Connection closed (client didn't finish SASL auth, waited "
            ) && log.contains(
                " secs): user=<>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, secured, session=<"
            ),
            "{log}"
        );
    }
}
