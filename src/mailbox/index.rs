//! Postern's index of a folder, `postern.index`: what IMAP needs that neither mbox nor
//! Maildir stores and Dovecot keeps only in its `dovecot.index*` files. For each message
//! its MODSEQ (RFC 7162 CONDSTORE) and the flags and keywords it had when the MODSEQ was
//! given; the folder's HIGHESTMODSEQ; the UIDs expunged and the MODSEQ of their expunge
//! (QRESYNC's VANISHED); the first UID no session has seen yet (\Recent goes to exactly
//! one session); the UIDVALIDITY of an mbox that has no message to carry it.
//!
//! The mailbox files stay the truth for UIDs, flags and keywords: a session that finds
//! them different from the index (changed by Dovecot, procmail, mutt, a POP3 session,
//! local delivery) gives the messages that changed new MODSEQs and records the UIDs gone
//! as expunged, so changes made by anyone reach CONDSTORE clients.
//!
//! The file is a log of text lines, appended to under an `fcntl` lock on the file itself
//! and read by each session from where it last stopped; when the appended lines outgrow
//! the state they describe, the file is written anew (to a temporary file, renamed over
//! it; a session waiting for the lock of the old file notices the new inode and takes
//! the new one's). Lines:
//!
//! ```text
//! postern-index 1
//! H <uidvalidity> <highestmodseq> <first recent uid>
//! K <keyword>                          (the next keyword index)
//! S <uid> <modseq> <flag bits> <keyword indexes, comma-separated, or ->
//! X <uid>[:<uid>] <modseq>             (expunged)
//! Z <uid> <size or -> <date or ->        (what a Maildir message's file says)
//! ```
//!
//! `Z` records keep what a session learnt from a Maildir message's file once: its size
//! as clients see it (RFC822.SIZE, CRLF) and its modification time (INTERNALDATE), so
//! that no session opens or stats the file for them again, as Dovecot keeps them in
//! `dovecot.index.cache`. They are written when a command first needs them (never at
//! SELECT); a message's file never changes once it has its UID, so they stay true until
//! it is expunged. Older readers skip the lines.
//!
//! A line cut short by a crash (no newline) is ignored and cut off by the next writer. A
//! header line with another UIDVALIDITY forgets the messages and expunges (the mailbox
//! was recreated); HIGHESTMODSEQ never goes down. A new index starts HIGHESTMODSEQ at the
//! current Unix time, so that a client that kept MODSEQs from Dovecot (or from an index
//! that was lost) sees every message as changed rather than none.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::MailboxError;
use super::flags::{Flags, KeywordSet};

/// The file name, in the folder's index directory.
pub const FILE: &str = "postern.index";
const MAGIC: &str = "postern-index 1\n";

/// One message as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub modseq: u64,
    pub flags: Flags,
    /// Indexes into [`Index::keywords`].
    pub keywords: KeywordSet,
}

/// A folder's index as read from its file.
#[derive(Debug)]
pub struct Index {
    pub path: PathBuf,
    pub uid_validity: u32,
    pub highest_modseq: u64,
    pub first_recent_uid: u32,
    /// Keyword names; a message's keywords are indexes into this list.
    pub keywords: Vec<String>,
    pub msgs: BTreeMap<u32, Rec>,
    /// Expunged UID ranges with the MODSEQ of their expunge, in the order recorded.
    pub expunged: Vec<(u32, u32, u64)>,
    /// What the files of Maildir messages said (`Z`): size and internal date, by UID.
    pub meta: std::collections::HashMap<u32, FileMeta>,
    /// The file read so far: its inode and the bytes taken.
    read: Option<(u64, u64)>,
    /// Bytes of the state as last compacted (to decide when to compact again).
    base_len: u64,
}

/// The index file, locked (`fcntl` write lock) while this lives.
pub struct Locked {
    file: File,
}

/// A message file's size as clients see it and its modification time, when known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileMeta {
    pub size: Option<u64>,
    pub date: Option<i64>,
}

/// A change to record.
#[derive(Debug, Clone)]
pub enum Record {
    Header {
        uid_validity: u32,
        highest_modseq: u64,
        first_recent_uid: u32,
    },
    Keyword(String),
    Set(u32, Rec),
    Expunged(u32, u32, u64),
    Meta(u32, FileMeta),
}

impl Index {
    /// An index not read yet (nothing known).
    pub fn new(path: PathBuf) -> Index {
        Index {
            path,
            uid_validity: 0,
            highest_modseq: 0,
            first_recent_uid: 1,
            keywords: Vec::new(),
            msgs: BTreeMap::new(),
            expunged: Vec::new(),
            meta: Default::default(),
            read: None,
            base_len: 0,
        }
    }

    /// Whether the file was ever read (a fresh index has no header yet).
    pub fn is_new(&self) -> bool {
        self.uid_validity == 0
    }

    /// Take the index's lock, creating the file (and its directory) if missing. The
    /// file is opened without following a symlink.
    pub fn lock(&self) -> Result<Locked, MailboxError> {
        let timeout = std::time::Duration::from_secs(30);
        if let Some(dir) = self.path.parent()
            && !dir.is_dir()
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| MailboxError::io(dir, e))?;
        }
        for _ in 0..16 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&self.path)
                .map_err(|e| MailboxError::io(&self.path, e))?;
            super::lock::fcntl_lock(&file, &self.path, true, timeout)?;
            // The file may have been replaced (compacted) while this waited.
            let held = file
                .metadata()
                .map_err(|e| MailboxError::io(&self.path, e))?;
            match std::fs::symlink_metadata(&self.path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    if !now.file_type().is_file() {
                        return Err(MailboxError::Unsafe(
                            self.path.clone(),
                            "is not a regular file".into(),
                        ));
                    }
                    return Ok(Locked { file });
                }
                _ => continue,
            }
        }
        Err(MailboxError::Locked(self.path.clone()))
    }

    /// Read what was appended to the file since the last read (all of it if the file was
    /// replaced), under the lock.
    pub fn load(&mut self, locked: &mut Locked) -> Result<(), MailboxError> {
        let path = self.path.clone();
        let io = |e| MailboxError::io(&path, e);
        let meta = locked.file.metadata().map_err(io)?;
        let ino = meta.ino();
        let from = match self.read {
            Some((i, at)) if i == ino && at <= meta.len() => at,
            _ => {
                *self = Index {
                    path: self.path.clone(),
                    ..Index::new(PathBuf::new())
                };
                0
            }
        };
        if from == meta.len() {
            self.read = Some((ino, from));
            return Ok(());
        }
        locked.file.seek(SeekFrom::Start(from)).map_err(io)?;
        let mut buf = Vec::with_capacity((meta.len() - from) as usize);
        (&locked.file)
            .take(meta.len() - from)
            .read_to_end(&mut buf)
            .map_err(io)?;
        // A last line without newline was cut short: not taken.
        let complete = buf
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..complete]);
        for line in text.lines() {
            if let Some(r) = parse_line(line) {
                self.apply(r);
            }
        }
        self.read = Some((ino, from + complete as u64));
        if from == 0 {
            self.base_len = complete as u64;
        }
        Ok(())
    }

    /// Apply one record to the state in memory.
    fn apply(&mut self, r: Record) {
        match r {
            Record::Header {
                uid_validity,
                highest_modseq,
                first_recent_uid,
            } => {
                if uid_validity != self.uid_validity && self.uid_validity != 0 {
                    self.msgs.clear();
                    self.expunged.clear();
                    self.meta.clear();
                }
                self.uid_validity = uid_validity;
                self.highest_modseq = self.highest_modseq.max(highest_modseq);
                self.first_recent_uid = first_recent_uid;
            }
            Record::Keyword(k) => {
                if !self.keywords.contains(&k) {
                    self.keywords.push(k);
                }
            }
            Record::Set(uid, rec) => {
                self.highest_modseq = self.highest_modseq.max(rec.modseq);
                self.msgs.insert(uid, rec);
            }
            Record::Expunged(lo, hi, modseq) => {
                self.highest_modseq = self.highest_modseq.max(modseq);
                let gone: Vec<u32> = self.msgs.range(lo..=hi).map(|(u, _)| *u).collect();
                for u in gone {
                    self.msgs.remove(&u);
                }
                if ((hi - lo) as usize) < self.meta.len() {
                    for u in lo..=hi {
                        self.meta.remove(&u);
                    }
                } else {
                    self.meta.retain(|u, _| *u < lo || *u > hi);
                }
                self.expunged.push((lo, hi, modseq));
            }
            Record::Meta(uid, m) => {
                let e = self.meta.entry(uid).or_default();
                e.size = m.size.or(e.size);
                e.date = m.date.or(e.date);
            }
        }
    }

    /// Record `records` (append them to the file, apply them here); the file is written
    /// anew when the log has grown past twice the state's size.
    pub fn write(&mut self, locked: &mut Locked, records: &[Record]) -> Result<(), MailboxError> {
        if records.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let io = |e| MailboxError::io(&path, e);
        let mut text = String::new();
        let meta = locked.file.metadata().map_err(io)?;
        let at = self.read.map(|r| r.1).unwrap_or(0);
        if meta.len() == 0 {
            text.push_str(MAGIC);
        } else if at < meta.len() {
            // A torn last line left by a crash: cut it off.
            locked.file.set_len(at).map_err(io)?;
        }
        for r in records {
            text.push_str(&render(r));
            self.apply(r.clone());
        }
        let grown = at + text.len() as u64;
        if grown > 64 * 1024 && grown > 2 * self.base_len.max(1) {
            // Written anew only when that makes it at least half smaller (a log of new
            // messages' records is its state already).
            let state = self.state_text();
            let len = state.0.len() as u64;
            if grown > 2 * len {
                return self.compact(locked, state);
            }
            self.base_len = len;
        }
        locked.file.write_all_at_end(text.as_bytes()).map_err(io)?;
        self.read = Some((meta.ino(), at + text.len() as u64));
        Ok(())
    }

    /// The state as the lines of a file written anew, and the expunge runs it holds.
    fn state_text(&self) -> (String, Vec<(u32, u32, u64)>) {
        let mut text = String::from(MAGIC);
        text.push_str(&render(&Record::Header {
            uid_validity: self.uid_validity,
            highest_modseq: self.highest_modseq,
            first_recent_uid: self.first_recent_uid,
        }));
        // Keywords still in use keep their order (indexes do not change).
        for k in &self.keywords {
            text.push_str(&render(&Record::Keyword(k.clone())));
        }
        for (uid, rec) in &self.msgs {
            text.push_str(&render(&Record::Set(*uid, rec.clone())));
        }
        // File facts of messages still indexed (a message not yet given a MODSEQ has none).
        let mut meta: Vec<(&u32, &FileMeta)> = self
            .meta
            .iter()
            .filter(|(u, _)| self.msgs.contains_key(u))
            .collect();
        meta.sort_unstable_by_key(|(u, _)| **u);
        for (uid, m) in meta {
            text.push_str(&render(&Record::Meta(*uid, *m)));
        }
        // Expunges merged into runs of UIDs; a run takes the highest MODSEQ of its
        // parts (VANISHED may report a UID for a MODSEQ at or after its expunge).
        let mut gone: Vec<(u32, u32, u64)> = self.expunged.clone();
        gone.sort_unstable();
        let mut merged: Vec<(u32, u32, u64)> = Vec::new();
        for (lo, hi, m) in gone {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) && !self.live_between(last.1, lo) => {
                    last.1 = last.1.max(hi);
                    last.2 = last.2.max(m);
                }
                _ => merged.push((lo, hi, m)),
            }
        }
        // Bounded: beyond 1000 runs, the oldest are merged (superset allowed by QRESYNC).
        while merged.len() > 1000 {
            let b = merged.remove(1);
            merged[0].1 = b.1;
            merged[0].2 = merged[0].2.max(b.2);
        }
        for (lo, hi, m) in &merged {
            text.push_str(&render(&Record::Expunged(*lo, *hi, *m)));
        }
        (text, merged)
    }

    /// Write the state anew (`state`: [`state_text`](Self::state_text)): to
    /// `postern.index.tmp`, fsynced, renamed over the index. The lock held stays on the
    /// old file, which no other session will lock again.
    fn compact(
        &mut self,
        locked: &mut Locked,
        state: (String, Vec<(u32, u32, u64)>),
    ) -> Result<(), MailboxError> {
        let tmp = self.path.with_extension("index.tmp");
        let (text, merged) = state;
        self.expunged = merged;
        let io = |e| MailboxError::io(&tmp, e);
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io)?;
        // Locked before it gets the index's name: a session that then opens it waits.
        super::lock::fcntl_lock(&f, &tmp, true, std::time::Duration::ZERO)?;
        let ino = f.metadata().map_err(io)?.ino();
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        // The old file's lock goes with its descriptor; sessions waiting for it find the
        // inode changed and wait for this one.
        locked.file = f;
        self.read = Some((ino, text.len() as u64));
        self.base_len = text.len() as u64;
        Ok(())
    }

    /// Whether a message is known between two UIDs (exclusive): expunge runs do not
    /// cover live messages.
    fn live_between(&self, a: u32, b: u32) -> bool {
        a.saturating_add(1) < b && self.msgs.range(a + 1..b).next().is_some()
    }

    /// The UIDs expunged after `modseq` (QRESYNC's VANISHED (EARLIER)), ascending, within
    /// `within` (an inclusive UID range). May include UIDs expunged at `modseq` or
    /// before, as the protocol allows.
    pub fn vanished_since(&self, modseq: u64, within: (u32, u32)) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for &(lo, hi, m) in &self.expunged {
            if m <= modseq {
                continue;
            }
            let (lo, hi) = (lo.max(within.0), hi.min(within.1));
            if lo > hi || hi - lo > 10_000_000 {
                continue;
            }
            out.extend(lo..=hi);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The index of keyword `name`, with the record that adds it when it is new.
    pub fn keyword(&self, name: &str, adding: &mut Vec<Record>) -> usize {
        if let Some(i) = self.keywords.iter().position(|k| k == name) {
            return i;
        }
        let pending = adding
            .iter()
            .filter(|r| matches!(r, Record::Keyword(_)))
            .count();
        if let Some(i) = adding
            .iter()
            .position(|r| matches!(r, Record::Keyword(k) if k == name))
        {
            let before = adding[..i]
                .iter()
                .filter(|r| matches!(r, Record::Keyword(_)))
                .count();
            return self.keywords.len() + before;
        }
        adding.push(Record::Keyword(name.to_string()));
        self.keywords.len() + pending
    }
}

trait WriteAtEnd {
    fn write_all_at_end(&mut self, b: &[u8]) -> std::io::Result<()>;
}

impl WriteAtEnd for File {
    fn write_all_at_end(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.seek(SeekFrom::End(0))?;
        self.write_all(b)
    }
}

fn render(r: &Record) -> String {
    match r {
        Record::Header {
            uid_validity,
            highest_modseq,
            first_recent_uid,
        } => format!("H {uid_validity} {highest_modseq} {first_recent_uid}\n"),
        Record::Keyword(k) => format!("K {k}\n"),
        Record::Set(uid, rec) => {
            let kw: Vec<String> = rec.keywords.iter().map(|i| i.to_string()).collect();
            let kw = if kw.is_empty() {
                "-".to_string()
            } else {
                kw.join(",")
            };
            format!("S {uid} {} {} {kw}\n", rec.modseq, rec.flags.bits())
        }
        Record::Expunged(lo, hi, m) if lo == hi => format!("X {lo} {m}\n"),
        Record::Expunged(lo, hi, m) => format!("X {lo}:{hi} {m}\n"),
        Record::Meta(uid, m) => {
            let size = m.size.map_or("-".to_string(), |s| s.to_string());
            let date = m.date.map_or("-".to_string(), |d| d.to_string());
            format!("Z {uid} {size} {date}\n")
        }
    }
}

fn parse_line(line: &str) -> Option<Record> {
    let mut w = line.split(' ');
    match w.next()? {
        "H" => Some(Record::Header {
            uid_validity: w.next()?.parse().ok()?,
            highest_modseq: w.next()?.parse().ok()?,
            first_recent_uid: w.next()?.parse().ok()?,
        }),
        "K" => {
            let k = line.get(2..)?;
            (!k.is_empty()).then(|| Record::Keyword(k.to_string()))
        }
        "S" => {
            let uid = w.next()?.parse().ok()?;
            let modseq = w.next()?.parse().ok()?;
            let flags = Flags::from_bits(w.next()?.parse().ok()?);
            let kw = w.next()?;
            let keywords = if kw == "-" {
                KeywordSet::new()
            } else {
                kw.split(',')
                    .map(|i| i.parse::<usize>().ok())
                    .collect::<Option<Vec<_>>>()?
                    .into_iter()
                    .collect()
            };
            Some(Record::Set(
                uid,
                Rec {
                    modseq,
                    flags,
                    keywords,
                },
            ))
        }
        "X" => {
            let range = w.next()?;
            let (lo, hi) = match range.split_once(':') {
                Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                None => {
                    let u = range.parse().ok()?;
                    (u, u)
                }
            };
            let m = w.next()?.parse().ok()?;
            (lo <= hi).then_some(Record::Expunged(lo, hi, m))
        }
        "Z" => {
            let uid = w.next()?.parse().ok()?;
            let opt = |t: &str| -> Option<Option<i128>> {
                if t == "-" {
                    Some(None)
                } else {
                    t.parse().ok().map(Some)
                }
            };
            let size = opt(w.next()?)?.map(u64::try_from).transpose().ok()?;
            let date = opt(w.next()?)?.map(i64::try_from).transpose().ok()?;
            Some(Record::Meta(uid, FileMeta { size, date }))
        }
        _ => None,
    }
}

/// The MODSEQ a new index starts from: the current Unix time (see the module notes).
pub fn initial_modseq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1)
        .max(1)
}

/// Where a folder's `postern.index` is: in `dir`, the folder's index directory.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(uid: u32, modseq: u64, flags: Flags) -> Record {
        Record::Set(
            uid,
            Rec {
                modseq,
                flags,
                keywords: KeywordSet::new(),
            },
        )
    }

    #[test]
    fn log_is_replayed_incrementally_by_other_sessions() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("sub/postern.index");
        let mut a = Index::new(path.clone());
        let mut b = Index::new(path.clone());
        let mut l = a.lock().expect("lock");
        a.load(&mut l).expect("load");
        assert!(a.is_new());
        let mut adding = Vec::new();
        let k = a.keyword("$Forwarded", &mut adding);
        assert_eq!(k, 0);
        assert_eq!(a.keyword("$Forwarded", &mut adding), 0);
        assert_eq!(a.keyword("Junk", &mut adding), 1);
        adding.insert(
            0,
            Record::Header {
                uid_validity: 7,
                highest_modseq: 100,
                first_recent_uid: 1,
            },
        );
        adding.push(set(1, 101, Flags::SEEN));
        adding.push(set(2, 102, Flags::empty()));
        a.write(&mut l, &adding).expect("write");
        drop(l);
        let mut l = b.lock().expect("lock");
        b.load(&mut l).expect("load");
        assert_eq!(b.uid_validity, 7);
        assert_eq!(b.highest_modseq, 102);
        assert_eq!(b.keywords, ["$Forwarded", "Junk"]);
        assert_eq!(b.msgs.len(), 2);
        b.write(&mut l, &[Record::Expunged(1, 1, 103)])
            .expect("write");
        drop(l);
        // A torn line at the end (a crash) is ignored, then cut off by the next writer.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open")
            .write_all(b"S 9 9")
            .expect("write");
        let mut l = a.lock().expect("lock");
        a.load(&mut l).expect("load");
        assert_eq!(a.msgs.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(a.vanished_since(102, (1, u32::MAX)), [1]);
        assert!(a.vanished_since(103, (1, u32::MAX)).is_empty());
        a.write(&mut l, &[set(3, 104, Flags::DRAFT)])
            .expect("write");
        drop(l);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("S 9 9"), "{text}");
        let mut c = Index::new(path.clone());
        let mut l = c.lock().expect("lock");
        c.load(&mut l).expect("load");
        assert_eq!(c.msgs.keys().copied().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(c.highest_modseq, 104);
    }

    #[test]
    fn compaction_keeps_state_and_other_sessions_follow() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("postern.index");
        let mut a = Index::new(path.clone());
        let mut b = Index::new(path.clone());
        let mut l = a.lock().expect("lock");
        a.load(&mut l).expect("load");
        a.write(
            &mut l,
            &[Record::Header {
                uid_validity: 5,
                highest_modseq: 1,
                first_recent_uid: 1,
            }],
        )
        .expect("write");
        drop(l);
        // Many flag changes of two messages: the log is compacted at some point.
        let first_ino = std::fs::metadata(&path).expect("stat").ino();
        for n in 0..8000u64 {
            let mut l = a.lock().expect("lock");
            a.load(&mut l).expect("load");
            let m = a.highest_modseq + 1;
            a.write(
                &mut l,
                &[set(1 + (n % 2) as u32, m, Flags::from_bits(n as u8))],
            )
            .expect("write");
        }
        assert_ne!(std::fs::metadata(&path).expect("stat").ino(), first_ino);
        assert!(std::fs::metadata(&path).expect("stat").len() < 200_000);
        let mut l = b.lock().expect("lock");
        b.load(&mut l).expect("load");
        assert_eq!(b.highest_modseq, a.highest_modseq);
        assert_eq!(b.msgs, a.msgs);
        drop(l);
        // Expunges merge into runs, not over live messages.
        let mut l = a.lock().expect("lock");
        a.load(&mut l).expect("load");
        let m = a.highest_modseq;
        let recs: Vec<Record> = (10..20)
            .map(|u| Record::Expunged(u, u, m + u as u64))
            .collect();
        a.write(&mut l, &recs).expect("write");
        let st = a.state_text();
        a.compact(&mut l, st).expect("compact");
        assert_eq!(a.expunged, [(10, 19, m + 19)]);
        assert_eq!(a.vanished_since(m, (12, 14)), [12, 13, 14]);
    }

    #[test]
    fn file_facts_are_merged_kept_by_compaction_and_dropped_on_expunge() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("postern.index");
        let mut a = Index::new(path.clone());
        let mut l = a.lock().expect("lock");
        a.load(&mut l).expect("load");
        let fm = |size, date| FileMeta { size, date };
        a.write(
            &mut l,
            &[
                Record::Header {
                    uid_validity: 5,
                    highest_modseq: 10,
                    first_recent_uid: 1,
                },
                set(1, 10, Flags::SEEN),
                set(2, 10, Flags::SEEN),
                Record::Meta(1, fm(None, Some(1_700_000_000))),
                Record::Meta(1, fm(Some(1234), None)),
                Record::Meta(2, fm(Some(7), Some(-5))),
            ],
        )
        .expect("write");
        drop(l);
        let mut b = Index::new(path.clone());
        let mut l = b.lock().expect("lock");
        b.load(&mut l).expect("load");
        assert_eq!(b.meta[&1], fm(Some(1234), Some(1_700_000_000)));
        assert_eq!(b.meta[&2], fm(Some(7), Some(-5)));
        b.write(&mut l, &[Record::Expunged(2, 2, 11)])
            .expect("write");
        assert!(!b.meta.contains_key(&2));
        let st = b.state_text();
        b.compact(&mut l, st).expect("compact");
        drop(l);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("Z 1 1234 1700000000\n"), "{text}");
        assert!(!text.contains("Z 2 "), "{text}");
        let mut c = Index::new(path);
        let mut l = c.lock().expect("lock");
        c.load(&mut l).expect("load");
        assert_eq!(c.meta.len(), 1);
        assert!(parse_line("Z 3 x -").is_none());
        assert!(parse_line("Z 3 -1 -").is_none());
    }
}
