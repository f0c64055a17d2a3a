//! master.cf: the eight-column service grammar with `-o name=value` overrides, `{ … }`
//! grouping and continuation lines, then the service parameters and per-service
//! configurations the master derives from it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::config::{maincf, mastercf, postfix::PostfixConfig, text};
use std::path::Path;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let (text, _) = text::decode(data);
    let path = Path::new("/fuzz/master.cf");
    let _ = mastercf::parse_detailed(&text, path);
    let Ok(master) = mastercf::parse(&text, path) else {
        return;
    };
    for s in &master.services {
        let _ = s.argv();
        let _ = s.name_space();
        let _ = s.params();
        let _ = s.fields();
    }
    let Ok(main) = maincf::parse("", Path::new("/fuzz/main.cf")) else {
        return;
    };
    let cfg = PostfixConfig::from_main(main, master);
    let services: Vec<Vec<(String, String)>> = cfg
        .master
        .services
        .iter()
        .take(16)
        .map(|s| s.overrides())
        .collect();
    for o in services {
        let svc = cfg.with_overrides(&o);
        for (name, _) in o.iter().take(16) {
            let _ = svc.get(name);
        }
    }
});
