//! Giving back memory a long-running service no longer needs.
//!
//! One Postern process serves what Dovecot spreads over a dozen processes that share
//! their libraries' pages; the code Postern runs once at start-up (reading and checking
//! the configuration, setting up TLS and listeners) would otherwise stay resident, and
//! counted whole against that one process, for as long as it runs. Measured with
//! `scripts/bench-pop3` (`/proc/PID/clear_refs`, then `Referenced:` in smaps): of about
//! 3.4 MB of Postern's code and read-only data resident after start-up, about 0.9 MB is
//! used while serving POP3 sessions.

/// Hand the pages of this program's own code and read-only data back to the kernel
/// (`madvise(MADV_PAGEOUT)` on its read-only file mappings, Linux 5.4 and later; nothing
/// happens elsewhere). The pages serving requests come back from the file as they are
/// used, one at a time (`MADV_RANDOM`: no read-ahead of neighbours that are not needed);
/// the start-up code stays out until it runs again (a reload). Pages other processes of
/// the same program map are left alone by the kernel. Best effort: errors are ignored.
pub fn release_startup_code() {
    release_code(&code_ranges());
}

/// The read-only mappings of this program's own executable (address, length), from
/// `/proc/self/maps`: taken before a chroot hides `/proc`, for [`release_code`] after.
pub fn code_ranges() -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    #[cfg(target_os = "linux")]
    {
        let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
            return out;
        };
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return out;
        };
        for line in maps.lines() {
            // "start-end perms offset dev inode path"
            let mut f = line.split_whitespace();
            let (Some(range), Some(perms)) = (f.next(), f.next()) else {
                continue;
            };
            let path = f.nth(3);
            if path != exe.to_str() || perms.contains('w') {
                continue;
            }
            let Some((a, b)) = range.split_once('-') else {
                continue;
            };
            if let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                out.push((start, end - start));
            }
        }
    }
    out
}

/// [`release_startup_code`] for ranges from [`code_ranges`].
pub fn release_code(ranges: &[(usize, usize)]) {
    crate::sys::mem::page_out_code(ranges);
}

/// Return the heap's free pages to the kernel (glibc's `malloc_trim`): called when a
/// session ends, so the memory of finished sessions does not stay with the process
/// between peaks. Costs a walk of the allocator's free lists.
pub fn trim_heap() {
    crate::sys::mem::trim_heap();
}
