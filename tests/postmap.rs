//! `postmap`/`postalias` against the real Postfix 3.7 outputs in `compat-fixtures/maps/`.
//! The fixture script `regen.sh` is run with Postern installed first in `PATH` under the
//! names `postmap` and `postalias` (it dispatches on `argv[0]`), each run in its own temp
//! dir, and every recorded stdout, stderr and exit code is compared byte for byte.

mod common;
use common::BIN;

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
        std::os::unix::fs::symlink(BIN, bin.join(name)).expect("link");
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

/// `-r`, `-w`, the order of duplicate and bad-line warnings, and `-i` (entries from standard
/// input added to the index, `stdin` in warnings, a missing index created), as the real
/// postmap 3.7 does them.
#[test]
fn duplicates_and_incremental_match_postfix() {
    compare("postmap-dups");
}

#[test]
fn postalias_incremental_matches_postfix() {
    compare("postalias-incremental");
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
        Command::new(BIN)
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

/// Run as root on a source owned by another user, with umask 022 and 077, Postern's
/// `postmap` gives its index the mode, owner and group the real postmap 3.7 gave the `.db`
/// (`compat-fixtures/lookup/postmap-perms`, recorded by `scripts/regen-lookup-fixtures`),
/// for `hash:` (Postern's `FILE.postern.lmdb`) and `lmdb:` alike. `mail_owner` is `nobody`
/// here, the owner of half the sources: for the root-owned sources whose mode keeps
/// `nobody` out, Postern adds group read for `nobody`'s group (its daemons read tables as
/// `mail_owner`; Postfix's read them as root), and only then differs from Postfix.
#[test]
fn index_mode_and_owner_as_postfix() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("not root: skipped");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let (nuid, ngid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cf = tmp.path().join("cf");
    std::fs::create_dir(&cf).unwrap();
    std::fs::write(cf.join("main.cf"), "mail_owner = nobody\n").unwrap();
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("compat-fixtures/lookup/postmap-perms"),
    )
    .unwrap();
    let mut n = 0;
    for line in fixture.lines().filter(|l| l.starts_with("postmap ")) {
        // postmap hash owner=nobody umask=022 source=0600: .db mode=0600 owner=source-owner group=source-group rc=0
        let f: Vec<&str> = line.split_whitespace().collect();
        let kind = f[1];
        let owner = f[2].trim_start_matches("owner=");
        let umask = f[3].trim_start_matches("umask=");
        let mode = u32::from_str_radix(f[4].trim_start_matches("source=").trim_end_matches(':'), 8)
            .unwrap();
        let want_mode = u32::from_str_radix(f[6].trim_start_matches("mode="), 8).unwrap();
        assert_eq!(
            (f[7], f[8], f[9]),
            ("owner=source-owner", "group=source-group", "rc=0"),
            "{line}"
        );
        let d = tmp.path().join(format!("{kind}-{owner}-{umask}-{mode:o}"));
        std::fs::create_dir(&d).unwrap();
        let (uid, gid) = if owner == "nobody" {
            (nuid, ngid)
        } else {
            (0, 0)
        };
        std::os::unix::fs::chown(&d, Some(uid), None).unwrap();
        let src = d.join("access");
        std::fs::write(&src, "a OK\n").unwrap();
        std::os::unix::fs::chown(&src, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask {umask}; exec \"$0\" postmap -c {} {kind}:{}",
                cf.display(),
                src.display()
            ))
            .arg(BIN)
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}: {out:?}");
        let index = match kind {
            "hash" => d.join("access.postern.lmdb"),
            _ => d.join("access.lmdb"),
        };
        let m = std::fs::metadata(&index).unwrap();
        let nobody_reads = (uid == nuid && want_mode & 0o400 != 0) || want_mode & 0o004 != 0;
        let (expect_mode, expect_gid) = if nobody_reads {
            (want_mode, gid)
        } else {
            (want_mode | 0o040, ngid)
        };
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid()),
            (expect_mode, uid, expect_gid),
            "{line}"
        );
        n += 1;
    }
    assert_eq!(n, 48);
    // A rebuild over an index the source's owner cannot write fails as Postfix's does.
    let d = tmp.path().join("rebuild");
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(nuid), None).unwrap();
    let src = d.join("access");
    std::fs::write(&src, "a OK\n").unwrap();
    std::os::unix::fs::chown(&src, Some(nuid), Some(ngid)).unwrap();
    let run = || {
        Command::new(BIN)
            .args(["postmap", "-c"])
            .arg(&cf)
            .arg(format!("lmdb:{}", src.display()))
            .output()
            .unwrap()
    };
    assert!(run().status.success());
    let idx = d.join("access.lmdb");
    std::os::unix::fs::chown(&idx, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&idx, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    let want = fixture
        .lines()
        .find(|l| l.starts_with("rebuild lmdb over a 0600 root index"))
        .and_then(|l| l.split_once("rc=1 "))
        .map(|(_, e)| e.replace("@DIR@", &tmp.path().display().to_string()))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end(), want);
    // Over one it can write, the mode and owner stay.
    std::os::unix::fs::chown(&idx, Some(nuid), Some(ngid)).unwrap();
    std::fs::set_permissions(&idx, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(run().status.success());
    let m = std::fs::metadata(&idx).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o666, nuid));
    let leftovers = std::fs::read_dir(&d).unwrap().count();
    assert_eq!(leftovers, 2, "only the source and its index");
}
