//! A whole SMTP server session over a socketpair (`common::stream_pair`: no loopback
//! port, no TIME_WAIT; the client is 127.0.0.1, in `mynetworks`), as smtpd serves a
//! client: the command line reader (line length limit, bare LF, pipelining), HELO/EHLO,
//! MAIL/RCPT with their ESMTP parameters (SIZE, BODY, SMTPUTF8, RET, ENVID, NOTIFY, ORCPT
//! xtext), AUTH PLAIN/LOGIN (saslauthd backend absent: temporary failure), DATA and BDAT
//! into a queue on tmpfs, RSET/NOOP/VRFY/ETRN/QUIT, error limits. The fuzzer's bytes are
//! sent whole, then the client half-closes and reads every reply. `smtpd_error_sleep_time
//! = 0`: the tarpit after the soft error limit (Postfix's too) would read as a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::config::{maincf, mastercf, postfix::PostfixConfig};
use postern::smtpd::SmtpdService;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "common.rs"]
mod common;

struct Setup {
    rt: tokio::runtime::Runtime,
    svc: Arc<SmtpdService>,
    queue: std::path::PathBuf,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let dir = common::scratch("smtp");
        let queue = dir.join("queue");
        let main = format!(
            "queue_directory = {0}\nmyhostname = mx.example.com\nmydomain = example.com\n\
             mydestination = $myhostname, localhost\nmynetworks = 127.0.0.0/8\n\
             smtpd_peername_lookup = no\nmaillog_file_prefixes = /dev\nmaillog_file = /dev/null\n\
             smtpd_sasl_auth_enable = yes\ncyrus_sasl_config_path = {1}\n\
             local_recipient_maps =\nsmtpd_soft_error_limit = 100\nsmtpd_hard_error_limit = 200\n\
             smtpd_timeout = 30s\nsmtpd_error_sleep_time = 0\n",
            queue.display(),
            dir.display()
        );
        // No saslauthd listens there: AUTH gets its temporary failure at once.
        std::fs::write(
            dir.join("smtpd.conf"),
            format!(
                "pwcheck_method: saslauthd\nmech_list: PLAIN LOGIN\nsaslauthd_path: {}/none/mux\n",
                dir.display()
            ),
        )
        .expect("smtpd.conf");
        let main = maincf::parse(&main, &dir.join("main.cf")).expect("main.cf");
        let master = mastercf::parse("", &dir.join("master.cf")).expect("master.cf");
        let cfg = PostfixConfig::from_main(main, master);
        postern::log::configure(&cfg).expect("maillog_file");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let svc = {
            let _g = rt.enter();
            SmtpdService::new(cfg, "smtp").expect("smtpd service")
        };
        Setup { rt, svc, queue }
    })
}

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let s = setup();
    if RUNS.fetch_add(1, Ordering::Relaxed) % 256 == 255 {
        // Accepted messages pile up in incoming/: nothing delivers them here.
        for sub in ["incoming", "maildrop"] {
            if let Ok(rd) = std::fs::read_dir(s.queue.join(sub)) {
                for e in rd.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    let (client, server) = common::stream_pair();
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40025));
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], 25));
    s.rt.block_on(async {
        let server = tokio::net::TcpStream::from_std(server).expect("server socket");
        let session = tokio::spawn(s.svc.clone().handle(server, peer, local));
        let client = tokio::net::UnixStream::from_std(client).expect("client socket");
        let (mut rd, mut wr) = client.into_split();
        let send = async {
            let _ = wr.write_all(data).await;
            let _ = wr.shutdown().await;
        };
        let mut replies = Vec::new();
        let recv = rd.read_to_end(&mut replies);
        let (_, _) = tokio::join!(send, recv);
        session.await.expect("session task");
    });
});
