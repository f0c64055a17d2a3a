//! The main.cf parameters smtp(8) reads, parsed once per service from the effective
//! configuration (main.cf with the service's master.cf `-o` overrides).

use std::net::IpAddr;
use std::time::Duration;

use crate::config::postfix::PostfixConfig;

use super::tls::TlsLevel;

use crate::config::values::{list, time};

/// Everything the delivery agent reads from the configuration.
#[derive(Debug, Clone)]
pub struct Params {
    pub myhostname: String,
    pub helo_name: String,
    /// `smtp_tcp_port` (a service name or number).
    pub tcp_port: String,
    pub lookup_dns: bool,
    pub lookup_native: bool,
    pub inet_v4: bool,
    pub inet_v6: bool,
    pub mx_address_limit: usize,
    pub mx_session_limit: usize,
    pub bind_address: Option<IpAddr>,
    pub bind_address6: Option<IpAddr>,
    pub fallback_relay: Vec<String>,
    pub relayhost: String,
    pub disable_dns_lookups: bool,
    pub connect_timeout: Duration,
    pub helo_timeout: Duration,
    pub mail_timeout: Duration,
    pub rcpt_timeout: Duration,
    pub data_init_timeout: Duration,
    pub data_xfer_timeout: Duration,
    pub data_done_timeout: Duration,
    pub quit_timeout: Duration,
    pub rset_timeout: Duration,
    pub starttls_timeout: Duration,
    pub skip_5xx_greeting: bool,
    pub skip_quit_response: bool,
    pub always_send_ehlo: bool,
    pub never_send_ehlo: bool,
    /// `smtp_line_length_limit`: longer message lines are broken with CR LF SPACE.
    pub smtp_line_length_limit: usize,
    /// `line_length_limit`: the longest reply line kept.
    pub reply_line_limit: usize,
    pub discard_ehlo_keywords: Vec<String>,
    pub tls_level: Result<TlsLevel, String>,
    pub tls_cafile: String,
    pub tls_capath: String,
    pub tls_note_starttls_offer: bool,
    /// `smtp_tls_loglevel`: 1 and up log `… TLS connection established to …`.
    pub tls_loglevel: u32,
    pub sasl_enable: bool,
    pub sasl_password_maps: Vec<String>,
    pub sasl_security_options: Vec<String>,
    pub sasl_tls_security_options: Vec<String>,
    pub sasl_mechanism_filter: Vec<String>,
    pub sasl_auth_soft_bounce: bool,
    pub sender_dependent_authentication: bool,
    pub soft_bounce: bool,
    /// `disable_mime_output_conversion`: no 8bit → 7bit downgrade for servers without
    /// 8BITMIME.
    pub disable_mime_output_conversion: bool,
    pub randomize_addresses: bool,
    /// `inet_interfaces` and `proxy_interfaces` addresses: an MX here means a mail loop.
    pub own_addresses: Vec<IpAddr>,
    /// `smtp_connection_cache_on_demand`: cache sessions to a destination with a backlog.
    pub cache_on_demand: bool,
    /// `smtp_connection_cache_destinations`: always cache sessions to these, a Postfix
    /// string list (names, `!name`, `/file`, `type:table`), matched against the next-hop's
    /// host name without `[]` or `:port`, as Postfix matches it.
    pub cache_destinations: Vec<String>,
    /// `smtp_connection_cache_time_limit`: how long a session may sit idle in the cache.
    pub cache_time_limit: Duration,
    /// `smtp_connection_reuse_time_limit`: no new transaction on a session older than this.
    pub reuse_time_limit: Duration,
    /// `smtp_connection_reuse_count_limit`: reuses of one session (0: no limit).
    pub reuse_count_limit: u32,
    /// `smtp_tls_connection_reuse`: sessions that did STARTTLS may be cached too.
    pub tls_connection_reuse: bool,
    /// `smtp_destination_concurrency_limit`: the most idle sessions kept per destination.
    pub destination_concurrency_limit: usize,
}

fn interface_addresses(spec: &str, v4: bool, v6: bool) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for w in list(spec) {
        match w.as_str() {
            "all" => {
                if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
                    for a in addrs {
                        if let Some(sa) = a.address {
                            if let Some(s4) = sa.as_sockaddr_in() {
                                out.push(IpAddr::V4(s4.ip()));
                            } else if let Some(s6) = sa.as_sockaddr_in6() {
                                out.push(IpAddr::V6(s6.ip()));
                            }
                        }
                    }
                }
            }
            "loopback-only" => {
                out.push(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
                out.push(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST));
            }
            w => {
                let w = w.trim_start_matches('[').trim_end_matches(']');
                if let Ok(ip) = w.parse::<IpAddr>() {
                    out.push(ip);
                } else if let Ok(it) = std::net::ToSocketAddrs::to_socket_addrs(&(w, 0)) {
                    out.extend(it.map(|sa| sa.ip()));
                }
            }
        }
    }
    out.retain(|ip| (ip.is_ipv4() && v4) || (ip.is_ipv6() && v6));
    out.sort();
    out.dedup();
    out
}

fn bind_addr(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_start_matches('[').trim_end_matches(']');
    if v.is_empty() { None } else { v.parse().ok() }
}

impl Params {
    pub fn from_config(cfg: &PostfixConfig) -> Params {
        let get = |n: &str| cfg.get(n).unwrap_or_default();
        let yes = |n: &str| cfg.get_bool(n).unwrap_or(false);
        let t = |n: &str, d: u64| time(&get(n), 's').unwrap_or(Duration::from_secs(d));
        let num = |n: &str, d: usize| cfg.get_num(n).unwrap_or(d);
        let protocols = get("inet_protocols").to_ascii_lowercase();
        let (v4, v6) = if protocols.split([',', ' ']).any(|p| p == "all") {
            (true, true)
        } else {
            (protocols.contains("ipv4"), protocols.contains("ipv6"))
        };
        let (v4, v6) = if !v4 && !v6 { (true, true) } else { (v4, v6) };
        let lookup = list(&get("smtp_host_lookup").to_ascii_lowercase());
        let lookup_native = lookup.iter().any(|w| w == "native");
        let lookup_dns = lookup.iter().any(|w| w == "dns") || !lookup_native;
        let sasl_opts = |n: &str| list(&get(n).to_ascii_lowercase());
        let myhostname = get("myhostname");
        let mut own = interface_addresses(&get("inet_interfaces"), v4, v6);
        own.extend(interface_addresses(&get("proxy_interfaces"), v4, v6));
        Params {
            helo_name: {
                let h = get("smtp_helo_name");
                if h.is_empty() { myhostname.clone() } else { h }
            },
            myhostname,
            tcp_port: {
                let p = get("smtp_tcp_port");
                if p.is_empty() { "smtp".into() } else { p }
            },
            lookup_dns,
            lookup_native,
            inet_v4: v4,
            inet_v6: v6,
            mx_address_limit: num("smtp_mx_address_limit", 5),
            mx_session_limit: num("smtp_mx_session_limit", 2),
            bind_address: bind_addr(&get("smtp_bind_address")),
            bind_address6: bind_addr(&get("smtp_bind_address6")),
            fallback_relay: list(&get("smtp_fallback_relay"))
                .into_iter()
                .filter(|w| !w.starts_with('$'))
                .collect(),
            relayhost: get("relayhost"),
            disable_dns_lookups: yes("disable_dns_lookups"),
            connect_timeout: t("smtp_connect_timeout", 30),
            helo_timeout: t("smtp_helo_timeout", 300),
            mail_timeout: t("smtp_mail_timeout", 300),
            rcpt_timeout: t("smtp_rcpt_timeout", 300),
            data_init_timeout: t("smtp_data_init_timeout", 120),
            data_xfer_timeout: t("smtp_data_xfer_timeout", 180),
            data_done_timeout: t("smtp_data_done_timeout", 600),
            quit_timeout: t("smtp_quit_timeout", 300),
            rset_timeout: t("smtp_rset_timeout", 20),
            starttls_timeout: t("smtp_starttls_timeout", 300),
            skip_5xx_greeting: cfg.get_bool("smtp_skip_5xx_greeting").unwrap_or(true),
            skip_quit_response: cfg.get_bool("smtp_skip_quit_response").unwrap_or(true),
            always_send_ehlo: cfg.get_bool("smtp_always_send_ehlo").unwrap_or(true),
            never_send_ehlo: yes("smtp_never_send_ehlo"),
            smtp_line_length_limit: num("smtp_line_length_limit", 998),
            reply_line_limit: num("line_length_limit", 2048).max(512),
            discard_ehlo_keywords: list(&get("smtp_discard_ehlo_keywords").to_ascii_uppercase()),
            tls_level: TlsLevel::from_params(
                &get("smtp_tls_security_level"),
                yes("smtp_use_tls"),
                yes("smtp_enforce_tls"),
                cfg.get_bool("smtp_tls_enforce_peername").unwrap_or(true),
            ),
            tls_cafile: get("smtp_tls_CAfile"),
            tls_capath: get("smtp_tls_CApath"),
            tls_note_starttls_offer: yes("smtp_tls_note_starttls_offer"),
            tls_loglevel: get("smtp_tls_loglevel").trim().parse().unwrap_or(0),
            sasl_enable: yes("smtp_sasl_auth_enable"),
            sasl_password_maps: list(&get("smtp_sasl_password_maps")),
            sasl_security_options: sasl_opts("smtp_sasl_security_options"),
            sasl_tls_security_options: sasl_opts("smtp_sasl_tls_security_options"),
            sasl_mechanism_filter: list(&get("smtp_sasl_mechanism_filter").to_ascii_uppercase()),
            sasl_auth_soft_bounce: cfg.get_bool("smtp_sasl_auth_soft_bounce").unwrap_or(true),
            sender_dependent_authentication: yes("smtp_sender_dependent_authentication"),
            soft_bounce: yes("soft_bounce"),
            disable_mime_output_conversion: yes("disable_mime_output_conversion"),
            randomize_addresses: cfg.get_bool("smtp_randomize_addresses").unwrap_or(true),
            own_addresses: own,
            cache_on_demand: cfg
                .get_bool("smtp_connection_cache_on_demand")
                .unwrap_or(true),
            cache_destinations: list(&get("smtp_connection_cache_destinations")),
            cache_time_limit: t("smtp_connection_cache_time_limit", 2),
            reuse_time_limit: t("smtp_connection_reuse_time_limit", 300),
            reuse_count_limit: num("smtp_connection_reuse_count_limit", 0) as u32,
            tls_connection_reuse: yes("smtp_tls_connection_reuse"),
            destination_concurrency_limit: num("smtp_destination_concurrency_limit", 20).max(1),
        }
    }
}
