//! `doveconf -n` output as Dovecot 2.3.19 prints it (`doveconf.c` config_dump_human,
//! `config-request.c` settings_export, `sysinfo-get.c`), checked byte for byte against the
//! real program (`compat-fixtures/dovecot/`).
//!
//! What is printed: global settings whose value differs from the 2.3.19 default; sections
//! (`service`, `namespace`, `passdb`, …) with the settings set inside them (passdb/userdb:
//! those differing from their defaults; namespaces always show `location` and `prefix`);
//! empty sections are left out; everything sorted by key the way doveconf sorts its
//! `key=value` strings; then each filter (`protocol imap {}`, …) in file order with the
//! settings set inside it. Values with `#` or leading/trailing white space are quoted;
//! `ssl_key`, `ssl_dh`, `*_key` and `*_password` values are hidden unless `-P`.
//!
//! Limits: nested filters (`local X { protocol imap { } }`) print nested, as written, where
//! doveconf prints them in its fixed local/local_name/remote/protocol order.

use std::cmp::Ordering;
use std::path::Path;

use super::settings;
use super::{Block, DovecotConf, is_filter};

/// The version line doveconf starts with.
pub const VERSION_LINE: &str = "# 2.3.19.1 (9b53102964): ";
pub const PIGEONHOLE_LINE: &str = "# Pigeonhole version 0.5.19 (4eae2f79)";

/// The `# …` header: version and file, Pigeonhole, OS (uname, distribution, file system of
/// `mail_location`), host name.
pub fn header(file: &str, mail_location: &str) -> String {
    let mut s = format!("{VERSION_LINE}{file}\n{PIGEONHOLE_LINE}\n");
    if let Ok(u) = nix::sys::utsname::uname() {
        let sys = u.sysname().to_string_lossy().into_owned();
        let distro = if sys == "Linux" {
            distro()
        } else {
            String::new()
        };
        s.push_str(&format!(
            "# OS: {} {} {} {} {}\n",
            sys,
            u.release().to_string_lossy(),
            u.machine().to_string_lossy(),
            distro,
            filesystem(mail_location)
        ));
    }
    if let Ok(h) = nix::unistd::gethostname() {
        s.push_str(&format!("# Hostname: {}\n", h.to_string_lossy()));
    }
    s
}

fn read_small(path: &str) -> Option<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(1024)
        .read_to_end(&mut buf)
        .ok()?;
    if buf.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// `distro_get()`: `/etc/lsb-release` DISTRIB_DESCRIPTION, else the first release file found.
fn distro() -> String {
    if let Some(data) = read_small("/etc/lsb-release")
        && let Some(line) = data.lines().find(|l| l.starts_with("DISTRIB_DESCRIPTION="))
    {
        let v = &line[20..];
        return match v.strip_prefix('"') {
            Some(q) => q
                .rsplit_once('"')
                .map(|(a, _)| a)
                .unwrap_or(q)
                .replace('\\', ""),
            None => v.to_string(),
        };
    }
    let files = [
        ("", "/etc/redhat-release"),
        ("", "/etc/SuSE-release"),
        ("", "/etc/mandriva-release"),
        ("", "/etc/fedora-release"),
        ("", "/etc/sourcemage-release"),
        ("", "/etc/slackware-version"),
        ("", "/etc/gentoo-release"),
        ("Debian ", "/etc/debian_version"),
    ];
    for (prefix, f) in files {
        if let Some(data) = read_small(f) {
            return format!("{prefix}{}", data.split('\n').next().unwrap_or(""));
        }
    }
    String::new()
}

/// `filesystem_get()`: the mount type under a `/path/%u`-style mail_location.
fn filesystem(mail_location: &str) -> String {
    let path = match mail_location.split_once(':') {
        Some((_, rest)) => rest.split(':').next().unwrap_or(""),
        None => mail_location,
    };
    if path.starts_with('~') {
        return String::new();
    }
    let path = path.split('%').next().unwrap_or("");
    if path.len() <= 1 {
        return String::new();
    }
    mount_type(Path::new(path)).unwrap_or_default()
}

fn mount_type(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let mut found = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 3 {
            continue;
        }
        let dir = f[1].replace("\\040", " ");
        if std::fs::metadata(&dir).map(|m| m.dev()).ok() == Some(dev) {
            found = Some(f[2].to_string());
        }
    }
    found
}

/// doveconf's sort: bytes compared as signed chars (so `\xff`-style bytes sort first).
fn cmp_keys(a: &str, b: &str) -> Ordering {
    let a = a.bytes().map(|x| x as i8);
    let b = b.bytes().map(|x| x as i8);
    a.cmp(b)
}

fn need_quote(v: &str) -> bool {
    !v.is_empty() && (v.contains('#') || v.starts_with([' ', '\t']) || v.ends_with([' ', '\t']))
}

/// Dovecot's `str_escape()`.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\'' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

fn hidden(key: &str) -> bool {
    key.ends_with("_password")
        || key.ends_with("_api_key")
        || key.ends_with("_key")
        || key.starts_with("ssl_key")
        || key == "ssl_dh"
}

fn setting_line(out: &mut String, indent: usize, key: &str, value: &str, show_passwords: bool) {
    out.push_str(&"  ".repeat(indent));
    out.push_str(key);
    out.push_str(" = ");
    if !show_passwords && !value.is_empty() && hidden(key) {
        out.push_str("# hidden, use -P to show it");
    } else if need_quote(value) {
        out.push('"');
        out.push_str(&escape(value));
        out.push('"');
    } else {
        out.push_str(value);
    }
    out.push('\n');
}

enum Item<'a> {
    Setting(String, String),
    Block(&'a Block),
}

/// The settings of `b` that `-n` shows.
fn shown_settings(b: &Block, top: bool) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    for (k, val) in &b.settings {
        let show = if top {
            settings::lookup("global", k).is_none_or(|d| d.default != val.value)
        } else if matches!(b.kind.as_str(), "passdb" | "userdb") {
            settings::lookup(&b.kind, k).is_none_or(|d| d.default != val.value)
        } else {
            true
        };
        if show {
            v.push((k.clone(), val.value.clone()));
        }
    }
    if b.kind == "namespace" {
        for k in ["location", "prefix"] {
            if !b.settings.contains_key(k) {
                v.push((k.to_string(), String::new()));
            }
        }
    }
    v
}

/// Render the contents of `b` (sorted) at `indent`; returns whether anything was printed.
fn render_contents(
    out: &mut String,
    b: &Block,
    indent: usize,
    top: bool,
    show_passwords: bool,
) -> bool {
    let mut items: Vec<(String, Item)> = shown_settings(b, top)
        .into_iter()
        .map(|(k, v)| (k.clone(), Item::Setting(k, v)))
        .collect();
    let mut index: std::collections::HashMap<&str, usize> = Default::default();
    for sub in &b.blocks {
        if is_filter(&sub.kind) {
            continue;
        }
        let i = index.entry(sub.kind.as_str()).or_insert(0);
        let id = match &sub.name {
            Some(n) if !matches!(sub.kind.as_str(), "passdb" | "userdb") => section_escape(n),
            _ => i.to_string(),
        };
        *i += 1;
        items.push((format!("{}/{}/", sub.kind, id), Item::Block(sub)));
    }
    items.sort_by(|a, b| cmp_keys(&a.0, &b.0));
    let mut any = false;
    for (_, item) in items {
        match item {
            Item::Setting(k, v) => {
                setting_line(out, indent, &k, &v, show_passwords);
                any = true;
            }
            Item::Block(sub) => any |= render_block(out, sub, indent, show_passwords),
        }
    }
    any
}

/// `settings_section_escape()`: section names are escaped in doveconf's sort keys, so a
/// space or `/` sorts after the name's end.
fn section_escape(n: &str) -> String {
    let mut s = String::with_capacity(n.len());
    for c in n.chars() {
        match c {
            '=' => s.push_str("\\e"),
            '/' => s.push_str("\\s"),
            '\\' => s.push_str("\\\\"),
            ' ' => s.push_str("\\_"),
            c => s.push(c),
        }
    }
    s
}

fn block_header(b: &Block) -> String {
    let mut h = b.kind.clone();
    if let Some(n) = &b.name
        && !matches!(b.kind.as_str(), "passdb" | "userdb")
    {
        if n.contains(' ') {
            h.push_str(&format!(" \"{}\"", escape(n)));
        } else {
            h.push(' ');
            h.push_str(n);
        }
    }
    h
}

fn render_block(out: &mut String, b: &Block, indent: usize, show_passwords: bool) -> bool {
    let mut inner = String::new();
    if !render_contents(&mut inner, b, indent + 1, false, show_passwords) {
        return false;
    }
    out.push_str(&"  ".repeat(indent));
    out.push_str(&block_header(b));
    out.push_str(" {\n");
    out.push_str(&inner);
    out.push_str(&"  ".repeat(indent));
    out.push_str("}\n");
    true
}

/// `doveconf -n` body (without the header): global part, then filters in file order.
/// `filter` limits the output to one setting or section name (`doveconf -n service`).
pub fn settings_text(conf: &DovecotConf, show_passwords: bool) -> String {
    let mut out = String::new();
    render_contents(&mut out, &conf.root, 0, true, show_passwords);
    for f in conf.root.blocks.iter().filter(|b| is_filter(&b.kind)) {
        render_block(&mut out, f, 0, show_passwords);
    }
    out
}

/// The part of [`settings_text`] about `name` (a setting or a section kind), as
/// `doveconf -n NAME` prints it.
pub fn filtered_text(conf: &DovecotConf, name: &str, show_passwords: bool) -> String {
    let mut out = String::new();
    if let Some(v) = conf.root.settings.get(name) {
        setting_line(&mut out, 0, name, &v.value, show_passwords);
        return out;
    }
    for b in conf.root.blocks.iter().filter(|b| b.kind == name) {
        render_block(&mut out, b, 0, show_passwords);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_and_quote() {
        assert_eq!(
            cmp_keys("service/auth-worker/", "service/auth/"),
            Ordering::Less
        );
        assert_eq!(cmp_keys("a", "a_b"), Ordering::Less);
        assert!(need_quote(" imap pop3"));
        assert!(need_quote("x # y"));
        assert!(!need_quote(""));
        assert_eq!(escape("a\"b"), "a\\\"b");
    }

    #[test]
    fn renders_sections() {
        let c = DovecotConf::from_str(
            "passdb {\n driver = pam\n deny = no\n}\nnamespace inbox {\n inbox = yes\n}\nprotocols = $protocols imap\n",
            Path::new("t.conf"),
        )
        .unwrap();
        assert_eq!(
            settings_text(&c, false),
            "namespace inbox {\n  inbox = yes\n  location = \n  prefix = \n}\npassdb {\n  driver = pam\n}\nprotocols = \" imap\"\n"
        );
    }
}
