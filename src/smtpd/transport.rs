//! What an SMTP session reads from and writes to: the byte stream under the connection
//! task ([`super::session::drive`]), which carries out what the protocol core
//! ([`super::session::Session`], a state machine that owns the replies, the transaction
//! and the log lines but does no I/O) asks for. A client socket (plain or after STARTTLS)
//! is one [`Transport`] ([`crate::tls::Io`], shared with POP3 and IMAP); [`Script`] is
//! another, which feeds recorded client input and collects the replies, so that the
//! recorded Postfix transcripts are replayed against the same core in unit tests without a
//! server or a socket; `sendmail -bs` drives the core over standard input and output.

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::tls::Io;

/// The protocol and cipher of a TLS session just started (for the log line and the
/// `Received:` header).
pub struct TlsUp {
    pub protocol: String,
    pub cipher: String,
}

/// Why STARTTLS did not start TLS.
pub enum TlsFail {
    /// The handshake did not finish within `smtpd_starttls_timeout`.
    Timeout,
    /// The handshake failed.
    Handshake,
    /// This transport carries no TLS (already TLS, gone, or not a socket).
    Unavailable,
}

/// A byte stream under an SMTP session.
pub trait Transport: Send + 'static {
    /// Read some bytes; 0 at the end of the input.
    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
    /// Write all of `b`.
    fn write_all(&mut self, b: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Give up the stream after a write error: later reads see its end, writes go nowhere.
    fn close(&mut self);
    /// Start TLS as the server (STARTTLS), bounded by `timeout`.
    fn start_tls(
        &mut self,
        cfg: Arc<rustls::ServerConfig>,
        timeout: Duration,
    ) -> impl Future<Output = Result<TlsUp, TlsFail>> + Send;
}

impl Transport for Io {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Io::read(self, buf).await
    }

    async fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        Io::write_all(self, b).await
    }

    fn close(&mut self) {
        *self = Io::Gone;
    }

    async fn start_tls(
        &mut self,
        cfg: Arc<rustls::ServerConfig>,
        timeout: Duration,
    ) -> Result<TlsUp, TlsFail> {
        let tcp = match std::mem::replace(self, Io::Gone) {
            Io::Plain(t) => t,
            other => {
                *self = other;
                return Err(TlsFail::Unavailable);
            }
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        // smtpd_starttls_timeout bounds the whole handshake (a client that sends half a
        // ClientHello and stalls is dropped then), as Postfix's tls_bio does.
        match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                let (_, conn) = tls.get_ref();
                let protocol = conn
                    .protocol_version()
                    .map(|v| {
                        format!("{v:?}")
                            .replace("TLSv1_", "TLSv1.")
                            .replace("TLSv1.0", "TLSv1")
                    })
                    .unwrap_or_else(|| "TLS".into());
                let cipher = conn
                    .negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite()))
                    .unwrap_or_default();
                *self = Io::Tls(Box::new(tls));
                Ok(TlsUp { protocol, cipher })
            }
            Err(_) => Err(TlsFail::Timeout),
            Ok(Err(_)) => Err(TlsFail::Handshake),
        }
    }
}

/// Recorded client input, handed to the session one recorded write per read (so that a
/// pipelined group arrives as the client sent it), and the session's output collected in
/// [`Script::output`]. The end of the script is the client closing the connection.
pub struct Script {
    writes: std::collections::VecDeque<Vec<u8>>,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Script {
    /// A script of client writes; the returned buffer receives everything the session
    /// writes.
    pub fn new(writes: Vec<Vec<u8>>) -> (Script, Arc<Mutex<Vec<u8>>>) {
        let out = Arc::new(Mutex::new(Vec::new()));
        (
            Script {
                writes: writes.into(),
                out: out.clone(),
            },
            out,
        )
    }
}

impl Transport for Script {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(mut w) = self.writes.pop_front() else {
            return Ok(0);
        };
        let n = w.len().min(buf.len());
        buf[..n].copy_from_slice(&w[..n]);
        if n < w.len() {
            w.drain(..n);
            self.writes.push_front(w);
        }
        Ok(n)
    }

    async fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        self.out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(())
    }

    fn close(&mut self) {
        self.writes.clear();
    }

    async fn start_tls(
        &mut self,
        _cfg: Arc<rustls::ServerConfig>,
        _timeout: Duration,
    ) -> Result<TlsUp, TlsFail> {
        Err(TlsFail::Unavailable)
    }
}
