//! A small authoritative DNS server on a loopback port, for tests: the test defines the
//! records (A, AAAA, MX, TXT, PTR, NS, CNAME) and per-name failures (NXDOMAIN is the
//! default for undefined names; SERVFAIL, REFUSED, or no answer at all to provoke a
//! timeout), then points Postern at [`TestDns::addr`] through
//! `POSTERN_DNS_SERVER` ([`TestDns::env`]) or a resolver built with
//! [`super::Resolver::with_server`].
//!
//! It answers on UDP and TCP (RFC 1035 §4.2.2 two-byte length framing) on the same port,
//! from plain threads, so synchronous and async tests can both use it. A name that owns
//! records of other types, or has names below it, gets NOERROR with an empty answer (no
//! data); CNAMEs are followed inside the zone as an authoritative server does. Records
//! are served with TTL 0 so that a test may change them between queries.
//!
//! ```no_run
//! use postern::dns::testserver::TestDns;
//! let dns = TestDns::start().unwrap();
//! dns.mx("example.org", 10, "mx1.example.org").a("mx1.example.org", "127.0.0.1".parse().unwrap());
//! dns.servfail("broken.example");
//! ```

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

/// A record the test server answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestRecord {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx(u16, String),
    Txt(Vec<String>),
    Ptr(String),
    Ns(String),
    Cname(String),
}

impl TestRecord {
    fn rtype(&self) -> RecordType {
        match self {
            TestRecord::A(_) => RecordType::A,
            TestRecord::Aaaa(_) => RecordType::AAAA,
            TestRecord::Mx(..) => RecordType::MX,
            TestRecord::Txt(_) => RecordType::TXT,
            TestRecord::Ptr(_) => RecordType::PTR,
            TestRecord::Ns(_) => RecordType::NS,
            TestRecord::Cname(_) => RecordType::CNAME,
        }
    }
}

/// How the server treats every query for one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    NxDomain,
    ServFail,
    Refused,
    /// Never answer: the client times out.
    NoAnswer,
}

#[derive(Default)]
struct Zone {
    records: HashMap<String, Vec<TestRecord>>,
    failures: HashMap<String, Failure>,
    queries: Vec<(String, RecordType)>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn name_of(s: &str) -> Option<Name> {
    let s = key(s);
    Name::from_ascii(if s.is_empty() {
        ".".to_string()
    } else {
        format!("{s}.")
    })
    .ok()
}

/// A running test DNS server; stopped on drop.
pub struct TestDns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl TestDns {
    /// Bind UDP and TCP on one free port of 127.0.0.1 and start answering.
    pub fn start() -> std::io::Result<TestDns> {
        let mut last_err = None;
        for _ in 0..20 {
            let udp = UdpSocket::bind("127.0.0.1:0")?;
            let addr = udp.local_addr()?;
            match TcpListener::bind(addr) {
                Ok(tcp) => return Self::run(udp, tcp),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| std::io::Error::other("no free port")))
    }

    fn run(udp: UdpSocket, tcp: TcpListener) -> std::io::Result<TestDns> {
        let addr = udp.local_addr()?;
        let zone = Arc::new(Mutex::new(Zone::default()));
        let stop = Arc::new(AtomicBool::new(false));
        udp.set_read_timeout(Some(Duration::from_millis(100)))?;
        let (z, s) = (zone.clone(), stop.clone());
        let t_udp = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(resp) = answer(&z, &buf[..n], true) {
                    let _ = udp.send_to(&resp, peer);
                }
            }
        });
        let (z, s) = (zone.clone(), stop.clone());
        let t_tcp = std::thread::spawn(move || {
            for conn in tcp.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (z, s) = (z.clone(), s.clone());
                std::thread::spawn(move || serve_tcp(conn, &z, &s));
            }
        });
        Ok(TestDns {
            addr,
            zone,
            stop,
            threads: vec![t_udp, t_tcp],
        })
    }

    /// The address (127.0.0.1 and the port) the server answers on, UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Environment for a Postern process: `POSTERN_DNS_SERVER=127.0.0.1:PORT`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(super::ENV_DNS_SERVER.to_string(), self.addr.to_string())]
    }

    /// Write a test-only resolv.conf naming 127.0.0.1 (the port still comes from
    /// `POSTERN_DNS_SERVER`: resolv.conf has no syntax for it) with a 1 s timeout.
    pub fn write_resolv_conf(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let p = dir.join("resolv.conf");
        std::fs::write(
            &p,
            format!(
                "# test resolver for Postern: {}\nnameserver {}\noptions timeout:1 attempts:1\n",
                self.addr,
                self.addr.ip()
            ),
        )?;
        Ok(p)
    }

    fn add(&self, name: &str, r: TestRecord) -> &Self {
        let mut z = self.zone.lock().unwrap_or_else(|e| e.into_inner());
        z.records.entry(key(name)).or_default().push(r);
        self
    }

    pub fn a(&self, name: &str, ip: Ipv4Addr) -> &Self {
        self.add(name, TestRecord::A(ip))
    }
    pub fn aaaa(&self, name: &str, ip: Ipv6Addr) -> &Self {
        self.add(name, TestRecord::Aaaa(ip))
    }
    pub fn mx(&self, name: &str, preference: u16, exchange: &str) -> &Self {
        self.add(name, TestRecord::Mx(preference, key(exchange)))
    }
    /// A TXT record of one or more character-strings.
    pub fn txt(&self, name: &str, strings: &[&str]) -> &Self {
        self.add(
            name,
            TestRecord::Txt(strings.iter().map(|s| s.to_string()).collect()),
        )
    }
    /// PTR for an address (the `in-addr.arpa`/`ip6.arpa` name is derived).
    pub fn ptr(&self, ip: IpAddr, host: &str) -> &Self {
        self.add(
            &super::reverse_name(ip, "in-addr.arpa", "ip6.arpa"),
            TestRecord::Ptr(key(host)),
        )
    }
    pub fn ns(&self, name: &str, host: &str) -> &Self {
        self.add(name, TestRecord::Ns(key(host)))
    }
    pub fn cname(&self, name: &str, target: &str) -> &Self {
        self.add(name, TestRecord::Cname(key(target)))
    }
    /// Answer NXDOMAIN for `name` even if records or subdomains exist.
    pub fn nxdomain(&self, name: &str) -> &Self {
        self.fail(name, Failure::NxDomain)
    }
    pub fn servfail(&self, name: &str) -> &Self {
        self.fail(name, Failure::ServFail)
    }
    pub fn refused(&self, name: &str) -> &Self {
        self.fail(name, Failure::Refused)
    }
    /// Never answer queries for `name` (the client times out).
    pub fn no_answer(&self, name: &str) -> &Self {
        self.fail(name, Failure::NoAnswer)
    }
    pub fn fail(&self, name: &str, f: Failure) -> &Self {
        let mut z = self.zone.lock().unwrap_or_else(|e| e.into_inner());
        z.failures.insert(key(name), f);
        self
    }
    /// Forget every record and failure (queries seen are kept).
    pub fn clear(&self) {
        let mut z = self.zone.lock().unwrap_or_else(|e| e.into_inner());
        z.records.clear();
        z.failures.clear();
    }
    /// The queries received so far: (lower-case name without the dot, type).
    pub fn queries(&self) -> Vec<(String, RecordType)> {
        let z = self.zone.lock().unwrap_or_else(|e| e.into_inner());
        z.queries.clone()
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the TCP accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_tcp(mut conn: TcpStream, zone: &Mutex<Zone>, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut len = [0u8; 2];
        if conn.read_exact(&mut len).is_err() {
            return;
        }
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        if conn.read_exact(&mut msg).is_err() {
            return;
        }
        if let Some(resp) = answer(zone, &msg, false) {
            let Ok(n) = u16::try_from(resp.len()) else {
                return;
            };
            let mut out = n.to_be_bytes().to_vec();
            out.extend_from_slice(&resp);
            if conn.write_all(&out).is_err() {
                return;
            }
        }
    }
}

/// The wire answer to one query, `None` for "stay silent".
fn answer(zone: &Mutex<Zone>, query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = true;
    let Some(q) = req.queries.first().cloned() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp.to_vec().ok();
    };
    resp.add_query(q.clone());
    if req.metadata.op_code != OpCode::Query {
        resp.metadata.response_code = ResponseCode::NotImp;
        return resp.to_vec().ok();
    }
    let qname = key(&q.name().to_ascii());
    let qtype = q.query_type();
    let mut z = zone.lock().unwrap_or_else(|e| e.into_inner());
    z.queries.push((qname.clone(), qtype));
    let mut name = qname;
    // Follow CNAMEs within the zone (at most 8 links, then stop as a loop).
    for _ in 0..8 {
        match z.failures.get(&name) {
            Some(Failure::NoAnswer) => return None,
            Some(Failure::ServFail) => {
                resp.metadata.response_code = ResponseCode::ServFail;
                break;
            }
            Some(Failure::Refused) => {
                resp.metadata.response_code = ResponseCode::Refused;
                break;
            }
            Some(Failure::NxDomain) => {
                resp.metadata.response_code = ResponseCode::NXDomain;
                break;
            }
            None => {}
        }
        let recs = z.records.get(&name).cloned().unwrap_or_default();
        let cname = recs.iter().find_map(|r| match r {
            TestRecord::Cname(t) => Some(t.clone()),
            _ => None,
        });
        if let Some(target) = cname
            && qtype != RecordType::CNAME
        {
            if let Some(rec) = record(&name, &TestRecord::Cname(target.clone())) {
                resp.add_answer(rec);
            }
            name = target;
            continue;
        }
        let matching: Vec<&TestRecord> = recs
            .iter()
            .filter(|r| r.rtype() == qtype || qtype == RecordType::ANY)
            .collect();
        if matching.is_empty() {
            let exists =
                !recs.is_empty() || z.records.keys().any(|k| k.ends_with(&format!(".{name}")));
            // An answer that already holds a CNAME chain means the alias exists.
            if !exists && resp.answers.is_empty() {
                resp.metadata.response_code = ResponseCode::NXDomain;
            }
        }
        for r in matching {
            if let Some(rec) = record(&name, r) {
                resp.add_answer(rec);
            }
        }
        break;
    }
    drop(z);
    let bytes = resp.to_vec().ok()?;
    let limit = req.edns.as_ref().map(|e| e.max_payload()).unwrap_or(512) as usize;
    if udp && bytes.len() > limit.max(512) {
        return resp.truncate().to_vec().ok();
    }
    Some(bytes)
}

fn record(owner: &str, r: &TestRecord) -> Option<Record> {
    let name = name_of(owner)?;
    let data = match r {
        TestRecord::A(ip) => RData::A(A(*ip)),
        TestRecord::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        TestRecord::Mx(p, host) => RData::MX(MX::new(*p, name_of(host)?)),
        TestRecord::Txt(s) => RData::TXT(TXT::new(s.clone())),
        TestRecord::Ptr(host) => RData::PTR(PTR(name_of(host)?)),
        TestRecord::Ns(host) => RData::NS(NS(name_of(host)?)),
        TestRecord::Cname(host) => RData::CNAME(CNAME(name_of(host)?)),
    };
    Some(Record::from_rdata(name, 0, data))
}
