//! Password checks: the `auth` stage of `DESIGN.md` §2.
//!
//! * [`system`]: the system backends shared by Cyrus saslauthd's mechanisms and Dovecot's
//!   passdbs: `shadow` (crypt(3) hashes from `/etc/shadow` through libxcrypt, [`crypt`]),
//!   `getpwent` (the hash in the passwd entry), `pam` (the PAM service named by the
//!   request).
//! * [`rimap`]: saslauthd's `rimap` mechanism, a password checked by an IMAP `LOGIN` at
//!   another server (Dovecot's imap), as Cyrus's `auth_rimap.c`.
//! * [`saslauthd`]: the saslauthd daemon's wire protocol (server and a blocking client for
//!   `testsaslauthd`), as Cyrus SASL 2.1.28's `saslauthd/ipc_unix.c` speaks it.
//! * [`dovecot`]: Dovecot's passdb/userdb backends and password schemes, read from
//!   `dovecot.conf` (`passdb`/`userdb` sections, `auth_username_format`,
//!   `auth_failure_delay`, `auth_mechanisms`).
//! * [`dovecot_proto`]: Dovecot's auth client protocol v1.2 (the one Postfix's
//!   `smtpd_sasl_type = dovecot` speaks): a server on a unix socket and a client.
//!
//! Secrets: no password is ever logged or put in an error; where Postern compares a
//! secret itself (plaintext schemes, hash outputs) it uses [`ct_eq`].
//!
//! Not here: Cyrus `sasldb` (`/etc/sasldb2`). It is a Berkeley DB hash file and no
//! maintained Rust reader of that format exists (the Berkeley DB crates bind libdb, which
//! Debian and Fedora are phasing out, and none reads sasldb2 records); `saslauthd -a
//! sasldb` therefore refuses to start, and `auxprop_plugin: sasldb` is left to a later
//! issue.

pub mod crypt;
pub mod dovecot;
pub mod dovecot_proto;
pub mod rimap;
pub mod sasl;
pub mod saslauthd;
pub mod system;

/// What one password check found. The variants keep the distinctions saslauthd's replies
/// and Dovecot's log lines make; callers must not tell a client more than "failed".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// No such user (saslauthd `NO Invalid username`).
    UnknownUser,
    /// Wrong password, or a locked account (saslauthd `NO Incorrect password`: a locked
    /// account is not revealed before the password is known to be right).
    BadPassword,
    /// Refused for a reason that is not the password: `Account expired`, `Password
    /// expired`, `PAM auth error`, `PAM acct error`. The text is saslauthd's reply after `NO `.
    Refused(String),
    /// The backend could not answer (unreadable file, PAM could not start). The text is
    /// for the log only; it never holds the password.
    Internal(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }
}

/// Constant-time equality of two byte strings: the time depends on the lengths only.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    // `black_box` keeps the optimiser from turning the loop into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(!ct_eq(b"", b"a"));
        assert!(ct_eq(b"", b""));
    }
}
