//! imapd over real sockets: `postern dovecot -c FILE` started as admins start it (and
//! `dovecot stop`), spoken to with real clients (Python's imaplib, `curl imap://`, the
//! `imap` crate, a raw client for the byte-exact checks), and side by side with the real
//! Dovecot 2.3.19 (private instances on loopback ports over copies of the same mailboxes):
//! the recorded session transcript, a differential dialogue over the fixture corpus on
//! Maildir and mbox, swaps both ways (Dovecot flags and expunges, Postern reads the same
//! UIDs and flags; and the reverse), two sessions and local delivery on one mailbox with
//! IDLE, TLS (STARTTLS, imaps, LOGINDISABLED), bad input, logs and limits.
//!
//! Tests that need root (a mail user for the sessions), python3, curl or Debian's
//! dovecot-imapd say so and return early without them.

mod common;
use common::*;

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The mail user of the sessions (the one `scripts/regen-imap-fixtures` uses too).
const USER: &str = "posternimap";

/// The mail user (created if missing when root) and its uid/gid.
fn mail_user() -> (u32, u32) {
    user_ids(USER)
}

fn chown_r(p: &Path) {
    let (uid, gid) = mail_user();
    let _ = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(p)
        .output();
}

/// Where the mail is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Store {
    Maildir,
    Mbox,
}

impl Store {
    fn location(self) -> &'static str {
        match self {
            Store::Maildir => "maildir:~/Maildir",
            Store::Mbox => "mbox:~/mail:INBOX=~/inbox",
        }
    }
    fn separator(self) -> &'static str {
        match self {
            Store::Maildir => ".",
            Store::Mbox => "/",
        }
    }
}

/// Homes for alice and bob (empty INBOXes), their passwd-file, in a fresh directory.
fn homes(store: Store) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for u in ["alice", "bob"] {
        let h = d.join("home").join(u);
        std::fs::create_dir_all(&h).expect("home");
        if store == Store::Mbox {
            std::fs::create_dir_all(h.join("mail")).expect("mail");
            std::fs::write(h.join("inbox"), "").expect("inbox");
        }
    }
    chown_r(&d.join("home"));
    std::fs::write(
        d.join("passwd"),
        "alice:{PLAIN}secret::::::\nbob:{PLAIN}secret::::::\n",
    )
    .expect("passwd");
    dir
}

/// A dovecot.conf both Postern and the real Dovecot accept: IMAP on `port`, `name` for
/// the base directory and log (so both can run over the same homes), the namespace of
/// `scripts/regen-imap-fixtures` (special-use Drafts, Sent, Trash).
fn conf(dir: &Path, name: &str, port: u16, store: Store, extra: &str) -> String {
    let (uid, gid) = mail_user();
    let d = dir.display();
    format!(
        "protocols = imap\nbase_dir = {d}/{name}-base\nstate_dir = {d}/{name}-state\n\
         listen = 127.0.0.1\nlog_path = {d}/{name}.log\nmail_location = {loc}\n\
         auth_failure_delay = 0\n\
         passdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
         userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={d}/home/%u\n}}\n\
         namespace inbox {{\n  inbox = yes\n  separator = {sep}\n  mailbox Drafts {{\n    special_use = \\Drafts\n  }}\n  mailbox Sent {{\n    special_use = \\Sent\n  }}\n  mailbox Trash {{\n    special_use = \\Trash\n  }}\n}}\n\
         service imap-login {{\n  inet_listener imap {{\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
         {extra}",
        loc = store.location(),
        sep = store.separator(),
    )
}

/// `postern dovecot -c FILE` on `dir` (the master detaches; the command returns once it
/// serves), stopped with `dovecot -c FILE stop` on drop.
fn postern_server(dir: &Path, store: Store, extra: &str) -> Dovecot {
    postern_server_named(dir, "postern", store, extra)
}

fn postern_server_named(dir: &Path, name: &str, store: Store, extra: &str) -> Dovecot {
    let port = free_port();
    let cf = dir.join(format!("{name}.conf"));
    std::fs::write(&cf, conf(dir, name, port, store, extra)).expect("conf");
    Dovecot::start(Which::Postern, &cf, port, &dir.join(format!("{name}.log")))
}

/// The real Dovecot (`/usr/sbin/dovecot -c FILE`) on `dir`; `None` (the test is
/// skipped) without root or Debian's dovecot-imapd.
fn dovecot_server(dir: &Path, store: Store, extra: &str) -> Option<Dovecot> {
    if !Dovecot::real_available("imap") {
        return None;
    }
    let port = free_port();
    let cf = dir.join("dovecot.conf");
    std::fs::write(&cf, conf(dir, "dovecot", port, store, extra)).expect("conf");
    Some(Dovecot::start(
        Which::Real,
        &cf,
        port,
        &dir.join("dovecot.log"),
    ))
}

/// A reply normalized for comparing two servers (the one normaliser, shared with the
/// unit tests' replay: [`postern::imap::fixture::normalize`]).
fn norm(lines: &[String]) -> Vec<String> {
    postern::imap::fixture::normalize(lines)
}

/// The fixture corpus (compat-fixtures/imap/corpus), CRLF line ends.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = repo_root().join("compat-fixtures/imap/corpus");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".eml"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let raw = std::fs::read(dir.join(&n)).expect("eml");
            let mut crlf = Vec::with_capacity(raw.len() + raw.len() / 20);
            let mut prev = 0u8;
            for &c in &raw {
                if c == b'\n' && prev != b'\r' {
                    crlf.push(b'\r');
                }
                crlf.push(c);
                prev = c;
            }
            (n, crlf)
        })
        .collect()
}

/// APPEND the corpus to INBOX with fixed dates; returns the replies.
fn append_corpus(c: &mut Imap) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (_, body)) in corpus().into_iter().enumerate() {
        c.n += 1;
        let tag = format!("t{}", c.n);
        let date = format!("0{}-Dec-2025 10:{:02}:00 +0000", 1 + i % 9, i % 60);
        c.send(format!("{tag} APPEND INBOX \"{date}\" {{{}+}}\r\n", body.len()).as_bytes());
        c.send(&body);
        c.send(b"\r\n");
        out.extend(c.until(&tag));
    }
    out
}

// ---------------------------------------------------------------------------------------

/// The session transcript Dovecot 2.3.19 gave (compat-fixtures/imap/session.txt, every
/// command and error case in each state), recorded again from Postern by the same script:
/// the same replies, byte for byte once UIDVALIDITY and MODSEQ values are set aside, LIST
/// lines compared as sets (Dovecot lists Maildir folders in readdir order).
#[test]
fn session_transcript_matches_recorded_dovecot() {
    if !is_root() || Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and python3");
        return;
    }
    let dir = homes(Store::Maildir);
    let s = postern_server(
        dir.path(),
        Store::Maildir,
        "ssl = no\ndisable_plaintext_auth = no\n",
    );
    let out_dir = dir.path().join("rec");
    std::fs::create_dir_all(&out_dir).expect("rec");
    let out = Command::new(repo_root().join("scripts/regen-imap-fixtures"))
        .env("IMAP_SESSION_PORT", s.port.to_string())
        .env("IMAP_FIXTURES_OUT", &out_dir)
        .output()
        .expect("regen-imap-fixtures");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = postern::imapd::message::compat::records(&read(&out_dir.join("session.txt")));
    let theirs = postern::imapd::message::compat::records(&read(
        &repo_root().join("compat-fixtures/imap/session.txt"),
    ));
    assert_eq!(ours.len(), theirs.len());
    let lines = |b: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(b)
            .split("\r\n")
            .map(str::to_string)
            .collect()
    };
    let mut differ = Vec::new();
    for ((c1, s1), (_, s2)) in theirs.iter().zip(ours.iter()) {
        if norm(&lines(s1)) != norm(&lines(s2)) {
            differ.push(format!(
                "{}:\n dovecot: {:?}\n postern: {:?}",
                String::from_utf8_lossy(&c1[..c1.len().min(60)]),
                norm(&lines(s1)),
                norm(&lines(s2))
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// The commands every client sends, and their error cases, on the fixture corpus: the
/// same tagged results and untagged data from Postern as from the real Dovecot, each
/// serving its own copy of the same (empty) homes, on Maildir and on mbox.
#[test]
fn differential_against_real_dovecot() {
    for store in [Store::Maildir, Store::Mbox] {
        let dirs = [homes(store), homes(store)];
        let extra = "ssl = no\ndisable_plaintext_auth = no\n";
        let Some(real) = dovecot_server(dirs[0].path(), store, extra) else {
            return;
        };
        let ours = postern_server(dirs[1].path(), store, extra);
        let theirs = dialogue(real.port, store);
        let mine = dialogue(ours.port, store);
        assert_eq!(theirs.len(), mine.len());
        // The script's APPENDs are taken (so their comparison says something).
        for (cmd, r) in &theirs {
            if cmd.starts_with("APPEND Archive") {
                assert!(
                    r.last().is_some_and(|l| l.contains(" OK [APPENDUID ")),
                    "{store:?} {cmd}: {r:?}"
                );
            }
        }
        let mut differ = Vec::new();
        for ((cmd, a), (_, b)) in theirs.iter().zip(mine.iter()) {
            if norm(a) != norm(b) {
                differ.push(format!(
                    "{store:?} {cmd}:\n dovecot: {:?}\n postern: {:?}",
                    norm(a),
                    norm(b)
                ));
            }
        }
        assert!(differ.is_empty(), "{}", differ.join("\n"));
    }
}

/// The differential script: (command, reply lines).
fn dialogue(port: u16, store: Store) -> Vec<(String, Vec<String>)> {
    let sep = store.separator();
    let mut c = Imap::login(port, "alice");
    let mut out = Vec::new();
    for cmd in ["ENABLE CONDSTORE", "SELECT INBOX"] {
        let r = c.cmd(cmd);
        out.push((cmd.to_string(), r));
    }
    let appended = append_corpus(&mut c);
    out.push(("APPEND corpus".into(), appended));
    for cmd in [
        "NOOP".to_string(),
        "FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)".into(),
        "STORE 1,3,5 +FLAGS (\\Seen \\Answered)".into(),
        "STORE 2 +FLAGS.SILENT ($Forwarded Work)".into(),
        "UID STORE 4:6 -FLAGS (\\Answered)".into(),
        "STORE 7 (UNCHANGEDSINCE 1) +FLAGS (\\Flagged)".into(),
        "FETCH 1:* FLAGS".into(),
        "FETCH 1:4 (ENVELOPE BODYSTRUCTURE)".into(),
        // Headers only (Postern's header cache on Maildir: filled, then read).
        "FETCH 1:* (UID ENVELOPE BODY.PEEK[HEADER])".into(),
        "FETCH 1:* (RFC822.HEADER BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)])".into(),
        "FETCH 5:8 (BODY BODY.PEEK[HEADER] BODY.PEEK[1.MIME] BINARY.SIZE[1])".into(),
        "FETCH 3 (BODY[TEXT]<0.50> BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])".into(),
        "UID FETCH 9:* (UID RFC822.SIZE BODY.PEEK[]<10.30>)".into(),
        "FETCH 9 RFC822".into(),
        "FETCH 10 (FLAGS) (CHANGEDSINCE 1)".into(),
        "SEARCH UNSEEN".into(),
        "SEARCH OR FLAGGED KEYWORD Work".into(),
        "SEARCH SUBJECT thread".into(),
        "UID SEARCH TEXT attachment".into(),
        "SEARCH RETURN (MIN MAX COUNT) ALL".into(),
        "SEARCH RETURN (SAVE) SEEN".into(),
        "FETCH $ UID".into(),
        "SEARCH SINCE 1-Jan-2020 NOT DELETED".into(),
        "SORT (SUBJECT DATE) UTF-8 ALL".into(),
        "SORT RETURN (ALL COUNT) (REVERSE SIZE) UTF-8 ALL".into(),
        "THREAD REFERENCES UTF-8 ALL".into(),
        "THREAD ORDEREDSUBJECT UTF-8 ALL".into(),
        "CREATE Trash".into(),
        "CREATE Archive".into(),
        format!("CREATE Archive{sep}2025"),
        "COPY 1:2 Trash".into(),
        "UID COPY 3 Archive".into(),
        "MOVE 4 Trash".into(),
        "STORE 5 +FLAGS (\\Deleted)".into(),
        "EXPUNGE".into(),
        "UID EXPUNGE 1:*".into(),
        "FETCH 1:* (ENVELOPE BODY.PEEK[HEADER.FIELDS (FROM DATE)])".into(),
        "LIST \"\" *".into(),
        "LIST \"\" %".into(),
        "LIST \"\" * RETURN (CHILDREN SPECIAL-USE STATUS (MESSAGES UNSEEN))".into(),
        "SUBSCRIBE Archive".into(),
        "LSUB \"\" *".into(),
        "STATUS Trash (MESSAGES RECENT UIDNEXT UNSEEN)".into(),
        format!("RENAME Archive{sep}2025 Old"),
        "DELETE Old".into(),
        "EXAMINE Trash".into(),
        "FETCH 1:* (UID FLAGS)".into(),
        "STORE 1 +FLAGS (\\Seen)".into(),
        "CLOSE".into(),
        "SELECT INBOX".into(),
        "FETCH 1:* (FLAGS)".into(),
        "UNSELECT".into(),
        "NAMESPACE".into(),
        // A message that is all header, no line end at its end.
        "APPEND Archive {10+}\r\nSubject: x".into(),
        // CATENATE with a URL (parameter names in lower case, as imaptest sends them).
        "APPEND Archive CATENATE (URL \"/INBOX/;uid=10/;section=header\" TEXT {7+}\r\nbody2\r\n)"
            .into(),
        // A literal8 message with a binary part: saved as base64 (Dovecot's converter).
        {
            let m = "From: a@example.org\r\nContent-Type: application/octet-stream\r\n\
                     Content-Transfer-Encoding: binary\r\n\r\n\u{0}-z\n\r\n\n";
            format!("APPEND Archive ~{{{}+}}\r\n{m}", m.len())
        },
        // The same inside a multipart (Dovecot converts every such part).
        {
            let m = "From: a@example.org\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
                     pre\r\n--b\r\nContent-Type: text/plain\r\n\r\ntext\r\n--b\r\n\
                     Content-Type: application/octet-stream\r\n\
                     Content-Transfer-Encoding: binary\r\n\r\n\u{0}\u{1}-z\n\r\n\r\n--b--\r\nepi\r\n";
            format!("APPEND Archive ~{{{}+}}\r\n{m}", m.len())
        },
        "EXAMINE Archive".into(),
        "FETCH 1:* (RFC822.SIZE BODY[] BODYSTRUCTURE)".into(),
        "FETCH 3 (BINARY.SIZE[1] BINARY.PEEK[1])".into(),
        "FETCH 4 (BINARY.SIZE[2] BINARY.PEEK[2] BODY.PEEK[2.MIME] BINARY.PEEK[1])".into(),
        "LOGOUT".into(),
    ] {
        let r = c.cmd(&cmd);
        out.push((cmd, r));
    }
    out
}

/// CONTEXT=SEARCH (RFC 5267) beside the real Dovecot: PARTIAL for SEARCH and SORT and its
/// errors, UPDATE results reported after this session's STOREs and another session's
/// flag changes, expunges and APPEND (REMOVEFROM before the EXPUNGE replies),
/// CANCELUPDATE, the limit of 10 kept results, SAVE with PARTIAL; on Maildir and mbox.
#[test]
fn context_search_against_real_dovecot() {
    for store in [Store::Maildir, Store::Mbox] {
        let dirs = [homes(store), homes(store)];
        let extra = "ssl = no\ndisable_plaintext_auth = no\n";
        let Some(real) = dovecot_server(dirs[0].path(), store, extra) else {
            return;
        };
        let ours = postern_server(dirs[1].path(), store, extra);
        let theirs = context_dialogue(real.port);
        let mine = context_dialogue(ours.port);
        assert_eq!(theirs.len(), mine.len());
        // The script does what it means to: updates are reported at all.
        assert!(
            theirs
                .iter()
                .any(|(_, r)| r.iter().any(|l| l.contains(" REMOVEFROM (0 "))),
            "{theirs:?}"
        );
        assert!(
            theirs
                .iter()
                .any(|(_, r)| r.iter().any(|l| l.contains(" ADDTO (0 "))),
            "{theirs:?}"
        );
        let mut differ = Vec::new();
        for ((cmd, a), (_, b)) in theirs.iter().zip(mine.iter()) {
            if norm(a) != norm(b) {
                differ.push(format!(
                    "{store:?} {cmd}:\n dovecot: {:?}\n postern: {:?}",
                    norm(a),
                    norm(b)
                ));
            }
        }
        assert!(differ.is_empty(), "{}", differ.join("\n"));
    }
}

/// The CONTEXT=SEARCH script: (command, reply lines); `[other] …` runs in a second
/// session on the same mailbox.
fn context_dialogue(port: u16) -> Vec<(String, Vec<String>)> {
    let mut c = Imap::login(port, "alice");
    let mut out = Vec::new();
    let r = c.cmd("SELECT INBOX");
    out.push(("SELECT INBOX".to_string(), r));
    let appended = append_corpus(&mut c);
    out.push(("APPEND corpus".into(), appended));
    let mut other = Imap::login(port, "alice");
    other.cmd("SELECT INBOX");
    let script: Vec<String> = vec![
        "STORE 1,5,9 +FLAGS (\\Flagged)".into(),
        "SEARCH RETURN (PARTIAL 2:4) ALL".into(),
        "SEARCH RETURN (PARTIAL 4:2 MIN MAX COUNT) ALL".into(),
        "UID SEARCH RETURN (PARTIAL 1:100) FLAGGED".into(),
        "SEARCH RETURN (PARTIAL 30:40) ALL".into(),
        "SORT RETURN (PARTIAL 1:3) (REVERSE ARRIVAL) UTF-8 ALL".into(),
        "UID SORT RETURN (PARTIAL 2:5 COUNT) (SUBJECT) UTF-8 ALL".into(),
        "SEARCH RETURN (PARTIAL 1) ALL".into(),
        "SEARCH RETURN (PARTIAL 0:1) ALL".into(),
        "SEARCH RETURN (PARTIAL 1:*) ALL".into(),
        "SEARCH RETURN (PARTIAL) ALL".into(),
        "SEARCH RETURN (PARTIAL 1:2 ALL) ALL".into(),
        "SEARCH RETURN (PARTIAL 1:2 PARTIAL 1:2) ALL".into(),
        "SEARCH RETURN (UPDATE UPDATE) ALL".into(),
        "SEARCH RETURN ((MIN)) ALL".into(),
        "SEARCH RETURN (CONTEXT COUNT) ALL".into(),
        "SEARCH RETURN (SAVE PARTIAL 1:2) FLAGGED".into(),
        "FETCH $ UID".into(),
        "SEARCH RETURN (SAVE COUNT PARTIAL 2:2) FLAGGED".into(),
        "FETCH $ UID".into(),
        // t43, t44, t45 (LOGIN t1, SELECT t2, the corpus t3–t22): the kept results.
        "SEARCH RETURN (UPDATE) UNSEEN".into(),
        "UID SEARCH RETURN (UPDATE COUNT) FLAGGED".into(),
        "SORT RETURN (UPDATE MIN) (SUBJECT) UTF-8 SEEN".into(),
        "STORE 1:3 +FLAGS (\\Seen)".into(),
        "FETCH 4 BODY[]<0.10>".into(),
        "[other] NOOP".into(),
        "[other] STORE 6 +FLAGS (\\Flagged)".into(),
        "[other] STORE 2,5 +FLAGS (\\Deleted)".into(),
        "[other] EXPUNGE".into(),
        "[other] APPEND INBOX (\\Flagged) {20+}\r\nSubject: new\r\n\r\nbody".into(),
        "NOOP".into(),
        "SEARCH RETURN (UPDATE) ALL".into(),
        "CANCELUPDATE \"t43\"".into(),
        "CANCELUPDATE \"t43\"".into(),
        "CANCELUPDATE".into(),
        "CANCELUPDATE t44".into(),
        "STORE 1:* -FLAGS (\\Seen \\Flagged)".into(),
        "STORE 7 +FLAGS (\\Deleted)".into(),
        "EXPUNGE".into(),
        "SEARCH RETURN (UPDATE) ALL".into(),
        "SEARCH RETURN (UPDATE) ALL".into(),
        "SEARCH RETURN (UPDATE) ALL".into(),
        "SEARCH RETURN (UPDATE) ALL".into(),
        "SEARCH RETURN (UPDATE) ALL".into(),
        "SEARCH RETURN (UPDATE) ALL".into(),
        "SEARCH RETURN (UPDATE) ALL".into(),
        "SEARCH RETURN (UPDATE COUNT) ALL".into(),
        "UNSELECT".into(),
        "CANCELUPDATE \"t44\"".into(),
        "SELECT INBOX".into(),
        "STORE 1 +FLAGS (\\Flagged)".into(),
        "LOGOUT".into(),
    ];
    for cmd in script {
        let r = match cmd.strip_prefix("[other] ") {
            Some(o) => other.cmd(o),
            None => c.cmd(&cmd),
        };
        out.push((cmd, r));
    }
    out
}

/// The quota plugins as the issue's configuration turns them on (`mail_plugins = quota`,
/// `imap_quota` for imap, a Maildir++ `maildir` root with a `*:storage=` rule).
const QUOTA_CONF: &str = "mail_plugins = $mail_plugins quota\nprotocol imap {\n  mail_plugins = $mail_plugins imap_quota\n}\nplugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=100K\n}\n";

/// QUOTA beside the real Dovecot: GETQUOTAROOT/GETQUOTA/SETQUOTA and their errors, APPEND
/// (non-synchronizing and synchronizing literals) and COPY refused over the limit with
/// Dovecot's `[OVERQUOTA]` text, MOVE allowed, usage after EXPUNGE; then the real
/// Dovecot started on the Maildir Postern wrote reports the same usage (its
/// `maildirsize`).
#[test]
fn quota_against_real_dovecot() {
    let dirs = [homes(Store::Maildir), homes(Store::Maildir)];
    let extra = format!("ssl = no\ndisable_plaintext_auth = no\n{QUOTA_CONF}");
    let Some(real) = dovecot_server(dirs[0].path(), Store::Maildir, &extra) else {
        return;
    };
    let theirs = quota_dialogue(real.port);
    drop(real);
    let mine = {
        let ours = postern_server(dirs[1].path(), Store::Maildir, &extra);
        quota_dialogue(ours.port)
    };
    assert_eq!(theirs.len(), mine.len());
    // The limit is reached in the script (so the comparison says something).
    assert!(
        theirs
            .iter()
            .any(|(c, r)| c.starts_with("COPY") && r.iter().any(|l| l.contains("[OVERQUOTA]"))),
        "{theirs:?}"
    );
    let mut differ = Vec::new();
    for ((cmd, a), (_, b)) in theirs.iter().zip(mine.iter()) {
        if norm(a) != norm(b) {
            differ.push(format!(
                "{cmd}:\n dovecot: {:?}\n postern: {:?}",
                norm(a),
                norm(b)
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    // Swap: the real Dovecot on Postern's Maildir reads the usage Postern left.
    let maildirsize = read(&dirs[1].path().join("home/alice/Maildir/maildirsize"));
    assert_eq!(maildirsize, b"102400S\n17 1\n", "{maildirsize:?}");
    let Some(real) = dovecot_server(dirs[1].path(), Store::Maildir, &extra) else {
        return;
    };
    let mut c = Imap::login(real.port, "alice");
    let r = c.cmd("GETQUOTAROOT INBOX");
    assert_eq!(
        r.get(1).map(String::as_str),
        Some("* QUOTA \"User quota\" (STORAGE 1 100)"),
        "{r:?}"
    );
}

/// The QUOTA script: (command, reply lines).
fn quota_dialogue(port: u16) -> Vec<(String, Vec<String>)> {
    let mut c = Imap::login(port, "alice");
    let big = format!(
        "Subject: big\r\n\r\n{}",
        format!("{}\r\n", "x".repeat(70)).repeat(800)
    );
    let small = "Subject: s\r\n\r\nbody\r\n";
    let script: Vec<String> = vec![
        "GETQUOTAROOT INBOX".into(),
        "GETQUOTA \"User quota\"".into(),
        "GETQUOTA nosuch".into(),
        "GETQUOTAROOT nosuch".into(),
        "GETQUOTAROOT".into(),
        "GETQUOTA".into(),
        "SETQUOTA \"User quota\" (STORAGE 100)".into(),
        "SETQUOTA x".into(),
        "SETQUOTA x y".into(),
        format!("APPEND INBOX {{{}+}}\r\n{big}", big.len()),
        format!("APPEND INBOX {{{}+}}\r\n{big}", big.len()),
        // A synchronizing literal over quota: NO instead of the continuation.
        format!("APPEND INBOX {{{}}}", big.len()),
        "GETQUOTAROOT INBOX".into(),
        "CREATE Trash".into(),
        "SELECT INBOX".into(),
        "COPY 1 Trash".into(),
        "MOVE 1 Trash".into(),
        "GETQUOTAROOT Trash".into(),
        format!("APPEND INBOX {{{}+}}\r\n{small}", small.len()),
        "SELECT Trash".into(),
        "STORE 1 +FLAGS (\\Deleted)".into(),
        "EXPUNGE".into(),
        "GETQUOTAROOT INBOX".into(),
        "LOGOUT".into(),
    ];
    let mut out = Vec::new();
    for cmd in script {
        let r = c.cmd(&cmd);
        out.push((cmd.chars().take(40).collect(), r));
    }
    out
}

/// The header cache (`postern.cache`, Maildir and mbox): written as the mail user (0600)
/// by a header FETCH, read by the next session; a corrupt file, one of another
/// UIDVALIDITY with false headers, and a symlink in its place are ignored and replaced,
/// the symlink's target untouched; the replies stay those of the messages. An mbox
/// rewritten by an expunge keeps the other entries right; a message edited in place
/// (its `X-UID` kept, its size not) is not served from its old entry.
#[test]
fn header_cache_safe_and_rebuilt() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    for store in [Store::Maildir, Store::Mbox] {
        header_cache_of(store);
    }
}

fn header_cache_of(store: Store) {
    let dir = homes(store);
    let s = postern_server(dir.path(), store, "ssl = no\ndisable_plaintext_auth = no\n");
    let mut c = Imap::login(s.port, "alice");
    for i in 0..3 {
        let m = format!("Subject: s{i}\r\nFrom: a@example.org\r\n\r\nbody {i}\r\n");
        let r = c.cmd(&format!("APPEND INBOX {{{}+}}\r\n{m}", m.len()));
        assert!(r.last().is_some_and(|l| l.contains(" OK ")), "{r:?}");
    }
    c.cmd("LOGOUT");
    let fetch = |port: u16| -> Vec<String> {
        let mut c = Imap::login(port, "alice");
        c.cmd("SELECT INBOX");
        let r = c.cmd("FETCH 1:* (ENVELOPE BODY.PEEK[HEADER])");
        let sort = c.cmd("SORT (SUBJECT) UTF-8 ALL");
        c.cmd("LOGOUT");
        r.into_iter().chain(sort).collect()
    };
    let first = norm(&fetch(s.port));
    assert!(first.iter().any(|l| l.contains("Subject: s2")), "{first:?}");
    let cache = match store {
        Store::Maildir => dir.path().join("home/alice/Maildir/postern.cache"),
        Store::Mbox => dir.path().join("home/alice/mail/.imap/INBOX/postern.cache"),
    };
    let md = std::fs::symlink_metadata(&cache).expect("postern.cache written");
    use std::os::unix::fs::MetadataExt;
    assert_eq!((md.uid(), md.gid()), mail_user());
    assert_eq!(md.mode() & 0o777, 0o600);
    assert!(read(&cache).starts_with(b"POSTERN-CACHE 2 "));
    // Read back by the next session: the same replies.
    assert_eq!(norm(&fetch(s.port)), first);
    // Corrupt, and false headers under another UIDVALIDITY: ignored, rebuilt.
    for bad in [
        b"garbage\n\x00\xff".to_vec(),
        b"POSTERN-CACHE 1 1\n1 18\nSubject: forged\n\n".to_vec(),
        b"POSTERN-CACHE 2 1\n1 18 -\nSubject: forged\n\n".to_vec(),
        b"POSTERN-CACHE 1 1\n1 999\nSubject: x\n".to_vec(),
    ] {
        std::fs::write(&cache, &bad).expect("corrupt");
        chown_r(&cache);
        assert_eq!(norm(&fetch(s.port)), first, "{bad:?}");
        let now = read(&cache);
        assert!(now.starts_with(b"POSTERN-CACHE 2 ") && now != bad);
    }
    // A symlink in its place is not followed: replaced, the target unchanged.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "root's file\n").expect("victim");
    std::fs::remove_file(&cache).expect("rm");
    std::os::unix::fs::symlink(&victim, &cache).expect("symlink");
    assert_eq!(norm(&fetch(s.port)), first);
    assert_eq!(read(&victim), b"root's file\n");
    let md = std::fs::symlink_metadata(&cache).expect("cache");
    assert!(
        md.file_type().is_file(),
        "the symlink was replaced by the cache"
    );
    if store == Store::Maildir {
        return;
    }
    // The mbox rewritten (message 1 expunged): the others' headers still right.
    let mut c = Imap::login(s.port, "alice");
    c.cmd("SELECT INBOX");
    c.cmd("STORE 1 +FLAGS (\\Deleted)");
    c.cmd("EXPUNGE");
    c.cmd("LOGOUT");
    let after = fetch(s.port);
    assert!(
        after.iter().any(|l| l.contains("Subject: s1"))
            && after.iter().any(|l| l.contains("Subject: s2"))
            && !after.iter().any(|l| l.contains("Subject: s0")),
        "{after:?}"
    );
    assert!(
        after.iter().any(|l| l.starts_with("* SORT 1 2")),
        "{after:?}"
    );
    // Edited in place by another program, X-UID kept: the new header is served.
    let inbox = dir.path().join("home/alice/inbox");
    let text = std::fs::read_to_string(&inbox).expect("inbox");
    assert!(text.contains("Subject: s1\n"), "{text}");
    std::fs::write(
        &inbox,
        text.replace("Subject: s1\n", "Subject: s1 edited\n"),
    )
    .expect("edit");
    chown_r(&inbox);
    let edited = fetch(s.port);
    assert!(
        edited.iter().any(|l| l.contains("Subject: s1 edited")),
        "{edited:?}"
    );
}

/// Python's imaplib, as scripts and older tools use it: every command it has.
#[test]
fn imaplib_every_command() {
    if !is_root() || Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and python3");
        return;
    }
    let dir = homes(Store::Maildir);
    let s = postern_server(
        dir.path(),
        Store::Maildir,
        "ssl = no\ndisable_plaintext_auth = no\n",
    );
    let script = format!(
        r#"
import imaplib, time
m = imaplib.IMAP4("127.0.0.1", {port})
assert "IMAP4REV1" in m.capabilities, m.capabilities
print(m.login("alice", "secret")[0])
print(m.noop()[0])
print(m.create("Work")[0], m.create("Work.Sub")[0])
print(sorted(x.decode() for x in m.list()[1]))
print(m.subscribe("Work")[0], [x.decode() for x in m.lsub()[1]])
msg = b"From: a@example.org\r\nSubject: imaplib\r\n\r\nhello imaplib\r\n"
t, d = m.append("INBOX", "(\\Seen)", imaplib.Time2Internaldate(time.time()), msg)
print(t, d[0].decode().split("] ")[1].split(" (")[0])
print(m.append("INBOX", None, None, b"Subject: two\r\n\r\nsecond\r\n")[0])
t, d = m.select("INBOX")
print(t, d)
print(m.search(None, "ALL"))
print(m.search(None, "UNSEEN"))
t, d = m.fetch("1", "(RFC822)")
print(t, d[0][1] == msg)
t, d = m.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
print(t, d[0][1])
print(m.store("2", "+FLAGS", "(\\Flagged)"))
print(m.uid("SEARCH", "FLAGGED"))
print(m.uid("FETCH", "1:*", "(FLAGS)"))
print(m.copy("1:2", "Work")[0])
print(m.status("Work", "(MESSAGES UIDNEXT)"))
print(m.store("1", "+FLAGS", "(\\Deleted)")[0])
print(m.expunge())
print(m.check()[0])
print(m.rename("Work.Sub", "Play")[0])
print(m.delete("Play")[0])
print(m.unsubscribe("Work")[0])
print(m.namespace())
print(m.close()[0])
print(m.logout()[0])
"#,
        port = s.port
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = [
        "OK",
        "OK",
        "OK OK",
        "['(\\\\HasChildren) \".\" Work', '(\\\\HasNoChildren) \".\" INBOX', '(\\\\HasNoChildren) \".\" Work.Sub']",
        "OK ['() \".\" Work']",
        "OK Append completed",
        "OK",
        "OK [b'2']",
        "('OK', [b'1 2'])",
        "('OK', [b'2'])",
        "OK True",
        "OK b'Subject: two\\r\\n\\r\\n'",
        "('OK', [b'2 (FLAGS (\\\\Flagged \\\\Recent))'])",
        "('OK', [b'2'])",
        "('OK', [b'1 (UID 1 FLAGS (\\\\Seen \\\\Recent))', b'2 (UID 2 FLAGS (\\\\Flagged \\\\Recent))'])",
        "OK",
        "('OK', [b'Work (MESSAGES 2 UIDNEXT 3)'])",
        "OK",
        "('OK', [b'1'])",
        "OK",
        "OK",
        "OK",
        "OK",
        "('OK', [b'((\"\" \".\")) NIL NIL'])",
        "OK",
        "BYE",
    ];
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got, want, "{stdout}");
}

/// `curl imap://`: list, fetch by UID, and the sandbox's `INBOX;MAILINDEX=1`.
#[test]
fn curl_imap() {
    if !is_root() || Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and curl");
        return;
    }
    let dir = homes(Store::Mbox);
    let s = postern_server(
        dir.path(),
        Store::Mbox,
        "ssl = no\ndisable_plaintext_auth = no\n",
    );
    let mut c = Imap::login(s.port, "bob");
    let r = c.cmd("APPEND INBOX {32+}\r\nSubject: curl\r\n\r\nhello from curl");
    assert!(
        r.last().is_some_and(|l| l.contains("OK [APPENDUID")),
        "{r:?}"
    );
    c.cmd("LOGOUT");
    let curl = |url: String| {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "20"])
            .arg(url)
            .output()
            .expect("curl");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let base = format!("imap://bob:secret@127.0.0.1:{}", s.port);
    assert_eq!(
        curl(format!("{base}/")),
        "* LIST (\\HasNoChildren) \"/\" INBOX\r\n"
    );
    let body = curl(format!("{base}/INBOX;UID=1"));
    // Dovecot's mbox save ends a message without a final line end with one.
    assert_eq!(body, "Subject: curl\r\n\r\nhello from curl\r\n");
    assert_eq!(curl(format!("{base}/INBOX;MAILINDEX=1")), body);
    let log = s.wait_log("Logged out");
    assert!(
        log.contains(
            "imap-login: Info: Login: user=<bob>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid="
        ),
        "{log}"
    );
}

/// The `imap` crate (rust-imap) drives a whole session, IDLE included, and parses every
/// reply with imap-proto.
#[test]
fn rust_imap_client() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = homes(Store::Maildir);
    let s = postern_server(
        dir.path(),
        Store::Maildir,
        "ssl = no\ndisable_plaintext_auth = no\n",
    );
    let tcp = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    let mut client = imap::Client::new(tcp);
    client.read_greeting().expect("greeting");
    let caps = client.capabilities().expect("capabilities");
    assert!(caps.has_str("IMAP4rev1") && caps.has_str("AUTH=PLAIN"));
    let mut session = client
        .login("alice", "secret")
        .map_err(|e| e.0)
        .expect("login");
    let caps = session.capabilities().expect("capabilities");
    for c in [
        "IDLE",
        "UIDPLUS",
        "MOVE",
        "CONDSTORE",
        "QRESYNC",
        "SPECIAL-USE",
    ] {
        assert!(caps.has_str(c), "{c}");
    }
    session.create("Sent").expect("create");
    let mut list: Vec<String> = session
        .list(Some(""), Some("*"))
        .expect("list")
        .iter()
        .map(|n| format!("{} {:?}", n.name(), n.attributes()))
        .collect();
    list.sort();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(
        list[1].contains("Sent") && list[1].contains("Sent"),
        "{list:?}"
    );
    session
        .append("INBOX", b"Subject: one\r\n\r\nbody one\r\n")
        .flag(imap::types::Flag::Seen)
        .finish()
        .expect("append");
    let mb = session.select("INBOX").expect("select");
    assert_eq!(mb.exists, 1);
    assert_eq!(mb.uid_next, Some(2));
    let msgs = session
        .fetch("1", "(UID FLAGS RFC822.SIZE BODY[])")
        .expect("fetch");
    let m = msgs.iter().next().expect("one message");
    assert_eq!(m.uid, Some(1));
    assert_eq!(m.body(), Some(&b"Subject: one\r\n\r\nbody one\r\n"[..]));
    assert_eq!(m.size, Some(26));
    session.store("1", "+FLAGS (\\Flagged)").expect("store");
    let found = session.search("FLAGGED").expect("search");
    assert!(found.contains(&1));
    session.copy("1", "Sent").expect("copy");
    // IDLE: a message delivered meanwhile is announced.
    let md = dir.path().join("home/alice/Maildir");
    // Written as root into a scratch Maildir and given to alice there, then renamed into
    // her new/ whole: the session never sees a file it may not read (a real delivery
    // writes as the user).
    let scratch = dir.path().join("scratch");
    let deliverer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let p = postern::mailbox::deliver_maildir(&scratch, b"Subject: two\n\nbody two\n")
            .expect("deliver");
        chown_r(&p);
        std::fs::rename(&p, md.join("new").join(p.file_name().unwrap())).expect("rename");
    });
    let mut idle = session.idle();
    idle.timeout(Duration::from_secs(30)).keepalive(false);
    let outcome = idle
        .wait_while(|r| !matches!(r, imap::types::UnsolicitedResponse::Exists(2)))
        .expect("idle");
    drop(idle);
    deliverer.join().expect("deliverer");
    assert!(
        matches!(outcome, imap::extensions::idle::WaitOutcome::MailboxChanged),
        "{outcome:?}"
    );
    let msgs = session
        .fetch("2", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
        .expect("fetch");
    let m = msgs.iter().next().expect("message 2");
    assert_eq!(m.header(), Some(&b"Subject: two\r\n\r\n"[..]));
    session.logout().expect("logout");
}

/// Two sessions on one mailbox while local delivery appends: each hears of the other's
/// flags and expunges and of the new mail (EXISTS, RECENT, FETCH FLAGS, EXPUNGE), and an
/// IDLE session within seconds (checked with a generous timeout); the views agree.
#[test]
fn two_sessions_and_delivery() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    for store in [Store::Maildir, Store::Mbox] {
        let dir = homes(store);
        let s = postern_server(dir.path(), store, "ssl = no\ndisable_plaintext_auth = no\n");
        let deliver = |n: usize| {
            let body = format!("From: x@example.org\nSubject: m{n}\n\nbody {n}\n");
            match store {
                Store::Maildir => {
                    postern::mailbox::deliver_maildir(
                        &dir.path().join("home/alice/Maildir"),
                        body.as_bytes(),
                    )
                    .expect("deliver");
                    chown_r(&dir.path().join("home/alice"));
                }
                Store::Mbox => {
                    postern::mailbox::deliver_mbox(
                        &dir.path().join("home/alice/inbox"),
                        "x@example.org",
                        body.as_bytes(),
                        &postern::mailbox::MboxOptions::default(),
                    )
                    .expect("deliver");
                }
            }
        };
        for n in 1..=3 {
            deliver(n);
        }
        let mut a = Imap::login(s.port, "alice");
        let mut b = Imap::login(s.port, "alice");
        let ra = a.cmd("SELECT INBOX");
        assert!(
            ra.contains(&"* 3 EXISTS".to_string()),
            "{store:?} {ra:?}\n{}",
            s.log()
        );
        assert!(ra.contains(&"* 3 RECENT".to_string()), "{store:?} {ra:?}");
        let rb = b.cmd("SELECT INBOX");
        assert!(rb.contains(&"* 0 RECENT".to_string()), "{rb:?}");
        // A flags, B hears it.
        a.cmd("STORE 2 +FLAGS.SILENT (\\Flagged)");
        let rb = b.cmd("NOOP");
        assert!(
            rb.iter().any(|l| l == "* 2 FETCH (FLAGS (\\Flagged))"),
            "{store:?} {rb:?}"
        );
        // B expunges, A hears it; delivery meanwhile: both see it.
        b.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)");
        let rb = b.cmd("EXPUNGE");
        assert!(rb.contains(&"* 1 EXPUNGE".to_string()), "{rb:?}");
        deliver(4);
        let ra = a.cmd("NOOP");
        assert!(ra.contains(&"* 1 EXPUNGE".to_string()), "{store:?} {ra:?}");
        assert!(ra.contains(&"* 3 EXISTS".to_string()), "{store:?} {ra:?}");
        // Both flag the same message deleted; A expunges it while B FETCHes (where an
        // expunge is held back); B's EXPUNGE then reports it (imaptest's expunge script).
        a.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)");
        b.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)");
        let ra = a.cmd("EXPUNGE");
        assert!(ra.contains(&"* 1 EXPUNGE".to_string()), "{store:?} {ra:?}");
        let rb = b.cmd("FETCH 1:* (UID)");
        assert!(
            !rb.iter().any(|l| l.ends_with(" EXPUNGE")),
            "{store:?} {rb:?}"
        );
        let rb = b.cmd("EXPUNGE");
        assert!(rb.contains(&"* 1 EXPUNGE".to_string()), "{store:?} {rb:?}");
        deliver(41);
        a.cmd("NOOP");
        b.cmd("NOOP");
        // IDLE: B waits, mail arrives, B hears within the timeout.
        let r = b.cmd("IDLE");
        assert_eq!(r, ["+ idling"]);
        let t0 = Instant::now();
        deliver(5);
        let mut heard = Vec::new();
        while t0.elapsed() < Duration::from_secs(20) {
            let l = b.line().expect("idle line");
            let exists = l == "* 4 EXISTS";
            heard.push(l);
            if exists {
                break;
            }
        }
        assert!(
            heard.contains(&"* 4 EXISTS".to_string()),
            "{store:?} {heard:?}"
        );
        // Reported, not asserted (tests never assert timings).
        eprintln!(
            "{store:?}: IDLE heard the delivery after {:?}",
            t0.elapsed()
        );
        b.send(b"DONE\r\n");
        let tag = format!("t{}", b.n);
        let r = b.until(&tag);
        assert!(
            r.last().is_some_and(|l| l.contains("OK Idle completed")),
            "{r:?}"
        );
        // The views agree with a fresh one (A hears of message 5 first: a FETCH covers
        // only the messages its view has, new ones are announced after it).
        let ra = a.cmd("NOOP");
        assert!(ra.contains(&"* 4 EXISTS".to_string()), "{store:?} {ra:?}");
        let fa = a.cmd("FETCH 1:* (UID FLAGS)");
        let fb = b.cmd("FETCH 1:* (UID FLAGS)");
        let mut c = Imap::login(s.port, "alice");
        let fc = c.cmd("EXAMINE INBOX");
        assert!(fc.contains(&"* 4 EXISTS".to_string()), "{fc:?}");
        let fc = c.cmd("FETCH 1:* (UID FLAGS)");
        let uids = |r: &[String]| -> Vec<String> {
            r.iter()
                .filter(|l| l.starts_with("* ") && l.contains(" FETCH "))
                .map(|l| l.split(" FLAGS").next().unwrap_or("").to_string())
                .collect()
        };
        assert_eq!(uids(&fa), uids(&fc), "{store:?}");
        assert_eq!(uids(&fb), uids(&fc), "{store:?}");
        for x in [&mut a, &mut b, &mut c] {
            x.cmd("LOGOUT");
        }
    }
}

/// Swaps at the IMAP level: mailboxes the real Dovecot flagged, expunged and filled read
/// the same through Postern (UIDs, flags, keywords, folders), and the other way round.
#[test]
fn swap_both_ways_with_real_dovecot() {
    for store in [Store::Maildir, Store::Mbox] {
        let dir = homes(store);
        let extra = "ssl = no\ndisable_plaintext_auth = no\n";
        let Some(real) = dovecot_server(dir.path(), store, extra) else {
            return;
        };
        let work = |port: u16, first: bool| {
            let mut c = Imap::login(port, "alice");
            if first {
                c.cmd("CREATE Work");
                append_corpus(&mut c);
                c.cmd("SELECT INBOX");
                c.cmd("STORE 2:4 +FLAGS (\\Seen $Label1)");
                c.cmd("STORE 5 +FLAGS (\\Deleted)");
                c.cmd("EXPUNGE");
                c.cmd("COPY 1:3 Work");
            } else {
                c.cmd("SELECT INBOX");
                c.cmd("STORE 1 +FLAGS (\\Answered Project)");
                c.cmd("STORE 6 +FLAGS (\\Deleted)");
                c.cmd("EXPUNGE");
                c.cmd("APPEND Work {22+}\r\nSubject: second\r\n\r\nx");
            }
            c.cmd("LOGOUT");
        };
        let view = |port: u16| -> Vec<String> {
            let mut c = Imap::login(port, "alice");
            let mut out = Vec::new();
            for mb in ["INBOX", "Work"] {
                let r = c.cmd(&format!("EXAMINE {mb}"));
                out.extend(
                    r.into_iter()
                        .filter(|l| l.contains("EXISTS") || l.contains("UIDNEXT")),
                );
                let r =
                    c.cmd("FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
                out.extend(
                    r.into_iter()
                        .filter(|l| l.starts_with("* "))
                        .map(|l| l.replace(" \\Recent", "").replace("(\\Recent)", "()")),
                );
            }
            let mut l = c.cmd("LIST \"\" *");
            l.sort();
            out.extend(l.into_iter().filter(|x| x.starts_with("* ")));
            c.cmd("LOGOUT");
            out
        };
        // Dovecot writes first, Postern reads; then Postern writes, Dovecot reads.
        work(real.port, true);
        let theirs = view(real.port);
        drop(real);
        let ours = postern_server(dir.path(), store, extra);
        assert_eq!(view(ours.port), theirs, "{store:?}: Dovecot → Postern");
        work(ours.port, false);
        let ours_after = view(ours.port);
        drop(ours);
        let real = dovecot_server(dir.path(), store, extra).expect("dovecot");
        assert_eq!(view(real.port), ours_after, "{store:?}: Postern → Dovecot");
        let log = real.log();
        assert!(
            !log.contains("Error:"),
            "{store:?} Dovecot complained: {log}"
        );
    }
}

/// Bad input gets Dovecot's BAD/NO and the session goes on; no name reaches outside the
/// user's mail; memory stays bounded (a 4 GB literal is refused by closing, as Dovecot).
#[test]
fn bad_input_and_escapes() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = homes(Store::Mbox);
    let s = postern_server(
        dir.path(),
        Store::Mbox,
        "ssl = no\ndisable_plaintext_auth = no\n",
    );
    // An ID of 200 kB before login: Dovecot reads ID's parameters as a stream (its
    // login input buffer is 4 kB), answers it and goes on.
    let (mut c, _) = Imap::connect(s.port);
    let pairs: Vec<String> = (0..200)
        .map(|i| format!("\"k{i}\" \"{}\"", "x".repeat(1000)))
        .collect();
    let r = c.cmd(&format!("ID ({})", pairs.join(" ")));
    assert_eq!(
        r.last().map(String::as_str),
        Some("t1 OK ID completed."),
        "{r:?}"
    );
    assert!(
        c.cmd("NOOP")
            .last()
            .is_some_and(|l| l == "t2 OK NOOP completed.")
    );
    let mut c = Imap::login(s.port, "alice");
    let bad = |r: Vec<String>, want: &str| {
        assert!(
            r.last().is_some_and(|l| l.contains(want)),
            "want {want:?}: {r:?}"
        );
    };
    bad(c.cmd("FETCH 1:4294967295 FLAGS"), "BAD No mailbox selected");
    bad(c.cmd("SELECT INBOX"), "OK [READ-WRITE]");
    bad(
        c.cmd("FETCH 1:4294967295 FLAGS"),
        "BAD Error in IMAP command FETCH: Invalid messageset",
    );
    bad(
        c.cmd("SEARCH (((ALL)"),
        "BAD Error in IMAP command SEARCH: Missing ')'",
    );
    bad(
        c.cmd("FETCH 1 (FLAGS))"),
        "BAD Error in IMAP command FETCH: Unexpected ')'",
    );
    bad(
        c.cmd("CREATE ../../bob/inbox"),
        "NO [CANNOT] Invalid mailbox name",
    );
    bad(
        c.cmd("CREATE ~bob"),
        "NO [CANNOT] Invalid mailbox name: Begins with '~'",
    );
    bad(
        c.cmd("SELECT /etc/passwd"),
        "NO [CANNOT] Invalid mailbox name",
    );
    bad(
        c.cmd("SELECT a/../../bob"),
        "NO [CANNOT] Invalid mailbox name: Contains '..' part",
    );
    bad(c.cmd("CREATE &Jjo"), "NO Mailbox name is not valid mUTF-7");
    bad(c.cmd("STATUS ../x (MESSAGES)"), "NO [CANNOT]");
    // A failed SELECT leaves no mailbox selected (RFC 3501 6.3.1), as Dovecot.
    bad(c.cmd("NOOP"), "OK NOOP completed");
    bad(c.cmd("SEARCH ALL"), "BAD No mailbox selected");
    bad(c.cmd("SELECT INBOX"), "OK [READ-WRITE]");
    let mut nots = "SEARCH ".to_string();
    nots.push_str(&"NOT ".repeat(10000));
    nots.push_str("ALL");
    bad(c.cmd(&nots), "OK Search completed");
    bad(c.cmd("NOOP"), "OK NOOP completed");
    // A literal the line cannot hold: BYE and close, as Dovecot does.
    c.send(b"x1 SELECT {70000}\r\n");
    assert_eq!(c.line().as_deref(), Some("* BYE Literal size too large"));
    assert_eq!(c.line(), None);
    // An APPEND of 4 GB is taken (+ OK) and the client may go away: nothing is left.
    let mut c = Imap::login(s.port, "alice");
    c.send(b"a1 APPEND INBOX {4294967296}\r\n");
    assert_eq!(c.line().as_deref(), Some("+ OK"));
    c.send(&vec![b'x'; 100_000]);
    drop(c);
    let mut c = Imap::login(s.port, "alice");
    let r = c.cmd("STATUS INBOX (MESSAGES)");
    assert_eq!(r[0], "* STATUS INBOX (MESSAGES 0)");
    // The other user's mail was never touched.
    assert!(
        std::fs::read(dir.path().join("home/bob/inbox"))
            .expect("bob")
            .is_empty()
    );
    c.cmd("LOGOUT");
}

/// TLS as Dovecot offers it: STARTTLS and LOGINDISABLED on a connection that is not
/// secured (127.0.0.2 → 127.0.0.1), LOGIN after STARTTLS, the log's `TLS`.
#[test]
fn starttls_and_logindisabled() {
    if !is_root() || Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and python3");
        return;
    }
    let dir = homes(Store::Maildir);
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    std::fs::write(dir.path().join("cert.pem"), key.cert.pem()).expect("cert");
    std::fs::write(dir.path().join("key.pem"), key.key_pair.serialize_pem()).expect("key");
    let d = dir.path().display();
    let s = postern_server(
        dir.path(),
        Store::Maildir,
        &format!("ssl = yes\nssl_cert = <{d}/cert.pem\nssl_key = <{d}/key.pem\n"),
    );
    let script = format!(
        r#"
import imaplib, socket, ssl
class From2(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=("127.0.0.2", 0))
m = From2("127.0.0.1", {port})
print(sorted(m.capabilities))
try:
    m.login("alice", "secret")
except imaplib.IMAP4.error as e:
    print("refused", e)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
print(m.starttls(ctx)[0])
print(sorted(m.capabilities))
print(m.login("alice", "secret")[0])
print(m.select("INBOX")[0])
print(m.logout()[0])
"#,
        port = s.port
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].contains("'LOGINDISABLED'") && lines[0].contains("'STARTTLS'"),
        "{stdout}"
    );
    assert!(!lines[0].contains("AUTH=PLAIN"), "{stdout}");
    assert!(lines[1].starts_with("refused"), "{stdout}");
    assert_eq!(lines[2], "OK");
    assert!(
        lines[3].contains("'AUTH=PLAIN'") && !lines[3].contains("STARTTLS"),
        "{stdout}"
    );
    assert_eq!(&lines[4..], ["OK", "OK", "BYE"]);
    let log = s.wait_log("Logged out");
    assert!(
        log.contains("imap-login: Info: Login: user=<alice>, method=PLAIN, rip=127.0.0.2, lip=127.0.0.1, mpid=")
            && log.contains(", TLS, session=<"),
        "{log}"
    );
}

/// The log lines as Dovecot writes them, `imap_logout_format`, and
/// `mail_max_userip_connections`.
#[test]
fn logs_and_limits() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = homes(Store::Maildir);
    let s = postern_server(
        dir.path(),
        Store::Maildir,
        "ssl = no\ndisable_plaintext_auth = no\nmail_max_userip_connections = 2\n\
         protocol imap {\n  imap_logout_format = bytes=%i/%o expunged=%{expunged}\n}\n",
    );
    let mut a = Imap::login(s.port, "alice");
    let b = Imap::login(s.port, "alice");
    // A third session from the same address: refused and disconnected, as Dovecot does.
    let (mut c, _) = Imap::connect(s.port);
    let r = c.cmd("LOGIN alice secret");
    assert_eq!(
        r,
        [
            "t1 NO [LIMIT] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=2)"
        ]
    );
    assert_eq!(c.line(), None);
    a.cmd("APPEND INBOX {9+}\r\nSubject:x");
    a.cmd("SELECT INBOX");
    a.cmd("STORE 1 +FLAGS (\\Deleted)");
    a.cmd("EXPUNGE");
    a.cmd("LOGOUT");
    let _ = b.w.shutdown(std::net::Shutdown::Both);
    drop(b);
    // A slot is free again once a session ended; a wrong password is refused.
    let (mut c, _) = Imap::connect(s.port);
    let r = c.cmd("LOGIN alice wrong");
    assert_eq!(r, ["t1 NO [AUTHENTICATIONFAILED] Authentication failed."]);
    c.cmd("LOGOUT");
    s.wait_log("Aborted login by logging out");
    let log = s.wait_log("Connection closed");
    assert!(
        log.contains("imap-login: Info: Login: user=<alice>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid="),
        "{log}"
    );
    assert!(
        log.contains("imap-login: Info: Disconnected: Maximum number of connections from user+IP exceeded (mail_max_userip_connections=2): user=<alice>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, secured, session=<"),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("imap(alice)<")
            && l.contains("Disconnected: Logged out bytes=")
            && l.ends_with("expunged=1")),
        "{log}"
    );
    assert!(
        log.contains("Disconnected: Connection closed (No commands sent) bytes="),
        "{log}"
    );
    assert!(
        log.contains("imap-login: Info: Disconnected: Aborted login by logging out (auth failed, 1 attempts in "),
        "{log}"
    );
}

/// The login stage runs as `dovecot/imap-login`, unprivileged (dovenull) and chrooted,
/// beside `dovecot/pop3-login` when both protocols are on.
#[test]
fn login_processes_per_protocol() {
    if !is_root()
        || nix::unistd::User::from_name("dovenull")
            .ok()
            .flatten()
            .is_none()
    {
        eprintln!("skipped: needs root and the dovenull user");
        return;
    }
    let dir = homes(Store::Mbox);
    let pop3 = free_port();
    let s = postern_server(
        dir.path(),
        Store::Mbox,
        &format!(
            "ssl = no\ndisable_plaintext_auth = no\nprotocols = imap pop3\n\
             service pop3-login {{\n  inet_listener pop3 {{\n    port = {pop3}\n  }}\n  inet_listener pop3s {{\n    port = 0\n  }}\n}}\n"
        ),
    );
    wait_port(pop3);
    let pid_file =
        std::fs::read_to_string(dir.path().join("postern-base/master.pid")).expect("pid");
    let master: i32 = pid_file.trim().parse().expect("pid");
    let dovenull = nix::unistd::User::from_name("dovenull")
        .expect("dovenull")
        .expect("dovenull")
        .uid
        .as_raw();
    // The master's children, polled until both login processes have dropped root (a
    // process just forked may still be root for a moment).
    let scan = || {
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").expect("proc").flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let ppid: i32 = stat
                .rsplit_once(") ")
                .and_then(|(_, r)| r.split(' ').nth(1))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if ppid != master {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let name = String::from_utf8_lossy(cmdline.split(|&b| b == 0).next().unwrap_or(&[]))
                .into_owned();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let uid = status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|u| u.parse::<u32>().ok())
                .unwrap_or(0);
            let root_link = std::fs::read_link(format!("/proc/{pid}/root")).unwrap_or_default();
            found.push((name, uid, root_link));
        }
        found.sort();
        found
    };
    let mut found = scan();
    let _ = poll(Duration::from_secs(10), || {
        found = scan();
        found.iter().all(|f| f.1 == dovenull).then_some(())
    });
    let names: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(
        names,
        ["dovecot/imap-login", "dovecot/pop3-login"],
        "{found:?}"
    );
    for (_, uid, root_link) in &found {
        assert_eq!(*uid, dovenull);
        assert!(root_link.ends_with("login"), "{root_link:?}");
    }
    // Both answer.
    let (_, g) = Imap::connect(s.port);
    assert!(g.starts_with("* OK [CAPABILITY IMAP4rev1 "), "{g}");
    let mut p = TcpStream::connect(("127.0.0.1", pop3)).expect("pop3");
    let mut buf = [0u8; 64];
    let n = p.read(&mut buf).expect("pop3 greeting");
    assert!(buf[..n].starts_with(b"+OK "), "{:?}", &buf[..n]);
    let log = s.log();
    assert!(log.contains("starting up for imap, pop3"), "{log}");
}

/// A user whose uid is below `first_valid_uid`: both Dovecot and Postern accept the
/// password (`OK Logged in, but initialization failed.`), end the session at the next
/// command with `* BYE Internal error occurred. …` and log the refusal as the imap
/// process's error.
#[test]
fn uid_below_first_valid_uid() {
    let (uid, _) = mail_user();
    let extra = format!(
        "ssl = no\ndisable_plaintext_auth = no\nfirst_valid_uid = {}\n",
        uid + 1
    );
    let dirs = [homes(Store::Mbox), homes(Store::Mbox)];
    let Some(real) = dovecot_server(dirs[0].path(), Store::Mbox, &extra) else {
        return;
    };
    let ours = postern_server(dirs[1].path(), Store::Mbox, &extra);
    let mut replies = Vec::new();
    for s in [&real, &ours] {
        let (mut c, _) = Imap::connect(s.port);
        let mut r = c.cmd("LOGIN alice secret");
        r.extend(c.cmd("NOOP"));
        r.push(format!("{:?}", c.line()));
        replies.push(norm(&r));
        let want = format!(
            "imap(alice): Error: Mail access for users with UID {uid} not permitted (see first_valid_uid in config file, uid from userdb lookup)."
        );
        let log = s.wait_log(&want);
        assert!(log.contains(&want), "{log}");
    }
    assert_eq!(
        replies[0],
        [
            "t1 OK Logged in, but initialization failed.",
            "* BYE Internal error occurred. Refer to server log for more information.",
            "None"
        ]
    );
    assert_eq!(replies[0], replies[1]);
}

/// Logged-in sessions run in `dovecot/imap` mail processes as their users: two users of
/// different uids (a passwd-file userdb) are served by two processes, each holding only
/// its user's connection, with the uids, gids and groups /proc shows for the real
/// Dovecot's imap process of the same configuration; what a session creates (a folder,
/// an APPENDed and a COPYed message, the index files) belongs to the user. A SIGKILLed
/// mail process is logged as Dovecot's master logs it, its sessions no longer count
/// against `mail_max_userip_connections`, and the other user's session goes on.
#[test]
fn sessions_run_as_the_mail_user() {
    if !is_root() {
        eprintln!("skipped: needs root (two mail users)");
        return;
    }
    let (ua, ga) = mail_user();
    let (ub, gb) = user_ids("posternimap2");
    assert_ne!(ua, ub, "two users");
    let dir = homes(Store::Maildir);
    let d = dir.path();
    let _ = Command::new("chown")
        .arg("-R")
        .arg(format!("{ub}:{gb}"))
        .arg(d.join("home/bob"))
        .output();
    std::fs::write(
        d.join("passwd"),
        format!(
            "alice:{{PLAIN}}secret:{ua}:{ga}::{h}/alice::\nbob:{{PLAIN}}secret:{ub}:{gb}::{h}/bob::\n",
            h = d.join("home").display()
        ),
    )
    .expect("passwd");
    let write_conf = |name: &str, port: u16| {
        let (uid, gid) = mail_user();
        let c = conf(
            d,
            name,
            port,
            Store::Maildir,
            "ssl = no\ndisable_plaintext_auth = no\nmail_max_userip_connections = 1\n",
        )
        .replace(
            &format!(
                "userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={}/home/%u\n}}\n",
                d.display()
            ),
            &format!(
                "userdb {{\n  driver = passwd-file\n  args = {}/passwd\n}}\n",
                d.display()
            ),
        );
        assert!(c.contains("driver = passwd-file\n  args = ") && !c.contains("static"));
        let cf = d.join(format!("{name}.conf"));
        std::fs::write(&cf, c).expect("conf");
        cf
    };
    let port = free_port();
    let cf = write_conf("postern", port);
    let s = Dovecot::start(Which::Postern, &cf, port, &d.join("postern.log"));
    let master: u32 = std::fs::read_to_string(d.join("postern-base/master.pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    let mut a = Imap::login(port, "alice");
    let mut b = Imap::login(port, "bob");
    let local = |c: &Imap| c.w.local_addr().expect("addr").port();
    let pa = sole_holder(port, local(&a)).expect("alice's session held by one process");
    let pb = sole_holder(port, local(&b)).expect("bob's session held by one process");
    assert_ne!(pa, pb, "two users, two processes");
    for (pid, uid, gid) in [(pa, ua, ga), (pb, ub, gb)] {
        assert_ne!(pid, master);
        assert_eq!(proc_field(pid, "PPid"), master.to_string());
        assert_eq!(cmdline_of(pid), "dovecot/imap");
        let (uids, gids, groups) = credentials(pid);
        assert_eq!(uids, vec![uid.to_string(); 4], "Uid of {pid}");
        assert_eq!(gids, vec![gid.to_string(); 4], "Gid of {pid}");
        assert!(groups.contains(&gid.to_string()), "{groups:?}");
        assert!(!groups.contains(&"0".to_string()), "{groups:?}");
    }
    // The same credentials as the real Dovecot's imap process for this configuration.
    if Dovecot::real_available("imap") {
        let rport = free_port();
        let rcf = write_conf("dovecot", rport);
        let real = Dovecot::start(Which::Real, &rcf, rport, &d.join("dovecot.log"));
        let r = Imap::login(rport, "alice");
        let theirs = sole_holder(rport, local(&r)).expect("real imap process");
        assert_eq!(cmdline_of(theirs), "dovecot/imap");
        assert_eq!(credentials(theirs), credentials(pa), "as Dovecot's");
        drop(r);
        drop(real);
    }
    // What alice's session writes is alice's.
    let ok = |r: &[String]| r.last().is_some_and(|l| l.contains(" OK "));
    let r = a.cmd("CREATE Work");
    assert!(ok(&r), "{r:?}");
    let msg = "From: bob@example.org\r\nSubject: owned\r\n\r\nbody\r\n";
    let r = a.cmd(&format!("APPEND INBOX {{{}}}", msg.len()));
    assert!(r.last().is_some_and(|l| l.starts_with('+')), "{r:?}");
    a.send(format!("{msg}\r\n").as_bytes());
    let r = a.until(&format!("t{}", a.n));
    assert!(ok(&r), "{r:?}");
    let r = a.cmd("SELECT INBOX");
    assert!(ok(&r), "{r:?}");
    let r = a.cmd("COPY 1 Work");
    assert!(ok(&r), "{r:?}");
    let maildir = d.join("home/alice/Maildir");
    assert!(maildir.join(".Work").is_dir(), "the folder exists");
    let mut seen = 0;
    let mut stack = vec![maildir.clone()];
    while let Some(p) = stack.pop() {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(&p).expect("stat");
        assert_eq!((m.uid(), m.gid()), (ua, ga), "{} is alice's", p.display());
        seen += 1;
        if m.is_dir() {
            stack.extend(
                std::fs::read_dir(&p)
                    .expect("dir")
                    .flatten()
                    .map(|e| e.path()),
            );
        }
    }
    let messages = |sub: &str| {
        ["new", "cur"]
            .iter()
            .flat_map(|x| {
                std::fs::read_dir(maildir.join(sub).join(x))
                    .into_iter()
                    .flatten()
            })
            .count()
    };
    assert_eq!(
        (messages("."), messages(".Work")),
        (1, 1),
        "appended and copied"
    );
    assert!(seen > 8, "{seen} paths checked");
    // mail_max_userip_connections = 1 still counts sessions served elsewhere.
    let (mut again, _) = Imap::connect(port);
    let r = again.cmd("LOGIN alice secret");
    assert!(r.last().is_some_and(|l| l.contains("NO [LIMIT]")), "{r:?}");
    // A killed mail process: logged as Dovecot's master logs it, bob goes on, alice's
    // session no longer counts.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pa as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let log = s.wait_log("killed with signal 9");
    assert!(
        log.contains(&format!(
            "master: Error: service(imap): child {pa} killed with signal 9"
        )),
        "{log}"
    );
    assert!(
        a.line().is_none(),
        "alice's connection ended with its process"
    );
    let r = b.cmd("SELECT INBOX");
    assert!(ok(&r), "bob's session goes on: {r:?}");
    let r = b.cmd("NOOP");
    assert!(ok(&r), "{r:?}");
    let mut a2 = wait_for(Duration::from_secs(10), "alice logs in again", || {
        let (mut c, _) = Imap::connect(port);
        let r = c.cmd("LOGIN alice secret");
        ok(&r).then_some(c)
    });
    let pa2 = sole_holder(port, local(&a2)).expect("alice's new process");
    assert!(pa2 != pa && pa2 != pb, "a new process for alice");
    assert_eq!(credentials(pa2).0, vec![ua.to_string(); 4]);
    let r = a2.cmd("LOGOUT");
    assert!(ok(&r), "{r:?}");
    let r = b.cmd("LOGOUT");
    assert!(ok(&r), "{r:?}");
    let log = s.wait_log(&format!("imap(bob)<{pb}><"));
    assert!(
        log.contains(&format!("imap-login: Info: Login: user=<bob>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid={pb}, secured, session=<")),
        "{log}"
    );
    // Each process leaves with its last session.
    wait_until(Duration::from_secs(10), "the mail processes left", || {
        !children_of(master)
            .iter()
            .any(|(_, c)| c.starts_with("dovecot/imap "))
    });
}

/// `dovecot stop` ends logged-in sessions as a Dovecot 2.3.19 mail process ends them on
/// SIGTERM (recorded here from the real one: `* BYE Server shutting down.` to an IMAP
/// client in IDLE, `-ERR [SYS/TEMP] Server shutting down.` to a POP3 client, both
/// logged `Disconnected: Server shutting down.`), and the mail processes go with the
/// master.
#[test]
fn stop_ends_sessions_as_dovecot() {
    let dir = homes(Store::Mbox);
    let pop3 = free_port();
    let mut s = postern_server(
        dir.path(),
        Store::Mbox,
        &format!(
            "ssl = no\ndisable_plaintext_auth = no\nprotocols = imap pop3\n\
             service pop3-login {{\n  inet_listener pop3 {{\n    port = {pop3}\n  }}\n  inet_listener pop3s {{\n    port = 0\n  }}\n}}\n"
        ),
    );
    wait_port(pop3);
    let master: u32 = std::fs::read_to_string(dir.path().join("postern-base/master.pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    let mut i = Imap::login(s.port, "alice");
    let r = i.cmd("SELECT INBOX");
    assert!(r.last().is_some_and(|l| l.contains(" OK ")), "{r:?}");
    let r = i.cmd("IDLE");
    assert_eq!(r.last().map(String::as_str), Some("+ idling"));
    let (mut p, g) = Pop::connect(pop3);
    assert!(g.starts_with("+OK"), "{g}");
    assert_eq!(p.cmd("USER alice"), ["+OK"]);
    assert_eq!(p.cmd("PASS secret"), ["+OK Logged in."]);
    let mail: Vec<u32> = children_of(master)
        .into_iter()
        .filter(|(_, c)| c.starts_with("dovecot/imap ") || c.starts_with("dovecot/pop3 "))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(mail.len(), 2, "an imap and a pop3 mail process");
    let out = Dovecot::command(Which::Postern)
        .arg("-c")
        .arg(dir.path().join("postern.conf"))
        .arg("stop")
        .output()
        .expect("stop");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(i.line().as_deref(), Some("* BYE Server shutting down."));
    assert_eq!(i.line(), None);
    assert_eq!(p.line(), "-ERR [SYS/TEMP] Server shutting down.");
    let log = s.wait_log("Dovecot v2.3.19 shutting down");
    for who in ["imap(alice)", "pop3(alice)"] {
        assert!(
            log.lines()
                .any(|l| l.contains(who)
                    && l.contains(": Info: Disconnected: Server shutting down. ")),
            "{who}: {log}"
        );
    }
    // Gone, or a zombie left to a container's init that does not reap.
    let gone = |p: &u32| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .map(|st| {
                st.rsplit_once(") ")
                    .is_some_and(|(_, r)| r.starts_with('Z'))
            })
            .unwrap_or(true)
    };
    wait_until(Duration::from_secs(10), "the mail processes left", || {
        mail.iter().all(gone)
    });
    s.port = 0;
}

/// The mail process's groups from each source Dovecot 2.3.19 takes them from, compared
/// with /proc of the real Dovecot's imap process on the same configuration: a passwd
/// userdb (the user's groups from the group file, `system_groups_user`), and
/// `mail_access_groups` with `mail_privileged_group` (the saved gid).
#[test]
fn mail_process_groups_as_dovecot() {
    if !Dovecot::real_available("imap") {
        return;
    }
    // A system user with a supplementary group, created once and kept.
    let name = "posternug";
    if nix::unistd::User::from_name(name).ok().flatten().is_none() {
        let _ = Command::new("useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", "-G", "mail", name])
            .output();
    }
    let u = nix::unistd::User::from_name(name)
        .expect("getpwnam")
        .expect("test user");
    let mail_gid = nix::unistd::Group::from_name("mail")
        .expect("getgrnam")
        .expect("group mail")
        .gid
        .as_raw();
    let (uid, gid) = (u.uid.as_raw(), u.gid.as_raw());
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::create_dir_all(d.join(format!("mail-{name}"))).expect("mkdir");
    std::fs::write(d.join(format!("inbox-{name}")), "").expect("inbox");
    for p in [format!("mail-{name}"), format!("inbox-{name}")] {
        let _ = Command::new("chown")
            .arg(format!("{uid}:{gid}"))
            .arg(d.join(p))
            .output();
    }
    std::fs::write(d.join("passwd"), format!("{name}:{{PLAIN}}secret::::::\n")).expect("pw");
    let cases = [
        (
            "userdb {\n  driver = passwd\n}\n".to_string(),
            String::new(),
        ),
        (
            format!("userdb {{\n  driver = static\n  args = uid={uid} gid={gid}\n}}\n"),
            "mail_privileged_group = mail\nmail_access_groups = mail\n".to_string(),
        ),
    ];
    for (n, (userdb, extra)) in cases.iter().enumerate() {
        let mut creds = Vec::new();
        for which in [Which::Postern, Which::Real] {
            let tag = format!("{which:?}-{n}");
            let port = free_port();
            let cf = d.join(format!("{tag}.conf"));
            std::fs::write(
                &cf,
                format!(
                    "protocols = imap\nbase_dir = {dd}/{tag}-base\nstate_dir = {dd}/{tag}-state\n\
                     listen = 127.0.0.1\nlog_path = {dd}/{tag}.log\n\
                     mail_location = mbox:{dd}/mail-%u:INBOX={dd}/inbox-%u\n\
                     ssl = no\ndisable_plaintext_auth = no\nauth_failure_delay = 0\n\
                     passdb {{\n  driver = passwd-file\n  args = {dd}/passwd\n}}\n{userdb}\
                     service imap-login {{\n  inet_listener imap {{\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n{extra}",
                    dd = d.display()
                ),
            )
            .expect("conf");
            let srv = Dovecot::start(which, &cf, port, &d.join(format!("{tag}.log")));
            let c = Imap::login(port, name);
            let holder = sole_holder(port, c.w.local_addr().expect("addr").port())
                .expect("one process holds the session");
            assert_eq!(cmdline_of(holder), "dovecot/imap", "{which:?}");
            creds.push(credentials(holder));
            drop(c);
            drop(srv);
        }
        assert_eq!(creds[0], creds[1], "case {n}: Postern's, then Dovecot's");
        let (uids, gids, groups) = &creds[0];
        assert_eq!(uids, &vec![uid.to_string(); 4]);
        assert!(groups.contains(&mail_gid.to_string()), "{groups:?}");
        if n == 1 {
            assert_eq!(gids[2], mail_gid.to_string(), "saved gid: {gids:?}");
        }
    }
}
