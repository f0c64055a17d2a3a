//! `postfix check`: validate the whole configuration an admin hands to Postern — `main.cf`,
//! `master.cf`, the Cyrus SASL `smtpd.conf` Postfix would use, and `dovecot.conf` — and
//! report every problem with file and line, instead of stopping at the first one.
//!
//! Output: one line per finding on stderr, `postfix: warning: …` for things Postern runs
//! with (as Postfix would), `postfix: error: …` for things that stop a service (Postfix
//! stops at the first with `fatal:`), and `postfix: …` information lines naming the SASL and
//! Dovecot files used. Exit status 1 when there was an error, else 0.
//!
//! Checks: main.cf syntax (every bad line, not only the first), `unused`/`undefined`
//! parameters, `$name` expansion errors, boolean/number/time values of built-in parameters,
//! restriction names in `smtpd_*_restrictions`; master.cf syntax and fields; the SASL file
//! search path (which file is used) and its syntax; dovecot.conf syntax, unknown settings
//! and the notes on keys translated from 0.99/1.x; the queue and data directories. What the
//! real `postfix check` refuses before a start is refused with its words: `maillog_file`
//! outside `maillog_file_prefixes`, a master.cf without the `postlog` service while
//! `maillog_file` is set (`compat-fixtures/postfix-check/`). Beyond Postfix: a SASL file
//! without `saslauthd` among its `pwcheck_method`s (Postern's smtpd serves no other), and
//! an unused parameter's line and the built-in name it probably misspells. postfix-script's
//! `check-warn` ownership and permission checks ([`check_warn`], also run by `postfix
//! start`): `postfix/postfix-script: warning: group or other writable: …/./main.cf`.
//!
//! The Dovecot file is `$POSTERN_DOVECOT_CONFIG` (set but empty: no Dovecot check), else the
//! one `dovecot` reads ([`dovecot::default_conf_path`]: `/etc/dovecot.conf` when it exists,
//! else `/etc/dovecot/dovecot.conf`).
//!
//! A column-0 line without `=` after a list parameter (the tutorial's wrapped
//! `smtpd_recipient_restrictions`) is taken as its continuation, as Postern's `postconf`
//! and master take it: the same warning (file and line), not an error.

use std::path::{Path, PathBuf};

use crate::config::postfix::{LoadOptions, PostfixConfig};
use crate::config::{dovecot, maincf, mastercf, params, sasl, text};

struct Report {
    errors: usize,
}

impl Report {
    fn error(&mut self, msg: impl std::fmt::Display) {
        self.errors += 1;
        eprintln!("postfix: error: {msg}");
    }
    fn warning(&self, msg: impl std::fmt::Display) {
        eprintln!("postfix: warning: {msg}");
    }
    fn info(&self, msg: impl std::fmt::Display) {
        eprintln!("postfix: {msg}");
    }
}

/// Every syntax error of main.cf (the parser proper stops at the first). Returns the file
/// with the bad logical lines commented out, so the other checks can still run.
fn main_cf_syntax(path: &Path, r: &mut Report) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let (txt, _) = text::decode(&bytes);
    let lines = maincf::physical_lines(&txt, path).ok()?;
    let mut cur: Option<(usize, String)> = None;
    let mut logical = Vec::new();
    for pl in &lines {
        match pl.kind {
            maincf::LineKind::Comment | maincf::LineKind::Blank => {}
            maincf::LineKind::Continuation => match cur.as_mut() {
                Some((_, t)) => t.push_str(pl.text),
                None => cur = Some((pl.number, pl.text.to_string())),
            },
            maincf::LineKind::Text => {
                if let Some(c) = cur.take() {
                    logical.push(c);
                }
                cur = Some((pl.number, pl.text.to_string()));
            }
        }
    }
    logical.extend(cur);
    // Run each logical line through the real parser: it applies the tutorial's
    // continuation rule too, which needs the (good) line before.
    let mut prev: Option<&str> = None;
    let mut bad: Vec<usize> = Vec::new();
    for (n, t) in &logical {
        if t.starts_with(|c: char| c.is_ascii_whitespace()) {
            prev = None;
            continue;
        }
        let probe = match prev {
            Some(p) => format!("{p}\n{t}\n"),
            None => format!("{t}\n"),
        };
        if let Err(e) = maincf::parse(&probe, path) {
            // Re-number: the probe's line 2 (or 1) is line n of the file.
            let msg = e.to_string();
            let msg = msg
                .replacen(", line 2:", &format!(", line {n}:"), 1)
                .replacen(", line 1:", &format!(", line {n}:"), 1);
            r.error(msg);
            bad.push(*n);
            prev = None;
        } else if t.contains('=') {
            prev = Some(t);
        }
        // Else a column-0 line taken as a continuation of `prev` (the tutorial's rule,
        // warned about by the full parse below): the parameter it continues stays the
        // line the next one is checked after.
    }
    // Comment out each bad logical line (its first line and its continuations).
    let mut out = String::with_capacity(txt.len());
    let mut in_bad = false;
    for pl in &lines {
        match pl.kind {
            maincf::LineKind::Text => in_bad = bad.contains(&pl.number),
            maincf::LineKind::Continuation => {}
            _ => {}
        }
        if in_bad
            && matches!(
                pl.kind,
                maincf::LineKind::Text | maincf::LineKind::Continuation
            )
        {
            out.push('#');
        }
        out.push_str(pl.raw);
        if !pl.raw.ends_with('\n') {
            out.push('\n');
        }
    }
    Some(out)
}

fn check_values(cfg: &PostfixConfig, r: &mut Report) {
    let main_path = cfg.config_dir.join("main.cf");
    for s in cfg.main.settings.values() {
        let at = format!("{}, line {}", main_path.display(), s.line);
        let e = cfg.expand(&s.value);
        if e.error {
            for w in &e.warnings {
                r.error(format!("{at}: {}: {w}", s.name));
            }
            continue;
        }
        let Some(def) = params::lookup(&s.name) else {
            continue;
        };
        let v = e.value.trim();
        match def.kind {
            params::ParamType::Bool => {
                if !matches!(
                    v.to_ascii_lowercase().as_str(),
                    "yes" | "no" | "true" | "false"
                ) {
                    r.error(format!("{at}: bad boolean configuration: {} = {v}", s.name));
                }
            }
            params::ParamType::Int => {
                if v.parse::<i64>().is_err() {
                    r.error(format!(
                        "{at}: bad numerical configuration: {} = {v}",
                        s.name
                    ));
                }
            }
            params::ParamType::Time => {
                let ok = v
                    .strip_suffix(['s', 'm', 'h', 'd', 'w'])
                    .unwrap_or(v)
                    .parse::<u64>()
                    .is_ok();
                if !ok {
                    r.error(format!("{at}: bad time value: {} = {v}", s.name));
                }
            }
            params::ParamType::Str => {}
        }
        if s.name.starts_with("smtpd_") && s.name.ends_with("_restrictions") {
            let classes: Vec<String> = cfg
                .get("smtpd_restriction_classes")
                .map(|c| crate::config::values::list(&c))
                .unwrap_or_default();
            let words = crate::config::values::list(v);
            let mut skip_arg = false;
            for w in &words {
                if skip_arg {
                    skip_arg = false;
                    continue;
                }
                let takes_arg = w.starts_with("check_") && w.ends_with("_access")
                    || w.starts_with("reject_rbl")
                    || w.starts_with("reject_rhsbl")
                    || w.starts_with("permit_dnswl")
                    || w.starts_with("permit_rhswl")
                    || w == "check_policy_service"
                    || w == "sleep";
                if takes_arg {
                    skip_arg = true;
                }
                let known = maincf::RESTRICTION_NAMES.contains(&w.as_str())
                    || classes.contains(w)
                    || (w.contains(':') && !w.starts_with(':'));
                if !known {
                    r.error(format!("{at}: unknown smtpd restriction: \"{w}\""));
                }
            }
        }
    }
}

/// `NAME=VALUE` of an unused-parameter warning, with the main.cf line and the nearest
/// known parameter name when one is close (a typo such as `mydestinaton`).
fn unused_with_line(cfg: &PostfixConfig, main_path: &Path, name_value: &str) -> String {
    let name = name_value.split('=').next().unwrap_or(name_value);
    let line = cfg.main.settings.get(name).map(|s| s.line);
    let mut msg = match line {
        Some(n) => format!(
            "{}, line {n}: unused parameter: {name_value}",
            main_path.display()
        ),
        None => format!("{}: unused parameter: {name_value}", main_path.display()),
    };
    if let Some(near) = nearest_parameter(name) {
        msg.push_str(&format!(" (did you mean \"{near}\"?)"));
    }
    msg
}

/// The built-in parameter closest to `name` by edit distance, when at most 2 edits (and
/// fewer than a third of the name) away.
fn nearest_parameter(name: &str) -> Option<&'static str> {
    let limit = (name.len() / 3).clamp(1, 2);
    params::all()
        .iter()
        .map(|p| (edit_distance(name, p.name), p.name))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, n)| n)
}

/// Levenshtein distance over bytes (parameter names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// What Postfix refuses before it starts when `maillog_file` is set: a path outside
/// `maillog_file_prefixes` (`postfix: fatal: maillog_file value '…' does not match any
/// prefix in maillog_file_prefixes`, from maillog_client.c, for every postfix command) and a
/// master.cf without the `postlog` unix-dgram service (postfix-script's check: `missing
/// 'postlog' service in master.cf - run 'postfix upgrade-configuration'`).
fn check_maillog(cfg: &PostfixConfig, r: &mut Report) {
    let file = cfg.get("maillog_file").unwrap_or_default();
    let file = file.trim();
    if file.is_empty() {
        return;
    }
    if let Err(e) = crate::log::maillog_prefix_ok(cfg, file) {
        r.error(e);
    }
    if !cfg
        .master
        .services
        .iter()
        .any(|s| s.name == "postlog" && s.kind == "unix-dgram")
    {
        r.error("missing 'postlog' service in master.cf - run 'postfix upgrade-configuration'");
    }
}

/// postfix-script's `check-warn` (run by `postfix check` and `postfix start`), the
/// ownership and permission part: `$queue_directory/.` and `pid`, the `$config_directory`
/// tree (files reached through symlinks too, as `find -L`; a symlink whose target has a
/// `/`) and the `$data_directory` tree. The messages in postfix-script's words and order
/// (one `find` pass per check, in directory order), without the `warning: ` prefix:
/// `group or other writable: /etc/postfix/./main.cf`, `not owned by root: …`, `not owned by
/// postfix: …`, `symlink leaves directory: …`. The ownership checks need root (run
/// otherwise, every file is the invoking user's).
pub fn check_warn(cfg: &PostfixConfig) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let root = nix::unistd::geteuid().is_root();
    let mut out = Vec::new();
    let writable = |mode: u32| mode & 0o022 != 0;
    let dot = |p: &str| PathBuf::from(p.trim()).join(".");
    // find DIR: DIR itself, then each entry depth first, in readdir order.
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        out.push(dir.to_path_buf());
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&p, out),
                _ => out.push(p),
            }
        }
    }
    let queue = cfg.get("queue_directory").unwrap_or_default();
    let qtop = [dot(&queue), PathBuf::from(queue.trim()).join("pid")];
    let tree = |p: PathBuf| {
        let mut v = Vec::new();
        if p.exists() {
            walk(&p, &mut v);
        }
        v
    };
    let etc = tree(cfg.config_dir.join("."));
    let owner = cfg.get("mail_owner").unwrap_or_else(|| "postfix".into());
    let owner = owner.trim().to_string();
    let owner_uid = nix::unistd::User::from_name(&owner)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw());
    let data = tree(dot(&cfg.get("data_directory").unwrap_or_default()));
    let show = |p: &Path| p.display().to_string();
    for p in qtop.iter().filter(|p| p.exists()) {
        if root && std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() != 0) {
            out.push(format!("not owned by root: {}", show(p)));
        }
    }
    for p in qtop.iter() {
        if std::fs::symlink_metadata(p).is_ok_and(|m| writable(m.mode())) {
            out.push(format!("group or other writable: {}", show(p)));
        }
    }
    if root {
        for p in &etc {
            if std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() != 0) {
                out.push(format!("not owned by root: {}", show(p)));
            }
        }
    }
    for p in &etc {
        if std::fs::metadata(p).is_ok_and(|m| writable(m.mode())) {
            out.push(format!("group or other writable: {}", show(p)));
        }
    }
    for p in &etc {
        if let Ok(t) = std::fs::read_link(p)
            && t.to_string_lossy().contains('/')
        {
            out.push(format!("symlink leaves directory: {}", show(p)));
        }
    }
    if root && let Some(uid) = owner_uid {
        for p in &data {
            if std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() != uid) {
                out.push(format!("not owned by {owner}: {}", show(p)));
            }
        }
    }
    for p in &data {
        if std::fs::symlink_metadata(p).is_ok_and(|m| writable(m.mode())) {
            out.push(format!("group or other writable: {}", show(p)));
        }
    }
    out
}

/// The dovecot.conf to check: `$POSTERN_DOVECOT_CONFIG` (empty: none), else the system's.
fn default_dovecot_config() -> Option<PathBuf> {
    match std::env::var_os("POSTERN_DOVECOT_CONFIG") {
        Some(p) if p.is_empty() => None,
        Some(p) => Some(PathBuf::from(p)),
        None => Some(dovecot::default_conf_path()).filter(|p| p.exists()),
    }
}

pub fn run(config_dir: &Path) -> i32 {
    run_with(config_dir, default_dovecot_config().as_deref())
}

/// [`run`] with an explicit dovecot.conf (`None`: skip the Dovecot check).
pub fn run_with(config_dir: &Path, dovecot_conf: Option<&Path>) -> i32 {
    let mut r = Report { errors: 0 };
    let main_path = config_dir.join("main.cf");
    let sanitized = main_cf_syntax(&main_path, &mut r);
    let cfg = match PostfixConfig::load(&LoadOptions {
        config_dir: Some(config_dir.to_path_buf()),
        overrides: vec![],
    }) {
        Ok(c) => Some(c),
        Err(crate::config::ConfigError::AtLine { .. }) => {
            // Reported above: go on with the bad lines left out.
            let master = mastercf::read(&config_dir.join("master.cf")).unwrap_or_default();
            sanitized
                .and_then(|t| maincf::parse(&t, &main_path).ok())
                .map(|m| PostfixConfig::from_main(m, master))
        }
        Err(e) => {
            r.error(e);
            None
        }
    };
    if let Some(cfg) = &cfg {
        let unused_prefix = format!("{}: unused parameter: ", main_path.display());
        for w in cfg.warnings.iter().chain(cfg.usage_warnings().iter()) {
            match w.strip_prefix(&unused_prefix) {
                // Postfix's warning names neither the line nor what was meant; Postern
                // gives both.
                Some(nv) => r.warning(unused_with_line(cfg, &main_path, nv)),
                None => r.warning(w),
            }
        }
        check_values(cfg, &mut r);
        check_maillog(cfg, &mut r);
    }
    // master.cf: every entry, with Postfix's wording.
    let master_path = config_dir.join("master.cf");
    match std::fs::read(&master_path) {
        Ok(bytes) => {
            let (txt, _) = text::decode(&bytes);
            match mastercf::parse_detailed(&txt, &master_path) {
                Ok(m) => {
                    for w in &m.warnings {
                        r.warning(w);
                    }
                }
                Err(e) => r.error(e.postfix_text()),
            }
        }
        Err(e) => r.error(crate::config::ConfigError::open(&master_path, e)),
    }
    // Cyrus SASL: which file smtpd would use (none with `smtpd_sasl_type = dovecot`:
    // smtpd_sasl_path is then Dovecot's auth socket).
    let dovecot_sasl = cfg
        .as_ref()
        .is_some_and(|c| c.get("smtpd_sasl_type").as_deref().map(str::trim) == Some("dovecot"));
    if let Some(cfg) = cfg.as_ref().filter(|_| dovecot_sasl) {
        r.info(format!(
            "SASL: smtpd_sasl_type = dovecot, authentication server socket {}",
            cfg.get("smtpd_sasl_path").unwrap_or_default().trim()
        ));
    }
    if let Some(cfg) = cfg.as_ref().filter(|_| !dovecot_sasl) {
        let app = cfg.get("smtpd_sasl_path").unwrap_or_else(|| "smtpd".into());
        let search = sasl::find_app_config(
            &app,
            &cfg.get("cyrus_sasl_config_path").unwrap_or_default(),
            config_dir,
        );
        match (&search.found, &search.config) {
            (Some(f), Some(Ok(c))) => {
                r.info(format!("Cyrus SASL configuration: using {}", f.display()));
                let methods = c.pwcheck_method();
                for m in &methods {
                    if !matches!(
                        m.as_str(),
                        "saslauthd" | "auxprop" | "pwcheck" | "authdaemond" | "alwaystrue"
                    ) {
                        r.error(format!("{}: unknown pwcheck_method: {m}", f.display()));
                    }
                }
                // Postern's smtpd verifies passwords through saslauthd only: with no
                // saslauthd among the methods every AUTH would fail ("generic failure").
                if !methods.iter().any(|m| m == "saslauthd") {
                    let msg = format!(
                        "{}: pwcheck_method: {} is not supported by Postern (no auxprop/sasldb, pwcheck, authdaemond or alwaystrue): every AUTH would fail with \"generic failure\"; use pwcheck_method: saslauthd, or smtpd_sasl_type = dovecot",
                        f.display(),
                        methods.join(" ")
                    );
                    if cfg.get_bool("smtpd_sasl_auth_enable").unwrap_or(false) {
                        r.error(msg);
                    } else {
                        r.warning(msg);
                    }
                }
            }
            (Some(_), Some(Err(e))) => r.error(e),
            _ => {
                let tried: Vec<String> = search
                    .tried
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                if cfg.get_bool("smtpd_sasl_auth_enable").unwrap_or(false)
                    && cfg.get("smtpd_sasl_type").as_deref() == Some("cyrus")
                {
                    r.warning(format!(
                        "smtpd_sasl_auth_enable = yes but no Cyrus SASL file {app}.conf was found (tried {})",
                        tried.join(", ")
                    ));
                } else {
                    r.info(format!(
                        "Cyrus SASL configuration: none found (tried {})",
                        tried.join(", ")
                    ));
                }
            }
        }
    }
    if let Some(cfg) = &cfg {
        // As postfix-script's check-warn prints them on a terminal.
        let ident = crate::log::ident(cfg, "postfix-script");
        for w in check_warn(cfg) {
            eprintln!("{ident}: warning: {w}");
        }
        for (param, what) in [("queue_directory", "queue"), ("data_directory", "data")] {
            let d = PathBuf::from(cfg.get(param).unwrap_or_default());
            if !d.is_dir() {
                r.warning(format!(
                    "{what} directory {} ({param}) does not exist",
                    d.display()
                ));
            }
        }
    }
    // dovecot.conf of any era.
    let dovecot_path = dovecot_conf.map(Path::to_path_buf);
    if let Some(p) = dovecot_path {
        match dovecot::DovecotConf::load_lenient(&p) {
            Ok(d) => {
                r.info(format!(
                    "Dovecot configuration: using {} ({:?} syntax)",
                    p.display(),
                    d.era
                ));
                for w in &d.warnings {
                    r.warning(dovecot::engine::text_to_string(w));
                }
                for n in d.notes.iter().chain(d.era_defaults.iter()) {
                    r.warning(n);
                }
                if let Err(e) = d.check() {
                    r.error(e);
                }
            }
            Err(e) => r.error(e),
        }
    }
    if r.errors > 0 { 1 } else { 0 }
}
