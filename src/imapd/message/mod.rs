//! Message functions over a message's raw bytes, as Dovecot 2.3.19 computes them:
//! [`mime`] (the part tree), [`rfc822`] (header tokens, RFC 2231 parameters, addresses),
//! [`fetch`] (ENVELOPE, BODY/BODYSTRUCTURE, `BODY[section]<partial>`, BINARY of leaf parts),
//! [`search`] (SEARCH keys, ESEARCH/SAVE), [`sort`] (SORT, THREAD).
//!
//! Why not `mail-parser` here: its part offsets and its recovery from broken MIME differ
//! from Dovecot's `message-parser.c` (where the CRLF before a boundary goes, a boundary
//! found inside a header, prefix matching of nested boundaries, multipart without a
//! boundary), and BODYSTRUCTURE prints those offsets as sizes and line counts, so
//! byte-exact answers need Dovecot's cuts; likewise ENVELOPE prints what Dovecot's own
//! address parser keeps (fill-ins such as MISSING_DOMAIN, the comment as display name).
//! [`compat`] holds these to Dovecot's recorded answers (unit tests) and to a live
//! Dovecot (`tests/imap_proto.rs`).

pub mod fetch;
pub mod mime;
pub mod rfc822;
pub mod search;
pub mod sort;

pub mod compat;
