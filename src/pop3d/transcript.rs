//! The POP3 cores replayed against the real Dovecot 2.3.19's recorded dialogue
//! (`compat-fixtures/pop3/transcript-dovecot-2.3.19.txt`, over `inbox.mbox`), in
//! process and without a socket: the login stage's core ([`PreLogin`]) with the service's
//! credential check ([`check`], a `passwd-file` passdb) answering its login, then the
//! logged-in session's core ([`Session`]) on a copy of the mailbox. Each recorded command
//! is fed as one client write; what the cores send before they next wait for input must
//! be the recorded reply, line for line. `tests/pop3.rs` replays the same dialogue against
//! a running `postern dovecot` over TCP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use super::Pop3State;
use super::session::{self, Session, check};
use crate::config::dovecot::DovecotConf;
use crate::login::handoff::Verdict;
use crate::login::pop3::{self as login, PreLogin};
use crate::login::{LoginConf, Protocol};

const TRANSCRIPT: &str = include_str!("../../compat-fixtures/pop3/transcript-dovecot-2.3.19.txt");
const INBOX: &str = include_str!("../../compat-fixtures/pop3/inbox.mbox");

/// The recorded commands, each with its reply lines.
fn dialogue() -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in TRANSCRIPT.lines() {
        if let Some(cmd) = line.strip_prefix("C: ") {
            out.push((cmd.to_string(), Vec::new()));
        } else if let Some(reply) = line.strip_prefix("S: ")
            && let Some(last) = out.last_mut()
        {
            last.1.push(reply.to_string());
        }
    }
    out
}

/// The settings of the recording (README of the fixture): plaintext allowed without TLS,
/// no failure delay, alice's `{PLAIN}secret` in a passwd-file with this process's ids,
/// her mbox INBOX in `dir`.
fn settings(dir: &Path) -> (Arc<LoginConf>, Arc<Pop3State>) {
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    let users = dir.join("users");
    std::fs::write(
        &users,
        format!("alice:{{PLAIN}}secret:{uid}:{gid}::{}::\n", dir.display()),
    )
    .expect("users");
    std::fs::create_dir_all(dir.join("mail")).expect("mail dir");
    std::fs::write(dir.join("inbox"), INBOX).expect("inbox");
    let conf = format!(
        "protocols = pop3\nssl = no\ndisable_plaintext_auth = no\nauth_failure_delay = 0\n\
         first_valid_uid = 0\nlog_path = {0}/log\n\
         mail_location = mbox:{0}/mail:INBOX={0}/inbox\n\
         passdb {{\n  driver = passwd-file\n  args = {1}\n}}\n\
         userdb {{\n  driver = passwd-file\n  args = {1}\n}}\n",
        dir.display(),
        users.display()
    );
    let conf = DovecotConf::from_str(&conf, &dir.join("dovecot.conf")).expect("dovecot.conf");
    (
        Arc::new(LoginConf::from_conf(&conf, Protocol::Pop3).expect("login settings")),
        Arc::new(Pop3State::from_conf(&conf).expect("pop3 settings")),
    )
}

/// The two stages of one client, as the login process and the mail process see it.
enum Stage {
    Login(Box<PreLogin>),
    Mail(Box<Session>),
    Closed,
}

/// Run the cores until they wait for input (or close); what they sent. A login is
/// checked by the service's check, and a taken one goes on in a new [`Session`], as the
/// mail process gets it.
async fn until_read(stage: &mut Stage, st: &Arc<Pop3State>) -> Vec<u8> {
    let mut sent = Vec::new();
    loop {
        match stage {
            Stage::Login(l) => match l.next() {
                login::Action::Send(b) => sent.extend(b),
                login::Action::Sleep(_) => {}
                login::Action::Read { .. } => return sent,
                login::Action::StartTls { .. } => panic!("no TLS in this dialogue"),
                login::Action::Login(req) => {
                    match check(st, &req.creds, req.remote.ip(), &req.session_id).await {
                        Ok((user, info)) => {
                            *stage =
                                Stage::Mail(Box::new(Session::new(st.clone(), *req, user, info)))
                        }
                        Err(v) => l.verdict(Some(v)),
                    }
                }
                login::Action::Close => *stage = Stage::Closed,
            },
            Stage::Mail(s) => match s.next().await {
                session::Action::Send(b) => sent.extend(b),
                session::Action::Read { .. } => return sent,
                session::Action::Close => *stage = Stage::Closed,
            },
            Stage::Closed => return sent,
        }
    }
}

fn feed(stage: &mut Stage, bytes: &[u8]) {
    match stage {
        Stage::Login(l) => l.received(bytes),
        Stage::Mail(s) => s.received(bytes),
        Stage::Closed => panic!("fed after the close"),
    }
}

fn peers() -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::from(([127, 0, 0, 1], 40110)),
        SocketAddr::from(([127, 0, 0, 1], 110)),
    )
}

#[tokio::test]
async fn recorded_dovecot_dialogue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (lc, st) = settings(dir.path());
    let (remote, local) = peers();
    let want_greeting = format!("+OK {}\r\n", lc.greeting);
    let mut stage = Stage::Login(Box::new(PreLogin::new(lc, remote, local, false)));
    let greeting = String::from_utf8(until_read(&mut stage, &st).await).expect("utf-8");
    assert_eq!(greeting, want_greeting);
    let dialogue = dialogue();
    assert_eq!(dialogue.len(), 40, "the recorded commands");
    for (cmd, reply) in dialogue {
        feed(&mut stage, format!("{cmd}\r\n").as_bytes());
        let got = String::from_utf8(until_read(&mut stage, &st).await).expect("utf-8");
        let want: String = reply.iter().map(|l| format!("{l}\r\n")).collect();
        assert_eq!(got, want, "reply to {cmd}");
    }
    assert!(matches!(stage, Stage::Closed), "QUIT closes");
    // Nothing was deleted (RSET before QUIT), nothing marked \Seen was lost.
    let inbox = std::fs::read_to_string(dir.path().join("inbox")).expect("inbox");
    assert_eq!(inbox.matches("\nSubject: ").count(), 3);
    let log = std::fs::read_to_string(dir.path().join("log")).expect("log");
    assert!(
        log.contains("pop3-login: Info: Login: user=<alice>, method=PLAIN, rip=127.0.0.1"),
        "{log}"
    );
    assert!(
        log.contains("Disconnected: Logged out top=2/") && log.contains("retr=2/"),
        "{log}"
    );
}

/// A client that pipelines its login and commands in one write: the login stage hands
/// what it has not read to the session, which answers all of it in one write.
#[tokio::test]
async fn pipelined_login_goes_on_in_the_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (lc, st) = settings(dir.path());
    let (remote, local) = peers();
    let mut stage = Stage::Login(Box::new(PreLogin::new(lc, remote, local, false)));
    until_read(&mut stage, &st).await;
    feed(
        &mut stage,
        b"USER alice\r\nPASS secret\r\nSTAT\r\nDELE 1\r\nQUIT\r\n",
    );
    let got = String::from_utf8(until_read(&mut stage, &st).await).expect("utf-8");
    assert_eq!(
        got,
        "+OK\r\n+OK Logged in.\r\n+OK 3 189\r\n+OK Marked to be deleted.\r\n\
         +OK Logging out, messages deleted.\r\n"
    );
    assert!(matches!(stage, Stage::Closed));
    let inbox = std::fs::read_to_string(dir.path().join("inbox")).expect("inbox");
    assert_eq!(inbox.matches("\nSubject: ").count(), 2);
}

/// A wrong password: the verdict is the service's, the reply and the failure count the
/// login core's; the client's end of input is logged as Dovecot logs it.
#[tokio::test]
async fn failed_login_then_the_client_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (lc, st) = settings(dir.path());
    let (remote, local) = peers();
    let mut l = PreLogin::new(lc, remote, local, false);
    l.received(b"USER alice\r\nPASS wrong\r\n");
    let mut sent = Vec::new();
    loop {
        match l.next() {
            login::Action::Send(b) => sent.extend(b),
            login::Action::Login(req) => {
                let v = check(&st, &req.creds, req.remote.ip(), &req.session_id).await;
                assert!(matches!(v, Err(Verdict::Failed)));
                l.verdict(v.err());
            }
            login::Action::Sleep(_) => {}
            login::Action::Read { .. } => break,
            _ => panic!("unexpected action"),
        }
    }
    assert!(
        String::from_utf8_lossy(&sent).ends_with("+OK\r\n-ERR [AUTH] Authentication failed.\r\n")
    );
    l.input_ended();
    assert!(matches!(l.next(), login::Action::Close));
    let log = std::fs::read_to_string(dir.path().join("log")).expect("log");
    assert!(
        log.contains(
            "pop3-login: Info: Disconnected: Connection closed (auth failed, 1 attempts in "
        ) && log.contains("): user=<alice>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1"),
        "{log}"
    );
}
