//! The restriction engine (Postfix `smtpd_check.c`): evaluates `smtpd_*_restrictions`
//! lists with Postfix's tri-state results, access-map actions and reply texts.
//!
//! Parameters: `smtpd_client_restrictions`, `smtpd_helo_restrictions`,
//! `smtpd_sender_restrictions`, `smtpd_relay_restrictions`, `smtpd_recipient_restrictions`,
//! `smtpd_data_restrictions`, `smtpd_end_of_data_restrictions`, `smtpd_etrn_restrictions`,
//! `smtpd_restriction_classes`, `mynetworks`, `mydestination`, `relay_domains`,
//! `virtual_alias_domains`, `virtual_mailbox_domains`, `local_recipient_maps`,
//! `relay_recipient_maps`, `alias_maps`, `canonical_maps`, `sender_canonical_maps`,
//! `recipient_canonical_maps`, `virtual_alias_maps`, `transport_maps`,
//! `double_bounce_sender`, `smtpd_client_event_limit_exceptions`,
//! `parent_domain_matches_subdomains`, `*_reject_code`.
//!
//! Addresses are looked at as trivial-rewrite resolves them (Postfix's
//! `smtpd_resolve_addr()`): `check_sender_access`/`check_recipient_access` search the
//! resolved, casefolded address ([`Checker::check_mail_access`], recorded from Postfix
//! 3.7.11 in compat-fixtures/rewrite/access.txt), as do the relay check, the
//! unlisted-recipient check and `reject_unknown_*_domain`. Each address is resolved once per
//! command ([`Checker::resolve`] keeps the answers, as smtpd's resolve cache does).
//!
//! DNS-based restrictions (`reject_rbl_client`, `reject_rhsbl_*`, `permit_dnswl_client`,
//! `permit_rhswl_client`, `reject_unknown_{sender,recipient}_domain`,
//! `reject_unknown_helo_hostname`, `check_*_{mx,ns,a}_access`) live in `check/dns.rs`
//! (parameters `maps_rbl_reject_code`, `default_rbl_reply`, `rbl_reply_maps`,
//! `unknown_address_reject_code`, `unknown_hostname_reject_code`,
//! `unknown_address_tempfail_action`, `unknown_helo_hostname_tempfail_action`).
//!
//! Lookup failures (Postfix's `reject_dict_retry()`/`reject_server_error()`, recorded in
//! compat-fixtures/lookup): a table of `check_*_access` that cannot answer gives the value
//! `451 4.3.5 Server configuration error` (`<a@b.c>: Sender address rejected: Server
//! configuration error`); `mynetworks`, the domain lists, the recipient tables and
//! `transport_maps` answer `451 4.3.0 <NAME>: Temporary lookup failure`. Address lists
//! follow `match_list.c`/`match_hostaddr()` (`!`, `/file`, `type:table`, `[addr]`,
//! `net/mask`; `mynetworks: bad mask length in "10.0.0.0/33"` fails the match). The log
//! lines go to [`Checker::warnings`] (an `error: ` entry is logged at error level).
//!
//! Known limits (XXX): `check_policy_service` is recognised but answers DUNNO with a
//! logged warning; `reject_unknown_client_hostname` and
//! `reject_unknown_reverse_client_hostname` use the system resolver (`/etc/hosts`, DNS).

use std::net::IpAddr;
use std::sync::Arc;

use super::address::{self, AddressClass};
use super::params::Params;
use crate::maps::source::Format;
use crate::maps::{self, Table};
pub use crate::resolve::LookupFailed;
pub use crate::resolve::lists::push_notice;
use crate::resolve::lists::{self, ListItem, expand_match_list, is_table, match_hostaddr};
use crate::resolve::rewrite::{Resolved, internal_form, valid_hostname};

mod dns;

/// An SMTP reply: code, enhanced status code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub dsn: String,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, dsn: &str, text: impl Into<String>) -> Reply {
        // The DSN class follows the reply code (a 4xx reply gets 4.x.x).
        let mut d = dsn.to_string();
        if let Some(first) = code.to_string().chars().next()
            && (first == '4' || first == '5')
            && d.len() > 1
        {
            d.replace_range(0..1, &first.to_string());
        }
        Reply {
            code,
            dsn: d,
            text: text.into(),
        }
    }
    /// The reply line without CRLF: `554 5.7.1 text`.
    pub fn line(&self) -> String {
        if self.dsn.is_empty() {
            format!("{} {}", self.code, self.text)
        } else {
            format!("{} {} {}", self.code, self.dsn, self.text)
        }
    }
}

/// The outcome of a restriction or a whole list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No decision: go on with the next restriction.
    Dunno,
    /// Accept (ends this list).
    Permit,
    /// Refuse with this reply.
    Reject(Reply),
}

/// Which list is being evaluated: decides the reply wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Client,
    Helo,
    Sender,
    Recipient,
    Data,
    EndOfData,
    Etrn,
}

/// Everything the restrictions look at.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub client_addr: IpAddr,
    /// `name[addr]` as Postfix logs it (`unknown[192.0.2.1]`).
    pub namaddr: &'a str,
    pub client_name: &'a str,
    pub reverse_name: &'a str,
    pub helo: Option<&'a str>,
    pub sender: Option<&'a str>,
    pub recipient: Option<&'a str>,
    pub etrn_domain: Option<&'a str>,
    pub sasl_username: Option<&'a str>,
    /// The client sent commands ahead of time where that is not allowed (RFC 2920).
    pub ill_pipelining: bool,
    /// The session is encrypted (STARTTLS done).
    pub tls_active: bool,
    /// Recipients accepted so far in this transaction.
    pub rcpt_count: usize,
}

/// Table lookups through the process-wide map cache ([`maps::open_cached`]: each table opens
/// once and is reopened when its source file changes; one that cannot be opened is a
/// surrogate whose lookups fail).
#[derive(Default)]
pub struct Tables;

impl Tables {
    /// The table `spec`; what opening it logged goes to `log`.
    pub fn open(
        &self,
        spec: &str,
        format: Format,
        log: &mut dyn FnMut(maps::Notice),
    ) -> Arc<dyn Table> {
        maps::open_cached_format(spec, format, log)
    }
}

/// Postfix's `reject_dict_retry()`: a lookup table failed, the client tries again later.
pub fn dict_retry(name: &str) -> Reply {
    Reply::new(451, "4.3.0", format!("<{name}>: Temporary lookup failure"))
}

pub struct Checker<'a> {
    pub p: &'a Params,
    pub tables: &'a Tables,
    pub ident: &'a str,
    /// Warnings to log (`warning: unknown smtpd restriction: …`); an entry that starts with
    /// `error: ` is logged at error level (a table that could not be opened).
    pub warnings: Vec<String>,
    depth: usize,
    /// Postfix's `defer_if_permit` state: a deferral that replaces the final "permit"
    /// of this command ([`Checker::take_defer_if_permit`]).
    defer_if_permit: Option<Reply>,
    /// Postfix's `defer_if_reject` state: a deferral that replaces the next 5xx reject.
    defer_if_reject: Option<Reply>,
    /// `warn_if_reject` applies to the restriction being evaluated.
    warn_if_reject: bool,
    /// Access-table actions that do not decide but mark the message: (`hold` or
    /// `discard`, the text Postfix logs, e.g. `<x@y>: Recipient address triggers HOLD
    /// action`).
    pub actions: Vec<(&'static str, String)>,
    /// The addresses resolved during this command and trivial-rewrite's answers (Postfix
    /// smtpd's `smtpd_resolve_addr()` cache): the relay check, the access tables, the
    /// unlisted-recipient check and the DNS checks of one RCPT share one resolve
    /// ([`Checker::resolve`]). Keyed by the address alone: Postern's resolve has no sender
    /// input (no `sender_dependent_*_maps`).
    resolved: Vec<(String, Resolved)>,
}

/// At most this many answers are kept ([`Checker::resolved`]): a command resolves its
/// recipient and its sender.
const RESOLVED_KEPT: usize = 4;

impl<'a> Checker<'a> {
    pub fn new(p: &'a Params, tables: &'a Tables, ident: &'a str) -> Self {
        Checker {
            p,
            tables,
            ident,
            warnings: Vec::new(),
            depth: 0,
            defer_if_permit: None,
            defer_if_reject: None,
            warn_if_reject: false,
            actions: Vec::new(),
            resolved: Vec::new(),
        }
    }

    /// trivial-rewrite's answer for `addr` ([`crate::resolve::Addresses::resolve`]), once
    /// per command: a later call for the same address answers from [`Checker::resolved`].
    /// A resolve that fails (a domain list could not be searched: what it logged is in
    /// [`Checker::warnings`]) is not kept, so each caller defers with its own reply.
    pub fn resolve(&mut self, addr: &str) -> Result<Resolved, LookupFailed> {
        if let Some((_, r)) = self.resolved.iter().find(|(a, _)| a == addr) {
            return Ok(r.clone());
        }
        let r = self.p.addresses.resolve(addr, &mut self.warnings)?;
        self.remember_resolved(addr, r.clone());
        Ok(r)
    }

    /// Keep an answer resolved before this checker was made (smtpd's RCPT syntax check
    /// resolves the recipient first).
    pub fn remember_resolved(&mut self, addr: &str, r: Resolved) {
        if self.resolved.len() >= RESOLVED_KEPT {
            self.resolved.remove(0);
        }
        self.resolved.push((addr.to_string(), r));
    }

    /// The deferral a temporary DNS failure left for the end of the command (Postfix:
    /// "force permission into deferral when some earlier temporary error may have
    /// prevented us from rejecting mail"). Call when no restriction rejected.
    pub fn take_defer_if_permit(&mut self) -> Option<Reply> {
        self.defer_if_permit.take()
    }

    fn reply_target(&self, stage: Stage, f: &Facts) -> (String, &'static str) {
        match stage {
            Stage::Client => (f.namaddr.to_string(), "Client host"),
            Stage::Helo => (f.helo.unwrap_or("").to_string(), "Helo command"),
            // Replies name addresses in their internal form, as Postfix's do
            // (`"a@b"@c` is `<a@b@c>`; compat-fixtures/rewrite/access.txt).
            Stage::Sender => (internal_form(f.sender.unwrap_or("")), "Sender address"),
            Stage::Recipient => (
                internal_form(f.recipient.unwrap_or("")),
                "Recipient address",
            ),
            Stage::Data => ("DATA".to_string(), "Data command"),
            Stage::EndOfData => ("END-OF-MESSAGE".to_string(), "End-of-data"),
            Stage::Etrn => (f.etrn_domain.unwrap_or("").to_string(), "Etrn command"),
        }
    }

    fn generic(&self, stage: Stage, f: &Facts, code: u16, dsn: &str, why: &str) -> Verdict {
        let (name, class) = self.reply_target(stage, f);
        Verdict::Reject(Reply::new(
            code,
            dsn,
            format!("<{name}>: {class} rejected: {why}"),
        ))
    }

    /// Evaluate one restriction list.
    pub fn eval_list(&mut self, list: &[String], stage: Stage, f: &Facts) -> Verdict {
        let mut i = 0;
        let mut warn_next = false;
        while i < list.len() {
            let word = list[i].as_str();
            i += 1;
            // Restrictions that take an argument.
            let mut arg = || {
                let a = list.get(i).cloned();
                if a.is_some() {
                    i += 1;
                }
                a
            };
            let v = match word {
                "warn_if_reject" => {
                    warn_next = true;
                    continue;
                }
                "check_client_access"
                | "check_helo_access"
                | "check_sender_access"
                | "check_recipient_access"
                | "check_etrn_access"
                | "check_reverse_client_hostname_access" => {
                    let Some(table) = arg() else {
                        self.warnings
                            .push(format!("restriction {word} requires table argument"));
                        continue;
                    };
                    self.check_access(word, &table, stage, f)
                }
                "reject_rbl_client"
                | "reject_rbl"
                | "reject_rhsbl_client"
                | "reject_rhsbl_sender"
                | "reject_rhsbl_recipient"
                | "reject_rhsbl_helo"
                | "reject_rhsbl_reverse_client"
                | "permit_dnswl_client"
                | "permit_rhswl_client"
                | "check_client_mx_access"
                | "check_client_ns_access"
                | "check_client_a_access"
                | "check_reverse_client_mx_access"
                | "check_reverse_client_ns_access"
                | "check_reverse_client_a_access"
                | "check_helo_mx_access"
                | "check_helo_ns_access"
                | "check_helo_a_access"
                | "check_sender_mx_access"
                | "check_sender_ns_access"
                | "check_sender_a_access"
                | "check_recipient_mx_access"
                | "check_recipient_ns_access"
                | "check_recipient_a_access" => {
                    // DNS-based restrictions (check/dns.rs).
                    let Some(a) = arg() else {
                        self.warnings.push(if word.ends_with("_access") {
                            format!("restriction {word}: bad argument \"\": need maptype:mapname")
                        } else {
                            format!("restriction {word} requires domain name argument")
                        });
                        continue;
                    };
                    self.warn_if_reject = warn_next;
                    self.dns_restriction(word, &a, stage, f)
                }
                "check_policy_service" | "check_ccert_access" | "check_sasl_access" => {
                    let a = arg().unwrap_or_default();
                    self.warnings.push(format!(
                        "restriction \"{word} {a}\" is not implemented in this Postern version: skipped"
                    ));
                    Verdict::Dunno
                }
                "sleep" => {
                    let secs: u64 = arg().and_then(|a| a.parse().ok()).unwrap_or(0);
                    std::thread::sleep(std::time::Duration::from_secs(secs.min(60)));
                    Verdict::Dunno
                }
                _ => {
                    self.warn_if_reject = warn_next;
                    self.simple(word, stage, f)
                }
            };
            match v {
                Verdict::Dunno => {}
                Verdict::Reject(r) if warn_next => {
                    self.warnings.push(format!("reject_warning: {}", r.line()));
                }
                // An earlier temporary failure (a DNS allowlist that could not be
                // reached) turns a 5xx rejection into its deferral.
                Verdict::Reject(r) if r.code >= 500 && self.defer_if_reject.is_some() => {
                    return Verdict::Reject(self.defer_if_reject.take().unwrap_or(r));
                }
                other => return other,
            }
            warn_next = false;
        }
        Verdict::Dunno
    }

    /// Restrictions without arguments, restriction classes and table-valued entries.
    fn simple(&mut self, word: &str, stage: Stage, f: &Facts) -> Verdict {
        let p = self.p;
        match word {
            "permit" => Verdict::Permit,
            "reject" => self.generic(stage, f, p.reject_code, "5.7.1", "Access denied"),
            "defer" => self.generic(stage, f, p.defer_code, "4.7.1", "Access denied"),
            "permit_mynetworks" => match self.in_mynetworks(f.client_addr) {
                Ok(true) => Verdict::Permit,
                Ok(false) => Verdict::Dunno,
                Err(LookupFailed) => Verdict::Reject(dict_retry(&self.reply_target(stage, f).0)),
            },
            "permit_sasl_authenticated" => {
                if f.sasl_username.is_some() {
                    Verdict::Permit
                } else {
                    Verdict::Dunno
                }
            }
            "permit_auth_destination" => match f.recipient.map(|r| (r, self.auth_destination(r))) {
                Some((_, Ok(true))) => Verdict::Permit,
                Some((r, Err(LookupFailed))) => Verdict::Reject(dict_retry(r)),
                _ => Verdict::Dunno,
            },
            "reject_unauth_destination" | "defer_unauth_destination" | "check_relay_domains" => {
                match f.recipient.map(|r| (r, self.auth_destination(r))) {
                    Some((r, Err(LookupFailed))) => Verdict::Reject(dict_retry(r)),
                    Some((r, Ok(false))) => {
                        // defer_unauth_destination answers 454 (seen with Postfix 3.7.11).
                        let code = if word == "defer_unauth_destination" {
                            454
                        } else {
                            p.relay_domains_reject_code
                        };
                        // The address in its internal form, as Postfix's reply has it
                        // (`"a@b"@c` is `<a@b@c>`).
                        Verdict::Reject(Reply::new(
                            code,
                            "5.7.1",
                            format!("<{}>: Relay access denied", internal_form(r)),
                        ))
                    }
                    _ => Verdict::Dunno,
                }
            }
            "reject_non_fqdn_recipient" | "reject_non_fqdn_sender" => {
                let (addr, st) = if word.ends_with("recipient") {
                    (f.recipient, Stage::Recipient)
                } else {
                    (f.sender, Stage::Sender)
                };
                match addr {
                    Some(a) if !a.is_empty() && !fqdn_address(a) => self.generic(
                        st,
                        f,
                        p.non_fqdn_reject_code,
                        "5.5.2",
                        "need fully-qualified address",
                    ),
                    _ => Verdict::Dunno,
                }
            }
            "reject_invalid_helo_hostname" | "reject_invalid_hostname" => match f.helo {
                Some(h) if !valid_hostname_or_literal(h) => self.generic(
                    Stage::Helo,
                    f,
                    p.invalid_hostname_reject_code,
                    "5.5.2",
                    "Invalid name",
                ),
                _ => Verdict::Dunno,
            },
            "reject_non_fqdn_helo_hostname" | "reject_non_fqdn_hostname" => match f.helo {
                Some(h) if address::address_literal(h).is_none() && !fqdn(h) => self.generic(
                    Stage::Helo,
                    f,
                    p.non_fqdn_reject_code,
                    "5.5.2",
                    "need fully-qualified hostname",
                ),
                _ => Verdict::Dunno,
            },
            "reject_unknown_client_hostname" | "reject_unknown_client" => {
                if f.client_name == "unknown" {
                    Verdict::Reject(Reply::new(
                        p.unknown_client_reject_code,
                        "4.7.25",
                        format!(
                            "Client host rejected: cannot find your hostname, [{}]",
                            f.client_addr
                        ),
                    ))
                } else {
                    Verdict::Dunno
                }
            }
            "reject_unknown_reverse_client_hostname" => {
                if f.reverse_name == "unknown" {
                    Verdict::Reject(Reply::new(
                        p.unknown_client_reject_code,
                        "4.7.25",
                        format!(
                            "Client host rejected: cannot find your reverse hostname, [{}]",
                            f.client_addr
                        ),
                    ))
                } else {
                    Verdict::Dunno
                }
            }
            "reject_unlisted_recipient" => match f.recipient {
                Some(r) => self.unlisted_recipient(r, f).unwrap_or(Verdict::Dunno),
                None => Verdict::Dunno,
            },
            "reject_unlisted_sender" => match f.sender {
                Some(s) if !s.is_empty() => match self.check_rcpt_maps(s, true) {
                    Some(Verdict::Reject(r)) => Verdict::Reject(r),
                    _ => Verdict::Dunno,
                },
                _ => Verdict::Dunno,
            },
            "reject_unknown_sender_domain"
            | "reject_unknown_address"
            | "reject_unknown_recipient_domain"
            | "reject_unknown_helo_hostname"
            | "reject_unknown_hostname" => {
                // DNS lookups (check/dns.rs).
                self.dns_unknown(word, f).unwrap_or(Verdict::Dunno)
            }
            "reject_unauth_pipelining" => {
                if f.ill_pipelining {
                    self.generic(
                        stage,
                        f,
                        503,
                        "5.5.0",
                        "Improper use of SMTP command pipelining",
                    )
                } else {
                    Verdict::Dunno
                }
            }
            "reject_multi_recipient_bounce" => {
                // Postfix checks this at DATA (and at RCPT with more than one recipient).
                if f.sender == Some("") && f.rcpt_count > 1 {
                    self.generic(stage, f, 550, "5.5.0", "Multi-recipient bounce")
                } else {
                    Verdict::Dunno
                }
            }
            "permit_inet_interfaces" => {
                if address::is_local_interface(f.client_addr, &self.p.addresses) {
                    Verdict::Permit
                } else {
                    Verdict::Dunno
                }
            }
            "reject_plaintext_session" => {
                if f.tls_active {
                    Verdict::Dunno
                } else {
                    Verdict::Reject(Reply::new(450, "4.7.1", "Session encryption is required"))
                }
            }
            "reject_unverified_recipient"
            | "reject_unverified_sender"
            | "reject_sender_login_mismatch"
            | "reject_authenticated_sender_login_mismatch"
            | "reject_known_sender_login_mismatch"
            | "reject_unauthenticated_sender_login_mismatch"
            | "permit_tls_clientcerts"
            | "permit_tls_all_clientcerts"
            | "permit_mx_backup"
            | "permit_naked_ip_address"
            | "defer_if_permit"
            | "defer_if_reject" => {
                // Not implemented yet: no decision, and a warning.
                self.warnings.push(format!(
                    "restriction \"{word}\" is not implemented in this Postern version: skipped"
                ));
                Verdict::Dunno
            }
            w if is_table(w) => {
                // A bare table in a list is an implicit check_*_access for the stage.
                let kind = match stage {
                    Stage::Client => "check_client_access",
                    Stage::Helo => "check_helo_access",
                    Stage::Sender => "check_sender_access",
                    _ => "check_recipient_access",
                };
                self.check_access(kind, w, stage, f)
            }
            w if self.p.class_lists.contains_key(w) => {
                if self.depth > 20 {
                    return Verdict::Dunno;
                }
                let list = self.class_list(w);
                self.depth += 1;
                let v = self.eval_list(&list, stage, f);
                self.depth -= 1;
                v
            }
            other => {
                self.warnings
                    .push(format!("unknown smtpd restriction: \"{other}\""));
                Verdict::Reject(Reply::new(
                    451,
                    "4.3.5",
                    "Server configuration error".to_string(),
                ))
            }
        }
    }

    fn class_list(&self, name: &str) -> Vec<String> {
        self.p.class_lists.get(name).cloned().unwrap_or_default()
    }

    /// `permit_mynetworks`: the client address matches `mynetworks`. `Err` when a table or a
    /// pattern of the list failed (logged); the caller defers.
    pub fn in_mynetworks(&mut self, ip: IpAddr) -> Result<bool, LookupFailed> {
        let p = self.p;
        self.match_addr_list("mynetworks", &p.mynetworks, ip)
    }

    /// Postfix's address match list (`util/match_list.c` with `match_hostaddr()` of
    /// `util/match_ops.c`): patterns in order, each `!` negates, `/file` is read in line,
    /// `type:table` is looked up with the address, `net/mask` and `[addr]` are compared;
    /// the first match decides. A table that fails or a network pattern that does not
    /// parse is logged (`mynetworks: bad mask length in "10.0.0.0/33"`, `mynetworks:
    /// hash:/x: table lookup problem`) and ends the match with `Err` (Postfix's
    /// `DICT_ERR_RETRY`). Patterns that cannot be addresses (host names, `10.0.0.0/8x`) are
    /// skipped without a word, as Postfix skips them.
    pub fn match_addr_list(
        &mut self,
        list_name: &str,
        list: &[String],
        ip: IpAddr,
    ) -> Result<bool, LookupFailed> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let addr = ip.to_string();
        let mut items = Vec::new();
        expand_match_list(list, true, list_name, &mut items, &mut self.warnings);
        for (on_match, item) in items {
            let hit = match item {
                ListItem::Text(pattern) => match match_hostaddr(&addr, &pattern) {
                    Ok(hit) => hit,
                    Err(why) => {
                        self.warnings.push(format!("{list_name}: {why}"));
                        return Err(LookupFailed);
                    }
                },
                ListItem::Table(spec) => self.list_table_get(list_name, &spec, &addr)?,
                ListItem::Broken { spec, warning } => {
                    self.warnings.push(warning);
                    self.warnings
                        .push(format!("{list_name}: {spec}: table lookup problem"));
                    return Err(LookupFailed);
                }
            };
            if hit {
                return Ok(on_match);
            }
        }
        Ok(false)
    }

    /// One `type:table` of a match list ([`crate::resolve::lists::table_has`]).
    fn list_table_get(
        &mut self,
        list_name: &str,
        spec: &str,
        key: &str,
    ) -> Result<bool, LookupFailed> {
        lists::table_has(list_name, spec, key, &mut self.warnings)
    }

    /// Domain list match (mydestination, relay_domains, …) with `/file`, tables, `!`,
    /// `.domain` and parent-domain rules. `Err` when a table of the list failed (logged as
    /// `relay_domains: hash:/x: table lookup problem`).
    pub fn domain_in(
        &mut self,
        list: &[String],
        domain: &str,
        feature: &str,
    ) -> Result<bool, LookupFailed> {
        self.p
            .addresses
            .domain_in(list, domain, feature, &mut self.warnings)
    }

    /// The address class of a qualified address's domain
    /// ([`crate::resolve::Addresses::class_of`]).
    pub fn class_of(&mut self, addr: &str) -> Result<AddressClass, LookupFailed> {
        self.p.addresses.class_of(addr, &mut self.warnings)
    }

    /// `permit_auth_destination`: the destination is one this host delivers to or relays
    /// for, as trivial-rewrite resolves the address (`user%other@here` is `user@other`).
    /// With `allow_untrusted_routing = no`, a sender-routed address (routing operators left
    /// in the resolved local part: `user%other@relayed.example`) never is. `Err` when the
    /// address could not be resolved (a table failed).
    pub fn auth_destination(&mut self, rcpt: &str) -> Result<bool, LookupFailed> {
        let r = self.resolve(rcpt)?;
        if !self.p.allow_untrusted_routing && r.routed {
            return Ok(false);
        }
        Ok(r.class != AddressClass::Default)
    }

    /// The tables of a list through the cache (those also in `alias_maps` read as
    /// aliases(5) files when their index is missing).
    fn open_list(&mut self, specs: &[String]) -> Vec<Arc<dyn Table>> {
        let p = self.p;
        let tables = self.tables;
        let w = &mut self.warnings;
        specs
            .iter()
            .map(|s| {
                let format = if p.alias_maps.contains(s) {
                    Format::Aliases
                } else {
                    Format::Postmap
                };
                tables.open(s, format, &mut |n| push_notice(w, n))
            })
            .collect()
    }

    /// Postfix's `mail_addr_find()` over a table list; `Err` after logging a failed
    /// lookup (`hash:/x is unavailable. …`, `hash:/x lookup error for "u@d"`).
    fn addr_find(
        &mut self,
        specs: &[String],
        addr: &str,
        local_domain: bool,
    ) -> Result<Option<String>, LookupFailed> {
        if specs.is_empty() {
            return Ok(None);
        }
        let tables = self.open_list(specs);
        let keys = maps::rewrite_address_keys(addr, &self.p.recipient_delimiter, local_domain);
        match maps::find(&tables, &keys) {
            Ok(v) => Ok(v.map(|(_, v)| v)),
            Err(e) => {
                self.warnings.extend(e.warnings());
                Err(LookupFailed)
            }
        }
    }

    /// trivial-rewrite's `transport_maps` search for `addr` (the address, its domain, the
    /// parent domains as `.parent`, `*`): the entry's `transport:nexthop`, or `Err` after
    /// logging `transport_maps lookup failure`.
    fn transport_of(&mut self, addr: &str) -> Result<Option<(String, String)>, LookupFailed> {
        let p = self.p;
        if p.transport_maps.is_empty() {
            return Ok(None);
        }
        let tables = self.open_list(&p.transport_maps);
        let addr = addr.to_ascii_lowercase();
        let domain = addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let mut keys = vec![maps::Key {
            key: addr.clone(),
            partial: false,
        }];
        if !domain.is_empty() {
            keys.push(maps::Key {
                key: domain.to_string(),
                partial: true,
            });
            let mut d = domain;
            while let Some((_, parent)) = d.split_once('.') {
                keys.push(maps::Key {
                    key: format!(".{parent}"),
                    partial: true,
                });
                d = parent;
            }
        }
        match maps::find(&tables, &keys) {
            Ok(v) => Ok(v.map(|(_, v)| crate::resolve::route::split_transport(&v))),
            Err(e) => {
                self.warnings.extend(e.warnings());
                self.warnings.push("transport_maps lookup failure".into());
                Err(LookupFailed)
            }
        }
    }

    /// The implicit `reject_unlisted_recipient` check: `Some(Reject)` for an unknown user in
    /// a local/relay domain whose table is configured, or when a table failed.
    pub fn unlisted_recipient(&mut self, rcpt: &str, _f: &Facts) -> Option<Verdict> {
        self.check_rcpt_maps(rcpt, false)
    }

    /// Postfix's `check_rcpt_maps()` for a recipient (or, `sender`, for
    /// `reject_unlisted_sender`): resolve the address (a failed domain list or
    /// `transport_maps` defers), accept an address that `recipient_canonical_maps`,
    /// (`sender_canonical_maps`), `canonical_maps` or `virtual_alias_maps` rewrites, then
    /// search the recipient table of the address class. Every failed lookup answers `451
    /// 4.3.0 <addr>: Temporary lookup failure` with the tables' own log lines before it.
    pub fn check_rcpt_maps(&mut self, addr: &str, sender: bool) -> Option<Verdict> {
        let p = self.p;
        let retry = || Some(Verdict::Reject(dict_retry(addr)));
        // The address as trivial-rewrite resolves it (`user%other@here` is `user@other`).
        let Ok(resolved) = self.resolve(addr) else {
            return retry();
        };
        let q = resolved.recipient;
        let class = resolved.class;
        let (local, _) = address::split(&q);
        let local = local.to_string();
        let Ok(table) = self.transport_of(&q) else {
            return retry();
        };
        // Replies name the address in its internal form, as Postfix's do.
        let shown = crate::resolve::rewrite::internal_form(addr);
        let local_domain = class == AddressClass::Local;
        let mut rewrites = vec![&p.recipient_canonical_maps];
        if sender {
            rewrites.push(&p.sender_canonical_maps);
        }
        rewrites.push(&p.canonical_maps);
        rewrites.push(&p.virtual_alias_maps);
        for specs in rewrites {
            match self.addr_find(specs, &q, local_domain) {
                Ok(Some(_)) => return None,
                Ok(None) => {}
                Err(LookupFailed) => return retry(),
            }
        }
        // What resolves to the error or retry transport is known to be undeliverable
        // (recorded from Postfix 3.7.11 in compat-fixtures/rewrite/retry-error.txt): 550
        // or 450 with the transport's text, `Address is undeliverable` without one.
        // The class is the one just resolved: no second resolve (Postfix's smtpd asks
        // trivial-rewrite once, then answers from its cache).
        let (code, default_dsn) = match p.resolver.route_resolved(&q, class, table) {
            crate::resolve::route::Route::Error(text) => (550, text),
            crate::resolve::route::Route::Retry(text) => (450, text),
            crate::resolve::route::Route::Failed => return retry(),
            _ => (0, String::new()),
        };
        if code != 0 {
            let text = if default_dsn.is_empty() {
                "Address is undeliverable"
            } else {
                default_dsn.as_str()
            };
            let dsn_default = match (code, sender) {
                (550, true) => "5.1.0",
                (550, false) => "5.1.1",
                (_, true) => "4.1.0",
                (_, false) => "4.1.1",
            };
            let (dsn, text) = split_dsn(text, dsn_default);
            let class_name = if sender {
                "Sender address"
            } else {
                "Recipient address"
            };
            return Some(Verdict::Reject(Reply::new(
                code,
                &dsn,
                format!("<{shown}>: {class_name} rejected: {text}"),
            )));
        }
        let (maps, what, code) = match class {
            AddressClass::Local => (
                &p.local_recipient_maps,
                "local recipient table",
                p.unknown_local_recipient_reject_code,
            ),
            AddressClass::Relay => (&p.relay_recipient_maps, "relay recipient table", 550),
            _ => return None,
        };
        if maps.is_empty() {
            return None;
        }
        // Mail for postmaster, MAILER-DAEMON and the double-bounce sender is accepted even
        // when no table lists it (smtpd_check.c; observed with Postfix 3.7.11).
        if class == AddressClass::Local
            && [
                p.double_bounce_sender.as_str(),
                "postmaster",
                "MAILER-DAEMON",
            ]
            .iter()
            .any(|x| local.eq_ignore_ascii_case(x))
        {
            return None;
        }
        match self.addr_find(maps, &q, local_domain) {
            Ok(Some(_)) => None,
            Err(LookupFailed) => retry(),
            Ok(None) => {
                let (dsn, class_name) = if sender {
                    ("5.1.0", "Sender address")
                } else {
                    ("5.1.1", "Recipient address")
                };
                Some(Verdict::Reject(Reply::new(
                    code,
                    dsn,
                    format!("<{shown}>: {class_name} rejected: User unknown in {what}"),
                )))
            }
        }
    }

    /// `check_*_access TABLE` with Postfix's key search order (`maps::search`). A table
    /// that fails answers as Postfix's `check_access()` does: the value `451 4.3.5 Server
    /// configuration error`, worded for the stage (`<a@b.c>: Sender address rejected: Server
    /// configuration error`).
    fn check_access(&mut self, kind: &str, table: &str, stage: Stage, f: &Facts) -> Verdict {
        let t = {
            let w = &mut self.warnings;
            self.tables
                .open(table, Format::Postmap, &mut |n| push_notice(w, n))
        };
        let tables = [t];
        let parent = maps::Feature::SmtpdAccessMaps
            .parent_matches(&self.p.addresses.parent_domain_matches_subdomains.join(","));
        let ip = f.client_addr.to_string();
        let res = match kind {
            "check_client_access" => maps::lookup_client(&tables, Some(f.client_name), &ip, parent),
            "check_reverse_client_hostname_access" => {
                maps::lookup_client(&tables, Some(f.reverse_name), &ip, parent)
            }
            "check_helo_access" => match f.helo {
                Some(h) => maps::lookup_domain(&tables, &h.to_ascii_lowercase(), parent),
                None => Ok(None),
            },
            "check_etrn_access" => match f.etrn_domain {
                Some(d) => maps::lookup_domain(&tables, &d.to_ascii_lowercase(), parent),
                None => Ok(None),
            },
            "check_sender_access" => match f.sender {
                Some("") => {
                    let key = &self.p.null_access_lookup_key;
                    match tables[0].lookup(key) {
                        Ok(v) => Ok(v.map(|v| (String::new(), v))),
                        Err(e) => Err(maps::LookupError::new(table, key, &e)),
                    }
                }
                Some(s) => return self.check_mail_access(&tables, s, false, stage, f),
                None => Ok(None),
            },
            _ => match f.recipient {
                Some(r) => return self.check_mail_access(&tables, r, true, stage, f),
                None => Ok(None),
            },
        };
        match res {
            Ok(Some((_, v))) => self.access_result(&v, stage, f),
            Ok(None) => Verdict::Dunno,
            Err(e) => {
                self.warnings.extend(e.warnings());
                self.access_result("451 4.3.5 Server configuration error", stage, f)
            }
        }
    }

    /// Postfix's `check_mail_access()` (`check_sender_access`, `check_recipient_access`):
    /// the table is searched with the address as trivial-rewrite resolves it
    /// ([`Checker::resolve`]), casefolded, so `user%other.example@localhost`,
    /// `other.example!user@localhost`, `@localhost:user@other.example`,
    /// `"user@other.example"@localhost` and `User@Other.Example.` all meet the entry for
    /// `user@other.example` ([`mail_access_keys`] gives the search order). A resolve that
    /// fails defers (`451 4.3.0 <addr>: Temporary lookup failure`). With
    /// `allow_untrusted_routing = no`, an `OK` for a sender-routed recipient
    /// (`user%host@relay.example`) is not trusted: the result is DUNNO.
    fn check_mail_access(
        &mut self,
        tables: &[Arc<dyn Table>],
        addr: &str,
        recipient: bool,
        stage: Stage,
        f: &Facts,
    ) -> Verdict {
        let Ok(resolved) = self.resolve(addr) else {
            return Verdict::Reject(dict_retry(&internal_form(addr)));
        };
        let internal = crate::resolve::rewrite::internal_form(&resolved.recipient).to_lowercase();
        if !internal.contains('@') {
            self.warnings.push(format!(
                "check_mail_access: no @domain in address: {internal}"
            ));
            return Verdict::Dunno;
        }
        let p = self.p;
        let parent = maps::Feature::SmtpdAccessMaps
            .parent_matches(&p.addresses.parent_domain_matches_subdomains.join(","));
        let keys = mail_access_keys(&internal, p, parent);
        match maps::find(tables, &keys) {
            Ok(Some((_, v))) => match self.access_result(&v, stage, f) {
                Verdict::Permit if recipient && resolved.routed && !p.allow_untrusted_routing => {
                    Verdict::Dunno
                }
                v => v,
            },
            Ok(None) => Verdict::Dunno,
            Err(e) => {
                self.warnings.extend(e.warnings());
                self.access_result("451 4.3.5 Server configuration error", stage, f)
            }
        }
    }

    /// The action an access table returned (access(5)).
    fn access_result(&mut self, value: &str, stage: Stage, f: &Facts) -> Verdict {
        let v = value.trim();
        let (word, rest) = match v.split_once([' ', '\t']) {
            Some((w, r)) => (w, r.trim()),
            None => (v, ""),
        };
        let upper = word.to_ascii_uppercase();
        let p = self.p;
        let (name, class) = self.reply_target(stage, f);
        let text = |default: &str| -> String {
            if rest.is_empty() {
                default.to_string()
            } else {
                rest.to_string()
            }
        };
        match upper.as_str() {
            "OK" | "PERMIT" => Verdict::Permit,
            "DUNNO" => Verdict::Dunno,
            "REJECT" => {
                let (dsn, t) = split_dsn(&text("Access denied"), "5.7.1");
                Verdict::Reject(Reply::new(
                    p.access_map_reject_code,
                    &dsn,
                    format!("<{name}>: {class} rejected: {t}"),
                ))
            }
            "DEFER" | "DEFER_IF_REJECT" | "DEFER_IF_PERMIT" => {
                let (dsn, t) = split_dsn(&text("Access denied"), "4.7.1");
                Verdict::Reject(Reply::new(
                    p.access_map_defer_code,
                    &dsn,
                    format!("<{name}>: {class} rejected: {t}"),
                ))
            }
            // HOLD puts the message in the hold queue and evaluation goes on; DISCARD
            // accepts and discards it (smtpd_check.c: DUNNO and OK).
            "HOLD" | "DISCARD" => {
                let what = if rest.is_empty() {
                    format!("<{name}>: {class} triggers {upper} action")
                } else {
                    format!("<{name}>: {class} {rest}")
                };
                if upper == "HOLD" {
                    self.actions.push(("hold", what));
                    Verdict::Dunno
                } else {
                    self.actions.push(("discard", what));
                    Verdict::Permit
                }
            }
            "FILTER" | "REDIRECT" | "PREPEND" | "BCC" => {
                self.warnings.push(format!(
                    "access action {upper} is accepted but not applied in this Postern version"
                ));
                Verdict::Dunno
            }
            "WARN" | "INFO" => {
                self.warnings
                    .push(format!("{}: {name}: {rest}", upper.to_ascii_lowercase()));
                Verdict::Dunno
            }
            w if w.len() == 3 && w.bytes().all(|b| b.is_ascii_digit()) => {
                let code: u16 = w.parse().unwrap_or(554);
                if w.starts_with('2') {
                    return Verdict::Permit;
                }
                let (dsn, t) = split_dsn(
                    &text("Access denied"),
                    if w.starts_with('4') { "4.7.1" } else { "5.7.1" },
                );
                Verdict::Reject(Reply::new(
                    code,
                    &dsn,
                    format!("<{name}>: {class} rejected: {t}"),
                ))
            }
            w if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) => Verdict::Permit,
            _ => {
                // A list of restrictions (or a restriction class) as the result.
                let list = crate::config::values::list(v);
                self.depth += 1;
                let r = if self.depth > 20 {
                    Verdict::Dunno
                } else {
                    self.eval_list(&list, stage, f)
                };
                self.depth -= 1;
                r
            }
        }
    }
}

/// The keys `check_mail_access()` searches for a resolved, casefolded internal-form
/// address, in Postfix 3.7's `mail_addr_find_strategy()` order (`MA_FIND_FULL |
/// MA_FIND_NOEXT | MA_FIND_DOMAIN | MA_FIND_LOCALPART_AT` and `MA_FIND_PDMS` or
/// `MA_FIND_PDDMDS`): the address (quoted form first, then as it is, when they differ:
/// `"a@b"@d` then `a@b@d`), the address without its `recipient_delimiter` extension, the
/// domain and its parents (`example`, or `.example` when `smtpd_access_maps` is not in
/// `parent_domain_matches_subdomains`), then `localpart@` and the localpart without
/// extension `@`. Only the first is a full key (pattern tables see only it).
fn mail_access_keys(addr: &str, p: &Params, parent_matches_subdomains: bool) -> Vec<maps::Key> {
    use crate::resolve::rewrite::quote_822_local;
    let mut keys = Vec::new();
    let mut both = |k: String, partial: bool| {
        let ext = quote_822_local(&k);
        if ext != k {
            keys.push(maps::Key { key: ext, partial });
        }
        keys.push(maps::Key { key: k, partial });
    };
    let (local, domain) = addr.rsplit_once('@').unwrap_or((addr, ""));
    let base = split_addr(local, p);
    both(addr.to_string(), false);
    if let Some(b) = base {
        both(format!("{b}@{domain}"), true);
    }
    let mut name = domain;
    while !name.is_empty() {
        keys.push(maps::Key {
            key: name.to_string(),
            partial: true,
        });
        match name.get(1..).and_then(|r| r.find('.')) {
            Some(i) if parent_matches_subdomains => name = &name[i + 2..],
            Some(i) => name = &name[i + 1..],
            None => break,
        }
    }
    let mut both = |k: String| {
        let ext = quote_822_local(&k);
        if ext != k {
            keys.push(maps::Key {
                key: ext,
                partial: true,
            });
        }
        keys.push(maps::Key {
            key: k,
            partial: true,
        });
    };
    both(format!("{local}@"));
    if let Some(b) = base {
        both(format!("{b}@"));
    }
    keys
}

/// Postfix's `split_addr()`: the localpart without its `recipient_delimiter` extension
/// (split at the first delimiter character), or `None` when it has none, when the split
/// would leave nothing, and for `postmaster`, `MAILER-DAEMON`, the `double_bounce_sender`
/// and (with `-` a delimiter and `owner_request_special`) `owner-*` and `*-request`.
fn split_addr<'s>(local: &'s str, p: &Params) -> Option<&'s str> {
    let delims = p.recipient_delimiter.as_str();
    if delims.is_empty()
        || local.eq_ignore_ascii_case("postmaster")
        || local.eq_ignore_ascii_case("MAILER-DAEMON")
        || local.eq_ignore_ascii_case(&p.double_bounce_sender)
    {
        return None;
    }
    if delims.contains('-') && p.owner_request_special {
        let lower = local.to_ascii_lowercase();
        if lower.starts_with("owner-") || (lower.len() > 8 && lower.ends_with("-request")) {
            return None;
        }
    }
    match local.find(|c: char| delims.contains(c)) {
        Some(i) if i > 0 => Some(&local[..i]),
        _ => None,
    }
}

/// `5.1.1 text` → ("5.1.1", "text"); otherwise the default DSN.
fn split_dsn(text: &str, default: &str) -> (String, String) {
    if let Some((first, rest)) = text.split_once(' ') {
        let parts: Vec<&str> = first.split('.').collect();
        if parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            && (first.starts_with('4') || first.starts_with('5'))
        {
            return (first.to_string(), rest.to_string());
        }
    }
    (default.to_string(), text.to_string())
}

fn fqdn(h: &str) -> bool {
    let h = h.trim_end_matches('.');
    h.contains('.') && valid_hostname(h, false)
}

fn fqdn_address(a: &str) -> bool {
    match address::split(a) {
        (_, Some(d)) => address::address_literal(d).is_some() || fqdn(d),
        _ => false,
    }
}

fn valid_hostname_or_literal(h: &str) -> bool {
    address::address_literal(h).is_some() || valid_hostname(h.trim_end_matches('.'), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_split() {
        assert_eq!(
            split_dsn("5.1.1 no such user", "5.7.1"),
            ("5.1.1".into(), "no such user".into())
        );
        assert_eq!(
            split_dsn("go away", "5.7.1"),
            ("5.7.1".into(), "go away".into())
        );
        assert_eq!(Reply::new(450, "5.7.1", "x").dsn, "4.7.1");
    }

    fn params(main: &str) -> Params {
        use crate::config::{maincf, mastercf::MasterCf, postfix::PostfixConfig};
        let main =
            maincf::parse(main, std::path::Path::new("/nonexistent/main.cf")).expect("main.cf");
        Params::from_config(&PostfixConfig::from_main(main, MasterCf::default()))
    }

    fn keys(addr: &str, p: &Params, parent: bool) -> Vec<String> {
        mail_access_keys(addr, p, parent)
            .into_iter()
            .map(|k| format!("{}{}", if k.partial { "" } else { "=" }, k.key))
            .collect()
    }

    /// Postfix 3.7's mail_addr_find_strategy() order for check_mail_access(), the first
    /// key the only full one.
    #[test]
    fn mail_access_key_order() {
        let p = params("recipient_delimiter = +\n");
        assert_eq!(
            keys("user+tag@sub.other.example", &p, true),
            [
                "=user+tag@sub.other.example",
                "user@sub.other.example",
                "sub.other.example",
                "other.example",
                "example",
                "user+tag@",
                "user@"
            ]
        );
        // Without smtpd_access_maps in parent_domain_matches_subdomains: `.parent`.
        assert_eq!(
            keys("u@sub.other.example", &p, false),
            [
                "=u@sub.other.example",
                "sub.other.example",
                ".other.example",
                ".example",
                "u@"
            ]
        );
        // A local part that needs quotes: the quoted form first, then as it is.
        assert_eq!(
            keys("a@b@other.test", &p, true),
            [
                "=\"a@b\"@other.test",
                "=a@b@other.test",
                "other.test",
                "test",
                "\"a@b\"@",
                "a@b@"
            ]
        );
    }

    /// Postfix's split_addr(): special local parts and a leading delimiter keep theirs.
    #[test]
    fn split_addr_as_postfix() {
        let p = params("recipient_delimiter = +-\n");
        assert_eq!(split_addr("user+tag", &p), Some("user"));
        assert_eq!(split_addr("user-tag+x", &p), Some("user"));
        assert_eq!(split_addr("+tag", &p), None);
        assert_eq!(split_addr("user", &p), None);
        assert_eq!(split_addr("Postmaster", &p), None);
        assert_eq!(split_addr("mailer-daemon", &p), None);
        assert_eq!(split_addr("double-bounce", &p), None);
        assert_eq!(split_addr("owner-list", &p), None);
        assert_eq!(split_addr("list-request", &p), None);
        let p = params("recipient_delimiter = -\nowner_request_special = no\n");
        assert_eq!(split_addr("owner-list", &p), Some("owner"));
        let p = params("recipient_delimiter =\n");
        assert_eq!(split_addr("user+tag", &p), None);
    }
}
