//! The queue manager's side of the local delivery process ([`super::local_server`]): one request
//! per recipient, over the socket pair the master set up, with a fresh socket pair's end for
//! the answer. Without that channel (the queue manager started by hand, not by the master)
//! deliveries run in the queue manager's own process, with its own rights.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use super::local_server::{Agent, FD_ENV, Reply, Request};
use crate::delivery::{Outcome, Status};
use crate::sys::wire::{Dec, Enc, Wire};

static CHANNEL: OnceLock<Option<OwnedFd>> = OnceLock::new();

/// Take the channel the master passed (`$POSTERN_LOCAL_FD`); call once, at start.
pub fn init_from_env() {
    let fd = std::env::var(FD_ENV)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
        .filter(|fd| *fd > 2)
        .map(|fd| {
            // The master passed this descriptor to us alone.
            let fd = crate::sys::take_inherited_fd(fd);
            let _ = nix::fcntl::fcntl(
                &fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            fd
        });
    let _ = CHANNEL.set(fd);
}

/// Whether deliveries go to the local delivery process.
pub fn connected() -> bool {
    CHANNEL.get().is_some_and(Option::is_some)
}

/// Have the local delivery process deliver one recipient (`offset`: its record in
/// `active/ID`) to `target`; the outcomes, as [`crate::delivery::local::deliver`] returns
/// them. A process that cannot be reached or dies without an answer defers the recipient.
///
/// Group commit (issue 18): the caller holds a slot of the destination `key`
/// (`local:ADDRESS`). When no request of that key is with the local delivery process, this
/// one goes at once; otherwise it waits for that one to come back, and meanwhile other
/// messages for the key join it ([`join`]), without a slot of their own; they all go as
/// one request datagram, whose writes to one mbox the local delivery process makes under
/// one lock hold and one fsync. So one batch is written while the next gathers.
pub fn deliver(
    key: &str,
    agent: Agent,
    gather: bool,
    queue_id: &str,
    offset: u64,
    target: &str,
) -> Vec<Outcome> {
    let req = request(agent, queue_id, offset, target);
    if agent == Agent::Virtual || !gather {
        // virtual(8) writes each message at once, and so do Maildir and mailbox_command
        // deliveries (`gather` false): nothing to gather for.
        return send_batch(std::slice::from_ref(&req))
            .pop()
            .unwrap_or_default();
    }
    let forming = {
        let mut g = batches();
        let st = g.entry(key.to_string()).or_default();
        if !st.inflight {
            st.inflight = true;
            st.since = Some(std::time::Instant::now());
            None
        } else {
            match &st.forming {
                // Another slot holder gathers a batch: join it as any other message.
                Some(f) if f.open(MAX_BATCH) => {
                    let f = f.clone();
                    let i = f.push(req.clone());
                    drop(g);
                    return f.wait(i);
                }
                _ => {
                    let f = Arc::new(Forming::default());
                    f.push(req.clone());
                    st.forming = Some(f.clone());
                    Some(f)
                }
            }
        }
    };
    let Some(f) = forming else {
        let out = send_batch(std::slice::from_ref(&req)).pop();
        finish(key);
        return out.unwrap_or_default();
    };
    // Wait for the batch with the local delivery process to come back, then send what
    // gathered meanwhile.
    let reqs = {
        let mut g = batches();
        loop {
            let st = g.entry(key.to_string()).or_default();
            if !st.inflight {
                st.inflight = true;
                st.since = Some(std::time::Instant::now());
                st.forming = None;
                break f.close();
            }
            let cv = st.cv.clone();
            g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    };
    let mut results = send_batch(&reqs);
    finish(key);
    let mine = std::mem::take(&mut results[0]);
    f.settle(results);
    mine
}

/// Join the batch gathering for `key` ([`deliver`]) without a destination slot: the
/// outcomes once it has been delivered, or `None` when no batch gathers, it is full, or the
/// one before it has been with the local delivery process for [`JOIN_WINDOW`] or more (a
/// mailbox that waits for a lock: the message is then put aside as before, holding no
/// thread). The thread waiting here does not count against the queue manager's workers.
pub fn join(
    key: &str,
    agent: Agent,
    queue_id: &str,
    offset: u64,
    target: &str,
) -> Option<Vec<Outcome>> {
    if agent == Agent::Virtual {
        return None;
    }
    let (f, i) = {
        let g = batches();
        let st = g.get(key)?;
        let f = st.forming.as_ref()?;
        if !st.inflight || st.since_elapsed() >= JOIN_WINDOW || !f.open(MAX_BATCH) {
            return None;
        }
        let f = f.clone();
        let i = f.push(request(agent, queue_id, offset, target));
        (f, i)
    };
    let _parked = super::limiter::Parked::enter();
    Some(f.wait(i))
}

/// The most recipients in one batch.
const MAX_BATCH: usize = super::local_server::MAX_BATCH;

/// How long a batch may have been with the local delivery process for others still to
/// join the next one (`deliver_lock_delay`'s default: longer, it is likely waiting for a
/// mailbox lock).
const JOIN_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Per destination key: whether a batch is with the local delivery process (since when),
/// and the one gathering behind it.
#[derive(Default)]
struct KeyState {
    inflight: bool,
    since: Option<std::time::Instant>,
    forming: Option<Arc<Forming>>,
    cv: Arc<Condvar>,
}

impl KeyState {
    fn since_elapsed(&self) -> std::time::Duration {
        self.since.map(|t| t.elapsed()).unwrap_or_default()
    }
}

/// A batch gathering, then the outcomes of its members.
#[derive(Default)]
struct Forming {
    state: Mutex<FormState>,
    cv: Condvar,
}

#[derive(Default)]
struct FormState {
    reqs: Vec<Request>,
    closed: bool,
    results: Option<Vec<Vec<Outcome>>>,
}

impl Forming {
    fn lock(&self) -> std::sync::MutexGuard<'_, FormState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn open(&self, max: usize) -> bool {
        let g = self.lock();
        !g.closed && g.reqs.len() < max
    }
    fn push(&self, r: Request) -> usize {
        let mut g = self.lock();
        g.reqs.push(r);
        g.reqs.len() - 1
    }
    fn close(&self) -> Vec<Request> {
        let mut g = self.lock();
        g.closed = true;
        g.reqs.clone()
    }
    fn settle(&self, results: Vec<Vec<Outcome>>) {
        self.lock().results = Some(results);
        self.cv.notify_all();
    }
    fn wait(&self, i: usize) -> Vec<Outcome> {
        let mut g = self.lock();
        loop {
            if let Some(r) = g.results.as_mut() {
                return r.get_mut(i).map(std::mem::take).unwrap_or_default();
            }
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

static BATCHES: OnceLock<Mutex<HashMap<String, KeyState>>> = OnceLock::new();

fn batches() -> std::sync::MutexGuard<'static, HashMap<String, KeyState>> {
    BATCHES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// A batch of `key` came back: the one gathering behind it may go.
fn finish(key: &str) {
    let mut g = batches();
    let Some(st) = g.get_mut(key) else { return };
    st.inflight = false;
    if st.forming.is_some() {
        st.cv.notify_all();
    } else {
        g.remove(key);
    }
}

fn request(agent: Agent, queue_id: &str, offset: u64, target: &str) -> Request {
    Request {
        agent,
        queue_id: queue_id.to_string(),
        offset,
        target: target.to_string(),
    }
}

/// Send `reqs` as one datagram and read one reply per request; a request without an
/// answer is deferred (and the reason logged under its queue ID).
fn send_batch(reqs: &[Request]) -> Vec<Vec<Outcome>> {
    let fail_all = |why: String| {
        reqs.iter()
            .map(|r| {
                crate::log::warning(
                    "postfix/qmgr",
                    &format!("{}: local delivery process: {why}", r.queue_id),
                );
                vec![Outcome {
                    to: r.target.clone(),
                    orig_to: None,
                    status: Status::Deferred,
                    dsn: "4.3.0".into(),
                    text: "unknown mail transport error".into(),
                }]
            })
            .collect::<Vec<_>>()
    };
    let Some(Some(ctl)) = CHANNEL.get() else {
        return fail_all("not connected".into());
    };
    let mut e = Enc::new();
    reqs.to_vec().put(&mut e);
    let (mine, theirs) = match nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    ) {
        Ok(p) => p,
        Err(e) => return fail_all(format!("socketpair: {}", e.desc())),
    };
    let iov = [std::io::IoSlice::new(&e.0)];
    let fds = [theirs.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    if let Err(e) = nix::sys::socket::sendmsg::<()>(
        ctl.as_raw_fd(),
        &iov,
        &cmsg,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        None,
    ) {
        return fail_all(format!("send request: {}", e.desc()));
    }
    drop(theirs);
    let mut data = Vec::new();
    if let Err(e) = std::fs::File::from(mine).read_to_end(&mut data) {
        return fail_all(format!("read answer: {e}"));
    }
    match Vec::<Reply>::get(&mut Dec(&data)) {
        Some(replies)
            if replies.len() == reqs.len() && replies.iter().all(|r| !r.outcomes.is_empty()) =>
        {
            replies
                .into_iter()
                .map(|reply| {
                    for l in &reply.lines {
                        crate::log::emit_as(l);
                    }
                    reply.outcomes
                })
                .collect()
        }
        _ => fail_all("no answer (the delivery process died)".into()),
    }
}
