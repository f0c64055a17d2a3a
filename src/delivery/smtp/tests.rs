//! Tests: scripted SMTP peers on loopback ports in threads (replies as in
//! `compat-fixtures/smtp/`, recorded from the real Postfix 3.7.11 against the same
//! script), the test DNS server for MX routing, rcgen certificates for STARTTLS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::config::maincf;
use crate::config::mastercf::MasterCf;
use crate::config::postfix::PostfixConfig;
use crate::delivery::Status;
use crate::dns::testserver::TestDns;
use crate::queue::QueuedMessage;

use super::*;

trait Rw: Read + Write + Send {}
impl<T: Read + Write + Send> Rw for T {}

/// What a scripted peer answers (the fixture script's `Peer`).
#[derive(Clone)]
struct Script {
    greeting: String,
    ext: Vec<&'static str>,
    /// STARTTLS offered with this server configuration.
    tls: Option<Arc<rustls::ServerConfig>>,
    ext_after_tls: Vec<&'static str>,
    mail_reply: String,
    data_reply: String,
    auth_reply: String,
    drop_in_body: bool,
    drop_at_dot: bool,
    /// A greeting line of this many bytes before the real one.
    huge_greeting: usize,
    /// EHLO is not recognized (HELO-only server).
    no_ehlo: bool,
    /// After `220` to STARTTLS, garbage instead of a TLS handshake.
    broken_tls: bool,
    /// Wait this long before answering MAIL.
    mail_delay: Duration,
    /// Wait this long before answering the end of data.
    dot_delay: Duration,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            greeting: "220 peer.example ESMTP scripted".into(),
            ext: vec![
                "PIPELINING",
                "SIZE 10240000",
                "ENHANCEDSTATUSCODES",
                "8BITMIME",
            ],
            tls: None,
            ext_after_tls: vec![],
            mail_reply: "250 2.1.0 Ok".into(),
            data_reply: "250 2.0.0 Ok: queued as 4PEERQID01".into(),
            auth_reply: "235 2.7.0 Authentication successful".into(),
            drop_in_body: false,
            drop_at_dot: false,
            huge_greeting: 0,
            no_ehlo: false,
            broken_tls: false,
            mail_delay: Duration::ZERO,
            dot_delay: Duration::ZERO,
        }
    }
}

type Transcript = Arc<Mutex<Vec<String>>>;

struct PeerConn {
    r: BufReader<Box<dyn Rw>>,
    log: Transcript,
}

impl PeerConn {
    fn say(&mut self, line: &str) -> bool {
        self.log.lock().unwrap().push(format!("S: {line}"));
        let w = self.r.get_mut();
        w.write_all(format!("{line}\r\n").as_bytes()).is_ok() && w.flush().is_ok()
    }
    fn line(&mut self) -> Option<String> {
        let mut l = String::new();
        match self.r.read_line(&mut l) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                let l = l.trim_end_matches(['\r', '\n']).to_string();
                self.log.lock().unwrap().push(format!("C: {l}"));
                Some(l)
            }
        }
    }
    /// The message as sent (CR LF and dot-stuffing kept), without the final `.`.
    fn data(&mut self, drop_in_body: bool) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let mut l = Vec::new();
            if self.r.read_until(b'\n', &mut l).ok()? == 0 {
                return None;
            }
            if drop_in_body {
                self.log
                    .lock()
                    .unwrap()
                    .push("-- peer closes after the first body line".into());
                return None;
            }
            if l == b".\r\n" {
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("BODY: {}", String::from_utf8_lossy(&body)));
                return Some(body);
            }
            body.extend_from_slice(&l);
        }
    }
}

fn ehlo(p: &mut PeerConn, ext: &[&str]) -> bool {
    let mut lines = vec!["peer.example".to_string()];
    lines.extend(ext.iter().map(|s| s.to_string()));
    let n = lines.len();
    for (i, l) in lines.iter().enumerate() {
        let sep = if i + 1 == n { ' ' } else { '-' };
        if !p.say(&format!("250{sep}{l}")) {
            return false;
        }
    }
    true
}

fn serve_one(stream: std::net::TcpStream, sc: &Script, log: &Transcript) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    log.lock().unwrap().push("## session".into());
    let mut p = PeerConn {
        r: BufReader::new(Box::new(stream) as Box<dyn Rw>),
        log: log.clone(),
    };
    if sc.huge_greeting > 0 {
        let mut big = b"220-".to_vec();
        big.resize(sc.huge_greeting, b'x');
        big.extend_from_slice(b"\r\n");
        if p.r.get_mut().write_all(&big).is_err() {
            return;
        }
    }
    if !p.say(&sc.greeting) || !sc.greeting.starts_with('2') {
        // Wait for QUIT after a refusal.
        if let Some(l) = p.line()
            && l.eq_ignore_ascii_case("QUIT")
        {
            p.say("221 2.0.0 Bye");
        }
        return;
    }
    let mut in_tls = false;
    loop {
        let Some(l) = p.line() else { return };
        let up = l.to_ascii_uppercase();
        if up.starts_with("EHLO") && sc.no_ehlo {
            p.say("502 5.5.2 Error: command not recognized");
        } else if up.starts_with("EHLO") {
            let mut ext = sc.ext.clone();
            if in_tls {
                ext = sc.ext_after_tls.clone();
            } else if sc.tls.is_some() {
                ext.push("STARTTLS");
            }
            if !ehlo(&mut p, &ext) {
                return;
            }
        } else if up.starts_with("HELO") {
            p.say("250 peer.example");
        } else if up == "STARTTLS" {
            let Some(cfg) = sc.tls.clone() else {
                p.say("502 5.5.1 Error: command not implemented");
                continue;
            };
            p.say("220 2.0.0 Ready to start TLS");
            if sc.broken_tls {
                let w = p.r.get_mut();
                let _ = w.write_all(b"this is not TLS\r\n");
                log.lock().unwrap().push("-- garbage instead of TLS".into());
                return;
            }
            let inner = p.r.into_inner();
            let conn = rustls::ServerConnection::new(cfg).unwrap();
            let tls = rustls::StreamOwned::new(conn, inner);
            log.lock().unwrap().push("-- TLS handshake done".into());
            p = PeerConn {
                r: BufReader::new(Box::new(tls) as Box<dyn Rw>),
                log: log.clone(),
            };
            in_tls = true;
        } else if up.starts_with("AUTH") {
            if up.starts_with("AUTH LOGIN") {
                p.say("334 UGFzc3dvcmQ6");
                if p.line().is_none() {
                    return;
                }
            }
            p.say(&sc.auth_reply);
        } else if up.starts_with("MAIL") {
            std::thread::sleep(sc.mail_delay);
            p.say(&sc.mail_reply);
        } else if up.starts_with("RCPT") {
            let addr = l
                .split_once('<')
                .and_then(|(_, r)| r.split_once('>'))
                .map(|(a, _)| a.to_string())
                .unwrap_or_default();
            if addr.starts_with("bad") {
                p.say(&format!(
                    "550 5.1.1 <{addr}>: Recipient address rejected: User unknown in local recipient table"
                ));
            } else if addr.starts_with("later") {
                p.say(&format!(
                    "450 4.2.0 <{addr}>: Recipient address rejected: Greylisted, try again later"
                ));
            } else if addr.starts_with("multi") {
                p.say("550-5.1.1 first line");
                p.say("550 5.1.1 second line");
            } else {
                p.say("250 2.1.5 Ok");
            }
        } else if up == "DATA" {
            p.say("354 End data with <CR><LF>.<CR><LF>");
            if p.data(sc.drop_in_body).is_none() {
                return;
            }
            std::thread::sleep(sc.dot_delay);
            if sc.drop_at_dot {
                log.lock()
                    .unwrap()
                    .push("-- peer closes without answering the end of data".into());
                return;
            }
            p.say(&sc.data_reply);
        } else if up == "RSET" {
            p.say("250 2.0.0 Ok");
        } else if up == "QUIT" {
            p.say("221 2.0.0 Bye");
            return;
        } else {
            p.say("502 5.5.2 Error: command not recognized");
        }
    }
}

/// A peer answering `sessions` connections on `listener`, one after the other.
fn peer(listener: TcpListener, sessions: usize, sc: Script) -> (Transcript, JoinHandle<()>) {
    let log: Transcript = Arc::new(Mutex::new(Vec::new()));
    let l2 = log.clone();
    let h = std::thread::spawn(move || {
        for _ in 0..sessions {
            match listener.accept() {
                Ok((s, _)) => serve_one(s, &sc, &l2),
                Err(_) => return,
            }
        }
    });
    (log, h)
}

fn listen(ip: &str) -> (TcpListener, u16) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn settings(main_cf: &str) -> SmtpSettings {
    let text = format!(
        "myhostname = mail.example.test\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nsmtp_connect_timeout = 5s\n{main_cf}"
    );
    let main = maincf::parse(&text, Path::new("/nonexistent/main.cf")).unwrap();
    let cfg = PostfixConfig::from_main(main, MasterCf::default());
    SmtpSettings::from_config(&cfg, "smtp")
}

fn message(content: &str) -> QueuedMessage {
    QueuedMessage {
        queue_id: "4TESTQID01".into(),
        arrival: SystemTime::now(),
        sender: "postern-fx@mail.example.test".into(),
        recipients: Vec::new(),
        envid: None,
        ret_flags: 0,
        encoding: None,
        smtputf8: 0,
        rewrite_context: None,
        attributes: Vec::new(),
        content: content.as_bytes().to_vec(),
        message_size: content.len() as u64,
        data_offset: 0,
        rcpt_count: 0,
        qmgr_opts: 0,
    }
}

const BODY: &str = "From: a@example.test\nSubject: t\n\nline 1\n.dot line\n..two dots\nlast";

fn rcpt(a: &str) -> RcptJob {
    RcptJob {
        address: a.into(),
        orcpt: None,
        notify: None,
        original: None,
    }
}

fn lines(t: &Transcript) -> Vec<String> {
    t.lock().unwrap().clone()
}

#[test]
fn accepted_pipelined_dot_stuffed() {
    let (l, port) = listen("127.0.0.1");
    let (log, h) = peer(l, 1, Script::default());
    let s = settings("");
    let out = deliver(
        &s,
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@accepted.example")],
    );
    h.join().unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status, Status::Sent);
    assert_eq!(out[0].dsn, "2.0.0");
    assert_eq!(out[0].text, "250 2.0.0 Ok: queued as 4PEERQID01");
    assert_eq!(out[0].relay, format!("127.0.0.1[127.0.0.1]:{port}"));
    let t = lines(&log);
    assert!(
        t.contains(&"C: EHLO mail.example.test".to_string()),
        "{t:?}"
    );
    assert!(
        t.contains(&format!(
            "C: MAIL FROM:<postern-fx@mail.example.test> SIZE={}",
            BODY.len()
        )),
        "{t:?}"
    );
    let body = t.iter().find(|l| l.starts_with("BODY: ")).unwrap();
    assert_eq!(
        body,
        "BODY: From: a@example.test\r\nSubject: t\r\n\r\nline 1\r\n..dot line\r\n...two dots\r\nlast\r\n"
    );
    assert_eq!(t.last().unwrap(), "S: 221 2.0.0 Bye");
}

#[test]
fn mixed_recipients_sent_bounced_deferred() {
    let (l, port) = listen("127.0.0.1");
    let (_log, h) = peer(l, 1, Script::default());
    let s = settings("");
    let r = [
        rcpt("bad@mixed.example"),
        rcpt("good@mixed.example"),
        rcpt("later@mixed.example"),
    ];
    let out = deliver(&s, &message(BODY), &format!("[127.0.0.1]:{port}"), &r);
    h.join().unwrap();
    let relay = format!("127.0.0.1[127.0.0.1]:{port}");
    assert_eq!(out[0].status, Status::Bounced);
    assert_eq!(out[0].dsn, "5.1.1");
    assert_eq!(
        out[0].text,
        "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <bad@mixed.example>: Recipient address rejected: User unknown in local recipient table (in reply to RCPT TO command)"
    );
    assert_eq!(out[0].relay, relay);
    assert_eq!(out[0].remote_mta.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        out[0].diagnostic.as_deref(),
        Some(
            "550 5.1.1 <bad@mixed.example>: Recipient address rejected: User unknown in local recipient table"
        )
    );
    assert_eq!(out[1].status, Status::Sent);
    assert_eq!(out[1].text, "250 2.0.0 Ok: queued as 4PEERQID01");
    assert_eq!(out[2].status, Status::Deferred);
    assert_eq!(out[2].dsn, "4.2.0");
    assert_eq!(
        out[2].text,
        "host 127.0.0.1[127.0.0.1] said: 450 4.2.0 <later@mixed.example>: Recipient address rejected: Greylisted, try again later (in reply to RCPT TO command)"
    );
}

#[test]
fn only_deferred_recipient_ends_data_empty() {
    // As the real Postfix does (mixed.peer.txt session 2): DATA was pipelined, 354 came,
    // no recipient was accepted: "." alone.
    let (l, port) = listen("127.0.0.1");
    let (log, h) = peer(l, 1, Script::default());
    let out = deliver(
        &settings(""),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("later@mixed.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Deferred);
    let t = lines(&log);
    assert!(t.contains(&"BODY: ".to_string()), "{t:?}");
}

#[test]
fn greeting_554_defers_and_quits() {
    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        greeting: "554 5.7.1 peer.example ESMTP not accepting mail from you".into(),
        ..Script::default()
    };
    let (log, h) = peer(l, 1, sc);
    let out = deliver(
        &settings(""),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@greeting554.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Deferred);
    assert_eq!(out[0].dsn, "4.7.1");
    assert_eq!(
        out[0].text,
        "host 127.0.0.1[127.0.0.1] refused to talk to me: 554 5.7.1 peer.example ESMTP not accepting mail from you"
    );
    assert!(lines(&log).contains(&"C: QUIT".to_string()));
}

#[test]
fn connection_refused_defers_with_relay_none() {
    let (l, port) = listen("127.0.0.1");
    drop(l);
    let out = deliver(
        &settings(""),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@refused.example")],
    );
    assert_eq!(out[0].status, Status::Deferred);
    assert_eq!(out[0].dsn, "4.4.1");
    assert_eq!(out[0].relay, "none");
    assert_eq!(
        out[0].text,
        format!("connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused")
    );
}

#[test]
fn lost_connection_in_body_and_at_end_of_data() {
    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        drop_in_body: true,
        ext: vec!["PIPELINING", "SIZE 100000000", "8BITMIME"],
        ..Script::default()
    };
    let (_log, h) = peer(l, 1, sc);
    // Larger than what loopback socket buffers can absorb, so that the writes fail (a
    // smaller message fits the buffers and the loss shows only at end of data).
    let big = format!(
        "Subject: big\n\n{}",
        format!("{}\n", "x".repeat(99)).repeat(320_000)
    );
    let out = deliver(
        &settings(""),
        &message(&big),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@drop-body.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Deferred);
    assert_eq!(out[0].dsn, "4.4.2");
    assert_eq!(
        out[0].text,
        "lost connection with 127.0.0.1[127.0.0.1] while sending message body"
    );

    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        drop_at_dot: true,
        ..Script::default()
    };
    let (_log, h) = peer(l, 1, sc);
    let out = deliver(
        &settings(""),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@drop-end-of-data.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Deferred);
    assert_eq!(out[0].dsn, "4.4.2");
    assert_eq!(
        out[0].text,
        "lost connection with 127.0.0.1[127.0.0.1] while sending end of data -- message may be sent more than once"
    );
}

#[test]
fn data_554_bounces() {
    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        data_reply: "554 5.7.1 Message rejected: spam content".into(),
        ..Script::default()
    };
    let (_log, h) = peer(l, 1, sc);
    let out = deliver(
        &settings(""),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@data554.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Bounced);
    assert_eq!(out[0].dsn, "5.7.1");
    assert_eq!(
        out[0].text,
        "host 127.0.0.1[127.0.0.1] said: 554 5.7.1 Message rejected: spam content (in reply to end of DATA command)"
    );
}

#[test]
fn mail_from_rejected_without_pipelining_sends_no_rcpt() {
    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        ext: vec!["8BITMIME"],
        mail_reply: "553 5.7.1 <postern-fx@mail.example.test>: Sender address rejected".into(),
        ..Script::default()
    };
    let (log, h) = peer(l, 1, sc);
    let out = deliver(
        &settings(""),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("a@x.example"), rcpt("b@x.example")],
    );
    h.join().unwrap();
    for o in &out {
        assert_eq!(o.status, Status::Bounced);
        assert_eq!(
            o.text,
            "host 127.0.0.1[127.0.0.1] said: 553 5.7.1 <postern-fx@mail.example.test>: Sender address rejected (in reply to MAIL FROM command)"
        );
    }
    let t = lines(&log);
    assert!(!t.iter().any(|l| l.starts_with("C: RCPT")), "{t:?}");
    let n = t.len();
    assert_eq!(
        t[n - 4..],
        ["C: RSET", "S: 250 2.0.0 Ok", "C: QUIT", "S: 221 2.0.0 Bye"],
        "{t:?}"
    );
    // Without SIZE in EHLO, no SIZE= parameter.
    assert!(
        t.contains(&"C: MAIL FROM:<postern-fx@mail.example.test>".to_string()),
        "{t:?}"
    );
}

#[test]
fn multi_line_reply_joined_with_spaces() {
    let (l, port) = listen("127.0.0.1");
    let (_log, h) = peer(l, 1, Script::default());
    let out = deliver(
        &settings(""),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("multi@x.example")],
    );
    h.join().unwrap();
    assert_eq!(
        out[0].text,
        "host 127.0.0.1[127.0.0.1] said: 550-5.1.1 first line 550 5.1.1 second line (in reply to RCPT TO command)"
    );
    assert_eq!(out[0].dsn, "5.1.1");
}

#[test]
fn huge_reply_line_is_truncated_not_buffered() {
    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        huge_greeting: 10 * 1024 * 1024,
        ..Script::default()
    };
    let (_log, h) = peer(l, 1, sc);
    let out = deliver(
        &settings(""),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@x.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Sent, "{:?}", out[0]);
}

#[test]
fn garbage_greeting_then_close_is_lost_connection() {
    let (l, port) = listen("127.0.0.1");
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let _ = s.write_all(b"hello there\r\n\x01\x02 not smtp\r\n");
    });
    let out = deliver(
        &settings(""),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@x.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Deferred);
    assert_eq!(out[0].dsn, "4.4.2");
    assert_eq!(
        out[0].text,
        "lost connection with 127.0.0.1[127.0.0.1] while receiving the initial server greeting"
    );
    assert_eq!(out[0].relay, format!("127.0.0.1[127.0.0.1]:{port}"));
}

#[test]
fn greeting_timeout() {
    let (l, port) = listen("127.0.0.1");
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        std::thread::sleep(Duration::from_millis(2500));
        drop(s);
    });
    let out = deliver(
        &settings("smtp_helo_timeout = 1s"),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@x.example")],
    );
    h.join().unwrap();
    assert_eq!(
        out[0].text,
        "conversation with 127.0.0.1[127.0.0.1] timed out while receiving the initial server greeting"
    );
}

/// The socket timeouts are not set before every read and write ([`super::conn`]): a
/// stage whose timeout is longer than the one set before it still gets all of it (the
/// socket's shorter timeout expires first and the read goes on), and is still cut at its
/// own limit; a shorter one after longer ones is cut at its limit.
#[test]
fn stage_timeouts_hold_when_the_socket_timeout_is_kept_between_stages() {
    let run = |main_cf: &str, sc: Script| {
        let (l, port) = listen("127.0.0.1");
        let (_log, h) = peer(l, 1, sc);
        let t0 = std::time::Instant::now();
        let out = deliver(
            &settings(main_cf),
            &message(BODY),
            &format!("[127.0.0.1]:{port}"),
            &[rcpt("user@x.example")],
        );
        let took = t0.elapsed();
        h.join().unwrap();
        (out, took)
    };
    // smtp_helo_timeout = 2s leaves a 2 s receive timeout on the socket; MAIL's reply
    // comes after 2.5 s, within smtp_mail_timeout = 5s.
    let slow_mail = |d: u64| Script {
        mail_delay: Duration::from_millis(d),
        ..Script::default()
    };
    let (out, _) = run(
        "smtp_helo_timeout = 2s\nsmtp_mail_timeout = 5s",
        slow_mail(2500),
    );
    assert_eq!(out[0].status, Status::Sent, "{}", out[0].text);
    // The same with the reply after 6.5 s: cut at 5 s, not at 2 s nor at 4 s.
    let (out, took) = run(
        "smtp_helo_timeout = 2s\nsmtp_mail_timeout = 5s",
        slow_mail(6500),
    );
    assert_eq!(
        out[0].text,
        "conversation with 127.0.0.1[127.0.0.1] timed out while sending MAIL FROM"
    );
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_millis(6000),
        "{took:?}"
    );
    // smtp_data_done_timeout = 1s after stages of 300 s: the end of data's reply, due
    // after 3 s, is waited for 1 s.
    let (out, took) = run(
        "smtp_data_done_timeout = 1s",
        Script {
            dot_delay: Duration::from_millis(3000),
            ..Script::default()
        },
    );
    assert_eq!(
        out[0].text,
        "conversation with 127.0.0.1[127.0.0.1] timed out while sending end of data -- message may be sent more than once"
    );
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

#[test]
fn encrypt_without_starttls_defers() {
    let (l, port) = listen("127.0.0.1");
    let (log, h) = peer(l, 1, Script::default());
    let out = deliver(
        &settings("smtp_tls_security_level = encrypt"),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@tls-required.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Deferred);
    assert_eq!(out[0].dsn, "4.7.4");
    assert_eq!(
        out[0].text,
        "TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]"
    );
    assert!(lines(&log).contains(&"C: QUIT".to_string()));
}

#[test]
fn size_limit_of_server_bounces() {
    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        ext: vec!["PIPELINING", "SIZE 10"],
        ..Script::default()
    };
    let (_log, h) = peer(l, 1, sc);
    let out = deliver(
        &settings(""),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@x.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Bounced);
    assert_eq!(out[0].dsn, "5.3.4");
    assert_eq!(
        out[0].text,
        format!(
            "message size {} exceeds size limit 10 of server 127.0.0.1[127.0.0.1]",
            BODY.len()
        )
    );
}

#[test]
fn dsn_parameters_only_when_offered() {
    let mut msg = message(BODY);
    msg.envid = Some("env id+1".into());
    msg.ret_flags = crate::queue::file::DSN_RET_HDRS;
    msg.encoding = Some("8bit".into());
    let r = RcptJob {
        address: "user@x.example".into(),
        orcpt: Some("rfc822;user=a@x.example".into()),
        notify: Some("SUCCESS,DELAY".into()),
        original: None,
    };
    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        ext: vec!["PIPELINING", "DSN", "8BITMIME"],
        ..Script::default()
    };
    let (log, h) = peer(l, 1, sc);
    deliver(
        &settings(""),
        &msg,
        &format!("[127.0.0.1]:{port}"),
        std::slice::from_ref(&r),
    );
    h.join().unwrap();
    let t = lines(&log);
    assert!(
        t.contains(&"C: MAIL FROM:<postern-fx@mail.example.test> BODY=8BITMIME ENVID=env+20id+2B1 RET=HDRS".to_string()),
        "{t:?}"
    );
    assert!(
        t.contains(
            &"C: RCPT TO:<user@x.example> ORCPT=rfc822;user+3Da@x.example NOTIFY=SUCCESS,DELAY"
                .to_string()
        ),
        "{t:?}"
    );

    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        ext: vec!["PIPELINING"],
        ..Script::default()
    };
    let (log, h) = peer(l, 1, sc);
    deliver(&settings(""), &msg, &format!("[127.0.0.1]:{port}"), &[r]);
    h.join().unwrap();
    let t = lines(&log);
    assert!(
        t.contains(&"C: MAIL FROM:<postern-fx@mail.example.test>".to_string()),
        "{t:?}"
    );
    assert!(
        t.contains(&"C: RCPT TO:<user@x.example>".to_string()),
        "{t:?}"
    );
}

#[test]
fn orcpt_from_the_original_recipient_when_none_was_queued() {
    let msg = message(BODY);
    let r = RcptJob {
        address: "list-member@x.example".into(),
        orcpt: None,
        notify: None,
        original: Some("all+staff@y.example".into()),
    };
    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        ext: vec!["PIPELINING", "DSN"],
        ..Script::default()
    };
    let (log, h) = peer(l, 1, sc);
    deliver(&settings(""), &msg, &format!("[127.0.0.1]:{port}"), &[r]);
    h.join().unwrap();
    let t = lines(&log);
    assert!(
        t.contains(
            &"C: RCPT TO:<list-member@x.example> ORCPT=rfc822;all+2Bstaff@y.example".to_string()
        ),
        "{t:?}"
    );
}

fn dns_settings(dns: &TestDns, extra: &str) -> SmtpSettings {
    let mut s = settings(extra);
    s.resolver = Some(crate::dns::Resolver::with_server(
        dns.addr(),
        Duration::from_secs(2),
    ));
    s
}

/// Two loopback addresses listening on one port number: 127.0.0.2 answers, 127.0.0.3 not.
fn two_hosts() -> (TcpListener, u16) {
    for _ in 0..20 {
        let (l, port) = listen("127.0.0.2");
        if TcpListener::bind(("127.0.0.3", port)).is_ok() {
            // Free on .3 too (the probe socket is closed again): nothing listens there.
            return (l, port);
        }
    }
    panic!("no common free port");
}

#[test]
fn mx_order_and_fallback_to_next_mx_on_refused() {
    let dns = TestDns::start().unwrap();
    let (l, port) = two_hosts();
    dns.mx("mx.test", 10, "mx1.mx.test")
        .mx("mx.test", 20, "mx2.mx.test")
        .a("mx1.mx.test", Ipv4Addr::new(127, 0, 0, 3))
        .a("mx2.mx.test", Ipv4Addr::new(127, 0, 0, 2));
    let (_log, h) = peer(l, 1, Script::default());
    let s = dns_settings(&dns, &format!("smtp_tcp_port = {port}"));
    let out = deliver(&s, &message(BODY), "mx.test", &[rcpt("user@mx.test")]);
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Sent, "{:?}", out[0]);
    assert_eq!(out[0].relay, format!("mx2.mx.test[127.0.0.2]:{port}"));
    assert_eq!(out[0].remote_mta.as_deref(), Some("mx2.mx.test"));
}

#[test]
fn soft_rcpt_error_at_first_mx_tries_the_next() {
    let dns = TestDns::start().unwrap();
    let (l2, port) = two_hosts();
    let l3 = TcpListener::bind(("127.0.0.3", port)).unwrap();
    dns.mx("soft.test", 10, "mx1.soft.test")
        .mx("soft.test", 20, "mx2.soft.test")
        .a("mx1.soft.test", Ipv4Addr::new(127, 0, 0, 3))
        .a("mx2.soft.test", Ipv4Addr::new(127, 0, 0, 2));
    let (_l3log, h3) = peer(l3, 1, Script::default());
    let (_l2log, h2) = peer(l2, 1, Script::default());
    let s = dns_settings(&dns, &format!("smtp_tcp_port = {port}"));
    // "later…" is greylisted by both peers: kept after mx1, deferred at mx2 (final).
    let out = deliver(&s, &message(BODY), "soft.test", &[rcpt("later@soft.test")]);
    h3.join().unwrap();
    h2.join().unwrap();
    assert_eq!(out[0].status, Status::Deferred);
    assert_eq!(out[0].relay, format!("mx2.soft.test[127.0.0.2]:{port}"));
    assert!(
        out[0]
            .text
            .starts_with("host mx2.soft.test[127.0.0.2] said: 450 4.2.0"),
        "{}",
        out[0].text
    );
}

#[test]
fn implicit_mx_null_mx_and_not_found() {
    let dns = TestDns::start().unwrap();
    let (l, port) = listen("127.0.0.2");
    dns.a("implicit.test", Ipv4Addr::new(127, 0, 0, 2));
    dns.mx("nullmx.test", 0, ".");
    let (_log, h) = peer(l, 1, Script::default());
    let s = dns_settings(&dns, &format!("smtp_tcp_port = {port}"));
    let out = deliver(
        &s,
        &message(BODY),
        "implicit.test",
        &[rcpt("user@implicit.test")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Sent);
    assert_eq!(out[0].relay, format!("implicit.test[127.0.0.2]:{port}"));

    let out = deliver(
        &s,
        &message(BODY),
        "nullmx.test",
        &[rcpt("user@nullmx.test")],
    );
    assert_eq!(out[0].status, Status::Bounced);
    assert_eq!(out[0].dsn, "5.1.0");
    assert_eq!(
        out[0].text,
        "Domain nullmx.test does not accept mail (nullMX)"
    );
    assert_eq!(out[0].relay, "none");

    let out = deliver(&s, &message(BODY), "nx.test", &[rcpt("user@nx.test")]);
    assert_eq!(out[0].status, Status::Bounced);
    assert_eq!(out[0].dsn, "5.4.4");
    assert_eq!(
        out[0].text,
        "Host or domain name not found. Name service error for name=nx.test type=A: Host not found"
    );

    dns.servfail("broken.test");
    let out = deliver(
        &s,
        &message(BODY),
        "broken.test",
        &[rcpt("user@broken.test")],
    );
    assert_eq!(out[0].status, Status::Deferred);
    assert_eq!(out[0].dsn, "4.4.3");
    assert_eq!(
        out[0].text,
        "Host or domain name not found. Name service error for name=broken.test type=MX: Host not found, try again"
    );
}

#[test]
fn mx_pointing_here_loops_back() {
    let dns = TestDns::start().unwrap();
    dns.mx("loop.test", 10, "me.loop.test")
        .a("me.loop.test", Ipv4Addr::new(127, 0, 0, 1));
    let s = dns_settings(&dns, "");
    let out = deliver(&s, &message(BODY), "loop.test", &[rcpt("user@loop.test")]);
    assert_eq!(out[0].status, Status::Bounced);
    assert_eq!(out[0].dsn, "5.4.6");
    assert_eq!(out[0].text, "mail for loop.test loops back to myself");
}

fn test_tls_config() -> Arc<rustls::ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec!["peer.example".to_string()]).unwrap();
    let cert = ck.cert.pem();
    let key = ck.key_pair.serialize_pem();
    Arc::new(crate::tls::server_config(cert.as_bytes(), key.as_bytes(), "test").unwrap())
}

#[test]
fn starttls_and_auth_plain_to_relayhost() {
    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        tls: Some(test_tls_config()),
        ext_after_tls: vec![
            "PIPELINING",
            "SIZE 10240000",
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            "AUTH PLAIN LOGIN",
        ],
        ..Script::default()
    };
    let (log, h) = peer(l, 1, sc);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("sasl_passwd");
    std::fs::write(&pw, format!("[127.0.0.1]:{port} relayuser:relay-pw\n")).unwrap();
    let s = settings(&format!(
        "smtp_tls_security_level = encrypt\nsmtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = texthash:{}\nsmtp_sasl_security_options = noanonymous\n",
        pw.display()
    ));
    let out = deliver(
        &s,
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@auth-starttls.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Sent, "{:?}", out[0]);
    let t = lines(&log);
    let want = [
        "C: STARTTLS",
        "-- TLS handshake done",
        "C: EHLO mail.example.test",
        "C: AUTH PLAIN AHJlbGF5dXNlcgByZWxheS1wdw==",
        "S: 235 2.7.0 Authentication successful",
    ];
    let mut pos = 0;
    for w in want {
        let i = t[pos..]
            .iter()
            .position(|l| l == w)
            .unwrap_or_else(|| panic!("{w} missing in {t:?}"));
        pos += i + 1;
    }
}

#[test]
fn auth_refused_without_plaintext_option_and_failed_auth() {
    // Default smtp_sasl_security_options (noplaintext): PLAIN and LOGIN are not used.
    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        ext: vec!["PIPELINING", "AUTH PLAIN LOGIN"],
        ..Script::default()
    };
    let (_log, h) = peer(l, 1, sc.clone());
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("sasl_passwd");
    std::fs::write(&pw, "127.0.0.1 u:p\n").unwrap();
    let base = format!(
        "smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = texthash:{}\n",
        pw.display()
    );
    let out = deliver(
        &settings(&base),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@x.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Deferred);
    assert_eq!(out[0].dsn, "4.7.0");
    assert_eq!(
        out[0].text,
        "SASL authentication failed; cannot authenticate to server 127.0.0.1[127.0.0.1]: no mechanism available"
    );

    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        auth_reply: "535 5.7.8 Error: authentication failed: authentication failure".into(),
        ..sc
    };
    let (_log, h) = peer(l, 1, sc);
    let out = deliver(
        &settings(&format!("{base}smtp_sasl_security_options = noanonymous\n")),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@x.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Deferred);
    assert_eq!(out[0].dsn, "4.7.8");
    assert_eq!(
        out[0].text,
        "SASL authentication failed; server 127.0.0.1[127.0.0.1] said: 535 5.7.8 Error: authentication failed: authentication failure"
    );
}

#[test]
fn opportunistic_tls_upgrades() {
    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        tls: Some(test_tls_config()),
        ext_after_tls: vec!["PIPELINING", "8BITMIME"],
        ..Script::default()
    };
    let (log, h) = peer(l, 1, sc);
    let out = deliver(
        &settings("smtp_tls_security_level = may"),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@x.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Sent);
    assert!(lines(&log).contains(&"-- TLS handshake done".to_string()));
}

#[test]
fn verify_level_rejects_untrusted_certificate() {
    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        tls: Some(test_tls_config()),
        ..Script::default()
    };
    let (_log, h) = peer(l, 1, sc);
    let dir = tempfile::tempdir().unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["ca.example".to_string()]).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, other.cert.pem()).unwrap();
    let out = deliver(
        &settings(&format!(
            "smtp_tls_security_level = verify\nsmtp_tls_CAfile = {}\n",
            ca.display()
        )),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@x.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Deferred);
    assert_eq!(out[0].dsn, "4.7.5");
    assert_eq!(out[0].text, "Server certificate not verified");
}

#[test]
fn fallback_relay_after_unreachable_destination() {
    let (dead, dport) = listen("127.0.0.1");
    drop(dead);
    let (l, port) = listen("127.0.0.1");
    let (_log, h) = peer(l, 1, Script::default());
    let s = settings(&format!("smtp_fallback_relay = [127.0.0.1]:{port}\n"));
    let out = deliver(
        &s,
        &message(BODY),
        &format!("[127.0.0.1]:{dport}"),
        &[rcpt("user@x.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Sent);
}

#[test]
fn master_cf_overrides_apply() {
    let text = "myhostname = mail.example.test\n";
    let main = maincf::parse(text, Path::new("/nonexistent/main.cf")).unwrap();
    let master = crate::config::mastercf::parse(
        "relay unix - - n - - smtp -o smtp_helo_name=relay.example.test -o smtp_tls_security_level=encrypt\n",
        Path::new("/nonexistent/master.cf"),
    )
    .unwrap();
    let cfg = PostfixConfig::from_main(main, master);
    let s = SmtpSettings::from_config(&cfg, "relay");
    assert_eq!(s.ident, "postfix/relay");
    assert_eq!(s.params.helo_name, "relay.example.test");
    assert_eq!(s.params.tls_level, Ok(tls::TlsLevel::Encrypt));
    let s = SmtpSettings::from_config(&cfg, "smtp");
    assert_eq!(s.params.helo_name, "mail.example.test");
}

#[test]
fn long_lines_broken_and_quoting() {
    assert_eq!(proto::quote_821("a b@example.net"), "\"a b\"@example.net");
    assert_eq!(
        proto::quote_821("first.last@example.net"),
        "first.last@example.net"
    );
    assert_eq!(proto::quote_821(""), "");
    assert_eq!(proto::xtext("a+b=c d", "+="), "a+2Bb+3Dc+20d");
    let (l, port) = listen("127.0.0.1");
    let (log, h) = peer(l, 1, Script::default());
    let long = format!("Subject: x\n\n{}\n", "y".repeat(2000));
    let out = deliver(
        &settings(""),
        &message(&long),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@x.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Sent);
    let t = lines(&log);
    let body = t.iter().find(|l| l.starts_with("BODY: ")).unwrap();
    let want = format!(
        "BODY: Subject: x\r\n\r\n{}\r\n {}\r\n {}\r\n",
        "y".repeat(998),
        "y".repeat(997),
        "y".repeat(5)
    );
    assert_eq!(body, &want);
}

#[test]
fn socket_addr_type_check() {
    // The connect helper reports Postfix's strerror wording.
    let e = std::io::Error::from_raw_os_error(111);
    assert_eq!(crate::config::error::strerror(&e), "Connection refused");
    let _: SocketAddr = "127.0.0.1:25".parse().unwrap();
}

#[test]
fn helo_fallback_when_ehlo_is_refused() {
    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        no_ehlo: true,
        ..Script::default()
    };
    let (log, h) = peer(l, 1, sc);
    let out = deliver(
        &settings(""),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@x.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Sent);
    let t = lines(&log);
    assert!(
        t.contains(&"C: HELO mail.example.test".to_string()),
        "{t:?}"
    );
    assert!(
        t.contains(&"C: MAIL FROM:<postern-fx@mail.example.test>".to_string()),
        "{t:?}"
    );
}

#[test]
fn smtputf8_required_but_not_offered_bounces() {
    let (l, port) = listen("127.0.0.1");
    let (_log, h) = peer(l, 1, Script::default());
    let mut msg = message(BODY);
    msg.smtputf8 =
        crate::queue::file::SMTPUTF8_FLAG_REQUESTED | crate::queue::file::SMTPUTF8_FLAG_RECIPIENT;
    let out = deliver(
        &settings(""),
        &msg,
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("üser@x.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Bounced);
    assert_eq!(out[0].dsn, "5.6.7");
    assert_eq!(
        out[0].text,
        "SMTPUTF8 is required, but was not offered by host 127.0.0.1[127.0.0.1]"
    );
}

#[test]
fn bind_address_is_used() {
    let (l, port) = listen("127.0.0.1");
    let h = std::thread::spawn(move || {
        let (s, from) = l.accept().unwrap();
        serve_one(s, &Script::default(), &Arc::new(Mutex::new(Vec::new())));
        from.ip()
    });
    let out = deliver(
        &settings("smtp_bind_address = 127.0.0.5\n"),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@x.example")],
    );
    let from = h.join().unwrap();
    assert_eq!(out[0].status, Status::Sent);
    assert_eq!(from.to_string(), "127.0.0.5");
}

#[test]
fn opportunistic_tls_handshake_failure_retries_in_plaintext() {
    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        tls: Some(test_tls_config()),
        broken_tls: true,
        ..Script::default()
    };
    let (log, h) = peer(l, 2, sc);
    let out = deliver(
        &settings("smtp_tls_security_level = may"),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@x.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Sent, "{:?}", out[0]);
    let t = lines(&log);
    assert_eq!(t.iter().filter(|l| *l == "C: STARTTLS").count(), 1, "{t:?}");
    assert_eq!(t.iter().filter(|l| *l == "## session").count(), 2, "{t:?}");

    // With encrypt there is no plaintext retry.
    let (l, port) = listen("127.0.0.1");
    let sc = Script {
        tls: Some(test_tls_config()),
        broken_tls: true,
        ..Script::default()
    };
    let (_log, h) = peer(l, 1, sc);
    let out = deliver(
        &settings("smtp_tls_security_level = encrypt"),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@x.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Deferred);
    assert_eq!(out[0].dsn, "4.7.5");
    assert_eq!(out[0].text, "Cannot start TLS: handshake failure");
}

#[test]
fn many_recipients_pipelined_in_batches() {
    let (l, port) = listen("127.0.0.1");
    let (log, h) = peer(l, 1, Script::default());
    let r: Vec<RcptJob> = (0..300)
        .map(|i| rcpt(&format!("user-with-a-longish-name-{i}@x.example")))
        .collect();
    let out = deliver(
        &settings(""),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &r,
    );
    h.join().unwrap();
    assert_eq!(out.len(), 300);
    assert!(out.iter().all(|o| o.status == Status::Sent));
    let t = lines(&log);
    assert_eq!(
        t.iter().filter(|l| l.starts_with("C: RCPT TO:")).count(),
        300
    );
}

#[test]
fn endless_multi_line_reply_is_cut_off() {
    let (l, port) = listen("127.0.0.1");
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let chunk = "220-more\r\n".repeat(1000);
        for _ in 0..(reply::MAX_REPLY_LINES / 1000 + 2) {
            if s.write_all(chunk.as_bytes()).is_err() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    });
    let out = deliver(
        &settings(""),
        &message(BODY),
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@x.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Deferred);
    assert_eq!(
        out[0].text,
        "lost connection with 127.0.0.1[127.0.0.1] while receiving the initial server greeting"
    );
}

/// A recorded DATA (CR LF, dot-stuffed) back to queue content (LF).
fn unwire(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in data.split_inclusive(|&b| b == b'\n') {
        let l = l.strip_suffix(b"\r\n").unwrap_or(l);
        out.extend_from_slice(l.strip_prefix(b".").unwrap_or(l));
        out.push(b'\n');
    }
    out
}

fn smtp_fixture(name: &str) -> Vec<u8> {
    let p = format!("{}/compat-fixtures/smtp/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Send the queue file that the 8BITMIME peer received in `passthru-NAME.data` to a peer
/// with extensions `ext`; the MAIL FROM line and the DATA sent.
fn send_recorded(
    name: &str,
    encoding: Option<&str>,
    ext: Vec<&'static str>,
    main_cf: &str,
) -> (String, String) {
    let mut msg = message("");
    msg.content = unwire(&smtp_fixture(&format!("passthru-{name}.data")));
    msg.message_size = msg.content.len() as u64;
    msg.encoding = encoding.map(String::from);
    let (l, port) = listen("127.0.0.1");
    let (log, h) = peer(
        l,
        1,
        Script {
            ext,
            ..Script::default()
        },
    );
    let out = deliver(
        &settings(main_cf),
        &msg,
        &format!("[127.0.0.1]:{port}"),
        &[rcpt("user@downgrade.example")],
    );
    h.join().unwrap();
    assert_eq!(out[0].status, Status::Sent, "{:?}", out[0]);
    let t = lines(&log);
    let mail = t
        .iter()
        .find(|l| l.starts_with("C: MAIL"))
        .cloned()
        .unwrap_or_default();
    let body = t
        .iter()
        .find(|l| l.starts_with("BODY: "))
        .cloned()
        .unwrap_or_default();
    (mail, body)
}

#[test]
fn downgrade_for_a_server_without_8bitmime() {
    let no8 = || vec!["PIPELINING", "SIZE 10240000", "ENHANCEDSTATUSCODES"];
    let body = |f: &str| format!("BODY: {}", String::from_utf8_lossy(&smtp_fixture(f)));
    for name in [
        "plain",
        "single",
        "multi",
        "edges",
        "nested",
        "digest",
        "noboundary",
        "oddcte",
    ] {
        let (mail, data) = send_recorded(name, Some("8bit"), no8(), "");
        // As Postfix: no SIZE= when converting (compat-fixtures/smtp/downgrade-*.peer.txt).
        assert_eq!(
            mail, "C: MAIL FROM:<postern-fx@mail.example.test>",
            "{name}"
        );
        assert_eq!(data, body(&format!("downgrade-{name}.data")), "{name}");
    }
    // No encoding= in the queue file (no BODY= given): the same.
    let (mail, data) = send_recorded("plain-nobody", None, no8(), "");
    assert_eq!(mail, "C: MAIL FROM:<postern-fx@mail.example.test>");
    assert_eq!(data, body("downgrade-plain-nobody.data"));
    // A server with 8BITMIME gets BODY=8BITMIME and the message as queued.
    let (mail, data) = send_recorded("multi", Some("8bit"), Script::default().ext, "");
    assert!(
        mail.ends_with(" BODY=8BITMIME") && mail.contains(" SIZE="),
        "{mail}"
    );
    assert_eq!(data, body("passthru-multi.data"));
    // disable_mime_output_conversion = yes, or a 7bit message: as queued, with SIZE=.
    let (mail, data) = send_recorded(
        "single",
        Some("8bit"),
        no8(),
        "disable_mime_output_conversion = yes\n",
    );
    assert!(mail.contains(" SIZE="), "{mail}");
    assert_eq!(data, body("passthru-single.data"));
    let (mail, data) = send_recorded("single", Some("7bit"), no8(), "");
    assert!(mail.contains(" SIZE="), "{mail}");
    assert_eq!(data, body("passthru-single.data"));
}

/// The endpoint label (Postfix's `SMTP_KEY_MASK_SCACHE_ENDP_LABEL`): the service, address
/// and port only, by default, so that two next-hops with one server share its sessions;
/// with `smtp_sasl_password_maps` set also the current next-hop and the server's host name
/// (the credentials may differ), with a TLS level that checks names the next-hop (its
/// policy), and with sender-dependent SASL the sender.
#[test]
fn endpoint_labels_share_a_server_unless_credentials_or_tls_names_differ() {
    let msg = message("Subject: x\r\n\r\nx\r\n");
    let ip: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    let key = |main_cf: &str, nexthop: &str, host: &str| {
        let s = settings(main_cf);
        let st = super::state::State::new(&s, &msg, nexthop, &[]);
        super::endp_key(&st, nexthop, host, ip, 25)
    };
    let plain = key("", "a.example", "mx.a.example");
    assert_eq!(plain, "smtp\n*\n*\n*\n192.0.2.1\n25");
    assert_eq!(key("", "b.example", "MX.b.example"), plain);
    let sasl = "smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = texthash:/nonexistent\n";
    assert_eq!(
        key(sasl, "A.example", "MX.a.example"),
        "smtp\n*\na.example\nmx.a.example\n192.0.2.1\n25"
    );
    assert_ne!(key(sasl, "a.example", "mx"), key(sasl, "b.example", "mx"));
    let verify = "smtp_tls_security_level = verify\n";
    assert_eq!(
        key(verify, "a.example", "mx"),
        "smtp\n*\na.example\n*\n192.0.2.1\n25"
    );
    assert_eq!(
        key("smtp_tls_security_level = encrypt\n", "a.example", "mx"),
        plain
    );
    let by_sender = format!("{sasl}smtp_sender_dependent_authentication = yes\n");
    assert!(key(&by_sender, "a.example", "mx").starts_with("smtp\npostern-fx@mail.example.test\n"));
}
