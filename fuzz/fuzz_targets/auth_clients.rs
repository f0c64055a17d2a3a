//! The client side of the authentication protocols, fed arbitrary server answers: the
//! first byte picks the client, the rest is what a fake server writes to each connection
//! before it half-closes and reads the client's request to the end.
//!  * 0: smtpd's saslauthd client (`pwcheck_method: saslauthd`, libsasl's
//!    `saslauthd_verify_password`: the counted reply, `OK`/`NO` text);
//!  * 1: smtpd's Dovecot auth client (`smtpd_sasl_type = dovecot`): the handshake
//!    (`VERSION`, `MECH` … `DONE`) as `dovecot_authenticator` reads it, then one AUTH PLAIN
//!    with its `OK`/`FAIL`/`CONT` answer;
//!  * 2: saslauthd's `rimap` mechanism (an IMAP server's greeting, then the tagged answer
//!    to `LOGIN`), [`postern::auth::rimap::exchange`] on one end of a socketpair.
//!
//! No loopback port is used: saslauthd and Dovecot auth are Unix-socket protocols (one
//! listener for the whole process, the answer of the current run in a shared slot), and
//! rimap's exchange runs over a socketpair. An earlier version opened a loopback TCP
//! connection per run (~4,000 a second): it left ~20,000 connections in TIME_WAIT, used up
//! the ephemeral ports and broke a test run beside it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::auth::sasl::{Authenticator, Saslauthd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[path = "common.rs"]
mod common;

struct Setup {
    rt: tokio::runtime::Runtime,
    /// The Unix socket of the fake saslauthd / Dovecot auth server.
    sock: PathBuf,
    /// What the fake server answers on each connection accepted during this run.
    current: Arc<Mutex<Arc<Vec<u8>>>>,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        // A client that stops reading makes the server's write fail with EPIPE: without
        // this the signal would end the process (libFuzzer's main does not ignore it).
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let sock = common::scratch("auth-clients").join("auth");
        let current = Arc::new(Mutex::new(Arc::new(Vec::new())));
        let listener = {
            let _guard = rt.enter();
            tokio::net::UnixListener::bind(&sock).expect("bind")
        };
        let slot = current.clone();
        rt.spawn(async move {
            while let Ok((c, _)) = listener.accept().await {
                let a = slot.lock().expect("answer slot").clone();
                tokio::spawn(answer(c, a));
            }
        });
        Setup { rt, sock, current }
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
            0 => {
                *s.current.lock().expect("answer slot") = answer_bytes;
                let client = Saslauthd {
                    socket: s.sock.clone(),
                    mechs: vec!["PLAIN".into(), "LOGIN".into()],
                };
                let _ = client
                    .check("alice".into(), "secret".into(), "smtp".into(), "".into())
                    .await;
            }
            1 => {
                *s.current.lock().expect("answer slot") = answer_bytes;
                if let Ok(client) =
                    postern::auth::dovecot_proto::dovecot_authenticator(&s.sock).await
                {
                    let _ = client.mechanisms();
                    let _ = client
                        .check("alice".into(), "secret".into(), "smtp".into(), "".into())
                        .await;
                }
            }
            _ => {
                let (mut client, server) =
                    std::os::unix::net::UnixStream::pair().expect("socketpair");
                server.set_nonblocking(true).expect("nonblocking");
                let server = tokio::net::UnixStream::from_std(server).expect("tokio stream");
                let server = tokio::spawn(answer(server, answer_bytes));
                let reply = tokio::task::spawn_blocking(move || {
                    postern::auth::rimap::exchange(&mut client, b"alice", b"secret", &|_: &str| {})
                })
                .await
                .expect("rimap exchange");
                assert!(
                    reply.starts_with("OK") || reply.starts_with("NO"),
                    "a saslauthd reply is OK or NO: {reply:?}"
                );
                let _ = server.await;
            }
        }
    });
});
