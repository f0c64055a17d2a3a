//! One TCP connection to an SMTP server, plain or after STARTTLS, with a bounded line
//! reader. Blocking std sockets: every read and write runs under a deadline (Postfix's
//! per-stage `smtp_*_timeout`), enforced with the socket's receive and send timeouts.
//!
//! The timeouts are not set before every read and write (that was two `setsockopt` calls
//! per I/O operation, twelve per relayed message): the value on the socket is remembered,
//! and it is lowered when it is longer than what is left of the deadline (no system call
//! may then block past the deadline) or raised when it is shorter than both one second and
//! half of what is left. A shorter timeout that expires before the deadline is not an
//! error: the call is retried with the timeout set to what is left. So a transaction whose
//! stages have the same or longer timeouts than the last one set sets none.

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
    /// Bytes read from the socket: `buf[pos..end]` are not consumed yet. Allocated once
    /// per connection and read into directly.
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// The receive timeout on the socket (`None`: none set yet, a read blocks for ever).
    rcv_timeout: Option<Duration>,
    /// The send timeout on the socket.
    snd_timeout: Option<Duration>,
}

/// The read buffer's size (one `read` at most).
const READ_BUF: usize = 8192;

#[derive(Clone, Copy)]
enum Dir {
    Read,
    Write,
}

/// An error after which the call is tried again once the deadline allows: the socket's
/// timeout expired (it may be shorter than the deadline) or a signal came.
fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// The socket's timeout `cur` may stay for an operation with `left` to its deadline: no
/// longer than that, and not so short that an idle peer means frequent wake-ups.
fn timeout_fits(cur: Option<Duration>, left: Duration) -> bool {
    const SHORT: Duration = Duration::from_secs(1);
    cur.is_some_and(|c| c <= left && (c >= SHORT || c * 2 >= left))
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
        buf: vec![0; READ_BUF].into_boxed_slice(),
        pos: 0,
        end: 0,
        rcv_timeout: None,
        snd_timeout: None,
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
    /// Make the socket's `dir` timeout fit the time left to `deadline` ([`timeout_fits`]);
    /// a deadline that has passed is a timeout.
    fn arm(&mut self, dir: Dir, deadline: Instant) -> Result<(), IoFail> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(IoFail::Timeout);
        }
        let cur = match dir {
            Dir::Read => &mut self.rcv_timeout,
            Dir::Write => &mut self.snd_timeout,
        };
        if !timeout_fits(*cur, left) {
            // Forget the old value first: after a failed call it is not known.
            *cur = None;
            match dir {
                Dir::Read => self.sock.set_read_timeout(Some(left))?,
                Dir::Write => self.sock.set_write_timeout(Some(left))?,
            }
            *cur = Some(left);
        }
        Ok(())
    }

    /// Both timeouts exactly to what is left of `deadline` (the TLS handshake, whose
    /// reads and writes are not retried here).
    fn arm_exact(&mut self, deadline: Instant) -> Result<(), IoFail> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(IoFail::Timeout);
        }
        self.rcv_timeout = None;
        self.snd_timeout = None;
        self.sock.set_read_timeout(Some(left))?;
        self.sock.set_write_timeout(Some(left))?;
        self.rcv_timeout = Some(left);
        self.snd_timeout = Some(left);
        Ok(())
    }

    /// Read more once everything read before is consumed.
    fn fill(&mut self, deadline: Instant) -> Result<(), IoFail> {
        debug_assert!(self.pos >= self.end);
        self.pos = 0;
        self.end = 0;
        let n = loop {
            self.arm(Dir::Read, deadline)?;
            let r = match &mut self.stream {
                Stream::Plain(s) => s.read(&mut self.buf),
                Stream::Tls(s) => s.read(&mut self.buf),
                Stream::Closed => return Err(IoFail::Eof),
            };
            match r {
                Ok(n) => break n,
                Err(e) if retry(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            return Err(IoFail::Eof);
        }
        self.end = n;
        Ok(())
    }

    /// Write all of `data`, then flush (TLS: send the records), before `deadline`. A
    /// failed `write` consumed nothing (std's and rustls' `Write`), so one that timed out
    /// early is simply called again.
    fn write_by(&mut self, data: &[u8], deadline: Instant) -> Result<(), IoFail> {
        let mut rest = data;
        while !rest.is_empty() {
            self.arm(Dir::Write, deadline)?;
            let r = match &mut self.stream {
                Stream::Plain(s) => s.write(rest),
                Stream::Tls(s) => s.write(rest),
                Stream::Closed => return Err(IoFail::Eof),
            };
            match r {
                Ok(0) => return Err(IoFail::Eof),
                Ok(n) => rest = &rest[n..],
                Err(e) if retry(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if let Stream::Closed = self.stream {
            return Err(IoFail::Eof);
        }
        // A plain TcpStream has nothing to flush.
        while let Stream::Tls(_) = self.stream {
            self.arm(Dir::Write, deadline)?;
            let Stream::Tls(s) = &mut self.stream else {
                break;
            };
            match s.flush() {
                Ok(()) => break,
                Err(e) if retry(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Bytes received but not yet read (after STARTTLS these must not exist).
    pub fn pending(&self) -> usize {
        self.end - self.pos
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
            if self.pos >= self.end {
                self.fill(deadline)?;
            }
            let avail = &self.buf[self.pos..self.end];
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
                None => self.pos = self.end,
            }
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok((line, complete))
    }

    /// Write all of `data` within `timeout`.
    pub fn write_all(&mut self, data: &[u8], timeout: Duration) -> Result<(), IoFail> {
        self.write_by(data, Instant::now() + timeout)
    }

    /// Write under an absolute deadline (message body: the whole transfer).
    pub fn write_until(&mut self, data: &[u8], deadline: Instant) -> Result<(), IoFail> {
        self.write_by(data, deadline)
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
        self.pos = 0;
        self.end = 0;
        let deadline = Instant::now() + timeout;
        self.arm_exact(deadline)
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
