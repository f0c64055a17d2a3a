//! The main.cf parameters smtpd reads, parsed once per service (and again on reload) from
//! the effective configuration (main.cf + the service's master.cf `-o` overrides).

use std::time::Duration;

use crate::config::postfix::PostfixConfig;
use crate::config::values::{list, time};

#[derive(Debug, Clone)]
pub struct Params {
    /// trivial-rewrite's parameters: address classes and qualification.
    pub addresses: crate::resolve::Addresses,
    /// trivial-rewrite's resolve to a transport (the recipient check rejects what resolves
    /// to the `error` or `retry` transport, as Postfix's `check_rcpt_maps()` does).
    pub resolver: crate::resolve::route::Resolver,
    /// `allow_untrusted_routing`: a sender-routed recipient (`user%host@here`) may count
    /// as an authorised destination.
    pub allow_untrusted_routing: bool,
    pub myhostname: String,
    pub banner: String,
    pub message_size_limit: u64,
    /// `queue_minfree` (bytes; 0: only the 1.5 × `message_size_limit` rule).
    pub queue_minfree: u64,
    pub recipient_limit: usize,
    /// `smtpd_recipient_overshoot_limit`: how many RCPTs past `smtpd_recipient_limit` get
    /// `452` without counting as errors.
    pub recipient_overshoot_limit: usize,
    pub timeout: Duration,
    /// `smtpd_starttls_timeout`: the bound on the TLS handshake after STARTTLS.
    pub starttls_timeout: Duration,
    pub soft_error_limit: u32,
    pub hard_error_limit: u32,
    pub error_sleep: Duration,
    pub junk_command_limit: u32,
    pub line_length_limit: usize,
    pub helo_required: bool,
    pub disable_vrfy: bool,
    pub delay_reject: bool,
    pub discard_ehlo_keywords: Vec<String>,
    pub sasl_auth_enable: bool,
    pub broken_sasl_auth_clients: bool,
    pub sasl_security_options: Vec<String>,
    pub sasl_tls_security_options: Vec<String>,
    pub sasl_authenticated_header: bool,
    pub tls_level: TlsLevel,
    /// `smtpd_tls_wrappermode`: TLS from the first byte (SMTPS, port 465), not STARTTLS.
    pub tls_wrappermode: bool,
    pub tls_auth_only: bool,
    pub tls_cert_file: String,
    pub tls_key_file: String,
    pub tls_chain_files: Vec<String>,
    pub smtputf8_enable: bool,
    pub mynetworks: Vec<String>,
    /// `smtpd_client_event_limit_exceptions` (default `$mynetworks`): clients exempt from
    /// the connection limits.
    pub client_event_limit_exceptions: Vec<String>,
    pub local_recipient_maps: Vec<String>,
    pub relay_recipient_maps: Vec<String>,
    /// `alias_maps`: the tables of `local_recipient_maps` named here are aliases(5) files
    /// (their text source is read in that format when Postern's index is missing).
    pub alias_maps: Vec<String>,
    /// The address rewriting tables the recipient check consults before the recipient
    /// tables, as Postfix's `check_rcpt_maps()` does.
    pub canonical_maps: Vec<String>,
    pub sender_canonical_maps: Vec<String>,
    pub recipient_canonical_maps: Vec<String>,
    pub virtual_alias_maps: Vec<String>,
    /// `transport_maps`: trivial-rewrite's resolve reads it for every recipient; a table
    /// that fails defers the recipient.
    pub transport_maps: Vec<String>,
    pub double_bounce_sender: String,
    pub reject_unlisted_recipient: bool,
    pub reject_unlisted_sender: bool,
    pub client_restrictions: Vec<String>,
    pub helo_restrictions: Vec<String>,
    pub sender_restrictions: Vec<String>,
    pub relay_restrictions: Vec<String>,
    pub recipient_restrictions: Vec<String>,
    pub data_restrictions: Vec<String>,
    pub end_of_data_restrictions: Vec<String>,
    pub etrn_restrictions: Vec<String>,
    pub relay_before_recipient: bool,
    /// `smtpd_relay_before_recipient_restrictions` comes from the compatibility_level
    /// default (Postfix then logs when that default decides a rejection).
    pub relay_before_recipient_compat: bool,
    /// `smtpd_restriction_classes`: each class name with its restriction list.
    pub class_lists: std::collections::HashMap<String, Vec<String>>,
    pub recipient_delimiter: String,
    /// `owner_request_special`: `owner-foo` and `foo-request` keep their `-` when `-` is a
    /// `recipient_delimiter` (Postfix `split_addr()`).
    pub owner_request_special: bool,
    pub strict_rfc821_envelopes: bool,
    pub reject_code: u16,
    pub defer_code: u16,
    pub relay_domains_reject_code: u16,
    pub unknown_local_recipient_reject_code: u16,
    pub access_map_reject_code: u16,
    pub access_map_defer_code: u16,
    pub invalid_hostname_reject_code: u16,
    pub non_fqdn_reject_code: u16,
    pub unknown_address_reject_code: u16,
    pub unknown_client_reject_code: u16,
    /// DNS-based restrictions (`check/dns.rs`).
    pub unknown_hostname_reject_code: u16,
    pub unknown_address_tempfail_action: String,
    pub unknown_helo_hostname_tempfail_action: String,
    pub maps_rbl_reject_code: u16,
    /// `default_rbl_reply`, unexpanded: its `$rbl_*` names are filled in per rejection.
    pub default_rbl_reply: String,
    pub rbl_reply_maps: Vec<String>,
    pub null_access_lookup_key: String,
    pub client_connection_count_limit: u32,
    pub peername_lookup: bool,
    pub syslog_ident: String,
    pub compatibility_level: String,
    pub local_header_rewrite_clients: Vec<String>,
}

/// `smtpd_tls_security_level` (with the legacy `smtpd_use_tls`/`smtpd_enforce_tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsLevel {
    None,
    May,
    Encrypt,
}

impl Params {
    pub fn from_config(cfg: &PostfixConfig) -> Params {
        let s = |n: &str| cfg.get(n).unwrap_or_default();
        let b = |n: &str| cfg.get_bool(n).unwrap_or(false);
        let l = |n: &str| list(&s(n));
        let level = s("smtpd_tls_security_level");
        let tls_level = match level.trim() {
            "may" => TlsLevel::May,
            "encrypt" | "verify" | "secure" => TlsLevel::Encrypt,
            "none" => TlsLevel::None,
            _ => {
                if b("smtpd_enforce_tls") {
                    TlsLevel::Encrypt
                } else if b("smtpd_use_tls") {
                    TlsLevel::May
                } else {
                    TlsLevel::None
                }
            }
        };
        let myhostname = s("myhostname");
        let syslog_name = s("syslog_name");
        Params {
            addresses: crate::resolve::Addresses::from_config(cfg),
            resolver: crate::resolve::route::Resolver::from_config(cfg),
            allow_untrusted_routing: b("allow_untrusted_routing"),
            banner: s("smtpd_banner"),
            message_size_limit: cfg.get_num("message_size_limit").unwrap_or(10_240_000),
            queue_minfree: cfg.get_num("queue_minfree").unwrap_or(0),
            recipient_limit: cfg.get_num("smtpd_recipient_limit").unwrap_or(1000),
            recipient_overshoot_limit: cfg
                .get_num("smtpd_recipient_overshoot_limit")
                .unwrap_or(1000),
            timeout: time(&s("smtpd_timeout"), 's').unwrap_or(Duration::from_secs(300)),
            starttls_timeout: time(&s("smtpd_starttls_timeout"), 's')
                .unwrap_or(Duration::from_secs(300)),
            soft_error_limit: cfg.get_num("smtpd_soft_error_limit").unwrap_or(10),
            hard_error_limit: cfg.get_num("smtpd_hard_error_limit").unwrap_or(20),
            error_sleep: time(&s("smtpd_error_sleep_time"), 's').unwrap_or(Duration::from_secs(1)),
            junk_command_limit: cfg.get_num("smtpd_junk_command_limit").unwrap_or(100),
            line_length_limit: cfg.get_num("line_length_limit").unwrap_or(2048).max(256),
            helo_required: b("smtpd_helo_required"),
            disable_vrfy: b("disable_vrfy_command"),
            delay_reject: b("smtpd_delay_reject"),
            discard_ehlo_keywords: l("smtpd_discard_ehlo_keywords")
                .into_iter()
                .map(|k| k.to_ascii_uppercase())
                .collect(),
            sasl_auth_enable: b("smtpd_sasl_auth_enable"),
            broken_sasl_auth_clients: b("broken_sasl_auth_clients"),
            sasl_security_options: l("smtpd_sasl_security_options"),
            sasl_tls_security_options: l("smtpd_sasl_tls_security_options"),
            sasl_authenticated_header: b("smtpd_sasl_authenticated_header"),
            tls_level,
            tls_wrappermode: b("smtpd_tls_wrappermode"),
            tls_auth_only: b("smtpd_tls_auth_only"),
            tls_cert_file: s("smtpd_tls_cert_file"),
            tls_key_file: s("smtpd_tls_key_file"),
            tls_chain_files: l("smtpd_tls_chain_files"),
            smtputf8_enable: b("smtputf8_enable"),
            mynetworks: l("mynetworks"),
            client_event_limit_exceptions: l("smtpd_client_event_limit_exceptions"),
            local_recipient_maps: l("local_recipient_maps"),
            relay_recipient_maps: l("relay_recipient_maps"),
            alias_maps: l("alias_maps"),
            canonical_maps: l("canonical_maps"),
            sender_canonical_maps: l("sender_canonical_maps"),
            recipient_canonical_maps: l("recipient_canonical_maps"),
            virtual_alias_maps: l("virtual_alias_maps"),
            transport_maps: l("transport_maps"),
            double_bounce_sender: s("double_bounce_sender"),
            reject_unlisted_recipient: b("smtpd_reject_unlisted_recipient"),
            reject_unlisted_sender: b("smtpd_reject_unlisted_sender"),
            client_restrictions: l("smtpd_client_restrictions"),
            helo_restrictions: l("smtpd_helo_restrictions"),
            sender_restrictions: l("smtpd_sender_restrictions"),
            relay_restrictions: l("smtpd_relay_restrictions"),
            recipient_restrictions: l("smtpd_recipient_restrictions"),
            data_restrictions: l("smtpd_data_restrictions"),
            end_of_data_restrictions: l("smtpd_end_of_data_restrictions"),
            etrn_restrictions: l("smtpd_etrn_restrictions"),
            relay_before_recipient: b("smtpd_relay_before_recipient_restrictions"),
            relay_before_recipient_compat: cfg
                .explicit("smtpd_relay_before_recipient_restrictions")
                .is_none()
                && !b("smtpd_relay_before_recipient_restrictions"),
            class_lists: l("smtpd_restriction_classes")
                .into_iter()
                .map(|c| {
                    let v = l(&c);
                    (c, v)
                })
                .collect(),
            recipient_delimiter: s("recipient_delimiter"),
            owner_request_special: b("owner_request_special"),
            strict_rfc821_envelopes: b("strict_rfc821_envelopes"),
            reject_code: cfg.get_num("reject_code").unwrap_or(554),
            defer_code: cfg.get_num("defer_code").unwrap_or(450),
            relay_domains_reject_code: cfg.get_num("relay_domains_reject_code").unwrap_or(554),
            unknown_local_recipient_reject_code: cfg
                .get_num("unknown_local_recipient_reject_code")
                .unwrap_or(550),
            access_map_reject_code: cfg.get_num("access_map_reject_code").unwrap_or(554),
            access_map_defer_code: cfg.get_num("access_map_defer_code").unwrap_or(450),
            invalid_hostname_reject_code: cfg
                .get_num("invalid_hostname_reject_code")
                .unwrap_or(501),
            non_fqdn_reject_code: cfg.get_num("non_fqdn_reject_code").unwrap_or(504),
            unknown_address_reject_code: cfg.get_num("unknown_address_reject_code").unwrap_or(450),
            unknown_client_reject_code: cfg.get_num("unknown_client_reject_code").unwrap_or(450),
            unknown_hostname_reject_code: cfg
                .get_num("unknown_hostname_reject_code")
                .unwrap_or(450),
            unknown_address_tempfail_action: s("unknown_address_tempfail_action"),
            unknown_helo_hostname_tempfail_action: s("unknown_helo_hostname_tempfail_action"),
            maps_rbl_reject_code: cfg.get_num("maps_rbl_reject_code").unwrap_or(554),
            default_rbl_reply: cfg.raw("default_rbl_reply").unwrap_or_default(),
            rbl_reply_maps: l("rbl_reply_maps"),
            null_access_lookup_key: s("smtpd_null_access_lookup_key"),
            client_connection_count_limit: cfg
                .get_num("smtpd_client_connection_count_limit")
                .unwrap_or(50),
            peername_lookup: cfg.get_bool("smtpd_peername_lookup").unwrap_or(true),
            syslog_ident: format!("{syslog_name}/smtpd"),
            compatibility_level: s("compatibility_level"),
            local_header_rewrite_clients: l("local_header_rewrite_clients"),
            myhostname,
        }
    }
}
