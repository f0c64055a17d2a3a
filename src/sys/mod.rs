//! The operating system's libraries and calls that neither `std` nor `nix` covers.
//!
//! [`dl`]: libxcrypt and Linux-PAM loaded at run time by soname (no `-dev` package at build).

pub mod dl;
