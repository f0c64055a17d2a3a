//! The SMTP client's TLS side: `smtp_tls_security_level` and its legacy spellings, and the
//! rustls client configurations for each level.
//!
//! As in Postfix, `may` and `encrypt` do not authenticate the server (any certificate is
//! accepted: opportunistic and mandatory-but-unauthenticated encryption); `verify` and
//! `secure` check the chain against `smtp_tls_CAfile`/`smtp_tls_CApath` (or the system
//! bundle when neither is set) and the name (`verify`: the MX host name; `secure`: the
//! next-hop domain). No SNI is sent, as Postfix sends none while `smtp_tls_servername` is
//! empty. XXX: `dane`/`dane-only` are treated as `may`/`encrypt` (no DNSSEC/TLSA here),
//! `fingerprint` as `encrypt`; `smtp_tls_policy_maps`, client certificates, protocol and
//! cipher settings are not read.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Postfix's TLS security levels, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsLevel {
    None,
    May,
    Encrypt,
    Verify,
    Secure,
}

impl TlsLevel {
    /// `smtp_tls_security_level`, else the legacy `smtp_enforce_tls`/`smtp_use_tls`.
    pub fn from_params(
        level: &str,
        use_tls: bool,
        enforce_tls: bool,
        enforce_peername: bool,
    ) -> Result<TlsLevel, String> {
        match level.trim().to_ascii_lowercase().as_str() {
            "" => Ok(if enforce_tls {
                if enforce_peername {
                    TlsLevel::Verify
                } else {
                    TlsLevel::Encrypt
                }
            } else if use_tls {
                TlsLevel::May
            } else {
                TlsLevel::None
            }),
            "none" => Ok(TlsLevel::None),
            "may" | "dane" => Ok(TlsLevel::May),
            "encrypt" | "dane-only" | "fingerprint" => Ok(TlsLevel::Encrypt),
            "verify" => Ok(TlsLevel::Verify),
            "secure" => Ok(TlsLevel::Secure),
            other => Err(other.to_string()),
        }
    }

    /// TLS_REQUIRED(): encrypt and above.
    pub fn required(self) -> bool {
        self >= TlsLevel::Encrypt
    }

    /// TLS_MUST_MATCH(): the certificate is checked.
    pub fn must_match(self) -> bool {
        self >= TlsLevel::Verify
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any server certificate (levels `may` and `encrypt`), still checking the
/// handshake signatures so that the session keys are the certificate holder's.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A configuration that encrypts without authenticating the server.
pub fn unauthenticated() -> Result<Arc<rustls::ClientConfig>, String> {
    let p = provider();
    let mut c = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(p)))
        .with_no_client_auth();
    c.enable_sni = false;
    Ok(Arc::new(c))
}

/// The system CA bundles tried when neither `smtp_tls_CAfile` nor `smtp_tls_CApath` is set.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// A configuration that verifies the chain against these trust anchors.
pub fn verifying(cafile: &str, capath: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    if !cafile.is_empty() {
        files.push(cafile.into());
    }
    if !capath.is_empty()
        && let Ok(rd) = std::fs::read_dir(capath)
    {
        for e in rd.flatten() {
            files.push(e.path());
        }
    }
    if cafile.is_empty() && capath.is_empty() {
        files.extend(
            SYSTEM_BUNDLES
                .iter()
                .map(std::path::PathBuf::from)
                .filter(|p| p.exists())
                .take(1),
        );
    }
    for f in &files {
        let Ok(pem) = std::fs::read(f) else {
            if !cafile.is_empty() && f.as_os_str() == cafile {
                return Err(format!("cannot read {}", f.display()));
            }
            continue;
        };
        for c in CertificateDer::pem_slice_iter(&pem).flatten() {
            let _ = roots.add(c);
        }
    }
    if roots.is_empty() {
        return Err("no trusted CA certificates found".into());
    }
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.enable_sni = false;
    Ok(Arc::new(c))
}

/// The name rustls checks: `verify` the MX host, `secure` the next-hop domain.
pub fn server_name(name: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(name.to_string()).ok()
}
