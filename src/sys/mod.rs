//! The operating system's libraries and calls that neither `std` nor `nix` covers.
//!
//! [`dl`]: libxcrypt and Linux-PAM loaded at run time by soname (no `-dev` package at build).
//! [`child`]: work done in a forked child under the recipient's credentials.
//! [`wire`]: the encoding of what Postern's processes send each other.

pub mod child;
pub mod dl;
pub mod wire;
