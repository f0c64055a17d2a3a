//! The write side of the mail queue: Postfix's `cleanup` role. The SMTP server hands over an
//! accepted message with [`Queue::commit`]; the message gets Postfix's `Received:` header and
//! missing headers, and is written as a queue file in `queue_directory/incoming/` that is on
//! stable storage before `commit` returns (DESIGN.md §4). The queue manager reads it back
//! with [`read_queue_file`] and marks recipients done with [`mark_recipient_done`].
//! [`cleanup`] builds every new queue file from a message, for the SMTP server, `sendmail`
//! and the queue manager's notices alike; [`file`] is the record format.
//!
//! # File format
//! Postfix's own queue-file record format (`C`, `T`, `A`, `S`, `O`, `R`, `M`, `N`/`L`, `X`,
//! `E` records), laid out as Postfix 3.7's smtpd + cleanup write it, so `postcat` reads
//! Postern's queue files and a swap back to Postfix delivers them; see `postern-queue(5)`.
//! A recipient is done when its `R` type byte has been overwritten with `D`, in place.
//!
//! # Durability
//! Group commit in [`writer`]: a dedicated thread writes every file waiting, syncs them, renames
//! them from a temporary name to their queue ID and syncs the directory once per batch. A file
//! named like a queue ID is complete; temporary files are ignored by readers and removed at
//! [`Queue::open`]. Writers of one file at a time (pickup, bounce, `sendmail`, `postdrop`)
//! take the same steps through [`store::write_durable`], and every move between queues
//! (hold, release, requeue, defer, activate, delete) goes through [`store::Store`]. The
//! The writer wakes the queue manager after each batch ([`trigger`], cleanup's
//! `QMGR_REQ_SCAN_INCOMING`), except for messages committed to be held
//! ([`Queue::commit_held`]). The
//! reader also treats a file without `u+x` (Postfix's convention for a
//! file still being written) or without an end record as incomplete. A file is written with
//! mode 0600 and made 0700 (complete) before its fsync, as Postfix's cleanup does.
//!
//! # Owners
//! [`prepare_tree`] (the master, at start) lays the queue out as Postfix 3.7's
//! `postfix-files` has it and, run as root, repairs what is not so (an older Postern ran its
//! queue manager as root and left root's files and a root `public/`, on which the real
//! `postfix start` fails); [`make_queue_dir`] makes hash directories (0700) as whoever runs,
//! which is `mail_owner` in the daemons and postsuper.
//!
//! # main.cf parameters read
//! `queue_directory`, `myhostname`, `mail_name`, `enable_long_queue_ids`,
//! `always_add_missing_headers`, `undisclosed_recipients_header`, `message_size_limit`,
//! `header_size_limit`, `hopcount_limit`, `line_length_limit`, `smtpd_tls_received_header`,
//! `smtpd_sasl_authenticated_header`, `mail_owner`, `setgid_group` (directory ownership when
//! run as root).
//!
//! # Postfix behaviour followed
//! * `Received:` text of smtpd.c (`data_cmd`): `for <rcpt>` only with exactly one recipient,
//!   the TLS comment with `smtpd_tls_received_header = yes`, `(Authenticated sender: …)` with
//!   `smtpd_sasl_authenticated_header = yes`; date as `mail_date()`.
//! * cleanup adds `Message-Id: <YYYYMMDDHHMMSS.ID@myhostname>` (`<ID@myhostname>` with long
//!   IDs), `Date:` and `From:` when missing, only for clients in
//!   `local_header_rewrite_clients` ([`ClientInfo::local_submission`]) or with
//!   `always_add_missing_headers = yes`; then `rewrite_context=local` is recorded.
//! * Content is stored one record per line without line end (CRLF and bare LF both end a
//!   line); lines longer than `line_length_limit` are split into `L` records.
//! * `From ` lines at the very start become `X-Mailbox-Line:`; content starting with white
//!   space gets an empty line first (smtpd's "ugly kluge").
//! * Duplicate recipients (same address, ORCPT and NOTIFY) are stored once, as cleanup does.
//! * Errors map to cleanup's replies: [`QueueError::smtp_reply`].
//!
//! # Known limits
//! * XXX Queue IDs are issued before the file exists, so the "inode" half of an ID is a counter
//!   (see [`id`]).
//! * XXX `local_header_rewrite_clients` is evaluated by smtpd (it owns mynetworks, SASL and
//!   the interface list) and arrives as [`ClientInfo::local_submission`].
//! * XXX No `header_checks`, `body_checks`, canonical or masquerade rewriting, no milters, no
//!   Resent- header logic; the arrival time is the time of `commit`, not of MAIL FROM.
//! * XXX The whole message is held in memory (it is bounded by `message_size_limit`).

pub mod cleanup;
pub mod file;
pub mod header;
pub mod id;
pub mod record;
pub mod store;
pub mod trigger;
pub mod writer;

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::SystemTime;

use anyhow::Context;

pub use file::{
    QueueFileError, QueuedMessage, QueuedRecipient, mark_recipient_done, read_queue_file,
};
pub use id::QueueId;
pub use writer::SyncMode;

use crate::config::postfix::PostfixConfig;

/// The envelope of an accepted message, as smtpd collected it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// `""` for `MAIL FROM:<>`.
    pub sender: String,
    pub recipients: Vec<Recipient>,
    /// `SIZE=` from MAIL FROM.
    pub size_hint: Option<u64>,
    /// `BODY=`: `7BIT` or `8BITMIME`.
    pub body_type: Option<String>,
    pub smtputf8: bool,
    /// DSN `RET=`: `FULL` or `HDRS`.
    pub ret: Option<String>,
    /// DSN `ENVID=`, xtext-decoded.
    pub envid: Option<String>,
}

/// One accepted recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipient {
    /// Postfix's internal (unquoted) form: `odd user@example.org`.
    pub address: String,
    /// DSN `ORCPT=`, xtext-decoded (`rfc822;user@example.org`). Without it the queue file
    /// records `rfc822;` + the address, as Postfix does.
    pub orcpt: Option<String>,
    /// DSN `NOTIFY=`: `NEVER` or a list of `SUCCESS`, `FAILURE`, `DELAY`.
    pub notify: Option<String>,
}

/// The SMTP client, for the `Received:` header and the queue file's log attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub helo: Option<String>,
    /// Verified client hostname, `"unknown"` if none.
    pub hostname: String,
    pub addr: IpAddr,
    pub port: u16,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPA`, `ESMTPSA`, `UTF8SMTP`, `UTF8SMTPS`, … as Postfix
    /// writes it after `with`.
    pub protocol: String,
    /// The TLS comment lines as Postfix writes them, without the leading tab, separated by
    /// `\n`, e.g. `(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n
    /// key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\n(No
    /// client certificate requested)`. Written only with `smtpd_tls_received_header = yes`.
    pub tls: Option<String>,
    pub sasl_method: Option<String>,
    pub sasl_username: Option<String>,
    /// The client matches `local_header_rewrite_clients` (or is sendmail/postdrop): cleanup
    /// adds missing Message-Id/Date/From.
    pub local_submission: bool,
}

/// Why a message was not queued. `commit` returns these inside `anyhow::Error`; smtpd gets
/// the reply with `err.downcast_ref::<QueueError>().map(QueueError::smtp_reply)`.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("message file too big ({size} > message_size_limit {limit})")]
    MessageTooBig { size: u64, limit: u64 },
    #[error("too many hops ({hops} Received: headers > hopcount_limit {limit})")]
    TooManyHops { hops: usize, limit: usize },
    #[error("no recipients")]
    NoRecipients,
    #[error("queue file write error: {0}")]
    Write(#[from] std::io::Error),
    #[error("queue writer has stopped")]
    WriterGone,
}

impl QueueError {
    /// The reply Postfix's smtpd gives for the matching cleanup status
    /// (`cleanup_stat_detail()`).
    pub fn smtp_reply(&self) -> &'static str {
        match self {
            QueueError::MessageTooBig { .. } => "552 5.3.4 Error: message file too big",
            QueueError::TooManyHops { .. } => "554 5.4.0 Error: too many hops",
            QueueError::NoRecipients => "554 5.5.1 Error: no valid recipients",
            QueueError::Write(_) | QueueError::WriterGone => {
                "451 4.3.0 Error: queue file write error"
            }
        }
    }
}

/// Who a queue directory belongs to, in Postfix 3.7's `postfix-files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirOwner {
    /// `root`, group unchanged (`pid`).
    Root,
    /// `$mail_owner`, group unchanged (root's, as post-install leaves it).
    Mail,
    /// `$mail_owner:$setgid_group` (`maildrop`, `public`).
    MailSetgid,
}

/// The queue subdirectories of Postfix 3.7's `postfix-files`: name, owner, mode, and whether
/// `postfix set-permissions` gives everything below to `mail_owner` too (flag `r`).
const QUEUE_TREE: &[(&str, DirOwner, u32, bool)] = &[
    ("active", DirOwner::Mail, 0o700, true),
    ("bounce", DirOwner::Mail, 0o700, true),
    ("corrupt", DirOwner::Mail, 0o700, true),
    ("defer", DirOwner::Mail, 0o700, true),
    ("deferred", DirOwner::Mail, 0o700, true),
    ("flush", DirOwner::Mail, 0o700, true),
    ("hold", DirOwner::Mail, 0o700, true),
    ("incoming", DirOwner::Mail, 0o700, true),
    ("private", DirOwner::Mail, 0o700, false),
    ("maildrop", DirOwner::MailSetgid, 0o730, false),
    ("public", DirOwner::MailSetgid, 0o710, false),
    ("pid", DirOwner::Root, 0o755, false),
    ("saved", DirOwner::Mail, 0o700, true),
    ("trace", DirOwner::Mail, 0o700, true),
];

/// The owners of the queue when the mail system runs as root: `mail_owner` and the
/// `setgid_group` (`postdrop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeOwner {
    pub uid: u32,
    pub gid: u32,
    pub setgid_gid: u32,
}

impl TreeOwner {
    /// `mail_owner` (`uid`, `gid`) and `setgid_group` from `cfg`; without that group,
    /// `mail_owner`'s own.
    pub fn of(cfg: &PostfixConfig, uid: u32, gid: u32) -> TreeOwner {
        let g = cfg.get("setgid_group").unwrap_or_else(|| "postdrop".into());
        let setgid_gid = nix::unistd::Group::from_name(g.trim())
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
            .unwrap_or(gid);
        TreeOwner {
            uid,
            gid,
            setgid_gid,
        }
    }

    /// When this process runs as root: `mail_owner` and `setgid_group` from `cfg`.
    pub fn when_root(cfg: &PostfixConfig) -> Option<TreeOwner> {
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        let user = cfg.get("mail_owner").unwrap_or_else(|| "postfix".into());
        let u = nix::unistd::User::from_name(user.trim()).ok().flatten()?;
        Some(TreeOwner::of(cfg, u.uid.as_raw(), u.gid.as_raw()))
    }
}

/// Make one directory of the queue (a hash subdirectory such as `deferred/A`) with mode
/// 0700, as Postfix's `mail_queue_mkdirs()`; it belongs to whoever makes it (the queue
/// manager or postsuper, running as `mail_owner`). An existing one is fine.
pub fn make_queue_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Lay out `queue_directory` as Postfix 3.7's `postfix-files` has it, as `postfix start`
/// (post-install `create-missing`) does: the directory itself (root, 0755) and each queue
/// (see `QUEUE_TREE`) when missing, with its owner (when `owner` is given, i.e. as root)
/// and mode. Given an owner, it also puts right what is not as Postfix wants it, as
/// `postfix set-permissions` would, so that the real Postfix starts on the queue afterwards
/// (an older Postern ran its queue manager as root and left `public/` and files in
/// `defer/` and `deferred/` root's): a queue directory's owner, group (`maildrop`,
/// `public`) and permission bits (a set-group-ID or sticky bit the distribution adds is
/// kept); below the `r` queues, whatever `mail_owner` does not own; files in
/// `maildrop/` the mail system could not read (Postfix's postdrop makes them 0744).
/// Returns one line per repaired queue (for the log).
pub fn prepare_tree(base: &Path, owner: Option<&TreeOwner>) -> Result<Vec<String>, String> {
    prepare(base, owner, true)
}

fn prepare(base: &Path, owner: Option<&TreeOwner>, repair: bool) -> Result<Vec<String>, String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let mut fixed = Vec::new();
    if !base.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(base)
            .map_err(|e| format!("create queue_directory {}: {e}", base.display()))?;
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", base.display()))?;
    }
    for &(name, who, mode, recursive) in QUEUE_TREE {
        let dir = base.join(name);
        let want = |o: &TreeOwner| -> (Option<u32>, Option<u32>) {
            match who {
                DirOwner::Root => (Some(0), None),
                DirOwner::Mail => (Some(o.uid), None),
                DirOwner::MailSetgid => (Some(o.uid), Some(o.setgid_gid)),
            }
        };
        match std::fs::symlink_metadata(&dir) {
            Err(_) => {
                match std::fs::DirBuilder::new().mode(mode).create(&dir) {
                    Ok(()) => {}
                    // A user's sendmail on a queue it may not change: the mail system makes
                    // what is missing when it starts.
                    Err(e) if !repair && e.kind() == std::io::ErrorKind::PermissionDenied => {
                        continue;
                    }
                    Err(e) => return Err(format!("create {}: {e}", dir.display())),
                }
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
                if let Some(o) = owner {
                    let (u, g) = want(o);
                    std::os::unix::fs::lchown(&dir, u, g)
                        .map_err(|e| format!("chown {}: {e}", dir.display()))?;
                }
            }
            Ok(m) if repair && m.is_dir() => {
                let Some(o) = owner else { continue };
                let (u, g) = want(o);
                let mut what = Vec::new();
                if u.is_some_and(|u| u != m.uid()) || g.is_some_and(|g| g != m.gid()) {
                    std::os::unix::fs::lchown(&dir, u, g)
                        .map_err(|e| format!("chown {}: {e}", dir.display()))?;
                    what.push("owner");
                }
                // The permission bits only: a set-group-ID or sticky bit the distribution
                // adds stays (Debian's postinst makes maildrop 1730 and, through
                // dpkg-statoverride, public 2710; the real `postfix start` leaves them).
                if m.mode() & 0o777 != mode {
                    let keep = m.mode() & 0o3000;
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | keep))
                        .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
                    what.push("mode");
                }
                let mut n = 0;
                if recursive {
                    n += give_tree(&dir, o, 0);
                }
                if name == "maildrop" {
                    n += readable_maildrop(&dir);
                }
                if !what.is_empty() || n > 0 {
                    let mut line = format!("{}: set Postfix's ", dir.display());
                    line.push_str(&what.join(" and "));
                    if n > 0 {
                        if !what.is_empty() {
                            line.push_str(", and ");
                        }
                        line.push_str(&format!("owner or mode of {n} entries below"));
                    }
                    fixed.push(line);
                }
            }
            Ok(_) => {}
        }
    }
    Ok(fixed)
}

/// Give everything below `dir` that `mail_owner` does not own to it (its own group too);
/// symlinks are not followed. Returns how many entries changed.
fn give_tree(dir: &Path, o: &TreeOwner, depth: usize) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let Ok(m) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if m.file_type().is_symlink() {
            continue;
        }
        if m.uid() != o.uid && std::os::unix::fs::lchown(e.path(), Some(o.uid), Some(o.gid)).is_ok()
        {
            n += 1;
        }
        if m.is_dir() && depth < 4 {
            n += give_tree(&e.path(), o, depth + 1);
        }
    }
    n
}

/// Complete files in `maildrop/` that others cannot read (an older Postern's sendmail and
/// postdrop made them 0700) get Postfix's 0744, so that the queue manager, which runs as
/// `mail_owner`, can pick them up.
fn readable_maildrop(dir: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let Ok(m) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if m.is_file()
            && m.mode() & 0o100 != 0
            && m.mode() & 0o004 == 0
            && std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o744)).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// Settings read from main.cf at [`Queue::open`].
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub queue_directory: PathBuf,
    pub myhostname: String,
    pub mail_name: String,
    pub long_queue_ids: bool,
    pub always_add_missing_headers: bool,
    pub undisclosed_recipients_header: String,
    /// 0 means no limit.
    pub message_size_limit: u64,
    pub header_size_limit: usize,
    pub hopcount_limit: usize,
    pub line_length_limit: usize,
    pub tls_received_header: bool,
    pub sasl_authenticated_header: bool,
    /// `delay_warning_time` in seconds (0: no delay warnings).
    pub delay_warning_time: u64,
    /// The ident of cleanup's log lines: `$syslog_name/cleanup` (so `syslog_name =
    /// postfix-anchor` gives `postfix-anchor/cleanup`, as Postfix's cleanup logs, and log
    /// readers such as `pflogsumm --syslog-name` find them).
    pub cleanup_ident: String,
}

impl QueueSettings {
    pub fn from_config(cfg: &PostfixConfig) -> anyhow::Result<QueueSettings> {
        let queue_directory = cfg
            .get("queue_directory")
            .filter(|d| !d.trim().is_empty())
            .context("queue_directory is not set")?;
        Ok(QueueSettings {
            queue_directory: PathBuf::from(queue_directory.trim()),
            cleanup_ident: crate::log::ident(cfg, "cleanup"),
            myhostname: cfg.get("myhostname").unwrap_or_else(|| "localhost".into()),
            mail_name: cfg.get("mail_name").unwrap_or_else(|| "Postfix".into()),
            long_queue_ids: cfg.get_bool("enable_long_queue_ids").unwrap_or(false),
            always_add_missing_headers: cfg.get_bool("always_add_missing_headers").unwrap_or(false),
            undisclosed_recipients_header: cfg
                .get("undisclosed_recipients_header")
                .unwrap_or_default(),
            message_size_limit: cfg.get_num("message_size_limit").unwrap_or(10_240_000),
            header_size_limit: cfg.get_num("header_size_limit").unwrap_or(102_400),
            hopcount_limit: cfg.get_num("hopcount_limit").unwrap_or(50),
            line_length_limit: cfg.get_num("line_length_limit").unwrap_or(2048),
            tls_received_header: cfg.get_bool("smtpd_tls_received_header").unwrap_or(false),
            sasl_authenticated_header: cfg
                .get_bool("smtpd_sasl_authenticated_header")
                .unwrap_or(false),
            delay_warning_time: cfg
                .get_time("delay_warning_time", 'h')
                .map(|d| d.as_secs())
                .unwrap_or(0),
        })
    }
}

/// The mail queue (write side).
pub struct Queue {
    settings: QueueSettings,
    incoming: PathBuf,
    writer: Mutex<mpsc::Sender<writer::Job>>,
    id_counter: AtomicU64,
    /// IDs handed out and not yet committed or released: keeps two sessions from getting the
    /// same ID within one process. With each, the empty temporary file whose inode number
    /// the ID holds (none for IDs made without one, see [`Queue::new_queue_id`]).
    reserved: Mutex<HashMap<String, Option<(PathBuf, std::fs::File)>>>,
    /// Whether this process may create files in `incoming/` (it has a writer).
    can_write: bool,
    tmp_seq: AtomicU64,
}

/// The "inode" part of generated IDs stays in this range (6 hex digits, like real inode
/// numbers on a busy filesystem).
const INUM_BASE: u64 = 0x10_0000;
const INUM_RANGE: u64 = 0xF0_0000;

impl Queue {
    /// Free space in `queue_directory` for unprivileged writers (`f_bavail`, as Postfix's
    /// `fsspace()`), in bytes; `None` when it cannot be read.
    pub fn free_bytes(&self) -> Option<u64> {
        let st = nix::sys::statvfs::statvfs(&self.settings.queue_directory).ok()?;
        Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
    }

    /// Open the queue under `queue_directory`, creating missing subdirectories (with Postfix's
    /// modes and, when run as root, owned by `mail_owner`), removing temporary files of dead
    /// writers, and starting the group-commit thread.
    pub fn open(cfg: &PostfixConfig) -> anyhow::Result<Arc<Queue>> {
        Self::open_with(cfg, SyncMode::default())
    }

    /// [`Queue::open`] with a chosen sync strategy (benchmarks).
    pub fn open_with(cfg: &PostfixConfig, sync: SyncMode) -> anyhow::Result<Arc<Queue>> {
        let settings = QueueSettings::from_config(cfg)?;
        let base = &settings.queue_directory;
        prepare(base, TreeOwner::when_root(cfg).as_ref(), false).map_err(anyhow::Error::msg)?;
        let incoming = base.join("incoming");
        let stale = writer::remove_stale(&incoming);
        if stale > 0 {
            crate::log::warning(
                &settings.cleanup_ident,
                &format!(
                    "removed {stale} incomplete queue file(s) from {}",
                    incoming.display()
                ),
            );
        }
        let mut can_write = true;
        let tx = match writer::spawn(incoming.clone(), sync) {
            Ok(tx) => tx,
            // A user who may not open incoming/ (sendmail handing its file to postdrop) only
            // needs queue IDs: commits through this queue fail instead.
            Err(e)
                if e.kind() == std::io::ErrorKind::PermissionDenied
                    && !nix::unistd::geteuid().is_root() =>
            {
                can_write = false;
                std::sync::mpsc::channel().0
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("start queue writer for {}", incoming.display()));
            }
        };
        let seed = {
            let d = SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            (u64::from(std::process::id()).wrapping_mul(0x9E37_79B9) ^ d.as_nanos() as u64)
                % INUM_RANGE
        };
        Ok(Arc::new(Queue {
            settings,
            incoming,
            writer: Mutex::new(tx),
            id_counter: AtomicU64::new(seed),
            reserved: Mutex::new(HashMap::new()),
            can_write,
            tmp_seq: AtomicU64::new(0),
        }))
    }

    /// The queue directory's files and moves ([`store::Store`]).
    pub fn store(&self) -> store::Store {
        store::Store::new(&self.settings.queue_directory)
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// `queue_directory/incoming`, where committed files appear.
    pub fn incoming_dir(&self) -> &Path {
        &self.incoming
    }

    /// Where a queue file of `id` lives in queue `name` (`incoming`, `active`, `hold`,
    /// `deferred`, …). `deferred`, `defer`, `bounce` and `trace` are hashed one level deep
    /// (`hash_queue_depth = 1`) on the first character, as Postfix's defaults do.
    pub fn queue_file_path(&self, queue: &str, id: &QueueId) -> PathBuf {
        self.store().path(queue, id.as_str())
    }

    fn id_in_use(&self, id: &QueueId) -> bool {
        ["incoming", "active", "deferred", "hold"]
            .iter()
            .any(|q| self.queue_file_path(q, id).symlink_metadata().is_ok())
    }

    /// A new queue ID in the configured format. Postfix's smtpd gets its ID when it opens the
    /// cleanup stream at the first accepted RCPT, and logs `ID: client=…` then; do the same.
    /// Give the ID back with [`Queue::release_queue_id`] if the transaction is abandoned (RSET,
    /// QUIT, lost connection, rejected DATA); [`Queue::commit`] releases it too.
    ///
    /// As Postfix's cleanup: the queue file is created now (empty, under a temporary name in
    /// `incoming/`) and the ID made from its inode number, which no other live file on the
    /// queue's filesystem has, so no queue directory needs to be looked in (four `statx`
    /// per message before, issue 18); the commit writes that file. A process that may not
    /// create files in `incoming/` (sendmail before postdrop) gets an ID from a counter,
    /// checked against the four queues.
    pub fn new_queue_id(&self) -> QueueId {
        if self.can_write
            && let Some(id) = self.reserve_by_inode()
        {
            return id;
        }
        self.new_queue_id_unfiled()
    }

    /// A new queue ID with no file made for it, for a writer that names its own file
    /// ([`store::write_durable`]: bounces, sendmail's maildrop file): a per-process counter in
    /// the range of inode numbers, checked against the four queues' files of that name.
    /// Release it as [`Queue::new_queue_id`]'s.
    pub fn new_queue_id_unfiled(&self) -> QueueId {
        loop {
            let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
            let inum = INUM_BASE + n % INUM_RANGE;
            let id = id::format_queue_id(SystemTime::now(), inum, self.settings.long_queue_ids);
            if self.id_in_use(&id) {
                continue;
            }
            let mut set = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
            if !set.contains_key(id.as_str()) {
                set.insert(id.as_str().to_string(), None);
                return id;
            }
        }
    }

    /// [`Queue::new_queue_id`] from a new temporary file's inode; `None` if none can be made.
    fn reserve_by_inode(&self) -> Option<QueueId> {
        use std::os::unix::fs::MetadataExt;
        for _ in 0..3 {
            let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
            let (tmp, f) = writer::reserve_tmp(&self.incoming, seq).ok()?;
            let ino = match f.metadata() {
                Ok(m) => m.ino(),
                Err(_) => {
                    let _ = std::fs::remove_file(&tmp);
                    return None;
                }
            };
            let id = id::format_queue_id(SystemTime::now(), ino, self.settings.long_queue_ids);
            let mut set = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
            // Taken only by an ID of this process still reserved whose file was removed and
            // whose inode came back within the same microsecond of a second: try again.
            if !set.contains_key(id.as_str()) {
                // Named at once (still 0600: incomplete, which the queue manager and Postfix's
                // leave alone), so that at the commit the directory is synced beside the file
                // instead of after a rename (issue 18: one fsync less in series per message).
                // A name taken by a file not made this way (an older Postern's counter): again.
                let path = self.incoming.join(id.as_str());
                if writer::rename_noreplace(&tmp, &path).is_ok() {
                    set.insert(id.as_str().to_string(), Some((path, f)));
                    return Some(id);
                }
            }
            drop(set);
            let _ = std::fs::remove_file(&tmp);
        }
        None
    }

    /// Forget an ID that will not be committed (and remove its empty file).
    pub fn release_queue_id(&self, id: &QueueId) {
        let taken = self
            .reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id.as_str());
        if let Some(Some((tmp, _))) = taken {
            let _ = std::fs::remove_file(tmp);
        }
    }

    /// The empty file reserved with `id`, taken out for the commit (the ID stays reserved
    /// until [`Queue::release_queue_id`]).
    fn take_reserved_file(&self, id: &QueueId) -> Option<(PathBuf, std::fs::File)> {
        self.reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(id.as_str())
            .and_then(Option::take)
    }

    /// `message_size_limit` (0: none).
    pub fn message_size_limit(&self) -> u64 {
        self.settings.message_size_limit
    }

    /// Whether `size` bytes of content (as received, CRLF line ends) fit
    /// `message_size_limit`. smtpd checks `SIZE=` with it and keeps a running count while
    /// reading DATA/BDAT, answering [`QueueError::MessageTooBig`]'s reply.
    pub fn check_message_size(&self, size: u64) -> Result<(), QueueError> {
        self.settings.check_message_size(size)
    }

    /// Queue one message: add `Received:` and missing headers, write the queue file, and
    /// return once the file and its directory entry are on stable storage. `message` is the
    /// content exactly as received after dot-unstuffing (CRLF line ends).
    pub async fn commit(
        &self,
        id: &QueueId,
        env: &Envelope,
        client: &ClientInfo,
        message: Vec<u8>,
    ) -> anyhow::Result<()> {
        let res = self.commit_inner(id, env, client, message, true).await;
        self.release_queue_id(id);
        res.map_err(anyhow::Error::from)
    }

    /// [`Queue::commit`] for a message to be held (smtpd's `HOLD` action): the queue manager
    /// is not woken for it, and the committed file is then moved to `hold/`; the error of
    /// that move is the second result (the message is queued in `incoming/` then, and
    /// delivered). XXX the queue manager's periodic scan may still take it from `incoming/`
    /// in the instant between the two steps (Postfix's cleanup writes it to `hold/` at once).
    pub async fn commit_held(
        &self,
        id: &QueueId,
        env: &Envelope,
        client: &ClientInfo,
        message: Vec<u8>,
    ) -> anyhow::Result<std::io::Result<()>> {
        let res = self.commit_inner(id, env, client, message, false).await;
        self.release_queue_id(id);
        res?;
        let from = self.queue_file_path("incoming", id);
        let held = self.store().hold(&from, id.as_str(), true);
        if held.is_err() {
            trigger::wake(&self.settings.queue_directory, trigger::SCAN_INCOMING);
        }
        Ok(held)
    }

    async fn commit_inner(
        &self,
        id: &QueueId,
        env: &Envelope,
        client: &ClientInfo,
        message: Vec<u8>,
        wake: bool,
    ) -> Result<(), QueueError> {
        let data = self.build_file(id, env, client, &message, SystemTime::now())?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = writer::Job {
            id: id.as_str().to_string(),
            data,
            reserved: self.take_reserved_file(id),
            reply: tx,
            wake,
        };
        {
            let w = match self.writer.lock() {
                Ok(w) => w,
                Err(poisoned) => poisoned.into_inner(),
            };
            w.send(job).map_err(|_| QueueError::WriterGone)?;
        }
        rx.await.map_err(|_| QueueError::WriterGone)??;
        Ok(())
    }

    /// The queue file bytes for a message from an SMTP client ([`cleanup`]), and cleanup's
    /// `message-id=` log line. Public for tools that write queue files by other means and
    /// for tests.
    pub fn build_file(
        &self,
        id: &QueueId,
        env: &Envelope,
        client: &ClientInfo,
        message: &[u8],
        arrival: SystemTime,
    ) -> Result<Vec<u8>, QueueError> {
        let s = &self.settings;
        let built = s.build_file(
            id.as_str(),
            env,
            cleanup::Origin::Smtp(client),
            message,
            arrival,
        )?;
        crate::log::info(
            &s.cleanup_ident,
            &format!(
                "{id}: message-id={}",
                built.message_id.as_deref().unwrap_or("<>")
            ),
        );
        Ok(built.data)
    }
}
