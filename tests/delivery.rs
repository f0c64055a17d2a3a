//! qmgr + local delivery over real sockets: a running `postern postfix start-fg` with a
//! `qmgr` service in master.cf receives mail over SMTP and delivers it into mailboxes. What
//! the mbox must hold was recorded from Postfix 3.7.11's local(8) for the same message
//! (`From ` line with two spaces, `Return-Path:`, `X-Original-To:`, `Delivered-To:`, `>From `
//! quoting of `From ` lines only, a trailing empty line).

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A local system user with a home directory (tests/common: created once, idempotent).
fn user(name: &str) -> Option<PathBuf> {
    mail_user(name)
}

const QMGR: &str = "qmgr      unix  n       -       n       300     1       qmgr\n";

fn main_cf(extra: &str) -> String {
    format!(
        "myhostname = mail.example.test\nmydomain = example.test\nmyorigin = $myhostname\n\
         mydestination = $myhostname, localhost\nmynetworks = 127.0.0.0/8\n\
         local_recipient_maps =\nalias_maps =\n{extra}"
    )
}

fn send(port: u16, from: &str, to: &[&str], body: &str) -> String {
    smtp_send(port, from, to, body)
}

/// The mailbox `p` once something was delivered into it.
fn delivered(p: &Path) -> Vec<u8> {
    wait_for(
        Duration::from_secs(10),
        format_args!("delivery into {}", p.display()),
        || std::fs::read(p).ok().filter(|b| !b.is_empty()),
    )
}

#[test]
fn smtp_to_local_user_lands_in_spool_mbox() {
    let Some(_home) = user("postern-ra") else {
        return;
    };
    let inst = Instance::start_with(
        &main_cf("mail_spool_directory = $queue_directory/../mail\n"),
        QMGR,
        |d| std::fs::create_dir_all(d.join("mail")).unwrap(),
    );
    let body = "Subject: hello\nFrom: a@x.org\n\nFrom the start\nbody \u{e9}\n>From x\n..dot\n";
    let id = send(
        inst.port,
        "sender@x.org",
        &["postern-ra@mail.example.test"],
        body,
    );
    let mbox = inst.dir.path().join("mail/postern-ra");
    let log = inst.wait_log(&format!("{id}: removed"));
    let data = String::from_utf8(delivered(&mbox)).expect("utf-8 mbox");
    let mut lines = data.lines();
    let first = lines.next().unwrap_or_default();
    assert!(first.starts_with("From sender@x.org  "), "{first:?}");
    assert_eq!(
        first.len(),
        "From sender@x.org  Sat Nov 28 14:36:59 2026".len()
    );
    assert_eq!(lines.next(), Some("Return-Path: <sender@x.org>"));
    assert_eq!(
        lines.next(),
        Some("X-Original-To: postern-ra@mail.example.test")
    );
    assert_eq!(
        lines.next(),
        Some("Delivered-To: postern-ra@mail.example.test")
    );
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .starts_with("Received: from client.example")
    );
    assert!(
        data.contains("\n\n>From the start\nbody \u{e9}\n>From x\n.dot\n\n"),
        "{data}"
    );
    assert!(data.ends_with("\n\n"));
    assert!(log.contains("postfix/qmgr["), "{log}");
    assert!(
        log.contains(&format!("{id}: from=<sender@x.org>, size=")),
        "{log}"
    );
    assert!(log.contains(", nrcpt=1 (queue active)"), "{log}");
    assert!(
        log.contains("postfix/local[")
            && log.contains(&format!(
                "{id}: to=<postern-ra@mail.example.test>, relay=local, delay="
            )),
        "{log}"
    );
    assert!(
        log.contains("dsn=2.0.0, status=sent (delivered to mailbox)"),
        "{log}"
    );
    let uid = nix::unistd::User::from_name("postern-ra")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&mbox).unwrap();
    assert_eq!(meta.uid(), uid, "mbox belongs to the user");
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert!(!inst.dir.path().join("spool/active").join(&id).exists());
}

#[test]
fn maildir_in_home() {
    let Some(home) = user("postern-rc") else {
        return;
    };
    let _ = std::fs::remove_dir_all(home.join("Maildir"));
    let inst = Instance::start(&main_cf("home_mailbox = Maildir/\n"), QMGR);
    let id = send(
        inst.port,
        "s@x.org",
        &["postern-rc@mail.example.test"],
        "Subject: md\n\nFrom here\n",
    );
    inst.wait_log(&format!("{id}: removed"));
    let log = inst.log();
    assert!(log.contains("status=sent (delivered to maildir)"), "{log}");
    let new: Vec<_> = std::fs::read_dir(home.join("Maildir/new"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(new.len(), 1);
    let data = std::fs::read_to_string(new[0].path()).unwrap();
    assert!(data.starts_with("Return-Path: <s@x.org>\nX-Original-To: postern-rc@mail.example.test\nDelivered-To: postern-rc@mail.example.test\nReceived: "), "{data}");
    assert!(data.ends_with("\nFrom here\n"), "{data}");
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::User::from_name("postern-rc")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    assert_eq!(std::fs::metadata(new[0].path()).unwrap().uid(), uid);
    assert!(
        std::fs::read_dir(home.join("Maildir/tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn aliases_to_users_file_and_command_and_unknown_user_bounces() {
    let (Some(_), Some(_)) = (user("postern-ra"), user("postern-rb")) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let o = out.path().display().to_string();
    let inst = Instance::start_with(
        &main_cf(
            "mail_spool_directory = $queue_directory/../mail\nalias_maps = hash:$queue_directory/../aliases\n",
        ),
        QMGR,
        |d| {
            std::fs::create_dir_all(d.join("mail")).unwrap();
            std::fs::write(
                d.join("aliases"),
                format!("team: postern-ra, postern-rb\nlog: {o}/file.mbox\npipe: \"|cat > {o}/cmd.out\"\n"),
            )
            .unwrap();
        },
    );
    let id = send(
        inst.port,
        "s@x.org",
        &[
            "team@mail.example.test",
            "log@mail.example.test",
            "pipe@mail.example.test",
            "nosuch@mail.example.test",
        ],
        "Subject: al\n\nhi\n",
    );
    let log = inst.wait_log(&format!("{id}: removed"));
    for u in ["postern-ra", "postern-rb"] {
        assert!(
            log.contains(&format!(
                "to=<{u}@mail.example.test>, orig_to=<team@mail.example.test>, relay=local"
            )),
            "{log}"
        );
        let m =
            String::from_utf8_lossy(&delivered(&inst.dir.path().join("mail").join(u))).into_owned();
        assert!(
            m.contains(&format!(
                "X-Original-To: team@mail.example.test\nDelivered-To: {u}@mail.example.test\n"
            )),
            "{m}"
        );
    }
    assert!(
        log.contains(&format!("status=sent (delivered to file: {o}/file.mbox)")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "status=sent (delivered to command: cat > {o}/cmd.out)"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "{id}: to=<nosuch@mail.example.test>, relay=local, delay="
        )) && log.contains("dsn=5.1.1, status=bounced (unknown user: \"nosuch\")"),
        "{log}"
    );
    assert!(
        String::from_utf8_lossy(&delivered(&out.path().join("file.mbox")))
            .starts_with("From s@x.org  ")
    );
    assert!(
        String::from_utf8_lossy(&delivered(&out.path().join("cmd.out")))
            .contains("\nSubject: al\n")
    );
}

/// Blocks of a `mailq` listing (one per message), for comparing listings whose messages come
/// in directory order.
fn mailq_blocks(s: &str) -> (Vec<String>, String, String) {
    let mut lines: Vec<&str> = s.lines().collect();
    let header = lines.remove(0).to_string();
    let footer = lines.pop().unwrap_or_default().to_string();
    let mut blocks: Vec<String> = lines
        .join("\n")
        .split("\n\n")
        .map(|b| b.trim_matches('\n').to_string())
        .filter(|b| !b.is_empty())
        .collect();
    blocks.sort();
    (blocks, header, footer)
}

#[test]
fn mailq_matches_postfix_for_a_recorded_queue() {
    // Queue files and defer logs written by Postfix 3.7.11 (two deferred messages and a
    // bounce), with the `postqueue -p` output it printed for them (TZ=UTC).
    check_mailq_fixture("mailq");
}

#[test]
fn mailq_prints_reason_unavailable_as_postfix_does() {
    // Postfix 3.7.11's queue files rearranged over all queues (scripts/regen-mailq-fixtures
    // recorded the outputs): a deferred and an active message whose defer log names one of
    // their two recipients (`(reason unavailable)` above the other), a deferred and an
    // incoming message without a defer log (no reason line), a held message whose log
    // names both; postqueue -j gives `delay_reason` only for the recipients in the log.
    check_mailq_fixture("mailq-noreason");
}

/// The queue each message of `queue` is in, by its queue ID.
fn queue_of_ids(queue: &Path) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for q in ["maildrop", "incoming", "active", "deferred", "hold"] {
        let mut dirs = vec![queue.join(q)];
        while let Some(d) = dirs.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                if e.path().is_dir() {
                    dirs.push(e.path());
                } else {
                    out.insert(e.file_name().to_string_lossy().into_owned(), q.to_string());
                }
            }
        }
    }
    out
}

/// The queues of the messages of a `mailq` listing, in the order listed.
fn mailq_queue_order(
    listing: &str,
    queues: &std::collections::HashMap<String, String>,
) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|w| w.trim_end_matches(['*', '!']))
        .filter_map(|id| queues.get(id).cloned())
        .collect()
}

/// Postern's `postqueue -p`, `mailq`, `sendmail -bp` and `postqueue -j` for the recorded
/// queue `compat-fixtures/NAME/queue` give what Postfix printed (`postqueue-p.txt`,
/// `postqueue-j.txt`): the same messages, each byte for byte, in the same queue order
/// (the order inside a queue is the directory's).
fn check_mailq_fixture(name: &str) {
    let fixture = repo_root().join("compat-fixtures").join(name);
    let queues = queue_of_ids(&fixture.join("queue"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.cf"),
        format!("queue_directory = {}\n", fixture.join("queue").display()),
    )
    .unwrap();
    std::fs::write(dir.path().join("master.cf"), "").unwrap();
    let want = std::fs::read_to_string(fixture.join("postqueue-p.txt")).unwrap();
    for (cmd, args) in [
        ("postqueue", vec!["-c", "DIR", "-p"]),
        ("mailq", vec!["-C", "DIR"]),
        ("sendmail", vec!["-C", "DIR", "-bp"]),
    ] {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("DIR", &dir.path().display().to_string()))
            .collect();
        let out = std::process::Command::new(BIN)
            .arg(cmd)
            .args(&args)
            .env("TZ", "UTC")
            .output()
            .unwrap();
        let got = String::from_utf8(out.stdout).unwrap();
        assert_eq!(mailq_blocks(&got), mailq_blocks(&want), "{cmd}:\n{got}");
        assert_eq!(got.len(), want.len(), "{cmd}");
        assert_eq!(
            mailq_queue_order(&got, &queues),
            mailq_queue_order(&want, &queues),
            "{cmd}"
        );
    }
    // postqueue -j: one JSON object per message, as Postfix printed them.
    let out = run_postern(
        "postqueue",
        &["-c", &dir.path().display().to_string(), "-j"],
        b"",
    );
    let want = std::fs::read_to_string(fixture.join("postqueue-j.txt")).unwrap();
    let got = String::from_utf8(out.stdout).unwrap();
    let queue_names = |s: &str| -> Vec<String> {
        s.lines()
            .filter_map(|l| l.split('"').nth(3).map(String::from))
            .collect::<Vec<_>>()
    };
    let mut got_lines: Vec<String> = got.lines().map(String::from).collect();
    let mut want_lines: Vec<String> = want.lines().map(String::from).collect();
    got_lines.sort();
    want_lines.sort();
    assert_eq!(got_lines, want_lines);
    assert_eq!(queue_names(&got), queue_names(&want));
}

/// The files of the queue `dir` as `scripts/regen-postsuper-moves-fixture` lists them:
/// `MODE MTIME PATH` (MTIME `now` within 10 minutes of `now`), sorted by path.
fn queue_tree(dir: &Path, now: u64) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dirs.push(e.path());
                continue;
            }
            let t = m.mtime() as u64;
            let t = if t.abs_diff(now) <= 600 {
                "now".to_string()
            } else {
                t.to_string()
            };
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            out.push((rel.clone(), format!("{:o} {t} {rel}", m.mode() & 0o7777)));
        }
    }
    out.sort();
    out.into_iter().map(|(_, l)| l).collect()
}

#[test]
fn postsuper_moves_files_as_postfix_does() {
    use std::os::unix::fs::PermissionsExt;
    // compat-fixtures/postsuper-moves/: what the real postsuper 3.7 did to a copy of the
    // recorded queue. -h ALL and -H ALL rename and nothing else (a retry time in the future
    // is kept: the released message waits for it); -r ID also sets the time stamps to
    // now; -r ALL renames only; the mode and the defer logs stay, and postqueue then lists
    // the requeued messages from maildrop/ with their old reasons.
    let fixture = repo_root().join("compat-fixtures/postsuper-moves");
    let want_tree = std::fs::read_to_string(fixture.join("tree.txt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Reachable by mail_owner, as which postsuper works.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let queue = dir.path().join("queue");
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(repo_root().join("compat-fixtures/mailq/queue"))
        .arg(&queue)
        .status()
        .unwrap();
    assert!(copy.success());
    for q in [
        "maildrop", "incoming", "active", "deferred", "hold", "defer", "bounce", "trace", "flush",
        "corrupt", "saved",
    ] {
        std::fs::create_dir_all(queue.join(q)).unwrap();
    }
    let set = |rel: &str, mode: u32, secs: u64| {
        let p = queue.join(rel);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        let t = std::time::UNIX_EPOCH + Duration::from_secs(secs);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    // As the script sets them.
    set("deferred/3/3D9409A41A1", 0o700, 2_145_916_800);
    set("deferred/4/436D99A41A9", 0o700, 1_577_836_800);
    set("deferred/3/3E3BF9A419F", 0o700, 1_606_574_232);
    for log in [
        "defer/3/3D9409A41A1",
        "defer/3/3E3BF9A419F",
        "defer/4/436D99A41A9",
    ] {
        set(log, 0o600, 1_590_969_600);
    }
    let owner = test_mail_owner();
    if nix::unistd::Uid::effective().is_root() {
        // postsuper run by root works as mail_owner: the queue is the mail system's.
        let st = std::process::Command::new("chown")
            .args(["-R", &owner])
            .arg(&queue)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("main.cf"),
        format!(
            "queue_directory = {}\nmail_owner = {owner}\n",
            queue.display()
        ),
    )
    .unwrap();
    std::fs::write(conf.join("master.cf"), "").unwrap();
    let conf = conf.display().to_string();
    let mut got_tree = String::new();
    for args in ["-h ALL", "-H ALL", "-r 3E3BF9A419F", "-r ALL"] {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut argv = vec!["-c", conf.as_str()];
        argv.extend(args.split(' '));
        let out = run_postern("postsuper", &argv, b"");
        assert!(out.status.success(), "{args}: {out:?}");
        got_tree.push_str(&format!("== postsuper {args}\n"));
        // Without a syslog socket the log lines also go to stderr (`postfix/postsuper[PID]:
        // …`); the lines compared are postsuper's own.
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            if !line.starts_with("postfix/postsuper[") {
                got_tree.push_str(line);
                got_tree.push('\n');
            }
        }
        for line in queue_tree(&queue, now) {
            got_tree.push_str(&line);
            got_tree.push('\n');
        }
    }
    assert_eq!(got_tree, want_tree);
    // The listing of the requeued messages, each message byte for byte (the order inside
    // maildrop/ is the directory's), and -j's objects.
    let want = std::fs::read_to_string(fixture.join("postqueue-p.txt")).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["postqueue", "-c", &conf, "-p"])
        .env("TZ", "UTC")
        .output()
        .unwrap();
    let got = String::from_utf8(out.stdout).unwrap();
    assert_eq!(mailq_blocks(&got), mailq_blocks(&want), "{got}");
    assert_eq!(got.len(), want.len());
    let want = std::fs::read_to_string(fixture.join("postqueue-j.txt")).unwrap();
    let out = run_postern("postqueue", &["-c", &conf, "-j"], b"");
    let mut got: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut want: Vec<String> = want.lines().map(String::from).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

fn run_postern(cmd: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut c = std::process::Command::new(BIN)
        .arg(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    c.wait_with_output().unwrap()
}

#[test]
fn sendmail_while_stopped_is_delivered_at_start() {
    let Some(_) = user("postern-rb") else { return };
    let mut inst = Instance::start_with(
        &main_cf("mail_spool_directory = $queue_directory/../mail\n"),
        QMGR,
        |d| std::fs::create_dir_all(d.join("mail")).unwrap(),
    );
    inst.kill9();
    let conf = inst.config_dir().display().to_string();
    let out = run_postern(
        "sendmail",
        &["-C", &conf, "-t", "-i", "-f", "cron@x.org", "-F", "Cron Daemon"],
        b"To: postern-rb\nBcc: postern-rb@mail.example.test\nSubject: from cron\n\nline\n.\nafter dot\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = run_postern("mailq", &["-C", &conf], b"");
    let listing = String::from_utf8_lossy(&q.stdout).into_owned();
    assert!(listing.contains(" cron@x.org\n"), "{listing}");
    assert!(
        listing.contains("postern-rb@mail.example.test\n"),
        "{listing}"
    );
    assert!(listing.ends_with("in 1 Request.\n"), "{listing}");
    inst.spawn();
    inst.wait_log("removed");
    let mbox =
        String::from_utf8_lossy(&delivered(&inst.dir.path().join("mail/postern-rb"))).into_owned();
    assert!(mbox.starts_with("From cron@x.org  "), "{mbox}");
    assert!(
        mbox.contains("\nReceived: by mail.example.test (Postfix, from userid 0)\n\tid "),
        "{mbox}"
    );
    assert!(
        mbox.contains("\nFrom: Cron Daemon <cron@x.org>\n"),
        "{mbox}"
    );
    assert!(!mbox.contains("Bcc:"), "{mbox}");
    assert!(mbox.contains("\n\nline\n.\nafter dot\n\n"), "{mbox}");
    // To: and Bcc: name the same mailbox: one delivery.
    assert_eq!(mbox.matches("\nSubject: from cron\n").count(), 1, "{mbox}");
    let log = inst.log();
    assert!(log.contains("postfix/pickup["), "{log}");
    assert!(log.contains(": uid=0 from=<cron@x.org>"), "{log}");
}

#[test]
fn postsuper_deletes_queued_mail() {
    // No qmgr service: mail stays queued.
    let inst = Instance::start(&main_cf(""), "");
    let id = send(
        inst.port,
        "s@x.org",
        &["nobody@remote.example"],
        "Subject: q\n\nx\n",
    );
    let conf = inst.config_dir().display().to_string();
    let listing =
        String::from_utf8(run_postern("postqueue", &["-c", &conf, "-p"], b"").stdout).unwrap();
    assert!(
        listing.starts_with("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n")
    );
    assert!(listing.contains(&format!("\n{id:<11} ")), "{listing}");
    assert!(
        listing.contains("\n                                         nobody@remote.example\n"),
        "{listing}"
    );
    let out = run_postern("postsuper", &["-c", &conf, "-d", &id], b"");
    assert!(out.status.success());
    let listing =
        String::from_utf8(run_postern("postqueue", &["-c", &conf, "-p"], b"").stdout).unwrap();
    assert_eq!(listing, "Mail queue is empty\n");
    // postsuper logs to the instance's maillog_file.
    let log = inst.wait_log("Deleted: 1 message");
    assert!(log.contains(&format!("{id}: removed")), "{log}");
    assert!(
        log.contains("postfix/postsuper[") && log.contains("]: Deleted: 1 message\n"),
        "{log}"
    );
}

#[test]
fn unknown_user_bounces_to_sender_and_remote_mail_is_deferred() {
    let Some(_) = user("postern-ra") else { return };
    // Remote mail goes to a relayhost that refuses connections: deferred.
    let inst = Instance::start_with(
        &main_cf("mail_spool_directory = $queue_directory/../mail\nrelayhost = [127.0.0.1]:1\n"),
        QMGR,
        |d| std::fs::create_dir_all(d.join("mail")).unwrap(),
    );
    let id = send(
        inst.port,
        "postern-ra@mail.example.test",
        &["nosuch@mail.example.test", "far@remote.example"],
        "Subject: will bounce\n\nbody\n",
    );
    let log = inst.wait_log(&format!("{id}: sender non-delivery notification: "));
    assert!(
        log.contains("dsn=5.1.1, status=bounced (unknown user: \"nosuch\")"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "{id}: to=<far@remote.example>, relay=none, delay="
        )),
        "{log}"
    );
    // The remote recipient goes to smtp(8), whose relayhost refuses the connection:
    // deferred (tests/outbound.rs covers remote deliveries).
    let far = inst.wait_log(&format!("{id}: to=<far@remote.example>, relay="));
    assert!(
        far.lines()
            .any(|l| l.contains(&format!("{id}: to=<far@remote.example>,"))
                && l.contains("status=deferred (")),
        "{far}"
    );
    let mbox =
        String::from_utf8_lossy(&delivered(&inst.dir.path().join("mail/postern-ra"))).into_owned();
    assert!(mbox.starts_with("From MAILER-DAEMON  "), "{mbox}");
    assert!(mbox.contains("\nReturn-Path: <>\n"), "{mbox}");
    assert!(mbox.contains("\nFrom: Mail Delivery System <MAILER-DAEMON@mail.example.test>\nSubject: Undelivered Mail Returned to Sender\nTo: postern-ra@mail.example.test\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status;\n"), "{mbox}");
    assert!(
        mbox.contains("\n<nosuch@mail.example.test>: unknown user: \"nosuch\"\n"),
        "{mbox}"
    );
    assert!(mbox.contains(&format!("\nReporting-MTA: dns; mail.example.test\nX-Postfix-Queue-ID: {id}\nX-Postfix-Sender: rfc822; postern-ra@mail.example.test\n")), "{mbox}");
    assert!(mbox.contains("\nFinal-Recipient: rfc822; nosuch@mail.example.test\nOriginal-Recipient: rfc822;nosuch@mail.example.test\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: X-Postfix; unknown user: \"nosuch\"\n"), "{mbox}");
    assert!(mbox.contains("\nContent-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\nReturn-Path: <postern-ra@mail.example.test>\n"), "{mbox}");
    // The remote recipient waits in deferred/ with its reason, as mailq shows it. The bounce
    // is queued (and the queue manager woken for it) before the message moves to deferred/,
    // so its delivery may come first: wait for the move.
    let deferred = inst
        .dir
        .path()
        .join("spool/deferred")
        .join(&id[..1])
        .join(&id);
    let _ = poll(Duration::from_secs(10), || deferred.exists().then_some(()));
    let conf = inst.config_dir().display().to_string();
    let listing = String::from_utf8(run_postern("mailq", &["-C", &conf], b"").stdout).unwrap();
    assert!(
        listing.contains(&format!("\n{id:<11} ")) || listing.starts_with("-Queue ID-"),
        "{listing}"
    );
    assert!(listing.contains("\n                       (connect to 127.0.0.1[127.0.0.1]:1: Connection refused)\n                                         far@remote.example\n"), "{listing}");
    assert!(!listing.contains("nosuch@"), "{listing}");
    assert!(
        inst.dir
            .path()
            .join("spool/deferred")
            .join(&id[..1])
            .join(&id)
            .exists()
    );
}

/// One SMTP transaction that tolerates a dying server: `Some(ID)` only when DATA got 250.
fn try_send(port: u16, to: &str, body: &str) -> Option<String> {
    use std::io::{BufRead, BufReader, Write};
    let sock = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    let mut r = BufReader::new(sock.try_clone().ok()?);
    let mut w = sock;
    let reply = |r: &mut BufReader<std::net::TcpStream>| -> Option<String> {
        loop {
            let mut l = String::new();
            if r.read_line(&mut l).ok()? == 0 {
                return None;
            }
            if l.as_bytes().get(3) != Some(&b'-') {
                return Some(l.trim_end().to_string());
            }
        }
    };
    reply(&mut r)?;
    for cmd in [
        "HELO client.example".to_string(),
        "MAIL FROM:<s@x.org>".to_string(),
        format!("RCPT TO:<{to}>"),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
        if !reply(&mut r)?.starts_with('2') {
            return None;
        }
    }
    w.write_all(b"DATA\r\n").ok()?;
    if !reply(&mut r)?.starts_with("354") {
        return None;
    }
    w.write_all(format!("{}\r\n.\r\n", body.replace('\n', "\r\n")).as_bytes())
        .ok()?;
    let done = reply(&mut r)?;
    let _ = w.write_all(b"QUIT\r\n");
    done.starts_with("250")
        .then(|| done.rsplit(' ').next().unwrap_or_default().to_string())
}

#[test]
fn crash_during_delivery_delivers_each_acknowledged_message_once() {
    let Some(_) = user("postern-rd") else { return };
    let mut inst = Instance::start_with(
        &main_cf("mail_spool_directory = $queue_directory/../mail\n"),
        QMGR,
        |d| std::fs::create_dir_all(d.join("mail")).unwrap(),
    );
    let port = inst.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for t in 0..4 {
        let stop = stop.clone();
        senders.push(std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut tried = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let token = format!("crash-{t}-{n}");
                n += 1;
                tried.push(token.clone());
                let body = format!("Subject: {token}\n\n{token}\n");
                if try_send(port, "postern-rd@mail.example.test", &body).is_some() {
                    acked.push(token);
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
            (acked, tried)
        }));
    }
    for _ in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(400));
        inst.kill9();
        std::thread::sleep(std::time::Duration::from_millis(50));
        inst.spawn();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut tried = Vec::new();
    for s in senders {
        let (a, t) = s.join().unwrap();
        acked.extend(a);
        tried.extend(t);
    }
    // On a loaded machine fewer messages get through in the 2.3 s; a handful is enough to
    // check exactly-once delivery across the five crashes.
    assert!(
        acked.len() > 5,
        "too few messages got through: {}",
        acked.len()
    );
    // Wait until the queue is empty (up to 60 s on a loaded machine).
    let conf = inst.config_dir().display().to_string();
    let _ = poll(Duration::from_secs(60), || {
        let l = String::from_utf8(run_postern("mailq", &["-C", &conf], b"").stdout).unwrap();
        (l == "Mail queue is empty\n").then_some(())
    });
    let mbox =
        String::from_utf8_lossy(&delivered(&inst.dir.path().join("mail/postern-rd"))).into_owned();
    for token in &acked {
        let n = mbox.matches(&format!("\nSubject: {token}\n")).count();
        assert_eq!(n, 1, "{token} delivered {n} times");
    }
    for token in &tried {
        let n = mbox.matches(&format!("\nSubject: {token}\n")).count();
        assert!(n <= 1, "{token} delivered {n} times");
    }
}

#[test]
fn dot_forward_runs_as_the_user_and_keeps_a_copy() {
    let Some(home) = user("postern-re") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let pw = nix::unistd::User::from_name("postern-re").unwrap().unwrap();
    let fwd = home.join(".forward");
    std::fs::write(
        &fwd,
        format!(
            "# keep a copy\n\\postern-re, \"|cat > {}/fwd.out\"\n",
            out.path().display()
        ),
    )
    .unwrap();
    std::os::unix::fs::chown(&fwd, Some(pw.uid.as_raw()), Some(pw.gid.as_raw())).unwrap();
    let inst = Instance::start_with(
        &main_cf("mail_spool_directory = $queue_directory/../mail\n"),
        QMGR,
        |d| std::fs::create_dir_all(d.join("mail")).unwrap(),
    );
    let id = send(
        inst.port,
        "s@x.org",
        &["postern-re@mail.example.test"],
        "Subject: fwd\n\nx\n",
    );
    let log = inst.wait_log(&format!("{id}: removed"));
    let _ = std::fs::remove_file(&fwd);
    assert!(log.contains("status=sent (delivered to mailbox)"), "{log}");
    assert!(
        log.contains(&format!(
            "status=sent (delivered to command: cat > {}/fwd.out)",
            out.path().display()
        )),
        "{log}"
    );
    let copy = out.path().join("fwd.out");
    assert!(String::from_utf8_lossy(&delivered(&copy)).contains("\nSubject: fwd\n"));
    assert_eq!(
        std::fs::metadata(&copy).unwrap().uid(),
        pw.uid.as_raw(),
        "command ran as the user"
    );
    let mbox =
        String::from_utf8_lossy(&delivered(&inst.dir.path().join("mail/postern-re"))).into_owned();
    assert_eq!(mbox.matches("\nSubject: fwd\n").count(), 1, "{mbox}");
}

#[test]
fn symlinked_mailbox_is_never_followed() {
    let Some(_) = user("postern-rf") else { return };
    let victim = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(victim.path(), "precious\n").unwrap();
    let target = victim.path().to_path_buf();
    let inst = Instance::start_with(
        &main_cf("mail_spool_directory = $queue_directory/../mail\n"),
        QMGR,
        move |d| {
            std::fs::create_dir_all(d.join("mail")).unwrap();
            std::os::unix::fs::symlink(&target, d.join("mail/postern-rf")).unwrap();
        },
    );
    let id = send(
        inst.port,
        "s@x.org",
        &["postern-rf@mail.example.test"],
        "Subject: evil\n\nx\n",
    );
    let log = inst.wait_log(&format!("{id}: removed"));
    assert!(
        log.contains(&format!(
            "{id}: to=<postern-rf@mail.example.test>, relay=local"
        )),
        "{log}"
    );
    assert!(
        log.contains("dsn=5.2.0, status=bounced (cannot update mailbox "),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(victim.path()).unwrap(),
        "precious\n"
    );
}

#[test]
fn newaliases_rebuilds_alias_database() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::fs::write(
        dir.path().join("main.cf"),
        format!("alias_database = hash:{d}/aliases\nalias_maps = hash:{d}/aliases\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("master.cf"), "").unwrap();
    std::fs::write(
        dir.path().join("aliases"),
        "root: postmaster\npostmaster: admin\n",
    )
    .unwrap();
    for (cmd, args) in [
        ("newaliases", vec!["-C", &d]),
        ("sendmail", vec!["-C", &d, "-bi"]),
    ] {
        let out = run_postern(cmd, &args, b"");
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let q = run_postern(
        "postalias",
        &["-c", &d, "-q", "postmaster", &format!("hash:{d}/aliases")],
        b"",
    );
    assert_eq!(String::from_utf8_lossy(&q.stdout), "admin\n");
}

#[test]
fn postsuper_holds_and_releases() {
    let inst = Instance::start(&main_cf(""), "");
    let a = send(
        inst.port,
        "s@x.org",
        &["one@remote.example"],
        "Subject: a\n\nx\n",
    );
    let b = send(
        inst.port,
        "s@x.org",
        &["two@remote.example"],
        "Subject: b\n\nx\n",
    );
    let conf = inst.config_dir().display().to_string();
    let out = run_postern("postsuper", &["-c", &conf, "-h", "ALL"], b"");
    assert!(out.status.success());
    let log = inst.wait_log("Placed on hold: 2 messages");
    // As Postfix 3.7 (compat-fixtures/postsuper/all.*): ALL logs the summary only.
    assert!(!log.contains(&format!("{a}: placed on hold")), "{log}");
    assert!(log.contains("]: Placed on hold: 2 messages\n"), "{log}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "postsuper: Placed on hold: 2 messages\n"
    );
    let listing = String::from_utf8(run_postern("mailq", &["-C", &conf], b"").stdout).unwrap();
    assert!(
        listing.contains(&format!("\n{:<11} ", format!("{a}!"))),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("\n{:<11} ", format!("{b}!"))),
        "{listing}"
    );
    let out = run_postern("postsuper", &["-c", &conf, "-H", &a], b"");
    assert!(out.status.success());
    assert!(
        inst.wait_log(&format!("{a}: released from hold"))
            .contains(&format!("{a}: released from hold"))
    );
    assert!(
        inst.dir
            .path()
            .join("spool/deferred")
            .join(&a[..1])
            .join(&a)
            .exists()
    );
    assert!(inst.dir.path().join("spool/hold").join(&b).exists());
    let out = run_postern("postsuper", &["-c", &conf, "-d", "ALL"], b"");
    assert!(out.status.success());
    assert!(
        inst.wait_log("Deleted: 2 messages")
            .contains("Deleted: 2 messages")
    );
}

#[test]
fn virtual_alias_maps_expand_recipients() {
    let (Some(_), Some(_)) = (user("postern-ra"), user("postern-rb")) else {
        return;
    };
    let inst = Instance::start_with(
        &main_cf(
            "mail_spool_directory = $queue_directory/../mail\nvirtual_alias_maps = hash:$queue_directory/../virtual\n",
        ),
        QMGR,
        |d| {
            std::fs::create_dir_all(d.join("mail")).unwrap();
            std::fs::write(
                d.join("virtual"),
                "info@mail.example.test postern-ra, postern-rb@mail.example.test\n",
            )
            .unwrap();
        },
    );
    let id = send(
        inst.port,
        "s@x.org",
        &["info@mail.example.test"],
        "Subject: v\n\nx\n",
    );
    let log = inst.wait_log(&format!("{id}: removed"));
    for u in ["postern-ra", "postern-rb"] {
        assert!(
            log.contains(&format!(
                "to=<{u}@mail.example.test>, orig_to=<info@mail.example.test>, relay=local"
            )),
            "{log}"
        );
        let m =
            String::from_utf8_lossy(&delivered(&inst.dir.path().join("mail").join(u))).into_owned();
        assert!(
            m.contains("\nX-Original-To: info@mail.example.test\n"),
            "{m}"
        );
    }
}

#[test]
fn mailbox_command_runs_as_the_user_with_its_environment() {
    let Some(home) = user("postern-rb") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let o = out.path().display().to_string();
    let inst = Instance::start(
        &main_cf(&format!(
            "mailbox_command = /bin/sh -c 'echo \"$USER $HOME $EXTENSION $PWD\" > {o}/env; cat > {o}/msg'\nrecipient_delimiter = +\n"
        )),
        QMGR,
    );
    let id = send(
        inst.port,
        "s@x.org",
        &["postern-rb+box@mail.example.test"],
        "Subject: mc\n\nFrom me\n",
    );
    let log = inst.wait_log(&format!("{id}: removed"));
    assert!(
        log.contains("status=sent (delivered to command: /bin/sh -c "),
        "{log}"
    );
    let env = String::from_utf8_lossy(&delivered(&out.path().join("env"))).into_owned();
    assert_eq!(
        env,
        format!("postern-rb {} box {}\n", home.display(), home.display())
    );
    let msg = String::from_utf8_lossy(&delivered(&out.path().join("msg"))).into_owned();
    assert!(msg.starts_with("From s@x.org  "), "{msg}");
    assert!(
        msg.contains("\nDelivered-To: postern-rb+box@mail.example.test\n"),
        "{msg}"
    );
    // Commands get the message unquoted, without a trailing empty line (local/command.c).
    assert!(msg.ends_with("\n\nFrom me\n"), "{msg}");
    let uid = nix::unistd::User::from_name("postern-rb")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    assert_eq!(
        std::fs::metadata(out.path().join("msg")).unwrap().uid(),
        uid
    );
}

fn postcat_in(dir: &Path, prog: &str, args: &[&str]) -> std::process::Output {
    let mut c = if prog == "postern" {
        let mut c = std::process::Command::new(BIN);
        c.arg("postcat");
        c
    } else {
        std::process::Command::new(prog)
    };
    c.args(args)
        .current_dir(dir)
        .env("TZ", "UTC")
        .output()
        .unwrap()
}

#[test]
fn postcat_prints_queue_files_as_postfix_does() {
    // A queue file written by Postern's queue, with Postfix 3.7.11's postcat output recorded.
    let fixture = repo_root().join("compat-fixtures/postcat");
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(
        conf.path().join("main.cf"),
        format!("queue_directory = {}\n", fixture.display()),
    )
    .unwrap();
    let c = conf.path().display().to_string();
    for (flag, file) in [
        ("", "postcat.txt"),
        ("-h", "postcat-h.txt"),
        ("-b", "postcat-b.txt"),
        ("-e", "postcat-e.txt"),
        ("-o", "postcat-o.txt"),
    ] {
        let mut args = vec!["-c", &c];
        if !flag.is_empty() {
            args.push(flag);
        }
        args.push("D5AC6ADA3D0");
        let out = postcat_in(&fixture, "postern", &args);
        assert!(out.status.success(), "{flag}");
        let want = std::fs::read(fixture.join(file)).unwrap();
        assert!(
            out.stdout == want,
            "postcat {flag}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // A live queue: the same bytes as the real postcat for every option, by file and by -q.
    let inst = Instance::start(&main_cf(""), "");
    let long = "y".repeat(3000);
    let id = send(
        inst.port,
        "s@x.org",
        &["a@remote.example", "b@remote.example"],
        &format!("Subject: pc\nFrom: me\n\nbody\nFrom x\n{long}\n"),
    );
    let spool = inst.dir.path().join("spool");
    let conf = inst.config_dir().display().to_string();
    let file = format!("incoming/{id}");
    assert!(spool.join(&file).exists());
    let missing = postcat_in(&spool, "postern", &["-c", &conf, "-q", "NOSUCHID"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr),
        "postcat: fatal: open queue file NOSUCHID: No such file or directory\n"
    );
    let byq = postcat_in(&spool, "postern", &["-c", &conf, "-q", "-h", &id]);
    assert!(
        String::from_utf8_lossy(&byq.stdout).starts_with("Received: from "),
        "{byq:?}"
    );
    let real = Path::new("/usr/sbin/postcat");
    if !real.exists() {
        return;
    }
    for flags in [
        &[][..],
        &["-h"],
        &["-b"],
        &["-e"],
        &["-he"],
        &["-be"],
        &["-o"],
    ] {
        for by_id in [false, true] {
            let mut args = vec!["-c", conf.as_str()];
            args.extend_from_slice(flags);
            if by_id {
                args.push("-q");
                args.push(&id);
            } else {
                args.push(&file);
            }
            let ours = postcat_in(&spool, "postern", &args);
            let theirs = postcat_in(&spool, "/usr/sbin/postcat", &args);
            assert_eq!(ours.status.code(), theirs.status.code(), "{args:?}");
            assert!(
                ours.stdout == theirs.stdout,
                "{args:?}\nours:\n{}\npostfix:\n{}",
                String::from_utf8_lossy(&ours.stdout),
                String::from_utf8_lossy(&theirs.stdout)
            );
        }
    }
}

#[test]
fn canonical_relocated_luser_relay_and_transport_maps() {
    let (Some(_), Some(_)) = (user("postern-ra"), user("postern-rb")) else {
        return;
    };
    let inst = Instance::start_with(
        &main_cf(
            "mail_spool_directory = $queue_directory/../mail\n\
             recipient_canonical_maps = texthash:$queue_directory/../rcanon\n\
             canonical_maps = texthash:$queue_directory/../canon\n\
             sender_canonical_maps = texthash:$queue_directory/../scanon\n\
             relocated_maps = texthash:$queue_directory/../relocated\n\
             transport_maps = texthash:$queue_directory/../transport\n\
             luser_relay = postern-rb\n\
             smtpd_reject_unlisted_recipient = no\n",
            // (smtpd's recipient check would refuse the error: recipients at RCPT, as
            // Postfix 3.7.11 does, compat-fixtures/rewrite/retry-error.txt: this test is about
            // what the queue manager does with them.)
        ),
        QMGR,
        |d| {
            std::fs::create_dir_all(d.join("mail")).unwrap();
            for (f, text) in [
                (
                    "rcanon",
                    "alias-a@mail.example.test postern-ra@mail.example.test\n",
                ),
                (
                    "canon",
                    "old@mail.example.test postern-rb@mail.example.test\n",
                ),
                ("scanon", "s@x.org sender@canon.example\n"),
                ("relocated", "gone@mail.example.test gone@new.example\n"),
                (
                    "transport",
                    "err@mail.example.test error:5.7.1 no mail here\n\
                     drop@mail.example.test discard:silently dropped\n\
                     soft@mail.example.test error:4.2.2 over\n\
                     blank@mail.example.test error:\n\
                     drop2@mail.example.test discard:\n\
                     remote.example local:\n",
                ),
            ] {
                std::fs::write(d.join(f), text).unwrap();
            }
        },
    );
    let id = send(
        inst.port,
        "s@x.org",
        &[
            "alias-a@mail.example.test",
            "old@mail.example.test",
            "gone@mail.example.test",
            "nosuch@mail.example.test",
            "err@mail.example.test",
            "drop@mail.example.test",
            "soft@mail.example.test",
            "blank@mail.example.test",
            "drop2@mail.example.test",
            "postern-ra@remote.example",
        ],
        "Subject: maps\n\nx\n",
    );
    let log = inst.wait_log(&format!("{id}: removed"));
    for want in [
        format!("{id}: from=<sender@canon.example>, size="),
        format!(
            "{id}: to=<postern-ra@mail.example.test>, orig_to=<alias-a@mail.example.test>, relay=local"
        ),
        format!(
            "{id}: to=<postern-rb@mail.example.test>, orig_to=<old@mail.example.test>, relay=local"
        ),
        format!(
            "{id}: to=<postern-rb@mail.example.test>, orig_to=<nosuch@mail.example.test>, relay=local"
        ),
        format!("{id}: to=<postern-ra@remote.example>, relay=local"),
    ] {
        assert!(log.contains(&want), "{want}\n{log}");
    }
    for (who, tail) in [
        (
            "gone@mail.example.test",
            "dsn=5.1.6, status=bounced (User has moved to gone@new.example)",
        ),
        (
            "err@mail.example.test",
            "dsn=5.7.1, status=bounced (no mail here)",
        ),
        (
            "drop@mail.example.test",
            "dsn=2.0.0, status=sent (silently dropped)",
        ),
        // Recorded from Postfix 3.7.11's error(8) and discard(8).
        ("soft@mail.example.test", "dsn=5.0.0, status=bounced (over)"),
        (
            "blank@mail.example.test",
            "dsn=5.0.0, status=bounced (Address is undeliverable)",
        ),
        (
            "drop2@mail.example.test",
            "dsn=2.0.0, status=sent (mail.example.test)",
        ),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("{id}: to=<{who}>, relay=none, delay=")))
            .unwrap_or_else(|| panic!("{who}\n{log}"));
        assert!(line.ends_with(tail), "{line}");
    }
    assert!(
        log.contains("postfix/discard[") && log.contains("postfix/error["),
        "{log}"
    );
    let ra =
        String::from_utf8_lossy(&delivered(&inst.dir.path().join("mail/postern-ra"))).into_owned();
    assert_eq!(
        ra.matches("\nReturn-Path: <sender@canon.example>\n")
            .count(),
        2,
        "{ra}"
    );
    assert!(
        ra.contains("\nX-Original-To: alias-a@mail.example.test\n"),
        "{ra}"
    );
    let rb =
        String::from_utf8_lossy(&delivered(&inst.dir.path().join("mail/postern-rb"))).into_owned();
    assert!(
        rb.contains("\nX-Original-To: old@mail.example.test\n"),
        "{rb}"
    );
    assert!(
        rb.contains("\nX-Original-To: nosuch@mail.example.test\n"),
        "{rb}"
    );
}

/// A local user whose delivery fails temporarily (mailbox_command exits 75, EX_TEMPFAIL)
/// until `ok` exists in the instance directory, then appends to `box`.
fn flaky_command(d: &Path) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(d.join("etc/main.cf"))
        .unwrap();
    writeln!(
        f,
        "mailbox_command = test -f {d}/ok || exit 75; cat >> {d}/box",
        d = d.display()
    )
    .unwrap();
    // The command runs as the user: it must reach the instance directory and write there.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
}

fn deferred_path(inst: &Instance, id: &str) -> PathBuf {
    inst.dir
        .path()
        .join("spool/deferred")
        .join(&id[..1])
        .join(id)
}

fn wait_deferred(inst: &Instance, id: &str) {
    if poll(Duration::from_secs(10), || {
        deferred_path(inst, id).exists().then_some(())
    })
    .is_none()
    {
        panic!("{id} was not deferred: {}", inst.log());
    }
}

#[test]
fn postqueue_i_and_s_deliver_deferred_mail_now() {
    let Some(_home) = user("postern-ra") else {
        return;
    };
    let inst = Instance::start_with(
        &main_cf("fast_flush_domains = mail.example.test\n"),
        QMGR,
        flaky_command,
    );
    let conf = inst.config_dir().display().to_string();
    let a = send(
        inst.port,
        "s@x.org",
        &["postern-ra@mail.example.test"],
        "Subject: a\n\nx\n",
    );
    let b = send(
        inst.port,
        "s@x.org",
        &["postern-ra@mail.example.test"],
        "Subject: b\n\nx\n",
    );
    wait_deferred(&inst, &a);
    wait_deferred(&inst, &b);
    std::fs::write(inst.dir.path().join("ok"), "").unwrap();
    // Deferred for minimal_backoff_time (300 s): only -i brings it back within the wait.
    let out = run_postern("postqueue", &["-c", &conf, "-i", &a], b"");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let log = inst.wait_log(&format!("{a}: removed"));
    assert!(
        log.contains(&format!(
            "{a}: to=<postern-ra@mail.example.test>, relay=local"
        )) && log.contains("status=sent (delivered to command: test -f"),
        "{log}"
    );
    assert!(deferred_path(&inst, &b).exists(), "-i moved only {a}");
    // A site not in fast_flush_domains: Postfix's refusal, exit 69.
    let out = run_postern("postqueue", &["-c", &conf, "-s", "other.example"], b"");
    assert_eq!(out.status.code(), Some(69));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "postqueue: fatal: Flush service is not configured for destination \"other.example\"\n"
    );
    assert!(deferred_path(&inst, &b).exists());
    let out = run_postern("postqueue", &["-c", &conf, "-s", "mail.example.test"], b"");
    assert!(out.status.success(), "{out:?}");
    inst.wait_log(&format!("{b}: removed"));
    let boxed = std::fs::read_to_string(inst.dir.path().join("box")).unwrap();
    assert!(boxed.contains("Subject: a\n") && boxed.contains("Subject: b\n"));
}

#[test]
fn postqueue_i_with_the_mail_system_down() {
    let inst = Instance::start(&main_cf(""), "");
    let conf = inst.config_dir().display().to_string();
    let out = run_postern("postqueue", &["-c", &conf, "-i", "ABCDEF12345"], b"");
    assert_eq!(out.status.code(), Some(69));
    // compat-fixtures/postsuper/postqueue-i.stderr
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(repo_root().join("compat-fixtures/postsuper/postqueue-i.stderr"))
            .unwrap()
    );
}

#[test]
fn postsuper_requeue_takes_mail_through_pickup_again() {
    let Some(_home) = user("postern-ra") else {
        return;
    };
    let inst = Instance::start_with(&main_cf(""), QMGR, flaky_command);
    let conf = inst.config_dir().display().to_string();
    let id = send(
        inst.port,
        "s@x.org",
        &["postern-ra@mail.example.test"],
        "Subject: r\n\nx\n",
    );
    wait_deferred(&inst, &id);
    assert!(
        inst.dir
            .path()
            .join("spool/defer")
            .join(&id[..1])
            .join(&id)
            .exists()
    );
    std::fs::write(inst.dir.path().join("ok"), "").unwrap();
    let out = run_postern("postsuper", &["-c", &conf, "-r", &id], b"");
    assert!(out.status.success(), "{out:?}");
    // compat-fixtures/postsuper/requeue-one.stderr, with this message's ID.
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("postsuper: {id}: requeued\npostsuper: Requeued: 1 message\n")
    );
    let log = inst.wait_log(&format!("{id}: removed"));
    // Taken from maildrop/ as new mail: the pickup line, then delivered.
    assert!(log.contains("postfix/pickup["), "{log}");
    assert!(log.contains(&format!("{id}: uid=")), "{log}");
    assert!(log.contains("status=sent (delivered to command"), "{log}");
    // Nothing left: no file, no defer log with old reasons.
    assert!(
        !inst
            .dir
            .path()
            .join("spool/defer")
            .join(&id[..1])
            .join(&id)
            .exists()
    );
    let out = run_postern("postsuper", &["-c", &conf, "-r", "ALL"], b"");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "postsuper: Requeued: 0 messages\n"
    );
}

#[test]
fn postsuper_s_puts_files_where_they_belong() {
    // No qmgr: the queue is only looked at by postsuper.
    let inst = Instance::start(&main_cf(""), "");
    let conf = inst.config_dir().display().to_string();
    let id = send(
        inst.port,
        "s@x.org",
        &["nobody@remote.example"],
        "Subject: s\n\nx\n",
    );
    let spool = inst.dir.path().join("spool");
    // Misplace it in the wrong hash directory of deferred/, and add a bogus name.
    let wrong = if id.starts_with('A') { "B" } else { "A" };
    std::fs::create_dir_all(spool.join("deferred").join(wrong)).unwrap();
    // The queue's directories are mail_owner's, as the queue manager makes them (postsuper,
    // as Postfix's, works as mail_owner).
    if let Ok(Some(u)) = nix::unistd::User::from_name(&test_mail_owner()) {
        std::os::unix::fs::chown(
            spool.join("deferred").join(wrong),
            Some(u.uid.as_raw()),
            None,
        )
        .unwrap();
    }
    std::fs::rename(
        spool.join("incoming").join(&id),
        spool.join("deferred").join(wrong).join(&id),
    )
    .unwrap();
    std::fs::write(spool.join("incoming/E00A79A807A.x"), "junk").unwrap();
    let out = run_postern("postsuper", &["-c", &conf, "-s"], b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "postsuper: warning: bogus file name: incoming/E00A79A807A.x\n"
    );
    assert!(spool.join("deferred").join(&id[..1]).join(&id).exists());
    assert!(!spool.join("deferred").join(wrong).join(&id).exists());
    assert!(spool.join("incoming/E00A79A807A.x").exists(), "left alone");
    let listing =
        String::from_utf8(run_postern("postqueue", &["-c", &conf, "-p"], b"").stdout).unwrap();
    assert!(listing.contains(&format!("\n{id:<11} ")), "{listing}");
}

/// A queued message as the queue manager hands it to a delivery agent.
fn queued(sender: &str, rcpt: &str, content: &str) -> postern::queue::QueuedMessage {
    postern::queue::QueuedMessage {
        queue_id: "3F2A81C0B2".into(),
        arrival: std::time::SystemTime::now(),
        sender: sender.into(),
        recipients: vec![postern::queue::QueuedRecipient {
            address: rcpt.into(),
            original: None,
            orcpt: None,
            notify_flags: 0,
            done: false,
            offset: 0,
        }],
        envid: None,
        ret_flags: 0,
        encoding: None,
        smtputf8: 0,
        rewrite_context: None,
        attributes: Vec::new(),
        content: content.as_bytes().to_vec(),
        message_size: content.len() as u64,
        data_offset: 0,
        rcpt_count: 1,
        qmgr_opts: 0,
    }
}

/// The virtual(8) agent itself, called as the queue manager calls it: Maildir and mbox
/// results under virtual_mailbox_base, owned by the uid/gid of the static maps, unknown
/// users, a uid below virtual_minimum_uid, and a symlinked mbox.
#[test]
fn virtual_agent_delivers_as_the_mapped_uid() {
    // The agent forks a child per delivery as root (sys::child), which is only safe in a
    // single-threaded process, as the delivery process is: here another test's thread may
    // hold a lock (the log's capture, the environment) when the fork happens, and the
    // child would wait on it for ever (seen once). So the body runs in a process of its own
    // with this one test in it.
    if std::env::var_os("POSTERN_TEST_SOLO").is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "virtual_agent_delivers_as_the_mapped_uid",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("POSTERN_TEST_SOLO", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the test did not run: {text}");
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let root = nix::unistd::Uid::effective().is_root();
    let (uid, gid) = if root {
        (5077, 5077)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("etc")).unwrap();
    std::fs::create_dir_all(d.join("vmail/example.org")).unwrap();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    if root {
        std::os::unix::fs::chown(d.join("vmail"), Some(uid), Some(gid)).unwrap();
        std::os::unix::fs::chown(d.join("vmail/example.org"), Some(uid), Some(gid)).unwrap();
    }
    std::fs::write(
        d.join("vmailbox"),
        "alice@example.org example.org/alice/\nbob@example.org example.org/bob\n\
         carol@example.org example.org/carol\nlow@example.org example.org/low/\n",
    )
    .unwrap();
    std::fs::write(
        d.join("uids"),
        format!("low@example.org 5\n@example.org {uid}\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink(d.join("target"), d.join("vmail/example.org/carol")).unwrap();
    std::fs::write(d.join("target"), "untouched").unwrap();
    std::fs::write(
        d.join("etc/main.cf"),
        format!(
            "virtual_mailbox_domains = example.org, inline:{{v2.example=ok}}\n\
             virtual_mailbox_base = {b}/vmail\n\
             virtual_mailbox_maps = texthash:{b}/vmailbox\n\
             virtual_uid_maps = texthash:{b}/uids\n\
             virtual_gid_maps = static:{gid}\n\
             virtual_minimum_uid = {min}\n\
             maillog_file = /dev/null\n",
            b = d.display(),
            min = if root { 100 } else { uid.min(100) }
        ),
    )
    .unwrap();
    let cfg =
        postern::config::postfix::PostfixConfig::load(&postern::config::postfix::LoadOptions {
            config_dir: Some(d.join("etc")),
            overrides: Vec::new(),
        })
        .unwrap();
    let s = postern::delivery::virtual_delivery::VirtualSettings::from_config(&cfg);
    assert!(s.is_virtual_domain("Example.ORG"));
    assert!(s.is_virtual_domain("v2.example"));
    assert!(!s.is_virtual_domain("sub.example.org"));
    let msg = queued("s@x.org", "alice@example.org", "Subject: v\n\nFrom here\n");
    use postern::delivery::Status;

    let o = postern::delivery::virtual_delivery::deliver(&s, &msg, "alice@example.org", None);
    assert_eq!(o.len(), 1);
    assert_eq!(
        (o[0].status.clone(), o[0].dsn.as_str()),
        (Status::Sent, "2.0.0")
    );
    assert_eq!(o[0].text, "delivered to maildir");
    let new = d.join("vmail/example.org/alice/new");
    let files: Vec<_> = std::fs::read_dir(&new).unwrap().flatten().collect();
    assert_eq!(files.len(), 1);
    let meta = files[0].metadata().unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    assert_eq!(
        std::fs::metadata(d.join("vmail/example.org/alice"))
            .unwrap()
            .uid(),
        uid
    );
    assert_eq!(
        std::fs::read_to_string(files[0].path()).unwrap(),
        "Return-Path: <s@x.org>\nX-Original-To: alice@example.org\n\
         Delivered-To: alice@example.org\nSubject: v\n\nFrom here\n"
    );

    let o = postern::delivery::virtual_delivery::deliver(
        &s,
        &msg,
        "bob@example.org",
        Some("b@old.example"),
    );
    assert_eq!(o[0].status, Status::Sent, "{o:?}");
    assert_eq!(o[0].text, "delivered to mailbox");
    assert_eq!(o[0].orig_to.as_deref(), Some("b@old.example"));
    let mbox = d.join("vmail/example.org/bob");
    let meta = std::fs::metadata(&mbox).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (uid, gid, 0o600)
    );
    let text = std::fs::read_to_string(&mbox).unwrap();
    assert!(text.starts_with("From s@x.org  "), "{text}");
    assert!(
        text.ends_with(
            "\nReturn-Path: <s@x.org>\nX-Original-To: b@old.example\n\
             Delivered-To: bob@example.org\nSubject: v\n\n>From here\n\n"
        ),
        "{text}"
    );

    let o = postern::delivery::virtual_delivery::deliver(&s, &msg, "Nobody@example.org", None);
    assert_eq!(
        (o[0].status.clone(), o[0].dsn.as_str(), o[0].text.as_str()),
        (
            Status::Bounced,
            "5.1.1",
            "unknown user: \"nobody@example.org\""
        )
    );

    if root {
        let o = postern::delivery::virtual_delivery::deliver(&s, &msg, "low@example.org", None);
        assert_eq!(
            (o[0].status.clone(), o[0].dsn.as_str(), o[0].text.as_str()),
            (Status::Deferred, "4.3.5", "mail system configuration error")
        );
        assert!(!d.join("vmail/example.org/low").exists());
    }

    let o = postern::delivery::virtual_delivery::deliver(&s, &msg, "carol@example.org", None);
    assert_eq!(o[0].status, Status::Bounced, "{o:?}");
    assert!(
        o[0].text.starts_with(&format!(
            "delivery failed to mailbox {}/vmail/example.org/carol: ",
            d.display()
        )),
        "{o:?}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("target")).unwrap(),
        "untouched"
    );
}

/// The same through SMTP and the queue manager, logged `relay=virtual`.
#[test]
fn smtp_to_virtual_mailbox_domain() {
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let inst = Instance::start_with(
        &main_cf(
            "virtual_mailbox_domains = virt.example\n\
             virtual_mailbox_base = $queue_directory/../vmail\n\
             virtual_mailbox_maps = texthash:$queue_directory/../vmailbox\n\
             virtual_uid_maps = static:5077\nvirtual_gid_maps = static:5077\n",
        ),
        QMGR,
        |d| {
            std::fs::create_dir_all(d.join("vmail")).unwrap();
            std::fs::write(
                d.join("vmailbox"),
                "md@virt.example virt.example/md/\nmb@virt.example virt.example/mb\n",
            )
            .unwrap();
        },
    );
    let vmail = inst.dir.path().join("vmail");
    std::os::unix::fs::chown(&vmail, Some(5077), Some(5077)).unwrap();
    let id = send(
        inst.port,
        "s@x.org",
        &["md@virt.example", "mb@virt.example", "nope@virt.example"],
        "Subject: v\n\nx\n",
    );
    let log = inst.wait_log(&format!("{id}: removed"));
    assert!(
        log.contains(&format!(
            "{id}: to=<md@virt.example>, relay=virtual, delay="
        )) && log.contains("status=sent (delivered to maildir)"),
        "{log}"
    );
    assert!(
        log.contains(&format!("{id}: to=<mb@virt.example>, relay=virtual"))
            && log.contains("status=sent (delivered to mailbox)"),
        "{log}"
    );
    assert!(
        log.contains("dsn=5.1.1, status=bounced (unknown user: \"nope@virt.example\")"),
        "{log}"
    );
    let mbox = delivered(&vmail.join("virt.example/mb"));
    assert!(mbox.starts_with(b"From s@x.org  "));
}

/// `sendmail -bs` answers as Postfix 3.7.11's smtpd in that mode, recorded in
/// compat-fixtures/postsuper/sendmail-bs-*. The recording instance had Debian's
/// `compatibility_level = 3.6`, which turns `smtputf8_enable` on (without it the real
/// `sendmail -bs` offers no SMTPUTF8).
#[test]
fn sendmail_bs_replies_as_postfix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("etc")).unwrap();
    std::fs::write(
        d.join("etc/main.cf"),
        format!(
            "compatibility_level = 3.6\nmyhostname = bench.localdomain\n\
             queue_directory = {q}/spool\n\
             data_directory = {q}/data\nmaillog_file = /dev/null\nmail_owner = {o}\n",
            q = d.display(),
            o = test_mail_owner()
        ),
    )
    .unwrap();
    let conf = d.join("etc").display().to_string();
    let fx = repo_root().join("compat-fixtures/postsuper");
    for n in 1..=2 {
        let input = std::fs::read(fx.join(format!("sendmail-bs-{n}.in"))).unwrap();
        let want = std::fs::read_to_string(fx.join(format!("sendmail-bs-{n}.out"))).unwrap();
        let out = run_postern("sendmail", &["-C", &conf, "-bs"], &input);
        assert!(out.status.success(), "{out:?}");
        let got = String::from_utf8_lossy(&out.stdout).into_owned();
        let got: String = got
            .split_inclusive('\n')
            .map(|l| match l.find("queued as ") {
                Some(i) => format!("{}queued as ID\r\n", &l[..i]),
                None => l.to_string(),
            })
            .collect();
        assert_eq!(got, want, "transcript {n}");
    }
    let queued: Vec<_> = std::fs::read_dir(d.join("spool/maildrop"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(queued.len(), 2, "one message per transcript");
}

/// `queued as ID` for any queue ID.
fn mask_queued(s: &str) -> String {
    s.split_inclusive('\n')
        .map(|l| match l.find("queued as ") {
            Some(i) => format!("{}queued as ID\r\n", &l[..i]),
            None => l.to_string(),
        })
        .collect()
}

/// `sendmail -bs` is smtpd's session core in Postfix's stand-alone mode: with restrictions
/// that refuse every network client, SASL and TLS configured, it evaluates no
/// restriction, offers neither STARTTLS nor AUTH, refuses ETRN with 458 and keeps a
/// refused MAIL's SIZE= until RSET, as Postfix 3.7.11 answered
/// (compat-fixtures/postsuper/sendmail-bs-3). Where the real Postfix is installed and the
/// test runs as root, its `sendmail -bs` is run on the same input and main.cf here too and
/// both transcripts must be the same.
#[test]
fn sendmail_bs_follows_smtpd_stand_alone_rules() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let main_cf = |q: &Path| {
        format!(
            "compatibility_level = 3.6\nmyhostname = bench.localdomain\n\
             queue_directory = {q}/spool\ndata_directory = {q}/data\n\
             maillog_file_prefixes = {q}\nmaillog_file = {q}/maillog\n\
             smtpd_sasl_auth_enable = yes\nsmtpd_tls_security_level = may\n\
             smtpd_client_restrictions = reject\nsmtpd_recipient_restrictions = reject\n\
             local_recipient_maps =\n",
            q = q.display()
        )
    };
    std::fs::create_dir_all(d.join("etc")).unwrap();
    std::fs::write(
        d.join("etc/main.cf"),
        main_cf(d) + &format!("mail_owner = {}\n", test_mail_owner()),
    )
    .unwrap();
    let fx = repo_root().join("compat-fixtures/postsuper");
    let input = std::fs::read(fx.join("sendmail-bs-3.in")).unwrap();
    let want = std::fs::read_to_string(fx.join("sendmail-bs-3.out")).unwrap();
    let conf = d.join("etc").display().to_string();
    let out = run_postern("sendmail", &["-C", &conf, "-bs"], &input);
    assert!(out.status.success(), "{out:?}");
    let got = mask_queued(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(got, want);
    let dropped = std::fs::read_dir(d.join("spool/maildrop")).unwrap().count();
    assert_eq!(dropped, 2, "the DATA and the BDAT message");
    let log = std::fs::read_to_string(d.join("maillog")).unwrap_or_default();
    for line in [
        "postfix/smtpd[",
        ": connect from localhost[127.0.0.1]",
        ": warning: do not use ETRN in \"sendmail -bs\" mode",
        ": client=localhost[127.0.0.1]",
        ": disconnect from localhost[127.0.0.1] helo=1 ehlo=1 starttls=0/1 auth=0/1 mail=2/3 rcpt=3 data=1 bdat=1 rset=1 vrfy=1 etrn=0/2 quit=1 unknown=0/1 commands=12/18",
    ] {
        assert!(log.contains(line), "{line:?} not in\n{log}");
    }

    // The real Postfix, when it is here (it needs root: postdrop's maildrop is group
    // postdrop, and smtpd -S reads its tables as root).
    let postfix_sendmail = Path::new("/usr/sbin/sendmail");
    let is_postfix = std::process::Command::new("postconf")
        .args(["-d", "mail_version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !is_root() || !is_postfix || !postfix_sendmail.exists() {
        eprintln!("the real Postfix's sendmail -bs not run (not root or not installed)");
        return;
    }
    let real = tempfile::tempdir().unwrap();
    let r = real.path();
    for sub in ["etc", "data", "spool/maildrop"] {
        std::fs::create_dir_all(r.join(sub)).unwrap();
    }
    std::fs::write(r.join("etc/main.cf"), main_cf(r)).unwrap();
    let maildrop = r.join("spool/maildrop");
    let ok = std::process::Command::new("chown")
        .arg("postfix:postdrop")
        .arg(&maildrop)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("no postfix user or postdrop group: the real Postfix not run");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&maildrop, std::fs::Permissions::from_mode(0o1730)).unwrap();
    let mut c = std::process::Command::new(postfix_sendmail)
        .arg("-C")
        .arg(r.join("etc"))
        .arg("-bs")
        .env_remove("MAIL_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(&input).unwrap();
    }
    let real_out = c.wait_with_output().unwrap();
    let real_got = mask_queued(&String::from_utf8_lossy(&real_out.stdout));
    assert_eq!(
        got, real_got,
        "Postern's -bs transcript against the real Postfix's"
    );
}

/// A real dialogue (one command, one reply, as a client such as mutt or git send-email
/// speaks it) into a running instance: the message is delivered to the mailbox.
#[test]
fn sendmail_bs_dialogue_is_delivered() {
    use std::io::{BufRead, Write};
    let Some(_home) = user("postern-ra") else {
        return;
    };
    let inst = Instance::start_with(
        &main_cf("mail_spool_directory = $queue_directory/../mail\n"),
        QMGR,
        |d| std::fs::create_dir_all(d.join("mail")).unwrap(),
    );
    let mut child = std::process::Command::new(BIN)
        .args(["sendmail", "-C"])
        .arg(inst.config_dir())
        .arg("-bs")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = child.stdin.take().unwrap();
    let mut from = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut reply = || {
        let mut all = String::new();
        loop {
            let mut l = String::new();
            from.read_line(&mut l).unwrap();
            all.push_str(&l);
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                return all;
            }
        }
    };
    assert_eq!(reply(), "220 mail.example.test ESMTP Postfix\r\n");
    let mut say = |line: &str| to.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    say("EHLO me.example");
    let ehlo = reply();
    assert!(
        ehlo.ends_with("250 CHUNKING\r\n") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    say("MAIL FROM:<me@x.org>");
    assert_eq!(reply(), "250 2.1.0 Ok\r\n");
    say("RCPT TO:<postern-ra@mail.example.test>");
    assert_eq!(reply(), "250 2.1.5 Ok\r\n");
    say("DATA");
    assert_eq!(reply(), "354 End data with <CR><LF>.<CR><LF>\r\n");
    say("Subject: via -bs\r\n\r\n..leading dot\r\nbody");
    say(".");
    let queued = reply();
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    let id = queued.trim_end().rsplit(' ').next().unwrap().to_string();
    say("QUIT");
    assert_eq!(reply(), "221 2.0.0 Bye\r\n");
    assert!(child.wait().unwrap().success());
    inst.wait_log(&format!("{id}: removed"));
    let mbox = String::from_utf8(delivered(&inst.dir.path().join("mail/postern-ra"))).unwrap();
    assert!(
        mbox.contains(&format!(
            "Received: from me.example (localhost [127.0.0.1])\n\tby mail.example.test (Postfix) with ESMTP id {id}\n\tfor <postern-ra@mail.example.test>; "
        )),
        "{mbox}"
    );
    assert!(mbox.contains("Subject: via -bs\n"), "{mbox}");
    assert!(mbox.contains("\n.leading dot\nbody\n"), "{mbox}");
}

/// owner- lists as Postfix 3.7's local(8) delivers them (checked against the real one:
/// `From owner-list@HOST` and `Return-Path: <owner-list@HOST>` in the members' mailboxes),
/// and owner_request_special keeping `owner-list`/`list-request` whole with a `-`
/// recipient_delimiter.
#[test]
fn owner_list_members_get_the_owner_as_sender() {
    let (Some(_), Some(_)) = (user("pstlista"), user("pstlistb")) else {
        return;
    };
    let inst = Instance::start_with(
        &main_cf(
            "mail_spool_directory = $queue_directory/../mail\nalias_maps = hash:$queue_directory/../aliases\nrecipient_delimiter = -\n",
        ),
        QMGR,
        |d| {
            std::fs::create_dir_all(d.join("mail")).unwrap();
            std::fs::write(
                d.join("aliases"),
                "list: pstlistb\nowner-list: pstlista\nplain: pstlistb\n",
            )
            .unwrap();
        },
    );
    let id = send(
        inst.port,
        "s@x.org",
        &["list@mail.example.test"],
        "Subject: to the list\n\nx\n",
    );
    let log = inst.wait_log(&format!("{id}: removed"));
    assert!(log.contains(&format!("{id}: removed")), "{log}");
    let rb = String::from_utf8(delivered(&inst.dir.path().join("mail/pstlistb"))).unwrap();
    assert!(
        rb.starts_with("From owner-list@mail.example.test  "),
        "{rb}"
    );
    assert!(
        rb.contains("\nReturn-Path: <owner-list@mail.example.test>\nX-Original-To: list@mail.example.test\nDelivered-To: pstlistb@mail.example.test\n"),
        "{rb}"
    );
    // A list without an owner keeps the sender.
    let id = send(
        inst.port,
        "s@x.org",
        &["plain@mail.example.test"],
        "Subject: plain\n\nx\n",
    );
    inst.wait_log(&format!("{id}: removed"));
    let rb = std::fs::read_to_string(inst.dir.path().join("mail/pstlistb")).unwrap();
    assert!(
        rb.contains("\nReturn-Path: <s@x.org>\nX-Original-To: plain@mail.example.test\n"),
        "{rb}"
    );
}

/// Every cleanup line carries `$syslog_name` as Postfix's do (`postfix-anchor/cleanup`
/// beside `postfix-anchor/smtpd`, so `pflogsumm --syslog-name=postfix-anchor` counts the
/// messages), and mail from `sendmail` gets its `message-id=` line after pickup's `uid=`,
/// as Postfix's pickup → cleanup → qmgr chain logs it.
#[test]
fn cleanup_lines_follow_syslog_name_and_sendmail_mail_gets_message_id() {
    let Some(_) = user("postern-rc") else { return };
    let inst = Instance::start_with(
        &main_cf("mail_spool_directory = $queue_directory/../mail\nsyslog_name = postfix-anchor\n"),
        QMGR,
        |d| std::fs::create_dir_all(d.join("mail")).unwrap(),
    );
    let conf = inst.config_dir().display().to_string();
    let smtp_id = send(
        inst.port,
        "s@x.org",
        &["postern-rc@mail.example.test"],
        "Subject: by smtp\r\n\r\nbody\r\n",
    );
    let out = run_postern(
        "sendmail",
        &["-C", &conf, "-i", "-f", "cron@x.org", "postern-rc"],
        b"Subject: by sendmail\nMessage-ID: <cron.1@x.org>\n\nbody\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = inst.wait_log(": message-id=<cron.1@x.org>");
    assert!(log.contains("postfix-anchor/cleanup["), "{log}");
    assert!(!log.contains("postfix/cleanup["), "{log}");
    let cleanup_line = |id: &str| {
        log.lines()
            .find(|l| l.contains("/cleanup[") && l.contains(&format!(": {id}: message-id=<")))
            .map(str::to_string)
    };
    let smtp_line = cleanup_line(&smtp_id).unwrap_or_else(|| panic!("{smtp_id}: {log}"));
    assert!(smtp_line.contains("postfix-anchor/cleanup["), "{smtp_line}");
    let mid_line = log
        .lines()
        .find(|l| l.ends_with(": message-id=<cron.1@x.org>"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(mid_line.contains("postfix-anchor/cleanup["), "{mid_line}");
    let id = mid_line
        .rsplit_once(": message-id=")
        .and_then(|(a, _)| a.rsplit_once(": "))
        .map(|(_, id)| id.to_string())
        .unwrap();
    let pos = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("{needle}: {log}"))
    };
    assert!(
        pos(&format!("{id}: uid=")) < pos(&format!("{id}: message-id=<cron.1@x.org>")),
        "{log}"
    );
}

/// The records of a queue file, one `TYPE data` line each, what differs from run to run
/// (times, queue IDs, the size record, the submitter's uid, headers added in local time)
/// cut to their names.
fn queue_records(file: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < file.len() {
        let kind = file[pos] as char;
        let (mut len, mut shift) = (0usize, 0);
        pos += 1;
        loop {
            let b = file[pos];
            pos += 1;
            len |= ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let data = String::from_utf8_lossy(&file[pos..pos + len]).into_owned();
        pos += len;
        let keep = match kind {
            'C' | 'T' => String::new(),
            _ => match data.split_once([':', '=']) {
                Some((k @ ("create_time" | "log_ident" | "Message-Id" | "Date"), _)) => {
                    k.to_string()
                }
                _ if data.starts_with("Received: ") => data
                    .split(" from userid")
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                _ if data.starts_with("\tid ") => "\tid".to_string(),
                _ => data,
            },
        };
        out.push(format!("{kind} {keep}"));
    }
    out
}

/// A maildrop file another user wrote (here one from `sendmail`, the instance stopped,
/// then given to an unprivileged user as postdrop leaves it) is queued by pickup with the
/// records of a local submission and nothing else (pickup's copy, built by
/// `queue::cleanup::maildrop_copy`; its bytes are checked against the copy built before in
/// `qmgr::daemon`'s unit test).
#[test]
fn a_users_maildrop_file_is_queued_with_a_local_submissions_records() {
    use std::os::unix::fs::MetadataExt;
    let Some(_) = user("postern-md") else { return };
    let u = nix::unistd::User::from_name("postern-md").unwrap().unwrap();
    let mut inst = Instance::start(
        &main_cf("smtp_connect_timeout = 1s\n"),
        &format!("{QMGR}smtp      unix  -       -       n       -       -       smtp\n"),
    );
    inst.kill9();
    let conf = inst.config_dir().display().to_string();
    let out = run_postern(
        "sendmail",
        &[
            "-C",
            &conf,
            "-f",
            "postern-md@mail.example.test",
            "nobody@[192.0.2.1]",
        ],
        b"Subject: maildrop\n\nbody line\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spool = inst.dir.path().join("spool");
    let dropped: Vec<_> = std::fs::read_dir(spool.join("maildrop"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    nix::unistd::chown(&dropped[0], Some(u.uid), None).unwrap();
    assert_eq!(
        std::fs::metadata(&dropped[0]).unwrap().uid(),
        u.uid.as_raw()
    );
    let id = dropped[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    inst.spawn();
    let log = inst.wait_log_until(Duration::from_secs(60), |l| {
        l.contains(&format!("{id}: to=<nobody@[192.0.2.1]>"))
    });
    assert!(
        log.contains(&format!(
            "{id}: uid={} from=<postern-md@mail.example.test>",
            u.uid
        )),
        "{log}"
    );
    let out = std::process::Command::new("find")
        .arg(spool.join("deferred"))
        .arg(spool.join("active"))
        .args(["-type", "f", "-name", &id])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!path.is_empty(), "{id} not queued:\n{log}");
    let records = queue_records(&std::fs::read(path.lines().next().unwrap()).unwrap());
    let want = [
        "C ",
        "T ",
        "A create_time",
        "A log_ident",
        "A rewrite_context=local",
        "S postern-md@mail.example.test",
        "A log_message_origin=local",
        "A dsn_orig_rcpt=rfc822;nobody@[192.0.2.1]",
        "O nobody@[192.0.2.1]",
        "R nobody@[192.0.2.1]",
        "M ",
        "N Received: by mail.example.test (Postfix,",
        "N \tid",
        "N Subject: maildrop",
        "N Message-Id",
        "N Date",
        "N From: postern-md@mail.example.test",
        "N ",
        "N body line",
        "X ",
        "E ",
    ];
    assert_eq!(records, want, "{log}");
}

/// Group commit (issue 18): many sessions sending to one mbox at once, so that the queue
/// manager gathers deliveries while the one before is written and the local delivery
/// process appends several under one lock hold and one fsync. Every message must be in the
/// mbox once, whole (Python's `mailbox` parses it), both recipients of a two-recipient
/// queue file once each, and the log must say `status=sent` once per recipient; a message
/// too big for `mailbox_size_limit`, sent among the others, bounces alone and is not
/// written.
#[test]
fn concurrent_deliveries_to_one_mbox_each_land_once() {
    let Some(_home) = user("postern-gc") else {
        return;
    };
    let inst = Instance::start_with(
        &main_cf(
            "mail_spool_directory = $queue_directory/../mail\nrecipient_delimiter = +\n\
             mailbox_size_limit = 400000\n",
        ),
        QMGR,
        |d| std::fs::create_dir_all(d.join("mail")).unwrap(),
    );
    const SESSIONS: usize = 12;
    const EACH: usize = 10;
    let port = inst.port;
    // (seq, queue id, recipients, big)
    let sent: Vec<(usize, String, usize, bool)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..SESSIONS)
            .map(|t| {
                sc.spawn(move || {
                    let mut out = Vec::new();
                    for k in 0..EACH {
                        let seq = t * EACH + k;
                        let big = k == 3;
                        let two = k % 4 == 1;
                        let filler = if big {
                            format!("{}\n", "y".repeat(70)).repeat(7000)
                        } else {
                            format!("line of message {seq}\n").repeat(5)
                        };
                        let body =
                            format!("Subject: gc {seq}\nX-Seq: {seq}\n\nFrom {seq}\n{filler}");
                        let rcpts: &[&str] = if two {
                            &[
                                "postern-gc+a@mail.example.test",
                                "postern-gc+b@mail.example.test",
                            ]
                        } else {
                            &["postern-gc@mail.example.test"]
                        };
                        // The big ones from <>: their bounce is dropped, as Postfix does.
                        let from = if big { "" } else { "s@x.org" };
                        let id = send(port, from, rcpts, &body);
                        out.push((seq, id, rcpts.len(), big));
                    }
                    out
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let ids: Vec<&str> = sent.iter().map(|(_, id, _, _)| id.as_str()).collect();
    let log = inst.wait_log_until(Duration::from_secs(60), |l| {
        ids.iter().all(|id| l.contains(&format!("{id}: removed")))
    });
    for (seq, id, n, big) in &sent {
        let sent_lines = log
            .lines()
            .filter(|l| {
                l.contains(&format!("{id}: to=<postern-gc"))
                    && l.contains("status=sent (delivered to mailbox)")
            })
            .count();
        let bounced = log
            .lines()
            .filter(|l| {
                l.contains(&format!("{id}: to=<postern-gc"))
                    && l.contains("dsn=5.2.2, status=bounced")
                    && l.contains("File too large")
            })
            .count();
        if *big {
            assert_eq!(
                (sent_lines, bounced),
                (0, 1),
                "message {seq} ({id}):\n{log}"
            );
        } else {
            assert_eq!(
                (sent_lines, bounced),
                (*n, 0),
                "message {seq} ({id}):\n{log}"
            );
        }
        assert!(log.contains(&format!("{id}: removed")), "{id}:\n{log}");
    }
    let mbox = inst.dir.path().join("mail/postern-gc");
    let script = "import mailbox, sys\n\
                  for m in mailbox.mbox(sys.argv[1]):\n\
                  \x20   body = m.get_payload()\n\
                  \x20   seq = m['X-Seq']\n\
                  \x20   whole = body == '>From %s\\n' % seq + ('line of message %s\\n' % seq) * 5\n\
                  \x20   print(seq, m['X-Original-To'], 'whole' if whole else 'cut')\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&mbox)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Vec<Vec<&str>> = listing.lines().map(|l| l.split(' ').collect()).collect();
    for (seq, _, n, big) in &sent {
        let mine: Vec<&Vec<&str>> = rows.iter().filter(|r| r[0] == seq.to_string()).collect();
        let want = if *big { 0 } else { *n };
        assert_eq!(mine.len(), want, "message {seq} in the mbox:\n{listing}");
        for r in &mine {
            assert_eq!(r[2], "whole", "message {seq}:\n{listing}");
        }
        if *n == 2 && !*big {
            // One queue file's two recipients, once each (not necessarily in the file's
            // order: a recipient whose destination is busy is put aside, and the next one
            // may go first).
            let mut to: Vec<&str> = mine.iter().map(|r| r[1]).collect();
            to.sort();
            assert_eq!(
                to,
                [
                    "postern-gc+a@mail.example.test",
                    "postern-gc+b@mail.example.test"
                ],
                "{listing}"
            );
        }
    }
    let total: usize = sent.iter().filter(|s| !s.3).map(|s| s.2).sum();
    assert_eq!(rows.len(), total, "{listing}");
}

/// A burst into one Maildir (issue 18): many sessions sending to one Maildir recipient at
/// once, delivered by the local delivery process (whose batches write their files to
/// `tmp/`, fsync them side by side, rename them into `new/` and fsync `new/` once; the
/// queue manager sends Maildir deliveries one per request, `deliver_maildir_batch`'s
/// measurements in README). Every message must be in `new/` once,
/// whole (bodies of 1 to 80 KB), owned by the user, nothing left in `tmp/`, and the log must
/// say `status=sent` once per message. Among them go messages to an alias whose members are
/// that user and one whose Maildir cannot be written (a directory only root may enter): each
/// such request's writes, to both Maildirs, are made together (`commit_deferred`); the
/// unwritable member's fails alone, with its reason, and the other member gets every
/// message.
#[test]
fn concurrent_deliveries_to_one_maildir_each_land_once() {
    let (Some(home), Some(bad)) = (user("postern-md"), user("postern-mdx")) else {
        return;
    };
    let _ = std::fs::remove_dir_all(home.join("Maildir"));
    let _ = std::fs::remove_dir_all(bad.join("Maildir"));
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    // Root's, mode 0700: the recipient, as whom the Maildir is written, cannot enter it.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(bad.join("Maildir"))
        .unwrap();
    let inst = Instance::start_with(
        &main_cf("home_mailbox = Maildir/\nalias_maps = hash:$queue_directory/../aliases\n"),
        QMGR,
        |d| std::fs::write(d.join("aliases"), "pair: postern-md, postern-mdx\n").unwrap(),
    );
    const SESSIONS: usize = 12;
    const EACH: usize = 10;
    let port = inst.port;
    let body_of = |seq: usize| {
        // 1 to 80 KB: several pages, so a write cut short would show.
        let lines = 40 + (seq * 97) % 2000;
        format!(
            "From {seq}\n{}",
            format!("line of message {seq}\n").repeat(lines)
        )
    };
    // (seq, queue id, to the alias)
    let sent: Vec<(usize, String, bool)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..SESSIONS)
            .map(|t| {
                sc.spawn(move || {
                    let mut out = Vec::new();
                    for k in 0..EACH {
                        let seq = t * EACH + k;
                        let pair = k % 4 == 2;
                        let body = format!("Subject: md {seq}\nX-Seq: {seq}\n\n{}", body_of(seq));
                        // To the alias from <>: the bounce for its unwritable member is
                        // dropped, as Postfix does, and the queue file removed.
                        let (from, to) = if pair {
                            ("", "pair@mail.example.test")
                        } else {
                            ("s@x.org", "postern-md@mail.example.test")
                        };
                        let id = send(port, from, &[to], &body);
                        out.push((seq, id, pair));
                    }
                    out
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let ids: Vec<&str> = sent.iter().map(|(_, id, _)| id.as_str()).collect();
    let log = inst.wait_log_until(Duration::from_secs(60), |l| {
        ids.iter().all(|id| l.contains(&format!("{id}: removed")))
    });
    let lines_with = |id: &str, to: &str, what: &str| {
        log.lines()
            .filter(|l| {
                l.contains(&format!("{id}: to=<{to}@mail.example.test>,")) && l.contains(what)
            })
            .count()
    };
    let refused = format!(
        "dsn=5.2.0, status=bounced (cannot update mailbox {}/Maildir/ for user postern-mdx. \
         cannot open file: Permission denied)",
        bad.display()
    );
    for (seq, id, pair) in &sent {
        assert!(log.contains(&format!("{id}: removed")), "{id}:\n{log}");
        let ok = lines_with(id, "postern-md", "status=sent (delivered to maildir)");
        assert_eq!(ok, 1, "message {seq} ({id}):\n{log}");
        if *pair {
            assert_eq!(
                lines_with(id, "postern-md", "orig_to=<pair@mail.example.test>"),
                1,
                "message {seq} ({id}):\n{log}"
            );
            assert_eq!(
                lines_with(id, "postern-mdx", &refused),
                1,
                "message {seq} ({id}):\n{log}"
            );
        }
        assert_eq!(
            log.lines()
                .filter(|l| l.contains(&format!("{id}: to=<")))
                .count(),
            if *pair { 2 } else { 1 },
            "message {seq} ({id}):\n{log}"
        );
    }
    let uid = nix::unistd::User::from_name("postern-md")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let mut found = vec![0usize; SESSIONS * EACH];
    for e in std::fs::read_dir(home.join("Maildir/new"))
        .unwrap()
        .flatten()
    {
        let data = std::fs::read_to_string(e.path()).unwrap();
        assert_eq!(e.metadata().unwrap().uid(), uid, "{}", e.path().display());
        let (head, body) = data.split_once("\n\n").expect("header and body");
        let seq: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("X-Seq: "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no X-Seq in {}:\n{head}", e.path().display()));
        let pair = sent.iter().any(|(s, _, p)| *s == seq && *p);
        let to = if pair { "pair" } else { "postern-md" };
        assert!(
            head.contains(&format!(
                "X-Original-To: {to}@mail.example.test\nDelivered-To: postern-md@mail.example.test\n"
            )),
            "message {seq}:\n{head}"
        );
        assert!(body == body_of(seq), "message {seq} cut or changed");
        found[seq] += 1;
    }
    assert_eq!(found, vec![1; SESSIONS * EACH], "each message once in new/");
    assert_eq!(
        std::fs::read_dir(home.join("Maildir/tmp")).unwrap().count(),
        0,
        "nothing left in tmp/"
    );
    assert_eq!(std::fs::read_dir(bad.join("Maildir")).unwrap().count(), 0);
}
