//! Opening an LMDB environment (`heed`'s `EnvOpenOptions::open` is `unsafe`: LMDB maps
//! the file, so the caller must rule out its changing under the map and the same file
//! being opened twice in one process), with the flags Postfix's `dict_lmdb.c` uses: one
//! file (`MDB_NOSUBDIR`), no lock file (`MDB_NOLOCK`), at most the unnamed database.
//!
//! LMDB trusts the file it maps: a file shorter than the pages its meta page says are in
//! use (cut by a full disk or an interrupted copy) makes the first read of a missing page
//! die of SIGBUS — in Postfix 3.7's `postmap -q` as in Postern (tried while writing the
//! `map_lmdb` fuzz target; Postfix does no check of its own). [`open_read_only`] therefore
//! reads the two meta pages first, as `mdb_env_read_header` does, and refuses such a file
//! with an error (`truncated LMDB file: N bytes, its meta page uses M`). That is not a
//! full check: LMDB bounds page numbers by the meta page's last page, but not the sizes
//! and offsets inside a page, so a file corrupted inside its pages still crashes the
//! reader (the fuzz target's first seconds: a value whose size reaches past the end of the
//! file, SIGBUS when it is copied; Postfix's `postmap -q` of another key survives it, as
//! it reads one record). Only a reader of its own, bounds-checked, would remove that.

use std::path::Path;

pub use heed::{Env, Error, WithoutTls};

/// Open `path` read-only. The caller promises that writers replace the file by rename,
/// never in place (so a reader's map never changes under it), and that it serialises its
/// own opens of one file (heed refuses a second open of the same path in one process).
pub fn open_read_only(path: &Path) -> Result<Env<WithoutTls>, Error> {
    check_length(path)?;
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

/// `MDB_MAGIC`, the first word of an LMDB meta page's data.
const MDB_MAGIC: u32 = 0xBEEF_C0DE;
/// The size of LMDB's page header (`PAGEHDRSZ`) on 64-bit systems.
const PAGEHDRSZ: usize = 16;

/// The fields of one meta page LMDB's reader depends on: page size, last page in use and
/// the transaction that wrote it; `None` when it is not an LMDB meta page (LMDB's own
/// open then fails with `MDB_INVALID`).
fn meta(page: &[u8]) -> Option<(u64, u64, u64)> {
    let u32_at = |o: usize| Some(u32::from_le_bytes(page.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(page.get(o..o + 8)?.try_into().ok()?));
    if u32_at(PAGEHDRSZ)? != MDB_MAGIC {
        return None;
    }
    // `MDB_meta` after the page header: magic, version, address, mapsize, then two
    // `MDB_db` of 48 bytes (the page size in the first's `md_pad`), last page, txnid.
    let psize = u64::from(u32_at(PAGEHDRSZ + 24)?);
    let last = u64_at(PAGEHDRSZ + 120)?;
    let txnid = u64_at(PAGEHDRSZ + 128)?;
    Some((psize, last, txnid))
}

/// Refuse a file shorter than the pages its newest meta page says are in use (see the
/// module header). Meta pages LMDB itself refuses are left to it.
fn check_length(path: &Path) -> Result<(), Error> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut head = vec![0u8; 256];
    if f.read_exact(&mut head).is_err() {
        return Ok(());
    }
    let Some(m0) = meta(&head) else {
        return Ok(());
    };
    let mut newest = m0;
    let mut second = vec![0u8; 256];
    // LMDB reads the second meta page at the first one's page size.
    if m0.0 >= 256
        && f.seek(SeekFrom::Start(m0.0)).is_ok()
        && f.read_exact(&mut second).is_ok()
        && let Some(m1) = meta(&second)
        && m1.2 > m0.2
    {
        newest = m1;
    }
    let (psize, last, _) = newest;
    let need = last.checked_add(1).and_then(|n| n.checked_mul(psize));
    match need {
        Some(need) if need <= len => Ok(()),
        _ => Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            match need {
                Some(need) => {
                    format!("truncated LMDB file: {len} bytes, its meta page uses {need}")
                }
                None => format!("corrupt LMDB meta page: {last} pages of {psize} bytes"),
            },
        ))),
    }
}
