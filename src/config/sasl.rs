//! Cyrus SASL application config files (`smtpd.conf`): the grammar in `sasl.pest`, the
//! model, and the search for the file on Postfix's path.
//!
//! File rules (Cyrus SASL 2.1.28 `lib/config.c` `sasl_config_init()`,
//! `/work/shared/research/fedora-dropin.md` §5.2): lines are read with `fgets()` into a
//! 4096-byte buffer, so a line longer than 4095 bytes is read as several lines; leading
//! white space is skipped; empty lines and lines whose first non-space character is `#` are
//! comments (no inline comments); a key (`[A-Za-z0-9_-]`, lower-cased) must be followed
//! immediately by `:` (`pwcheck_method : x` is an error); the value must be non-empty; its
//! trailing white space is stripped; the first definition of a key wins. Any error rejects
//! the whole file (`SASL_CONFIGERR`), and stops the search.
//!
//! Keys with accessors (SASL `doc/legacy/options.html`): `pwcheck_method` (default
//! `auxprop`), `mech_list` (default: all mechanisms), `saslauthd_path`, `auxprop_plugin`,
//! `sasldb_path` (default `/etc/sasldb2`), `log_level` (default 1).
//!
//! Search ([`find_app_config`]): the file is `<app>.conf`, `app` being Postfix's
//! `smtpd_sasl_path` (default `smtpd`). Tried in order: each `:`-separated directory of
//! `cyrus_sasl_config_path` (if set), then `$config_directory/sasl` (Debian),
//! `/etc/sasl2`, `/usr/lib64/sasl2`, `/usr/lib/sasl2` (the guide's), `/usr/lib/sasl`. The
//! first file that exists and can be read is used. Known difference: libsasl itself, when
//! `cyrus_sasl_config_path` is set, looks only there; Postern also falls back to the usual
//! places, so a file an admin already has keeps being found.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use pest::Parser;
use pest_derive::Parser;

use super::ConfigError;

#[derive(Parser)]
#[grammar = "config/sasl.pest"]
struct SaslGrammar;

/// SASL's `fgets()` buffer: 4096 bytes including the terminating NUL.
const LINE_BUFFER: usize = 4095;

/// A parsed SASL application config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaslConfig {
    pub path: PathBuf,
    /// key (lower-cased) → (value, 1-based line), in order of first definition.
    pub entries: IndexMap<String, (String, usize)>,
}

impl SaslConfig {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|(v, _)| v.as_str())
    }

    /// `pwcheck_method`, split on white space; `auxprop` when unset.
    pub fn pwcheck_method(&self) -> Vec<String> {
        match self.get("pwcheck_method") {
            Some(v) => v.split_whitespace().map(str::to_string).collect(),
            None => vec!["auxprop".to_string()],
        }
    }

    /// `mech_list`, split on white space (and commas); `None` = all mechanisms.
    pub fn mech_list(&self) -> Option<Vec<String>> {
        self.get("mech_list").map(|v| {
            v.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
    }

    /// `saslauthd_path`: the socket path including `/mux`.
    pub fn saslauthd_path(&self) -> Option<&str> {
        self.get("saslauthd_path")
    }

    pub fn auxprop_plugin(&self) -> Option<&str> {
        self.get("auxprop_plugin")
    }

    /// `sasldb_path`, default `/etc/sasldb2`.
    pub fn sasldb_path(&self) -> &str {
        self.get("sasldb_path").unwrap_or("/etc/sasldb2")
    }

    /// `log_level` (SASL_LOG_*), default 1; a value that is not a number counts as 1
    /// (libsasl uses `atoi()`, which gives 0 for text; we keep the documented default).
    pub fn log_level(&self) -> u32 {
        self.get("log_level")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1)
    }
}

/// Split into the lines `fgets()` would return (each without its newline).
fn fgets_lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in text.split_inclusive('\n') {
        let mut rest = line;
        while rest.len() > LINE_BUFFER {
            let mut cut = LINE_BUFFER;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push(&rest[..cut]);
            rest = &rest[cut..];
        }
        out.push(rest.strip_suffix('\n').unwrap_or(rest));
    }
    out
}

/// Parse SASL config text; `path` is used in messages.
pub fn parse(text: &str, path: &Path) -> Result<SaslConfig, ConfigError> {
    let mut cfg = SaslConfig {
        path: path.to_path_buf(),
        entries: IndexMap::new(),
    };
    for (i, line) in fgets_lines(text).into_iter().enumerate() {
        let number = i + 1;
        let err = |msg: &str| ConfigError::at_line(path, number, msg);
        let pair = match SaslGrammar::parse(Rule::line, line) {
            Ok(mut p) => p.next(),
            Err(_) => None,
        };
        let Some(pair) = pair else {
            return Err(err(
                "key must be followed immediately by ':' (SASL_CONFIGERR)",
            ));
        };
        match pair.as_rule() {
            Rule::entry => {
                let mut key = String::new();
                let mut value = String::new();
                for p in pair.into_inner() {
                    match p.as_rule() {
                        Rule::key => key = p.as_str().to_ascii_lowercase(),
                        Rule::value => value = p.as_str().to_string(),
                        _ => {}
                    }
                }
                cfg.entries.entry(key).or_insert((value, number));
            }
            Rule::empty_value => return Err(err("empty value (SASL_CONFIGERR)")),
            _ => {}
        }
    }
    Ok(cfg)
}

/// Read and parse a SASL config file (bytes that are not UTF-8 are read as Latin-1).
pub fn read(path: &Path) -> Result<SaslConfig, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::open(path, e))?;
    let (text, _) = super::text::decode(&bytes);
    parse(&text, path)
}

/// What the search found.
#[derive(Debug)]
pub struct SaslSearch {
    /// The files tried, in order (as the admin knows them, without any test root).
    pub tried: Vec<PathBuf>,
    /// The file used (the first that could be read), if any.
    pub found: Option<PathBuf>,
    /// Its parsed content, or the error that rejected it.
    pub config: Option<Result<SaslConfig, ConfigError>>,
}

/// The directories searched, in order (see the module doc).
pub fn search_dirs(cyrus_sasl_config_path: &str, config_directory: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = cyrus_sasl_config_path
        .split(':')
        .filter(|d| !d.trim().is_empty())
        .map(|d| PathBuf::from(d.trim()))
        .collect();
    for d in [
        config_directory.join("sasl"),
        PathBuf::from("/etc/sasl2"),
        PathBuf::from("/usr/lib64/sasl2"),
        PathBuf::from("/usr/lib/sasl2"),
        PathBuf::from("/usr/lib/sasl"),
    ] {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs
}

/// Find and read `<app_name>.conf` (`app_name` = `smtpd_sasl_path`, default `smtpd`).
pub fn find_app_config(
    app_name: &str,
    cyrus_sasl_config_path: &str,
    config_directory: &Path,
) -> SaslSearch {
    find_app_config_in(
        app_name,
        cyrus_sasl_config_path,
        config_directory,
        Path::new("/"),
    )
}

/// [`find_app_config`] with every absolute directory taken below `root` (for tests).
pub fn find_app_config_in(
    app_name: &str,
    cyrus_sasl_config_path: &str,
    config_directory: &Path,
    root: &Path,
) -> SaslSearch {
    let app = if app_name.is_empty() {
        "smtpd"
    } else {
        app_name
    };
    let mut search = SaslSearch {
        tried: Vec::new(),
        found: None,
        config: None,
    };
    for dir in search_dirs(cyrus_sasl_config_path, config_directory) {
        let logical = dir.join(format!("{app}.conf"));
        let real = match logical.strip_prefix("/") {
            Ok(rel) => root.join(rel),
            Err(_) => root.join(&logical),
        };
        search.tried.push(logical.clone());
        let Ok(bytes) = std::fs::read(&real) else {
            continue;
        };
        let (text, _) = super::text::decode(&bytes);
        search.found = Some(logical.clone());
        search.config = Some(parse(&text, &logical));
        break;
    }
    search
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<SaslConfig, ConfigError> {
        parse(s, Path::new("/etc/sasl2/smtpd.conf"))
    }

    #[test]
    fn rules() {
        let c = p("# c\n   # c\n\nPwCheck_Method:   saslauthd   \nmech_list:PLAIN LOGIN\t\nlog_level: 3 # x\nmech_list: X\n").unwrap();
        assert_eq!(c.pwcheck_method(), ["saslauthd"]);
        assert_eq!(c.mech_list().unwrap(), ["PLAIN", "LOGIN"]);
        assert_eq!(c.get("log_level"), Some("3 # x"));
        assert_eq!(c.entries["mech_list"].1, 5);
        assert_eq!(c.sasldb_path(), "/etc/sasldb2");
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = p("a: b\npwcheck_method : saslauthd\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/sasl2/smtpd.conf, line 2: key must be followed immediately by ':' (SASL_CONFIGERR)"
        );
        let e = p("mech_list:   \n").unwrap_err();
        assert!(e.to_string().contains("line 1: empty value"), "{e}");
    }

    #[test]
    fn defaults() {
        let c = p("").unwrap();
        assert_eq!(c.pwcheck_method(), ["auxprop"]);
        assert_eq!(c.mech_list(), None);
        assert_eq!(c.log_level(), 1);
    }

    #[test]
    fn long_lines_are_split_like_fgets() {
        let e = p(&format!("mech_list: {}\n", "x".repeat(5000))).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
