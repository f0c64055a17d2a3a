// Shared by the fuzz targets (included with `#[path]`, not a crate of its own).

/// Table-opening options that drop warnings: a fuzzer makes millions of bad lines.
#[allow(dead_code)]
pub fn quiet_map_options() -> postern::maps::OpenOptions {
    postern::maps::OpenOptions {
        warn: std::sync::Arc::new(|_: &str| {}),
        ..Default::default()
    }
}

/// `data` cut at the first NUL: the text before it, and the lines after it (lookup keys,
/// at most `max`, each at most 256 bytes).
#[allow(dead_code)]
pub fn split_keys(data: &[u8], max: usize) -> (&[u8], Vec<String>) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => {
            let keys = String::from_utf8_lossy(&data[i + 1..])
                .split('\n')
                .take(max)
                .map(|k| k.chars().take(256).collect())
                .collect();
            (&data[..i], keys)
        }
        None => (data, vec!["user@example.com".into(), "192.0.2.1".into()]),
    }
}

/// A fresh scratch directory for this process (on tmpfs when there is one: the mailbox
/// code fsyncs, which costs nothing there), emptied on each call.
#[allow(dead_code)]
pub fn scratch(name: &str) -> std::path::PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("postern-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// With `$FUZZ_LAST_INPUT` set, write each input there before running it: a run killed
/// by a signal libFuzzer cannot catch (a stack overflow: libFuzzer's SIGSEGV handler has
/// no alternate stack) leaves no artifact, but leaves this file.
#[allow(dead_code)]
pub fn note_input(data: &[u8]) {
    use std::sync::OnceLock;
    static PATH: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    if let Some(p) = PATH.get_or_init(|| std::env::var_os("FUZZ_LAST_INPUT").map(Into::into)) {
        let _ = std::fs::write(p, data);
    }
}

/// A connected pair of stream sockets for a server that takes a TCP stream: the client's
/// end (a Unix stream) and the server's end as a `std::net::TcpStream`, both non-blocking
/// (for tokio's `from_std`). A Unix socketpair, not loopback TCP: at thousands of runs a
/// second, loopback connections leave tens of thousands in TIME_WAIT and use up the
/// ephemeral ports (other programs' connections then fail). SIGPIPE is ignored from the
/// first call on. The servers here only read,
/// write and shut down their stream, and take the addresses as arguments; `local_addr`
/// and `set_nodelay` fail on it (AF_UNIX), which they ignore.
#[allow(dead_code)]
pub fn stream_pair() -> (std::os::unix::net::UnixStream, std::net::TcpStream) {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // A write to a Unix socket whose peer is gone raises SIGPIPE (a TCP socket's does not:
    // Rust and tokio send with MSG_NOSIGNAL there), and libFuzzer's main does not ignore
    // it: the process would die where the TCP version got EPIPE.
    static IGNORE_SIGPIPE: std::sync::Once = std::sync::Once::new();
    // SAFETY: setting a signal's disposition to SIG_IGN touches no memory of this process.
    IGNORE_SIGPIPE.call_once(|| unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    });
    let (client, server) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    client.set_nonblocking(true).expect("nonblocking");
    server.set_nonblocking(true).expect("nonblocking");
    // SAFETY: the descriptor is a connected stream socket owned by nothing else; a
    // TcpStream's reads, writes and shutdown are the same system calls on it.
    let server = unsafe { std::net::TcpStream::from_raw_fd(server.into_raw_fd()) };
    (client, server)
}

/// A self-signed certificate for `name` (made with rcgen) written to `dir` as `cert.pem`
/// and `key.pem`, for the TLS targets' server settings.
#[allow(dead_code)]
pub fn self_signed(dir: &std::path::Path, name: &str) {
    let ck = rcgen::generate_simple_self_signed(vec![name.into()]).expect("certificate");
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).expect("cert.pem");
    std::fs::write(dir.join("key.pem"), ck.key_pair.serialize_pem()).expect("key.pem");
}

/// A login stage's settings with TLS (pop3_tls, imap_tls): `ssl = yes`,
/// `disable_plaintext_auth = yes` (Dovecot's defaults), the certificate of
/// [`self_signed`] for `mail.example.com`, plain and login mechanisms, no failure delay;
/// and the client's settings for a real handshake with it.
#[allow(dead_code)]
pub struct LoginTls {
    pub login: std::sync::Arc<postern::login::LoginConf>,
    pub client: std::sync::Arc<rustls::ClientConfig>,
}

#[allow(dead_code)]
pub fn login_tls(protocol: postern::login::Protocol) -> LoginTls {
    let name = match protocol {
        postern::login::Protocol::Imap => "imap",
        postern::login::Protocol::Pop3 => "pop3",
    };
    let dir = scratch(&format!("{name}-tls"));
    self_signed(&dir, "mail.example.com");
    let conf = format!(
        "protocols = {name}\nlisten = 127.0.0.1\nssl = yes\n\
         ssl_cert = <{0}/cert.pem\nssl_key = <{0}/key.pem\n\
         auth_mechanisms = plain login\nauth_failure_delay = 0\nlog_path = /dev/null\n\
         passdb {{\n  driver = passwd-file\n  args = {0}/users\n}}\n\
         userdb {{\n  driver = passwd-file\n  args = {0}/users\n}}\n",
        dir.display()
    );
    let conf = postern::config::dovecot::DovecotConf::from_str(&conf, &dir.join("dovecot.conf"))
        .expect("dovecot.conf");
    let login = postern::login::LoginConf::from_conf(&conf, protocol).expect("login settings");
    assert!(login.tls.is_some(), "ssl_cert gives a TLS configuration");
    LoginTls {
        login: std::sync::Arc::new(login),
        client: postern::delivery::smtp::tls::unauthenticated().expect("client config"),
    }
}

/// Move what one side has to send to the other; `false` when the receiver rejects it.
#[allow(dead_code)]
pub fn pump(from: &mut rustls::Connection, to: &mut rustls::Connection) -> bool {
    let mut buf = Vec::new();
    while from.wants_write() {
        if from.write_tls(&mut buf).is_err() {
            return false;
        }
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        match to.read_tls(&mut rd) {
            Ok(0) => break,
            Ok(_) => {
                if to.process_new_packets().is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

/// The server's side of a TLS handshake with `cfg` (a login core's
/// `Action::StartTls`), in memory: with `real`, a rustls client's handshake, which must
/// complete (the connection pair for what follows is returned); else `raw` where the
/// ClientHello belongs, which must not complete it (no key exchange can come from
/// arbitrary bytes) nor panic (`None`: the handshake failed, the client is gone).
#[allow(dead_code)]
pub fn handshake(
    cfg: std::sync::Arc<rustls::ServerConfig>,
    client: &std::sync::Arc<rustls::ClientConfig>,
    real: bool,
    raw: &[u8],
) -> Option<(Box<rustls::Connection>, Box<rustls::Connection>)> {
    use rustls::{ClientConnection, Connection, ServerConnection};
    let mut server = Box::new(Connection::Server(
        ServerConnection::new(cfg).expect("server connection"),
    ));
    if real {
        let name = rustls::pki_types::ServerName::try_from("mail.example.com")
            .expect("name")
            .to_owned();
        let mut client = Box::new(Connection::Client(
            ClientConnection::new(client.clone(), name).expect("client connection"),
        ));
        let mut rounds = 0;
        while (client.is_handshaking() || server.is_handshaking()) && rounds < 10 {
            rounds += 1;
            if !pump(client.as_mut(), server.as_mut()) || !pump(server.as_mut(), client.as_mut()) {
                break;
            }
        }
        assert!(
            !client.is_handshaking() && !server.is_handshaking(),
            "a real handshake with the login stage's certificate completes"
        );
        return Some((server, client));
    }
    let mut rd = raw;
    let mut failed = false;
    while !rd.is_empty() && !failed {
        match server.read_tls(&mut rd) {
            Ok(0) => break,
            Ok(_) => failed = server.process_new_packets().is_err(),
            Err(_) => failed = true,
        }
    }
    // An alert for the client, as a real server would write it.
    let mut alert = Vec::new();
    while server.wants_write() && server.write_tls(&mut alert).is_ok() {}
    assert!(
        failed || server.is_handshaking(),
        "a handshake completed from arbitrary bytes"
    );
    None
}

/// Run a login stage's I/O-free core (`login::pop3::PreLogin`, `login::imap::PreLogin`)
/// through STARTTLS or implicit TLS in memory (pop3_tls, imap_tls): `plain` is what the
/// client sends before the handshake (`None`: implicit TLS, the core starts with it);
/// then [`handshake`] (`real`, else `rest` as the ClientHello), then `rest` as commands
/// inside TLS, each login request answered with no verdict, then the end of the input.
/// The core must ask for the handshake exactly once, its replies inside TLS must reach
/// the client decrypted, and it must close.
#[allow(dead_code)]
pub fn drive_tls_login(
    c: &mut impl postern::login::task::Core,
    session_id: &str,
    client_cfg: &std::sync::Arc<rustls::ClientConfig>,
    mut plain: Option<&[u8]>,
    real: bool,
    rest: &[u8],
) {
    use postern::login::task::Action;
    use std::io::{Read, Write};
    // The client's side of the connection: plain until the handshake, then TLS.
    enum Peer {
        Plain,
        Tls {
            server: Box<rustls::Connection>,
            client: Box<rustls::Connection>,
        },
        Gone,
    }
    let mut sent_rest = false;
    let mut peer = Peer::Plain;
    let mut handshakes = 0;
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 100_000, "the login core does not end");
        match c.next() {
            Action::Sleep(_) => {}
            Action::Send(b) => match &mut peer {
                Peer::Plain => {}
                Peer::Tls { server, client } => {
                    let ok = server.writer().write_all(&b).is_ok()
                        && pump(server.as_mut(), client.as_mut());
                    let mut got = Vec::new();
                    let _ = client.reader().read_to_end(&mut got);
                    if !ok {
                        peer = Peer::Gone;
                        c.output_lost();
                    } else {
                        assert_eq!(got, b, "a reply inside TLS reaches the client as sent");
                    }
                }
                Peer::Gone => c.output_lost(),
            },
            Action::Read { .. } => match (&mut peer, plain.take()) {
                (Peer::Plain, Some(p)) => c.received(p),
                (Peer::Tls { server, client }, None) if !sent_rest => {
                    sent_rest = true;
                    let _ = client.writer().write_all(rest);
                    let mut got = Vec::new();
                    if pump(client.as_mut(), server.as_mut()) {
                        let _ = server.reader().read_to_end(&mut got);
                    }
                    if got.is_empty() {
                        c.input_ended();
                    } else {
                        c.received(&got);
                    }
                }
                _ => c.input_ended(),
            },
            Action::StartTls { cfg, .. } => {
                handshakes += 1;
                assert_eq!(handshakes, 1, "the core asks for a second TLS handshake");
                let up = match handshake(cfg, client_cfg, real, rest) {
                    Some((server, client)) => {
                        peer = Peer::Tls { server, client };
                        true
                    }
                    None => {
                        peer = Peer::Gone;
                        false
                    }
                };
                c.tls_result(up);
            }
            Action::Login(req) => {
                assert_eq!(req.session_id, session_id);
                assert!(req.tls, "a login request after the handshake says TLS");
                c.verdict(None);
            }
            Action::Close => break,
        }
    }
}
