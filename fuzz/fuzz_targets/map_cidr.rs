//! `cidr:` tables (`network/prefix result`, IPv4 and IPv6, `!` negation, `if`/`endif`);
//! then lookups of addresses. Keys follow a NUL.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::maps::Table;
use postern::maps::cidr::{self, CidrTable};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let (text, keys) = common::split_keys(data, 8);
    let opts = common::quiet_map_options();
    let t = CidrTable::parse("/fuzz/table", text, &opts);
    for k in &keys {
        let _ = cidr::parse_key(k);
        let _ = t.lookup(k);
    }
    for line in String::from_utf8_lossy(text).lines().take(16) {
        let _ = cidr::Cidr::parse(line.trim());
    }
});
