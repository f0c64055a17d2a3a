//! `service pop3-login`/`imap-login` limits under a flood of silent connections (issue 17,
//! item 1): a private `postern dovecot` started as admins start it, `process_limit = 5` for
//! both login services, 40 silent connections to each port, then Python's poplib and
//! imaplib log in and read mail. Dovecot 2.3.19 serves a new client over the limit by
//! dropping the oldest one still waiting before login (`-ERR`/`* BYE Connection queue
//! full`) and its master warns once a second; the same flood against the real Dovecot
//! (when root and Debian's packages are here) gives the log lines the Postern side is
//! compared with. No timing is asserted.

mod common;
use common::*;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

const USER: &str = "posternpop";
const FLOOD: usize = 40;

const BOX: &str = "From bob@example.org  Sat Nov 28 10:00:00 2026\nFrom: bob@example.org\nSubject: one\n\nhello\n\nFrom bob@example.org  Sat Nov 28 10:01:00 2026\nFrom: bob@example.org\nSubject: two\n\nsecond body\n\n";

/// alice's home with her mbox INBOX, given to the mail user.
fn setup(dir: &Path) {
    alice_mbox_home(dir, BOX, user_ids(USER));
}

/// A dovecot.conf both accept: POP3 and IMAP, both login services limited to 5.
fn conf(dir: &Path, pop3: u16, imap: u16) -> String {
    let (uid, gid) = user_ids(USER);
    let d = dir.display();
    format!(
        "protocols = pop3 imap\nbase_dir = {d}/base\nstate_dir = {d}/state\nlisten = 127.0.0.1\n\
         log_path = {d}/log\nmail_location = mbox:~/mail:INBOX=~/inbox\n\
         ssl = no\ndisable_plaintext_auth = no\nauth_failure_delay = 0\n\
         passdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
         userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={d}/home/%u\n}}\n\
         service pop3-login {{\n  process_limit = 5\n  inet_listener pop3 {{\n    port = {pop3}\n  }}\n  inet_listener pop3s {{\n    port = 0\n  }}\n}}\n\
         service imap-login {{\n  process_limit = 5\n  inet_listener imap {{\n    port = {imap}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n"
    )
}

/// What a flood and the good clients saw.
struct Outcome {
    log: String,
    /// Per port (POP3, IMAP): flood connections told `Connection queue full`.
    told_full: [usize; 2],
    /// The good clients' output (poplib, imaplib).
    clients: String,
}

fn flood_and_serve(which: Which) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path());
    let (pop3, imap) = (free_port(), free_port());
    let cf = dir.path().join("dovecot.conf");
    std::fs::write(&cf, conf(dir.path(), pop3, imap)).expect("conf");
    let d = Dovecot::start(which, &cf, pop3, &dir.path().join("log"));
    wait_port(imap);

    // The flood: silent connections from 127.0.0.2 … 127.0.0.11, one at a time, so that
    // each is accepted (and greeted) before the next comes.
    let mut flood: Vec<Vec<std::net::TcpStream>> = vec![Vec::new(), Vec::new()];
    for (k, port) in [pop3, imap].into_iter().enumerate() {
        for i in 0..FLOOD {
            let s = connect_from(&format!("127.0.0.{}", 2 + i % 10), port);
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut greeting = [0u8; 512];
            let _ = (&s).read(&mut greeting);
            flood[k].push(s);
        }
    }
    // The good clients, while the flood's last connections are still open.
    let script = format!(
        r#"
import poplib, imaplib
p = poplib.POP3("127.0.0.1", {pop3}, timeout=30)
p.user("alice"); p.pass_("secret")
print("pop3 stat", p.stat()[0])
print("pop3 retr", b"Subject: one" in b"\n".join(p.retr(1)[1]))
p.quit()
m = imaplib.IMAP4("127.0.0.1", {imap}, timeout=30)
m.login("alice", "secret")
print("imap select", m.select("INBOX"))
typ, data = m.fetch("2", "(BODY.PEEK[])")
print("imap fetch", typ, b"second body" in data[0][1])
m.logout()
"#
    );
    let (out, err, code) = python(&script);
    assert_eq!(code, 0, "{which:?}: good client failed: {out}{err}");

    let mut told_full = [0usize; 2];
    for (k, socks) in flood.iter_mut().enumerate() {
        for s in socks.iter_mut() {
            s.set_nonblocking(true).expect("nonblocking");
            let mut buf = [0u8; 1024];
            if let Ok(n) = s.read(&mut buf)
                && String::from_utf8_lossy(&buf[..n]).contains("Connection queue full")
            {
                told_full[k] += 1;
            }
        }
    }
    drop(flood);
    let log = d.wait_log("imap-login: Info: Disconnected: Connection queue full");
    Outcome {
        log,
        told_full,
        clients: out,
    }
}

/// The log lines about the limit, with times and session ids set aside, distinct, sorted.
fn limit_lines(log: &str) -> Vec<String> {
    let mut v: Vec<String> = log
        .lines()
        .filter(|l| l.contains("queue full") || l.contains("process_limit"))
        .map(|l| {
            let l = l.get(16..).unwrap_or(l);
            let l = match l.find(" (no auth attempts in ") {
                Some(i) => format!("{} (no auth attempts in N secs){}", &l[..i], {
                    let rest = &l[i..];
                    &rest[rest.find("):").map_or(rest.len(), |j| j + 1)..]
                }),
                None => l.to_string(),
            };
            match l.find("session=<") {
                Some(i) => format!("{}session=<…>", &l[..i]),
                None => l,
            }
        })
        .map(|l| {
            // The flood comes from 127.0.0.2 … 11: one line per source is enough.
            let mut out = String::new();
            let mut rest = l.as_str();
            while let Some(i) = rest.find("rip=127.0.0.") {
                out.push_str(&rest[..i + 12]);
                out.push('X');
                rest = rest[i + 12..].trim_start_matches(|c: char| c.is_ascii_digit());
            }
            out.push_str(rest);
            out
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn login_services_serve_a_good_client_through_a_flood_over_process_limit() {
    let p = flood_and_serve(Which::Postern);
    assert!(
        p.clients.contains("pop3 stat 2")
            && p.clients.contains("pop3 retr True")
            && p.clients.contains("imap select ('OK', [b'2'])")
            && p.clients.contains("imap fetch OK True"),
        "{}",
        p.clients
    );
    for svc in ["pop3-login", "imap-login"] {
        assert!(
            p.log.contains(&format!(
                "master: Warning: service({svc}): process_limit (5) reached, client connections are being dropped"
            )),
            "{}",
            p.log
        );
        assert!(
            p.log.contains(&format!(
                "{svc}: Info: Disconnected: Connection queue full (no auth attempts in "
            )),
            "{}",
            p.log
        );
    }
    // Each new flood connection over the limit dropped an older one: all but the last
    // five (and those the good clients displaced) were told so.
    for (k, n) in p.told_full.iter().enumerate() {
        assert!(*n >= FLOOD - 5 - 1, "port {k}: {n} of {FLOOD} told");
    }
    let ours = limit_lines(&p.log);
    eprintln!("limit lines: {ours:#?}");

    if !Dovecot::real_available("pop3") || !Dovecot::real_available("imap") {
        return;
    }
    let r = flood_and_serve(Which::Real);
    let theirs = limit_lines(&r.log);
    assert_eq!(
        ours, theirs,
        "Postern's limit lines ≠ Dovecot's:\n{}",
        r.log
    );
    assert!(
        r.told_full.iter().all(|&n| n > 0),
        "the real Dovecot told none: {:?}",
        r.told_full
    );
}
