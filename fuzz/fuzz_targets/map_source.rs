//! Lookup table source text: `postmap` (`key whitespace value`, quoting, continuation
//! lines), `postalias`/aliases(5) (`name: value, value`), and `inline:{ … }` specs;
//! then lookups in the parsed table.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::maps::source::{self, Format};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let (text, keys) = common::split_keys(data, 8);
    let opts = common::quiet_map_options();
    for format in [Format::Postmap, Format::Aliases] {
        let map = source::parse_entries(text, "/fuzz/access", "hash:/fuzz/access", format, &opts);
        for k in &keys {
            let _ = map.get(k);
        }
    }
    let spec = format!("inline:{{{}}}", String::from_utf8_lossy(text));
    if let Ok(t) = postern::maps::open(&spec, &opts) {
        for k in &keys {
            let _ = t.lookup(k);
        }
        let _ = t.entries();
    }
});
