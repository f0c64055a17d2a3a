//! Concurrency: the per-destination slots ([`Limiter`]: `*_destination_concurrency_limit`,
//! messages put aside while their destination is busy) and the elastic worker pool (a
//! worker waiting for the local delivery process does not count); see the scheduling
//! section of [`super`].

use super::*;

/// Counting semaphores per destination key, and the messages waiting for one.
#[derive(Default)]
pub struct Limiter {
    state: Mutex<LimiterState>,
}

#[derive(Default)]
pub(super) struct LimiterState {
    /// Per destination: deliveries running, threads waiting, and the condition those
    /// threads wait on (a release wakes one waiter of that destination only; one condition
    /// for all woke every waiting thread of every destination at each release).
    dests: std::collections::HashMap<String, Dest>,
    /// Messages put aside until a slot of the key frees ([`Limiter::park`]), with the
    /// key's limit.
    parked: std::collections::HashMap<String, (usize, std::collections::VecDeque<Job>)>,
}

#[derive(Default)]
pub(super) struct Dest {
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
    pub(super) fn park(&self, key: String, limit: usize, job: Job) {
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
    pub(super) fn has_parked(&self) -> bool {
        !self.lock().parked.is_empty()
    }

    /// Hand parked messages back for every destination with free slots (as many as are
    /// free). The release of a slot hands one back at once ([`Slot`]'s drop); this is the
    /// safety net, run at each queue poll, for a message handed back that then took no
    /// slot (its recipients were done already, say), which would leave the others parked.
    pub(super) fn kick(&self) {
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
pub(super) static JOBS: std::sync::OnceLock<mpsc::Sender<Job>> = std::sync::OnceLock::new();

pub(super) fn resubmit(job: Job) {
    if let Some(tx) = JOBS.get() {
        let _ = tx.send(job);
    }
}

/// The worker pool, elastic as tokio's `block_in_place`: a worker waiting for the local
/// delivery process (which may wait up to `deliver_lock_attempts` × `deliver_lock_delay`
/// for a mailbox lock) does not count, and another worker is started in its place, so
/// that a locked mailbox never takes workers from other mailboxes or relayed mail. At most
/// `MAX_PARKED` workers wait so (the local delivery process's own limit is
/// `default_process_limit`); a worker that finds more than the target running after its
/// message stops taking messages and waits, a spare, up to `SPARE_IDLE` to be called back
/// in place of a new thread, then ends (issue 18: with a thread started for each local
/// delivery and one ending after it, the queue manager made half a thread per Maildir
/// message, a dozen system calls each: `clone3`, `mmap`, `mprotect`, `sigaltstack`, …).
pub(super) struct Pool {
    pub(super) running: usize,
    pub(super) parked: usize,
    pub(super) target: usize,
    /// Workers waiting as spares, and how many of them are called back.
    pub(super) spare: usize,
    pub(super) called: usize,
}

pub(super) const MAX_PARKED: usize = 100;

/// How long a spare worker waits to be called back before it ends.
const SPARE_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

pub(super) static POOL: Mutex<Pool> = Mutex::new(Pool {
    running: 0,
    parked: 0,
    target: 0,
    spare: 0,
    called: 0,
});

/// What spare workers wait on.
static SPARE: std::sync::Condvar = std::sync::Condvar::new();
pub(super) type Spawner = Box<dyn Fn() + Send + Sync>;
pub(super) static SPAWN_WORKER: std::sync::OnceLock<Spawner> = std::sync::OnceLock::new();

/// Held while a worker waits for a local delivery; see [`Pool`].
pub(super) struct Parked;

impl Parked {
    pub(super) fn enter() -> Parked {
        let (spawn, call) = {
            let mut p = POOL.lock().unwrap_or_else(|e| e.into_inner());
            p.parked += 1;
            let spawn = p.running - p.parked.min(p.running) < p.target && p.parked <= MAX_PARKED;
            let mut call = false;
            if spawn {
                p.running += 1;
                // A spare not yet called takes the place; a thread is started otherwise.
                if p.spare > p.called {
                    p.called += 1;
                    call = true;
                }
            }
            (spawn, call)
        };
        if call {
            SPARE.notify_one();
        } else if spawn && let Some(f) = SPAWN_WORKER.get() {
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

/// After a message: whether this worker is one too many and should end. One too many
/// waits as a spare first ([`Pool`]): `false` when it was called back meanwhile (it counts
/// as running again, [`Parked::enter`] counted it), `true` after `SPARE_IDLE` without a
/// call, or at once when as many spares as the target wait already.
pub(super) fn worker_surplus() -> bool {
    worker_surplus_for(SPARE_IDLE)
}

fn worker_surplus_for(idle: std::time::Duration) -> bool {
    let mut p = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if p.running - p.parked.min(p.running) <= p.target {
        return false;
    }
    p.running -= 1;
    if p.spare >= p.target.max(1) {
        return true;
    }
    p.spare += 1;
    let until = std::time::Instant::now() + idle;
    loop {
        // A call is taken by whichever spare wakes first; each counts one.
        if p.called > 0 {
            p.called -= 1;
            p.spare -= 1;
            return false;
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            p.spare -= 1;
            return true;
        }
        p = SPARE
            .wait_timeout(p, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker one too many waits as a spare and is called back by the next local
    /// delivery in place of a new thread; uncalled, it ends after its wait. (The one test
    /// of the process-wide pool: nothing else in the library's tests touches it.)
    #[test]
    fn a_surplus_worker_waits_as_a_spare_and_is_called_back_instead_of_a_new_thread() {
        let set = |running, parked, target| {
            let mut p = POOL.lock().unwrap();
            *p = Pool {
                running,
                parked,
                target,
                spare: 0,
                called: 0,
            };
        };
        let spares = || POOL.lock().unwrap().spare;
        // Two running for a target of one: the second to finish is a spare.
        set(2, 0, 1);
        let t = std::thread::spawn(|| worker_surplus_for(std::time::Duration::from_secs(30)));
        while spares() == 0 {
            std::thread::yield_now();
        }
        assert_eq!(POOL.lock().unwrap().running, 1);
        // The running one waits for the local delivery process: the spare is called back
        // (no thread spawner is set in this test: a spawn would leave it waiting 30 s).
        let started = std::time::Instant::now();
        let parked = Parked::enter();
        assert!(!t.join().unwrap(), "called back, not ended");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        {
            let p = POOL.lock().unwrap();
            assert_eq!((p.running, p.parked, p.spare, p.called), (2, 1, 0, 0));
        }
        drop(parked);
        // Uncalled, a spare ends after its wait; one not over the target goes on at once.
        let t = std::thread::spawn(|| worker_surplus_for(std::time::Duration::from_millis(50)));
        assert!(t.join().unwrap(), "ended");
        {
            let p = POOL.lock().unwrap();
            assert_eq!((p.running, p.spare, p.called), (1, 0, 0));
        }
        assert!(!worker_surplus_for(std::time::Duration::from_millis(50)));
        set(0, 0, 0);
    }

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
}
