//! The configuration foundation: the admin's files as the real programs read them.
//!
//! * [`maincf`] — Postfix `main.cf` (pest grammar, continuation lines, the tutorial's
//!   column-0 wrapped restriction line).
//! * [`mastercf`] — Postfix `master.cf` (8 columns, `-o` overrides, `{ … }` grouping).
//! * [`sasl`] — Cyrus SASL application files (`smtpd.conf`) and Postfix's search path.
//! * [`dovecot`] — `dovecot.conf` of every era mapped onto one 2.x-shaped model.
//! * [`params`] — Postfix 3.7's parameter table (name, default, type) and host-derived
//!   defaults (`myhostname`, `mydomain`, `mynetworks`).
//! * [`expand`] — `$name` macro expansion with Postfix's rules.
//!
//! Parsing is separate from meaning: grammars produce ordered models that keep the file and
//! line of every setting; defaults, expansion and validation are applied on top.

pub mod dovecot;
pub mod error;
pub mod expand;
pub mod maincf;
pub mod mastercf;
pub mod params;
pub mod postfix;
pub mod sasl;
pub mod text;
pub mod values;

pub use error::ConfigError;
