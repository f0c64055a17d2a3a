//! The operating system's libraries and calls that neither `std` nor `nix` covers.
//!
//! [`dl`]: libxcrypt and Linux-PAM loaded at run time by soname (no `-dev` package at build).
//! [`detach`]: a daemon's fork that still tells the starting command how the start went.
//! [`fsid`]: a thread's filesystem uid/gid switched to a mail user's.
//! [`child`]: work done in a forked child under the recipient's credentials.
//! [`wire`]: the encoding of what Postern's processes send each other.

pub mod child;
pub mod detach;
pub mod dl;
pub mod fsid;
pub mod wire;
