//! Dovecot's auth client protocol, v1.2 as Dovecot 2.3 speaks it on its `auth` unix
//! listeners (`src/lib-auth/auth-client-interface.h`, `src/auth/auth-client-connection.c`,
//! `auth-request-handler.c`): the protocol Postfix's `smtpd_sasl_type = dovecot`
//! (`xsasl_dovecot_server.c`) and Dovecot's own login processes use. A server
//! ([`serve`]) answering from the passdbs of [`super::dovecot`], and a client
//! ([`DovecotAuthenticator`], smtpd's [`Authenticator`] for `smtpd_sasl_type = dovecot`).
//!
//! Transcript followed (recorded from a private Dovecot 2.3.19.1 with `auth_mechanisms =
//! plain login` and a passwd-file passdb):
//!
//! ```text
//! S: VERSION 1 2 / MECH PLAIN plaintext / MECH LOGIN plaintext / SPID pid / CUID n /
//!    COOKIE 32hex / DONE                        (sent on connect, before the client speaks)
//! C: VERSION 1 0 / CPID pid
//! C: AUTH 1 PLAIN service=smtp nologin lip=… rip=… resp=base64
//! S: OK 1 user=alice           | FAIL 1 user=alice  (after auth_failure_delay)
//! C: AUTH 2 LOGIN service=smtp → S: CONT 2 VXNlcm5hbWU6 → C: CONT 2 b64 → S: CONT 2 UGFzc3dvcmQ6
//! C: AUTH 3 PLAIN service=smtp → S: CONT 3 (empty challenge)
//! bad base64   → FAIL id code=invalid_base64 reason=Invalid base64 data in initial response
//!                (… in continued response); `*` (cancel) is bad base64 too
//! malformed PLAIN → FAIL id
//! CONT for an unknown id → FAIL id reason=Authentication request timed out
//! backend failure → FAIL id user=x code=temp_fail
//! unknown mechanism, missing service=, unknown command, VERSION major ≠ 1 → logged as
//!   Dovecot does ("BUG: Authentication client 0 requested unsupported authentication
//!   mechanism FOO") and the connection is closed.
//! ```
//!
//! Values are escaped as Dovecot's `str_append_tabescaped` does (`\x01` + `1`/`t`/`n`/`r`).
//! Each finished request is checked on the blocking pool and answered when ready, so a
//! slow PAM check or the failure delay never holds up other connections or other requests
//! on the same connection.
//!
//! Limits: only PLAIN and LOGIN (no CRAM-MD5/DIGEST-MD5/SCRAM: the backends here hold
//! hashes), no master users (a PLAIN authzid other than the user fails, as Dovecot does
//! without master passdbs), no auth penalty beyond `auth_failure_delay`, no `REQUEST`
//! master protocol (login processes of `postern dovecot` will call the passdbs directly).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::Outcome;
use super::dovecot::{DovecotAuth, RequestInfo};
use crate::auth::sasl::{AuthResult, Authenticator};

/// Longest line Dovecot accepts (`AUTH_CLIENT_MAX_LINE_LENGTH`).
pub const MAX_LINE: usize = 16384;

/// `Username:` and `Password:` in base64, the LOGIN prompts.
const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
const LOGIN_PASS_PROMPT: &str = "UGFzc3dvcmQ6";

/// Dovecot's tab escaping for values.
pub fn tab_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\x01' => out.push_str("\x011"),
            '\t' => out.push_str("\x01t"),
            '\n' => out.push_str("\x01n"),
            '\r' => out.push_str("\x01r"),
            c => out.push(c),
        }
    }
    out
}

/// The reverse of [`tab_escape`].
pub fn tab_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\x01' {
            match it.next() {
                Some('1') => out.push('\x01'),
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Bind a Dovecot auth listener at `path` with `mode` (Dovecot's `unix_listener { mode }`,
/// default 0600), replacing a stale socket. Call inside a tokio runtime.
pub fn bind(path: &Path, mode: u32) -> io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(l)
}

/// A socket's owner: uid and gid, each kept as it is when `None`.
pub type SocketOwner = (Option<u32>, Option<u32>);

/// As [`bind`], outside a runtime (before a daemon detaches, so that errors reach the
/// terminal), and owned by `owner` (uid, gid) when given: Dovecot's `unix_listener {
/// mode user group }`.
pub fn bind_std(
    path: &Path,
    mode: u32,
    owner: Option<SocketOwner>,
) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = std::os::unix::net::UnixListener::bind(path)?;
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(
            path,
            uid.map(nix::unistd::Uid::from_raw),
            gid.map(nix::unistd::Gid::from_raw),
        )
        .map_err(io::Error::from)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serve the auth client protocol on `listener` until the future is dropped.
pub async fn serve(listener: tokio::net::UnixListener, auth: Arc<DovecotAuth>) {
    serve_current(listener, move || auth.clone()).await
}

/// As [`serve`], each connection answered from the passdbs `current` gives at the time
/// (the settings after the latest reload).
pub async fn serve_current<F>(listener: tokio::net::UnixListener, current: F)
where
    F: Fn() -> Arc<DovecotAuth>,
{
    let cuid = Arc::new(AtomicU64::new(0));
    loop {
        let conn = match listener.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::error!("auth: Error: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let id = cuid.fetch_add(1, Ordering::Relaxed) + 1;
        let auth = current();
        tokio::spawn(async move {
            let (r, w) = conn.into_split();
            serve_connection(r, w, auth, id).await;
        });
    }
}

enum Pending {
    PlainWait { service: String },
    LoginUser { service: String },
    LoginPass { service: String, user: String },
}

fn b64d(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// One client connection: handshake, then AUTH/CONT lines.
pub async fn serve_connection<R, W>(r: R, mut w: W, auth: Arc<DovecotAuth>, cuid: u64)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut hello = String::from("VERSION\t1\t2\n");
    for m in &auth.mechanisms {
        if m == "PLAIN" || m == "LOGIN" {
            hello.push_str(&format!("MECH\t{m}\tplaintext\n"));
        }
    }
    let cookie: String = {
        let mut b = [0u8; 16];
        let _ = getrandom_fill(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    };
    hello.push_str(&format!(
        "SPID\t{}\nCUID\t{cuid}\nCOOKIE\t{cookie}\nDONE\n",
        std::process::id()
    ));
    if w.write_all(hello.as_bytes()).await.is_err() {
        return;
    }
    // Replies from spawned checks come back through this channel to one writer.
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            if w.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let mut reader = BufReader::new(r);
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut got_version = false;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(n) => n,
            Err(_) => break,
        };
        if n == 0 {
            if !pending.is_empty() {
                tracing::error!(
                    "auth: Error: auth client {cuid} disconnected with {} pending requests: EOF",
                    pending.len()
                );
            }
            break;
        }
        if buf.last() != Some(&b'\n') {
            tracing::error!(
                "auth: Error: BUG: Auth client {cuid} sent us more than {MAX_LINE} bytes"
            );
            break;
        }
        let line = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
        let line = line.trim_end_matches('\r');
        let f: Vec<&str> = line.split('\t').collect();
        if !got_version {
            if f[0] != "VERSION" || f.get(1) != Some(&"1") {
                tracing::error!(
                    "auth: Error: Authentication client not compatible with this server (mixed old and new binaries?)"
                );
                break;
            }
            got_version = true;
            continue;
        }
        match f[0] {
            "CPID" => {}
            "AUTH" => {
                if f.len() < 3 {
                    tracing::error!(
                        "auth: Error: BUG: Authentication client {cuid} sent broken AUTH request"
                    );
                    break;
                }
                let id = f[1].to_string();
                let mech = f[2].to_ascii_uppercase();
                let mut service = None;
                let mut resp: Option<&str> = None;
                for p in &f[3..] {
                    if let Some(v) = p.strip_prefix("service=") {
                        service = Some(tab_unescape(v));
                    } else if let Some(v) = p.strip_prefix("resp=") {
                        resp = Some(v);
                    }
                }
                if !auth.mechanisms.contains(&mech) || !(mech == "PLAIN" || mech == "LOGIN") {
                    tracing::error!(
                        "auth: Error: BUG: Authentication client {cuid} requested unsupported authentication mechanism {}",
                        f[2]
                    );
                    break;
                }
                let Some(service) = service else {
                    tracing::error!(
                        "auth: Error: BUG: Authentication client {cuid} didn't specify service in request"
                    );
                    break;
                };
                let data = match resp {
                    None => None,
                    Some(r) => match b64d(r) {
                        Some(d) => Some(d),
                        None => {
                            let _ = tx.send(format!(
                                "FAIL\t{id}\tcode=invalid_base64\treason=Invalid base64 data in initial response\n"
                            ));
                            continue;
                        }
                    },
                };
                match (mech.as_str(), data) {
                    ("PLAIN", Some(d)) => spawn_plain(&auth, &tx, id, service, d),
                    ("PLAIN", None) => {
                        let _ = tx.send(format!("CONT\t{id}\t\n"));
                        pending.insert(id, Pending::PlainWait { service });
                    }
                    (_, Some(d)) => {
                        let user = String::from_utf8_lossy(&d).into_owned();
                        let _ = tx.send(format!("CONT\t{id}\t{LOGIN_PASS_PROMPT}\n"));
                        pending.insert(id, Pending::LoginPass { service, user });
                    }
                    (_, None) => {
                        let _ = tx.send(format!("CONT\t{id}\t{LOGIN_USER_PROMPT}\n"));
                        pending.insert(id, Pending::LoginUser { service });
                    }
                }
            }
            "CONT" => {
                let id = f.get(1).copied().unwrap_or("").to_string();
                let Some(state) = pending.remove(&id) else {
                    let _ = tx.send(format!(
                        "FAIL\t{id}\treason=Authentication request timed out\n"
                    ));
                    continue;
                };
                let Some(d) = b64d(f.get(2).copied().unwrap_or("")) else {
                    let _ = tx.send(format!(
                        "FAIL\t{id}\tcode=invalid_base64\treason=Invalid base64 data in continued response\n"
                    ));
                    continue;
                };
                match state {
                    Pending::PlainWait { service } => spawn_plain(&auth, &tx, id, service, d),
                    Pending::LoginUser { service } => {
                        let user = String::from_utf8_lossy(&d).into_owned();
                        let _ = tx.send(format!("CONT\t{id}\t{LOGIN_PASS_PROMPT}\n"));
                        pending.insert(id, Pending::LoginPass { service, user });
                    }
                    Pending::LoginPass { service, user } => {
                        let password = String::from_utf8_lossy(&d).into_owned();
                        spawn_check(&auth, &tx, id, service, user, password);
                    }
                }
            }
            other => {
                tracing::error!(
                    "auth: Error: BUG: Authentication client sent unknown command: {other}"
                );
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

fn getrandom_fill(b: &mut [u8]) -> Result<(), ()> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new().fill(b).map_err(|_| ())
}

/// Split a PLAIN response (RFC 4616): `authzid NUL authcid NUL passwd`, exactly two NULs,
/// a non-empty authcid.
fn parse_plain(d: &[u8]) -> Option<(String, String, String)> {
    let parts: Vec<&[u8]> = d.split(|&b| b == 0).collect();
    if parts.len() != 3 || parts[1].is_empty() {
        return None;
    }
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    Some((s(parts[0])?, s(parts[1])?, s(parts[2])?))
}

fn spawn_plain(
    auth: &Arc<DovecotAuth>,
    tx: &mpsc::UnboundedSender<String>,
    id: String,
    service: String,
    d: Vec<u8>,
) {
    match parse_plain(&d) {
        Some((authz, user, password)) => {
            if !authz.is_empty() && authz != user {
                // No master passdb: Dovecot fails the login as the authcid.
                let (auth, tx) = (auth.clone(), tx.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(auth.failure_delay).await;
                    let u = auth.translate_username(&user, &service);
                    let _ = tx.send(format!("FAIL\t{id}\tuser={}\n", tab_escape(&u)));
                });
                return;
            }
            spawn_check(auth, tx, id, service, user, password)
        }
        None => {
            let (auth, tx) = (auth.clone(), tx.clone());
            tokio::spawn(async move {
                tokio::time::sleep(auth.failure_delay).await;
                let _ = tx.send(format!("FAIL\t{id}\n"));
            });
        }
    }
}

fn spawn_check(
    auth: &Arc<DovecotAuth>,
    tx: &mpsc::UnboundedSender<String>,
    id: String,
    service: String,
    user: String,
    password: String,
) {
    let (auth, tx) = (auth.clone(), tx.clone());
    tokio::spawn(async move {
        let a = auth.clone();
        let checked = tokio::task::spawn_blocking(move || {
            a.verify_plain(&user, &password, &RequestInfo { service })
        })
        .await;
        let line = match checked {
            Ok(r) => {
                let u = tab_escape(&r.user);
                match r.outcome {
                    Outcome::Ok => format!("OK\t{id}\tuser={u}\n"),
                    other => {
                        let code = match &other {
                            Outcome::Internal(why) => {
                                tracing::error!("auth: Error: passdb({}): {why}", r.user);
                                "\tcode=temp_fail"
                            }
                            Outcome::Refused(why) if why.contains("Password expired") => {
                                "\tcode=pass_expired"
                            }
                            Outcome::Refused(why) if !why.contains("PAM auth") => {
                                "\tcode=user_disabled"
                            }
                            _ => "",
                        };
                        tokio::time::sleep(auth.failure_delay).await;
                        format!("FAIL\t{id}\tuser={u}{code}\n")
                    }
                }
            }
            Err(_) => format!("FAIL\t{id}\tcode=temp_fail\n"),
        };
        let _ = tx.send(line);
    });
}

/// The reply to one client-side authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientReply {
    /// `OK id user=…`: the user name the server settled on.
    Ok { user: Option<String> },
    /// `FAIL id …`: `temp` when `code=temp_fail` (Postfix answers 454 then).
    Fail { temp: bool, reason: Option<String> },
}

/// A connected, handshaken client.
pub struct Client {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    /// Mechanisms the server offered (`MECH` lines), in its order.
    pub mechanisms: Vec<String>,
    next_id: u32,
}

fn proto_err(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

impl Client {
    /// Connect and exchange the handshake (`VERSION 1 0`, `CPID`; read up to `DONE`).
    pub async fn connect(path: &Path) -> io::Result<Client> {
        let s = tokio::net::UnixStream::connect(path).await?;
        let (r, mut w) = s.into_split();
        w.write_all(format!("VERSION\t1\t0\nCPID\t{}\n", std::process::id()).as_bytes())
            .await?;
        let mut reader = BufReader::new(r);
        let mut mechanisms = Vec::new();
        let mut version_ok = false;
        loop {
            let line = read_line(&mut reader).await?;
            let f: Vec<&str> = line.split('\t').collect();
            match f[0] {
                "VERSION" => {
                    if f.get(1) != Some(&"1") {
                        return Err(proto_err("authentication server protocol version mismatch"));
                    }
                    version_ok = true;
                }
                "MECH" => {
                    if let Some(m) = f.get(1) {
                        mechanisms.push(m.to_ascii_uppercase());
                    }
                }
                "DONE" => break,
                _ => {}
            }
        }
        if !version_ok {
            return Err(proto_err("no VERSION from authentication server"));
        }
        Ok(Client {
            reader,
            writer: w,
            mechanisms,
            next_id: 0,
        })
    }

    /// Authenticate with PLAIN (initial response), as Postfix forwards AUTH PLAIN.
    pub async fn auth_plain(
        &mut self,
        service: &str,
        user: &str,
        password: &str,
        extra: &[(&str, &str)],
    ) -> io::Result<ClientReply> {
        self.next_id += 1;
        let id = self.next_id;
        let resp =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        let mut line = format!(
            "AUTH\t{id}\tPLAIN\tservice={}\tnologin",
            tab_escape(service)
        );
        for (k, v) in extra {
            line.push_str(&format!("\t{k}={}", tab_escape(v)));
        }
        line.push_str(&format!("\tresp={resp}\n"));
        self.writer.write_all(line.as_bytes()).await?;
        loop {
            let reply = read_line(&mut self.reader).await?;
            let f: Vec<&str> = reply.split('\t').collect();
            if f.get(1) != Some(&id.to_string().as_str()) {
                continue;
            }
            let param = |key: &str| {
                f[2..]
                    .iter()
                    .find_map(|p| p.strip_prefix(key).map(tab_unescape))
            };
            return match f[0] {
                "OK" => Ok(ClientReply::Ok {
                    user: param("user="),
                }),
                "FAIL" => Ok(ClientReply::Fail {
                    temp: f[2..]
                        .iter()
                        .any(|p| *p == "code=temp_fail" || *p == "temp"),
                    reason: param("reason="),
                }),
                // A CONT to a PLAIN initial response: the server wants more than we have.
                _ => Ok(ClientReply::Fail {
                    temp: false,
                    reason: None,
                }),
            };
        }
    }
}

async fn read_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> io::Result<String> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "authentication server closed the connection",
        ));
    }
    if buf.last() != Some(&b'\n') {
        return Err(proto_err("over-long line from authentication server"));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// smtpd's [`Authenticator`] for `smtpd_sasl_type = dovecot`: each check opens the socket
/// at `smtpd_sasl_path`, does the handshake and one PLAIN request (the SMTP side has
/// already decoded PLAIN or LOGIN into a user and password).
pub struct DovecotAuthenticator {
    pub socket: PathBuf,
    /// The mechanisms the server offered at construction, filtered to PLAIN and LOGIN.
    pub mechs: Vec<String>,
    pub timeout: Duration,
}

/// Build the `smtpd_sasl_type = dovecot` authenticator: connects once to `socket` to learn
/// the offered mechanisms (as Postfix does per session), keeping PLAIN and LOGIN.
pub async fn dovecot_authenticator(socket: &Path) -> io::Result<DovecotAuthenticator> {
    let timeout = Duration::from_secs(30);
    let client = tokio::time::timeout(timeout, Client::connect(socket))
        .await
        .map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, "authentication server timed out")
        })??;
    let mechs = client
        .mechanisms
        .iter()
        .filter(|m| *m == "PLAIN" || *m == "LOGIN")
        .cloned()
        .collect();
    Ok(DovecotAuthenticator {
        socket: socket.to_path_buf(),
        mechs,
        timeout,
    })
}

impl Authenticator for DovecotAuthenticator {
    fn mechanisms(&self) -> Vec<String> {
        self.mechs.clone()
    }
    fn check(
        &self,
        user: String,
        password: String,
        service: String,
        _realm: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = AuthResult> + Send + '_>> {
        Box::pin(async move {
            let attempt = async {
                let mut c = Client::connect(&self.socket).await?;
                c.auth_plain(&service, &user, &password, &[]).await
            };
            match tokio::time::timeout(self.timeout, attempt).await {
                Ok(Ok(ClientReply::Ok { .. })) => AuthResult::Ok,
                Ok(Ok(ClientReply::Fail { temp: false, .. })) => AuthResult::Fail,
                Ok(Ok(ClientReply::Fail { temp: true, .. })) => {
                    AuthResult::temp("Temporary authentication failure")
                }
                Ok(Err(_)) | Err(_) => AuthResult::temp("Temporary authentication failure"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::dovecot::Passdb;

    fn auth(file: &Path) -> Arc<DovecotAuth> {
        Arc::new(DovecotAuth {
            passdbs: vec![Passdb::PasswdFile {
                path: file.display().to_string(),
                scheme: "CRYPT".into(),
                username_format: "%u".into(),
            }],
            userdbs: vec![],
            username_format: "%Lu".into(),
            failure_delay: Duration::from_millis(10),
            mechanisms: vec!["PLAIN".into(), "LOGIN".into()],
        })
    }

    #[test]
    fn escaping() {
        assert_eq!(tab_escape("a\tb\x01c\n"), "a\x01tb\x011c\x01n");
        assert_eq!(tab_unescape(&tab_escape("a\tb\x01c\r\n")), "a\tb\x01c\r\n");
        assert_eq!(
            parse_plain(b"\0u\0p"),
            Some(("".into(), "u".into(), "p".into()))
        );
        assert_eq!(parse_plain(b"\0\0p"), None);
        assert_eq!(parse_plain(b"\0u\0p\0"), None);
        assert_eq!(parse_plain(b"garbage"), None);
    }

    #[tokio::test]
    async fn transcript() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("users");
        std::fs::write(&file, "alice:{PLAIN}secret:1000:1000::/home/alice::\n").expect("write");
        let sock = dir.path().join("auth");
        let l = bind(&sock, 0o666).expect("bind");
        let server = tokio::spawn(serve(l, auth(&file)));

        let mut c = Client::connect(&sock).await.expect("connect");
        assert_eq!(c.mechanisms, vec!["PLAIN", "LOGIN"]);
        assert_eq!(
            c.auth_plain("smtp", "Alice", "secret", &[("lip", "127.0.0.1")])
                .await
                .expect("ok"),
            ClientReply::Ok {
                user: Some("alice".into())
            }
        );
        assert_eq!(
            c.auth_plain("smtp", "alice", "wrong", &[])
                .await
                .expect("fail"),
            ClientReply::Fail {
                temp: false,
                reason: None
            }
        );

        // Raw lines: LOGIN, bad base64, unknown CONT id, unknown mechanism.
        let s = tokio::net::UnixStream::connect(&sock)
            .await
            .expect("connect");
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"VERSION\t1\t0\nCPID\t1\n").await.expect("w");
        loop {
            if read_line(&mut r).await.expect("hs") == "DONE" {
                break;
            }
        }
        let mut say = async |line: &str| {
            w.write_all(format!("{line}\n").as_bytes())
                .await
                .expect("w");
            read_line(&mut r).await.expect("reply")
        };
        assert_eq!(
            say("AUTH\t1\tLOGIN\tservice=smtp\tnologin").await,
            "CONT\t1\tVXNlcm5hbWU6"
        );
        assert_eq!(say("CONT\t1\tYWxpY2U=").await, "CONT\t1\tUGFzc3dvcmQ6");
        assert_eq!(say("CONT\t1\tc2VjcmV0").await, "OK\t1\tuser=alice");
        assert_eq!(
            say("AUTH\t2\tPLAIN\tservice=smtp\tresp=!!!").await,
            "FAIL\t2\tcode=invalid_base64\treason=Invalid base64 data in initial response"
        );
        assert_eq!(say("AUTH\t3\tPLAIN\tservice=smtp").await, "CONT\t3\t");
        assert_eq!(
            say("CONT\t3\t*").await,
            "FAIL\t3\tcode=invalid_base64\treason=Invalid base64 data in continued response"
        );
        assert_eq!(
            say("CONT\t9\tabc").await,
            "FAIL\t9\treason=Authentication request timed out"
        );
        assert_eq!(
            say("AUTH\t4\tPLAIN\tservice=smtp\tresp=Z2FyYmFnZQ==").await,
            "FAIL\t4"
        );
        w.write_all(b"AUTH\t5\tFOO\tservice=smtp\n")
            .await
            .expect("w");
        assert!(read_line(&mut r).await.is_err(), "closed after a BUG line");
        server.abort();
    }
}
