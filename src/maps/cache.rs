//! Opened tables, kept per process and keyed by their `type:name` spec, so each table is read
//! once however many restrictions name it (Postfix's `maps_create()`/`dict_handle` sharing).
//! A table whose source file changed (modification time, or appeared/vanished) is reopened on
//! the next lookup through the cache; `reload` (SIGHUP) drops them all.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use super::{MapError, OpenOptions, Table};

/// A cache of opened tables.
#[derive(Default)]
pub struct MapCache {
    tables: Mutex<HashMap<(String, bool), Arc<dyn Table>>>,
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

    /// The table for `spec`, opened now or earlier; reopened when its files changed.
    pub fn get(&self, spec: &str, opts: &OpenOptions) -> Result<Arc<dyn Table>, MapError> {
        let key = (spec.to_string(), opts.fold_case);
        {
            let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = tables.get(&key)
                && unchanged(t.as_ref())
            {
                return Ok(t.clone());
            }
        }
        // Open outside the lock: reading a big table must not stall other lookups.
        let t = super::open(spec, opts)?;
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.insert(key, t.clone());
        Ok(t)
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

/// The process-wide cache with default options (keys folded, warnings to the log).
pub fn open_cached(spec: &str) -> Result<Arc<dyn Table>, MapError> {
    GLOBAL.get(spec, &OpenOptions::default())
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
        let t1 = cache.get(&spec, &OpenOptions::default()).unwrap();
        let t2 = cache.get(&spec, &OpenOptions::default()).unwrap();
        assert!(Arc::ptr_eq(&t1, &t2));
        std::fs::write(&path, "a 2\n").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        let t3 = cache.get(&spec, &OpenOptions::default()).unwrap();
        assert_eq!(t3.lookup("A").unwrap().as_deref(), Some("2"));
    }
}
