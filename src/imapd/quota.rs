//! QUOTA (RFC 2087, as Dovecot 2.3's `quota` and `imap_quota` plugins answer it): one
//! quota root from `plugin { quota = BACKEND:NAME }` with the `*:` limits of
//! `quota_rule` (`storage=`, `messages=`), turned on by `quota` in `mail_plugins`; the
//! QUOTA capability and GETQUOTAROOT/GETQUOTA/SETQUOTA by `imap_quota` in the imap
//! protocol's `mail_plugins`. APPEND and COPY that would go over a limit get `NO
//! [OVERQUOTA]` with `quota_exceeded_message` (Dovecot's default text); MOVE stays inside
//! the one root and is never refused.
//!
//! Usage is counted from the files as Dovecot's Maildir++ quota recalculates it: the
//! `S=` size in each name under `cur/` and `new/` of every folder (the file's size
//! without one), never through a symlink. With the `maildir` backend the total is
//! written back to the root's `maildirsize` (Maildir++: `LIMITS` line, then `BYTES
//! COUNT`) after each change this session makes, atomically (a new file renamed over it,
//! as the mail user), so the real Dovecot started on the same Maildir reads the same
//! usage. For mbox the folder files' sizes and message counts are used.
//!
//! Not done: `quota_rule` for single mailboxes (`Trash:storage=+10M`), `%` limits,
//! `quota_grace`, warnings, several roots; delivery (`postern local`) does not check
//! or update the quota (nor does Postfix's local(8)).

use super::session::{Done, Session, bad_cmd};
use crate::config::dovecot::DovecotConf;
use crate::imap::reader::Arg;
use crate::mailbox::{Format, Layout, MailStore};
use std::path::Path;

/// Dovecot's `DEFAULT_QUOTA_EXCEEDED_MSG`.
pub const DEFAULT_EXCEEDED: &str = "Quota exceeded (mailbox for user is full)";

/// The quota of every user of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaConf {
    /// The backend (`maildir`, `count`, `fs` …).
    pub backend: String,
    /// The root's name (`User quota`).
    pub root: String,
    /// Limits (0 or absent: none), in bytes and messages.
    pub storage: u64,
    pub messages: u64,
    /// `quota_exceeded_message`.
    pub exceeded: String,
    /// The imap_quota plugin is loaded: QUOTA commands and capability.
    pub imap: bool,
}

/// A size as `quota_rule` writes it: `100K`, `1G`, `512M`, `2048` (bytes), `B`/`K`/`M`/
/// `G`/`T` in either case.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = s[..digits].parse().ok()?;
    let mult: u64 = match &s[digits..] {
        "" | "B" | "b" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        "T" | "t" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl QuotaConf {
    /// The quota set up in `conf`, if the `quota` plugin is on for imap sessions and a
    /// `quota` root is defined.
    pub fn from_conf(conf: &DovecotConf) -> Option<QuotaConf> {
        let plugins: Vec<&str> = conf
            .get_for("imap", "mail_plugins")
            .unwrap_or("")
            .split([' ', ','])
            .filter(|w| !w.is_empty())
            .collect();
        if !plugins.contains(&"quota") {
            return None;
        }
        let plugin = |k: &str| -> Option<String> {
            conf.root
                .blocks_of("plugin")
                .filter_map(|b| b.get(k))
                .last()
                .map(str::to_string)
        };
        let def = plugin("quota")?;
        let (backend, rest) = match def.split_once(':') {
            Some((b, r)) => (b.to_string(), r.to_string()),
            None => (def.clone(), String::new()),
        };
        let root = rest.split(':').next().unwrap_or("").to_string();
        let mut q = QuotaConf {
            backend,
            root,
            storage: 0,
            messages: 0,
            exceeded: plugin("quota_exceeded_message").unwrap_or_else(|| DEFAULT_EXCEEDED.into()),
            imap: plugins.contains(&"imap_quota"),
        };
        if let Some(rule) = plugin("quota_rule")
            && let Some(limits) = rule.strip_prefix("*:")
        {
            for w in limits.split_whitespace() {
                match w.split_once('=') {
                    Some(("storage" | "bytes", v)) => q.storage = parse_size(v).unwrap_or(0),
                    Some(("messages", v)) => q.messages = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        Some(q)
    }

    /// `* QUOTA "root" (STORAGE used limit MESSAGE used limit)` (Dovecot's
    /// `quota_reply_write`: kilobytes rounded up; nothing for a root without limits).
    pub fn reply(&self, u: &Usage) -> Option<String> {
        let mut items = Vec::new();
        if self.storage > 0 {
            items.push(format!(
                "STORAGE {} {}",
                u.bytes.div_ceil(1024),
                self.storage.div_ceil(1024)
            ));
        }
        if self.messages > 0 {
            items.push(format!("MESSAGE {} {}", u.count, self.messages));
        }
        if items.is_empty() {
            return None;
        }
        Some(format!(
            "* QUOTA {} ({})",
            astring(&self.root),
            items.join(" ")
        ))
    }

    /// Whether `bytes` more in `count` messages would go over a limit (Dovecot's
    /// `quota_test_alloc`).
    pub fn over(&self, u: &Usage, bytes: u64, count: u64) -> bool {
        (self.storage > 0 && u.bytes.saturating_add(bytes) > self.storage)
            || (self.messages > 0 && u.count.saturating_add(count) > self.messages)
    }

    /// The NO text for a refused save.
    pub fn refusal(&self) -> String {
        format!("[OVERQUOTA] {}", self.exceeded)
    }
}

/// What a user's mail takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub count: u64,
}

/// An atom when it can be one, else a quoted string (Dovecot's `imap_append_astring`).
pub fn astring(s: &str) -> String {
    let atom = !s.is_empty()
        && s.bytes().all(|c| {
            c > b' '
                && c < 0x7f
                && !matches!(c, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
        });
    if atom {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The user's usage, counted from the files (as the mail user).
pub fn usage(store: &MailStore) -> Usage {
    let _id = store.enter();
    let loc = store.location();
    let mut u = Usage::default();
    match loc.format {
        Format::Maildir => {
            maildir_dir(&loc.root, &mut u);
            let fs = loc.layout == Layout::Fs;
            walk_folders(&loc.root, fs, 0, &mut u);
        }
        Format::Mbox => {
            if let Ok(names) = store.list() {
                for f in names {
                    if let Ok(st) = store.status(&f.name, false) {
                        u.count += u64::from(st.messages);
                    }
                }
            }
            mbox_files(&loc.inbox, &mut u);
            mbox_tree(&loc.root, 0, &mut u);
        }
    }
    u
}

/// Maildir++ folders (`.NAME` beside `cur/`) or, for `LAYOUT=fs`, every directory below.
fn walk_folders(dir: &Path, fs: bool, depth: u32, u: &mut Usage) {
    if depth > 64 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if matches!(name.as_ref(), "." | ".." | "cur" | "new" | "tmp") {
            continue;
        }
        let Ok(md) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if !md.is_dir() {
            continue;
        }
        if fs {
            maildir_dir(&e.path(), u);
            walk_folders(&e.path(), true, depth + 1, u);
        } else if name.starts_with('.') {
            maildir_dir(&e.path(), u);
        }
    }
}

/// `cur/` and `new/` of one Maildir: the `S=` sizes (or the files' sizes).
fn maildir_dir(md: &Path, u: &mut Usage) {
    for sub in ["cur", "new"] {
        let d = md.join(sub);
        match std::fs::symlink_metadata(&d) {
            Ok(m) if m.is_dir() => {}
            _ => continue,
        }
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let base = name.split(':').next().unwrap_or("");
            let s = base
                .split(',')
                .find_map(|p| p.strip_prefix("S="))
                .and_then(|v| v.parse::<u64>().ok());
            let size = match s {
                Some(s) => s,
                None => match std::fs::symlink_metadata(e.path()) {
                    Ok(m) if m.is_file() => m.len(),
                    _ => continue,
                },
            };
            u.bytes += size;
            u.count += 1;
        }
    }
}

fn mbox_files(p: &Path, u: &mut Usage) {
    if let Ok(m) = std::fs::symlink_metadata(p)
        && m.is_file()
    {
        u.bytes += m.len();
    }
}

/// The folder files under an mbox root (Dovecot's own dot files left out).
fn mbox_tree(dir: &Path, depth: u32, u: &mut Usage) {
    if depth > 64 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(md) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if md.is_dir() {
            mbox_tree(&e.path(), depth + 1, u);
        } else if md.is_file() {
            u.bytes += md.len();
        }
    }
}

/// Write the Maildir++ `maildirsize` of a Maildir root with the usage counted: a new
/// file in `tmp/`, renamed over the old one (a symlink there is replaced, not
/// followed), as the mail user.
pub fn write_maildirsize(store: &MailStore, q: &QuotaConf, u: &Usage) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _id = store.enter();
    let root = &store.location().root;
    let mut limits = Vec::new();
    if q.storage > 0 {
        limits.push(format!("{}S", q.storage));
    }
    if q.messages > 0 {
        limits.push(format!("{}C", q.messages));
    }
    let text = format!("{}\n{} {}\n", limits.join(","), u.bytes, u.count);
    let target = root.join("maildirsize");
    if std::fs::read(&target).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    let tmp = root.join("tmp").join(format!(
        "maildirsize.{}.{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let r = f.write_all(text.as_bytes()).and_then(|_| f.sync_all());
    if let Err(e) = r.and_then(|_| std::fs::rename(&tmp, &target)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

impl Session {
    /// GETQUOTAROOT, GETQUOTA, SETQUOTA as Dovecot's imap_quota plugin answers them.
    pub(crate) fn cmd_quota(&mut self, name: &str, args: &[Arg]) -> Done {
        let Some(q) = self.st.quota.clone() else {
            return bad_cmd(name, "Unknown command");
        };
        match name {
            "SETQUOTA" => {
                if args.len() < 2 {
                    return bad_cmd(name, "Missing arguments");
                }
                if args[0].astring().is_none() || args[1].list().is_none() {
                    return bad_cmd(name, "Invalid arguments.");
                }
                // No user is a quota admin here (Dovecot: `admin` from the userdb).
                Done::No("Quota can be changed only by admin.".into())
            }
            _ => {
                let Some(arg) = args.first() else {
                    return bad_cmd(name, "Missing arguments");
                };
                let Some(arg) = arg.as_str().map(str::to_string) else {
                    return bad_cmd(name, "Invalid arguments");
                };
                let u = self.quota_refresh(&q);
                let reply = q.reply(&u);
                if name == "GETQUOTA" {
                    if arg != q.root {
                        return Done::No("Quota root doesn't exist.".into());
                    }
                    if let Some(r) = reply {
                        self.out.line(&r);
                    }
                    return Done::Ok("Getquota completed.".into());
                }
                match reply {
                    None => Done::Ok("No quota.".into()),
                    Some(r) => {
                        self.out.line(&format!(
                            "* QUOTAROOT {} {}",
                            astring(&arg),
                            astring(&q.root)
                        ));
                        self.out.line(&r);
                        Done::Ok("Getquotaroot completed.".into())
                    }
                }
            }
        }
    }

    /// The usage now; the Maildir++ `maildirsize` brought up to date with it (the
    /// `maildir` backend on a Maildir store).
    pub(crate) fn quota_refresh(&mut self, q: &QuotaConf) -> Usage {
        let u = usage(&self.store);
        // (Without limits Dovecot's Maildir++ quota has nothing to write either.)
        if q.backend == "maildir"
            && (q.storage > 0 || q.messages > 0)
            && self.store.location().format == Format::Maildir
            && let Err(e) = write_maildirsize(&self.store, q, &u)
        {
            self.log_error(&format!("quota-maildir: writing maildirsize: {e}"));
        }
        u
    }

    /// `NO [OVERQUOTA] …` when saving `bytes` in `count` more messages would go over.
    pub(crate) fn quota_check(&mut self, bytes: u64, count: u64) -> Option<Done> {
        let q = self.st.quota.clone()?;
        let u = usage(&self.store);
        q.over(&u, bytes, count).then(|| Done::No(q.refusal()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_names() {
        assert_eq!(parse_size("100K"), Some(102_400));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("1X"), None);
        assert_eq!(astring("User quota"), "\"User quota\"");
        assert_eq!(astring("INBOX"), "INBOX");
        let q = QuotaConf {
            backend: "maildir".into(),
            root: "User quota".into(),
            storage: 102_400,
            messages: 0,
            exceeded: DEFAULT_EXCEEDED.into(),
            imap: true,
        };
        let u = Usage {
            bytes: 56_814,
            count: 1,
        };
        // Recorded from the real Dovecot 2.3.19 (tests/imap.rs compares it live).
        assert_eq!(
            q.reply(&u).as_deref(),
            Some("* QUOTA \"User quota\" (STORAGE 56 100)")
        );
        assert!(q.over(&u, 56_814, 1));
        assert!(!q.over(&u, 1000, 1));
    }
}
