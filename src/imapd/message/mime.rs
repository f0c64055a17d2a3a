//! The MIME part tree of a message, cut exactly where Dovecot 2.3's
//! `lib-mail/message-parser.c` cuts it, because BODYSTRUCTURE sizes and line counts,
//! `BODY[section]` bytes and part numbers all follow from those cuts:
//! - a header ends at the first empty line; a header line without a colon is a value;
//! - `Content-Type` makes a part MIME even without `MIME-Version` (Dovecot's default, not
//!   `MIME_VERSION_STRICT`); only the first `Content-Type` counts;
//! - a boundary line is `--` + one of the open boundaries as a prefix (innermost first,
//!   the longest match wins), found at any line start, in a body or a header; the
//!   `[CR]LF` before it belongs to the boundary, not to the part it ends;
//! - `--boundary--` closes its multipart and every boundary opened inside it; what follows
//!   is the multipart's epilogue; an outer boundary ends every part inside it;
//! - a multipart without a boundary parameter has no children (BODYSTRUCTURE then shows one
//!   empty text/plain); a part without Content-Type is text/plain, or message/rfc822 inside
//!   multipart/digest.
//!
//! The message is first turned into CRLF line ends (Dovecot's sizes are those of the
//! CRLF form); [`Message::new`] does that. Known limits (XXX): the whole message is held
//! in memory (Dovecot streams it); Dovecot's limits on MIME parts (`mail_max_*`: 100
//! nesting levels, 10000 parts) are applied as a nesting limit only: deeper message/rfc822
//! or multipart parts are kept as leaves.

/// Nesting beyond which a part is kept as a leaf (Dovecot's `max_nested_mime_parts`).
const MAX_NESTED: usize = 100;

pub const MULTIPART: u8 = 1;
pub const RFC822: u8 = 2;
pub const TEXT: u8 = 4;
pub const DIGEST: u8 = 8;
pub const IS_MIME: u8 = 16;

/// One MIME part: offsets into the message's CRLF bytes.
#[derive(Debug, Clone, Default)]
pub struct Part {
    /// Where the part's header starts.
    pub start: usize,
    /// Header bytes (with the empty line ending it).
    pub header_len: usize,
    pub body_start: usize,
    pub body_len: usize,
    pub flags: u8,
    pub children: Vec<Part>,
}

impl Part {
    pub fn header<'a>(&self, msg: &'a [u8]) -> &'a [u8] {
        &msg[self.start..self.start + self.header_len]
    }
    pub fn body<'a>(&self, msg: &'a [u8]) -> &'a [u8] {
        &msg[self.body_start..self.body_start + self.body_len]
    }
    pub fn body_lines(&self, msg: &[u8]) -> usize {
        memchr::memchr_iter(b'\n', self.body(msg)).count()
    }
    pub fn is(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A message: its CRLF bytes and part tree.
#[derive(Debug, Clone)]
pub struct Message {
    pub raw: Vec<u8>,
    pub root: Part,
}

/// Bare LF → CRLF (a lone CR is kept, as Dovecot's `i_stream_create_crlf`).
pub fn to_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    let mut prev = 0u8;
    for &c in raw {
        if c == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(c);
        prev = c;
    }
    out
}

impl Message {
    pub fn new(raw: &[u8]) -> Message {
        let raw = to_crlf(raw);
        let mut p = PartParser {
            msg: &raw,
            bounds: Vec::new(),
        };
        let (root, _, _) = p.part(0, false, false, 0);
        Message { root, raw }
    }

    /// The part at a section path (`[1, 2]` for `1.2`), as IMAP numbers them: inside a
    /// message/rfc822 part, numbers address the encapsulated message's parts; part 1 of a
    /// non-multipart message is its body.
    pub fn part_at(&self, path: &[u32]) -> Option<&Part> {
        // Dovecot's `imap_msgpart_find`.
        let mut part = &self.root;
        for (i, &n) in path.iter().enumerate() {
            let more = i + 1 < path.len();
            if part.is(MULTIPART) {
                part = part.children.get(n.checked_sub(1)? as usize)?;
            } else if n != 1 || (more && !part.is(RFC822)) {
                return None;
            }
            if part.is(RFC822) && more {
                part = part.children.first()?;
            }
        }
        Some(part)
    }
}

/// One header field: name and Dovecot's full value (after the colon, initial white space
/// skipped, continuation lines joined by `\n` with their leading white space).
#[derive(Debug, Clone)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: Vec<u8>,
    /// The raw bytes of the whole field (name, colon, folded lines, CRLFs).
    pub raw: &'a [u8],
}

/// The fields of a header block (Dovecot's header parser with `SKIP_INITIAL_LWSP` and
/// `DROP_CR`).
pub fn fields(hdr: &[u8]) -> Vec<Field<'_>> {
    let mut out: Vec<Field<'_>> = Vec::new();
    let mut pos = 0;
    while pos < hdr.len() {
        let end = memchr::memchr(b'\n', &hdr[pos..]).map_or(hdr.len(), |e| pos + e + 1);
        let mut line = &hdr[pos..end];
        if let Some(l) = line.strip_suffix(b"\n") {
            line = l.strip_suffix(b"\r").unwrap_or(l);
        }
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') && !out.is_empty() {
            if let Some(f) = out.last_mut() {
                f.value.push(b'\n');
                f.value.extend_from_slice(line);
                let start = f.raw.as_ptr() as usize - hdr.as_ptr() as usize;
                f.raw = &hdr[start..end];
            }
        } else if let Some(colon) = memchr::memchr(b':', line) {
            let mut name_end = colon;
            while name_end > 0 && matches!(line[name_end - 1], b' ' | b'\t') {
                name_end -= 1;
            }
            let v = &line[colon + 1..];
            let skip = v.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
            let skip = if skip == v.len() {
                usize::from(!v.is_empty())
            } else {
                skip
            };
            out.push(Field {
                name: &line[..name_end],
                value: v[skip..].to_vec(),
                raw: &hdr[pos..end],
            });
        } else {
            out.push(Field {
                name: b"",
                value: line.to_vec(),
                raw: &hdr[pos..end],
            });
        }
        pos = end;
    }
    out
}

struct Bound {
    text: Vec<u8>,
    epilogue: bool,
}

enum End {
    Eof,
    /// A boundary line at `line` (its `--`) of open boundary `idx`.
    Boundary {
        idx: usize,
        line: usize,
    },
}

struct PartParser<'a> {
    msg: &'a [u8],
    bounds: Vec<Bound>,
}

impl PartParser<'_> {
    /// Is there a boundary line at `pos` (a line start)? Sets its `epilogue`.
    fn boundary_at(&mut self, pos: usize) -> Option<usize> {
        let d = &self.msg[pos..];
        if d.len() < 2 || &d[..2] != b"--" || self.bounds.is_empty() {
            return None;
        }
        let d = &d[2..];
        let lf = memchr::memchr(b'\n', d);
        let mut find = lf.unwrap_or(d.len().min(998));
        let mut trailing = false;
        if lf.is_some() {
            if find > 0 && d[find - 1] == b'\r' {
                find -= 1;
            }
            trailing = find > 2 && &d[find - 2..find] == b"--";
        }
        let line = &d[..find];
        let mut best: Option<usize> = None;
        for i in (0..self.bounds.len()).rev() {
            let b = &self.bounds[i].text;
            if b.len() <= line.len()
                && &line[..b.len()] == b.as_slice()
                && best.is_none_or(|x| self.bounds[x].text.len() < b.len())
            {
                best = Some(i);
                if b.len() == line.len() || (trailing && b.len() + 2 == line.len()) {
                    break;
                }
            }
        }
        let i = best?;
        let blen = self.bounds[i].text.len();
        self.bounds[i].epilogue = d.len() >= blen + 2 && &d[blen..blen + 2] == b"--";
        Some(i)
    }

    /// Scans a body from `pos` for a boundary line. Returns where the body ends and how.
    fn body_to_boundary(&mut self, pos: usize) -> (usize, End) {
        if self.bounds.is_empty() {
            return (self.msg.len(), End::Eof);
        }
        // The first line (the scan starts at a line start).
        if let Some(idx) = self.boundary_at(pos) {
            return (pos, End::Boundary { idx, line: pos });
        }
        let mut p = pos;
        while let Some(lf) = memchr::memchr(b'\n', &self.msg[p..]) {
            let next = p + lf + 1;
            if let Some(idx) = self.boundary_at(next) {
                let mut end = p + lf;
                if end > pos && self.msg[end - 1] == b'\r' {
                    end -= 1;
                }
                return (end, End::Boundary { idx, line: next });
            }
            p = next;
        }
        (self.msg.len(), End::Eof)
    }

    fn skip_line(&self, pos: usize) -> usize {
        memchr::memchr(b'\n', &self.msg[pos..]).map_or(self.msg.len(), |e| pos + e + 1)
    }

    /// Parses a part starting at `pos`; returns it, how it ended and where its bytes end.
    fn part(
        &mut self,
        pos: usize,
        mime_child: bool,
        parent_digest: bool,
        depth: usize,
    ) -> (Part, End, usize) {
        let msg = self.msg;
        let mut part = Part {
            start: pos,
            ..Default::default()
        };
        if mime_child {
            part.flags |= IS_MIME;
        }
        let mut content_type: Option<Vec<u8>> = None;
        let mut boundary: Option<Vec<u8>> = None;
        let mut p = pos;
        let mut prev_nl = 0;
        let mut hdr_end_state: Option<(usize, End)> = None;
        // Header lines.
        loop {
            if p >= msg.len() {
                break;
            }
            if let Some(idx) = self.boundary_at(p) {
                // Headers cut by a boundary: the last newline belongs to the boundary.
                hdr_end_state = Some((p - prev_nl, End::Boundary { idx, line: p }));
                break;
            }
            let end = self.skip_line(p);
            let line = &msg[p..end];
            let content = line
                .strip_suffix(b"\n")
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .unwrap_or(line);
            if content.is_empty() && line.ends_with(b"\n") {
                p = end;
                break;
            }
            // Only physical first lines start a field.
            if !matches!(content.first(), Some(b' ' | b'\t'))
                && let Some(colon) = memchr::memchr(b':', content)
            {
                let mut ne = colon;
                while ne > 0 && matches!(content[ne - 1], b' ' | b'\t') {
                    ne -= 1;
                }
                let name = &content[..ne];
                if name.eq_ignore_ascii_case(b"Mime-Version") {
                    part.flags |= IS_MIME;
                } else if name.eq_ignore_ascii_case(b"Content-Type") && content_type.is_none() {
                    part.flags |= IS_MIME;
                    // The full (folded) value.
                    let mut q = end;
                    while q < msg.len() && matches!(msg[q], b' ' | b'\t') {
                        q = self.skip_line(q);
                    }
                    let f = fields(&msg[p..q]);
                    let value = f.first().map(|f| f.value.clone()).unwrap_or_default();
                    let mut rp = super::rfc822::Parser::new(&value);
                    rp.skip_lwsp();
                    let mut ct = Vec::new();
                    let r = rp.content_type(&mut ct);
                    let lower = ct.to_ascii_lowercase();
                    if lower == b"message/rfc822" {
                        part.flags |= RFC822;
                    } else if lower.starts_with(b"text") && (lower.len() == 4 || lower[4] == b'/') {
                        part.flags |= TEXT;
                    } else if lower.starts_with(b"multipart/") {
                        part.flags |= MULTIPART;
                        if &lower[10..] == b"digest" {
                            part.flags |= DIGEST;
                        }
                    }
                    if r >= 0 && part.is(MULTIPART) {
                        for (k, v) in rp.rfc2231_params() {
                            if k.eq_ignore_ascii_case(b"boundary") {
                                boundary = Some(v.into_iter().take(80).collect());
                                break;
                            }
                        }
                    }
                    content_type = Some(ct);
                }
            }
            prev_nl = line.len() - content.len();
            p = end;
        }
        if !part.is(IS_MIME) {
            part.flags = 0;
            boundary = None;
        }
        if content_type.is_none() || !part.is(IS_MIME) {
            part.flags |= if parent_digest { RFC822 } else { TEXT };
        }
        if depth + 1 >= MAX_NESTED {
            part.flags &= !(MULTIPART | RFC822);
            boundary = None;
        }
        if let Some((hend, e)) = hdr_end_state {
            part.header_len = hend - pos;
            part.body_start = hend;
            part.body_len = 0;
            return (part, e, hend);
        }
        part.header_len = p - pos;
        part.body_start = p;
        let (end_pos, end) = if part.is(MULTIPART) && boundary.is_some() {
            let own = self.bounds.len();
            self.bounds.push(Bound {
                text: boundary.unwrap_or_default(),
                epilogue: false,
            });
            self.multipart_body(&mut part, own, depth)
        } else if part.is(RFC822) {
            let (child, end, epos) = self.part(p, false, false, depth + 1);
            part.children.push(child);
            (epos, end)
        } else {
            self.body_to_boundary(p)
        };
        part.body_len = end_pos - part.body_start;
        (part, end, end_pos)
    }

    fn multipart_body(&mut self, part: &mut Part, own: usize, depth: usize) -> (usize, End) {
        let (mut end_pos, mut end) = self.body_to_boundary(part.body_start);
        loop {
            match end {
                End::Eof => return (end_pos, End::Eof),
                End::Boundary { idx, line } => {
                    if idx < own || own >= self.bounds.len() {
                        // An outer boundary ends this multipart too.
                        self.bounds.truncate(idx + 1);
                        return (end_pos, End::Boundary { idx, line });
                    }
                    // Our own boundary: its line belongs to our body.
                    let after = self.skip_line(line);
                    if self.bounds[own].epilogue {
                        self.bounds.truncate(own);
                        let (e, en) = self.body_to_boundary(after);
                        end_pos = e;
                        end = en;
                        if matches!(end, End::Eof) {
                            return (end_pos, End::Eof);
                        }
                        continue;
                    }
                    self.bounds.truncate(own + 1);
                    let digest = part.is(DIGEST);
                    let (child, cend, cpos) = self.part(after, true, digest, depth + 1);
                    part.children.push(child);
                    end_pos = cpos;
                    end = cend;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_cuts() {
        let m = Message::new(b"Content-Type: multipart/mixed; boundary=b\n\npre\n--b\nContent-Type: text/plain\n\none\n--b\n\ntwo\n--b--\nepi\n");
        assert_eq!(m.root.children.len(), 2);
        assert_eq!(m.root.children[0].body(&m.raw), b"one");
        assert_eq!(m.root.children[1].body(&m.raw), b"two");
        assert_eq!(m.part_at(&[2]).map(|p| p.body(&m.raw)), Some(&b"two"[..]));
    }

    #[test]
    fn folded_fields() {
        let f = fields(b"Subject: a\r\n b\r\nX:\r\n\r\n");
        assert_eq!(f[0].value, b"a\n b");
        assert_eq!(f[1].value, b"");
    }
}
