//! `regexp:` (POSIX ERE) and `pcre:` tables: `/pattern/flags result`, `!/pattern/`,
//! `if`/`endif` blocks, `$1` substitution in results; then lookups. The first byte picks
//! the dialect; keys follow a NUL.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::maps::Table;
use postern::maps::regexp::{Dialect, PatternTable};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let dialect = if first & 1 == 0 {
        Dialect::Posix
    } else {
        Dialect::Pcre
    };
    let (text, keys) = common::split_keys(rest, 4);
    // glibc's regcomp(3) needs memory exponential in stacked quantifiers (`a++++…`: 1 GB
    // at 20 of them) and in nested bounds; Postfix's regexp: tables call the same
    // regcomp. Such patterns are left out so that the fuzzer explores Postern's code.
    if matches!(dialect, Dialect::Posix) && posix_blowup(text) {
        return;
    }
    let opts = common::quiet_map_options();
    let t = PatternTable::parse(dialect, "/fuzz/table", text, &opts);
    for k in &keys {
        let _ = t.lookup(k);
    }
});

fn posix_blowup(text: &[u8]) -> bool {
    let quantifier = |b: &u8| matches!(b, b'+' | b'*' | b'?' | b'{' | b'}');
    text.windows(4).any(|w| w.iter().all(quantifier))
        || text
            .windows(2)
            .any(|w| w == b"}{" || w == b"){" || w == b"}+" || w == b"}*")
}
