//! DNS-based restrictions of the restriction engine, after Postfix 3.7's `smtpd_check.c`:
//!
//! * `reject_rbl_client`, `permit_dnswl_client` (reversed client address under a DNSBL),
//!   `reject_rhsbl_client`, `reject_rhsbl_reverse_client`, `reject_rhsbl_helo`,
//!   `reject_rhsbl_sender`, `reject_rhsbl_recipient`, `permit_rhswl_client` (a domain
//!   under an RHSBL), each with the optional `domain=d.d.d.d` filter whose octets may be
//!   `[n;m..k]` patterns. The reply is `default_rbl_reply` (or the `rbl_reply_maps` entry
//!   for the DNSBL as written in the restriction) expanded with `$rbl_code`
//!   (`maps_rbl_reject_code`), `$rbl_class`, `$rbl_what`, `$rbl_domain`, `$rbl_reason`
//!   (the TXT records joined by " / ", at most 500 characters). A DNSBL that cannot be
//!   reached is skipped with `warning: QUERY: RBL lookup error: …`; a DNSWL that cannot be
//!   reached turns a later rejection into `450 4.7.1 … Service unavailable`.
//! * `reject_unknown_sender_domain`, `reject_unknown_recipient_domain`: MX, then A/AAAA;
//!   not found → `unknown_address_reject_code` (450) `4.1.8`/`4.1.2` `Domain not found`;
//!   null MX → 550 `5.7.27` / 556 `5.1.10` `Domain D does not accept mail (nullMX)`;
//!   temporary failure → 450 per `unknown_address_tempfail_action`.
//! * `reject_unknown_helo_hostname` (`reject_unknown_hostname`): A/AAAA, then MX;
//!   `unknown_hostname_reject_code` (450) `4.7.1 … Host not found`, temporary failure per
//!   `unknown_helo_hostname_tempfail_action`.
//! * `check_{client,reverse_client,helo,sender,recipient}_{mx,ns,a}_access TABLE`: the
//!   MX hosts, DNS servers or addresses of the name are looked up in TABLE (host names
//!   with parent domains, addresses with parent networks); `OK` is refused as Postfix
//!   does ("not allowed for security reasons", 451 4.3.5).
//!
//! The lookups are blocking (see [`crate::dns::blocking`]) with a bounded deadline.
//! XXX: Postfix's `smtpd_dsn_fix` rewriting of address-class DSN codes in RBL reply
//! templates is not applied; `$name` in templates covers the `rbl_*` names and the
//! client/helo/sender/recipient attributes, other names expand empty.

use std::net::IpAddr;

use super::{Checker, Facts, Reply, Stage, Verdict, split_dsn, valid_hostname};
use crate::dns::{self, DnsResult};
use crate::maps::{self, source::Format};
use crate::smtpd::address::{self, AddressClass};

pub(super) const CLASS_CLIENT: &str = "Client host";
pub(super) const CLASS_REV_CLIENT: &str = "Unverified Client host";
pub(super) const CLASS_HELO: &str = "Helo command";
pub(super) const CLASS_SENDER: &str = "Sender address";
pub(super) const CLASS_RECIPIENT: &str = "Recipient address";

/// What a DNSxL lookup found (Postfix's `SMTPD_RBL_STATE` and its soft-error marker).
enum Listed {
    Yes { txt: Option<String> },
    No,
    Soft,
}

impl Checker<'_> {
    /// The restriction words this module answers, with their argument.
    pub(super) fn dns_restriction(
        &mut self,
        word: &str,
        arg: &str,
        stage: Stage,
        f: &Facts,
    ) -> Verdict {
        let client_known = !f.client_name.eq_ignore_ascii_case("unknown");
        let rev_known = !f.reverse_name.eq_ignore_ascii_case("unknown");
        let sender = f.sender.filter(|s| !s.is_empty());
        match word {
            "reject_rbl_client" | "reject_rbl" | "permit_dnswl_client" => {
                let ip = match f.client_addr {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(f.client_addr),
                    v4 => v4,
                };
                let query_base = dns::reverse_name(ip, "", "");
                let what = ip.to_string();
                if word == "permit_dnswl_client" {
                    self.dnswl(arg, &query_base, &what, CLASS_CLIENT, stage, f)
                } else {
                    self.dnsbl(arg, &query_base, &what, CLASS_CLIENT, f)
                }
            }
            "reject_rhsbl_client" if client_known => {
                self.rhsbl(arg, f.client_name, CLASS_CLIENT, f)
            }
            "permit_rhswl_client" if client_known => match rhs_domain(f.client_name) {
                Some(d) => self.dnswl(arg, &format!("{d}."), f.client_name, CLASS_CLIENT, stage, f),
                None => Verdict::Dunno,
            },
            "reject_rhsbl_reverse_client" if rev_known => {
                self.rhsbl(arg, f.reverse_name, CLASS_REV_CLIENT, f)
            }
            "reject_rhsbl_helo" => match f.helo {
                Some(h) => self.rhsbl(arg, h, CLASS_HELO, f),
                None => Verdict::Dunno,
            },
            "reject_rhsbl_sender" => match sender {
                Some(s) => self.rhsbl(arg, s, CLASS_SENDER, f),
                None => Verdict::Dunno,
            },
            "reject_rhsbl_recipient" => match f.recipient {
                Some(r) => self.rhsbl(arg, r, CLASS_RECIPIENT, f),
                None => Verdict::Dunno,
            },
            w if w.ends_with("_access") => self.server_access(w, arg, f),
            _ => Verdict::Dunno,
        }
    }

    /// `reject_unknown_sender_domain`, `reject_unknown_recipient_domain`,
    /// `reject_unknown_helo_hostname`; `None` for other words.
    pub(super) fn dns_unknown(&mut self, word: &str, f: &Facts) -> Option<Verdict> {
        Some(match word {
            "reject_unknown_sender_domain" | "reject_unknown_address" => {
                match f.sender.filter(|s| !s.is_empty()) {
                    Some(s) => self.unknown_address(s, CLASS_SENDER),
                    None => Verdict::Dunno,
                }
            }
            "reject_unknown_recipient_domain" => match f.recipient {
                Some(r) => self.unknown_address(r, CLASS_RECIPIENT),
                None => Verdict::Dunno,
            },
            "reject_unknown_helo_hostname" | "reject_unknown_hostname" => match f.helo {
                Some(h) if h.starts_with('[') => self.invalid_hostaddr(h),
                Some(h) => self.unknown_hostname(h),
                None => Verdict::Dunno,
            },
            _ => return None,
        })
    }

    /// `DEFER_IF_PERMIT2(action, …)`: remember the deferral for the end of the command
    /// (`defer_if_permit`), or reject now (`defer`, or under `warn_if_reject`).
    fn tempfail(&mut self, action: &str, reply: Reply) -> Verdict {
        if action.trim() == "defer" || self.warn_if_reject {
            Verdict::Reject(reply)
        } else {
            if self.defer_if_permit.is_none() {
                self.defer_if_permit = Some(reply);
            }
            Verdict::Dunno
        }
    }

    fn unknown_address(&mut self, addr: &str, class: &'static str) -> Verdict {
        // The domain of the address as trivial-rewrite resolves it (Postfix's
        // reject_unknown_address(): `user%host@here` is checked as `host`); a resolve that
        // fails defers.
        let Ok(resolved) = self.resolve(addr) else {
            return Verdict::Reject(super::dict_retry(addr));
        };
        let q = crate::resolve::rewrite::internal_form(&resolved.recipient).to_lowercase();
        let (_, dom) = address::split(&q);
        let Some(dom) = dom.filter(|d| !d.is_empty()) else {
            return Verdict::Dunno;
        };
        let addr_class = resolved.class;
        if matches!(
            addr_class,
            AddressClass::Local | AddressClass::VirtualAlias | AddressClass::VirtualMailbox
        ) || dom.starts_with('[')
        {
            return Verdict::Dunno;
        }
        let dom = dom.trim_end_matches('.').to_string();
        let sender = class == CLASS_SENDER;
        let dsn = if sender { "4.1.8" } else { "4.1.2" };
        let d = dom.clone();
        let res: DnsResult<()> = dns::blocking(async move {
            let r = dns::system();
            match r.mx(&d).await {
                DnsResult::Found(_) => DnsResult::Found(vec![()]),
                DnsResult::NullMx => DnsResult::NullMx,
                mx => {
                    let ip = r.ip(&d).await;
                    if !ip.records().is_empty() {
                        return DnsResult::Found(vec![()]);
                    }
                    match (mx, ip) {
                        (DnsResult::TempFail(e), _) | (_, DnsResult::TempFail(e)) => {
                            DnsResult::TempFail(e)
                        }
                        _ => DnsResult::NxDomain,
                    }
                }
            }
        });
        match res {
            DnsResult::Found(_) => Verdict::Dunno,
            DnsResult::NullMx => Verdict::Reject(Reply::new(
                if sender { 550 } else { 556 },
                if sender { "4.7.27" } else { "4.1.10" },
                format!("<{addr}>: {class} rejected: Domain {dom} does not accept mail (nullMX)"),
            )),
            DnsResult::TempFail(_) => {
                let action = self.p.unknown_address_tempfail_action.clone();
                self.tempfail(
                    &action,
                    Reply::new(
                        450,
                        dsn,
                        format!("<{addr}>: {class} rejected: Domain not found"),
                    ),
                )
            }
            _ => Verdict::Reject(Reply::new(
                self.p.unknown_address_reject_code,
                dsn,
                format!("<{addr}>: {class} rejected: Domain not found"),
            )),
        }
    }

    fn unknown_hostname(&mut self, helo: &str) -> Verdict {
        let name = helo.to_string();
        let res: DnsResult<()> = dns::blocking(async move {
            let r = dns::system();
            let ip = r.ip(&name).await;
            if !ip.records().is_empty() {
                return DnsResult::Found(vec![()]);
            }
            let mx = r.mx(&name).await;
            match (ip, mx) {
                // MTA names may publish a null MX.
                (_, DnsResult::Found(_) | DnsResult::NullMx) => DnsResult::Found(vec![()]),
                (DnsResult::TempFail(e), _) | (_, DnsResult::TempFail(e)) => DnsResult::TempFail(e),
                _ => DnsResult::NxDomain,
            }
        });
        let text = format!("<{helo}>: {CLASS_HELO} rejected: Host not found");
        match res {
            DnsResult::Found(_) => Verdict::Dunno,
            DnsResult::TempFail(_) => {
                let action = self.p.unknown_helo_hostname_tempfail_action.clone();
                self.tempfail(&action, Reply::new(450, "4.7.1", text))
            }
            _ => Verdict::Reject(Reply::new(
                self.p.unknown_hostname_reject_code,
                "4.7.1",
                text,
            )),
        }
    }

    /// `reject_invalid_hostaddr` for `[addr]` HELO arguments.
    fn invalid_hostaddr(&mut self, helo: &str) -> Verdict {
        if address::address_literal(helo).is_some() {
            Verdict::Dunno
        } else {
            Verdict::Reject(Reply::new(
                self.p.invalid_hostname_reject_code,
                "5.5.2",
                format!("<{helo}>: {CLASS_HELO} rejected: invalid ip address"),
            ))
        }
    }

    /// Look `prefix` + the DNSxL domain up (A, then TXT when listed).
    fn dnsxl(&mut self, arg: &str, prefix: &str) -> Result<Listed, Verdict> {
        let (domain, filter) = match arg.split_once('=') {
            Some((d, f)) => (d, Some(f)),
            None => (arg, None),
        };
        let pattern = match filter.map(IpPattern::parse) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                self.warnings.push(format!("RBL reply error: {e}"));
                return Err(server_error());
            }
            None => None,
        };
        let query = format!("{prefix}{domain}");
        let q = query.clone();
        let res = dns::blocking(async move { dns::system().a(&q).await });
        match res {
            DnsResult::Found(addrs) => {
                if let Some(p) = pattern
                    && !addrs.iter().any(|a| p.matches(a.octets()))
                {
                    return Ok(Listed::No);
                }
                let q = query.clone();
                let txt = dns::blocking(async move { dns::system().txt(&q).await });
                Ok(Listed::Yes {
                    txt: match txt {
                        DnsResult::Found(v) => Some(join_txt(&v)),
                        _ => None,
                    },
                })
            }
            r if r.is_not_found() => Ok(Listed::No),
            DnsResult::TempFail(why) | DnsResult::Fail(why) => {
                self.warnings
                    .push(format!("{query}: RBL lookup error: {why}"));
                Ok(Listed::Soft)
            }
            _ => Ok(Listed::No),
        }
    }

    fn dnsbl(&mut self, arg: &str, prefix: &str, what: &str, class: &str, f: &Facts) -> Verdict {
        match self.dnsxl(arg, prefix) {
            Err(v) => v,
            Ok(Listed::Yes { txt }) => self.rbl_reply(arg, what, class, txt.as_deref(), f),
            Ok(_) => Verdict::Dunno,
        }
    }

    fn rhsbl(&mut self, arg: &str, what: &str, class: &str, f: &Facts) -> Verdict {
        match rhs_domain(what) {
            Some(d) => self.dnsbl(arg, &format!("{d}."), what, class, f),
            None => Verdict::Dunno,
        }
    }

    fn dnswl(
        &mut self,
        arg: &str,
        prefix: &str,
        what: &str,
        class: &str,
        stage: Stage,
        f: &Facts,
    ) -> Verdict {
        // Safety: an allowlist never overrides reject_unauth_destination.
        if stage == Stage::Recipient
            && let Some(r) = f.recipient
            && self.auth_destination(r) != Ok(true)
        {
            return Verdict::Dunno;
        }
        match self.dnsxl(arg, prefix) {
            Err(v) => v,
            Ok(Listed::Yes { .. }) => Verdict::Permit,
            Ok(Listed::No) => Verdict::Dunno,
            Ok(Listed::Soft) => {
                if self.defer_if_reject.is_none() {
                    self.defer_if_reject = Some(Reply::new(
                        450,
                        "4.7.1",
                        format!("<{what}>: {class} rejected: Service unavailable"),
                    ));
                }
                Verdict::Dunno
            }
        }
    }

    /// Postfix's `rbl_reject_reply()`.
    fn rbl_reply(
        &mut self,
        rbl_arg: &str,
        what: &str,
        class: &str,
        txt: Option<&str>,
        f: &Facts,
    ) -> Verdict {
        let p = self.p;
        let mut template = None;
        for spec in &p.rbl_reply_maps {
            let t = {
                let w = &mut self.warnings;
                self.tables
                    .open(spec, Format::Postmap, &mut |n| super::push_notice(w, n))
            };
            match t.lookup(rbl_arg) {
                Ok(Some(t)) => {
                    template = Some(t);
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    self.warnings
                        .extend(maps::LookupError::new(spec, rbl_arg, &e).warnings());
                    return server_error();
                }
            }
        }
        let domain = rbl_arg.split('=').next().unwrap_or(rbl_arg);
        let code = p.maps_rbl_reject_code.to_string();
        let q = f.sender.map(|s| address::split(s));
        let r = f.recipient.map(|s| address::split(s));
        let lookup = |name: &str| -> Option<String> {
            Some(match name {
                "rbl_code" => code.clone(),
                "rbl_domain" => domain.to_string(),
                "rbl_reason" | "rbl_txt" => txt.unwrap_or("").to_string(),
                "rbl_what" => what.to_string(),
                "rbl_class" => class.to_string(),
                "client_address" => f.client_addr.to_string(),
                "client_name" => f.client_name.to_string(),
                "reverse_client_name" => f.reverse_name.to_string(),
                "helo_name" => f.helo?.to_string(),
                "sender" => f.sender?.to_string(),
                "sender_name" => q?.0.to_string(),
                "sender_domain" => q?.1?.to_string(),
                "recipient" => f.recipient?.to_string(),
                "recipient_name" => r?.0.to_string(),
                "recipient_domain" => r?.1?.to_string(),
                _ => return None,
            })
        };
        let mut why = None;
        if let Some(t) = &template {
            match expand(t, &lookup) {
                Some(w) => why = Some(w),
                None => self.warnings.push(format!(
                    "rbl_reject_reply: bad rbl reply template for domain {rbl_arg}: {t}"
                )),
            }
        }
        let why = match why.or_else(|| expand(&p.default_rbl_reply, &lookup)) {
            Some(w) => w,
            None => {
                self.warnings.push(format!(
                    "rbl_reject_reply: bad default rbl reply template: {}",
                    p.default_rbl_reply
                ));
                return server_error();
            }
        };
        let b = why.as_bytes();
        if b.len() < 4
            || !matches!(b[0], b'4' | b'5')
            || !b[1].is_ascii_digit()
            || !b[2].is_ascii_digit()
            || b[3] != b' '
        {
            self.warnings
                .push(format!("rbl response code configuration error: {why}"));
            return Verdict::Reject(Reply::new(450, "4.7.1", "Service unavailable"));
        }
        let code: u16 = why[..3].parse().unwrap_or(450);
        let (dsn, text) = split_dsn(&why[4..], "4.7.1");
        let text = if text.is_empty() {
            "Service unavailable".to_string()
        } else {
            text
        };
        // smtpd_check_reject(): at most 510 characters, non-printables as spaces.
        let line: String = text
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    ' '
                }
            })
            .collect();
        let mut r = Reply::new(code, &dsn, line);
        let room = 510usize.saturating_sub(4 + r.dsn.len() + 1);
        if r.text.len() > room {
            r.text.truncate(room);
        }
        Verdict::Reject(r)
    }

    /// `check_*_{mx,ns,a}_access TABLE` (Postfix's `check_server_access()`).
    fn server_access(&mut self, word: &str, table: &str, f: &Facts) -> Verdict {
        let (target, name, stage) = if word.starts_with("check_client_") {
            (f.client_name, f.client_name, Stage::Client)
        } else if word.starts_with("check_reverse_client_") {
            (f.reverse_name, f.reverse_name, Stage::Client)
        } else if word.starts_with("check_helo_") {
            match f.helo {
                Some(h) => (h, h, Stage::Helo),
                None => return Verdict::Dunno,
            }
        } else if word.starts_with("check_sender_") {
            match f.sender.filter(|s| !s.is_empty()) {
                Some(s) => (s, s, Stage::Sender),
                None => return Verdict::Dunno,
            }
        } else {
            match f.recipient.filter(|s| !s.is_empty()) {
                Some(r) => (r, r, Stage::Recipient),
                None => return Verdict::Dunno,
            }
        };
        if matches!(stage, Stage::Client) && name.eq_ignore_ascii_case("unknown") {
            return Verdict::Dunno;
        }
        let kind = if word.ends_with("_mx_access") {
            "MX"
        } else if word.ends_with("_ns_access") {
            "NS"
        } else {
            "A"
        };
        if !table.contains(':') {
            self.warnings.push(format!(
                "restriction {word}: bad argument \"{table}\": need maptype:mapname"
            ));
            return server_error();
        }
        let t = {
            let w = &mut self.warnings;
            self.tables
                .open(table, Format::Postmap, &mut |n| super::push_notice(w, n))
        };
        let tables = [t];
        let parent = maps::Feature::SmtpdAccessMaps
            .parent_matches(&self.p.addresses.parent_domain_matches_subdomains.join(","));
        let domain = match name.rsplit_once('@') {
            Some((_, d)) => d,
            None => name,
        };
        let v = self.server_access_inner(&tables, kind, domain, name, parent, stage, f);
        if v == Verdict::Permit {
            self.warnings
                .push(format!("restriction {word} returns OK for {target}"));
            self.warnings
                .push("this is not allowed for security reasons".to_string());
            self.warnings
                .push("use DUNNO instead of OK if you want to make an exception".to_string());
            return server_error();
        }
        v
    }

    #[allow(clippy::too_many_arguments)]
    fn server_access_inner(
        &mut self,
        tables: &[std::sync::Arc<dyn maps::Table>],
        kind: &str,
        domain: &str,
        name: &str,
        parent: bool,
        stage: Stage,
        f: &Facts,
    ) -> Verdict {
        // An address literal is its own MX (and A) server; it has no NS equivalent.
        if domain.starts_with('[') {
            if kind == "NS" {
                return Verdict::Dunno;
            }
            return match address::address_literal(domain) {
                Some(ip) => self.addr_access(tables, &ip.to_string(), stage, f),
                None => Verdict::Dunno,
            };
        }
        let servers: Vec<String> = if kind == "A" {
            vec![domain.to_string()]
        } else {
            let d = domain.to_string();
            let is_mx = kind == "MX";
            let res = dns::blocking(async move {
                let r = dns::system();
                if is_mx {
                    return match r.mx(&d).await {
                        DnsResult::NullMx => DnsResult::NullMx,
                        m if m.is_not_found() => DnsResult::Found(vec![d.clone()]),
                        m => m.map_exchanges(),
                    };
                }
                // No NS record: try the parent domains (XXX Postfix 20150707 work-around
                // for servers that answer NXDOMAIN for "no data").
                let mut cur = d.as_str();
                loop {
                    let ns = r.ns(cur).await;
                    if !ns.is_not_found() {
                        return ns;
                    }
                    match cur.split_once('.') {
                        Some((_, rest)) if !rest.is_empty() => cur = rest,
                        _ => return ns,
                    }
                }
            });
            match res {
                DnsResult::Found(v) => v,
                DnsResult::NullMx => return Verdict::Dunno,
                DnsResult::TempFail(why) | DnsResult::Fail(why) => {
                    self.warnings
                        .push(format!("Unable to look up {kind} host for {domain}: {why}"));
                    return Verdict::Dunno;
                }
                _ => {
                    self.warnings.push(format!(
                        "Unable to look up {kind} host for {domain}: Host not found"
                    ));
                    return Verdict::Dunno;
                }
            }
        };
        let class = match stage {
            Stage::Client => CLASS_CLIENT,
            Stage::Helo => CLASS_HELO,
            Stage::Sender => CLASS_SENDER,
            _ => CLASS_RECIPIENT,
        };
        for server in servers {
            if server.parse::<IpAddr>().is_ok() {
                let v = self.addr_access(tables, &server, stage, f);
                if v != Verdict::Dunno {
                    return v;
                }
                continue;
            }
            if kind != "A" {
                match maps::lookup_domain(tables, &server.to_ascii_lowercase(), parent) {
                    Ok(Some((_, v))) => {
                        let v = self.access_result(&v, stage, f);
                        if v != Verdict::Dunno {
                            return v;
                        }
                        // Postfix stops at the first table hit, even DUNNO.
                        return Verdict::Dunno;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // check_server_access(): "451 4.3.5 Server configuration
                        // error" as the table's value.
                        self.warnings.extend(e.warnings());
                        return self.access_result(
                            "451 4.3.5 Server configuration error",
                            stage,
                            f,
                        );
                    }
                }
            }
            let host = server.clone();
            let addrs = dns::blocking(async move { dns::system().ip(&host).await });
            match addrs {
                DnsResult::Found(ips) => {
                    for ip in ips {
                        let v = self.addr_access(tables, &ip.to_string(), stage, f);
                        if v != Verdict::Dunno {
                            return v;
                        }
                    }
                }
                other => {
                    if kind != "A" {
                        let why = match other {
                            DnsResult::TempFail(_) => "Temporary failure in name resolution",
                            _ => "Name or service not known",
                        };
                        self.warnings.push(format!(
                            "Unable to look up {kind} host {server} for {class} {name}: {why}"
                        ));
                    }
                }
            }
        }
        Verdict::Dunno
    }

    /// An address and its parent networks in an access table.
    fn addr_access(
        &mut self,
        tables: &[std::sync::Arc<dyn maps::Table>],
        addr: &str,
        stage: Stage,
        f: &Facts,
    ) -> Verdict {
        match maps::lookup_client(tables, None, addr, false) {
            Ok(Some((_, v))) => self.access_result(&v, stage, f),
            Ok(None) => Verdict::Dunno,
            Err(e) => {
                self.warnings.extend(e.warnings());
                self.access_result("451 4.3.5 Server configuration error", stage, f)
            }
        }
    }
}

impl DnsResult<dns::MxHost> {
    fn map_exchanges(self) -> DnsResult<String> {
        match self {
            DnsResult::Found(v) => DnsResult::Found(v.into_iter().map(|m| m.exchange).collect()),
            DnsResult::NxDomain => DnsResult::NxDomain,
            DnsResult::NoData => DnsResult::NoData,
            DnsResult::NullMx => DnsResult::NullMx,
            DnsResult::TempFail(e) => DnsResult::TempFail(e),
            DnsResult::Fail(e) => DnsResult::Fail(e),
        }
    }
}

fn server_error() -> Verdict {
    Verdict::Reject(Reply::new(451, "4.3.5", "Server configuration error"))
}

/// The domain an RHSBL query is made for, or `None` when Postfix skips the lookup
/// (address literal, empty, numeric last label, invalid host name).
fn rhs_domain(what: &str) -> Option<&str> {
    let d = match what.rsplit_once('@') {
        Some((_, d)) => d,
        None => what,
    };
    if d.is_empty() || d.starts_with('[') {
        return None;
    }
    let last = d.rsplit('.').next().unwrap_or(d);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    valid_hostname(d, false).then_some(d)
}

/// TXT records joined by " / ", at most 500 characters (Postfix `RBL_TXT_LIMIT`).
fn join_txt(v: &[String]) -> String {
    const LIMIT: usize = 500;
    let mut out = String::new();
    for (i, t) in v.iter().enumerate() {
        let left = LIMIT.saturating_sub(out.len());
        out.extend(t.chars().take(left));
        if i + 1 < v.len() && LIMIT.saturating_sub(out.len()) > 3 {
            out.push_str(" / ");
        } else if out.len() >= LIMIT {
            break;
        }
    }
    out
}

/// The `d.d.d.d` filter of a DNSxL restriction: each octet a number or `[n;m..k]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IpPattern(Vec<Vec<(u8, u8)>>);

impl IpPattern {
    pub(super) fn parse(s: &str) -> Result<IpPattern, String> {
        let bad = || format!("bad address pattern: \"{s}\"");
        let mut octets = Vec::new();
        let mut rest = s;
        loop {
            let (spec, after) = if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').ok_or_else(bad)?;
                (&r[..end], &r[end + 1..])
            } else {
                let end = rest.find('.').unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            };
            let mut ranges = Vec::new();
            for item in spec.split(';') {
                let (lo, hi) = match item.split_once("..") {
                    Some((a, b)) => (a, b),
                    None => (item, item),
                };
                let lo: u8 = lo.parse().map_err(|_| bad())?;
                let hi: u8 = hi.parse().map_err(|_| bad())?;
                if lo > hi {
                    return Err(bad());
                }
                ranges.push((lo, hi));
            }
            octets.push(ranges);
            match after.strip_prefix('.') {
                Some(r) => rest = r,
                None if after.is_empty() => break,
                None => return Err(bad()),
            }
        }
        if octets.len() != 4 {
            return Err(bad());
        }
        Ok(IpPattern(octets))
    }

    pub(super) fn matches(&self, o: [u8; 4]) -> bool {
        self.0
            .iter()
            .zip(o)
            .all(|(ranges, b)| ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&b)))
    }
}

/// Postfix `mac_expand()` for reply templates: `$name`, `${name}`, `$(name)`,
/// `${name?text}`, `${name:text}`, `$$`. Unknown names expand empty; attribute values
/// outside `smtpd_expansion_filter`'s default set (printable ASCII) become `_`.
/// `None` on a syntax error.
pub(super) fn expand(t: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let filter = |v: String| -> String {
        v.chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' || c == '\t' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut out = String::new();
    let mut it = t.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match it.peek().map(|&(_, c)| c) {
            Some('$') => {
                it.next();
                out.push('$');
            }
            Some(open @ ('{' | '(')) => {
                let close = if open == '{' { '}' } else { ')' };
                // Find the matching close, allowing nesting.
                let start = i + 2;
                let mut depth = 0usize;
                let mut end = None;
                for (j, c) in t[start..].char_indices() {
                    if c == open {
                        depth += 1;
                    } else if c == close {
                        if depth == 0 {
                            end = Some(start + j);
                            break;
                        }
                        depth -= 1;
                    }
                }
                let end = end?;
                let inner = &t[start..end];
                while it.peek().is_some_and(|&(j, _)| j <= end) {
                    it.next();
                }
                let name_end = inner
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(inner.len());
                let (name, op) = inner.split_at(name_end);
                if name.is_empty() {
                    return None;
                }
                let val = lookup(name).filter(|v| !v.is_empty());
                match op.chars().next() {
                    None => out.push_str(&filter(val.unwrap_or_default())),
                    Some('?') => {
                        if val.is_some() {
                            out.push_str(&expand(&op[1..], lookup)?);
                        }
                    }
                    Some(':') => match val {
                        Some(v) => out.push_str(&filter(v)),
                        None => out.push_str(&expand(&op[1..], lookup)?),
                    },
                    Some(_) => return None,
                }
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                let mut name = String::new();
                while let Some(&(_, c)) = it.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        it.next();
                    } else {
                        break;
                    }
                }
                out.push_str(&filter(lookup(&name).unwrap_or_default()));
            }
            _ => out.push('$'),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = IpPattern::parse("127.0.0.[2..4]").unwrap();
        assert!(p.matches([127, 0, 0, 2]));
        assert!(p.matches([127, 0, 0, 4]));
        assert!(!p.matches([127, 0, 0, 5]));
        let p = IpPattern::parse("127.0.[0;1].[2;10..11]").unwrap();
        assert!(p.matches([127, 0, 1, 10]));
        assert!(!p.matches([127, 0, 2, 10]));
        assert!(!p.matches([127, 0, 0, 3]));
        assert!(
            IpPattern::parse("127.0.0.2")
                .unwrap()
                .matches([127, 0, 0, 2])
        );
        assert!(IpPattern::parse("127.0.0").is_err());
        assert!(IpPattern::parse("127.0.0.[2..").is_err());
        assert!(IpPattern::parse("127.0.0.300").is_err());
    }

    #[test]
    fn default_reply_expansion() {
        let t = "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}";
        let l = |reason: &'static str| {
            move |n: &str| -> Option<String> {
                Some(
                    match n {
                        "rbl_code" => "554",
                        "rbl_class" => "Client host",
                        "rbl_what" => "127.0.0.2",
                        "rbl_domain" => "zen.example",
                        "rbl_reason" => reason,
                        _ => return None,
                    }
                    .to_string(),
                )
            }
        };
        assert_eq!(
            expand(t, &l("")).unwrap(),
            "554 Service unavailable; Client host [127.0.0.2] blocked using zen.example"
        );
        assert_eq!(
            expand(t, &l("see\x01 http://x/")).unwrap(),
            "554 Service unavailable; Client host [127.0.0.2] blocked using zen.example; see_ http://x/"
        );
        assert_eq!(
            expand("${x:dflt} $$ $(rbl_code)", &l("")).unwrap(),
            "dflt $ 554"
        );
        assert!(expand("${rbl_code", &l("")).is_none());
    }

    #[test]
    fn rhs_domains() {
        assert_eq!(rhs_domain("u@bad.example"), Some("bad.example"));
        assert_eq!(rhs_domain("u@[192.0.2.1]"), None);
        assert_eq!(rhs_domain("host.10"), None);
        assert_eq!(rhs_domain("u@"), None);
        assert_eq!(join_txt(&["a".into(), "b".into()]), "a / b");
    }
}
