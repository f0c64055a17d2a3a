//! Help, usage and version texts, side by side with the real programs where they have one:
//! `sendmail` with an option Postfix's sendmail does not know (Postfix 3.7.11's words and
//! exit 75), `doveconf --help` (Dovecot 2.3.19's), and what Postern says about itself
//! (`postern --help` with a line per command, `postern --version`, `postern_version`).

mod common;
use common::*;
use std::process::Command;

fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> (String, String, Option<i32>) {
    let mut c = Command::new(bin);
    c.args(args)
        .env("LANG", "C")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("run");
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        o.status.code(),
    )
}

#[test]
fn sendmail_unknown_options_as_postfix() {
    let real = "/usr/sbin/sendmail";
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("main.cf"),
        "myhostname = h.example\ncompatibility_level = 3.7\n",
    )
    .unwrap();
    std::fs::write(d.path().join("master.cf"), "").unwrap();
    let dir = d.path().to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["--help"],
        &["-Z"],
        &["-h"],
        &["-t", "-Z", "x"],
        &["-i", "-q30m", "-Y"],
    ];
    let pbin = BIN;
    for args in cases {
        let mut pargs = vec!["sendmail"];
        pargs.extend_from_slice(args);
        let ours = run(pbin, &pargs, &[("MAIL_CONFIG", dir)]);
        assert_eq!(ours.2, Some(75), "{args:?}: {}", ours.1);
        assert!(
            ours.1
                .ends_with("sendmail: fatal: usage: sendmail [options]\n"),
            "{args:?}: {}",
            ours.1
        );
        if std::path::Path::new(real).exists() {
            let theirs = run(real, args, &[("MAIL_CONFIG", dir)]);
            assert_eq!(ours, theirs, "{args:?}");
        }
    }
    // Without a readable main.cf the word comes once, then the open error.
    let ours = run(
        pbin,
        &["sendmail", "-Z"],
        &[("MAIL_CONFIG", "/nonexistent")],
    );
    assert_eq!(
        ours.1,
        "sendmail: invalid option -- 'Z'\nsendmail: fatal: open /nonexistent/main.cf: No such file or directory\n"
    );
    assert_eq!(ours.2, Some(75));
    if std::path::Path::new(real).exists() {
        assert_eq!(run(real, &["-Z"], &[("MAIL_CONFIG", "/nonexistent")]), ours);
    }
}

#[test]
fn doveconf_help_as_dovecot() {
    let ours = postern("doveconf", &["--help"]);
    let ours = (
        String::from_utf8_lossy(&ours.stdout).into_owned(),
        String::from_utf8_lossy(&ours.stderr).into_owned(),
        ours.status.code(),
    );
    assert_eq!(ours.1, "doveconf: invalid option -- '-'\n");
    assert_eq!(ours.2, Some(89));
    if std::path::Path::new("/usr/bin/doveconf").exists() {
        // By its bare name: getopt prefixes its words with argv[0] as typed.
        assert_eq!(run("doveconf", &["--help"], &[]), ours);
    }
}

#[test]
fn postern_says_what_it_is() {
    let o = postern("--help", &[]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout).into_owned();
    for c in [
        "postconf",
        "postfix",
        "sendmail",
        "mailq",
        "newaliases",
        "postqueue",
        "postsuper",
        "postmap",
        "postalias",
        "postcat",
        "postdrop",
        "dovecot",
        "doveconf",
        "saslauthd",
        "testsaslauthd",
    ] {
        let line = help
            .lines()
            .find(|l| l.split_whitespace().next() == Some(c))
            .unwrap_or_else(|| panic!("no line for {c}:\n{help}"));
        assert!(
            line.split_whitespace().count() > 3,
            "{c} has no description: {line}"
        );
    }
    let v = postern("--version", &[]);
    assert_eq!(
        String::from_utf8_lossy(&v.stdout),
        format!(
            "postern {} (compatible with Postfix 3.7.11, Dovecot 2.3.19, Cyrus SASL 2.1.28)\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    // What scripts compare stays Postfix's; postern_version says what runs.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("main.cf"), "myhostname = h.example\n").unwrap();
    std::fs::write(d.path().join("master.cf"), "").unwrap();
    let o = postern(
        "postconf",
        &[
            "-c",
            d.path().to_str().unwrap(),
            "mail_version",
            "mail_name",
            "syslog_name",
            "postern_version",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!(
            "mail_version = 3.7.11\nmail_name = Postfix\nsyslog_name = ${{multi_instance_name?{{$multi_instance_name}}:{{postfix}}}}\npostern_version = {}\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    // No Sieve is served: doveconf's header names no Pigeonhole (the real one does when
    // the package is installed).
    std::fs::write(d.path().join("dovecot.conf"), "protocols = pop3\n").unwrap();
    let o = postern(
        "doveconf",
        &["-n", "-c", d.path().join("dovecot.conf").to_str().unwrap()],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("# 2.3.19.1 (9b53102964): "), "{out}");
    assert!(!out.contains("Pigeonhole"), "{out}");
}
