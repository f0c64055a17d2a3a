//! Shared helpers for integration tests: run the built `postern` binary the way an admin
//! runs the command it replaces.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `postern CMD ARGS…` from the repository root (fixtures use relative paths).
pub fn postern(cmd: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_postern"))
        .arg(cmd)
        .args(args)
        .current_dir(repo_root())
        .env("LANG", "C")
        .env_remove("MAIL_CONFIG")
        .output()
        .expect("run postern")
}

/// Distinct stderr lines, sorted: the real postconf prints some warnings several times
/// and in hash-table order, so tests compare the set (see compat-fixtures/README.md).
pub fn line_set(s: &[u8]) -> BTreeSet<String> {
    // Fixtures made by running /usr/sbin/postconf carry that path as the program name.
    String::from_utf8_lossy(s)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix("/usr/sbin/").unwrap_or(l).to_string())
        .collect()
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

pub fn read_rc(p: &Path) -> i32 {
    String::from_utf8_lossy(&read(p)).trim().parse().expect("rc file")
}

/// Fixture directories under `compat-fixtures/<kind>/`, sorted.
pub fn fixture_dirs(kind: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo_root().join("compat-fixtures").join(kind))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    v.sort();
    v
}
