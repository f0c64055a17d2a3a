//! One POP3 connection: the AUTHORIZATION state (Dovecot's `pop3-login`), then the
//! TRANSACTION state on the user's mailbox and the UPDATE state at QUIT. Replies are
//! queued and flushed only before the session blocks for input, so pipelined commands
//! (RFC 2449 PIPELINING) are answered in one write.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use std::os::fd::OwnedFd;

use super::Pop3State;
use super::handoff::{Channel, Credentials, LoginRequest, Msg, Verdict};
use super::login::LoginCtl;
use super::uidl;
use crate::auth::dovecot::{RequestInfo, UserInfo};
use crate::mailbox::{
    Access, Flags, Folder, MailLocation, MailStore, MailboxError, MessageReader, StoreOptions,
};

/// Longest command line before login (Dovecot's login input buffer).
const LOGIN_MAX_LINE: usize = 4096;
/// Longest command line after login.
const MAX_LINE: usize = 8192;
/// Dovecot's `CLIENT_MAX_BAD_COMMANDS`.
const MAX_BAD_COMMANDS: u32 = 20;
/// How much of a message is read from the mailbox at a time (RETR/TOP stream in pieces).
const CHUNK: usize = 32 * 1024;
/// Queued output beyond which RETR/TOP write to the client before reading on.
const WBUF_FLUSH: usize = 64 * 1024;
/// Output buffer capacity a session keeps between replies.
const WBUF_KEEP: usize = 16 * 1024;

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The service's end of a TLS client: the login process decrypts and proxies.
    Proxied(UnixStream),
    Gone,
}

impl Io {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf).await,
            Io::Tls(s) => s.read(buf).await,
            Io::Proxied(s) => s.read(buf).await,
            Io::Gone => Ok(0),
        }
    }
    async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Io::Plain(s) => s.write_all(b).await,
            Io::Tls(s) => {
                s.write_all(b).await?;
                s.flush().await
            }
            Io::Proxied(s) => s.write_all(b).await,
            Io::Gone => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }
}

enum End {
    Lost,
    Timeout,
    TooLong,
}

/// The mail user after login.
struct Mail {
    user: String,
    info: UserInfo,
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
    io: Io,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    remote: SocketAddr,
    local: SocketAddr,
    tls: bool,
    session_id: String,
    user_arg: Option<String>,
    auth_attempts: u32,
    /// The user name and mechanism of the last failed attempt, for the log.
    failed: Option<(String, String)>,
    bad: u32,
    started: std::time::Instant,
    /// The mail stage failed after authentication (as Dovecot's `pop3` process): the
    /// connection is closed after the reply.
    closing: bool,
    /// The APOP timestamp of the greeting, when `auth_mechanisms` lists `apop`.
    apop: Option<String>,
    /// After login (`counting`): bytes of commands read and of replies sent, from
    /// `+OK Logged in.` on (`%i`, `%o` of `pop3_logout_format`).
    counting: bool,
    in_bytes: u64,
    out_bytes: u64,
    /// In the login process: the channel to the service that checks credentials.
    ctl: Option<Arc<LoginCtl>>,
}

fn session_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&(t.as_micros() as u64).to_be_bytes());
    b.extend_from_slice(&(N.fetch_add(1, Ordering::Relaxed) as u32).to_be_bytes());
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)
}

/// Run `f` on a blocking thread as the mail user (see [`with_fsuid`]). For work that may
/// take long: opening and scanning a mailbox, committing changes.
async fn as_user<T: Send + 'static>(
    info: &UserInfo,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    as_ids(info.uid, info.gid, f).await
}

/// [`as_user`] with the user's uid and gid.
async fn as_ids<T: Send + 'static>(
    uid: Option<u32>,
    gid: Option<u32>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    tokio::task::spawn_blocking(move || with_fsuid(uid, gid, f))
        .await
        .ok()
}

/// Run `f` on this thread as the mail user: when root, the thread's filesystem uid/gid
/// are switched to the user's for the call and back to root after it (`setfsuid` is per
/// thread). `f` is synchronous, so no other task runs on the thread meanwhile. Called
/// directly from a session for reading a message piece (a few page-cache reads), which
/// saves the two thread hand-overs of a blocking-pool task per RETR.
fn with_fsuid<T>(uid: Option<u32>, gid: Option<u32>, f: impl FnOnce() -> T) -> T {
    let root = running_as_root();
    if root {
        // SAFETY: setfsgid/setfsuid only change this thread's filesystem ids.
        unsafe {
            if let Some(g) = gid {
                libc::setfsgid(g);
            }
            if let Some(u) = uid {
                libc::setfsuid(u);
            }
        }
    }
    let r = f();
    if root {
        // SAFETY: as above, back to root for whatever runs next on this thread.
        unsafe {
            libc::setfsuid(0);
            libc::setfsgid(0);
        }
    }
    r
}

/// Run `f` with root's filesystem ids on a thread that has the mail user's (the log file
/// and syslog socket are opened as root), then switch back.
fn with_root_fs<T>(f: impl FnOnce() -> T) -> T {
    if !running_as_root() {
        return f();
    }
    // SAFETY: setfsuid/setfsgid only change this thread's filesystem ids; an invalid id
    // (-1) changes nothing and returns the current one.
    let (uid, gid) = unsafe {
        let u = libc::setfsuid(u32::MAX) as u32;
        let g = libc::setfsgid(u32::MAX) as u32;
        libc::setfsuid(0);
        libc::setfsgid(0);
        (u, g)
    };
    let r = f();
    // SAFETY: as above, back to the user's ids.
    unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
    }
    r
}

/// Whether this process runs as root (asked once).
fn running_as_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| nix::unistd::geteuid().is_root())
}

/// MD5 (RFC 1321) of `data`, for APOP's digest.
fn md5(data: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
        .collect();
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
    let mut h: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (h[0], h[1], h[2], h[3]);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        h[0] = h[0].wrapping_add(a);
        h[1] = h[1].wrapping_add(b);
        h[2] = h[2].wrapping_add(c);
        h[3] = h[3].wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, w) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

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

/// The login process's side of one client: greeting and AUTHORIZATION state until the
/// service takes the connection over (or the client leaves). For a TLS client the
/// login process then stays as its proxy, as Dovecot's `pop3-login` does.
pub async fn run_login(
    tcp: TcpStream,
    remote: SocketAddr,
    implicit_tls: bool,
    st: Arc<Pop3State>,
    ctl: Arc<LoginCtl>,
) {
    let local = tcp.local_addr().unwrap_or(remote);
    let _ = tcp.set_nodelay(true);
    let mut s = Session::new(st.clone(), Io::Plain(tcp), remote, local);
    s.ctl = Some(ctl);
    if implicit_tls && !s.start_tls().await {
        return;
    }
    if st.auth.mechanisms.iter().any(|m| m == "APOP") {
        s.apop = Some(apop_challenge());
    }
    match &s.apop {
        Some(ch) => {
            let g = format!("+OK {} {ch}", st.greeting);
            s.reply(&g);
        }
        None => s.reply(&format!("+OK {}", st.greeting)),
    }
    match s.authorization().await {
        Some(Handed(Some(service_end))) => {
            if let Io::Tls(tls) = std::mem::replace(&mut s.io, Io::Gone) {
                drop(s);
                proxy(tls, service_end).await;
            }
        }
        Some(Handed(None)) => {}
        None => s.flush().await,
    }
    crate::memory::trim_heap();
}

/// Relay a logged-in TLS client: client → service until the client closes, service →
/// client until the service closes, which ends the connection (TLS close_notify).
async fn proxy(tls: Box<tokio_rustls::server::TlsStream<TcpStream>>, service: UnixStream) {
    let (mut cr, mut cw) = tokio::io::split(*tls);
    let (mut sr, mut sw) = service.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
        std::future::pending::<()>().await
    };
    let down = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::select! {
        _ = down => {}
        _ = up => {}
    }
}

/// The service's side of a client the login process authenticated: check the
/// credentials (passdb, userdb, `first_valid_uid`, `mail_max_userip_connections`), tell
/// the login process the verdict, and when it is [`Verdict::Taken`] serve the
/// TRANSACTION and UPDATE states on `fd` (the client's socket, or the login process's
/// proxy of a TLS client).
pub async fn take_over(st: Arc<Pop3State>, mut req: LoginRequest, fd: OwnedFd, ch: Arc<Channel>) {
    let io = if req.tls {
        let u = std::os::unix::net::UnixStream::from(fd);
        let _ = u.set_nonblocking(true);
        UnixStream::from_std(u).map(Io::Proxied)
    } else {
        let t = std::net::TcpStream::from(fd);
        let _ = t.set_nonblocking(true);
        TcpStream::from_std(t).map(Io::Plain)
    };
    let Ok(io) = io else {
        let _ = ch
            .send(
                &Msg::Verdict {
                    id: req.id,
                    verdict: Verdict::ReplyClose(
                        "-ERR [SYS/TEMP] Temporary authentication failure.".into(),
                    ),
                },
                None,
            )
            .await;
        return;
    };
    let mut s = Session::new(st.clone(), io, req.remote, req.local);
    s.tls = req.tls;
    s.session_id = std::mem::take(&mut req.session_id);
    s.rbuf = std::mem::take(&mut req.leftover);
    let checked = s.check(&req.creds).await;
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
    let key = (user.clone(), req.remote.ip());
    if sent.is_ok()
        && let Some(mail) = s.start_mail(user, info, &req.method).await
    {
        s.transaction(mail).await;
    }
    s.flush().await;
    st.userip_release(&key);
    drop(s);
    crate::memory::trim_heap();
}

/// What the login process keeps of a client the service took: for a TLS client, its
/// end of the proxy pair.
struct Handed(Option<UnixStream>);

impl Session {
    fn new(st: Arc<Pop3State>, io: Io, remote: SocketAddr, local: SocketAddr) -> Session {
        Session {
            st,
            io,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            remote,
            local,
            tls: false,
            session_id: session_id(),
            user_arg: None,
            auth_attempts: 0,
            failed: None,
            bad: 0,
            started: std::time::Instant::now(),
            closing: false,
            apop: None,
            counting: false,
            in_bytes: 0,
            out_bytes: 0,
            ctl: None,
        }
    }

    fn reply(&mut self, line: &str) {
        self.wbuf.extend_from_slice(line.as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
    }

    async fn flush(&mut self) {
        if !self.wbuf.is_empty() {
            if self.counting {
                self.out_bytes += self.wbuf.len() as u64;
            }
            if self.io.write_all(&self.wbuf).await.is_err() {
                self.io = Io::Gone;
            }
            // The buffer is kept for the next replies (no allocation per reply), unless
            // a long listing or message made it large.
            self.wbuf.clear();
            if self.wbuf.capacity() > WBUF_KEEP {
                self.wbuf = Vec::new();
            }
        }
    }

    fn secured(&self) -> bool {
        self.st.is_secured(self.tls, self.remote, self.local)
    }

    /// Dovecot's `client_check_plaintext_auth`.
    fn plaintext_allowed(&self) -> bool {
        self.secured() || (!self.st.disable_plaintext_auth && !self.st.ssl_required)
    }

    fn conn_fields(&self) -> String {
        let mut s = format!("rip={}, lip={}", self.remote.ip(), self.local.ip());
        if self.tls {
            s.push_str(", TLS");
        } else if self.secured() {
            s.push_str(", secured");
        }
        s
    }

    /// Read one line without its CRLF; a line over `limit` ends the session as Dovecot
    /// does (`-ERR Input buffer full, aborting`). Replies are flushed first.
    async fn read_line(&mut self, limit: usize) -> Result<Vec<u8>, End> {
        loop {
            if let Some(pos) = self.rbuf.iter().position(|&b| b == b'\n') {
                if self.counting {
                    self.in_bytes += pos as u64 + 1;
                }
                let mut line: Vec<u8> = self.rbuf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > limit {
                    return Err(End::TooLong);
                }
                return Ok(line);
            }
            if self.rbuf.len() > limit {
                return Err(End::TooLong);
            }
            self.flush().await;
            let mut buf = [0u8; 8192];
            let n = match tokio::time::timeout(self.st.idle_timeout, self.io.read(&mut buf)).await {
                Err(_) => return Err(End::Timeout),
                Ok(Err(_)) | Ok(Ok(0)) => return Err(End::Lost),
                Ok(Ok(n)) => n,
            };
            self.rbuf.extend_from_slice(&buf[..n]);
        }
    }

    async fn start_tls(&mut self) -> bool {
        let Some(cfg) = self.st.tls.clone() else {
            return false;
        };
        self.flush().await;
        self.rbuf.clear();
        let tcp = match std::mem::replace(&mut self.io, Io::Gone) {
            Io::Plain(t) => t,
            other => {
                self.io = other;
                return false;
            }
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        match tokio::time::timeout(self.st.idle_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                self.io = Io::Tls(Box::new(tls));
                self.tls = true;
                true
            }
            _ => false,
        }
    }

    fn capa(&self, logged_in: bool) -> String {
        let mut s = String::from(
            "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE",
        );
        if !logged_in {
            if self.st.tls.is_some() && !self.tls {
                s.push_str("\r\nSTLS");
            }
            let plain = self.plaintext_allowed();
            if plain {
                s.push_str("\r\nUSER");
            }
            s.push_str("\r\nSASL");
            if plain {
                for m in self.st.auth.mechanisms.iter().filter(|m| *m != "APOP") {
                    s.push(' ');
                    s.push_str(m);
                }
            }
        }
        s.push_str("\r\n.");
        s
    }

    /// The AUTHORIZATION state (login process); `Some` once the service took the client.
    async fn authorization(&mut self) -> Option<Handed> {
        loop {
            if self.closing {
                return None;
            }
            let line = match self.read_line(LOGIN_MAX_LINE).await {
                Ok(l) => l,
                Err(e) => {
                    let reason = match e {
                        End::TooLong => {
                            self.reply("-ERR Input buffer full, aborting");
                            "Disconnected: Input buffer full"
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
                    let c = self.capa(false);
                    self.reply(&c);
                }
                "QUIT" => {
                    self.reply("+OK Logging out");
                    self.log_login_end("Disconnected: Aborted login by logging out");
                    return None;
                }
                "STLS" => {
                    if self.st.tls.is_none() {
                        self.reply("-ERR TLS support isn't enabled.");
                    } else if self.tls {
                        self.reply("-ERR TLS is already active.");
                    } else {
                        self.reply("+OK Begin TLS negotiation now.");
                        if !self.start_tls().await {
                            return None;
                        }
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
            if matches!(self.io, Io::Gone) {
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
                for m in self.st.auth.mechanisms.iter().filter(|m| *m != "APOP") {
                    s.push_str("\r\n");
                    s.push_str(m);
                }
            }
            s.push_str("\r\n.");
            self.reply(&s);
            return None;
        };
        let mech = mech.to_ascii_uppercase();
        if !self.st.auth.mechanisms.contains(&mech) || !matches!(mech.as_str(), "PLAIN" | "LOGIN") {
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
        let line = self.read_line(LOGIN_MAX_LINE).await.ok()?;
        let line = String::from_utf8_lossy(&line).into_owned();
        if line == "*" {
            self.reply("-ERR Authentication aborted by client.");
            return None;
        }
        Some(line)
    }

    /// `APOP user digest` (RFC 1939): the digest is MD5 of the greeting's timestamp and
    /// the password, so only a passdb with the plaintext password can check it (the
    /// service does, [`Session::check`]).
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
        tokio::time::sleep(self.st.auth.failure_delay).await;
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
            self.conn_fields(),
            self.session_id
        ));
    }

    /// Login process: hand the credentials and the connection to the service and act
    /// on its verdict. Replies queued so far are sent first, so the service's
    /// `+OK Logged in.` follows them.
    async fn login(&mut self, creds: Credentials, method: &str) -> Option<Handed> {
        let user = match &creds {
            Credentials::Plain { user, .. } | Credentials::Apop { user, .. } => user.clone(),
        };
        let ctl = self.ctl.clone()?;
        self.flush().await;
        // The descriptor to pass: the client's socket, or for TLS the service's end of
        // a new pair this process will proxy through.
        let (fd, keep): (OwnedFd, Option<UnixStream>) = match &self.io {
            Io::Plain(t) => (std::os::fd::AsFd::as_fd(t).try_clone_to_owned().ok()?, None),
            Io::Tls(_) => {
                let (ours, theirs) = std::os::unix::net::UnixStream::pair().ok()?;
                ours.set_nonblocking(true).ok()?;
                (theirs.into(), Some(UnixStream::from_std(ours).ok()?))
            }
            Io::Proxied(_) | Io::Gone => return None,
        };
        let req = LoginRequest {
            id: 0,
            session_id: self.session_id.clone(),
            remote: self.remote,
            local: self.local,
            tls: self.tls,
            method: method.to_string(),
            creds,
            leftover: self.rbuf.clone(),
        };
        let verdict = ctl.ask(req, fd).await;
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

    /// Service: check the password (or the APOP digest), look the user up, check the
    /// uid and `mail_max_userip_connections` (counting this session in). `Err` is what
    /// the login process is to do instead.
    async fn check(&mut self, creds: &Credentials) -> Result<(String, UserInfo), Verdict> {
        let req = || RequestInfo {
            service: "pop3".into(),
        };
        let (user, pass) = match creds {
            Credentials::Plain { user, pass } => (user.clone(), pass.clone()),
            Credentials::Apop {
                user,
                digest,
                challenge,
            } => {
                let auth = self.st.auth.clone();
                let u = user.clone();
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
        let auth = self.st.auth.clone();
        let cache = self.st.auth_cache.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let r = auth.verify_plain_cached(cache.as_deref(), &user, &pass, &req());
            let info = if r.outcome.is_ok() {
                auth.lookup_user_cached(cache.as_deref(), &r.user, &req())
            } else {
                Ok(None)
            };
            (r, info)
        })
        .await
        .ok();
        let Some((res, info)) = checked else {
            return Err(Verdict::Failed);
        };
        if !res.outcome.is_ok() {
            return Err(Verdict::Failed);
        }
        let info = match info {
            Ok(Some(i)) => i,
            Ok(None) => {
                // Dovecot: the passdb knew the user, no userdb did.
                self.st.log.error(&format!(
                    "pop3-login: user {}: userdb lookup: user not found",
                    res.user
                ));
                return Err(Verdict::Failed);
            }
            Err(e) => {
                self.st
                    .log
                    .error(&format!("auth: userdb lookup({}): {e}", res.user));
                return Err(Verdict::Reply(
                    "-ERR [SYS/TEMP] Temporary authentication failure.".into(),
                ));
            }
        };
        // Root's file access must never be lent to a session: the userdb must name a
        // uid, at least first_valid_uid (Dovecot's mail-storage-service check).
        if nix::unistd::geteuid().is_root() {
            let uid = info.uid.unwrap_or(0);
            if info.uid.is_none() || uid < self.st.first_valid_uid {
                self.st.log.error(&format!(
                    "pop3({})<{}><{}>: Mail access for users with UID {uid} not permitted (see first_valid_uid in config file, uid from userdb lookup).",
                    res.user,
                    std::process::id(),
                    self.session_id
                ));
                return Err(Verdict::Reply(
                    "-ERR [SYS/TEMP] Internal error occurred. Refer to server log for more information.".into(),
                ));
            }
        }
        let key = (res.user.clone(), self.remote.ip());
        {
            let Ok(mut m) = self.st.userip.lock() else {
                return Err(Verdict::Failed);
            };
            let n = m.entry(key).or_insert(0);
            if self.st.max_userip > 0 && *n >= self.st.max_userip {
                return Err(Verdict::Reply(format!(
                    "-ERR [IN-USE] Maximum number of connections from user+IP exceeded (mail_max_userip_connections={})",
                    self.st.max_userip
                )));
            }
            *n += 1;
        }
        Ok((res.user, info))
    }

    /// Service, once the login process let go of the client: log the login, take the
    /// POP3 session lock, answer `+OK Logged in.` and open the INBOX. `None` when the
    /// session ends here (the reply is queued).
    async fn start_mail(&mut self, user: String, info: UserInfo, method: &str) -> Option<Mail> {
        let sec = if self.tls {
            ", TLS"
        } else if self.secured() {
            ", secured"
        } else {
            ""
        };
        self.st.log.info(&format!(
            "pop3-login: Login: user=<{}>, method={method}, rip={}, lip={}, mpid={}{sec}, session=<{}>",
            user,
            self.remote.ip(),
            self.local.ip(),
            std::process::id(),
            self.session_id
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
            let locked = as_user(&info, move || {
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
                            self.session_id
                        ));
                    }
                    self.st.log.info(&format!(
                        "pop3({})<{}><{}>: Disconnected: Couldn't lock POP3 session top=0/0, retr=0/0, del=0/0, size=0",
                        res_user,
                        std::process::id(),
                        self.session_id
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
        self.counting = true;
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
                self.session_id
            ),
        );
        opts.lock_errors = Some(crate::mailbox::lock::LockErrors(std::sync::Arc::new(
            // Called from the mailbox code, with the user's filesystem ids; the log file
            // is root's.
            move |text: &str| with_root_fs(|| log.error(&format!("{prefix}{text}"))),
        )));
        let drop_recent = !self.st.no_flag_updates;
        let opened = as_user(&info, move || -> Result<Folder, MailboxError> {
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
                    info,
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
                    self.session_id
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
                Err(End::Lost) => break "Disconnected: Connection closed".to_string(),
            };
            let line = String::from_utf8_lossy(&line).into_owned();
            let (verb, arg) = line.split_once(' ').unwrap_or((&line, ""));
            let verb = verb.to_ascii_uppercase();
            match verb.as_str() {
                "CAPA" => {
                    let c = self.capa(true);
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
                    let info = m.info.clone();
                    let mut mailbox = std::mem::replace(&mut m.mailbox, Folder::empty());
                    // The UPDATE state: \Seen for the messages RETR'd, DELE'd ones gone,
                    // in one write of the mailbox.
                    let r = as_user(&info, move || {
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
                                self.session_id
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
            if matches!(self.io, Io::Gone) {
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
            input: self.in_bytes,
            output: self.out_bytes,
            uidl_change: uidl_change(&m),
        };
        self.st.log.info(&format!(
            "pop3({})<{}><{}>: {reason} {}",
            m.user,
            std::process::id(),
            self.session_id,
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
        let (uid, gid) = (m.info.uid, m.info.gid);
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
        // On this thread: a few page-cache reads, not worth two thread hand-overs. A
        // file the user owns is opened without switching ids (see
        // `MessageRef::open_if_owned`); anything else with the user's ids.
        let owned = match uid {
            Some(u) if running_as_root() => msg.open_if_owned(u),
            _ => None,
        };
        let mut first = Some(match owned {
            Some(opened) => {
                let r = opened.and_then(|mut rd| {
                    fill(&mut rd, &mut buf)
                        .map(|n| (rd, n))
                        .map_err(|e| MailboxError::Format(e.to_string()))
                });
                (r, buf)
            }
            None => with_fsuid(uid, gid, || first_piece(&msg, false, buf)),
        });
        if let Some((Err(MailboxError::Locked(_)), _)) = &first
            && let Some((_, b)) = first.take()
        {
            // Another writer holds the mbox: wait for it on a blocking thread.
            first = as_ids(uid, gid, move || first_piece(&msg, true, b)).await;
        }
        if let Some((Err(_), b)) = first {
            // Another session may have rewritten the mbox (flags, expunges): find the
            // messages again and retry once, as Dovecot re-syncs.
            let mut mb = std::mem::replace(&mut m.mailbox, Folder::empty());
            let mut buf = b;
            first = as_ids(uid, gid, move || {
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
                    self.session_id
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
            let before = self.wbuf.len();
            out.feed(&buf[..n], &mut self.wbuf);
            sent += (self.wbuf.len() - before) as u64;
            if n < buf.len() || out.done {
                break;
            }
            if self.wbuf.len() >= WBUF_FLUSH {
                self.flush().await;
            }
            // The file is open: reading it needs no change of filesystem ids.
            match fill(&mut reader, &mut buf) {
                Ok(k) => n = k,
                Err(e) => {
                    // Part of the message is out: as Dovecot, the connection is closed.
                    m.chunk = buf;
                    self.st.log.error(&format!(
                        "pop3({})<{}><{}>: {e}",
                        m.user,
                        std::process::id(),
                        self.session_id
                    ));
                    self.flush().await;
                    self.io = Io::Gone;
                    return;
                }
            }
        }
        drop(reader);
        m.chunk = buf;
        let before = self.wbuf.len();
        out.finish(&mut self.wbuf);
        if self.st.oe_ns_eoh && !out.in_body {
            // pop3_client_workarounds = oe-ns-eoh: the missing end-of-headers line is
            // sent (the octet count of RETR stays the message's size, as in Dovecot).
            self.wbuf.extend_from_slice(b"\r\n");
        }
        sent += (self.wbuf.len() - before) as u64;
        self.wbuf.extend_from_slice(b".\r\n");
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
