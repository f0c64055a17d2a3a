//! The relay-trick matrix (issue 17, item 5): from a client outside `mynetworks`
//! (127.0.0.2), every address trick (`user%other@host`, bang paths, `@route:` source
//! routes, quoted local parts holding `@` or `%`, address literals, trailing dots, case,
//! `<>`, IDN) sent as RCPT TO to a Postern started with `postfix start` and
//! compat-fixtures/relay/main.cf, answered as the real Postfix 3.7.11 answered the same
//! client with the same main.cf (compat-fixtures/relay/postfix-3.7.txt,
//! scripts/regen-relay-fixtures; both sides run scripts/relay-matrix).

mod common;
use common::*;

#[test]
fn relay_tricks_are_answered_as_postfix_answers_them() {
    let fx = repo_root().join("compat-fixtures/relay");
    let main = std::fs::read_to_string(fx.join("main.cf")).expect("main.cf");
    let want = std::fs::read_to_string(fx.join("postfix-3.7.txt")).expect("fixture");
    let inst = Instance::start(&main, "");
    let (out, err, code) = {
        let o = std::process::Command::new(repo_root().join("scripts/relay-matrix"))
            .arg(inst.port.to_string())
            .arg("127.0.0.2")
            .output()
            .expect("relay-matrix");
        (
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
            o.status.code(),
        )
    };
    assert_eq!(code, Some(0), "{err}");
    let mut diffs = Vec::new();
    for (w, g) in want.lines().zip(out.lines()) {
        if w != g {
            diffs.push(format!("Postfix: {w}\nPostern: {g}"));
        }
    }
    assert_eq!(want.lines().count(), out.lines().count(), "{out}");
    assert!(diffs.is_empty(), "{}\n{}", diffs.join("\n"), inst.log());
    // Nothing was relayed or queued.
    assert!(!inst.log().contains("status=sent"), "{}", inst.log());
}
