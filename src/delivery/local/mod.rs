//! Postfix's `local(8)`: final delivery for domains in `mydestination`.
//!
//! For each recipient the queue manager hands over, [`deliver`] looks the local part up in
//! `alias_maps` (values: addresses, `:include:/file`, `|command`, `/file/name`; an alias that
//! names itself delivers to the mailbox, as Postfix does), then in `~/.forward` (same
//! syntax, commands and files run as the user, `\user` and the user's own name deliver to
//! the mailbox), then delivers to the user's
//! mailbox: `home_mailbox` in the user's home (`Maildir/` when it ends in `/`, an mbox file
//! otherwise), or `mail_spool_directory/USER` (mbox). mbox messages get the `From SENDER
//! DATE` line, `Return-Path:`, `X-Original-To:`, `Delivered-To:`, `>From ` quoting and a
//! trailing empty line, exactly as Postfix 3.7's local writes them; Maildir messages the same
//! headers without the `From ` line and quoting.
//!
//! owner- lists (Postfix's `local/alias.c`): when an alias `NAME` is expanded and
//! `owner-NAME` is an alias too, NAME's members get the mail with the envelope sender
//! `owner-NAME@$myorigin` (the owner alias's value with `expand_owner_alias = yes`): their
//! mbox `From ` line and `Return-Path:` name the list owner, as the real local(8) writes
//! them. With `owner_request_special = yes` (default) and a `-` `recipient_delimiter`,
//! `owner-NAME` and `NAME-request` are not split at their `-`.
//!
//! An alias table that cannot answer defers the recipient as Postfix's `local/alias.c` does:
//! the table's own warning, `hash:/etc/aliases: lookup of 'user' failed`, and `dsn=4.3.0,
//! status=deferred (alias database unavailable)` (the `owner-` lookup the same); it is
//! never delivered as if it had no alias. Alias tables are opened through the map cache at
//! each delivery (`hash:` sources read in aliases(5) format), so `newaliases` takes effect
//! at once, as Postfix's local(8) restarts when a table changes.
//!
//! An unknown user (no alias, no account) bounces with `5.1.1 unknown user: "x"`, or, with
//! `luser_relay` set, the mail goes to that address (`$user`, `$local`, `$domain`,
//! `$extension` expanded; `@$myorigin` appended without a domain), as Postfix's
//! `deliver_unknown()` does; it is logged `to=<relay>, orig_to=<recipient>`.
//!
//! # Privileges (DESIGN.md §3)
//! [`deliver`] runs in the local delivery process ([`crate::qmgr::local_server`]), which is root, after it
//! has checked the request against the queue file: alias, `:include:` and `.forward`
//! resolution happen there (`.forward` is read with the thread's filesystem identity
//! switched to the user, `setfsuid`/`setfsgid`); every mailbox write and file write runs
//! with the worker's effective ids switched to the recipient and back
//! ([`crate::sys::child::write_as`], Postfix's `set_eugid()`: no fork, the worker being
//! single-threaded), and every command in a forked process that has become the
//! recipient for good ([`crate::sys::child::run_as`]: supplementary groups set to the one
//! gid, then the gid, then the uid, as Postfix's `set_ugid()`). Commands and files named by aliases run as
//! `default_privs` (Postfix: the alias database owner, unless root), those named by a
//! `.forward` or `mailbox_command` as the user. The spool follows Postfix's
//! local/mailbox.c: a spool anyone may write is written as the recipient throughout, one
//! its group may write as the recipient with that group (to create the file and the
//! dotlock), any other one is left to root to create the mbox (owned by the recipient,
//! never through a symlink) and take the dotlock, and the recipient appends under the
//! kernel locks. A file named in a `.forward` or an alias is locked the same way with the
//! recipient's rights, as local/file.c does (`MBOX_DOT_LOCK_MAY_FAIL`): a dotlock that
//! cannot be created beside it is logged `warning: unable to create lock file FILE.lock:
//! Permission denied` and the write goes on under the kernel locks alone.
//!
//! # Locks
//! `mailbox_delivery_lock` (default `fcntl, dotlock`) names the locks of mailbox and file
//! deliveries, as local/mailbox.c and local/file.c take them through `mbox_open()`: the
//! dotlock, then `flock(2)`, then `fcntl`, each only when named
//! ([`crate::mailbox::lock::LockKinds`]), each given up after `deliver_lock_attempts` ×
//! `deliver_lock_delay` with Postfix's `4.2.0` texts. A value Postfix's local(8) refuses
//! at start-up (`unknown mailbox_delivery_lock value "bogus" in "bogus"`, `bad string
//! length 0 < 1: mailbox_delivery_lock = `, `… specifies no applicable mailbox locking
//! method`) is logged as its `fatal:` line at each delivery, and every recipient is
//! deferred `4.3.0 unknown mail transport error` ([`agent_down`]); Postfix's queue
//! manager leaves the message in the active queue instead, waiting for the agent the
//! master throttles (compat-fixtures/locks). The obsolete `sun_mailtool_compatibility =
//! yes` keeps only the dotlock of the value, with local(8)'s start-up warning
//! ([`mailtool_warning`]).
//! When not root, everything runs as the invoking user, in place.
//!
//! # Group commit (issue 18)
//! In the local delivery process, [`deliver_deferring`] resolves a recipient as [`deliver`]
//! does but puts its mailbox write off; [`commit_deferred`] then makes the writes of a whole
//! batch of requests, those to one mbox under one hold of its locks (with the same
//! privileges and the same lock calls as one delivery) and one fsync
//! ([`crate::mailbox::deliver_mbox_batch`]), those to one Maildir as the recipient with
//! their files written to `tmp/` and fsynced side by side (a few threads, joined before the
//! worker switches its ids back), renamed into `new/` and one fsync of `new/`
//! ([`crate::mailbox::deliver_maildir_batch`]). Each message keeps its own result. (The
//! queue manager gathers batches only for mbox mailboxes: Maildir deliveries come one per
//! request, see `qmgr/deliver.rs` `batches`.)
//! `mailbox_size_limit` is checked for each message under the lock, against the box's size
//! with the messages appended before it (an mbox message is refused with `5.2.2 error writing message:
//! File too large` and not written). Mailboxes are opened
//! with `O_NOFOLLOW` and must be regular files with one link owned by the recipient
//! ([`crate::mailbox`]).
//!
//! # main.cf parameters read
//! `alias_maps`, `mailbox_command`, `home_mailbox`, `mail_spool_directory`, `mailbox_size_limit`,
//! `recipient_delimiter`, `myorigin`, `default_privs`, `luser_relay`, `expand_owner_alias`,
//! `owner_request_special`, `mailbox_delivery_lock`, `deliver_lock_attempts`,
//! `deliver_lock_delay`, `stale_lock_time`.
//!
//! # Known limits
//! * XXX Only `$home/.forward` (no `forward_path`); `mailbox_command` is run through
//!   `/bin/sh` without Postfix's `$name` expansion; a `luser_relay` address is delivered
//!   locally by its local part whatever its domain; no `allow_mail_to_*`
//!   or `local_recipient_maps` checks here.
//! * XXX In a spool directory only its group may write, the append too is made with that
//!   group (Postfix switches back to the user's own group for it, for group quotas).
//! * XXX An owner- list's failures are reported to the original sender: Postfix re-injects
//!   the expansion as a new message from `owner-NAME` (`forwarded as ID`), so its bounces
//!   go to the owner; Postern delivers in place and the queue manager bounces to the
//!   message's sender.
//! * XXX An alias that expands to a non-local address is deferred: Postfix re-injects it
//!   (`forwarded as ID`), which needs the outbound path.
//! * XXX When one expansion of an alias fails temporarily, the whole alias is retried later
//!   and the members that got the mail get it again (Postfix keeps a duplicate filter only
//!   within one delivery attempt as well).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::postfix::PostfixConfig;
use crate::maps::Table;
use crate::queue::QueuedMessage;

/// What local delivery needs from main.cf, read once per configuration.
pub struct LocalSettings {
    /// `alias_maps` specs, opened through the map cache at each delivery (so that
    /// `newaliases` takes effect at once, as Postfix's local(8) restarts when a table
    /// changes); `hash:`/`btree:` sources are read in aliases(5) format.
    pub alias_maps: Vec<String>,
    /// The log name of local(8) (`postfix/local`), for the alias table warnings.
    pub ident: String,
    pub home_mailbox: String,
    pub mail_spool_directory: PathBuf,
    pub mailbox_size_limit: u64,
    pub recipient_delimiter: String,
    pub myorigin: String,
    /// `mailbox_command`: when set, mailbox delivery runs it as the user instead.
    pub mailbox_command: String,
    /// `default_privs` uid/gid, for alias commands and files.
    pub default_privs: (u32, u32),
    /// `luser_relay` (unexpanded): where mail for unknown local users goes instead of
    /// bouncing.
    pub luser_relay: String,
    /// `expand_owner_alias`: the sender of an `owner-` list is the owner alias's value
    /// instead of `owner-NAME`.
    pub expand_owner_alias: bool,
    /// `owner_request_special`: `owner-NAME` and `NAME-request` are not split at a `-`
    /// `recipient_delimiter`.
    pub owner_request_special: bool,
    /// `deliver_lock_attempts` × `deliver_lock_delay`: how mailbox locks are waited for.
    pub deliver_lock: crate::mailbox::lock::DeliveryLock,
    /// `stale_lock_time`: a dotlock older than this is removed.
    pub stale_lock_time: std::time::Duration,
    /// `mailbox_delivery_lock`: the locks of mbox and file deliveries, or the text of
    /// local(8)'s `fatal:` line for a value it refuses ([`mailbox_lock`]).
    pub mailbox_lock: Result<crate::mailbox::lock::LockKinds, String>,
    /// `sun_mailtool_compatibility = yes` with a readable `mailbox_delivery_lock`: the
    /// process's first delivery logs local(8)'s start-up warning ([`mailtool_warning`]).
    pub mailtool_warning: bool,
}

/// `mailbox_delivery_lock` (`fcntl, dotlock`) as local(8) reads it at start-up
/// (`local_mask_init()`): an unknown name or an empty value is fatal, and so is a value
/// that names no lock. The obsolete `sun_mailtool_compatibility = yes` keeps only the
/// dotlock of the value (so `fcntl` alone then names no lock: fatal); whether local(8)
/// warns about it is [`mailtool_warning`].
pub fn mailbox_lock(cfg: &PostfixConfig) -> Result<crate::mailbox::lock::LockKinds, String> {
    let v = cfg
        .get("mailbox_delivery_lock")
        .unwrap_or_else(|| "fcntl, dotlock".into());
    let mut k = crate::mailbox::lock::LockKinds::parse("mailbox_delivery_lock", &v)?;
    if cfg.get_bool("sun_mailtool_compatibility").unwrap_or(false) {
        k.flock = false;
        k.fcntl = false;
    }
    k.require_some()
}

/// local(8)'s start-up warning for `sun_mailtool_compatibility = yes`: logged once a value
/// of `mailbox_delivery_lock` was read without error, before the check that some lock is
/// left (compat-fixtures/locks: the warning, then the `fatal:` line when none is).
const MAILTOOL_WARNING: &str = "sun_mailtool_compatibility: deprecated parameter, use \"mailbox_delivery_lock = dotlock\" instead";

/// Whether local(8) logs [`MAILTOOL_WARNING`] at start-up with this configuration.
pub fn mailtool_warning(cfg: &PostfixConfig) -> bool {
    cfg.get_bool("sun_mailtool_compatibility").unwrap_or(false)
        && crate::mailbox::lock::LockKinds::parse(
            "mailbox_delivery_lock",
            &cfg.get("mailbox_delivery_lock")
                .unwrap_or_else(|| "fcntl, dotlock".into()),
        )
        .is_ok()
}

/// `deliver_lock_attempts` (20) and `deliver_lock_delay` (1s), as Postfix's local(8) and
/// virtual(8) read them.
pub fn deliver_lock(cfg: &PostfixConfig) -> crate::mailbox::lock::DeliveryLock {
    let d = crate::mailbox::lock::DeliveryLock::default();
    crate::mailbox::lock::DeliveryLock {
        attempts: cfg
            .get("deliver_lock_attempts")
            .and_then(|v| v.trim().parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(d.attempts),
        delay: cfg.get_time("deliver_lock_delay", 's').unwrap_or(d.delay),
    }
}

/// `stale_lock_time` (500s).
pub fn stale_lock_time(cfg: &PostfixConfig) -> std::time::Duration {
    cfg.get_time("stale_lock_time", 's')
        .unwrap_or(crate::mailbox::lock::STALE_DOTLOCK)
}

impl LocalSettings {
    /// Read the settings.
    pub fn from_config(cfg: &PostfixConfig, ident: &str) -> LocalSettings {
        let alias_maps = cfg.get_list("alias_maps");
        let privs = cfg.get("default_privs").unwrap_or_else(|| "nobody".into());
        let default_privs = nix::unistd::User::from_name(privs.trim())
            .ok()
            .flatten()
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
            .unwrap_or((65534, 65534));
        let num = |n: &str, d: u64| cfg.get_num(n).unwrap_or(d);
        LocalSettings {
            alias_maps,
            ident: ident.to_string(),
            home_mailbox: cfg
                .get("home_mailbox")
                .unwrap_or_default()
                .trim()
                .to_string(),
            mail_spool_directory: PathBuf::from(
                cfg.get("mail_spool_directory")
                    .unwrap_or_else(|| "/var/mail".into())
                    .trim(),
            ),
            mailbox_size_limit: num("mailbox_size_limit", 51_200_000),
            recipient_delimiter: cfg.get("recipient_delimiter").unwrap_or_default(),
            myorigin: cfg.myorigin().unwrap_or_else(|| "localhost".into()),
            mailbox_command: cfg
                .raw("mailbox_command")
                .unwrap_or_default()
                .trim()
                .to_string(),
            default_privs,
            luser_relay: cfg
                .raw("luser_relay")
                .unwrap_or_default()
                .trim()
                .to_string(),
            expand_owner_alias: cfg.get_bool("expand_owner_alias").unwrap_or(false),
            owner_request_special: cfg.get_bool("owner_request_special").unwrap_or(true),
            deliver_lock: deliver_lock(cfg),
            stale_lock_time: stale_lock_time(cfg),
            mailbox_lock: mailbox_lock(cfg),
            mailtool_warning: mailtool_warning(cfg),
        }
    }

    /// The mbox options of a delivery: `mailbox_delivery_lock`'s locks (the default ones
    /// when it is bad: [`deliver`] refuses to deliver then), Postfix's lock bounds.
    fn mbox_options(&self) -> crate::mailbox::MboxOptions {
        let k = self.mailbox_lock.clone().unwrap_or_default();
        crate::mailbox::MboxOptions {
            dotlock: k.dotlock,
            flock: k.flock,
            fcntl: k.fcntl,
            delivery_lock: Some(self.deliver_lock),
            stale_lock_time: self.stale_lock_time,
            ..Default::default()
        }
    }
}

impl LocalSettings {
    /// The alias tables, through the process-wide cache (a table that cannot be opened is
    /// logged once and fails every lookup).
    fn alias_tables(&self) -> Vec<Arc<dyn Table>> {
        let ident = self.ident.clone();
        crate::maps::open_list(
            &self.alias_maps,
            crate::maps::source::Format::Aliases,
            &mut |n| n.log(&ident),
        )
    }
}

struct Ctx<'a> {
    s: &'a LocalSettings,
    /// The message; its sender is replaced while an `owner-` list's members are delivered.
    msg: std::borrow::Cow<'a, QueuedMessage>,
    /// The recipient as queued (for `orig_to` and `X-Original-To:`).
    orig: String,
    /// Whom commands and files run as: `default_privs` for aliases, the user for a
    /// `.forward`.
    privs: (u32, u32),
    /// The user whose `.forward` or `mailbox_command` runs a command: its environment
    /// (`HOME`, `USER`, `LOGNAME`, `SHELL`) and working directory.
    user: Option<nix::unistd::User>,
    out: Vec<Outcome>,
    /// Whether `luser_relay` has been used for this recipient (it is used once).
    lusered: bool,
    /// Mailbox (mbox, Maildir) writes put off for a group commit ([`deliver_deferring`]); `None`:
    /// each is made at once.
    deferred: Option<Vec<DeferredWrite>>,
}

impl Ctx<'_> {
    fn push(&mut self, to: &str, status: Status, dsn: &str, text: String) {
        self.out.push(Outcome {
            to: to.to_string(),
            orig_to: (to != self.orig).then(|| self.orig.clone()),
            status,
            dsn: dsn.to_string(),
            text,
        });
    }
}

/// Deliver `msg` to the local recipient `rcpt` (`user@localdomain`); `orig` is the address
/// before rewriting (the queue file's `O` record), if any.
pub fn deliver(
    s: &LocalSettings,
    msg: &QueuedMessage,
    rcpt: &str,
    orig: Option<&str>,
) -> Vec<Outcome> {
    resolve(s, msg, rcpt, orig, false).0
}

/// [`deliver`] and [`deliver_deferring`]: expand `rcpt` and deliver, with the writes to
/// users' mailboxes made at once (`defer` false: none returned) or put off and returned.
fn resolve(
    s: &LocalSettings,
    msg: &QueuedMessage,
    rcpt: &str,
    orig: Option<&str>,
    defer: bool,
) -> (Vec<Outcome>, Vec<DeferredWrite>) {
    if s.mailtool_warning {
        // Postfix's local(8) warns when each of its processes starts; a delivery worker
        // (or a queue manager delivering itself) warns at its first delivery.
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| crate::log::warning(&s.ident, MAILTOOL_WARNING));
    }
    if let Err(why) = &s.mailbox_lock {
        return (vec![agent_down(&s.ident, why, rcpt, orig)], Vec::new());
    }
    let mut ctx = Ctx {
        s,
        msg: std::borrow::Cow::Borrowed(msg),
        orig: orig.unwrap_or(rcpt).to_string(),
        privs: s.default_privs,
        user: None,
        out: Vec::new(),
        lusered: false,
        deferred: defer.then(Vec::new),
    };
    let mut seen = Vec::new();
    expand_address(&mut ctx, rcpt, 0, &mut seen);
    let writes = ctx.deferred.take().unwrap_or_default();
    (ctx.out, writes)
}

/// A setting local(8) or virtual(8) refuses at start-up (`mailbox_delivery_lock`,
/// `virtual_mailbox_lock`): Postfix's agent logs `fatal: WHY` each time the master starts
/// it, so it delivers nothing, whatever the recipient. Postern logs the same line at each
/// delivery and defers the recipient with the queue manager's words for an agent that
/// died (`4.3.0 unknown mail transport error`); Postfix's queue manager keeps the message
/// in the active queue instead, waiting for the throttled agent (compat-fixtures/locks).
pub(crate) fn agent_down(ident: &str, why: &str, rcpt: &str, orig: Option<&str>) -> Outcome {
    crate::log::fatal(ident, why);
    Outcome {
        to: rcpt.to_string(),
        orig_to: orig.filter(|o| *o != rcpt).map(str::to_string),
        status: crate::delivery::Status::Deferred,
        dsn: "4.3.0".into(),
        text: "unknown mail transport error".into(),
    }
}

/// A write to a user's mailbox (mbox or Maildir) put off by [`deliver_deferring`], to be
/// made by [`commit_deferred`] together with the other writes to the same mailbox.
pub struct DeferredWrite {
    /// Which of the outcomes [`deliver_deferring`] returned stands for this write.
    pub outcome: usize,
    /// That outcome as it will read when the write is done (to, orig_to).
    placeholder: Outcome,
    target: PathBuf,
    /// `mail_spool_directory/USER` (Postfix's least-privilege spool rules), or an mbox in
    /// the home directory (`home_mailbox`).
    spool: bool,
    /// A Maildir in the home directory (`home_mailbox` ending in `/`).
    maildir: bool,
    uid: u32,
    gid: u32,
    user: String,
    sender: String,
    data: Vec<u8>,
    opts: crate::mailbox::MboxOptions,
}

/// As [`deliver`], but a delivery to a user's mailbox (the spool mbox or `home_mailbox`,
/// mbox or Maildir) is not made: its outcome is a placeholder (deferred, in case the write
/// never happens), and the write is returned, for [`commit_deferred`] to make with the
/// other deliveries to the same mailbox under one lock hold and one fsync (issue 18's
/// group commit). Everything else (aliases' and `.forward`'s files and commands,
/// `mailbox_command`) is done at once, as by [`deliver`].
pub fn deliver_deferring(
    s: &LocalSettings,
    msg: &QueuedMessage,
    rcpt: &str,
    orig: Option<&str>,
) -> (Vec<Outcome>, Vec<DeferredWrite>) {
    resolve(s, msg, rcpt, orig, true)
}

/// Make the writes [`deliver_deferring`] put off: those to one mbox (same file, same
/// user) in one [`crate::mailbox::deliver_mbox_batch`] (the locks taken once, the messages
/// appended in the order given, one fsync), under the same privileges and `mailbox_size_limit`
/// as a single delivery; those to one Maildir in one
/// [`crate::mailbox::deliver_maildir_batch`] as the recipient (every file written to
/// `tmp/`, the files fsynced side by side, renamed into `new/`, one fsync of `new/`).
/// Returns each write's final outcome, in the order given; a delivery is `sent` only once
/// the fsyncs that cover it (its file's and its directory's) have returned.
pub fn commit_deferred(s: &LocalSettings, writes: &[DeferredWrite]) -> Vec<Outcome> {
    let mut acts: Vec<Option<Act>> = writes.iter().map(|_| None).collect();
    let mut done = vec![false; writes.len()];
    for i in 0..writes.len() {
        if done[i] {
            continue;
        }
        let w = &writes[i];
        let group: Vec<usize> = (i..writes.len())
            .filter(|&j| {
                let o = &writes[j];
                !done[j]
                    && o.target == w.target
                    && o.spool == w.spool
                    && o.maildir == w.maildir
                    && (o.uid, o.gid) == (w.uid, w.gid)
            })
            .collect();
        for &j in &group {
            done[j] = true;
        }
        let items: Vec<crate::mailbox::MboxDelivery<'_>> = group
            .iter()
            .map(|&j| crate::mailbox::MboxDelivery {
                from_line_sender: &writes[j].sender,
                message: &writes[j].data,
                size_limit: s.mailbox_size_limit,
            })
            .collect();
        let res = if w.maildir {
            // Everything in the home directory as the recipient.
            let msgs: Vec<&[u8]> = group.iter().map(|&j| writes[j].data.as_slice()).collect();
            write_as_each(&s.ident, w.uid, w.gid, msgs.len(), || {
                crate::mailbox::deliver_maildir_batch(&w.target, &msgs)
                    .iter()
                    .map(|r| match r {
                        Ok(_) => Act::sent("delivered to maildir"),
                        Err(e) => Act::from_mailbox(e),
                    })
                    .collect()
            })
        } else if w.spool {
            deliver_spool(s, &w.target, w.uid, w.gid, &items, &w.opts)
        } else {
            write_as_each(&s.ident, w.uid, w.gid, items.len(), || {
                batch_acts(&w.target, &items, &w.opts)
            })
        };
        for (&j, a) in group.iter().zip(res) {
            acts[j] = Some(a);
        }
    }
    writes
        .iter()
        .zip(acts)
        .map(|(w, a)| {
            let a = a.unwrap_or_else(|| {
                Act::failed(Status::Deferred, "4.3.0", "mailbox write not made")
            });
            mbox_outcome(w.placeholder.clone(), a, &w.target, &w.user)
        })
        .collect()
}

/// The outcome of a user's mbox delivery: `delivered to mailbox`, or Postfix's `cannot
/// update mailbox FILE for user USER. REASON`.
fn mbox_outcome(mut o: Outcome, res: Act, target: &Path, user: &str) -> Outcome {
    let sent = res.status == Status::Sent;
    o.status = res.status;
    o.dsn = res.dsn;
    o.text = if sent {
        res.text
    } else {
        format!(
            "cannot update mailbox {} for user {user}. {}",
            target.display(),
            res.text
        )
    };
    o
}

/// [`crate::mailbox::deliver_mbox_batch`]'s results as delivery results.
fn batch_acts(
    target: &Path,
    items: &[crate::mailbox::MboxDelivery<'_>],
    opts: &crate::mailbox::MboxOptions,
) -> Vec<Act> {
    crate::mailbox::deliver_mbox_batch(target, items, opts)
        .iter()
        .map(|r| match r {
            Ok(()) => Act::sent("delivered to mailbox"),
            Err(e) => Act::from_mailbox(e),
        })
        .collect()
}

fn local_part(addr: &str) -> &str {
    addr.rsplit_once('@').map(|(l, _)| l).unwrap_or(addr)
}

/// Strip the `recipient_delimiter` extension: `user+ext` → `user`.
fn strip_extension<'a>(local: &'a str, delim: &str) -> &'a str {
    if delim.is_empty() {
        return local;
    }
    match local.find(|c| delim.contains(c)) {
        Some(i) if i > 0 => &local[..i],
        _ => local,
    }
}

const MAX_DEPTH: usize = 20;

fn expand_address(ctx: &mut Ctx<'_>, addr: &str, depth: usize, seen: &mut Vec<String>) {
    let local = local_part(addr).to_ascii_lowercase();
    // owner_request_special: `owner-list` and `list-request` keep their `-` when that is
    // the recipient_delimiter (Postfix local/local.c).
    let special = ctx.s.owner_request_special
        && ctx.s.recipient_delimiter.contains('-')
        && (local.starts_with("owner-") || local.ends_with("-request"));
    let base = if special {
        local.clone()
    } else {
        strip_extension(&local, &ctx.s.recipient_delimiter).to_string()
    };
    if depth > MAX_DEPTH {
        ctx.push(
            addr,
            Status::Bounced,
            "5.4.6",
            "mail forwarding loop for ".to_string() + addr,
        );
        return;
    }
    if !seen.contains(&base) && !ctx.s.alias_maps.is_empty() {
        let keys = if base != local {
            vec![local.clone(), base.clone()]
        } else {
            vec![local.clone()]
        };
        let tables = ctx.s.alias_tables();
        let mut found = None;
        'keys: for k in &keys {
            for t in &tables {
                match t.lookup(k) {
                    Ok(Some(v)) => {
                        found = Some(v);
                        break 'keys;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // local/alias.c: the table's own warning, `TYPE:NAME: lookup of
                        // 'KEY' failed`, and the recipient is deferred (never delivered
                        // as if it had no alias).
                        if let Some(w) = e.table_warning() {
                            crate::log::warning(&ctx.s.ident, &w);
                        }
                        crate::log::warning(
                            &ctx.s.ident,
                            &format!("{}: lookup of '{k}' failed", t.spec()),
                        );
                        ctx.push(
                            addr,
                            Status::Deferred,
                            "4.3.0",
                            "alias database unavailable".into(),
                        );
                        return;
                    }
                }
            }
        }
        if let Some(value) = found {
            seen.push(base.clone());
            // Postfix's owner- lists (local/alias.c): when `owner-NAME` is an alias too,
            // the members of NAME get the mail with the envelope sender `owner-NAME@
            // $myorigin` (or the owner alias's value with expand_owner_alias), so that
            // their mailboxes' Return-Path and later bounces name the list owner.
            let owner = match owner_of(ctx, &tables, &base) {
                Ok(o) => o,
                Err(e) => {
                    for w in e.warnings() {
                        crate::log::warning(&ctx.s.ident, &w);
                    }
                    ctx.push(
                        addr,
                        Status::Deferred,
                        "4.3.0",
                        "alias database unavailable".into(),
                    );
                    seen.pop();
                    return;
                }
            };
            let saved = owner.map(|o| std::mem::replace(&mut ctx.msg.to_mut().sender, o));
            for item in split_alias_value(&value) {
                expand_item(ctx, addr, &item, depth + 1, seen);
            }
            if let Some(sender) = saved {
                ctx.msg.to_mut().sender = sender;
            }
            seen.pop();
            return;
        }
    }
    // One password-file lookup for both the .forward and the mailbox.
    let pw = nix::unistd::User::from_name(&base);
    if !seen.contains(&base)
        && let Ok(Some(pw)) = &pw
        && let Some(items) = read_forward(pw)
    {
        seen.push(base.clone());
        let saved = (ctx.privs, ctx.user.take());
        ctx.privs = (pw.uid.as_raw(), pw.gid.as_raw());
        ctx.user = Some(pw.clone());
        for item in items {
            expand_item(ctx, addr, &item, depth + 1, seen);
        }
        (ctx.privs, ctx.user) = saved;
        seen.pop();
        return;
    }
    deliver_user(ctx, addr, &base, pw);
}

/// The sender for the members of alias `name` when `owner-name` is an alias as well; `Err`
/// when the alias tables could not answer (Postfix defers the alias).
fn owner_of(
    ctx: &Ctx<'_>,
    tables: &[Arc<dyn Table>],
    name: &str,
) -> Result<Option<String>, crate::maps::LookupError> {
    if name.starts_with("owner-") {
        return Ok(None);
    }
    let key = format!("owner-{name}");
    let keys = [crate::maps::Key {
        key: key.clone(),
        partial: false,
    }];
    let Some((_, value)) = crate::maps::find(tables, &keys)? else {
        return Ok(None);
    };
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let owner = if ctx.s.expand_owner_alias {
        unquote(value).to_string()
    } else {
        key
    };
    Ok(Some(if owner.contains('@') {
        owner
    } else {
        format!("{owner}@{}", ctx.s.myorigin)
    }))
}

/// The entries of `~/.forward` (read with the user's identity, never through a symlink),
/// or `None` when there is no usable file.
fn read_forward(pw: &nix::unistd::User) -> Option<Vec<String>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = pw.dir.join(".forward");
    let _id = FsIdentity::switch(pw.uid.as_raw(), pw.gid.as_raw());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || (meta.uid() != pw.uid.as_raw() && meta.uid() != 0) {
        return None;
    }
    let mut text = String::new();
    f.take(1 << 20).read_to_string(&mut text).ok()?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let items = split_alias_value(&lines.join(","));
    (!items.is_empty()).then_some(items)
}

/// Split an alias value at commas outside double quotes.
fn split_alias_value(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in v.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

fn expand_item(ctx: &mut Ctx<'_>, parent: &str, item: &str, depth: usize, seen: &mut Vec<String>) {
    let item = unquote(item.trim());
    if let Some(user) = item.strip_prefix('\\') {
        // `\user`: the mailbox itself, no alias or .forward lookup.
        let addr = if user.contains('@') {
            user.to_string()
        } else {
            format!("{user}@{}", ctx.s.myorigin)
        };
        let base =
            strip_extension(local_part(&addr), &ctx.s.recipient_delimiter).to_ascii_lowercase();
        let pw = nix::unistd::User::from_name(&base);
        deliver_user(ctx, &addr, &base, pw);
    } else if let Some(file) = item.strip_prefix(":include:") {
        match std::fs::read_to_string(file.trim()) {
            Ok(text) => {
                let joined: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with('#'))
                    .collect();
                for sub in split_alias_value(&joined.join(",")) {
                    expand_item(ctx, parent, &sub, depth + 1, seen);
                }
            }
            Err(e) => ctx.push(
                parent,
                Status::Deferred,
                "4.3.0",
                format!(
                    "cannot open include file {}: {}",
                    file.trim(),
                    crate::config::error::strerror(&e)
                ),
            ),
        }
    } else if let Some(cmd) = item.strip_prefix('|') {
        deliver_command(ctx, parent, cmd.trim());
    } else if item.starts_with('/') {
        deliver_file(ctx, parent, Path::new(item));
    } else {
        let addr = if item.contains('@') {
            let (_, dom) = item.rsplit_once('@').unwrap_or(("", ""));
            if !dom.eq_ignore_ascii_case(&ctx.s.myorigin) && !is_same_local(ctx, dom) {
                ctx.push(
                    item,
                    Status::Deferred,
                    "4.3.0",
                    "delivery temporarily suspended: forwarding to a remote address is not implemented in this version of Postern".into(),
                );
                return;
            }
            item.to_string()
        } else {
            format!("{item}@{}", ctx.s.myorigin)
        };
        expand_address(ctx, &addr, depth, seen);
    }
}

fn is_same_local(ctx: &Ctx<'_>, dom: &str) -> bool {
    ctx.orig
        .rsplit_once('@')
        .is_some_and(|(_, d)| d.eq_ignore_ascii_case(dom))
}

use crate::sys::fsid::FsIdentity;

use super::{Outcome, Status, format_message};

/// Map a mailbox error to Postfix's delivery status (local/mailbox.c with `mbox_dsn()`):
/// an unsafe mailbox or a full one bounces, anything else is retried.
fn mailbox_failure(e: &crate::mailbox::MailboxError) -> (Status, &'static str, String) {
    use crate::mailbox::MailboxError as E;
    match e {
        // The reason alone, as Postfix's safe_open() words it (`… for user U. file has 2
        // hard links`, `file is a symbolic link`).
        E::Unsafe(_, why) => (Status::Bounced, "5.2.0", why.clone()),
        E::Format(_) => (Status::Bounced, "5.2.0", e.to_string()),
        E::Locked(_) | E::LockFailed(_) => (Status::Deferred, "4.2.0", e.to_string()),
        // Folder operations and Dovecot's session lock lists; delivery does not meet them.
        E::NotFound(_)
        | E::AlreadyExists(_)
        | E::InvalidName(_)
        | E::Cannot { .. }
        | E::Expunged(_)
        | E::LockSettings(_) => (Status::Deferred, "4.2.0", e.to_string()),
        E::Io { source, .. } => match source.raw_os_error() {
            Some(libc::EFBIG) | Some(libc::EDQUOT) => (
                Status::Bounced,
                "5.2.2",
                "error writing message: File too large".into(),
            ),
            Some(libc::ENOSPC) => (Status::Deferred, "4.3.0", e.to_string()),
            // What only opening the file meets (writing to an open one never does): safe_open()'s
            // `cannot open file: %m`, bounced with mbox_open()'s 5.2.0 as Postfix 3.7 does
            // (run here: another user's file named in a .forward, a symlink planted by
            // another user in a sticky spool, which the kernel's protected_symlinks refuses).
            Some(
                code @ (libc::EACCES
                | libc::EPERM
                | libc::ENOENT
                | libc::ENOTDIR
                | libc::EISDIR
                | libc::EROFS),
            ) => (
                Status::Bounced,
                "5.2.0",
                format!(
                    "cannot open file: {}",
                    nix::errno::Errno::from_raw(code).desc()
                ),
            ),
            _ => (Status::Deferred, "4.2.0", e.to_string()),
        },
    }
}

/// Create a missing spool mbox as root, owned by the user (mode 0600, never through a
/// symlink), as Postfix does for a spool directory the user cannot write.
fn create_spool_mbox(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => {
            if nix::unistd::geteuid().is_root() {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
            }
            f.sync_all()
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deliver to `user`'s mailbox; `pw` is its password-file entry, looked up by the caller.
fn deliver_user(
    ctx: &mut Ctx<'_>,
    addr: &str,
    user: &str,
    pw: nix::Result<Option<nix::unistd::User>>,
) {
    let pw = match pw {
        Ok(Some(pw)) => pw,
        Ok(None) if !ctx.s.luser_relay.is_empty() && !ctx.lusered => {
            // Postfix's deliver_unknown(): the luser_relay address, with $user, $local,
            // $domain and $extension expanded, receives the mail instead.
            let local = local_part(addr);
            let domain = addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            let ext = local
                .strip_prefix(user)
                .map(|e| e.get(1..).unwrap_or(""))
                .unwrap_or("");
            let mut t = ctx.s.luser_relay.clone();
            for (k, v) in [
                ("user", user),
                ("local", local),
                ("domain", domain),
                ("extension", ext),
            ] {
                t = t
                    .replace(&format!("${{{k}}}"), v)
                    .replace(&format!("${k}"), v);
            }
            if !t.contains('@') {
                t = format!("{t}@{}", ctx.s.myorigin);
            }
            ctx.lusered = true;
            expand_address(ctx, &t, 1, &mut Vec::new());
            return;
        }
        Ok(None) => {
            ctx.push(
                addr,
                Status::Bounced,
                "5.1.1",
                format!("unknown user: \"{user}\""),
            );
            return;
        }
        Err(e) => {
            ctx.push(
                addr,
                Status::Deferred,
                "4.3.0",
                format!("user lookup error for \"{user}\": {e}"),
            );
            return;
        }
    };
    let (uid, gid) = (pw.uid.as_raw(), pw.gid.as_raw());
    let s = ctx.s;
    if !s.mailbox_command.is_empty() {
        // mailbox_command (procmail, maildrop, …) takes over, run as the user.
        let saved = (ctx.privs, ctx.user.take());
        ctx.privs = (uid, gid);
        ctx.user = Some(pw);
        let cmd = s.mailbox_command.clone();
        deliver_command(ctx, addr, &cmd);
        (ctx.privs, ctx.user) = saved;
        return;
    }
    let data = format_message(&ctx.msg, &ctx.orig, addr, false);
    let maildir = s.home_mailbox.ends_with('/');
    let target = if s.home_mailbox.is_empty() {
        s.mail_spool_directory.join(user)
    } else {
        pw.dir.join(&s.home_mailbox)
    };
    let opts = crate::mailbox::MboxOptions {
        expected_owner: Some(uid),
        ..s.mbox_options()
    };
    let sender = ctx.msg.sender.clone();
    if let Some(deferred) = ctx.deferred.as_mut() {
        // Group commit: the write is made later with the others to this mbox
        // ([`commit_deferred`]); until then the outcome says it is not done.
        let placeholder = Outcome {
            to: addr.to_string(),
            orig_to: (addr != ctx.orig).then(|| ctx.orig.clone()),
            status: Status::Deferred,
            dsn: "4.3.0".into(),
            text: "mailbox write not made".into(),
        };
        deferred.push(DeferredWrite {
            outcome: ctx.out.len(),
            placeholder: placeholder.clone(),
            target,
            spool: s.home_mailbox.is_empty(),
            maildir,
            uid,
            gid,
            user: user.to_string(),
            sender,
            data,
            opts,
        });
        ctx.out.push(placeholder);
        return;
    }
    let one = [crate::mailbox::MboxDelivery {
        from_line_sender: &sender,
        message: &data,
        size_limit: s.mailbox_size_limit,
    }];
    let res = if s.home_mailbox.is_empty() {
        deliver_spool(s, &target, uid, gid, &one, &opts)
            .pop()
            .unwrap_or_else(|| Act::failed(Status::Deferred, "4.3.0", "no result"))
    } else if maildir {
        // Everything in the home directory as the recipient (Postfix's local(8) does it all
        // with the recipient's privileges there).
        write_as(
            &s.ident,
            uid,
            gid,
            || match crate::mailbox::deliver_maildir(&target, &data) {
                Ok(_) => Act::sent("delivered to maildir"),
                Err(e) => Act::from_mailbox(&e),
            },
        )
    } else {
        write_as_each(&s.ident, uid, gid, 1, || batch_acts(&target, &one, &opts))
            .pop()
            .unwrap_or_else(|| Act::failed(Status::Deferred, "4.3.0", "no result"))
    };
    if maildir {
        if res.status == Status::Sent {
            ctx.push(addr, Status::Sent, "2.0.0", res.text);
        } else {
            ctx.push(
                addr,
                res.status,
                &res.dsn,
                format!(
                    "cannot update mailbox {} for user {user}. {}",
                    target.display(),
                    res.text
                ),
            );
        }
        return;
    }
    let placeholder = Outcome {
        to: addr.to_string(),
        orig_to: (addr != ctx.orig).then(|| ctx.orig.clone()),
        status: Status::Deferred,
        dsn: String::new(),
        text: String::new(),
    };
    ctx.out.push(mbox_outcome(placeholder, res, &target, user));
}

/// Delivery to `mail_spool_directory/USER` with Postfix's least privilege (local/mailbox.c):
/// a world-writable spool (or one that cannot be examined) is written as the recipient
/// throughout; a group-writable one as the recipient with the spool's group (to create the
/// file and its dotlock); otherwise root creates the file for the recipient and takes the
/// dotlock, and the recipient writes. The writes always happen with the recipient's
/// effective ids ([`crate::sys::child::write_as`]).
fn deliver_spool(
    s: &LocalSettings,
    target: &Path,
    uid: u32,
    gid: u32,
    items: &[crate::mailbox::MboxDelivery<'_>],
    opts: &crate::mailbox::MboxOptions,
) -> Vec<Act> {
    use std::os::unix::fs::MetadataExt;
    let (ident, spool) = (s.ident.as_str(), s.mail_spool_directory.as_path());
    let n = items.len();
    let deliver = |opts: &crate::mailbox::MboxOptions| batch_acts(target, items, opts);
    let st = std::fs::metadata(spool).ok();
    let (spool_uid, spool_gid) = match &st {
        None => (uid, gid),
        Some(m) if m.mode() & 0o002 != 0 => (uid, gid),
        Some(m) if m.mode() & 0o020 != 0 => (uid, m.gid()),
        Some(_) => (0, 0),
    };
    if spool_uid == uid || !crate::sys::child::is_root() {
        return write_as_each(ident, spool_uid, spool_gid, n, || deliver(opts));
    }
    let all = |a: Act| vec![a; n];
    // Root's part: the file (the recipient's, never through a symlink) and the dotlock in
    // a directory only root may write; the recipient's part: the append under fcntl.
    if let Err(e) = create_spool_mbox(target, uid, gid) {
        return all(Act::from_mailbox(&crate::mailbox::MailboxError::io(
            target, e,
        )));
    }
    let dot = if opts.dotlock {
        match crate::mailbox::lock::dotlock(target, opts) {
            Ok(d) => Some(d),
            Err(e) => return all(Act::from_mailbox(&e)),
        }
    } else {
        None
    };
    let user_opts = crate::mailbox::MboxOptions {
        dotlock: false,
        ..opts.clone()
    };
    let res = write_as_each(ident, uid, gid, n, || deliver(&user_opts));
    drop(dot);
    res
}

/// What one mailbox write or command gave: `Sent` with its text, or the status, DSN code
/// and reason of a failure. It travels back from the process that did the work.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Act {
    status: Status,
    dsn: String,
    text: String,
}

impl Act {
    fn sent(text: &str) -> Act {
        Act {
            status: Status::Sent,
            dsn: "2.0.0".into(),
            text: text.into(),
        }
    }

    fn failed(status: Status, dsn: &str, text: &str) -> Act {
        Act {
            status,
            dsn: dsn.into(),
            text: text.into(),
        }
    }

    fn from_mailbox(e: &crate::mailbox::MailboxError) -> Act {
        let (status, dsn, text) = mailbox_failure(e);
        Act {
            status,
            dsn: dsn.into(),
            text,
        }
    }
}

impl crate::sys::wire::Wire for Act {
    fn put(&self, e: &mut crate::sys::wire::Enc) {
        self.status.put(e);
        e.str(&self.dsn).str(&self.text);
    }
    fn get(d: &mut crate::sys::wire::Dec<'_>) -> Option<Self> {
        Some(Act {
            status: Status::get(d)?,
            dsn: d.string()?,
            text: d.string()?,
        })
    }
}

/// A mailbox or file write as `uid`/`gid` (that group alone): this process's effective ids
/// switched around it and back, as Postfix's local(8) does with `set_eugid()`
/// ([`crate::sys::child::with_eugid`]). Commands get a process of their own ([`as_user`]).
fn write_as(ident: &str, uid: u32, gid: u32, f: impl FnOnce() -> Act) -> Act {
    crate::sys::child::write_as(ident, uid, gid, f).unwrap_or_else(|e| Act {
        status: Status::Deferred,
        dsn: "4.3.0".into(),
        text: format!("cannot deliver as uid {uid}: {e}"),
    })
}

/// [`write_as`] for a group commit: `n` results, each the same deferral when the ids
/// cannot be switched.
fn write_as_each(
    ident: &str,
    uid: u32,
    gid: u32,
    n: usize,
    f: impl FnOnce() -> Vec<Act>,
) -> Vec<Act> {
    match crate::sys::child::write_as(ident, uid, gid, f) {
        Ok(v) if v.len() == n => v,
        Ok(_) => vec![Act::failed(Status::Deferred, "4.3.0", "mailbox write lost its results"); n],
        Err(e) => vec![
            Act {
                status: Status::Deferred,
                dsn: "4.3.0".into(),
                text: format!("cannot deliver as uid {uid}: {e}"),
            };
            n
        ],
    }
}

/// Run `f` as `uid`/`gid` (a forked process that became that user when this one is root);
/// a process that could not do it defers, as Postfix's local(8) dying would.
fn as_user(uid: u32, gid: u32, f: impl FnOnce() -> Act) -> Act {
    crate::sys::child::run_as(uid, gid, f).unwrap_or_else(|e| Act {
        status: Status::Deferred,
        dsn: "4.3.0".into(),
        text: format!("cannot deliver as uid {uid}: {e}"),
    })
}

fn deliver_file(ctx: &mut Ctx<'_>, addr: &str, path: &Path) {
    let data = format_message(&ctx.msg, &ctx.orig, addr, false);
    let (uid, gid) = ctx.privs;
    let sender = ctx.msg.sender.clone();
    let ident = ctx.s.ident.clone();
    let res = write_as(&ctx.s.ident, uid, gid, || {
        let opts = crate::mailbox::MboxOptions {
            dotlock: false,
            ..ctx.s.mbox_options()
        };
        // local/file.c: `mailbox_delivery_lock`'s locks, the dotlock first, with the
        // recipient's rights; one that cannot be created (another user's directory) is a
        // warning, then the file under the kernel locks named.
        let _dot = if ctx.s.mbox_options().dotlock {
            match crate::mailbox::lock::dotlock_may_fail(path, &opts) {
                Ok((dot, warning)) => {
                    if let Some(w) = warning {
                        crate::log::warning(&ident, &w);
                    }
                    dot
                }
                Err(e) => return Act::from_mailbox(&e),
            }
        } else {
            None
        };
        match crate::mailbox::deliver_mbox(path, &sender, &data, &opts) {
            Ok(()) => Act::sent(&format!("delivered to file: {}", path.display())),
            Err(e) => Act::from_mailbox(&e),
        }
    });
    if res.status == Status::Sent {
        ctx.push(addr, Status::Sent, "2.0.0", res.text);
    } else {
        ctx.push(
            addr,
            res.status,
            &res.dsn,
            format!(
                "cannot append message to file {}: {}",
                path.display(),
                res.text
            ),
        );
    }
}

fn deliver_command(ctx: &mut Ctx<'_>, addr: &str, cmd: &str) {
    // As Postfix's local/command.c: the `From ` line and the delivery headers, but no
    // `>From ` quoting and no trailing empty line (the command, e.g. procmail, does that).
    let sender = if ctx.msg.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        ctx.msg.sender.as_str()
    };
    let mut data = format!(
        "From {sender}  {}\n",
        crate::sys::time::asctime(SystemTime::now())
    )
    .into_bytes();
    data.extend_from_slice(&format_message(&ctx.msg, &ctx.orig, addr, false));
    let mut c = std::process::Command::new("/bin/sh");
    c.arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SHELL", "/bin/sh")
        .env("SENDER", &ctx.msg.sender)
        .env("RECIPIENT", addr)
        .env("ORIGINAL_RECIPIENT", &ctx.orig)
        .current_dir("/");
    {
        let local = local_part(addr);
        let (base, ext) = match strip_extension(local, &ctx.s.recipient_delimiter) {
            b if b.len() < local.len() => (b, &local[b.len() + 1..]),
            b => (b, ""),
        };
        c.env("LOCAL", local)
            .env(
                "DOMAIN",
                addr.rsplit_once('@').map(|(_, d)| d).unwrap_or(""),
            )
            .env("EXTENSION", ext)
            .env("USER", base)
            .env("LOGNAME", base);
    }
    if let Some(pw) = &ctx.user {
        c.env("HOME", &pw.dir)
            .env("USER", &pw.name)
            .env("LOGNAME", &pw.name)
            .env("SHELL", &pw.shell);
        if pw.dir.is_dir() {
            c.current_dir(&pw.dir);
        }
    }
    let (uid, gid) = ctx.privs;
    // The command runs in a process that has become `uid`/`gid` (no other group), as
    // Postfix's pipe_command() does with set_ugid().
    let res = as_user(uid, gid, move || {
        let child = c.spawn().and_then(|mut ch| {
            if let Some(mut stdin) = ch.stdin.take() {
                // A command that does not read its input is not an error (Postfix ignores
                // EPIPE).
                let _ = stdin.write_all(&data);
            }
            ch.wait_with_output()
        });
        match child {
            Ok(o) if o.status.success() => Act::sent(""),
            Ok(o) => {
                let code = o.status.code().unwrap_or(-1);
                let mut output = String::from_utf8_lossy(&o.stdout).into_owned();
                output.push_str(&String::from_utf8_lossy(&o.stderr));
                let output = output.split_whitespace().collect::<Vec<_>>().join(" ");
                let mut text = format!("Command died with status {code}: \"{cmd}\"");
                if !output.is_empty() {
                    text.push_str(&format!(". Command output: {output}"));
                }
                // sysexits: EX_TEMPFAIL (75) and friends are temporary, as in Postfix's
                // pipe code.
                if matches!(code, 71 | 74 | 75) || code < 0 {
                    Act::failed(Status::Deferred, "4.3.0", &text)
                } else {
                    Act::failed(Status::Bounced, "5.3.0", &text)
                }
            }
            Err(e) => Act::failed(
                Status::Deferred,
                "4.3.0",
                &format!("cannot run command {cmd}: {e}"),
            ),
        }
    });
    if res.status == Status::Sent {
        ctx.push(
            addr,
            Status::Sent,
            "2.0.0",
            format!("delivered to command: {cmd}"),
        );
    } else {
        ctx.push(addr, res.status, &res.dsn, res.text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_values_split_outside_quotes() {
        assert_eq!(
            split_alias_value("a, \"|cat >/dev/null, x\", /tmp/f ,:include:/x"),
            vec!["a", "\"|cat >/dev/null, x\"", "/tmp/f", ":include:/x"]
        );
    }

    #[test]
    fn extension_is_stripped() {
        assert_eq!(strip_extension("bob+list", "+"), "bob");
        assert_eq!(strip_extension("bob", "+"), "bob");
        assert_eq!(strip_extension("+x", "+"), "+x");
    }
}
