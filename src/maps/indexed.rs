//! Indexed tables: `hash:`/`btree:` (Berkeley DB in Postfix), `lmdb:` and `texthash:`.
//!
//! `hash:NAME` and `btree:NAME` never touch the Berkeley DB file `NAME.db`: no Rust crate reads
//! it, and a real Postfix must find it untouched after a swap back. Postern reads the text
//! source `NAME` instead, or its own index `NAME.postern.lmdb` (an LMDB file in Postfix's
//! `lmdb:` layout, written by Postern's `postmap`/`postalias`) when that index is at least as
//! new as the source. Warnings:
//! - the index is older than the source: `database NAME.postern.lmdb is older than source
//!   file NAME` (Postfix's words for a stale `.db`); the source is read;
//! - `NAME.db` is newer than the source: the `.db` may hold entries the text lacks (someone ran
//!   the real `postmap` on a different text, or edited the `.db` directly);
//! - the source is missing but the index exists: the index is used.
//!
//! A missing source and index fail with `open database NAME: No such file or directory`.
//!
//! `dbm:NAME` is read the same way (through its source or Postern's index).
//!
//! Indexes are written ([`lmdb_write`]) to a temporary file in the same directory and
//! renamed, with the mode and owner Postfix gives its `.db` ([`WritePerms`]).
//!
//! `lmdb:NAME` reads and writes `NAME.lmdb` as Postfix's `dict_lmdb.c` does: one unnamed
//! database, `MDB_NOSUBDIR`, no lock file (`MDB_NOLOCK`, Postfix locks the file itself), keys
//! and values stored with a trailing NUL (`DICT_FLAG_TRY1NULL`); lookups try the key with and
//! without the NUL, as Postfix does for files built elsewhere.
//!
//! LMDB files (`lmdb:` tables and Postern's indexes) are written through LMDB (`heed`,
//! `sys::lmdb`) but read by [`super::lmdb_file`], Postern's own reader, which checks every
//! page number, offset and size against the file: LMDB checks none inside a page, and a
//! damaged file made it (and the real Postfix) die of SIGBUS. A damaged file fails to open
//! with `open database NAME.lmdb: corrupt LMDB file: …` (or `truncated LMDB file: …`), which
//! a service treats as any table it cannot open (`NAME is unavailable`, a temporary lookup
//! failure), and reads again once the file changes.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use indexmap::IndexMap;

use super::lmdb_file::LmdbFile;
use super::source::{Format, parse_entries};
use super::{MapError, OpenOptions, Table};

/// The suffix of Postern's own index beside a `hash:`/`btree:` source.
pub const POSTERN_INDEX_SUFFIX: &str = ".postern.lmdb";

fn mtime(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The index file Postern keeps for `hash:NAME`/`btree:NAME`.
pub fn postern_index_path(name: &str) -> PathBuf {
    PathBuf::from(format!("{name}{POSTERN_INDEX_SUFFIX}"))
}

/// Entries of an in-memory table with their lookup rule.
#[derive(Debug, Default)]
struct Entries {
    map: IndexMap<String, String>,
    fold: bool,
}

impl Entries {
    fn get(&self, key: &str) -> Option<String> {
        if self.fold {
            self.map.get(&super::fold(key)).cloned()
        } else {
            self.map.get(key).cloned()
        }
    }
    fn list(&self) -> Vec<(String, String)> {
        self.map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// `hash:NAME` / `btree:NAME`, read through the text source (module docs).
#[derive(Debug)]
pub struct SourceTable {
    spec: String,
    entries: Entries,
    sources: Vec<(PathBuf, Option<SystemTime>)>,
}

impl SourceTable {
    /// Open with the text source in postmap format.
    pub fn open(kind: &str, name: &str, spec: &str, opts: &OpenOptions) -> Result<Self, MapError> {
        Self::open_format(kind, name, spec, Format::Postmap, opts)
    }

    /// Open with a chosen source format (`Format::Aliases` for `alias_maps`).
    pub fn open_format(
        kind: &str,
        name: &str,
        spec: &str,
        format: Format,
        opts: &OpenOptions,
    ) -> Result<Self, MapError> {
        let source = PathBuf::from(name);
        let index = postern_index_path(name);
        let db = PathBuf::from(format!("{name}.db"));
        let src_time = mtime(&source);
        let idx_time = mtime(&index);
        let db_time = mtime(&db);
        let sources = vec![(source.clone(), src_time), (index.clone(), idx_time)];
        let _ = kind;
        if let (Some(d), Some(s)) = (db_time, src_time)
            && d > s
        {
            opts.warn(&format!(
                "database {} is newer than source file {}: Postern reads the source, and the .db \
                 may hold entries the source lacks; check the source and run postmap {}",
                db.display(),
                source.display(),
                source.display()
            ));
        }
        let use_index = match (src_time, idx_time) {
            (None, Some(_)) => {
                opts.warn(&format!(
                    "{spec}: source file {} is missing; using Postern's index {}",
                    source.display(),
                    index.display()
                ));
                true
            }
            (Some(s), Some(i)) if i >= s => true,
            (Some(_), Some(_)) => {
                opts.warn(&format!(
                    "database {} is older than source file {}",
                    index.display(),
                    source.display()
                ));
                false
            }
            _ => false,
        };
        let map = if use_index {
            lmdb_read_map(&index)?
        } else {
            let bytes = fs::read(&source).map_err(|e| MapError::open_database(&source, e))?;
            parse_entries(&bytes, name, &format!("{}", db.display()), format, opts)
        };
        Ok(SourceTable {
            spec: spec.to_string(),
            entries: Entries {
                map,
                fold: opts.fold_case,
            },
            sources,
        })
    }
}

impl Table for SourceTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        Ok(self.entries.get(key))
    }
    fn spec(&self) -> &str {
        &self.spec
    }
    fn entries(&self) -> Option<Vec<(String, String)>> {
        Some(self.entries.list())
    }
    fn sources(&self) -> Vec<(PathBuf, Option<SystemTime>)> {
        self.sources.clone()
    }
}

/// `texthash:NAME`: the source read into memory at open, as Postfix's `dict_thash.c`.
#[derive(Debug)]
pub struct TextHash {
    spec: String,
    entries: Entries,
    sources: Vec<(PathBuf, Option<SystemTime>)>,
}

impl TextHash {
    pub fn open(name: &str, spec: &str, opts: &OpenOptions) -> Result<Self, MapError> {
        let path = PathBuf::from(name);
        let t = mtime(&path);
        let bytes = fs::read(&path).map_err(|e| MapError::open(&path, e))?;
        let map = parse_entries(&bytes, name, spec, Format::Postmap, opts);
        Ok(TextHash {
            spec: spec.to_string(),
            entries: Entries {
                map,
                fold: opts.fold_case,
            },
            sources: vec![(path, t)],
        })
    }
}

impl Table for TextHash {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        Ok(self.entries.get(key))
    }
    fn spec(&self) -> &str {
        &self.spec
    }
    fn entries(&self) -> Option<Vec<(String, String)>> {
        Some(self.entries.list())
    }
    fn sources(&self) -> Vec<(PathBuf, Option<SystemTime>)> {
        self.sources.clone()
    }
}

/// `lmdb:NAME`: the file `NAME.lmdb`, read into memory when opened.
#[derive(Debug)]
pub struct LmdbTable {
    spec: String,
    entries: Entries,
    sources: Vec<(PathBuf, Option<SystemTime>)>,
}

impl LmdbTable {
    pub fn open(name: &str, spec: &str, opts: &OpenOptions) -> Result<Self, MapError> {
        let path = PathBuf::from(format!("{name}.lmdb"));
        let t = mtime(&path);
        let map = lmdb_read_map(&path)?;
        Ok(LmdbTable {
            spec: spec.to_string(),
            entries: Entries {
                map,
                fold: opts.fold_case,
            },
            sources: vec![(path, t)],
        })
    }
}

impl Table for LmdbTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        Ok(self.entries.get(key))
    }
    fn spec(&self) -> &str {
        &self.spec
    }
    fn entries(&self) -> Option<Vec<(String, String)>> {
        Some(self.entries.list())
    }
    fn sources(&self) -> Vec<(PathBuf, Option<SystemTime>)> {
        self.sources.clone()
    }
}

/// heed refuses to open one path twice at the same time in a process; every write here
/// is short (write all, then close), so one lock serialises them.
static LMDB_LOCK: Mutex<()> = Mutex::new(());

fn lmdb_err(path: &Path, e: heed::Error) -> MapError {
    match e {
        heed::Error::Io(io) => MapError::open_database(path, io),
        other => MapError::Other(format!("{}: {other}", path.display())),
    }
}

/// One LMDB record as stored: key bytes, value bytes.
pub type RawRecord = (Vec<u8>, Vec<u8>);

fn strip_nul(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\0").unwrap_or(b)
}

/// Every record of a Postfix-layout LMDB file, in the file's (byte-sorted) order, with raw
/// bytes as stored (trailing NULs included).
pub fn lmdb_read_raw(path: &Path) -> Result<Vec<RawRecord>, MapError> {
    let mut out = Vec::new();
    lmdb_for_each(path, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(())
    })?;
    Ok(out)
}

/// Give every record of a Postfix-layout LMDB file to `f`, in the file's (byte-sorted)
/// order, with raw bytes as stored, without holding them all (`postmap -i` on a large
/// index).
pub fn lmdb_for_each<F>(path: &Path, f: &mut F) -> Result<(), MapError>
where
    F: FnMut(&[u8], &[u8]) -> Result<(), MapError>,
{
    // Read by Postern's own bounds-checked reader, not LMDB (see super::lmdb_file): a
    // corrupt file is an error, never a signal. Writers replace the file by rename, so the
    // file opened here stays whole while it is read.
    let file = LmdbFile::open(path).map_err(|e| MapError::open_database(path, e))?;
    file.for_each(|k, v| f(k, v))
        .map_err(|e| MapError::open_database(path, e))?
}

fn lmdb_read_map(path: &Path) -> Result<IndexMap<String, String>, MapError> {
    let mut map = IndexMap::new();
    for (k, v) in lmdb_read_raw(path)? {
        let k = String::from_utf8_lossy(strip_nul(&k)).into_owned();
        let v = String::from_utf8_lossy(strip_nul(&v)).into_owned();
        map.entry(k).or_insert(v);
    }
    Ok(map)
}

/// Who owns an index file `postmap`/`postalias` writes, and with which mode (Postfix's rules,
/// see [`WritePerms::for_index`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritePerms {
    /// Permission bits of the file.
    pub mode: u32,
    /// Owner and group to give the file (`None`: whoever creates it).
    pub owner: Option<(u32, u32)>,
    /// Create and rename the file with this effective uid and gid (Postfix's `set_eugid()`
    /// to the source file's owner when run by root), so that a source owner cannot make
    /// root write through a link of theirs.
    pub run_as: Option<(u32, u32)>,
}

impl WritePerms {
    /// As Postfix's `postmap`/`postalias` 3.7 (checked as root with umask 022 and 077):
    /// an index rebuilt in place keeps its mode, owner and group; a new one gets the source
    /// file's owner and group and mode `0644` without the group/other bits the source lacks
    /// (`umask(022 | (~st_mode & 077))`, whatever the caller's umask). Run by root, the file
    /// is written as the source's owner. Because Postern's daemons read tables after they
    /// became `mail_owner` (Postfix's open them as root when they start), an index that
    /// `mail_owner` could not read is given its group and `g+r` (`mail_owner`: uid and gid).
    pub fn for_index(
        source: &fs::Metadata,
        existing: Option<&fs::Metadata>,
        root: bool,
        mail_owner: Option<(u32, u32)>,
    ) -> WritePerms {
        use std::os::unix::fs::MetadataExt;
        let (mut mode, mut owner) = match existing {
            Some(e) => (e.mode() & 0o7777, (e.uid(), e.gid())),
            None => (
                0o644 & !(0o022 | (!source.mode() & 0o077)),
                (source.uid(), source.gid()),
            ),
        };
        if root
            && let Some((mo_uid, mo_gid)) = mail_owner
            && !can_read(mode, owner, mo_uid, mo_gid)
        {
            owner.1 = mo_gid;
            mode |= 0o040;
        }
        let run_as = (root && (source.uid() != 0 || source.gid() != 0))
            .then(|| (source.uid(), source.gid()));
        WritePerms {
            mode,
            owner: root.then_some(owner),
            run_as,
        }
    }
}

/// Whether a file of this mode and owner is readable by uid/gid (primary group only).
fn can_read(mode: u32, (uid, gid): (u32, u32), who: u32, who_gid: u32) -> bool {
    (uid == who && mode & 0o400 != 0) || (gid == who_gid && mode & 0o040 != 0) || mode & 0o004 != 0
}

/// Run `f` with the effective uid and gid `id` (and that group alone), then become root
/// again. Only called as root.
fn as_identity<T>(id: Option<(u32, u32)>, f: impl FnOnce() -> T) -> Result<T, MapError> {
    use nix::unistd::{Gid, Uid, getegid, geteuid, getgroups, setegid, seteuid, setgroups};
    let Some((uid, gid)) = id else {
        return Ok(f());
    };
    let err = |what: &str, e: nix::Error| MapError::Other(format!("{what}: {}", e.desc()));
    let saved = (
        geteuid(),
        getegid(),
        getgroups().map_err(|e| err("getgroups", e))?,
    );
    setgroups(&[Gid::from_raw(gid)]).map_err(|e| err("setgroups", e))?;
    setegid(Gid::from_raw(gid)).map_err(|e| err("setegid", e))?;
    seteuid(Uid::from_raw(uid)).map_err(|e| err("seteuid", e))?;
    let out = f();
    seteuid(saved.0).map_err(|e| err("seteuid", e))?;
    setegid(saved.1).map_err(|e| err("setegid", e))?;
    setgroups(&saved.2).map_err(|e| err("setgroups", e))?;
    Ok(out)
}

/// Write `records` (keys and values as stored, in byte order, each key once) as a
/// Postfix-layout LMDB file at `path`, replacing it atomically (a temporary file in the
/// same directory, then rename), with the mode and owner of `perms`. The records are
/// taken one at a time and appended, committed every few megabytes, so a table of any
/// size is written in bounded memory; `payload` (the bytes of keys and values, about)
/// sizes the map. [`with_nul`] makes the stored form of a key or value as Postfix writes
/// it by default (`postmap -N`; `postmap -n` turns it off). Errors name `path` (`open
/// database /etc/aliases.postern.lmdb: Permission denied`), as Postfix names its `.db`.
pub fn lmdb_write(
    path: &Path,
    records: &mut dyn Iterator<Item = Result<RawRecord, MapError>>,
    payload: u64,
    perms: &WritePerms,
) -> Result<(), MapError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp_name = format!(".{file}.postern-tmp.{}", std::process::id());
    let tmp = match dir {
        Some(d) => d.join(&tmp_name),
        // heed canonicalises the parent of a file that does not exist yet: give it one.
        None => Path::new(".").join(&tmp_name),
    };
    let named = |e: MapError| match e {
        MapError::OpenDatabase { source, .. } => MapError::open_database(path, source),
        other => other,
    };
    // Postfix updates an existing database in place, which needs write permission on it
    // for the user postmap runs as: the same check here, before the new file replaces it.
    if path.exists() {
        let writable = as_identity(perms.run_as, || {
            nix::unistd::faccessat(
                nix::fcntl::AT_FDCWD,
                path,
                nix::unistd::AccessFlags::W_OK,
                nix::fcntl::AtFlags::AT_EACCESS,
            )
        })?;
        if let Err(e) = writable {
            return Err(MapError::open_database(
                path,
                std::io::Error::from_raw_os_error(e as i32),
            ));
        }
    }
    let written = as_identity(perms.run_as, || {
        let _ = fs::remove_file(&tmp);
        lmdb_create(&tmp, records, payload)
    })?;
    if let Err(e) = written {
        let _ = as_identity(perms.run_as, || fs::remove_file(&tmp));
        return Err(named(e));
    }
    // Owner and mode on the open file, never through a name a source owner could swap.
    let set = (|| -> std::io::Result<()> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let f = fs::File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        let m = f.metadata()?;
        let creator = perms
            .run_as
            .map(|(u, _)| u)
            .unwrap_or_else(|| nix::unistd::geteuid().as_raw());
        if !m.file_type().is_file() || m.uid() != creator {
            return Err(std::io::Error::other("temporary file replaced"));
        }
        if let Some((uid, gid)) = perms.owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(perms.mode))?;
        f.sync_all()
    })();
    if let Err(e) = set {
        let _ = as_identity(perms.run_as, || fs::remove_file(&tmp));
        return Err(MapError::open_database(path, e));
    }
    as_identity(perms.run_as, || fs::rename(&tmp, path))?
        .map_err(|e| MapError::open_database(path, e))?;
    Ok(())
}

/// `s` as stored in a Postfix-layout LMDB file: with a trailing NUL when `with_nul`.
pub fn with_nul(s: &str, with_nul: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(s.len() + 1);
    b.extend_from_slice(s.as_bytes());
    if with_nul {
        b.push(0);
    }
    b
}

/// Payload between two commits of [`lmdb_create`]: LMDB keeps a transaction's dirty pages
/// in memory until it commits.
const COMMIT_EVERY_BYTES: usize = 8 << 20;

/// Create the LMDB file `tmp` (a new name in the target's directory) holding `records`
/// (sorted, unique: each is appended after the last).
fn lmdb_create(
    tmp: &Path,
    records: &mut dyn Iterator<Item = Result<RawRecord, MapError>>,
    payload: u64,
) -> Result<(), MapError> {
    // Postfix's lmdb_map_size default is 16 MB; grow for large tables.
    let map_size = (16usize << 20).max((payload as usize).saturating_mul(4).next_multiple_of(4096));
    let _guard = LMDB_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // A fresh temporary file that only this process knows about. NO_SYNC (set by
    // sys::lmdb::create): the intermediate commits are not synced, the file is once at the
    // end (force_sync).
    let env = crate::sys::lmdb::create(tmp, map_size).map_err(|e| lmdb_err(tmp, e))?;
    let wtxn = env.write_txn().map_err(|e| lmdb_err(tmp, e))?;
    let db = env
        .create_databases_and_commit(wtxn, |wdo, wtxn| -> Result<_, heed::Error> {
            let db = wdo.create_database::<heed::types::Bytes, heed::types::Bytes>(wtxn, None)?;
            Ok(heed::CommitOrAbort::<_, ()>::Commit(db))
        })
        .map_err(|e| lmdb_err(tmp, e))?;
    let heed::CommitOrAbort::Commit(db) = db else {
        return Err(MapError::Other(format!(
            "{}: cannot create database",
            tmp.display()
        )));
    };
    let mut wtxn = env.write_txn().map_err(|e| lmdb_err(tmp, e))?;
    let mut since_commit = 0usize;
    for record in records {
        let (k, v) = record?;
        // In order and each key once: appended, pages filled to the end.
        db.put_with_flags(&mut wtxn, heed::PutFlags::APPEND, &k, &v)
            .map_err(|e| lmdb_err(tmp, e))?;
        since_commit += k.len() + v.len() + 16;
        if since_commit >= COMMIT_EVERY_BYTES {
            wtxn.commit().map_err(|e| lmdb_err(tmp, e))?;
            wtxn = env.write_txn().map_err(|e| lmdb_err(tmp, e))?;
            since_commit = 0;
        }
    }
    wtxn.commit().map_err(|e| lmdb_err(tmp, e))?;
    env.force_sync().map_err(|e| lmdb_err(tmp, e))?;
    Ok(())
}

/// Read a Postfix-layout LMDB file into `(key, value)` strings with NULs stripped, in file
/// order (`postmap -s`).
pub fn lmdb_entries(path: &Path) -> Result<Vec<(String, String)>, MapError> {
    Ok(lmdb_read_map(path)?.into_iter().collect())
}

/// A raw map for callers that already hold the entries (tests, `inline:`).
pub fn lookup_in(map: &HashMap<String, String>, key: &str, fold: bool) -> Option<String> {
    if fold {
        map.get(&super::fold(key)).cloned()
    } else {
        map.get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn meta_with_mode(dir: &Path, name: &str, mode: u32) -> fs::Metadata {
        let p = dir.join(name);
        fs::write(&p, "x\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        fs::metadata(&p).unwrap()
    }

    /// The modes the real postmap 3.7 gave a new `.db` for these source modes, whatever
    /// the umask (recorded in compat-fixtures/lookup/postmap-perms).
    #[test]
    fn new_index_mode_follows_the_source() {
        let dir = tempfile::tempdir().unwrap();
        for (src, db) in [
            (0o600, 0o600),
            (0o644, 0o644),
            (0o640, 0o640),
            (0o666, 0o644),
            (0o604, 0o604),
            (0o400, 0o600),
        ] {
            let m = meta_with_mode(dir.path(), &format!("s{src:o}"), src);
            let p = WritePerms::for_index(&m, None, false, None);
            assert_eq!(p.mode, db, "source {src:o}");
            assert_eq!(p.owner, None);
            assert_eq!(p.run_as, None);
        }
    }

    #[test]
    fn existing_index_keeps_its_mode_and_mail_owner_can_read() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let src = meta_with_mode(dir.path(), "src", 0o644);
        let old = meta_with_mode(dir.path(), "old", 0o660);
        let p = WritePerms::for_index(&src, Some(&old), false, None);
        assert_eq!(p.mode, 0o660);
        // Run by root: the owner is set, and an index mail_owner could not read gets its
        // group and g+r.
        let private = meta_with_mode(dir.path(), "private", 0o600);
        let p = WritePerms::for_index(&private, None, true, Some((4242, 4343)));
        assert_eq!(p.mode, 0o640);
        assert_eq!(p.owner, Some((private.uid(), 4343)));
        let p = WritePerms::for_index(&src, None, true, Some((4242, 4343)));
        assert_eq!(p.mode, 0o644);
        assert_eq!(p.owner, Some((src.uid(), src.gid())));
    }
}
