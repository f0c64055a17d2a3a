//! Header text as Postfix writes it: the `Received:` header of `smtpd` (smtpd.c, `data_cmd`),
//! the date format of `mail_date()`, `quote_822_local()`, and the headers `cleanup` adds when
//! they are missing (cleanup_message.c).

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Broken-down local time with its UTC offset and zone abbreviation.
struct LocalTime {
    tm: libc::tm,
    zone: String,
}

fn local_time(secs: i64) -> Option<LocalTime> {
    let tm = crate::sys::time::local(secs)?;
    let zone = crate::sys::time::zone_name(&tm);
    Some(LocalTime { tm, zone })
}

fn utc_time(secs: i64) -> libc::tm {
    crate::sys::time::utc(secs)
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// The date as Postfix's `mail_date()` writes it in `Received:` and `Date:` headers:
/// `Sat, 28 Nov 2026 14:00:45 +0000 (UTC)`; the day of month is space-padded (`%e`), so a
/// single-digit day shows as `Mon,  1 Jan`.
pub fn mail_date(t: SystemTime) -> String {
    let secs = unix_secs(t);
    let (tm, zone) = match local_time(secs) {
        Some(lt) => (lt.tm, lt.zone),
        None => (utc_time(secs), "UTC".to_string()),
    };
    let off = tm.tm_gmtoff;
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.unsigned_abs();
    let mut s = format!(
        "{}, {:>2} {} {} {:02}:{:02}:{:02} {}{:02}{:02}",
        DAYS[(tm.tm_wday.rem_euclid(7)) as usize],
        tm.tm_mday,
        MONTHS[(tm.tm_mon.rem_euclid(12)) as usize],
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        sign,
        off / 3600,
        (off / 60) % 60,
    );
    if !zone.is_empty() {
        s.push_str(&format!(" ({zone})"));
    }
    s
}

/// `%Y%m%d%H%M%S` in UTC, the time stamp in a Message-Id cleanup adds.
pub fn message_id_stamp(t: SystemTime) -> String {
    let tm = utc_time(unix_secs(t));
    format!(
        "{}{:02}{:02}{:02}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

// Postfix's quoting of a local part lives with trivial-rewrite's address code, below
// the queue (tests/layers.rs); the queue's header and listing code use it from there.
pub use crate::resolve::rewrite::{QUOTE_FLAG_8BITCLEAN, quote_822_local_flags};

/// Postfix `quote_822_local()` (8-bit clean) for an envelope address: `odd
/// user@example.org` becomes `"odd user"@example.org`. The null address stays empty:
/// Postfix's callers test for `<>` first (`MAILER-DAEMON`, `from=<>`).
pub fn quote_822_local(addr: &str) -> String {
    quote_822_local_cow(addr).into_owned()
}

/// [`quote_822_local`], borrowing `addr` when it needs no quotes.
pub fn quote_822_local_cow(addr: &str) -> std::borrow::Cow<'_, str> {
    if addr.is_empty() {
        return std::borrow::Cow::Borrowed(addr);
    }
    quote_822_local_flags(addr, QUOTE_FLAG_8BITCLEAN)
}

/// Make untrusted text safe inside an RFC 5322 comment, after Postfix's `comment_sanitize()`:
/// control characters become `?`, unbalanced parentheses are dropped.
pub fn comment_sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' => {
                depth += 1;
                out.push(c);
            }
            ')' if depth == 0 => {}
            ')' => {
                depth -= 1;
                out.push(c);
            }
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out.extend(std::iter::repeat_n(')', depth));
    out
}

/// The address as Postfix's smtpd writes it in brackets (`state->rfc_addr`): IPv6 gets the
/// `IPv6:` prefix of RFC 5321 address literals; IPv4-mapped IPv6 shows as IPv4.
pub fn rfc_addr(addr: IpAddr) -> String {
    match plain_addr(addr) {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("IPv6:{a}"),
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, as Postfix's smtpd normalises them.
pub fn plain_addr(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(a),
        },
        v4 => v4,
    }
}

/// What goes into the `Received:` header.
pub struct ReceivedInfo<'a> {
    pub helo: Option<&'a str>,
    pub hostname: &'a str,
    pub addr: IpAddr,
    /// TLS comment lines (without leading tab), written only with
    /// `smtpd_tls_received_header = yes`.
    pub tls: Option<&'a str>,
    /// SASL user name, written only with `smtpd_sasl_authenticated_header = yes`.
    pub sasl_username: Option<&'a str>,
    pub myhostname: &'a str,
    pub mail_name: &'a str,
    pub protocol: &'a str,
    pub queue_id: &'a str,
    /// The recipients accepted in the transaction; `for <…>` appears only when there is one.
    pub recipients: &'a [&'a str],
    pub date: &'a str,
}

/// The `Received:` header lines (no line ends) as Postfix 3.7's smtpd writes them.
pub fn received_lines(r: &ReceivedInfo<'_>) -> Vec<String> {
    let mut lines = vec![format!(
        "Received: from {} ({} [{}])",
        r.helo.unwrap_or(r.hostname),
        r.hostname,
        rfc_addr(r.addr)
    )];
    if let Some(tls) = r.tls {
        for l in tls.split('\n') {
            lines.push(format!("\t{}", l.trim_end_matches('\r')));
        }
    }
    if let Some(user) = r.sasl_username {
        lines.push(format!(
            "\t(Authenticated sender: {})",
            comment_sanitize(user)
        ));
    }
    if let [only] = r.recipients {
        lines.push(format!(
            "\tby {} ({}) with {} id {}",
            r.myhostname, r.mail_name, r.protocol, r.queue_id
        ));
        lines.push(format!("\tfor <{}>; {}", quote_822_local(only), r.date));
    } else {
        lines.push(format!(
            "\tby {} ({}) with {} id {};",
            r.myhostname, r.mail_name, r.protocol, r.queue_id
        ));
        lines.push(format!("\t{}", r.date));
    }
    lines
}

/// The header name of a line that starts a header (`Name:`), if it does.
pub fn header_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    // RFC 5322 ftext is %d33-57 / %d59-126; Postfix's is_header() also allows trailing
    // whitespace before the colon.
    let trimmed = name
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map(|e| &name[..=e])?;
    if trimmed
        .iter()
        .all(|&b| (33..=126).contains(&b) && b != b':')
    {
        Some(trimmed)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_822_local("alice@example.org"), "alice@example.org");
        assert_eq!(
            quote_822_local("odd user@example.org"),
            "\"odd user\"@example.org"
        );
        assert_eq!(quote_822_local("a..b@x"), "\"a..b\"@x");
        assert_eq!(quote_822_local(""), "");
    }

    /// Where the two quote_822_local() functions (this module's and trivial-rewrite's)
    /// differed before they became this one, each case as Postfix's
    /// quote_822_local_flags() answers it.
    #[test]
    fn quoting_as_postfix_quote_822_local_flags() {
        let clean = |a| quote_822_local_flags(a, QUOTE_FLAG_8BITCLEAN).into_owned();
        // An empty local part is not a dot-string (this module left `@d` alone).
        assert_eq!(clean("@d"), "\"\"@d");
        assert_eq!(quote_822_local("@d"), "\"\"@d");
        // The empty address: quoted for trivial-rewrite, the null sender for envelopes.
        assert_eq!(clean(""), "\"\"");
        assert_eq!(crate::resolve::rewrite::quote_822_local(""), "\"\"");
        // 8-bit clean: UTF-8 is ordinary text (trivial-rewrite's quoted it).
        assert_eq!(clean("j\u{f6}rg@d"), "j\u{f6}rg@d");
        assert_eq!(
            crate::resolve::rewrite::quote_822_local("j\u{f6}rg@d"),
            "j\u{f6}rg@d"
        );
        assert_eq!(clean("j\u{f6} rg@d"), "\"j\u{f6} rg\"@d");
        // Without the flag, quoted and escaped (per character here, per byte in C).
        assert_eq!(quote_822_local_flags("j\u{f6}rg@d", 0), "\"j\\\u{f6}rg\"@d");
        // A source route is skipped (this module quoted it with the local part).
        assert_eq!(clean("@r:a b@d"), "@r:\"a b\"@d");
        // CR is escaped inside the quotes (this module only quoted).
        assert_eq!(clean("a\rb@d"), "\"a\\\rb\"@d");
        // The same otherwise: the last @ ends the local part, `"` and `\` escaped.
        assert_eq!(clean("u@v@d"), "\"u@v\"@d");
        assert_eq!(clean("a\"b\\c@d"), "\"a\\\"b\\\\c\"@d");
        assert_eq!(clean("first.last@d"), "first.last@d");
        assert_eq!(clean(".a@d"), "\".a\"@d");
    }

    #[test]
    fn header_names() {
        assert_eq!(header_name(b"Subject: x"), Some(&b"Subject"[..]));
        assert_eq!(header_name(b"Subject : x"), Some(&b"Subject"[..]));
        assert_eq!(header_name(b"no header here"), None);
        assert_eq!(header_name(b": x"), None);
    }

    #[test]
    fn sanitize() {
        assert_eq!(comment_sanitize("a)b(c"), "ab(c)");
        assert_eq!(comment_sanitize("x\x01y"), "x?y");
    }
}
