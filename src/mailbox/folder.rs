//! A selected folder: a session's view of one mailbox (IMAP's selected state, POP3's
//! maildrop). The view holds the messages in the order the session numbers them
//! (sequence numbers), each with its UID, flags, keywords, MODSEQ, size and internal
//! date; [`Folder::sync`] brings it up to date with the files and says what changed
//! since the session last looked, whoever changed them (another session, Dovecot, local
//! delivery, a mail client). The size and internal date of a Maildir message in an IMAP
//! view are made known when a command needs them ([`Folder::resolve`]: from the view,
//! from `postern.index`'s `Z` records, else from the file, then recorded there).
//!
//! Change detection is stat-based: the mbox file, or a Maildir's `new/`, `cur/`,
//! `dovecot-uidlist` and `dovecot-keywords`, and `postern.index` ([`super::index`]) are
//! compared with what the view last read (inode, size, modification time to the
//! nanosecond); while a file was modified within the last two seconds it is read again
//! at each sync anyway (a same-size change within the file system's time granularity
//! would look unchanged, as Dovecot guards against with `MAILDIR_SYNC_SECS`). A sync
//! that finds nothing changed costs a few `stat` calls, so it can run before every IMAP
//! command and every half second in IDLE.
//!
//! What a view does, it reports itself (STORE's FETCH, EXPUNGE's replies); a later sync
//! reports only what others did. Expunges by others are held back while the session
//! may not report them ([`SyncMode::NoExpunges`], during FETCH, STORE, SEARCH): the
//! message stays in the view, marked [`Message::expunged`], until a sync that may.
//!
//! \Recent, as in Dovecot: a message is recent in exactly one session, the first that
//! sees it with read-write access (SELECT, not EXAMINE); `postern.index` keeps the first
//! UID no such session has seen.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::OpenOptionsExt;

use super::flags::{FlagOp, Flags, KeywordSet, valid_keyword};
use super::index::{self, Index, Rec, Record};
use super::maildir::{MaildirBox, MaildirOpen, MaildirSave, MaildirSource};
use super::mbox::{MboxBox, MboxSave};
use super::store::{Appended, FolderPaths, FolderStatus, MailStore};
use super::{Format, MailboxError, MessageRef};

/// How a folder is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// IMAP SELECT: changes allowed; takes \Recent.
    ReadWrite,
    /// IMAP EXAMINE (and STATUS): no changes; \Recent shown, not taken.
    ReadOnly,
    /// A POP3 maildrop: changes allowed, no MODSEQs or \Recent kept (Postern's index is
    /// not read); `move_new`: Maildir messages leave `new/` (Dovecot's POP3 unless
    /// `pop3_no_flag_updates = yes`).
    Pop3 { move_new: bool },
}

/// One message as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub uid: u32,
    pub flags: Flags,
    /// Indexes into [`Folder::keywords`].
    pub keywords: KeywordSet,
    /// \Recent in this session.
    pub recent: bool,
    /// RFC 7162 MODSEQ (0 in a POP3 view).
    pub modseq: u64,
    /// RFC822.SIZE: the message with CRLF line ends, Dovecot's hidden mbox headers left
    /// out (what a FETCH of BODY[] sends). Of a Maildir message in an IMAP view: valid
    /// once [`Folder::resolve`] made it known ([`size_known`](Self::size_known)).
    pub size: u64,
    /// INTERNALDATE (Unix seconds): the mbox `From ` line's time, the Maildir file's
    /// modification time (0 in a POP3 view of a Maildir). Of a Maildir message in an
    /// IMAP view: valid once [`Folder::resolve`] made it known.
    pub internal_date: i64,
    /// Expunged by someone else and not yet reported to the session (its contents may
    /// be gone).
    pub expunged: bool,
    /// Which of `size` ([`KNOWN_SIZE`]) and `internal_date` ([`KNOWN_DATE`]) are known.
    known: u8,
}

const KNOWN_SIZE: u8 = 1;
const KNOWN_DATE: u8 = 2;

impl Message {
    /// Whether `size` is known (see [`Folder::resolve`]).
    pub fn size_known(&self) -> bool {
        self.known & KNOWN_SIZE != 0
    }

    /// Whether `internal_date` is known (see [`Folder::resolve`]).
    pub fn date_known(&self) -> bool {
        self.known & KNOWN_DATE != 0
    }
}

/// Whether a sync may remove expunged messages from the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// NOOP, IDLE, CHECK, SELECT…: expunges are reported.
    Full,
    /// FETCH, STORE, SEARCH: expunged messages stay (marked) until a full sync.
    NoExpunges,
}

/// What changed since the view's last sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The folder's UIDVALIDITY changed (it was recreated): the view now holds the new
    /// folder's messages; an IMAP session should be closed (Dovecot: `* BYE`).
    pub uid_validity_changed: bool,
    /// Messages gone, as `(sequence number, UID)` in the order IMAP reports them: each
    /// sequence number counts the messages left after the ones before it in this list
    /// (ascending, as Dovecot sends `* 2 EXPUNGE`, `* 2 EXPUNGE` for messages 2 and 3).
    pub expunged: Vec<(u32, u32)>,
    /// Messages added at the end of the view (EXISTS is `messages().len()`).
    pub new_messages: usize,
    /// UIDs whose flags, keywords or MODSEQ changed (the messages are in the view).
    pub flags: Vec<u32>,
    /// The folder's keyword list grew (IMAP's FLAGS and PERMANENTFLAGS change).
    pub keywords_added: bool,
    /// The number of \Recent messages in the view changed.
    pub recent_changed: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// The result of a STORE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// UIDs whose flags or keywords changed (new MODSEQ given).
    pub changed: Vec<u32>,
    /// UIDs not changed because their MODSEQ was above UNCHANGEDSINCE (RFC 7162
    /// `[MODIFIED …]`).
    pub modified: Vec<u32>,
}

/// The result of a COPY or MOVE: UIDPLUS's COPYUID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    pub uid_validity: u32,
    /// (source UID, new UID), in source UID order.
    pub uids: Vec<(u32, u32)>,
}

/// The mailbox behind a view.
#[derive(Debug)]
enum Backend {
    Mbox(MboxBox),
    Maildir(MaildirBox),
}

/// A message of the backend, as the view needs it.
struct BMsg<'a> {
    uid: u32,
    flags: Flags,
    keywords: &'a KeywordSet,
    /// Unknown until read (a Maildir message's, see [`MaildirBox::resolve`]).
    size: Option<u64>,
    date: Option<i64>,
    looks_new: bool,
}

impl Backend {
    fn validity(&self) -> u32 {
        match self {
            Backend::Mbox(b) => b.uid_validity,
            Backend::Maildir(b) => b.uid_validity,
        }
    }
    fn uid_next(&self) -> u32 {
        match self {
            Backend::Mbox(b) => b.uid_next,
            Backend::Maildir(b) => b.uid_next,
        }
    }
    fn keywords(&self) -> &[String] {
        match self {
            Backend::Mbox(b) => &b.keywords,
            Backend::Maildir(b) => &b.keywords,
        }
    }
    fn len(&self) -> usize {
        match self {
            Backend::Mbox(b) => b.messages.len(),
            Backend::Maildir(b) => b.messages.len(),
        }
    }
    fn msg(&self, j: usize) -> BMsg<'_> {
        match self {
            Backend::Mbox(b) => {
                let m = &b.messages[j];
                BMsg {
                    uid: m.uid,
                    flags: m.flags,
                    keywords: &m.keywords,
                    size: Some(m.size),
                    date: Some(m.date),
                    looks_new: !m.old,
                }
            }
            Backend::Maildir(b) => {
                let m = &b.messages[j];
                BMsg {
                    uid: m.uid,
                    flags: m.flags,
                    keywords: &m.keywords,
                    size: m.size,
                    date: m.date,
                    looks_new: m.in_new,
                }
            }
        }
    }
    fn uid(&self, j: usize) -> u32 {
        match self {
            Backend::Mbox(b) => b.messages[j].uid,
            Backend::Maildir(b) => b.messages[j].uid,
        }
    }
    /// The position of `uid` (messages are in UID order).
    fn find(&self, uid: u32) -> Option<usize> {
        let n = self.len();
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.uid(mid).cmp(&uid) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }
    /// The keyword names of message `j`.
    fn keyword_names(&self, j: usize) -> Vec<String> {
        let kw = self.keywords();
        self.msg(j)
            .keywords
            .iter()
            .filter_map(|i| kw.get(i).filter(|k| !k.is_empty()).cloned())
            .collect()
    }
    /// A stamp of the files now (cheap: a few `stat` calls) and their newest time.
    fn changed(&self) -> (bool, i64) {
        match self {
            Backend::Mbox(b) => {
                let now = super::FileStamp::of(&b.path);
                (now != b.stamp, now.map(|s| s.mtime).unwrap_or(0))
            }
            Backend::Maildir(b) => {
                let now = super::maildir::MaildirStamp::of(&b.dir, &b.ctl);
                (now != b.stamp || b.retrying(), now.newest())
            }
        }
    }
    fn refresh(&mut self) -> Result<(), MailboxError> {
        match self {
            Backend::Mbox(b) => b.refresh(),
            Backend::Maildir(b) => b.refresh(),
        }
    }
    fn message_ref(&self, j: usize) -> Option<MessageRef> {
        match self {
            Backend::Mbox(b) => b.message(j).map(MessageRef::Mbox),
            Backend::Maildir(b) => b.message(j).map(MessageRef::Maildir),
        }
    }
    /// Write new flags and keywords of messages and delete others.
    fn update(
        &mut self,
        changes: HashMap<u32, (Flags, Vec<String>)>,
        expunge: &HashSet<u32>,
        rescan: bool,
    ) -> Result<(), MailboxError> {
        match self {
            Backend::Mbox(b) => {
                // A message a session changes is no longer \Recent for Dovecot: `O`.
                let ch = changes
                    .into_iter()
                    .map(|(u, (f, k))| (u, (f, true, k)))
                    .collect();
                b.update(&ch, expunge, rescan)
            }
            Backend::Maildir(b) => {
                b.update(&changes, expunge)?;
                if rescan {
                    b.refresh()?;
                }
                Ok(())
            }
        }
    }
}

/// A selected folder (see the module documentation).
#[derive(Debug)]
pub struct Folder {
    store: MailStore,
    name: String,
    paths: FolderPaths,
    access: Access,
    backend: Backend,
    /// Postern's index (not in a POP3 view).
    index: Option<Index>,
    index_stamp: Option<super::FileStamp>,
    /// The view's keyword names; message keywords index into it. Only grows.
    keywords: Vec<String>,
    messages: Vec<Message>,
    uid_validity: u32,
    uid_next: u32,
    highest_modseq: u64,
    /// The backend or index was read since the view was last compared with them.
    stale: bool,
    /// Read the files again at syncs until this time (Unix seconds): they changed
    /// recently, maybe within the file system's time granularity.
    recheck_until: i64,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The mark of a folder a CONDSTORE client has used (see `Folder::modseqs_announced`).
const MODSEQ_MARK: &str = "postern.condstore";

/// Seconds after a file's modification during which syncs read it again.
const RECHECK_SECS: i64 = 2;

/// Create the index of a new, empty folder with UIDVALIDITY `validity`.
pub(crate) fn init_index(dir: &std::path::Path, validity: u32) -> Result<(), MailboxError> {
    let mut ix = Index::new(index::path_in(dir));
    let mut l = ix.lock()?;
    ix.load(&mut l)?;
    let highest = ix.highest_modseq.max(index::initial_modseq());
    ix.write(
        &mut l,
        &[Record::Header {
            uid_validity: validity,
            highest_modseq: highest,
            first_recent_uid: 1,
        }],
    )
}

impl Folder {
    pub(crate) fn open(
        store: MailStore,
        name: String,
        paths: FolderPaths,
        access: Access,
    ) -> Result<Folder, MailboxError> {
        let use_index = !matches!(access, Access::Pop3 { .. });
        let mut index = use_index.then(|| Index::new(index::path_in(&paths.index)));
        // The UIDVALIDITY an index keeps for an empty mbox.
        let hint = match index.as_mut() {
            Some(ix) => match ix.lock() {
                Ok(mut l) => {
                    ix.load(&mut l)?;
                    (!ix.is_new()).then_some(ix.uid_validity)
                }
                // A folder whose index directory the user cannot write (a read-only
                // archive): served without MODSEQs or \Recent, as Dovecot falls back on
                // an index in memory.
                Err(MailboxError::Io { source, .. })
                    if matches!(
                        source.raw_os_error(),
                        Some(libc::EACCES) | Some(libc::EROFS) | Some(libc::EPERM)
                    ) =>
                {
                    index = None;
                    None
                }
                Err(e) => return Err(e),
            },
            None => None,
        };
        let backend = match store.location().format {
            Format::Mbox => {
                let mut b = MboxBox::open(&paths.mailbox, &store.opts.mbox, hint)?;
                if hint.is_none() && b.messages.is_empty() && use_index {
                    // A new empty mbox: a UIDVALIDITY of its own, kept by the index.
                    b = MboxBox::open(
                        &paths.mailbox,
                        &store.opts.mbox,
                        Some(store.uidvalidity_next()),
                    )?;
                }
                Backend::Mbox(b)
            }
            Format::Maildir => {
                let how = MaildirOpen {
                    move_new: match access {
                        Access::ReadWrite => true,
                        Access::ReadOnly => false,
                        Access::Pop3 { move_new } => move_new,
                    },
                    sizes: !use_index,
                };
                // A Maildir without `dovecot-uidlist` gets a UIDVALIDITY of its own.
                let hint = hint.or_else(|| {
                    (use_index && !paths.control.join("dovecot-uidlist").exists())
                        .then(|| store.uidvalidity_next())
                });
                Backend::Maildir(MaildirBox::open(&paths.mailbox, &paths.control, how, hint)?)
            }
        };
        let mut f = Folder {
            store,
            name,
            paths,
            access,
            uid_validity: backend.validity(),
            uid_next: backend.uid_next(),
            backend,
            index,
            index_stamp: None,
            keywords: Vec::new(),
            messages: Vec::new(),
            highest_modseq: 0,
            stale: true,
            recheck_until: 0,
        };
        f.reconcile()?;
        f.diff(SyncMode::Full);
        Ok(f)
    }

    /// A view of nothing: no folder, no messages (a placeholder while a view is on
    /// another thread).
    pub fn empty() -> Folder {
        Folder {
            store: MailStore::open(super::MailLocation::default(), None, Default::default()),
            name: String::new(),
            paths: FolderPaths {
                mailbox: Default::default(),
                control: Default::default(),
                index: Default::default(),
            },
            access: Access::Pop3 { move_new: false },
            backend: Backend::Mbox(MboxBox::empty()),
            index: None,
            index_stamp: None,
            keywords: Vec::new(),
            messages: Vec::new(),
            uid_validity: 0,
            uid_next: 1,
            highest_modseq: 0,
            stale: false,
            recheck_until: 0,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the view may change the folder (SELECT's `[READ-WRITE]`).
    pub fn read_only(&self) -> bool {
        self.access == Access::ReadOnly
    }

    pub fn uid_validity(&self) -> u32 {
        self.uid_validity
    }

    /// UIDNEXT: the UID the next message will get.
    pub fn uid_next(&self) -> u32 {
        self.uid_next
    }

    /// HIGHESTMODSEQ as of the last sync.
    pub fn highest_modseq(&self) -> u64 {
        self.highest_modseq
    }

    /// Whether a client has used CONDSTORE on this folder (Dovecot's index then tracks
    /// MODSEQs for good, and every SELECT shows HIGHESTMODSEQ). Postern always keeps
    /// MODSEQs; this only says whether to show them unasked, as Dovecot would. Kept as
    /// the empty file `postern.condstore` beside `postern.index`.
    pub fn modseqs_announced(&self) -> bool {
        self.paths.index.join(MODSEQ_MARK).exists()
    }

    /// Record that a client used CONDSTORE on this folder (see
    /// [`modseqs_announced`](Self::modseqs_announced)). Best effort.
    pub fn announce_modseqs(&self) {
        if matches!(self.access, Access::Pop3 { .. }) || self.modseqs_announced() {
            return;
        }
        let _id = self.store.enter();
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.paths.index.join(MODSEQ_MARK));
    }

    /// Every keyword the view knows (IMAP's FLAGS list after the system flags).
    pub fn keywords(&self) -> &[String] {
        &self.keywords
    }

    /// Whether new keywords can still be created (PERMANENTFLAGS' `\*`): a Maildir
    /// carries 26.
    pub fn can_create_keywords(&self) -> bool {
        match &self.backend {
            Backend::Mbox(_) => true,
            Backend::Maildir(b) => {
                b.keywords.iter().filter(|k| !k.is_empty()).count() < super::maildir::MAX_KEYWORDS
            }
        }
    }

    /// The messages in sequence order (message `i` is sequence number `i + 1`).
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The sequence number of `uid`.
    pub fn seq(&self, uid: u32) -> Option<u32> {
        self.messages
            .binary_search_by_key(&uid, |m| m.uid)
            .ok()
            .map(|i| i as u32 + 1)
    }

    /// The message with `uid`.
    pub fn get(&self, uid: u32) -> Option<&Message> {
        self.messages
            .binary_search_by_key(&uid, |m| m.uid)
            .ok()
            .map(|i| &self.messages[i])
    }

    /// The keyword names of a message.
    pub fn keyword_names<'a>(&'a self, m: &'a Message) -> impl Iterator<Item = &'a str> + 'a {
        m.keywords
            .iter()
            .filter_map(|i| self.keywords.get(i).map(String::as_str))
    }

    /// Make the sizes (`size`) and internal dates (`date`) of the messages at `indexes`
    /// (of [`messages`](Self::messages)) known: from what the view knows, from what
    /// sessions recorded in the index (`Z` records), else from the message files, read
    /// now and recorded in the index for the sessions to come. A message whose file
    /// cannot be read now stays unknown (and is tried again next time); such messages
    /// are returned, with why.
    pub fn resolve(
        &mut self,
        indexes: impl IntoIterator<Item = usize>,
        size: bool,
        date: bool,
    ) -> Vec<(u32, String)> {
        let want = if size { KNOWN_SIZE } else { 0 } | if date { KNOWN_DATE } else { 0 };
        let mut failed = Vec::new();
        if want == 0 {
            return failed;
        }
        let _id = self.store.enter();
        let mut learnt: Vec<Record> = Vec::new();
        for i in indexes {
            let Some(m) = self.messages.get(i) else {
                continue;
            };
            if m.known & want == want || m.expunged {
                continue;
            }
            let uid = m.uid;
            let mut got = self
                .index
                .as_ref()
                .and_then(|ix| ix.meta.get(&uid))
                .copied()
                .unwrap_or_default();
            let need_size = size && m.known & KNOWN_SIZE == 0 && got.size.is_none();
            let need_date = date && m.known & KNOWN_DATE == 0 && got.date.is_none();
            if need_size || need_date {
                let found = self.backend.find(uid);
                let read = match (&mut self.backend, found) {
                    (Backend::Maildir(b), Some(j)) => match b.resolve(j, need_size, need_date) {
                        Ok(()) => Ok((b.messages[j].size, b.messages[j].date)),
                        // Gone under the view (another session expunged it; a renamed
                        // file is found again by `resolve`): expunged, not a failure.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(None),
                        Err(e) => Err(Some(match b.base(j) {
                            Some(f) => format!("{}: {f}: {e}", b.dir.display()),
                            None => e.to_string(),
                        })),
                    },
                    (Backend::Mbox(b), Some(j)) => {
                        Ok((Some(b.messages[j].size), Some(b.messages[j].date)))
                    }
                    (_, None) => Err(None),
                };
                match read {
                    Ok((s, d)) => {
                        let new = index::FileMeta {
                            size: s.filter(|_| got.size.is_none()),
                            date: d.filter(|_| got.date.is_none()),
                        };
                        got.size = got.size.or(s);
                        got.date = got.date.or(d);
                        if self.is_maildir() && new != index::FileMeta::default() {
                            learnt.push(Record::Meta(uid, new));
                        }
                    }
                    Err(Some(e)) => failed.push((uid, e)),
                    Err(None) => {
                        // As a message expunged under the view: it stays, marked, until
                        // a sync that may report it (FETCH answers `[EXPUNGEISSUED]`).
                        self.messages[i].expunged = true;
                        continue;
                    }
                }
            }
            let m = &mut self.messages[i];
            if let Some(s) = got.size.filter(|_| m.known & KNOWN_SIZE == 0) {
                m.size = s;
                m.known |= KNOWN_SIZE;
            }
            if let Some(d) = got.date.filter(|_| m.known & KNOWN_DATE == 0) {
                m.internal_date = d;
                m.known |= KNOWN_DATE;
            }
        }
        // Recorded for the sessions to come; best effort (a cache).
        if !learnt.is_empty()
            && let Some(mut ix) = self.index.take()
        {
            let stamp_before = super::FileStamp::of(&ix.path);
            let unchanged = stamp_before == self.index_stamp;
            let res = ix.lock().and_then(|mut l| {
                ix.load(&mut l)?;
                ix.write(&mut l, &learnt)
            });
            // Only its own lines were added: the view needs no reconciling for them.
            if res.is_ok() && unchanged {
                self.index_stamp = super::FileStamp::of(&ix.path);
            }
            self.index = Some(ix);
        }
        failed
    }

    /// [`resolve`](Self::resolve) the sizes of all messages, then [`status`](Self::status):
    /// STATUS with SIZE.
    pub fn status_with_size(&mut self) -> FolderStatus {
        self.resolve(0..self.messages.len(), true, false);
        self.status()
    }

    /// STATUS of the view (the counts of the messages as the view has them); the size
    /// sums the sizes known (see [`status_with_size`](Self::status_with_size)).
    pub fn status(&self) -> FolderStatus {
        let live = self.messages.iter().filter(|m| !m.expunged);
        let mut s = FolderStatus {
            uid_next: self.uid_next,
            uid_validity: self.uid_validity,
            highest_modseq: self.highest_modseq,
            ..FolderStatus::default()
        };
        for (i, m) in live.enumerate() {
            s.messages += 1;
            s.size += m.size;
            if m.recent {
                s.recent += 1;
            }
            if !m.flags.contains(Flags::SEEN) {
                s.unseen += 1;
                s.first_unseen.get_or_insert(i as u32 + 1);
            }
        }
        s
    }

    /// The message `uid`, to be opened for reading ([`MessageRef::open`]; the bytes as
    /// stored, LF line ends, hidden mbox headers left out). `None` when it is no longer
    /// in the mailbox.
    pub fn message(&self, uid: u32) -> Option<MessageRef> {
        let j = self.backend.find(uid)?;
        self.backend.message_ref(j)
    }

    /// The message `uid` opened for reading with the store's filesystem identity (the
    /// reader then reads through its open descriptor, on any thread).
    pub fn open_message(&self, uid: u32) -> Result<super::MessageReader, MailboxError> {
        let _id = self.store.enter();
        self.message(uid)
            .ok_or(MailboxError::Expunged(uid))?
            .open()
            .map_err(|e| match e {
                MailboxError::Expunged(_) => MailboxError::Expunged(uid),
                e => e,
            })
    }

    /// The message `uid`, whole (see [`message`](Self::message)). Opened with the store's
    /// filesystem identity.
    pub fn read(&self, uid: u32) -> Result<Vec<u8>, MailboxError> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut self.open_message(uid)?, &mut out)
            .map_err(|e| MailboxError::io(&self.paths.mailbox, e))?;
        Ok(out)
    }

    /// Whether the folder is a Maildir.
    pub fn is_maildir(&self) -> bool {
        matches!(self.backend, Backend::Maildir(_))
    }

    /// A cache file of the folder's (beside `postern.index`), as the mail user: `None`
    /// when it is missing, not a regular file (a symlink is not followed) or over
    /// `limit` bytes.
    pub fn read_cache_file(&self, name: &str, limit: u64) -> Option<Vec<u8>> {
        use std::io::Read as _;
        let _id = self.store.enter();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(self.paths.index.join(name))
            .ok()?;
        let md = f.metadata().ok()?;
        if !md.is_file() || md.len() > limit {
            return None;
        }
        let mut out = Vec::with_capacity(md.len() as usize);
        f.take(limit).read_to_end(&mut out).ok()?;
        Some(out)
    }

    /// Replace a cache file of the folder's whole, as the mail user: a new file (never
    /// through a symlink) renamed over the old one.
    pub fn write_cache_file(&self, name: &str, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        let _id = self.store.enter();
        let target = self.paths.index.join(name);
        let tmp = self.paths.index.join(format!(
            ".{name}.{}.{:?}.tmp",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        let r = f
            .write_all(data)
            .and_then(|()| std::fs::rename(&tmp, &target));
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r
    }

    /// Maildir: the message's file name before `:2,` (POP3's `%f`).
    pub fn maildir_base(&self, uid: u32) -> Option<&str> {
        match &self.backend {
            Backend::Maildir(b) => b.base(b.messages.binary_search_by_key(&uid, |m| m.uid).ok()?),
            Backend::Mbox(_) => None,
        }
    }

    /// After a failed read of an mbox message: find the messages' places in the file
    /// again (another program rewrote it), without changing the view.
    pub fn relocate(&mut self) -> Result<(), MailboxError> {
        let _id = self.store.enter();
        match &mut self.backend {
            Backend::Mbox(b) => b.resync(),
            Backend::Maildir(_) => Ok(()),
        }
    }

    /// Bring the view up to date and say what changed since the last sync (see the
    /// module documentation). With [`SyncMode::NoExpunges`] expunged messages stay in
    /// the view, marked, until a full sync reports them.
    pub fn sync(&mut self, mode: SyncMode) -> Result<Changes, MailboxError> {
        let _id = self.store.enter();
        self.still_there()?;
        let now = now_secs();
        let (changed, newest) = self.backend.changed();
        let index_changed =
            self.index.is_some() && super::FileStamp::of(&self.index_path()) != self.index_stamp;
        if changed || index_changed || now <= self.recheck_until {
            self.reconcile()?;
            self.recheck_until = if newest + RECHECK_SECS >= now {
                newest + RECHECK_SECS
            } else {
                0
            };
        }
        let pending = mode == SyncMode::Full && self.messages.iter().any(|m| m.expunged);
        if !self.stale && !pending {
            return Ok(Changes::default());
        }
        Ok(self.diff(mode))
    }

    /// `NotFound` when the folder was deleted under the view (Dovecot then ends the
    /// session: "Selected mailbox was deleted, have to disconnect.").
    fn still_there(&self) -> Result<(), MailboxError> {
        let gone = match &self.backend {
            Backend::Mbox(_) => {
                self.name != "INBOX" && std::fs::symlink_metadata(&self.paths.mailbox).is_err()
            }
            Backend::Maildir(_) => {
                std::fs::symlink_metadata(self.paths.mailbox.join("cur")).is_err()
            }
        };
        if gone {
            return Err(MailboxError::NotFound(self.name.clone()));
        }
        Ok(())
    }

    fn index_path(&self) -> std::path::PathBuf {
        index::path_in(&self.paths.index)
    }

    /// Under the index lock: read the backend again if it changed, and give MODSEQs to
    /// what changed in it, recording messages gone as expunged. Marks the view stale.
    fn reconcile(&mut self) -> Result<(), MailboxError> {
        let (changed, _) = self.backend.changed();
        let Some(mut ix) = self.index.take() else {
            if changed {
                self.backend.refresh()?;
            }
            self.stale = true;
            return Ok(());
        };
        let res = (|| -> Result<(), MailboxError> {
            let mut l = ix.lock()?;
            let before = ix.highest_modseq;
            ix.load(&mut l)?;
            // Another Postern session changed the folder (it records every change).
            if changed || ix.highest_modseq != before {
                self.backend.refresh()?;
            }
            let recs = reconcile_records(&mut ix, &mut l, &self.backend)?;
            ix.write(&mut l, &recs)?;
            Ok(())
        })();
        self.index_stamp = super::FileStamp::of(&ix.path);
        self.index = Some(ix);
        self.stale = true;
        res
    }

    /// Compare the view with the backend and the index; apply and report the difference.
    fn diff(&mut self, mode: SyncMode) -> Changes {
        let mut ch = Changes::default();
        self.stale = false;
        let validity = self.backend.validity();
        if validity != self.uid_validity {
            ch.uid_validity_changed = true;
            for (k, m) in self.messages.iter().enumerate() {
                ch.expunged.push((1, m.uid));
                let _ = k;
            }
            self.messages.clear();
            self.uid_validity = validity;
        }
        // Backend keyword i → view keyword index.
        let mut kw_map: Vec<usize> = Vec::with_capacity(self.backend.keywords().len());
        for k in self.backend.keywords() {
            let i = match self.keywords.iter().position(|x| x == k) {
                Some(i) => i,
                None if k.is_empty() => usize::MAX,
                None => {
                    self.keywords.push(k.clone());
                    ch.keywords_added = true;
                    self.keywords.len() - 1
                }
            };
            kw_map.push(i);
        }
        let (first_recent, highest) = match &self.index {
            Some(ix) => (ix.first_recent_uid, ix.highest_modseq),
            None => (u32::MAX, 0),
        };
        let claims = self.access == Access::ReadWrite;
        let old = std::mem::take(&mut self.messages);
        let recent_before = old.iter().filter(|m| m.recent).count();
        let mut out: Vec<Message> = Vec::with_capacity(self.backend.len().max(old.len()));
        let mut j = 0;
        let n = self.backend.len();
        let mut removed = 0u32;
        for (i, m) in old.into_iter().enumerate() {
            // Backend messages below this UID that the view never had (out of order:
            // a foreign tool reused an old UID): not shown until the folder is opened
            // again.
            while j < n && self.backend.uid(j) < m.uid {
                j += 1;
            }
            if j < n && self.backend.uid(j) == m.uid {
                let b = self.backend.msg(j);
                let keywords: KeywordSet = b
                    .keywords
                    .iter()
                    .filter_map(|x| kw_map.get(x).copied().filter(|v| *v != usize::MAX))
                    .collect();
                let modseq = self.modseq_of(m.uid);
                let mut m = m;
                if m.flags != b.flags || m.keywords != keywords || m.modseq != modseq || m.expunged
                {
                    m.flags = b.flags;
                    m.keywords = keywords;
                    m.modseq = modseq;
                    if !m.expunged {
                        ch.flags.push(m.uid);
                    }
                    m.expunged = false;
                }
                out.push(m);
                j += 1;
            } else if mode == SyncMode::Full {
                ch.expunged.push((i as u32 + 1 - removed, m.uid));
                removed += 1;
            } else {
                let mut m = m;
                m.expunged = true;
                out.push(m);
            }
        }
        let last_uid = out.last().map(|m| m.uid).unwrap_or(0);
        while j < n {
            let b = self.backend.msg(j);
            if b.uid > last_uid {
                let keywords: KeywordSet = b
                    .keywords
                    .iter()
                    .filter_map(|x| kw_map.get(x).copied().filter(|v| *v != usize::MAX))
                    .collect();
                // What the backend knows, else what a session recorded in the index.
                let kept = self
                    .index
                    .as_ref()
                    .and_then(|ix| ix.meta.get(&b.uid))
                    .copied()
                    .unwrap_or_default();
                let size = b.size.or(kept.size);
                let date = b.date.or(kept.date);
                out.push(Message {
                    uid: b.uid,
                    flags: b.flags,
                    keywords,
                    recent: b.uid >= first_recent,
                    modseq: 0,
                    size: size.unwrap_or(0),
                    internal_date: date.unwrap_or(0),
                    expunged: false,
                    known: if size.is_some() { KNOWN_SIZE } else { 0 }
                        | if date.is_some() { KNOWN_DATE } else { 0 },
                });
                ch.new_messages += 1;
            }
            j += 1;
        }
        for m in out.iter_mut().rev().take(ch.new_messages) {
            m.modseq = self.modseq_of_index(m.uid);
        }
        self.messages = out;
        self.uid_next = self.backend.uid_next().max(self.uid_next);
        self.highest_modseq = highest;
        ch.recent_changed = self.messages.iter().filter(|m| m.recent).count() != recent_before;
        // A read-write view takes \Recent: no other session gets it for these messages.
        if claims
            && ch.new_messages > 0
            && first_recent < self.backend.uid_next()
            && let Some(mut ix) = self.index.take()
        {
            let next = self.backend.uid_next();
            let res = ix.lock().and_then(|mut l| {
                ix.load(&mut l)?;
                if ix.first_recent_uid < next {
                    ix.write(
                        &mut l,
                        &[Record::Header {
                            uid_validity: ix.uid_validity,
                            highest_modseq: ix.highest_modseq,
                            first_recent_uid: next,
                        }],
                    )?;
                }
                Ok(())
            });
            // Not fatal: the messages are then recent in another session too.
            let _ = res;
            self.index_stamp = super::FileStamp::of(&ix.path);
            self.index = Some(ix);
        }
        ch
    }

    fn modseq_of(&self, uid: u32) -> u64 {
        self.modseq_of_index(uid)
    }

    fn modseq_of_index(&self, uid: u32) -> u64 {
        self.index
            .as_ref()
            .and_then(|ix| ix.msgs.get(&uid))
            .map(|r| r.modseq)
            .unwrap_or(0)
    }

    fn writable(&self) -> Result<(), MailboxError> {
        if self.access == Access::ReadOnly {
            return Err(MailboxError::cannot(None, "Mailbox is read-only."));
        }
        Ok(())
    }

    /// Run `f` with the index locked and loaded and the backend current: the folder's
    /// state as of now, whoever changed it.
    fn locked<T>(
        &mut self,
        f: impl FnOnce(&mut Backend, Option<&mut Index>) -> Result<T, MailboxError>,
    ) -> Result<T, MailboxError> {
        match self.index.take() {
            // A POP3 view: the backend works by UID on the files as they are now.
            None if matches!(self.access, Access::Pop3 { .. }) => f(&mut self.backend, None),
            // An IMAP view without an index (read-only index directory).
            None => {
                if self.backend.changed().0 {
                    self.backend.refresh()?;
                    self.stale = true;
                }
                f(&mut self.backend, None)
            }
            Some(mut ix) => {
                let (changed, _) = self.backend.changed();
                let res = (|| {
                    let mut l = ix.lock()?;
                    let before = ix.highest_modseq;
                    ix.load(&mut l)?;
                    if changed || ix.highest_modseq != before {
                        self.backend.refresh()?;
                    }
                    let recs = reconcile_records(&mut ix, &mut l, &self.backend)?;
                    ix.write(&mut l, &recs)?;
                    let r = f(&mut self.backend, Some(&mut ix))?;
                    let recs = reconcile_records(&mut ix, &mut l, &self.backend)?;
                    ix.write(&mut l, &recs)?;
                    Ok(r)
                })();
                self.index_stamp = super::FileStamp::of(&ix.path);
                self.index = Some(ix);
                self.stale = true;
                res
            }
        }
    }

    /// STORE: change the flags and keywords of the messages `uids` (`+FLAGS`, `-FLAGS`,
    /// `FLAGS`). With `unchanged_since` (CONDSTORE), a message whose MODSEQ is higher is
    /// left alone and reported in [`Stored::modified`]. The view takes the changes at
    /// once; they are not reported again by [`sync`](Self::sync).
    pub fn store(
        &mut self,
        uids: &[u32],
        op: FlagOp,
        flags: Flags,
        keywords: &[&str],
        unchanged_since: Option<u64>,
    ) -> Result<Stored, MailboxError> {
        self.writable()?;
        if let Some(k) = keywords.iter().find(|k| !valid_keyword(k)) {
            return Err(MailboxError::cannot(None, &format!("Invalid keyword: {k}")));
        }
        let _id = self.store.enter();
        let wanted: HashSet<u32> = uids
            .iter()
            .copied()
            .filter(|u| self.get(*u).is_some_and(|m| !m.expunged))
            .collect();
        let rescan = !matches!(self.access, Access::Pop3 { .. });
        let mut stored = Stored::default();
        let result = self.locked(|backend, ix| {
            let mut changes: HashMap<u32, (Flags, Vec<String>)> = HashMap::new();
            let mut ordered: Vec<u32> = wanted.iter().copied().collect();
            ordered.sort_unstable();
            for uid in ordered {
                let Some(j) = backend.find(uid) else { continue };
                if let (Some(since), Some(ix)) = (unchanged_since, ix.as_deref())
                    && ix.msgs.get(&uid).is_some_and(|r| r.modseq > since)
                {
                    stored.modified.push(uid);
                    continue;
                }
                let b = backend.msg(j);
                let cur_kw = backend.keyword_names(j);
                let (nf, nk) = match op {
                    FlagOp::Add => {
                        let mut k = cur_kw.clone();
                        for x in keywords {
                            if !k.iter().any(|y| y == x) {
                                k.push(x.to_string());
                            }
                        }
                        (b.flags.union(flags), k)
                    }
                    FlagOp::Remove => (
                        b.flags.difference(flags),
                        cur_kw
                            .iter()
                            .filter(|y| !keywords.contains(&y.as_str()))
                            .cloned()
                            .collect(),
                    ),
                    FlagOp::Replace => {
                        let mut k: Vec<String> = Vec::new();
                        for x in keywords {
                            if !k.iter().any(|y| y == x) {
                                k.push(x.to_string());
                            }
                        }
                        (flags, k)
                    }
                };
                let same_kw = nk.len() == cur_kw.len() && nk.iter().all(|k| cur_kw.contains(k));
                if nf != b.flags || !same_kw {
                    changes.insert(uid, (nf, nk));
                }
            }
            let changed: Vec<u32> = {
                let mut v: Vec<u32> = changes.keys().copied().collect();
                v.sort_unstable();
                v
            };
            if !changes.is_empty() {
                backend.update(changes, &HashSet::new(), rescan)?;
            }
            Ok(changed)
        });
        let changed = result?;
        // The view takes its own changes now (and not as news at the next sync).
        self.absorb(&changed);
        stored.changed = changed;
        Ok(stored)
    }

    /// Take the backend's current flags, keywords and MODSEQs of `uids` into the view.
    fn absorb(&mut self, uids: &[u32]) {
        for &uid in uids {
            let Some(j) = self.backend.find(uid) else {
                continue;
            };
            let names = self.backend.keyword_names(j);
            let mut kw = KeywordSet::new();
            for n in names {
                let i = match self.keywords.iter().position(|x| *x == n) {
                    Some(i) => i,
                    None => {
                        self.keywords.push(n);
                        self.keywords.len() - 1
                    }
                };
                kw.insert(i);
            }
            let flags = self.backend.msg(j).flags;
            let modseq = self.modseq_of(uid);
            if let Ok(i) = self.messages.binary_search_by_key(&uid, |m| m.uid) {
                let m = &mut self.messages[i];
                m.flags = flags;
                m.keywords = kw;
                m.modseq = modseq;
            }
        }
        if let Some(ix) = &self.index {
            self.highest_modseq = self.highest_modseq.max(ix.highest_modseq);
        }
    }

    /// Remove `uids` from the view (expunged by the view itself): their `(sequence, UID)`
    /// in IMAP's order.
    fn drop_from_view(&mut self, uids: &HashSet<u32>) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let mut removed = 0u32;
        let old = std::mem::take(&mut self.messages);
        for (i, m) in old.into_iter().enumerate() {
            if uids.contains(&m.uid) {
                out.push((i as u32 + 1 - removed, m.uid));
                removed += 1;
            } else {
                self.messages.push(m);
            }
        }
        if let Some(ix) = &self.index {
            self.highest_modseq = self.highest_modseq.max(ix.highest_modseq);
        }
        out
    }

    /// EXPUNGE (`uids` None) or UID EXPUNGE: delete the messages of the view that have
    /// \Deleted (among `uids`). They leave the view at once; the result is what to report
    /// (`(sequence number, UID)` in IMAP's order).
    pub fn expunge(&mut self, uids: Option<&[u32]>) -> Result<Vec<(u32, u32)>, MailboxError> {
        self.writable()?;
        let _id = self.store.enter();
        let scope: Option<HashSet<u32>> = uids.map(|u| u.iter().copied().collect());
        let view: HashSet<u32> = self.messages.iter().map(|m| m.uid).collect();
        let rescan = !matches!(self.access, Access::Pop3 { .. });
        let gone = self.locked(|backend, _| {
            let mut gone = HashSet::new();
            for j in 0..backend.len() {
                let b = backend.msg(j);
                if b.flags.contains(Flags::DELETED)
                    && view.contains(&b.uid)
                    && scope.as_ref().is_none_or(|s| s.contains(&b.uid))
                {
                    gone.insert(b.uid);
                }
            }
            if !gone.is_empty() {
                backend.update(HashMap::new(), &gone, rescan)?;
            }
            Ok(gone)
        })?;
        Ok(self.drop_from_view(&gone))
    }

    /// Add `flags` to the messages `uids` and delete the messages `expunge` (whatever
    /// their flags), in one write of the mailbox: what a POP3 session does at QUIT
    /// (\Seen for messages read, DELE'd messages deleted). Messages already flagged are
    /// not touched.
    pub fn update(
        &mut self,
        flags: Flags,
        uids: &[u32],
        expunge: &[u32],
    ) -> Result<(), MailboxError> {
        self.writable()?;
        let _id = self.store.enter();
        let gone: HashSet<u32> = expunge.iter().copied().collect();
        let rescan = !matches!(self.access, Access::Pop3 { .. });
        let changed = self.locked(|backend, _| {
            let mut changes: HashMap<u32, (Flags, Vec<String>)> = HashMap::new();
            for &uid in uids {
                if gone.contains(&uid) {
                    continue;
                }
                let Some(j) = backend.find(uid) else { continue };
                let b = backend.msg(j);
                if !b.flags.contains(flags) {
                    changes.insert(uid, (b.flags.union(flags), backend.keyword_names(j)));
                }
            }
            let changed: Vec<u32> = changes.keys().copied().collect();
            if !changes.is_empty() || !gone.is_empty() {
                backend.update(changes, &gone, rescan)?;
            }
            Ok(changed)
        })?;
        self.absorb(&changed);
        self.drop_from_view(&gone);
        Ok(())
    }

    /// COPY the messages `uids` to the folder `dest` with their flags and keywords (not
    /// \Recent) and internal dates: the new UIDs (UIDPLUS COPYUID). Maildir files are
    /// hard-linked, as Dovecot's `maildir_copy_with_hardlinks`. A missing `dest` is
    /// `NotFound` (IMAP's `[TRYCREATE]`).
    pub fn copy(&mut self, uids: &[u32], dest: &str) -> Result<Copied, MailboxError> {
        let _id = self.store.enter();
        let dest = self.store.canonical(dest)?;
        if !self.store.exists(&dest)? {
            return Err(MailboxError::NotFound(dest));
        }
        let dp = self.store.paths(&dest);
        let mut list: Vec<u32> = uids
            .iter()
            .copied()
            .filter(|u| self.get(*u).is_some_and(|m| !m.expunged))
            .collect();
        list.sort_unstable();
        list.dedup();
        let same_format_maildir = matches!(self.backend, Backend::Maildir(_));
        let mut datas: Vec<Vec<u8>> = Vec::new();
        // (UID, flags, keywords, date, Maildir file to link)
        type Planned = (u32, Flags, Vec<String>, i64, Option<std::path::PathBuf>);
        let mut plan: Vec<Planned> = Vec::new();
        for uid in list {
            let Some(j) = self.backend.find(uid) else {
                continue;
            };
            let flags = self.backend.msg(j).flags;
            let date = match self.backend.msg(j).date {
                Some(d) => Some(d),
                None => match &mut self.backend {
                    Backend::Maildir(b) => b.resolve(j, false, true).ok().and(b.messages[j].date),
                    Backend::Mbox(_) => None,
                },
            };
            let names = self.backend.keyword_names(j);
            let date = match date {
                Some(d) if d != 0 => d,
                _ => now_secs(),
            };
            let link = match &self.backend {
                Backend::Maildir(mb) if same_format_maildir => mb.file_of(j),
                _ => None,
            };
            if link.is_none() {
                datas.push(self.read(uid)?);
            }
            plan.push((uid, flags, names, date, link));
        }
        let mut di = 0;
        let saves: Vec<Save> = plan
            .iter()
            .map(|(_, flags, kw, date, link)| Save {
                data: match link {
                    Some(p) => SaveData::Link(p.clone()),
                    None => {
                        di += 1;
                        SaveData::Bytes(&datas[di - 1])
                    }
                },
                flags: *flags,
                keywords: kw.clone(),
                date: *date,
            })
            .collect();
        let a = save(&self.store, &dp, &saves)?;
        Ok(Copied {
            uid_validity: a.uid_validity,
            uids: plan.iter().map(|p| p.0).zip(a.uids).collect(),
        })
    }

    /// MOVE (RFC 6851): COPY, then expunge the originals (whatever their flags). Returns
    /// COPYUID's data and the expunges to report.
    pub fn move_to(
        &mut self,
        uids: &[u32],
        dest: &str,
    ) -> Result<(Copied, Vec<(u32, u32)>), MailboxError> {
        self.writable()?;
        let copied = self.copy(uids, dest)?;
        let _id = self.store.enter();
        let gone: HashSet<u32> = copied.uids.iter().map(|p| p.0).collect();
        let rescan = !matches!(self.access, Access::Pop3 { .. });
        let g2 = gone.clone();
        self.locked(|backend, _| backend.update(HashMap::new(), &g2, rescan))?;
        let expunged = self.drop_from_view(&gone);
        Ok((copied, expunged))
    }

    /// QRESYNC: the UIDs expunged after `modseq` within the UID range `within`
    /// (VANISHED (EARLIER)); may include some expunged earlier, as RFC 7162 allows.
    pub fn vanished_since(&self, modseq: u64, within: (u32, u32)) -> Vec<u32> {
        match &self.index {
            Some(ix) => ix.vanished_since(modseq, within),
            None => Vec::new(),
        }
    }
}

/// The records that bring the index in line with the backend: a new header when the
/// index is new or the UIDVALIDITY changed, a new MODSEQ for each message whose flags or
/// keywords differ from the index's (or that is new to it), and expunges for the
/// messages gone. The header is written at once (it resets the state the rest compares).
fn reconcile_records(
    ix: &mut Index,
    l: &mut index::Locked,
    backend: &Backend,
) -> Result<Vec<Record>, MailboxError> {
    let validity = backend.validity();
    if ix.is_new() || ix.uid_validity != validity {
        // \Recent for messages that look unseen to Dovecot (no `O` in `Status:`, still in
        // `new/`), from the first of them on.
        let first_recent = (0..backend.len())
            .map(|j| backend.msg(j))
            .find(|m| m.looks_new)
            .map(|m| m.uid)
            .unwrap_or_else(|| backend.uid_next());
        let highest = ix.highest_modseq.max(index::initial_modseq());
        ix.write(
            l,
            &[Record::Header {
                uid_validity: validity,
                highest_modseq: highest,
                first_recent_uid: first_recent,
            }],
        )?;
    }
    let mut recs: Vec<Record> = Vec::new();
    let mut next = ix.highest_modseq;
    // Backend keyword index → index keyword index.
    let bk = backend.keywords();
    let mut map: Vec<Option<usize>> = Vec::with_capacity(bk.len());
    for k in bk {
        map.push((!k.is_empty()).then(|| ix.keyword(k, &mut recs)));
    }
    let mut present: HashSet<u32> = HashSet::with_capacity(backend.len());
    for j in 0..backend.len() {
        let b = backend.msg(j);
        present.insert(b.uid);
        let keywords: KeywordSet = b
            .keywords
            .iter()
            .filter_map(|i| map.get(i).copied().flatten())
            .collect();
        match ix.msgs.get(&b.uid) {
            Some(r) if r.flags == b.flags && r.keywords == keywords => {}
            _ => {
                next += 1;
                recs.push(Record::Set(
                    b.uid,
                    Rec {
                        modseq: next,
                        flags: b.flags,
                        keywords,
                    },
                ));
            }
        }
    }
    let mut gone: Vec<u32> = ix
        .msgs
        .keys()
        .copied()
        .filter(|u| !present.contains(u))
        .collect();
    gone.sort_unstable();
    if !gone.is_empty() {
        next += 1;
        let mut lo = gone[0];
        let mut hi = gone[0];
        for &u in &gone[1..] {
            if u == hi + 1 && !present.contains(&u) {
                hi = u;
            } else {
                recs.push(Record::Expunged(lo, hi, next));
                lo = u;
                hi = u;
            }
        }
        recs.push(Record::Expunged(lo, hi, next));
    }
    Ok(recs)
}

/// Where a message to save comes from.
#[derive(Debug, Clone)]
pub(crate) enum SaveData<'a> {
    Bytes(&'a [u8]),
    /// A Maildir file to hard-link.
    Link(std::path::PathBuf),
}

/// A message to save into a folder.
#[derive(Debug, Clone)]
pub(crate) struct Save<'a> {
    pub data: SaveData<'a>,
    pub flags: Flags,
    pub keywords: Vec<String>,
    pub date: i64,
}

/// Save `saves` into the folder at `p` (APPEND, COPY): the UIDs they got. The folder's
/// index gives the UIDVALIDITY of an empty mbox.
pub(crate) fn save(
    store: &MailStore,
    p: &FolderPaths,
    saves: &[Save],
) -> Result<Appended, MailboxError> {
    let mut ix = Index::new(index::path_in(&p.index));
    let hint = match ix.lock() {
        Ok(mut l) => {
            let _ = ix.load(&mut l);
            (!ix.is_new()).then_some(ix.uid_validity)
        }
        Err(_) => None,
    };
    let (uid_validity, uids) = match store.location().format {
        Format::Mbox => {
            let bytes: Vec<Vec<u8>> = saves
                .iter()
                .map(|s| match &s.data {
                    SaveData::Bytes(b) => Ok(b.to_vec()),
                    SaveData::Link(path) => {
                        std::fs::read(path).map_err(|e| MailboxError::io(path, e))
                    }
                })
                .collect::<Result<_, _>>()?;
            let msgs: Vec<MboxSave> = saves
                .iter()
                .zip(&bytes)
                .map(|(s, b)| MboxSave {
                    data: b,
                    flags: s.flags,
                    keywords: s.keywords.clone(),
                    date: s.date,
                    sender: store.opts.sender.clone(),
                })
                .collect();
            let empty = std::fs::metadata(&p.mailbox)
                .map(|m| m.len() == 0)
                .unwrap_or(true);
            let hint = hint.or_else(|| empty.then(|| store.uidvalidity_next()));
            super::mbox::append(&p.mailbox, &store.opts.mbox, hint, &msgs)?
        }
        Format::Maildir => {
            let msgs: Vec<MaildirSave> = saves
                .iter()
                .map(|s| MaildirSave {
                    source: match &s.data {
                        SaveData::Bytes(b) => MaildirSource::Data(b),
                        SaveData::Link(path) => MaildirSource::Link(path.clone()),
                    },
                    flags: s.flags,
                    keywords: s.keywords.clone(),
                    date: s.date,
                })
                .collect();
            let hint = hint.or_else(|| {
                (!p.control.join("dovecot-uidlist").exists()).then(|| store.uidvalidity_next())
            });
            super::maildir::append(&p.mailbox, &p.control, hint, &msgs)?
        }
    };
    // A folder Postern never indexed: the saved messages are \Recent for the session
    // that sees them first (the others' recency is unknown; they are not).
    if ix.is_new()
        && let Some(&first) = uids.first()
        && let Ok(mut l) = ix.lock()
        && ix.load(&mut l).is_ok()
        && ix.is_new()
    {
        let _ = ix.write(
            &mut l,
            &[Record::Header {
                uid_validity,
                highest_modseq: index::initial_modseq(),
                first_recent_uid: first,
            }],
        );
    }
    Ok(Appended { uid_validity, uids })
}
