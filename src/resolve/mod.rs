//! Postfix's trivial-rewrite(8): what class an address belongs to ([`Addresses::class_of`]:
//! `mydestination` and this host's `[ip]` literals → local, `virtual_alias_domains`,
//! `virtual_mailbox_domains`, `relay_domains`, anything else → default; Postfix's
//! ADDRESS_CLASS_README), how a bare name is qualified ([`qualify`]), the match lists
//! those parameters are ([`lists`]), and which delivery agent and next-hop an address goes
//! to ([`route`]). Below the services: smtpd, the queue manager and the delivery agents ask
//! here and not each other.
//!
//! Before the class is decided, the address is rewritten and resolved as trivial-rewrite
//! does ([`rewrite`]): source routes stripped, bang paths swapped, the percent hack, quoted
//! local parts opened, local domains stripped one by one.
//!
//! Parameters: `myorigin`, `mydomain`, `myhostname`, `append_at_myorigin`,
//! `append_dot_mydomain`, `mydestination`, `virtual_alias_domains`,
//! `virtual_mailbox_domains`, `relay_domains`, `parent_domain_matches_subdomains`,
//! `inet_interfaces`, `proxy_interfaces`, `allow_percent_hack`, `swap_bangpath`,
//! `resolve_dequoted_address`, `resolve_null_domain`, `resolve_numeric_domain` (and for
//! [`route`] the `*_transport` parameters, `relayhost` and master.cf).

pub mod lists;
pub mod rewrite;
pub mod route;

use std::net::IpAddr;

use crate::config::postfix::PostfixConfig;

pub use lists::LookupFailed;

/// The parameters that decide an address's class and qualification.
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    pub myorigin: String,
    pub mydomain: String,
    pub append_at_myorigin: bool,
    pub append_dot_mydomain: bool,
    /// `append_dot_mydomain` comes from the compatibility_level default.
    pub append_dot_mydomain_compat: bool,
    pub mydestination: Vec<String>,
    pub relay_domains: Vec<String>,
    pub virtual_alias_domains: Vec<String>,
    pub virtual_mailbox_domains: Vec<String>,
    /// `parent_domain_matches_subdomains`: the lists where `example.com` also matches its
    /// subdomains.
    pub parent_domain_matches_subdomains: Vec<String>,
    pub inet_interfaces: Vec<String>,
    pub proxy_interfaces: Vec<String>,
    /// `myhostname`: the domain of an address that has none left after resolution.
    pub myhostname: String,
    /// `allow_percent_hack`, `swap_bangpath`, `resolve_dequoted_address`,
    /// `resolve_null_domain`, `resolve_numeric_domain` ([`rewrite`]).
    pub allow_percent_hack: bool,
    pub swap_bangpath: bool,
    pub resolve_dequoted_address: bool,
    pub resolve_null_domain: bool,
    pub resolve_numeric_domain: bool,
}

impl Addresses {
    pub fn from_config(cfg: &PostfixConfig) -> Addresses {
        let b = |n: &str| cfg.get_bool(n).unwrap_or(false);
        Addresses {
            myorigin: cfg.myorigin().unwrap_or_default(),
            mydomain: cfg.get("mydomain").unwrap_or_default(),
            append_at_myorigin: b("append_at_myorigin"),
            append_dot_mydomain: b("append_dot_mydomain"),
            append_dot_mydomain_compat: cfg.explicit("append_dot_mydomain").is_none()
                && b("append_dot_mydomain"),
            mydestination: cfg.get_list("mydestination"),
            relay_domains: cfg.get_list("relay_domains"),
            virtual_alias_domains: cfg.get_list("virtual_alias_domains"),
            virtual_mailbox_domains: cfg.get_list("virtual_mailbox_domains"),
            parent_domain_matches_subdomains: cfg.get_list("parent_domain_matches_subdomains"),
            inet_interfaces: cfg.get_list("inet_interfaces"),
            proxy_interfaces: cfg.get_list("proxy_interfaces"),
            myhostname: cfg.get("myhostname").unwrap_or_default(),
            allow_percent_hack: b("allow_percent_hack"),
            swap_bangpath: b("swap_bangpath"),
            resolve_dequoted_address: b("resolve_dequoted_address"),
            resolve_null_domain: b("resolve_null_domain"),
            resolve_numeric_domain: b("resolve_numeric_domain"),
        }
    }

    /// [`lists::domain_in`] for the list parameter `feature`, with the parent-domain rule
    /// that `parent_domain_matches_subdomains` gives it.
    pub fn domain_in(
        &self,
        list: &[String],
        domain: &str,
        feature: &str,
        warnings: &mut Vec<String>,
    ) -> Result<bool, LookupFailed> {
        let parents = self
            .parent_domain_matches_subdomains
            .iter()
            .any(|f| f == feature);
        lists::domain_in(list, domain, parents, feature, warnings)
    }

    /// The address class of an address as trivial-rewrite's resolve gives it
    /// ([`Addresses::resolve`]: source routes, bang paths, the percent hack and quoted
    /// local parts taken apart, each local domain stripped in turn).
    /// `Err` when a domain list could not be searched: what to log is in `warnings` as
    /// trivial-rewrite logs it (`relay_domains lookup failure` after the table's own
    /// lines); the caller defers.
    pub fn class_of(
        &self,
        addr: &str,
        warnings: &mut Vec<String>,
    ) -> Result<AddressClass, LookupFailed> {
        Ok(self.resolve(addr, warnings)?.class)
    }

    /// The class of a domain that is not local: `virtual_alias_domains`,
    /// `virtual_mailbox_domains`, `relay_domains`, or default.
    fn remote_class(
        &self,
        dom: &str,
        warnings: &mut Vec<String>,
    ) -> Result<AddressClass, LookupFailed> {
        let lists = [
            (
                &self.virtual_alias_domains,
                "virtual_alias_domains",
                AddressClass::VirtualAlias,
            ),
            (
                &self.virtual_mailbox_domains,
                "virtual_mailbox_domains",
                AddressClass::VirtualMailbox,
            ),
            (&self.relay_domains, "relay_domains", AddressClass::Relay),
        ];
        for (list, name, class) in lists {
            match self.domain_in(list, dom, name, warnings) {
                Ok(true) => return Ok(class),
                Ok(false) => {}
                Err(LookupFailed) => {
                    warnings.push(format!("{name} lookup failure"));
                    return Err(LookupFailed);
                }
            }
        }
        Ok(AddressClass::Default)
    }
}

/// Split `local@domain` at the last `@`.
pub fn split(addr: &str) -> (&str, Option<&str>) {
    match addr.rfind('@') {
        Some(i) => (&addr[..i], Some(&addr[i + 1..])),
        None => (addr, None),
    }
}

/// Qualify an address as trivial-rewrite does for the checks: a bare name gets
/// `@$myorigin`; a domain without a dot gets `.$mydomain` when `append_dot_mydomain`.
pub fn qualify(addr: &str, p: &Addresses) -> String {
    if addr.is_empty() {
        return String::new();
    }
    let (local, domain) = split(addr);
    let domain = match domain {
        None if p.append_at_myorigin => p.myorigin.clone(),
        None => return addr.to_string(),
        Some(d) => d.to_string(),
    };
    let domain = if p.append_dot_mydomain
        && !domain.contains('.')
        && !domain.starts_with('[')
        && !p.mydomain.is_empty()
    {
        let new = format!("{domain}.{}", p.mydomain);
        if p.append_dot_mydomain_compat {
            crate::log::info(
                "postfix/trivial-rewrite",
                &format!(
                    "using backwards-compatible default setting append_dot_mydomain=yes to rewrite \"{domain}\" to \"{new}\"; please add \"{domain}\" to mydestination or other address class"
                ),
            );
        }
        new
    } else {
        domain
    };
    format!("{local}@{domain}")
}

/// The address class of a domain (Postfix ADDRESS_CLASS_README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Local,
    VirtualAlias,
    VirtualMailbox,
    Relay,
    Default,
}

/// An IPv4/IPv6 address literal `[1.2.3.4]` / `[ipv6:::1]`.
pub fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    // `get`: a literal may hold any UTF-8 (`[127\u{e9}…]` panicked here, found by fuzzing).
    let inner = match inner.get(..5) {
        Some(tag) if inner.len() > 5 && tag.eq_ignore_ascii_case("ipv6:") => &inner[5..],
        _ => inner,
    };
    inner.parse().ok()
}

/// Is `ip` one of the addresses this host listens on (`inet_interfaces`, plus
/// `proxy_interfaces`)? Used for `[ip]` address literals (Postfix `resolve_local()`) and
/// `permit_inet_interfaces`. `all` means every interface address, `loopback-only` the
/// loopback interface's addresses (127.0.0.1 and ::1, not all of 127/8).
pub fn is_local_interface(ip: IpAddr, p: &Addresses) -> bool {
    let listed = p
        .inet_interfaces
        .iter()
        .chain(p.proxy_interfaces.iter())
        .any(|i| i.trim_matches(['[', ']']).parse::<IpAddr>().ok() == Some(ip));
    if listed {
        return true;
    }
    let all = p.inet_interfaces.iter().any(|i| i == "all");
    let loopback = p.inet_interfaces.iter().any(|i| i == "loopback-only");
    if !all && !loopback {
        return false;
    }
    interface_addresses()
        .iter()
        .any(|a| *a == ip && (all || ip.is_loopback()))
}

/// The addresses of this host's interfaces, read again at most every ten seconds: smtpd
/// asks at each message (`local_header_rewrite_clients = permit_inet_interfaces`), and each
/// `getifaddrs()` is a netlink dump of about ten system calls. Postfix's own list
/// (`inet_addr_local()`) is read once per process.
fn interface_addresses() -> std::sync::Arc<Vec<IpAddr>> {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    type Cached = Option<(Instant, Arc<Vec<IpAddr>>)>;
    static CACHE: Mutex<Cached> = Mutex::new(None);
    let mut g = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, addrs)) = g.as_ref()
        && at.elapsed() < Duration::from_secs(10)
    {
        return addrs.clone();
    }
    let addrs: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .map(|it| {
            it.filter_map(|ifa| {
                let a = ifa.address?;
                a.as_sockaddr_in()
                    .map(|s| IpAddr::V4(s.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
            })
            .collect()
        })
        .unwrap_or_default();
    let addrs = Arc::new(addrs);
    *g = Some((Instant::now(), addrs.clone()));
    addrs
}
