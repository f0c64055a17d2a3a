//! A message as imapd reads it: the MIME part tree (nested multiparts, boundaries,
//! message/rfc822), BODYSTRUCTURE, ENVELOPE, BODY[section] and BINARY (base64 and
//! quoted-printable decoding), header charset decoding, SORT and THREAD keys.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::imapd::message::{fetch, mime, search, sort};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let msg = mime::Message::new(data);
    let mut out = Vec::new();
    fetch::bodystructure(&mut out, &msg.root, &msg.raw, true);
    out.clear();
    fetch::bodystructure(&mut out, &msg.root, &msg.raw, false);
    let _ = fetch::envelope(&msg);
    for f in mime::fields(msg.root.header(&msg.raw)).iter().take(32) {
        let _ = search::decode_header(&f.value);
    }
    for spec in [
        "", "HEADER", "TEXT", "1", "1.MIME", "2", "1.1", "1.2.TEXT", "2.HEADER",
    ] {
        if let Some(s) = fetch::parse_section(spec) {
            let _ = fetch::section_bytes(&msg, &s);
            let _ = fetch::binary_section(&msg, &s);
            let _ = fetch::binary_section_size(&msg, &s);
        }
    }
    let meta = search::MessageMeta {
        seq: 1,
        uid: 1,
        size: data.len() as u64,
        ..Default::default()
    };
    let both = [(&msg, &meta)];
    for key in ["SUBJECT", "FROM", "DATE", "DISPLAYFROM", "CC"] {
        if let Ok(c) = sort::parse_criteria(&postern::imap::reader::Arg::List(vec![
            postern::imap::reader::Arg::Atom(key.as_bytes().to_vec()),
        ])) {
            let _ = sort::sort(&both, &c);
        }
    }
    for alg in ["REFERENCES", "ORDEREDSUBJECT"] {
        if let Some(a) = sort::Algorithm::parse(alg) {
            let _ = sort::thread_string(&sort::thread(&both, a));
        }
    }
});
