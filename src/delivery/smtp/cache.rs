//! The connection cache: Postfix's `scache(8)` and the queue manager's on-demand caching
//! decision (`qmgr_entry.c`), for the smtp(8) client that runs in the queue manager's
//! process. Sessions live here between deliveries, idle, keyed by delivery request
//! next-hop (the service, the next-hop as the queue manager gives it, and the sender when
//! `smtp_sender_dependent_authentication` picks the SASL credentials by sender), and each
//! also labelled with its server's endpoint ([`super::endp_key`]: the service, address
//! and port, with the next-hop and host name when SASL passwords or a TLS level that
//! checks names are configured), under which a delivery to another next-hop finds it
//! ([`take_endpoint`], Postfix's `smtp_reuse_addr()`: scache(8) keeps every session
//! under its endpoint and binds next-hops to endpoints). A request's first good session
//! is kept under its next-hop (and so its endpoint), later ones under their endpoint only
//! (Postfix clears the request's next-hop label after the first).
//!
//! When to cache, as Postfix decides: with `smtp_connection_cache_on_demand = yes`, a
//! destination's sessions are cached once its deliveries come back to back (one finished
//! less than a second before the next starts), and caching stops when deliveries are
//! neither concurrent nor back to back any more; a cached session is looked up whenever
//! one is there (Postfix's "sticky" load flag). A destination named in
//! `smtp_connection_cache_destinations` always caches.
//!
//! Limits: a session sits idle at most `smtp_connection_cache_time_limit` (then it is
//! closed without QUIT, as scache(8) closes it), at most
//! `smtp_destination_concurrency_limit` idle sessions are kept per destination (the
//! oldest is closed), and the smtp client itself stops reusing a session after
//! `smtp_connection_reuse_time_limit` or `smtp_connection_reuse_count_limit`
//! ([`super::proto`]). A session taken from here is probed with `RSET` before use.
//!
//! One delivery request takes the cache's lock twice: [`begin`] decides the policy and
//! takes an idle session in one acquisition, [`end`] does the bookkeeping, puts back a
//! session the request took but never used, and stores the session to keep, in the other
//! (four acquisitions before: begin, take, save, end). The session to keep is therefore
//! stored when the request ends rather than when its transaction ends, and its
//! `smtp_connection_cache_time_limit` runs from then.

use std::collections::HashMap;
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::proto::Cached;

/// Deliveries that finish within this of the next one's start are "back to back"
/// (Postfix: `queue->last_done + 1 >= event_time()`).
const BACK_TO_BACK: Duration = Duration::from_secs(1);

/// A destination without deliveries or idle sessions for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(10);

struct Idle {
    sess: Cached,
    until: Instant,
    /// The server's endpoint label ([`super::endp_key`]).
    endp: String,
}

#[derive(Default)]
struct Dest {
    idle: Vec<Idle>,
    /// Postfix's `DEL_REQ_FLAG_CONN_STORE` for the queue.
    store: bool,
    /// Deliveries in progress.
    busy: usize,
    last_done: Option<Instant>,
}

struct Cache {
    dests: Mutex<Inner>,
    changed: Condvar,
}

#[derive(Default)]
struct Inner {
    dests: HashMap<String, Dest>,
    /// When the reaper wakes next (`None`: it waits for a session to be saved). A session
    /// saved later than that needs no wake-up: the reaper looks again then.
    reaper_wakes: Option<Instant>,
}

static CACHE: LazyLock<Cache> = LazyLock::new(|| {
    // The reaper: closes sessions idle for too long. Started with the first use.
    let _ = std::thread::Builder::new()
        .name("smtp-scache".into())
        .spawn(reaper);
    Cache {
        dests: Mutex::new(Inner::default()),
        changed: Condvar::new(),
    }
});

fn lock() -> MutexGuard<'static, Inner> {
    CACHE.dests.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one delivery request may do with the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Look for a cached session first.
    pub load: bool,
    /// Keep the first good session for the next delivery.
    pub store: bool,
}

/// A delivery to `key` starts: decide as Postfix's queue manager does (`explicit`: the
/// destination is in `smtp_connection_cache_destinations`), and when the policy says
/// `load`, take the most recently stored idle session out of the cache (Postfix's
/// `smtp_reuse_nexthop()` lookup) in the same lock. Each call is paired with [`end`],
/// which puts an untouched session back.
pub fn begin(key: &str, explicit: bool, on_demand: bool) -> (Policy, Option<Taken>) {
    let now = Instant::now();
    let mut g = lock();
    // No key allocation for a destination already known (every delivery but the first).
    if !g.dests.contains_key(key) {
        g.dests.insert(key.to_string(), Dest::default());
    }
    let Some(d) = g.dests.get_mut(key) else {
        return (Policy::default(), None);
    };
    d.busy += 1;
    let pol = if explicit {
        Policy {
            load: true,
            store: true,
        }
    } else if !on_demand {
        Policy::default()
    } else {
        let back_to_back = d
            .last_done
            .is_some_and(|t| now.saturating_duration_since(t) <= BACK_TO_BACK);
        if !d.store {
            if back_to_back {
                d.store = true;
            }
        } else if !(d.busy > 1 || back_to_back) {
            d.store = false;
        }
        Policy {
            load: true,
            store: d.store,
        }
    };
    let mut taken = None;
    if pol.load {
        while let Some(i) = d.idle.pop() {
            if i.until > now {
                taken = Some(Taken(i));
                break;
            }
            // Expired: closed when dropped.
        }
    }
    (pol, taken)
}

/// An idle session taken out by [`begin`]: used with [`Taken::into_session`], or handed
/// back to [`end`] untouched (it goes back with its old expiry).
pub struct Taken(Idle);

impl Taken {
    pub fn into_session(self) -> Cached {
        self.0.sess
    }
}

/// A session to keep after a delivery: stored by [`end`] for `ttl`, with at most `limit`
/// idle sessions under its key.
pub struct Keep {
    pub sess: Cached,
    pub limit: usize,
    pub ttl: Duration,
    /// The server's endpoint label ([`super::endp_key`]).
    pub endp: String,
}

/// The delivery to `key` that [`begin`] started is over: `unused` (what [`begin`] took
/// and the delivery never probed) goes back, then `keep` (the request's first good
/// session, Postfix `smtp_save_session()`) is stored as the most recent one, with the
/// destination's bookkeeping, all in one lock.
pub fn end(key: &str, unused: Option<Taken>, keep: Option<Keep>, keep_endp: Vec<Keep>) {
    let now = Instant::now();
    let mut g = lock();
    // Later good sessions of the request: under their endpoint only, in entries no
    // next-hop's key can name (a key never starts with NUL), found by [`take_endpoint`].
    let mut wake_at = None;
    for k in keep_endp {
        let until = now + k.ttl;
        let d = g.dests.entry(format!("\0{}", k.endp)).or_default();
        d.idle.push(Idle {
            sess: k.sess,
            until,
            endp: k.endp,
        });
        while d.idle.len() > k.limit.max(1) {
            d.idle.remove(0);
        }
        wake_at = Some(wake_at.map_or(until, |w: Instant| w.min(until)));
    }
    if let Some(until) = wake_at
        && g.reaper_wakes.is_none_or(|w| until < w)
    {
        CACHE.changed.notify_one();
    }
    let Some(d) = g.dests.get_mut(key) else {
        return;
    };
    d.busy = d.busy.saturating_sub(1);
    d.last_done = Some(now);
    if let Some(Taken(i)) = unused
        && i.until > now
    {
        d.idle.push(i);
    }
    let Some(k) = keep else {
        return;
    };
    let until = now + k.ttl;
    d.idle.push(Idle {
        sess: k.sess,
        until,
        endp: k.endp,
    });
    while d.idle.len() > k.limit.max(1) {
        d.idle.remove(0);
    }
    let wake = g.reaper_wakes.is_none_or(|w| until < w);
    drop(g);
    if wake {
        CACHE.changed.notify_one();
    }
}

/// Take the most recently stored idle session to the endpoint `endp`, whatever next-hop
/// stored it (Postfix's `smtp_reuse_addr()`: a delivery whose next-hop has no idle session
/// looks for one to each of its best servers by address). It is the caller's from then on:
/// used at once, not handed back to [`end`]. Idle sessions live for
/// `smtp_connection_cache_time_limit` (2 s by default), so the few there are scanned.
pub fn take_endpoint(endp: &str) -> Option<Taken> {
    let now = Instant::now();
    let mut g = lock();
    let mut best: Option<(&String, usize, Instant)> = None;
    for (k, d) in &g.dests {
        for (i, s) in d.idle.iter().enumerate() {
            if s.endp == endp && s.until > now && best.is_none_or(|b| s.until > b.2) {
                best = Some((k, i, s.until));
            }
        }
    }
    let (k, i) = best.map(|(k, i, _)| (k.clone(), i))?;
    g.dests.get_mut(&k).map(|d| Taken(d.idle.remove(i)))
}

fn reaper() {
    // CACHE is being initialised by the thread that started this one: wait for it.
    let cache = &*CACHE;
    let mut g = cache.dests.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        g.dests.retain(|_, d| {
            d.idle.retain(|i| i.until > now);
            if let Some(u) = d.idle.iter().map(|i| i.until).min() {
                next = Some(next.map_or(u, |n: Instant| n.min(u)));
            }
            d.busy > 0
                || !d.idle.is_empty()
                || d.last_done
                    .is_some_and(|t| now.saturating_duration_since(t) < FORGET_AFTER)
        });
        // Nothing idle: wait for a save (and look now and then, to forget old destinations).
        g.reaper_wakes = next;
        let wait = match next {
            Some(n) => n.saturating_duration_since(now),
            None => FORGET_AFTER,
        };
        g = match cache
            .changed
            .wait_timeout(g, wait.max(Duration::from_millis(10)))
        {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_demand_caching_starts_back_to_back_and_stops_when_deliveries_thin_out() {
        let k = "smtp\non-demand.example\n*";
        // The first delivery of a burst: nothing to go by, no caching (qmgr_entry.c).
        let (p, _) = begin(k, false, true);
        assert_eq!(
            p,
            Policy {
                load: true,
                store: false
            }
        );
        // Concurrent with it: still no caching ("don't enable session caching just because
        // we have concurrent deliveries").
        assert!(!begin(k, false, true).0.store);
        end(k, None, None, Vec::new());
        // Back to back with the one that just ended: on.
        assert!(begin(k, false, true).0.store);
        end(k, None, None, Vec::new());
        end(k, None, None, Vec::new());
        // Off once deliveries are neither concurrent nor back to back.
        lock().dests.get_mut(k).unwrap().last_done = Some(Instant::now() - Duration::from_secs(5));
        assert!(!begin(k, false, true).0.store);
        end(k, None, None, Vec::new());
        // smtp_connection_cache_on_demand = no: neither; a listed destination: both.
        assert_eq!(begin(k, false, false).0, Policy::default());
        end(k, None, None, Vec::new());
        assert_eq!(
            begin(k, true, false).0,
            Policy {
                load: true,
                store: true
            }
        );
        end(k, None, None, Vec::new());
        assert!(begin(k, true, false).1.is_none());
        end(k, None, None, Vec::new());
    }
}
