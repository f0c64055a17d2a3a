//! SMTP AUTH end to end: Postern's smtpd against the real Cyrus `saslauthd -a shadow`
//! (Debian's sasl2-bin) and against Postern's own saslauthd, with swaks; the AUTH lines
//! with and without `broken_sasl_auth_clients`; `noplaintext` before and after STARTTLS.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn main_cf(mux: &Path, extra: &str) -> String {
    format!(
        "myhostname = mail.example.com\nmydestination = $myhostname\nmynetworks = 127.0.0.1/32\n\
         local_recipient_maps =\nsmtpd_sasl_auth_enable = yes\nbroken_sasl_auth_clients = yes\n\
         smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination\n\
         {extra}\n# saslauthd: {}\n",
        mux.display()
    )
}

fn write_sasl(dir: &Path, mux: &Path) {
    std::fs::create_dir_all(dir.join("sasl")).unwrap();
    std::fs::write(
        dir.join("sasl/smtpd.conf"),
        format!(
            "pwcheck_method: saslauthd\nmech_list: plain login\nsaslauthd_path: {}\n",
            mux.display()
        ),
    )
    .unwrap();
}

fn swaks(port: u16, mech: &str, user: &str, pw: &str) -> String {
    let out = Command::new("swaks")
        .args([
            "--server",
            &format!("127.0.0.1:{port}"),
            "--from",
            "roamer@example.org",
            "--to",
            "friend@example.net",
            "--auth",
            mech,
            "--auth-user",
            user,
            "--auth-password",
            pw,
            "--quit-after",
            "RCPT",
        ])
        .output()
        .expect("swaks");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn run_against(saslauthd: &[&str], user: &str) {
    let sock = tempfile::tempdir().unwrap();
    let _ = Command::new("chmod")
        .args(["755", sock.path().to_str().unwrap()])
        .status();
    let _d = Saslauthd::shadow(saslauthd, sock.path());
    let mux = sock.path().join("mux");
    let inst = Instance::start_with(&main_cf(&mux, ""), "", |d| write_sasl(d, &mux));
    for mech in ["PLAIN", "LOGIN"] {
        let ok = swaks(inst.port, mech, user, "S3cret-pw");
        assert!(
            ok.contains("<-  235 2.7.0 Authentication successful"),
            "{mech}: {ok}"
        );
        assert!(
            ok.contains("<-  250 2.1.5 Ok"),
            "relay after AUTH {mech}: {ok}"
        );
        let bad = swaks(inst.port, mech, user, "wrong");
        assert!(
            bad.contains("<** 535 5.7.8 Error: authentication failed: authentication failure"),
            "{mech}: {bad}"
        );
    }
    let log = inst.wait_log("SASL LOGIN authentication failed");
    assert!(
        log.contains("warning: localhost[127.0.0.1]: SASL PLAIN authentication failed: authentication failure"),
        "{log}"
    );
    assert!(
        !log.contains("S3cret-pw") && !log.contains("wrong"),
        "password in log"
    );
}

#[test]
fn smtpd_against_the_real_cyrus_saslauthd() {
    if !have("saslauthd") || !have("swaks") {
        panic!("needs sasl2-bin and swaks (installed by .ci/run)");
    }
    let Some(u) = TestUser::create("pstsmtpa", "S3cret-pw", "YESCRYPT") else {
        eprintln!("skipped: needs root to create a system user");
        return;
    };
    run_against(&["/usr/sbin/saslauthd"], &u.0);
}

#[test]
fn smtpd_against_posterns_saslauthd() {
    let Some(u) = TestUser::create("pstsmtpb", "S3cret-pw", "SHA512") else {
        eprintln!("skipped: needs root to create a system user");
        return;
    };
    run_against(&[BIN, "saslauthd"], &u.0);
}

#[test]
fn auth_lines_and_noplaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let mux = tmp.path().join("mux");
    // Without broken_sasl_auth_clients: no AUTH= line.
    let inst = Instance::start_with(
        &main_cf(&mux, "").replace("broken_sasl_auth_clients = yes\n", ""),
        "",
        |d| write_sasl(d, &mux),
    );
    let mut c = Smtp::connect(inst.port);
    c.line();
    let e = c.cmd("EHLO x");
    assert!(e.contains(&"250-AUTH PLAIN LOGIN".to_string()), "{e:?}");
    assert!(!e.iter().any(|l| l.starts_with("250-AUTH=")), "{e:?}");
    drop(inst);
    // noplaintext: PLAIN and LOGIN hidden before TLS, offered after STARTTLS
    // (smtpd_sasl_tls_security_options allows them).
    let ck = rcgen::generate_simple_self_signed(vec!["mail.example.com".to_string()]).unwrap();
    let cert = tmp.path().join("cert.pem");
    let key = tmp.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let _ = Command::new("chmod")
        .args(["-R", "755", tmp.path().to_str().unwrap()])
        .status();
    let _ = Command::new("chmod")
        .args(["644", key.to_str().unwrap()])
        .status();
    let inst = Instance::start_with(
        &main_cf(
            &mux,
            &format!(
                "smtpd_sasl_security_options = noanonymous, noplaintext\n\
                 smtpd_sasl_tls_security_options = noanonymous\n\
                 smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n",
                cert.display(),
                key.display()
            ),
        ),
        "",
        |d| write_sasl(d, &mux),
    );
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
s.ehlo('x')
print('before', s.esmtp_features.get('auth'))
s.starttls(context=ctx)
s.ehlo('x')
print('after', s.esmtp_features.get('auth'))
s.quit()
"#,
        port = inst.port
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("before None"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("after  PLAIN LOGIN") || text.contains("after PLAIN LOGIN"),
        "{text}"
    );
}

/// The SASL-relevant warnings of a mail log, in order, without the prefix up to the pid.
fn sasl_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("SASL"))
        .filter_map(|l| l.split_once("]: ").map(|(_, t)| t.to_string()))
        .collect()
}

/// The real Postfix 3.7 with Debian's libsasl2 on the same SASL config: its replies and
/// SASL lines (Debian's Postfix reads `$config_directory/sasl/smtpd.conf`).
fn real_postfix_sasl(dir: &Path, mux: &Path, tries: &[(&str, &str)]) -> (Vec<String>, Vec<String>) {
    let pf = RealPostfix::start_fg(
        dir,
        "myhostname = mail.example.com\nalias_maps =\nlocal_recipient_maps =\n\
         smtpd_sasl_auth_enable = yes\nsmtpd_tls_security_level = none\n\
         smtpd_relay_restrictions = permit_sasl_authenticated, reject\n",
        |conf| write_sasl(conf, mux),
    );
    let replies = tries
        .iter()
        .map(|(mech, user)| {
            swaks(pf.port, mech, user, "x")
                .lines()
                .find(|l| l.starts_with("<** "))
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    // Stopped, so that the log is whole.
    let log_path = pf.log.clone();
    drop(pf);
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    (replies, sasl_lines(&log))
}

/// saslauthd's socket out of smtpd's reach (Debian's `/var/run/saslauthd` is root:sasl
/// 0710 and smtpd runs as postfix; or no saslauthd at all): libsasl's words in the log,
/// as the real Postfix logs them, then Postern's line naming the socket and why; `454`
/// to the client.
#[test]
fn saslauthd_out_of_reach_is_logged() {
    if !nix::unistd::geteuid().is_root() || !have("swaks") {
        eprintln!("skipped: needs root (smtpd as the mail owner) and swaks");
        return;
    }
    let sock = tempfile::tempdir().unwrap();
    let locked = sock.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    let _d = Saslauthd::shadow(&[BIN, "saslauthd"], &locked);
    // As Debian's: root-owned, 0710, and the mail owner not in the group.
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o710)).unwrap();
    let _ = Command::new("chmod")
        .args(["755", sock.path().to_str().unwrap()])
        .status();
    let mux = locked.join("mux");
    let inst = Instance::start_with(&main_cf(&mux, ""), "", |d| write_sasl(d, &mux));
    let out = swaks(inst.port, "PLAIN", "alice", "x");
    assert!(
        out.contains("<** 454 4.7.0 Temporary authentication failure: generic failure"),
        "{out}"
    );
    let log = inst.wait_log("SASL PLAIN authentication failed");
    let owner = test_mail_owner();
    let ours = sasl_lines(&log);
    let want = vec![
        "warning: SASL authentication failure: cannot connect to saslauthd server: Permission denied".to_string(),
        format!(
            "warning: SASL authentication failure: saslauthd socket {}: Permission denied ({} is root:root mode 0710; smtpd runs as {owner}: add {owner} to group root, as Debian's saslauthd expects)",
            mux.display(),
            locked.display()
        ),
        "warning: SASL authentication failure: Password verification failed".to_string(),
        "warning: localhost[127.0.0.1]: SASL PLAIN authentication failed: generic failure, sasl_username=alice".to_string(),
    ];
    assert_eq!(ours, want, "{log}");

    // No saslauthd behind the path: LOGIN (no plugin line).
    let gone = sock.path().join("gone/mux");
    let inst2 = Instance::start_with(&main_cf(&gone, ""), "", |d| write_sasl(d, &gone));
    let out = swaks(inst2.port, "LOGIN", "alice", "x");
    assert!(
        out.contains("<** 454 4.7.0 Temporary authentication failure: generic failure"),
        "{out}"
    );
    let log2 = inst2.wait_log("SASL LOGIN authentication failed");
    let ours2 = sasl_lines(&log2);
    assert_eq!(
        ours2[0],
        "warning: SASL authentication failure: cannot connect to saslauthd server: No such file or directory"
    );
    assert!(ours2[1].starts_with(&format!(
        "warning: SASL authentication failure: saslauthd socket {}: No such file or directory (is saslauthd running",
        gone.display()
    )));
    assert_eq!(
        ours2[2],
        "warning: localhost[127.0.0.1]: SASL LOGIN authentication failed: generic failure, sasl_username=alice"
    );
    assert_eq!(ours2.len(), 3, "{log2}");

    // The real Postfix on the same sockets: the same lines but Postern's own.
    if have("postfix")
        && nix::unistd::User::from_name("postfix")
            .ok()
            .flatten()
            .is_some()
    {
        let pf = tempfile::tempdir().unwrap();
        let _ = Command::new("chmod")
            .args(["755", pf.path().to_str().unwrap()])
            .status();
        let (replies, lines) = real_postfix_sasl(pf.path(), &mux, &[("PLAIN", "alice")]);
        assert_eq!(
            replies,
            vec!["<** 454 4.7.0 Temporary authentication failure: generic failure"]
        );
        let mut want_real = want.clone();
        want_real.remove(1);
        assert_eq!(lines, want_real);
        let pf2 = tempfile::tempdir().unwrap();
        let _ = Command::new("chmod")
            .args(["755", pf2.path().to_str().unwrap()])
            .status();
        let (_, lines) = real_postfix_sasl(pf2.path(), &gone, &[("LOGIN", "alice")]);
        assert_eq!(lines, vec![ours2[0].clone(), ours2[2].clone()]);
    }
}
