//! The C library's calendar time: `localtime_r` (the local zone, as `TZ` and
//! `/etc/localtime` say; std has no time zones), `gmtime_r` and `mktime`, and the `asctime`
//! text of the mbox `From ` line and mailq. One copy of the `unsafe` they need.

use std::time::{SystemTime, UNIX_EPOCH};

/// A broken-down time (`struct tm`).
pub type Tm = libc::tm;

pub const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// An all-zero `struct tm` (1900-01-00 00:00:00, no zone), to fill in for [`mktime`] or
/// to stand for a time the C library could not convert.
pub fn blank_tm() -> Tm {
    // SAFETY: `struct tm` is integers and one pointer; all zeroes (null) is a valid value.
    unsafe { std::mem::zeroed() }
}

/// `secs` since the epoch in the local time zone; `None` when the C library cannot
/// represent it.
pub fn local(secs: i64) -> Option<Tm> {
    let t = secs as libc::time_t;
    let mut tm = blank_tm();
    // SAFETY: both pointers are valid for the call; localtime_r is the reentrant form.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    (!r.is_null()).then_some(tm)
}

/// `secs` since the epoch in UTC.
pub fn utc(secs: i64) -> Tm {
    let t = secs as libc::time_t;
    let mut tm = blank_tm();
    // SAFETY: both pointers are valid for the call; on failure `tm` stays blank.
    unsafe { libc::gmtime_r(&t, &mut tm) };
    tm
}

/// The zone abbreviation of a time from [`local`] (`CET`), empty when there is none.
pub fn zone_name(tm: &Tm) -> String {
    if tm.tm_zone.is_null() {
        return String::new();
    }
    // SAFETY: localtime_r sets tm_zone to a NUL-terminated string in the C library's
    // static zone data, which lives as long as the process.
    unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
        .to_string_lossy()
        .into_owned()
}

/// `mktime(3)`: the local broken-down time `tm` (normalised in place) as seconds since
/// the epoch; `None` when it cannot be represented.
pub fn mktime(tm: &mut Tm) -> Option<i64> {
    // SAFETY: `tm` is a valid, initialised struct for the call.
    let t = unsafe { libc::mktime(tm) };
    (t != -1).then_some(t as i64)
}

/// `asctime(3)` without the newline, in local time (`Sat Nov 28 16:16:27 2026`): the
/// `From ` line date of local(8) and mbox, also used by mailq.
pub fn asctime(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    ctime_text(secs, false)
}

/// [`asctime`] of `secs` since the epoch; with `zero_pad_day` the day has two digits
/// (`Wed Jan 01 10:00:00 2020`, Dovecot's `mbox_from_create()`) instead of asctime's
/// space (`Wed Jan  1 10:00:00 2020`).
pub fn ctime_text(secs: i64, zero_pad_day: bool) -> String {
    let tm = local(secs).unwrap_or_else(blank_tm);
    let day = if zero_pad_day {
        format!("{:02}", tm.tm_mday)
    } else {
        format!("{:2}", tm.tm_mday)
    };
    format!(
        "{} {} {day} {:02}:{:02}:{:02} {}",
        DAYS[tm.tm_wday.rem_euclid(7) as usize],
        MONTHS[tm.tm_mon.rem_euclid(12) as usize],
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        1900 + tm.tm_year
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_and_asctime_shape() {
        let tm = utc(86400 * 365);
        assert_eq!((tm.tm_year, tm.tm_mon, tm.tm_mday), (71, 0, 1));
        let s = asctime(UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000));
        assert_eq!(s.len(), "Tue Nov 14 22:13:20 2023".len(), "{s}");
        let mut back = local(1_700_000_000).expect("local time");
        assert_eq!(mktime(&mut back), Some(1_700_000_000));
    }
}
