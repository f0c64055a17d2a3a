//! SELECT, EXAMINE (with CONDSTORE and QRESYNC parameters, RFC 7162), CLOSE, UNSELECT
//! (RFC 3691) and EXPUNGE / UID EXPUNGE (UIDPLUS, RFC 4315), as Dovecot 2.3's
//! `cmd-select.c`, `cmd-close.c`, `cmd-expunge.c` answer them.

use super::seqset::SeqSet;
use super::session::{Done, Selected, Session, bad_cmd, flag_list, send_flags};
use crate::imap::reader::Arg;
use crate::mailbox::{Access, Flags, MailboxError, SyncMode};

/// QRESYNC's SELECT parameter: `(uidvalidity modseq [known-uids [(seqs uids)]])`.
struct Qresync {
    uid_validity: u32,
    modseq: u64,
    known: Option<SeqSet>,
    /// (message numbers, UIDs) the client knows to match.
    map: Option<(SeqSet, SeqSet)>,
}

impl Session {
    /// Send the untagged replies of `uids` expunged (by this session): `VANISHED` under
    /// QRESYNC, else `* N EXPUNGE` highest first, numbered as before any of them went.
    pub(crate) fn send_expunged(&mut self, before: &[u32], uids: &[u32]) {
        if uids.is_empty() {
            return;
        }
        self.search_updates_expunged(before, uids);
        if self.qresync {
            let mut sorted = uids.to_vec();
            sorted.sort_unstable();
            self.out.line(&format!(
                "* VANISHED {}",
                super::message::search::seqset_string(&sorted)
            ));
            return;
        }
        let mut seqs: Vec<u32> = uids
            .iter()
            .filter_map(|u| before.iter().position(|b| b == u))
            .map(|p| p as u32 + 1)
            .collect();
        seqs.sort_unstable_by(|a, b| b.cmp(a));
        for s in seqs {
            self.out.line(&format!("* {s} EXPUNGE"));
        }
    }

    pub(crate) fn cmd_select(&mut self, _tag: &str, cmd: &str, args: &[Arg]) -> Done {
        let (Some(name), 1..=2) = (args.first().and_then(Arg::astring), args.len()) else {
            return bad_cmd(cmd, "Invalid arguments");
        };
        let name = name.to_vec();
        if self.sel.take().is_some() {
            self.out.line("* OK [CLOSED] Previous mailbox closed.");
        }
        let mut qresync = None;
        if let Some(params) = args.get(1) {
            let Some(list) = params.list() else {
                return bad_cmd(cmd, "Invalid arguments");
            };
            let mut i = 0;
            while i < list.len() {
                match list[i].atom().map(str::to_ascii_uppercase).as_deref() {
                    Some("CONDSTORE") => {
                        self.condstore_quiet();
                        i += 1;
                    }
                    Some("QRESYNC") => {
                        if !self.qresync {
                            return bad_cmd(cmd, "QRESYNC not enabled");
                        }
                        let Some(q) = list.get(i + 1).and_then(Arg::list) else {
                            return bad_cmd(cmd, "Invalid QRESYNC parameters");
                        };
                        match parse_qresync(q) {
                            Some(q) => qresync = Some(q),
                            None => return bad_cmd(cmd, "Invalid QRESYNC parameters"),
                        }
                        i += 2;
                    }
                    _ => return bad_cmd(cmd, "Unknown FETCH modifier"),
                }
            }
        }
        let vname = match super::mailbox_name::check(&name, self.ns_sep, self.store_sep) {
            Ok(v) => v,
            Err(text) => return Done::No(text),
        };
        let store_name = self.to_store_name(&vname);
        let access = if cmd == "EXAMINE" {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        };
        let folder = match self.store.select(&store_name, access) {
            Ok(f) => f,
            Err(MailboxError::NotFound(_)) => {
                return Done::No(format!("Mailbox doesn't exist: {vname}."));
            }
            Err(e) => return self.store_error(&e),
        };
        let status = folder.status();
        send_flags(&mut self.out, &folder);
        self.out
            .line(&format!("* {} EXISTS", folder.messages().len()));
        self.out.line(&format!("* {} RECENT", status.recent));
        if let Some(seq) = status.first_unseen {
            self.out.line(&format!("* OK [UNSEEN {seq}] First unseen."));
        }
        self.out.line(&format!(
            "* OK [UIDVALIDITY {}] UIDs valid",
            folder.uid_validity()
        ));
        self.out.line(&format!(
            "* OK [UIDNEXT {}] Predicted next UID",
            folder.uid_next()
        ));
        // Dovecot shows HIGHESTMODSEQ where CONDSTORE is on, or was ever used on the
        // mailbox (its index then tracks MODSEQs).
        if self.condstore {
            folder.announce_modseqs();
        }
        if self.condstore || folder.modseqs_announced() {
            self.out.line(&format!(
                "* OK [HIGHESTMODSEQ {}] Highest",
                folder.highest_modseq()
            ));
        }
        if let Some(q) = qresync
            && q.uid_validity == folder.uid_validity()
        {
            self.qresync_replies(&folder, &q);
        }
        let read_only = folder.read_only();
        self.sel = Some(Selected {
            folder,
            saved: Vec::new(),
            name: vname,
            recent: status.recent,
            sort_headers: std::collections::HashMap::new(),
            sort_keys: Default::default(),
            hdr_cache: Default::default(),
            updates: Vec::new(),
            touched: Vec::new(),
        });
        let (code, verb) = (
            if read_only { "READ-ONLY" } else { "READ-WRITE" },
            if cmd == "EXAMINE" {
                "Examine"
            } else {
                "Select"
            },
        );
        Done::Ok(format!("[{code}] {verb} completed."))
    }

    /// SELECT's CONDSTORE parameter turns CONDSTORE on without the HIGHESTMODSEQ line of
    /// a mailbox being closed.
    fn condstore_quiet(&mut self) {
        self.condstore = true;
    }

    /// QRESYNC (RFC 7162 §3.2.5): `VANISHED (EARLIER)` for what was expunged since the
    /// client's MODSEQ, `FETCH (UID FLAGS MODSEQ)` for what changed.
    fn qresync_replies(&mut self, folder: &crate::mailbox::Folder, q: &Qresync) {
        let last_uid = folder.uid_next().saturating_sub(1);
        let mut lo = 1;
        // The client's map of message numbers to UIDs tells how far back to look.
        if let Some((seqs, uids)) = &q.map {
            let seq_list = expand(seqs, folder.messages().len() as u32);
            let uid_list = expand(uids, last_uid);
            for (s, u) in seq_list.iter().zip(uid_list.iter()) {
                match folder.messages().get(*s as usize - 1) {
                    Some(m) if m.uid == *u => lo = lo.max(*u),
                    _ => break,
                }
            }
        }
        let within_known = |uid: u32| match &q.known {
            Some(set) => set.contains(uid, last_uid, &[]),
            None => true,
        };
        let mut vanished: Vec<u32> = folder
            .vanished_since(q.modseq, (lo, last_uid.max(1)))
            .into_iter()
            .filter(|u| within_known(*u))
            .collect();
        vanished.sort_unstable();
        vanished.dedup();
        if !vanished.is_empty() {
            self.out.line(&format!(
                "* VANISHED (EARLIER) {}",
                super::message::search::seqset_string(&vanished)
            ));
        }
        for (i, m) in folder.messages().iter().enumerate() {
            if m.modseq > q.modseq && within_known(m.uid) {
                self.out.line(&format!(
                    "* {} FETCH (UID {} FLAGS ({}) MODSEQ ({}))",
                    i + 1,
                    m.uid,
                    flag_list(folder, m),
                    m.modseq
                ));
            }
        }
    }

    /// CLOSE (`expunge`: \Deleted messages go, silently) and UNSELECT.
    pub(crate) fn cmd_close(&mut self, expunge: bool) -> Done {
        let Some(mut sel) = self.sel.take() else {
            return Done::Bad("No mailbox selected.".into(), false);
        };
        if expunge && !sel.folder.read_only() {
            match sel.folder.expunge(None) {
                Ok(gone) => self.stats.expunged += gone.len() as u64,
                Err(e) => {
                    self.log_error(&format!("Mailbox {}: CLOSE expunge: {e}", sel.name));
                }
            }
        }
        if expunge {
            Done::Ok("Close completed.".into())
        } else {
            Done::Ok("Unselect completed.".into())
        }
    }

    /// EXPUNGE, or UID EXPUNGE of a set (only the \Deleted ones in it go).
    pub(crate) fn cmd_expunge(&mut self, args: &[Arg], uid: bool) -> Done {
        let name = if uid { "UID EXPUNGE" } else { "EXPUNGE" };
        let set = if uid {
            let Some(s) = args.first().and_then(Arg::atom) else {
                return bad_cmd(name, "Invalid arguments");
            };
            match SeqSet::parse(s.as_bytes()) {
                Some(s) => Some(s),
                None => return bad_cmd(name, "Invalid uidset"),
            }
        } else {
            if !args.is_empty() {
                return bad_cmd(name, "Invalid arguments");
            }
            None
        };
        let Some(sel) = self.sel.as_ref() else {
            return Done::Bad("No mailbox selected.".into(), false);
        };
        if sel.folder.read_only() {
            return Done::No("Mailbox is read-only.".into());
        }
        // Others' changes first, reported (the view must be current to number ours; an
        // expunge held back during an earlier FETCH or STORE is sent now).
        self.sync(SyncMode::Full, uid);
        let Some(sel) = self.sel.as_mut() else {
            return Done::Bad("No mailbox selected.".into(), false);
        };
        let before: Vec<u32> = sel.folder.messages().iter().map(|m| m.uid).collect();
        let uids: Option<Vec<u32>> = set.map(|s| {
            let last = before.last().copied().unwrap_or(0);
            let saved = sel.saved.clone();
            before
                .iter()
                .copied()
                .filter(|u| s.contains(*u, last, &saved))
                .collect()
        });
        match sel.folder.expunge(uids.as_deref()) {
            Ok(gone) => {
                let gone: Vec<u32> = gone.iter().map(|&(_, u)| u).collect();
                self.stats.expunged += gone.len() as u64;
                if let Some(sel) = self.sel.as_mut() {
                    sel.saved.retain(|u| !gone.contains(u));
                }
                self.send_expunged(&before, &gone);
                Done::Ok("Expunge completed.".into())
            }
            Err(e) => self.store_error(&e),
        }
    }
}

/// A message set's numbers (for QRESYNC's map; bounded by `last`).
fn expand(set: &SeqSet, last: u32) -> Vec<u32> {
    match set {
        SeqSet::Saved => Vec::new(),
        SeqSet::Ranges(_) => (1..=last).filter(|n| set.contains(*n, last, &[])).collect(),
    }
}

fn parse_qresync(q: &[Arg]) -> Option<Qresync> {
    let uid_validity = q.first()?.atom()?.parse().ok()?;
    let modseq = q.get(1)?.atom()?.parse().ok()?;
    let mut known = None;
    let mut map = None;
    let mut i = 2;
    if let Some(a) = q.get(i).and_then(Arg::atom) {
        known = Some(SeqSet::parse(a.as_bytes())?);
        i += 1;
    }
    if let Some(l) = q.get(i).and_then(Arg::list) {
        let s = SeqSet::parse(l.first()?.atom()?.as_bytes())?;
        let u = SeqSet::parse(l.get(1)?.atom()?.as_bytes())?;
        map = Some((s, u));
        i += 1;
    }
    if i != q.len() {
        return None;
    }
    let _ = Flags::empty();
    Some(Qresync {
        uid_validity,
        modseq,
        known,
        map,
    })
}
