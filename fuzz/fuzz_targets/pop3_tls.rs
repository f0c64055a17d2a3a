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
//! reach the client decrypted (`common::drive_tls_login`, shared with imap_tls).
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::login::Protocol;
use postern::login::pop3::PreLogin;
use std::net::SocketAddr;
use std::sync::OnceLock;

#[path = "common.rs"]
mod common;

fn setup() -> &'static common::LoginTls {
    static S: OnceLock<common::LoginTls> = OnceLock::new();
    S.get_or_init(|| common::login_tls(Protocol::Pop3))
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
    let id = c.session_id().to_string();
    let plain = (!implicit).then_some(&b"CAPA\r\nSTLS\r\n"[..]);
    common::drive_tls_login(&mut c, &id, &s.client, plain, real, rest);
});
