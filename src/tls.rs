//! The one TLS server setup shared by the SMTP and POP3 servers (STYLE.md: one listener/TLS
//! setup): a rustls server configuration (ring provider, TLS 1.2 and 1.3, no client
//! certificates) from PEM text holding the certificate chain and the private key; and the
//! one client-socket type ([`Io`]: plain, TLS, proxied by a login process, gone) that the
//! SMTP, POP3 and IMAP sessions read and write.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Build a server configuration from PEM certificates (leaf first, then the chain) and a PEM
/// private key. `what` names the source in errors (`smtpd_tls_cert_file`, `ssl_cert`).
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
) -> anyhow::Result<rustls::ServerConfig> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    anyhow::ensure!(!certs.is_empty(), "{what}: no certificate found");
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| anyhow::anyhow!("{what}: private key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?)
}

/// The socket under a connection.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The service's end of a TLS client: the login process decrypts and proxies.
    Proxied(UnixStream),
    Gone,
}

impl Io {
    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf).await,
            Io::Tls(s) => s.read(buf).await,
            Io::Proxied(s) => s.read(buf).await,
            Io::Gone => Ok(0),
        }
    }

    pub async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
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

    /// Close the sending side (a TLS close_notify, a FIN).
    pub async fn shutdown(&mut self) {
        let _ = match self {
            Io::Plain(s) => s.shutdown().await,
            Io::Tls(s) => s.shutdown().await,
            Io::Proxied(s) => s.shutdown().await,
            Io::Gone => Ok(()),
        };
    }

    /// The service's side of a client handed over by a login process: the client's TCP
    /// socket, or (`tls`) the login process's proxy of a TLS client.
    pub fn from_handed(fd: std::os::fd::OwnedFd, tls: bool) -> std::io::Result<Io> {
        if tls {
            let u = std::os::unix::net::UnixStream::from(fd);
            u.set_nonblocking(true)?;
            UnixStream::from_std(u).map(Io::Proxied)
        } else {
            let t = std::net::TcpStream::from(fd);
            t.set_nonblocking(true)?;
            TcpStream::from_std(t).map(Io::Plain)
        }
    }
}
