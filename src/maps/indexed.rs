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
//! `lmdb:NAME` reads and writes `NAME.lmdb` as Postfix's `dict_lmdb.c` does: one unnamed
//! database, `MDB_NOSUBDIR`, no lock file (`MDB_NOLOCK`, Postfix locks the file itself), keys
//! and values stored with a trailing NUL (`DICT_FLAG_TRY1NULL`); lookups try the key with and
//! without the NUL, as Postfix does for files built elsewhere.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use indexmap::IndexMap;

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

/// heed refuses to open one path twice at the same time in a process; every open here is
/// short (read all, or write all, then close), so one lock serialises them.
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
    if let Err(e) = fs::metadata(path) {
        return Err(MapError::open_database(path, e));
    }
    let _guard = LMDB_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut options = heed::EnvOpenOptions::new().read_txn_without_tls();
    // SAFETY: MDB_NOLOCK as Postfix: Postern's writers replace the file by rename, never
    // in place, so a reader's map never changes under it; the env lives only in this block.
    let env = unsafe {
        options.flags(
            heed::EnvFlags::NO_SUB_DIR | heed::EnvFlags::READ_ONLY | heed::EnvFlags::NO_LOCK,
        );
        options.max_dbs(0);
        options.open(path)
    }
    .map_err(|e| lmdb_err(path, e))?;
    let rtxn = env.read_txn().map_err(|e| lmdb_err(path, e))?;
    let db = env
        .open_databases_and_commit(rtxn, |dbo, rtxn| -> Result<_, heed::Error> {
            let db = dbo.open_database::<heed::types::Bytes, heed::types::Bytes>(rtxn, None)?;
            Ok(heed::CommitOrAbort::<_, ()>::Commit(db))
        })
        .map_err(|e| lmdb_err(path, e))?;
    let db = match db {
        heed::CommitOrAbort::Commit(db) => db,
        heed::CommitOrAbort::Abort(()) => None,
    };
    let rtxn = env.read_txn().map_err(|e| lmdb_err(path, e))?;
    let mut out = Vec::new();
    if let Some(db) = db {
        for item in db.iter(&rtxn).map_err(|e| lmdb_err(path, e))? {
            let (k, v) = item.map_err(|e| lmdb_err(path, e))?;
            out.push((k.to_vec(), v.to_vec()));
        }
    }
    drop(rtxn);
    drop(env);
    Ok(out)
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

/// Write `entries` as a Postfix-layout LMDB file at `path`, replacing it atomically (a
/// temporary file in the same directory, then rename). `with_nul` stores keys and values with
/// a trailing NUL as Postfix does by default (`postmap -N`); `postmap -n` turns it off.
pub fn lmdb_write(
    path: &Path,
    entries: &[(String, String)],
    with_nul: bool,
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
    let _ = fs::remove_file(&tmp);
    let payload: usize = entries.iter().map(|(k, v)| k.len() + v.len() + 64).sum();
    // Postfix's lmdb_map_size default is 16 MB; grow for large tables.
    let map_size = (16usize << 20).max(payload.saturating_mul(4).next_multiple_of(4096));
    {
        let _guard = LMDB_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let mut options = heed::EnvOpenOptions::new().read_txn_without_tls();
        // SAFETY: a fresh temporary file that only this process knows about.
        let env = unsafe {
            options.flags(heed::EnvFlags::NO_SUB_DIR | heed::EnvFlags::NO_LOCK);
            options.max_dbs(0);
            options.map_size(map_size);
            options.open(&tmp)
        }
        .map_err(|e| lmdb_err(&tmp, e))?;
        let wtxn = env.write_txn().map_err(|e| lmdb_err(&tmp, e))?;
        let db = env
            .create_databases_and_commit(wtxn, |wdo, wtxn| -> Result<_, heed::Error> {
                let db =
                    wdo.create_database::<heed::types::Bytes, heed::types::Bytes>(wtxn, None)?;
                Ok(heed::CommitOrAbort::<_, ()>::Commit(db))
            })
            .map_err(|e| lmdb_err(&tmp, e))?;
        let heed::CommitOrAbort::Commit(db) = db else {
            return Err(MapError::Other(format!(
                "{}: cannot create database",
                tmp.display()
            )));
        };
        let mut wtxn = env.write_txn().map_err(|e| lmdb_err(&tmp, e))?;
        let mut kb = Vec::new();
        let mut vb = Vec::new();
        for (k, v) in entries {
            kb.clear();
            kb.extend_from_slice(k.as_bytes());
            vb.clear();
            vb.extend_from_slice(v.as_bytes());
            if with_nul {
                kb.push(0);
                vb.push(0);
            }
            db.put(&mut wtxn, &kb, &vb).map_err(|e| lmdb_err(&tmp, e))?;
        }
        wtxn.commit().map_err(|e| lmdb_err(&tmp, e))?;
        env.force_sync().map_err(|e| lmdb_err(&tmp, e))?;
    }
    // Postfix's files shrink to their used size on close; LMDB leaves the map size as the
    // file size only for growth, so nothing to trim here.
    fs::rename(&tmp, path).map_err(|e| MapError::open(path, e))?;
    Ok(())
}

/// Read a Postfix-layout LMDB file into `(key, value)` strings with NULs stripped, in file
/// order (`postmap -s`).
pub fn lmdb_entries(path: &Path) -> Result<Vec<(String, String)>, MapError> {
    Ok(lmdb_read_map(path)?.into_iter().collect())
}

/// Build the key → value map of a text source without the table wrapper (used by `postmap`
/// to create indexes).
pub fn read_source(
    path: &Path,
    dict_name: &str,
    format: Format,
    opts: &OpenOptions,
) -> Result<IndexMap<String, String>, MapError> {
    let bytes = fs::read(path).map_err(|e| MapError::open(path, e))?;
    Ok(parse_entries(
        &bytes,
        &path.display().to_string(),
        dict_name,
        format,
        opts,
    ))
}

/// A raw map for callers that already hold the entries (tests, `inline:`).
pub fn lookup_in(map: &HashMap<String, String>, key: &str, fold: bool) -> Option<String> {
    if fold {
        map.get(&super::fold(key)).cloned()
    } else {
        map.get(key).cloned()
    }
}
