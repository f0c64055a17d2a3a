//! The message functions against what the real Dovecot 2.3.19 answered for the corpus in
//! `compat-fixtures/imap/` (recorded by `scripts/regen-imap-fixtures`): every FETCH item
//! of every message, byte for byte.

use super::fetch::{self, Section};
use super::mime::Message;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat-fixtures/imap")
}

/// The C:/S: records of a fixture file.
pub fn records(data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    let field = |i: &mut usize, prefix: &[u8]| -> Vec<u8> {
        assert_eq!(&data[*i..*i + 3], prefix);
        let nl = *i
            + data[*i..]
                .iter()
                .position(|&c| c == b'\n')
                .expect("length line");
        let n: usize = std::str::from_utf8(&data[*i + 3..nl])
            .expect("utf8")
            .parse()
            .expect("length");
        let v = data[nl + 1..nl + 1 + n].to_vec();
        *i = nl + 1 + n + 1;
        v
    };
    while i < data.len() {
        let c = field(&mut i, b"C: ");
        let s = field(&mut i, b"S: ");
        out.push((c, s));
    }
    out
}

fn literal(out: &mut Vec<u8>, data: &[u8], binary: bool) {
    out.extend_from_slice(
        format!("{}{{{}}}\r\n", if binary { "~" } else { "" }, data.len()).as_bytes(),
    );
    out.extend_from_slice(data);
}

/// Our answer to `FETCH n (ITEM)`, or `None` for items not computed here.
fn ours(msg: &Message, item: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match item {
        "ENVELOPE" => {
            out.extend_from_slice(b"ENVELOPE (");
            out.extend(fetch::envelope(msg));
            out.push(b')');
        }
        "BODYSTRUCTURE" | "BODY" => {
            out.extend_from_slice(item.as_bytes());
            out.extend_from_slice(b" (");
            fetch::bodystructure(&mut out, &msg.root, &msg.raw, item == "BODYSTRUCTURE");
            out.push(b')');
        }
        "RFC822.SIZE" => out.extend_from_slice(format!("RFC822.SIZE {}", msg.raw.len()).as_bytes()),
        "RFC822.HEADER" | "RFC822.TEXT" => {
            out.extend_from_slice(item.as_bytes());
            out.push(b' ');
            let s = Section {
                path: vec![],
                text: if item == "RFC822.HEADER" {
                    fetch::SectionText::Header
                } else {
                    fetch::SectionText::Text
                },
            };
            literal(&mut out, &fetch::section_bytes(msg, &s)?, false);
        }
        _ => {
            let (kind, rest) = if let Some(r) = item.strip_prefix("BODY.PEEK[") {
                ("BODY", r)
            } else if let Some(r) = item.strip_prefix("BINARY.PEEK[") {
                ("BINARY", r)
            } else if let Some(r) = item.strip_prefix("BINARY.SIZE[") {
                ("BINARY.SIZE", r)
            } else {
                return None;
            };
            let close = rest.rfind(']')?;
            let sec = fetch::parse_section(&rest[..close])?;
            let part = &rest[close + 1..];
            let partial = part
                .strip_prefix('<')
                .and_then(|p| p.strip_suffix('>'))
                .map(|p| {
                    let mut it = p.split('.');
                    let o: u64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
                    (o, it.next().and_then(|x| x.parse::<u64>().ok()))
                });
            let name = fetch::section_name(&sec);
            let (data, binary) = if kind == "BODY" {
                (fetch::section_bytes(msg, &sec).unwrap_or_default(), false)
            } else {
                if sec.text != fetch::SectionText::Whole {
                    return None;
                }
                fetch::binary(msg, &sec.path)?
            };
            if kind == "BINARY.SIZE" {
                let Some(n) = fetch::binary_size(msg, &sec.path) else {
                    return Some(b"NO".to_vec());
                };
                let _ = data;
                out.extend_from_slice(format!("BINARY.SIZE[{name}] {n}").as_bytes());
                return Some(out);
            }
            out.extend_from_slice(format!("{kind}[{name}]").as_bytes());
            let data = match partial {
                Some((o, c)) => {
                    out.extend_from_slice(format!("<{o}>").as_bytes());
                    fetch::partial(&data, o, c).to_vec()
                }
                None => data,
            };
            out.push(b' ');
            literal(&mut out, &data, binary);
        }
    }
    Some(out)
}

#[test]
fn fixture_fetch_items_match_dovecot() {
    let dir = fixtures();
    let mut names: Vec<_> = std::fs::read_dir(dir.join("corpus"))
        .expect("corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".eml"))
        .collect();
    names.sort();
    let (mut compared, mut skipped) = (0, 0);
    let mut mismatches = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let raw = std::fs::read(dir.join("corpus").join(name)).expect("eml");
        let msg = Message::new(&raw);
        let fx = std::fs::read(dir.join("fetch").join(name.replace(".eml", ".txt")))
            .expect("fetch fixture");
        for (cmd, resp) in records(&fx) {
            let cmd = String::from_utf8_lossy(&cmd).into_owned();
            let item = cmd
                .split_once(" (")
                .map(|(_, r)| r.trim_end_matches(')'))
                .unwrap_or("");
            let prefix = format!("* {} FETCH (", i + 1);
            let Some(body) = resp.strip_prefix(prefix.as_bytes()) else {
                skipped += 1; // a BAD/NO: the command layer's business
                continue;
            };
            let end = body
                .windows(3)
                .position(|w| w == b")\r\n")
                .map(|p| body.len() - body[p..].len());
            // The item runs to the last ")\r\n" of the untagged line (literals may hold ")\r\n").
            let tag_line = body.len()
                - body
                    .iter()
                    .rev()
                    .skip(2)
                    .position(|&c| c == b'\n')
                    .map_or(body.len(), |p| p + 2);
            let _ = end;
            let theirs = &body[..tag_line.saturating_sub(3)];
            let Some(mine) = ours(&msg, item) else {
                skipped += 1;
                continue;
            };
            // Dovecot's refusal (`NO [UNKNOWN-CTE]`) after an untagged UID.
            let theirs: &[u8] = if resp.windows(26).any(|w| w == b" NO [UNKNOWN-CTE] Unknown ") {
                b"NO"
            } else {
                theirs
            };
            compared += 1;
            if mine != theirs {
                mismatches.push(format!(
                    "{name} {item}:\n  dovecot: {}\n  ours:    {}",
                    String::from_utf8_lossy(&theirs[..theirs.len().min(600)]),
                    String::from_utf8_lossy(&mine[..mine.len().min(600)])
                ));
            }
        }
    }
    eprintln!(
        "compared {compared}, skipped {skipped}, mismatched {}",
        mismatches.len()
    );
    for m in mismatches.iter().take(400) {
        eprintln!("{m}");
    }
    assert!(compared > 2000, "{compared}");
    assert!(
        mismatches.is_empty(),
        "{} of {compared} items differ from Dovecot",
        mismatches.len()
    );
}
