//! Postfix's trivial-rewrite(8) `resolve`: what class an address belongs to and which
//! delivery agent and next-hop it goes to ([`route`]). Below the services: smtpd, the queue
//! manager and the delivery agents ask here and not each other.

pub mod route;
