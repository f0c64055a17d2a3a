//! Inputs the fuzz targets under `fuzz/` found to crash Postern (`scripts/fuzz`, README
//! "Reliability" → "Fuzzing"), each kept here with what must happen instead. The crashing
//! bytes are inline, minimised by libFuzzer (`-minimize_crash=1`).

mod common;
use common::*;

use postern::queue::file::{self, QueueFileError};
use postern::queue::record::{self, rec_type};
use postern::smtpd::address::{self, PathError};

/// `smtp_session`: a MAIL or RCPT argument whose first bytes are a multi-byte character
/// made `parse_path` slice inside it and panic, ending the session. Postfix compares the
/// first 5 or 3 bytes (`strncasecmp`) and answers the syntax error; so does Postern now.
#[test]
fn smtp_keyword_cut_inside_a_character() {
    assert_eq!(
        address::parse_path("T\u{e9}@example.com>", "TO:", false),
        Err(PathError::Syntax)
    );
    assert_eq!(
        address::parse_path("F\u{20ac}<a@b>", "FROM:", false),
        Err(PathError::Syntax)
    );
    assert_eq!(
        address::parse_path("\u{e9}", "TO:", true),
        Err(PathError::Syntax)
    );
}

/// The same over a real session: the reply is Postfix's syntax error and the session goes
/// on (it used to end without a reply when the session task panicked).
#[test]
fn smtp_session_survives_a_multibyte_keyword() {
    let inst = Instance::start("mynetworks = 127.0.0.0/8\n", "");
    let mut c = Smtp::connect(inst.port);
    c.line();
    assert!(
        c.cmd("EHLO client.example.org")
            .iter()
            .all(|l| l.starts_with("250"))
    );
    assert_eq!(
        c.cmd("MAIL F\u{e9}:<a@example.org>"),
        vec!["501 5.5.4 Syntax: MAIL FROM:<address>"]
    );
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), vec!["250 2.1.0 Ok"]);
    assert_eq!(
        c.cmd("RCPT T\u{e9}@example.com>"),
        vec!["501 5.5.4 Syntax: RCPT TO:<address>"]
    );
    assert_eq!(c.cmd("QUIT"), vec!["221 2.0.0 Bye"]);
    assert!(!inst.log().contains("panic"), "{}", inst.log());
}

/// `queue_file`: a time record with more seconds than a `SystemTime` holds panicked in
/// `UNIX_EPOCH + …`; it is now a corrupt file, as a time record that is not a number was.
#[test]
fn queue_file_time_past_systemtime() {
    // The found input, cut to its first two records: a size record, then the time.
    let mut buf = Vec::new();
    record::put(
        &mut buf,
        rec_type::SIZE,
        format!(
            "{:15} {:15} {:15} {:15} {:15} {:15}",
            251, 364, 2, 0, 251, 0
        )
        .as_bytes(),
    );
    record::put(
        &mut buf,
        rec_type::TIME,
        b"000018446744073709551615      01795876632",
    );
    match file::parse(&buf, "4ABCDEF0123") {
        Err(QueueFileError::Corrupt(why)) => assert_eq!(why, "bad time record"),
        other => panic!("expected a corrupt file, got {other:?}"),
    }
}

/// `maildir`: a `dovecot-uidlist` header word beginning with a multi-byte character made
/// `split_at(1)` panic when the Maildir was opened (by pop3d, imapd or delivery). The word
/// is now kept as an unknown field and the UIDs are read.
#[test]
fn maildir_uidlist_header_word_with_multibyte_start() {
    use postern::mailbox::maildir::{MaildirBox, MaildirOpen};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    std::fs::write(
        d.join("dovecot-uidlist"),
        "3 V1700000000 \u{fffd}G0123456789abcdef N3\n2 :1700000000.M1P1.host\n",
    )
    .unwrap();
    std::fs::write(
        d.join("cur/1700000000.M1P1.host:2,S"),
        "Subject: x\n\nbody\n",
    )
    .unwrap();
    let mb = MaildirBox::open(d, d, MaildirOpen::default(), None).expect("open");
    assert_eq!(mb.uid_validity, 1700000000);
    assert_eq!(mb.messages.len(), 1);
    assert_eq!(mb.messages[0].uid, 2);
    assert_eq!(mb.read(0).unwrap(), b"Subject: x\n\nbody\n");
}

/// `mime`: SORT by DATE of a message with `Date: 308888888888888 Nov 2026 12:00 GMT`
/// overflowed the seconds (a panic with overflow checks, a wrapped time without). A field
/// of a million or more is no date now; and a month word cut inside a multi-byte
/// character no longer panics. SEARCH's IMAP dates get the same bound on the year.
#[test]
fn dates_with_absurd_fields() {
    use postern::imapd::message::search::{parse_imap_date, parse_rfc822_date};
    assert_eq!(
        parse_rfc822_date(b"308888888888888 Nov 2026 12:00 GMT"),
        None
    );
    assert_eq!(
        parse_rfc822_date(b"1 Nov 99999999999999999 12:00 GMT"),
        None
    );
    assert_eq!(parse_rfc822_date(b"1 Nov 2026 9999999999999:00 GMT"), None);
    assert_eq!(parse_rfc822_date(b"1 aa\xc3\xa9 2026 12:00 GMT"), None);
    assert_eq!(parse_imap_date("1-Jan-9223372036854775807"), None);
    // Ordinary and merely odd dates keep their meaning.
    assert_eq!(
        parse_rfc822_date(b"Mon, 7 Dec 2026 08:00:00 +0000"),
        Some((1796630400, 0))
    );
    assert_eq!(
        parse_imap_date("32-Dec-2026"),
        parse_imap_date("1-Jan-2027")
    );
}

/// `smtp_session`: an address literal with a multi-byte character in its first five
/// bytes (`RCPT TO:<u@[127\u{e9}…]>`) made the `ipv6:` check slice inside it and panic.
/// It is no IP address, so the domain is judged as a name.
#[test]
fn smtp_address_literal_cut_inside_a_character() {
    assert_eq!(
        postern::resolve::address_literal("[127\u{e9}\u{e9}.0.0.1]"),
        None
    );
    assert_eq!(postern::resolve::address_literal("[ipv6\u{e9}::1]"), None);
    assert_eq!(
        postern::resolve::address_literal("[IPv6:::1]"),
        Some("::1".parse().unwrap())
    );
    assert_eq!(
        postern::resolve::address_literal("[127.0.0.1]"),
        Some("127.0.0.1".parse().unwrap())
    );
}

/// The same over a real session: RCPT with such a literal gets a reply and the session
/// goes on.
#[test]
fn smtp_session_survives_a_multibyte_address_literal() {
    let inst = Instance::start("mynetworks = 127.0.0.0/8\n", "");
    let mut c = Smtp::connect(inst.port);
    c.line();
    c.cmd("EHLO client.example.org");
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>"), vec!["250 2.1.0 Ok"]);
    let reply = c.cmd("RCPT TO:<u@[127\u{e9}\u{e9}.0.0.1]>");
    assert_eq!(reply.len(), 1);
    assert!(reply[0].starts_with(['2', '4', '5']), "{reply:?}");
    assert_eq!(c.cmd("QUIT"), vec!["221 2.0.0 Bye"]);
    assert!(!inst.log().contains("panic"), "{}", inst.log());
}

/// `main_cf`: `myhostname` and `mydomain` derive from each other, and `myhostname =
/// $mydomain` (or `mydomain = $myhostname`) recursed until the stack overflowed (a SIGSEGV
/// libFuzzer could not report: the first two deaths of `main_cf` left no input). The
/// values are now what the real Postfix 3.7.11 `postconf` prints (run here on these
/// files; `HOST` is the host name).
#[test]
fn myhostname_mydomain_cycle() {
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let short = host.split('.').next().unwrap().to_string();
    let cases: [(&str, [&str; 2]); 4] = [
        ("myhostname = $mydomain\n", ["localdomain", "localdomain"]),
        ("myhostname = x.$mydomain\n", ["x.", ""]),
        ("mydomain = $myhostname\n", ["HOST.", "HOST."]),
        ("mydomain = a.$myhostname\n", ["HOST.a.", "a.HOST.a."]),
    ];
    for (main, want) in cases {
        if host.contains('.') && main.starts_with("mydomain") {
            continue; // a qualified host name is used as it is: other values
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.cf"), main).unwrap();
        std::fs::write(dir.path().join("master.cf"), "").unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
            .args(["postconf", "-c"])
            .arg(dir.path())
            .args(["-x", "myhostname", "mydomain"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{main}: {out:?}");
        // postconf prints `name =` for an empty value.
        let line = |name: &str, v: &str| {
            let v = v.replace("HOST", &short);
            if v.is_empty() {
                format!("{name} =\n")
            } else {
                format!("{name} = {v}\n")
            }
        };
        let want = line("myhostname", want[0]) + &line("mydomain", want[1]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{main}");
    }
}
