//! A Maildir as pop3d and imapd read it: `dovecot-uidlist` (v3 header and lines with
//! extension fields), `dovecot-keywords`, and file names with `:2,` info, `S=`/`W=`
//! sizes and keyword letters. Input: NUL-separated uidlist, keywords, then file names
//! (each file's content is its own name).
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::mailbox::maildir::{MaildirBox, MaildirOpen};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let dir = common::scratch("maildir");
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir(dir.join(sub)).expect("maildir subdirectory");
    }
    let mut parts = data.split(|&b| b == 0);
    if let Some(u) = parts.next() {
        std::fs::write(dir.join("dovecot-uidlist"), u).expect("uidlist");
    }
    if let Some(k) = parts.next() {
        std::fs::write(dir.join("dovecot-keywords"), k).expect("keywords");
    }
    for (i, name) in parts.take(16).enumerate() {
        let name = String::from_utf8_lossy(name).replace('/', "_");
        if name.is_empty() || name == "." || name == ".." || name.len() > 200 {
            continue;
        }
        let sub = if i % 2 == 0 { "cur" } else { "new" };
        let _ = std::fs::write(dir.join(sub).join(&name), name.as_bytes());
    }
    for (move_new, sizes) in [(false, true), (true, true), (false, false), (true, false)] {
        let how = MaildirOpen { move_new, sizes };
        let Ok(mut mb) = MaildirBox::open(&dir, &dir, how, Some(1)) else {
            return;
        };
        for i in 0..mb.messages.len() {
            if !sizes {
                // Sizes and dates when a command asks for them (IMAP).
                let _ = mb.resolve(i, true, true);
            }
            let _ = mb.read(i);
            let _ = mb.base(i);
        }
    }
});
