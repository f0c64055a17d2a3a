//! trivial-rewrite's address rewriting and resolution loop (Postfix `rewrite.c`
//! `rewrite_tree()` and `resolve.c` `resolve_addr()`), on RFC 822 tokens as Postfix's
//! `tok822` scanner makes them: what address a recipient really is after the source route
//! is stripped (`@a:user@b` → `user@b`), `site!user` is swapped to `user@site`
//! (`swap_bangpath`), `user%site` becomes `user@site` (`allow_percent_hack`), a quoted
//! local part holding `@`, `%` or `!` is opened (`resolve_dequoted_address`), each local
//! domain at the end is stripped and the rest resolved again, a trailing `@` is dropped
//! (`resolve_null_domain`), and a bare IP address domain is taken as `[ip]`
//! (`resolve_numeric_domain`).
//!
//! The result ([`Resolved`]) has the recipient (in the quoted form Postern carries
//! addresses in), the address class (local when every domain was a local one), whether
//! the address is sender-routed (an `@`, `!` or `%` left in the local part:
//! `RESOLVE_FLAG_ROUTED`, which `allow_untrusted_routing = no` never lets relay) and
//! whether its domain is bad (`RESOLVE_FLAG_ERROR`, smtpd's `501 5.1.3 Bad recipient
//! address syntax`). Recorded against the real Postfix 3.7.11 in compat-fixtures/rewrite/.

use super::{AddressClass, Addresses, LookupFailed};

/// One RFC 822 token (Postfix `TOK822`): the operators include `%` and `!`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Atom(String),
    /// A quoted string's content, unquoted.
    QStr(String),
    /// `[...]`, brackets included.
    DomLit(String),
    Op(char),
}

const OPS: &str = "|%!()<>@,;:\\\".[]";

/// `tok822_scan()`: comments are dropped, white space separates.
fn scan(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            c if c.is_whitespace() => {}
            '"' => {
                let mut q = String::new();
                while let Some(c) = it.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = it.next() {
                                q.push(n);
                            }
                        }
                        '"' => break,
                        c => q.push(c),
                    }
                }
                out.push(Tok::QStr(q));
            }
            '[' => {
                let mut d = String::from("[");
                for c in it.by_ref() {
                    d.push(c);
                    if c == ']' {
                        break;
                    }
                }
                out.push(Tok::DomLit(d));
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
            }
            c if OPS.contains(c) => out.push(Tok::Op(c)),
            c => {
                let mut a = String::from(c);
                while let Some(&n) = it.peek() {
                    if n.is_whitespace() || OPS.contains(n) {
                        break;
                    }
                    a.push(n);
                    it.next();
                }
                out.push(Tok::Atom(a));
            }
        }
    }
    out
}

/// `tok822_internalize()`: quoted strings without their quotes.
fn internalize(t: &[Tok]) -> String {
    let mut s = String::new();
    for tok in t {
        match tok {
            Tok::Atom(a) | Tok::QStr(a) | Tok::DomLit(a) => s.push_str(a),
            Tok::Op(c) => s.push(*c),
        }
    }
    s
}

fn rfind_op(t: &[Tok], op: char) -> Option<usize> {
    t.iter().rposition(|x| *x == Tok::Op(op))
}

fn find_op(t: &[Tok], op: char) -> Option<usize> {
    t.iter().position(|x| *x == Tok::Op(op))
}

/// Postfix `quote_822_local()` as trivial-rewrite calls it: 8-bit clean, and the empty
/// address quoted (`""`), so that it scans to one empty quoted string.
pub fn quote_822_local(addr: &str) -> String {
    quote_822_local_flags(addr, QUOTE_FLAG_8BITCLEAN).into_owned()
}

/// `quote_822_local_flags()` flag: 8-bit characters are ordinary text, neither a reason
/// to quote nor backslash-escaped (Postfix `QUOTE_FLAG_8BITCLEAN`, part of
/// `QUOTE_FLAG_DEFAULT` and so of every `quote_822_local()` call).
pub const QUOTE_FLAG_8BITCLEAN: u32 = 1;

/// Postfix `is_822_dot_string()`: atoms separated by single dots; an empty local part is
/// not one.
fn is_822_dot_string(local: &str, flags: u32) -> bool {
    !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| {
            if c.is_ascii() {
                c != ' ' && !c.is_ascii_control() && !"()<>@,;:\\\"[]".contains(c)
            } else {
                flags & QUOTE_FLAG_8BITCLEAN != 0
            }
        })
}

/// Postfix `quote_822_local_flags()` (`quote_822_local.c`): the local part of an
/// internal-form address (after any `@route:`, up to the last `@`) made a quoted string
/// when it is not a dot-string: `odd user@example.org` is `"odd user"@example.org`,
/// `@d` is `""@d`, `"` `\` and CR escaped inside; without [`QUOTE_FLAG_8BITCLEAN`]
/// 8-bit characters are quoted and escaped too. Borrows `addr` when it needs no quotes
/// (nearly always: `mailq` on a large queue copies no address). The empty address is
/// quoted (`""`), as trivial-rewrite's resolve needs it; the queue's header code has
/// the envelope version, where it is the null sender.
pub fn quote_822_local_flags(addr: &str, flags: u32) -> std::borrow::Cow<'_, str> {
    let start = match addr.find(':') {
        Some(i) if addr.starts_with('@') => i + 1,
        _ => 0,
    };
    let end = addr[start..].rfind('@').map_or(addr.len(), |i| start + i);
    let local = &addr[start..end];
    if is_822_dot_string(local, flags) {
        return std::borrow::Cow::Borrowed(addr);
    }
    let mut out = String::with_capacity(addr.len() + 2);
    out.push_str(&addr[..start]);
    out.push('"');
    for c in local.chars() {
        if c == '"'
            || c == '\\'
            || c == '\r'
            || (!c.is_ascii() && flags & QUOTE_FLAG_8BITCLEAN == 0)
        {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out.push_str(&addr[end..]);
    std::borrow::Cow::Owned(out)
}

/// An address in Postfix's internal form (`tok822_internalize()`): every quoted string
/// unquoted and its backslash escapes undone, wherever it stands (`"a b"@c` is `a b@c`,
/// `x"a b"@c` is `xa b@c`); an unterminated one runs to the end (`"abc@d` is `abc@d`).
/// Addresses without quotes are returned as they are. The one function for smtpd's
/// replies, access keys and trivial-rewrite.
pub fn internal_form(addr: &str) -> String {
    if !addr.contains('"') {
        return addr.to_string();
    }
    let mut out = String::with_capacity(addr.len());
    let mut chars = addr.chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// What trivial-rewrite's resolve makes of an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The resolved recipient, its local part quoted when it needs it.
    pub recipient: String,
    pub class: AddressClass,
    /// `RESOLVE_FLAG_ROUTED`: routing operators (`@`, `!`, `%`) remain in the local part.
    pub routed: bool,
    /// `RESOLVE_FLAG_ERROR`: the resolved domain is not a valid host name or literal.
    pub error: bool,
}

/// Postfix `valid_hostname()`: labels of letters, digits, `-` and `_`, none empty, none
/// longer than 63 or starting or ending with `-`, 255 in all, the last not all digits.
/// `utf8`: non-ASCII characters pass too (trivial-rewrite's `valid_utf8_hostname()` with
/// SMTPUTF8 on); smtpd's own checks (`reject_invalid_helo_hostname`,
/// `reject_non_fqdn_*`, the DNS checks) pass `false`.
pub fn valid_hostname(h: &str, utf8: bool) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '-' || c == '_' || (utf8 && !c.is_ascii())
                })
        })
        && !h
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

/// Postfix `valid_mailhost_literal()`: `[1.2.3.4]` or `[IPv6:…]`.
fn valid_mailhost_literal(d: &str) -> bool {
    let Some(inner) = d.strip_prefix('[').and_then(|x| x.strip_suffix(']')) else {
        return false;
    };
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => {
            inner[5..].parse::<std::net::Ipv6Addr>().is_ok()
        }
        _ => inner.parse::<std::net::Ipv4Addr>().is_ok(),
    }
}

impl Addresses {
    /// `rewrite_tree()` in the `local` context: strip a source route, swap a bang path or
    /// promote the last `%` (address without `@`), append `@$myorigin`
    /// (`append_at_myorigin`) and `.$mydomain` (`append_dot_mydomain`), strip a trailing dot.
    fn rewrite_tree(&self, tree: &mut Vec<Tok>) {
        if tree.is_empty() {
            return;
        }
        if tree.len() == 1 && tree[0] == Tok::QStr(String::new()) {
            return;
        }
        if tree.len() == 1 && tree[0] == Tok::Op('@') {
            *tree = vec![Tok::QStr(String::new())];
            return;
        }
        if tree[0] == Tok::Op('@')
            && let Some(colon) = find_op(tree, ':')
            && colon != tree.len() - 1
        {
            tree.drain(..=colon);
        }
        if rfind_op(tree, '@').is_none() {
            if self.swap_bangpath
                && let Some(bang) = find_op(tree, '!')
            {
                let local = tree.split_off(bang + 1);
                tree.pop();
                let site = std::mem::replace(tree, local);
                tree.push(Tok::Op('@'));
                tree.extend(site);
            } else if self.allow_percent_hack
                && let Some(pct) = rfind_op(tree, '%')
            {
                tree[pct] = Tok::Op('@');
            } else if self.append_at_myorigin && !self.myorigin.is_empty() {
                tree.push(Tok::Op('@'));
                tree.extend(scan(&self.myorigin));
            }
        }
        if self.append_dot_mydomain
            && !self.mydomain.is_empty()
            && let Some(at) = rfind_op(tree, '@')
            && at != tree.len() - 1
            && !tree[at..].iter().any(|t| matches!(t, Tok::DomLit(_)))
            && find_op(&tree[at..], '.').is_none()
        {
            if self.append_dot_mydomain_compat {
                let d = internalize(&tree[at + 1..]);
                let please = if d.eq_ignore_ascii_case("localhost") {
                    "; please add \"localhost\" to mydestination or other address class"
                } else {
                    ""
                };
                crate::log::info(
                    "postfix/trivial-rewrite",
                    &format!(
                        "using backwards-compatible default setting append_dot_mydomain=yes to rewrite \"{d}\" to \"{d}.{}\"{please}",
                        self.mydomain
                    ),
                );
            }
            tree.push(Tok::Op('.'));
            tree.extend(scan(&self.mydomain));
        }
        let n = tree.len();
        if n >= 2
            && tree[n - 1] == Tok::Op('.')
            && tree[n - 2] != Tok::Op('.')
            && tree[n - 2] != Tok::Op('@')
        {
            tree.pop();
        }
    }

    /// smtpd's `rewrite_clnt_internal("local", …)`: an address (quoted or internal form)
    /// rewritten to canonical form, in internal form.
    pub fn rewrite_local(&self, addr: &str) -> String {
        let internal = internal_form(addr);
        let mut tree = scan(&quote_822_local(&internal));
        self.rewrite_tree(&mut tree);
        internalize(&tree)
    }

    /// Is `domain` local (`resolve_local()`: `mydestination`, this host's `[ip]`)?
    fn resolve_local(
        &self,
        domain: &str,
        warnings: &mut Vec<String>,
    ) -> Result<bool, LookupFailed> {
        let d = domain.trim_end_matches('.');
        if d.is_empty() {
            return Ok(false);
        }
        if let Some(ip) = super::address_literal(d) {
            return Ok(super::is_local_interface(ip, self));
        }
        self.domain_in(
            &self.mydestination,
            &d.to_ascii_lowercase(),
            "mydestination",
            warnings,
        )
    }

    /// What smtpd's resolver asks: `addr` rewritten in the local context, then resolved
    /// ([`Addresses::resolve_addr`]).
    pub fn resolve(
        &self,
        addr: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Resolved, LookupFailed> {
        self.resolve_addr(&self.rewrite_local(addr), warnings)
    }

    /// trivial-rewrite's `resolve_addr()` for an internal-form address. `Err` when a
    /// domain list could not be searched (what to log is in `warnings`), or when the
    /// address needs too many rounds (logged as Postfix logs it).
    pub fn resolve_addr(
        &self,
        addr: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Resolved, LookupFailed> {
        let mut tree = scan(&quote_822_local(addr));
        let mut saved: Option<Vec<Tok>> = None;
        let mut remote = false;
        let max = addr.len() + 100;
        let mut count = 0;
        loop {
            if count > max {
                warnings.push(format!(
                    "resolve_addr: <{addr}>: giving up after {count} iterations"
                ));
                return Err(LookupFailed);
            }
            count += 1;
            let n = tree.len();
            if n >= 2
                && tree[n - 1] == Tok::Op('.')
                && rfind_op(&tree, '@').is_some()
                && tree[n - 2] != Tok::Op('.')
                && tree[n - 2] != Tok::Op('@')
            {
                tree.pop();
            }
            if self.resolve_null_domain && tree.last() == Some(&Tok::Op('@')) {
                tree.pop();
            }
            if let Some(at) = rfind_op(&tree, '@') {
                if at + 1 < tree.len()
                    && !self.resolve_local(&internalize(&tree[at + 1..]), warnings)?
                {
                    remote = true;
                    break;
                }
                saved = Some(tree.split_off(at));
            }
            if rfind_op(&tree, '@').is_some()
                || (self.swap_bangpath && rfind_op(&tree, '!').is_some())
                || (self.allow_percent_hack && rfind_op(&tree, '%').is_some())
            {
                self.rewrite_tree(&mut tree);
                continue;
            }
            if self.resolve_dequoted_address
                && let [Tok::QStr(local)] = tree.as_slice()
            {
                let oper = local
                    .rfind('@')
                    .map(|i| (i, '@'))
                    .or_else(|| {
                        self.allow_percent_hack
                            .then(|| local.rfind('%').map(|i| (i, '%')))
                            .flatten()
                    })
                    .or_else(|| {
                        self.swap_bangpath
                            .then(|| local.rfind('!').map(|i| (i, '!')))
                            .flatten()
                    });
                if let Some((i, op)) = oper {
                    let mut text = local.clone();
                    if op == '%' {
                        text.replace_range(i..i + 1, "@");
                    }
                    if op != '!' {
                        text = quote_822_local(&text);
                    }
                    tree = scan(&text);
                    self.rewrite_tree(&mut tree);
                    continue;
                }
            }
            if tree.len() == 1 && tree[0] == Tok::QStr(String::new()) {
                tree.clear();
            }
            if tree.is_empty() {
                tree = scan("MAILER-DAEMON");
                continue;
            }
            if saved.is_none() {
                tree.push(Tok::Op('@'));
                tree.extend(scan(&self.myhostname));
                continue;
            }
            break;
        }
        if !remote {
            match saved.take() {
                Some(s) => tree.extend(s),
                None => {
                    tree.push(Tok::Op('@'));
                    tree.extend(scan(&self.myhostname));
                }
            }
        }
        let mut next = internalize(&tree);
        let at = next.rfind('@').unwrap_or(next.len());
        let mut domain = next.get(at + 1..).unwrap_or("").to_string();
        let mut error = false;
        if domain.starts_with('[') {
            error = !valid_mailhost_literal(&domain);
        } else if !valid_hostname(&domain, true) {
            if self.resolve_numeric_domain && domain.parse::<std::net::IpAddr>().is_ok() {
                domain = format!("[{domain}]");
                next = format!("{}@{domain}", &next[..at]);
                if self.resolve_local(&domain, warnings)? {
                    remote = false;
                }
            } else {
                error = true;
            }
        }
        let recipient = quote_822_local(&next);
        if error {
            return Ok(Resolved {
                recipient,
                class: AddressClass::Default,
                routed: false,
                error: true,
            });
        }
        let first_op = next.find(['@', '!', '%']).map_or(next.len(), |i| i + 1);
        let routed = next.get(first_op..) != Some(domain.as_str());
        let class = if remote {
            self.remote_class(&domain.to_ascii_lowercase(), warnings)?
        } else {
            AddressClass::Local
        };
        Ok(Resolved {
            recipient,
            class,
            routed,
            error: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> Addresses {
        Addresses {
            myorigin: "mail.example.test".into(),
            mydomain: "example.test".into(),
            myhostname: "mail.example.test".into(),
            append_at_myorigin: true,
            append_dot_mydomain: false,
            mydestination: vec!["mail.example.test".into(), "localhost".into()],
            inet_interfaces: vec!["127.0.0.1".into()],
            allow_percent_hack: true,
            swap_bangpath: true,
            resolve_dequoted_address: true,
            ..Default::default()
        }
    }

    fn r(a: &Addresses, addr: &str) -> (String, AddressClass, bool, bool) {
        let x = a.resolve(addr, &mut Vec::new()).unwrap();
        (x.recipient, x.class, x.routed, x.error)
    }

    use AddressClass::{Default as Remote, Local};

    /// compat-fixtures/rewrite/resolve.txt: every nmap form resolves to the same remote
    /// recipient, not routed.
    /// Where smtpd's own internal_form() (gone, this is the one) and this one differed:
    /// Postfix's tok822_internalize() unquotes every quoted string, an unterminated one
    /// to the end.
    #[test]
    fn internal_forms() {
        assert_eq!(internal_form("\"a b\"@c"), "a b@c");
        assert_eq!(internal_form("x\"a b\"@c"), "xa b@c");
        assert_eq!(internal_form("\"abc@d"), "abc@d");
        assert_eq!(internal_form("\"a\\\"b\"@d"), "a\"b@d");
        assert_eq!(internal_form("\"u@v\"@d"), "u@v@d");
        assert_eq!(internal_form("plain@d"), "plain@d");
        assert_eq!(internal_form(""), "");
    }

    #[test]
    fn nmap_forms_resolve_as_trivial_rewrite_resolves_them() {
        let a = addrs();
        for f in [
            "relaytest@nmap.scanme.org",
            "relaytest%nmap.scanme.org@[127.0.0.1]",
            "relaytest%nmap.scanme.org@mail.example.test",
            "\"relaytest@nmap.scanme.org\"",
            "\"relaytest%nmap.scanme.org\"",
            "relaytest@nmap.scanme.org@[127.0.0.1]",
            "\"relaytest@nmap.scanme.org\"@[127.0.0.1]",
            "relaytest@nmap.scanme.org@mail.example.test",
            "@[127.0.0.1]:relaytest@nmap.scanme.org",
            "@mail.example.test:relaytest@nmap.scanme.org",
            "nmap.scanme.org!relaytest",
            "nmap.scanme.org!relaytest@[127.0.0.1]",
            "nmap.scanme.org!relaytest@mail.example.test",
        ] {
            assert_eq!(
                r(&a, f),
                ("relaytest@nmap.scanme.org".into(), Remote, false, false),
                "{f}"
            );
        }
        assert_eq!(
            r(&a, "antispam@[127.0.0.1]"),
            ("antispam@[127.0.0.1]".into(), Local, false, false)
        );
    }

    #[test]
    fn routes_local_parts_and_parameters() {
        let mut a = addrs();
        // Routing operators left before a remote domain: routed.
        assert_eq!(
            r(&a, "user%other.example@remote.example"),
            (
                "user%other.example@remote.example".into(),
                Remote,
                true,
                false
            )
        );
        assert_eq!(
            r(&a, "root%localhost@localhost"),
            ("root@localhost".into(), Local, false, false)
        );
        assert_eq!(r(&a, "root").0, "root@mail.example.test");
        assert_eq!(r(&a, "root@localhost.").0, "root@localhost");
        assert!(r(&a, "user@other.example%localhost").3);
        assert!(r(&a, "user@-other.example").3);
        assert_eq!(
            r(&a, "\"a b\"@localhost"),
            ("\"a b\"@localhost".into(), Local, false, false)
        );
        // Without the percent hack or bang paths the operators stay in the local part:
        // the address is local but routed (Postfix flags it whatever its class).
        a.allow_percent_hack = false;
        assert_eq!(
            r(&a, "user%other.example@localhost"),
            ("user%other.example@localhost".into(), Local, true, false)
        );
        a.swap_bangpath = false;
        assert_eq!(
            r(&a, "other.example!user@localhost"),
            ("other.example!user@localhost".into(), Local, true, false)
        );
        a.resolve_dequoted_address = false;
        assert_eq!(r(&a, "\"user@other.example\"@localhost").1, Local);
        assert!(r(&a, "user@192.0.2.1").3);
        a.resolve_numeric_domain = true;
        assert_eq!(
            r(&a, "user@127.0.0.1"),
            ("user@[127.0.0.1]".into(), Local, false, false)
        );
    }
}
