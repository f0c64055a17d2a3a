//! smtpd over real sockets: a running `postern postfix start-fg` with the tutorial's
//! settings, spoken to with a raw SMTP client, Python's smtplib and swaks. Expected replies
//! are those the real Postfix 3.7.11 gave for the same dialogue
//! (`compat-fixtures/smtpd/transcripts-postfix-3.7.11.txt`).

mod common;
use common::*;

/// The tutorial's main.cf edits (TUTORIAL.md step 3), with mynetworks pinned to 127.0.0.1
/// so that 127.0.0.2 is a foreign client, and a saslauthd socket the test serves.
fn tutorial_main(extra: &str) -> String {
    format!(
        "myhostname = master.planetnet.net\n\
         mydestination = $myhostname, localhost.$mydomain, $mydomain\n\
         smtpd_sasl_auth_enable = yes\n\
         smtpd_delay_reject = yes\n\
         smtpd_recipient_restrictions = permit_mynetworks permit_sasl_authenticated\n  permit_auth_destination reject\n\
         smtpd_client_restrictions = permit_mynetworks, permit_sasl_authenticated\n\
         broken_sasl_auth_clients = yes\n\
         smtpd_sasl_security_options = noanonymous\n\
         mynetworks = 127.0.0.1/32\n\
         alias_maps =\n\
         local_recipient_maps = proxy:unix:passwd.byname $alias_maps\n\
         {extra}"
    )
}

/// A saslauthd stand-in on a unix socket: the real wire protocol, one account
/// (`alice`/`secret`). The real Cyrus saslauthd is exercised by the authentication tests.
fn serve_saslauthd(dir: &std::path::Path) {
    use std::io::{Read, Write};
    let path = dir.join("mux");
    std::fs::write(
        dir.join("sasl/smtpd.conf"),
        format!(
            "pwcheck_method: saslauthd\nmech_list: plain login\nsaslauthd_path: {}\n",
            path.display()
        ),
    )
    .unwrap();
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    if nix::unistd::Uid::effective().is_root() {
        let _ = std::process::Command::new("chmod")
            .args(["777", path.to_str().unwrap()])
            .status();
    }
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut fields = Vec::new();
            for _ in 0..4 {
                let mut len = [0u8; 2];
                if s.read_exact(&mut len).is_err() {
                    break;
                }
                let mut b = vec![0u8; u16::from_be_bytes(len) as usize];
                let _ = s.read_exact(&mut b);
                fields.push(String::from_utf8_lossy(&b).to_string());
            }
            let ok = fields.len() == 4
                && fields[0] == "alice"
                && fields[1] == "secret"
                && fields[2] == "smtp";
            let reply: &[u8] = if ok {
                b"OK"
            } else {
                b"NO authentication failed"
            };
            let _ = s.write_all(&(reply.len() as u16).to_be_bytes());
            let _ = s.write_all(reply);
        }
    });
}

fn root_is_a_user() -> &'static str {
    "root"
}

#[test]
fn tutorial_ehlo_reply_line_for_line() {
    let inst = Instance::start_with(&tutorial_main(""), "", serve_saslauthd);
    let mut c = Smtp::connect(inst.port);
    assert_eq!(c.line(), "220 master.planetnet.net ESMTP Postfix");
    assert_eq!(
        c.cmd("ehlo localhost"),
        vec![
            "250-master.planetnet.net",
            "250-PIPELINING",
            "250-SIZE 10240000",
            "250-VRFY",
            "250-ETRN",
            "250-AUTH PLAIN LOGIN",
            "250-AUTH=PLAIN LOGIN",
            "250-ENHANCEDSTATUSCODES",
            "250-8BITMIME",
            "250-DSN",
            "250 CHUNKING",
        ]
    );
    assert_eq!(c.cmd("QUIT"), vec!["221 2.0.0 Bye"]);
}

/// {mynetworks client, foreign client, authenticated foreign client} × {local recipient,
/// unknown local user, remote recipient}, at compatibility level 0 (the guide's main.cf has
/// no compatibility_level line) and at 3.7.
#[test]
fn relay_matrix() {
    let local = format!("{}@master.planetnet.net", root_is_a_user());
    for (level, foreign_remote) in [
        (
            "",
            "554 5.7.1 <x@example.net>: Recipient address rejected: Access denied",
        ),
        // With compatibility_level >= 1 the default smtpd_relay_restrictions end in
        // defer_unauth_destination; the guide's recipient restrictions still reject first
        // at < 3.6, and from 3.6 on the relay restrictions run first.
        (
            "compatibility_level = 3.7\n",
            "454 4.7.1 <x@example.net>: Relay access denied",
        ),
    ] {
        let inst = Instance::start_with(&tutorial_main(level), "", serve_saslauthd);
        let unknown = "550 5.1.1 <nosuch@master.planetnet.net>: Recipient address rejected: User unknown in local recipient table";
        let cases = [
            ("127.0.0.1", false, local.as_str(), "250 2.1.5 Ok"),
            ("127.0.0.1", false, "nosuch@master.planetnet.net", unknown),
            ("127.0.0.1", false, "x@example.net", "250 2.1.5 Ok"),
            ("127.0.0.2", false, local.as_str(), "250 2.1.5 Ok"),
            ("127.0.0.2", false, "nosuch@master.planetnet.net", unknown),
            ("127.0.0.2", false, "x@example.net", foreign_remote),
            ("127.0.0.2", true, local.as_str(), "250 2.1.5 Ok"),
            ("127.0.0.2", true, "nosuch@master.planetnet.net", unknown),
            ("127.0.0.2", true, "x@example.net", "250 2.1.5 Ok"),
        ];
        for (src, auth, rcpt, want) in cases {
            let mut c = Smtp::connect_from(src, inst.port);
            c.line();
            c.cmd("EHLO client.example");
            if auth {
                // AUTH PLAIN alice/secret
                assert_eq!(
                    c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
                    vec!["235 2.7.0 Authentication successful"]
                );
            }
            assert_eq!(
                c.cmd("MAIL FROM:<sender@example.org>"),
                vec!["250 2.1.0 Ok"]
            );
            assert_eq!(
                c.cmd(&format!("RCPT TO:<{rcpt}>")),
                vec![want.to_string()],
                "{level:?} from {src} auth={auth} to {rcpt}"
            );
            c.cmd("QUIT");
        }
        let log = inst.wait_log("sasl_username=alice");
        assert!(log.contains("connect from unknown[127.0.0.2]"), "{log}");
        assert!(
            log.contains("reject: RCPT from unknown[127.0.0.2]: "),
            "{log}"
        );
        assert!(
            log.contains("client=unknown[127.0.0.2], sasl_method=PLAIN, sasl_username=alice"),
            "{log}"
        );
    }
}

#[test]
fn auth_replies() {
    let inst = Instance::start_with(&tutorial_main(""), "", serve_saslauthd);
    let mut c = Smtp::connect_from("127.0.0.2", inst.port);
    c.line();
    assert_eq!(
        c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
        vec!["503 5.5.1 Error: send EHLO first"]
    );
    c.cmd("EHLO x");
    assert_eq!(
        c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n"),
        vec!["535 5.7.8 Error: authentication failed: authentication failure"]
    );
    assert_eq!(
        c.cmd("AUTH CRAM-MD5"),
        vec!["535 5.7.8 Error: authentication failed: no mechanism available"]
    );
    assert_eq!(c.cmd("AUTH LOGIN"), vec!["334 VXNlcm5hbWU6"]);
    assert_eq!(c.cmd("*"), vec!["501 5.7.0 Authentication aborted"]);
    assert_eq!(c.cmd("AUTH LOGIN"), vec!["334 VXNlcm5hbWU6"]);
    assert_eq!(c.cmd("YWxpY2U="), vec!["334 UGFzc3dvcmQ6"]);
    assert_eq!(
        c.cmd("c2VjcmV0"),
        vec!["235 2.7.0 Authentication successful"]
    );
    assert_eq!(
        c.cmd("AUTH LOGIN"),
        vec!["503 5.5.1 Error: already authenticated"]
    );
    c.cmd("QUIT");
    let log = inst.log();
    assert!(
        log.contains(
            "warning: unknown[127.0.0.2]: SASL PLAIN authentication failed: authentication failure"
        ),
        "{log}"
    );
    assert!(
        !log.contains("secret") && !log.contains("wrong"),
        "password in log: {log}"
    );
}

/// Replies recorded from the real Postfix 3.7.11 for the same commands.
#[test]
fn command_replies_match_postfix() {
    // More errors than the default limits allow in one session: raise them for the script.
    let inst = Instance::start(
        &tutorial_main("smtpd_hard_error_limit = 100\nsmtpd_soft_error_limit = 100\n"),
        "",
    );
    let mut c = Smtp::connect(inst.port);
    c.line();
    let script: &[(&str, &str)] = &[
        ("HELO x", "250 master.planetnet.net"),
        ("NOOP", "250 2.0.0 Ok"),
        ("RSET", "250 2.0.0 Ok"),
        ("VRFY root", "252 2.0.0 root"),
        (
            "VRFY nosuchuser",
            "550 5.1.1 <nosuchuser>: Recipient address rejected: User unknown in local recipient table",
        ),
        ("VRFY", "501 5.5.4 Syntax: VRFY address"),
        ("VRFY <>", "501 5.1.3 Bad recipient address syntax"),
        ("HELP", "500 5.5.2 Error: command not recognized"),
        ("EXPN root", "500 5.5.2 Error: command not recognized"),
        ("ETRN", "500 Syntax: ETRN domain"),
        ("ETRN example.com", "459 <example.com>: service unavailable"),
        (
            "RCPT TO:<root@master.planetnet.net>",
            "503 5.5.1 Error: need MAIL command",
        ),
        ("DATA", "503 5.5.1 Error: need RCPT command"),
        ("STARTTLS", "502 5.5.1 Error: command not implemented"),
        ("MAIL", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        ("MAIL TO:<a@b.c>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        (
            "MAIL FROM:<a@b.c> FOO=bar",
            "555 5.5.4 Unsupported option: FOO=bar",
        ),
        (
            "MAIL FROM:<a@b.c> SIZE=abc",
            "501 5.5.4 Bad message size syntax",
        ),
        ("MAIL FROM:<a@b.c", "501 5.1.7 Bad sender address syntax"),
        ("MAIL FROM:<a b@c>", "501 5.1.7 Bad sender address syntax"),
        (
            "MAIL FROM:<a@b.c> BODY=9BIT",
            "555 5.5.4 Unsupported option: BODY=9BIT",
        ),
        (
            "MAIL FROM:<a@b.c> SIZE=99999999",
            "552 5.3.4 Message size exceeds fixed limit",
        ),
        ("MAIL FROM:<a@b.c> SIZE=100", "250 2.1.0 Ok"),
        ("MAIL FROM:<a@b.c>", "503 5.5.1 Error: nested MAIL command"),
        (
            "RCPT TO:<bad address>",
            "501 5.1.3 Bad recipient address syntax",
        ),
        ("RCPT TO:<>", "501 5.1.3 Bad recipient address syntax"),
        ("RCPT TO:root", "250 2.1.5 Ok"),
        ("RCPT TO:<root@localhost>", "250 2.1.5 Ok"),
        ("RCPT TO:<root@[127.0.0.1]>", "250 2.1.5 Ok"),
        ("RCPT TO:<postmaster@planetnet.net>", "250 2.1.5 Ok"),
        (
            "RCPT TO:<abuse@planetnet.net>",
            "550 5.1.1 <abuse@planetnet.net>: Recipient address rejected: User unknown in local recipient table",
        ),
        (
            "RCPT TO:<root+ext@planetnet.net>",
            "550 5.1.1 <root+ext@planetnet.net>: Recipient address rejected: User unknown in local recipient table",
        ),
        ("RSET x", "501 5.5.4 Syntax: RSET"),
        ("FOO", "500 5.5.2 Error: command not recognized"),
        ("QUIT", "221 2.0.0 Bye"),
    ];
    for (cmd, want) in script {
        assert_eq!(c.cmd(cmd), vec![want.to_string()], "{cmd}");
    }
    let log = inst.wait_log("disconnect from localhost[127.0.0.1] helo=1");
    assert!(log.contains("NOQUEUE: reject: VRFY from localhost[127.0.0.1]: 550 5.1.1 <nosuchuser>: Recipient address rejected: User unknown in local recipient table; to=<nosuchuser> proto=SMTP helo=<x>"), "{log}");
    // Counted as Postfix counts them (command table order, ok/total where some failed).
    assert!(
        log.contains("disconnect from localhost[127.0.0.1] helo=1 starttls=0/1 mail=1/10 rcpt=4/9 data=0/1 rset=1/2 noop=1 vrfy=1/4 etrn=0/2 quit=1 unknown=0/3 commands=10/35"),
        "{log}"
    );
}

#[test]
fn pipelined_session() {
    let inst = Instance::start(&tutorial_main(""), "");
    let mut c = Smtp::connect(inst.port);
    c.line();
    c.send("EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<root@planetnet.net>\r\nRCPT TO:<nosuch@planetnet.net>\r\nDATA\r\n");
    assert_eq!(c.reply().len(), 11);
    assert_eq!(c.line(), "250 2.1.0 Ok");
    assert_eq!(c.line(), "250 2.1.5 Ok");
    assert_eq!(
        c.line(),
        "550 5.1.1 <nosuch@planetnet.net>: Recipient address rejected: User unknown in local recipient table"
    );
    assert_eq!(c.line(), "354 End data with <CR><LF>.<CR><LF>");
    c.send("Subject: pipelined\r\n\r\nhi\r\n..dot\r\n.\r\nQUIT\r\n");
    let queued = c.line();
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    assert_eq!(c.line(), "221 2.0.0 Bye");
    // The queue file holds the dot-unstuffed message and both envelope addresses.
    let id = queued.rsplit(' ').next().unwrap().to_string();
    let path = inst.dir.path().join("spool/incoming").join(&id);
    let q = postern::queue::file::read_queue_file(&path).expect("queue file");
    assert_eq!(q.sender, "a@b.c");
    assert_eq!(q.recipients.len(), 1);
    assert_eq!(q.recipients[0].address, "root@planetnet.net");
    let body = String::from_utf8_lossy(&q.content).to_string();
    assert!(
        body.contains("\n.dot\n") && body.contains("Subject: pipelined"),
        "{body}"
    );
    assert!(
        body.starts_with("Received: from c (localhost [127.0.0.1])"),
        "{body}"
    );
}

#[test]
fn bdat_and_size_limits() {
    let inst = Instance::start(&tutorial_main("message_size_limit = 2000\n"), "");
    let mut c = Smtp::connect(inst.port);
    c.line();
    let ehlo = c.cmd("EHLO c");
    assert!(ehlo.contains(&"250-SIZE 2000".to_string()), "{ehlo:?}");
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.c> SIZE=2001"),
        vec!["552 5.3.4 Message size exceeds fixed limit"]
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.c>"),
        vec!["552 5.3.4 Message size exceeds fixed limit"],
        "Postfix keeps the refused SIZE"
    );
    assert_eq!(c.cmd("RSET"), vec!["250 2.0.0 Ok"]);
    assert_eq!(c.cmd("MAIL FROM:<a@b.c>"), vec!["250 2.1.0 Ok"]);
    assert_eq!(c.cmd("RCPT TO:<root@planetnet.net>"), vec!["250 2.1.5 Ok"]);
    assert_eq!(c.cmd("DATA"), vec!["354 End data with <CR><LF>.<CR><LF>"]);
    let big = "x".repeat(100);
    for _ in 0..40 {
        c.send(&format!("{big}\r\n"));
    }
    assert_eq!(c.cmd("."), vec!["552 5.3.4 Error: message file too big"]);
    assert_eq!(c.cmd("MAIL FROM:<a@b.c>"), vec!["250 2.1.0 Ok"]);
    assert_eq!(c.cmd("RCPT TO:<root@planetnet.net>"), vec!["250 2.1.5 Ok"]);
    c.send("BDAT 5\r\nab\r\nc");
    assert_eq!(c.line(), "250 2.0.0 Ok: 5 bytes");
    let last = c.cmd("BDAT 0 LAST");
    assert!(
        last[0].starts_with("250 2.0.0 Ok: 7 bytes queued as "),
        "{last:?}"
    );
    assert_eq!(c.cmd("DATA"), vec!["503 5.5.1 Error: need RCPT command"]);
    c.cmd("QUIT");
}

#[test]
fn long_lines_and_garbage() {
    let inst = Instance::start(&tutorial_main(""), "");
    let mut c = Smtp::connect(inst.port);
    c.line();
    // A 3000-byte command is cut at line_length_limit; the rest is discarded (one reply).
    c.send(&format!("NOOP {}\r\n", "x".repeat(3000)));
    assert_eq!(c.line(), "250 2.0.0 Ok");
    assert_eq!(c.cmd("NOOP"), vec!["250 2.0.0 Ok"]);
    // 10 MB without a newline, then a newline: still one reply, the session goes on.
    let chunk = "y".repeat(1 << 20);
    for _ in 0..10 {
        c.send(&chunk);
    }
    c.send("\r\n");
    assert_eq!(c.line(), "500 5.5.2 Error: command not recognized");
    c.send("NO\0OP\r\n");
    assert_eq!(c.line(), "500 5.5.2 Error: command not recognized");
    assert_eq!(c.cmd("QUIT"), vec!["221 2.0.0 Bye"]);
}

#[test]
fn hard_error_limit_disconnects() {
    let inst = Instance::start(
        &tutorial_main("smtpd_hard_error_limit = 3\nsmtpd_soft_error_limit = 100\n"),
        "",
    );
    let mut c = Smtp::connect(inst.port);
    c.line();
    for _ in 0..3 {
        assert_eq!(
            c.cmd("FOO"),
            vec!["500 5.5.2 Error: command not recognized"]
        );
    }
    assert_eq!(
        c.cmd("NOOP"),
        vec!["421 4.7.0 master.planetnet.net Error: too many errors"]
    );
    // As Postfix: the limit is checked before the next command is read.
    let log = inst.wait_log("too many errors after FOO from localhost[127.0.0.1]");
    assert!(
        log.contains("too many errors after FOO from localhost[127.0.0.1]"),
        "{log}"
    );
}

#[test]
fn access_maps_of_each_type() {
    let inst = Instance::start(&tutorial_main(""), "");
    let d = inst.dir.path().display().to_string();
    std::fs::write(
        inst.dir.path().join("senders"),
        "spammer@example.org REJECT no spam please\nexample.net 550 5.7.0 go away\n",
    )
    .unwrap();
    std::fs::write(
        inst.dir.path().join("rcpt.regexp"),
        "/^blocked@/ REJECT\n/^tempfail@/ DEFER try later\n",
    )
    .unwrap();
    std::fs::write(
        inst.dir.path().join("rcpt.pcre"),
        "/^(?i)PCRE@/ 554 pcre says no\n",
    )
    .unwrap();
    std::fs::write(
        inst.dir.path().join("clients.cidr"),
        "127.0.0.2/32 REJECT you are blocked\n",
    )
    .unwrap();
    let main = format!(
        "myhostname = master.planetnet.net\nmydestination = $myhostname, localhost\nmynetworks = 127.0.0.1/32\nlocal_recipient_maps =\n\
         smtpd_client_restrictions = check_client_access cidr:{d}/clients.cidr\n\
         smtpd_sender_restrictions = check_sender_access texthash:{d}/senders\n\
         smtpd_recipient_restrictions = check_recipient_access regexp:{d}/rcpt.regexp, check_recipient_access pcre:{d}/rcpt.pcre, check_recipient_access inline:{{ok@master.planetnet.net=OK, no@master.planetnet.net=REJECT}}, permit_mynetworks, reject\n"
    );
    std::fs::write(
        inst.config_dir().join("main.cf"),
        format!(
            "{}\n{main}",
            std::fs::read_to_string(inst.config_dir().join("main.cf")).unwrap()
        ),
    )
    .unwrap();
    drop(inst);
    // Restart with the new main.cf in a fresh instance using the same files.
    let inst = Instance::start(&main, "");
    for (f, body) in [
        (
            "senders",
            "spammer@example.org REJECT no spam please\nexample.net 550 5.7.0 go away\n",
        ),
        (
            "rcpt.regexp",
            "/^blocked@/ REJECT\n/^tempfail@/ DEFER try later\n",
        ),
        ("rcpt.pcre", "/^(?i)PCRE@/ 554 pcre says no\n"),
        ("clients.cidr", "127.0.0.2/32 REJECT you are blocked\n"),
    ] {
        std::fs::create_dir_all(std::path::Path::new(&d)).unwrap();
        std::fs::write(std::path::Path::new(&d).join(f), body).unwrap();
    }
    let mut c = Smtp::connect(inst.port);
    c.line();
    c.cmd("EHLO c");
    assert_eq!(
        c.cmd("MAIL FROM:<spammer@example.org>"),
        vec!["250 2.1.0 Ok"]
    );
    assert_eq!(
        c.cmd("RCPT TO:<root@master.planetnet.net>"),
        vec!["554 5.7.1 <spammer@example.org>: Sender address rejected: no spam please"]
    );
    c.cmd("RSET");
    c.cmd("MAIL FROM:<someone@sub.example.net>");
    assert_eq!(
        c.cmd("RCPT TO:<root@master.planetnet.net>"),
        vec!["550 5.7.0 <someone@sub.example.net>: Sender address rejected: go away"]
    );
    c.cmd("RSET");
    c.cmd("MAIL FROM:<fine@example.com>");
    assert_eq!(
        c.cmd("RCPT TO:<blocked@master.planetnet.net>"),
        vec!["554 5.7.1 <blocked@master.planetnet.net>: Recipient address rejected: Access denied"]
    );
    assert_eq!(
        c.cmd("RCPT TO:<tempfail@master.planetnet.net>"),
        vec!["450 4.7.1 <tempfail@master.planetnet.net>: Recipient address rejected: try later"]
    );
    assert_eq!(
        c.cmd("RCPT TO:<pcre@master.planetnet.net>"),
        vec!["554 5.7.1 <pcre@master.planetnet.net>: Recipient address rejected: pcre says no"]
    );
    assert_eq!(
        c.cmd("RCPT TO:<no@master.planetnet.net>"),
        vec!["554 5.7.1 <no@master.planetnet.net>: Recipient address rejected: Access denied"]
    );
    assert_eq!(
        c.cmd("RCPT TO:<ok@master.planetnet.net>"),
        vec!["250 2.1.5 Ok"]
    );
    c.cmd("QUIT");
    let mut c = Smtp::connect_from("127.0.0.2", inst.port);
    c.line();
    c.cmd("EHLO c");
    c.cmd("MAIL FROM:<fine@example.com>");
    assert_eq!(
        c.cmd("RCPT TO:<ok@master.planetnet.net>"),
        vec!["554 5.7.1 <unknown[127.0.0.2]>: Client host rejected: you are blocked"]
    );
    c.cmd("QUIT");
}

#[test]
fn starttls_with_smtplib_and_encrypt_level() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(tmp.path(), "master.planetnet.net");
    if nix::unistd::Uid::effective().is_root() {
        let _ = std::process::Command::new("chmod")
            .args(["-R", "755", tmp.path().to_str().unwrap()])
            .status();
        let _ = std::process::Command::new("chmod")
            .args(["644", &key])
            .status();
    }
    let inst = Instance::start(
        &tutorial_main(&format!(
            "smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\nsmtpd_tls_security_level = may\n"
        )),
        "",
    );
    let _ = &inst;
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
s.ehlo('client.example')
assert s.has_extn('starttls'), s.esmtp_features
code, msg = s.starttls(context=ctx)
print(code, msg.decode())
s.ehlo('client.example')
assert not s.has_extn('starttls')
print('tls', s.sock.version())
s.sendmail('a@example.org', ['root@master.planetnet.net'], 'Subject: tls\r\n\r\nover tls\r\n')
s.quit()
print('sent')
"#,
        port = inst.port
    );
    let (out, err, rc) = python(&script);
    assert_eq!(rc, 0, "{out}{err}\n{}", inst.log());
    assert!(out.contains("220 2.0.0 Ready to start TLS"), "{out}");
    assert!(out.contains("tls TLSv1.3") && out.contains("sent"), "{out}");
    let log = inst.log();
    assert!(
        log.contains("TLS connection established from localhost[127.0.0.1]: TLSv1.3"),
        "{log}"
    );
    // The key is world-readable (mode 0644 when root): the real Postfix 3.7.11 and Dovecot
    // 2.3.19 use such a key without a word (compat-fixtures/tls/key-mode-0644.txt), and so
    // does Postern: no log line names it.
    let recorded = std::fs::read_to_string("compat-fixtures/tls/key-mode-0644.txt").unwrap();
    assert!(
        recorded
            .lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| l.ends_with("\tnone")),
        "{recorded}"
    );
    assert!(!log.lines().any(|l| l.contains(&key)), "{log}");
}

#[test]
fn wrapper_mode_starts_tls_before_the_banner() {
    // master.cf's SMTPS service (`-o smtpd_tls_wrappermode=yes`): TLS from the first byte,
    // then the banner, EHLO without STARTTLS, mail accepted. A client that speaks plain
    // SMTP there is dropped as the real Postfix 3.7.11 drops it (seen with
    // scripts/tls-scan: `SSL_accept error from localhost[127.0.0.1]: -1`, then `lost
    // connection after CONNECT`). Until this session Postern ignored the parameter and
    // spoke plain SMTP on such a port.
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(tmp.path(), "master.planetnet.net");
    if nix::unistd::Uid::effective().is_root() {
        let _ = std::process::Command::new("chmod")
            .args(["-R", "755", tmp.path().to_str().unwrap()])
            .status();
        let _ = std::process::Command::new("chmod")
            .args(["644", &key])
            .status();
    }
    let smtps = free_port();
    let inst = Instance::start(
        &tutorial_main(&format!(
            "smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n"
        )),
        &format!("127.0.0.1:{smtps} inet n - n - - smtpd\n  -o smtpd_tls_wrappermode=yes\n"),
    );
    wait_port(smtps);
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP_SSL('127.0.0.1', {smtps}, timeout=20, context=ctx)
code, msg = s.ehlo('client.example')
print(code, 'starttls' if s.has_extn('starttls') else 'no-starttls')
print('tls', s.sock.version())
s.sendmail('a@example.org', ['root@master.planetnet.net'], 'Subject: smtps\r\n\r\nover smtps\r\n')
s.quit()
print('sent')
"#
    );
    let (out, err, rc) = python(&script);
    assert_eq!(rc, 0, "{out}{err}\n{}", inst.log());
    assert!(out.contains("250 no-starttls"), "{out}");
    assert!(out.contains("tls TLSv1.3") && out.contains("sent"), "{out}");
    // Plain SMTP on the wrapper port: no banner, the handshake fails.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", smtps)).unwrap();
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    std::io::Write::write_all(&mut plain, b"EHLO client.example\r\n").unwrap();
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut got);
    assert!(
        !got.starts_with(b"220"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let log = inst.wait_log_until(std::time::Duration::from_secs(20), |l| {
        l.contains("lost connection after CONNECT from localhost[127.0.0.1]")
    });
    assert!(
        log.contains("Anonymous TLS connection established from localhost[127.0.0.1]: TLSv1.3"),
        "{log}"
    );
    assert!(
        log.contains("SSL_accept error from localhost[127.0.0.1]: -1"),
        "{log}"
    );
}

#[test]
fn encrypt_level_requires_starttls() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(tmp.path(), "master.planetnet.net");
    if nix::unistd::Uid::effective().is_root() {
        let _ = std::process::Command::new("chmod")
            .args(["-R", "755", tmp.path().to_str().unwrap()])
            .status();
        let _ = std::process::Command::new("chmod")
            .args(["644", &key])
            .status();
    }
    // The submission-style listener: -o smtpd_tls_security_level=encrypt on this service.
    let port2 = free_port();
    let inst = Instance::start(
        &tutorial_main(&format!(
            "smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n"
        )),
        &format!(
            "127.0.0.1:{port2} inet n - n - - smtpd -o smtpd_tls_security_level=encrypt -o smtpd_tls_auth_only=yes\n"
        ),
    );
    wait_port(port2);
    let mut c = Smtp::connect(port2);
    c.line();
    let ehlo = c.cmd("EHLO c");
    assert!(ehlo.contains(&"250-STARTTLS".to_string()), "{ehlo:?}");
    assert!(
        !ehlo.iter().any(|l| l.contains("AUTH")),
        "tls_auth_only hides AUTH: {ehlo:?}"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.c>"),
        vec!["530 5.7.0 Must issue a STARTTLS command first"]
    );
    c.cmd("QUIT");
    // The main listener (no TLS level) offers no STARTTLS.
    let mut c = Smtp::connect(inst.port);
    c.line();
    assert!(!c.cmd("EHLO c").iter().any(|l| l.contains("STARTTLS")));
}

#[test]
fn smtplib_and_swaks_deliver_to_the_queue() {
    let inst = Instance::start(&tutorial_main(""), "");
    let script = format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
r = s.sendmail('a@example.org', ['root@master.planetnet.net', 'nosuch@master.planetnet.net'], 'Subject: smtplib\r\n\r\nh\u00e9llo 8bit\r\n'.encode('utf-8'))
print(r)
s.quit()
"#,
        port = inst.port
    );
    let (out, err, rc) = python(&script);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(
        out.contains("nosuch@master.planetnet.net': (550, b'5.1.1"),
        "{out}"
    );
    let swaks = std::process::Command::new("swaks")
        .args([
            "--server",
            &format!("127.0.0.1:{}", inst.port),
            "--from",
            "a@example.org",
            "--to",
            "root@master.planetnet.net",
            "--helo",
            "swaks.example",
            "--body",
            "via swaks",
        ])
        .output();
    match swaks {
        Ok(o) => {
            let t = String::from_utf8_lossy(&o.stdout).to_string();
            assert!(t.contains("<-  250 2.0.0 Ok: queued as "), "{t}");
        }
        Err(e) => panic!("swaks is required (apt-get install swaks): {e}"),
    }
    let n = std::fs::read_dir(inst.dir.path().join("spool/incoming"))
        .unwrap()
        .count();
    assert_eq!(n, 2, "two queue files");
}

/// A message acknowledged with 250 survives a SIGKILL of the server right after.
#[test]
fn queue_file_survives_sigkill_after_250() {
    let mut inst = Instance::start(&tutorial_main(""), "");
    let mut c = Smtp::connect(inst.port);
    c.line();
    c.cmd("HELO c");
    c.cmd("MAIL FROM:<a@b.c>");
    c.cmd("RCPT TO:<root@planetnet.net>");
    c.cmd("DATA");
    c.send("Subject: durable\r\n\r\nmust survive\r\n.\r\n");
    let reply = c.line();
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    inst.kill9();
    let id = reply.rsplit(' ').next().unwrap();
    let path = inst.dir.path().join("spool/incoming").join(id);
    let q =
        postern::queue::file::read_queue_file(&path).expect("complete queue file after SIGKILL");
    assert!(String::from_utf8_lossy(&q.content).contains("must survive"));
    // Restarted, the server serves again with the queue intact.
    inst.spawn();
    let mut c = Smtp::connect(inst.port);
    assert_eq!(c.line(), "220 master.planetnet.net ESMTP Postfix");
    assert!(postern::queue::file::read_queue_file(&path).is_ok());
}

/// RFC 2920 violations: commands sent ahead of time without EHLO, or after a command that
/// must end a group, are logged as Postfix logs them, and `reject_unauth_pipelining`
/// refuses them.
#[test]
fn unauthorized_pipelining() {
    let inst = Instance::start(
        &tutorial_main("smtpd_data_restrictions = reject_unauth_pipelining\n"),
        "",
    );
    let mut c = Smtp::connect(inst.port);
    c.line();
    c.send("HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<root@planetnet.net>\r\nDATA\r\n");
    assert_eq!(c.line(), "250 master.planetnet.net");
    assert_eq!(c.line(), "250 2.1.0 Ok");
    assert_eq!(c.line(), "250 2.1.5 Ok");
    assert_eq!(
        c.line(),
        "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining"
    );
    c.cmd("QUIT");
    let log = inst.wait_log("improper command pipelining");
    assert!(
        log.contains("improper command pipelining after HELO from localhost[127.0.0.1]: MAIL FROM:<a@b.c>\\r\\nRCPT TO:<root@planetnet.net>\\r\\nDATA\\r\\n"),
        "{log}"
    );
    // With EHLO and proper pipelining, DATA passes.
    let mut c = Smtp::connect(inst.port);
    c.line();
    c.cmd("EHLO c");
    c.send("MAIL FROM:<a@b.c>\r\nRCPT TO:<root@planetnet.net>\r\nDATA\r\n");
    assert_eq!(c.line(), "250 2.1.0 Ok");
    assert_eq!(c.line(), "250 2.1.5 Ok");
    assert_eq!(c.line(), "354 End data with <CR><LF>.<CR><LF>");
}

/// lettre (an MUA-side client) submits through Postern, with AUTH PLAIN from a foreign
/// address, as a roaming user of the guide would.
#[test]
fn lettre_submits_with_auth() {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::{Message, SmtpTransport, Transport};
    let inst = Instance::start_with(&tutorial_main(""), "", serve_saslauthd);
    let email = Message::builder()
        .from("Alice <alice@example.org>".parse().unwrap())
        .to("Someone <someone@example.net>".parse().unwrap())
        .subject("via lettre")
        .body(String::from("relayed for an authenticated user"))
        .unwrap();
    let mailer = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(inst.port)
        .credentials(Credentials::new("alice".into(), "secret".into()))
        .authentication(vec![Mechanism::Plain])
        .build();
    let resp = mailer.send(&email).expect("lettre send");
    let text = resp.message().collect::<Vec<_>>().join(" ");
    assert!(text.starts_with("2.0.0 Ok: queued as "), "{text}");
    // A wrong password is refused with Postfix's reply.
    let bad = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(inst.port)
        .credentials(Credentials::new("alice".into(), "wrong".into()))
        .authentication(vec![Mechanism::Login])
        .build();
    let err = bad.send(&email).unwrap_err().to_string();
    assert!(err.contains("authentication failed"), "{err}");
}

/// A client that vanishes in the middle of DATA leaves nothing in the queue; bare LF line
/// ends are accepted (smtpd_forbid_bare_newline = no) and stored as lines.
#[test]
fn lost_connection_mid_data_and_bare_lf() {
    let inst = Instance::start(&tutorial_main(""), "");
    {
        let mut c = Smtp::connect(inst.port);
        c.line();
        c.cmd("HELO c");
        c.cmd("MAIL FROM:<a@b.c>");
        c.cmd("RCPT TO:<root@planetnet.net>");
        c.cmd("DATA");
        c.send("Subject: half\r\n\r\nnever finished\r\n");
    }
    let log = inst.wait_log("lost connection after DATA from localhost[127.0.0.1]");
    assert!(
        log.contains("lost connection after DATA from localhost[127.0.0.1]"),
        "{log}"
    );
    let incoming = inst.dir.path().join("spool/incoming");
    let files = || std::fs::read_dir(&incoming).map(|d| d.count()).unwrap_or(0);
    assert_eq!(files(), 0, "a half message must not be queued");
    let mut c = Smtp::connect(inst.port);
    c.line();
    c.cmd("HELO c");
    c.cmd("MAIL FROM:<a@b.c>");
    c.cmd("RCPT TO:<root@planetnet.net>");
    c.cmd("DATA");
    c.send("Subject: lf\n\nbare lf line\n.\n");
    let r = c.line();
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    let id = r.rsplit(' ').next().unwrap();
    let q = postern::queue::file::read_queue_file(&incoming.join(id)).unwrap();
    assert!(String::from_utf8_lossy(&q.content).contains("\nbare lf line\n"));
}

#[test]
fn idle_client_times_out() {
    let inst = Instance::start(&tutorial_main("smtpd_timeout = 2s\n"), "");
    let mut c = Smtp::connect(inst.port);
    c.line();
    c.cmd("HELO c");
    let t0 = std::time::Instant::now();
    assert_eq!(
        c.line(),
        "421 4.4.2 master.planetnet.net Error: timeout exceeded"
    );
    assert!(t0.elapsed() >= std::time::Duration::from_secs(1));
    let log = inst.wait_log("timeout after HELO from localhost[127.0.0.1]");
    assert!(
        log.contains("timeout after HELO from localhost[127.0.0.1]"),
        "{log}"
    );
}

#[test]
fn connection_count_limit_per_client() {
    let inst = Instance::start(
        &tutorial_main("smtpd_client_connection_count_limit = 2\n"),
        "",
    );
    let mut a = Smtp::connect_from("127.0.0.2", inst.port);
    assert!(a.line().starts_with("220 "));
    let mut b = Smtp::connect_from("127.0.0.2", inst.port);
    assert!(b.line().starts_with("220 "));
    let mut c = Smtp::connect_from("127.0.0.2", inst.port);
    assert_eq!(
        c.line(),
        "421 4.7.0 master.planetnet.net Error: too many connections from 127.0.0.2"
    );
    // Clients in mynetworks are exempt.
    let mut d = Smtp::connect(inst.port);
    let mut e = Smtp::connect(inst.port);
    let mut f = Smtp::connect(inst.port);
    for x in [&mut d, &mut e, &mut f] {
        assert!(x.line().starts_with("220 "));
    }
    drop((a, b));
}

/// `smtpd_sasl_type = dovecot`: Postern's smtpd asks a Dovecot auth socket (here Postern's
/// own Dovecot-protocol server over a passwd-file) for the mechanisms and the check.
#[test]
fn dovecot_sasl_type() {
    use postern::auth::dovecot::DovecotAuth;
    use postern::auth::dovecot_proto;
    use postern::config::dovecot::DovecotConf;
    let tmp = tempfile::tempdir().unwrap();
    let users = tmp.path().join("users");
    std::fs::write(&users, "alice:{PLAIN}secret:1000:1000::/home/alice::\n").unwrap();
    let conf = DovecotConf::from_str(
        &format!(
            "auth_mechanisms = plain login\npassdb {{\n  driver = passwd-file\n  args = {}\n}}\n",
            users.display()
        ),
        std::path::Path::new("dovecot.conf"),
    )
    .unwrap();
    let mut auth = DovecotAuth::from_conf(&conf).unwrap();
    auth.failure_delay = std::time::Duration::from_millis(50);
    let socket = tmp.path().join("auth");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(async { dovecot_proto::bind(&socket, 0o666) })
        .unwrap();
    rt.spawn(dovecot_proto::serve(listener, std::sync::Arc::new(auth)));
    if nix::unistd::Uid::effective().is_root() {
        let _ = std::process::Command::new("chmod")
            .args(["755", tmp.path().to_str().unwrap()])
            .status();
    }
    let inst = Instance::start(
        &tutorial_main(&format!(
            "smtpd_sasl_type = dovecot\nsmtpd_sasl_path = {}\n",
            socket.display()
        )),
        "",
    );
    let mut c = Smtp::connect_from("127.0.0.2", inst.port);
    c.line();
    let ehlo = c.cmd("EHLO x");
    assert!(
        ehlo.contains(&"250-AUTH PLAIN LOGIN".to_string()),
        "{ehlo:?}"
    );
    assert_eq!(
        c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n"),
        vec!["535 5.7.8 Error: authentication failed: authentication failure"]
    );
    assert_eq!(
        c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
        vec!["235 2.7.0 Authentication successful"]
    );
    c.cmd("MAIL FROM:<alice@example.org>");
    assert_eq!(c.cmd("RCPT TO:<x@example.net>"), vec!["250 2.1.5 Ok"]);
    c.cmd("QUIT");
}

/// Access actions HOLD (message kept in the hold queue) and DISCARD (claimed, not kept).
#[test]
fn hold_and_discard_actions() {
    let inst = Instance::start(
        &tutorial_main(
            "smtpd_recipient_restrictions = check_recipient_access inline:{held@planetnet.net=HOLD, gone@planetnet.net=DISCARD}, permit_mynetworks, reject\nlocal_recipient_maps =\n",
        ),
        "",
    );
    let send = |rcpt: &str| -> String {
        let mut c = Smtp::connect(inst.port);
        c.line();
        c.cmd("HELO c");
        c.cmd("MAIL FROM:<a@b.c>");
        assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")), vec!["250 2.1.5 Ok"]);
        c.cmd("DATA");
        c.send("Subject: action\r\n\r\nbody\r\n.\r\n");
        let r = c.line();
        c.cmd("QUIT");
        assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
        r.rsplit(' ').next().unwrap().to_string()
    };
    let held = send("held@planetnet.net");
    assert!(inst.dir.path().join("spool/hold").join(&held).exists());
    assert!(!inst.dir.path().join("spool/incoming").join(&held).exists());
    let gone = send("gone@planetnet.net");
    for q in ["incoming", "hold", "active"] {
        assert!(!inst.dir.path().join("spool").join(q).join(&gone).exists());
    }
    let log = inst.wait_log("triggers HOLD action");
    assert!(
        log.contains(&format!("{held}: hold: RCPT from localhost[127.0.0.1]: <held@planetnet.net>: Recipient address triggers HOLD action; from=<a@b.c> to=<held@planetnet.net> proto=SMTP helo=<c>")),
        "{log}"
    );
    let log = inst.wait_log("triggers DISCARD action");
    assert!(log.contains(": discard: RCPT from localhost[127.0.0.1]: <gone@planetnet.net>: Recipient address triggers DISCARD action;"), "{log}");
}
