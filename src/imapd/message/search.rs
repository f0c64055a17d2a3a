//! SEARCH keys (RFC 3501 §6.4.4, MODSEQ of RFC 7162, OLDER/YOUNGER of RFC 5032, `$` of RFC
//! 5182) parsed from the argument tree with Dovecot 2.3's error texts
//! (`mail-search-register-imap.c`: `Unknown argument FOO`, `Invalid messageset`, `Invalid
//! search size parameter` …) and evaluated as Dovecot does without a full-text index:
//! - header keys (FROM, TO, CC, BCC, SUBJECT, HEADER) look at the top header only, the
//!   value with RFC 2047 words decoded, as a case-insensitive substring; a header that is
//!   absent never matches, `""` matches any present one;
//! - BODY searches every part's body with its Content-Transfer-Encoding undone and text
//!   converted to UTF-8; TEXT also searches the top header and every part's header
//!   (MIME headers, headers of attached messages);
//! - SENT* use the Date header's own day (its timezone), a missing or broken Date is the
//!   epoch (so it is SENTBEFORE everything, as recorded from Dovecot); BEFORE/ON/SINCE use
//!   the internal date's day in its timezone; a day beyond the month rolls over (32-Dec).
//! - NOT NOT x is x, so 10,000 nested NOTs cost nothing; parenthesized nesting beyond
//!   [`MAX_DEPTH`] is refused (Dovecot takes any depth the line allows).
//!
//! The caller gives each message's metadata ([`MessageMeta`]: sequence number, UID, flags,
//! keywords, internal date, size, modseq) and, only when a key needs it, the message bytes.
//!
//! Known limits (XXX): case folding is Unicode lower-casing, not Dovecot's
//! i;unicode-casemap (titlecase + decomposition), so "ǅ" and decomposed accents may differ;
//! charsets are those `mail-parser` knows.

use super::fetch;
use super::mime::{self, Message, Part};
use crate::imap::reader::Arg;
use crate::imapd::seqset::SeqSet;

/// Parenthesized nesting refused beyond this depth.
pub const MAX_DEPTH: usize = 2000;

/// System flags.
pub const SEEN: u8 = 1;
pub const ANSWERED: u8 = 2;
pub const FLAGGED: u8 = 4;
pub const DELETED: u8 = 8;
pub const DRAFT: u8 = 16;
pub const RECENT: u8 = 32;

/// One parsed search key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    All,
    And(Vec<Key>),
    Or(Box<Key>, Box<Key>),
    Not(Box<Key>),
    Seq(SeqSet),
    Uid(SeqSet),
    /// Flags that must all be set (`mask`) or all clear (`not`).
    Flag {
        flag: u8,
        set: bool,
    },
    New,
    Old,
    Keyword(String, bool),
    /// A header field contains the text (`name` lower-case; SUBJECT is a header too).
    Header(String, String),
    /// FROM, TO, CC, BCC: the text is looked for in the field's addresses as Dovecot
    /// writes them again (`message_address_write`: comments dropped, `name <a@d>`).
    Address(String, String),
    Body(String),
    Text(String),
    Larger(u64),
    Smaller(u64),
    /// Internal date: day compare (`-1` before, `0` on, `1` since).
    Date {
        sent: bool,
        cmp: i8,
        day: i64,
    },
    Older(i64),
    Younger(i64),
    ModSeq(u64),
}

/// A parse error with Dovecot's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchError {
    pub text: String,
    /// `NO [BADCHARSET]` instead of BAD.
    pub bad_charset: bool,
}

fn err(t: &str) -> SearchError {
    SearchError {
        text: t.to_string(),
        bad_charset: false,
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Days since 1970-01-01 of a civil date (day may overflow the month, as mktime allows).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + 1 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468 + (d - 1)
}

/// A date field small enough that the arithmetic on it cannot overflow: a year, day or
/// time field of a million or more is no date (`Date: 1 Jan 99999999999999999` made the
/// seconds overflow, found by fuzzing). Smaller odd values keep their lenient meaning.
fn plausible(v: i64) -> bool {
    (-1_000_000..1_000_000).contains(&v)
}

/// `d-Mon-yyyy` (IMAP date) → day number.
pub fn parse_imap_date(s: &str) -> Option<i64> {
    let mut it = s.split('-');
    let d: i64 = it.next()?.parse().ok()?;
    let m = it.next()?.to_ascii_lowercase();
    let y: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=31 * 2).contains(&d) || !plausible(y) {
        return None;
    }
    let mi = MONTHS.iter().position(|x| *x == m)? as i64 + 1;
    Some(days_from_civil(y, mi, d))
}

/// RFC 5322 date (`[Day,] d Mon yyyy hh:mm[:ss] zone`) → (UTC seconds, zone minutes).
pub fn parse_rfc822_date(s: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(s).ok()?;
    let s = s.split_once(',').map_or(s, |(_, r)| r);
    let w: Vec<&str> = s.split_whitespace().collect();
    if w.len() < 4 {
        return None;
    }
    let d: i64 = w[0].parse().ok()?;
    let m = MONTHS
        .iter()
        .position(|x| w[1].get(..3).is_some_and(|p| x.eq_ignore_ascii_case(p)))? as i64
        + 1;
    let mut y: i64 = w[2].parse().ok()?;
    if w[2].len() <= 2 {
        y += if y < 70 { 2000 } else { 1900 };
    }
    let t: Vec<i64> = w[3]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if t.len() < 2
        || t.len() > 3
        || !plausible(d)
        || !plausible(y)
        || !t.iter().all(|&v| plausible(v))
    {
        return None;
    }
    let secs = t[0] * 3600 + t[1] * 60 + t.get(2).copied().unwrap_or(0);
    let tz = match w.get(4) {
        None => 0,
        Some(z) if (z.starts_with('+') || z.starts_with('-')) && z.len() == 5 => {
            let v: i64 = z[1..].parse().ok()?;
            let mins = v / 100 * 60 + v % 100;
            if z.starts_with('-') { -mins } else { mins }
        }
        Some(z) => match z.to_ascii_uppercase().as_str() {
            "UT" | "UTC" | "GMT" | "Z" => 0,
            "EST" => -300,
            "EDT" => -240,
            "CST" => -360,
            "CDT" => -300,
            "MST" => -420,
            "MDT" => -360,
            "PST" => -480,
            "PDT" => -420,
            _ => 0,
        },
    };
    let local = days_from_civil(y, m, d) * 86400 + secs;
    Some((local - tz * 60, tz))
}

/// Parses the search program after `SEARCH` (and after `RETURN (…)`): an optional
/// `CHARSET x` and the keys. Returns the key (an AND of all).
pub fn parse(args: &[Arg]) -> Result<Key, SearchError> {
    let mut args = args;
    if let Some(a) = args.first().and_then(Arg::atom)
        && a.eq_ignore_ascii_case("CHARSET")
    {
        let cs = args
            .get(1)
            .and_then(Arg::as_str)
            .ok_or_else(|| err("Missing argument"))?;
        if !charset_known(cs) {
            return Err(SearchError {
                text: "Unknown charset".into(),
                bad_charset: true,
            });
        }
        args = &args[2..];
    }
    if args.is_empty() {
        return Err(err("Missing search parameters"));
    }
    let mut i = 0;
    let mut keys = Vec::new();
    while i < args.len() {
        keys.push(parse_key(args, &mut i, 0)?);
    }
    Ok(if keys.len() == 1 {
        keys.pop().unwrap_or(Key::All)
    } else {
        Key::And(keys)
    })
}

/// Whether SEARCH CHARSET / SORT's charset is one Dovecot's iconv knows.
pub fn charset_known(cs: &str) -> bool {
    let l = cs.to_ascii_lowercase();
    l == "utf-8"
        || l == "us-ascii"
        || mail_parser::decoders::charsets::map::charset_decoder(l.as_bytes()).is_some()
}

fn string_arg(args: &[Arg], i: &mut usize) -> Result<String, SearchError> {
    let a = args
        .get(*i)
        .ok_or_else(|| err("Missing parameter for search key"))?;
    if matches!(a, Arg::List(_)) {
        return Err(err("Unexpected ("));
    }
    *i += 1;
    let b = a
        .astring()
        .ok_or_else(|| err("Missing parameter for search key"))?;
    Ok(String::from_utf8_lossy(b).into_owned())
}

fn parse_key(args: &[Arg], i: &mut usize, depth: usize) -> Result<Key, SearchError> {
    // NOT chains, iteratively (NOT NOT x is x).
    let mut nots = 0usize;
    loop {
        match args.get(*i).and_then(Arg::atom) {
            Some(a) if a.eq_ignore_ascii_case("NOT") => {
                nots += 1;
                *i += 1;
            }
            _ => break,
        }
    }
    let key = parse_one(args, i, depth)?;
    Ok(if nots % 2 == 1 {
        Key::Not(Box::new(key))
    } else {
        key
    })
}

fn parse_one(args: &[Arg], i: &mut usize, depth: usize) -> Result<Key, SearchError> {
    let a = args.get(*i).ok_or_else(|| err("Missing argument"))?;
    *i += 1;
    if let Arg::List(items) = a {
        // Unwrap single-element lists without recursing.
        let mut items: &[Arg] = items;
        while let [Arg::List(inner)] = items {
            items = inner;
        }
        if items.is_empty() {
            return Err(err("No search parameters inside list"));
        }
        if depth >= MAX_DEPTH {
            return Err(err("Search parameters nested too deeply"));
        }
        let mut j = 0;
        let mut keys = Vec::new();
        while j < items.len() {
            keys.push(parse_key(items, &mut j, depth + 1)?);
        }
        return Ok(if keys.len() == 1 {
            keys.pop().unwrap_or(Key::All)
        } else {
            Key::And(keys)
        });
    }
    let word = match a {
        Arg::Atom(w) => String::from_utf8_lossy(w).into_owned(),
        Arg::Nil => "NIL".into(),
        other => {
            let s = other
                .astring()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            return Err(err(&format!("Unexpected string as search key: {s}")));
        }
    };
    let up = word.to_ascii_uppercase();
    let flag = |flag, set| Ok(Key::Flag { flag, set });
    let size = |args: &[Arg], i: &mut usize| -> Result<u64, SearchError> {
        let s = string_arg(args, i)?;
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(err("Invalid search size parameter"));
        }
        s.parse().map_err(|_| err("Invalid search size parameter"))
    };
    let date = |args: &[Arg], i: &mut usize, sent, cmp| -> Result<Key, SearchError> {
        let s = string_arg(args, i)?;
        let day = parse_imap_date(&s).ok_or_else(|| err("Invalid search date parameter"))?;
        Ok(Key::Date { sent, cmp, day })
    };
    match up.as_str() {
        "ALL" => Ok(Key::All),
        "ANSWERED" => flag(ANSWERED, true),
        "UNANSWERED" => flag(ANSWERED, false),
        "DELETED" => flag(DELETED, true),
        "UNDELETED" => flag(DELETED, false),
        "DRAFT" => flag(DRAFT, true),
        "UNDRAFT" => flag(DRAFT, false),
        "FLAGGED" => flag(FLAGGED, true),
        "UNFLAGGED" => flag(FLAGGED, false),
        "SEEN" => flag(SEEN, true),
        "UNSEEN" => flag(SEEN, false),
        "RECENT" => flag(RECENT, true),
        "OLD" => Ok(Key::Old),
        "NEW" => Ok(Key::New),
        "KEYWORD" => Ok(Key::Keyword(string_arg(args, i)?, true)),
        "UNKEYWORD" => Ok(Key::Keyword(string_arg(args, i)?, false)),
        "SUBJECT" => Ok(Key::Header(up.to_ascii_lowercase(), string_arg(args, i)?)),
        "FROM" | "TO" | "CC" | "BCC" => {
            Ok(Key::Address(up.to_ascii_lowercase(), string_arg(args, i)?))
        }
        "HEADER" => {
            let name = string_arg(args, i)?;
            Ok(Key::Header(name.to_ascii_lowercase(), string_arg(args, i)?))
        }
        "BODY" => Ok(Key::Body(string_arg(args, i)?)),
        "TEXT" => Ok(Key::Text(string_arg(args, i)?)),
        "LARGER" => Ok(Key::Larger(size(args, i)?)),
        "SMALLER" => Ok(Key::Smaller(size(args, i)?)),
        "BEFORE" => date(args, i, false, -1),
        "ON" => date(args, i, false, 0),
        "SINCE" => date(args, i, false, 1),
        "SENTBEFORE" => date(args, i, true, -1),
        "SENTON" => date(args, i, true, 0),
        "SENTSINCE" => date(args, i, true, 1),
        "OLDER" | "YOUNGER" => {
            let s = string_arg(args, i)?;
            let v: i64 = s
                .parse()
                .ok()
                .filter(|_| s.bytes().all(|c| c.is_ascii_digit()))
                .ok_or_else(|| err("Invalid search interval parameter"))?;
            Ok(if up == "OLDER" {
                Key::Older(v)
            } else {
                Key::Younger(v)
            })
        }
        "UID" => {
            let s = string_arg(args, i)?;
            SeqSet::parse(s.as_bytes())
                .map(Key::Uid)
                .ok_or_else(|| err("Invalid UID messageset"))
        }
        "OR" => {
            let a = parse_key(args, i, depth + 1)?;
            let b = parse_key(args, i, depth + 1)?;
            Ok(Key::Or(Box::new(a), Box::new(b)))
        }
        "MODSEQ" => {
            // Optional entry name and type (`"/flags/\\seen" all`) before the value.
            let mut s = string_arg(args, i)?;
            if !s.bytes().all(|c| c.is_ascii_digit()) {
                let t = string_arg(args, i)?.to_ascii_lowercase();
                if !matches!(t.as_str(), "priv" | "shared" | "all") {
                    return Err(err("Invalid MODSEQ type"));
                }
                s = string_arg(args, i)?;
            }
            s.parse()
                .map(Key::ModSeq)
                .map_err(|_| err("Invalid MODSEQ value"))
        }
        _ if SeqSet::looks_like(word.as_bytes()) => SeqSet::parse(word.as_bytes())
            .map(Key::Seq)
            .ok_or_else(|| err("Invalid messageset")),
        _ => Err(err(&format!("Unknown argument {word}"))),
    }
}

/// What a caller knows of one message.
#[derive(Debug, Clone, Default)]
pub struct MessageMeta {
    pub seq: u32,
    pub uid: u32,
    /// [`SEEN`] | [`ANSWERED`] | …
    pub flags: u8,
    pub keywords: Vec<String>,
    /// INTERNALDATE as UTC seconds and its zone in minutes.
    pub internal_date: i64,
    pub internal_tz: i64,
    /// RFC822.SIZE.
    pub size: u64,
    pub modseq: u64,
}

/// The mailbox around the messages.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// EXISTS (what `*` is for message numbers).
    pub count: u32,
    /// The highest UID (what `*` is for UIDs).
    pub last_uid: u32,
    /// `$`: the saved result as message numbers, sorted.
    pub saved: Vec<u32>,
    /// Now, UTC seconds (OLDER/YOUNGER).
    pub now: i64,
}

/// Evaluates `key` for one message; `message` is called only when a key needs the bytes.
pub fn matches(
    key: &Key,
    meta: &MessageMeta,
    ctx: &Context,
    message: &mut dyn FnMut() -> Option<Message>,
) -> bool {
    let mut cache: Option<Option<Message>> = None;
    eval(key, meta, ctx, &mut |f: &mut dyn FnMut(
        &Message,
    ) -> bool| {
        let m = cache.get_or_insert_with(&mut *message);
        m.as_ref().is_some_and(f)
    })
}

type WithMsg<'a> = dyn FnMut(&mut dyn FnMut(&Message) -> bool) -> bool + 'a;

fn eval(key: &Key, meta: &MessageMeta, ctx: &Context, msg: &mut WithMsg<'_>) -> bool {
    match key {
        Key::All => true,
        Key::And(ks) => ks.iter().all(|k| eval(k, meta, ctx, msg)),
        Key::Or(a, b) => eval(a, meta, ctx, msg) || eval(b, meta, ctx, msg),
        Key::Not(k) => !eval(k, meta, ctx, msg),
        Key::Seq(s) => s.contains(meta.seq, ctx.count, &ctx.saved),
        Key::Uid(s) => match s {
            // `UID $` is the same saved set (held as message numbers).
            SeqSet::Saved => ctx.saved.binary_search(&meta.seq).is_ok(),
            _ => s.contains(meta.uid, ctx.last_uid, &[]),
        },
        Key::Flag { flag, set } => (meta.flags & flag != 0) == *set,
        Key::New => meta.flags & RECENT != 0 && meta.flags & SEEN == 0,
        Key::Old => meta.flags & RECENT == 0,
        Key::Keyword(k, set) => meta.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) == *set,
        Key::Larger(n) => meta.size > *n,
        Key::Smaller(n) => meta.size < *n,
        Key::ModSeq(n) => meta.modseq >= *n,
        Key::Older(s) => meta.internal_date <= ctx.now - s,
        Key::Younger(s) => meta.internal_date >= ctx.now - s,
        Key::Date {
            sent: false,
            cmp,
            day,
        } => cmp_day(
            (meta.internal_date + meta.internal_tz * 60).div_euclid(86400),
            *cmp,
            *day,
        ),
        Key::Date {
            sent: true,
            cmp,
            day,
        } => msg(&mut |m: &Message| {
            let (t, tz) = header_values(m, "date")
                .last()
                .and_then(|d| parse_rfc822_date(d))
                .unwrap_or((0, 0));
            cmp_day((t + tz * 60).div_euclid(86400), *cmp, *day)
        }),
        Key::Header(name, text) => msg(&mut |m: &Message| {
            // Header values are compared with white space runs folded to one space (a
            // recorded Dovecot match: "re: lunch" in "re: RE:  Lunch").
            let needle = squeeze(&fold(text));
            header_values(m, name)
                .iter()
                .any(|v| squeeze(&fold(&decode_header(v))).contains(&needle))
        }),
        Key::Address(name, text) => msg(&mut |m: &Message| {
            let needle = squeeze(&fold(text));
            header_values(m, name).iter().any(|v| {
                let v = write_addresses(&super::rfc822::parse_addresses(v));
                squeeze(&fold(&decode_header(&v))).contains(&needle)
            })
        }),
        Key::Body(text) => msg(&mut |m: &Message| {
            let needle = fold(text);
            any_text(m, &m.root, false, &mut |t| fold(t).contains(&needle))
        }),
        Key::Text(text) => msg(&mut |m: &Message| {
            let needle = fold(text);
            header_values(m, "")
                .iter()
                .any(|v| fold(&decode_header(v)).contains(&needle))
                || any_text(m, &m.root, true, &mut |t| fold(t).contains(&needle))
        }),
    }
}

fn cmp_day(d: i64, cmp: i8, day: i64) -> bool {
    match cmp {
        -1 => d < day,
        0 => d == day,
        _ => d >= day,
    }
}

fn fold(s: &str) -> String {
    s.to_lowercase()
}

fn squeeze(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut ws = false;
    for c in s.chars() {
        if c.is_whitespace() {
            if !ws {
                out.push(' ');
            }
            ws = true;
        } else {
            out.push(c);
            ws = false;
        }
    }
    out
}

/// Values of a top-level header field (`""`: every field, for TEXT).
/// An address list as Dovecot's `message_address_write` gives it: `mailbox@domain`,
/// `name <@route:mailbox@domain>`, `group: a, b;`.
fn write_addresses(list: &[super::rfc822::Address]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let mut first = true;
    let mut in_group = false;
    for a in list {
        if first {
            first = false;
        } else {
            out.extend_from_slice(b", ");
        }
        match &a.domain {
            None => {
                if !in_group {
                    if let Some(g) = &a.mailbox {
                        out.extend_from_slice(g);
                    }
                    out.extend_from_slice(b": ");
                    first = true;
                } else {
                    if out.ends_with(b", ") {
                        out.truncate(out.len() - 2);
                    }
                    out.push(b';');
                }
                in_group = !in_group;
            }
            Some(domain) => {
                let name = a.name.as_deref().filter(|n| !n.is_empty());
                if name.is_none() && a.route.is_none() {
                    out.extend_from_slice(a.mailbox.as_deref().unwrap_or_default());
                    if !domain.is_empty() {
                        out.push(b'@');
                        out.extend_from_slice(domain);
                    }
                } else {
                    if let Some(n) = name {
                        out.extend_from_slice(n);
                        out.push(b' ');
                    }
                    out.push(b'<');
                    if let Some(r) = &a.route {
                        out.push(b'@');
                        out.extend_from_slice(r);
                        out.push(b':');
                    }
                    out.extend_from_slice(a.mailbox.as_deref().unwrap_or_default());
                    if !domain.is_empty() {
                        out.push(b'@');
                        out.extend_from_slice(domain);
                    }
                    out.push(b'>');
                }
            }
        }
    }
    out
}

fn header_values(m: &Message, name: &str) -> Vec<Vec<u8>> {
    mime::fields(m.root.header(&m.raw))
        .into_iter()
        .filter(|f| name.is_empty() || f.name.eq_ignore_ascii_case(name.as_bytes()))
        .map(|f| {
            if name.is_empty() {
                let mut v = f.name.to_vec();
                v.extend_from_slice(b": ");
                v.extend_from_slice(&f.value);
                v
            } else {
                f.value
            }
        })
        .collect()
}

/// Text of bytes in a charset (UTF-8 when unknown or invalid, lossy).
fn to_utf8(data: &[u8], charset: Option<&[u8]>) -> String {
    if let Some(cs) = charset {
        let l = cs.to_ascii_lowercase();
        if l != b"utf-8"
            && l != b"us-ascii"
            && let Some(dec) = mail_parser::decoders::charsets::map::charset_decoder(&l)
        {
            return dec(data);
        }
    }
    String::from_utf8_lossy(data).into_owned()
}

/// A header value with RFC 2047 encoded words decoded (white space between adjacent
/// encoded words dropped), raw 8-bit taken as UTF-8.
pub fn decode_header(v: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    let mut pending_ws = String::new();
    let mut last_was_word = false;
    while i < v.len() {
        if v[i..].starts_with(b"=?")
            && let Some((text, len)) = encoded_word(&v[i..])
        {
            if !last_was_word {
                out.push_str(&pending_ws);
            }
            pending_ws.clear();
            out.push_str(&text);
            i += len;
            last_was_word = true;
            continue;
        }
        if matches!(v[i], b' ' | b'\t' | b'\r' | b'\n') {
            pending_ws.push(if v[i] == b'\n' || v[i] == b'\r' {
                ' '
            } else {
                v[i] as char
            });
            i += 1;
            continue;
        }
        let end = v[i..]
            .iter()
            .position(|&c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
            .map_or(v.len(), |p| i + p);
        out.push_str(&pending_ws);
        pending_ws.clear();
        out.push_str(&String::from_utf8_lossy(&v[i..end]));
        i = end;
        last_was_word = false;
    }
    out.push_str(&pending_ws);
    out
}

fn encoded_word(v: &[u8]) -> Option<(String, usize)> {
    let body = &v[2..];
    let q1 = body.iter().position(|&c| c == b'?')?;
    let charset = &body[..q1];
    let charset = charset.split(|&c| c == b'*').next().unwrap_or(charset);
    let enc = *body.get(q1 + 1)?;
    if body.get(q1 + 2) != Some(&b'?') {
        return None;
    }
    let rest = &body[q1 + 3..];
    let end = rest.windows(2).position(|w| w == b"?=")?;
    let data = &rest[..end];
    if data.iter().any(|&c| c == b' ' || c == b'\n') {
        return None;
    }
    let bytes = match enc.to_ascii_lowercase() {
        b'b' => fetch::decode_base64(data),
        b'q' => {
            let mut out = Vec::new();
            let mut k = 0;
            while k < data.len() {
                match data[k] {
                    b'_' => out.push(b' '),
                    b'=' if k + 2 < data.len() + 1 => {
                        let h = |c: u8| (c as char).to_digit(16);
                        match (
                            data.get(k + 1).and_then(|&c| h(c)),
                            data.get(k + 2).and_then(|&c| h(c)),
                        ) {
                            (Some(a), Some(b)) => {
                                out.push((a * 16 + b) as u8);
                                k += 2;
                            }
                            _ => out.push(b'='),
                        }
                    }
                    c => out.push(c),
                }
                k += 1;
            }
            out
        }
        _ => return None,
    };
    Some((to_utf8(&bytes, Some(charset)), 2 + q1 + 3 + end + 2))
}

/// Calls `f` with the text of every leaf part's decoded body (and, with `headers`, every
/// part's header below the top) until it returns true.
fn any_text(m: &Message, part: &Part, headers: bool, f: &mut dyn FnMut(&str) -> bool) -> bool {
    let mut stack: Vec<(&Part, bool)> = vec![(part, true)];
    while let Some((p, top)) = stack.pop() {
        if headers && !top && f(&decode_header(p.header(&m.raw))) {
            return true;
        }
        if p.children.is_empty() {
            // Dovecot's message-search.c looks into text/* and message/* bodies only
            // (a part without Content-Type is text/plain).
            if !text_part(m, p) {
                continue;
            }
            let (body, charset) = decoded_body(m, p);
            if f(&to_utf8(&body, charset.as_deref())) {
                return true;
            }
        } else if !p.is(mime::MULTIPART) && !p.is(mime::RFC822) {
            continue;
        }
        for c in p.children.iter().rev() {
            stack.push((c, false));
        }
    }
    false
}

/// Whether a part's (last) Content-Type is text/* or message/*, or missing.
fn text_part(m: &Message, p: &Part) -> bool {
    let mut text = true;
    for f in mime::fields(p.header(&m.raw)) {
        if f.name.eq_ignore_ascii_case(b"Content-Type") {
            let mut rp = super::rfc822::Parser::new(&f.value);
            rp.skip_lwsp();
            let mut ct = Vec::new();
            let _ = rp.content_type(&mut ct);
            let ct = ct.to_ascii_lowercase();
            text = ct.starts_with(b"text/") || ct.starts_with(b"message/");
        }
    }
    text
}

/// A leaf part's body with its transfer encoding undone, and its charset parameter.
fn decoded_body(m: &Message, p: &Part) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut cte = Vec::new();
    let mut charset = None;
    for f in mime::fields(p.header(&m.raw)) {
        if f.name.eq_ignore_ascii_case(b"Content-Transfer-Encoding") {
            cte = f.value.trim_ascii().to_ascii_lowercase();
        } else if f.name.eq_ignore_ascii_case(b"Content-Type") && charset.is_none() {
            let mut rp = super::rfc822::Parser::new(&f.value);
            let mut ct = Vec::new();
            if rp.content_type(&mut ct) >= 0 {
                charset = rp
                    .rfc2231_params()
                    .into_iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(b"charset"))
                    .map(|(_, v)| v);
            }
        }
    }
    let body = p.body(&m.raw);
    let data = match cte.as_slice() {
        b"base64" => fetch::decode_base64(body),
        b"quoted-printable" => fetch::decode_qp(body),
        _ => body.to_vec(),
    };
    (data, charset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::reader::parse_args;

    #[test]
    fn parse_errors_as_dovecot() {
        for (line, e) in [
            (&b"FOO"[..], "Unknown argument FOO"),
            (b"LARGER x", "Invalid search size parameter"),
            (b"UID 0", "Invalid UID messageset"),
            (b"0", "Invalid messageset"),
        ] {
            assert_eq!(
                parse(&parse_args(line).unwrap()).unwrap_err().text,
                e,
                "{line:?}"
            );
        }
        assert!(
            parse(&parse_args(b"CHARSET X-NOSUCH FROM bob").unwrap())
                .unwrap_err()
                .bad_charset
        );
        assert_eq!(parse(&[]).unwrap_err().text, "Missing search parameters");
    }

    #[test]
    fn ten_thousand_nots() {
        let mut line = b"NOT ".repeat(10000);
        line.extend_from_slice(b"ALL");
        assert_eq!(parse(&parse_args(&line).unwrap()), Ok(Key::All));
        line.splice(0..0, b"NOT ".iter().copied());
        assert_eq!(
            parse(&parse_args(&line).unwrap()),
            Ok(Key::Not(Box::new(Key::All)))
        );
    }

    #[test]
    fn addresses_written_again_as_dovecot() {
        use super::super::rfc822::parse_addresses;
        for (value, want) in [
            (
                &b"<user-from (comment)@ (comment) domain.org>"[..],
                "user-from@domain.org",
            ),
            // A comment stands in for the missing display name (message_address_parse).
            (
                b"user-from@domain.org (RealFrom)",
                "RealFrom <user-from@domain.org>",
            ),
            (
                b"RealFrom <user-from@domain.org>",
                "RealFrom <user-from@domain.org>",
            ),
            (
                b"groupname: a@d.org, b@d.org;, g2: c@d.org;",
                "groupname: a@d.org, b@d.org;, g2: c@d.org;",
            ),
        ] {
            assert_eq!(
                String::from_utf8_lossy(&write_addresses(&parse_addresses(value))),
                want,
                "{value:?}"
            );
        }
    }

    #[test]
    fn dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(
            parse_imap_date("32-Dec-2026"),
            parse_imap_date("1-Jan-2027")
        );
        assert_eq!(
            parse_rfc822_date(b"Sun, 6 Dec 2026 23:59:59 -0800").map(|(_, tz)| tz),
            Some(-480)
        );
    }
}

impl Key {
    /// Whether the key uses MODSEQ (the reply then ends in `(MODSEQ n)`, RFC 7162 §3.1.5).
    pub fn has_modseq(&self) -> bool {
        self.any(&|k| matches!(k, Key::ModSeq(_)))
    }

    /// Whether the key compares sizes (LARGER, SMALLER).
    pub fn needs_size(&self) -> bool {
        self.any(&|k| matches!(k, Key::Larger(_) | Key::Smaller(_)))
    }

    /// Whether the key compares internal dates (BEFORE, ON, SINCE, OLDER, YOUNGER).
    pub fn needs_date(&self) -> bool {
        self.any(&|k| {
            matches!(
                k,
                Key::Older(_) | Key::Younger(_) | Key::Date { sent: false, .. }
            )
        })
    }

    /// Whether some part of the key is one `f` accepts.
    fn any(&self, f: &dyn Fn(&Key) -> bool) -> bool {
        let mut stack = vec![self];
        while let Some(k) = stack.pop() {
            if f(k) {
                return true;
            }
            match k {
                Key::And(v) => stack.extend(v.iter()),
                Key::Or(a, b) => {
                    stack.push(a);
                    stack.push(b);
                }
                Key::Not(a) => stack.push(a),
                _ => {}
            }
        }
        false
    }
}

/// A sorted list of numbers as a sequence set (`1:3,7`), as ESEARCH ALL writes it.
pub fn seqset_string(nums: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < nums.len() {
        let start = nums[i];
        let mut end = start;
        while i + 1 < nums.len() && nums[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// The ESEARCH return options of RFC 4731 (and SAVE, RFC 5182; UPDATE and PARTIAL of
/// CONTEXT=SEARCH, RFC 5267), parsed as Dovecot 2.3's `search_parse_return_options`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReturnOptions {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
    pub save: bool,
    /// `UPDATE`: the result is kept and its changes reported (`ADDTO`/`REMOVEFROM`).
    pub update: bool,
    /// `PARTIAL m:n` (low first, as Dovecot swaps `n:m`).
    pub partial: Option<(u32, u32)>,
}

/// One message of a SEARCH/SORT result in result order, for [`ReturnOptions::reply`].
#[derive(Debug, Clone, Copy)]
pub struct Hit {
    /// The message number or UID the reply uses.
    pub id: u32,
    pub seq: u32,
    pub uid: u32,
    pub modseq: u64,
}

/// What [`ReturnOptions::reply`] gives: the `* ESEARCH` line (none for SAVE alone) and,
/// with SAVE, the UIDs to keep as `$`.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub line: Option<Vec<u8>>,
    pub saved: Option<Vec<u32>>,
}

/// `m:n` of PARTIAL: both non-zero numbers, nothing else (Dovecot's
/// `imap_partial_range_parse`).
fn partial_range(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    let num = |x: &str| -> Option<u32> {
        if x.is_empty() || !x.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        x.parse::<u32>().ok().filter(|n| *n != 0)
    };
    let (a, b) = (num(a)?, num(b)?);
    Some((a.min(b), a.max(b)))
}

impl ReturnOptions {
    /// Parses the list after `RETURN`; `()` means ALL. Dovecot's texts: `Unknown SEARCH
    /// return option`, `SEARCH return options contain non-atoms.`, `PARTIAL range
    /// missing.`/`broken.`, `PARTIAL conflicts with ALL` …
    pub fn parse(list: &[Arg]) -> Result<ReturnOptions, SearchError> {
        let mut r = ReturnOptions::default();
        let mut i = 0;
        while i < list.len() {
            let Some(name) = list[i].atom().map(str::to_ascii_uppercase) else {
                return Err(err("SEARCH return options contain non-atoms."));
            };
            i += 1;
            match name.as_str() {
                "MIN" => r.min = true,
                "MAX" => r.max = true,
                "ALL" => r.all = true,
                "COUNT" => r.count = true,
                "SAVE" => r.save = true,
                "CONTEXT" => {}
                "UPDATE" => {
                    if r.update {
                        return Err(err("SEARCH return options have duplicate UPDATE."));
                    }
                    r.update = true;
                }
                "PARTIAL" => {
                    if r.partial.is_some() {
                        return Err(err("PARTIAL can be used only once."));
                    }
                    let Some(range) = list.get(i).and_then(Arg::atom) else {
                        return Err(err("PARTIAL range missing."));
                    };
                    let Some(range) = partial_range(range) else {
                        return Err(err("PARTIAL range broken."));
                    };
                    r.partial = Some(range);
                    i += 1;
                }
                _ => return Err(err("Unknown SEARCH return option")),
            }
        }
        if r.partial.is_some() && r.all {
            return Err(err("PARTIAL conflicts with ALL"));
        }
        if r == ReturnOptions::default() {
            r.all = true;
        }
        Ok(r)
    }

    /// The reply to a SEARCH/SORT with these options over `hits` (result order), as
    /// Dovecot's `cmd_search_more` and `imap_search_send_result`: MIN, MAX, ALL, PARTIAL,
    /// COUNT, MODSEQ (the highest of the messages the options returned, when `modseq`);
    /// `$` gets what Dovecot's `search_update_mail` saw.
    pub fn reply(&self, tag: &str, uid: bool, hits: &[Hit], modseq: bool) -> Reply {
        let mut result: Vec<u32> = Vec::new();
        let mut saved: Vec<u32> = Vec::new();
        let mut top_modseq = 0u64;
        let mut last_updated: Option<u32> = None;
        let mut min_id: Option<u32> = None;
        let save = self.save;
        let mut update = |h: &Hit, last: &mut Option<u32>, saved: &mut Vec<u32>| {
            if *last == Some(h.seq) {
                return;
            }
            *last = Some(h.seq);
            if modseq {
                top_modseq = top_modseq.max(h.modseq);
            }
            if save {
                saved.push(h.uid);
            }
        };
        for (n, h) in hits.iter().enumerate() {
            let count = n as u32 + 1;
            if self.min && min_id.is_none() {
                min_id = Some(h.id);
                update(h, &mut last_updated, &mut saved);
            }
            if self.all {
                result.push(h.id);
            } else if let Some((p1, p2)) = self.partial {
                if p1 <= count && count <= p2 {
                    result.push(h.id);
                } else {
                    if self.count && self.save {
                        saved.push(h.uid);
                    }
                    continue;
                }
            } else if self.count {
            } else if self.min || self.max {
                continue;
            }
            update(h, &mut last_updated, &mut saved);
        }
        if self.max
            && let Some(h) = hits.last()
            && last_updated != Some(h.seq)
            && (modseq || self.save)
        {
            update(h, &mut last_updated, &mut saved);
        }
        let mut out = Reply::default();
        if self.save {
            saved.sort_unstable();
            saved.dedup();
            out.saved = Some(saved);
        }
        let only_save = self.save
            && !(self.min || self.max || self.all || self.count || self.update)
            && self.partial.is_none();
        if only_save {
            return out;
        }
        let mut line = format!("* ESEARCH (TAG \"{}\")", quote_escape(tag));
        if uid {
            line.push_str(" UID");
        }
        if let Some(m) = min_id {
            line.push_str(&format!(" MIN {m}"));
        }
        if self.max
            && let Some(h) = hits.last()
        {
            line.push_str(&format!(" MAX {}", h.id));
        }
        if self.all && !result.is_empty() {
            line.push_str(&format!(" ALL {}", seqset_string_unsorted(&result)));
        }
        if let Some((p1, p2)) = self.partial {
            let set = if result.is_empty() {
                "NIL".to_string()
            } else {
                seqset_string_unsorted(&result)
            };
            line.push_str(&format!(" PARTIAL ({p1}:{p2} {set})"));
        }
        if self.count {
            line.push_str(&format!(" COUNT {}", hits.len()));
        }
        if top_modseq != 0 {
            line.push_str(&format!(" MODSEQ {top_modseq}"));
        }
        line.push_str("\r\n");
        out.line = Some(line.into_bytes());
        out
    }

    /// What `SAVE` keeps of `result` (RFC 5182 §2.4: with MIN and/or MAX but not ALL or
    /// COUNT, only those).
    pub fn saved(&self, result: &[u32]) -> Vec<u32> {
        if self.save && (self.min || self.max) && !self.all && !self.count {
            let mut v = Vec::new();
            if self.min {
                v.extend(result.first().copied());
            }
            if self.max {
                v.extend(result.last().copied());
            }
            v.sort_unstable();
            v.dedup();
            v
        } else {
            result.to_vec()
        }
    }

    /// `* ESEARCH (TAG "t") [UID] MIN a MAX b ALL set COUNT n` (Dovecot's order; nothing
    /// but the tag for an empty result). `result` is in result order (sorted for SEARCH,
    /// sort order for ESORT); MIN/MAX are the first/last of it.
    pub fn esearch(&self, tag: &str, uid: bool, result: &[u32]) -> Vec<u8> {
        let hits: Vec<Hit> = result
            .iter()
            .map(|&n| Hit {
                id: n,
                seq: n,
                uid: n,
                modseq: 0,
            })
            .collect();
        self.reply(tag, uid, &hits, false).line.unwrap_or_default()
    }
}

/// `"` and `\\` escaped for a quoted string.
fn quote_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Ranges of consecutive ascending numbers in the given order (ESORT keeps sort order).
pub fn seqset_string_unsorted(nums: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < nums.len() {
        let start = nums[i];
        let mut j = i;
        while j + 1 < nums.len() && nums[j + 1] == nums[j] + 1 {
            j += 1;
        }
        parts.push(if j == i {
            start.to_string()
        } else {
            format!("{start}:{}", nums[j])
        });
        i = j + 1;
    }
    parts.join(",")
}
