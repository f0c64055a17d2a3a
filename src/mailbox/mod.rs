//! The mailbox layer shared by local delivery, pop3d and imapd (`DESIGN.md` §2, §4): mbox
//! and Maildir on disk, in the formats and with the locks Postfix's `local(8)`, procmail,
//! mutt and Dovecot 2.3 use, with Dovecot's metadata read and written where Dovecot keeps
//! it, so that UIDs, flags, keywords, folders and subscriptions survive a swap between
//! Dovecot and Postern in either direction. It knows no protocol. `man/postern-mailbox.5`
//! documents the formats, the locks and what Postern keeps where.
//!
//! * Write side (local delivery): [`deliver_mbox`], [`deliver_mbox_batch`] (several
//!   deliveries to one mbox under one lock hold and one fsync: group commit) and
//!   [`deliver_maildir`] ([`deliver_maildir_batch`]: several, one fsync of `new/`).
//! * The store (pop3d, imapd): [`MailLocation`] expands `mail_location` (or 0.99's
//!   `default_mail_env`; `INBOX=`, `LAYOUT=`, `CONTROL=`, `INDEX=`); [`MailStore`] is a
//!   user's folders ([`store`]: list with IMAP's attributes, create, delete, rename,
//!   subscriptions, STATUS, APPEND), run with the user's filesystem identity;
//!   [`Folder`] is a session's view of one folder ([`folder`]: messages by sequence and
//!   UID with flags, keywords, MODSEQ, size and internal date; STORE with
//!   UNCHANGEDSINCE, EXPUNGE, COPY, MOVE, and [`Folder::sync`], which reports what
//!   others changed: new mail, flags, expunges).
//! * Formats: [`mbox`] (`X-IMAPbase`, `X-UID`, `Status`, `X-Status`, `X-Keywords`,
//!   `Content-Length`, in-place rewrites with Dovecot's padding), [`maildir`]
//!   (`dovecot-uidlist` v3, `dovecot-keywords`, `:2,` info), [`names`] (Dovecot's name
//!   checks, modified UTF-7 on disk), [`flags`].
//! * [`index`]: `postern.index`, Postern's own file per folder for what Dovecot keeps
//!   only in `dovecot.index*`: MODSEQs and HIGHESTMODSEQ (CONDSTORE), expunged UIDs with
//!   their MODSEQ (QRESYNC), the first UID no session has seen (\Recent), an empty mbox's
//!   UIDVALIDITY. Dovecot's index files are never read or written; Dovecot notices
//!   Postern's changes from the files (mbox mtime and size, Maildir directory times and
//!   `dovecot-uidlist`) and resyncs, as it does after procmail or mutt.
//!
//! Config read by callers: `mail_location`/`default_mail_env`, `mbox_lock_timeout`,
//! `mbox_dotlock_change_timeout`, `mbox_read_locks` and `mbox_write_locks` ([`lock::session_locks`]:
//! each of dotlock, flock, fcntl, lockf only when named), Postfix `mailbox_delivery_lock` and
//! `virtual_mailbox_lock` ([`lock::LockKinds`]: each of flock, fcntl, dotlock only when
//! named).
//!
//! Known limits (XXX): an mbox is scanned whole when it changed (Dovecot too reads it
//! whole, but seeks over bodies with `Content-Length`); MODSEQs are Postern's own (they
//! start at the time Postern first indexes a folder, above Dovecot's, so CONDSTORE
//! clients resynchronise rather than miss changes); an empty mbox folder created by
//! Dovecot gets a new UIDVALIDITY in Postern (Dovecot keeps it only in its index);
//! `dovecot-uidlist` versions 1 and 2 are not read; a Maildir carries 26 keywords.

pub mod flags;
pub mod folder;
pub mod index;
pub mod lock;
pub mod maildir;
pub mod mbox;
pub mod names;
pub mod store;
#[cfg(test)]
mod store_tests;

use std::path::{Path, PathBuf};

pub use flags::{FlagOp, Flags, KeywordSet};
pub use folder::{Access, Changes, Copied, Folder, Message, Stored, SyncMode};
pub use maildir::{deliver_maildir, deliver_maildir_batch};
pub use mbox::{MboxDelivery, MboxOptions, deliver_mbox, deliver_mbox_batch};
pub use store::{Appended, FolderInfo, FolderStatus, MailStore, NewMessage, StoreOptions};

/// Why a mailbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The lock could not be had within the timeout.
    #[error("{0}: timed out waiting for the mailbox lock")]
    Locked(PathBuf),
    /// A delivery's lock could not be had in `deliver_lock_attempts` tries; Postfix's
    /// words (`unable to create lock file …: File exists`).
    #[error("{0}")]
    LockFailed(String),
    /// A symlink, a non-regular file, a hard-linked file or the wrong owner.
    #[error("{0}: {1}")]
    Unsafe(PathBuf, String),
    #[error("{0}")]
    Format(String),
    /// The folder does not exist (Dovecot's text; IMAP code NONEXISTENT).
    #[error("Mailbox doesn't exist: {0}")]
    NotFound(String),
    /// The name is taken (Dovecot's text, e.g. "Mailbox already exists"; ALREADYEXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// A name Dovecot refuses; the reason as Dovecot words it (CANNOT).
    #[error("Invalid mailbox name: {0}")]
    InvalidName(String),
    /// An operation Dovecot refuses, with its text and IMAP response code, if any
    /// ("INBOX can't be deleted", `[CANNOT] Renaming INBOX isn't supported`).
    #[error("{text}")]
    Cannot {
        code: Option<&'static str>,
        text: String,
    },
    /// The message was expunged (by another session or program).
    #[error("Message {0} was expunged")]
    Expunged(u32),
    /// Dovecot's `mbox_read_locks`/`mbox_write_locks` are refused: its fatal text
    /// ([`lock::session_locks`]). A session logs it as `Fatal:` and ends at once, without
    /// a reply, as Dovecot's mail process dies.
    #[error("{0}")]
    LockSettings(String),
}

impl MailboxError {
    /// The same error again (an I/O error keeps its errno, or its kind and text): for
    /// every message of a group commit that one failure ends
    /// ([`mbox::deliver_mbox_batch`]).
    pub fn duplicate(&self) -> MailboxError {
        use MailboxError as E;
        match self {
            E::Io { path, source } => E::Io {
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(n) => std::io::Error::from_raw_os_error(n),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            E::Locked(p) => E::Locked(p.clone()),
            E::LockFailed(s) => E::LockFailed(s.clone()),
            E::Unsafe(p, s) => E::Unsafe(p.clone(), s.clone()),
            E::Format(s) => E::Format(s.clone()),
            E::NotFound(s) => E::NotFound(s.clone()),
            E::AlreadyExists(s) => E::AlreadyExists(s.clone()),
            E::InvalidName(s) => E::InvalidName(s.clone()),
            E::Cannot { code, text } => E::Cannot {
                code: *code,
                text: text.clone(),
            },
            E::Expunged(n) => E::Expunged(*n),
            E::LockSettings(s) => E::LockSettings(s.clone()),
        }
    }

    pub fn io(path: &Path, source: std::io::Error) -> MailboxError {
        MailboxError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn cannot(code: Option<&'static str>, text: &str) -> MailboxError {
        MailboxError::Cannot {
            code,
            text: text.to_string(),
        }
    }

    /// The IMAP response code Dovecot 2.3 gives with this error (RFC 5530), if any.
    pub fn imap_code(&self) -> Option<&'static str> {
        match self {
            MailboxError::NotFound(_) => Some("NONEXISTENT"),
            MailboxError::AlreadyExists(_) => Some("ALREADYEXISTS"),
            MailboxError::InvalidName(_) => Some("CANNOT"),
            MailboxError::Cannot { code, .. } => *code,
            MailboxError::Expunged(_) => Some("EXPUNGEISSUED"),
            MailboxError::Locked(_) | MailboxError::LockFailed(_) => Some("INUSE"),
            MailboxError::Io { source, .. }
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EDQUOT) | Some(libc::ENOSPC)
                ) =>
            {
                Some("OVERQUOTA")
            }
            MailboxError::Io { .. }
            | MailboxError::Unsafe(..)
            | MailboxError::Format(_)
            | MailboxError::LockSettings(_) => Some("SERVERBUG"),
        }
    }
}

/// What identifies a file's state cheaply: device, inode, size and modification time
/// (to the nanosecond). Two stamps that differ mean the file changed (or was replaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    /// Seconds.
    pub mtime: i64,
    mtime_ns: i64,
}

impl FileStamp {
    fn from_meta(m: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_ns: m.mtime_nsec(),
        }
    }

    /// The stamp of `path` (not following a symlink); `None` if it does not exist.
    pub fn of(path: &Path) -> Option<FileStamp> {
        std::fs::symlink_metadata(path)
            .ok()
            .map(|m| FileStamp::from_meta(&m))
    }

    /// The stamp of an open file.
    pub fn of_file(f: &std::fs::File) -> Option<FileStamp> {
        f.metadata().ok().map(|m| FileStamp::from_meta(&m))
    }
}

/// The storage format of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Mbox,
    Maildir,
}

/// How Maildir folders are laid out (`LAYOUT=`); mbox is always `fs`-like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// `.Folder.Sub` directories in the root, separator `.` (Dovecot's default).
    #[default]
    MaildirPlusPlus,
    /// `Folder/Sub` directories, separator `/`.
    Fs,
}

/// An expanded `mail_location`: where a user's INBOX and folders are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailLocation {
    pub format: Format,
    /// The folder root (`~/mail` for mbox, `~/Maildir` for Maildir).
    pub root: PathBuf,
    /// The INBOX: the `INBOX=` file for mbox, the root itself for Maildir.
    pub inbox: PathBuf,
    /// `LAYOUT=` (Maildir).
    pub layout: Layout,
    /// `CONTROL=`: subscriptions, and Maildir's `dovecot-uidlist`/`dovecot-keywords`.
    pub control: Option<PathBuf>,
    /// `INDEX=`: index files (`MEMORY`: none for Dovecot; Postern then keeps its own
    /// index at the default place).
    pub index: Option<PathBuf>,
}

/// Expand Dovecot's `%` variables and `~` in one `mail_location` part: `%u` user, `%n`
/// local part, `%d` domain, `%h` home, `%%`; `%Lu`-style case modifiers are honoured.
pub fn expand_vars(s: &str, user: &str, home: &str) -> String {
    let (local, domain) = match user.rfind('@') {
        Some(i) => (&user[..i], &user[i + 1..]),
        None => (user, ""),
    };
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    if let Some(rest) = s.strip_prefix('~')
        && (rest.is_empty() || rest.starts_with('/'))
    {
        out.push_str(home);
        chars = rest.chars().peekable();
    }
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut lower = false;
        let mut upper = false;
        loop {
            match chars.peek() {
                Some('L') => lower = true,
                Some('U') => upper = true,
                _ => break,
            }
            chars.next();
        }
        let v = match chars.next() {
            Some('u') => user.to_string(),
            Some('n') => local.to_string(),
            Some('d') => domain.to_string(),
            Some('h') => home.to_string(),
            Some('%') => "%".to_string(),
            Some(o) => format!("%{o}"),
            None => "%".to_string(),
        };
        out.push_str(&if lower {
            v.to_lowercase()
        } else if upper {
            v.to_uppercase()
        } else {
            v
        });
    }
    out
}

impl MailLocation {
    /// Expand `mail_location` (e.g. `mbox:~/mail:INBOX=/var/mail/%u`, `maildir:~/Maildir`,
    /// 0.99's `default_mail_env`) for `user` with home `home`. An empty location is
    /// autodetected as Dovecot does: `~/Maildir` if it exists, else mbox in `~/mail` (or
    /// `~/Mail`) with INBOX `/var/mail/USER`.
    pub fn expand(location: &str, user: &str, home: &str) -> Result<MailLocation, MailboxError> {
        let location = location.trim();
        if location.is_empty() {
            let md = Path::new(home).join("Maildir");
            if md.join("cur").is_dir() {
                return Ok(MailLocation {
                    format: Format::Maildir,
                    root: md.clone(),
                    inbox: md,
                    ..MailLocation::default()
                });
            }
            let mut root = Path::new(home).join("mail");
            if !root.is_dir() && Path::new(home).join("Mail").is_dir() {
                root = Path::new(home).join("Mail");
            }
            let spool = if Path::new("/var/mail").is_dir() {
                "/var/mail"
            } else {
                "/var/spool/mail"
            };
            return Ok(MailLocation {
                format: Format::Mbox,
                root,
                inbox: Path::new(spool).join(user),
                ..MailLocation::default()
            });
        }
        let (format, rest) = match location.split_once(':') {
            Some((f, r)) if f.eq_ignore_ascii_case("mbox") => (Format::Mbox, r),
            Some((f, r)) if f.eq_ignore_ascii_case("maildir") => (Format::Maildir, r),
            Some((f, _)) if !f.contains('/') => {
                return Err(MailboxError::Format(format!(
                    "mail_location: unsupported mailbox format: {f}"
                )));
            }
            // 0.99/1.x allowed a bare path: a directory with `cur/` is a Maildir.
            _ => {
                let p = expand_vars(location, user, home);
                let f = if Path::new(&p).join("cur").is_dir() {
                    Format::Maildir
                } else {
                    Format::Mbox
                };
                (f, location)
            }
        };
        let mut parts = rest.split(':');
        let root = PathBuf::from(expand_vars(parts.next().unwrap_or(""), user, home));
        let mut inbox = None;
        let mut out = MailLocation::default();
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let path = || PathBuf::from(expand_vars(v, user, home));
            match k.to_ascii_uppercase().as_str() {
                "INBOX" => inbox = Some(path()),
                "CONTROL" => out.control = Some(path()),
                "INDEX" => out.index = Some(path()),
                "LAYOUT" if v.eq_ignore_ascii_case("fs") => out.layout = Layout::Fs,
                "LAYOUT" if v.eq_ignore_ascii_case("maildir++") => {
                    out.layout = Layout::MaildirPlusPlus
                }
                "LAYOUT" => {
                    return Err(MailboxError::Format(format!(
                        "mail_location: unsupported LAYOUT: {v}"
                    )));
                }
                // SUBSCRIPTIONS=, DIRNAME=, FULLDIRNAME=, VOLATILEDIR=, … are not used.
                _ => {}
            }
        }
        out.inbox = match (format, inbox) {
            (_, Some(i)) => i,
            (Format::Maildir, None) => root.clone(),
            (Format::Mbox, None) => root.join("inbox"),
        };
        out.format = format;
        out.root = root;
        Ok(out)
    }
}

impl MailLocation {
    /// `INDEX=`'s directory (not `MEMORY`).
    pub fn index_dir(&self) -> Option<&Path> {
        self.index
            .as_deref()
            .filter(|p| !p.as_os_str().eq_ignore_ascii_case("MEMORY"))
    }
}

/// A message of an opened mailbox, to be opened for reading.
#[derive(Debug, Clone)]
pub enum MessageRef {
    Mbox(mbox::MboxMessage),
    Maildir(maildir::MaildirMessage),
}

impl MessageRef {
    /// Open the message for reading (blocking; file access as the calling thread's ids).
    pub fn open(&self) -> Result<MessageReader, MailboxError> {
        match self {
            MessageRef::Mbox(m) => m.open(),
            MessageRef::Maildir(m) => m.open(),
        }
    }

    /// The message opened with this thread's ids (root), if its file is a regular file
    /// owned by `uid`; `None` (nothing kept open) for anything else — another owner, a
    /// symlink, a FIFO, a file gone or renamed — which the caller opens with the user's
    /// ids instead. The file is never reached through a symlink at its last step (a
    /// Maildir's through its descriptor, opened as the user); a file the user owns is
    /// one the user may read (an owner can always change its mode), so reading it with
    /// root's ids lets the user read nothing more, and saves switching the filesystem
    /// ids (four system calls) per message.
    /// An mbox is opened the same way, then locked as
    /// [`open_nowait`](Self::open_nowait) does (`Some(Err(Locked))` when another
    /// writer holds it).
    pub fn open_if_owned(&self, uid: u32) -> Option<Result<MessageReader, MailboxError>> {
        match self {
            MessageRef::Mbox(m) => m.open_if_owned(uid),
            MessageRef::Maildir(m) => m.open_if_owned(uid).map(Ok),
        }
    }

    /// [`open`](Self::open) without waiting for a lock: `Locked` at once when another
    /// writer holds the mbox, so that the caller can wait elsewhere.
    pub fn open_nowait(&self) -> Result<MessageReader, MailboxError> {
        match self {
            MessageRef::Mbox(m) => m.open_waiting(std::time::Duration::ZERO),
            MessageRef::Maildir(m) => m.open(),
        }
    }
}

/// A message as clients see it (LF line ends as stored, hidden headers removed), read in
/// pieces: a prepared head (mbox: the header without Dovecot's metadata fields), then
/// the rest straight from the file, so a message is never held whole.
#[derive(Debug)]
pub struct MessageReader {
    head: Vec<u8>,
    head_pos: usize,
    file: std::fs::File,
    pos: u64,
    end: u64,
    path: PathBuf,
    /// A dotlock held while the message is read (an mbox read under `mbox_read_locks =
    /// dotlock`); the kernel locks go with `file`.
    _dotlock: Option<lock::DotLock>,
}

impl MessageReader {
    /// `head`, then the bytes `pos..end` of `file` (`end` = `u64::MAX`: to its end).
    pub fn new(
        head: Vec<u8>,
        file: std::fs::File,
        pos: u64,
        end: u64,
        path: PathBuf,
    ) -> MessageReader {
        MessageReader {
            head,
            head_pos: 0,
            file,
            pos,
            end,
            path,
            _dotlock: None,
        }
    }

    /// Hold `dot` until the reader is dropped.
    pub(crate) fn holding(mut self, dot: Option<lock::DotLock>) -> MessageReader {
        self._dotlock = dot;
        self
    }
}

impl std::io::Read for MessageReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.head_pos < self.head.len() {
            let n = buf.len().min(self.head.len() - self.head_pos);
            buf[..n].copy_from_slice(&self.head[self.head_pos..self.head_pos + n]);
            self.head_pos += n;
            return Ok(n);
        }
        if self.pos >= self.end || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min((self.end - self.pos) as usize);
        let n = std::os::unix::fs::FileExt::read_at(&self.file, &mut buf[..want], self.pos)?;
        if n == 0 && self.end == u64::MAX {
            // Read to the file's end (Maildir: no stat taken for its length).
            self.pos = self.end;
            return Ok(0);
        }
        if n == 0 {
            // The file got shorter under the session.
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: message truncated under the session",
                    self.path.display()
                ),
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Size of `data` with every LF counted as CRLF (a bare LF's size on the wire).
pub fn crlf_size(data: &[u8]) -> u64 {
    let mut n = data.len() as u64;
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            n += 1;
        }
        prev = b;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let l = MailLocation::expand("mbox:~/mail:INBOX=/var/mail/%u", "bob", "/home/bob")
            .expect("valid");
        assert_eq!(l.format, Format::Mbox);
        assert_eq!(l.root, PathBuf::from("/home/bob/mail"));
        assert_eq!(l.inbox, PathBuf::from("/var/mail/bob"));
        let l = MailLocation::expand("maildir:~/Maildir", "bob", "/home/bob").expect("valid");
        assert_eq!(l.inbox, PathBuf::from("/home/bob/Maildir"));
        let l =
            MailLocation::expand("maildir:/srv/%d/%n", "bob@ex.org", "/home/bob").expect("valid");
        assert_eq!(l.inbox, PathBuf::from("/srv/ex.org/bob"));
        assert_eq!(l.layout, Layout::MaildirPlusPlus);
        let l = MailLocation::expand(
            "maildir:~/Maildir:LAYOUT=fs:INDEX=MEMORY:CONTROL=~/ctl",
            "bob",
            "/home/bob",
        )
        .expect("valid");
        assert_eq!(l.layout, Layout::Fs);
        assert_eq!(l.index_dir(), None);
        assert_eq!(l.control, Some(PathBuf::from("/home/bob/ctl")));
        assert!(MailLocation::expand("maildir:~/M:LAYOUT=index", "b", "/h").is_err());
    }
}
