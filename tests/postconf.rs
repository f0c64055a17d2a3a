//! `postconf` against the real Postfix 3.7.11: every fixture in `compat-fixtures/postfix/`
//! carries what the real `postconf -n`, `-nx` (and `-M`) printed; Postern must print the
//! same stdout byte for byte, the same set of stderr lines, and the same exit code.

mod common;
use common::*;

/// `$process_id` is the PID of the postconf process itself (stock `debugger_command`
/// lines expand it under -x): the one value that cannot be pinned, so it is masked.
fn mask_pid(out: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(out).to_string();
    let mut res = String::new();
    for line in text.split_inclusive('\n') {
        if line.starts_with("debugger_command =") {
            let re_masked: String = line
                .split(' ')
                .map(|w| {
                    if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) {
                        "PID"
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            res.push_str(&re_masked);
        } else {
            res.push_str(line);
        }
    }
    if res == text {
        out.to_vec()
    } else {
        res.into_bytes()
    }
}

fn check_mode(mode: &str, args: &[&str]) {
    let mut failures = Vec::new();
    let mut checked = 0;
    for dir in fixture_dirs("postfix") {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let out_file = dir.join(format!("postconf-{mode}.out"));
        if !out_file.exists() || name == "tutorial-wrapped" {
            continue;
        }
        let rel = format!("compat-fixtures/postfix/{name}");
        let mut a = vec!["-c", rel.as_str()];
        a.extend_from_slice(args);
        let got = postern("postconf", &a);
        let want_out = mask_pid(&read(&out_file));
        let want_err = read(&dir.join(format!("postconf-{mode}.err")));
        let want_rc = read_rc(&dir.join(format!("postconf-{mode}.rc")));
        checked += 1;
        let got_out = mask_pid(&got.stdout);
        if got_out != want_out {
            failures.push(format!(
                "{name} {mode}: stdout differs\n--- want\n{}\n--- got\n{}",
                String::from_utf8_lossy(&want_out),
                String::from_utf8_lossy(&got_out)
            ));
        }
        if line_set(&got.stderr) != line_set(&want_err) {
            failures.push(format!(
                "{name} {mode}: stderr differs\n--- want\n{:?}\n--- got\n{:?}",
                line_set(&want_err),
                line_set(&got.stderr)
            ));
        }
        if got.status.code() != Some(want_rc) {
            failures.push(format!(
                "{name} {mode}: exit {:?}, want {want_rc}",
                got.status.code()
            ));
        }
    }
    assert!(checked >= 25, "only {checked} fixtures checked for {mode}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn postconf_n_matches_real_postfix() {
    check_mode("n", &["-n"]);
}

#[test]
fn postconf_m_matches_real_postfix() {
    check_mode("M", &["-M"]);
}

#[test]
fn postconf_nx_matches_real_postfix() {
    check_mode("nx", &["-nx"]);
}

/// The guide's main.cf as printed (continuation in column 0): the real Postfix stops with
/// a fatal error; Postern takes the line as a continuation, warns with file and line, and
/// then prints exactly what Postfix prints for the correctly indented file.
#[test]
fn tutorial_wrapped_line_is_accepted_with_warning() {
    let root = repo_root().join("compat-fixtures/postfix");
    let real_err =
        String::from_utf8_lossy(&read(&root.join("tutorial-wrapped/postconf-n.err"))).to_string();
    assert!(
        real_err.contains("missing '=' after attribute name"),
        "{real_err}"
    );
    let got = postern(
        "postconf",
        &["-c", "compat-fixtures/postfix/tutorial-wrapped", "-n"],
    );
    assert_eq!(got.status.code(), Some(0));
    let want = String::from_utf8_lossy(&read(&root.join("tutorial/postconf-n.out"))).replace(
        "config_directory = compat-fixtures/postfix/tutorial\n",
        "config_directory = compat-fixtures/postfix/tutorial-wrapped\n",
    );
    assert_eq!(String::from_utf8_lossy(&got.stdout), want);
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(
        err.contains("compat-fixtures/postfix/tutorial-wrapped/main.cf, line ")
            && err.contains("taken as a continuation of \"smtpd_recipient_restrictions\""),
        "{err}"
    );
}

/// The tutorial's own check: Postern prints exactly what Postfix 3.7 prints.
#[test]
fn tutorial_n_exact() {
    let got = postern(
        "postconf",
        &["-c", "compat-fixtures/postfix/tutorial", "-n"],
    );
    let want = read(&repo_root().join("compat-fixtures/postfix/tutorial/postconf-n.out"));
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        String::from_utf8_lossy(&want)
    );
    assert!(String::from_utf8_lossy(&got.stdout).contains(
        "smtpd_recipient_restrictions = permit_mynetworks permit_sasl_authenticated permit_auth_destination reject"
    ));
}

fn scratch(main_cf: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("main.cf"), main_cf).unwrap();
    std::fs::write(d.path().join("master.cf"), "").unwrap();
    d
}

fn run_in(d: &tempfile::TempDir, args: &[&str]) -> std::process::Output {
    let p = d.path().to_str().unwrap().to_string();
    let mut a = vec!["-c", p.as_str()];
    a.extend_from_slice(args);
    postern("postconf", &a)
}

// The expected files below were produced by the real postconf 3.7.11 on the same input.
const EDIT_INPUT: &str =
    "mydestination = x\nmyorigin = y\n  cont\n# c\nmydestination = z\n  more\nmynetworks = 1\n";

#[test]
fn edit_e_replaces_every_occurrence_and_appends_new_names() {
    let d = scratch(EDIT_INPUT);
    let o = run_in(&d, &["-e", "mydestination=new", "newp = q", "aaa=1"]);
    assert_eq!(o.status.code(), Some(0));
    let after = std::fs::read_to_string(d.path().join("main.cf")).unwrap();
    assert_eq!(
        after,
        "mydestination = new\nmyorigin = y\n  cont\n# c\nmydestination = new\nmynetworks = 1\nnewp = q\naaa = 1\n"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("multiple entries for \"mydestination\""));
}

#[test]
fn edit_x_removes_and_hash_comments_out() {
    let d = scratch(EDIT_INPUT);
    assert_eq!(
        run_in(&d, &["-X", "myorigin", "mydestination"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("main.cf")).unwrap(),
        "# c\nmynetworks = 1\n"
    );
    let d = scratch(EDIT_INPUT);
    assert_eq!(
        run_in(&d, &["-#", "myorigin", "mydestination"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("main.cf")).unwrap(),
        "#mydestination = x\n#myorigin = y\n#  cont\n# c\n#mydestination = z\n#  more\nmynetworks = 1\n"
    );
}

#[test]
fn edit_keeps_latin1_bytes() {
    let d = tempfile::tempdir().unwrap();
    let raw = b"# caf\xe9\nmyorigin = a\xe9b\n".to_vec();
    std::fs::write(d.path().join("main.cf"), &raw).unwrap();
    std::fs::write(d.path().join("master.cf"), "").unwrap();
    assert_eq!(
        run_in(&d, &["-e", "mydomain=example.com"]).status.code(),
        Some(0)
    );
    let mut want = raw.clone();
    want.extend_from_slice(b"mydomain = example.com\n");
    assert_eq!(std::fs::read(d.path().join("main.cf")).unwrap(), want);
}

#[test]
fn errors_are_worded_like_postfix() {
    let d = scratch("mydestination = x\n\nbad line\n  cont=x\n");
    let o = run_in(&d, &["-n"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "postconf: fatal: {}/main.cf, line 3: missing '=' after attribute name: \"bad line  cont=x\"\n",
            d.path().display()
        )
    );
    let o = postern("postconf", &["-c", "/nonexistent-postern-dir", "-n"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "postconf: fatal: open /nonexistent-postern-dir/main.cf: No such file or directory\n"
    );
    let d = scratch("myorigin = x\n");
    let o = run_in(&d, &["-n", "-d"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "postconf: fatal: specify one of -d -n\n"
    );
    let o = run_in(&d, &["-e", "myorigin"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "postconf: fatal: missing '=' after attribute name: \"myorigin\"\n"
    );
    let o = run_in(&d, &["foo", "myorigin"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "myorigin = x\n");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "postconf: warning: foo: unknown parameter\n"
    );
}

#[test]
fn macro_errors_are_fatal_with_postfix_warning() {
    let d = scratch("relay_domains = $ x $- y\n");
    let o = run_in(&d, &["-nx"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("postconf: warning: empty macro name: \"$ x $- y\""),
        "{err}"
    );
    assert!(
        err.ends_with("postconf: fatal: macro processing error\n"),
        "{err}"
    );
}

#[test]
fn unused_and_undefined_parameters_warn() {
    // Observed with Postfix 3.7.11 on the same input.
    let d = scratch(
        "virtual_maps = hash:/x\nsmtpd_sasl_application_name = smtpd\nsmtpd_restriction_classes = myclass\nmyclass = permit\nfoo = $bar\nbar = 1\nmyorigin = $baz\nbaz = x\nzz = $zz2\nzz2 = 1\nalias_maps = $undefx\n",
    );
    let o = run_in(&d, &["-n"]);
    let p = d.path().display().to_string();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!(
            "alias_maps = $undefx\nbar = 1\nbaz = x\nconfig_directory = {p}\nmyclass = permit\nmyorigin = $baz\nsmtpd_restriction_classes = myclass\nvirtual_maps = hash:/x\nzz2 = 1\n"
        )
    );
    let want: std::collections::BTreeSet<String> = [
        format!(
            "postconf: warning: {p}/main.cf: unused parameter: smtpd_sasl_application_name=smtpd"
        ),
        format!("postconf: warning: {p}/main.cf: unused parameter: zz=$zz2"),
        format!("postconf: warning: {p}/main.cf: unused parameter: foo=$bar"),
        format!("postconf: warning: {p}/main.cf: undefined parameter: undefx"),
    ]
    .into_iter()
    .collect();
    assert_eq!(line_set(&o.stderr), want);
}

#[test]
fn fold_at_80_columns() {
    let d = scratch(
        "smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination, reject_unknown_sender_domain\n",
    );
    let o = run_in(&d, &["-nf", "smtpd_recipient_restrictions"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated,\n    reject_unauth_destination, reject_unknown_sender_domain\n"
    );
}

#[test]
fn defaults_come_from_postfix_37() {
    let d = scratch("compatibility_level = 2\n");
    let o = run_in(
        &d,
        &[
            "-x",
            "smtpd_relay_restrictions",
            "mynetworks_style",
            "append_dot_mydomain",
            "mail_version",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination\nmynetworks_style = host\nappend_dot_mydomain = no\nmail_version = 3.7.11\n"
    );
    let d = scratch("myhostname = master.planetnet.net\n");
    let o = run_in(
        &d,
        &[
            "-x",
            "smtpd_relay_restrictions",
            "mynetworks_style",
            "mydomain",
            "smtpd_banner",
            "relay_domains",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "smtpd_relay_restrictions =\nmynetworks_style = subnet\nmydomain = planetnet.net\nsmtpd_banner = master.planetnet.net ESMTP Postfix\nrelay_domains = master.planetnet.net, localhost.planetnet.net, localhost\n"
    );
}

#[test]
fn postconf_a_m_l_lists() {
    let d = scratch("");
    assert_eq!(
        String::from_utf8_lossy(&run_in(&d, &["-a"]).stdout),
        "cyrus\ndovecot\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&run_in(&d, &["-A"]).stdout),
        "cyrus\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&run_in(&d, &["-l"]).stdout),
        "flock\nfcntl\ndotlock\n"
    );
    assert!(String::from_utf8_lossy(&run_in(&d, &["-m"]).stdout).contains("hash\n"));
}

/// `postconf -d | head -1` (more output than the pipe holds) and `postern --help | head
/// -1`: the reader goes away while the command still writes, or after it wrote all; it
/// ends quietly, by SIGPIPE in the first case, as the C programs do (no panic).
#[test]
fn closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = repo_root().join("compat-fixtures/postfix/tutorial-wrapped");
    let bin = BIN;
    let (line, st, err) = head_1(
        std::process::Command::new(bin)
            .arg("postconf")
            .arg("-c")
            .arg(&dir)
            .arg("-d"),
    );
    assert!(line.contains(" = "), "{line}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(st.signal(), Some(libc::SIGPIPE), "{st}: {err}");
    let (line, st, err) = head_1(std::process::Command::new(bin).arg("--help"));
    assert!(line.starts_with("usage: postern"), "{line}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        st.signal() == Some(libc::SIGPIPE) || st.code() == Some(0),
        "{st}"
    );
}

/// A full listing (`postconf` without `-n`) holds `process_id = PID` of the postconf run,
/// and Postern's adds `postern_version` on purpose (issue 19): both lines are left out.
fn without_run_lines(out: &[u8]) -> Vec<u8> {
    out.split_inclusive(|b| *b == b'\n')
        .filter(|l| !l.starts_with(b"process_id = ") && !l.starts_with(b"postern_version = "))
        .flatten()
        .copied()
        .collect()
}

/// Edge cases recorded from the real postconf 3.7.11 by `scripts/regen-postconf-cases`
/// (`compat-fixtures/postconf-cases/NAME/args` are the arguments after `-c DIR`): macro
/// syntax errors and reference chains that are fatal before anything is printed, `postconf
/// NAME` for a name Postfix does not know, NUL bytes, non-ASCII bytes shown as `?` in
/// diagnostics, `-d` without main.cf, master.cf or main.cf that is a directory, and
/// `mynetworks` that follows `inet_interfaces`.
#[test]
fn postconf_edge_cases_match_real_postfix() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for dir in fixture_dirs("postconf-cases") {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let rel = format!("compat-fixtures/postconf-cases/{name}");
        let args_text = String::from_utf8_lossy(&read(&dir.join("args"))).to_string();
        let mut a = vec!["-c", rel.as_str()];
        a.extend(args_text.lines().filter(|l| !l.is_empty()));
        let got = postern("postconf", &a);
        let want_out = without_run_lines(&read(&dir.join("postconf.out")));
        let want_err = read(&dir.join("postconf.err"));
        let want_rc = read_rc(&dir.join("postconf.rc"));
        checked += 1;
        if without_run_lines(&got.stdout) != want_out {
            failures.push(format!(
                "{name}: stdout differs\n--- want\n{}\n--- got\n{}",
                String::from_utf8_lossy(&want_out),
                String::from_utf8_lossy(&got.stdout)
            ));
        }
        if line_set(&got.stderr) != line_set(&want_err) {
            failures.push(format!(
                "{name}: stderr differs\n--- want\n{:?}\n--- got\n{:?}",
                line_set(&want_err),
                line_set(&got.stderr)
            ));
        }
        if got.status.code() != Some(want_rc) {
            failures.push(format!(
                "{name}: exit {:?}, want {want_rc}",
                got.status.code()
            ));
        }
    }
    assert!(checked >= 40, "only {checked} cases checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
