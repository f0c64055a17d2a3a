//! The mailbox layer shared by local delivery, pop3d and imapd (`DESIGN.md` §2, §4): mbox
//! and Maildir on disk, in the formats and with the locks Postfix's `local(8)`, procmail,
//! mutt and Dovecot 2.3 use, keeping the UIDs Dovecot stored so that POP3 UIDLs and IMAP
//! UIDs survive a swap between Dovecot and Postern. `man/postern-mailbox.5` documents the
//! formats and locks.
//!
//! * Write side (local delivery): [`deliver_mbox`] and [`deliver_maildir`].
//! * Read side (pop3d, imapd): [`MailLocation`] expands `mail_location` (or 0.99's
//!   `default_mail_env`); [`Mailbox::open`] lists messages with their UIDs and sizes;
//!   [`Mailbox::read`] returns a message; [`Mailbox::expunge`] deletes atomically.
//! * [`uidl`] renders `pop3_uidl_format` (default `%08Xu%08Xv`).
//!
//! Config read by callers: `mail_location`/`default_mail_env`, `pop3_uidl_format`,
//! Postfix `mailbox_delivery_lock` (both dotlock and fcntl are always taken).
//!
//! Known limits (XXX): Dovecot's index files (`.imap/`, `dovecot.index*`) are neither read
//! nor written; UIDs come from the mbox headers and `dovecot-uidlist`, which Dovecot keeps
//! in step. `X-Keywords`/`dovecot-keywords`, `INDEX=` and `LAYOUT=` are carried through but
//! not interpreted; folders other than INBOX are not listed.

pub mod lock;
pub mod maildir;
pub mod mbox;

use std::path::{Path, PathBuf};

pub use maildir::deliver_maildir;
pub use mbox::{MboxOptions, deliver_mbox};

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
    /// A symlink, a non-regular file, a hard-linked file or the wrong owner.
    #[error("{0}: {1}")]
    Unsafe(PathBuf, String),
    #[error("{0}")]
    Format(String),
}

impl MailboxError {
    pub fn io(path: &Path, source: std::io::Error) -> MailboxError {
        MailboxError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The storage format of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Mbox,
    Maildir,
}

/// An expanded `mail_location`: where a user's INBOX and folders are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailLocation {
    pub format: Format,
    /// The folder root (`~/mail` for mbox, `~/Maildir` for Maildir).
    pub root: PathBuf,
    /// The INBOX: the `INBOX=` file for mbox, the root itself for Maildir.
    pub inbox: PathBuf,
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
        for p in parts {
            if let Some(v) = p.strip_prefix("INBOX=") {
                inbox = Some(PathBuf::from(expand_vars(v, user, home)));
            }
            // INDEX=, CONTROL=, LAYOUT=, … are accepted and ignored (see the module limits).
        }
        let inbox = match (format, inbox) {
            (_, Some(i)) => i,
            (Format::Maildir, None) => root.clone(),
            (Format::Mbox, None) => root.join("inbox"),
        };
        Ok(MailLocation {
            format,
            root,
            inbox,
        })
    }
}

/// One message of an opened mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    pub uid: u32,
    /// Size as POP3 reports it: CRLF line ends, Dovecot's hidden mbox headers left out.
    pub size: u64,
    /// Maildir: the file's base name (before `:2,`); mbox: empty.
    pub file_base: String,
}

/// An opened INBOX: a snapshot of its messages with Dovecot-compatible UIDs.
#[derive(Debug)]
pub enum Mailbox {
    Mbox(mbox::MboxMailbox),
    Maildir(maildir::MaildirMailbox),
}

impl Mailbox {
    /// Open the INBOX of `loc`, assigning and storing UIDs for messages that have none.
    pub fn open(loc: &MailLocation) -> Result<Mailbox, MailboxError> {
        Self::open_with(loc, &MboxOptions::default())
    }

    /// [`open`](Self::open) with mbox lock settings (`mbox_lock_timeout`).
    pub fn open_with(loc: &MailLocation, opts: &MboxOptions) -> Result<Mailbox, MailboxError> {
        Self::open_session(loc, opts, false)
    }

    /// [`open_with`](Self::open_with) for a session that drops \\Recent, as Dovecot's
    /// POP3 does unless `pop3_no_flag_updates = yes`: Maildir messages move from `new/`
    /// to `cur/`. (An mbox is not rewritten for it: Dovecot 2.3 writes no `Status:` then.)
    pub fn open_session(
        loc: &MailLocation,
        opts: &MboxOptions,
        drop_recent: bool,
    ) -> Result<Mailbox, MailboxError> {
        match loc.format {
            Format::Mbox => {
                // Dovecot locks with the privileged group only an INBOX outside the root.
                let mut opts = opts.clone();
                opts.mail_root = Some(loc.root.clone());
                Ok(Mailbox::Mbox(mbox::MboxMailbox::open(&loc.inbox, &opts)?))
            }
            Format::Maildir => Ok(Mailbox::Maildir(maildir::MaildirMailbox::open_session(
                &loc.inbox,
                drop_recent,
            )?)),
        }
    }

    pub fn uid_validity(&self) -> u32 {
        match self {
            Mailbox::Mbox(m) => m.uid_validity,
            Mailbox::Maildir(m) => m.uid_validity,
        }
    }

    pub fn messages(&self) -> &[MessageInfo] {
        match self {
            Mailbox::Mbox(m) => &m.messages,
            Mailbox::Maildir(m) => &m.messages,
        }
    }

    /// The message at `index` (0-based), LF line ends, hidden headers removed.
    pub fn read(&self, index: usize) -> Result<Vec<u8>, MailboxError> {
        match self {
            Mailbox::Mbox(m) => m.read(index),
            Mailbox::Maildir(m) => m.read(index),
        }
    }

    /// Where the message at `index` is: a small owned value that [`MessageRef::open`]
    /// turns into a reader (on a blocking thread, as the mail user).
    pub fn message(&self, index: usize) -> Option<MessageRef> {
        match self {
            Mailbox::Mbox(m) => m.message(index).map(MessageRef::Mbox),
            Mailbox::Maildir(m) => m.message(index).map(MessageRef::Maildir),
        }
    }

    /// After a failed [`MessageRef::open`]: find the messages again if the file was
    /// rewritten by someone else (mbox; a Maildir message is found by name anyway).
    pub fn resync(&mut self) -> Result<(), MailboxError> {
        match self {
            Mailbox::Mbox(m) => m.resync(),
            Mailbox::Maildir(_) => Ok(()),
        }
    }

    /// POP3's UPDATE state: delete the messages at `gone` and mark those at `seen` \\Seen
    /// (mbox `Status: RO`, Maildir `:2,S`), as Dovecot 2.3 does at QUIT.
    pub fn commit(&mut self, gone: &[usize], seen: &[usize]) -> Result<(), MailboxError> {
        match self {
            Mailbox::Mbox(m) => m.commit(gone, seen),
            Mailbox::Maildir(m) => m.commit(gone, seen),
        }
    }

    /// Delete the messages at `indexes` (0-based) in one step: the mbox is rewritten under
    /// its write lock, Maildir files are unlinked. Messages delivered since the mailbox was
    /// opened are kept.
    pub fn expunge(&mut self, indexes: &[usize]) -> Result<(), MailboxError> {
        match self {
            Mailbox::Mbox(m) => m.expunge(indexes),
            Mailbox::Maildir(m) => m.expunge(indexes),
        }
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
        }
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

/// Render `pop3_uidl_format` for one message: `%u` UID, `%v` UIDVALIDITY, `%f` Maildir file
/// base name, `%%`, with Dovecot's width, zero padding and modifiers (`%08Xu`: lower-case
/// hex, as Dovecot prints it). `%m` (header MD5) and `%g` (GUID) are not supported and
/// render empty (XXX).
pub fn uidl(format: &str, uid_validity: u32, msg: &MessageInfo) -> String {
    let value = |key: &str| match key {
        "u" => Some(msg.uid.to_string()),
        "v" => Some(uid_validity.to_string()),
        "f" => Some(msg.file_base.clone()),
        _ => None,
    };
    crate::config::dovecot::var_expand::var_expand(format, value, |_| String::new())
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
    fn uidl_default_format() {
        let m = MessageInfo {
            uid: 1,
            size: 0,
            file_base: "123.M1P2.host".into(),
        };
        assert_eq!(uidl("%08Xu%08Xv", 1795876603, &m), "000000016b0ae6fb");
        assert_eq!(uidl("%v.%u", 7, &m), "7.1");
        assert_eq!(uidl("%f", 7, &m), "123.M1P2.host");
    }

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
    }
}
