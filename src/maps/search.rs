//! Postfix's search orders: which keys a restriction or a rewrite tries in a table, and in what
//! order. One place for them, so `check_*_access`, `virtual_alias_maps`, `relocated_maps` and
//! `local_recipient_maps` agree.
//!
//! - Access maps (`check_sender_access`, `check_recipient_access`; access(5) "EMAIL ADDRESS
//!   PATTERNS", `smtpd_check.c` `check_mail_access()`): `user+ext@domain`, `user@domain`,
//!   `domain` and its parents, `user+ext@`, `user@`.
//! - Domains (`check_helo_access`, the hostname half of `check_client_access`,
//!   `check_domain_access()`): `sub.example.com`, then `example.com`, `com` when
//!   `parent_domain_matches_subdomains` lists the feature (`smtpd_access_maps`), else
//!   `.example.com`, `.com`.
//! - Addresses (`check_addr_access()`): `1.2.3.4`, `1.2.3`, `1.2`, `1`; IPv6 truncated at `:`
//!   the same way on the compressed form.
//! - Address rewriting tables (`mail_addr_find.c`: virtual(5), canonical(5), relocated(5),
//!   aliases for `local_recipient_maps`): `user+ext@domain`, `user@domain`, then for local
//!   domains `user+ext`, `user`, then `@domain`.
//!
//! Pattern tables (`regexp:`, `pcre:`, `cidr:`) are given the full key only, as Postfix does
//! (their `DICT_FLAG_PATTERN` tables skip the partial keys).
//!
//! main.cf parameters: `recipient_delimiter`, `parent_domain_matches_subdomains` (the caller
//! passes their values).
//!
//! Known limits (XXX): Postfix's special cases for `owner-` and `-request` local parts with a
//! `-` delimiter are not applied.

use std::sync::Arc;

use super::{LookupError, Table};

/// A key to try, and whether it is a partial key (skipped for pattern tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub key: String,
    pub partial: bool,
}

fn full(k: impl Into<String>) -> Key {
    Key {
        key: k.into(),
        partial: false,
    }
}

fn partial(k: impl Into<String>) -> Key {
    Key {
        key: k.into(),
        partial: true,
    }
}

/// Features named in `parent_domain_matches_subdomains`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    SmtpdAccessMaps,
    RelayDomains,
    Mynetworks,
    PermitMxBackupNetworks,
    DebugPeerList,
    FastFlushDomains,
    QmqpdAuthorizedClients,
}

impl Feature {
    pub fn name(self) -> &'static str {
        match self {
            Feature::SmtpdAccessMaps => "smtpd_access_maps",
            Feature::RelayDomains => "relay_domains",
            Feature::Mynetworks => "mynetworks",
            Feature::PermitMxBackupNetworks => "permit_mx_backup_networks",
            Feature::DebugPeerList => "debug_peer_list",
            Feature::FastFlushDomains => "fast_flush_domains",
            Feature::QmqpdAuthorizedClients => "qmqpd_authorized_clients",
        }
    }

    /// Whether `parent_domain_matches_subdomains` (its value, comma or space separated) lists
    /// this feature.
    pub fn parent_matches(self, parent_domain_matches_subdomains: &str) -> bool {
        parent_domain_matches_subdomains
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .any(|w| w.eq_ignore_ascii_case(self.name()))
    }
}

/// `user+ext` → (`user`, Some(`+ext` )) with the first delimiter character found.
pub fn split_extension<'a>(local: &'a str, delimiters: &str) -> (&'a str, Option<&'a str>) {
    if delimiters.is_empty() {
        return (local, None);
    }
    match local.find(|c: char| delimiters.contains(c)) {
        Some(i) if i > 0 => (&local[..i], Some(&local[i..])),
        _ => (local, None),
    }
}

/// Keys for a domain name: the name, then its parents (`example.com` or `.example.com`).
pub fn host_lookup_keys(domain: &str, parent_matches_subdomains: bool) -> Vec<Key> {
    let domain = domain.trim_end_matches('.');
    let mut keys = vec![full(domain)];
    let mut rest = domain;
    while let Some(i) = rest.get(1..).and_then(|r| r.find('.')) {
        let dot = i + 1;
        rest = &rest[dot..]; // ".example.com"
        if parent_matches_subdomains {
            keys.push(partial(&rest[1..]));
        } else {
            keys.push(partial(rest));
        }
    }
    keys
}

/// Keys for a client IP address: the address, then shorter network prefixes.
pub fn ip_lookup_keys(addr: &str) -> Vec<Key> {
    let delim = if addr.contains(':') { ':' } else { '.' };
    let mut keys = vec![full(addr)];
    let mut cur = addr;
    while let Some(i) = cur.rfind(delim) {
        cur = &cur[..i];
        if cur.is_empty() {
            break;
        }
        keys.push(partial(cur));
    }
    keys
}

/// `check_client_access` keys: hostname and parents (when the name is known), then the
/// address and its prefixes.
pub fn client_lookup_keys(
    hostname: Option<&str>,
    addr: &str,
    parent_matches_subdomains: bool,
) -> Vec<Key> {
    let mut keys = Vec::new();
    if let Some(h) = hostname.filter(|h| !h.is_empty() && *h != "unknown") {
        keys.extend(host_lookup_keys(h, parent_matches_subdomains));
    }
    let mut ip = ip_lookup_keys(addr);
    if !keys.is_empty()
        && let Some(first) = ip.first_mut()
    {
        first.partial = false;
    }
    keys.extend(ip);
    keys
}

/// `mail_addr_find()` keys for virtual/canonical/relocated/alias lookups. `local_domain`:
/// the domain is local (`$myorigin`, `$mydestination`, …), so the bare local part is tried.
pub fn rewrite_address_keys(address: &str, delimiter: &str, local_domain: bool) -> Vec<Key> {
    let (local, domain) = match address.rfind('@') {
        Some(i) => (&address[..i], Some(&address[i + 1..])),
        None => (address, None),
    };
    let (base, ext) = split_extension(local, delimiter);
    let mut keys = vec![full(address)];
    if ext.is_some()
        && let Some(d) = domain
    {
        keys.push(partial(format!("{base}@{d}")));
    }
    if local_domain || domain.is_none() {
        if domain.is_some() {
            keys.push(partial(local));
        }
        if ext.is_some() {
            keys.push(partial(base));
        }
    }
    if let Some(d) = domain {
        keys.push(partial(format!("@{d}")));
    }
    keys
}

/// Try `keys` in order against `tables` (for each key, each table in order), skipping partial
/// keys for pattern tables. Returns the key that matched and its value. A table error stops
/// the search (the caller logs [`LookupError::warnings`] and defers, as Postfix does on
/// `DICT_ERR_RETRY`).
pub fn find(
    tables: &[Arc<dyn Table>],
    keys: &[Key],
) -> Result<Option<(String, String)>, LookupError> {
    for k in keys {
        for t in tables {
            if k.partial && is_pattern(t.spec()) {
                continue;
            }
            match t.lookup(&k.key) {
                Ok(Some(v)) => return Ok(Some((k.key.clone(), v))),
                Ok(None) => {}
                Err(e) => return Err(LookupError::new(t.spec(), &k.key, &e)),
            }
        }
    }
    Ok(None)
}

/// Pattern tables see only full keys.
pub fn is_pattern(spec: &str) -> bool {
    let spec = spec.strip_prefix("proxy:").unwrap_or(spec);
    ["regexp:", "pcre:", "cidr:"]
        .iter()
        .any(|p| spec.starts_with(p))
}

/// `check_helo_access` and other domain lookups.
pub fn lookup_domain(
    tables: &[Arc<dyn Table>],
    domain: &str,
    parent_matches_subdomains: bool,
) -> Result<Option<(String, String)>, LookupError> {
    find(tables, &host_lookup_keys(domain, parent_matches_subdomains))
}

/// `check_client_access`.
pub fn lookup_client(
    tables: &[Arc<dyn Table>],
    hostname: Option<&str>,
    addr: &str,
    parent_matches_subdomains: bool,
) -> Result<Option<(String, String)>, LookupError> {
    find(
        tables,
        &client_lookup_keys(hostname, addr, parent_matches_subdomains),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ks(v: Vec<Key>) -> Vec<String> {
        v.into_iter().map(|k| k.key).collect()
    }

    #[test]
    fn client_order() {
        assert_eq!(
            ks(client_lookup_keys(
                Some("mail.example.com"),
                "1.2.3.4",
                true
            )),
            vec![
                "mail.example.com",
                "example.com",
                "com",
                "1.2.3.4",
                "1.2.3",
                "1.2",
                "1"
            ]
        );
        assert_eq!(
            ks(client_lookup_keys(Some("unknown"), "2001:db8::1", false)),
            vec!["2001:db8::1", "2001:db8:", "2001:db8", "2001"]
        );
    }

    #[test]
    fn rewrite_order() {
        assert_eq!(
            ks(rewrite_address_keys("user+foo@example.com", "+", true)),
            vec![
                "user+foo@example.com",
                "user@example.com",
                "user+foo",
                "user",
                "@example.com"
            ]
        );
        assert_eq!(
            ks(rewrite_address_keys("user@example.net", "+", false)),
            vec!["user@example.net", "@example.net"]
        );
    }

    #[test]
    fn parent_feature_list() {
        let v = "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,qmqpd_authorized_clients,relay_domains,smtpd_access_maps";
        assert!(Feature::SmtpdAccessMaps.parent_matches(v));
        assert!(!Feature::SmtpdAccessMaps.parent_matches("relay_domains mynetworks"));
    }

    #[test]
    fn patterns_get_full_key_only() {
        let o = crate::maps::OpenOptions::default();
        let re: Arc<dyn Table> = Arc::new(crate::maps::regexp::PatternTable::parse(
            crate::maps::regexp::Dialect::Posix,
            "r",
            b"/^com$/ PARTIAL\n",
            &o,
        ));
        let inl = crate::maps::open("inline:{com=OK}", &o).unwrap();
        // An address's partial keys (its domain `com`) are not asked of a pattern table.
        let keys = vec![full("a@x.com"), partial("x.com"), partial("com")];
        assert_eq!(find(std::slice::from_ref(&re), &keys).unwrap(), None);
        assert_eq!(
            find(&[re, inl], &keys).unwrap(),
            Some(("com".into(), "OK".into()))
        );
    }
}
