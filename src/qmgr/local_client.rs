//! The queue manager's side of the local delivery process ([`super::local_server`]): one request
//! per recipient, over the socket pair the master set up, with a fresh socket pair's end for
//! the answer. Without that channel (the queue manager started by hand, not by the master)
//! deliveries run in the queue manager's own process, with its own rights.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

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
/// `active/ID`) to `target`; the outcomes, as [`crate::delivery::local::deliver`] returns them. A process
/// that cannot be reached or dies without an answer defers the recipient.
pub fn deliver(agent: Agent, queue_id: &str, offset: u64, target: &str) -> Vec<Outcome> {
    let fail = |why: String| {
        crate::log::warning(
            "postfix/qmgr",
            &format!("{queue_id}: local delivery process: {why}"),
        );
        vec![Outcome {
            to: target.to_string(),
            orig_to: None,
            status: Status::Deferred,
            dsn: "4.3.0".into(),
            text: "unknown mail transport error".into(),
        }]
    };
    let Some(Some(ctl)) = CHANNEL.get() else {
        return fail("not connected".into());
    };
    let req = Request {
        agent,
        queue_id: queue_id.to_string(),
        offset,
        target: target.to_string(),
    };
    let mut e = Enc::new();
    req.put(&mut e);
    let (mine, theirs) = match nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    ) {
        Ok(p) => p,
        Err(e) => return fail(format!("socketpair: {}", e.desc())),
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
        return fail(format!("send request: {}", e.desc()));
    }
    drop(theirs);
    let mut data = Vec::new();
    if let Err(e) = std::fs::File::from(mine).read_to_end(&mut data) {
        return fail(format!("read answer: {e}"));
    }
    match Reply::get(&mut Dec(&data)) {
        Some(reply) if !reply.outcomes.is_empty() => {
            for l in &reply.lines {
                crate::log::emit_as(l);
            }
            reply.outcomes
        }
        _ => fail("no answer (the delivery process died)".into()),
    }
}
