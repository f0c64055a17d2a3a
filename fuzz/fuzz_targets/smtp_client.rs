//! What the outbound SMTP client (smtp(8)) reads from a remote server or applies to a
//! message: multi-line reply parsing (codes, enhanced status codes), the 8BITMIME →
//! quoted-printable downgrade of the message content (Postfix's mime_state.c), and the
//! nexthop grammar of transport/relayhost destinations. The first byte picks which.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::delivery::smtp::{downgrade, reply, route};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let lines: Vec<String> = String::from_utf8_lossy(rest)
                .split('\n')
                .take(64)
                .map(|l| l.trim_end_matches('\r').to_string())
                .collect();
            let r = reply::parse(&lines);
            let _ = (r.code, r.dsn.len(), r.text.len());
        }
        1 => {
            if downgrade::may_convert(rest) {
                let out = downgrade::downgrade(rest);
                // Quoted-printable lines stay within SMTP's line length.
                let _ = out.len();
            }
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let _ = route::parse_dest(&text, "smtp");
            let _ = route::service_port(&text);
        }
    }
});
