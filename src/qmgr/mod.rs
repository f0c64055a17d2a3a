//! Postfix's `qmgr(8)` with the `pickup(8)` role: takes complete queue files from
//! `maildrop/` and `incoming/` to `active/`, resolves each recipient, has local deliveries
//! made ([`crate::delivery::local`], in the local delivery process) from a pool of worker threads, marks each recipient done in the queue file as soon
//! as its delivery is final (so a restart never delivers it twice), removes the file when every
//! recipient is done, and moves it to `deferred/` with back-off otherwise.
//!
//! # How it runs
//! The master starts the queue manager when master.cf has a `qmgr` service (as Postfix's
//! master does; a master.cf without one queues mail but never delivers it), as a child
//! process (`postern qmgr -c DIR`), together with the local delivery process
//! ([`crate::qmgr::local_server`]), the two connected by a socket pair. Started as root, the
//! queue manager becomes `mail_owner` for good before it reads anything (Postfix's qmgr is
//! unprivileged), and so does all it runs itself: the outbound smtp client
//! ([`crate::delivery::smtp`]), bounces, delay warnings, defer logs; what it writes in the queue is
//! `mail_owner`'s with Postfix's modes (the master's umask is 077). Local and virtual
//! deliveries, the only ones that need root, go to the local delivery process, one
//! request per recipient (queue ID, offset of the recipient record, address; several
//! recipients of one destination in one datagram: the group commit below); it checks
//! each against the queue file and answers with the outcomes, which are logged, marked
//! and bounced here as any other. The queue manager never gets root back (DESIGN.md §3).
//!
//! The child reads its standard input: `R` re-reads the configuration (master reload), end
//! of file means the master is gone and it exits. Deliveries in progress when the master
//! goes away are finished first, and a new queue manager waits for the old one
//! (`queue_directory/pid/qmgr.lock`, opened afresh by the master for each one, since
//! `pid/` is root's), so a crash of the master never makes a recipient get a message twice.
//! It also listens on the FIFO `queue_directory/public/qmgr` (made by the master, mode
//! 0622, `mail_owner`'s), where `postfix flush`, `postqueue -f` and `sendmail` write a byte
//! to wake it (`F`: retry deferred mail now).
//!
//! pickup(8): a file in `maildrop/` belongs to the user who submitted it (mode 0744), so
//! it is copied into a queue file of the mail system's own in `incoming/` (temporary
//! name, fsync, rename without replacing, directory fsync) and then removed, as Postfix's
//! pickup hands it to cleanup; a crash between the two steps delivers it twice, Postfix's
//! window too.
//!
//! # Scheduling
//! New mail is picked up when its writer wakes the queue manager through `public/qmgr`
//! ([`crate::queue::trigger`]: the queue writer once per group commit, as Postfix's cleanup
//! triggers qmgr, `sendmail`/`postdrop`, `postqueue`, `postsuper -r`, bounces written here);
//! wake-ups that arrive during a scan are served by one scan. `incoming/` and `maildrop/` are
//! also scanned every `min(queue_run_delay, 60s)` (every 200 ms when the FIFO cannot be
//! opened). Deferred files carry their next attempt time as their modification
//! time, as in Postfix: `now + clamp(time in queue, minimal_backoff_time,
//! maximal_backoff_time)`; `deferred/` is scanned every `queue_run_delay`. A message older
//! than `maximal_queue_lifetime` (`bounce_queue_lifetime` for `<>` senders) is returned.
//! Up to `local_destination_concurrency_limit` messages are delivered at once.
//!
//! # Routing
//! An address without a domain gets `@$myorigin` (`append_at_myorigin`);
//! the sender goes through `sender_canonical_maps` then `canonical_maps`, each recipient
//! through `recipient_canonical_maps` then `canonical_maps` ([`QmgrSettings::canonical`],
//! cleanup's order; the result is delivered and logged, the queued address as `orig_to`);
//! `virtual_alias_maps` expands it (full address, `user@domain` without the extension, the
//! local part for local domains, `@domain`; recursively); a `relocated_maps` hit bounces
//! with `5.1.6 User has moved to …` (trivial-rewrite's text, logged by `postfix/error`);
//! then [`route::Resolver`] does trivial-rewrite's resolve: the address class (mydestination,
//! virtual alias, virtual mailbox, relay, default) picks `local_transport`,
//! `virtual_transport`, `relay_transport` or `default_transport`, `relayhost` the next-hop of
//! the last two, and `transport_maps` (address, domain, `.parent` domains, `*`) overrides
//! transport and/or next-hop. The transport's master.cf command picks the agent: local(8)
//! ([`crate::delivery::local`]), virtual(8) ([`crate::delivery::virtual_delivery`]), smtp(8) ([`crate::delivery::smtp`],
//! called once per (service, next-hop) group of a message's recipients), error(8)
//! (`[d.s.n ]text`; a 4.x.x status is logged as 5.0.0, empty text is `Address is
//! undeliverable`, as Postfix 3.7's error(8) does), retry(8), discard(8)
//! (`dsn=2.0.0, status=sent (text)`, text defaulting to the next-hop). A transport with no
//! agent here (`pipe`, `lmtp`) is deferred with `mail transport unavailable`.
//!
//! Each delivery holds a per-destination slot ([`Limiter`]): `local_destination_concurrency_limit`
//! per local recipient, `virtual_destination_concurrency_limit` per virtual recipient,
//! `smtp_destination_concurrency_limit` per next-hop; `min(default_process_limit, 20)` worker
//! threads share them.
//!
//! One mailbox's trouble never stalls the queue (issue 17): a message whose only undelivered
//! recipients are for a local or virtual destination with no free slot is not waited for:
//! it stays in `active/`, put aside in the [`Limiter`], and goes back to the workers when a
//! slot of that destination frees. A worker waiting for the local delivery process (which
//! may wait `deliver_lock_attempts` × `deliver_lock_delay` for a mailbox lock) does not
//! count against the pool: another thread takes its place (up to 100 such waits): a spare
//! called back, or a new one when no spare waits; the surplus waits as a spare after its
//! message, up to 10 s, then ends (a parked message handed back that takes no slot,
//! its recipients being done already, is covered by a hand-back at each queue poll). So a
//! locked mailbox holds at most its
//! `local_destination_concurrency_limit` deliveries, and other mailboxes and relayed mail
//! keep their workers.
//!
//! Group commit for mbox deliveries (issue 18, [`local_client::deliver`]; when users'
//! mailboxes are mbox files: not with a Maildir `home_mailbox` or a `mailbox_command`,
//! whose deliveries a batch would make one after the other, measured slower than two side
//! by side): a local recipient's delivery goes to the local delivery process at once when
//! none of that recipient's is there; otherwise the slot holder gathers a batch behind it, and messages for the same
//! recipient that find no free slot join that batch instead of being put aside (up to 64,
//! and only while the delivery before it has been under way less than a second: one
//! waiting for a locked mailbox gathers nothing more, and the messages are put aside as
//! above). The batch goes as one request; the local delivery process appends its messages
//! to the mbox under one lock hold and one fsync (Maildir: one fsync of `new/`) and answers
//! for each, so each recipient is marked done only after the fsync that covers it. A
//! thread waiting in a batch does not count against the pool, as any waiting delivery.
//! XXX A batch for an alias whose members are commands or files runs them one after the
//! other in one worker (before, up to `local_destination_concurrency_limit` side by side).
//!
//! # Lookup failures
//! A table that cannot answer is never taken for an empty one. The tables are opened
//! through the map cache at each use, so `postmap` takes effect without a reload.
//! `canonical_maps`/`virtual_alias_maps` (cleanup's role): the table's lines and `ID:
//! virtual_alias_maps map lookup problem for ADDR` under `postfix/cleanup`, and the
//! recipient (every recipient, for the sender's canonical mapping) is deferred with that
//! text (Postfix's cleanup leaves the message in maildrop instead: `-- message not
//! accepted, try again later`). `transport_maps`, `relocated_maps` and the domain lists
//! (trivial-rewrite's role): its lines (`transport_maps lookup failure`) under
//! `postfix/trivial-rewrite`, and `relay=none, dsn=4.3.0, status=deferred (address
//! resolver failure)` from `postfix/error`, as Postfix 3.7 logs it.
//!
//! # Notifications
//! Permanently failed recipients are returned to the sender ([`bounce`], Postfix's failure
//! template) and only then marked done, as bounce(8) deletes recipients after it has sent
//! the notice: a crash in between repeats the notice, it never loses it. A failed `<>` message
//! is dropped unless `notify_classes` has `bounce` (then a postmaster copy goes to
//! `2bounce_notice_recipient` from `double_bounce_sender`). With `delay_warning_time`, a
//! delay warning (delay template) goes to the sender once, when a deferral happens after the
//! queue file's `W` time; the record is then zeroed in place, as Postfix does.
//!
//! # Logs (Postfix's formats)
//! `ID: from=<…>, size=…, nrcpt=… (queue active)`, `ID: to=<…>, [orig_to=<…>, ]relay=local,
//! delay=…, delays=a/b/c/d, dsn=…, status=sent (delivered to mailbox)`, `ID: removed`,
//! `ID: from=<…>, status=expired, returned to sender`; smtp(8)'s lines carry `, conn_use=N`
//! after `relay=` when the connection was reused ([`crate::delivery::smtp::cache`]).
//!
//! # main.cf parameters read
//! `queue_directory`, `myorigin`, `mydestination`, `minimal_backoff_time`,
//! `maximal_backoff_time`, `queue_run_delay`, `maximal_queue_lifetime`,
//! `bounce_queue_lifetime`, `local_destination_concurrency_limit`, `virtual_alias_maps`,
//! `canonical_maps`, `sender_canonical_maps`, `recipient_canonical_maps`, `relocated_maps`,
//! `transport_maps`, `recipient_delimiter`, and those of
//! [`crate::delivery::local`].
//!
//! # Known limits
//! * XXX canonical and virtual aliases are applied at delivery, not by cleanup at queue time
//!   (headers are not rewritten); `mydestination` entries that are lookup tables are matched
//!   through smtpd's domain lists; an alias expansion with one deferred member is retried
//!   whole (members already delivered get the message again, as with Postfix's local(8)).
//! * XXX The smtp(8) client runs in the queue manager's process (as `mail_owner`, as
//!   Postfix's smtp runs, but not in a process of its own); the recipients of one message
//!   are delivered one destination after another. Tables are opened as `mail_owner`
//!   (Postfix's daemons open theirs as root before dropping privileges): an index must be
//!   readable by it, as postmap(1) makes it. No `sender_dependent_relayhost_maps`,
//!   `sender_dependent_default_transport_maps`, `*_destination_recipient_limit` other than 1
//!   for local, or concurrency feedback (a fixed limit per destination).

pub mod bounce;
mod daemon;
pub mod defer;
mod deliver;
mod limiter;
pub mod local_client;
pub mod local_server;
mod rewrite;
pub use crate::resolve::route;
use daemon::*;
pub use daemon::{LOCK_FD_ENV, list_queue, main, make_fifo};
pub use deliver::fmt_delay;
use deliver::*;
use limiter::*;
pub use limiter::{Limiter, Slot};
pub use rewrite::QmgrSettings;

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::postfix::PostfixConfig;
use crate::delivery::local::{self, LocalSettings};
use crate::delivery::{Outcome, Status};
use crate::log;
use crate::queue::store::Store;
use crate::queue::{QueueFileError, QueuedMessage, mark_recipient_done, read_queue_file};

/// How often `incoming/` and `maildrop/` are looked at when the FIFO cannot be listened
/// on, and parked messages handed back while some wait ([`Limiter::kick`]).
const QUEUE_POLL: Duration = Duration::from_millis(200);

/// The longest time between two scans of `incoming/` and `maildrop/` without a wake-up
/// (bounded by `queue_run_delay`): Postfix's pickup wakes every 60 s (master.cf), its qmgr
/// scans `incoming/` when triggered.
const FALLBACK_SCAN: Duration = Duration::from_secs(60);

/// Held (shared) by each delivery; taken exclusively when the master goes away, so that the
/// process exits between deliveries, never in the middle of one.
static DELIVERING: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// The queue, for queue IDs of the notifications this process writes.
static QUEUE: std::sync::OnceLock<Arc<crate::queue::Queue>> = std::sync::OnceLock::new();

/// Whether master.cf asks for a queue manager (a service whose command is `qmgr` or
/// `oqmgr`).
pub fn wanted(cfg: &PostfixConfig) -> bool {
    cfg.master
        .services
        .iter()
        .any(|s| s.command == "qmgr" || s.command == "oqmgr")
}

/// Wake a running queue manager through its FIFO (`postfix flush`, `postqueue -f`,
/// `sendmail`); `b'F'` also retries all deferred mail. Returns whether one was listening.
pub fn wake(queue_directory: &Path, what: u8) -> bool {
    crate::queue::trigger::wake(queue_directory, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_formatted_like_postfix() {
        assert_eq!(fmt_delay(0.0), "0");
        assert_eq!(fmt_delay(0.001), "0");
        assert_eq!(fmt_delay(0.03), "0.03");
        assert_eq!(fmt_delay(0.1), "0.1");
        assert_eq!(fmt_delay(1.234), "1.23");
        assert_eq!(fmt_delay(12.6), "13");
    }

    #[test]
    fn activation_never_replaces_a_file_in_active() {
        let d = tempfile::tempdir().unwrap();
        for q in ["incoming", "active"] {
            std::fs::create_dir(d.path().join(q)).unwrap();
        }
        let a = d.path().join("incoming/4AB2C3D4E5");
        std::fs::write(&a, b"new").unwrap();
        std::fs::set_permissions(&a, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        std::fs::write(d.path().join("active/4AB2C3D4E5"), b"old").unwrap();
        assert_eq!(activate(&a, d.path(), "4AB2C3D4E5"), None);
        assert_eq!(
            std::fs::read(d.path().join("active/4AB2C3D4E5")).unwrap(),
            b"old"
        );
        assert!(a.exists());
        std::fs::remove_file(d.path().join("active/4AB2C3D4E5")).unwrap();
        assert!(activate(&a, d.path(), "4AB2C3D4E5").is_some());
        assert_eq!(
            std::fs::read(d.path().join("active/4AB2C3D4E5")).unwrap(),
            b"new"
        );
    }
}
