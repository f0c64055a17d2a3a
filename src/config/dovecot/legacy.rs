//! 0.99 and 1.x `dovecot.conf` rewritten into 2.x nodes, one [`Note`] per translated key.
//!
//! Era detection: any 0.99-only key (`imap_listen`, `auth = default`, `default_mail_env`,
//! `auth_passdb`, `mbox_locks`, …) makes a file 0.99; else a 1.x section or key (`auth default
//! {}`, `ssl_disable`, `ssl_cert_file`, `protocol imap { listen = … }`, `login_*`) makes it 1.x;
//! anything else is 2.x and passes through untouched. The mapping follows
//! `research/fedora-dropin.md` §3.3 and is listed in `postern-dovecot.conf(5)`. Era defaults
//! that changed are pinned: `disable_plaintext_auth = no` (0.99 and Fedora 1.0), `protocols`
//! (0.99 `imap`, Fedora 1.0 `imap pop3`), `pop3_uidl_format = %v.%u` (0.99's UIDLs), the
//! login user `dovecot` (0.99's and 1.0's `login_user` default; 2.x's `dovenull` did not
//! exist), `mbox_write_locks = fcntl` (Fedora 1.0's build default), and the Fedora
//! certificate paths when SSL stays on.
//!
//! Limits: several `auth {}` sections collapse into one; `socket listen { master { … } }` is
//! mapped to a unix_listener whose name must end in `-master` for 2.x to treat it as such;
//! keys with no 2.x meaning are dropped with a note, never fatal.

use super::parse::{Node, Origin};
use super::settings::{self, Kind};
use super::{Era, Note};

const V099_KEYS: &[&str] = &[
    "imap_listen",
    "pop3_listen",
    "imaps_listen",
    "pop3s_listen",
    "login",
    "auth",
    "default_mail_env",
    "auth_userdb",
    "auth_passdb",
    "mbox_locks",
    "umask",
    "client_workarounds",
    "mail_read_mmaped",
    "mailbox_check_interval",
    "maildir_check_content_changes",
    "mbox_read_dotlock",
    "ssl_parameters_file",
    "mail_max_flag_length",
    "login_greeting_capability",
    "imap_executable",
    "pop3_executable",
    "imap_process_size",
    "pop3_process_size",
    "imap_use_modules",
    "imap_modules",
    "auth_executable",
    "auth_process_size",
    "auth_user",
    "auth_chroot",
    "auth_count",
    "auth_methods",
    "auth_userinfo",
];

const V1_KEYS: &[&str] = &[
    "ssl_disable",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
    "ssl_listen",
    "login_dir",
    "login_chroot",
    "login_executable",
    "login_user",
    "login_process_size",
    "login_process_per_connection",
    "login_processes_count",
    "login_max_processes_count",
    "login_max_logging_users",
    "login_max_connections",
    "max_mail_processes",
    "mail_extra_groups",
    "fsync_disable",
    "ssl_parameters_regenerate",
    "mail_drop_priv_before_exec",
    "mail_executable",
    "mail_process_size",
];

/// Which era wrote these nodes.
pub fn detect(nodes: &[Node]) -> Era {
    let mut era = Era::V2;
    for n in nodes {
        match n {
            Node::Setting { key, .. } if V099_KEYS.contains(&key.as_str()) => return Era::V0_99,
            Node::Setting { key, .. } if V1_KEYS.contains(&key.as_str()) => era = Era::V1,
            Node::Section { kind, children, .. } => {
                if kind == "auth" {
                    era = Era::V1;
                }
                if kind == "protocol"
                    && children.iter().any(|c| {
                        matches!(c, Node::Setting { key, .. }
                            if key == "listen" || key == "ssl_listen"
                               || V1_KEYS.contains(&key.as_str()))
                    })
                {
                    era = Era::V1;
                }
            }
            _ => {}
        }
    }
    era
}

struct Tx {
    era: Era,
    out: Vec<Node>,
    notes: Vec<Note>,
    /// Protocols the `login_*` keys apply to (`login = imap` blocks in 0.99).
    login_targets: Vec<String>,
    protocols: Vec<String>,
}

fn set(key: &str, value: &str, at: &Origin) -> Node {
    Node::Setting {
        key: key.into(),
        value: value.into(),
        at: at.clone(),
    }
}

fn sect(kind: &str, name: Option<&str>, at: &Origin, children: Vec<Node>) -> Node {
    Node::Section {
        kind: kind.into(),
        name: name.map(str::to_string),
        at: at.clone(),
        children,
    }
}

/// `service NAME { key = value }`.
fn service(name: &str, key: &str, value: &str, at: &Origin) -> Node {
    sect("service", Some(name), at, vec![set(key, value, at)])
}

/// Split `host[:port]`, `[v6]:port`, `*`, `[::]`.
fn host_port(v: &str) -> (String, Option<String>) {
    let v = v.trim();
    if let Some(rest) = v.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        let port = after.strip_prefix(':').map(str::to_string);
        return (format!("[{host}]"), port);
    }
    match v.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => {
            (h.to_string(), Some(p.to_string()))
        }
        _ => (v.to_string(), None),
    }
}

impl Tx {
    fn note(&mut self, key: &str, at: &Origin, new: impl Into<String>) {
        self.notes.push(Note {
            era: self.era,
            old_key: key.into(),
            at: at.clone(),
            new: new.into(),
        });
    }

    fn listener(&mut self, key: &str, proto: &str, listener: &str, value: &str, at: &Origin) {
        let (host, port) = host_port(value);
        let mut inner = vec![set("address", &host, at)];
        let mut what = "address".to_string();
        if let Some(p) = port {
            inner.push(set("port", &p, at));
            what.push_str(" port");
        }
        self.out.push(sect(
            "service",
            Some(&format!("{proto}-login")),
            at,
            vec![sect("inet_listener", Some(listener), at, inner)],
        ));
        self.note(
            key,
            at,
            format!("service {proto}-login {{ inet_listener {listener} {{ {what} }} }}"),
        );
    }

    /// `login_*`/`auth_*` process keys shared by 0.99 and 1.x (`service X { … }`).
    fn process_key(
        &mut self,
        svc_names: &[String],
        key: &str,
        sub: &str,
        value: &str,
        at: &Origin,
    ) -> bool {
        let (skey, sval) = match sub {
            "executable" => ("executable", value.to_string()),
            "user" => ("user", value.to_string()),
            "chroot" => (
                "chroot",
                if settings::parse_bool(value).unwrap_or(true) {
                    "login".to_string()
                } else {
                    String::new()
                },
            ),
            "process_size" => ("vsz_limit", format!("{value}M")),
            "process_per_connection" => (
                "service_count",
                if settings::parse_bool(value).unwrap_or(true) {
                    "1"
                } else {
                    "0"
                }
                .to_string(),
            ),
            "processes_count" => ("process_min_avail", value.to_string()),
            "max_processes_count" => ("process_limit", value.to_string()),
            "max_logging_users" | "max_connections" => ("client_limit", value.to_string()),
            _ => return false,
        };
        // `chroot = yes` only makes sense for login processes; auth keeps the given dir.
        let sval = if sub == "chroot" && svc_names.iter().any(|s| s == "auth") {
            value.to_string()
        } else {
            sval
        };
        for s in svc_names {
            self.out.push(service(s, skey, &sval, at));
        }
        self.note(
            key,
            at,
            format!(
                "{} {{ {skey} = {sval} }}",
                svc_names
                    .iter()
                    .map(|s| format!("service {s}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        true
    }

    fn authdb(&mut self, kind: &str, key: &str, driver: &str, args: &str, at: &Origin) {
        let mut inner = vec![set("driver", driver, at)];
        if !args.is_empty() {
            inner.push(set("args", args, at));
        }
        self.out.push(sect(kind, None, at, inner));
        let args_note = if args.is_empty() {
            String::new()
        } else {
            format!(" args = {args}")
        };
        self.note(
            key,
            at,
            format!("{kind} {{ driver = {driver}{args_note} }}"),
        );
    }

    /// One flat key (top level of a 0.99/1.x file, or inside 1.x `protocol X {}` with `proto`).
    fn flat(&mut self, key: &str, value: &str, at: &Origin, proto: Option<&str>) {
        let protos: Vec<String> = match proto {
            Some(p) => vec![p.to_string()],
            None => self.login_targets.clone(),
        };
        match key {
            "protocols" => {
                let mut words: Vec<String> = Vec::new();
                for w in value.split_whitespace() {
                    let base = match w {
                        "imaps" => "imap",
                        "pop3s" => "pop3",
                        w => w,
                    };
                    if !words.iter().any(|x| x == base) {
                        words.push(base.to_string());
                    }
                }
                let v = words.join(" ");
                if v != value {
                    self.note(
                        key,
                        at,
                        format!("protocols = {v} (imaps/pop3s are listeners of imap/pop3 in 2.x)"),
                    );
                }
                self.protocols = words.clone();
                if self.login_targets.is_empty() || proto.is_none() {
                    self.login_targets = words;
                }
                self.out.push(set("protocols", &v, at));
            }
            "imap_listen" | "pop3_listen" | "listen" => {
                let p = match (key, proto) {
                    ("imap_listen", _) => vec!["imap".to_string()],
                    ("pop3_listen", _) => vec!["pop3".to_string()],
                    (_, Some(p)) => vec![p.to_string()],
                    _ => {
                        // 1.x global `listen`: an address only is the 2.x `listen`.
                        let (h, port) = host_port(value);
                        if port.is_none() {
                            let v = if h == "[::]" { "*, ::".to_string() } else { h };
                            self.out.push(set("listen", &v, at));
                            if v != value {
                                self.note(key, at, format!("listen = {v}"));
                            }
                            return;
                        }
                        self.protocols.clone()
                    }
                };
                for pr in p {
                    self.listener(key, &pr, &pr, value, at);
                }
            }
            "imaps_listen" => self.listener(key, "imap", "imaps", value, at),
            "pop3s_listen" => self.listener(key, "pop3", "pop3s", value, at),
            "ssl_listen" => {
                let p = match proto {
                    Some(p) => vec![p.to_string()],
                    None => self.protocols.clone(),
                };
                for pr in p {
                    let l = format!("{pr}s");
                    self.listener(key, &pr, &l, value, at);
                }
            }
            "login" => {
                // 0.99: `login = imap` starts the login block the next login_* keys apply to.
                if !self.login_targets.contains(&value.to_string()) || self.login_targets.len() > 1
                {
                    self.login_targets = vec![value.to_string()];
                }
                self.note(
                    key,
                    at,
                    format!("service {value}-login {{ }} (next login_* keys)"),
                );
            }
            "auth" => self.note(key, at, "auth_* settings (one auth process in 2.x)"),
            "default_mail_env" => {
                self.out.push(set("mail_location", value, at));
                self.note(key, at, "mail_location");
            }
            "ssl_disable" => {
                let v = if settings::parse_bool(value).unwrap_or(false) {
                    "no"
                } else {
                    "yes"
                };
                self.out.push(set("ssl", v, at));
                self.note(key, at, format!("ssl = {v}"));
            }
            "ssl_cert_file" | "ssl_key_file" | "ssl_ca_file" => {
                let k = key.trim_end_matches("_file");
                self.out.push(set(k, &format!("<{value}"), at));
                self.note(key, at, format!("{k} = <{value}"));
            }
            "mbox_locks" => {
                self.out.push(set("mbox_read_locks", value, at));
                self.out.push(set("mbox_write_locks", value, at));
                self.note(key, at, "mbox_read_locks, mbox_write_locks");
            }
            "auth_userdb" | "auth_passdb" => {
                let kind = &key[5..];
                let mut it = value.splitn(2, char::is_whitespace);
                let driver = it.next().unwrap_or("").to_string();
                let args = it.next().unwrap_or("").trim().to_string();
                self.authdb(kind, key, &driver, &args, at);
            }
            "auth_count" => self.note(key, at, "dropped (2.x runs one auth process)"),
            "auth_methods" => {
                self.out.push(set("auth_mechanisms", value, at));
                self.note(key, at, "auth_mechanisms");
            }
            "auth_userinfo" => {
                // Pre-0.99: one backend for both lookups; PAM had no user database.
                let mut it = value.splitn(2, char::is_whitespace);
                let driver = it.next().unwrap_or("").to_string();
                let args = it.next().unwrap_or("").trim().to_string();
                self.authdb("passdb", key, &driver, &args, at);
                let (udriver, uargs) = match driver.as_str() {
                    "pam" | "shadow" => ("passwd".to_string(), String::new()),
                    _ => (driver.clone(), args.clone()),
                };
                self.authdb("userdb", key, &udriver, &uargs, at);
            }
            "client_workarounds" => {
                let v: Vec<&str> = value
                    .split_whitespace()
                    .filter(|w| !matches!(*w, "outlook-idle" | "netscape-eoh"))
                    .collect();
                let v = v.join(" ");
                self.out.push(set("imap_client_workarounds", &v, at));
                self.note(key, at, format!("imap_client_workarounds = {v}"));
            }
            "mail_max_flag_length" => {
                self.out.push(set("mail_max_keyword_length", value, at));
                self.note(key, at, "mail_max_keyword_length");
            }
            "mail_read_mmaped" => {
                let v = if settings::parse_bool(value).unwrap_or(false) {
                    "no"
                } else {
                    "yes"
                };
                self.out.push(set("mmap_disable", v, at));
                self.note(key, at, format!("mmap_disable = {v}"));
            }
            "mail_extra_groups" => {
                self.out.push(set("mail_access_groups", value, at));
                self.note(key, at, "mail_access_groups");
            }
            "fsync_disable" => {
                let v = if settings::parse_bool(value).unwrap_or(false) {
                    "never"
                } else {
                    "optimized"
                };
                self.out.push(set("mail_fsync", v, at));
                self.note(key, at, format!("mail_fsync = {v}"));
            }
            "imap_executable" | "pop3_executable" | "mail_executable" => {
                let svc = match key {
                    "imap_executable" => vec!["imap".to_string()],
                    "pop3_executable" => vec!["pop3".to_string()],
                    _ => protos.clone(),
                };
                for s in &svc {
                    self.out.push(service(s, "executable", value, at));
                }
                self.note(
                    key,
                    at,
                    format!("service {} {{ executable }}", svc.join(", ")),
                );
            }
            "imap_process_size" | "pop3_process_size" | "mail_process_size" => {
                let svc = match key {
                    "imap_process_size" => vec!["imap".to_string()],
                    "pop3_process_size" => vec!["pop3".to_string()],
                    _ => protos.clone(),
                };
                for s in &svc {
                    self.out
                        .push(service(s, "vsz_limit", &format!("{value}M"), at));
                }
                self.note(
                    key,
                    at,
                    format!("service {} {{ vsz_limit }}", svc.join(", ")),
                );
            }
            "max_mail_processes" => {
                for s in &protos {
                    self.out.push(service(s, "process_limit", value, at));
                }
                self.note(
                    key,
                    at,
                    format!("service {} {{ process_limit }}", protos.join(", ")),
                );
            }
            "mail_drop_priv_before_exec" => {
                let v = if settings::parse_bool(value).unwrap_or(false) {
                    "yes"
                } else {
                    "no"
                };
                for s in &protos {
                    self.out.push(service(s, "drop_priv_before_exec", v, at));
                }
                self.note(
                    key,
                    at,
                    format!("service {} {{ drop_priv_before_exec }}", protos.join(", ")),
                );
            }
            _ if key.starts_with("auth_")
                && self.process_key(&["auth".to_string()], key, &key[5..], value, at) => {}
            _ if key.starts_with("login_")
                && self.process_key(
                    &protos
                        .iter()
                        .map(|p| format!("{p}-login"))
                        .collect::<Vec<_>>(),
                    key,
                    &key[6..],
                    value,
                    at,
                ) => {}
            _ => self.passthrough(key, value, at),
        }
    }

    /// A key that exists in 2.x under the same name (time values get their missing unit),
    /// or is dropped with a note.
    fn passthrough(&mut self, key: &str, value: &str, at: &Origin) {
        match settings::lookup("global", key) {
            Some(def)
                if def.kind == Kind::Time
                    && value.chars().all(|c| c.is_ascii_digit())
                    && value != "0" =>
            {
                let v = format!("{value}s");
                self.note(
                    key,
                    at,
                    format!(
                        "{key} = {} (1.x counted seconds)",
                        settings::format_time(value.parse().unwrap_or(0))
                    ),
                );
                self.out.push(set(key, &v, at));
            }
            Some(_) => self.out.push(set(key, value, at)),
            None => self.note(key, at, "dropped (no 2.x equivalent)"),
        }
    }

    /// 1.x `auth default { … }`.
    fn auth_section(&mut self, children: &[Node]) {
        for c in children {
            match c {
                Node::Setting { key, value, at } => {
                    let full = format!("auth_{key}");
                    if key == "mechanisms" {
                        self.out.push(set("auth_mechanisms", value, at));
                        self.note(key, at, "auth_mechanisms");
                    } else if self.process_key(&["auth".to_string()], key, key, value, at) {
                    } else if key == "count" {
                        self.note(key, at, "dropped (2.x runs one auth process)");
                    } else if settings::lookup("global", &full).is_some() {
                        self.out.push(set(&full, value, at));
                        self.note(key, at, full);
                    } else {
                        self.note(key, at, "dropped (no 2.x equivalent)");
                    }
                }
                Node::Section {
                    kind,
                    name,
                    at,
                    children,
                } if kind == "passdb" || kind == "userdb" => {
                    let args = children
                        .iter()
                        .find_map(|n| match n {
                            Node::Setting { key, value, .. } if key == "args" => {
                                Some(value.clone())
                            }
                            _ => None,
                        })
                        .unwrap_or_default();
                    let driver = name.clone().unwrap_or_default();
                    self.authdb(kind, &format!("{kind} {driver}"), &driver, &args, at);
                }
                Node::Section {
                    kind, children, at, ..
                } if kind == "socket" => {
                    for l in children {
                        if let Node::Section {
                            kind: role,
                            children: opts,
                            at: lat,
                            ..
                        } = l
                        {
                            let path = opts.iter().find_map(|n| match n {
                                Node::Setting { key, value, .. } if key == "path" => {
                                    Some(value.clone())
                                }
                                _ => None,
                            });
                            let Some(path) = path else {
                                self.note(role, lat, "dropped (socket without path)");
                                continue;
                            };
                            let inner: Vec<Node> = opts
                                .iter()
                                .filter(|n| matches!(n, Node::Setting { key, .. } if key != "path"))
                                .cloned()
                                .collect();
                            self.out.push(sect(
                                "service",
                                Some("auth"),
                                lat,
                                vec![sect("unix_listener", Some(&path), lat, inner)],
                            ));
                            self.note(
                                &format!("socket listen {{ {role} }}"),
                                lat,
                                format!(
                                    "service auth {{ unix_listener {path} {{ mode user group }} }}"
                                ),
                            );
                        }
                    }
                    let _ = at;
                }
                Node::Section { kind, at, .. } => {
                    self.note(kind, at, "dropped (no 2.x equivalent)");
                }
            }
        }
    }

    fn node(&mut self, n: Node) {
        match n {
            Node::Setting { key, value, at } => self.flat(&key, &value, &at, None),
            Node::Section {
                kind,
                name,
                at,
                children,
            } => match kind.as_str() {
                "auth" => {
                    self.note(
                        &format!("auth {}", name.unwrap_or_default()),
                        &at,
                        "auth_* settings, passdb {}, userdb {}, service auth {}",
                    );
                    self.auth_section(&children);
                }
                "protocol" => {
                    let p = name.clone().unwrap_or_default();
                    let saved = std::mem::take(&mut self.out);
                    for c in children {
                        match c {
                            Node::Setting { key, value, at } => {
                                self.flat(&key, &value, &at, Some(&p))
                            }
                            other => self.out.push(other),
                        }
                    }
                    // Keys that stayed settings belong to the protocol filter; services and
                    // sections generated from them are global in 2.x.
                    let produced = std::mem::replace(&mut self.out, saved);
                    let (inside, global): (Vec<Node>, Vec<Node>) = produced
                        .into_iter()
                        .partition(|n| matches!(n, Node::Setting { .. }));
                    self.out.extend(global);
                    if !inside.is_empty() {
                        self.out.push(sect("protocol", Some(&p), &at, inside));
                    }
                }
                "namespace" if matches!(name.as_deref(), Some("private" | "shared" | "public")) => {
                    let t = name.unwrap_or_default();
                    let mut inner = vec![set("type", &t, &at)];
                    inner.extend(children);
                    self.note(
                        &format!("namespace {t}"),
                        &at,
                        format!("namespace {{ type = {t} }}"),
                    );
                    self.out.push(sect("namespace", None, &at, inner));
                }
                _ => self.out.push(Node::Section {
                    kind,
                    name,
                    at,
                    children,
                }),
            },
        }
    }
}

/// Rewrite old-era nodes into 2.x nodes. 2.x files come back unchanged with no notes.
pub fn translate(nodes: Vec<Node>) -> (Era, Vec<Node>, Vec<Note>) {
    let era = detect(&nodes);
    if era == Era::V2 {
        return (era, nodes, Vec::new());
    }
    // Era defaults (0.99: imap only; Fedora 1.0: imap imaps pop3 pop3s).
    let default_protocols: Vec<String> = match era {
        Era::V0_99 => vec!["imap".into()],
        _ => vec!["imap".into(), "pop3".into()],
    };
    let explicit = |k: &str| {
        nodes.iter().find_map(|n| match n {
            Node::Setting { key, at, .. } if key == k => Some(at.clone()),
            _ => None,
        })
    };
    // `login_user` anywhere (also inside `protocol imap { … }`).
    fn sets_key(nodes: &[Node], k: &str) -> bool {
        nodes.iter().any(|n| match n {
            Node::Setting { key, .. } => key == k,
            Node::Section { children, .. } => sets_key(children, k),
        })
    }
    let has_login_user = sets_key(&nodes, "login_user");
    let has_protocols = explicit("protocols").is_some();
    let has_dpa = explicit("disable_plaintext_auth").is_some();
    let has_uidl = explicit("pop3_uidl_format").is_some();
    let ssl_off = nodes.iter().any(|n| {
        matches!(n, Node::Setting { key, value, .. } if key == "ssl_disable" && settings::parse_bool(value).unwrap_or(false))
    });
    let has_cert = explicit("ssl_cert_file").is_some();
    let has_key = explicit("ssl_key_file").is_some();
    let first = nodes
        .first()
        .map(|n| match n {
            Node::Setting { at, .. } | Node::Section { at, .. } => at.clone(),
        })
        .unwrap_or(Origin {
            file: Default::default(),
            line: 1,
        });
    let mut tx = Tx {
        era,
        out: Vec::new(),
        notes: Vec::new(),
        login_targets: default_protocols.clone(),
        protocols: default_protocols.clone(),
    };
    if let Some(at) = explicit("protocols") {
        // Know the protocols before any listener key is seen.
        if let Some(Node::Setting { value, .. }) = nodes
            .iter()
            .find(|n| matches!(n, Node::Setting { key, .. } if key == "protocols"))
        {
            let mut t = Tx {
                era,
                out: Vec::new(),
                notes: Vec::new(),
                login_targets: Vec::new(),
                protocols: Vec::new(),
            };
            t.flat("protocols", value, &at, None);
            tx.protocols = t.protocols.clone();
            tx.login_targets = t.protocols;
        }
    }
    if !has_protocols {
        let v = default_protocols.join(" ");
        tx.out.push(set("protocols", &v, &first));
        tx.note(
            "protocols",
            &first,
            format!("protocols = {v} (the {era} default, pinned)"),
        );
    }
    if !has_dpa {
        tx.out.push(set("disable_plaintext_auth", "no", &first));
        tx.note(
            "disable_plaintext_auth",
            &first,
            "disable_plaintext_auth = no (the era default, pinned; 2.x defaults to yes)",
        );
    }
    if !has_login_user {
        // 0.99's and 1.0's login processes ran as `dovecot` (master-settings.c: `MEMBER
        // (login_user) "dovecot"`); 2.x's `dovenull` did not exist then (Fedora 7 has none).
        tx.out.push(set("default_login_user", "dovecot", &first));
        tx.note(
            "login_user",
            &first,
            format!(
                "default_login_user = dovecot (the {era} default, pinned; 2.x defaults to dovenull)"
            ),
        );
    }
    if era == Era::V1 && !sets_key(&nodes, "mbox_write_locks") {
        // Fedora's 1.0 package built with `mbox_write_locks = fcntl` (its default-settings
        // patch); 2.x's `fcntl dotlock` would try dotlocks in /var/spool/mail, which
        // Fedora's Dovecot never did.
        tx.out.push(set("mbox_write_locks", "fcntl", &first));
        tx.note(
            "mbox_write_locks",
            &first,
            "mbox_write_locks = fcntl (Fedora 1.0's default, pinned; 2.x defaults to fcntl dotlock)",
        );
    }
    if era == Era::V0_99 && !has_uidl {
        tx.out.push(set("pop3_uidl_format", "%v.%u", &first));
        tx.note(
            "pop3_uidl_format",
            &first,
            "pop3_uidl_format = %v.%u (0.99's UIDLs, pinned)",
        );
    }
    if !ssl_off {
        let (cert, key) = match era {
            Era::V0_99 => (
                "/usr/share/ssl/certs/dovecot.pem",
                "/usr/share/ssl/private/dovecot.pem",
            ),
            _ => (
                "/etc/pki/dovecot/certs/dovecot.pem",
                "/etc/pki/dovecot/private/dovecot.pem",
            ),
        };
        if !has_cert {
            tx.out.push(set("ssl_cert", &format!("<{cert}"), &first));
            tx.note(
                "ssl_cert_file",
                &first,
                format!("ssl_cert = <{cert} (the Fedora default, pinned)"),
            );
        }
        if !has_key {
            tx.out.push(set("ssl_key", &format!("<{key}"), &first));
            tx.note(
                "ssl_key_file",
                &first,
                format!("ssl_key = <{key} (the Fedora default, pinned)"),
            );
        }
    }
    for n in nodes {
        tx.node(n);
    }
    (era, tx.out, tx.notes)
}

#[cfg(test)]
mod tests {
    use super::super::DovecotConf;
    use super::*;
    use std::path::Path;

    /// 1.0's login processes ran as `dovecot` unless `login_user` said otherwise; a 2.x
    /// file keeps 2.x's `dovenull`.
    #[test]
    fn old_login_user_default_is_dovecot() {
        let c = DovecotConf::from_str(
            "protocols = pop3\nssl_disable = yes\n",
            Path::new("/etc/dovecot.conf"),
        )
        .unwrap();
        assert_eq!(c.era, Era::V1);
        assert_eq!(c.login_user("pop3"), "dovecot");
        let c = DovecotConf::from_str(
            "protocols = pop3\nssl_disable = yes\nlogin_user = mailnull\n",
            Path::new("/etc/dovecot.conf"),
        )
        .unwrap();
        assert_eq!(c.login_user("pop3"), "mailnull");
        let c =
            DovecotConf::from_str("protocols = pop3\n", Path::new("/etc/dovecot.conf")).unwrap();
        assert_eq!(c.era, Era::V2);
        assert_eq!(c.login_user("pop3"), "dovenull");
    }

    #[test]
    fn fc2_file() {
        let c = DovecotConf::from_str(
            "protocols = pop3 imap\nimap_listen = *:143\nlogin = imap\nlogin = pop3\nauth = default\nauth_mechanisms = plain\nauth_userdb = passwd\nauth_passdb = pam\nauth_user = root\nlogin_dir = /var/run/dovecot-login\nmbox_locks = fcntl\ndefault_mail_env = mbox:/var/spool/mail/%u\n",
            Path::new("/etc/dovecot.conf"),
        )
        .unwrap();
        assert_eq!(c.era, Era::V0_99);
        assert_eq!(c.protocols(), vec!["pop3", "imap"]);
        assert!(!c.disable_plaintext_auth());
        assert_eq!(c.passdbs()[0].driver, "pam");
        assert_eq!(c.userdbs()[0].driver, "passwd");
        assert_eq!(c.mail_location(), "mbox:/var/spool/mail/%u");
        assert_eq!(c.listeners("imap")[0].addresses, vec!["*"]);
        assert!(c.notes.iter().any(|n| n.to_string().starts_with(
            "0.99 key imap_listen at /etc/dovecot.conf:2 → service imap-login { inet_listener imap { address port } }"
        )));
    }

    #[test]
    fn f7_file() {
        let c = DovecotConf::from_str(
            "protocols = imap imaps pop3 pop3s\nprotocol imap {\n listen = *:10143\n}\nauth default {\n mechanisms = plain login\n passdb pam {\n }\n userdb passwd {\n }\n socket listen {\n  client {\n   path = /var/spool/postfix/private/auth\n   mode = 0660\n  }\n }\n}\n",
            Path::new("/etc/dovecot.conf"),
        )
        .unwrap();
        assert_eq!(c.era, Era::V1);
        assert_eq!(c.protocols(), vec!["imap", "pop3"]);
        assert_eq!(c.auth_mechanisms(), vec!["plain", "login"]);
        assert_eq!(c.listeners("imap")[0].port, 10143);
        let auth = c.root.block("service", "auth").unwrap();
        assert!(
            auth.block("unix_listener", "/var/spool/postfix/private/auth")
                .is_some()
        );
    }

    #[test]
    fn host_ports() {
        assert_eq!(host_port("*:143"), ("*".into(), Some("143".into())));
        assert_eq!(host_port("[::]:143"), ("[::]".into(), Some("143".into())));
        assert_eq!(host_port("*"), ("*".into(), None));
    }
}
