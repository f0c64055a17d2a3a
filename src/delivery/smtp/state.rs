//! Per-delivery bookkeeping: which recipients are still open, the last error (Postfix's
//! `state->why`), and how each failure is judged (Postfix `smtp_trouble.c`): a soft error
//! at a server that is not the last one to try keeps the recipient for the next server
//! (logged as `QUEUEID: reason`); otherwise the recipient is deferred (4xx) or bounced
//! (5xx), with `soft_bounce = yes` turning bounces into deferrals.

use std::time::{Duration, Instant};

use crate::delivery::Status;
use crate::log;
use crate::queue::QueuedMessage;

use super::params::Params;
use super::reply::Reply;
use super::{RcptJob, RcptOutcome, SmtpSettings};

/// One failure as Postfix's DSN buffer holds it.
#[derive(Debug, Clone)]
pub struct Why {
    pub dsn: String,
    pub text: String,
    /// `Remote-MTA` (the server host name) when a server said it.
    pub mta: Option<String>,
    /// The server reply (`Diagnostic-Code: smtp; …`), one line.
    pub reply: Option<String>,
    /// `relay=`: `host[addr]:port` once connected, else `none`.
    pub relay: String,
}

impl Why {
    /// A failure found by this side (`DSN_BY_LOCAL_MTA`).
    pub fn local(dsn: &str, text: String, relay: &str) -> Why {
        Why {
            dsn: dsn.to_string(),
            text,
            mta: None,
            reply: None,
            relay: relay.to_string(),
        }
    }
    /// A failure a server replied.
    pub fn remote(mta: &str, reply: &Reply, text: String, relay: &str) -> Why {
        Why {
            dsn: reply.dsn.clone(),
            text,
            mta: Some(mta.to_string()),
            reply: Some(reply.one_line()),
            relay: relay.to_string(),
        }
    }
    pub fn is_soft(&self) -> bool {
        self.dsn.starts_with('4')
    }
}

pub struct State<'a> {
    pub s: &'a SmtpSettings,
    pub p: &'a Params,
    pub msg: &'a QueuedMessage,
    pub rcpts: &'a [RcptJob],
    pub out: Vec<Option<RcptOutcome>>,
    /// The latest error (used for recipients left over at the end).
    pub why: Option<Why>,
    /// This server is the last one to try: soft errors defer instead of moving on.
    pub final_server: bool,
    pub start: Instant,
    pub setup_done: Option<Instant>,
    /// The next-hop as the queue manager gave it (loop messages name it).
    pub nexthop: String,
    /// The connection cache key of this request ([`super::cache`]).
    pub cache_key: String,
    /// Look for a cached session before connecting.
    pub cache_load: bool,
    /// Keep good sessions in the cache (Postfix: the request's `DEL_REQ_FLAG_CONN_STORE`).
    pub cache_enabled: bool,
    /// Keep the next good session under the request's next-hop too (Postfix's request
    /// next-hop label, cleared after the first good session).
    pub cache_store: bool,
    /// The idle session [`super::cache::begin`] took for this request, until the address
    /// loop uses it; one left here goes back at [`super::cache::end`].
    pub cache_taken: Option<super::cache::Taken>,
    /// The session to store at [`super::cache::end`] (the request's first good one).
    pub cache_keep: Option<super::cache::Keep>,
    /// Later good sessions, stored at [`super::cache::end`] under their server's
    /// endpoint only.
    pub cache_keep_endp: Vec<super::cache::Keep>,
    /// The current session's reuse count (`conn_use=` is one more), 0 between sessions.
    pub reuse_count: u32,
}

impl<'a> State<'a> {
    pub fn new(
        s: &'a SmtpSettings,
        msg: &'a QueuedMessage,
        nexthop: &str,
        rcpts: &'a [RcptJob],
    ) -> State<'a> {
        State {
            s,
            p: &s.params,
            msg,
            rcpts,
            out: vec![None; rcpts.len()],
            why: None,
            final_server: false,
            start: Instant::now(),
            setup_done: None,
            nexthop: nexthop.to_string(),
            cache_key: String::new(),
            cache_load: false,
            cache_enabled: false,
            cache_store: false,
            cache_taken: None,
            cache_keep: None,
            cache_keep_endp: Vec::new(),
            reuse_count: 0,
        }
    }

    /// Recipients without a final result yet.
    pub fn left(&self) -> Vec<usize> {
        (0..self.out.len())
            .filter(|&i| self.out[i].is_none())
            .collect()
    }

    /// Record `why` as the latest error (`vsmtp_fill_dsn`: a server reply whose status is
    /// not 4.x.x/5.x.x is a protocol error, 5.5.0).
    pub fn fill(&mut self, mut why: Why) -> Why {
        if why.mta.is_some() && !why.dsn.starts_with('4') && !why.dsn.starts_with('5') {
            why.text = format!("Protocol error: {}", why.text);
            why.dsn = "5.5.0".into();
        }
        self.why = Some(why.clone());
        why
    }

    fn times(&self) -> (Duration, Duration) {
        let now = Instant::now();
        match self.setup_done {
            Some(t) => (t - self.start, now.saturating_duration_since(t)),
            None => (now - self.start, Duration::ZERO),
        }
    }

    fn finalize(&mut self, i: usize, why: &Why) {
        let (c, d) = self.times();
        let (status, dsn) = if why.dsn.starts_with('4') {
            (Status::Deferred, why.dsn.clone())
        } else if self.p.soft_bounce {
            (Status::Deferred, format!("4{}", &why.dsn[1..]))
        } else {
            (Status::Bounced, why.dsn.clone())
        };
        self.out[i] = Some(RcptOutcome {
            status,
            dsn,
            text: why.text.clone(),
            relay: why.relay.clone(),
            remote_mta: why.mta.clone(),
            diagnostic: why.reply.clone(),
            conn_setup: c,
            transmission: d,
            reuse_count: self.reuse_count,
        });
    }

    fn qualifies_for_backup(&self, why: &Why) -> bool {
        (why.is_soft() || self.p.soft_bounce) && !self.final_server
    }

    /// `smtp_rcpt_fail()`: one recipient.
    pub fn rcpt_fail(&mut self, i: usize, why: Why) {
        let why = self.fill(why);
        if self.out[i].is_some() {
            return;
        }
        if self.qualifies_for_backup(&why) {
            log::info(
                &self.s.ident,
                &format!("{}: {}", self.msg.queue_id, why.text),
            );
        } else {
            self.finalize(i, &why);
        }
    }

    /// `smtp_bulk_fail()`: every recipient in `which` still open.
    pub fn bulk_fail(&mut self, which: &[usize], why: Why) {
        let why = self.fill(why);
        if self.qualifies_for_backup(&why) {
            log::info(
                &self.s.ident,
                &format!("{}: {}", self.msg.queue_id, why.text),
            );
            return;
        }
        for &i in which {
            if self.out[i].is_none() {
                self.finalize(i, &why);
            }
        }
    }

    /// All open recipients.
    pub fn fail_all(&mut self, why: Why) {
        let left = self.left();
        self.bulk_fail(&left, why);
    }

    /// `smtp_rcpt_done()`: the server took the message for this recipient.
    pub fn rcpt_done(&mut self, i: usize, mta: &str, reply: &Reply, relay: &str) {
        let (c, d) = self.times();
        self.out[i] = Some(RcptOutcome {
            status: Status::Sent,
            dsn: reply.dsn.clone(),
            text: reply.one_line(),
            relay: relay.to_string(),
            remote_mta: Some(mta.to_string()),
            diagnostic: Some(reply.one_line()),
            conn_setup: c,
            transmission: d,
            reuse_count: self.reuse_count,
        });
    }

    /// Results in recipient order; anything still open gets the latest error (Postfix
    /// `smtp_connect()`'s final `smtp_sess_fail()`).
    pub fn finish(mut self) -> Vec<RcptOutcome> {
        if !self.left().is_empty() {
            self.final_server = true;
            // No session is open any more: Postfix logs these with relay=none.
            let mut why = self.why.clone().unwrap_or_else(|| {
                Why::local(
                    "4.3.0",
                    "server unavailable or unable to receive mail".into(),
                    "none",
                )
            });
            why.relay = "none".into();
            self.fail_all(why);
        }
        self.out
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| RcptOutcome {
                    status: Status::Deferred,
                    dsn: "4.3.0".into(),
                    text: "server unavailable or unable to receive mail".into(),
                    relay: "none".into(),
                    remote_mta: None,
                    diagnostic: None,
                    conn_setup: Duration::ZERO,
                    transmission: Duration::ZERO,
                    reuse_count: 0,
                })
            })
            .collect()
    }
}
