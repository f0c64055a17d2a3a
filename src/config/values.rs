//! The value types of Postfix's main.cf parameters, read one way for every service: lists
//! (`mystrtokq()`: white space and/or commas, `{ … }` groups such as `inline:{a=b, c=d}`
//! kept whole), times (`mail_conf_time.c`: a number with an optional unit `s`, `m`, `h`,
//! `d`, `w`; a bare number is in the parameter's own default unit), and numbers and sizes
//! (`mail_conf_int.c`/`mail_conf_long.c`: decimal digits; a size is a number of bytes).
//!
//! Like the services before them, the getters fall back to the caller's default when a
//! value does not parse (Postfix would stop with `fatal: bad numerical configuration`;
//! `postfix check` reports such values, see `cli::postfix_check`).

use std::str::FromStr;
use std::time::Duration;

use super::postfix::PostfixConfig;

/// Split a Postfix list value (white space and/or commas), keeping `{ … }` groups such as
/// `inline:{a=b, c=d}` in one piece (Postfix's `mystrtokq()`).
pub fn list(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    for c in v.chars() {
        match c {
            '{' => {
                depth += 1;
                cur.push(c);
            }
            '}' => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            c if depth == 0 && (c.is_ascii_whitespace() || c == ',') => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Postfix time value: a number with an optional unit (s, m, h, d, w); `default_unit` when none.
pub fn time(v: &str, default_unit: char) -> Option<Duration> {
    let v = v.trim();
    let (num, unit) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&v[..i], c),
        _ => (v, default_unit),
    };
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        'w' => 604800,
        _ => return None,
    };
    Some(Duration::from_secs(n.saturating_mul(mult)))
}

impl PostfixConfig {
    /// A list parameter, split as [`list`] does; empty when unset.
    pub fn get_list(&self, name: &str) -> Vec<String> {
        list(&self.get(name).unwrap_or_default())
    }

    /// A time parameter; `default_unit` applies to a bare number. `None` when unset or
    /// not a time.
    pub fn get_time(&self, name: &str, default_unit: char) -> Option<Duration> {
        self.get(name).and_then(|v| time(&v, default_unit))
    }

    /// A number or size parameter (white space around it ignored). `None` when unset or
    /// not a number of type `T`.
    pub fn get_num<T: FromStr>(&self, name: &str) -> Option<T> {
        self.get(name).and_then(|v| v.trim().parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(time("300s", 's'), Some(Duration::from_secs(300)));
        assert_eq!(time("5m", 's'), Some(Duration::from_secs(300)));
        assert_eq!(time("10", 's'), Some(Duration::from_secs(10)));
        assert_eq!(time("5d", 'd'), Some(Duration::from_secs(432000)));
        assert_eq!(time("5", 'd'), Some(Duration::from_secs(432000)));
        assert_eq!(time("1h", 's'), Some(Duration::from_secs(3600)));
        assert_eq!(time("x", 's'), None);
    }

    #[test]
    fn lists() {
        assert_eq!(list("a, b  c,,d"), vec!["a", "b", "c", "d"]);
        assert_eq!(
            list("check_recipient_access inline:{a=OK, b=REJECT}, permit"),
            vec![
                "check_recipient_access",
                "inline:{a=OK, b=REJECT}",
                "permit"
            ]
        );
    }

    #[test]
    fn getters_read_the_effective_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("main.cf"),
            "maximal_queue_lifetime = 3\nmessage_size_limit = 1000 \n\
             virtual_mailbox_domains = a.example, inline:{b=1, c=2}\nhopcount_limit = many\n",
        )
        .expect("write main.cf");
        std::fs::write(dir.path().join("master.cf"), "").expect("write master.cf");
        let cfg = PostfixConfig::load(&super::super::postfix::LoadOptions {
            config_dir: Some(dir.path().to_path_buf()),
            overrides: Vec::new(),
        })
        .expect("load");
        assert_eq!(
            cfg.get_time("maximal_queue_lifetime", 'd'),
            Some(Duration::from_secs(3 * 86400))
        );
        assert_eq!(cfg.get_num::<u64>("message_size_limit"), Some(1000));
        assert_eq!(cfg.get_num::<u64>("hopcount_limit"), None);
        assert_eq!(
            cfg.get_list("virtual_mailbox_domains"),
            vec!["a.example", "inline:{b=1, c=2}"]
        );
        assert!(cfg.get_list("no_such_parameter_here").is_empty());
    }
}
