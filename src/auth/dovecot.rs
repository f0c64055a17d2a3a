//! Dovecot's passdb and userdb backends and password schemes, as Dovecot 2.3 applies them
//! (`src/auth/passdb-*.c`, `userdb-*.c`, `password-scheme.c`), read from a loaded
//! `dovecot.conf` of any era through [`DovecotConf::passdbs`]/[`DovecotConf::userdbs`].
//!
//! Config read: `passdb { driver args }`, `userdb { driver args }`, `auth_username_format`
//! (default `%Lu`), `auth_failure_delay` (default 2 s), `auth_mechanisms` (default `plain`).
//!
//! * `passdb pam [session=…] [setcred=…] [failure_show_msg=…] [max_requests=N] [SERVICE]`:
//!   PAM service `SERVICE` (default `dovecot`; `*` or `%s` = the request's service,
//!   e.g. `imap`, `pop3`, `smtp`).
//! * `passdb shadow`, `passdb passwd`: the system entries ([`super::system`]).
//! * `passdb passwd-file [scheme=S] [username_format=F] FILE`: lines
//!   `user:password:uid:gid:gecos:home:shell:extra`; the password carries its scheme as
//!   `{SCHEME}` or uses `scheme=` (default `CRYPT`). `FILE` may hold `%u`, `%n`, `%d`.
//! * Schemes: `PLAIN`/`CLEAR`/`CLEARTEXT`; `CRYPT`, `DES-CRYPT`, `MD5-CRYPT` (`MD5`),
//!   `SHA256-CRYPT`, `SHA512-CRYPT`, `BLF-CRYPT` (through libxcrypt); `SHA`/`SHA1`,
//!   `SSHA`, `SHA256`, `SSHA256`, `SHA512`, `SSHA512` (base64, or hex with `.HEX` or when
//!   the length says so). Plaintext and digest comparisons are constant-time.
//! * `userdb passwd` (getpwnam), `userdb static` (`uid= gid= home= …`, `%` variables
//!   expanded), `userdb passwd-file` (the same file format).
//! * Chain: passdbs are tried in order; the first that accepts wins; an unknown user or a
//!   mismatch goes on to the next (Dovecot's default `result_failure = continue`).
//!
//! * Cache (`auth_cache_size`, `auth_cache_ttl`, `auth_cache_negative_ttl`; off at size
//!   0, Dovecot's default): [`AuthCache`], for passdb checks
//!   ([`DovecotAuth::verify_plain_cached`]) and userdb lookups
//!   ([`DovecotAuth::lookup_user_cached`]) alike, as Dovecot's one `passdb_cache`.
//!
//! Limits: no `{PLAIN-MD5}`/`{LDAP-MD5}`/`{SMD5}`/`{CRAM-MD5}`/`{DIGEST-MD5}`/`{PBKDF2}`/
//! `{ARGON2*}` schemes (they fail as unknown schemes, logged), no `passdb`
//! `deny`/`master`/`skip`/`result_*` settings, no `sql`/`ldap`/`checkpassword` drivers;
//! the userdb cache holds the chain's answer, not one entry per userdb, and is used only
//! when every userdb is cacheable ([`Userdb::cacheable`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

use super::{Outcome, ct_eq, system};
use crate::config::dovecot::{AuthDb, DovecotConf};

/// Where a request comes from: what `%` variables may name.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub service: String,
}

/// Expand Dovecot's `%` variables for `user`: `%u` user, `%n` local part, `%d` domain,
/// `%s` service, `%%`; long forms `%{user}`, `%{username}`, `%{domain}`, `%{service}`;
/// modifiers `L` (lower case) and `U` (upper case), e.g. `%Lu`, `%Ln@%d`.
pub fn expand(template: &str, user: &str, service: &str) -> String {
    let (local, domain) = match user.rfind('@') {
        Some(i) => (&user[..i], &user[i + 1..]),
        None => (user, ""),
    };
    let value = |key: &str| {
        Some(
            match key {
                "u" | "user" => user,
                "n" | "username" => local,
                "d" | "domain" => domain,
                "s" | "service" => service,
                _ => "",
            }
            .to_string(),
        )
    };
    crate::config::dovecot::var_expand::var_expand(template, value, |_| String::new())
}

/// Split a stored password into scheme and data: `{SHA512-CRYPT}$6$…` → (`SHA512-CRYPT`,
/// `$6$…`); without braces the `default_scheme` applies.
pub fn split_scheme<'a>(stored: &'a str, default_scheme: &'a str) -> (String, &'a str) {
    if let Some(rest) = stored.strip_prefix('{')
        && let Some(end) = rest.find('}')
    {
        return (rest[..end].to_ascii_uppercase(), &rest[end + 1..]);
    }
    (default_scheme.to_ascii_uppercase(), stored)
}

/// Check `password` against a stored password in scheme `scheme`. `Err` for an unknown
/// scheme or malformed data (logged by the caller; the request fails).
pub fn verify_scheme(scheme: &str, data: &str, password: &[u8]) -> Result<bool, String> {
    let (base, enc) = match scheme.rsplit_once('.') {
        Some((b, e)) => (b, Some(e)),
        None => (scheme, None),
    };
    let digest = |alg: &'static ring::digest::Algorithm, salted: bool| -> Result<bool, String> {
        let raw = decode_digest(data, enc, alg.output_len())?;
        if raw.len() < alg.output_len() || (!salted && raw.len() != alg.output_len()) {
            return Err(format!("{scheme}: stored password has the wrong length"));
        }
        let (want, salt) = raw.split_at(alg.output_len());
        let mut ctx = ring::digest::Context::new(alg);
        ctx.update(password);
        ctx.update(salt);
        Ok(ct_eq(ctx.finish().as_ref(), want))
    };
    match base {
        "PLAIN" | "CLEAR" | "CLEARTEXT" => Ok(ct_eq(data.as_bytes(), password)),
        "CRYPT" | "DES-CRYPT" | "MD5-CRYPT" | "MD5" | "SHA256-CRYPT" | "SHA512-CRYPT"
        | "BLF-CRYPT" => Ok(super::crypt::verify(password, data)),
        "SHA" | "SHA1" => digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, false),
        "SSHA" => digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, true),
        "SHA256" => digest(&ring::digest::SHA256, false),
        "SSHA256" => digest(&ring::digest::SHA256, true),
        "SHA512" => digest(&ring::digest::SHA512, false),
        "SSHA512" => digest(&ring::digest::SHA512, true),
        other => Err(format!("Unknown scheme {other}")),
    }
}

fn decode_digest(data: &str, enc: Option<&str>, len: usize) -> Result<Vec<u8>, String> {
    let hex = |s: &str| -> Option<Vec<u8>> {
        if !s.len().is_multiple_of(2) {
            return None;
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect()
    };
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).ok();
    let got = match enc.map(|e| e.to_ascii_uppercase()) {
        Some(e) if e == "HEX" => hex(data),
        Some(e) if e == "B64" || e == "BASE64" => b64(data),
        _ if data.len() == len * 2 => hex(data).or_else(|| b64(data)),
        _ => b64(data),
    };
    got.ok_or_else(|| "stored password is not valid base64 or hex".into())
}

/// One line of a passwd-file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswdFileEntry {
    pub user: String,
    pub password: String,
    pub uid: String,
    pub gid: String,
    pub home: String,
    pub extra: Vec<(String, String)>,
}

/// Find `user` in a passwd-file. Comments (`#`) and blank lines are skipped.
pub fn passwd_file_lookup(path: &Path, user: &str) -> Result<Option<PasswdFileEntry>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("passwd-file {}: {e}", path.display()))?;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.splitn(8, ':').collect();
        if f[0] != user {
            continue;
        }
        let get = |i: usize| f.get(i).copied().unwrap_or("").to_string();
        let extra = f
            .get(7)
            .map(|e| {
                e.split_whitespace()
                    .map(|kv| match kv.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (kv.to_string(), String::new()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Ok(Some(PasswdFileEntry {
            user: get(0),
            password: get(1),
            uid: get(2),
            gid: get(3),
            home: get(5),
            extra,
        }));
    }
    Ok(None)
}

/// A configured passdb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passdb {
    /// `None`: the request's service (`*`/`%s`).
    Pam {
        service: Option<String>,
    },
    Shadow,
    Passwd,
    PasswdFile {
        path: String,
        scheme: String,
        username_format: String,
    },
}

/// A configured userdb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Userdb {
    Passwd,
    Static {
        fields: Vec<(String, String)>,
    },
    PasswdFile {
        path: String,
        username_format: String,
    },
}

/// What a userdb says about a user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub user: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub home: Option<String>,
    /// Other fields (`mail=…`, `quota_rule=…`) as given.
    pub extra: Vec<(String, String)>,
}

fn split_args(args: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut kv = Vec::new();
    let mut words = Vec::new();
    for w in args.split_whitespace() {
        match w.split_once('=') {
            Some((k, v)) if !k.contains('/') => kv.push((k.to_string(), v.to_string())),
            _ => words.push(w.to_string()),
        }
    }
    (kv, words)
}

fn kv_get<'a>(kv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

impl Passdb {
    pub fn from_conf(db: &AuthDb) -> Result<Passdb, String> {
        let (kv, words) = split_args(&db.args);
        match db.driver.as_str() {
            "pam" => {
                let service = match words.last().map(String::as_str) {
                    None => Some("dovecot".to_string()),
                    Some("*") | Some("%s") | Some("%{service}") => None,
                    Some(s) => Some(s.to_string()),
                };
                Ok(Passdb::Pam { service })
            }
            "shadow" => Ok(Passdb::Shadow),
            "passwd" => Ok(Passdb::Passwd),
            "passwd-file" => {
                let path = words
                    .last()
                    .cloned()
                    .ok_or("passdb passwd-file: missing file name in args")?;
                Ok(Passdb::PasswdFile {
                    path,
                    scheme: kv_get(&kv, "scheme").unwrap_or("CRYPT").to_string(),
                    username_format: kv_get(&kv, "username_format").unwrap_or("%u").to_string(),
                })
            }
            other => Err(format!("Unknown passdb driver '{other}'")),
        }
    }

    /// Whether Dovecot caches this passdb's results: it needs a cache key, which
    /// `shadow` and `passwd` have (`%u`) and `pam` only with `cache_key=` (not supported
    /// here, so PAM results are not cached). `passwd-file` results are not cached either:
    /// the real Dovecot 2.3.19 answers from the file as it is now (re-read when it
    /// changes), with one file or one per user (`%u` in the path), cache or no cache
    /// (`tests/pop3.rs` `auth_cache_differential`).
    pub fn cacheable(&self) -> bool {
        match self {
            Passdb::Shadow | Passdb::Passwd => true,
            Passdb::PasswdFile { .. } | Passdb::Pam { .. } => false,
        }
    }

    /// Check `user`/`password` (blocking).
    pub fn verify(&self, user: &str, password: &str, req: &RequestInfo) -> Outcome {
        match self {
            Passdb::Pam { service } => {
                let svc = service.as_deref().unwrap_or(&req.service);
                system::check_pam(svc, user, password)
            }
            Passdb::Shadow => system::check_shadow(user, password.as_bytes()),
            Passdb::Passwd => system::check_getpwent(user, password.as_bytes()),
            Passdb::PasswdFile {
                path,
                scheme,
                username_format,
            } => {
                let key = expand(username_format, user, &req.service);
                let file = expand(path, user, &req.service);
                match passwd_file_lookup(Path::new(&file), &key) {
                    Ok(Some(e)) => {
                        let (sch, data) = split_scheme(&e.password, scheme);
                        match verify_scheme(&sch, data, password.as_bytes()) {
                            Ok(true) => Outcome::Ok,
                            Ok(false) => Outcome::BadPassword,
                            Err(why) => Outcome::Internal(why),
                        }
                    }
                    Ok(None) => Outcome::UnknownUser,
                    Err(e) => Outcome::Internal(e),
                }
            }
        }
    }
}

impl Userdb {
    pub fn from_conf(db: &AuthDb) -> Result<Userdb, String> {
        let (kv, words) = split_args(&db.args);
        match db.driver.as_str() {
            "passwd" => Ok(Userdb::Passwd),
            "static" => Ok(Userdb::Static { fields: kv }),
            "passwd-file" => {
                let path = words
                    .last()
                    .cloned()
                    .ok_or("userdb passwd-file: missing file name in args")?;
                Ok(Userdb::PasswdFile {
                    path,
                    username_format: kv_get(&kv, "username_format").unwrap_or("%u").to_string(),
                })
            }
            other => Err(format!("Unknown userdb driver '{other}'")),
        }
    }

    /// Whether Dovecot 2.3 caches this userdb's lookups: a userdb is cached when its
    /// driver gives a cache key (`auth.c` `auth_userdb_preinit`: `cache_key =
    /// default_cache_key`). `userdb-passwd.c` sets `default_cache_key = "%u"`
    /// (getpwnam); `userdb-sql.c`/`userdb-ldap.c` derive one from their query (not
    /// supported here). `userdb-passwd-file.c` and `userdb-static.c` set none, so their
    /// answers are never cached (a passwd-file is re-read when it changes; a static
    /// userdb costs nothing to ask).
    pub fn cacheable(&self) -> bool {
        match self {
            Userdb::Passwd => true,
            Userdb::Static { .. } | Userdb::PasswdFile { .. } => false,
        }
    }

    /// Look `user` up (blocking). `Ok(None)`: not found here.
    pub fn lookup(&self, user: &str, req: &RequestInfo) -> Result<Option<UserInfo>, String> {
        let id = |s: &str, group: bool| -> Option<u32> {
            if s.is_empty() {
                return None;
            }
            s.parse().ok().or_else(|| {
                if group {
                    nix::unistd::Group::from_name(s)
                        .ok()
                        .flatten()
                        .map(|g| g.gid.as_raw())
                } else {
                    nix::unistd::User::from_name(s)
                        .ok()
                        .flatten()
                        .map(|u| u.uid.as_raw())
                }
            })
        };
        match self {
            Userdb::Passwd => match nix::unistd::User::from_name(user) {
                Ok(Some(u)) => Ok(Some(UserInfo {
                    user: user.to_string(),
                    uid: Some(u.uid.as_raw()),
                    gid: Some(u.gid.as_raw()),
                    home: Some(u.dir.to_string_lossy().into_owned()),
                    // As Dovecot's passwd userdb: the mail process gets the user's
                    // groups from the group file.
                    extra: vec![("system_groups_user".into(), user.to_string())],
                })),
                Ok(None) => Ok(None),
                Err(e) => Err(format!("getpwnam: {e}")),
            },
            Userdb::Static { fields } => {
                let mut info = UserInfo {
                    user: user.to_string(),
                    ..UserInfo::default()
                };
                for (k, v) in fields {
                    let v = expand(v, user, &req.service);
                    match k.as_str() {
                        "uid" => info.uid = id(&v, false),
                        "gid" => info.gid = id(&v, true),
                        "home" => info.home = Some(v),
                        "allow_all_users" => {}
                        _ => info.extra.push((k.clone(), v)),
                    }
                }
                Ok(Some(info))
            }
            Userdb::PasswdFile {
                path,
                username_format,
            } => {
                let key = expand(username_format, user, &req.service);
                let file = expand(path, user, &req.service);
                Ok(
                    passwd_file_lookup(Path::new(&file), &key)?.map(|e| UserInfo {
                        user: user.to_string(),
                        uid: id(&e.uid, false),
                        gid: id(&e.gid, true),
                        home: (!e.home.is_empty()).then_some(e.home),
                        extra: e
                            .extra
                            .into_iter()
                            .filter_map(|(k, v)| {
                                k.strip_prefix("userdb_").map(|k| (k.to_string(), v))
                            })
                            .collect(),
                    }),
                )
            }
        }
    }
}

/// Dovecot's authentication cache (`auth/auth-cache.c`): passdb results kept for
/// `auth_cache_ttl` (successes) or `auth_cache_negative_ttl` (unknown user, wrong
/// password), within `auth_cache_size` bytes, the oldest entries dropped first.
///
/// A result is keyed by the service, the user name after `auth_username_format` and a
/// salted SHA-256 of the password that was tried, so a wrong password can never be
/// answered by a success: it misses and goes to the passdb (as Dovecot re-asks the
/// passdb when a password does not match a cached success), and its own failure is then
/// cached. "Unknown user" is keyed by the user alone. Backend errors are not cached.
/// Dovecot instead keeps the passdb's stored hash and checks each attempt against it;
/// the answers are the same, and a hit here costs one SHA-256 instead of the scheme's
/// hashing (e.g. SHA512-CRYPT's 5,000 rounds). A password changed in the passdb is seen
/// after the TTL, as in Dovecot.
///
/// Userdb answers share the cache and its `auth_cache_size` accounting, as in Dovecot
/// (`auth-request.c` `auth_request_userdb_save_cache` inserts into the same
/// `passdb_cache`): a found user for `auth_cache_ttl`, "user not found" for
/// `auth_cache_negative_ttl` (Dovecot stores it as an empty value, which
/// `auth-cache.c` times with the negative TTL); a userdb error is not cached. Dovecot
/// keeps the two apart by prefixing every key with `P` or `U` and the db's number
/// (`auth_request_expand_cache_key`); here the hashed key starts with `P` (passdb) or
/// `U` (userdb), so a user name can never meet a passdb entry. A userdb key is the user
/// name alone, as `userdb passwd`'s `%u` (no service: the answer does not depend on it).
/// A found user is counted as its size (name, home, extra fields) on top of the fixed
/// per-entry cost, as Dovecot counts each entry's key and value.
///
/// XXX Dovecot answers from an expired userdb entry when the userdb then fails
/// ("Falling back to expired data from cache"); here an expired entry is dropped when
/// met, and a failing userdb's error is returned. Left so: it needs expired entries kept
/// past their TTL, and it only matters while the userdb is down.
pub struct AuthCache {
    max_bytes: u64,
    ttl: Duration,
    negative_ttl: Duration,
    salt: [u8; 16],
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<[u8; 32], CacheEntry>,
    /// Insertion order, for dropping the oldest entries.
    order: BTreeMap<u64, [u8; 32]>,
    seq: u64,
    bytes: u64,
}

struct CacheEntry {
    answer: CachedAnswer,
    expires: Instant,
    seq: u64,
    /// What this entry is counted as against `auth_cache_size`.
    bytes: u64,
}

/// What the cache holds for one key: a passdb outcome or a userdb chain's answer
/// (`None`: user not found).
#[derive(Debug, Clone, PartialEq, Eq)]
enum CachedAnswer {
    Pass(Outcome),
    User(Option<UserInfo>),
}

impl CachedAnswer {
    /// Kept for `auth_cache_ttl` (else `auth_cache_negative_ttl`).
    fn positive(&self) -> bool {
        match self {
            CachedAnswer::Pass(o) => o.is_ok(),
            CachedAnswer::User(u) => u.is_some(),
        }
    }

    /// Counted against `auth_cache_size`: the fixed cost, plus a found user's strings.
    fn bytes(&self) -> u64 {
        let strings = match self {
            CachedAnswer::Pass(_) | CachedAnswer::User(None) => 0,
            CachedAnswer::User(Some(u)) => {
                u.user.len()
                    + u.home.as_ref().map_or(0, String::len)
                    + u.extra
                        .iter()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>()
            }
        };
        CACHE_ENTRY_BYTES + strings as u64
    }
}

/// What one entry is counted as against `auth_cache_size` at least (key, value, map
/// overhead).
const CACHE_ENTRY_BYTES: u64 = 128;

/// The first byte hashed into a key: which kind of answer it names (Dovecot's `P`/`U`
/// key prefix).
const PASSDB_KEY: u8 = b'P';
const USERDB_KEY: u8 = b'U';

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCache")
            .field("max_bytes", &self.max_bytes)
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .finish_non_exhaustive()
    }
}

impl AuthCache {
    /// The cache `dovecot.conf` asks for (`None` at `auth_cache_size = 0`).
    pub fn from_conf(conf: &DovecotConf) -> Option<Arc<AuthCache>> {
        AuthCache::new(
            conf.auth_cache_size(),
            Duration::from_secs(conf.auth_cache_ttl()),
            Duration::from_secs(conf.auth_cache_negative_ttl()),
        )
        .map(Arc::new)
    }

    /// A cache of `max_bytes` (none when 0).
    pub fn new(max_bytes: u64, ttl: Duration, negative_ttl: Duration) -> Option<AuthCache> {
        if max_bytes == 0 {
            return None;
        }
        let mut salt = [0u8; 16];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt);
        Some(AuthCache {
            max_bytes,
            ttl,
            negative_ttl,
            salt,
            inner: Mutex::new(CacheInner::default()),
        })
    }

    /// A passdb result's key.
    fn key(&self, service: &str, user: &str, password: Option<&str>) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.salt);
        ctx.update(&[PASSDB_KEY]);
        ctx.update(service.as_bytes());
        ctx.update(&[0]);
        ctx.update(user.as_bytes());
        match password {
            Some(p) => {
                ctx.update(&[0]);
                ctx.update(p.as_bytes());
            }
            None => ctx.update(&[1]),
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(ctx.finish().as_ref());
        k
    }

    /// A userdb chain's answer's key: the user name alone (`userdb passwd`'s `%u`).
    fn user_key(&self, user: &str) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.salt);
        ctx.update(&[USERDB_KEY]);
        ctx.update(user.as_bytes());
        let mut k = [0u8; 32];
        k.copy_from_slice(ctx.finish().as_ref());
        k
    }

    /// The live answer under `key`; an expired one is dropped.
    fn get_answer(&self, key: &[u8; 32]) -> Option<CachedAnswer> {
        let mut c = self.inner.lock().ok()?;
        let e = c.map.get(key)?;
        if e.expires > Instant::now() {
            return Some(e.answer.clone());
        }
        let (seq, bytes) = (e.seq, e.bytes);
        c.map.remove(key);
        c.order.remove(&seq);
        c.bytes = c.bytes.saturating_sub(bytes);
        None
    }

    fn get(&self, key: &[u8; 32]) -> Option<Outcome> {
        match self.get_answer(key)? {
            CachedAnswer::Pass(o) => Some(o),
            CachedAnswer::User(_) => None,
        }
    }

    /// `Some(None)`: cached "user not found".
    fn get_user(&self, key: &[u8; 32]) -> Option<Option<UserInfo>> {
        match self.get_answer(key)? {
            CachedAnswer::User(u) => Some(u),
            CachedAnswer::Pass(_) => None,
        }
    }

    fn put(&self, key: [u8; 32], outcome: Outcome) {
        self.insert(key, CachedAnswer::Pass(outcome));
    }

    fn put_user(&self, key: [u8; 32], user: Option<UserInfo>) {
        self.insert(key, CachedAnswer::User(user));
    }

    /// Keep `answer` for its TTL (not at all when that TTL is 0), then drop the oldest
    /// entries until the whole fits in `auth_cache_size` again.
    fn insert(&self, key: [u8; 32], answer: CachedAnswer) {
        let ttl = if answer.positive() {
            self.ttl
        } else {
            self.negative_ttl
        };
        let bytes = answer.bytes();
        // One entry larger than the whole cache would only empty it.
        if ttl.is_zero() || bytes > self.max_bytes {
            return;
        }
        let Ok(mut c) = self.inner.lock() else {
            return;
        };
        c.seq += 1;
        let seq = c.seq;
        c.bytes += bytes;
        if let Some(old) = c.map.insert(
            key,
            CacheEntry {
                answer,
                expires: Instant::now() + ttl,
                seq,
                bytes,
            },
        ) {
            c.order.remove(&old.seq);
            c.bytes = c.bytes.saturating_sub(old.bytes);
        }
        c.order.insert(seq, key);
        while c.bytes > self.max_bytes {
            let Some((_, oldest)) = c.order.pop_first() else {
                break;
            };
            if let Some(e) = c.map.remove(&oldest) {
                c.bytes = c.bytes.saturating_sub(e.bytes);
            }
        }
    }

    /// Entries held now (for tests).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|c| c.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Dovecot's auth service settings: the passdb/userdb chains and the request rules.
#[derive(Debug, Clone)]
pub struct DovecotAuth {
    pub passdbs: Vec<Passdb>,
    pub userdbs: Vec<Userdb>,
    pub username_format: String,
    pub failure_delay: Duration,
    /// Upper-case mechanism names (`PLAIN`, `LOGIN`).
    pub mechanisms: Vec<String>,
}

/// The result of checking a request against the passdb chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassResult {
    /// The user name after `auth_username_format`.
    pub user: String,
    pub outcome: Outcome,
}

impl DovecotAuth {
    /// Build from a loaded `dovecot.conf`. Without any passdb, Dovecot refuses to start;
    /// so does this.
    pub fn from_conf(conf: &DovecotConf) -> Result<DovecotAuth, String> {
        let passdbs = conf
            .passdbs()
            .iter()
            .map(Passdb::from_conf)
            .collect::<Result<Vec<_>, _>>()?;
        if passdbs.is_empty() {
            return Err(
                "No passdbs specified in configuration file. PLAIN mechanism needs one".into(),
            );
        }
        let userdbs = conf
            .userdbs()
            .iter()
            .map(Userdb::from_conf)
            .collect::<Result<Vec<_>, _>>()?;
        let mut mechanisms: Vec<String> = conf
            .auth_mechanisms()
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        if mechanisms.is_empty() {
            mechanisms.push("PLAIN".into());
        }
        Ok(DovecotAuth {
            passdbs,
            userdbs,
            username_format: conf.auth_username_format().to_string(),
            failure_delay: Duration::from_secs(conf.auth_failure_delay()),
            mechanisms,
        })
    }

    /// `auth_username_format` applied to the name the client gave.
    pub fn translate_username(&self, user: &str, service: &str) -> String {
        expand(&self.username_format, user, service)
    }

    /// [`verify_plain`](Self::verify_plain), answered from `cache` when there is one
    /// (`auth_cache_size` set) and it knows the answer (blocking).
    pub fn verify_plain_cached(
        &self,
        cache: Option<&AuthCache>,
        user: &str,
        password: &str,
        req: &RequestInfo,
    ) -> PassResult {
        match cache.filter(|_| self.passdbs.iter().all(Passdb::cacheable)) {
            Some(cache) => self.through_cache(cache, user, password, req),
            None => self.verify_plain(user, password, req),
        }
    }

    /// The passdb chain's answer through `cache`.
    fn through_cache(
        &self,
        cache: &AuthCache,
        user: &str,
        password: &str,
        req: &RequestInfo,
    ) -> PassResult {
        let name = self.translate_username(user, &req.service);
        let user_key = cache.key(&req.service, &name, None);
        let pw_key = cache.key(&req.service, &name, Some(password));
        if let Some(o) = cache.get(&user_key).or_else(|| cache.get(&pw_key)) {
            return PassResult {
                user: name,
                outcome: o,
            };
        }
        let r = self.verify_plain(user, password, req);
        match &r.outcome {
            Outcome::UnknownUser => cache.put(user_key, Outcome::UnknownUser),
            Outcome::Ok | Outcome::BadPassword => cache.put(pw_key, r.outcome.clone()),
            Outcome::Refused(_) | Outcome::Internal(_) => {}
        }
        r
    }

    /// Check a plaintext password through the passdb chain (blocking).
    pub fn verify_plain(&self, user: &str, password: &str, req: &RequestInfo) -> PassResult {
        let user = self.translate_username(user, &req.service);
        let mut outcome = Outcome::UnknownUser;
        for db in &self.passdbs {
            let o = db.verify(&user, password, req);
            match o {
                Outcome::Ok => {
                    return PassResult {
                        user,
                        outcome: Outcome::Ok,
                    };
                }
                // A known user's failure outranks "unknown" from another passdb.
                Outcome::UnknownUser => {}
                other => {
                    if !matches!(outcome, Outcome::Internal(_))
                        || !matches!(other, Outcome::BadPassword)
                    {
                        outcome = other;
                    }
                }
            }
        }
        PassResult { user, outcome }
    }

    /// The plaintext password of `user` (after `auth_username_format`) from the first
    /// passdb that stores one (`passwd-file` with the `PLAIN`/`CLEARTEXT` scheme), for
    /// APOP; `None` when no passdb can give it (blocking).
    pub fn plaintext_password(&self, user: &str, req: &RequestInfo) -> Option<String> {
        let user = self.translate_username(user, &req.service);
        self.passdbs.iter().find_map(|db| match db {
            Passdb::PasswdFile {
                path,
                scheme,
                username_format,
            } => {
                let key = expand(username_format, &user, &req.service);
                let file = expand(path, &user, &req.service);
                let e = passwd_file_lookup(Path::new(&file), &key).ok()??;
                let (sch, data) = split_scheme(&e.password, scheme);
                matches!(sch.to_ascii_uppercase().as_str(), "PLAIN" | "CLEARTEXT")
                    .then(|| data.to_string())
            }
            _ => None,
        })
    }

    /// Look a user up through the userdb chain (blocking).
    pub fn lookup_user(&self, user: &str, req: &RequestInfo) -> Result<Option<UserInfo>, String> {
        for db in &self.userdbs {
            if let Some(info) = db.lookup(user, req)? {
                return Ok(Some(info));
            }
        }
        Ok(None)
    }

    /// [`lookup_user`](Self::lookup_user), answered from `cache` when there is one
    /// (`auth_cache_size` set), every userdb in the chain is one Dovecot caches
    /// ([`Userdb::cacheable`]), and it knows the answer (blocking).
    pub fn lookup_user_cached(
        &self,
        cache: Option<&AuthCache>,
        user: &str,
        req: &RequestInfo,
    ) -> Result<Option<UserInfo>, String> {
        match cache.filter(|_| self.userdbs.iter().all(Userdb::cacheable)) {
            Some(cache) => self.user_through_cache(cache, user, req),
            None => self.lookup_user(user, req),
        }
    }

    /// The userdb chain's answer through `cache`: a found user and "not found" are kept
    /// (Dovecot's `auth_request_userdb_save_cache`), an error is not (its
    /// `USERDB_RESULT_INTERNAL_FAILURE` skips the cache).
    fn user_through_cache(
        &self,
        cache: &AuthCache,
        user: &str,
        req: &RequestInfo,
    ) -> Result<Option<UserInfo>, String> {
        let key = cache.user_key(user);
        if let Some(answer) = cache.get_user(&key) {
            return Ok(answer);
        }
        let answer = self.lookup_user(user, req)?;
        cache.put_user(key, answer.clone());
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables() {
        assert_eq!(
            expand("%Lu", "Alice@Example.ORG", "imap"),
            "alice@example.org"
        );
        assert_eq!(expand("%n", "alice@example.org", "imap"), "alice");
        assert_eq!(
            expand("/home/%d/%n", "alice@example.org", ""),
            "/home/example.org/alice"
        );
        assert_eq!(expand("%{user}/%s/%%", "bob", "pop3"), "bob/pop3/%");
        assert_eq!(expand("%Uu", "bob", ""), "BOB");
    }

    #[test]
    fn schemes() {
        let ok = |s: &str, pw: &str| {
            let (sch, data) = split_scheme(s, "CRYPT");
            verify_scheme(&sch, data, pw.as_bytes())
        };
        assert_eq!(ok("{PLAIN}secret", "secret"), Ok(true));
        assert_eq!(ok("{PLAIN}secret", "secreT"), Ok(false));
        assert_eq!(ok("{CLEARTEXT}secret", "secret"), Ok(true));
        // `doveadm pw -s SHA -p secret`, `-s SHA256`, `-s SHA512`.
        assert_eq!(ok("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret"), Ok(true));
        assert_eq!(ok("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "Secret"), Ok(false));
        assert_eq!(
            ok(
                "{SHA.HEX}e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4",
                "secret"
            ),
            Ok(true)
        );
        assert_eq!(
            ok(
                "{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=",
                "secret"
            ),
            Ok(true)
        );
        // SSHA: sha1("secret" + "salt") + "salt".
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
        ctx.update(b"secretsalt");
        let mut raw = ctx.finish().as_ref().to_vec();
        raw.extend_from_slice(b"salt");
        let ssha = format!(
            "{{SSHA}}{}",
            base64::engine::general_purpose::STANDARD.encode(&raw)
        );
        assert_eq!(ok(&ssha, "secret"), Ok(true));
        assert_eq!(ok(&ssha, "secrets"), Ok(false));
        let h = crate::auth::crypt::hash(b"secret", "$6$").expect("hash");
        assert_eq!(ok(&format!("{{SHA512-CRYPT}}{h}"), "secret"), Ok(true));
        assert_eq!(ok(&h, "secret"), Ok(true));
        let b = crate::auth::crypt::hash(b"secret", "$2b$").expect("hash");
        assert_eq!(ok(&format!("{{BLF-CRYPT}}{b}"), "secret"), Ok(true));
        assert!(ok("{NOPE}x", "secret").is_err());
    }

    #[test]
    fn passwd_file_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("users");
        std::fs::write(
            &f,
            "# comment\nalice:{PLAIN}secret:1000:1000::/home/alice::userdb_mail=maildir:~/Maildir\nbob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=:1001:1001::/home/bob::\n",
        )
        .expect("write");
        let conf_text = format!(
            "auth_mechanisms = plain login\npassdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {p}\n}}\nuserdb {{\n  driver = passwd-file\n  args = {p}\n}}\n",
            p = f.display()
        );
        let conf = DovecotConf::from_str(&conf_text, Path::new("dovecot.conf")).expect("conf");
        let auth = DovecotAuth::from_conf(&conf).expect("auth");
        assert_eq!(auth.mechanisms, vec!["PLAIN", "LOGIN"]);
        let req = RequestInfo {
            service: "imap".into(),
        };
        let r = auth.verify_plain("Alice", "secret", &req);
        assert_eq!(r.user, "alice");
        assert_eq!(r.outcome, Outcome::Ok);
        assert_eq!(
            auth.verify_plain("bob", "secret", &req).outcome,
            Outcome::Ok
        );
        assert_eq!(
            auth.verify_plain("bob", "wrong", &req).outcome,
            Outcome::BadPassword
        );
        assert_eq!(
            auth.verify_plain("carol", "x", &req).outcome,
            Outcome::UnknownUser
        );
        let info = auth
            .lookup_user("alice", &req)
            .expect("lookup")
            .expect("found");
        assert_eq!(info.uid, Some(1000));
        assert_eq!(info.home.as_deref(), Some("/home/alice"));
        assert_eq!(
            info.extra,
            vec![("mail".to_string(), "maildir:~/Maildir".to_string())]
        );
    }

    /// The cache answers a repeated success and a repeated failure without the passdb,
    /// never lets a wrong password ride on a cached success, and is off at size 0.
    #[test]
    fn auth_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("users");
        std::fs::write(&f, "alice:{PLAIN}secret::::::\n").expect("write");
        let conf_of = |extra: &str| {
            let text = format!(
                "{extra}passdb {{\n  driver = passwd-file\n  args = {}\n}}\n",
                f.display()
            );
            DovecotConf::from_str(&text, Path::new("dovecot.conf")).expect("conf")
        };
        let req = RequestInfo {
            service: "pop3".into(),
        };
        assert!(AuthCache::from_conf(&conf_of("")).is_none());
        let conf =
            conf_of("auth_cache_size = 1M\nauth_cache_ttl = 1h\nauth_cache_negative_ttl = 1h\n");
        let auth = DovecotAuth::from_conf(&conf).expect("auth");
        let cache = AuthCache::from_conf(&conf).expect("cache on");
        // The cache's logic over a passwd-file (which Dovecot itself never caches).
        let outcome = |u: &str, p: &str| auth.through_cache(&cache, u, p, &req).outcome;
        assert_eq!(outcome("alice", "secret"), Outcome::Ok);
        assert_eq!(outcome("alice", "wrong"), Outcome::BadPassword);
        assert_eq!(outcome("nobody", "x"), Outcome::UnknownUser);
        assert_eq!(cache.len(), 3);
        // The passdb is gone: the cache answers what it knows, by password.
        std::fs::write(&f, "").expect("empty");
        assert_eq!(outcome("Alice", "secret"), Outcome::Ok);
        assert_eq!(outcome("alice", "wrong"), Outcome::BadPassword);
        assert_eq!(outcome("nobody", "y"), Outcome::UnknownUser);
        // Another wrong password is not in the cache: it asks the passdb.
        assert_eq!(outcome("alice", "secret2"), Outcome::UnknownUser);
        // Through the public entry a passwd-file is not cached, as in Dovecot.
        let single = DovecotAuth::from_conf(
            &DovecotConf::from_str(
                &format!(
                    "auth_cache_size = 1M\npassdb {{\n  driver = passwd-file\n  args = {}\n}}\n",
                    f.display()
                ),
                Path::new("dovecot.conf"),
            )
            .expect("conf"),
        )
        .expect("auth");
        let c2 = AuthCache::new(1 << 20, Duration::from_secs(60), Duration::from_secs(60))
            .expect("cache");
        assert_eq!(
            single
                .verify_plain_cached(Some(&c2), "alice", "secret", &req)
                .outcome,
            Outcome::UnknownUser
        );
        assert!(c2.is_empty());
        // Size limit: the oldest entries go.
        let small = AuthCache::new(
            2 * CACHE_ENTRY_BYTES,
            Duration::from_secs(60),
            Duration::ZERO,
        )
        .expect("cache");
        for i in 0..5u8 {
            small.put([i; 32], Outcome::Ok);
        }
        assert_eq!(small.len(), 2);
        assert!(small.get(&[4; 32]).is_some() && small.get(&[0; 32]).is_none());
        // A zero TTL caches nothing (auth_cache_negative_ttl = 0).
        small.put([9; 32], Outcome::BadPassword);
        assert!(small.get(&[9; 32]).is_none());
    }

    /// An auth service whose passdb and userdb are both the passwd-file `f` (Dovecot
    /// caches neither; the tests drive the cache's logic through the private entries,
    /// as `auth_cache` does, because a file can be changed between lookups).
    fn passwd_file_auth(f: &Path) -> DovecotAuth {
        DovecotAuth {
            passdbs: vec![Passdb::PasswdFile {
                path: f.display().to_string(),
                scheme: "PLAIN".into(),
                username_format: "%u".into(),
            }],
            userdbs: vec![Userdb::PasswdFile {
                path: f.display().to_string(),
                username_format: "%u".into(),
            }],
            username_format: "%Lu".into(),
            failure_delay: Duration::ZERO,
            mechanisms: vec!["PLAIN".into()],
        }
    }

    fn pop3() -> RequestInfo {
        RequestInfo {
            service: "pop3".into(),
        }
    }

    const ALICE: &str =
        "alice:{PLAIN}secret:1000:1000::/home/alice::userdb_mail=maildir:~/Maildir\n";

    /// A 1 MB cache keeping answers, found or not, for an hour.
    fn hour_cache() -> AuthCache {
        AuthCache::new(
            1 << 20,
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        )
        .expect("cache")
    }

    /// A cached user is answered without the userdb: the file is gone, the userdb
    /// itself fails, the cache still knows alice.
    #[test]
    fn userdb_cache_hit_skips_backend() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("users");
        std::fs::write(&f, ALICE).expect("write");
        let auth = passwd_file_auth(&f);
        let cache = hour_cache();
        let first = auth
            .user_through_cache(&cache, "alice", &pop3())
            .expect("lookup")
            .expect("found");
        assert_eq!(first.uid, Some(1000));
        assert_eq!(first.home.as_deref(), Some("/home/alice"));
        assert_eq!(cache.len(), 1);
        std::fs::remove_file(&f).expect("remove");
        assert!(auth.lookup_user("alice", &pop3()).is_err());
        assert_eq!(
            auth.user_through_cache(&cache, "alice", &pop3()),
            Ok(Some(first))
        );
    }

    /// "User not found" is kept for `auth_cache_negative_ttl`, and not at all when it
    /// is 0 (a found user still is, for `auth_cache_ttl`).
    #[test]
    fn userdb_cache_negative() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("users");
        std::fs::write(&f, ALICE).expect("write");
        let auth = passwd_file_auth(&f);
        let cache = hour_cache();
        assert_eq!(auth.user_through_cache(&cache, "carol", &pop3()), Ok(None));
        std::fs::write(&f, format!("{ALICE}carol:x:1002:1002::/home/carol::\n")).expect("write");
        assert_eq!(auth.user_through_cache(&cache, "carol", &pop3()), Ok(None));
        assert!(
            auth.lookup_user("carol", &pop3())
                .expect("lookup")
                .is_some()
        );

        let no_negative =
            AuthCache::new(1 << 20, Duration::from_secs(3600), Duration::ZERO).expect("cache");
        assert_eq!(
            auth.user_through_cache(&no_negative, "dave", &pop3()),
            Ok(None)
        );
        assert!(no_negative.is_empty());
        std::fs::write(&f, format!("{ALICE}dave:x:1003:1003::/home/dave::\n")).expect("write");
        let dave = auth.user_through_cache(&no_negative, "dave", &pop3());
        assert_eq!(dave.expect("lookup").and_then(|u| u.uid), Some(1003));
        assert_eq!(no_negative.len(), 1);
    }

    /// After `auth_cache_ttl` the userdb is asked again and its new answer kept.
    #[test]
    fn userdb_cache_ttl_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("users");
        std::fs::write(&f, ALICE).expect("write");
        let auth = passwd_file_auth(&f);
        let ttl = Duration::from_millis(200);
        let cache = AuthCache::new(1 << 20, ttl, ttl).expect("cache");
        let uid = |c: &AuthCache| {
            auth.user_through_cache(c, "alice", &pop3())
                .expect("lookup")
                .and_then(|u| u.uid)
        };
        assert_eq!(uid(&cache), Some(1000));
        std::fs::write(&f, "alice:x:2000:2000::/home/alice::\n").expect("write");
        assert_eq!(uid(&cache), Some(1000));
        std::thread::sleep(ttl + Duration::from_millis(50));
        assert_eq!(uid(&cache), Some(2000));
        assert_eq!(cache.len(), 1);
        std::fs::write(&f, "").expect("empty");
        assert_eq!(uid(&cache), Some(2000));
    }

    /// `auth_cache_size = 0` (the default): no cache, every lookup asks the userdb.
    #[test]
    fn userdb_cache_off_at_size_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("users");
        std::fs::write(&f, ALICE).expect("write");
        assert!(AuthCache::new(0, Duration::from_secs(60), Duration::from_secs(60)).is_none());
        let conf = DovecotConf::from_str(
            &format!(
                "auth_cache_size = 0\npassdb {{\n  driver = passwd\n}}\nuserdb {{\n  driver = passwd-file\n  args = {}\n}}\n",
                f.display()
            ),
            Path::new("dovecot.conf"),
        )
        .expect("conf");
        assert!(AuthCache::from_conf(&conf).is_none());
        let auth = DovecotAuth::from_conf(&conf).expect("auth");
        let uid = || {
            auth.lookup_user_cached(None, "alice", &pop3())
                .expect("lookup")
                .and_then(|u| u.uid)
        };
        assert_eq!(uid(), Some(1000));
        std::fs::write(&f, "alice:x:2000:2000::/home/alice::\n").expect("write");
        assert_eq!(uid(), Some(2000));
    }

    /// A userdb error is returned and not kept: the next lookup asks again.
    #[test]
    fn userdb_cache_errors_not_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("users");
        let auth = passwd_file_auth(&f);
        let cache = hour_cache();
        let err = auth.user_through_cache(&cache, "alice", &pop3());
        assert!(err.is_err(), "{err:?}");
        assert!(cache.is_empty());
        std::fs::write(&f, ALICE).expect("write");
        let found = auth.user_through_cache(&cache, "alice", &pop3());
        assert_eq!(found.expect("lookup").and_then(|u| u.uid), Some(1000));
    }

    /// Through the public entry only chains of cacheable userdbs (`passwd`) are cached,
    /// as in Dovecot 2.3; `passwd-file` and `static` (no cache key) are not, nor is a
    /// chain that holds one of them.
    #[test]
    fn userdb_cache_cacheable_chains() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("users");
        std::fs::write(&f, ALICE).expect("write");
        let file_db = Userdb::PasswdFile {
            path: f.display().to_string(),
            username_format: "%u".into(),
        };
        let static_db = Userdb::Static {
            fields: vec![("uid".into(), "1000".into())],
        };
        assert!(Userdb::Passwd.cacheable());
        assert!(!file_db.cacheable() && !static_db.cacheable());
        let with_userdbs = |userdbs: Vec<Userdb>| DovecotAuth {
            userdbs,
            ..passwd_file_auth(&f)
        };
        let cache = hour_cache();
        for userdbs in [
            vec![file_db.clone()],
            vec![static_db],
            vec![Userdb::Passwd, file_db],
        ] {
            let auth = with_userdbs(userdbs);
            let got = auth.lookup_user_cached(Some(&cache), "alice", &pop3());
            assert!(got.expect("lookup").is_some());
            assert!(cache.is_empty());
        }
        // getpwnam: one that is not there, and this process's own user when the
        // passwd database knows it (a container's uid may have no entry).
        let auth = with_userdbs(vec![Userdb::Passwd]);
        let nobody = "postern-no-such-user-7f3a";
        assert_eq!(
            auth.lookup_user_cached(Some(&cache), nobody, &pop3()),
            Ok(None)
        );
        assert_eq!(cache.get_user(&cache.user_key(nobody)), Some(None));
        if let Ok(Some(me)) = nix::unistd::User::from_uid(nix::unistd::getuid()) {
            let got = auth
                .lookup_user_cached(Some(&cache), &me.name, &pop3())
                .expect("lookup")
                .expect("found");
            assert_eq!(got.uid, Some(me.uid.as_raw()));
            assert_eq!(cache.len(), 2);
            assert_eq!(cache.get_user(&cache.user_key(&me.name)), Some(Some(got)));
        }
    }

    /// Passdb and userdb entries for one user live side by side under different keys, and
    /// share `auth_cache_size`: the oldest goes first whichever kind it is, and a found
    /// user is counted with its fields.
    #[test]
    fn userdb_and_passdb_share_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("users");
        std::fs::write(&f, ALICE).expect("write");
        let auth = passwd_file_auth(&f);
        let cache = hour_cache();
        let alice = auth
            .user_through_cache(&cache, "alice", &pop3())
            .expect("lookup")
            .expect("found");
        assert_eq!(
            auth.through_cache(&cache, "alice", "secret", &pop3())
                .outcome,
            Outcome::Ok
        );
        assert_eq!(
            auth.through_cache(&cache, "nobody", "x", &pop3()).outcome,
            Outcome::UnknownUser
        );
        assert_eq!(auth.user_through_cache(&cache, "nobody", &pop3()), Ok(None));
        assert_eq!(cache.len(), 4);
        for service in ["", "pop3", "U"] {
            for user in ["alice", "nobody", "Ualice", ""] {
                assert_ne!(cache.key(service, user, None), cache.user_key(user));
                assert_ne!(cache.key(service, "", Some(user)), cache.user_key(user));
            }
        }
        // Each kind answers only its own lookups.
        std::fs::remove_file(&f).expect("remove");
        assert_eq!(cache.get(&cache.user_key("alice")), None);
        assert_eq!(cache.get_user(&cache.key("pop3", "alice", None)), None);
        assert_eq!(
            auth.user_through_cache(&cache, "alice", &pop3()),
            Ok(Some(alice.clone()))
        );
        assert_eq!(
            auth.through_cache(&cache, "alice", "secret", &pop3())
                .outcome,
            Outcome::Ok
        );

        let user_bytes = CachedAnswer::User(Some(alice.clone())).bytes();
        assert_eq!(
            user_bytes,
            CACHE_ENTRY_BYTES + (5 + 11 + 4 + 17) as u64,
            "alice, /home/alice, mail=maildir:~/Maildir"
        );
        assert_eq!(CachedAnswer::User(None).bytes(), CACHE_ENTRY_BYTES);
        // Room for the user and one passdb entry: a second passdb entry drops the user
        // (the oldest), a third the first passdb entry.
        let small = AuthCache::new(
            user_bytes + CACHE_ENTRY_BYTES,
            Duration::from_secs(60),
            Duration::from_secs(60),
        )
        .expect("cache");
        small.put_user(small.user_key("alice"), Some(alice.clone()));
        small.put([1; 32], Outcome::Ok);
        assert_eq!(small.len(), 2);
        small.put([2; 32], Outcome::Ok);
        assert_eq!(small.len(), 2);
        assert_eq!(small.get_user(&small.user_key("alice")), None);
        assert!(small.get(&[1; 32]).is_some() && small.get(&[2; 32]).is_some());
        small.put_user(small.user_key("bob"), None);
        assert_eq!(small.len(), 2);
        assert!(small.get(&[1; 32]).is_none());
        assert_eq!(small.get_user(&small.user_key("bob")), Some(None));
        // A user bigger than the whole cache is not kept, and drops nothing.
        let tiny = AuthCache::new(
            CACHE_ENTRY_BYTES,
            Duration::from_secs(60),
            Duration::from_secs(60),
        )
        .expect("cache");
        tiny.put([3; 32], Outcome::Ok);
        tiny.put_user(tiny.user_key("alice"), Some(alice));
        assert_eq!(tiny.len(), 1);
        assert!(tiny.get(&[3; 32]).is_some());
    }

    #[test]
    fn static_userdb_and_pam_args() {
        let u = Userdb::from_conf(&AuthDb {
            driver: "static".into(),
            args: "uid=0 gid=0 home=/var/vmail/%d/%n".into(),
        })
        .expect("static");
        let info = u
            .lookup("a@b.c", &RequestInfo::default())
            .expect("ok")
            .expect("some");
        assert_eq!(info.home.as_deref(), Some("/var/vmail/b.c/a"));
        assert_eq!(info.uid, Some(0));
        let p = |args: &str| {
            Passdb::from_conf(&AuthDb {
                driver: "pam".into(),
                args: args.into(),
            })
        };
        assert_eq!(
            p(""),
            Ok(Passdb::Pam {
                service: Some("dovecot".into())
            })
        );
        assert_eq!(p("session=yes *"), Ok(Passdb::Pam { service: None }));
        assert_eq!(
            p("mailsvc"),
            Ok(Passdb::Pam {
                service: Some("mailsvc".into())
            })
        );
        assert!(
            Passdb::from_conf(&AuthDb {
                driver: "ldap".into(),
                args: String::new()
            })
            .is_err()
        );
    }
}
