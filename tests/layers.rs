//! The layers of DESIGN.md §2 point one way: a module of the crate may use only modules of a
//! lower layer (and its own). This test reads `src/`, finds every `crate::` path outside
//! comments (`use crate::x::…`, `use crate::{x, y::…}`, `crate::x::f()` in code) and fails,
//! naming file and line, when one points at a higher layer, so an import circle cannot come
//! back unnoticed (issue 16).

use std::path::{Path, PathBuf};

/// Lowest first. Modules in one layer must not use each other.
const LAYERS: &[&[&str]] = &[
    &["config"],
    // The C library's calendar time, which the log lines need; it uses nothing else.
    &["sys::time"],
    &["log"],
    &["sys"],
    // Decides when memory goes back; sys::mem makes the calls.
    &["memory"],
    &["tls", "dns"],
    &["maps"],
    &["resolve"],
    &["queue", "mailbox"],
    &["auth"],
    &["delivery"],
    // The SMTP server and the queue manager meet only through the queue.
    &["smtpd", "qmgr"],
    // IMAP's grammar (the command reader), shared by the login stage and imapd as
    // Dovecot's lib-imap is by imap-login and imap.
    &["imap"],
    // The login stage and the mail-process host; the services name themselves to it
    // from above (`cli::dovecot`), so it knows neither.
    &["login"],
    &["pop3d", "imapd"],
    &["master"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|mods| mods.contains(&module))
}

/// The top-level module a file of `src/` belongs to (`src/queue/file.rs` → `queue`,
/// `src/log.rs` → `log`); `None` for the crate root files.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts = rel
        .components()
        .map(|c| c.as_os_str().to_str().unwrap_or(""));
    let first = parts.next()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    // A submodule that has a layer of its own (`sys::time`).
    if let Some(second) = parts.next() {
        let sub = format!("{name}::{}", second.strip_suffix(".rs").unwrap_or(second));
        if layer_of(&sub).is_some() {
            return Some(sub);
        }
    }
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The text with comments blanked out (line and block comments, doc comments included),
/// string and char literals kept apart so that `"//"` inside one is not a comment. Line
/// breaks stay, so line numbers still match.
fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == b'\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if b[i] == b'r'
            && (i == 0
                || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
                || b[i - 1] == b'b')
            && raw_string_hashes(&b[i + 1..]).is_some()
        {
            // A raw string `r#"…"#`: blanked up to the quote followed by as many `#`.
            let hashes = raw_string_hashes(&b[i + 1..]).unwrap_or(0);
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            i += 1 + hashes + 1;
            out.push(' ');
            while i < b.len() && !b[i..].starts_with(&close) {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += close.len();
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            // A char literal with an escape: `'\''`, `'\\'`, `'\u{…}'`.
            i += 3;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // A plain char literal such as `'"'` (a lifetime `'a` has no closing quote).
            i += 3;
            out.push(' ');
        } else if b[i] == b'"' {
            // A string literal: copied as blanks (keeping line breaks) up to its closing
            // quote, escapes skipped.
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                if b.get(i) == Some(&b'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
        } else {
            let c = text[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// For text right after an `r`: the number of `#` before the opening quote of a raw string,
/// or `None` when this is no raw string.
fn raw_string_hashes(b: &[u8]) -> Option<usize> {
    let n = b.iter().take_while(|&&c| c == b'#').count();
    (b.get(n) == Some(&b'"')).then_some(n)
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules named by the `crate::` paths of `code`, with their line numbers.
fn crate_uses(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find("crate::") {
        let at = from + pos;
        from = at + "crate::".len();
        // `postern_crate::` or `$crate::` are other names.
        if code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let rest = code[from..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::X, b, c::{D, E}}`: the first name of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphabetic() || c == '_') => {
                        found.push((line, ident_at(&group[i..]).to_string()));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let id = ident_at(rest);
            if !id.is_empty() {
                // `crate::sys::time::…` is `sys::time` when that has a layer of its own.
                let sub = rest[id.len()..]
                    .strip_prefix("::")
                    .map(|r| format!("{id}::{}", ident_at(r)))
                    .filter(|sub| layer_of(sub).is_some());
                found.push((line, sub.unwrap_or_else(|| id.to_string())));
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src/") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every use of a module that is not below the user, as `file:line: a uses b (…)`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for f in &files {
        let Some(module) = module_of(src, f) else {
            continue;
        };
        let Some(mine) = layer_of(&module) else {
            bad.push(format!(
                "{}: module `{module}` is in no layer of tests/layers.rs",
                f.display()
            ));
            continue;
        };
        let code = strip_comments(&std::fs::read_to_string(f).expect("read source"));
        for (line, used) in crate_uses(&code) {
            if used == module || used == "self" || used == "super" {
                continue;
            }
            let Some(theirs) = layer_of(&used) else {
                // A macro or item of the crate root (`crate::some_macro!`) is no layer.
                continue;
            };
            if theirs >= mine {
                bad.push(format!(
                    "{}:{line}: `{module}` uses `{used}`, which is {} it",
                    f.display(),
                    if theirs > mine { "above" } else { "beside" }
                ));
            }
        }
    }
    bad
}

#[test]
fn modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(
        bad.is_empty(),
        "{} uses against the layer order (DESIGN.md §2, tests/layers.rs LAYERS):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn the_parser_sees_every_form_of_use() {
    let code = strip_comments(
        "use crate::config::X; use crate::sys::time::local;\n\
         // crate::cli in a comment\n\
         /* crate::master\n in a block */ let s = \"crate::qmgr\"; let q = '\"';\n\
         let r = r#\"crate::smtpd \" crate::master\"#; let e = '\\''; let c = 'x';\n\
         use crate::{maps::{A, B}, queue, sys::fsid::*};\n\
         fn f() { crate::log::warning(\"x\", \"y\"); $crate::no::x; }\n",
    );
    let uses: Vec<(usize, String)> = crate_uses(&code);
    let names: Vec<(usize, &str)> = uses.iter().map(|(l, n)| (*l, n.as_str())).collect();
    assert_eq!(
        names,
        [
            (1, "config"),
            (1, "sys::time"),
            (6, "maps"),
            (6, "queue"),
            (6, "sys"),
            (7, "log")
        ]
    );
}

#[test]
fn an_upward_use_is_found() {
    let dir = std::env::temp_dir().join(format!("postern-layers-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("config")).expect("mkdir");
    std::fs::write(dir.join("config/mod.rs"), "use crate::cli::dispatch;\n").expect("write");
    std::fs::write(dir.join("cli.rs"), "use crate::config::X;\n").expect("write");
    let bad = violations(&dir);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].contains("`config` uses `cli`, which is above it"),
        "{bad:?}"
    );
}

/// The modules and functions that may still hold `unsafe` of their own, outside `sys`
/// (`#[allow(unsafe_code)]` under the crate's `#![deny(unsafe_code)]`). XXX (issue 16
/// item 4): each is to move its system calls into `src/sys`; take it off this list then.
/// A new entry needs a reason in review, which is what this list is for.
const UNSAFE_ALLOWED: &[&str] = &["src/lib.rs: mod sys"];

/// Every `allow(unsafe_code)` in `src/` as `file: mod NAME` or `file: fn NAME` (the item
/// it is on), sorted.
fn unsafe_allowed(root: &Path) -> Vec<String> {
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for f in &files {
        let code = strip_comments(&std::fs::read_to_string(f).expect("read source"));
        let rel = f.strip_prefix(root).unwrap_or(f).display().to_string();
        let mut from = 0;
        while let Some(pos) = code[from..].find("allow(unsafe_code)") {
            from += pos + "allow(unsafe_code)".len();
            let rest = &code[from..];
            let item = ["mod ", "fn "]
                .iter()
                .filter_map(|k| rest.find(k).map(|i| (i, *k)))
                .min()
                .map(|(i, k)| format!("{}{}", k, ident_at(&rest[i + k.len()..])))
                .unwrap_or_default();
            found.push(format!("{rel}: {item}"));
        }
    }
    found.sort();
    found
}

#[test]
fn unsafe_code_stays_in_sys_and_the_listed_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("read lib.rs");
    assert!(
        lib.contains("#![deny(unsafe_code)]"),
        "src/lib.rs must deny unsafe_code for the whole crate"
    );
    let found = unsafe_allowed(root);
    let mut want: Vec<String> = UNSAFE_ALLOWED.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        found, want,
        "allow(unsafe_code) outside the list of tests/layers.rs (left: found in src/): put \
         new system calls in src/sys; when a module no longer needs unsafe, take it off"
    );
}
