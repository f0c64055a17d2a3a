//! `postern doveconf` against what the real Dovecot 2.3.19 `doveconf` printed
//! (`compat-fixtures/dovecot/*/doveconf-n.{out,err,rc}`, made by scripts/regen-dovecot-fixtures),
//! or, for 0.99/1.x files, against the recorded 2.x translation (`postern-n.{out,err}`).
//! The `# OS:` and `# Hostname:` header lines depend on the machine and are left out of the
//! comparison; everything else must match byte for byte.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::BIN;

use proptest::prelude::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn doveconf(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("doveconf")
        .args(args)
        .current_dir(dir)
        .env("LANG", "C")
        .output()
        .expect("run postern")
}

fn host_independent(s: &str) -> String {
    s.lines()
        .filter(|l| {
            !l.starts_with("# OS: ")
                && !l.starts_with("# Hostname: ")
                && !l.starts_with("# Pigeonhole version ")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn fixtures_match_real_doveconf() {
    let root = repo();
    let mut checked = 0;
    let mut dirs: Vec<_> = std::fs::read_dir(root.join("compat-fixtures/dovecot"))
        .expect("fixtures dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("dovecot.conf").exists())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let conf = format!("compat-fixtures/dovecot/{name}/dovecot.conf");
        let out = doveconf(&root, &["-c", &conf, "-n"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let rc = out.status.code().unwrap_or(-1);
        if dir.join("postern-n.out").exists() {
            assert_eq!(
                host_independent(&stdout),
                host_independent(&read(&dir.join("postern-n.out"))),
                "{name}: stdout"
            );
            assert_eq!(stderr, read(&dir.join("postern-n.err")), "{name}: stderr");
            assert_eq!(rc, 0, "{name}: rc");
        } else {
            assert_eq!(
                host_independent(&stdout),
                host_independent(&read(&dir.join("doveconf-n.out"))),
                "{name}: stdout"
            );
            // The set of lines: doveconf's warnings come in hash order in places.
            let set = |t: &str| {
                let mut v: Vec<String> = t.lines().map(str::to_string).collect();
                v.sort();
                v.dedup();
                v
            };
            assert_eq!(
                set(&stderr),
                set(&read(&dir.join("doveconf-n.err"))),
                "{name}: stderr"
            );
            let want: i32 = read(&dir.join("doveconf-n.rc"))
                .trim()
                .parse()
                .unwrap_or(-1);
            assert_eq!(rc, want, "{name}: rc");
        }
        checked += 1;
    }
    assert!(checked >= 38, "only {checked} fixtures");
}

/// The extra runs of fixtures with a RUNS file (`-a`, `-P`, `-h NAME`, …), as
/// scripts/regen-dovecot-fixtures recorded them from the real doveconf.
#[test]
fn fixture_runs_match_real_doveconf() {
    let root = repo();
    let mut checked = 0;
    let mut dirs: Vec<_> = std::fs::read_dir(root.join("compat-fixtures/dovecot"))
        .expect("fixtures dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("RUNS").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let rel = format!("compat-fixtures/dovecot/{name}");
        for line in read(&dir.join("RUNS")).lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (run, rest) = line.split_once(' ').unwrap_or((line, ""));
            let (cd, rest) = match rest.strip_prefix("cd: ") {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let mut args: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
            if !args.iter().any(|a| a == "-c") {
                let conf = if cd {
                    "dovecot.conf".to_string()
                } else {
                    format!("{rel}/dovecot.conf")
                };
                args.insert(0, conf);
                args.insert(0, "-c".into());
            }
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = doveconf(if cd { &dir } else { &root }, &argv);
            let want = |ext: &str| read(&dir.join(format!("doveconf-{run}.{ext}")));
            assert_eq!(
                host_independent(&String::from_utf8_lossy(&out.stdout)),
                host_independent(&want("out")),
                "{name} {run}: stdout"
            );
            let set = |t: &str| {
                let mut v: Vec<String> = t.lines().map(str::to_string).collect();
                v.sort();
                v.dedup();
                v
            };
            assert_eq!(
                set(&String::from_utf8_lossy(&out.stderr)),
                set(&want("err")),
                "{name} {run}: stderr"
            );
            assert_eq!(
                out.status.code().unwrap_or(-1).to_string(),
                want("rc").trim(),
                "{name} {run}: rc"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} runs");
}

fn run_conf(text: &[u8], extra: &[(&str, &[u8])]) -> (tempfile::TempDir, Output) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("dovecot.conf"), text).expect("write");
    for (name, body) in extra {
        let p = dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, body).expect("write");
    }
    let out = doveconf(dir.path(), &["-c", "dovecot.conf", "-n"]);
    (dir, out)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unbalanced_braces() {
    let (_d, o) = run_conf(b"protocols = imap\n}\n", &[]);
    assert_eq!(o.status.code(), Some(89));
    assert_eq!(
        stderr(&o),
        "doveconf: Fatal: Error in configuration file dovecot.conf line 2: Unexpected '}'\n"
    );
    let (_d, o) = run_conf(b"service imap {\n", &[]);
    assert_eq!(o.status.code(), Some(89));
    assert!(stderr(&o).contains("Missing '}' (section started at dovecot.conf:1)"));
}

/// doveconf 2.3.19: `Error in configuration file a.conf line 1: Recursive include file:
/// dovecot.conf` (the path as built from the including file's name).
#[test]
fn include_loop_is_detected() {
    let (_d, o) = run_conf(
        b"!include a.conf\n",
        &[("a.conf", b"!include dovecot.conf\n")],
    );
    assert_eq!(o.status.code(), Some(89));
    assert_eq!(
        stderr(&o),
        "doveconf: Fatal: Error in configuration file a.conf line 1: Recursive include file: dovecot.conf\n"
    );
}

#[test]
fn missing_include_fatal_but_include_try_silent() {
    let (_d, o) = run_conf(b"!include nope/*.conf\n", &[]);
    assert_eq!(o.status.code(), Some(89));
    assert_eq!(
        stderr(&o),
        "doveconf: Fatal: Error in configuration file dovecot.conf line 1: No matches\n"
    );
    let (_d, o) = run_conf(
        b"!include_try nope/*.conf\n!include_try x.conf\n!include conf.d/*.conf\n",
        &[("conf.d/a.conf", b"login_greeting = hi\n")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).ends_with("login_greeting = hi\n"));
}

/// Seen from doveconf 2.3.19: a NUL ends a line (C strings), so a line starting with one is
/// empty; other bytes are part of the key (`Expecting '{'`), named with file and line.
#[test]
fn binary_garbage_is_an_error_with_file_and_line() {
    let (_d, o) = run_conf(b"\x00\x01\xff\xfe garbage\n", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (_d, o) = run_conf(b"\x01\xff\xfe garbage\n", &[]);
    assert_eq!(o.status.code(), Some(89));
    assert_eq!(
        stderr(&o),
        "doveconf: Fatal: Error in configuration file dovecot.conf line 1: Expecting '{'\n"
    );
}

#[test]
fn ten_megabyte_value() {
    let mut text = b"login_greeting = ".to_vec();
    text.extend(std::iter::repeat_n(b'x', 10 << 20));
    text.push(b'\n');
    let (_d, o) = run_conf(&text, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.len() > 10 << 20);
}

#[test]
fn unreadable_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = doveconf(dir.path(), &["-c", "missing.conf", "-n"]);
    assert_eq!(o.status.code(), Some(89));
    assert_eq!(
        stderr(&o),
        "doveconf: Fatal: open(missing.conf) failed: No such file or directory\n"
    );
    // A directory opens but reads nothing: doveconf 2.3.19 prints an empty configuration
    // (the version line, OS and host lines) and exits 0.
    std::fs::create_dir(dir.path().join("d.conf")).expect("mkdir");
    let o = doveconf(dir.path(), &["-c", "d.conf", "-n"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    assert_eq!(
        host_independent(&String::from_utf8_lossy(&o.stdout)),
        "# 2.3.19.1 (9b53102964): d.conf\n"
    );
}

#[test]
fn unknown_setting_and_time_units() {
    let (_d, o) = run_conf(b"protocols = imap\nimap_listen_typo = *\n", &[]);
    assert_eq!(
        stderr(&o),
        "doveconf: Fatal: Error in configuration file dovecot.conf line 2: Unknown setting: imap_listen_typo\n"
    );
    let (_d, o) = run_conf(b"auth_cache_ttl = 3600\n", &[]);
    assert_eq!(
        stderr(&o),
        "doveconf: Fatal: Error in configuration file dovecot.conf line 1: Time interval '3600' is missing units (add e.g. 's' for seconds)\n"
    );
}

#[test]
fn single_setting() {
    let (d, _) = run_conf(b"mail_location = maildir:~/Maildir\n", &[]);
    let o = doveconf(d.path(), &["-c", "dovecot.conf", "-h", "mail_location"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "maildir:~/Maildir\n");
    let o = doveconf(d.path(), &["-c", "dovecot.conf", "auth_mechanisms"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "auth_mechanisms = plain\n"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Arbitrary input never panics the parser, and every error names the file.
    #[test]
    fn grammar_never_panics(text in "(?s)[ -~\t\n{}#\"'<$\\\\=!]{0,300}") {
        use postern::config::dovecot::DovecotConf;
        match DovecotConf::from_str(&text, Path::new("fuzz.conf")) {
            Ok(_) => {}
            Err(e) => prop_assert!(e.to_string().contains("fuzz.conf"), "{}", e),
        }
    }
}

/// `doveconf -n | head -1`: the settings (more than the pipe holds) are still being
/// written when the reader goes away; doveconf ends quietly by SIGPIPE, as Dovecot's does
/// (it panicked in `print!`).
#[test]
fn closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = tmp.path().join("dovecot.conf");
    let mut text = String::from("namespace inbox {\n  inbox = yes\n");
    for i in 0..300 {
        text.push_str(&format!(
            "  mailbox \"Folder {i}\" {{\n    auto = subscribe\n  }}\n"
        ));
    }
    text.push_str("}\n");
    std::fs::write(&conf, text).expect("conf");
    let (line, st, err) =
        common::head_1(Command::new(BIN).args(["doveconf", "-n", "-c"]).arg(&conf));
    assert!(line.starts_with("# 2.3.19.1"), "{line}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(st.signal(), Some(libc::SIGPIPE), "{st}: {err}");
}
