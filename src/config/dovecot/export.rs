//! `doveconf` output as Dovecot 2.3.19 prints it, ported from `config-request.c`
//! (`settings_export()`: which settings are shown for `-n`, `-N`, `-a`) and `doveconf.c`
//! (`config_dump_human_output()`: the sorted `key=value` strings turned into indented
//! sections; `hide_secrets_from_value()`: `# hidden, use -P to show it` and
//! `#hidden_use-P_to_show#`; the filter blocks; `config_dump_one()` for `doveconf NAME`).
//!
//! Output is bytes: the parser keeps each byte of the file as one `char`, and they are
//! written back as they came.

use std::cmp::Ordering;
use std::collections::HashSet;

use super::engine::{Filter, FilterParser, NodeId, Tree, text_to_bytes};
use super::settings::{self, Kind};

/// `enum config_dump_scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `-s`: every setting.
    AllWithHidden,
    /// `-a` (the default without `-n`): every setting.
    AllWithoutHidden,
    /// `-N`: settings set in the file, even to their default.
    Set,
    /// `-n`: settings whose value is not the default.
    Changed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Normal,
    List,
    UniqueKey,
}

const LIST_PREFIX: u8 = 1;
const UNIQUE_SUFFIX: u8 = 0xff;
const INDENT: &[u8] = b"                              !!!!";

struct Export<'a> {
    tree: &'a Tree,
    scope: Scope,
    hide_list_defaults: bool,
    strings: Vec<Vec<u8>>,
    /// `key=value` in export order (`doveconf -S`).
    simple: Vec<Vec<u8>>,
    keys: HashSet<String>,
}

impl Export<'_> {
    fn callback(&mut self, key: &str, value: &str, ty: KeyType) {
        let mut raw = text_to_bytes(key);
        raw.push(b'=');
        raw.extend(text_to_bytes(value));
        self.simple.push(raw);
        let mut s = Vec::new();
        match ty {
            KeyType::Normal => {
                s.extend(text_to_bytes(key));
            }
            KeyType::List => {
                s.push(LIST_PREFIX);
                s.extend(text_to_bytes(key));
            }
            KeyType::UniqueKey => {
                let (a, b) = key.rsplit_once('/').unwrap_or(("", key));
                s.extend(text_to_bytes(a));
                s.push(b'/');
                s.push(UNIQUE_SUFFIX);
                s.extend(text_to_bytes(b));
            }
        }
        s.push(b'=');
        s.extend(text_to_bytes(value));
        self.strings.push(s);
    }

    /// `settings_export()`.
    fn node(&mut self, id: NodeId, prefix: &str, parent_unique: bool) {
        let node = &self.tree.nodes[id];
        let info = node.info;
        for (i, def) in info.defines.iter().enumerate() {
            if matches!(def.kind, Kind::Alias(_)) {
                continue;
            }
            let changed = node.changed[i];
            let mut dump_default = match self.scope {
                Scope::AllWithHidden => true,
                // A hidden setting only when it is set.
                Scope::AllWithoutHidden => !def.hidden || changed,
                Scope::Set => changed,
                Scope::Changed => false,
            };
            let is_name = info.name_key == Some(def.key.as_str());
            // HIDE_LIST_DEFAULTS inside unique sections (service {}, namespace {}, …): an
            // unchanged value counts as the default, a changed one is always shown.
            let mut same_as_value = false;
            if parent_unique && self.hide_list_defaults {
                if !changed && !is_name {
                    same_as_value = true;
                } else {
                    dump_default = true;
                }
            }
            let key = format!("{prefix}{}", def.key);
            match def.kind {
                Kind::List { unique, .. } => {
                    let children = &node.lists[i];
                    if children.is_empty() {
                        continue;
                    }
                    let names: Vec<String> = children
                        .iter()
                        .enumerate()
                        .map(|(idx, c)| self.section_name(*c, idx, unique))
                        .collect();
                    if !self.keys.contains(&key) {
                        self.callback(&key, &names.join(" "), KeyType::List);
                        self.keys.insert(key.clone());
                    }
                    for (idx, c) in children.clone().into_iter().enumerate() {
                        let p = format!("{prefix}{}/{}/", def.key, names[idx]);
                        self.node(c, &p, unique);
                    }
                }
                Kind::StrList => {
                    let Some(pairs) = &node.strlists[i] else {
                        continue;
                    };
                    if self.keys.contains(&key) {
                        continue;
                    }
                    self.keys.insert(key.clone());
                    self.callback(&key, "", KeyType::List);
                    for (k, v) in pairs.clone() {
                        self.callback(&format!("{key}/{k}"), &v, KeyType::Normal);
                    }
                }
                _ => {
                    let Some(value) = node.values[i].clone() else {
                        continue;
                    };
                    let show = if dump_default {
                        true
                    } else if same_as_value {
                        // config_export_type() compares a STR_VARS value without its
                        // expansion marker to the default with it: never equal.
                        matches!(def.kind, Kind::StrVars)
                    } else {
                        value != def.default
                    };
                    if !show {
                        continue;
                    }
                    // Non-string types are never empty when shown; an empty string is
                    // shown only when `dump` was set (strings).
                    if value.is_empty() && !matches!(def.kind, Kind::Str | Kind::StrVars) {
                        continue;
                    }
                    if self.keys.contains(&key) {
                        continue;
                    }
                    let ty = if is_name && parent_unique {
                        KeyType::UniqueKey
                    } else {
                        KeyType::Normal
                    };
                    self.callback(&key, &value, ty);
                    self.keys.insert(key);
                }
            }
        }
    }

    /// `setting_export_section_name()`.
    fn section_name(&self, c: NodeId, idx: usize, unique: bool) -> String {
        if !unique {
            return idx.to_string();
        }
        let n = self.tree.nodes[c].name();
        if n.is_empty() {
            idx.to_string()
        } else {
            settings::section_escape(n)
        }
    }
}

/// The export strings of a tree.
fn export_strings(tree: &Tree, scope: Scope) -> Vec<Vec<u8>> {
    let mut e = Export {
        tree,
        scope,
        hide_list_defaults: true,
        strings: Vec::new(),
        simple: Vec::new(),
        keys: HashSet::new(),
    };
    e.node(0, "", false);
    e.strings
}

/// `doveconf -S`: `key=value` lines in export order (`config_request_simple_stdout()`),
/// only those under the given names when there are any.
pub fn dump_simple(filters: &[FilterParser], scope: Scope, names: &[String]) -> Vec<u8> {
    let mut e = Export {
        tree: &filters[0].tree,
        scope,
        hide_list_defaults: false,
        strings: Vec::new(),
        simple: Vec::new(),
        keys: HashSet::new(),
    };
    e.node(0, "", false);
    let mut out = Vec::new();
    for line in e.simple {
        let eq = line.iter().position(|c| *c == b'=').unwrap_or(line.len());
        let key = &line[..eq];
        let wanted = names.is_empty()
            || names.iter().any(|n| {
                let n = n.as_bytes();
                key.starts_with(n) && matches!(key.get(n.len()), None | Some(b'/'))
            });
        if wanted {
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
    }
    out
}

/// `config_string_cmp()`: bytes compared as (signed) chars up to the `=`.
fn string_cmp(s1: &[u8], s2: &[u8]) -> Ordering {
    let mut i = 0;
    loop {
        let a = s1.get(i).copied().unwrap_or(0);
        let b = s2.get(i).copied().unwrap_or(0);
        if a != b {
            if a == b'=' {
                return Ordering::Less;
            }
            if b == b'=' {
                return Ordering::Greater;
            }
            return (a as i8).cmp(&(b as i8));
        }
        if a == 0 || a == b'=' {
            return Ordering::Equal;
        }
        i += 1;
    }
}

fn value_need_quote(v: &[u8]) -> bool {
    if v.is_empty() {
        return false;
    }
    v.contains(&b'#') || matches!(v[0], b' ' | b'\t') || matches!(v[v.len() - 1], b' ' | b'\t')
}

/// `str_append_escaped()`.
fn escape(out: &mut Vec<u8>, v: &[u8]) {
    for &c in v {
        if matches!(c, b'"' | b'\\' | b'\'') {
            out.push(b'\\');
        }
        out.push(c);
    }
}

fn find_sub(h: &[u8], n: &[u8]) -> Option<usize> {
    if n.is_empty() || h.len() < n.len() {
        return None;
    }
    (0..=h.len() - n.len()).find(|i| &h[*i..*i + n.len()] == n)
}

const SECRETS: [&[u8]; 6] = [
    b"key",
    b"secret",
    b"pass",
    b"http://",
    b"https://",
    b"ftp://",
];

/// `find_next_secret()`.
fn find_next_secret(input: &[u8]) -> Option<(usize, &'static [u8])> {
    let mut best: Option<(usize, &'static [u8])> = None;
    for s in SECRETS {
        if let Some(p) = find_sub(input, s)
            && best.is_none_or(|(b, _)| p < b)
        {
            best = Some((p, s));
        }
    }
    best
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// `hide_secrets_from_value()`: whether the value was written.
fn hide_secrets(out: &mut Vec<u8>, key: &[u8], value: &[u8]) -> bool {
    let quote = value_need_quote(value);
    let ends = |suffix: &[u8]| key.len() > suffix.len() && key.ends_with(suffix);
    if !value.is_empty()
        && (ends(b"_password") || ends(b"_key") || ends(b"_nonce") || key.starts_with(b"ssl_dh"))
    {
        out.extend_from_slice(b"# hidden, use -P to show it");
        return true;
    }
    let mut ret = false;
    let mut optr = 0usize;
    let mut ptr = 0usize;
    let send = |out: &mut Vec<u8>, s: &[u8]| {
        if quote {
            escape(out, s);
        } else {
            out.extend_from_slice(s);
        }
    };
    while let Some((rel, secret)) = find_next_secret(&value[ptr..]) {
        ptr += rel;
        if find_sub(secret, b"://").is_some() {
            ptr += secret.len();
            // hide_url_userpart_from_value()
            let start_of_user = ptr;
            let mut start_of_host = None;
            while ptr < value.len() && !is_space(value[ptr]) && value[ptr] != b'/' {
                if value[ptr] == b'@' {
                    start_of_host = Some(ptr);
                    break;
                }
                ptr += 1;
            }
            send(out, &value[optr..start_of_user]);
            if start_of_host.is_some_and(|h| h != start_of_user) {
                out.extend_from_slice(b"#hidden_use-P_to_show#");
            } else {
                send(out, &value[start_of_user..ptr]);
            }
            optr = ptr;
            ret = true;
            continue;
        }
        ret = true;
        if ptr == 0 || !value[ptr - 1].is_ascii_alphanumeric() {
            while ptr < value.len() && value[ptr] != b'=' && !is_space(value[ptr]) {
                ptr += 1;
            }
            while ptr < value.len() && is_space(value[ptr]) {
                ptr += 1;
            }
            send(out, &value[optr..ptr]);
            if ptr < value.len() && value[ptr] == b'=' {
                out.push(b'=');
                out.extend_from_slice(b"#hidden_use-P_to_show#");
                while ptr < value.len()
                    && !is_space(value[ptr])
                    && value[ptr] != b';'
                    && value[ptr] != b':'
                {
                    ptr += 1;
                }
            }
            optr = ptr;
        } else {
            ptr += 1;
        }
    }
    if ret {
        send(out, &value[optr..]);
    }
    ret
}

/// `config_dump_human_output()`: sorted strings into indented text. `indent` starts the
/// keys (inside filter blocks); the section headers of `list_prefix` are written only
/// before the first line under them. Returns whether anything was written.
fn human_output(
    out: &mut Vec<u8>,
    mut strings: Vec<Vec<u8>>,
    mut indent: usize,
    mut list_prefix: Vec<u8>,
    name_filter: Option<&str>,
    hide_passwords: bool,
) -> bool {
    strings.sort_by(|a, b| string_cmp(a, b));
    let mut sent = false;
    // Lists come first: their prefixes.
    let mut prefixes: Vec<Vec<u8>> = Vec::new();
    let mut i = 0;
    while i < strings.len() && strings[i].first() == Some(&LIST_PREFIX) {
        let s = &strings[i][1..];
        let eq = s.iter().position(|c| *c == b'=').unwrap_or(s.len());
        let (key, val) = (&s[..eq], &s[(eq + 1).min(s.len())..]);
        if val.is_empty() {
            let mut p = key.to_vec();
            p.push(b'/');
            prefixes.push(p);
        } else {
            for arg in val.split(|c| *c == b' ') {
                let mut p = key.to_vec();
                p.push(b'/');
                p.extend_from_slice(arg);
                p.push(b'/');
                prefixes.push(p);
            }
        }
        i += 1;
    }
    let mut prefix_idx: Option<usize> = None;
    // (prefix_idx of the parent, str_pos or None)
    let mut stack: Vec<(Option<usize>, Option<usize>)> = Vec::new();
    let filter = name_filter.map(text_to_bytes);
    for s in &strings[i..] {
        let eq = s.iter().position(|c| *c == b'=').unwrap_or(s.len());
        let mut key: Vec<u8> = s[..eq].to_vec();
        let value: &[u8] = &s[(eq + 1).min(s.len())..];
        let mut unique_key = false;
        if let Some(p) = key.iter().rposition(|c| *c == b'/')
            && key.get(p + 1) == Some(&UNIQUE_SUFFIX)
        {
            key.remove(p + 1);
            unique_key = true;
        }
        if let Some(f) = &filter
            && !(key.starts_with(f) && matches!(key.get(f.len()), Some(b'/') | None))
        {
            continue;
        }
        let mut handled = false;
        'again: loop {
            let mut j = 0;
            while let Some(pi) = prefix_idx {
                let p = &prefixes[pi];
                if !key.starts_with(p) {
                    // close the section
                    let (parent, str_pos) = stack.pop().unwrap_or((None, None));
                    indent = indent.saturating_sub(1);
                    match str_pos {
                        Some(pos) => list_prefix.truncate(pos),
                        None => {
                            out.extend_from_slice(&INDENT[..(indent * 2).min(INDENT.len())]);
                            out.extend_from_slice(b"}\n");
                        }
                    }
                    prefix_idx = parent;
                } else {
                    j = pi + 1;
                    break;
                }
            }
            while j < prefixes.len() {
                let p = &prefixes[j];
                if key.starts_with(p) {
                    let skip = prefix_idx.map(|pi| prefixes[pi].len()).unwrap_or(0);
                    let key2 = &key[skip..];
                    let str_pos = if unique_key {
                        Some(list_prefix.len())
                    } else {
                        None
                    };
                    stack.push((prefix_idx, str_pos));
                    prefix_idx = Some(j);
                    list_prefix.extend_from_slice(&INDENT[..(indent * 2).min(INDENT.len())]);
                    match key2.iter().position(|c| *c == b'/') {
                        Some(sl) => list_prefix.extend_from_slice(&key2[..sl]),
                        None => list_prefix.extend_from_slice(key2),
                    }
                    if unique_key && !value.is_empty() {
                        if !value.contains(&b' ') {
                            list_prefix.push(b' ');
                            list_prefix.extend_from_slice(value);
                        } else {
                            list_prefix.extend_from_slice(b" \"");
                            escape(&mut list_prefix, value);
                            list_prefix.push(b'"');
                        }
                    }
                    list_prefix.extend_from_slice(b" {\n");
                    indent += 1;
                    if unique_key {
                        handled = true;
                        break 'again;
                    }
                    continue 'again;
                }
                j += 1;
            }
            break;
        }
        if handled {
            continue;
        }
        out.extend_from_slice(&list_prefix);
        list_prefix.clear();
        for e in stack.iter_mut() {
            e.1 = None;
        }
        sent = true;
        let skip = prefix_idx.map(|pi| prefixes[pi].len()).unwrap_or(0);
        out.extend_from_slice(&INDENT[..(indent * 2).min(INDENT.len())]);
        let mut k: &[u8] = &s[skip..];
        if unique_key {
            k = &k[1..];
        }
        let eq = k.iter().position(|c| *c == b'=').unwrap_or(k.len());
        let (kk, vv) = (&k[..eq], &k[(eq + 1).min(k.len())..]);
        out.extend_from_slice(kk);
        out.extend_from_slice(b" = ");
        if hide_passwords && hide_secrets(out, kk, vv) {
        } else if !value_need_quote(vv) {
            out.extend_from_slice(vv);
        } else {
            out.push(b'"');
            escape(out, vv);
            out.push(b'"');
        }
        out.push(b'\n');
    }
    while let Some(pi) = prefix_idx {
        let _ = pi;
        let (parent, str_pos) = stack.pop().unwrap_or((None, None));
        if str_pos.is_some() {
            break;
        }
        prefix_idx = parent;
        indent = indent.saturating_sub(1);
        out.extend_from_slice(&INDENT[..(indent * 2).min(INDENT.len())]);
        out.extend_from_slice(b"}\n");
    }
    sent
}

/// `config_dump_filter_begin()`: the filter's opening lines; returns the indent.
fn filter_begin(s: &mut Vec<u8>, f: &Filter) -> usize {
    let mut indent = 0;
    let net = |ip: &std::net::IpAddr, bits: u32| -> String {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if bits != max {
            format!("{ip}/{bits}")
        } else {
            ip.to_string()
        }
    };
    if let Some((ip, bits)) = f.local
        && bits > 0
    {
        s.extend_from_slice(format!("local {} {{\n", net(&ip, bits)).as_bytes());
        indent += 1;
    }
    if let Some(n) = &f.local_name {
        s.extend_from_slice(&INDENT[..indent * 2]);
        s.extend_from_slice(b"local_name ");
        s.extend(text_to_bytes(n));
        s.extend_from_slice(b" {\n");
        indent += 1;
    }
    if let Some((ip, bits)) = f.remote
        && bits > 0
    {
        s.extend_from_slice(&INDENT[..indent * 2]);
        s.extend_from_slice(format!("remote {} {{\n", net(&ip, bits)).as_bytes());
        indent += 1;
    }
    if let Some(svc) = &f.service {
        s.extend_from_slice(&INDENT[..indent * 2]);
        s.extend_from_slice(b"protocol ");
        s.extend(text_to_bytes(svc));
        s.extend_from_slice(b" {\n");
        indent += 1;
    }
    indent
}

/// `config_filter_parser_cmp_rev()` order (a stable sort, as glibc's qsort is here).
fn filters_in_dump_order(filters: &[FilterParser]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..filters.len()).collect();
    idx.sort_by(|a, b| {
        let (f1, f2) = (&filters[*a].filter, &filters[*b].filter);
        cmp_filters(f2, f1)
    });
    idx
}

fn cmp_filters(f1: &Filter, f2: &Filter) -> Ordering {
    let lb = |f: &Filter| f.local.map(|(_, b)| b).unwrap_or(0);
    let rb = |f: &Filter| f.remote.map(|(_, b)| b).unwrap_or(0);
    match (f1.local_name.is_some(), f2.local_name.is_some()) {
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        _ => {}
    }
    if lb(f1) != lb(f2) {
        return lb(f2).cmp(&lb(f1));
    }
    if rb(f1) != rb(f2) {
        return rb(f2).cmp(&rb(f1));
    }
    match (f1.service.is_some(), f2.service.is_some()) {
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

/// `config_dump_human()`: the global settings in `scope`, then every filter with the
/// settings set inside it.
pub fn dump_human(
    filters: &[FilterParser],
    scope: Scope,
    name_filter: Option<&str>,
    hide_passwords: bool,
) -> Vec<u8> {
    let mut out = dump_global(filters, scope, name_filter, hide_passwords);
    if name_filter.is_none() {
        out.extend(dump_filters(filters, hide_passwords));
    }
    out
}

/// The global part of [`dump_human`] (doveconf prints its check errors after it).
pub fn dump_global(
    filters: &[FilterParser],
    scope: Scope,
    name_filter: Option<&str>,
    hide_passwords: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    let strings = export_strings(&filters[0].tree, scope);
    human_output(
        &mut out,
        strings,
        0,
        Vec::new(),
        name_filter,
        hide_passwords,
    );
    out
}

/// The filter part of [`dump_human`] (`config_dump_human_sections()`).
pub fn dump_filters(filters: &[FilterParser], hide_passwords: bool) -> Vec<u8> {
    let mut out = Vec::new();
    {
        for i in filters_in_dump_order(filters) {
            if filters[i].filter.is_global() {
                continue;
            }
            let mut prefix = Vec::new();
            let indent = filter_begin(&mut prefix, &filters[i].filter);
            let strings = export_strings(&filters[i].tree, Scope::Set);
            if human_output(&mut out, strings, indent, prefix, None, hide_passwords) {
                let mut ind = indent;
                while ind > 0 {
                    ind -= 1;
                    out.extend_from_slice(&INDENT[..ind * 2]);
                    out.extend_from_slice(b"}\n");
                }
            }
        }
    }
    out
}

/// `config_dump_one()`: `doveconf [-h] NAME` — `NAME = value`, or the section's dump (then
/// the flag is true).
pub fn dump_one(
    filters: &[FilterParser],
    scope: Scope,
    name: &str,
    hide_key: bool,
    hide_passwords: bool,
) -> (Vec<u8>, bool) {
    let strings = export_strings(&filters[0].tree, scope);
    let n = text_to_bytes(name);
    let mut dump_section = false;
    for s in &strings {
        if !s.starts_with(&n) {
            continue;
        }
        match s.get(n.len()) {
            Some(b'=') => {
                let mut out = Vec::new();
                if !hide_key {
                    out.extend_from_slice(&n);
                    out.extend_from_slice(b" = ");
                }
                out.extend_from_slice(&s[n.len() + 1..]);
                out.push(b'\n');
                return (out, false);
            }
            Some(b'/') => dump_section = true,
            _ => {}
        }
    }
    if dump_section {
        return (dump_human(filters, scope, Some(name), hide_passwords), true);
    }
    (Vec::new(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_order() {
        assert_eq!(
            string_cmp(b"service/auth-worker/x=1", b"service/auth/x=1"),
            Ordering::Less
        );
        assert_eq!(string_cmp(b"ssl=no", b"ssl_cert=x"), Ordering::Less);
        assert_eq!(string_cmp(b"a/\xffname=x", b"a/b=y"), Ordering::Less);
    }

    #[test]
    fn secrets() {
        let mut o = Vec::new();
        assert!(hide_secrets(
            &mut o,
            b"args",
            b"host=x password=secret dbname=y"
        ));
        assert_eq!(
            String::from_utf8_lossy(&o),
            "host=x password=#hidden_use-P_to_show# dbname=y"
        );
        let mut o = Vec::new();
        assert!(!hide_secrets(&mut o, b"args", b"/etc/dovecot/users"));
        let mut o = Vec::new();
        assert!(hide_secrets(&mut o, b"ssl_key", b"</etc/x"));
        assert_eq!(o, b"# hidden, use -P to show it");
        let mut o = Vec::new();
        assert!(hide_secrets(&mut o, b"x", b"http://user:pw@host/"));
        assert_eq!(
            String::from_utf8_lossy(&o),
            "http://#hidden_use-P_to_show#@host/"
        );
    }
}
