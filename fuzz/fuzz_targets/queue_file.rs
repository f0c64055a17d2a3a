//! A queue file as the queue manager, postcat and postqueue read it (Postfix's record
//! format: type byte, variable-length size, data; envelope, content and extracted
//! segments).
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::queue::{file, record};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    for r in record::records(data) {
        if r.is_err() {
            break;
        }
    }
    let parsed = file::parse(data, "4ABCDEF0123");
    // The listing's reader (mailq) accepts and refuses the same files and reads the same
    // values.
    match (&parsed, file::summary(data)) {
        (Ok(m), Ok(s)) => {
            assert_eq!(s.message_size, m.message_size);
            assert_eq!(s.arrival, m.arrival);
            assert_eq!(s.sender, m.sender);
            assert!(s.pending.iter().eq(m.pending().map(|r| &r.address)));
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("parse {a:?}, summary {b:?}"),
    }
    if let Ok(m) = parsed {
        let _ = m.pending().count();
        for r in &m.recipients {
            let _ = r.notify();
        }
        let _ = m.attr("rewrite_context");
    }
});
