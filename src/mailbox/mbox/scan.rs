//! Splitting an mbox into messages: a `From ` line after an empty line starts one (the
//! first `From ` line of the file too), unless the previous message's `Content-Length:`
//! holds and reaches past it (Dovecot's `istream_raw_mbox_is_valid_from()`). [`scan`]
//! reads the file once through a bounded buffer, keeping only a line's first bytes, and
//! finds each message's offsets, Dovecot's metadata (through [`super::meta`]), the size
//! clients see and its `From ` line's time; [`parse`], over the whole buffer, is the
//! obvious reference the tests hold it to.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::mailbox::flags::Flags;

use super::meta::{Cont, HIDDEN, note_continuation, note_field};

/// One message as found in the file.
#[derive(Debug, Clone, Default)]
pub(super) struct Raw {
    /// Offset of the `From ` line.
    pub(super) from_start: usize,
    /// Offset of the first header line.
    pub(super) hdr_start: usize,
    /// Offset of the empty line that ends the header (or `end` if there is none).
    pub(super) hdr_end: usize,
    /// End of the message's content (the separator empty line excluded).
    pub(super) end: usize,
    pub(super) uid: Option<u32>,
    pub(super) imapbase: Option<(u32, u32)>,
    /// What follows UIDVALIDITY and LAST-UID in `X-IMAPbase` (Dovecot's keyword names).
    pub(super) imapbase_rest: String,
    pub(super) has_status: bool,
    /// System flags: `Status:` `R`, `X-Status:` `A` `F` `T` `D`.
    pub(super) flags: Flags,
    /// `Status:` holds `O`: no longer \\Recent (Dovecot's `MBOX_NONRECENT_KLUDGE`).
    pub(super) old: bool,
    /// `X-Keywords:` names.
    pub(super) keywords: Vec<String>,
    /// The `X-Keywords:` line ends in spaces: Dovecot's padding is there.
    pub(super) kw_padded: bool,
    /// `Content-Length:` (the first, if its value is a number).
    pub(super) content_length: Option<u64>,
    /// That length did not hold where the header ended: the message ends at the next
    /// `From ` line instead, and a rewrite drops the field (it could come to hold once
    /// the bytes after it move, and swallow the next message).
    pub(super) cl_stale: bool,
    /// UW-IMAP's and Dovecot's pseudo message (`X-IMAP:` in the first message: "DON'T
    /// DELETE THIS MESSAGE -- FOLDER INTERNAL DATA"): holds the metadata, is no message.
    pub(super) pseudo: bool,
    /// The `From ` line's time (Unix seconds; 0 when it has none).
    pub(super) date: i64,
}

pub(super) fn header_name(line: &[u8]) -> Option<String> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    Some(String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// Whether a message whose body starts at `body` and has `Content-Length: len` ends
/// there: at `body + len` the file has the separator line and a `From ` line, or its
/// last newline (Dovecot's `istream_raw_mbox_is_valid_from()`, which then takes the
/// length as given, so that a `From ` line inside the body, not quoted, stays body, as
/// Dovecot's appends write them). `peek` reads the file at an offset.
pub(super) fn content_length_holds(
    body: u64,
    len: u64,
    peek: &dyn Fn(u64, &mut [u8]) -> usize,
) -> bool {
    let mut buf = [0u8; 8];
    let n = peek(body.saturating_add(len), &mut buf);
    let b = &buf[..n];
    b == b"\n" || b == b"\r\n" || b.starts_with(b"\nFrom ") || b.starts_with(b"\r\nFrom ")
}

/// The time of a `From ` line (`From SENDER  Sat Nov 28 10:00:00 2026`, also with a
/// numeric zone before or after the year, or `Sat, 28 Nov 2026 10:00:00`), in local time
/// unless a zone is given, as Dovecot's `mbox_from_parse()` reads it; `None` if the line
/// has no such date.
pub fn from_line_time(line: &[u8]) -> Option<i64> {
    const MONTHS: [&[u8]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    let mut s = line.strip_prefix(b"From ")?;
    while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        s = &s[..s.len() - 1];
    }
    // The sender: a quoted local part may hold spaces.
    let mut i = 0;
    if s.first() == Some(&b'"') {
        i = 1;
        let mut esc = false;
        while i < s.len() && (s[i] != b'"' || esc) {
            esc = s[i] == b'\\';
            i += 1;
        }
        i += 1;
    }
    while i < s.len() && s[i] != b' ' {
        i += 1;
    }
    while i < s.len() && s[i] == b' ' {
        i += 1;
    }
    let d = s.get(i..)?;
    let digit = |k: usize| {
        d.get(k)
            .filter(|c| c.is_ascii_digit())
            .map(|c| i64::from(c - b'0'))
    };
    let month = |at: &[u8]| -> Option<i64> {
        let m = at.get(..3)?.to_ascii_lowercase();
        MONTHS
            .iter()
            .position(|x| *x == m.as_slice())
            .map(|p| p as i64)
    };
    let mut p;
    let (mon, day, year_first);
    let mut year = None;
    // "Thu Nov 29 22:33:52 2001" or "Thu, 29 Nov 2001 22:33:52".
    if let Some(m) = d
        .get(4..)
        .and_then(month)
        .filter(|_| d.get(7) == Some(&b' '))
    {
        mon = m;
        p = 8;
        if d.get(p) == Some(&b' ') {
            p += 1;
        }
        if d.get(p + 1) == Some(&b' ') {
            day = digit(p)?;
            p += 2;
        } else {
            day = digit(p)? * 10 + digit(p + 1)?;
            if d.get(p + 2) != Some(&b' ') {
                return None;
            }
            p += 3;
        }
        year_first = false;
    } else {
        p = 5;
        let mut dd = digit(p)?;
        p += 1;
        if let Some(x) = digit(p) {
            dd = dd * 10 + x;
            p += 1;
        }
        if d.get(p) != Some(&b' ') {
            return None;
        }
        p += 1;
        mon = month(d.get(p..)?)?;
        if d.get(p + 3) != Some(&b' ') {
            return None;
        }
        p += 4;
        year = Some(digit(p)? * 1000 + digit(p + 1)? * 100 + digit(p + 2)? * 10 + digit(p + 3)?);
        p += 5;
        day = dd;
        year_first = true;
    }
    let hour = digit(p)? * 10 + digit(p + 1)?;
    if d.get(p + 2) != Some(&b':') {
        return None;
    }
    let min = digit(p + 3)? * 10 + digit(p + 4)?;
    p += 5;
    let mut sec = 0;
    if d.get(p) == Some(&b':') {
        sec = digit(p + 1)? * 10 + digit(p + 2)?;
        p += 3;
    }
    let mut zone: Option<i64> = None;
    let numeric_zone = |at: usize| -> Option<i64> {
        let sign = match d.get(at)? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let v = (digit(at + 1)? * 10 + digit(at + 2)?) * 3600
            + (digit(at + 3)? * 10 + digit(at + 4)?) * 60;
        Some(sign * v)
    };
    if !year_first {
        if d.get(p) != Some(&b' ') {
            return None;
        }
        p += 1;
        if digit(p).is_none() || digit(p + 3).is_none() {
            // A zone (numeric or named) before the year.
            if let Some(z) = numeric_zone(p) {
                zone = Some(z);
            }
            while p < d.len() && d[p] != b' ' {
                p += 1;
            }
            p += 1;
        }
        year = Some(digit(p)? * 1000 + digit(p + 1)? * 100 + digit(p + 2)? * 10 + digit(p + 3)?);
        p += 4;
    }
    if zone.is_none() && d.get(p) == Some(&b' ') {
        zone = numeric_zone(p + 1);
    }
    let year = year?;
    let day = day.max(1);
    match zone {
        Some(z) => {
            Some(days_from_civil(year, mon + 1, day) * 86400 + hour * 3600 + min * 60 + sec - z)
        }
        None => {
            let mut tm = crate::sys::time::blank_tm();
            tm.tm_year = (year - 1900) as libc::c_int;
            tm.tm_mon = mon as libc::c_int;
            tm.tm_mday = day as libc::c_int;
            tm.tm_hour = hour as libc::c_int;
            tm.tm_min = min as libc::c_int;
            tm.tm_sec = sec as libc::c_int;
            tm.tm_isdst = -1;
            crate::sys::time::mktime(&mut tm)
        }
    }
}

/// Days from 1970-01-01 to the civil date (proleptic Gregorian).
pub(super) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Split an mbox into messages (the whole-file reference for [`scan`]): the first
/// `From ` line, and later a `From ` line after an empty line, starts one, unless the
/// previous message's `Content-Length:` holds and reaches past it. An empty line right
/// before a message's start is the separator, no part of a message; the header ends at
/// the first other empty line. Bytes before the first `From ` line are not a message.
#[cfg(test)]
pub(super) fn parse(data: &[u8]) -> Vec<Raw> {
    let peek = |off: u64, buf: &mut [u8]| -> usize {
        let off = (off as usize).min(data.len());
        let n = buf.len().min(data.len() - off);
        buf[..n].copy_from_slice(&data[off..off + n]);
        n
    };
    let mut out: Vec<Raw> = Vec::new();
    let mut pos = 0;
    let mut prev_empty = true;
    // The empty line just read in a header: it ends the header unless a message starts
    // after it (then it is the separator).
    let mut pending: Option<usize> = None;
    let mut in_header = false;
    let mut cont = Cont::Other;
    let mut no_start_before = 0usize;
    let mut last_line = (0usize, 0usize);
    while pos < data.len() {
        let eol = data[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i + 1)
            .unwrap_or(data.len());
        let line = &data[pos..eol];
        last_line = (pos, line.len());
        let empty = line == b"\n" || line == b"\r\n";
        let starts =
            (prev_empty || out.is_empty()) && pos >= no_start_before && line.starts_with(b"From ");
        if starts {
            if let Some(r) = out.last_mut() {
                let end = pos.saturating_sub(1).max(r.hdr_start);
                if in_header {
                    r.hdr_end = end;
                }
                r.end = end;
            }
            out.push(Raw {
                from_start: pos,
                hdr_start: eol,
                hdr_end: eol,
                end: eol,
                date: from_line_time(&line[..line.len().min(SCAN_KEEP)]).unwrap_or(0),
                ..Raw::default()
            });
            in_header = true;
            pending = None;
            cont = Cont::Other;
        } else if in_header && !out.is_empty() {
            let index = out.len() - 1;
            let r = &mut out[index];
            if let Some(p) = pending.take() {
                // The empty line ended the header: this line is body.
                r.hdr_end = p;
                in_header = false;
                if let Some(n) = r.content_length {
                    if content_length_holds(pos as u64, n, &peek) {
                        no_start_before = pos + n as usize + 1;
                    } else {
                        r.cl_stale = true;
                    }
                }
            } else if empty {
                pending = Some(pos);
            } else {
                let text = &line[..line.len().min(SCAN_KEEP)];
                if text.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                    note_continuation(r, text, cont);
                } else {
                    match header_name(text) {
                        Some(n) => note_field(r, &n, text, index, &mut cont),
                        None => cont = Cont::Other,
                    }
                }
            }
        }
        prev_empty = empty;
        pos = eol;
    }
    if let Some(r) = out.last_mut() {
        let mut end = data.len();
        // A final `\n` line after another line of the message is its separator.
        let (lp, ll) = last_line;
        let final_sep = prev_empty && ll == 1 && lp > r.hdr_start;
        if final_sep {
            end -= 1;
        }
        if let Some(p) = pending
            && in_header
            && !(final_sep && p == lp)
        {
            r.hdr_end = p;
            in_header = false;
        }
        if in_header {
            r.hdr_end = end;
        }
        r.end = end;
    }
    out
}

/// Longest line prefix [`scan`] keeps: header names and Dovecot's metadata values are
/// short; a longer line is still measured to the byte.
pub(super) const SCAN_KEEP: usize = 8192;

/// One line as [`scan`] reads it: its length, its first bytes, how it ends.
pub(super) struct ScanLine {
    pub(super) len: usize,
    /// The first [`SCAN_KEEP`] bytes.
    pub(super) head: Vec<u8>,
    /// The line ends with LF.
    pub(super) lf: bool,
    /// The line ends with CRLF.
    pub(super) crlf: bool,
}

impl ScanLine {
    fn is_empty_line(&self) -> bool {
        (self.len == 1 && self.lf) || (self.len == 2 && self.crlf)
    }
}

/// Read the next line of `r` into `line` (bounded memory: only its first bytes are kept).
pub(super) fn next_line(
    r: &mut impl std::io::BufRead,
    line: &mut ScanLine,
) -> std::io::Result<bool> {
    line.len = 0;
    line.head.clear();
    line.lf = false;
    line.crlf = false;
    let mut last = 0u8;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(line.len > 0);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let chunk = &buf[..take];
        let room = SCAN_KEEP.saturating_sub(line.head.len());
        line.head.extend_from_slice(&chunk[..room.min(take)]);
        if done {
            let before = if take >= 2 { chunk[take - 2] } else { last };
            line.lf = true;
            line.crlf = before == b'\r';
        }
        last = chunk[take - 1];
        line.len += take;
        r.consume(take);
        if done {
            return Ok(true);
        }
    }
}

/// What [`scan`] finds: the messages as [`parse`] would split them, each message's
/// size as clients see it ([`visible`], CRLF-counted) and its `From ` line.
pub(super) struct Scan {
    pub(super) raws: Vec<Raw>,
    pub(super) sizes: Vec<u64>,
    pub(super) from_lines: Vec<FromLine>,
    /// The bytes read: the file's length.
    pub(super) len: usize,
}

/// A message being scanned.
pub(super) struct ScanMsg {
    pub(super) raw: Raw,
    pub(super) in_header: bool,
    pub(super) hiding: bool,
    pub(super) cont: Cont,
    pub(super) size: u64,
}

impl ScanMsg {
    /// Account for `len` bytes of the line `l` at `pos` (`len` < `l.len` when the line is
    /// cut by the separator: the CR of a CRLF separator line).
    fn add(&mut self, l: &ScanLine, pos: usize, len: usize, index: usize) {
        let whole = len == l.len;
        // The size on the wire: each LF not preceded by CR counts twice.
        let wire = len as u64 + u64::from(whole && l.lf && !l.crlf);
        if !self.in_header {
            self.size += wire;
            return;
        }
        if whole && l.is_empty_line() {
            self.raw.hdr_end = pos;
            self.in_header = false;
            self.size += wire;
            return;
        }
        let text = &l.head[..len.min(l.head.len())];
        let continuation = text.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if continuation {
            note_continuation(&mut self.raw, text, self.cont);
        } else {
            let name = header_name(text);
            self.hiding = name.as_deref().is_some_and(|n| HIDDEN.contains(&n));
            match name {
                Some(n) => note_field(&mut self.raw, &n, text, index, &mut self.cont),
                None => self.cont = Cont::Other,
            }
        }
        if !self.hiding {
            self.size += wire;
        }
    }

    fn finish(mut self, end: usize, out: &mut Scan) {
        if self.in_header {
            self.raw.hdr_end = end;
        }
        self.raw.end = end;
        out.raws.push(self.raw);
        out.sizes.push(self.size);
    }
}

/// [`scan`] over a whole file, from its start (positional reads: the descriptor's offset
/// is neither used nor moved).
pub(super) fn scan_file(file: &File) -> std::io::Result<Scan> {
    struct At<'a> {
        file: &'a File,
        pos: u64,
    }
    impl std::io::Read for At<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.file.read_at(buf, self.pos)?;
            self.pos += n as u64;
            Ok(n)
        }
    }
    let peek = |off: u64, buf: &mut [u8]| peek_file(file, off, buf);
    scan(
        &mut std::io::BufReader::with_capacity(SCAN_BUFFER, At { file, pos: 0 }),
        &peek,
    )
}

/// Read `buf.len()` bytes of `file` at `off`, or as many as it has there.
pub(super) fn peek_file(file: &File, off: u64, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// [`parse`] and the sizes of [`visible`] in one pass over a reader, holding one line
/// prefix at a time instead of the whole mbox: how a session indexes the INBOX. `peek`
/// reads the same file at an offset (to check a `Content-Length:`).
pub(super) fn scan(
    r: &mut impl std::io::BufRead,
    peek: &dyn Fn(u64, &mut [u8]) -> usize,
) -> std::io::Result<Scan> {
    let mut out = Scan {
        raws: Vec::new(),
        sizes: Vec::new(),
        from_lines: Vec::new(),
        len: 0,
    };
    let mut line = ScanLine {
        len: 0,
        head: Vec::with_capacity(256),
        lf: false,
        crlf: false,
    };
    // The previous line when it was empty: it ends the message if a `From ` line follows.
    let mut pending: Option<(usize, ScanLine)> = None;
    let mut cur: Option<ScanMsg> = None;
    let mut pos = 0usize;
    let mut prev_empty = true;
    let mut no_start_before = 0usize;
    while next_line(r, &mut line)? {
        let starts = (prev_empty || cur.is_none() && out.raws.is_empty())
            && pos >= no_start_before
            && line.head.starts_with(b"From ");
        if starts {
            if let Some(mut m) = cur.take() {
                // The separator line is no part of the message, but for the CR of a
                // CRLF one (as `parse` cuts it).
                let mut end = pos.saturating_sub(1);
                if let Some((ppos, p)) = pending.take() {
                    if p.len > 1 {
                        m.add(&p, ppos, p.len - 1, out.raws.len());
                    }
                    end = end.max(m.raw.hdr_start);
                }
                m.finish(end, &mut out);
            }
            pending = None;
            let hdr_start = pos + line.len;
            out.from_lines.push(FromLine::of(&line.head));
            cur = Some(ScanMsg {
                raw: Raw {
                    from_start: pos,
                    hdr_start,
                    hdr_end: hdr_start,
                    end: hdr_start,
                    date: from_line_time(&line.head).unwrap_or(0),
                    ..Raw::default()
                },
                in_header: true,
                hiding: false,
                cont: Cont::Other,
                size: 0,
            });
        } else if let Some(m) = cur.as_mut() {
            let index = out.raws.len();
            if let Some((ppos, p)) = pending.take() {
                let was_header = m.in_header;
                m.add(&p, ppos, p.len, index);
                if was_header
                    && !m.in_header
                    && let Some(n) = m.raw.content_length
                {
                    if content_length_holds(pos as u64, n, peek) {
                        no_start_before = pos + n as usize + 1;
                    } else {
                        m.raw.cl_stale = true;
                    }
                }
            }
            if line.is_empty_line() {
                let kept = ScanLine {
                    len: line.len,
                    head: line.head.clone(),
                    lf: line.lf,
                    crlf: line.crlf,
                };
                pending = Some((pos, kept));
            } else {
                m.add(&line, pos, line.len, index);
            }
        }
        prev_empty = line.is_empty_line();
        pos += line.len;
    }
    if let Some(mut m) = cur.take() {
        let mut end = pos;
        if let Some((ppos, p)) = pending.take() {
            // A final `\n\n` ends the last message with its separator line, as in `parse`.
            if p.len == 1 && ppos > m.raw.hdr_start {
                end -= 1;
            } else {
                m.add(&p, ppos, p.len, out.raws.len());
            }
        }
        m.finish(end, &mut out);
    }
    out.len = pos;
    Ok(out)
}

/// The message's content with the hidden headers (and their continuation lines) removed.
pub(super) fn visible(data: &[u8], raw: &Raw) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.end - raw.hdr_start);
    let mut p = raw.hdr_start;
    let mut hiding = false;
    while p < raw.hdr_end {
        let eol = data[p..raw.hdr_end]
            .iter()
            .position(|&b| b == b'\n')
            .map(|j| p + j + 1)
            .unwrap_or(raw.hdr_end);
        let line = &data[p..eol];
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            hiding = header_name(line).is_some_and(|n| HIDDEN.contains(&n.as_str()));
        }
        if !hiding {
            out.extend_from_slice(line);
        }
        p = eol;
    }
    out.extend_from_slice(&data[raw.hdr_end..raw.end]);
    out
}

/// A message's `From ` line as a session remembers it, to notice a file rewritten under
/// it: the length and CRC-32 of its first [`SCAN_KEEP`] bytes (8 bytes per message
/// instead of a copy of the line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FromLine {
    pub(super) len: u32,
    pub(super) crc: u32,
}

impl FromLine {
    pub(super) fn of(line: &[u8]) -> FromLine {
        FromLine {
            len: line.len() as u32,
            crc: crc32fast::hash(line),
        }
    }

    /// `data` starts with this line.
    pub(super) fn starts(&self, data: &[u8]) -> bool {
        data.get(..self.len as usize)
            .is_some_and(|l| crc32fast::hash(l) == self.crc)
    }
}

/// Buffer of the reader that indexes an mbox.
pub(super) const SCAN_BUFFER: usize = 32 * 1024;

#[cfg(test)]
mod tests {
    //! Tests of the scan against its whole-buffer reference, sizes, odd files.

    use super::super::testkit::*;
    use super::super::{append::*, index::*, scan::*, *};
    use crate::mailbox::crlf_size;

    /// `scan` (bounded reads) finds what `parse` + `visible` find over the whole file,
    /// on every box these tests use and on edge cases: CRLF separators, no final
    /// newline, no end-of-headers line, text before the first message, hidden headers
    /// with continuation lines, a line longer than the kept prefix.
    #[test]
    fn scan_agrees_with_parse() {
        let long = format!("X-Long: {}\n", "y".repeat(3 * SCAN_KEEP));
        let cases: Vec<Vec<u8>> = vec![
            BOX.to_vec(),
            b"".to_vec(),
            b"garbage\nFrom a  Sat Nov 28 10:00:00 2026\nSubject: x\n\nbody\nFrom inside\nend".to_vec(),
            b"From a  x\r\nSubject: x\r\nX-UID: 3\r\n\r\nbody\r\n\r\nFrom b  y\r\nSubject: y\r\n\r\nz\r\n\r\n".to_vec(),
            b"From a  x\nSubject: x\nX-UID: 3\n\nFrom b  y\nX-Keywords: a\n b\nSubject: y\n".to_vec(),
            b"From a  x\n\nFrom b  y\n\n\n\nFrom c\n\n".to_vec(),
            b"From a  x\nX-IMAP: 1 0000000003\nStatus: RO\n\ntext\n\nFrom b\nX-UID: 3\nStatus: O\n\nnew\n\n".to_vec(),
            format!("From a  x\nSubject: s\n{long}X-UID: 9\n\n{long}\n").into_bytes(),
            b"From a\n".to_vec(),
            b"From a\n\n".to_vec(),
            b"From a\nS: 1\n\n\n".to_vec(),
        ];
        for data in cases.iter().chain(&rewrite_cases()) {
            // A one-byte buffer puts every line across reads.
            for cap in [1, 7, 1 << 16] {
                check_scan(data, cap);
            }
        }
    }

    /// `scan` through a buffer of `cap` bytes finds what `parse` + `visible` find.
    fn check_scan(data: &[u8], cap: usize) {
        let raws = parse(data);
        let got = scan(
            &mut std::io::BufReader::with_capacity(cap, data),
            &peek_of(data),
        )
        .expect("scan");
        let text = String::from_utf8_lossy(data);
        assert_eq!(got.len, data.len(), "{text:?}");
        assert_eq!(got.raws.len(), raws.len(), "{text:?}");
        for (i, (a, b)) in got.raws.iter().zip(&raws).enumerate() {
            let what = format!("message {i} of {text:?} (buffer {cap})");
            assert_eq!(
                (a.from_start, a.hdr_start, a.hdr_end, a.end),
                (b.from_start, b.hdr_start, b.hdr_end, b.end),
                "{what}"
            );
            assert_eq!((a.uid, a.imapbase, a.pseudo), (b.uid, b.imapbase, b.pseudo));
            assert_eq!(
                (a.has_status, a.flags, a.old),
                (b.has_status, b.flags, b.old),
                "{what}"
            );
            assert_eq!(
                (&a.keywords, a.content_length, a.cl_stale, a.date),
                (&b.keywords, b.content_length, b.cl_stale, b.date),
                "{what}"
            );
            assert_eq!(a.imapbase_rest, b.imapbase_rest, "{what}");
            assert_eq!(got.sizes[i], crlf_size(&visible(data, b)), "{what}");
            assert!(got.from_lines[i].starts(&data[b.from_start..]));
        }
    }

    #[test]
    fn sizes_as_dovecot_reports_them() {
        let raws = parse(BOX);
        assert_eq!(raws.len(), 2);
        assert_eq!(crlf_size(&visible(BOX, &raws[0])), 57);
        assert_eq!(crlf_size(&visible(BOX, &raws[1])), 66);
    }

    #[test]
    fn truncated_last_message_and_stray_from_lines() {
        // No final newline, a `From ` line in a body not preceded by an empty line, and
        // text before the first message.
        let data =
            b"garbage\nFrom a  Sat Nov 28 10:00:00 2026\nSubject: x\n\nbody\nFrom inside\nend";
        let raws = parse(data);
        assert_eq!(raws.len(), 1);
        assert_eq!(
            visible(data, &raws[0]),
            b"Subject: x\n\nbody\nFrom inside\nend"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        std::fs::write(&p, data).expect("write");
        deliver_mbox(&p, "b", b"Subject: y\n\nnext\n", &MboxOptions::default()).expect("deliver");
        let mb = MboxBox::open(&p, &MboxOptions::default(), None).expect("open");
        assert_eq!(mb.messages.len(), 2);
        assert_eq!(
            mb.read(0).expect("read"),
            b"Subject: x\n\nbody\nFrom inside\nend\n"
        );
        assert_eq!(mb.read(1).expect("read"), b"Subject: y\n\nnext\n");
        assert!(std::fs::read(&p).expect("read").starts_with(b"garbage\n"));
    }
}
