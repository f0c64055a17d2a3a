//! The logged-in IMAP core replayed against what the real Dovecot 2.3.19 answered
//! (`compat-fixtures/imap/session.txt`, recorded by `scripts/regen-imap-fixtures`), in
//! process and without sockets: each recorded client write is fed to a [`Session`] the way
//! the script wrote it (split at synchronizing literals, a raw item followed by its `sync
//! NOOP`), the session's [`Action`]s are carried out by hand, and what it sent must be
//! what Dovecot sent. The records before the login go to the login stage's core
//! ([`crate::login::imap::PreLogin`]) the same way, its login checked by the service's
//! check ([`super::state::check`]) and taken over by a new session, as the mail process
//! takes it; they must be Dovecot's bytes exactly (the logged-in reply normalised), and
//! the login stage's log lines Dovecot's (`session-login.log`, recorded with the
//! session). Normalised as
//! `tests/imap.rs` does for the live comparison: timings, UIDVALIDITY/APPENDUID/COPYUID/
//! HIGHESTMODSEQ/MODSEQ numbers, capability lists (Postern leaves out what it does not
//! serve), and the order of LIST lines.

use std::net::SocketAddr;
use std::sync::Arc;

use super::ImapState;
use super::session::{Action, Session};
use crate::auth::dovecot::UserInfo;
use crate::config::dovecot::DovecotConf;
use crate::login::imap::{self as login, PreLogin};
use crate::login::{LoginConf, Protocol};

const SESSION: &[u8] = include_bytes!("../../compat-fixtures/imap/session.txt");
const SESSION_LOGIN_LOG: &str = include_str!("../../compat-fixtures/imap/session-login.log");

/// The settings of the recording (the script's dovecot.conf: Maildir, namespace inbox with
/// separator `.` and special-use Drafts/Sent/Trash; bob's `{PLAIN}secret` in a
/// passwd-file, Debian's greeting), with this process's ids for bob's mail (a uid the
/// service's `first_valid_uid` check lets through) and the log in `dir`.
fn conf(dir: &std::path::Path) -> DovecotConf {
    std::fs::write(dir.join("passwd"), "bob:{PLAIN}secret\n").expect("passwd");
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    let text = format!(
        "protocols = imap\nmail_location = maildir:~/Maildir\nssl = no\n\
         disable_plaintext_auth = no\nfirst_valid_uid = 0\nlog_path = {d}/log\n\
         login_greeting = Dovecot (Debian) ready.\n\
         passdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
         userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={d}/home/%u\n}}\n\
         namespace inbox {{\n  inbox = yes\n  separator = .\n  mailbox Drafts {{\n    special_use = \\Drafts\n  }}\n  mailbox Sent {{\n    special_use = \\Sent\n  }}\n  mailbox Trash {{\n    special_use = \\Trash\n  }}\n}}\n",
        d = dir.display()
    );
    DovecotConf::from_str(&text, &dir.join("dovecot.conf")).expect("conf")
}

fn state(dir: &std::path::Path) -> Arc<ImapState> {
    Arc::new(ImapState::from_conf(&conf(dir)).expect("imap settings"))
}

/// A new logged-in session of bob, its login reply sent (returned).
fn login(st: &Arc<ImapState>, dir: &std::path::Path, tag: &str) -> (Session, Vec<u8>) {
    let home = dir.join("home/bob");
    let info = UserInfo {
        user: "bob".into(),
        uid: None,
        gid: None,
        home: Some(home.display().to_string()),
        extra: Vec::new(),
    };
    let store = super::session::open_store(st, "bob", &info, "imap(bob)").expect("store");
    let mut s = Session::new(st.clone(), "bob".into(), "test".into(), store);
    s.begin(tag, b"");
    let (out, _) = run(&mut s);
    (s, out)
}

/// Carry out the session's actions until it waits for input (false) or closes (true);
/// what it sent.
fn run(s: &mut Session) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        match s.next() {
            Action::Send(b) => out.extend_from_slice(&b),
            Action::Read { .. } => return (out, false),
            Action::Close => return (out, true),
        }
    }
}

/// Feed `data`, run; what was sent and whether the session closed.
fn feed(s: &mut Session, data: &[u8]) -> (Vec<u8>, bool) {
    s.received(data);
    run(s)
}

/// The script's generated lines (recorded shortened as `…...(N bytes)`).
fn generated(tag: &[u8]) -> Option<Vec<u8>> {
    Some(match tag {
        b"s1" => [
            b"s1 SEARCH ".to_vec(),
            b"NOT ".repeat(10000),
            b"ALL\r\n".to_vec(),
        ]
        .concat(),
        b"s2" => [
            b"s2 SEARCH ".to_vec(),
            b"(".repeat(2000),
            b"ALL".to_vec(),
            b")".repeat(2000),
            b"\r\n".to_vec(),
        ]
        .concat(),
        b"s3" => [
            b"s3 SEARCH ".to_vec(),
            b"SEEN ".repeat(14000),
            b"ALL\r\n".to_vec(),
        ]
        .concat(),
        _ => return None,
    })
}

/// The reply's lines normalised as `tests/imap.rs` compares live (see the module header).
fn norm(b: &[u8]) -> Vec<String> {
    let lines: Vec<String> = String::from_utf8_lossy(b)
        .split("\r\n")
        .map(str::to_string)
        .collect();
    crate::imap::fixture::normalize(&lines)
}

/// The recording's client and server addresses (the same address: a secured client).
fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40143))
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 143))
}

/// How the login core's turn ended.
enum PreEnd {
    /// It waits for the client.
    Reading,
    /// It closed the connection.
    Closed,
    /// The service took the login: the session that goes on (its reply sent).
    Taken(Box<Session>),
}

/// Run the login core until it waits for input, closes, or the service takes its
/// login; what was sent. A login is checked by the service's check and a taken one goes
/// on in a new session, as the mail process starts it (its log line, the store, the
/// reply with the client's pipelined input).
async fn pre_login(core: &mut PreLogin, st: &Arc<ImapState>) -> (Vec<u8>, PreEnd) {
    let mut sent = Vec::new();
    loop {
        match core.next() {
            login::Action::Send(b) => sent.extend(b),
            login::Action::Sleep(_) => {}
            login::Action::Read { .. } => return (sent, PreEnd::Reading),
            login::Action::Close => return (sent, PreEnd::Closed),
            login::Action::StartTls { .. } => panic!("no TLS in this recording"),
            login::Action::Login(req) => {
                let (verdict, checked) = super::state::check(st, &req).await;
                let Ok((user, info)) = checked else {
                    core.verdict(Some(verdict));
                    continue;
                };
                super::session::log_login(st, &req, &user);
                let prefix = format!("imap({user})");
                let store = super::session::open_store(st, &user, &info, &prefix).expect("store");
                let mut s = Session::new(st.clone(), user, req.session_id.clone(), store);
                s.begin(&req.tag, &req.leftover);
                let (out, _) = run(&mut s);
                sent.extend(out);
                return (sent, PreEnd::Taken(Box::new(s)));
            }
        }
    }
}

/// The login stage's log lines (`imap-login: …`) without their timestamps, with what
/// differs from run to run (session ids, the mail process's pid, seconds) as `N`.
fn login_log_lines(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    for l in log.lines() {
        // `Dec 07 17:02:50 imap-login: …` (the fixture has the timestamps cut).
        let l = l
            .get(l.find("imap-login: ").unwrap_or(usize::MAX)..)
            .unwrap_or("");
        if l.is_empty() {
            continue;
        }
        let mut l = l.to_string();
        for (key, end) in [("session=<", '>'), ("mpid=", ','), (" in ", ' ')] {
            if let Some(i) = l.find(key) {
                let st = i + key.len();
                let e = l[st..].find(end).map_or(l.len(), |e| st + e);
                l.replace_range(st..e, "N");
            }
        }
        out.push(l);
    }
    out
}

#[tokio::test]
async fn recorded_dovecot_session_replays_against_the_core() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("home/bob")).expect("home");
    let st = state(dir.path());
    let lc =
        Arc::new(LoginConf::from_conf(&conf(dir.path()), Protocol::Imap).expect("login settings"));
    let records = crate::imap::fixture::records(SESSION);
    let mut session: Option<Session> = None;
    // What the script re-selects in a new connection.
    let mut selected: Option<Vec<u8>> = None;
    let (mut checked, mut differ) = (0, Vec::new());
    let mut carry: Vec<u8> = Vec::new();
    // The login stage's core of the connection, before the login.
    let mut pre: Option<PreLogin> = None;
    let mut pre_checked = 0;
    for (cmd, theirs) in records {
        let Some(s) = session.as_mut() else {
            let closed = theirs.ends_with(b"(connection closed)");
            let expect = &theirs[..theirs.len() - if closed { 19 } else { 0 }];
            let core = match pre.as_mut() {
                Some(c) if !cmd.is_empty() => c,
                _ => {
                    // A new connection: its greeting is the record with no command (the
                    // first), unrecorded after a close.
                    let mut c = PreLogin::new(lc.clone(), peer(), local(), false);
                    let (greeting, _) = pre_login(&mut c, &st).await;
                    if cmd.is_empty() {
                        if greeting != theirs {
                            differ.push(format!(
                                "greeting:\n dovecot: {:?}\n core:    {:?}",
                                String::from_utf8_lossy(&theirs),
                                String::from_utf8_lossy(&greeting)
                            ));
                        }
                        pre_checked += 1;
                        pre = Some(c);
                        continue;
                    }
                    pre.insert(c)
                }
            };
            core.received(&[&cmd[..], b"\r\n"].concat());
            let (ours, end) = pre_login(core, &st).await;
            let same = match &end {
                // The logged-in reply's capabilities are the session's (normalised).
                PreEnd::Taken(_) => norm(&ours) == norm(expect),
                _ => ours == expect,
            };
            if !same {
                differ.push(format!(
                    "{}:\n dovecot: {:?}\n core:    {:?}",
                    String::from_utf8_lossy(&cmd),
                    String::from_utf8_lossy(expect),
                    String::from_utf8_lossy(&ours)
                ));
            }
            if closed != matches!(end, PreEnd::Closed) {
                differ.push(format!(
                    "{}: Dovecot closed: {closed}, the login core: {}",
                    String::from_utf8_lossy(&cmd),
                    matches!(end, PreEnd::Closed)
                ));
            }
            match end {
                PreEnd::Taken(s) => {
                    session = Some(*s);
                    pre = None;
                }
                PreEnd::Closed => pre = None,
                PreEnd::Reading => {}
            }
            pre_checked += 1;
            continue;
        };
        let text = String::from_utf8_lossy(&theirs).into_owned();
        let raw_sync = text.ends_with("sync OK NOOP completed.\r\n");
        // How the recording ended: Dovecot closed, or the client gave up.
        let gave_up = ["(the client gives up", "(no reply within 2 s"]
            .iter()
            .find_map(|m| text.find(m));
        let closed = text.ends_with("(connection closed)");
        let expect = match gave_up {
            Some(p) => &theirs[..p],
            None if closed => &theirs[..theirs.len() - "(connection closed)".len()],
            None => &theirs[..],
        };
        let tag: Vec<u8> = cmd.split(|&c| c == b' ').next().unwrap_or(&[]).to_vec();
        let data = match generated(&tag) {
            Some(d) if cmd.ends_with(b"bytes)") => d,
            _ => [&cmd[..], b"\r\n"].concat(),
        };
        // What the last record's reading left unread comes first.
        let mut ours = std::mem::take(&mut carry);
        let mut ended = false;
        if gave_up.is_some() {
            // The announcement only; the client then hangs up.
            let (o, e) = feed(s, &data);
            ours.extend(o);
            ended = e;
        } else {
            // Written up to each synchronizing literal, on only when it was accepted.
            let mut rest = &data[..];
            while !rest.is_empty() {
                let cut = sync_literal_end(rest).unwrap_or(rest.len());
                let (o, e) = feed(s, &rest[..cut]);
                rest = &rest[cut..];
                let continued = o.starts_with(b"+") && !o.starts_with(b"+ idling");
                ours.extend(o);
                ended = e;
                if ended || (cut < data.len() && !rest.is_empty() && !continued) {
                    break;
                }
            }
            // A raw item's literal at the line's end, accepted: the script sends its bytes.
            if !ended
                && ours.ends_with(b"+ OK\r\n")
                && let Some(n) = final_literal(&data)
            {
                let (o, e) = feed(s, &[b"x".repeat(n), b"\r\n".to_vec()].concat());
                ours.extend(o);
                ended = e;
            }
            if raw_sync && !ended {
                let (o, e) = feed(s, b"sync NOOP\r\n");
                ours.extend(o);
                ended = e;
            }
        }
        // The script reads up to the line of the tag it waits for; what follows is read
        // with the next record (a refused APPEND's literal read as a command `x`).
        let wait = if raw_sync {
            b"sync".to_vec()
        } else {
            tag.clone()
        };
        if let Some(end) = line_end_of(&ours, &wait) {
            carry = ours.split_off(end);
        }
        if norm(&ours) != norm(expect) {
            differ.push(format!(
                "{}:\n dovecot: {:?}\n core:    {:?}",
                String::from_utf8_lossy(&cmd[..cmd.len().min(60)]),
                norm(expect),
                norm(&ours)
            ));
        }
        if closed && gave_up.is_none() && !ended {
            differ.push(format!(
                "{}: Dovecot closed the connection, the core did not",
                String::from_utf8_lossy(&cmd[..cmd.len().min(60)])
            ));
        }
        checked += 1;
        let ok = text.contains(" OK ");
        // The script's own commands (tagged tN) change what it re-selects.
        if cmd.starts_with(b"t") {
            let word = cmd.split(|&c| c == b' ').nth(1).unwrap_or(&[]);
            if (word == b"SELECT" || word == b"EXAMINE") && ok {
                selected = Some(cmd[tag.len() + 1..].to_vec());
            } else if word == b"CLOSE" || word == b"UNSELECT" {
                selected = None;
            }
        }
        if closed || gave_up.is_some() {
            // The script goes on in a new connection, logged in, the same mailbox
            // selected (not recorded).
            let (mut s, _) = login(&st, dir.path(), "r1");
            if let Some(sel) = &selected {
                let (_, e) = feed(&mut s, &[b"r2 ", &sel[..], b"\r\n"].concat());
                assert!(!e);
            }
            session = Some(s);
            carry.clear();
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    assert!(checked > 150, "{checked} records replayed");
    // The greeting, two connections' commands up to and with bob's login.
    assert_eq!(pre_checked, 12, "pre-login records replayed");
    let log = std::fs::read_to_string(dir.path().join("log")).expect("log");
    let want = login_log_lines(SESSION_LOGIN_LOG);
    assert_eq!(want.len(), 2, "the recorded login stage's lines");
    assert_eq!(login_log_lines(&log), want, "{log}");
}

/// Where the first synchronizing literal announcement (`{N}\r\n`) of `data` ends.
fn sync_literal_end(data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = memchr::memmem::find(&data[i..], b"}\r\n") {
        let end = i + p;
        let open = data[..end].iter().rposition(|&c| c == b'{')?;
        let inner = &data[open + 1..end];
        if !inner.is_empty() && inner.iter().all(u8::is_ascii_digit) {
            return Some(end + 3);
        }
        i = end + 3;
    }
    None
}

/// The size of a literal announced at the very end of `data` (`{N}\r\n`, `{N+}\r\n`).
fn final_literal(data: &[u8]) -> Option<usize> {
    let body = data.strip_suffix(b"}\r\n")?;
    let open = body.iter().rposition(|&c| c == b'{')?;
    let n = &body[open + 1..];
    let n = n.strip_suffix(b"+").unwrap_or(n);
    std::str::from_utf8(n).ok()?.parse().ok()
}

/// The end (after its CRLF) of the first line of `out` that starts with `tag` and a space.
fn line_end_of(out: &[u8], tag: &[u8]) -> Option<usize> {
    let mut start = 0;
    while start < out.len() {
        let end = memchr::memmem::find(&out[start..], b"\r\n").map_or(out.len(), |p| start + p + 2);
        let line = &out[start..end];
        if line.starts_with(tag) && line.get(tag.len()) == Some(&b' ') {
            return Some(end);
        }
        start = end;
    }
    None
}

/// A message of about `size` bytes with LF line ends, each line numbered (so that a
/// piece out of place would show).
fn numbered_message(name: &str, size: usize) -> Vec<u8> {
    let mut m = format!("From: a@example.com\nSubject: {name}\n\n").into_bytes();
    let mut i = 0;
    while m.len() < size {
        m.extend_from_slice(format!("{name} line {i:08} {}\n", "x".repeat(50)).as_bytes());
        i += 1;
    }
    m
}

/// Carry out the session's actions until it waits for input, as [`run`], checking that
/// no piece handed out and nothing left queued in the core is above `bound`; what was sent
/// and how many pieces.
fn run_bounded(s: &mut Session, bound: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut sends = 0;
    loop {
        let a = s.next();
        assert!(s.out.buf.len() <= bound, "queued {}", s.out.buf.len());
        match a {
            Action::Send(b) => {
                assert!(b.len() <= bound, "a send of {} bytes", b.len());
                sends += 1;
                out.extend_from_slice(&b);
            }
            Action::Read { .. } => return (out, sends),
            Action::Close => panic!("closed"),
        }
    }
}

/// A FETCH of several megabytes goes out from the core in pieces of about 64 kB, each
/// handed out as a Send and the rest produced when the connection task comes back (no
/// second handle on a socket), the pipelined command after it answered only after it,
/// and the bytes are the whole reply, as it would be in one piece.
#[test]
fn large_fetch_streams_through_the_core_in_bounded_pieces() {
    use super::session::OUT_FLUSH;
    let dir = tempfile::tempdir().expect("tempdir");
    let maildir = dir.path().join("home/bob/Maildir");
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(d)).expect("maildir");
    }
    // Above and below the size up to which a message is read whole for BODY[], and small.
    let msgs = [
        numbered_message("big", 3 << 20),
        numbered_message("mid", 700 << 10),
        numbered_message("small", 300),
        numbered_message("big2", (2 << 20) + 12345),
    ];
    for (i, m) in msgs.iter().enumerate() {
        let name = format!("{}.M{i}P1.test", 1_796_000_000 + i);
        std::fs::write(maildir.join("new").join(name), m).expect("message");
    }
    let st = state(dir.path());
    let (mut s, _) = login(&st, dir.path(), "a");
    let (sel, _) = feed(&mut s, b"a SELECT INBOX\r\n");
    assert!(String::from_utf8_lossy(&sel).contains("* 4 EXISTS"));
    let crlf = |m: &[u8]| super::message::mime::to_crlf(m);
    // Every piece at most OUT_FLUSH plus one piece of a streamed message (its CRLF form
    // of a 32 kB read) or of an item's head.
    let bound = 2 * OUT_FLUSH + 4096;

    // BODY[] of each, and the message's text (a section of a parsed message), with a
    // NOOP pipelined behind.
    s.received(b"f FETCH 1:* (RFC822.SIZE BODY.PEEK[])\r\nt UID FETCH 1,4 (BODY.PEEK[TEXT] BODY.PEEK[]<1000.2000000>)\r\nn NOOP\r\n");
    let (got, sends) = run_bounded(&mut s, bound);
    let mut want = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let c = crlf(m);
        want.extend_from_slice(
            format!(
                "* {} FETCH (RFC822.SIZE {} BODY[] {{{}}}\r\n",
                i + 1,
                c.len(),
                c.len()
            )
            .as_bytes(),
        );
        want.extend_from_slice(&c);
        want.extend_from_slice(b")\r\n");
    }
    want.extend_from_slice(b"f OK Fetch completed.\r\n");
    for (seq, i) in [(1, 0), (4, 3)] {
        let c = crlf(&msgs[i]);
        let text_at = memchr::memmem::find(&c, b"\r\n\r\n").expect("header end") + 4;
        let text = &c[text_at..];
        let part = &c[1000..c.len().min(1000 + 2_000_000)];
        want.extend_from_slice(
            format!("* {seq} FETCH (UID {seq} BODY[TEXT] {{{}}}\r\n", text.len()).as_bytes(),
        );
        want.extend_from_slice(text);
        want.extend_from_slice(format!(" BODY[]<1000> {{{}}}\r\n", part.len()).as_bytes());
        want.extend_from_slice(part);
        want.extend_from_slice(b")\r\n");
    }
    want.extend_from_slice(b"t OK Fetch completed.\r\nn OK NOOP completed.\r\n");
    // The tagged lines' timings taken out.
    let mut got_norm = Vec::with_capacity(got.len());
    let mut rest = &got[..];
    while let Some(p) = memchr::memmem::find(rest, b" completed (") {
        let e = memchr::memmem::find(&rest[p..], b" secs).\r\n").expect("timing") + p;
        got_norm.extend_from_slice(&rest[..p + " completed".len()]);
        got_norm.extend_from_slice(b".\r\n");
        rest = &rest[e + " secs).\r\n".len()..];
    }
    got_norm.extend_from_slice(rest);
    assert_eq!(got_norm.len(), want.len());
    assert!(
        got_norm == want,
        "the streamed reply differs from the whole one"
    );
    // Pieces, not one write: about one per OUT_FLUSH.
    assert!(
        sends as u64 >= got.len() as u64 / (bound as u64),
        "{sends} sends"
    );
    assert!(sends > 100, "{sends} sends");

    // The client gone in the middle of a FETCH: nothing more is produced, the session
    // ends.
    s.received(b"g FETCH 1:* BODY.PEEK[]\r\nh NOOP\r\n");
    let Action::Send(first) = s.next() else {
        panic!("no send")
    };
    assert!(first.starts_with(b"* 1 FETCH (BODY[] {"));
    s.send_failed();
    assert_eq!(s.next(), Action::Close);
}
