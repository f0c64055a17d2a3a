//! smtpd's reject lines for envelope addresses in unusual forms (issue 17): quoted local
//! parts (with spaces, escaped quotes, an `@`, quotes that need not be there, dots that
//! need them), mixed case, source routes, a trailing dot, `<>`, no angle brackets, a
//! space after the colon, ESMTP parameters, RFC 822 comments and backslash escapes (with
//! a foreign and a local domain), `<Name <u@d>>`, two addresses. scripts/reject-log-matrix runs each as one
//! session against a Postern started with compat-fixtures/reject-log/main.cf and prints
//! the replies and what smtpd logged; the output must be what the real Postfix 3.7.11
//! printed for the same sessions (compat-fixtures/reject-log/postfix-3.7.txt,
//! scripts/regen-reject-log-fixtures): the reply names the address in its internal form
//! (`<x y@other.example>`), the log's `from=<…>`/`to=<…>` in its external, quoted form
//! (`to=<"x y"@other.example>`, `from=<"user."@example.org>`,
//! `info_log_address_format = external`), a source route stripped from both.

mod common;
use common::*;

#[test]
fn reject_lines_show_unusual_addresses_as_postfix_logs_them() {
    let fx = repo_root().join("compat-fixtures/reject-log");
    let main = std::fs::read_to_string(fx.join("main.cf")).expect("main.cf");
    let want = std::fs::read_to_string(fx.join("postfix-3.7.txt")).expect("fixture");
    let inst = Instance::start(&main, "");
    let o = std::process::Command::new(repo_root().join("scripts/reject-log-matrix"))
        .arg(inst.port.to_string())
        .arg(inst.log_path())
        .arg("127.0.0.2")
        .output()
        .expect("reject-log-matrix");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let diffs = fixture_line_diffs(&want, &out);
    assert!(diffs.is_empty(), "{}\n{}", diffs.join("\n"), inst.log());
    assert_eq!(want.lines().count(), out.lines().count(), "{out}");
}
