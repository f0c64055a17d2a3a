//! A client connection as the login stage and the services see it: the socket (plain,
//! TLS, or the service's end of a TLS client the login process proxies), the input not
//! yet consumed, and the replies queued until the session next waits for input (so
//! pipelined commands are answered in one write).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};

/// Output buffer capacity a connection keeps between replies.
const WBUF_KEEP: usize = 16 * 1024;

/// The socket under a connection (shared with the SMTP server: [`crate::tls::Io`]).
pub use crate::tls::Io;

/// Why reading a line ended without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed the connection (or it broke).
    Lost,
    /// Nothing came within the idle timeout.
    Timeout,
    /// The line is longer than the limit.
    TooLong,
    /// The login process dropped the client to make room for a new one (its service's
    /// client limit reached: [`super::process::Slots`]).
    QueueFull,
}

/// Run `fut`, a wait for the client, unless the login process drops the client meanwhile
/// (then [`End::QueueFull`]). Outside a login process's client task, just `fut`.
pub(super) async fn unless_dropped<F: std::future::Future>(fut: F) -> Result<F::Output, End> {
    use std::sync::atomic::Ordering;
    let Ok(slot) = super::process::CLIENT_SLOT.try_with(Arc::clone) else {
        return Ok(fut.await);
    };
    if slot.kicked.load(Ordering::Relaxed) {
        return Err(End::QueueFull);
    }
    slot.waiting.store(true, Ordering::Relaxed);
    let r = tokio::select! {
        biased;
        _ = slot.kick.notified() => Err(End::QueueFull),
        r = fut => Ok(r),
    };
    slot.waiting.store(false, Ordering::Relaxed);
    r
}

/// One client connection.
pub struct Conn {
    pub io: Io,
    /// Input received and not yet consumed.
    pub rbuf: Vec<u8>,
    /// Replies queued.
    pub wbuf: Vec<u8>,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// TLS is spoken with the client (here or in the login process's proxy).
    pub tls: bool,
    pub session_id: String,
    /// Count bytes in and out (`%i`, `%o` of the logout formats) from now on.
    pub counting: bool,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

impl Conn {
    pub fn new(io: Io, remote: SocketAddr, local: SocketAddr) -> Conn {
        Conn {
            io,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            remote,
            local,
            tls: false,
            session_id: super::session_id(),
            counting: false,
            in_bytes: 0,
            out_bytes: 0,
        }
    }

    /// Queue `line` and CRLF.
    pub fn reply(&mut self, line: &str) {
        self.wbuf.extend_from_slice(line.as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Queue raw bytes.
    pub fn send(&mut self, data: &[u8]) {
        self.wbuf.extend_from_slice(data);
    }

    /// Write what is queued.
    pub async fn flush(&mut self) {
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

    pub fn gone(&self) -> bool {
        matches!(self.io, Io::Gone)
    }

    /// Read more input into `rbuf` (replies are flushed first); `Err` at the end of the
    /// input or after `timeout` of silence.
    pub async fn fill(&mut self, timeout: Duration) -> Result<usize, End> {
        self.flush().await;
        let mut buf = [0u8; 8192];
        let n = match unless_dropped(tokio::time::timeout(timeout, self.io.read(&mut buf))).await? {
            Err(_) => return Err(End::Timeout),
            Ok(Err(_)) | Ok(Ok(0)) => return Err(End::Lost),
            Ok(Ok(n)) => n,
        };
        self.rbuf.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    /// Read and drop input up to the end of the current line, holding no more of it than
    /// one read (a long ID command, which Dovecot parses as a stream).
    pub async fn skip_line(&mut self, timeout: Duration) -> Result<(), End> {
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.rbuf) {
                if self.counting {
                    self.in_bytes += pos as u64 + 1;
                }
                self.rbuf.drain(..=pos);
                return Ok(());
            }
            if self.counting {
                self.in_bytes += self.rbuf.len() as u64;
            }
            self.rbuf.clear();
            self.fill(timeout).await?;
        }
    }

    /// Read one line without its CRLF; a line over `limit` is [`End::TooLong`]. Replies
    /// are flushed before the session blocks.
    pub async fn read_line(&mut self, limit: usize, timeout: Duration) -> Result<Vec<u8>, End> {
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.rbuf) {
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
            self.fill(timeout).await?;
        }
    }

    /// Start TLS on a plain connection (after the reply that announced it is flushed);
    /// input read before the handshake is dropped, as RFC 2595 §3.1 asks. `false` when
    /// the handshake failed (the connection is then gone).
    pub async fn start_tls(&mut self, cfg: Arc<rustls::ServerConfig>, timeout: Duration) -> bool {
        self.flush().await;
        self.rbuf.clear();
        let up = accept_tls(&mut self.io, cfg, timeout).await;
        self.tls |= up;
        up
    }

    /// `rip=…, lip=…` and `, TLS` or `, secured` as Dovecot's login lines end.
    pub fn fields(&self, secured: bool) -> String {
        fields(self.remote, self.local, self.tls, secured)
    }
}

/// `rip=…, lip=…` and `, TLS` (`tls`) or `, secured` as Dovecot's login lines end.
pub fn fields(remote: SocketAddr, local: SocketAddr, tls: bool, secured: bool) -> String {
    let mut s = format!("rip={}, lip={}", remote.ip(), local.ip());
    if tls {
        s.push_str(", TLS");
    } else if secured {
        s.push_str(", secured");
    }
    s
}

/// Start TLS as the server on a plain connection `io` within `timeout` (unless the
/// login process drops the client meanwhile). `false` when the handshake failed (`io`
/// is then gone) or `io` was not plain (left as it was).
pub async fn accept_tls(io: &mut Io, cfg: Arc<rustls::ServerConfig>, timeout: Duration) -> bool {
    let tcp = match std::mem::replace(io, Io::Gone) {
        Io::Plain(t) => t,
        other => {
            *io = other;
            return false;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    match unless_dropped(tokio::time::timeout(timeout, acceptor.accept(tcp))).await {
        Ok(Ok(Ok(tls))) => {
            *io = Io::Tls(Box::new(tls));
            true
        }
        _ => false,
    }
}

/// Take one line, without its CRLF (or bare LF), from the front of `buf`, with the number
/// of bytes it took (for the `%i` of the logout formats). `None` while no whole line is
/// there; [`End::TooLong`] for a line over `limit`: a whole one is taken out, the start of
/// one is left (more of it may come, still too long).
pub fn take_line(buf: &mut Vec<u8>, limit: usize) -> Option<Result<(Vec<u8>, usize), End>> {
    let Some(pos) = memchr::memchr(b'\n', buf) else {
        return (buf.len() > limit).then_some(Err(End::TooLong));
    };
    let mut line: Vec<u8> = buf.drain(..=pos).collect();
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.len() > limit {
        return Some(Err(End::TooLong));
    }
    Some(Ok((line, pos + 1)))
}

/// Relay a logged-in TLS client: client → service until the client closes, service →
/// client until the service closes, which ends the connection (TLS close_notify).
pub async fn proxy(tls: Box<tokio_rustls::server::TlsStream<TcpStream>>, service: UnixStream) {
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
