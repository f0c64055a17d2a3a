//! Memory given back: pages of the executable's code that ran only at start-up, and the
//! heap's free pages (see `crate::memory`, which decides when).

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
