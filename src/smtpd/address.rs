//! Envelope addresses as smtpd sees them: parsing the `MAIL FROM:`/`RCPT TO:` argument
//! (Postfix `smtpd.c` `extract_addr()`: the `<…>` token as `smtpd_token.c` cuts it, then
//! RFC 822 forms as its `tok822` parser takes them, comments dropped, backslash escapes
//! outside quotes undone, `phrase <addr>` taken as `addr`, two addresses refused),
//! qualifying bare names (`append_at_myorigin`,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// `MAIL` without `FROM:` (or `RCPT` without `TO:`): the syntax reply.
    Syntax,
    /// Malformed address: `Bad sender/recipient address syntax`.
    BadAddress,
    /// More than one address (`<a@x, b@y>`): the same reply, after Postfix's `warning:
    /// Illegal address syntax from CLIENT in MAIL/RCPT command: TOKEN` with the token as
    /// the client sent it.
    Illegal(String),
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
        let Some(end) = angle_end(r) else {
            return Err(PathError::BadAddress);
        };
        (&r[..end], &r[end + 1..])
    } else {
        if strict {
            return Err(PathError::BadAddress);
        }
        match rest.find([' ', '\t']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        }
    };
    if !params_text.is_empty() && !params_text.starts_with([' ', '\t']) {
        return Err(PathError::BadAddress);
    }
    // RFC 5321 source routes (`@a,@b:user@c`) are stripped, as Postfix does.
    let address = match address.find(':') {
        Some(i) if address.starts_with('@') => &address[i + 1..],
        _ => address,
    };
    let address = if rfc822_form(address) {
        match extract_822(address) {
            Some(a) => a,
            None => {
                let token = &rest[..rest.len() - params_text.len()];
                return Err(PathError::Illegal(token.to_string()));
            }
        }
    } else {
        address.to_string()
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

/// Where the `<…>` that `r` (the text after the opening `<`) starts ends, as Postfix's
/// `smtpd_token.c` `smtp_quoted()` finds it: a backslash escapes the next character, a
/// quoted string hides `<` and `>`, an inner `<` (`<Name <u@d>>`) nests.
fn angle_end(r: &str) -> Option<usize> {
    let mut stack = vec!['>'];
    let mut escaped = false;
    for (i, c) in r.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        let wanted = *stack.last()?;
        match c {
            '\\' => escaped = true,
            c if c == wanted => {
                stack.pop();
                if stack.is_empty() {
                    return Some(i);
                }
            }
            '"' => stack.push('"'),
            '<' if wanted == '>' => stack.push('>'),
            _ => {}
        }
    }
    None
}

/// Whether an address holds RFC 822 forms that only Postfix's `tok822` parser makes sense
/// of: a comment, a backslash escape, an angle address or a comma outside quotes. Other
/// addresses are kept as the client wrote them.
fn rfc822_form(a: &str) -> bool {
    let mut in_quote = false;
    let mut escaped = false;
    for c in a.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if !in_quote => return true,
            '\\' => escaped = true,
            '"' => in_quote = !in_quote,
            '(' | '<' | ',' if !in_quote => return true,
            _ => {}
        }
    }
    false
}

/// One RFC 822 token of [`extract_822`].
#[derive(PartialEq)]
enum Tok822 {
    /// An atom with its backslash escapes undone, or a quoted string's content.
    Word(String),
    /// A domain literal, brackets included.
    Literal(String),
    Op(char),
    Space,
}

/// Postfix `extract_addr()` for an address in RFC 822 form: `tok822_parse()` (comments,
/// an unclosed one running to the end, dropped; `\x` outside quotes is `x`), more than one
/// address refused (`None`), of `phrase <addr>` only `addr`, then `tok822_internalize()`.
/// The result is the address in the quoted form Postern carries addresses in (the
/// internal form's local part quoted by `quote_822_local()` when it is not a
/// dot-string): `u\ v@d` is `"u v"@d`, `user@d (comment)` is `user@d`, `u(x)@a@b` is
/// `"u@a"@b`. Words left side by side (`a b@c`) stay as they are, for
/// [`address_syntax_ok`] to refuse.
fn extract_822(a: &str) -> Option<String> {
    let mut toks = Vec::new();
    let mut it = a.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            c if c.is_whitespace() => {
                if toks.last() != Some(&Tok822::Space) {
                    toks.push(Tok822::Space);
                }
            }
            '(' => {
                let mut depth = 1;
                while let Some(c) = it.next() {
                    match c {
                        '\\' => {
                            it.next();
                        }
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                if toks.last() != Some(&Tok822::Space) {
                    toks.push(Tok822::Space);
                }
            }
            '"' => {
                let mut q = String::new();
                while let Some(c) = it.next() {
                    match c {
                        '\\' => q.extend(it.next()),
                        '"' => break,
                        c => q.push(c),
                    }
                }
                toks.push(Tok822::Word(q));
            }
            '[' => {
                let mut d = String::from('[');
                for c in it.by_ref() {
                    d.push(c);
                    if c == ']' {
                        break;
                    }
                }
                toks.push(Tok822::Literal(d));
            }
            c if "()<>@,;:.]".contains(c) => toks.push(Tok822::Op(c)),
            c => {
                let mut w = String::new();
                let mut c = Some(c);
                while let Some(ch) = c {
                    if ch == '\\' {
                        w.extend(it.next());
                    } else {
                        w.push(ch);
                    }
                    c = it.next_if(|&n| !n.is_whitespace() && !"()<>@,;:.[]\"".contains(n));
                }
                toks.push(Tok822::Word(w));
            }
        }
    }
    // Addresses are separated by commas outside angle brackets.
    let mut groups: Vec<Vec<Tok822>> = vec![Vec::new()];
    let mut depth = 0usize;
    for t in toks {
        match t {
            Tok822::Op('<') => depth += 1,
            Tok822::Op('>') => depth = depth.saturating_sub(1),
            Tok822::Op(',') if depth == 0 => {
                groups.push(Vec::new());
                continue;
            }
            _ => {}
        }
        groups.last_mut()?.push(t);
    }
    groups.retain(|g| g.iter().any(|t| *t != Tok822::Space));
    if groups.len() > 1 {
        return None;
    }
    let mut g = groups.pop().unwrap_or_default();
    // `phrase <addr>`: the address between the angle brackets.
    if let Some(open) = g.iter().position(|t| *t == Tok822::Op('<')) {
        let close = g
            .iter()
            .rposition(|t| *t == Tok822::Op('>'))
            .filter(|&c| c > open)
            .unwrap_or(g.len());
        g = g.drain(open + 1..close).collect();
        if let Some(colon) = g.iter().position(|t| *t == Tok822::Op(':'))
            && g.iter().find(|t| **t != Tok822::Space) == Some(&Tok822::Op('@'))
        {
            g.drain(..=colon);
        }
    }
    // Trim the white space around the address; inside it, white space is kept only
    // between two words (where `address_syntax_ok` refuses it, as before).
    while g.first() == Some(&Tok822::Space) {
        g.remove(0);
    }
    while g.last() == Some(&Tok822::Space) {
        g.pop();
    }
    let mut internal = String::with_capacity(a.len());
    for (i, t) in g.iter().enumerate() {
        match t {
            Tok822::Word(w) | Tok822::Literal(w) => internal.push_str(w),
            Tok822::Op(c) => internal.push(*c),
            Tok822::Space => {
                let word = |t: Option<&Tok822>| matches!(t, Some(Tok822::Word(_)));
                if word(i.checked_sub(1).and_then(|j| g.get(j))) && word(g.get(i + 1)) {
                    return Some(a.to_string());
                }
            }
        }
    }
    if internal.is_empty() {
        return Some(internal);
    }
    Some(crate::queue::header::quote_822_local(&internal))
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
    crate::queue::header::quote_822_local(&internal)
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

    /// RFC 822 forms that Postfix's extract_addr() takes (compat-fixtures/reject-log/,
    /// compat-fixtures/relay/): until issue 17's third round the first ones were
    /// `BadAddress` and the backslash was kept.
    #[test]
    fn rfc822_forms() {
        let to = |a: &str| parse_path(&format!("TO:{a}"), "TO:", false).map(|p| p.address);
        for (arg, carried) in [
            ("<user@other.example (comment)>", "user@other.example"),
            ("<user(c)@other.example>", "user@other.example"),
            ("<(c) user@other.example>", "user@other.example"),
            ("<user@other.example (unclosed>", "user@other.example"),
            ("<root@localhost(user@other.example)>", "root@localhost"),
            (
                "<user@other.example(x)@localhost>",
                "\"user@other.example\"@localhost",
            ),
            ("<u\\ v@other.example>", "\"u v\"@other.example"),
            ("<s\\\"v@example.org>", "\"s\\\"v\"@example.org"),
            ("<u\\@v@other.example>", "\"u@v\"@other.example"),
            ("<Name <user@other.example>>", "user@other.example"),
            ("<Name <@r:user@other.example>>", "user@other.example"),
            ("<\"a (b)\"@d (c)>", "\"a (b)\"@d"),
            ("<j\u{f6}rg@d (c)>", "j\u{f6}rg@d"),
            ("<@r:u@d (c)>", "u@d"),
        ] {
            assert_eq!(to(arg), Ok(carried.to_string()), "{arg}");
        }
        assert_eq!(
            to("<a@x.example, b@y.example>"),
            Err(PathError::Illegal("<a@x.example, b@y.example>".into()))
        );
        assert_eq!(to("<a (c) b@d>"), Err(PathError::BadAddress));
        assert_eq!(to("<a b@c>"), Err(PathError::BadAddress));
        // The comment after the brackets is an ESMTP parameter, as in Postfix (555).
        let p = parse_path("TO:<u@d> (comment)", "TO:", false).unwrap();
        assert_eq!(p.params, vec![("(comment)".to_string(), None)]);
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
