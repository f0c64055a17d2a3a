//! Postfix `main.cf`: the pest grammar in `maincf.pest`, assembly of logical lines as Postfix's
//! `readllines()` does, and `name = value` splitting as its `split_nameval()` does.
//!
//! Relevant behaviour (checked against Postfix 3.7.11's `postconf`, see `tests/postconf_*`):
//! * `#` starts a comment only as the first non-blank character of a line;
//! * a line starting with white space continues the previous logical line, even across
//!   blank and comment lines; the pieces are joined with the newline removed, and trailing
//!   white space of the whole value is trimmed;
//! * a logical line that starts with white space (a continuation with nothing before it) is
//!   ignored with `logical line must not start with whitespace`;
//! * a line without `=` is fatal: `FILE, line N: missing '=' after attribute name: "TEXT"`,
//!   where N is the first physical line of the logical line;
//! * the last definition of a name wins.
//!
//! One documented extension (TUTORIAL.md step 3): a column-0 line without `=` whose words are
//! all restriction names (or lookup tables, or domain-like list items) right after a
//! list-valued parameter is taken as a continuation of it, with a warning naming file and line.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use pest::Parser;
use pest_derive::Parser;

use super::ConfigError;
use super::text::{self, Encoding};

#[derive(Parser)]
#[grammar = "config/maincf.pest"]
struct MainCfGrammar;

/// One `name = value` setting as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub name: String,
    /// The value as written (continuations joined, trailing white space trimmed), unexpanded.
    pub value: String,
    /// First physical line of the logical line that set it (1-based).
    pub line: usize,
}

/// A parsed `main.cf`.
#[derive(Debug, Clone, Default)]
pub struct MainCf {
    pub path: PathBuf,
    pub encoding: Encoding,
    /// Settings in order of first appearance; a later definition replaces the value.
    pub settings: IndexMap<String, Setting>,
    /// Warnings without the program prefix, e.g. `/etc/postfix/main.cf: logical line must …`.
    pub warnings: Vec<String>,
}

impl MainCf {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.settings.get(name).map(|s| s.value.as_str())
    }
}

/// A physical line, classified by the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Comment,
    Blank,
    Continuation,
    Text,
}

#[derive(Debug, Clone)]
pub struct PhysLine<'a> {
    pub kind: LineKind,
    /// The line without its line end.
    pub text: &'a str,
    /// The line with its line end, exactly as in the file.
    pub raw: &'a str,
    /// 1-based line number.
    pub number: usize,
}

/// Split text into classified physical lines with the pest grammar.
pub fn physical_lines<'a>(text: &'a str, path: &Path) -> Result<Vec<PhysLine<'a>>, ConfigError> {
    let file = MainCfGrammar::parse(Rule::file, text)
        .map_err(|e| ConfigError::InFile {
            file: path.to_path_buf(),
            msg: format!("cannot parse: {e}"),
        })?
        .next()
        .expect("grammar yields one file");
    let mut out: Vec<PhysLine<'a>> = Vec::new();
    let mut number = 0;
    for pair in file.into_inner() {
        let kind = match pair.as_rule() {
            Rule::comment => LineKind::Comment,
            Rule::blank => LineKind::Blank,
            Rule::cont => LineKind::Continuation,
            Rule::text => LineKind::Text,
            _ => continue,
        };
        number += 1;
        let span = pair.as_span();
        let start = span.start();
        let mut end = span.end();
        // Include the line end in `raw`.
        let bytes = text.as_bytes();
        if bytes.get(end) == Some(&b'\r') && bytes.get(end + 1) == Some(&b'\n') {
            end += 2;
        } else if bytes.get(end) == Some(&b'\n') {
            end += 1;
        }
        let line_text = span.as_str();
        let line_text = line_text.strip_suffix('\r').unwrap_or(line_text);
        // The final `line?` may match the empty text after the last newline: not a line.
        if start == text.len() && line_text.is_empty() {
            continue;
        }
        let kind = if kind == LineKind::Text && line_text.is_empty() {
            LineKind::Blank
        } else {
            kind
        };
        out.push(PhysLine {
            kind,
            text: line_text,
            raw: &text[start..end],
            number,
        });
    }
    Ok(out)
}

/// A logical line: its first physical line number and its joined text.
#[derive(Debug, Clone)]
pub struct LogicalLine {
    pub first: usize,
    pub text: String,
}

/// The result of Postfix's `split_nameval()`.
pub fn split_nameval(logical: &str) -> Result<(String, String), &'static str> {
    match MainCfGrammar::parse(Rule::assignment, logical) {
        Ok(mut pairs) => {
            let mut name = String::new();
            let mut value = String::new();
            for p in pairs.next().expect("assignment").into_inner() {
                match p.as_rule() {
                    Rule::name => name = p.as_str().to_string(),
                    Rule::value => value = p.as_str().to_string(),
                    _ => {}
                }
            }
            let value = value
                .trim_end_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b')
                .to_string();
            Ok((name, value))
        }
        Err(_) => {
            let t = logical.trim_start_matches(|c: char| c.is_ascii_whitespace());
            if t.is_empty() || t.starts_with('=') {
                Err("missing attribute name")
            } else {
                Err("missing '=' after attribute name")
            }
        }
    }
}

/// Read and parse a main.cf file.
pub fn read(path: &Path) -> Result<MainCf, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| {
        if path.is_dir() {
            // Postfix opens it, then fails to read it.
            ConfigError::Other(format!(
                "read {}: {}",
                path.display(),
                super::error::strerror(&e)
            ))
        } else {
            ConfigError::open(path, e)
        }
    })?;
    let (text, enc) = text::decode(&bytes);
    let mut m = parse(&text, path).map_err(|e| match e {
        ConfigError::AtLine { file, line, msg } => ConfigError::AtLine {
            file,
            line,
            msg: text::printable(&msg, enc),
        },
        e => e,
    })?;
    m.encoding = enc;
    Ok(m)
}

/// Parse main.cf text; `path` is used in messages.
pub fn parse(text: &str, path: &Path) -> Result<MainCf, ConfigError> {
    let lines = physical_lines(text, path)?;
    let mut m = MainCf {
        path: path.to_path_buf(),
        ..Default::default()
    };
    // Assemble logical lines (readllines()).
    let mut logical: Vec<LogicalLine> = Vec::new();
    let mut cur: Option<LogicalLine> = None;
    for pl in &lines {
        match pl.kind {
            LineKind::Comment | LineKind::Blank => {}
            LineKind::Continuation => match cur.as_mut() {
                Some(l) => l.text.push_str(pl.text),
                None => {
                    cur = Some(LogicalLine {
                        first: pl.number,
                        text: pl.text.to_string(),
                    })
                }
            },
            LineKind::Text => {
                if let Some(l) = cur.take() {
                    logical.push(l);
                }
                cur = Some(LogicalLine {
                    first: pl.number,
                    text: pl.text.to_string(),
                });
            }
        }
    }
    if let Some(l) = cur.take() {
        logical.push(l);
    }

    let mut last_name: Option<String> = None;
    for mut l in logical {
        // Postfix handles a logical line as a C string: a NUL byte ends it (the rest of the
        // line, continuation lines included, is not seen; `smtpd\0banner = x` is a name
        // without '=').
        if let Some(i) = l.text.find('\0') {
            l.text.truncate(i);
        }
        if l.text.starts_with(|c: char| c.is_ascii_whitespace()) {
            // Postfix shows at most 30 characters of the line, then "...".
            let shown = match l.text.char_indices().nth(30) {
                Some((i, _)) => format!("{}...", &l.text[..i]),
                None => l.text.clone(),
            };
            m.warnings.push(format!(
                "{}: logical line must not start with whitespace: \"{shown}\"",
                path.display()
            ));
            continue;
        }
        match split_nameval(&l.text) {
            Ok((name, value)) => {
                last_name = Some(name.clone());
                match m.settings.get_mut(&name) {
                    Some(s) => {
                        if s.value != value {
                            m.warnings.push(format!(
                                "{}, line {}: overriding earlier entry: {}={}",
                                path.display(),
                                l.first,
                                name,
                                s.value
                            ));
                        }
                        s.value = value;
                        s.line = l.first;
                    }
                    None => {
                        m.settings.insert(
                            name.clone(),
                            Setting {
                                name,
                                value,
                                line: l.first,
                            },
                        );
                    }
                }
            }
            Err(msg) => {
                // The tutorial's wrapped restriction line (TUTORIAL.md, step 3).
                if msg == "missing '=' after attribute name"
                    && let Some(prev) = last_name.as_ref()
                    && is_list_parameter(prev)
                    && looks_like_list_items(prev, &l.text)
                    && let Some(s) = m.settings.get_mut(prev)
                {
                    m.warnings.push(format!(
                        "{}, line {}: text starts in column 0 but has no '=': \"{}\"; taken as a continuation of \"{}\" (indent continuation lines with white space)",
                        path.display(),
                        l.first,
                        l.text,
                        prev
                    ));
                    let extra = l.text.trim_end();
                    if s.value.is_empty() {
                        s.value = extra.to_string();
                    } else {
                        s.value.push(' ');
                        s.value.push_str(extra);
                    }
                    continue;
                }
                return Err(ConfigError::at_line(
                    path,
                    l.first,
                    format!("{msg}: \"{}\"", l.text),
                ));
            }
        }
    }
    Ok(m)
}

/// Parameters whose value is a list, so a stray column-0 line may be read as more items.
fn is_list_parameter(name: &str) -> bool {
    name.ends_with("_restrictions")
        || name.ends_with("_maps")
        || name.ends_with("_domains")
        || matches!(
            name,
            "mydestination"
                | "mynetworks"
                | "inet_interfaces"
                | "smtpd_sasl_security_options"
                | "smtpd_sasl_tls_security_options"
                | "smtpd_discard_ehlo_keywords"
                | "smtpd_restriction_classes"
                | "authorized_submit_users"
                | "authorized_mailq_users"
                | "authorized_flush_users"
                | "debug_peer_list"
        )
}

/// Restriction names that may appear in an `smtpd_*_restrictions` list (Postfix 3.7
/// `smtpd_check.c`, plus the old names it still accepts).
pub const RESTRICTION_NAMES: &[&str] = &[
    "permit",
    "reject",
    "defer",
    "defer_if_permit",
    "defer_if_reject",
    "warn_if_reject",
    "permit_mynetworks",
    "permit_sasl_authenticated",
    "permit_auth_destination",
    "permit_mx_backup",
    "permit_naked_ip_address",
    "permit_inet_interfaces",
    "permit_tls_clientcerts",
    "permit_tls_all_clientcerts",
    "permit_dnswl_client",
    "permit_rhswl_client",
    "reject_unauth_destination",
    "defer_unauth_destination",
    "reject_unauth_pipelining",
    "reject_unknown_client_hostname",
    "reject_unknown_reverse_client_hostname",
    "reject_unknown_forward_client_hostname",
    "reject_unknown_client",
    "reject_invalid_helo_hostname",
    "reject_invalid_hostname",
    "reject_non_fqdn_helo_hostname",
    "reject_non_fqdn_hostname",
    "reject_unknown_helo_hostname",
    "reject_unknown_hostname",
    "reject_non_fqdn_sender",
    "reject_non_fqdn_recipient",
    "reject_unknown_sender_domain",
    "reject_unknown_recipient_domain",
    "reject_unknown_address",
    "reject_unlisted_recipient",
    "reject_unlisted_sender",
    "reject_unverified_recipient",
    "reject_unverified_sender",
    "reject_sender_login_mismatch",
    "reject_authenticated_sender_login_mismatch",
    "reject_known_sender_login_mismatch",
    "reject_unauthenticated_sender_login_mismatch",
    "reject_multi_recipient_bounce",
    "reject_plaintext_session",
    "reject_empty",
    "reject_rbl_client",
    "reject_rhsbl_client",
    "reject_rhsbl_sender",
    "reject_rhsbl_recipient",
    "reject_rhsbl_helo",
    "reject_rhsbl_reverse_client",
    "reject_maps_rbl",
    "reject_rbl",
    "check_relay_domains",
    "check_client_access",
    "check_reverse_client_hostname_access",
    "check_client_a_access",
    "check_client_mx_access",
    "check_client_ns_access",
    "check_helo_access",
    "check_helo_a_access",
    "check_helo_mx_access",
    "check_helo_ns_access",
    "check_sender_access",
    "check_sender_a_access",
    "check_sender_mx_access",
    "check_sender_ns_access",
    "check_recipient_access",
    "check_recipient_a_access",
    "check_recipient_mx_access",
    "check_recipient_ns_access",
    "check_etrn_access",
    "check_ccert_access",
    "check_sasl_access",
    "check_policy_service",
    "check_recipient_maps",
    "sleep",
    "noanonymous",
    "noplaintext",
    "noactive",
    "nodictionary",
    "mutual_auth",
    "forward_secrecy",
];

fn looks_like_list_items(param: &str, text: &str) -> bool {
    let words: Vec<&str> = text
        .split(|c: char| c.is_ascii_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        return false;
    }
    let restrictions = param.ends_with("_restrictions") || param.ends_with("_security_options");
    words.iter().all(|w| {
        if restrictions {
            RESTRICTION_NAMES.contains(w) || is_table_ref(w) || is_dnsbl_domain(w)
        } else {
            is_table_ref(w) || w.contains('.') || w.contains('/') || w.starts_with('$')
        }
    })
}

/// `type:name`, e.g. `hash:/etc/postfix/access`.
fn is_table_ref(w: &str) -> bool {
    match w.split_once(':') {
        Some((t, n)) => {
            !t.is_empty() && !n.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric())
        }
        None => false,
    }
}

/// The argument of `reject_rbl_client zen.spamhaus.org` and friends.
fn is_dnsbl_domain(w: &str) -> bool {
    w.contains('.')
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '=' || c == '[')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<MainCf, ConfigError> {
        parse(s, Path::new("/etc/postfix/main.cf"))
    }

    #[test]
    fn continuation_across_comments_and_blank_lines() {
        let m = p("mynetworks = 1.2.3.4\n\n  \n#c\n   #x\n  cont\n").unwrap();
        assert_eq!(m.get("mynetworks"), Some("1.2.3.4  cont"));
    }

    #[test]
    fn trailing_spaces_kept_inside_joined_value() {
        let m = p("a = x   \n  y\n").unwrap();
        assert_eq!(m.get("a"), Some("x     y"));
    }

    #[test]
    fn crlf_and_no_final_newline() {
        let m = p("a = 1\r\nb=2").unwrap();
        assert_eq!(m.get("a"), Some("1"));
        assert_eq!(m.get("b"), Some("2"));
    }

    #[test]
    fn missing_equals_is_fatal_with_first_line() {
        let e = p("mydestination = x\n\nbad line\n  cont=x\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/postfix/main.cf, line 3: missing '=' after attribute name: \"bad line  cont=x\""
        );
    }

    #[test]
    fn missing_name() {
        let e = p("= x\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/postfix/main.cf, line 1: missing attribute name: \"= x\""
        );
    }

    #[test]
    fn leading_whitespace_warns() {
        let m = p("  leading = x\nb = 1\n").unwrap();
        assert_eq!(m.get("leading"), None);
        assert_eq!(
            m.warnings,
            vec![
                "/etc/postfix/main.cf: logical line must not start with whitespace: \"  leading = x\""
            ]
        );
    }

    #[test]
    fn tutorial_wrapped_line() {
        let m = p("smtpd_recipient_restrictions = permit_mynetworks permit_sasl_authenticated\npermit_auth_destination reject\nbroken_sasl_auth_clients = yes\n").unwrap();
        assert_eq!(
            m.get("smtpd_recipient_restrictions"),
            Some("permit_mynetworks permit_sasl_authenticated permit_auth_destination reject")
        );
        assert_eq!(m.warnings.len(), 1);
        assert!(m.warnings[0].contains("line 2"));
    }

    #[test]
    fn other_column0_text_still_fatal() {
        assert!(p("mydestination = a.example\nbad line here\n").is_err());
        assert!(p("smtpd_recipient_restrictions = permit\nnot a restriction\n").is_err());
    }

    #[test]
    fn hash_inside_value_is_not_comment() {
        let m = p("a = x # y\n").unwrap();
        assert_eq!(m.get("a"), Some("x # y"));
    }

    #[test]
    fn last_definition_wins() {
        let m = p("a = 1\nb = 2\na = 3\n").unwrap();
        assert_eq!(m.get("a"), Some("3"));
        assert_eq!(m.settings.get_index_of("a"), Some(0));
    }

    #[test]
    fn huge_value() {
        let big = "x".repeat(10 * 1024 * 1024);
        let m = p(&format!("a = {big}\n")).unwrap();
        assert_eq!(m.get("a").map(|v| v.len()), Some(big.len()));
    }
}
