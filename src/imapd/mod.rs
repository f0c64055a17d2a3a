//! imapd: Dovecot's IMAP service, the parts that do not depend on the mailbox store: the
//! wire format (command input with literals and limits, argument trees, response
//! quoting), modified UTF-7 mailbox names, sequence sets, and the message functions
//! (ENVELOPE, BODYSTRUCTURE, `BODY[section]<partial>`, BINARY, SEARCH, SORT, THREAD) over a
//! message's raw bytes, all as Dovecot 2.3.19 answers (recorded from the real program in
//! `compat-fixtures/imap/` by `scripts/regen-imap-fixtures`). The session state machine
//! (not authenticated / authenticated / selected / logout) comes with the store API.
//!
//! Sans I/O (DESIGN.md §2): [`reader::CommandReader`] is fed bytes and yields commands,
//! continuations and error replies; nothing here touches a socket or a file.
//!
//! RFCs: 3501 (IMAP4rev1), 7888 (LITERAL+), 5182 (SEARCHRES), 4731 (ESEARCH), 5256 (SORT,
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
//! Files: [`reader`] (command input), [`seqset`], [`mutf7`], [`mailbox_name`] (Dovecot's
//! name checks and reply texts), [`message`] (the part tree, ENVELOPE, BODYSTRUCTURE,
//! BODY/BINARY sections, the FETCH item parser, SEARCH, SORT, THREAD, and the differential
//! checks in [`message::compat`]). `compat-fixtures/imap/session.txt` holds Dovecot's reply
//! texts for each command and error case in each state, for the session to come.
//!
//! Known limits (XXX): no session yet (it needs the mailbox store API); see each file's
//! header for the rest.

pub mod mailbox_name;
pub mod message;
pub mod mutf7;
pub mod reader;
pub mod seqset;
