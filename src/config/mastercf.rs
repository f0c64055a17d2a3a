//! Postfix `master.cf`: the pest grammar in `mastercf.pest`, logical lines as Postfix's
//! `readllines()` builds them, fields as `argv_splitq()` splits them, and the checks and
//! normalisation of Postfix 3.7's `postconf` (`src/postconf/postconf_master.c`:
//! `pcf_parse_master_entry()`, `pcf_check_master_entry()`, `pcf_normalize_daemon_args()`).
//!
//! Behaviour (checked against Postfix 3.7.11's `postconf -M`, see
//! `compat-fixtures/mastercf-cases/`):
//! * comments (`#` as the first non-blank character), blank lines and continuation lines
//!   (starting with white space, also across comment and blank lines) as in main.cf; the
//!   pieces are joined without the newline. A logical line that starts with white space is
//!   skipped with `FILE: logical line must not start with whitespace: "<first 30 chars>..."`;
//! * fields are separated by space, tab, CR or LF, except inside `{ … }`; a `}` with no open
//!   `{` is an ordinary character and an unclosed `{` runs to the end of the entry;
//! * fewer than 8 fields: `file FILE: line N: bad field count` (N = first physical line);
//!   `type` must be `inet`, `unix`, `unix-dgram`, `fifo` or `pass`; `private`, `unpriv`,
//!   `chroot` one of `y`, `n`, `-`; `wakeup` `-` or digits, optionally followed by `?`;
//!   `maxproc` `-` or digits. Postfix words these as `invalid type field "X" in "ENTRY"`
//!   without file or line; [`EntryError::postfix_text`] gives that wording, while
//!   [`ConfigError`] (from [`parse`]) adds file and line;
//! * daemon options (arguments up to the first one not starting with `-`, or `--`) are
//!   normalised: `-oname=value` becomes `-o` `name=value`, `-vostuff` becomes `-v` `-ostuff`,
//!   a `{ … }` value loses its braces and surrounding blanks and, after `-o`, becomes
//!   `name=value` (Postfix `split_nameval()`: `-o { name = value }` → `name=value`). A lone
//!   `-` counts as an option that takes a value (a Postfix quirk kept for identical output).
//!   Later `{ … }` arguments lose their braces too. Brace errors are warnings, worded
//!   `master.cf: missing '}' in "{…"` / `master.cf: syntax error after '}' in "{…}x"`.
//!
//! Service-defined parameters ([`service_parameters`], Postfix `postconf_service.c`): each
//! service whose command is exactly `local`, `error`, `virtual`, `smtp`, `lmtp` or `pipe`
//! gets `SERVICE_<suffix>` for each of [`params::TRANSPORT_PARAM_SUFFIXES`] (default
//! `$default_…`), `pipe` also `SERVICE_time_limit = $command_time_limit`, and `spawn` only
//! `SERVICE_time_limit`. Names that already are built-in parameters (for example
//! `local_destination_concurrency_limit`) keep their built-in default and are not listed.
//!
//! "Used" parameters (Postfix `postconf_user.c`, `postconf_unused.c`; see [`check_parameters`]):
//! * each service has its own name space: the `-o name=value` daemon options (the last
//!   setting of a name wins; `-o` after the first non-option argument or `--` does not count);
//! * a user-defined name (not built-in, not service-defined) is valid when a `name=value`
//!   exists for it and either the name is listed in `smtpd_restriction_classes` (in main.cf,
//!   or in the same service's `-o`), or `$name`/`${name}`/`$(name)` (also inside
//!   `${x?…}`/`${x:…}`) appears in a scanned value: a main.cf value, a master.cf `-o` value,
//!   or the default of a built-in parameter that main.cf leaves unset. Values of the "raw"
//!   parameters ([`params::RAW`]) are not scanned. A reference validates the service's own
//!   `-o` setting first, else the main.cf setting; references from main.cf also validate
//!   `-o` settings of every service;
//! * command arguments (`pipe … argv=… ${recipient}`) are **not** scanned;
//! * a referenced name with no setting anywhere and no built-in definition gives
//!   `DIR/FILE: undefined parameter: NAME`; an `-o` setting that is not valid gives
//!   `DIR/master.cf: unused parameter: NAME=VALUE`.
//!
//! Database client tables (Postfix 3.7.11 `postconf_dbms.c`, see [`check_parameters`]): the
//! value of each built-in or service parameter set in main.cf or with `-o` is expanded
//! (`$name`, in the service's scope) and split like a list; `{ … }` groups are opened (a
//! brace error is a warning: `main.cf: syntax error after '}' in "{…}x"`, or
//! `master.cf:SERVICE/TYPE: …`), `proxy:` is skipped; `ldap|mysql|pgsql|sqlite|memcache:/FILE`
//! is read once per run (`open "mysql" configuration "FILE": …` when it cannot be opened,
//! `TYPE:FILE: unused parameter: NAME=VALUE` for names the client does not read), and
//! `TYPE:NAME` makes `NAME_SUFFIX` legacy parameters valid.
//!
//! Known limits: Postfix prints the undefined/unused warnings in hash table order, which
//! varies from run to run, while Postern prints them in file order; a database file with a
//! line without `=` stops Postfix (`fatal`), Postern skips the file.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use pest::Parser;
use pest_derive::Parser;

use super::ConfigError;
use super::maincf::{self, MainCf};
use super::params;
use super::text::{self, Encoding};

#[derive(Parser)]
#[grammar = "config/mastercf.pest"]
struct MasterCfGrammar;

/// The names of the 8 fixed columns, as `postconf -F` prints them.
pub const FIELD_NAMES: [&str; 8] = [
    "service",
    "type",
    "private",
    "unprivileged",
    "chroot",
    "wakeup",
    "process_limit",
    "command",
];

/// Service types Postfix 3.7 accepts.
pub const SERVICE_TYPES: &[&str] = &["inet", "unix", "unix-dgram", "fifo", "pass"];

/// Built-in parameters whose values Postfix does not `$name`-expand when loading, so their
/// `$name` references do not make a parameter "used": the raw parameters
/// ([`params::RAW`]) and the read-only ones, whose settings Postfix drops before scanning.
fn not_scanned(name: &str) -> bool {
    params::RAW.contains(&name) || params::READ_ONLY.contains(&name)
}

/// One service entry (one logical line of master.cf).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterService {
    /// Service name, e.g. `smtp`, `submission`, `127.0.0.1:2525`, `[::1]:2525`.
    pub name: String,
    /// `inet`, `unix`, `unix-dgram`, `fifo` or `pass`.
    pub kind: String,
    pub private: String,
    pub unpriv: String,
    pub chroot: String,
    pub wakeup: String,
    pub maxproc: String,
    /// The command name (`smtpd`, `smtp`, `pipe`, …).
    pub command: String,
    /// Arguments after the command, normalised as `postconf` does: `-o` and its value are
    /// separate arguments, `{ … }` groups are unwrapped into single arguments.
    pub args: Vec<String>,
    /// First physical line (1-based; 0 for an entry that did not come from a file).
    pub line: usize,
    /// The logical line as written (continuation lines joined).
    pub raw: String,
}

impl MasterService {
    /// The 8 fixed fields, in column order.
    pub fn fields(&self) -> [&str; 8] {
        [
            &self.name,
            &self.kind,
            &self.private,
            &self.unpriv,
            &self.chroot,
            &self.wakeup,
            &self.maxproc,
            &self.command,
        ]
    }

    /// All fields and arguments as one list (Postfix's `argv` of the entry).
    pub fn argv(&self) -> Vec<String> {
        let mut v: Vec<String> = self.fields().iter().map(|s| s.to_string()).collect();
        v.extend(self.args.iter().cloned());
        v
    }

    /// `name/type`, the service's parameter name space.
    pub fn name_space(&self) -> String {
        format!("{}/{}", self.name, self.kind)
    }

    /// The `-o name=value` overrides among the daemon options, in order (duplicates kept).
    pub fn overrides(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.args.len() {
            let a = &self.args[i];
            if !a.starts_with('-') || a == "--" {
                break;
            }
            if option_takes_value(a) && i + 1 < self.args.len() {
                if a == "-o"
                    && let Ok((n, v)) = maincf::split_nameval(&self.args[i + 1])
                {
                    out.push((n, v));
                }
                i += 1;
            }
            i += 1;
        }
        out
    }

    /// The service's parameter name space: `-o` settings, the last one of a name winning.
    pub fn params(&self) -> IndexMap<String, String> {
        let mut m = IndexMap::new();
        for (n, v) in self.overrides() {
            m.insert(n, v);
        }
        m
    }
}

/// A parsed master.cf.
#[derive(Debug, Clone, Default)]
pub struct MasterCf {
    pub path: PathBuf,
    pub encoding: Encoding,
    pub services: Vec<MasterService>,
    /// Warnings without the program prefix, worded as Postfix's.
    pub warnings: Vec<String>,
}

impl MasterCf {
    /// The first service with this name and type.
    pub fn get(&self, name: &str, kind: &str) -> Option<&MasterService> {
        self.services
            .iter()
            .find(|s| s.name == name && s.kind == kind)
    }
}

/// Why one entry was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryError {
    /// Fewer than 8 fields.
    BadFieldCount,
    /// A fixed field with a bad value: field name (as in [`FIELD_NAMES`]), value, entry text.
    InvalidField {
        field: &'static str,
        value: String,
        entry: String,
    },
}

impl EntryError {
    /// The message as Postfix's `postconf` words it (after `postconf: fatal: `). `path` and
    /// `line` are used only where Postfix names them (`bad field count`).
    pub fn postfix_text(&self, path: &Path, line: usize) -> String {
        match self {
            EntryError::BadFieldCount => {
                format!("file {}: line {line}: bad field count", path.display())
            }
            EntryError::InvalidField {
                field,
                value,
                entry,
            } => format!(
                "invalid {field} field \"{value}\" in \"{}\"",
                entry.replace('\n', " ")
            ),
        }
    }

    /// The message without file or line.
    pub fn message(&self) -> String {
        match self {
            EntryError::BadFieldCount => "bad field count".to_string(),
            EntryError::InvalidField { .. } => self.postfix_text(Path::new(""), 0),
        }
    }
}

/// A parse failure with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterParseError {
    pub path: PathBuf,
    pub line: usize,
    pub error: EntryError,
    /// Warnings collected before the failure.
    pub warnings: Vec<String>,
}

impl MasterParseError {
    pub fn postfix_text(&self) -> String {
        self.error.postfix_text(&self.path, self.line)
    }
}

impl From<MasterParseError> for ConfigError {
    fn from(e: MasterParseError) -> Self {
        ConfigError::at_line(&e.path, e.line, e.error.message())
    }
}

/// Read and parse a master.cf file. Errors name file and line.
pub fn read(path: &Path) -> Result<MasterCf, ConfigError> {
    // A master.cf that is a directory reads as an empty file to Postfix (the read error
    // ends its line reader like end of file).
    let bytes = match std::fs::read(path) {
        Err(_) if path.is_dir() => Vec::new(),
        r => r.map_err(|e| ConfigError::open(path, e))?,
    };
    let (text, enc) = text::decode(&bytes);
    let mut m = parse(&text, path)?;
    m.encoding = enc;
    Ok(m)
}

/// Parse master.cf text; `path` is used in messages. Errors name file and line.
pub fn parse(text: &str, path: &Path) -> Result<MasterCf, ConfigError> {
    parse_detailed(text, path).map_err(ConfigError::from)
}

/// A logical line: first physical line number and joined text.
#[derive(Debug, Clone)]
pub struct LogicalLine {
    pub first: usize,
    pub text: String,
}

/// One item of [`logical_items`]: a logical line, or the warning for a skipped one.
#[derive(Debug, Clone)]
pub enum LogicalItem {
    Line(LogicalLine),
    Warning(String),
}

/// Assemble logical lines (Postfix `readllines()`), with the warnings it logs.
pub fn logical_lines(text: &str, path: &Path) -> (Vec<LogicalLine>, Vec<String>) {
    let mut lines = Vec::new();
    let mut warnings = Vec::new();
    for item in logical_items(text, path) {
        match item {
            LogicalItem::Line(l) => lines.push(l),
            LogicalItem::Warning(w) => warnings.push(w),
        }
    }
    (lines, warnings)
}

/// Logical lines and `readllines()` warnings, in file order.
pub fn logical_items(text: &str, path: &Path) -> Vec<LogicalItem> {
    let mut out: Vec<LogicalLine> = Vec::new();
    let mut cur: Option<LogicalLine> = None;
    for (number, kind, line) in physical_lines(text) {
        match kind {
            Rule::comment | Rule::blank => {}
            Rule::cont => match cur.as_mut() {
                Some(l) => l.text.push_str(line),
                None => {
                    cur = Some(LogicalLine {
                        first: number,
                        text: line.to_string(),
                    })
                }
            },
            _ => {
                if let Some(l) = cur.take() {
                    out.push(l);
                }
                cur = Some(LogicalLine {
                    first: number,
                    text: line.to_string(),
                });
            }
        }
    }
    if let Some(l) = cur.take() {
        out.push(l);
    }
    out.into_iter()
        .map(|l| {
            if l.text.starts_with(is_space) {
                let shown: String = l.text.chars().take(30).collect();
                let more = if l.text.chars().nth(30).is_some() {
                    "..."
                } else {
                    ""
                };
                LogicalItem::Warning(format!(
                    "{}: logical line must not start with whitespace: \"{shown}{more}\"",
                    path.display()
                ))
            } else {
                LogicalItem::Line(l)
            }
        })
        .collect()
}

/// Classify physical lines: (1-based number, rule, text without line end).
fn physical_lines(text: &str) -> Vec<(usize, Rule, &str)> {
    let mut out = Vec::new();
    let file = match MasterCfGrammar::parse(Rule::file, text) {
        Ok(mut p) => p.next(),
        Err(_) => None,
    };
    let Some(file) = file else {
        // The grammar accepts any text; this is only a fallback.
        for (i, l) in text.lines().enumerate() {
            out.push((i + 1, Rule::text, l));
        }
        return out;
    };
    let mut number = 0;
    for pair in file.into_inner() {
        let rule = pair.as_rule();
        if !matches!(rule, Rule::comment | Rule::blank | Rule::cont | Rule::text) {
            continue;
        }
        number += 1;
        let span = pair.as_span();
        let s = span.as_str();
        let s = s.strip_suffix('\r').unwrap_or(s);
        if span.start() == text.len() && s.is_empty() {
            continue;
        }
        let rule = if rule == Rule::text && s.is_empty() {
            Rule::blank
        } else {
            rule
        };
        out.push((number, rule, s));
    }
    out
}

/// Parse master.cf text, keeping Postfix's error details.
pub fn parse_detailed(text: &str, path: &Path) -> Result<MasterCf, MasterParseError> {
    let mut warnings = Vec::new();
    let mut services = Vec::new();
    for item in logical_items(text, path) {
        let l = match item {
            LogicalItem::Warning(w) => {
                warnings.push(w);
                continue;
            }
            LogicalItem::Line(l) => l,
        };
        match parse_entry(&l.text) {
            Ok((mut svc, w)) => {
                svc.line = l.first;
                warnings.extend(w);
                services.push(svc);
            }
            Err(error) => {
                return Err(MasterParseError {
                    path: path.to_path_buf(),
                    line: l.first,
                    error,
                    warnings,
                });
            }
        }
    }
    Ok(MasterCf {
        path: path.to_path_buf(),
        encoding: Encoding::Utf8,
        services,
        warnings,
    })
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Split an entry into fields (Postfix `argv_splitq(…, " \t\r\n", "{}")`).
pub fn split_fields(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut level = 0usize;
    let atoms = match MasterCfGrammar::parse(Rule::atoms, text) {
        Ok(mut p) => p.next().map(|a| a.into_inner()),
        Err(_) => None,
    };
    let Some(atoms) = atoms else {
        return text
            .split(is_blank)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
    };
    for atom in atoms {
        let s = atom.as_str();
        match atom.as_rule() {
            Rule::blanks if level == 0 && in_token => {
                out.push(std::mem::take(&mut cur));
                in_token = false;
            }
            Rule::blanks if level == 0 => {}
            Rule::lbrace => {
                level += 1;
                cur.push_str(s);
                in_token = true;
            }
            Rule::rbrace => {
                level = level.saturating_sub(1);
                cur.push_str(s);
                in_token = true;
            }
            Rule::blanks | Rule::word => {
                cur.push_str(s);
                in_token = true;
            }
            _ => {}
        }
    }
    if in_token {
        out.push(cur);
    }
    out
}

/// Parse one entry (a whole logical line). Returns the service (with `line` 0) and the
/// brace warnings Postfix prints for it.
pub fn parse_entry(text: &str) -> Result<(MasterService, Vec<String>), EntryError> {
    let argv = split_fields(text);
    if argv.len() < 8 {
        return Err(EntryError::BadFieldCount);
    }
    check_fields(&argv, text)?;
    let mut argv = argv;
    let warnings = normalize_daemon_args(&mut argv);
    Ok((service_from_argv(argv, text), warnings))
}

fn service_from_argv(argv: Vec<String>, raw: &str) -> MasterService {
    let mut it = argv.into_iter();
    let mut next = || it.next().unwrap_or_default();
    let (name, kind, private, unpriv, chroot, wakeup, maxproc, command) = (
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
    );
    MasterService {
        name,
        kind,
        private,
        unpriv,
        chroot,
        wakeup,
        maxproc,
        command,
        args: it.collect(),
        line: 0,
        raw: raw.to_string(),
    }
}

/// Postfix `pcf_check_master_entry()`.
fn check_fields(argv: &[String], entry: &str) -> Result<(), EntryError> {
    let bad = |field: usize, value: &str| EntryError::InvalidField {
        field: FIELD_NAMES[field],
        value: value.to_string(),
        entry: entry.to_string(),
    };
    if !SERVICE_TYPES.contains(&argv[1].as_str()) {
        return Err(bad(1, &argv[1]));
    }
    for (i, v) in argv.iter().enumerate().take(5).skip(2) {
        if !matches!(v.as_str(), "y" | "n" | "-") {
            return Err(bad(i, v));
        }
    }
    let w = argv[5].as_str();
    let digits = w.strip_suffix('?').unwrap_or(w);
    if !(digits == "-" || digits.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad(5, w));
    }
    let m = argv[6].as_str();
    if !(m == "-" || m.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad(6, m));
    }
    Ok(())
}

/// Does this daemon option take a value? (`-o`; and a lone `-`, as Postfix's
/// `strchr("o", arg[1])` also matches the terminating NUL.)
pub fn option_takes_value(arg: &str) -> bool {
    let b = arg.as_bytes();
    b.len() == 1 || b.get(1) == Some(&b'o')
}

/// Postfix `extpar(…, "{}", EXTPAR_FLAG_STRIP)`: the text inside a leading `{ … }`, trimmed;
/// with the warning text if the braces are unbalanced or followed by more text.
pub fn extract_braces(arg: &str) -> (String, Option<String>) {
    let bytes = arg.as_bytes();
    let mut level = 0usize;
    let mut close = None;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'{' {
            level += 1;
        } else if b == b'}' {
            level = level.saturating_sub(1);
            if level == 0 {
                close = Some(i);
                break;
            }
        }
    }
    let (inner, err) = match close {
        None => (
            &arg[1..],
            Some(format!("master.cf: missing '}}' in \"{arg}\"")),
        ),
        Some(i) => {
            let err = (i + 1 < arg.len())
                .then(|| format!("master.cf: syntax error after '}}' in \"{arg}\""));
            (&arg[1..i], err)
        }
    };
    (inner.trim_matches(is_space).to_string(), err)
}

/// Postfix `pcf_normalize_daemon_args()` on a whole entry's fields; returns warnings.
pub fn normalize_daemon_args(argv: &mut Vec<String>) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut field = 8;
    while field < argv.len() {
        let arg = argv[field].clone();
        if !arg.starts_with('-') || arg == "--" {
            break;
        }
        // Split "-stuffozz" into "-stuff" and "-ozz".
        // Like Postfix, this looks for an `o` from the third character on, also in
        // `-oname=foo` (which becomes `-oname=f` `-oo`): kept for identical output.
        if let Some(pos) = arg
            .as_bytes()
            .iter()
            .skip(2)
            .position(|&b| b == b'o')
            .map(|p| p + 2)
        {
            argv.insert(field + 1, format!("-{}", &arg[pos..]));
            argv[field] = arg[..pos].to_string();
        }
        let arg = argv[field].clone();
        if !option_takes_value(&arg) {
            field += 1;
            continue;
        }
        let extract;
        if arg.len() > 2 {
            // Split "-oname=value" into "-o" "name=value".
            argv.insert(field + 1, arg[2..].to_string());
            argv[field] = arg[..2].to_string();
            field += 1;
            extract = argv[field].starts_with('{');
        } else if field + 1 < argv.len() {
            field += 1;
            extract = argv[field].starts_with('{');
        } else {
            extract = false;
        }
        if extract {
            let (inner, err) = extract_braces(&argv[field]);
            warnings.extend(err);
            argv[field] = inner;
            if argv[field - 1].as_bytes().get(1) == Some(&b'o') {
                match maincf::split_nameval(&argv[field]) {
                    Ok((n, v)) => argv[field] = format!("{n}={v}"),
                    Err(e) => warnings.push(format!("master.cf: {e}: \"{}\"", argv[field])),
                }
            }
        }
        field += 1;
    }
    while field < argv.len() {
        if argv[field].starts_with('{') {
            let (inner, err) = extract_braces(&argv[field]);
            warnings.extend(err);
            argv[field] = inner;
        }
        field += 1;
    }
    warnings
}

/// Commands for which Postfix 3.7 registers per-service parameters, and whether the set
/// includes the delivery-agent suffixes and `time_limit`.
fn service_param_kind(command: &str) -> Option<(bool, bool)> {
    match command {
        "local" | "error" | "virtual" | "smtp" | "lmtp" => Some((true, false)),
        "pipe" => Some((true, true)),
        "spawn" => Some((false, true)),
        _ => None,
    }
}

/// The per-service parameter names and defaults Postfix 3.7's `postconf` registers from
/// master.cf (see the module doc), in master.cf order, without duplicates and without names
/// that are built-in parameters.
pub fn service_parameters(master: &MasterCf) -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for s in &master.services {
        let Some((delivery, time_limit)) = service_param_kind(&s.command) else {
            continue;
        };
        let mut add = |suffix: &str, default: &str| {
            let name = format!("{}_{suffix}", s.name);
            if params::lookup(&name).is_none() && seen.insert(name.clone()) {
                out.push((name, default.to_string()));
            }
        };
        if time_limit {
            add("time_limit", "$command_time_limit");
        }
        if delivery {
            for (suffix, default) in params::TRANSPORT_PARAM_SUFFIXES {
                add(suffix, default);
            }
        }
    }
    out
}

/// Names of `$name`, `${name}`, `$(name)` references in a value, also inside the text of
/// `${name?text}`, `${name:text}` and Postfix 3.x `${name?{a}:{b}}` forms (Postfix
/// `mac_expand()` in scan mode). `$$` is a literal dollar.
pub fn macro_names(value: &str) -> Vec<String> {
    super::expand::referenced_names(value)
}

/// Names that master.cf "uses" in the simple sense: every name set with `-o name=value` and
/// every `$name` referenced inside an `-o` value (of a parameter that is not raw). Command
/// arguments are not scanned (Postfix does not either). For the full Postfix rules, which
/// need main.cf too, see [`check_parameters`].
pub fn used_parameter_names(master: &MasterCf) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for s in &master.services {
        for (n, v) in s.overrides() {
            if seen.insert(n.clone()) {
                out.push(n.clone());
            }
            if not_scanned(n.as_str()) {
                continue;
            }
            for m in macro_names(&v) {
                if seen.insert(m.clone()) {
                    out.push(m);
                }
            }
        }
    }
    out
}

/// Postfix 3.7.11 `postconf_dbms.c` (`LEGACY_DBMS_SUPPORT`): the database client types and
/// the parameter names each reads from its configuration (`pcf_*_suffixes.h`, which
/// `extract_cfg.sh` builds from the `cfg_get_*()` calls of `global/dict_TYPE.c`, plus
/// `domain`, and for the SQL types `table`, `select_field`, `where_field`,
/// `additional_conditions`). 3.7 has no `mongodb` here.
const DBMS: &[(&str, &[&str])] = &[
    (
        "ldap",
        &[
            "bind",
            "bind_dn",
            "bind_pw",
            "cache",
            "cache_expiry",
            "cache_size",
            "chase_referrals",
            "debuglevel",
            "dereference",
            "domain",
            "expansion_limit",
            "leaf_result_attribute",
            "query_filter",
            "recursion_limit",
            "result_attribute",
            "result_filter",
            "result_format",
            "sasl_authz_id",
            "sasl_mechs",
            "sasl_minssf",
            "sasl_realm",
            "scope",
            "search_base",
            "server_host",
            "server_port",
            "size_limit",
            "special_result_attribute",
            "start_tls",
            "terminal_result_attribute",
            "timeout",
            "tls_ca_cert_dir",
            "tls_ca_cert_file",
            "tls_cert",
            "tls_cipher_suite",
            "tls_key",
            "tls_random_file",
            "tls_require_cert",
            "version",
        ],
    ),
    (
        "mysql",
        &[
            "additional_conditions",
            "dbname",
            "domain",
            "expansion_limit",
            "hosts",
            "option_file",
            "option_group",
            "password",
            "query",
            "require_result_set",
            "result_format",
            "select_field",
            "table",
            "tls_CAfile",
            "tls_CApath",
            "tls_cert_file",
            "tls_ciphers",
            "tls_key_file",
            "tls_verify_cert",
            "user",
            "where_field",
        ],
    ),
    (
        "pgsql",
        &[
            "additional_conditions",
            "dbname",
            "domain",
            "expansion_limit",
            "hosts",
            "password",
            "query",
            "result_format",
            "select_field",
            "select_function",
            "table",
            "user",
            "where_field",
        ],
    ),
    (
        "sqlite",
        &[
            "additional_conditions",
            "dbpath",
            "domain",
            "expansion_limit",
            "query",
            "result_format",
            "select_field",
            "table",
            "where_field",
        ],
    ),
    (
        "memcache",
        &[
            "backup",
            "data_size_limit",
            "domain",
            "flags",
            "key_format",
            "line_size_limit",
            "max_try",
            "memcache",
            "retry_pause",
            "timeout",
            "ttl",
        ],
    ),
];

/// Postfix `extpar(&text, "{}", EXTPAR_FLAG_NONE)` on text that starts with `{`: the text
/// inside the braces (after an unbalanced `{`: all the rest), and the error if any.
fn extpar_brace(text: &str) -> (&str, Option<String>) {
    let b = text.as_bytes();
    let mut level = 0usize;
    for (i, &c) in b.iter().enumerate() {
        if c == b'{' {
            level += 1;
        } else if c == b'}' {
            level -= 1;
            if level == 0 {
                let err =
                    (i + 1 < b.len()).then(|| format!("syntax error after '}}' in \"{text}\""));
                return (&text[1..i], err);
            }
        }
    }
    (&text[1..], Some(format!("missing '}}' in \"{text}\"")))
}

/// Postfix `mystrtokq(&text, ", \t\r\n", "{}")`: tokens, with `{ … }` kept together.
fn dbms_tokens(text: &str) -> Vec<&str> {
    const SEP: &[u8] = b", \t\r\n";
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && SEP.contains(&b[i]) {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        let mut level = 0usize;
        while i < b.len() {
            let c = b[i];
            if c == b'{' {
                level += 1;
            } else if level > 0 && c == b'}' {
                level -= 1;
            } else if level == 0 && SEP.contains(&c) {
                break;
            }
            i += 1;
        }
        out.push(&text[start..i]);
    }
    out
}

/// What [`dbms_scan`] found: warnings, and legacy parameter names to flag as used
/// (`ldap:name` → `name_server_host`, …).
struct DbmsScan<'a> {
    /// `main.cf` or `master.cf:SERVICE/TYPE`, the prefix of brace syntax errors.
    source: String,
    /// `TYPE:FILE` already visited (Postfix reads each file once per run).
    seen: &'a mut HashSet<String>,
    warnings: &'a mut Vec<String>,
    names: Vec<String>,
}

/// Postfix `pcf_register_dbms_helper()` over an already expanded value.
fn dbms_scan(value: &str, scan: &mut DbmsScan) {
    for tok in dbms_tokens(value) {
        if tok.starts_with('{') {
            let (inner, err) = extpar_brace(tok);
            if let Some(e) = err {
                scan.warnings.push(format!("{}: {e}", scan.source));
            }
            dbms_scan(inner, scan);
            continue;
        }
        // Skip `proxy:` (as proxymap would), then split TYPE:PREFIX at the first ':'.
        let mut rest = tok;
        let (db_type, prefix) = loop {
            match rest.split_once(':') {
                Some(("proxy", p)) => rest = p,
                Some((t, p)) => break (t, p),
                None => break ("", ""),
            }
        };
        if db_type.is_empty() && prefix.is_empty() {
            continue;
        }
        let info = DBMS.iter().find(|(t, _)| *t == db_type);
        if prefix.starts_with('/') {
            if let Some((t, suffixes)) = info {
                dbms_check_client(t, suffixes, prefix, scan);
            }
        } else if !prefix.starts_with('.') {
            if prefix.starts_with('{') {
                let (inner, err) = extpar_brace(prefix);
                if let Some(e) = err {
                    scan.warnings.push(format!("{}: {e}", scan.source));
                }
                dbms_scan(inner, scan);
            } else if let Some((_, suffixes)) = info {
                for s in *suffixes {
                    scan.names.push(format!("{prefix}_{s}"));
                }
            }
        }
    }
}

/// Postfix `pcf_check_dbms_client()`: read a database client configuration file once and
/// report the names in it that the client does not know. An unreadable file (other than for
/// lack of permission) is a warning. XXX Postfix stops (`fatal`) at a line without `=`;
/// here the file is then skipped.
fn dbms_check_client(db_type: &str, suffixes: &[&str], file: &str, scan: &mut DbmsScan) {
    let spec = format!("{db_type}:{file}");
    if !scan.seen.insert(spec.clone()) {
        return;
    }
    let path = Path::new(file);
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::PermissionDenied {
                scan.warnings.push(format!(
                    "open \"{db_type}\" configuration \"{file}\": {}",
                    super::error::strerror(&e)
                ));
            }
            return;
        }
    };
    if f.metadata().is_ok_and(|m| !m.is_file()) {
        scan.warnings.push(format!(
            "open \"{db_type}\" configuration \"{file}\": not a regular file"
        ));
        return;
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::io::Read::read_to_end(&mut &f, &mut bytes) {
        scan.warnings.push(format!(
            "read \"{db_type}\" configuration \"{file}\": {}",
            super::error::strerror(&e)
        ));
        return;
    }
    let (text, _) = super::text::decode(&bytes);
    let Ok(cf) = super::maincf::parse(&text, path) else {
        return;
    };
    scan.warnings.extend(cf.warnings);
    for (name, s) in &cf.settings {
        if !suffixes.contains(&name.as_str()) {
            scan.warnings
                .push(format!("{spec}: unused parameter: {name}={}", s.value));
        }
    }
}

/// The outcome of Postfix's parameter bookkeeping over main.cf and master.cf together.
#[derive(Debug, Clone, Default)]
pub struct ParamCheck {
    /// `DIR/master.cf: undefined parameter: NAME` and `DIR/main.cf: …` warnings, and
    /// `open "mysql" configuration "FILE": …` ones (postconf prints them in every mode that
    /// reads master.cf, before its output).
    pub undefined: Vec<String>,
    /// `DIR/master.cf: unused parameter: NAME=VALUE` warnings (printed after the output).
    pub unused_master: Vec<String>,
    /// User-defined main.cf names that count as used; a main.cf name that is neither
    /// built-in, service-defined nor in this set is "unused".
    pub used_main: HashSet<String>,
    /// Service-defined parameter names (see [`service_parameters`]).
    pub service_params: HashSet<String>,
}

impl ParamCheck {
    /// Is this main.cf name unused (Postfix's `DIR/main.cf: unused parameter: NAME=VALUE`)?
    pub fn main_name_unused(&self, name: &str) -> bool {
        params::lookup(name).is_none()
            && !self.service_params.contains(name)
            && !self.used_main.contains(name)
    }
}

/// Expands a value in main.cf's scope (`None`) or with a service's `-o` settings first.
pub type ScopedExpand<'a> = dyn Fn(&str, Option<&IndexMap<String, String>>) -> String + 'a;

/// Postfix's `register_user_parameters()` and `pcf_flag_unused_master_parameters()` over
/// main.cf and master.cf (rules in the module doc). `config_dir` is used in messages;
/// `expand` evaluates a value in main.cf's scope, or with a service's `-o` settings first
/// (for `smtpd_restriction_classes` and the database scan).
pub fn check_parameters(
    main: &MainCf,
    master: &MasterCf,
    config_dir: &Path,
    expand: &ScopedExpand,
) -> ParamCheck {
    let service_params: HashSet<String> = service_parameters(master)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let known = |n: &str| params::lookup(n).is_some() || service_params.contains(n);
    let spaces: Vec<IndexMap<String, String>> =
        master.services.iter().map(MasterService::params).collect();
    let mut local_valid: Vec<HashSet<String>> = vec![HashSet::new(); spaces.len()];
    let mut used_main: HashSet<String> = HashSet::new();
    let mut undefined = Vec::new();
    let dir = config_dir.display().to_string();
    // Database client files already read (one visit per file and run, as in Postfix).
    let mut dbms_seen: HashSet<String> = HashSet::new();

    // flag_user_parameter(): `scope` is the service index, or None for main.cf.
    let flag = |name: &str,
                scope: Option<usize>,
                local_valid: &mut Vec<HashSet<String>>,
                used_main: &mut HashSet<String>,
                undefined: &mut Vec<String>| {
        let mut supplied = false;
        if let Some(i) = scope
            && spaces[i].contains_key(name)
        {
            supplied = true;
            local_valid[i].insert(name.to_string());
        } else if main.settings.contains_key(name) {
            supplied = true;
            used_main.insert(name.to_string());
        }
        if scope.is_none() {
            for (i, sp) in spaces.iter().enumerate() {
                if sp.contains_key(name) {
                    supplied = true;
                    local_valid[i].insert(name.to_string());
                }
            }
        }
        if !supplied && !known(name) && !used_main.contains(name) {
            let file = if scope.is_some() {
                "master.cf"
            } else {
                "main.cf"
            };
            undefined.push(format!("{dir}/{file}: undefined parameter: {name}"));
        }
    };

    // Global restriction classes (main.cf's smtpd_restriction_classes, evaluated).
    let classes = |v: &str| -> Vec<String> {
        v.split([',', ' ', '\t', '\r', '\n'])
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let global_classes: HashSet<String> = main
        .get("smtpd_restriction_classes")
        .map(|v| classes(&expand(v, None)).into_iter().collect())
        .unwrap_or_default();

    // Per-service name spaces.
    for (i, sp) in spaces.iter().enumerate() {
        if let Some(v) = sp.get("smtpd_restriction_classes") {
            for c in classes(v) {
                flag(
                    &c,
                    Some(i),
                    &mut local_valid,
                    &mut used_main,
                    &mut undefined,
                );
            }
        }
        for (n, v) in sp {
            if global_classes.contains(n) {
                local_valid[i].insert(n.clone());
            }
            if not_scanned(n.as_str()) {
                continue;
            }
            for m in macro_names(v) {
                flag(
                    &m,
                    Some(i),
                    &mut local_valid,
                    &mut used_main,
                    &mut undefined,
                );
            }
            // Values of built-in and service parameters only (`pcf_register_dbms_parameters()`
            // after `$name` expansion in the service's scope).
            if known(n) {
                let svc = &master.services[i];
                let mut scan = DbmsScan {
                    source: format!("master.cf:{}/{}", svc.name, svc.kind),
                    seen: &mut dbms_seen,
                    warnings: &mut undefined,
                    names: Vec::new(),
                };
                dbms_scan(&expand(v, Some(sp)), &mut scan);
                for m in std::mem::take(&mut scan.names) {
                    let mut ignore = Vec::new();
                    flag(&m, Some(i), &mut local_valid, &mut used_main, &mut ignore);
                }
            }
        }
    }
    // Defaults of built-in parameters that main.cf leaves unset: their references only
    // validate (legacy names such as `$virtual_maps`), never warn.
    for def in params::all() {
        if main.settings.contains_key(def.name) || not_scanned(def.name) {
            continue;
        }
        for m in macro_names(def.default) {
            let mut ignore = Vec::new();
            flag(&m, None, &mut local_valid, &mut used_main, &mut ignore);
        }
    }
    // Explicit main.cf settings.
    for c in &global_classes {
        flag(c, None, &mut local_valid, &mut used_main, &mut undefined);
    }
    for (n, s) in &main.settings {
        if not_scanned(n.as_str()) {
            continue;
        }
        for m in macro_names(&s.value) {
            flag(&m, None, &mut local_valid, &mut used_main, &mut undefined);
        }
        // Only values of known parameters are checked for database files (as observed
        // with Postfix 3.7: a misspelt `transport_map = ldap:/…` gives no warning), after
        // `$name` expansion; legacy `ldap:name` parameters (`name_server_host`) count as
        // used, without an "undefined" warning.
        if known(n) {
            let mut scan = DbmsScan {
                source: "main.cf".into(),
                seen: &mut dbms_seen,
                warnings: &mut undefined,
                names: Vec::new(),
            };
            dbms_scan(&expand(&s.value, None), &mut scan);
            for m in std::mem::take(&mut scan.names) {
                let mut ignore = Vec::new();
                flag(&m, None, &mut local_valid, &mut used_main, &mut ignore);
            }
        }
    }

    let mut unused_master = Vec::new();
    for (i, sp) in spaces.iter().enumerate() {
        for (n, v) in sp {
            if !known(n) && !used_main.contains(n) && !local_valid[i].contains(n) {
                unused_master.push(format!("{dir}/master.cf: unused parameter: {n}={v}"));
            }
        }
    }
    ParamCheck {
        undefined,
        unused_master,
        used_main,
        service_params,
    }
}

/// The names of the fields, for `-F name/type/FIELD` (`*` is the wildcard, `None` unknown).
pub fn field_index(name: &str) -> Option<usize> {
    FIELD_NAMES.iter().position(|f| *f == name)
}

/// A lookup of the per-service `-o` values, for `$name` expansion in a service's scope.
pub fn local_scope(svc: &MasterService) -> HashMap<String, String> {
    svc.params().into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<MasterCf, MasterParseError> {
        parse_detailed(s, Path::new("/etc/postfix/master.cf"))
    }

    /// A database client file that exists (compat-fixtures can only name absent ones: the
    /// path must be absolute). Expected lines as the real postconf 3.7.11 printed them for
    /// the same file and main.cf (`postconf -n`, once per file although two parameters
    /// name it, the second through `proxy:`).
    #[test]
    fn dbms_client_file_unused_and_overriding() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("my.cf");
        std::fs::write(
            &f,
            "hosts = db\nuser = a\nuser = b\nbogus = 1\nquery = SELECT x\n  FROM y\n",
        )
        .expect("write");
        let f = f.display().to_string();
        let main = crate::config::maincf::parse(
            &format!("virtual_alias_maps = mysql:{f}\nrelay_domains = proxy:mysql:{f}\n"),
            &d.path().join("main.cf"),
        )
        .expect("main.cf");
        let master = p("").expect("master.cf");
        let check = check_parameters(&main, &master, d.path(), &|v, _| v.to_string());
        assert_eq!(
            check.undefined,
            vec![
                format!("{f}, line 3: overriding earlier entry: user=a"),
                format!("mysql:{f}: unused parameter: bogus=1"),
            ]
        );
    }

    #[test]
    fn dbms_scan_braces_and_legacy_names() {
        let mut seen = HashSet::new();
        let mut warnings = Vec::new();
        let mut scan = DbmsScan {
            source: "main.cf".into(),
            seen: &mut seen,
            warnings: &mut warnings,
            names: Vec::new(),
        };
        dbms_scan("{{x}}/y, ldap:src pgsql:{memcache:m}z mongodb:m", &mut scan);
        let names = std::mem::take(&mut scan.names);
        assert!(names.contains(&"src_server_host".to_string()));
        assert!(names.contains(&"m_ttl".to_string()));
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("m_") && n.ends_with("_hosts"))
        );
        assert_eq!(
            warnings,
            vec![
                "main.cf: syntax error after '}' in \"{{x}}/y\"",
                "main.cf: syntax error after '}' in \"{memcache:m}z\"",
            ]
        );
    }

    #[test]
    fn basic_entry_and_overrides() {
        let m = p("# c\n\nsubmission inet n - n - - smtpd\n  -o syslog_name=postfix/submission\n  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }\n").unwrap();
        let s = &m.services[0];
        assert_eq!(s.name, "submission");
        assert_eq!(s.line, 3);
        assert_eq!(
            s.overrides(),
            vec![
                ("syslog_name".into(), "postfix/submission".into()),
                (
                    "smtpd_client_restrictions".into(),
                    "permit_sasl_authenticated, reject".into()
                )
            ]
        );
    }

    #[test]
    fn service_names_with_ports() {
        let m =
            p("127.0.0.1:2525 inet n - n - - smtpd\n[::1]:2525 inet n - n - - smtpd\n").unwrap();
        assert_eq!(m.services[0].name, "127.0.0.1:2525");
        assert_eq!(m.services[1].name, "[::1]:2525");
    }

    #[test]
    fn errors() {
        let e = p("#\n\nsmtp inet\n  n - n\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert_eq!(
            e.postfix_text(),
            "file /etc/postfix/master.cf: line 3: bad field count"
        );
        let e = p("foo bar n - n - - x\n").unwrap_err();
        assert_eq!(
            e.postfix_text(),
            "invalid type field \"bar\" in \"foo bar n - n - - x\""
        );
        let e: ConfigError = p("x\nsmtp inet n - n 5x - smtpd\n").unwrap_err().into();
        assert!(e.to_string().contains("master.cf, line 1"), "{e}");
        for (w, ok) in [("10?", true), ("?", true), ("-?", true), ("1a", false)] {
            assert_eq!(
                p(&format!("a unix - - n {w} - b\n")).is_ok(),
                ok,
                "wakeup {w}"
            );
        }
    }

    #[test]
    fn normalisation() {
        let (s, w) = parse_entry(
            "smtp inet n - n - - smtpd -vo a=b -oc=d -o {x = y} -o {q r} {a b} {c d} -- ",
        )
        .unwrap();
        assert_eq!(
            s.args,
            [
                "-v", "-o", "a=b", "-o", "c=d", "-o", "x=y", "-o", "q r", "a b", "c d", "--"
            ]
        );
        assert_eq!(w, ["master.cf: missing '=' after attribute name: \"q r\""]);
        let (s, w) = parse_entry("smtp inet n - n - - smtpd -o {a = b").unwrap();
        assert_eq!(s.args, ["-o", "a=b"]);
        assert_eq!(w, ["master.cf: missing '}' in \"{a = b\""]);
    }

    #[test]
    fn service_params_for_delivery_commands() {
        let m =
            p("relay unix - - n - - smtp\nx unix - - n - - spawn\nlocal unix - n n - - local\n")
                .unwrap();
        let sp = service_parameters(&m);
        assert!(sp.contains(&(
            "relay_destination_concurrency_limit".into(),
            "$default_destination_concurrency_limit".into()
        )));
        assert!(!sp.iter().any(|(n, _)| n == "relay_time_limit"));
        assert_eq!(sp.iter().filter(|(n, _)| n.starts_with("x_")).count(), 1);
        assert!(
            !sp.iter()
                .any(|(n, _)| n == "local_destination_concurrency_limit")
        );
    }

    #[test]
    fn macros() {
        assert_eq!(
            macro_names("$a ${b} $(c) ${d?$e} ${f:{$g}} $$h"),
            ["a", "b", "c", "d", "e", "f", "g"]
        );
    }

    #[test]
    fn deep_braces_do_not_overflow() {
        let s = format!("a unix - - n - - b {}", "{".repeat(1_000_000));
        assert!(parse_entry(&s).is_ok());
    }
}
