//! Syntax of `dovecot.conf` (every era) into a raw tree of settings and sections, with
//! `!include`/`!include_try` expanded and the file and line of every node kept.
//!
//! Behaviour follows Dovecot 2.3.19's `config-parser.c`, checked with the real `doveconf`:
//! * leading white space is skipped; a line whose first character is `#` is a comment;
//! * `#` outside quotes starts a comment; when it does not follow white space Dovecot warns
//!   `Ambiguous '#' character in line, treating it as comment` and still cuts the line there;
//! * a line ending in `\` continues on the next line (the next line's leading white space is
//!   dropped); trailing white space is trimmed;
//! * `KEY = VALUE`: a value both starting and ending with `"` (or `'`) is unquoted, `\x` → `x`;
//!   any other value is kept as written, so `"abc" def` stays as it is; `< FILE` becomes
//!   `<FILE` and is not read here (doveconf -n does not read it either);
//! * `KEY [NAME] {` opens a section, `}` closes it; text after `{` is `Garbage after '{'`, a line
//!   without `=` or `{` is `Expecting '{'`;
//! * `!include PATH` expands PATH as a glob relative to the including file's directory; no
//!   match is fatal (`No matches`), `!include_try` is silent. Dovecot itself recurses into an
//!   include loop until the path is too long; we stop at the first repeat with a clear error.
//!
//! Limits: a file is read whole (config files are small; 64 MiB cap per file); a file that is
//! not UTF-8 is read byte-for-char (Latin-1), like the rest of the project's config readers.

use std::path::{Path, PathBuf};

use pest::Parser;
use pest_derive::Parser;

use crate::config::ConfigError;
use crate::config::text;

#[derive(Parser)]
#[grammar = "config/dovecot/dovecot.pest"]
struct LineGrammar;

/// Biggest config file we read (a sanity limit, not a Dovecot one).
const MAX_FILE: u64 = 64 << 20;
/// Deepest include nesting we follow.
const MAX_INCLUDE_DEPTH: usize = 32;

/// Where a node came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file's path as Dovecot names it (the include pattern joined to the includer's dir).
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One node of the raw tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// `key = value`, value unquoted.
    Setting {
        key: String,
        value: String,
        at: Origin,
    },
    /// `kind [name] { … }`.
    Section {
        kind: String,
        name: Option<String>,
        at: Origin,
        children: Vec<Node>,
    },
}

/// The raw tree of a file and everything it includes, plus the warnings seen on the way.
#[derive(Debug, Default)]
pub struct RawConf {
    pub nodes: Vec<Node>,
    pub warnings: Vec<String>,
    /// `Missing '}'` when the file ended inside a section (the sections are closed in `nodes`).
    pub unclosed: Option<ConfigError>,
}

/// A parsed logical line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Include { path: String, must_exist: bool },
    Close,
    KeyValue { key: String, value: String },
    Open { kind: String, name: Option<String> },
}

/// Read `path` and its includes.
pub fn parse_file(path: &Path) -> Result<RawConf, ConfigError> {
    let mut out = RawConf::default();
    let mut stack = Vec::new();
    let mut open: Vec<(Node, Origin)> = Vec::new();
    let mut top = Vec::new();
    read_into(path, &mut stack, &mut open, &mut top, &mut out.warnings)?;
    out.unclosed = close_all(path, &mut open, &mut top);
    out.nodes = top;
    Ok(out)
}

/// Close sections left open at the end of the file (so the settings read so far can still be
/// shown, as doveconf does) and return doveconf's `Missing '}'` error for the innermost one.
fn close_all(
    path: &Path,
    open: &mut Vec<(Node, Origin)>,
    top: &mut Vec<Node>,
) -> Option<ConfigError> {
    let err = open.last().map(|(_, at)| ConfigError::InFile {
        file: path.to_path_buf(),
        msg: format!("Missing '}}' (section started at {at})"),
    });
    while let Some((node, _)) = open.pop() {
        push_node(open, top, node);
    }
    err
}

/// Parse text as if it were the file `path` (no includes relative to anything real needed).
pub fn parse_str(text: &str, path: &Path) -> Result<RawConf, ConfigError> {
    let mut out = RawConf::default();
    let mut stack = vec![path.to_path_buf()];
    let mut open: Vec<(Node, Origin)> = Vec::new();
    let mut top = Vec::new();
    parse_text(
        text,
        path,
        &mut stack,
        &mut open,
        &mut top,
        &mut out.warnings,
    )?;
    out.unclosed = close_all(path, &mut open, &mut top);
    out.nodes = top;
    Ok(out)
}

fn read_into(
    path: &Path,
    stack: &mut Vec<PathBuf>,
    open: &mut Vec<(Node, Origin)>,
    top: &mut Vec<Node>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    use std::io::Read;
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if stack.contains(&canon) {
        return Err(ConfigError::InFile {
            file: path.to_path_buf(),
            msg: format!(
                "Include loop: {} is already being read (included again from {})",
                canon.display(),
                stack
                    .last()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
        });
    }
    if stack.len() >= MAX_INCLUDE_DEPTH {
        return Err(ConfigError::InFile {
            file: path.to_path_buf(),
            msg: "Includes nested too deeply".into(),
        });
    }
    let file = std::fs::File::open(path).map_err(|e| ConfigError::open(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ConfigError::open(path, e))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(ConfigError::InFile {
            file: path.to_path_buf(),
            msg: format!("File too large (over {MAX_FILE} bytes)"),
        });
    }
    let (text, _) = text::decode(&bytes);
    stack.push(canon);
    let r = parse_text(&text, path, stack, open, top, warnings);
    stack.pop();
    r
}

/// Append `node` to the innermost open section, or to the top level.
fn push_node(open: &mut [(Node, Origin)], top: &mut Vec<Node>, node: Node) {
    match open.last_mut() {
        Some((Node::Section { children, .. }, _)) => children.push(node),
        _ => top.push(node),
    }
}

fn parse_text(
    text: &str,
    path: &Path,
    stack: &mut Vec<PathBuf>,
    open: &mut Vec<(Node, Origin)>,
    top: &mut Vec<Node>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let mut pending: Option<(String, usize)> = None;
    for (idx, raw) in text.split('\n').enumerate() {
        let number = idx + 1;
        let trimmed = raw.trim_start_matches([' ', '\t', '\r']);
        let (mut body, ambiguous) = cut_comment(trimmed);
        if ambiguous {
            warnings.push(format!(
                "Configuration file {} line {number}: Ambiguous '#' character in line, treating it as comment. Add a space before it to remove this warning.",
                path.display()
            ));
        }
        body = body.trim_end_matches([' ', '\t', '\r']);
        let (logical, start) = match pending.take() {
            Some((mut acc, start)) => {
                acc.push_str(body);
                (acc, start)
            }
            None => {
                if body.is_empty() {
                    continue;
                }
                (body.to_string(), number)
            }
        };
        if let Some(stripped) = logical.strip_suffix('\\') {
            pending = Some((stripped.to_string(), start));
            continue;
        }
        let at = Origin {
            file: path.to_path_buf(),
            line: start,
        };
        match parse_line(&logical).map_err(|m| ConfigError::at_line(path, start, m))? {
            Line::Close => match open.pop() {
                Some((node, _)) => push_node(open, top, node),
                None => return Err(ConfigError::at_line(path, start, "Unexpected '}'")),
            },
            Line::KeyValue { key, value } => push_node(open, top, Node::Setting { key, value, at }),
            Line::Open { kind, name } => open.push((
                Node::Section {
                    kind,
                    name,
                    at: at.clone(),
                    children: Vec::new(),
                },
                at,
            )),
            Line::Include {
                path: pattern,
                must_exist,
            } => {
                let full = include_path(path, &pattern);
                let matches =
                    glob_sorted(&full).map_err(|m| ConfigError::at_line(path, start, m))?;
                if matches.is_empty() && must_exist {
                    return Err(ConfigError::at_line(path, start, "No matches"));
                }
                for m in matches {
                    match read_into(&m, stack, open, top, warnings) {
                        Ok(()) => {}
                        Err(ConfigError::Open { .. }) if !must_exist => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    Ok(())
}

/// `dir/pattern` the way Dovecot builds it: relative to the including file's directory, and
/// with no `./` when the including file has no directory part.
fn include_path(including: &Path, pattern: &str) -> PathBuf {
    if pattern.starts_with('/') {
        return PathBuf::from(pattern);
    }
    match including.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(pattern),
        _ => PathBuf::from(pattern),
    }
}

fn glob_sorted(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let pat = pattern.to_string_lossy();
    let paths = glob::glob(&pat).map_err(|e| format!("Invalid include pattern {pat}: {e}"))?;
    let mut v: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
    v.sort();
    Ok(v)
}

/// Cut a comment off a line (already stripped of leading white space). Returns the text before
/// the comment and whether the `#` was "ambiguous" (not after white space).
fn cut_comment(line: &str) -> (&str, bool) {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut prev: Option<char> = None;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if let Some(q) = quote {
            if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
        } else if c == '"' || c == '\'' {
            quote = Some(c);
        } else if c == '#' {
            let ambiguous = !matches!(prev, None | Some(' ') | Some('\t'));
            return (&line[..i], ambiguous);
        }
        prev = Some(c);
    }
    (line, false)
}

/// Remove quotes and backslash escapes from a value that starts and ends with the same quote.
pub fn unquote(v: &str) -> String {
    let bytes = v.as_bytes();
    if v.len() >= 2 && (bytes[0] == b'"' || bytes[0] == b'\'') && bytes[v.len() - 1] == bytes[0] {
        let inner = &v[1..v.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else {
                out.push(c);
            }
        }
        out
    } else {
        v.to_string()
    }
}

fn parse_line(line: &str) -> Result<Line, String> {
    let pairs = match LineGrammar::parse(Rule::line, line) {
        Ok(p) => p,
        Err(_) => {
            return Err(if line.contains('{') {
                "Garbage after '{'".into()
            } else {
                "Expecting '{'".into()
            });
        }
    };
    for pair in pairs {
        match pair.as_rule() {
            Rule::include => {
                let mut it = pair.into_inner();
                let kw = it.next().map(|p| p.as_str()).unwrap_or("include");
                let path = it.next().map(|p| p.as_str()).unwrap_or("");
                return Ok(Line::Include {
                    path: unquote(path.trim()),
                    must_exist: kw == "include",
                });
            }
            Rule::close => return Ok(Line::Close),
            Rule::keyvalue => {
                let mut it = pair.into_inner();
                let key = it.next().map(|p| p.as_str()).unwrap_or("").to_string();
                let raw = it.next().map(|p| p.as_str()).unwrap_or("");
                let value = if let Some(file) = raw.strip_prefix('<') {
                    format!("<{}", file.trim_start())
                } else {
                    unquote(raw)
                };
                return Ok(Line::KeyValue { key, value });
            }
            Rule::open => {
                let mut it = pair.into_inner();
                let kind = it.next().map(|p| p.as_str()).unwrap_or("").to_string();
                let name = it.next().map(|p| unquote(p.as_str().trim()));
                return Ok(Line::Open { kind, name });
            }
            _ => {}
        }
    }
    Err("Expecting '{'".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<RawConf, ConfigError> {
        parse_str(s, Path::new("t.conf"))
    }

    #[test]
    fn lines() {
        assert_eq!(
            parse_line("a = b").unwrap(),
            Line::KeyValue {
                key: "a".into(),
                value: "b".into()
            }
        );
        assert_eq!(
            parse_line("mailbox \"Sent Messages\" {").unwrap(),
            Line::Open {
                kind: "mailbox".into(),
                name: Some("Sent Messages".into())
            }
        );
        assert_eq!(
            parse_line("ssl_cert = < /x").unwrap(),
            Line::KeyValue {
                key: "ssl_cert".into(),
                value: "</x".into()
            }
        );
        assert_eq!(parse_line("a b c = d").unwrap_err(), "Expecting '{'");
        assert_eq!(parse_line("x { y = 1").unwrap_err(), "Garbage after '{'");
    }

    #[test]
    fn comments_and_quotes() {
        assert_eq!(cut_comment("a = b # c"), ("a = b ", false));
        assert_eq!(cut_comment("a = b#c"), ("a = b", true));
        assert_eq!(cut_comment("a = \"x # y\" # c"), ("a = \"x # y\" ", false));
        assert_eq!(unquote("\"a\\\"b\\\\c\""), "a\"b\\c");
        assert_eq!(unquote("\"abc\" def"), "\"abc\" def");
    }

    #[test]
    fn continuation_and_sections() {
        let r = p("login_greeting = foo \\\n  bar\nprotocol imap {\n x = 1\n}\n").unwrap();
        assert_eq!(r.nodes.len(), 2);
        match &r.nodes[0] {
            Node::Setting { value, .. } => assert_eq!(value, "foo bar"),
            n => panic!("{n:?}"),
        }
    }

    #[test]
    fn unbalanced() {
        let e = p("a {\n").unwrap().unclosed.unwrap().to_string();
        assert!(
            e.contains("Missing '}' (section started at t.conf:1)"),
            "{e}"
        );
        let e = p("}\n").unwrap_err().to_string();
        assert_eq!(e, "t.conf, line 1: Unexpected '}'");
    }
}
