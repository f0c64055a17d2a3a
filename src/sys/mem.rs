//! Memory given back: pages of the executable's code that ran only at start-up, and the
//! heap's free pages (see `crate::memory`, which decides when); and [`MappedFile`], a file
//! read through a read-only mapping.

/// Tell the kernel that the read-only mappings `ranges` (start, length) of this process's
/// own executable will be read at random, if at all, and may leave memory now
/// (`MADV_RANDOM`, `MADV_PAGEOUT`). Contents never change.
pub fn page_out_code(ranges: &[(usize, usize)]) {
    #[cfg(target_os = "linux")]
    for &(start, len) in ranges {
        // SAFETY: the range is a whole mapping of this process's own executable,
        // read-only (the caller reads it from /proc/self/maps; such mappings stay for the
        // process's life); MADV_RANDOM and MADV_PAGEOUT change no contents, only which
        // pages are resident and how faults read ahead.
        unsafe {
            let p = start as *mut libc::c_void;
            libc::madvise(p, len, libc::MADV_RANDOM);
            libc::madvise(p, len, libc::MADV_PAGEOUT);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = ranges;
}

/// Let glibc's allocator keep at most `n` arenas (`M_ARENA_MAX`): threads that allocate
/// share them instead of each keeping its own freed memory. An arena a thread already
/// has stays.
pub fn limit_arenas(n: i32) {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; M_ARENA_MAX takes any positive value.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, n.max(1));
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = n;
}

/// Return the heap's free pages to the kernel (glibc's `malloc_trim`).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A file's first `len` bytes mapped read-only into memory (`mmap(2)`, shared), for data
/// that is to cost page cache rather than heap (an APPENDed message spooled to an unlinked
/// temporary file). Unmapped when dropped.
pub struct MappedFile {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    len: usize,
    _file: std::fs::File,
}

// SAFETY: the mapping is read-only and owned by this value alone; moving it to another
// thread moves that ownership.
unsafe impl Send for MappedFile {}

impl MappedFile {
    /// Map `file`, which must be at least `len` bytes long and, from here on, neither
    /// written nor truncated by anyone (the value takes the handle; give it a file no one
    /// else holds, such as an unlinked `O_TMPFILE`). `len` 0 maps nothing.
    pub fn map(file: std::fs::File, len: usize) -> std::io::Result<MappedFile> {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap};
        let Some(n) = std::num::NonZeroUsize::new(len) else {
            return Ok(MappedFile {
                ptr: std::ptr::NonNull::dangling(),
                len: 0,
                _file: file,
            });
        };
        // SAFETY: a new read-only shared mapping of a file this value owns (kept open
        // beside it), at an address the kernel chooses; nothing else is touched.
        let ptr = unsafe {
            mmap(
                None,
                n,
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                &file,
                0,
            )
        }
        .map_err(std::io::Error::from)?;
        Ok(MappedFile {
            ptr,
            len,
            _file: file,
        })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the mapping is `len` readable bytes while `self` lives, and the
        // caller of `map` promised that nothing changes the file under it.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr() as *const u8, self.len) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: ptr/len are what mmap returned; no slice from `bytes` outlives self.
            let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.len) };
        }
    }
}
