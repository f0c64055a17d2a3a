//! Raw protocol clients for transcript tests, one per protocol: send the client's lines
//! byte for byte and read whole replies (multi-line SMTP replies, POP3's dot-terminated
//! ones, IMAP's tagged ones with their literals), with read timeouts so that a silent
//! server fails the test instead of hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A TCP connection to 127.0.0.1:`port` from the loopback source address `src`
/// (127.0.0.2 plays a foreign or non-secured client; std has no bind-before-connect).
pub fn connect_from(src: &str, port: u16) -> TcpStream {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .expect("socket");
    let local: std::net::SocketAddrV4 = format!("{src}:0").parse().expect("source address");
    bind(fd.as_raw_fd(), &SockaddrIn::from(local)).expect("bind");
    let remote: std::net::SocketAddrV4 = format!("127.0.0.1:{port}").parse().expect("address");
    connect(fd.as_raw_fd(), &SockaddrIn::from(remote))
        .unwrap_or_else(|e| panic!("connect {src} -> 127.0.0.1:{port}: {e}"));
    TcpStream::from(fd)
}

/// A raw SMTP client for transcript tests: send lines, read whole (multi-line) replies.
pub struct Smtp {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

impl Smtp {
    pub fn connect(port: u16) -> Smtp {
        Self::connect_from("127.0.0.1", port)
    }
    /// Connect from a given loopback source address (127.0.0.2 plays a foreign client).
    pub fn connect_from(src: &str, port: u16) -> Smtp {
        let sock = connect_from(src, port);
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Smtp {
            r: BufReader::new(sock.try_clone().unwrap()),
            w: sock,
        }
    }
    pub fn send(&mut self, data: &str) {
        self.w.write_all(data.as_bytes()).unwrap();
    }
    pub fn cmd(&mut self, line: &str) -> Vec<String> {
        self.send(&format!("{line}\r\n"));
        self.reply()
    }
    /// One reply, all its lines, without CRLF.
    pub fn reply(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let mut l = String::new();
            if self.r.read_line(&mut l).unwrap_or(0) == 0 {
                out.push("<EOF>".to_string());
                return out;
            }
            let l = l.trim_end_matches(['\r', '\n']).to_string();
            let more = l.as_bytes().get(3) == Some(&b'-');
            out.push(l);
            if !more {
                return out;
            }
        }
    }
    /// The last line of the next reply.
    pub fn line(&mut self) -> String {
        self.reply().pop().unwrap_or_default()
    }
}

/// A raw POP3 client that knows which replies are multi-line.
pub struct Pop {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

impl Pop {
    /// Connect; the client and the greeting.
    pub fn connect(port: u16) -> (Pop, String) {
        Self::connect_from("127.0.0.1", port)
    }
    /// Connect from a given loopback source address (to test non-secured clients).
    pub fn connect_from(src: &str, port: u16) -> (Pop, String) {
        let sock = connect_from(src, port);
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut p = Pop {
            r: BufReader::new(sock.try_clone().expect("clone")),
            w: sock,
        };
        let g = p.line();
        (p, g)
    }
    /// One line without CRLF.
    pub fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).expect("read");
        l.trim_end_matches(['\r', '\n']).to_string()
    }
    /// Send `cmd`, return the reply (all lines of a multi-line one, `.` included).
    pub fn cmd(&mut self, cmd: &str) -> Vec<String> {
        self.w
            .write_all(format!("{cmd}\r\n").as_bytes())
            .expect("write");
        let first = self.line();
        let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let args = cmd.split(' ').count() - 1;
        let multi = first.starts_with("+OK")
            && match verb.as_str() {
                "CAPA" | "RETR" | "TOP" => true,
                "LIST" | "UIDL" | "AUTH" => args == 0,
                _ => false,
            };
        let mut out = vec![first];
        if multi {
            loop {
                let l = self.line();
                let end = l == ".";
                out.push(l);
                if end {
                    break;
                }
            }
        }
        out
    }
}

/// A raw IMAP client: commands with generated tags, replies as lines (a literal's bytes
/// kept inside the line that announced it).
pub struct Imap {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
    pub n: u32,
}

impl Imap {
    pub fn connect(port: u16) -> (Imap, String) {
        let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut c = Imap {
            r: BufReader::new(sock.try_clone().expect("clone")),
            w: sock,
            n: 0,
        };
        let g = c.line().expect("greeting");
        (c, g)
    }

    /// Connect and `LOGIN user secret` (the password of the tests' passwd-files).
    pub fn login(port: u16, user: &str) -> Imap {
        let (mut c, _) = Imap::connect(port);
        let r = c.cmd(&format!("LOGIN {user} secret"));
        assert!(r.last().is_some_and(|l| l.contains(" OK ")), "{r:?}");
        c
    }

    /// One response line with the literals it announces; `None` at EOF.
    pub fn line(&mut self) -> Option<String> {
        let mut out: Vec<u8> = Vec::new();
        loop {
            let mut l = Vec::new();
            let n = self.r.read_until(b'\n', &mut l).ok()?;
            if n == 0 {
                return if out.is_empty() {
                    None
                } else {
                    Some(String::from_utf8_lossy(&out).into_owned())
                };
            }
            out.extend_from_slice(&l);
            let t = String::from_utf8_lossy(&l).into_owned();
            let t = t.trim_end_matches(['\r', '\n']);
            let lit = t
                .strip_suffix('}')
                .and_then(|x| x.rsplit_once('{'))
                .and_then(|(_, n)| n.parse::<usize>().ok());
            match lit {
                Some(n) => {
                    let mut buf = vec![0u8; n];
                    self.r.read_exact(&mut buf).ok()?;
                    out.extend_from_slice(&buf);
                }
                None => {
                    while out.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                        out.pop();
                    }
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
            }
        }
    }

    pub fn send(&mut self, data: &[u8]) {
        self.w.write_all(data).expect("write");
    }

    /// Send `TAG text` and read up to the tagged reply (or a continuation request).
    pub fn cmd(&mut self, text: &str) -> Vec<String> {
        self.n += 1;
        let tag = format!("t{}", self.n);
        self.send(format!("{tag} {text}\r\n").as_bytes());
        self.until(&tag)
    }

    /// Lines up to the one tagged `tag` (or a `+` continuation, or EOF).
    pub fn until(&mut self, tag: &str) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = self.line() {
            let done = l.starts_with(&format!("{tag} ")) || l.starts_with('+');
            out.push(l);
            if done {
                break;
            }
        }
        out
    }
}
