//! crypt(3) through the system's libxcrypt, which is what PAM's `pam_unix` and Dovecot's
//! `{CRYPT}` scheme use, so that every hash the system can write is verified the same way:
//! yescrypt `$y$`, SHA-512 `$6$`, SHA-256 `$5$`, MD5 `$1$`, bcrypt `$2b$`/`$2a$`/`$2y$`,
//! and traditional DES (13 characters).
//!
//! No pure-Rust crate covers yescrypt, so this calls the system's `libcrypt`, loaded at run
//! time by soname ([`crate::sys::dl::crypt`]: Debian `libcrypt1`, Fedora `libxcrypt`), so
//! that no `-dev` package is needed to build. `crypt_rn` is the reentrant form that takes
//! the size of its work area and returns NULL on failure instead of a `*0` token; it is
//! libxcrypt's since 4.0. If the library cannot be loaded, no password matches.
//!
//! Limits: a password containing NUL cannot be passed to crypt(3) and never matches.

use std::ffi::CString;

/// `crypt(password, setting)`: the hash of `password` with the salt and method of
/// `setting` (a full hash works as its own setting). `None` if the method is unknown or
/// disabled, the setting malformed, or the password contains NUL.
pub fn crypt(password: &[u8], setting: &str) -> Option<String> {
    let phrase = CString::new(password).ok()?;
    let setting = CString::new(setting).ok()?;
    let lib = crate::sys::dl::crypt().ok()?;
    let s = lib.crypt_rn(&phrase, &setting)?;
    // libxcrypt's failure tokens start with `*`; a real hash never does.
    if s.starts_with('*') { None } else { Some(s) }
}

/// Does `password` hash to `hash`? Locked (`!…`, `*…`) and empty hashes never match;
/// the comparison is constant-time.
pub fn verify(password: &[u8], hash: &str) -> bool {
    if hash.is_empty() || hash.starts_with('!') || hash.starts_with('*') {
        return false;
    }
    match crypt(password, hash) {
        Some(computed) => super::ct_eq(computed.as_bytes(), hash.as_bytes()),
        None => false,
    }
}

/// A fresh hash of `password` with the method named by `prefix` (`$y$`, `$6$`, `$5$`,
/// `$1$`, `$2b$`, or `""` for libxcrypt's default), salt from the OS random source. For
/// tests and for tools that write password files.
pub fn hash(password: &[u8], prefix: &str) -> Option<String> {
    let prefix_c = CString::new(prefix).ok()?;
    let lib = crate::sys::dl::crypt().ok()?;
    let setting = lib.gensalt_rn((!prefix.is_empty()).then_some(prefix_c.as_c_str()))?;
    crypt(password, &setting)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_round_trips() {
        for prefix in ["$y$", "$6$", "$5$", "$1$", "$2b$"] {
            let h = hash(b"s3cret", prefix).expect(prefix);
            assert!(h.starts_with(prefix), "{h}");
            assert!(verify(b"s3cret", &h), "{prefix}");
            assert!(!verify(b"s3creT", &h), "{prefix}");
        }
    }

    #[test]
    fn des_and_known_vectors() {
        // Traditional DES: salt "ab".
        let h = crypt(b"password", "ab").expect("des");
        assert_eq!(h.len(), 13);
        assert!(verify(b"password", &h));
        // SHA-512 vector from the glibc/Drepper specification.
        assert!(verify(
            b"Hello world!",
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
        ));
    }

    #[test]
    fn locked_and_bad_hashes_never_match() {
        let h = hash(b"pw", "$6$").expect("hash");
        assert!(!verify(b"pw", &format!("!{h}")));
        assert!(!verify(b"pw", "*"));
        assert!(!verify(b"pw", ""));
        assert!(!verify(b"pw", "$9$nonsense"));
        assert!(!verify(b"p\0w", &h));
    }
}
