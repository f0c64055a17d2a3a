//! Dovecot 2.3.19's configuration parser, ported: what `doveconf` reads from a file, line by
//! line, into one settings tree per filter, with the warnings and errors it gives.
//!
//! The structure follows the C sources at tag 2.3.19.1, function by function:
//! * `config-parser.c` — [`Parser::parse_line`] is `config_parse_line()` (comments, `\`
//!   continuations, quoting, `<file` and `$variable` values, section lines),
//!   [`Parser::apply_line`] is `config_parser_apply_line()` (sections, filters, includes),
//!   [`Parser::apply_setting`] is `config_apply_line()`, and the `$key` expansion is
//!   `config_write_keyvariable()`;
//! * `old-set-parser.c` — [`Parser::old_settings_handle`]: the 1.x settings 2.3 still converts
//!   (`protocols = imaps`, `ssl_disable`, `login_*`, `auth default {}`, `socket listen {}`,
//!   `ssl_protocols`, …), each with its `Obsolete setting in FILE:LINE: …` warning;
//! * `settings-parser.c` — [`Tree::parse_keyvalue`] is `settings_parse_keyvalue()`: keys are
//!   paths (`service/imap-login/inet_listener/imap/port`), sections are lists of structures
//!   created on first use, `plugin {}` is a free-form list;
//! * `config-filter.c` — filters (`protocol`, `local`, `remote`, `local_name`) each get their
//!   own tree, found again when the same filter is reopened;
//! * the checks `doveconf` runs after parsing ([`check`]) are those of the `*_settings_check`
//!   functions that a configuration file can trip: `master_settings_verify()`, the passdb and
//!   userdb checks, the namespace and mailbox checks, the POP3 and IMAP workaround lists, the
//!   SSL checks.
//!
//! Text is handled as bytes (each byte one `char` U+0000..U+00FF), as Dovecot handles it, so
//! that output and messages keep the file's own bytes; [`crate::config::dovecot::export`]
//! turns them back into bytes.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::settings::{self, Info, Kind};

/// A node of a settings tree: the root or one section element.
pub type NodeId = usize;

/// One settings structure (`set_struct` and `change_struct`).
#[derive(Debug, Clone)]
pub struct Node {
    pub info: &'static Info,
    /// Per define: the value as doveconf prints it (`None`: Dovecot's NULL).
    pub values: Vec<Option<String>>,
    pub changed: Vec<bool>,
    /// Per list define: the elements, in creation order.
    pub lists: Vec<Vec<NodeId>>,
    /// Per strlist define: the pairs, and whether the list exists.
    /// Free-form pairs (`plugin {}`), in order; keyed so a file of 100,000 stays linear.
    pub strlists: Vec<Option<indexmap::IndexMap<String, String>>>,
}

impl Node {
    fn new(info: &'static Info) -> Node {
        let n = info.defines.len();
        Node {
            info,
            values: info
                .defines
                .iter()
                .map(|d| match d.kind {
                    Kind::List { .. } | Kind::StrList | Kind::Alias(_) => None,
                    _ if info.name == "namespace" && d.key == "alias_for" => None,
                    _ => Some(d.default.clone()),
                })
                .collect(),
            changed: vec![false; n],
            lists: vec![Vec::new(); n],
            strlists: vec![None; n],
        }
    }
    /// The value of a scalar setting.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.info
            .find(key)
            .map(|i| self.info.resolve(i))
            .and_then(|i| self.values[i].as_deref())
    }
    pub fn is_changed(&self, key: &str) -> bool {
        self.info
            .find(key)
            .map(|i| self.info.resolve(i))
            .is_some_and(|i| self.changed[i])
    }
    /// The element's name (`service imap-login` → `imap-login`), empty when unnamed.
    pub fn name(&self) -> &str {
        self.info.name_key.and_then(|k| self.get(k)).unwrap_or("")
    }
}

#[derive(Debug, Clone, Copy)]
enum Link {
    Node {
        node: NodeId,
        parent: Option<NodeId>,
        info: &'static str,
    },
    StrList {
        node: NodeId,
        def: usize,
    },
}

/// One settings parser (Dovecot keeps one per filter).
#[derive(Debug, Clone)]
pub struct Tree {
    pub nodes: Vec<Node>,
    links: HashMap<String, Link>,
    /// `settings_parse_get_prev_info()`: the info the last parsed value belongs to.
    prev_info: Option<&'static str>,
}

/// The settings tree holding Dovecot's defaults (built once from `defaults-2.3.19.conf`).
fn default_tree() -> &'static Tree {
    static T: std::sync::OnceLock<Tree> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut t = Tree {
            nodes: vec![Node::new(settings::info("root"))],
            links: HashMap::new(),
            prev_info: None,
        };
        // The built-in services in the order Dovecot's all-settings.c lists them (the
        // `*-settings.c` files in reverse path order, from configure.ac's SETTING_FILES).
        let order = [
            "tcpwrap",
            "health-check",
            "submission",
            "submission-login",
            "stats",
            "replicator",
            "aggregator",
            "pop3",
            "pop3-login",
            "old-stats",
            "log",
            "lmtp",
            "ipc",
            "indexer-worker",
            "indexer",
            "imap",
            "imap-urlauth-worker",
            "imap-urlauth",
            "imap-urlauth-login",
            "imap-login",
            "imap-hibernate",
            "doveadm",
            "dns-client",
            "director",
            "dict",
            "dict-async",
            "config",
            "auth",
            "auth-worker",
            "anvil",
        ];
        // Parse the `doveconf -a` dump: top-level values and the service sections.
        // (service name, [(listener path, key, value)])
        type Entries = Vec<(Vec<String>, String, String)>;
        let mut services: Vec<(String, Entries)> = Vec::new();
        let mut stack: Vec<String> = Vec::new();
        for line in settings::DEFAULTS.lines() {
            let l = line.trim_start();
            if l == "}" {
                stack.pop();
                continue;
            }
            if let Some(head) = l.strip_suffix(" {") {
                if stack.is_empty() {
                    let name = head.strip_prefix("service ").unwrap_or(head).to_string();
                    services.push((name, Vec::new()));
                }
                stack.push(head.to_string());
                continue;
            }
            let Some((k, v)) = l
                .split_once(" = ")
                .or_else(|| l.strip_suffix(" =").map(|k| (k, "")))
            else {
                continue;
            };
            let v = unquote_dump(v);
            if stack.is_empty() {
                let root = &mut t.nodes[0];
                if let Some(i) = root.info.find(k) {
                    root.values[i] = Some(v);
                }
            } else if let Some((_, entries)) = services.last_mut() {
                entries.push((stack[1..].to_vec(), k.to_string(), v));
            }
        }
        services.sort_by_key(|(n, _)| order.iter().position(|o| o == n).unwrap_or(order.len()));
        let root_info = t.nodes[0].info;
        let svc_def = root_info.find("service").unwrap_or(0);
        for (name, entries) in services {
            let id = t.add_element(0, svc_def, &name, "service/");
            t.nodes[id].values[0] = Some(name.clone());
            let prefix = format!("service/{}/", settings::section_escape(&name));
            for (path, k, v) in entries {
                let mut node = id;
                if let Some(head) = path.first() {
                    let (kind, lname) = head.split_once(' ').unwrap_or((head.as_str(), ""));
                    let lname = unquote_dump(lname);
                    let Some(ldef) = t.nodes[id].info.find(kind) else {
                        continue;
                    };
                    let key = format!("{prefix}{kind}/{}", settings::section_escape(&lname));
                    node = match t.links.get(&key) {
                        Some(Link::Node { node, .. }) => *node,
                        _ => {
                            let n = t.add_element(id, ldef, &lname, &format!("{prefix}{kind}/"));
                            t.nodes[n].values[0] = Some(lname.clone());
                            n
                        }
                    };
                }
                let nd = &mut t.nodes[node];
                if let Some(i) = nd.info.find(&k) {
                    nd.values[i] = Some(v);
                }
            }
        }
        t
    })
}

/// A value as `doveconf -a` printed it (quoted when it has `#` or outer white space).
fn unquote_dump(v: &str) -> String {
    match v.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        Some(inner) if v.len() >= 2 => {
            let mut out = String::new();
            let mut it = inner.chars();
            while let Some(c) = it.next() {
                if c == '\\' {
                    if let Some(n) = it.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        _ => v.to_string(),
    }
}

impl Tree {
    /// A fresh tree with Dovecot's defaults.
    pub fn new() -> Tree {
        default_tree().clone()
    }

    pub fn root(&self) -> &Node {
        &self.nodes[0]
    }

    /// Add a list element (a new section) named `item` under `parent`'s list `def`.
    fn add_element(&mut self, parent: NodeId, def: usize, item: &str, key_prefix: &str) -> NodeId {
        let info_name = match self.nodes[parent].info.defines[def].kind {
            Kind::List { info, .. } => info,
            _ => "root",
        };
        let id = self.nodes.len();
        self.nodes.push(Node::new(settings::info(info_name)));
        self.nodes[parent].lists[def].push(id);
        self.links.insert(
            format!("{key_prefix}{}", settings::section_escape(item)),
            Link::Node {
                node: id,
                parent: Some(parent),
                info: info_name,
            },
        );
        id
    }

    /// `settings_find_key_nth()` for our single root: the node and define a key names.
    /// `Ok(None)` with a strlist link means a free-form key.
    fn find_key(&mut self, key: &str) -> Option<(Link, Option<usize>)> {
        if let Some(i) = self.nodes[0].info.find(key) {
            return Some((
                Link::Node {
                    node: 0,
                    parent: None,
                    info: "root",
                },
                Some(i),
            ));
        }
        let (parent_key, last) = key.rsplit_once('/')?;
        let link = match self.links.get(parent_key) {
            Some(l) => *l,
            None => {
                // Maybe the first value of a strlist (`plugin/quota = …` before any
                // `plugin {}`): create the list, as `settings_parse_keyvalue(parent, "0")`.
                let (plink, pdef) = self.find_key(parent_key)?;
                match pdef {
                    None => {
                        if !self.links.contains_key(parent_key) {
                            return None;
                        }
                    }
                    Some(d) => {
                        let node = match plink {
                            Link::Node { node, .. } => node,
                            Link::StrList { .. } => return None,
                        };
                        if self.nodes[node].info.defines[d].kind != Kind::StrList {
                            return None;
                        }
                    }
                }
                if self.parse_keyvalue(parent_key, "0") != Ok(true) {
                    return None;
                }
                *self.links.get(parent_key)?
            }
        };
        match link {
            Link::StrList { .. } => Some((link, None)),
            Link::Node { node, .. } => {
                let d = self.nodes[node].info.find(last)?;
                Some((link, Some(d)))
            }
        }
    }

    /// `settings_parse_keyvalue()`: `Ok(false)` for an unknown key, `Err` for a bad value.
    pub fn parse_keyvalue(&mut self, key: &str, value: &str) -> Result<bool, String> {
        self.prev_info = None;
        let Some((link, def)) = self.find_key(key) else {
            return Ok(false);
        };
        match (link, def) {
            (Link::StrList { node, def }, None) => {
                let k = key.rsplit_once('/').map(|(_, k)| k).unwrap_or(key);
                let list = self.nodes[node].strlists[def].get_or_insert_with(Default::default);
                list.insert(k.to_string(), value.to_string());
                Ok(true)
            }
            (Link::Node { node, .. }, Some(d)) => self.parse_def(node, d, key, value).map(|_| true),
            _ => Ok(false),
        }
    }

    /// `settings_parse()`.
    fn parse_def(&mut self, node: NodeId, d: usize, key: &str, value: &str) -> Result<(), String> {
        let d = self.nodes[node].info.resolve(d);
        let info = self.nodes[node].info;
        self.prev_info = Some(info.name);
        let kind = info.defines[d].kind;
        match kind {
            Kind::List { info: li, unique } => {
                self.prev_info = Some(li);
                for item in value.split([',', '\t', ' ']).filter(|s| !s.is_empty()) {
                    let full = format!("{key}/{item}");
                    match self.links.get(&full) {
                        Some(Link::Node { parent, info, .. })
                            if *parent == Some(node) && *info == li && unique => {}
                        Some(_) => return Err(format!("{full} already exists")),
                        None => {
                            let id = self.nodes.len();
                            self.nodes.push(Node::new(settings::info(li)));
                            self.nodes[node].lists[d].push(id);
                            self.links.insert(
                                full,
                                Link::Node {
                                    node: id,
                                    parent: Some(node),
                                    info: li,
                                },
                            );
                        }
                    }
                }
            }
            Kind::StrList => {
                self.prev_info = Some("strlist");
                self.nodes[node].strlists[d].get_or_insert_with(Default::default);
                let link = Link::StrList { node, def: d };
                self.links.entry(key.to_string()).or_insert(link);
                for item in value.split([',', '\t', ' ']).filter(|s| !s.is_empty()) {
                    self.links.entry(format!("{key}/{item}")).or_insert(link);
                }
            }
            _ => {
                let v = settings::normalize(kind, value)?;
                self.nodes[node].values[d] = Some(v);
            }
        }
        self.nodes[node].changed[d] = true;
        Ok(())
    }

    /// `settings_parse_get_value()` + `settings_parse_is_changed()` for a path key.
    pub fn lookup(&mut self, key: &str) -> Option<(Option<String>, bool, Kind)> {
        let (link, def) = self.find_key(key)?;
        match (link, def) {
            (Link::Node { node, .. }, Some(d)) => {
                let n = &self.nodes[node];
                let d = n.info.resolve(d);
                Some((n.values[d].clone(), n.changed[d], n.info.defines[d].kind))
            }
            _ => None,
        }
    }

    /// The elements of a root list (`service`, `passdb`, …).
    pub fn list(&self, node: NodeId, key: &str) -> Vec<NodeId> {
        let n = &self.nodes[node];
        n.info
            .find(key)
            .map(|i| n.lists[i].clone())
            .unwrap_or_default()
    }

    /// The pairs of a strlist (`plugin`).
    pub fn strlist(&self, node: NodeId, key: &str) -> Option<&indexmap::IndexMap<String, String>> {
        let n = &self.nodes[node];
        n.info.find(key).and_then(|i| n.strlists[i].as_ref())
    }

    /// Whether any setting of this tree was changed (`have_changed_settings()`).
    pub fn has_changes(&self) -> bool {
        self.nodes.iter().any(|n| n.changed.iter().any(|c| *c))
    }
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

/// `struct config_filter`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub service: Option<String>,
    pub local_name: Option<String>,
    pub local: Option<(IpAddr, u32)>,
    pub local_host: Option<String>,
    pub remote: Option<(IpAddr, u32)>,
    pub remote_host: Option<String>,
}

impl Filter {
    fn local_bits(&self) -> u32 {
        self.local.map(|(_, b)| b).unwrap_or(0)
    }
    fn remote_bits(&self) -> u32 {
        self.remote.map(|(_, b)| b).unwrap_or(0)
    }
    /// `config_filters_equal()`.
    fn same(&self, o: &Filter) -> bool {
        self.service == o.service
            && self.remote == o.remote
            && self.local == o.local
            && self.local_name.as_deref().map(str::to_ascii_lowercase)
                == o.local_name.as_deref().map(str::to_ascii_lowercase)
    }
    pub fn is_global(&self) -> bool {
        self.service.is_none()
            && self.local_name.is_none()
            && self.local.is_none()
            && self.remote.is_none()
    }
    /// `config_filter_match(mask = self, filter)` for the service part only
    /// (old-set-parser.c asks whether a section applies to imap/pop3/sieve).
    fn matches_service(&self, service: Option<&str>) -> bool {
        match &self.service {
            None => true,
            Some(m) => match service {
                None => false,
                Some(s) => match m.strip_prefix('!') {
                    Some(not) => s != not,
                    None => s == m,
                },
            },
        }
    }
    /// `config_filter_match(mask = self, any_filter)`.
    fn is_root_match(&self) -> bool {
        self.is_global()
    }
}

/// `config_filter_parser_cmp()`: more specific filters first.
fn filter_cmp(f1: &Filter, f2: &Filter) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (f1.local_name.is_some(), f2.local_name.is_some()) {
        (true, false) => return Less,
        (false, true) => return Greater,
        _ => {}
    }
    if f1.local_bits() != f2.local_bits() {
        return f2.local_bits().cmp(&f1.local_bits());
    }
    if f1.remote_bits() != f2.remote_bits() {
        return f2.remote_bits().cmp(&f1.remote_bits());
    }
    match (f1.service.is_some(), f2.service.is_some()) {
        (true, false) => Less,
        (false, true) => Greater,
        _ => Equal,
    }
}

/// A filter with its settings (`struct config_filter_parser`).
#[derive(Debug, Clone)]
pub struct FilterParser {
    pub filter: Filter,
    pub tree: Tree,
    /// `FILE:LINE` where the filter was opened.
    pub file_and_line: String,
}

/// A line type of `config_parse_line()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineType {
    Skip,
    Continue,
    Error,
    KeyValue,
    KeyFile,
    KeyVariable,
    SectionBegin,
    SectionEnd,
    Include,
    IncludeTry,
}

/// One open section (`struct config_section_stack`).
#[derive(Debug, Clone)]
struct Section {
    filter: Filter,
    /// Index into `Parser::filters` of the parser set this section writes to.
    parsers: usize,
    open_path: String,
    open_line: usize,
    key: Option<String>,
    is_filter: bool,
    pathlen: usize,
}

/// One input file on the include stack (`struct input_stack`).
#[derive(Debug)]
struct Input {
    path: String,
    lines: Vec<String>,
    next: usize,
    linenum: usize,
    /// For a translated old file: the original file and line of each generated line.
    origins: Option<Vec<(String, usize)>>,
}

/// `struct socket_set` of old-set-parser.c.
#[derive(Debug, Default, Clone)]
struct SocketSet {
    path: Option<String>,
    mode: Option<String>,
    user: Option<String>,
    group: Option<String>,
    master: bool,
}

/// `struct old_set_parser`.
#[derive(Debug)]
struct OldParser {
    base_dir: String,
    auth_section: u32,
    socket_listen_section: u32,
    seen_auth_section: bool,
    socket_set: SocketSet,
    seen_obsoletes: bool,
}

/// What parsing a file gave: the filters and their settings, warnings in order, and the
/// error (`fatal`: parsing stopped; else a check failed after parsing, a "delayed" error).
#[derive(Debug)]
pub struct Parsed {
    /// The global filter first, then the others in the order they were opened.
    pub filters: Vec<FilterParser>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
    /// `Error in configuration file FILE line N: …` (or `open(FILE) failed: …`).
    pub fatal: Option<String>,
    /// `open()` of the main file failed (doveconf prints its first header lines only).
    pub open_failed: bool,
    /// A check failed: `Error in configuration file FILE: …`, printed after the settings.
    pub delayed: Option<String>,
    /// The check errors doveconf's export prints as `Error: …` lines.
    pub check_errors: Vec<String>,
}

/// The configuration parser state (`struct config_parser_context`).
pub struct Parser {
    path: String,
    filters: Vec<FilterParser>,
    sections: Vec<Section>,
    inputs: Vec<Input>,
    str: String,
    pathlen: usize,
    section_counter: u32,
    error: Option<String>,
    seen_settings: HashMap<String, String>,
    warnings: Vec<String>,
    old: OldParser,
    /// Files read so far (canonical), to stop a loop Dovecot would follow until the path is
    /// too long.
    depth_guard: HashSet<String>,
}

/// Biggest config file we read (a sanity limit, not a Dovecot one).
const MAX_FILE: u64 = 64 << 20;
/// Deepest include nesting we follow.
const MAX_INCLUDE_DEPTH: usize = 64;

fn is_white(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Bytes as one `char` each (Latin-1), the way the parser sees text.
pub fn bytes_to_text(bytes: &[u8]) -> String {
    bytes.iter().map(|b| char::from(*b)).collect()
}

/// The inverse of [`bytes_to_text`].
pub fn text_to_bytes(s: &str) -> Vec<u8> {
    s.chars().map(|c| c as u32 as u8).collect()
}

/// A text value as a Rust string: UTF-8 when its bytes are, else Latin-1.
pub fn text_to_string(s: &str) -> String {
    if s.is_ascii() {
        return s.to_string();
    }
    let b = text_to_bytes(s);
    match String::from_utf8(b) {
        Ok(u) => u,
        Err(_) => s.to_string(),
    }
}

/// A Rust string as parser text (its UTF-8 bytes one char each).
pub fn string_to_text(s: &str) -> String {
    if s.is_ascii() {
        return s.to_string();
    }
    bytes_to_text(s.as_bytes())
}

fn read_lines(path: &str) -> Result<Vec<String>, std::io::Error> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    // A directory opens but cannot be read: Dovecot's stream ends at once (an empty file).
    if f.take(MAX_FILE).read_to_end(&mut bytes).is_err() {
        return Ok(Vec::new());
    }
    Ok(split_lines(&bytes))
}

/// `i_stream_read_next_line()`: lines at `\n`, a `\r` before it dropped, the last line even
/// without `\n`; a NUL ends the line as C strings do.
fn split_lines(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = match line.iter().position(|b| *b == 0) {
            Some(i) => &line[..i],
            None => line,
        };
        out.push(bytes_to_text(line));
        rest = next;
    }
    out
}

/// `fix_relative_path()`.
fn fix_relative_path(path: &str, input: &str) -> String {
    if path.starts_with('/') {
        return path.to_string();
    }
    match input.rfind('/') {
        Some(i) => format!("{}{}", &input[..=i], path),
        None => path.to_string(),
    }
}

/// `net_parse_range()` (no DNS: Dovecot would look a host name up).
fn parse_net(value: &str) -> Result<(IpAddr, u32), String> {
    let (ip, bits) = match value.split_once('/') {
        Some((i, b)) => (i, Some(b)),
        None => (value, None),
    };
    let ip_s = ip.trim_start_matches('[').trim_end_matches(']');
    let addr: IpAddr = ip_s
        .parse()
        .map_err(|_| format!("gethostbyname({ip}) failed: Unknown host"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        None => max,
        Some(b) => match b.parse::<u32>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("Invalid network mask: {b}")),
        },
    };
    Ok((addr, bits))
}

fn in_network(ip: &IpAddr, net: &IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let m = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(*a) & m == u32::from(*b) & m
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let m = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(*a) & m == u128::from(*b) & m
        }
        _ => false,
    }
}

/// `t_strsplit_spaces(value, " ")` joined back.
fn split_spaces(v: &str) -> Vec<&str> {
    v.split(' ').filter(|s| !s.is_empty()).collect()
}

impl Parser {
    fn new(path: &str) -> Parser {
        Parser {
            path: path.to_string(),
            filters: vec![FilterParser {
                filter: Filter::default(),
                tree: Tree::new(),
                file_and_line: path.to_string(),
            }],
            sections: vec![Section {
                filter: Filter::default(),
                parsers: 0,
                open_path: path.to_string(),
                open_line: 0,
                key: None,
                is_filter: false,
                pathlen: 0,
            }],
            inputs: Vec::new(),
            str: String::new(),
            pathlen: 0,
            section_counter: 0,
            error: None,
            seen_settings: HashMap::new(),
            warnings: Vec::new(),
            old: OldParser {
                base_dir: "/run/dovecot".into(),
                auth_section: 0,
                socket_listen_section: 0,
                seen_auth_section: false,
                socket_set: SocketSet::default(),
                seen_obsoletes: false,
            },
            depth_guard: HashSet::new(),
        }
    }

    fn cur(&self) -> &Section {
        self.sections.last().expect("root section")
    }
    fn cur_path(&self) -> String {
        match self.inputs.last() {
            Some(i) => match i
                .origins
                .as_ref()
                .and_then(|o| o.get(i.linenum.wrapping_sub(1)))
            {
                Some((f, _)) => f.clone(),
                None => i.path.clone(),
            },
            None => String::new(),
        }
    }
    fn cur_line(&self) -> usize {
        match self.inputs.last() {
            Some(i) => match i
                .origins
                .as_ref()
                .and_then(|o| o.get(i.linenum.wrapping_sub(1)))
            {
                Some((_, l)) => *l,
                None => i.linenum,
            },
            None => 0,
        }
    }
    fn warn(&mut self, msg: String) {
        self.warnings.push(msg);
    }

    /// `config_parse_line()`: the type of one physical line, its key and value.
    fn parse_line(&mut self, raw: &str, full_line: &mut String) -> (LineType, String, String) {
        let mut line: &str = raw.trim_start_matches(is_white);
        if line.starts_with('#') || line.is_empty() {
            return (LineType::Skip, String::new(), String::new());
        }
        // Strip comments: a `#` outside quotes ends the line.
        let b = line.as_bytes();
        let mut i = 0;
        let mut cut = None;
        while i < b.len() {
            let c = b[i];
            if c == b'\'' || c == b'"' {
                let q = c;
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= b.len() {
                    break;
                }
            } else if c == b'#' {
                if i > 0 && !is_white(b[i - 1] as char) {
                    let (p, n) = (self.cur_path(), self.cur_line());
                    self.warn(format!(
                        "Configuration file {p} line {n}: Ambiguous '#' character in line, treating it as comment. Add a space before it to remove this warning."
                    ));
                }
                cut = Some(i);
                break;
            }
            i += 1;
        }
        // `line` is made of one-byte chars, so byte offsets are char offsets.
        if let Some(c) = cut {
            line = &line[..c];
        }
        line = line.trim_end_matches(is_white);
        if let Some(stripped) = line.strip_suffix('\\') {
            let s = stripped.trim_end_matches(is_white);
            if !s.is_empty() {
                full_line.push_str(s);
                full_line.push(' ');
            }
            return (LineType::Continue, String::new(), String::new());
        }
        let owned;
        if !full_line.is_empty() {
            full_line.push_str(line);
            owned = full_line.clone();
            line = &owned;
        }
        // a) key = value  b) section_type [section_name] {  c) }
        let key_end = line
            .find(|c: char| is_white(c) || c == '=')
            .unwrap_or(line.len());
        let key = &line[..key_end];
        let mut rest = &line[key_end..];
        if rest.starts_with(is_white) {
            rest = rest.trim_start_matches(is_white);
        }
        if key == "!include" {
            return (LineType::Include, key.into(), rest.into());
        }
        if key == "!include_try" {
            return (LineType::IncludeTry, key.into(), rest.into());
        }
        if let Some(v) = rest.strip_prefix('=') {
            let mut v = v.trim_start_matches(is_white);
            if let Some(f) = v.strip_prefix('<') {
                return (
                    LineType::KeyFile,
                    key.into(),
                    f.trim_start_matches(is_white).into(),
                );
            }
            if !v.starts_with(['\'', '"']) && v.contains('$') {
                return (LineType::KeyVariable, key.into(), v.into());
            }
            let unq;
            if v.len() >= 2
                && ((v.starts_with('"') && v.ends_with('"'))
                    || (v.starts_with('\'') && v.ends_with('\'')))
            {
                unq = str_unescape(&v[1..v.len() - 1]);
                v = &unq;
                return (LineType::KeyValue, key.into(), v.into());
            }
            if v.len() == 1 && (v == "\"" || v == "'") {
                // `len > 0` and first == last: Dovecot unquotes a lone quote to "".
                return (LineType::KeyValue, key.into(), String::new());
            }
            return (LineType::KeyValue, key.into(), v.into());
        }
        if key == "}" && rest.is_empty() {
            return (LineType::SectionEnd, key.into(), String::new());
        }
        // b) + errors
        let name;
        if rest.starts_with('{') {
            name = String::new();
        } else {
            if !rest.starts_with('"') {
                let end = rest.find(is_white).unwrap_or(rest.len());
                name = rest[..end].to_string();
                rest = rest[end..].trim_start_matches(is_white);
            } else {
                let body = &rest[1..];
                match body.find('"') {
                    Some(q) => {
                        name = str_unescape(&body[..q]);
                        rest = body[q + 1..].trim_start_matches(is_white);
                    }
                    None => {
                        name = body.to_string();
                        rest = "";
                    }
                }
            }
            if !rest.starts_with('{') {
                return (LineType::Error, key.into(), "Expecting '{'".into());
            }
        }
        if rest.len() > 1 {
            return (LineType::Error, key.into(), "Garbage after '{'".into());
        }
        (LineType::SectionBegin, key.into(), name)
    }

    /// `config_add_new_parser()` / `config_filter_parser_find()` for the current section.
    fn use_filter_parser(&mut self) {
        let filter = self.cur().filter.clone();
        let idx = match self.filters.iter().position(|p| p.filter.same(&filter)) {
            Some(i) => i,
            None => {
                let fl = if self.cur_line() == 0 {
                    self.cur_path()
                } else {
                    format!("{}:{}", self.cur_path(), self.cur_line())
                };
                self.filters.push(FilterParser {
                    filter,
                    tree: Tree::new(),
                    file_and_line: fl,
                });
                self.filters.len() - 1
            }
        };
        if let Some(s) = self.sections.last_mut() {
            s.parsers = idx;
        }
    }

    /// `config_filter_add_new_filter()`; false when `key` is no filter.
    fn add_new_filter(&mut self, key: &str, value: &str) -> bool {
        let n = self.sections.len();
        let parent = self.sections[n - 2].filter.clone();
        let mut filter = self.sections[n - 1].filter.clone();
        let mut error: Option<String> = None;
        match key {
            "protocol" => {
                if parent.service.is_some() {
                    error = Some("Nested protocol { protocol { .. } } block not allowed".into());
                } else {
                    filter.service = Some(value.to_string());
                }
            }
            "local" => {
                if parent.remote_bits() > 0 {
                    error = Some(
                        "remote { local { .. } } not allowed (use local { remote { .. } } instead)"
                            .into(),
                    );
                } else if parent.service.is_some() {
                    error = Some("protocol { local { .. } } not allowed (use local { protocol { .. } } instead)".into());
                } else if parent.local_name.is_some() {
                    error = Some("local_name { local { .. } } not allowed (use local { local_name { .. } } instead)".into());
                } else {
                    match parse_net(value) {
                        Err(e) => error = Some(e),
                        Ok((ip, bits)) => {
                            if parent.local_bits() > bits
                                || (parent.local_bits() > 0
                                    && !parent
                                        .local
                                        .is_some_and(|(pn, pb)| in_network(&ip, &pn, pb)))
                            {
                                error = Some("local net1 { local net2 { .. } } requires net2 to be inside net1".into());
                            } else {
                                filter.local = Some((ip, bits));
                                filter.local_host = Some(value.to_string());
                            }
                        }
                    }
                }
            }
            "local_name" => {
                if parent.remote_bits() > 0 {
                    error = Some("remote { local_name { .. } } not allowed (use local_name { remote { .. } } instead)".into());
                } else if parent.service.is_some() {
                    error = Some("protocol { local_name { .. } } not allowed (use local_name { protocol { .. } } instead)".into());
                } else {
                    filter.local_name = Some(value.to_string());
                }
            }
            "remote" => {
                if parent.service.is_some() {
                    error = Some("protocol { remote { .. } } not allowed (use remote { protocol { .. } } instead)".into());
                } else {
                    match parse_net(value) {
                        Err(e) => error = Some(e),
                        Ok((ip, bits)) => {
                            if parent.remote_bits() > bits
                                || (parent.remote_bits() > 0
                                    && !parent
                                        .remote
                                        .is_some_and(|(pn, pb)| in_network(&ip, &pn, pb)))
                            {
                                error = Some("remote net1 { remote net2 { .. } } requires net2 to be inside net1".into());
                            } else {
                                filter.remote = Some((ip, bits));
                                filter.remote_host = Some(value.to_string());
                            }
                        }
                    }
                }
            }
            _ => return false,
        }
        if let Some(e) = error {
            self.error = Some(e);
        }
        if let Some(s) = self.sections.last_mut() {
            s.filter = filter;
        }
        self.use_filter_parser();
        if let Some(s) = self.sections.last_mut() {
            s.is_filter = true;
        }
        true
    }

    /// `get_setting_full_path()`: `service { inet_listener { port` for messages.
    fn full_path(&self, key: &str) -> String {
        let mut s = String::new();
        for sec in &self.sections {
            if !sec.is_filter
                && let Some(k) = &sec.key
            {
                s.push_str(k);
                s.push_str(" { ");
            }
        }
        s.push_str(key);
        s
    }

    /// `config_parser_is_in_localremote()`.
    fn in_localremote(&self) -> bool {
        let f = &self.cur().filter;
        f.local_name.is_some() || f.local_bits() > 0 || f.remote_bits() > 0
    }

    /// `config_apply_line()`: give `line` (`key=value`, key a path) to the current parsers.
    fn apply_setting(&mut self, key: &str, line: &str, section_name: Option<&str>) -> bool {
        let Some((k, v)) = line.split_once('=') else {
            self.error = Some("Missing '='".into());
            return false;
        };
        if k.is_empty() {
            self.error = Some("Missing key name ('=' at the beginning of line)".into());
            return false;
        }
        let idx = self.cur().parsers;
        let in_lr = self.in_localremote();
        let tree = &mut self.filters[idx].tree;
        match tree.parse_keyvalue(k, v) {
            Ok(true) => {
                if in_lr && is_auth_key(k) {
                    self.error = Some(format!(
                        "Auth settings not supported inside local/remote blocks: {key}"
                    ));
                    return false;
                }
                if let Some(name) = section_name {
                    // `config_add_type()`: the element's naming setting gets the raw name.
                    let Some(info) = tree.prev_info else {
                        // A section inside a strlist (`plugin { x { } }`).
                        self.error = Some("Section not allowed here".into());
                        return false;
                    };
                    if info == "strlist" {
                        return true;
                    }
                    let info = settings::info(info);
                    if let Some(nk) = info.name_key {
                        let full = format!("{k}/{v}/{nk}");
                        let _ = tree.parse_keyvalue(&full, name);
                    }
                }
                true
            }
            Ok(false) => {
                self.error = Some(format!("Unknown setting: {}", self.full_path(key)));
                false
            }
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    /// `config_get_value()`: a setting's value for `$name`, from this section or, when not
    /// changed here, from the enclosing ones.
    fn get_value(&mut self, sec: usize, key: &str, expand_parent: bool) -> Option<(String, Kind)> {
        let idx = self.sections[sec].parsers;
        let (v, changed, kind) = self.filters[idx].tree.lookup(key)?;
        if !expand_parent || sec == 0 || changed {
            return v.map(|v| (v, kind));
        }
        self.get_value(sec - 1, key, true)
    }

    /// `config_write_keyvariable()`.
    fn write_keyvariable(&mut self, key: &str, value: &str, out: &mut String) -> bool {
        let mut rest: &str = value;
        let start = value.as_ptr() as usize;
        loop {
            let var_end = rest.find(' ');
            let var_name = match var_end {
                Some(e) => &rest[..e],
                None => rest,
            };
            let bare = var_name.strip_prefix('$').unwrap_or(var_name);
            let expand_parent = key == bare;
            let at = rest.as_ptr() as usize - start;
            let prev_white = at == 0 || is_white(value.as_bytes()[at - 1] as char);
            if !var_name.starts_with('$') || !prev_white || !expand_parent {
                // doveconf does not expand other variables (-x is not given).
                out.push_str(var_name);
            } else if let Some(env) = var_name.strip_prefix("$ENV:") {
                if let Ok(v) = std::env::var(env) {
                    out.push_str(&v);
                }
            } else {
                let sec = self.sections.len() - 1;
                match self.get_value(sec, bare, expand_parent) {
                    None => {
                        self.error = Some(format!("Unknown variable: ${bare}"));
                        return false;
                    }
                    Some((v, kind)) => match kind {
                        Kind::List { .. } | Kind::StrList | Kind::Alias(_) => {
                            self.error = Some(format!("Invalid variable: ${bare}"));
                            return false;
                        }
                        _ => out.push_str(&v),
                    },
                }
            }
            let Some(e) = var_end else { break };
            out.push(' ');
            let after = &rest[e..];
            let after = after.trim_start_matches(is_white);
            rest = after;
        }
        true
    }

    /// `config_parser_check_warnings()`.
    fn check_warnings(&mut self, key: &str) {
        let first = self.seen_settings.get(&self.str).cloned();
        if self.sections.len() == 1 {
            if let Some(pos) = first {
                let (p, n) = (self.cur_path(), self.cur_line());
                self.warn(format!(
                    "{p} line {n}: Global setting {key} won't change the setting inside an earlier filter at {pos} (if this is intentional, avoid this warning by moving the global setting before {pos})"
                ));
            }
            return;
        }
        if first.is_some() {
            return;
        }
        let pos = format!("{} line {}", self.cur_path(), self.cur_line());
        self.seen_settings.insert(self.str.clone(), pos);
    }

    /// `config_parser_apply_line()`.
    fn apply_line(&mut self, ty: LineType, key: &str, value: &str) {
        self.str.truncate(self.pathlen);
        match ty {
            LineType::Skip => {}
            LineType::Continue => {}
            LineType::Error => self.error = Some(value.to_string()),
            LineType::KeyValue | LineType::KeyFile | LineType::KeyVariable => {
                self.str.push_str(key);
                self.check_warnings(key);
                self.str.push('=');
                match ty {
                    LineType::KeyValue => self.str.push_str(value),
                    LineType::KeyFile => {
                        self.str.push('<');
                        self.str.push_str(value);
                    }
                    _ => {
                        let mut out = String::new();
                        if !self.write_keyvariable(key, value, &mut out) {
                            return;
                        }
                        self.str.push_str(&out);
                    }
                }
                let line = self.str.clone();
                self.apply_setting(key, &line, None);
            }
            LineType::SectionBegin => {
                let parent = self.cur().clone();
                self.sections.push(Section {
                    filter: parent.filter.clone(),
                    parsers: parent.parsers,
                    open_path: self.cur_path(),
                    open_line: self.cur_line(),
                    key: Some(key.to_string()),
                    is_filter: false,
                    pathlen: self.pathlen,
                });
                if self.add_new_filter(key, value) {
                    return;
                }
                let section_name = if value.is_empty() {
                    let n = self.section_counter;
                    self.section_counter += 1;
                    n.to_string()
                } else {
                    settings::section_escape(value)
                };
                self.str.push_str(key);
                self.pathlen = self.str.len();
                self.str.push('=');
                self.str.push_str(&section_name);
                let line = self.str.clone();
                if !self.apply_setting(key, &line, Some(value)) {
                    return;
                }
                self.str.truncate(self.pathlen);
                self.str.push('/');
                self.str.push_str(&section_name);
                self.str.push('/');
                self.pathlen = self.str.len();
            }
            LineType::SectionEnd => {
                if self.sections.len() == 1 {
                    self.error = Some("Unexpected '}'".into());
                } else if let Some(s) = self.sections.pop() {
                    self.pathlen = s.pathlen;
                }
            }
            LineType::Include | LineType::IncludeTry => {
                let pat = fix_relative_path(value, &self.cur_path());
                self.include(&pat, ty == LineType::IncludeTry);
            }
        }
    }

    /// `settings_include()` + `settings_add_include()`.
    fn include(&mut self, pattern: &str, ignore_errors: bool) {
        let mut matches = Vec::new();
        for p in expand_braces(pattern) {
            matches.extend(self.glob_one(&p));
        }
        self.include_matches(matches, ignore_errors);
    }

    fn glob_one(&self, pattern: &str) -> Vec<String> {
        // glob(3) treats `//` as `/` but keeps the pattern's directory part as written in
        // its results (`./`, `dir//conf.d/`); the glob crate finds nothing for `.//x/*`
        // and drops `./`: glob the collapsed pattern, then put the written prefix back.
        let collapse = |s: &str| {
            let mut n = String::with_capacity(s.len());
            for c in s.chars() {
                if !(c == '/' && n.ends_with('/')) {
                    n.push(c);
                }
            }
            n
        };
        let wild = pattern.find(['*', '?', '[']).unwrap_or(pattern.len());
        let written = pattern[..wild].rfind('/').map(|e| &pattern[..=e]);
        let normal = written.map(|w| {
            let c = collapse(w);
            c.strip_prefix("./").map(str::to_string).unwrap_or(c)
        });
        match glob::glob_with(
            &collapse(pattern),
            glob::MatchOptions {
                case_sensitive: true,
                require_literal_separator: true,
                require_literal_leading_dot: true,
            },
        ) {
            Ok(paths) => paths
                .filter_map(Result::ok)
                .map(|p| p.to_string_lossy().into_owned())
                .map(|p| match (written, &normal) {
                    (Some(w), Some(n)) if p.starts_with(n.as_str()) && !p.starts_with(w) => {
                        format!("{w}{}", &p[n.len()..])
                    }
                    _ => p,
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn include_matches(&mut self, mut matches: Vec<String>, ignore_errors: bool) {
        // glob(3) sorts its results (C collation).
        matches.sort();
        matches.dedup();
        if matches.is_empty() {
            if !ignore_errors {
                self.error = Some("No matches".into());
            }
            return;
        }
        for path in matches.iter().rev() {
            if self.inputs.iter().any(|i| &i.path == path) {
                self.error = Some(format!("Recursive include file: {path}"));
                return;
            }
            let canon = std::fs::canonicalize(path)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| path.clone());
            if self.inputs.len() >= MAX_INCLUDE_DEPTH && self.depth_guard.contains(&canon) {
                self.error = Some(format!("Recursive include file: {path}"));
                return;
            }
            match read_lines(path) {
                Ok(lines) => {
                    self.depth_guard.insert(canon);
                    self.inputs.push(Input {
                        path: path.clone(),
                        lines,
                        next: 0,
                        linenum: 0,
                        origins: None,
                    });
                }
                Err(e) => {
                    if ignore_errors {
                        continue;
                    }
                    self.error = Some(format!(
                        "Couldn't open include file {path}: {}",
                        crate::config::error::strerror(&e)
                    ));
                    return;
                }
            }
        }
    }

    fn obsolete(&mut self, msg: String) {
        if !self.old.seen_obsoletes {
            self.warn(
                "NOTE: You can get a new clean config file with: doveconf -Pn > dovecot-new.conf"
                    .into(),
            );
            self.old.seen_obsoletes = true;
        }
        let (p, n) = (self.cur_path(), self.cur_line());
        self.warn(format!("Obsolete setting in {p}:{n}: {msg}"));
    }

    fn set_rename(&mut self, old_key: &str, key: &str, value: &str) {
        self.obsolete(format!("{old_key} has been renamed to {key}"));
        self.apply_line(LineType::KeyValue, key, value);
    }

    /// `config_apply_line()` with the result ignored (old-set-parser.c's own macro).
    fn apply_raw(&mut self, key: &str, line: &str) {
        self.apply_setting(key, line, None);
    }

    /// `old_settings_handle_root()`.
    fn old_root(&mut self, key: &str, value: &str) -> bool {
        if key == "base_dir" {
            self.old.base_dir = value.strip_suffix('/').unwrap_or(value).to_string();
        }
        match key {
            "protocols" => {
                let mut have = (false, false, false, false);
                let mut protos: Vec<String> = Vec::new();
                let mut obs = Vec::new();
                for s in split_spaces(value) {
                    match s {
                        "imap" => {
                            have.0 = true;
                            protos.push(s.into());
                        }
                        "imaps" => have.1 = true,
                        "pop3" => {
                            have.2 = true;
                            protos.push(s.into());
                        }
                        "pop3s" => have.3 = true,
                        "managesieve" => {
                            protos.push("sieve".into());
                            obs.push("protocols=managesieve has been renamed to protocols=sieve");
                        }
                        other => protos.push(other.into()),
                    }
                }
                for o in obs {
                    self.obsolete(o.into());
                }
                let mut v = protos.join(" ");
                if have.1 && !have.0 {
                    self.obsolete("'imaps' protocol can no longer be specified (use protocols=imap). to disable non-ssl imap, use service imap-login { inet_listener imap { port=0 } }".into());
                    v.push_str(" imap");
                    self.apply_raw("port", "service/imap-login/inet_listener/imap/port=0");
                } else if have.1 {
                    self.obsolete("'imaps' protocol is no longer necessary, remove it".into());
                }
                if have.3 && !have.2 {
                    self.obsolete("'pop3s' protocol can no longer be specified (use protocols=pop3). to disable non-ssl pop3, use service pop3-login { inet_listener pop3 { port=0 } }".into());
                    v.push_str(" pop3");
                    self.apply_raw("port", "service/pop3-login/inet_listener/pop3/port=0");
                } else if have.3 {
                    self.obsolete("'pop3s' protocol is no longer necessary, remove it".into());
                }
                let v = v.strip_prefix(' ').unwrap_or(&v).to_string();
                self.apply_line(LineType::KeyValue, key, &v);
                true
            }
            "ssl_cert_file" | "ssl_key_file" | "ssl_ca_file" => {
                if value.is_empty() {
                    return true;
                }
                let p = &key[..key.rfind('_').unwrap_or(key.len())];
                self.obsolete(format!("{key} has been replaced by {p} = <file"));
                self.apply_line(LineType::KeyFile, p, value);
                true
            }
            "ssl_disable" => {
                let v = if value.eq_ignore_ascii_case("yes") {
                    "no"
                } else if value.eq_ignore_ascii_case("no") {
                    "yes"
                } else {
                    value
                };
                self.set_rename(key, "ssl", v);
                true
            }
            "ssl_parameters_regenerate" | "ssl_dh_parameters_length" => {
                self.obsolete(format!("{key} is no longer needed"));
                true
            }
            "ssl_protocols" => {
                self.obsolete(format!("{key} has been replaced by ssl_min_protocol"));
                match ssl_protocols_to_min_protocol(value) {
                    Ok(min) => self.apply_line(LineType::KeyValue, "ssl_min_protocol", min),
                    Err(e) => self.warnings.push(format!(
                        "\u{1}Error:Could not find a minimum ssl_min_protocol setting from ssl_protocols = {value}: {e}"
                    )),
                }
                true
            }
            "sieve" | "sieve_storage" => {
                if key == "sieve_storage" {
                    self.obsolete("sieve_storage has been moved into plugin { sieve_dir }".into());
                } else {
                    self.obsolete(format!("{key} has been moved into plugin {{}} section"));
                }
                self.apply_raw("", "plugin=");
                self.apply_raw(key, &format!("plugin/{key}={value}"));
                true
            }
            "fsync_disable" => {
                let v = if value.eq_ignore_ascii_case("yes") {
                    "never"
                } else if value.eq_ignore_ascii_case("no") {
                    "optimized"
                } else {
                    value
                };
                self.set_rename(key, "mail_fsync", v);
                true
            }
            "dbox_rotate_size" => {
                self.set_rename(key, "mdbox_rotate_size", value);
                true
            }
            k if k.starts_with("mail_cache_compress_") => {
                let nk = format!("mail_cache_purge_{}", &k[20..]);
                self.set_rename(key, &nk, value);
                true
            }
            "imap_client_workarounds" => {
                let mut args: Vec<&str> =
                    value.split([' ', ',']).filter(|s| !s.is_empty()).collect();
                for a in args.iter_mut() {
                    if *a == "outlook-idle" {
                        *a = "";
                        self.obsolete(
                            "imap_client_workarounds=outlook-idle is no longer necessary".into(),
                        );
                    } else if *a == "netscape-eoh" {
                        *a = "";
                        self.obsolete(
                            "imap_client_workarounds=netscape-eoh is no longer supported".into(),
                        );
                    }
                }
                let v = args.join(" ");
                self.apply_line(LineType::KeyValue, key, &v);
                true
            }
            "login_dir"
            | "dbox_rotate_min_size"
            | "dbox_rotate_days"
            | "director_consistent_hashing"
            | "mail_log_max_lines_per_sec"
            | "maildir_copy_preserve_filename" => {
                self.obsolete(format!("{key} has been removed"));
                true
            }
            _ => {
                if self.old.auth_section == 1 {
                    let k = if key.starts_with("auth_") {
                        key.to_string()
                    } else {
                        format!("auth_{key}")
                    };
                    self.apply_line(LineType::KeyValue, &k, value);
                    return true;
                }
                false
            }
        }
    }

    /// `config_apply_login_set()` / `config_apply_mail_set()`.
    fn apply_service_set(
        &mut self,
        old_section: &Filter,
        old_key: &str,
        key: &str,
        value: &str,
        login: bool,
    ) {
        self.obsolete(format!(
            "{old_key} has been replaced by service {{ {key} }}"
        ));
        let suffix = if login { "-login" } else { "" };
        for (svc, filt) in [("imap", "imap"), ("pop3", "pop3"), ("managesieve", "sieve")] {
            if old_section.matches_service(Some(filt)) {
                let line = format!("service/{svc}{suffix}/{key}={value}");
                self.apply_raw(key, &line);
                if svc == "managesieve" {
                    // Pigeonhole's managesieve may not be installed: its error is ignored.
                    self.error = None;
                }
            }
        }
    }

    fn apply_auth_set(&mut self, old_key: &str, key: &str, value: &str) {
        self.obsolete(format!(
            "{old_key} has been replaced by service auth {{ {key} }}"
        ));
        self.apply_raw(key, &format!("service/auth/{key}={value}"));
    }

    /// `old_settings_handle_proto()`.
    fn old_proto(&mut self, key: &str, value: &str) -> bool {
        let old_filter = self.cur().filter.clone();
        // The settings below go to the global parsers (`ctx->cur_section` rewound).
        let saved: Vec<Section> = self.sections.drain(1..).collect();
        let r = self.old_proto_inner(&old_filter, key, value);
        self.sections.extend(saved);
        r
    }

    fn old_proto_inner(&mut self, old_filter: &Filter, key: &str, value: &str) -> bool {
        let root = old_filter.is_root_match();
        if key == "ssl_listen" || (key == "listen" && (listen_has_port(value) || !root)) {
            let ssl = if key == "ssl_listen" { "s" } else { "" };
            if value.is_empty() {
                return true;
            }
            let mut value = value.to_string();
            if let Some(p) = value.rfind(':')
                && listen_has_port(&value)
            {
                self.obsolete(format!(
                    "{key}=..:port has been replaced by service {{ inet_listener {{ port }} }}"
                ));
                let port = value[p + 1..].to_string();
                value.truncate(p);
                if old_filter.matches_service(Some("imap")) {
                    self.apply_raw(
                        "port",
                        &format!("service/imap-login/inet_listener/imap{ssl}/port={port}"),
                    );
                }
                if old_filter.matches_service(Some("pop3")) {
                    self.apply_raw(
                        "port",
                        &format!("service/pop3-login/inet_listener/pop3{ssl}/port={port}"),
                    );
                }
                if ssl.is_empty() && old_filter.matches_service(Some("sieve")) {
                    self.apply_raw(
                        "port",
                        &format!("service/managesieve-login/inet_listener/managesieve/port={port}"),
                    );
                    self.error = None;
                }
            }
            if root && ssl.is_empty() {
                self.apply_line(LineType::KeyValue, key, &value);
            } else {
                self.obsolete(format!(
                    "protocol {{ {key} }} has been replaced by service {{ inet_listener {{ address }} }}"
                ));
                if old_filter.matches_service(Some("imap")) {
                    self.apply_raw(
                        "address",
                        &format!("service/imap-login/inet_listener/imap{ssl}/address={value}"),
                    );
                }
                if old_filter.matches_service(Some("pop3")) {
                    self.apply_raw(
                        "address",
                        &format!("service/pop3-login/inet_listener/pop3{ssl}/address={value}"),
                    );
                }
                if ssl.is_empty() && old_filter.matches_service(Some("sieve")) {
                    self.apply_raw(
                        "address",
                        &format!(
                            "service/managesieve-login/inet_listener/managesieve/address={value}"
                        ),
                    );
                    self.error = None;
                }
            }
            return true;
        }
        let login = |k: &str| -> Option<(&'static str, String)> {
            Some(match k {
                "login_chroot" => (
                    "chroot",
                    if value == "no" { "" } else { "login" }.to_string(),
                ),
                "login_user" => ("user", value.to_string()),
                "login_executable" => ("executable", value.to_string()),
                "login_process_size" => ("vsz_limit", format!("{value} M")),
                "login_process_per_connection" => (
                    "service_count",
                    if value == "no" { "0" } else { "1" }.to_string(),
                ),
                "login_processes_count" => ("process_min_avail", value.to_string()),
                "login_max_processes_count" => ("process_limit", value.to_string()),
                "login_max_connections" => ("client_limit", value.to_string()),
                _ => return None,
            })
        };
        if let Some((k, v)) = login(key) {
            self.apply_service_set(old_filter, key, k, &v, true);
            return true;
        }
        let mail = |k: &str| -> Option<(&'static str, String)> {
            Some(match k {
                "max_mail_processes" => ("process_limit", value.to_string()),
                "mail_executable" => ("executable", value.to_string()),
                "mail_process_size" => ("vsz_limit", format!("{value} M")),
                "mail_drop_priv_before_exec" => ("drop_priv_before_exec", value.to_string()),
                _ => return None,
            })
        };
        if let Some((k, v)) = mail(key) {
            self.apply_service_set(old_filter, key, k, &v, false);
            return true;
        }
        let key = if self.old.auth_section == 1 && !key.starts_with("auth_") {
            format!("auth_{key}")
        } else {
            key.to_string()
        };
        match key.as_str() {
            "auth_executable" => {
                self.apply_auth_set(&key, "executable", value);
                return true;
            }
            "auth_process_size" => {
                self.apply_auth_set(&key, "vsz_limit", &format!("{value} M"));
                return true;
            }
            "auth_user" => {
                self.apply_auth_set(&key, "user", value);
                return true;
            }
            "auth_chroot" => {
                self.apply_auth_set(&key, "chroot", value);
                return true;
            }
            "auth_cache_size" => {
                if let Ok(n) = value.parse::<u64>()
                    && n > 0
                    && n < 1024
                    && value.bytes().all(|b| b.is_ascii_digit())
                {
                    self.obsolete(format!(
                        "auth_cache_size value no longer defaults to megabytes. Use {value}M"
                    ));
                    self.apply_raw(&key, &format!("{key}={value}M"));
                    return true;
                }
            }
            "auth_count" => {
                if value == "count" {
                    self.obsolete("auth_count has been removed".into());
                } else {
                    self.obsolete("auth_count has been removed, and its value must be 1".into());
                }
                return true;
            }
            _ => {}
        }
        if self.old.socket_listen_section == 2 {
            let v = Some(value.to_string());
            match key.as_str() {
                "path" | "auth_path" => self.old.socket_set.path = v,
                "mode" | "auth_mode" => self.old.socket_set.mode = v,
                "user" | "auth_user" => self.old.socket_set.user = v,
                "group" | "auth_group" => self.old.socket_set.group = v,
                _ => return false,
            }
            return true;
        }
        false
    }

    /// `old_auth_section()`.
    fn old_auth_section(&mut self, key: &str, value: &str) -> bool {
        if self.old.auth_section == 0 && self.old.seen_auth_section {
            self.obsolete("Multiple auth sections are no longer supported".into());
            return false;
        }
        self.old.seen_auth_section = true;
        self.old.socket_set = SocketSet::default();
        self.old.auth_section += 1;
        if (key == "passdb" || key == "userdb") && self.old.auth_section == 2 {
            self.obsolete(format!(
                "{key} {value} {{}} has been replaced by {key} {{ driver={value} }}"
            ));
            self.apply_line(LineType::SectionBegin, key, "");
            self.apply_line(LineType::KeyValue, "driver", value);
            return true;
        }
        if key == "socket" && self.old.auth_section == 2 {
            if value == "connect" {
                self.obsolete("socket connect {} is no longer supported, configure external auth server separately".into());
                return false;
            }
            if value != "listen" {
                return false;
            }
            self.old.socket_listen_section += 1;
            return true;
        }
        if self.old.socket_listen_section > 0 {
            self.old.socket_listen_section += 1;
        }
        if (key == "master" || key == "client") && self.old.socket_listen_section == 2 {
            self.old.socket_set.master = key == "master";
            return true;
        }
        false
    }

    /// `socket_apply()`.
    fn socket_apply(&mut self) {
        let set = self.old.socket_set.clone();
        let Some(path) = set.path.clone() else {
            self.error = Some("socket listen {} is missing path".into());
            return;
        };
        let mut path = path.as_str();
        let base = self.old.base_dir.clone();
        if let Some(rest) = path.strip_prefix(base.as_str())
            && let Some(r) = rest.strip_prefix('/')
        {
            path = r;
        }
        let master_suffix =
            path.len() >= 7 && (path.ends_with("-master") || path.ends_with("-userdb"));
        if set.master && !master_suffix {
            self.error = Some(
                "socket listen { master { path=.. } } must end with -master (or -userdb) suffix"
                    .into(),
            );
            return;
        } else if !set.master && master_suffix {
            self.error = Some(
                "socket listen { client { path=.. } } must end not with -master or -userdb suffix"
                    .into(),
            );
            return;
        }
        let esc = settings::section_escape(path);
        // config_apply_line(ctx, "unix_listener", "service/auth/unix_listener=ESC", path)
        let line = format!("service/auth/unix_listener={esc}");
        let path = path.to_string();
        self.apply_setting("unix_listener", &line, Some(&path));
        let prefix = format!("service/auth/unix_listener/{esc}");
        if let Some(m) = &set.mode {
            self.apply_raw("mode", &format!("{prefix}/mode={m}"));
        }
        if let Some(u) = &set.user {
            self.apply_raw("user", &format!("{prefix}/user={u}"));
        }
        if let Some(g) = &set.group {
            self.apply_raw("group", &format!("{prefix}/group={g}"));
        }
        self.old.socket_set = SocketSet::default();
    }

    /// `old_settings_handle()`: true when the line was handled.
    fn old_settings_handle(&mut self, ty: LineType, key: &str, value: &str) -> bool {
        match ty {
            LineType::KeyValue => {
                if self.pathlen == 0 {
                    if self.old_proto(key, value) {
                        return true;
                    }
                    return self.old_root(key, value);
                }
                // old_settings_handle_path()
                if self.str == "plugin/0/" && key == "imap_zlib_compress_level" {
                    self.obsolete(format!(
                        "{key} has been replaced by imap_compress_deflate_level"
                    ));
                    self.apply_raw(
                        key,
                        &format!("plugin/0/imap_compress_deflate_level={value}"),
                    );
                    return true;
                }
                false
            }
            LineType::SectionBegin => {
                if self.old.auth_section > 0 {
                    return self.old_auth_section(key, value);
                }
                if self.pathlen == 0 && key == "auth" {
                    self.obsolete("add auth_ prefix to all settings inside auth {} and remove the auth {} section completely".into());
                    self.old.auth_section = 1;
                    return true;
                }
                if self.pathlen == 0 && key == "protocol" && value == "managesieve" {
                    self.obsolete(
                        "protocol managesieve {} has been replaced by protocol sieve { }".into(),
                    );
                    self.apply_line(LineType::SectionBegin, "protocol", "sieve");
                    return true;
                }
                if self.pathlen == 0 && key == "service" && value == "dns_client" {
                    self.obsolete(
                        "service dns_client {} has been replaced by service dns-client { }".into(),
                    );
                    self.apply_line(LineType::SectionBegin, "service", "dns-client");
                    return true;
                }
                false
            }
            LineType::SectionEnd => {
                if self.old.auth_section > 0 {
                    self.old.auth_section -= 1;
                    if self.old.auth_section == 0 {
                        return true;
                    }
                }
                if self.old.socket_listen_section > 0 {
                    if self.old.socket_listen_section == 2 {
                        self.socket_apply();
                    }
                    self.old.socket_listen_section -= 1;
                    return true;
                }
                false
            }
            _ => false,
        }
    }

    /// `config_parse_file()` up to (not including) the checks.
    fn run(&mut self, main_lines: Vec<String>) -> Option<String> {
        self.run_with(main_lines, None)
    }

    fn run_with(
        &mut self,
        main_lines: Vec<String>,
        origins: Option<Vec<(String, usize)>>,
    ) -> Option<String> {
        self.inputs.push(Input {
            path: self.path.clone(),
            lines: main_lines,
            next: 0,
            linenum: 0,
            origins,
        });
        let mut full_line = String::new();
        while let Some(input) = self.inputs.last_mut() {
            if input.next >= input.lines.len() {
                self.inputs.pop();
                continue;
            }
            let raw = std::mem::take(&mut input.lines[input.next]);
            input.next += 1;
            input.linenum += 1;
            let (ty, key, value) = self.parse_line(&raw, &mut full_line);
            self.str.truncate(self.pathlen);
            if ty == LineType::Continue {
                continue;
            }
            if !self.old_settings_handle(ty, &key, &value) {
                self.apply_line(ty, &key, &value);
            }
            if let Some(e) = self.error.take() {
                return Some(format!(
                    "Error in configuration file {} line {}: {e}",
                    self.cur_path(),
                    self.cur_line()
                ));
            }
            full_line.clear();
        }
        None
    }
}

/// GLOB_BRACE: `a{b,c}d` → `abd`, `acd` (nested braces expanded from the first).
fn expand_braces(p: &str) -> Vec<String> {
    let Some(open) = p.find('{') else {
        return vec![p.to_string()];
    };
    let mut depth = 0;
    let mut close = None;
    let mut commas = Vec::new();
    for (i, c) in p[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            ',' if depth == 1 => commas.push(open + i),
            _ => {}
        }
    }
    let Some(close) = close else {
        return vec![p.to_string()];
    };
    let (pre, post) = (&p[..open], &p[close + 1..]);
    let mut parts = Vec::new();
    let mut start = open + 1;
    for c in commas.iter().copied().chain(std::iter::once(close)) {
        parts.push(&p[start..c]);
        start = c + 1;
    }
    let mut out = Vec::new();
    for part in parts {
        out.extend(expand_braces(&format!("{pre}{part}{post}")));
    }
    out
}

/// `listen_has_port()`.
fn listen_has_port(s: &str) -> bool {
    if !s.contains(':') {
        return false;
    }
    s.split([',', ' '])
        .filter(|a| !a.is_empty())
        .any(|a| a != "*" && a != "::" && a != "[::]" && a.parse::<IpAddr>().is_err())
}

/// `ssl_protocols_to_min_protocol()`.
fn ssl_protocols_to_min_protocol(v: &str) -> Result<&'static str, String> {
    const VERSIONS: [&str; 4] = ["SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2"];
    let mut protos = [0i8; 4];
    let mut explicit_enable = false;
    for p in v.split([',', ' ']).filter(|s| !s.is_empty()) {
        let (enable, name) = match p.strip_prefix('!') {
            Some(n) => (false, n),
            None => (true, p),
        };
        match VERSIONS.iter().position(|x| *x == name) {
            Some(i) => {
                if enable {
                    protos[i] = 1;
                    explicit_enable = true;
                } else {
                    protos[i] = -1;
                }
            }
            None => return Err(format!("Unrecognized protocol '{name}'")),
        }
    }
    let min = (0..4).find(|i| {
        if explicit_enable {
            protos[*i] > 0
        } else {
            protos[*i] == 0
        }
    });
    match min {
        Some(i) => Ok(VERSIONS[i]),
        None => Err("All protocols disabled".into()),
    }
}

/// A message of [`Parsed::warnings`]: `("Error", text)` for an error logged while parsing,
/// else `("Warning", text)`.
pub fn message_level(m: &str) -> (&'static str, &str) {
    match m.strip_prefix("\u{1}Error:") {
        Some(e) => ("Error", e),
        None => ("Warning", m),
    }
}

/// `str_unescape()`.
pub fn str_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some(n) => out.push(n),
                None => break,
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Keys of the auth process (refused inside `local`/`remote`).
fn is_auth_key(path: &str) -> bool {
    let top = path.split('/').next().unwrap_or(path);
    settings::lookup("global", top).is_some_and(|d| d.auth)
}

/// Parse `path` as doveconf does. `path` is used as given in messages (`./dovecot.conf` →
/// `./conf.d/10-auth.conf`).
pub fn parse_file(path: &str) -> Parsed {
    let mut p = Parser::new(path);
    let lines = match read_lines(path) {
        Ok(l) => l,
        Err(e) => {
            return Parsed {
                filters: p.filters,
                warnings: Vec::new(),
                errors: Vec::new(),
                fatal: Some(format!(
                    "open({path}) failed: {}",
                    crate::config::error::strerror(&e)
                )),
                open_failed: true,
                delayed: None,
                check_errors: Vec::new(),
            };
        }
    };
    finish(p.run(lines), p)
}

/// Parse text standing for the file `path` (includes are relative to it).
pub fn parse_text(text: &str, path: &str) -> Parsed {
    let mut p = Parser::new(path);
    let lines = split_lines(&text_to_bytes(&string_to_text(text)));
    finish(p.run(lines), p)
}

/// Parse the 2.x translation of an old file: `lines` (parser text) with, for each, the
/// file and line it came from (messages name those).
pub fn parse_translated(lines: Vec<String>, origins: Vec<(String, usize)>, path: &str) -> Parsed {
    let mut p = Parser::new(path);
    finish(p.run_with(lines, Some(origins)), p)
}

fn finish(fatal: Option<String>, mut p: Parser) -> Parsed {
    // Errors logged while parsing stay in order among the warnings, tagged (see
    // [`message_level`]).
    let mut warnings = std::mem::take(&mut p.warnings);
    let errors = Vec::new();
    if fatal.is_some() {
        return Parsed {
            filters: p.filters,
            warnings,
            errors,
            fatal,
            open_failed: false,
            delayed: None,
            check_errors: Vec::new(),
        };
    }
    // config_all_parsers_check()
    let mut delayed = None;
    if p.sections.len() > 1 {
        let s = p.cur();
        delayed = Some(format!(
            "Error in configuration file {}: Missing '}}' (section started at {}:{})",
            p.path, s.open_path, s.open_line
        ));
    }
    let mut check_errors = Vec::new();
    if delayed.is_none() {
        let groot = p.filters[0].tree.root();
        let global_ssl = if groot.is_changed("ssl") {
            groot.get("ssl").unwrap_or("").to_string()
        } else {
            String::new()
        };
        let mut ssl_warned = false;
        let mut warned = Warned::default();
        for i in 0..p.filters.len() {
            let merged = match merged_tree(&p.filters, i) {
                Ok(t) => t,
                Err(e) => {
                    delayed = Some(format!("Error in configuration file {}: {e}", p.path));
                    break;
                }
            };
            let f = &p.filters[i];
            let ssl_set = if f.tree.root().is_changed("ssl") {
                f.tree.root().get("ssl").unwrap_or("").to_string()
            } else {
                global_ssl.clone()
            };
            if ssl_set != "no" && global_ssl == "no" && !ssl_warned {
                warnings.push(format!(
                    "SSL is disabled because global ssl=no, ignoring ssl={ssl_set} for subsection"
                ));
                ssl_warned = true;
            }
            let mut w = Vec::new();
            let r = check(&merged, &mut warned, &mut w);
            warnings.extend(w);
            if let Err(e) = r {
                delayed = Some(format!("Error in configuration file {}: {e}", p.path));
                break;
            }
        }
        // doveconf's export of the global settings runs the checks again and prints each
        // failing module's error as `Error: …`.
        let mut quiet = Warned {
            auth: true,
            anvil: true,
        };
        let mut w = Vec::new();
        check_errors = check_all(&p.filters[0].tree, &mut quiet, &mut w);
    }
    Parsed {
        filters: p.filters,
        warnings,
        errors,
        fatal: None,
        open_failed: false,
        delayed,
        check_errors,
    }
}

/// `config_filter_parsers_get()` for the filter `i` itself: the global settings with every
/// matching filter's changes applied, the most specific first.
pub fn merged_tree(filters: &[FilterParser], i: usize) -> Result<Tree, String> {
    let want = &filters[i].filter;
    let mut matches: Vec<usize> = (0..filters.len())
        .filter(|j| filter_matches(&filters[*j].filter, want))
        .collect();
    matches.sort_by(|a, b| filter_cmp(&filters[*a].filter, &filters[*b].filter));
    let Some(first) = matches.first() else {
        return Ok(filters[0].tree.clone());
    };
    let mut dest = filters[*first].tree.clone();
    for j in matches.iter().skip(1) {
        apply_changes(&mut dest, &filters[*j].tree);
    }
    Ok(dest)
}

/// Does the filter `mask` apply to sessions matching `filter`? (`config_filter_match()`)
fn filter_matches(mask: &Filter, filter: &Filter) -> bool {
    if !mask.matches_service(filter.service.as_deref()) {
        return false;
    }
    if let Some(ln) = &mask.local_name {
        match &filter.local_name {
            None => return false,
            Some(f) => {
                if !ln.split(' ').any(|n| wildcard_match(f, n)) {
                    return false;
                }
            }
        }
    }
    if let Some((net, bits)) = mask.remote {
        match filter.remote {
            None => return false,
            Some((ip, _)) => {
                if !in_network(&ip, &net, bits) {
                    return false;
                }
            }
        }
    }
    if let Some((net, bits)) = mask.local {
        match filter.local {
            None => return false,
            Some((ip, _)) => {
                if !in_network(&ip, &net, bits) {
                    return false;
                }
            }
        }
    }
    true
}

/// `dns_match_wildcard()` (case-insensitive, `*` and `?`).
fn wildcard_match(name: &str, pat: &str) -> bool {
    let n: Vec<char> = name.to_ascii_lowercase().chars().collect();
    let p: Vec<char> = pat.to_ascii_lowercase().chars().collect();
    fn m(n: &[char], p: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| m(&n[i..], &p[1..])),
            Some('?') => !n.is_empty() && m(&n[1..], &p[1..]),
            Some(c) => n.first() == Some(c) && m(&n[1..], &p[1..]),
        }
    }
    m(&n, &p)
}

/// `settings_parser_apply_changes()`: copy what `src` changed into `dest` (lists merged by
/// element, strlists by key with `dest`'s values kept).
fn apply_changes(dest: &mut Tree, src: &Tree) {
    apply_node(dest, 0, src, 0, "");
}

fn apply_node(dest: &mut Tree, dn: NodeId, src: &Tree, sn: NodeId, prefix: &str) {
    let info = src.nodes[sn].info;
    for (i, d) in info.defines.iter().enumerate() {
        match d.kind {
            Kind::List { .. } => {
                for &child in &src.nodes[sn].lists[i] {
                    let cname = src.nodes[child].name().to_string();
                    let existing = dest.nodes[dn].lists[i]
                        .iter()
                        .copied()
                        .find(|c| !cname.is_empty() && dest.nodes[*c].name() == cname);
                    let target = match existing {
                        Some(t) => t,
                        None => {
                            let item = if cname.is_empty() {
                                dest.nodes[dn].lists[i].len().to_string()
                            } else {
                                cname.clone()
                            };
                            let id = dest.add_element(dn, i, &item, &format!("{prefix}{}/", d.key));
                            let init = src.nodes[child].clone();
                            let n = &mut dest.nodes[id];
                            n.values = init.values.clone();
                            id
                        }
                    };
                    let p = format!("{prefix}{}/{}/", d.key, settings::section_escape(&cname));
                    apply_node(dest, target, src, child, &p);
                }
            }
            Kind::StrList => {
                if let Some(pairs) = &src.nodes[sn].strlists[i] {
                    let list = dest.nodes[dn].strlists[i].get_or_insert_with(Default::default);
                    for (k, v) in pairs {
                        if !list.contains_key(k) {
                            list.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            Kind::Alias(_) => {}
            _ => {
                // A setting the more specific filter changed wins (a conflict between
                // filters that are not supersets of each other is not reported).
                if src.nodes[sn].changed[i] && !dest.nodes[dn].changed[i] {
                    dest.nodes[dn].values[i] = src.nodes[sn].values[i].clone();
                    dest.nodes[dn].changed[i] = true;
                }
            }
        }
    }
}

/// The one-time warnings of `master_settings_verify()` (`static bool warned_auth`).
#[derive(Debug, Default)]
pub struct Warned {
    auth: bool,
    anvil: bool,
}

/// `settings_parser_check()` over all modules; the first error.
pub fn check_tree(t: &Tree, warned: &mut Warned, warnings: &mut Vec<String>) -> Result<(), String> {
    check(t, warned, warnings)
}

fn check(t: &Tree, warned: &mut Warned, warnings: &mut Vec<String>) -> Result<(), String> {
    match check_all(t, warned, warnings).into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Every module's check, in Dovecot's root order (all-settings.c: the master service and
/// SSL modules first, then the others by name); one error per failing module.
fn check_all(t: &Tree, warned: &mut Warned, warnings: &mut Vec<String>) -> Vec<String> {
    let root = t.root();
    let mut errors = Vec::new();
    let mut push = |r: Result<(), String>| {
        if let Err(e) = r {
            errors.push(e);
        }
    };
    push(check_ssl(root));
    push(check_auth(t));
    push(check_workarounds(
        root.get("imap_client_workarounds").unwrap_or(""),
        "imap_client_workarounds",
        &["delay-newmail", "tb-extra-mailbox-sep", "tb-lsub-flags"],
    ));
    push(check_workarounds(
        root.get("lmtp_client_workarounds").unwrap_or(""),
        "lmtp_client_workarounds",
        &["whitespace-before-path", "mailbox-for-path"],
    ));
    push(
        check_mail_user(root)
            .and_then(|_| check_storage(root))
            .and_then(|_| check_mail(t)),
    );
    push(check_master(t, warned, warnings));
    push(
        check_workarounds(
            root.get("pop3_client_workarounds").unwrap_or(""),
            "pop3_client_workarounds",
            &["outlook-no-nuls", "oe-ns-eoh"],
        )
        .and_then(|_| {
            if root.get("pop3_delete_type") == Some("flag")
                && root.get("pop3_deleted_flag").unwrap_or("").is_empty()
            {
                Err("pop3_delete_type=flag, but pop3_deleted_flag not set".into())
            } else {
                Ok(())
            }
        }),
    );
    push(check_workarounds(
        root.get("submission_client_workarounds").unwrap_or(""),
        "submission_client_workarounds",
        &[
            "whitespace-before-path",
            "mailbox-for-path",
            "implicit-auth-external",
            "exotic-backend",
        ],
    ));
    errors
}

fn check_workarounds(v: &str, name: &str, known: &[&str]) -> Result<(), String> {
    for w in v.split([' ', ',']).filter(|w| !w.is_empty()) {
        if !known.contains(&w) {
            return Err(format!("{name}: Unknown workaround: {w}"));
        }
    }
    Ok(())
}

/// `master_service_ssl_settings_check()` as doveconf runs it (the libdovecot copy, built
/// without CONFIG_BINARY: no ssl_cert check, no `no_compression` warning).
fn check_ssl(root: &Node) -> Result<(), String> {
    if root.get("ssl") == Some("no") {
        return Ok(());
    }
    if root.get("ssl_verify_client_cert") == Some("yes")
        && root.get("ssl_ca").unwrap_or("").is_empty()
    {
        return Err("ssl_verify_client_cert set, but ssl_ca not".into());
    }
    for opt in root
        .get("ssl_options")
        .unwrap_or("")
        .split([',', ' '])
        .filter(|o| !o.is_empty())
    {
        let o = opt.to_ascii_lowercase();
        if !matches!(o.as_str(), "compression" | "no_compression" | "no_ticket") {
            return Err(format!("ssl_options: unknown flag: '{opt}'"));
        }
    }
    Ok(())
}

/// `auth_settings_check()`, then `auth_passdb_settings_check()` and
/// `auth_userdb_settings_check()` for each element (auth-settings.c).
fn check_auth(t: &Tree) -> Result<(), String> {
    let root = t.root();
    let g = |k: &str| root.get(k).unwrap_or("").to_string();
    if g("auth_worker_max_count") == "0" {
        return Err("auth_worker_max_count must be above zero".into());
    }
    let cache = settings::parse_size(&g("auth_cache_size")).unwrap_or(0);
    if cache > 0 && cache < 1024 {
        return Err(format!(
            "auth_cache_size value is too small ({cache} bytes)"
        ));
    }
    // auth_verify_verbose_password()
    let vp = g("auth_verbose_passwords");
    let (word, trunc) = match vp.split_once(':') {
        Some((w, n)) => (w.to_string(), Some(n.to_string())),
        None => (vp.clone(), None),
    };
    if let Some(n) = trunc
        && !matches!(n.parse::<u32>(), Ok(x) if x > 0 && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "auth_verbose_passwords: Invalid truncation number: '{n}'"
        ));
    }
    if !matches!(word.as_str(), "no" | "plain" | "sha1" | "yes") {
        return Err("auth_verbose_passwords: Invalid value".into());
    }
    if !g("auth_policy_server_url").is_empty() {
        if g("auth_policy_hash_nonce").is_empty() {
            return Err("auth_policy_hash_nonce must be set when policy server is used".into());
        }
        let bits: Option<u32> = match g("auth_policy_hash_mech").as_str() {
            "md4" | "md5" => Some(128),
            "sha1" => Some(160),
            "sha256" | "sha3-256" => Some(256),
            "sha512" | "sha3-512" => Some(512),
            _ => None,
        };
        let Some(bits) = bits else {
            return Err("invalid auth_policy_hash_mech given".into());
        };
        let tr = g("auth_policy_hash_truncate").parse::<u32>().unwrap_or(0);
        if tr > 0 && tr >= bits {
            return Err(format!(
                "policy_hash_truncate is not smaller than digest size ({tr} >= {bits})"
            ));
        }
    }
    for id in t.list(0, "passdb") {
        let n = &t.nodes[id];
        if n.get("driver").unwrap_or("").is_empty() {
            return Err("passdb is missing driver".into());
        }
        if n.get("pass") == Some("yes") && n.get("result_success") != Some("return-ok") {
            return Err("Obsolete pass=yes setting mixed with non-default result_success".into());
        }
    }
    for id in t.list(0, "userdb") {
        if t.nodes[id].get("driver").unwrap_or("").is_empty() {
            return Err("userdb is missing driver".into());
        }
    }
    Ok(())
}

/// `mail_user_settings_check()` as doveconf (CONFIG_BINARY) builds it: with plugins to load,
/// `mail_plugin_dir` must be readable and searchable.
fn check_mail_user(root: &Node) -> Result<(), String> {
    if root.get("mail_plugins").unwrap_or("").is_empty() {
        return Ok(());
    }
    let dir = root.get("mail_plugin_dir").unwrap_or("");
    let mode = nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::X_OK;
    let bytes = text_to_bytes(dir);
    let path =
        std::path::Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&bytes));
    match nix::unistd::access(path, mode) {
        Ok(()) => Ok(()),
        Err(e) => Err(format!(
            "mail_plugin_dir: access({dir}) failed: {}",
            crate::config::error::strerror(&std::io::Error::from(e))
        )),
    }
}

/// `mail_storage_settings_check()` (the parts a configuration file can fail).
fn check_storage(root: &Node) -> Result<(), String> {
    let g = |k: &str| root.get(k).unwrap_or("").to_string();
    if g("mailbox_idle_check_interval") == "0" {
        return Err("mailbox_idle_check_interval must not be 0".into());
    }
    if g("mail_nfs_index") == "yes" && g("mmap_disable") != "yes" {
        return Err("mail_nfs_index=yes requires mmap_disable=yes".into());
    }
    if g("mail_nfs_index") == "yes" && g("mail_fsync") != "always" {
        return Err("mail_nfs_index=yes requires mail_fsync=always".into());
    }
    let mut ok = false;
    let fmt: Vec<char> = g("pop3_uidl_format").chars().collect();
    let mut i = 0;
    while i < fmt.len() {
        if fmt[i] != '%' || i + 1 >= fmt.len() {
            i += 1;
            continue;
        }
        i += 1;
        // var_get_key(): `%{name}` and modifiers (`%08Xu`): the key letter.
        let mut j = i;
        while j < fmt.len()
            && (fmt[j].is_ascii_digit()
                || matches!(
                    fmt[j],
                    '-' | '.' | 'L' | 'U' | 'E' | 'X' | 'R' | 'H' | 'N' | 'M' | 'D' | 'T'
                ))
        {
            if matches!(fmt[j], 'X') && j + 1 < fmt.len() && fmt[j + 1].is_ascii_lowercase() {
                j += 1;
                break;
            }
            j += 1;
        }
        let c = fmt.get(j).copied().unwrap_or('\0');
        match c {
            'v' | 'u' | 'm' | 'f' | 'g' => ok = true,
            '%' | '{' => {}
            c => return Err(format!("Unknown pop3_uidl_format variable: %{c}")),
        }
        i = j + 1;
    }
    if !ok {
        return Err("pop3_uidl_format setting doesn't contain any % variables.".into());
    }
    if g("mail_attachment_hash").contains('/') {
        return Err("mail_attachment_hash setting must not contain '/' characters".into());
    }
    Ok(())
}
/// The namespace and mailbox checks of `mail-storage-settings.c`.
fn check_mail(t: &Tree) -> Result<(), String> {
    let root = t.root();
    let loc = root.get("mail_location").unwrap_or("");
    let _ = loc;
    for ns_id in t.list(0, "namespace") {
        let ns = &t.nodes[ns_id];
        let name = ns.get("prefix").unwrap_or("");
        let sep = ns.get("separator").unwrap_or("");
        if sep.chars().count() > 1 {
            return Err(format!(
                "Namespace '{name}': Hierarchy separator must be only one character long"
            ));
        }
        if let Some(alias) = ns.get("alias_for")
            && !alias.is_empty()
        {
            let found = t
                .list(0, "namespace")
                .iter()
                .any(|o| t.nodes[*o].get("prefix") == Some(alias));
            if !found {
                return Err(format!(
                    "Namespace '{name}': alias_for points to unknown namespace: {alias}"
                ));
            }
        }
        for mb in t.list(ns_id, "mailbox") {
            let m = &t.nodes[mb];
            let su = m.get("special_use").unwrap_or("");
            for w in su.split(' ').filter(|w| !w.is_empty()) {
                if !w.starts_with('\\') {
                    return Err(format!(
                        "mailbox {}: special_use must begin with '\\': {su}",
                        m.name()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `master_settings_verify()`.
fn check_master(t: &Tree, warned: &mut Warned, warnings: &mut Vec<String>) -> Result<(), String> {
    let root = t.root();
    let g = |k: &str| root.get(k).unwrap_or("").to_string();
    if g("listen").is_empty() {
        return Err("listen can't be set empty".into());
    }
    let num = |k: &str| g(k).parse::<u64>().unwrap_or(0);
    if num("last_valid_uid") != 0 && num("first_valid_uid") > num("last_valid_uid") {
        return Err("first_valid_uid can't be larger than last_valid_uid".into());
    }
    if num("last_valid_gid") != 0 && num("first_valid_gid") > num("last_valid_gid") {
        return Err("first_valid_gid can't be larger than last_valid_gid".into());
    }
    for k in ["default_login_user", "default_internal_user"] {
        let u = g(k);
        if nix::unistd::User::from_name(&text_to_string(&u))
            .ok()
            .flatten()
            .is_none()
        {
            return Err(format!("{k} doesn't exist: {u}"));
        }
    }
    let services = t.list(0, "service");
    if services.is_empty() {
        return Err("No services defined".into());
    }
    for (i, &s) in services.iter().enumerate() {
        let name = t.nodes[s].name();
        if name.is_empty() {
            return Err(format!("Service #{i} is missing name"));
        }
        let ty = t.nodes[s].get("type").unwrap_or("");
        if !matches!(
            ty,
            "" | "log" | "config" | "anvil" | "login" | "startup" | "worker"
        ) {
            return Err(format!("Unknown service type: {ty}"));
        }
    }
    let mut protocols: Vec<String> = split_spaces(&g("protocols"))
        .into_iter()
        .map(str::to_string)
        .collect();
    if protocols.len() == 1 && protocols[0] == "none" {
        protocols.clear();
    }
    for p in &protocols {
        let have = services
            .iter()
            .any(|s| t.nodes[*s].get("protocol").unwrap_or("") == p);
        if !have {
            return Err(format!("protocols: Unknown protocol: {p}"));
        }
    }
    let default_process_limit = num("default_process_limit");
    let base_dir = g("base_dir");
    let base_dir = base_dir.strip_suffix('/').unwrap_or(&base_dir).to_string();
    let mut all_listeners: Vec<String> = Vec::new();
    let mut max_auth = 0u64;
    let mut auth_reason = String::new();
    let mut max_anvil = 2u64;
    let mut anvil_reason = String::new();
    for &s in &services {
        let n = &t.nodes[s];
        let sname = n.name().to_string();
        let proto = n.get("protocol").unwrap_or("");
        if !proto.is_empty() && !protocols.iter().any(|p| p == proto) {
            continue;
        }
        let chroot = n.get("chroot").unwrap_or("");
        if n.get("drop_priv_before_exec") == Some("yes") && !chroot.is_empty() {
            return Err(format!(
                "service({sname}): drop_priv_before_exec=yes can't be used with chroot"
            ));
        }
        let mut process_limit = n
            .get("process_limit")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if process_limit == 0 {
            process_limit = default_process_limit;
        }
        let min_avail = n
            .get("process_min_avail")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if min_avail > process_limit {
            return Err(format!(
                "service({sname}): process_min_avail is higher than process_limit"
            ));
        }
        let vsz = n
            .get("vsz_limit")
            .and_then(|v| settings::parse_size(v).ok())
            .unwrap_or(u64::MAX);
        if vsz < 1024 * 1024 && vsz != 0 {
            return Err(format!("service({sname}): vsz_limit is too low"));
        }
        // A built-in service whose process_limit must stay 1 (`.process_limit_1 = TRUE`).
        if process_limit > 1 && default_process_limit_one(&sname) {
            return Err(format!("service({sname}): process_limit must be 1"));
        }
        let sty = n.get("type").unwrap_or("");
        if !proto.is_empty() {
            let service_count = n
                .get("service_count")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            if (service_count != 1 || sty == "login") && sname != "imap-hibernate" {
                auth_reason.push_str(&format!(
                    " + service {sname} {{ process_limit={process_limit} }}"
                ));
                max_auth += process_limit;
            }
        }
        if sty == "login" || sname == "auth" {
            max_anvil += process_limit;
            anvil_reason.push_str(&format!(
                " + service {sname} {{ process_limit={process_limit} }}"
            ));
        }
        for lkind in ["unix_listener", "fifo_listener"] {
            for l in t.list(s, lkind) {
                let path = t.nodes[l].name().to_string();
                if path.is_empty() {
                    continue;
                }
                let full = if path.starts_with('/') {
                    path
                } else {
                    format!("{base_dir}/{path}")
                };
                all_listeners.push(full);
            }
        }
        for l in t.list(s, "inet_listener") {
            let ln = &t.nodes[l];
            let port = ln.get("port").unwrap_or("0");
            if port == "0" {
                continue;
            }
            let addrs = ln.get("address").unwrap_or("");
            let addrs = if addrs.is_empty() {
                g("listen")
            } else {
                addrs.to_string()
            };
            for a in addrs.split([',', ' ', '\t']).filter(|a| !a.is_empty()) {
                all_listeners.push(format!("{a}:{port}"));
            }
        }
    }
    let client_limit = |svc: &str| -> u64 {
        services
            .iter()
            .find(|s| t.nodes[**s].name() == svc)
            .and_then(|s| t.nodes[*s].get("client_limit"))
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v != 0)
            .unwrap_or_else(|| num("default_client_limit"))
    };
    let auth_limit = client_limit("auth");
    if auth_limit < max_auth && !warned.auth {
        warned.auth = true;
        warnings.push(format!(
            "service auth {{ client_limit={auth_limit} }} is lower than required under max. load ({max_auth}). Counted for protocol services with service_count != 1: {}",
            auth_reason.get(3..).unwrap_or("")
        ));
    }
    let anvil_limit = client_limit("anvil");
    if anvil_limit < max_anvil && !warned.anvil {
        warned.anvil = true;
        warnings.push(format!(
            "service anvil {{ client_limit={anvil_limit} }} is lower than required under max. load ({max_anvil}). Counted with: {}",
            anvil_reason.get(3..).unwrap_or("")
        ));
    }
    all_listeners.sort();
    for w in all_listeners.windows(2) {
        if w[0] == w[1] {
            return Err(format!("duplicate listener: {}", w[1]));
        }
    }
    Ok(())
}

/// Built-in services that must keep `process_limit = 1` (`.process_limit_1 = TRUE` in
/// log-settings.c, indexer-settings.c, auth-settings.c, anvil-settings.c,
/// old-stats/stats-settings.c, replicator-settings.c, ipc-settings.c, director-settings.c).
fn default_process_limit_one(name: &str) -> bool {
    matches!(
        name,
        "log" | "indexer" | "auth" | "anvil" | "old-stats" | "replicator" | "ipc" | "director"
    )
}
