//! The admin's sequence with lookup tables, as root with the daemons running as
//! `mail_owner`: edit an access table and an aliases file in the configuration directory,
//! `postmap`, `newaliases`, `postfix start`, mail with swaks, edit again, `postfix reload`,
//! mail again. Before Postern wrote its indexes with Postfix's modes, root's `postmap` made
//! a 0600 root-owned index: every access-map check answered 451 and local mail stopped
//! after the first `newaliases`.
//!
//! Also: an index the daemons cannot read is a temporary failure named in the log (never an
//! empty table), and mail deferred because the alias table was missing is delivered once
//! the admin runs `newaliases` and `postfix flush`.

mod common;
use common::*;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const QMGR: &str = "pickup unix n - n 60 1 pickup\nqmgr unix n - n 300 1 qmgr\n\
                    local unix - n n - - local\n";

fn main_cf(d: &Path, extra: &str) -> String {
    let e = d.join("etc");
    format!(
        "compatibility_level = 3.7\nmyhostname = mail.example.test\nmydomain = example.test\n\
         myorigin = $myhostname\nmydestination = $myhostname, localhost\n\
         mynetworks = 127.0.0.0/8\ninet_protocols = ipv4\n\
         alias_maps = hash:{e}/aliases\nalias_database = hash:{e}/aliases\n\
         mail_spool_directory = {d}/mail\n\
         smtpd_recipient_restrictions = check_recipient_access hash:{e}/access, \
         permit_mynetworks, reject_unauth_destination\n{extra}",
        e = e.display(),
        d = d.display()
    )
}

/// `swaks` to one recipient: the whole transcript and the exit code (0: accepted,
/// 24: RCPT refused).
fn swaks(port: u16, to: &str) -> (String, i32) {
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--helo", "client.example", "--from", "sender@example.org"])
        .args(["--to", to, "--header", "Subject: maps test"])
        .args(["--body", "a line of body", "--timeout", "20"])
        .output()
        .expect("run swaks (Debian package swaks)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

fn admin_ok(d: &Daemon, script: &str) {
    let out = d.admin(script);
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `postfix reload`, then wait until the master has logged that it reloaded.
fn reload_and_wait(d: &Daemon) {
    let count = || d.log().matches("reload -- version").count();
    let n = count();
    d.reload();
    if poll(Duration::from_secs(20), || (count() > n).then_some(())).is_none() {
        panic!("no reload logged:\n{}", d.log());
    }
}

#[test]
fn root_postmap_newaliases_reload_and_mail() {
    if !is_root() {
        eprintln!("not root: skipped (the daemons must run as another user than postmap)");
        return;
    }
    let Some(_home) = mail_user("postern-ad") else {
        return;
    };
    let mut d = Daemon::new("", QMGR);
    let dir = d.path().to_path_buf();
    let conf = std::fs::read_to_string(d.config_dir().join("main.cf")).unwrap();
    std::fs::write(d.config_dir().join("main.cf"), conf + &main_cf(&dir, "")).unwrap();
    // The admin edits the tables; the aliases file under umask 077 (mode 0600), as a
    // root shell with a strict umask leaves a new file.
    admin_ok(
        &d,
        "umask 077; printf 'postmaster: root\\ninfo: postern-ad\\n' > aliases; \
         umask 022; printf 'blocked@mail.example.test REJECT Go away\\n' > access; \
         postmap access && newaliases",
    );
    let etc = d.config_dir();
    let owner = nix::unistd::User::from_name(&test_mail_owner())
        .unwrap()
        .unwrap();
    let access = std::fs::metadata(etc.join("access.postern.lmdb")).unwrap();
    assert_eq!(
        (access.mode() & 0o7777, access.uid(), access.gid()),
        (0o644, 0, 0),
        "Postfix's .db mode for a 0644 source owned by root"
    );
    let aliases = std::fs::metadata(etc.join("aliases.postern.lmdb")).unwrap();
    assert_eq!(
        (aliases.mode() & 0o7777, aliases.uid(), aliases.gid()),
        (0o640, 0, owner.gid.as_raw()),
        "a 0600 source: readable by mail_owner's group"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&etc)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("postern-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    d.start();
    let (t, rc) = swaks(d.port, "info@mail.example.test");
    assert_eq!(rc, 0, "{t}\n{}", d.log());
    let mbox = dir.join("mail/postern-ad");
    let m = wait_text(&mbox, "a line of body", Duration::from_secs(20));
    assert!(m.contains("Subject: maps test"), "{m}\n{}", d.log());
    let log = d.wait_log("orig_to=<info@mail.example.test>");
    assert!(
        log.contains(
            "to=<postern-ad@mail.example.test>, orig_to=<info@mail.example.test>, relay=local"
        ) && log.contains("status=sent (delivered to mailbox)"),
        "{log}"
    );
    let (t, rc) = swaks(d.port, "blocked@mail.example.test");
    assert_ne!(rc, 0, "{t}");
    assert!(
        t.contains(
            "<** 554 5.7.1 <blocked@mail.example.test>: Recipient address rejected: Go away"
        ),
        "{t}"
    );

    // Edit both tables, rebuild, reload: the new alias delivers, the new entry rejects.
    admin_ok(
        &d,
        "printf 'sales: postern-ad\\n' >> aliases; \
         printf 'info@mail.example.test REJECT closed for inventory\\n' >> access; \
         postmap access && newaliases && postfix reload",
    );
    let aliases2 = std::fs::metadata(etc.join("aliases.postern.lmdb")).unwrap();
    assert_eq!(
        (aliases2.mode() & 0o7777, aliases2.gid()),
        (0o640, owner.gid.as_raw()),
        "a rebuilt index keeps its mode and group"
    );
    let (t, rc) = swaks(d.port, "sales@mail.example.test");
    assert_eq!(rc, 0, "{t}\n{}", d.log());
    let m = wait_text(&mbox, "orig_to", Duration::from_secs(20));
    let _ = m;
    let log = d.wait_log("orig_to=<sales@mail.example.test>");
    assert!(
        log.contains("orig_to=<sales@mail.example.test>, relay=local"),
        "{log}"
    );
    let (t, _) = swaks(d.port, "info@mail.example.test");
    assert!(
        t.contains("<** 554 5.7.1 <info@mail.example.test>: Recipient address rejected: closed for inventory"),
        "{t}"
    );
    let log = d.log();
    for bad in [
        "Permission denied",
        "is unavailable",
        "lookup error",
        "error:",
    ] {
        assert!(!log.contains(bad), "{bad:?} in\n{log}");
    }
}

/// An index the daemons cannot read (the admin made it 0600 root-owned by hand) is a
/// temporary failure whose reason is in the log, and the next `postmap` (which keeps the
/// mode but gives mail_owner's group read access) ends it without a reload.
#[test]
fn unreadable_index_is_a_temporary_failure_with_its_reason() {
    if !is_root() {
        eprintln!("not root: skipped");
        return;
    }
    let mut d = Daemon::new("", "");
    let dir = d.path().to_path_buf();
    let conf = std::fs::read_to_string(d.config_dir().join("main.cf")).unwrap();
    std::fs::write(d.config_dir().join("main.cf"), conf + &main_cf(&dir, "")).unwrap();
    admin_ok(
        &d,
        "printf 'postmaster: root\\n' > aliases; printf 'blocked@mail.example.test REJECT\\n' > access; \
         postmap access && newaliases && chmod 600 access.postern.lmdb && chgrp root access.postern.lmdb",
    );
    d.start();
    let (t, _) = swaks(d.port, "postmaster@mail.example.test");
    assert!(
        t.contains("<** 451 4.3.5 <postmaster@mail.example.test>: Recipient address rejected: Server configuration error"),
        "{t}"
    );
    let idx = d.config_dir().join("access.postern.lmdb");
    let log = d.wait_log("lookup error for");
    let why = format!("open database {}: Permission denied", idx.display());
    assert!(log.contains(&format!("error: {why}")), "{log}");
    assert!(
        log.contains(&format!(
            "warning: hash:{}/access is unavailable. {why}",
            d.config_dir().display()
        )),
        "{log}"
    );
    admin_ok(&d, "postmap access");
    let m = std::fs::metadata(&idx).unwrap();
    assert_eq!(
        m.mode() & 0o7777,
        0o640,
        "mail_owner's group may read it now"
    );
    let (t, rc) = swaks(d.port, "postmaster@mail.example.test");
    assert_eq!(rc, 0, "{t}\n{}", d.log());
    // A change of mode alone is seen after `postfix reload`, which reads every table
    // again (as Postfix restarts its daemons).
    admin_ok(
        &d,
        "chmod 600 access.postern.lmdb && chgrp root access.postern.lmdb",
    );
    reload_and_wait(&d);
    let (t, _) = swaks(d.port, "postmaster@mail.example.test");
    assert!(t.contains("<** 451 4.3.5 "), "{t}");
    admin_ok(&d, "chmod 644 access.postern.lmdb");
    reload_and_wait(&d);
    let (t, rc) = swaks(d.port, "postmaster@mail.example.test");
    assert_eq!(rc, 0, "{t}\n{}", d.log());
}

/// A message deferred because `alias_maps` names a missing table is kept, and delivered
/// through the alias once the admin creates the table and flushes the queue.
#[test]
fn deferred_for_a_missing_alias_table_is_delivered_after_newaliases() {
    if !is_root() {
        eprintln!("not root: skipped");
        return;
    }
    let Some(_home) = mail_user("postern-ad") else {
        return;
    };
    let mut d = Daemon::new("", QMGR);
    let dir = d.path().to_path_buf();
    let conf = std::fs::read_to_string(d.config_dir().join("main.cf")).unwrap();
    std::fs::write(
        d.config_dir().join("main.cf"),
        conf + &main_cf(&dir, "local_recipient_maps =\n"),
    )
    .unwrap();
    admin_ok(&d, ": > access; postmap access");
    d.start();
    let (t, rc) = swaks(d.port, "info@mail.example.test");
    assert_eq!(rc, 0, "{t}");
    let log = d.wait_log("status=deferred");
    assert!(
        log.contains("to=<info@mail.example.test>, relay=local")
            && log.contains("dsn=4.3.0, status=deferred (alias database unavailable)"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "warning: hash:{}/aliases: lookup of 'info' failed",
            d.config_dir().display()
        )),
        "{log}"
    );
    assert!(!dir.join("mail/info").exists() && !dir.join("mail/postern-ad").exists());
    // The delivery agent logs `status=deferred` before the queue manager moves the file to
    // deferred/, and `postfix flush` only looks there: wait for the move.
    let in_deferred = || {
        walk(&dir.join("spool/deferred"))
            .iter()
            .any(|p| p.is_file())
    };
    let _ = poll(Duration::from_secs(30), || in_deferred().then_some(()));
    admin_ok(
        &d,
        "printf 'info: postern-ad\\n' > aliases && newaliases && postfix flush",
    );
    let m = wait_text(
        &dir.join("mail/postern-ad"),
        "a line of body",
        Duration::from_secs(20),
    );
    assert!(m.contains("Subject: maps test"), "{m}\n{}", d.log());
}

/// Every path under `dir`, depth first.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
