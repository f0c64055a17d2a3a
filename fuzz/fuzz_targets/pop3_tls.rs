//! STLS (RFC 2595) and implicit TLS (`pop3s`) of the POP3 login stage's core
//! (`login::pop3::PreLogin`, as `pop3-login`) through a real rustls handshake, in memory
//! (rustls's `ServerConnection` with the certificate of `ssl_cert`, made at start with
//! rcgen; no socket). `ssl = yes`, `disable_plaintext_auth = yes` (Dovecot's defaults):
//! USER/PASS and AUTH PLAIN are allowed only after the handshake. The first byte picks:
//!  * bit 0 clear: `CAPA`, `STLS`, then the handshake; set: implicit TLS from the start;
//!  * bit 1 clear: the rest is raw bytes where the ClientHello belongs (the server side of
//!    the handshake fed arbitrary bytes: it must fail, and the core close the session);
//!    set: a real handshake (rustls client), then the rest as POP3 commands inside TLS (a
//!    second STLS, USER/PASS, AUTH … whose login request gets no verdict).
//!
//! The core must ask for the handshake exactly once, and its replies inside TLS must
//! reach the client decrypted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::config::dovecot::DovecotConf;
use postern::login::pop3::{Action, PreLogin};
use postern::login::{LoginConf, Protocol};
use rustls::{ClientConnection, Connection, ServerConnection};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

#[path = "common.rs"]
mod common;

struct Setup {
    login: Arc<LoginConf>,
    client: Arc<rustls::ClientConfig>,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let dir = common::scratch("pop3-tls");
        let ck = rcgen::generate_simple_self_signed(vec!["mail.example.com".into()])
            .expect("certificate");
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).expect("cert.pem");
        std::fs::write(dir.join("key.pem"), ck.key_pair.serialize_pem()).expect("key.pem");
        let conf = format!(
            "protocols = pop3\nlisten = 127.0.0.1\nssl = yes\n\
             ssl_cert = <{0}/cert.pem\nssl_key = <{0}/key.pem\n\
             auth_mechanisms = plain login\nauth_failure_delay = 0\nlog_path = /dev/null\n\
             passdb {{\n  driver = passwd-file\n  args = {0}/users\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {0}/users\n}}\n",
            dir.display()
        );
        let conf = DovecotConf::from_str(&conf, &dir.join("dovecot.conf")).expect("dovecot.conf");
        let login = LoginConf::from_conf(&conf, Protocol::Pop3).expect("login settings");
        assert!(login.tls.is_some(), "ssl_cert gives a TLS configuration");
        Setup {
            login: Arc::new(login),
            client: postern::delivery::smtp::tls::unauthenticated().expect("client config"),
        }
    })
}

/// Move what one side has to send to the other; `false` when the receiver rejects it.
fn pump(from: &mut Connection, to: &mut Connection) -> bool {
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

/// The client's side of the connection: plain until the handshake, then TLS.
enum Peer {
    Plain,
    Tls {
        server: Box<Connection>,
        client: Box<Connection>,
    },
    Gone,
}

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let s = setup();
    let implicit = mode & 1 == 1;
    let real = mode & 2 == 2;
    let remote = SocketAddr::from(([192, 0, 2, 7], 40995));
    let local = SocketAddr::from(([192, 0, 2, 1], if implicit { 995 } else { 110 }));
    let mut c = PreLogin::new(s.login.clone(), remote, local, implicit);
    // Plain input still to give the core (before STLS), and whether the rest was sent.
    let mut plain: Option<&[u8]> = (!implicit).then_some(&b"CAPA\r\nSTLS\r\n"[..]);
    let mut sent_rest = false;
    let mut peer = Peer::Plain;
    let mut handshakes = 0;
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 100_000, "the POP3 login core does not end");
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
                let mut server = Box::new(Connection::Server(
                    ServerConnection::new(cfg).expect("server connection"),
                ));
                let up = if real {
                    let name = rustls::pki_types::ServerName::try_from("mail.example.com")
                        .expect("name")
                        .to_owned();
                    let mut client = Box::new(Connection::Client(
                        ClientConnection::new(s.client.clone(), name).expect("client connection"),
                    ));
                    let mut rounds = 0;
                    while (client.is_handshaking() || server.is_handshaking()) && rounds < 10 {
                        rounds += 1;
                        if !pump(client.as_mut(), server.as_mut())
                            || !pump(server.as_mut(), client.as_mut())
                        {
                            break;
                        }
                    }
                    assert!(
                        !client.is_handshaking() && !server.is_handshaking(),
                        "a real handshake with the login stage's certificate completes"
                    );
                    peer = Peer::Tls { server, client };
                    true
                } else {
                    // Arbitrary bytes where the ClientHello belongs: the handshake must not
                    // complete (no key exchange can come from them) and must not panic.
                    let mut rd = rest;
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
                    peer = Peer::Gone;
                    !failed && !server.is_handshaking()
                };
                c.tls_result(up);
            }
            Action::Login(req) => {
                assert_eq!(req.session_id, c.session_id());
                assert!(req.tls, "a login request after the handshake says TLS");
                c.verdict(None);
            }
            Action::Close => break,
        }
    }
});
