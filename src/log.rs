//! Mail logging in Postfix's format (`postfix/smtpd[PID]: text`). Placeholder writing to
//! stderr; the real sink (syslog `/dev/log` facility `mail`, or `maillog_file`) is being
//! written. Keep these signatures: every service logs through them.

/// Log one informational line under `ident` (e.g. `postfix/smtpd`).
pub fn info(ident: &str, text: &str) {
    eprintln!("{ident}[{}]: {text}", std::process::id());
}

/// Log a warning: Postfix prefixes the text with `warning: `.
pub fn warning(ident: &str, text: &str) {
    info(ident, &format!("warning: {text}"));
}

/// Log an error that ends the operation (`fatal: `), without exiting.
pub fn fatal(ident: &str, text: &str) {
    info(ident, &format!("fatal: {text}"));
}
