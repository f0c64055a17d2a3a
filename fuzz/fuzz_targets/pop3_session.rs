//! The POP3 cores, fed the input directly (no socket), both stages as Dovecot splits them:
//! with an even first byte, the login stage's core (`login::pop3::PreLogin`, as
//! `pop3-login`: CAPA, USER/PASS, APOP, AUTH PLAIN/LOGIN with SASL continuation lines, STLS
//! (whose handshake fails), QUIT; no service answers, so a complete login gets the
//! temporary failure); with an odd one, the logged-in session's core
//! (`pop3d::session::Session`, as `pop3`: STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP,
//! LAST, QUIT) of user `fuzz` on a fresh three-message mbox, its QUIT rewriting the file.
//! The input comes in two writes (split where the second byte says), then its end. Also
//! the login ↔ service message decoder (`login::handoff`), which must round-trip what it
//! encodes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::auth::dovecot::UserInfo;
use postern::config::dovecot::DovecotConf;
use postern::login::handoff::{Credentials, LoginRequest, Msg};
use postern::login::pop3::{Action as LoginAction, PreLogin};
use postern::login::{LoginConf, Protocol};
use postern::pop3d::Pop3State;
use postern::pop3d::session::{Action, Session};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

#[path = "common.rs"]
mod common;

const INBOX: &[u8] = b"From alice@example.com  Mon Dec  7 08:00:00 2026\n\
From: alice@example.com\nSubject: one\n\nfirst\n.dot line\n\n\
From bob@example.com  Mon Dec  7 08:01:00 2026\nFrom: bob@example.com\nSubject: two\n\n\
second\nline\nline\n\n\
From carol@example.com  Mon Dec  7 08:02:00 2026\nFrom: carol@example.com\n\n\n";

struct Setup {
    rt: tokio::runtime::Runtime,
    st: Arc<Pop3State>,
    login: Arc<LoginConf>,
    mail: PathBuf,
    /// What the userdb says of the user `fuzz`: the mail process serves the session.
    user: UserInfo,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let dir = common::scratch("pop3");
        let mail = dir.join("mail");
        let users = dir.join("users");
        // SAFETY: getuid and getgid only read the process credentials.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        std::fs::write(
            &users,
            format!("fuzz:{{PLAIN}}pw:{uid}:{gid}::{}::\n", dir.display()),
        )
        .expect("users file");
        let conf = format!(
            "protocols = pop3\nlisten = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\n\
             auth_mechanisms = plain login\nauth_failure_delay = 0\nfirst_valid_uid = 0\n\
             log_path = /dev/null\nmail_max_userip_connections = 1000\n\
             mail_location = mbox:{0}:INBOX={0}/inbox\n\
             passdb {{\n  driver = passwd-file\n  args = {1}\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {1}\n}}\n",
            mail.display(),
            users.display()
        );
        let conf = DovecotConf::from_str(&conf, &dir.join("dovecot.conf")).expect("dovecot.conf");
        let st = Arc::new(Pop3State::from_conf(&conf).expect("pop3 settings"));
        let login = Arc::new(LoginConf::from_conf(&conf, Protocol::Pop3).expect("login settings"));
        Setup {
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime"),
            st,
            login,
            mail,
            user: UserInfo {
                user: "fuzz".into(),
                uid: Some(uid),
                gid: Some(gid),
                home: Some(dir.display().to_string()),
                extra: Vec::new(),
            },
        }
    })
}

fn handoff_roundtrip(data: &[u8]) {
    if let Some(m) = Msg::decode(data) {
        assert_eq!(
            Msg::decode(&m.encode()),
            Some(m),
            "handoff message does not round-trip"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    handoff_roundtrip(data);
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let s = setup();
    let logged_in = mode & 1 == 1;
    if logged_in {
        let _ = std::fs::remove_dir_all(&s.mail);
        std::fs::create_dir_all(&s.mail).expect("mail directory");
        std::fs::write(s.mail.join("inbox"), INBOX).expect("inbox");
    }
    let (first, second) = match input.split_first() {
        Some((&cut, rest)) => rest.split_at((cut as usize).min(rest.len())),
        None => (input, &[][..]),
    };
    let mut writes = [first, second].into_iter();
    let remote = SocketAddr::from(([127, 0, 0, 1], 40110));
    let local = SocketAddr::from(([127, 0, 0, 1], 110));
    if !logged_in {
        let mut c = PreLogin::new(s.login.clone(), remote, local, false);
        loop {
            match c.next() {
                LoginAction::Send(_) | LoginAction::Sleep(_) => {}
                LoginAction::Read { .. } => match writes.next() {
                    Some(w) => c.received(w),
                    None => c.input_ended(),
                },
                LoginAction::StartTls { .. } => c.tls_result(false),
                LoginAction::Login(req) => {
                    assert_eq!(req.session_id, c.session_id());
                    c.verdict(None);
                }
                LoginAction::Close => break,
            }
        }
        return;
    }
    s.rt.block_on(async {
        // The mail process's side of a session the service has checked (the credential
        // check and the hand-off are the handoff target's and the tests').
        let req = LoginRequest {
            id: 1,
            session_id: "fuzz".into(),
            remote,
            local,
            tls: false,
            method: "PLAIN".into(),
            tag: String::new(),
            creds: Credentials::Plain {
                user: "fuzz".into(),
                pass: String::new(),
            },
            leftover: Vec::new(),
        };
        let mut c = Session::new(s.st.clone(), req, "fuzz".into(), s.user.clone());
        loop {
            match c.next().await {
                Action::Send(_) => {}
                Action::Read { .. } => match writes.next() {
                    Some(w) => c.received(w),
                    None => c.input_ended(),
                },
                Action::Close => break,
            }
        }
    });
});
