//! imapd: Dovecot's IMAP service (`man imapd`). The login stage is [`crate::login`]
//! (`imap-login`, shared with POP3); here are the service side of a login ([`state`]:
//! settings, the credential check, the hand-over) and the logged-in session ([`session`]:
//! the authenticated and selected states, one thread per session in the user's mail
//! process, on the mailbox store
//! [`crate::mailbox`]), with the commands in `cmd_*` files; and the parts that do not
//! depend on the store: the wire format (command input with literals and limits, argument
//! trees, response quoting), modified UTF-7 mailbox names, sequence sets, and the message
//! functions (ENVELOPE, BODYSTRUCTURE, `BODY[section]<partial>`, BINARY, SEARCH, SORT,
//! THREAD) over a message's raw bytes, all as Dovecot 2.3.19 answers (recorded from the
//! real program in `compat-fixtures/imap/` by `scripts/regen-imap-fixtures`; compared live
//! with the real Dovecot by `tests/imap.rs`).
//!
//! Sans I/O (DESIGN.md §2): [`crate::imap::reader::CommandReader`] (IMAP's grammar, shared
//! with the login stage) is fed bytes and yields commands,
//! continuations and error replies; the logged-in session ([`session::Session`]) is a core
//! fed bytes and connection events that answers with actions (send, read within a
//! timeout, close), driven by one connection thread ([`session::drive`]), and replayed
//! against Dovecot's recorded session in unit tests (`tests.rs`). [`state`] hands the
//! socket over.
//!
//! RFCs: 3501 (IMAP4rev1), 5267 (CONTEXT=SEARCH), 2087 (QUOTA), 7888 (LITERAL+), 5182 (SEARCHRES), 4731 (ESEARCH), 5256 (SORT,
//! THREAD), 5957 (SORT=DISPLAY), 5032 (WITHIN), 7162 (CONDSTORE/QRESYNC), 3516 (BINARY),
//! 2047/2231 (encoded words and parameters), 2045/2046 (MIME).
//!
//! Why not `imap-codec`/`imap-next` (evaluated: imap-codec 2.0.0-alpha.10 with imap-types
//! 2.0.0-alpha.8, the newest that resolve with `rust-version = 1.95`, build fine): they
//! parse neither `$` (SEARCHRES), `SEARCH RETURN (…)` (ESEARCH, CONTEXT=SEARCH), `SORT
//! RETURN` (ESORT), MULTIAPPEND, CATENATE, `LIST (…) … RETURN (STATUS …)` (LIST-EXTENDED,
//! LIST-STATUS) nor `SEARCH UPDATE`; a failed parse is an opaque `Failed` with no
//! position, so Dovecot's BAD texts (`Missing ')'`, `Unknown parameter: FOO`, `Invalid
//! messageset` …), which depend on where and in which command the input went wrong, cannot
//! be produced from it; and its response encoder chooses atom/quoted/literal by its own
//! rules, while Dovecot's BODYSTRUCTURE and ENVELOPE quote every string and switch to a
//! literal after four escapes or at 8-bit text, which clients and our differential tests
//! see byte for byte. So the reader follows Dovecot's own two-step design (a generic
//! argument parser, then each command reads its arguments) in ~600 lines.
//!
//! Files: [`state`], [`session`] (the command loop, sync and change reports, IDLE,
//! ENABLE, ID, NAMESPACE), `cmd_select` (SELECT/EXAMINE with QRESYNC, CLOSE, UNSELECT,
//! EXPUNGE), `cmd_mailbox` (CREATE, DELETE, RENAME, (UN)SUBSCRIBE, LIST/LSUB with
//! LIST-EXTENDED and LIST-STATUS, STATUS), `cmd_append` (APPEND, MULTIAPPEND, CATENATE,
//! through `spool`), `cmd_fetch` (FETCH, STORE, COPY, MOVE), `cmd_search` (SEARCH,
//! SORT, THREAD, ESEARCH/ESORT, SEARCHRES), [`seqset`],
//! [`mutf7`], [`mailbox_name`] (Dovecot's name checks and reply texts), [`message`] (the
//! part tree, ENVELOPE, BODYSTRUCTURE, BODY/BINARY sections, the FETCH item parser,
//! SEARCH, SORT, THREAD, and the differential checks in [`message::compat`]).
//! `compat-fixtures/imap/session.txt` holds Dovecot's reply texts for each command and
//! error case in each state; `tests/imap.rs` replays its script against Postern.
//!
//! [`quota`]: QUOTA when Dovecot's quota plugins are configured. [`hdrcache`]: a
//! Maildir folder's persistent header cache (`postern.cache`) for header FETCHes and
//! SORT.
//!
//! Session threads run in the `dovecot/imap` mail process of the user's uid, gid and
//! groups ([`crate::login::mailproc`]), which runs as that user; one such process serves
//! every session of the identity (Dovecot: a process per session).
//!
//! Known limits (XXX, see imapd(8) BUGS): no NOTIFY, URLAUTH; IDLE polls every half
//! second.

mod cmd_append;
mod cmd_fetch;
mod cmd_mailbox;
mod cmd_search;
mod cmd_select;
pub mod hdrcache;
pub mod mailbox_name;
pub mod message;
pub mod mutf7;
pub mod quota;
pub mod seqset;
pub mod session;
mod spool;
pub mod state;
#[cfg(test)]
mod tests;

pub use state::{ImapState, serve_login_process};
