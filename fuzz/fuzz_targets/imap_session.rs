//! A whole logged-in IMAP session through its core (`imapd::session::Core`), no socket:
//! user `fuzz` on a fresh Maildir holding two messages, INBOX selected by the first
//! command of the input or not. The input is cut at each `\0` into the client's writes,
//! fed one by one with the session run to its next read in between (a `\x01` alone in a
//! write stands for the read timing out: an idle check in IDLE, the autologout outside
//! it); at the end the input ends. Commands, literals (APPEND streaming, `+ OK`),
//! IDLE/DONE, FETCH/SEARCH/SORT/STORE/COPY/EXPUNGE on real files, and the limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::config::dovecot::DovecotConf;
use postern::imapd::ImapState;
use postern::imapd::session::{Action, Core};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

#[path = "common.rs"]
mod common;

const MESSAGES: &[&[u8]] = &[
    b"From: alice@example.com\nTo: bob@example.org\nSubject: one\nMessage-ID: <1@x>\n\
Date: Mon, 7 Dec 2026 08:00:00 +0000\n\nfirst\n",
    b"From: bob@example.org\nSubject: Re: one\nIn-Reply-To: <1@x>\n\
Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nhi\n\
--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nAAEC\n--b--\n",
];

struct Setup {
    st: Arc<ImapState>,
    home: PathBuf,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let dir = common::scratch("imap");
        let conf = format!(
            "protocols = imap\nssl = no\nlog_path = /dev/null\n\
             mail_location = maildir:~/Maildir\n\
             passdb {{\n  driver = passwd-file\n  args = {0}/users\n}}\n\
             userdb {{\n  driver = static\n  args = home={0}/home\n}}\n\
             namespace inbox {{\n  inbox = yes\n  separator = .\n  mailbox Trash {{\n    special_use = \\Trash\n  }}\n}}\n",
            dir.display()
        );
        let conf = DovecotConf::from_str(&conf, &dir.join("dovecot.conf")).expect("conf");
        let st = Arc::new(ImapState::from_conf(&conf).expect("settings"));
        Setup {
            st,
            home: dir.join("home"),
        }
    })
}

/// Run the session to its next read (false) or its end (true).
fn run(c: &mut Core) -> bool {
    for _ in 0..100_000 {
        match c.next_action() {
            Action::Send(_) => {}
            Action::Read { .. } => return false,
            Action::Close => return true,
        }
    }
    panic!("the session neither waits nor ends");
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
    let _ = std::fs::remove_dir_all(&s.home);
    let new = s.home.join("Maildir/new");
    std::fs::create_dir_all(&new).expect("maildir");
    for d in ["cur", "tmp"] {
        std::fs::create_dir_all(s.home.join("Maildir").join(d)).expect("maildir");
    }
    for (i, m) in MESSAGES.iter().enumerate() {
        std::fs::write(new.join(format!("{}.M{i}P1.fuzz", 1_796_000_000 + i)), m).expect("msg");
    }
    let Ok(mut c) = Core::new(s.st.clone(), "fuzz", &s.home.display().to_string()) else {
        return;
    };
    if data.first().is_some_and(|b| b & 1 == 1) {
        c.received(b"s SELECT INBOX\r\n");
    }
    if run(&mut c) {
        return;
    }
    for write in data.get(1..).unwrap_or_default().split(|&b| b == 0) {
        if write == b"\x01" {
            c.timed_out();
        } else {
            c.received(write);
        }
        if run(&mut c) {
            return;
        }
    }
    c.input_ended();
    run(&mut c);
});
