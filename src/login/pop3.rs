//! POP3's pre-login grammar (Dovecot's `pop3-login`): the greeting, and the
//! AUTHORIZATION state (RFC 1939 USER/PASS/APOP/QUIT, CAPA and STLS of RFC 2449/2595,
//! AUTH of RFC 5034) until the service takes the client. Replies as Dovecot 2.3.19
//! words them (`man/pop3d.8`).

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use tokio::net::{TcpStream, UnixStream};

use super::LoginConf;
use super::conn::{Conn, End, Io, proxy};
use super::handoff::{Credentials, LoginRequest, Verdict};
use super::process::LoginCtl;

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

struct PreLogin {
    st: Arc<LoginConf>,
    conn: Conn,
    ctl: Arc<LoginCtl>,
    user_arg: Option<String>,
    auth_attempts: u32,
    /// The user name and mechanism of the last failed attempt, for the log.
    failed: Option<(String, String)>,
    bad: u32,
    started: std::time::Instant,
    /// The service refused the login for good: the connection closes after the reply.
    closing: bool,
    /// The APOP timestamp of the greeting, when `auth_mechanisms` lists `apop`.
    apop: Option<String>,
}

/// What the login process keeps of a client the service took: for a TLS client, its
/// end of the proxy pair.
struct Handed(Option<UnixStream>);

/// The login process's side of one client: greeting and AUTHORIZATION state until the
/// service takes the connection over (or the client leaves). For a TLS client the
/// login process then stays as its proxy, as Dovecot's `pop3-login` does.
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
        user_arg: None,
        auth_attempts: 0,
        failed: None,
        bad: 0,
        started: std::time::Instant::now(),
        closing: false,
        apop: None,
    };
    if implicit_tls {
        let Some(cfg) = st.tls.clone() else {
            return;
        };
        if !s.conn.start_tls(cfg, st.idle_timeout).await {
            return;
        }
    }
    if st.mechanisms.iter().any(|m| m == "APOP") {
        s.apop = Some(apop_challenge());
    }
    match &s.apop {
        Some(ch) => {
            let g = format!("+OK {} {ch}", st.greeting);
            s.conn.reply(&g);
        }
        None => s.conn.reply(&format!("+OK {}", st.greeting)),
    }
    match s.authorization().await {
        Some(Handed(Some(service_end))) => {
            if let Io::Tls(tls) = std::mem::replace(&mut s.conn.io, Io::Gone) {
                drop(s);
                proxy(tls, service_end).await;
            }
        }
        Some(Handed(None)) => {}
        None => s.conn.flush().await,
    }
}

impl PreLogin {
    fn reply(&mut self, line: &str) {
        self.conn.reply(line);
    }

    fn secured(&self) -> bool {
        self.st
            .is_secured(self.conn.tls, self.conn.remote, self.conn.local)
    }

    fn plaintext_allowed(&self) -> bool {
        self.st
            .plaintext_allowed(self.conn.tls, self.conn.remote, self.conn.local)
    }

    /// The AUTHORIZATION state; `Some` once the service took the client.
    async fn authorization(&mut self) -> Option<Handed> {
        loop {
            if self.closing {
                return None;
            }
            let line = match self
                .conn
                .read_line(LOGIN_MAX_LINE, self.st.idle_timeout)
                .await
            {
                Ok(l) => l,
                Err(e) => {
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
                    return None;
                }
            };
            let line = String::from_utf8_lossy(&line).into_owned();
            let (verb, arg) = line.split_once(' ').unwrap_or((&line, ""));
            match verb.to_ascii_uppercase().as_str() {
                "CAPA" => {
                    let c = capa(
                        false,
                        self.st.tls.is_some() && !self.conn.tls,
                        self.plaintext_allowed(),
                        &self.st.mechanisms,
                    );
                    self.reply(&c);
                }
                "QUIT" => {
                    self.reply("+OK Logging out");
                    self.log_login_end("Disconnected: Aborted login by logging out");
                    return None;
                }
                "STLS" => {
                    if let Some(cfg) = self.st.tls.clone() {
                        if self.conn.tls {
                            self.reply("-ERR TLS is already active.");
                        } else {
                            self.reply("+OK Begin TLS negotiation now.");
                            if !self.conn.start_tls(cfg, self.st.idle_timeout).await {
                                return None;
                            }
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
                        if let Some(h) = self.login(creds, "PLAIN").await {
                            return Some(h);
                        }
                    } else {
                        self.reply("-ERR No username given.");
                    }
                }
                "APOP" => {
                    if let Some(h) = self.apop(arg).await {
                        return Some(h);
                    }
                }
                "AUTH" => {
                    if let Some(h) = self.auth(arg).await {
                        return Some(h);
                    }
                }
                _ => {
                    self.reply("-ERR Unknown command.");
                    self.bad += 1;
                    if self.bad >= MAX_BAD_COMMANDS {
                        self.reply("-ERR Too many invalid commands.");
                        return None;
                    }
                }
            }
            if self.conn.gone() {
                return None;
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
    async fn auth(&mut self, arg: &str) -> Option<Handed> {
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
            return None;
        };
        let mech = mech.to_ascii_uppercase();
        if !self.st.mechanisms.contains(&mech) || !matches!(mech.as_str(), "PLAIN" | "LOGIN") {
            self.reply("-ERR [AUTH] Unsupported authentication mechanism.");
            return None;
        }
        if !self.plaintext_allowed() {
            // Dovecot words it differently for SASL than for USER/PASS.
            self.reply("-ERR [AUTH] Plaintext authentication disabled.");
            return None;
        }
        let initial = words.next().map(str::to_string);
        let b64 = base64::engine::general_purpose::STANDARD;
        let (user, pass) = if mech == "PLAIN" {
            let resp = match initial {
                Some(r) if r != "=" => r,
                Some(_) => String::new(),
                None => self.challenge("").await?,
            };
            let Ok(raw) = b64.decode(resp.trim()) else {
                self.reply("-ERR [AUTH] Invalid base64 in response");
                return None;
            };
            let mut parts = raw.split(|&b| b == 0);
            let (_authz, authc, pass) = (parts.next(), parts.next(), parts.next());
            match (authc, pass) {
                (Some(u), Some(p)) => (
                    String::from_utf8_lossy(u).into_owned(),
                    String::from_utf8_lossy(p).into_owned(),
                ),
                _ => {
                    self.auth_failed("PLAIN", "").await;
                    return None;
                }
            }
        } else {
            let user = match initial {
                Some(r) => r,
                None => self.challenge("VXNlcm5hbWU6").await?,
            };
            let user =
                String::from_utf8_lossy(&b64.decode(user.trim()).unwrap_or_default()).into_owned();
            let pass = self.challenge("UGFzc3dvcmQ6").await?;
            let pass =
                String::from_utf8_lossy(&b64.decode(pass.trim()).unwrap_or_default()).into_owned();
            (user, pass)
        };
        self.login(Credentials::Plain { user, pass }, &mech).await
    }

    /// Send `+ CHALLENGE` and read the response; `*` aborts.
    async fn challenge(&mut self, text: &str) -> Option<String> {
        self.reply(&format!("+ {text}"));
        let line = self
            .conn
            .read_line(LOGIN_MAX_LINE, self.st.idle_timeout)
            .await
            .ok()?;
        let line = String::from_utf8_lossy(&line).into_owned();
        if line == "*" {
            self.reply("-ERR Authentication aborted by client.");
            return None;
        }
        Some(line)
    }

    /// `APOP user digest` (RFC 1939): the digest is MD5 of the greeting's timestamp and
    /// the password, so only a passdb with the plaintext password can check it (the
    /// service does).
    async fn apop(&mut self, arg: &str) -> Option<Handed> {
        let Some(challenge) = self.apop.clone() else {
            self.reply("-ERR APOP not enabled.");
            return None;
        };
        let mut w = arg.split(' ');
        let (Some(user), Some(digest), None) = (w.next(), w.next(), w.next()) else {
            self.reply("-ERR Invalid parameters.");
            return None;
        };
        if user.is_empty() || digest.len() != 32 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.reply("-ERR Invalid parameters.");
            return None;
        }
        let creds = Credentials::Apop {
            user: user.to_string(),
            digest: digest.to_string(),
            challenge,
        };
        self.login(creds, "APOP").await
    }

    async fn auth_failed(&mut self, method: &str, user: &str) {
        self.auth_attempts += 1;
        self.failed = Some((user.to_string(), method.to_string()));
        tokio::time::sleep(self.st.failure_delay).await;
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
            self.conn.fields(self.secured()),
            self.conn.session_id
        ));
    }

    /// Hand the credentials and the connection to the service and act on its verdict.
    /// Replies queued so far are sent first, so the service's `+OK Logged in.` follows
    /// them.
    async fn login(&mut self, creds: Credentials, method: &str) -> Option<Handed> {
        let user = match &creds {
            Credentials::Plain { user, .. } | Credentials::Apop { user, .. } => user.clone(),
        };
        self.conn.flush().await;
        let (fd, keep) = handed_fd(&self.conn.io)?;
        let req = LoginRequest {
            id: 0,
            session_id: self.conn.session_id.clone(),
            remote: self.conn.remote,
            local: self.conn.local,
            tls: self.conn.tls,
            method: method.to_string(),
            tag: String::new(),
            creds,
            leftover: self.conn.rbuf.clone(),
        };
        let verdict = self.ctl.ask(req, fd).await;
        match verdict {
            Some(Verdict::Taken) => Some(Handed(keep)),
            Some(Verdict::Failed) => {
                self.auth_failed(method, &user).await;
                None
            }
            Some(Verdict::Reply(t)) => {
                self.reply(&t);
                None
            }
            Some(Verdict::ReplyClose(t)) => {
                self.reply(&t);
                self.closing = true;
                None
            }
            None => {
                self.reply("-ERR [SYS/TEMP] Temporary authentication failure.");
                self.closing = true;
                None
            }
        }
    }
}

/// The descriptor to pass to the service: the client's socket, or for TLS the service's
/// end of a new pair this process will proxy through (returned as the second value).
pub fn handed_fd(io: &Io) -> Option<(OwnedFd, Option<UnixStream>)> {
    match io {
        Io::Plain(t) => Some((std::os::fd::AsFd::as_fd(t).try_clone_to_owned().ok()?, None)),
        Io::Tls(_) => {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().ok()?;
            ours.set_nonblocking(true).ok()?;
            Some((theirs.into(), Some(UnixStream::from_std(ours).ok()?)))
        }
        Io::Proxied(_) | Io::Gone => None,
    }
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
