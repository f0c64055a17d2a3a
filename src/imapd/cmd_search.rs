//! SEARCH (RFC 3501 with ESEARCH RFC 4731, SEARCHRES RFC 5182, CONDSTORE's MODSEQ RFC
//! 7162, WITHIN RFC 5032), SORT (RFC 5256, ESORT RFC 5267, SORT=DISPLAY RFC 5957) and
//! THREAD (REFERENCES, REFS, ORDEREDSUBJECT) over the selected mailbox, through the
//! message functions of [`super::message`]. A message's bytes are read only when a key
//! needs them (HEADER, BODY, TEXT, SENT*, the sort keys and threading).
//!
//! CONTEXT=SEARCH (RFC 5267) as Dovecot 2.3.19 has it: `RETURN (PARTIAL m:n)` for SEARCH
//! and SORT, `RETURN (UPDATE)` keeps the result (at most 10 per session, then `* NO
//! [NOUPDATE "tag"]`) and the session's sync reports its changes as `* ESEARCH (TAG "t")
//! [UID] REMOVEFROM (0 set) ADDTO (0 set)` — removals of expunged messages before the
//! EXPUNGE replies, then flag changes (this session's own STOREs included) and new
//! messages after EXISTS; CANCELUPDATE ends one. Dovecot's `UPDATE (fetch-att)` extension
//! is not offered (a list after UPDATE is refused as a non-atom option).

use super::hdrcache::header_only;
use super::message::mime::Message;
use super::message::search::{self, Context, Hit, Key, MessageMeta, ReturnOptions};
use super::message::sort;
use super::session::{Done, Session, bad_cmd};
use crate::imap::reader::Arg;
use crate::mailbox::Flags;
use std::collections::{BTreeSet, HashSet};

/// Dovecot's `CLIENT_MAX_SEARCH_UPDATES`.
const MAX_UPDATES: usize = 10;

/// A `SEARCH/SORT RETURN (UPDATE)` result kept for the selected mailbox.
pub(crate) struct SearchUpdate {
    pub tag: String,
    /// Reported as UIDs (the command was UID SEARCH/SORT).
    pub uid: bool,
    pub key: Key,
    /// The matching messages, as UIDs.
    pub result: BTreeSet<u32>,
}

/// The metadata the search functions take, from a message of the view.
/// `tz`: the zone of the internal date is wanted (only a day compare of it needs it).
fn meta_of(
    folder: &crate::mailbox::Folder,
    seq: u32,
    m: &crate::mailbox::Message,
    tz: bool,
) -> MessageMeta {
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
        internal_tz: if tz {
            local_offset_minutes(m.internal_date)
        } else {
            0
        },
        size: m.size,
        modseq: m.modseq,
    }
}

/// The server's UTC offset (minutes) at `t`, the zone INTERNALDATE is shown in.
fn local_offset_minutes(t: i64) -> i64 {
    let tm = crate::sys::time::local(t).unwrap_or_else(crate::sys::time::blank_tm);
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

impl Session {
    /// The messages of the view matching `key`: (message number, metadata), in
    /// message-number order, with the parsed message when one was read.
    fn matching(&mut self, key: &Key, want_msgs: bool) -> Vec<(MessageMeta, Option<Message>)> {
        self.resolve_meta(key.needs_size(), key.needs_date(), None);
        self.matching_in(key, want_msgs, None)
    }

    /// Make the sizes and/or internal dates of the view's messages (those in `only`,
    /// else all) known, for a search or sort that compares them; a message whose file
    /// cannot be read is logged (it compares as size 0, date 0).
    fn resolve_meta(&mut self, size: bool, date: bool, only: Option<&HashSet<u32>>) {
        if !size && !date {
            return;
        }
        let Some(sel) = self.sel.as_mut() else { return };
        let idx: Vec<usize> = sel
            .folder
            .messages()
            .iter()
            .enumerate()
            .filter(|(_, m)| only.is_none_or(|o| o.contains(&m.uid)))
            .map(|(i, _)| i)
            .collect();
        for (u, e) in sel.folder.resolve(idx, size, date) {
            self.log_error(&format!("SEARCH of UID {u}: {e}"));
        }
    }

    /// SORT by DATE and THREAD fall back on the internal date of a message without a
    /// usable Date header: those dates made known and put in `metas`.
    fn fallback_dates<'a>(&mut self, metas: impl Iterator<Item = (&'a mut MessageMeta, bool)>) {
        let Some(sel) = self.sel.as_mut() else { return };
        let mut want: Vec<&mut MessageMeta> = metas
            .filter(|(m, has_date)| {
                !has_date && sel.folder.get(m.uid).is_some_and(|x| !x.date_known())
            })
            .map(|(m, _)| m)
            .collect();
        if want.is_empty() {
            return;
        }
        let idx: Vec<usize> = want.iter().map(|m| m.seq as usize - 1).collect();
        let failed = sel.folder.resolve(idx, false, true);
        for m in want.iter_mut() {
            if let Some(x) = sel.folder.get(m.uid) {
                m.internal_date = x.internal_date;
                m.internal_tz = local_offset_minutes(x.internal_date);
            }
        }
        for (u, e) in failed {
            self.log_error(&format!("SORT of UID {u}: {e}"));
        }
    }

    /// [`Self::matching`] over the messages whose UIDs are in `only` (all when `None`).
    fn matching_in(
        &self,
        key: &Key,
        want_msgs: bool,
        only: Option<&HashSet<u32>>,
    ) -> Vec<(MessageMeta, Option<Message>)> {
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
        let need_tz = key.needs_date();
        let mut out = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            if m.expunged || only.is_some_and(|o| !o.contains(&m.uid)) {
                continue;
            }
            let meta = meta_of(folder, i as u32 + 1, m, need_tz);
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
        if ret.as_ref().is_some_and(|o| o.update) && self.update_index(tag).is_some() {
            return bad_cmd(name, "Duplicate search update tag");
        }
        let key = match search::parse(&args[used..]) {
            Ok(k) => k,
            Err(e) if e.bad_charset => return Done::No("[BADCHARSET] Unknown charset.".into()),
            Err(e) => return bad_cmd(name, &e.text),
        };
        if key.has_modseq() {
            self.enable_condstore();
        }
        let hits = self.matching(&key, false);
        match ret {
            Some(o) => {
                let hits: Vec<Hit> = hits.iter().map(|(m, _)| hit_of(m, uid)).collect();
                self.esearch_reply(tag, uid, o, key, &hits);
            }
            None => {
                let ids: Vec<u32> = hits
                    .iter()
                    .map(|(m, _)| if uid { m.uid } else { m.seq })
                    .collect();
                let top_modseq = hits.iter().map(|(m, _)| m.modseq).max().unwrap_or(0);
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
        if ret.as_ref().is_some_and(|o| o.update) && self.update_index(tag).is_some() {
            return bad_cmd(name, "Duplicate search update tag");
        }
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
        self.resolve_meta(
            criteria.iter().any(|(k, _)| *k == sort::SortKey::Size),
            criteria.iter().any(|(k, _)| *k == sort::SortKey::Arrival),
            None,
        );
        let mut hits = self.matching(&key, false);
        let Some(sel) = self.sel.as_mut() else {
            return Done::Bad("No mailbox selected.".into(), false);
        };
        // Sort keys come from headers (the folder's header cache) and are kept for the
        // selection: a header is read only for a key not known yet (none for ARRIVAL
        // and SIZE).
        let header_keys: Vec<sort::SortKey> = criteria
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| !matches!(k, sort::SortKey::Arrival | sort::SortKey::Size))
            .collect();
        for (meta, _) in &hits {
            let missing = header_keys
                .iter()
                .any(|k| !sel.sort_keys.contains_key(&(meta.uid, *k)));
            if missing && !sel.sort_headers.contains_key(&meta.uid) {
                let cached = sel.hdr_cache.get(&sel.folder, meta.uid).map(Message::new);
                let msg = match cached {
                    Some(m) => m,
                    None => {
                        let raw = sel.folder.read(meta.uid).unwrap_or_default();
                        let h = header_only(&raw);
                        if !raw.is_empty() {
                            sel.hdr_cache.put(&sel.folder, meta.uid, h);
                        }
                        Message::new(h)
                    }
                };
                sel.sort_headers.insert(meta.uid, msg);
            }
        }
        self.save_header_cache();
        if criteria.iter().any(|(k, _)| *k == sort::SortKey::Date) {
            let Some(sel) = self.sel.as_ref() else {
                return Done::Bad("No mailbox selected.".into(), false);
            };
            // A date already kept for the selection was found before.
            let has_date: Vec<bool> = hits
                .iter()
                .map(|(m, _)| {
                    sel.sort_keys.contains_key(&(m.uid, sort::SortKey::Date))
                        || sel
                            .sort_headers
                            .get(&m.uid)
                            .is_some_and(|h| sort::header_date(h).is_some())
                })
                .collect();
            self.fallback_dates(hits.iter_mut().map(|(m, _)| m).zip(has_date));
        }
        let Some(sel) = self.sel.as_mut() else {
            return Done::Bad("No mailbox selected.".into(), false);
        };
        let empty = Message::new(b"");
        let refs: Vec<(&Message, &MessageMeta)> = hits
            .iter()
            .map(|(meta, _)| (sel.sort_headers.get(&meta.uid).unwrap_or(&empty), meta))
            .collect();
        let order = sort::sort_cached(&refs, &criteria, &mut sel.sort_keys);
        let uid_of: std::collections::HashMap<u32, u32> =
            hits.iter().map(|(m, _)| (m.seq, m.uid)).collect();
        let ids: Vec<u32> = if uid {
            order
                .iter()
                .filter_map(|s| uid_of.get(s).copied())
                .collect()
        } else {
            order.clone()
        };
        match ret {
            Some(o) => {
                let by_seq: std::collections::HashMap<u32, &MessageMeta> =
                    hits.iter().map(|(m, _)| (m.seq, m)).collect();
                let hits: Vec<Hit> = order
                    .iter()
                    .filter_map(|s| by_seq.get(s).map(|m| hit_of(m, uid)))
                    .collect();
                self.esearch_reply(tag, uid, o, key, &hits);
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

    /// The ESEARCH reply of SEARCH/SORT RETURN (…) over `hits` (result order); SAVE's
    /// `$` and UPDATE's kept result set as Dovecot's `imap_search_start` does.
    fn esearch_reply(
        &mut self,
        tag: &str,
        uid: bool,
        mut o: ReturnOptions,
        key: Key,
        hits: &[Hit],
    ) {
        if o.update {
            let full = self
                .sel
                .as_ref()
                .is_some_and(|s| s.updates.len() >= MAX_UPDATES);
            if full {
                self.out.line(&format!(
                    "* NO [NOUPDATE \"{}\"]",
                    super::session::quote_escape(tag)
                ));
                o.update = false;
            } else if let Some(sel) = self.sel.as_mut() {
                sel.updates.push(SearchUpdate {
                    tag: tag.to_string(),
                    uid,
                    result: hits.iter().map(|h| h.uid).collect(),
                    key: key.clone(),
                });
            }
        }
        let r = o.reply(tag, uid, hits, key.has_modseq());
        if let (Some(saved), Some(sel)) = (r.saved, self.sel.as_mut()) {
            sel.saved = saved;
        }
        if let Some(line) = r.line {
            self.out.raw(&line);
        }
    }

    /// The index of the UPDATE search tagged `tag`.
    fn update_index(&self, tag: &str) -> Option<usize> {
        self.sel.as_ref()?.updates.iter().position(|u| u.tag == tag)
    }

    /// `CANCELUPDATE "tag" …` (RFC 5267 §4.3), Dovecot's replies.
    pub(crate) fn cmd_cancelupdate(&mut self, args: &[Arg]) -> Done {
        // Dovecot takes strings only (quoted or literal), at least one.
        let tags: Vec<&str> = args
            .iter()
            .map_while(|a| match a {
                Arg::Quoted(s) | Arg::Literal { data: s, .. } => std::str::from_utf8(s).ok(),
                _ => None,
            })
            .collect();
        if tags.is_empty() || tags.len() != args.len() {
            return bad_cmd("CANCELUPDATE", "Invalid parameters.");
        }
        for t in tags {
            match self.update_index(t) {
                Some(i) => {
                    if let Some(sel) = self.sel.as_mut() {
                        sel.updates.remove(i);
                    }
                }
                None => return Done::No("Unknown tag.".into()),
            }
        }
        Done::Ok("Updates cancelled.".into())
    }

    /// The first report of UPDATE searches in a sync: the kept results' messages in
    /// `gone` (expunged), by the numbers of `before`, sent before the EXPUNGE replies.
    pub(crate) fn search_updates_expunged(&mut self, before: &[u32], gone: &[u32]) {
        let Some(sel) = self.sel.as_mut() else { return };
        let mut lines = Vec::new();
        for u in &mut sel.updates {
            let mut removed: Vec<u32> = gone
                .iter()
                .copied()
                .filter(|g| u.result.remove(g))
                .collect();
            if removed.is_empty() {
                continue;
            }
            if !u.uid {
                removed = removed
                    .iter()
                    .filter_map(|g| before.iter().position(|b| b == g))
                    .map(|p| p as u32 + 1)
                    .collect();
            }
            removed.sort_unstable();
            lines.push(update_line(&u.tag, u.uid, &removed, &[]));
        }
        for l in lines {
            self.out.line(&l);
        }
    }

    /// The second report: messages whose flags changed (`changed`, and this session's
    /// own STOREs kept in `touched`) or that are new (`first_new`: the first new
    /// message's number) evaluated again; what joined or left each kept result.
    pub(crate) fn search_updates_changed(&mut self, changed: &[u32], first_new: usize) {
        let Some(sel) = self.sel.as_mut() else { return };
        if sel.updates.is_empty() {
            sel.touched.clear();
            return;
        }
        let mut cand: HashSet<u32> = std::mem::take(&mut sel.touched).into_iter().collect();
        cand.extend(changed.iter().copied());
        cand.extend(sel.folder.messages().iter().skip(first_new).map(|m| m.uid));
        cand.retain(|u| sel.folder.get(*u).is_some_and(|m| !m.expunged));
        if cand.is_empty() {
            return;
        }
        let keys: Vec<Key> = sel.updates.iter().map(|u| u.key.clone()).collect();
        self.resolve_meta(
            keys.iter().any(Key::needs_size),
            keys.iter().any(Key::needs_date),
            Some(&cand),
        );
        let mut lines = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let hits: HashSet<u32> = self
                .matching_in(key, false, Some(&cand))
                .iter()
                .map(|(m, _)| m.uid)
                .collect();
            let Some(sel) = self.sel.as_mut() else { return };
            let u = &mut sel.updates[i];
            let mut adds = Vec::new();
            let mut removes = Vec::new();
            for c in &cand {
                if hits.contains(c) {
                    if u.result.insert(*c) {
                        adds.push(*c);
                    }
                } else if u.result.remove(c) {
                    removes.push(*c);
                }
            }
            if adds.is_empty() && removes.is_empty() {
                continue;
            }
            if !u.uid {
                for v in [&mut adds, &mut removes] {
                    *v = v.iter().filter_map(|x| sel.folder.seq(*x)).collect();
                }
            }
            adds.sort_unstable();
            removes.sort_unstable();
            lines.push(update_line(&u.tag, u.uid, &removes, &adds));
        }
        for l in lines {
            self.out.line(&l);
        }
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
        let mut pairs: Vec<(Message, MessageMeta)> = hits
            .into_iter()
            .map(|(meta, msg)| (msg.unwrap_or_else(|| Message::new(b"")), meta))
            .collect();
        self.fallback_dates(pairs.iter_mut().map(|(msg, meta)| {
            let has = sort::header_date(msg).is_some();
            (meta, has)
        }));
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

/// A search hit as the reply numbers it.
fn hit_of(m: &MessageMeta, uid: bool) -> Hit {
    Hit {
        id: if uid { m.uid } else { m.seq },
        seq: m.seq,
        uid: m.uid,
        modseq: m.modseq,
    }
}

/// `* ESEARCH (TAG "t") [UID] REMOVEFROM (0 set) ADDTO (0 set)` (Dovecot's
/// `imap_sync_send_search_update`; the position is always 0).
fn update_line(tag: &str, uid: bool, removes: &[u32], adds: &[u32]) -> String {
    let mut l = format!("* ESEARCH (TAG \"{}\")", super::session::quote_escape(tag));
    if uid {
        l.push_str(" UID");
    }
    if !removes.is_empty() {
        l.push_str(&format!(
            " REMOVEFROM (0 {})",
            search::seqset_string(removes)
        ));
    }
    if !adds.is_empty() {
        l.push_str(&format!(" ADDTO (0 {})", search::seqset_string(adds)));
    }
    l
}
