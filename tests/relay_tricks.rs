//! The relay-trick matrix (issue 17, item 5): from a client outside `mynetworks`
//! (127.0.0.2), every address trick (`user%other@host`, bang paths, `@route:` source
//! routes, quoted local parts holding `@` or `%`, address literals, trailing dots, case,
//! `<>`, IDN, RFC 822 comments hiding a foreign address, backslash-escaped `@` and `%`,
//! `Name <addr>`, two addresses) sent as RCPT TO to a Postern started with `postfix start` and
//! compat-fixtures/relay/main.cf, answered as the real Postfix 3.7.11 answered the same
//! client with the same main.cf (compat-fixtures/relay/postfix-3.7.txt,
//! scripts/regen-relay-fixtures; both sides run scripts/relay-matrix).

mod common;
use common::*;

#[test]
fn relay_tricks_are_answered_as_postfix_answers_them() {
    let fx = repo_root().join("compat-fixtures/relay");
    let main = std::fs::read_to_string(fx.join("main.cf")).expect("main.cf");
    let want = std::fs::read_to_string(fx.join("postfix-3.7.txt")).expect("fixture");
    let inst = Instance::start(&main, "");
    let (out, err, code) = {
        let o = std::process::Command::new(repo_root().join("scripts/relay-matrix"))
            .arg(inst.port.to_string())
            .arg("127.0.0.2")
            .output()
            .expect("relay-matrix");
        (
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
            o.status.code(),
        )
    };
    assert_eq!(code, Some(0), "{err}");
    let mut diffs = Vec::new();
    for (w, g) in want.lines().zip(out.lines()) {
        if w != g {
            diffs.push(format!("Postfix: {w}\nPostern: {g}"));
        }
    }
    assert_eq!(want.lines().count(), out.lines().count(), "{out}");
    assert!(diffs.is_empty(), "{}\n{}", diffs.join("\n"), inst.log());
    // Nothing was relayed or queued.
    assert!(!inst.log().contains("status=sent"), "{}", inst.log());
}

/// The master.cf services of scripts/regen-rewrite-fixtures' instances.
const SERVICES: &str = "pickup unix n - n 60 1 pickup\ncleanup unix n - n - 0 cleanup\n\
    qmgr unix n - n 300 1 qmgr\nrewrite unix - - n - - trivial-rewrite\n\
    bounce unix - - n - 0 bounce\ndefer unix - - n - 0 bounce\ntrace unix - - n - 0 bounce\n\
    error unix - - n - - error\nretry unix - - n - - error\ndiscard unix - - n - - discard\n\
    local unix - n n - - local\nsmtp unix - - n - - smtp\nrelay unix - - n - - smtp\n\
    postlog unix-dgram n - n - 1 postlogd\n";

/// nmap's smtp-open-relay forms (scripts/nmap-relay-forms) sent as whole messages to a
/// Postern started with compat-fixtures/rewrite/main.cf and `relayhost` at the script's
/// sink: the replies and the address each accepted message was relayed to must be those of
/// the real Postfix 3.7.11 (compat-fixtures/rewrite/nmap-{trusted,foreign}.txt,
/// scripts/regen-rewrite-fixtures). From a client in mynetworks, trivial-rewrite's
/// percent hack, bang-path swap, dequoting and source-route stripping resolve every form
/// to `relaytest@nmap.scanme.org`, which is relayed; from a foreign client every form is
/// refused (`Relay access denied`) and nothing is relayed.
fn nmap_forms(kind: &str, src: &str, mynetworks: &str) {
    let fx = repo_root().join("compat-fixtures/rewrite");
    let main = std::fs::read_to_string(fx.join("main.cf")).expect("main.cf");
    let want = std::fs::read_to_string(fx.join(format!("nmap-{kind}.txt"))).expect("fixture");
    let sink = free_port();
    let inst = Instance::start(
        &format!("{main}mynetworks = {mynetworks}\nrelayhost = [127.0.0.1]:{sink}\n"),
        SERVICES,
    );
    let o = std::process::Command::new(repo_root().join("scripts/nmap-relay-forms"))
        .args([&inst.port.to_string(), src, &sink.to_string()])
        .output()
        .expect("nmap-relay-forms");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let diffs = fixture_line_diffs(&want, &out);
    assert_eq!(want.lines().count(), out.lines().count(), "{out}");
    assert!(diffs.is_empty(), "{}\n{}", diffs.join("\n"), inst.log());
    if kind == "foreign" {
        assert!(!out.contains("relayhost:"), "{out}");
        assert!(!inst.log().contains("status=sent"), "{}", inst.log());
    }
}

#[test]
fn nmap_relay_forms_from_a_trusted_client_are_rewritten_and_relayed_as_postfix_does() {
    nmap_forms("trusted", "127.0.0.1", "127.0.0.0/8");
}

#[test]
fn nmap_relay_forms_from_a_foreign_client_are_refused_as_postfix_refuses_them() {
    nmap_forms("foreign", "127.0.0.2", "127.0.0.1/32");
}

/// Recipients whose transport is `retry:` or `error:` (from `transport_maps`,
/// `relay_transport` or `default_transport`) are refused at RCPT with the transport's
/// status and text, as the real Postfix 3.7.11's smtpd does through trivial-rewrite
/// (compat-fixtures/rewrite/retry-error.txt, scripts/regen-rewrite-fixtures: each `#`
/// line is an instance's settings, then `address<TAB>reply` for each RCPT TO); a local
/// recipient beside them is still accepted.
#[test]
fn retry_and_error_transports_are_refused_at_rcpt_as_postfix_refuses_them() {
    let fx = repo_root().join("compat-fixtures/rewrite");
    let main = std::fs::read_to_string(fx.join("main.cf")).expect("main.cf");
    let want = std::fs::read_to_string(fx.join("retry-error.txt")).expect("fixture");
    // The transport table of the fixture's first case, as the script writes it.
    let tables = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(tables.path().join("etc")).expect("etc");
    std::fs::write(
        tables.path().join("etc/transport"),
        "retry.example retry:4.3.2 try later\nerror.example error:5.7.1 go away\n\
         bare-retry.example retry\nbare-error.example error\n",
    )
    .expect("transport");
    let dir = tables.path().display().to_string();
    let mut blocks: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in want.lines() {
        if let Some(settings) = line.strip_prefix("# ") {
            blocks.push((settings.replace("; ", "\n"), Vec::new()));
        } else if let Some((addr, reply)) = line.split_once('\t') {
            let block = blocks.last_mut().expect("a # line first");
            block.1.push((addr.to_string(), reply.to_string()));
        }
    }
    assert_eq!(blocks.len(), 4, "{want}");
    let mut checked = 0;
    for (settings, rcpts) in &blocks {
        let conf = format!(
            "{main}mynetworks = 127.0.0.0/8\n{}\n",
            settings.replace("DIR", &dir)
        );
        let inst = Instance::start(&conf, SERVICES);
        let mut c = Smtp::connect(inst.port);
        assert!(c.line().starts_with("220 "));
        c.cmd("EHLO client.example");
        for (addr, reply) in rcpts {
            assert!(
                c.cmd("MAIL FROM:<sender@example.org>")
                    .join(" | ")
                    .starts_with("250 ")
            );
            let got = c.cmd(&format!("RCPT TO:<{addr}>")).join(" | ");
            assert_eq!(&got, reply, "{settings}: RCPT TO:<{addr}>\n{}", inst.log());
            assert!(c.cmd("RSET").join(" | ").starts_with("250 "));
            checked += 1;
        }
    }
    assert_eq!(checked, 9);
}

/// `check_recipient_access` and `check_sender_access` search the table with the address
/// as trivial-rewrite resolves it, as the real Postfix 3.7.11's `check_mail_access()`
/// does (compat-fixtures/rewrite/access.txt, scripts/regen-access-fixtures): the percent
/// hack, bang paths, source routes, quoted local parts, case and a trailing dot all meet
/// the entry for `user@other.example`; then the address without its extension, the
/// domain and its parents, `localpart@`; an `OK` for a sender-routed recipient is not
/// trusted. The fixture's `# main:` and `# access:` lines are the instance's settings
/// and table; each other line is one session's MAIL or RCPT and Postfix's reply.
#[test]
fn access_tables_see_the_resolved_address_as_postfix_does() {
    let fx = repo_root().join("compat-fixtures/rewrite");
    let main = std::fs::read_to_string(fx.join("main.cf")).expect("main.cf");
    let want = std::fs::read_to_string(fx.join("access.txt")).expect("fixture");
    let tables = tempfile::tempdir().expect("tempdir");
    let dir = tables.path().display().to_string();
    let mut settings = String::new();
    let mut access = String::new();
    let mut cases = Vec::new();
    for line in want.lines() {
        if let Some(s) = line.strip_prefix("# main: ") {
            settings.push_str(&s.replace("DIR", &dir));
            settings.push('\n');
        } else if let Some(a) = line.strip_prefix("# access: ") {
            access.push_str(a);
            access.push('\n');
        } else {
            let mut parts = line.splitn(3, '\t');
            let (Some(cmd), Some(addr), Some(reply)) = (parts.next(), parts.next(), parts.next())
            else {
                panic!("bad fixture line {line:?}");
            };
            cases.push((cmd.to_string(), addr.to_string(), reply.to_string()));
        }
    }
    std::fs::write(tables.path().join("access"), access).expect("access");
    let inst = Instance::start(&format!("{main}{settings}"), SERVICES);
    let mut diffs = Vec::new();
    for (cmd, addr, reply) in &cases {
        let mut c = Smtp::connect(inst.port);
        assert!(c.line().starts_with("220 "));
        c.cmd("EHLO client.example");
        let got = if cmd == "MAIL" {
            c.cmd(&format!("MAIL FROM:<{addr}>")).join(" | ")
        } else {
            let m = c.cmd("MAIL FROM:<sender@relay.example>").join(" | ");
            assert!(m.starts_with("250 "), "{m}\n{}", inst.log());
            c.cmd(&format!("RCPT TO:<{addr}>")).join(" | ")
        };
        c.cmd("QUIT");
        if &got != reply {
            diffs.push(format!(
                "{cmd} {addr}\n  Postfix: {reply}\n  Postern: {got}"
            ));
        }
    }
    assert_eq!(cases.len(), 42, "{want}");
    assert!(diffs.is_empty(), "{}\n{}", diffs.join("\n"), inst.log());
}
