//! Creating an LMDB environment to write a table (`heed`'s `EnvOpenOptions::open` is
//! `unsafe`: LMDB maps the file, so the caller must rule out its changing under the map and
//! the same file being opened twice in one process), with the flags Postfix's
//! `dict_lmdb.c` uses: one file (`MDB_NOSUBDIR`), no lock file (`MDB_NOLOCK`), at most the
//! unnamed database.
//!
//! Only writing goes through LMDB. LMDB trusts the file it maps: it bounds page numbers by
//! the meta page's last page, but neither the file's length nor the sizes and offsets
//! inside a page, so a truncated or corrupted file makes a reader die of SIGBUS (in the
//! real Postfix 3.7's `postmap -q`/`-s` too; found by the `map_lmdb` fuzz target). Tables
//! are therefore read by `maps::lmdb_file`, a reader that checks every offset against the
//! file and uses `pread(2)` rather than a map.

use std::path::Path;

pub use heed::{Env, Error, WithoutTls};

/// Create (or open for writing) `path`, a fresh temporary file only this process knows
/// of, with room for `map_size` bytes. The caller serialises its own opens (heed refuses a
/// second open of the same path in one process). Commits are not synced (`NO_SYNC`): the
/// caller syncs the file once at the end (`Env::force_sync`).
pub fn create(path: &Path, map_size: usize) -> Result<Env<WithoutTls>, Error> {
    let mut options = heed::EnvOpenOptions::new().read_txn_without_tls();
    // SAFETY: the caller's promise above: no other process or environment uses the file.
    unsafe {
        options
            .flags(heed::EnvFlags::NO_SUB_DIR | heed::EnvFlags::NO_LOCK | heed::EnvFlags::NO_SYNC);
        options.max_dbs(0);
        options.map_size(map_size);
        options.open(path)
    }
}
