//! Postfix's `smtp(8)` delivery agent: sends a queued message to the next hop for a group
//! of recipients that share a transport and next-hop, and reports one result per recipient.
//!
//! The queue manager ([`crate::qmgr`]) does trivial-rewrite's part (which transport, which
//! next-hop: `transport_maps`, `relayhost`, `default_transport`, `relay_transport`) and calls
//! [`deliver`] once per (transport, next-hop) group of a message. This module does the rest:
//! next-hop → hosts (MX lookup or `[host]`), connecting, the SMTP dialogue, and the wording of
//! each result as Postfix logs it.
//!
//! Files: [`route`] (next-hop → addresses, the address loop: `smtp_connect.c`,
//! `smtp_addr.c`), [`proto`] (the dialogue: `smtp_proto.c`, `smtp_sasl_*.c`), [`reply`]
//! (reading replies: `smtp_chat.c`), [`state`] (judging failures: `smtp_trouble.c`),
//! [`conn`] (sockets and deadlines), [`tls`] (security levels), [`params`], [`downgrade`]
//! (8bit → quoted-printable for servers without 8BITMIME: `mime_state.c`), [`cache`] (the
//! connection cache: `scache(8)`, `smtp_reuse.c`, and the queue manager's on-demand rule).
//!
//! Connection reuse, as Postfix 3.7 (compat-fixtures/smtp/reuse.*): after a good
//! transaction a session is kept idle instead of ending with QUIT when the request may store
//! it ([`cache::begin`]); the next delivery to the same service and next-hop sends `RSET`
//! over it (a failed probe is logged `ID: lost connection with HOST[ADDR] while sending
//! RSET probe` and the message goes over a new connection) and logs `conn_use=N` after
//! `relay=`. A delivery whose next-hop has no idle session takes one to any of its servers
//! by address, whichever next-hop kept it ([`cache::take_endpoint`], [`endp_key`], Postfix's
//! `smtp_reuse_addr()`: compat-fixtures/smtp/reuse-addr.txt). Not kept: a session that saw a 421 or a protocol error reply (Postfix
//! `smtp_check_code()`), an I/O error, one that did STARTTLS unless
//! `smtp_tls_connection_reuse = yes` (Postfix can only reuse TLS through tlsproxy), one past
//! `smtp_connection_reuse_time_limit` or `smtp_connection_reuse_count_limit` (it QUITs).
//!
//! Parameters read (main.cf, with the service's master.cf `-o` overrides): `myhostname`,
//! `smtp_helo_name`, `smtp_tcp_port`, `smtp_host_lookup`, `inet_protocols`,
//! `inet_interfaces`, `proxy_interfaces`, `disable_dns_lookups`, `ignore_mx_lookup_error`,
//! `smtp_mx_address_limit`, `smtp_mx_session_limit`, `smtp_bind_address`,
//! `smtp_bind_address6`, `smtp_fallback_relay`, `relayhost`, the `smtp_*_timeout`s,
//! `smtp_skip_5xx_greeting`, `smtp_skip_quit_response`, `smtp_always_send_ehlo`,
//! `smtp_never_send_ehlo`, `smtp_discard_ehlo_keywords`, `smtp_line_length_limit`,
//! `line_length_limit`, `smtp_tls_security_level` (`smtp_use_tls`, `smtp_enforce_tls`,
//! `smtp_tls_enforce_peername`), `smtp_tls_CAfile`, `smtp_tls_CApath`,
//! `smtp_tls_note_starttls_offer`, `smtp_sasl_auth_enable`, `smtp_sasl_password_maps`,
//! `smtp_sasl_security_options`, `smtp_sasl_tls_security_options`,
//! `smtp_sasl_mechanism_filter`, `smtp_sasl_auth_soft_bounce`,
//! `smtp_sender_dependent_authentication`, `smtp_randomize_addresses`, `soft_bounce`,
//! `disable_mime_output_conversion`, `smtp_connection_cache_on_demand`,
//! `smtp_connection_cache_destinations` (a Postfix string list: names, `!`, `/file`,
//! `type:table` whose values are ignored), `smtp_connection_cache_time_limit`,
//! `smtp_connection_reuse_time_limit`, `smtp_connection_reuse_count_limit`,
//! `smtp_tls_connection_reuse`, `smtp_destination_concurrency_limit` (idle sessions kept per
//! destination), `smtp_rset_timeout`.
//!
//! RFCs: 5321 (SMTP, §5 MX), 7505 (null MX), 2920 (PIPELINING), 1870 (SIZE), 6152
//! (8BITMIME), 3461 (DSN), 6531 (SMTPUTF8), 3207 (STARTTLS), 4954 (AUTH), 4616 (PLAIN).
//!
//! Known limits (XXX): with session caching on, Postfix skips at later next-hops of a
//! request the addresses it already used (`smtp_scrub_addr_list()`, by address without
//! port: a fallback relay on the relayhost's address, another port, is not tried — seen
//! when recording compat-fixtures/smtp/reuse-addr.txt); Postern tries them; a session kept by a request becomes visible to other requests when that request ends
//! (Postfix's smtp saves it to scache(8) at once: the same but when the request goes on
//! to another server for recipients the kept session did not take); the cache lives
//! in the queue manager's process (Postfix's is the scache(8) service, shared by its smtp
//! processes); unlike Postfix, a 421 to RCPT or MAIL also keeps a session out of the cache
//! (RFC 5321 §3.8: the server is closing); the 8bit → 7bit downgrade ([`downgrade`]) is checked against Postfix for
//! the cases in compat-fixtures/smtp/downgrade-* only: Postfix's MIME nesting and boundary
//! length limits are not recorded and may differ; SASL offers PLAIN and LOGIN only; no
//! `smtp_tls_policy_maps`, DANE, client certificates, `smtp_generic_maps`, header/body
//! checks, XFORWARD, SRV lookups, LMTP, or
//! `smtp_address_preference`; `smtp_bind_address` connects through a small tokio runtime;
//! no premature-reply read after a failed body write; an empty
//! `smtp_sasl_password_maps` warns and continues without AUTH (Postfix stops with a fatal
//! error).
//!
//! A `smtp_sasl_password_maps` table that cannot answer defers the delivery (`4.3.0 local
//! data error while talking to HOST[ADDR]`, logged `ID: smtp_sasl_password_maps lookup
//! error`), as Postfix's `smtp_sasl_passwd_lookup()` does; it never sends the mail without
//! the credentials.

pub mod cache;
pub mod conn;
pub mod downgrade;
pub mod params;
pub mod proto;
pub mod reply;
pub mod route;
pub mod state;
#[cfg(test)]
mod tests;
pub mod tls;

use std::time::Duration;

use crate::config::postfix::PostfixConfig;
use crate::delivery::Status;
use crate::queue::QueuedMessage;

pub use params::Params;

/// Settings of one smtp(8) service (`smtp`, `relay`, or another master.cf name whose command
/// is `smtp`), with that service's master.cf `-o` overrides applied.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// The master.cf service name (`smtp`, `relay`, …): the transport name in logs.
    pub service: String,
    /// `syslog_name/service`, e.g. `postfix/smtp`.
    pub ident: String,
    /// Everything else this agent reads, as the configuration gives it.
    pub cfg: PostfixConfig,
    /// The parameters, parsed.
    pub params: Params,
    /// The DNS resolver (tests point one at a test server); `None`: [`crate::dns::system`].
    pub resolver: Option<crate::dns::Resolver>,
}

impl SmtpSettings {
    pub fn from_config(cfg: &PostfixConfig, service: &str) -> SmtpSettings {
        let cfg = match cfg.master.get(service, "unix") {
            Some(svc) => cfg.with_overrides(&svc.overrides()),
            None => cfg.clone(),
        };
        let syslog = cfg.get("syslog_name").unwrap_or_else(|| "postfix".into());
        SmtpSettings {
            service: service.to_string(),
            ident: format!("{syslog}/{service}"),
            params: Params::from_config(&cfg),
            cfg,
            resolver: None,
        }
    }
}

/// One recipient handed to [`deliver`].
#[derive(Debug, Clone)]
pub struct RcptJob {
    /// The envelope recipient to send (`RCPT TO:<…>`), after rewriting.
    pub address: String,
    /// DSN `ORCPT=` as queued (`rfc822;addr`), if any.
    pub orcpt: Option<String>,
    /// DSN `NOTIFY=` as queued (`SUCCESS,DELAY`, `NEVER`), if any.
    pub notify: Option<String>,
    /// The original recipient (the queue file's `O` record): without a queued ORCPT,
    /// `ORCPT=rfc822;original` is sent to a DSN server, as Postfix does.
    pub original: Option<String>,
}

/// The result for one recipient.
#[derive(Debug, Clone)]
pub struct RcptOutcome {
    pub status: Status,
    /// `dsn=` (`2.0.0`, `4.4.1`, `5.1.1`).
    pub dsn: String,
    /// The text of the log line's parentheses, as Postfix words it, e.g.
    /// `250 2.0.0 Ok: queued as 4Xyz`, `host mx.example.net[192.0.2.1] said: 550 5.1.1 <u@example.net>:
    /// Recipient address rejected: User unknown (in reply to RCPT TO command)`,
    /// `connect to mx.example.net[192.0.2.1]:25: Connection refused`.
    pub text: String,
    /// `relay=` value: `mx.example.net[192.0.2.1]:25`, or `none` when no host was reached.
    pub relay: String,
    /// For bounces: `Remote-MTA: dns; mx.example.net` (the value after `dns; `), when a host
    /// answered.
    pub remote_mta: Option<String>,
    /// For bounces: the `Diagnostic-Code: smtp; …` value (after `smtp; `): the remote reply,
    /// multi-line replies joined with spaces, when a host answered.
    pub diagnostic: Option<String>,
    /// Connection setup time (the `c` of `delays=a/b/c/d`).
    pub conn_setup: Duration,
    /// Transmission time (the `d` of `delays=a/b/c/d`).
    pub transmission: Duration,
    /// How often the session had been used before (Postfix logs `conn_use=N+1` after
    /// `relay=` when this is not 0).
    pub reuse_count: u32,
}

/// Send `msg` to `nexthop` for `rcpts`; one outcome per recipient, in order.
///
/// `nexthop` is as trivial-rewrite gives it: `example.net` (MX lookup), `[mail.example.net]`
/// or `[192.0.2.1]` (no MX lookup), each with an optional `:port` (service name or number);
/// an empty string is not valid. Blocking: called from a queue manager worker thread.
pub fn deliver(
    s: &SmtpSettings,
    msg: &QueuedMessage,
    nexthop: &str,
    rcpts: &[RcptJob],
) -> Vec<RcptOutcome> {
    if rcpts.is_empty() {
        return Vec::new();
    }
    let mut st = state::State::new(s, msg, nexthop, rcpts);
    if crate::config::values::list(nexthop).is_empty() {
        st.fill(state::Why::local(
            "4.3.5",
            format!("null destination: \"{nexthop}\""),
            "none",
        ));
    } else {
        st.cache_key = cache_key(s, msg, nexthop);
        let p = &s.params;
        let explicit = !p.cache_destinations.is_empty() && cache_destination(s, nexthop);
        // Two lock acquisitions per request: the policy and the idle session in one, the
        // bookkeeping, an untouched session and the session to keep in the other.
        let (pol, taken) = cache::begin(&st.cache_key, explicit, p.cache_on_demand);
        st.cache_load = pol.load;
        st.cache_enabled = pol.store;
        st.cache_store = pol.store;
        st.cache_taken = taken;
        route::connect_inet(&mut st, nexthop);
        cache::end(
            &st.cache_key,
            st.cache_taken.take(),
            st.cache_keep.take(),
            std::mem::take(&mut st.cache_keep_endp),
        );
    }
    st.finish()
}

/// Whether `smtp_connection_cache_destinations` names the first destination of `nexthop`
/// (Postfix `smtp_connect.c`: `string_list_match(smtp_cache_dest, domain)`, the host name
/// without `[]` or `:port`). A table that cannot answer is logged and counts as no match,
/// as in Postfix, where the failed match only leaves caching on demand.
fn cache_destination(s: &SmtpSettings, nexthop: &str) -> bool {
    let first = crate::config::values::list(nexthop);
    let Ok(d) = route::parse_dest(
        first.first().map(String::as_str).unwrap_or(""),
        &s.params.tcp_port,
    ) else {
        return false;
    };
    let mut warnings = Vec::new();
    let r = crate::resolve::lists::string_in(
        &s.params.cache_destinations,
        &d.host,
        "smtp_connection_cache_destinations",
        &mut warnings,
    );
    for w in warnings {
        match w.strip_prefix("error: ") {
            Some(e) => crate::log::error(&s.ident, e),
            None => crate::log::warning(&s.ident, &w),
        }
    }
    r.unwrap_or(false)
}

/// The connection cache key of a delivery request (Postfix `smtp_key_prefix()` with the
/// next-hop label): the service, the next-hop, and the sender when the SASL credentials
/// depend on it; fields joined by newlines, `*` for one that does not apply.
pub fn cache_key(s: &SmtpSettings, msg: &QueuedMessage, nexthop: &str) -> String {
    let p = &s.params;
    let sender = if p.sasl_enable && p.sender_dependent_authentication {
        msg.sender.as_str()
    } else {
        "*"
    };
    format!("{}\n{}\n{sender}", s.service, nexthop.to_ascii_lowercase())
}

/// The endpoint label of a server (Postfix `SMTP_KEY_MASK_SCACHE_ENDP_LABEL`): the service,
/// the sender as in [`cache_key`], the current next-hop and the server's host name when
/// `smtp_sasl_password_maps` is set (the credentials may depend on them), the next-hop when
/// the TLS level checks the server's name (`verify`, `secure`: its policy is the
/// next-hop's), and the address and port. Fields joined by newlines, `*` for one that does
/// not apply.
pub fn endp_key(
    st: &state::State,
    cur_nexthop: &str,
    host: &str,
    ip: std::net::IpAddr,
    port: u16,
) -> String {
    let p = st.p;
    let sender = if p.sasl_enable && p.sender_dependent_authentication {
        st.msg.sender.as_str()
    } else {
        "*"
    };
    let sasl = !p.sasl_password_maps.is_empty();
    let tls_match = matches!(
        p.tls_level,
        Ok(tls::TlsLevel::Verify | tls::TlsLevel::Secure)
    );
    let nexthop = if sasl || tls_match {
        cur_nexthop.to_ascii_lowercase()
    } else {
        "*".into()
    };
    let host = if sasl {
        host.to_ascii_lowercase()
    } else {
        "*".into()
    };
    format!(
        "{}\n{sender}\n{nexthop}\n{host}\n{ip}\n{port}",
        st.s.service
    )
}
