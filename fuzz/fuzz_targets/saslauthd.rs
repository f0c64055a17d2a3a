//! The saslauthd wire protocol as the daemon decodes it (four counted fields: login,
//! password, service, realm; `MAX_REQ_LEN`), requests read back to back from one stream,
//! each answered by the `getpwent` mechanism; and SMTP AUTH's PLAIN decoding.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::auth::saslauthd::{self, LogSink, Mech, ReadResult, Server};
use std::sync::OnceLock;
use std::time::Duration;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::note_input(data);
    let server = Server {
        mech: Mech::Getpwent,
        concat_realm: data.first().is_some_and(|b| b & 1 == 1),
        workers: 1,
        timeout: Duration::from_secs(5),
        log: LogSink::Syslog,
    };
    let mut r = data;
    runtime().block_on(async {
        for _ in 0..8 {
            match saslauthd::read_request(&mut r).await {
                ReadResult::Request(req) => {
                    let reply = saslauthd::do_auth(&server, &req);
                    let _ = saslauthd::reply_frame(&reply);
                }
                ReadResult::Refuse { reply, .. } => {
                    let _ = saslauthd::reply_frame(&reply);
                    break;
                }
                ReadResult::Truncated => break,
            }
        }
    });
    let text = String::from_utf8_lossy(data);
    let _ = postern::auth::sasl::decode_plain(&text);
    let _ = postern::auth::sasl::unb64(&text);
});
