//! SEARCH (RFC 3501 with ESEARCH RFC 4731, SEARCHRES RFC 5182, CONDSTORE's MODSEQ RFC
//! 7162, WITHIN RFC 5032), SORT (RFC 5256, ESORT RFC 5267, SORT=DISPLAY RFC 5957) and
//! THREAD (REFERENCES, REFS, ORDEREDSUBJECT) over the selected mailbox, through the
//! message functions of [`super::message`]. A message's bytes are read only when a key
//! needs them (HEADER, BODY, TEXT, SENT*, the sort keys and threading).

use super::message::mime::Message;
use super::message::search::{self, Context, Key, MessageMeta, ReturnOptions};
use super::message::sort;
use super::reader::Arg;
use super::session::{Client, Done, Session, bad_cmd};
use crate::mailbox::Flags;

/// The metadata the search functions take, from a message of the view.
fn meta_of(folder: &crate::mailbox::Folder, seq: u32, m: &crate::mailbox::Message) -> MessageMeta {
    let mut flags = 0u8;
    for (f, bit) in [
        (Flags::SEEN, search::SEEN),
        (Flags::ANSWERED, search::ANSWERED),
        (Flags::FLAGGED, search::FLAGGED),
        (Flags::DELETED, search::DELETED),
        (Flags::DRAFT, search::DRAFT),
    ] {
        if m.flags.contains(f) {
            flags |= bit;
        }
    }
    if m.recent {
        flags |= search::RECENT;
    }
    MessageMeta {
        seq,
        uid: m.uid,
        flags,
        keywords: folder.keyword_names(m).map(str::to_string).collect(),
        internal_date: m.internal_date,
        internal_tz: local_offset_minutes(m.internal_date),
        size: m.size,
        modseq: m.modseq,
    }
}

/// The server's UTC offset (minutes) at `t`, the zone INTERNALDATE is shown in.
fn local_offset_minutes(t: i64) -> i64 {
    let tt = t as libc::time_t;
    // SAFETY: a zeroed `tm` is valid and localtime_r fills it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    unsafe { libc::localtime_r(&tt, &mut tm) };
    tm.tm_gmtoff / 60
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `RETURN (…)` at the start of SEARCH/SORT arguments: the options and how many
/// arguments they took.
fn return_options(args: &[Arg]) -> Result<(Option<ReturnOptions>, usize), String> {
    let is_return = args
        .first()
        .and_then(Arg::atom)
        .is_some_and(|a| a.eq_ignore_ascii_case("RETURN"));
    if !is_return {
        return Ok((None, 0));
    }
    let Some(list) = args.get(1).and_then(Arg::list) else {
        return Err("Invalid arguments".into());
    };
    match ReturnOptions::parse(list) {
        Ok(o) => Ok((Some(o), 2)),
        Err(e) => Err(e.text),
    }
}

impl<C: Client> Session<C> {
    /// The messages of the view matching `key`: (message number, metadata), in
    /// message-number order, with the parsed message when one was read.
    fn matching(&mut self, key: &Key, want_msgs: bool) -> Vec<(MessageMeta, Option<Message>)> {
        let Some(sel) = self.sel.as_ref() else {
            return Vec::new();
        };
        let folder = &sel.folder;
        let msgs = folder.messages();
        let saved_seqs: Vec<u32> = {
            let mut v: Vec<u32> = sel.saved.iter().filter_map(|u| folder.seq(*u)).collect();
            v.sort_unstable();
            v
        };
        let ctx = Context {
            count: msgs.len() as u32,
            last_uid: msgs.last().map_or(0, |m| m.uid),
            saved: saved_seqs,
            now: now(),
        };
        let mut out = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            if m.expunged {
                continue;
            }
            let meta = meta_of(folder, i as u32 + 1, m);
            let mut parsed: Option<Message> = None;
            let hit = {
                let mut load = || {
                    let raw = folder.read(m.uid).ok()?;
                    let msg = Message::new(&raw);
                    parsed = Some(msg.clone());
                    Some(msg)
                };
                search::matches(key, &meta, &ctx, &mut load)
            };
            if hit {
                if want_msgs && parsed.is_none() {
                    parsed = folder.read(m.uid).ok().map(|r| Message::new(&r));
                }
                out.push((meta, if want_msgs { parsed } else { None }));
            }
        }
        out
    }

    pub(crate) fn cmd_search(&mut self, tag: &str, args: &[Arg], uid: bool) -> Done {
        let name = if uid { "UID SEARCH" } else { "SEARCH" };
        let (ret, used) = match return_options(args) {
            Ok(r) => r,
            Err(t) => return bad_cmd(name, &t),
        };
        let key = match search::parse(&args[used..]) {
            Ok(k) => k,
            Err(e) if e.bad_charset => return Done::No("[BADCHARSET] Unknown charset.".into()),
            Err(e) => return bad_cmd(name, &e.text),
        };
        if key.has_modseq() {
            self.enable_condstore();
        }
        let hits = self.matching(&key, false);
        let ids: Vec<u32> = hits
            .iter()
            .map(|(m, _)| if uid { m.uid } else { m.seq })
            .collect();
        let top_modseq = hits.iter().map(|(m, _)| m.modseq).max().unwrap_or(0);
        match ret {
            Some(o) => {
                if o.save {
                    let kept = o.saved(&ids);
                    let uids: Vec<u32> = if uid {
                        kept
                    } else {
                        hits.iter()
                            .filter(|(m, _)| kept.contains(&m.seq))
                            .map(|(m, _)| m.uid)
                            .collect()
                    };
                    if let Some(sel) = self.sel.as_mut() {
                        let mut u = uids;
                        u.sort_unstable();
                        sel.saved = u;
                    }
                }
                // SAVE alone sends no ESEARCH (RFC 5182 §2.4).
                if o.min || o.max || o.count || o.all {
                    let mut line = o.esearch(tag, uid, &ids);
                    if key.has_modseq() && !ids.is_empty() {
                        // `* ESEARCH … MODSEQ n` (RFC 7162 §3.1.5): with only MIN and/or
                        // MAX, the highest MODSEQ of the messages returned.
                        let top_modseq = if !o.all && !o.count {
                            let mut t = 0;
                            if o.min {
                                t = hits.first().map_or(0, |(m, _)| m.modseq);
                            }
                            if o.max {
                                t = t.max(hits.last().map_or(0, |(m, _)| m.modseq));
                            }
                            t
                        } else {
                            top_modseq
                        };
                        line.truncate(line.len() - 2);
                        line.extend_from_slice(format!(" MODSEQ {top_modseq}\r\n").as_bytes());
                    }
                    self.out.raw(&line);
                }
            }
            None => {
                let mut line = String::from("* SEARCH");
                for n in &ids {
                    line.push(' ');
                    line.push_str(&n.to_string());
                }
                if key.has_modseq() && !ids.is_empty() {
                    line.push_str(&format!(" (MODSEQ {top_modseq})"));
                }
                self.out.line(&line);
            }
        }
        Done::Ok("Search completed.".into())
    }

    pub(crate) fn cmd_sort(&mut self, tag: &str, args: &[Arg], uid: bool) -> Done {
        let name = if uid { "UID SORT" } else { "SORT" };
        let (ret, used) = match return_options(args) {
            Ok(r) => r,
            Err(t) => return bad_cmd(name, &t),
        };
        let args = &args[used..];
        let Some(crit) = args.first() else {
            return bad_cmd(name, "Missing sort criteria");
        };
        let criteria = match sort::parse_criteria(crit) {
            Ok(c) => c,
            Err(e) => return bad_cmd(name, &e),
        };
        let Some(charset) = args.get(1).and_then(Arg::as_str) else {
            return bad_cmd(name, "Missing charset");
        };
        if !search::charset_known(charset) {
            return Done::No("[BADCHARSET] Unknown charset.".into());
        }
        let key = match search::parse(&args[2..]) {
            Ok(k) => k,
            Err(e) if e.bad_charset => return Done::No("[BADCHARSET] Unknown charset.".into()),
            Err(e) => return bad_cmd(name, &e.text),
        };
        let hits = self.matching(&key, false);
        let Some(sel) = self.sel.as_mut() else {
            return Done::Bad("No mailbox selected.".into(), false);
        };
        // Sort keys come from headers only: each message's header is read once per
        // selection and kept.
        for (meta, _) in &hits {
            if !sel.sort_headers.contains_key(&meta.uid) {
                let raw = sel.folder.read(meta.uid).unwrap_or_default();
                sel.sort_headers
                    .insert(meta.uid, Message::new(header_only(&raw)));
            }
        }
        let empty = Message::new(b"");
        let refs: Vec<(&Message, &MessageMeta)> = hits
            .iter()
            .map(|(meta, _)| (sel.sort_headers.get(&meta.uid).unwrap_or(&empty), meta))
            .collect();
        let order = sort::sort(&refs, &criteria);
        let uid_of: std::collections::HashMap<u32, u32> =
            hits.iter().map(|(m, _)| (m.seq, m.uid)).collect();
        let ids: Vec<u32> = if uid {
            order
                .iter()
                .filter_map(|s| uid_of.get(s).copied())
                .collect()
        } else {
            order
        };
        match ret {
            Some(o) => {
                if o.save
                    && let Some(sel) = self.sel.as_mut()
                {
                    let kept = o.saved(&ids);
                    let mut uids: Vec<u32> = if uid {
                        kept
                    } else {
                        kept.iter().filter_map(|s| uid_of.get(s).copied()).collect()
                    };
                    uids.sort_unstable();
                    sel.saved = uids;
                }
                let line = o.esearch(tag, uid, &ids);
                self.out.raw(&line);
            }
            None => {
                let mut line = String::from("* SORT");
                for n in &ids {
                    line.push(' ');
                    line.push_str(&n.to_string());
                }
                self.out.line(&line);
            }
        }
        Done::Ok("Sort completed.".into())
    }

    pub(crate) fn cmd_thread(&mut self, args: &[Arg], uid: bool) -> Done {
        let name = if uid { "UID THREAD" } else { "THREAD" };
        let Some(alg) = args.first().and_then(Arg::atom) else {
            return bad_cmd(name, "Missing thread algorithm");
        };
        let Some(alg) = sort::Algorithm::parse(alg) else {
            return bad_cmd(name, "Unknown thread algorithm");
        };
        let Some(charset) = args.get(1).and_then(Arg::as_str) else {
            return bad_cmd(name, "Missing charset");
        };
        if !search::charset_known(charset) {
            return Done::No("[BADCHARSET] Unknown charset.".into());
        }
        let key = match search::parse(&args[2..]) {
            Ok(k) => k,
            Err(e) if e.bad_charset => return Done::No("[BADCHARSET] Unknown charset.".into()),
            Err(e) => return bad_cmd(name, &e.text),
        };
        let hits = self.matching(&key, true);
        let pairs: Vec<(Message, MessageMeta)> = hits
            .into_iter()
            .map(|(meta, msg)| (msg.unwrap_or_else(|| Message::new(b"")), meta))
            .collect();
        let refs: Vec<(&Message, &MessageMeta)> = pairs.iter().map(|(m, x)| (m, x)).collect();
        let mut trees = sort::thread(&refs, alg);
        if uid {
            let map: std::collections::HashMap<u32, u32> =
                pairs.iter().map(|(_, m)| (m.seq, m.uid)).collect();
            fn renumber(t: &mut sort::Thread, map: &std::collections::HashMap<u32, u32>) {
                let mut stack = vec![t];
                while let Some(n) = stack.pop() {
                    if n.seq != 0 {
                        n.seq = map.get(&n.seq).copied().unwrap_or(n.seq);
                    }
                    stack.extend(n.children.iter_mut());
                }
            }
            for t in &mut trees {
                renumber(t, &map);
            }
        }
        self.out
            .line(&format!("* THREAD {}", sort::thread_string(&trees)));
        Done::Ok("Thread completed.".into())
    }
}

/// A message's header with the empty line that ends it (the whole message when it has
/// no body).
fn header_only(raw: &[u8]) -> &[u8] {
    let mut pos = 0;
    while let Some(e) = raw[pos..].iter().position(|&b| b == b'\n') {
        let line = &raw[pos..pos + e + 1];
        pos += e + 1;
        if line == b"\n" || line == b"\r\n" {
            return &raw[..pos];
        }
    }
    raw
}
