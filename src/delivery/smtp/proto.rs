//! One SMTP session with one server address (Postfix `smtp_proto.c`, `smtp_sasl_*.c`):
//! greeting, EHLO (HELO fallback), STARTTLS, AUTH, then MAIL/RCPT/DATA — pipelined when
//! the server offers PIPELINING — and QUIT. Every failure is worded as Postfix words it and
//! handed to [`State`], which decides between "try the next server", defer and bounce.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::log;
use crate::queue::file::{
    DSN_RET_FULL, DSN_RET_HDRS, SMTPUTF8_FLAG_HEADER, SMTPUTF8_FLAG_RECIPIENT,
    SMTPUTF8_FLAG_REQUESTED, SMTPUTF8_FLAG_SENDER,
};

use super::conn::{self, Conn, IoFail};
use super::downgrade;
use super::reply::{self, ReadNotes, Reply};
use super::state::{State, Why};
use super::tls::{self, TlsLevel};

/// The largest batch of pipelined commands written before reading replies (Postfix's
/// `PIPELINING_BUFSIZE`, the VSTREAM buffer size).
const PIPELINING_BUFSIZE: usize = 4096;

/// One server address to try.
pub struct Target<'a> {
    pub host: &'a str,
    pub ip: IpAddr,
    pub port: u16,
    /// The address has the best MX preference of the domain.
    pub best_mx: bool,
    /// Port 25: look for ourselves in the server's replies.
    pub loop_detect: bool,
    /// Retrying after an opportunistic TLS failure: no STARTTLS.
    pub tls_off: bool,
    /// This session is the last chance once the handshake succeeded.
    pub final_if_xfer: bool,
    /// The next-hop domain (level `secure` matches the certificate against it).
    pub tls_nexthop: &'a str,
    /// The destination as written (`[smtp.example.com]:587`, or a fallback relay): the
    /// last `smtp_sasl_password_maps` key.
    pub dest: &'a str,
}

/// How a session ended, for the address loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// No connection (the reason is logged and recorded).
    NoConnect,
    /// The handshake failed (greeting, EHLO, TLS, AUTH): not counted as a session.
    Handshake,
    /// Opportunistic TLS failed: try the same address again without TLS.
    RetryPlain,
    /// A mail transaction was attempted.
    Xfer,
}

/// Why the dialogue stopped early.
enum Stop {
    /// The failure is recorded; the connection still works (send QUIT).
    Quit,
    /// The connection is unusable.
    Dead,
    RetryPlain,
    /// The transaction was given up with `RSET` (answered 2xx): the connection may serve
    /// another one.
    Aborted,
}

/// A session kept for the next delivery ([`super::cache`]): the connection after a
/// complete transaction, with what its EHLO said.
pub struct Cached {
    conn: Conn,
    host: String,
    ip: IpAddr,
    port: u16,
    features: Features,
    in_tls: bool,
    /// When it was connected (`smtp_connection_reuse_time_limit`).
    created: Instant,
    /// Transactions after the first so far (Postfix's `reuse_count`).
    reuse_count: u32,
}

impl Cached {
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Found by its server's address for another next-hop: it carries that next-hop's
    /// name for the server from now on (Postfix's `relay=` names the iterator's host).
    pub fn for_host(mut self, host: &str) -> Cached {
        host.clone_into(&mut self.host);
        self
    }
}

/// A reply after which Postfix does not cache a session: a 421 (the server is closing),
/// or a protocol error (`smtp_check_code()`: a code outside 4xx/5xx, 500–509, 555).
fn taints(code: u16) -> bool {
    code == 421 || !(200..=599).contains(&code) || code == 555 || (500..510).contains(&code)
}

#[derive(Debug, Default, Clone)]
struct Features {
    esmtp: bool,
    pipelining: bool,
    size: bool,
    size_limit: u64,
    eightbitmime: bool,
    starttls: bool,
    dsn: bool,
    smtputf8: bool,
    auth: Vec<String>,
}

struct Session<'t> {
    conn: Conn,
    t: &'t Target<'t>,
    namaddr: String,
    namaddrport: String,
    features: Features,
    in_tls: bool,
    notes: ReadNotes,
    /// This transaction's body goes through the 8bit → 7bit downgrade
    /// ([`super::downgrade`]).
    downgrade: bool,
    created: Instant,
    reuse_count: u32,
    /// Something happened after which the session is not cached.
    tainted: bool,
}

/// Connect to `t` and deliver what `st` has open.
pub fn session(st: &mut State, t: &Target) -> End {
    let p = st.p;
    let namaddr = format!("{}[{}]", t.host, t.ip);
    let namaddrport = format!("{namaddr}:{}", t.port);
    let bind = if t.ip.is_ipv4() {
        p.bind_address
    } else {
        p.bind_address6
    };
    let ident = st.s.ident.clone();
    let mut warn = |w: String| log::warning(&ident, &w);
    let conn = match conn::connect(
        SocketAddr::new(t.ip, t.port),
        bind,
        p.connect_timeout,
        &mut warn,
    ) {
        Ok(c) => c,
        Err(e) => {
            let why = st.fill(Why::local(
                "4.4.1",
                format!(
                    "connect to {namaddrport}: {}",
                    crate::config::error::strerror(&e)
                ),
                "none",
            ));
            // "The reason already includes the IP address and TCP port."
            log::info(&st.s.ident, &why.text);
            return End::NoConnect;
        }
    };
    let mut sess = Session {
        conn,
        t,
        namaddr,
        namaddrport,
        features: Features::default(),
        in_tls: false,
        notes: ReadNotes::default(),
        downgrade: false,
        created: Instant::now(),
        reuse_count: 0,
        tainted: false,
    };
    match sess.helo(st) {
        Ok(()) => {}
        Err(Stop::Quit | Stop::Aborted) => {
            sess.quit(st);
            return End::Handshake;
        }
        Err(Stop::Dead) => {
            sess.conn.close();
            return End::Handshake;
        }
        Err(Stop::RetryPlain) => {
            sess.conn.close();
            return End::RetryPlain;
        }
    }
    if t.final_if_xfer {
        st.final_server = true;
    }
    let r = sess.xfer(st);
    sess.finish(st, r);
    End::Xfer
}

/// Deliver over a cached session (Postfix `smtp_reuse_common()` then `smtp_xfer()`): an
/// `RSET` probe first; a session that fails it is closed and `false` returned (an I/O
/// failure is logged as Postfix logs it, `lost connection with HOST[ADDR] while sending
/// RSET probe`, and the recipients stay open for a new connection).
/// `final_if_xfer`: no other server is left once the probe succeeded.
pub fn reuse(
    st: &mut State,
    c: Cached,
    final_if_xfer: bool,
    loop_detect: bool,
    tls_nexthop: &str,
    dest: &str,
) -> bool {
    let host = c.host.clone();
    let t = Target {
        host: &host,
        ip: c.ip,
        port: c.port,
        best_mx: true,
        loop_detect,
        tls_off: false,
        final_if_xfer,
        tls_nexthop,
        dest,
    };
    let namaddr = format!("{}[{}]", t.host, t.ip);
    let namaddrport = format!("{namaddr}:{}", t.port);
    let mut sess = Session {
        conn: c.conn,
        t: &t,
        namaddr,
        namaddrport,
        features: c.features,
        in_tls: c.in_tls,
        notes: ReadNotes::default(),
        downgrade: false,
        created: c.created,
        reuse_count: c.reuse_count + 1,
        tainted: false,
    };
    let p = st.p;
    st.final_server = false;
    if let Err(f) = sess.conn.write_all(b"RSET\r\n", p.rset_timeout) {
        let _ = sess.except(st, f, "sending RSET probe");
        sess.conn.close();
        return false;
    }
    match sess.resp(st, p.rset_timeout, "sending RSET probe") {
        Ok(r) if r.class() == 2 => {}
        Ok(_) => {
            sess.conn.close();
            return false;
        }
        Err(_) => {
            sess.conn.close();
            return false;
        }
    }
    if final_if_xfer {
        st.final_server = true;
    }
    let r = sess.xfer(st);
    sess.finish(st, r);
    true
}

/// `xtext` (RFC 3461 §4): `+`, `=`, the `specials` and bytes outside 33..=126 as `+HH`.
pub fn xtext(s: &str, specials: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if !(33..=126).contains(&b) || b == b'+' || b == b'=' || specials.as_bytes().contains(&b) {
            out.push_str(&format!("+{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// The envelope address as RFC 5321 wants it: the local part quoted when it is not a
/// dot-atom (Postfix `smtp_quote_821_address`).
pub fn quote_821(addr: &str) -> String {
    if addr.is_empty() {
        return String::new();
    }
    let (local, domain) = match addr.rfind('@') {
        Some(i) => (&addr[..i], Some(&addr[i + 1..])),
        None => (addr, None),
    };
    let atext =
        |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    let dot_atom = !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| c == '.' || atext(c));
    let local = if dot_atom || (local.starts_with('"') && local.ends_with('"') && local.len() > 1) {
        local.to_string()
    } else {
        let mut q = String::from("\"");
        for c in local.chars() {
            if c == '"' || c == '\\' {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        q
    };
    match domain {
        Some(d) => format!("{local}@{d}"),
        None => local,
    }
}

fn cipher_name(suite: &str) -> (String, &'static str) {
    match suite {
        "TLS13_AES_256_GCM_SHA384" => ("TLS_AES_256_GCM_SHA384".into(), "256/256"),
        "TLS13_AES_128_GCM_SHA256" => ("TLS_AES_128_GCM_SHA256".into(), "128/128"),
        "TLS13_CHACHA20_POLY1305_SHA256" => ("TLS_CHACHA20_POLY1305_SHA256".into(), "256/256"),
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => {
            ("ECDHE-RSA-AES256-GCM-SHA384".into(), "256/256")
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => {
            ("ECDHE-RSA-AES128-GCM-SHA256".into(), "128/128")
        }
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
            ("ECDHE-ECDSA-AES256-GCM-SHA384".into(), "256/256")
        }
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
            ("ECDHE-ECDSA-AES128-GCM-SHA256".into(), "128/128")
        }
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            ("ECDHE-RSA-CHACHA20-POLY1305".into(), "256/256")
        }
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            ("ECDHE-ECDSA-CHACHA20-POLY1305".into(), "256/256")
        }
        other => (other.to_string(), "256/256"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Mail,
    Rcpt(usize),
    Data,
}

impl<'t> Session<'t> {
    /// After a transaction: keep the session in the cache when the delivery request asks
    /// for it and nothing spoilt it (Postfix `smtp_cleanup_session()`), else QUIT or close.
    fn finish(mut self, st: &mut State, how: Result<(), Stop>) {
        let p = st.p;
        let usable = matches!(how, Ok(()) | Err(Stop::Aborted));
        let expired = Instant::now() >= self.created + p.reuse_time_limit
            || (p.reuse_count_limit > 0 && self.reuse_count >= p.reuse_count_limit);
        let keep = usable
            && st.cache_enabled
            && !self.tainted
            && !expired
            && (!self.in_tls || p.tls_connection_reuse)
            && self.conn.pending() == 0;
        st.reuse_count = 0;
        let under_nexthop = st.cache_store;
        if !self.tainted {
            // Postfix caches only the first good session of a request under its next-hop,
            // not one with a less preferred server; later ones under their address only.
            st.cache_store = false;
        }
        if keep {
            // Stored when the request ends ([`super::cache::end`]), in the lock that ends it.
            let k = super::cache::Keep {
                sess: Cached {
                    conn: self.conn,
                    host: self.t.host.to_string(),
                    ip: self.t.ip,
                    port: self.t.port,
                    features: self.features,
                    in_tls: self.in_tls,
                    created: self.created,
                    reuse_count: self.reuse_count,
                },
                limit: p.destination_concurrency_limit,
                ttl: p.cache_time_limit,
                endp: super::endp_key(st, self.t.tls_nexthop, self.t.host, self.t.ip, self.t.port),
            };
            if under_nexthop {
                st.cache_keep = Some(k);
            } else {
                st.cache_keep_endp.push(k);
            }
            return;
        }
        match how {
            Ok(()) | Err(Stop::Quit) | Err(Stop::Aborted) => self.quit(st),
            Err(_) => self.conn.close(),
        }
    }

    fn flush_notes(&mut self, st: &State) {
        for n in std::mem::take(&mut self.notes.too_long) {
            log::warning(&st.s.ident, &format!("{}: {n}", self.namaddrport));
        }
        for g in std::mem::take(&mut self.notes.garbage) {
            self.tainted = true;
            if self.features.pipelining {
                log::warning(
                    &st.s.ident,
                    &format!(
                        "{}: non-ESMTP response from {}: {g}",
                        st.msg.queue_id, self.namaddrport
                    ),
                );
            }
        }
    }

    /// `smtp_stream_except()`: an I/O failure ends the session for every open recipient.
    fn except(&mut self, st: &mut State, fail: IoFail, what: &str) -> Stop {
        let text = match fail {
            IoFail::Eof => format!("lost connection with {} while {what}", self.namaddr),
            IoFail::Timeout => format!("conversation with {} timed out while {what}", self.namaddr),
        };
        let relay = self.namaddrport.clone();
        self.tainted = true;
        st.fail_all(Why::local("4.4.2", text, &relay));
        Stop::Dead
    }

    fn resp(&mut self, st: &mut State, timeout: Duration, what: &str) -> Result<Reply, Stop> {
        let r = reply::read(
            &mut self.conn,
            timeout,
            st.p.reply_line_limit,
            &mut self.notes,
        );
        self.flush_notes(st);
        match r {
            Ok(r) => {
                if taints(r.code) {
                    self.tainted = true;
                }
                Ok(r)
            }
            Err(f) => Err(self.except(st, f, what)),
        }
    }

    fn send(
        &mut self,
        st: &mut State,
        line: &str,
        timeout: Duration,
        what: &str,
    ) -> Result<(), Stop> {
        let mut b = line.as_bytes().to_vec();
        b.extend_from_slice(b"\r\n");
        match self.conn.write_all(&b, timeout) {
            Ok(()) => Ok(()),
            Err(f) => Err(self.except(st, f, what)),
        }
    }

    /// `smtp_site_fail()`/`smtp_sess_fail()` with a server reply.
    fn site_fail(&mut self, st: &mut State, r: &Reply, text: String) -> Stop {
        let relay = self.namaddrport.clone();
        st.fail_all(Why::remote(self.t.host, r, text, &relay));
        Stop::Quit
    }

    fn local_fail(&mut self, st: &mut State, dsn: &str, text: String) -> Stop {
        let relay = self.namaddrport.clone();
        st.fail_all(Why::local(dsn, text, &relay));
        Stop::Quit
    }

    fn refused(&mut self, st: &mut State, r: &Reply) -> Stop {
        let text = format!(
            "host {} refused to talk to me: {}",
            self.namaddr,
            r.one_line()
        );
        self.site_fail(st, r, text)
    }

    /// `smtp_helo()`: greeting, EHLO/HELO, STARTTLS (recursing into EHLO), AUTH.
    fn helo(&mut self, st: &mut State) -> Result<(), Stop> {
        let p = st.p;
        let level = match &p.tls_level {
            Ok(l) => *l,
            Err(bad) => {
                log::warning(&st.s.ident, &format!("Invalid TLS level \"{bad}\""));
                TlsLevel::None
            }
        };
        if !self.in_tls {
            let mut r = self.resp(st, p.helo_timeout, "receiving the initial server greeting")?;
            match r.class() {
                2 => {}
                5 if p.skip_5xx_greeting => {
                    r.dsn.replace_range(0..1, "4");
                    return Err(self.refused(st, &r));
                }
                _ => return Err(self.refused(st, &r)),
            }
            if p.tls_level.is_err() {
                return Err(self.local_fail(
                    st,
                    "4.7.0",
                    "client TLS configuration problem".into(),
                ));
            }
            let first = r.text.split('\n').next().unwrap_or("").to_string();
            for (n, w) in first.split_whitespace().skip(1).enumerate() {
                if n == 0 && w.eq_ignore_ascii_case(&p.myhostname) {
                    if self.t.loop_detect {
                        log::warning(
                            &st.s.ident,
                            &format!(
                                "host {} greeted me with my own hostname {}",
                                self.namaddrport, p.myhostname
                            ),
                        );
                    }
                } else if w.eq_ignore_ascii_case("ESMTP") {
                    self.features.esmtp = true;
                }
            }
            if p.always_send_ehlo {
                self.features.esmtp = true;
            }
            if p.never_send_ehlo {
                self.features.esmtp = false;
            }
        } else {
            self.features.esmtp = true;
        }

        let mut ehlo: Option<Reply> = None;
        if self.features.esmtp {
            self.send(
                st,
                &format!("EHLO {}", p.helo_name),
                p.helo_timeout,
                "performing the EHLO handshake",
            )?;
            let r = self.resp(st, p.helo_timeout, "performing the EHLO handshake")?;
            if r.class() != 2 {
                if r.code == 421 {
                    return Err(self.refused(st, &r));
                }
                self.features.esmtp = false;
            } else {
                ehlo = Some(r);
            }
        }
        if !self.features.esmtp {
            self.send(
                st,
                &format!("HELO {}", p.helo_name),
                p.helo_timeout,
                "performing the HELO handshake",
            )?;
            let r = self.resp(st, p.helo_timeout, "performing the HELO handshake")?;
            if r.class() != 2 {
                return Err(self.refused(st, &r));
            }
        }
        if let Some(r) = &ehlo {
            self.parse_ehlo(st, r)?;
        }

        // SMTPUTF8 (Postfix 3.7 smtp_proto.c): required when the sender asked for it and
        // the envelope or headers need it.
        let u = st.msg.smtputf8;
        if u & SMTPUTF8_FLAG_REQUESTED != 0
            && u & (SMTPUTF8_FLAG_HEADER | SMTPUTF8_FLAG_SENDER | SMTPUTF8_FLAG_RECIPIENT) != 0
            && !self.features.smtputf8
        {
            let relay = self.namaddrport.clone();
            let left = st.left();
            st.bulk_fail(
                &left,
                Why::local(
                    "5.6.7",
                    format!(
                        "SMTPUTF8 is required, but was not offered by host {}",
                        self.namaddr
                    ),
                    &relay,
                ),
            );
            return Err(Stop::Quit);
        }
        if self.features.smtputf8 && !self.features.eightbitmime {
            log::info(
                &st.s.ident,
                &format!(
                    "host {} offers SMTPUTF8 support, but not 8BITMIME",
                    self.namaddr
                ),
            );
            self.features.eightbitmime = true;
        }

        if !self.in_tls {
            if self.features.starttls && p.tls_note_starttls_offer && level == TlsLevel::None {
                log::info(
                    &st.s.ident,
                    &format!("Host offered STARTTLS: [{}]", self.t.host),
                );
            }
            let want = self.features.starttls && level >= TlsLevel::May && !self.t.tls_off;
            let config = if want {
                let c = if level.must_match() {
                    tls::verifying(&p.tls_cafile, &p.tls_capath)
                } else {
                    tls::unauthenticated()
                };
                match c {
                    Ok(c) => Some(c),
                    Err(e) => {
                        log::warning(&st.s.ident, &format!("TLS client setup: {e}"));
                        None
                    }
                }
            } else {
                None
            };
            if let Some(config) = config {
                self.send(
                    st,
                    "STARTTLS",
                    p.starttls_timeout,
                    "receiving the STARTTLS response",
                )?;
                let r = self.resp(st, p.starttls_timeout, "receiving the STARTTLS response")?;
                if r.class() == 2 {
                    return self.start_tls(st, level, config);
                }
                self.features.starttls = false;
                if level.required() {
                    let text = format!(
                        "TLS is required, but host {} refused to start TLS: {}",
                        self.namaddr,
                        r.one_line()
                    );
                    return Err(self.site_fail(st, &r, text));
                }
            } else if want && level.required() {
                return Err(self.local_fail(
                    st,
                    "4.7.5",
                    "TLS is required, but our TLS engine is unavailable".into(),
                ));
            }
            if level.required() && !self.t.tls_off {
                if !self.features.starttls {
                    let text = format!(
                        "TLS is required, but was not offered by host {}",
                        self.namaddr
                    );
                    return Err(self.local_fail(st, "4.7.4", text));
                }
                return Err(self.local_fail(
                    st,
                    "4.7.0",
                    "TLS is required, but unavailable".into(),
                ));
            }
        }
        if p.sasl_enable && !self.features.auth.is_empty() {
            self.sasl_login(st)?;
        }
        Ok(())
    }

    fn parse_ehlo(&mut self, st: &mut State, r: &Reply) -> Result<(), Stop> {
        let p = st.p;
        let discard = |k: &str| p.discard_ehlo_keywords.iter().any(|d| d == k);
        for (n, line) in r.lines().enumerate() {
            let mut words = line.split([' ', '\t', '=']).filter(|w| !w.is_empty());
            let Some(word) = words.next() else { continue };
            if n == 0 {
                if word.eq_ignore_ascii_case(&p.myhostname) && self.t.loop_detect {
                    log::warning(
                        &st.s.ident,
                        &format!(
                            "host {} replied to HELO/EHLO with my own hostname {}",
                            self.namaddrport, p.myhostname
                        ),
                    );
                    let dsn = if self.t.best_mx { "5.4.6" } else { "4.4.6" };
                    let text = format!("mail for {} loops back to myself", st.nexthop);
                    return Err(self.local_fail(st, dsn, text));
                }
                continue;
            }
            let kw = word.to_ascii_uppercase();
            if discard(&kw) {
                continue;
            }
            match kw.as_str() {
                "8BITMIME" => self.features.eightbitmime = true,
                "PIPELINING" => self.features.pipelining = true,
                "SIZE" => {
                    self.features.size = true;
                    if let Some(v) = words.next() {
                        match v.parse::<u64>() {
                            Ok(n) if v.bytes().all(|b| b.is_ascii_digit()) => {
                                self.features.size_limit = n
                            }
                            _ => log::warning(
                                &st.s.ident,
                                &format!("bad EHLO SIZE limit \"{v}\" from {}", self.namaddrport),
                            ),
                        }
                    }
                }
                "STARTTLS" => self.features.starttls = true,
                "AUTH" => {
                    for m in words {
                        let m = m.to_ascii_uppercase();
                        if !self.features.auth.contains(&m) {
                            self.features.auth.push(m);
                        }
                    }
                }
                "DSN" => self.features.dsn = true,
                "SMTPUTF8" => self.features.smtputf8 = true,
                _ => {}
            }
        }
        Ok(())
    }

    fn start_tls(
        &mut self,
        st: &mut State,
        level: TlsLevel,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<(), Stop> {
        let p = st.p;
        let name = if level == TlsLevel::Secure {
            tls::server_name(self.t.tls_nexthop)
        } else if level.must_match() {
            tls::server_name(self.t.host)
        } else {
            Some(rustls::pki_types::ServerName::IpAddress(self.t.ip.into()))
        };
        let Some(name) = name else {
            return Err(self.local_fail(st, "4.7.5", "Server certificate not verified".into()));
        };
        if let Err(e) = self.conn.start_tls(config, name, p.starttls_timeout) {
            let cert_problem = e.contains("certificate") || e.contains("Certificate");
            if level.must_match() && cert_problem {
                log::info(
                    &st.s.ident,
                    &format!("{}: Server certificate not verified: {e}", self.namaddrport),
                );
                self.local_fail(st, "4.7.5", "Server certificate not verified".into());
                return Err(Stop::Dead);
            }
            log::info(
                &st.s.ident,
                &format!("SSL_connect error to {}: {e}", self.namaddrport),
            );
            if level == TlsLevel::May {
                // RETRY_AS_PLAINTEXT: this server is not final; the same address is tried
                // again without TLS.
                let saved = st.final_server;
                st.final_server = false;
                self.local_fail(st, "4.7.5", "Cannot start TLS: handshake failure".into());
                st.final_server = saved;
                return Err(Stop::RetryPlain);
            }
            self.local_fail(st, "4.7.5", "Cannot start TLS: handshake failure".into());
            return Err(Stop::Dead);
        }
        if p.tls_loglevel >= 1
            && let Some((v, c)) = self.conn.tls_summary()
        {
            let (cipher, bits) = cipher_name(&c);
            let trust = if level.must_match() {
                "Verified"
            } else {
                "Untrusted"
            };
            log::info(
                &st.s.ident,
                &format!(
                    "{trust} TLS connection established to {}: {v} with cipher {cipher} ({bits} bits)",
                    self.namaddrport
                ),
            );
        }
        self.in_tls = true;
        self.features = Features::default();
        self.helo(st)
    }

    /// `smtp_sasl_passwd_lookup()`: sender (with sender-dependent authentication), then
    /// the server host name, then the next-hop as written. `Err` (logged) when a table
    /// cannot answer: the caller defers with `4.3.0 local data error while talking to …`.
    fn sasl_credentials(&self, st: &State) -> Result<Option<(String, String)>, ()> {
        let p = st.p;
        if p.sasl_password_maps.is_empty() {
            // Postfix stops here (fatal); the session goes on unauthenticated instead.
            log::warning(
                &st.s.ident,
                "specify a password table via the `smtp_sasl_password_maps' configuration parameter",
            );
            return Ok(None);
        }
        let mut keys: Vec<String> = Vec::new();
        if p.sender_dependent_authentication && !st.msg.sender.is_empty() {
            keys.push(st.msg.sender.to_ascii_lowercase());
            if let Some(i) = st.msg.sender.rfind('@') {
                keys.push(st.msg.sender[i..].to_ascii_lowercase());
            }
        }
        keys.push(self.t.host.to_ascii_lowercase());
        keys.push(self.t.dest.to_ascii_lowercase());
        let ident = st.s.ident.clone();
        let tables = crate::maps::open_list(
            &p.sasl_password_maps,
            crate::maps::source::Format::Postmap,
            &mut |n| n.log(&ident),
        );
        for k in &keys {
            let key = [crate::maps::Key {
                key: k.clone(),
                partial: false,
            }];
            match crate::maps::find(&tables, &key) {
                Ok(Some((_, v))) => {
                    let (u, pw) = v.split_once(':').unwrap_or((&v, ""));
                    return Ok(Some((u.to_string(), pw.to_string())));
                }
                Ok(None) => {}
                Err(e) => {
                    // smtp_sasl_glue.c: the lookup error is logged and the delivery
                    // deferred, never tried without the credentials.
                    for w in e.warnings() {
                        log::warning(&st.s.ident, &w);
                    }
                    log::warning(
                        &st.s.ident,
                        &format!("{}: smtp_sasl_password_maps lookup error", st.msg.queue_id),
                    );
                    return Err(());
                }
            }
        }
        Ok(None)
    }

    /// `smtp_sasl_helo_login()` with PLAIN or LOGIN (Cyrus's preference: PLAIN first).
    fn sasl_login(&mut self, st: &mut State) -> Result<(), Stop> {
        let p = st.p;
        let (user, pass) = match self.sasl_credentials(st) {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(()),
            Err(()) => {
                let text = format!("local data error while talking to {}", self.namaddr);
                return Err(self.local_fail(st, "4.3.0", text));
            }
        };
        let opts = if self.in_tls {
            &p.sasl_tls_security_options
        } else {
            &p.sasl_security_options
        };
        let noplaintext = opts.iter().any(|o| o == "noplaintext");
        let usable = |m: &str| {
            !(noplaintext && (m == "PLAIN" || m == "LOGIN"))
                && (p.sasl_mechanism_filter.is_empty()
                    || p.sasl_mechanism_filter.iter().any(|f| f == m))
                && self.features.auth.iter().any(|a| a == m)
        };
        let mech = ["PLAIN", "LOGIN"].into_iter().find(|m| usable(m));
        let b64 = base64::engine::general_purpose::STANDARD;
        let what = "performing the EHLO handshake";
        let Some(mech) = mech else {
            let text = format!(
                "SASL authentication failed; cannot authenticate to server {}: no mechanism available",
                self.namaddr
            );
            return Err(self.local_fail(st, "4.7.0", text));
        };
        let mut steps: Vec<String> = Vec::new();
        if mech == "PLAIN" {
            let ir = b64.encode(format!("\0{user}\0{pass}"));
            self.send(st, &format!("AUTH PLAIN {ir}"), p.helo_timeout, what)?;
        } else {
            self.send(
                st,
                &format!("AUTH LOGIN {}", b64.encode(&user)),
                p.helo_timeout,
                what,
            )?;
            steps.push(b64.encode(&pass));
        }
        let mut n = 0;
        let r = loop {
            let r = self.resp(st, p.helo_timeout, what)?;
            if r.class() != 3 {
                break r;
            }
            n += 1;
            if n > 100 {
                let text = format!(
                    "SASL authentication failed; authentication protocol loop with server {}",
                    self.namaddr
                );
                return Err(self.local_fail(st, "4.3.0", text));
            }
            let next = if steps.is_empty() {
                "*".to_string()
            } else {
                steps.remove(0)
            };
            self.send(st, &next, p.helo_timeout, what)?;
        };
        if r.class() != 2 {
            let mut r = r;
            if p.sasl_auth_soft_bounce && r.class() == 5 {
                r.dsn.replace_range(0..1, "4");
            }
            let text = format!(
                "SASL authentication failed; server {} said: {}",
                self.namaddr,
                r.one_line()
            );
            return Err(self.site_fail(st, &r, text));
        }
        Ok(())
    }

    fn said(&self, r: &Reply, cmd: &str) -> String {
        format!(
            "host {} said: {} (in reply to {cmd})",
            self.namaddr,
            r.one_line()
        )
    }

    /// `smtp_xfer()`/`smtp_loop()`: one mail transaction for the open recipients.
    fn xfer(&mut self, st: &mut State) -> Result<(), Stop> {
        let p = st.p;
        let msg = st.msg;
        let relay = self.namaddrport.clone();
        let host = self.t.host.to_string();
        let rcpts = st.left();
        if rcpts.is_empty() {
            return Err(Stop::Quit);
        }
        st.reuse_count = self.reuse_count;
        let data_size = if msg.message_size > 0 {
            msg.message_size
        } else {
            msg.content.len() as u64
        };
        if self.features.size_limit > 0 && self.features.size_limit < data_size {
            let text = format!(
                "message size {data_size} exceeds size limit {} of server {}",
                self.features.size_limit, self.namaddr
            );
            st.bulk_fail(&rcpts, Why::local("5.3.4", text, &relay));
            return Err(Stop::Quit);
        }

        // smtp_proto.c: a server without 8BITMIME gets the MIME downgrade unless the
        // message is declared 7bit or disable_mime_output_conversion = yes; the size may
        // then change, so SIZE= is left off (compat-fixtures/smtp/downgrade-*.peer.txt).
        self.downgrade = !self.features.eightbitmime
            && msg.encoding.as_deref() != Some("7bit")
            && !p.disable_mime_output_conversion;
        let mut cmds: Vec<(Cmd, String)> = Vec::new();
        let mut mail = format!("MAIL FROM:<{}>", quote_821(&msg.sender));
        if self.features.size && !self.downgrade {
            mail.push_str(&format!(" SIZE={data_size}"));
        }
        if self.features.eightbitmime {
            match msg.encoding.as_deref() {
                Some("8bit") => mail.push_str(" BODY=8BITMIME"),
                Some("7bit") => mail.push_str(" BODY=7BIT"),
                _ => {}
            }
        }
        if self.features.dsn {
            if let Some(e) = msg.envid.as_deref().filter(|e| !e.is_empty()) {
                mail.push_str(&format!(" ENVID={}", xtext(e, "+=")));
            }
            if msg.ret_flags & DSN_RET_FULL != 0 {
                mail.push_str(" RET=FULL");
            } else if msg.ret_flags & DSN_RET_HDRS != 0 {
                mail.push_str(" RET=HDRS");
            }
        }
        if self.features.smtputf8 && msg.smtputf8 & SMTPUTF8_FLAG_REQUESTED != 0 {
            mail.push_str(" SMTPUTF8");
        }
        cmds.push((Cmd::Mail, mail));
        for &i in &rcpts {
            let r = &st.rcpts[i];
            let mut c = format!("RCPT TO:<{}>", quote_821(&r.address));
            if self.features.dsn {
                // smtp_proto.c: the queued ORCPT, else one made from the original
                // recipient.
                if let Some(o) = r.orcpt.as_deref().filter(|o| !o.is_empty()) {
                    c.push_str(&format!(" ORCPT={}", xtext(o, "=")));
                } else if let Some(o) = r.original.as_deref().filter(|o| !o.is_empty()) {
                    let orcpt = format!("rfc822;{}", crate::queue::header::quote_822_local(o));
                    c.push_str(&format!(" ORCPT={}", xtext(&orcpt, "=")));
                }
                if let Some(n) = r.notify.as_deref().filter(|n| !n.is_empty()) {
                    c.push_str(&format!(" NOTIFY={n}"));
                }
            }
            cmds.push((Cmd::Rcpt(i), c));
        }
        cmds.push((Cmd::Data, "DATA".into()));

        let mut sent = 0usize;
        let mut recvd = 0usize;
        let mut mail_rejected = false;
        let mut accepted: Vec<usize> = Vec::new();
        let mut data_ok = false;
        st.setup_done = Some(Instant::now());
        while sent < cmds.len() {
            // Course corrections happen only when every reply is in (Postfix).
            if sent == recvd {
                let abort = match cmds[sent].0 {
                    Cmd::Rcpt(_) => mail_rejected,
                    Cmd::Data => mail_rejected || accepted.is_empty(),
                    Cmd::Mail => false,
                };
                if abort {
                    // "sending final RSET": its reply is read but no longer judged; a
                    // session whose RSET was refused is not cached.
                    if self.conn.write_all(b"RSET\r\n", p.rset_timeout).is_err() {
                        return Err(Stop::Dead);
                    }
                    return match reply::read(
                        &mut self.conn,
                        p.rset_timeout,
                        p.reply_line_limit,
                        &mut self.notes,
                    ) {
                        Ok(r) if r.class() == 2 => Err(Stop::Aborted),
                        Ok(_) => Err(Stop::Quit),
                        Err(_) => Err(Stop::Dead),
                    };
                }
            }
            let mut batch = Vec::new();
            let mut end = sent;
            while end < cmds.len() {
                let c = &cmds[end].1;
                if end > sent
                    && (!self.features.pipelining || batch.len() + c.len() + 2 > PIPELINING_BUFSIZE)
                {
                    break;
                }
                batch.extend_from_slice(c.as_bytes());
                batch.extend_from_slice(b"\r\n");
                end += 1;
            }
            let (wt, wwhat) = match cmds[sent].0 {
                Cmd::Mail => (p.mail_timeout, "sending MAIL FROM"),
                Cmd::Rcpt(_) => (p.rcpt_timeout, "sending RCPT TO"),
                Cmd::Data => (p.data_init_timeout, "sending DATA command"),
            };
            if let Err(f) = self.conn.write_all(&batch, wt) {
                return Err(self.except(st, f, wwhat));
            }
            sent = end;
            while recvd < sent {
                let (cmd, (timeout, what)) = match cmds[recvd].0 {
                    Cmd::Mail => (Cmd::Mail, (p.mail_timeout, "sending MAIL FROM")),
                    Cmd::Rcpt(i) => (Cmd::Rcpt(i), (p.rcpt_timeout, "sending RCPT TO")),
                    Cmd::Data => (Cmd::Data, (p.data_init_timeout, "sending DATA command")),
                };
                let r = self.resp(st, timeout, what)?;
                recvd += 1;
                match cmd {
                    Cmd::Mail => {
                        if r.class() != 2 {
                            let text = self.said(&r, "MAIL FROM command");
                            st.bulk_fail(&rcpts, Why::remote(&host, &r, text, &relay));
                            mail_rejected = true;
                        }
                    }
                    Cmd::Rcpt(i) => {
                        if !mail_rejected {
                            if r.class() == 2 {
                                accepted.push(i);
                            } else {
                                let text = self.said(&r, "RCPT TO command");
                                st.rcpt_fail(i, Why::remote(&host, &r, text, &relay));
                            }
                        }
                    }
                    Cmd::Data => {
                        if r.class() == 3 {
                            data_ok = true;
                        } else if !accepted.is_empty() {
                            let text = self.said(&r, "DATA command");
                            st.bulk_fail(&accepted, Why::remote(&host, &r, text, &relay));
                        }
                    }
                }
            }
        }
        if !data_ok {
            return Err(Stop::Quit);
        }
        if accepted.is_empty() {
            // RFC 2920: DATA was accepted although no recipient was; end it empty.
            if let Err(f) = self.conn.write_all(b".\r\n", p.data_xfer_timeout) {
                return Err(self.except(st, f, "sending message body"));
            }
            let _ = self.resp(
                st,
                p.data_done_timeout,
                "sending end of data -- message may be sent more than once",
            )?;
            return Err(Stop::Quit);
        }
        if let Err(f) = self.send_body(st) {
            // Postfix: after a lost connection inside DATA, look for a premature reply (a
            // server that rejected the message early) before reporting the loss.
            let early = match f {
                IoFail::Eof => reply::read(
                    &mut self.conn,
                    p.data_done_timeout,
                    p.reply_line_limit,
                    &mut self.notes,
                )
                .ok(),
                IoFail::Timeout => None,
            };
            self.flush_notes(st);
            match early {
                Some(r) if r.class() != 2 => {
                    let text = self.said(&r, "end of DATA command");
                    st.bulk_fail(&accepted, Why::remote(&host, &r, text, &relay));
                }
                Some(r) => {
                    for &i in &accepted {
                        if st.out[i].is_none() {
                            st.rcpt_done(i, &host, &r, &relay);
                        }
                    }
                }
                None => {
                    let text = match f {
                        IoFail::Eof => format!(
                            "lost connection with {} while sending message body",
                            self.namaddr
                        ),
                        IoFail::Timeout => format!(
                            "conversation with {} timed out while sending message body",
                            self.namaddr
                        ),
                    };
                    st.bulk_fail(&accepted, Why::local("4.4.2", text, &relay));
                }
            }
            return Err(Stop::Dead);
        }
        let r = self.resp(
            st,
            p.data_done_timeout,
            "sending end of data -- message may be sent more than once",
        )?;
        if r.class() != 2 {
            let text = self.said(&r, "end of DATA command");
            st.bulk_fail(&accepted, Why::remote(&host, &r, text, &relay));
        } else {
            for &i in &accepted {
                if st.out[i].is_none() {
                    st.rcpt_done(i, &host, &r, &relay);
                }
            }
        }
        Ok(())
    }

    /// The message (after the 8bit → 7bit downgrade when it applies) with CR LF line ends,
    /// dot-stuffed, lines longer than `smtp_line_length_limit` broken with CR LF SPACE,
    /// then `.`.
    fn send_body(&mut self, st: &mut State) -> Result<(), IoFail> {
        let p = st.p;
        let limit = p.smtp_line_length_limit;
        let converted;
        let content: &[u8] = if self.downgrade && downgrade::may_convert(&st.msg.content) {
            converted = downgrade::downgrade(&st.msg.content);
            &converted
        } else {
            &st.msg.content
        };
        // Sized for the message (a little over for CR LF and dot-stuffing), at most one
        // 64 KB chunk: a 65 KB buffer for every 2 KB message cost a heap consolidation at
        // each free.
        let mut out: Vec<u8> =
            Vec::with_capacity((content.len() + content.len() / 16 + 8).min(65536 + 1024));
        let mut logged = false;
        let mut rest: &[u8] = content;
        while !rest.is_empty() {
            let (line, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            rest = next;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.first() == Some(&b'.') {
                out.push(b'.');
            }
            if limit > 0 && line.len() > limit {
                if !logged {
                    log::info(
                        &st.s.ident,
                        &format!(
                            "{}: breaking line > {limit} bytes with <CR><LF>SPACE",
                            st.msg.queue_id
                        ),
                    );
                    logged = true;
                }
                let mut first = true;
                let mut l = line;
                while !l.is_empty() {
                    let room = if first { limit } else { limit - 1 };
                    let n = l.len().min(room.max(1));
                    if !first {
                        out.push(b' ');
                    }
                    out.extend_from_slice(&l[..n]);
                    out.extend_from_slice(b"\r\n");
                    l = &l[n..];
                    first = false;
                }
            } else {
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
            if out.len() >= 65536 {
                self.conn.write_all(&out, p.data_xfer_timeout)?;
                out.clear();
            }
        }
        out.extend_from_slice(b".\r\n");
        self.conn.write_all(&out, p.data_xfer_timeout)
    }

    /// QUIT; the reply is read only when `smtp_skip_quit_response = no`.
    fn quit(&mut self, st: &mut State) {
        let p = st.p;
        if self.conn.write_all(b"QUIT\r\n", p.quit_timeout).is_ok() && !p.skip_quit_response {
            let _ = reply::read(
                &mut self.conn,
                p.quit_timeout,
                p.reply_line_limit,
                &mut self.notes,
            );
        }
        self.conn.close();
    }
}
