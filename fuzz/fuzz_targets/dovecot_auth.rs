//! Dovecot's auth client protocol as the auth server decodes it (`VERSION`, `CPID`,
//! `AUTH id mech service=… resp=…`, `CONT id data`, tab escapes, base64, PLAIN and LOGIN
//! exchanges), with a passwd-file passdb; then the tab-escaping both sides use.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::auth::dovecot::DovecotAuth;
use postern::auth::dovecot_proto;
use postern::config::dovecot::DovecotConf;
use std::sync::{Arc, OnceLock};

#[path = "common.rs"]
mod common;

struct Setup {
    rt: tokio::runtime::Runtime,
    auth: Arc<DovecotAuth>,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let dir = common::scratch("dovecot-auth");
        let users = dir.join("users");
        std::fs::write(
            &users,
            "alice:{PLAIN}secret:1000:1000::/home/alice::\nbob:{PLAIN}x:1001:1001::/home/bob::\n",
        )
        .expect("users file");
        let conf = format!(
            "auth_mechanisms = plain login\nauth_failure_delay = 0\n\
             passdb {{\n  driver = passwd-file\n  args = {0}\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {0}\n}}\n",
            users.display()
        );
        let conf = DovecotConf::from_str(&conf, &dir.join("dovecot.conf")).expect("dovecot.conf");
        let auth = DovecotAuth::from_conf(&conf).expect("auth");
        Setup {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            auth: Arc::new(auth),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let s = setup();
    // An even first byte gives the handshake, so that the fuzzer's bytes reach AUTH and
    // CONT; an odd one lets it write its own.
    let mut input = Vec::new();
    if data.first().is_some_and(|b| b & 1 == 0) {
        input.extend_from_slice(b"VERSION\t1\t0\nCPID\t1\n");
    }
    input.extend_from_slice(data);
    let reader = std::io::Cursor::new(input);
    s.rt.block_on(dovecot_proto::serve_connection(
        reader,
        tokio::io::sink(),
        s.auth.clone(),
        1,
    ));
    let text = String::from_utf8_lossy(data);
    assert_eq!(
        dovecot_proto::tab_unescape(&dovecot_proto::tab_escape(&text)),
        text,
        "tab escaping does not round-trip"
    );
    let _ = dovecot_proto::tab_unescape(&text);
});
