//! The delivery agents, as in Postfix: local(8) ([`local`]), virtual(8)
//! ([`virtual_delivery`]) and smtp(8) ([`smtp`]). The queue manager hands each a message and
//! its recipients and gets one [`Outcome`] per recipient back; the three share it, its
//! [`Status`] and the way local and virtual write a message ([`format_message`]).

pub mod local;
pub mod smtp;
pub mod virtual_delivery;

use std::io::Write;

use crate::queue::QueuedMessage;
use crate::sys::wire::{Dec, Enc, Wire};

/// The result of one delivery, as the log line reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Sent,
    Deferred,
    Bounced,
}

/// One final delivery (an alias may give several).
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The address delivered to (`to=<…>`).
    pub to: String,
    /// `orig_to=<…>` when it differs from `to`.
    pub orig_to: Option<String>,
    pub status: Status,
    pub dsn: String,
    /// The text in parentheses: `delivered to mailbox`, `unknown user: "x"`.
    pub text: String,
}

/// The message as local writes it: `From ` line (mbox only), `Return-Path:`,
/// `X-Original-To:`, `Delivered-To:`, the content (with `>From ` quoting for mbox), and an
/// empty line at the end (mbox only).
pub fn format_message(msg: &QueuedMessage, orig: &str, delivered_to: &str, mbox: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.content.len() + 256);
    let sender = if msg.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        msg.sender.as_str()
    };
    if mbox {
        let _ = writeln!(
            out,
            "From {sender}  {}",
            crate::sys::time::asctime(std::time::SystemTime::now())
        );
    }
    let _ = writeln!(out, "Return-Path: <{}>", msg.sender);
    let _ = writeln!(out, "X-Original-To: {orig}");
    let _ = writeln!(out, "Delivered-To: {delivered_to}");
    for line in msg.content.split_inclusive(|&b| b == b'\n') {
        if mbox && line.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    if mbox {
        out.push(b'\n');
    }
    out
}

impl Wire for Status {
    fn put(&self, e: &mut Enc) {
        e.str(match self {
            Status::Sent => "sent",
            Status::Deferred => "deferred",
            Status::Bounced => "bounced",
        });
    }
    fn get(d: &mut Dec<'_>) -> Option<Self> {
        Some(match d.string()?.as_str() {
            "sent" => Status::Sent,
            "deferred" => Status::Deferred,
            "bounced" => Status::Bounced,
            _ => return None,
        })
    }
}

impl Wire for Outcome {
    fn put(&self, e: &mut Enc) {
        e.str(&self.to)
            .str(self.orig_to.as_deref().unwrap_or(""))
            .str(if self.orig_to.is_some() { "1" } else { "0" });
        self.status.put(e);
        e.str(&self.dsn).str(&self.text);
    }
    fn get(d: &mut Dec<'_>) -> Option<Self> {
        let to = d.string()?;
        let orig = d.string()?;
        let has_orig = d.string()? == "1";
        Some(Outcome {
            to,
            orig_to: has_orig.then_some(orig),
            status: Status::get(d)?,
            dsn: d.string()?,
            text: d.string()?,
        })
    }
}
