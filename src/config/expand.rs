//! `$name` expansion with Postfix's rules (`mac_parse.c`, `mac_expand.c`, 3.7 behaviour as
//! observed with the real `postconf`; cases in the tests below and in `tests/postconf.rs`):
//!
//! * `$name`, `${name}`, `$(name)`: the value (empty if undefined), expanded again when
//!   expanding recursively;
//! * `${name?text}`, `${name?{text}}`: `text` when `name` is non-empty, else empty;
//! * `${name:text}`, `${name:{text}}`: `text` when `name` is empty or undefined;
//! * `${name?{t}:{f}}`, `${name?{t}:f}`: the ternary form;
//! * `${{a} OP {b} ? {t} : {f}}` with `==`, `!=`, `<`, `<=`, `>=`, `>` (numeric when both
//!   sides are integers, else a byte comparison) and `==level`, `!=level`, `<level`,
//!   `<=level`, `>=level`, `>level` (compatibility levels `major[.minor[.patch]]`);
//!   a logical expression alone evaluates to `true` or empty;
//! * `$$` is a literal `$`;
//! * nesting deeper than 100 calls is `unreasonable macro call nesting`.
//!
//! Errors are reported as Postfix words its warnings; any error makes the expansion fail
//! (postconf then stops with `fatal: macro processing error`).

/// How a name is looked up: plain use, or a `?`/`:` test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Use,
    Test,
}

/// The outcome of an expansion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    pub value: String,
    /// Warnings as Postfix prints them (without the program prefix).
    pub warnings: Vec<String>,
    /// A syntax error or runaway nesting happened.
    pub error: bool,
    /// Some name was expanded but not defined.
    pub undefined: bool,
}

const WS: &[char] = &[' ', '\t', '\r', '\n'];

struct Ctx<'a> {
    lookup: &'a dyn Fn(&str, Mode) -> Option<String>,
    recurse: bool,
    scan: bool,
    out: Expansion,
    level: usize,
}

/// Expand `pattern`. `lookup` returns a name's raw value (`None` when undefined).
/// With `recurse`, looked-up values are expanded in turn (postconf `-x`).
pub fn expand(
    pattern: &str,
    lookup: &dyn Fn(&str, Mode) -> Option<String>,
    recurse: bool,
) -> Expansion {
    let mut c = Ctx {
        lookup,
        recurse,
        scan: false,
        out: Expansion::default(),
        level: 0,
    };
    let mut result = String::new();
    parse(&mut c, pattern, &mut result);
    c.out.value = result;
    c.out
}

/// Every name a pattern refers to, including names inside conditional branches that would
/// not be taken (Postfix `MAC_EXP_FLAG_SCAN`). Syntax errors yield what was found so far.
pub fn referenced_names(pattern: &str) -> Vec<String> {
    scan(pattern).0
}

/// [`referenced_names`] and the warnings the scan gives (Postfix prints them for every
/// main.cf and master.cf value it scans, whatever the parameter). Linear in the size of
/// the pattern: names are deduplicated with a set, not by searching the list.
pub fn scan(pattern: &str) -> (Vec<String>, Vec<String>) {
    let names = std::cell::RefCell::new((
        Vec::<String>::new(),
        std::collections::HashSet::<String>::new(),
    ));
    let lookup = |n: &str, _m: Mode| {
        let mut v = names.borrow_mut();
        if !v.1.contains(n) {
            v.1.insert(n.to_string());
            v.0.push(n.to_string());
        }
        None
    };
    let mut c = Ctx {
        lookup: &lookup,
        recurse: false,
        scan: true,
        out: Expansion::default(),
        level: 0,
    };
    let mut sink = String::new();
    parse(&mut c, pattern, &mut sink);
    let warnings = c.out.warnings;
    (names.into_inner().0, warnings)
}

/// mac_parse(): split literal text from `$…` references.
fn parse(c: &mut Ctx, pattern: &str, result: &mut String) {
    let b = pattern.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if c.out.error {
            return;
        }
        if b[i] != b'$' {
            let start = i;
            while i < b.len() && b[i] != b'$' {
                i += 1;
            }
            // mac_expand_callback() checks the nesting for literal text too: a chain of
            // 100 references ending in a plain value is one call too deep.
            if c.level > 100 {
                err(
                    c,
                    format!(
                        "unreasonable macro call nesting: \"{}\"",
                        &pattern[start..i]
                    ),
                );
                return;
            }
            if !c.scan {
                result.push_str(&pattern[start..i]);
            }
            continue;
        }
        i += 1;
        match b.get(i) {
            Some(b'$') => {
                if !c.scan {
                    result.push('$');
                }
                i += 1;
            }
            Some(&open @ (b'{' | b'(')) => {
                let close = if open == b'{' { b'}' } else { b')' };
                let start = i + 1;
                let mut level = 1;
                let mut j = start;
                loop {
                    match b.get(j) {
                        None => {
                            c.out
                                .warnings
                                .push(format!("truncated macro reference: \"{pattern}\""));
                            c.out.error = true;
                            return;
                        }
                        Some(&ch) if ch == open => level += 1,
                        Some(&ch) if ch == close => {
                            level -= 1;
                            if level == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                let inner = &pattern[start..j];
                i = j + 1;
                if inner.trim_matches(WS).is_empty() {
                    c.out
                        .warnings
                        .push(format!("empty macro name: \"{pattern}\""));
                    c.out.error = true;
                    return;
                }
                callback(c, inner, result);
            }
            _ => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if i == start {
                    c.out
                        .warnings
                        .push(format!("empty macro name: \"{pattern}\""));
                    c.out.error = true;
                    return;
                }
                let name = &pattern[start..i];
                callback(c, name, result);
            }
        }
    }
}

/// Skip white space; if a `{` follows, return the index of it.
fn find_left_curly(s: &str) -> Option<usize> {
    let t = s.trim_start_matches(WS);
    if t.starts_with('{') {
        Some(s.len() - t.len())
    } else {
        None
    }
}

/// Extract the payload of `{…}` starting at `s` (which begins with `{`): returns (payload,
/// rest after trailing white space).
fn curly_payload<'a>(c: &mut Ctx, s: &'a str) -> Option<(&'a str, &'a str)> {
    let b = s.as_bytes();
    let mut level = 0;
    for (j, &ch) in b.iter().enumerate() {
        if ch == b'{' {
            level += 1;
        } else if ch == b'}' {
            level -= 1;
            if level == 0 {
                let payload = &s[1..j];
                let rest = s[j + 1..].trim_start_matches(WS);
                return Some((payload, rest));
            }
        }
    }
    c.out
        .warnings
        .push(format!("unbalanced {{}} in attribute expression: \"{s}\""));
    c.out.error = true;
    None
}

fn first20(s: &str) -> &str {
    let mut end = s.len().min(20);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn err(c: &mut Ctx, msg: String) {
    c.out.warnings.push(msg);
    c.out.error = true;
}

/// Expand a sub-pattern into a fresh string (operands of logical expressions).
fn expand_sub(c: &mut Ctx, s: &str) -> String {
    let mut r = String::new();
    parse(c, s, &mut r);
    r
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Ge,
    Gt,
}

fn parse_level(s: &str) -> Option<Vec<u64>> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let mut v = Vec::new();
    for p in parts {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.push(p.parse().ok()?);
    }
    while v.len() < 3 {
        v.push(0);
    }
    Some(v)
}

fn parse_int(s: &str) -> Option<i128> {
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `{left} OP {right}`: returns the truth value and the rest of the text.
fn logical<'a>(c: &mut Ctx, s: &'a str) -> Option<(bool, &'a str)> {
    let (left, rest) = curly_payload(c, s)?;
    let op_len = rest
        .bytes()
        .take_while(|b| b"<>!=?+-*/~&|%".contains(b))
        .count();
    let op_str = &rest[..op_len];
    let mut after = &rest[op_len..];
    let is_level = after.starts_with("level");
    if is_level {
        after = &after[5..];
    }
    let op = match op_str {
        "==" => Some(Op::Eq),
        "!=" => Some(Op::Ne),
        "<" => Some(Op::Lt),
        "<=" => Some(Op::Le),
        ">=" => Some(Op::Ge),
        ">" => Some(Op::Gt),
        _ => None,
    };
    let Some(op) = op else {
        err(
            c,
            format!(
                "\"==\" or \"!=\"\" or \"<\"\" or \"<=\"\" or \">=\"\" or \">\" expected at: \"...{left}}}>>>{}\"",
                first20(rest)
            ),
        );
        return None;
    };
    let Some(k) = find_left_curly(after) else {
        let shown = if is_level {
            format!("{op_str}level")
        } else {
            op_str.to_string()
        };
        err(
            c,
            format!(
                "\"{{expression}}\" expected at: \"...{{{left}}} {shown}>>>{}\"",
                first20(after)
            ),
        );
        return None;
    };
    let (right, rest) = curly_payload(c, &after[k..])?;
    let l = expand_sub(c, left);
    let r = expand_sub(c, right);
    if c.out.error {
        return None;
    }
    // A scan only collects names: operands are empty then, and not compared.
    if c.scan {
        return Some((true, rest));
    }
    let ord = if is_level {
        let lv = parse_level(&l);
        let rv = parse_level(&r);
        match (lv, rv) {
            (Some(a), Some(b)) => a.cmp(&b),
            (None, _) => {
                err(c, format!("malformed compatibility level syntax: \"{l}\""));
                return None;
            }
            (_, None) => {
                err(c, format!("malformed compatibility level syntax: \"{r}\""));
                return None;
            }
        }
    } else {
        match (op, parse_int(&l), parse_int(&r)) {
            (Op::Eq | Op::Ne, _, _) => l.as_bytes().cmp(r.as_bytes()),
            (_, Some(a), Some(b)) => a.cmp(&b),
            _ => l.as_bytes().cmp(r.as_bytes()),
        }
    };
    use std::cmp::Ordering::*;
    let truth = match op {
        Op::Eq => ord == Equal,
        Op::Ne => ord != Equal,
        Op::Lt => ord == Less,
        Op::Le => ord != Greater,
        Op::Ge => ord != Less,
        Op::Gt => ord == Greater,
    };
    Some((truth, rest))
}

/// The `:text` / `:{text}` operand: expanded when the tested value is empty (always parsed
/// in scan mode); garbage after it is an error.
fn false_branch(c: &mut Ctx, rest: &str, nonempty: bool, result: &mut String) {
    let (iffalse, rest) = match find_left_curly(rest) {
        Some(k) => match curly_payload(c, &rest[k..]) {
            Some(pr) => pr,
            None => return,
        },
        None => (rest, ""),
    };
    if !nonempty || c.scan {
        parse(c, iffalse, result);
    }
    if !rest.is_empty() {
        err(
            c,
            format!(
                "unexpected input at: \"...{iffalse}}}>>>{}\"",
                first20(rest)
            ),
        );
    }
}

/// mac_expand_callback(): one `${…}` payload or `$name`.
fn callback(c: &mut Ctx, payload: &str, result: &mut String) {
    c.level += 1;
    if c.level > 101 {
        err(c, format!("unreasonable macro call nesting: \"{payload}\""));
    }
    if c.out.error {
        c.level -= 1;
        return;
    }
    run_callback(c, payload, result);
    c.level -= 1;
}

fn run_callback(c: &mut Ctx, payload: &str, result: &mut String) {
    // Value of the name or logical expression; None = undefined.
    let lookup: Option<String>;
    let op: Option<char>;
    let mut rest: &str;
    if let Some(k) = find_left_curly(payload) {
        let Some((truth, r)) = logical(c, &payload[k..]) else {
            return;
        };
        lookup = Some(if truth { "true".into() } else { String::new() });
        match r.chars().next() {
            None => {
                op = None;
                rest = "";
            }
            Some(ch @ ('?' | ':')) => {
                op = Some(ch);
                rest = &r[1..];
            }
            Some(_) => {
                err(
                    c,
                    format!("\"?\" or \":\" expected at: \"...}}>>>{}\"", first20(r)),
                );
                return;
            }
        }
    } else {
        let t = payload.trim_start_matches(WS);
        let end = t.find(['?', ':']).unwrap_or(t.len());
        let name = t[..end].trim_end_matches(WS);
        if let Some(bad) = name.find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')) {
            err(
                c,
                format!(
                    "attribute name syntax error at: \"...{}>>>{}\"",
                    &name[..bad],
                    first20(&t[bad..])
                ),
            );
            return;
        }
        if end < t.len() {
            op = t[end..].chars().next();
            rest = &t[end + 1..];
        } else {
            op = None;
            rest = "";
        }
        let mode = if op.is_some() { Mode::Test } else { Mode::Use };
        lookup = (c.lookup)(name, mode);
    }
    let nonempty = lookup.as_deref().is_some_and(|v| !v.is_empty());
    if op == Some('?') {
        let iftrue;
        if let Some(k) = find_left_curly(rest) {
            let Some((p, r)) = curly_payload(c, &rest[k..]) else {
                return;
            };
            iftrue = p;
            rest = r;
        } else {
            iftrue = rest;
            rest = "";
        }
        if nonempty || c.scan {
            parse(c, iftrue, result);
        }
        if rest.is_empty() {
            return;
        }
        if !rest.starts_with(':') {
            err(
                c,
                format!("\":\" expected at: \"...{iftrue}}}>>>{}\"", first20(rest)),
            );
            return;
        }
        // Postfix falls through to the ':' branch here.
        false_branch(c, &rest[1..], nonempty, result);
        return;
    }
    if op == Some(':') {
        false_branch(c, rest, nonempty, result);
        return;
    }
    match lookup {
        None => c.out.undefined = true,
        Some(v) if v.is_empty() || c.scan => {}
        Some(v) => {
            if c.recurse {
                parse(c, &v, result);
            } else {
                result.push_str(&v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ex(p: &str) -> Expansion {
        let mut t: HashMap<&str, &str> = HashMap::new();
        t.insert("mail_name", "Postfix");
        t.insert("empty", "");
        t.insert("compatibility_level", "0");
        t.insert("loop", "$loop");
        t.insert("a", "$b");
        t.insert("b", "B");
        let f = move |n: &str, _m: Mode| t.get(n).map(|s| s.to_string());
        expand(p, &f, true)
    }

    #[test]
    fn observed_postfix_37_results() {
        // Each right-hand side was printed by Postfix 3.7.11's `postconf -hx`.
        let cases = [
            (
                "${undef?yes}|${mail_name?yes}|${undef:no}|${mail_name:no}|$$|${mail_name?{a}:{b}}|${undef?{a}:{b}}|$(mail_name)",
                "|yes|no||$|a|b|Postfix",
            ),
            (
                "${{$compatibility_level} <level {1} ? {old} : {new}}|${{a} == {a} ? {eq}}|${{2} < {10} ? {lt} : {ge}}",
                "old|eq|lt",
            ),
            ("${{abc} < {def} ? {lt} : {ge}}", "lt"),
            ("${{3.7} <=level {3.6} ? {a} : {b}}", "b"),
            ("${{3.10} >level {3.9} ? {a} : {b}}", "a"),
            ("${{1} ==level {1.0} ? {a} : {b}}", "a"),
            ("${ mail_name }", "Postfix"),
            ("${mail_name?x?y}", "x?y"),
            ("${mail_name?{x} : {y}}", "x"),
            ("${undef?{x} : {y}}", "y"),
            ("${{a}=={a}}", "true"),
            ("{$mail_name}", "{Postfix}"),
            ("$mail_name$$x$9a", "Postfix$x"),
            ("${{ 0x10} > {9} ? {a} : {b}}", "b"),
            ("${{-1} < {0} ? {a}:{b}}", "a"),
            ("$a", "B"),
        ];
        for (p, want) in cases {
            let e = ex(p);
            assert!(!e.error, "{p}: {:?}", e.warnings);
            assert_eq!(e.value, want, "{p}");
        }
    }

    #[test]
    fn observed_postfix_37_errors() {
        let cases = [
            (
                "${{x} <level {1} ? {a} : {b}}",
                "malformed compatibility level syntax: \"x\"",
            ),
            (
                "${mail_name:{x}:{y}}",
                "unexpected input at: \"...x}>>>:{y}\"",
            ),
            ("$", "empty macro name: \"$\""),
            ("a$", "empty macro name: \"a$\""),
            ("$ x $- y", "empty macro name: \"$ x $- y\""),
            ("${mail_name", "truncated macro reference: \"${mail_name\""),
            (
                "$(mail_name}",
                "truncated macro reference: \"$(mail_name}\"",
            ),
            (
                "${{a} = {a}}",
                "\"==\" or \"!=\"\" or \"<\"\" or \"<=\"\" or \">=\"\" or \">\" expected at: \"...a}>>>= {a}\"",
            ),
            (
                "${{a} == {a} x}",
                "\"?\" or \":\" expected at: \"...}>>>x\"",
            ),
            (
                "${{a} == {a} ? {x} : {y} z}",
                "unexpected input at: \"...y}>>>z\"",
            ),
            (
                "${{a} == b}",
                "\"{expression}\" expected at: \"...{a} ==>>> b\"",
            ),
            (
                "${mail_name!x}",
                "attribute name syntax error at: \"...mail_name>>>!x\"",
            ),
            ("$loop", "unreasonable macro call nesting: \"loop\""),
        ];
        for (p, want) in cases {
            let e = ex(p);
            assert!(e.error, "{p}");
            assert_eq!(e.warnings.first().map(String::as_str), Some(want), "{p}");
        }
    }

    #[test]
    fn scan_finds_all_branches() {
        assert_eq!(
            referenced_names("$undefx ${mail_name?$undefy} ${x:{$z}}"),
            vec!["undefx", "mail_name", "undefy", "x", "z"]
        );
    }
}
