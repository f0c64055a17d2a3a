//! The programs admins read Postfix logs with read Postern's as Postfix's: Debian's
//! `pflogsumm` (with `--syslog-name` for a `syslog_name = postfix-anchor` box) counts what
//! was received, delivered and rejected, and fail2ban's stock `postfix` filter (modes
//! `normal` and `auth`) finds the relay rejection and the failed SASL login. Skipped where
//! the packages (pflogsumm, fail2ban) are not installed.

mod common;
use common::*;

use std::process::Command;

fn smtp_python(port: u16, script: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script.replace("PORT", &port.to_string()))
        .output()
        .expect("python3");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn pflogsumm_and_fail2ban_read_posterns_log() {
    if !have("pflogsumm") || !have("fail2ban-regex") || !have("python3") {
        eprintln!("skipped: needs pflogsumm, fail2ban-regex (Debian pflogsumm, fail2ban)");
        return;
    }
    let Some(_home) = mail_user("postern-lr") else {
        return;
    };
    let sock = tempfile::tempdir().unwrap();
    let _ = Command::new("chmod")
        .args(["755", sock.path().to_str().unwrap()])
        .status();
    let _sasl = Saslauthd::shadow(&[BIN, "saslauthd"], sock.path());
    let mux = sock.path().join("mux");
    let inst = Instance::start_with(
        "myhostname = mail.example.com\nmydestination = $myhostname\nmynetworks = 127.0.0.2/32\n\
             local_recipient_maps =\nalias_maps =\nsyslog_name = postfix-anchor\n\
             mail_spool_directory = $queue_directory/../mail\n\
             smtpd_sasl_auth_enable = yes\n\
             smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination\n",
        "qmgr      unix  n       -       n       300     1       qmgr\n",
        |d| {
            std::fs::create_dir_all(d.join("mail")).unwrap();
            std::fs::create_dir_all(d.join("sasl")).unwrap();
            std::fs::write(
                d.join("sasl/smtpd.conf"),
                format!(
                    "pwcheck_method: saslauthd\nmech_list: plain login\nsaslauthd_path: {}\n",
                    mux.display()
                ),
            )
            .unwrap();
        },
    );
    // One message delivered, one relay attempt rejected, one failed SASL login.
    let out = smtp_python(
        inst.port,
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', PORT, timeout=20)
s.ehlo('client.example.org')
print(s.sendmail('a@example.org', ['postern-lr@mail.example.com'], 'Subject: t\r\nMessage-ID: <lr.1@example.org>\r\n\r\nbody\r\n'))
try:
    s.sendmail('a@example.org', ['friend@example.net'], 'Subject: relay\r\n\r\nx\r\n')
except smtplib.SMTPRecipientsRefused as e:
    print('refused', e)
s.quit()
s = smtplib.SMTP('127.0.0.1', PORT, timeout=20)
s.ehlo('client.example.org')
try:
    s.login('nosuchuser-lr', 'wrong-password')
except smtplib.SMTPAuthenticationError as e:
    print('auth', e.smtp_code)
s.quit()
"#,
    );
    assert!(out.contains("refused"), "{out}");
    assert!(out.contains("auth 535"), "{out}");
    inst.wait_log("status=sent");
    let log = inst.wait_log("authentication failed");
    let log_path = inst.log_path();

    // pflogsumm, told the syslog name, as an admin of such a box runs it.
    let o = Command::new("pflogsumm")
        .args(["--syslog-name=postfix-anchor", "-e"])
        .arg(&log_path)
        .output()
        .expect("pflogsumm");
    let report = String::from_utf8_lossy(&o.stdout).into_owned();
    let count = |what: &str| -> Option<u64> {
        report.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            let n = w.next()?;
            let rest: Vec<&str> = w.collect();
            (rest.join(" ") == what).then(|| n.parse().ok())?
        })
    };
    assert_eq!(count("received"), Some(1), "{report}\n{log}");
    assert_eq!(count("delivered"), Some(1), "{report}\n{log}");
    assert_eq!(count("rejected (50%)"), Some(1), "{report}\n{log}");
    assert!(report.contains("Relay access denied"), "{report}\n{log}");

    // fail2ban's stock filter, both modes (smtplib tries PLAIN, then LOGIN: two failures).
    for (mode, want) in [("normal", 1), ("auth", 2)] {
        let o = Command::new("fail2ban-regex")
            .arg(&log_path)
            .arg(format!("/etc/fail2ban/filter.d/postfix.conf[mode={mode}]"))
            .output()
            .expect("fail2ban-regex");
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let matched = text
            .lines()
            .find(|l| l.starts_with("Lines:"))
            .and_then(|l| l.split(',').find(|p| p.ends_with(" matched")))
            .and_then(|m| m.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok());
        assert_eq!(matched, Some(want), "mode={mode}\n{text}\n{log}");
    }
}
