//! Building an index (`postmap`, `postalias`) from a text source of any size in bounded
//! memory: the entries are sorted in chunks of a few megabytes, each chunk written to an
//! unnamed temporary file under `$TMPDIR` when there is more than one, and the chunks
//! merged into the one ordered stream of records that [`super::indexed::lmdb_write`]
//! appends to the LMDB file (which stores keys in byte order anyway).
//!
//! Duplicate keys are settled in the merge, where the records of one key meet in the order
//! they were read, as Postfix's `postmap` settles them while it writes: the first entry
//! stays and later ones are warned about (`DICT_FLAG_DUP_WARN`, the default), ignored
//! (`-w`) or replace it (`-r`). Records already in the index (`postmap -i`) come before the
//! source's; the entries `postalias` adds (`@`, `YP_*`) replace silently. Warnings, those
//! of the source's lines and those of duplicates, are given out in the order Postfix gives
//! them (the order of the source's lines) once the merge is over.
//!
//! Known limits: the warnings are held in memory until the end (a source of millions of
//! bad lines costs memory in proportion); the temporary chunk files need `$TMPDIR` (or
//! `/tmp`) to have room for a copy of the entries when the source is larger than one chunk.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};

use super::indexed::RawRecord;
use super::{Duplicates, MapError};

/// Where a record comes from, which decides what happens when it meets another of its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Already in the index (`postmap -i`): the first of these stays, silently.
    Existing,
    /// Read from the source: the duplicate policy decides.
    Source,
    /// Added by the tool (postalias's `@`, `YP_LAST_MODIFIED`, `YP_MASTER_NAME`): replaces
    /// whatever is there, silently.
    Added,
}

impl Origin {
    fn code(self) -> u8 {
        match self {
            Origin::Existing => 0,
            Origin::Source => 1,
            Origin::Added => 2,
        }
    }
    fn from_code(c: u8) -> Origin {
        match c {
            0 => Origin::Existing,
            1 => Origin::Source,
            _ => Origin::Added,
        }
    }
}

/// Bytes of entries (and their bookkeeping) held in memory before a chunk is sorted and
/// written out.
const CHUNK_BYTES: usize = 16 << 20;

/// One record of the chunk in memory: its place in the input and where its bytes are.
#[derive(Clone, Copy)]
struct Rec {
    seq: u64,
    off: u32,
    klen: u32,
    vlen: u32,
    origin: u8,
}

/// Records taken in input order, to be given back sorted by key ([`IndexBuilder::finish`]).
pub struct IndexBuilder {
    with_nul: bool,
    chunk_bytes: usize,
    data: Vec<u8>,
    recs: Vec<Rec>,
    runs: Vec<File>,
    seq: u64,
    payload: u64,
    warnings: RefCell<Vec<(u64, String)>>,
}

impl IndexBuilder {
    /// Keys and values are stored with a trailing NUL when `with_nul` (Postfix's default).
    pub fn new(with_nul: bool) -> IndexBuilder {
        Self::with_chunk_bytes(with_nul, CHUNK_BYTES)
    }

    /// [`IndexBuilder::new`] with another chunk size (tests use tiny ones, so that the
    /// merge of chunk files is exercised on small inputs).
    pub fn with_chunk_bytes(with_nul: bool, chunk_bytes: usize) -> IndexBuilder {
        IndexBuilder {
            with_nul,
            chunk_bytes: chunk_bytes.max(1),
            data: Vec::new(),
            recs: Vec::new(),
            runs: Vec::new(),
            seq: 0,
            payload: 0,
            warnings: RefCell::new(Vec::new()),
        }
    }

    /// A warning about the input read so far (a bad line): given out after the duplicate
    /// warnings of the records taken before it, and before those of later records.
    pub fn warn(&self, msg: &str) {
        self.warnings
            .borrow_mut()
            .push((2 * self.seq, msg.to_string()));
    }

    /// Take one entry.
    pub fn push(&mut self, key: &str, value: &str, origin: Origin) -> Result<(), MapError> {
        let nul = usize::from(self.with_nul);
        let need = key.len() + value.len() + 2 * nul;
        if !self.recs.is_empty()
            && self.data.len() + need + (self.recs.len() + 1) * std::mem::size_of::<Rec>()
                > self.chunk_bytes
        {
            self.spill()?;
        }
        let (Ok(off), Ok(klen), Ok(vlen)) = (
            u32::try_from(self.data.len()),
            u32::try_from(key.len() + nul),
            u32::try_from(value.len() + nul),
        ) else {
            return Err(MapError::Other(format!(
                "entry too large: key of {} bytes, value of {} bytes",
                key.len(),
                value.len()
            )));
        };
        self.data.extend_from_slice(key.as_bytes());
        if self.with_nul {
            self.data.push(0);
        }
        self.data.extend_from_slice(value.as_bytes());
        if self.with_nul {
            self.data.push(0);
        }
        self.recs.push(Rec {
            seq: self.seq,
            off,
            klen,
            vlen,
            origin: origin.code(),
        });
        self.seq += 1;
        self.payload += need as u64 + 16;
        Ok(())
    }

    /// Sort the chunk in memory by key, then input order.
    fn sort_chunk(&mut self) {
        let data = &self.data;
        let key = |r: &Rec| &data[r.off as usize..r.off as usize + r.klen as usize];
        self.recs
            .sort_unstable_by(|a, b| key(a).cmp(key(b)).then(a.seq.cmp(&b.seq)));
    }

    /// Write the sorted chunk to an unnamed temporary file and empty it.
    fn spill(&mut self) -> Result<(), MapError> {
        self.sort_chunk();
        let tmp_err = |e: io::Error| MapError::Other(format!("write temporary file: {e}"));
        let file = temp_file().map_err(tmp_err)?;
        let mut w = BufWriter::with_capacity(1 << 16, file);
        for r in &self.recs {
            let at = r.off as usize;
            let end = at + r.klen as usize + r.vlen as usize;
            w.write_all(&r.seq.to_le_bytes()).map_err(tmp_err)?;
            w.write_all(&[r.origin]).map_err(tmp_err)?;
            w.write_all(&r.klen.to_le_bytes()).map_err(tmp_err)?;
            w.write_all(&r.vlen.to_le_bytes()).map_err(tmp_err)?;
            w.write_all(&self.data[at..end]).map_err(tmp_err)?;
        }
        let mut file = w.into_inner().map_err(|e| tmp_err(e.into_error()))?;
        file.rewind().map_err(tmp_err)?;
        self.runs.push(file);
        self.recs.clear();
        self.data.clear();
        Ok(())
    }

    /// The bytes of keys and values taken (with some per-record overhead), to size the map.
    pub fn payload(&self) -> u64 {
        self.payload
    }

    /// The records in key order, each key once as `policy` settles duplicates; `dict_name`
    /// names the table in `duplicate entry` warnings (Postfix's `access.db`, `lmdb:access`).
    pub fn finish(mut self, policy: Duplicates, dict_name: &str) -> Result<Merged, MapError> {
        let mut sources = Vec::new();
        if self.runs.is_empty() {
            self.sort_chunk();
        } else if !self.recs.is_empty() {
            self.spill()?;
        }
        for f in std::mem::take(&mut self.runs) {
            sources.push(Run::File(BufReader::with_capacity(1 << 16, f)));
        }
        if !self.recs.is_empty() {
            sources.push(Run::Memory {
                data: std::mem::take(&mut self.data),
                recs: std::mem::take(&mut self.recs).into_iter(),
            });
        }
        let mut m = Merged {
            runs: sources,
            heap: BinaryHeap::new(),
            policy,
            dict_name: dict_name.to_string(),
            with_nul: self.with_nul,
            warnings: self.warnings.into_inner(),
        };
        for i in 0..m.runs.len() {
            m.refill(i)?;
        }
        Ok(m)
    }
}

/// An unnamed file in `$TMPDIR` (gone when closed), or a named one removed at once where
/// the file system has no `O_TMPFILE`.
fn temp_file() -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    let unnamed = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(&dir);
    match unnamed {
        Ok(f) => Ok(f),
        Err(_) => {
            static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.join(format!(".postmap-sort.{}.{n}", std::process::id()));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        }
    }
}

/// A sorted chunk: still in memory (the last one, or the only one), or in a file.
enum Run {
    Memory {
        data: Vec<u8>,
        recs: std::vec::IntoIter<Rec>,
    },
    File(BufReader<File>),
}

/// The head record of a chunk in the merge, ordered by key, then input order.
struct Head {
    key: Vec<u8>,
    value: Vec<u8>,
    seq: u64,
    origin: Origin,
    run: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key).then(self.seq.cmp(&other.seq))
    }
}

/// The merged records: an iterator of `(key, value)` as stored, in key order, each key
/// once. Its duplicate warnings, with those of the input, come from [`Merged::warnings`]
/// once it is consumed.
pub struct Merged {
    runs: Vec<Run>,
    heap: BinaryHeap<Reverse<Head>>,
    policy: Duplicates,
    dict_name: String,
    with_nul: bool,
    warnings: Vec<(u64, String)>,
}

impl Merged {
    /// Put the next record of chunk `i` on the heap.
    fn refill(&mut self, i: usize) -> Result<(), MapError> {
        let head = match &mut self.runs[i] {
            Run::Memory { data, recs } => recs.next().map(|r| {
                let k = r.off as usize;
                let v = k + r.klen as usize;
                Head {
                    key: data[k..v].to_vec(),
                    value: data[v..v + r.vlen as usize].to_vec(),
                    seq: r.seq,
                    origin: Origin::from_code(r.origin),
                    run: i,
                }
            }),
            Run::File(f) => read_record(f, i)
                .map_err(|e| MapError::Other(format!("read temporary file: {e}")))?,
        };
        if let Some(h) = head {
            self.heap.push(Reverse(h));
        }
        Ok(())
    }

    fn pop(&mut self) -> Result<Option<Head>, MapError> {
        let Some(Reverse(h)) = self.heap.pop() else {
            return Ok(None);
        };
        self.refill(h.run)?;
        Ok(Some(h))
    }

    fn next_record(&mut self) -> Result<Option<RawRecord>, MapError> {
        let Some(mut cur) = self.pop()? else {
            return Ok(None);
        };
        while self.heap.peek().is_some_and(|Reverse(h)| h.key == cur.key) {
            let Some(later) = self.pop()? else { break };
            match (later.origin, self.policy) {
                (Origin::Added, _) | (Origin::Source, Duplicates::Replace) => cur = later,
                (Origin::Existing, _) | (Origin::Source, Duplicates::Ignore) => {}
                (Origin::Source, Duplicates::Warn) => {
                    let key = if self.with_nul {
                        later.key.strip_suffix(b"\0").unwrap_or(&later.key)
                    } else {
                        &later.key
                    };
                    let msg = format!(
                        "{}: duplicate entry: \"{}\"",
                        self.dict_name,
                        String::from_utf8_lossy(key)
                    );
                    self.warnings.push((2 * later.seq + 1, msg));
                }
            }
        }
        Ok(Some((cur.key, cur.value)))
    }

    /// Every warning, in the order Postfix gives them: the input's and the duplicates'
    /// (call after the records were taken).
    pub fn warnings(&mut self) -> Vec<String> {
        let mut w = std::mem::take(&mut self.warnings);
        w.sort_by_key(|(at, _)| *at);
        w.into_iter().map(|(_, m)| m).collect()
    }
}

impl Iterator for Merged {
    type Item = Result<RawRecord, MapError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// One record of a chunk file (`None` at its end).
fn read_record(r: &mut impl Read, run: usize) -> io::Result<Option<Head>> {
    let mut fixed = [0u8; 17];
    match r.read_exact(&mut fixed[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut fixed[1..])?;
    let word =
        |at: usize| u32::from_le_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&fixed[..8]);
    let (klen, vlen) = (word(9) as usize, word(13) as usize);
    let mut key = vec![0u8; klen];
    r.read_exact(&mut key)?;
    let mut value = vec![0u8; vlen];
    r.read_exact(&mut value)?;
    Ok(Some(Head {
        key,
        value,
        seq: u64::from_le_bytes(seq),
        origin: Origin::from_code(fixed[8]),
        run,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(
        chunk: usize,
        policy: Duplicates,
        input: &[(&str, &str, Origin)],
    ) -> (Vec<(String, String)>, Vec<String>) {
        let mut b = IndexBuilder::with_chunk_bytes(false, chunk);
        for (k, v, o) in input {
            if k.is_empty() {
                b.warn(v);
            } else {
                b.push(k, v, *o).unwrap();
            }
        }
        let mut m = b.finish(policy, "t.db").unwrap();
        let recs: Vec<(String, String)> = m
            .by_ref()
            .map(|r| {
                let (k, v) = r.unwrap();
                (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
            })
            .collect();
        (recs, m.warnings())
    }

    /// The merge of chunk files gives what one sorted chunk in memory gives, and what the
    /// obvious map (first entry stays, or the last with Replace) holds.
    #[test]
    fn chunked_merge_equals_the_in_memory_sort() {
        use Origin::*;
        let mut input = Vec::new();
        let keys: Vec<String> = (0..500).map(|i| format!("k{}", (i * 37) % 211)).collect();
        let values: Vec<String> = (0..500).map(|i| format!("v{i}")).collect();
        input.push(("x", "old", Existing));
        input.push(("k5", "old", Existing));
        for i in 0..500 {
            if i == 250 {
                input.push(("", "bad line", Source));
            }
            input.push((keys[i].as_str(), values[i].as_str(), Source));
        }
        input.push(("k7", "added", Added));
        for policy in [Duplicates::Warn, Duplicates::Ignore, Duplicates::Replace] {
            let whole = build(usize::MAX, policy, &input);
            for chunk in [1, 64, 1000] {
                assert_eq!(
                    build(chunk, policy, &input),
                    whole,
                    "{policy:?} chunk {chunk}"
                );
            }
            let mut want = std::collections::BTreeMap::new();
            for (k, v, o) in &input {
                if k.is_empty() {
                    continue;
                }
                match (o, policy) {
                    (Added, _) | (Source, Duplicates::Replace) => {
                        want.insert(k.to_string(), v.to_string());
                    }
                    _ => {
                        want.entry(k.to_string()).or_insert(v.to_string());
                    }
                }
            }
            let want: Vec<(String, String)> = want.into_iter().collect();
            assert_eq!(whole.0, want, "{policy:?}");
        }
        // Warnings in input order: the duplicates read before the bad line, the bad line,
        // then the rest; none for the existing entries or the added one.
        let (_, warnings) = build(64, Duplicates::Warn, &input);
        let bad = warnings.iter().position(|w| w == "bad line").unwrap();
        assert!(
            warnings[..bad]
                .iter()
                .all(|w| w.starts_with("t.db: duplicate entry: "))
        );
        assert_eq!(warnings[0], "t.db: duplicate entry: \"k5\"");
        // keys[0..211] are distinct; keys[211] repeats keys[0] = k0.
        assert_eq!(warnings[1], "t.db: duplicate entry: \"k0\"");
        assert_eq!(warnings.len(), 1 + (500 - 211) + 1);
        assert!(build(64, Duplicates::Ignore, &input).1 == vec!["bad line".to_string()]);
    }

    #[test]
    fn stored_with_nul() {
        let mut b = IndexBuilder::with_chunk_bytes(true, 1);
        b.push("b", "2", Origin::Source).unwrap();
        b.push("a", "1", Origin::Source).unwrap();
        b.push("a", "3", Origin::Source).unwrap();
        let mut m = b.finish(Duplicates::Warn, "lmdb:t").unwrap();
        let recs: Vec<RawRecord> = m.by_ref().map(Result::unwrap).collect();
        assert_eq!(
            recs,
            vec![
                (b"a\0".to_vec(), b"1\0".to_vec()),
                (b"b\0".to_vec(), b"2\0".to_vec())
            ]
        );
        assert_eq!(
            m.warnings(),
            vec!["lmdb:t: duplicate entry: \"a\"".to_string()]
        );
    }
}
