//! An mbox file as pop3d, imapd and local delivery read and rewrite it: `From ` lines,
//! `Content-Length:`, Dovecot's `X-IMAPbase`/`X-UID`/`Status`/`X-Status`/`X-Keywords`
//! headers; UIDs assigned in place, then a flag change and an expunge rewritten with
//! Dovecot's padding. Checked: what clients see of each message survives the rewrites.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::mailbox::mbox::{MboxBox, MboxFlags};
use postern::mailbox::{Flags, KeywordSet, MboxOptions};
use std::collections::{HashMap, HashSet};

#[path = "common.rs"]
mod common;

fn contents(mb: &MboxBox) -> Vec<Vec<u8>> {
    (0..mb.messages.len())
        .map(|i| mb.read(i).expect("read an indexed message"))
        .collect()
}

/// A file that ends inside a header (no newline after its last line) gets that newline
/// when the header is rewritten, by the flag change or, when that left the header in
/// place, by the expunge's rewrite: the metadata lines go after it, as in Dovecot 2.3.19
/// (checked with doveadm: `X-UID: 2<padding>\n\n` at the end). The last message may so
/// gain one final newline when it has no end of headers, and nothing else (a body's
/// last line without newline stays so: tests/fuzz_regressions.rs). A header cut in a lone
/// `\r` gains it too: that line becomes the end of headers, the metadata goes before it.
fn allow_header_newline(data: &[u8], after: &mut [Vec<u8>], before: &[Vec<u8>]) {
    if !data.ends_with(b"\n")
        && let (Some(a), Some(b)) = (after.last_mut(), before.last())
        && !b.windows(2).any(|w| w == b"\n\n")
        && a.len() == b.len() + 1
        && a.starts_with(b)
        && a.ends_with(b"\n")
    {
        a.pop();
    }
}

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let dir = common::scratch("mbox");
    let path = dir.join("inbox");
    std::fs::write(&path, data).expect("write the mbox");
    let opts = MboxOptions::default();
    let Ok(mut mb) = MboxBox::open(&path, &opts, Some(1)) else {
        return;
    };
    let before = contents(&mb);
    let Some(first) = mb.messages.first().map(|m| m.uid) else {
        return;
    };
    // Mark every message seen and give the first a keyword: headers grow or use padding.
    let mut changes: HashMap<u32, MboxFlags> = HashMap::new();
    for m in &mb.messages {
        let _: &KeywordSet = &m.keywords;
        let kw = if m.uid == first {
            vec!["$Fuzz".to_string()]
        } else {
            Vec::new()
        };
        changes.insert(m.uid, (m.flags.union(Flags::SEEN), true, kw));
    }
    mb.update(&changes, &HashSet::new(), true)
        .expect("flag update");
    let mut after = contents(&mb);
    allow_header_newline(data, &mut after, &before);
    assert_eq!(after, before, "a flag change altered messages");
    // Expunge the first message: the others are left as they were.
    let before = contents(&mb);
    mb.update(&HashMap::new(), &HashSet::from([first]), true)
        .expect("expunge");
    let mut after = contents(&mb);
    allow_header_newline(data, &mut after, &before[1..]);
    assert_eq!(after, before[1..], "an expunge altered other messages");
});
