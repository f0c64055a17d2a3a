//! `postconf`: show and edit the Postfix configuration, with Postfix 3.7's flags, output,
//! warnings and exit codes (checked against the real `postconf`; see `tests/postconf.rs` and
//! `compat-fixtures/postfix/`).
//!
//! Supported: `-c DIR`, `-d`, `-n`, `-x`, `-h`, `-H`, `-f`, `-p`, `-o name=value`, names,
//! `-e name=value …`, `-X name …`, `-# name …`, `-M`, `-F`, `-P` (master.cf, see
//! [`super::postconf_master`]), `-m`, `-a`, `-A`, `-l`, `-v` (accepted, no effect).
//! Not supported: `-b`/`-t` (bounce templates), `-T` (TLS library queries) — they fail with
//! a clear message.
//!
//! Before showing anything (except with `-d`, which does not read main.cf), every main.cf
//! and master.cf `-o` value is scanned and every built-in or service parameter's value
//! expanded, as Postfix's `pcf_register_user_parameters()` does: a macro syntax error or a
//! reference chain deeper than 100 there is fatal with nothing printed
//! ([`PostfixConfig::macro_check`]). Diagnostics show non-printable bytes as `?`
//! ([`text::printable`]). Edge cases are recorded in `compat-fixtures/postconf-cases/`.
//!
//! Output lines go through [`print_line`], Postfix's `pcf_print_line()`: white space between
//! words is normalised to one space, and with `-f` lines fold at 80 columns with a
//! four-space indent.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::postfix::{LoadOptions, PostfixConfig};
use crate::config::{ConfigError, maincf, text};

const USAGE: &str = "usage: postconf [-a (server SASL types)] [-A (client SASL types)] [-b (bounce templates)] [-c config_dir] [-c param_class] [-d (parameter defaults)] [-e (edit configuration)] [-f (fold lines)] [-F (master.cf fields)] [-h (no names)] [-H (no values)] [-l (lock types)] [-m (map types)] [-M (master.cf)] [-n (non-default parameters)] [-o name=value (override parameter value)] [-p (main.cf, default)] [-P (master.cf parameters)] [-t (bounce templates)] [-T compile-version|run-version|public-key-algorithms] [-v (verbose)] [-x (expand parameter values)] [-X (exclude)] [-# (comment-out)] [name...]";

/// The lookup table types Postern implements or recognises (see `man/postconf.1`).
pub const MAP_TYPES: &[&str] = &[
    "btree", "cidr", "environ", "fail", "hash", "inline", "internal", "lmdb", "pcre", "proxy",
    "regexp", "static", "texthash", "unionmap", "unix",
];

#[derive(Debug, Default)]
struct Opts {
    config_dir: Option<PathBuf>,
    defaults: bool,
    nondefault: bool,
    expand: bool,
    no_names: bool,
    no_values: bool,
    fold: bool,
    edit: bool,
    exclude: bool,
    comment: bool,
    master: Option<char>,
    show: Option<char>,
    overrides: Vec<(String, String)>,
    names: Vec<String>,
}

fn fatal(msg: impl std::fmt::Display) -> i32 {
    eprintln!("postconf: fatal: {msg}");
    1
}

fn warn(msg: impl std::fmt::Display) {
    eprintln!("postconf: warning: {msg}");
}

/// getopt(3)-style parsing of postconf's options (option clusters, `-cDIR` or `-c DIR`).
fn parse_args(args: &[String]) -> Result<Opts, i32> {
    let mut o = Opts::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            o.names.extend(args[i + 1..].iter().cloned());
            break;
        }
        if !a.starts_with('-') || a == "-" {
            o.names.push(a.clone());
            i += 1;
            continue;
        }
        let chars: Vec<char> = a[1..].chars().collect();
        let mut k = 0;
        while k < chars.len() {
            let c = chars[k];
            match c {
                'c' | 'o' | 'T' => {
                    let val: String = if k + 1 < chars.len() {
                        chars[k + 1..].iter().collect()
                    } else {
                        i += 1;
                        match args.get(i) {
                            Some(v) => v.clone(),
                            None => {
                                eprintln!("postconf: option requires an argument -- '{c}'");
                                return Err(fatal(USAGE));
                            }
                        }
                    };
                    k = chars.len();
                    match c {
                        'c' => o.config_dir = Some(PathBuf::from(val)),
                        'o' => match maincf::split_nameval(&val) {
                            Ok((n, v)) => o.overrides.push((n, v)),
                            Err(e) => return Err(fatal(format!("{e}: \"{val}\""))),
                        },
                        _ => {
                            return Err(fatal(
                                "-T (TLS library queries) is not supported by Postern",
                            ));
                        }
                    }
                    continue;
                }
                'd' => o.defaults = true,
                'n' => o.nondefault = true,
                'x' => o.expand = true,
                'h' => o.no_names = true,
                'H' => o.no_values = true,
                'f' => o.fold = true,
                'e' => o.edit = true,
                'X' => o.exclude = true,
                '#' => o.comment = true,
                'p' => {}
                'v' => {}
                'M' | 'F' | 'P' => o.master = Some(c),
                'm' | 'a' | 'A' | 'l' => o.show = Some(c),
                'b' | 't' => {
                    return Err(fatal(
                        "-b/-t (bounce templates) are not supported by Postern",
                    ));
                }
                _ => {
                    eprintln!("postconf: invalid option -- '{c}'");
                    return Err(fatal(USAGE));
                }
            }
            k += 1;
        }
        i += 1;
    }
    Ok(o)
}

pub fn main(args: &[String]) -> i32 {
    let o = match parse_args(args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    if o.defaults && o.nondefault {
        return fatal("specify one of -d -n");
    }
    if let Some(c) = o.show {
        let list: &[&str] = match c {
            'm' => MAP_TYPES,
            'a' => &["cyrus", "dovecot"],
            'A' => &["cyrus"],
            _ => &["flock", "fcntl", "dotlock"],
        };
        let mut out = std::io::stdout().lock();
        for t in list {
            let _ = writeln!(out, "{t}");
        }
        return 0;
    }
    if let Some(m) = o.master {
        return master_mode(&o, m);
    }
    if o.edit || o.exclude || o.comment {
        return edit_main(&o);
    }
    show_main(&o)
}

fn load(o: &Opts) -> Result<PostfixConfig, i32> {
    let lo = LoadOptions {
        config_dir: o.config_dir.clone(),
        overrides: o.overrides.clone(),
    };
    PostfixConfig::load(&lo).map_err(fatal)
}

/// `-M`, `-F`, `-P` (with `-e`, `-X`, `-#`, `-f`, `-x`): master.cf, in
/// [`super::postconf_master`]. `$name` in `-x` output is expanded with main.cf.
fn master_mode(o: &Opts, mode: char) -> i32 {
    use super::postconf_master::{MasterArgs, MasterEdit, MasterMode};
    let dir = o
        .config_dir
        .clone()
        .or_else(|| std::env::var_os("MAIL_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(crate::config::postfix::DEFAULT_CONFIG_DIR));
    let args = MasterArgs {
        config_dir: dir,
        mode: match mode {
            'M' => MasterMode::M,
            'F' => MasterMode::F,
            _ => MasterMode::P,
        },
        edit: if o.edit {
            MasterEdit::Edit
        } else if o.exclude {
            MasterEdit::Remove
        } else if o.comment {
            MasterEdit::CommentOut
        } else {
            MasterEdit::None
        },
        fold: o.fold,
        expand: o.expand,
        names: o.names.clone(),
    };
    // The expander sees main.cf (with -c/-o), as Postfix's pcf_expand_parameter_value.
    let cfg = PostfixConfig::load(&LoadOptions {
        config_dir: o.config_dir.clone(),
        overrides: o.overrides.clone(),
    })
    .ok();
    if let Some(c) = &cfg
        && let Err(code) = check_macros(c)
    {
        return code;
    }
    let expand = |v: &str| -> Result<String, String> {
        match &cfg {
            Some(c) => {
                let e = c.expand(v);
                if e.error {
                    Err(e.warnings.join("\n"))
                } else {
                    Ok(e.value)
                }
            }
            None => Ok(v.to_string()),
        }
    };
    super::postconf_master::run(&args, &expand)
}

/// `pcf_print_line()`: normalise white space, optionally fold at 80 columns.
/// `enc` turns the text back into the bytes the config file had (Latin-1 files stay Latin-1).
pub fn print_line(out: &mut impl Write, fold: bool, enc: text::Encoding, text: &str) {
    const LIMIT: usize = 80;
    const INDENT: &str = "    ";
    let mut line = String::new();
    let mut line_len = 0usize;
    for word in text
        .split([' ', '\t', '\r', '\n'])
        .filter(|w| !w.is_empty())
    {
        if line_len > 0 {
            if !fold || line_len + word.len() < LIMIT {
                line.push(' ');
                line_len += 1;
            } else {
                line.push('\n');
                line.push_str(INDENT);
                line_len = INDENT.len();
            }
        }
        line.push_str(word);
        line_len += word.len();
    }
    line.push('\n');
    let _ = out.write_all(&text::encode(&line, enc));
}

/// Print the warnings of [`PostfixConfig::macro_check`]; `Err(1)` after `fatal: macro
/// processing error` when a value cannot be expanded, or `fatal: unknown inet_protocols
/// value …` (nothing else is printed then, as Postfix's postconf stops before it shows
/// anything).
fn check_macros(cfg: &PostfixConfig) -> Result<Vec<String>, i32> {
    match cfg.macro_check() {
        Ok(w) => Ok(w),
        Err((w, fatal_msg)) => {
            let early = cfg
                .usage_warnings()
                .into_iter()
                .filter(|l| !l.contains(": unused parameter: "));
            for l in cfg.warnings.iter().cloned().chain(early).chain(w) {
                warn(text::printable(&l, cfg.main.encoding));
            }
            Err(fatal(fatal_msg))
        }
    }
}

fn show_main(o: &Opts) -> i32 {
    let cfg = if o.defaults {
        PostfixConfig::load_defaults_only(&LoadOptions {
            config_dir: o.config_dir.clone(),
            overrides: o.overrides.clone(),
        })
        .map_err(fatal)
    } else {
        load(o)
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(code) => return code,
    };
    if o.defaults {
        // postconf -d still reads master.cf (for the service parameters) and says so
        // when it cannot.
        for w in &cfg.warnings {
            warn(text::printable(w, cfg.main.encoding));
        }
    } else {
        let scan = match check_macros(&cfg) {
            Ok(w) => w,
            Err(code) => return code,
        };
        for w in cfg
            .warnings
            .iter()
            .chain(scan.iter())
            .chain(cfg.usage_warnings().iter())
        {
            warn(text::printable(w, cfg.main.encoding));
        }
    }
    // Which names, and their raw values.
    let names: Vec<String> = if !o.names.is_empty() {
        o.names.clone()
    } else if o.defaults {
        cfg.default_names()
    } else if o.nondefault {
        let mut v: Vec<String> = cfg
            .explicit_names()
            .filter(|n| cfg.is_known(n) && !crate::config::params::READ_ONLY.contains(n))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    } else {
        cfg.all_names()
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = false;
    let enc = cfg.main.encoding;
    for name in names {
        let raw = if o.defaults {
            cfg.default_raw(&name)
        } else if o.nondefault {
            cfg.explicit(&name).map(str::to_string)
        } else {
            cfg.raw(&name)
        };
        // A name set in main.cf that Postfix does not know (not built-in, service- or
        // user-defined) is not shown, even when asked for by name.
        let raw = if !o.defaults && !o.names.is_empty() && !cfg.is_known(&name) {
            None
        } else {
            raw
        };
        let Some(raw) = raw else {
            if o.names.contains(&name) {
                let _ = out.flush();
                warn(format!("{name}: unknown parameter"));
            }
            continue;
        };
        let value = if o.expand && !crate::config::params::RAW.contains(&name.as_str()) {
            let e = if o.defaults {
                cfg.expand_default(&raw)
            } else {
                cfg.expand(&raw)
            };
            if e.error {
                let _ = out.flush();
                for w in &e.warnings {
                    warn(w);
                }
                failed = true;
                break;
            }
            e.value
        } else {
            raw
        };
        let text = if o.no_names {
            value
        } else if o.no_values {
            name.clone()
        } else {
            format!("{name} = {value}")
        };
        print_line(&mut out, o.fold, enc, &text);
    }
    let _ = out.flush();
    if failed {
        return fatal("macro processing error");
    }
    0
}

/// `-e`, `-X`, `-#`: edit main.cf in place, as Postfix's `pcf_edit_main()` does. Comments,
/// blank lines and unrelated settings are copied byte for byte; the file is written to
/// `main.cf.tmp` and renamed over the original.
fn edit_main(o: &Opts) -> i32 {
    let dir = o
        .config_dir
        .clone()
        .or_else(|| std::env::var_os("MAIL_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(crate::config::postfix::DEFAULT_CONFIG_DIR));
    if o.names.is_empty() {
        return if o.edit {
            fatal("-e requires name=value argument")
        } else {
            fatal("missing service argument")
        };
    }
    // The requested changes: name → new value (None = remove / comment out).
    let mut changes: Vec<(String, Option<String>, bool)> = Vec::new();
    for a in &o.names {
        if o.edit {
            match maincf::split_nameval(a) {
                Ok((n, v)) => changes.push((n, Some(v), false)),
                Err(e) => return fatal(format!("{e}: \"{a}\"")),
            }
        } else {
            changes.push((a.trim().to_string(), None, false));
        }
    }
    let path = dir.join("main.cf");
    match edit_file(&path, &mut changes, o.comment) {
        Ok(()) => 0,
        Err(e) => fatal(e),
    }
}

fn edit_file(
    path: &Path,
    changes: &mut [(String, Option<String>, bool)],
    comment_out: bool,
) -> Result<(), ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::open(path, e))?;
    let (txt, enc) = text::decode(&bytes);
    let lines = maincf::physical_lines(&txt, path)?;
    let mut out = String::with_capacity(txt.len() + 256);
    let mut interesting = false;
    for pl in &lines {
        match pl.kind {
            maincf::LineKind::Comment | maincf::LineKind::Blank => out.push_str(pl.raw),
            maincf::LineKind::Continuation => {
                if !interesting {
                    out.push_str(pl.raw);
                } else if comment_out {
                    out.push('#');
                    out.push_str(pl.raw);
                }
            }
            maincf::LineKind::Text => {
                let name = maincf::split_nameval(pl.text).ok().map(|(n, _)| n);
                let hit = name
                    .as_ref()
                    .and_then(|n| changes.iter().position(|c| &c.0 == n));
                interesting = hit.is_some();
                match hit {
                    None => out.push_str(pl.raw),
                    Some(i) => {
                        let (n, v, found) = &mut changes[i];
                        if comment_out {
                            out.push('#');
                            out.push_str(pl.raw);
                        } else if let Some(v) = v {
                            if *found {
                                warn(format!("{}: multiple entries for \"{n}\"", path.display()));
                            }
                            out.push_str(&format!("{n} = {v}\n"));
                        }
                        *found = true;
                    }
                }
            }
        }
        if !pl.raw.ends_with('\n') && pl.kind != maincf::LineKind::Continuation {
            // A last line without a newline: keep the file well-formed for appended lines.
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    for (n, v, found) in changes.iter() {
        if let (false, Some(v)) = (found, v) {
            out.push_str(&format!("{n} = {v}\n"));
        }
    }
    write_atomically(path, &text::encode(&out, enc))
}

/// Write `path.tmp`, fsync, keep the original's mode, rename over `path`.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode()).ok();
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        if let Some(m) = mode {
            f.set_permissions(std::fs::Permissions::from_mode(m))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ConfigError::Other(format!(
            "write {}: {}",
            path.display(),
            crate::config::error::strerror(&e)
        ))
    })
}
