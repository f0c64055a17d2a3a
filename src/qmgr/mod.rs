//! Postfix's `qmgr(8)` with the `pickup(8)` role: takes complete queue files from
//! `maildrop/` and `incoming/` to `active/`, resolves each recipient, has local deliveries
//! made ([`crate::delivery::local`], in the local delivery process) from a pool of worker threads, marks each recipient done in the queue file as soon
//! as its delivery is final (so a restart never delivers it twice), removes the file when every
//! recipient is done, and moves it to `deferred/` with back-off otherwise.
//!
//! # How it runs
//! The master starts the queue manager when master.cf has a `qmgr` service (as Postfix's
//! master does; a master.cf without one queues mail but never delivers it), as a child
//! process (`postern qmgr -c DIR`), together with the local delivery process
//! ([`crate::qmgr::local_server`]), the two connected by a socket pair. Started as root, the
//! queue manager becomes `mail_owner` for good before it reads anything (Postfix's qmgr is
//! unprivileged), and so does all it runs itself: the outbound smtp client
//! ([`crate::delivery::smtp`]), bounces, delay warnings, defer logs; what it writes in the queue is
//! `mail_owner`'s with Postfix's modes (the master's umask is 077). Local and virtual
//! deliveries, the only ones that need root, go to the local delivery process, one
//! request per recipient (queue ID, offset of the recipient record, address); it checks
//! each against the queue file and answers with the outcomes, which are logged, marked
//! and bounced here as any other. The queue manager never gets root back (DESIGN.md §3).
//!
//! The child reads its standard input: `R` re-reads the configuration (master reload), end
//! of file means the master is gone and it exits. Deliveries in progress when the master
//! goes away are finished first, and a new queue manager waits for the old one
//! (`queue_directory/pid/qmgr.lock`, opened afresh by the master for each one, since
//! `pid/` is root's), so a crash of the master never makes a recipient get a message twice.
//! It also listens on the FIFO `queue_directory/public/qmgr` (made by the master, mode
//! 0622, `mail_owner`'s), where `postfix flush`, `postqueue -f` and `sendmail` write a byte
//! to wake it (`F`: retry deferred mail now).
//!
//! pickup(8): a file in `maildrop/` belongs to the user who submitted it (mode 0744), so
//! it is copied into a queue file of the mail system's own in `incoming/` (temporary
//! name, fsync, rename without replacing, directory fsync) and then removed, as Postfix's
//! pickup hands it to cleanup; a crash between the two steps delivers it twice, Postfix's
//! window too.
//!
//! # Scheduling
//! New mail is picked up when its writer wakes the queue manager through `public/qmgr`
//! ([`crate::queue::trigger`]: the queue writer once per group commit, as Postfix's cleanup
//! triggers qmgr, `sendmail`/`postdrop`, `postqueue`, `postsuper -r`, bounces written here);
//! wake-ups that arrive during a scan are served by one scan. `incoming/` and `maildrop/` are
//! also scanned every `min(queue_run_delay, 60s)` (every 200 ms when the FIFO cannot be
//! opened). Deferred files carry their next attempt time as their modification
//! time, as in Postfix: `now + clamp(time in queue, minimal_backoff_time,
//! maximal_backoff_time)`; `deferred/` is scanned every `queue_run_delay`. A message older
//! than `maximal_queue_lifetime` (`bounce_queue_lifetime` for `<>` senders) is returned.
//! Up to `local_destination_concurrency_limit` messages are delivered at once.
//!
//! # Routing
//! An address without a domain gets `@$myorigin` (`append_at_myorigin`);
//! the sender goes through `sender_canonical_maps` then `canonical_maps`, each recipient
//! through `recipient_canonical_maps` then `canonical_maps` ([`QmgrSettings::canonical`],
//! cleanup's order; the result is delivered and logged, the queued address as `orig_to`);
//! `virtual_alias_maps` expands it (full address, `user@domain` without the extension, the
//! local part for local domains, `@domain`; recursively); a `relocated_maps` hit bounces
//! with `5.1.6 User has moved to …` (trivial-rewrite's text, logged by `postfix/error`);
//! then [`route::Resolver`] does trivial-rewrite's resolve: the address class (mydestination,
//! virtual alias, virtual mailbox, relay, default) picks `local_transport`,
//! `virtual_transport`, `relay_transport` or `default_transport`, `relayhost` the next-hop of
//! the last two, and `transport_maps` (address, domain, `.parent` domains, `*`) overrides
//! transport and/or next-hop. The transport's master.cf command picks the agent: local(8)
//! ([`crate::delivery::local`]), virtual(8) ([`crate::delivery::virtual_delivery`]), smtp(8) ([`crate::delivery::smtp`],
//! called once per (service, next-hop) group of a message's recipients), error(8)
//! (`[d.s.n ]text`; a 4.x.x status is logged as 5.0.0, empty text is `Address is
//! undeliverable`, as Postfix 3.7's error(8) does), retry(8), discard(8)
//! (`dsn=2.0.0, status=sent (text)`, text defaulting to the next-hop). A transport with no
//! agent here (`pipe`, `lmtp`) is deferred with `mail transport unavailable`.
//!
//! Each delivery holds a per-destination slot ([`Limiter`]): `local_destination_concurrency_limit`
//! per local recipient, `virtual_destination_concurrency_limit` per virtual recipient,
//! `smtp_destination_concurrency_limit` per next-hop; `min(default_process_limit, 20)` worker
//! threads share them.
//!
//! One mailbox's trouble never stalls the queue (issue 17): a message whose only undelivered
//! recipients are for a local or virtual destination with no free slot is not waited for:
//! it stays in `active/`, put aside in the [`Limiter`], and goes back to the workers when a
//! slot of that destination frees. A worker waiting for the local delivery process (which
//! may wait `deliver_lock_attempts` × `deliver_lock_delay` for a mailbox lock) does not
//! count against the pool: another thread is started in its place (up to 100 such waits),
//! and the surplus ends after its message (a parked message handed back that takes no slot,
//! its recipients being done already, is covered by a hand-back at each queue poll). So a
//! locked mailbox holds at most its
//! `local_destination_concurrency_limit` deliveries, and other mailboxes and relayed mail
//! keep their workers.
//!
//! # Lookup failures
//! A table that cannot answer is never taken for an empty one. The tables are opened
//! through the map cache at each use, so `postmap` takes effect without a reload.
//! `canonical_maps`/`virtual_alias_maps` (cleanup's role): the table's lines and `ID:
//! virtual_alias_maps map lookup problem for ADDR` under `postfix/cleanup`, and the
//! recipient (every recipient, for the sender's canonical mapping) is deferred with that
//! text (Postfix's cleanup leaves the message in maildrop instead: `-- message not
//! accepted, try again later`). `transport_maps`, `relocated_maps` and the domain lists
//! (trivial-rewrite's role): its lines (`transport_maps lookup failure`) under
//! `postfix/trivial-rewrite`, and `relay=none, dsn=4.3.0, status=deferred (address
//! resolver failure)` from `postfix/error`, as Postfix 3.7 logs it.
//!
//! # Notifications
//! Permanently failed recipients are returned to the sender ([`bounce`], Postfix's failure
//! template) and only then marked done, as bounce(8) deletes recipients after it has sent
//! the notice: a crash in between repeats the notice, it never loses it. A failed `<>` message
//! is dropped unless `notify_classes` has `bounce` (then a postmaster copy goes to
//! `2bounce_notice_recipient` from `double_bounce_sender`). With `delay_warning_time`, a
//! delay warning (delay template) goes to the sender once, when a deferral happens after the
//! queue file's `W` time; the record is then zeroed in place, as Postfix does.
//!
//! # Logs (Postfix's formats)
//! `ID: from=<…>, size=…, nrcpt=… (queue active)`, `ID: to=<…>, [orig_to=<…>, ]relay=local,
//! delay=…, delays=a/b/c/d, dsn=…, status=sent (delivered to mailbox)`, `ID: removed`,
//! `ID: from=<…>, status=expired, returned to sender`.
//!
//! # main.cf parameters read
//! `queue_directory`, `myorigin`, `mydestination`, `minimal_backoff_time`,
//! `maximal_backoff_time`, `queue_run_delay`, `maximal_queue_lifetime`,
//! `bounce_queue_lifetime`, `local_destination_concurrency_limit`, `virtual_alias_maps`,
//! `canonical_maps`, `sender_canonical_maps`, `recipient_canonical_maps`, `relocated_maps`,
//! `transport_maps`, `recipient_delimiter`, and those of
//! [`crate::delivery::local`].
//!
//! # Known limits
//! * XXX canonical and virtual aliases are applied at delivery, not by cleanup at queue time
//!   (headers are not rewritten); `mydestination` entries that are lookup tables are matched
//!   through smtpd's domain lists; an alias expansion with one deferred member is retried
//!   whole (members already delivered get the message again, as with Postfix's local(8)).
//! * XXX The smtp(8) client runs in the queue manager's process (as `mail_owner`, as
//!   Postfix's smtp runs, but not in a process of its own); the recipients of one message
//!   are delivered one destination after another. Tables are opened as `mail_owner`
//!   (Postfix's daemons open theirs as root before dropping privileges): an index must be
//!   readable by it, as postmap(1) makes it. No `sender_dependent_relayhost_maps`,
//!   `sender_dependent_default_transport_maps`, `*_destination_recipient_limit` other than 1
//!   for local, or concurrency feedback (a fixed limit per destination).

pub mod bounce;
pub mod defer;
pub mod local_client;
pub mod local_server;
pub use crate::resolve::route;

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::postfix::PostfixConfig;
use crate::delivery::local::{self, LocalSettings};
use crate::delivery::{Outcome, Status};
use crate::log;
use crate::queue::store::Store;
use crate::queue::{QueueFileError, QueuedMessage, mark_recipient_done, read_queue_file};

/// How often `incoming/` and `maildrop/` are looked at when the FIFO cannot be listened
/// on, and parked messages handed back while some wait ([`Limiter::kick`]).
const QUEUE_POLL: Duration = Duration::from_millis(200);

/// The longest time between two scans of `incoming/` and `maildrop/` without a wake-up
/// (bounded by `queue_run_delay`): Postfix's pickup wakes every 60 s (master.cf), its qmgr
/// scans `incoming/` when triggered.
const FALLBACK_SCAN: Duration = Duration::from_secs(60);

/// Held (shared) by each delivery; taken exclusively when the master goes away, so that the
/// process exits between deliveries, never in the middle of one.
static DELIVERING: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// The queue, for queue IDs of the notifications this process writes.
static QUEUE: std::sync::OnceLock<Arc<crate::queue::Queue>> = std::sync::OnceLock::new();

/// Whether master.cf asks for a queue manager (a service whose command is `qmgr` or
/// `oqmgr`).
pub fn wanted(cfg: &PostfixConfig) -> bool {
    cfg.master
        .services
        .iter()
        .any(|s| s.command == "qmgr" || s.command == "oqmgr")
}

/// Wake a running queue manager through its FIFO (`postfix flush`, `postqueue -f`,
/// `sendmail`); `b'F'` also retries all deferred mail. Returns whether one was listening.
pub fn wake(queue_directory: &Path, what: u8) -> bool {
    crate::queue::trigger::wake(queue_directory, what)
}

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
    fn relocated(&self, addr: &str) -> Result<Option<String>, ()> {
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
    fn transport(&self, addr: &str) -> Result<Option<(String, String)>, ()> {
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
    pub fn smtp_settings(&self, service: &str) -> crate::delivery::smtp::SmtpSettings {
        self.smtp
            .get(service)
            .or_else(|| self.smtp.get("smtp"))
            .cloned()
            .expect("smtp service settings")
    }
}

/// Counting semaphores per destination key, and the messages waiting for one.
#[derive(Default)]
pub struct Limiter {
    state: Mutex<LimiterState>,
}

#[derive(Default)]
struct LimiterState {
    /// Per destination: deliveries running, threads waiting, and the condition those
    /// threads wait on (a release wakes one waiter of that destination only; one condition
    /// for all woke every waiting thread of every destination at each release).
    dests: std::collections::HashMap<String, Dest>,
    /// Messages put aside until a slot of the key frees ([`Limiter::park`]), with the
    /// key's limit.
    parked: std::collections::HashMap<String, (usize, std::collections::VecDeque<Job>)>,
}

#[derive(Default)]
struct Dest {
    running: usize,
    waiting: usize,
    cv: Arc<std::sync::Condvar>,
}

/// A held destination slot; released on drop.
pub struct Slot<'a> {
    limiter: &'a Limiter,
    key: String,
}

impl Limiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn running(g: &LimiterState, key: &str) -> usize {
        g.dests.get(key).map_or(0, |d| d.running)
    }

    /// Wait until `key` has fewer than `limit` deliveries running, then take a slot.
    pub fn acquire(&self, key: String, limit: usize) -> Slot<'_> {
        let mut g = self.lock();
        let d = g.dests.entry(key.clone()).or_default();
        if d.running >= limit.max(1) {
            let cv = d.cv.clone();
            d.waiting += 1;
            loop {
                g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
                let d = g.dests.entry(key.clone()).or_default();
                if d.running < limit.max(1) {
                    d.waiting -= 1;
                    break;
                }
            }
        }
        g.dests.entry(key.clone()).or_default().running += 1;
        Slot { limiter: self, key }
    }

    /// A slot of `key` if one is free now; `None` (nothing waited for) otherwise.
    pub fn try_acquire(&self, key: &str, limit: usize) -> Option<Slot<'_>> {
        let mut g = self.lock();
        let d = g.dests.entry(key.to_string()).or_default();
        if d.running >= limit.max(1) {
            return None;
        }
        d.running += 1;
        Some(Slot {
            limiter: self,
            key: key.to_string(),
        })
    }

    /// Put `job` aside until a slot of `key` frees, then hand it to the workers again
    /// ([`resubmit`]); at once when one is free already (it freed since the job found the
    /// key busy).
    fn park(&self, key: String, limit: usize, job: Job) {
        let mut g = self.lock();
        if Self::running(&g, &key) < limit.max(1) {
            drop(g);
            resubmit(job);
            return;
        }
        g.parked
            .entry(key)
            .or_insert_with(|| (limit, Default::default()))
            .1
            .push_back(job);
    }

    /// Whether any message waits for a destination slot.
    fn has_parked(&self) -> bool {
        !self.lock().parked.is_empty()
    }

    /// Hand parked messages back for every destination with free slots (as many as are
    /// free). The release of a slot hands one back at once ([`Slot`]'s drop); this is the
    /// safety net, run at each queue poll, for a message handed back that then took no
    /// slot (its recipients were done already, say), which would leave the others parked.
    fn kick(&self) {
        let mut out = Vec::new();
        {
            let mut g = self.lock();
            let LimiterState { dests, parked } = &mut *g;
            parked.retain(|key, (limit, q)| {
                let free = limit.saturating_sub(dests.get(key).map_or(0, |d| d.running));
                for _ in 0..free {
                    match q.pop_front() {
                        Some(j) => out.push(j),
                        None => break,
                    }
                }
                !q.is_empty()
            });
        }
        for j in out {
            resubmit(j);
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut g = self.limiter.lock();
        let mut next = None;
        let mut left = usize::MAX;
        let mut waiters = false;
        if let Some(d) = g.dests.get_mut(&self.key) {
            d.running = d.running.saturating_sub(1);
            left = d.running;
            if d.waiting > 0 {
                // A thread waiting in acquire() takes the slot.
                waiters = true;
                d.cv.notify_one();
            } else if d.running == 0 {
                g.dests.remove(&self.key);
            }
        }
        // Otherwise one message waiting for this destination goes back to the workers.
        if !waiters && let Some((limit, q)) = g.parked.get_mut(&self.key) {
            if left < *limit {
                next = q.pop_front();
            }
            if q.is_empty() {
                g.parked.remove(&self.key);
            }
        }
        drop(g);
        if let Some(job) = next {
            resubmit(job);
        }
    }
}

/// The workers' job queue, for messages coming back from [`Limiter::park`].
static JOBS: std::sync::OnceLock<mpsc::Sender<Job>> = std::sync::OnceLock::new();

fn resubmit(job: Job) {
    if let Some(tx) = JOBS.get() {
        let _ = tx.send(job);
    }
}

/// The worker pool, elastic as tokio's `block_in_place`: a worker waiting for the local
/// delivery process (which may wait up to `deliver_lock_attempts` × `deliver_lock_delay`
/// for a mailbox lock) does not count, and another worker is started in its place, so
/// that a locked mailbox never takes workers from other mailboxes or relayed mail. At most
/// `MAX_PARKED` workers wait so (the local delivery process's own limit is
/// `default_process_limit`); a worker exits after its message when more than the target
/// run.
struct Pool {
    running: usize,
    parked: usize,
    target: usize,
}

const MAX_PARKED: usize = 100;

static POOL: Mutex<Pool> = Mutex::new(Pool {
    running: 0,
    parked: 0,
    target: 0,
});
type Spawner = Box<dyn Fn() + Send + Sync>;
static SPAWN_WORKER: std::sync::OnceLock<Spawner> = std::sync::OnceLock::new();

/// Held while a worker waits for a local delivery; see [`Pool`].
struct Parked;

impl Parked {
    fn enter() -> Parked {
        let spawn = {
            let mut p = POOL.lock().unwrap_or_else(|e| e.into_inner());
            p.parked += 1;
            let spawn = p.running - p.parked.min(p.running) < p.target && p.parked <= MAX_PARKED;
            if spawn {
                p.running += 1;
            }
            spawn
        };
        if spawn && let Some(f) = SPAWN_WORKER.get() {
            f();
        }
        Parked
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        let mut p = POOL.lock().unwrap_or_else(|e| e.into_inner());
        p.parked -= 1;
    }
}

/// After a message: whether this worker is one too many and should end.
fn worker_surplus() -> bool {
    let mut p = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if p.running - p.parked.min(p.running) > p.target {
        p.running -= 1;
        true
    } else {
        false
    }
}

enum Event {
    Reload,
    Wake { flush: bool },
}

/// `postern qmgr -c DIR`: the queue manager process. Returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let mut config_dir = None;
    let mut it = args.iter().skip_while(|a| a.as_str() == "qmgr");
    while let Some(a) = it.next() {
        if a == "-c" {
            config_dir = it.next().map(PathBuf::from);
        }
    }
    let cfg = match crate::config::postfix::load_config(config_dir.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            log::fatal("postfix/qmgr", &e);
            log::flush();
            return 1;
        }
    };
    if let Err(e) = log::configure(&cfg) {
        eprintln!("postfix/qmgr: fatal: {e}");
        return 1;
    }
    // Started as root by the master: become mail_owner for good before touching anything
    // (Postfix's qmgr runs unprivileged; deliveries that need root go to the local
    // delivery process, crate::qmgr::local_server).
    if crate::sys::privs::is_root() {
        let dropped =
            crate::sys::privs::mail_owner(&cfg).and_then(|o| crate::sys::privs::drop_to(&o));
        if let Err(e) = dropped {
            log::fatal(&log::ident(&cfg, "qmgr"), &e);
            log::flush();
            return 1;
        }
    }
    local_client::init_from_env();
    let settings = Arc::new(QmgrSettings::from_config(&cfg));
    // One queue manager per queue: a new one (after a master crash and restart) waits here
    // until the old one has finished the deliveries it had started.
    let _lock = match lock_queue(&settings.queue_directory) {
        Ok(f) => f,
        Err(e) => {
            log::fatal(
                &settings.ident_qmgr,
                &format!(
                    "lock {}: {e}",
                    settings.queue_directory.join("pid/qmgr.lock").display()
                ),
            );
            log::flush();
            return 1;
        }
    };
    match crate::queue::Queue::open(&cfg) {
        Ok(q) => {
            let _ = QUEUE.set(q);
        }
        Err(e) => log::warning(
            &settings.ident_qmgr,
            &format!("cannot open the queue: {e:#}"),
        ),
    }
    let (tx, rx) = mpsc::channel::<Event>();
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut b = [0u8; 64];
            loop {
                match stdin.read(&mut b) {
                    Ok(0) | Err(_) => {
                        // The master is gone: let deliveries in progress finish (so that each
                        // delivered recipient is also marked done), then stop.
                        let _all = DELIVERING.write();
                        log::flush();
                        std::process::exit(0);
                    }
                    Ok(n) => {
                        if b[..n].contains(&b'R') {
                            let _ = tx.send(Event::Reload);
                        }
                    }
                }
            }
        });
    }
    let listening = start_fifo_listener(&settings.queue_directory, tx);
    let code = run(settings, config_dir, rx, listening);
    log::flush();
    code
}

/// The environment variable naming the descriptor of `pid/qmgr.lock` that the master
/// opened for this queue manager (the `pid/` directory is root's).
pub const LOCK_FD_ENV: &str = "POSTERN_QMGR_LOCK_FD";

fn lock_queue(queue_directory: &Path) -> std::io::Result<std::fs::File> {
    let inherited = std::env::var(LOCK_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|fd| *fd > 2);
    let f = match inherited {
        // The master opened this descriptor for us alone.
        Some(fd) => {
            let f = std::fs::File::from(crate::sys::take_inherited_fd(fd));
            let _ = nix::fcntl::fcntl(
                &f,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            f
        }
        None => {
            let dir = queue_directory.join("pid");
            std::fs::create_dir_all(&dir)?;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join("qmgr.lock"))?
        }
    };
    loop {
        match f.lock() {
            Ok(()) => return Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Whether the FIFO is listened on (otherwise the queue is polled every `QUEUE_POLL`).
fn start_fifo_listener(queue_directory: &Path, tx: mpsc::Sender<Event>) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    // The master makes public/qmgr (mail_owner's, 0622) before starting us; this covers a
    // queue manager started without it.
    let fifo = match make_fifo(queue_directory, None) {
        Ok(f) => f,
        Err(e) => {
            log::warning(
                "postfix/qmgr",
                &format!("{}: {e}", queue_directory.join("public/qmgr").display()),
            );
            return false;
        }
    };
    // Opened read-write so that it never reads end of file when writers come and go.
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&fifo)
    else {
        return false;
    };
    std::thread::spawn(move || {
        let mut b = [0u8; 256];
        while let Ok(n) = f.read(&mut b) {
            if n == 0 {
                break;
            }
            let _ = tx.send(Event::Wake {
                flush: b[..n].contains(&crate::queue::trigger::FLUSH_DEAD),
            });
        }
    });
    true
}

/// Make `queue_directory/public/qmgr`, the FIFO that `postqueue -f`, `postfix flush` and
/// `sendmail` write to: mode 0622, owned by `owner` (uid, gid) when given, as Postfix's
/// master makes its fifo services with mail_owner's ids. Anything else found there (the
/// real Postfix's `qmgr` is a UNIX-domain socket) is replaced; a FIFO is kept, its owner
/// and mode set. `public/` itself must exist.
pub fn make_fifo(queue_directory: &Path, owner: Option<(u32, u32)>) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let fifo = queue_directory.join("public").join("qmgr");
    match std::fs::symlink_metadata(&fifo) {
        Ok(m) if m.file_type().is_fifo() => {
            if let Some((uid, gid)) = owner
                && (m.uid() != uid || m.gid() != gid)
            {
                std::os::unix::fs::lchown(&fifo, Some(uid), Some(gid))?;
            }
            if m.mode() & 0o7777 != 0o622 {
                std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o622))?;
            }
            return Ok(fifo);
        }
        Ok(_) => std::fs::remove_file(&fifo)?,
        Err(_) => {}
    }
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622))
        .map_err(std::io::Error::from)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(&fifo, Some(uid), Some(gid))?;
    }
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o622))?;
    Ok(fifo)
}

/// One message handed to a worker: its path in `active/`.
struct Job {
    path: PathBuf,
    id: String,
}

fn run(
    mut settings: Arc<QmgrSettings>,
    config_dir: Option<PathBuf>,
    rx: mpsc::Receiver<Event>,
    listening: bool,
) -> i32 {
    let qdir = settings.queue_directory.clone();
    for q in ["active", "deferred", "incoming", "maildrop"] {
        let _ = std::fs::create_dir_all(qdir.join(q));
    }
    let in_progress: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let shared: Arc<Mutex<Arc<QmgrSettings>>> = Arc::new(Mutex::new(settings.clone()));
    let _ = JOBS.set(job_tx.clone());
    let spawn = {
        let job_rx = job_rx.clone();
        let shared = shared.clone();
        let in_progress = in_progress.clone();
        move || {
            let job_rx = job_rx.clone();
            let shared = shared.clone();
            let in_progress = in_progress.clone();
            std::thread::spawn(move || {
                loop {
                    let job = match job_rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let s = match shared.lock() {
                        Ok(s) => s.clone(),
                        Err(p) => p.into_inner().clone(),
                    };
                    let postponed = {
                        let _delivering = DELIVERING.read();
                        process(&s, &job.path)
                    };
                    match postponed {
                        // Still in progress: it comes back when the destination frees.
                        Some((key, limit)) => s.limiter.park(key, limit, job),
                        None => {
                            if let Ok(mut set) = in_progress.lock() {
                                set.remove(&job.id);
                            }
                        }
                    }
                    if worker_surplus() {
                        return;
                    }
                }
            });
        }
    };
    {
        let mut p = POOL.lock().unwrap_or_else(|e| e.into_inner());
        p.target = settings.concurrency;
        p.running = settings.concurrency;
    }
    for _ in 0..settings.concurrency {
        spawn();
    }
    let _ = SPAWN_WORKER.set(Box::new(spawn));
    // Files left in active/ by a crash are resumed first (their done recipients stay done).
    let submit = |path: PathBuf, id: String| {
        let fresh = in_progress
            .lock()
            .map(|mut s| s.insert(id.clone()))
            .unwrap_or(false);
        if fresh {
            let _ = job_tx.send(Job { path, id });
        }
    };
    for (id, path) in list_queue(&qdir.join("active"), false) {
        submit(path, id);
    }
    let mut last_deferred_scan = SystemTime::UNIX_EPOCH;
    // incoming/ and maildrop/ are scanned when a writer wakes us (the queue writer after
    // each group commit, pickup's submitters, postqueue), and every FALLBACK_SCAN anyway.
    let mut scan_new = true;
    let mut last_new_scan = std::time::Instant::now();
    loop {
        if scan_new {
            last_new_scan = std::time::Instant::now();
            for (id, path) in list_queue(&qdir.join("maildrop"), false) {
                pickup(&settings, &path, &qdir, &id);
            }
            for (id, path) in list_queue(&qdir.join("incoming"), false) {
                if let Some(p) = activate(&path, &qdir, &id) {
                    submit(p, id);
                }
            }
        }
        settings.limiter.kick();
        let new_every = if listening {
            FALLBACK_SCAN.min(settings.queue_run_delay)
        } else {
            QUEUE_POLL
        };
        let deferred_in = last_deferred_scan
            .elapsed()
            .map(|e| settings.queue_run_delay.saturating_sub(e))
            .unwrap_or_default();
        let mut timeout = new_every
            .saturating_sub(last_new_scan.elapsed())
            .min(deferred_in);
        if settings.limiter.has_parked() {
            timeout = timeout.min(QUEUE_POLL);
        }
        let mut flush = false;
        scan_new = false;
        let mut event = rx.recv_timeout(timeout);
        loop {
            match event {
                Ok(Event::Reload) => {
                    // Every table is read again, as Postfix's daemons are restarted (a table
                    // that could not be opened is tried again at once).
                    crate::maps::cache::global().clear();
                    if let Ok(cfg) = crate::config::postfix::load_config(config_dir.as_deref()) {
                        let _ = log::configure(&cfg);
                        let mut fresh = QmgrSettings::from_config(&cfg);
                        fresh.limiter = settings.limiter.clone();
                        settings = Arc::new(fresh);
                        if let Ok(mut s) = shared.lock() {
                            *s = settings.clone();
                        }
                    }
                }
                Ok(Event::Wake { flush: f }) => {
                    scan_new = true;
                    flush |= f;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return 0,
            }
            // Wake-ups that came meanwhile are taken with this one: one scan for them all.
            event = match rx.try_recv() {
                Ok(e) => Ok(e),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => Err(mpsc::RecvTimeoutError::Disconnected),
            };
        }
        if last_new_scan.elapsed() >= new_every {
            scan_new = true;
        }
        let due = last_deferred_scan
            .elapsed()
            .map(|e| e >= settings.queue_run_delay)
            .unwrap_or(true);
        if flush || due {
            last_deferred_scan = SystemTime::now();
            let now = SystemTime::now();
            for (id, path) in list_queue(&qdir.join("deferred"), true) {
                let ready = flush
                    || std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .map(|t| t <= now)
                        .unwrap_or(true);
                if ready && let Some(p) = activate(&path, &qdir, &id) {
                    submit(p, id);
                }
            }
        }
    }
}

/// A maildrop file written by someone other than `mail_owner` (any local user can hand
/// postdrop a file of records) is queued rebuilt from what a user may say, as Postfix's
/// pickup keeps only the records a submission carries: arrival time, sender, the
/// recipients not already marked done (with their DSN fields), DSN ENVID/RET, the body's
/// encoding and SMTPUTF8, and the content; `rewrite_context=local`, as for any local
/// submission. Everything else is dropped without a word (measured against Postfix 3.7.11's
/// pickup with a file planted in maildrop/: forged `client_address`, `sasl_username` and
/// `rewrite_context=remote` attributes and a `D` recipient vanish, the Received header says
/// `from userid N`, nothing is logged): client and SASL attributes that would show in logs
/// and headers, content filters, redirects, delivered marks.
fn untrusted_copy(m: &crate::queue::file::QueuedMessage, warn_time: Option<u64>) -> Vec<u8> {
    use crate::queue::file::{FileRecipient, FileSpec};
    let recipients: Vec<FileRecipient<'_>> = m
        .recipients
        .iter()
        .filter(|r| !r.done)
        .map(|r| FileRecipient {
            address: &r.address,
            orcpt: r
                .orcpt
                .clone()
                .unwrap_or_else(|| format!("rfc822;{}", r.address)),
            notify: r.notify_flags,
        })
        .collect();
    let mut lines: Vec<Vec<u8>> = m
        .content
        .split(|&c| c == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    if m.content.ends_with(b"\n") || m.content.is_empty() {
        lines.pop();
    }
    let encoding = match m.encoding.as_deref() {
        Some("7bit") => Some("7bit"),
        Some("8bit") => Some("8bit"),
        _ => None,
    };
    crate::queue::file::build(&FileSpec {
        queue_id: &m.queue_id,
        arrival: m.arrival,
        sender: &m.sender,
        recipients,
        rewrite_local: true,
        envid: m.envid.as_deref(),
        ret: (m.ret_flags != 0).then_some(m.ret_flags),
        encoding,
        smtputf8: m.smtputf8,
        attrs: vec![("log_message_origin", "local".to_string())],
        lines,
        line_length_limit: usize::MAX,
        warn_time: warn_time.filter(|&w| w > 0),
    })
}

/// Queue files (named like queue IDs) in `dir`, one level of hash subdirectories when
/// `hashed`.
pub fn list_queue(dir: &Path, hashed: bool) -> Vec<(String, PathBuf)> {
    let mut out = crate::queue::store::scan_dir(dir, hashed);
    out.sort();
    out
}

/// pickup(8): a complete file in `maildrop/` belongs to the user who submitted it (mode
/// 0744, readable by the mail system); copy it into a queue file of the mail system's own
/// in `incoming/` under the same queue ID (written under a temporary name, `u+x`, fsynced,
/// renamed without replacing, directory fsynced), then remove it, as Postfix's pickup
/// hands the file to cleanup and removes it after cleanup has queued it. A crash between
/// the two steps delivers the message twice, Postfix's window too. Logs `ID: uid=N
/// from=<sender>`.
fn pickup(s: &QmgrSettings, path: &Path, qdir: &Path, id: &str) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_file() || meta.mode() & 0o100 == 0 {
        return;
    }
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) => {
            log::warning(
                &s.ident_pickup,
                &format!("{id}: read {}: {e}", path.display()),
            );
            return;
        }
    };
    let (from, message_id, data) = match crate::queue::file::parse(&data, id) {
        Ok(m) => {
            let data = if meta.uid() == nix::unistd::geteuid().as_raw() {
                data
            } else {
                untrusted_copy(&m, crate::queue::file::warn_record(path).map(|(_, w)| w))
            };
            (m.sender.clone(), message_id(&m.content), data)
        }
        Err(QueueFileError::Incomplete(_)) => return,
        Err(e) => {
            log::warning(&s.ident_pickup, &format!("{id}: {e}; moved to corrupt"));
            let _ = Store::new(qdir).corrupt(path, id);
            return;
        }
    };
    let incoming = qdir.join("incoming");
    let dest = incoming.join(id);
    let copy = || -> std::io::Result<()> {
        let mtime = meta.modified()?;
        crate::queue::store::write_durable(
            &incoming,
            id,
            &data,
            crate::queue::store::OWN,
            Some(mtime),
        )
    };
    match copy() {
        Ok(()) => {}
        Err(e) => {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                log::warning(
                    &s.ident_pickup,
                    &format!(
                        "{id}: incoming/{id} exists; {} left for later",
                        path.display()
                    ),
                );
            } else {
                log::warning(
                    &s.ident_pickup,
                    &format!("{id}: copy to {}: {e}", dest.display()),
                );
            }
            return;
        }
    }
    if let Err(e) = std::fs::remove_file(path) {
        log::warning(
            &s.ident_pickup,
            &format!("{id}: remove {}: {e}", path.display()),
        );
    }
    log::info(
        &s.ident_pickup,
        &format!("{id}: uid={} from=<{from}>", meta.uid()),
    );
    // Postfix's pickup hands the file to cleanup, which logs the Message-ID (sendmail and
    // postdrop already added one when the message had none).
    if let Some(mid) = message_id {
        log::info(&s.ident_cleanup, &format!("{id}: message-id={mid}"));
    }
}

/// The Message-ID header's value (unfolded, trimmed) in a message's header section.
fn message_id(content: &[u8]) -> Option<String> {
    let mut found: Option<String> = None;
    for line in content.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(v) = found.as_mut() {
                v.push(' ');
                v.push_str(String::from_utf8_lossy(line).trim());
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        if line.len() > 11 && line[..11].eq_ignore_ascii_case(b"message-id:") {
            found = Some(String::from_utf8_lossy(&line[11..]).trim().to_string());
        }
    }
    found.filter(|v| !v.is_empty())
}

/// Move a complete file into `active/`; incomplete files stay where they are.
fn activate(path: &Path, qdir: &Path, id: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.permissions().mode() & 0o100 == 0 {
        return None;
    }
    // Never replace a file already in active/ under the same name (a queue ID reused while
    // its first message is still being delivered would otherwise be lost).
    match Store::new(qdir).activate(path, id) {
        Ok(dest) => Some(dest),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            log::warning(
                "postfix/qmgr",
                &format!(
                    "{id}: active/{id} exists; {} left for later",
                    path.display()
                ),
            );
            None
        }
        Err(_) => None,
    }
}

/// Postfix's delay formatting: two significant decimals below 10 s, whole seconds above.
pub fn fmt_delay(d: f64) -> String {
    if d >= 10.0 {
        return format!("{:.0}", d);
    }
    let s = format!("{:.2}", d);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() {
        "0".into()
    } else {
        s.to_string()
    }
}

fn secs(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// One final result for a recipient of the queue file, as its log line reports it.
struct Done {
    o: Outcome,
    relay: String,
    ident: String,
    started: SystemTime,
    finished: SystemTime,
    /// smtp(8): connection setup and transmission times (`delays=…/…/c/d`).
    smtp_times: Option<(Duration, Duration)>,
    remote_mta: Option<String>,
    diagnostic: Option<String>,
}

impl Done {
    fn new(o: Outcome, relay: &str, ident: &str, started: SystemTime) -> Done {
        Done {
            o,
            relay: relay.to_string(),
            ident: ident.to_string(),
            started,
            finished: SystemTime::now(),
            smtp_times: None,
            remote_mta: None,
            diagnostic: None,
        }
    }
}

/// smtp(8) recipients of one message sharing (service, next-hop): (pending index, address).
type SmtpGroup = ((String, String), Vec<(usize, String)>);

/// A pending recipient of the queue file and what became of it.
struct Pending<'a> {
    r: &'a crate::queue::QueuedRecipient,
    /// The queued address, qualified (before canonical mapping).
    addr: String,
    orig: String,
    done: Vec<Done>,
    /// Already marked done in the queue file.
    marked: bool,
    /// Not attempted: its destination was busy (the message is postponed).
    postponed: bool,
}

/// Deliver what is pending in one active queue file, then remove or defer it. A message
/// whose only undelivered recipients wait for a busy local or virtual destination (all its
/// `*_destination_concurrency_limit` slots taken, e.g. by deliveries waiting for a locked
/// mailbox) stays in `active/` and is returned as postponed (the destination key and its
/// limit), to be handed to a worker again when a slot frees: no worker waits for it.
fn process(s: &QmgrSettings, path: &Path) -> Option<(String, usize)> {
    let id = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let activated = SystemTime::now();
    let mut msg = match read_queue_file(path) {
        Ok(m) => m,
        Err(QueueFileError::Corrupt(e)) => {
            log::warning(&s.ident_qmgr, &format!("{id}: {e}; moved to corrupt"));
            let _ = Store::new(&s.queue_directory).corrupt(path, &id);
            return None;
        }
        Err(e) => {
            log::warning(&s.ident_qmgr, &format!("{id}: {e}"));
            return None;
        }
    };
    // cleanup's canonical mapping of the sender (sender_canonical_maps, then
    // canonical_maps): what is logged, used for Return-Path and bounced to. When a table
    // cannot answer, every recipient is deferred (Postfix's cleanup does not accept the
    // message until it can).
    let sender_problem = match s.canonical(
        &id,
        &[
            ("sender_canonical_maps", &s.sender_canonical_maps),
            ("canonical_maps", &s.canonical_maps),
        ],
        &msg.sender,
    ) {
        Ok(a) => {
            msg.sender = a;
            None
        }
        Err(text) => Some(text),
    };
    log::info(
        &s.ident_qmgr,
        &format!(
            "{id}: from=<{}>, size={}, nrcpt={} (queue active)",
            msg.sender,
            msg.message_size,
            msg.recipients.len()
        ),
    );
    let expired = {
        let life = if msg.sender.is_empty() {
            s.bounce_queue_lifetime
        } else {
            s.maximal_queue_lifetime
        };
        msg.arrival.elapsed().map(|a| a > life).unwrap_or(false)
    };
    let mut pending: Vec<Pending> = msg
        .recipients
        .iter()
        .filter(|r| !r.done)
        .map(|r| {
            let addr = s.qualify(&r.address);
            let orig = r.original.clone().unwrap_or_else(|| addr.clone());
            Pending {
                r,
                addr,
                orig,
                done: Vec::new(),
                marked: false,
                postponed: false,
            }
        })
        .collect();
    // smtp(8) deliveries, grouped by (service, next-hop): (pending index, address).
    let mut groups: Vec<SmtpGroup> = Vec::new();
    let pending_count = pending.len();
    // The first busy local/virtual destination met, when a recipient was put off for it.
    let mut postponed: Option<(String, usize)> = None;
    for (i, p) in pending.iter_mut().enumerate() {
        let started = SystemTime::now();
        let orig = p.orig.clone();
        let outcome = |to: &str, status: Status, dsn: &str, text: String| Outcome {
            to: to.to_string(),
            orig_to: (orig != to).then(|| orig.clone()),
            status,
            dsn: dsn.into(),
            text,
        };
        // A table that cannot answer defers the recipient, logged by the role Postfix
        // gives it (error(8) for resolver failures, as Postfix 3.7 logs them).
        let defer = |to: &str, text: String| {
            Done::new(
                outcome(to, Status::Deferred, "4.3.0", text),
                "none",
                &s.ident_error,
                started,
            )
        };
        if let Some(text) = &sender_problem {
            p.done.push(defer(&p.addr, text.clone()));
            continue;
        }
        // cleanup's canonical mapping (recipient_canonical_maps, then canonical_maps).
        let addr = match s.canonical(
            &id,
            &[
                ("recipient_canonical_maps", &s.recipient_canonical_maps),
                ("canonical_maps", &s.canonical_maps),
            ],
            &p.addr,
        ) {
            Ok(a) => a,
            Err(text) => {
                p.done.push(defer(&p.addr, text));
                continue;
            }
        };
        let targets = match s.virtual_expand(&id, &addr) {
            Ok(t) => t,
            Err(text) => {
                p.done.push(defer(&addr, text));
                continue;
            }
        };
        // Only a recipient with one target is put off when its destination is busy: one
        // of several (an alias expansion) waits for its slot, so that the others are not
        // delivered again when the message comes back.
        let single = targets.len() == 1;
        for t in targets {
            let domain = t.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            let (Ok(relocated), Ok(transport)) = (s.relocated(&t), s.transport(&t)) else {
                p.done.push(defer(&t, "address resolver failure".into()));
                continue;
            };
            if let Some(new) = relocated {
                // trivial-rewrite's resolve: the error transport, as Postfix words it.
                p.done.push(Done::new(
                    outcome(
                        &t,
                        Status::Bounced,
                        "5.1.6",
                        format!("User has moved to {new}"),
                    ),
                    "none",
                    &s.ident_error,
                    started,
                ));
                continue;
            }
            let mut resolve_warnings = Vec::new();
            let route = s.resolver.resolve(&t, transport, &mut resolve_warnings);
            for w in resolve_warnings {
                match w.strip_prefix("error: ") {
                    Some(e) => log::error(&s.ident_trivial_rewrite, e),
                    None => log::warning(&s.ident_trivial_rewrite, &w),
                }
            }
            match route {
                route::Route::Failed => {
                    p.done.push(defer(&t, "address resolver failure".into()));
                }
                route::Route::Discard(nh) => {
                    // discard(8): the next-hop is the text (the domain when empty).
                    let nh = if nh.is_empty() {
                        domain.to_string()
                    } else {
                        nh
                    };
                    p.done.push(Done::new(
                        outcome(&t, Status::Sent, "2.0.0", nh),
                        "none",
                        &s.ident_discard,
                        started,
                    ));
                }
                route::Route::Error(nh) => {
                    let (dsn, text) = error_text(&nh, "Address is undeliverable", '5');
                    p.done.push(Done::new(
                        outcome(&t, Status::Bounced, &dsn, text),
                        "none",
                        &s.ident_error,
                        started,
                    ));
                }
                route::Route::Retry(nh) => {
                    let (dsn, text) = error_text(&nh, "Address is undeliverable", '4');
                    p.done.push(Done::new(
                        outcome(&t, Status::Deferred, &dsn, text),
                        "none",
                        &s.ident_retry,
                        started,
                    ));
                }
                route::Route::Local | route::Route::Virtual => {
                    let virtual_ = matches!(route, route::Route::Virtual);
                    let (key, limit) = if virtual_ {
                        (
                            format!("virtual:{}", t.to_ascii_lowercase()),
                            s.virtual_concurrency,
                        )
                    } else {
                        (
                            format!("local:{}", t.to_ascii_lowercase()),
                            s.local_concurrency,
                        )
                    };
                    let _slot = match s.limiter.try_acquire(&key, limit) {
                        Some(slot) => slot,
                        None if single => {
                            p.postponed = true;
                            postponed.get_or_insert((key, limit));
                            continue;
                        }
                        None => s.limiter.acquire(key, limit),
                    };
                    let outcomes = if local_client::connected() {
                        // The local delivery process may wait for a mailbox lock: this
                        // worker does not count meanwhile.
                        let _parked = Parked::enter();
                        let agent = if virtual_ {
                            local_server::Agent::Virtual
                        } else {
                            local_server::Agent::Local
                        };
                        local_client::deliver(agent, &id, p.r.offset, &t)
                    } else if virtual_ {
                        let _parked = Parked::enter();
                        crate::delivery::virtual_delivery::deliver(
                            &s.virtual_,
                            &msg,
                            &t,
                            Some(&p.orig),
                        )
                    } else {
                        let _parked = Parked::enter();
                        local::deliver(&s.local, &msg, &t, Some(&p.orig))
                    };
                    let (relay, ident) = if virtual_ {
                        ("virtual", &s.ident_virtual)
                    } else {
                        ("local", &s.ident_local)
                    };
                    for o in outcomes {
                        p.done.push(Done::new(o, relay, ident, started));
                    }
                }
                route::Route::Smtp { service, nexthop } => {
                    let key = (service, nexthop);
                    match groups.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, v)) => v.push((i, t.clone())),
                        None => groups.push((key, vec![(i, t.clone())])),
                    }
                }
                route::Route::Unavailable(tr) => {
                    // Postfix defers mail for a transport whose service it cannot reach.
                    p.done.push(Done::new(
                        outcome(
                            &t,
                            Status::Deferred,
                            "4.3.0",
                            format!("mail transport unavailable: Postern has no delivery agent for transport \"{tr}\""),
                        ),
                        "none",
                        &s.ident_qmgr,
                        started,
                    ));
                }
            }
        }
        // A recipient delivered here (no smtp part, nothing deferred or bounced) is marked
        // done at once when others follow, so a crash later in this message does not deliver
        // it again. The last one is not: removing the file ends it (one fsync less per
        // message), and a kept file gets its marks below.
        let more = pending_count > i + 1 || !groups.is_empty();
        let in_smtp = groups.iter().any(|(_, m)| m.iter().any(|(j, _)| *j == i));
        if more
            && !in_smtp
            && !p.done.is_empty()
            && p.done.iter().all(|d| d.o.status == Status::Sent)
        {
            let mut failed_mark = Vec::new();
            mark_done(s, path, &id, p, &mut failed_mark);
            p.marked = failed_mark.is_empty();
        }
    }
    for ((service, nexthop), members) in groups {
        let started = SystemTime::now();
        let smtp = s.smtp_settings(&service);
        let jobs: Vec<crate::delivery::smtp::RcptJob> = members
            .iter()
            .map(|(i, t)| {
                let r = pending[*i].r;
                crate::delivery::smtp::RcptJob {
                    address: t.clone(),
                    orcpt: r.orcpt.clone(),
                    notify: r.notify(),
                    original: Some(pending[*i].orig.clone()),
                }
            })
            .collect();
        let _slot = s.limiter.acquire(
            format!("{service}:{}", nexthop.to_ascii_lowercase()),
            s.smtp_concurrency,
        );
        let results = crate::delivery::smtp::deliver(&smtp, &msg, &nexthop, &jobs);
        let finished = SystemTime::now();
        for (k, (i, t)) in members.into_iter().enumerate() {
            let p = &mut pending[i];
            let Some(res) = results.get(k) else {
                p.done.push(Done::new(
                    Outcome {
                        to: t.clone(),
                        orig_to: (p.orig != t).then(|| p.orig.clone()),
                        status: Status::Deferred,
                        dsn: "4.3.0".into(),
                        text: "smtp delivery agent returned no result".into(),
                    },
                    "none",
                    &smtp.ident,
                    started,
                ));
                continue;
            };
            p.done.push(Done {
                o: Outcome {
                    to: t.clone(),
                    orig_to: (p.orig != t).then(|| p.orig.clone()),
                    status: res.status.clone(),
                    dsn: res.dsn.clone(),
                    text: res.text.clone(),
                },
                relay: res.relay.clone(),
                ident: smtp.ident.clone(),
                started,
                finished,
                smtp_times: Some((res.conn_setup, res.transmission)),
                remote_mta: res.remote_mta.clone(),
                diagnostic: res.diagnostic.clone(),
            });
        }
    }
    // Log each result; mark recipients whose every result is final. Bounced recipients are
    // marked only after their notification is queued (bounce(8) deletes them from the queue
    // file after sending, so a crash in between repeats the bounce rather than losing it).
    let mut deferred: Vec<defer::DeferEntry> = Vec::new();
    let mut failed: Vec<bounce::Failed> = Vec::new();
    let mut mark_after_bounce: Vec<u64> = Vec::new();
    // Final recipients not marked yet: marked only if the file is kept.
    let mut mark_later: Vec<u64> = Vec::new();
    for p in &pending {
        if p.postponed {
            continue;
        }
        let mut any_deferred = false;
        let mut any_bounced = false;
        for d in &p.done {
            let o = &d.o;
            let (status, dsn, text) = match o.status {
                Status::Deferred if expired => {
                    (Status::Bounced, format!("5{}", &o.dsn[1..]), o.text.clone())
                }
                _ => (o.status.clone(), o.dsn.clone(), o.text.clone()),
            };
            let word = match status {
                Status::Sent => "sent",
                Status::Deferred => {
                    any_deferred = true;
                    "deferred"
                }
                Status::Bounced => {
                    any_bounced = true;
                    "bounced"
                }
            };
            let orig = o
                .orig_to
                .as_ref()
                .map(|x| format!("orig_to=<{x}>, "))
                .unwrap_or_default();
            let (c, dd) = match d.smtp_times {
                Some((c, t)) => (fmt_delay(c.as_secs_f64()), fmt_delay(t.as_secs_f64())),
                None => ("0".to_string(), fmt_delay(secs(d.started, d.finished))),
            };
            log::info(
                &d.ident,
                &format!(
                    "{id}: to=<{}>, {orig}relay={}, delay={}, delays={}/{}/{c}/{dd}, dsn={dsn}, status={word} ({text})",
                    o.to,
                    d.relay,
                    fmt_delay(secs(msg.arrival, d.finished)),
                    fmt_delay(secs(msg.arrival, activated)),
                    fmt_delay(secs(activated, d.started)),
                ),
            );
            if status == Status::Bounced {
                failed.push(bounce::Failed {
                    recipient: o.to.clone(),
                    original: p
                        .r
                        .orcpt
                        .as_deref()
                        .map(|x| x.trim_start_matches("rfc822;").to_string())
                        .unwrap_or_else(|| o.orig_to.clone().unwrap_or_else(|| o.to.clone())),
                    dsn: dsn.clone(),
                    text: text.clone(),
                    remote_mta: d.remote_mta.clone(),
                    diagnostic: d.diagnostic.clone(),
                });
            }
            if status == Status::Deferred {
                deferred.push(defer::DeferEntry {
                    recipient: o.to.clone(),
                    status: dsn,
                    reason: text,
                });
            }
        }
        if any_deferred {
            continue;
        }
        if any_bounced {
            mark_after_bounce.push(p.r.offset);
            continue;
        }
        if !p.marked {
            mark_later.push(p.r.offset);
        }
    }
    if expired {
        log::info(
            &s.ident_qmgr,
            &format!(
                "{id}: from=<{}>, status=expired, returned to sender",
                msg.sender
            ),
        );
    }
    if !failed.is_empty() {
        if send_bounce(s, &id, &msg, &failed) {
            mark_later.append(&mut mark_after_bounce);
        } else {
            // Postfix's bounce client failure: the recipients stay and are tried again.
            for p in pending
                .iter()
                .filter(|p| mark_after_bounce.contains(&p.r.offset))
            {
                deferred.push(defer::DeferEntry {
                    recipient: p.addr.clone(),
                    status: "4.3.0".into(),
                    reason: "bounce or trace service failure".into(),
                });
            }
        }
    }
    if !deferred.is_empty() {
        for p in pending.iter().filter(|p| mark_later.contains(&p.r.offset)) {
            mark_done(s, path, &id, p, &mut deferred);
        }
    }
    if deferred.is_empty()
        && let Some(pp) = postponed
    {
        // The file stays in active/ for the recipients put off: the others are marked
        // done now (a failure to mark defers the message instead).
        for p in pending.iter().filter(|p| mark_later.contains(&p.r.offset)) {
            mark_done(s, path, &id, p, &mut deferred);
        }
        if deferred.is_empty() {
            return Some(pp);
        }
    }
    // XXX Recipients put off for a busy destination in a message that is deferred for
    // others go with it to deferred/ and are tried at its next attempt.
    if deferred.is_empty() {
        match Store::new(&s.queue_directory).delete(path, &id) {
            Ok(()) => log::info(&s.ident_qmgr, &format!("{id}: removed")),
            Err(e) => log::warning(
                &s.ident_qmgr,
                &format!("{id}: remove {}: {e}", path.display()),
            ),
        }
    } else {
        delay_warning(s, path, &id, &msg, &deferred);
        defer_message(s, path, &id, &msg, &deferred);
    }
    None
}

/// Postfix's delay warning: once the queue file's warning time (`W` record, written when
/// `delay_warning_time` is set) has passed, tell the sender which recipients are still
/// delayed, then zero the record so the warning is sent once.
fn delay_warning(
    s: &QmgrSettings,
    path: &Path,
    id: &str,
    msg: &QueuedMessage,
    deferred: &[defer::DeferEntry],
) {
    if msg.sender.is_empty() || msg.sender.eq_ignore_ascii_case(&s.double_bounce_sender) {
        return;
    }
    let Some((offset, when)) = crate::queue::file::warn_record(path) else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if when == 0 || now < when {
        return;
    }
    let Some(queue) = QUEUE.get() else { return };
    let rcpts: Vec<bounce::Failed> = deferred
        .iter()
        .map(|d| {
            let r = msg.recipients.iter().find(|r| r.address == d.recipient);
            bounce::Failed {
                recipient: d.recipient.clone(),
                original: r
                    .and_then(|r| r.orcpt.as_deref())
                    .map(|x| x.trim_start_matches("rfc822;").to_string())
                    .unwrap_or_else(|| d.recipient.clone()),
                dsn: d.status.clone(),
                text: d.reason.clone(),
                remote_mta: None,
                diagnostic: None,
            }
        })
        .collect();
    let delay = bounce::Delay {
        warn_hours: s.delay_warning_time.as_secs() / 3600,
        lifetime_days: s.maximal_queue_lifetime.as_secs() / 86400,
        retry_until: msg.arrival + s.maximal_queue_lifetime,
    };
    match bounce::send(
        queue,
        msg,
        &rcpts,
        bounce::Audience::Sender,
        "",
        "",
        Some(delay),
    ) {
        Ok(new) => {
            log::info(
                &s.ident_bounce,
                &format!("{id}: sender delay notification: {new}"),
            );
            if let Err(e) = crate::queue::file::clear_warn_record(path, offset) {
                log::warning(&s.ident_qmgr, &format!("{id}: {e}"));
            }
        }
        Err(e) => log::warning(
            &s.ident_bounce,
            &format!("{id}: cannot queue the delay notification: {e}"),
        ),
    }
}

/// Mark `p` done in the queue file; without the mark it would be delivered again, so a
/// failure keeps the file (deferred) and says so loudly.
fn mark_done(
    s: &QmgrSettings,
    path: &Path,
    id: &str,
    p: &Pending,
    deferred: &mut Vec<defer::DeferEntry>,
) {
    if let Err(e) = mark_recipient_done(path, p.r.offset) {
        log::error(
            &s.ident_qmgr,
            &format!("{id}: cannot mark recipient done: {e}"),
        );
        deferred.push(defer::DeferEntry {
            recipient: p.addr.clone(),
            status: "4.3.0".into(),
            reason: format!("queue file update error: {e}"),
        });
    }
}

/// error(8)/retry(8) next-hop text: an optional leading `d.s.n` status, then the text.
/// As Postfix 3.7's error(8) logs it, a bounce keeps a leading 5.x.x status and turns a
/// 4.x.x one into 5.0.0; retry(8) likewise keeps 4.x.x and turns others into 4.0.0.
fn error_text(nh: &str, empty: &str, class: char) -> (String, String) {
    let nh = if nh.is_empty() { empty } else { nh };
    let default = format!("{class}.0.0");
    match nh.split_once(' ') {
        Some((code, rest))
            if code.len() >= 5
                && (code.starts_with("4.") || code.starts_with("5."))
                && code[2..].chars().all(|c| c.is_ascii_digit() || c == '.') =>
        {
            let dsn = if code.starts_with(class) {
                code.to_string()
            } else {
                default
            };
            (dsn, rest.trim().to_string())
        }
        _ => (default, nh.to_string()),
    }
}

/// Return the failed recipients to the sender; for `<>` mail, a postmaster copy when
/// `notify_classes` has `bounce`, else nothing (Postfix's default). Returns whether the
/// recipients may be marked done (the notification is queued or, as in Postfix, not
/// wanted).
fn send_bounce(s: &QmgrSettings, id: &str, msg: &QueuedMessage, failed: &[bounce::Failed]) -> bool {
    let audience = if msg.sender.is_empty() {
        if !s.notify_bounce {
            return true;
        }
        bounce::Audience::Postmaster
    } else if msg.sender.eq_ignore_ascii_case(&s.double_bounce_sender) {
        log::warning(
            &s.ident_bounce,
            &format!("{id}: undeliverable postmaster notification discarded"),
        );
        return true;
    } else {
        bounce::Audience::Sender
    };
    let Some(queue) = QUEUE.get() else {
        log::warning(
            &s.ident_bounce,
            &format!("{id}: no queue: non-delivery notification not sent"),
        );
        return false;
    };
    match bounce::send(
        queue,
        msg,
        failed,
        audience,
        &s.double_bounce_sender,
        &s.double_bounce_recipient,
        None,
    ) {
        Ok(new) => {
            let who = match audience {
                bounce::Audience::Sender => "sender",
                bounce::Audience::Postmaster => "postmaster",
            };
            log::info(
                &s.ident_bounce,
                &format!("{id}: {who} non-delivery notification: {new}"),
            );
            true
        }
        Err(e) => {
            log::warning(
                &s.ident_bounce,
                &format!("{id}: cannot queue the non-delivery notification: {e}"),
            );
            false
        }
    }
}

fn defer_message(
    s: &QmgrSettings,
    path: &Path,
    id: &str,
    msg: &QueuedMessage,
    entries: &[defer::DeferEntry],
) {
    if let Err(e) = defer::write_log(&s.queue_directory, id, entries) {
        log::warning(&s.ident_qmgr, &format!("{id}: cannot write defer log: {e}"));
    }
    let store = Store::new(&s.queue_directory);
    let dest = store.path("deferred", id);
    let age = msg.arrival.elapsed().unwrap_or_default();
    let backoff = age.clamp(s.minimal_backoff, s.maximal_backoff.max(s.minimal_backoff));
    let next = SystemTime::now() + backoff;
    if let Err(e) = store.defer(path, id, next) {
        log::warning(
            &s.ident_qmgr,
            &format!("{id}: move to {}: {e}", dest.display()),
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn limiter_bounds_each_destination_and_wakes_every_waiter_in_the_end() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let lim = Arc::new(Limiter::default());
        let (a_now, a_max, b_max) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let b_now = Arc::new(AtomicUsize::new(0));
        let mut th = Vec::new();
        for i in 0..24 {
            let (lim, a_now, a_max, b_now, b_max) = (
                lim.clone(),
                a_now.clone(),
                a_max.clone(),
                b_now.clone(),
                b_max.clone(),
            );
            th.push(std::thread::spawn(move || {
                for _ in 0..50 {
                    let (key, limit, now, max) = if i % 3 == 0 {
                        ("b", 1, &b_now, &b_max)
                    } else {
                        ("a", 2, &a_now, &a_max)
                    };
                    let _slot = lim.acquire(key.to_string(), limit);
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(n, Ordering::SeqCst);
                    std::thread::yield_now();
                    now.fetch_sub(1, Ordering::SeqCst);
                }
            }));
        }
        for t in th {
            t.join().unwrap();
        }
        assert!(a_max.load(Ordering::SeqCst) <= 2);
        assert!(b_max.load(Ordering::SeqCst) <= 1);
        assert!(lim.lock().dests.is_empty());
    }

    use super::*;

    #[test]
    fn delays_are_formatted_like_postfix() {
        assert_eq!(fmt_delay(0.0), "0");
        assert_eq!(fmt_delay(0.001), "0");
        assert_eq!(fmt_delay(0.03), "0.03");
        assert_eq!(fmt_delay(0.1), "0.1");
        assert_eq!(fmt_delay(1.234), "1.23");
        assert_eq!(fmt_delay(12.6), "13");
    }

    #[test]
    fn activation_never_replaces_a_file_in_active() {
        let d = tempfile::tempdir().unwrap();
        for q in ["incoming", "active"] {
            std::fs::create_dir(d.path().join(q)).unwrap();
        }
        let a = d.path().join("incoming/4AB2C3D4E5");
        std::fs::write(&a, b"new").unwrap();
        std::fs::set_permissions(&a, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        std::fs::write(d.path().join("active/4AB2C3D4E5"), b"old").unwrap();
        assert_eq!(activate(&a, d.path(), "4AB2C3D4E5"), None);
        assert_eq!(
            std::fs::read(d.path().join("active/4AB2C3D4E5")).unwrap(),
            b"old"
        );
        assert!(a.exists());
        std::fs::remove_file(d.path().join("active/4AB2C3D4E5")).unwrap();
        assert!(activate(&a, d.path(), "4AB2C3D4E5").is_some());
        assert_eq!(
            std::fs::read(d.path().join("active/4AB2C3D4E5")).unwrap(),
            b"new"
        );
    }
}
