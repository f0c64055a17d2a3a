//! FETCH, STORE, COPY and MOVE (RFC 3501, UIDPLUS RFC 4315, MOVE RFC 6851, CONDSTORE
//! and QRESYNC RFC 7162, BINARY RFC 3516), as Dovecot 2.3's `cmd-fetch.c`,
//! `imap-fetch.c`, `cmd-store.c` and `cmd-copy.c` answer them.
//!
//! FETCH items come out as Dovecot orders them: the "buffered" ones (UID, FLAGS,
//! INTERNALDATE, RFC822.SIZE, MODSEQ) first in the order asked, then the rest in the
//! order asked; a FLAGS item is added when a non-PEEK body fetch set \Seen. `BODY[]`,
//! `RFC822` and their partials are streamed from the mailbox (LF turned into CRLF on the
//! way), so a large message is never held whole for them; other sections parse the
//! message ([`super::message`]).

use std::io::Read;

use super::message::fetch::{self, FetchAtt, SectionText};
use super::message::mime::Message;
use super::seqset::SeqSet;
use super::session::{Done, Session, bad_cmd, flag_list};
use crate::imap::reader::Arg;
use crate::mailbox::{FlagOp, Flags, MailboxError};

/// A message up to this size is read whole for a `BODY[]` (its CRLF size checked).
const STREAM_ABOVE: u64 = 1 << 20;

/// `01-Dec-2026 10:00:00 +0000` in the server's time zone (Dovecot's `imap_to_datetime`).
pub(crate) fn imap_datetime(t: i64) -> String {
    let tm = crate::sys::time::local(t).unwrap_or_else(crate::sys::time::blank_tm);
    let off = tm.tm_gmtoff / 60;
    let (sign, off) = if off < 0 { ('-', -off) } else { ('+', off) };
    format!(
        "{:02}-{}-{:04} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        tm.tm_mday,
        crate::sys::time::MONTHS[tm.tm_mon.rem_euclid(12) as usize],
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        off / 60,
        off % 60
    )
}

fn is_buffered(a: &FetchAtt) -> bool {
    matches!(
        a,
        FetchAtt::Uid
            | FetchAtt::Flags
            | FetchAtt::InternalDate
            | FetchAtt::Rfc822Size
            | FetchAtt::ModSeq
    )
}

/// Whether the item sets \Seen.
fn sets_seen(a: &FetchAtt) -> bool {
    match a {
        FetchAtt::Rfc822 | FetchAtt::Rfc822Text => true,
        FetchAtt::Section {
            peek, size_only, ..
        } => !peek && !size_only,
        _ => false,
    }
}

/// Whether the item needs the message parsed (not only streamed).
fn needs_parse(a: &FetchAtt) -> bool {
    match a {
        FetchAtt::Envelope
        | FetchAtt::Body
        | FetchAtt::BodyStructure
        | FetchAtt::Rfc822Header
        | FetchAtt::Rfc822Text => true,
        FetchAtt::Section {
            binary, section, ..
        } => *binary || !(section.path.is_empty() && section.text == SectionText::Whole),
        _ => false,
    }
}

/// Whether an item needs the message's size (RFC822.SIZE; a whole body streamed is sent
/// as a literal of that size).
fn needs_size(a: &FetchAtt) -> bool {
    match a {
        FetchAtt::Rfc822Size | FetchAtt::Rfc822 => true,
        FetchAtt::Section {
            binary, section, ..
        } => !*binary && section.path.is_empty() && section.text == SectionText::Whole,
        _ => false,
    }
}

/// Whether an item needs only the message's header (served from the header cache).
fn header_only_att(a: &FetchAtt) -> bool {
    match a {
        FetchAtt::Envelope | FetchAtt::Rfc822Header => true,
        FetchAtt::Section {
            binary, section, ..
        } => {
            !*binary
                && section.path.is_empty()
                && matches!(
                    section.text,
                    SectionText::Header
                        | SectionText::HeaderFields(_)
                        | SectionText::HeaderFieldsNot(_)
                )
        }
        _ => !needs_parse(a),
    }
}

/// The message numbers (1-based) a set names: message numbers, or UIDs with `uid`.
/// `Err` is Dovecot's BAD text.
pub(crate) fn resolve_set(
    folder: &crate::mailbox::Folder,
    saved: &[u32],
    set: &str,
    uid: bool,
) -> Result<Vec<u32>, &'static str> {
    let Some(s) = SeqSet::parse(set.as_bytes()) else {
        return Err(if uid {
            "Invalid uidset"
        } else {
            "Invalid messageset"
        });
    };
    let msgs = folder.messages();
    if uid {
        let last = msgs.last().map_or(0, |m| m.uid);
        return Ok(msgs
            .iter()
            .enumerate()
            .filter(|(_, m)| s.contains(m.uid, last, saved))
            .map(|(i, _)| i as u32 + 1)
            .collect());
    }
    let count = msgs.len() as u32;
    match s {
        SeqSet::Saved => {
            // `$` holds UIDs; as message numbers, those still in the view.
            Ok(msgs
                .iter()
                .enumerate()
                .filter(|(_, m)| saved.binary_search(&m.uid).is_ok())
                .map(|(i, _)| i as u32 + 1)
                .collect())
        }
        SeqSet::Ranges(_) => {
            let ranges = s
                .resolve_msgnums(count, &[])
                .map_err(|_| "Invalid messageset")?;
            let mut out: Vec<u32> = ranges.into_iter().flatten().collect();
            out.sort_unstable();
            out.dedup();
            Ok(out)
        }
    }
}

/// A fetched message's bytes for the items that need them.
enum Body {
    None,
    Parsed(Message),
    Failed,
}

impl Session {
    pub(crate) fn cmd_fetch(&mut self, args: &[Arg], uid: bool) -> Done {
        let name = if uid { "UID FETCH" } else { "FETCH" };
        let (Some(set), true, true) = (
            args.first().and_then(Arg::atom),
            matches!(args.get(1), Some(Arg::List(_) | Arg::Atom(_))),
            matches!(args.get(2), None | Some(Arg::List(_))),
        ) else {
            return bad_cmd(name, "Invalid arguments");
        };
        let set = set.to_string();
        let (mut atts, used) = match fetch::parse_fetch_atts(&args[1..], uid) {
            Ok(a) => a,
            Err(e) => return bad_cmd(name, &e),
        };
        // Modifiers: (CHANGEDSINCE n [VANISHED]).
        let mut changed_since = None;
        let mut vanished = false;
        if let Some(mods) = args.get(1 + used).and_then(Arg::list) {
            let mut i = 0;
            while i < mods.len() {
                let Some(m) = mods[i].atom() else {
                    return bad_cmd(name, "FETCH modifiers contain non-atoms.");
                };
                match m.to_ascii_uppercase().as_str() {
                    "CHANGEDSINCE" => {
                        let Some(v) = mods
                            .get(i + 1)
                            .and_then(Arg::atom)
                            .and_then(|v| v.parse::<u64>().ok())
                        else {
                            return bad_cmd(name, "Invalid CHANGEDSINCE modseq.");
                        };
                        changed_since = Some(v);
                        i += 2;
                    }
                    "VANISHED" if uid => {
                        if !self.qresync {
                            return bad_cmd(name, "QRESYNC not enabled");
                        }
                        vanished = true;
                        i += 1;
                    }
                    _ => return bad_cmd(name, "Unknown FETCH modifier"),
                }
            }
            if vanished && changed_since.is_none() {
                return bad_cmd(name, "VANISHED used without CHANGEDSINCE");
            }
        }
        if changed_since.is_some() && !atts.contains(&FetchAtt::ModSeq) {
            atts.push(FetchAtt::ModSeq);
        }
        if atts.contains(&FetchAtt::ModSeq) {
            self.enable_condstore();
        }
        // Dovecot's handler order: buffered items first, duplicates dropped.
        let mut order: Vec<FetchAtt> = Vec::new();
        for a in atts.iter().filter(|a| is_buffered(a)) {
            if !order.contains(a) {
                order.push(a.clone());
            }
        }
        let buffered = order.len();
        for a in atts.iter().filter(|a| !is_buffered(a)) {
            let dup = matches!(
                a,
                FetchAtt::Envelope
                    | FetchAtt::Body
                    | FetchAtt::BodyStructure
                    | FetchAtt::Rfc822
                    | FetchAtt::Rfc822Header
                    | FetchAtt::Rfc822Text
            ) && order.contains(a);
            if !dup {
                order.push(a.clone());
            }
        }
        let update_seen = order.iter().any(sets_seen);
        let has_flags = order.contains(&FetchAtt::Flags);
        let parse = order.iter().any(needs_parse);
        // Only headers wanted: from the folder's header cache.
        let headers_only = parse && order.iter().all(header_only_att);

        let Some(sel) = self.sel.as_mut() else {
            return Done::Bad("No mailbox selected.".into(), false);
        };
        let mut seqs = match resolve_set(&sel.folder, &sel.saved, &set, uid) {
            Ok(s) => s,
            Err(t) => return bad_cmd(name, t),
        };
        if let Some(since) = changed_since {
            let msgs = sel.folder.messages();
            seqs.retain(|s| msgs[*s as usize - 1].modseq > since);
        }
        if vanished && let Some(since) = changed_since {
            let last = sel.folder.uid_next().saturating_sub(1).max(1);
            let s = SeqSet::parse(set.as_bytes());
            let mut v: Vec<u32> = sel
                .folder
                .vanished_since(since, (1, last))
                .into_iter()
                .filter(|u| s.as_ref().is_some_and(|s| s.contains(*u, last, &[])))
                .collect();
            v.sort_unstable();
            v.dedup();
            if !v.is_empty() {
                self.out.line(&format!(
                    "* VANISHED (EARLIER) {}",
                    super::message::search::seqset_string(&v)
                ));
            }
        }
        let Some(sel) = self.sel.as_mut() else {
            return Done::Sent;
        };
        // \Seen for what a body fetch reads (one write for the whole set).
        let mut seen_set: Vec<u32> = Vec::new();
        if update_seen && !sel.folder.read_only() {
            let msgs = sel.folder.messages();
            let unseen: Vec<u32> = seqs
                .iter()
                .map(|s| &msgs[*s as usize - 1])
                .filter(|m| !m.expunged && !m.flags.contains(Flags::SEEN))
                .map(|m| m.uid)
                .collect();
            if !unseen.is_empty() {
                match sel
                    .folder
                    .store(&unseen, FlagOp::Add, Flags::SEEN, &[], None)
                {
                    Ok(st) => {
                        if !sel.updates.is_empty() {
                            sel.touched.extend(&st.changed);
                        }
                        seen_set = st.changed
                    }
                    Err(e) => self.log_error(&format!("FETCH: setting \\Seen: {e}")),
                }
            }
        }
        // Sizes and internal dates of Maildir messages are read only when asked for.
        let want_size = order.iter().any(needs_size);
        let want_date = order.contains(&FetchAtt::InternalDate);
        let mut unknown: Vec<u32> = Vec::new();
        if want_size || want_date {
            let sel = self.sel.as_mut().expect("selected");
            let idx = seqs.iter().map(|s| *s as usize - 1);
            for (u, e) in sel.folder.resolve(idx, want_size, want_date) {
                self.log_error(&format!("FETCH of UID {u} failed: {e}"));
                unknown.push(u);
            }
            unknown.sort_unstable();
        }
        let mut skipped = false;
        let mut failure: Option<String> = None;
        let mut internal = false;
        for seq in seqs {
            let Some(sel) = self.sel.as_ref() else { break };
            let m = sel.folder.messages()[seq as usize - 1].clone();
            if !m.expunged && unknown.binary_search(&m.uid).is_ok() {
                // Its file could not be read: Dovecot's internal error, after the
                // messages before it.
                internal = true;
                break;
            }
            let mut body = Body::None;
            if headers_only && !m.expunged {
                let sel = self.sel.as_mut().expect("selected");
                let cached = sel.hdr_cache.get(&sel.folder, m.uid).map(Message::new);
                body = match cached {
                    Some(msg) => Body::Parsed(msg),
                    None => match sel.folder.read(m.uid) {
                        Ok(raw) => {
                            let h = super::hdrcache::header_only(&raw);
                            sel.hdr_cache.put(&sel.folder, m.uid, h);
                            Body::Parsed(Message::new(h))
                        }
                        Err(e) => {
                            if !matches!(e, MailboxError::Expunged(_) | MailboxError::NotFound(_)) {
                                self.log_error(&format!("FETCH of UID {} failed: {e}", m.uid));
                            }
                            Body::Failed
                        }
                    },
                };
            } else if parse && !m.expunged {
                body = match sel.folder.read(m.uid) {
                    Ok(raw) => Body::Parsed(Message::new(&raw)),
                    Err(e) => {
                        if !matches!(e, MailboxError::Expunged(_) | MailboxError::NotFound(_)) {
                            self.log_error(&format!("FETCH of UID {} failed: {e}", m.uid));
                        }
                        Body::Failed
                    }
                };
            }
            if m.expunged {
                body = Body::Failed;
            }
            self.out.raw(format!("* {seq} FETCH (").as_bytes());
            let mut first = true;
            let sep = |first: &mut bool, out: &mut super::session::Out| {
                if !*first {
                    out.raw(b" ");
                }
                *first = false;
            };
            let show_seen_flags = !has_flags && seen_set.contains(&m.uid);
            for (i, att) in order.iter().enumerate() {
                if i == buffered && show_seen_flags {
                    sep(&mut first, &mut self.out);
                    let sel = self.sel.as_ref().expect("selected");
                    let fl = sel.folder.get(m.uid).map(|x| flag_list(&sel.folder, x));
                    self.out
                        .raw(format!("FLAGS ({})", fl.unwrap_or_default()).as_bytes());
                }
                if let Err(e) = self.fetch_item(att, &m, &mut body, &mut first) {
                    match e {
                        ItemError::Expunged => skipped = true,
                        ItemError::Fail(t) => {
                            failure = Some(t);
                            break;
                        }
                    }
                }
            }
            if order.len() == buffered && show_seen_flags {
                sep(&mut first, &mut self.out);
                let sel = self.sel.as_ref().expect("selected");
                let fl = sel.folder.get(m.uid).map(|x| flag_list(&sel.folder, x));
                self.out
                    .raw(format!("FLAGS ({})", fl.unwrap_or_default()).as_bytes());
            }
            if first {
                // Nothing written: RFC 3501 has no empty FETCH (), so the UID (Dovecot).
                self.out.raw(format!("UID {}", m.uid).as_bytes());
            }
            self.out.raw(b")\r\n");
            self.out.maybe_flush();
            if failure.is_some() || self.out.broken {
                break;
            }
        }
        // \Seen set by this FETCH: its MODSEQ change, under CONDSTORE (Dovecot's sync).
        if self.condstore && !seen_set.is_empty() {
            let send_uid = uid || self.qresync;
            if let Some(sel) = self.sel.as_ref() {
                for u in &seen_set {
                    if let (Some(seq), Some(m)) = (sel.folder.seq(*u), sel.folder.get(*u)) {
                        let uid_part = if send_uid {
                            format!("UID {u} ")
                        } else {
                            String::new()
                        };
                        self.out
                            .line(&format!("* {seq} FETCH ({uid_part}MODSEQ ({}))", m.modseq));
                    }
                }
            }
        }
        self.save_header_cache();
        if internal {
            return Done::No(
                "[SERVERBUG] Internal error occurred. Refer to server log for more information."
                    .into(),
            );
        }
        if let Some(t) = failure {
            return Done::No(format!("[UNKNOWN-CTE] {t}"));
        }
        if skipped {
            return Done::Ok("[EXPUNGEISSUED] Some messages were already expunged.".into());
        }
        Done::Ok("Fetch completed.".into())
    }

    /// One FETCH item of message `m`.
    fn fetch_item(
        &mut self,
        att: &FetchAtt,
        m: &crate::mailbox::Message,
        body: &mut Body,
        first: &mut bool,
    ) -> Result<(), ItemError> {
        let mut head = String::new();
        if !*first {
            head.push(' ');
        }
        *first = false;
        let nil = |s: &mut Self, head: &str, name: &str, nil: &str| {
            s.out.raw(format!("{head}{name} {nil}").as_bytes());
        };
        match att {
            FetchAtt::Uid => self.out.raw(format!("{head}UID {}", m.uid).as_bytes()),
            FetchAtt::Flags => {
                let sel = self.sel.as_ref().expect("selected");
                let current = sel.folder.get(m.uid).unwrap_or(m);
                let fl = flag_list(&sel.folder, current);
                self.out.raw(format!("{head}FLAGS ({fl})").as_bytes());
            }
            FetchAtt::InternalDate => self.out.raw(
                format!("{head}INTERNALDATE \"{}\"", imap_datetime(m.internal_date)).as_bytes(),
            ),
            FetchAtt::Rfc822Size => self
                .out
                .raw(format!("{head}RFC822.SIZE {}", m.size).as_bytes()),
            FetchAtt::ModSeq => {
                let sel = self.sel.as_ref().expect("selected");
                let modseq = sel.folder.get(m.uid).map_or(m.modseq, |x| x.modseq);
                self.out.raw(format!("{head}MODSEQ ({modseq})").as_bytes());
            }
            FetchAtt::SaveDate => self.out.raw(format!("{head}SAVEDATE NIL").as_bytes()),
            FetchAtt::Envelope | FetchAtt::Body | FetchAtt::BodyStructure => {
                let name = match att {
                    FetchAtt::Envelope => "ENVELOPE",
                    FetchAtt::Body => "BODY",
                    _ => "BODYSTRUCTURE",
                };
                let Body::Parsed(msg) = body else {
                    let n = match att {
                        FetchAtt::Envelope => "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)",
                        FetchAtt::Body => "(\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0)",
                        _ => "(\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)",
                    };
                    nil(self, &head, name, n);
                    return Err(ItemError::Expunged);
                };
                let mut out = format!("{head}{name} (").into_bytes();
                match att {
                    FetchAtt::Envelope => out.extend(fetch::envelope(msg)),
                    _ => fetch::bodystructure(
                        &mut out,
                        &msg.root,
                        &msg.raw,
                        matches!(att, FetchAtt::BodyStructure),
                    ),
                }
                out.push(b')');
                self.out.raw(&out);
            }
            FetchAtt::Rfc822 => {
                self.out.raw(format!("{head}RFC822 ").as_bytes());
                return self.stream_whole(m, None, body);
            }
            FetchAtt::Rfc822Header | FetchAtt::Rfc822Text => {
                let (name, text) = if matches!(att, FetchAtt::Rfc822Header) {
                    ("RFC822.HEADER", SectionText::Header)
                } else {
                    ("RFC822.TEXT", SectionText::Text)
                };
                let Body::Parsed(msg) = body else {
                    nil(self, &head, name, "NIL");
                    return Err(ItemError::Expunged);
                };
                let data = fetch::section_bytes(
                    msg,
                    &fetch::Section {
                        path: vec![],
                        text: text.clone(),
                    },
                )
                .unwrap_or_default();
                self.count_fetch(text == SectionText::Header, data.len());
                self.out.raw(format!("{head}{name} ").as_bytes());
                self.literal(&data, false);
            }
            FetchAtt::Section {
                binary,
                size_only,
                section,
                partial,
                ..
            } => {
                let sname = fetch::section_name(section);
                let kind = if *binary { "BINARY" } else { "BODY" };
                if *size_only {
                    let Body::Parsed(msg) = body else {
                        nil(self, &head, &format!("BINARY.SIZE[{sname}]"), "0");
                        return Err(ItemError::Expunged);
                    };
                    let Some(n) = fetch::binary_section_size(msg, section) else {
                        self.out.raw(head.as_bytes());
                        return Err(ItemError::Fail("Unknown Content-Transfer-Encoding.".into()));
                    };
                    self.out
                        .raw(format!("{head}BINARY.SIZE[{sname}] {n}").as_bytes());
                    return Ok(());
                }
                let origin = match partial {
                    Some((o, _)) => format!("<{o}>"),
                    None => String::new(),
                };
                let whole = section.path.is_empty() && section.text == SectionText::Whole;
                if whole && !*binary {
                    self.out.raw(format!("{head}BODY[]{origin} ").as_bytes());
                    return self.stream_whole(m, *partial, body);
                }
                let Body::Parsed(msg) = body else {
                    nil(self, &head, &format!("{kind}[{sname}]{origin}"), "NIL");
                    return Err(ItemError::Expunged);
                };
                let (data, lit8) = if *binary {
                    match fetch::binary_section(msg, section) {
                        Some(x) => x,
                        None => {
                            if head.starts_with(' ') {
                                // Items already written stand; the reply line ends here.
                            }
                            return Err(ItemError::Fail(
                                "Unknown Content-Transfer-Encoding.".into(),
                            ));
                        }
                    }
                } else {
                    (
                        fetch::section_bytes(msg, section).unwrap_or_default(),
                        false,
                    )
                };
                let data = match partial {
                    Some((o, c)) => fetch::partial(&data, *o, *c).to_vec(),
                    None => data,
                };
                let header_only = matches!(
                    section.text,
                    SectionText::Header
                        | SectionText::HeaderFields(_)
                        | SectionText::HeaderFieldsNot(_)
                        | SectionText::Mime
                );
                self.count_fetch(header_only, data.len());
                self.out
                    .raw(format!("{head}{kind}[{sname}]{origin} ").as_bytes());
                self.literal(&data, lit8);
            }
        }
        Ok(())
    }

    fn count_fetch(&mut self, header: bool, bytes: usize) {
        if header {
            self.stats.fetch_hdr_count += 1;
            self.stats.fetch_hdr_bytes += bytes as u64;
        } else {
            self.stats.fetch_body_count += 1;
            self.stats.fetch_body_bytes += bytes as u64;
        }
    }

    /// `{N}` (or `~{N}` for BINARY) and the bytes.
    fn literal(&mut self, data: &[u8], binary: bool) {
        let tilde = if binary { "~" } else { "" };
        self.out
            .raw(format!("{tilde}{{{}}}\r\n", data.len()).as_bytes());
        self.out.raw(data);
        self.out.maybe_flush();
    }

    /// The whole message (or a partial of it) as a literal, with CRLF line ends: from
    /// the parsed copy when there is one, else read (small messages) or streamed from
    /// the mailbox (large ones, never held whole).
    fn stream_whole(
        &mut self,
        m: &crate::mailbox::Message,
        partial: Option<(u64, Option<u64>)>,
        body: &mut Body,
    ) -> Result<(), ItemError> {
        if let Body::Parsed(msg) = body {
            let data = match partial {
                Some((o, c)) => fetch::partial(&msg.raw, o, c).to_vec(),
                None => msg.raw.clone(),
            };
            self.count_fetch(false, data.len());
            self.literal(&data, false);
            return Ok(());
        }
        let Some(sel) = self.sel.as_ref() else {
            self.out.raw(b"NIL");
            return Err(ItemError::Expunged);
        };
        if m.expunged || matches!(body, Body::Failed) {
            self.out.raw(b"NIL");
            return Err(ItemError::Expunged);
        }
        if m.size <= STREAM_ABOVE {
            let raw = match sel.folder.read(m.uid) {
                Ok(r) => r,
                Err(e) => {
                    if !matches!(e, MailboxError::Expunged(_) | MailboxError::NotFound(_)) {
                        self.log_error(&format!("FETCH of UID {} failed: {e}", m.uid));
                    }
                    self.out.raw(b"NIL");
                    return Err(ItemError::Expunged);
                }
            };
            let crlf = super::message::mime::to_crlf(&raw);
            let data = match partial {
                Some((o, c)) => fetch::partial(&crlf, o, c),
                None => &crlf[..],
            };
            self.count_fetch(false, data.len());
            self.literal(data, false);
            return Ok(());
        }
        let mut reader = match sel.folder.open_message(m.uid) {
            Ok(r) => r,
            Err(_) => {
                self.out.raw(b"NIL");
                return Err(ItemError::Expunged);
            }
        };
        // The CRLF form's size is the message's RFC822.SIZE; the bytes sent are held to
        // it exactly (a file that changed size under us is cut or padded, and logged).
        let total = m.size;
        let (start, len) = match partial {
            Some((o, c)) => {
                let s = o.min(total);
                (s, c.map_or(total - s, |c| c.min(total - s)))
            }
            None => (0, total),
        };
        self.out.raw(format!("{{{len}}}\r\n").as_bytes());
        let mut pos = 0u64; // position in the CRLF stream
        let mut sent = 0u64;
        let mut prev = 0u8;
        let mut buf = vec![0u8; 64 * 1024];
        let mut conv: Vec<u8> = Vec::with_capacity(buf.len() + buf.len() / 16);
        while sent < len {
            let n = match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            conv.clear();
            for &c in &buf[..n] {
                if c == b'\n' && prev != b'\r' {
                    conv.push(b'\r');
                }
                conv.push(c);
                prev = c;
            }
            let chunk_start = pos;
            pos += conv.len() as u64;
            if pos <= start {
                continue;
            }
            let from = start.saturating_sub(chunk_start) as usize;
            let want = (len - sent) as usize;
            let piece = &conv[from..conv.len().min(from + want)];
            sent += piece.len() as u64;
            self.out.raw(piece);
            self.out.maybe_flush();
            if self.out.broken {
                return Ok(());
            }
        }
        if sent < len {
            self.log_error(&format!(
                "FETCH of UID {}: the message is shorter than its size {total}",
                m.uid
            ));
            let pad = vec![b' '; (len - sent) as usize];
            self.out.raw(&pad);
        }
        self.count_fetch(false, len as usize);
        Ok(())
    }

    /// STORE / UID STORE.
    pub(crate) fn cmd_store(&mut self, args: &[Arg], uid: bool) -> Done {
        let name = if uid { "UID STORE" } else { "STORE" };
        let Some(set) = args.first().and_then(Arg::atom).map(str::to_string) else {
            return bad_cmd(name, "Invalid arguments");
        };
        let mut i = 1;
        let mut unchanged_since = None;
        if let Some(mods) = args.get(1).and_then(Arg::list) {
            let mut j = 0;
            while j < mods.len() {
                match mods[j].atom().map(str::to_ascii_uppercase).as_deref() {
                    Some("UNCHANGEDSINCE") => {
                        let Some(v) = mods
                            .get(j + 1)
                            .and_then(Arg::atom)
                            .and_then(|v| v.parse::<u64>().ok())
                        else {
                            return bad_cmd(name, "Invalid modseq");
                        };
                        unchanged_since = Some(v);
                        j += 2;
                    }
                    _ => return bad_cmd(name, "Unknown STORE modifier"),
                }
            }
            i = 2;
        }
        let Some(item) = args.get(i).and_then(Arg::atom) else {
            return bad_cmd(name, "Invalid arguments");
        };
        let item = item.to_ascii_uppercase();
        let (op, silent) = match item.as_str() {
            "FLAGS" => (FlagOp::Replace, false),
            "FLAGS.SILENT" => (FlagOp::Replace, true),
            "+FLAGS" => (FlagOp::Add, false),
            "+FLAGS.SILENT" => (FlagOp::Add, true),
            "-FLAGS" => (FlagOp::Remove, false),
            "-FLAGS.SILENT" => (FlagOp::Remove, true),
            _ => return bad_cmd(name, "Invalid arguments"),
        };
        let flag_args: Vec<&Arg> = match args.get(i + 1) {
            Some(Arg::List(l)) if args.len() == i + 2 => l.iter().collect(),
            Some(_) => args[i + 1..].iter().collect(),
            None => return bad_cmd(name, "Invalid arguments"),
        };
        let mut flags = Flags::empty();
        let mut keywords: Vec<String> = Vec::new();
        for a in flag_args {
            let Some(f) = a.atom() else {
                return bad_cmd(name, "Flags list contains non-atoms.");
            };
            if let Some(sys) = f.strip_prefix('\\') {
                match Flags::from_name(f) {
                    Some(fl) => flags.insert(fl),
                    None => {
                        return bad_cmd(
                            name,
                            &format!("Invalid system flag \\{}", sys.to_ascii_uppercase()),
                        );
                    }
                }
            } else if crate::mailbox::flags::valid_keyword(f) {
                if !keywords.iter().any(|k| k.eq_ignore_ascii_case(f)) {
                    keywords.push(f.to_string());
                }
            } else {
                return bad_cmd(name, "Invalid keyword");
            }
        }
        if unchanged_since.is_some() {
            self.enable_condstore();
        }
        let Some(sel) = self.sel.as_mut() else {
            return Done::Bad("No mailbox selected.".into(), false);
        };
        let seqs = match resolve_set(&sel.folder, &sel.saved, &set, uid) {
            Ok(s) => s,
            Err(t) => return bad_cmd(name, t),
        };
        if sel.folder.read_only() {
            return Done::Ok("Store ignored with read-only mailbox.".into());
        }
        let msgs = sel.folder.messages();
        let uids: Vec<u32> = seqs
            .iter()
            .map(|s| &msgs[*s as usize - 1])
            .filter(|m| !m.expunged)
            .map(|m| m.uid)
            .collect();
        let before_deleted: Vec<u32> = uids
            .iter()
            .filter(|u| {
                sel.folder
                    .get(**u)
                    .is_some_and(|m| m.flags.contains(Flags::DELETED))
            })
            .copied()
            .collect();
        let kw: Vec<&str> = keywords.iter().map(String::as_str).collect();
        let had_keywords = sel.folder.keywords().len();
        let stored = match sel.folder.store(&uids, op, flags, &kw, unchanged_since) {
            Ok(s) => s,
            Err(e) => return self.store_error(&e),
        };
        if sel.folder.keywords().len() != had_keywords {
            super::session::send_flags(&mut self.out, &sel.folder);
        }
        if !sel.updates.is_empty() {
            sel.touched.extend(&stored.changed);
        }
        let sel = self.sel.as_ref().expect("selected");
        for u in &stored.changed {
            if let Some(m) = sel.folder.get(*u)
                && m.flags.contains(Flags::DELETED)
                && !before_deleted.contains(u)
            {
                self.stats.deleted += 1;
            }
        }
        let send_uid = uid || self.qresync;
        for u in &stored.changed {
            let (Some(seq), Some(m)) = (sel.folder.seq(*u), sel.folder.get(*u)) else {
                continue;
            };
            if silent && !self.condstore {
                continue;
            }
            let mut line = format!("* {seq} FETCH (");
            if send_uid {
                line.push_str(&format!("UID {u} "));
            }
            if self.condstore {
                line.push_str(&format!("MODSEQ ({})", m.modseq));
                if !silent {
                    line.push(' ');
                }
            }
            if !silent {
                line.push_str(&format!("FLAGS ({})", flag_list(&sel.folder, m)));
            }
            line.push(')');
            self.out.line(&line);
        }
        if !stored.modified.is_empty() {
            let mut ids: Vec<u32> = if uid {
                stored.modified.clone()
            } else {
                stored
                    .modified
                    .iter()
                    .filter_map(|u| sel.folder.seq(*u))
                    .collect()
            };
            ids.sort_unstable();
            return Done::Ok(format!(
                "[MODIFIED {}] Conditional store failed.",
                super::message::search::seqset_string(&ids)
            ));
        }
        Done::Ok("Store completed.".into())
    }

    /// COPY / MOVE and their UID forms.
    pub(crate) fn cmd_copy(&mut self, args: &[Arg], uid: bool, is_move: bool) -> Done {
        let verb = if is_move { "MOVE" } else { "COPY" };
        let name = if uid {
            format!("UID {verb}")
        } else {
            verb.to_string()
        };
        let (Some(set), Some(dest), 2) = (
            args.first().and_then(Arg::atom).map(str::to_string),
            args.get(1).and_then(Arg::astring).map(<[u8]>::to_vec),
            args.len(),
        ) else {
            return bad_cmd(&name, "Invalid arguments");
        };
        let vdest = match super::mailbox_name::check(&dest, self.ns_sep, self.store_sep) {
            Ok(v) => v,
            Err(t) => return Done::No(t),
        };
        let store_dest = self.to_store_name(&vdest);
        let trash = self
            .st
            .namespace
            .mailboxes
            .iter()
            .any(|m| m.name == vdest && m.special_use.iter().any(|u| u == "\\Trash"));
        let Some(sel) = self.sel.as_mut() else {
            return Done::Bad("No mailbox selected.".into(), false);
        };
        let seqs = match resolve_set(&sel.folder, &sel.saved, &set, uid) {
            Ok(s) => s,
            Err(t) => return bad_cmd(&name, t),
        };
        let msgs = sel.folder.messages();
        let uids: Vec<u32> = seqs
            .iter()
            .map(|s| &msgs[*s as usize - 1])
            .filter(|m| !m.expunged)
            .map(|m| m.uid)
            .collect();
        if uids.is_empty() {
            // Dovecot checks the destination only when there is something to copy.
            return Done::Ok("No messages found.".into());
        }
        if is_move && sel.folder.read_only() {
            return Done::No("[CANNOT] Mailbox is read-only.".into());
        }
        // COPY adds to the user's quota (MOVE stays inside the one quota root). The
        // messages count with their IMAP sizes.
        if !is_move && self.st.quota.is_some() {
            let idx: Vec<usize> = uids
                .iter()
                .filter_map(|u| sel.folder.seq(*u).map(|s| s as usize - 1))
                .collect();
            sel.folder.resolve(idx, true, false);
            let bytes: u64 = uids
                .iter()
                .filter_map(|u| sel.folder.get(*u).map(|m| m.size))
                .sum();
            if let Some(d) = self.quota_check(bytes, uids.len() as u64) {
                return d;
            }
        }
        let Some(sel) = self.sel.as_mut() else {
            return Done::Bad("No mailbox selected.".into(), false);
        };
        let before: Vec<u32> = sel.folder.messages().iter().map(|m| m.uid).collect();
        let result = if is_move {
            sel.folder.move_to(&uids, &store_dest)
        } else {
            sel.folder.copy(&uids, &store_dest).map(|c| (c, Vec::new()))
        };
        let (copied, gone) = match result {
            Ok(r) => r,
            Err(MailboxError::NotFound(_)) => {
                return Done::No(format!(
                    "[TRYCREATE] Mailbox doesn't exist: {}.",
                    super::mutf7::encode(&vdest)
                ));
            }
            Err(e) => return self.store_error(&e),
        };
        if trash {
            self.stats.trashed += copied.uids.len() as u64;
        }
        let src: Vec<u32> = copied.uids.iter().map(|p| p.0).collect();
        let dst: Vec<u32> = copied.uids.iter().map(|p| p.1).collect();
        let code = format!(
            "COPYUID {} {} {}",
            copied.uid_validity,
            super::message::search::seqset_string(&src),
            super::message::search::seqset_string(&dst)
        );
        if is_move {
            let gone: Vec<u32> = gone.iter().map(|&(_, u)| u).collect();
            self.stats.expunged += gone.len() as u64;
            if let Some(sel) = self.sel.as_mut() {
                sel.saved.retain(|u| !gone.contains(u));
            }
            self.out.line(&format!("* OK [{code}] Moved UIDs."));
            self.send_expunged(&before, &gone);
            Done::Ok("Move completed.".into())
        } else {
            Done::Ok(format!("[{code}] Copy completed."))
        }
    }
}

/// The bytes an IMAP URL's `;SECTION=s` and `;PARTIAL=o.l` name in a message (CATENATE).
pub(crate) fn section_for_url(
    raw: &[u8],
    section: &str,
    partial: Option<(u64, Option<u64>)>,
) -> Option<Vec<u8>> {
    let msg = Message::new(raw);
    let sec = fetch::parse_section(&section.to_ascii_uppercase())?;
    let data = fetch::section_bytes(&msg, &sec)?;
    Some(match partial {
        Some((o, c)) => fetch::partial(&data, o, c).to_vec(),
        None => data,
    })
}

/// Why an item could not be written.
pub(crate) enum ItemError {
    /// The message is gone: a NIL reply was written (Dovecot's `[EXPUNGEISSUED]`).
    Expunged,
    /// FETCH stops with `NO [UNKNOWN-CTE] text`.
    Fail(String),
}
