//! The `maps` library: robustness of the parsers against any input (proptest), big lines,
//! missing files, and LMDB files shared with the real Postfix when it is installed.

mod common;
use common::BIN;

use std::process::Command;
use std::sync::Arc;

use postern::maps::regexp::{Dialect, PatternTable};
use postern::maps::{OpenOptions, Table, cidr::CidrTable, source};
use proptest::prelude::*;

fn quiet() -> OpenOptions {
    OpenOptions {
        warn: Arc::new(|_: &str| {}),
        ..OpenOptions::default()
    }
}

proptest! {
    #[test]
    fn text_source_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = source::parse_entries(&bytes, "t", "t.db", source::Format::Postmap, &quiet());
        let _ = source::parse_entries(&bytes, "t", "t.db", source::Format::Aliases, &quiet());
    }

    #[test]
    fn pattern_tables_never_panic(text in "(([!/]|if |endif|\\$|[a-z(){}\\[\\]\\\\ ]){0,12}\n){0,12}",
                                  key in "[a-zA-Z0-9@.(]{0,20}") {
        for d in [Dialect::Posix, Dialect::Pcre] {
            let t = PatternTable::parse(d, "r", text.as_bytes(), &quiet());
            let _ = t.lookup(&key);
        }
        let c = CidrTable::parse("c", text.as_bytes(), &quiet());
        let _ = c.lookup(&key);
    }
}

#[test]
fn ten_megabyte_line_and_garbage() {
    let mut big = b"key ".to_vec();
    big.extend(std::iter::repeat_n(b'x', 10 << 20));
    big.extend_from_slice(b"\n\xff\xfe\x00 bad\n");
    let m = source::parse_entries(&big, "t", "t.db", source::Format::Postmap, &quiet());
    assert_eq!(m.get("key").map(String::len), Some(10 << 20));
    let t = PatternTable::parse(Dialect::Posix, "r", &big, &quiet());
    assert_eq!(t.lookup("key").ok().flatten(), None);
}

#[test]
fn missing_files_name_the_file() {
    let e = postern::maps::open("regexp:/nonexistent/x", &quiet())
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("open /nonexistent/x: No such file or directory")
    );
    let e = postern::maps::open("hash:/nonexistent/access", &quiet())
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("open database /nonexistent/access: No such file or directory")
    );
    let e = postern::maps::open("nosuch:x", &quiet())
        .err()
        .map(|e| e.to_string());
    assert_eq!(e.as_deref(), Some("unsupported dictionary type: nosuch"));
}

#[test]
fn db_newer_than_source_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("access");
    std::fs::write(&src, "a OK\n").expect("src");
    let db = dir.path().join("access.db");
    std::fs::write(&db, "").expect("db");
    let f = std::fs::File::options()
        .write(true)
        .open(&db)
        .expect("open");
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .expect("mtime");
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s2 = seen.clone();
    let opts = OpenOptions {
        warn: Arc::new(move |m: &str| s2.lock().expect("lock").push(m.to_string())),
        ..OpenOptions::default()
    };
    let t = postern::maps::open(&format!("hash:{}", src.display()), &opts).expect("open");
    assert_eq!(t.lookup("A").ok().flatten().as_deref(), Some("OK"));
    let w = seen.lock().expect("lock").join("\n");
    assert!(w.contains("is newer than source file"), "{w}");
    assert!(!dir.path().join("access.postern.lmdb").exists());
}

/// Files the real `postmap lmdb:` wrote are read with Postfix's trailing-NUL keys, and files
/// Postern writes are read by the real `postmap -q`. Skipped where Postfix is not installed.
#[test]
fn lmdb_interoperates_with_real_postfix() {
    if Command::new("postmap").arg("-V").output().is_err() {
        eprintln!("real postmap not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cf = dir.path().join("cf");
    std::fs::create_dir(&cf).expect("cf");
    std::fs::write(cf.join("main.cf"), "").expect("main.cf");
    let real = dir.path().join("real");
    std::fs::write(&real, "Foo bar\nx@y.com val 1\n").expect("table");
    let st = Command::new("postmap")
        .arg("-c")
        .arg(&cf)
        .arg(format!("lmdb:{}", real.display()))
        .status()
        .expect("real postmap");
    assert!(st.success());
    let t = postern::maps::open(&format!("lmdb:{}", real.display()), &quiet()).expect("open");
    assert_eq!(t.lookup("FOO").ok().flatten().as_deref(), Some("bar"));
    assert_eq!(t.lookup("x@y.com").ok().flatten().as_deref(), Some("val 1"));

    let ours = dir.path().join("ours");
    std::fs::write(&ours, "Key value here\n").expect("table");
    let st = Command::new(BIN)
        .args(["postmap", "-c"])
        .arg(&cf)
        .arg(format!("lmdb:{}", ours.display()))
        .status()
        .expect("our postmap");
    assert!(st.success());
    let out = Command::new("postmap")
        .arg("-c")
        .arg(&cf)
        .args(["-q", "key"])
        .arg(format!("lmdb:{}", ours.display()))
        .output()
        .expect("real postmap -q");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "value here\n");
}

/// Tables large enough for every kind of page LMDB writes (branch pages over leaf pages,
/// three levels; overflow pages for values longer than a page's share) read the same by
/// Postern's reader (`maps::lmdb_file`) and by the real Postfix's LMDB: a table the real
/// `postmap lmdb:` built lists the same under both `postmap -s`, and so does one Postern
/// built; and each side's `postmap -q` finds the other's long values. Skipped where
/// Postfix is not installed.
#[test]
fn large_lmdb_tables_read_the_same_by_both() {
    if Command::new("postmap").arg("-V").output().is_err() {
        eprintln!("real postmap not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cf = dir.path().join("cf");
    std::fs::create_dir(&cf).expect("cf");
    std::fs::write(cf.join("main.cf"), "").expect("main.cf");
    let mut text = String::new();
    for i in 0..40_000u32 {
        text.push_str(&format!(
            "user{}@example{}.test relay:[mx{}.example.net]\n",
            i * 7919 % 40_000,
            i % 97,
            i % 13
        ));
    }
    for (i, len) in [4000usize, 5000, 9000, 70_000].into_iter().enumerate() {
        text.push_str(&format!("long{i}.example {}\n", "x".repeat(len)));
    }
    let postmap = |real: bool, args: &[&str]| {
        let mut c = if real {
            Command::new("postmap")
        } else {
            let mut c = Command::new(BIN);
            c.arg("postmap");
            c
        };
        let out = c.arg("-c").arg(&cf).args(args).output().expect("postmap");
        assert!(out.status.success(), "{real} {args:?}: {out:?}");
        out.stdout
    };
    for real_builds in [true, false] {
        let table = dir.path().join(format!("t-{real_builds}"));
        std::fs::write(&table, &text).expect("table");
        let spec = format!("lmdb:{}", table.display());
        postmap(real_builds, &[&spec]);
        let len = std::fs::metadata(table.with_extension("lmdb"))
            .unwrap()
            .len();
        assert!(len > 2 << 20, "{len}");
        let theirs = postmap(true, &["-s", &spec]);
        let ours = postmap(false, &["-s", &spec]);
        assert_eq!(
            String::from_utf8_lossy(&theirs).lines().count(),
            40_004,
            "built by the real postmap: {real_builds}"
        );
        assert!(
            ours == theirs,
            "postmap -s differs (built by the real postmap: {real_builds})"
        );
        for key in ["long3.example", "user39999@example11.test"] {
            assert_eq!(
                postmap(false, &["-q", key, &spec]),
                postmap(true, &["-q", key, &spec]),
                "{key}"
            );
        }
    }
}
