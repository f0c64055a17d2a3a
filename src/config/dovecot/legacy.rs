//! 0.99 and 1.x `dovecot.conf` that Dovecot 2.3 rejects, rewritten into 2.x nodes, one
//! [`Note`] per translated key; and the era defaults of old files 2.3 accepts.
//!
//! Era detection: any 0.99-only key (`imap_listen`, `auth = default`, `default_mail_env`,
//! `auth_passdb`, `mbox_locks`, …) makes a file 0.99; else a 1.x section or key (`auth default
//! {}`, `ssl_disable`, `ssl_cert_file`, `protocol imap { listen = … }`, `login_*`) makes it 1.x;
//! anything else is 2.x. A 1.x file Dovecot 2.3 accepts is read by 2.3's own conversion
//! (`engine`); only a file 2.3 rejects is translated here. The mapping follows
//! `research/fedora-dropin.md` §3.3 and is listed in `postern-dovecot.conf(5)`.
//!
//! Era defaults are the compiled-in defaults of that version, from its upstream source
//! (dovecot/core 6a727e6ea8 for 0.99.10, ef8fe0ce5d for 1.0; file and line in
//! [`V099_DEFAULTS`]/[`V1_DEFAULTS`] and the man page's table), kept where 2.3's would serve
//! more than the box did (protocols, IPv6 listeners), refuse to start (`dovenull`, no
//! certificate), or read old mailboxes differently (0.99's UIDLs). Distribution packaging
//! values are not used: the file does not say which distribution wrote it, and a packaging
//! value that is looser than upstream (Fedora's `disable_plaintext_auth = no` for 1.0) would
//! loosen a box built from upstream.
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

/// Which era wrote these nodes. 0.99 had no sections: a file with an `auth NAME {}` or
/// `protocol NAME {}` section is 1.x even when it keeps keys 1.0 still read under their
/// 0.99 names (`default_mail_env` until 1.0.rc11, `mail_extra_groups`, `umask`).
pub fn detect(nodes: &[Node]) -> Era {
    let mut era = Era::V2;
    let mut v099_key = false;
    let mut v1_section = false;
    for n in nodes {
        match n {
            Node::Setting { key, .. } if V099_KEYS.contains(&key.as_str()) => v099_key = true,
            Node::Setting { key, .. } if V1_KEYS.contains(&key.as_str()) => era = Era::V1,
            Node::Section { kind, children, .. } => {
                if kind == "auth" {
                    era = Era::V1;
                    v1_section = true;
                }
                if kind == "protocol"
                    && children.iter().any(|c| {
                        matches!(c, Node::Setting { key, .. }
                            if key == "listen" || key == "ssl_listen"
                               || V1_KEYS.contains(&key.as_str()))
                    })
                {
                    era = Era::V1;
                    v1_section = true;
                }
            }
            _ => {}
        }
    }
    if v099_key && !v1_section {
        return Era::V0_99;
    }
    if v099_key {
        return Era::V1;
    }
    era
}

struct Tx {
    era: Era,
    /// `passdb`/`userdb` written by the file (else the era's auth defaults apply).
    have_db: std::collections::HashSet<String>,
    /// An auth section (`auth = default`, `auth default {}`) was seen.
    saw_auth: bool,
    /// The auth section used the 1.0-test `passdb = DRIVER` syntax.
    test_syntax: bool,
    out: Vec<Node>,
    notes: Vec<Note>,
    /// Protocols the `login_*` keys apply to (`login = imap` blocks in 0.99).
    login_targets: Vec<String>,
    protocols: Vec<String>,
    /// The file's `base_dir` (2.3's default when it sets none): an auth socket path under it
    /// becomes the listener's relative name, as 2.3's `socket_apply()` does, so the 1.x
    /// `path = /var/run/dovecot/auth-master` is the built-in `auth-master` listener rather
    /// than a second listener on the same path.
    base_dir: String,
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
        self.have_db.insert(kind.to_string());
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
                // As 2.3's old-set-parser.c: `imaps`/`pop3s` without the plain protocol
                // become it, appended, with the plain listener disabled (port 0), so the
                // translated box does not open 143/110 where the 1.x one did not.
                let all: Vec<&str> = value.split_whitespace().collect();
                let mut words: Vec<String> = Vec::new();
                for w in &all {
                    if !matches!(*w, "imaps" | "pop3s") && !words.iter().any(|x| x == w) {
                        words.push(w.to_string());
                    }
                }
                let mut off: Vec<&str> = Vec::new();
                for (s, plain) in [("imaps", "imap"), ("pop3s", "pop3")] {
                    if all.contains(&s) && !all.contains(&plain) {
                        words.push(plain.to_string());
                        off.push(plain);
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
                for plain in off {
                    let login = format!("{plain}-login");
                    self.out.push(sect(
                        "service",
                        Some(&login),
                        at,
                        vec![sect(
                            "inet_listener",
                            Some(plain),
                            at,
                            vec![set("port", "0", at)],
                        )],
                    ));
                    self.note(
                        key,
                        at,
                        format!(
                            "service {login} {{ inet_listener {plain} {{ port = 0 }} }} (the 1.x box listened for {plain}s only)"
                        ),
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
            "auth" => {
                self.saw_auth = true;
                self.note(key, at, "auth_* settings (one auth process in 2.x)")
            }
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
                self.have_db.insert(kind.to_string());
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
                    } else if key == "passdb" || key == "userdb" {
                        // 1.0-test syntax (2004-2005, until dovecot/core e9503210d3):
                        // `auth default { passdb = pam; userdb = passwd }`, DRIVER [ARGS].
                        let mut it = value.splitn(2, char::is_whitespace);
                        let driver = it.next().unwrap_or("").to_string();
                        let args = it.next().unwrap_or("").trim().to_string();
                        self.authdb(key, key, &driver, &args, at);
                        self.test_syntax = true;
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
                    self.have_db.insert(kind.clone());
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
                            let path = match path.strip_prefix(self.base_dir.as_str()) {
                                Some(r) if r.starts_with('/') && r.len() > 1 => r[1..].to_string(),
                                _ => path,
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
                    self.saw_auth = true;
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

/// Where an era default comes from: the upstream source of that Dovecot version.
struct EraDefault {
    key: &'static str,
    value: &'static str,
    source: &'static str,
}

/// The compiled-in defaults of Dovecot 0.99.10 (dovecot/core 6a727e6ea8 "0.99.10 released",
/// src/master/master-settings.c) that differ from 2.3.19's and that a translation must keep
/// so the box serves and refuses what it did.
const V099_DEFAULTS: &[EraDefault] = &[
    EraDefault {
        key: "protocols",
        value: "imap",
        source: "0.99.10 master-settings.c:139 protocols \"imap imaps\" (imaps is a listener of imap in 2.x)",
    },
    EraDefault {
        key: "disable_plaintext_auth",
        value: "no",
        source: "0.99.10 master-settings.c:150 disable_plaintext_auth FALSE",
    },
    EraDefault {
        key: "default_login_user",
        value: "dovecot",
        source: "0.99.10 master-settings.c:208 login user \"dovecot\"",
    },
    EraDefault {
        key: "pop3_uidl_format",
        value: "%v.%u",
        source: "0.99.10 src/pop3/commands.c:377 UIDL \"%u.%u\" of UIDVALIDITY and UID",
    },
    EraDefault {
        key: "listen",
        value: "*",
        source: "0.99.10 master-settings.c:140 imap_listen \"*\" (IPv4 only)",
    },
];

/// The compiled-in defaults of Dovecot 1.0 (dovecot/core ef8fe0ce5d "Released 1.0.beta7",
/// src/master/master-settings.c; the same values are the upstream side of Fedora's
/// dovecot-1.0.rc15-default-settings.patch) that differ from 2.3.19's.
const V1_DEFAULTS: &[EraDefault] = &[
    EraDefault {
        key: "protocols",
        value: "imap",
        source: "1.0 master-settings.c:264 protocols \"imap imaps\" (imaps is a listener of imap in 2.x)",
    },
    EraDefault {
        key: "listen",
        value: "*",
        source: "1.0 master-settings.c:265 listen \"*\" (IPv4 only)",
    },
    EraDefault {
        key: "default_login_user",
        value: "dovecot",
        source: "1.0 master-settings.c:283 login_user \"dovecot\"",
    },
];

fn era_table(era: Era) -> &'static [EraDefault] {
    match era {
        Era::V0_99 => V099_DEFAULTS,
        Era::V1 => V1_DEFAULTS,
        Era::V2 => &[],
    }
}

/// The certificate and key an old Dovecot read when the file names none:
/// `SSLDIR/certs/dovecot.pem` and `SSLDIR/private/dovecot.pem` (master-settings.c of 0.99.10
/// lines 146-147 and of 1.0 lines 270-271). SSLDIR is a build option (`--with-ssldir`,
/// upstream `/etc/ssl`; Red Hat built 0.99 with `/usr/share/ssl`, Fedora 1.0 used
/// `/etc/pki/dovecot`): the first of those under which a certificate exists on this machine
/// is the box's, else upstream's.
fn era_cert_paths(root: &std::path::Path) -> (String, String) {
    for dir in ["/etc/ssl", "/usr/share/ssl", "/etc/pki/dovecot"] {
        let cert = format!("{dir}/certs/dovecot.pem");
        if root.join(cert.trim_start_matches('/')).is_file() {
            return (cert, format!("{dir}/private/dovecot.pem"));
        }
    }
    (
        "/etc/ssl/certs/dovecot.pem".into(),
        "/etc/ssl/private/dovecot.pem".into(),
    )
}

/// For an old file Dovecot 2.3 accepts (and so prints as it reads it): the defaults of the
/// file's own version the services use where the file sets nothing and 2.3's default would
/// serve more (protocols, IPv6) or not run at all (`dovenull`, no certificate). Each comes
/// with its source. `tree` is 2.3's reading of the file.
pub fn era_defaults(era: Era, tree: &super::engine::Tree, _path: &std::path::Path) -> Vec<Note> {
    let root = tree.root();
    let at = Origin {
        file: _path.to_path_buf(),
        line: 0,
    };
    let mut out = Vec::new();
    let login_user_set = root.is_changed("default_login_user")
        || ["imap-login", "pop3-login"].iter().any(|s| {
            tree.list(0, "service")
                .iter()
                .any(|id| tree.nodes[*id].name() == *s && tree.nodes[*id].is_changed("user"))
        });
    for d in era_table(era) {
        let set = match d.key {
            "default_login_user" => login_user_set,
            k => root.is_changed(k),
        };
        if set {
            continue;
        }
        out.push(Note {
            era,
            old_key: d.key.into(),
            at: at.clone(),
            new: format!("{} = {} ({})", d.key, d.value, d.source),
        });
    }
    if era != Era::V2
        && root.get("ssl") != Some("no")
        && !root.is_changed("ssl_cert")
        && !root.is_changed("ssl_key")
    {
        let (cert, key) = era_cert_paths(std::path::Path::new("/"));
        for (k, v) in [("ssl_cert", cert), ("ssl_key", key)] {
            out.push(Note {
                era,
                old_key: k.into(),
                at: at.clone(),
                new: format!(
                    "{k} = <{v} (the {era} default SSLDIR path; 2.3 has no default certificate)"
                ),
            });
        }
    }
    out
}

/// Rewrite old-era nodes into 2.x nodes. 2.x files come back unchanged with no notes.
pub fn translate(nodes: Vec<Node>) -> (Era, Vec<Node>, Vec<Note>) {
    let era = detect(&nodes);
    if era == Era::V2 {
        return (era, nodes, Vec::new());
    }
    let explicit = |k: &str| {
        nodes.iter().find_map(|n| match n {
            Node::Setting { key, at, .. } if key == k => Some(at.clone()),
            _ => None,
        })
    };
    // A key anywhere (also inside `protocol imap { … }` or `auth default { … }`).
    fn sets_key(nodes: &[Node], k: &str) -> bool {
        nodes.iter().any(|n| match n {
            Node::Setting { key, .. } => key == k,
            Node::Section { children, .. } => sets_key(children, k),
        })
    }
    let first = nodes
        .first()
        .map(|n| match n {
            Node::Setting { at, .. } | Node::Section { at, .. } => at.clone(),
        })
        .unwrap_or(Origin {
            file: Default::default(),
            line: 1,
        });
    let default_protocols: Vec<String> = vec!["imap".into()];
    let base_dir = nodes
        .iter()
        .rev()
        .find_map(|n| match n {
            Node::Setting { key, value, .. } if key == "base_dir" => {
                Some(value.trim_end_matches('/').to_string())
            }
            _ => None,
        })
        .unwrap_or_else(|| "/run/dovecot".into());
    let mut tx = Tx {
        era,
        have_db: Default::default(),
        saw_auth: false,
        test_syntax: false,
        out: Vec::new(),
        notes: Vec::new(),
        login_targets: default_protocols.clone(),
        protocols: default_protocols,
        base_dir: base_dir.clone(),
    };
    if let Some(at) = explicit("protocols") {
        // Know the protocols before any listener key is seen.
        if let Some(Node::Setting { value, .. }) = nodes
            .iter()
            .find(|n| matches!(n, Node::Setting { key, .. } if key == "protocols"))
        {
            let mut t = Tx {
                era,
                have_db: Default::default(),
                saw_auth: false,
                test_syntax: false,
                out: Vec::new(),
                notes: Vec::new(),
                login_targets: Vec::new(),
                protocols: Vec::new(),
                base_dir: base_dir.clone(),
            };
            t.flat("protocols", value, &at, None);
            tx.protocols = t.protocols.clone();
            tx.login_targets = t.protocols;
        }
    }
    for d in era_table(era) {
        let written = match d.key {
            "default_login_user" => sets_key(&nodes, "login_user"),
            "listen" => {
                sets_key(&nodes, "listen")
                    || sets_key(&nodes, "imap_listen")
                    || sets_key(&nodes, "pop3_listen")
            }
            k => sets_key(&nodes, k),
        };
        if written {
            continue;
        }
        tx.out.push(set(d.key, d.value, &first));
        tx.note(
            d.key,
            &first,
            format!("{} = {} ({})", d.key, d.value, d.source),
        );
    }
    let ssl_off = nodes.iter().any(|n| {
        matches!(n, Node::Setting { key, value, .. } if key == "ssl_disable" && settings::parse_bool(value).unwrap_or(false))
    });
    if !ssl_off {
        let (cert, key) = era_cert_paths(std::path::Path::new("/"));
        for (old, new, v) in [
            ("ssl_cert_file", "ssl_cert", cert),
            ("ssl_key_file", "ssl_key", key),
        ] {
            if explicit(old).is_none() {
                tx.out.push(set(new, &format!("<{v}"), &first));
                tx.note(
                    old,
                    &first,
                    format!("{new} = <{v} (the {era} default SSLDIR path)"),
                );
            }
        }
    }
    for n in nodes {
        tx.node(n);
    }
    // The 1.0-test releases (the `passdb = DRIVER` syntax, until dovecot/core e9503210d3)
    // made UIDLs as 0.99 did: master-settings.c:301 at e9503210d3^ `pop3_uidl_format "%v.%u"`
    // (1.0.beta and later have no default, the file had to set one).
    let sets_uidl = tx
        .out
        .iter()
        .any(|n| matches!(n, Node::Setting { key, .. } if key == "pop3_uidl_format"));
    if tx.test_syntax && !sets_uidl {
        tx.out.push(set("pop3_uidl_format", "%v.%u", &first));
        tx.note(
            "pop3_uidl_format",
            &first,
            "pop3_uidl_format = %v.%u (1.0-test master-settings.c:301 at dovecot/core e9503210d3^)",
        );
    }
    // An auth section without a passdb or userdb used the era's: 0.99.10 master-settings.c
    // lines 227-228 (`userdb "passwd"`, `passdb "pam"`); 1.0-test and later sections
    // required them, as 2.x does.
    if era == Era::V0_99 && tx.saw_auth {
        for (kind, driver) in [("passdb", "pam"), ("userdb", "passwd")] {
            if !tx.have_db.contains(kind) {
                tx.authdb(kind, kind, driver, "", &first);
                if let Some(n) = tx.notes.last_mut() {
                    n.new.push_str(&format!(
                        " (0.99.10 master-settings.c auth {kind} \"{driver}\" default)"
                    ));
                }
            }
        }
    }
    (era, tx.out, tx.notes)
}

/// The 2.x text of translated nodes: one line per setting, section start and end, with the
/// file and line each came from.
pub fn render(nodes: &[Node]) -> (Vec<String>, Vec<(String, usize)>) {
    let mut lines = Vec::new();
    let mut origins = Vec::new();
    fn quote(v: &str) -> String {
        let needs =
            v.contains('#') || v.starts_with([' ', '\t', '"', '\'']) || v.ends_with([' ', '\t']);
        if !needs {
            return v.to_string();
        }
        let mut s = String::from("\"");
        for c in v.chars() {
            if matches!(c, '"' | '\\') {
                s.push('\\');
            }
            s.push(c);
        }
        s.push('"');
        s
    }
    fn walk(nodes: &[Node], lines: &mut Vec<String>, origins: &mut Vec<(String, usize)>) {
        for n in nodes {
            match n {
                Node::Setting { key, value, at } => {
                    let text = super::engine::string_to_text(&quote(value));
                    lines.push(format!("{key} = {text}"));
                    origins.push((at.file.display().to_string(), at.line));
                }
                Node::Section {
                    kind,
                    name,
                    at,
                    children,
                } => {
                    let head = match name.as_deref() {
                        None | Some("") => format!("{kind} {{"),
                        Some(n) if n.contains([' ', '\t', '"']) => {
                            format!(
                                "{kind} \"{}\" {{",
                                n.replace('\\', "\\\\").replace('"', "\\\"")
                            )
                        }
                        Some(n) => format!("{kind} {n} {{"),
                    };
                    lines.push(super::engine::string_to_text(&head));
                    origins.push((at.file.display().to_string(), at.line));
                    walk(children, lines, origins);
                    lines.push("}".into());
                    origins.push((at.file.display().to_string(), at.line));
                }
            }
        }
    }
    walk(nodes, &mut lines, &mut origins);
    (lines, origins)
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

    /// 1.0-test's `auth default { passdb = pam; userdb = passwd }`: Dovecot 2.3 rejects the
    /// file (`auth_userdb` is unknown); the translation keeps both databases and 1.0-test's
    /// `%v.%u` UIDLs.
    #[test]
    fn test_era_auth_keys_keep_passdb_and_userdb() {
        let c = DovecotConf::from_str(
            "protocols = pop3\nauth default {\n  mechanisms = plain\n  userdb = passwd\n  passdb = pam dovecot\n}\n",
            Path::new("/etc/dovecot.conf"),
        )
        .unwrap();
        assert!(c.translated);
        assert_eq!(c.era, Era::V1);
        assert_eq!(c.passdbs()[0].driver, "pam");
        assert_eq!(c.passdbs()[0].args, "dovecot");
        assert_eq!(c.userdbs()[0].driver, "passwd");
        assert_eq!(c.pop3_uidl_format(), "%v.%u");
        assert_eq!(c.protocols(), vec!["pop3"]);
    }

    /// A 1.x file 2.3 accepts is printed as 2.3 prints it, but the services keep 1.0's
    /// defaults where the file sets nothing: IMAP only (2.3 would add POP3 and LMTP), IPv4
    /// only, login processes as `dovecot`.
    #[test]
    fn accepted_1x_file_runs_with_1x_defaults() {
        let c = DovecotConf::from_str(
            "auth default {\n  mechanisms = plain\n  passdb pam {\n  }\n  userdb passwd {\n  }\n}\n",
            Path::new("/etc/dovecot.conf"),
        )
        .unwrap();
        assert!(!c.translated);
        assert_eq!(c.era, Era::V1);
        assert_eq!(c.protocols(), vec!["imap"]);
        assert_eq!(c.get("listen"), Some("*"));
        assert_eq!(c.login_user("imap"), "dovecot");
        assert!(c.disable_plaintext_auth());
        let keys: Vec<&str> = c.era_defaults.iter().map(|n| n.old_key.as_str()).collect();
        assert!(keys.contains(&"protocols"), "{keys:?}");
        // A 2.x file gets none.
        let c =
            DovecotConf::from_str("protocols = imap\n", Path::new("/etc/dovecot.conf")).unwrap();
        assert!(c.era_defaults.is_empty());
    }

    #[test]
    fn host_ports() {
        assert_eq!(host_port("*:143"), ("*".into(), Some("143".into())));
        assert_eq!(host_port("[::]:143"), ("[::]".into(), Some("143".into())));
        assert_eq!(host_port("*"), ("*".into(), None));
    }
}
