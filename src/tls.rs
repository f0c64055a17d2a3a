//! The one TLS server setup shared by the SMTP and POP3 servers (STYLE.md: one listener/TLS
//! setup): a rustls server configuration (ring provider, TLS 1.2 and 1.3, no client
//! certificates) from PEM text holding the certificate chain and the private key.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
