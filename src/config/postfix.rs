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
    /// Postfix's name classes over main.cf and master.cf (`mastercf::check_parameters`).
    check: mastercf::ParamCheck,
}

/// Options for loading, as postconf's command line gives them.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `-c DIR`: also sets `config_directory` explicitly, as Postfix does.
    pub config_dir: Option<PathBuf>,
    /// `-o name=value` overrides.
    pub overrides: Vec<(String, String)>,
}

/// Run `f` to derive `name`'s default, unless this thread is already deriving it (then
/// `None`: the caller takes the name as empty, breaking the cycle).
fn deriving<T>(name: &'static str, f: impl FnOnce() -> T) -> Option<T> {
    thread_local! {
        static ACTIVE: std::cell::RefCell<Vec<&'static str>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    if ACTIVE.with(|a| a.borrow().contains(&name)) {
        return None;
    }
    ACTIVE.with(|a| a.borrow_mut().push(name));
    let r = f();
    ACTIVE.with(|a| a.borrow_mut().pop());
    Some(r)
}

/// Load main.cf and master.cf from `config_dir` (the default directory when `None`), as
/// the master and every daemon it starts do; the error is the text to log.
pub fn load_config(config_dir: Option<&Path>) -> Result<PostfixConfig, String> {
    PostfixConfig::load(&LoadOptions {
        config_dir: config_dir.map(Path::to_path_buf),
        overrides: Vec::new(),
    })
    .map_err(|e| e.to_string())
}

impl PostfixConfig {
    /// Load `DIR/main.cf` and `DIR/master.cf`. DIR is `-c`, else `$MAIL_CONFIG`, else
    /// `/etc/postfix`. A missing main.cf is fatal; a missing master.cf is a warning.
    pub fn load(opts: &LoadOptions) -> Result<Self, ConfigError> {
        Self::load_with(opts, true)
    }

    /// The configuration `postconf -d` sees: master.cf (for its service parameters) but
    /// not main.cf, which need not exist or be readable (as Postfix's postconf does not
    /// read it with `-d`).
    pub fn load_defaults_only(opts: &LoadOptions) -> Result<Self, ConfigError> {
        Self::load_with(opts, false)
    }

    fn load_with(opts: &LoadOptions, read_main: bool) -> Result<Self, ConfigError> {
        let dir = opts
            .config_dir
            .clone()
            .or_else(|| std::env::var_os("MAIL_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR));
        let main = if read_main {
            maincf::read(&dir.join("main.cf"))?
        } else {
            maincf::MainCf {
                path: dir.join("main.cf"),
                ..Default::default()
            }
        };
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
            check: mastercf::ParamCheck::default(),
        };
        cfg.register_params();
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
            check: mastercf::ParamCheck::default(),
        };
        cfg.register_params();
        cfg
    }

    /// Service-defined and user-defined parameter names, as postconf registers them.
    fn register_params(&mut self) {
        for (name, default) in mastercf::service_parameters(&self.master) {
            self.service_params.entry(name).or_insert(default);
        }
        let check = {
            let expand = |v: &str, local: Option<&IndexMap<String, String>>| match local {
                None => self.expand(v).value,
                Some(l) => {
                    let lookup = |n: &str, _m: Mode| l.get(n).cloned().or_else(|| self.raw(n));
                    expand::expand(v, &lookup, true).value
                }
            };
            mastercf::check_parameters(&self.main, &self.master, &self.config_dir, &expand)
        };
        self.check = check;
    }

    /// Is `name` a parameter Postfix knows (built-in, service or user-defined)?
    pub fn is_known(&self, name: &str) -> bool {
        params::LEGACY.contains(&name) || !self.check.main_name_unused(name)
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
                &self.default_expanded("inet_interfaces"),
            )),
            "process_id" => Some(std::process::id().to_string()),
            _ => params::lookup(name)
                .map(|p| p.default.to_string())
                .or_else(|| self.service_params.get(name).cloned())
                .or_else(|| {
                    // Legacy and user-defined parameters exist with an empty value.
                    (params::LEGACY.contains(&name) || self.check.used_main.contains(name))
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
            // Each derives from the other: `myhostname = $mydomain` recursed until the
            // stack overflowed (found by fuzzing). Inside its own derivation a name is
            // empty, which gives what Postfix 3.7's postconf prints (`myhostname =
            // x.$mydomain` → mydomain empty, myhostname `x.`; `myhostname = $mydomain` →
            // mydomain `localdomain`; `mydomain = $myhostname` → myhostname `HOST.`).
            "myhostname" => Some(
                deriving("myhostname", || {
                    let dom = self.explicit.get("mydomain").map(|d| self.expand(d).value);
                    params::default_myhostname(dom.as_deref())
                })
                .unwrap_or_default(),
            ),
            "mydomain" => deriving("mydomain", || {
                self.get("myhostname").map(|h| params::default_mydomain(&h))
            })
            .unwrap_or(Some(String::new())),
            "mynetworks" => Some(params::default_mynetworks(
                &self.get("mynetworks_style").unwrap_or_default(),
                &self.get("inet_protocols").unwrap_or_default(),
                &self.get("inet_interfaces").unwrap_or_default(),
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

    /// `myorigin` as Postfix uses it when built with `MYORIGIN_FROM_FILE`, as Debian
    /// builds it (Debian's main.cf says `myorigin = /etc/mailname`): a value that starts
    /// with `/` names a file whose first line, without leading and trailing white space,
    /// is the domain (mail_params.c, `read_param_from_file`). `postconf` still shows the
    /// file name. XXX Postfix stops with `myorigin file FILE is empty` or `FILE: reason`;
    /// here an empty or unreadable file leaves the value as it is.
    pub fn myorigin(&self) -> Option<String> {
        let v = self.get("myorigin")?;
        if !v.starts_with('/') {
            return Some(v);
        }
        let line = std::fs::read_to_string(&v)
            .ok()
            .and_then(|t| t.lines().next().map(|l| l.trim().to_string()))
            .unwrap_or_default();
        Some(if line.is_empty() { v } else { line })
    }

    /// The effective value as a boolean (`yes`/`no`).
    pub fn get_bool(&self, name: &str) -> Option<bool> {
        match self.get(name)?.trim() {
            "yes" | "Yes" | "YES" | "true" => Some(true),
            _ => Some(false),
        }
    }

    /// All parameter names postconf shows, sorted: built-in, service and user-defined ones
    /// that have a value, and legacy ones (`fallback_relay`) set in main.cf or with a
    /// master.cf `-o` (`pcf_scan_user_parameter_namespace()` relabels a legacy parameter it
    /// meets in any name space as user-defined, so it is printed, with its global value).
    pub fn all_names(&self) -> Vec<String> {
        let mut v: Vec<String> = params::all().iter().map(|p| p.name.to_string()).collect();
        v.extend(self.service_params.keys().cloned());
        for name in params::LEGACY {
            if self.explicit.contains_key(*name)
                || self
                    .master
                    .services
                    .iter()
                    .any(|s| s.params().contains_key(*name))
            {
                v.push(name.to_string());
            }
        }
        v.extend(
            self.check
                .used_main
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

    /// Warnings postconf prints when it reads the files: `undefined parameter` for `$name`
    /// references that nothing defines, the database-configuration warnings, `read-only
    /// parameter assignment`, and `unused parameter` for main.cf (and `-o`) names and
    /// master.cf `-o` names that no class knows.
    pub fn usage_warnings(&self) -> Vec<String> {
        let mut out = self.check.undefined.clone();
        let main_path = self.config_dir.join("main.cf");
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
        out.extend(self.check.unused_master.iter().cloned());
        out
    }
}

impl PostfixConfig {
    /// What Postfix's postconf does to every main.cf and master.cf `-o` value before it
    /// shows anything (`pcf_register_user_parameters()`): each value is scanned for
    /// `$name` (a syntax error warns, whatever the parameter), and the value of every
    /// built-in or service-defined parameter is expanded in full (the legacy database
    /// scan, `pcf_register_dbms_parameters()`), where a syntax error or a reference chain
    /// deeper than 100 is fatal. Read-only and raw parameters are skipped.
    ///
    /// Between the master.cf and the main.cf values, the defaults are scanned: computing
    /// the `mynetworks` default (when main.cf does not set it) checks `inet_protocols`
    /// (`pcf_mynetworks()` → `inet_proto_init()`).
    ///
    /// Returns the scan warnings met, and `Err` with the warnings of the value that
    /// failed and the fatal message (postconf then stops with `fatal: macro processing
    /// error` or `fatal: unknown inet_protocols value …` and prints no parameter).
    pub fn macro_check(&self) -> Result<Vec<String>, (Vec<String>, String)> {
        let mut warnings = Vec::new();
        let builtin = |n: &str| params::lookup(n).is_some() || self.service_params.contains_key(n);
        for svc in &self.master.services {
            let local = svc.params();
            for (n, v) in &local {
                if params::READ_ONLY.contains(&n.as_str())
                    || (builtin(n) && params::RAW.contains(&n.as_str()))
                {
                    continue;
                }
                warnings.extend(expand::scan(v).1);
                if builtin(n) {
                    let lookup =
                        |name: &str, _m: Mode| local.get(name).cloned().or_else(|| self.raw(name));
                    let e = expand::expand(v, &lookup, true);
                    if e.error {
                        warnings.extend(e.warnings);
                        return Err((warnings, "macro processing error".into()));
                    }
                }
            }
        }
        if !self.explicit.contains_key("mynetworks")
            && let Err(f) = self.check_inet_protocols()
        {
            return Err((warnings, f));
        }
        for (n, v) in &self.explicit {
            if params::READ_ONLY.contains(&n.as_str())
                || (builtin(n) && params::RAW.contains(&n.as_str()))
            {
                continue;
            }
            warnings.extend(expand::scan(v).1);
            if builtin(n) {
                let e = self.expand(v);
                if e.error {
                    warnings.extend(e.warnings);
                    return Err((warnings, "macro processing error".into()));
                }
            }
        }
        Ok(warnings)
    }

    /// Postfix `inet_proto_init()` on `inet_protocols` as `pcf_mynetworks()` reads it: the
    /// main.cf value expanded with main.cf settings only (`mail_conf_lookup_eval()`), else the
    /// default; every word (separated by commas or white space) must be `all`, `ipv4` or
    /// `ipv6`, with that case (`name_mask()`).
    fn check_inet_protocols(&self) -> Result<(), String> {
        let value = match self.explicit.get("inet_protocols") {
            Some(v) => {
                let lookup = |n: &str, _m: Mode| self.explicit.get(n).cloned();
                expand::expand(v, &lookup, true).value
            }
            None => return Ok(()),
        };
        for w in value
            .split([',', ' ', '\t', '\r', '\n'])
            .filter(|w| !w.is_empty())
        {
            if !matches!(w, "all" | "ipv4" | "ipv6") {
                return Err(format!(
                    "unknown inet_protocols value \"{w}\" in \"{value}\""
                ));
            }
        }
        Ok(())
    }

    /// Expand a value using defaults only (`postconf -dx`).
    pub fn expand_default(&self, value: &str) -> expand::Expansion {
        let lookup = |n: &str, _m: Mode| self.default_raw(n);
        expand::expand(value, &lookup, true)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(main_cf: &str) -> (tempfile::TempDir, PostfixConfig) {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("main.cf"), main_cf).expect("main.cf");
        std::fs::write(d.path().join("master.cf"), "").expect("master.cf");
        let cfg = PostfixConfig::load(&LoadOptions {
            config_dir: Some(d.path().to_path_buf()),
            overrides: Vec::new(),
        })
        .expect("load");
        (d, cfg)
    }

    #[test]
    fn myorigin_from_a_file_as_debian_builds_postfix() {
        // Debian's main.cf: myorigin = /etc/mailname; the real Postfix (MYORIGIN_FROM_FILE)
        // addresses bare names to the file's first line, postconf shows the file name.
        let d = tempfile::tempdir().expect("tempdir");
        let mailname = d.path().join("mailname");
        std::fs::write(&mailname, "  master.planetnet.net \nignored\n").expect("mailname");
        let (_c, cfg) = load(&format!("myorigin = {}\n", mailname.display()));
        assert_eq!(cfg.myorigin().as_deref(), Some("master.planetnet.net"));
        assert_eq!(cfg.get("myorigin"), Some(mailname.display().to_string()));
        let (_c, cfg) = load("myhostname = mx.example.org\n");
        assert_eq!(cfg.myorigin().as_deref(), Some("mx.example.org"));
        let (_c, cfg) = load("myorigin = /nonexistent/mailname\n");
        assert_eq!(cfg.myorigin().as_deref(), Some("/nonexistent/mailname"));
    }
}
