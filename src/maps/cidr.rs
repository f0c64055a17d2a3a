//! `cidr:` tables (cidr_table(5), Postfix's `dict_cidr.c`): `network/len result`,
//! `address result`, `!pattern result`, `if pattern` … `endif`, IPv6 optionally in `[…]`;
//! patterns are tried in file order and the first match wins. Bad rules are warnings and are
//! skipped, in Postfix's words (`cidr map FILE, line N: bad mask length in "1.2.3.4/33":
//! skipping this rule`). A key that is not an IP address matches nothing.

use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use super::source::logical_lines;
use super::{MapError, OpenOptions, Table};

/// An address pattern: the network (host bits zero) and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub net: IpAddr,
    pub len: u8,
}

impl Cidr {
    /// Parse `1.2.3.0/24`, `1.2.3.4`, `2001:db8::/32`, `[::1]`, `[2001:db8::]/32`,
    /// `[2001:db8::/32]` as Postfix's `cidr_match_parse()` does (`util/cidr_match.c`): the
    /// family follows a `:` in the address, the mask must be all digits and at most the
    /// family's bits, host bits must be zero. The error is Postfix's wording (`bad mask
    /// length in "1.2.3.4/33"`) without a caller's `skipping this rule` tail.
    pub fn parse(pattern: &str) -> Result<Cidr, String> {
        let (addr, mask_text) = match pattern.strip_prefix('[') {
            Some(inner) => match inner.split_once(']') {
                None => return Err(format!("missing ']' character after \"[{inner}\"")),
                Some((a, "")) => match a.split_once('/') {
                    Some((a, m)) => (a, Some(m)),
                    None => (a, None),
                },
                Some((a, rest)) => match rest.strip_prefix('/') {
                    Some(m) => (a, Some(m)),
                    None => return Err(format!("garbage after \"[{a}]\"")),
                },
            },
            None => match pattern.split_once('/') {
                Some((a, m)) => (a, Some(m)),
                None => (pattern, None),
            },
        };
        let v6 = addr.contains(':');
        let max: u8 = if v6 { 128 } else { 32 };
        let parse_addr = |a: &str| -> Option<IpAddr> {
            if v6 {
                a.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
            } else {
                a.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
            }
        };
        let Some(m) = mask_text else {
            return match parse_addr(addr) {
                Some(ip) => Ok(Cidr { net: ip, len: max }),
                None => Err(format!("bad address pattern: \"{addr}\"")),
            };
        };
        let error = if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) {
            Some("bad mask value")
        } else if m.parse::<u32>().map_or(true, |n| n > u32::from(max)) {
            Some("bad mask length")
        } else if parse_addr(addr).is_none() {
            Some("bad network value")
        } else {
            None
        };
        if let Some(e) = error {
            return Err(format!("{e} in \"{addr}/{m}\""));
        }
        let len = m.parse::<u8>().unwrap_or(max);
        let Some(ip) = parse_addr(addr) else {
            return Err(format!("bad network value in \"{addr}/{m}\""));
        };
        let masked = mask(ip, len);
        if masked != ip {
            return Err(format!(
                "non-null host address bits in \"{addr}/{m}\", perhaps you should use \"{masked}/{len}\" instead"
            ));
        }
        Ok(Cidr { net: ip, len })
    }

    /// The network of `ip` with `len` prefix bits (host bits cleared, `len` capped at the
    /// family's bits), for lists that, unlike Postfix's cidr tables, accept an address
    /// with host bits set (Dovecot's `login_trusted_networks`).
    pub fn new(ip: IpAddr, len: u8) -> Cidr {
        let len = len.min(if ip.is_ipv4() { 32 } else { 128 });
        Cidr {
            net: mask(ip, len),
            len,
        }
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.len) == self.net
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// Parse a lookup key as an address (`1.2.3.4`, `::1`, `[::1]`, `::ffff:1.2.3.4` stays IPv6).
pub fn parse_key(key: &str) -> Option<IpAddr> {
    let k = key
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(key);
    k.parse().ok()
}

#[derive(Debug)]
enum Rule {
    Match {
        cidr: Cidr,
        negate: bool,
        result: String,
    },
    If {
        cidr: Cidr,
        negate: bool,
        skip_to: usize,
    },
    EndIf,
}

/// A parsed `cidr:` table.
#[derive(Debug)]
pub struct CidrTable {
    spec: String,
    rules: Vec<Rule>,
    sources: Vec<(PathBuf, Option<SystemTime>)>,
}

fn keyword<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let head = text.get(..word.len())?;
    if !head.eq_ignore_ascii_case(word) {
        return None;
    }
    let rest = &text[word.len()..];
    match rest.chars().next() {
        Some(c) if !c.is_ascii_whitespace() => None,
        _ => Some(rest),
    }
}

impl CidrTable {
    pub fn open(name: &str, spec: &str, opts: &OpenOptions) -> Result<Self, MapError> {
        let path = PathBuf::from(name);
        let t = fs::metadata(&path).and_then(|m| m.modified()).ok();
        let bytes = fs::read(&path).map_err(|e| MapError::open(&path, e))?;
        let mut table = Self::parse(name, &bytes, opts);
        table.spec = spec.to_string();
        table.sources = vec![(path, t)];
        Ok(table)
    }

    /// Parse table text; problems are warnings through `opts`.
    pub fn parse(name: &str, bytes: &[u8], opts: &OpenOptions) -> Self {
        let warn = |m: &str| opts.warn(m);
        let mut rules = Vec::new();
        let mut open_ifs: Vec<(usize, usize)> = Vec::new();
        for ll in logical_lines(bytes, name, &warn) {
            let prefix = format!("cidr map {name}, line {}", ll.line);
            let text = ll.text.as_str();
            if let Some(rest) = keyword(text, "endif") {
                if !rest.trim().is_empty() {
                    opts.warn(&format!("{prefix}: ignoring extra text after ENDIF"));
                }
                match open_ifs.pop() {
                    None => opts.warn(&format!("{prefix}: ignoring ENDIF without matching IF")),
                    Some((idx, _)) => {
                        rules.push(Rule::EndIf);
                        let after = rules.len();
                        if let Some(Rule::If { skip_to, .. }) = rules.get_mut(idx) {
                            *skip_to = after;
                        }
                    }
                }
                continue;
            }
            let (is_if, body) = match keyword(text, "if") {
                Some(rest) => (true, rest.trim_start()),
                None => (false, text),
            };
            let (negate, body) = match body.strip_prefix('!') {
                Some(r) => (true, r.trim_start()),
                None => (false, body),
            };
            let end = body
                .find(|c: char| c.is_ascii_whitespace())
                .unwrap_or(body.len());
            let (pattern, rest) = (&body[..end], body[end..].trim());
            let cidr = match Cidr::parse(pattern) {
                Ok(c) => c,
                Err(msg) => {
                    opts.warn(&format!("{prefix}: {msg}: skipping this rule"));
                    continue;
                }
            };
            if is_if {
                if !rest.is_empty() {
                    opts.warn(&format!(
                        "{prefix}: ignoring extra text after IF statement: \"{rest}\""
                    ));
                }
                open_ifs.push((rules.len(), ll.line));
                rules.push(Rule::If {
                    cidr,
                    negate,
                    skip_to: usize::MAX,
                });
                continue;
            }
            if rest.is_empty() {
                opts.warn(&format!("{prefix}: no lookup result: skipping this rule"));
                continue;
            }
            rules.push(Rule::Match {
                cidr,
                negate,
                result: rest.to_string(),
            });
        }
        for (idx, line) in open_ifs.into_iter().rev() {
            opts.warn(&format!(
                "cidr map {name}, line {line}: IF has no matching ENDIF"
            ));
            let end = rules.len();
            if let Some(Rule::If { skip_to, .. }) = rules.get_mut(idx) {
                *skip_to = end;
            }
        }
        CidrTable {
            spec: format!("cidr:{name}"),
            rules,
            sources: Vec::new(),
        }
    }
}

impl Table for CidrTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        let Some(ip) = parse_key(key) else {
            return Ok(None);
        };
        let mut i = 0;
        while i < self.rules.len() {
            match &self.rules[i] {
                Rule::EndIf => {}
                Rule::If {
                    cidr,
                    negate,
                    skip_to,
                } => {
                    // A pattern of the other address family never holds, negated or not.
                    let same = cidr.net.is_ipv4() == ip.is_ipv4();
                    if !same || cidr.contains(ip) == *negate {
                        i = (*skip_to).max(i + 1);
                        continue;
                    }
                }
                Rule::Match {
                    cidr,
                    negate,
                    result,
                } => {
                    if cidr.net.is_ipv4() == ip.is_ipv4() && cidr.contains(ip) != *negate {
                        return Ok(Some(result.clone()));
                    }
                }
            }
            i += 1;
        }
        Ok(None)
    }
    fn spec(&self) -> &str {
        &self.spec
    }
    fn sources(&self) -> Vec<(PathBuf, Option<SystemTime>)> {
        self.sources.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn table_as_postfix() {
        let text = "192.168.1.0/24 lan\n10.0.0.1 host\n!10.0.0.0/8 notten\n1.2.3.4/33 bad\n1.2.3.5/24 bad2\nfoo x\n2001:db8::/32 v6\nif 172.16.0.0/12\n172.16.1.0/24 inner\nendif\n192.168.2.0/24\n[::1] lo6\n";
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let w = warnings.clone();
        let opts = OpenOptions {
            warn: Arc::new(move |m: &str| w.lock().unwrap().push(m.to_string())),
            ..OpenOptions::default()
        };
        let t = CidrTable::parse("c", text.as_bytes(), &opts);
        assert_eq!(
            *warnings.lock().unwrap(),
            vec![
                "cidr map c, line 4: bad mask length in \"1.2.3.4/33\": skipping this rule",
                "cidr map c, line 5: non-null host address bits in \"1.2.3.5/24\", perhaps you should use \"1.2.3.0/24\" instead: skipping this rule",
                "cidr map c, line 6: bad address pattern: \"foo\": skipping this rule",
                "cidr map c, line 11: no lookup result: skipping this rule",
            ]
        );
        let q = |k: &str| t.lookup(k).unwrap();
        assert_eq!(q("192.168.1.7").as_deref(), Some("lan"));
        assert_eq!(q("10.0.0.1").as_deref(), Some("host"));
        assert_eq!(q("10.0.0.2"), None);
        assert_eq!(q("11.1.1.1").as_deref(), Some("notten"));
        assert_eq!(q("2001:db8::1").as_deref(), Some("v6"));
        assert_eq!(q("::1").as_deref(), Some("lo6"));
        assert_eq!(q("172.16.1.1").as_deref(), Some("notten"));
        assert_eq!(q("junk"), None);
    }
}
