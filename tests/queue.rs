//! The write side of the queue (`postern::queue`): commit, read back, crash leftovers,
//! concurrency, limits, and the text Postfix 3.7.11 wrote for the same input.
//!
//! Fsync ordering is not tested here (a test cannot pull the power); it is argued in the
//! module docs of `src/queue/writer.rs` and checked by code review.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern::config::postfix::{LoadOptions, PostfixConfig};
use postern::queue::file::{self as qfile, QueueFileError};
use postern::queue::header::mail_date;
use postern::queue::{
    ClientInfo, Envelope, Queue, QueueError, QueueId, Recipient, SyncMode, mark_recipient_done,
    read_queue_file,
};

fn config(dir: &Path, extra: &str) -> PostfixConfig {
    let main = format!(
        "queue_directory = {}/queue\nmyhostname = mx.example.org\nmydomain = example.org\n{extra}",
        dir.display()
    );
    std::fs::write(dir.join("main.cf"), main).expect("write main.cf");
    std::fs::write(dir.join("master.cf"), "").expect("write master.cf");
    PostfixConfig::load(&LoadOptions {
        config_dir: Some(dir.to_path_buf()),
        overrides: Vec::new(),
    })
    .expect("load main.cf")
}

fn rcpt(a: &str) -> Recipient {
    Recipient {
        address: a.into(),
        orcpt: None,
        notify: None,
    }
}

fn client(helo: &str, host: &str, addr: &str, local: bool) -> ClientInfo {
    ClientInfo {
        helo: Some(helo.into()),
        hostname: host.into(),
        addr: addr.parse::<IpAddr>().expect("addr"),
        port: 38495,
        protocol: "ESMTP".into(),
        tls: None,
        sasl_method: None,
        sasl_username: None,
        local_submission: local,
    }
}

fn env(sender: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: sender.into(),
        recipients: rcpts.iter().map(|r| rcpt(r)).collect(),
        ..Default::default()
    }
}

fn queue_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read incoming")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

/// Replace the date Postern wrote (local time zone of the test box) with the one Postfix
/// wrote in UTC, so the comparison holds in any TZ.
fn mask_date(content: &[u8], arrival: SystemTime, postfix_date: &str) -> String {
    String::from_utf8_lossy(content).replace(&mail_date(arrival), postfix_date)
}

#[tokio::test]
async fn commit_then_read_back_every_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(&config(tmp.path(), "")).expect("open queue");
    for d in [
        "incoming", "active", "deferred", "hold", "corrupt", "maildrop", "pid",
    ] {
        assert!(tmp.path().join("queue").join(d).is_dir(), "{d} created");
    }
    let id = q.new_queue_id();
    let envelope = Envelope {
        sender: "sender@example.net".into(),
        recipients: vec![
            Recipient {
                address: "alice@mx.example.org".into(),
                orcpt: Some("rfc822;orig@example.com".into()),
                notify: Some("SUCCESS,FAILURE".into()),
            },
            rcpt("odd user@mx.example.org"),
        ],
        size_hint: Some(42),
        body_type: Some("8BITMIME".into()),
        smtputf8: false,
        ret: Some("HDRS".into()),
        envid: Some("xyz+abc".into()),
    };
    let mut cl = client("client.example.net", "localhost", "127.0.0.1", false);
    cl.sasl_method = Some("PLAIN".into());
    cl.sasl_username = Some("alice".into());
    let before = SystemTime::now();
    q.commit(
        &id,
        &envelope,
        &cl,
        b"Subject: hi\r\n\r\nbody line\r\n.leading dot kept\r\n".to_vec(),
    )
    .await
    .expect("commit");
    let files = queue_files(&tmp.path().join("queue/incoming"));
    assert_eq!(files.len(), 1, "one file, no temporary left: {files:?}");
    let path = &files[0];
    assert_eq!(path.file_name().and_then(|n| n.to_str()), Some(id.as_str()));
    let mode = std::fs::metadata(path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "complete files are 0700");

    let m = read_queue_file(path).expect("read back");
    assert_eq!(m.queue_id, id.as_str());
    assert_eq!(m.sender, "sender@example.net");
    assert!(m.arrival >= before - Duration::from_secs(1) && m.arrival <= SystemTime::now());
    assert_eq!(m.envid.as_deref(), Some("xyz+abc"));
    assert_eq!(m.ret_flags, qfile::DSN_RET_HDRS);
    assert_eq!(m.encoding.as_deref(), Some("8bit"));
    assert_eq!(m.smtputf8, 0);
    assert_eq!(m.rewrite_context.as_deref(), Some("remote"));
    assert_eq!(m.rcpt_count, 2);
    assert_eq!(m.qmgr_opts, u64::from(6u32 << 1));
    assert_eq!(m.recipients.len(), 2);
    let a = &m.recipients[0];
    assert_eq!(a.address, "alice@mx.example.org");
    assert_eq!(a.original.as_deref(), Some("alice@mx.example.org"));
    assert_eq!(a.orcpt.as_deref(), Some("rfc822;orig@example.com"));
    assert_eq!(a.notify().as_deref(), Some("SUCCESS,FAILURE"));
    assert!(!a.done);
    let b = &m.recipients[1];
    assert_eq!(b.address, "odd user@mx.example.org");
    assert_eq!(
        b.orcpt.as_deref(),
        Some("rfc822;\"odd user\"@mx.example.org")
    );
    assert_eq!(b.notify_flags, 0);
    for (k, v) in [
        ("client_name", "localhost"),
        ("client_address", "127.0.0.1"),
        ("client_port", "38495"),
        ("helo_name", "client.example.net"),
        ("protocol_name", "ESMTP"),
        ("sasl_method", "PLAIN"),
        ("sasl_username", "alice"),
        ("log_message_origin", "localhost[127.0.0.1]"),
        ("log_ident", id.as_str()),
        ("client_address_type", "2"),
    ] {
        assert_eq!(m.attr(k), Some(v), "attribute {k}");
    }
    let content = String::from_utf8(m.content.clone()).expect("utf8");
    let date = mail_date(m.arrival);
    assert_eq!(
        content,
        format!(
            "Received: from client.example.net (localhost [127.0.0.1])\n\
             \tby mx.example.org (Postfix) with ESMTP id {id};\n\
             \t{date}\n\
             Subject: hi\n\nbody line\n.leading dot kept\n"
        ),
        "two recipients: no `for`; remote client: no headers added; \
         (Authenticated sender:) only with smtpd_sasl_authenticated_header"
    );
    // Each of the 7 lines costs a type and a length byte instead of a newline.
    assert_eq!(m.message_size, m.content.len() as u64 + 7);
}

#[tokio::test]
async fn done_marker_is_updated_in_place() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(&config(tmp.path(), "")).expect("open queue");
    let id = q.new_queue_id();
    q.commit(
        &id,
        &env("s@example.net", &["a@example.org", "b@example.org"]),
        &client("h", "unknown", "192.0.2.1", false),
        b"Subject: x\r\n\r\ny\r\n".to_vec(),
    )
    .await
    .expect("commit");
    let path = tmp.path().join("queue/incoming").join(id.as_str());
    let m = read_queue_file(&path).expect("read");
    let len = std::fs::metadata(&path).expect("stat").len();
    mark_recipient_done(&path, m.recipients[0].offset).expect("mark done");
    mark_recipient_done(&path, m.recipients[0].offset).expect("marking twice is harmless");
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        len,
        "in place"
    );
    let m2 = read_queue_file(&path).expect("read again");
    assert!(m2.recipients[0].done);
    assert!(!m2.recipients[1].done);
    assert_eq!(
        m2.pending().map(|r| r.address.as_str()).collect::<Vec<_>>(),
        vec!["b@example.org"]
    );
    assert!(matches!(
        mark_recipient_done(&path, 0),
        Err(QueueFileError::Corrupt(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_get_distinct_ids() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(&config(tmp.path(), "")).expect("open queue");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let q = Arc::clone(&q);
        tasks.push(tokio::spawn(async move {
            let id = q.new_queue_id();
            q.commit(
                &id,
                &env("s@example.net", &[&format!("u{i}@example.org")]),
                &client("h", "unknown", "192.0.2.1", false),
                format!("Subject: {i}\r\n\r\nbody {i}\r\n").into_bytes(),
            )
            .await
            .map(|_| id)
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let id = t.await.expect("join").expect("commit");
        assert!(ids.insert(id.to_string()), "duplicate id {id}");
    }
    let files = queue_files(&tmp.path().join("queue/incoming"));
    assert_eq!(files.len(), 200);
    for f in files {
        let m = read_queue_file(&f).expect("readable");
        assert_eq!(m.recipients.len(), 1);
    }
}

#[test]
fn short_and_long_ids_look_like_postfix() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(&config(tmp.path(), "")).expect("open");
    let id = q.new_queue_id();
    assert_eq!(id.as_str().len(), 11, "{id}");
    assert!(
        id.as_str()
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
    );
    let tmp2 = tempfile::tempdir().expect("tempdir");
    let q2 = Queue::open(&config(tmp2.path(), "enable_long_queue_ids = yes\n")).expect("open");
    let long = q2.new_queue_id();
    assert!(long.is_long(), "{long}");
    let (time, inum) = long.as_str().rsplit_once('z').expect("separator");
    assert_eq!(time.len(), 10, "{long}");
    assert!(!inum.is_empty() && inum.bytes().all(|b| b.is_ascii_alphanumeric()));
}

#[tokio::test]
async fn crash_leftovers_are_ignored_or_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(tmp.path(), "");
    let q = Queue::open(&cfg).expect("open");
    let incoming = tmp.path().join("queue/incoming");
    let id = q.new_queue_id();
    q.commit(
        &id,
        &env("s@example.net", &["a@example.org"]),
        &client("h", "unknown", "192.0.2.1", false),
        b"Subject: x\r\n\r\ny\r\n".to_vec(),
    )
    .await
    .expect("commit");
    let good = incoming.join(id.as_str());
    let bytes = std::fs::read(&good).expect("read");

    // 1. A crash while writing: a temporary file of a dead process. Open removes it.
    let stale = incoming.join(".tmp.999999999.1");
    std::fs::write(&stale, &bytes[..bytes.len() / 2]).expect("write stale");
    drop(q);
    let _q = Queue::open(&cfg).expect("reopen");
    assert!(!stale.exists(), "temporary file of a dead writer removed");

    // 2. Postfix's convention: a file still being written has mode 0600.
    let not_ready = incoming.join("ABCDE123456");
    std::fs::write(&not_ready, &bytes).expect("write");
    std::fs::set_permissions(&not_ready, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(matches!(
        read_queue_file(&not_ready),
        Err(QueueFileError::Incomplete(_))
    ));

    // 3. A file cut short anywhere is incomplete, never a shorter message.
    let cut = incoming.join("ABCDE654321");
    for len in [0, 1, 10, bytes.len() / 2, bytes.len() - 3, bytes.len() - 1] {
        std::fs::write(&cut, &bytes[..len]).expect("write");
        std::fs::set_permissions(&cut, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        match read_queue_file(&cut) {
            Err(QueueFileError::Incomplete(_)) | Err(QueueFileError::Corrupt(_)) => {}
            other => panic!("cut at {len}: {other:?}"),
        }
    }
    assert!(read_queue_file(&good).is_ok());
}

#[tokio::test]
async fn limits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(&config(
        tmp.path(),
        "message_size_limit = 100\nhopcount_limit = 2\nheader_size_limit = 20\n",
    ))
    .expect("open");
    assert!(q.check_message_size(100).is_ok());
    let too_big = q.check_message_size(101).expect_err("too big");
    assert_eq!(
        too_big.smtp_reply(),
        "552 5.3.4 Error: message file too big"
    );

    let id = q.new_queue_id();
    let err = q
        .commit(
            &id,
            &env("s@example.net", &["a@example.org"]),
            &client("h", "unknown", "192.0.2.1", false),
            vec![b'x'; 200],
        )
        .await
        .expect_err("over message_size_limit");
    let qe = err.downcast_ref::<QueueError>().expect("QueueError");
    assert!(matches!(
        qe,
        QueueError::MessageTooBig {
            size: 200,
            limit: 100
        }
    ));

    // Two Received: in the message plus ours: 3 > hopcount_limit 2.
    let id = q.new_queue_id();
    let err = q
        .commit(
            &id,
            &env("s@example.net", &["a@example.org"]),
            &client("h", "unknown", "192.0.2.1", false),
            b"Received: a\r\nReceived: b\r\n\r\nx\r\n".to_vec(),
        )
        .await
        .expect_err("too many hops");
    let qe = err.downcast_ref::<QueueError>().expect("QueueError");
    assert_eq!(qe.smtp_reply(), "554 5.4.0 Error: too many hops");
    assert!(queue_files(&tmp.path().join("queue/incoming")).is_empty());

    // header_size_limit: the excess of a long header is discarded.
    let id = q.new_queue_id();
    q.commit(
        &id,
        &env("s@example.net", &["a@example.org"]),
        &client("h", "unknown", "192.0.2.1", false),
        b"Subject: 0123456789012345678901234567890\r\n\r\nx\r\n".to_vec(),
    )
    .await
    .expect("commit");
    let m = read_queue_file(&tmp.path().join("queue/incoming").join(id.as_str())).expect("read");
    let content = String::from_utf8_lossy(&m.content);
    assert!(
        content.contains("\nSubject: 01234567890\n\nx\n"),
        "{content}"
    );
}

#[tokio::test]
async fn long_lines_become_continuation_records() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(&config(tmp.path(), "")).expect("open");
    let id = q.new_queue_id();
    let long = "y".repeat(5000);
    q.commit(
        &id,
        &env("s@example.net", &["a@example.org"]),
        &client("h", "unknown", "192.0.2.1", false),
        format!("Subject: x\r\n\r\n{long}\r\nbare lf\nend").into_bytes(),
    )
    .await
    .expect("commit");
    let path = tmp.path().join("queue/incoming").join(id.as_str());
    let bytes = std::fs::read(&path).expect("read");
    let kinds: Vec<u8> = postern::queue::record::records(&bytes)
        .map(|r| r.expect("record").kind)
        .collect();
    assert_eq!(
        kinds.iter().filter(|&&k| k == b'L').count(),
        2,
        "5000 = 2048+2048+904"
    );
    let m = read_queue_file(&path).expect("read");
    assert!(String::from_utf8_lossy(&m.content).ends_with(&format!("\n\n{long}\nbare lf\nend\n")));
}

// --- Compared with the real Postfix 3.7.11 -------------------------------------------------
//
// Recorded from a private Postfix 3.7.11 (`postfix -c /tmp/pfq/conf start-fg`, qmgr disabled so
// files stay in incoming/, TZ=UTC, myhostname = mx.example.org), messages sent with Python's
// smtplib from 127.0.0.1 (an inet interface, so local_header_rewrite_clients matched) and
// 127.0.0.2 (not local); content as `postcat -v` showed it.

/// Postfix's date for arrival 1795874445 (TZ=UTC).
const PF_DATE_1: &str = "Sat, 28 Nov 2026 14:00:45 +0000 (UTC)";

#[test]
fn received_one_recipient_local_client_matches_postfix() {
    // Queue file 98E8398C186: EHLO client.example.net from localhost[127.0.0.1], one
    // recipient, message "Subject: one\r\n\r\nhello\r\n..dot\r\n" (unstuffed: ".dot").
    const POSTFIX: &str = "Received: from client.example.net (localhost [127.0.0.1])\n\
        \tby mx.example.org (Postfix) with ESMTP id 98E8398C186\n\
        \tfor <alice@mx.example.org>; Sat, 28 Nov 2026 14:00:45 +0000 (UTC)\n\
        Subject: one\n\
        Message-Id: <20261128140045.98E8398C186@mx.example.org>\n\
        Date: Sat, 28 Nov 2026 14:00:45 +0000 (UTC)\n\
        From: sender@example.net\n\
        \n\
        hello\n\
        .dot\n";
    let tmp = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(&config(tmp.path(), "")).expect("open");
    let id = QueueId::parse("98E8398C186").expect("id");
    let arrival = UNIX_EPOCH + Duration::new(1_795_874_445, 618_347_000);
    let bytes = q
        .build_file(
            &id,
            &env("sender@example.net", &["alice@mx.example.org"]),
            &client("client.example.net", "localhost", "127.0.0.1", true),
            b"Subject: one\r\n\r\nhello\r\n.dot\r\n",
            arrival,
        )
        .expect("build");
    let m = qfile::parse(&bytes, "98E8398C186").expect("parse");
    assert_eq!(mask_date(&m.content, arrival, PF_DATE_1), POSTFIX);
    // The envelope layout too: Postfix's size record said 340 692 1 0 340 0.
    assert_eq!(m.message_size, 340);
    assert_eq!(m.rcpt_count, 1);
    assert_eq!(m.rewrite_context.as_deref(), Some("local"));
}

#[test]
fn received_two_recipients_and_quoted_recipient_match_postfix() {
    // Queue file 99CBC98C182: two recipients, message had its own From/Date/Message-ID.
    const POSTFIX_TWO: &str = "Received: from client.example.net (localhost [127.0.0.1])\n\
        \tby mx.example.org (Postfix) with ESMTP id 99CBC98C182;\n\
        \tSat, 28 Nov 2026 14:00:45 +0000 (UTC)\n\
        Subject: two\n\
        From: x@y\n\
        Date: Mon, 1 Jan 2024 00:00:00 +0000\n\
        Message-ID: <a@b>\n\
        \n\
        hello\n";
    // Queue file 9A97798C188: from 127.0.0.2 (unknown, not local: nothing added), RCPT
    // TO:<"odd user"@mx.example.org>.
    const POSTFIX_ODD: &str = "Received: from client.example.net (unknown [127.0.0.2])\n\
        \tby mx.example.org (Postfix) with ESMTP id 9A97798C188\n\
        \tfor <\"odd user\"@mx.example.org>; Sat, 28 Nov 2026 14:00:45 +0000 (UTC)\n\
        Subject: three\n\
        \n\
        body\n";
    let tmp = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(&config(tmp.path(), "")).expect("open");
    let arrival = UNIX_EPOCH + Duration::new(1_795_874_445, 0);
    let two = q
        .build_file(
            &QueueId::parse("99CBC98C182").expect("id"),
            &env(
                "sender@example.net",
                &["alice@mx.example.org", "bob@mx.example.org"],
            ),
            &client("client.example.net", "localhost", "127.0.0.1", true),
            b"Subject: two\r\nFrom: x@y\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <a@b>\r\n\r\nhello\r\n",
            arrival,
        )
        .expect("build");
    let m = qfile::parse(&two, "99CBC98C182").expect("parse");
    assert_eq!(mask_date(&m.content, arrival, PF_DATE_1), POSTFIX_TWO);

    let odd = q
        .build_file(
            &QueueId::parse("9A97798C188").expect("id"),
            &env("sender@example.net", &["odd user@mx.example.org"]),
            &client("client.example.net", "unknown", "127.0.0.2", false),
            b"Subject: three\r\n\r\nbody\r\n",
            arrival,
        )
        .expect("build");
    let m = qfile::parse(&odd, "9A97798C188").expect("parse");
    assert_eq!(mask_date(&m.content, arrival, PF_DATE_1), POSTFIX_ODD);
    assert_eq!(
        m.recipients[0].orcpt.as_deref(),
        Some("rfc822;\"odd user\"@mx.example.org")
    );
    assert_eq!(m.rewrite_context.as_deref(), Some("remote"));
}

/// Queue file C3CBC98C011 exactly as Postfix 3.7.11 wrote it: STARTTLS (TLSv1.3), SMTPUTF8,
/// BODY=8BITMIME, RET=HDRS, ENVID=xyz+2Babc, two recipients each with
/// NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig@example.com, smtpd_tls_received_header = yes.
const POSTFIX_QUEUE_FILE: &[u8] =
    b"C_            499             843               2              12             499      \
    \x20        7T\x111795874480 792028A\x16create_time=1795874480A\x15log_ident=C3CBC98C011A\
    \x15rewrite_context=localA\x13envelope_id=xyz+abcA\x0bret_flags=2S\x13s\xc3\xa9nder@examp\
    le.netA\x0dencoding=8bitA\x19log_client_name=localhostA\x1clog_client_address=127.0.0.1A\x15\
    log_client_port=40458A'log_message_origin=localhost[127.0.0.1]A\x1dlog_helo_name=tls.exam\
    ple.netA\x17log_protocol_name=ESMTPA\x15client_name=localhostA\x1dreverse_client_name=loc\
    alhostA\x18client_address=127.0.0.1A\x11client_port=40458A\x18server_address=127.0.0.1A\x10\
    server_port=2625A\x19helo_name=tls.example.netA\x13protocol_name=ESMTPA\x15client_address\
    _type=2A\x0enotify_flags=6A%dsn_orig_rcpt=rfc822;orig@example.comO\x14alice@mx.example.or\
    gR\x14alice@mx.example.orgA\x0enotify_flags=6A%dsn_orig_rcpt=rfc822;orig@example.comO\x12\
    bob@mx.example.orgR\x12bob@mx.example.orgM\x00N6Received: from tls.example.net (localhost\
    \x20[127.0.0.1])NA\x09(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)NP\x09\
    \x20key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)N\x22\x09\
    (No client certificate requested)N;\x09by mx.example.org (Postfix) with UTF8SMTPS id C3CB\
    C98C011;N&\x09Sat, 28 Nov 2026 14:01:20 +0000 (UTC)N\x0fSubject: tls \xc3\xbcN7Message-Id\
    : <20261128140120.C3CBC98C011@mx.example.org>N+Date: Sat, 28 Nov 2026 14:01:20 +0000 (UTC\
    )N\x19From: s\xc3\xa9nder@example.netN\x00N\x07body \xc3\xbcX\x00A\x0dencoding=8bitE\x00";

#[test]
fn reader_reads_a_real_postfix_queue_file() {
    let m = qfile::parse(POSTFIX_QUEUE_FILE, "C3CBC98C011").expect("parse");
    assert_eq!(m.sender, "sénder@example.net");
    assert_eq!(
        m.arrival,
        UNIX_EPOCH + Duration::new(1_795_874_480, 792_028_000)
    );
    assert_eq!(m.envid.as_deref(), Some("xyz+abc"));
    assert_eq!(m.ret_flags, qfile::DSN_RET_HDRS);
    assert_eq!(m.encoding.as_deref(), Some("8bit"));
    assert_eq!(m.smtputf8, 7);
    assert_eq!(m.qmgr_opts, 12);
    assert_eq!(m.recipients.len(), 2);
    for r in &m.recipients {
        assert_eq!(r.orcpt.as_deref(), Some("rfc822;orig@example.com"));
        assert_eq!(r.notify().as_deref(), Some("SUCCESS,FAILURE"));
        assert!(!r.done);
    }
    assert_eq!(m.recipients[1].address, "bob@mx.example.org");
    assert_eq!(m.attr("helo_name"), Some("tls.example.net"));
    assert_eq!(m.attr("client_port"), Some("40458"));
}

#[test]
fn tls_received_header_and_envelope_match_postfix() {
    let real = qfile::parse(POSTFIX_QUEUE_FILE, "C3CBC98C011").expect("parse");
    let tmp = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(&config(tmp.path(), "smtpd_tls_received_header = yes\n")).expect("open");
    let envelope = Envelope {
        sender: "sénder@example.net".into(),
        recipients: ["alice@mx.example.org", "bob@mx.example.org"]
            .iter()
            .map(|a| Recipient {
                address: a.to_string(),
                orcpt: Some("rfc822;orig@example.com".into()),
                notify: Some("SUCCESS,FAILURE".into()),
            })
            .collect(),
        size_hint: None,
        body_type: Some("8BITMIME".into()),
        smtputf8: true,
        ret: Some("HDRS".into()),
        envid: Some("xyz+abc".into()),
    };
    let mut cl = client("tls.example.net", "localhost", "127.0.0.1", true);
    cl.port = 40458;
    cl.protocol = "UTF8SMTPS".into();
    cl.tls = Some(
        "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n \
         key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\n\
         (No client certificate requested)"
            .into(),
    );
    let bytes = q
        .build_file(
            &QueueId::parse("C3CBC98C011").expect("id"),
            &envelope,
            &cl,
            "Subject: tls ü\r\n\r\nbody ü\r\n".as_bytes(),
            real.arrival,
        )
        .expect("build");
    let ours = qfile::parse(&bytes, "C3CBC98C011").expect("parse");
    assert_eq!(
        mask_date(
            &ours.content,
            real.arrival,
            "Sat, 28 Nov 2026 14:01:20 +0000 (UTC)"
        ),
        String::from_utf8_lossy(&real.content)
    );
    assert_eq!(ours.sender, real.sender);
    assert_eq!(ours.recipients.len(), real.recipients.len());
    for (a, b) in ours.recipients.iter().zip(&real.recipients) {
        assert_eq!(
            (&a.address, &a.orcpt, a.notify_flags),
            (&b.address, &b.orcpt, b.notify_flags)
        );
    }
    assert_eq!(
        (
            ours.envid.clone(),
            ours.ret_flags,
            ours.encoding.clone(),
            ours.smtputf8
        ),
        (
            real.envid.clone(),
            real.ret_flags,
            real.encoding.clone(),
            real.smtputf8
        )
    );
    assert_eq!(
        (ours.message_size, ours.rcpt_count, ours.qmgr_opts),
        (real.message_size, real.rcpt_count, real.qmgr_opts)
    );
    for k in [
        "client_name",
        "client_address",
        "client_port",
        "helo_name",
        "protocol_name",
        "log_message_origin",
        "client_address_type",
    ] {
        assert_eq!(ours.attr(k), real.attr(k), "attribute {k}");
    }
}

#[test]
fn sasl_header_when_enabled() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(&config(
        tmp.path(),
        "smtpd_sasl_authenticated_header = yes\n",
    ))
    .expect("open");
    let mut cl = client("client.example.net", "localhost", "127.0.0.1", false);
    cl.protocol = "ESMTPA".into();
    cl.sasl_method = Some("PLAIN".into());
    cl.sasl_username = Some("alice".into());
    let arrival = UNIX_EPOCH + Duration::new(1_795_874_445, 0);
    let bytes = q
        .build_file(
            &QueueId::parse("98E8398C186").expect("id"),
            &env("sender@example.net", &["bob@example.org"]),
            &cl,
            b"Subject: x\r\n\r\ny\r\n",
            arrival,
        )
        .expect("build");
    let m = qfile::parse(&bytes, "98E8398C186").expect("parse");
    assert!(
        mask_date(&m.content, arrival, PF_DATE_1).starts_with(
            "Received: from client.example.net (localhost [127.0.0.1])\n\
             \t(Authenticated sender: alice)\n\
             \tby mx.example.org (Postfix) with ESMTPA id 98E8398C186\n\
             \tfor <bob@example.org>; Sat, 28 Nov 2026 14:00:45 +0000 (UTC)\n"
        ),
        "{}",
        String::from_utf8_lossy(&m.content)
    );
}

/// Group-commit throughput: 20 concurrent committers, 2 KB messages. Prints messages/second
/// for each sync strategy; asserts nothing about speed (DESIGN.md §6).
/// `cargo test --release --test queue -- --ignored --nocapture bench`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_group_commit() {
    let total: usize = std::env::var("QUEUE_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let base = std::env::var_os("QUEUE_BENCH_DIR").map(PathBuf::from);
    let mut body = b"Subject: bench\r\nFrom: a@example.net\r\n\r\n".to_vec();
    while body.len() < 2048 {
        body.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
        );
    }
    body.truncate(2046);
    body.extend_from_slice(b"\r\n");
    for mode in [
        SyncMode::ParallelFsync,
        SyncMode::StartThenFsync,
        SyncMode::Fsync,
        SyncMode::Syncfs,
    ] {
        let tmp = match &base {
            Some(b) => tempfile::tempdir_in(b),
            None => tempfile::tempdir(),
        }
        .expect("tempdir");
        let q = Queue::open_with(&config(tmp.path(), ""), mode).expect("open");
        let per_task = total / 20;
        let start = std::time::Instant::now();
        let mut tasks = Vec::new();
        for t in 0..20 {
            let q = Arc::clone(&q);
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per_task {
                    let id = q.new_queue_id();
                    q.commit(
                        &id,
                        &env("a@example.net", &[&format!("u{t}-{i}@example.org")]),
                        &client("h", "unknown", "192.0.2.1", false),
                        body.clone(),
                    )
                    .await
                    .expect("commit");
                }
            }));
        }
        for t in tasks {
            t.await.expect("join");
        }
        let secs = start.elapsed().as_secs_f64();
        let n = per_task * 20;
        println!(
            "{mode:?}: {n} messages of 2 KB, 20 committers: {secs:.2} s, {:.0} messages/s",
            n as f64 / secs
        );
    }
}

/// The listing's reader (`file::summary`, for `mailq` and `postqueue -j`) accepts and refuses
/// exactly the files `file::parse` does, and reads the same size, arrival, sender and
/// pending recipients: on a real Postfix file, on one of Postern's with a done recipient,
/// and on every cut of both and every one-byte change of Postern's.
#[test]
fn listing_summary_agrees_with_the_full_reader() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(&config(tmp.path(), "")).expect("open");
    let id = QueueId::parse("98E8398C186").expect("id");
    let arrival = UNIX_EPOCH + Duration::new(1_795_874_445, 618_347_000);
    let mut ours = q
        .build_file(
            &id,
            &env(
                "",
                &["alice@mx.example.org", "bob@example.net", "c d@example.net"],
            ),
            &client("client.example.net", "localhost", "127.0.0.1", true),
            b"Subject: one\r\n\r\nhello\r\n.dot\r\n",
            arrival,
        )
        .expect("build");
    // Bob done, as the queue manager marks a delivered recipient.
    let bob = qfile::parse(&ours, "98E8398C186")
        .expect("parse")
        .recipients[1]
        .offset;
    ours[bob as usize] = b'D';
    let agree =
        |buf: &[u8], what: &str| match (qfile::parse(buf, "98E8398C186"), qfile::summary(buf)) {
            (Ok(m), Ok(s)) => {
                assert_eq!(s.message_size, m.message_size, "{what}");
                assert_eq!(s.arrival, m.arrival, "{what}");
                assert_eq!(s.sender, m.sender, "{what}");
                let pending: Vec<&str> = m.pending().map(|r| r.address.as_str()).collect();
                assert_eq!(s.pending, pending, "{what}");
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{what}"),
            (a, b) => panic!("{what}: parse {a:?}, summary {b:?}"),
        };
    let m = qfile::parse(&ours, "98E8398C186").expect("parse");
    assert_eq!(m.pending().count(), 2);
    agree(&ours, "Postern's file");
    agree(POSTFIX_QUEUE_FILE, "Postfix's file");
    for buf in [&ours[..], POSTFIX_QUEUE_FILE] {
        for cut in 0..buf.len() {
            agree(&buf[..cut], &format!("cut at {cut}"));
        }
    }
    for at in 0..ours.len() {
        for b in [
            b'N', b'X', b'E', b'p', b'R', b'S', b'C', b'T', b'0', 0x80, b' ',
        ] {
            let mut changed = ours.clone();
            changed[at] = b;
            agree(&changed, &format!("byte {at} = {b:#x}"));
        }
    }
}
