//! The channel between an unprivileged login process (Dovecot's `pop3-login`,
//! `imap-login`) and the privileged service process that checks passwords and serves
//! logged-in sessions (Dovecot's `auth` + `pop3`/`imap`).
//!
//! One `SOCK_SEQPACKET` socket pair per login process: each message is one datagram, so
//! no framing is needed, and a client connection travels with its login request as an
//! `SCM_RIGHTS` descriptor. The login process asks; the service answers with a
//! [`Verdict`]: `Taken` means the service owns the connection from now on (it writes
//! `+OK Logged in.` or `TAG OK [CAPABILITY …] Logged in`), anything else leaves the client
//! with the login process.
//!
//! The same channel, with the same framing, joins the service and each of its mail
//! processes (Dovecot's `imap`/`pop3` processes, [`super::mailproc`]): a logged-in
//! session travels there as a [`Msg::Session`] with its descriptor, the mail process's
//! log lines come back as [`Msg::Log`] (it may not open `log_path` either: see
//! [`relay_logs_to`]), and the end of each session as [`Msg::Ended`], so that the
//! service can count `mail_max_userip_connections`.
//!
//! A message is a tag byte and fields, each a 4-byte little-endian length and its bytes.

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::auth::dovecot::UserInfo;

/// Largest message: a login request holds at most the login input buffer twice over.
const MAX_MSG: usize = 64 * 1024;

/// The credentials a client gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// USER/PASS, AUTH PLAIN, AUTH LOGIN (`method` says which).
    Plain { user: String, pass: String },
    /// `APOP user digest` against the greeting's `challenge`.
    Apop {
        user: String,
        digest: String,
        challenge: String,
    },
}

/// A client that gave credentials, handed to the service with its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    pub id: u64,
    pub session_id: String,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// TLS is spoken on the client side; the descriptor is the login process's proxy.
    pub tls: bool,
    /// `PLAIN`, `LOGIN`, `APOP` as logged.
    pub method: String,
    /// IMAP: the tag of the LOGIN/AUTHENTICATE command (the service answers it); POP3:
    /// empty.
    pub tag: String,
    pub creds: Credentials,
    /// Input the client sent after the credentials (pipelined commands).
    pub leftover: Vec<u8>,
}

/// The service's answer to a [`LoginRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Logged in: the service serves the connection from now on.
    Taken,
    /// Authentication failed: the login process waits `auth_failure_delay` and answers
    /// `-ERR [AUTH] Authentication failed.` (`NO [AUTHENTICATIONFAILED] …`); the client
    /// may try again.
    Failed,
    /// Send this reply line; the client may try again.
    Reply(String),
    /// Send this reply line and disconnect.
    ReplyClose(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// login → service, with the client's descriptor.
    Login(LoginRequest),
    /// login → service: a log line (`pop3-login: …`, `imap-login: …`) at `level` (`Info`, `Warning`,
    /// `Error`); the login process cannot open the log file itself.
    Log { level: String, text: String },
    /// service → login.
    Verdict { id: u64, verdict: Verdict },
    /// service → login: stop accepting, exit once the clients it has are gone (reload).
    Drain,
    /// service → mail process, with the client's descriptor: serve this logged-in
    /// session (`req.creds` carries no password here).
    Session {
        req: LoginRequest,
        user: String,
        info: UserInfo,
    },
    /// mail process → service: the session `session_id` ended.
    Ended { session_id: String },
}

struct Enc(Vec<u8>);

impl Enc {
    fn new(tag: u8) -> Enc {
        Enc(vec![tag])
    }
    fn put(&mut self, b: &[u8]) -> &mut Enc {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &str) -> &mut Enc {
        self.put(s.as_bytes())
    }
}

struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let b = self.0.get(4..4 + len)?;
        self.0 = &self.0[4 + len..];
        Some(b)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    fn parse<T: std::str::FromStr>(&mut self) -> Option<T> {
        self.string()?.parse().ok()
    }
}

impl Msg {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Login(r) => {
                let mut e = Enc::new(b'L');
                e.str(&r.id.to_string())
                    .str(&r.session_id)
                    .str(&r.remote.to_string())
                    .str(&r.local.to_string())
                    .str(if r.tls { "1" } else { "0" })
                    .str(&r.method)
                    .str(&r.tag)
                    .put(&r.leftover);
                match &r.creds {
                    Credentials::Plain { user, pass } => e.str("P").str(user).str(pass),
                    Credentials::Apop {
                        user,
                        digest,
                        challenge,
                    } => e.str("A").str(user).str(digest).str(challenge),
                };
                e.0
            }
            Msg::Log { level, text } => Enc::new(b'G').str(level).str(text).0.clone(),
            Msg::Verdict { id, verdict } => {
                let mut e = Enc::new(b'V');
                e.str(&id.to_string());
                match verdict {
                    Verdict::Taken => e.str("T"),
                    Verdict::Failed => e.str("F"),
                    Verdict::Reply(t) => e.str("R").str(t),
                    Verdict::ReplyClose(t) => e.str("C").str(t),
                };
                e.0
            }
            Msg::Drain => vec![b'D'],
            Msg::Session { req, user, info } => {
                let mut e = Enc::new(b'S');
                e.put(&Msg::Login(req.clone()).encode()).str(user);
                let opt = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
                e.str(&info.user).str(&opt(info.uid)).str(&opt(info.gid));
                match &info.home {
                    Some(h) => e.str("1").str(h),
                    None => e.str("0").str(""),
                };
                e.str(&info.extra.len().to_string());
                for (k, v) in &info.extra {
                    e.str(k).str(v);
                }
                e.0
            }
            Msg::Ended { session_id } => Enc::new(b'E').str(session_id).0.clone(),
        }
    }

    pub fn decode(b: &[u8]) -> Option<Msg> {
        let (&tag, rest) = b.split_first()?;
        let mut d = Dec(rest);
        Some(match tag {
            b'L' => {
                let id = d.parse()?;
                let session_id = d.string()?;
                let remote = d.parse()?;
                let local = d.parse()?;
                let tls = d.string()? == "1";
                let method = d.string()?;
                let tag = d.string()?;
                let leftover = d.bytes()?.to_vec();
                let creds = match d.string()?.as_str() {
                    "P" => Credentials::Plain {
                        user: d.string()?,
                        pass: d.string()?,
                    },
                    "A" => Credentials::Apop {
                        user: d.string()?,
                        digest: d.string()?,
                        challenge: d.string()?,
                    },
                    _ => return None,
                };
                Msg::Login(LoginRequest {
                    id,
                    session_id,
                    remote,
                    local,
                    tls,
                    method,
                    tag,
                    creds,
                    leftover,
                })
            }
            b'G' => Msg::Log {
                level: d.string()?,
                text: d.string()?,
            },
            b'V' => {
                let id = d.parse()?;
                let verdict = match d.string()?.as_str() {
                    "T" => Verdict::Taken,
                    "F" => Verdict::Failed,
                    "R" => Verdict::Reply(d.string()?),
                    "C" => Verdict::ReplyClose(d.string()?),
                    _ => return None,
                };
                Msg::Verdict { id, verdict }
            }
            b'D' => Msg::Drain,
            b'S' => {
                let Msg::Login(req) = Msg::decode(d.bytes()?)? else {
                    return None;
                };
                let user = d.string()?;
                let opt = |s: String| -> Option<Option<u32>> {
                    if s.is_empty() {
                        Some(None)
                    } else {
                        s.parse().ok().map(Some)
                    }
                };
                let iuser = d.string()?;
                let uid = opt(d.string()?)?;
                let gid = opt(d.string()?)?;
                let has_home = d.string()? == "1";
                let home = d.string()?;
                let n: usize = d.parse()?;
                let mut extra = Vec::new();
                for _ in 0..n {
                    extra.push((d.string()?, d.string()?));
                }
                Msg::Session {
                    req,
                    user,
                    info: UserInfo {
                        user: iuser,
                        uid,
                        gid,
                        home: has_home.then_some(home),
                        extra,
                    },
                }
            }
            b'E' => Msg::Ended {
                session_id: d.string()?,
            },
            _ => return None,
        })
    }
}

/// A connected `SOCK_SEQPACKET` pair, close-on-exec: (service end, login end).
pub fn pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(std::io::Error::from)
}

/// One end of the channel, driven by tokio.
pub struct Channel {
    fd: AsyncFd<OwnedFd>,
}

impl Channel {
    /// Wrap an end (made non-blocking here: an inherited one may not be).
    pub fn new(fd: OwnedFd) -> std::io::Result<Channel> {
        set_nonblocking(&fd)?;
        let fd = crate::sys::async_fd(fd, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Channel { fd })
    }

    /// Send one message, with a descriptor when given.
    pub async fn send(&self, msg: &Msg, fd: Option<RawFd>) -> std::io::Result<()> {
        let data = msg.encode();
        if data.len() > MAX_MSG {
            return Err(std::io::Error::other("message too long"));
        }
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|inner| send_raw(inner.get_ref().as_raw_fd(), &data, fd)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// The next message and its descriptor; `None` when the other end has closed.
    pub async fn recv(&self) -> std::io::Result<Option<(Msg, Option<OwnedFd>)>> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| recv_raw(inner.get_ref().as_raw_fd())) {
                Ok(Ok(None)) => return Ok(None),
                Ok(Ok(Some((data, fd)))) => match Msg::decode(&data) {
                    Some(m) => return Ok(Some((m, fd))),
                    // A malformed message is dropped (its descriptor closed with it).
                    None => continue,
                },
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Send without waiting (for log lines from any thread): `false` when the socket
    /// buffer is full or the other end is gone.
    pub fn try_send(&self, msg: &Msg) -> bool {
        send_raw(self.fd.get_ref().as_raw_fd(), &msg.encode(), None).is_ok()
    }

    /// Send from any thread, outside the runtime's wakeups: when the socket buffer is
    /// full (a burst of log lines), wait for room up to `patience` rather than lose the
    /// message. `false` when it could not be sent.
    pub fn send_blocking(&self, msg: &Msg, patience: std::time::Duration) -> bool {
        let data = msg.encode();
        let sock = self.fd.get_ref().as_raw_fd();
        let until = std::time::Instant::now() + patience;
        loop {
            match send_raw(sock, &data, None) {
                Ok(()) => return true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    use nix::poll::{PollFd, PollFlags, poll};
                    let mut p = [PollFd::new(self.fd.get_ref().as_fd(), PollFlags::POLLOUT)];
                    let _ = poll(&mut p, left.as_millis().min(1000) as u16);
                }
                Err(_) => return false,
            }
        }
    }

    /// Tell the other end that nothing more comes (it reads the end of the channel)
    /// while this end can still read what it has left to say.
    pub fn shutdown_write(&self) {
        let _ = nix::sys::socket::shutdown(
            self.fd.get_ref().as_raw_fd(),
            nix::sys::socket::Shutdown::Write,
        );
    }
}

impl AsRef<Channel> for Channel {
    fn as_ref(&self) -> &Channel {
        self
    }
}

/// Send every log line of this process over `ch` as a [`Msg::Log`] (see
/// [`super::relay_logs`]): for the login processes and the mail processes, which may
/// not open `log_path` themselves. A line waits (up to a second) for room in a full
/// socket buffer rather than being lost.
pub fn relay_logs_to<C: AsRef<Channel> + Send + Sync + 'static>(ch: std::sync::Arc<C>) {
    super::relay_logs(Box::new(move |level, text| {
        let _ = (*ch).as_ref().send_blocking(
            &Msg::Log {
                level: level.to_string(),
                text: text.to_string(),
            },
            std::time::Duration::from_secs(1),
        );
    }));
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let fl = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn send_raw(sock: RawFd, data: &[u8], fd: Option<RawFd>) -> std::io::Result<()> {
    let iov = [IoSlice::new(data)];
    let fds;
    let cmsgs: &[ControlMessage] = match fd {
        Some(f) => {
            fds = [f];
            &[ControlMessage::ScmRights(&fds)]
        }
        None => &[],
    };
    sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map(|_| ())
        .map_err(std::io::Error::from)
}

type Received = Option<(Vec<u8>, Option<OwnedFd>)>;

fn recv_raw(sock: RawFd) -> std::io::Result<Received> {
    let mut buf = vec![0u8; MAX_MSG];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let (n, truncated, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(std::io::Error::from)?;
        let mut fds: Vec<RawFd> = Vec::new();
        if let Ok(cm) = msg.cmsgs() {
            for c in cm {
                if let ControlMessageOwned::ScmRights(v) = c {
                    fds.extend(v);
                }
            }
        }
        (
            msg.bytes,
            msg.flags
                .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC),
            fds,
        )
    };
    // Each descriptor was just received and is owned by nobody else.
    let mut owned: Vec<OwnedFd> = fds.into_iter().map(crate::sys::take_inherited_fd).collect();
    if n == 0 && owned.is_empty() {
        return Ok(None);
    }
    if truncated || owned.len() > 1 {
        // Not a message this channel sends: drop it, descriptors closed.
        return Ok(Some((Vec::new(), None)));
    }
    buf.truncate(n);
    Ok(Some((buf, owned.pop())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(m: Msg) {
        assert_eq!(Msg::decode(&m.encode()), Some(m));
    }

    #[test]
    fn messages_roundtrip() {
        roundtrip(Msg::Login(LoginRequest {
            id: 7,
            session_id: "abc/+=".into(),
            remote: "127.0.0.1:4000".parse().unwrap(),
            local: "[::1]:110".parse().unwrap(),
            tls: true,
            method: "PLAIN".into(),
            tag: "a1".into(),
            creds: Credentials::Plain {
                user: "alice".into(),
                pass: "pa\0ss wörd".into(),
            },
            leftover: b"STAT\r\nLIST\r\n".to_vec(),
        }));
        roundtrip(Msg::Login(LoginRequest {
            id: u64::MAX,
            session_id: String::new(),
            remote: "10.0.0.1:1".parse().unwrap(),
            local: "10.0.0.2:2".parse().unwrap(),
            tls: false,
            method: "APOP".into(),
            tag: String::new(),
            creds: Credentials::Apop {
                user: "bob".into(),
                digest: "c4c9334bac560ecc979e58001b3e22fb".into(),
                challenge: "<1896.697170952@dbc.mtview.ca.us>".into(),
            },
            leftover: Vec::new(),
        }));
        roundtrip(Msg::Log {
            level: "Info".into(),
            text: "pop3-login: Disconnected".into(),
        });
        for v in [
            Verdict::Taken,
            Verdict::Failed,
            Verdict::Reply("-ERR x".into()),
            Verdict::ReplyClose("-ERR y".into()),
        ] {
            roundtrip(Msg::Verdict { id: 3, verdict: v });
        }
        roundtrip(Msg::Drain);
        roundtrip(Msg::Ended {
            session_id: "x/y".into(),
        });
        for home in [None, Some("/home/alice".to_string())] {
            roundtrip(Msg::Session {
                req: LoginRequest {
                    id: 9,
                    session_id: "s".into(),
                    remote: "127.0.0.1:4000".parse().unwrap(),
                    local: "127.0.0.1:143".parse().unwrap(),
                    tls: false,
                    method: "PLAIN".into(),
                    tag: "a".into(),
                    creds: Credentials::Plain {
                        user: "alice".into(),
                        pass: String::new(),
                    },
                    leftover: b"b SELECT INBOX\r\n".to_vec(),
                },
                user: "alice".into(),
                info: UserInfo {
                    user: "alice".into(),
                    uid: Some(1000),
                    gid: None,
                    home: home.clone(),
                    extra: vec![("mail".into(), "maildir:~/M".into())],
                },
            });
        }
    }

    #[test]
    fn truncated_or_unknown_messages_are_refused() {
        let full = Msg::Verdict {
            id: 1,
            verdict: Verdict::Reply("-ERR z".into()),
        }
        .encode();
        for cut in 0..full.len() {
            assert_eq!(Msg::decode(&full[..cut]), None, "cut {cut}");
        }
        assert_eq!(Msg::decode(b"Zjunk"), None);
    }

    #[tokio::test]
    async fn a_descriptor_travels_with_its_message() {
        use std::io::{Read, Write};
        let (a, b) = pair().unwrap();
        let (a, b) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
        let (mut x, y) = std::os::unix::net::UnixStream::pair().unwrap();
        a.send(&Msg::Drain, Some(y.as_raw_fd())).await.unwrap();
        drop(y);
        let (m, fd) = b.recv().await.unwrap().unwrap();
        assert_eq!(m, Msg::Drain);
        let mut y2 = std::os::unix::net::UnixStream::from(fd.expect("descriptor"));
        x.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        y2.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        drop(a);
        assert!(
            b.recv().await.unwrap().is_none(),
            "EOF after the peer closed"
        );
    }
}
