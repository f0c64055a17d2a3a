//! System libraries loaded at run time by their sonames, so that building Postern needs no
//! `-dev` package: `libcrypt.so.1` (libxcrypt; Fedora's own soname is `libcrypt.so.2`, with
//! `.so.1` from `libxcrypt-compat`) and `libpam.so.0` (Linux-PAM). Both are present on every
//! Debian and Fedora system, which link their own `passwd`, `login` and `su` against them.
//!
//! A library that cannot be loaded is reported once per use as an error naming the library
//! and dlerror(3)'s reason; the callers turn it into their protocol's temporary failure.

use std::ffi::{CStr, CString, c_void};
use std::sync::OnceLock;

/// A library handle that lives for the whole process (never dlclose'd).
pub struct Library {
    handle: *mut c_void,
    pub soname: &'static str,
}

// SAFETY: a dlopen handle may be used from any thread; dlsym is thread-safe in glibc.
unsafe impl Send for Library {}
// SAFETY: as above; the handle is never closed or mutated.
unsafe impl Sync for Library {}

impl Library {
    /// dlopen the first of `sonames` that loads.
    pub fn open(sonames: &[&'static str]) -> Result<Library, String> {
        let mut last = String::new();
        for soname in sonames {
            let c = CString::new(*soname).map_err(|e| e.to_string())?;
            // SAFETY: a NUL-terminated name; RTLD_NOW resolves everything at once so a
            // broken library fails here, not at a later call.
            let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            if !handle.is_null() {
                return Ok(Library { handle, soname });
            }
            last = dlerror();
        }
        Err(format!("cannot load {}: {last}", sonames.join(" or ")))
    }

    /// The address of `symbol`, or an error naming it.
    pub fn symbol(&self, symbol: &str) -> Result<*mut c_void, String> {
        let c = CString::new(symbol).map_err(|e| e.to_string())?;
        // SAFETY: a valid handle from dlopen and a NUL-terminated name.
        let p = unsafe { libc::dlsym(self.handle, c.as_ptr()) };
        if p.is_null() {
            Err(format!(
                "{}: no symbol {symbol}: {}",
                self.soname,
                dlerror()
            ))
        } else {
            Ok(p)
        }
    }
}

fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl call
    // on this thread; it is copied at once.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: see above.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// `crypt_rn(3)`.
pub type CryptRnFn = unsafe extern "C" fn(
    phrase: *const libc::c_char,
    setting: *const libc::c_char,
    data: *mut c_void,
    size: libc::c_int,
) -> *mut libc::c_char;
/// `crypt_gensalt_rn(3)`.
pub type CryptGensaltRnFn = unsafe extern "C" fn(
    prefix: *const libc::c_char,
    count: libc::c_ulong,
    rbytes: *const libc::c_char,
    nrbytes: libc::c_int,
    output: *mut libc::c_char,
    output_size: libc::c_int,
) -> *mut libc::c_char;

/// libxcrypt's reentrant entry points.
pub struct Crypt {
    pub crypt_rn: CryptRnFn,
    pub crypt_gensalt_rn: CryptGensaltRnFn,
}

/// `sizeof(struct crypt_data)` in libxcrypt (`CRYPT_DATA_RESERVED_SIZE` + internal state):
/// 32768 bytes. `crypt_rn` is told the size and refuses a smaller area.
const CRYPT_DATA_SIZE: usize = 32768;

impl Crypt {
    /// `crypt_rn(phrase, setting)`: the hash text, or `None` when libxcrypt fails (NULL).
    pub fn crypt_rn(&self, phrase: &std::ffi::CStr, setting: &std::ffi::CStr) -> Option<String> {
        let mut data = vec![0u8; CRYPT_DATA_SIZE];
        // SAFETY: both strings are NUL-terminated and live across the call; `data` is a
        // zeroed buffer of the size we pass; the result points into `data` (or is NULL)
        // and is copied out before `data` is dropped.
        let out = unsafe {
            (self.crypt_rn)(
                phrase.as_ptr(),
                setting.as_ptr(),
                data.as_mut_ptr().cast(),
                CRYPT_DATA_SIZE as libc::c_int,
            )
        };
        if out.is_null() {
            return None;
        }
        // SAFETY: non-NULL results of crypt_rn are NUL-terminated strings inside `data`.
        Some(
            unsafe { std::ffi::CStr::from_ptr(out) }
                .to_string_lossy()
                .into_owned(),
        )
    }

    /// `crypt_gensalt_rn(prefix, 0, NULL, 0)`: a setting with a fresh salt from the OS
    /// random source, for the method `prefix` names (`None`: libxcrypt's default).
    pub fn gensalt_rn(&self, prefix: Option<&std::ffi::CStr>) -> Option<String> {
        let mut out = vec![0 as libc::c_char; 256];
        // SAFETY: NULL rbytes asks libxcrypt to read the OS random source; `out` is
        // writable for the size given; the result is NUL-terminated within `out` or NULL.
        let setting = unsafe {
            (self.crypt_gensalt_rn)(
                prefix.map_or(std::ptr::null(), |p| p.as_ptr()),
                0,
                std::ptr::null(),
                0,
                out.as_mut_ptr(),
                out.len() as libc::c_int,
            )
        };
        if setting.is_null() {
            return None;
        }
        // SAFETY: see above.
        unsafe { std::ffi::CStr::from_ptr(setting) }
            .to_str()
            .ok()
            .map(str::to_string)
    }
}

/// libxcrypt, loaded on first use.
pub fn crypt() -> Result<&'static Crypt, String> {
    static CRYPT: OnceLock<Result<Crypt, String>> = OnceLock::new();
    CRYPT
        .get_or_init(|| {
            let lib = Library::open(&["libcrypt.so.1", "libcrypt.so.2"])?;
            let a = lib.symbol("crypt_rn")?;
            let b = lib.symbol("crypt_gensalt_rn")?;
            // SAFETY: libxcrypt ≥ 4.0 exports both with exactly these C signatures
            // (crypt.h); the library stays loaded for the life of the process.
            Ok(unsafe {
                Crypt {
                    crypt_rn: std::mem::transmute::<*mut c_void, CryptRnFn>(a),
                    crypt_gensalt_rn: std::mem::transmute::<*mut c_void, CryptGensaltRnFn>(b),
                }
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// `struct pam_message` (Linux-PAM `security/_pam_types.h`).
#[repr(C)]
pub struct PamMessage {
    pub msg_style: libc::c_int,
    pub msg: *const libc::c_char,
}

/// `struct pam_response`.
#[repr(C)]
pub struct PamResponse {
    pub resp: *mut libc::c_char,
    pub resp_retcode: libc::c_int,
}

/// The conversation callback's C signature.
pub type PamConvFn = unsafe extern "C" fn(
    num_msg: libc::c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> libc::c_int;

/// `struct pam_conv`.
#[repr(C)]
pub struct PamConv {
    pub conv: PamConvFn,
    pub appdata_ptr: *mut c_void,
}

pub const PAM_SUCCESS: libc::c_int = 0;
pub const PAM_BUF_ERR: libc::c_int = 5;
pub const PAM_CONV_ERR: libc::c_int = 19;
pub const PAM_PROMPT_ECHO_OFF: libc::c_int = 1;
pub const PAM_PROMPT_ECHO_ON: libc::c_int = 2;
pub const PAM_ERROR_MSG: libc::c_int = 3;
pub const PAM_TEXT_INFO: libc::c_int = 4;

/// `pam_start(3)`.
pub type PamStartFn = unsafe extern "C" fn(
    service: *const libc::c_char,
    user: *const libc::c_char,
    conv: *const PamConv,
    pamh: *mut *mut c_void,
) -> libc::c_int;
/// `pam_authenticate(3)`, `pam_acct_mgmt(3)`, `pam_end(3)`: a handle and an int.
pub type PamHandleFn = unsafe extern "C" fn(pamh: *mut c_void, arg: libc::c_int) -> libc::c_int;

/// Linux-PAM's application entry points that saslauthd's `-a pam` uses.
pub struct Pam {
    pub pam_start: PamStartFn,
    pub pam_authenticate: PamHandleFn,
    pub pam_acct_mgmt: PamHandleFn,
    pub pam_end: PamHandleFn,
}

/// libpam, loaded on first use.
pub fn pam() -> Result<&'static Pam, String> {
    static PAM: OnceLock<Result<Pam, String>> = OnceLock::new();
    PAM.get_or_init(|| {
        let lib = Library::open(&["libpam.so.0"])?;
        let s = lib.symbol("pam_start")?;
        let a = lib.symbol("pam_authenticate")?;
        let m = lib.symbol("pam_acct_mgmt")?;
        let e = lib.symbol("pam_end")?;
        // SAFETY: Linux-PAM exports these with exactly these C signatures
        // (security/pam_appl.h); the library stays loaded for the life of the process.
        Ok(unsafe {
            Pam {
                pam_start: std::mem::transmute::<*mut c_void, PamStartFn>(s),
                pam_authenticate: std::mem::transmute::<*mut c_void, PamHandleFn>(a),
                pam_acct_mgmt: std::mem::transmute::<*mut c_void, PamHandleFn>(m),
                pam_end: std::mem::transmute::<*mut c_void, PamHandleFn>(e),
            }
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Authenticate `user` with `password` through the PAM service `service`
/// (`pam_start`, a conversation that answers every echo-off prompt with the password and
/// every echo-on prompt with the user name, `pam_authenticate`, `pam_acct_mgmt`,
/// `pam_end`), as Cyrus saslauthd's `auth_pam.c` does. The error is saslauthd's reply
/// text: `PAM start error` (also when libpam cannot be loaded), `PAM auth error`, `PAM
/// acct error`.
pub fn pam_check(service: &str, user: &str, password: &str) -> Result<(), &'static str> {
    use std::ffi::CString;
    let (Ok(c_service), Ok(c_user), Ok(c_password)) = (
        CString::new(service),
        CString::new(user),
        CString::new(password),
    ) else {
        return Err("PAM start error");
    };
    let Ok(pam) = pam() else {
        return Err("PAM start error");
    };
    let creds = [c_user, c_password];
    let conv = PamConv {
        conv: pam_conversation,
        appdata_ptr: creds.as_ptr() as *mut std::ffi::c_void,
    };
    let mut handle: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: NUL-terminated strings and a conversation whose data (`creds`) outlives the
    // PAM handle, which is ended below before this function returns.
    let rc = unsafe { (pam.pam_start)(c_service.as_ptr(), creds[0].as_ptr(), &conv, &mut handle) };
    if rc != PAM_SUCCESS || handle.is_null() {
        return Err("PAM start error");
    }
    // SAFETY: `handle` is the live handle pam_start gave us.
    let outcome = if unsafe { (pam.pam_authenticate)(handle, 0) } != PAM_SUCCESS {
        Err("PAM auth error")
    } else if unsafe { (pam.pam_acct_mgmt)(handle, 0) } != PAM_SUCCESS {
        Err("PAM acct error")
    } else {
        Ok(())
    };
    // SAFETY: ends the handle once; it is not used afterwards.
    unsafe { (pam.pam_end)(handle, PAM_SUCCESS) };
    outcome
}

/// The PAM conversation saslauthd's `-a pam` holds: the user name for an echoed prompt,
/// the password for a hidden one, nothing for messages. `appdata` points at
/// `[user, password]` as `CString`s.
unsafe extern "C" fn pam_conversation(
    num_msg: libc::c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut std::ffi::c_void,
) -> libc::c_int {
    let Ok(n) = usize::try_from(num_msg) else {
        return PAM_CONV_ERR;
    };
    if n == 0 || msg.is_null() || resp.is_null() || appdata.is_null() {
        return PAM_CONV_ERR;
    }
    let creds = appdata as *const std::ffi::CString;
    // SAFETY: PAM frees the array and every `resp` string with free(3), so both come from
    // calloc/strdup; the array has `n` zeroed entries.
    let out = unsafe { libc::calloc(n, std::mem::size_of::<PamResponse>()) } as *mut PamResponse;
    if out.is_null() {
        return PAM_BUF_ERR;
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
            PAM_PROMPT_ECHO_ON => unsafe { (*creds).as_ptr() },
            PAM_PROMPT_ECHO_OFF => unsafe { (*creds.add(1)).as_ptr() },
            PAM_ERROR_MSG | PAM_TEXT_INFO => continue,
            _ => {
                for j in 0..i {
                    // SAFETY: entries before `i` hold strdup'd strings or NULL.
                    unsafe { libc::free((*out.add(j)).resp.cast()) };
                }
                // SAFETY: allocated by calloc above.
                unsafe { libc::free(out.cast()) };
                return PAM_CONV_ERR;
            }
        };
        // SAFETY: `answer` is NUL-terminated; `out` has `n` entries.
        unsafe { (*out.add(i)).resp = libc::strdup(answer) };
    }
    // SAFETY: `resp` is PAM's out-pointer.
    unsafe { *resp = out };
    PAM_SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_libraries_load_by_soname() {
        crypt().expect("libcrypt");
        pam().expect("libpam");
    }

    #[test]
    fn missing_library_is_named() {
        let Err(e) = Library::open(&["libpostern-no-such.so.9"]) else {
            panic!("loaded a library that does not exist")
        };
        assert!(e.contains("libpostern-no-such.so.9"), "{e}");
    }
}
