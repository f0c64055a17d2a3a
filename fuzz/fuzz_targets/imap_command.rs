//! IMAP command input as imapd and imap-login read it: the line/literal reader (tags,
//! quoted strings, `{N}`/`{N+}` literals, APPEND streaming, over-long lines), the argument
//! tree, and the argument grammars of SEARCH, FETCH, SORT/THREAD and sequence sets.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::imapd::message::{fetch, mime::Message, search, sort};
use postern::imap::reader::{Arg, CommandReader, ReadEvent};
use postern::imapd::seqset::SeqSet;

const MESSAGE: &[u8] = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\
Date: Mon, 7 Dec 2026 08:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nbody\r\n";

fn command(name: &str, args: &[Arg]) {
    let name = name.to_ascii_uppercase();
    let args = match name.as_str() {
        "UID" => match args.split_first() {
            Some((Arg::Atom(sub), rest)) => return command(&String::from_utf8_lossy(sub), rest),
            _ => return,
        },
        _ => args,
    };
    for a in args.iter().take(4) {
        if let Some(s) = a.astring() {
            let _ = SeqSet::parse(s);
        }
    }
    match name.as_str() {
        "SEARCH" => {
            if let Ok(key) = search::parse(args) {
                let meta = search::MessageMeta {
                    seq: 1,
                    uid: 1,
                    size: MESSAGE.len() as u64,
                    ..Default::default()
                };
                let ctx = search::Context {
                    count: 1,
                    last_uid: 1,
                    ..Default::default()
                };
                let _ = search::matches(&key, &meta, &ctx, &mut || Some(Message::new(MESSAGE)));
            }
        }
        "FETCH" => {
            if let Some(rest) = args.get(1..) {
                let _ = fetch::parse_fetch_atts(rest, false);
            }
        }
        "SORT" | "THREAD" => {
            if let Some(a) = args.first() {
                let _ = sort::parse_criteria(a);
                if let Some(s) = a.atom() {
                    let _ = sort::Algorithm::parse(s);
                }
            }
            if let Some(rest) = args.get(2..) {
                let _ = search::parse(rest);
            }
        }
        _ => {}
    }
}

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let mut r = CommandReader::new(8192);
    // Fed in two pieces: a command split across reads must read as one.
    let cut = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    for piece in [&data[..cut], &data[cut..]] {
        r.feed(piece);
        let mut n = 0;
        while let Some(ev) = r.next_event() {
            n += 1;
            if n > 10_000 {
                panic!("reader yields events without end");
            }
            match ev {
                ReadEvent::Command(c) => {
                    if let Ok(args) = c.args() {
                        command(&c.name, &args);
                    }
                }
                ReadEvent::AppendLiteral { size, .. } => {
                    if size < 1 << 20 {
                        r.accept_literal();
                    } else {
                        r.refuse_literal();
                    }
                }
                _ => {}
            }
        }
    }
});
