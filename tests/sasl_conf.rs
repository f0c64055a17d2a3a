//! Cyrus SASL `smtpd.conf`: the fixtures in `compat-fixtures/sasl/<name>/` (with what
//! libsasl 2.1.28 makes of them in `expected.txt`), the search path, and bad input.

use std::path::{Path, PathBuf};

use postern::config::sasl::{self, SaslConfig};
use proptest::prelude::*;

/// Render a parse result like `expected.txt`: `key: value` lines, or `error: line N: MSG`.
fn render(r: &Result<SaslConfig, postern::config::ConfigError>) -> String {
    match r {
        Ok(c) => c
            .entries
            .iter()
            .map(|(k, (v, _))| format!("{k}: {v}\n"))
            .collect(),
        Err(postern::config::ConfigError::AtLine { line, msg, .. }) => {
            format!("error: line {line}: {msg}\n")
        }
        Err(e) => format!("error: {e}\n"),
    }
}

#[test]
fn fixtures_match_expected() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat-fixtures/sasl");
    let Ok(rd) = std::fs::read_dir(&root) else {
        return;
    };
    let mut dirs: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    let mut n = 0;
    for d in dirs {
        let (Ok(_), Ok(want)) = (
            std::fs::metadata(d.join("smtpd.conf")),
            std::fs::read_to_string(d.join("expected.txt")),
        ) else {
            continue;
        };
        n += 1;
        let got = render(&sasl::read(&d.join("smtpd.conf")));
        assert_eq!(got, want, "fixture {}", d.display());
    }
    assert!(n > 0, "no SASL fixtures found");
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

#[test]
fn search_order_and_report() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    write(
        root,
        "usr/lib/sasl2/smtpd.conf",
        "pwcheck_method: saslauthd\n",
    );
    let s = sasl::find_app_config_in("smtpd", "", Path::new("/etc/postfix"), root);
    assert_eq!(
        s.tried,
        [
            "/etc/postfix/sasl/smtpd.conf",
            "/etc/sasl2/smtpd.conf",
            "/usr/lib64/sasl2/smtpd.conf",
            "/usr/lib/sasl2/smtpd.conf",
        ]
        .map(PathBuf::from)
    );
    assert_eq!(s.found, Some(PathBuf::from("/usr/lib/sasl2/smtpd.conf")));
    let cfg = s.config.expect("config").expect("parsed");
    assert_eq!(cfg.pwcheck_method(), ["saslauthd"]);

    // /etc/sasl2 comes first; cyrus_sasl_config_path before everything.
    write(root, "etc/sasl2/smtpd.conf", "pwcheck_method: auxprop\n");
    let s = sasl::find_app_config_in("smtpd", "", Path::new("/etc/postfix"), root);
    assert_eq!(s.found, Some(PathBuf::from("/etc/sasl2/smtpd.conf")));
    write(root, "opt/sasl/smtpd.conf", "mech_list: PLAIN\n");
    let s = sasl::find_app_config_in(
        "smtpd",
        "/nonexistent:/opt/sasl",
        Path::new("/etc/postfix"),
        root,
    );
    assert_eq!(s.tried[0], PathBuf::from("/nonexistent/smtpd.conf"));
    assert_eq!(s.found, Some(PathBuf::from("/opt/sasl/smtpd.conf")));

    // smtpd_sasl_path names the file; a bad file stops the search with its error.
    write(root, "etc/postfix/sasl/other.conf", "mech_list :x\n");
    let s = sasl::find_app_config_in("other", "", Path::new("/etc/postfix"), root);
    assert_eq!(s.found, Some(PathBuf::from("/etc/postfix/sasl/other.conf")));
    let e = s.config.expect("config").expect_err("error");
    assert_eq!(
        e.to_string(),
        "/etc/postfix/sasl/other.conf, line 1: key must be followed immediately by ':' (SASL_CONFIGERR)"
    );

    let s = sasl::find_app_config_in("none", "", Path::new("/etc/postfix"), root);
    assert!(s.found.is_none() && s.config.is_none());
    assert_eq!(s.tried.len(), 5);
}

#[test]
fn bad_input() {
    let path = Path::new("/etc/sasl2/smtpd.conf");
    let big = format!("mech_list: {}\n", "x".repeat(10 * 1024 * 1024));
    let e = sasl::parse(&big, path).expect_err("split like fgets");
    assert!(
        e.to_string().starts_with("/etc/sasl2/smtpd.conf, line 2:"),
        "{e}"
    );
    let garbage: String = (0u8..=255).map(|b| b as char).collect();
    let _ = sasl::parse(&garbage, path);
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC*") {
        let path = Path::new("/etc/sasl2/smtpd.conf");
        if let Err(e) = sasl::parse(&s, path) {
            let t = e.to_string();
            prop_assert!(t.starts_with("/etc/sasl2/smtpd.conf, line "), "{}", t);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let text: String = b.iter().map(|&c| c as char).collect();
        let _ = sasl::parse(&text, Path::new("x"));
    }

    #[test]
    fn good_lines_round_trip(key in "[A-Za-z0-9_-]{1,12}", value in "[!-~]([ -~]{0,30}[!-~])?") {
        let c = sasl::parse(&format!("  {key}:  {value}  \n"), Path::new("x")).expect("valid");
        prop_assert_eq!(c.get(&key.to_ascii_lowercase()), Some(value.as_str()));
    }
}
