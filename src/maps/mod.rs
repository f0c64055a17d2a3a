//! Lookup tables: the `type:name` maps that `main.cf` names (`check_client_access
//! hash:/etc/postfix/access`, `alias_maps = hash:/etc/aliases`, `virtual_alias_maps =
//! regexp:/etc/postfix/virtual.re`), opened once per process and shared by every service.
//!
//! Types: `hash:`, `btree:`, `dbm:` (read through their text source, see [`indexed`]),
//! `lmdb:` (real Postfix LMDB files), `texthash:`, `regexp:`, `pcre:`, `cidr:`, `inline:{…}`,
//! `static:`, `unix:passwd.byname`/`unix:group.byname`, `proxy:TYPE:NAME` (pass-through),
//! `fail:`, `environ:` and `nis:` (only as Postfix behaves on a host without a NIS domain).
//!
//! Key case: Postfix opens maps with `DICT_FLAG_FOLD_FIX`, so the indexed and in-memory
//! tables (`hash`, `btree`, `lmdb`, `texthash`, `inline`) lower-case keys when built and when
//! searched; `regexp:` and `pcre:` match case-insensitively by default instead (flag `i`
//! toggles); `cidr:` keys are addresses. [`OpenOptions::fold_case`] turns folding off
//! (`postmap -f`).
//!
//! Failures, as Postfix's `dict_surrogate.c` and `maps.c` handle them: a table that cannot be
//! opened (missing or unreadable file, a type Postern does not have) is logged once as
//! `error: REASON` when it is opened and replaced by a [`simple::Surrogate`] whose every
//! lookup fails with `TYPE:NAME is unavailable. REASON`; [`find`] reports a failed lookup
//! as a [`LookupError`] (`TYPE:NAME lookup error for "KEY"`). A failed lookup is never taken
//! for "not found": the caller defers (smtpd answers 451, local(8) and the queue manager
//! defer the recipient). The [`cache`] tries the table again when one of its files appears
//! or changes, or a minute later.
//!
//! main.cf parameters read: `default_database_type` (by `postmap`/`postalias` only) and, in
//! [`search`], `recipient_delimiter` and `parent_domain_matches_subdomains`.
//!
//! Postfix sources followed: `util/dict_open.c` (type registry, flags), `util/dict_regexp.c`,
//! `util/dict_pcre.c`, `util/dict_cidr.c`, `util/dict_inline.c`, `util/dict_thash.c`,
//! `util/dict_lmdb.c` (trailing-NUL keys), `util/readlline.c` (logical lines),
//! `global/mail_addr_find.c` and `smtpd/smtpd_check.c` (search orders).
//!
//! Known limits: Berkeley DB files are never read (no Rust reader exists); LMDB files are read
//! into memory when opened, which is right for access/alias/virtual tables and wrong for maps of
//! hundreds of megabytes; `pcre:` flag `E` (dollar end-only) is accepted but not applied.

pub mod build;
pub mod cache;
pub mod cidr;
pub mod error;
pub mod indexed;
pub mod lmdb_file;
pub mod regexp;
pub mod search;
pub mod simple;
pub mod source;

use std::sync::Arc;

pub use cache::{MapCache, open_cached, open_cached_format, open_list};
pub use error::MapError;
pub use search::{
    Feature, Key, client_lookup_keys, find, host_lookup_keys, ip_lookup_keys, lookup_client,
    lookup_domain, rewrite_address_keys,
};

/// One opened lookup table.
pub trait Table: Send + Sync {
    /// The value for `key`, `Ok(None)` when the table has no entry, `Err` when the table
    /// could not answer (Postfix's `DICT_ERR_RETRY`: the caller defers, it does not reject).
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError>;
    /// The `type:name` the admin wrote.
    fn spec(&self) -> &str;
    /// Every entry in the table's order, for `postmap -s`; `None` for pattern tables, which
    /// Postfix cannot list either.
    fn entries(&self) -> Option<Vec<(String, String)>> {
        None
    }
    /// The files this table was read from, with their modification times when read; the
    /// [`MapCache`] reopens the table when one of them changes.
    fn sources(&self) -> Vec<(std::path::PathBuf, Option<std::time::SystemTime>)> {
        Vec::new()
    }
}

/// Where warnings about a table go (duplicate keys, bad lines). The default sends them to
/// `tracing` at warn level; `postmap` prints them as `postmap: warning: …`.
pub type WarnSink = Arc<dyn Fn(&str) + Send + Sync>;

/// How to open a table: Postfix's `dict_open` flags that matter here.
#[derive(Clone)]
pub struct OpenOptions {
    /// `DICT_FLAG_FOLD_FIX`: lower-case keys of indexed and in-memory tables (default on).
    pub fold_case: bool,
    /// What to do with a later duplicate key in a text source.
    pub duplicates: Duplicates,
    /// Where warnings go.
    pub warn: WarnSink,
}

/// Postfix's `DICT_FLAG_DUP_WARN` / `DUP_REPLACE` / `DUP_IGNORE` (`postmap`'s default, `-r`,
/// `-w`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duplicates {
    /// Keep the first entry and warn `duplicate entry: "key"`.
    Warn,
    /// The later entry replaces the earlier one, silently.
    Replace,
    /// Keep the first entry, silently.
    Ignore,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            fold_case: true,
            duplicates: Duplicates::Warn,
            warn: Arc::new(|msg: &str| tracing::warn!("{msg}")),
        }
    }
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("fold_case", &self.fold_case)
            .field("duplicates", &self.duplicates)
            .finish_non_exhaustive()
    }
}

impl OpenOptions {
    pub(crate) fn warn(&self, msg: &str) {
        (self.warn)(msg)
    }
}

/// Split `type:name`; a name without a type is an error here (callers that default the type,
/// as `postmap` does with `default_database_type`, add it first).
pub fn split_spec(spec: &str) -> Result<(&str, &str), MapError> {
    match spec.split_once(':') {
        Some((t, n)) if !t.is_empty() && !t.contains('/') => Ok((t, n)),
        _ => Err(MapError::Other(format!(
            "need dictionary type:name, got \"{spec}\""
        ))),
    }
}

/// Open the table `spec` (`hash:/etc/postfix/access`, `inline:{a=b}`, …) without the cache.
/// Services should call [`open_cached`] so that each table opens once per process.
pub fn open(spec: &str, opts: &OpenOptions) -> Result<Arc<dyn Table>, MapError> {
    open_format(spec, source::Format::Postmap, opts)
}

/// [`open`], reading the text source of a `hash:`/`btree:` table (when Postern's index is
/// missing or stale) in `format`: [`source::Format::Aliases`] for the tables of `alias_maps`.
pub fn open_format(
    spec: &str,
    format: source::Format,
    opts: &OpenOptions,
) -> Result<Arc<dyn Table>, MapError> {
    let (kind, name) = split_spec(spec)?;
    let table: Arc<dyn Table> = match kind {
        "hash" | "btree" | "dbm" => Arc::new(indexed::SourceTable::open_format(
            kind, name, spec, format, opts,
        )?),
        "lmdb" => Arc::new(indexed::LmdbTable::open(name, spec, opts)?),
        "texthash" => Arc::new(indexed::TextHash::open(name, spec, opts)?),
        "regexp" => Arc::new(regexp::PatternTable::open(
            regexp::Dialect::Posix,
            name,
            spec,
            opts,
        )?),
        "pcre" => Arc::new(regexp::PatternTable::open(
            regexp::Dialect::Pcre,
            name,
            spec,
            opts,
        )?),
        "cidr" => Arc::new(cidr::CidrTable::open(name, spec, opts)?),
        "inline" => Arc::new(simple::Inline::open(name, spec, opts)?),
        "static" => Arc::new(simple::Static::new(name, spec)),
        "fail" => Arc::new(simple::Fail::new(spec)),
        "environ" => Arc::new(simple::Environ::new(spec)),
        "unix" => Arc::new(simple::Unix::open(name, spec)?),
        "nis" => Arc::new(simple::Nis::open(spec, opts)?),
        "proxy" => {
            // proxymap(8) only relays to the named table; Postern's services read it directly.
            let inner = open_format(name, format, opts)?;
            Arc::new(simple::Proxy::new(spec, inner))
        }
        other => {
            return Err(MapError::Other(format!(
                "unsupported dictionary type: {other}"
            )));
        }
    };
    Ok(table)
}

/// The files a table of this spec is read from: what the cache watches to retry a table that
/// could not be opened.
pub fn watched_files(spec: &str) -> Vec<std::path::PathBuf> {
    let spec = spec.strip_prefix("proxy:").unwrap_or(spec);
    let Ok((kind, name)) = split_spec(spec) else {
        return Vec::new();
    };
    match kind {
        "hash" | "btree" | "dbm" => vec![name.into(), indexed::postern_index_path(name)],
        "lmdb" => vec![format!("{name}.lmdb").into()],
        "texthash" | "regexp" | "pcre" | "cidr" => vec![name.into()],
        _ => Vec::new(),
    }
}

/// A message a table logs while it is opened (duplicate keys, a stale index, or, as
/// `error:`, the reason it could not be opened), for the caller to log under its own name
/// (`postfix/smtpd`, `postfix/local`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Warning(String),
    Error(String),
}

impl Notice {
    /// Log under `ident` (`warning: …`, `error: …`).
    pub fn log(&self, ident: &str) {
        match self {
            Notice::Warning(m) => crate::log::warning(ident, m),
            Notice::Error(m) => crate::log::error(ident, m),
        }
    }
}

/// A lookup that a table could not answer, as Postfix's `maps_find()` reports it: the
/// table's own warning (the surrogate's `hash:/x is unavailable. open database /x: No such
/// file or directory`), then `hash:/x lookup error for "key"`. The caller defers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError {
    pub spec: String,
    pub key: String,
    pub table_warning: Option<String>,
}

impl LookupError {
    pub fn new(spec: &str, key: &str, e: &MapError) -> Self {
        LookupError {
            spec: spec.to_string(),
            key: key.to_string(),
            table_warning: e.table_warning(),
        }
    }
    /// The warning lines Postfix logs for this failure, in order.
    pub fn warnings(&self) -> Vec<String> {
        let mut v: Vec<String> = self.table_warning.iter().cloned().collect();
        v.push(self.to_string());
        v
    }
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} lookup error for \"{}\"", self.spec, self.key)
    }
}

impl std::error::Error for LookupError {}

/// Lower-case a key as Postfix's `lowercase()` does: ASCII only, bytes above 127 untouched.
pub fn fold(key: &str) -> String {
    key.to_ascii_lowercase()
}
