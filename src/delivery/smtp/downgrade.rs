//! The 8-bit → 7-bit MIME downgrade that smtp(8) applies when the server does not
//! announce 8BITMIME (Postfix's `mime_state.c` with `MIME_OPT_DOWNGRADE`).
//!
//! What the real Postfix 3.7 does (compat-fixtures/smtp/downgrade-*.data against
//! passthru-*.data, the same queue file sent to a peer with 8BITMIME):
//!
//! - Only a declared 8-bit (or binary) `Content-Transfer-Encoding:` triggers a conversion:
//!   a message or part without that header is 7bit by default and is sent as is, even with
//!   8-bit bytes in it (the `plain` fixtures). `MIME-Version:` is neither needed nor added.
//! - In a header block whose encoding is 8bit/binary, that `Content-Transfer-Encoding:`
//!   header is dropped where it stood, and `Content-Transfer-Encoding: quoted-printable`
//!   (`7bit` for a `multipart/*` or `message/*` part) is written as the last header of the
//!   block. No other header changes.
//! - The body of such a non-multipart, non-message part is quoted-printable: bytes below 32
//!   except TAB, `=`, and bytes above 126 as `=XX` (upper-case hex); a soft line break `=`
//!   whenever the output line already has more than 72 characters before the next one is
//!   added; a space or TAB that ends a line is encoded (with a soft break first when the line
//!   would otherwise exceed 73 characters before it). Leading dots and `From ` are not
//!   touched (dot-stuffing comes later).
//! - Multipart structure (boundaries, preamble, epilogue) and nested `message/rfc822`
//!   headers are followed, each part judged by its own headers; a `multipart/digest` part
//!   without `Content-Type:` is `message/rfc822`. A multipart without a boundary gets
//!   `7bit` and its body is copied; another `message/*` (partial, external-body) declared
//!   8bit gets `7bit` but its body is quoted-printable. An unknown encoding after an 8bit
//!   one changes nothing, and is dropped too.

/// The content type of the part being read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ctype {
    Text,
    Multipart,
    Message,
    Other,
}

/// A part's header state.
#[derive(Clone, Debug)]
struct Part {
    ctype: Ctype,
    /// `message/rfc822` (its body is a nested header).
    rfc822: bool,
    /// `multipart/digest` (its parts default to message/rfc822).
    digest: bool,
    boundary: Option<Vec<u8>>,
    /// The declared encoding is 8bit or binary.
    eight: bool,
}

impl Part {
    fn new(in_digest: bool) -> Part {
        Part {
            ctype: if in_digest {
                Ctype::Message
            } else {
                Ctype::Text
            },
            rfc822: in_digest,
            digest: false,
            boundary: None,
            eight: false,
        }
    }
}

/// How body lines are written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    Copy,
    Qp,
}

enum Mode {
    /// In a header block (primary, part, or nested message header).
    Header(Part),
    Body(Body),
}

/// `Name:` (printable characters other than `:`, then optional blanks, then `:`).
fn is_header(line: &[u8]) -> bool {
    let mut i = 0;
    while i < line.len() && line[i] > 32 && line[i] < 127 && line[i] != b':' {
        i += 1;
    }
    if i == 0 {
        return false;
    }
    while i < line.len() && (line[i] == b' ' || line[i] == b'\t') {
        i += 1;
    }
    i < line.len() && line[i] == b':'
}

/// The header's name, lower-cased, and its value (after the colon, unfolded, trimmed).
fn split_header(h: &[u8]) -> (String, String) {
    let colon = h.iter().position(|&b| b == b':').unwrap_or(h.len());
    let name = String::from_utf8_lossy(&h[..colon])
        .trim()
        .to_ascii_lowercase();
    let value: Vec<u8> = h[(colon + 1).min(h.len())..]
        .iter()
        .map(|&b| if b == b'\n' { b' ' } else { b })
        .collect();
    (name, String::from_utf8_lossy(&value).trim().to_string())
}

/// Drop RFC 822 comments `( … )` outside quoted strings.
fn strip_comments(v: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if quoted {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                quoted = false;
            }
        } else if depth > 0 {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                '\\' => {
                    chars.next();
                }
                _ => {}
            }
        } else {
            match c {
                '(' => depth = 1,
                '"' => {
                    quoted = true;
                    out.push(c);
                }
                _ => out.push(c),
            }
        }
    }
    out
}

/// Apply a `Content-Type:` value to `p`.
fn content_type(p: &mut Part, value: &str) {
    let v = strip_comments(value);
    let mut it = v.splitn(2, ';');
    let full = it.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = it.next().unwrap_or("");
    let (ty, sub) = match full.split_once('/') {
        Some((t, s)) => (t.trim().to_string(), s.trim().to_string()),
        None => (full.clone(), String::new()),
    };
    p.rfc822 = false;
    p.digest = false;
    p.boundary = None;
    p.ctype = match ty.as_str() {
        "text" => Ctype::Text,
        "multipart" => Ctype::Multipart,
        "message" => Ctype::Message,
        _ => Ctype::Other,
    };
    match p.ctype {
        Ctype::Message => p.rfc822 = sub == "rfc822",
        Ctype::Multipart => {
            p.digest = sub == "digest";
            p.boundary = param(params, "boundary").map(|b| b.into_bytes());
        }
        _ => {}
    }
}

/// One `name=value` parameter (value a token or quoted string).
fn param(params: &str, want: &str) -> Option<String> {
    let mut rest = params;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ';' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return None;
        }
        let eq = rest.find('=')?;
        let name = rest[..eq].trim().to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(q) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut end = q.len();
            let mut chars = q.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => v.push(c),
                }
            }
            value = v;
            rest = &q[end.min(q.len())..];
        } else {
            let end = rest
                .find(|c: char| c == ';' || c.is_ascii_whitespace())
                .unwrap_or(rest.len());
            value = rest[..end].to_string();
            rest = &rest[end..];
        }
        if name == want {
            return Some(value);
        }
    }
}

/// Apply a `Content-Transfer-Encoding:` value; unknown encodings change nothing.
fn transfer_encoding(p: &mut Part, value: &str) {
    let v = strip_comments(value);
    let tok = v
        .split(|c: char| c == ';' || c.is_ascii_whitespace())
        .find(|t| !t.is_empty())
        .unwrap_or("")
        .to_ascii_lowercase();
    match tok.as_str() {
        "7bit" | "quoted-printable" | "base64" => p.eight = false,
        "8bit" | "binary" => p.eight = true,
        _ => {}
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn qp_push(buf: &mut Vec<u8>, ch: u8) {
    buf.push(b'=');
    buf.push(HEX[(ch >> 4) as usize]);
    buf.push(HEX[(ch & 0xf) as usize]);
}

/// One body line (without its line end) as quoted-printable lines, each followed by LF.
fn qp_line(line: &[u8], out: &mut Vec<u8>) {
    let mut buf: Vec<u8> = Vec::with_capacity(80);
    for &ch in line {
        if buf.len() > 72 {
            buf.push(b'=');
            out.extend_from_slice(&buf);
            out.push(b'\n');
            buf.clear();
        }
        if (ch < 32 && ch != b'\t') || ch == b'=' || ch > 126 {
            qp_push(&mut buf, ch);
        } else {
            buf.push(ch);
        }
    }
    if let Some(&ch) = buf.last()
        && (ch == b' ' || ch == b'\t')
    {
        buf.pop();
        if buf.len() > 73 {
            buf.push(b'=');
            out.extend_from_slice(&buf);
            out.push(b'\n');
            buf.clear();
        }
        qp_push(&mut buf, ch);
    }
    out.extend_from_slice(&buf);
    out.push(b'\n');
}

/// Can [`downgrade`] change the content at all: does any line start with
/// `Content-Transfer-Encoding` (any case)? A cheap test that spares the copy for the
/// messages that declare nothing; a `true` may still leave the content unchanged.
pub fn may_convert(content: &[u8]) -> bool {
    const CTE: &[u8] = b"content-transfer-encoding";
    content
        .split(|&b| b == b'\n')
        .any(|l| l.len() >= CTE.len() && l[..CTE.len()].eq_ignore_ascii_case(CTE))
}

/// Convert a message (LF line ends; a CR before an LF is dropped) as Postfix's smtp(8)
/// does for a server without 8BITMIME. The result has LF line ends.
pub fn downgrade(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 8 + 64);
    // Open multipart boundaries, outermost first, with whether the part is a digest.
    let mut stack: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut mode = Mode::Header(Part::new(false));
    // The logical header being collected (lines joined with LF, no final LF).
    let mut pending: Vec<u8> = Vec::new();

    let mut lines: Vec<&[u8]> = content.split(|&b| b == b'\n').collect();
    // A final line end leaves an empty last piece, which is no line.
    let ends_with_lf = content.last() == Some(&b'\n');
    if ends_with_lf || content.is_empty() {
        lines.pop();
    }
    let n = lines.len();
    let mut i = 0;
    while i < n {
        let line = lines[i];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let last = i + 1 == n && !ends_with_lf;
        i += 1;
        let eol = |out: &mut Vec<u8>| {
            if !last {
                out.push(b'\n');
            }
        };
        match &mut mode {
            Mode::Header(part) => {
                if !pending.is_empty()
                    && (line.first() == Some(&b' ') || line.first() == Some(&b'\t'))
                {
                    pending.push(b'\n');
                    pending.extend_from_slice(line);
                    continue;
                }
                if !pending.is_empty() {
                    emit_header(part, &pending, &mut out);
                    pending.clear();
                }
                if is_header(line) {
                    pending.extend_from_slice(line);
                    continue;
                }
                // End of the header block: an empty line, or a line that is no header.
                let part = part.clone();
                if part.eight {
                    out.extend_from_slice(match part.ctype {
                        Ctype::Multipart | Ctype::Message => b"Content-Transfer-Encoding: 7bit\n",
                        _ => b"Content-Transfer-Encoding: quoted-printable\n",
                    });
                }
                mode = match part.ctype {
                    Ctype::Multipart if part.boundary.is_some() => {
                        stack.push((part.boundary.clone().unwrap_or_default(), part.digest));
                        Mode::Body(Body::Copy)
                    }
                    Ctype::Message if part.rfc822 => Mode::Header(Part::new(false)),
                    // A multipart without a boundary is copied; a message/partial or
                    // external-body declared 8bit says 7bit but its body is encoded
                    // (downgrade-noboundary, downgrade-oddcte).
                    Ctype::Multipart => Mode::Body(Body::Copy),
                    _ if part.eight => Mode::Body(Body::Qp),
                    _ => Mode::Body(Body::Copy),
                };
                if line.is_empty() {
                    eol(&mut out);
                    continue;
                }
                // The non-header line is the body's first line: handled below.
                i -= 1;
                // Re-run this line in the new mode (a body line; a nested header block
                // started here sees a non-header line and ends at once).
                if let Mode::Header(_) = mode {
                    // message/rfc822 whose body starts with a non-header line: that nested
                    // header is empty.
                    mode = Mode::Body(Body::Copy);
                }
                continue;
            }
            Mode::Body(how) => {
                if line.starts_with(b"--") {
                    let rest = &line[2..];
                    if let Some(k) = stack
                        .iter()
                        .rposition(|(b, _)| !b.is_empty() && rest.starts_with(b))
                    {
                        let closing = rest[stack[k].0.len()..].starts_with(b"--");
                        out.extend_from_slice(line);
                        eol(&mut out);
                        if closing {
                            stack.truncate(k);
                            mode = Mode::Body(Body::Copy);
                        } else {
                            let digest = stack[k].1;
                            stack.truncate(k + 1);
                            mode = Mode::Header(Part::new(digest));
                        }
                        continue;
                    }
                }
                match how {
                    Body::Copy => {
                        out.extend_from_slice(line);
                        eol(&mut out);
                    }
                    Body::Qp => {
                        qp_line(line, &mut out);
                        if last {
                            out.pop();
                        }
                    }
                }
            }
        }
    }
    // A message that ends inside its header.
    if let Mode::Header(part) = &mut mode {
        if !pending.is_empty() {
            emit_header(part, &pending, &mut out);
        }
        if part.eight {
            out.extend_from_slice(match part.ctype {
                Ctype::Multipart | Ctype::Message => b"Content-Transfer-Encoding: 7bit\n",
                _ => b"Content-Transfer-Encoding: quoted-printable\n",
            });
        }
    }
    out
}

/// Note what a header says about the part, and write it unless it is a
/// `Content-Transfer-Encoding:` that the downgrade replaces.
fn emit_header(part: &mut Part, h: &[u8], out: &mut Vec<u8>) {
    let (name, value) = split_header(h);
    match name.as_str() {
        "content-type" => content_type(part, &value),
        "content-transfer-encoding" => {
            transfer_encoding(part, &value);
            if part.eight {
                return;
            }
        }
        _ => {}
    }
    out.extend_from_slice(h);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let p = format!("{}/compat-fixtures/smtp/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    /// What a peer received (CR LF, dot-stuffed) back to content with LF line ends.
    fn unwire(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in data.split_inclusive(|&b| b == b'\n') {
            let l = l.strip_suffix(b"\r\n").unwrap_or(l);
            let l = l.strip_prefix(b".").unwrap_or(l);
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        out
    }

    /// The 8BITMIME peer got the queue file unchanged; the other one what the downgrade
    /// made of it.
    fn check(name: &str) {
        let input = unwire(&fixture(&format!("passthru-{name}.data")));
        let want = unwire(&fixture(&format!("downgrade-{name}.data")));
        let got = downgrade(&input);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{name}"
        );
        assert_eq!(got, want, "{name}");
    }

    #[test]
    fn plain_message_is_not_converted() {
        check("plain");
        check("plain-nobody");
        let input = unwire(&fixture("passthru-plain.data"));
        assert!(!may_convert(&input));
    }

    #[test]
    fn single_part_text_becomes_quoted_printable() {
        check("single");
        assert!(may_convert(&unwire(&fixture("passthru-single.data"))));
        // A folded value, a blank before the colon: still converted (Postern's reading: not
        // recorded from Postfix).
        let odd = b"Content-Transfer-Encoding :\n 8bit\n\n\xe9\n";
        assert!(may_convert(odd));
        assert_eq!(
            downgrade(odd),
            b"Content-Transfer-Encoding: quoted-printable\n\n=E9\n".to_vec()
        );
    }

    #[test]
    fn multipart_converts_only_the_8bit_part() {
        check("multi");
    }

    #[test]
    fn qp_line_length_edges_and_trailing_blanks() {
        check("edges");
    }

    #[test]
    fn nested_message_and_multipart_header() {
        check("nested");
    }

    /// Lines longer than line_length_limit (several queue-file records): the 8BITMIME peer
    /// got them broken at 998 with CR LF SPACE (smtp_line_length_limit), joined back here.
    #[test]
    fn lines_longer_than_a_queue_record() {
        let raw = unwire(&fixture("passthru-longline.data"));
        let mut input: Vec<u8> = Vec::new();
        let mut prev = 0usize;
        for l in raw.split_inclusive(|&b| b == b'\n') {
            if prev == 998 && l.first() == Some(&b' ') {
                input.pop();
                input.extend_from_slice(&l[1..]);
            } else {
                input.extend_from_slice(l);
            }
            prev = l.len() - 1;
        }
        assert!(input.windows(3000).any(|w| !w.contains(&b'\n')));
        let want = unwire(&fixture("downgrade-longline.data"));
        assert_eq!(
            String::from_utf8_lossy(&downgrade(&input)),
            String::from_utf8_lossy(&want)
        );
    }

    #[test]
    fn digest_parts_default_to_message_rfc822() {
        check("digest");
    }

    #[test]
    fn multipart_without_boundary_and_odd_encodings() {
        check("noboundary");
        check("oddcte");
    }

    #[test]
    fn nested_and_multipart_headers() {
        let input = b"Content-Type: multipart/mixed; boundary=\"b1\"\n\
Content-Transfer-Encoding: 8BIT\n\
\n\
--b1\n\
Content-Type: message/rfc822\n\
Content-Transfer-Encoding: 8bit\n\
\n\
Subject: inner\n\
Content-Transfer-Encoding: 8bit\n\
\n\
\xc3\xa9\n\
--b1\n\
Content-Type: application/octet-stream\n\
Content-Transfer-Encoding: base64\n\
\n\
AAAA\n\
--b1--\n";
        let want = "Content-Type: multipart/mixed; boundary=\"b1\"\n\
Content-Transfer-Encoding: 7bit\n\
\n\
--b1\n\
Content-Type: message/rfc822\n\
Content-Transfer-Encoding: 7bit\n\
\n\
Subject: inner\n\
Content-Transfer-Encoding: quoted-printable\n\
\n\
=C3=A9\n\
--b1\n\
Content-Type: application/octet-stream\n\
Content-Transfer-Encoding: base64\n\
\n\
AAAA\n\
--b1--\n";
        assert_eq!(String::from_utf8(downgrade(input)).unwrap(), want);
    }
}
