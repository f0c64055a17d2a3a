//! FETCH data of one message as Dovecot 2.3.19 prints it: ENVELOPE
//! (`lib-imap/imap-envelope.c`), BODY and BODYSTRUCTURE (`imap-bodystructure.c`),
//! RFC822.SIZE, `BODY[section]<partial>` (`lib-imap-storage/imap-msgpart.c`) and, for
//! leaf parts, `BINARY[section]` / BINARY.SIZE (RFC 3516). Strings are written with
//! Dovecot's `imap-quote.c` rules: quoted unless 8-bit, CR/LF or more than four `"`/`\`
//! make a literal; display names and the subject go through
//! `imap_append_string_for_humans` (white space runs folded to one space); header values
//! in ENVELOPE/BODYSTRUCTURE lose their line breaks.
//!
//! Known limits (XXX): a broken base64 body is decoded leniently (characters outside the
//! alphabet skipped) where Dovecot may answer `NO` with "Invalid data in MIME part".

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

/// The bytes of `BODY[section]` (before any partial), as Dovecot's `imap_msgpart` picks them;
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

/// The Content-Transfer-Encoding of a part as Dovecot's binary fetch reads it (the last
/// such field, MIME or not): `None` for an unknown one.
fn part_cte(msg: &Message, part: &Part) -> Option<Cte> {
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
    match cte.as_slice() {
        b"" | b"7bit" | b"8bit" | b"binary" => Some(Cte::Plain),
        b"base64" => Some(Cte::Base64),
        b"quoted-printable" => Some(Cte::Qp),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cte {
    Plain,
    Base64,
    Qp,
}

/// Dovecot's `add_binary_part` (`index-mail-binary.c`): the part with every encoded
/// sub-part decoded and its `Content-Transfer-Encoding` header replaced by
/// `Content-Transfer-Encoding: binary` at the end of its header.
struct Binary<'a> {
    raw: &'a [u8],
    out: Vec<u8>,
    copy_start: usize,
    converted: bool,
}

impl Binary<'_> {
    fn copy_to(&mut self, end: usize) {
        if end > self.copy_start {
            self.out.extend_from_slice(&self.raw[self.copy_start..end]);
        }
        self.copy_start = self.copy_start.max(end);
    }

    fn add(&mut self, msg: &Message, part: &Part, include_hdr: bool) -> Option<()> {
        let cte = part_cte(msg, part)?;
        let hdr_end = part.start + part.header_len;
        if !include_hdr {
            // body only
        } else if cte != Cte::Plain {
            self.copy_to(part.start);
            let hdr = part.header(self.raw);
            let fields = mime::fields(hdr);
            for f in &fields {
                if !f.name.eq_ignore_ascii_case(b"Content-Transfer-Encoding") {
                    self.out.extend_from_slice(f.raw);
                }
            }
            self.out
                .extend_from_slice(b"Content-Transfer-Encoding: binary\r\n");
            if hdr.ends_with(b"\r\n\r\n") || hdr == b"\r\n" {
                self.out.extend_from_slice(b"\r\n");
            }
            self.converted = true;
        } else {
            self.copy_to(hdr_end);
        }
        self.copy_start = hdr_end;
        let part_end = part.body_start + part.body_len;
        if !part.children.is_empty() {
            for c in &part.children {
                self.add(msg, c, true)?;
            }
            self.copy_to(part_end);
            self.copy_start = part_end;
            return Some(());
        }
        if part.body_len == 0 {
            self.copy_start = part_end;
            return Some(());
        }
        let body = part.body(self.raw);
        match cte {
            Cte::Plain => self.out.extend_from_slice(body),
            Cte::Base64 => {
                self.out.extend(decode_base64(body));
                self.converted = true;
            }
            Cte::Qp => {
                self.out.extend(decode_qp(body));
                self.converted = true;
            }
        }
        self.copy_start = part_end;
        Some(())
    }
}

/// `BINARY[section]` (RFC 3516): the bytes and whether Dovecot sends them as `~{N}` (some
/// part was decoded, or NULs). `None` for an unknown Content-Transfer-Encoding (Dovecot's
/// `NO [UNKNOWN-CTE]`). HEADER/MIME sections are as BODY[…] gives them.
pub fn binary_section(msg: &Message, s: &Section) -> Option<(Vec<u8>, bool)> {
    let (part, include_hdr) = match &s.text {
        SectionText::Whole => {
            let Some(p) = msg.part_at(&s.path) else {
                return Some((Vec::new(), false));
            };
            (p.clone(), s.path.is_empty())
        }
        SectionText::Text => {
            let Some(p) = msg.part_at(&s.path) else {
                return Some((Vec::new(), false));
            };
            if s.path.is_empty() {
                (p.clone(), false)
            } else if p.is(mime::RFC822) {
                match p.children.first() {
                    Some(c) => (c.clone(), false),
                    None => return Some((Vec::new(), false)),
                }
            } else {
                return Some((Vec::new(), false));
            }
        }
        _ => return section_bytes(msg, s).map(|d| (d, false)),
    };
    let mut b = Binary {
        raw: &msg.raw,
        out: Vec::new(),
        copy_start: 0,
        converted: false,
    };
    if !include_hdr {
        b.copy_start = part.body_start;
    }
    b.add(msg, &part, include_hdr)?;
    let nuls = b.out.contains(&0);
    Some((b.out, b.converted || nuls))
}

/// `BINARY[path]` of a part: [`binary_section`] of its whole body.
pub fn binary(msg: &Message, path: &[u32]) -> Option<(Vec<u8>, bool)> {
    binary_section(
        msg,
        &Section {
            path: path.to_vec(),
            text: SectionText::Whole,
        },
    )
}

/// `BINARY.SIZE[path]`: as [`binary`], but Dovecot sizes through the whole message's
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

/// BINARY.SIZE of any section (see [`binary_size`] for the whole-message CTE check).
pub fn binary_section_size(msg: &Message, s: &Section) -> Option<usize> {
    if msg.part_at(&s.path).is_none() {
        return Some(0); // no such part: 0, before any encoding is looked at
    }
    binary_size(msg, &[])?;
    binary_section(msg, s).map(|(d, _)| d.len())
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
/// `TEXT`, `3.MIME`, ``) as Dovecot's `imap_msgpart_parse`; `None` is Dovecot's `Invalid
/// BODY[..] section`. Part number 0 is accepted (and names nothing), as in Dovecot.
pub fn parse_section(spec: &str) -> Option<Section> {
    let b = spec.as_bytes();
    let mut i = 0;
    let mut next_digit = true;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            next_digit = false;
        } else if !next_digit && b[i] == b'.' {
            next_digit = true;
        } else {
            break;
        }
        i += 1;
    }
    let (numbers, rest) = if i == 0 {
        ("", spec)
    } else if i == b.len() {
        if b[i - 1] == b'.' {
            return None;
        }
        (spec, "")
    } else {
        if b[i - 1] != b'.' {
            return None;
        }
        (&spec[..i - 1], &spec[i..])
    };
    let mut path = Vec::new();
    for n in numbers.split('.').filter(|n| !n.is_empty()) {
        // An overlong number names no part (u32::MAX never exists).
        path.push(n.parse::<u32>().unwrap_or(u32::MAX));
    }
    let upper = rest.to_ascii_uppercase();
    let fields = |s: &str| -> Option<Vec<Vec<u8>>> {
        let inner = s.strip_prefix(" (")?.strip_suffix(')')?;
        let v: Vec<Vec<u8>> = inner
            .split(' ')
            .filter(|f| !f.is_empty())
            .map(|f| f.as_bytes().to_vec())
            .collect();
        if v.is_empty() { None } else { Some(v) }
    };
    let text = if upper.is_empty() {
        SectionText::Whole
    } else if upper == "MIME" {
        if path.is_empty() {
            return None;
        }
        SectionText::Mime
    } else if upper == "TEXT" {
        SectionText::Text
    } else if upper == "HEADER" {
        SectionText::Header
    } else if let Some(f) = upper.strip_prefix("HEADER.FIELDS.NOT") {
        SectionText::HeaderFieldsNot(fields(f)?)
    } else if let Some(f) = upper.strip_prefix("HEADER.FIELDS") {
        SectionText::HeaderFields(fields(f)?)
    } else {
        return None;
    };
    Some(Section { path, text })
}

/// One FETCH data item (RFC 3501 §6.4.5, RFC 3516, RFC 7162).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAtt {
    Flags,
    InternalDate,
    Rfc822Size,
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    Envelope,
    Body,
    BodyStructure,
    Uid,
    ModSeq,
    SaveDate,
    /// BODY[…] / BODY.PEEK[…] / BINARY[…] / BINARY.PEEK[…] / BINARY.SIZE[…].
    Section {
        binary: bool,
        size_only: bool,
        peek: bool,
        section: Section,
        partial: Option<(u64, Option<u64>)>,
    },
}

/// Parses FETCH's item argument (a macro, one item, or a list) as Dovecot's
/// `fetch_parse_args`; `UID` is added first for UID FETCH. Returns the items and how
/// many arguments were used (modifiers such as `(CHANGEDSINCE n)` may follow), or
/// Dovecot's error text.
pub fn parse_fetch_atts(
    args: &[crate::imap::reader::Arg],
    uid: bool,
) -> Result<(Vec<FetchAtt>, usize), String> {
    use crate::imap::reader::Arg;
    let mut out = Vec::new();
    if uid {
        out.push(FetchAtt::Uid);
    }
    let first = args.first().ok_or("Invalid arguments")?;
    match first {
        Arg::List(items) => {
            if items.is_empty() {
                return Err("FETCH list is empty".into());
            }
            let mut i = 0;
            while i < items.len() {
                let Some(name) = items[i].atom() else {
                    return Err("FETCH list contains non-atoms".into());
                };
                i += 1;
                i += fetch_att(&name.to_ascii_uppercase(), &items[i..], &mut out)?;
            }
            Ok((out, 1))
        }
        _ => {
            let name = first
                .atom()
                .ok_or("Invalid arguments")?
                .to_ascii_uppercase();
            let macro_items: &[&str] = match name.as_str() {
                "ALL" => &["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
                "FAST" => &["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
                "FULL" => &["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
                _ => {
                    let used = fetch_att(&name, &args[1..], &mut out)?;
                    return Ok((out, 1 + used));
                }
            };
            for m in macro_items {
                fetch_att(m, &[], &mut out)?;
            }
            Ok((out, 1))
        }
    }
}

/// One item by its upper-cased name; returns how many following arguments it took (a
/// header list and its `]…` atom).
fn fetch_att(
    name: &str,
    rest: &[crate::imap::reader::Arg],
    out: &mut Vec<FetchAtt>,
) -> Result<usize, String> {
    let simple = match name {
        "FLAGS" => Some(FetchAtt::Flags),
        "INTERNALDATE" => Some(FetchAtt::InternalDate),
        "RFC822.SIZE" => Some(FetchAtt::Rfc822Size),
        "RFC822" => Some(FetchAtt::Rfc822),
        "RFC822.HEADER" => Some(FetchAtt::Rfc822Header),
        "RFC822.TEXT" => Some(FetchAtt::Rfc822Text),
        "ENVELOPE" => Some(FetchAtt::Envelope),
        "BODY" => Some(FetchAtt::Body),
        "BODYSTRUCTURE" => Some(FetchAtt::BodyStructure),
        "UID" => Some(FetchAtt::Uid),
        "MODSEQ" => Some(FetchAtt::ModSeq),
        "SAVEDATE" => Some(FetchAtt::SaveDate),
        _ => None,
    };
    if let Some(a) = simple {
        out.push(a);
        return Ok(0);
    }
    let (kind, mut p, binary, size_only, peek) = if let Some(r) = name.strip_prefix("BINARY") {
        if let Some(r) = r.strip_prefix(".SIZE") {
            ("BINARY", r, true, true, true)
        } else if let Some(r) = r.strip_prefix(".PEEK") {
            ("BINARY", r, true, false, true)
        } else {
            ("BINARY", r, true, false, false)
        }
    } else if let Some(r) = name.strip_prefix("BODY") {
        match r.strip_prefix(".PEEK") {
            Some(r) => ("BODY", r, false, false, true),
            None => ("BODY", r, false, false, false),
        }
    } else {
        return Err(format!("Unknown parameter: {name}"));
    };
    let bad = |t: &str| format!("Invalid {kind}[..] parameter: {t}");
    p = p.strip_prefix('[').ok_or_else(|| {
        if name.starts_with(kind) && !name[kind.len()..].starts_with(['.', '[']) {
            format!("Unknown parameter: {name}")
        } else {
            bad("Missing '['")
        }
    })?;
    let mut used = 0;
    let (spec, after) = if let Some(crate::imap::reader::Arg::List(list)) = rest.first() {
        let close = rest
            .get(1)
            .and_then(|a| a.atom())
            .filter(|a| a.starts_with(']'))
            .ok_or_else(|| bad("Missing ']'"))?;
        let mut names = Vec::new();
        for a in list {
            let v = a
                .as_str()
                .ok_or_else(|| bad("Header list contains non-strings"))?;
            names.push(v.to_ascii_uppercase());
        }
        used = 2;
        (format!("{p} ({})", names.join(" ")), close[1..].to_string())
    } else {
        let close = p.find(']').ok_or_else(|| bad("Missing ']'"))?;
        (p[..close].to_string(), p[close + 1..].to_string())
    };
    let section = parse_section(&spec).ok_or_else(|| format!("Invalid {kind}[..] section"))?;
    let mut partial = None;
    if !size_only && !after.is_empty() {
        let inner = after
            .strip_prefix('<')
            .ok_or_else(|| bad("Unexpected data after ']'"))?;
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let n = digits(inner);
        let start: u64 = inner[..n]
            .parse()
            .map_err(|_| bad("Too big partial start"))?;
        let mut r = &inner[n..];
        let mut count = None;
        if let Some(x) = r.strip_prefix('.') {
            let m = digits(x);
            count = Some(
                x[..m]
                    .parse::<u64>()
                    .map_err(|_| bad("Too big partial end"))?,
            );
            r = &x[m..];
        }
        let r = r
            .strip_prefix('>')
            .ok_or_else(|| bad("Missing '>' in partial"))?;
        if !r.is_empty() {
            return Err(bad("Unexpected data after '>'"));
        }
        partial = Some((start, count));
    }
    out.push(FetchAtt::Section {
        binary,
        size_only,
        peek,
        section,
        partial,
    });
    Ok(used)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::reader::parse_args;

    fn atts(line: &str) -> Result<Vec<FetchAtt>, String> {
        parse_fetch_atts(&parse_args(line.as_bytes()).unwrap(), false).map(|(a, _)| a)
    }

    #[test]
    fn fetch_items_and_dovecot_errors() {
        // compat-fixtures/imap/session.txt t95, t99–t105.
        assert_eq!(atts("FOO"), Err("Unknown parameter: FOO".into()));
        for bad in [
            "BODY[FOO]",
            "BODY[1.2.FOO]",
            "BODY[HEADER.FIELDS]",
            "BODY[HEADER.FIELDS ()]",
            "BODY.PEEK[MIME]",
        ] {
            assert_eq!(atts(bad), Err("Invalid BODY[..] section".into()), "{bad}");
        }
        assert!(atts("BODY[]<1>").is_ok());
        assert!(atts("BODY.PEEK[0]").is_ok());
        assert!(atts("BINARY[1.MIME]").is_ok());
        let a = atts("(FLAGS BODY.PEEK[HEADER.FIELDS (From \"To\")]<0.10> UID)").unwrap();
        assert_eq!(a.len(), 3);
        let FetchAtt::Section {
            section,
            partial,
            peek,
            ..
        } = &a[1]
        else {
            panic!("{a:?}")
        };
        assert!(*peek);
        assert_eq!(*partial, Some((0, Some(10))));
        assert_eq!(section_name(section), "HEADER.FIELDS (FROM TO)");
        assert_eq!(atts("FULL").unwrap().len(), 5);
        assert_eq!(atts("()"), Err("FETCH list is empty".into()));
    }
}
