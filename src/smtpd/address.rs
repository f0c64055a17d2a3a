//! Envelope addresses as smtpd sees them: parsing the `MAIL FROM:`/`RCPT TO:` argument
//! (Postfix `smtpd.c` `extract_addr()`), qualifying bare names (`append_at_myorigin`,
//! `append_dot_mydomain`, as trivial-rewrite does), and the address class of a domain
//! (local, virtual alias, virtual mailbox, relay, default) that the relay decisions use.

/// The `<address> PARAM=value …` argument of MAIL FROM / RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathArg {
    /// The address without angle brackets, as the client wrote it.
    pub address: String,
    /// ESMTP parameters, in order (`SIZE=100`, `BODY=8BITMIME`, …).
    pub params: Vec<(String, Option<String>)>,
}

/// Why an argument could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `MAIL` without `FROM:` (or `RCPT` without `TO:`): the syntax reply.
    Syntax,
    /// Malformed address: `Bad sender/recipient address syntax`.
    BadAddress,
}

/// Parse what follows the command verb. `keyword` is `FROM:` or `TO:`.
pub fn parse_path(arg: &str, keyword: &str, strict: bool) -> Result<PathArg, PathError> {
    let a = arg.trim_start();
    // `get`: the argument may hold any UTF-8 (SMTPUTF8), so the keyword's length need not
    // fall on a character boundary (`RCPT T\u{e9}…` panicked here, found by fuzzing).
    if !a
        .get(..keyword.len())
        .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
    {
        return Err(PathError::Syntax);
    }
    let mut rest = &a[keyword.len()..];
    if !strict {
        rest = rest.trim_start();
    }
    if rest.is_empty() {
        return Err(PathError::Syntax);
    }
    let (address, params_text) = if let Some(r) = rest.strip_prefix('<') {
        // The address ends at the first '>' outside a quoted string.
        let mut in_quote = false;
        let mut escaped = false;
        let mut end = None;
        for (i, c) in r.char_indices() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' => escaped = true,
                '"' => in_quote = !in_quote,
                '>' if !in_quote => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            return Err(PathError::BadAddress);
        };
        (r[..end].to_string(), &r[end + 1..])
    } else {
        if strict {
            return Err(PathError::BadAddress);
        }
        match rest.find([' ', '\t']) {
            Some(i) => (rest[..i].to_string(), &rest[i..]),
            None => (rest.to_string(), ""),
        }
    };
    if !params_text.is_empty() && !params_text.starts_with([' ', '\t']) {
        return Err(PathError::BadAddress);
    }
    // RFC 5321 source routes (`@a,@b:user@c`) are stripped, as Postfix does.
    let address = match address.rfind(':') {
        Some(i) if address.starts_with('@') => address[i + 1..].to_string(),
        _ => address,
    };
    if !address_syntax_ok(&address) {
        return Err(PathError::BadAddress);
    }
    let params = params_text
        .split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (w.to_string(), None),
        })
        .collect();
    Ok(PathArg { address, params })
}

/// A conservative RFC 5321 mailbox check: no white space or control characters outside a
/// quoted local part, balanced quotes, no `<`/`>` inside.
fn address_syntax_ok(a: &str) -> bool {
    let mut in_quote = false;
    let mut escaped = false;
    for c in a.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => in_quote = !in_quote,
            c if c.is_control() => return false,
            ' ' | '\t' | '<' | '>' if !in_quote => return false,
            _ => {}
        }
    }
    !in_quote && !a.starts_with('@') && !a.ends_with('@')
}

/// An envelope address as smtpd's log lines show it in `from=<…>` and `to=<…>`: Postfix
/// 3.7's `info_log_addr_form_sender()`/`_recipient()` with `info_log_address_format =
/// external` (the default), that is the internal form (quotes and their escapes removed,
/// as the replies show it) quoted again by `quote_822_local()` (8-bit clean) where the
/// local part is not a dot-string. So `"user"@d` is logged `user@d`, `user.@d`
/// `"user."@d`, `"a b"@d` stays `"a b"@d`, `""@d` stays `""@d`, and `<>` is `<>`.
/// Recorded against the real Postfix 3.7.11 in compat-fixtures/reject-log/.
pub fn log_form(addr: &str) -> String {
    let internal = crate::resolve::rewrite::internal_form(addr);
    if internal.is_empty() {
        return internal;
    }
    // queue::header's quote_822_local() leaves an empty local part alone; Postfix's
    // is_822_dot_string() says an empty string is not a dot-string, so it is quoted.
    match internal.rfind('@') {
        Some(0) => format!("\"\"{internal}"),
        _ => crate::queue::header::quote_822_local(&internal),
    }
}

// trivial-rewrite's part of address handling, which smtpd's checks use.
pub use crate::resolve::{AddressClass, address_literal, is_local_interface, qualify, split};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = parse_path("FROM:<a@b.c> SIZE=10 BODY=8BITMIME", "FROM:", false).unwrap();
        assert_eq!(p.address, "a@b.c");
        assert_eq!(p.params[0], ("SIZE".into(), Some("10".into())));
        assert_eq!(
            parse_path("FROM:a@b.c", "FROM:", false).unwrap().address,
            "a@b.c"
        );
        assert_eq!(parse_path("from: <>", "FROM:", false).unwrap().address, "");
        assert_eq!(parse_path("FROM:", "FROM:", false), Err(PathError::Syntax));
        assert_eq!(
            parse_path("TO:<a@b.c>", "FROM:", false),
            Err(PathError::Syntax)
        );
        assert_eq!(
            parse_path("FROM:<a@b.c", "FROM:", false),
            Err(PathError::BadAddress)
        );
        assert_eq!(
            parse_path("FROM:<a b@c>", "FROM:", false),
            Err(PathError::BadAddress)
        );
        assert_eq!(
            parse_path("TO:<@r1,@r2:u@d>", "TO:", false)
                .unwrap()
                .address,
            "u@d"
        );
        assert_eq!(
            parse_path("TO:<\"a b\"@d>", "TO:", false).unwrap().address,
            "\"a b\"@d"
        );
    }

    #[test]
    fn log_forms() {
        for (raw, logged) in [
            ("sender@example.org", "sender@example.org"),
            ("\"sender\"@example.org", "sender@example.org"),
            ("\"a b\"@example.org", "\"a b\"@example.org"),
            ("\"first.last\"@d", "first.last@d"),
            ("\"first..last\"@d", "\"first..last\"@d"),
            ("user.@d", "\"user.\"@d"),
            (".user@d", "\".user\"@d"),
            ("\"a\\\"b\"@d", "\"a\\\"b\"@d"),
            ("\"u@v\"@d", "\"u@v\"@d"),
            ("\"\"@d", "\"\"@d"),
            ("", ""),
            ("\"Quoted Name\"", "\"Quoted Name\""),
            ("j\u{f6}rg@d", "j\u{f6}rg@d"),
            ("User@Other.EXAMPLE.", "User@Other.EXAMPLE."),
        ] {
            assert_eq!(log_form(raw), logged, "{raw}");
        }
    }

    #[test]
    fn literals() {
        assert_eq!(
            address_literal("[127.0.0.1]"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(address_literal("[IPv6:::1]"), Some("::1".parse().unwrap()));
        assert_eq!(address_literal("example.com"), None);
    }
}
