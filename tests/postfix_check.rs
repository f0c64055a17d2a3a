//! `postfix check` reports every problem of every config kind with file and line.

mod common;
use common::*;

fn check(dir: &std::path::Path, dovecot: Option<&std::path::Path>) -> (String, i32) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["postfix", "-c"]).arg(dir).arg("check");
    match dovecot {
        Some(d) => cmd.env("POSTERN_DOVECOT_CONFIG", d),
        None => cmd.env("POSTERN_DOVECOT_CONFIG", ""),
    };
    let out = cmd.output().unwrap();
    (
        String::from_utf8_lossy(&out.stderr).to_string(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn reports_every_problem_with_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::create_dir_all(p.join("sasl")).unwrap();
    std::fs::write(
        p.join("main.cf"),
        format!(
            "queue_directory = {q}\ndata_directory = {q}\ncyrus_sasl_config_path = {s}\n\
             smtpd_delay_reject = maybe\nbad line one\nmessage_size_limit = lots\n\
             smtpd_recipient_restrictions = permit_mynetworks, reject_everything\n\
             another bad line\nrelay_domains = ${{oops\nunknown_thing = 1\n",
            q = p.display(),
            s = p.join("sasl").display()
        ),
    )
    .unwrap();
    std::fs::write(
        p.join("master.cf"),
        "smtp inet n - n - - smtpd\nbroken unix\n",
    )
    .unwrap();
    std::fs::write(
        p.join("sasl/smtpd.conf"),
        "pwcheck_method: saslauthd\nmech_list : plain\n",
    )
    .unwrap();
    let dov = p.join("dovecot.conf");
    std::fs::write(&dov, "protocols = pop3 imap\nno_such_setting = 1\n").unwrap();
    let (err, rc) = check(p, Some(&dov));
    assert_eq!(rc, 1, "{err}");
    let m = p.join("main.cf").display().to_string();
    for want in [
        format!("{m}, line 5: missing '=' after attribute name: \"bad line one\""),
        format!("{m}, line 8: missing '=' after attribute name: \"another bad line\""),
        format!("{m}, line 4: bad boolean configuration: smtpd_delay_reject = maybe"),
        format!("{m}, line 6: bad numerical configuration: message_size_limit = lots"),
        format!("{m}, line 7: unknown smtpd restriction: \"reject_everything\""),
        format!(
            "file {}: line 2: bad field count",
            p.join("master.cf").display()
        ),
        format!("{}", p.join("sasl/smtpd.conf").display()),
        format!("{}", dov.display()),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn clean_configuration_passes_and_names_the_sasl_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::create_dir_all(p.join("sasl")).unwrap();
    std::fs::write(
        p.join("main.cf"),
        format!(
            "queue_directory = {q}\ndata_directory = {q}\ncyrus_sasl_config_path = {s}\nsmtpd_sasl_auth_enable = yes\n",
            q = p.display(),
            s = p.join("sasl").display()
        ),
    )
    .unwrap();
    std::fs::write(p.join("master.cf"), "smtp inet n - n - - smtpd\n").unwrap();
    std::fs::write(
        p.join("sasl/smtpd.conf"),
        "pwcheck_method: saslauthd\nmech_list: plain login\n",
    )
    .unwrap();
    let (err, rc) = check(p, None);
    assert_eq!(rc, 0, "{err}");
    assert!(
        err.contains(&format!(
            "Cyrus SASL configuration: using {}",
            p.join("sasl/smtpd.conf").display()
        )),
        "{err}"
    );
}

#[test]
fn tutorial_fixture_checks_with_the_wrapped_line_warning() {
    let dir = repo_root().join("compat-fixtures/postfix/tutorial-wrapped");
    let (err, _rc) = check(
        &dir,
        Some(&repo_root().join("compat-fixtures/dovecot/tutorial-fc2-0.99/dovecot.conf")),
    );
    assert!(
        err.contains("taken as a continuation of \"smtpd_recipient_restrictions\""),
        "{err}"
    );
    assert!(err.contains("0.99 key"), "{err}");
}

/// README's first command writes a configuration that passes `postfix check`.
#[test]
fn sandbox_configuration_checks_clean() {
    let d = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["sandbox", "--check-only"])
        .arg(d.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("inet_interfaces = loopback-only"), "{text}");
    assert!(!text.contains("error"), "{text}");
    for f in [
        "main.cf",
        "master.cf",
        "dovecot.conf",
        "users",
        "vmailbox",
        "aliases",
    ] {
        assert!(d.path().join(f).exists(), "{f}");
    }
}

/// The guide's main.cf edits, unchanged (TUTORIAL.md step 3, the wrapped
/// `smtpd_recipient_restrictions` continuing in column 0): `postfix check` passes, with
/// the warning `postconf` gives for the same file (same file and line), and no error.
#[test]
fn guide_wrapped_line_passes_with_postconfs_warning() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::create_dir_all(p.join("sasl")).unwrap();
    std::fs::write(
        p.join("sasl/smtpd.conf"),
        "pwcheck_method: saslauthd\nmech_list: plain login\n",
    )
    .unwrap();
    std::fs::write(
        p.join("main.cf"),
        format!(
            "queue_directory = {q}\ndata_directory = {q}\ncyrus_sasl_config_path = {s}\n\
             #inet_interfaces = localhost\n\
             mydestination = $myhostname, localhost.$mydomain, $mydomain\n\
             smtpd_sasl_auth_enable = yes\n\
             smtpd_delay_reject = yes\n\
             smtpd_recipient_restrictions = permit_mynetworks permit_sasl_authenticated\n\
             permit_auth_destination reject\n\
             smtpd_client_restrictions = permit_mynetworks, permit_sasl_authenticated\n\
             broken_sasl_auth_clients = yes\n\
             smtpd_sasl_security_options = noanonymous\n",
            q = p.display(),
            s = p.join("sasl").display()
        ),
    )
    .unwrap();
    std::fs::write(p.join("master.cf"), "smtp inet n - n - - smtpd\n").unwrap();
    let (err, rc) = check(p, None);
    assert_eq!(rc, 0, "{err}");
    assert!(!err.contains("error:"), "{err}");
    let postconf = std::process::Command::new(BIN)
        .args(["postconf", "-c"])
        .arg(p)
        .arg("-n")
        .output()
        .unwrap();
    assert!(postconf.status.success());
    let warning = String::from_utf8_lossy(&postconf.stderr)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        warning,
        format!(
            "postconf: warning: {}, line 9: text starts in column 0 but has no '=': \"permit_auth_destination reject\"; taken as a continuation of \"smtpd_recipient_restrictions\" (indent continuation lines with white space)",
            p.join("main.cf").display()
        )
    );
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("column 0")).collect();
    assert_eq!(
        ours,
        vec![warning.replacen("postconf:", "postfix:", 1).as_str()]
    );
}

/// What the real `postfix check` 3.7.11 refuses (recorded by
/// `scripts/regen-postfix-check-fixtures` in `compat-fixtures/postfix-check/`): Postern's
/// check refuses the same, each fatal of Postfix as an error with the same text, exit 1.
#[test]
fn refuses_what_real_postfix_check_refuses() {
    let mut checked = 0;
    for case in fixture_dirs("postfix-check") {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("q")).unwrap();
        std::fs::create_dir_all(p.join("d")).unwrap();
        let mut main = String::from_utf8(read(&case.join("main.cf"))).unwrap();
        main.push_str(&format!(
            "queue_directory = {0}/q\ndata_directory = {0}/d\n",
            p.display()
        ));
        std::fs::write(p.join("main.cf"), main).unwrap();
        std::fs::copy(case.join("master.cf"), p.join("master.cf")).unwrap();
        let want = String::from_utf8(read(&case.join("check.out"))).unwrap();
        let want_rc = read_rc(&case.join("check.rc"));
        let (err, rc) = check(p, None);
        assert_eq!(rc, want_rc, "{name}: {err}");
        let fatals: Vec<&str> = want
            .lines()
            .filter_map(|l| l.split_once(": fatal: ").map(|(_, m)| m))
            .collect();
        assert!(!fatals.is_empty(), "{name}: no fatal in the recording");
        for f in fatals {
            let f = f.replace("CONFIG_DIR", &p.display().to_string());
            assert!(
                err.contains(&format!("postfix: error: {f}\n")),
                "{name}: want 'postfix: error: {f}' in\n{err}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 2);
}

/// Postern does better than Postfix on an unused parameter: the line, and the name that
/// was probably meant.
#[test]
fn unused_parameter_names_line_and_nearest_name() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(
        p.join("main.cf"),
        format!(
            "queue_directory = {0}\ndata_directory = {0}\nmyhostname = h.example\n\nmydestinaton = $myhostname\nzzqq_frobnicate = 1\n",
            p.display()
        ),
    )
    .unwrap();
    std::fs::write(p.join("master.cf"), "smtp inet n - n - - smtpd\n").unwrap();
    let (err, rc) = check(p, None);
    assert_eq!(rc, 0, "{err}");
    let m = p.join("main.cf").display().to_string();
    assert!(
        err.contains(&format!(
            "postfix: warning: {m}, line 5: unused parameter: mydestinaton=$myhostname (did you mean \"mydestination\"?)\n"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "postfix: warning: {m}, line 6: unused parameter: zzqq_frobnicate=1\n"
        )),
        "{err}"
    );
}

/// A Cyrus SASL file whose pwcheck_method Postern's smtpd cannot serve (auxprop/sasldb)
/// is an error when SASL AUTH is on: every AUTH would fail with "generic failure".
#[test]
fn auxprop_is_refused_when_sasl_auth_is_on() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::create_dir_all(p.join("sasl")).unwrap();
    std::fs::write(
        p.join("main.cf"),
        format!(
            "queue_directory = {0}\ndata_directory = {0}\nmyhostname = h.example\ncyrus_sasl_config_path = {0}/sasl\nsmtpd_sasl_auth_enable = yes\n",
            p.display()
        ),
    )
    .unwrap();
    std::fs::write(p.join("master.cf"), "smtp inet n - n - - smtpd\n").unwrap();
    std::fs::write(
        p.join("sasl/smtpd.conf"),
        "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\n",
    )
    .unwrap();
    let (err, rc) = check(p, None);
    assert_eq!(rc, 1, "{err}");
    assert!(
        err.contains("pwcheck_method: auxprop is not supported by Postern"),
        "{err}"
    );
    std::fs::write(
        p.join("sasl/smtpd.conf"),
        "pwcheck_method: saslauthd\nmech_list: PLAIN LOGIN\n",
    )
    .unwrap();
    let (err, rc) = check(p, None);
    assert_eq!(rc, 0, "{err}");
    assert!(!err.contains("not supported"), "{err}");
}
