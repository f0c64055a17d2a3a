//! `lmdb:` map files (Postfix's `dict_lmdb.c` layout, and Postern's own
//! `NAME.postern.lmdb` index of `hash:`/`btree:` tables): the input is the whole file,
//! written to `t.lmdb` in a scratch directory, then opened as `lmdb:t` (LMDB maps it
//! read-only, `MDB_NOSUBDIR | MDB_NOLOCK`), every record read and a few keys looked up.
//! A truncated or corrupted file must give an error (`open database …`, or the LMDB error
//! text), never a crash. The seeds are files Postern's `postmap lmdb:` wrote.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::maps::Table;
use postern::maps::indexed::{LmdbTable, lmdb_read_raw};
use std::path::PathBuf;
use std::sync::OnceLock;

#[path = "common.rs"]
mod common;

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| common::scratch("map-lmdb"))
}

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let base = dir().join("t");
    let file = dir().join("t.lmdb");
    // A new file each run (not rewritten in place under an old map).
    let _ = std::fs::remove_file(&file);
    std::fs::write(&file, data).expect("write t.lmdb");
    let _ = lmdb_read_raw(&file);
    let name = base.to_string_lossy();
    let opts = common::quiet_map_options();
    if let Ok(t) = LmdbTable::open(&name, &format!("lmdb:{name}"), &opts) {
        for k in ["alice@example.com", "example.com", "alice", "192.0.2.1", ""] {
            let _ = t.lookup(k);
        }
        let _ = t.entries();
    }
});
