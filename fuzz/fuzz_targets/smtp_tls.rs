//! STARTTLS and the TLS layer of smtpd over a socketpair (`common::stream_pair`: no
//! loopback port, no TIME_WAIT) with a real handshake (a self-signed certificate made at
//! start, `smtpd_tls_security_level = may`). The first byte picks:
//!  * 0: `EHLO`, `STARTTLS`, then the rest as raw bytes where the ClientHello belongs (the
//!    server-side handshake fed arbitrary bytes);
//!  * 1: the same raw bytes on a `smtpd_tls_wrappermode = yes` service (SMTPS);
//!  * 2: `EHLO`, `STARTTLS`, a real handshake (rustls client), then the rest as SMTP
//!    commands inside TLS (a second STARTTLS, AUTH, DATA … after the handshake);
//!  * 3: the same on the wrapper-mode service.
//!
//! The client half-closes after sending and reads every reply; the session must end.
//! `smtpd_error_sleep_time = 0` as in `smtp_session`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::config::{maincf, mastercf, postfix::PostfixConfig};
use postern::smtpd::SmtpdService;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[path = "common.rs"]
mod common;

struct Setup {
    rt: tokio::runtime::Runtime,
    starttls: Arc<SmtpdService>,
    wrapper: Arc<SmtpdService>,
    queue: std::path::PathBuf,
    client: Arc<rustls::ClientConfig>,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let dir = common::scratch("smtp-tls");
        let queue = dir.join("queue");
        common::self_signed(&dir, "mx.example.com");
        let main = format!(
            "queue_directory = {0}\nmyhostname = mx.example.com\nmydomain = example.com\n\
             mydestination = $myhostname, localhost\nmynetworks = 127.0.0.0/8\n\
             smtpd_peername_lookup = no\nmaillog_file_prefixes = /dev\nmaillog_file = /dev/null\n\
             smtpd_tls_cert_file = {1}/cert.pem\nsmtpd_tls_key_file = {1}/key.pem\n\
             smtpd_tls_security_level = may\nsmtpd_sasl_auth_enable = yes\n\
             cyrus_sasl_config_path = {1}\nlocal_recipient_maps =\n\
             smtpd_soft_error_limit = 100\nsmtpd_hard_error_limit = 200\n\
             smtpd_timeout = 30s\nsmtpd_starttls_timeout = 30s\nsmtpd_error_sleep_time = 0\n",
            queue.display(),
            dir.display()
        );
        std::fs::write(
            dir.join("smtpd.conf"),
            format!(
                "pwcheck_method: saslauthd\nmech_list: PLAIN LOGIN\nsaslauthd_path: {}/none/mux\n",
                dir.display()
            ),
        )
        .expect("smtpd.conf");
        let config = |extra: &str| {
            let main =
                maincf::parse(&format!("{main}{extra}"), &dir.join("main.cf")).expect("main.cf");
            let master = mastercf::parse("", &dir.join("master.cf")).expect("master.cf");
            PostfixConfig::from_main(main, master)
        };
        postern::log::configure(&config("")).expect("maillog_file");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (starttls, wrapper) = {
            let _g = rt.enter();
            (
                SmtpdService::new(config(""), "smtp").expect("smtpd service"),
                SmtpdService::new(config("smtpd_tls_wrappermode = yes\n"), "smtps")
                    .expect("smtps service"),
            )
        };
        Setup {
            rt,
            starttls,
            wrapper,
            queue,
            client: postern::delivery::smtp::tls::unauthenticated().expect("client config"),
        }
    })
}

/// Read reply lines until the last line of one reply (`NNN ` or a bare code).
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Option<String> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return Some(line);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let s = setup();
    if RUNS.fetch_add(1, Ordering::Relaxed) % 256 == 255 {
        for sub in ["incoming", "maildrop"] {
            if let Ok(rd) = std::fs::read_dir(s.queue.join(sub)) {
                for e in rd.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    let wrapper = mode & 1 == 1;
    let handshake = mode & 2 == 2;
    let (client, server) = common::stream_pair();
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40465));
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], if wrapper { 465 } else { 25 }));
    s.rt.block_on(async {
        let server = tokio::net::TcpStream::from_std(server).expect("server socket");
        let svc = if wrapper { &s.wrapper } else { &s.starttls };
        let session = tokio::spawn(svc.clone().handle(server, peer, local));
        let mut client =
            BufReader::new(tokio::net::UnixStream::from_std(client).expect("client socket"));
        if !wrapper {
            // Banner, EHLO, STARTTLS: the handshake starts where the fuzzer's bytes go.
            let ok = async {
                read_reply(&mut client).await?;
                client
                    .get_mut()
                    .write_all(b"EHLO fuzz.example\r\n")
                    .await
                    .ok()?;
                read_reply(&mut client).await?;
                client.get_mut().write_all(b"STARTTLS\r\n").await.ok()?;
                read_reply(&mut client)
                    .await
                    .filter(|r| r.starts_with("220"))
            }
            .await;
            if ok.is_none() {
                drop(client);
                session.await.expect("session task");
                return;
            }
        }
        let mut client = client.into_inner();
        if handshake {
            let name = rustls::pki_types::ServerName::try_from("mx.example.com")
                .expect("name")
                .to_owned();
            let connector = tokio_rustls::TlsConnector::from(s.client.clone());
            if let Ok(tls) = connector.connect(name, client).await {
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
            client.shutdown().await.ok();
        }
        session.await.expect("session task");
    });
});
