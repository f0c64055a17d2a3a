//! The mbox locks of POP3 and IMAP sessions, as Dovecot 2.3.19 takes them from
//! `mbox_read_locks` and `mbox_write_locks`: a running `postern dovecot -c FILE -F`, real
//! clients on its ports, and another program (Python's `fcntl.flock`/`fcntl.lockf`, or a
//! `NAME.lock` file) on the mailbox. Each kind named is taken (seen by the other program
//! while a session holds it, or waited for by the session while the other program holds
//! it), a kind not named is not, and lists Dovecot refuses end the session as Dovecot's do
//! (compat-fixtures/locks/dovecot-2.3.txt, scripts/regen-mbox-lock-fixtures).

mod common;
use common::*;

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const USER: &str = "posternpop";

/// A dovecot.conf with POP3 and IMAP on fresh ports, alice's mbox INBOX, then `extra`.
fn start(dir: &Path, mbox: &str, extra: &str) -> (Dovecot, u16, u16) {
    let (uid, gid) = user_ids(USER);
    alice_mbox_home(dir, mbox, (uid, gid));
    let (pop3, imap) = (free_port(), free_port());
    let d = dir.display();
    let conf = format!(
        "protocols = pop3 imap\nbase_dir = {d}/base\nstate_dir = {d}/state\nlisten = 127.0.0.1\n\
         log_path = {d}/log\nmail_location = mbox:~/mail:INBOX=~/inbox\n\
         ssl = no\ndisable_plaintext_auth = no\nauth_failure_delay = 0\n\
         passdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
         userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={d}/home/%u\n}}\n\
         service pop3-login {{\n  inet_listener pop3 {{\n    port = {pop3}\n  }}\n  inet_listener pop3s {{\n    port = 0\n  }}\n}}\n\
         service imap-login {{\n  inet_listener imap {{\n    port = {imap}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
         {extra}"
    );
    let cf = dir.join("dovecot.conf");
    std::fs::write(&cf, conf).expect("conf");
    let s = Dovecot::foreground(&cf, pop3, &dir.join("log"));
    wait_port(imap);
    (s, pop3, imap)
}

fn inbox(dir: &Path) -> PathBuf {
    dir.join("home/alice/inbox")
}

const SMALL: &str = "From bob@example.org  Sat Nov 28 10:00:00 2026\nSubject: one\n\nhello\n\nFrom bob@example.org  Sat Nov 28 10:01:00 2026\nSubject: two\n\nsecond\n\n";

/// What another program finds on `mbox` right now, by trying each lock without waiting
/// (Python, a separate process): `dotlock` (NAME.lock exists), then whether an exclusive
/// and a shared `flock(2)`, and an exclusive and a shared POSIX lock (`lockf`), could be
/// had (`ok`) or not (`busy`).
fn probe(mbox: &Path) -> String {
    let (out, err, rc) = python(&format!(
        r#"
import fcntl, os
p = {p:?}
res = ["dotlock=" + ("yes" if os.path.exists(p + ".lock") else "no")]
for name, fn, kind in [("flock-ex", fcntl.flock, fcntl.LOCK_EX), ("flock-sh", fcntl.flock, fcntl.LOCK_SH),
                       ("posix-ex", fcntl.lockf, fcntl.LOCK_EX), ("posix-sh", fcntl.lockf, fcntl.LOCK_SH)]:
    fd = os.open(p, os.O_RDWR)
    try:
        fn(fd, kind | fcntl.LOCK_NB)
        res.append(name + "=ok")
    except OSError:
        res.append(name + "=busy")
    os.close(fd)
print(" ".join(res))
"#,
        p = mbox.display().to_string()
    ));
    assert_eq!(rc, 0, "{out}{err}");
    out.trim().to_string()
}

/// A lock held on `mbox` by another process (Python) until dropped: `flock-sh`,
/// `flock-ex`, `posix-sh`, `posix-ex` (lockf's kind), or `dotlock` (NAME.lock holding the
/// holder's live PID).
struct Held {
    child: std::process::Child,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hold(kind: &str, mbox: &Path) -> Held {
    let script = format!(
        r#"
import fcntl, os, sys, time
p, kind = {p:?}, {kind:?}
fd = os.open(p, os.O_RDWR)
if kind == "flock-sh": fcntl.flock(fd, fcntl.LOCK_SH)
elif kind == "flock-ex": fcntl.flock(fd, fcntl.LOCK_EX)
elif kind == "posix-sh": fcntl.lockf(fd, fcntl.LOCK_SH)
elif kind == "posix-ex": fcntl.lockf(fd, fcntl.LOCK_EX)
elif kind == "dotlock":
    fd2 = os.open(p + ".lock", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd2, b"%d\n" % os.getpid())
    os.close(fd2)
print("held", flush=True)
try:
    sys.stdin.read()
finally:
    if kind == "dotlock":
        os.unlink(p + ".lock")
"#,
        p = mbox.display().to_string()
    );
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("held");
    assert_eq!(line.trim(), "held");
    Held { child }
}

/// A box whose first message is large enough (24 MB) that its RETR cannot all be in the
/// socket buffers: while the client does not read, the session holds it open, under its
/// read locks.
fn big_box() -> String {
    let line = "x".repeat(79) + "\n";
    let mut b = String::from("From bob@example.org  Sat Nov 28 10:00:00 2026\nSubject: big\n\n");
    for _ in 0..(24 << 20) / 80 {
        b.push_str(&line);
    }
    b.push_str("\nFrom bob@example.org  Sat Nov 28 10:01:00 2026\nSubject: two\n\nsecond\n\n");
    b
}

/// POP3 logged in as alice, STAT answered.
fn pop3_in(port: u16) -> Pop {
    let (mut c, _) = Pop::connect(port);
    assert_eq!(c.cmd("USER alice"), ["+OK"]);
    assert_eq!(c.cmd("PASS secret"), ["+OK Logged in."]);
    let stat = c.cmd("STAT");
    assert!(stat[0].starts_with("+OK 2 "), "{stat:?}");
    c
}

/// What another program finds on the mbox while a session reads message 1 of a big box
/// (RETR sent, its first line read, the rest left unread), and after the session.
fn seen_while_reading(lists: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, pop3, _) = start(dir.path(), &big_box(), lists);
    let mut c = pop3_in(pop3);
    c.w.write_all(b"RETR 1\r\n").expect("write");
    let first = c.line();
    assert!(first.starts_with("+OK "), "{first}");
    std::thread::sleep(Duration::from_millis(500));
    let during = probe(&inbox(dir.path()));
    // The rest of the message, then the end of the session.
    let mut rest = Vec::new();
    loop {
        let mut l = Vec::new();
        c.r.read_until(b'\n', &mut l).expect("read");
        if l.is_empty() || l == b".\r\n" {
            break;
        }
        rest.extend_from_slice(&l);
    }
    assert!(rest.len() > 20 << 20, "{}", rest.len());
    assert_eq!(c.cmd("QUIT"), ["+OK Logging out."]);
    s.wait_log("Disconnected: Logged out");
    let after = probe(&inbox(dir.path()));
    (during, after)
}

/// Nothing held by anyone: what a probe finds on a box no session holds.
const FREE: &str = "dotlock=no flock-ex=ok flock-sh=ok posix-ex=ok posix-sh=ok";

#[test]
fn dotlock_lists_hold_the_dotlock_and_no_kernel_lock_while_reading() {
    let (during, after) =
        seen_while_reading("mbox_read_locks = dotlock\nmbox_write_locks = dotlock\n");
    assert_eq!(
        during,
        "dotlock=yes flock-ex=ok flock-sh=ok posix-ex=ok posix-sh=ok"
    );
    assert_eq!(after, FREE);
}

#[test]
fn flock_lists_hold_a_shared_flock_and_nothing_else_while_reading() {
    let (during, after) = seen_while_reading("mbox_read_locks = flock\nmbox_write_locks = flock\n");
    assert_eq!(
        during,
        "dotlock=no flock-ex=busy flock-sh=ok posix-ex=ok posix-sh=ok"
    );
    assert_eq!(after, FREE);
}

#[test]
fn lockf_read_lock_is_exclusive() {
    let (during, after) = seen_while_reading("mbox_read_locks = lockf\nmbox_write_locks = lockf\n");
    assert_eq!(
        during,
        "dotlock=no flock-ex=ok flock-sh=ok posix-ex=busy posix-sh=busy"
    );
    assert_eq!(after, FREE);
}

#[test]
fn default_lists_hold_an_fcntl_read_lock_while_reading() {
    let (during, after) = seen_while_reading("");
    assert_eq!(
        during,
        "dotlock=no flock-ex=ok flock-sh=ok posix-ex=busy posix-sh=ok"
    );
    assert_eq!(after, FREE);
}

/// The POP3 session's STAT with a lock of `held` kept by another process: its reply
/// (`mbox_lock_timeout = 1s`) and whether it waited for the timeout.
fn stat_with_held(dir: &Path, pop3: u16, held: &str) -> (String, bool) {
    let _h = hold(held, &inbox(dir));
    let (mut c, _) = Pop::connect(pop3);
    assert_eq!(c.cmd("USER alice"), ["+OK"]);
    assert_eq!(c.cmd("PASS secret"), ["+OK Logged in."]);
    let t0 = Instant::now();
    let stat = c.cmd("STAT").remove(0);
    let waited = t0.elapsed() >= Duration::from_millis(900);
    if stat.starts_with("+OK") {
        assert_eq!(c.cmd("QUIT"), ["+OK Logging out."]);
    }
    (stat, waited)
}

/// Each session waits for the kinds its lists name and for no other: with a lock of
/// each kind held by another process, STAT (the box read under `mbox_read_locks`) and an
/// IMAP expunge (under `mbox_write_locks`) go on at once or time out with Dovecot's
/// words.
#[test]
fn sessions_wait_only_for_the_kinds_named() {
    let timeout = "-ERR [SYS/TEMP] Timeout while waiting for lock";
    for (lists, blocking, free) in [
        (
            "mbox_read_locks = dotlock\nmbox_write_locks = dotlock\n",
            &["dotlock"][..],
            "posix-ex",
        ),
        (
            "mbox_read_locks = flock\nmbox_write_locks = flock\n",
            &["flock-ex"][..],
            "posix-ex",
        ),
        // lockf is exclusive: another process's shared POSIX lock keeps it out.
        (
            "mbox_read_locks = lockf\nmbox_write_locks = lockf\n",
            &["posix-sh", "posix-ex"][..],
            "flock-ex",
        ),
        ("", &["posix-ex"][..], "flock-ex"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, pop3, imap) = start(
            dir.path(),
            SMALL,
            &format!("{lists}mbox_lock_timeout = 1s\n"),
        );
        // The box indexed first (its UIDs written under the write locks).
        let mut c = pop3_in(pop3);
        assert_eq!(c.cmd("QUIT"), ["+OK Logging out."]);
        for held in ["flock-sh", "flock-ex", "posix-sh", "posix-ex", "dotlock"] {
            let (stat, waited) = stat_with_held(dir.path(), pop3, held);
            if blocking.contains(&held) {
                assert_eq!(
                    (stat.as_str(), waited),
                    (timeout, true),
                    "{lists} held {held}"
                );
            } else {
                assert!(
                    stat.starts_with("+OK 2 ") && !waited,
                    "{lists} held {held}: {stat} waited {waited}"
                );
            }
        }
        // The write locks: an IMAP expunge while another process holds a kind the
        // lists do not name goes on at once.
        let h = hold(free, &inbox(dir.path()));
        let mut c = Imap::login(imap, "alice");
        let sel = c.cmd("SELECT INBOX");
        assert!(
            sel.last().is_some_and(|l| l.contains(" OK ")),
            "{lists}: {sel:?}"
        );
        let store = c.cmd("STORE 1 +FLAGS (\\Deleted)");
        assert!(
            store.last().is_some_and(|l| l.contains(" OK ")),
            "{lists}: {store:?}"
        );
        let t0 = Instant::now();
        let e = c.cmd("EXPUNGE");
        assert!(t0.elapsed() < Duration::from_millis(900), "{lists}: waited");
        c.cmd("LOGOUT");
        drop(h);
        assert!(
            e.first().is_some_and(|l| l == "* 1 EXPUNGE")
                && e.last().is_some_and(|l| l.contains(" OK ")),
            "{lists}: {e:?}"
        );
        let text = std::fs::read_to_string(inbox(dir.path())).expect("inbox");
        assert!(!text.contains("Subject: one"), "{text}");
        drop(s);
    }
}

/// The fixture's lines of one `lists:READ|WRITE` case: the replies (`C: … -> …`) and the
/// `Fatal:` texts.
fn fixture_case(case: &str) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("compat-fixtures/locks/dovecot-2.3.txt"),
    )
    .expect("fixture");
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("lists:{case}\t")))
        .collect();
    assert!(!lines.is_empty(), "no fixture case {case}");
    let replies = lines
        .iter()
        .filter(|l| l.starts_with("C: "))
        .map(|l| l.to_string())
        .collect();
    let fatal = lines
        .iter()
        .filter_map(|l| l.split_once(": Fatal: ").map(|(_, t)| t.to_string()))
        .collect();
    (replies, fatal)
}

/// Lists Dovecot refuses: the session dies at its first mbox lock as Dovecot's mail
/// process does: POP3 answers `+OK Logged in.` and then closes the connection without
/// a reply, IMAP's LOGIN succeeds and SELECT gets no reply; the log has Dovecot's `Fatal:`
/// line and no `Disconnected` line for the session. Lists that are only odd (names in
/// capitals, a read lock list that is a part of the write list) work.
#[test]
fn refused_lock_lists_end_sessions_as_dovecot_does() {
    for (case, read, write) in [
        (
            "dotlock fcntl|fcntl dotlock",
            "dotlock fcntl",
            "fcntl dotlock",
        ),
        ("fcntl|flock", "fcntl", "flock"),
        ("bogus|fcntl dotlock", "bogus", "fcntl dotlock"),
        ("fcntl|fcntl bogus", "fcntl", "fcntl bogus"),
        ("fcntl fcntl|fcntl fcntl", "fcntl fcntl", "fcntl fcntl"),
        ("|", "", ""),
        ("FCNTL|Fcntl DOTLOCK", "FCNTL", "Fcntl DOTLOCK"),
        ("lockf|fcntl lockf", "lockf", "fcntl lockf"),
    ] {
        let (want_replies, want_fatal) = fixture_case(case);
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, pop3, imap) = start(
            dir.path(),
            SMALL,
            &format!("mbox_read_locks = {read}\nmbox_write_locks = {write}\n"),
        );
        let mut got = Vec::new();
        // POP3: as the fixture's script talks (stop at the first closed connection).
        let (mut c, _) = Pop::connect(pop3);
        for cmd in ["USER alice", "PASS secret", "STAT", "QUIT"] {
            let _ = c.w.write_all(format!("{cmd}\r\n").as_bytes());
            let mut l = String::new();
            let n = c.r.read_line(&mut l).unwrap_or(0);
            let reply = if n == 0 {
                "(connection closed)".to_string()
            } else {
                l.trim_end().to_string()
            };
            got.push(format!("C: {cmd} -> {reply}"));
            if n == 0 {
                break;
            }
        }
        let (mut c, _) = Imap::connect(imap);
        for cmd in ["LOGIN alice secret", "SELECT INBOX", "LOGOUT"] {
            c.n += 1;
            let _ = c.w.write_all(format!("a {cmd}\r\n").as_bytes());
            let mut reply = "(connection closed)".to_string();
            while let Some(l) = c.line() {
                if let Some(t) = l.strip_prefix("a ") {
                    let t = t.split(" [CAPABILITY").next().unwrap_or(t);
                    // Dovecot's timing, which the fixture's script cuts too.
                    let t = match t.rsplit_once(" (") {
                        Some((a, b)) if b.ends_with(" secs).") => format!("{a}."),
                        _ => t.to_string(),
                    };
                    reply = format!("a {t}");
                    break;
                }
            }
            let closed = reply == "(connection closed)";
            got.push(format!("C: a {cmd} -> {reply}"));
            if closed {
                break;
            }
        }
        assert_eq!(got, want_replies, "{case}");
        let log = if want_fatal.is_empty() {
            s.wait_log("imap(alice)")
        } else {
            wait_text(
                &dir.path().join("log"),
                "imap(alice)",
                Duration::from_secs(10),
            )
        };
        let fatal: Vec<String> = log
            .lines()
            .filter_map(|l| l.split_once(": Fatal: ").map(|(_, t)| t.to_string()))
            .collect();
        assert_eq!(fatal, want_fatal, "{case}: {log}");
        if !want_fatal.is_empty() {
            assert!(
                !log.contains("pop3(alice)") || !log.contains("Disconnected: Logged out"),
                "{log}"
            );
            assert!(
                log.lines()
                    .filter(|l| l.contains("(alice)<"))
                    .all(|l| l.contains(": Fatal: ")),
                "only the Fatal lines for the sessions: {log}"
            );
        }
        drop(s);
    }
}

/// A POP3 session reads and expunges (RETR, DELE, QUIT) while another process holds a
/// lock of a kind the lists do not name, at once; afterwards nothing is left behind and
/// no lock stays taken.
#[test]
fn pop3_expunge_beside_a_kind_not_named_and_nothing_left_behind() {
    for (lists, other) in [
        (
            "mbox_read_locks = dotlock\nmbox_write_locks = dotlock\n",
            "posix-ex",
        ),
        (
            "mbox_read_locks = flock\nmbox_write_locks = dotlock flock\n",
            "posix-ex",
        ),
        (
            "mbox_read_locks = lockf\nmbox_write_locks = lockf\n",
            "flock-ex",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, pop3, _) = start(
            dir.path(),
            SMALL,
            &format!("{lists}mbox_lock_timeout = 1s\n"),
        );
        let held = hold(other, &inbox(dir.path()));
        let mut c = pop3_in(pop3);
        let r = c.cmd("RETR 2");
        assert!(r.iter().any(|l| l == "second"), "{r:?}");
        assert_eq!(c.cmd("DELE 1"), ["+OK Marked to be deleted."]);
        assert_eq!(c.cmd("QUIT"), ["+OK Logging out, messages deleted."]);
        s.wait_log("Disconnected: Logged out");
        drop(held);
        let mut text = String::new();
        std::fs::File::open(inbox(dir.path()))
            .and_then(|mut f| f.read_to_string(&mut text))
            .expect("inbox");
        assert!(
            !text.contains("Subject: one") && text.contains("Subject: two"),
            "{lists}: {text}"
        );
        assert_eq!(probe(&inbox(dir.path())), FREE, "{lists}");
    }
}
