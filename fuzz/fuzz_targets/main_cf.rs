//! main.cf: the logical-line grammar (`name = value`, continuation lines, comments, any
//! byte encoding), then `$name` / `${name?…}` / `${name:…}` expansion of every parameter
//! it sets, as `postconf` and every service do.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::config::{maincf, mastercf, postfix::PostfixConfig, text};
use std::path::Path;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let (text, _) = text::decode(data);
    let Ok(main) = maincf::parse(&text, Path::new("/fuzz/main.cf")) else {
        return;
    };
    let Ok(master) = mastercf::parse("", Path::new("/fuzz/master.cf")) else {
        return;
    };
    let cfg = PostfixConfig::from_main(main, master);
    let names: Vec<String> = cfg.explicit_names().map(str::to_string).collect();
    for name in names.iter().take(64) {
        let _ = cfg.get(name);
        let _ = cfg.is_known(name);
    }
    let _ = cfg.macro_check();
    let _ = cfg.usage_warnings();
});
