//! `doveconf`: print `dovecot.conf` settings as Dovecot 2.3.19's `doveconf` does.
//!
//! Usage: `doveconf [-adhnNPsS] [-c FILE] [-f FILTER] [NAME …]` (options as Dovecot's
//! getopt string `adf:hHm:nNpPexsS` plus the master service's `c:i:ko:OL`; GNU order, so
//! options may follow names):
//! * `-c FILE` — config file (default `/etc/dovecot.conf` when it exists, else
//!   `/etc/dovecot/dovecot.conf`: [`crate::config::dovecot::default_conf_path`]);
//! * `-n` — settings whose value is not the default; `-N` — settings set in the file; `-a`
//!   (the default) — every setting; `-d` — the defaults, without reading the file;
//! * `NAME …` — `NAME = value` (default included), a section (`service`, `plugin`) dumped as
//!   with `-a`; `-h` prints the value only;
//! * `-P` — show passwords and keys instead of `# hidden, use -P to show it` and
//!   `#hidden_use-P_to_show#`;
//! * `-S` — `key=value` lines, no sections.
//!
//! Output is byte for byte what the real doveconf prints for a file Dovecot 2.3 accepts
//! (the settings engine is `config::dovecot::engine`, the printing `config::dovecot::export`),
//! except the `# Pigeonhole …` header line, which Postern leaves out: it serves no Sieve.
//! Errors are worded as Dovecot's, on stderr, exit code 89 (`FATAL_DEFAULT`). A 0.99 or 1.x
//! file the real 2.3 rejects is printed as its 2.x translation, with one
//! `doveconf: Warning: <era> key K at FILE:LINE → 2.x form` line per translated key.
//!
//! Not implemented: `-e` (run a command with the settings in its environment), `-x` (expand
//! variables and read `<file` values), `-m`, `-p`, `-H`; they are refused with exit 64.

use std::io::Write;
use std::path::Path;

use crate::config::ConfigError;
use crate::config::dovecot::engine::{self, Filter, FilterParser};
use crate::config::dovecot::export::{self, Scope};
use crate::config::dovecot::{DovecotConf, dump};

const FATAL: i32 = 89;
const USAGE: i32 = 64;

/// A load error as doveconf prints it (`doveconf: Fatal: …`).
pub fn fatal_text(e: &ConfigError) -> String {
    match e {
        ConfigError::AtLine { file, line, msg } => format!(
            "doveconf: Fatal: Error in configuration file {} line {line}: {msg}",
            file.display()
        ),
        ConfigError::InFile { file, msg } => format!(
            "doveconf: Fatal: Error in configuration file {}: {msg}",
            file.display()
        ),
        ConfigError::Open { path, source } => format!(
            "doveconf: Fatal: open({}) failed: {}",
            path.display(),
            crate::config::error::strerror(source)
        ),
        ConfigError::Other(m) => format!("doveconf: Fatal: {}", engine::text_to_string(m)),
    }
}

struct Opts {
    file: String,
    scope: Scope,
    hide_key: bool,
    hide_passwords: bool,
    dump_defaults: bool,
    simple: bool,
    filter: Filter,
    names: Vec<String>,
    file_given: bool,
}

/// getopt(3) over `adf:hHm:nNpPexsS` and `c:i:ko:OL`; `Err` is the exit code after the
/// message.
fn parse_args(args: &[String]) -> Result<Opts, i32> {
    let mut o = Opts {
        file: crate::config::dovecot::default_conf_path()
            .display()
            .to_string(),
        scope: Scope::AllWithoutHidden,
        hide_key: false,
        hide_passwords: true,
        dump_defaults: false,
        simple: false,
        filter: Filter::default(),
        names: Vec::new(),
        file_given: false,
    };
    let with_arg = |c: char| matches!(c, 'f' | 'm' | 'c' | 'i' | 'o');
    let mut i = 0;
    let mut only_names = false;
    while i < args.len() {
        let a = &args[i];
        if only_names || !a.starts_with('-') || a == "-" {
            o.names.push(a.clone());
            i += 1;
            continue;
        }
        if a == "--" {
            only_names = true;
            i += 1;
            continue;
        }
        let chars: Vec<char> = a[1..].chars().collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            if !"adf:hHm:nNpPexsSc:i:ko:OL".contains(c) || c == ':' {
                eprintln!("doveconf: invalid option -- '{c}'");
                return Err(FATAL);
            }
            if with_arg(c) {
                let rest: String = chars[j + 1..].iter().collect();
                let val = if !rest.is_empty() {
                    rest
                } else {
                    i += 1;
                    match args.get(i) {
                        Some(v) => v.clone(),
                        None => {
                            eprintln!("doveconf: option requires an argument -- '{c}'");
                            return Err(FATAL);
                        }
                    }
                };
                match c {
                    'c' => {
                        o.file = val;
                        o.file_given = true;
                    }
                    'f' => parse_filter(&mut o.filter, &val)?,
                    _ => {
                        eprintln!("doveconf: -{c} is not implemented by Postern");
                        return Err(USAGE);
                    }
                }
                break;
            }
            match c {
                'a' => {}
                'd' => o.dump_defaults = true,
                'h' => o.hide_key = true,
                'n' => o.scope = Scope::Changed,
                'N' => o.scope = Scope::Set,
                'P' => o.hide_passwords = false,
                's' => o.scope = Scope::AllWithHidden,
                'S' => o.simple = true,
                'k' | 'O' | 'L' => {}
                _ => {
                    eprintln!("doveconf: -{c} is not implemented by Postern");
                    return Err(USAGE);
                }
            }
            j += 1;
        }
        i += 1;
    }
    Ok(o)
}

/// `filter_parse_arg()`: `-f service=imap`, `protocol=`, `lname=`.
fn parse_filter(f: &mut Filter, arg: &str) -> Result<(), i32> {
    let (k, v) = arg.split_once('=').unwrap_or((arg, ""));
    match k {
        "service" | "protocol" => f.service = Some(v.to_string()),
        "lname" => f.local_name = Some(v.to_string()),
        _ => {
            eprintln!("doveconf: Fatal: Unknown filter argument: {arg}");
            return Err(FATAL);
        }
    }
    Ok(())
}

fn out(bytes: &[u8]) {
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(bytes);
    let _ = so.flush();
}

pub fn main(args: &[String]) -> i32 {
    let o = match parse_args(args) {
        Ok(o) => o,
        Err(rc) => return rc,
    };
    let mut scope = o.scope;
    let single = !o.names.is_empty();
    if single && scope == Scope::AllWithoutHidden {
        scope = Scope::AllWithHidden;
    }
    let human = !single && !o.simple;
    if human {
        // Printed before parsing, so it is there even when parsing fails.
        out(dump::version_line(&o.file).as_bytes());
    }
    let (conf, filters): (Option<DovecotConf>, Vec<FilterParser>) = if o.dump_defaults {
        (None, engine::parse_text("", "<defaults>").filters)
    } else {
        match DovecotConf::load_lenient(Path::new(&o.file)) {
            Ok(c) => {
                let f = c.parsed.filters.clone();
                (Some(c), f)
            }
            Err(e) => {
                // The warnings seen before the error are Dovecot's too.
                let p = engine::parse_file(&o.file);
                for w in &p.warnings {
                    let (level, text) = engine::message_level(w);
                    eprintln!("doveconf: {level}: {}", engine::text_to_string(text));
                }
                eprintln!("{}", fatal_text(&e));
                return FATAL;
            }
        }
    };
    if let Some(c) = &conf {
        for w in &c.parsed.warnings {
            let (level, text) = engine::message_level(w);
            eprintln!("doveconf: {level}: {}", engine::text_to_string(text));
        }
        for e in &c.parsed.errors {
            eprintln!("doveconf: Error: {}", engine::text_to_string(e));
        }
        for n in &c.notes {
            eprintln!("doveconf: Warning: {n}");
        }
    }
    let filters = narrow(&filters, &o.filter);
    let delayed = conf.as_ref().and_then(|c| c.parsed.delayed.clone());
    let check_errors = conf
        .as_ref()
        .map(|c| c.parsed.check_errors.clone())
        .unwrap_or_default();
    if o.simple {
        // The export stops at the first failing check; doveconf's buffered lines are lost
        // with its fatal exit (seen from 2.3.19: nothing on stdout).
        if let Some(e) = check_errors.first() {
            eprintln!("doveconf: Error: {}", engine::text_to_string(e));
            if let Some(d) = &delayed {
                eprintln!("doveconf: Fatal: {}", engine::text_to_string(d));
            }
            return FATAL;
        }
        out(&export::dump_simple(&filters, scope, &o.names));
        if let Some(d) = &delayed {
            eprintln!("doveconf: Fatal: {}", engine::text_to_string(d));
            return FATAL;
        }
        return 0;
    }
    if single {
        // A section name dumps the section as `doveconf` does, with the global check's
        // errors after it; settings-check failures do not change the exit code here.
        for n in &o.names {
            let name = engine::string_to_text(n);
            let (text, section) =
                export::dump_one(&filters, scope, &name, o.hide_key, o.hide_passwords);
            out(&text);
            if section {
                for e in &check_errors {
                    eprintln!("doveconf: Error: {}", engine::text_to_string(e));
                }
            }
        }
        return 0;
    }
    let mail_location = conf
        .as_ref()
        .map(|c| c.mail_location().to_string())
        .unwrap_or_default();
    let mut head = dump::header(&mail_location);
    if scope == Scope::AllWithoutHidden {
        head.push_str("# NOTE: Send doveconf -n output instead when asking for help.\n");
    }
    out(head.as_bytes());
    out(&export::dump_global(
        &filters,
        scope,
        None,
        o.hide_passwords,
    ));
    for e in &check_errors {
        eprintln!("doveconf: Error: {}", engine::text_to_string(e));
    }
    out(&export::dump_filters(&filters, o.hide_passwords));
    if let Some(d) = delayed {
        eprintln!("doveconf: Fatal: {}", engine::text_to_string(&d));
        return FATAL;
    }
    0
}

/// `-f FILTER`: the global settings with the matching filter's applied, nothing else.
fn narrow(filters: &[FilterParser], f: &Filter) -> Vec<FilterParser> {
    if f.is_global() {
        return filters.to_vec();
    }
    let mut all = filters.to_vec();
    all.push(FilterParser {
        filter: f.clone(),
        tree: engine::Tree::new(),
        file_and_line: String::new(),
    });
    let last = all.len() - 1;
    let tree = match engine::merged_tree(&all, last) {
        Ok(t) => t,
        Err(_) => return filters.to_vec(),
    };
    vec![FilterParser {
        filter: Filter::default(),
        tree,
        file_and_line: String::new(),
    }]
}
