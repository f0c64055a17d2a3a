//! The SMTP core replayed against the real Postfix 3.7.11's recorded dialogues
//! (`compat-fixtures/smtpd/transcripts-postfix-3.7.11.txt`, made with
//! `compat-fixtures/smtpd/reference-main.cf`), in process: each recorded client write is
//! fed to a [`Session`] over a [`Script`] transport, and the session's output must be the
//! recorded server output byte for byte. Two normalisations, both named where they are
//! made: queue IDs (`queued as ID`), and the SASL mechanisms in the EHLO reply (Cyrus SASL
//! on the reference machine lists every plugin it has; Postern offers what saslauthd
//! checks, PLAIN and LOGIN, as the integration tests in tests/smtpd.rs pin down).

use std::path::Path;
use std::sync::Arc;

use super::SmtpdService;
use super::session::{Session, drive};
use super::transport::Script;
use crate::config::postfix::{LoadOptions, PostfixConfig};

const TRANSCRIPTS: &str =
    include_str!("../../compat-fixtures/smtpd/transcripts-postfix-3.7.11.txt");
const REFERENCE_MAIN: &str = include_str!("../../compat-fixtures/smtpd/reference-main.cf");
const CYRUS_MECHS: &str = "SCRAM-SHA-512 SCRAM-SHA-384 SCRAM-SHA-256 SCRAM-SHA-224 SCRAM-SHA-1 DIGEST-MD5 CRAM-MD5 NTLM PLAIN LOGIN";

/// One recorded dialogue: the client's writes and the server's whole output.
struct Transcript {
    name: String,
    writes: Vec<Vec<u8>>,
    output: String,
}

/// The named sections (`# NAME` up to the next empty line) of the transcript file. `C:`
/// lines are one client write each, with `\r\n` written out; `S:` lines are server lines
/// (`<TIMEOUT>`: the client waited and nothing came).
fn transcripts() -> Vec<Transcript> {
    let mut out = Vec::new();
    let mut cur: Option<Transcript> = None;
    for line in TRANSCRIPTS.lines() {
        if let Some(name) = line.strip_prefix("# ") {
            cur = Some(Transcript {
                name: name.to_string(),
                writes: Vec::new(),
                output: String::new(),
            });
        } else if line.is_empty() {
            out.extend(cur.take());
        } else if let Some(t) = cur.as_mut() {
            if let Some(c) = line.strip_prefix("C: ") {
                t.writes.push(c.replace("\\r\\n", "\r\n").into_bytes());
            } else if let Some(s) = line.strip_prefix("S: ")
                && s != "<TIMEOUT>"
            {
                t.output.push_str(&s.replace(CYRUS_MECHS, "PLAIN LOGIN"));
                t.output.push_str("\r\n");
            }
        }
    }
    out.extend(cur);
    out
}

/// `queued as ID` for any queue ID.
fn mask_ids(s: &str) -> String {
    s.split_inclusive("\r\n")
        .map(|l| match l.find("queued as ") {
            Some(i) => format!("{}queued as ID\r\n", &l[..i]),
            None => l.to_string(),
        })
        .collect()
}

/// The reference main.cf with this test's directories, and a Cyrus SASL configuration
/// that points at a saslauthd that is not running (the reference machine had none).
fn config(dir: &Path) -> PostfixConfig {
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".into());
    let main: String = REFERENCE_MAIN
        .lines()
        .map(|l| match l.split_once(" = ") {
            Some(("queue_directory", _)) => format!("queue_directory = {}/spool", dir.display()),
            Some(("data_directory", _)) => format!("data_directory = {}/data", dir.display()),
            Some(("mail_owner", _)) => format!("mail_owner = {me}"),
            Some(("cyrus_sasl_config_path", _)) => {
                format!("cyrus_sasl_config_path = {}/sasl", dir.display())
            }
            Some(("maillog_file", _)) => format!("maillog_file = {}/maillog", dir.display()),
            _ => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect();
    for d in ["etc", "sasl", "data"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("etc/main.cf"), main).unwrap();
    std::fs::write(
        dir.join("sasl/smtpd.conf"),
        format!(
            "pwcheck_method: saslauthd\nsaslauthd_path: {}/no-saslauthd/mux\n",
            dir.display()
        ),
    )
    .unwrap();
    PostfixConfig::load(&LoadOptions {
        config_dir: Some(dir.join("etc")),
        overrides: Vec::new(),
    })
    .unwrap()
}

#[test]
fn recorded_postfix_dialogues_replay_against_the_core() {
    let dir = tempfile::tempdir().unwrap();
    let svc: Arc<SmtpdService> = SmtpdService::new(config(dir.path()), "smtp").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let all = transcripts();
    let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
    // Every named dialogue of the file is replayed (a section lost to a parsing change
    // must fail here, not pass unseen).
    assert_eq!(
        names,
        [
            "postmaster",
            "vrfy",
            "data",
            "pipelined",
            "unauth pipelining (no ehlo)",
            "syntax",
            "bdat",
            "long line",
            "auth no saslauthd",
            "data no rcpt ok",
            "starttls none",
        ]
    );
    for t in all {
        let (script, out) = Script::new(t.writes);
        let peer = "127.0.0.1:40025".parse().unwrap();
        rt.block_on(drive(Session::new(svc.clone(), peer, false), script));
        let got = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
        assert_eq!(mask_ids(&got), mask_ids(&t.output), "dialogue {:?}", t.name);
    }
    // The three messages accepted ("data", "pipelined", "bdat") are in the queue.
    let queued = crate::queue::store::Store::new(dir.path().join("spool")).scan("incoming", false);
    assert_eq!(queued.len(), 3, "{queued:?}");
}

/// The core without any transport: fed bytes, it answers with actions. A pipelined group
/// is answered in one write when the session must wait for input, a DATA line split over
/// two reads is put together, a BDAT chunk is taken by count, and the end of the input
/// ends the session.
#[test]
fn core_is_fed_input_and_answers_with_actions() {
    use super::session::Action;
    let dir = tempfile::tempdir().unwrap();
    let svc: Arc<SmtpdService> = SmtpdService::new(config(dir.path()), "smtp").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let peer = "127.0.0.1:40026".parse().unwrap();
    let mut s = Session::new(svc, peer, false);
    let sent = |a: Action| match a {
        Action::Send(b) => String::from_utf8(b).unwrap(),
        _ => panic!("expected a write"),
    };
    let read = |a: Action| assert!(matches!(a, Action::Read { .. }), "expected a read");
    rt.block_on(async {
        s.begin().await;
        assert!(sent(s.next().await).starts_with("220 "));
        read(s.next().await);
        s.received(b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<postmaster>\r\n");
        let group = sent(s.next().await);
        assert!(
            group.starts_with("250-")
                && group.ends_with("250 CHUNKING\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"),
            "{group}"
        );
        read(s.next().await);
        s.received(b"DATA\r\n");
        assert_eq!(
            sent(s.next().await),
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        read(s.next().await);
        s.received(b"Subject: split\r\n\r\nhal");
        read(s.next().await);
        s.received(b"f a line\r\n.\r\n");
        assert!(sent(s.next().await).starts_with("250 2.0.0 Ok: queued as "));
        read(s.next().await);
        s.received(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<postmaster>\r\nBDAT 10 LAST\r\n0123");
        assert_eq!(sent(s.next().await), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
        match s.next().await {
            Action::Read { max, .. } => assert_eq!(max, 6, "the rest of the chunk only"),
            _ => panic!("expected a read"),
        }
        s.received(b"456789");
        assert_eq!(
            sent(s.next().await)
                .split(" queued as ")
                .next()
                .unwrap_or(""),
            "250 2.0.0 Ok: 12 bytes"
        );
        read(s.next().await);
        s.input_ended();
        assert!(matches!(s.next().await, Action::Close));
    });
    let queued = crate::queue::store::Store::new(dir.path().join("spool")).scan("incoming", false);
    assert_eq!(queued.len(), 2, "{queued:?}");
}
