//! POP3's pre-login grammar (Dovecot's `pop3-login`): the greeting, and the
//! AUTHORIZATION state (RFC 1939 USER/PASS/APOP/QUIT, CAPA and STLS of RFC 2449/2595,
//! AUTH of RFC 5034) until the service takes the client. Replies as Dovecot 2.3.19
//! words them (`man/pop3d.8`).
//!
//! [`PreLogin`] does no client I/O of its own: it is a state machine fed what the client
//! sent ([`PreLogin::received`], [`PreLogin::input_ended`], [`PreLogin::timed_out`],
//! [`PreLogin::dropped`]), how a TLS handshake went ([`PreLogin::tls_result`]) and the
//! service's verdict on a login ([`PreLogin::verdict`]), and it answers with the next
//! [`Action`] ([`PreLogin::next`]: send, sleep, read, start TLS, hand the login to the
//! service, close). [`run`] is the connection task that carries the actions out on the
//! client's socket in the login process; the unit tests of [`crate::pop3d`] replay the
//! recorded Dovecot transcript against the core, with no socket.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use base64::Engine;
use tokio::net::TcpStream;

use super::LoginConf;
use super::conn::{End, fields, take_line};
use super::handoff::{Credentials, LoginRequest, Verdict};
use super::process::LoginCtl;
use super::task;

/// Longest command line before login (Dovecot's login input buffer).
const LOGIN_MAX_LINE: usize = 4096;
/// Dovecot's `CLIENT_MAX_BAD_COMMANDS` of pop3-login.
const MAX_BAD_COMMANDS: u32 = 20;

/// Dovecot's APOP timestamp: `<PID.N.TIME.RANDOM@HOST>` (hex, hex, hex, base64 of 16
/// random bytes), as the 2.3 greeting shows it.
fn apop_challenge() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    let mut r = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    format!(
        "<{:x}.{:x}.{t:x}.{}@{host}>",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        base64::engine::general_purpose::STANDARD.encode(r)
    )
}

/// The `CAPA` reply (RFC 2449); `logged_in` for the TRANSACTION state's shorter list.
pub fn capa(
    logged_in: bool,
    tls_offered: bool,
    plaintext_allowed: bool,
    mechanisms: &[String],
) -> String {
    let mut s =
        String::from("+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE");
    if !logged_in {
        if tls_offered {
            s.push_str("\r\nSTLS");
        }
        if plaintext_allowed {
            s.push_str("\r\nUSER");
        }
        s.push_str("\r\nSASL");
        if plaintext_allowed {
            for m in mechanisms.iter().filter(|m| *m != "APOP") {
                s.push(' ');
                s.push_str(m);
            }
        }
    }
    s.push_str("\r\n.");
    s
}

/// What the connection task is to do next (see [`PreLogin::next`]); shared with IMAP's
/// login core.
pub use super::task::Action;

/// What the core waits for.
enum Mode {
    /// Command lines.
    Command,
    /// An AUTH continuation line.
    Auth(AuthStep),
    /// The TLS handshake of [`Action::StartTls`].
    Tls,
    /// The service's verdict on a login, with its mechanism and user name (for the log).
    Verdict { method: String, user: String },
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

/// The login process's side of one client, greeting and AUTHORIZATION state until the
/// service takes the client (or the client leaves), as a state machine without I/O.
pub struct PreLogin {
    st: Arc<LoginConf>,
    remote: SocketAddr,
    local: SocketAddr,
    /// TLS is spoken with the client.
    tls: bool,
    session_id: String,
    /// What the client sent and the core has not used yet.
    rbuf: Vec<u8>,
    /// Replies queued until the core waits for input (PIPELINING).
    wbuf: Vec<u8>,
    /// Actions for the connection task, oldest first.
    out: VecDeque<Action>,
    mode: Mode,
    /// The greeting waits for the implicit TLS handshake.
    greet: bool,
    user_arg: Option<String>,
    auth_attempts: u32,
    /// The user name and mechanism of the last failed attempt, for the log.
    failed: Option<(String, String)>,
    bad: u32,
    started: Instant,
    /// The APOP timestamp of the greeting, when `auth_mechanisms` lists `apop`.
    apop: Option<String>,
}

/// The login process's side of one client: the connection task of a [`PreLogin`] on
/// the client's socket, until the service takes the connection over (or the client
/// leaves). For a TLS client the login process then stays as its proxy, as Dovecot's
/// `pop3-login` does.
pub async fn run(
    tcp: TcpStream,
    remote: SocketAddr,
    implicit_tls: bool,
    st: Arc<LoginConf>,
    ctl: Arc<LoginCtl>,
) {
    let local = task::local_addr(&tcp, remote);
    let core = PreLogin::new(st, remote, local, implicit_tls);
    task::drive(core, tcp, ctl, false).await;
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
    /// A new client from `remote` on `local`; with `implicit_tls` (`pop3s`) the first
    /// action is the TLS handshake, else the greeting.
    pub fn new(
        st: Arc<LoginConf>,
        remote: SocketAddr,
        local: SocketAddr,
        implicit_tls: bool,
    ) -> PreLogin {
        let apop = st
            .mechanisms
            .iter()
            .any(|m| m == "APOP")
            .then(apop_challenge);
        let mut s = PreLogin {
            st,
            remote,
            local,
            tls: false,
            session_id: super::session_id(),
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            out: VecDeque::new(),
            mode: Mode::Command,
            greet: true,
            user_arg: None,
            auth_attempts: 0,
            failed: None,
            bad: 0,
            started: Instant::now(),
            apop,
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

    /// Writing to the client failed: the session ends without another word.
    pub fn output_lost(&mut self) {
        self.out.clear();
        self.wbuf.clear();
        self.mode = Mode::Done;
    }

    /// How the TLS handshake of [`Action::StartTls`] went; input read before it is
    /// dropped, as RFC 2595 §3.1 asks.
    pub fn tls_result(&mut self, up: bool) {
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
        let Mode::Verdict { method, user } = std::mem::replace(&mut self.mode, Mode::Command)
        else {
            return;
        };
        match verdict {
            Some(Verdict::Taken) => self.mode = Mode::Done,
            Some(Verdict::Failed) => self.auth_failed(&method, &user),
            Some(Verdict::Reply(t)) => self.reply(&t),
            Some(Verdict::ReplyClose(t)) => {
                self.reply(&t);
                self.finish();
            }
            None => {
                self.reply("-ERR [SYS/TEMP] Temporary authentication failure.");
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
            match &self.mode {
                Mode::Done | Mode::Tls | Mode::Verdict { .. } => {
                    // Waiting for an outcome the task did not hand over: nothing to do.
                    self.mode = Mode::Done;
                    return Action::Close;
                }
                Mode::Command | Mode::Auth(_) => match take_line(&mut self.rbuf, LOGIN_MAX_LINE) {
                    Some(Ok((line, _))) => {
                        let line = String::from_utf8_lossy(&line).into_owned();
                        match std::mem::replace(&mut self.mode, Mode::Command) {
                            Mode::Auth(step) => self.auth_line(step, &line),
                            _ => self.command(&line),
                        }
                    }
                    Some(Err(e)) => self.ended(e),
                    None => {
                        self.flush();
                        self.out.push_back(Action::Read {
                            timeout: self.st.idle_timeout,
                        });
                    }
                },
            }
        }
    }

    fn greeting(&mut self) {
        self.greet = false;
        let g = match &self.apop {
            Some(ch) => format!("+OK {} {ch}", self.st.greeting),
            None => format!("+OK {}", self.st.greeting),
        };
        self.reply(&g);
    }

    /// Queue `line` and CRLF.
    fn reply(&mut self, line: &str) {
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

    /// The input ended without a line (or with one too long): Dovecot's reply, if any,
    /// and its log line.
    fn ended(&mut self, e: End) {
        let reason = match e {
            End::TooLong => {
                self.reply("-ERR Input buffer full, aborting");
                "Disconnected: Input buffer full"
            }
            End::QueueFull => {
                self.reply("-ERR Connection queue full");
                "Disconnected: Connection queue full"
            }
            End::Timeout => "Disconnected: Inactivity",
            // io_stream_get_disconnect_reason(): a clean close.
            End::Lost => "Disconnected: Connection closed",
        };
        self.log_login_end(reason);
        self.finish();
    }

    /// One command line of the AUTHORIZATION state.
    fn command(&mut self, line: &str) {
        let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
        match verb.to_ascii_uppercase().as_str() {
            "CAPA" => {
                let c = capa(
                    false,
                    self.st.tls.is_some() && !self.tls,
                    self.plaintext_allowed(),
                    &self.st.mechanisms,
                );
                self.reply(&c);
            }
            "QUIT" => {
                self.reply("+OK Logging out");
                self.log_login_end("Disconnected: Aborted login by logging out");
                self.finish();
            }
            "STLS" => {
                if let Some(cfg) = self.st.tls.clone() {
                    if self.tls {
                        self.reply("-ERR TLS is already active.");
                    } else {
                        self.reply("+OK Begin TLS negotiation now.");
                        self.start_tls(cfg);
                    }
                } else {
                    self.reply("-ERR TLS support isn't enabled.");
                }
            }
            "USER" => {
                if !self.plaintext_allowed() {
                    self.plaintext_refused();
                } else {
                    self.user_arg = Some(arg.to_string());
                    self.reply("+OK");
                }
            }
            "PASS" => {
                if !self.plaintext_allowed() {
                    self.plaintext_refused();
                } else if let Some(user) = self.user_arg.take() {
                    let creds = Credentials::Plain {
                        user,
                        pass: arg.to_string(),
                    };
                    self.login(creds, "PLAIN");
                } else {
                    self.reply("-ERR No username given.");
                }
            }
            "APOP" => self.apop(arg),
            "AUTH" => self.auth(arg),
            _ => {
                self.reply("-ERR Unknown command.");
                self.bad += 1;
                if self.bad >= MAX_BAD_COMMANDS {
                    self.reply("-ERR Too many invalid commands.");
                    self.finish();
                }
            }
        }
    }

    fn plaintext_refused(&mut self) {
        self.reply(
            "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
        );
    }

    /// `AUTH` (RFC 5034): without an argument, the mechanism list; PLAIN and LOGIN with or
    /// without an initial response.
    fn auth(&mut self, arg: &str) {
        let mut words = arg.split_whitespace();
        let Some(mech) = words.next() else {
            let mut s = String::from("+OK");
            if self.plaintext_allowed() {
                for m in self.st.mechanisms.iter().filter(|m| *m != "APOP") {
                    s.push_str("\r\n");
                    s.push_str(m);
                }
            }
            s.push_str("\r\n.");
            self.reply(&s);
            return;
        };
        let mech = mech.to_ascii_uppercase();
        if !self.st.mechanisms.contains(&mech) || !matches!(mech.as_str(), "PLAIN" | "LOGIN") {
            self.reply("-ERR [AUTH] Unsupported authentication mechanism.");
            return;
        }
        if !self.plaintext_allowed() {
            // Dovecot words it differently for SASL than for USER/PASS.
            self.reply("-ERR [AUTH] Plaintext authentication disabled.");
            return;
        }
        let initial = words.next();
        match (mech.as_str(), initial) {
            ("PLAIN", Some("=")) => self.auth_plain(""),
            ("PLAIN", Some(r)) => self.auth_plain(r),
            ("PLAIN", None) => self.challenge("", AuthStep::Plain),
            (_, Some(r)) => self.login_user(r),
            (_, None) => self.challenge("VXNlcm5hbWU6", AuthStep::LoginUser),
        }
    }

    /// Send `+ CHALLENGE` and wait for the response line.
    fn challenge(&mut self, text: &str, step: AuthStep) {
        self.reply(&format!("+ {text}"));
        self.mode = Mode::Auth(step);
    }

    /// A response to a challenge (or an initial response); `*` aborts.
    fn auth_line(&mut self, step: AuthStep, line: &str) {
        if line == "*" {
            self.reply("-ERR Authentication aborted by client.");
            return;
        }
        match step {
            AuthStep::Plain => self.auth_plain(line),
            AuthStep::LoginUser => self.login_user(line),
            AuthStep::LoginPass { user } => {
                let pass = base64_text(line);
                self.login(Credentials::Plain { user, pass }, "LOGIN");
            }
        }
    }

    /// LOGIN's user name (a response or the initial response): the password is asked.
    fn login_user(&mut self, line: &str) {
        let user = base64_text(line);
        self.challenge("UGFzc3dvcmQ6", AuthStep::LoginPass { user });
    }

    /// PLAIN's response (RFC 4616): authorization identity, user, password.
    fn auth_plain(&mut self, resp: &str) {
        let b64 = base64::engine::general_purpose::STANDARD;
        let Ok(raw) = b64.decode(resp.trim()) else {
            self.reply("-ERR [AUTH] Invalid base64 in response");
            return;
        };
        let mut parts = raw.split(|&b| b == 0);
        let (_authz, authc, pass) = (parts.next(), parts.next(), parts.next());
        match (authc, pass) {
            (Some(u), Some(p)) => {
                let creds = Credentials::Plain {
                    user: String::from_utf8_lossy(u).into_owned(),
                    pass: String::from_utf8_lossy(p).into_owned(),
                };
                self.login(creds, "PLAIN");
            }
            _ => self.auth_failed("PLAIN", ""),
        }
    }

    /// `APOP user digest` (RFC 1939): the digest is MD5 of the greeting's timestamp and
    /// the password, so only a passdb with the plaintext password can check it (the
    /// service does).
    fn apop(&mut self, arg: &str) {
        let Some(challenge) = self.apop.clone() else {
            self.reply("-ERR APOP not enabled.");
            return;
        };
        let mut w = arg.split(' ');
        let (Some(user), Some(digest), None) = (w.next(), w.next(), w.next()) else {
            self.reply("-ERR Invalid parameters.");
            return;
        };
        if user.is_empty() || digest.len() != 32 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.reply("-ERR Invalid parameters.");
            return;
        }
        let creds = Credentials::Apop {
            user: user.to_string(),
            digest: digest.to_string(),
            challenge,
        };
        self.login(creds, "APOP");
    }

    /// A failed attempt: `auth_failure_delay`, then the reply.
    fn auth_failed(&mut self, method: &str, user: &str) {
        self.auth_attempts += 1;
        self.failed = Some((user.to_string(), method.to_string()));
        self.out.push_back(Action::Sleep(self.st.failure_delay));
        self.reply("-ERR [AUTH] Authentication failed.");
    }

    /// Dovecot's log line for a client that leaves without logging in:
    /// `pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<alice>,
    /// method=PLAIN, rip=…, lip=…, secured, session=<…>`.
    fn log_login_end(&self, reason: &str) {
        let secs = self.started.elapsed().as_secs();
        let (what, who) = match &self.failed {
            Some((user, method)) => (
                format!(
                    "auth failed, {} attempts in {secs} secs",
                    self.auth_attempts
                ),
                format!("user=<{user}>, method={method}"),
            ),
            None => (
                format!("no auth attempts in {secs} secs"),
                "user=<>".to_string(),
            ),
        };
        self.st.log.info(&format!(
            "pop3-login: {reason} ({what}): {who}, {}, session=<{}>",
            fields(self.remote, self.local, self.tls, self.secured()),
            self.session_id
        ));
    }

    /// Hand the credentials and the connection to the service ([`Action::Login`]) and
    /// wait for its verdict. Replies queued so far are sent first, so the service's
    /// `+OK Logged in.` follows them; input not used yet goes with the request.
    fn login(&mut self, creds: Credentials, method: &str) {
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
            tag: String::new(),
            creds,
            leftover: self.rbuf.clone(),
        })));
        self.mode = Mode::Verdict {
            method: method.to_string(),
            user,
        };
    }
}

/// LOGIN's base64 text (nothing when it is no base64).
fn base64_text(s: &str) -> String {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .unwrap_or_default();
    String::from_utf8_lossy(&raw).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn apop_challenge_form() {
        let c = super::apop_challenge();
        assert!(
            c.starts_with('<') && c.ends_with('>') && c.contains('@'),
            "{c}"
        );
        assert!(c.split('.').count() >= 4, "{c}");
    }
}
