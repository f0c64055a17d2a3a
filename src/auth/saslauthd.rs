//! The saslauthd daemon's wire protocol and request handling, as Cyrus SASL 2.1.28 speaks
//! it (`saslauthd/ipc_unix.c` `do_request`, `saslauthd-main.c` `do_auth`,
//! `lib/checkpw.c` `saslauthd_verify_password`; replies checked against the real Debian
//! saslauthd 2.1.28).
//!
//! Socket: `AF_UNIX` stream at `RUNDIR/mux` (default `/run/saslauthd`), mode 0777 as the
//! real one leaves it (`srwxrwxrwx root root`), the directory's own mode being what guards
//! it. Request: login, password, service, realm, each a network-order `u16` length and
//! bytes. A length over [`MAX_REQ_LEN`] gets `NO ` and the log line `login exceeded
//! MAX_REQ_LEN: 256`; a frame cut short gets no reply; an empty login `NO NULL login
//! received`, an empty password `NO NULL password received`. Reply: a `u16` length and
//! `OK` or `NO reason`, then the server closes. `-r` checks `login@realm` when the realm
//! is not empty. Failures are logged as `auth failure: [user=X] [service=S] [realm=R]
//! [mech=M] [reason=TEXT]` (the reply after `NO `, or `Unknown`).
//!
//! Differences, on purpose: the real daemon copies fields into C strings, so a NUL inside
//! a login or password cuts it short (`secret\0junk` checks as `secret`); Postern refuses
//! such a field (`NO Invalid username` / `NO Incorrect password`). A client that stops
//! sending mid-frame is dropped after [`Server::timeout`] (the real daemon waits forever
//! and ties up a worker). Requests wait for one of `-n` check slots; each check runs on the
//! blocking pool, so a slow PAM module does not hold up reading other requests.
//!
//! Mechanisms: `shadow`, `getpwent`, `pam` ([`super::system`]) and `rimap` ([`super::rimap`]:
//! the reply is the mechanism's own text, such as `OK remote authentication successful`).
//! With `rimap` a login or password holding CR or LF is refused as one holding NUL is.
//!
//! Not implemented: the credential cache (`-c`), `mux.accept` lock files (one process
//! accepts here), the mechanisms `sasldb`, `ldap`, `kerberos5`, `httpform`.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::Outcome;
use super::rimap::{self, Rimap};
use super::system;

/// Longest field saslauthd accepts (`saslauthd.h`).
pub const MAX_REQ_LEN: usize = 256;

/// Default run directory (Fedora's `/run/saslauthd`; Debian's `/var/run/saslauthd` is the
/// same directory through the `/var/run` link).
pub const DEFAULT_RUN_DIR: &str = "/run/saslauthd";

/// A saslauthd authentication mechanism (`-a`).
#[derive(Debug, Clone)]
pub enum Mech {
    Shadow,
    Getpwent,
    Pam,
    /// `rimap`: an IMAP `LOGIN` at the server named by `-O` ([`super::rimap`]).
    Rimap(Arc<Rimap>),
}

/// Why `-a NAME` cannot be used: the real daemon's log line, then exit 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MechError {
    /// `unknown authentication mechanism: NAME`.
    Unknown,
    /// The mechanism's start-up failed: its own log line, then `failed to initialize
    /// mechanism NAME`.
    Init(String),
}

impl Mech {
    /// `set_auth_mech`: the name (compared without case, as Cyrus does) and the
    /// mechanism's start-up with `-O`.
    pub fn init(name: &str, option: Option<&str>) -> Result<Mech, MechError> {
        match name.to_ascii_lowercase().as_str() {
            "shadow" => Ok(Mech::Shadow),
            "getpwent" => Ok(Mech::Getpwent),
            "pam" => Ok(Mech::Pam),
            "rimap" => Rimap::init(option)
                .map(|r| Mech::Rimap(Arc::new(r)))
                .map_err(MechError::Init),
            _ => Err(MechError::Unknown),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Mech::Shadow => "shadow",
            Mech::Getpwent => "getpwent",
            Mech::Pam => "pam",
            Mech::Rimap(_) => "rimap",
        }
    }
}

/// One decoded request.
#[derive(Clone)]
pub struct Request {
    pub login: Vec<u8>,
    pub password: Vec<u8>,
    pub service: Vec<u8>,
    pub realm: Vec<u8>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Request")
            .field("login", &String::from_utf8_lossy(&self.login))
            .field("service", &String::from_utf8_lossy(&self.service))
            .field("realm", &String::from_utf8_lossy(&self.realm))
            .finish_non_exhaustive()
    }
}

/// How reading a request ended.
#[derive(Debug)]
pub enum ReadResult {
    Request(Request),
    /// Answer with this reply and log this line (a field over `MAX_REQ_LEN`).
    Refuse {
        reply: String,
        log: String,
    },
    /// The peer closed or the frame was cut short: no reply (as the real daemon).
    Truncated,
}

/// Where the daemon's lines go: stderr with `-d` (`saslauthd[PID] :text`), else syslog
/// with ident `saslauthd`, facility `auth`, as the real one formats them (`%-16s: %s` with
/// an empty function name on Debian's build).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSink {
    Stderr,
    Syslog,
    /// Both, as Cyrus's `logger()` until the daemon detaches (and for good with `-d`).
    Both,
}

impl LogSink {
    /// `err` selects `LOG_ERR`, else `LOG_INFO`.
    pub fn log(self, err: bool, text: &str) {
        self.log_at(if err { libc::LOG_ERR } else { libc::LOG_INFO }, text);
    }

    /// A `LOG_WARNING` line (what the mechanisms log about their servers).
    pub fn warn(self, text: &str) {
        self.log_at(libc::LOG_WARNING, text);
    }

    fn log_at(self, prio: libc::c_int, text: &str) {
        match self {
            LogSink::Stderr => {
                eprintln!("saslauthd[{}] :{}", std::process::id(), text);
            }
            LogSink::Both => {
                LogSink::Stderr.log_at(prio, text);
                LogSink::Syslog.log_at(prio, text);
            }
            LogSink::Syslog => {
                let line = format!("{:<16}: {}", "", text);
                crate::sys::syslog::log(c"saslauthd", libc::LOG_AUTH, prio, &line);
            }
        }
    }
}

/// The daemon's settings.
#[derive(Debug, Clone)]
pub struct Server {
    pub mech: Mech,
    /// `-r`: check `login@realm`.
    pub concat_realm: bool,
    /// `-n`: checks running at once (0: no limit, as the real daemon's fork-per-request).
    pub workers: usize,
    /// Longest wait for a whole request.
    pub timeout: Duration,
    pub log: LogSink,
}

/// Read one request (the four counted fields).
pub async fn read_request<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> ReadResult {
    let mut fields: Vec<Vec<u8>> = Vec::with_capacity(4);
    for name in ["login", "password", "service", "realm"] {
        let mut len = [0u8; 2];
        if r.read_exact(&mut len).await.is_err() {
            return ReadResult::Truncated;
        }
        let n = usize::from(u16::from_be_bytes(len));
        if n > MAX_REQ_LEN {
            return ReadResult::Refuse {
                reply: "NO ".into(),
                log: format!("{name} exceeded MAX_REQ_LEN: {MAX_REQ_LEN}"),
            };
        }
        let mut buf = vec![0u8; n];
        if r.read_exact(&mut buf).await.is_err() {
            return ReadResult::Truncated;
        }
        fields.push(buf);
    }
    let mut it = fields.into_iter();
    let (Some(login), Some(password), Some(service), Some(realm)) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return ReadResult::Truncated;
    };
    ReadResult::Request(Request {
        login,
        password,
        service,
        realm,
    })
}

/// Encode a reply frame.
pub fn reply_frame(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let n = b.len().min(usize::from(u16::MAX));
    let mut out = Vec::with_capacity(n + 2);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&b[..n]);
    out
}

/// The reply text for an outcome of mechanism `mech`.
pub fn reply_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok => "OK".into(),
        Outcome::UnknownUser => "NO Invalid username".into(),
        Outcome::BadPassword => "NO Incorrect password".into(),
        Outcome::Refused(why) => format!("NO {why}"),
        Outcome::Internal(_) => "NO internal mechanism failure".into(),
    }
}

/// Run the mechanism for one request (blocking: PAM and crypt may take long). Returns
/// the reply text; logs as the real `do_auth` does.
pub fn do_auth(server: &Server, req: &Request) -> String {
    // The NULL checks come first in the real do_request.
    if req.login.is_empty() {
        server.log.log(true, "NULL login received");
        return "NO NULL login received".into();
    }
    if req.password.is_empty() {
        server.log.log(true, "NULL password received");
        return "NO NULL password received".into();
    }
    let mut login = req.login.clone();
    if server.concat_realm && !req.realm.is_empty() {
        login.push(b'@');
        login.extend_from_slice(&req.realm);
    }
    let outcome = if login.contains(&0) {
        Outcome::UnknownUser
    } else if req.password.contains(&0) {
        Outcome::BadPassword
    } else {
        match (
            &server.mech,
            std::str::from_utf8(&login),
            std::str::from_utf8(&req.service),
        ) {
            // rimap passes the bytes on as they came; a line break cannot be sent.
            (Mech::Rimap(_), _, _) if !rimap::sendable(&login) => Outcome::UnknownUser,
            (Mech::Rimap(_), _, _) if !rimap::sendable(&req.password) => Outcome::BadPassword,
            (Mech::Rimap(r), _, _) => {
                let reply = r.check(&login, &req.password, &|l| server.log.warn(l));
                return log_reply(server, &login, req, reply);
            }
            (Mech::Shadow, Ok(user), Ok(_)) => system::check_shadow(user, &req.password),
            (Mech::Getpwent, Ok(user), Ok(_)) => system::check_getpwent(user, &req.password),
            (Mech::Pam, Ok(user), Ok(service)) => match std::str::from_utf8(&req.password) {
                Ok(pw) => system::check_pam(service, user, pw),
                Err(_) => Outcome::Refused("PAM auth error".into()),
            },
            // Not a name any system database holds.
            _ => Outcome::UnknownUser,
        }
    };
    if let Outcome::Internal(why) = &outcome {
        server.log.log(true, why);
    }
    log_reply(server, &login, req, reply_text(&outcome))
}

/// Log a refusal as `do_auth` does (`auth failure: … [reason=TEXT AFTER "NO "]`) and
/// return the reply.
fn log_reply(server: &Server, login: &[u8], req: &Request, reply: String) -> String {
    let show = |b: &[u8]| String::from_utf8_lossy(b).replace(['\r', '\n', '\0'], "?");
    if !reply.starts_with("OK") {
        let reason = if reply.len() >= 4 {
            &reply[3..]
        } else {
            "Unknown"
        };
        server.log.log(
            false,
            &format!(
                "auth failure: [user={}] [service={}] [realm={}] [mech={}] [reason={}]",
                show(login),
                show(&req.service),
                show(&req.realm),
                server.mech.name(),
                reason
            ),
        );
    }
    reply
}

/// Create `DIR/mux` (replacing a stale socket) with the real daemon's mode 0777.
pub fn bind(run_dir: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    let path = run_dir.join("mux");
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = std::os::unix::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
    Ok(l)
}

/// Serve connections on `listener` until the future is dropped.
pub async fn serve(listener: tokio::net::UnixListener, server: Arc<Server>) {
    let slots = Arc::new(Semaphore::new(if server.workers == 0 {
        Semaphore::MAX_PERMITS
    } else {
        server.workers
    }));
    loop {
        let (mut conn, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                server.log.log(true, &format!("accept: {e}"));
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let server = server.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            let read = tokio::time::timeout(server.timeout, read_request(&mut conn)).await;
            let reply = match read {
                Err(_) | Ok(ReadResult::Truncated) => return,
                Ok(ReadResult::Refuse { reply, log }) => {
                    server.log.log(true, &log);
                    reply
                }
                Ok(ReadResult::Request(req)) => {
                    let Ok(_permit) = slots.acquire_owned().await else {
                        return;
                    };
                    let s = server.clone();
                    match tokio::task::spawn_blocking(move || do_auth(&s, &req)).await {
                        Ok(r) => r,
                        Err(_) => "NO internal mechanism failure".into(),
                    }
                }
            };
            let _ = tokio::time::timeout(server.timeout, async {
                let _ = conn.write_all(&reply_frame(&reply)).await;
                let _ = conn.shutdown().await;
            })
            .await;
            // Drain what a refused (oversized) frame left unread, briefly and boundedly,
            // so that closing does not reset the connection before the client reads `NO `.
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                let mut sink = [0u8; 4096];
                let mut total = 0usize;
                while total < 1 << 17 {
                    match conn.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n,
                    }
                }
            })
            .await;
        });
    }
}

/// Encode a request frame. Fails when a field is longer than a `u16` can count.
pub fn request_frame(
    login: &[u8],
    password: &[u8],
    service: &[u8],
    realm: &[u8],
) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for f in [login, password, service, realm] {
        let n = u16::try_from(f.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "field too long"))?;
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(f);
    }
    Ok(out)
}

/// Why a blocking query failed, worded as the real `testsaslauthd` reports it on stderr.
#[derive(Debug)]
pub enum QueryError {
    Connect(io::Error),
    Write,
    SizeRead,
    BadResponse,
    Read,
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // perror("connect() ") strips nothing: "connect() : No such file or directory".
            QueryError::Connect(e) => {
                let msg = e.to_string();
                let msg = msg.split(" (os error").next().unwrap_or(&msg);
                write!(f, "connect() : {msg}")
            }
            QueryError::Write => f.write_str("write failed"),
            QueryError::SizeRead => f.write_str("size read failed"),
            QueryError::BadResponse => f.write_str("bad response from saslauthd"),
            QueryError::Read => f.write_str("read failed"),
        }
    }
}

/// One blocking request, as libsasl and `testsaslauthd` send it; returns the reply text.
pub fn query(
    socket: &Path,
    login: &[u8],
    password: &[u8],
    service: &[u8],
    realm: &[u8],
    timeout: Option<Duration>,
) -> Result<Vec<u8>, QueryError> {
    let frame = request_frame(login, password, service, realm).map_err(|_| QueryError::Write)?;
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(QueryError::Connect)?;
    let _ = s.set_read_timeout(timeout);
    let _ = s.set_write_timeout(timeout);
    s.write_all(&frame).map_err(|_| QueryError::Write)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).map_err(|_| QueryError::SizeRead)?;
    let n = usize::from(u16::from_be_bytes(len));
    if n < 2 {
        return Err(QueryError::BadResponse);
    }
    // testsaslauthd's response buffer is 1024 bytes.
    let mut buf = vec![0u8; n.min(1024)];
    s.read_exact(&mut buf).map_err(|_| QueryError::Read)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Server {
        Server {
            mech: Mech::Shadow,
            concat_realm: false,
            workers: 1,
            timeout: Duration::from_secs(1),
            log: LogSink::Stderr,
        }
    }

    #[tokio::test]
    async fn frames() {
        let f = request_frame(b"u", b"p", b"imap", b"").expect("frame");
        let mut r = &f[..];
        match read_request(&mut r).await {
            ReadResult::Request(req) => {
                assert_eq!(req.login, b"u");
                assert_eq!(req.password, b"p");
                assert_eq!(req.service, b"imap");
                assert!(req.realm.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let mut r = &f[..5];
        assert!(matches!(read_request(&mut r).await, ReadResult::Truncated));
        let long = vec![b'x'; 257];
        let f = request_frame(b"u", &long, b"imap", b"").expect("frame");
        let mut r = &f[..];
        match read_request(&mut r).await {
            ReadResult::Refuse { reply, log } => {
                assert_eq!(reply, "NO ");
                assert_eq!(log, "password exceeded MAX_REQ_LEN: 256");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn null_fields_and_replies() {
        let s = server();
        let req = |l: &[u8], p: &[u8]| Request {
            login: l.to_vec(),
            password: p.to_vec(),
            service: b"imap".to_vec(),
            realm: vec![],
        };
        assert_eq!(do_auth(&s, &req(b"", b"x")), "NO NULL login received");
        assert_eq!(do_auth(&s, &req(b"u", b"")), "NO NULL password received");
        assert_eq!(
            do_auth(&s, &req(b"postern-no-such-user", b"x")),
            "NO Invalid username"
        );
        assert_eq!(reply_frame("OK"), b"\x00\x02OK");
    }
}
