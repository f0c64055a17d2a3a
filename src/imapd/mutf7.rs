//! Modified UTF-7 mailbox names (RFC 3501 §5.1.3), encoded and decoded as Dovecot 2.3's
//! `lib-imap/imap-utf7.c` does, with its validity rules: a name holds only printable ASCII;
//! `&` opens base64 of UTF-16 closed by `-` (`&-` is `&`); a shifted printable ASCII
//! character, an encoded NUL, a lone or reversed surrogate, a bad base64 character or an
//! unnecessary shift right after a shift (`&AOk-&AOk-`) make the name invalid, which the
//! session refuses with Dovecot's `NO Mailbox name is not valid mUTF-7.`
//!
//! Known limits: none known; padding bits are not checked, as Dovecot does not.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

fn b64_value(c: u8) -> Option<u8> {
    B64.iter().position(|&b| b == c).map(|p| p as u8)
}

/// Whether `name` is valid modified UTF-7 (Dovecot's `imap_utf7_is_valid`).
pub fn is_valid(name: &[u8]) -> bool {
    name.iter().all(|&c| (0x20..0x7f).contains(&c)) && decode(name).is_some()
}

/// Decodes modified UTF-7 to UTF-8; `None` when invalid.
pub fn decode(name: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        let c = name[i];
        if !(0x20..0x7f).contains(&c) {
            return None;
        }
        if c != b'&' {
            out.push(c as char);
            i += 1;
            continue;
        }
        i += 1;
        if name.get(i) == Some(&b'-') {
            out.push('&');
            i += 1;
            continue;
        }
        // base64 up to '-'
        let end = i + name[i..].iter().position(|&b| b == b'-')?;
        let mut bits: u32 = 0;
        let mut nbits = 0;
        let mut units: Vec<u16> = Vec::new();
        let mut bytes: Vec<u8> = Vec::new();
        for &b in &name[i..end] {
            let v = b64_value(b)?;
            bits = (bits << 6) | u32::from(v);
            nbits += 6;
            if nbits >= 8 {
                nbits -= 8;
                bytes.push((bits >> nbits) as u8);
                bits &= (1 << nbits) - 1;
            }
        }
        if bytes.is_empty() || !bytes.len().is_multiple_of(2) {
            return None;
        }
        for pair in bytes.chunks(2) {
            units.push(u16::from(pair[0]) << 8 | u16::from(pair[1]));
        }
        let mut k = 0;
        while k < units.len() {
            let u = units[k];
            if (0xd800..=0xdbff).contains(&u) {
                let low = *units.get(k + 1)?;
                if !(0xdc00..=0xdfff).contains(&low) {
                    return None;
                }
                let ch = 0x10000 + ((u32::from(u) & 0x3ff) << 10 | (u32::from(low) & 0x3ff));
                out.push(char::from_u32(ch)?);
                k += 2;
                continue;
            }
            if (0xdc00..=0xdfff).contains(&u) || u == 0 || (0x20..0x7f).contains(&u) {
                return None;
            }
            out.push(char::from_u32(u32::from(u))?);
            k += 1;
        }
        i = end + 1;
        // An unnecessary shift right after this one.
        if name.get(i) == Some(&b'&') && name.get(i + 1) != Some(&b'-') {
            return None;
        }
    }
    Some(out)
}

/// Encodes UTF-8 to modified UTF-7 (Dovecot's `imap_utf8_to_utf7`).
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        out.push('&');
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        let mut bits: u32 = 0;
        let mut nbits = 0;
        for b in bytes {
            bits = (bits << 8) | u32::from(b);
            nbits += 8;
            while nbits >= 6 {
                nbits -= 6;
                out.push(B64[((bits >> nbits) & 63) as usize] as char);
            }
        }
        if nbits > 0 {
            out.push(B64[((bits << (6 - nbits)) & 63) as usize] as char);
        }
        out.push('-');
        pending.clear();
    };
    for ch in name.chars() {
        if (' '..='~').contains(&ch) {
            flush(&mut pending, &mut out);
            out.push(ch);
            if ch == '&' {
                out.push('-');
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(ch.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dovecot_validity_as_recorded() {
        // compat-fixtures/imap/session.txt: CREATE of each name.
        assert!(is_valid(b"Caf&AOk-"));
        assert!(is_valid(b"&-x"));
        assert!(is_valid(b"&ZeVnLIqe-"));
        assert!(!is_valid(b"&Jjo"));
        assert!(!is_valid(b"&AGEAYgBj-"));
        assert!(!is_valid("caf\u{e9}".as_bytes()));
        assert_eq!(decode(b"Caf&AOk-").as_deref(), Some("Caf\u{e9}"));
        assert_eq!(
            decode(b"&ZeVnLIqe-").as_deref(),
            Some("\u{65e5}\u{672c}\u{8a9e}")
        );
        assert_eq!(decode(b"&-x").as_deref(), Some("&x"));
    }

    #[test]
    fn roundtrip() {
        for s in [
            "INBOX",
            "Caf\u{e9}",
            "a&b",
            "\u{65e5}\u{672c}\u{8a9e}",
            "x\u{1F600}y",
            "~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}",
        ] {
            let e = encode(s);
            assert!(is_valid(e.as_bytes()), "{e}");
            assert_eq!(decode(e.as_bytes()).as_deref(), Some(s));
        }
        // RFC 3501's example.
        assert_eq!(
            encode("~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
    }
}
