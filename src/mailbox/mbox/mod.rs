//! mbox: one file, each message introduced by a `From SENDER  DATE` line and followed by
//! an empty line. Local delivery writes body lines that begin with `From ` as `>From `
//! (Postfix's `local(8)` quoting; readers do not unquote, Dovecot neither); messages saved
//! by IMAP APPEND and COPY are written as Dovecot 2.3 writes them, unquoted, with a
//! `Content-Length:` that says where the body ends. A `From ` line after an empty line
//! starts a message unless the previous message's `Content-Length:` holds and reaches
//! past it (Dovecot's `istream_raw_mbox_is_valid_from()`).
//!
//! Dovecot's metadata lives in the messages' headers, hidden from clients (`X-IMAPbase`,
//! `X-UID`, `Status`, `X-Status`, `X-Keywords`), padded for later in-place rewrites as
//! Dovecot pads them, so that Dovecot and Postern can take over from each other.
//!
//! The parts, by role:
//! * [`scan`]: the file split into messages in one bounded pass (offsets, metadata, sizes
//!   clients see, `From ` line times), checked against a whole-buffer reference.
//! * [`meta`]: Dovecot's metadata headers: read, UIDs given, written with its padding.
//! * [`rewrite`]: the in-place streaming rewrite (metadata, expunge), kill-safe, checked
//!   against a whole-buffer reference.
//! * [`index`]: [`MboxBox`], a session's index of the box (open, resync, flag updates in
//!   place or by rewrite, expunge), and [`MboxMessage`], one message opened for reading.
//! * [`append`]: local delivery, IMAP APPEND/COPY, moving all messages to another mbox.
//! * `testkit` (tests only): what the tests beside each part share.
//! * Here: the options, opening and locking (dotlock, `flock`, `fcntl`, each when the
//!   options ask for it, in Postfix's `mbox_open()` order; Postfix's `safe_open`
//!   checks), and the time stamp a same-size rewrite must still change.
//!
//! Known differences: Dovecot gives a run of messages that lack space the padding of the
//! whole run spread over them, writes `Status: O` lazily into any header it rewrites
//! once a session has seen the messages (Postern only into the headers whose flags a
//! session changes: Postern keeps \Recent in its index), and requires a `From ` line to
//! carry a date to start a message (Postern: any `From ` line after an empty line).
//! A header cut by the end of the file in a lone `\r`: Dovecot completes that line as an
//! empty `\r\n` and writes the metadata after it, into the body (clients see `Status:`
//! and the flag is lost: compat-fixtures/mbox/lone-cr); Postern writes the metadata
//! before it. An expunge of the file's last message, which ended without newline: Dovecot
//! leaves the message now last without separator line, so that its `Content-Length:`
//! points at the end of the file and no longer holds (a dated `From ` line in its body
//! then starts a message when the file is read anew); Postern gives it the separator
//! line when its `Content-Length:` would otherwise no longer hold. A `Content-Length:`
//! that does not hold where the file is read (the message ends at its next `From ` line
//! instead): both hide it from clients and read the message up to that line; Dovecot
//! keeps the field in the file through its rewrites, Postern drops it from the header
//! when it rewrites the file (compat-fixtures/mbox/stale-cl, stale-cl-long). Left in place, a
//! rewrite that moved the bytes after it could make the stale length land on a later
//! message's separator and swallow the messages between (a fuzz finding:
//! `tests/fuzz_regressions.rs`, `mbox_stale_content_length_…`).

mod append;
mod index;
mod meta;
mod rewrite;
mod scan;
#[cfg(test)]
mod testkit;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::MailboxError;
use super::lock::{DotLock, dotlock, fcntl_lock};

pub use append::{
    MboxDelivery, MboxSave, append, deliver_mbox, deliver_mbox_batch, format_for_append, move_all,
};
pub use index::{MboxBox, MboxFlags, MboxMessage, MboxMsg};
pub use scan::from_line_time;

/// How an mbox is locked and checked.
#[derive(Debug, Clone)]
pub struct MboxOptions {
    /// Take the `NAME.lock` dotlock before opening (by default; Dovecot's
    /// `mbox_write_locks` names `dotlock`; Postfix's `mailbox_delivery_lock` and
    /// `virtual_mailbox_lock`, see [`LockKinds`](super::lock::LockKinds)).
    pub dotlock: bool,
    /// Take a `flock(2)` lock after opening, before the `fcntl` one (Postfix's order in
    /// `mbox_open()`); not by default (deliveries whose lock parameter names `flock`).
    pub flock: bool,
    /// Take the whole-file `fcntl` write lock (by default; a delivery whose lock
    /// parameter does not name `fcntl` does not).
    pub fcntl: bool,
    /// Take an exclusive `lockf(3)` lock (a POSIX write lock on the whole file) after
    /// the others: a session whose `mbox_write_locks` names `lockf`; not by default.
    pub lockf: bool,
    /// The locks a session reads under (Dovecot's `mbox_read_locks`, default `fcntl`):
    /// when it indexes the box and while a message is being read. Deliveries do not read.
    pub read_locks: super::lock::SessionLocks,
    /// Dovecot's `Fatal:` text for `mbox_read_locks`/`mbox_write_locks` it refuses: a
    /// session's every mbox lock then fails with [`MailboxError::LockSettings`] (the
    /// session ends as Dovecot's mail process does, at its first mbox lock).
    pub lock_settings_error: Option<String>,
    /// Dovecot's `mail_privileged_group`, resolved: the group a dotlock the user may not
    /// create in the INBOX's directory is created with (`/var/mail` root:mail 0775).
    pub privileged_gid: Option<u32>,
    /// The mail root (`mail_location`'s first path). Dovecot locks with the privileged
    /// group only an INBOX outside it; `None`: no root known (delivery), allowed.
    pub mail_root: Option<PathBuf>,
    /// Where a dotlock that could not be created is reported (Dovecot's `Error: Mailbox
    /// INBOX: file_dotlock_create(…) failed: Permission denied (…)`); the operation then
    /// goes on under `fcntl` alone, as Dovecot's does.
    pub lock_errors: Option<super::lock::LockErrors>,
    /// How long to wait for each lock (Dovecot's `mbox_lock_timeout`, 5 min).
    pub lock_timeout: Duration,
    /// For delivery: Postfix's `deliver_lock_attempts` × `deliver_lock_delay` instead of
    /// `lock_timeout`, and Postfix's words when the lock cannot be had
    /// ([`MailboxError::LockFailed`]).
    pub delivery_lock: Option<super::lock::DeliveryLock>,
    /// `stale_lock_time`: a dotlock older than this is removed (one whose process is gone
    /// at once).
    pub stale_lock_time: Duration,
    /// For delivery: the uid the file must belong to (`None`: not checked).
    pub expected_owner: Option<u32>,
    /// For delivery: the mode of a newly created file.
    pub create_mode: u32,
}

impl Default for MboxOptions {
    fn default() -> Self {
        MboxOptions {
            dotlock: true,
            flock: false,
            fcntl: true,
            lockf: false,
            read_locks: super::lock::SessionLocks {
                fcntl: true,
                ..Default::default()
            },
            lock_settings_error: None,
            privileged_gid: None,
            mail_root: None,
            lock_errors: None,
            lock_timeout: Duration::from_secs(300),
            delivery_lock: None,
            stale_lock_time: super::lock::STALE_DOTLOCK,
            expected_owner: None,
            create_mode: 0o600,
        }
    }
}

/// The write locks on an open mbox; released on drop (the dotlock is removed, the
/// flock and fcntl locks go with the file).
pub(super) struct Locked {
    pub(super) file: File,
    pub(super) _dot: Option<DotLock>,
}

pub(super) fn open_locked(
    path: &Path,
    opts: &MboxOptions,
    create: bool,
) -> Result<Locked, MailboxError> {
    if opts.delivery_lock.is_none() {
        // A session: Dovecot's checks of its lock lists come first.
        if let Some(t) = &opts.lock_settings_error {
            return Err(MailboxError::LockSettings(t.clone()));
        }
        let write = super::lock::SessionLocks {
            dotlock: opts.dotlock,
            flock: opts.flock,
            fcntl: opts.fcntl,
            lockf: opts.lockf,
        };
        if write.is_empty() {
            return Err(MailboxError::Locked(path.to_path_buf()));
        }
    }
    let dot = if opts.dotlock {
        Some(dotlock(path, opts)?)
    } else {
        None
    };
    let file = open_file(path, true, create, opts)?;
    check_file(&file, path, opts)?;
    // Postfix's mbox_open(): the dotlock, then flock, then fcntl, each only when asked for.
    if opts.flock {
        match opts.delivery_lock {
            Some(d) => super::lock::flock_lock_delivery(&file, path, d)?,
            None => super::lock::flock_lock(&file, path, opts.lock_timeout)?,
        }
    }
    if opts.fcntl {
        match opts.delivery_lock {
            Some(d) => super::lock::fcntl_lock_delivery(&file, path, d)?,
            None => fcntl_lock(&file, path, true, opts.lock_timeout)?,
        }
    }
    if opts.lockf {
        fcntl_lock(&file, path, true, opts.lock_timeout)?;
    }
    Ok(Locked { file, _dot: dot })
}

/// Whether a session's reader must open the mbox for writing: `lockf` in
/// `mbox_read_locks` is a write lock, which the kernel grants only on a descriptor open
/// for writing (Dovecot opens its mboxes read-write).
pub(super) fn read_needs_write(opts: &MboxOptions) -> bool {
    opts.read_locks.lockf
}

/// Take a session's read locks (Dovecot's `mbox_read_locks`) on `file`, the open mbox at
/// `path`, waiting up to `timeout` for each: the dotlock (returned: removed when dropped),
/// then a shared `flock`, an `fcntl` read lock and an exclusive `lockf` lock, each when
/// named; those go with the file. A lock not named is not taken: with `mbox_read_locks =
/// dotlock` no kernel lock at all. Refused lock lists fail with
/// [`MailboxError::LockSettings`], an empty list with [`MailboxError::Locked`] at once, as
/// in Dovecot.
pub(super) fn lock_for_reading(
    file: &File,
    path: &Path,
    opts: &MboxOptions,
    timeout: Duration,
) -> Result<Option<DotLock>, MailboxError> {
    if let Some(t) = &opts.lock_settings_error {
        return Err(MailboxError::LockSettings(t.clone()));
    }
    let r = opts.read_locks;
    if r.is_empty() {
        return Err(MailboxError::Locked(path.to_path_buf()));
    }
    let dot = if r.dotlock {
        let o = MboxOptions {
            lock_timeout: timeout,
            ..opts.clone()
        };
        Some(dotlock(path, &o)?)
    } else {
        None
    };
    if r.flock {
        super::lock::flock_lock_shared(file, path, timeout)?;
    }
    if r.fcntl {
        fcntl_lock(file, path, false, timeout)?;
    }
    if r.lockf {
        fcntl_lock(file, path, true, timeout)?;
    }
    Ok(dot)
}

/// Open the mbox without following a symlink, for reading and, with `write`, writing
/// (created if `create`).
pub(super) fn open_file(
    path: &Path,
    write: bool,
    create: bool,
    opts: &MboxOptions,
) -> Result<File, MailboxError> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .create(write && create)
        .mode(opts.create_mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                MailboxError::Unsafe(path.to_path_buf(), "file is a symbolic link".into())
            } else {
                MailboxError::io(path, e)
            }
        })
}

/// Refuse anything but a plain file with one link, owned as expected, and still the file
/// the path names (Postfix's `safe_open` checks).
pub(super) fn check_file(file: &File, path: &Path, opts: &MboxOptions) -> Result<(), MailboxError> {
    let st = file.metadata().map_err(|e| MailboxError::io(path, e))?;
    let unsafe_ = |why: &str| MailboxError::Unsafe(path.to_path_buf(), why.to_string());
    if !st.file_type().is_file() {
        return Err(unsafe_("is not a regular file"));
    }
    // Postfix's safe_open() words.
    if st.nlink() != 1 {
        return Err(unsafe_(&format!("file has {} hard links", st.nlink())));
    }
    if let Some(uid) = opts.expected_owner
        && st.uid() != uid
    {
        return Err(unsafe_(&format!("is owned by uid {}, not {uid}", st.uid())));
    }
    let lst = std::fs::symlink_metadata(path).map_err(|e| MailboxError::io(path, e))?;
    if lst.dev() != st.dev() || lst.ino() != st.ino() {
        return Err(unsafe_("file status changed unexpectedly"));
    }
    Ok(())
}

/// After a rewrite that left the file's size as it was, make sure its modification time
/// (in seconds) changed too: Dovecot's index notices a changed mbox by mtime and size
/// only (`mbox_sync_has_changed()`), so a same-size rewrite within the second Dovecot last
/// looked would go unseen. Dovecot itself waits for the next second; the time is set to
/// the next second instead (at most one second ahead of the clock), with the clock's
/// nanoseconds, so that Postern sessions, which compare times to the nanosecond, never
/// see two states of the file with one time.
pub(super) fn touch_if_same(file: &File, before: &std::fs::Metadata) {
    let Ok(after) = file.metadata() else {
        return;
    };
    if after.len() != before.len() || after.mtime() != before.mtime() {
        return;
    }
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let secs = u64::try_from(before.mtime() + 1).unwrap_or(0);
    let t = UNIX_EPOCH + Duration::new(secs, ns);
    // The access time is left as it is.
    let _ = file.set_times(std::fs::FileTimes::new().set_modified(t));
}

#[cfg(test)]
mod tests {
    //! Tests of opening and locking.

    use super::{append::*, *};

    #[test]
    fn symlink_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("t");
        std::fs::write(&target, b"").expect("write");
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let e = deliver_mbox(&link, "a", b"x\n", &MboxOptions::default());
        assert!(matches!(e, Err(MailboxError::Unsafe(..))), "{e:?}");
    }

    /// The file with each unquoted `From ` line cut to `From SENDER` (the date differs).
    fn without_dates(b: &[u8]) -> String {
        String::from_utf8_lossy(b)
            .split_inclusive('\n')
            .map(|l| match l.strip_prefix("From ") {
                Some(r) => format!("From {}\n", r.split("  ").next().unwrap_or_default()),
                None => l.to_string(),
            })
            .collect()
    }

    #[test]
    fn group_commit_writes_what_single_deliveries_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (one, many) = (dir.path().join("one"), dir.path().join("many"));
        // A box whose last message lacks its final newline (another program's cut write).
        for p in [&one, &many] {
            std::fs::write(
                p,
                b"From x  Sat Nov 28 14:36:59 2026\nSubject: old\n\nno end",
            )
            .unwrap();
        }
        let msgs: [(&str, &[u8]); 3] = [
            ("a@x", b"Subject: 1\r\n\r\nFrom here\r\n"),
            ("", b"Subject: 2\n\nbody"),
            ("c@x", b"Subject: 3\n\n>From x\n"),
        ];
        let opts = MboxOptions::default();
        for (s, m) in msgs {
            deliver_mbox(&one, s, m, &opts).expect("single");
        }
        let batch: Vec<MboxDelivery<'_>> = msgs
            .iter()
            .map(|(s, m)| MboxDelivery {
                from_line_sender: s,
                message: m,
                size_limit: 0,
            })
            .collect();
        let r = deliver_mbox_batch(&many, &batch, &opts);
        assert!(r.iter().all(Result::is_ok), "{r:?}");
        let (a, b) = (std::fs::read(&one).unwrap(), std::fs::read(&many).unwrap());
        assert_eq!(without_dates(&a), without_dates(&b));
        assert!(without_dates(&b).contains("From MAILER-DAEMON\n"));
    }

    #[test]
    fn group_commit_failures_stay_with_their_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        let big = vec![b'x'; 4000];
        let batch = [
            MboxDelivery {
                from_line_sender: "a@x",
                message: b"Subject: 1\n\none\n",
                size_limit: 1000,
            },
            // Would take the box past mailbox_size_limit: refused, not written.
            MboxDelivery {
                from_line_sender: "b@x",
                message: &big,
                size_limit: 1000,
            },
            MboxDelivery {
                from_line_sender: "c@x",
                message: b"Subject: 3\n\nthree\n",
                size_limit: 1000,
            },
        ];
        let r = deliver_mbox_batch(&p, &batch, &MboxOptions::default());
        assert!(r[0].is_ok() && r[2].is_ok(), "{r:?}");
        match &r[1] {
            Err(MailboxError::Io { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EFBIG))
            }
            other => panic!("{other:?}"),
        }
        let text = without_dates(&std::fs::read(&p).unwrap());
        assert_eq!(
            text,
            "From a@x\nSubject: 1\n\none\n\nFrom c@x\nSubject: 3\n\nthree\n\n"
        );
        // A box that cannot be locked fails every message of the batch alike.
        std::fs::write(dir.path().join("inbox.lock"), b"").unwrap();
        let short = MboxOptions {
            lock_timeout: Duration::from_millis(200),
            ..MboxOptions::default()
        };
        let r = deliver_mbox_batch(&p, &batch, &short);
        assert_eq!(r.len(), 3);
        assert!(
            r.iter().all(|e| matches!(e, Err(MailboxError::Locked(_)))),
            "{r:?}"
        );
    }

    #[test]
    fn waits_for_dotlock_and_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        let lock = dir.path().join("inbox.lock");
        std::fs::write(&lock, b"").expect("lock");
        let short = MboxOptions {
            lock_timeout: Duration::from_millis(300),
            ..MboxOptions::default()
        };
        let e = deliver_mbox(&p, "a", b"x\n", &short);
        assert!(matches!(e, Err(MailboxError::Locked(_))), "{e:?}");
        assert!(lock.exists(), "someone else's lock is left alone");
        let l2 = lock.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            std::fs::remove_file(l2).expect("unlock");
        });
        deliver_mbox(&p, "a", b"x\n", &MboxOptions::default()).expect("after unlock");
        t.join().expect("join");
        assert!(!lock.exists());
    }

    #[test]
    fn waits_for_fcntl_lock_of_another_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        std::fs::write(&p, b"").expect("create");
        let ready = dir.path().join("ready");
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import fcntl,time\nf=open('{}','r+')\nfcntl.lockf(f,fcntl.LOCK_EX)\nopen('{}','w').close()\ntime.sleep(0.8)",
                p.display(),
                ready.display()
            ))
            .spawn()
            .expect("python3");
        while !ready.exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let t0 = std::time::Instant::now();
        deliver_mbox(&p, "a", b"x\n", &MboxOptions::default()).expect("deliver");
        assert!(t0.elapsed() >= Duration::from_millis(300), "did not wait");
        let _ = child.wait();
    }

    /// A delivery with `mailbox_delivery_lock = flock` and a session writing the mbox:
    /// they exclude each other only when the session's `mbox_write_locks` names `flock`
    /// too (Dovecot's default, `fcntl dotlock`, does not).
    #[test]
    fn flock_delivery_against_sessions_with_and_without_flock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        std::fs::write(&p, b"").expect("create");
        let delivery = MboxOptions {
            dotlock: false,
            flock: true,
            fcntl: false,
            delivery_lock: Some(crate::mailbox::lock::DeliveryLock {
                attempts: 2,
                delay: Duration::from_millis(20),
            }),
            ..MboxOptions::default()
        };
        let session = open_locked(&p, &MboxOptions::default(), false).expect("default locks");
        deliver_mbox(&p, "a", b"x\n", &delivery).expect("not excluded by fcntl and dotlock");
        drop(session);
        let flocking = MboxOptions {
            flock: true,
            ..MboxOptions::default()
        };
        let session = open_locked(&p, &flocking, false).expect("with flock");
        let e = deliver_mbox(&p, "a", b"x\n", &delivery).expect_err("excluded");
        assert_eq!(
            e.to_string(),
            "unable to lock for exclusive access: Resource temporarily unavailable"
        );
        drop(session);
        deliver_mbox(&p, "a", b"x\n", &delivery).expect("free again");
        // And a session waits for such a delivery's flock (then gives up at its timeout).
        let f = std::fs::File::open(&p).expect("open");
        f.try_lock().expect("flock");
        let short = MboxOptions {
            flock: true,
            lock_timeout: Duration::from_millis(100),
            ..MboxOptions::default()
        };
        assert!(matches!(
            open_locked(&p, &short, false),
            Err(MailboxError::Locked(_))
        ));
    }
}
