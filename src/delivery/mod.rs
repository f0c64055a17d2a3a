//! The delivery agents, as in Postfix: local(8) ([`local`]), virtual(8)
//! ([`virtual_delivery`]) and smtp(8) ([`smtp`]). The queue manager hands each a message and
//! its recipients and gets one outcome per recipient back.

pub mod local;
pub mod smtp;
pub mod virtual_delivery;
