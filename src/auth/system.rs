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

use std::ffi::{CStr, CString};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Outcome;

/// One `/etc/shadow` entry, the fields saslauthd reads.
#[derive(Debug, Clone)]
pub struct ShadowEntry {
    pub hash: String,
    /// Days since the epoch of the last change; -1 when empty.
    pub lastchg: i64,
    /// Maximum password age in days; -1 when empty.
    pub max: i64,
    /// Account expiry, days since the epoch; -1 when empty.
    pub expire: i64,
}

/// `getspnam_r(user)`. `Ok(None)` when there is no such entry.
pub fn shadow_entry(user: &str) -> Result<Option<ShadowEntry>, String> {
    let name = CString::new(user).map_err(|_| "NUL in user name".to_string())?;
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: `spwd` is plain data; getspnam_r fills it with pointers into `buf`,
        // which outlives every use below.
        let mut sp: libc::spwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::spwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getspnam_r(
                name.as_ptr(),
                &mut sp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if result.is_null() {
            return match rc {
                0 | libc::ENOENT => Ok(None),
                libc::EACCES | libc::EPERM => {
                    Err("cannot read the shadow database: permission denied".into())
                }
                e => Err(format!(
                    "getspnam_r: {}",
                    std::io::Error::from_raw_os_error(e)
                )),
            };
        }
        let hash = if sp.sp_pwdp.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated string inside `buf`.
            unsafe { CStr::from_ptr(sp.sp_pwdp) }
                .to_string_lossy()
                .into_owned()
        };
        return Ok(Some(ShadowEntry {
            hash,
            lastchg: sp.sp_lstchg as i64,
            max: sp.sp_max as i64,
            expire: sp.sp_expire as i64,
        }));
    }
}

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
/// through the PAM service `service`, then check the account.
pub fn check_pam(service: &str, user: &str, password: &str) -> Outcome {
    use pam_client2::{Context, Flag, conv_mock::Conversation};
    if service.contains('\0') || user.contains('\0') || password.contains('\0') {
        return Outcome::Refused("PAM start error".into());
    }
    let conv = Conversation::with_credentials(user, password);
    let mut ctx = match Context::new(service, Some(user), conv) {
        Ok(c) => c,
        Err(_) => return Outcome::Refused("PAM start error".into()),
    };
    if ctx.authenticate(Flag::NONE).is_err() {
        return Outcome::Refused("PAM auth error".into());
    }
    if ctx.acct_mgmt(Flag::NONE).is_err() {
        return Outcome::Refused("PAM acct error".into());
    }
    Outcome::Ok
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
