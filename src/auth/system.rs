//! The system password backends: `shadow`, `getpwent` and `pam`, as Cyrus saslauthd 2.1.28
//! implements its mechanisms of those names (`saslauthd/auth_shadow.c`, `auth_getpwent.c`,
//! `auth_pam.c`) and as Dovecot's `passdb shadow`, `passdb passwd` and `passdb pam` use them.
//!
//! * `shadow`: the user must exist in passwd (`getpwnam`) and shadow (`getspnam`, so NSS
//!   applies); the password is checked with crypt(3) ([`super::crypt`]); then the account
//!   expiry day (`sp_expire`) and the password age (`sp_lstchg + sp_max`) are checked, after
//!   the password, so that nothing about an account is revealed to someone without its
//!   password. A locked hash (`!…`, `*`) never matches.
//! * `getpwent`: the hash in the passwd entry itself (old systems, NIS).
//! * `pam`: `pam_start(service, user)`, a conversation that answers every echo-off prompt
//!   with the password and every echo-on prompt with the user name, `pam_authenticate`,
//!   then `pam_acct_mgmt`. Replies as saslauthd's: `PAM start error`, `PAM auth error`,
//!   `PAM acct error`. PAM modules may block (pam_faildelay, LDAP); callers run these
//!   checks on a blocking pool.
//!
//! Limits: the PAM conversation cannot answer challenge prompts (OTP) beyond the password.

use std::time::{SystemTime, UNIX_EPOCH};

use super::Outcome;

pub use crate::sys::shadow::{ShadowEntry, shadow_entry};

/// The passwd entry's password field (`x` when shadowed), `None` for no such user.
pub fn passwd_hash(user: &str) -> Result<Option<String>, String> {
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ok(Some(u.passwd.to_string_lossy().into_owned())),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("getpwnam_r: {e}")),
    }
}

fn today() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_secs() / 86_400) as i64)
        .unwrap_or(0)
}

/// saslauthd's `-a shadow`.
pub fn check_shadow(user: &str, password: &[u8]) -> Outcome {
    match passwd_hash(user) {
        Ok(Some(_)) => {}
        Ok(None) => return Outcome::UnknownUser,
        Err(e) => return Outcome::Internal(e),
    }
    let sp = match shadow_entry(user) {
        Ok(Some(sp)) => sp,
        Ok(None) => return Outcome::UnknownUser,
        Err(e) => return Outcome::Internal(e),
    };
    check_shadow_entry(&sp, password, today())
}

/// The shadow rules for one entry on day `today` (days since the epoch).
pub fn check_shadow_entry(sp: &ShadowEntry, password: &[u8], today: i64) -> Outcome {
    if !super::crypt::verify(password, &sp.hash) {
        return Outcome::BadPassword;
    }
    if sp.expire != -1 && today > sp.expire {
        return Outcome::Refused("Account expired".into());
    }
    if sp.lastchg != -1 && sp.max != -1 && sp.lastchg + sp.max < today {
        return Outcome::Refused("Password expired".into());
    }
    Outcome::Ok
}

/// saslauthd's `-a getpwent`: the hash in the passwd entry.
pub fn check_getpwent(user: &str, password: &[u8]) -> Outcome {
    match passwd_hash(user) {
        Ok(Some(h)) => {
            if super::crypt::verify(password, &h) {
                Outcome::Ok
            } else {
                Outcome::BadPassword
            }
        }
        Ok(None) => Outcome::UnknownUser,
        Err(e) => Outcome::Internal(e),
    }
}

/// saslauthd's `-a pam` and Dovecot's `passdb pam`: authenticate `user` with `password`
/// through the PAM service `service`, then check the account. libpam is loaded at run time
/// ([`crate::sys::dl::pam`]); if it cannot be, the check fails as `PAM start error`.
pub fn check_pam(service: &str, user: &str, password: &str) -> Outcome {
    match crate::sys::dl::pam_check(service, user, password) {
        Ok(()) => Outcome::Ok,
        Err(e) => Outcome::Refused(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(hash: &str, lastchg: i64, max: i64, expire: i64) -> ShadowEntry {
        ShadowEntry {
            hash: hash.into(),
            lastchg,
            max,
            expire,
        }
    }

    #[test]
    fn shadow_rules() {
        let h = crate::auth::crypt::hash(b"pw", "$6$").expect("hash");
        let today = 20_000;
        assert_eq!(
            check_shadow_entry(&entry(&h, -1, -1, -1), b"pw", today),
            Outcome::Ok
        );
        assert_eq!(
            check_shadow_entry(&entry(&h, -1, -1, -1), b"px", today),
            Outcome::BadPassword
        );
        assert_eq!(
            check_shadow_entry(&entry(&format!("!{h}"), -1, -1, -1), b"pw", today),
            Outcome::BadPassword
        );
        assert_eq!(
            check_shadow_entry(&entry(&h, -1, -1, 19_999), b"pw", today),
            Outcome::Refused("Account expired".into())
        );
        // Expiring today is still valid (saslauthd: `today > sp_expire`).
        assert_eq!(
            check_shadow_entry(&entry(&h, -1, -1, 20_000), b"pw", today),
            Outcome::Ok
        );
        assert_eq!(
            check_shadow_entry(&entry(&h, 19_000, 90, -1), b"pw", today),
            Outcome::Refused("Password expired".into())
        );
        assert_eq!(
            check_shadow_entry(&entry(&h, 19_990, 90, -1), b"pw", today),
            Outcome::Ok
        );
    }

    #[test]
    fn unknown_user() {
        assert_eq!(
            check_shadow("postern-no-such-user-xyz", b"pw"),
            Outcome::UnknownUser
        );
    }
}
