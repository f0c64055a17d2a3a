//! Mailbox names: the checks Dovecot 2.3 makes before a name reaches the filesystem
//! (`mailbox_verify_name()` in `src/lib-storage/mail-storage.c`,
//! `mailbox_list_is_valid_fs_name()` in `mailbox-list.c`), and the name's form on disk:
//! modified UTF-7 (RFC 3501 §5.1.3), as Dovecot stores folder names in file and
//! directory names and in the subscriptions file.
//!
//! Names given to the store are UTF-8 with the store's hierarchy separator (`/` for mbox
//! and `LAYOUT=fs`, `.` for Maildir++); INBOX is matched without regard to case. A name
//! is refused when it could leave the user's mail root or alias another folder: a
//! leading separator, `/` or `~`, an empty, `.` or `..` level, a separator at the end,
//! NUL and other control characters, more than 4096 bytes or a level of more than 255.

use super::MailboxError;

/// Longest mailbox name (Dovecot's `MAILBOX_LIST_NAME_MAX_LENGTH`, PATH_MAX).
pub const MAX_NAME: usize = 4096;
/// Longest hierarchy level (Dovecot's `MAILBOX_MAX_HIERARCHY_NAME_LENGTH`).
pub const MAX_LEVEL: usize = 255;

/// `name` with an INBOX prefix in any case written `INBOX` (`inbox/x` is `INBOX/x`).
pub fn normalize_inbox(name: &str, sep: char) -> String {
    let head = name.split(sep).next().unwrap_or("");
    if head.eq_ignore_ascii_case("INBOX") && head != "INBOX" {
        format!("INBOX{}", &name[head.len()..])
    } else {
        name.to_string()
    }
}

/// Whether `name` is the INBOX.
pub fn is_inbox(name: &str) -> bool {
    name.eq_ignore_ascii_case("INBOX")
}

fn invalid(why: &str) -> MailboxError {
    MailboxError::InvalidName(why.to_string())
}

/// Check `name` (UTF-8, hierarchy separator `sep`) as Dovecot does before opening,
/// creating, renaming or deleting a mailbox. `creating`: also the checks Dovecot makes only
/// for new names (control characters, length).
pub fn check(name: &str, sep: char, creating: bool) -> Result<(), MailboxError> {
    if is_inbox(name) {
        return Ok(());
    }
    if name.is_empty() {
        return Err(invalid("Empty name"));
    }
    if name.contains('\0') {
        return Err(invalid("Contains NUL"));
    }
    if name.starts_with(sep) {
        return Err(invalid("Begins with hierarchy separator"));
    }
    let mut prev_sep = false;
    for c in name.chars() {
        if c == sep {
            if prev_sep {
                return Err(invalid("Has adjacent hierarchy separators"));
            }
            prev_sep = true;
        } else {
            prev_sep = false;
        }
    }
    if prev_sep {
        return Err(invalid("Ends with hierarchy separator"));
    }
    // The filesystem checks, on the name as the list stores it.
    if sep != '/' && name.contains('/') {
        return Err(invalid("Name must not have '/' characters"));
    }
    if name.starts_with('/') {
        return Err(invalid("Begins with '/'"));
    }
    if name.starts_with('~') {
        return Err(invalid("Begins with '~'"));
    }
    for level in name.split(sep) {
        match level {
            "" => return Err(invalid("Has adjacent '/' chars")),
            "." => return Err(invalid("Contains '.' part")),
            ".." => return Err(invalid("Contains '..' part")),
            _ => {}
        }
    }
    if name.chars().any(|c| (c as u32) < 0x20) {
        return Err(MailboxError::cannot(
            None,
            "Control characters not allowed in new mailbox names",
        ));
    }
    if creating && (name.len() > MAX_NAME || name.split(sep).any(|l| l.len() > MAX_LEVEL)) {
        return Err(MailboxError::cannot(None, "Mailbox name too long"));
    }
    Ok(())
}

/// Encode UTF-8 `name` in modified UTF-7 (RFC 3501 §5.1.3): printable ASCII as itself
/// (`&` as `&-`), everything else in `&…-` runs of modified base64 of UTF-16.
pub fn to_mutf7(name: &str) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
    let mut out = String::with_capacity(name.len());
    let mut run: Vec<u16> = Vec::new();
    let flush = |run: &mut Vec<u16>, out: &mut String| {
        if run.is_empty() {
            return;
        }
        out.push('&');
        let bytes: Vec<u8> = run.iter().flat_map(|u| u.to_be_bytes()).collect();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out.push('-');
        run.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut run, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            run.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Decode modified UTF-7 `s` to UTF-8; `None` if it is not valid modified UTF-7 (a bare
/// `&` run not closed by `-`, characters outside the alphabet, non-zero padding bits, an
/// encoded printable ASCII character, two runs back to back, invalid UTF-16), as Dovecot's
/// `imap_utf7_to_utf8()` refuses it ("Mailbox name is not valid mUTF-7").
pub fn from_mutf7(s: &str) -> Option<String> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b',' => 63,
            _ => return None,
        } as u32)
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut last_run_end = usize::MAX;
    while i < b.len() {
        let c = b[i];
        if !(0x20..=0x7e).contains(&c) {
            return None;
        }
        if c != b'&' {
            out.push(c as char);
            i += 1;
            continue;
        }
        let start = i + 1;
        let end = start + b[start..].iter().position(|&x| x == b'-')?;
        if end == start {
            out.push('&');
            i = end + 1;
            continue;
        }
        // RFC 3501: "&…-&…-" must be one run.
        if last_run_end == i {
            return None;
        }
        let mut bits = 0u32;
        let mut nbits = 0u32;
        let mut units: Vec<u16> = Vec::new();
        for &x in &b[start..end] {
            bits = (bits << 6) | val(x)?;
            nbits += 6;
            if nbits >= 16 {
                nbits -= 16;
                units.push((bits >> nbits) as u16);
                bits &= (1 << nbits) - 1;
            }
        }
        if nbits >= 6 || bits != 0 {
            return None;
        }
        let decoded = String::from_utf16(&units).ok()?;
        if decoded.chars().any(|ch| (' '..='~').contains(&ch)) {
            return None;
        }
        out.push_str(&decoded);
        i = end + 1;
        last_run_end = i;
    }
    Some(out)
}

/// Escape a subscriptions-file level (Dovecot's `str_append_tabescaped`).
pub(crate) fn tab_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\x01' => out.push_str("\x011"),
            '\t' => out.push_str("\x01t"),
            '\r' => out.push_str("\x01r"),
            '\n' => out.push_str("\x01n"),
            '\0' => out.push_str("\x010"),
            c => out.push(c),
        }
    }
    out
}

/// Undo [`tab_escape`].
pub(crate) fn tab_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\x01' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('1') => out.push('\x01'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(o) => out.push(o),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutf7_round_trip_and_rfc_examples() {
        assert_eq!(to_mutf7("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(to_mutf7("a&b"), "a&-b");
        // RFC 3501 §5.1.3's example.
        assert_eq!(
            to_mutf7("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(
            from_mutf7("~peter/mail/&U,BTFw-/&ZeVnLIqe-").as_deref(),
            Some("~peter/mail/台北/日本語")
        );
        for s in ["", "INBOX", "😀 x", "&&", "Größe/Übersicht", "a-b&c"] {
            assert_eq!(from_mutf7(&to_mutf7(s)).as_deref(), Some(s), "{s}");
        }
    }

    #[test]
    fn mutf7_refuses_what_dovecot_refuses() {
        for bad in [
            "bad&name",           // run not closed
            "&U,BTFw-&ZeVnLIqe-", // two runs back to back
            "&AGE-",              // encodes ASCII 'a'
            "&Jjo!-",             // character outside the alphabet
            "&2D0-",              // a lone surrogate
            "caf\u{e9}",          // raw 8-bit
            "&APx-",              // non-zero padding bits
        ] {
            assert_eq!(from_mutf7(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_checked_as_dovecot() {
        let c = |n: &str| check(n, '/', true).map_err(|e| e.to_string());
        assert!(c("a/b").is_ok());
        assert!(c("inbox").is_ok());
        assert!(c(".hidden").is_ok());
        assert_eq!(
            c("../x").unwrap_err(),
            "Invalid mailbox name: Contains '..' part"
        );
        assert_eq!(
            c("a/../b").unwrap_err(),
            "Invalid mailbox name: Contains '..' part"
        );
        assert_eq!(
            c("a/./b").unwrap_err(),
            "Invalid mailbox name: Contains '.' part"
        );
        assert_eq!(
            c("~q").unwrap_err(),
            "Invalid mailbox name: Begins with '~'"
        );
        assert_eq!(
            c("/abs").unwrap_err(),
            "Invalid mailbox name: Begins with hierarchy separator"
        );
        assert_eq!(
            c("p//q").unwrap_err(),
            "Invalid mailbox name: Has adjacent hierarchy separators"
        );
        assert_eq!(
            c("x/").unwrap_err(),
            "Invalid mailbox name: Ends with hierarchy separator"
        );
        assert!(c("a\0b").is_err());
        assert_eq!(
            c("a\x01b").unwrap_err(),
            "Control characters not allowed in new mailbox names"
        );
        assert_eq!(c(&"x".repeat(256)).unwrap_err(), "Mailbox name too long");
        let m = |n: &str| check(n, '.', true).map_err(|e| e.to_string());
        assert_eq!(
            m("x/y").unwrap_err(),
            "Invalid mailbox name: Name must not have '/' characters"
        );
        assert!(m("a.b").is_ok());
        assert_eq!(
            m("a..b").unwrap_err(),
            "Invalid mailbox name: Has adjacent hierarchy separators"
        );
        assert_eq!(normalize_inbox("inbox/x", '/'), "INBOX/x");
        assert_eq!(normalize_inbox("Inboxes", '/'), "Inboxes");
    }

    #[test]
    fn tab_escapes() {
        let s = "a\tb\x01c\n";
        assert_eq!(tab_unescape(&tab_escape(s)), s);
        assert!(!tab_escape(s).contains('\t'));
    }
}
