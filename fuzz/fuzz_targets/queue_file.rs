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
    if let Ok(m) = file::parse(data, "4ABCDEF0123") {
        let _ = m.pending().count();
        for r in &m.recipients {
            let _ = r.notify();
        }
        let _ = m.attr("rewrite_context");
    }
});
