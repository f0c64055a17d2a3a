//! Outbound delivery (Postfix's smtp(8) client) end to end: a running Postern with a `qmgr`
//! receives mail over SMTP and relays it to loopback peers: scripted peers in this file
//! (fixed replies, the same as the peers of `scripts/regen-smtp-fixtures`), Python's
//! aiosmtpd (STARTTLS + AUTH PLAIN), and a second Postern instance reached through MX
//! records served by the test DNS server. Log lines and bounces are compared with what the
//! real Postfix 3.7.11 logged and mailed for the same dialogues (compat-fixtures/smtp/),
//! after the masks described in compat-fixtures/smtp/README.md.
//!
//! Each test runs its own instance, ports and temp dirs. Tests that deliver a bounce into the
//! sender's mbox need root (a local user); without root they check everything else.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use postern::dns::testserver::TestDns;

const QMGR: &str = "qmgr      unix  n       -       n       300     1       qmgr\n\
                    smtp      unix  -       -       n       -       -       smtp\n";
const SENDER: &str = "postern-fx@mail.example.test";
const PEER_QID: &str = SINK_QID;

fn start(extra: &str) -> Instance {
    start_env(extra, Vec::new())
}

fn start_env(extra: &str, env: Vec<(String, String)>) -> Instance {
    start_transport(extra, "", env)
}

/// As [`start`], with `transport` written to a texthash table that `transport_maps` names.
fn start_transport(extra: &str, transport: &str, env: Vec<(String, String)>) -> Instance {
    let extra = if transport.is_empty() {
        extra.to_string()
    } else {
        format!("{extra}transport_maps = texthash:$queue_directory/../transport\n")
    };
    Instance::start_env(&delivering_main_cf(&extra), QMGR, env, |d| {
        std::fs::write(d.join("transport"), transport).unwrap();
        std::fs::create_dir_all(d.join("mail")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("mail"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    })
}

/// The local sender that receives bounces (root only: a system user, as in the fixtures).
fn local_sender() -> bool {
    static USERS: Mutex<()> = Mutex::new(());
    if !nix::unistd::Uid::effective().is_root() {
        return false;
    }
    let _g = USERS.lock().unwrap_or_else(|p| p.into_inner());
    if nix::unistd::User::from_name("postern-fx")
        .ok()
        .flatten()
        .is_none()
    {
        let _ = std::process::Command::new("useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", "postern-fx"])
            .status();
    }
    nix::unistd::User::from_name("postern-fx")
        .ok()
        .flatten()
        .is_some()
}

/// Submit one message over SMTP; the queue ID from `250 2.0.0 Ok: queued as ID`.
fn send(port: u16, from: &str, to: &[&str], subject: &str) -> String {
    let mut s = Smtp::connect(port);
    s.line();
    let ehlo = s.cmd("EHLO client.example");
    assert!(ehlo.concat().starts_with("250"), "{ehlo:?}");
    let mail = s.cmd(&format!("MAIL FROM:<{from}>"));
    assert!(mail.concat().starts_with("250"), "{mail:?}");
    for t in to {
        let r = s.cmd(&format!("RCPT TO:<{t}>")).concat();
        assert!(r.starts_with("250"), "RCPT {t}: {r}");
    }
    assert!(s.cmd("DATA").concat().starts_with("354"));
    s.send(&format!(
        "From: {from}\r\nTo: {}\r\nSubject: {subject}\r\n\r\nbody line\r\n",
        to.join(", ")
    ));
    let r = s.cmd(".").concat();
    assert!(r.starts_with("250"), "{r}");
    s.cmd("QUIT");
    r.rsplit(' ').next().unwrap_or_default().to_string()
}

/// The status lines (`postfix/smtp[…]: ID: to=<rcpt>, … status=…`) of `id` for `rcpt`.
fn status_lines(log: &str, id: &str, rcpt: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(&format!(": {id}: to=<{rcpt}>,")) && l.contains(", status="))
        .map(str::to_string)
        .collect()
}

fn wait_status(inst: &Instance, id: &str, rcpt: &str, n: usize) -> String {
    inst.wait_log_until(Duration::from_secs(30), |l| {
        status_lines(l, id, rcpt).len() >= n
    })
}

/// compat-fixtures/smtp/README.md's masks: no timestamp/host prefix, no `[pid]`, the queue
/// ID as `QUEUEID`, delays as `*`, loopback ports as `PORT`.
fn mask(line: &str, id: &str) -> String {
    let mut l = line.to_string();
    // "Nov 28 16:36:12 host " prefix.
    if let Some(p) = l.find(" postfix/")
        && p < 40
    {
        l = l[p + 1..].to_string();
    }
    // "postfix/smtp[123]: " -> "postfix/smtp: "
    if let (Some(a), Some(b)) = (l.find('['), l.find("]: "))
        && a < b
        && l[a + 1..b].bytes().all(|c| c.is_ascii_digit())
    {
        l = format!("{}{}", &l[..a], &l[b + 1..]);
    }
    l = l.replace(id, "QUEUEID");
    if let Some(a) = l.find("delay=")
        && let Some(b) = l[a..].find(", dsn=")
    {
        l = format!("{}delay=*, delays=*{}", &l[..a], &l[a + b..]);
    }
    // "[127.0.0.1]:40337" -> "[127.0.0.1]:PORT" (any loopback address).
    let mut out = String::new();
    let mut rest = l.as_str();
    while let Some(p) = rest.find("]:") {
        out.push_str(&rest[..p + 2]);
        rest = &rest[p + 2..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && out.rfind("[127.").is_some_and(|q| q > out.len() - 20) {
            out.push_str("PORT");
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

fn fixture(name: &str) -> String {
    let p = repo_root().join("compat-fixtures/smtp").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The fixture's masked `postfix/smtp` status line for `rcpt`.
fn fixture_line(scenario: &str, rcpt: &str) -> String {
    let f = fixture(&format!("{scenario}.log"));
    f.lines()
        .find(|l| l.starts_with("postfix/smtp: ") && l.contains(&format!("to=<{rcpt}>,")))
        .unwrap_or_else(|| panic!("no line for {rcpt} in {scenario}.log"))
        .to_string()
}

/// Postern's masked status line for `rcpt` equals the real Postfix's.
fn assert_line_as_fixture(log: &str, id: &str, scenario: &str, rcpt: &str) {
    let got = status_lines(log, id, rcpt);
    let got = got.first().map(|l| mask(l, id)).unwrap_or_default();
    assert_eq!(got, fixture_line(scenario, rcpt), "log:\n{log}");
}

fn queue_file(inst: &Instance, dir: &str, id: &str) -> PathBuf {
    inst.dir
        .path()
        .join("spool")
        .join(dir)
        .join(&id[..1])
        .join(id)
}

fn postern_cmd(cmd: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .arg(cmd)
        .args(args)
        .output()
        .expect("run postern")
}

// The scripted SMTP peer (the replies of scripts/regen-smtp-fixtures' `Peer`) is the test
// kit's `Sink` (tests/common/sink.rs).

// ---------------------------------------------------------------------------------------
// Python aiosmtpd with STARTTLS and AUTH PLAIN (Debian's python3-aiosmtpd).

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

const AIOSMTPD: &str = r#"
import json, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
port, cert, key, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
def auth(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == b"relayuser" and data.password == b"relay-pw"
    with open(out + ".auth", "a") as f:
        f.write(json.dumps({"mechanism": mechanism, "ok": ok}) + "\n")
    # The failure text of the fixtures' peer (and of Postfix's smtpd).
    return AuthResult(success=ok, handled=False, auth_data=data,
                      message=None if ok else "535 5.7.8 Error: authentication failed")
class Handler:
    async def handle_DATA(self, server, session, envelope):
        with open(out, "a") as f:
            f.write(json.dumps({
                "from": envelope.mail_from, "rcpts": envelope.rcpt_tos,
                "tls": session.ssl is not None,
                "login": session.auth_data.login.decode() if session.auth_data else None,
                "data": envelope.content.decode("utf-8", "replace")}) + "\n")
        return "250 2.0.0 Ok: queued as 4PEERQID01"
c = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=ctx,
               require_starttls=True, authenticator=auth, auth_require_tls=True)
c.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

struct Aiosmtpd {
    child: std::process::Child,
    port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Aiosmtpd {
    fn start() -> Option<Aiosmtpd> {
        let probe = std::process::Command::new(python())
            .args(["-c", "import aiosmtpd"])
            .output()
            .ok()?;
        if !probe.status.success() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["peer.example".to_string()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("peer.py"), AIOSMTPD).unwrap();
        let port = free_port();
        let out = dir.path().join("received.jsonl");
        let mut child = std::process::Command::new(python())
            .arg(dir.path().join("peer.py"))
            .arg(port.to_string())
            .arg(dir.path().join("cert.pem"))
            .arg(dir.path().join("key.pem"))
            .arg(&out)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .ok()?;
        assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
        Some(Aiosmtpd {
            child,
            port,
            out,
            _dir: dir,
        })
    }

    fn received(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Aiosmtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------

#[test]
fn relayhost_accepted_logged_as_postfix_and_peer_gets_the_message() {
    let peer = Sink::start(SinkMode::Accept);
    let inst = start(&format!("relayhost = [127.0.0.1]:{}\n", peer.port));
    let rcpt = "user@accepted.example";
    let id = send(inst.port, SENDER, &[rcpt], "fixture accepted");
    let log = inst.wait_log_until(Duration::from_secs(30), |l| {
        l.contains(&format!("{id}: removed"))
    });
    assert_line_as_fixture(&log, &id, "accepted", rcpt);
    let t = peer.transcript();
    assert_eq!(t[1], "C: EHLO mail.example.test", "{t:#?}");
    let mail = t.iter().find(|l| l.starts_with("C: MAIL ")).cloned();
    let mail = mail.unwrap_or_default();
    assert!(
        mail.starts_with(&format!("C: MAIL FROM:<{SENDER}> SIZE=")),
        "{t:#?}"
    );
    assert!(t.contains(&format!("C: RCPT TO:<{rcpt}>")), "{t:#?}");
    assert_eq!(t.last().map(String::as_str), Some("S: 221 2.0.0 Bye"));
    let msgs = peer.messages.lock().unwrap().clone();
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].contains("\r\nSubject: fixture accepted\r\n"),
        "{msgs:?}"
    );
    assert!(msgs[0].ends_with("\r\n\r\nbody line\r\n"), "{msgs:?}");
    assert!(!queue_file(&inst, "active", &id).exists());
    assert!(!queue_file(&inst, "deferred", &id).exists());
}

#[test]
fn mx_order_and_fallback_to_a_second_postern() {
    // The destination MTA: another Postern, listening on 127.0.0.3 (not an address of the
    // sending instance, whose inet_interfaces is loopback-only: an MX on one of its own
    // addresses would be "mail loops back to myself"), without a qmgr so the message stays
    // in its queue.
    let dest = Instance::start(
        "myhostname = mx.remote.example\nmydestination = remote.example\nlocal_recipient_maps =\n",
        "127.0.0.3:{port} inet n - n - - smtpd\n",
    );
    let dns = TestDns::start().expect("test DNS server");
    dns.mx("remote.example", 20, "mx2.remote.example")
        .mx("remote.example", 10, "mx1.remote.example")
        .a("mx1.remote.example", "127.0.0.2".parse().unwrap())
        .a("mx2.remote.example", "127.0.0.3".parse().unwrap());
    let resolv = tempfile::tempdir().unwrap();
    let conf = dns.write_resolv_conf(resolv.path()).expect("resolv.conf");
    let mut env = dns.env();
    env.push(("POSTERN_RESOLV_CONF".into(), conf.display().to_string()));
    // MX lookup with the destination's port: a `domain:port` next-hop.
    let inst = start_transport(
        "",
        &format!("remote.example smtp:remote.example:{}\n", dest.port),
        env,
    );
    let rcpt = "someone@remote.example";
    let id = send(inst.port, SENDER, &[rcpt], "via MX");
    let log = inst.wait_log_until(Duration::from_secs(30), |l| {
        l.contains(&format!("{id}: removed"))
    });
    // mx1 (preference 10) first: nothing listens on 127.0.0.2, so the same line as the
    // real Postfix's refused connect, then mx2 takes the message.
    let p = dest.port;
    assert!(
        log.contains(&format!(
            "]: connect to mx1.remote.example[127.0.0.2]:{p}: Connection refused\n"
        )),
        "{log}"
    );
    let line = status_lines(&log, &id, rcpt)
        .first()
        .cloned()
        .unwrap_or_default();
    let refused_at = log
        .find("connect to mx1.remote.example")
        .unwrap_or(usize::MAX);
    assert!(log.find(&line).unwrap_or(0) > refused_at, "{log}");
    let masked = mask(&line, &id);
    let (head, tail) = masked
        .split_once(" status=sent (250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(
        head,
        format!(
            "postfix/smtp: QUEUEID: to=<{rcpt}>, relay=mx2.remote.example[127.0.0.3]:PORT, delay=*, delays=*, dsn=2.0.0,"
        )
    );
    // The destination queued it under the ID it answered with.
    let dest_id = tail.trim_end_matches(')');
    let dlog = dest.wait_log(&format!("{dest_id}: "));
    assert!(dlog.contains(&format!("{dest_id}: client=")), "{dlog}");
    assert!(
        dns.queries()
            .iter()
            .any(|(n, t)| n == "remote.example" && t.to_string() == "MX"),
        "{:?}",
        dns.queries()
    );
}

/// A Postern whose relayhost is `peer`, TLS required, SASL with `password` for it.
fn start_auth_client(peer: &Aiosmtpd, password: &str) -> Instance {
    Instance::start_env(
        &delivering_main_cf(&format!(
            "relayhost = [127.0.0.1]:{p}\nsmtp_tls_security_level = encrypt\n\
             smtp_sasl_auth_enable = yes\nsmtp_sasl_security_options = noanonymous\n\
             smtp_sasl_password_maps = texthash:$queue_directory/../sasl_passwd\n",
            p = peer.port
        )),
        QMGR,
        Vec::new(),
        |d| {
            std::fs::write(
                d.join("sasl_passwd"),
                format!("[127.0.0.1]:{} relayuser:{password}\n", peer.port),
            )
            .unwrap();
        },
    )
}

fn aiosmtpd() -> Aiosmtpd {
    Aiosmtpd::start()
        .expect("python3-aiosmtpd is not installed (Debian package python3-aiosmtpd, .ci/run)")
}

#[test]
fn relayhost_auth_plain_over_starttls_with_aiosmtpd() {
    let peer = aiosmtpd();
    let inst = start_auth_client(&peer, "relay-pw");
    let rcpt = "user@auth-starttls.example";
    let id = send(inst.port, SENDER, &[rcpt], "fixture auth-starttls");
    let log = wait_status(&inst, &id, rcpt, 1);
    assert_line_as_fixture(&log, &id, "auth-starttls", rcpt);
    let got = peer.received();
    assert!(got.contains(&format!("\"from\": \"{SENDER}\"")), "{got}");
    assert!(got.contains(&format!("\"rcpts\": [\"{rcpt}\"]")), "{got}");
    assert!(got.contains("\"tls\": true"), "{got}");
    assert!(got.contains("\"login\": \"relayuser\""), "{got}");
    assert!(got.contains("Subject: fixture auth-starttls"), "{got}");
    let auth = std::fs::read_to_string(peer.out.with_extension("jsonl.auth")).unwrap_or_default();
    assert_eq!(auth, "{\"mechanism\": \"PLAIN\", \"ok\": true}\n");
}

#[test]
fn relayhost_auth_with_a_wrong_password_is_deferred() {
    let peer = aiosmtpd();
    let inst = start_auth_client(&peer, "wrong-pw");
    let rcpt = "user@auth-failed.example";
    let id = send(inst.port, SENDER, &[rcpt], "fixture auth-failed");
    let log = wait_status(&inst, &id, rcpt, 1);
    // smtp_sasl_auth_soft_bounce = yes: a 535 defers (dsn 4.7.8), as the real Postfix did.
    assert_line_as_fixture(&log, &id, "auth-failed", rcpt);
    assert_eq!(peer.received(), "");
    let auth = std::fs::read_to_string(peer.out.with_extension("jsonl.auth")).unwrap_or_default();
    assert_eq!(auth, "{\"mechanism\": \"PLAIN\", \"ok\": false}\n");
}

#[test]
fn tls_encrypt_against_a_peer_without_starttls_defers() {
    let peer = Sink::start(SinkMode::Accept);
    let inst = start(&format!(
        "relayhost = [127.0.0.1]:{}\nsmtp_tls_security_level = encrypt\n",
        peer.port
    ));
    let rcpt = "user@tls-required.example";
    let id = send(inst.port, SENDER, &[rcpt], "fixture tls-required");
    let log = wait_status(&inst, &id, rcpt, 1);
    assert_line_as_fixture(&log, &id, "tls-required", rcpt);
    // It connected and said EHLO, but never sent the envelope in the clear.
    let t = peer.transcript();
    assert!(
        t.contains(&"C: EHLO mail.example.test".to_string()),
        "{t:#?}"
    );
    assert!(!t.iter().any(|l| l.starts_with("C: MAIL")), "{t:#?}");
    assert!(peer.messages.lock().unwrap().is_empty());
    let q = queue_file(&inst, "deferred", &id);
    let _ = poll(Duration::from_secs(30), || q.exists().then_some(()));
    assert!(q.exists(), "{}", inst.log());
}

#[test]
fn partial_rcpt_failures_one_sent_one_bounced_one_deferred() {
    let local = local_sender();
    let peer = Sink::start(SinkMode::Accept);
    let inst = start_transport(
        "",
        &format!("mixed.example smtp:[127.0.0.1]:{}\n", peer.port),
        Vec::new(),
    );
    let rcpts = [
        "good@mixed.example",
        "bad@mixed.example",
        "later@mixed.example",
    ];
    let id = send(inst.port, SENDER, &rcpts, "fixture mixed");
    let log = inst.wait_log_until(Duration::from_secs(30), |l| {
        rcpts.iter().all(|r| !status_lines(l, &id, r).is_empty())
    });
    for r in rcpts {
        assert_line_as_fixture(&log, &id, "mixed", r);
    }
    // One connection for the three (same next-hop), one message for the accepted one.
    assert_eq!(peer.connections.load(Ordering::SeqCst), 1);
    assert_eq!(peer.messages.lock().unwrap().len(), 1);
    let log = inst.wait_log_until(Duration::from_secs(30), |l| {
        l.contains(&format!("{id}: sender non-delivery notification: "))
    });
    assert!(
        log.contains(&format!("{id}: sender non-delivery notification: ")),
        "{log}"
    );
    // The deferred recipient stays in the queue, as mailq shows it (once the queue manager
    // has marked the others done and moved the file: the notification is logged first).
    let conf = inst.config_dir().display().to_string();
    let mut q = String::new();
    let _ = poll(Duration::from_secs(10), || {
        q = String::from_utf8_lossy(&postern_cmd("mailq", &["-C", &conf]).stdout).into_owned();
        (!q.contains("bad@mixed.example")).then_some(())
    });
    assert!(q.contains("later@mixed.example"), "{q}");
    assert!(!q.contains("good@mixed.example"), "{q}");
    assert!(!q.contains("bad@mixed.example"), "{q}");
    if local {
        let mbox = wait_mbox(&inst, 1);
        let b = bounces(&mbox).into_iter().next().unwrap_or_default();
        // Only the bounced recipient is reported.
        assert!(b.contains("\n<bad@mixed.example>: host 127.0.0.1[127.0.0.1] said: 550 5.1.1\n    <bad@mixed.example>: Recipient address rejected: User unknown in local\n    recipient table (in reply to RCPT TO command)\n"), "{b}");
        assert!(!b.contains("later@mixed.example>:"), "{b}");
        assert!(!b.contains("Final-Recipient: rfc822; good@"), "{b}");
        assert_dsn_as_fixture(&b, &id, "mixed.bounce.txt");
    }
}

#[test]
fn peer_drops_at_end_of_data_deferred_then_delivered_after_postqueue_f() {
    let peer = Sink::start(SinkMode::DropEndOfData);
    let inst = start(&format!("relayhost = [127.0.0.1]:{}\n", peer.port));
    let rcpt = "user@drop-end-of-data.example";
    let id = send(inst.port, SENDER, &[rcpt], "fixture drop-end-of-data");
    let log = wait_status(&inst, &id, rcpt, 1);
    assert_line_as_fixture(&log, &id, "drop-end-of-data", rcpt);
    peer.set_mode(SinkMode::Accept);
    let conf = inst.config_dir().display().to_string();
    let out = postern_cmd("postqueue", &["-c", &conf, "-f"]);
    assert!(out.status.success(), "{out:?}");
    let log = wait_status(&inst, &id, rcpt, 2);
    let lines: Vec<String> = status_lines(&log, &id, rcpt)
        .iter()
        .map(|l| mask(l, &id))
        .collect();
    let want: Vec<String> = fixture("drop-end-of-data.log")
        .lines()
        .filter(|l| l.starts_with("postfix/smtp: "))
        .map(str::to_string)
        .collect();
    assert_eq!(lines, want, "{log}");
    assert_eq!(peer.messages.lock().unwrap().len(), 1);
    inst.wait_log_until(Duration::from_secs(30), |l| {
        l.contains(&format!("{id}: removed"))
    });
}

#[test]
fn drop_mid_body_is_deferred() {
    // A peer that closes after its 354 while a large message is on its way.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut w = c;
                let _ = w.write_all(b"220 peer.example ESMTP scripted\r\n");
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    let v = line.to_ascii_uppercase();
                    line.clear();
                    let reply: &[u8] = if v.starts_with("EHLO") {
                        b"250-peer.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n"
                    } else if v.starts_with("DATA") {
                        // Close as soon as the body may start: the client's writes then
                        // meet a reset socket (no acknowledgement ever drains its send
                        // buffer), whatever the kernel's buffer sizes.
                        let _ = w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                        return;
                    } else if v.starts_with("QUIT") {
                        b"221 2.0.0 Bye\r\n"
                    } else {
                        b"250 2.0.0 Ok\r\n"
                    };
                    let _ = w.write_all(reply);
                }
            });
        }
    });
    let inst = start(&format!("relayhost = [127.0.0.1]:{port}\n"));
    let rcpt = "user@drop-body.example";
    let mut s = Smtp::connect(inst.port);
    s.line();
    s.cmd("EHLO client.example");
    s.cmd(&format!("MAIL FROM:<{SENDER}>"));
    s.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert!(s.cmd("DATA").concat().starts_with("354"));
    s.send("Subject: fixture drop-body\r\n\r\nbody line\r\n");
    let filler = format!("{}\r\n", "x".repeat(998));
    for _ in 0..3000 {
        s.send(&filler);
    }
    let r = s.cmd(".").concat();
    assert!(r.starts_with("250"), "{r}");
    let id = r.rsplit(' ').next().unwrap_or_default().to_string();
    s.cmd("QUIT");
    let log = wait_status(&inst, &id, rcpt, 1);
    assert_line_as_fixture(&log, &id, "drop-body", rcpt);
}

#[test]
fn rcpt_550_bounces_to_the_local_sender_with_postfix_dsn() {
    let local = local_sender();
    let peer = Sink::start(SinkMode::Accept);
    let inst = start(&format!("relayhost = [127.0.0.1]:{}\n", peer.port));
    let rcpt = "bad-user@rcpt550.example";
    let id = send(inst.port, SENDER, &[rcpt], "fixture rcpt550");
    let log = inst.wait_log_until(Duration::from_secs(30), |l| {
        l.contains(&format!("{id}: removed"))
    });
    assert_line_as_fixture(&log, &id, "rcpt550", rcpt);
    assert!(
        log.contains(&format!("{id}: sender non-delivery notification: ")),
        "{log}"
    );
    assert!(peer.messages.lock().unwrap().is_empty());
    if !local {
        eprintln!("not root: the bounce's mailbox delivery is not checked");
        return;
    }
    let mbox = wait_mbox(&inst, 1);
    let b = bounces(&mbox).into_iter().next().unwrap_or_default();
    assert_dsn_as_fixture(&b, &id, "rcpt550.bounce.txt");
}

#[test]
fn data_554_bounces_with_end_of_data_diagnostic() {
    // A peer that rejects the message after the final dot.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut w = c;
                let _ = w.write_all(b"220 peer.example ESMTP scripted\r\n");
                let mut line = String::new();
                let mut in_data = false;
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    let v = line.to_ascii_uppercase();
                    line.clear();
                    let reply: &[u8] = if in_data {
                        if v != ".\r\n" {
                            continue;
                        }
                        in_data = false;
                        b"554 5.7.1 Message rejected: spam content\r\n"
                    } else if v.starts_with("EHLO") {
                        b"250-peer.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n"
                    } else if v.starts_with("DATA") {
                        in_data = true;
                        b"354 End data with <CR><LF>.<CR><LF>\r\n"
                    } else if v.starts_with("QUIT") {
                        let _ = w.write_all(b"221 2.0.0 Bye\r\n");
                        return;
                    } else {
                        b"250 2.0.0 Ok\r\n"
                    };
                    let _ = w.write_all(reply);
                }
            });
        }
    });
    let local = local_sender();
    let inst = start(&format!("relayhost = [127.0.0.1]:{port}\n"));
    let rcpt = "user@data554.example";
    let id = send(inst.port, SENDER, &[rcpt], "fixture data554");
    let log = inst.wait_log_until(Duration::from_secs(30), |l| {
        l.contains(&format!("{id}: removed"))
    });
    assert_line_as_fixture(&log, &id, "data554", rcpt);
    if local {
        let mbox = wait_mbox(&inst, 1);
        let b = bounces(&mbox).into_iter().next().unwrap_or_default();
        assert_dsn_as_fixture(&b, &id, "data554.bounce.txt");
    }
}

#[test]
fn greeting_554_and_connection_refused_are_deferred() {
    let greet = Sink::start(SinkMode::Greet554);
    let refused = free_port(); // nothing listens there
    let inst = start_transport(
        "",
        &format!(
            "greeting554.example smtp:[127.0.0.1]:{g}\nrefused.example smtp:[127.0.0.1]:{refused}\n",
            g = greet.port
        ),
        Vec::new(),
    );
    let r1 = "user@greeting554.example";
    let r2 = "user@refused.example";
    let id1 = send(inst.port, SENDER, &[r1], "fixture greeting554");
    let id2 = send(inst.port, SENDER, &[r2], "fixture refused");
    let log = inst.wait_log_until(Duration::from_secs(30), |l| {
        !status_lines(l, &id1, r1).is_empty() && !status_lines(l, &id2, r2).is_empty()
    });
    assert_line_as_fixture(&log, &id1, "greeting554", r1);
    assert_line_as_fixture(&log, &id2, "refused", r2);
    // The connect failure also gets its own line, as in the real Postfix's log.
    assert!(
        log.contains(&format!(
            "]: connect to 127.0.0.1[127.0.0.1]:{refused}: Connection refused\n"
        )),
        "{log}"
    );
    // After the 5xx greeting the client says QUIT, nothing else.
    let t = greet.transcript();
    assert_eq!(
        t,
        vec![
            "S: 554 5.7.1 peer.example ESMTP not accepting mail from you",
            "C: QUIT",
            "S: 221 2.0.0 Bye",
        ],
        "{t:#?}"
    );
    // Both wait in the deferred queue (smtp_skip_5xx_greeting: not a bounce).
    for id in [&id1, &id2] {
        let q = queue_file(&inst, "deferred", id);
        let _ = poll(Duration::from_secs(30), || q.exists().then_some(()));
        assert!(q.exists(), "{id}: {}", inst.log());
    }
}

#[test]
fn transport_maps_inline_table_with_spaces_routes_to_the_peer() {
    // Postfix's documented inline syntax: `inline:{ key=value, key=value }` (DATABASE_README).
    let a = Sink::start(SinkMode::Accept);
    let b = Sink::start(SinkMode::Accept);
    let inst = start(&format!(
        "transport_maps = inline:{{ a.example=smtp:[127.0.0.1]:{}, b.example=smtp:[127.0.0.1]:{} }}\n",
        a.port, b.port
    ));
    let id = send(inst.port, SENDER, &["u@a.example", "u@b.example"], "inline");
    let log = inst.wait_log_until(Duration::from_secs(30), |l| {
        l.contains(&format!("{id}: removed"))
    });
    assert!(!log.contains("warning: inline:"), "{log}");
    for (r, p) in [("u@a.example", a.port), ("u@b.example", b.port)] {
        let line = status_lines(&log, &id, r)
            .first()
            .cloned()
            .unwrap_or_default();
        assert!(
            line.contains(&format!(", relay=127.0.0.1[127.0.0.1]:{p}, ")),
            "{log}"
        );
    }
    assert_eq!(a.messages.lock().unwrap().len(), 1);
    assert_eq!(b.messages.lock().unwrap().len(), 1);
}

#[test]
fn mail_to_mydestination_never_goes_out() {
    // Without root there is no local user: the local bounce would go out through the
    // relayhost, which is what this test must not see.
    if !local_sender() {
        eprintln!("skipped: needs root for a local user");
        return;
    }
    let peer = Sink::start(SinkMode::Accept);
    let inst = start(&format!(
        "relayhost = [127.0.0.1]:{p}\ndefault_transport = smtp:[127.0.0.1]:{p}\n",
        p = peer.port
    ));
    let id = send(
        inst.port,
        "someone@elsewhere.example",
        &["postern-fx@mail.example.test", "postern-fx@localhost"],
        "stays here",
    );
    let log = inst.wait_log_until(Duration::from_secs(30), |l| {
        l.contains(&format!("{id}: removed"))
    });
    for r in ["postern-fx@mail.example.test", "postern-fx@localhost"] {
        let lines = status_lines(&log, &id, r);
        assert_eq!(lines.len(), 1, "{log}");
        assert!(lines[0].contains("postfix/local["), "{log}");
        assert!(lines[0].contains(", relay=local, "), "{log}");
        assert!(
            lines[0].ends_with("status=sent (delivered to mailbox)"),
            "{log}"
        );
    }
    assert!(!log.contains("postfix/smtp["), "{log}");
    assert_eq!(peer.connections.load(Ordering::SeqCst), 0);
}

#[test]
fn postfix_flush_retries_a_deferred_message_at_once() {
    // Deferred with the default minimal_backoff_time (300 s): only a flush retries it
    // within the test's wait.
    let port = free_port();
    let inst = start(&format!("relayhost = [127.0.0.1]:{port}\n"));
    let rcpt = "user@refused.example";
    let id = send(inst.port, SENDER, &[rcpt], "fixture refused");
    let log = wait_status(&inst, &id, rcpt, 1);
    assert_line_as_fixture(&log, &id, "refused", rcpt);
    let peer = Sink::start_on("127.0.0.1", port, SinkMode::Accept, false);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        peer.connections.load(Ordering::SeqCst),
        0,
        "retried before the flush"
    );
    let conf = inst.config_dir().display().to_string();
    let out = postern_cmd("postfix", &["-c", &conf, "flush"]);
    assert!(out.status.success(), "{out:?}");
    let log = inst.wait_log_until(Duration::from_secs(30), |l| {
        l.contains(&format!("{id}: removed"))
    });
    let lines = status_lines(&log, &id, rcpt);
    assert_eq!(lines.len(), 2, "{log}");
    assert_eq!(
        mask(&lines[1], &id),
        format!(
            "postfix/smtp: QUEUEID: to=<{rcpt}>, relay=127.0.0.1[127.0.0.1]:PORT, delay=*, delays=*, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as {PEER_QID})"
        )
    );
    assert_eq!(peer.messages.lock().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------
// Bounces in the sender's mbox, compared with the real Postfix's.

fn wait_mbox(inst: &Instance, n: usize) -> String {
    let p = inst.dir.path().join("mail/postern-fx");
    let read = || std::fs::read_to_string(&p).unwrap_or_default();
    poll(Duration::from_secs(30), || {
        Some(read()).filter(|s| bounces(s).len() >= n)
    })
    .unwrap_or_else(read)
}

fn bounces(mbox: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for l in mbox.split_inclusive('\n') {
        if l.starts_with("From MAILER-DAEMON  ") || (l.starts_with("From ") && v.is_empty()) {
            v.push(String::new());
        }
        if let Some(last) = v.last_mut() {
            last.push_str(l);
        }
    }
    v
}

/// A bounce with what differs from run to run replaced: its MIME boundary, dates, the
/// original's queue ID (as QUEUEID), the Received: headers (with their continuation lines)
/// and Message-Id values (they carry queue IDs and times).
fn normalize_bounce(b: &str, id: &str) -> Vec<String> {
    let boundary = b
        .split("boundary=\"")
        .nth(1)
        .and_then(|x| x.split('"').next())
        .unwrap_or("NONE")
        .to_string();
    let mut out = Vec::new();
    let mut skip_fold = false;
    for l in b.lines() {
        if l.starts_with("From MAILER-DAEMON  ") {
            out.push("From MAILER-DAEMON  DATE".into());
            continue;
        }
        if skip_fold && l.starts_with(['\t', ' ']) {
            continue;
        }
        skip_fold = false;
        let mut l = l.replace(&boundary, "BOUNDARY").replace(id, "QUEUEID");
        for h in ["Date: ", "Arrival-Date: ", "Message-Id: ", "Received: "] {
            if l.starts_with(h) {
                l = format!("{h}*");
                skip_fold = h == "Received: ";
            }
        }
        out.push(l);
    }
    // The mbox's separating empty line is not part of the message.
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out
}

/// Field by field: every line of the real Postfix's bounce (normalized) in order.
fn assert_dsn_as_fixture(got: &str, id: &str, fixture_name: &str) {
    let want_raw = fixture(fixture_name);
    let want_id = want_raw
        .lines()
        .find_map(|l| l.strip_prefix("X-Postfix-Queue-ID: "))
        .unwrap_or("")
        .to_string();
    let want = normalize_bounce(&want_raw, &want_id);
    let got = normalize_bounce(got, id);
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        assert_eq!(
            g,
            w,
            "line {} of the bounce differs:\n{}",
            i + 1,
            got.join("\n")
        );
    }
    assert_eq!(got.len(), want.len(), "{}", got.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Connection reuse (Postfix's connection cache: smtp_connection_cache_on_demand,
// smtp_connection_cache_destinations, the time and count limits), checked against
// compat-fixtures/smtp/reuse.* (the real Postfix relaying 20 messages to one peer).

/// Send `subjects.len()` messages, one recipient each (`rcpt(i)`), one SMTP session each,
/// and wait for every status line; the queue IDs.
fn send_each(inst: &Instance, rcpts: &[String]) -> Vec<String> {
    let ids: Vec<String> = rcpts
        .iter()
        .map(|r| send(inst.port, SENDER, &[r.as_str()], &format!("reuse {r}")))
        .collect();
    inst.wait_log_until(Duration::from_secs(60), |l| {
        ids.iter()
            .zip(rcpts)
            .all(|(id, r)| !status_lines(l, id, r).is_empty())
    });
    ids
}

/// Every message reached the peer exactly once.
fn assert_each_once(peer: &Sink, rcpts: &[String]) {
    let msgs = peer.messages.lock().unwrap().clone();
    assert_eq!(msgs.len(), rcpts.len(), "{msgs:#?}");
    for r in rcpts {
        let n = msgs
            .iter()
            .filter(|m| m.contains(&format!("\r\nSubject: reuse {r}\r\n")))
            .count();
        assert_eq!(n, 1, "{r}: {msgs:#?}");
    }
}

/// The commands a session's client sent, without the message lines.
fn commands(session: &[String]) -> Vec<String> {
    session
        .iter()
        .filter(|l| l.starts_with("C: ") && !l.starts_with("C: <message>"))
        .map(|l| l.split(':').take(2).collect::<Vec<_>>().join(":"))
        .collect()
}

#[test]
fn reuse_on_demand_uses_fewer_connections_with_rset_between_and_logs_conn_use_as_postfix() {
    let peer = Sink::start(SinkMode::Accept);
    // One delivery at a time: each starts right after the one before (Postfix's
    // "back to back"), which turns on-demand caching on from the second message.
    let inst = start(&format!(
        "relayhost = [127.0.0.1]:{}\nsmtp_destination_concurrency_limit = 1\n",
        peer.port
    ));
    let rcpts: Vec<String> = (0..8)
        .map(|i| format!("user{i:02}@reuse.example"))
        .collect();
    let ids = send_each(&inst, &rcpts);
    let log = inst.log();
    let conns = peer.connections.load(Ordering::SeqCst);
    assert!(
        conns < rcpts.len(),
        "{conns} connections for {} messages",
        rcpts.len()
    );
    assert_each_once(&peer, &rcpts);
    for (id, r) in ids.iter().zip(&rcpts) {
        let l = status_lines(&log, id, r);
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(l[0].contains("status=sent"), "{l:?}");
    }
    // Each connection's first message is logged without conn_use=, every later one with it.
    let reused: Vec<String> = ids
        .iter()
        .zip(&rcpts)
        .flat_map(|(id, r)| status_lines(&log, id, r))
        .filter(|l| l.contains(", conn_use="))
        .collect();
    assert_eq!(reused.len(), rcpts.len() - conns, "{log}");
    // The line has the real Postfix's form (fixture: user07 went over a connection's second
    // use).
    let (id, r) = ids
        .iter()
        .zip(&rcpts)
        .find(|(id, r)| status_lines(&log, id, r)[0].contains(", conn_use=2,"))
        .expect("a second use of a connection");
    let got = mask(&status_lines(&log, id, r)[0], id).replace(r.as_str(), "user07@reuse.example");
    assert_eq!(got, fixture_line("reuse", "user07@reuse.example"));
    // On the wire: RSET (answered 250) before each further transaction, as the fixture's
    // peer saw from Postfix.
    let sessions = peer.sessions();
    let mut seen_reuse = false;
    for s in &sessions {
        let c = commands(s);
        let mails = c.iter().filter(|x| x.starts_with("C: MAIL FROM")).count();
        let rsets = c.iter().filter(|x| *x == "C: RSET").count();
        assert_eq!(rsets, mails.saturating_sub(1), "{s:#?}");
        for (k, x) in c.iter().enumerate() {
            if x == "C: RSET" {
                assert!(c[k + 1].starts_with("C: MAIL FROM"), "{s:#?}");
                seen_reuse = true;
            }
        }
    }
    assert!(seen_reuse, "{sessions:#?}");
    let f = fixture("reuse.peer.txt");
    assert!(
        f.contains(
            "S: 250 2.0.0 Ok: queued as 4PEERQID01\nC: RSET\nS: 250 2.0.0 Ok\nC: MAIL FROM:"
        ),
        "{f}"
    );
}

#[test]
fn reuse_a_connection_closed_while_idle_is_probed_and_the_message_goes_over_a_new_one() {
    let peer = Sink::start(SinkMode::CloseAfterMessage);
    let inst = start(&format!(
        "relayhost = [127.0.0.1]:{}\nsmtp_connection_cache_destinations = 127.0.0.1\n\
         smtp_connection_cache_time_limit = 300s\n",
        peer.port
    ));
    let rcpts: Vec<String> = (0..2).map(|i| format!("idle{i}@reuse.example")).collect();
    let mut ids = send_each(&inst, &rcpts[..1]);
    // The peer has closed the cached session.
    poll(Duration::from_secs(10), || {
        peer.sessions()
            .first()
            .is_some_and(|s| s.last().is_some_and(|l| l == "-- peer closes"))
            .then_some(())
    });
    ids.extend(send_each(&inst, &rcpts[1..]));
    let log = inst.log();
    for (id, r) in ids.iter().zip(&rcpts) {
        let l = status_lines(&log, id, r);
        assert_eq!(l.len(), 1, "{log}");
        assert!(l[0].contains("status=sent"), "{log}");
        assert!(!l[0].contains("conn_use="), "{log}");
    }
    assert_each_once(&peer, &rcpts);
    assert_eq!(peer.connections.load(Ordering::SeqCst), 2);
    // Postfix smtp_reuse_common(): the RSET probe's failure, logged before the new session.
    assert!(
        log.contains(&format!(
            ": {}: lost connection with 127.0.0.1[127.0.0.1] while sending RSET probe",
            ids[1]
        )),
        "{log}"
    );
}

/// `smtp_connection_cache_destinations` is a Postfix string list: a `type:table` matches
/// the relay host's name on its left-hand side whatever the value (postconf(5)), and `!`
/// before it negates a match, so the name after it is never reached. As the real Postfix
/// did for the same lists (compat-fixtures/smtp/reuse-table.txt: sessions the peer saw and
/// each message's conn_use, three messages one after the other, no caching on demand).
#[test]
fn reuse_for_cache_destinations_given_as_a_table() {
    let run = |list: &str| {
        let peer = Sink::start(SinkMode::Accept);
        let extra = format!(
            "relayhost = [127.0.0.1]:{}\nsmtp_connection_cache_on_demand = no\n\
             smtp_connection_cache_destinations = {}\n\
             smtp_connection_cache_time_limit = 300s\n",
            peer.port,
            list.replace("TABLE", "texthash:$queue_directory/../cachedests")
        );
        let inst = Instance::start_env(&delivering_main_cf(&extra), QMGR, Vec::new(), |d| {
            std::fs::write(d.join("cachedests"), "127.0.0.1 any-value\n").unwrap();
        });
        let rcpts: Vec<String> = (0..3).map(|i| format!("table{i}@reuse.example")).collect();
        let mut ids = Vec::new();
        for r in &rcpts {
            ids.extend(send_each(&inst, std::slice::from_ref(r)));
        }
        assert_each_once(&peer, &rcpts);
        let log = inst.log();
        let uses: Vec<String> = ids
            .iter()
            .zip(&rcpts)
            .map(|(id, r)| {
                let l = &status_lines(&log, id, r)[0];
                l.split_once(", conn_use=")
                    .and_then(|(_, rest)| rest.split_once(','))
                    .map_or("-".to_string(), |(n, _)| n.to_string())
            })
            .collect();
        format!(
            "{list}\tsessions={}\tconn_use={}",
            peer.connections.load(Ordering::SeqCst),
            uses.join(",")
        )
    };
    let want = fixture("reuse-table.txt");
    let want: Vec<&str> = want.lines().collect();
    assert_eq!(want.len(), 3);
    for w in want {
        let list = w.split('\t').next().unwrap();
        assert_eq!(run(list), w);
    }
}

/// Two next-hops that are one server (`[127.0.0.1]:P` and `[localhost]:P`), both cached:
/// a session made for one carries the other's mail too, found by the server's address
/// (Postfix's `smtp_reuse_addr()`); and a request's second good session (the fallback
/// relay on 127.0.0.2 taking what the relayhost greylisted) is kept under its address
/// only, where the next request to that server finds it. As the real Postfix 3.7 does
/// (compat-fixtures/smtp/reuse-addr.txt, `scripts/regen-smtp-fixtures reuse-addr`: one
/// session each, conn_use 2 to 5 and 2, `relay=` naming each next-hop's own host name).
#[test]
fn reuse_by_server_address_across_next_hops() {
    let peer = Sink::start(SinkMode::Accept);
    let fallback = Sink::start_on("127.0.0.2", 0, SinkMode::AcceptAll, false);
    let (p, f) = (peer.port, fallback.port);
    let inst = start_transport(
        &format!(
            "smtp_host_lookup = native\nsmtp_connection_cache_on_demand = no\n\
             smtp_connection_cache_destinations = 127.0.0.1, 127.0.0.2, localhost\n\
             smtp_connection_cache_time_limit = 300s\nrelayhost = [127.0.0.1]:{p}\n\
             smtp_fallback_relay = [127.0.0.2]:{f}\n"
        ),
        &format!(
            "a.example smtp:[127.0.0.1]:{p}\nb.example smtp:[localhost]:{p}\n\
             c.example smtp:[127.0.0.2]:{f}\n"
        ),
        Vec::new(),
    );
    let want = fixture("reuse-addr.txt");
    let mut lines = want.lines();
    let sessions = lines.next().unwrap();
    let want: Vec<&str> = lines.collect();
    let rcpt = |w: &str| w.split(' ').next().unwrap().to_string();
    // One message per line, but now@ and later@ (the relayhost greylists later@) together.
    let mut sends: Vec<Vec<String>> = Vec::new();
    for w in &want {
        let r = rcpt(w);
        match sends.last_mut() {
            Some(last) if r.starts_with("later@") => last.push(r),
            _ => sends.push(vec![r]),
        }
    }
    let mut got = Vec::new();
    for rs in &sends {
        let id = send(
            inst.port,
            SENDER,
            &rs.iter().map(String::as_str).collect::<Vec<_>>(),
            "reuse",
        );
        let log = inst.wait_log_until(Duration::from_secs(60), |l| {
            rs.iter().all(|r| {
                status_lines(l, &id, r)
                    .iter()
                    .any(|x| x.contains("status=sent"))
            })
        });
        for r in rs {
            let l = status_lines(&log, &id, r)
                .into_iter()
                .find(|x| x.contains("status=sent"))
                .unwrap_or_else(|| panic!("{r} not sent:\n{log}"));
            let field = |name: &str| {
                l.split_once(&format!(", {name}="))
                    .and_then(|(_, rest)| rest.split_once(','))
                    .map_or("-".to_string(), |(v, _)| v.to_string())
            };
            got.push(format!(
                "{r} relay={} conn_use={}",
                field("relay")
                    .replace(&p.to_string(), "PORT")
                    .replace(&f.to_string(), "FALLBACK"),
                field("conn_use")
            ));
        }
    }
    assert_eq!(got, want);
    assert_eq!(
        format!(
            "sessions={} fallback={}",
            peer.connections.load(Ordering::SeqCst),
            fallback.connections.load(Ordering::SeqCst)
        ),
        sessions
    );
}

#[test]
fn reuse_never_after_a_421() {
    let peer = Sink::start(SinkMode::Accept);
    let inst = start(&format!(
        "relayhost = [127.0.0.1]:{}\nsmtp_connection_cache_destinations = 127.0.0.1\n\
         smtp_connection_cache_time_limit = 300s\n",
        peer.port
    ));
    let busy = vec!["busy@reuse.example".to_string()];
    let ids = send_each(&inst, &busy);
    let log = inst.log();
    let l = status_lines(&log, &ids[0], &busy[0]);
    assert!(l[0].contains("status=deferred"), "{log}");
    let good = vec!["after421@reuse.example".to_string()];
    send_each(&inst, &good);
    assert_each_once(&peer, &good);
    assert_eq!(peer.connections.load(Ordering::SeqCst), 2);
    // The first session (which the sink keeps open after the 421 to its end of data, a
    // transaction otherwise complete) ends with QUIT and never carries another one.
    let s = &peer.sessions()[0];
    let c = commands(s);
    assert_eq!(
        c.iter().filter(|x| x.starts_with("C: MAIL FROM")).count(),
        1,
        "{s:#?}"
    );
    assert_eq!(c.last().map(String::as_str), Some("C: QUIT"), "{s:#?}");
}

#[test]
fn reuse_idle_sessions_are_closed_after_the_cache_time_limit() {
    let peer = Sink::start(SinkMode::Accept);
    let inst = start(&format!(
        "relayhost = [127.0.0.1]:{}\nsmtp_connection_cache_destinations = 127.0.0.1\n\
         smtp_connection_cache_time_limit = 1s\n",
        peer.port
    ));
    let rcpts: Vec<String> = (0..2).map(|i| format!("ttl{i}@reuse.example")).collect();
    send_each(&inst, &rcpts[..1]);
    // Closed without QUIT (as Postfix's scache closes it: compat-fixtures/smtp/reuse.peer.txt).
    let closed = poll(Duration::from_secs(20), || {
        peer.sessions()
            .first()
            .is_some_and(|s| s.last().is_some_and(|l| l == "C: <EOF>"))
            .then_some(())
    });
    assert!(closed.is_some(), "{:#?}", peer.sessions());
    assert!(!commands(&peer.sessions()[0]).contains(&"C: QUIT".to_string()));
    send_each(&inst, &rcpts[1..]);
    assert_each_once(&peer, &rcpts);
    assert_eq!(peer.connections.load(Ordering::SeqCst), 2);
}

#[test]
fn reuse_count_and_time_limits_end_a_session_with_quit() {
    // smtp_connection_reuse_count_limit = 1: a connection carries two transactions.
    let peer = Sink::start(SinkMode::Accept);
    let inst = start(&format!(
        "relayhost = [127.0.0.1]:{}\nsmtp_connection_cache_destinations = 127.0.0.1\n\
         smtp_connection_cache_time_limit = 300s\nsmtp_connection_reuse_count_limit = 1\n",
        peer.port
    ));
    let rcpts: Vec<String> = (0..3).map(|i| format!("count{i}@reuse.example")).collect();
    let mut ids = Vec::new();
    for r in &rcpts {
        ids.extend(send_each(&inst, std::slice::from_ref(r)));
    }
    assert_each_once(&peer, &rcpts);
    assert_eq!(peer.connections.load(Ordering::SeqCst), 2);
    let c = commands(&peer.sessions()[0]);
    assert_eq!(
        c.iter().filter(|x| x.starts_with("C: MAIL")).count(),
        2,
        "{c:#?}"
    );
    assert_eq!(c.last().map(String::as_str), Some("C: QUIT"), "{c:#?}");
    let log = inst.log();
    assert!(
        status_lines(&log, &ids[1], &rcpts[1])[0].contains(", conn_use=2, "),
        "{log}"
    );
    assert!(
        !status_lines(&log, &ids[2], &rcpts[2])[0].contains("conn_use="),
        "{log}"
    );

    // smtp_connection_reuse_time_limit = 1s: a session older than that carries the message
    // it was taken for, then QUIT.
    let peer = Sink::start(SinkMode::Accept);
    let inst = start(&format!(
        "relayhost = [127.0.0.1]:{}\nsmtp_connection_cache_destinations = 127.0.0.1\n\
         smtp_connection_cache_time_limit = 300s\nsmtp_connection_reuse_time_limit = 1s\n",
        peer.port
    ));
    let rcpts: Vec<String> = (0..3).map(|i| format!("age{i}@reuse.example")).collect();
    send_each(&inst, &rcpts[..1]);
    std::thread::sleep(Duration::from_millis(1500));
    send_each(&inst, &rcpts[1..2]);
    send_each(&inst, &rcpts[2..]);
    assert_each_once(&peer, &rcpts);
    assert_eq!(peer.connections.load(Ordering::SeqCst), 2);
    let c = commands(&peer.sessions()[0]);
    assert_eq!(
        c.iter().filter(|x| x.starts_with("C: MAIL")).count(),
        2,
        "{c:#?}"
    );
    assert_eq!(c.last().map(String::as_str), Some("C: QUIT"), "{c:#?}");
}
