//! POP3 over a real loopback TCP connection, both stages as Dovecot splits them: with an
//! even first byte, the login stage (`pop3-login`: CAPA, USER/PASS, APOP, AUTH PLAIN/LOGIN
//! with SASL continuation lines, STLS, QUIT; the service it would hand the client to is
//! gone, so a complete login gets the temporary failure); with an odd one, the logged-in
//! session (`pop3`: STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, LAST, QUIT) of user
//! `fuzz` on a fresh three-message mbox, its QUIT rewriting the file. Also the login ↔
//! service message decoder (`login::handoff`), which must round-trip what it encodes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::auth::dovecot::UserInfo;
use postern::config::dovecot::DovecotConf;
use postern::login::handoff::{self, Channel, Credentials, LoginRequest, Msg};
use postern::login::process::LoginCtl;
use postern::login::{LoginConf, Protocol};
use postern::pop3d::Pop3State;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    listener: std::net::TcpListener,
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
            listener: std::net::TcpListener::bind("127.0.0.1:0").expect("listen"),
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
    let addr = s.listener.local_addr().expect("address");
    let client = std::net::TcpStream::connect(addr).expect("connect");
    let (server, peer) = s.listener.accept().expect("accept");
    s.rt.block_on(async {
        let (a, b) = handoff::pair().expect("socket pair");
        let session = if logged_in {
            // The mail process's side of a session the service has checked (the
            // credential check and the hand-off are the handoff target's and the tests').
            drop((a, b));
            let req = LoginRequest {
                id: 1,
                session_id: "fuzz".into(),
                remote: peer,
                local: addr,
                tls: false,
                method: "PLAIN".into(),
                tag: String::new(),
                creds: Credentials::Plain {
                    user: "fuzz".into(),
                    pass: String::new(),
                },
                leftover: Vec::new(),
            };
            let (st, user) = (s.st.clone(), s.user.clone());
            tokio::spawn(postern::pop3d::session::serve(
                st,
                req,
                server.into(),
                "fuzz".into(),
                user,
            ))
        } else {
            drop(b);
            let ctl = Arc::new(LoginCtl::new(Channel::new(a).expect("channel")));
            server.set_nonblocking(true).expect("nonblocking");
            let tcp = tokio::net::TcpStream::from_std(server).expect("server socket");
            tokio::spawn(postern::login::pop3::run(
                tcp,
                peer,
                false,
                s.login.clone(),
                ctl,
            ))
        };
        client.set_nonblocking(true).expect("nonblocking");
        let client = tokio::net::TcpStream::from_std(client).expect("client socket");
        let (mut rd, mut wr) = client.into_split();
        let send = async {
            let _ = wr.write_all(input).await;
            let _ = wr.shutdown().await;
        };
        let mut replies = Vec::new();
        let recv = rd.read_to_end(&mut replies);
        let (_, _) = tokio::join!(send, recv);
        session.await.expect("session task");
    });
});
