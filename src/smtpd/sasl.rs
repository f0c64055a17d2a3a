//! The SASL hook of smtpd (Postfix `smtpd_sasl_glue.c`): which mechanisms to offer and how
//! a PLAIN/LOGIN exchange is checked. The password check itself goes to a backend; today
//! the Cyrus `pwcheck_method: saslauthd` backend (the saslauthd wire protocol: four
//! length-prefixed fields login, password, service, realm; reply `OK…`/`NO…`).
//!
//! The authentication issue completes this (Dovecot auth protocol, auxprop/sasldb, the
//! security-option matrix); the session code only sees [`Authenticator`].

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The result of one password check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResult {
    Ok,
    /// Wrong credentials.
    Fail,
    /// The backend could not answer (`454 4.7.0 Temporary authentication failure`).
    TempFail(String),
}

/// A password-checking backend.
pub trait Authenticator: Send + Sync {
    /// Mechanisms in the configured order (`mech_list`), before security filtering.
    fn mechanisms(&self) -> Vec<String>;
    /// Check `user`/`password` for `service` (`smtp`) and `realm`.
    fn check(
        &self,
        user: String,
        password: String,
        service: String,
        realm: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = AuthResult> + Send + '_>>;
}

/// Cyrus `pwcheck_method: saslauthd`.
pub struct Saslauthd {
    pub socket: PathBuf,
    pub mechs: Vec<String>,
}

fn field(buf: &mut Vec<u8>, s: &str) -> Result<(), ()> {
    let b = s.as_bytes();
    let len = u16::try_from(b.len()).map_err(|_| ())?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(b);
    Ok(())
}

/// One saslauthd request (libsasl's `saslauthd_verify_password`).
pub async fn saslauthd_check(
    socket: &std::path::Path,
    user: &str,
    password: &str,
    service: &str,
    realm: &str,
) -> AuthResult {
    let mut req = Vec::new();
    if [user, password, service, realm]
        .iter()
        .try_for_each(|f| field(&mut req, f))
        .is_err()
    {
        return AuthResult::Fail;
    }
    let attempt = async {
        let mut s = tokio::net::UnixStream::connect(socket).await?;
        s.write_all(&req).await?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let n = u16::from_be_bytes(len) as usize;
        let mut reply = vec![0u8; n.min(1024)];
        s.read_exact(&mut reply).await?;
        Ok::<Vec<u8>, std::io::Error>(reply)
    };
    match tokio::time::timeout(Duration::from_secs(30), attempt).await {
        Ok(Ok(r)) if r.starts_with(b"OK") => AuthResult::Ok,
        Ok(Ok(r)) if r.starts_with(b"NO") => AuthResult::Fail,
        Ok(Ok(_)) => AuthResult::TempFail("generic failure".into()),
        Ok(Err(_)) | Err(_) => AuthResult::TempFail("generic failure".into()),
    }
}

impl Authenticator for Saslauthd {
    fn mechanisms(&self) -> Vec<String> {
        self.mechs.clone()
    }
    fn check(
        &self,
        user: String,
        password: String,
        service: String,
        realm: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = AuthResult> + Send + '_>> {
        Box::pin(async move {
            // libsasl splits user@realm at the last '@' and sends the part after as realm.
            let (u, r) = match user.rfind('@') {
                Some(i) => (user[..i].to_string(), user[i + 1..].to_string()),
                None => (user.clone(), realm),
            };
            saslauthd_check(&self.socket, &u, &password, &service, &r).await
        })
    }
}

/// Decode a PLAIN response (RFC 4616): `authzid NUL authcid NUL passwd`.
pub fn decode_plain(b64: &str) -> Option<(String, String, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let mut parts = raw.split(|&b| b == 0);
    let authz = parts.next()?;
    let authc = parts.next()?;
    let pass = parts.next()?;
    if parts.next().is_some() || authc.is_empty() {
        return None;
    }
    Some((
        String::from_utf8(authz.to_vec()).ok()?,
        String::from_utf8(authc.to_vec()).ok()?,
        String::from_utf8(pass.to_vec()).ok()?,
    ))
}

pub fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub fn unb64(s: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()?;
    String::from_utf8(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn plain() {
        assert_eq!(
            decode_plain("AHRlc3QAdGVzdA=="),
            Some(("".into(), "test".into(), "test".into()))
        );
        assert_eq!(decode_plain("!!!"), None);
        assert_eq!(decode_plain(&b64("onlyone")), None);
    }
}
