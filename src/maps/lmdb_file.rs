//! A read-only reader of LMDB files in the layout Postfix's `dict_lmdb.c` writes (one
//! unnamed database, no duplicates), that checks every page number, offset and size it
//! reads against the file, so that no file, however corrupt, can crash the process.
//!
//! Why not LMDB itself: LMDB maps the file and trusts it. It bounds page numbers by the
//! meta page's last page, but not the sizes and offsets of the records inside a page, so a
//! record whose size reaches past the end of the file makes the copy of its value read
//! past the map (SIGBUS), and a file shorter than its meta page says does the same on the
//! first missing page. The real Postfix 3.7's `postmap -q`/`-s` die of that too (tried on
//! the `map_lmdb` fuzz target's findings, tests/fuzz_regressions.rs). Postern reads every
//! `lmdb:` table and its own `.postern.lmdb` indexes here instead; LMDB (`heed`, through
//! `sys::lmdb`) still writes them, so the files stay byte for byte LMDB's.
//!
//! What is read, as LMDB 0.9's `mdb_env_read_header` and `mdb_page_search` do on a 64-bit
//! little-endian host (the only layout a table built here can have):
//! - the two meta pages (page 0, and page 1 at the first one's page size): `P_META`, magic
//!   `0xBEEFC0DE`, data version 1; the one with the higher transaction id is used: its page
//!   size, last page in use and the main database's root page;
//! - from the root, branch pages (`P_BRANCH`: each node's child page number in its size
//!   fields) down to leaf pages (`P_LEAF`: key, then the value, or for `F_BIGDATA` the page
//!   number of an overflow run `P_OVERFLOW` that holds it). Postfix opens the database
//!   without `MDB_DUPSORT`, so a node with duplicates or a sub-database (`F_DUPDATA`,
//!   `F_SUBDATA`) is refused as not a Postfix table.
//!
//! Checks, each failing with `corrupt LMDB file: …` (the caller adds `open database
//! NAME.lmdb: `): the file holds every page up to the meta page's last one (otherwise
//! `truncated LMDB file: N bytes, its meta page uses M`); every page referred to is a data
//! page (not a meta page) within that range, carries its own page number, has the type its
//! place in the tree needs, and is used once only (so no loop or shared subtree can make a
//! walk endless); the tree is at most 32 levels deep (LMDB's cursor stack); the pointer
//! array, each node's header, key and value lie inside their page, and an overflow value
//! inside its run. Errors LMDB itself reports at open keep its words, as Postfix prints
//! them: `MDB_INVALID: File is not an LMDB file`, `MDB_VERSION_MISMATCH: Database
//! environment version mismatch`, and `Bad file descriptor` for an empty file.
//!
//! Reading: the file is opened once and read with `pread(2)` a page at a time: no map, so
//! even a file cut or rewritten under the reader gives at worst an error, never a signal.
//! Postern's own writers replace a table by rename, so a reader keeps the file it opened.
//! The real Postfix's `postmap` updates a table in place instead, relying on LMDB's
//! copy-on-write (a commit writes new pages, then the meta page) and on `fcntl(2)` locks:
//! `dict_lmdb.c` takes a shared lock around each lookup and sequence step, and the writer
//! takes an exclusive one when it opens the table for an update (so that no reader still
//! uses pages it may reuse) and for each update. The reader therefore holds a shared
//! `fcntl` lock on the whole file while it reads (an open-file-description lock, so that
//! threads reading one table do not release each other's; it conflicts with Postfix's
//! record locks all the same).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// `MDB_MAGIC`, the first word of a meta page's data.
const MDB_MAGIC: u32 = 0xBEEF_C0DE;
/// `MDB_DATA_VERSION` of LMDB 0.9.
const MDB_DATA_VERSION: u32 = 1;
/// `PAGEHDRSZ` on 64-bit hosts: page number, pad, flags, lower and upper bounds.
const PAGEHDRSZ: usize = 16;
/// `NODESIZE`: a node's header (size or child page number, flags, key size).
const NODESIZE: usize = 8;
/// What LMDB reads of a meta page (`MDB_metabuf`: page header and `MDB_meta`).
const METABUF: usize = PAGEHDRSZ + 136;
/// LMDB's `CURSOR_STACK`: no tree is deeper.
const MAX_DEPTH: usize = 32;
/// The main database's root when it is empty.
const P_INVALID: u64 = u64::MAX;

const P_BRANCH: u16 = 0x01;
const P_LEAF: u16 = 0x02;
const P_OVERFLOW: u16 = 0x04;
const P_META: u16 = 0x08;
const P_LEAF2: u16 = 0x20;
const P_SUBP: u16 = 0x40;
const P_TYPES: u16 = P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2 | P_SUBP;

const F_BIGDATA: u16 = 0x01;
const F_SUBDATA: u16 = 0x02;
const F_DUPDATA: u16 = 0x04;

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(w)
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn corrupt(what: String) -> io::Error {
    invalid(format!("corrupt LMDB file: {what}"))
}

/// Wait for a shared `fcntl` lock on the whole file (module docs), released when the
/// file is closed.
fn lock_shared(file: &File) -> io::Result<()> {
    loop {
        match crate::sys::lock_whole_file(file, false, true) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The fields of a meta page the reader uses.
#[derive(Debug, Clone, Copy)]
struct Meta {
    psize: u64,
    last_pg: u64,
    txnid: u64,
    root: u64,
}

/// Parse one meta page as `mdb_env_read_header` checks it.
fn meta(buf: &[u8; METABUF]) -> io::Result<Meta> {
    let not_lmdb = || invalid("MDB_INVALID: File is not an LMDB file".into());
    if u16_at(buf, 10) & P_META == 0 {
        return Err(not_lmdb());
    }
    let m = &buf[PAGEHDRSZ..];
    if u32_at(m, 0) != MDB_MAGIC {
        return Err(not_lmdb());
    }
    if u32_at(m, 4) != MDB_DATA_VERSION {
        return Err(invalid(
            "MDB_VERSION_MISMATCH: Database environment version mismatch".into(),
        ));
    }
    // `MDB_meta`: magic, version, address, map size, then two `MDB_db` of 48 bytes (free
    // list, main database; the page size in the first one's `md_pad`), last page, txnid.
    // In an `MDB_db`: pad, flags, depth, branch, leaf and overflow page counts, entries,
    // root.
    Ok(Meta {
        psize: u64::from(u32_at(m, 24)),
        last_pg: u64_at(m, 120),
        txnid: u64_at(m, 128),
        root: u64_at(m, 72 + 40),
    })
}

/// An LMDB file opened for reading (module docs).
#[derive(Debug)]
pub struct LmdbFile {
    file: File,
    psize: usize,
    last_pg: u64,
    root: u64,
}

impl LmdbFile {
    /// Open `path`, take a shared lock on it, and check its meta pages and length.
    pub fn open(path: &Path) -> io::Result<LmdbFile> {
        let file = File::open(path)?;
        lock_shared(&file)?;
        let len = file.metadata()?.len();
        if len == 0 {
            // LMDB takes an empty file for a new environment, which a read-only open
            // cannot create: EBADF, in Postfix's words too.
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let read_meta = |off: u64| -> io::Result<Meta> {
            let mut buf = [0u8; METABUF];
            match file.read_exact_at(&mut buf, off) {
                Ok(()) => meta(&buf),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    Err(invalid("MDB_INVALID: File is not an LMDB file".into()))
                }
                Err(e) => Err(e),
            }
        };
        let m0 = read_meta(0)?;
        let m1 = read_meta(m0.psize)?;
        let m = if m1.txnid > m0.txnid { m1 } else { m0 };
        let psize = m.psize;
        // LMDB writes the host's page size: a power of two; anything else is damage.
        if !psize.is_power_of_two() || !(512..=65536).contains(&psize) {
            return Err(corrupt(format!("page size {psize} in the meta page")));
        }
        match m.last_pg.checked_add(1).and_then(|n| n.checked_mul(psize)) {
            Some(need) if need <= len => {}
            Some(need) => {
                return Err(invalid(format!(
                    "truncated LMDB file: {len} bytes, its meta page uses {need}"
                )));
            }
            None => {
                return Err(invalid(format!(
                    "corrupt LMDB meta page: {} pages of {psize} bytes",
                    m.last_pg
                )));
            }
        }
        Ok(LmdbFile {
            file,
            psize: psize as usize,
            last_pg: m.last_pg,
            root: m.root,
        })
    }

    /// Check that `pgno` may be read as a data page, and read `buf.len()` bytes from its
    /// start.
    fn read_page(&self, pgno: u64, buf: &mut [u8], from: u64) -> io::Result<()> {
        if pgno < 2 || pgno > self.last_pg {
            return Err(corrupt(format!(
                "{} refers to page {pgno}, outside pages 2 to {}",
                referrer(from),
                self.last_pg
            )));
        }
        // pgno <= last_pg, and (last_pg + 1) * psize fits the file (checked at open).
        self.file.read_exact_at(buf, pgno * self.psize as u64)?;
        if u64_at(buf, 0) != pgno {
            return Err(corrupt(format!(
                "page {pgno} is numbered {}",
                u64_at(buf, 0)
            )));
        }
        Ok(())
    }

    /// Give every record to `f` in the file's (key) order; stop at `f`'s first error,
    /// which is returned inside. The outer error is the file's: unreadable or corrupt.
    pub fn for_each<E>(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> io::Result<Result<(), E>> {
        if self.root == P_INVALID {
            return Ok(Ok(()));
        }
        let mut seen = Seen::new(self.last_pg);
        // One page buffer per level, and the next node to visit on each.
        let mut pages: Vec<Vec<u8>> = Vec::new();
        let mut stack: Vec<(usize, usize, u64)> = Vec::new(); // (next node, nodes, pgno)
        let mut value = Vec::new();
        let mut child = Some((self.root, META));
        loop {
            if let Some((pgno, parent)) = child.take() {
                let level = stack.len();
                if level >= MAX_DEPTH {
                    return Err(corrupt(format!(
                        "page {parent} leads deeper than {MAX_DEPTH} levels"
                    )));
                }
                seen.mark(pgno, parent)?;
                if pages.len() <= level {
                    pages.push(vec![0u8; self.psize]);
                }
                let page = &mut pages[level];
                self.read_page(pgno, page, parent)?;
                let nodes = self.check_page(pgno, page)?;
                let flags = u16_at(page, 10) & P_TYPES;
                if flags == P_BRANCH {
                    stack.push((0, nodes, pgno));
                } else if flags == P_LEAF {
                    for i in 0..nodes {
                        let page = &pages[level];
                        let (key, data) = self.leaf_node(pgno, page, i)?;
                        let data = match data {
                            Data::Inline(r) => &page[r],
                            Data::Overflow(opg, size) => {
                                seen.mark(opg, pgno)?;
                                self.read_overflow(pgno, opg, size, &mut value, &mut seen)?;
                                &value[..]
                            }
                        };
                        if let Err(e) = f(&page[key], data) {
                            return Ok(Err(e));
                        }
                    }
                } else {
                    return Err(corrupt(format!(
                        "page {pgno} is not a branch or leaf page (flags {:#x})",
                        u16_at(page, 10)
                    )));
                }
                continue;
            }
            let Some(top) = stack.last_mut() else {
                return Ok(Ok(()));
            };
            let (next, nodes, pgno) = *top;
            if next >= nodes {
                stack.pop();
                continue;
            }
            top.0 += 1;
            let page = &pages[stack.len() - 1];
            let off = self.node_at(pgno, page, next)?;
            let n = &page[off..off + NODESIZE];
            let child_pg = u64::from(u16_at(n, 0))
                | (u64::from(u16_at(n, 2)) << 16)
                | (u64::from(u16_at(n, 4)) << 32);
            let ksize = usize::from(u16_at(n, 6));
            if off + NODESIZE + ksize > self.psize {
                return Err(self.past_page(pgno, next));
            }
            child = Some((child_pg, pgno));
        }
    }

    /// Check a branch or leaf page's bounds (`mp_lower`, `mp_upper`) and return how many
    /// nodes it holds.
    fn check_page(&self, pgno: u64, page: &[u8]) -> io::Result<usize> {
        let lower = usize::from(u16_at(page, 12));
        let upper = usize::from(u16_at(page, 14));
        if lower < PAGEHDRSZ || lower > upper || upper > self.psize || lower % 2 != 0 {
            return Err(corrupt(format!(
                "page {pgno}: free space from {lower} to {upper} in a page of {}",
                self.psize
            )));
        }
        Ok((lower - PAGEHDRSZ) / 2)
    }

    /// The offset of node `i`'s header, checked to lie in the page's node area.
    fn node_at(&self, pgno: u64, page: &[u8], i: usize) -> io::Result<usize> {
        let off = usize::from(u16_at(page, PAGEHDRSZ + 2 * i));
        let upper = usize::from(u16_at(page, 14));
        if off < upper || off + NODESIZE > self.psize {
            return Err(corrupt(format!(
                "page {pgno}: node {i} at offset {off}, outside the page's nodes ({upper} to {})",
                self.psize
            )));
        }
        Ok(off)
    }

    fn past_page(&self, pgno: u64, i: usize) -> io::Error {
        corrupt(format!(
            "page {pgno}: node {i} reaches past the end of the page"
        ))
    }

    /// Leaf node `i`: the range of its key, and where its value is.
    fn leaf_node(
        &self,
        pgno: u64,
        page: &[u8],
        i: usize,
    ) -> io::Result<(std::ops::Range<usize>, Data)> {
        let off = self.node_at(pgno, page, i)?;
        let n = &page[off..off + NODESIZE];
        let dsize = usize::from(u16_at(n, 0)) | (usize::from(u16_at(n, 2)) << 16);
        let flags = u16_at(n, 4);
        let ksize = usize::from(u16_at(n, 6));
        if flags & (F_SUBDATA | F_DUPDATA) != 0 {
            return Err(corrupt(format!(
                "page {pgno}: node {i} has duplicates or a sub-database (flags {flags:#x}), \
                 which Postfix tables never hold"
            )));
        }
        let key = off + NODESIZE..off + NODESIZE + ksize;
        if flags & F_BIGDATA != 0 {
            if key.end + 8 > self.psize {
                return Err(self.past_page(pgno, i));
            }
            return Ok((key.clone(), Data::Overflow(u64_at(page, key.end), dsize)));
        }
        let data = key.end..key.end + dsize;
        if data.end > self.psize {
            return Err(self.past_page(pgno, i));
        }
        Ok((key, Data::Inline(data)))
    }

    /// Read a value of `size` bytes from the overflow run starting at `opg` into `out`.
    fn read_overflow(
        &self,
        leaf: u64,
        opg: u64,
        size: usize,
        out: &mut Vec<u8>,
        seen: &mut Seen,
    ) -> io::Result<()> {
        let mut head = [0u8; PAGEHDRSZ];
        self.read_page(opg, &mut head, leaf)?;
        let flags = u16_at(&head, 10) & P_TYPES;
        let pages = u64::from(u32_at(&head, 12));
        if flags != P_OVERFLOW {
            return Err(corrupt(format!(
                "page {leaf} refers to page {opg} for a value, not an overflow page \
                 (flags {:#x})",
                u16_at(&head, 10)
            )));
        }
        let room = pages
            .saturating_mul(self.psize as u64)
            .saturating_sub(PAGEHDRSZ as u64);
        if pages == 0 || opg + pages - 1 > self.last_pg || size as u64 > room {
            return Err(corrupt(format!(
                "page {leaf}: a value of {size} bytes on overflow page {opg} of {pages} \
                 pages reaches past its pages or the file's last page {}",
                self.last_pg
            )));
        }
        for p in opg + 1..opg + pages {
            seen.mark(p, leaf)?;
        }
        out.resize(size, 0);
        self.file
            .read_exact_at(out, opg * self.psize as u64 + PAGEHDRSZ as u64)
    }
}

/// The `from` of the root page: the meta page.
const META: u64 = u64::MAX;

/// Who refers to a page, in an error.
fn referrer(from: u64) -> String {
    if from == META {
        "the meta page".into()
    } else {
        format!("page {from}")
    }
}

/// Where a leaf node's value is: in its page, or in an overflow run (page, size).
enum Data {
    Inline(std::ops::Range<usize>),
    Overflow(u64, usize),
}

/// The pages a walk has visited: each belongs to the tree once.
struct Seen(Vec<u64>);

impl Seen {
    fn new(last_pg: u64) -> Seen {
        // last_pg is bounded by the file's length (checked at open).
        Seen(vec![0; (last_pg / 64 + 1) as usize])
    }
    fn mark(&mut self, pgno: u64, from: u64) -> io::Result<()> {
        let (w, b) = ((pgno / 64) as usize, pgno % 64);
        let Some(word) = self.0.get_mut(w) else {
            // Out of range: read_page reports it with the page that refers to it.
            return Ok(());
        };
        if *word & (1 << b) != 0 {
            return Err(corrupt(format!(
                "{} refers to page {pgno}, which is used twice",
                referrer(from)
            )));
        }
        *word |= 1 << b;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages laid out by hand: meta pages 0 and 1, then the pages given.
    fn file_with(pages: &[Vec<u8>], root: u64, psize: usize) -> Vec<u8> {
        let last = 1 + pages.len() as u64;
        let mut out = Vec::new();
        for (pgno, txnid) in [(0u64, 1u64), (1, 2)] {
            let mut p = vec![0u8; psize];
            p[0..8].copy_from_slice(&pgno.to_le_bytes());
            p[10..12].copy_from_slice(&P_META.to_le_bytes());
            let m = PAGEHDRSZ;
            p[m..m + 4].copy_from_slice(&MDB_MAGIC.to_le_bytes());
            p[m + 4..m + 8].copy_from_slice(&1u32.to_le_bytes());
            p[m + 24..m + 28].copy_from_slice(&(psize as u32).to_le_bytes());
            p[m + 112..m + 120].copy_from_slice(&root.to_le_bytes());
            p[m + 120..m + 128].copy_from_slice(&last.to_le_bytes());
            p[m + 128..m + 136].copy_from_slice(&txnid.to_le_bytes());
            out.extend_from_slice(&p);
        }
        for p in pages {
            out.extend_from_slice(p);
        }
        out
    }

    /// A page `pgno` of `flags` holding `nodes` (header fields, key, data), packed from
    /// the end as LMDB packs them.
    fn page(pgno: u64, flags: u16, nodes: &[(u32, u16, &[u8], &[u8])], psize: usize) -> Vec<u8> {
        let mut p = vec![0u8; psize];
        p[0..8].copy_from_slice(&pgno.to_le_bytes());
        p[10..12].copy_from_slice(&flags.to_le_bytes());
        let mut upper = psize;
        for (i, (size, nflags, key, data)) in nodes.iter().enumerate() {
            let len = NODESIZE + key.len() + data.len();
            upper -= len + (len % 2);
            let n = upper;
            p[n..n + 4].copy_from_slice(&size.to_le_bytes());
            p[n + 4..n + 6].copy_from_slice(&nflags.to_le_bytes());
            p[n + 6..n + 8].copy_from_slice(&(key.len() as u16).to_le_bytes());
            p[n + 8..n + 8 + key.len()].copy_from_slice(key);
            p[n + 8 + key.len()..n + len].copy_from_slice(data);
            p[PAGEHDRSZ + 2 * i..PAGEHDRSZ + 2 * i + 2].copy_from_slice(&(n as u16).to_le_bytes());
        }
        let lower = PAGEHDRSZ + 2 * nodes.len();
        p[12..14].copy_from_slice(&(lower as u16).to_le_bytes());
        p[14..16].copy_from_slice(&(upper as u16).to_le_bytes());
        p
    }

    fn read(bytes: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.lmdb");
        std::fs::write(&path, bytes).unwrap();
        let f = LmdbFile::open(&path)?;
        let mut out = Vec::new();
        f.for_each(|k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok::<(), ()>(())
        })?
        .unwrap();
        Ok(out)
    }

    fn err(bytes: &[u8]) -> String {
        read(bytes).unwrap_err().to_string()
    }

    const PS: usize = 4096;

    #[test]
    fn branch_leaf_and_overflow_pages_are_read_in_order() {
        let big = vec![b'v'; 5000];
        let leaf_a = page(3, P_LEAF, &[(2, 0, b"a", b"1\0"), (2, 0, b"b", b"2\0")], PS);
        let mut ov = vec![0u8; 2 * PS];
        ov[0..8].copy_from_slice(&5u64.to_le_bytes());
        ov[10..12].copy_from_slice(&P_OVERFLOW.to_le_bytes());
        ov[12..16].copy_from_slice(&2u32.to_le_bytes());
        ov[PAGEHDRSZ..PAGEHDRSZ + big.len()].copy_from_slice(&big);
        let leaf_c = page(
            4,
            P_LEAF,
            &[(5000, F_BIGDATA, b"c", &5u64.to_le_bytes())],
            PS,
        );
        let branch = page(2, P_BRANCH, &[(3, 0, b"", b""), (4, 0, b"c", b"")], PS);
        let mut pages = vec![branch, leaf_a, leaf_c];
        pages.push(ov[..PS].to_vec());
        pages.push(ov[PS..].to_vec());
        let got = read(&file_with(&pages, 2, PS)).unwrap();
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), b"1\0".to_vec()),
                (b"b".to_vec(), b"2\0".to_vec()),
                (b"c".to_vec(), big),
            ]
        );
    }

    #[test]
    fn sizes_and_pages_outside_the_file_are_errors() {
        // A value whose size reaches past its page (the fuzz target's finding).
        let leaf = page(2, P_LEAF, &[(2, 0, b"a", b"1\0")], PS);
        let mut bad = leaf.clone();
        let n = usize::from(u16_at(&bad, PAGEHDRSZ));
        bad[n..n + 2].copy_from_slice(&0x0c00u16.to_le_bytes());
        assert_eq!(
            err(&file_with(&[bad], 2, PS)),
            "corrupt LMDB file: page 2: node 0 reaches past the end of the page"
        );
        // A node pointer past the page's end.
        let mut bad = leaf.clone();
        bad[PAGEHDRSZ..PAGEHDRSZ + 2].copy_from_slice(&4094u16.to_le_bytes());
        assert!(err(&file_with(&[bad], 2, PS)).contains("node 0 at offset 4094"));
        // A root past the last page, a meta page as a child, a loop.
        assert!(
            err(&file_with(std::slice::from_ref(&leaf), 9, PS))
                .contains("the meta page refers to page 9,")
        );
        let to_meta = page(2, P_BRANCH, &[(1, 0, b"", b"")], PS);
        assert!(err(&file_with(&[to_meta], 2, PS)).contains("refers to page 1,"));
        let to_self = page(2, P_BRANCH, &[(2, 0, b"", b"")], PS);
        assert!(err(&file_with(&[to_self], 2, PS)).contains("used twice"));
        // An overflow value longer than its run.
        let mut ov = vec![0u8; PS];
        ov[0..8].copy_from_slice(&3u64.to_le_bytes());
        ov[10..12].copy_from_slice(&P_OVERFLOW.to_le_bytes());
        ov[12..16].copy_from_slice(&1u32.to_le_bytes());
        let big = page(
            2,
            P_LEAF,
            &[(5000, F_BIGDATA, b"c", &3u64.to_le_bytes())],
            PS,
        );
        assert!(err(&file_with(&[big, ov], 2, PS)).contains("a value of 5000 bytes"));
        // Cut short: the meta page's wording of old.
        let whole = file_with(&[leaf], 2, PS);
        assert_eq!(
            err(&whole[..2 * PS + 100]),
            format!(
                "truncated LMDB file: {} bytes, its meta page uses {}",
                2 * PS + 100,
                3 * PS
            )
        );
        assert_eq!(
            err(&[]),
            io::Error::from_raw_os_error(libc::EBADF).to_string()
        );
        assert_eq!(err(&[1u8; 100]), "MDB_INVALID: File is not an LMDB file");
    }

    /// A writer's exclusive `fcntl` lock (the real postmap's when it opens a table for an
    /// update) is waited for; without it the open goes ahead.
    #[test]
    fn open_waits_for_a_writers_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.lmdb");
        std::fs::write(&path, file_with(&[], P_INVALID, PS)).unwrap();
        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        crate::sys::lock_whole_file(&writer, true, false).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let reader = std::thread::spawn(move || {
            let r = LmdbFile::open(&p).map(|_| ());
            let _ = tx.send(());
            r
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(rx.try_recv().is_err(), "the open did not wait for the lock");
        drop(writer);
        reader.join().unwrap().unwrap();
    }

    #[test]
    fn an_empty_database_has_no_records() {
        assert!(read(&file_with(&[], P_INVALID, PS)).unwrap().is_empty());
    }
}
