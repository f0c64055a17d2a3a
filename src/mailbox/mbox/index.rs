//! An indexed mbox ([`MboxBox`]): where its messages are, their UIDs, flags and keywords,
//! never its contents. Opened under the read lock (the write locks only when messages
//! need UIDs written); flags changed in place in the changed headers when they fit
//! (Dovecot's in-place header update), else, and for expunges, by the rewrite of
//! [`super::rewrite`]; a message read through [`MboxMessage`], which checks under a read
//! lock that the file still holds it where it was.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::mailbox::MailboxError;
use crate::mailbox::flags::{Flags, KeywordSet};

use super::meta::{
    Meta, assign_uids, fit_header, imapbase_line, keyword_list, now_validity, parse_header,
};
use super::rewrite::{Plan, REWRITE_BUFFER, rewrite_in_place};
use super::scan::{FromLine, Raw, Scan, scan_file, visible};
use super::{
    MboxOptions, check_file, lock_for_reading, open_file, open_locked, read_needs_write,
    touch_if_same,
};

/// Where one message is in the file (offsets), and its `From ` line.
#[derive(Debug, Clone)]
pub(super) struct Spot {
    pub(super) from_start: usize,
    pub(super) hdr_start: usize,
    pub(super) hdr_end: usize,
    pub(super) end: usize,
    pub(super) from_line: FromLine,
}

/// One message of an indexed mbox.
#[derive(Debug, Clone)]
pub struct MboxMsg {
    pub uid: u32,
    /// `Status:` `R`, `X-Status:` `A` `F` `T` `D`.
    pub flags: Flags,
    /// `Status:` has `O`: a session has seen the message (it is no longer \\Recent).
    pub old: bool,
    /// `X-Keywords:`, as indexes into [`MboxBox::keywords`].
    pub keywords: KeywordSet,
    /// Size as clients see it: CRLF line ends, Dovecot's hidden headers left out.
    pub size: u64,
    /// The `From ` line's time (Unix seconds).
    pub date: i64,
    pub(super) spot: Spot,
}

/// New flags of a message: system flags, `O` (no longer \\Recent), keyword names.
pub type MboxFlags = (Flags, bool, Vec<String>);

/// An indexed mbox: where its messages are, their UIDs and flags; never its contents.
#[derive(Debug)]
pub struct MboxBox {
    pub path: PathBuf,
    pub uid_validity: u32,
    /// One more than the last UID given (`X-IMAPbase`'s second field).
    pub uid_next: u32,
    /// Keyword names: `X-IMAPbase`'s list, then other names messages carry.
    pub keywords: Vec<String>,
    /// `X-IMAPbase`'s keyword list as the file has it.
    pub(super) base_keywords: String,
    /// The file's first message is the pseudo message (`X-IMAP`).
    pub(super) pseudo: bool,
    pub messages: Vec<MboxMsg>,
    /// The file as it was indexed (`None`: there was no file).
    pub stamp: Option<crate::mailbox::FileStamp>,
    pub(super) opts: MboxOptions,
    /// UIDVALIDITY for a box without `X-IMAPbase` (an empty one).
    pub(super) validity_hint: Option<u32>,
}

#[cfg(test)]
thread_local! {
    /// How many updates took the fast way (tests).
    pub(super) static FAST_UPDATES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl MboxBox {
    /// A mailbox with no messages and no file.
    pub fn empty() -> MboxBox {
        MboxBox {
            path: PathBuf::new(),
            uid_validity: 0,
            uid_next: 1,
            keywords: Vec::new(),
            base_keywords: String::new(),
            pseudo: false,
            messages: Vec::new(),
            stamp: None,
            opts: MboxOptions::default(),
            validity_hint: None,
        }
    }

    /// Index the mbox under its read lock; when messages have no UIDs yet, again under
    /// the write locks, storing UIDs for them. A missing file is an empty mailbox (with
    /// UIDVALIDITY `validity_hint`, or the time). The file is read and rewritten through
    /// bounded buffers, never held whole.
    pub fn open(
        path: &Path,
        opts: &MboxOptions,
        validity_hint: Option<u32>,
    ) -> Result<MboxBox, MailboxError> {
        let mut mb = MboxBox {
            path: path.to_path_buf(),
            opts: opts.clone(),
            validity_hint,
            ..MboxBox::empty()
        };
        mb.refresh()?;
        Ok(mb)
    }

    /// Index the file again (after [`crate::mailbox::FileStamp`] says it changed).
    pub fn refresh(&mut self) -> Result<(), MailboxError> {
        let path = self.path.clone();
        if std::fs::symlink_metadata(&path).is_err() {
            self.uid_validity = self.validity_hint.unwrap_or_else(now_validity);
            self.uid_next = 1;
            self.keywords.clear();
            self.messages.clear();
            self.stamp = None;
            return Ok(());
        }
        let io = |e| MailboxError::io(&path, e);
        // First under the read lock alone (Dovecot's `mbox_read_locks`), so sessions
        // opening the same mbox do not wait for each other; the write locks only when
        // messages need UIDs written.
        let reading = open_file(&path, read_needs_write(&self.opts), false, &self.opts)?;
        check_file(&reading, &path, &self.opts)?;
        let read_dot = lock_for_reading(&reading, &path, &self.opts, self.opts.lock_timeout)?;
        let mut stamp = crate::mailbox::FileStamp::of_file(&reading);
        let mut found = scan_file(&reading).map_err(io)?;
        let (mut validity, mut last, mut uids, dirty) =
            assign_uids(&found.raws, self.validity_hint);
        drop(reading);
        drop(read_dot);
        if dirty {
            let l = open_locked(&path, &self.opts, false)?;
            let before = l.file.metadata().map_err(io)?;
            found = scan_file(&l.file).map_err(io)?;
            let dirty;
            (validity, last, uids, dirty) = assign_uids(&found.raws, self.validity_hint);
            if dirty {
                let meta: Vec<Option<Meta>> = found
                    .raws
                    .iter()
                    .zip(&uids)
                    .map(|(r, &u)| {
                        (!r.pseudo && r.uid != Some(u)).then_some(Meta {
                            uid: u,
                            flags: None,
                        })
                    })
                    .collect();
                let keep = vec![true; found.raws.len()];
                let rest = found.raws[0].imapbase_rest.clone();
                let plan = Plan {
                    validity,
                    last,
                    base_keywords: &rest,
                    keep: &keep,
                    meta: &meta,
                    uids: &uids,
                };
                rewrite_in_place(&l.file, &found, &plan, REWRITE_BUFFER).map_err(io)?;
                touch_if_same(&l.file, &before);
                found = scan_file(&l.file).map_err(io)?;
                (validity, last, uids, _) = assign_uids(&found.raws, self.validity_hint);
            }
            stamp = crate::mailbox::FileStamp::of_file(&l.file);
        }
        self.build(found, validity, last, uids);
        self.stamp = stamp;
        Ok(())
    }

    /// Take the scanned messages as the box's.
    fn build(&mut self, found: Scan, validity: u32, last: u32, uids: Vec<u32>) {
        let Scan {
            raws,
            sizes,
            from_lines,
            ..
        } = found;
        let rest = raws
            .first()
            .map(|r| r.imapbase_rest.clone())
            .unwrap_or_default();
        self.keywords = keyword_list(&rest, raws.iter().flat_map(|r| r.keywords.iter()));
        self.base_keywords = rest;
        self.pseudo = raws.first().is_some_and(|r| r.pseudo);
        self.uid_validity = validity;
        self.uid_next = last.saturating_add(1);
        self.messages = Vec::with_capacity(raws.len());
        for (((r, uid), size), from_line) in raws.into_iter().zip(uids).zip(sizes).zip(from_lines) {
            if r.pseudo {
                continue;
            }
            let keywords = r
                .keywords
                .iter()
                .filter_map(|k| self.keywords.iter().position(|x| x == k))
                .collect();
            self.messages.push(MboxMsg {
                uid,
                flags: r.flags,
                old: r.old,
                keywords,
                size,
                date: r.date,
                spot: Spot {
                    from_start: r.from_start,
                    hdr_start: r.hdr_start,
                    hdr_end: r.hdr_end,
                    end: r.end,
                    from_line,
                },
            });
        }
    }

    /// Find the messages again after another session (or Dovecot, or a mail client)
    /// rewrote the file: each message's offsets are taken anew by its `X-UID`, under a
    /// read lock. A message no longer there keeps its old place (and then reads as
    /// expunged); the list of messages does not change.
    pub fn resync(&mut self) -> Result<(), MailboxError> {
        let file = OpenOptions::new()
            .read(true)
            .write(read_needs_write(&self.opts))
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
            .map_err(|e| MailboxError::io(&self.path, e))?;
        let _dot = lock_for_reading(&file, &self.path, &self.opts, self.opts.lock_timeout)?;
        let found = scan_file(&file).map_err(|e| MailboxError::io(&self.path, e))?;
        if found.raws.first().and_then(|r| r.imapbase).map(|b| b.0) != Some(self.uid_validity) {
            return Ok(());
        }
        let at: std::collections::HashMap<u32, usize> = found
            .raws
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.pseudo)
            .filter_map(|(i, r)| r.uid.map(|u| (u, i)))
            .collect();
        for m in self.messages.iter_mut() {
            if let Some(&i) = at.get(&m.uid) {
                let r = &found.raws[i];
                m.spot = Spot {
                    from_start: r.from_start,
                    hdr_start: r.hdr_start,
                    hdr_end: r.hdr_end,
                    end: r.end,
                    from_line: found.from_lines[i],
                };
            }
        }
        Ok(())
    }

    /// Where message `index` is, to be opened by [`MboxMessage::open`] on another thread.
    pub fn message(&self, index: usize) -> Option<MboxMessage> {
        Some(MboxMessage {
            path: self.path.clone(),
            spot: self.messages.get(index)?.spot.clone(),
            opts: self.opts.clone(),
        })
    }

    /// Message `index` as clients see it (whole; see [`MboxMessage::open`] for a reader).
    pub fn read(&self, index: usize) -> Result<Vec<u8>, MailboxError> {
        let m = self
            .message(index)
            .ok_or_else(|| MailboxError::Format(format!("no message {}", index + 1)))?;
        let mut r = m.open()?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut out)
            .map_err(|e| MailboxError::io(&self.path, e))?;
        Ok(out)
    }

    /// The fast way to change flags, as Dovecot's in-place header update: when the file
    /// is as this box last read it (same inode, size and time, under the write locks),
    /// no keyword is new to `X-IMAPbase`, and each changed header still fits in its old
    /// size, only those headers are written (the same bytes the full rewrite would
    /// write: their metadata anew, the padding taking the difference). `false`: the
    /// full rewrite is needed.
    fn update_headers(
        &mut self,
        file: &File,
        before: &std::fs::Metadata,
        changes: &std::collections::HashMap<u32, MboxFlags>,
    ) -> Result<bool, MailboxError> {
        let io = |e| MailboxError::io(&self.path, e);
        if self.stamp != crate::mailbox::FileStamp::of_file(file) || self.stamp.is_none() {
            return Ok(false);
        }
        let base: Vec<&str> = self.base_keywords.split_whitespace().collect();
        if changes
            .values()
            .flat_map(|c| c.2.iter())
            .any(|k| !base.contains(&k.as_str()))
        {
            return Ok(false);
        }
        let mut writes: Vec<(u64, Vec<u8>, usize)> = Vec::with_capacity(changes.len());
        for (uid, new) in changes {
            let Ok(j) = self.messages.binary_search_by_key(uid, |m| m.uid) else {
                return Ok(false);
            };
            let sp = &self.messages[j].spot;
            // Only a header that ends with its empty line, and not a huge one.
            if sp.hdr_end >= sp.end || sp.hdr_end - sp.from_start > REWRITE_BUFFER {
                return Ok(false);
            }
            let mut head = vec![0u8; sp.hdr_end - sp.from_start];
            file.read_exact_at(&mut head, sp.from_start as u64)
                .map_err(io)?;
            if !sp.from_line.starts(&head) {
                return Ok(false);
            }
            let hdr = &head[sp.hdr_start - sp.from_start..];
            let first = j == 0 && !self.pseudo;
            let raw = parse_header(hdr, if first { 0 } else { 1 });
            if raw.uid != Some(*uid) {
                return Ok(false);
            }
            if (raw.flags, raw.old, &raw.keywords) == (new.0, new.1, &new.2) {
                continue;
            }
            let meta = Meta {
                uid: *uid,
                flags: Some(new.clone()),
            };
            let base_line = first.then(|| {
                imapbase_line(
                    false,
                    self.uid_validity,
                    self.uid_next.saturating_sub(1),
                    &self.base_keywords,
                )
            });
            if first && raw.imapbase != Some((self.uid_validity, self.uid_next.saturating_sub(1))) {
                return Ok(false);
            }
            let Some(out) = fit_header(hdr, &raw, &meta, base_line.as_deref()) else {
                return Ok(false);
            };
            writes.push((sp.hdr_start as u64, out, j));
        }
        for (at, bytes, _) in &writes {
            file.write_all_at(bytes, *at).map_err(io)?;
        }
        if !writes.is_empty() {
            file.sync_all().map_err(io)?;
            touch_if_same(file, before);
        }
        for (_, _, j) in writes {
            let uid = self.messages[j].uid;
            if let Some((flags, old, kws)) = changes.get(&uid) {
                let keywords = kws
                    .iter()
                    .filter_map(|k| self.keywords.iter().position(|x| x == k))
                    .collect();
                let m = &mut self.messages[j];
                m.flags = *flags;
                m.old = *old;
                m.keywords = keywords;
            }
        }
        self.stamp = crate::mailbox::FileStamp::of_file(file);
        #[cfg(test)]
        FAST_UPDATES.with(|c| c.set(c.get() + 1));
        Ok(true)
    }

    /// Change the flags of the messages in `changes` and delete those in `expunge` (by
    /// UID), in one rewrite under the write locks, then index the file again. What was
    /// delivered or changed by others since the box was indexed stays as they left it.
    /// Keyword names new to the box are added to `X-IMAPbase`'s list. Without `rescan`
    /// the box is not indexed again (its stamp is dropped, so a later look at the file
    /// reads it anew): a POP3 session ending.
    pub fn update(
        &mut self,
        changes: &std::collections::HashMap<u32, MboxFlags>,
        expunge: &std::collections::HashSet<u32>,
        rescan: bool,
    ) -> Result<(), MailboxError> {
        if changes.is_empty() && expunge.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let io = |e| MailboxError::io(&path, e);
        let locked = open_locked(&path, &self.opts, false)?;
        let before = locked.file.metadata().map_err(io)?;
        if expunge.is_empty() && self.update_headers(&locked.file, &before, changes)? {
            return Ok(());
        }
        let found = scan_file(&locked.file).map_err(io)?;
        let (validity, last, uids, _) = assign_uids(&found.raws, self.validity_hint);
        if validity != self.uid_validity {
            return Err(MailboxError::Format(format!(
                "{}: UIDVALIDITY changed under the session",
                path.display()
            )));
        }
        let rest = found
            .raws
            .first()
            .map(|r| r.imapbase_rest.clone())
            .unwrap_or_default();
        let base_keywords =
            keyword_list(&rest, changes.values().flat_map(|c| c.2.iter())).join(" ");
        let keep: Vec<bool> = uids.iter().map(|u| !expunge.contains(u)).collect();
        let meta: Vec<Option<Meta>> = found
            .raws
            .iter()
            .zip(&uids)
            .map(|(r, &u)| {
                if r.pseudo {
                    return None;
                }
                match changes.get(&u) {
                    Some(c) if (r.flags, r.old, &r.keywords) != (c.0, c.1, &c.2) => Some(Meta {
                        uid: u,
                        flags: Some(c.clone()),
                    }),
                    _ if r.uid != Some(u) => Some(Meta {
                        uid: u,
                        flags: None,
                    }),
                    _ => None,
                }
            })
            .collect();
        let plan = Plan {
            validity,
            last,
            base_keywords: &base_keywords,
            keep: &keep,
            meta: &meta,
            uids: &uids,
        };
        rewrite_in_place(&locked.file, &found, &plan, REWRITE_BUFFER).map_err(io)?;
        touch_if_same(&locked.file, &before);
        if !rescan {
            self.stamp = None;
            return Ok(());
        }
        let stamp = crate::mailbox::FileStamp::of_file(&locked.file);
        let found = scan_file(&locked.file).map_err(io)?;
        let (validity, last, uids, _) = assign_uids(&found.raws, self.validity_hint);
        self.build(found, validity, last, uids);
        self.stamp = stamp;
        Ok(())
    }
}

/// One mbox message, ready to be opened for reading.
#[derive(Debug, Clone)]
pub struct MboxMessage {
    pub(super) path: PathBuf,
    pub(super) spot: Spot,
    /// The box's options: its read locks and how long to wait for them.
    pub(super) opts: MboxOptions,
}

impl MboxMessage {
    /// Open the message: its header with Dovecot's hidden fields removed, then the body
    /// read from the file as the reader is read. The file is held under the session's
    /// read locks (Dovecot's `mbox_read_locks`, by default an `fcntl` read lock) while the
    /// reader lives; if it was rewritten by someone else since the mailbox was opened,
    /// this fails rather than return another message.
    pub fn open(&self) -> Result<crate::mailbox::MessageReader, MailboxError> {
        self.open_waiting(self.opts.lock_timeout)
    }

    /// [`open`](Self::open), waiting at most `timeout` for the read lock.
    pub fn open_waiting(
        &self,
        timeout: Duration,
    ) -> Result<crate::mailbox::MessageReader, MailboxError> {
        let file = OpenOptions::new()
            .read(true)
            .write(read_needs_write(&self.opts))
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)
            .map_err(|e| MailboxError::io(&self.path, e))?;
        self.read_from(file, timeout)
    }

    /// See [`crate::mailbox::MessageRef::open_if_owned`]: the mbox opened with this thread's ids
    /// when it is a regular file owned by `uid` (`None` otherwise), then as
    /// [`open_waiting`](Self::open_waiting) with no wait for the lock.
    pub fn open_if_owned(
        &self,
        uid: u32,
    ) -> Option<Result<crate::mailbox::MessageReader, MailboxError>> {
        let file = OpenOptions::new()
            .read(true)
            .write(read_needs_write(&self.opts))
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)
            .ok()?;
        let st = file.metadata().ok()?;
        if !st.file_type().is_file() || std::os::unix::fs::MetadataExt::uid(&st) != uid {
            return None;
        }
        Some(self.read_from(file, Duration::ZERO))
    }

    /// Lock `file` (this mbox) for reading and check the message is where it was.
    fn read_from(
        &self,
        file: std::fs::File,
        timeout: Duration,
    ) -> Result<crate::mailbox::MessageReader, MailboxError> {
        let sp = &self.spot;
        let dot = lock_for_reading(&file, &self.path, &self.opts, timeout)?;
        let changed = || {
            MailboxError::Format(format!(
                "{}: mailbox changed under the session",
                self.path.display()
            ))
        };
        let mut head = vec![0u8; sp.hdr_end - sp.from_start];
        file.read_exact_at(&mut head, sp.from_start as u64)
            .map_err(|_| changed())?;
        if !sp.from_line.starts(&head) {
            return Err(changed());
        }
        let raw = Raw {
            hdr_start: sp.hdr_start - sp.from_start,
            hdr_end: head.len(),
            end: head.len(),
            ..Raw::default()
        };
        let head = visible(&head, &raw);
        Ok(crate::mailbox::MessageReader::new(
            head,
            file,
            sp.hdr_end as u64,
            sp.end as u64,
            self.path.clone(),
        )
        .holding(dot))
    }
}

#[cfg(test)]
mod tests {
    //! Tests of the box as sessions use it: flag updates in place and by rewrite, readers.

    use super::super::testkit::*;
    use super::super::{index::*, *};
    use crate::mailbox::flags::Flags;
    use std::collections::{HashMap, HashSet};

    /// The owner fast path reads a message as `open` does, only from a regular mbox of
    /// the given owner that is not a symlink.
    #[test]
    fn open_if_owned_only_for_the_owners_mbox() {
        use std::io::Read;
        let me = nix::unistd::geteuid().as_raw();
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        std::fs::write(&p, BOX).expect("write");
        let mb = MboxBox::open(&p, &MboxOptions::default(), None).expect("open");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let m = mb.message(1).expect("message");
        m.open().expect("open").read_to_end(&mut a).expect("read");
        m.open_if_owned(me)
            .expect("own file")
            .expect("reader")
            .read_to_end(&mut b)
            .expect("read");
        assert_eq!(a, b);
        assert!(m.open_if_owned(me + 1).is_none(), "other owner");
        let real = dir.path().join("real");
        std::fs::rename(&p, &real).expect("mv");
        std::os::unix::fs::symlink(&real, &p).expect("ln");
        assert!(m.open_if_owned(me).is_none(), "symlink");
    }

    #[test]
    fn commit_marks_seen_and_reader_streams() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        std::fs::write(&p, BOX).expect("write");
        let mut mb = MboxBox::open(&p, &MboxOptions::default(), None).expect("open");
        // Read through a reader in small pieces: the same bytes as a whole read.
        let mut r = mb.message(0).expect("message").open().expect("reader");
        let mut got = Vec::new();
        let mut piece = [0u8; 3];
        loop {
            let n = std::io::Read::read(&mut r, &mut piece).expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
        }
        drop(r);
        assert_eq!(
            got,
            b"From: bob@example.org\nSubject: one\n\nhello\n.dot line\n"
        );
        let before = std::fs::metadata(&p).expect("stat").len();
        commit(&mut mb, &[], &[0]);
        let text = std::fs::read_to_string(&p).expect("read");
        // `Status: RO` takes 11 of the 50 spaces, as in Dovecot: the file keeps its size.
        let pad = |n: usize| " ".repeat(n);
        assert!(
            text.contains(&format!("X-UID: 1{}\nStatus: RO\n\nhello", pad(39))),
            "{text}"
        );
        assert!(
            text.contains(&format!("Subject: two\nX-UID: 2{}\n\nsecond", pad(50))),
            "{text}"
        );
        assert_eq!(text.len() as u64, before);
        // Seen twice changes nothing; delete the other one.
        let mut again = MboxBox::open(&p, &MboxOptions::default(), None).expect("open");
        commit(&mut again, &[1], &[0]);
        let text = std::fs::read_to_string(&p).expect("read");
        assert_eq!(text.matches("Status: RO").count(), 1, "{text}");
        assert!(!text.contains("second"), "{text}");
    }

    /// The fast in-place header update writes what the full rewrite writes: every box of
    /// the rewrite tests, each message's flags changed in turn, once each way.
    #[test]
    fn header_update_as_full_rewrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pa, pb) = (dir.path().join("a"), dir.path().join("b"));
        let mut fast_taken = 0;
        for data in rewrite_cases() {
            std::fs::write(&pa, &data).expect("write");
            std::fs::write(&pb, &data).expect("write");
            let o = MboxOptions::default();
            let hint = Some(1_700_000_000);
            let mut a = MboxBox::open(&pa, &o, hint).expect("open");
            let mut b = MboxBox::open(&pb, &o, hint).expect("open");
            assert!(std::fs::read(&pa).expect("a") == std::fs::read(&pb).expect("b"));
            for i in 0..a.messages.len() {
                let m = a.messages[i].clone();
                let kws: Vec<String> = a
                    .base_keywords
                    .split_whitespace()
                    .take(i % 2)
                    .map(String::from)
                    .collect();
                let flags = if i % 3 == 0 {
                    m.flags.union(Flags::SEEN).union(Flags::FLAGGED)
                } else {
                    Flags::DELETED
                };
                let ch: HashMap<u32, MboxFlags> = [(m.uid, (flags, true, kws))].into();
                let before = FAST_UPDATES.with(|c| c.get());
                a.update(&ch, &HashSet::new(), true).expect("update a");
                fast_taken += FAST_UPDATES.with(|c| c.get()) - before;
                b.stamp = None;
                b.update(&ch, &HashSet::new(), true).expect("update b");
                let (ta, tb) = (
                    std::fs::read(&pa).expect("a"),
                    std::fs::read(&pb).expect("b"),
                );
                assert!(
                    ta == tb,
                    "message {i} of {:?}:\n  fast\n{:?}\n  full\n{:?}",
                    String::from_utf8_lossy(&data),
                    String::from_utf8_lossy(&ta),
                    String::from_utf8_lossy(&tb)
                );
                let got: Vec<(u32, Flags, bool)> =
                    a.messages.iter().map(|m| (m.uid, m.flags, m.old)).collect();
                let want: Vec<(u32, Flags, bool)> =
                    b.messages.iter().map(|m| (m.uid, m.flags, m.old)).collect();
                assert_eq!(got, want);
            }
        }
        assert!(fast_taken > 20, "{fast_taken}");
    }
}
