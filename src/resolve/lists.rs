//! Postfix's match lists (`util/match_list.c`, `global/domain_list.c`,
//! `global/namadr_list.c`): how a list parameter such as `mydestination`, `relay_domains`
//! or `mynetworks` is read (`!` negation, `/file` included in line, `type:table`
//! lookups, a `#` item ends the list) and how a domain or an address matches it. One copy
//! for smtpd's restrictions, trivial-rewrite's address classes ([`super::Addresses`]) and
//! virtual(8)'s `virtual_mailbox_domains`.
//!
//! A `/file` inside a `/file` is read too, up to [`MAX_FILE_DEPTH`] files deep (Postfix has
//! no limit; a file that names itself would recurse forever).

use std::net::IpAddr;

use crate::maps::cidr::Cidr;
use crate::maps::source::Format;
use crate::maps::{self};

/// How many `/file` lists deep a list is read.
pub const MAX_FILE_DEPTH: usize = 5;

/// Add a table's open-time message to a checker's warnings (an `error:` line keeps its
/// prefix; the session logs it at error level).
pub fn push_notice(warnings: &mut Vec<String>, n: maps::Notice) {
    match n {
        maps::Notice::Warning(m) => warnings.push(m),
        maps::Notice::Error(m) => warnings.push(format!("error: {m}")),
    }
}

/// A lookup table or a pattern failed (Postfix's `DICT_ERR_RETRY`); what went wrong is in the
/// checker's warnings already. The caller defers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupFailed;

/// Whether a list item names a lookup table (`type:name`).
pub fn is_table(w: &str) -> bool {
    match w.split_once(':') {
        Some((t, n)) => {
            !t.is_empty() && !n.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric())
        }
        None => false,
    }
}

/// One pattern of a match list after `/file` expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListItem {
    /// An address, network or domain pattern (lower-cased).
    Text(String),
    /// `type:table`.
    Table(String),
    /// A pattern that can only fail: a `/file` that cannot be read (Postfix's
    /// `non-existent:` surrogate table) or a lone `!`. `warning` is what each use logs before `table lookup
    /// problem`.
    Broken { spec: String, warning: String },
}

/// Postfix's `match_list_parse()`: split the list, apply `!` (each one negates), read
/// `/file` in line (its lines, except those starting with `#`, are lists themselves, and a
/// `!` before the file name negates each of their patterns). `on_match` is what a match of
/// the item means. A `#` item ends the list with Postfix's warning.
pub fn expand_match_list(
    list: &[String],
    init: bool,
    list_name: &str,
    out: &mut Vec<(bool, ListItem)>,
    warnings: &mut Vec<String>,
) {
    expand_nested(list, init, list_name, out, warnings, 0);
}

/// [`expand_match_list`] at `/file` nesting `depth`: a file named more than
/// [`MAX_FILE_DEPTH`] files deep is not read (a file that names itself would never end).
fn expand_nested(
    list: &[String],
    init: bool,
    list_name: &str,
    out: &mut Vec<(bool, ListItem)>,
    warnings: &mut Vec<String>,
    depth: usize,
) {
    for (i, start) in list.iter().enumerate() {
        if start.starts_with('#') {
            warnings.push(format!(
                "{list_name}: comment at end of line is not supported: {}",
                list[i..].join(" ")
            ));
            return;
        }
        let mut on_match = init;
        let mut item = start.as_str();
        while let Some(rest) = item.strip_prefix('!') {
            on_match = !on_match;
            item = rest;
        }
        if item.is_empty() {
            // Postfix: fatal "no pattern after '!'"; here every match through it fails.
            out.push((
                on_match,
                ListItem::Broken {
                    spec: start.clone(),
                    warning: format!("{list_name}: no pattern after '!'"),
                },
            ));
        } else if item.starts_with('/') && depth >= MAX_FILE_DEPTH {
            warnings.push(format!(
                "{list_name}: {item}: files nested more than {MAX_FILE_DEPTH} deep"
            ));
        } else if item.starts_with('/') {
            match std::fs::read(item) {
                Ok(bytes) => {
                    for line in String::from_utf8_lossy(&bytes).lines() {
                        if !line.starts_with('#') {
                            let items = crate::config::values::list(line);
                            expand_nested(&items, on_match, list_name, out, warnings, depth + 1);
                        }
                    }
                }
                Err(e) => {
                    // Postfix puts a `non-existent:` surrogate table in its place.
                    let why = format!("open file {item}: {}", crate::config::error::strerror(&e));
                    warnings.push(format!("error: {why}"));
                    out.push((
                        on_match,
                        ListItem::Broken {
                            spec: format!("non-existent:{item}"),
                            warning: format!("non-existent:{item} is unavailable. {why}"),
                        },
                    ));
                }
            }
        } else if is_table(item) {
            out.push((on_match, ListItem::Table(item.to_string())));
        } else {
            out.push((on_match, ListItem::Text(item.to_ascii_lowercase())));
        }
    }
}

/// Postfix's `match_hostaddr()` for a (lower-cased) text pattern: the address itself,
/// `[address]`, or a `net/mask`. Patterns that cannot be addresses are no match; a
/// network pattern that does not parse is `Err` with `cidr_match_parse()`'s words.
pub fn match_hostaddr(addr: &str, pattern: &str) -> Result<bool, String> {
    const V4_CHARS: &str = "01234567890.";
    let v6_char = |c: char| V4_CHARS.contains(c) || "abcdefABCDEF:".contains(c);
    match pattern.strip_prefix('[') {
        None if pattern == addr => return Ok(true),
        Some(rest) if rest.strip_suffix(']') == Some(addr) => return Ok(true),
        _ => {}
    }
    // Light-weight tests first, as Postfix: the families must agree, the pattern must be
    // an IPv6 address or a net/mask, and made of address characters only (host names and
    // junk such as `10.0.0.0/8x` are skipped without a warning).
    if addr.contains(':') != pattern.contains(':')
        || !pattern.contains([':', '/'])
        || pattern.chars().all(|c| V4_CHARS.contains(c))
        || !pattern.chars().all(|c| v6_char(c) || "[]/".contains(c))
    {
        return Ok(false);
    }
    let net = Cidr::parse(pattern)?;
    Ok(addr.parse::<IpAddr>().is_ok_and(|ip| net.contains(ip)))
}

/// One `type:table` of a match list: whether `key` is in it (with a non-empty value);
/// `Err` after adding the table's failure and `LIST: TYPE:NAME: table lookup problem` to
/// `warnings`. Tables come from the map cache (`postmap` formats).
pub fn table_has(
    list_name: &str,
    spec: &str,
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<bool, LookupFailed> {
    let t = maps::open_cached_format(spec, Format::Postmap, &mut |n| push_notice(warnings, n));
    match t.lookup(key) {
        Ok(v) => Ok(v.is_some_and(|v| !v.is_empty())),
        Err(e) => {
            warnings.extend(e.table_warning());
            warnings.push(format!("{list_name}: {spec}: table lookup problem"));
            Err(LookupFailed)
        }
    }
}

/// Postfix's domain list match (`match_list` with `domain_match`): names, `!name`, `.name`
/// (subdomains), `/file` lists and `type:table` lookups, first match wins; with `parents`
/// (the list is named in `parent_domain_matches_subdomains`), `example.com` also matches
/// its subdomains, and tables are asked for each parent domain too. `Err` when a table of
/// the list failed or a `/file` could not be read (logged as `relay_domains: hash:/x: table
/// lookup problem` in `warnings`).
pub fn domain_in(
    list: &[String],
    domain: &str,
    parents: bool,
    list_name: &str,
    warnings: &mut Vec<String>,
) -> Result<bool, LookupFailed> {
    let d = domain.to_ascii_lowercase();
    let mut items = Vec::new();
    expand_match_list(list, true, list_name, &mut items, warnings);
    for (on_match, item) in items {
        let hit = match item {
            ListItem::Table(spec) => {
                let mut keys = vec![d.clone()];
                if parents {
                    let mut rest = d.as_str();
                    while let Some((_, r)) = rest.split_once('.') {
                        keys.push(r.to_string());
                        rest = r;
                    }
                }
                let mut hit = false;
                for k in &keys {
                    if table_has(list_name, &spec, k, warnings)? {
                        hit = true;
                        break;
                    }
                }
                hit
            }
            ListItem::Broken { spec, warning } => {
                warnings.push(warning);
                warnings.push(format!("{list_name}: {spec}: table lookup problem"));
                return Err(LookupFailed);
            }
            ListItem::Text(e) => {
                if let Some(sub) = e.strip_prefix('.') {
                    d.ends_with(&format!(".{sub}"))
                } else {
                    d == e || (parents && d.ends_with(&format!(".{e}")))
                }
            }
        };
        if hit {
            return Ok(on_match);
        }
    }
    Ok(false)
}

/// Postfix's string list match (`string_list_match()`: `match_list` with `match_string`):
/// exact names (case-insensitive), `!name`, `/file` lists and `type:table` lookups whose
/// result is ignored (any value found is a match), first match wins. `Err` as in
/// [`domain_in`]. Used by `smtp_connection_cache_destinations`.
pub fn string_in(
    list: &[String],
    key: &str,
    list_name: &str,
    warnings: &mut Vec<String>,
) -> Result<bool, LookupFailed> {
    let k = key.to_ascii_lowercase();
    let mut items = Vec::new();
    expand_match_list(list, true, list_name, &mut items, warnings);
    for (on_match, item) in items {
        let hit = match item {
            ListItem::Table(spec) => {
                let t = maps::open_cached_format(&spec, Format::Postmap, &mut |n| {
                    push_notice(warnings, n)
                });
                match t.lookup(&k) {
                    Ok(v) => v.is_some(),
                    Err(e) => {
                        warnings.extend(e.table_warning());
                        warnings.push(format!("{list_name}: {spec}: table lookup problem"));
                        return Err(LookupFailed);
                    }
                }
            }
            ListItem::Broken { spec, warning } => {
                warnings.push(warning);
                warnings.push(format!("{list_name}: {spec}: table lookup problem"));
                return Err(LookupFailed);
            }
            ListItem::Text(e) => e == k,
        };
        if hit {
            return Ok(on_match);
        }
    }
    Ok(false)
}

/// [`domain_in`] for a caller that has nowhere to log and no way to defer (virtual(8)'s
/// domain check, postqueue's flush check): a list that cannot be searched matches nothing.
pub fn domain_list_match(list: &[String], domain: &str, parents: bool) -> bool {
    domain_in(list, domain, parents, "domain list", &mut Vec::new()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let m = |p: &str, a: &str| match_hostaddr(a, p);
        assert_eq!(m("192.0.2.0/24", "192.0.2.7"), Ok(true));
        assert_eq!(m("192.0.3.0/24", "192.0.2.7"), Ok(false));
        assert_eq!(m("192.0.2.7", "192.0.2.7"), Ok(true));
        assert_eq!(m("[192.0.2.7]", "192.0.2.7"), Ok(true));
        assert_eq!(m("[::1]/128", "::1"), Ok(true));
        assert_eq!(m("[::1]", "::1"), Ok(true));
        // What Postfix 3.7.11 said for these in mynetworks (compat-fixtures/lookup).
        assert_eq!(
            m("127.0.0.0/33", "127.0.0.1"),
            Err("bad mask length in \"127.0.0.0/33\"".into())
        );
        assert_eq!(
            m("127.0.0.1/8", "127.0.0.1"),
            Err("non-null host address bits in \"127.0.0.1/8\", perhaps you should use \"127.0.0.0/8\" instead".into())
        );
        assert_eq!(
            m("1.2.3.4.5/8", "127.0.0.1"),
            Err("bad network value in \"1.2.3.4.5/8\"".into())
        );
        assert_eq!(
            m("10.0.0.0/8a", "127.0.0.1"),
            Err("bad mask value in \"10.0.0.0/8a\"".into())
        );
        // Skipped without a word: junk, host names, the other family.
        assert_eq!(m("10.0.0.0/8x", "127.0.0.1"), Ok(false));
        assert_eq!(m("10.0.0.0/33x", "127.0.0.1"), Ok(false));
        assert_eq!(m("foo.example", "127.0.0.1"), Ok(false));
        assert_eq!(m("[::1]/129", "127.0.0.1"), Ok(false));
    }

    #[test]
    fn match_list_expansion() {
        let mut out = Vec::new();
        let mut w = Vec::new();
        let list: Vec<String> = ["!!a", "!hash:/x", "!", "#c", "z"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        expand_match_list(&list, true, "mynetworks", &mut out, &mut w);
        assert_eq!(out[0], (true, ListItem::Text("a".into())));
        assert_eq!(out[1], (false, ListItem::Table("hash:/x".into())));
        assert!(matches!(out[2], (false, ListItem::Broken { .. })));
        assert_eq!(out.len(), 3);
        assert_eq!(
            w,
            vec!["mynetworks: comment at end of line is not supported: #c z".to_string()]
        );
    }

    #[test]
    fn domain_lists() {
        let l = vec!["!bad.example".to_string(), "example.org".to_string()];
        assert!(domain_list_match(&l, "Example.ORG", false));
        assert!(!domain_list_match(&l, "sub.example.org", false));
        assert!(domain_list_match(&l, "sub.example.org", true));
        assert!(!domain_list_match(&l, "bad.example", true));
        let l = vec!["inline:{v.example=ok}".to_string()];
        assert!(domain_list_match(&l, "v.example", false));
        assert!(!domain_list_match(&l, "w.example", false));
    }

    #[test]
    fn files_that_name_themselves_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("domains");
        std::fs::write(&f, format!("a.example\n{}\n", f.display())).expect("write");
        let list = vec![f.display().to_string(), "b.example".to_string()];
        let mut w = Vec::new();
        assert_eq!(
            domain_in(&list, "b.example", false, "relay_domains", &mut w),
            Ok(true)
        );
        assert_eq!(
            domain_in(&list, "a.example", false, "relay_domains", &mut w),
            Ok(true)
        );
        assert!(
            w.iter().any(|l| l.contains("nested more than 5 deep")),
            "{w:?}"
        );
    }
}
