//! Postfix's `virtual(8)`: final delivery for domains in `virtual_mailbox_domains`, to
//! mailboxes that belong to no UNIX account.
//!
//! For each recipient the queue manager hands over, [`deliver`] looks the address up in
//! `virtual_mailbox_maps` (Postfix's `mail_addr_find()` order: `user+ext@domain`,
//! `user@domain`, `@domain`; pattern tables see only the full address). The result is a
//! path under `virtual_mailbox_base` (always prefixed, as Postfix does: `base/result`); a
//! result ending in `/` is a Maildir, anything else an mbox file. The owner comes from
//! `virtual_uid_maps` and `virtual_gid_maps` (the same lookup order; `static:5000` is the
//! usual table), and a uid below `virtual_minimum_uid` (or a gid of 0) is refused with
//! Postfix's `4.3.5 mail system configuration error` and a warning in the log. The tables
//! are opened through the map cache at each delivery; one that cannot answer defers the
//! recipient the same way (with the table's lines in the log), never bounces it as unknown.
//!
//! The message is written as Postfix's virtual writes it: `Return-Path:`,
//! `X-Original-To:`, `Delivered-To:` (the same bytes as `local(8)`, see
//! [`crate::delivery::format_message`]), plus the `From ` line, `>From ` quoting and the
//! separator line for mbox. Texts as Postfix 3.7 words them: `delivered to maildir`,
//! `delivered to mailbox`, `maildir delivery failed: …`, `delivery failed to mailbox
//! PATH: …`, `unknown user: "u@d"` (5.1.1). The caller logs it with `relay=virtual`.
//!
//! # Privileges (DESIGN.md §3)
//! [`deliver`] runs in the local delivery process ([`crate::qmgr::local_server`], root). As Postfix
//! (`set_eugid(uid, gid)` around the delivery), every file here is created and written
//! with the effective ids switched to the mailbox's uid/gid, with that group alone, and
//! back ([`crate::sys::child::write_as`]), so directories the uid cannot write stay closed
//! to it. mbox files
//! are opened with `O_NOFOLLOW`, must be regular files with one link owned by the uid
//! ([`crate::mailbox`]); Maildir messages are created in `tmp/` and renamed into `new/`.
//! When not root, everything runs as the invoking user.
//!
//! # main.cf parameters read
//! `virtual_mailbox_domains`, `virtual_mailbox_maps`, `virtual_mailbox_base`,
//! `virtual_uid_maps`, `virtual_gid_maps`, `virtual_minimum_uid`, `virtual_mailbox_limit`,
//! `virtual_mailbox_lock` (as local(8)'s `mailbox_delivery_lock`: the dotlock, `flock`,
//! `fcntl`, each only when named; a bad value is virtual(8)'s `fatal:` line at each
//! delivery and a `4.3.0 unknown mail transport error` deferral; a value of commas alone
//! takes no lock, as Postfix's virtual(8) does), `deliver_lock_attempts`,
//! `deliver_lock_delay`, `stale_lock_time`, `recipient_delimiter`.
//!
//! # Known limits
//! * XXX `virtual_mailbox_limit` is checked before the append (mbox: file plus message;
//!   Maildir: the message), not through `RLIMIT_FSIZE` as Postfix sets it.
//! * XXX No `Delivered-To:` loop detection.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::postfix::PostfixConfig;
use crate::delivery::{Outcome, Status};
use crate::maps::Table;
use crate::queue::QueuedMessage;

/// What virtual delivery needs from main.cf, read once per configuration.
pub struct VirtualSettings {
    /// `virtual_mailbox_domains`: names, `!name`, `/file` and `type:table` entries.
    pub domains: Vec<String>,
    /// `virtual_mailbox_maps`, `virtual_uid_maps`, `virtual_gid_maps`: table specs, opened
    /// through the map cache at each delivery (a table that cannot be opened fails its
    /// lookups, and the recipient is deferred).
    pub mailbox_maps: Vec<String>,
    pub mailbox_base: String,
    pub uid_maps: Vec<String>,
    pub gid_maps: Vec<String>,
    pub minimum_uid: u32,
    /// `virtual_mailbox_limit` in bytes, 0 for none.
    pub mailbox_limit: u64,
    /// `virtual_mailbox_lock`: the locks of mbox deliveries, or the text of virtual(8)'s
    /// `fatal:` line for a value it refuses.
    pub mailbox_lock: Result<crate::mailbox::lock::LockKinds, String>,
    /// `deliver_lock_attempts` × `deliver_lock_delay`, `stale_lock_time`.
    pub deliver_lock: crate::mailbox::lock::DeliveryLock,
    pub stale_lock_time: std::time::Duration,
    pub recipient_delimiter: String,
    /// The `type:table` specs as written, for log messages (`not found in …`).
    uid_maps_spec: String,
    gid_maps_spec: String,
    ident: String,
}

impl VirtualSettings {
    /// Read the settings.
    pub fn from_config(cfg: &PostfixConfig) -> VirtualSettings {
        let ident = crate::log::ident(cfg, "virtual");
        let num = |n: &str, d: u64| cfg.get_num(n).unwrap_or(d);
        VirtualSettings {
            domains: cfg.get_list("virtual_mailbox_domains"),
            mailbox_maps: cfg.get_list("virtual_mailbox_maps"),
            mailbox_base: cfg
                .get("virtual_mailbox_base")
                .unwrap_or_default()
                .trim()
                .to_string(),
            uid_maps: cfg.get_list("virtual_uid_maps"),
            gid_maps: cfg.get_list("virtual_gid_maps"),
            minimum_uid: num("virtual_minimum_uid", 100) as u32,
            mailbox_limit: num("virtual_mailbox_limit", 51_200_000),
            // virtual.c: mbox_lock_mask() alone (no "no applicable method" check: a
            // value of commas takes no lock at all).
            mailbox_lock: crate::mailbox::lock::LockKinds::parse(
                "virtual_mailbox_lock",
                &cfg.get("virtual_mailbox_lock")
                    .unwrap_or_else(|| "fcntl, dotlock".into()),
            ),
            deliver_lock: crate::delivery::local::deliver_lock(cfg),
            stale_lock_time: crate::delivery::local::stale_lock_time(cfg),
            recipient_delimiter: cfg.get("recipient_delimiter").unwrap_or_default(),
            uid_maps_spec: cfg.get("virtual_uid_maps").unwrap_or_default(),
            gid_maps_spec: cfg.get("virtual_gid_maps").unwrap_or_default(),
            ident,
        }
    }

    /// Whether `domain` is listed in `virtual_mailbox_domains` (exact names, `!name`
    /// exclusions, `/file` lists and `type:table` lookups of the domain; parent domains
    /// do not match subdomains, Postfix's default `parent_domain_matches_subdomains`).
    pub fn is_virtual_domain(&self, domain: &str) -> bool {
        crate::resolve::lists::domain_list_match(&self.domains, domain, false)
    }

    /// `mail_addr_find()`'s keys for a virtual address: full, without extension, `@domain`.
    /// A table that cannot answer is logged (its own lines) and returned as `Err`.
    fn find(&self, specs: &[String], addr: &str) -> Result<Option<String>, String> {
        let ident = &self.ident;
        let tables: Vec<Arc<dyn Table>> =
            crate::maps::open_list(specs, crate::maps::source::Format::Postmap, &mut |n| {
                n.log(ident)
            });
        let keys = crate::maps::rewrite_address_keys(addr, &self.recipient_delimiter, false);
        crate::maps::find(&tables, &keys)
            .map(|o| o.map(|(_, v)| v))
            .map_err(|e| {
                for w in e.warnings() {
                    crate::log::warning(ident, &w);
                }
                e.to_string()
            })
    }
}

/// Deliver `msg` to the virtual mailbox recipient `rcpt` (`user@virtualdomain`); `orig`
/// is the address before rewriting (the queue file's `O` record), if any. One outcome.
pub fn deliver(
    s: &VirtualSettings,
    msg: &QueuedMessage,
    rcpt: &str,
    orig: Option<&str>,
) -> Vec<Outcome> {
    if let Err(why) = &s.mailbox_lock {
        return vec![crate::delivery::local::agent_down(
            &s.ident, why, rcpt, orig,
        )];
    }
    let orig = orig.unwrap_or(rcpt);
    let (status, dsn, text) = deliver_one(s, msg, rcpt, orig);
    vec![Outcome {
        to: rcpt.to_string(),
        orig_to: (orig != rcpt).then(|| orig.to_string()),
        status,
        dsn: dsn.to_string(),
        text,
    }]
}

const CONFIG_ERROR: &str = "mail system configuration error";

fn deliver_one(
    s: &VirtualSettings,
    msg: &QueuedMessage,
    rcpt: &str,
    orig: &str,
) -> (Status, String, String) {
    let user = rcpt.to_ascii_lowercase();
    let defer_config = |warning: String| {
        crate::log::warning(&s.ident, &warning);
        (
            Status::Deferred,
            "4.3.5".to_string(),
            CONFIG_ERROR.to_string(),
        )
    };
    let mailbox = match s.find(&s.mailbox_maps, &user) {
        Ok(Some(m)) => m,
        Ok(None) => {
            // virtual/unknown.c
            return (
                Status::Bounced,
                "5.1.1".into(),
                format!("unknown user: \"{user}\""),
            );
        }
        Err(e) => return defer_config(format!("table lookup {user}: {e}")),
    };
    let uid = match s.find(&s.uid_maps, &user) {
        Ok(Some(v)) => v,
        Ok(None) => {
            return defer_config(format!(
                "recipient {user}: not found in {}",
                s.uid_maps_spec
            ));
        }
        Err(e) => return defer_config(format!("table lookup {user}: {e}")),
    };
    let uid = match uid.trim().parse::<u32>() {
        Ok(n) if n >= s.minimum_uid => n,
        _ => {
            return defer_config(format!(
                "recipient {user}: bad uid {uid} in {}",
                s.uid_maps_spec
            ));
        }
    };
    let gid = match s.find(&s.gid_maps, &user) {
        Ok(Some(v)) => v,
        Ok(None) => {
            return defer_config(format!(
                "recipient {user}: not found in {}",
                s.gid_maps_spec
            ));
        }
        Err(e) => return defer_config(format!("table lookup {user}: {e}")),
    };
    let gid = match gid.trim().parse::<u32>() {
        Ok(n) if n > 0 => n,
        _ => {
            return defer_config(format!(
                "recipient {user}: bad gid {gid} in {}",
                s.gid_maps_spec
            ));
        }
    };
    let path = format!("{}/{}", s.mailbox_base, mailbox.trim());
    let data = crate::delivery::format_message(msg, orig, rcpt, false);
    let sender = msg.sender.clone();
    // As Postfix: set_eugid(uid, gid) around the delivery (crate::sys::child::write_as).
    let res = crate::sys::child::write_as(&s.ident, uid, gid, || {
        let write = || -> (Status, &'static str, String) {
            if path.ends_with('/') {
                // virtual/maildir.c
                let dir = PathBuf::from(&path);
                if s.mailbox_limit > 0 && data.len() as u64 > s.mailbox_limit {
                    return (
                        Status::Bounced,
                        "5.2.2",
                        "maildir delivery failed: create maildir file: File too large".into(),
                    );
                }
                match crate::mailbox::deliver_maildir(&dir, &data) {
                    Ok(_) => (Status::Sent, "2.0.0", "delivered to maildir".into()),
                    Err(e) => {
                        let (status, dsn) = failure_status(&e);
                        (status, dsn, format!("maildir delivery failed: {e}"))
                    }
                }
            } else {
                // virtual/mailbox.c: deliver_mailbox_file()
                let file = PathBuf::from(&path);
                if let Ok(m) = std::fs::symlink_metadata(&file) {
                    use std::os::unix::fs::MetadataExt;
                    if m.file_type().is_file() && m.uid() != uid {
                        crate::log::warning(
                            &s.ident,
                            "specify \"strict_mailbox_ownership = no\" to ignore mailbox ownership mismatch",
                        );
                        return (
                            Status::Deferred,
                            "4.2.0",
                            format!("destination {path} is not owned by recipient"),
                        );
                    }
                    if s.mailbox_limit > 0
                        && m.len().saturating_add(data.len() as u64 + 128) > s.mailbox_limit
                    {
                        return (
                            Status::Bounced,
                            "5.2.2",
                            format!(
                                "delivery failed to mailbox {path}: error writing message: File too large"
                            ),
                        );
                    }
                }
                let k = s.mailbox_lock.clone().unwrap_or_default();
                let opts = crate::mailbox::MboxOptions {
                    dotlock: k.dotlock,
                    flock: k.flock,
                    fcntl: k.fcntl,
                    delivery_lock: Some(s.deliver_lock),
                    stale_lock_time: s.stale_lock_time,
                    expected_owner: Some(uid),
                    ..Default::default()
                };
                match crate::mailbox::deliver_mbox(&file, &sender, &data, &opts) {
                    Ok(()) => (Status::Sent, "2.0.0", "delivered to mailbox".into()),
                    Err(e) => {
                        let (status, dsn) = failure_status(&e);
                        (
                            status,
                            dsn,
                            format!("delivery failed to mailbox {path}: {e}"),
                        )
                    }
                }
            }
        };
        let (status, dsn, text) = write();
        Res(status, dsn.to_string(), text)
    });
    match res {
        Ok(Res(status, dsn, text)) => (status, dsn, text),
        Err(e) => (
            Status::Deferred,
            "4.3.0".into(),
            format!("cannot deliver as uid {uid}: {e}"),
        ),
    }
}

/// A delivery's result as it travels back from the process that wrote the mailbox.
struct Res(Status, String, String);

impl crate::sys::wire::Wire for Res {
    fn put(&self, e: &mut crate::sys::wire::Enc) {
        self.0.put(e);
        e.str(&self.1).str(&self.2);
    }
    fn get(d: &mut crate::sys::wire::Dec<'_>) -> Option<Self> {
        Some(Res(Status::get(d)?, d.string()?, d.string()?))
    }
}

/// Postfix's `mbox_dsn()`: a full disk or file is permanent, an unsafe file bounces,
/// anything else is retried.
fn failure_status(e: &crate::mailbox::MailboxError) -> (Status, &'static str) {
    use crate::mailbox::MailboxError as E;
    match e {
        E::Unsafe(..) | E::Format(_) => (Status::Bounced, "5.2.0"),
        E::Locked(_) | E::LockFailed(_) => (Status::Deferred, "4.2.0"),
        // Folder operations and Dovecot's session lock lists; delivery does not meet them.
        E::NotFound(_)
        | E::AlreadyExists(_)
        | E::InvalidName(_)
        | E::Cannot { .. }
        | E::Expunged(_)
        | E::LockSettings(_) => (Status::Deferred, "4.2.0"),
        E::Io { source, .. } => match source.raw_os_error() {
            Some(libc::EFBIG) | Some(libc::EDQUOT) => (Status::Bounced, "5.2.2"),
            Some(libc::ENOSPC) => (Status::Deferred, "4.3.0"),
            _ => (Status::Deferred, "4.2.0"),
        },
    }
}
