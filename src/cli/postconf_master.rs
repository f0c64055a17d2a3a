//! The master.cf modes of `postconf` (Postfix 3.7.11 `src/postconf/postconf_master.c`,
//! `postconf_edit.c`, `postconf_match.c`, `postconf_print.c`), byte for byte:
//!
//! * `-M [name[/type]…]` prints entries reformatted (columns at 0, 11, 17, 25, 33, 41, 49, 57,
//!   at least one space apart), `-f` folds at 80 columns with a 4-space indent, putting each
//!   `-o name=value` on its own line; `-F [name[/type[/field]]…]` prints
//!   `name/type/field = value`; `-P [name[/type[/parameter]]…]` prints
//!   `name/type/parameter = value` for the `-o` settings, sorted by name; `-x` expands
//!   `$name` in `-o` values (service's own `-o` settings first, then main.cf via the caller's
//!   expander);
//! * edits: `-M name/type='entry'` (replace, or append when absent), `-MX name/type`
//!   (remove), `-M# name/type` (comment out), `-F name/type/field=value`,
//!   `-P name/type/param=value`, `-PX name/type/param`. The file is copied with comments,
//!   blank lines and order kept, edited entries are reprinted folded, and the copy
//!   (`master.cf.tmp`) is renamed over master.cf.
//!
//! Reads `DIR/main.cf` (for the undefined/unused parameter warnings, see
//! [`crate::config::mastercf::check_parameters`]) and `DIR/master.cf`. Messages go to stderr
//! as `postconf: fatal: …` (exit 1) or `postconf: warning: …`.
//!
//! Known limits: no `-h` (hide names) here; Postfix prints undefined/unused warnings in hash
//! order (varies between runs), Postern in file order. Files are handled byte for byte
//! (read as Latin-1), so column widths count bytes as Postfix does.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use crate::config::error::strerror;
use crate::config::maincf;
use crate::config::mastercf::{
    self, EntryError, FIELD_NAMES, MasterService, check_parameters, option_takes_value,
    split_fields,
};
use crate::config::text::{self, Encoding};

/// Which master.cf view: `-M` entries, `-F` fields, `-P` parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MasterMode {
    #[default]
    M,
    F,
    P,
}

/// Show (None), or edit: `-e` (or a `name=value` argument), `-X`, `-#`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MasterEdit {
    #[default]
    None,
    Edit,
    Remove,
    CommentOut,
}

#[derive(Debug, Clone, Default)]
pub struct MasterArgs {
    pub config_dir: PathBuf,
    pub mode: MasterMode,
    pub edit: MasterEdit,
    /// `-f`
    pub fold: bool,
    /// `-x`
    pub expand: bool,
    /// The non-option arguments (filters, or edit requests).
    pub names: Vec<String>,
}

const LINE_LIMIT: usize = 80;
const INDENT: &str = "    ";
const INDENT_LEN: usize = 4;
const COLUMN_GOAL: [usize; 8] = [0, 11, 17, 25, 33, 41, 49, 57];

/// A fatal error: the text after `postconf: fatal: `.
struct Fatal(String);

thread_local! {
    /// Output of the current run, in order: (is stderr, bytes).
    static SINK: std::cell::RefCell<Vec<(bool, Vec<u8>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn emit(to_stderr: bool, text: &str) {
    let bytes = text::encode(text, Encoding::Latin1);
    SINK.with(|s| s.borrow_mut().push((to_stderr, bytes)));
}

/// Standard output of one run.
struct Out;

impl Out {
    fn put(&mut self, s: &str) {
        emit(false, s);
    }
    fn flush(&mut self) {}
}

fn warn(msg: &str) {
    emit(true, &format!("postconf: warning: {msg}\n"));
}

/// Byte length of Latin-1-decoded text.
fn blen(s: &str) -> usize {
    s.chars().count()
}

fn has_blank(s: &str) -> bool {
    s.contains([' ', '\t', '\r', '\n'])
}

/// Run a master.cf mode of postconf; returns the exit status. `expand` evaluates `$name`
/// in a value with main.cf's settings and Postfix's defaults.
pub fn run(args: &MasterArgs, expand: &dyn Fn(&str) -> Result<String, String>) -> i32 {
    let (code, chunks) = run_inner(args, expand);
    let mut o = std::io::stdout().lock();
    let mut e = std::io::stderr().lock();
    for (to_stderr, bytes) in chunks {
        if to_stderr {
            let _ = o.flush();
            let _ = e.write_all(&bytes);
        } else {
            let _ = o.write_all(&bytes);
        }
    }
    let _ = o.flush();
    code
}

/// Like [`run`], but returns (exit status, stdout bytes, stderr bytes) instead of printing.
pub fn run_capture(
    args: &MasterArgs,
    expand: &dyn Fn(&str) -> Result<String, String>,
) -> (i32, Vec<u8>, Vec<u8>) {
    let (code, chunks) = run_inner(args, expand);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for (to_stderr, bytes) in chunks {
        if to_stderr {
            err.extend(bytes);
        } else {
            out.extend(bytes);
        }
    }
    (code, out, err)
}

fn run_inner(
    args: &MasterArgs,
    expand: &dyn Fn(&str) -> Result<String, String>,
) -> (i32, Vec<(bool, Vec<u8>)>) {
    SINK.with(|s| s.borrow_mut().clear());
    let mut out = Out;
    let res = if args.edit == MasterEdit::None {
        show(args, expand, &mut out)
    } else {
        edit(args)
    };
    let code = match res {
        Ok(()) => 0,
        Err(Fatal(msg)) => {
            emit(true, &format!("postconf: fatal: {msg}\n"));
            1
        }
    };
    (code, SINK.with(|s| std::mem::take(&mut *s.borrow_mut())))
}

fn read_latin1(path: &Path) -> Result<String, std::io::Error> {
    // A master.cf that is a directory reads as empty, as Postfix's line reader ends at the
    // read error.
    let bytes = match std::fs::read(path) {
        Err(_) if path.is_dir() => Vec::new(),
        r => r?,
    };
    Ok(bytes.iter().map(|&b| b as char).collect())
}

/// A service pattern (Postfix `pcf_parse_service_pattern()`): split on `/` (empty parts
/// dropped), `min..=max` parts, `*` only alone, missing parts become `*`.
fn parse_service_pattern(pattern: &str, min: usize, max: usize) -> Option<Vec<String>> {
    if pattern.starts_with('/') {
        return None;
    }
    let mut parts: Vec<String> = pattern
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if parts.len() < min || parts.len() > max {
        return None;
    }
    if parts.iter().any(|p| p != "*" && p.contains('*')) {
        return None;
    }
    while parts.len() < max {
        parts.push("*".into());
    }
    Some(parts)
}

fn matches_service(pat: &[String], name: &str, kind: &str) -> bool {
    (pat[0] == "*" || pat[0] == name) && (pat[1] == "*" || pat[1] == kind)
}

/// `None` = the `*` wildcard.
fn parse_field_pattern(name: &str) -> Result<Option<usize>, Fatal> {
    if name == "*" {
        return Ok(None);
    }
    mastercf::field_index(name)
        .map(Some)
        .ok_or_else(|| Fatal(format!("invalid service attribute name: \"{name}\"")))
}

fn show(
    args: &MasterArgs,
    expand: &dyn Fn(&str) -> Result<String, String>,
    out: &mut Out,
) -> Result<(), Fatal> {
    let dir = &args.config_dir;
    let main_path = dir.join("main.cf");
    // main.cf errors are fatal here as in Postfix (which reads main.cf first); its
    // warnings are printed too.
    let main = maincf::read(&main_path).map_err(|e| Fatal(e.to_string()))?;
    for w in &main.warnings {
        warn(w);
    }
    let path = dir.join("master.cf");
    let text = read_latin1(&path)
        .map_err(|e| Fatal(format!("open {}: {}", path.display(), strerror(&e))))?;
    let master = match mastercf::parse_detailed(&text, &path) {
        Ok(m) => m,
        Err(e) => {
            for w in &e.warnings {
                warn(w);
            }
            return Err(Fatal(e.postfix_text()));
        }
    };
    for w in &master.warnings {
        warn(w);
    }
    let eval = |v: &str, local: Option<&IndexMap<String, String>>| match local {
        None => expand(v).unwrap_or_else(|_| v.to_string()),
        Some(l) => expand_in_scope(v, l, expand, 0),
    };
    let check = check_parameters(&main, &master, dir, &eval);
    for w in &check.undefined {
        warn(w);
    }

    let min_max = match args.mode {
        MasterMode::M => (1, 2),
        _ => (1, 3),
    };
    let mut reqs: Vec<(String, Vec<String>, Option<usize>, usize)> = Vec::new();
    for raw in &args.names {
        let Some(pat) = parse_service_pattern(raw, min_max.0, min_max.1) else {
            return Err(Fatal(
                match args.mode {
                    MasterMode::M => "-M option requires service_name[/type]",
                    MasterMode::F => "-F option requires service_name[/type[/field]]",
                    MasterMode::P => "-P option requires service_name[/type[/parameter]]",
                }
                .into(),
            ));
        };
        let field = if args.mode == MasterMode::F {
            parse_field_pattern(&pat[2])?
        } else {
            None
        };
        reqs.push((raw.clone(), pat, field, 0));
    }

    for svc in &master.services {
        let local = svc.params();
        // In a service's scope `$service_name` is that service's name.
        let mut scope = local.clone();
        scope
            .entry("service_name".to_string())
            .or_insert_with(|| svc.name.clone());
        let ex = |v: &str| expand_in_scope(v, &scope, expand, 0);
        let ex: Option<&dyn Fn(&str) -> String> = if args.expand { Some(&ex) } else { None };
        if reqs.is_empty() {
            match args.mode {
                MasterMode::M => print_entry(out, svc, args.fold, ex),
                MasterMode::F => {
                    for f in 0..8 {
                        print_field(out, svc, f, args.fold, ex);
                    }
                }
                MasterMode::P => print_params(out, svc, &local, None, args.fold, ex),
            }
            continue;
        }
        for (_, pat, field, count) in reqs.iter_mut() {
            if !matches_service(pat, &svc.name, &svc.kind) {
                continue;
            }
            match args.mode {
                MasterMode::M => {
                    *count += 1;
                    print_entry(out, svc, args.fold, ex);
                }
                MasterMode::F => {
                    *count += 1;
                    match field {
                        Some(f) => print_field(out, svc, *f, args.fold, ex),
                        None => {
                            for f in 0..8 {
                                print_field(out, svc, f, args.fold, ex);
                            }
                        }
                    }
                }
                MasterMode::P => {
                    if local.is_empty() {
                        continue;
                    }
                    if pat[2] == "*" {
                        *count += 1;
                        print_params(out, svc, &local, None, args.fold, ex);
                    } else if local.contains_key(&pat[2]) {
                        *count += 1;
                        print_params(out, svc, &local, Some(&pat[2]), args.fold, ex);
                    }
                }
            }
        }
    }
    out.flush();
    for (raw, _, _, count) in &reqs {
        if *count == 0 {
            warn(&format!("unmatched request: \"{raw}\""));
        }
    }
    for w in &check.unused_master {
        warn(w);
    }
    Ok(())
}

/// Expand `$name` in a service's scope: its own `-o` settings first, then main.cf and the
/// defaults through `global`. Undefined names expand to nothing.
fn expand_in_scope(
    value: &str,
    local: &IndexMap<String, String>,
    global: &dyn Fn(&str) -> Result<String, String>,
    depth: usize,
) -> String {
    let g = |v: &str| -> String {
        match global(v) {
            Ok(s) => s,
            Err(e) => {
                warn(&e);
                v.to_string()
            }
        }
    };
    if depth > 100
        || !mastercf::macro_names(value)
            .iter()
            .any(|n| local.contains_key(n))
    {
        return g(value);
    }
    let b = value.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    let mut lit = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        out.push_str(&value[lit..i]);
        let start = i;
        i += 1;
        match b.get(i) {
            Some(b'$') => {
                out.push('$');
                i += 1;
            }
            Some(&open @ (b'{' | b'(')) => {
                let close = if open == b'{' { b'}' } else { b')' };
                let mut level = 1usize;
                let mut j = i + 1;
                while j < b.len() {
                    if b[j] == open {
                        level += 1;
                    } else if b[j] == close {
                        level -= 1;
                        if level == 0 {
                            break;
                        }
                    }
                    j += 1;
                }
                let end = (j + 1).min(b.len());
                let inner = &value[i + 1..j.min(b.len())];
                let n = inner
                    .bytes()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                    .count();
                let (name, rest) = inner.split_at(n);
                match local.get(name) {
                    Some(v) if rest.is_empty() => {
                        out.push_str(&expand_in_scope(v, local, global, depth + 1))
                    }
                    Some(v) if rest.starts_with('?') || rest.starts_with(':') => {
                        let set = !v.is_empty();
                        let alt = rest[1..].trim_matches(|c| c == '{' || c == '}');
                        if rest.starts_with('?') == set {
                            if rest.starts_with('?') {
                                out.push_str(&expand_in_scope(alt, local, global, depth + 1));
                            } else {
                                out.push_str(&expand_in_scope(v, local, global, depth + 1));
                            }
                        } else if rest.starts_with(':') {
                            out.push_str(&expand_in_scope(alt, local, global, depth + 1));
                        }
                    }
                    _ => out.push_str(&g(&value[start..end])),
                }
                i = end;
            }
            Some(&c) if c.is_ascii_alphanumeric() || c == b'_' => {
                let n = b[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                let name = &value[i..i + n];
                match local.get(name) {
                    Some(v) => out.push_str(&expand_in_scope(v, local, global, depth + 1)),
                    None => out.push_str(&g(&value[start..i + n])),
                }
                i += n;
            }
            _ => out.push('$'),
        }
        lit = i;
    }
    out.push_str(&value[lit..]);
    out
}

/// Postfix `pcf_print_master_entry()`.
fn format_entry(svc: &MasterService, fold: bool, ex: Option<&dyn Fn(&str) -> String>) -> String {
    let mut s = String::new();
    let mut line_len = 0usize;
    for (i, f) in svc.fields().iter().enumerate() {
        if line_len > 0 {
            loop {
                s.push(' ');
                line_len += 1;
                if line_len >= COLUMN_GOAL[i] {
                    break;
                }
            }
        }
        s.push_str(f);
        line_len += blen(f);
    }
    format_args_into(&mut s, &mut line_len, &svc.args, fold, ex, 3);
    s.push('\n');
    s
}

/// The daemon options and arguments after the command, as Postfix prints them.
/// `value_extra` is the width added for `arg value` (3 for -M, 1 for -F, as in Postfix).
fn format_args_into(
    s: &mut String,
    line_len: &mut usize,
    args: &[String],
    fold: bool,
    ex: Option<&dyn Fn(&str) -> String>,
    value_extra: usize,
) {
    let mut in_opts = true;
    let mut k = 0;
    while k < args.len() {
        let arg = &args[k];
        let mut arg_len = blen(arg);
        let mut aval: Option<String> = None;
        let mut need_parens = false;
        if in_opts {
            if !arg.starts_with('-') || arg == "--" {
                in_opts = false;
            } else if option_takes_value(arg) && k + 1 < args.len() {
                *line_len = LINE_LIMIT;
                let mut v = args[k + 1].clone();
                if arg == "-o"
                    && let Some(f) = ex
                {
                    v = f(&v);
                }
                arg_len += blen(&v) + value_extra;
                need_parens = has_blank(&v);
                if need_parens {
                    arg_len += 2;
                }
                aval = Some(v);
            }
        } else {
            need_parens = has_blank(arg);
        }
        if *line_len > INDENT_LEN {
            if !fold || *line_len + 1 + arg_len < LINE_LIMIT {
                s.push(' ');
                *line_len += 1;
            } else {
                s.push('\n');
                s.push_str(INDENT);
                *line_len = INDENT_LEN;
            }
        }
        let parens_here = !in_opts && need_parens;
        if parens_here {
            s.push('{');
            *line_len += 1;
        }
        s.push_str(arg);
        *line_len += blen(arg);
        if parens_here {
            s.push('}');
            *line_len += 1;
        }
        if let Some(v) = aval {
            s.push(' ');
            *line_len += 1;
            if need_parens {
                s.push('{');
                *line_len += 1;
            }
            s.push_str(&v);
            *line_len += blen(&v);
            if need_parens {
                s.push('}');
                *line_len += 1;
            }
            k += 1;
            *line_len = LINE_LIMIT;
        }
        k += 1;
    }
}

fn print_entry(
    out: &mut Out,
    svc: &MasterService,
    fold: bool,
    ex: Option<&dyn Fn(&str) -> String>,
) {
    let s = format_entry(svc, fold, ex);
    out.put(&s);
}

/// Postfix `pcf_print_master_field()`.
fn print_field(
    out: &mut Out,
    svc: &MasterService,
    field: usize,
    fold: bool,
    ex: Option<&dyn Fn(&str) -> String>,
) {
    let fields = svc.fields();
    let value = fields[field];
    let mut s = format!("{}/{}/{} = ", svc.name, svc.kind, FIELD_NAMES[field]);
    let mut line_len = blen(&s);
    if line_len + blen(value) > LINE_LIMIT {
        s.push('\n');
        s.push_str(INDENT);
        line_len = INDENT_LEN;
    }
    s.push_str(value);
    line_len += blen(value);
    if field == 7 {
        format_args_into(&mut s, &mut line_len, &svc.args, fold, ex, 1);
    }
    s.push('\n');
    out.put(&s);
}

/// Postfix `pcf_print_line()`: words separated by single spaces, folded at 80 columns.
fn print_line(out: &mut Out, text: &str, fold: bool) {
    let mut s = String::new();
    let mut line_len = 0;
    for word in text
        .split([' ', '\t', '\r', '\n'])
        .filter(|w| !w.is_empty())
    {
        let wl = blen(word);
        if line_len > 0 {
            if !fold || line_len + wl < LINE_LIMIT {
                s.push(' ');
                line_len += 1;
            } else {
                s.push('\n');
                s.push_str(INDENT);
                line_len = INDENT_LEN;
            }
        }
        s.push_str(word);
        line_len += wl;
    }
    s.push('\n');
    out.put(&s);
}

fn print_params(
    out: &mut Out,
    svc: &MasterService,
    local: &IndexMap<String, String>,
    only: Option<&str>,
    fold: bool,
    ex: Option<&dyn Fn(&str) -> String>,
) {
    let mut names: Vec<&String> = match only {
        Some(n) => local.keys().filter(|k| k.as_str() == n).collect(),
        None => local.keys().collect(),
    };
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for n in names {
        let v = &local[n];
        let v = match ex {
            Some(f) => f(v),
            None => v.clone(),
        };
        print_line(
            out,
            &format!("{}/{}/{} = {}", svc.name, svc.kind, n, v),
            fold,
        );
    }
}

// ---------------------------------------------------------------------------------------
// Editing (Postfix pcf_edit_master()).

const EDIT_OPTS: &str = "-Me, -Fe, -Pe, -X, or -#";

struct EditReq {
    raw: String,
    pattern: Vec<String>,
    field: usize,
    value: String,
    count: usize,
}

fn is_cspace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// An entry as a Postfix argv, with the same checks and normalisation as a file entry.
fn parse_entry_argv(text: &str) -> Result<Vec<String>, EntryError> {
    let (svc, warnings) = mastercf::parse_entry(text)?;
    for w in &warnings {
        warn(w);
    }
    Ok(svc.argv())
}

fn argv_to_service(argv: &[String]) -> MasterService {
    let get = |i: usize| argv.get(i).cloned().unwrap_or_default();
    MasterService {
        name: get(0),
        kind: get(1),
        private: get(2),
        unpriv: get(3),
        chroot: get(4),
        wakeup: get(5),
        maxproc: get(6),
        command: get(7),
        args: argv.iter().skip(8).cloned().collect(),
        ..Default::default()
    }
}

/// Parse a whole entry for -M edits: `bad field count: "RAW"`, or Postfix's field error.
fn parse_tentative(value: &str, raw: &str) -> Result<Vec<String>, Fatal> {
    match parse_entry_argv(value) {
        Ok(a) => Ok(a),
        Err(EntryError::BadFieldCount) => Err(Fatal(format!("bad field count: \"{raw}\""))),
        Err(e) => Err(Fatal(e.message())),
    }
}

fn edit(args: &MasterArgs) -> Result<(), Fatal> {
    let edit_mode = args.edit;
    let mut reqs: Vec<EditReq> = Vec::new();
    for raw in &args.names {
        if raw.contains('\n') {
            return Err(Fatal(format!("{EDIT_OPTS} accept no multi-line input")));
        }
        let cp = raw.trim_start_matches(is_cspace);
        if cp.starts_with('#') {
            return Err(Fatal(format!("{EDIT_OPTS} accept no comment input")));
        }
        let (pattern, value) = if edit_mode == MasterEdit::Edit {
            match maincf::split_nameval(cp) {
                Ok((p, v)) => (p, v),
                Err(e) => return Err(Fatal(format!("{e}: \"{raw}\""))),
            }
        } else {
            if cp.contains('=') {
                return Err(Fatal("-X or -# requires names without value".into()));
            }
            (cp.trim_end_matches(is_cspace).to_string(), String::new())
        };
        let mut field = 0;
        let pat = match args.mode {
            MasterMode::M => parse_service_pattern(&pattern, 2, 2)
                .ok_or_else(|| Fatal("-Me, -MX or -M# requires service_name/type".into()))?,
            MasterMode::F => {
                let pat = parse_service_pattern(&pattern, 3, 3).ok_or_else(|| {
                    Fatal("-Fe or -FX requires service_name/type/field_name".into())
                })?;
                match parse_field_pattern(&pat[2])? {
                    None => return Err(Fatal("-Fe does not accept wild-card field name".into())),
                    Some(f) => field = f,
                }
                if edit_mode == MasterEdit::Edit && field < 7 && has_blank(&value) {
                    return Err(Fatal(
                        "-Fe does not accept whitespace in non-command field".into(),
                    ));
                }
                pat
            }
            MasterMode::P => {
                let pat = parse_service_pattern(&pattern, 3, 3).ok_or_else(|| {
                    Fatal("-Pe or -PX requires service_name/type/parameter".into())
                })?;
                if pat[2] == "*" {
                    return Err(Fatal("-Pe does not accept wild-card parameter name".into()));
                }
                if edit_mode == MasterEdit::Edit && has_blank(&value) {
                    return Err(Fatal(
                        "-Pe does not accept whitespace in parameter value".into(),
                    ));
                }
                pat
            }
        };
        reqs.push(EditReq {
            raw: raw.clone(),
            pattern: pat,
            field,
            value,
            count: 0,
        });
    }

    let path = args.config_dir.join("master.cf");
    let src = read_latin1(&path).map_err(|e| {
        Fatal(format!(
            "open {} for reading: {}",
            path.display(),
            strerror(&e)
        ))
    })?;
    // Physical lines, each ending in a newline (one is added to a last line without).
    let lines: Vec<String> = src
        .split_inclusive('\n')
        .map(|l| {
            if l.ends_with('\n') {
                l.to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let content = |l: &str| -> bool {
        let t = l.trim_start_matches(is_cspace);
        !(t.is_empty() || t.starts_with('#'))
    };

    let mut dst = String::new();
    let mut matched = false;
    let mut lineno = 0usize;
    let mut idx = 0;
    while idx < lines.len() {
        let line = &lines[idx];
        idx += 1;
        lineno += 1;
        if !content(line) {
            dst.push_str(line);
            continue;
        }
        if line.starts_with(is_cspace) {
            if !matched {
                dst.push_str(line);
            } else if edit_mode == MasterEdit::CommentOut {
                dst.push('#');
                dst.push_str(line);
            }
            continue;
        }
        matched = false;
        let mut toks = line
            .split([' ', '\t', '\r', '\n'])
            .filter(|t| !t.is_empty());
        let (Some(name), Some(kind)) = (toks.next(), toks.next()) else {
            return Err(Fatal(format!(
                "file {}: line {lineno}: specify service name and type on the same line",
                path.display()
            )));
        };
        if name.contains('=') {
            return Err(Fatal(format!(
                "file {}: line {lineno}: service name syntax \"{name}\" is unsupported with {EDIT_OPTS}",
                path.display()
            )));
        }
        if kind.contains(['=', '/']) {
            return Err(Fatal(format!(
                "file {}: line {lineno}: service type syntax \"{kind}\" is unsupported with {EDIT_OPTS}",
                path.display()
            )));
        }
        let (name, kind) = (name.to_string(), kind.to_string());
        let mut new_entry: Option<Vec<String>> = None;
        for req in reqs.iter_mut() {
            let tentative = if args.mode == MasterMode::M && edit_mode == MasterEdit::Edit {
                Some(parse_tentative(&req.value, &req.raw)?)
            } else {
                None
            };
            let mut use_tentative = false;
            if matches_service(&req.pattern, &name, &kind) {
                matched = true;
                req.count += 1;
                let param_remove = args.mode == MasterMode::P && edit_mode == MasterEdit::Remove;
                if edit_mode == MasterEdit::Edit || param_remove {
                    match args.mode {
                        MasterMode::F | MasterMode::P => {
                            if new_entry.is_none() {
                                // Gobble continuation lines; pass comments through.
                                let mut full = line.clone();
                                while idx < lines.len() {
                                    let next = &lines[idx];
                                    let c = next.chars().next().unwrap_or('\n');
                                    if c != '#' && !is_cspace(c) {
                                        break;
                                    }
                                    idx += 1;
                                    if content(next) {
                                        full.push_str(next);
                                    } else {
                                        dst.push_str(next);
                                    }
                                }
                                let argv = match parse_entry_argv(&full) {
                                    Ok(a) => a,
                                    Err(EntryError::BadFieldCount) => {
                                        return Err(Fatal(format!(
                                            "file {}: line {lineno}: bad field count",
                                            path.display()
                                        )));
                                    }
                                    Err(e) => return Err(Fatal(e.message())),
                                };
                                new_entry = Some(argv);
                            }
                            if let Some(argv) = new_entry.as_mut() {
                                if args.mode == MasterMode::F {
                                    edit_field(argv, req.field, &req.value)?;
                                } else {
                                    edit_param(argv, edit_mode, &req.pattern[2], &req.value);
                                }
                            }
                        }
                        MasterMode::M => {
                            if req.count == 1 {
                                use_tentative = true;
                            }
                        }
                    }
                }
            } else if let Some(t) = tentative.as_ref()
                && t.len() >= 2
                && matches_service(&t[..2], &name, &kind)
            {
                matched = true;
                req.count += 1;
                if req.count == 1 {
                    use_tentative = true;
                }
            }
            if use_tentative && let Some(t) = tentative {
                new_entry = Some(t);
            }
        }
        if let Some(argv) = new_entry.take() {
            dst.push_str(&format_entry(&argv_to_service(&argv), true, None));
        } else if !matched {
            dst.push_str(line);
        } else if edit_mode == MasterEdit::CommentOut {
            dst.push('#');
            dst.push_str(line);
        }
    }
    for req in &reqs {
        if req.count == 0 {
            if args.mode == MasterMode::M && edit_mode == MasterEdit::Edit {
                let argv = parse_tentative(&req.value, &req.raw)?;
                dst.push_str(&format_entry(&argv_to_service(&argv), true, None));
            } else if args.mode != MasterMode::M {
                warn(&format!("unmatched service_name/type: \"{}\"", req.raw));
            }
        }
    }
    write_replace(&path, &dst)
}

/// Postfix `pcf_edit_master_field()`.
fn edit_field(argv: &mut Vec<String>, field: usize, value: &str) -> Result<(), Fatal> {
    if field == 7 {
        argv.truncate(7);
        argv.extend(split_fields(value));
        let warnings = mastercf::normalize_daemon_args(argv);
        for w in &warnings {
            warn(w);
        }
    } else if field < argv.len() {
        argv[field] = value.to_string();
    }
    // Postfix re-checks the fields, quoting the new value as the entry text.
    let entry = value.to_string();
    if argv.len() >= 8 {
        let text = argv.join(" ");
        if let Err(e) = mastercf::parse_entry(&text) {
            return Err(Fatal(match e {
                EntryError::InvalidField { field, value, .. } => {
                    format!("invalid {field} field \"{value}\" in \"{entry}\"")
                }
                other => other.message(),
            }));
        }
    }
    Ok(())
}

/// Postfix `pcf_edit_master_param()`.
fn edit_param(argv: &mut Vec<String>, mode: MasterEdit, name: &str, value: &str) {
    let mut matched = false;
    let prefix = format!("{name}=");
    let mut field = 8;
    while field < argv.len() {
        let arg = argv[field].clone();
        if !arg.starts_with('-') || arg == "--" {
            break;
        }
        if option_takes_value(&arg) && field + 1 < argv.len() {
            if arg == "-o" && argv[field + 1].starts_with(&prefix) {
                matched = true;
                match mode {
                    MasterEdit::Edit => argv[field + 1] = format!("{name}={value}"),
                    _ => {
                        argv.drain(field..field + 2);
                        continue;
                    }
                }
            }
            field += 1;
        }
        field += 1;
    }
    if mode == MasterEdit::Edit && !matched {
        let at = field.min(argv.len());
        argv.insert(at, "-o".into());
        argv.insert(at + 1, format!("{name}={value}"));
    }
}

/// Write the new text to `master.cf.tmp` and rename it into place.
fn write_replace(path: &Path, text: &str) -> Result<(), Fatal> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(&text::encode(text, Encoding::Latin1))?;
        f.sync_all()?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Fatal(format!("open {}: {}", tmp.display(), strerror(&e))));
    }
    std::fs::rename(&tmp, path)
        .map_err(|e| Fatal(format!("close {}.tmp: {}", path.display(), strerror(&e))))
}

/// A `HashMap` view of a service's `-o` settings (for callers expanding in its scope).
pub fn service_scope(svc: &MasterService) -> HashMap<String, String> {
    mastercf::local_scope(svc)
}

/// The text `postconf -M` prints for one service (no folding, no expansion).
pub fn format_service(svc: &MasterService, fold: bool) -> String {
    format_entry(svc, fold, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(text: &str) -> MasterService {
        mastercf::parse_entry(text).unwrap().0
    }

    #[test]
    fn columns() {
        assert_eq!(
            format_service(&svc("smtp inet n - y - - smtpd"), false),
            "smtp       inet  n       -       y       -       -       smtpd\n"
        );
        assert_eq!(
            format_service(&svc("postlog unix-dgram n - n - 1 postlogd"), false),
            "postlog    unix-dgram n  -       n       -       1       postlogd\n"
        );
    }

    #[test]
    fn folding() {
        assert_eq!(
            format_service(
                &svc("submission inet n - n - - smtpd -v -o a=b -o {c = d e}"),
                true
            ),
            "submission inet  n       -       n       -       -       smtpd -v\n    -o a=b\n    -o {c=d e}\n"
        );
    }

    #[test]
    fn patterns() {
        assert_eq!(
            parse_service_pattern("smtp", 1, 2),
            Some(vec!["smtp".into(), "*".into()])
        );
        assert_eq!(parse_service_pattern("/x", 1, 2), None);
        assert_eq!(parse_service_pattern("a*", 1, 2), None);
        assert_eq!(
            parse_service_pattern("smtp//command", 1, 3),
            Some(vec!["smtp".into(), "command".into(), "*".into()])
        );
    }

    #[test]
    fn param_edit() {
        let mut a = svc("smtp inet n - n - - smtpd -o a=1 x").argv();
        edit_param(&mut a, MasterEdit::Edit, "b", "2");
        assert_eq!(a[8..], ["-o", "a=1", "-o", "b=2", "x"]);
        edit_param(&mut a, MasterEdit::Remove, "a", "");
        assert_eq!(a[8..], ["-o", "b=2", "x"]);
    }
}
