//! Dovecot's auth client protocol served by Postern ([`postern::auth::dovecot_proto`]),
//! with the real Postfix 3.7 as the client: a private `postfix -c DIR start-fg` with
//! `smtpd_sasl_type = dovecot` and `smtpd_sasl_path` pointing at Postern's socket, and
//! swaks doing SMTP AUTH PLAIN and LOGIN with right and wrong passwords. Needs root, the
//! `postfix` package (and its `postfix` user) and swaks; skips otherwise.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::*;

use postern::auth::dovecot::DovecotAuth;
use postern::auth::dovecot_proto;
use postern::config::dovecot::DovecotConf;

fn swaks(port: u16, mech: &str, user: &str, pw: &str) -> String {
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--auth", mech, "--auth-user", user, "--auth-password", pw])
        .args(["--quit-after", "AUTH", "--timeout", "20"])
        .output()
        .expect("swaks");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn real_postfix_authenticates_through_posterns_auth_socket() {
    let root = nix::unistd::geteuid().is_root();
    if !root
        || !have("postfix")
        || !have("swaks")
        || nix::unistd::User::from_name("postfix")
            .ok()
            .flatten()
            .is_none()
    {
        eprintln!("skipped: needs root, postfix and swaks");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let users = dir.join("users");
    let sha = postern::auth::crypt::hash(b"Crypt-pw", "$6$").expect("hash");
    std::fs::write(
        &users,
        format!("alice:{{PLAIN}}secret:1000:1000::/home/alice::\nbob:{{SHA512-CRYPT}}{sha}:1001:1001::/home/bob::\n"),
    )
    .expect("users");
    let conf = DovecotConf::from_str(
        &format!(
            "auth_mechanisms = plain login\npassdb {{\n  driver = passwd-file\n  args = {}\n}}\n",
            users.display()
        ),
        Path::new("dovecot.conf"),
    )
    .expect("conf");
    let mut auth = DovecotAuth::from_conf(&conf).expect("auth");
    auth.failure_delay = Duration::from_millis(100);
    let auth = Arc::new(auth);
    let socket = dir.join("auth-socket");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(async { dovecot_proto::bind(&socket, 0o666) })
        .expect("bind");
    rt.spawn(dovecot_proto::serve(listener, auth));

    // A private Postfix whose smtpd asks Postern's socket.
    let pf = RealPostfix::start_fg(
        dir,
        &format!(
            "myhostname = postern-test.example\n\
             smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = {s}\n\
             smtpd_tls_security_level = none\nsmtpd_relay_restrictions = permit_sasl_authenticated, reject\n",
            s = socket.display()
        ),
        |_| {},
    );
    let port = pf.port;

    let out = swaks(port, "PLAIN", "alice", "secret");
    assert!(out.contains("250-AUTH PLAIN LOGIN"), "{out}");
    assert!(
        out.contains("<-  235 2.7.0 Authentication successful"),
        "{out}"
    );
    let out = swaks(port, "LOGIN", "bob", "Crypt-pw");
    assert!(
        out.contains("<-  235 2.7.0 Authentication successful"),
        "{out}"
    );
    let out = swaks(port, "PLAIN", "alice", "wrong");
    assert!(
        out.contains("<** 535 5.7.8 Error: authentication failed:"),
        "{out}"
    );
    let out = swaks(port, "LOGIN", "nobody", "x");
    assert!(
        out.contains("<** 535 5.7.8 Error: authentication failed:"),
        "{out}"
    );
    let log = std::fs::read_to_string(dir.join("maillog")).unwrap_or_default();
    assert!(log.contains("SASL PLAIN authentication failed"), "{log}");
    assert!(
        !log.contains("secret") && !log.contains("Crypt-pw"),
        "no password in the log"
    );
}

fn dovecot_conf(dir: &Path, auth_service: &str) -> std::path::PathBuf {
    let d = dir.display();
    std::fs::write(dir.join("users"), "alice:{PLAIN}secret::::::\n").expect("users");
    let conf = dir.join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            "protocols = pop3\nbase_dir = {d}/run\nlog_path = {d}/dovecot.log\nlisten = 127.0.0.1\n\
             ssl = no\nauth_mechanisms = plain login\nauth_failure_delay = 0\n\
             passdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
             service pop3-login {{\n  inet_listener pop3 {{\n    port = 0\n  }}\n  inet_listener pop3s {{\n    port = 0\n  }}\n}}\n\
             {auth_service}"
        ),
    )
    .expect("conf");
    conf
}

/// `service auth { unix_listener PATH { mode user group } }`: `postern dovecot` creates the
/// socket with that mode and owner and answers Dovecot's auth client protocol on it from
/// the passdbs (what Postfix's `smtpd_sasl_type = dovecot` connects to).
#[test]
fn posterns_dovecot_serves_its_auth_client_socket() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let sock = dir.join("auth-postfix");
    let root = nix::unistd::geteuid().is_root();
    let owner = if root
        && nix::unistd::User::from_name("postfix")
            .ok()
            .flatten()
            .is_some()
    {
        "    user = postfix\n"
    } else {
        ""
    };
    let conf = dovecot_conf(
        dir,
        &format!(
            "service auth {{\n  unix_listener {} {{\n    mode = 0660\n{owner}  }}\n}}\n",
            sock.display()
        ),
    );
    let _d = Dovecot::start(Which::Postern, &conf, 0, &dir.join("dovecot.log"));
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&sock).expect("the socket is there once dovecot returns");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    if !owner.is_empty() {
        let pf = nix::unistd::User::from_name("postfix")
            .ok()
            .flatten()
            .expect("postfix");
        assert_eq!(meta.uid(), pf.uid.as_raw());
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut c = dovecot_proto::Client::connect(&sock)
            .await
            .expect("connect");
        assert!(
            c.mechanisms.iter().any(|m| m == "PLAIN"),
            "{:?}",
            c.mechanisms
        );
        assert!(
            c.mechanisms.iter().any(|m| m == "LOGIN"),
            "{:?}",
            c.mechanisms
        );
        let ok = c
            .auth_plain("smtp", "alice", "secret", &[])
            .await
            .expect("auth");
        assert!(
            matches!(ok, dovecot_proto::ClientReply::Ok { .. }),
            "{ok:?}"
        );
        let bad = c
            .auth_plain("smtp", "alice", "wrong", &[])
            .await
            .expect("auth");
        assert!(
            matches!(bad, dovecot_proto::ClientReply::Fail { temp: false, .. }),
            "{bad:?}"
        );
    });
}

/// A socket in a directory that does not exist, and an owner that does not exist: Dovecot
/// 2.3.19's messages and status 89, nothing left running.
#[test]
fn posterns_dovecot_auth_socket_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let missing = dir.join("nodir/auth");
    let conf = dovecot_conf(
        dir,
        &format!(
            "service auth {{\n  unix_listener {} {{\n    mode = 0660\n  }}\n}}\n",
            missing.display()
        ),
    );
    let out = Dovecot::command(Which::Postern)
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("dovecot");
    assert_eq!(out.status.code(), Some(89));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "Error: bind({}) failed: No such file or directory\nFatal: Failed to start listeners\n",
            missing.display()
        )
    );
    assert!(!dir.join("run/master.pid").exists());
    let sock = dir.join("auth");
    let conf = dovecot_conf(
        dir,
        &format!(
            "service auth {{\n  unix_listener {} {{\n    user = postern-no-such-user\n  }}\n}}\n",
            sock.display()
        ),
    );
    let out = Dovecot::command(Which::Postern)
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("dovecot");
    assert_eq!(out.status.code(), Some(89));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "Fatal: service(auth) User doesn't exist: postern-no-such-user (See service auth {{ unix_listener {} {{ user }} }} setting)\n",
            sock.display()
        )
    );
    assert!(!sock.exists());
}
