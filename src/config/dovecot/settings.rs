//! Dovecot 2.3.19's settings: names, types and defaults (`settings-2.3.19.tsv`, generated from
//! the real `doveconf -a` and its complaints by `scripts/regen-dovecot-fixtures table`), and
//! value checking/normalisation the way `doveconf` parses and re-prints values
//! (`settings-parser.c`, `config-request.c`: `10M` → `10 M`, `60s` → `1 mins`, `y` → `yes`).
//!
//! Limits: enum settings are checked only for the few whose allowed values we list
//! ([`enum_values`]); others accept any word.

use std::collections::HashMap;
use std::sync::OnceLock;

const TABLE: &str = include_str!("settings-2.3.19.tsv");

/// A setting's value type, as `doveconf` parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Size,
    Time,
    Uint,
    Octal,
    Port,
    Enum,
    Str,
}

/// One known setting.
#[derive(Debug, Clone)]
pub struct Def {
    pub kind: Kind,
    /// Default as `doveconf -a` prints it.
    pub default: String,
}

type Table = HashMap<(String, String), Def>;

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = HashMap::new();
        for line in TABLE.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let mut f = line.splitn(4, '\t');
            let (Some(scope), Some(name), Some(kind)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let default = f.next().unwrap_or("").to_string();
            let kind = match kind {
                "bool" => Kind::Bool,
                "size" => Kind::Size,
                "time" => Kind::Time,
                "uint" if name == "mode" => Kind::Octal,
                "uint" => Kind::Uint,
                "port" => Kind::Port,
                "enum" => Kind::Enum,
                _ => Kind::Str,
            };
            t.insert((scope.to_string(), name.to_string()), Def { kind, default });
        }
        t
    })
}

/// The definition of `name` in `scope` (`global`, `service`, `inet_listener`, `unix_listener`,
/// `fifo_listener`, `namespace`, `mailbox`, `passdb`, `userdb`).
pub fn lookup(scope: &str, name: &str) -> Option<&'static Def> {
    table().get(&(scope.to_string(), name.to_string()))
}

/// Allowed values of the enums we check (first is the default).
pub fn enum_values(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "ssl" => &["yes", "no", "required"],
        "mail_fsync" => &["optimized", "always", "never"],
        "lock_method" => &["fcntl", "flock", "dotlock"],
        "pop3_delete_type" => &["default", "expunge", "flag"],
        "pop3_uidl_duplicates" => &["allow", "rename"],
        _ => return None,
    })
}

/// Check `value` against `kind` and return it as doveconf prints it, or doveconf's error text.
pub fn normalize(name: &str, kind: Kind, value: &str) -> Result<String, String> {
    match kind {
        Kind::Str => Ok(value.to_string()),
        Kind::Bool => parse_bool(value).map(|b| if b { "yes" } else { "no" }.to_string()),
        Kind::Size => parse_size(value).map(format_size),
        Kind::Time => parse_time(value).map(format_time),
        Kind::Uint => parse_uint(value).map(|n| n.to_string()),
        Kind::Octal => u32::from_str_radix(value, 8)
            .map(|n| format!("0{n:o}"))
            .map_err(|_| format!("Invalid number {value}: Not a valid number")),
        Kind::Port => match value.parse::<u16>() {
            Ok(p) => Ok(p.to_string()),
            Err(_) => Err(format!("Invalid port number {value}")),
        },
        Kind::Enum => match enum_values(name) {
            Some(vals) if !vals.contains(&value) => Err(format!("Invalid value: {value}")),
            _ => Ok(value.to_string()),
        },
    }
}

pub fn parse_bool(v: &str) -> Result<bool, String> {
    if v.eq_ignore_ascii_case("yes") || v.eq_ignore_ascii_case("y") || v == "1" {
        Ok(true)
    } else if v.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err(format!("Invalid boolean value: {v} (use yes or no)"))
    }
}

fn parse_uint(v: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .map_err(|_| format!("Invalid number {v}: Not a valid number"))
}

/// Split `123 unit` into the number and the unit (white space between allowed).
fn number_unit(v: &str) -> Option<(u64, &str)> {
    let end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    if end == 0 {
        return None;
    }
    let n = v[..end].parse::<u64>().ok()?;
    Some((n, v[end..].trim_start()))
}

/// Bytes from `10`, `10k`, `10 M`, `1G`, `2T` (Dovecot `settings_get_size`).
pub fn parse_size(v: &str) -> Result<u64, String> {
    let err = || format!("Invalid size: {v}");
    let (n, unit) = number_unit(v).ok_or_else(err)?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        "t" | "tb" => 1 << 40,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

/// Seconds from `30 secs`, `5m`, `1 hours`, `2d`, `1w`; a bare number other than 0 is
/// refused the way Dovecot 2.3 refuses it (`Time interval '3600' is missing units …`).
pub fn parse_time(v: &str) -> Result<u64, String> {
    let (n, unit) = number_unit(v).ok_or_else(|| format!("Invalid time interval: {v}"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" if n == 0 => 1,
        "" => {
            return Err(format!(
                "Time interval '{v}' is missing units (add e.g. 's' for seconds)"
            ));
        }
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => {
            return Err(format!("Milliseconds not supported for this setting: {v}"));
        }
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86400,
        "w" | "week" | "weeks" => 604800,
        _ => return Err(format!("Invalid time interval: {v}")),
    };
    n.checked_mul(mult)
        .filter(|s| *s <= u64::from(u32::MAX))
        .ok_or_else(|| format!("Invalid time interval: {v}"))
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
    }

    #[test]
    fn values() {
        assert_eq!(normalize("x", Kind::Time, "1h").unwrap(), "1 hours");
        assert_eq!(normalize("x", Kind::Time, "2m").unwrap(), "2 mins");
        assert_eq!(normalize("x", Kind::Time, "14d").unwrap(), "2 weeks");
        assert!(
            normalize("x", Kind::Time, "3600")
                .unwrap_err()
                .contains("missing units")
        );
        assert_eq!(normalize("x", Kind::Size, "10M").unwrap(), "10 M");
        assert_eq!(normalize("x", Kind::Size, "1025").unwrap(), "1025 B");
        assert_eq!(normalize("x", Kind::Bool, "Y").unwrap(), "yes");
        assert_eq!(normalize("mode", Kind::Octal, "0660").unwrap(), "0660");
        assert!(normalize("ssl", Kind::Enum, "maybe").is_err());
    }
}
