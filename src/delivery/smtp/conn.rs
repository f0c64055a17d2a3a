//! One TCP connection to an SMTP server, plain or after STARTTLS, with a bounded line
//! reader. Blocking std sockets: every read and write runs under a deadline set on the
//! socket (Postfix's per-stage `smtp_*_timeout`).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::error::strerror;

/// How an I/O operation failed, in Postfix's two exception classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoFail {
    /// `SMTP_ERR_EOF`: "lost connection with X while …".
    Eof,
    /// `SMTP_ERR_TIME`: "conversation with X timed out while …".
    Timeout,
}

impl From<io::Error> for IoFail {
    fn from(e: io::Error) -> IoFail {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => IoFail::Timeout,
            _ => IoFail::Eof,
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Closed,
}

/// A connection with its read buffer.
pub struct Conn {
    stream: Stream,
    /// A second handle on the socket, to set timeouts while TLS owns the stream.
    sock: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

/// Connect within `timeout`, from `bind` when given. A source address that cannot be bound
/// is reported through `warn` (Postfix: `smtp_connect_addr: bind ADDR: ERROR`) and the
/// connection is made without it (`smtp_bind_address_enforce = no`).
pub fn connect(
    addr: SocketAddr,
    bind: Option<IpAddr>,
    timeout: Duration,
    warn: &mut dyn FnMut(String),
) -> io::Result<Conn> {
    let timeout = timeout.max(Duration::from_millis(1));
    let sock = match bind {
        None => TcpStream::connect_timeout(&addr, timeout)?,
        Some(local) => {
            // std cannot bind before connecting; tokio's TcpSocket can. Its runtime runs on
            // a thread of its own, so that a caller inside another runtime does not panic.
            let r = std::thread::scope(|sc| {
                sc.spawn(|| bind_connect(addr, local, timeout))
                    .join()
                    .unwrap_or_else(|_| {
                        Err(BindFail::Connect(io::Error::other("connect thread failed")))
                    })
            });
            match r {
                Ok(s) => s,
                Err(BindFail::Connect(e)) => return Err(e),
                Err(BindFail::Bind(e)) => {
                    warn(format!("smtp_connect_addr: bind {local}: {}", strerror(&e)));
                    TcpStream::connect_timeout(&addr, timeout)?
                }
            }
        }
    };
    sock.set_nonblocking(false)?;
    let _ = sock.set_nodelay(true);
    let handle = sock.try_clone()?;
    Ok(Conn {
        stream: Stream::Plain(sock),
        sock: handle,
        buf: Vec::new(),
        pos: 0,
    })
}

enum BindFail {
    Bind(io::Error),
    Connect(io::Error),
}

fn bind_connect(addr: SocketAddr, local: IpAddr, timeout: Duration) -> Result<TcpStream, BindFail> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BindFail::Connect)?;
    rt.block_on(async {
        let s = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(BindFail::Connect)?;
        s.bind(SocketAddr::new(local, 0)).map_err(BindFail::Bind)?;
        match tokio::time::timeout(timeout, s.connect(addr)).await {
            Ok(Ok(t)) => t.into_std().map_err(BindFail::Connect),
            Ok(Err(e)) => Err(BindFail::Connect(e)),
            Err(_) => Err(BindFail::Connect(io::Error::from(io::ErrorKind::TimedOut))),
        }
    })
}

impl Conn {
    fn set_deadline(&self, deadline: Instant) -> Result<(), IoFail> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(IoFail::Timeout);
        }
        self.sock.set_read_timeout(Some(left))?;
        self.sock.set_write_timeout(Some(left))?;
        Ok(())
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), IoFail> {
        self.set_deadline(deadline)?;
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut tmp = [0u8; 8192];
        let n = match &mut self.stream {
            Stream::Plain(s) => s.read(&mut tmp),
            Stream::Tls(s) => s.read(&mut tmp),
            Stream::Closed => return Err(IoFail::Eof),
        }
        .map_err(IoFail::from)?;
        if n == 0 {
            return Err(IoFail::Eof);
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    /// Bytes received but not yet read (after STARTTLS these must not exist).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// One line without its CR LF: at most `limit` bytes are kept, the rest of an overlong
    /// line is read and dropped (`complete` is then false).
    pub fn read_line(
        &mut self,
        limit: usize,
        deadline: Instant,
    ) -> Result<(Vec<u8>, bool), IoFail> {
        let mut line = Vec::new();
        let mut complete = true;
        loop {
            if self.pos >= self.buf.len() {
                self.fill(deadline)?;
            }
            let avail = &self.buf[self.pos..];
            let (chunk, found) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (&avail[..i], Some(i)),
                None => (avail, None),
            };
            let room = limit.saturating_sub(line.len());
            if chunk.len() > room {
                complete = false;
            }
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            match found {
                Some(i) => {
                    self.pos += i + 1;
                    break;
                }
                None => self.pos = self.buf.len(),
            }
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok((line, complete))
    }

    /// Write all of `data` within `timeout`.
    pub fn write_all(&mut self, data: &[u8], timeout: Duration) -> Result<(), IoFail> {
        self.set_deadline(Instant::now() + timeout)?;
        let r = match &mut self.stream {
            Stream::Plain(s) => s.write_all(data).and_then(|_| s.flush()),
            Stream::Tls(s) => s.write_all(data).and_then(|_| s.flush()),
            Stream::Closed => return Err(IoFail::Eof),
        };
        r.map_err(IoFail::from)
    }

    /// Write under an absolute deadline (message body: the whole transfer).
    pub fn write_until(&mut self, data: &[u8], deadline: Instant) -> Result<(), IoFail> {
        self.set_deadline(deadline)?;
        let r = match &mut self.stream {
            Stream::Plain(s) => s.write_all(data),
            Stream::Tls(s) => s.write_all(data),
            Stream::Closed => return Err(IoFail::Eof),
        };
        r.map_err(IoFail::from)
    }

    pub fn flush(&mut self, timeout: Duration) -> Result<(), IoFail> {
        self.write_all(&[], timeout)
    }

    /// Turn on TLS (after the server's 220 to STARTTLS). On error the connection is closed:
    /// the peer is in an unknown state.
    pub fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
        timeout: Duration,
    ) -> Result<(), String> {
        let sock = match std::mem::replace(&mut self.stream, Stream::Closed) {
            Stream::Plain(s) => s,
            other => {
                self.stream = other;
                return Err("TLS already active".into());
            }
        };
        self.buf.clear();
        self.pos = 0;
        let deadline = Instant::now() + timeout;
        self.set_deadline(deadline)
            .map_err(|_| "timeout".to_string())?;
        let mut tls = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let mut sock = sock;
        while tls.is_handshaking() {
            if Instant::now() >= deadline {
                return Err("timeout".into());
            }
            tls.complete_io(&mut sock).map_err(|e| e.to_string())?;
        }
        self.stream = Stream::Tls(Box::new(rustls::StreamOwned::new(tls, sock)));
        Ok(())
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// The negotiated TLS version and cipher, for the `Trusted/Untrusted TLS connection` line.
    pub fn tls_summary(&self) -> Option<(String, String)> {
        match &self.stream {
            Stream::Tls(s) => {
                let v = s
                    .conn
                    .protocol_version()
                    .map(|v| match v {
                        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
                        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
                        other => format!("{other:?}"),
                    })
                    .unwrap_or_default();
                let c = s
                    .conn
                    .negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite()))
                    .unwrap_or_default();
                Some((v, c))
            }
            _ => None,
        }
    }

    /// Close without a word (after a lost connection or a TLS failure).
    pub fn close(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        self.stream = Stream::Closed;
    }
}
