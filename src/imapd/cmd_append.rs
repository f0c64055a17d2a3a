//! APPEND with MULTIAPPEND (RFC 3502), CATENATE (RFC 4469; `TEXT` literals and `URL`s
//! of messages in the user's own mailboxes) and UIDPLUS's APPENDUID (RFC 4315), as
//! Dovecot 2.3's `cmd-append.c` answers it.
//!
//! The reader ([`crate::imap::reader`]) announces each APPEND literal before its bytes: the
//! arguments so far are checked then, so a bad flag or date is refused before the client
//! sends the message (`BAD`, the literal not taken) and a missing mailbox with `NO
//! [TRYCREATE]` (a synchronizing literal is refused; a non-synchronizing one is read and
//! dropped, as Dovecot does). The bytes go to a [`Spool`]; when the command line is
//! complete, all its messages are saved in one store call (MULTIAPPEND is atomic).

use super::cmd_fetch::section_for_url;
use super::session::{Done, Session, bad_cmd};
use super::spool::Spool;
use crate::imap::reader::{Arg, ParseError, parse_args_with};
use crate::mailbox::{Flags, MailboxError, NewMessage};

/// An APPEND whose literals are being received.
pub(crate) struct AppendState {
    tag: String,
    /// The finished literals, in order.
    literals: Vec<Spool>,
    /// The literal being received (`None`: dropped).
    current: Option<Spool>,
    /// The reply decided early (a missing mailbox), sent when the line is complete.
    failed: Option<Done>,
    /// The reply was sent early (a zero-byte message): the rest of the line is read and
    /// dropped.
    answered: bool,
    /// The literal being received is a literal8 (`~{n}`, RFC 3516): its binary part is
    /// saved as base64, as Dovecot's binary converter does.
    binary: bool,
    /// Bytes and messages of this command's literals so far (the quota check).
    quota_bytes: u64,
    quota_count: u64,
}

/// One message of the command: flags, keywords, date, and its parts.
struct Spec {
    flags: Flags,
    keywords: Vec<String>,
    date: Option<i64>,
    parts: Vec<PartSpec>,
}

enum PartSpec {
    /// The n-th streamed literal.
    Literal(usize),
    /// A CATENATE URL.
    Url(String),
}

/// The arguments of a command line cut off at a literal: lists still open are closed.
fn head_args(head: &[u8]) -> Result<Vec<Arg>, ParseError> {
    let mut buf = head.to_vec();
    for _ in 0..64 {
        match parse_args_with(&buf, true) {
            Err(ParseError("Missing ')'")) => buf.push(b')'),
            other => return other,
        }
    }
    parse_args_with(&buf, true)
}

/// IMAP's date-time (`"07-Dec-2026 10:00:00 +0000"`) as Unix seconds.
fn parse_date_time(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let (date, rest) = s.split_once(' ')?;
    let (time, zone) = rest.split_once(' ')?;
    let day = super::message::search::parse_imap_date(date)?;
    let hms: Vec<&str> = time.split(':').collect();
    if hms.len() != 3 || hms.iter().any(|p| p.len() != 2) {
        return None;
    }
    let h: i64 = hms[0].parse().ok()?;
    let m: i64 = hms[1].parse().ok()?;
    let sec: i64 = hms[2].parse().ok()?;
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let (sign, z) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    if z.len() != 4 || !z.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let zh: i64 = z[..2].parse().ok()?;
    let zm: i64 = z[2..].parse().ok()?;
    let offset = sign * (zh * 60 + zm) * 60;
    Some(day * 86400 + h * 3600 + m * 60 + sec - offset)
}

/// The message specifications after the mailbox name. With `partial`, the arguments end
/// where a literal is being announced: the last spec may lack its message.
fn parse_specs(args: &[Arg], partial: bool) -> Result<Vec<Spec>, String> {
    let mut specs = Vec::new();
    let mut i = 0;
    let mut literal = 0usize;
    while i < args.len() || (specs.is_empty() && !partial) {
        let mut spec = Spec {
            flags: Flags::empty(),
            keywords: Vec::new(),
            date: None,
            parts: Vec::new(),
        };
        if let Some(Arg::List(fl)) = args.get(i) {
            for f in fl {
                let Some(name) = f.atom() else {
                    return Err("Flags list contains non-atoms.".into());
                };
                if let Some(sys) = name.strip_prefix('\\') {
                    match Flags::from_name(name) {
                        Some(x) => spec.flags.insert(x),
                        None => {
                            return Err(format!(
                                "Invalid system flag \\{}",
                                sys.to_ascii_uppercase()
                            ));
                        }
                    }
                } else if crate::mailbox::flags::valid_keyword(name) {
                    spec.keywords.push(name.to_string());
                } else {
                    return Err("Invalid keyword".into());
                }
            }
            i += 1;
        }
        if let Some(Arg::Quoted(d)) = args.get(i) {
            let d = String::from_utf8_lossy(d);
            spec.date = Some(parse_date_time(&d).ok_or("Invalid internal date.")?);
            i += 1;
        }
        match args.get(i) {
            Some(Arg::Streamed { .. }) => {
                spec.parts.push(PartSpec::Literal(literal));
                literal += 1;
                i += 1;
            }
            Some(a) if a.atom().is_some_and(|w| w.eq_ignore_ascii_case("CATENATE")) => {
                let Some(parts) = args.get(i + 1).and_then(Arg::list) else {
                    if partial && i + 1 >= args.len() {
                        specs.push(spec);
                        return Ok(specs);
                    }
                    return Err("Invalid arguments.".into());
                };
                let mut j = 0;
                while j < parts.len() {
                    let kind = parts[j].atom().map(str::to_ascii_uppercase);
                    match (kind.as_deref(), parts.get(j + 1)) {
                        (Some("TEXT"), Some(Arg::Streamed { .. })) => {
                            spec.parts.push(PartSpec::Literal(literal));
                            literal += 1;
                        }
                        (Some("URL"), Some(u)) if u.astring().is_some() => {
                            let url = String::from_utf8_lossy(u.astring().unwrap_or(b""));
                            spec.parts.push(PartSpec::Url(url.into_owned()));
                        }
                        (Some("TEXT"), None) if partial => {}
                        _ => return Err("Invalid arguments.".into()),
                    }
                    j += 2;
                }
                if spec.parts.is_empty() && !partial {
                    return Err("Invalid arguments.".into());
                }
                i += 2;
            }
            None if partial => {
                specs.push(spec);
                return Ok(specs);
            }
            Some(Arg::Literal { .. }) | Some(Arg::Quoted(_)) | Some(Arg::Atom(_)) | None => {
                return Err("Invalid arguments.".into());
            }
            Some(_) => return Err("Invalid arguments.".into()),
        }
        specs.push(spec);
    }
    Ok(specs)
}

impl Session {
    /// The reader announced an APPEND literal of `size` bytes after `head`.
    pub(crate) fn append_literal(
        &mut self,
        tag: String,
        head: Vec<u8>,
        size: u64,
        sync: bool,
        literal8: bool,
    ) {
        let first = self.append.is_none();
        if first {
            self.cmd_start = std::time::Instant::now();
            self.append = Some(AppendState {
                tag: tag.clone(),
                literals: Vec::new(),
                current: None,
                failed: None,
                answered: false,
                binary: false,
                quota_bytes: 0,
                quota_count: 0,
            });
        }
        // The arguments so far must be right before the client sends the message.
        let args = match head_args(&head) {
            Ok(a) => a,
            Err(e) => {
                self.refuse_append(&tag, super::session::bad_cmd("APPEND", e.0));
                return;
            }
        };
        if args.is_empty() || args[0].astring().is_none() {
            self.refuse_append(&tag, bad_cmd("APPEND", "Invalid arguments"));
            return;
        }
        let specs = match parse_specs(&args[1..], true) {
            Ok(s) => s,
            Err(t) => {
                self.refuse_append(&tag, bad_cmd("APPEND", &t));
                return;
            }
        };
        // A message of zero bytes (not a CATENATE part) is refused at once (Dovecot);
        // the literal and the rest of the line are then read and dropped.
        let catenating = specs.last().is_some_and(|s| !s.parts.is_empty())
            || args
                .iter()
                .any(|a| a.atom().is_some_and(|w| w.eq_ignore_ascii_case("CATENATE")))
                && matches!(args.last(), Some(Arg::List(_)));
        if size == 0 && !catenating && self.append.as_ref().is_some_and(|a| !a.answered) {
            self.finish_append(&tag, Done::No("Can't save a zero byte message.".into()));
            if let Some(a) = self.append.as_mut() {
                a.answered = true;
                a.current = None;
            }
            self.reader.accept_literal();
            return;
        }
        if first && let Some(early) = self.append_target_error(&args[0]) {
            if sync {
                self.refuse_append(&tag, early);
                return;
            }
            if let Some(a) = self.append.as_mut() {
                a.failed = Some(early);
            }
        }
        let Some(a) = self.append.as_mut() else {
            return;
        };
        if a.answered {
            a.current = None;
            self.reader.accept_literal();
            return;
        }
        if a.failed.is_some() && sync {
            let d = a.failed.take().unwrap_or(Done::Sent);
            self.refuse_append(&tag, d);
            return;
        }
        // Over quota with this literal: refused before the client sends it (Dovecot's
        // quota_test_alloc with the literal's size).
        if a.failed.is_none() && self.st.quota.is_some() {
            let (bytes, count) = (a.quota_bytes + size, a.quota_count + 1);
            a.quota_bytes = bytes;
            a.quota_count = count;
            if let Some(d) = self.quota_check(bytes, count) {
                if sync {
                    self.refuse_append(&tag, d);
                    return;
                }
                if let Some(a) = self.append.as_mut() {
                    a.failed = Some(d);
                }
            }
        }
        let Some(a) = self.append.as_mut() else {
            return;
        };
        a.current = if a.failed.is_none() {
            Some(Spool::default())
        } else {
            None
        };
        a.binary = literal8;
        let _ = size;
        self.reader.accept_literal();
    }

    /// Refuse the literal with `done` as the reply; the APPEND is over.
    fn refuse_append(&mut self, tag: &str, done: Done) {
        self.append = None;
        self.reader.refuse_literal();
        self.finish_append(tag, done);
    }

    fn finish_append(&mut self, tag: &str, done: Done) {
        match done {
            Done::Ok(t) => self.tagged(tag, "OK", &t),
            Done::No(t) => self.tagged(tag, "NO", &t),
            Done::Bad(t, _) => self.tagged(tag, "BAD", &t),
            Done::Sent => {}
            Done::Fatal => self.die(),
        }
    }

    /// A missing or invalid target mailbox (decided at the first literal).
    fn append_target_error(&mut self, name: &Arg) -> Option<Done> {
        let raw = name.astring()?;
        let vname = match super::mailbox_name::check(raw, self.ns_sep, self.store_sep) {
            Ok(v) => v,
            Err(t) => return Some(Done::No(t)),
        };
        let store_name = self.to_store_name(&vname);
        match self.store.exists(&store_name) {
            Ok(true) => None,
            Ok(false) => Some(Done::No(format!(
                "[TRYCREATE] Mailbox doesn't exist: {}.",
                super::mutf7::encode(&vname)
            ))),
            Err(e) => Some(self.store_error(&e)),
        }
    }

    pub(crate) fn append_data(&mut self, data: Vec<u8>) {
        let Some(a) = self.append.as_mut() else {
            return;
        };
        if let Some(s) = a.current.as_mut()
            && let Err(e) = s.write(&data)
        {
            a.current = None;
            a.failed = Some(Done::No(
                "[SERVERBUG] Internal error occurred. Refer to server log for more information."
                    .into(),
            ));
            let text = format!("APPEND: spooling the message: {e}");
            self.log_error(&text);
        }
    }

    pub(crate) fn append_literal_end(&mut self) {
        let Some(a) = self.append.as_mut() else {
            return;
        };
        let binary = std::mem::take(&mut a.binary);
        let finished = a.current.take().map(Spool::finish).map(|r| {
            r.and_then(
                |s| match binary.then(|| binary_to_base64(s.bytes())).flatten() {
                    Some(conv) => {
                        let mut n = Spool::default();
                        n.write(&conv)?;
                        n.finish()
                    }
                    None => Ok(s),
                },
            )
        });
        match finished {
            Some(Ok(s)) => a.literals.push(s),
            Some(Err(e)) => {
                a.failed = Some(Done::No(
                    "[SERVERBUG] Internal error occurred. Refer to server log for more information."
                        .into(),
                ));
                let text = format!("APPEND: mapping the message: {e}");
                self.log_error(&text);
            }
            None => a.literals.push(Spool::default()),
        }
    }

    /// The complete APPEND command.
    pub(crate) fn cmd_append(&mut self, tag: &str, args: &[Arg]) -> Done {
        let state = self.append.take();
        let literals = match state {
            Some(s) if s.tag == tag && s.answered => return Done::Sent,
            Some(s) if s.tag == tag => {
                if let Some(d) = s.failed {
                    return d;
                }
                s.literals
            }
            _ => Vec::new(),
        };
        let Some(name) = args.first().and_then(Arg::astring) else {
            return bad_cmd("APPEND", "Invalid arguments");
        };
        let specs = match parse_specs(&args[1..], false) {
            Ok(s) => s,
            Err(t) => return bad_cmd("APPEND", &t),
        };
        let vname = match super::mailbox_name::check(name, self.ns_sep, self.store_sep) {
            Ok(v) => v,
            Err(t) => return Done::No(t),
        };
        let store_name = self.to_store_name(&vname);
        // Each message's bytes: a literal as it came, or the CATENATEd parts.
        let mut built: Vec<Spool> = Vec::new();
        let mut whole: Vec<Option<usize>> = Vec::new();
        for spec in &specs {
            if let [PartSpec::Literal(n)] = spec.parts.as_slice() {
                whole.push(Some(*n));
                built.push(Spool::default());
                continue;
            }
            let mut s = Spool::default();
            for p in &spec.parts {
                let data: Vec<u8> = match p {
                    PartSpec::Literal(n) => match literals.get(*n) {
                        Some(l) => l.bytes().to_vec(),
                        None => return bad_cmd("APPEND", "Invalid arguments"),
                    },
                    PartSpec::Url(u) => match self.catenate_url(u) {
                        Ok(d) => d,
                        Err(t) => return Done::No(t),
                    },
                };
                if let Err(e) = s.write(&data) {
                    self.log_error(&format!("APPEND: spooling the message: {e}"));
                    return Done::No(
                        "[SERVERBUG] Internal error occurred. Refer to server log for more information."
                            .into(),
                    );
                }
            }
            match s.finish() {
                Ok(s) => built.push(s),
                Err(e) => {
                    self.log_error(&format!("APPEND: mapping the message: {e}"));
                    return Done::No(
                        "[SERVERBUG] Internal error occurred. Refer to server log for more information."
                            .into(),
                    );
                }
            }
            whole.push(None);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut msgs: Vec<NewMessage> = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let data: &[u8] = match whole[i] {
                Some(n) => match literals.get(n) {
                    Some(l) => l.bytes(),
                    None => return bad_cmd("APPEND", "Invalid arguments"),
                },
                None => built[i].bytes(),
            };
            if data.is_empty() {
                return Done::No("Can't save a zero byte message.".into());
            }
            msgs.push(NewMessage {
                data,
                flags: spec.flags,
                keywords: spec.keywords.clone(),
                // A date in the future is the time of the APPEND (Dovecot).
                internal_date: spec.date.map(|d| d.min(now)),
            });
        }
        if self.st.quota.is_some() {
            // What the store will write: CRLF saved as LF.
            let bytes: u64 = msgs
                .iter()
                .map(|m| (m.data.len() - m.data.windows(2).filter(|w| w == b"\r\n").count()) as u64)
                .sum();
            if let Some(d) = self.quota_check(bytes, msgs.len() as u64) {
                return d;
            }
        }
        match self.store.append(&store_name, &msgs) {
            Ok(a) => Done::Ok(format!(
                "[APPENDUID {} {}] Append completed.",
                a.uid_validity,
                super::message::search::seqset_string(&a.uids)
            )),
            Err(MailboxError::NotFound(_)) => Done::No(format!(
                "[TRYCREATE] Mailbox doesn't exist: {}.",
                super::mutf7::encode(&vname)
            )),
            Err(e) => self.store_error(&e),
        }
    }

    /// A CATENATE URL (RFC 5092, relative to the user's own mailboxes):
    /// `/MAILBOX;UIDVALIDITY=n/;UID=n[/;SECTION=s][/;PARTIAL=o.l]` or, for the selected
    /// mailbox, `;UID=n…`. Returns the bytes, or the NO text.
    fn catenate_url(&mut self, url: &str) -> Result<Vec<u8>, String> {
        let bad = || format!("[BADURL {url}] Invalid URL.");
        let rest = url
            .strip_prefix("imap://")
            .map(|r| r.split_once('/').map_or("", |(_, p)| p))
            .map(|p| format!("/{p}"))
            .unwrap_or_else(|| url.to_string());
        let (mailbox, params) = if let Some(r) = rest.strip_prefix('/') {
            match r.find("/;") {
                Some(p) => (Some(&r[..p]), &r[p + 1..]),
                None => return Err(bad()),
            }
        } else {
            (None, rest.as_str())
        };
        let mut uid = None;
        let mut validity = None;
        let mut section = String::new();
        let mut partial = None;
        let (mbox_name, mbox_params) = match mailbox {
            // URL parameter names are case-insensitive (RFC 5092: `;uidvalidity=`).
            Some(m) => match m.to_ascii_uppercase().find(";UIDVALIDITY=") {
                Some(i) => (Some(m[..i].to_string()), Some(m[i + 13..].to_string())),
                None => (Some(m.to_string()), None),
            },
            None => (None, None),
        };
        if let Some(v) = mbox_params {
            validity = Some(v.parse::<u32>().map_err(|_| bad())?);
        }
        for p in params.split('/') {
            let Some(p) = p.strip_prefix(';') else {
                if p.is_empty() {
                    continue;
                }
                return Err(bad());
            };
            let (k, v) = p.split_once('=').ok_or_else(bad)?;
            match k.to_ascii_uppercase().as_str() {
                "UID" => uid = Some(v.parse::<u32>().map_err(|_| bad())?),
                "SECTION" => section = percent_decode(v),
                "PARTIAL" => {
                    let (o, l) = match v.split_once('.') {
                        Some((o, l)) => (o, Some(l)),
                        None => (v, None),
                    };
                    let o: u64 = o.parse().map_err(|_| bad())?;
                    let l: Option<u64> = match l {
                        Some(l) => Some(l.parse().map_err(|_| bad())?),
                        None => None,
                    };
                    partial = Some((o, l));
                }
                _ => return Err(bad()),
            }
        }
        let uid = uid.ok_or_else(bad)?;
        let folder_owned;
        let folder = match &mbox_name {
            Some(n) => {
                let n = percent_decode(n);
                let vname = super::mailbox_name::check(n.as_bytes(), self.ns_sep, self.store_sep)
                    .map_err(|_| bad())?;
                let store_name = self.to_store_name(&vname);
                let selected = self
                    .sel
                    .as_ref()
                    .is_some_and(|s| s.folder.name() == store_name);
                if selected {
                    None
                } else {
                    folder_owned = self
                        .store
                        .select(&store_name, crate::mailbox::Access::ReadOnly)
                        .map_err(|_| bad())?;
                    Some(&folder_owned)
                }
            }
            None => None,
        };
        let folder = match folder {
            Some(f) => f,
            None => &self.sel.as_ref().ok_or_else(bad)?.folder,
        };
        if validity.is_some_and(|v| v != folder.uid_validity()) {
            return Err(bad());
        }
        let raw = folder.read(uid).map_err(|_| bad())?;
        section_for_url(&raw, &section, partial).ok_or_else(bad)
    }
}

/// `%XX` escapes of an IMAP URL undone.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(
            parse_date_time("07-Dec-2026 10:00:00 +0000"),
            Some(super::super::message::search::days_from_civil(2026, 12, 7) * 86400 + 36000)
        );
        assert_eq!(
            parse_date_time(" 7-Dec-2026 10:00:00 +0100"),
            Some(super::super::message::search::days_from_civil(2026, 12, 7) * 86400 + 32400)
        );
        assert_eq!(parse_date_time("bad date"), None);
        assert_eq!(parse_date_time("07-Dec-2026 25:00:00 +0000"), None);
    }

    #[test]
    fn specs_and_heads() {
        let a = head_args(b"INBOX (\\Seen) \"07-Dec-2026 10:00:00 +0000\" ").expect("head");
        assert!(parse_specs(&a[1..], true).is_ok());
        let a = head_args(b"INBOX (\\Recent) ").expect("head");
        assert_eq!(
            parse_specs(&a[1..], true).err().as_deref(),
            Some("Invalid system flag \\RECENT")
        );
        let a =
            head_args(b"INBOX CATENATE (URL \"/INBOX;UIDVALIDITY=1/;UID=1\" TEXT ").expect("head");
        assert!(parse_specs(&a[1..], true).is_ok(), "{a:?}");
    }
}

/// Dovecot's binary converter (istream-binary-converter.c) for a message APPENDed as a
/// literal8: every part that is not multipart and says `Content-Transfer-Encoding:
/// binary` — the message's own part or one inside multiparts and attached messages —
/// gets `Content-Transfer-Encoding: base64` in that line's place and its body in base64,
/// 76 characters a line (the line end before the next boundary kept, as Dovecot's MIME
/// parser counts it to the boundary). `None` when nothing is to change.
fn binary_to_base64(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len() * 4 / 3 + 64);
    convert_part(raw, &mut out, 0).then_some(out)
}

/// What [`convert_part`] needs of a part's header.
#[derive(Default)]
struct PartHead {
    /// Where the body starts.
    body_at: usize,
    /// The `Content-Transfer-Encoding: binary` line (start, end), when not folded.
    binary_cte: Option<(usize, usize)>,
    /// The multipart boundary, when the part is a multipart with one.
    boundary: Option<Vec<u8>>,
    /// `message/rfc822`.
    rfc822: bool,
}

/// The header of a part: lines up to the first empty one (`None`: it never ends).
fn part_head(raw: &[u8]) -> Option<PartHead> {
    let mut h = PartHead::default();
    let mut pos = 0;
    loop {
        let end = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|e| pos + e + 1)?;
        let line = &raw[pos..end];
        if line == b"\n" || line == b"\r\n" {
            h.body_at = end;
            return Some(h);
        }
        // The field with its folded lines.
        let mut fend = end;
        while fend < raw.len() && (raw[fend] == b' ' || raw[fend] == b'\t') {
            fend = raw[fend..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(raw.len(), |e| fend + e + 1);
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = line[..colon].trim_ascii();
            if name.eq_ignore_ascii_case(b"Content-Transfer-Encoding")
                && fend == end
                && line[colon + 1..]
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"binary")
            {
                h.binary_cte = Some((pos, end));
            }
            if name.eq_ignore_ascii_case(b"Content-Type") {
                let value: Vec<u8> = raw[pos + colon + 1..fend]
                    .iter()
                    .copied()
                    .filter(|&b| b != b'\r' && b != b'\n')
                    .collect();
                let v = String::from_utf8_lossy(&value).to_string();
                let lower = v.trim_start().to_ascii_lowercase();
                h.rfc822 = lower.starts_with("message/rfc822");
                h.boundary = None;
                if lower.starts_with("multipart/") {
                    for param in v.split(';').skip(1) {
                        if let Some((k, val)) = param.split_once('=')
                            && k.trim().eq_ignore_ascii_case("boundary")
                        {
                            let b = val.trim().trim_matches('"');
                            if !b.is_empty() {
                                h.boundary = Some(b.as_bytes().to_vec());
                            }
                        }
                    }
                }
            }
        }
        pos = fend;
    }
}

/// Converts one part into `out`; whether anything changed.
fn convert_part(raw: &[u8], out: &mut Vec<u8>, depth: u32) -> bool {
    use base64::Engine as _;
    let head = match part_head(raw) {
        Some(h) if depth < 100 => h,
        _ => {
            out.extend_from_slice(raw);
            return false;
        }
    };
    if let Some(boundary) = &head.boundary {
        out.extend_from_slice(&raw[..head.body_at]);
        return convert_multipart(&raw[head.body_at..], boundary, out, depth);
    }
    if let Some((start, end)) = head.binary_cte {
        out.extend_from_slice(&raw[..start]);
        out.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n");
        out.extend_from_slice(&raw[end..head.body_at]);
        let encoded = base64::engine::general_purpose::STANDARD.encode(&raw[head.body_at..]);
        for (i, chunk) in encoded.as_bytes().chunks(76).enumerate() {
            if i > 0 {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(chunk);
        }
        return true;
    }
    if head.rfc822 {
        out.extend_from_slice(&raw[..head.body_at]);
        return convert_part(&raw[head.body_at..], out, depth + 1);
    }
    out.extend_from_slice(raw);
    false
}

/// A multipart body: preamble, parts between `--boundary` lines (each part ends before
/// the line end that precedes its delimiter), epilogue after `--boundary--`.
fn convert_multipart(body: &[u8], boundary: &[u8], out: &mut Vec<u8>, depth: u32) -> bool {
    // Each delimiter line: (start of the line end before it, or of the line at the
    // very start; end of the delimiter line; closing).
    let mut delims: Vec<(usize, usize, bool)> = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |e| pos + e + 1);
        let line = &body[pos..end];
        if let Some(rest) = line.strip_prefix(b"--")
            && let Some(after) = rest.strip_prefix(boundary)
        {
            let closing = after.starts_with(b"--");
            let before = if pos >= 2 && body[pos - 2] == b'\r' {
                pos - 2
            } else {
                pos.saturating_sub(1)
            };
            delims.push((before, end, closing));
            if closing {
                break;
            }
        }
        pos = end;
    }
    if delims.is_empty() {
        out.extend_from_slice(body);
        return false;
    }
    let mut changed = false;
    out.extend_from_slice(&body[..delims[0].0]);
    for (i, &(start, end, closing)) in delims.iter().enumerate() {
        out.extend_from_slice(&body[start..end]);
        if closing {
            out.extend_from_slice(&body[end..]);
            return changed;
        }
        let next = delims.get(i + 1).map_or(body.len(), |d| d.0.max(end));
        changed |= convert_part(&body[end..next], out, depth + 1);
    }
    changed
}

#[cfg(test)]
mod binary_tests {
    use super::binary_to_base64;

    #[test]
    fn binary_part_saved_as_base64_as_dovecot() {
        let raw =
            b"From: a@b\r\nContent-Transfer-Encoding: binary\r\nX: y\r\n\r\n\x00-\xe4\n\r\n\n";
        assert_eq!(
            binary_to_base64(raw).as_deref(),
            Some(
                &b"From: a@b\r\nContent-Transfer-Encoding: base64\r\nX: y\r\n\r\nAC3kCg0KCg=="[..]
            )
        );
        assert_eq!(binary_to_base64(b"Subject: x\r\n\r\nbody\r\n"), None);
        let long = [
            b"Content-Transfer-Encoding: binary\n\n".as_slice(),
            &[7u8; 100],
        ]
        .concat();
        let conv = binary_to_base64(&long).expect("converted");
        // Inside a multipart: the binary part only, up to the line end before the
        // next boundary.
        let mp = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\npre\r\n--b\r\n\
                   Content-Type: text/plain\r\n\r\ntext\r\n--b\r\n\
                   Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\r\n--b--\r\nepi\r\n";
        assert_eq!(
            String::from_utf8_lossy(&binary_to_base64(mp).expect("converted")),
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\npre\r\n--b\r\n\
             Content-Type: text/plain\r\n\r\ntext\r\n--b\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nAAE=\r\n--b--\r\nepi\r\n"
        );
        let body = conv.split(|&b| b == b'\n').skip(2).collect::<Vec<_>>();
        assert_eq!(body[0].len(), 77, "76 characters and CR");
    }
}
