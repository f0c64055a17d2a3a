//! `regexp:` (POSIX extended regular expressions, the C library's `regcomp()` as Postfix uses
//! it) and `pcre:` (Perl-compatible, PCRE2) tables: one file format, two engines.
//!
//! Format (regexp_table(5), pcre_table(5)), one rule per logical line:
//! `/pattern/flags result`, `!/pattern/flags result`, `if /pattern/flags` … `endif` (nested),
//! first match wins; `$1`, `${1}`, `$(1)` in a result insert a sub-expression (empty when it
//! did not take part), `$$` is a dollar. The delimiter may be any non-alphanumeric character.
//! Matching is case-insensitive unless the `i` flag toggles it. Flags: regexp `i x m`
//! (`x` toggles extended syntax, on by default; `m` is `REG_NEWLINE`); pcre `i m s x A E U X`.
//!
//! Errors in a rule are warnings and the rule is skipped, worded as Postfix's
//! `dict_regexp.c`/`dict_pcre.c` (`regexp map FILE, line N: unknown regexp option "q": skipping
//! this rule`), so a table with one bad line still serves the rest, as it does in Postfix.
//!
//! Known limits: pcre flag `E` (PCRE2_DOLLAR_ENDONLY) is accepted and ignored (the `pcre2`
//! crate does not expose it); `A` is applied by wrapping the pattern in `\A(?:…)` and `U` by a
//! leading `(?U)`. Keys with NUL bytes never match a `regexp:` table (C strings).

use std::fs;
use std::path::PathBuf;
use std::time::SystemTime;

use super::source::logical_lines;
use super::{MapError, OpenOptions, Table};
use crate::sys::regex::{self as posix, PosixRegex};

/// Which engine and flag set a table uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `regexp:` — POSIX ERE via `regcomp(3)`.
    Posix,
    /// `pcre:` — PCRE2.
    Pcre,
}

impl Dialect {
    fn map_word(self) -> &'static str {
        match self {
            Dialect::Posix => "regexp",
            Dialect::Pcre => "pcre",
        }
    }
}

/// A compiled pattern.
enum Matcher {
    Posix(PosixRegex),
    Pcre(pcre2::bytes::Regex),
}

impl Matcher {
    /// Sub-expression spans when the pattern matches `key`.
    fn captures(&self, key: &str) -> Option<Vec<Option<(usize, usize)>>> {
        match self {
            Matcher::Posix(r) => r.exec(key),
            Matcher::Pcre(r) => {
                let mut locs = r.capture_locations();
                match r.captures_read(&mut locs, key.as_bytes()) {
                    Ok(Some(_)) => Some((0..locs.len()).map(|i| locs.get(i)).collect()),
                    _ => None,
                }
            }
        }
    }
    fn groups(&self) -> usize {
        match self {
            Matcher::Posix(r) => r.groups(),
            Matcher::Pcre(r) => r.captures_len().saturating_sub(1),
        }
    }
}

/// The number of sub-expressions of a POSIX pattern (glibc keeps `re_nsub` private in the
/// `libc` crate's `regex_t`): `(` in extended syntax, `\(` in basic syntax, outside bracket
/// expressions.
fn count_groups(pattern: &str, extended: bool) -> usize {
    let b = pattern.as_bytes();
    let mut n = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                if !extended && b.get(i + 1) == Some(&b'(') {
                    n += 1;
                }
                i += 2;
                continue;
            }
            b'(' if extended => n += 1,
            b'[' => {
                // Skip a bracket expression: `]` right after `[` or `[^` is literal.
                i += 1;
                if b.get(i) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i) == Some(&b']') {
                    i += 1;
                }
                while i < b.len() && b[i] != b']' {
                    if b[i] == b'[' && matches!(b.get(i + 1), Some(b':' | b'.' | b'=')) {
                        let close = b[i + 1];
                        i += 2;
                        while i + 1 < b.len() && !(b[i] == close && b[i + 1] == b']') {
                            i += 1;
                        }
                        i += 1;
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    n
}

/// One piece of a result text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Group(usize),
}

enum Rule {
    Match {
        matcher: Matcher,
        negate: bool,
        result: Vec<Piece>,
    },
    If {
        matcher: Matcher,
        negate: bool,
        /// Index of the rule after the matching `endif` (or the end).
        skip_to: usize,
    },
    EndIf,
}

/// A parsed `regexp:` or `pcre:` table.
pub struct PatternTable {
    spec: String,
    rules: Vec<Rule>,
    sources: Vec<(PathBuf, Option<SystemTime>)>,
}

/// Parse a result text as Postfix's `mac_parse()` does for these tables. `Err` carries the
/// warnings to print (the last one says the rule is skipped).
fn parse_result(text: &str, negate: bool, prefix: &str) -> Result<Vec<Piece>, Vec<String>> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let chars: Vec<char> = text.chars().collect();
    let bad = |first: String| {
        vec![
            first,
            format!("{prefix}: bad replacement syntax: skipping this rule"),
        ]
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            lit.push(c);
            i += 1;
            continue;
        }
        i += 1;
        let name: String;
        match chars.get(i) {
            Some('$') => {
                lit.push('$');
                i += 1;
                continue;
            }
            Some(&open @ ('{' | '(')) => {
                let close = if open == '{' { '}' } else { ')' };
                let start = i + 1;
                let Some(end) = chars[start..].iter().position(|&c| c == close) else {
                    return Err(bad(format!("truncated macro reference: \"{text}\"")));
                };
                name = chars[start..start + end].iter().collect();
                i = start + end + 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                name = chars[start..i].iter().collect();
            }
        }
        if name.is_empty() {
            return Err(bad(format!("empty macro name: \"{text}\"")));
        }
        let Ok(n) = name.parse::<usize>() else {
            return Err(bad(format!(
                "{prefix}: non-numeric replacement index \"{name}\""
            )));
        };
        if negate {
            return Err(vec![format!(
                "{prefix}: $number found in negative match replacement text: skipping this rule"
            )]);
        }
        if !lit.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut lit)));
        }
        out.push(Piece::Group(n));
    }
    if !lit.is_empty() {
        out.push(Piece::Text(lit));
    }
    Ok(out)
}

/// The parts of `[!]/pattern/flags rest`.
struct PatternSpec {
    negate: bool,
    pattern: String,
    flags: String,
    rest: String,
}

fn split_pattern(text: &str) -> Result<PatternSpec, String> {
    let mut s = text.trim_start();
    let mut negate = false;
    if let Some(r) = s.strip_prefix('!') {
        negate = true;
        s = r.trim_start();
    }
    let mut it = s.char_indices();
    let Some((_, delim)) = it.next() else {
        return Err("no regexp: skipping this rule".into());
    };
    let body = &s[delim.len_utf8()..];
    let mut end = None;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == delim {
            end = Some(i);
            break;
        }
    }
    let Some(end) = end else {
        return Err(format!(
            "no closing regexp delimiter \"{delim}\": skipping this rule"
        ));
    };
    let pattern = body[..end].to_string();
    let after = &body[end + delim.len_utf8()..];
    let flag_end = after
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(after.len());
    Ok(PatternSpec {
        negate,
        pattern,
        flags: after[..flag_end].to_string(),
        rest: after[flag_end..].trim().to_string(),
    })
}

fn compile(dialect: Dialect, pattern: &str, flags: &str) -> Result<Matcher, String> {
    match dialect {
        Dialect::Posix => {
            let mut cflags = posix::REG_EXTENDED | posix::REG_ICASE;
            for f in flags.chars() {
                match f {
                    'i' => cflags ^= posix::REG_ICASE,
                    'x' => cflags ^= posix::REG_EXTENDED,
                    'm' => cflags ^= posix::REG_NEWLINE,
                    other => {
                        return Err(format!(
                            "unknown regexp option \"{other}\": skipping this rule"
                        ));
                    }
                }
            }
            PosixRegex::compile(
                pattern,
                cflags,
                count_groups(pattern, cflags & posix::REG_EXTENDED != 0),
            )
            .map(Matcher::Posix)
        }
        Dialect::Pcre => {
            let (mut caseless, mut multi, mut dotall, mut ext, mut anchored, mut ungreedy) =
                (true, false, false, false, false, false);
            for f in flags.chars() {
                match f {
                    'i' => caseless = !caseless,
                    'm' => multi = !multi,
                    's' => dotall = !dotall,
                    'x' => ext = !ext,
                    'A' => anchored = !anchored,
                    'U' => ungreedy = !ungreedy,
                    'E' | 'X' => {}
                    other => {
                        return Err(format!(
                            "unknown regexp option \"{other}\": skipping this rule"
                        ));
                    }
                }
            }
            let mut full = String::new();
            if ungreedy {
                full.push_str("(?U)");
            }
            if anchored {
                full.push_str("\\A(?:");
            }
            let shift = full.len();
            full.push_str(pattern);
            if anchored {
                full.push(')');
            }
            pcre2::bytes::RegexBuilder::new()
                .caseless(caseless)
                .multi_line(multi)
                .dotall(dotall)
                .extended(ext)
                .build(&full)
                .map(Matcher::Pcre)
                .map_err(|e| {
                    let shown = e.to_string();
                    // "PCRE2: error compiling pattern at offset 9: missing …": keep the tail.
                    let msg = shown
                        .find("pattern")
                        .and_then(|i| shown[i..].split_once(": "))
                        .map(|(_, m)| m.to_string())
                        .unwrap_or(shown.clone());
                    match e.offset() {
                        Some(off) => format!(
                            "error in regex at offset {}: {msg}",
                            off.saturating_sub(shift)
                        ),
                        None => format!("error in regex: {msg}"),
                    }
                })
        }
    }
}

/// `IF`/`ENDIF` keyword test as Postfix: case-insensitive, not followed by an alphanumeric.
fn keyword<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let head = text.get(..word.len())?;
    if !head.eq_ignore_ascii_case(word) {
        return None;
    }
    let rest = &text[word.len()..];
    match rest.chars().next() {
        Some(c) if c.is_ascii_alphanumeric() => None,
        _ => Some(rest),
    }
}

impl PatternTable {
    /// Read and parse the table file `name`.
    pub fn open(
        dialect: Dialect,
        name: &str,
        spec: &str,
        opts: &OpenOptions,
    ) -> Result<Self, MapError> {
        let path = PathBuf::from(name);
        let t = fs::metadata(&path).and_then(|m| m.modified()).ok();
        let bytes = fs::read(&path).map_err(|e| MapError::open(&path, e))?;
        let mut table = Self::parse(dialect, name, &bytes, opts);
        table.spec = spec.to_string();
        table.sources = vec![(path, t)];
        Ok(table)
    }

    /// Parse table text; every problem is a warning through `opts`, as in Postfix.
    pub fn parse(dialect: Dialect, name: &str, bytes: &[u8], opts: &OpenOptions) -> Self {
        let warn = |m: &str| opts.warn(m);
        let mut rules: Vec<Rule> = Vec::new();
        let mut open_ifs: Vec<(usize, usize)> = Vec::new(); // (rule index, line)
        for ll in logical_lines(bytes, name, &warn) {
            let prefix = format!("{} map {name}, line {}", dialect.map_word(), ll.line);
            let text = ll.text.as_str();
            if let Some(rest) = keyword(text, "endif") {
                if !rest.trim().is_empty() {
                    opts.warn(&format!("{prefix}: ignoring extra text after ENDIF"));
                }
                match open_ifs.pop() {
                    None => opts.warn(&format!("{prefix}: ignoring ENDIF without matching IF")),
                    Some((idx, _)) => {
                        rules.push(Rule::EndIf);
                        let after = rules.len();
                        if let Some(Rule::If { skip_to, .. }) = rules.get_mut(idx) {
                            *skip_to = after;
                        }
                    }
                }
                continue;
            }
            let (is_if, body) = match keyword(text, "if") {
                Some(rest) => (true, rest),
                None => (false, text),
            };
            let first = body.trim_start().chars().next();
            if !is_if && first.is_none_or(|c| c.is_ascii_alphanumeric()) {
                opts.warn(&format!("{prefix}: ignoring unrecognized request"));
                continue;
            }
            let ps = match split_pattern(body) {
                Ok(ps) => ps,
                Err(msg) => {
                    opts.warn(&format!("{prefix}: {msg}"));
                    continue;
                }
            };
            if is_if {
                if !ps.rest.is_empty() {
                    opts.warn(&format!(
                        "{prefix}: ignoring extra text after IF statement: \"{}\"",
                        ps.rest
                    ));
                }
                let matcher = match compile(dialect, &ps.pattern, &ps.flags) {
                    Ok(m) => m,
                    Err(msg) => {
                        opts.warn(&format!("{prefix}: {msg}"));
                        continue;
                    }
                };
                open_ifs.push((rules.len(), ll.line));
                rules.push(Rule::If {
                    matcher,
                    negate: ps.negate,
                    skip_to: usize::MAX,
                });
                continue;
            }
            // Flags are checked before the result, the pattern compiled last.
            if let Err(msg) = compile_flags_only(dialect, &ps.flags) {
                opts.warn(&format!("{prefix}: {msg}"));
                continue;
            }
            if ps.rest.is_empty() {
                opts.warn(&format!(
                    "{prefix}: no replacement text: using empty string"
                ));
            }
            let result = match parse_result(&ps.rest, ps.negate, &prefix) {
                Ok(r) => r,
                Err(msgs) => {
                    for m in msgs {
                        opts.warn(&m);
                    }
                    continue;
                }
            };
            let matcher = match compile(dialect, &ps.pattern, &ps.flags) {
                Ok(m) => m,
                Err(msg) => {
                    opts.warn(&format!("{prefix}: {msg}"));
                    continue;
                }
            };
            let groups = matcher.groups();
            if let Some(Piece::Group(n)) = result
                .iter()
                .find(|p| matches!(p, Piece::Group(n) if *n > groups))
            {
                opts.warn(&format!(
                    "{prefix}: out of range replacement index \"{n}\": skipping this rule"
                ));
                continue;
            }
            rules.push(Rule::Match {
                matcher,
                negate: ps.negate,
                result,
            });
        }
        for (idx, line) in open_ifs.into_iter().rev() {
            opts.warn(&format!(
                "{} map {name}, line {line}: IF has no matching ENDIF",
                dialect.map_word()
            ));
            let end = rules.len();
            if let Some(Rule::If { skip_to, .. }) = rules.get_mut(idx) {
                *skip_to = end;
            }
        }
        PatternTable {
            spec: format!("{}:{name}", dialect.map_word()),
            rules,
            sources: Vec::new(),
        }
    }
}

fn compile_flags_only(dialect: Dialect, flags: &str) -> Result<(), String> {
    let ok: &str = match dialect {
        Dialect::Posix => "ixm",
        Dialect::Pcre => "imsxAEUX",
    };
    match flags.chars().find(|c| !ok.contains(*c)) {
        Some(c) => Err(format!("unknown regexp option \"{c}\": skipping this rule")),
        None => Ok(()),
    }
}

impl Table for PatternTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        let mut i = 0;
        while i < self.rules.len() {
            match &self.rules[i] {
                Rule::EndIf => {}
                Rule::If {
                    matcher,
                    negate,
                    skip_to,
                } => {
                    let hit = matcher.captures(key).is_some();
                    if hit == *negate {
                        i = (*skip_to).max(i + 1);
                        continue;
                    }
                }
                Rule::Match {
                    matcher,
                    negate,
                    result,
                } => {
                    let caps = matcher.captures(key);
                    match (caps, negate) {
                        (Some(caps), false) => {
                            let mut out = String::new();
                            for p in result {
                                match p {
                                    Piece::Text(t) => out.push_str(t),
                                    Piece::Group(n) => {
                                        if let Some(Some((s, e))) = caps.get(*n)
                                            && let Some(sub) = key.get(*s..*e)
                                        {
                                            out.push_str(sub);
                                        }
                                    }
                                }
                            }
                            return Ok(Some(out));
                        }
                        (None, true) => {
                            let out: String = result
                                .iter()
                                .map(|p| match p {
                                    Piece::Text(t) => t.as_str(),
                                    Piece::Group(_) => "",
                                })
                                .collect();
                            return Ok(Some(out));
                        }
                        _ => {}
                    }
                }
            }
            i += 1;
        }
        Ok(None)
    }
    fn spec(&self) -> &str {
        &self.spec
    }
    fn sources(&self) -> Vec<(PathBuf, Option<SystemTime>)> {
        self.sources.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn parse(d: Dialect, text: &str) -> (PatternTable, Vec<String>) {
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let w = warnings.clone();
        let opts = OpenOptions {
            warn: Arc::new(move |m: &str| w.lock().unwrap().push(m.to_string())),
            ..OpenOptions::default()
        };
        let t = PatternTable::parse(d, "r", text.as_bytes(), &opts);
        let got = warnings.lock().unwrap().clone();
        (t, got)
    }

    const TABLE: &str = "/^(.*)@example\\.com$/   local $1\n!/foo/  nofoo ${1}\n/abc/q  bad flag\n/(unclosed/ x\n/x/\nif /^a/\n/b/ ab\nendif\nendif\n/^C(.)/ m is $1 $$ $2\n/^u(x)?y/ [$1]\nif !/zz/\n/q/ q\n";

    #[test]
    fn posix_rules_and_warnings_as_postfix() {
        let (t, w) = parse(Dialect::Posix, TABLE);
        assert_eq!(
            w,
            vec![
                "regexp map r, line 2: $number found in negative match replacement text: skipping this rule",
                "regexp map r, line 3: unknown regexp option \"q\": skipping this rule",
                "regexp map r, line 4: Unmatched ( or \\(",
                "regexp map r, line 5: no replacement text: using empty string",
                "regexp map r, line 9: ignoring ENDIF without matching IF",
                "regexp map r, line 10: out of range replacement index \"2\": skipping this rule",
                "regexp map r, line 12: IF has no matching ENDIF",
            ]
        );
        let q = |k: &str| t.lookup(k).unwrap();
        assert_eq!(q("joe@EXAMPLE.com").as_deref(), Some("local joe"));
        assert_eq!(q("foo"), None);
        assert_eq!(q("abc").as_deref(), Some("ab"));
        assert_eq!(q("Cx").as_deref(), Some(""));
        assert_eq!(q("uy").as_deref(), Some("[]"));
        assert_eq!(q("q").as_deref(), Some("q"));
    }

    #[test]
    fn pcre_rules() {
        let (t, w) = parse(Dialect::Pcre, TABLE);
        assert_eq!(
            w[2],
            "pcre map r, line 4: error in regex at offset 9: missing closing parenthesis"
        );
        assert_eq!(
            t.lookup("joe@example.com").unwrap().as_deref(),
            Some("local joe")
        );
    }

    #[test]
    fn replacement_syntax_errors() {
        let (_, w) = parse(Dialect::Posix, "/u/ a$\n/v/ a$x\n/w/ ${1\n");
        assert_eq!(
            w,
            vec![
                "empty macro name: \"a$\"",
                "regexp map r, line 1: bad replacement syntax: skipping this rule",
                "regexp map r, line 2: non-numeric replacement index \"x\"",
                "regexp map r, line 2: bad replacement syntax: skipping this rule",
                "truncated macro reference: \"${1\"",
                "regexp map r, line 3: bad replacement syntax: skipping this rule",
            ]
        );
    }
}
