//! One SMTP session (Postfix `smtpd.c`): the command loop, replies worded as Postfix 3.7
//! words them (see `compat-fixtures/smtpd/transcripts-postfix-3.7.11.txt`), PIPELINING
//! (replies are flushed only when no further pipelined command is waiting), STARTTLS,
//! AUTH PLAIN/LOGIN, DATA and BDAT with `message_size_limit`, error limits and timeouts,
//! and Postfix's log lines.
//!
//! The session does no client I/O of its own: it is a state machine that is fed what the
//! client sent ([`Session::received`], [`Session::input_ended`], [`Session::timed_out`],
//! [`Session::tls_result`]) and answers with the next [`Action`] for the connection task
//! to carry out ([`Session::next`]: send these bytes, sleep, read, start TLS, close).
//! [`drive`] is that task over any [`Transport`] (the client socket, a recorded script,
//! `sendmail -bs`'s standard input and output). What it still awaits itself are the
//! services behind it: DNS for the client name, the SASL backend and the queue.
//!
//! RFCs: 5321, 1869, 1870, 2920, 3030, 3207, 3461, 3463, 4954, 6152, 6531.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::address::{self, PathError};
use super::check::{Checker, Facts, Reply, Stage, Verdict};
use super::params::TlsLevel;
use super::sasl::{self, AuthResult};
use super::transport::{TlsFail, TlsUp, Transport};
use super::{ServiceState, SmtpdService};
use crate::log;
use crate::queue::{self, ClientInfo, Envelope, QueueId, Recipient};
use crate::resolve::rewrite::Resolved;

/// Why the session ended.
enum End {
    Quit,
    Lost,
    Timeout,
    TooManyErrors,
    Shutdown,
}

/// What the connection task is to do next (see [`Session::next`]).
pub enum Action {
    /// Write these bytes to the client; when that fails, give the stream up
    /// ([`Transport::close`]) and go on (the next read sees its end).
    Send(Vec<u8>),
    /// Wait this long (`smtpd_error_sleep_time`).
    Sleep(Duration),
    /// Read at most `max` bytes, waiting at most `timeout` (`smtpd_timeout`); hand them
    /// to [`Session::received`], the end of the input to [`Session::input_ended`], a
    /// timeout to [`Session::timed_out`].
    Read { max: usize, timeout: Duration },
    /// Start TLS as the server within `timeout` (`smtpd_starttls_timeout`); hand the
    /// outcome to [`Session::tls_result`].
    StartTls {
        cfg: Arc<rustls::ServerConfig>,
        timeout: Duration,
    },
    /// The session is over: close the connection.
    Close,
}

/// What the session is reading.
enum Mode {
    /// Command lines.
    Command,
    /// DATA's message lines up to `.`; past `message_size_limit` the rest is discarded.
    Data { msg: Vec<u8>, too_big: bool },
    /// A BDAT chunk of `left` more bytes, kept when `keep`; `err` is the reply for a
    /// refused command (the chunk is read anyway, to stay in sync).
    Bdat {
        left: usize,
        keep: bool,
        chunk: Vec<u8>,
        err: Option<&'static str>,
        last: bool,
    },
    /// An AUTH continuation line.
    Auth { mech: String, step: AuthStep },
    /// Waiting for the TLS handshake the connection task runs.
    Tls,
    /// Over.
    Done,
}

enum AuthStep {
    /// PLAIN's response after `334 `.
    Plain,
    /// LOGIN's user name after `334 VXNlcm5hbWU6`.
    LoginUser,
    /// LOGIN's password after `334 UGFzc3dvcmQ6`.
    LoginPass { user: String },
}

/// Counters for the `disconnect from …` line (Postfix's order).
const CMD_ORDER: &[&str] = &[
    "helo", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "bdat", "rset", "noop", "vrfy",
    "etrn", "quit", "unknown",
];

/// Where a stand-alone session (`sendmail -bs`, Postfix's `smtpd -S`) puts its messages:
/// into the maildrop, as Postfix's smtpd does through postdrop in that mode.
pub trait Maildrop: Send + Sync {
    /// The queue ID of the next message (logged with `client=` at its first recipient).
    fn new_queue_id(&self) -> QueueId;
    /// Forget an ID (the message was dropped under it, or never will be).
    fn release_queue_id(&self, id: &QueueId);
    /// Drop one message (lines ending in LF). `helo` and `esmtp` make its `Received:`
    /// header. The error is logged as the reason for `451 4.3.0`.
    fn drop_message(
        &self,
        id: &QueueId,
        sender: &str,
        recipients: &[String],
        content: &[u8],
        helo: &str,
        esmtp: bool,
    ) -> Result<(), String>;
}

/// The read size for lines (one socket read at a time).
const LINE_READ: usize = 8192;
/// The longest AUTH continuation line.
const AUTH_LINE_LIMIT: usize = 12288;
struct Transaction {
    sender: String,
    sender_raw: String,
    size_hint: Option<u64>,
    body_type: Option<String>,
    smtputf8: bool,
    ret: Option<String>,
    envid: Option<String>,
    recipients: Vec<Recipient>,
    /// RCPTs refused for `smtpd_recipient_limit` (Postfix's `rcpt_overshoot`).
    overshoot: usize,
    queue_id: Option<QueueId>,
    /// An access table said HOLD: the message goes to the hold queue.
    hold: bool,
    /// An access table said DISCARD: claim delivery, keep nothing.
    discard: bool,
    /// BDAT content so far.
    chunks: Option<Vec<u8>>,
    chunk_too_big: bool,
}

pub struct Session {
    svc: Arc<SmtpdService>,
    st: Arc<ServiceState>,
    /// The SASL backend of this session (for `smtpd_sasl_type = dovecot` connected per
    /// session, as Postfix does, to learn the mechanisms).
    auth: Option<Arc<dyn sasl::Authenticator>>,
    /// What the client sent and the session has not used yet.
    rbuf: Vec<u8>,
    /// The start of a line still missing its end (cut at the line's limit).
    partial: Vec<u8>,
    /// The line being read went past its limit: the rest of it is discarded.
    skipping: bool,
    /// Replies not yet sent (PIPELINING: sent when the session must wait for input).
    wbuf: Vec<u8>,
    /// Actions for the connection task, oldest first.
    out: VecDeque<Action>,
    mode: Mode,
    /// A command line is being read: the limits were checked before its first byte.
    in_command: bool,
    /// This client's place in the per-client connection count (released on drop).
    guard: Option<ClientGuard>,
    /// Stand-alone mode (`sendmail -bs`): where messages go. Postfix's smtpd evaluates no
    /// restriction then, counts no connection, and refuses ETRN.
    maildrop: Option<Arc<dyn Maildrop>>,
    peer: SocketAddr,
    client_name: String,
    reverse_name: String,
    namaddr: String,
    /// The last line read was longer than its limit (cut there, the rest skipped).
    line_too_long: bool,
    helo: Option<String>,
    esmtp: bool,
    tls_active: bool,
    /// A wrapper-mode (SMTPS) handshake is under way: the banner follows it.
    wrapper_handshake: bool,
    tls_info: Option<String>,
    sasl_method: Option<String>,
    sasl_username: Option<String>,
    tx: Option<Transaction>,
    error_count: u32,
    junk_count: u32,
    counts: Vec<(u32, u32)>,
    last_cmd: String,
    /// HOLD/DISCARD actions met by the last restriction evaluation.
    pending_actions: std::cell::RefCell<Vec<(&'static str, String)>>,
    /// Postfix keeps the `SIZE=` of a MAIL command it refused for size, and applies it to
    /// the next MAIL without `SIZE=` (its `state->msg_size` is not reset; observed with
    /// 3.7.11). Cleared by RSET, HELO/EHLO and an accepted MAIL.
    sticky_size: Option<u64>,
    /// The client sent commands ahead of time where RFC 2920 does not allow it (without
    /// EHLO, or after a command that must end a pipelined group): Postfix's
    /// `SMTPD_FLAG_ILL_PIPELINING`, for `reject_unauth_pipelining`.
    ill_pipelining: bool,
}

fn cmd_index(name: &str) -> usize {
    CMD_ORDER
        .iter()
        .position(|c| *c == name)
        .unwrap_or(CMD_ORDER.len() - 1)
}

/// The connection task: carries out a session's actions over `io` until the session
/// ends. Everything the session decides, it decides in [`Session`]; this only moves
/// bytes, keeps time and switches the stream to TLS.
pub async fn drive<T: Transport>(mut session: Session, mut io: T) {
    session.begin().await;
    loop {
        match session.next().await {
            Action::Send(b) => {
                if io.write_all(&b).await.is_err() {
                    io.close();
                }
            }
            Action::Sleep(d) => tokio::time::sleep(d).await,
            Action::Read { max, timeout } => {
                let mut buf = vec![0u8; max];
                match tokio::time::timeout(timeout, io.read(&mut buf)).await {
                    Err(_) => session.timed_out(),
                    Ok(Err(_)) | Ok(Ok(0)) => session.input_ended(),
                    Ok(Ok(n)) => session.received(&buf[..n]),
                }
            }
            Action::StartTls { cfg, timeout } => {
                let r = io.start_tls(cfg, timeout).await;
                session.tls_result(r);
            }
            Action::Close => break,
        }
    }
}

impl Session {
    pub fn new(svc: Arc<SmtpdService>, peer: SocketAddr, stressed: bool) -> Session {
        let st = if stressed {
            svc.stressed_state()
        } else {
            svc.state()
        };
        let auth = st.auth.clone();
        Session {
            svc,
            st,
            auth,
            rbuf: Vec::new(),
            partial: Vec::new(),
            skipping: false,
            wbuf: Vec::new(),
            out: VecDeque::new(),
            mode: Mode::Command,
            in_command: false,
            guard: None,
            maildrop: None,
            peer,
            client_name: "unknown".into(),
            reverse_name: "unknown".into(),
            namaddr: format!("unknown[{}]", peer.ip()),
            line_too_long: false,
            helo: None,
            esmtp: false,
            tls_active: false,
            wrapper_handshake: false,
            tls_info: None,
            sasl_method: None,
            sasl_username: None,
            tx: None,
            error_count: 0,
            junk_count: 0,
            counts: vec![(0, 0); CMD_ORDER.len()],
            last_cmd: "CONNECT".into(),
            sticky_size: None,
            pending_actions: Default::default(),
            ill_pipelining: false,
        }
    }

    /// A stand-alone session (`sendmail -bs`): the client is `localhost[127.0.0.1]`,
    /// messages go to `maildrop`.
    pub fn stand_alone(svc: Arc<SmtpdService>, maildrop: Arc<dyn Maildrop>) -> Session {
        let mut s = Session::new(svc, SocketAddr::from(([127, 0, 0, 1], 0)), false);
        s.maildrop = Some(maildrop);
        s.client_name = "localhost".into();
        s.reverse_name = "localhost".into();
        s.namaddr = "localhost[127.0.0.1]".into();
        s
    }

    fn ident(&self) -> &str {
        &self.st.params.syslog_ident
    }

    fn log(&self, text: &str) {
        log::info(self.ident(), text);
    }

    fn queue_tag(&self) -> String {
        self.tx
            .as_ref()
            .and_then(|t| t.queue_id.as_ref())
            .map(|q| q.to_string())
            .unwrap_or_else(|| "NOQUEUE".into())
    }

    /// Queue a reply; 4xx/5xx count as errors (Postfix sleeps after the soft limit, with
    /// the replies so far sent first).
    fn reply(&mut self, line: &str) {
        if line.starts_with('4') || line.starts_with('5') {
            self.error_count += 1;
            if self.error_count > self.st.params.soft_error_limit {
                self.flush();
                self.out
                    .push_back(Action::Sleep(self.st.params.error_sleep));
            }
        }
        self.wbuf.extend_from_slice(line.as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Queue a 4xx/5xx reply that Postfix does not count as an error (the command
    /// "succeeded"); it is still slowed down once the soft error limit is reached, as
    /// Postfix's `smtpd_chat_reply()` sleeps before any reply then.
    fn reply_not_error(&mut self, line: &str) {
        if self.error_count >= self.st.params.soft_error_limit {
            self.flush();
            self.out
                .push_back(Action::Sleep(self.st.params.error_sleep));
        }
        self.wbuf.extend_from_slice(line.as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Send the queued replies.
    fn flush(&mut self) {
        if !self.wbuf.is_empty() {
            let b = std::mem::take(&mut self.wbuf);
            self.out.push_back(Action::Send(b));
        }
    }

    /// Wait for more input: the replies so far go out first, which is what makes
    /// PIPELINING work.
    fn want_input(&mut self, max: usize) {
        self.flush();
        self.out.push_back(Action::Read {
            max,
            timeout: self.st.params.timeout,
        });
    }

    /// Bytes the client sent (an answer to [`Action::Read`]).
    pub fn received(&mut self, bytes: &[u8]) {
        self.rbuf.extend_from_slice(bytes);
    }

    /// The client closed the connection, or reading failed.
    pub fn input_ended(&mut self) {
        if !matches!(self.mode, Mode::Done) {
            self.end(End::Lost);
        }
    }

    /// Nothing came within `smtpd_timeout`.
    pub fn timed_out(&mut self) {
        if !matches!(self.mode, Mode::Done) {
            self.end(End::Timeout);
        }
    }

    /// The next thing for the connection task to do. Works through the input already
    /// received until it must wait for more.
    pub async fn next(&mut self) -> Action {
        loop {
            if let Some(a) = self.out.pop_front() {
                return a;
            }
            self.advance().await;
        }
    }

    /// Use the input received for one step of the current mode, or ask for more.
    async fn advance(&mut self) {
        match &mut self.mode {
            Mode::Done => self.out.push_back(Action::Close),
            // The connection task did not report the handshake: nothing more can come.
            Mode::Tls => self.end(End::Lost),
            Mode::Command => {
                if !self.in_command {
                    if self.error_count >= self.st.params.hard_error_limit {
                        return self.end(End::TooManyErrors);
                    }
                    if self.svc.shutting_down() {
                        return self.end(End::Shutdown);
                    }
                    self.in_command = true;
                }
                match self.take_line(self.st.params.line_length_limit) {
                    Some(raw) => {
                        self.in_command = false;
                        self.command(raw).await;
                    }
                    None => self.want_input(LINE_READ),
                }
            }
            // Lines in DATA are not cut: read up to the size limit, then discard.
            Mode::Data { .. } => match self.take_line(usize::MAX / 2) {
                Some(line) => self.data_line(line).await,
                None => self.want_input(LINE_READ),
            },
            Mode::Bdat {
                left, keep, chunk, ..
            } => {
                let take = (*left).min(self.rbuf.len());
                if *keep {
                    chunk.extend_from_slice(&self.rbuf[..take]);
                }
                self.rbuf.drain(..take);
                *left -= take;
                if *left == 0 {
                    self.bdat_chunk().await;
                } else {
                    let max = (*left).min(65536);
                    self.want_input(max);
                }
            }
            Mode::Auth { .. } => match self.take_line(AUTH_LINE_LIMIT) {
                Some(line) => self.auth_line(line).await,
                None => self.want_input(LINE_READ),
            },
        }
    }

    /// Take one line (without its CRLF/LF) from the input. Lines longer than `limit` are
    /// cut there and the rest of the line is discarded, as Postfix's `smtp_get(…,
    /// SMTP_GET_FLAG_SKIP)`; a line without its end yet is kept (up to `limit`) until
    /// more input comes.
    fn take_line(&mut self, limit: usize) -> Option<Vec<u8>> {
        if let Some(pos) = self.rbuf.iter().position(|&b| b == b'\n') {
            let chunk: Vec<u8> = self.rbuf.drain(..=pos).collect();
            let mut line = std::mem::take(&mut self.partial);
            let mut skipping = std::mem::take(&mut self.skipping);
            if !skipping {
                line.extend_from_slice(&chunk[..chunk.len() - 1]);
            }
            if line.len() > limit {
                line.truncate(limit);
                skipping = true;
            }
            self.line_too_long = skipping;
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Some(line);
        }
        if !self.skipping {
            self.partial.append(&mut self.rbuf);
            if self.partial.len() > limit {
                self.partial.truncate(limit);
                self.skipping = true;
            }
        } else {
            self.rbuf.clear();
        }
        None
    }

    fn count(&mut self, name: &str, ok: bool) {
        let i = cmd_index(name);
        self.counts[i].1 += 1;
        if ok {
            self.counts[i].0 += 1;
        }
    }

    fn disconnect_stats(&self) -> String {
        let mut s = String::new();
        let (mut ok, mut total) = (0, 0);
        for (i, (o, t)) in self.counts.iter().enumerate() {
            if *t == 0 {
                continue;
            }
            ok += o;
            total += t;
            if o == t {
                s.push_str(&format!(" {}={t}", CMD_ORDER[i]));
            } else {
                s.push_str(&format!(" {}={o}/{t}", CMD_ORDER[i]));
            }
        }
        if ok == total {
            s.push_str(&format!(" commands={total}"));
        } else {
            s.push_str(&format!(" commands={ok}/{total}"));
        }
        s
    }

    async fn lookup_client(&mut self) {
        if !self.st.params.peername_lookup {
            return;
        }
        let ip = self.peer.ip();
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::task::spawn_blocking(move || reverse_and_forward(ip)),
        )
        .await;
        if let Ok(Ok((rev, fwd_ok))) = res
            && let Some(name) = rev
        {
            self.reverse_name = name.clone();
            if fwd_ok {
                self.client_name = name;
            }
        }
        self.namaddr = format!("{}[{}]", self.client_name, self.peer.ip());
    }

    /// The start of the session: the client's name, the SASL backend, the connection
    /// count and the greeting.
    pub async fn begin(&mut self) {
        if self.maildrop.is_some() {
            self.log(&format!("connect from {}", self.namaddr));
            let banner = format!("220 {}", self.st.params.banner);
            self.reply(&banner);
            self.flush();
            return;
        }
        self.lookup_client().await;
        if let Some(path) = self.st.dovecot_auth_socket.clone() {
            match crate::auth::dovecot_proto::dovecot_authenticator(&path).await {
                Ok(a) => self.auth = Some(Arc::new(a)),
                Err(e) => log::warning(
                    self.ident(),
                    &format!(
                        "SASL: Connect to {} failed: {}",
                        path.display(),
                        crate::config::error::strerror(&e)
                    ),
                ),
            }
        }
        self.log(&format!("connect from {}", self.namaddr));
        // Per-client concurrency (anvil): clients in smtpd_client_event_limit_exceptions
        // (default $mynetworks) are exempt.
        let ip = self.peer.ip();
        let limit = self.st.params.client_connection_count_limit;
        // A pattern or table of the list that fails exempts no one (Postfix: no match),
        // its warnings logged under the list's name.
        let exempt = {
            let p = &self.st.params;
            let mut c = Checker::new(p, &self.st.tables, "");
            let m = c.match_addr_list(
                "smtpd_client_event_limit_exceptions",
                &p.client_event_limit_exceptions,
                ip,
            );
            self.log_warnings(&c.warnings);
            m.unwrap_or(false)
        };
        let count = self.svc.client_connect(ip);
        self.guard = Some(ClientGuard {
            svc: self.svc.clone(),
            ip,
        });
        if limit > 0 && count > limit && !exempt {
            self.log(&format!(
                "warning: Connection concurrency limit exceeded: {count} from {} for service {}",
                self.namaddr, self.svc.name
            ));
            let line = format!(
                "421 4.7.0 {} Error: too many connections from {}",
                self.st.params.myhostname, ip
            );
            self.reply(&line);
            self.flush();
            self.log(&format!(
                "disconnect from {}{}",
                self.namaddr,
                self.disconnect_stats()
            ));
            self.mode = Mode::Done;
            return;
        }
        // smtpd_tls_wrappermode (SMTPS): the handshake before the greeting, as Postfix's
        // smtpd_proto() starts it after the connection checks; the banner follows in
        // tls_result. Without a usable certificate, Postfix's warning and goodbye.
        if self.st.params.tls_wrappermode && !self.tls_active {
            let Some(cfg) = self.st.tls.clone() else {
                self.log(&format!(
                    "warning: Wrapper-mode request dropped from {} for service {}. TLS context \
                     initialization failed. For details see earlier warnings in your logs.",
                    self.namaddr, self.svc.name
                ));
                self.log(&format!(
                    "disconnect from {}{}",
                    self.namaddr,
                    self.disconnect_stats()
                ));
                self.mode = Mode::Done;
                return;
            };
            self.wrapper_handshake = true;
            self.out.push_back(Action::StartTls {
                cfg,
                timeout: self.st.params.starttls_timeout,
            });
            self.mode = Mode::Tls;
            return;
        }
        self.greet();
    }

    /// The `220` banner.
    fn greet(&mut self) {
        let banner = format!("220 {}", self.st.params.banner);
        self.reply(&banner);
        // Input that arrives before the greeting is "pipelining" too (RFC 2920 §3.1).
        self.flush();
    }

    /// The end of the session: the last reply and the log lines.
    fn end(&mut self, end: End) {
        match end {
            End::Quit | End::Shutdown => {}
            End::Lost => self.log(&format!(
                "lost connection after {} from {}",
                self.last_cmd, self.namaddr
            )),
            End::Timeout => {
                let line = format!(
                    "421 4.4.2 {} Error: timeout exceeded",
                    self.st.params.myhostname
                );
                self.wbuf.extend_from_slice(line.as_bytes());
                self.wbuf.extend_from_slice(b"\r\n");
                self.flush();
                self.log(&format!(
                    "timeout after {} from {}",
                    self.last_cmd, self.namaddr
                ));
            }
            End::TooManyErrors => {
                let line = format!(
                    "421 4.7.0 {} Error: too many errors",
                    self.st.params.myhostname
                );
                self.wbuf.extend_from_slice(line.as_bytes());
                self.wbuf.extend_from_slice(b"\r\n");
                self.flush();
                self.log(&format!(
                    "too many errors after {} from {}",
                    self.last_cmd, self.namaddr
                ));
            }
        }
        self.flush();
        self.abandon_tx();
        self.log(&format!(
            "disconnect from {}{}",
            self.namaddr,
            self.disconnect_stats()
        ));
        self.mode = Mode::Done;
    }

    fn abandon_tx(&mut self) {
        if let Some(id) = self.tx.take().and_then(|t| t.queue_id) {
            if let Some(m) = &self.maildrop {
                m.release_queue_id(&id);
            } else if let Some(q) = &self.svc.queue {
                q.release_queue_id(&id);
            }
        }
    }

    /// A queue ID for the transaction's message, from the queue or the maildrop.
    fn new_queue_id(&self) -> Option<QueueId> {
        match (&self.maildrop, &self.svc.queue) {
            (Some(m), _) => Some(m.new_queue_id()),
            (None, Some(q)) => Some(q.new_queue_id()),
            (None, None) => None,
        }
    }

    /// One command line.
    async fn command(&mut self, raw: Vec<u8>) {
        if self.line_too_long {
            // Postfix's smtpd_chat_query(): the first 30 bytes, made printable.
            let head: String = raw
                .iter()
                .take(30)
                .map(|&b| {
                    if b == b' ' || b.is_ascii_graphic() {
                        b as char
                    } else {
                        '?'
                    }
                })
                .collect();
            log::warning(
                self.ident(),
                &format!(
                    "{}: request longer than {}: {head}...",
                    self.namaddr, self.st.params.line_length_limit
                ),
            );
        }
        let line = String::from_utf8_lossy(&raw).to_string();
        let (verb, arg) = match line.trim_start().split_once([' ', '\t']) {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
            None => (line.trim().to_ascii_uppercase(), String::new()),
        };
        // Fault injection for tests ($POSTERN_TEST_PANIC=VERB, set by whoever starts
        // the master): the panic must reach the mail log and end only this session.
        if test_panic_verb() == Some(verb.as_str()) {
            panic!("{TEST_PANIC_ENV}: fault injected at {verb}");
        }
        self.last_cmd = if verb.is_empty() {
            "CONNECT".into()
        } else {
            verb.clone()
        };
        // RFC 2920: without EHLO nothing may be pipelined; these commands end a group.
        const LAST: &[&str] = &[
            "HELO", "EHLO", "STARTTLS", "AUTH", "DATA", "NOOP", "VRFY", "ETRN", "QUIT",
        ];
        if !self.ill_pipelining
            && self.maildrop.is_none()
            && !self.rbuf.is_empty()
            && (!self.esmtp || LAST.contains(&verb.as_str()))
        {
            self.ill_pipelining = true;
            let pending: String = self
                .rbuf
                .iter()
                .take(100)
                .map(|&b| match b {
                    b'\r' => "\\r".to_string(),
                    b'\n' => "\\n".to_string(),
                    32..=126 => (b as char).to_string(),
                    _ => "?".to_string(),
                })
                .collect();
            self.log(&format!(
                "improper command pipelining after {verb} from {}: {pending}",
                self.namaddr
            ));
        }
        // smtpd_tls_security_level = encrypt: only a few commands before STARTTLS.
        if self.st.params.tls_level == TlsLevel::Encrypt
            && !self.tls_active
            && !matches!(
                verb.as_str(),
                "EHLO" | "HELO" | "STARTTLS" | "NOOP" | "QUIT" | "RSET"
            )
        {
            if CMD_ORDER.contains(&verb.to_ascii_lowercase().as_str()) {
                self.count(&verb.to_ascii_lowercase(), false);
            } else {
                self.count("unknown", false);
            }
            self.reply("530 5.7.0 Must issue a STARTTLS command first");
            return;
        }
        match verb.as_str() {
            "HELO" => self.cmd_helo(&arg, false).await,
            "EHLO" => self.cmd_helo(&arg, true).await,
            "MAIL" => self.cmd_mail(&arg).await,
            "RCPT" => self.cmd_rcpt(&arg).await,
            "DATA" => self.cmd_data(&arg).await,
            "BDAT" => self.cmd_bdat(&arg).await,
            "RSET" => {
                if !arg.is_empty() {
                    self.count("rset", false);
                    self.reply("501 5.5.4 Syntax: RSET");
                } else {
                    self.count("rset", true);
                    self.sticky_size = None;
                    self.abandon_tx();
                    self.reply("250 2.0.0 Ok");
                }
            }
            "NOOP" => {
                self.count("noop", true);
                self.junk();
                self.reply("250 2.0.0 Ok");
            }
            "VRFY" => self.cmd_vrfy(&arg).await,
            "ETRN" => self.cmd_etrn(&arg).await,
            "STARTTLS" => self.cmd_starttls(&arg),
            "AUTH" => self.cmd_auth(&arg).await,
            "QUIT" => {
                self.count("quit", true);
                self.reply("221 2.0.0 Bye");
                self.flush();
                self.end(End::Quit);
            }
            _ => {
                self.count("unknown", false);
                if verb.is_empty() {
                    self.reply("500 5.5.2 Error: bad syntax");
                } else {
                    self.reply("500 5.5.2 Error: command not recognized");
                }
            }
        }
    }

    fn junk(&mut self) {
        self.junk_count += 1;
        if self.junk_count > self.st.params.junk_command_limit {
            self.error_count += 1;
            if self.error_count > self.st.params.soft_error_limit {
                self.out
                    .push_back(Action::Sleep(self.st.params.error_sleep));
            }
        }
    }

    fn facts<'b>(&'b self, recipient: Option<&'b str>, etrn: Option<&'b str>) -> Facts<'b> {
        Facts {
            client_addr: self.peer.ip(),
            namaddr: &self.namaddr,
            client_name: &self.client_name,
            reverse_name: &self.reverse_name,
            helo: self.helo.as_deref(),
            sender: self.tx.as_ref().map(|t| t.sender_raw.as_str()),
            recipient,
            etrn_domain: etrn,
            sasl_username: self.sasl_username.as_deref(),
            ill_pipelining: self.ill_pipelining,
            tls_active: self.tls_active,
            rcpt_count: self.tx.as_ref().map(|t| t.recipients.len()).unwrap_or(0),
        }
    }

    /// Log a checker's warnings; an entry that starts with `error: ` (a table that could not
    /// be opened) at error level.
    /// Postfix `extract_addr()`'s warning for a MAIL FROM/RCPT TO argument with more than
    /// one address, the token as the client sent it (`printable()`: control characters
    /// as `?`).
    fn illegal_address(&self, token: &str, command: &str) {
        let token: String = token
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        log::warning(
            self.ident(),
            &format!(
                "Illegal address syntax from {} in {command} command: {token}",
                self.namaddr
            ),
        );
    }

    fn log_warnings(&self, warnings: &[String]) {
        for w in warnings {
            match w.strip_prefix("error: ") {
                Some(e) => log::error(self.ident(), e),
                None => log::warning(self.ident(), w),
            }
        }
    }

    /// Log `ID: reject: CMD from namaddr: REPLY; from=<…> to=<…> proto=… helo=<…>`, the
    /// addresses in their logged form ([`address::log_form`]).
    fn log_reject(&self, cmd: &str, reply: &str, to: Option<&str>) {
        self.log_action("reject", cmd, reply, to);
    }

    /// `ID: ACTION: CMD from namaddr: TEXT; from=<…> to=<…> proto=… helo=<…>` (reject, hold,
    /// discard).
    fn log_action(&self, action: &str, cmd: &str, reply: &str, to: Option<&str>) {
        let mut s = format!(
            "{}: {action}: {cmd} from {}: {reply};",
            self.queue_tag(),
            self.namaddr
        );
        if let Some(t) = &self.tx {
            s.push_str(&format!(" from=<{}>", address::log_form(&t.sender_raw)));
        }
        if let Some(to) = to {
            s.push_str(&format!(" to=<{}>", address::log_form(to)));
        }
        s.push_str(&format!(
            " proto={}",
            if self.esmtp { "ESMTP" } else { "SMTP" }
        ));
        if let Some(h) = &self.helo {
            s.push_str(&format!(" helo=<{h}>"));
        }
        self.log(&s);
    }

    /// Evaluate restriction stages in Postfix's order; `None` when all pass. `resolved`:
    /// the recipient as trivial-rewrite resolved it already in this command (the checks
    /// answer from it instead of resolving it again).
    fn run_checks(
        &self,
        stages: &[Stage],
        recipient: Option<&str>,
        etrn: Option<&str>,
        resolved: Option<Resolved>,
    ) -> (Option<Reply>, Vec<String>) {
        // Stand-alone (smtpd.c's SMTPD_STAND_ALONE): no smtpd_check_* at all.
        if self.maildrop.is_some() {
            self.pending_actions.borrow_mut().clear();
            return (None, Vec::new());
        }
        let p = &self.st.params;
        let mut c = Checker::new(p, &self.st.tables, self.ident());
        if let (Some(r), Some(known)) = (recipient, resolved) {
            c.remember_resolved(r, known);
        }
        let f = self.facts(recipient, etrn);
        let mut result = None;
        for stage in stages {
            let lists: Vec<&Vec<String>> = match stage {
                Stage::Client => vec![&p.client_restrictions],
                Stage::Helo => vec![&p.helo_restrictions],
                Stage::Sender => vec![&p.sender_restrictions],
                Stage::Recipient => {
                    if p.relay_before_recipient {
                        vec![&p.relay_restrictions, &p.recipient_restrictions]
                    } else {
                        vec![&p.recipient_restrictions, &p.relay_restrictions]
                    }
                }
                Stage::Data => vec![&p.data_restrictions],
                Stage::EndOfData => vec![&p.end_of_data_restrictions],
                Stage::Etrn => vec![&p.etrn_restrictions],
            };
            for (i, list) in lists.iter().enumerate() {
                if let Verdict::Reject(r) = c.eval_list(list, *stage, &f) {
                    if *stage == Stage::Recipient && i == 0 && p.relay_before_recipient_compat {
                        log::info(
                            self.ident(),
                            &format!(
                                "using backwards-compatible default setting smtpd_relay_before_recipient_restrictions=no to reject recipient \"{}\" from client \"{}\"",
                                recipient.unwrap_or(""),
                                self.namaddr
                            ),
                        );
                    }
                    result = Some(r);
                    break;
                }
            }
            if result.is_some() {
                break;
            }
        }
        // A temporary DNS failure under `*_tempfail_action = defer_if_permit` defers what
        // the restrictions would have permitted (Postfix's defer_if_permit).
        if result.is_none() {
            result = c.take_defer_if_permit();
        }
        // The implicit reject_unlisted_recipient after the restrictions permitted.
        if result.is_none()
            && let Some(r) = recipient
            && p.reject_unlisted_recipient
            && let Some(Verdict::Reject(rep)) = c.unlisted_recipient(r, &f)
        {
            result = Some(rep);
        }
        if result.is_none() {
            self.pending_actions.borrow_mut().extend(c.actions);
        } else {
            self.pending_actions.borrow_mut().clear();
        }
        (result, c.warnings)
    }

    async fn cmd_helo(&mut self, arg: &str, ehlo: bool) {
        let name = if ehlo { "ehlo" } else { "helo" };
        if arg.is_empty() {
            self.count(name, false);
            self.reply(if ehlo {
                "501 Syntax: EHLO hostname"
            } else {
                "501 Syntax: HELO hostname"
            });
            return;
        }
        let helo = arg.split_whitespace().next().unwrap_or(arg).to_string();
        // HELO/EHLO resets the transaction (RFC 5321 §4.1.4).
        self.abandon_tx();
        self.sticky_size = None;
        self.helo = Some(helo);
        self.esmtp = ehlo;
        if !self.st.params.delay_reject {
            let (r, w) = self.run_checks(&[Stage::Client, Stage::Helo], None, None, None);
            self.log_warnings(&w);
            if let Some(r) = r {
                self.count(name, false);
                let line = r.line();
                self.log_reject(if ehlo { "EHLO" } else { "HELO" }, &line, None);
                self.reply(&line);
                return;
            }
        }
        self.count(name, true);
        let host = self.st.params.myhostname.clone();
        if !ehlo {
            self.reply(&format!("250 {host}"));
            return;
        }
        let mut lines = vec![host];
        for kw in self.ehlo_keywords() {
            lines.push(kw);
        }
        let n = lines.len();
        for (i, l) in lines.into_iter().enumerate() {
            let sep = if i + 1 == n { ' ' } else { '-' };
            self.wbuf
                .extend_from_slice(format!("250{sep}{l}\r\n").as_bytes());
        }
    }

    /// The mechanisms to offer now (mech_list order, filtered by the security options).
    fn offered_mechanisms(&self) -> Vec<String> {
        let p = &self.st.params;
        let Some(auth) = self.auth.as_ref() else {
            return Vec::new();
        };
        if !p.sasl_auth_enable || (p.tls_auth_only && !self.tls_active) {
            return Vec::new();
        }
        let opts = if self.tls_active {
            &p.sasl_tls_security_options
        } else {
            &p.sasl_security_options
        };
        auth.mechanisms()
            .into_iter()
            .filter(|m| {
                // Cyrus's filter: PLAIN and LOGIN carry only the NOANONYMOUS and
                // PASS_CREDENTIALS properties, so any of noplaintext, noactive,
                // nodictionary and mutual_auth excludes them.
                let plaintext = m == "PLAIN" || m == "LOGIN";
                let excluded = ["noplaintext", "noactive", "nodictionary", "mutual_auth"];
                let hide_plain = plaintext && opts.iter().any(|o| excluded.contains(&o.as_str()));
                let hide_anon = m == "ANONYMOUS" && opts.iter().any(|o| o == "noanonymous");
                !hide_plain && !hide_anon
            })
            .collect()
    }

    fn ehlo_keywords(&self) -> Vec<String> {
        let p = &self.st.params;
        let mut kws: Vec<String> = vec!["PIPELINING".into()];
        kws.push(if p.message_size_limit > 0 {
            format!("SIZE {}", p.message_size_limit)
        } else {
            "SIZE".into()
        });
        if !p.disable_vrfy {
            kws.push("VRFY".into());
        }
        kws.push("ETRN".into());
        if self.st.tls.is_some() && !self.tls_active && p.tls_level != TlsLevel::None {
            kws.push("STARTTLS".into());
        }
        let mechs = self.offered_mechanisms();
        if !mechs.is_empty() {
            kws.push(format!("AUTH {}", mechs.join(" ")));
            if p.broken_sasl_auth_clients {
                kws.push(format!("AUTH={}", mechs.join(" ")));
            }
        }
        kws.push("ENHANCEDSTATUSCODES".into());
        kws.push("8BITMIME".into());
        kws.push("DSN".into());
        if p.smtputf8_enable {
            kws.push("SMTPUTF8".into());
        }
        kws.push("CHUNKING".into());
        kws.retain(|k| {
            let first = k
                .split([' ', '='])
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            let full = if k.starts_with("AUTH=") {
                "AUTH".to_string()
            } else {
                first
            };
            !p.discard_ehlo_keywords.contains(&full)
        });
        kws
    }

    async fn cmd_mail(&mut self, arg: &str) {
        let p = self.st.params.clone();
        if p.helo_required && self.helo.is_none() {
            self.count("mail", false);
            self.reply("503 5.5.1 Error: send HELO/EHLO first");
            return;
        }
        if self.tx.is_some() {
            self.count("mail", false);
            self.reply("503 5.5.1 Error: nested MAIL command");
            return;
        }
        let path = match address::parse_path(arg, "FROM:", p.strict_rfc821_envelopes) {
            Ok(pa) => pa,
            Err(PathError::Syntax) => {
                self.count("mail", false);
                self.reply("501 5.5.4 Syntax: MAIL FROM:<address>");
                return;
            }
            Err(e) => {
                if let PathError::Illegal(token) = e {
                    self.illegal_address(&token, "MAIL");
                }
                self.count("mail", false);
                self.reply("501 5.1.7 Bad sender address syntax");
                return;
            }
        };
        let mut t = Transaction {
            sender: address::qualify(&path.address, &p.addresses),
            sender_raw: path.address.clone(),
            size_hint: None,
            body_type: None,
            smtputf8: false,
            ret: None,
            envid: None,
            recipients: Vec::new(),
            overshoot: 0,
            queue_id: None,
            hold: false,
            discard: false,
            chunks: None,
            chunk_too_big: false,
        };
        for (k, v) in &path.params {
            let ku = k.to_ascii_uppercase();
            let bad = |s: &str| format!("555 5.5.4 Unsupported option: {s}");
            let whole = match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            };
            match (ku.as_str(), v.as_deref()) {
                ("SIZE", Some(v)) => match v.parse::<u64>() {
                    Ok(n) => t.size_hint = Some(n),
                    Err(_) => {
                        self.count("mail", false);
                        self.reply("501 5.5.4 Bad message size syntax");
                        return;
                    }
                },
                ("BODY", Some(v))
                    if v.eq_ignore_ascii_case("8BITMIME") || v.eq_ignore_ascii_case("7BIT") =>
                {
                    t.body_type = Some(v.to_ascii_uppercase())
                }
                ("SMTPUTF8", None) if p.smtputf8_enable => t.smtputf8 = true,
                ("RET", Some(v))
                    if v.eq_ignore_ascii_case("FULL") || v.eq_ignore_ascii_case("HDRS") =>
                {
                    t.ret = Some(v.to_ascii_uppercase())
                }
                ("ENVID", Some(v)) => t.envid = Some(xtext_decode(v)),
                ("AUTH", Some(_)) => {}
                _ => {
                    self.count("mail", false);
                    self.reply(&bad(&whole));
                    return;
                }
            }
        }
        let checked_size = t.size_hint.or(self.sticky_size);
        if let Some(n) = checked_size
            && p.message_size_limit > 0
            && n > p.message_size_limit
        {
            self.sticky_size = Some(n);
            self.count("mail", false);
            let line = "552 5.3.4 Message size exceeds fixed limit";
            self.log(&format!(
                "NOQUEUE: reject: MAIL from {}: {line}; from=<{}> proto={}{}",
                self.namaddr,
                address::log_form(&path.address),
                if self.esmtp { "ESMTP" } else { "SMTP" },
                self.helo
                    .as_ref()
                    .map(|h| format!(" helo=<{h}>"))
                    .unwrap_or_default()
            ));
            self.reply(line);
            return;
        }
        // Postfix's smtpd_check_queue(): refuse the transaction while the queue file system
        // has less than queue_minfree, or not 1.5 times message_size_limit, free.
        if let Some(free) = self.svc.queue.as_ref().and_then(|q| q.free_bytes())
            && (p.queue_minfree > free
                || (p.message_size_limit > 0 && p.message_size_limit as f64 >= free as f64 / 1.5))
        {
            self.count("mail", false);
            let line = "452 4.3.1 Insufficient system storage";
            self.log(&format!(
                "NOQUEUE: reject: MAIL from {}: {line}; from=<{}> proto={}{}",
                self.namaddr,
                address::log_form(&path.address),
                if self.esmtp { "ESMTP" } else { "SMTP" },
                self.helo
                    .as_ref()
                    .map(|h| format!(" helo=<{h}>"))
                    .unwrap_or_default()
            ));
            log::warning(
                self.ident(),
                &format!(
                    "not enough free space in mail queue: {free} bytes < 1.5*message size limit"
                ),
            );
            self.reply(line);
            return;
        }
        if !p.delay_reject {
            self.tx = Some(t);
            let (r, w) = self.run_checks(
                &[Stage::Client, Stage::Helo, Stage::Sender],
                None,
                None,
                None,
            );
            self.log_warnings(&w);
            if let Some(r) = r {
                let line = r.line();
                self.log_reject("MAIL", &line, None);
                self.tx = None;
                self.count("mail", false);
                self.reply(&line);
                return;
            }
        } else {
            self.tx = Some(t);
        }
        self.sticky_size = None;
        self.count("mail", true);
        self.reply("250 2.1.0 Ok");
    }

    async fn cmd_rcpt(&mut self, arg: &str) {
        let p = self.st.params.clone();
        if self.tx.is_none() {
            self.count("rcpt", false);
            self.reply("503 5.5.1 Error: need MAIL command");
            return;
        }
        let path = match address::parse_path(arg, "TO:", p.strict_rfc821_envelopes) {
            Ok(pa) => pa,
            Err(PathError::Syntax) => {
                self.count("rcpt", false);
                self.reply("501 5.5.4 Syntax: RCPT TO:<address>");
                return;
            }
            Err(e) => {
                if let PathError::Illegal(token) = e {
                    self.illegal_address(&token, "RCPT");
                }
                self.count("rcpt", false);
                self.reply("501 5.1.3 Bad recipient address syntax");
                return;
            }
        };
        let mut resolve_warnings = Vec::new();
        let resolved = p
            .addresses
            .resolve(&path.address, &mut resolve_warnings)
            .ok();
        self.log_warnings(&resolve_warnings);
        if path.address.is_empty() || !rcpt_domain_ok(resolved.as_ref()) {
            self.count("rcpt", false);
            self.reply("501 5.1.3 Bad recipient address syntax");
            return;
        }
        let mut rcpt = Recipient {
            address: address::qualify(&path.address, &p.addresses),
            orcpt: None,
            notify: None,
        };
        for (k, v) in &path.params {
            let ku = k.to_ascii_uppercase();
            let whole = match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            };
            match (ku.as_str(), v.as_deref()) {
                ("NOTIFY", Some(v)) => rcpt.notify = Some(v.to_ascii_uppercase()),
                ("ORCPT", Some(v)) => rcpt.orcpt = Some(xtext_decode(v)),
                _ => {
                    self.count("rcpt", false);
                    self.reply(&format!("555 5.5.4 Unsupported option: {whole}"));
                    return;
                }
            }
        }
        let n = self.tx.as_ref().map(|t| t.recipients.len()).unwrap_or(0);
        if n >= p.recipient_limit {
            // Postfix's smtpd.c: up to smtpd_recipient_overshoot_limit such RCPTs are not
            // errors; past it each counts, and smtpd_hard_error_limit ends the session
            // (421 4.7.0 … Error: too many errors).
            self.count("rcpt", false);
            let over = self.tx.as_mut().map_or(usize::MAX, |t| {
                t.overshoot += 1;
                t.overshoot - 1
            });
            if over < p.recipient_overshoot_limit {
                self.reply_not_error("452 4.5.3 Error: too many recipients");
            } else {
                self.reply("452 4.5.3 Error: too many recipients");
            }
            return;
        }
        let stages: &[Stage] = if p.delay_reject {
            &[Stage::Client, Stage::Helo, Stage::Sender, Stage::Recipient]
        } else {
            &[Stage::Recipient]
        };
        let (r, w) = self.run_checks(stages, Some(&path.address), None, resolved);
        self.log_warnings(&w);
        if let Some(r) = r {
            let line = r.line();
            self.log_reject("RCPT", &line, Some(&path.address));
            self.count("rcpt", false);
            self.reply(&line);
            return;
        }
        // The queue file (and its ID) is opened at the first accepted recipient.
        if self.tx.as_ref().is_some_and(|t| t.queue_id.is_none())
            && let Some(id) = self.new_queue_id()
        {
            let mut line = format!("{id}: client={}", self.namaddr);
            if let (Some(m), Some(u)) = (&self.sasl_method, &self.sasl_username) {
                line.push_str(&format!(", sasl_method={m}, sasl_username={u}"));
            }
            self.log(&line);
            if let Some(t) = self.tx.as_mut() {
                t.queue_id = Some(id);
            }
        }
        let actions: Vec<(&'static str, String)> =
            self.pending_actions.borrow_mut().drain(..).collect();
        for (kind, text) in actions {
            self.log_action(kind, "RCPT", &text, Some(&path.address));
            if let Some(t) = self.tx.as_mut() {
                match kind {
                    "hold" => t.hold = true,
                    _ => t.discard = true,
                }
            }
        }
        if let Some(t) = self.tx.as_mut() {
            t.recipients.push(rcpt);
        }
        self.count("rcpt", true);
        self.reply("250 2.1.5 Ok");
    }

    async fn cmd_vrfy(&mut self, arg: &str) {
        let p = self.st.params.clone();
        if p.disable_vrfy {
            self.count("vrfy", false);
            self.reply("502 5.5.1 VRFY command is disabled");
            return;
        }
        self.junk();
        if arg.is_empty() {
            self.count("vrfy", false);
            self.reply("501 5.5.4 Syntax: VRFY address");
            return;
        }
        let addr = arg
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string();
        if addr.is_empty() {
            self.count("vrfy", false);
            self.reply("501 5.1.3 Bad recipient address syntax");
            return;
        }
        let mut c = Checker::new(&p, &self.st.tables, "");
        let f = self.facts(Some(&addr), None);
        let verdict = if p.reject_unlisted_recipient && self.maildrop.is_none() {
            c.unlisted_recipient(&addr, &f)
        } else {
            None
        };
        self.log_warnings(&c.warnings);
        if let Some(Verdict::Reject(r)) = verdict {
            self.count("vrfy", false);
            let line = r.line();
            self.log_reject("VRFY", &line, Some(&addr));
            self.reply(&line);
            return;
        }
        self.count("vrfy", true);
        self.reply(&format!("252 2.0.0 {}", arg.trim()));
    }

    async fn cmd_etrn(&mut self, arg: &str) {
        if self.helo.is_none() && self.st.params.helo_required {
            self.count("etrn", false);
            self.reply("503 Error: send HELO/EHLO first");
            return;
        }
        if arg.is_empty() {
            self.count("etrn", false);
            self.reply("500 Syntax: ETRN domain");
            return;
        }
        if self.tx.is_some() {
            self.count("etrn", false);
            self.reply("503 Error: MAIL transaction in progress");
            return;
        }
        if self.maildrop.is_some() {
            log::warning(self.ident(), "do not use ETRN in \"sendmail -bs\" mode");
            self.count("etrn", false);
            self.reply("458 Unable to queue messages");
            return;
        }
        let dom = arg.trim_start_matches(['@', '#']).to_string();
        let (r, w) = self.run_checks(&[Stage::Etrn], None, Some(&dom), None);
        self.log_warnings(&w);
        if let Some(r) = r {
            self.count("etrn", false);
            self.reply(&r.line());
            return;
        }
        // fast_flush_domains is not served by this version: no domain is eligible.
        let shown: String = arg.chars().take(100).collect();
        log::warning(
            self.ident(),
            &format!("reject: ETRN {shown}... from {}", self.namaddr),
        );
        self.count("etrn", false);
        self.reply(&format!("459 <{dom}>: service unavailable"));
    }

    fn cmd_starttls(&mut self, arg: &str) {
        if !arg.is_empty() {
            self.count("starttls", false);
            self.reply("501 5.5.4 Syntax: STARTTLS");
            return;
        }
        if self.tls_active {
            self.count("starttls", false);
            self.reply("554 5.5.1 Error: TLS already active");
            return;
        }
        let Some(cfg) = self
            .st
            .tls
            .clone()
            .filter(|_| self.st.params.tls_level != TlsLevel::None)
        else {
            self.count("starttls", false);
            self.reply("502 5.5.1 Error: command not implemented");
            return;
        };
        self.count("starttls", true);
        self.reply("220 2.0.0 Ready to start TLS");
        self.flush();
        // Discard anything pipelined after STARTTLS (CVE-2011-0411).
        self.rbuf.clear();
        self.out.push_back(Action::StartTls {
            cfg,
            timeout: self.st.params.starttls_timeout,
        });
        self.mode = Mode::Tls;
    }

    /// How the TLS handshake of [`Action::StartTls`] went.
    pub fn tls_result(&mut self, r: Result<TlsUp, TlsFail>) {
        if !matches!(self.mode, Mode::Tls) {
            return;
        }
        self.mode = Mode::Command;
        match r {
            Ok(up) => {
                let (proto, cipher) = (up.protocol, up.cipher);
                self.log(&format!(
                    "Anonymous TLS connection established from {}: {proto} with cipher {cipher}",
                    self.namaddr
                ));
                self.tls_info = Some(format!("(using {proto} with cipher {cipher})"));
                self.tls_active = true;
                // RFC 3207 §4.2: forget everything learned before TLS.
                self.helo = None;
                self.esmtp = false;
                self.abandon_tx();
                if std::mem::take(&mut self.wrapper_handshake) {
                    self.greet();
                }
            }
            Err(TlsFail::Unavailable) => self.end(End::Lost),
            // Postfix's tls_server.c: `SSL_accept error from NAME[ADDR]: %m` when the
            // system call failed (a timeout: ETIMEDOUT), `-1` with the TLS library's error.
            Err(TlsFail::Timeout) => {
                self.log(&format!(
                    "SSL_accept error from {}: Connection timed out",
                    self.namaddr
                ));
                self.end(End::Lost);
            }
            Err(TlsFail::Handshake) => {
                self.log(&format!("SSL_accept error from {}: -1", self.namaddr));
                self.end(End::Lost);
            }
        }
    }

    async fn cmd_auth(&mut self, arg: &str) {
        let p = self.st.params.clone();
        let mechs = self.offered_mechanisms();
        if !p.sasl_auth_enable || self.auth.is_none() || (p.tls_auth_only && !self.tls_active) {
            self.count("auth", false);
            self.reply("503 5.5.1 Error: authentication not enabled");
            return;
        }
        if !self.esmtp {
            self.count("auth", false);
            self.reply("503 5.5.1 Error: send EHLO first");
            return;
        }
        if self.sasl_username.is_some() {
            self.count("auth", false);
            self.reply("503 5.5.1 Error: already authenticated");
            return;
        }
        if self.tx.is_some() {
            self.count("auth", false);
            self.reply("503 5.5.1 Error: MAIL transaction in progress");
            return;
        }
        let mut words = arg.split_whitespace();
        let Some(mech) = words.next().map(|m| m.to_ascii_uppercase()) else {
            self.count("auth", false);
            self.reply("501 5.5.4 Syntax: AUTH mechanism");
            return;
        };
        let initial = words.next().map(str::to_string);
        if !mechs.contains(&mech) {
            self.count("auth", false);
            self.reply("535 5.7.8 Error: authentication failed: no mechanism available");
            return;
        }
        if mech == "PLAIN" {
            match initial {
                Some(r) if r == "=" => self.auth_plain(mech, "").await,
                Some(r) => self.auth_plain(mech, &r).await,
                None => {
                    self.reply("334 ");
                    self.mode = Mode::Auth {
                        mech,
                        step: AuthStep::Plain,
                    };
                }
            }
            return;
        }
        // LOGIN: "Username:" / "Password:" prompts, base64.
        match initial.as_deref().and_then(sasl::unb64) {
            Some(user) => self.login_password_prompt(mech, user),
            None => {
                self.reply(&format!("334 {}", sasl::b64("Username:")));
                self.mode = Mode::Auth {
                    mech,
                    step: AuthStep::LoginUser,
                };
            }
        }
    }

    /// One AUTH continuation line; `*` aborts the exchange.
    async fn auth_line(&mut self, raw: Vec<u8>) {
        let Mode::Auth { mech, step } = std::mem::replace(&mut self.mode, Mode::Command) else {
            return;
        };
        let l = String::from_utf8_lossy(&raw).trim().to_string();
        if l == "*" {
            self.count("auth", false);
            self.reply("501 5.7.0 Authentication aborted");
            return;
        }
        match step {
            AuthStep::Plain => self.auth_plain(mech, &l).await,
            AuthStep::LoginUser => match sasl::unb64(&l) {
                Some(user) => self.login_password_prompt(mech, user),
                None => {
                    self.count("auth", false);
                    self.reply("501 5.5.2 Invalid base64 data in continued response");
                }
            },
            AuthStep::LoginPass { user } => match sasl::unb64(&l) {
                Some(pass) => self.auth_check(mech, user, pass).await,
                None => {
                    self.count("auth", false);
                    self.reply("501 5.5.2 Invalid base64 data in continued response");
                }
            },
        }
    }

    fn login_password_prompt(&mut self, mech: String, user: String) {
        self.reply(&format!("334 {}", sasl::b64("Password:")));
        self.mode = Mode::Auth {
            mech,
            step: AuthStep::LoginPass { user },
        };
    }

    async fn auth_plain(&mut self, mech: String, resp: &str) {
        match sasl::decode_plain(resp) {
            Some((authz, authc, pw)) if authz.is_empty() || authz == authc => {
                self.auth_check(mech, authc, pw).await
            }
            _ => {
                self.count("auth", false);
                self.reply("535 5.7.8 Error: authentication failed: another step is needed in authentication");
            }
        }
    }

    /// The password check and its replies and log lines.
    async fn auth_check(&mut self, mech: String, user: String, pass: String) {
        let Some(auth) = self.auth.clone() else {
            return;
        };
        let res = auth
            .check(user.clone(), pass, "smtp".into(), String::new())
            .await;
        // Postfix 3.7 (smtpd_sasl_glue.c) ends the failure line with the name tried.
        let tried = format!(", sasl_username={user}");
        // libsasl's plain plugin logs this after any failed check (its login plugin not).
        let plain_note = mech == "PLAIN" && auth.cyrus_plain_note();
        match res {
            AuthResult::Ok => {
                self.count("auth", true);
                self.sasl_method = Some(mech);
                self.sasl_username = Some(user);
                self.reply("235 2.7.0 Authentication successful");
            }
            AuthResult::Fail => {
                self.count("auth", false);
                if plain_note {
                    log::warning(
                        self.ident(),
                        "SASL authentication failure: Password verification failed",
                    );
                }
                log::warning(
                    self.ident(),
                    &format!(
                        "{}: SASL {mech} authentication failed: authentication failure{tried}",
                        self.namaddr
                    ),
                );
                self.reply("535 5.7.8 Error: authentication failed: authentication failure");
            }
            AuthResult::TempFail { reason, notes } => {
                self.count("auth", false);
                for n in &notes {
                    log::warning(self.ident(), &format!("SASL authentication failure: {n}"));
                }
                if plain_note {
                    log::warning(
                        self.ident(),
                        "SASL authentication failure: Password verification failed",
                    );
                }
                log::warning(
                    self.ident(),
                    &format!(
                        "{}: SASL {mech} authentication failed: {reason}{tried}",
                        self.namaddr
                    ),
                );
                self.reply(&format!(
                    "454 4.7.0 Temporary authentication failure: {reason}"
                ));
            }
        }
    }

    fn data_precheck(&self) -> Option<&'static str> {
        match &self.tx {
            None => Some("503 5.5.1 Error: need RCPT command"),
            Some(t) if t.recipients.is_empty() => {
                if self.counts[cmd_index("rcpt")].1 > 0 {
                    Some("554 5.5.1 Error: no valid recipients")
                } else {
                    Some("503 5.5.1 Error: need RCPT command")
                }
            }
            _ => None,
        }
    }

    async fn cmd_data(&mut self, arg: &str) {
        if !arg.is_empty() {
            self.count("data", false);
            self.reply("501 5.5.4 Syntax: DATA");
            return;
        }
        if let Some(e) = self.data_precheck() {
            self.count("data", false);
            self.reply(e);
            return;
        }
        if self.tx.as_ref().is_some_and(|t| t.chunks.is_some()) {
            self.count("data", false);
            self.reply("503 5.5.1 Error: DATA after BDAT");
            return;
        }
        let (r, w) = self.run_checks(&[Stage::Data], None, None, None);
        self.log_warnings(&w);
        if let Some(r) = r {
            let line = r.line();
            self.log_reject("DATA", &line, None);
            self.count("data", false);
            self.reply(&line);
            return;
        }
        self.reply("354 End data with <CR><LF>.<CR><LF>");
        self.mode = Mode::Data {
            msg: Vec::new(),
            too_big: false,
        };
    }

    /// One line of DATA's message, or its end.
    async fn data_line(&mut self, line: Vec<u8>) {
        let limit = self.st.params.message_size_limit;
        if line != b"." {
            let Mode::Data { msg, too_big } = &mut self.mode else {
                return;
            };
            let content: &[u8] = if line.first() == Some(&b'.') {
                &line[1..]
            } else {
                &line
            };
            if *too_big {
                return;
            }
            if limit > 0 && (msg.len() + content.len() + 2) as u64 > limit {
                *too_big = true;
                *msg = Vec::new();
                return;
            }
            msg.extend_from_slice(content);
            msg.extend_from_slice(b"\r\n");
            return;
        }
        let Mode::Data { msg, too_big } = std::mem::replace(&mut self.mode, Mode::Command) else {
            return;
        };
        if too_big {
            self.count("data", false);
            self.log(&format!(
                "{}: reject: DATA from {}: 552 5.3.4 Error: message file too big",
                self.queue_tag(),
                self.namaddr
            ));
            self.abandon_tx();
            self.reply("552 5.3.4 Error: message file too big");
            return;
        }
        let reply = self.finish_message(msg).await;
        self.count("data", reply.starts_with('2'));
        self.reply(&reply);
    }

    async fn cmd_bdat(&mut self, arg: &str) {
        let mut words = arg.split_whitespace();
        let size: Option<usize> = words.next().and_then(|w| w.parse().ok());
        let last = match words.next() {
            None => false,
            Some(w) if w.eq_ignore_ascii_case("LAST") => true,
            Some(_) => {
                self.count("bdat", false);
                self.reply("501 5.5.4 Syntax: BDAT count [LAST]");
                return;
            }
        };
        let Some(size) = size else {
            self.count("bdat", false);
            self.reply("501 5.5.4 Syntax: BDAT count [LAST]");
            return;
        };
        // The chunk is read even when the command is refused, to stay in sync.
        let err = if self.tx.is_none() {
            Some("503 5.5.1 Error: need MAIL command")
        } else {
            self.data_precheck()
        };
        let limit = self.st.params.message_size_limit as usize;
        let so_far = self
            .tx
            .as_ref()
            .and_then(|t| t.chunks.as_ref())
            .map(|c| c.len())
            .unwrap_or(0);
        let keep = err.is_none() && (limit == 0 || so_far + size <= limit);
        self.mode = Mode::Bdat {
            left: size,
            keep,
            chunk: Vec::new(),
            err,
            last,
        };
    }

    /// A BDAT chunk has been read whole.
    async fn bdat_chunk(&mut self) {
        let Mode::Bdat {
            keep,
            chunk,
            err,
            last,
            ..
        } = std::mem::replace(&mut self.mode, Mode::Command)
        else {
            return;
        };
        if let Some(e) = err {
            self.count("bdat", false);
            self.reply(e);
            return;
        }
        let Some(t) = self.tx.as_mut() else {
            return;
        };
        let buf = t.chunks.get_or_insert_with(Vec::new);
        if !keep {
            t.chunk_too_big = true;
        } else {
            buf.extend_from_slice(&chunk);
        }
        if !last {
            if t.chunk_too_big {
                self.count("bdat", false);
                self.reply("552 5.3.4 Error: message file too big");
                self.abandon_tx();
            } else {
                let n = buf.len();
                self.count("bdat", true);
                self.reply(&format!("250 2.0.0 Ok: {n} bytes"));
            }
            return;
        }
        if t.chunk_too_big {
            self.count("bdat", false);
            self.abandon_tx();
            self.reply("552 5.3.4 Error: message file too big");
            return;
        }
        // Normalise line ends to CRLF (bare LF as Postfix accepts it), end with CRLF.
        let raw = std::mem::take(buf);
        let mut msg = Vec::with_capacity(raw.len() + 2);
        let mut prev = 0u8;
        for &b in &raw {
            if b == b'\n' && prev != b'\r' {
                msg.push(b'\r');
            }
            msg.push(b);
            prev = b;
        }
        if !msg.ends_with(b"\r\n") && !msg.is_empty() {
            msg.extend_from_slice(b"\r\n");
        }
        let n = msg.len();
        let reply = self.finish_message(msg).await;
        let ok = reply.starts_with('2');
        self.count("bdat", ok);
        let reply = if ok {
            reply.replacen(
                "250 2.0.0 Ok: queued as",
                &format!("250 2.0.0 Ok: {n} bytes queued as"),
                1,
            )
        } else {
            reply
        };
        self.reply(&reply);
    }

    /// `local_header_rewrite_clients` (default `permit_inet_interfaces`): cleanup adds
    /// missing Message-Id/Date/From headers for these clients.
    fn local_header_rewrite_client(&self) -> bool {
        let ip = self.peer.ip();
        let mut c = Checker::new(&self.st.params, &self.st.tables, "");
        let hit = self
            .st
            .params
            .local_header_rewrite_clients
            .iter()
            .any(|r| match r.as_str() {
                "permit_inet_interfaces" => {
                    address::is_local_interface(ip, &self.st.params.addresses)
                }
                // XXX Postfix answers `451 4.3.0 Temporary lookup error` at MAIL FROM when
                // this fails; here it only counts as no match (warnings logged).
                "permit_mynetworks" => c.in_mynetworks(ip).unwrap_or(false),
                "permit_sasl_authenticated" => self.sasl_username.is_some(),
                "permit" => true,
                _ => false,
            });
        self.log_warnings(&c.warnings);
        hit
    }

    /// End-of-data checks and the durable commit; returns the reply line.
    async fn finish_message(&mut self, msg: Vec<u8>) -> String {
        let (r, w) = self.run_checks(&[Stage::EndOfData], None, None, None);
        self.log_warnings(&w);
        if let Some(r) = r {
            let line = r.line();
            self.log_reject("END-OF-MESSAGE", &line, None);
            self.abandon_tx();
            return line;
        }
        let Some(t) = self.tx.take() else {
            return "503 5.5.1 Error: need RCPT command".into();
        };
        if let Some(m) = self.maildrop.clone() {
            return self.drop_message(&*m, t, msg);
        }
        let Some(q) = self.svc.queue.clone() else {
            return "451 4.3.0 Error: queue file write error".into();
        };
        let id = match t.queue_id.clone() {
            Some(id) => id,
            None => q.new_queue_id(),
        };
        if t.discard {
            // DISCARD: claim delivery as Postfix does, keep nothing.
            q.release_queue_id(&id);
            return format!("250 2.0.0 Ok: queued as {id}");
        }
        let env = Envelope {
            sender: t.sender.clone(),
            recipients: t.recipients.clone(),
            size_hint: t.size_hint,
            body_type: t.body_type.clone(),
            smtputf8: t.smtputf8,
            ret: t.ret.clone(),
            envid: t.envid.clone(),
        };
        let protocol = {
            let mut s = if t.smtputf8 {
                "UTF8SMTP".to_string()
            } else if self.esmtp {
                "ESMTP".into()
            } else {
                "SMTP".into()
            };
            if self.tls_active {
                s.push('S');
            }
            if self.sasl_username.is_some() {
                s.push('A');
            }
            s
        };
        let client = ClientInfo {
            helo: self.helo.clone(),
            hostname: self.client_name.clone(),
            addr: self.peer.ip(),
            port: self.peer.port(),
            protocol,
            tls: self.tls_info.clone(),
            sasl_method: self.sasl_method.clone(),
            sasl_username: self.sasl_username.clone(),
            local_submission: self.local_header_rewrite_client(),
        };
        // HOLD: committed without waking the queue manager, then moved to hold/.
        let committed = if t.hold {
            q.commit_held(&id, &env, &client, msg).await.map(Some)
        } else {
            q.commit(&id, &env, &client, msg).await.map(|()| None)
        };
        match committed {
            Ok(Some(Err(e))) => {
                log::warning(
                    self.ident(),
                    &format!("{id}: cannot move to the hold queue: {e}"),
                );
                format!("250 2.0.0 Ok: queued as {id}")
            }
            Ok(_) => format!("250 2.0.0 Ok: queued as {id}"),
            Err(e) => {
                let qe = e.downcast_ref::<queue::QueueError>();
                let reply = qe
                    .map(|qe| qe.smtp_reply().to_string())
                    .unwrap_or_else(|| "451 4.3.0 Error: queue file write error".into());
                match qe {
                    // A write that fails mid-message (a full disk: ENOSPC, EDQUOT) is logged
                    // as Postfix's cleanup_out() logs it; the session goes on (the client may
                    // send another MAIL, as after Postfix's 451).
                    Some(queue::QueueError::Write(io)) => log::warning(
                        &q.settings().cleanup_ident,
                        &format!(
                            "{id}: write queue file: {}",
                            crate::config::error::strerror(io)
                        ),
                    ),
                    _ => log::warning(self.ident(), &format!("{id}: queue file write error: {e}")),
                }
                reply
            }
        }
    }
}

impl Session {
    /// A stand-alone session's message into the maildrop (its lines end in LF there).
    fn drop_message(&self, m: &dyn Maildrop, t: Transaction, msg: Vec<u8>) -> String {
        let Some(id) = t.queue_id.clone().or_else(|| self.new_queue_id()) else {
            return "451 4.3.0 Error: queue file write error".into();
        };
        let mut content = Vec::with_capacity(msg.len());
        let mut i = 0;
        while i < msg.len() {
            if msg[i] == b'\r' && msg.get(i + 1) == Some(&b'\n') {
                i += 1;
                continue;
            }
            content.push(msg[i]);
            i += 1;
        }
        let rcpts: Vec<String> = t.recipients.iter().map(|r| r.address.clone()).collect();
        let helo = self.helo.clone().unwrap_or_default();
        let r = m.drop_message(&id, &t.sender, &rcpts, &content, &helo, self.esmtp);
        m.release_queue_id(&id);
        match r {
            Ok(()) => format!("250 2.0.0 Ok: queued as {id}"),
            Err(e) => {
                log::warning(self.ident(), &format!("{id}: queue file write error: {e}"));
                "451 4.3.0 Error: queue file write error".into()
            }
        }
    }
}

struct ClientGuard {
    svc: Arc<SmtpdService>,
    ip: std::net::IpAddr,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.svc.client_disconnect(self.ip);
    }
}

/// RFC 3461 xtext decoding (`+2B` → `+`).
fn xtext_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+'
            && i + 2 < b.len()
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Reverse lookup of `ip`, then forward confirmation of the name (Postfix's
/// `smtpd_peer.c`): (PTR name, whether it maps back to `ip`).
fn reverse_and_forward(ip: std::net::IpAddr) -> (Option<String>, bool) {
    use std::net::ToSocketAddrs;
    let name = match crate::sys::net::name_of(ip) {
        Some(n) => n,
        None => return (None, false),
    };
    let ok = (name.as_str(), 0)
        .to_socket_addrs()
        .map(|mut it| it.any(|a| a.ip() == ip))
        .unwrap_or(false);
    (Some(name), ok)
}

/// The environment variable of [`test_panic_verb`].
const TEST_PANIC_ENV: &str = "POSTERN_TEST_PANIC";

/// An SMTP verb that makes the session panic (tests of the panic hook), from
/// `$POSTERN_TEST_PANIC`; read once.
fn test_panic_verb() -> Option<&'static str> {
    static VERB: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    VERB.get_or_init(|| {
        std::env::var(TEST_PANIC_ENV)
            .ok()
            .map(|v| v.trim().to_ascii_uppercase())
            .filter(|v| !v.is_empty())
    })
    .as_deref()
}

/// The recipient's domain as Postfix's trivial-rewrite resolves it (smtpd's
/// `smtpd_check_addr()`): a resolved domain that is not a valid hostname or address
/// literal (`user@-other.example`, `user@other.example%localhost`, `user@192.0.2.1`) is a
/// resolve error, which smtpd answers `501 5.1.3 Bad recipient address syntax` (recorded
/// from Postfix 3.7.11 in compat-fixtures/relay/). A domain list that cannot be searched
/// (`None`: no answer) is left to the later checks, which defer.
fn rcpt_domain_ok(resolved: Option<&Resolved>) -> bool {
    resolved.is_none_or(|r| !r.error)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn xtext() {
        assert_eq!(xtext_decode("rfc822;a+2Bb@c"), "rfc822;a+b@c");
        assert_eq!(xtext_decode("x+"), "x+");
    }
}
