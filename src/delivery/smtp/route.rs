//! Next-hop → server addresses, and the loop over them (Postfix `smtp_connect.c`,
//! `smtp_addr.c`): `domain` gets an MX lookup (equal preferences shuffled, no MX → the
//! domain's own addresses, null MX → bounce), `[host]` none; `:port` picks the port
//! (`smtp_tcp_port` otherwise). Addresses are tried in order up to `smtp_mx_address_limit`,
//! with at most `smtp_mx_session_limit` sessions that got as far as a mail transaction,
//! then the `smtp_fallback_relay` hosts. On port 25 an MX that is this host (an
//! `inet_interfaces`/`proxy_interfaces` address) ends the list there: `mail for X loops
//! back to myself`.

use std::net::IpAddr;

use crate::dns::{DnsResult, Resolver};
use crate::log;

use super::proto::{self, End, Target};
use super::state::{State, Why};

/// One server address with its MX preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub host: String,
    pub ip: IpAddr,
    pub pref: u32,
}

/// A parsed destination: `[host]:port`, `host:port`, `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    pub host: String,
    pub literal: bool,
    pub service: String,
}

/// Split a destination as Postfix's `host_port()` does.
pub fn parse_dest(dest: &str, def_service: &str) -> Result<Dest, String> {
    let (host, literal, rest) = if let Some(r) = dest.strip_prefix('[') {
        let Some(close) = r.find(']') else {
            return Err(format!("missing \"]\" in server description: {dest}"));
        };
        (&r[..close], true, &r[close + 1..])
    } else {
        match dest.rfind(':') {
            // A bare IPv6 address is not a host:port.
            Some(i) if !dest[..i].contains(':') => (&dest[..i], false, &dest[i..]),
            _ => (dest, false, ""),
        }
    };
    let service = match rest {
        "" => def_service.to_string(),
        r if r.starts_with(':') && r.len() > 1 => r[1..].to_string(),
        _ => return Err(format!("malformed server description: {dest}")),
    };
    let host = host
        .strip_prefix("ipv6:")
        .or_else(|| host.strip_prefix("IPv6:"))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(format!("missing host in server description: {dest}"));
    }
    Ok(Dest {
        host: host.to_string(),
        literal,
        service,
    })
}

/// A service name or number as a TCP port.
pub fn service_port(service: &str) -> Option<u16> {
    if service.bytes().all(|b| b.is_ascii_digit()) {
        return service.parse::<u16>().ok().filter(|&p| p != 0);
    }
    match service {
        "smtp" => return Some(25),
        "submission" => return Some(587),
        "smtps" | "submissions" | "urd" => return Some(465),
        "lmtp" => return Some(24),
        _ => {}
    }
    let text = std::fs::read_to_string("/etc/services").ok()?;
    for line in text.lines() {
        let mut w = line.split('#').next().unwrap_or("").split_whitespace();
        let (Some(name), Some(pp)) = (w.next(), w.next()) else {
            continue;
        };
        let aliases: Vec<&str> = w.collect();
        if (name == service || aliases.contains(&service))
            && let Some(port) = pp.strip_suffix("/tcp")
        {
            return port.parse().ok();
        }
    }
    None
}

struct Lookup<'r> {
    resolver: &'r Resolver,
    v4: bool,
    v6: bool,
    dns: bool,
    native: bool,
}

impl Lookup<'_> {
    fn atype(&self) -> &'static str {
        if self.v6 { "AAAA" } else { "A" }
    }

    fn keep(&self, ip: &IpAddr) -> bool {
        (ip.is_ipv4() && self.v4) || (ip.is_ipv6() && self.v6)
    }

    /// `smtp_addr_one()`: the addresses of one host; failures update `why` (a soft error
    /// dominates earlier and later hard ones).
    fn addr_one(&self, host: &str, pref: u32, why: &mut Option<Why>) -> Vec<Addr> {
        let mk = |ip: IpAddr| Addr {
            host: host.to_string(),
            ip,
            pref,
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return if self.keep(&ip) {
                vec![mk(ip)]
            } else {
                Vec::new()
            };
        }
        let soft = why.as_ref().is_some_and(|w| w.is_soft());
        let set = |why: &mut Option<Why>, dsn: &str, text: String| {
            *why = Some(Why::local(dsn, text, "none"));
        };
        if self.dns {
            let r = self.resolver.clone();
            let name = host.to_string();
            let (v4, v6) = (self.v4, self.v6);
            let res: DnsResult<IpAddr> = crate::dns::blocking(async move {
                if v4 && v6 {
                    r.ip(&name).await
                } else if v4 {
                    match r.a(&name).await {
                        DnsResult::Found(v) => {
                            DnsResult::Found(v.into_iter().map(IpAddr::V4).collect())
                        }
                        DnsResult::NxDomain => DnsResult::NxDomain,
                        DnsResult::NoData => DnsResult::NoData,
                        DnsResult::NullMx => DnsResult::NullMx,
                        DnsResult::TempFail(e) => DnsResult::TempFail(e),
                        DnsResult::Fail(e) => DnsResult::Fail(e),
                    }
                } else {
                    match r.aaaa(&name).await {
                        DnsResult::Found(v) => {
                            DnsResult::Found(v.into_iter().map(IpAddr::V6).collect())
                        }
                        DnsResult::NxDomain => DnsResult::NxDomain,
                        DnsResult::NoData => DnsResult::NoData,
                        DnsResult::NullMx => DnsResult::NullMx,
                        DnsResult::TempFail(e) => DnsResult::TempFail(e),
                        DnsResult::Fail(e) => DnsResult::Fail(e),
                    }
                }
            });
            let what = |w: &str| {
                format!(
                    "Host or domain name not found. Name service error for name={host} type={}: {w}",
                    self.atype()
                )
            };
            match res {
                DnsResult::Found(v) => {
                    return v.into_iter().filter(|ip| self.keep(ip)).map(mk).collect();
                }
                DnsResult::TempFail(_) => {
                    set(why, "4.4.3", what("Host not found, try again"));
                    return Vec::new();
                }
                DnsResult::Fail(_) => {
                    set(
                        why,
                        if soft { "4.4.3" } else { "5.4.3" },
                        what("Non-recoverable error"),
                    );
                    return Vec::new();
                }
                DnsResult::NoData => set(
                    why,
                    if soft { "4.4.4" } else { "5.4.4" },
                    what("Host found but no data record of requested type"),
                ),
                DnsResult::NxDomain | DnsResult::NullMx => set(
                    why,
                    if soft { "4.4.4" } else { "5.4.4" },
                    what("Host not found"),
                ),
            }
        }
        if self.native {
            let soft = why.as_ref().is_some_and(|w| w.is_soft());
            match std::net::ToSocketAddrs::to_socket_addrs(&(host, 0u16)) {
                Ok(it) => {
                    let mut v: Vec<Addr> = it
                        .map(|sa| sa.ip())
                        .filter(|ip| self.keep(ip))
                        .map(mk)
                        .collect();
                    v.dedup();
                    if v.is_empty() {
                        set(
                            why,
                            if soft { "4.4.4" } else { "5.4.4" },
                            format!("{host}: host not found"),
                        );
                    }
                    return v;
                }
                Err(e) => {
                    let msg = e.to_string();
                    let msg = msg
                        .strip_prefix("failed to lookup address information: ")
                        .unwrap_or(&msg)
                        .to_string();
                    let retry = msg.contains("Temporary failure");
                    set(
                        why,
                        if soft || retry { "4.4.4" } else { "5.4.4" },
                        format!("unable to look up host {host}: {msg}"),
                    );
                }
            }
        }
        Vec::new()
    }
}

/// `smtp_randomize_addresses`: shuffle, then order by preference again (Postfix
/// `dns_rr_shuffle()` + `dns_rr_sort()`), so that the addresses of one preference are
/// tried in random order.
fn randomize(list: &mut [Addr]) {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9_7f4a_7c15)
        | 1;
    for i in (1..list.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = (seed % (i as u64 + 1)) as usize;
        list.swap(i, j);
    }
    list.sort_by_key(|a| a.pref);
}

/// Is `ip` one of this host's own (or proxy) addresses?
fn is_self(st: &State, ip: &IpAddr) -> bool {
    st.p.own_addresses.contains(ip)
}

/// `smtp_domain_addr()`: MX lookup then addresses. Returns the list and "I am an MX".
fn domain_addr(
    st: &mut State,
    lk: &Lookup,
    name: &str,
    loop_detect: bool,
    why: &mut Option<Why>,
) -> (Vec<Addr>, bool) {
    let r = lk.resolver.clone();
    let qname = name.to_string();
    let mx = crate::dns::blocking(async move { r.mx(&qname).await });
    let ign = st.s.cfg.get_bool("ignore_mx_lookup_error").unwrap_or(false);
    let mxtext = |w: &str| {
        format!("Host or domain name not found. Name service error for name={name} type=MX: {w}")
    };
    match mx {
        DnsResult::TempFail(_) => {
            *why = Some(Why::local(
                "4.4.3",
                mxtext("Host not found, try again"),
                "none",
            ));
            if ign {
                return (host_addr(st, lk, name, loop_detect, why), false);
            }
            (Vec::new(), false)
        }
        DnsResult::Fail(_) => {
            *why = Some(Why::local("5.4.3", mxtext("Non-recoverable error"), "none"));
            if ign {
                return (host_addr(st, lk, name, loop_detect, why), false);
            }
            (Vec::new(), false)
        }
        DnsResult::NullMx => {
            *why = Some(Why::local(
                "5.1.0",
                format!("Domain {name} does not accept mail (nullMX)"),
                "none",
            ));
            (Vec::new(), false)
        }
        DnsResult::NxDomain | DnsResult::NoData => {
            (host_addr(st, lk, name, loop_detect, why), false)
        }
        DnsResult::Found(mxs) => {
            let best_pref = mxs.first().map(|m| m.preference as u32).unwrap_or(u32::MAX);
            let mut list = Vec::new();
            for m in &mxs {
                list.extend(lk.addr_one(&m.exchange, m.preference as u32, why));
            }
            if list.is_empty() {
                log::warning(
                    &st.s.ident,
                    &format!("no MX host for {name} has a valid address record"),
                );
                return (Vec::new(), false);
            }
            let best_found = list[0].pref;
            let mut i_am_mx = false;
            if loop_detect && let Some(me) = list.iter().position(|a| is_self(st, &a.ip)) {
                i_am_mx = true;
                let pref = list[me].pref;
                let cut = list.iter().position(|a| a.pref == pref).unwrap_or(me);
                list.truncate(cut);
                if list.is_empty() {
                    *why = Some(if best_pref != best_found {
                        Why::local(
                            "4.4.4",
                            format!("unable to find primary relay for {name}"),
                            "none",
                        )
                    } else {
                        Why::local(
                            "5.4.6",
                            format!("mail for {name} loops back to myself"),
                            "none",
                        )
                    });
                }
            }
            if st.p.randomize_addresses && list.len() > 1 {
                randomize(&mut list);
            }
            (list, i_am_mx)
        }
    }
}

/// `smtp_host_addr()`: the addresses of a host, no MX lookup.
fn host_addr(
    st: &State,
    lk: &Lookup,
    host: &str,
    loop_detect: bool,
    why: &mut Option<Why>,
) -> Vec<Addr> {
    let list = lk.addr_one(host, 0, why);
    if loop_detect && list.iter().any(|a| is_self(st, &a.ip)) {
        *why = Some(Why::local(
            "5.4.6",
            format!("mail for {host} loops back to myself"),
            "none",
        ));
        return Vec::new();
    }
    let mut list = list;
    if st.p.randomize_addresses && list.len() > 1 {
        randomize(&mut list);
    }
    list
}

/// `smtp_connect_inet()`: every destination (the next-hop list, then the fallback relays),
/// every address, until no recipient is left open.
pub fn connect_inet(st: &mut State, nexthop: &str) {
    let p = st.p;
    let resolver =
        st.s.resolver
            .clone()
            .unwrap_or_else(|| crate::dns::system().clone());
    let lk = Lookup {
        resolver: &resolver,
        v4: p.inet_v4,
        v6: p.inet_v6,
        dns: p.lookup_dns && !p.disable_dns_lookups,
        native: p.lookup_native || p.disable_dns_lookups,
    };
    let mut sites = crate::config::values::list(nexthop);
    let non_fallback = sites.len();
    sites.extend(p.fallback_relay.iter().cloned());
    let mut stopped_at: Option<usize> = None;
    for (k, dest) in sites.iter().enumerate() {
        if st.left().is_empty() {
            break;
        }
        let mut final_nexthop = k + 1 == sites.len();
        let d = match parse_dest(dest, &p.tcp_port) {
            Ok(d) => d,
            Err(e) => {
                log::warning(&st.s.ident, &e);
                st.fill(Why::local("4.3.5", e, "none"));
                continue;
            }
        };
        let Some(port) = service_port(&d.service) else {
            let e = format!("unknown service: {}/tcp", d.service);
            log::warning(&st.s.ident, &e);
            st.fill(Why::local("4.3.5", e, "none"));
            continue;
        };
        let loop_detect = port == 25;
        let lookup_mx = !d.literal && !p.disable_dns_lookups;
        let mut why = None;
        let (addrs, i_am_mx) = if lookup_mx {
            domain_addr(st, &lk, &d.host, loop_detect, &mut why)
        } else {
            (host_addr(st, &lk, &d.host, loop_detect, &mut why), false)
        };
        if let Some(w) = why {
            st.fill(w);
        }
        if i_am_mx {
            final_nexthop = true;
        }
        if addrs.is_empty() && st.why.as_ref().is_some_and(|w| w.dsn.ends_with(".4.6")) {
            final_nexthop = true;
        }
        let best_pref = addrs.first().map(|a| a.pref).unwrap_or(0);
        let mut addr_count = 0usize;
        let mut sess_count = 0usize;
        // smtp_reuse_session(): a session cached under the delivery request's next-hop is
        // tried before any new connection (only for the first next-hop, as Postfix caches
        // under it); its address is then not connected to again.
        let mut addrs = addrs;
        if k == 0
            && st.cache_load
            && !addrs.is_empty()
            && !st.left().is_empty()
            && let Some(c) = st.cache_taken.take().map(super::cache::Taken::into_session)
        {
            let ip = c.ip();
            let rest = addrs.iter().filter(|a| a.ip != ip).count();
            if proto::reuse(
                st,
                c,
                final_nexthop && rest == 0,
                loop_detect,
                &d.host,
                dest,
            ) {
                addrs.retain(|a| a.ip != ip);
                sess_count = 1;
                addr_count = 1;
            }
        }
        // Then a session to one of the best servers found by its address, whichever
        // next-hop stored it (Postfix's smtp_reuse_addr(), for every next-hop); its address
        // is not connected to again. smtp_update_addr_list(): the list ends when the
        // sessions reach smtp_mx_session_limit.
        if st.cache_load {
            let mut i = 0;
            while i < addrs.len()
                && addrs[i].pref == best_pref
                && !st.left().is_empty()
                && !(p.mx_session_limit > 0 && sess_count >= p.mx_session_limit)
            {
                let a = &addrs[i];
                let key = super::endp_key(st, &d.host, &a.host, a.ip, port);
                let found =
                    super::cache::take_endpoint(&key).map(|t| t.into_session().for_host(&a.host));
                let last = addrs.len() == 1;
                if let Some(c) = found
                    && proto::reuse(st, c, final_nexthop && last, loop_detect, &d.host, dest)
                {
                    addrs.remove(i);
                    sess_count += 1;
                    addr_count += 1;
                    continue;
                }
                i += 1;
            }
        }
        if p.mx_session_limit > 0 && sess_count >= p.mx_session_limit {
            addrs.clear();
        }
        let mut idx = 0usize;
        let mut tls_off = false;
        while idx < addrs.len() && !st.left().is_empty() {
            let a = &addrs[idx];
            addr_count += 1;
            let mut last = idx + 1 >= addrs.len()
                || (p.mx_address_limit > 0 && addr_count >= p.mx_address_limit);
            st.final_server = final_nexthop && last;
            let t = Target {
                host: &a.host,
                ip: a.ip,
                port,
                best_mx: a.pref == best_pref,
                loop_detect,
                tls_off,
                final_if_xfer: final_nexthop
                    && (last || (p.mx_session_limit > 0 && sess_count + 1 >= p.mx_session_limit)),
                tls_nexthop: &d.host,
                dest,
            };
            tls_off = false;
            // A less preferred server: a session to it that another next-hop stored is
            // used first (Postfix's smtp_reuse_addr(); the best ones were looked up above).
            let reused = st.cache_load
                && a.pref != best_pref
                && super::cache::take_endpoint(&super::endp_key(st, &d.host, &a.host, a.ip, port))
                    .map(|c| c.into_session().for_host(&a.host))
                    .is_some_and(|c| {
                        proto::reuse(st, c, t.final_if_xfer, loop_detect, &d.host, dest)
                    });
            let end = if reused {
                End::Xfer
            } else {
                proto::session(st, &t)
            };
            match end {
                End::NoConnect | End::Handshake => {}
                End::RetryPlain => {
                    addr_count -= 1;
                    tls_off = true;
                    continue;
                }
                End::Xfer => {
                    sess_count += 1;
                    if p.mx_session_limit > 0 && sess_count >= p.mx_session_limit {
                        last = true;
                    }
                }
            }
            if last {
                break;
            }
            idx += 1;
        }
        if final_nexthop {
            stopped_at = Some(k);
            break;
        }
    }
    // Pretend that configuration problems are recoverable rather than bouncing the mail.
    if !st.left().is_empty()
        && let Some(w) = st.why.clone()
        && !w.is_soft()
    {
        let mut w = w;
        if stopped_at.is_some_and(|k| k >= non_fallback) {
            log::warning(&st.s.ident, "smtp_fallback_relay configuration problem");
            w.dsn = "4.3.5".into();
            st.why = Some(w);
        } else if sites
            .first()
            .is_some_and(|s0| !p.relayhost.is_empty() && *s0 == p.relayhost)
        {
            log::warning(&st.s.ident, "relayhost configuration problem");
            w.dsn = "4.3.5".into();
            st.why = Some(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let d = parse_dest("[mail.example.net]:587", "smtp").unwrap();
        assert_eq!(
            (d.host.as_str(), d.literal, d.service.as_str()),
            ("mail.example.net", true, "587")
        );
        let d = parse_dest("example.net", "smtp").unwrap();
        assert_eq!(
            (d.host.as_str(), d.literal, d.service.as_str()),
            ("example.net", false, "smtp")
        );
        let d = parse_dest("example.net:submission", "smtp").unwrap();
        assert_eq!(d.service, "submission");
        let d = parse_dest("[ipv6:2001:db8::1]:25", "smtp").unwrap();
        assert_eq!(d.host, "2001:db8::1");
        assert!(parse_dest("[x", "smtp").is_err());
        assert_eq!(service_port("smtp"), Some(25));
        assert_eq!(service_port("2525"), Some(2525));
        assert_eq!(service_port("0"), None);
        assert_eq!(service_port("no-such-service-here"), None);
    }
}
