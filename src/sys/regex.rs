//! The C library's POSIX regular expressions (`regcomp(3)`/`regexec(3)`), which Postfix's
//! `regexp:` tables use: glibc's dialect (back-references, `[[:alpha:]]`, leftmost-longest
//! matching) is what an existing table was written against, and no Rust crate matches it.

use std::ffi::{CStr, CString};

/// `REG_EXTENDED`, `REG_ICASE`, `REG_NEWLINE` for [`PosixRegex::compile`].
pub use libc::{REG_EXTENDED, REG_ICASE, REG_NEWLINE};

/// A compiled `regex_t`, owned for its lifetime.
pub struct PosixRegex {
    re: Box<libc::regex_t>,
    nsub: usize,
}

// SAFETY: glibc's regexec() takes the compiled pattern as const and locks its internal DFA,
// so sharing one compiled pattern between threads is allowed; it is freed once, on drop.
unsafe impl Send for PosixRegex {}
unsafe impl Sync for PosixRegex {}

impl PosixRegex {
    /// Compile `pattern` with `cflags` (`REG_*`); `nsub` is its number of
    /// sub-expressions (glibc keeps `re_nsub` private in the `libc` crate's `regex_t`, so
    /// the caller counts them). The error is `regerror()`'s text.
    pub fn compile(pattern: &str, cflags: libc::c_int, nsub: usize) -> Result<Self, String> {
        let c = CString::new(pattern).map_err(|_| "pattern contains a NUL byte".to_string())?;
        // SAFETY: regex_t is a plain C struct that regcomp() initialises.
        let mut re: Box<libc::regex_t> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: valid pointers; the pattern is NUL-terminated.
        let rc = unsafe { libc::regcomp(&mut *re, c.as_ptr(), cflags) };
        if rc != 0 {
            let mut buf = [0u8; 256];
            // SAFETY: regerror writes at most buf.len() bytes including the NUL.
            unsafe {
                libc::regerror(rc, &*re, buf.as_mut_ptr().cast(), buf.len());
            }
            let msg = CStr::from_bytes_until_nul(&buf)
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "bad regular expression".into());
            return Err(msg);
        }
        Ok(PosixRegex { re, nsub })
    }

    /// The number of sub-expressions given at compilation.
    pub fn groups(&self) -> usize {
        self.nsub
    }

    /// The spans of the whole match and of each sub-expression (`None` for one that took
    /// no part) when the pattern matches `key`; a key with a NUL byte never matches.
    pub fn exec(&self, key: &str) -> Option<Vec<Option<(usize, usize)>>> {
        let c = CString::new(key).ok()?;
        let n = self.nsub + 1;
        let mut m: Vec<libc::regmatch_t> = vec![
            libc::regmatch_t {
                rm_so: -1,
                rm_eo: -1
            };
            n
        ];
        // SAFETY: `m` has room for n matches; the key is NUL-terminated.
        let rc = unsafe { libc::regexec(&*self.re, c.as_ptr(), n, m.as_mut_ptr(), 0) };
        if rc != 0 {
            return None;
        }
        Some(
            m.iter()
                .map(|r| {
                    if r.rm_so < 0 || r.rm_eo < r.rm_so {
                        None
                    } else {
                        Some((r.rm_so as usize, r.rm_eo as usize))
                    }
                })
                .collect(),
        )
    }
}

impl Drop for PosixRegex {
    fn drop(&mut self) {
        // SAFETY: compiled by regcomp() and freed exactly once.
        unsafe { libc::regfree(&mut *self.re) }
    }
}
