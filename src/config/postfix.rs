//! The effective Postfix configuration: `main.cf` + `master.cf` + the parameter table, with
//! the name classes Postfix's `postconf` uses (postconf_user.c, postconf_unused.c, as
//! observed with Postfix 3.7.11):
//!
//! * built-in parameters (the table in [`super::params`]);
//! * service parameters created from master.cf delivery services (`relay_recipient_limit`, …);
//! * user-defined parameters: every name referenced as `$name` in a built-in default, a
//!   main.cf value or a master.cf `-o` value or argument, and every name listed in
//!   `smtpd_restriction_classes`.
//!
//! A main.cf (or `-o`) name in none of these classes draws `unused parameter: name=value`
//! and is not shown by `postconf -n`; a `$name` in main.cf or master.cf that nothing defines
//! draws `undefined parameter: name`.
//!
//! Every later service reads its parameters through [`PostfixConfig::get`] (expanded value)
//! so that defaults, `compatibility_level` and host-derived values are applied one way.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use super::expand::{self, Mode};
use super::mastercf::{self, MasterCf};
use super::params;
use super::{ConfigError, maincf};

/// The default configuration directory.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/postfix";

#[derive(Debug, Clone)]
pub struct PostfixConfig {
    pub config_dir: PathBuf,
    pub main: maincf::MainCf,
    pub master: MasterCf,
    /// Warnings met while loading (without program prefix), in order.
    pub warnings: Vec<String>,
    /// Explicit settings: main.cf, then `-c DIR` (`config_directory`), then `-o` overrides.
    explicit: IndexMap<String, String>,
    service_params: IndexMap<String, String>,
    user_params: HashSet<String>,
}

/// Options for loading, as postconf's command line gives them.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `-c DIR`: also sets `config_directory` explicitly, as Postfix does.
    pub config_dir: Option<PathBuf>,
    /// `-o name=value` overrides.
    pub overrides: Vec<(String, String)>,
}

impl PostfixConfig {
    /// Load `DIR/main.cf` and `DIR/master.cf`. DIR is `-c`, else `$MAIL_CONFIG`, else
    /// `/etc/postfix`. A missing main.cf is fatal; a missing master.cf is a warning.
    pub fn load(opts: &LoadOptions) -> Result<Self, ConfigError> {
        let dir = opts
            .config_dir
            .clone()
            .or_else(|| std::env::var_os("MAIL_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR));
        let main = maincf::read(&dir.join("main.cf"))?;
        let mut warnings = main.warnings.clone();
        let master_path = dir.join("master.cf");
        let master = match std::fs::metadata(&master_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                warnings.push(ConfigError::open(&master_path, e).to_string());
                MasterCf {
                    path: master_path,
                    ..Default::default()
                }
            }
            _ => mastercf::read(&master_path)?,
        };
        warnings.extend(master.warnings.iter().cloned());
        let mut explicit: IndexMap<String, String> = main
            .settings
            .values()
            .map(|s| (s.name.clone(), s.value.clone()))
            .collect();
        if let Some(d) = &opts.config_dir {
            explicit.insert("config_directory".into(), d.display().to_string());
        }
        for (n, v) in &opts.overrides {
            explicit.insert(n.clone(), v.clone());
        }
        let mut cfg = PostfixConfig {
            config_dir: dir,
            main,
            master,
            warnings,
            explicit,
            service_params: IndexMap::new(),
            user_params: HashSet::new(),
        };
        cfg.register_service_params();
        cfg.register_user_params();
        Ok(cfg)
    }

    /// A configuration from main.cf text alone (tests, `postfix check` of one file).
    pub fn from_main(main: maincf::MainCf, master: MasterCf) -> Self {
        let explicit = main
            .settings
            .values()
            .map(|s| (s.name.clone(), s.value.clone()))
            .collect();
        let mut cfg = PostfixConfig {
            config_dir: main
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            warnings: main.warnings.clone(),
            main,
            master,
            explicit,
            service_params: IndexMap::new(),
            user_params: HashSet::new(),
        };
        cfg.register_service_params();
        cfg.register_user_params();
        cfg
    }

    fn register_service_params(&mut self) {
        for (name, default) in service_parameters(&self.master) {
            if params::lookup(&name).is_none() {
                self.service_params.entry(name).or_insert(default);
            }
        }
    }

    fn register_user_params(&mut self) {
        let mut names: HashSet<String> = HashSet::new();
        // Names referenced by built-in defaults (raw parameters are not scanned: their
        // `$names` are per-message attributes such as `$rbl_code`). This is how the old
        // names of renamed parameters (`postscreen_blacklist_action`) stay known.
        for p in params::all() {
            if !params::RAW.contains(&p.name) {
                names.extend(expand::referenced_names(p.default));
            }
        }
        for v in self.explicit.values() {
            names.extend(expand::referenced_names(v));
        }
        for s in &self.master.services {
            for a in &s.args {
                names.extend(expand::referenced_names(a));
            }
        }
        if let Some(classes) = self.raw("smtpd_restriction_classes") {
            for c in classes
                .split(|ch: char| ch.is_ascii_whitespace() || ch == ',')
                .filter(|w| !w.is_empty())
            {
                names.insert(c.to_string());
            }
        }
        names.retain(|n| {
            params::lookup(n).is_none()
                && !params::LEGACY.contains(&n.as_str())
                && !self.service_params.contains_key(n)
        });
        self.user_params = names;
    }

    /// Is `name` a parameter Postfix knows (built-in, service or user-defined)?
    pub fn is_known(&self, name: &str) -> bool {
        params::lookup(name).is_some()
            || params::LEGACY.contains(&name)
            || self.service_params.contains_key(name)
            || self.user_params.contains(name)
    }

    /// Is `name` defined at all (explicitly or with a default)?
    pub fn is_defined(&self, name: &str) -> bool {
        self.explicit.contains_key(name)
            || params::lookup(name).is_some()
            || params::LEGACY.contains(&name)
            || self.service_params.contains_key(name)
    }

    /// The explicit setting of `name` (main.cf, `-c`, `-o`), unexpanded.
    pub fn explicit(&self, name: &str) -> Option<&str> {
        self.explicit.get(name).map(String::as_str)
    }

    /// Names set explicitly, in file order.
    pub fn explicit_names(&self) -> impl Iterator<Item = &str> {
        self.explicit.keys().map(String::as_str)
    }

    /// The default of `name` as `postconf -d` prints it (host-derived ones computed).
    pub fn default_raw(&self, name: &str) -> Option<String> {
        match name {
            "myhostname" => Some(params::default_myhostname(None)),
            "mydomain" => Some(params::default_mydomain(&params::default_myhostname(None))),
            "mynetworks" => Some(params::default_mynetworks(
                &self.default_expanded("mynetworks_style"),
                &self.default_expanded("inet_protocols"),
            )),
            "process_id" => Some(std::process::id().to_string()),
            _ => params::lookup(name)
                .map(|p| p.default.to_string())
                .or_else(|| self.service_params.get(name).cloned())
                .or_else(|| {
                    // Legacy and user-defined parameters exist with an empty value.
                    (params::LEGACY.contains(&name) || self.user_params.contains(name))
                        .then(String::new)
                }),
        }
    }

    /// A default expanded in the default-only context (for `postconf -d` derived values).
    fn default_expanded(&self, name: &str) -> String {
        let lookup = |n: &str, _m: Mode| -> Option<String> {
            match n {
                "myhostname" | "mydomain" | "mynetworks" | "process_id" => None,
                _ => params::lookup(n).map(|p| p.default.to_string()),
            }
        };
        params::lookup(name)
            .map(|p| expand::expand(p.default, &lookup, true).value)
            .unwrap_or_default()
    }

    /// The effective raw (unexpanded) value of `name`: explicit setting, else default.
    pub fn raw(&self, name: &str) -> Option<String> {
        if let Some(v) = self.explicit.get(name)
            && !params::READ_ONLY.contains(&name)
        {
            return Some(v.clone());
        }
        match name {
            // Host-derived defaults follow the explicit settings they depend on.
            "myhostname" => {
                let dom = self.explicit.get("mydomain").map(|d| self.expand(d).value);
                Some(params::default_myhostname(dom.as_deref()))
            }
            "mydomain" => Some(params::default_mydomain(&self.get("myhostname")?)),
            "mynetworks" => Some(params::default_mynetworks(
                &self.get("mynetworks_style").unwrap_or_default(),
                &self.get("inet_protocols").unwrap_or_default(),
            )),
            _ => self.default_raw(name),
        }
    }

    /// Expand a value in this configuration, recursively (as `postconf -x` does).
    pub fn expand(&self, value: &str) -> expand::Expansion {
        let lookup = |n: &str, _m: Mode| self.raw(n);
        expand::expand(value, &lookup, true)
    }

    /// The effective, expanded value of `name` (what a service uses).
    pub fn get(&self, name: &str) -> Option<String> {
        let raw = self.raw(name)?;
        Some(self.expand(&raw).value)
    }

    /// The effective value as a boolean (`yes`/`no`).
    pub fn get_bool(&self, name: &str) -> Option<bool> {
        match self.get(name)?.trim() {
            "yes" | "Yes" | "YES" | "true" => Some(true),
            _ => Some(false),
        }
    }

    /// All parameter names postconf shows, sorted: built-in, service and user-defined ones
    /// that have a value.
    pub fn all_names(&self) -> Vec<String> {
        let mut v: Vec<String> = params::all().iter().map(|p| p.name.to_string()).collect();
        v.extend(self.service_params.keys().cloned());
        v.extend(
            self.user_params
                .iter()
                .filter(|n| self.explicit.contains_key(*n))
                .cloned(),
        );
        v.sort();
        v.dedup();
        v
    }

    /// Names `postconf -d` shows: built-in and service parameters.
    pub fn default_names(&self) -> Vec<String> {
        let mut v: Vec<String> = params::all().iter().map(|p| p.name.to_string()).collect();
        v.extend(self.service_params.keys().cloned());
        v.sort();
        v.dedup();
        v
    }

    /// Warnings postconf prints when it reads the files: `unused parameter` for main.cf and
    /// master.cf names that no class knows, `undefined parameter` for `$name` references
    /// that nothing defines. Each once, in file order.
    pub fn usage_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let main_path = self.config_dir.join("main.cf");
        let master_path = self.config_dir.join("master.cf");
        let mut seen_undef: HashSet<String> = HashSet::new();
        for (name, value) in &self.explicit {
            for r in expand::referenced_names(value) {
                if !self.is_defined(&r) && seen_undef.insert(r.clone()) {
                    out.push(format!("{}: undefined parameter: {r}", main_path.display()));
                }
            }
            let _ = name;
        }
        for s in &self.master.services {
            for (_, v) in s.overrides() {
                for r in expand::referenced_names(&v) {
                    if !self.is_defined(&r) && seen_undef.insert(r.clone()) {
                        out.push(format!(
                            "{}: undefined parameter: {r}",
                            master_path.display()
                        ));
                    }
                }
            }
        }
        // Database client configuration files named by absolute path (postconf_dbms.c).
        let mut seen_db: HashSet<String> = HashSet::new();
        let master_values = self
            .master
            .services
            .iter()
            .flat_map(|s| s.overrides().into_iter().map(|(_, v)| v));
        let main_values = self
            .explicit
            .iter()
            .filter(|(n, _)| self.is_known(n))
            .map(|(_, v)| v.clone());
        for v in main_values.chain(master_values) {
            for tok in v.split(|c: char| c.is_ascii_whitespace() || c == ',') {
                let mut t = tok;
                while let Some(r) = t.strip_prefix("proxy:") {
                    t = r;
                }
                let Some((kind, path)) = t.split_once(':') else {
                    continue;
                };
                if !DBMS_TYPES.contains(&kind) || !path.starts_with('/') {
                    continue;
                }
                if seen_db.insert(path.to_string())
                    && let Err(e) = std::fs::File::open(path)
                {
                    out.push(format!(
                        "open \"{kind}\" configuration \"{path}\": {}",
                        super::error::strerror(&e)
                    ));
                }
            }
        }
        for (name, value) in &self.explicit {
            if params::READ_ONLY.contains(&name.as_str()) {
                out.push(format!(
                    "{}: read-only parameter assignment: {name}={value}",
                    main_path.display()
                ));
            } else if !self.is_known(name) {
                out.push(format!(
                    "{}: unused parameter: {name}={value}",
                    main_path.display()
                ));
            }
        }
        for s in &self.master.services {
            for (n, v) in s.overrides() {
                if !self.is_known(&n) {
                    out.push(format!(
                        "{}: unused parameter: {n}={v}",
                        master_path.display()
                    ));
                }
            }
        }
        out
    }
}

/// Database client map types whose configuration file postconf reads (postconf_dbms.c).
const DBMS_TYPES: &[&str] = &["ldap", "mysql", "pgsql", "sqlite", "memcache"];

/// The commands whose master.cf services get per-transport parameters (qmgr's delivery
/// agents): `smtp`, `lmtp`, `local`, `virtual`, `error`, `pipe` (the last also gets
/// `NAME_time_limit`). Observed: `discard` gets none.
const DELIVERY_COMMANDS: &[&str] = &["smtp", "lmtp", "local", "virtual", "error", "pipe"];

/// Per-service parameter names and defaults registered from master.cf.
pub fn service_parameters(master: &MasterCf) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in &master.services {
        if s.kind != "unix" || !DELIVERY_COMMANDS.contains(&s.command.as_str()) {
            continue;
        }
        for (suffix, default) in params::TRANSPORT_PARAM_SUFFIXES {
            out.push((format!("{}_{suffix}", s.name), default.to_string()));
        }
        if s.command == "pipe" {
            out.push((
                format!("{}_time_limit", s.name),
                "$command_time_limit".into(),
            ));
        }
    }
    out
}

impl PostfixConfig {
    /// Expand a value using defaults only (`postconf -dx`).
    pub fn expand_default(&self, value: &str) -> expand::Expansion {
        let lookup = |n: &str, _m: Mode| self.default_raw(n);
        expand::expand(value, &lookup, true)
    }
}

impl PostfixConfig {
    /// This configuration with master.cf `-o name=value` overrides applied, as a service
    /// started from that master.cf line sees it.
    pub fn with_overrides(&self, overrides: &[(String, String)]) -> PostfixConfig {
        let mut c = self.clone();
        for (n, v) in overrides {
            c.explicit.insert(n.clone(), v.clone());
        }
        c
    }
}
