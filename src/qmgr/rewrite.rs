//! The queue manager's settings and the address rewriting it does in cleanup's and
//! trivial-rewrite's stead: `append_at_myorigin`, canonical and virtual alias mapping,
//! `relocated_maps`, `transport_maps`, local domains, and the smtp(8) client's settings
//! per master.cf service (see the routing section of [`super`]).

use super::*;

/// Settings read from main.cf.
pub struct QmgrSettings {
    pub queue_directory: PathBuf,
    pub myorigin: String,
    pub mydestination: Vec<String>,
    pub minimal_backoff: Duration,
    pub maximal_backoff: Duration,
    pub queue_run_delay: Duration,
    pub maximal_queue_lifetime: Duration,
    /// `delay_warning_time` (zero: no delay warnings).
    pub delay_warning_time: Duration,
    pub bounce_queue_lifetime: Duration,
    pub concurrency: usize,
    /// `virtual_alias_maps`. The tables of these lists are opened through the map cache at
    /// each use, so that `postmap` takes effect without a reload (Postfix's cleanup and
    /// trivial-rewrite restart when a table changes).
    pub virtual_alias_maps: Vec<String>,
    pub recipient_delimiter: String,
    /// `canonical_maps`, `sender_canonical_maps`, `recipient_canonical_maps`,
    /// `relocated_maps`, `transport_maps`.
    pub canonical_maps: Vec<String>,
    pub sender_canonical_maps: Vec<String>,
    pub recipient_canonical_maps: Vec<String>,
    pub relocated_maps: Vec<String>,
    pub transport_maps: Vec<String>,
    pub local: LocalSettings,
    /// virtual(8) delivery (`virtual_mailbox_*`).
    pub virtual_: crate::delivery::virtual_delivery::VirtualSettings,
    /// trivial-rewrite's resolve (transports and next-hops).
    pub resolver: route::Resolver,
    /// smtp(8) settings per master.cf service.
    pub smtp: std::collections::HashMap<String, crate::delivery::smtp::SmtpSettings>,
    /// Per-destination concurrency: `local_destination_concurrency_limit` (per recipient),
    /// `virtual_destination_concurrency_limit`, `smtp_destination_concurrency_limit` (per
    /// next-hop).
    /// Kept across reloads (the running deliveries hold its slots, parked messages wait in
    /// it).
    pub limiter: Arc<Limiter>,
    pub local_concurrency: usize,
    pub virtual_concurrency: usize,
    pub smtp_concurrency: usize,
    /// Whether `notify_classes` has `bounce` (double bounces to postmaster).
    pub notify_bounce: bool,
    /// `double_bounce_sender@$myhostname` and `2bounce_notice_recipient`.
    pub double_bounce_sender: String,
    pub double_bounce_recipient: String,
    pub ident_qmgr: String,
    /// The roles whose table warnings Postern's queue manager logs: cleanup(8) (canonical
    /// and virtual aliases) and trivial-rewrite(8) (domain lists, `transport_maps`,
    /// `relocated_maps`).
    pub ident_cleanup: String,
    pub ident_trivial_rewrite: String,
    pub ident_retry: String,
    pub ident_virtual: String,
    pub ident_local: String,
    pub ident_error: String,
    pub ident_discard: String,
    pub ident_pickup: String,
    pub ident_bounce: String,
}

impl QmgrSettings {
    pub fn from_config(cfg: &PostfixConfig) -> QmgrSettings {
        let time =
            |n: &str, unit: char, d: u64| cfg.get_time(n, unit).unwrap_or(Duration::from_secs(d));
        let ident_local = log::ident(cfg, "local");
        // Table lists split as Postfix's mystrtokq does (`inline:{ a=b, c=d }` stays whole).
        let maps = |name: &str| cfg.get_list(name);
        let resolver = route::Resolver::from_config(cfg);
        let smtp = resolver
            .smtp_services()
            .into_iter()
            .map(|n| {
                let st = crate::delivery::smtp::SmtpSettings::from_config(cfg, &n);
                (n, st)
            })
            .collect();
        let num = |n: &str, d: usize| cfg.get_num(n).unwrap_or(d).clamp(1, 1000);
        let myhostname = cfg.get("myhostname").unwrap_or_default();
        QmgrSettings {
            resolver,
            smtp,
            limiter: Arc::new(Limiter::default()),
            local_concurrency: num("local_destination_concurrency_limit", 2),
            virtual_concurrency: num("virtual_destination_concurrency_limit", 20),
            smtp_concurrency: num("smtp_destination_concurrency_limit", 20),
            notify_bounce: cfg
                .get("notify_classes")
                .unwrap_or_default()
                .split(|c: char| c == ',' || c.is_whitespace())
                .any(|c| c.eq_ignore_ascii_case("bounce")),
            double_bounce_sender: format!(
                "{}@{myhostname}",
                cfg.get("double_bounce_sender")
                    .unwrap_or_else(|| "double-bounce".into())
            ),
            double_bounce_recipient: cfg
                .get("2bounce_notice_recipient")
                .unwrap_or_else(|| "postmaster".into()),
            ident_retry: log::ident(cfg, "retry"),
            ident_virtual: log::ident(cfg, "virtual"),
            canonical_maps: maps("canonical_maps"),
            sender_canonical_maps: maps("sender_canonical_maps"),
            recipient_canonical_maps: maps("recipient_canonical_maps"),
            relocated_maps: maps("relocated_maps"),
            transport_maps: maps("transport_maps"),
            ident_discard: log::ident(cfg, "discard"),
            queue_directory: PathBuf::from(cfg.get("queue_directory").unwrap_or_default().trim()),
            myorigin: cfg.myorigin().unwrap_or_else(|| "localhost".into()),
            mydestination: cfg
                .get("mydestination")
                .unwrap_or_default()
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|d| !d.is_empty() && !d.contains(':') && !d.starts_with('/'))
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            minimal_backoff: time("minimal_backoff_time", 's', 300),
            maximal_backoff: time("maximal_backoff_time", 's', 4000),
            queue_run_delay: time("queue_run_delay", 's', 300),
            maximal_queue_lifetime: time("maximal_queue_lifetime", 'd', 5 * 86400),
            delay_warning_time: time("delay_warning_time", 'h', 0),
            bounce_queue_lifetime: time("bounce_queue_lifetime", 'd', 5 * 86400),
            // Worker threads: enough for parallel destinations; each destination is further
            // limited by its *_destination_concurrency_limit (Postfix: default_process_limit
            // agents, shared by all destinations).
            concurrency: num("default_process_limit", 100)
                .min(20)
                .max(num("local_destination_concurrency_limit", 2)),
            virtual_alias_maps: maps("virtual_alias_maps"),
            recipient_delimiter: cfg.get("recipient_delimiter").unwrap_or_default(),
            local: LocalSettings::from_config(cfg, &ident_local),
            virtual_: crate::delivery::virtual_delivery::VirtualSettings::from_config(cfg),
            ident_qmgr: log::ident(cfg, "qmgr"),
            ident_cleanup: log::ident(cfg, "cleanup"),
            ident_trivial_rewrite: log::ident(cfg, "trivial-rewrite"),
            ident_local,
            ident_error: log::ident(cfg, "error"),
            ident_pickup: log::ident(cfg, "pickup"),
            ident_bounce: log::ident(cfg, "bounce"),
        }
    }

    /// The tables of `specs` through the map cache; what opening them logged goes to the
    /// log under `ident`.
    fn tables(&self, specs: &[String], ident: &str) -> Vec<Arc<dyn crate::maps::Table>> {
        crate::maps::open_list(specs, crate::maps::source::Format::Postmap, &mut |n| {
            n.log(ident)
        })
    }

    /// Log a failed cleanup(8) lookup as Postfix's cleanup does (the table's lines, then
    /// `ID: TITLE map lookup problem for ADDR`; Postfix adds `-- message not accepted, try
    /// again later`, here the recipients are deferred instead) and return the deferral text.
    fn cleanup_problem(
        &self,
        id: &str,
        title: &str,
        addr: &str,
        e: &crate::maps::LookupError,
    ) -> String {
        for w in e.warnings() {
            log::warning(&self.ident_cleanup, &w);
        }
        let text = format!("{title} map lookup problem for {addr}");
        log::warning(&self.ident_cleanup, &format!("{id}: {text}"));
        text
    }

    /// Expand `addr` through `virtual_alias_maps` (Postfix's cleanup does this at queue
    /// time; here it happens at delivery), recursively up to 10 levels. An address that maps
    /// to itself (among others) is kept, as in Postfix. `Err` (the deferral text, the
    /// failure logged) when a table could not answer.
    pub fn virtual_expand(&self, id: &str, addr: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let tables = self.tables(&self.virtual_alias_maps, &self.ident_cleanup);
        self.expand_into(&tables, addr, 0, &mut Vec::new(), &mut out)
            .map_err(|(e, a)| self.cleanup_problem(id, "virtual_alias_maps", &a, &e))?;
        Ok(out)
    }

    fn expand_into(
        &self,
        tables: &[Arc<dyn crate::maps::Table>],
        addr: &str,
        depth: usize,
        seen: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), (crate::maps::LookupError, String)> {
        if tables.is_empty() || depth > 10 || seen.iter().any(|a| a == addr) {
            if !out.iter().any(|a| a == addr) {
                out.push(addr.to_string());
            }
            return Ok(());
        }
        let domain = addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let keys = crate::maps::rewrite_address_keys(
            addr,
            &self.recipient_delimiter,
            self.is_local_domain(domain),
        );
        match crate::maps::find(tables, &keys).map_err(|e| (e, addr.to_string()))? {
            None => {
                if !out.iter().any(|a| a == addr) {
                    out.push(addr.to_string());
                }
            }
            Some((_, value)) => {
                seen.push(addr.to_string());
                for t in value
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|t| !t.is_empty())
                {
                    let t = if t.contains('@') {
                        t.to_string()
                    } else {
                        format!("{t}@{}", self.myorigin)
                    };
                    self.expand_into(tables, &t, depth + 1, seen, out)?;
                }
                seen.pop();
            }
        }
        Ok(())
    }

    /// cleanup's canonical mapping: each table list in turn (`sender_canonical_maps` or
    /// `recipient_canonical_maps`, then `canonical_maps`, given with their parameter names),
    /// with the address lookup keys of `canonical(5)`; `@domain` results keep the local
    /// part. `Err` (the deferral text, the failure logged) when a table could not answer.
    pub fn canonical(
        &self,
        id: &str,
        lists: &[(&str, &Vec<String>)],
        addr: &str,
    ) -> Result<String, String> {
        let mut a = addr.to_string();
        for (title, specs) in lists {
            if specs.is_empty() || a.is_empty() {
                continue;
            }
            let tables = self.tables(specs, &self.ident_cleanup);
            let (local, domain) = a.rsplit_once('@').unwrap_or((a.as_str(), ""));
            let keys = crate::maps::rewrite_address_keys(
                &a,
                &self.recipient_delimiter,
                self.is_local_domain(domain),
            );
            match crate::maps::find(&tables, &keys) {
                Ok(Some((_, v))) => {
                    let v = v
                        .split([',', ' ', '\t'])
                        .find(|t| !t.is_empty())
                        .unwrap_or("");
                    if v.is_empty() {
                        continue;
                    }
                    a = if v.starts_with('@') {
                        format!("{local}{v}")
                    } else if !v.contains('@') {
                        format!("{v}@{}", self.myorigin)
                    } else {
                        v.to_string()
                    };
                }
                Ok(None) => {}
                Err(e) => return Err(self.cleanup_problem(id, title, &a, &e)),
            }
        }
        Ok(a)
    }

    /// Log trivial-rewrite's lines for a failed table (`… lookup error for …`, then `NAME
    /// lookup failure`).
    fn resolve_problem(&self, name: &str, e: &crate::maps::LookupError) {
        for w in e.warnings() {
            log::warning(&self.ident_trivial_rewrite, &w);
        }
        log::warning(
            &self.ident_trivial_rewrite,
            &format!("{name} lookup failure"),
        );
    }

    /// `relocated_maps`: the new contact information for `addr`, if any; `Err` (logged)
    /// when the table could not answer.
    pub(super) fn relocated(&self, addr: &str) -> Result<Option<String>, ()> {
        if self.relocated_maps.is_empty() {
            return Ok(None);
        }
        let tables = self.tables(&self.relocated_maps, &self.ident_trivial_rewrite);
        let domain = addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let keys = crate::maps::rewrite_address_keys(
            addr,
            &self.recipient_delimiter,
            self.is_local_domain(domain),
        );
        match crate::maps::find(&tables, &keys) {
            Ok(v) => Ok(v.map(|(_, v)| v.trim().to_string())),
            Err(e) => {
                self.resolve_problem("relocated_maps", &e);
                Err(())
            }
        }
    }

    /// `transport_maps`: `(transport, nexthop)` for `addr` (keys: the address, then for
    /// tables that are not patterns the domain and its parent domains as `.parent`, then
    /// `*`); `Err` (logged) when a table could not answer.
    pub(super) fn transport(&self, addr: &str) -> Result<Option<(String, String)>, ()> {
        if self.transport_maps.is_empty() {
            return Ok(None);
        }
        let tables = self.tables(&self.transport_maps, &self.ident_trivial_rewrite);
        let addr = addr.to_ascii_lowercase();
        let domain = addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let key = |k: String, partial: bool| crate::maps::Key { key: k, partial };
        let mut keys = vec![key(addr.clone(), false), key(domain.to_string(), true)];
        let mut d = domain;
        while let Some((_, parent)) = d.split_once('.') {
            keys.push(key(format!(".{parent}"), true));
            d = parent;
        }
        keys.push(key("*".into(), false));
        match crate::maps::find(&tables, &keys) {
            Ok(v) => Ok(v.map(|(_, v)| {
                let v = v.trim();
                let (tr, nh) = v.split_once(':').unwrap_or((v, ""));
                (tr.trim().to_string(), nh.trim().to_string())
            })),
            Err(e) => {
                self.resolve_problem("transport_maps", &e);
                Err(())
            }
        }
    }

    /// Whether `domain` is local (for the bare local-part keys of `mail_addr_find()`). A
    /// domain list that fails counts as not local here; the resolve that follows fails too
    /// and defers the recipient.
    fn is_local_domain(&self, domain: &str) -> bool {
        let d = domain.to_ascii_lowercase();
        self.mydestination.contains(&d)
            || matches!(
                self.resolver.class_of(&format!("x@{d}"), &mut Vec::new()),
                Ok(crate::resolve::AddressClass::Local)
            )
    }

    /// A queued recipient address as delivery sees it: without a domain, `@$myorigin`
    /// appended (`append_at_myorigin`).
    pub fn qualify(&self, address: &str) -> String {
        if address.contains('@') || address.is_empty() {
            address.to_string()
        } else {
            format!("{address}@{}", self.myorigin)
        }
    }

    /// Whether the queued recipient `addr` (qualified) resolves to `target` delivered by
    /// local(8) (`virtual_` false) or virtual(8): cleanup's canonical and virtual alias
    /// mapping, `relocated_maps`, `transport_maps` and the address class, as `process`
    /// routes it. The local delivery process checks every request with it. A table that
    /// cannot answer makes it false (the queue manager, which asked, would have deferred).
    pub fn routes_to(&self, id: &str, addr: &str, target: &str, virtual_: bool) -> bool {
        let Ok(addr) = self.canonical(
            id,
            &[
                ("recipient_canonical_maps", &self.recipient_canonical_maps),
                ("canonical_maps", &self.canonical_maps),
            ],
            addr,
        ) else {
            return false;
        };
        let Ok(targets) = self.virtual_expand(id, &addr) else {
            return false;
        };
        if !targets.iter().any(|t| t == target) {
            return false;
        }
        let (Ok(None), Ok(transport)) = (self.relocated(target), self.transport(target)) else {
            return false;
        };
        match self.resolver.resolve(target, transport, &mut Vec::new()) {
            route::Route::Local => !virtual_,
            route::Route::Virtual => virtual_,
            _ => false,
        }
    }

    /// The smtp(8) settings of master.cf service `service` (the `smtp` service's when
    /// unknown).
    /// Borrowed, not cloned: a clone copied the whole configuration (main.cf, master.cf)
    /// for every message relayed.
    pub fn smtp_settings(&self, service: &str) -> &crate::delivery::smtp::SmtpSettings {
        self.smtp
            .get(service)
            .or_else(|| self.smtp.get("smtp"))
            .expect("smtp service settings")
    }
}
