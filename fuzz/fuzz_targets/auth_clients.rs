//! The client side of the authentication protocols, fed arbitrary server answers: the
//! first byte picks the client, the rest is what a fake server (a task on a Unix socket or
//! a loopback TCP port) writes to each connection before it half-closes and reads the
//! client's request to the end.
//!  * 0: smtpd's saslauthd client (`pwcheck_method: saslauthd`, libsasl's
//!    `saslauthd_verify_password`: the counted reply, `OK`/`NO` text);
//!  * 1: smtpd's Dovecot auth client (`smtpd_sasl_type = dovecot`): the handshake
//!    (`VERSION`, `MECH` … `DONE`) as `dovecot_authenticator` reads it, then one AUTH PLAIN
//!    with its `OK`/`FAIL`/`CONT` answer;
//!  * 2: saslauthd's `rimap` mechanism (an IMAP server's greeting, then the tagged answer
//!    to `LOGIN`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::auth::rimap::Rimap;
use postern::auth::sasl::{Authenticator, Saslauthd};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[path = "common.rs"]
mod common;

struct Setup {
    rt: tokio::runtime::Runtime,
    dir: PathBuf,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| Setup {
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime"),
        dir: common::scratch("auth-clients"),
    })
}

/// What the fake server does with one connection: write the answer, half-close, read the
/// request (bounded) until the client closes.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, data: Arc<Vec<u8>>) {
    let _ = s.write_all(&data).await;
    let _ = s.shutdown().await;
    let mut sink = Vec::new();
    let _ = (&mut s).take(1 << 16).read_to_end(&mut sink).await;
}

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let Some((&which, answer_bytes)) = data.split_first() else {
        return;
    };
    let s = setup();
    let answer_bytes = Arc::new(answer_bytes.to_vec());
    s.rt.block_on(async {
        match which % 3 {
            0 | 1 => {
                let sock = s.dir.join("auth");
                let _ = std::fs::remove_file(&sock);
                let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
                let a = answer_bytes.clone();
                let server = tokio::spawn(async move {
                    while let Ok((c, _)) = listener.accept().await {
                        tokio::spawn(answer(c, a.clone()));
                    }
                });
                if which % 3 == 0 {
                    let client = Saslauthd {
                        socket: sock.clone(),
                        mechs: vec!["PLAIN".into(), "LOGIN".into()],
                    };
                    let _ = client
                        .check("alice".into(), "secret".into(), "smtp".into(), "".into())
                        .await;
                } else if let Ok(client) =
                    postern::auth::dovecot_proto::dovecot_authenticator(&sock).await
                {
                    let _ = client.mechanisms();
                    let _ = client
                        .check("alice".into(), "secret".into(), "smtp".into(), "".into())
                        .await;
                }
                server.abort();
            }
            _ => {
                // At thousands of runs a second the loopback's ephemeral ports run out
                // (each run leaves a connection in TIME_WAIT): EADDRINUSE here is the
                // machine's limit, not a finding, so such a run is skipped.
                let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
                    return;
                };
                let addr = listener.local_addr().expect("address");
                let a = answer_bytes.clone();
                let server = tokio::spawn(async move {
                    while let Ok((c, _)) = listener.accept().await {
                        tokio::spawn(answer(c, a.clone()));
                    }
                });
                let rimap = Rimap {
                    host: "localhost".into(),
                    addrs: vec![addr],
                };
                let reply = tokio::task::spawn_blocking(move || {
                    rimap.check(b"alice", b"secret", &|_: &str| {})
                })
                .await
                .expect("rimap check");
                assert!(
                    reply.starts_with("OK") || reply.starts_with("NO"),
                    "a saslauthd reply is OK or NO: {reply:?}"
                );
                server.abort();
            }
        }
    });
});
