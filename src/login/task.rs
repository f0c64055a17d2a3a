//! The connection task of a login stage's protocol core: the one place where the login
//! process does a pre-login client's I/O. The cores ([`super::pop3::PreLogin`],
//! [`super::imap::PreLogin`]) are state machines without I/O: fed what the client sent
//! and the outcomes of what they asked for, they answer with the next [`Action`]; [`drive`]
//! carries the actions out on the client's socket, asks the service about a login, and
//! once the service took the client, proxies a TLS client's connection.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};

use super::conn::{Io, accept_tls, proxy, unless_dropped};
use super::handoff::{LoginRequest, Verdict};
use super::process::LoginCtl;

/// The read size (one socket read at a time).
const READ_SIZE: usize = 8192;

/// What the connection task is to do next (see [`Core::next`]).
pub enum Action {
    /// Write these bytes to the client; when that fails, tell [`Core::output_lost`].
    Send(Vec<u8>),
    /// Wait this long (`auth_failure_delay`).
    Sleep(Duration),
    /// Read what comes within `timeout`; hand it to [`Core::received`], the end of the
    /// input to [`Core::input_ended`], a timeout to [`Core::timed_out`], the login
    /// process dropping the client for a newer one to [`Core::dropped`].
    Read { timeout: Duration },
    /// Start TLS as the server (implicit TLS, or after `STLS`/`STARTTLS`); hand the
    /// outcome to [`Core::tls_result`].
    StartTls {
        cfg: Arc<rustls::ServerConfig>,
        timeout: Duration,
    },
    /// Hand this login request, with the client's connection, to the service; hand its
    /// verdict to [`Core::verdict`] (`None`: no verdict came). After [`Verdict::Taken`]
    /// the client is the service's, and the core is done.
    Login(Box<LoginRequest>),
    /// The pre-login session is over: close the connection.
    Close,
}

/// A login stage's protocol core, as [`drive`] runs it.
pub trait Core {
    /// The next thing for the connection task to do.
    fn next(&mut self) -> Action;
    /// Bytes the client sent.
    fn received(&mut self, bytes: &[u8]);
    /// The client closed the connection (or it broke).
    fn input_ended(&mut self);
    /// Nothing came within the read's timeout.
    fn timed_out(&mut self);
    /// The login process dropped the client to make room for a new one.
    fn dropped(&mut self);
    /// Writing to the client failed.
    fn output_lost(&mut self);
    /// How the TLS handshake of [`Action::StartTls`] went.
    fn tls_result(&mut self, up: bool);
    /// The service's verdict on the [`Action::Login`] (`None`: none came).
    fn verdict(&mut self, verdict: Option<Verdict>);
}

/// The local address of a new client's socket (`remote` when the socket cannot tell);
/// Nagle's algorithm is turned off (replies go out as the core sends them).
pub fn local_addr(tcp: &TcpStream, remote: SocketAddr) -> SocketAddr {
    let _ = tcp.set_nodelay(true);
    tcp.local_addr().unwrap_or(remote)
}

/// Carry out `core`'s actions on the client's socket `tcp` until the core closes or the
/// service takes the client; a TLS client is then proxied from here, as Dovecot's login
/// processes do. With `shutdown`, the close shuts the connection down (a TLS
/// close_notify, a FIN) before it is dropped.
pub async fn drive<C: Core>(mut core: C, tcp: TcpStream, ctl: Arc<LoginCtl>, shutdown: bool) {
    let mut io = Io::Plain(tcp);
    loop {
        match core.next() {
            Action::Send(b) => {
                if io.write_all(&b).await.is_err() {
                    io = Io::Gone;
                    core.output_lost();
                }
            }
            Action::Sleep(d) => tokio::time::sleep(d).await,
            Action::Read { timeout } => {
                let mut buf = [0u8; READ_SIZE];
                match unless_dropped(tokio::time::timeout(timeout, io.read(&mut buf))).await {
                    Err(_) => core.dropped(),
                    Ok(Err(_)) => core.timed_out(),
                    Ok(Ok(Err(_)) | Ok(Ok(0))) => core.input_ended(),
                    Ok(Ok(Ok(n))) => core.received(&buf[..n]),
                }
            }
            Action::StartTls { cfg, timeout } => {
                let up = accept_tls(&mut io, cfg, timeout).await;
                core.tls_result(up);
            }
            Action::Login(req) => {
                let Some((fd, keep)) = handed_fd(&io) else {
                    core.output_lost();
                    continue;
                };
                let verdict = ctl.ask(*req, fd).await;
                if !matches!(verdict, Some(Verdict::Taken)) {
                    core.verdict(verdict);
                    continue;
                }
                // The service has the client: a TLS client is proxied from here on.
                drop(core);
                if let (Some(service_end), Io::Tls(tls)) = (keep, io) {
                    proxy(tls, service_end).await;
                }
                return;
            }
            Action::Close => {
                if shutdown {
                    io.shutdown().await;
                }
                return;
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
