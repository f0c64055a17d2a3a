//! Cyrus saslauthd's `rimap` mechanism ("remote IMAP"), as Cyrus SASL 2.1.28 implements it
//! in `saslauthd/auth_rimap.c`: a password is right when an IMAP server accepts it in a
//! `LOGIN` command. With Dovecot as that server, Postfix's SMTP AUTH (through saslauthd)
//! checks the same users and passwords as POP3 and IMAP, virtual users included, without
//! saslauthd reading any password file itself.
//!
//! `saslauthd -a rimap -O HOST[/SERVICE]`: `SERVICE` is a port number or a name from
//! `/etc/services` (default `imap`, 143). The host is resolved once at start-up
//! (`getaddrinfo`, IPv4 and IPv6); a host that does not resolve or a missing `-O` stops the
//! daemon (`failed to initialize mechanism rimap`, exit 1).
//!
//! One check, as the real mechanism does it (transcript against Dovecot 2.3.19's imap):
//!
//! ```text
//! (connect to each address in turn)
//! S: * OK [CAPABILITY IMAP4rev1 …] Dovecot (Debian) ready.
//! C: saslauthd LOGIN "alice" "secret"
//! S: saslauthd OK [CAPABILITY …] Logged in            (or: saslauthd NO [AUTHENTICATIONFAILED] …)
//! C: saslauthd LOGOUT                                  (then the connection is closed)
//! ```
//!
//! Login and password are sent as IMAP quoted strings, `"` and `\` escaped with `\`. Each
//! read waits at most 30 seconds and reads until a line ends holding the expected tag
//! (`*` for the greeting, `saslauthd` for the reply), at most 1000 bytes. Untagged
//! `* CAPABILITY` lines before the tagged reply are skipped; anything else is
//! "unexpected". Replies (the saslauthd reply text; the daemon logs `auth failure: …
//! [reason=…]` with what follows `NO `):
//!
//! | what happened | reply |
//! |---|---|
//! | `saslauthd OK …` | `OK remote authentication successful` |
//! | `saslauthd NO …` | `NO remote server rejected your credentials` |
//! | no address could be reached | `NO [ALERT] Couldn't contact remote authentication server` |
//! | greeting `* NO` or `* BYE` | `NO [ALERT] The remote authentication server is currently unavailable` |
//! | another greeting, `BAD`, another untagged line | `NO [ALERT] Unexpected response from remote authentication server` |
//! | read error or a reply over 1000 bytes | `NO [ALERT] error synchronizing with remote authentication server` (greeting), `NO [ALERT] saslauthd internal error` (reply) |
//!
//! Log lines (syslog `LOG_WARNING`, or standard error with `-d`) as Cyrus words them:
//! `auth_rimap: connect HOST[ADDR]/PORT: REASON`, `auth_rimap: couldn't connect to
//! HOST/PORT`, `auth_rimap: unexpected response during initial handshake: LINE`,
//! `auth_rimap: unexpected response to auth request: LINE`. The password is never logged
//! (Cyrus logs the whole LOGIN command with `-V`; Postern does not).
//!
//! Differences, on purpose: a login or password holding CR or LF is not sent (the line
//! would end inside the quoted string and let the caller add IMAP commands of its own); it
//! is refused as a NUL byte is (`NO Invalid username` / `NO Incorrect password`, see
//! [`super::saslauthd`]). `connect` gives up after 30 seconds (Cyrus waits as long as the
//! kernel does). Cyrus logs the start-up errors to syslog only, even with `-d`; Postern
//! logs them where the daemon's other lines go.
//!
//! Limits: no TLS to the IMAP server (Cyrus has none either), no SASL `AUTHENTICATE`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::config::error::strerror;
use crate::sys::net::getaddrinfo;

/// The IMAP tag of the LOGIN and LOGOUT commands.
pub const TAG: &str = "saslauthd";
/// Each network step's time limit (`NETWORK_IO_TIMEOUT`).
pub const NETWORK_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The response buffer (`RESP_LEN`).
const RESP_LEN: usize = 1000;

pub const RESP_OK: &str = "OK remote authentication successful";
pub const RESP_REJECTED: &str = "NO remote server rejected your credentials";
pub const RESP_IERROR: &str = "NO [ALERT] saslauthd internal error";
pub const RESP_UNAVAILABLE: &str =
    "NO [ALERT] The remote authentication server is currently unavailable";
pub const RESP_UNEXPECTED: &str =
    "NO [ALERT] Unexpected response from remote authentication server";
pub const RESP_NO_CONTACT: &str = "NO [ALERT] Couldn't contact remote authentication server";
pub const RESP_SYNC: &str = "NO [ALERT] error synchronizing with remote authentication server";

/// The resolved `-O HOST[/SERVICE]`.
#[derive(Debug, Clone)]
pub struct Rimap {
    /// The name as resolved (`ai_canonname`, else the name given), for log lines.
    pub host: String,
    pub addrs: Vec<SocketAddr>,
}

impl Rimap {
    /// `auth_rimap_init`: resolve `-O`. `Err` holds the log line (the daemon then logs
    /// `failed to initialize mechanism rimap` and exits 1).
    pub fn init(option: Option<&str>) -> Result<Rimap, String> {
        let Some(option) = option.filter(|o| !o.is_empty()) else {
            return Err("rimap_init: no hostname specified".into());
        };
        let (host, service) = match option.split_once('/') {
            Some((h, s)) => (h, s),
            None => (option, "imap"),
        };
        let (canon, addrs) = getaddrinfo(host, service)
            .map_err(|e| format!("auth_rimap_init: getaddrinfo {host}/{service}: {e}"))?;
        if addrs.is_empty() {
            return Err(format!("auth_rimap_init: no IP address info for {host}"));
        }
        Ok(Rimap {
            host: canon.unwrap_or_else(|| host.to_string()),
            addrs,
        })
    }

    /// The host part of `-O`, as the real daemon prints it in `-d` mode (`mech_option:`)
    /// after its start-up code cut the service off.
    pub fn option_host(option: &str) -> &str {
        option.split('/').next().unwrap_or(option)
    }

    /// One check; returns the saslauthd reply text. `warn` receives the log lines.
    pub fn check(&self, login: &[u8], password: &[u8], warn: &dyn Fn(&str)) -> String {
        let Some(mut s) = self.connect(warn) else {
            return RESP_NO_CONTACT.into();
        };
        let reply = exchange(&mut s, login, password, warn);
        drop(s);
        reply
    }

    /// Connect to each address in turn; log each failure as Cyrus does.
    fn connect(&self, warn: &dyn Fn(&str)) -> Option<TcpStream> {
        for a in &self.addrs {
            match TcpStream::connect_timeout(a, NETWORK_IO_TIMEOUT) {
                Ok(s) => return Some(s),
                Err(e) => warn(&format!(
                    "auth_rimap: connect {}[{}]/{}: {}",
                    self.host,
                    a.ip(),
                    a.port(),
                    strerror(&e)
                )),
            }
        }
        let port = self.addrs.first().map_or(0, |a| a.port());
        warn(&format!(
            "auth_rimap: couldn't connect to {}/{port}",
            self.host
        ));
        None
    }
}

/// What [`Rimap::check`] does on a connected stream: the greeting, `LOGIN`, its answer and
/// `LOGOUT`; returns the saslauthd reply text. The caller closes the stream. Generic over
/// the stream so that the fuzz target can run it over a socketpair (no loopback port, no
/// connection left in TIME_WAIT).
pub fn exchange<S: Stream>(
    s: &mut S,
    login: &[u8],
    password: &[u8],
    warn: &dyn Fn(&str),
) -> String {
    let _ = s.set_write_timeout(Some(NETWORK_IO_TIMEOUT));
    let greeting = match read_response(s, "*") {
        Ok(b) => b,
        Err(ReadError::Io(e)) => {
            warn(&format!("auth_rimap: read (banner): {}", strerror(&e)));
            return RESP_SYNC.into();
        }
        Err(ReadError::Overflow) => {
            warn("auth_rimap: read (banner): buffer overflow");
            return RESP_SYNC.into();
        }
    };
    let first = first_line(&greeting);
    if first.starts_with(b"* NO") || first.starts_with(b"* BYE") {
        return RESP_UNAVAILABLE.into();
    }
    if !first.starts_with(b"* OK") {
        warn(&format!(
            "auth_rimap: unexpected response during initial handshake: {}",
            show(first)
        ));
        return RESP_UNEXPECTED.into();
    }
    let mut cmd = Vec::with_capacity(login.len() + password.len() + 32);
    cmd.extend_from_slice(TAG.as_bytes());
    cmd.extend_from_slice(b" LOGIN ");
    cmd.extend_from_slice(&qstring(login));
    cmd.push(b' ');
    cmd.extend_from_slice(&qstring(password));
    cmd.extend_from_slice(b"\r\n");
    let sent = s.write_all(&cmd);
    // The command holds the password: do not keep it around.
    cmd.iter_mut().for_each(|b| *b = 0);
    if let Err(e) = sent {
        warn(&format!(
            "auth_rimap: writev {TAG} LOGIN : {}",
            strerror(&e)
        ));
        return RESP_IERROR.into();
    }
    let reply = match read_response(s, TAG) {
        Ok(b) => b,
        Err(ReadError::Io(e)) => {
            warn(&format!("auth_rimap: read (response): {}", strerror(&e)));
            return RESP_IERROR.into();
        }
        Err(ReadError::Overflow) => {
            warn("auth_rimap: read (response): buffer overflow");
            return RESP_IERROR.into();
        }
    };
    if let Err(e) = s.write_all(format!("{TAG} LOGOUT\r\n").as_bytes()) {
        warn(&format!(
            "auth_rimap: writev {TAG} LOGOUT: {}",
            strerror(&e)
        ));
    }
    match classify_login_reply(&reply) {
        LoginStatus::Accepted => RESP_OK.into(),
        LoginStatus::Rejected => RESP_REJECTED.into(),
        LoginStatus::Malformed(line) => {
            warn(&format!(
                "auth_rimap: unexpected response to auth request: {}",
                show(&line)
            ));
            RESP_UNEXPECTED.into()
        }
    }
}

/// A connected byte stream with time limits: the TCP connection to the IMAP server, or a
/// Unix socket (the fuzz target's socketpair).
pub trait Stream: Read + Write {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()>;
    fn set_write_timeout(&self, d: Option<Duration>) -> std::io::Result<()>;
}

impl Stream for TcpStream {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, d)
    }
    fn set_write_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_write_timeout(self, d)
    }
}

impl Stream for std::os::unix::net::UnixStream {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, d)
    }
    fn set_write_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        std::os::unix::net::UnixStream::set_write_timeout(self, d)
    }
}

/// `qstring`: an IMAP quoted string, `"` and `\` escaped.
pub fn qstring(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

/// Whether a login or password can be sent in a quoted string at all.
pub fn sendable(s: &[u8]) -> bool {
    !s.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
}

#[derive(Debug)]
enum ReadError {
    Io(std::io::Error),
    Overflow,
}

/// `read_response`: read until the data ends with `\n` and holds `tag`, within
/// [`RESP_LEN`] bytes; each read waits at most [`NETWORK_IO_TIMEOUT`]. A timeout or end of
/// file ends the reading with what came so far (Cyrus's `select` returning 0).
fn read_response<S: Stream>(s: &mut S, tag: &str) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::with_capacity(RESP_LEN);
    let start = Instant::now();
    let mut chunk = [0u8; RESP_LEN];
    loop {
        let left = NETWORK_IO_TIMEOUT.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Ok(buf);
        }
        let _ = s.set_read_timeout(Some(left));
        let room = RESP_LEN - buf.len();
        match s.read(&mut chunk[..room]) {
            Ok(0) => return Ok(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(buf);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        }
        if buf.len() >= RESP_LEN {
            return Err(ReadError::Overflow);
        }
        if buf.last() == Some(&b'\n') && memchr::memmem::find(&buf, tag.as_bytes()).is_some() {
            return Ok(buf);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum LoginStatus {
    Accepted,
    Rejected,
    /// The offending line (empty when the reply ended without a tagged line).
    Malformed(Vec<u8>),
}

/// `process_login_reply`: the first line that is not `* CAPABILITY` decides.
fn classify_login_reply(reply: &[u8]) -> LoginStatus {
    let mut rest = reply;
    loop {
        let Some(end) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
            return LoginStatus::Malformed(rest.to_vec());
        };
        let line = &rest[..end];
        if line.starts_with(format!("{TAG} OK").as_bytes()) {
            return LoginStatus::Accepted;
        }
        if line.starts_with(format!("{TAG} NO").as_bytes()) {
            return LoginStatus::Rejected;
        }
        if !line.starts_with(b"* CAPABILITY") {
            return LoginStatus::Malformed(line.to_vec());
        }
        rest = &rest[end..];
        while let Some((&b, tail)) = rest.split_first() {
            if b != b'\r' && b != b'\n' {
                break;
            }
            rest = tail;
        }
        if rest.is_empty() {
            return LoginStatus::Malformed(Vec::new());
        }
    }
}

fn first_line(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .position(|&c| c == b'\r' || c == b'\n')
        .unwrap_or(b.len());
    &b[..end]
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    #[test]
    fn quoting() {
        assert_eq!(qstring(b"alice"), b"\"alice\"");
        assert_eq!(qstring(br#"pa"ss\word"#), br#""pa\"ss\\word""#);
        assert!(sendable(b"ok pass"));
        assert!(!sendable(b"a\r\nb"));
    }

    #[test]
    fn login_replies() {
        assert_eq!(
            classify_login_reply(b"saslauthd OK [CAPABILITY IMAP4rev1] Logged in\r\n"),
            LoginStatus::Accepted
        );
        assert_eq!(
            classify_login_reply(
                b"* CAPABILITY IMAP4rev1\r\nsaslauthd NO [AUTHENTICATIONFAILED] x\r\n"
            ),
            LoginStatus::Rejected
        );
        assert_eq!(
            classify_login_reply(b"saslauthd BAD Error in IMAP command\r\n"),
            LoginStatus::Malformed(b"saslauthd BAD Error in IMAP command".to_vec())
        );
        assert_eq!(
            classify_login_reply(b"* CAPABILITY IMAP4rev1\r\n"),
            LoginStatus::Malformed(Vec::new())
        );
        assert_eq!(
            classify_login_reply(b"saslauthd OK"),
            LoginStatus::Malformed(b"saslauthd OK".to_vec())
        );
    }

    #[test]
    fn init_errors() {
        assert_eq!(
            Rimap::init(None).err().as_deref(),
            Some("rimap_init: no hostname specified")
        );
        let r = Rimap::init(Some("127.0.0.1/1143")).expect("numeric");
        assert_eq!(r.addrs, vec!["127.0.0.1:1143".parse().expect("addr")]);
        assert_eq!(Rimap::option_host("127.0.0.1/1143"), "127.0.0.1");
        let e = Rimap::init(Some("127.0.0.1/no-such-service-postern"))
            .err()
            .unwrap_or_default();
        assert!(
            e.starts_with("auth_rimap_init: getaddrinfo 127.0.0.1/no-such-service-postern: "),
            "{e}"
        );
    }

    /// A scripted IMAP peer: sends `greeting`, reads one line, answers `reply`, records
    /// what it read (until the client closes).
    fn peer(greeting: &'static str, reply: &'static str) -> (Rimap, Arc<Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            let Ok((mut c, _)) = l.accept() else { return };
            let _ = c.write_all(greeting.as_bytes());
            if reply.is_empty() {
                return;
            }
            let mut r = std::io::BufReader::new(c.try_clone().expect("clone"));
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            s2.lock().expect("lock").push(line.clone());
            let _ = c.write_all(reply.as_bytes());
            for l in r.lines().map_while(Result::ok) {
                s2.lock().expect("lock").push(l);
            }
        });
        (
            Rimap {
                host: "127.0.0.1".into(),
                addrs: vec![addr],
            },
            seen,
        )
    }

    #[test]
    fn scripted_server_answers() {
        let logs = Mutex::new(Vec::<String>::new());
        let warn = |l: &str| logs.lock().expect("lock").push(l.to_string());
        let (r, seen) = peer(
            "* OK ready\r\n",
            "* CAPABILITY IMAP4rev1\r\nsaslauthd OK Logged in\r\n",
        );
        assert_eq!(r.check(b"al\"ice", b"se\\cret", &warn), RESP_OK);
        // The LOGOUT arrives after the reply was read.
        let t = Instant::now();
        while seen.lock().expect("lock").len() < 2 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen[0], "saslauthd LOGIN \"al\\\"ice\" \"se\\\\cret\"\r\n");
        assert_eq!(seen[1], "saslauthd LOGOUT");

        let (r, _) = peer(
            "* OK ready\r\n",
            "saslauthd NO [AUTHENTICATIONFAILED] no\r\n",
        );
        assert_eq!(r.check(b"a", b"b", &warn), RESP_REJECTED);
        let (r, _) = peer("* BYE going away\r\n", "");
        assert_eq!(r.check(b"a", b"b", &warn), RESP_UNAVAILABLE);
        let (r, _) = peer("+OK POP3 here\r\n", "");
        assert_eq!(r.check(b"a", b"b", &warn), RESP_UNEXPECTED);
        let (r, _) = peer("* OK ready\r\n", "saslauthd BAD what\r\n");
        assert_eq!(r.check(b"a", b"b", &warn), RESP_UNEXPECTED);
        let logs = logs.lock().expect("lock").clone();
        assert!(
            logs.contains(
                &"auth_rimap: unexpected response during initial handshake: +OK POP3 here"
                    .to_string()
            ),
            "{logs:?}"
        );
        assert!(
            logs.contains(
                &"auth_rimap: unexpected response to auth request: saslauthd BAD what".to_string()
            ),
            "{logs:?}"
        );
        assert!(
            !logs.iter().any(|l| l.contains("cret")),
            "no password logged"
        );
    }

    #[test]
    fn refused_connection() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let r = Rimap::init(Some(&format!("127.0.0.1/{port}"))).expect("init");
        let logs = Mutex::new(Vec::<String>::new());
        let warn = |l: &str| logs.lock().expect("lock").push(l.to_string());
        assert_eq!(r.check(b"a", b"b", &warn), RESP_NO_CONTACT);
        let logs = logs.lock().expect("lock").clone();
        assert_eq!(
            logs,
            vec![
                format!("auth_rimap: connect 127.0.0.1[127.0.0.1]/{port}: Connection refused"),
                format!("auth_rimap: couldn't connect to 127.0.0.1/{port}"),
            ]
        );
    }
}
