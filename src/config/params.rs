//! Postfix 3.7's parameter table: every built-in parameter with its default exactly as
//! Postfix 3.7.11's `postconf -d` prints it (Debian 12 build; the file
//! `postfix-3.7-defaults.cf` beside this module was produced by that command and is
//! refreshed by `scripts/regen-compat-fixtures`), plus the defaults Postfix derives from the
//! host at run time.
//!
//! Host-derived defaults, as Postfix's `mail_params.c` computes them:
//! * `myhostname`: `gethostname()`; a name without a dot gets `.$mydomain` appended, or
//!   `.localdomain` when `mydomain` is not set;
//! * `mydomain`: `myhostname` after its first dot, or `localdomain`;
//! * `mynetworks`: from `mynetworks_style` (`host`, `subnet`, `class`) and the addresses of
//!   the local interfaces (`inet_protocols` decides IPv4/IPv6);
//! * `process_id`: the process ID.
//!
//! Types are not printed by `postconf`; they are inferred from the default (`yes`/`no` →
//! boolean, a number with a time unit → time, digits → integer) and used only to check
//! values in `postfix check`.

use std::collections::HashMap;
use std::sync::LazyLock;

const DEFAULTS_TEXT: &str = include_str!("postfix-3.7-defaults.cf");

/// The value type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Bool,
    Int,
    Time,
    Str,
}

#[derive(Debug, Clone)]
pub struct ParamDef {
    pub name: &'static str,
    /// The default as `postconf -d` prints it (before `$name` expansion).
    pub default: &'static str,
    pub kind: ParamType,
}

/// "Raw" parameters: expanded by the daemon at use time with per-message attributes
/// (`$home`, `$rbl_code`, …), so `postconf -x` prints them unexpanded (Postfix's
/// `PCF_PARAM_FLAG_RAW`; list observed with Postfix 3.7.11).
pub const RAW: &[&str] = &[
    "command_execution_directory",
    "default_rbl_reply",
    "forward_path",
    "luser_relay",
    "mailbox_command",
    "postscreen_expansion_filter",
    "postscreen_reject_footer",
    "smtpd_expansion_filter",
    "smtpd_reject_footer",
];

/// Legacy parameters postconf still knows (no `unused parameter` warning) although they
/// have no default of their own (`postconf_builtin.c`, `pcf_legacy_str_table`).
pub const LEGACY: &[&str] = &[
    "virtual_maps",
    "fallback_relay",
    "authorized_verp_clients",
    "smtpd_client_connection_limit_exceptions",
];

/// Parameters that cannot be set in main.cf (`read-only parameter assignment`).
pub const READ_ONLY: &[&str] = &["process_id", "process_name", "service_name"];

/// Parameters whose default is computed on the running host rather than taken from the table.
pub const HOST_DERIVED: &[&str] = &["myhostname", "mydomain", "mynetworks", "process_id"];

struct Table {
    list: Vec<ParamDef>,
    index: HashMap<&'static str, usize>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let mut list = Vec::new();
    let mut index = HashMap::new();
    for line in DEFAULTS_TEXT.lines() {
        let Some((name, default)) = line.split_once(" =") else {
            continue;
        };
        let default = default.strip_prefix(' ').unwrap_or(default);
        index.insert(name, list.len());
        list.push(ParamDef {
            name,
            default,
            kind: infer_type(name, default),
        });
    }
    // Postern's own: which Postern runs (`mail_version` stays Postfix's, as scripts and
    // the banner compare it). Shown by `postconf -d`/`postconf postern_version`; Postfix
    // does not know it.
    index.insert("postern_version", list.len());
    list.push(ParamDef {
        name: "postern_version",
        default: env!("CARGO_PKG_VERSION"),
        kind: ParamType::Str,
    });
    Table { list, index }
});

/// Parameters whose numeric-looking default does not make them integers:
/// `compatibility_level` takes `3.7`, the feedback parameters take `1/concurrency`.
fn not_numeric(name: &str) -> bool {
    name == "compatibility_level"
        || name.ends_with("_concurrency_positive_feedback")
        || name.ends_with("_concurrency_negative_feedback")
}

fn infer_type(name: &str, default: &str) -> ParamType {
    if not_numeric(name) {
        return ParamType::Str;
    }
    match default {
        "yes" | "no" => ParamType::Bool,
        d if !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()) => ParamType::Int,
        d if d.len() > 1
            && d[..d.len() - 1].chars().all(|c| c.is_ascii_digit())
            && d.ends_with(['s', 'm', 'h', 'd', 'w']) =>
        {
            ParamType::Time
        }
        _ => ParamType::Str,
    }
}

/// The definition of a built-in parameter.
pub fn lookup(name: &str) -> Option<&'static ParamDef> {
    TABLE.index.get(name).map(|&i| &TABLE.list[i])
}

/// All built-in parameters, sorted by name (as `postconf -d` prints them).
pub fn all() -> &'static [ParamDef] {
    &TABLE.list
}

/// Suffixes of the per-transport parameters Postfix creates for each delivery service in
/// master.cf (`relay_destination_concurrency_limit`, …), with their defaults. `time_limit`
/// exists only for `pipe` services (its default is `$command_time_limit`).
pub const TRANSPORT_PARAM_SUFFIXES: &[(&str, &str)] = &[
    ("delivery_slot_cost", "$default_delivery_slot_cost"),
    ("delivery_slot_discount", "$default_delivery_slot_discount"),
    ("delivery_slot_loan", "$default_delivery_slot_loan"),
    (
        "destination_concurrency_failed_cohort_limit",
        "$default_destination_concurrency_failed_cohort_limit",
    ),
    (
        "destination_concurrency_limit",
        "$default_destination_concurrency_limit",
    ),
    (
        "destination_concurrency_negative_feedback",
        "$default_destination_concurrency_negative_feedback",
    ),
    (
        "destination_concurrency_positive_feedback",
        "$default_destination_concurrency_positive_feedback",
    ),
    ("destination_rate_delay", "$default_destination_rate_delay"),
    (
        "destination_recipient_limit",
        "$default_destination_recipient_limit",
    ),
    ("extra_recipient_limit", "$default_extra_recipient_limit"),
    (
        "initial_destination_concurrency",
        "$initial_destination_concurrency",
    ),
    ("minimum_delivery_slots", "$default_minimum_delivery_slots"),
    ("recipient_limit", "$default_recipient_limit"),
    ("recipient_refill_delay", "$default_recipient_refill_delay"),
    ("recipient_refill_limit", "$default_recipient_refill_limit"),
    ("transport_rate_delay", "$default_transport_rate_delay"),
];

/// The host's name as Postfix's `get_hostname()` returns it.
pub fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// `myhostname`'s default: the host name, made fully qualified with `mydomain` (if the
/// admin set one) or `localdomain`.
pub fn default_myhostname(mydomain_setting: Option<&str>) -> String {
    let h = system_hostname();
    if h.contains('.') {
        h
    } else {
        format!("{h}.{}", mydomain_setting.unwrap_or("localdomain"))
    }
}

/// `mydomain`'s default, from the (effective) `myhostname`: everything after its first
/// dot, or `localdomain` (postconf's `pcf_check_mydomainname()`).
pub fn default_mydomain(myhostname: &str) -> String {
    match myhostname.split_once('.') {
        Some((_, rest)) => rest.to_string(),
        None => "localdomain".to_string(),
    }
}

/// `mynetworks`'s default from `mynetworks_style` and the addresses Postfix listens on
/// (`mynetworks.c` over `own_inet_addr.c`): `inet_interfaces = all` takes every local
/// interface address, `loopback-only` the loopback ones (127.0.0.0/8, ::1), and a list of
/// addresses or host names those addresses, each with the netmask of the local interface
/// that has it (an address no interface has is left out; Postfix stops there).
/// `protocols` is the effective `inet_protocols` (`all`, `ipv4`, `ipv6`, `ipv4, ipv6`).
pub fn default_mynetworks(style: &str, protocols: &str, interfaces: &str) -> String {
    use std::net::IpAddr;
    let want4 = protocols.contains("all") || protocols.contains("ipv4");
    let want6 = protocols.contains("all") || protocols.contains("ipv6");
    // inet_addr_local(): IPv4 interfaces first, then IPv6, each with its prefix length.
    let mut v4: Vec<(IpAddr, u32)> = Vec::new();
    let mut v6: Vec<(IpAddr, u32)> = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
                continue;
            };
            if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
                v4.push((IpAddr::V4(a.ip()), u32::from(m.ip()).count_ones()));
            } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
                v6.push((IpAddr::V6(a.ip()), u128::from(m.ip()).count_ones()));
            }
        }
    }
    let wanted = |a: &IpAddr| if a.is_ipv4() { want4 } else { want6 };
    let local: Vec<(IpAddr, u32)> = v4
        .into_iter()
        .chain(v6)
        .filter(|(a, _)| wanted(a))
        .collect();
    let own: Vec<(IpAddr, u32)> = match interfaces.trim() {
        "all" => local,
        "loopback-only" => local.into_iter().filter(|(a, _)| a.is_loopback()).collect(),
        list => {
            let mut addrs: Vec<IpAddr> = Vec::new();
            for host in list.split([' ', '\t', ',']).filter(|w| !w.is_empty()) {
                let h = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                let found: Vec<IpAddr> = match h.parse::<IpAddr>() {
                    Ok(a) => vec![a],
                    Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(h, 0))
                        .map(|it| it.map(|sa| sa.ip()).collect())
                        .unwrap_or_default(),
                };
                for a in found {
                    if wanted(&a) && !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
            }
            addrs
                .into_iter()
                .filter_map(|a| local.iter().find(|(l, _)| *l == a).copied())
                .collect()
        }
    };
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !out.contains(&s) {
            out.push(s)
        }
    };
    for (a, len) in own {
        match a {
            IpAddr::V4(a) => {
                let (net, len) = match style {
                    "host" => (u32::from(a), 32),
                    "class" => {
                        let x = u32::from(a);
                        let l = if x >> 31 == 0 {
                            8
                        } else if x >> 30 == 0b10 {
                            16
                        } else {
                            24
                        };
                        (mask4(x, l), l)
                    }
                    _ => (mask4(u32::from(a), len), len),
                };
                push(format!("{}/{}", std::net::Ipv4Addr::from(net), len));
            }
            IpAddr::V6(a) => {
                let (net, len) = match style {
                    "host" => (u128::from(a), 128),
                    _ => (mask6(u128::from(a), len), len),
                };
                push(format!("[{}]/{}", std::net::Ipv6Addr::from(net), len));
            }
        }
    }
    out.join(" ")
}

fn mask4(x: u32, len: u32) -> u32 {
    if len == 0 {
        0
    } else {
        x & (u32::MAX << (32 - len))
    }
}
fn mask6(x: u128, len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        x & (u128::MAX << (128 - len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn table_has_postfix_37_defaults() {
        assert_eq!(lookup("mail_version").unwrap().default, "3.7.11");
        assert_eq!(
            lookup("smtpd_banner").unwrap().default,
            "$myhostname ESMTP $mail_name"
        );
        assert_eq!(lookup("multi_instance_name").unwrap().default, "");
        assert_eq!(lookup("smtpd_delay_reject").unwrap().kind, ParamType::Bool);
        assert_eq!(lookup("compatibility_level").unwrap().kind, ParamType::Str);
        assert_eq!(
            lookup("maximal_queue_lifetime").unwrap().kind,
            ParamType::Time
        );
        assert!(all().len() > 800);
    }
    #[test]
    fn mydomain_rules() {
        assert_eq!(default_mydomain("mail.example.com"), "example.com");
        assert_eq!(default_mydomain("vm.localdomain"), "localdomain");
        assert_eq!(default_mydomain("a.com"), "com");
        assert_eq!(default_mydomain("vm"), "localdomain");
    }
    #[test]
    fn mynetworks_has_loopback() {
        let n = default_mynetworks("subnet", "all", "all");
        assert!(n.contains("127.0.0.0/8"), "{n}");
        let n = default_mynetworks("host", "ipv4", "all");
        assert!(n.contains("127.0.0.1/32"), "{n}");
    }
}
