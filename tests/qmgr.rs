//! Queue manager notifications over a running instance: delay warnings
//! (`delay_warning_time`, Postfix's delay template, sent once) and failed bounces
//! (dropped by default; a "Postmaster Copy" to `2bounce_notice_recipient` with
//! `notify_classes = bounce`).

mod common;
use common::*;

use std::time::Duration;

const QMGR: &str = "qmgr      unix  n       -       n       300     1       qmgr\n";

fn main_cf(extra: &str) -> String {
    format!(
        "myhostname = mail.example.test\nmydomain = example.test\nmyorigin = $myhostname\n\
         mydestination = $myhostname, localhost\nmynetworks = 127.0.0.0/8\n\
         local_recipient_maps =\nalias_maps =\n\
         mail_spool_directory = $queue_directory/../mail\n{extra}"
    )
}

#[test]
fn delay_warning_is_sent_once_with_the_delay_template() {
    let Some(_) = mail_user("postern-qa") else {
        return;
    };
    // A relayhost that refuses connections keeps the remote recipient deferred.
    let inst = Instance::start_with(
        &main_cf(
            "relayhost = [127.0.0.1]:1\ndelay_warning_time = 1s\nminimal_backoff_time = 1s\n\
             maximal_backoff_time = 1s\nqueue_run_delay = 1s\n",
        ),
        QMGR,
        |d| std::fs::create_dir_all(d.join("mail")).unwrap(),
    );
    let id = smtp_send(
        inst.port,
        "postern-qa@mail.example.test",
        &["far@remote.example"],
        "Subject: slow\n\nbody\n",
    );
    let log = inst.wait_log(&format!("{id}: sender delay notification: "));
    let mbox = inst.dir.path().join("mail/postern-qa");
    let text = wait_for_text(&mbox, "Will-Retry-Until: ", Duration::from_secs(30));
    assert!(text.starts_with("From MAILER-DAEMON  "), "{text}");
    for want in [
        "\nSubject: Delayed Mail (still being retried)\nTo: postern-qa@mail.example.test\nAuto-Submitted: auto-replied\n",
        "\nThis is the mail system at host mail.example.test.\n\n\
         ####################################################################\n\
         # THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n\
         ####################################################################\n\n\
         Your message could not be delivered for more than 0 hour(s).\n\
         It will be retried until it is 5 day(s) old.\n",
        "\n<far@remote.example>: connect to 127.0.0.1[127.0.0.1]:1: Connection refused\n",
        "\nFinal-Recipient: rfc822; far@remote.example\nOriginal-Recipient: rfc822;far@remote.example\n\
         Action: delayed\nStatus: 4.4.1\n\
         Diagnostic-Code: X-Postfix; connect to 127.0.0.1[127.0.0.1]:1: Connection\n    refused\n\
         Will-Retry-Until: ",
        "\nContent-Description: Undelivered Message Headers\nContent-Type: text/rfc822-headers\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // Headers only: the body of the delayed message is not returned.
    assert!(!text.contains("\nbody\n"), "{text}");
    // Later attempts (every second) do not warn again.
    let attempt = format!("{id}: to=<far@remote.example>");
    let log2 = poll(Duration::from_secs(30), || {
        Some(inst.log()).filter(|l| l.matches(&attempt).count() >= 2)
    })
    .unwrap_or_else(|| inst.log());
    assert!(
        log2.matches(&format!("{id}: to=<far@remote.example>"))
            .count()
            >= 2,
        "{log2}"
    );
    assert_eq!(
        log2.matches(&format!("{id}: sender delay notification: "))
            .count(),
        1,
        "{log}"
    );
    // The message itself is still queued.
    let listing = String::from_utf8(
        postern("mailq", &["-C", &inst.config_dir().display().to_string()]).stdout,
    )
    .unwrap();
    assert!(listing.contains(&id), "{listing}");
}

#[test]
fn failed_bounce_is_dropped_by_default() {
    let Some(_) = mail_user("postern-qb") else {
        return;
    };
    let inst = Instance::start_with(&main_cf(""), QMGR, |d| {
        std::fs::create_dir_all(d.join("mail")).unwrap()
    });
    let id = smtp_send(
        inst.port,
        "",
        &["nosuch@mail.example.test"],
        "Subject: a bounce that fails\n\nbody\n",
    );
    let log = inst.wait_log(&format!("{id}: removed"));
    assert!(
        log.contains("status=bounced (unknown user: \"nosuch\")"),
        "{log}"
    );
    assert!(!log.contains("non-delivery notification"), "{log}");
}

#[test]
fn failed_bounce_goes_to_postmaster_with_notify_classes_bounce() {
    let Some(_) = mail_user("postern-qb") else {
        return;
    };
    let inst = Instance::start_with(
        &main_cf("notify_classes = bounce\n2bounce_notice_recipient = postern-qb\n"),
        QMGR,
        |d| std::fs::create_dir_all(d.join("mail")).unwrap(),
    );
    let id = smtp_send(
        inst.port,
        "",
        &["nosuch@mail.example.test"],
        "Subject: a bounce that fails\n\nsecret body\n",
    );
    let log = inst.wait_log(&format!("{id}: postmaster non-delivery notification: "));
    assert!(
        log.contains(&format!("{id}: removed"))
            || inst.wait_log(&format!("{id}: removed")).contains("removed")
    );
    let text = wait_for_text(
        &inst.dir.path().join("mail/postern-qb"),
        "Diagnostic-Code:",
        Duration::from_secs(30),
    );
    assert!(
        text.starts_with("From double-bounce@mail.example.test  "),
        "{text}"
    );
    for want in [
        "\nReturn-Path: <double-bounce@mail.example.test>\n",
        "\nSubject: Postmaster Copy: Undelivered Mail\nTo: postern-qb\nAuto-Submitted: auto-generated\n",
        "Content-Transfer-Encoding: 8bit\n\n\n<nosuch@mail.example.test>: unknown user: \"nosuch\"\n",
        "\nContent-Description: Undelivered Message Headers\n",
        "\nSubject: a bounce that fails\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("I'm sorry to have to inform you"), "{text}");
    assert!(!text.contains("secret body"), "{text}");
}

#[test]
fn sendmail_from_a_non_root_user_goes_through_setgid_postdrop() {
    use std::os::unix::fs::PermissionsExt;
    let Some(_) = mail_user("postern-qc") else {
        return;
    };
    // The group postdrop runs as (Postfix's setgid_group), private to this test.
    let _ = std::process::Command::new("groupadd")
        .args(["-f", "postern-pd"])
        .status();
    let Some(group) = nix::unistd::Group::from_name("postern-pd").ok().flatten() else {
        return;
    };
    let user = nix::unistd::User::from_name("postern-qc").unwrap().unwrap();
    let mut inst = Instance::start_with(
        &main_cf("setgid_group = postern-pd\ncommand_directory = $queue_directory/../bin\n"),
        QMGR,
        |d| {
            std::fs::create_dir_all(d.join("mail")).unwrap();
            // An installed postdrop: a set-group-ID copy of the binary.
            let bin = d.join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            let pd = bin.join("postdrop");
            std::fs::copy(BIN, &pd).unwrap();
        },
    );
    // After the instance's own chown of its tree (which would clear the set-group-ID bit).
    let pd = inst.dir.path().join("bin/postdrop");
    nix::unistd::chown(&pd, Some(nix::unistd::Uid::from_raw(0)), Some(group.gid)).unwrap();
    std::fs::set_permissions(&pd, std::fs::Permissions::from_mode(0o2755)).unwrap();
    // The user must reach the configuration and the queue, as on a real system.
    for p in [inst.dir.path().to_path_buf(), inst.config_dir()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let conf = inst.config_dir().display().to_string();
    let maildrop = inst.dir.path().join("spool/maildrop");
    let meta = std::fs::metadata(&maildrop).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::gid(&meta),
        group.gid.as_raw(),
        "maildrop/ belongs to setgid_group"
    );
    inst.kill9();
    let run_as_user = |args: &[&str], input: &[u8]| {
        use std::io::Write;
        let mut c = std::process::Command::new(BIN)
            .args(args)
            .become_user(user.uid.as_raw(), user.gid.as_raw())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input).unwrap();
        c.wait_with_output().unwrap()
    };
    // Without postdrop's group the user cannot write maildrop/ itself.
    assert!(
        nix::unistd::access(&maildrop, nix::unistd::AccessFlags::W_OK).is_ok(),
        "root can"
    );
    let out = run_as_user(
        &["sendmail", "-C", &conf, "-t", "-i"],
        b"To: postern-qa@mail.example.test\nSubject: from a user\n\nline\n.\nafter dot\n",
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(
            &std::process::Command::new("ls")
                .arg("-la")
                .arg(inst.dir.path())
                .arg(inst.dir.path().join("spool"))
                .arg(inst.dir.path().join("bin"))
                .output()
                .unwrap()
                .stdout
        )
    );
    // The queue file is the user's, its group postdrop's.
    let files: Vec<_> = std::fs::read_dir(&maildrop)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let m = files[0].metadata().unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&m), user.uid.as_raw());
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&m), group.gid.as_raw());
    // postdrop refuses what is not one complete queue file.
    let bad = run_as_user(&["postdrop", "-c", &conf], b"garbage\n");
    assert_eq!(bad.status.code(), Some(65), "{bad:?}");
    let bad = {
        use std::io::Write;
        let mut c = std::process::Command::new(&pd)
            .args(["-c", &conf])
            .become_user(user.uid.as_raw(), user.gid.as_raw())
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(b"garbage\n").unwrap();
        c.wait_with_output().unwrap()
    };
    assert_eq!(bad.status.code(), Some(65), "{bad:?}");
    // Started again, the mail system picks it up and delivers it.
    let _ = mail_user("postern-qa");
    inst.spawn();
    let log = inst.wait_log(&format!("uid={}", user.uid.as_raw()));
    assert!(log.contains("postfix/pickup["), "{log}");
    let text = wait_for_text(
        &inst.dir.path().join("mail/postern-qa"),
        "after dot",
        Duration::from_secs(30),
    );
    assert!(
        text.contains(&format!(
            "\nReceived: by mail.example.test (Postfix, from userid {})\n",
            user.uid.as_raw()
        )),
        "{text}"
    );
    assert!(text.contains("\nline\n.\nafter dot\n"), "{text}");
}

/// Run the child as `uid`/`gid` with no supplementary groups (`Command::groups` is
/// unstable, and std sets the uid before `pre_exec` runs, so all three are set here).
trait BecomeUser {
    fn become_user(&mut self, uid: u32, gid: u32) -> &mut Self;
}

impl BecomeUser for std::process::Command {
    fn become_user(&mut self, uid: u32, gid: u32) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: setgroups/setgid/setuid are async-signal-safe; nothing else runs in the
        // child between fork and exec.
        unsafe {
            self.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }
}

#[test]
fn sendmail_queue_files_carry_the_delay_warning_record() {
    let Some(_) = mail_user("postern-qa") else {
        return;
    };
    let mut inst = Instance::start_with(&main_cf("delay_warning_time = 4h\n"), QMGR, |d| {
        std::fs::create_dir_all(d.join("mail")).unwrap()
    });
    inst.kill9();
    let conf = inst.config_dir().display().to_string();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = {
        use std::io::Write;
        let mut c = std::process::Command::new(BIN)
            .args(["sendmail", "-C", &conf, "-t", "-i"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(b"To: postern-qa@mail.example.test\nSubject: w\n\nx\n")
            .unwrap();
        c.wait_with_output().unwrap()
    };
    assert!(out.status.success(), "{out:?}");
    let file = std::fs::read_dir(inst.dir.path().join("spool/maildrop"))
        .unwrap()
        .flatten()
        .find(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .expect("a queue file in maildrop/")
        .path();
    let (_, when) = postern::queue::file::warn_record(&file).expect("a W record");
    assert!(
        when >= before + 4 * 3600 && when <= before + 4 * 3600 + 60,
        "{when} vs {before}"
    );
}
