//! Opening an LMDB environment (`heed`'s `EnvOpenOptions::open` is `unsafe`: LMDB maps
//! the file, so the caller must rule out its changing under the map and the same file
//! being opened twice in one process), with the flags Postfix's `dict_lmdb.c` uses: one
//! file (`MDB_NOSUBDIR`), no lock file (`MDB_NOLOCK`), at most the unnamed database.

use std::path::Path;

pub use heed::{Env, Error, WithoutTls};

/// Open `path` read-only. The caller promises that writers replace the file by rename,
/// never in place (so a reader's map never changes under it), and that it serialises its
/// own opens of one file (heed refuses a second open of the same path in one process).
pub fn open_read_only(path: &Path) -> Result<Env<WithoutTls>, Error> {
    let mut options = heed::EnvOpenOptions::new().read_txn_without_tls();
    // SAFETY: the caller's promise above: the file is never written in place, and no
    // other environment of this process has it open.
    unsafe {
        options.flags(
            heed::EnvFlags::NO_SUB_DIR | heed::EnvFlags::READ_ONLY | heed::EnvFlags::NO_LOCK,
        );
        options.max_dbs(0);
        options.open(path)
    }
}

/// Create (or open for writing) `path`, a fresh temporary file only this process knows
/// of, with room for `map_size` bytes. Commits are not synced (`NO_SYNC`): the caller syncs
/// the file once at the end (`Env::force_sync`).
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
