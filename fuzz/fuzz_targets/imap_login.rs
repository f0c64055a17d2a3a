//! IMAP's login stage through its core (`login::imap::PreLogin`, as `imap-login`), no
//! socket: greeting, CAPABILITY, NOOP, ID (long ones too), ENABLE, STARTTLS, LOGIN,
//! AUTHENTICATE PLAIN/LOGIN with SASL-IR and continuation lines, literals and the 4 kB
//! limit, bad commands. The first byte chooses the settings: bit 0 a client from another
//! address with `disable_plaintext_auth` (LOGINDISABLED), bit 1 TLS offered (STARTTLS; the
//! handshakes succeed or fail as bit 2 says), bit 3 implicit TLS; the service's verdicts
//! on logins cycle through taken, failed, a reply, a closing reply and none, starting
//! where bits 4–6 say. The rest is cut at each `\0` into the client's writes, fed one by
//! one with the core run to its next read in between (a `\x01` alone stands for the read
//! timing out, a `\x02` alone for the login process dropping the client, a `\x03` alone
//! for the next write to the client failing); at the end the input ends, after which the
//! core must close.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::config::dovecot::DovecotConf;
use postern::login::handoff::Verdict;
use postern::login::imap::{Action, PreLogin};
use postern::login::{LoginConf, Protocol};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

#[path = "common.rs"]
mod common;

struct Setup {
    /// Without and with TLS offered.
    plain: Arc<LoginConf>,
    tls: Arc<LoginConf>,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let dir = common::scratch("imap-login");
        let conf = "protocols = imap\nssl = no\ndisable_plaintext_auth = yes\n\
                    auth_mechanisms = plain login\nauth_failure_delay = 0\n\
                    log_path = /dev/null\n";
        let conf = DovecotConf::from_str(conf, &dir.join("dovecot.conf")).expect("dovecot.conf");
        let plain = LoginConf::from_conf(&conf, Protocol::Imap).expect("login settings");
        let mut tls = LoginConf::from_conf(&conf, Protocol::Imap).expect("login settings");
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("certificate");
        tls.tls = Some(Arc::new(
            postern::tls::server_config(
                key.cert.pem().as_bytes(),
                key.key_pair.serialize_pem().as_bytes(),
                "fuzz",
            )
            .expect("TLS settings"),
        ));
        Setup {
            plain: Arc::new(plain),
            tls: Arc::new(tls),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let s = setup();
    let conf = if mode & 2 == 2 { &s.tls } else { &s.plain };
    let remote = if mode & 1 == 1 {
        SocketAddr::from(([127, 0, 0, 2], 40143))
    } else {
        SocketAddr::from(([127, 0, 0, 1], 40143))
    };
    let local = SocketAddr::from(([127, 0, 0, 1], 143));
    let mut c = PreLogin::new(conf.clone(), remote, local, mode & 8 == 8);
    let mut writes = input.split(|&b| b == 0);
    let mut verdicts = (mode >> 4) as usize;
    let mut ended = false;
    let mut fail_write = false;
    for _ in 0..1_000_000 {
        match c.next() {
            Action::Send(b) => {
                assert!(!b.is_empty(), "an empty write");
                if std::mem::take(&mut fail_write) {
                    c.output_lost();
                }
            }
            Action::Sleep(_) => {}
            Action::Read { .. } => {
                assert!(!ended, "a read after the end of the input");
                match writes.next() {
                    Some([1]) => c.timed_out(),
                    Some([2]) => c.dropped(),
                    Some([3]) => fail_write = true,
                    Some(w) => c.received(w),
                    None => {
                        ended = true;
                        c.input_ended();
                    }
                }
            }
            Action::StartTls { .. } => c.tls_result(mode & 4 == 4),
            Action::Login(req) => {
                assert_eq!(req.session_id, c.session_id());
                verdicts += 1;
                let v = match verdicts % 5 {
                    0 => Some(Verdict::Taken),
                    1 => Some(Verdict::Failed),
                    2 => Some(Verdict::Reply(format!("{} NO [UNAVAILABLE] x", req.tag))),
                    3 => Some(Verdict::ReplyClose(format!(
                        "{} NO [LIMIT] Maximum number of connections",
                        req.tag
                    ))),
                    _ => None,
                };
                let taken = matches!(v, Some(Verdict::Taken));
                c.verdict(v);
                if taken {
                    // The service has the client: the core has nothing more to do.
                    assert!(matches!(c.next(), Action::Close));
                    return;
                }
            }
            Action::Close => {
                assert!(matches!(c.next(), Action::Close), "closed twice differently");
                return;
            }
        }
    }
    panic!("the login core neither waits nor ends");
});
