//! Reliability under faults (issue 17), against a Postern started with `postfix start`:
//! mailbox locks that never stall the queue (a dotlock whose process is gone is taken over
//! at once; a held lock defers after `deliver_lock_attempts` tries with Postfix's words,
//! while mail to other mailboxes and relayed mail keeps flowing).
//!
//! The lock tests need root (system users with spool mailboxes); without root they return
//! early.

mod common;
use common::*;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

const QMGR: &str = "qmgr      unix  n       -       n       300     1       qmgr\n\
                    smtp      unix  -       -       n       -       -       smtp\n";

fn start(extra: &str) -> Instance {
    Instance::start_with(&delivering_main_cf(extra), QMGR, |d| {
        std::fs::create_dir_all(d.join("mail")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("mail"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    })
}

/// Poll the log until `pred` holds (`secs` seconds), then return it.
fn wait_until(inst: &Instance, secs: u64, pred: impl Fn(&str) -> bool) -> String {
    inst.wait_log_until(Duration::from_secs(secs), pred)
}

/// Several messages in one SMTP session; their queue IDs.
fn send_many(port: u16, msgs: &[(&str, String)]) -> Vec<String> {
    let mut s = Smtp::connect(port);
    s.line();
    assert!(s.cmd("EHLO client.example").concat().starts_with("250"));
    let mut ids = Vec::new();
    for (to, subject) in msgs {
        assert!(
            s.cmd("MAIL FROM:<sender@example.org>")
                .concat()
                .starts_with("250")
        );
        let r = s.cmd(&format!("RCPT TO:<{to}>")).concat();
        assert!(r.starts_with("250"), "RCPT {to}: {r}");
        assert!(s.cmd("DATA").concat().starts_with("354"));
        s.send(&format!(
            "From: sender@example.org\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nbody\r\n"
        ));
        let r = s.cmd(".").concat();
        assert!(r.starts_with("250"), "{r}");
        ids.push(r.rsplit(' ').next().unwrap_or_default().to_string());
    }
    s.cmd("QUIT");
    ids
}

fn status_of<'a>(log: &'a str, id: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(&format!(": {id}: to=<")) && l.contains(", status="))
        .collect()
}

fn messages_in(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("From "))
        .count()
}

#[test]
fn dotlock_of_a_dead_process_is_taken_over_at_once() {
    if mail_user("pst-lock-d").is_none() {
        return;
    }
    // A fresh lock (well within stale_lock_time) naming a process that has exited.
    let inst = start("stale_lock_time = 600s\n");
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let spool = inst.dir.path().join("mail");
    let lock = spool.join("pst-lock-d.lock");
    std::fs::write(&lock, format!("{dead}\n")).unwrap();
    // The recipient's, as a delivery into a world-writable spool leaves it.
    let pw = nix::unistd::User::from_name("pst-lock-d").unwrap().unwrap();
    nix::unistd::chown(&lock, Some(pw.uid), Some(pw.gid)).unwrap();
    let ids = send_many(
        inst.port,
        &[("pst-lock-d@localhost", "after a crash".to_string())],
    );
    let log = wait_until(&inst, 60, |l| !status_of(l, &ids[0]).is_empty());
    let st = status_of(&log, &ids[0]);
    assert_eq!(st.len(), 1, "{log}");
    assert!(
        st[0].contains("dsn=2.0.0, status=sent (delivered to mailbox)"),
        "{log}"
    );
    assert_eq!(messages_in(&spool.join("pst-lock-d")), 1);
    assert!(
        !lock.exists(),
        "the taken-over lock is removed after delivery"
    );
}

/// A POSIX `fcntl` write lock on all of `f`, held by this (test) process.
fn hold_fcntl(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed flock is valid; the fields set describe the whole file.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    // SAFETY: the descriptor is open while `f` lives.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &fl) };
    assert_eq!(r, 0, "fcntl lock: {}", std::io::Error::last_os_error());
}

#[test]
fn held_locks_defer_after_the_bounded_wait_while_other_mail_flows() {
    for u in ["pst-lock-a", "pst-lock-b", "pst-lock-c"] {
        if mail_user(u).is_none() {
            return;
        }
    }
    let sink = Sink::start(SinkMode::Accept);
    // Five workers, five local delivery processes: without the queue manager putting
    // aside messages for busy mailboxes (and not counting workers that wait for a lock),
    // eight messages to one locked mailbox would take them all.
    let inst = start(&format!(
        "default_process_limit = 5\ndeliver_lock_attempts = 10\ndeliver_lock_delay = 1s\n\
         relayhost = [127.0.0.1]:{}\n",
        sink.port
    ));
    let spool = inst.dir.path().join("mail");
    // pst-lock-a: a dotlock held by a live process (not ours).
    let mut holder = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    std::fs::write(spool.join("pst-lock-a.lock"), format!("{}\n", holder.id())).unwrap();
    // pst-lock-c: its mbox fcntl-locked by this process (as a mail reader would).
    let c_box = spool.join("pst-lock-c");
    let c_file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&c_box)
            .unwrap()
    };
    let pw = nix::unistd::User::from_name("pst-lock-c").unwrap().unwrap();
    nix::unistd::chown(&c_box, Some(pw.uid), Some(pw.gid)).unwrap();
    hold_fcntl(&c_file);

    let mut first: Vec<(&str, String)> = (0..8)
        .map(|i| ("pst-lock-a@localhost", format!("to a {i}")))
        .collect();
    first.push(("pst-lock-c@localhost", "to c".into()));
    let locked_ids = send_many(inst.port, &first);
    let flowing = send_many(
        inst.port,
        &[
            ("pst-lock-b@localhost", "to b".to_string()),
            ("someone@relay.example", "relayed".to_string()),
        ],
    );
    // The other mailbox and the relay get their mail while the locked ones wait.
    let log = wait_until(&inst, 60, |l| {
        flowing
            .iter()
            .all(|id| l.contains(&format!("{id}: removed")))
    });
    for id in &flowing {
        let st = status_of(&log, id);
        assert!(
            st.len() == 1 && st[0].contains("status=sent"),
            "{id}: {st:?}\n{log}"
        );
    }
    assert!(
        !log.contains("status=deferred"),
        "a locked mailbox was given up before other mail went through:\n{log}"
    );
    assert_eq!(messages_in(&spool.join("pst-lock-b")), 1);
    assert_eq!(sink.messages.lock().unwrap().len(), 1);

    // Then the held locks are given up on, in Postfix's words.
    let a_box = spool.join("pst-lock-a");
    // As main.cf names it ($queue_directory/../mail).
    let logged = inst.dir.path().join("spool/../mail");
    let dot = format!(
        "dsn=4.2.0, status=deferred (cannot update mailbox {} for user pst-lock-a. unable to create lock file {}.lock: File exists)",
        logged.join("pst-lock-a").display(),
        logged.join("pst-lock-a").display()
    );
    let fcntl = format!(
        "dsn=4.2.0, status=deferred (cannot update mailbox {} for user pst-lock-c. unable to lock for exclusive access: Resource temporarily unavailable)",
        logged.join("pst-lock-c").display()
    );
    let log = wait_until(&inst, 90, |l| l.contains(&dot) && l.contains(&fcntl));
    assert!(log.contains(&dot), "{log}");
    assert!(log.contains(&fcntl), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("postfix/local[") && l.contains(&dot)),
        "{log}"
    );

    // Locks released: a flush delivers everything that waited, each message once.
    let _ = holder.kill();
    let _ = holder.wait();
    let _ = std::fs::remove_file(spool.join("pst-lock-a.lock"));
    drop(c_file);
    // (Flushed again while some remain: a delivery that gave up just as the locks went
    // is deferred after the first flush.)
    let all_removed = |l: &str| {
        locked_ids
            .iter()
            .all(|id| l.contains(&format!("{id}: removed")))
    };
    let mut log = inst.log();
    for _ in 0..24 {
        let out = inst.postfix(&["flush"]);
        assert!(out.status.success(), "{out:?}");
        log = wait_until(&inst, 5, all_removed);
        if all_removed(&log) {
            break;
        }
    }
    for id in &locked_ids {
        assert!(log.contains(&format!("{id}: removed")), "{id}\n{log}");
    }
    assert_eq!(messages_in(&a_box), 8);
    assert_eq!(messages_in(&c_box), 1);
}

// ---------------------------------------------------------------------------------------
// Smaller items: panics in the log, recipient overshoot, over-long lines, STARTTLS timeout.

#[test]
fn a_panicking_session_is_logged_as_postfix_panics_and_the_server_serves_on() {
    let inst = Instance::start_env(
        &delivering_main_cf(""),
        "",
        vec![("POSTERN_TEST_PANIC".into(), "XPANIC".into())],
        |_| {},
    );
    let mut s = Smtp::connect(inst.port);
    assert!(s.line().starts_with("220 "));
    s.send("XPANIC\r\n");
    assert_eq!(s.reply(), vec!["<EOF>".to_string()]);
    let log = inst.wait_log("fault injected at XPANIC");
    let line = log
        .lines()
        .find(|l| l.contains("fault injected at XPANIC"))
        .unwrap_or_default()
        .to_string();
    // `postfix/smtpd[PID]: panic: src/…: POSTERN_TEST_PANIC: fault injected at XPANIC`
    let (head, text) = line.split_once("]: ").unwrap_or_default();
    assert!(head.contains(" postfix/smtpd["), "{line}");
    assert!(text.starts_with("panic: src/smtpd/session.rs:"), "{line}");
    assert!(
        text.ends_with(": POSTERN_TEST_PANIC: fault injected at XPANIC"),
        "{line}"
    );
    // Only that session ended.
    let mut s = Smtp::connect(inst.port);
    assert!(s.line().starts_with("220 "));
    assert!(s.cmd("EHLO client.example").concat().starts_with("250"));
    assert_eq!(s.cmd("QUIT"), vec!["221 2.0.0 Bye".to_string()]);
}

#[test]
fn recipients_past_the_limit_get_452_up_to_the_overshoot_limit_then_count_as_errors() {
    // Postfix's smtpd.c: RCPTs past smtpd_recipient_limit get 452 and are not errors until
    // smtpd_recipient_overshoot_limit of them; then each is one, and the hard error limit
    // ends the session with 421.
    let inst = Instance::start(
        &delivering_main_cf(
            "smtpd_recipient_limit = 5\nsmtpd_recipient_overshoot_limit = 3\nsmtpd_hard_error_limit = 4\n",
        ),
        "",
    );
    let mut s = Smtp::connect(inst.port);
    s.line();
    assert!(s.cmd("EHLO client.example").concat().starts_with("250"));
    assert!(
        s.cmd("MAIL FROM:<a@example.org>")
            .concat()
            .starts_with("250")
    );
    let mut replies = Vec::new();
    for i in 0..20 {
        let r = s.cmd(&format!("RCPT TO:<u{i}@localhost>")).concat();
        let end = r.starts_with("421") || r == "<EOF>";
        replies.push(r);
        if end {
            break;
        }
    }
    let want: Vec<String> = std::iter::repeat_n("250 2.1.5 Ok".to_string(), 5)
        .chain(std::iter::repeat_n(
            "452 4.5.3 Error: too many recipients".to_string(),
            3 + 4,
        ))
        .chain(["421 4.7.0 mail.example.test Error: too many errors".to_string()])
        .collect();
    assert_eq!(replies, want);
    let log = inst.wait_log("too many errors after RCPT");
    assert!(
        log.contains("too many errors after RCPT from localhost[127.0.0.1]"),
        "{log}"
    );
}

#[test]
fn an_over_long_command_line_is_logged_as_postfix_logs_it() {
    let inst = Instance::start(&delivering_main_cf(""), "");
    let mut s = Smtp::connect(inst.port);
    s.line();
    // 1 MB without a line end in the first 2048 bytes: cut there, the rest skipped.
    let long = format!("X\u{1}{}\r\n", "Y".repeat(1 << 20));
    s.send(&long);
    assert_eq!(
        s.reply(),
        vec!["500 5.5.2 Error: command not recognized".to_string()]
    );
    assert_eq!(s.cmd("NOOP"), vec!["250 2.0.0 Ok".to_string()]);
    let want = format!(
        "warning: localhost[127.0.0.1]: request longer than 2048: X?{}...",
        "Y".repeat(28)
    );
    let log = inst.wait_log(&want);
    assert!(log.contains(&format!("]: {want}")), "{log}");
}

#[test]
fn a_stalled_tls_handshake_ends_after_smtpd_starttls_timeout() {
    let inst = Instance::start_with(
        &delivering_main_cf(
            "smtpd_tls_cert_file = $queue_directory/../cert.pem\n\
             smtpd_tls_key_file = $queue_directory/../key.pem\n\
             smtpd_tls_security_level = may\nsmtpd_starttls_timeout = 2s\n",
        ),
        "",
        |d| {
            let ck =
                rcgen::generate_simple_self_signed(vec!["mail.example.test".to_string()]).unwrap();
            std::fs::write(d.join("cert.pem"), ck.cert.pem()).unwrap();
            std::fs::write(d.join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
        },
    );
    let mut s = Smtp::connect(inst.port);
    s.line();
    assert!(s.cmd("EHLO client.example").concat().contains("STARTTLS"));
    assert_eq!(
        s.cmd("STARTTLS"),
        vec!["220 2.0.0 Ready to start TLS".to_string()]
    );
    // A handshake record announcing 512 bytes, of which 6 come.
    s.w.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .unwrap();
    // The server closes the connection (well before the reader's 20 s timeout; with
    // smtpd_timeout, 300 s, it would not).
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut s.r.get_mut(), &mut buf);
    assert!(matches!(n, Ok(0)), "{n:?}");
    let log = inst.wait_log("lost connection after STARTTLS");
    assert!(
        log.contains("SSL_accept error from localhost[127.0.0.1]: Connection timed out"),
        "{log}"
    );
    assert!(
        log.contains("lost connection after STARTTLS from localhost[127.0.0.1]"),
        "{log}"
    );
}

/// A tmpfs mounted on a directory; unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mount a tmpfs of `size` on `dir` (root only).
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        if !nix::unistd::Uid::effective().is_root() {
            return None;
        }
        std::fs::create_dir_all(dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_queue_file_system_refuses_mail_with_452_and_loses_nothing() {
    let Some(user) = mail_user("pst-full") else {
        return;
    };
    let _ = user;
    // The queue directory on an 8 MB tmpfs (unmounted after the instance stops: declared
    // first, dropped last).
    let mut fs: Option<Tmpfs> = None;
    let inst = Instance::start_with(
        &delivering_main_cf("message_size_limit = 2000000\n"),
        QMGR,
        |d| {
            std::fs::create_dir_all(d.join("mail")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d.join("mail"), std::fs::Permissions::from_mode(0o1777))
                .unwrap();
            fs = Tmpfs::mount(&d.join("spool"), "8m");
        },
    );
    let Some(fs) = fs else {
        return;
    };
    let mbox = inst.dir.path().join("mail/pst-full");
    let before: Vec<(&str, String)> = (0..3)
        .map(|i| ("pst-full@localhost", format!("before {i}")))
        .collect();
    let ids = send_many(inst.port, &before);
    // Fill the queue's file system until less than 1.5 × message_size_limit is free.
    let st = nix::sys::statvfs::statvfs(&fs.0).unwrap();
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let filler = fs.0.join("filler");
    std::fs::write(&filler, vec![0u8; (free - 2_000_000) as usize]).unwrap();
    let mut s = Smtp::connect(inst.port);
    s.line();
    assert!(s.cmd("EHLO client.example").concat().starts_with("250"));
    assert_eq!(
        s.cmd("MAIL FROM:<sender@example.org>"),
        vec!["452 4.3.1 Insufficient system storage".to_string()]
    );
    s.cmd("QUIT");
    let log = inst.wait_log("not enough free space in mail queue");
    assert!(
        log.contains(
            "NOQUEUE: reject: MAIL from localhost[127.0.0.1]: 452 4.3.1 Insufficient system storage; from=<sender@example.org> proto=ESMTP helo=<client.example>"
        ),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("postfix/smtpd[")
            && l.contains("]: warning: not enough free space in mail queue: ")
            && l.ends_with(" bytes < 1.5*message size limit")),
        "{log}"
    );
    // What was accepted before is delivered all the same, once.
    let log = wait_until(&inst, 60, |l| {
        ids.iter().all(|id| l.contains(&format!("{id}: removed")))
    });
    for id in &ids {
        assert!(log.contains(&format!("{id}: removed")), "{log}");
    }
    assert_eq!(messages_in(&mbox), 3);
    // Space again: mail is accepted again.
    std::fs::remove_file(&filler).unwrap();
    let id = send_many(inst.port, &[("pst-full@localhost", "after".into())]);
    wait_until(&inst, 60, |l| l.contains(&format!("{}: removed", id[0])));
    assert_eq!(messages_in(&mbox), 4);
    drop(inst);
    drop(fs);
}

/// Files left in the queue's `incoming/` (committed or temporary).
fn incoming_files(queue: &Path) -> Vec<String> {
    std::fs::read_dir(queue.join("incoming"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_disk_filling_during_data_gets_451_and_the_session_goes_on() {
    // With `message_size_limit = 0` the MAIL FROM check only looks at `queue_minfree` (0),
    // so a message larger than the space left reaches the queue-file write and fails there:
    // Postfix 3.7's cleanup logs `warning: ID: write queue file: No space left on device`
    // (cleanup_out.c) and smtpd answers `451 4.3.0 Error: queue file write error`
    // (smtpd.c, cleanup_stat_detail(CLEANUP_STAT_WRITE)); the client may go on with
    // another MAIL.
    let Some(_) = mail_user("pst-fulld") else {
        return;
    };
    let mut fs: Option<Tmpfs> = None;
    let inst = Instance::start_with(&delivering_main_cf("message_size_limit = 0\n"), QMGR, |d| {
        std::fs::create_dir_all(d.join("mail")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("mail"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        fs = Tmpfs::mount(&d.join("spool"), "8m");
    });
    let Some(fs) = fs else {
        return;
    };
    let mbox = inst.dir.path().join("mail/pst-fulld");
    let ids = send_many(
        inst.port,
        &[
            ("pst-fulld@localhost", "before 0".to_string()),
            ("pst-fulld@localhost", "before 1".to_string()),
        ],
    );
    // Leave about 256 KB free, then send a 1 MB message in one session.
    let st = nix::sys::statvfs::statvfs(&fs.0).unwrap();
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let filler = fs.0.join("filler");
    std::fs::write(&filler, vec![0u8; (free - 256 * 1024) as usize]).unwrap();
    let mut s = Smtp::connect(inst.port);
    s.line();
    assert!(s.cmd("EHLO client.example").concat().starts_with("250"));
    assert!(
        s.cmd("MAIL FROM:<sender@example.org>")
            .concat()
            .starts_with("250")
    );
    assert!(
        s.cmd("RCPT TO:<pst-fulld@localhost>")
            .concat()
            .starts_with("250")
    );
    assert!(s.cmd("DATA").concat().starts_with("354"));
    let line = format!("{}\r\n", "x".repeat(998));
    s.send("Subject: too big for the disk\r\n\r\n");
    for _ in 0..1024 {
        s.send(&line);
    }
    assert_eq!(
        s.cmd("."),
        vec!["451 4.3.0 Error: queue file write error".to_string()]
    );
    // The session goes on: a small message fits and is accepted.
    assert!(
        s.cmd("MAIL FROM:<sender@example.org>")
            .concat()
            .starts_with("250")
    );
    assert!(
        s.cmd("RCPT TO:<pst-fulld@localhost>")
            .concat()
            .starts_with("250")
    );
    assert!(s.cmd("DATA").concat().starts_with("354"));
    s.send("Subject: small after the failure\r\n\r\nbody\r\n");
    let r = s.cmd(".").concat();
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    let small = r.rsplit(' ').next().unwrap_or_default().to_string();
    assert_eq!(s.cmd("QUIT"), vec!["221 2.0.0 Bye".to_string()]);
    let log = inst.wait_log("write queue file: No space left on device");
    assert!(
        log.lines().any(|l| l.contains("postfix/cleanup[")
            && l.ends_with(": write queue file: No space left on device")
            && l.contains("]: warning: ")),
        "{log}"
    );
    // Everything acknowledged is delivered once; the refused message nowhere.
    let log = wait_until(&inst, 60, |l| {
        ids.iter()
            .chain([&small])
            .all(|id| l.contains(&format!("{id}: removed")))
    });
    for id in ids.iter().chain([&small]) {
        assert!(log.contains(&format!("{id}: removed")), "{log}");
    }
    assert_eq!(messages_in(&mbox), 3);
    let text = std::fs::read_to_string(&mbox).unwrap();
    assert!(!text.contains("too big for the disk"));
    assert!(text.contains("small after the failure"));
    // No partial queue file left behind.
    assert_eq!(incoming_files(&fs.0), Vec::<String>::new());
    std::fs::remove_file(&filler).unwrap();
    drop(inst);
    drop(fs);
}

#[test]
fn crash_replay_with_five_kills_loses_nothing() {
    // scripts/crash-replay, short: 5 SIGKILLs of the whole tree under load (the README's
    // figures come from the same script with 50).
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let out_dir = tempfile::tempdir().unwrap();
    let json = out_dir.path().join("result.json");
    let out = std::process::Command::new(python)
        .arg(repo_root().join("scripts/crash-replay"))
        .args(["--kills", "5", "--drain-timeout", "120", "--json"])
        .arg(&json)
        .env("POSTERN", BIN)
        .output()
        .expect("run crash-replay");
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let field = |name: &str| -> i64 {
        let key = format!("\"{name}\": ");
        text.split_once(&key)
            .and_then(|(_, rest)| {
                rest.split([',', '\n'])
                    .next()
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(-1)
    };
    // The script's post-mortem (the last 60 lines of its stderr) on failure.
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = err.lines().collect();
    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
    let why = format!("{text}\n{}\n{tail}", String::from_utf8_lossy(&out.stdout));
    assert!(field("acknowledged") > 0, "{why}");
    assert_eq!(field("lost"), 0, "{why}");
    assert_eq!(field("corrupt"), 0, "{why}");
    assert_eq!(field("refused_delivered"), 0, "{why}");
    assert_eq!(field("queued_at_end"), 0, "{why}");
    assert!(!text.contains("\"drain_seconds\": null"), "{why}");
    assert_eq!(field("log_panics"), 0, "{why}");
    assert!(out.status.success(), "{why}");
}

#[test]
fn hard_linked_and_symlinked_mailboxes_are_refused_in_postfix_words() {
    // A local user who links another file as their spool mbox (a hard link, or a symlink)
    // gets the mail bounced and the file untouched, with the reason Postfix 3.7's local(8)
    // gives (mailbox.c's prefix, safe_open.c's words).
    for u in ["pst-hlink", "pst-slink"] {
        if mail_user(u).is_none() {
            return;
        }
    }
    let inst = start("");
    let spool = inst.dir.path().join("mail");
    // Files the recipients may write (their own), so that only the link stands between
    // the mail and the file.
    let victim = |u: &str| inst.dir.path().join(format!("victim-{u}"));
    for u in ["pst-hlink", "pst-slink"] {
        std::fs::write(victim(u), "precious\n").unwrap();
        let pw = nix::unistd::User::from_name(u).unwrap().unwrap();
        nix::unistd::chown(&victim(u), Some(pw.uid), Some(pw.gid)).unwrap();
    }
    std::fs::hard_link(victim("pst-hlink"), spool.join("pst-hlink")).unwrap();
    std::os::unix::fs::symlink(victim("pst-slink"), spool.join("pst-slink")).unwrap();
    // The user's own link (one by another user in the sticky spool is not even followed
    // by the kernel: protected_symlinks, EACCES).
    let pw = nix::unistd::User::from_name("pst-slink").unwrap().unwrap();
    std::os::unix::fs::lchown(
        spool.join("pst-slink"),
        Some(pw.uid.as_raw()),
        Some(pw.gid.as_raw()),
    )
    .unwrap();
    let ids = send_many(
        inst.port,
        &[
            ("pst-hlink@localhost", "hard".to_string()),
            ("pst-slink@localhost", "soft".to_string()),
        ],
    );
    let log = wait_until(&inst, 60, |l| {
        ids.iter().all(|id| !status_of(l, id).is_empty())
    });
    for (id, u, why) in [
        (&ids[0], "pst-hlink", "file has 2 hard links"),
        (&ids[1], "pst-slink", "file is a symbolic link"),
    ] {
        let st = status_of(&log, id);
        let want = format!(
            "dsn=5.2.0, status=bounced (cannot update mailbox {} for user {u}. {why})",
            inst.dir.path().join("spool/../mail").join(u).display()
        );
        assert!(st.len() == 1 && st[0].ends_with(&want), "{want}\n{log}");
    }
    for u in ["pst-hlink", "pst-slink"] {
        assert_eq!(std::fs::read_to_string(victim(u)).unwrap(), "precious\n");
    }
}

#[test]
fn pop3_quit_and_imap_expunge_killed_midway_lose_nothing() {
    // scripts/kill-expunge, short: POP3 DELE/QUIT and IMAP EXPUNGE (and, in fresh boxes,
    // the first sync that writes Dovecot's metadata) SIGKILLed at random points, mbox and
    // Maildir; every mailbox parsed with Python's mailbox and opened again by Postern.
    // The README's figures come from the same script with more rounds.
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let json = out_dir.path().join("result.json");
    let out = std::process::Command::new("python3")
        .arg(repo_root().join("scripts/kill-expunge"))
        .args([
            "--rounds",
            "6",
            "--messages",
            "300",
            "--size",
            "2048",
            "--json",
        ])
        .arg(&json)
        .env("POSTERN", env!("CARGO_BIN_EXE_postern"))
        .output()
        .expect("run kill-expunge");
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let why = format!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("\"rounds\": 6"), "{why}");
    assert!(text.contains("\n \"lost\": 0,"), "{why}");
    assert!(text.contains("\n \"unreadable\": 0"), "{why}");
    assert!(out.status.success(), "{why}");
}

#[test]
fn over_maxproc_clients_are_served_in_stress_mode_with_postfix_warning() {
    // maxproc 2: two silent connections take the normal sessions; further clients are
    // still served (Postfix's master would leave them in the listen queue until a session
    // ends, here after smtpd_timeout), with stress-mode parameters (smtpd_timeout 10s).
    let inst = Instance::start_with(&delivering_main_cf(""), "", |d| {
        let mc = std::fs::read_to_string(d.join("etc/master.cf")).unwrap();
        let mc = mc.replacen(" inet n - n - - smtpd", " inet n - n - 2 smtpd", 1);
        std::fs::write(d.join("etc/master.cf"), mc).unwrap();
    });
    // The start's probe connection holds one of the two normal sessions until its session
    // ends: wait for that, so that the first two silent connections take both (CI at
    // 27df65b: the probe ended late, the last silent one got the freed normal session and
    // its 300 s timeout).
    inst.wait_log("disconnect from");
    let mut silent = Vec::new();
    for _ in 0..6 {
        let mut s = Smtp::connect(inst.port);
        assert!(s.line().starts_with("220 "));
        silent.push(s);
    }
    let mut good = Smtp::connect(inst.port);
    assert!(good.line().starts_with("220 "));
    assert!(good.cmd("EHLO client.example").concat().starts_with("250"));
    assert!(
        good.cmd("MAIL FROM:<a@example.org>")
            .concat()
            .starts_with("250")
    );
    assert!(
        good.cmd("RCPT TO:<someone@localhost>")
            .concat()
            .starts_with("250")
    );
    assert!(good.cmd("DATA").concat().starts_with("354"));
    good.send("Subject: served under stress\r\n\r\nbody\r\n");
    assert!(
        good.cmd(".")
            .concat()
            .starts_with("250 2.0.0 Ok: queued as ")
    );
    assert_eq!(good.cmd("QUIT"), vec!["221 2.0.0 Bye".to_string()]);
    let want = "postfix/master[";
    // The master writes its three warnings one after the other: wait for the last.
    let log = inst.wait_log("STRESS_README.html");
    let line = format!(
        "]: warning: service \"127.0.0.1:{p}\" (127.0.0.1:{p}) has reached its process limit \"2\": new clients may experience noticeable delays",
        p = inst.port
    );
    assert!(
        log.lines().any(|l| l.contains(want) && l.ends_with(&line)),
        "{log}"
    );
    assert!(log.contains("]: warning: to avoid this condition, increase the process count in master.cf or reduce the service time per client"));
    assert!(log.contains("]: warning: see http://www.postfix.org/STRESS_README.html for examples of stress-adapting configuration settings"));
    // Once per 1000 s, as Postfix's master.
    assert_eq!(
        log.matches("has reached its process limit").count(),
        1,
        "{log}"
    );
    // A silent session over the limit is dropped after the stress-mode smtpd_timeout.
    let last = silent.last_mut().unwrap();
    assert_eq!(
        last.reply(),
        vec!["421 4.4.2 mail.example.test Error: timeout exceeded".to_string()]
    );
}
