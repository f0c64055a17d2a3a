//! `postmap` and `postalias`: build, query, list and edit lookup tables, with Postfix's
//! flags, output and exit codes (postmap(1), postalias(1)).
//!
//! Building `hash:FILE` or `btree:FILE` writes Postern's index `FILE.postern.lmdb` (see
//! [`crate::maps::indexed`]) and never the Berkeley DB `FILE.db`; building `lmdb:FILE` writes
//! `FILE.lmdb` in Postfix's own layout, readable by the real Postfix. The table type defaults
//! to `default_database_type` from main.cf (`-c DIR`).
//!
//! Owner and mode of the index are Postfix's ([`crate::maps::indexed::WritePerms`]): a new
//! index gets the source's owner and 0644 without the bits the source lacks, a rebuilt one
//! keeps its own; run by root, the index is written as the source's owner; and an index
//! `mail_owner` could not read gets `mail_owner`'s group and group read, because Postern's
//! daemons read tables as `mail_owner` where Postfix's open them as root. `newaliases`
//! comes here through [`postalias_main`].
//!
//! Building streams ([`crate::maps::build`]): the source is read a line at a time, sorted
//! in chunks of a few megabytes (spilled to `$TMPDIR` when there are several) and appended
//! to the index in key order, so a table of millions of lines is built in about 20 MB.
//! Warnings (bad lines, `duplicate entry`) come in the source's order, as Postfix's, but
//! once the index is written. `-i` adds the entries read from standard input (named
//! `stdin` in warnings) to those the index holds, as Postfix's incremental mode; `-r`
//! lets a later duplicate replace, `-w` ignores it silently.
//!
//! Known limits: `-b`, `-h`, `-m` (header/body/MIME query modes), `-o`, `-p`, `-u`, `-U`,
//! `-F` and `-v` are accepted and have no effect; `-d` on `hash:`/`btree:` edits Postern's
//! index only, so the entry comes back when the source is next built (edit the source).
//! Postfix rewrites an index in place, which needs only write access to the file; Postern
//! writes a new file and renames it, which needs write access to the directory too.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::postfix::{LoadOptions, PostfixConfig};
use crate::maps::build::{IndexBuilder, Origin};
use crate::maps::indexed::{
    RawRecord, WritePerms, lmdb_entries, lmdb_for_each, lmdb_write, postern_index_path, with_nul,
};
use crate::maps::source::{Format, LogicalLines, parse_line};
use crate::maps::{Duplicates, MapError, OpenOptions, Table};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Postmap,
    Postalias,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Postmap => "postmap",
            Tool::Postalias => "postalias",
        }
    }
    fn usage(self) -> &'static str {
        match self {
            Tool::Postmap => {
                "usage: postmap [-bfFhimnNoprsuUvw] [-c config_dir] [-d key] [-q key] [map_type:]file..."
            }
            Tool::Postalias => {
                "usage: postalias [-Nfinoprsuvw] [-c config_dir] [-d key] [-q key] [map_type:]file..."
            }
        }
    }
    fn flags(self) -> &'static str {
        match self {
            Tool::Postmap => "bfFhimnNoprsuUvw",
            Tool::Postalias => "Nfinoprsuvw",
        }
    }
    fn format(self) -> Format {
        match self {
            Tool::Postmap => Format::Postmap,
            Tool::Postalias => Format::Aliases,
        }
    }
}

/// `postmap [options] [type:]file...`
pub fn postmap_main(args: &[String]) -> i32 {
    run(Tool::Postmap, args)
}

/// `postalias [options] [type:]file...`
pub fn postalias_main(args: &[String]) -> i32 {
    run(Tool::Postalias, args)
}

#[derive(Default)]
struct Opts {
    config_dir: Option<PathBuf>,
    query: Option<String>,
    delete: Option<String>,
    dump: bool,
    fold: bool,
    incremental: bool,
    with_nul: bool,
    dups: Option<Duplicates>,
    maps: Vec<String>,
}

fn parse_args(tool: Tool, args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        fold: true,
        with_nul: true,
        ..Opts::default()
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        if !a.starts_with('-') || a == "-" {
            break;
        }
        let chars: Vec<char> = a[1..].chars().collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            match c {
                'c' | 'd' | 'q' => {
                    let rest: String = chars[j + 1..].iter().collect();
                    let val = if !rest.is_empty() {
                        rest
                    } else {
                        i += 1;
                        match args.get(i) {
                            Some(v) => v.clone(),
                            None => {
                                eprintln!("{}: option requires an argument -- '{c}'", tool.name());
                                return Err(tool.usage().into());
                            }
                        }
                    };
                    match c {
                        'c' => o.config_dir = Some(PathBuf::from(val)),
                        'd' => o.delete = Some(val),
                        _ => o.query = Some(val),
                    }
                    j = chars.len();
                    continue;
                }
                c if tool.flags().contains(c) => match c {
                    'f' => o.fold = false,
                    'i' => o.incremental = true,
                    'n' => o.with_nul = false,
                    'N' => o.with_nul = true,
                    'r' => o.dups = Some(Duplicates::Replace),
                    'w' => o.dups = Some(Duplicates::Ignore),
                    's' => o.dump = true,
                    _ => {}
                },
                other => {
                    eprintln!("{}: invalid option -- '{other}'", tool.name());
                    return Err(tool.usage().into());
                }
            }
            j += 1;
        }
        i += 1;
    }
    o.maps = args[i..].to_vec();
    let modes = [o.query.is_some(), o.delete.is_some(), o.dump]
        .iter()
        .filter(|b| **b)
        .count();
    if modes > 1 {
        return Err("specify only one of -s -q or -d".into());
    }
    if o.maps.is_empty() {
        return Err(tool.usage().into());
    }
    Ok(o)
}

fn run(tool: Tool, args: &[String]) -> i32 {
    let name = tool.name();
    let fatal = |msg: &str| {
        eprintln!("{name}: fatal: {msg}");
        1
    };
    let o = match parse_args(tool, args) {
        Ok(o) => o,
        Err(msg) => return fatal(&msg),
    };
    let cfg = match PostfixConfig::load(&LoadOptions {
        config_dir: o.config_dir.clone(),
        overrides: Vec::new(),
    }) {
        Ok(c) => c,
        Err(e) => return fatal(&e.to_string()),
    };
    let default_type = cfg
        .get("default_database_type")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "hash".into());
    let warn_name = name.to_string();
    let opts = OpenOptions {
        fold_case: o.fold,
        duplicates: o.dups.unwrap_or(Duplicates::Warn),
        warn: Arc::new(move |m: &str| eprintln!("{warn_name}: warning: {m}")),
    };
    let specs: Vec<String> = o.maps.iter().map(|m| with_type(m, &default_type)).collect();
    // The account Postern's daemons read tables as (module docs: index permissions).
    let mail_owner = cfg
        .get("mail_owner")
        .and_then(|n| nix::unistd::User::from_name(n.trim()).ok().flatten())
        .map(|u| (u.uid.as_raw(), u.gid.as_raw()));
    let result = if let Some(key) = &o.query {
        query(tool, &specs, key, &opts)
    } else if let Some(key) = &o.delete {
        delete(&specs, key, &opts, mail_owner)
    } else if o.dump {
        dump(tool, &specs, &opts)
    } else {
        let host = cfg.get("myhostname").unwrap_or_default();
        build(tool, &specs, &o, &opts, &host, mail_owner).map(|()| 0)
    };
    match result {
        Ok(code) => code,
        Err(e) => fatal(&e.to_string()),
    }
}

/// `file` → `default_database_type:file`; `type:file` unchanged.
fn with_type(map: &str, default_type: &str) -> String {
    match map.split_once(':') {
        Some((t, _)) if !t.is_empty() && !t.contains('/') => map.to_string(),
        _ => format!("{default_type}:{map}"),
    }
}

fn open_for_read(tool: Tool, spec: &str, opts: &OpenOptions) -> Result<Arc<dyn Table>, MapError> {
    let (kind, file) = crate::maps::split_spec(spec)?;
    match kind {
        "hash" | "btree" if tool == Tool::Postalias => {
            Ok(Arc::new(crate::maps::indexed::SourceTable::open_format(
                kind,
                file,
                spec,
                Format::Aliases,
                opts,
            )?))
        }
        _ => crate::maps::open(spec, opts),
    }
}

fn query(tool: Tool, specs: &[String], key: &str, opts: &OpenOptions) -> Result<i32, MapError> {
    let tables: Vec<Arc<dyn Table>> = specs
        .iter()
        .map(|s| open_for_read(tool, s, opts))
        .collect::<Result<_, _>>()?;
    let find = |k: &str| -> Result<Option<String>, MapError> {
        for t in &tables {
            if let Some(v) = t.lookup(k)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    };
    let mut out = std::io::stdout().lock();
    if key == "-" {
        let mut found = false;
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| MapError::Other(format!("read standard input: {e}")))?;
            let k = line.trim_end_matches('\r');
            if let Some(v) = find(k)? {
                let _ = writeln!(out, "{k}\t{v}");
                found = true;
            }
        }
        return Ok(if found { 0 } else { 1 });
    }
    match find(key)? {
        Some(v) => {
            let _ = writeln!(out, "{v}");
            Ok(0)
        }
        None => Ok(1),
    }
}

fn dump(tool: Tool, specs: &[String], opts: &OpenOptions) -> Result<i32, MapError> {
    let mut out = std::io::stdout().lock();
    for spec in specs {
        let t = open_for_read(tool, spec, opts)?;
        let Some(entries) = t.entries() else {
            return Err(MapError::Other(format!(
                "table {spec}: sequential access is not supported"
            )));
        };
        for (k, v) in entries {
            let _ = match tool {
                Tool::Postmap => writeln!(out, "{k}\t{v}"),
                Tool::Postalias => writeln!(out, "{k}:\t{v}"),
            };
        }
    }
    Ok(0)
}

/// The index file `postmap` writes for a spec, and the name duplicate warnings use.
fn index_for(spec: &str) -> Result<(PathBuf, String, String), MapError> {
    let (kind, file) = crate::maps::split_spec(spec)?;
    match kind {
        "hash" | "btree" => Ok((postern_index_path(file), format!("{file}.db"), file.into())),
        "lmdb" => Ok((
            PathBuf::from(format!("{file}.lmdb")),
            spec.into(),
            file.into(),
        )),
        other => Err(MapError::Other(format!(
            "unsupported dictionary type for this operation: {other}"
        ))),
    }
}

/// The mode, owner and writer of the index `index` built from `source` (see
/// [`WritePerms::for_index`]); the source's own metadata, or the index's when there is no
/// source (`postmap -d` on an LMDB file).
fn index_perms(
    source: &Path,
    index: &Path,
    mail_owner: Option<(u32, u32)>,
) -> Result<WritePerms, MapError> {
    let existing = std::fs::metadata(index).ok();
    let src = match std::fs::metadata(source) {
        Ok(m) => m,
        Err(e) => match &existing {
            Some(m) => m.clone(),
            None => return Err(MapError::open(source, e)),
        },
    };
    Ok(WritePerms::for_index(
        &src,
        existing.as_ref(),
        nix::unistd::geteuid().is_root(),
        mail_owner,
    ))
}

fn delete(
    specs: &[String],
    key: &str,
    opts: &OpenOptions,
    mail_owner: Option<(u32, u32)>,
) -> Result<i32, MapError> {
    let key = if opts.fold_case {
        crate::maps::fold(key)
    } else {
        key.to_string()
    };
    let mut deleted = false;
    for spec in specs {
        let (index, _, source) = index_for(spec)?;
        let entries = lmdb_entries(&index)?;
        let before = entries.len();
        let mut kept: Vec<RawRecord> = entries
            .into_iter()
            .filter(|(k, _)| *k != key)
            .map(|(k, v)| (with_nul(&k, true), with_nul(&v, true)))
            .collect();
        if kept.len() != before {
            kept.sort();
            let payload = kept
                .iter()
                .map(|(k, v)| (k.len() + v.len() + 16) as u64)
                .sum();
            let perms = index_perms(Path::new(&source), &index, mail_owner)?;
            lmdb_write(&index, &mut kept.into_iter().map(Ok), payload, &perms)?;
            deleted = true;
        }
    }
    Ok(if deleted { 0 } else { 1 })
}

/// Read the entries of a source (the file, or standard input for `-i`) into `b`, one
/// logical line at a time; `path` names it in warnings (`stdin` for standard input, as
/// Postfix names it).
fn read_entries(
    b: &mut IndexBuilder,
    input: impl std::io::BufRead,
    path: &str,
    format: Format,
    opts: &OpenOptions,
) -> Result<(), MapError> {
    let mut lines = LogicalLines::new(input, path);
    loop {
        let next = {
            let warn = |m: &str| b.warn(m);
            lines.next_line(&warn)
        };
        let ll = match next {
            Ok(Some(ll)) => ll,
            Ok(None) => return Ok(()),
            Err(e) => return Err(MapError::Other(format!("read {path}: {e}"))),
        };
        let entry = {
            let warn = |m: &str| b.warn(m);
            parse_line(&ll, path, format, opts, &warn)
        };
        if let Some((k, v)) = entry {
            b.push(&k, &v, Origin::Source)?;
        }
    }
}

/// Build each table's index from its source, streaming (see [`crate::maps::build`]): the
/// source is read a line at a time and the index written in key order, so memory stays
/// bounded whatever the size of the table. `-i` adds standard input's entries to what the
/// index holds (Postfix's incremental mode) instead of reading the source file.
fn build(
    tool: Tool,
    specs: &[String],
    o: &Opts,
    opts: &OpenOptions,
    myhostname: &str,
    mail_owner: Option<(u32, u32)>,
) -> Result<(), MapError> {
    for spec in specs {
        let (index, dict_name, source) = index_for(spec)?;
        let mut b = IndexBuilder::new(o.with_nul);
        if o.incremental {
            // The index's entries stay (Postfix updates it in place); none when it is
            // missing or cannot be read, as Postfix then creates it.
            let strip =
                |b: &[u8]| String::from_utf8_lossy(b.strip_suffix(b"\0").unwrap_or(b)).into_owned();
            let _ = lmdb_for_each(&index, &mut |k, v| {
                b.push(&strip(k), &strip(v), Origin::Existing)
            });
            read_entries(
                &mut b,
                std::io::stdin().lock(),
                "stdin",
                tool.format(),
                opts,
            )?;
        } else {
            let path = Path::new(&source);
            let f = std::fs::File::open(path).map_err(|e| MapError::open(path, e))?;
            let input = std::io::BufReader::with_capacity(1 << 16, f);
            read_entries(&mut b, input, &source, tool.format(), opts)?;
        }
        if tool == Tool::Postalias {
            // Sendmail compatibility entries, as Postfix's postalias writes them.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            b.push("@", "@", Origin::Added)?;
            b.push("YP_LAST_MODIFIED", &now.to_string(), Origin::Added)?;
            b.push("YP_MASTER_NAME", myhostname, Origin::Added)?;
        }
        let perms = match index_perms(Path::new(&source), &index, mail_owner) {
            // `-i` with neither source nor index: a new index of the default mode.
            Err(_) if o.incremental => WritePerms {
                mode: 0o644,
                owner: None,
                run_as: None,
            },
            other => other?,
        };
        let payload = b.payload();
        let mut records = b.finish(opts.duplicates, &dict_name)?;
        let written = lmdb_write(&index, &mut records, payload, &perms);
        for w in records.warnings() {
            opts.warn(&w);
        }
        written?;
    }
    Ok(())
}
