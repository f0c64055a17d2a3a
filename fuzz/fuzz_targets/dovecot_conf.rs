//! dovecot.conf of every era (0.99/1.x flat keys translated, 2.x sections), as
//! `doveconf -n` reads and prints it, and the settings the services take from it.
//! `!include` names resolve below a directory that does not exist.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::config::dovecot::DovecotConf;
use postern::config::dovecot::export::{self, Scope};
use std::path::Path;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let text = String::from_utf8_lossy(data);
    let Ok(c) = DovecotConf::from_str(&text, Path::new("/nonexistent-fuzz/dovecot.conf")) else {
        return;
    };
    let _ = export::dump_human(&c.parsed.filters, Scope::Changed, None, true);
    let _ = c.check();
    for p in c.protocols() {
        let _ = c.listeners(&p);
        let _ = c.login_user(&p);
        let _ = c.mail_max_userip_connections(&p);
    }
    let _ = c.auth_client_sockets();
    let _ = c.passdbs();
    let _ = c.userdbs();
    let _ = c.auth_mechanisms();
    let _ = c.mail_location();
    let _ = c.login_trusted_networks();
    let _ = c.auth_failure_delay();
    let _ = c.auth_cache_size();
});
