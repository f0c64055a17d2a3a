//! `postmap`/`postalias` against the real Postfix 3.7 outputs in `compat-fixtures/maps/`.
//! The fixture script `regen.sh` is run with Postern installed first in `PATH` under the
//! names `postmap` and `postalias` (it dispatches on `argv[0]`), each run in its own temp
//! dir, and every recorded stdout, stderr and exit code is compared byte for byte.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compat-fixtures/maps")
}

fn run_ours() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).expect("bin dir");
    for name in ["postmap", "postalias"] {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_postern"), bin.join(name)).expect("link");
    }
    let out = tmp.path().join("out");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = Command::new("sh")
        .arg(fixtures().join("regen.sh"))
        .env("PATH", path)
        .env("OUT", &out)
        .status()
        .expect("run regen.sh");
    assert!(status.success());
    tmp
}

fn compare(case: &str) {
    let tmp = run_ours();
    let ours = tmp.path().join("out").join(case);
    let mut n = 0;
    for entry in std::fs::read_dir(fixtures().join(case)).expect("case dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !(name.ends_with(".stdout") || name.ends_with(".stderr") || name.ends_with(".rc")) {
            continue;
        }
        let want = std::fs::read_to_string(&path).expect("fixture");
        let got = std::fs::read_to_string(ours.join(&name)).unwrap_or_default();
        assert_eq!(got, want, "{case}/{name} differs from the real Postfix");
        n += 1;
    }
    assert!(n > 0, "no fixture outputs in {case}");
}

#[test]
fn postmap_basic_matches_postfix() {
    compare("postmap-basic");
}

#[test]
fn regexp_matches_postfix() {
    compare("regexp");
}

#[test]
fn pcre_matches_postfix() {
    compare("pcre");
}

#[test]
fn cidr_matches_postfix() {
    compare("cidr");
}

#[test]
fn postalias_matches_postfix() {
    compare("postalias");
}

#[test]
fn hash_builds_postern_index_not_db() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cf = tmp.path().join("cf");
    std::fs::create_dir(&cf).expect("cf");
    std::fs::write(cf.join("main.cf"), "").expect("main.cf");
    let table = tmp.path().join("access");
    std::fs::write(&table, "Example.COM REJECT\n1.2.3 OK\n").expect("table");
    let pm = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_postern"))
            .arg("postmap")
            .arg("-c")
            .arg(&cf)
            .args(args)
            .output()
            .expect("run postmap")
    };
    let spec = format!("hash:{}", table.display());
    assert!(pm(&[&spec]).status.success());
    assert!(tmp.path().join("access.postern.lmdb").exists());
    assert!(!tmp.path().join("access.db").exists());
    let q = pm(&["-q", "example.com", &spec]);
    assert_eq!(String::from_utf8_lossy(&q.stdout), "REJECT\n");
    let miss = pm(&["-q", "nope", &spec]);
    assert_eq!(miss.status.code(), Some(1));
    let missing = pm(&["-q", "x", &format!("hash:{}/nothere", tmp.path().display())]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("postmap: fatal: open database"));
}
