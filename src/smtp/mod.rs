//! Postfix's `smtp(8)` delivery agent: sends a queued message to the next hop for a group
//! of recipients that share a transport and next-hop, and reports one result per recipient.
//!
//! The queue manager ([`crate::qmgr`]) does trivial-rewrite's part (which transport, which
//! next-hop: `transport_maps`, `relayhost`, `default_transport`, `relay_transport`) and calls
//! [`deliver`] once per (transport, next-hop) group of a message. This module does the rest:
//! next-hop → hosts (MX lookup or `[host]`), connecting, the SMTP dialogue, and the wording of
//! each result as Postfix logs it.
//!
//! XXX skeleton: the interface is fixed here; the implementation is in progress.

use std::time::Duration;

use crate::config::postfix::PostfixConfig;
use crate::local::Status;
use crate::queue::QueuedMessage;

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
}

impl SmtpSettings {
    pub fn from_config(cfg: &PostfixConfig, service: &str) -> SmtpSettings {
        let syslog = cfg.get("syslog_name").unwrap_or_else(|| "postfix".into());
        SmtpSettings {
            service: service.to_string(),
            ident: format!("{syslog}/{service}"),
            cfg: cfg.clone(),
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
    let _ = (s, msg);
    rcpts
        .iter()
        .map(|_| RcptOutcome {
            status: Status::Deferred,
            dsn: "4.3.0".into(),
            text: format!(
                "delivery temporarily suspended: outbound SMTP to {nexthop} is not implemented in this version of Postern"
            ),
            relay: "none".into(),
            remote_mta: None,
            diagnostic: None,
            conn_setup: Duration::ZERO,
            transmission: Duration::ZERO,
        })
        .collect()
}
