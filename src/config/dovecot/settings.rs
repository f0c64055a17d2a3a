//! Dovecot 2.3.19's settings: names, types and defaults, and value checking and normalisation
//! the way `doveconf` parses and re-prints values.
//!
//! * The settings table `settings-2.3.19.tsv` is generated from the real `doveconf -s` (every
//!   setting; those `doveconf -a` leaves out are flagged `hidden`, Dovecot's
//!   `SET_FLAG_HIDDEN`) and its complaints by `scripts/regen-dovecot-fixtures table`; `defaults-2.3.19.conf` beside it is
//!   `doveconf -a` of an empty file (the built-in services and their listeners).
//! * The sections (Dovecot's `SET_DEFLIST`/`SET_DEFLIST_UNIQUE`/`SET_STRLIST` settings), the key
//!   naming each section element (`type_offset`), aliases, enum value lists and `STR_VARS`
//!   settings are taken from the 2.3.19.1 sources (`master-settings.c`, `auth-settings.c`,
//!   `mail-storage-settings.c`, `stats-settings.c`, … at tag 2.3.19.1).
//! * Values are parsed as `settings-parser.c` does (`get_bool`, `get_uint`, `get_octal`,
//!   `settings_get_time_full`, `settings_get_size`, `get_enum`, `net_str2port_zero`) with its
//!   error texts, and printed as `config-request.c` prints them (`10M` → `10 M`, `60s` →
//!   `1 mins`, `y` → `yes`).

use std::collections::HashMap;
use std::sync::OnceLock;

const TABLE: &str = include_str!("settings-2.3.19.tsv");
/// `doveconf -a` of an empty file: the default value of every setting and the built-in
/// services with their listeners.
pub const DEFAULTS: &str = include_str!("defaults-2.3.19.conf");

/// A setting's value type, as Dovecot's settings parser knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Size,
    Time,
    TimeMsecs,
    Uint,
    Octal,
    Port,
    /// One of the listed words (the first is the default).
    Enum(&'static [&'static str]),
    Str,
    /// A string with `%variables`: printed even when unchanged inside a unique section
    /// (`namespace { location = }`), a quirk of `config_export_type()`.
    StrVars,
    /// A list of sections (`service`, `passdb`, …) of the named info; `unique`: elements are
    /// identified by their name (`SET_DEFLIST_UNIQUE`), else by a counter.
    List {
        info: &'static str,
        unique: bool,
    },
    /// `plugin { key = value }`: free-form keys.
    StrList,
    /// Another name for the setting named here (`mail` → `mail_location`).
    Alias(&'static str),
}

/// One setting of an info.
#[derive(Debug, Clone)]
pub struct Def {
    pub key: String,
    pub kind: Kind,
    /// Default as `doveconf -a` prints it.
    pub default: String,
    /// Belongs to the auth process's settings: refused inside `local`/`remote` filters.
    pub auth: bool,
    /// `SET_FLAG_HIDDEN` (`DEF(SIZE_HIDDEN, …)`): `doveconf -a` shows it only when it is set,
    /// `-s` and a named query always.
    pub hidden: bool,
}

/// A settings structure: the root (global settings) or one kind of section.
#[derive(Debug)]
pub struct Info {
    pub name: &'static str,
    pub defines: Vec<Def>,
    index: HashMap<String, usize>,
    /// The setting naming an element of a list of these (`name`, `path`).
    pub name_key: Option<&'static str>,
}

impl Info {
    pub fn find(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }
    pub fn def(&self, key: &str) -> Option<&Def> {
        self.find(key).map(|i| &self.defines[i])
    }
    /// Follow an alias to the setting it names.
    pub fn resolve(&self, idx: usize) -> usize {
        match self.defines[idx].kind {
            Kind::Alias(target) => self.find(target).unwrap_or(idx),
            _ => idx,
        }
    }
}

/// Allowed values of Dovecot 2.3.19's enum settings (the default strings `"a:b:c"` of the
/// `*-settings.c` files; the first value is the default).
pub fn enum_values(scope: &str, name: &str) -> Option<&'static [&'static str]> {
    Some(match (scope, name) {
        (_, "ssl") => &["yes", "no", "required"],
        ("passdb", "skip") => &["never", "authenticated", "unauthenticated"],
        ("userdb", "skip") => &["never", "found", "notfound"],
        ("passdb" | "userdb", "result_success") => &[
            "return-ok",
            "return",
            "return-fail",
            "continue",
            "continue-ok",
            "continue-fail",
        ],
        ("passdb" | "userdb", "result_failure" | "result_internalfail") => &[
            "continue",
            "return",
            "return-ok",
            "return-fail",
            "continue-ok",
            "continue-fail",
        ],
        ("passdb" | "userdb", "auth_verbose") => &["default", "yes", "no"],
        (_, "submission_ssl") => &["no", "smtps", "submissions", "starttls"],
        (_, "imap_fetch_failure") => &["disconnect-immediately", "disconnect-after", "no-after"],
        (_, "pop3_uidl_duplicates") => &["allow", "rename"],
        (_, "pop3_delete_type") => &["default", "expunge", "flag"],
        (_, "mail_fsync") => &["optimized", "never", "always"],
        (_, "lock_method") => &["fcntl", "flock", "dotlock"],
        ("namespace", "type") => &["private", "shared", "public"],
        ("namespace", "list") => &["yes", "no", "children"],
        ("mailbox", "auto") => &["no", "create", "subscribe"],
        (_, "pop3c_ssl") => &["no", "pop3s", "starttls"],
        (_, "imapc_ssl") => &["no", "imaps", "starttls"],
        (_, "mbox_md5") => &["apop3d", "all"],
        (_, "lmtp_hdr_delivery_address") => &["final", "none", "original"],
        (_, "submission_relay_ssl") => &["no", "smtps", "starttls"],
        (_, "doveadm_ssl") => &["no", "ssl", "starttls"],
        _ => return None,
    })
}

fn infos() -> &'static HashMap<&'static str, Info> {
    static T: OnceLock<HashMap<&'static str, Info>> = OnceLock::new();
    T.get_or_init(|| {
        const SCOPES: [&str; 11] = [
            "root",
            "service",
            "inet_listener",
            "unix_listener",
            "fifo_listener",
            "namespace",
            "mailbox",
            "passdb",
            "userdb",
            "metric",
            "event_exporter",
        ];
        let mut defs: HashMap<&'static str, Vec<Def>> = HashMap::new();
        // The naming setting first, as in the C define lists.
        for (scope, key) in [
            ("service", "name"),
            ("inet_listener", "name"),
            ("unix_listener", "path"),
            ("fifo_listener", "path"),
            ("namespace", "name"),
            ("mailbox", "name"),
            ("passdb", "name"),
            ("userdb", "name"),
            ("metric", "name"),
            ("event_exporter", "name"),
        ] {
            defs.entry(scope).or_default().push(Def {
                key: key.into(),
                kind: Kind::Str,
                default: String::new(),
                auth: false,
                hidden: false,
            });
        }
        for line in TABLE.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 4 {
                continue;
            }
            let scope: &'static str = match f[0] {
                "global" => "root",
                s => match SCOPES.iter().find(|x| **x == s) {
                    Some(x) => x,
                    None => continue,
                },
            };
            let name = f[1];
            if defs
                .get(scope)
                .is_some_and(|d| d.iter().any(|d| d.key == name))
            {
                continue;
            }
            let kind = match f[2] {
                "bool" => Kind::Bool,
                "size" => Kind::Size,
                "time" => Kind::Time,
                "time_msecs" => Kind::TimeMsecs,
                "uint" if name == "mode" => Kind::Octal,
                "uint" => Kind::Uint,
                "port" => Kind::Port,
                "enum" => match enum_values(scope, name) {
                    Some(v) => Kind::Enum(v),
                    None => Kind::Str,
                },
                _ if matches!((scope, name), ("namespace", "prefix" | "location")) => Kind::StrVars,
                _ => Kind::Str,
            };
            defs.entry(scope).or_default().push(Def {
                key: name.to_string(),
                kind,
                default: f[3].to_string(),
                auth: f.get(4).is_some_and(|x| *x == "auth"),
                hidden: f.get(4).is_some_and(|x| *x == "hidden"),
            });
        }
        let mut add = |scope: &'static str, key: &str, kind: Kind| {
            defs.entry(scope).or_default().push(Def {
                key: key.into(),
                kind,
                default: String::new(),
                auth: matches!(key, "passdb" | "userdb"),
                hidden: false,
            });
        };
        add(
            "root",
            "service",
            Kind::List {
                info: "service",
                unique: true,
            },
        );
        add(
            "root",
            "namespace",
            Kind::List {
                info: "namespace",
                unique: true,
            },
        );
        add(
            "root",
            "passdb",
            Kind::List {
                info: "passdb",
                unique: false,
            },
        );
        add(
            "root",
            "userdb",
            Kind::List {
                info: "userdb",
                unique: false,
            },
        );
        add(
            "root",
            "metric",
            Kind::List {
                info: "metric",
                unique: true,
            },
        );
        add(
            "root",
            "event_exporter",
            Kind::List {
                info: "event_exporter",
                unique: true,
            },
        );
        add("root", "plugin", Kind::StrList);
        add("root", "dict", Kind::StrList);
        add("root", "mail", Kind::Alias("mail_location"));
        for l in ["unix_listener", "fifo_listener", "inet_listener"] {
            add(
                "service",
                l,
                Kind::List {
                    info: l,
                    unique: true,
                },
            );
        }
        add(
            "namespace",
            "mailbox",
            Kind::List {
                info: "mailbox",
                unique: true,
            },
        );
        add("namespace", "mail", Kind::Alias("location"));
        add("namespace", "mail_location", Kind::Alias("location"));
        let mut out = HashMap::new();
        for scope in SCOPES {
            let defines = defs.remove(scope).unwrap_or_default();
            let index = defines
                .iter()
                .enumerate()
                .map(|(i, d)| (d.key.clone(), i))
                .collect();
            let name_key = match scope {
                "root" => None,
                "unix_listener" | "fifo_listener" => Some("path"),
                _ => Some("name"),
            };
            out.insert(
                scope,
                Info {
                    name: scope,
                    defines,
                    index,
                    name_key,
                },
            );
        }
        out
    })
}

/// The info named `name` (`root`, `service`, `inet_listener`, …).
pub fn info(name: &str) -> &'static Info {
    match infos().get(name) {
        Some(i) => i,
        None => &infos()["root"],
    }
}

/// The definition of `name` in `scope` (`global` or a section kind).
pub fn lookup(scope: &str, name: &str) -> Option<&'static Def> {
    let scope = if scope == "global" { "root" } else { scope };
    infos().get(scope).and_then(|i| i.def(name))
}

/// Check `value` against `kind` and return it as doveconf prints it, or doveconf's error text.
pub fn normalize(kind: Kind, value: &str) -> Result<String, String> {
    match kind {
        Kind::Str | Kind::StrVars | Kind::StrList | Kind::Alias(_) | Kind::List { .. } => {
            Ok(value.to_string())
        }
        Kind::Bool => parse_bool(value).map(|b| if b { "yes" } else { "no" }.to_string()),
        Kind::Size => parse_size(value).map(format_size),
        Kind::Time => parse_time_full(value, false).map(|s| format_time(s as u64)),
        Kind::TimeMsecs => parse_time_full(value, true).map(format_time_msecs),
        Kind::Uint => parse_uint(value).map(|n| n.to_string()),
        Kind::Octal => parse_octal(value).map(|n| format!("0{n:o}")),
        Kind::Port => match parse_uintmax(value) {
            Some((n, "")) if n <= 65535 => Ok(n.to_string()),
            _ => Err(format!("Invalid port number {value}")),
        },
        Kind::Enum(vals) => {
            if vals.contains(&value) {
                Ok(value.to_string())
            } else {
                Err(format!("Invalid value: {value}"))
            }
        }
    }
}

/// `settings_section_escape()`: a section name as it appears in a key path.
pub fn section_escape(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '=' => s.push_str("\\e"),
            '/' => s.push_str("\\s"),
            '\\' => s.push_str("\\\\"),
            ' ' => s.push_str("\\_"),
            ',' => s.push_str("\\+"),
            c => s.push(c),
        }
    }
    s
}

/// `get_bool()`.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    if v.eq_ignore_ascii_case("yes") || v.eq_ignore_ascii_case("y") || v == "1" {
        Ok(true)
    } else if v.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err(format!("Invalid boolean value: {v} (use yes or no)"))
    }
}

/// `str_parse_uintmax()`: the leading decimal digits and the rest.
fn parse_uintmax(v: &str) -> Option<(u64, &str)> {
    let end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    if end == 0 {
        return None;
    }
    let n = v[..end].parse::<u64>().ok()?;
    Some((n, &v[end..]))
}

/// `str_num_error()`.
fn num_error(v: &str) -> &'static str {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match v.strip_prefix('-') {
        Some(rest) if digits(rest) => "Number too small",
        Some(_) => "Not a valid number",
        None if digits(v) => "Number too large",
        None => "Not a valid number",
    }
}

/// `get_uint()`.
fn parse_uint(v: &str) -> Result<u32, String> {
    match parse_uintmax(v) {
        Some((n, "")) if n <= u64::from(u32::MAX) => Ok(n as u32),
        _ => Err(format!("Invalid number {v}: {}", num_error(v))),
    }
}

/// `get_octal()`: a value starting with `0` is octal, any other decimal.
fn parse_octal(v: &str) -> Result<u32, String> {
    if !v.starts_with('0') {
        return parse_uint(v);
    }
    let ok = v.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u64::from_str_radix(v, 8) {
        Ok(n) if ok && n <= u64::from(u32::MAX) => Ok(n as u32),
        _ => Err(format!("Invalid number: {v}")),
    }
}

/// Does `p` (case-insensitively) start one of `words`, as `strncasecmp(p, w, strlen(p))`?
fn unit_prefix(p: &str, words: &[&str]) -> bool {
    words
        .iter()
        .any(|w| p.len() <= w.len() && w[..p.len()].eq_ignore_ascii_case(p))
}

/// `settings_get_time_full()`: seconds (or milliseconds) from `30 secs`, `5m`, `1h`, `250ms`.
pub fn parse_time_full(v: &str, msecs: bool) -> Result<u32, String> {
    let Some((mut num, rest)) = parse_uintmax(v) else {
        return Err(format!("Invalid time interval: {v}"));
    };
    let p = rest.trim_start_matches(' ');
    if p.is_empty() && num != 0 {
        return Err(format!(
            "Time interval '{v}' is missing units (add e.g. 's' for seconds)"
        ));
    }
    let mut multiply: u64 = if msecs { 1000 } else { 1 };
    let mut done = p.is_empty();
    match p.bytes().next().map(|b| b.to_ascii_uppercase()) {
        Some(b'S') => done = unit_prefix(p, &["secs", "seconds"]),
        Some(b'M') => {
            multiply *= 60;
            if unit_prefix(p, &["mins", "minutes"]) {
                done = true;
            } else if unit_prefix(p, &["msecs", "mseconds", "millisecs", "milliseconds"]) {
                if msecs || num % 1000 == 0 {
                    if !msecs {
                        num /= 1000;
                    }
                    multiply = 1;
                    done = true;
                } else {
                    return Err(format!("Milliseconds not supported for this setting: {v}"));
                }
            }
        }
        Some(b'H') => {
            multiply *= 3600;
            done = unit_prefix(p, &["hours"]);
        }
        Some(b'D') => {
            multiply *= 86400;
            done = unit_prefix(p, &["days"]);
        }
        Some(b'W') => {
            multiply *= 604800;
            done = unit_prefix(p, &["weeks"]);
        }
        _ => {}
    }
    if !done {
        return Err(format!("Invalid time interval: {v}"));
    }
    if num > u64::from(u32::MAX) / multiply {
        return Err(format!("Time interval is too large: {v}"));
    }
    Ok((num * multiply) as u32)
}

/// Seconds from a 2.x time value (for the accessors).
pub fn parse_time(v: &str) -> Result<u64, String> {
    parse_time_full(v, false).map(u64::from)
}

/// `settings_get_size()`: bytes from `10`, `10k`, `10 M`, `1GiB`.
pub fn parse_size(v: &str) -> Result<u64, String> {
    let err = || format!("Invalid size: {v}");
    let (num, rest) = parse_uintmax(v).ok_or_else(err)?;
    let mut p = rest.trim_start_matches(' ').as_bytes();
    let multiply: u64 = match p.first().map(|b| b.to_ascii_uppercase()) {
        Some(b'B') => 1,
        Some(b'K') => 1 << 10,
        Some(b'M') => 1 << 20,
        Some(b'G') => 1 << 30,
        Some(b'T') => 1 << 40,
        _ => 0,
    };
    if multiply > 0 {
        p = &p[1..];
    }
    if multiply > 1 {
        if p.first().map(|b| b.to_ascii_uppercase()) == Some(b'I') {
            p = &p[1..];
        }
        if p.first().map(|b| b.to_ascii_uppercase()) == Some(b'B') {
            p = &p[1..];
        }
    }
    if !p.is_empty() {
        return Err(err());
    }
    let multiply = multiply.max(1);
    if num > u64::MAX / multiply {
        return Err(format!("Size is too large: {v}"));
    }
    Ok(num * multiply)
}

/// `config_export_size()`.
pub fn format_size(mut n: u64) -> String {
    if n == 0 {
        return "0".into();
    }
    let suffixes = ['B', 'k', 'M', 'G', 'T'];
    let mut s = suffixes[0];
    for suffix in suffixes.iter().skip(1) {
        if !n.is_multiple_of(1024) {
            break;
        }
        s = *suffix;
        n /= 1024;
    }
    format!("{n} {s}")
}

/// `config_export_time()`.
pub fn format_time(mut n: u64) -> String {
    if n == 0 {
        return "0".into();
    }
    let mut suffix = "secs";
    if n.is_multiple_of(60) {
        n /= 60;
        suffix = "mins";
        if n.is_multiple_of(60) {
            n /= 60;
            suffix = "hours";
            if n.is_multiple_of(24) {
                n /= 24;
                suffix = "days";
                if n.is_multiple_of(7) {
                    n /= 7;
                    suffix = "weeks";
                }
            }
        }
    }
    format!("{n} {suffix}")
}

/// `config_export_time_msecs()`.
pub fn format_time_msecs(ms: u32) -> String {
    if ms.is_multiple_of(1000) {
        format_time(u64::from(ms / 1000))
    } else {
        format!("{ms} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_loads() {
        assert_eq!(
            lookup("global", "auth_cache_ttl").map(|d| d.kind),
            Some(Kind::Time)
        );
        assert_eq!(
            lookup("global", "ssl").map(|d| d.default.as_str()),
            Some("yes")
        );
        assert_eq!(
            lookup("unix_listener", "mode").map(|d| d.kind),
            Some(Kind::Octal)
        );
        assert!(lookup("global", "imap_listen").is_none());
        assert!(lookup("global", "auth_mechanisms").is_some_and(|d| d.auth));
        assert!(lookup("global", "mail_location").is_some_and(|d| !d.auth));
        assert_eq!(
            lookup("namespace", "location").map(|d| d.kind),
            Some(Kind::StrVars)
        );
    }

    #[test]
    fn values() {
        assert_eq!(normalize(Kind::Time, "1h").unwrap(), "1 hours");
        assert_eq!(normalize(Kind::Time, "2m").unwrap(), "2 mins");
        assert_eq!(normalize(Kind::Time, "14d").unwrap(), "2 weeks");
        assert_eq!(normalize(Kind::Time, "2000ms").unwrap(), "2 secs");
        assert_eq!(normalize(Kind::Time, "10 se").unwrap(), "10 secs");
        assert!(
            normalize(Kind::Time, "1500ms")
                .unwrap_err()
                .contains("Milliseconds")
        );
        assert_eq!(normalize(Kind::TimeMsecs, "1500ms").unwrap(), "1500 ms");
        assert!(
            normalize(Kind::Time, "3600")
                .unwrap_err()
                .contains("missing units")
        );
        assert_eq!(normalize(Kind::Time, "0").unwrap(), "0");
        assert_eq!(normalize(Kind::Size, "10M").unwrap(), "10 M");
        assert_eq!(normalize(Kind::Size, "1 GiB").unwrap(), "1 G");
        assert_eq!(normalize(Kind::Size, "1025").unwrap(), "1025 B");
        assert_eq!(normalize(Kind::Bool, "Y").unwrap(), "yes");
        assert_eq!(normalize(Kind::Octal, "0660").unwrap(), "0660");
        assert_eq!(normalize(Kind::Octal, "432").unwrap(), "0660");
        assert_eq!(
            normalize(Kind::Uint, "-1").unwrap_err(),
            "Invalid number -1: Number too small"
        );
        assert!(normalize(Kind::Enum(&["yes", "no"]), "maybe").is_err());
    }
}
