//! Opened tables, kept per process and keyed by their `type:name` spec, so each table is read
//! once however many restrictions name it (Postfix's `maps_create()`/`dict_handle` sharing).
//! A table whose source file changed (modification time, or appeared/vanished) is reopened on
//! the next lookup through the cache, as Postfix's daemons restart when a table changes;
//! `reload` (SIGHUP) drops them all.
//!
//! A table that cannot be opened is logged once (`error: open database /x: No such file or
//! directory`, as Postfix's `dict_surrogate()` does when a daemon starts) and cached as a
//! [`Surrogate`] whose lookups fail; it is tried again when one of its files appears or
//! changes, and at the latest [`SURROGATE_RETRY`] later (a Postfix daemon exits after
//! `max_idle` = 100 s and its successor opens the table again).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::simple::Surrogate;
use super::source::Format;
use super::{Notice, OpenOptions, Table};

/// How long a table that could not be opened is kept before it is tried again.
pub const SURROGATE_RETRY: Duration = Duration::from_secs(60);

struct Entry {
    table: Arc<dyn Table>,
    /// When the open failed (the entry is a surrogate).
    failed_at: Option<Instant>,
}

type CacheKey = (String, bool, Format);

/// A cache of opened tables.
#[derive(Default)]
pub struct MapCache {
    tables: Mutex<HashMap<CacheKey, Entry>>,
}

fn unchanged(t: &dyn Table) -> bool {
    t.sources().iter().all(|(path, when)| {
        let now = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        now == *when
    })
}

impl MapCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The table for `spec`, opened now or earlier; reopened when its files changed. Never
    /// fails: a table that cannot be opened comes back as a [`Surrogate`], and what the open
    /// logged (warnings, and the `error:` line of a failure) goes to `log`.
    pub fn get(
        &self,
        spec: &str,
        format: Format,
        opts: &OpenOptions,
        log: &mut dyn FnMut(Notice),
    ) -> Arc<dyn Table> {
        let key = (spec.to_string(), opts.fold_case, format);
        {
            let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = tables.get(&key) {
                let fresh = e.failed_at.is_none_or(|t| t.elapsed() < SURROGATE_RETRY);
                if fresh && unchanged(e.table.as_ref()) {
                    return e.table.clone();
                }
            }
        }
        // Open outside the lock: reading a big table must not stall other lookups.
        let notes = Arc::new(Mutex::new(Vec::new()));
        let sink = notes.clone();
        let capture = OpenOptions {
            warn: Arc::new(move |m: &str| {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(m.to_string())
            }),
            ..opts.clone()
        };
        let opened = super::open_format(spec, format, &capture);
        for w in notes.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            log(Notice::Warning(w));
        }
        let entry = match opened {
            Ok(table) => Entry {
                table,
                failed_at: None,
            },
            Err(e) => {
                let reason = e.to_string();
                log(Notice::Error(reason.clone()));
                Entry {
                    table: Arc::new(Surrogate::new(spec, &reason, super::watched_files(spec))),
                    failed_at: Some(Instant::now()),
                }
            }
        };
        let t = entry.table.clone();
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.insert(key, entry);
        t
    }

    /// Forget every table (SIGHUP reload); the next `get` reads them again.
    pub fn clear(&self) {
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

static GLOBAL: LazyLock<MapCache> = LazyLock::new(MapCache::new);

/// The process-wide cache with default options (keys folded), sources in postmap format.
pub fn open_cached(spec: &str, log: &mut dyn FnMut(Notice)) -> Arc<dyn Table> {
    GLOBAL.get(spec, Format::Postmap, &OpenOptions::default(), log)
}

/// [`open_cached`] with the source format of a `hash:`/`btree:` table given
/// ([`Format::Aliases`] for `alias_maps`).
pub fn open_cached_format(
    spec: &str,
    format: Format,
    log: &mut dyn FnMut(Notice),
) -> Arc<dyn Table> {
    GLOBAL.get(spec, format, &OpenOptions::default(), log)
}

/// Each table of a list (`virtual_alias_maps = hash:/a, regexp:/b`), through the cache.
pub fn open_list(
    specs: &[String],
    format: Format,
    log: &mut dyn FnMut(Notice),
) -> Vec<Arc<dyn Table>> {
    specs
        .iter()
        .map(|s| open_cached_format(s, format, log))
        .collect()
}

/// The process-wide cache itself, for `reload`.
pub fn global() -> &'static MapCache {
    &GLOBAL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopens_after_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "a 1\n").unwrap();
        let spec = format!("texthash:{}", path.display());
        let cache = MapCache::new();
        let o = OpenOptions::default();
        let t1 = cache.get(&spec, Format::Postmap, &o, &mut |_| {});
        let t2 = cache.get(&spec, Format::Postmap, &o, &mut |_| {});
        assert!(Arc::ptr_eq(&t1, &t2));
        std::fs::write(&path, "a 2\n").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        let t3 = cache.get(&spec, Format::Postmap, &o, &mut |_| {});
        assert_eq!(t3.lookup("A").unwrap().as_deref(), Some("2"));
    }

    /// A missing table is logged once as `error:`, fails every lookup, and is opened for
    /// real once its file appears.
    #[test]
    fn missing_table_is_a_surrogate_until_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access");
        let spec = format!("hash:{}", path.display());
        let cache = MapCache::new();
        let o = OpenOptions::default();
        let mut notes = Vec::new();
        let t = cache.get(&spec, Format::Postmap, &o, &mut |n| notes.push(n));
        assert_eq!(
            notes,
            vec![Notice::Error(format!(
                "open database {}: No such file or directory",
                path.display()
            ))]
        );
        let e = t.lookup("x").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{spec} is unavailable. open database {}: No such file or directory",
                path.display()
            )
        );
        notes.clear();
        let again = cache.get(&spec, Format::Postmap, &o, &mut |n| notes.push(n));
        assert!(Arc::ptr_eq(&t, &again));
        assert!(notes.is_empty(), "{notes:?}");
        std::fs::write(&path, "x OK\n").unwrap();
        let t = cache.get(&spec, Format::Postmap, &o, &mut |n| notes.push(n));
        assert_eq!(t.lookup("x").unwrap().as_deref(), Some("OK"));
    }

    #[test]
    fn unsupported_type() {
        let cache = MapCache::new();
        let mut notes = Vec::new();
        let t = cache.get(
            "nosuch:/x",
            Format::Postmap,
            &OpenOptions::default(),
            &mut |n| notes.push(n),
        );
        assert_eq!(
            notes,
            vec![Notice::Error("unsupported dictionary type: nosuch".into())]
        );
        assert_eq!(
            t.lookup("k").unwrap_err().to_string(),
            "nosuch:/x is unavailable. unsupported dictionary type: nosuch"
        );
    }
}
