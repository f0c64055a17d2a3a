//! File safety (issue 17, item 6) against Postern started as admins start it, side by
//! side with the real Postfix 3.7.11 where it runs here (root, Debian's postfix).
//!
//! Config files and directories others may write, or that are not root's: postfix-script's
//! `check-warn` words (`postfix/postfix-script: warning: group or other writable: …`), from
//! `postfix check` on a terminal and in the log of `postfix start`.

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The `postfix/postfix-script: warning: …` lines of `text`, sorted (find's order is the
/// directory's).
fn script_warnings(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with("postfix/postfix-script: warning: "))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn writable_and_foreign_config_files_are_warned_as_postfix_check_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let owner = test_mail_owner();
    let port = free_port();
    for sub in ["etc", "spool", "data"] {
        std::fs::create_dir_all(d.join(sub)).expect("mkdir");
    }
    if is_root() {
        let st = Command::new("chown")
            .arg(&owner)
            .arg(d.join("data"))
            .status()
            .expect("chown");
        assert!(st.success());
    }
    let etc = d.join("etc");
    std::fs::write(
        etc.join("main.cf"),
        format!(
            "compatibility_level = 3.7\nqueue_directory = {d}/spool\ndata_directory = {d}/data\n\
             mail_owner = {owner}\nmaillog_file = {d}/maillog\nmaillog_file_prefixes = {d}\n\
             inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmyhostname = mail.example.test\n",
            d = d.display()
        ),
    )
    .expect("main.cf");
    std::fs::write(
        etc.join("master.cf"),
        format!("127.0.0.1:{port} inet n - n - - smtpd\npostlog unix-dgram n - n - 1 postlogd\n"),
    )
    .expect("master.cf");
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    mode(&etc, 0o755);
    mode(&etc.join("main.cf"), 0o646);
    mode(&etc.join("master.cf"), 0o664);
    std::fs::create_dir(etc.join("maps")).expect("mkdir");
    mode(&etc.join("maps"), 0o777);
    std::os::unix::fs::symlink("/etc/hosts", etc.join("hosts")).expect("symlink");
    if is_root() {
        let st = Command::new("chown")
            .arg("nobody")
            .arg(etc.join("maps"))
            .status()
            .expect("chown");
        assert!(st.success());
    }
    let e = etc.display();
    let mut want = vec![
        format!("postfix/postfix-script: warning: group or other writable: {e}/./main.cf"),
        format!("postfix/postfix-script: warning: group or other writable: {e}/./master.cf"),
        format!("postfix/postfix-script: warning: group or other writable: {e}/./maps"),
        format!("postfix/postfix-script: warning: symlink leaves directory: {e}/./hosts"),
    ];
    if is_root() {
        want.push(format!(
            "postfix/postfix-script: warning: not owned by root: {e}/./maps"
        ));
    }
    want.sort();

    // postfix check (Postern prints these whether or not stderr is a terminal).
    let out = Command::new(BIN)
        .args(["postfix", "-c"])
        .arg(&etc)
        .arg("check")
        .env("POSTERN_DOVECOT_CONFIG", "")
        .env_remove("MAIL_CONFIG")
        .output()
        .expect("postfix check");
    let ours = script_warnings(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(ours, want, "{}", String::from_utf8_lossy(&out.stderr));

    // The real postfix check on the same directory, under script(1): postfix(1) writes to
    // stderr only when it is a terminal.
    if RealPostfix::available() && have("script") {
        let real = Command::new("script")
            .arg("-qec")
            .arg(format!("postfix -c {e} check"))
            .arg("/dev/null")
            .env("LANG", "C")
            .env_remove("MAIL_CONFIG")
            .output()
            .expect("script");
        let theirs = script_warnings(&String::from_utf8_lossy(&real.stdout));
        assert_eq!(ours, theirs, "Postern's check ≠ the real postfix check");
        let _ = std::fs::remove_file(d.join("maillog"));
    }

    // postfix start logs them before it starts, as postfix-script does.
    let out = Command::new(BIN)
        .args(["postfix", "-c"])
        .arg(&etc)
        .arg("start")
        .env_remove("MAIL_CONFIG")
        .output()
        .expect("postfix start");
    assert!(out.status.success(), "{out:?}");
    let log = wait_text(
        &d.join("maillog"),
        "starting the Postfix mail system",
        Duration::from_secs(10),
    );
    let stop = Command::new(BIN)
        .args(["postfix", "-c"])
        .arg(&etc)
        .arg("stop")
        .env_remove("MAIL_CONFIG")
        .output()
        .expect("postfix stop");
    assert!(stop.status.success(), "{stop:?}");
    let mut logged: Vec<String> = log
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" postfix/postfix-script[")?;
            let (_, text) = rest.split_once("]: ")?;
            text.starts_with("warning: ")
                .then(|| format!("postfix/postfix-script: {text}"))
        })
        .collect();
    logged.sort();
    assert_eq!(logged, want, "{log}");
    let start = log
        .find("starting the Postfix mail system")
        .expect("start line");
    let last_warning = log
        .rfind("warning: group or other writable")
        .expect("warnings");
    assert!(
        last_warning < start,
        "warnings before the start line:\n{log}"
    );
}

/// A system user (created when missing, as root) whose home is `home`.
fn user_with_home(name: &str, home: &Path) -> (u32, u32) {
    let ids = user_ids(name);
    let st = Command::new("usermod")
        .arg("-d")
        .arg(home)
        .arg(name)
        .status()
        .expect("usermod");
    assert!(st.success(), "usermod -d {} {name}", home.display());
    ids
}

fn chown(p: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).expect("lchown");
}

/// The recorded lines of the real Postfix 3.7.11 for `case`
/// (compat-fixtures/file-safety/postfix-3.7.txt, scripts/regen-file-safety-fixtures).
fn recorded(case: &str) -> Vec<String> {
    let text =
        std::fs::read_to_string(repo_root().join("compat-fixtures/file-safety/postfix-3.7.txt"))
            .expect("fixture");
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{case}\t")))
        .map(str::to_string)
        .collect()
}

#[test]
fn another_users_file_in_a_forward_and_a_planted_spool_symlink_bounce_as_postfix() {
    // pst-fwd's .forward names pst-other's file; pst-eve plants a symlink for pst-sym in
    // the sticky, world-writable spool. Postfix 3.7.11 bounces both 5.2.0 with
    // safe_open()'s `cannot open file: Permission denied` (the kernel refuses: the
    // forwarding user may not write the file, protected_symlinks the planted link), and
    // both files stay untouched.
    if !is_root() {
        eprintln!("skipped: needs root (system users)");
        return;
    }
    let outside = tempfile::tempdir().expect("tempdir");
    let o = outside.path();
    std::fs::set_permissions(o, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let home = o.join("home");
    let fwd = user_with_home("pst-fwd", &home.join("pst-fwd"));
    let other = user_ids("pst-other");
    let eve = user_ids("pst-eve");
    user_ids("pst-sym");
    for (d, who) in [(home.join("pst-fwd"), fwd), (home.join("pst-other"), other)] {
        std::fs::create_dir_all(&d).expect("mkdir");
        chown(&d, who);
    }
    let file = home.join("pst-other/file");
    std::fs::write(&file, "precious\n").expect("file");
    chown(&file, other);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let forward = home.join("pst-fwd/.forward");
    std::fs::write(&forward, format!("{}\n", file.display())).expect(".forward");
    chown(&forward, fwd);
    let eve_file = o.join("eve-file");
    std::fs::write(&eve_file, "eve's\n").expect("eve");
    chown(&eve_file, eve);

    let main = "compatibility_level = 3.7\nmyhostname = mail.example.test\n\
                mydestination = $myhostname, localhost\nlocal_recipient_maps =\nalias_maps =\n\
                mail_spool_directory = $queue_directory/../mail\nbiff = no\n";
    let inst = Instance::start_with(
        main,
        "qmgr unix n - n 300 1 qmgr\npostlog unix-dgram n - n - 1 postlogd\n",
        |d| {
            std::fs::create_dir_all(d.join("mail")).expect("mkdir");
            std::fs::set_permissions(d.join("mail"), std::fs::Permissions::from_mode(0o1777))
                .expect("chmod");
        },
    );
    // Planted once the system runs (the instance's setup gives its tree to mail_owner).
    let spool = inst.dir.path().join("mail");
    std::os::unix::fs::symlink(&eve_file, spool.join("pst-sym")).expect("symlink");
    chown(&spool.join("pst-sym"), eve);

    let mut s = Smtp::connect(inst.port);
    s.line();
    assert!(s.cmd("EHLO client.example").concat().starts_with("250"));
    for to in ["pst-fwd@localhost", "pst-sym@localhost"] {
        assert!(s.cmd("MAIL FROM:<>").concat().starts_with("250"));
        assert!(
            s.cmd(&format!("RCPT TO:<{to}>"))
                .concat()
                .starts_with("250")
        );
        assert!(s.cmd("DATA").concat().starts_with("354"));
        let r = s
            .cmd(&format!("Subject: to {to}\r\n\r\nbody\r\n."))
            .concat();
        assert!(r.starts_with("250"), "{r}");
    }
    s.cmd("QUIT");
    let log = inst.wait_log_until(Duration::from_secs(60), |l| {
        l.contains("to=<pst-fwd@localhost>, relay=local")
            && l.contains("to=<pst-sym@localhost>, relay=local")
    });
    let status = |to: &str| -> String {
        log.lines()
            .find(|l| l.contains(&format!("to=<{to}>, relay=local")))
            .and_then(|l| l.split_once(" dsn=").map(|(_, r)| format!("dsn={r}")))
            .unwrap_or_default()
            .replace(&home.display().to_string(), "HOME")
            .replace(
                &inst.dir.path().join("spool/../mail").display().to_string(),
                "SPOOL",
            )
            .replace(&spool.display().to_string(), "SPOOL")
    };
    // local/file.c dotlocks the file as the forwarding user first: the lock file cannot
    // be created in the other user's directory, a warning before the bounce.
    let lock_warnings: Vec<String> = log
        .lines()
        .filter_map(|l| l.split_once(": warning: unable to create lock file "))
        .map(|(_, w)| {
            format!("warning: unable to create lock file {w}")
                .replace(&home.display().to_string(), "HOME")
        })
        .collect();
    let mut got_fwd = lock_warnings;
    got_fwd.push(status("pst-fwd@localhost"));
    assert_eq!(got_fwd, recorded("forward"), "{log}");
    assert_eq!(
        vec![status("pst-sym@localhost")],
        recorded("sticky-symlink"),
        "{log}"
    );
    assert_eq!(std::fs::read_to_string(&file).expect("file"), "precious\n");
    assert_eq!(std::fs::read_to_string(&eve_file).expect("eve"), "eve's\n");
}

/// One queue-file record: type, length (7 bits a byte, low first), data.
fn rec(out: &mut Vec<u8>, kind: u8, data: &[u8]) {
    out.push(kind);
    let mut n = data.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(data);
}

/// A complete queue file as a local user could hand it to postdrop, with forged records:
/// client and SASL attributes, `rewrite_context=remote`, a recipient already marked done.
fn forged_queue_file(to: &str, done: &str) -> Vec<u8> {
    let mut head = Vec::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    rec(&mut head, b'T', format!("{now} 0").as_bytes());
    rec(&mut head, b'A', b"rewrite_context=remote");
    rec(&mut head, b'A', b"client_address=192.0.2.66");
    rec(&mut head, b'A', b"client_name=trusted.example.com");
    rec(&mut head, b'A', b"sasl_username=admin");
    rec(&mut head, b'S', b"ceo@example.com");
    rec(&mut head, b'R', to.as_bytes());
    rec(&mut head, b'D', done.as_bytes());
    rec(&mut head, b'M', b"");
    let mut body = Vec::new();
    for l in ["Subject: forged", "", "forged body"] {
        rec(&mut body, b'N', l.as_bytes());
    }
    let mut tail = Vec::new();
    rec(&mut tail, b'X', b"");
    rec(&mut tail, b'E', b"");
    // The size record first (fixed width, as Postfix's cleanup writes it): message
    // segment size, data offset, recipients, qmgr options, content length, SMTPUTF8.
    let size_len = 2 + 6 * 15 + 5;
    let data_offset = size_len + head.len();
    let fields = [body.len(), data_offset, 1, 0, body.len(), 0];
    let size: Vec<String> = fields.iter().map(|f| format!("{f:15}")).collect();
    let mut out = Vec::new();
    rec(&mut out, b'C', size.join(" ").as_bytes());
    assert_eq!(out.len(), size_len);
    out.extend(head);
    out.extend(body);
    out.extend(tail);
    out
}

#[test]
fn a_queue_file_planted_in_maildrop_loses_its_forged_records_as_with_postfix_pickup() {
    // Postfix 3.7.11's pickup, given such a file in maildrop/ (owned by the user, mode
    // 0744), queued the message with none of the forged attributes (its Received header
    // says `from userid N`), without the done recipient, and logged nothing about them.
    // Postern's pickup copied the file as it was.
    if !is_root() {
        eprintln!("skipped: needs root (system users)");
        return;
    }
    let eve = user_ids("pst-eve");
    user_ids("pst-other");
    user_ids("pst-sym");
    let main = "compatibility_level = 3.7\nmyhostname = mail.example.test\n\
                mydestination = $myhostname, localhost\nlocal_recipient_maps =\nalias_maps =\n\
                mail_spool_directory = $queue_directory/../mail\nbiff = no\n\
                smtp_connect_timeout = 1s\n";
    let inst = Instance::start_with(
        main,
        "qmgr unix n - n 300 1 qmgr\nsmtp unix - - n - - smtp\npostlog unix-dgram n - n - 1 postlogd\n",
        |d| {
            std::fs::create_dir_all(d.join("mail")).expect("mkdir");
            std::fs::set_permissions(d.join("mail"), std::fs::Permissions::from_mode(0o1777))
                .expect("chmod");
        },
    );
    let spool = inst.dir.path().join("spool");
    // One message to a local mailbox, one to an unreachable host (it stays queued, so
    // that its queue file can be read).
    for (id, to) in [
        ("1A2B3C4D5E", "pst-other@localhost"),
        ("1A2B3C4D5F", "nobody@[192.0.2.1]"),
    ] {
        let tmp = spool.join("maildrop").join(format!("{id}.tmp"));
        std::fs::write(&tmp, forged_queue_file(to, "pst-sym@localhost")).expect("plant");
        chown(&tmp, eve);
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o744)).expect("chmod");
        std::fs::rename(&tmp, spool.join("maildrop").join(id)).expect("rename");
    }
    // Wake the pickup role as postdrop does (one byte into public/qmgr; anyone may write it).
    let woken = std::fs::OpenOptions::new()
        .write(true)
        .open(spool.join("public/qmgr"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"W"));
    assert!(woken.is_ok(), "{woken:?}");
    let log = inst.wait_log_until(Duration::from_secs(60), |l| {
        l.contains("to=<pst-other@localhost>") && l.contains("to=<nobody@[192.0.2.1]>")
    });
    assert!(
        log.contains("postfix/pickup[")
            && log.contains(&format!("1A2B3C4D5E: uid={} from=<ceo@example.com>", eve.0)),
        "{log}"
    );
    assert!(
        !log.contains("pst-sym"),
        "the done recipient was delivered:\n{log}"
    );
    let mbox = std::fs::read_to_string(inst.dir.path().join("mail/pst-other")).expect("mbox");
    assert!(mbox.contains("forged body"), "{mbox}");
    assert!(!inst.dir.path().join("mail/pst-sym").exists());
    // The queued copy of the other one.
    let out = Command::new("find")
        .arg(spool.join("deferred"))
        .arg(spool.join("active"))
        .args(["-type", "f", "-name", "1A2B3C4D5F"])
        .output()
        .expect("find");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!path.is_empty(), "1A2B3C4D5F not queued:\n{log}");
    let queued = std::fs::read(&path).expect("queue file");
    let text = String::from_utf8_lossy(&queued);
    for forged in [
        "client_address=",
        "client_name=",
        "sasl_username=",
        "rewrite_context=remote",
        "pst-sym",
    ] {
        assert!(!text.contains(forged), "{forged} kept: {text:?}");
    }
    assert!(
        text.contains("rewrite_context=local") && text.contains("forged body"),
        "{text:?}"
    );
}
