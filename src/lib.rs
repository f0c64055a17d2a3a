//! Postern: a Postfix-compatible mail system (MTA, saslauthd, POP3/IMAP) that reads the
//! existing `/etc/postfix`, Cyrus SASL and Dovecot configuration files unchanged.
//!
//! Modules follow the stages of `DESIGN.md` §2. Today the config foundation is here:
//! [`config`] (grammars → ordered model, Postfix parameter table, `$name` expansion) and the
//! command front ends in [`cli`].

pub mod auth;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod dns;
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
pub mod sys;
pub mod tls;
