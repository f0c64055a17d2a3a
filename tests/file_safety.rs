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
