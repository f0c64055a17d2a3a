//! Rewrites (metadata, expunge) happen in place under the write locks
//! ([`crate::mailbox::lock`]), from the first changed byte on, then `ftruncate` and
//! `fsync`, as Dovecot does; the file keeps its inode, owner and mode. A rewrite whose
//! output runs ahead of its input (headers that grow: a fresh box getting its metadata)
//! first moves the rest of the file that far towards the end, from the end backwards, as
//! Dovecot's sync makes room, so a process killed at any point leaves every message in
//! the file, some perhaps twice and one cut where the writing stopped, and none held only
//! in memory (`scripts/kill-expunge` kills sessions during these rewrites; before this, a
//! kill during the first SELECT of a fresh box lost the messages whose bytes were in
//! memory). A header is streamed line by line, never held whole: a message without an
//! end-of-header line (50 MB without an empty line) costs no more memory than one with.
//! A rewrite that leaves the size as it was also moves the file's time to the next second
//! ([`super::touch_if_same`]): Dovecot's index notices a changed mbox by size and time in
//! seconds. The end of the file stays as it was, as Dovecot leaves it: what followed the
//! last message (its separator line, or nothing when its last line lacks a newline) ends
//! the output, after whichever message is last now. A rewritten header the end of the
//! file cut gets its newline and the separator; one cut in a lone `\r` gets its metadata
//! before that line, which becomes the end of headers (not after it, as in Dovecot, where
//! the metadata then is body).
//!
//! [`rewrite_in_place`] is the streaming rewrite; [`rewrite`] and [`write_back`], over the
//! whole buffer, are the obvious reference the tests prove it equal to.

use std::fs::File;
use std::os::unix::fs::FileExt;
#[cfg(test)]
use std::path::Path;

#[cfg(test)]
use crate::mailbox::MailboxError;

use super::meta::{Meta, drops, header_padding, imapbase_line, meta_lines, resolve};
use super::scan::{Raw, Scan, header_name};

#[cfg(test)]
thread_local! {
    /// [`InPlace::flush`] fails after this many bytes were written (a kill; tests).
    pub(super) static CRASH_AFTER: std::cell::Cell<Option<u64>> =
        const { std::cell::Cell::new(None) };
}

/// What a rewrite makes of the messages: UIDVALIDITY, last UID and keyword list for
/// `X-IMAPbase`, which messages stay, and the new metadata of the messages that change;
/// the others are copied as they are (Dovecot's layout and padding kept).
pub(super) struct Plan<'a> {
    pub(super) validity: u32,
    pub(super) last: u32,
    /// The keyword names after UIDVALIDITY and the last UID in `X-IMAPbase`.
    pub(super) base_keywords: &'a str,
    pub(super) keep: &'a [bool],
    /// Per message (as scanned): `Some` for those whose metadata is written anew.
    pub(super) meta: &'a [Option<Meta>],
    /// Per message: its UID (`X-UID` of the first message, rewritten for `X-IMAPbase`).
    pub(super) uids: &'a [u32],
}

impl Plan<'_> {
    /// Whether message `i` (the first kept one when `first`) is rewritten, and with what.
    fn meta_of(&self, raws: &[Raw], i: usize, first: bool) -> Option<Meta> {
        if let Some(m) = self.meta.get(i).cloned().flatten() {
            return Some(m);
        }
        let r = &raws[i];
        let base_same = i == 0
            && r.imapbase == Some((self.validity, self.last))
            && r.imapbase_rest == self.base_keywords;
        if first && !base_same {
            return Some(Meta {
                uid: self.uids.get(i).copied().unwrap_or(0),
                flags: None,
            });
        }
        None
    }
}

/// How message `i` ends in the output. `None`: as every message but the last, with its
/// final newline if it lacks one, then the empty separator line. `Some((a, b))`: the old
/// bytes from `a` to `b` and nothing more, for the last message kept, as Dovecot 2.3
/// ends the file: what followed the file's last message there (its separator line, or
/// nothing: a last line without its newline stays so, the message as it was), also when
/// the messages after it are expunged. A rewritten header that the file's end cut (no
/// end-of-headers line) still gets the newline and the empty line, as Dovecot writes it.
fn file_end(
    raws: &[Raw],
    plan: &Plan,
    i: usize,
    len: usize,
    rewritten: bool,
) -> Option<(usize, usize)> {
    let r = &raws[i];
    let later_kept = raws
        .iter()
        .enumerate()
        .skip(i + 1)
        .any(|(j, x)| plan.keep[j] || x.pseudo);
    let last = raws.last().map_or(r.end, |x| x.end);
    // A rewritten header over an empty body that ends the file (`From …\n\n` at its
    // end) keeps the separator after it too: once the header has lines, the scan would
    // take a lone final empty line for the separator and lose the body's.
    let empty_body_at_end = r.end.saturating_sub(r.hdr_end) == 1 && last == len;
    if later_kept || (rewritten && (r.hdr_end >= r.end || empty_body_at_end)) {
        return None;
    }
    Some((last, len))
}

/// Whether a rewritten header's line (`line`: its first bytes, `len` long, `lf`: ending in
/// LF) is a lone `\r` that the end of the file cut: the last line of a header without end
/// (`…X-Foo: bar\n\r`). Completed, it is `\r\n`, an empty line: metadata written after
/// it would be body (Dovecot 2.3.19 writes it so, and then reads its `Status:` as body:
/// the flag is lost and clients see the line). The rewrite writes the metadata before it
/// and completes it as the end of the headers; clients see one final `\n` more, as for
/// any header the end of the file cut.
fn cut_lone_cr(r: &Raw, file_len: usize, line: &[u8], len: usize, lf: bool) -> bool {
    !lf && len == 1 && line == b"\r" && r.hdr_end == r.end && r.end == file_len
}

/// The `X-IMAPbase:` (or pseudo message's `X-IMAP:`) line, without its newline.
pub(super) fn base_line(plan: &Plan, pseudo: bool) -> String {
    imapbase_line(pseudo, plan.validity, plan.last, plan.base_keywords)
}

/// The file's new contents (the whole-buffer reference for [`rewrite_in_place`]).
#[cfg(test)]
pub(super) fn rewrite(data: &[u8], raws: &[Raw], plan: &Plan) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(&data[..raws.first().map(|r| r.from_start).unwrap_or(data.len())]);
    let mut first = true;
    for (i, r) in raws.iter().enumerate() {
        if !plan.keep[i] && !r.pseudo {
            continue;
        }
        let meta = plan.meta_of(raws, i, first);
        let is_first = first;
        first = false;
        let Some(meta) = meta else {
            // Unchanged: as it is, but for a missing final newline.
            out.extend_from_slice(&data[r.from_start..r.end]);
            if let Some((a, b)) = file_end(raws, plan, i, data.len(), false) {
                out.extend_from_slice(&data[a..b]);
                continue;
            }
            if !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            out.push(b'\n');
            continue;
        };
        let meta = resolve(meta, r);
        out.extend_from_slice(&data[r.from_start..r.hdr_start]);
        let hdr_out = out.len();
        let mut p = r.hdr_start;
        let mut dropping = false;
        let mut lines_end = r.hdr_end;
        while p < r.hdr_end {
            let eol = data[p..r.hdr_end]
                .iter()
                .position(|&b| b == b'\n')
                .map(|j| p + j + 1)
                .unwrap_or(r.hdr_end);
            let line = &data[p..eol];
            if cut_lone_cr(r, data.len(), line, eol - p, line.ends_with(b"\n")) {
                lines_end = p;
                break;
            }
            let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
            if !continuation {
                let head = &line[..line.len().min(LINE_HEAD)];
                dropping = drops(header_name(head).as_deref(), r.pseudo);
            }
            if !dropping {
                out.extend_from_slice(line);
                if !line.ends_with(b"\n") {
                    out.push(b'\n');
                }
            }
            p = eol;
        }
        let kept = out.len() - hdr_out;
        let base = is_first.then(|| base_line(plan, r.pseudo));
        let natural = kept + meta_lines(base.as_deref(), r.pseudo, &meta, 0, false).len();
        let old = lines_end - r.hdr_start;
        let pad = header_padding(old, natural);
        // Fresh padding goes after `X-Keywords`, reused padding stays where it was.
        let on_kw = natural > old || r.kw_padded;
        out.extend_from_slice(&meta_lines(base.as_deref(), r.pseudo, &meta, pad, on_kw));
        if lines_end < r.hdr_end {
            out.extend_from_slice(b"\r\n");
        }
        // A message without an end-of-headers line gets none: as in Dovecot's rewrite,
        // only the separator line follows its headers, so its size does not change.
        out.extend_from_slice(&data[r.hdr_end..r.end]);
        if let Some((a, b)) = file_end(raws, plan, i, data.len(), true) {
            out.extend_from_slice(&data[a..b]);
            continue;
        }
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out
}

/// Write `new` over `old` in `file` from the first differing byte, truncate, fsync (the
/// whole-buffer reference for [`rewrite_in_place`]).
#[cfg(test)]
pub(super) fn write_back(
    file: &File,
    path: &Path,
    old: &[u8],
    new: &[u8],
) -> Result<(), MailboxError> {
    if old == new {
        return Ok(());
    }
    let same = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    file.write_all_at(&new[same..], same as u64)
        .and_then(|()| file.set_len(new.len() as u64))
        .and_then(|()| file.sync_all())
        .map_err(|e| MailboxError::io(path, e))
}

/// I/O buffer of the in-place rewrite.
pub(super) const REWRITE_BUFFER: usize = 64 * 1024;

/// The start of a header line the rewrite looks at: enough for the names it drops
/// (`Content-Length:` is the longest) and a continuation's leading space.
pub(super) const LINE_HEAD: usize = 32;

/// The output of a rewrite, written over the file it was read from as it is produced, fed
/// as ranges of old bytes (taken in increasing order) and new bytes. Nothing is written
/// until the first byte that differs; an old range already at its place is not copied.
/// Old bytes the output is about to overwrite but that are still to be copied are kept in
/// `queue` first: that holds at most as many bytes as the output has grown by so far.
pub(super) struct InPlace<'a> {
    pub(super) file: &'a File,
    pub(super) old_len: u64,
    pub(super) buf: usize,
    /// Length of the output so far.
    pub(super) out: u64,
    /// The file holds the output up to here; `pend` is the output from `w` to `out`.
    pub(super) w: u64,
    pub(super) pend: Vec<u8>,
    /// Old bytes before `c` are needed no more.
    pub(super) c: u64,
    /// `queue` holds the old bytes from `c` to `r`; from `r` on, the file still holds them.
    pub(super) r: u64,
    pub(super) queue: std::collections::VecDeque<u8>,
    /// Something differs (before that, the output is the old file's beginning).
    pub(super) writing: bool,
    /// The output's last byte.
    pub(super) last: Option<u8>,
    pub(super) tmp: Vec<u8>,
    pub(super) cmp: Vec<u8>,
    /// The most bytes `queue` held, the largest other buffer, and the bytes written.
    pub(super) peak: usize,
    pub(super) peak_buf: usize,
    pub(super) written: u64,
    /// A dry run: nothing is written; `lead` and `start` are measured.
    pub(super) dry: bool,
    /// The most the output ran ahead of the old bytes taken (`out - c`): what the file must
    /// make room for first so that no old byte is ever held only in memory.
    pub(super) lead: u64,
    /// Where writing began (the smaller of the output and the old position then).
    pub(super) start: Option<u64>,
    /// The old bytes from `shift_from` on lie `shift` bytes further on in the file (moved
    /// there by [`move_tail`] before this pass).
    pub(super) shift: u64,
    pub(super) shift_from: u64,
}

impl<'a> InPlace<'a> {
    fn new(file: &'a File, old_len: u64, buf: usize) -> InPlace<'a> {
        InPlace {
            file,
            old_len,
            buf: buf.max(1),
            out: 0,
            w: 0,
            pend: Vec::new(),
            c: 0,
            r: 0,
            queue: std::collections::VecDeque::new(),
            writing: false,
            last: None,
            tmp: Vec::new(),
            cmp: Vec::new(),
            peak: 0,
            peak_buf: 0,
            written: 0,
            dry: false,
            lead: 0,
            start: None,
            shift: 0,
            shift_from: u64::MAX,
        }
    }

    /// Read old bytes from `pos` on, where the file holds them now (see `shift`).
    fn read_old(&self, dst: &mut [u8], pos: u64) -> std::io::Result<()> {
        if self.shift == 0 || pos + dst.len() as u64 <= self.shift_from {
            return self.file.read_exact_at(dst, pos);
        }
        if pos >= self.shift_from {
            return self.file.read_exact_at(dst, pos + self.shift);
        }
        let (a, b) = dst.split_at_mut((self.shift_from - pos) as usize);
        self.file.read_exact_at(a, pos)?;
        self.file.read_exact_at(b, self.shift_from + self.shift)
    }

    /// The old bytes before `pos` are needed no more (an error if some were given up).
    fn skip_to(&mut self, pos: u64) -> std::io::Result<()> {
        if pos < self.c {
            return Err(std::io::Error::other("mbox rewrite: ranges out of order"));
        }
        if pos == self.c {
            return Ok(());
        }
        let gone = (pos.min(self.r) - self.c) as usize;
        self.queue.drain(..gone);
        self.c = pos;
        self.r = self.r.max(pos);
        Ok(())
    }

    /// Append the next `n` old bytes to `dst`.
    fn take(&mut self, n: usize, dst: &mut Vec<u8>) -> std::io::Result<()> {
        let queued = n.min(self.queue.len());
        dst.extend(self.queue.drain(..queued));
        self.c += queued as u64;
        if queued < n {
            // The queue is empty: `r == c`, and the file still holds the old bytes there.
            let start = dst.len();
            dst.resize(start + n - queued, 0);
            self.read_old(&mut dst[start..], self.c)?;
            self.c += (n - queued) as u64;
            self.r = self.c;
        }
        Ok(())
    }

    /// The old bytes from `a` to `b` (not yet given up: `a >= c`) into `dst`, without
    /// taking them: from the queue, then from the file, which holds them from `r` on.
    fn peek(&mut self, a: u64, b: u64, dst: &mut Vec<u8>) -> std::io::Result<()> {
        dst.clear();
        if a < self.c {
            return Err(std::io::Error::other("mbox rewrite: ranges out of order"));
        }
        if a < self.r {
            let from = (a - self.c) as usize;
            let to = (b.min(self.r) - self.c) as usize;
            dst.extend(self.queue.range(from..to));
        }
        let f = a.max(self.r);
        if f < b {
            let start = dst.len();
            dst.resize(start + (b - f) as usize, 0);
            self.read_old(&mut dst[start..], f)?;
        }
        self.peak_buf = self.peak_buf.max(dst.len());
        Ok(())
    }

    /// The old line that starts at `a` (ending after its LF, or at `limit`): its end, its
    /// first [`LINE_HEAD`] bytes, whether it ends with LF. Reads `buf` bytes at a time.
    fn line_at(&mut self, a: u64, limit: u64) -> std::io::Result<(u64, Vec<u8>, bool)> {
        let mut chunk = std::mem::take(&mut self.cmp);
        let mut head = Vec::new();
        let mut p = a;
        let found = loop {
            if p >= limit {
                break (limit, false);
            }
            let n = (limit - p).min(self.buf as u64);
            self.peek(p, p + n, &mut chunk)?;
            let room = LINE_HEAD.saturating_sub(head.len());
            let lf = chunk.iter().position(|&b| b == b'\n');
            let upto = lf.map_or(chunk.len(), |i| i + 1);
            head.extend_from_slice(&chunk[..room.min(upto)]);
            if let Some(i) = lf {
                break (p + i as u64 + 1, true);
            }
            p += n;
        };
        self.cmp = chunk;
        Ok((found.0, head, found.1))
    }

    /// Output the old bytes from `a` to `b`.
    fn copy(&mut self, a: u64, b: u64) -> std::io::Result<()> {
        self.skip_to(a)?;
        if a >= b {
            return Ok(());
        }
        if a == self.out && (self.shift == 0 || b <= self.shift_from) {
            // Already in place.
            self.flush()?;
            self.skip_to(b)?;
            self.out = b;
            self.w = b;
            let mut one = [0u8];
            self.file.read_exact_at(&mut one, b - 1)?;
            self.last = Some(one[0]);
            return Ok(());
        }
        let mut chunk = std::mem::take(&mut self.tmp);
        while self.c < b {
            chunk.clear();
            let n = (b - self.c).min(self.buf as u64) as usize;
            self.take(n, &mut chunk)?;
            self.emit(&chunk)?;
        }
        self.tmp = chunk;
        Ok(())
    }

    /// Output `bytes`.
    fn emit(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.last = bytes.last().copied();
        if !self.writing {
            // Nothing written yet: the file is the old one; skip what is the same.
            let avail = self
                .old_len
                .saturating_sub(self.out)
                .min(bytes.len() as u64) as usize;
            let mut same = 0;
            while same < avail {
                let n = (avail - same).min(self.buf);
                self.cmp.resize(n, 0);
                self.file
                    .read_exact_at(&mut self.cmp, self.out + same as u64)?;
                let m = self
                    .cmp
                    .iter()
                    .zip(&bytes[same..same + n])
                    .take_while(|(x, y)| x == y)
                    .count();
                same += m;
                if m < n {
                    break;
                }
            }
            self.out += same as u64;
            self.w = self.out;
            bytes = &bytes[same..];
            if bytes.is_empty() {
                return Ok(());
            }
            self.writing = true;
            self.start = Some(self.w.min(self.c));
        }
        self.pend.extend_from_slice(bytes);
        self.out += bytes.len() as u64;
        self.lead = self.lead.max(self.out.saturating_sub(self.c));
        if self.pend.len() >= self.buf {
            self.flush()?;
        }
        Ok(())
    }

    /// Write `pend`, once the old bytes it covers that are still needed are queued.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.pend.is_empty() {
            return Ok(());
        }
        if self.dry {
            self.w = self.out;
            self.pend.clear();
            return Ok(());
        }
        // The old bytes still needed that lie where the output goes.
        let need = if self.shift == 0 || self.out <= self.shift_from {
            self.out
        } else {
            self.shift_from.max(self.out.saturating_sub(self.shift))
        }
        .min(self.old_len);
        while self.r < need {
            let n = (need - self.r).min(self.buf as u64) as usize;
            let mut chunk = std::mem::take(&mut self.cmp);
            chunk.resize(n, 0);
            self.read_old(&mut chunk, self.r)?;
            self.queue.extend(&chunk);
            self.cmp = chunk;
            self.r += n as u64;
        }
        self.peak = self.peak.max(self.queue.len());
        self.peak_buf = self.peak_buf.max(self.pend.len());
        #[cfg(test)]
        if let Some(limit) = CRASH_AFTER.with(|c| c.get())
            && self.written + self.pend.len() as u64 > limit
        {
            // A process killed in the middle of this write: part of it reached the file.
            let part = (limit - self.written) as usize;
            self.file.write_all_at(&self.pend[..part], self.w)?;
            return Err(std::io::Error::other("killed"));
        }
        self.file.write_all_at(&self.pend, self.w)?;
        self.written += self.pend.len() as u64;
        self.w = self.out;
        self.pend.clear();
        Ok(())
    }

    /// Write the rest, cut the file to the output's length and fsync, if anything changed.
    fn finish(mut self) -> std::io::Result<Rewritten> {
        self.flush()?;
        let done = Rewritten {
            peak_queue: self.peak,
            peak_buffer: self.peak_buf,
            written: self.written,
            moved: (self.shift > 0).then_some((self.shift_from, self.shift)),
        };
        if self.dry || (!self.writing && self.out == self.old_len && self.shift == 0) {
            return Ok(done);
        }
        self.file.set_len(self.out)?;
        self.file.sync_all()?;
        Ok(done)
    }
}

/// What [`rewrite_in_place`] did: the most old bytes it held at once, the bytes it wrote.
#[derive(Debug)]
pub(super) struct Rewritten {
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) peak_queue: usize,
    /// The largest read or write buffer.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) peak_buffer: usize,
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) written: u64,
    /// From where, and how far, the rest of the file was moved first.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) moved: Option<(u64, u64)>,
}

/// [`rewrite`]'s output written over the file `found` was scanned from, in place from the
/// first changed byte, then truncated and fsynced ([`write_back`] of it). Memory: about
/// three `buf`-byte buffers (headers are read line by line, a long line `buf` bytes at a
/// time, so a header without end costs no more), the metadata lines written, and the old
/// bytes the output has overtaken (at most what the file has grown by so far, only
/// inserted headers make it grow), never the file nor one message.
pub(super) fn rewrite_in_place(
    file: &File,
    found: &Scan,
    plan: &Plan,
    buf: usize,
) -> std::io::Result<Rewritten> {
    let raws = &found.raws;
    let Some(r0) = raws.first() else {
        return Ok(Rewritten {
            peak_queue: 0,
            peak_buffer: 0,
            written: 0,
            moved: None,
        });
    };
    // A dry run first: how far the output runs ahead of the old bytes (headers that grow).
    // The old bytes from where writing begins are then moved that far towards the end
    // (from the end backwards, as Dovecot's mbox sync makes room), so that the rewrite
    // never overwrites an old byte it still needs: a process killed at any point leaves
    // every message in the file (some twice), none held only in memory.
    let old_len = found.len as u64;
    let mut dry = InPlace::new(file, old_len, buf);
    dry.dry = true;
    drive(&mut dry, found, plan, r0)?;
    dry.flush()?;
    let mut io = InPlace::new(file, old_len, buf);
    if let Some(start) = dry.start
        && dry.lead > 0
    {
        move_tail(file, start, old_len, dry.lead, buf)?;
        io.shift = dry.lead;
        io.shift_from = start;
    }
    drive(&mut io, found, plan, r0)?;
    io.finish()
}

/// Copy the bytes from `from` to `end` `by` bytes further on, from the end backwards
/// (each piece lands beyond what is still to be read), then sync them before the rewrite
/// overwrites the old places.
pub(super) fn move_tail(
    file: &File,
    from: u64,
    end: u64,
    by: u64,
    buf: usize,
) -> std::io::Result<()> {
    let mut chunk = vec![0u8; buf.max(1)];
    let mut hi = end;
    while hi > from {
        let n = (hi - from).min(chunk.len() as u64) as usize;
        let lo = hi - n as u64;
        file.read_exact_at(&mut chunk[..n], lo)?;
        file.write_all_at(&chunk[..n], lo + by)?;
        hi = lo;
    }
    file.sync_data()
}

/// The rewrite's ranges and new bytes, in order, into `io` ([`rewrite_in_place`]).
pub(super) fn drive(io: &mut InPlace, found: &Scan, plan: &Plan, r0: &Raw) -> std::io::Result<()> {
    let raws = &found.raws;
    io.copy(0, r0.from_start as u64)?;
    let mut first = true;
    for (i, r) in raws.iter().enumerate() {
        if !plan.keep[i] && !r.pseudo {
            continue;
        }
        let meta = plan.meta_of(raws, i, first);
        let is_first = first;
        first = false;
        let Some(meta) = meta else {
            io.copy(r.from_start as u64, r.end as u64)?;
            if let Some((a, b)) = file_end(raws, plan, i, found.len, false) {
                io.copy(a as u64, b as u64)?;
                continue;
            }
            if io.last != Some(b'\n') {
                io.emit(b"\n")?;
            }
            io.emit(b"\n")?;
            continue;
        };
        let meta = resolve(meta, r);
        io.copy(r.from_start as u64, r.hdr_start as u64)?;
        // The header line by line, never whole: runs of kept lines are copied (in place
        // when they did not move), Dovecot's metadata lines dropped.
        let (hs, he) = (r.hdr_start as u64, r.hdr_end as u64);
        let mut kept = 0usize;
        let mut run: Option<u64> = None;
        let mut dropping = false;
        let mut lf = true;
        let mut p = hs;
        let mut lines_end = he;
        while p < he {
            let (eol, head, ends_lf) = io.line_at(p, he)?;
            if cut_lone_cr(r, found.len, &head, (eol - p) as usize, ends_lf) {
                lines_end = p;
                break;
            }
            let continuation = head.first().is_some_and(|b| *b == b' ' || *b == b'\t');
            if !continuation {
                dropping = drops(header_name(&head).as_deref(), r.pseudo);
            }
            if dropping {
                if let Some(a) = run.take() {
                    io.copy(a, p)?;
                }
            } else {
                run.get_or_insert(p);
                kept += (eol - p) as usize;
                lf = ends_lf;
            }
            p = eol;
        }
        if let Some(a) = run.take() {
            io.copy(a, lines_end)?;
            // Only the last line, cut by the end of the file, can lack its newline.
            if !lf {
                io.emit(b"\n")?;
                kept += 1;
            }
        }
        let base = is_first.then(|| base_line(plan, r.pseudo));
        let natural = kept + meta_lines(base.as_deref(), r.pseudo, &meta, 0, false).len();
        let old = (lines_end - hs) as usize;
        let pad = header_padding(old, natural);
        let on_kw = natural > old || r.kw_padded;
        io.emit(&meta_lines(base.as_deref(), r.pseudo, &meta, pad, on_kw))?;
        if lines_end < he {
            io.emit(b"\r\n")?;
        }
        io.copy(r.hdr_end as u64, r.end as u64)?;
        if let Some((a, b)) = file_end(raws, plan, i, found.len, true) {
            io.copy(a as u64, b as u64)?;
            continue;
        }
        if io.last != Some(b'\n') {
            io.emit(b"\n")?;
        }
        io.emit(b"\n")?;
    }
    Ok(())
}
