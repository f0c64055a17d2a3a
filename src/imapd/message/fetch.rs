//! FETCH data of one message as Dovecot 2.3.19 prints it: ENVELOPE
//! (`lib-imap/imap-envelope.c`), BODY and BODYSTRUCTURE (`imap-bodystructure.c`),
//! RFC822.SIZE, BODY[section]<partial> (`lib-imap-storage/imap-msgpart.c`) and, for
//! leaf parts, BINARY[section] / BINARY.SIZE (RFC 3516). Strings are written with
//! Dovecot's `imap-quote.c` rules: quoted unless 8-bit, CR/LF or more than four `"`/`\`
//! make a literal; display names and the subject go through
//! `imap_append_string_for_humans` (white space runs folded to one space); header values
//! in ENVELOPE/BODYSTRUCTURE lose their line breaks.
//!
//! Known limits (XXX): BINARY of a multipart or message/rfc822 part (Dovecot rewrites every
//! sub-part's Content-Transfer-Encoding to binary) is not done: [`binary`] returns `None`
//! for them; a broken base64/QP body is decoded leniently where Dovecot answers `NO
//! [UNKNOWN-CTE]`.

use super::mime::{self, Message, Part};
use super::rfc822::{self, Address};

/// Dovecot's `imap_append_quoted` / `imap_append_nstring` (NIL for `None`).
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    let Some(s) = s else {
        out.extend_from_slice(b"NIL");
        return;
    };
    // A C string ends at a NUL.
    let s = &s[..memchr::memchr(0, s).unwrap_or(s.len())];
    let mut escapes = 0;
    for (i, &c) in s.iter().enumerate() {
        let literal = match c {
            b'"' | b'\\' => {
                escapes += 1;
                escapes > 4
            }
            b'\r' | b'\n' => true,
            _ => c >= 0x80,
        };
        if literal {
            let _ = i;
            out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
            out.extend_from_slice(s);
            return;
        }
    }
    out.push(b'"');
    for &c in s {
        if c == b'"' || c == b'\\' {
            out.push(b'\\');
        }
        if c != b'\r' && c != b'\n' && c < 0x80 {
            out.push(c);
        }
    }
    out.push(b'"');
}

/// Dovecot's `imap_append_nstring_nolf`: line breaks become nothing (or one space before a
/// line that does not start with white space).
fn nstring_nolf(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) if s.iter().any(|&c| c == b'\r' || c == b'\n') => {
            let mut v = Vec::with_capacity(s.len());
            for (i, &c) in s.iter().enumerate() {
                if c != b'\r' && c != b'\n' {
                    v.push(c);
                } else if !matches!(s.get(i + 1), Some(b' ' | b'\t' | b'\r' | b'\n') | None) {
                    v.push(b' ');
                }
            }
            nstring(out, Some(&v));
        }
        _ => nstring(out, s),
    }
}

/// Dovecot's `imap_append_string_for_humans`.
fn string_for_humans(out: &mut Vec<u8>, src: &[u8]) {
    let src = &src[..memchr::memchr(0, src).unwrap_or(src.len())];
    let mut v = Vec::with_capacity(src.len());
    let mut last_lwsp = true;
    let mut modify = false;
    for &c in src {
        match c {
            b'\r' | b'\n' | b'\t' | b' ' => {
                if c != b' ' || last_lwsp {
                    modify = true;
                }
                if !last_lwsp {
                    v.push(b' ');
                }
                last_lwsp = true;
            }
            b'"' | b'\\' => {
                modify = true;
                last_lwsp = false;
                v.push(c);
            }
            _ => {
                if c >= 0x80 {
                    modify = true;
                }
                last_lwsp = false;
                v.push(c);
            }
        }
    }
    if last_lwsp && !v.is_empty() {
        v.pop();
        modify = true;
    }
    if !modify {
        out.push(b'"');
        out.extend_from_slice(src);
        out.push(b'"');
    } else if v.is_empty() {
        out.extend_from_slice(b"\"\"");
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", v.len()).as_bytes());
        out.extend_from_slice(&v);
    }
}

/// The ENVELOPE fields of a header block.
#[derive(Debug, Default)]
pub struct Envelope {
    pub date: Option<Vec<u8>>,
    pub subject: Option<Vec<u8>>,
    pub from: Vec<Address>,
    pub sender: Vec<Address>,
    pub reply_to: Vec<Address>,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    pub bcc: Vec<Address>,
    pub in_reply_to: Option<Vec<u8>>,
    pub message_id: Option<Vec<u8>>,
}

impl Envelope {
    /// Dovecot's `message_part_envelope_parse_from_header` over every field: the last
    /// Date/Subject/Message-ID/In-Reply-To wins, address headers add up.
    pub fn parse(hdr: &[u8]) -> Envelope {
        let mut e = Envelope::default();
        for f in mime::fields(hdr) {
            let n = f.name.to_ascii_lowercase();
            let v = f.value;
            match n.as_slice() {
                b"date" => e.date = Some(v),
                b"subject" => e.subject = Some(v),
                b"message-id" => e.message_id = Some(v),
                b"in-reply-to" => e.in_reply_to = Some(v),
                b"from" => e.from.extend(rfc822::parse_addresses(&v)),
                b"sender" => e.sender.extend(rfc822::parse_addresses(&v)),
                b"reply-to" => e.reply_to.extend(rfc822::parse_addresses(&v)),
                b"to" => e.to.extend(rfc822::parse_addresses(&v)),
                b"cc" => e.cc.extend(rfc822::parse_addresses(&v)),
                b"bcc" => e.bcc.extend(rfc822::parse_addresses(&v)),
                _ => {}
            }
        }
        e
    }

    /// `imap_envelope_write` (without the surrounding parentheses).
    pub fn write(&self, out: &mut Vec<u8>) {
        nstring_nolf(out, self.date.as_deref());
        out.push(b' ');
        match &self.subject {
            None => out.extend_from_slice(b"NIL"),
            Some(s) => string_for_humans(out, s),
        }
        let or_from = |a: &'_ [Address]| -> Vec<Address> {
            if a.is_empty() {
                self.from.clone()
            } else {
                a.to_vec()
            }
        };
        for list in [
            self.from.clone(),
            or_from(&self.sender),
            or_from(&self.reply_to),
            self.to.clone(),
            self.cc.clone(),
            self.bcc.clone(),
        ] {
            out.push(b' ');
            write_addresses(out, &list);
        }
        out.push(b' ');
        nstring_nolf(out, self.in_reply_to.as_deref());
        out.push(b' ');
        nstring_nolf(out, self.message_id.as_deref());
    }
}

fn write_addresses(out: &mut Vec<u8>, list: &[Address]) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        out.push(b'(');
        match &a.name {
            None => out.extend_from_slice(b"NIL"),
            Some(n) => string_for_humans(out, n),
        }
        out.push(b' ');
        nstring(out, a.route.as_deref());
        out.push(b' ');
        nstring(out, a.mailbox.as_deref());
        out.push(b' ');
        nstring(out, a.domain.as_deref());
        out.push(b')');
    }
    out.push(b')');
}

/// The Content-* data of a part (Dovecot's `message_part_data`).
#[derive(Debug, Default)]
struct PartData {
    ctype: Option<Vec<u8>>,
    subtype: Vec<u8>,
    params: Vec<(Vec<u8>, Vec<u8>)>,
    id: Option<Vec<u8>>,
    description: Option<Vec<u8>>,
    encoding: Option<Vec<u8>>,
    md5: Option<Vec<u8>>,
    disposition: Option<Vec<u8>>,
    disposition_params: Vec<(Vec<u8>, Vec<u8>)>,
    language: Vec<Vec<u8>>,
    location: Option<Vec<u8>>,
}

impl PartData {
    fn parse(part: &Part, msg: &[u8]) -> PartData {
        let mut d = PartData::default();
        if !part.is(mime::IS_MIME) {
            return d;
        }
        for f in mime::fields(part.header(msg)) {
            let name = f.name.to_ascii_lowercase();
            let Some(rest) = name.strip_prefix(b"content-") else {
                continue;
            };
            let v = &f.value;
            match rest {
                b"id" if d.id.is_none() => d.id = Some(v.clone()),
                b"md5" if d.md5.is_none() => d.md5 = Some(v.clone()),
                b"description" if d.description.is_none() => d.description = Some(v.clone()),
                b"location" if d.location.is_none() => d.location = Some(v.clone()),
                b"type" if d.ctype.is_none() => {
                    let mut p = rfc822::Parser::new(v);
                    p.skip_lwsp();
                    let mut s = Vec::new();
                    let r = p.content_type(&mut s);
                    match s.iter().position(|&c| c == b'/') {
                        Some(i) => {
                            d.subtype = s[i + 1..].to_vec();
                            s.truncate(i);
                        }
                        None => d.subtype = Vec::new(),
                    }
                    d.ctype = Some(s);
                    if r >= 0 {
                        d.params = p.rfc2231_params();
                    }
                }
                b"transfer-encoding" if d.encoding.is_none() => {
                    let mut p = rfc822::Parser::new(v);
                    p.skip_lwsp();
                    let mut s = Vec::new();
                    if p.mime_token(&mut s) >= 0 && p.skip_lwsp() == 0 && !s.is_empty() {
                        d.encoding = Some(s);
                    }
                }
                b"disposition" if d.disposition_params.is_empty() => {
                    let mut p = rfc822::Parser::new(v);
                    p.skip_lwsp();
                    let mut s = Vec::new();
                    if p.mime_token(&mut s) >= 0 {
                        d.disposition = Some(s);
                        d.disposition_params = p.rfc2231_params();
                    }
                }
                b"language" if d.language.is_empty() => {
                    let mut p = rfc822::Parser::new(v);
                    p.skip_lwsp();
                    loop {
                        let mut s = Vec::new();
                        if p.atom(&mut s) < 0 {
                            break;
                        }
                        d.language.push(s);
                        if p.peek() != Some(b',') {
                            break;
                        }
                        p.pos += 1;
                        p.skip_lwsp();
                    }
                }
                _ => {}
            }
        }
        d
    }
}

fn params_write(out: &mut Vec<u8>, params: &[(Vec<u8>, Vec<u8>)], default_charset: bool) {
    if !default_charset && params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    let mut seen = false;
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        seen |= k.eq_ignore_ascii_case(b"charset");
        nstring(out, Some(k));
        out.push(b' ');
        nstring(out, Some(v));
    }
    if default_charset && !seen {
        if !params.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(b"\"charset\" \"us-ascii\"");
    }
    out.push(b')');
}

fn write_common(out: &mut Vec<u8>, d: &PartData) {
    out.push(b' ');
    match &d.disposition {
        None => out.extend_from_slice(b"NIL"),
        Some(disp) => {
            out.push(b'(');
            nstring(out, Some(disp));
            out.push(b' ');
            params_write(out, &d.disposition_params, false);
            out.push(b')');
        }
    }
    out.push(b' ');
    if d.language.is_empty() {
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b'(');
        for (i, l) in d.language.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            nstring(out, Some(l));
        }
        out.push(b')');
    }
    out.push(b' ');
    nstring_nolf(out, d.location.as_deref());
}

const EMPTY_BODY: &[u8] = b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)";
const EMPTY_BODYSTRUCTURE: &[u8] =
    b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)";

/// BODY (`extended` false) or BODYSTRUCTURE of a part, without the outer parentheses.
pub fn bodystructure(out: &mut Vec<u8>, part: &Part, msg: &[u8], extended: bool) {
    let d = PartData::parse(part, msg);
    if part.is(mime::MULTIPART) {
        if part.children.is_empty() {
            out.extend_from_slice(if extended {
                EMPTY_BODYSTRUCTURE
            } else {
                EMPTY_BODY
            });
        }
        for c in &part.children {
            out.push(b'(');
            bodystructure(out, c, msg, extended);
            out.push(b')');
        }
        out.push(b' ');
        nstring(out, Some(&d.subtype));
        if extended {
            out.push(b' ');
            params_write(out, &d.params, false);
            write_common(out, &d);
        }
        return;
    }
    let text;
    if part.is(mime::RFC822) {
        out.extend_from_slice(b"\"message\" \"rfc822\"");
        text = false;
    } else if match &d.ctype {
        Some(t) => {
            (t.eq_ignore_ascii_case(b"message") && d.subtype.eq_ignore_ascii_case(b"rfc822"))
                || t.eq_ignore_ascii_case(b"multipart")
        }
        None => false,
    } {
        out.extend_from_slice(b"\"application\" \"octet-stream\"");
        text = false;
    } else {
        match &d.ctype {
            None => {
                text = true;
                out.extend_from_slice(b"\"text\" \"plain\"");
            }
            Some(t) => {
                text = t.eq_ignore_ascii_case(b"text");
                nstring(out, Some(t));
                out.push(b' ');
                nstring(out, Some(&d.subtype));
            }
        }
    }
    out.push(b' ');
    params_write(out, &d.params, text);
    out.push(b' ');
    nstring_nolf(out, d.id.as_deref());
    out.push(b' ');
    nstring_nolf(out, d.description.as_deref());
    out.push(b' ');
    match &d.encoding {
        Some(e) => nstring(out, Some(e)),
        None => out.extend_from_slice(b"\"7bit\""),
    }
    out.extend_from_slice(format!(" {}", part.body_len).as_bytes());
    if text {
        out.extend_from_slice(format!(" {}", part.body_lines(msg)).as_bytes());
    } else if part.is(mime::RFC822) {
        if let Some(child) = part.children.first() {
            out.extend_from_slice(b" (");
            Envelope::parse(child.header(msg)).write(out);
            out.extend_from_slice(b") (");
            bodystructure(out, child, msg, extended);
            out.push(b')');
        }
        out.extend_from_slice(format!(" {}", part.body_lines(msg)).as_bytes());
    }
    if extended {
        out.push(b' ');
        nstring_nolf(out, d.md5.as_deref());
        write_common(out, &d);
    }
}

/// The ENVELOPE of the message (without parentheses).
pub fn envelope(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    Envelope::parse(msg.root.header(&msg.raw)).write(&mut out);
    out
}

/// What a BODY[…] section names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    Whole,
    Header,
    HeaderFields(Vec<Vec<u8>>),
    HeaderFieldsNot(Vec<Vec<u8>>),
    Text,
    Mime,
}

/// A parsed section: part path and what of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub path: Vec<u32>,
    pub text: SectionText,
}

/// The bytes of BODY[section] (before any partial), as Dovecot's `imap_msgpart` picks them;
/// `None` for a part that does not exist (Dovecot then sends an empty string).
pub fn section_bytes(msg: &Message, s: &Section) -> Option<Vec<u8>> {
    let raw = &msg.raw;
    let part = msg.part_at(&s.path)?;
    // HEADER/TEXT/HEADER.FIELDS of a numbered part address its message/rfc822 content.
    let target = |p: &Part| -> Option<Part> {
        if s.path.is_empty() {
            Some(p.clone())
        } else if p.is(mime::RFC822) {
            p.children.first().cloned()
        } else {
            None
        }
    };
    match &s.text {
        SectionText::Whole => {
            if s.path.is_empty() {
                Some(raw.clone())
            } else {
                Some(part.body(raw).to_vec())
            }
        }
        SectionText::Mime => Some(part.header(raw).to_vec()),
        SectionText::Header => Some(
            target(part)
                .map(|t| t.header(raw).to_vec())
                .unwrap_or_default(),
        ),
        SectionText::Text => Some(
            target(part)
                .map(|t| t.body(raw).to_vec())
                .unwrap_or_default(),
        ),
        SectionText::HeaderFields(names) | SectionText::HeaderFieldsNot(names) => {
            let not = matches!(s.text, SectionText::HeaderFieldsNot(_));
            let Some(t) = target(part) else {
                return Some(Vec::new());
            };
            let mut out = Vec::new();
            let hdr = t.header(raw);
            let mut last_taken = false;
            for f in mime::fields(hdr) {
                let hit = names.iter().any(|n| n.eq_ignore_ascii_case(f.name));
                last_taken = hit != not && !f.name.is_empty();
                if last_taken {
                    out.extend_from_slice(f.raw);
                    if !f.raw.ends_with(b"\n") {
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
            // The empty line ending the header; a header without one (the message ends
            // in it) gets one only when its last field was not taken (as Dovecot does).
            if hdr.ends_with(b"\r\n\r\n") || hdr == b"\r\n" || !last_taken {
                out.extend_from_slice(b"\r\n");
            }
            Some(out)
        }
    }
}

/// `<origin.count>` applied to section bytes.
pub fn partial(data: &[u8], origin: u64, count: Option<u64>) -> &[u8] {
    let start = usize::try_from(origin)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let end = match count {
        Some(c) => start
            .saturating_add(usize::try_from(c).unwrap_or(usize::MAX))
            .min(data.len()),
        None => data.len(),
    };
    &data[start..end]
}

/// BINARY[path] of a leaf part: its body with the Content-Transfer-Encoding undone, and
/// whether Dovecot calls it binary (decoded, or holding NULs: then the literal is `~{N}`).
/// `None` for multiparts, message/rfc822 and the whole message (not done, see the module
/// header) and for an unknown encoding (Dovecot's `NO [UNKNOWN-CTE]`).
pub fn binary(msg: &Message, path: &[u32]) -> Option<(Vec<u8>, bool)> {
    let part = msg.part_at(path)?;
    if part.is(mime::MULTIPART) || part.is(mime::RFC822) || path.is_empty() {
        return None;
    }
    // The last Content-Transfer-Encoding counts here (`index-mail-binary.c`), MIME or not.
    let mut cte = Vec::new();
    for f in mime::fields(part.header(&msg.raw)) {
        if f.name.eq_ignore_ascii_case(b"Content-Transfer-Encoding") {
            let mut p = rfc822::Parser::new(&f.value);
            p.skip_lwsp();
            cte.clear();
            p.mime_token(&mut cte);
            cte.make_ascii_lowercase();
        }
    }
    let body = part.body(&msg.raw);
    match cte.as_slice() {
        b"" | b"7bit" | b"8bit" | b"binary" => Some((body.to_vec(), body.contains(&0))),
        b"base64" => Some((decode_base64(body), true)),
        b"quoted-printable" => Some((decode_qp(body), true)),
        _ => None,
    }
}

/// BINARY.SIZE[path]: as [`binary`], but Dovecot sizes through the whole message's
/// binary form, so any leaf part with an unknown encoding makes it `NO [UNKNOWN-CTE]`
/// (`None`), even for another part.
pub fn binary_size(msg: &Message, path: &[u32]) -> Option<usize> {
    fn leaves<'a>(p: &'a Part, out: &mut Vec<&'a Part>) {
        if p.children.is_empty() {
            out.push(p);
        }
        for c in &p.children {
            leaves(c, out);
        }
    }
    let mut all = Vec::new();
    leaves(&msg.root, &mut all);
    for p in all {
        for f in mime::fields(p.header(&msg.raw)) {
            if f.name.eq_ignore_ascii_case(b"Content-Transfer-Encoding") {
                let mut rp = rfc822::Parser::new(&f.value);
                rp.skip_lwsp();
                let mut cte = Vec::new();
                rp.mime_token(&mut cte);
                cte.make_ascii_lowercase();
                if !matches!(
                    cte.as_slice(),
                    b"" | b"7bit" | b"8bit" | b"binary" | b"base64" | b"quoted-printable"
                ) {
                    return None;
                }
            }
        }
    }
    binary(msg, path).map(|(d, _)| d.len())
}

/// Lenient base64 (characters outside the alphabet skipped, as Dovecot's decoder does for
/// white space).
pub fn decode_base64(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut n = 0;
    for &c in data {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            acc = 0;
            n = 0;
        }
    }
    match n {
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => {}
    }
    out
}

/// Quoted-printable (RFC 2045 §6.7): soft breaks removed, trailing white space before a
/// line end dropped, `=XX` decoded, anything else kept.
pub fn decode_qp(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut prev_soft = false;
    for (li, line) in data.split(|&c| c == b'\n').enumerate() {
        if li > 0 && !prev_soft {
            out.extend_from_slice(b"\r\n");
        }
        let mut line = line.strip_suffix(b"\r").unwrap_or(line);
        while let Some((&l, rest)) = line.split_last() {
            if l == b' ' || l == b'\t' {
                line = rest;
            } else {
                break;
            }
        }
        let hex = |c: u8| (c as char).to_digit(16);
        let mut i = 0;
        prev_soft = false;
        while i < line.len() {
            if line[i] == b'=' {
                if i + 1 == line.len() {
                    prev_soft = true;
                    break;
                }
                if let (Some(a), Some(b)) = (
                    line.get(i + 1).and_then(|&c| hex(c)),
                    line.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    out.push((a * 16 + b) as u8);
                    i += 3;
                    continue;
                }
            }
            out.push(line[i]);
            i += 1;
        }
    }
    out
}

/// Parses a section spec as written between the brackets (`1.2.HEADER.FIELDS (A B)`,
/// `TEXT`, `3.MIME`, ``); `None` is Dovecot's `Invalid BODY[..] section`.
pub fn parse_section(spec: &str) -> Option<Section> {
    let mut path = Vec::new();
    let mut rest = spec;
    while let Some(c) = rest.chars().next() {
        if !c.is_ascii_digit() {
            break;
        }
        let end = rest.find('.').unwrap_or(rest.len());
        let n: u32 = rest[..end].parse().ok()?;
        if n == 0 {
            return None;
        }
        path.push(n);
        rest = rest.get(end + 1..).unwrap_or("");
        if end == rest.len() + end && rest.is_empty() {
            break;
        }
    }
    let upper = rest.to_ascii_uppercase();
    let fields = |s: &str| -> Option<Vec<Vec<u8>>> {
        let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
        let v: Vec<Vec<u8>> = inner
            .split_whitespace()
            .map(|f| f.as_bytes().to_vec())
            .collect();
        if v.is_empty() { None } else { Some(v) }
    };
    let text = if upper.is_empty() {
        SectionText::Whole
    } else if upper == "HEADER" {
        SectionText::Header
    } else if upper == "TEXT" {
        SectionText::Text
    } else if upper == "MIME" {
        if path.is_empty() {
            return None;
        }
        SectionText::Mime
    } else if let Some(f) = upper.strip_prefix("HEADER.FIELDS.NOT ") {
        SectionText::HeaderFieldsNot(fields(&rest[rest.len() - f.len()..])?)
    } else if let Some(f) = upper.strip_prefix("HEADER.FIELDS ") {
        SectionText::HeaderFields(fields(&rest[rest.len() - f.len()..])?)
    } else {
        return None;
    };
    Some(Section { path, text })
}

/// The section as Dovecot echoes it in the response (`1.HEADER.FIELDS (FROM SUBJECT)`).
pub fn section_name(s: &Section) -> String {
    let mut out: Vec<String> = s.path.iter().map(u32::to_string).collect();
    let text = match &s.text {
        SectionText::Whole => None,
        SectionText::Header => Some("HEADER".to_string()),
        SectionText::Text => Some("TEXT".to_string()),
        SectionText::Mime => Some("MIME".to_string()),
        SectionText::HeaderFields(f) | SectionText::HeaderFieldsNot(f) => {
            let names: Vec<String> = f
                .iter()
                .map(|n| String::from_utf8_lossy(n).to_ascii_uppercase())
                .collect();
            let kind = if matches!(s.text, SectionText::HeaderFields(_)) {
                "HEADER.FIELDS"
            } else {
                "HEADER.FIELDS.NOT"
            };
            Some(format!("{kind} ({})", names.join(" ")))
        }
    };
    out.extend(text);
    out.join(".")
}
