//! Cyrus SASL's `smtpd.conf` (`key: value` lines as libsasl2's config.c reads them), and
//! the settings smtpd takes from it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::config::sasl;
use std::path::Path;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = sasl::parse(&text, Path::new("/fuzz/smtpd.conf")) {
        let _ = c.pwcheck_method();
        let _ = c.mech_list();
        let _ = c.saslauthd_path();
        let _ = c.auxprop_plugin();
        let _ = c.sasldb_path();
        let _ = c.log_level();
    }
});
