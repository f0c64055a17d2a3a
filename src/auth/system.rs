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
/// through the PAM service `service`, then check the account. libpam is loaded at run time
/// ([`crate::sys::dl::pam`]); if it cannot be, the check fails as `PAM start error`.
pub fn check_pam(service: &str, user: &str, password: &str) -> Outcome {
    use crate::sys::dl;
    use std::ffi::CString;
    let (Ok(c_service), Ok(c_user), Ok(c_password)) = (
        CString::new(service),
        CString::new(user),
        CString::new(password),
    ) else {
        return Outcome::Refused("PAM start error".into());
    };
    let pam = match dl::pam() {
        Ok(p) => p,
        Err(_) => return Outcome::Refused("PAM start error".into()),
    };
    let creds = [c_user, c_password];
    let conv = dl::PamConv {
        conv: pam_conversation,
        appdata_ptr: creds.as_ptr() as *mut std::ffi::c_void,
    };
    let mut handle: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: NUL-terminated strings and a conversation whose data (`creds`) outlives the
    // PAM handle, which is ended below before this function returns.
    let rc = unsafe { (pam.pam_start)(c_service.as_ptr(), creds[0].as_ptr(), &conv, &mut handle) };
    if rc != dl::PAM_SUCCESS || handle.is_null() {
        return Outcome::Refused("PAM start error".into());
    }
    // SAFETY: `handle` is the live handle pam_start gave us.
    let outcome = if unsafe { (pam.pam_authenticate)(handle, 0) } != dl::PAM_SUCCESS {
        Outcome::Refused("PAM auth error".into())
    } else if unsafe { (pam.pam_acct_mgmt)(handle, 0) } != dl::PAM_SUCCESS {
        Outcome::Refused("PAM acct error".into())
    } else {
        Outcome::Ok
    };
    // SAFETY: ends the handle once; it is not used afterwards.
    unsafe { (pam.pam_end)(handle, dl::PAM_SUCCESS) };
    outcome
}

/// The PAM conversation saslauthd's `-a pam` holds: the user name for an echoed prompt,
/// the password for a hidden one, nothing for messages. `appdata` points at
/// `[user, password]` as `CString`s.
unsafe extern "C" fn pam_conversation(
    num_msg: libc::c_int,
    msg: *mut *const crate::sys::dl::PamMessage,
    resp: *mut *mut crate::sys::dl::PamResponse,
    appdata: *mut std::ffi::c_void,
) -> libc::c_int {
    use crate::sys::dl;
    let Ok(n) = usize::try_from(num_msg) else {
        return dl::PAM_CONV_ERR;
    };
    if n == 0 || msg.is_null() || resp.is_null() || appdata.is_null() {
        return dl::PAM_CONV_ERR;
    }
    let creds = appdata as *const std::ffi::CString;
    // SAFETY: PAM frees the array and every `resp` string with free(3), so both come from
    // calloc/strdup; the array has `n` zeroed entries.
    let out =
        unsafe { libc::calloc(n, std::mem::size_of::<dl::PamResponse>()) } as *mut dl::PamResponse;
    if out.is_null() {
        return dl::PAM_BUF_ERR;
    }
    for i in 0..n {
        // SAFETY: Linux-PAM passes an array of `n` message pointers.
        let m = unsafe { *msg.add(i) };
        if m.is_null() {
            continue;
        }
        // SAFETY: `m` points at a valid pam_message for the duration of the call.
        let style = unsafe { (*m).msg_style };
        let answer = match style {
            // SAFETY: `creds` points at the two-element array of check_pam, alive here.
            dl::PAM_PROMPT_ECHO_ON => unsafe { (*creds).as_ptr() },
            dl::PAM_PROMPT_ECHO_OFF => unsafe { (*creds.add(1)).as_ptr() },
            dl::PAM_ERROR_MSG | dl::PAM_TEXT_INFO => continue,
            _ => {
                for j in 0..i {
                    // SAFETY: entries before `i` hold strdup'd strings or NULL.
                    unsafe { libc::free((*out.add(j)).resp.cast()) };
                }
                // SAFETY: allocated by calloc above.
                unsafe { libc::free(out.cast()) };
                return dl::PAM_CONV_ERR;
            }
        };
        // SAFETY: `answer` is NUL-terminated; `out` has `n` entries.
        unsafe { (*out.add(i)).resp = libc::strdup(answer) };
    }
    // SAFETY: `resp` is PAM's out-pointer.
    unsafe { *resp = out };
    dl::PAM_SUCCESS
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
