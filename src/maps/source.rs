//! Text sources of tables: the files `postmap` and `postalias` read (`/etc/postfix/access`,
//! `/etc/aliases`), and the logical-line reader every table file shares.
//!
//! Logical lines follow Postfix's `readllines()`: blank lines, whitespace-only lines and lines
//! whose first non-blank byte is `#` are skipped (and do not end a logical line); a line that
//! starts with white space continues the previous one, its text appended as it is; text that
//! starts a file with white space is dropped with `FILE: logical line must not start with
//! whitespace: "…"`. A logical line is numbered by its first physical line.
//!
//! Entries follow `postmap(1)` (`key whitespace value`, a key may be `"quoted with spaces"`,
//! quotes kept) and `aliases(5)` as `postalias(1)` reads it (`name: value, value`, parsed as
//! RFC 822 tokens and written back with `, ` between addresses and single spaces elsewhere,
//! `:include:` kept).
//!
//! Known limits: the RFC 822 re-writing of alias values covers atoms, quoted strings,
//! comments and domain literals, which is what aliases files hold; it does not reproduce
//! every corner of Postfix's `tok822_externalize()`.

use indexmap::IndexMap;

use super::{Duplicates, OpenOptions};

/// One logical line: the number of its first physical line and its joined text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalLine {
    pub line: usize,
    pub text: String,
}

/// Split `bytes` into logical lines as Postfix's `readllines()` does. `path` names the file
/// in warnings. Invalid UTF-8 is replaced (U+FFFD) rather than refused, so a table with stray
/// Latin-1 bytes still loads.
pub fn logical_lines(bytes: &[u8], path: &str, warn: &dyn Fn(&str)) -> Vec<LogicalLine> {
    let mut reader = LogicalLines::new(bytes, path);
    let mut out = Vec::new();
    // Reading a byte slice cannot fail.
    while let Ok(Some(ll)) = reader.next_line(warn) {
        out.push(ll);
    }
    out
}

/// [`logical_lines`] read from a stream one physical line at a time, so that a source of
/// any size is read in constant memory (`postmap` on a table of millions of lines).
pub struct LogicalLines<'p, R> {
    input: R,
    path: &'p str,
    raw: Vec<u8>,
    lineno: usize,
    current: Option<LogicalLine>,
    eof: bool,
}

impl<'p, R: std::io::BufRead> LogicalLines<'p, R> {
    pub fn new(input: R, path: &'p str) -> Self {
        LogicalLines {
            input,
            path,
            raw: Vec::new(),
            lineno: 0,
            current: None,
            eof: false,
        }
    }

    /// The next logical line (`None` at the end), its warnings given to `warn`.
    pub fn next_line(&mut self, warn: &dyn Fn(&str)) -> std::io::Result<Option<LogicalLine>> {
        while !self.eof {
            self.raw.clear();
            if self.input.read_until(b'\n', &mut self.raw)? == 0 {
                self.eof = true;
                break;
            }
            self.lineno += 1;
            let raw = self.raw.strip_suffix(b"\n").unwrap_or(&self.raw);
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let first = raw.iter().position(|b| !b.is_ascii_whitespace());
            let Some(first) = first else { continue };
            if raw[first] == b'#' {
                continue;
            }
            let text = String::from_utf8_lossy(raw);
            if first > 0 {
                match self.current.as_mut() {
                    Some(cur) => cur.text.push_str(&text),
                    None => {
                        let shown: String = text.chars().take(30).collect();
                        let more = if text.chars().count() > 30 { "..." } else { "" };
                        warn(&format!(
                            "{}: logical line must not start with whitespace: \"{shown}{more}\"",
                            self.path
                        ));
                    }
                }
                continue;
            }
            let next = LogicalLine {
                line: self.lineno,
                text: text.into_owned(),
            };
            if let Some(done) = self.current.replace(next) {
                return Ok(Some(done));
            }
        }
        Ok(self.current.take())
    }
}

/// The two source formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `key whitespace value` (postmap).
    Postmap,
    /// `name: value, value` (postalias, aliases(5)).
    Aliases,
}

/// Split a postmap line into key and value; `None` when there is no value.
pub fn split_postmap_line(text: &str) -> Option<(String, String)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut in_quote = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quote {
            if b == b'\\' {
                i += 1;
            } else if b == b'"' {
                in_quote = false;
            }
        } else if b == b'"' {
            in_quote = true;
        } else if b.is_ascii_whitespace() {
            break;
        }
        i += 1;
    }
    let i = i.min(bytes.len());
    let key = text.get(..i)?;
    let value = text
        .get(i..)?
        .trim_matches(|c: char| c.is_ascii_whitespace());
    if key.is_empty() || value.is_empty() {
        return None;
    }
    Some((key.to_string(), value.to_string()))
}

/// Parse a whole source into entries, in file order, applying the duplicate policy.
/// `path` names the file in line warnings; `dict_name` names the table in `duplicate entry`
/// warnings (`access.db` for `hash:access`, `lmdb:access` for LMDB, as Postfix does).
pub fn parse_entries(
    bytes: &[u8],
    path: &str,
    dict_name: &str,
    format: Format,
    opts: &OpenOptions,
) -> IndexMap<String, String> {
    let warn = |m: &str| opts.warn(m);
    let mut map: IndexMap<String, String> = IndexMap::new();
    for ll in logical_lines(bytes, path, &warn) {
        if let Some((key, value)) = parse_line(&ll, path, format, opts, &warn) {
            insert(&mut map, key, value, dict_name, opts);
        }
    }
    map
}

/// One logical line as an entry (the key case-folded when `opts` says so), or `None` with
/// Postfix's warning given to `warn` when the line is not one.
pub fn parse_line(
    ll: &LogicalLine,
    path: &str,
    format: Format,
    opts: &OpenOptions,
    warn: &dyn Fn(&str),
) -> Option<(String, String)> {
    let (key, value) = match format {
        Format::Postmap => match split_postmap_line(&ll.text) {
            Some(kv) => kv,
            None => {
                warn(&format!(
                    "{path}, line {}: expected format: key whitespace value",
                    ll.line
                ));
                return None;
            }
        },
        Format::Aliases => match split_alias_line(&ll.text) {
            Ok(kv) => kv,
            Err(msg) => {
                warn(&format!("{path}, line {}: {msg}", ll.line));
                return None;
            }
        },
    };
    let key = if opts.fold_case {
        super::fold(&key)
    } else {
        key
    };
    Some((key, value))
}

/// Insert with Postfix's duplicate policy.
pub fn insert(
    map: &mut IndexMap<String, String>,
    key: String,
    value: String,
    dict_name: &str,
    opts: &OpenOptions,
) {
    if map.contains_key(&key) {
        match opts.duplicates {
            Duplicates::Warn => {
                opts.warn(&format!("{dict_name}: duplicate entry: \"{key}\""));
            }
            Duplicates::Ignore => {}
            Duplicates::Replace => {
                map.insert(key, value);
            }
        }
        return;
    }
    map.insert(key, value);
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Atom(String),
    Quoted(String),
    Comment(String),
    Literal(String),
    Special(char),
}

impl Tok {
    fn is_word(&self) -> bool {
        !matches!(self, Tok::Special(_))
    }
}

/// RFC 822 tokens as Postfix's `tok822_scan()` sees them (flat: comments and quoted strings
/// are kept with their delimiters' content).
fn tokenize(text: &str) -> Vec<Tok> {
    const SPECIALS: &str = "()<>@,;:\\\".[]";
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    s.push('\\');
                    i += 1;
                }
                s.push(chars[i]);
                i += 1;
            }
            i += 1;
            out.push(Tok::Quoted(s));
        } else if c == '(' {
            let mut depth = 1;
            let mut s = String::new();
            i += 1;
            while i < chars.len() {
                let d = chars[i];
                if d == '\\' && i + 1 < chars.len() {
                    s.push(d);
                    s.push(chars[i + 1]);
                    i += 2;
                    continue;
                }
                if d == '(' {
                    depth += 1;
                } else if d == ')' {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                s.push(d);
                i += 1;
            }
            out.push(Tok::Comment(s));
        } else if c == '[' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != ']' {
                s.push(chars[i]);
                i += 1;
            }
            i += 1;
            out.push(Tok::Literal(s));
        } else if SPECIALS.contains(c) {
            out.push(Tok::Special(c));
            i += 1;
        } else {
            let mut s = String::new();
            while i < chars.len() && !chars[i].is_whitespace() && !SPECIALS.contains(chars[i]) {
                s.push(chars[i]);
                i += 1;
            }
            out.push(Tok::Atom(s));
        }
    }
    out
}

fn externalize(toks: &[Tok]) -> String {
    let mut s = String::new();
    let mut prev: Option<&Tok> = None;
    for t in toks {
        if let Some(p) = prev
            && p.is_word()
            && t.is_word()
        {
            s.push(' ');
        }
        match t {
            Tok::Atom(a) => s.push_str(a),
            Tok::Quoted(q) => {
                s.push('"');
                s.push_str(q);
                s.push('"');
            }
            Tok::Comment(c) => {
                s.push('(');
                s.push_str(c);
                s.push(')');
            }
            Tok::Literal(l) => {
                s.push('[');
                s.push_str(l);
                s.push(']');
            }
            Tok::Special(',') => s.push_str(", "),
            Tok::Special(c) => s.push(*c),
        }
        prev = Some(t);
    }
    s.trim_end().to_string()
}

/// Split an aliases(5) line into name and value as postalias does; `Err` holds Postfix's
/// warning text.
pub fn split_alias_line(text: &str) -> Result<(String, String), &'static str> {
    let toks = tokenize(text);
    let colon = toks.iter().position(|t| *t == Tok::Special(':'));
    let Some(colon) = colon.filter(|&c| c > 0) else {
        return Err("need name:value pair");
    };
    let value_toks = &toks[colon + 1..];
    if value_toks.is_empty() {
        return Err("need name:value pair");
    }
    let mut key = String::new();
    for t in &toks[..colon] {
        match t {
            Tok::Atom(a) => key.push_str(a),
            Tok::Quoted(q) => key.push_str(q),
            Tok::Literal(l) => {
                key.push('[');
                key.push_str(l);
                key.push(']');
            }
            Tok::Comment(_) => {}
            Tok::Special(c) => key.push(*c),
        }
    }
    if toks[..colon].contains(&Tok::Special('@')) {
        return Err("name must be local");
    }
    Ok((key, externalize(value_toks)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<(usize, String)> {
        logical_lines(s.as_bytes(), "t", &|_| {})
            .into_iter()
            .map(|l| (l.line, l.text))
            .collect()
    }

    #[test]
    fn continuation_and_comments() {
        assert_eq!(
            lines("k1 v1\n\n# c\n  more\nk2 v2\n"),
            vec![(1, "k1 v1  more".into()), (5, "k2 v2".into())]
        );
    }

    #[test]
    fn postmap_split() {
        assert_eq!(
            split_postmap_line("k5 v5  \t"),
            Some(("k5".into(), "v5".into()))
        );
        assert_eq!(
            split_postmap_line("\"quoted key\" qv"),
            Some(("\"quoted key\"".into(), "qv".into()))
        );
        assert_eq!(split_postmap_line("nokey"), None);
    }

    #[test]
    fn alias_split() {
        assert_eq!(
            split_alias_line("a1: a,b  ,  c"),
            Ok(("a1".into(), "a, b, c".into()))
        );
        assert_eq!(
            split_alias_line("a2: x (comm)  y"),
            Ok(("a2".into(), "x (comm) y".into()))
        );
        assert_eq!(
            split_alias_line("list: :include:/etc/list  , more"),
            Ok(("list".into(), ":include:/etc/list, more".into()))
        );
        assert_eq!(
            split_alias_line("\"two words\": x"),
            Ok(("two words".into(), "x".into()))
        );
        assert_eq!(split_alias_line("a6@dom: z"), Err("name must be local"));
        assert_eq!(split_alias_line("foo: "), Err("need name:value pair"));
    }
}
