//! Datagrams carrying descriptors (`SCM_RIGHTS`) over UNIX-domain sockets, and waiting for
//! several descriptors at once: what the queue manager and the local delivery process
//! ([`crate::qmgr::local_server`]) exchange, one request and its answer socket per datagram.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Send one datagram with one descriptor (`MSG_NOSIGNAL`: a closed peer is an error, not a
/// `SIGPIPE`).
pub fn send_with_fd(sock: RawFd, data: &[u8], fd: RawFd) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let iov = [std::io::IoSlice::new(data)];
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(sock, &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
        .map(|_| ())
        .map_err(std::io::Error::from)
}

/// One datagram received.
pub struct Received {
    pub data: Vec<u8>,
    /// The descriptors that came with it (close-on-exec), owned here.
    pub fds: Vec<OwnedFd>,
    /// The datagram or its descriptors did not fit (`MSG_TRUNC`, `MSG_CTRUNC`).
    pub truncated: bool,
}

/// Receive one datagram of at most `max` bytes with up to `max_fds` descriptors; `None`
/// when the other end has closed (an empty datagram without descriptors).
pub fn recv_with_fds(sock: RawFd, max: usize, max_fds: usize) -> std::io::Result<Option<Received>> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = vec![0u8; max];
    let mut cmsg = vec![0u8; nix::sys::socket::cmsg_space::<RawFd>() * max_fds.max(1)];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(std::io::Error::from)?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    if let Ok(cm) = msg.cmsgs() {
        for c in cm {
            if let ControlMessageOwned::ScmRights(v) = c {
                // SAFETY: each descriptor was just received and is owned by nobody else.
                fds.extend(v.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
            }
        }
    }
    let n = msg.bytes;
    let truncated = msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    buf.truncate(n);
    Ok(Some(Received {
        data: buf,
        fds,
        truncated,
    }))
}

/// Wait up to `timeout_ms` (−1: without end) until one of `fds` is readable or closed;
/// which ones are, in the order given. `Interrupted` when a signal came first.
pub fn poll_in(fds: &[RawFd], timeout_ms: i32) -> std::io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: poll on our own array of pollfd; an fd that is not open is reported as
    // POLLNVAL, nothing else is touched.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p.iter().map(|p| p.revents != 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_descriptor_travels_with_its_datagram() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (x, y) = nix::unistd::pipe().unwrap();
        assert_eq!(poll_in(&[b.as_raw_fd()], 0).unwrap(), vec![false]);
        send_with_fd(a.as_raw_fd(), b"req", y.as_raw_fd()).unwrap();
        drop(y);
        assert_eq!(poll_in(&[b.as_raw_fd()], 1000).unwrap(), vec![true]);
        let r = recv_with_fds(b.as_raw_fd(), 64, 2).unwrap().unwrap();
        assert_eq!(r.data, b"req");
        assert!(!r.truncated);
        assert_eq!(r.fds.len(), 1);
        // The received end writes into the pipe.
        nix::unistd::write(&r.fds[0], b"!").unwrap();
        let mut got = [0u8; 1];
        assert_eq!(nix::unistd::read(&x, &mut got).unwrap(), 1);
        drop(a);
        assert!(recv_with_fds(b.as_raw_fd(), 64, 2).unwrap().is_none());
    }
}
