//! The local delivery process (`postern local`): the part of Postfix's `local(8)` and
//! `virtual(8)` that needs root, alone in its own process. It lives beside the queue
//! manager, whose rewriting it repeats to check each request ([`QmgrSettings::routes_to`]),
//! above the delivery agents it runs.
//!
//! # Who runs what (after `postfix start` as root)
//! The master (root) starts this process and the queue manager, and connects them with a
//! `SOCK_SEQPACKET` socket pair; nothing else can reach it (no socket in the file system).
//! The queue manager runs as `mail_owner` and never gets root back: for each recipient
//! that trivial-rewrite sends to local(8) or virtual(8), it sends a datagram of one or
//! more [`Request`]s (each: the queue ID, the recipient record's offset in the queue file,
//! the address to deliver to; several when it gathered a group commit for one local
//! recipient, [`super::local_client::deliver`]) with one end of a fresh socket pair, and
//! reads one [`Reply`] per request (the [`Outcome`]s and what the delivery logged) from
//! the other end until end of file.
//!
//! This process stays root, single-threaded (its log lines are written directly,
//! [`crate::log::set_direct`]), and does nothing but take requests and hand each datagram
//! to a forked worker (up to `default_process_limit` side by side, each serving up to 100
//! datagrams one at a time), so that a delivery that hangs or crashes takes no other with
//! it. The worker, still root, for each request of the datagram:
//! 1. opens `queue_directory/active/ID` itself (a queue ID, no path; not through a symlink;
//!    a regular file with one link, complete (`u+x`), owned by `mail_owner`), reads and
//!    parses it, and finds a recipient not yet done at the given offset;
//! 2. checks that this recipient resolves to the requested address and agent, with the
//!    queue manager's own rewriting (canonical maps, virtual aliases, relocated and
//!    transport maps, the address classes) done again here, and maps the sender the same
//!    way;
//! 3. delivers as [`crate::delivery::local::deliver`] or [`crate::delivery::virtual_delivery::deliver`] do:
//!    aliases, `:include:` and `.forward` are resolved here, again, as Postfix's local(8)
//!    resolves them itself; every mailbox and file write runs with the worker's effective
//!    ids switched to the recipient (or `default_privs`) and back, as Postfix's
//!    `set_eugid()` ([`crate::sys::child::write_as`]; a worker is single-threaded, so
//!    nothing else runs meanwhile), every command in a further child that has become the
//!    user for good ([`crate::sys::child::run_as`]: uid, gid, and that group alone, as Postfix's
//!    `set_ugid()`); the spool mbox is created and dotlocked by root only when the spool
//!    directory is not writable otherwise (Postfix's local/mailbox.c);
//!    except that writes to users' mailboxes (the spool mbox, `home_mailbox` mbox or
//!    Maildir) are put off ([`crate::delivery::local::deliver_deferring`]);
//! 4. makes the writes put off, those to one mailbox together: mbox messages appended in
//!    request order under one hold of the locks and one fsync, Maildir files written to
//!    `tmp/`, fsynced side by side (threads that end before the worker switches its ids
//!    back or forks: [`crate::sys::fsync_together`]), renamed into `new/` and one fsync of
//!    `new/` ([`crate::delivery::local::commit_deferred`]: group commit,
//!    issue 18); a message that fails (over `mailbox_size_limit`, a write error) fails
//!    alone, a lock or fsync failure fails each message of its mailbox;
//! 5. writes the results to the datagram's socket, only now: the queue manager logs them,
//!    marks the recipients done, bounces or defers, exactly as before the split, so no
//!    recipient is marked before the fsync that covers its message.
//!
//! # What a compromised queue manager (or smtp client) can do
//! It holds `mail_owner`'s rights: the queue is its own, so it can make up queue files and
//! have them delivered to local recipients, as any SMTP client can send mail to them. It
//! cannot pick a file, a command, a user or a mailbox path: those come from this process's
//! own lookups (aliases owned by root, users' `.forward` files, `mailbox_command`, the
//! password file, `virtual_mailbox_maps`), so it cannot make root write or run anything the
//! configuration does not already do for mail to that address. It cannot make this process
//! read a file outside `active/` (a queue ID is letters and digits), follow a symlink, or
//! read a file another user planted (the owner must be `mail_owner`).
//!
//! # Lifetime
//! Its standard input comes from the master: `R` reloads main.cf (as `postfix reload`),
//! end of file means the master is gone; it keeps serving until the queue manager closes
//! its end (the queue manager finishes the deliveries it started first), waits for its
//! children and exits. Not started as root, it runs the same way without switching users.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::MsgFlags;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::postfix::PostfixConfig;
use crate::delivery::{Outcome, Status};
use crate::log;
use crate::qmgr::QmgrSettings;
use crate::queue::QueuedMessage;
use crate::sys::wire::{Dec, Enc, Wire};

/// The environment variable naming the control socket's descriptor in the queue manager
/// and in this process.
pub const FD_ENV: &str = "POSTERN_LOCAL_FD";

/// Largest request datagram.
const MAX_REQUEST: usize = 64 * 1024;

/// Which Postfix delivery agent a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    Local,
    Virtual,
}

/// One recipient of one queue file, to be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub agent: Agent,
    pub queue_id: String,
    /// Offset of the recipient's `R` record in the queue file.
    pub offset: u64,
    /// The address to deliver to, after the queue manager's rewriting.
    pub target: String,
}

impl Wire for Request {
    fn put(&self, e: &mut Enc) {
        e.str(match self.agent {
            Agent::Local => "local",
            Agent::Virtual => "virtual",
        })
        .str(&self.queue_id)
        .u64(self.offset)
        .str(&self.target);
    }
    fn get(d: &mut Dec<'_>) -> Option<Self> {
        let agent = match d.string()?.as_str() {
            "local" => Agent::Local,
            "virtual" => Agent::Virtual,
            _ => return None,
        };
        Some(Request {
            agent,
            queue_id: d.string()?,
            offset: d.u64()?,
            target: d.string()?,
        })
    }
}

/// What a delivery child sends back: its log lines, then the outcomes.
pub struct Reply {
    pub lines: Vec<log::Captured>,
    pub outcomes: Vec<Outcome>,
}

impl Wire for Reply {
    fn put(&self, e: &mut Enc) {
        self.lines.put(e);
        self.outcomes.put(e);
    }
    fn get(d: &mut Dec<'_>) -> Option<Self> {
        Some(Reply {
            lines: Vec::get(d)?,
            outcomes: Vec::get(d)?,
        })
    }
}

/// The process's state: its configuration and whom queue files must belong to.
struct State {
    settings: Arc<QmgrSettings>,
    queue_directory: PathBuf,
    /// `mail_owner`'s uid when root (queue files must be its), else `None`.
    queue_owner: Option<u32>,
    message_size_limit: u64,
    max_children: usize,
}

impl State {
    fn load(config_dir: Option<&Path>) -> Result<State, String> {
        let cfg = crate::config::postfix::load_config(config_dir)?;
        log::configure(&cfg)?;
        State::from_config(&cfg)
    }

    fn from_config(cfg: &PostfixConfig) -> Result<State, String> {
        let queue_owner = if crate::sys::privs::is_root() {
            Some(crate::sys::privs::mail_owner(cfg)?.uid)
        } else {
            None
        };
        let num = |n: &str, d: u64| cfg.get_num(n).unwrap_or(d);
        Ok(State {
            settings: Arc::new(QmgrSettings::from_config(cfg)),
            queue_directory: PathBuf::from(cfg.get("queue_directory").unwrap_or_default().trim()),
            queue_owner,
            message_size_limit: num("message_size_limit", 10_240_000),
            max_children: num("default_process_limit", 100).clamp(1, 1000) as usize,
        })
    }
}

/// How many requests a worker serves before it exits and a fresh one takes its place
/// (Postfix's `max_use`, default 100).
const MAX_USE: usize = 100;

/// How long a worker may wait for a request before it is ended (Postfix's `max_idle`,
/// default 100 s).
const MAX_IDLE: std::time::Duration = std::time::Duration::from_secs(100);

/// A delivery worker, as the parent sees it.
struct Worker {
    /// The parent's end of the worker's socket pair.
    sock: OwnedFd,
    busy: bool,
    /// Since when it waits for a request.
    idle_since: std::time::Instant,
}

/// `postern local -c DIR`: the local delivery process. Returns the exit status.
pub fn main(args: &[String]) -> i32 {
    // No writer thread: this process forks, and its children must not depend on one.
    log::set_direct();
    let mut config_dir = None;
    let mut it = args.iter().skip_while(|a| a.as_str() == "local");
    while let Some(a) = it.next() {
        if a == "-c" {
            config_dir = it.next().map(PathBuf::from);
        }
    }
    let ident = "postfix/local";
    let mut state = match State::load(config_dir.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            log::fatal(ident, &e);
            return 1;
        }
    };
    let Some(ctl) = std::env::var(FD_ENV)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
        .filter(|fd| *fd > 2)
    else {
        log::fatal(
            ident,
            "no delivery request channel (started by the master only)",
        );
        return 1;
    };
    // The master passed this descriptor to us alone.
    let ctl = crate::sys::take_inherited_fd(ctl);
    let _ = nix::fcntl::fcntl(
        &ctl,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let mut stdin_open = true;
    let mut ctl_open = true;
    let mut workers: Vec<Worker> = Vec::new();
    // Requests waiting for a worker (all busy, and as many as allowed).
    let mut waiting: std::collections::VecDeque<(Vec<u8>, OwnedFd)> = Default::default();
    while ctl_open || !workers.is_empty() {
        reap();
        let mut fds = Vec::new();
        // Stop taking requests while some wait: the queue manager's sends then wait too.
        let take = ctl_open && waiting.is_empty();
        if take {
            fds.push(ctl.as_raw_fd());
        }
        if stdin_open {
            fds.push(libc::STDIN_FILENO);
        }
        let first_worker = fds.len();
        fds.extend(workers.iter().map(|w| w.sock.as_raw_fd()));
        let ready = match crate::sys::fdpass::poll_in(&fds, 1000) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::fatal(ident, &format!("poll: {e}"));
                break;
            }
        };
        // Workers: `I` (idle again) or end of file (gone).
        let mut gone = Vec::new();
        for (i, w) in workers.iter_mut().enumerate() {
            if !ready[first_worker + i] {
                continue;
            }
            let mut b = [0u8; 16];
            match nix::sys::socket::recv(w.sock.as_raw_fd(), &mut b, MsgFlags::empty()) {
                Ok(n) if n > 0 => {
                    w.busy = false;
                    w.idle_since = std::time::Instant::now();
                }
                Err(nix::errno::Errno::EINTR) => {}
                _ => gone.push(i),
            }
        }
        for i in gone.into_iter().rev() {
            workers.remove(i);
        }
        // Idle too long: closing its socket ends it.
        workers.retain(|w| w.busy || w.idle_since.elapsed() < MAX_IDLE);
        if stdin_open && ready[usize::from(take)] {
            let mut b = [0u8; 64];
            match std::io::stdin().read(&mut b) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    if b[..n].contains(&b'R') {
                        match State::load(config_dir.as_deref()) {
                            Ok(s) => {
                                state = s;
                                // Workers carry the old configuration: closing their
                                // sockets ends them after the delivery in progress.
                                workers.clear();
                            }
                            Err(e) => log::warning(
                                ident,
                                &format!("reload: {e}; keeping the previous configuration"),
                            ),
                        }
                    }
                }
            }
        }
        if take && ready[0] {
            match recv_request(ctl.as_raw_fd()) {
                Ok(Some((data, Some(fd)))) if decode_batch(&data).is_some() => {
                    waiting.push_back((data, fd));
                }
                // Not a request the queue manager sends: dropped (the descriptor with it).
                Ok(Some(_)) => log::warning(ident, "malformed delivery request ignored"),
                // The queue manager has gone: finish what runs, then stop.
                Ok(None) => {
                    ctl_open = false;
                    workers.retain(|w| w.busy);
                    for w in &mut workers {
                        // Half-close: the worker ends after its delivery.
                        let _ = nix::sys::socket::shutdown(
                            w.sock.as_raw_fd(),
                            nix::sys::socket::Shutdown::Write,
                        );
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                    ) => {}
                Err(e) => {
                    log::fatal(ident, &format!("read delivery request: {e}"));
                    ctl_open = false;
                }
            }
        }
        // Hand waiting requests to idle workers, starting workers up to the limit.
        while let Some((data, fd)) = waiting.pop_front() {
            let idle = match workers.iter().position(|w| !w.busy) {
                Some(i) => Some(i),
                None if workers.len() < state.max_children => {
                    match start_worker(&state) {
                        Ok(w) => {
                            workers.push(w);
                            Some(workers.len() - 1)
                        }
                        Err(e) => {
                            // The queue manager sees end of file without a result and
                            // defers.
                            log::warning(ident, &e);
                            None
                        }
                    }
                }
                None => {
                    waiting.push_front((data, fd));
                    break;
                }
            };
            let Some(i) = idle else { continue };
            match crate::sys::fdpass::send_with_fd(
                workers[i].sock.as_raw_fd(),
                &data,
                fd.as_raw_fd(),
            ) {
                Ok(()) => workers[i].busy = true,
                Err(_) => {
                    workers.remove(i);
                    waiting.push_front((data, fd));
                }
            }
        }
        if !ctl_open {
            workers.retain(|w| w.busy);
        }
    }
    // Wait for the last workers.
    while reap_blocking() {}
    log::flush();
    0
}

/// Fork a worker: it serves requests from its socket until that closes or it has served
/// [`MAX_USE`].
fn start_worker(state: &State) -> Result<Worker, String> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (mine, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("socketpair: {}", e.desc()))?;
    // This process is single-threaded. In the child, the queue manager's channel (`ctl`),
    // the master's pipe, our end and other workers' sockets are closed: they are the
    // parent's.
    let keep = theirs.as_raw_fd();
    crate::sys::child::fork_worker(keep, move || worker_main(state, theirs))?;
    Ok(Worker {
        sock: mine,
        busy: false,
        idle_since: std::time::Instant::now(),
    })
}

/// A worker's life: one request at a time, then `I` to the parent.
/// Returns the worker's exit status.
fn worker_main(state: &State, sock: OwnedFd) -> i32 {
    std::panic::set_hook(Box::new(|_| {}));
    // Single-threaded for good: mailbox and file writes switch the effective ids in place.
    crate::sys::child::allow_eugid_switch();
    // Each mailbox lock links one kept file instead of making a new one (issue 18).
    crate::mailbox::lock::keep_link_sources();
    for used in 1..=MAX_USE {
        let (data, reply_fd) = loop {
            match recv_request(sock.as_raw_fd()) {
                Ok(Some((d, Some(fd)))) => break (d, fd),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                _ => {
                    crate::mailbox::lock::remove_link_sources();
                    return 0;
                }
            }
        };
        let Some(reqs) = decode_batch(&data) else {
            break;
        };
        serve_batch(state, &reqs, reply_fd);
        // The last one: no `I`, so that the parent gives it nothing more; it sees end of
        // file instead.
        if used == MAX_USE {
            break;
        }
        if nix::sys::socket::send(sock.as_raw_fd(), b"I", MsgFlags::MSG_NOSIGNAL) != Ok(1) {
            break;
        }
    }
    crate::mailbox::lock::remove_link_sources();
    0
}

/// Collect exited workers (and the delivery children they leave) without waiting.
fn reap() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Wait for one child; false when there is none left.
fn reap_blocking() -> bool {
    loop {
        match nix::sys::wait::waitpid(None, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => return true,
            Err(_) => return false,
        }
    }
}

/// One request datagram and its descriptor; `None` when the other end has closed; an
/// empty request without descriptor when it was not one datagram with one descriptor.
fn recv_request(sock: RawFd) -> std::io::Result<Option<(Vec<u8>, Option<OwnedFd>)>> {
    let Some(mut r) = crate::sys::fdpass::recv_with_fds(sock, MAX_REQUEST, 2)? else {
        return Ok(None);
    };
    if r.truncated || r.fds.len() != 1 {
        return Ok(Some((Vec::new(), None)));
    }
    Ok(Some((r.data, r.fds.pop())))
}

/// A request datagram: one or more [`Request`]s (a group commit, see [`serve_batch`]);
/// `None` when it is not that, or empty.
pub(super) fn decode_batch(data: &[u8]) -> Option<Vec<Request>> {
    let mut d = Dec(data);
    let reqs = Vec::<Request>::get(&mut d)?;
    (!reqs.is_empty() && reqs.len() <= MAX_BATCH).then_some(reqs)
}

/// The most requests one datagram may carry.
pub const MAX_BATCH: usize = 64;

/// Deliver a batch of requests and write the answers (one [`Reply`] per request, in
/// order) to its socket. Group commit (issue 18): each request is resolved and delivered
/// as [`deliver_request`] says, except that writes to users' mboxes are put off
/// ([`crate::delivery::local::deliver_deferring`]) and then made together, those to one
/// mbox under one hold of its locks and one fsync
/// ([`crate::delivery::local::commit_deferred`]); only then are the answers sent, so the
/// queue manager marks a recipient done only after the fsync that covers it. A request
/// that fails (a rejected request, a mailbox over its `mailbox_size_limit`, a write
/// error) fails alone.
fn serve_batch(state: &State, reqs: &[Request], reply_fd: OwnedFd) {
    let defer = |req: &Request, why: String| Outcome {
        to: req.target.clone(),
        orig_to: None,
        status: Status::Deferred,
        dsn: "4.3.0".into(),
        text: why,
    };
    let mut replies = Vec::with_capacity(reqs.len());
    // (request, write): the writes put off, in the order of the requests.
    let mut writes = Vec::new();
    for (i, req) in reqs.iter().enumerate() {
        log::start_capture();
        let outcomes = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            deliver_request(state, req)
        })) {
            Ok(Ok((o, w))) => {
                writes.extend(w.into_iter().map(|w| (i, w)));
                o
            }
            Ok(Err(why)) => vec![defer(req, why)],
            Err(_) => vec![defer(
                req,
                "internal error in the local delivery process".into(),
            )],
        };
        replies.push(Reply {
            lines: log::take_captured(),
            outcomes,
        });
    }
    if !writes.is_empty() {
        log::start_capture();
        let (owners, ws): (Vec<usize>, Vec<_>) = writes.into_iter().unzip();
        // A panic leaves the placeholders: deferred.
        if let Ok(done) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::delivery::local::commit_deferred(&state.settings.local, &ws)
        })) {
            for ((i, w), o) in owners.iter().zip(&ws).zip(done) {
                if let Some(slot) = replies[*i].outcomes.get_mut(w.outcome) {
                    *slot = o;
                }
            }
        }
        // What the writes logged goes with the first request's lines.
        let lines = log::take_captured();
        replies[owners[0]].lines.extend(lines);
    }
    let mut e = Enc::new();
    replies.put(&mut e);
    let mut f = std::fs::File::from(reply_fd);
    let _ = f.write_all(&e.0);
}

/// Steps 1 to 3 of the module header. `Err` is a deferral reason.
/// Writes to users' mboxes are returned, not made ([`serve_batch`]).
fn deliver_request(
    state: &State,
    req: &Request,
) -> Result<(Vec<Outcome>, Vec<crate::delivery::local::DeferredWrite>), String> {
    if crate::queue::QueueId::parse(&req.queue_id).is_none() {
        return Err("delivery request rejected: bad queue ID".into());
    }
    let mut msg = read_active(state, &req.queue_id)?;
    let Some(r) = msg
        .recipients
        .iter()
        .find(|r| r.offset == req.offset && !r.done)
        .cloned()
    else {
        return Err("delivery request rejected: no such recipient in the queue file".into());
    };
    let s = &state.settings;
    // The queue manager's rewriting, again: its lines are the queue manager's to log.
    let queued = s.qualify(&r.address);
    let sender = s.canonical(
        &req.queue_id,
        &[
            ("sender_canonical_maps", &s.sender_canonical_maps),
            ("canonical_maps", &s.canonical_maps),
        ],
        &msg.sender,
    );
    let ok = sender.is_ok()
        && s.routes_to(
            &req.queue_id,
            &queued,
            &req.target,
            req.agent == Agent::Virtual,
        );
    let _ = log::take_captured();
    let Ok(sender) = sender else {
        return Err("delivery request rejected: sender address rewriting failed".into());
    };
    if !ok {
        return Err(format!(
            "delivery request rejected: {} does not resolve to {}",
            queued, req.target
        ));
    }
    msg.sender = sender;
    let orig = r.original.clone().unwrap_or(queued);
    Ok(match req.agent {
        Agent::Local => {
            crate::delivery::local::deliver_deferring(&s.local, &msg, &req.target, Some(&orig))
        }
        Agent::Virtual => (
            crate::delivery::virtual_delivery::deliver(&s.virtual_, &msg, &req.target, Some(&orig)),
            Vec::new(),
        ),
    })
}

/// Read `queue_directory/active/ID` as step 1 of the module header describes.
fn read_active(state: &State, id: &str) -> Result<QueuedMessage, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = state.queue_directory.join("active").join(id);
    let refuse = |why: String| format!("delivery request rejected: queue file {id}: {why}");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| refuse(crate::config::error::strerror(&e)))?;
    let m = f.metadata().map_err(|e| refuse(e.to_string()))?;
    if !m.is_file() || m.nlink() != 1 {
        return Err(refuse("not a regular file with one link".into()));
    }
    if let Some(owner) = state.queue_owner
        && m.uid() != owner
    {
        return Err(refuse(format!("owned by uid {}, not mail_owner", m.uid())));
    }
    if m.mode() & 0o100 == 0 {
        return Err(refuse("not complete".into()));
    }
    let cap = if state.message_size_limit == 0 {
        u64::MAX
    } else {
        state
            .message_size_limit
            .saturating_mul(2)
            .saturating_add(1 << 20)
    };
    if m.len() > cap {
        return Err(refuse("too large".into()));
    }
    let mut data = Vec::with_capacity(m.len() as usize);
    Read::by_ref(&mut f)
        .take(cap)
        .read_to_end(&mut data)
        .map_err(|e| refuse(e.to_string()))?;
    crate::queue::file::parse(&data, id).map_err(|e| refuse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_roundtrip() {
        let r = Request {
            agent: Agent::Virtual,
            queue_id: "4AB2C3D4E5".into(),
            offset: 1234,
            target: "odd user@example.org".into(),
        };
        let mut e = Enc::new();
        r.put(&mut e);
        assert_eq!(Request::get(&mut Dec(&e.0)), Some(r));
        let reply = Reply {
            lines: vec![log::Captured {
                severity: "warning".into(),
                ident: "postfix/local".into(),
                pid: 7,
                text: "hash:/etc/aliases: lookup of 'x' failed".into(),
            }],
            outcomes: vec![Outcome {
                to: "a@b".into(),
                orig_to: Some(String::new()),
                status: Status::Bounced,
                dsn: "5.1.1".into(),
                text: "unknown user: \"a\"".into(),
            }],
        };
        let mut e = Enc::new();
        reply.put(&mut e);
        let back = Reply::get(&mut Dec(&e.0)).unwrap();
        assert_eq!(back.lines, reply.lines);
        assert_eq!(back.outcomes[0].orig_to, Some(String::new()));
        assert_eq!(back.outcomes[0].status, Status::Bounced);
    }
}
