//! `dovecot.conf` of every era (0.99 flat keys, 1.x sections, 2.x with `conf.d/`) read into one
//! Dovecot-2.3-shaped settings tree that `pop3d`, `imapd` and `auth` read, whatever the era.
//!
//! * [`parse`] — the syntax (pest grammar `dovecot.pest`), includes, file and line of every node;
//! * [`legacy`] — 0.99/1.x keys rewritten to their 2.x form, one [`Note`] per translated key
//!   (the mapping is documented in `postern-dovecot.conf(5)`);
//! * [`settings`] — Dovecot 2.3.19's setting names, types and defaults, value normalisation;
//! * [`dump`] — `doveconf -n` output, byte for byte as Dovecot 2.3.19 prints it;
//! * [`default_conf_path`] — the file read without `-c`: 1.x's `/etc/dovecot.conf` when it
//!   exists, else 2.x's `/etc/dovecot/dovecot.conf`.
//!
//! Parameters read by the typed accessors (with Dovecot 2.3 defaults): `protocols`, `listen`,
//! `service X-login { inet_listener … }`, `mail_location`, `ssl`, `ssl_cert`, `ssl_key`,
//! `disable_plaintext_auth`, `auth_mechanisms`, `passdb {}`, `userdb {}`, `login_greeting`,
//! `login_trusted_networks`, `pop3_uidl_format`, `mail_max_userip_connections`, `log_path`,
//! `auth_username_format`, `auth_failure_delay`, `service auth { unix_listener … }`.
//!
//! Known limits: `local`/`remote` filters are kept but not applied by the accessors (only
//! `protocol X {}` is); `$name` expands only a setting's own earlier value (`protocols =
//! $protocols imap`), as Dovecot 2.3 does; `<file` values are not read by the model.

pub mod dump;
pub mod engine;
pub mod export;
pub mod legacy;
pub mod parse;
pub mod settings;
pub mod var_expand;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use crate::config::ConfigError;
pub use parse::{Node, Origin};

/// Dovecot 2.x's configuration file.
pub const CONF_V2: &str = "/etc/dovecot/dovecot.conf";
/// Dovecot 0.99's and 1.x's (Fedora Core 2, Fedora 7: the file the old guides edit).
pub const CONF_V1: &str = "/etc/dovecot.conf";

/// The file `dovecot` and `doveconf` read without `-c`: `/etc/dovecot.conf` when it exists,
/// else `/etc/dovecot/dovecot.conf`. Each era's Dovecot looked in its own place only; a
/// box has both when an admin followed a 1.x guide on a 2.x system (the 2.x package never
/// ships `/etc/dovecot.conf`, and RPM saves an edited one as `.rpmsave` on the upgrade to
/// 2.0), so the old file is the one the admin edited. The other file is then ignored, and
/// `dovecot` says so in its log (see `dovecot(8)`).
pub fn default_conf_path() -> PathBuf {
    default_conf_path_in(Path::new("/"))
}

/// [`default_conf_path`] under another root (for tests).
pub fn default_conf_path_in(root: &Path) -> PathBuf {
    let old = root.join(CONF_V1.trim_start_matches('/'));
    if old.is_file() {
        old
    } else {
        root.join(CONF_V2.trim_start_matches('/'))
    }
}

/// The syntax generation a file was written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// Dovecot 0.99 (Fedora Core 2): flat `imap_listen`, `auth = default` + `auth_*`.
    V0_99,
    /// Dovecot 1.x (Fedora 7): `auth default {}`, `protocol imap { listen }`, `ssl_disable`.
    V1,
    /// Dovecot 2.x.
    V2,
}

impl std::fmt::Display for Era {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Era::V0_99 => "0.99",
            Era::V1 => "1.0",
            Era::V2 => "2.x",
        })
    }
}

/// What an old key became: `0.99 key imap_listen at FILE:LINE → service imap-login { … }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub era: Era,
    pub old_key: String,
    pub at: Origin,
    /// The 2.x form, or why the key was dropped.
    pub new: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} key {} at {} → {}",
            self.era, self.old_key, self.at, self.new
        )
    }
}

/// One setting's value as doveconf normalises it (`10 M`, `1 hours`, `yes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub value: String,
    pub at: Origin,
}

/// A section of the 2.x tree (`service imap-login`, `inet_listener imap`, `passdb`, …); the
/// root has an empty `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Block {
    pub kind: String,
    pub name: Option<String>,
    pub at: Option<Origin>,
    /// Settings set explicitly in this block, in order of first appearance.
    pub settings: IndexMap<String, Value>,
    pub blocks: Vec<Block>,
}

impl Block {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(|v| v.value.as_str())
    }
    /// The sub-blocks of one kind, in file order.
    pub fn blocks_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
        self.blocks.iter().filter(move |b| b.kind == kind)
    }
    pub fn block(&self, kind: &str, name: &str) -> Option<&Block> {
        self.blocks
            .iter()
            .find(|b| b.kind == kind && b.name.as_deref() == Some(name))
    }
}

/// A passdb or userdb: `driver` and `args`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthDb {
    pub driver: String,
    pub args: String,
}

/// One TCP listener of a login service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// `imap`, `imaps`, `pop3`, `pop3s`.
    pub name: String,
    /// Addresses to bind (`listen` unless the listener sets `address`).
    pub addresses: Vec<String>,
    /// 0 means disabled.
    pub port: u16,
    pub ssl: bool,
}

/// A unix socket of `service auth` speaking the auth client protocol (Postfix's
/// `smtpd_sasl_type = dovecot` connects to one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSocket {
    /// The listener's name as written (`/var/spool/postfix/private/auth`, `auth-client`).
    pub name: String,
    /// Absolute: a relative name is below `base_dir`.
    pub path: PathBuf,
    /// `mode` (octal; default 0600).
    pub mode: u32,
    /// `user`, `group`: the socket's owner; empty keeps the creating process's.
    pub user: String,
    pub group: String,
}

/// A loaded `dovecot.conf`, 2.x-shaped whatever its era.
#[derive(Debug)]
pub struct DovecotConf {
    /// The path as given (`-c FILE`).
    pub path: PathBuf,
    pub era: Era,
    /// The settings the services run with (the file's, plus the era defaults below).
    pub root: Block,
    /// One per translated key of a 0.99/1.x file Dovecot 2.3 rejects.
    pub notes: Vec<Note>,
    /// Dovecot 2.3's warnings for the file, worded as it words them (without the
    /// `doveconf: Warning: ` prefix).
    pub warnings: Vec<String>,
    /// For an old file 2.3 accepts: the defaults of the file's own Dovecot version that
    /// Postern's services use where 2.3's would serve more or run differently (they are not
    /// in `doveconf -n`, which prints what Dovecot 2.3 makes of the file).
    pub era_defaults: Vec<Note>,
    /// What `doveconf` prints: Dovecot 2.3's reading of the file, or of its translation.
    pub parsed: engine::Parsed,
    /// The file was rejected by 2.3 and translated ([`legacy`]).
    pub translated: bool,
    /// The checks on the settings the services run with.
    check_error: Option<String>,
}

/// Kinds of filter sections (settings inside override the global ones for matching sessions).
pub fn is_filter(kind: &str) -> bool {
    matches!(kind, "protocol" | "local" | "remote" | "local_name")
}

impl DovecotConf {
    /// Read FILE and its includes as Dovecot 2.3 does; translate a file of an old era that
    /// 2.3 rejects. A file ending inside a section is an error here (see
    /// [`DovecotConf::load_lenient`]); a failed check is kept for [`DovecotConf::check`].
    pub fn load(path: &Path) -> Result<DovecotConf, ConfigError> {
        let c = Self::load_lenient(path)?;
        if let Some(d) = &c.parsed.delayed
            && d.contains("Missing '}'")
        {
            return Err(ConfigError::Other(d.clone()));
        }
        Ok(c)
    }

    /// As [`DovecotConf::load`], but a file ending inside a section still gives the settings
    /// read so far (doveconf -n prints them before its error).
    pub fn load_lenient(path: &Path) -> Result<DovecotConf, ConfigError> {
        let p = path.display().to_string();
        let parsed = engine::parse_file(&p);
        let raw = parse::parse_file(path).ok();
        Self::build(path, parsed, raw, |lines, origins| {
            engine::parse_translated(lines, origins, &p)
        })
    }

    /// As [`DovecotConf::load`], from text standing for the file `path`.
    pub fn from_str(text: &str, path: &Path) -> Result<DovecotConf, ConfigError> {
        let p = path.display().to_string();
        let parsed = engine::parse_text(text, &p);
        let raw = parse::parse_str(text, path).ok();
        let c = Self::build(path, parsed, raw, |lines, origins| {
            engine::parse_translated(lines, origins, &p)
        })?;
        if let Some(d) = &c.parsed.delayed
            && d.contains("Missing '}'")
        {
            return Err(ConfigError::Other(d.clone()));
        }
        Ok(c)
    }

    fn build(
        path: &Path,
        parsed: engine::Parsed,
        raw: Option<parse::RawConf>,
        reparse: impl Fn(Vec<String>, Vec<(String, usize)>) -> engine::Parsed,
    ) -> Result<DovecotConf, ConfigError> {
        let era = raw
            .as_ref()
            .map(|r| legacy::detect(&r.nodes))
            .unwrap_or(Era::V2);
        let (parsed, notes, translated) = match (&parsed.fatal, raw) {
            (Some(_), Some(raw)) if era != Era::V2 && !parsed.open_failed => {
                // Dovecot 2.3 rejects this old file: run its 2.x translation instead.
                let (_, nodes, notes) = legacy::translate(raw.nodes);
                let (lines, origins) = legacy::render(&nodes);
                let t = reparse(lines, origins);
                (t, notes, true)
            }
            _ => (parsed, Vec::new(), false),
        };
        if let Some(f) = &parsed.fatal {
            return Err(ConfigError::Other(f.clone()));
        }
        // Old files 2.3 accepts: the era's defaults where 2.3's differ (not when translated:
        // the translation writes them out).
        let era_defaults = if translated {
            Vec::new()
        } else {
            legacy::era_defaults(era, &parsed.filters[0].tree, path)
        };
        let mut runtime = parsed.filters[0].tree.clone();
        for n in &era_defaults {
            if let Some((k, v)) = n.new.split_once(" = ") {
                let v = v.split(" (").next().unwrap_or(v);
                let _ = runtime.parse_keyvalue(k, &engine::string_to_text(v));
            }
        }
        let mut warned = engine::Warned::default();
        let mut w = Vec::new();
        let check_error = engine::check_tree(&runtime, &mut warned, &mut w).err();
        let root = block_tree(&runtime, &parsed.filters);
        let warnings = parsed
            .warnings
            .iter()
            .map(|w| match engine::message_level(w) {
                ("Error", t) => format!("Error: {t}"),
                (_, t) => t.to_string(),
            })
            .collect();
        Ok(DovecotConf {
            path: path.to_path_buf(),
            era,
            root,
            notes,
            warnings,
            era_defaults,
            parsed,
            translated,
            check_error,
        })
    }

    /// The checks doveconf runs after parsing (`protocols: Unknown protocol: x`, `passdb is
    /// missing driver`), on the settings the services run with. Returns the message without
    /// the file name.
    pub fn check(&self) -> Result<(), String> {
        if let Some(d) = &self.parsed.delayed
            && let Some(rest) = d.split_once(": ").map(|x| x.1)
            && rest.starts_with("Missing '}'")
        {
            return Err(rest.to_string());
        }
        match &self.check_error {
            Some(e) => Err(engine::text_to_string(e)),
            None => Ok(()),
        }
    }

    /// A global setting: the file's value, else Dovecot 2.3.19's default.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.root
            .get(key)
            .or_else(|| settings::lookup("global", key).map(|d| d.default.as_str()))
    }

    /// A setting as seen by sessions of `protocol` (`protocol imap { … }` overrides global).
    pub fn get_for(&self, protocol: &str, key: &str) -> Option<&str> {
        self.root
            .block("protocol", protocol)
            .and_then(|b| b.get(key))
            .or_else(|| self.get(key))
    }

    fn words(&self, key: &str) -> Vec<String> {
        self.get(key)
            .unwrap_or("")
            .split([' ', ',', '\t'])
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// `protocols`: the enabled services (`imap`, `pop3`, …).
    pub fn protocols(&self) -> Vec<String> {
        self.words("protocols")
    }

    /// The user `protocol`'s login processes run as: `service PROTO-login { user }`
    /// (1.x `login_user`), else `default_login_user` (default `dovenull`).
    pub fn login_user(&self, protocol: &str) -> String {
        self.login_user_setting(protocol).0
    }

    /// As [`DovecotConf::login_user`], and whether it came from the service's own `user`
    /// (true) or from `default_login_user` (false): Dovecot words a missing user
    /// differently for each.
    pub fn login_user_setting(&self, protocol: &str) -> (String, bool) {
        match self
            .root
            .block("service", &format!("{protocol}-login"))
            .and_then(|b| b.get("user"))
            .filter(|u| !u.is_empty() && *u != "$default_login_user")
        {
            Some(u) => (u.to_string(), true),
            None => (
                self.get("default_login_user")
                    .unwrap_or("dovenull")
                    .to_string(),
                false,
            ),
        }
    }

    /// The directory `protocol`'s login processes chroot to: `service PROTO-login {
    /// chroot }` (default `login`; 1.x `login_chroot = no` gives none), relative to
    /// `base_dir` unless absolute. `None`: no chroot.
    pub fn login_chroot(&self, protocol: &str) -> Option<std::path::PathBuf> {
        let c = self
            .root
            .block("service", &format!("{protocol}-login"))
            .and_then(|b| b.get("chroot"))
            .unwrap_or("login");
        if c.is_empty() {
            return None;
        }
        let base = self.get("base_dir").unwrap_or("/var/run/dovecot");
        Some(std::path::Path::new(base).join(c))
    }

    /// The TCP listeners of `protocol`'s login service, with Dovecot's built-in ones (`imap`
    /// 143, `imaps` 993 ssl; `pop3` 110, `pop3s` 995 ssl) overridden by the file.
    pub fn listeners(&self, protocol: &str) -> Vec<Listener> {
        let builtin: &[(&str, u16, bool)] = match protocol {
            "imap" => &[("imap", 143, false), ("imaps", 993, true)],
            "pop3" => &[("pop3", 110, false), ("pop3s", 995, true)],
            "submission" => &[("submission", 587, false)],
            _ => &[],
        };
        let listen = self.words("listen");
        let service = self.root.block("service", &format!("{protocol}-login"));
        let mut out: Vec<Listener> = builtin
            .iter()
            .map(|(n, p, s)| Listener {
                name: n.to_string(),
                addresses: listen.clone(),
                port: *p,
                ssl: *s,
            })
            .collect();
        if let Some(svc) = service {
            for l in svc.blocks_of("inet_listener") {
                let name = l.name.clone().unwrap_or_default();
                let idx = match out.iter().position(|o| o.name == name) {
                    Some(i) => i,
                    None => {
                        out.push(Listener {
                            name,
                            addresses: listen.clone(),
                            port: 0,
                            ssl: false,
                        });
                        out.len() - 1
                    }
                };
                let o = &mut out[idx];
                if let Some(a) = l.get("address") {
                    o.addresses = a
                        .split([' ', ','])
                        .filter(|w| !w.is_empty())
                        .map(str::to_string)
                        .collect();
                }
                if let Some(p) = l.get("port").and_then(|p| p.parse().ok()) {
                    o.port = p;
                }
                if let Some(s) = l.get("ssl") {
                    o.ssl = s == "yes";
                }
            }
        }
        out
    }

    /// The `service auth { unix_listener NAME { mode user group } }` sockets written in the
    /// file that speak the client protocol: those Dovecot 2.3 gives other protocols by
    /// name (`auth-login`, `login/login`, `token-login/…`, names ending in `-master` or
    /// `-userdb`) are left out, as are Dovecot's built-in listeners, which only its own
    /// processes use. `$default_internal_user` in `user` is resolved.
    pub fn auth_client_sockets(&self) -> Vec<AuthSocket> {
        let Some(svc) = self.root.block("service", "auth") else {
            return Vec::new();
        };
        let base = PathBuf::from(self.get("base_dir").unwrap_or("/var/run/dovecot"));
        let resolve = |v: Option<&str>| -> String {
            match v.unwrap_or("").trim() {
                "$default_internal_user" => self.get("default_internal_user").unwrap_or("dovecot"),
                "$default_login_user" => self.get("default_login_user").unwrap_or("dovenull"),
                other => other,
            }
            .to_string()
        };
        svc.blocks_of("unix_listener")
            .filter_map(|l| {
                let name = l.name.clone().unwrap_or_default();
                let file = name.rsplit('/').next().unwrap_or("");
                let other_protocol = matches!(name.as_str(), "auth-login" | "login/login")
                    || name.starts_with("token-login/")
                    || file.ends_with("-master")
                    || file.ends_with("-userdb");
                if name.is_empty() || other_protocol {
                    return None;
                }
                let mode = l
                    .get("mode")
                    .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
                    .unwrap_or(0o600);
                Some(AuthSocket {
                    path: base.join(&name),
                    name,
                    mode,
                    user: resolve(l.get("user")),
                    group: resolve(l.get("group")),
                })
            })
            .collect()
    }

    pub fn mail_location(&self) -> &str {
        self.get("mail_location").unwrap_or("")
    }
    /// `ssl`: `yes`, `no` or `required`.
    pub fn ssl(&self) -> &str {
        self.get("ssl").unwrap_or("yes")
    }
    /// `ssl_cert` as written (`</path` means the file's contents).
    pub fn ssl_cert(&self) -> &str {
        self.get("ssl_cert").unwrap_or("")
    }
    pub fn ssl_key(&self) -> &str {
        self.get("ssl_key").unwrap_or("")
    }
    pub fn disable_plaintext_auth(&self) -> bool {
        self.get("disable_plaintext_auth") != Some("no")
    }
    pub fn auth_mechanisms(&self) -> Vec<String> {
        self.words("auth_mechanisms")
    }
    fn dbs(&self, kind: &str) -> Vec<AuthDb> {
        self.root
            .blocks_of(kind)
            .map(|b| AuthDb {
                driver: b.get("driver").unwrap_or("").to_string(),
                args: b.get("args").unwrap_or("").to_string(),
            })
            .collect()
    }
    pub fn passdbs(&self) -> Vec<AuthDb> {
        self.dbs("passdb")
    }
    pub fn userdbs(&self) -> Vec<AuthDb> {
        self.dbs("userdb")
    }
    pub fn login_greeting(&self) -> &str {
        self.get("login_greeting").unwrap_or("Dovecot ready.")
    }
    pub fn login_trusted_networks(&self) -> Vec<String> {
        self.words("login_trusted_networks")
    }
    pub fn pop3_uidl_format(&self) -> &str {
        self.get_for("pop3", "pop3_uidl_format")
            .unwrap_or("%08Xu%08Xv")
    }
    pub fn mail_max_userip_connections(&self, protocol: &str) -> u32 {
        self.get_for(protocol, "mail_max_userip_connections")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10)
    }
    pub fn log_path(&self) -> &str {
        self.get("log_path").unwrap_or("syslog")
    }
    pub fn auth_username_format(&self) -> &str {
        self.get("auth_username_format").unwrap_or("%Lu")
    }
    /// `auth_failure_delay` in seconds.
    pub fn auth_failure_delay(&self) -> u64 {
        self.get("auth_failure_delay")
            .and_then(|v| settings::parse_time(v).ok())
            .unwrap_or(2)
    }
    /// `auth_cache_size` in bytes (default 0: no cache). 1.x wrote a bare number of
    /// kilobytes (`auth_cache_size = 1024`); 2.x a size (`10M`, a bare number is bytes).
    pub fn auth_cache_size(&self) -> u64 {
        let v = self.get("auth_cache_size").unwrap_or("0").trim();
        let bare = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
        match (self.era, bare) {
            (Era::V0_99 | Era::V1, true) => v.parse::<u64>().unwrap_or(0).saturating_mul(1024),
            _ => settings::parse_size(v).unwrap_or(0),
        }
    }
    /// `auth_cache_ttl` in seconds (default 1 hour; 1.x: a bare number of seconds).
    pub fn auth_cache_ttl(&self) -> u64 {
        self.seconds_any_era("auth_cache_ttl", 3600)
    }
    /// `auth_cache_negative_ttl` in seconds (default 1 hour; 1.x: a bare number).
    pub fn auth_cache_negative_ttl(&self) -> u64 {
        self.seconds_any_era("auth_cache_negative_ttl", 3600)
    }
    /// A time setting: 2.x units, or the bare seconds of 1.x.
    fn seconds_any_era(&self, key: &str, default: u64) -> u64 {
        match self.get(key).map(str::trim) {
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                v.parse().unwrap_or(default)
            }
            Some(v) => settings::parse_time(v).unwrap_or(default),
            None => default,
        }
    }
}

/// The settings tree the accessors read: the global settings changed by the file (or by an
/// era default), the sections it wrote, and each filter with its own changes.
fn block_tree(tree: &engine::Tree, filters: &[engine::FilterParser]) -> Block {
    let mut root = node_block(tree, 0, "", None);
    for f in filters.iter().skip(1) {
        let (kind, name) = if let Some(s) = &f.filter.service {
            ("protocol", s.clone())
        } else if let Some(n) = &f.filter.local_name {
            ("local_name", n.clone())
        } else if let Some(h) = &f.filter.remote_host {
            ("remote", h.clone())
        } else if let Some(h) = &f.filter.local_host {
            ("local", h.clone())
        } else {
            continue;
        };
        let mut b = node_block(&f.tree, 0, kind, Some(engine::text_to_string(&name)));
        b.blocks.retain(|x| x.kind == "plugin");
        if root
            .blocks
            .iter()
            .any(|x| x.kind == kind && x.name.as_deref() == b.name.as_deref())
        {
            continue;
        }
        root.blocks.push(b);
    }
    root
}

fn node_block(tree: &engine::Tree, id: engine::NodeId, kind: &str, name: Option<String>) -> Block {
    let node = &tree.nodes[id];
    let mut b = Block {
        kind: kind.to_string(),
        name,
        at: None,
        ..Block::default()
    };
    for (i, d) in node.info.defines.iter().enumerate() {
        match d.kind {
            settings::Kind::List { .. } => {
                for &c in &node.lists[i] {
                    let cn = &tree.nodes[c];
                    let touched = tree_touched(tree, c);
                    if !touched {
                        continue;
                    }
                    let n = cn.name();
                    let name = (!n.is_empty()).then(|| engine::text_to_string(n));
                    b.blocks.push(node_block(tree, c, &d.key, name));
                }
            }
            settings::Kind::StrList => {
                if let Some(pairs) = &node.strlists[i] {
                    let mut pb = Block {
                        kind: d.key.clone(),
                        ..Block::default()
                    };
                    for (k, v) in pairs {
                        pb.settings.insert(
                            engine::text_to_string(k),
                            Value {
                                value: engine::text_to_string(v),
                                at: Origin {
                                    file: PathBuf::new(),
                                    line: 0,
                                },
                            },
                        );
                    }
                    b.blocks.push(pb);
                }
            }
            settings::Kind::Alias(_) => {}
            _ => {
                if node.changed[i]
                    && let Some(v) = &node.values[i]
                {
                    if node.info.name_key == Some(d.key.as_str()) {
                        continue;
                    }
                    b.settings.insert(
                        d.key.clone(),
                        Value {
                            value: engine::text_to_string(v),
                            at: Origin {
                                file: PathBuf::new(),
                                line: 0,
                            },
                        },
                    );
                }
            }
        }
    }
    b
}

/// Whether the file changed anything in this section or below (built-in services it did
/// not touch are left out of the model, as before).
fn tree_touched(tree: &engine::Tree, id: engine::NodeId) -> bool {
    let n = &tree.nodes[id];
    n.changed.iter().any(|c| *c)
        || n.lists.iter().flatten().any(|c| tree_touched(tree, *c))
        || n.strlists.iter().any(|s| s.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(s: &str) -> Result<DovecotConf, ConfigError> {
        DovecotConf::from_str(s, Path::new("t.conf"))
    }

    /// Without `-c`: 2.x's file, unless 1.x's `/etc/dovecot.conf` exists (then it wins).
    #[test]
    fn default_path_prefers_the_1x_file_when_present() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert_eq!(default_conf_path_in(r), r.join("etc/dovecot/dovecot.conf"));
        std::fs::create_dir_all(r.join("etc/dovecot")).unwrap();
        std::fs::write(r.join("etc/dovecot/dovecot.conf"), "").unwrap();
        assert_eq!(default_conf_path_in(r), r.join("etc/dovecot/dovecot.conf"));
        std::fs::write(r.join("etc/dovecot.conf"), "protocols = pop3 imap\n").unwrap();
        assert_eq!(default_conf_path_in(r), r.join("etc/dovecot.conf"));
        std::fs::remove_file(r.join("etc/dovecot/dovecot.conf")).unwrap();
        assert_eq!(default_conf_path_in(r), r.join("etc/dovecot.conf"));
    }

    #[test]
    fn defaults() {
        let c = conf("").unwrap();
        assert_eq!(c.era, Era::V2);
        assert!(c.disable_plaintext_auth());
        assert_eq!(c.auth_mechanisms(), vec!["plain"]);
        assert_eq!(c.pop3_uidl_format(), "%08Xu%08Xv");
        assert_eq!(c.auth_failure_delay(), 2);
        assert_eq!(c.mail_max_userip_connections("imap"), 10);
        let l = c.listeners("pop3");
        assert_eq!(l[0].port, 110);
        assert!(l[1].ssl);
    }

    /// doveconf 2.3.19: `pop3_client_workarounds: Unknown workaround: bogus-one` (exit 89);
    /// names are split at spaces and commas.
    #[test]
    fn unknown_pop3_workaround_is_refused() {
        let c = conf("pop3_client_workarounds = outlook-no-nuls,oe-ns-eoh\n").unwrap();
        assert_eq!(c.check(), Ok(()));
        let c = conf("pop3_client_workarounds = outlook-no-nuls bogus-one\n").unwrap();
        assert_eq!(
            c.check(),
            Err("pop3_client_workarounds: Unknown workaround: bogus-one".to_string())
        );
    }

    #[test]
    fn unknown_setting_names_file_and_line() {
        let e = conf("\nimap_listen_x = *\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "Error in configuration file t.conf line 2: Unknown setting: imap_listen_x"
        );
        let e = conf("service x {\n inet_listener y {\n nosuch = 1\n }\n}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("line 3: Unknown setting: service { inet_listener { nosuch"),
            "{e}"
        );
    }

    /// The Postfix socket of a 2.x file and of a 1.0 file (`socket listen { client }`);
    /// Dovecot's other protocols' listeners are not client sockets.
    #[test]
    fn auth_client_sockets() {
        let c = conf(
            "base_dir = /b\nservice auth {\n unix_listener /var/spool/postfix/private/auth {\n  mode = 0660\n  user = postfix\n  group = postfix\n }\n unix_listener auth-userdb {\n  mode = 0666\n }\n unix_listener auth-client {\n  user = $default_internal_user\n }\n}\n",
        )
        .unwrap();
        let mut s = c.auth_client_sockets();
        // Dovecot keeps its built-in listeners (auth-client) before the file's.
        s.sort_by(|a, b| b.path.cmp(&a.path));
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].path, PathBuf::from("/var/spool/postfix/private/auth"));
        assert_eq!(
            (s[0].mode, s[0].user.as_str(), s[0].group.as_str()),
            (0o660, "postfix", "postfix")
        );
        assert_eq!(s[1].path, PathBuf::from("/b/auth-client"));
        assert_eq!((s[1].mode, s[1].user.as_str()), (0o600, "dovecot"));
        let c = conf(
            "protocols = pop3\nauth default {\n mechanisms = plain\n passdb pam {\n }\n socket listen {\n  client {\n   path = /var/spool/postfix/private/auth\n   mode = 0660\n  }\n }\n}\n",
        )
        .unwrap();
        let s = c.auth_client_sockets();
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].path, PathBuf::from("/var/spool/postfix/private/auth"));
        assert_eq!(s[0].mode, 0o660);
        assert!(conf("").unwrap().auth_client_sockets().is_empty());
    }

    #[test]
    fn self_reference() {
        let c = conf("protocols = $protocols imap\nprotocols = $protocols pop3\n").unwrap();
        assert_eq!(c.get("protocols"), Some(" imap pop3"));
        assert_eq!(c.protocols(), vec!["imap", "pop3"]);
    }

    #[test]
    fn listeners_from_service() {
        let c = conf(
            "listen = 127.0.0.1\nservice pop3-login {\n inet_listener pop3 {\n  port = 1110\n }\n inet_listener pop3s {\n  port = 0\n }\n}\n",
        )
        .unwrap();
        let l = c.listeners("pop3");
        assert_eq!(l[0].port, 1110);
        assert_eq!(l[0].addresses, vec!["127.0.0.1"]);
        assert_eq!(l[1].port, 0);
    }
}
