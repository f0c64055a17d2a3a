//! RFC 5322/2045 header value tokens, RFC 2231 parameters and address lists, parsed as
//! Dovecot 2.3's `lib-mail/rfc822-parser.c`, `rfc2231-parser.c` and `message-address.c`
//! do, because ENVELOPE and BODYSTRUCTURE print what those parsers keep (case as written,
//! `name*` left raw for a lone extended parameter, continuations merged, groups as
//! `(NIL NIL "name" NIL)` … `(NIL NIL NIL NIL)`, MISSING_MAILBOX / MISSING_DOMAIN /
//! SYNTAX_ERROR fill-ins). Comments are skipped; the last comment after an addr-spec is its
//! display name, as in Dovecot.

/// Dovecot's `rfc822_atext_chars`: 0 = special, 1 = atext but tspecial, 2 = atext, 4 =
/// atext (`/`, `=`, `?`) but not a MIME token char.
fn class(c: u8) -> u8 {
    match c {
        0..=32 | 127 => 0,
        b'"' | b'(' | b')' | b',' | b'.' | b':' | b';' | b'<' | b'>' | b'@' | b'[' | b'\\'
        | b']' => 0,
        b'/' | b'=' | b'?' => 4,
        b'!'
        | b'#'..=b'\''
        | b'*'
        | b'+'
        | b'-'
        | b'^'
        | b'_'
        | b'`'
        | b'{'
        | b'|'
        | b'}'
        | b'~' => 1,
        _ => 2,
    }
}

fn is_atext(c: u8) -> bool {
    class(c) != 0
}

fn is_token(c: u8) -> bool {
    class(c) & 3 != 0
}

/// A MIME parameter: name and value.
pub type Param = (Vec<u8>, Vec<u8>);

/// Dovecot's `rfc822_parser_context`: a cursor over a header value.
pub struct Parser<'a> {
    pub data: &'a [u8],
    pub pos: usize,
    /// The last comment skipped (for an addr-spec's display name).
    pub last_comment: Option<Vec<u8>>,
}

impl<'a> Parser<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Parser {
            data,
            pos: 0,
            last_comment: None,
        }
    }
    pub fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }
    pub fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }
    fn more(&self) -> i32 {
        if self.at_end() { 0 } else { 1 }
    }

    fn skip_comment(&mut self) -> i32 {
        let mut level = 1;
        self.pos += 1;
        let mut comment = Vec::new();
        while self.pos < self.data.len() {
            let c = self.data[self.pos];
            match c {
                b'(' => level += 1,
                b')' => {
                    level -= 1;
                    if level == 0 {
                        self.pos += 1;
                        if let Some(lc) = self.last_comment.as_mut() {
                            *lc = comment;
                        }
                        return self.more();
                    }
                }
                b'\n' => {
                    if comment.last() == Some(&b'\r') {
                        comment.pop();
                    }
                    self.pos += 1;
                    continue;
                }
                b'\\' => {
                    self.pos += 1;
                    if self.pos >= self.data.len() {
                        return -1;
                    }
                    let e = self.data[self.pos];
                    if e == b'\r' || e == b'\n' {
                        comment.push(b'\\');
                        continue;
                    }
                    comment.push(e);
                    self.pos += 1;
                    continue;
                }
                _ => {}
            }
            comment.push(c);
            self.pos += 1;
        }
        -1
    }

    /// Skips white space and comments: 1 with more data, 0 at the end, -1 broken.
    pub fn skip_lwsp(&mut self) -> i32 {
        while self.pos < self.data.len() {
            match self.data[self.pos] {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'(' => {
                    if self.skip_comment() < 0 {
                        return -1;
                    }
                }
                _ => break,
            }
        }
        self.more()
    }

    pub fn atom(&mut self, out: &mut Vec<u8>) -> i32 {
        if self.at_end() || !is_atext(self.data[self.pos]) {
            return -1;
        }
        let start = self.pos;
        while self.pos < self.data.len() && is_atext(self.data[self.pos]) {
            self.pos += 1;
        }
        out.extend_from_slice(&self.data[start..self.pos]);
        self.skip_lwsp()
    }

    pub fn dot_atom(&mut self, out: &mut Vec<u8>) -> i32 {
        if self.at_end() || !is_atext(self.data[self.pos]) {
            return -1;
        }
        let mut start = self.pos;
        self.pos += 1;
        while self.pos < self.data.len() {
            if is_atext(self.data[self.pos]) {
                self.pos += 1;
                continue;
            }
            if start == self.pos {
                return -1;
            }
            out.extend_from_slice(&self.data[start..self.pos]);
            let r = self.skip_lwsp();
            if r <= 0 {
                return r;
            }
            if self.data[self.pos] != b'.' {
                return 1;
            }
            self.pos += 1;
            out.push(b'.');
            if self.skip_lwsp() <= 0 {
                return -1;
            }
            start = self.pos;
        }
        out.extend_from_slice(&self.data[start..self.pos]);
        0
    }

    /// Dovecot's `parse_nonstrict_dot_atom` (local parts with `..` or a leading dot).
    pub fn nonstrict_dot_atom(&mut self, out: &mut Vec<u8>) -> i32 {
        loop {
            if self.at_end() {
                return 0;
            }
            let c = self.data[self.pos];
            if c == b'"' {
                let r = self.quoted_string(out);
                if r <= 0 {
                    return r;
                }
            } else if c == b'.' {
                out.push(b'.');
                self.pos += 1;
                let r = self.skip_lwsp();
                if r <= 0 {
                    return r;
                }
            } else if is_atext(c) {
                let start = self.pos;
                while self.pos < self.data.len() && is_atext(self.data[self.pos]) {
                    self.pos += 1;
                }
                out.extend_from_slice(&self.data[start..self.pos]);
                let r = self.skip_lwsp();
                if r <= 0 {
                    return r;
                }
            } else {
                return if out.is_empty() { -1 } else { 1 };
            }
        }
    }

    pub fn mime_token(&mut self, out: &mut Vec<u8>) -> i32 {
        let start = self.pos;
        while self.pos < self.data.len()
            && (is_token(self.data[self.pos]) || self.data[self.pos] == b'.')
        {
            self.pos += 1;
        }
        out.extend_from_slice(&self.data[start..self.pos]);
        if self.at_end() {
            return 0;
        }
        self.skip_lwsp()
    }

    pub fn quoted_string(&mut self, out: &mut Vec<u8>) -> i32 {
        self.pos += 1;
        while self.pos < self.data.len() {
            let c = self.data[self.pos];
            match c {
                b'"' => {
                    self.pos += 1;
                    return self.skip_lwsp();
                }
                b'\n' => {
                    if out.last() == Some(&b'\r') {
                        out.pop();
                    }
                }
                b'\\' => {
                    self.pos += 1;
                    if self.pos >= self.data.len() {
                        return -1;
                    }
                    let e = self.data[self.pos];
                    if e == b'\r' || e == b'\n' {
                        out.push(b'\\');
                        continue;
                    }
                    out.push(e);
                }
                0 => out.extend_from_slice("\u{FFFD}".as_bytes()),
                _ => out.push(c),
            }
            self.pos += 1;
        }
        -1
    }

    fn atom_or_dot(&mut self, out: &mut Vec<u8>) -> i32 {
        let start = self.pos;
        while self.pos < self.data.len()
            && (is_atext(self.data[self.pos]) || self.data[self.pos] == b'.')
        {
            self.pos += 1;
        }
        out.extend_from_slice(&self.data[start..self.pos]);
        if self.at_end() {
            return 0;
        }
        self.skip_lwsp()
    }

    pub fn phrase(&mut self, out: &mut Vec<u8>) -> i32 {
        if self.at_end() {
            return 0;
        }
        if self.data[self.pos] == b'.' {
            return -1;
        }
        loop {
            let r = if self.data[self.pos] == b'"' {
                self.quoted_string(out)
            } else {
                self.atom_or_dot(out)
            };
            if r <= 0 {
                return r;
            }
            let c = self.data[self.pos];
            if !is_atext(c) && c != b'"' && c != b'.' {
                break;
            }
            out.push(b' ');
        }
        self.skip_lwsp()
    }

    fn domain_literal(&mut self, out: &mut Vec<u8>) -> i32 {
        let start = self.pos;
        self.pos += 1;
        while self.pos < self.data.len() {
            match self.data[self.pos] {
                b'[' => return -1,
                b']' => {
                    self.pos += 1;
                    out.extend_from_slice(&self.data[start..self.pos]);
                    return self.skip_lwsp();
                }
                b'\\' => self.pos += 1,
                _ => {}
            }
            self.pos += 1;
        }
        -1
    }

    pub fn domain(&mut self, out: &mut Vec<u8>) -> i32 {
        self.pos += 1; // '@'
        if self.skip_lwsp() <= 0 {
            return -1;
        }
        if self.data[self.pos] == b'[' {
            self.domain_literal(out)
        } else {
            self.dot_atom(out)
        }
    }

    /// `type/subtype` into `out` (Dovecot's `rfc822_parse_content_type`).
    pub fn content_type(&mut self, out: &mut Vec<u8>) -> i32 {
        let p0 = out.len();
        if self.skip_lwsp() <= 0 {
            return -1;
        }
        if self.mime_token(out) <= 0 || out.len() == p0 {
            return -1;
        }
        if self.data[self.pos] != b'/' {
            out.truncate(p0);
            return -1;
        }
        self.pos += 1;
        if self.skip_lwsp() <= 0 {
            out.truncate(p0);
            return -1;
        }
        out.push(b'/');
        let p1 = out.len();
        let r = self.mime_token(out);
        if r < 0 || out.len() == p1 || (!self.at_end() && self.data[self.pos] != b';') {
            out.truncate(p0);
            return -1;
        }
        r
    }

    /// One `; key=value`: `Some(Ok)`, `Some(Err)` broken, `None` at the end.
    fn content_param(&mut self) -> Option<Result<Param, ()>> {
        if self.at_end() {
            return None;
        }
        if self.data[self.pos] != b';' {
            return Some(Err(()));
        }
        self.pos += 1;
        if self.skip_lwsp() <= 0 {
            return Some(Err(()));
        }
        let mut key = Vec::new();
        if self.mime_token(&mut key) <= 0 || self.data[self.pos] != b'=' {
            return Some(Err(()));
        }
        self.pos += 1;
        let mut value = Vec::new();
        let r = self.skip_lwsp();
        let r = if r <= 0 {
            r
        } else if self.data[self.pos] == b'"' {
            self.quoted_string(&mut value)
        } else if self.data[self.pos] == b'=' {
            while let Some(c) = self.peek() {
                if matches!(c, b';' | b' ' | b'\t' | b'\r' | b'\n') {
                    break;
                }
                value.push(c);
                self.pos += 1;
            }
            r
        } else {
            self.mime_token(&mut value)
        };
        if r < 0 {
            Some(Err(()))
        } else {
            Some(Ok((key, value)))
        }
    }

    /// All parameters, RFC 2231 continuations merged (Dovecot's `rfc2231_parse`).
    pub fn rfc2231_params(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        struct P {
            key: Vec<u8>,
            value: Vec<u8>,
            idx: u32,
            extended: bool,
        }
        let mut result = Vec::new();
        let mut ext: Vec<P> = Vec::new();
        let mut idx = 0u32;
        while let Some(r) = self.content_param() {
            let Ok((key, value)) = r else {
                if self.at_end() {
                    break;
                }
                self.pos += 1;
                continue;
            };
            if let Some(star) = key.iter().position(|&c| c == b'*') {
                let mut p = star;
                if p + 1 < key.len() {
                    p += 1;
                    idx = 0;
                    while p < key.len() && key[p].is_ascii_digit() {
                        idx = idx.wrapping_mul(10).wrapping_add(u32::from(key[p] - b'0'));
                        p += 1;
                    }
                }
                let extended = p < key.len() && key[p] == b'*';
                if extended {
                    p += 1;
                }
                if p >= key.len() {
                    ext.push(P {
                        key: key[..star].to_vec(),
                        value,
                        idx,
                        extended,
                    });
                    continue;
                }
                result.push((key, value));
            } else {
                result.push((key, value));
            }
        }
        if ext.is_empty() {
            return result;
        }
        ext.sort_by(|a, b| {
            a.key
                .to_ascii_lowercase()
                .cmp(&b.key.to_ascii_lowercase())
                .then(a.idx.cmp(&b.idx))
        });
        let mut i = 0;
        while i < ext.len() {
            let mut ok = true;
            let mut have_extended = false;
            let mut next_idx = 0;
            let mut j = i;
            while j < ext.len() && ext[j].key.eq_ignore_ascii_case(&ext[i].key) {
                if ext[j].idx != next_idx {
                    ok = false;
                }
                have_extended |= ext[j].extended;
                next_idx += 1;
                j += 1;
            }
            if !ok {
                for p in &ext[i..j] {
                    let mut k = p.key.clone();
                    k.extend_from_slice(
                        format!("*{}{}", p.idx, if p.extended { "*" } else { "" }).as_bytes(),
                    );
                    result.push((k, p.value.clone()));
                }
            } else {
                let mut v = Vec::new();
                if !ext[i].extended && have_extended {
                    v.extend_from_slice(b"''");
                }
                for p in &ext[i..j] {
                    if !p.extended && have_extended {
                        for &c in &p.value {
                            if c == b'%' || !(0x20..0x7f).contains(&c) {
                                v.extend_from_slice(format!("%{c:02X}").as_bytes());
                            } else {
                                v.push(c);
                            }
                        }
                    } else {
                        v.extend_from_slice(&p.value);
                    }
                }
                let mut k = ext[i].key.clone();
                if have_extended {
                    k.push(b'*');
                }
                result.push((k, v));
            }
            i = j;
        }
        result
    }
}

/// One address of an address list (Dovecot's `message_address`); a group start has only
/// `mailbox` (the group name), a group end nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Address {
    pub name: Option<Vec<u8>>,
    pub route: Option<Vec<u8>>,
    pub mailbox: Option<Vec<u8>>,
    pub domain: Option<Vec<u8>>,
    pub invalid: bool,
}

struct AddrCtx<'a> {
    p: Parser<'a>,
    out: Vec<Address>,
    addr: Address,
}

impl AddrCtx<'_> {
    fn add(&mut self) {
        self.out.push(std::mem::take(&mut self.addr));
    }

    fn local_part(&mut self) -> i32 {
        let mut s = Vec::new();
        let r = if self.p.peek() == Some(b'"') {
            self.p.quoted_string(&mut s)
        } else {
            self.p.nonstrict_dot_atom(&mut s)
        };
        if r < 0 {
            return -1;
        }
        self.addr.mailbox = Some(s);
        r
    }

    fn domain(&mut self) -> i32 {
        let mut s = Vec::new();
        let r = self.p.domain(&mut s);
        if r < 0 {
            return -1;
        }
        self.addr.domain = Some(s);
        r
    }

    fn domain_list(&mut self) -> i32 {
        let mut s = Vec::new();
        loop {
            if self.p.at_end() {
                return 0;
            }
            if self.p.peek() != Some(b'@') {
                break;
            }
            if !s.is_empty() {
                s.push(b',');
            }
            s.push(b'@');
            let r = self.p.domain(&mut s);
            if r <= 0 {
                return r;
            }
            while self.p.skip_lwsp() > 0 && self.p.peek() == Some(b',') {
                self.p.pos += 1;
            }
        }
        self.addr.route = Some(s);
        1
    }

    fn angle_addr(&mut self) -> i32 {
        self.p.pos += 1;
        if self.p.skip_lwsp() <= 0 {
            return -1;
        }
        if self.p.peek() == Some(b'@') {
            if self.domain_list() > 0 && self.p.peek() == Some(b':') {
                self.p.pos += 1;
            } else {
                self.addr.route = Some(b"INVALID_ROUTE".to_vec());
                if self.p.at_end() {
                    return -1;
                }
            }
            if self.p.skip_lwsp() <= 0 {
                return -1;
            }
        }
        if self.p.peek() != Some(b'>') {
            if self.local_part() <= 0 {
                return -1;
            }
            if self.p.peek() == Some(b'@') && self.domain() <= 0 {
                return -1;
            }
        }
        if self.p.peek() != Some(b'>') {
            return -1;
        }
        self.p.pos += 1;
        self.p.skip_lwsp()
    }

    fn name_addr(&mut self) -> i32 {
        let mut s = Vec::new();
        if self.p.phrase(&mut s) <= 0 || self.p.peek() != Some(b'<') {
            return -1;
        }
        self.addr.name = if s.is_empty() { None } else { Some(s) };
        if self.angle_addr() < 0 {
            self.addr.domain = Some(b"SYNTAX_ERROR".to_vec());
            self.addr.invalid = true;
        }
        self.p.more()
    }

    fn addr_spec(&mut self) -> i32 {
        self.p.last_comment = Some(Vec::new());
        let quoted = self.p.peek() == Some(b'"');
        let mut r = self.local_part();
        let mut r2 = -2;
        if r <= 0 {
            self.addr.invalid = true;
        }
        if r != 0 && self.p.peek() == Some(b'@') {
            r2 = self.domain();
            if r2 <= 0 {
                r = r2;
            }
        }
        let comment = self.p.last_comment.take().unwrap_or_default();
        if !comment.is_empty() {
            self.addr.name = Some(comment);
        } else if r2 == -2 {
            let mut s = self.addr.mailbox.clone().unwrap_or_default();
            s.push(b' ');
            let before = s.len();
            let _ = self.p.phrase(&mut s);
            if s.len() != before {
                self.addr.mailbox = None;
                self.addr.name = Some(s);
            } else if !quoted {
                self.addr.domain = Some(Vec::new());
            }
            self.addr.invalid = true;
            r = -1;
        }
        r
    }

    fn fixed(&mut self) {
        if self.addr.mailbox.is_none() {
            self.addr.mailbox = Some(b"MISSING_MAILBOX".to_vec());
            self.addr.invalid = true;
        }
        if self.addr.domain.as_ref().is_none_or(|d| d.is_empty()) {
            self.addr.domain = Some(b"MISSING_DOMAIN".to_vec());
            self.addr.invalid = true;
        }
        self.add();
    }

    fn mailbox(&mut self) -> i32 {
        let start = self.p.pos;
        let mut r = self.name_addr();
        if r < 0 {
            self.p.pos = start;
            self.addr = Address::default();
            r = self.addr_spec();
            if self.addr.invalid
                && self.addr.name.is_none()
                && self.addr.mailbox.is_some()
                && self.addr.domain.is_none()
            {
                self.addr.name = self.addr.mailbox.take();
            }
        }
        if r < 0 {
            self.addr.invalid = true;
        }
        self.fixed();
        r
    }

    fn group(&mut self) -> i32 {
        let mut s = Vec::new();
        if self.p.phrase(&mut s) <= 0 || self.p.peek() != Some(b':') {
            return -1;
        }
        self.p.pos += 1;
        let mut r = self.p.skip_lwsp();
        if r <= 0 {
            self.addr.invalid = true;
        }
        self.addr.mailbox = Some(s);
        self.add();
        if r > 0 && self.p.peek() != Some(b';') {
            loop {
                if self.mailbox() <= 0 {
                    r = -1;
                    break;
                }
                if self.p.at_end() || self.p.peek() != Some(b',') {
                    break;
                }
                self.p.pos += 1;
                if self.p.skip_lwsp() <= 0 {
                    r = -1;
                    break;
                }
            }
        }
        if r >= 0 {
            if self.p.at_end() || self.p.peek() != Some(b';') {
                r = -1;
            } else {
                self.p.pos += 1;
                r = self.p.skip_lwsp();
            }
        }
        if r < 0 {
            self.addr.invalid = true;
        }
        self.add();
        if r == 0 { 0 } else { 1 }
    }

    fn address(&mut self) -> i32 {
        let start = self.p.pos;
        let r = self.group();
        if r < 0 {
            self.p.pos = start;
            self.addr = Address::default();
            return self.mailbox();
        }
        r
    }
}

/// Parses an address list header value (Dovecot's `message_address_parse` with
/// `FILL_MISSING`); groups are a start entry (name in `mailbox`) and an empty end entry.
pub fn parse_addresses(value: &[u8]) -> Vec<Address> {
    let mut c = AddrCtx {
        p: Parser::new(value),
        out: Vec::new(),
        addr: Address::default(),
    };
    if c.p.skip_lwsp() <= 0 {
        return c.out;
    }
    // The address count is bounded by the header's length (each needs a comma).
    loop {
        let r = c.address();
        if r == 0 {
            break;
        }
        if c.p.at_end() || c.p.peek() != Some(b',') {
            break;
        }
        c.p.pos += 1;
        let r = c.p.skip_lwsp();
        if r <= 0 {
            if r < 0 {
                c.fixed();
            }
            break;
        }
    }
    c.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_rfc2231() {
        let mut p = Parser::new(b"; name*=utf-8''na%C3%AFve%20file.txt");
        assert_eq!(
            p.rfc2231_params(),
            vec![(b"name*".to_vec(), b"utf-8''na%C3%AFve%20file.txt".to_vec())]
        );
        let mut p = Parser::new(b"; filename*0=\"long\"; filename*1=\"name.txt\"");
        assert_eq!(
            p.rfc2231_params(),
            vec![(b"filename".to_vec(), b"longname.txt".to_vec())]
        );
    }

    #[test]
    fn addresses() {
        let a = parse_addresses(
            b"Friends: fred@example.org, \"Wilma F.\" <wilma@example.org>;, solo@example.org",
        );
        assert_eq!(a.len(), 5);
        assert_eq!(a[0].mailbox.as_deref(), Some(&b"Friends"[..]));
        assert_eq!(a[3], Address::default());
        let a = parse_addresses(b"plain@example.org (Comment here)");
        assert_eq!(a[0].name.as_deref(), Some(&b"Comment here"[..]));
    }
}
