//! `doveconf`: print `dovecot.conf` settings as Dovecot 2.3.19's `doveconf` does.
//!
//! Usage: `doveconf [-c FILE] [-n] [-h] [-P] [NAME …]`
//! * `-c FILE` — config file (default `/etc/dovecot.conf` when it exists, else
//!   `/etc/dovecot/dovecot.conf`: [`crate::config::dovecot::default_conf_path`]);
//! * `-n` — non-default settings, byte for byte as the real `doveconf -n` (see
//!   `config::dovecot::dump`); with NAMEs, only those settings or sections;
//! * `NAME …` without `-n` — `NAME = value` (default included); `-h` prints the value only;
//! * `-P` — show passwords and keys instead of `# hidden, use -P to show it`.
//!
//! Errors are worded as Dovecot's, on stderr, exit code 89 (`FATAL_DEFAULT`):
//! `doveconf: Fatal: Error in configuration file FILE line N: Unknown setting: imap_listen`.
//! A 0.99 or 1.x file (which the real 2.3 rejects or half-converts) is printed as its 2.x
//! translation on stdout, with one `doveconf: Warning: <era> key K at FILE:LINE → 2.x form`
//! line per translated key on stderr. `-a` (every setting) is not implemented.

use std::path::Path;

use crate::config::ConfigError;
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
        ConfigError::Other(m) => format!("doveconf: Fatal: {m}"),
    }
}

pub fn main(args: &[String]) -> i32 {
    let mut file = crate::config::dovecot::default_conf_path()
        .display()
        .to_string();
    let mut non_default = false;
    let mut hide_key = false;
    let mut show_passwords = false;
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        match a.as_str() {
            "-c" => {
                i += 1;
                match args.get(i) {
                    Some(f) => file = f.clone(),
                    None => {
                        eprintln!("doveconf: option requires an argument -- 'c'");
                        return USAGE;
                    }
                }
            }
            "-n" => non_default = true,
            "-h" => hide_key = true,
            "-P" => show_passwords = true,
            "-a" => {
                eprintln!("doveconf: -a (every setting) is not implemented by Postern; use -n");
                return USAGE;
            }
            s if s.starts_with('-') && s.len() > 1 => {
                eprintln!("doveconf: invalid option -- '{}'", &s[1..]);
                return USAGE;
            }
            _ => names.push(a.clone()),
        }
        i += 1;
    }
    if !non_default && names.is_empty() {
        eprintln!("doveconf: -a (every setting) is not implemented by Postern; use -n");
        return USAGE;
    }

    let path = Path::new(&file);
    let printing_header = non_default && !hide_key;
    let (conf, unclosed) = match DovecotConf::load_lenient(path) {
        Ok(c) => c,
        Err(e) => {
            if printing_header {
                // doveconf prints its OS and host lines only once the file has been parsed.
                let h: String = dump::header(&file, "")
                    .lines()
                    .take(2)
                    .map(|l| format!("{l}\n"))
                    .collect();
                print!("{h}");
            }
            eprintln!("{}", fatal_text(&e));
            return FATAL;
        }
    };
    for w in &conf.warnings {
        eprintln!("doveconf: Warning: {w}");
    }
    for n in &conf.notes {
        eprintln!("doveconf: Warning: {n}");
    }
    if printing_header {
        print!("{}", dump::header(&file, conf.mail_location()));
    }
    if let Err(m) = conf.check() {
        eprintln!("doveconf: Error: {m}");
        eprintln!(
            "doveconf: Fatal: Error in configuration file {}: {m}",
            path.display()
        );
        return FATAL;
    }
    if let Some(e) = unclosed {
        // doveconf notices the unclosed section after dumping what it read.
        if non_default && names.is_empty() {
            print!("{}", dump::settings_text(&conf, show_passwords));
        }
        eprintln!("{}", fatal_text(&e));
        return FATAL;
    }
    if non_default {
        if names.is_empty() {
            print!("{}", dump::settings_text(&conf, show_passwords));
        } else {
            for n in &names {
                print!("{}", dump::filtered_text(&conf, n, show_passwords));
            }
        }
        return 0;
    }
    for n in &names {
        match conf.get(n) {
            Some(v) if hide_key => println!("{v}"),
            Some(v) => println!("{n} = {v}"),
            None => {
                let t = dump::filtered_text(&conf, n, show_passwords);
                if t.is_empty() {
                    eprintln!("doveconf: Fatal: Unknown setting: {n}");
                    return FATAL;
                }
                print!("{t}");
            }
        }
    }
    0
}
