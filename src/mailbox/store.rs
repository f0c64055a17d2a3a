//! A user's mail store: the folders under the mail root as Dovecot 2.3 lays them out,
//! their list with IMAP's attributes, subscriptions, and creating, deleting and renaming
//! folders with Dovecot's rules. A folder is opened as a [`Folder`] view.
//!
//! Layouts (hierarchy separator as Dovecot reports it):
//! * mbox (`/`): a folder is a file under the root (`~/mail/Work`), a level of the
//!   hierarchy a directory (`~/mail/Lists/rust`); a directory is `\Noselect`, a file
//!   `\NoInferiors`. INBOX is the `INBOX=` file; its children live in `ROOT/INBOX/`.
//!   Subscriptions: `ROOT/.subscriptions`. Index directory: `.imap/NAME` beside the
//!   folder (`~/mail/.imap/INBOX`, `~/mail/Lists/.imap/rust`).
//! * Maildir++ (`.`, the default `LAYOUT`): INBOX is the root Maildir, a folder the
//!   Maildir `ROOT/.Lists.rust` with a `maildirfolder` file; a missing level is listed
//!   `\Noselect`. Subscriptions: `ROOT/subscriptions`; index and control files in each
//!   folder's directory.
//! * Maildir `LAYOUT=fs` (`/`): folders are Maildirs in directories below the root
//!   (`ROOT/Lists/rust`); `cur`, `new` and `tmp` are reserved names.
//!
//! Folder names are given and returned in UTF-8; on disk (file names, subscriptions)
//! they are stored in modified UTF-7 as Dovecot stores them. `INDEX=` and `CONTROL=`
//! move the index and control files as in Dovecot. Every path is built from a checked
//! name ([`super::names::check`]) under the root; no symlink is followed into a folder
//! (a symlinked folder is neither listed nor opened).
//!
//! Every operation runs with the user's filesystem identity when the store was given
//! one ([`crate::sys::fsid::FsIdentity`]): files are created and checked as the user.
//!
//! New folders get their UIDVALIDITY as Dovecot's `mailbox_uidvalidity_next()` hands it
//! out: from `dovecot-uidvalidity` (hexadecimal) in the list's control directory, with an
//! empty `dovecot-uidvalidity.XXXXXXXX` marker renamed on each use, so that a folder
//! deleted and created again gets a new one, whichever program created it.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::flags::Flags;
use super::folder::{Access, Folder};
use super::mbox::MboxOptions;
use super::names::{
    check, from_mutf7, is_inbox, normalize_inbox, tab_escape, tab_unescape, to_mutf7,
};
use super::{Format, Layout, MailLocation, MailboxError};
use crate::sys::fsid::FsIdentity;

/// How the store treats mailboxes.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// mbox locking (`mbox_lock_timeout`, dotlocks).
    pub mbox: MboxOptions,
    /// The `From ` line sender of messages saved into an mbox (Dovecot: the user name,
    /// with `@` and the host name when it has no domain).
    pub sender: String,
}

/// A user's mail store, opened from an expanded `mail_location`.
#[derive(Debug, Clone)]
pub struct MailStore {
    loc: MailLocation,
    sep: char,
    ids: Option<(u32, u32)>,
    pub(crate) opts: StoreOptions,
}

/// Where a folder's files are.
#[derive(Debug, Clone)]
pub(crate) struct FolderPaths {
    /// The mbox file, or the Maildir.
    pub mailbox: PathBuf,
    /// Maildir: where `dovecot-uidlist` and `dovecot-keywords` are.
    pub control: PathBuf,
    /// Where Dovecot's index files and `postern.index` are.
    pub index: PathBuf,
}

/// A folder in the list, with IMAP's attributes (RFC 3501, RFC 3348 CHILDREN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    /// UTF-8, with the store's separator.
    pub name: String,
    /// `\Noselect`: a level of the hierarchy that holds no messages.
    pub noselect: bool,
    /// `\NoInferiors`: an mbox file, which cannot have children.
    pub noinferiors: bool,
    /// `\HasChildren` (true) or `\HasNoChildren` (false); neither with `\NoInferiors`.
    pub has_children: bool,
}

/// What STATUS reports (RFC 3501 §6.3.10, RFC 7162 HIGHESTMODSEQ, RFC 8438 SIZE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FolderStatus {
    pub messages: u32,
    pub recent: u32,
    pub uid_next: u32,
    pub uid_validity: u32,
    pub unseen: u32,
    /// Sequence number of the first message without \Seen (SELECT's `[UNSEEN n]`).
    pub first_unseen: Option<u32>,
    pub highest_modseq: u64,
    pub size: u64,
}

/// A message to save (APPEND).
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// The message, CRLF or LF line ends (stored as LF).
    pub data: &'a [u8],
    pub flags: Flags,
    /// Keyword names (checked with [`super::flags::valid_keyword`]).
    pub keywords: Vec<String>,
    /// The internal date (Unix seconds); `None`: now.
    pub internal_date: Option<i64>,
}

/// The result of APPEND or COPY/MOVE: what UIDPLUS reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub uid_validity: u32,
    pub uids: Vec<u32>,
}

/// Dovecot's errors for folder operations.
fn not_found(name: &str) -> MailboxError {
    MailboxError::NotFound(name.to_string())
}

impl MailStore {
    /// The store of `loc`; operations use the filesystem identity `ids` (uid, gid) when
    /// given (a session of a root process).
    pub fn open(loc: MailLocation, ids: Option<(u32, u32)>, mut opts: StoreOptions) -> MailStore {
        // Dovecot locks with the privileged group only an INBOX outside the mail root.
        if loc.format == Format::Mbox {
            opts.mbox.mail_root = Some(loc.root.clone());
        }
        let sep = match (loc.format, loc.layout) {
            (Format::Maildir, Layout::MaildirPlusPlus) => '.',
            _ => '/',
        };
        MailStore {
            loc,
            sep,
            ids,
            opts,
        }
    }

    /// The hierarchy separator (`/` mbox and `LAYOUT=fs`, `.` Maildir++).
    pub fn separator(&self) -> char {
        self.sep
    }

    pub fn location(&self) -> &MailLocation {
        &self.loc
    }

    /// The filesystem identity operations run with.
    pub fn identity(&self) -> Option<(u32, u32)> {
        self.ids
    }

    pub(crate) fn enter(&self) -> FsIdentity {
        FsIdentity::maybe(self.ids)
    }

    /// `name` checked and with INBOX in its canonical case.
    pub fn canonical(&self, name: &str) -> Result<String, MailboxError> {
        let n = normalize_inbox(name, self.sep);
        check(&n, self.sep, false)?;
        Ok(n)
    }

    /// The name's levels in modified UTF-7.
    fn levels(&self, name: &str) -> Vec<String> {
        name.split(self.sep).map(to_mutf7).collect()
    }

    /// Where the folder `name` (canonical) lives.
    pub(crate) fn paths(&self, name: &str) -> FolderPaths {
        let root = &self.loc.root;
        let levels = self.levels(name);
        match self.loc.format {
            Format::Mbox => {
                let mailbox = if name == "INBOX" {
                    self.loc.inbox.clone()
                } else {
                    levels.iter().fold(root.clone(), |p, l| p.join(l))
                };
                let leaf = levels.last().cloned().unwrap_or_default();
                let parents = &levels[..levels.len().saturating_sub(1)];
                let index = match self.loc.index_dir() {
                    Some(d) => levels.iter().fold(d.to_path_buf(), |p, l| p.join(l)),
                    None => parents
                        .iter()
                        .fold(root.clone(), |p, l| p.join(l))
                        .join(".imap")
                        .join(leaf),
                };
                FolderPaths {
                    control: index.clone(),
                    mailbox,
                    index,
                }
            }
            Format::Maildir => {
                let rel = |base: &Path| -> PathBuf {
                    if name == "INBOX" {
                        return base.to_path_buf();
                    }
                    match self.loc.layout {
                        Layout::MaildirPlusPlus => base.join(format!(".{}", levels.join("."))),
                        Layout::Fs => levels.iter().fold(base.to_path_buf(), |p, l| p.join(l)),
                    }
                };
                let mailbox = if name == "INBOX" {
                    self.loc.inbox.clone()
                } else {
                    rel(root)
                };
                let control = self
                    .loc
                    .control
                    .as_deref()
                    .map(rel)
                    .unwrap_or_else(|| mailbox.clone());
                let index = self
                    .loc
                    .index_dir()
                    .map(rel)
                    .unwrap_or_else(|| mailbox.clone());
                FolderPaths {
                    mailbox,
                    control,
                    index,
                }
            }
        }
    }

    /// The directory of the list's own files (`dovecot-uidvalidity`).
    fn list_control(&self) -> PathBuf {
        match self.loc.format {
            Format::Mbox => self
                .loc
                .index_dir()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| self.loc.root.join(".imap")),
            Format::Maildir => self
                .loc
                .control
                .clone()
                .unwrap_or_else(|| self.loc.root.clone()),
        }
    }

    /// The subscriptions file.
    fn subscriptions_path(&self) -> PathBuf {
        let dir = self
            .loc
            .control
            .clone()
            .unwrap_or_else(|| self.loc.root.clone());
        let name = match self.loc.format {
            Format::Mbox => ".subscriptions",
            Format::Maildir => "subscriptions",
        };
        dir.join(name)
    }

    /// Whether the folder `name` exists and holds messages (can be selected).
    fn selectable(&self, name: &str, p: &FolderPaths) -> bool {
        match self.loc.format {
            Format::Mbox => {
                name == "INBOX"
                    || std::fs::symlink_metadata(&p.mailbox).is_ok_and(|m| m.file_type().is_file())
            }
            Format::Maildir => {
                name == "INBOX"
                    || (std::fs::symlink_metadata(&p.mailbox).is_ok_and(|m| m.file_type().is_dir())
                        && std::fs::symlink_metadata(p.mailbox.join("cur"))
                            .is_ok_and(|m| m.file_type().is_dir()))
            }
        }
    }

    /// Refuse a folder reached through a symlink: each level below the root must be a
    /// directory or file of its own.
    fn no_symlinks(&self, name: &str, p: &FolderPaths) -> Result<(), MailboxError> {
        if name == "INBOX" {
            return Ok(());
        }
        let root = &self.loc.root;
        let Ok(rel) = p.mailbox.strip_prefix(root) else {
            return Err(MailboxError::Unsafe(
                p.mailbox.clone(),
                "outside the mail root".into(),
            ));
        };
        let mut at = root.clone();
        for c in rel.components() {
            at.push(c);
            if let Ok(m) = std::fs::symlink_metadata(&at)
                && m.file_type().is_symlink()
            {
                return Err(MailboxError::Unsafe(at, "is a symbolic link".into()));
            }
        }
        Ok(())
    }

    /// Every folder, INBOX first, then the others in the order found (as Dovecot lists
    /// them, unsorted).
    pub fn list(&self) -> Result<Vec<FolderInfo>, MailboxError> {
        let _id = self.enter();
        let mut names: Vec<(String, bool, bool)> = Vec::new(); // (name, selectable, noinferiors)
        match (self.loc.format, self.loc.layout) {
            (Format::Mbox, _) => self.walk_mbox(&self.loc.root.clone(), "", &mut names),
            (Format::Maildir, Layout::MaildirPlusPlus) => self.walk_maildirpp(&mut names),
            (Format::Maildir, Layout::Fs) => self.walk_fs(&self.loc.root.clone(), "", &mut names),
        }
        // Levels with no folder of their own (Maildir++ `a` for `.a.b`).
        let mut all: Vec<(String, bool, bool)> = Vec::new();
        for (n, sel, noinf) in names {
            let parts: Vec<&str> = n.split(self.sep).collect();
            for k in 1..parts.len() {
                let parent = parts[..k].join(&self.sep.to_string());
                if !all.iter().any(|x| x.0 == parent) {
                    all.push((parent, false, false));
                }
            }
            if let Some(x) = all.iter_mut().find(|x| x.0 == n) {
                x.1 |= sel;
                x.2 = noinf;
            } else {
                all.push((n, sel, noinf));
            }
        }
        let prefix_of = |parent: &str, child: &str| {
            child.len() > parent.len()
                && child.starts_with(parent)
                && child[parent.len()..].starts_with(self.sep)
        };
        let mut out = vec![FolderInfo {
            name: "INBOX".into(),
            noselect: false,
            noinferiors: false,
            has_children: all.iter().any(|x| prefix_of("INBOX", &x.0)),
        }];
        for (n, sel, noinf) in &all {
            if n == "INBOX" {
                continue;
            }
            out.push(FolderInfo {
                name: n.clone(),
                noselect: !sel,
                noinferiors: *noinf,
                has_children: !noinf && all.iter().any(|x| prefix_of(n, &x.0)),
            });
        }
        Ok(out)
    }

    /// mbox: files are folders, directories levels; `.imap`, `.subscriptions` and dotlocks
    /// are Dovecot's and Postern's own files, not folders.
    fn walk_mbox(&self, dir: &Path, prefix: &str, out: &mut Vec<(String, bool, bool)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let top = prefix.is_empty();
        for ent in rd.flatten() {
            let raw = ent.file_name().to_string_lossy().into_owned();
            if raw == ".imap" || raw == ".subscriptions" || raw.ends_with(".lock") {
                continue;
            }
            let Some(level) = from_mutf7(&raw) else {
                continue;
            };
            let Ok(ft) = ent.file_type() else { continue };
            if ft.is_symlink() {
                continue;
            }
            let name = if top {
                if is_inbox(&level) {
                    // INBOX is the `INBOX=` file; a directory of that name holds its
                    // children.
                    if ft.is_dir() {
                        self.walk_mbox(&ent.path(), "INBOX", out);
                    }
                    continue;
                }
                level
            } else {
                format!("{prefix}{}{level}", self.sep)
            };
            if ft.is_dir() {
                out.push((name.clone(), false, false));
                self.walk_mbox(&ent.path(), &name, out);
            } else if ft.is_file() {
                out.push((name, true, true));
            }
        }
    }

    /// Maildir++: `.NAME` directories of the root that are Maildirs.
    fn walk_maildirpp(&self, out: &mut Vec<(String, bool, bool)>) {
        let Ok(rd) = std::fs::read_dir(&self.loc.root) else {
            return;
        };
        for ent in rd.flatten() {
            let raw = ent.file_name().to_string_lossy().into_owned();
            let Some(rest) = raw.strip_prefix('.') else {
                continue;
            };
            if rest.is_empty() || rest == "." {
                continue;
            }
            if !ent.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let levels: Option<Vec<String>> = rest.split('.').map(from_mutf7).collect();
            let Some(levels) = levels else { continue };
            if levels.iter().any(|l| l.is_empty()) {
                continue;
            }
            let name = normalize_inbox(&levels.join("."), '.');
            let sel = ent.path().join("cur").is_dir();
            out.push((name, sel, false));
        }
    }

    /// Maildir `LAYOUT=fs`: directories below the root; one with `cur/` holds messages.
    fn walk_fs(&self, dir: &Path, prefix: &str, out: &mut Vec<(String, bool, bool)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for ent in rd.flatten() {
            let raw = ent.file_name().to_string_lossy().into_owned();
            if raw.starts_with('.') || ["cur", "new", "tmp"].contains(&raw.as_str()) {
                continue;
            }
            if !ent.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(level) = from_mutf7(&raw) else {
                continue;
            };
            let name = if prefix.is_empty() {
                normalize_inbox(&level, '/')
            } else {
                format!("{prefix}/{level}")
            };
            let sel = ent.path().join("cur").is_dir();
            out.push((name.clone(), sel, false));
            self.walk_fs(&ent.path(), &name, out);
        }
    }

    /// Whether the folder exists and can be selected.
    pub fn exists(&self, name: &str) -> Result<bool, MailboxError> {
        let name = self.canonical(name)?;
        let _id = self.enter();
        let p = self.paths(&name);
        Ok(self.no_symlinks(&name, &p).is_ok() && self.selectable(&name, &p))
    }

    /// CREATE: a folder (mbox: an empty file, its parent levels as directories; Maildir:
    /// a Maildir). A name ending with the separator makes only the hierarchy level (mbox:
    /// a directory), as Dovecot does. Errors as Dovecot's: `[ALREADYEXISTS] Mailbox
    /// already exists`, `[CANNOT] Mailbox doesn't allow inferior mailboxes` (under an
    /// mbox file), invalid names.
    pub fn create(&self, name: &str) -> Result<(), MailboxError> {
        let (name, dir_only) = match name.strip_suffix(self.sep) {
            Some(n) if !n.is_empty() => (n, true),
            _ => (name, false),
        };
        let name = normalize_inbox(name, self.sep);
        check(&name, self.sep, true)?;
        if name == "INBOX" {
            return Err(MailboxError::AlreadyExists("Mailbox already exists".into()));
        }
        if self.loc.format == Format::Maildir
            && self.loc.layout == Layout::Fs
            && name.split('/').any(|l| ["cur", "new", "tmp"].contains(&l))
        {
            return Err(MailboxError::InvalidName("Contains reserved name".into()));
        }
        let _id = self.enter();
        let p = self.paths(&name);
        self.no_symlinks(&name, &p)?;
        if std::fs::symlink_metadata(&p.mailbox).is_ok() {
            let exists = match self.loc.format {
                Format::Mbox => true,
                Format::Maildir => self.selectable(&name, &p),
            };
            if exists || dir_only {
                return Err(MailboxError::AlreadyExists("Mailbox already exists".into()));
            }
        }
        let mkdirs = |d: &Path| -> Result<(), MailboxError> {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotADirectory
                        || e.raw_os_error() == Some(libc::ENOTDIR)
                        || e.kind() == std::io::ErrorKind::AlreadyExists
                    {
                        MailboxError::cannot(
                            Some("CANNOT"),
                            "Mailbox doesn't allow inferior mailboxes",
                        )
                    } else {
                        MailboxError::io(d, e)
                    }
                })
        };
        match self.loc.format {
            Format::Mbox => {
                if let Some(parent) = p.mailbox.parent() {
                    // An mbox file where a level should be: no inferiors.
                    let mut at = self.loc.root.clone();
                    if let Ok(rel) = parent.strip_prefix(&self.loc.root) {
                        for c in rel.components() {
                            at.push(c);
                            if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_file())
                            {
                                return Err(MailboxError::cannot(
                                    Some("CANNOT"),
                                    "Mailbox doesn't allow inferior mailboxes",
                                ));
                            }
                        }
                    }
                    mkdirs(parent)?;
                }
                if dir_only {
                    return mkdirs(&p.mailbox);
                }
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&p.mailbox)
                    .map_err(|e| {
                        if e.kind() == std::io::ErrorKind::AlreadyExists {
                            MailboxError::AlreadyExists("Mailbox already exists".into())
                        } else {
                            MailboxError::io(&p.mailbox, e)
                        }
                    })?;
                // The UIDVALIDITY of the empty box is kept in Postern's index (an mbox
                // stores it only in its first message).
                let v = self.uidvalidity_next();
                super::folder::init_index(&p.index, v)?;
            }
            Format::Maildir => {
                for sub in ["cur", "new", "tmp"] {
                    mkdirs(&p.mailbox.join(sub))?;
                }
                if self.loc.layout == Layout::MaildirPlusPlus {
                    let f = p.mailbox.join("maildirfolder");
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&f)
                        .map_err(|e| MailboxError::io(&f, e))?;
                }
                if p.control != p.mailbox {
                    mkdirs(&p.control)?;
                }
                let v = self.uidvalidity_next();
                super::maildir::create_uidlist(&p.control, v)?;
                super::folder::init_index(&p.index, v)?;
            }
        }
        Ok(())
    }

    /// DELETE, with Dovecot's rules: INBOX cannot be deleted; an mbox directory only when
    /// empty ("Mailbox has children, delete them first"); a Maildir++ folder goes with its
    /// messages and index files while its children stay. The folder's index directory
    /// goes too. Subscriptions are kept, as Dovecot keeps them.
    pub fn delete(&self, name: &str) -> Result<(), MailboxError> {
        let name = self.canonical(name)?;
        if name == "INBOX" {
            return Err(MailboxError::cannot(None, "INBOX can't be deleted"));
        }
        let _id = self.enter();
        let p = self.paths(&name);
        self.no_symlinks(&name, &p)?;
        let meta = std::fs::symlink_metadata(&p.mailbox).map_err(|_| not_found(&name))?;
        match self.loc.format {
            Format::Mbox => {
                if meta.file_type().is_dir() {
                    let children = std::fs::read_dir(&p.mailbox)
                        .map_err(|e| MailboxError::io(&p.mailbox, e))?
                        .flatten()
                        .any(|e| e.file_name() != ".imap");
                    if children {
                        return Err(MailboxError::cannot(
                            None,
                            "Mailbox has children, delete them first",
                        ));
                    }
                    let _ = std::fs::remove_dir_all(p.mailbox.join(".imap"));
                    std::fs::remove_dir(&p.mailbox).map_err(|e| MailboxError::io(&p.mailbox, e))?;
                } else {
                    std::fs::remove_file(&p.mailbox)
                        .map_err(|e| MailboxError::io(&p.mailbox, e))?;
                    let _ = std::fs::remove_dir_all(&p.index);
                }
            }
            Format::Maildir => {
                if !self.selectable(&name, &p) {
                    // LAYOUT=fs: a level without messages goes when it is empty.
                    if self.loc.layout == Layout::Fs && meta.file_type().is_dir() {
                        let children = std::fs::read_dir(&p.mailbox)
                            .map_err(|e| MailboxError::io(&p.mailbox, e))?
                            .flatten()
                            .any(|e| e.file_type().is_ok_and(|t| t.is_dir()));
                        if children {
                            return Err(MailboxError::cannot(
                                None,
                                "Mailbox has children, delete them first",
                            ));
                        }
                        return remove_tree(&p.mailbox);
                    }
                    return Err(not_found(&name));
                }
                match self.loc.layout {
                    Layout::MaildirPlusPlus => remove_tree(&p.mailbox)?,
                    Layout::Fs => {
                        // Children are directories below: keep them, drop the messages.
                        for sub in ["cur", "new", "tmp"] {
                            remove_tree(&p.mailbox.join(sub))?;
                        }
                        if let Ok(rd) = std::fs::read_dir(&p.mailbox) {
                            for e in rd.flatten() {
                                if e.file_type().is_ok_and(|t| t.is_file()) {
                                    let _ = std::fs::remove_file(e.path());
                                }
                            }
                        }
                        let _ = std::fs::remove_dir(&p.mailbox);
                    }
                }
                if p.control != p.mailbox {
                    let _ = remove_tree(&p.control);
                }
                if p.index != p.mailbox && p.index != p.control {
                    let _ = remove_tree(&p.index);
                }
            }
        }
        Ok(())
    }

    /// RENAME, with Dovecot's rules: children move with their parent; renaming INBOX
    /// moves its messages to the new folder and leaves INBOX empty (mbox), or is refused
    /// (Maildir: `[CANNOT] Renaming INBOX isn't supported`); the target must not exist
    /// (`[ALREADYEXISTS] Target mailbox already exists`).
    pub fn rename(&self, from: &str, to: &str) -> Result<(), MailboxError> {
        let from = self.canonical(from)?;
        let to = normalize_inbox(to, self.sep);
        check(&to, self.sep, true)?;
        let _id = self.enter();
        if to == "INBOX" || self.exists_any(&to) {
            return Err(MailboxError::AlreadyExists(
                "Target mailbox already exists".into(),
            ));
        }
        let pf = self.paths(&from);
        let pt = self.paths(&to);
        self.no_symlinks(&from, &pf)?;
        self.no_symlinks(&to, &pt)?;
        if from == "INBOX" {
            if self.loc.format == Format::Maildir {
                return Err(MailboxError::cannot(
                    Some("CANNOT"),
                    "Renaming INBOX isn't supported",
                ));
            }
            return self.rename_mbox_inbox(&pt);
        }
        if to.starts_with(&format!("{from}{}", self.sep)) {
            return Err(MailboxError::cannot(
                Some("CANNOT"),
                "Can't rename mailbox under itself.",
            ));
        }
        match (self.loc.format, self.loc.layout) {
            (Format::Maildir, Layout::MaildirPlusPlus) => {
                // The folder and every `.FROM.child` directory.
                let old = format!(".{}", self.levels(&from).join("."));
                let new = format!(".{}", self.levels(&to).join("."));
                let mut moves: Vec<(PathBuf, PathBuf)> = Vec::new();
                for ent in std::fs::read_dir(&self.loc.root)
                    .map_err(|e| MailboxError::io(&self.loc.root, e))?
                    .flatten()
                {
                    let n = ent.file_name().to_string_lossy().into_owned();
                    if n == old || n.starts_with(&format!("{old}.")) {
                        let target = format!("{new}{}", &n[old.len()..]);
                        moves.push((ent.path(), self.loc.root.join(target)));
                    }
                }
                if moves.is_empty() {
                    return Err(not_found(&from));
                }
                for (a, b) in &moves {
                    if b.exists() {
                        return Err(MailboxError::AlreadyExists(
                            "Target mailbox already exists".into(),
                        ));
                    }
                    let _ = a;
                }
                for (a, b) in moves {
                    std::fs::rename(&a, &b).map_err(|e| MailboxError::io(&a, e))?;
                }
                for d in [&self.loc.control, &self.loc.index] {
                    if let Some(d) = d.as_deref()
                        && let Ok(rd) = std::fs::read_dir(d)
                    {
                        for ent in rd.flatten() {
                            let n = ent.file_name().to_string_lossy().into_owned();
                            if n == old || n.starts_with(&format!("{old}.")) {
                                let _ = std::fs::rename(
                                    ent.path(),
                                    d.join(format!("{new}{}", &n[old.len()..])),
                                );
                            }
                        }
                    }
                }
            }
            _ => {
                if std::fs::symlink_metadata(&pf.mailbox).is_err() {
                    return Err(not_found(&from));
                }
                if let Some(parent) = pt.mailbox.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(parent)
                        .map_err(|_| {
                            MailboxError::cannot(
                                Some("CANNOT"),
                                "Mailbox doesn't allow inferior mailboxes",
                            )
                        })?;
                }
                std::fs::rename(&pf.mailbox, &pt.mailbox)
                    .map_err(|e| MailboxError::io(&pf.mailbox, e))?;
                if self.loc.layout == Layout::Fs && self.loc.format == Format::Maildir {
                    // Levels left empty go, as Dovecot removes them.
                    let mut dir = pf.mailbox.parent().map(Path::to_path_buf);
                    while let Some(d) = dir {
                        if d == self.loc.root || std::fs::remove_dir(&d).is_err() {
                            break;
                        }
                        dir = d.parent().map(Path::to_path_buf);
                    }
                }
                if self.loc.format == Format::Mbox && pf.index.exists() {
                    if let Some(parent) = pt.index.parent() {
                        let _ = std::fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o700)
                            .create(parent);
                    }
                    let _ = std::fs::rename(&pf.index, &pt.index);
                }
            }
        }
        Ok(())
    }

    /// Whether anything (a folder or a level) has the name `name`.
    fn exists_any(&self, name: &str) -> bool {
        if name == "INBOX" {
            return true;
        }
        let p = self.paths(name);
        std::fs::symlink_metadata(&p.mailbox).is_ok()
    }

    /// mbox INBOX renamed: its file becomes the new folder and an empty INBOX takes its
    /// place (Dovecot's result); across filesystems (or from a spool the user cannot
    /// write), the messages are copied and INBOX emptied under its lock.
    fn rename_mbox_inbox(&self, to: &FolderPaths) -> Result<(), MailboxError> {
        let inbox = &self.loc.inbox;
        if let Some(parent) = to.mailbox.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| MailboxError::io(parent, e))?;
        }
        let mode = std::fs::symlink_metadata(inbox)
            .map(|m| m.mode() & 0o7777)
            .unwrap_or(0o600);
        match std::fs::rename(inbox, &to.mailbox) {
            Ok(()) => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(inbox)
                    .map_err(|e| MailboxError::io(inbox, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // No INBOX file: an empty folder.
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&to.mailbox)
                    .map_err(|e| MailboxError::io(&to.mailbox, e))?;
            }
            Err(_) => super::mbox::move_all(inbox, &to.mailbox, &self.opts.mbox)?,
        }
        // INBOX's index now describes another folder.
        let inbox_index = self.paths("INBOX").index;
        if inbox_index.exists() {
            if let Some(parent) = to.index.parent() {
                let _ = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent);
            }
            let _ = std::fs::rename(&inbox_index, &to.index);
        }
        Ok(())
    }

    /// The subscribed names (LSUB), as the subscriptions file lists them (names of
    /// folders that no longer exist included).
    pub fn subscriptions(&self) -> Result<Vec<String>, MailboxError> {
        let _id = self.enter();
        let path = self.subscriptions_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(MailboxError::io(&path, e)),
        };
        Ok(parse_subscriptions(&text, self.sep))
    }

    /// SUBSCRIBE (`subscribed`) or UNSUBSCRIBE `name`, rewriting the subscriptions file
    /// as Dovecot does (version 2: `V\t2` and names with tabs between levels, under the
    /// `.lock` dotlock, replaced by rename). Subscribing to a folder that does not exist
    /// is refused ("Mailbox doesn't exist: NAME"), as Dovecot 2.3 does.
    pub fn set_subscribed(&self, name: &str, subscribed: bool) -> Result<(), MailboxError> {
        let name = self.canonical(name)?;
        let _id = self.enter();
        if subscribed && !self.exists_any(&name) {
            return Err(not_found(&name));
        }
        let path = self.subscriptions_path();
        use super::lock::{LockFileError, create_lock_file, older_than};
        if let Some(dir) = path.parent() {
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir);
        }
        let lock = super::lock::dotlock_path(&path);
        let half = std::time::Duration::from_secs(30);
        let mut f = match create_lock_file(&lock, 0o600, b"", half, |p| older_than(p, half)) {
            Ok(f) => f,
            Err(LockFileError::Io(e)) => return Err(MailboxError::io(&lock, e)),
            Err(LockFileError::Busy) => return Err(MailboxError::Locked(lock)),
        };
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let mut names = parse_subscriptions(&old, self.sep);
        let had = names.contains(&name);
        if had == subscribed {
            let _ = std::fs::remove_file(&lock);
            return Ok(());
        }
        if subscribed {
            names.push(name);
        } else {
            names.retain(|n| *n != name);
        }
        let mut text = String::from("V\t2\n\n");
        for n in &names {
            let levels: Vec<String> = n
                .split(self.sep)
                .map(|l| tab_escape(&to_mutf7(l)))
                .collect();
            text.push_str(&levels.join("\t"));
            text.push('\n');
        }
        use std::io::Write;
        let res = f
            .write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .and_then(|()| std::fs::rename(&lock, &path));
        if let Err(e) = res {
            let _ = std::fs::remove_file(&lock);
            return Err(MailboxError::io(&path, e));
        }
        Ok(())
    }

    /// Open the folder `name` as a view ([`Folder`]).
    pub fn select(&self, name: &str, access: Access) -> Result<Folder, MailboxError> {
        let name = self.canonical(name)?;
        let _id = self.enter();
        let p = self.paths(&name);
        self.no_symlinks(&name, &p)?;
        if !self.selectable(&name, &p) {
            return Err(not_found(&name));
        }
        Folder::open(self.clone(), name, p, access)
    }

    /// STATUS of `name`, read as an EXAMINE would (without taking \Recent); with `size`
    /// the messages' sizes are made known for it (STATUS SIZE, a quota's count), else
    /// `size` counts only those known.
    pub fn status(&self, name: &str, size: bool) -> Result<FolderStatus, MailboxError> {
        let mut f = self.select(name, Access::ReadOnly)?;
        Ok(if size {
            f.status_with_size()
        } else {
            f.status()
        })
    }

    /// APPEND `msgs` to the folder `name` in one step (MULTIAPPEND): the UIDs they got.
    /// A missing folder is `NotFound` (IMAP's `[TRYCREATE]`).
    pub fn append(&self, name: &str, msgs: &[NewMessage]) -> Result<Appended, MailboxError> {
        for m in msgs {
            if let Some(k) = m.keywords.iter().find(|k| !super::flags::valid_keyword(k)) {
                return Err(MailboxError::cannot(None, &format!("Invalid keyword: {k}")));
            }
        }
        let name = self.canonical(name)?;
        let _id = self.enter();
        let p = self.paths(&name);
        self.no_symlinks(&name, &p)?;
        if !self.selectable(&name, &p) {
            return Err(not_found(&name));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let saves: Vec<super::folder::Save> = msgs
            .iter()
            .map(|m| super::folder::Save {
                data: super::folder::SaveData::Bytes(m.data),
                flags: m.flags,
                keywords: m.keywords.clone(),
                date: m.internal_date.unwrap_or(now),
            })
            .collect();
        super::folder::save(self, &p, &saves)
    }

    /// The next UIDVALIDITY for a new folder (Dovecot's `mailbox_uidvalidity_next()`).
    pub(crate) fn uidvalidity_next(&self) -> u32 {
        uidvalidity_next(&self.list_control().join("dovecot-uidvalidity"))
    }
}

/// Remove a directory tree without following symlinks in it.
fn remove_tree(dir: &Path) -> Result<(), MailboxError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(MailboxError::io(dir, e)),
        Ok(m) if !m.file_type().is_dir() => {
            std::fs::remove_file(dir).map_err(|e| MailboxError::io(dir, e))
        }
        Ok(_) => std::fs::remove_dir_all(dir).map_err(|e| MailboxError::io(dir, e)),
    }
}

/// The names of a subscriptions file: version 2 (`V\t2`, then names with tab-separated
/// levels) or version 1 (a name per line with the list's separator), decoded from
/// modified UTF-7 (a name that is not valid mUTF-7 is left out).
fn parse_subscriptions(text: &str, sep: char) -> Vec<String> {
    let mut lines = text.lines();
    let v2 = text.starts_with("V\t2\n");
    if v2 {
        lines.next();
    }
    let mut out: Vec<String> = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let levels: Vec<String> = if v2 {
            line.split('\t').map(tab_unescape).collect()
        } else {
            line.split(sep).map(String::from).collect()
        };
        let decoded: Option<Vec<String>> = levels.iter().map(|l| from_mutf7(l)).collect();
        let Some(decoded) = decoded else { continue };
        let name = normalize_inbox(&decoded.join(&sep.to_string()), sep);
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Dovecot's `mailbox_uidvalidity_next()` over the file `path`: read the current value
/// (hexadecimal), rename the marker `path.XXXXXXXX` to the next value (the rename is the
/// claim: two programs cannot both get one value), write the value back. Without the
/// file, the highest marker found is used, or the time.
pub(crate) fn uidvalidity_next(path: &Path) -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
        .max(1);
    let Some(dir) = path.parent() else {
        return now;
    };
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    let fname = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let marker = |v: u32| dir.join(format!("{fname}.{v:08x}"));
    let write = |v: u32| {
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .and_then(|f| {
                std::os::unix::fs::FileExt::write_all_at(&f, format!("{v:08x}").as_bytes(), 0)
            });
    };
    let current = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| u32::from_str_radix(t.trim(), 16).ok())
        .filter(|v| *v != 0);
    let current = current.or_else(|| {
        let mut max = None;
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(hex) = n.strip_prefix(&format!("{fname}."))
                && let Ok(v) = u32::from_str_radix(hex, 16)
            {
                max = max.max(Some(v));
            }
        }
        max
    });
    let Some(mut v) = current else {
        // No file and no marker: start from the time.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(marker(now));
        write(now);
        return now;
    };
    for _ in 0..10 {
        let next = v.wrapping_add(1).max(1);
        match std::fs::rename(marker(v), marker(next)) {
            Ok(()) => {
                write(next);
                return next;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => v = next,
            Err(_) => break,
        }
    }
    // The markers are broken: fall back on the time, past the value seen.
    let v = now.max(v.wrapping_add(1)).max(1);
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(marker(v));
    write(v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_file_versions() {
        let v2 = "V\t2\n\nsubbed\na\tb\nEntw&APw-rfe\ninbox\n";
        assert_eq!(
            parse_subscriptions(v2, '/'),
            ["subbed", "a/b", "Entwürfe", "INBOX"]
        );
        assert_eq!(
            parse_subscriptions(v2, '.'),
            ["subbed", "a.b", "Entwürfe", "INBOX"]
        );
        assert_eq!(
            parse_subscriptions("Lists/rust\nWork\n", '/'),
            ["Lists/rust", "Work"]
        );
    }

    #[test]
    fn uidvalidity_next_as_dovecot() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("dovecot-uidvalidity");
        let a = uidvalidity_next(&p);
        let b = uidvalidity_next(&p);
        assert_eq!(b, a + 1);
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            format!("{b:08x}")
        );
        assert!(
            d.path()
                .join(format!("dovecot-uidvalidity.{b:08x}"))
                .exists()
        );
        assert!(
            !d.path()
                .join(format!("dovecot-uidvalidity.{a:08x}"))
                .exists()
        );
        // Without the main file, the marker carries on.
        std::fs::remove_file(&p).expect("rm");
        assert_eq!(uidvalidity_next(&p), b + 1);
    }
}
