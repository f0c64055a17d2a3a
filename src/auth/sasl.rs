//! The SASL hook of smtpd (Postfix `smtpd_sasl_glue.c`): which mechanisms to offer and how
//! a PLAIN/LOGIN exchange is checked. The password check itself goes to a backend; today
//! the Cyrus `pwcheck_method: saslauthd` backend (the saslauthd wire protocol: four
//! length-prefixed fields login, password, service, realm; reply `OK…`/`NO…`).
//!
//! The saslauthd client is libsasl2 2.1.28's (`lib/checkpw.c` `saslauthd_verify_password`):
//! a reply that does not start with `OK` is a failed password; a socket that cannot be
//! reached, a write or read that fails, a reply shorter than two bytes or a request too
//! large is libsasl's `SASL_FAIL`, which Postfix answers `454 4.7.0 Temporary
//! authentication failure: generic failure`. What libsasl then logs through Postfix
//! (`warning: SASL authentication failure: cannot connect to saslauthd server: Permission
//! denied`, and for PLAIN the plugin's `Password verification failed`) is logged the same
//! way, followed by one line of Postern's that names the socket and, for a permission
//! problem, the directory's owner and mode and the user smtpd runs as (Debian's
//! `/var/run/saslauthd` is root:sasl 0710). Checked against the real Postfix 3.7.11 with
//! Debian's libsasl2 (`tests/smtpd_auth.rs`).
//!
//! The authentication issue completes this (Dovecot auth protocol, auxprop/sasldb, the
//! security-option matrix); the session code only sees [`Authenticator`].
//!
//! It lives in `auth`, below smtpd, so that the Dovecot client ([`super::dovecot_proto`])
//! implements the same trait without importing smtpd; the request frame and the ways an
//! exchange breaks off are [`super::saslauthd`]'s, shared with `testsaslauthd`'s blocking
//! client (this one is async, with one deadline for the whole exchange and libsasl's
//! 1023-byte reply buffer).

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::saslauthd::QueryError as Broke;

/// The result of one password check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResult {
    Ok,
    /// Wrong credentials.
    Fail,
    /// The backend could not answer (`454 4.7.0 Temporary authentication failure:
    /// REASON`). `notes` are the lines the SASL library logs first, each after `SASL
    /// authentication failure: `.
    TempFail {
        reason: String,
        notes: Vec<String>,
    },
}

impl AuthResult {
    /// A temporary failure with nothing logged before it.
    pub fn temp(reason: &str) -> AuthResult {
        AuthResult::TempFail {
            reason: reason.to_string(),
            notes: Vec::new(),
        }
    }
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
    /// Whether a failed PLAIN check is logged as Cyrus's plain plugin logs it (`SASL
    /// authentication failure: Password verification failed`): true for the Cyrus
    /// backends, false for Dovecot's.
    fn cyrus_plain_note(&self) -> bool {
        false
    }
}

/// Cyrus `pwcheck_method: saslauthd`.
pub struct Saslauthd {
    pub socket: PathBuf,
    pub mechs: Vec<String>,
}

/// How a saslauthd exchange broke off ([`super::saslauthd::QueryError`], shared with
/// `testsaslauthd`'s client), in libsasl's words.
fn libsasl_text(e: &Broke) -> String {
    match e {
        Broke::Connect(e) => format!(
            "cannot connect to saslauthd server: {}",
            crate::config::error::strerror(e)
        ),
        Broke::Write => "write failed".into(),
        Broke::SizeRead => "size read failed".into(),
        Broke::BadResponse => "bad response from saslauthd".into(),
        Broke::Read => "read failed".into(),
    }
}

/// Postern's line after libsasl's: the socket, and why it cannot be reached.
fn socket_note(socket: &std::path::Path, e: &std::io::Error) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut note = format!(
        "saslauthd socket {}: {}",
        socket.display(),
        crate::config::error::strerror(e)
    );
    let dir = socket.parent().unwrap_or(std::path::Path::new("/"));
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map_or_else(|| nix::unistd::geteuid().to_string(), |u| u.name);
            if let Ok(m) = std::fs::metadata(dir) {
                let owner = nix::unistd::User::from_uid(m.uid().into())
                    .ok()
                    .flatten()
                    .map_or_else(|| m.uid().to_string(), |u| u.name);
                let group = nix::unistd::Group::from_gid(m.gid().into())
                    .ok()
                    .flatten()
                    .map_or_else(|| m.gid().to_string(), |g| g.name);
                note.push_str(&format!(
                    " ({} is {owner}:{group} mode {:04o}; smtpd runs as {me}: add {me} to group {group}, as Debian's saslauthd expects)",
                    dir.display(),
                    m.mode() & 0o7777
                ));
            } else {
                note.push_str(&format!(" (smtpd runs as {me})"));
            }
        }
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            note.push_str(" (is saslauthd running, with -m ");
            note.push_str(&dir.display().to_string());
            note.push_str("? saslauthd_path in the SASL config names another socket)");
        }
        _ => {}
    }
    note
}

/// One saslauthd request (libsasl's `saslauthd_verify_password`).
pub async fn saslauthd_check(
    socket: &std::path::Path,
    user: &str,
    password: &str,
    service: &str,
    realm: &str,
) -> AuthResult {
    let Ok(req) = super::saslauthd::request_frame(
        user.as_bytes(),
        password.as_bytes(),
        service.as_bytes(),
        realm.as_bytes(),
    ) else {
        return AuthResult::TempFail {
            reason: "generic failure".into(),
            notes: vec!["saslauthd request too large".into()],
        };
    };
    // libsasl waits without limit; Postern gives the whole exchange 30 s, and a wait
    // that runs out counts as the step it was in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let attempt = async {
        let mut s = match tokio::time::timeout_at(deadline, tokio::net::UnixStream::connect(socket))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Broke::Connect(e)),
            Err(_) => return Err(Broke::Connect(std::io::ErrorKind::TimedOut.into())),
        };
        if !matches!(
            tokio::time::timeout_at(deadline, s.write_all(&req)).await,
            Ok(Ok(()))
        ) {
            return Err(Broke::Write);
        }
        let mut len = [0u8; 2];
        if !matches!(
            tokio::time::timeout_at(deadline, s.read_exact(&mut len)).await,
            Ok(Ok(_))
        ) {
            return Err(Broke::SizeRead);
        }
        let n = u16::from_be_bytes(len) as usize;
        if n < 2 {
            return Err(Broke::BadResponse);
        }
        // libsasl's response buffer holds 1023 bytes.
        let mut reply = vec![0u8; n.min(1023)];
        if !matches!(
            tokio::time::timeout_at(deadline, s.read_exact(&mut reply)).await,
            Ok(Ok(_))
        ) {
            return Err(Broke::Read);
        }
        Ok(reply)
    };
    match attempt.await {
        Ok(r) if r.starts_with(b"OK") => AuthResult::Ok,
        // libsasl: anything but OK is a failed password (SASL_BADAUTH).
        Ok(_) => AuthResult::Fail,
        Err(b) => {
            let mut notes = vec![libsasl_text(&b)];
            if let Broke::Connect(e) = &b {
                notes.push(socket_note(socket, e));
            }
            AuthResult::TempFail {
                reason: "generic failure".into(),
                notes,
            }
        }
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
    fn cyrus_plain_note(&self) -> bool {
        true
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
