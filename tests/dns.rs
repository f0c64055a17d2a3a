//! The resolver facade (`postern::dns`) against the loopback test DNS server.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use postern::dns::testserver::TestDns;
use postern::dns::{DnsConfig, DnsResult, MxHost, Resolver};

fn resolver(dns: &TestDns) -> Resolver {
    Resolver::with_server(dns.addr(), Duration::from_secs(1))
}

fn mx(p: u16, h: &str) -> MxHost {
    MxHost {
        preference: p,
        exchange: h.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mx_sorted_by_preference_ties_shuffled() {
    let dns = TestDns::start().unwrap();
    dns.mx("example.org", 20, "mx20.example.org")
        .mx("example.org", 10, "mx10a.example.org")
        .mx("example.org", 10, "mx10b.example.org")
        .mx("example.org", 5, "MX5.Example.Org.");
    let r = resolver(&dns);
    let mut seen_first_tie = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let v = r.mx("example.org").await.into_records();
        assert_eq!(v.len(), 4, "{v:?}");
        assert_eq!(v[0], mx(5, "mx5.example.org"));
        assert_eq!(v[3], mx(20, "mx20.example.org"));
        assert_eq!(v[1].preference, 10);
        assert_eq!(v[2].preference, 10);
        seen_first_tie.insert(v[1].exchange.clone());
    }
    // Equal preferences come in both orders over 40 lookups (p of failure 2^-39).
    assert_eq!(seen_first_tie.len(), 2, "{seen_first_tie:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nxdomain_nodata_servfail_refused_null_mx() {
    let dns = TestDns::start().unwrap();
    dns.a("host.example.org", Ipv4Addr::new(192, 0, 2, 1))
        .servfail("broken.example")
        .refused("refused.example")
        .mx("nullmx.example", 0, ".");
    let r = resolver(&dns);
    assert_eq!(r.mx("nosuch.example").await, DnsResult::NxDomain);
    assert_eq!(r.mx("host.example.org").await, DnsResult::NoData);
    // example.org has no records itself but names below it: it exists (no data).
    assert_eq!(r.a("example.org").await, DnsResult::NoData);
    let sf = r.mx("broken.example").await;
    assert!(sf.is_temporary(), "{sf:?}");
    assert!(!sf.is_not_found());
    assert!(matches!(r.a("refused.example").await, DnsResult::Fail(_)));
    assert_eq!(r.mx("nullmx.example").await, DnsResult::NullMx);
    assert_eq!(
        r.a("host.example.org").await,
        DnsResult::Found(vec![Ipv4Addr::new(192, 0, 2, 1)])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cname_followed_and_other_types() {
    let dns = TestDns::start().unwrap();
    dns.cname("www.example.org", "web.example.net")
        .a("web.example.net", Ipv4Addr::new(192, 0, 2, 80))
        .aaaa("web.example.net", "2001:db8::80".parse().unwrap())
        .txt("example.org", &["v=spf1 ", "-all"])
        .txt("example.org", &["second"])
        .ns("example.org", "ns1.example.org")
        .ptr("192.0.2.80".parse().unwrap(), "web.example.net")
        .cname("loop1.example", "loop2.example")
        .cname("loop2.example", "loop1.example");
    let r = resolver(&dns);
    assert_eq!(
        r.a("www.example.org").await,
        DnsResult::Found(vec![Ipv4Addr::new(192, 0, 2, 80)])
    );
    let ips = r.ip("www.example.org").await.into_records();
    assert_eq!(
        ips,
        vec![
            "192.0.2.80".parse::<IpAddr>().unwrap(),
            "2001:db8::80".parse().unwrap()
        ]
    );
    let mut txt = r.txt("example.org").await.into_records();
    txt.sort();
    assert_eq!(txt, vec!["second".to_string(), "v=spf1 -all".to_string()]);
    assert_eq!(
        r.ns("example.org").await,
        DnsResult::Found(vec!["ns1.example.org".to_string()])
    );
    assert_eq!(
        r.ptr("192.0.2.80".parse().unwrap()).await,
        DnsResult::Found(vec!["web.example.net".to_string()])
    );
    assert_eq!(
        r.ptr("192.0.2.81".parse().unwrap()).await,
        DnsResult::NxDomain
    );
    // A CNAME loop ends without an address, never hangs.
    let l = r.a("loop1.example").await;
    assert!(l.records().is_empty(), "{l:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_server_is_a_bounded_temporary_failure() {
    let dns = TestDns::start().unwrap();
    dns.no_answer("slow.example");
    let r = resolver(&dns);
    let t = Instant::now();
    let res = r.a("slow.example").await;
    assert!(res.is_temporary(), "{res:?}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());

    // Nothing listening at all on a port: also temporary, also bounded.
    let dead = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let r = Resolver::with_server(dead, Duration::from_secs(1));
    let t = Instant::now();
    assert!(r.mx("example.org").await.is_temporary());
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[test]
fn blocking_from_sync_code_and_tcp_queries_seen() {
    let dns = TestDns::start().unwrap();
    dns.a("host.example", Ipv4Addr::new(127, 0, 0, 9));
    let r = resolver(&dns);
    let got = postern::dns::blocking(async move { r.a("host.example").await });
    assert_eq!(got, DnsResult::Found(vec![Ipv4Addr::new(127, 0, 0, 9)]));
    assert!(
        dns.queries()
            .iter()
            .any(|(n, t)| n == "host.example" && t.to_string() == "A")
    );
    // The server speaks TCP too (two-byte length framing).
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(dns.addr()).unwrap();
    let q: &[u8] = &[
        0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 4, b'h', b'o', b's', b't', 7, b'e', b'x', b'a',
        b'm', b'p', b'l', b'e', 0, 0, 1, 0, 1,
    ];
    s.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
    s.write_all(q).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).unwrap();
    assert_eq!(&resp[..2], &[0x12, 0x34]);
    assert!(resp.ends_with(&[127, 0, 0, 9]));
}

#[test]
fn config_from_resolv_conf_and_env_server() {
    let dns = TestDns::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dns.write_resolv_conf(dir.path()).unwrap();
    let c = DnsConfig::parse_resolv_conf(&std::fs::read_to_string(p).unwrap());
    assert_eq!(c.servers, vec!["127.0.0.1:53".parse().unwrap()]);
    assert_eq!(c.timeout, Duration::from_secs(1));
    assert_eq!(c.attempts, 1);
    assert_eq!(
        dns.env(),
        vec![(
            "POSTERN_DNS_SERVER".to_string(),
            format!("127.0.0.1:{}", dns.addr().port())
        )]
    );
}
