//! The shadow password database (`getspnam_r(3)`, through NSS), which `nix` does not
//! cover: the fields Cyrus saslauthd's `-a shadow` and Dovecot's `passdb shadow` read.

use std::ffi::{CStr, CString};

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
