//! Queue manager notifications over a running instance: delay warnings
//! (`delay_warning_time`, Postfix's delay template, sent once) and failed bounces
//! (dropped by default; a "Postmaster Copy" to `2bounce_notice_recipient` with
//! `notify_classes = bounce`).

mod common;
use common::*;

use std::path::Path;
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

fn wait_for(p: &Path, needle: &str) -> String {
    for _ in 0..600 {
        if let Ok(b) = std::fs::read(p) {
            let s = String::from_utf8_lossy(&b).into_owned();
            if s.contains(needle) {
                return s;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{} did not get {needle:?}: {}",
        p.display(),
        String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default())
    );
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
    let text = wait_for(&mbox, "Will-Retry-Until: ");
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
    let _ = inst.wait_log(&format!("{id}: to=<far@remote.example>"));
    std::thread::sleep(Duration::from_secs(3));
    let log2 = inst.log();
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
    let text = wait_for(&inst.dir.path().join("mail/postern-qb"), "Diagnostic-Code:");
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
