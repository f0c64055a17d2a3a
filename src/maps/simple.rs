//! Tables without a file of their own: `inline:{…}`, `static:`, `fail:`, `environ:`,
//! `unix:passwd.byname`/`unix:group.byname`, `nis:` (a host without a NIS domain), the
//! `proxy:` pass-through, and the [`Surrogate`] that stands for a table that could not be
//! opened.
//!
//! `inline:{ key=value, key2=value2 }` follows Postfix's `dict_inline.c` (elements separated by
//! commas or white space, `missing '=' after attribute name` on an element without `=`), and
//! also accepts the braced form `{ key = text with spaces }` of later Postfix releases.
//! `static:{ text with spaces }` drops the braces and surrounding spaces.
//! `unix:passwd.byname` answers `name:passwd:uid:gid:gecos:dir:shell`, `unix:group.byname`
//! `name:passwd:gid:member,member`, as `dict_unix.c`.

use std::sync::Arc;

use indexmap::IndexMap;

use super::{MapError, OpenOptions, Table};

/// `inline:{…}`.
#[derive(Debug)]
pub struct Inline {
    spec: String,
    map: IndexMap<String, String>,
    fold: bool,
}

/// Split the inside of `{…}` into elements: commas and white space separate, a `{…}` group is
/// one element (returned without its braces).
fn split_elements(inner: &str) -> Result<Vec<(String, bool)>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = inner.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == ',' || c.is_whitespace() {
            i += 1;
        } else if c == '{' {
            let mut depth = 1;
            let start = i + 1;
            i += 1;
            while i < chars.len() && depth > 0 {
                match chars[i] {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                i += 1;
            }
            if depth > 0 {
                return Err("missing '}'".into());
            }
            out.push((chars[start..i - 1].iter().collect(), true));
        } else {
            let start = i;
            while i < chars.len() && chars[i] != ',' && !chars[i].is_whitespace() {
                i += 1;
            }
            out.push((chars[start..i].iter().collect(), false));
        }
    }
    Ok(out)
}

/// Strip one pair of outer braces and the blanks inside them: `{ text }` → `text`.
pub fn strip_braces(s: &str) -> Option<&str> {
    s.trim()
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .map(str::trim)
}

impl Inline {
    pub fn open(name: &str, spec: &str, opts: &OpenOptions) -> Result<Self, MapError> {
        let need = "need \"inline:{name=value...}\"";
        let Some(inner) = strip_braces(name) else {
            return Err(MapError::Other(format!("bad syntax: \"{spec}\"; {need}")));
        };
        let elements = split_elements(inner)
            .map_err(|e| MapError::Other(format!("{e} in \"{spec}\"; {need}")))?;
        let mut map = IndexMap::new();
        for (el, braced) in elements {
            let pair = el.split_once('=').map(|(k, v)| {
                if braced {
                    (k.trim().to_string(), v.trim().to_string())
                } else {
                    (k.to_string(), v.to_string())
                }
            });
            let Some((k, v)) = pair.filter(|(k, _)| !k.is_empty()) else {
                return Err(MapError::Other(format!(
                    "missing '=' after attribute name: \"{spec}\"; {need}"
                )));
            };
            let k = if opts.fold_case { super::fold(&k) } else { k };
            super::source::insert(&mut map, k, v, spec, opts);
        }
        Ok(Inline {
            spec: spec.to_string(),
            map,
            fold: opts.fold_case,
        })
    }
}

impl Table for Inline {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        Ok(if self.fold {
            self.map.get(&super::fold(key)).cloned()
        } else {
            self.map.get(key).cloned()
        })
    }
    fn spec(&self) -> &str {
        &self.spec
    }
    fn entries(&self) -> Option<Vec<(String, String)>> {
        Some(
            self.map
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }
}

/// `static:value`: every key finds `value`.
#[derive(Debug)]
pub struct Static {
    spec: String,
    value: String,
}

impl Static {
    pub fn new(name: &str, spec: &str) -> Self {
        let value = strip_braces(name).unwrap_or(name).to_string();
        Static {
            spec: spec.to_string(),
            value,
        }
    }
}

impl Table for Static {
    fn lookup(&self, _key: &str) -> Result<Option<String>, MapError> {
        Ok(Some(self.value.clone()))
    }
    fn spec(&self) -> &str {
        &self.spec
    }
}

/// `fail:name`: every lookup fails (the caller defers), for testing error paths.
#[derive(Debug)]
pub struct Fail {
    spec: String,
}

impl Fail {
    pub fn new(spec: &str) -> Self {
        Fail {
            spec: spec.to_string(),
        }
    }
}

impl Table for Fail {
    fn lookup(&self, _key: &str) -> Result<Option<String>, MapError> {
        // Postfix's dict_fail.c fails silently; the caller logs `… lookup error for …`.
        Err(MapError::Lookup {
            spec: self.spec.clone(),
            msg: String::new(),
        })
    }
    fn spec(&self) -> &str {
        &self.spec
    }
}

/// A table that could not be opened (Postfix's `dict_surrogate.c`): every lookup fails with
/// `TYPE:NAME is unavailable. REASON`, so the caller defers instead of going on without the
/// table. `sources` are the files whose appearance or change makes the cache try again.
#[derive(Debug)]
pub struct Surrogate {
    spec: String,
    reason: String,
    sources: Vec<(std::path::PathBuf, Option<std::time::SystemTime>)>,
}

impl Surrogate {
    pub fn new(spec: &str, reason: &str, watch: Vec<std::path::PathBuf>) -> Self {
        let sources = watch
            .into_iter()
            .map(|p| {
                let t = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
                (p, t)
            })
            .collect();
        Surrogate {
            spec: spec.to_string(),
            reason: reason.to_string(),
            sources,
        }
    }
}

impl Table for Surrogate {
    fn lookup(&self, _key: &str) -> Result<Option<String>, MapError> {
        Err(MapError::Unavailable {
            spec: self.spec.clone(),
            reason: self.reason.clone(),
        })
    }
    fn spec(&self) -> &str {
        &self.spec
    }
    fn sources(&self) -> Vec<(std::path::PathBuf, Option<std::time::SystemTime>)> {
        self.sources.clone()
    }
}

/// `nis:NAME`. Postern has no NIS client; on a host without a NIS domain (the usual case,
/// and the one Postfix's default `alias_maps = hash:/etc/aliases, nis:mail.aliases` meets
/// everywhere) it behaves as Postfix's `dict_nis.c` does there: one warning, `dict_nis_init:
/// NIS domain name not set - NIS lookups disabled`, and every key not found. With a NIS
/// domain set the table cannot be read and is unavailable (lookups defer).
#[derive(Debug)]
pub struct Nis {
    spec: String,
}

/// The host's NIS domain as `yp_get_default_domain()` sees it (`None` when unset).
fn nis_domain() -> Option<String> {
    // What getdomainname(2) returns on Linux: the UTS namespace's NIS domain name.
    let d = std::fs::read_to_string("/proc/sys/kernel/domainname").ok()?;
    let d = d.trim_end_matches('\n');
    (!d.is_empty() && d != "(none)").then(|| d.to_string())
}

impl Nis {
    pub fn open(spec: &str, opts: &OpenOptions) -> Result<Self, MapError> {
        if let Some(d) = nis_domain() {
            return Err(MapError::Other(format!(
                "NIS domain {d} is set but Postern has no NIS client: {spec} cannot be read"
            )));
        }
        opts.warn("dict_nis_init: NIS domain name not set - NIS lookups disabled");
        Ok(Nis {
            spec: spec.to_string(),
        })
    }
}

impl Table for Nis {
    fn lookup(&self, _key: &str) -> Result<Option<String>, MapError> {
        Ok(None)
    }
    fn spec(&self) -> &str {
        &self.spec
    }
}

/// `environ:name`: the process environment.
#[derive(Debug)]
pub struct Environ {
    spec: String,
}

impl Environ {
    pub fn new(spec: &str) -> Self {
        Environ {
            spec: spec.to_string(),
        }
    }
}

impl Table for Environ {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Ok(None);
        }
        Ok(std::env::var_os(key).map(|v| v.to_string_lossy().into_owned()))
    }
    fn spec(&self) -> &str {
        &self.spec
    }
}

/// Which system database `unix:` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnixDb {
    PasswdByName,
    GroupByName,
}

/// `unix:passwd.byname`, `unix:group.byname`.
#[derive(Debug)]
pub struct Unix {
    spec: String,
    db: UnixDb,
}

impl Unix {
    pub fn open(name: &str, spec: &str) -> Result<Self, MapError> {
        let db = match name {
            "passwd.byname" => UnixDb::PasswdByName,
            "group.byname" => UnixDb::GroupByName,
            other => {
                return Err(MapError::Other(format!("unknown table: unix:{other}")));
            }
        };
        Ok(Unix {
            spec: spec.to_string(),
            db,
        })
    }
}

impl Table for Unix {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        if key.is_empty() || key.contains('\0') {
            return Ok(None);
        }
        let key = super::fold(key);
        let err = |e: nix::Error| MapError::Lookup {
            spec: self.spec.clone(),
            msg: e.desc().to_string(),
        };
        match self.db {
            UnixDb::PasswdByName => {
                let Some(u) = nix::unistd::User::from_name(&key).map_err(err)? else {
                    return Ok(None);
                };
                Ok(Some(format!(
                    "{}:{}:{}:{}:{}:{}:{}",
                    u.name,
                    u.passwd.to_string_lossy(),
                    u.uid,
                    u.gid,
                    u.gecos.to_string_lossy(),
                    u.dir.display(),
                    u.shell.display()
                )))
            }
            UnixDb::GroupByName => {
                let Some(g) = nix::unistd::Group::from_name(&key).map_err(err)? else {
                    return Ok(None);
                };
                Ok(Some(format!(
                    "{}:{}:{}:{}",
                    g.name,
                    g.passwd.to_string_lossy(),
                    g.gid,
                    g.mem.join(",")
                )))
            }
        }
    }
    fn spec(&self) -> &str {
        &self.spec
    }
}

/// `proxy:TYPE:NAME`: Postern's services read the table directly (no proxymap daemon).
pub struct Proxy {
    spec: String,
    inner: Arc<dyn Table>,
}

impl Proxy {
    pub fn new(spec: &str, inner: Arc<dyn Table>) -> Self {
        Proxy {
            spec: spec.to_string(),
            inner,
        }
    }
}

impl Table for Proxy {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        self.inner.lookup(key)
    }
    fn spec(&self) -> &str {
        &self.spec
    }
    fn entries(&self) -> Option<Vec<(String, String)>> {
        self.inner.entries()
    }
    fn sources(&self) -> Vec<(std::path::PathBuf, Option<std::time::SystemTime>)> {
        self.inner.sources()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_forms() {
        let o = OpenOptions::default();
        let t = Inline::open("{ Foo=Bar, { a b = c d } }", "inline:x", &o).unwrap();
        assert_eq!(t.lookup("FOO").unwrap().as_deref(), Some("Bar"));
        assert_eq!(t.lookup("a b").unwrap().as_deref(), Some("c d"));
        let e = Inline::open("{ Foo = Bar }", "inline:{ Foo = Bar }", &o).unwrap_err();
        assert_eq!(
            e.to_string(),
            "missing '=' after attribute name: \"inline:{ Foo = Bar }\"; need \"inline:{name=value...}\""
        );
        let e = Inline::open("Foo", "inline:Foo", &o).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad syntax: \"inline:Foo\"; need \"inline:{name=value...}\""
        );
    }

    #[test]
    fn static_braces() {
        assert_eq!(
            Static::new("{ a b }", "static:{ a b }")
                .lookup("x")
                .unwrap()
                .as_deref(),
            Some("a b")
        );
    }

    #[test]
    fn unix_root() {
        let t = Unix::open("passwd.byname", "unix:passwd.byname").unwrap();
        let v = t.lookup("ROOT").unwrap().unwrap_or_default();
        assert!(v.starts_with("root:"), "{v}");
        assert_eq!(t.lookup("no-such-user-here").unwrap(), None);
    }
}
