//! One logged-in IMAP session (Dovecot's `imap` process): the authenticated and selected
//! states of RFC 3501 with the extensions of [`super::state::CAPABILITY`], replies worded
//! as Dovecot 2.3.19 words them (`compat-fixtures/imap/session.txt`).
//!
//! The session is a core without I/O, in the shape of [`crate::smtpd::session`]: it is
//! fed what the client sent ([`Session::received`]) and what happened to the connection
//! ([`Session::input_ended`], [`Session::timed_out`], [`Session::send_failed`],
//! [`Session::shutdown`]) and answers with the next [`Action`] ([`Session::next`]: send
//! these bytes, read within this timeout, close). Input goes through the sans-I/O
//! [`CommandReader`] (literals, `+ OK` continuations, APPEND's literals streamed into the
//! spool as they come); IDLE is a mode of the core whose read timeout is the change check
//! interval (`timed_out` is the wakeup: sync, and `* OK Still here` when due). Replies are
//! queued and handed out before the session waits for input (pipelined commands are
//! answered in one write), or as they pass 64 kB ([`OUT_FLUSH`]) between commands. A
//! FETCH is resumable ([`super::cmd_fetch::FetchRun`]): its output is produced until the
//! queue reaches 64 kB, handed out as an [`Action::Send`], and produced on when the
//! connection task asks for the next action after writing it (as POP3's RETR streams), so
//! a `FETCH 1:* BODY[]` of any mailbox holds about 64 kB of output (plus one 64 kB piece
//! of a message, or one item's text) and a message read whole only when its items need
//! it parsed or it is at most 1 MB; no command is read meanwhile (pipelined input, an IDLE's DONE, waits in
//! the reader until the FETCH's tagged reply is out). The mailbox store is
//! called directly (blocking file I/O). [`drive`] is the one connection task: a thread of
//! the user's mail process (`dovecot/imap`, running as the user:
//! [`crate::login::mailproc`]) over the client's TCP socket or the login process's proxy
//! of a TLS client, as Dovecot's imap process serves one session. `src/imapd/tests.rs`
//! replays Dovecot's recorded session (`compat-fixtures/imap/session.txt`) against the
//! core with no socket.
//!
//! After each command on a selected mailbox the view is synced with the folder
//! ([`crate::mailbox::Folder::sync`], a few `stat` calls when nothing changed) and what
//! others changed is reported before the tagged reply, as Dovecot's `cmd_sync` does:
//! `* FLAGS`/`PERMANENTFLAGS` when keywords were added, `FETCH (FLAGS …)` of changed
//! messages, `EXPUNGE`s (highest first; `VANISHED` under QRESYNC; none during FETCH,
//! STORE, SEARCH, COPY, MOVE by sequence number, RFC 3501 §7.4.1), then `EXISTS` and
//! `RECENT`. Tagged replies carry Dovecot's timing (`OK Fetch completed (0.001 + 0.000
//! secs).`).
//!
//! Ends: LOGOUT (`* BYE Logging out`), 30 minutes without input (`* BYE Disconnected for
//! inactivity.`), 20 invalid commands (`* BYE Too many invalid IMAP commands.`), a
//! literal too large (`* BYE Literal size too large`), the selected mailbox deleted or
//! recreated under the session, `dovecot stop` (`* BYE Server shutting down.`). The log
//! line is Dovecot's: `imap(USER)<PID><SESSION>:
//! Disconnected: Logged out in=… out=… deleted=… …` (`imap_logout_format`).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ImapState;
use crate::auth::dovecot::UserInfo;
use crate::imap::reader::{Arg, CommandReader, RawCommand, ReadEvent};
use crate::login::handoff::LoginRequest;
use crate::mailbox::{Folder, MailLocation, MailStore, MailboxError, StoreOptions, SyncMode};

/// Dovecot's `CLIENT_MAX_BAD_COMMANDS` of the imap process.
const MAX_BAD_COMMANDS: u32 = 20;
/// Queued output beyond which a long reply is written out before going on.
pub(crate) const OUT_FLUSH: usize = 64 * 1024;

/// The socket under a session.
pub trait Client: Read + Write + Send {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()>;
    fn shutdown(&self);
}

impl Client for std::net::TcpStream {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        std::net::TcpStream::set_read_timeout(self, d)
    }
    fn shutdown(&self) {
        let _ = std::net::TcpStream::shutdown(self, std::net::Shutdown::Both);
    }
}

impl Client for std::os::unix::net::UnixStream {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, d)
    }
    fn shutdown(&self) {
        let _ = std::os::unix::net::UnixStream::shutdown(self, std::net::Shutdown::Both);
    }
}

/// Replies queued for the client.
#[derive(Default)]
pub(crate) struct Out {
    pub buf: Vec<u8>,
    /// Bytes handed out to be written to the client (`%o`).
    pub bytes: u64,
    /// The length of the last [`Action::Send`], taken off `bytes` when it failed.
    last_sent: u64,
    /// A write failed: the client is gone.
    pub broken: bool,
}

impl Out {
    pub fn line(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }
    pub fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// What is queued, to send (None when nothing is).
    fn take(&mut self) -> Option<Vec<u8>> {
        if self.buf.is_empty() {
            return None;
        }
        let b = std::mem::take(&mut self.buf);
        if self.broken {
            return None;
        }
        self.last_sent = b.len() as u64;
        self.bytes += self.last_sent;
        Some(b)
    }
}

/// Counters for `imap_logout_format`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    /// Messages given \Deleted by STORE.
    pub deleted: u64,
    /// Messages expunged by this session.
    pub expunged: u64,
    /// Messages copied or moved into the \Trash mailbox.
    pub trashed: u64,
    pub fetch_hdr_count: u64,
    pub fetch_hdr_bytes: u64,
    pub fetch_body_count: u64,
    pub fetch_body_bytes: u64,
}

/// The selected mailbox.
pub(crate) struct Selected {
    pub folder: Folder,
    /// SEARCHRES's `$`: the saved result as UIDs (sorted).
    pub saved: Vec<u32>,
    /// The name as the client knows it (UTF-8, namespace separator).
    pub name: String,
    /// The RECENT count the client was last told.
    pub recent: u32,
    /// The header of each message a SORT has read (by UID: a message's bytes never
    /// change), so that the next SORT of the selected mailbox reads no file again (as
    /// Dovecot's index caches sort keys).
    pub sort_headers: std::collections::HashMap<u32, super::message::mime::Message>,
    /// The folder's persistent header cache (Maildir).
    pub hdr_cache: super::hdrcache::HeaderCache,
    /// The sort keys computed from those headers (by UID and key).
    pub sort_keys: super::message::sort::SortCache,
    /// `SEARCH RETURN (UPDATE)` results kept (CONTEXT=SEARCH), reported at each sync.
    pub updates: Vec<super::cmd_search::SearchUpdate>,
    /// UIDs this session's STORE or FETCH changed flags of since the last sync (for the
    /// UPDATE searches; only kept while there are some).
    pub touched: Vec<u32>,
}

/// How a command's reply ends.
pub(crate) enum Done {
    /// `OK text` after the mailbox is synced.
    Ok(String),
    /// `NO text`.
    No(String),
    /// `BAD text` (counted against the bad command limit when `counted`).
    Bad(String, bool),
    /// The reply was sent (or the session ends).
    Sent,
    /// The session dies as Dovecot's mail process does at an `i_fatal()` (lock lists it
    /// refuses): no reply, the connection closed, no `Disconnected` line; the `Fatal:`
    /// line is already logged.
    Fatal,
}

/// `BAD Error in IMAP command NAME: TEXT.` (counted).
pub(crate) fn bad_cmd(name: &str, text: &str) -> Done {
    let mut t = format!("Error in IMAP command {name}: {text}");
    if !t.ends_with('.') {
        t.push('.');
    }
    Done::Bad(t, true)
}

/// What the connection task is to do next (see [`Session::next`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the client; when that fails, tell
    /// [`Session::send_failed`].
    Send(Vec<u8>),
    /// Wait at most `timeout` for input: hand what came to [`Session::received`], the
    /// end of the input to [`Session::input_ended`] (or [`Session::shutdown`] when the
    /// mail process is stopping), the time running out to [`Session::timed_out`].
    Read { timeout: Duration },
    /// The session is over: close the connection.
    Close,
}

/// A FETCH under way ([`super::cmd_fetch::FetchRun`]) and what its tagged reply needs.
struct Fetching {
    tag: String,
    name: String,
    uid: bool,
    sync: SyncMode,
    run: Box<super::cmd_fetch::FetchRun>,
}

/// What the session is doing with its input.
enum Mode {
    /// Commands, through the [`CommandReader`].
    Commands,
    /// IDLE (RFC 2177) until `DONE`: the input is read here line by line.
    Idle {
        tag: String,
        pending: Vec<u8>,
        last_notify: Instant,
        last_check: Instant,
    },
    /// Over (the connection task is told to close).
    Closed,
}

/// The logged-in session's core: fed what the client sent ([`Session::received`]) and
/// what happened to the connection (input ended, a timeout, a write failed, shutdown),
/// it answers with the next [`Action`] ([`Session::next`]). It never touches the socket
/// or a timer; the mailbox store it calls directly (file I/O). [`drive`] is the
/// connection task over a [`Client`].
pub(crate) struct Session {
    pub st: Arc<ImapState>,
    pub out: Out,
    pub reader: CommandReader,
    /// Bytes read from the client (`%i`).
    pub in_bytes: u64,
    pub user: String,
    pub session_id: String,
    pub store: MailStore,
    pub sel: Option<Selected>,
    /// ENABLEd (or used: RFC 7162 §3.1) CONDSTORE; QRESYNC.
    pub condstore: bool,
    pub qresync: bool,
    pub stats: Stats,
    bad: u32,
    /// The last command's name and when it finished (for the disconnect reason).
    last_cmd: Option<(String, Instant)>,
    pub cmd_start: Instant,
    /// Why the session ends (set when it does).
    pub ended: Option<String>,
    /// The session died ([`Done::Fatal`]): nothing more is said or logged.
    pub fatal: bool,
    /// The namespace's hierarchy separator (what the client sees) and the store's.
    pub ns_sep: char,
    pub store_sep: char,
    /// An APPEND whose literals are being received.
    pub append: Option<super::cmd_append::AppendState>,
    mode: Mode,
    /// A FETCH whose output is not all produced yet (no command is read meanwhile).
    fetching: Option<Fetching>,
    /// Actions for the connection task, oldest first.
    actions: std::collections::VecDeque<Action>,
}

/// The session core as seen from outside the crate (the `imap_session` fuzz target):
/// a logged-in session of `user` whose store is `mail_location` under `home`, its login
/// reply (`* OK [CAPABILITY …] Logged in`) queued.
pub struct Core(Session);

impl Core {
    pub fn new(st: Arc<ImapState>, user: &str, home: &str) -> Result<Core, MailboxError> {
        let info = UserInfo {
            user: user.to_string(),
            uid: None,
            gid: None,
            home: Some(home.to_string()),
            extra: Vec::new(),
        };
        let store = open_store(&st, user, &info, &format!("imap({user})"))?;
        let mut s = Session::new(st, user.to_string(), "core".into(), store);
        s.begin("", b"");
        Ok(Core(s))
    }
    /// [`Session::received`].
    pub fn received(&mut self, bytes: &[u8]) {
        self.0.received(bytes)
    }
    /// [`Session::input_ended`].
    pub fn input_ended(&mut self) {
        self.0.input_ended()
    }
    /// [`Session::timed_out`].
    pub fn timed_out(&mut self) {
        self.0.timed_out()
    }
    /// [`Session::next`].
    pub fn next_action(&mut self) -> Action {
        self.0.next()
    }
}

impl crate::login::mailproc::MailService for ImapState {
    fn threads(&self) -> bool {
        true
    }
    fn start(
        self: Arc<Self>,
        req: LoginRequest,
        fd: OwnedFd,
        user: String,
        info: UserInfo,
        guard: crate::login::mailproc::SessionGuard,
    ) {
        let spawned = std::thread::Builder::new()
            .name("imap".into())
            .stack_size(2 << 20)
            .spawn(move || {
                serve(self, req, fd, user, info);
                drop(guard);
            });
        if let Err(e) = spawned {
            crate::login::DovecotLog::Stderr.error(&format!("imap: thread: {e}"));
        }
    }
}

/// Build the session for a client the login process handed over, and serve it.
pub fn serve(st: Arc<ImapState>, req: LoginRequest, fd: OwnedFd, user: String, info: UserInfo) {
    if req.tls {
        let s = std::os::unix::net::UnixStream::from(fd);
        let _ = s.set_nonblocking(false);
        run(st, s, req, user, info);
    } else {
        let s = std::net::TcpStream::from(fd);
        let _ = s.set_nonblocking(false);
        let _ = s.set_nodelay(true);
        run(st, s, req, user, info);
    }
}

fn run<C: Client>(st: Arc<ImapState>, io: C, req: LoginRequest, user: String, info: UserInfo) {
    let pid = std::process::id();
    let prefix = format!("imap({user})<{pid}><{}>", req.session_id);
    log_login(&st, &req, &user);
    let store = match open_store(&st, &user, &info, &prefix) {
        Ok(s) => s,
        Err(e) => {
            st.log
                .error(&format!("{prefix}: Couldn't open the mail storage: {e}"));
            let mut io = io;
            let _ = io.write_all(
                b"* BYE [UNAVAILABLE] Internal error occurred. Refer to server log for more information.\r\n",
            );
            st.log.info(&format!(
                "{prefix}: Disconnected: Internal error occurred. in=0 out=0"
            ));
            return;
        }
    };
    let mut s = Session::new(st.clone(), user, req.session_id.clone(), store);
    s.begin(&req.tag, &req.leftover);
    drive(&mut s, io);
    if !s.fatal {
        st.log
            .info(&format!("{prefix}: Disconnected: {}", s.disconnected()));
    }
}

/// Dovecot's log line of a login the mail process took (`imap-login: Login: user=<…>,
/// method=…, rip=…, lip=…, mpid=…, secured, session=<…>`).
pub(crate) fn log_login(st: &ImapState, req: &LoginRequest, user: &str) {
    st.log.info(&format!(
        "imap-login: Login: user=<{user}>, method={}, rip={}, lip={}, mpid={}{}, session=<{}>",
        req.method,
        req.remote.ip(),
        req.local.ip(),
        std::process::id(),
        if req.tls {
            ", TLS"
        } else if st.login.is_secured(false, req.remote, req.local) {
            ", secured"
        } else {
            ""
        },
        req.session_id
    ));
}

/// The connection task: carries out a session's actions over `io` until it ends (a
/// thread of the mail process; the socket blocks, with the read timeout the session
/// asks for). Everything the session decides, it decides in [`Session`].
pub(crate) fn drive<C: Client>(s: &mut Session, mut io: C) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match s.next() {
            Action::Send(b) => {
                if io.write_all(&b).is_err() || io.flush().is_err() {
                    s.send_failed();
                }
            }
            Action::Read { timeout } => {
                let _ = io.set_read_timeout(Some(timeout));
                match io.read(&mut buf) {
                    Ok(0) if crate::login::mailproc::shutting_down() => s.shutdown(),
                    Ok(0) => s.input_ended(),
                    Ok(n) => s.received(&buf[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        s.timed_out()
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => s.input_ended(),
                }
            }
            Action::Close => {
                io.shutdown();
                return;
            }
        }
    }
}

/// The user's store from `mail_location` (or the userdb's `mail`).
pub(crate) fn open_store(
    st: &ImapState,
    user: &str,
    info: &UserInfo,
    prefix: &str,
) -> Result<MailStore, MailboxError> {
    let home = info.home.clone().unwrap_or_default();
    let location = info
        .extra
        .iter()
        .find(|(k, _)| k == "mail")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| st.mail_location.clone());
    // This process runs as the user (`crate::login::mailproc`): no identity to switch.
    let loc = MailLocation::expand(&location, user, &home)?;
    let mut mbox = st.mbox.clone();
    // A dotlock the user may not create is logged as this session's error.
    let (log, prefix) = (st.log.clone(), prefix.to_string());
    mbox.lock_errors = Some(crate::mailbox::lock::LockErrors(Arc::new(
        move |text: &str| log.error(&format!("{prefix}: {text}")),
    )));
    let sender = if user.contains('@') {
        user.to_string()
    } else {
        format!("{user}@{}", st.hostname)
    };
    Ok(MailStore::open(loc, None, StoreOptions { mbox, sender }))
}

impl Session {
    /// A session of `user` on `store`, before its first words.
    pub fn new(st: Arc<ImapState>, user: String, session_id: String, store: MailStore) -> Session {
        let store_sep = store.separator();
        Session {
            ns_sep: st.namespace.separator.unwrap_or(store_sep),
            store_sep,
            reader: CommandReader::new(st.max_line),
            st,
            out: Out::default(),
            in_bytes: 0,
            user,
            session_id,
            store,
            sel: None,
            condstore: false,
            qresync: false,
            stats: Stats::default(),
            bad: 0,
            last_cmd: None,
            cmd_start: Instant::now(),
            ended: None,
            fatal: false,
            append: None,
            mode: Mode::Commands,
            fetching: None,
            actions: Default::default(),
        }
    }

    /// The start: `mailbox { auto }` folders made, the login's tagged `OK [CAPABILITY …]
    /// Logged in` (`*` when the login had no tag), and what the client sent after its
    /// login command (`leftover`) taken as input.
    pub fn begin(&mut self, tag: &str, leftover: &[u8]) {
        self.autocreate();
        let tag = if tag.is_empty() { "*" } else { tag };
        let line = format!("{tag} OK [CAPABILITY {}] Logged in", self.st.capability);
        self.out.line(&line);
        self.received(leftover);
    }

    /// The end of Dovecot's `Disconnected:` log line: the reason and
    /// `imap_logout_format`.
    pub fn disconnected(&self) -> String {
        let reason = self
            .ended
            .clone()
            .unwrap_or_else(|| "Connection closed".into());
        format!("{reason} {}", self.logout_stats())
    }

    /// Bytes the client sent (an answer to [`Action::Read`]).
    pub fn received(&mut self, bytes: &[u8]) {
        self.in_bytes += bytes.len() as u64;
        match &mut self.mode {
            Mode::Idle { pending, .. } => pending.extend_from_slice(bytes),
            Mode::Commands => self.reader.feed(bytes),
            Mode::Closed => {}
        }
    }

    /// The client closed the connection, or reading failed.
    pub fn input_ended(&mut self) {
        if self.ended.is_none() {
            self.ended = Some(match self.mode {
                Mode::Idle { .. } => self.closed_reason_idle(),
                _ => self.closed_reason(),
            });
        }
    }

    /// Nothing came within the [`Action::Read`]'s timeout: outside IDLE the client has
    /// been silent for the autologout time; in IDLE it is time to look for changes.
    pub fn timed_out(&mut self) {
        if matches!(self.mode, Mode::Commands) && self.ended.is_none() && self.fetching.is_none() {
            self.out.line("* BYE Disconnected for inactivity.");
            self.ended = Some(format!(
                "Inactivity - no input for {} secs",
                self.st.autologout.as_secs()
            ));
        }
    }

    /// Writing to the client failed: it is gone.
    pub fn send_failed(&mut self) {
        if !self.out.broken {
            self.out.broken = true;
            self.out.bytes -= self.out.last_sent;
        }
    }

    /// The mail process is stopping (`dovecot stop`) and ended this session's input.
    pub fn shutdown(&mut self) {
        if self.ended.is_none() {
            self.shutdown_bye();
        }
    }

    /// The next thing for the connection task to do. Works through the input already
    /// received until it must wait for more.
    pub fn next(&mut self) -> Action {
        loop {
            if let Some(a) = self.actions.pop_front() {
                return a;
            }
            self.advance();
        }
    }

    /// Queue what is to be sent.
    fn flush(&mut self) {
        if let Some(b) = self.out.take() {
            self.actions.push_back(Action::Send(b));
        }
    }

    /// Use the input received for one step of the current mode, or ask for more. A
    /// FETCH under way goes on first: its output is handed out in pieces of about
    /// [`OUT_FLUSH`], and the input (pipelined commands, an IDLE's DONE) waits until it
    /// is all out.
    fn advance(&mut self) {
        if matches!(self.mode, Mode::Commands) {
            while self.ended.is_none() && !self.out.broken {
                if let Some(mut f) = self.fetching.take() {
                    match self.fetch_on(&mut f.run) {
                        None => {
                            // The output reached OUT_FLUSH: it goes out, then on from here.
                            self.fetching = Some(f);
                            return self.flush();
                        }
                        Some(done) => {
                            self.command_end(&f.tag, "FETCH", f.uid, f.sync, done);
                            self.last_cmd = Some((f.name, Instant::now()));
                        }
                    }
                } else {
                    let Some(ev) = self.reader.next_event() else {
                        break;
                    };
                    self.event(ev);
                }
                if self.ended.is_some() || self.out.broken {
                    break;
                }
                if self.out.buf.len() >= OUT_FLUSH {
                    // A long reply goes out before the next command is read.
                    return self.flush();
                }
                if !matches!(self.mode, Mode::Commands) {
                    return;
                }
            }
        }
        if let Some(f) = self.fetching.take() {
            // The client went away (or the session ended) during a FETCH: the rest of
            // it is not produced.
            self.save_header_cache();
            self.last_cmd = Some((f.name, Instant::now()));
        }
        if self.out.broken && self.ended.is_none() {
            self.ended = Some(match self.mode {
                Mode::Idle { .. } => self.closed_reason_idle(),
                _ => self.closed_reason(),
            });
        }
        if self.ended.is_some() || matches!(self.mode, Mode::Closed) {
            self.flush();
            self.mode = Mode::Closed;
            self.actions.push_back(Action::Close);
            return;
        }
        let timeout = match self.mode {
            Mode::Idle { .. } => match self.idle_step() {
                Some(t) => t,
                None => return,
            },
            _ => self.st.autologout,
        };
        self.flush();
        self.actions.push_back(Action::Read { timeout });
    }

    /// `mailbox X { auto = create | subscribe }`: made at login when missing.
    fn autocreate(&mut self) {
        let ns = self.st.namespace.clone();
        for m in &ns.mailboxes {
            if m.auto != "create" && m.auto != "subscribe" {
                continue;
            }
            let name = self.to_store_name(&m.name);
            if !matches!(self.store.exists(&name), Ok(true)) {
                let _ = self.store.create(&name);
            }
            if m.auto == "subscribe" {
                let subscribed = self
                    .store
                    .subscriptions()
                    .map(|s| s.contains(&name))
                    .unwrap_or(false);
                if !subscribed {
                    let _ = self.store.set_subscribed(&name, true);
                }
            }
        }
    }

    /// A namespace name (UTF-8, namespace separator) as the store names it.
    pub fn to_store_name(&self, name: &str) -> String {
        let name = name.strip_prefix(&self.st.namespace.prefix).unwrap_or(name);
        if self.ns_sep == self.store_sep {
            name.to_string()
        } else {
            name.chars()
                .map(|c| if c == self.ns_sep { self.store_sep } else { c })
                .collect()
        }
    }

    /// A store name as the client sees it.
    pub fn to_ns_name(&self, name: &str) -> String {
        let mut out = String::new();
        if !crate::mailbox::names::is_inbox(name) {
            out.push_str(&self.st.namespace.prefix);
        }
        if self.ns_sep == self.store_sep {
            out.push_str(name);
        } else {
            out.extend(
                name.chars()
                    .map(|c| if c == self.store_sep { self.ns_sep } else { c }),
            );
        }
        out
    }

    /// Dovecot's reason for a client that just went away: `Connection closed (NAME
    /// finished N secs ago)`, or `(No commands sent)`.
    fn closed_reason(&self) -> String {
        match &self.last_cmd {
            Some((name, at)) => format!(
                "Connection closed ({name} finished {:.3} secs ago)",
                at.elapsed().as_secs_f64()
            ),
            None => "Connection closed (No commands sent)".into(),
        }
    }

    fn event(&mut self, ev: ReadEvent) {
        match ev {
            ReadEvent::Continue(b) => self.out.raw(&b),
            ReadEvent::Reply { line, close } => {
                self.out.raw(&line);
                if close {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end().trim_start_matches("* BYE ").to_string();
                    self.ended = Some(text);
                } else {
                    self.count_bad();
                }
            }
            ReadEvent::Command(raw) => {
                self.cmd_start = Instant::now();
                let name = raw.name.clone();
                self.command(raw);
                if self.fetching.is_none() {
                    self.last_cmd = Some((name, Instant::now()));
                }
            }
            ReadEvent::AppendLiteral {
                tag,
                head,
                size,
                sync,
                literal8,
            } => self.append_literal(tag, head, size, sync, literal8),
            ReadEvent::LiteralData(d) => self.append_data(d),
            ReadEvent::LiteralEnd => self.append_literal_end(),
        }
    }

    fn count_bad(&mut self) {
        self.bad += 1;
        if self.bad >= MAX_BAD_COMMANDS {
            self.out.line("* BYE Too many invalid IMAP commands.");
            self.ended = Some("Too many invalid IMAP commands.".into());
        }
    }

    /// The tagged line with Dovecot's timing: `TAG OK Fetch completed (0.001 + 0.000
    /// secs).`
    pub fn tagged(&mut self, tag: &str, status: &str, text: &str) {
        let ms = (self.cmd_start.elapsed().as_micros() as u64).div_ceil(1000);
        let text = text.strip_suffix('.').unwrap_or(text);
        self.out.line(&format!(
            "{tag} {status} {text} ({}.{:03} + 0.000 secs).",
            ms / 1000,
            ms % 1000
        ));
    }

    /// The tagged reply. Dovecot counts command errors in a row: any other reply
    /// starts the count again.
    fn finish(&mut self, tag: &str, done: Done) {
        match done {
            Done::Ok(t) => {
                self.bad = 0;
                self.tagged(tag, "OK", &t)
            }
            Done::No(t) => {
                self.bad = 0;
                self.tagged(tag, "NO", &t)
            }
            Done::Bad(t, counted) => {
                self.tagged(tag, "BAD", &t);
                if counted {
                    self.count_bad();
                } else {
                    self.bad = 0;
                }
            }
            Done::Sent => self.bad = 0,
            Done::Fatal => self.die(),
        }
    }

    /// End the session at once, as a Dovecot mail process's `i_fatal()` does: what is
    /// waiting to be sent is dropped and the connection closed.
    pub(crate) fn die(&mut self) {
        self.fatal = true;
        self.out.buf.clear();
        self.mode = Mode::Closed;
    }

    /// One command, from its parsed arguments to its tagged reply.
    fn command(&mut self, raw: RawCommand) {
        let tag = raw.tag.clone();
        let name = raw.name.clone();
        if self.append.is_some() && name != "APPEND" {
            // An APPEND was cut short (its literal refused): forget it.
            self.append = None;
        }
        let args = match raw.args() {
            Ok(a) => a,
            Err(e) => {
                if name == "APPEND" {
                    self.append = None;
                }
                let d = bad_cmd(&name, e.0);
                self.finish(&tag, d);
                if e.0 == "Invalid literal size" {
                    // Dovecot's parser stopped after the `{`: the rest of the line is
                    // read as the next command.
                    let line = &raw.line;
                    if let Some(p) = line.iter().position(|&c| c == b'{') {
                        let mut rest = line[p + 1..].to_vec();
                        rest.extend_from_slice(b"\r\n");
                        self.reader.unread(&rest);
                    }
                }
                return;
            }
        };
        let (uid, base) = match name.strip_prefix("UID ") {
            Some(b) => (true, b),
            None => (false, name.as_str()),
        };
        let selected_cmd = matches!(
            base,
            "CHECK"
                | "CLOSE"
                | "UNSELECT"
                | "EXPUNGE"
                | "SEARCH"
                | "FETCH"
                | "STORE"
                | "COPY"
                | "MOVE"
                | "SORT"
                | "THREAD"
        );
        if uid
            && !matches!(
                base,
                "FETCH" | "STORE" | "SEARCH" | "COPY" | "MOVE" | "SORT" | "THREAD" | "EXPUNGE"
            )
        {
            let d = bad_cmd(&name, "Unknown command");
            self.finish(&tag, d);
            return;
        }
        if selected_cmd && self.sel.is_none() {
            self.finish(&tag, Done::Bad("No mailbox selected.".into(), false));
            return;
        }
        // Dovecot's sync after the command: expunges are held back while sequence
        // numbers are in play.
        let mut sync = SyncMode::Full;
        let done = match base {
            "CANCELUPDATE" => self.cmd_cancelupdate(&args),
            "GETQUOTAROOT" | "GETQUOTA" | "SETQUOTA"
                if self.st.quota.as_ref().is_some_and(|q| q.imap) =>
            {
                self.cmd_quota(base, &args)
            }
            "CAPABILITY" => {
                let c = format!("* CAPABILITY {}", self.st.capability);
                self.out.line(&c);
                Done::Ok("Capability completed.".into())
            }
            "NOOP" => Done::Ok("NOOP completed.".into()),
            "CHECK" => Done::Ok("Check completed.".into()),
            "LOGOUT" => {
                self.out.line("* BYE Logging out");
                self.tagged(&tag, "OK", "Logout completed.");
                self.ended = Some("Logged out".into());
                return;
            }
            "ID" => self.cmd_id(&args),
            "ENABLE" => self.cmd_enable(&args),
            "NAMESPACE" => self.cmd_namespace(),
            "SELECT" | "EXAMINE" => {
                let d = self.cmd_select(&tag, base, &args);
                // SELECT sends its own untagged lines; nothing to sync after it.
                self.finish(&tag, d);
                return;
            }
            "CREATE" => self.cmd_create(&args),
            "DELETE" => self.cmd_delete(&args),
            "RENAME" => self.cmd_rename(&args),
            "SUBSCRIBE" => self.cmd_subscribe(&args, true),
            "UNSUBSCRIBE" => self.cmd_subscribe(&args, false),
            "LIST" => self.cmd_list(&args, false),
            "LSUB" => self.cmd_list(&args, true),
            "STATUS" => self.cmd_status(&args),
            "APPEND" => self.cmd_append(&tag, &args),
            "IDLE" => {
                self.cmd_idle(&tag);
                return;
            }
            "CLOSE" => {
                let d = self.cmd_close(true);
                self.quota_changed();
                self.finish(&tag, d);
                return;
            }
            "UNSELECT" => {
                let d = self.cmd_close(false);
                self.finish(&tag, d);
                return;
            }
            "EXPUNGE" => self.cmd_expunge(&args, uid),
            "FETCH" => {
                if !uid {
                    sync = SyncMode::NoExpunges;
                }
                match self.fetch_begin(&args, uid) {
                    Ok(run) => {
                        // Its output is produced as it goes out (Self::advance).
                        self.fetching = Some(Fetching {
                            tag: tag.clone(),
                            name: name.clone(),
                            uid,
                            sync,
                            run,
                        });
                        return;
                    }
                    Err(d) => d,
                }
            }
            "STORE" => {
                if !uid {
                    sync = SyncMode::NoExpunges;
                }
                self.cmd_store(&args, uid)
            }
            "SEARCH" => {
                if !uid {
                    sync = SyncMode::NoExpunges;
                }
                self.cmd_search(&tag, &args, uid)
            }
            "SORT" => {
                if !uid {
                    sync = SyncMode::NoExpunges;
                }
                self.cmd_sort(&tag, &args, uid)
            }
            "THREAD" => {
                if !uid {
                    sync = SyncMode::NoExpunges;
                }
                self.cmd_thread(&args, uid)
            }
            "COPY" | "MOVE" => {
                if !uid {
                    sync = SyncMode::NoExpunges;
                }
                self.cmd_copy(&args, uid, base == "MOVE")
            }
            _ => bad_cmd(&name, "Unknown command"),
        };
        self.command_end(&tag, base, uid, sync, done);
    }

    /// A command's end: the quota brought up to date after a change, the mailbox synced
    /// (what changed reported) and the tagged reply.
    fn command_end(&mut self, tag: &str, base: &str, uid: bool, sync: SyncMode, done: Done) {
        if matches!(done, Done::Ok(_))
            && matches!(base, "APPEND" | "COPY" | "MOVE" | "EXPUNGE" | "DELETE")
        {
            self.quota_changed();
        }
        if matches!(done, Done::Ok(_) | Done::No(_)) && self.ended.is_none() {
            let done = match self.sync(sync, uid) {
                Some(extra) => match done {
                    Done::Ok(t) if !t.starts_with('[') => Done::Ok(format!("{extra} {t}")),
                    d => d,
                },
                None => done,
            };
            if self.ended.is_some() {
                return;
            }
            self.finish(tag, done);
        } else {
            self.finish(tag, done);
        }
    }

    /// `ID (…)` (RFC 2971): Dovecot's `imap_id_send` default, `name *`.
    fn cmd_id(&mut self, args: &[Arg]) -> Done {
        if args.len() != 1 || !matches!(args[0], Arg::Nil | Arg::List(_)) {
            return bad_cmd("ID", "Invalid arguments");
        }
        self.out.line("* ID (\"name\" \"Dovecot\")");
        Done::Ok("ID completed.".into())
    }

    /// `ENABLE` (RFC 5161): CONDSTORE and QRESYNC (QRESYNC implies CONDSTORE); other
    /// names are ignored.
    fn cmd_enable(&mut self, args: &[Arg]) -> Done {
        if args.is_empty() {
            return bad_cmd("ENABLE", "Invalid arguments");
        }
        let mut names = Vec::new();
        for a in args {
            let Some(n) = a.atom() else {
                return bad_cmd("ENABLE", "Invalid arguments");
            };
            names.push(n.to_ascii_uppercase());
        }
        let mut enabled = Vec::new();
        for n in names {
            match n.as_str() {
                "CONDSTORE" if !self.condstore => {
                    self.enable_condstore();
                    enabled.push(n);
                }
                "QRESYNC" if !self.qresync => {
                    self.enable_condstore();
                    self.qresync = true;
                    enabled.push(n);
                }
                _ => {}
            }
        }
        if enabled.is_empty() {
            return Done::Ok("Enabled.".into());
        }
        self.out.line(&format!("* ENABLED {}", enabled.join(" ")));
        Done::Ok("Enabled.".into())
    }

    /// CONDSTORE turned on (RFC 7162 §3.1: by ENABLE or by a command using it); with a
    /// mailbox selected, its HIGHESTMODSEQ is announced.
    pub fn enable_condstore(&mut self) {
        if self.condstore {
            return;
        }
        self.condstore = true;
        if let Some(sel) = &self.sel {
            sel.folder.announce_modseqs();
            let m = sel.folder.highest_modseq();
            self.out.line(&format!("* OK [HIGHESTMODSEQ {m}] Highest"));
        }
    }

    /// `* NAMESPACE (("" "."))  NIL NIL`.
    fn cmd_namespace(&mut self) -> Done {
        let ns = &self.st.namespace;
        let line = format!(
            "* NAMESPACE ((\"{}\" \"{}\")) NIL NIL",
            quote_escape(&super::mutf7::encode(&ns.prefix)),
            quote_escape(&self.ns_sep.to_string())
        );
        self.out.line(&line);
        Done::Ok("Namespace completed.".into())
    }

    /// IDLE (RFC 2177): `+ idling`, then changes as they happen (checked every
    /// `idle_check`), `* OK Still here` every `imap_idle_notify_interval`, until DONE
    /// ([`Self::idle_step`]).
    fn cmd_idle(&mut self, tag: &str) {
        // `+ idling` first, then what changed meanwhile (Dovecot's cmd-idle.c syncs
        // right after the continuation).
        self.out.line("+ idling");
        if self.sel.is_some() {
            self.sync(SyncMode::Full, false);
        }
        // Whatever the client sent after IDLE is read in IDLE, line by line.
        let now = Instant::now();
        self.mode = Mode::Idle {
            tag: tag.to_string(),
            pending: self.reader.take_buffered(),
            last_notify: now,
            last_check: now,
        };
    }

    /// One step of IDLE: the periodic check and notice when due, then `DONE` (or
    /// anything else, answered `BAD Expected DONE.`) when a line is complete. How long
    /// to wait for input before the next check, or `None` when IDLE is over.
    fn idle_step(&mut self) -> Option<Duration> {
        let (check_due, notify_due) = {
            let Mode::Idle {
                last_notify,
                last_check,
                ..
            } = &mut self.mode
            else {
                return None;
            };
            let check = last_check.elapsed() >= self.st.idle_check;
            if check {
                *last_check = Instant::now();
            }
            let notify = last_notify.elapsed() >= self.st.idle_notify;
            if notify {
                *last_notify = Instant::now();
            }
            (check, notify)
        };
        if check_due && self.sel.is_some() {
            self.sync(SyncMode::Full, false);
        }
        if notify_due {
            self.out.line("* OK Still here");
        }
        let Mode::Idle {
            tag,
            pending,
            last_check,
            ..
        } = &mut self.mode
        else {
            return None;
        };
        if let Some(pos) = memchr::memchr(b'\n', pending) {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let rest = std::mem::take(pending);
            let tag = std::mem::take(tag);
            self.mode = Mode::Commands;
            let word = String::from_utf8_lossy(&line);
            let word = word.trim_end_matches(['\r', '\n']);
            self.reader.feed(&rest);
            self.cmd_start = Instant::now();
            if word.eq_ignore_ascii_case("DONE") {
                if self.sel.is_some() {
                    self.sync(SyncMode::Full, false);
                }
                if self.ended.is_none() {
                    self.tagged(&tag, "OK", "Idle completed.");
                }
            } else {
                self.tagged(&tag, "BAD", "Expected DONE.");
            }
            self.last_cmd = Some(("IDLE".into(), Instant::now()));
            return None;
        }
        if pending.len() > self.st.max_line {
            let tag = std::mem::take(tag);
            self.mode = Mode::Commands;
            self.tagged(&tag, "BAD", "Expected DONE.");
            return None;
        }
        if self.ended.is_some() || self.out.broken {
            return None;
        }
        Some(
            self.st
                .idle_check
                .saturating_sub(last_check.elapsed())
                .max(Duration::from_millis(10)),
        )
    }

    /// `dovecot stop` (`shutdown_clients = yes`): Dovecot's goodbye.
    fn shutdown_bye(&mut self) {
        self.out.line("* BYE Server shutting down.");
        self.ended = Some("Server shutting down.".into());
    }

    fn closed_reason_idle(&self) -> String {
        "Connection closed (IDLE running for 0.001 + waiting input for 0.001 secs)".into()
    }

    /// Write the selected folder's header cache if a command added to it.
    pub fn save_header_cache(&mut self) {
        let Some(sel) = self.sel.as_mut() else { return };
        if let Err(e) = sel.hdr_cache.save(&sel.folder) {
            let text = format!(
                "Mailbox {}: writing {}: {e}",
                sel.name,
                super::hdrcache::FILE
            );
            self.log_error(&text);
        }
    }

    /// After a change to the user's mail: `maildirsize` brought up to date (only with
    /// a `maildir` quota).
    pub fn quota_changed(&mut self) {
        if let Some(q) = self.st.quota.clone()
            && q.backend == "maildir"
        {
            self.quota_refresh(&q);
        }
    }

    /// Sync the selected mailbox and report what changed (Dovecot's `imap_sync`).
    /// Returns `[HIGHESTMODSEQ n]` for the tagged reply when QRESYNC wants it.
    pub fn sync(&mut self, mode: SyncMode, uid_cmd: bool) -> Option<String> {
        let sel = self.sel.as_mut()?;
        let before: Vec<u32> = sel.folder.messages().iter().map(|m| m.uid).collect();
        let changes = match sel.folder.sync(mode) {
            Ok(c) => c,
            Err(MailboxError::NotFound(_)) => {
                self.out
                    .line("* BYE Selected mailbox was deleted, have to disconnect.");
                self.ended = Some("Selected mailbox was deleted, have to disconnect.".into());
                return None;
            }
            Err(e) => {
                let text = format!("Mailbox {}: sync failed: {e}", sel.name);
                self.log_error(&text);
                return None;
            }
        };
        if changes.uid_validity_changed {
            self.out.line("* BYE Mailbox UIDVALIDITY changed");
            self.ended = Some("Mailbox UIDVALIDITY changed".into());
            return None;
        }
        let sel = self.sel.as_mut()?;
        let folder = &sel.folder;
        if changes.keywords_added {
            send_flags(&mut self.out, folder);
        }
        if !changes.expunged.is_empty() {
            let gone: Vec<u32> = changes.expunged.iter().map(|&(_, u)| u).collect();
            self.search_updates_expunged(&before, &gone);
        }
        let sel = self.sel.as_mut()?;
        let folder = &sel.folder;
        // Flag changes, by the sequence numbers the client knows (before expunges).
        let send_uid = uid_cmd || self.qresync;
        for uid in &changes.flags {
            let Some(seq) = before.iter().position(|u| u == uid) else {
                continue;
            };
            let Some(m) = folder.get(*uid) else { continue };
            let mut line = format!("* {} FETCH (", seq + 1);
            if send_uid {
                line.push_str(&format!("UID {uid} "));
            }
            if self.condstore {
                line.push_str(&format!("MODSEQ ({}) ", m.modseq));
            }
            line.push_str(&format!("FLAGS ({}))", flag_list(folder, m)));
            self.out.line(&line);
        }
        if !changes.expunged.is_empty() {
            let uids: Vec<u32> = changes.expunged.iter().map(|&(_, u)| u).collect();
            let sel = self.sel.as_mut()?;
            sel.saved.retain(|u| !uids.contains(u));
            if self.qresync {
                let mut sorted = uids.clone();
                sorted.sort_unstable();
                self.out.line(&format!(
                    "* VANISHED {}",
                    super::message::search::seqset_string(&sorted)
                ));
            } else {
                // Highest first, by the numbers before any of them went (as Dovecot).
                let mut seqs: Vec<u32> = uids
                    .iter()
                    .filter_map(|u| before.iter().position(|b| b == u))
                    .map(|p| p as u32 + 1)
                    .collect();
                seqs.sort_unstable_by(|a, b| b.cmp(a));
                for s in seqs {
                    self.out.line(&format!("* {s} EXPUNGE"));
                }
            }
        }
        let sel = self.sel.as_mut()?;
        if changes.new_messages > 0 {
            self.out
                .line(&format!("* {} EXISTS", sel.folder.messages().len()));
        }
        let recent = sel.folder.status().recent;
        if recent != sel.recent {
            sel.recent = recent;
            self.out.line(&format!("* {recent} RECENT"));
        }
        let first_new = sel.folder.messages().len() - changes.new_messages;
        self.search_updates_changed(&changes.flags, first_new);
        let sel = self.sel.as_mut()?;
        if self.qresync && (!changes.is_empty()) {
            return Some(format!("[HIGHESTMODSEQ {}]", sel.folder.highest_modseq()));
        }
        None
    }

    /// Log an error of this session (`imap(user)<pid><session>: Error: …`).
    pub fn log_error(&self, text: &str) {
        self.st.log.error(&format!(
            "imap({})<{}><{}>: {text}",
            self.user,
            std::process::id(),
            self.session_id
        ));
    }

    /// A store error as Dovecot answers it: `NO [CODE] text`, internal errors logged and
    /// answered `NO [SERVERBUG] Internal error occurred. …`.
    pub fn store_error(&self, e: &MailboxError) -> Done {
        match e {
            MailboxError::Io { .. } | MailboxError::Unsafe(..) | MailboxError::Format(_) => {
                self.log_error(&e.to_string());
                Done::No(
                    "[SERVERBUG] Internal error occurred. Refer to server log for more information."
                        .into(),
                )
            }
            // Dovecot's mbox lock timeout is a temporary error: `[SERVERBUG]`, seen from
            // 2.3.19 at SELECT and EXAMINE (compat-fixtures/locks/dovecot-2.3.txt).
            MailboxError::Locked(_) => {
                Done::No("[SERVERBUG] Timeout while waiting for lock.".into())
            }
            MailboxError::LockSettings(text) => {
                // Dovecot's mail process dies here: `imap(USER)<PID><SESSION>: Fatal: …`.
                self.st.log.fatal(&format!(
                    "imap({})<{}><{}>: {text}",
                    self.user,
                    std::process::id(),
                    self.session_id
                ));
                Done::Fatal
            }
            _ => {
                let text = e.to_string();
                let text = if text.ends_with('.') {
                    text
                } else {
                    format!("{text}.")
                };
                match e.imap_code() {
                    Some(code) => Done::No(format!("[{code}] {text}")),
                    None => Done::No(text),
                }
            }
        }
    }

    fn logout_stats(&self) -> String {
        let s = &self.stats;
        let (i, o) = (self.in_bytes, self.out.bytes);
        let value = |key: &str| -> Option<String> {
            Some(match key {
                "i" | "input" => i.to_string(),
                "o" | "output" => o.to_string(),
                "deleted" => s.deleted.to_string(),
                "expunged" => s.expunged.to_string(),
                "trashed" => s.trashed.to_string(),
                "autoexpunged" => "0".into(),
                "fetch_hdr_count" => s.fetch_hdr_count.to_string(),
                "fetch_hdr_bytes" => s.fetch_hdr_bytes.to_string(),
                "fetch_body_count" => s.fetch_body_count.to_string(),
                "fetch_body_bytes" => s.fetch_body_bytes.to_string(),
                "session" => self.session_id.clone(),
                "user" | "u" => self.user.clone(),
                _ => return None,
            })
        };
        crate::config::dovecot::var_expand::var_expand(&self.st.logout_format, value, |key| {
            format!("UNSUPPORTED_VARIABLE_{key}")
        })
    }
}

/// `* FLAGS (…)` and `* OK [PERMANENTFLAGS (…)]` of a selected mailbox.
pub(crate) fn send_flags(out: &mut Out, folder: &Folder) {
    let kws: Vec<&str> = folder.keywords().iter().map(String::as_str).collect();
    let mut flags = String::from("\\Answered \\Flagged \\Deleted \\Seen \\Draft");
    for k in &kws {
        flags.push(' ');
        flags.push_str(k);
    }
    out.line(&format!("* FLAGS ({flags})"));
    if folder.read_only() {
        out.line("* OK [PERMANENTFLAGS ()] Read-only mailbox.");
    } else {
        let star = if folder.can_create_keywords() {
            " \\*"
        } else {
            ""
        };
        out.line(&format!(
            "* OK [PERMANENTFLAGS ({flags}{star})] Flags permitted."
        ));
    }
}

/// A message's FLAGS list (system flags in Dovecot's order, keywords, `\Recent`).
pub(crate) fn flag_list(folder: &Folder, m: &crate::mailbox::Message) -> String {
    let mut parts: Vec<&str> = m.flags.names().collect();
    if m.recent {
        parts.push("\\Recent");
    }
    parts.extend(folder.keyword_names(m));
    parts.join(" ")
}

/// A string inside `"…"`: `\` and `"` escaped.
pub(crate) fn quote_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
