//! DNS-based smtpd restrictions against a real Postern instance whose resolver points at
//! the loopback test DNS server (`POSTERN_DNS_SERVER`): reply lines as Postfix 3.7 words
//! them (smtpd_check.c `rbl_reject_reply`, `reject_unknown_mailhost`).

mod common;

use std::net::Ipv4Addr;

use common::{Instance, Smtp};
use postern::dns::testserver::TestDns;

fn zone() -> TestDns {
    let dns = TestDns::start().expect("test DNS server");
    // 127.0.0.2 is listed (with a reason), 127.0.0.5 is listed with a code outside the
    // restriction's 127.0.0.[2..4] filter.
    dns.a("2.0.0.127.rbl.test", Ipv4Addr::new(127, 0, 0, 2))
        .txt("2.0.0.127.rbl.test", &["listed for testing"])
        .a("5.0.0.127.rbl.test", Ipv4Addr::new(127, 0, 0, 5))
        .a("spam.example.rhsbl.test", Ipv4Addr::new(127, 0, 0, 2))
        .mx("spam.example", 10, "mx.spam.example")
        .mx("good.example", 10, "mx.good.example")
        .a("mx.good.example", Ipv4Addr::new(192, 0, 2, 25))
        .a("aonly.example", Ipv4Addr::new(192, 0, 2, 26))
        .mx("nullmx.example", 0, ".")
        .servfail("servfail.example");
    dns
}

const MAIN: &str = "myhostname = mail.example.test\n\
    mydestination = $myhostname, localhost\n\
    mynetworks = 127.0.0.1/32\n\
    local_recipient_maps =\n\
    smtpd_client_restrictions = reject_rbl_client rbl.test=127.0.0.[2..4]\n\
    smtpd_sender_restrictions = reject_rhsbl_sender rhsbl.test, reject_unknown_sender_domain\n\
    smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n";

/// A Postern instance resolving through `dns`: the test-only resolv.conf (1 s timeout,
/// one try) through `POSTERN_RESOLV_CONF`, the port through `POSTERN_DNS_SERVER`.
fn start(dns: &TestDns, extra: &str) -> (Instance, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dns.write_resolv_conf(dir.path()).expect("resolv.conf");
    let mut env = dns.env();
    env.push(("POSTERN_RESOLV_CONF".into(), conf.display().to_string()));
    let inst = Instance::start_env(&format!("{MAIN}{extra}"), "", env, |_| {});
    (inst, dir)
}

/// EHLO, MAIL FROM:<from>, RCPT TO:<to>: the MAIL and RCPT reply lines.
fn try_rcpt(port: u16, src: &str, from: &str, to: &str) -> (String, String) {
    let mut s = Smtp::connect_from(src, port);
    let greet = s.line();
    assert!(greet.starts_with("220 "), "{greet}");
    s.cmd("EHLO client.example");
    let mail = s
        .cmd(&format!("MAIL FROM:<{from}>"))
        .pop()
        .unwrap_or_default();
    let rcpt = s.cmd(&format!("RCPT TO:<{to}>")).pop().unwrap_or_default();
    s.cmd("QUIT");
    (mail, rcpt)
}

#[test]
fn rbl_client_listed_filtered_and_unlisted() {
    let dns = zone();
    let (inst, _resolv) = start(&dns, "");
    let (mail, rcpt) = try_rcpt(
        inst.port,
        "127.0.0.2",
        "u@good.example",
        "postmaster@mail.example.test",
    );
    assert_eq!(mail, "250 2.1.0 Ok");
    assert_eq!(
        rcpt,
        "554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using rbl.test; listed for testing"
    );
    let log = inst.wait_log("blocked using rbl.test");
    assert!(
        log.contains("NOQUEUE: reject: RCPT from ")
            && log.contains(": 554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using rbl.test; listed for testing; from=<u@good.example> to=<postmaster@mail.example.test> proto=ESMTP helo=<client.example>"),
        "{log}"
    );
    // Listed, but with 127.0.0.5: outside the filter, so not blocked.
    let (_, rcpt) = try_rcpt(
        inst.port,
        "127.0.0.5",
        "u@good.example",
        "postmaster@mail.example.test",
    );
    assert_eq!(rcpt, "250 2.1.5 Ok");
    // Not listed at all (NXDOMAIN).
    let (_, rcpt) = try_rcpt(
        inst.port,
        "127.0.0.3",
        "u@good.example",
        "postmaster@mail.example.test",
    );
    assert_eq!(rcpt, "250 2.1.5 Ok");
    assert!(dns.queries().iter().any(|(n, _)| n == "3.0.0.127.rbl.test"));
}

#[test]
fn rhsbl_sender_and_unknown_sender_domain() {
    let dns = zone();
    let (inst, _resolv) = start(&dns, "");
    let to = "postmaster@mail.example.test";
    let rcpt = |from: &str| try_rcpt(inst.port, "127.0.0.3", from, to).1;
    assert_eq!(
        rcpt("u@spam.example"),
        "554 5.7.1 Service unavailable; Sender address [u@spam.example] blocked using rhsbl.test"
    );
    assert_eq!(
        rcpt("u@nxdomain.example"),
        "450 4.1.8 <u@nxdomain.example>: Sender address rejected: Domain not found"
    );
    assert_eq!(
        rcpt("u@nullmx.example"),
        "550 5.7.27 <u@nullmx.example>: Sender address rejected: Domain nullmx.example does not accept mail (nullMX)"
    );
    // SERVFAIL: a temporary failure that defers what would have been permitted …
    assert_eq!(
        rcpt("u@servfail.example"),
        "450 4.1.8 <u@servfail.example>: Sender address rejected: Domain not found"
    );
    // … but a real rejection later in the same command wins (defer_if_permit).
    assert_eq!(
        try_rcpt(
            inst.port,
            "127.0.0.3",
            "u@servfail.example",
            "u@elsewhere.example"
        )
        .1,
        "554 5.7.1 <u@elsewhere.example>: Relay access denied"
    );
    assert_eq!(rcpt("u@good.example"), "250 2.1.5 Ok");
    assert_eq!(rcpt("u@aonly.example"), "250 2.1.5 Ok");
    // The null sender is never looked up.
    assert_eq!(rcpt(""), "250 2.1.5 Ok");
}

#[test]
fn unknown_address_reject_code_and_tempfail_action() {
    let dns = zone();
    let (inst, _resolv) = start(
        &dns,
        "unknown_address_reject_code = 550\nunknown_address_tempfail_action = defer\n",
    );
    let to = "u@elsewhere.example";
    assert_eq!(
        try_rcpt(inst.port, "127.0.0.3", "u@nxdomain.example", to).1,
        "550 5.1.8 <u@nxdomain.example>: Sender address rejected: Domain not found"
    );
    // With "defer" the temporary failure answers at once, before reject_unauth_destination.
    assert_eq!(
        try_rcpt(inst.port, "127.0.0.3", "u@servfail.example", to).1,
        "450 4.1.8 <u@servfail.example>: Sender address rejected: Domain not found"
    );
}

#[test]
fn dead_dns_server_never_hangs_a_session() {
    let dns = zone();
    dns.no_answer("2.0.0.127.rbl.test");
    let (inst, _resolv) = start(&dns, "");
    let t = std::time::Instant::now();
    let (_, rcpt) = try_rcpt(
        inst.port,
        "127.0.0.2",
        "u@good.example",
        "postmaster@mail.example.test",
    );
    // An unreachable DNSBL is skipped (Postfix: "RBL lookup error").
    assert_eq!(rcpt, "250 2.1.5 Ok");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        t.elapsed()
    );
    let log = inst.wait_log("RBL lookup error");
    assert!(
        log.contains("warning: 2.0.0.127.rbl.test: RBL lookup error: Host or domain name not found. Name service error for name=2.0.0.127.rbl.test type=A: Host not found, try again"),
        "{log}"
    );
}
