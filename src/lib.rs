//! Postern: a Postfix-compatible mail system (MTA, saslauthd, POP3/IMAP) that reads the
//! existing `/etc/postfix`, Cyrus SASL and Dovecot configuration files unchanged.
//!
//! Modules follow the stages of `DESIGN.md` §2. Today the config foundation is here:
//! [`config`] (grammars → ordered model, Postfix parameter table, `$name` expansion) and the
//! command front ends in [`cli`].
//!
//! The layers of DESIGN.md §2, lowest first: config → sys::time → log → sys → memory →
//! tls, dns → maps → resolve → queue, mailbox → auth → delivery → smtpd, qmgr → login,
//! pop3d, imapd → master → cli (checked by tests/layers.rs). The operating system's `unsafe` interfaces
//! live in [`sys`]; every other module is `deny(unsafe_code)`, except those still marked
//! `#[allow(unsafe_code)]` (XXX, issue 16 item 4), a list tests/layers.rs keeps from
//! growing.

#![deny(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod dns;
pub mod imap;
pub mod imapd;
pub mod log;
pub mod login;
pub mod mailbox;
pub mod maps;
pub mod master;
pub mod memory;
pub mod pop3d;
pub mod qmgr;
pub mod queue;
pub mod resolve;
pub mod smtpd;
#[allow(unsafe_code)]
pub mod sys;
pub mod tls;
