//! IMAP's grammar, shared by the login stage ([`crate::login::imap`]) and the logged-in
//! service ([`crate::imapd`]), as Dovecot's `lib-imap` is shared by `imap-login` and `imap`:
//! the command reader ([`reader`]) and the recorded transcripts' format ([`fixture`]).

pub mod fixture;
pub mod reader;
