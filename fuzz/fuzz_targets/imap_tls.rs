//! STARTTLS (RFC 2595) and implicit TLS (`imaps`) of the IMAP login stage
//! (`login::imap::run`, as `imap-login`) through a real rustls handshake. The login stage
//! here is the connection task (not yet an I/O-free core): it runs on one end of a Unix
//! socketpair handed to it as its "TCP" stream (`common::stream_pair`: reads, writes,
//! shutdown and the TLS handshake are the same system calls; `local_addr` fails, and the
//! stage then uses the remote address), so that no loopback port is used.
//! `ssl = yes`, `disable_plaintext_auth = yes` (Dovecot's defaults); the login requests
//! go to a service that is gone (no verdict). The first byte picks:
//!  * bit 0 clear: greeting, `a STARTTLS`, its `a OK`, then the handshake; set: implicit
//!    TLS from the start;
//!  * bit 1 clear: the rest is raw bytes where the ClientHello belongs; set: a real
//!    handshake (rustls client), then the rest as IMAP commands inside TLS (a second
//!    STARTTLS, LOGIN, AUTHENTICATE …).
//!
//! The client half-closes after sending and reads every reply; the session must end.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::config::dovecot::DovecotConf;
use postern::login::process::LoginCtl;
use postern::login::{LoginConf, Protocol};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[path = "common.rs"]
mod common;

struct Setup {
    rt: tokio::runtime::Runtime,
    login: Arc<LoginConf>,
    ctl: Arc<LoginCtl>,
    client: Arc<rustls::ClientConfig>,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        // The service end of the hand-off channel is closed: a login request's send fails
        // with EPIPE (which must not end the process).
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let dir = common::scratch("imap-tls");
        let ck = rcgen::generate_simple_self_signed(vec!["mail.example.com".into()])
            .expect("certificate");
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).expect("cert.pem");
        std::fs::write(dir.join("key.pem"), ck.key_pair.serialize_pem()).expect("key.pem");
        let conf = format!(
            "protocols = imap\nlisten = 127.0.0.1\nssl = yes\n\
             ssl_cert = <{0}/cert.pem\nssl_key = <{0}/key.pem\n\
             auth_mechanisms = plain login\nauth_failure_delay = 0\nlog_path = /dev/null\n\
             passdb {{\n  driver = passwd-file\n  args = {0}/users\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {0}/users\n}}\n",
            dir.display()
        );
        let conf = DovecotConf::from_str(&conf, &dir.join("dovecot.conf")).expect("dovecot.conf");
        let login = LoginConf::from_conf(&conf, Protocol::Imap).expect("login settings");
        assert!(login.tls.is_some(), "ssl_cert gives a TLS configuration");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let ctl = {
            let _g = rt.enter();
            let (ours, service) = postern::login::handoff::pair().expect("hand-off pair");
            drop(service);
            Arc::new(LoginCtl::new(
                postern::login::handoff::Channel::new(ours).expect("channel"),
            ))
        };
        Setup {
            rt,
            login: Arc::new(login),
            ctl,
            client: postern::delivery::smtp::tls::unauthenticated().expect("client config"),
        }
    })
}

/// Read lines until one that starts with `tag ` (or the end).
async fn read_tagged<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R, tag: &str) -> Option<String> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line.starts_with(tag) {
            return Some(line);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let s = setup();
    let implicit = mode & 1 == 1;
    let real = mode & 2 == 2;
    let remote = SocketAddr::from(([192, 0, 2, 7], 40993));
    let (ours, server) = common::stream_pair();
    s.rt.block_on(async {
        let server = tokio::net::TcpStream::from_std(server).expect("server socket");
        let session = tokio::spawn(postern::login::imap::run(
            server,
            remote,
            implicit,
            s.login.clone(),
            s.ctl.clone(),
        ));
        let mut client =
            BufReader::new(tokio::net::UnixStream::from_std(ours).expect("client socket"));
        if !implicit {
            let ok = async {
                read_tagged(&mut client, "* ").await?;
                client.get_mut().write_all(b"a STARTTLS\r\n").await.ok()?;
                read_tagged(&mut client, "a ")
                    .await
                    .filter(|r| r.starts_with("a OK"))
            }
            .await;
            if ok.is_none() {
                drop(client);
                session.await.expect("session task");
                return;
            }
        }
        let mut client = client.into_inner();
        if real {
            let name = rustls::pki_types::ServerName::try_from("mail.example.com")
                .expect("name")
                .to_owned();
            let connector = tokio_rustls::TlsConnector::from(s.client.clone());
            let tls = connector.connect(name, client).await;
            assert!(tls.is_ok(), "a real handshake completes: {:?}", tls.err());
            if let Ok(tls) = tls {
                let (mut rd, mut wr) = tokio::io::split(tls);
                let send = async {
                    let _ = wr.write_all(rest).await;
                    let _ = wr.shutdown().await;
                };
                let mut replies = Vec::new();
                let recv = rd.read_to_end(&mut replies);
                let (_, _) = tokio::join!(send, recv);
            }
        } else {
            let (mut rd, mut wr) = client.split();
            let send = async {
                let _ = wr.write_all(rest).await;
                let _ = wr.shutdown().await;
            };
            let mut replies = Vec::new();
            let recv = rd.read_to_end(&mut replies);
            let (_, _) = tokio::join!(send, recv);
        }
        session.await.expect("session task");
    });
});
