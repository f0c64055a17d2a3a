//! imapd's message functions (ENVELOPE, BODYSTRUCTURE, BODY[…], BINARY, SEARCH, SORT,
//! THREAD) against a live Dovecot 2.3.19: `scripts/regen-imap-fixtures` runs a private
//! Dovecot (own config, loopback port, passwd-file users, Maildir homes in a temp dir),
//! APPENDs the corpus and records its answers into a temp dir; the answers are compared
//! with Postern's byte for byte, and with the recorded fixtures (which the unit tests in
//! `src/imapd/message/compat.rs` replay where Dovecot is absent). Skipped without root,
//! Debian's dovecot-imapd or python3.

mod common;
use common::*;

use postern::imapd::message::compat;
use std::process::Command;

#[test]
fn message_functions_match_live_dovecot() {
    if !Dovecot::real_available("imap") {
        return;
    }
    if !have("python3") {
        eprintln!("skipped: needs python3");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let fx = repo_root().join("compat-fixtures/imap");
    // The checks read the corpus beside the answers.
    std::os::unix::fs::symlink(fx.join("corpus"), dir.path().join("corpus")).expect("symlink");
    let out = Command::new(repo_root().join("scripts/regen-imap-fixtures"))
        .env("IMAP_FIXTURES_OUT", dir.path())
        .output()
        .expect("regen-imap-fixtures");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (what, (compared, mismatches), at_least) in [
        ("FETCH", compat::check_fetch(dir.path()), 3000),
        ("SEARCH", compat::check_search(dir.path()), 95),
        ("SORT/THREAD", compat::check_sort_thread(dir.path()), 28),
    ] {
        for m in mismatches.iter().take(20) {
            eprintln!("{m}");
        }
        assert!(compared >= at_least, "{what}: only {compared} compared");
        assert!(
            mismatches.is_empty(),
            "{what}: {} of {compared} differ from the live Dovecot",
            mismatches.len()
        );
    }

    // Dovecot still answers as recorded (the session transcript aside: its UIDVALIDITY
    // changes each run).
    let mut files = vec!["meta.txt".to_string(), "search.txt".to_string()];
    for e in std::fs::read_dir(fx.join("fetch")).expect("fetch dir") {
        files.push(format!(
            "fetch/{}",
            e.expect("entry").file_name().to_string_lossy()
        ));
    }
    for f in files {
        let live = std::fs::read(dir.path().join(&f)).expect("live recording");
        let recorded = std::fs::read(fx.join(&f)).expect("recorded");
        assert!(
            live == recorded,
            "{f}: the live Dovecot answered differently from compat-fixtures/imap (re-run scripts/regen-imap-fixtures?)"
        );
    }
}
