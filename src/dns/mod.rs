//! DNS lookups for smtpd restrictions and outbound delivery: a small facade over
//! `hickory-resolver` that answers the way Postfix's `dns_lookup()` classifies results.
//!
//! * [`Resolver`] — A, AAAA, MX (sorted by preference, equal preferences shuffled), TXT,
//!   PTR and NS lookups. Every name is queried as an absolute name (no `search`/`domain`
//!   suffixes, as Postfix does for mail domains), `/etc/hosts` is not consulted.
//! * [`DnsResult`] — found, NXDOMAIN, no data (the name exists without records of that
//!   type), null MX (RFC 7505), temporary failure (timeouts, SERVFAIL, no server reachable)
//!   and permanent failure (REFUSED, FORMERR, NOTIMP: glibc's `NO_RECOVERY`, which Postfix
//!   maps to `DNS_FAIL`).
//! * [`blocking`] — runs a lookup from synchronous code (the restriction engine) on a
//!   small runtime of its own, without stalling the caller's async workers.
//! * [`testserver`] — an authoritative DNS server on a loopback port for tests.
//!
//! Configuration: `/etc/resolv.conf` (its `nameserver`, `options timeout:`/`attempts:`
//! and `edns0`), or the file named by the environment variable `POSTERN_RESOLV_CONF`.
//! resolv.conf cannot name a port, so `POSTERN_DNS_SERVER=127.0.0.1:5353` (a comma-
//! separated list of `addr:port`) replaces its name servers; tests use it to point a
//! Postern instance at [`testserver::TestDns`] without touching the admin's files.
//!
//! Limits: a lookup never takes longer than `timeout × attempts` plus half a second
//! (capped at [`MAX_LOOKUP_TIME`]), then answers [`DnsResult::TempFail`]. Positive and
//! negative answers are cached by hickory for their TTLs. XXX: internationalised domain
//! names are looked up as given (Postfix converts them to A-labels first); there is no
//! `smtp_dns_reply_filter`/`smtpd_dns_reply_filter`, and no DNSSEC.

pub mod testserver;

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

/// The environment variable naming a resolv.conf to use instead of `/etc/resolv.conf`.
pub const ENV_RESOLV_CONF: &str = "POSTERN_RESOLV_CONF";
/// The environment variable naming name servers as `addr:port[,addr:port…]`.
pub const ENV_DNS_SERVER: &str = "POSTERN_DNS_SERVER";
/// No lookup waits longer than this, whatever resolv.conf says.
pub const MAX_LOOKUP_TIME: Duration = Duration::from_secs(12);

/// The outcome of one lookup, classified as Postfix's `dns_lookup()` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsResult<T> {
    /// At least one record of the requested type (after following CNAMEs).
    Found(Vec<T>),
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// The name exists but has no record of this type (NOERROR, empty answer).
    NoData,
    /// MX lookup only: the domain publishes a null MX (`0 .`, RFC 7505).
    NullMx,
    /// Try again later: timeout, SERVFAIL, no server reachable (Postfix `DNS_RETRY`).
    TempFail(String),
    /// A permanent error other than "not found": REFUSED, FORMERR, NOTIMP, a malformed
    /// name (Postfix `DNS_FAIL`/`DNS_INVAL`).
    Fail(String),
}

impl<T> DnsResult<T> {
    /// NXDOMAIN or no data: Postfix's `DNS_NOTFOUND`.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DnsResult::NxDomain | DnsResult::NoData)
    }
    /// Postfix's `DNS_RETRY`.
    pub fn is_temporary(&self) -> bool {
        matches!(self, DnsResult::TempFail(_))
    }
    /// The records found (empty unless [`DnsResult::Found`]).
    pub fn records(&self) -> &[T] {
        match self {
            DnsResult::Found(v) => v,
            _ => &[],
        }
    }
    /// The records found, consuming the result.
    pub fn into_records(self) -> Vec<T> {
        match self {
            DnsResult::Found(v) => v,
            _ => Vec::new(),
        }
    }
    fn map_records<U>(self, f: impl FnOnce(Vec<T>) -> Vec<U>) -> DnsResult<U> {
        match self {
            DnsResult::Found(v) => {
                let u = f(v);
                if u.is_empty() {
                    DnsResult::NoData
                } else {
                    DnsResult::Found(u)
                }
            }
            DnsResult::NxDomain => DnsResult::NxDomain,
            DnsResult::NoData => DnsResult::NoData,
            DnsResult::NullMx => DnsResult::NullMx,
            DnsResult::TempFail(e) => DnsResult::TempFail(e),
            DnsResult::Fail(e) => DnsResult::Fail(e),
        }
    }
}

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    pub preference: u16,
    /// The exchange host name, lower case, without the trailing dot.
    pub exchange: String,
}

/// Name servers and timing, as read from resolv.conf (or given by a test).
#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub servers: Vec<SocketAddr>,
    /// Per-query timeout (resolv.conf `options timeout:`, at most 5 s).
    pub timeout: Duration,
    /// Tries per server (resolv.conf `options attempts:`, at most 3).
    pub attempts: usize,
    pub edns0: bool,
}

impl DnsConfig {
    /// Parse resolv.conf text. Only `nameserver` and `options timeout:/attempts:/edns0`
    /// matter here; other lines are ignored as glibc ignores what it does not know.
    pub fn parse_resolv_conf(text: &str) -> DnsConfig {
        let mut c = DnsConfig {
            servers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
            edns0: false,
        };
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
                        c.servers.push(SocketAddr::new(ip, 53));
                    }
                }
                Some("options") => {
                    for w in words {
                        if let Some(v) = w.strip_prefix("timeout:")
                            && let Ok(n) = v.parse::<u64>()
                        {
                            c.timeout = Duration::from_secs(n.clamp(1, 5));
                        } else if let Some(v) = w.strip_prefix("attempts:")
                            && let Ok(n) = v.parse::<usize>()
                        {
                            c.attempts = n.clamp(1, 3);
                        } else if w == "edns0" {
                            c.edns0 = true;
                        }
                    }
                }
                _ => {}
            }
        }
        if c.servers.is_empty() {
            // glibc's default when resolv.conf names none.
            c.servers
                .push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53));
        }
        c
    }

    /// `/etc/resolv.conf`, or `$POSTERN_RESOLV_CONF`, with `$POSTERN_DNS_SERVER`
    /// replacing the name servers when set.
    pub fn from_env() -> Result<DnsConfig, String> {
        let path = std::env::var(ENV_RESOLV_CONF).unwrap_or_else(|_| "/etc/resolv.conf".into());
        let mut c = match std::fs::read_to_string(&path) {
            Ok(t) => DnsConfig::parse_resolv_conf(&t),
            Err(e) if std::env::var_os(ENV_DNS_SERVER).is_none() => {
                return Err(format!("cannot read {path}: {e}"));
            }
            Err(_) => DnsConfig::parse_resolv_conf(""),
        };
        if let Ok(list) = std::env::var(ENV_DNS_SERVER) {
            let mut servers = Vec::new();
            for item in list.split([',', ' ']).filter(|s| !s.is_empty()) {
                let sa = item.parse::<SocketAddr>().or_else(|_| {
                    item.parse::<IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                        .map_err(|_| format!("{ENV_DNS_SERVER}: bad server address \"{item}\""))
                })?;
                servers.push(sa);
            }
            if !servers.is_empty() {
                c.servers = servers;
            }
        }
        Ok(c)
    }

    /// The longest one lookup may take before it is reported as a temporary failure.
    pub fn deadline(&self) -> Duration {
        let per_try = self.timeout * self.attempts.max(1) as u32;
        (per_try * self.servers.len().max(1) as u32 + Duration::from_millis(500))
            .min(MAX_LOOKUP_TIME)
    }
}

/// An asynchronous resolver. Cheap to clone; clones share the cache and connections.
#[derive(Clone)]
pub struct Resolver {
    inner: Result<TokioResolver, String>,
    deadline: Duration,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("ok", &self.inner.is_ok())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Resolver {
    /// A resolver for these servers and timeouts. A configuration hickory refuses gives a
    /// resolver whose every lookup is a temporary failure naming the problem.
    pub fn new(cfg: &DnsConfig) -> Resolver {
        let mut servers = Vec::new();
        for sa in &cfg.servers {
            let mut ns = NameServerConfig::udp_and_tcp(sa.ip());
            for c in &mut ns.connections {
                c.port = sa.port();
            }
            servers.push(ns);
        }
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        let mut opts = ResolverOpts::default();
        opts.timeout = cfg.timeout;
        opts.attempts = cfg.attempts;
        opts.edns0 = cfg.edns0;
        opts.ndots = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.preserve_intermediates = true;
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| format!("DNS resolver setup: {e}"));
        Resolver {
            inner,
            deadline: cfg.deadline(),
        }
    }

    /// One server, one try of `timeout`: for tests.
    pub fn with_server(server: SocketAddr, timeout: Duration) -> Resolver {
        Resolver::new(&DnsConfig {
            servers: vec![server],
            timeout,
            attempts: 1,
            edns0: false,
        })
    }

    /// The resolver configured from the environment (see the module docs).
    pub fn from_env() -> Resolver {
        match DnsConfig::from_env() {
            Ok(c) => Resolver::new(&c),
            Err(e) => Resolver {
                inner: Err(e),
                deadline: Duration::from_secs(1),
            },
        }
    }

    /// How long one lookup may take at most.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    async fn query(&self, name: &str, rtype: RecordType) -> DnsResult<RData> {
        let r = match &self.inner {
            Ok(r) => r,
            Err(e) => return DnsResult::TempFail(e.clone()),
        };
        let Some(qname) = absolute_name(name) else {
            return DnsResult::Fail(format!("malformed domain name: {name}"));
        };
        let res = tokio::time::timeout(self.deadline, r.lookup(qname, rtype)).await;
        match res {
            Err(_) => DnsResult::TempFail(why(name, rtype, "Host not found, try again")),
            Ok(Ok(lookup)) => {
                let v: Vec<RData> = lookup
                    .answers()
                    .iter()
                    .filter(|rec| rec.record_type() == rtype)
                    .map(|rec| rec.data.clone())
                    .collect();
                if v.is_empty() {
                    DnsResult::NoData
                } else {
                    DnsResult::Found(v)
                }
            }
            Ok(Err(e)) => classify(name, rtype, &e),
        }
    }

    /// IPv4 addresses of `name`.
    pub async fn a(&self, name: &str) -> DnsResult<Ipv4Addr> {
        self.query(name, RecordType::A).await.map_records(|v| {
            v.into_iter()
                .filter_map(|d| match d {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect()
        })
    }

    /// IPv6 addresses of `name`.
    pub async fn aaaa(&self, name: &str) -> DnsResult<Ipv6Addr> {
        self.query(name, RecordType::AAAA).await.map_records(|v| {
            v.into_iter()
                .filter_map(|d| match d {
                    RData::AAAA(a) => Some(a.0),
                    _ => None,
                })
                .collect()
        })
    }

    /// A and AAAA together (IPv4 first), as Postfix's `dns_lookup_l(name, …, T_A, T_AAAA)`
    /// with "any" semantics: found when either has records; a temporary failure of one
    /// type wins over "not found" of the other.
    pub async fn ip(&self, name: &str) -> DnsResult<IpAddr> {
        let (a, aaaa) = tokio::join!(self.a(name), self.aaaa(name));
        let mut out: Vec<IpAddr> = a.records().iter().map(|&i| IpAddr::V4(i)).collect();
        out.extend(aaaa.records().iter().map(|&i| IpAddr::V6(i)));
        if !out.is_empty() {
            return DnsResult::Found(out);
        }
        merge_failures(
            a.map_records(|_| Vec::<IpAddr>::new()),
            aaaa.map_records(|_| Vec::new()),
        )
    }

    /// MX records sorted by preference, equal preferences in random order (RFC 5321
    /// §5.1). A lone `0 .` record answers [`DnsResult::NullMx`].
    pub async fn mx(&self, name: &str) -> DnsResult<MxHost> {
        let r = self.query(name, RecordType::MX).await.map_records(|v| {
            v.into_iter()
                .filter_map(|d| match d {
                    RData::MX(mx) => Some(MxHost {
                        preference: mx.preference,
                        exchange: host_name(&mx.exchange),
                    }),
                    _ => None,
                })
                .collect()
        });
        match r {
            DnsResult::Found(v) if v.iter().any(|m| m.exchange.is_empty()) => {
                // RFC 7505: a null MX is the only MX; Postfix treats any "." exchange
                // as null MX (dns_lookup.c DNS_NULLMX).
                DnsResult::NullMx
            }
            DnsResult::Found(mut v) => {
                shuffle(&mut v);
                v.sort_by_key(|m| m.preference);
                DnsResult::Found(v)
            }
            other => other,
        }
    }

    /// TXT records, each record's strings concatenated (as Postfix's dns_lookup does).
    pub async fn txt(&self, name: &str) -> DnsResult<String> {
        self.query(name, RecordType::TXT).await.map_records(|v| {
            v.into_iter()
                .filter_map(|d| match d {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()
        })
    }

    /// NS host names of `name`.
    pub async fn ns(&self, name: &str) -> DnsResult<String> {
        self.query(name, RecordType::NS).await.map_records(|v| {
            v.into_iter()
                .filter_map(|d| match d {
                    RData::NS(n) => Some(host_name(&n.0)),
                    _ => None,
                })
                .collect()
        })
    }

    /// PTR names of an address (`in-addr.arpa`/`ip6.arpa`).
    pub async fn ptr(&self, ip: IpAddr) -> DnsResult<String> {
        self.query(
            &reverse_name(ip, "in-addr.arpa", "ip6.arpa"),
            RecordType::PTR,
        )
        .await
        .map_records(|v| {
            v.into_iter()
                .filter_map(|d| match d {
                    RData::PTR(n) => Some(host_name(&n.0)),
                    _ => None,
                })
                .collect()
        })
    }
}

/// The process-wide resolver, configured from the environment on first use.
pub fn system() -> &'static Resolver {
    static R: OnceLock<Resolver> = OnceLock::new();
    R.get_or_init(Resolver::from_env)
}

/// Run `fut` (a lookup) to completion from synchronous code.
///
/// The future runs on a small runtime owned by this module. Inside a multi-threaded tokio
/// runtime the wait goes through `block_in_place`, so the other sessions on that worker
/// move elsewhere; the lookup's own deadline bounds the wait.
pub fn blocking<F>(fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    static RT: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("postern-dns")
            .enable_all()
            .build()
            .ok()
    });
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let wait = move || rx.recv();
    match rt {
        Some(rt) => {
            rt.spawn(async move {
                let _ = tx.send(fut.await);
            });
        }
        None => {
            // No runtime could be built (out of threads?): run on a throwaway one here.
            std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    let _ = tx.send(rt.block_on(fut));
                }
            });
        }
    }
    let res = match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    };
    match res {
        Ok(v) => v,
        // The lookup task died (only when the runtime shuts down): nothing sensible left.
        Err(_) => panic!("DNS lookup task vanished"),
    }
}

/// `1.2.3.4` → `4.3.2.1.SUFFIX4`; IPv6 as 32 reversed nibbles `.SUFFIX6` (the DNSBL and
/// PTR query forms).
pub fn reverse_name(ip: IpAddr, suffix4: &str, suffix6: &str) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{suffix4}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(64 + suffix6.len());
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str(suffix6);
            s
        }
    }
}

fn absolute_name(name: &str) -> Option<Name> {
    let n = name.trim();
    if n.is_empty() || n.len() > 253 || n.contains(char::is_whitespace) {
        return None;
    }
    let fq = if n.ends_with('.') {
        n.to_string()
    } else {
        format!("{n}.")
    };
    Name::from_ascii(fq).ok()
}

fn host_name(n: &Name) -> String {
    let s = n.to_ascii();
    s.trim_end_matches('.').to_ascii_lowercase()
}

/// Postfix's wording of a failed lookup (dns_lookup.c), for log lines.
fn why(name: &str, rtype: RecordType, what: &str) -> String {
    format!(
        "Host or domain name not found. Name service error for name={name} type={rtype}: {what}"
    )
}

fn classify<T>(name: &str, rtype: RecordType, e: &NetError) -> DnsResult<T> {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => {
            if nr.response_code == ResponseCode::NXDomain {
                DnsResult::NxDomain
            } else {
                DnsResult::NoData
            }
        }
        NetError::Dns(DnsError::ResponseCode(code)) => match code {
            ResponseCode::NXDomain => DnsResult::NxDomain,
            ResponseCode::FormErr | ResponseCode::NotImp | ResponseCode::Refused => {
                DnsResult::Fail(why(name, rtype, "Non-recoverable error"))
            }
            _ => DnsResult::TempFail(why(name, rtype, "Host not found, try again")),
        },
        _ => DnsResult::TempFail(why(name, rtype, "Host not found, try again")),
    }
}

fn merge_failures<T>(a: DnsResult<T>, b: DnsResult<T>) -> DnsResult<T> {
    match (a, b) {
        (DnsResult::TempFail(e), _) | (_, DnsResult::TempFail(e)) => DnsResult::TempFail(e),
        (DnsResult::NoData, _) | (_, DnsResult::NoData) => DnsResult::NoData,
        (DnsResult::NxDomain, _) | (_, DnsResult::NxDomain) => DnsResult::NxDomain,
        (DnsResult::Fail(e), _) | (_, DnsResult::Fail(e)) => DnsResult::Fail(e),
        (x, _) => x,
    }
}

/// Fisher–Yates with a small xorshift seeded from the clock: the order among equal MX
/// preferences only needs to vary, not to be unpredictable.
fn shuffle<T>(v: &mut [T]) {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9_7f4a_7c15)
        | 1;
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = (seed % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let c = DnsConfig::parse_resolv_conf(
            "# x\nnameserver 127.0.0.1\nnameserver ::1\nsearch example.org\noptions timeout:1 attempts:9 edns0\n",
        );
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.servers[0], "127.0.0.1:53".parse().unwrap());
        assert_eq!(c.timeout, Duration::from_secs(1));
        assert_eq!(c.attempts, 3);
        assert!(c.edns0);
        assert!(c.deadline() <= MAX_LOOKUP_TIME);
        let d = DnsConfig::parse_resolv_conf("");
        assert_eq!(d.servers, vec!["127.0.0.1:53".parse().unwrap()]);
    }

    #[test]
    fn reverse() {
        assert_eq!(
            reverse_name("192.0.2.7".parse().unwrap(), "zen.example", ""),
            "7.2.0.192.zen.example"
        );
        let r = reverse_name("2001:db8::1".parse().unwrap(), "", "ip6.arpa");
        assert!(r.starts_with("1.0.0.0.0.0.0.0."));
        assert!(r.ends_with(".8.b.d.0.1.0.0.2.ip6.arpa"));
    }

    #[test]
    fn names() {
        assert!(absolute_name("example.org").is_some());
        assert!(absolute_name("example.org.").is_some());
        assert!(absolute_name("bad name").is_none());
        assert!(absolute_name("").is_none());
    }
}
