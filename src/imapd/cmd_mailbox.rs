//! Mailbox commands of the authenticated state, as Dovecot 2.3 answers them: CREATE,
//! DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, STATUS (RFC 3501; SIZE of RFC 8438,
//! HIGHESTMODSEQ of RFC 7162), LIST and LSUB with LIST-EXTENDED (RFC 5258: selection
//! SUBSCRIBED, SPECIAL-USE, RECURSIVEMATCH; return SUBSCRIBED, CHILDREN, SPECIAL-USE),
//! LIST-STATUS (RFC 5819), CHILDREN (RFC 3348) and SPECIAL-USE (RFC 6154, from
//! `namespace inbox { mailbox NAME { special_use } }`).
//!
//! Names come in modified UTF-7 and are checked as Dovecot checks them
//! ([`super::mailbox_name`]) before the store sees them; the store checks again. A
//! plain LIST shows `\Noselect`, `\HasChildren`/`\HasNoChildren` and special-use
//! attributes; an extended one only what was asked for (a missing Maildir++ level is then
//! `\NonExistent`), as Dovecot does.

use super::mutf7;
use super::session::{Done, Session, bad_cmd, quote_escape};
use crate::imap::reader::Arg;
use crate::mailbox::{FolderInfo, MailboxError};

/// A name as IMAP writes it in LIST/STATUS replies: an atom when it can be one, a quoted
/// string, or a literal for 8-bit or control characters (names are mUTF-7, so rarely).
pub(crate) fn astring_out(name: &str) -> String {
    let atom_ok = !name.is_empty()
        && !name.eq_ignore_ascii_case("NIL")
        && name.bytes().all(|c| {
            c > b' '
                && c < 0x7f
                && !matches!(c, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
        });
    if atom_ok {
        return name.to_string();
    }
    if name.bytes().all(|c| (b' '..0x7f).contains(&c)) {
        return format!("\"{}\"", quote_escape(name));
    }
    format!("{{{}}}\r\n{name}", name.len())
}

/// IMAP's LIST wildcards: `*` matches anything, `%` anything but the separator
/// (a table over pattern and name prefixes; both are short).
pub(crate) fn wildmatch(pattern: &[char], name: &[char], sep: char) -> bool {
    let w = name.len() + 1;
    let mut prev = vec![false; w];
    prev[0] = true;
    let mut cur = vec![false; w];
    for &pc in pattern {
        cur[0] = prev[0] && (pc == '*' || pc == '%');
        for j in 1..w {
            let c = name[j - 1];
            cur[j] = match pc {
                '*' => prev[j] || cur[j - 1],
                '%' => prev[j] || (cur[j - 1] && c != sep),
                _ => prev[j - 1] && pc == c,
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[name.len()]
}

/// A pattern's leading `INBOX` in any case becomes `INBOX` (INBOX is matched without
/// regard to case, RFC 3501 §5.1).
fn inbox_case(pattern: &str, sep: char) -> String {
    if pattern.len() >= 5 && pattern.is_char_boundary(5) {
        let (head, tail) = pattern.split_at(5);
        if head.eq_ignore_ascii_case("INBOX") && (tail.is_empty() || tail.starts_with(sep)) {
            return format!("INBOX{tail}");
        }
    }
    pattern.to_string()
}

#[derive(Default)]
struct ListOpts {
    extended: bool,
    sel_subscribed: bool,
    sel_special: bool,
    recursive: bool,
    ret_subscribed: bool,
    ret_children: bool,
    ret_special: bool,
    ret_status: Option<Vec<String>>,
}

/// STATUS items in Dovecot's reply order.
const STATUS_ITEMS: [&str; 7] = [
    "MESSAGES",
    "RECENT",
    "UIDNEXT",
    "UIDVALIDITY",
    "UNSEEN",
    "HIGHESTMODSEQ",
    "SIZE",
];

impl Session {
    /// A mailbox name argument checked; `Err` is the reply.
    fn mailbox_arg(&self, arg: Option<&Arg>, cmd: &str) -> Result<(String, String), Done> {
        let Some(raw) = arg.and_then(Arg::astring) else {
            return Err(bad_cmd(cmd, "Invalid arguments"));
        };
        match super::mailbox_name::check(raw, self.ns_sep, self.store_sep) {
            Ok(v) => {
                let s = self.to_store_name(&v);
                Ok((v, s))
            }
            Err(t) => Err(Done::No(t)),
        }
    }

    /// The special-use attributes the configuration gives `vname`.
    fn special_use(&self, vname: &str) -> Vec<String> {
        self.st
            .namespace
            .mailboxes
            .iter()
            .filter(|m| m.name == vname)
            .flat_map(|m| m.special_use.iter().cloned())
            .collect()
    }

    pub(crate) fn cmd_create(&mut self, args: &[Arg]) -> Done {
        let Some(raw) = args.first().and_then(Arg::astring) else {
            return bad_cmd("CREATE", "Invalid arguments");
        };
        if args.len() > 1 {
            return bad_cmd("CREATE", "Invalid arguments");
        }
        let vname = match super::mailbox_name::check_create(raw, self.ns_sep, self.store_sep) {
            Ok(v) => v,
            Err(t) => return Done::No(t),
        };
        let mut store_name = self.to_store_name(&vname);
        // A trailing separator asks for a level of the hierarchy only (an mbox
        // directory); Maildir++ makes the folder anyway, as Dovecot does.
        let mut sep = [0u8; 4];
        if raw.ends_with(self.ns_sep.encode_utf8(&mut sep).as_bytes()) && self.store_sep == '/' {
            store_name.push('/');
        }
        match self.store.create(&store_name) {
            Ok(()) => Done::Ok("Create completed.".into()),
            Err(MailboxError::AlreadyExists(_)) => {
                Done::No("[ALREADYEXISTS] Mailbox already exists.".into())
            }
            Err(e) => self.store_error(&e),
        }
    }

    pub(crate) fn cmd_delete(&mut self, args: &[Arg]) -> Done {
        if args.len() != 1 {
            return bad_cmd("DELETE", "Invalid arguments");
        }
        let (vname, store_name) = match self.mailbox_arg(args.first(), "DELETE") {
            Ok(n) => n,
            Err(d) => return d,
        };
        if crate::mailbox::names::is_inbox(&store_name) {
            return Done::No("INBOX can't be deleted.".into());
        }
        // Deleting the selected mailbox closes it first (Dovecot's cmd-delete.c).
        if self
            .sel
            .as_ref()
            .is_some_and(|s| s.folder.name() == store_name)
        {
            self.sel = None;
        }
        match self.store.delete(&store_name) {
            Ok(()) => Done::Ok("Delete completed.".into()),
            Err(MailboxError::NotFound(_)) => Done::No(format!(
                "[NONEXISTENT] Mailbox doesn't exist: {}.",
                mutf7::encode(&vname)
            )),
            Err(e) => self.store_error(&e),
        }
    }

    pub(crate) fn cmd_rename(&mut self, args: &[Arg]) -> Done {
        if args.len() != 2 {
            return bad_cmd("RENAME", "Invalid arguments");
        }
        let (from_v, from) = match self.mailbox_arg(args.first(), "RENAME") {
            Ok(n) => n,
            Err(d) => return d,
        };
        let (_, to) = match self.mailbox_arg(args.get(1), "RENAME") {
            Ok(n) => n,
            Err(d) => return d,
        };
        match self.store.rename(&from, &to) {
            Ok(()) => Done::Ok("Rename completed.".into()),
            Err(MailboxError::NotFound(_)) => Done::No(format!(
                "[NONEXISTENT] Mailbox doesn't exist: {}.",
                mutf7::encode(&from_v)
            )),
            Err(MailboxError::AlreadyExists(_)) => {
                Done::No("[ALREADYEXISTS] Target mailbox already exists.".into())
            }
            Err(e) => self.store_error(&e),
        }
    }

    pub(crate) fn cmd_subscribe(&mut self, args: &[Arg], on: bool) -> Done {
        let cmd = if on { "SUBSCRIBE" } else { "UNSUBSCRIBE" };
        if args.len() != 1 {
            return bad_cmd(cmd, "Invalid arguments");
        }
        let (vname, store_name) = match self.mailbox_arg(args.first(), cmd) {
            Ok(n) => n,
            Err(d) => return d,
        };
        match self.store.set_subscribed(&store_name, on) {
            Ok(()) => Done::Ok(format!(
                "{} completed.",
                if on { "Subscribe" } else { "Unsubscribe" }
            )),
            Err(MailboxError::NotFound(_)) => {
                Done::No(format!("Mailbox doesn't exist: {}.", mutf7::encode(&vname)))
            }
            Err(e) => self.store_error(&e),
        }
    }

    /// Parse STATUS items (a list of atoms); `Err` is the BAD text.
    fn status_items(&mut self, list: &[Arg]) -> Result<Vec<String>, String> {
        if list.is_empty() {
            return Err("Empty status list".into());
        }
        let mut items = Vec::new();
        for a in list {
            let Some(w) = a.atom() else {
                return Err("Status list contains non-atoms".into());
            };
            let w = w.to_ascii_uppercase();
            if !STATUS_ITEMS.contains(&w.as_str()) {
                return Err(format!("Invalid status item {w}"));
            }
            if w == "HIGHESTMODSEQ" {
                self.enable_condstore();
            }
            items.push(w);
        }
        Ok(items)
    }

    /// `* STATUS name (…)` of a mailbox; `Err` is the store's error.
    fn status_line(&mut self, store_name: &str, items: &[String]) -> Result<String, MailboxError> {
        let size = items.iter().any(|i| i == "SIZE");
        let st = self.store.status(store_name, size)?;
        let mut parts = Vec::new();
        for item in STATUS_ITEMS {
            if !items.iter().any(|i| i == item) {
                continue;
            }
            let v = match item {
                "MESSAGES" => st.messages.to_string(),
                "RECENT" => st.recent.to_string(),
                "UIDNEXT" => st.uid_next.to_string(),
                "UIDVALIDITY" => st.uid_validity.to_string(),
                "UNSEEN" => st.unseen.to_string(),
                "HIGHESTMODSEQ" => st.highest_modseq.to_string(),
                _ => st.size.to_string(),
            };
            parts.push(format!("{item} {v}"));
        }
        let name = astring_out(&mutf7::encode(&self.to_ns_name(store_name)));
        Ok(format!("* STATUS {name} ({})", parts.join(" ")))
    }

    pub(crate) fn cmd_status(&mut self, args: &[Arg]) -> Done {
        if args.len() < 2 {
            return bad_cmd("STATUS", "Missing arguments");
        }
        let Some(list) = args.get(1).and_then(Arg::list) else {
            return bad_cmd("STATUS", "Invalid arguments");
        };
        if args.len() > 2 {
            return bad_cmd("STATUS", "Invalid arguments");
        }
        let items = match self.status_items(list) {
            Ok(i) => i,
            Err(t) => return bad_cmd("STATUS", &t),
        };
        let (vname, store_name) = match self.mailbox_arg(args.first(), "STATUS") {
            Ok(n) => n,
            Err(d) => return d,
        };
        match self.status_line(&store_name, &items) {
            Ok(line) => {
                self.out.line(&line);
                let selected = self
                    .sel
                    .as_ref()
                    .is_some_and(|s| s.folder.name() == store_name);
                if selected {
                    Done::Ok("[CLIENTBUG] Status on selected mailbox completed.".into())
                } else {
                    Done::Ok("Status completed.".into())
                }
            }
            Err(MailboxError::NotFound(_)) => {
                Done::No(format!("Mailbox doesn't exist: {}.", mutf7::encode(&vname)))
            }
            Err(e) => self.store_error(&e),
        }
    }

    /// LIST and LSUB.
    pub(crate) fn cmd_list(&mut self, args: &[Arg], lsub: bool) -> Done {
        let cmd = if lsub { "LSUB" } else { "LIST" };
        let mut o = ListOpts::default();
        let mut i = 0;
        if !lsub && let Some(Arg::List(sel)) = args.first() {
            o.extended = true;
            for a in sel {
                let Some(w) = a.atom() else {
                    return bad_cmd(cmd, "List options contains non-atoms");
                };
                match w.to_ascii_uppercase().as_str() {
                    "SUBSCRIBED" => o.sel_subscribed = true,
                    "SPECIAL-USE" => o.sel_special = true,
                    "RECURSIVEMATCH" => o.recursive = true,
                    "REMOTE" => {}
                    _ => return bad_cmd(cmd, "Unknown select options"),
                }
            }
            if o.recursive && !o.sel_subscribed && !o.sel_special {
                return bad_cmd(cmd, "RECURSIVEMATCH must not be the only selection");
            }
            i = 1;
        }
        let Some(reference) = args.get(i).and_then(Arg::astring) else {
            return bad_cmd(cmd, "Invalid arguments");
        };
        let reference = String::from_utf8_lossy(reference).into_owned();
        let mut patterns: Vec<String> = Vec::new();
        match args.get(i + 1) {
            Some(Arg::List(l)) if !lsub => {
                o.extended = true;
                for p in l {
                    let Some(p) = p.astring() else {
                        return bad_cmd(cmd, "Invalid pattern list");
                    };
                    patterns.push(String::from_utf8_lossy(p).into_owned());
                }
            }
            Some(a) => match a.astring() {
                Some(p) => patterns.push(String::from_utf8_lossy(p).into_owned()),
                None => return bad_cmd(cmd, "Invalid pattern"),
            },
            None => return bad_cmd(cmd, "Invalid pattern"),
        }
        let rest = &args[(i + 2).min(args.len())..];
        if !rest.is_empty() {
            let is_return = rest[0]
                .atom()
                .is_some_and(|w| w.eq_ignore_ascii_case("RETURN"));
            let Some(ret) = rest
                .get(1)
                .and_then(Arg::list)
                .filter(|_| is_return && !lsub)
            else {
                return bad_cmd(cmd, "Extra arguments");
            };
            if rest.len() > 2 {
                return bad_cmd(cmd, "Extra arguments");
            }
            o.extended = true;
            let mut j = 0;
            while j < ret.len() {
                let Some(w) = ret[j].atom() else {
                    return bad_cmd(cmd, "List options contains non-atoms");
                };
                match w.to_ascii_uppercase().as_str() {
                    "SUBSCRIBED" => o.ret_subscribed = true,
                    "CHILDREN" => o.ret_children = true,
                    "SPECIAL-USE" => o.ret_special = true,
                    "STATUS" => {
                        let Some(items) = ret.get(j + 1).and_then(Arg::list) else {
                            return bad_cmd(cmd, "Invalid status items");
                        };
                        match self.status_items(items) {
                            Ok(it) => o.ret_status = Some(it),
                            Err(t) => return bad_cmd(cmd, &t),
                        }
                        j += 1;
                    }
                    _ => return bad_cmd(cmd, "Unknown return options"),
                }
                j += 1;
            }
        }
        let sep = self.ns_sep;
        // `LIST "" ""`: the hierarchy separator and the root.
        if patterns.len() == 1 && patterns[0].is_empty() {
            if lsub {
                return Done::Ok("Lsub completed.".into());
            }
            self.out.line(&format!(
                "* LIST (\\Noselect) \"{}\" \"\"",
                quote_escape(&sep.to_string())
            ));
            return Done::Ok("List completed.".into());
        }
        let mut matchers: Vec<Vec<char>> = Vec::new();
        for p in &patterns {
            let full = format!("{reference}{p}");
            let utf8 = mutf7::decode(full.as_bytes()).unwrap_or(full);
            matchers.push(inbox_case(&utf8, sep).chars().collect());
        }
        let matches = |name: &str| {
            let chars: Vec<char> = name.chars().collect();
            matchers.iter().any(|m| wildmatch(m, &chars, sep))
        };
        let folders = match self.store.list() {
            Ok(f) => f,
            Err(e) => return self.store_error(&e),
        };
        let need_subs = lsub || o.sel_subscribed || o.ret_subscribed || !o.extended;
        let subs: Vec<String> = if need_subs {
            match self.store.subscriptions() {
                Ok(s) => s,
                Err(e) => return self.store_error(&e),
            }
        } else {
            Vec::new()
        };
        let maildirpp = self.store_sep == '.';
        let sep_s = quote_escape(&sep.to_string());
        let done = if lsub {
            "Lsub completed."
        } else {
            "List completed."
        };
        if lsub || o.sel_subscribed {
            // The subscriptions, in the order they were made.
            let mut seen: Vec<String> = Vec::new();
            for s in &subs {
                let vname = self.to_ns_name(s);
                let info = folders.iter().find(|f| f.name == *s);
                if matches(&vname) {
                    if seen.contains(&vname) {
                        continue;
                    }
                    seen.push(vname.clone());
                    let mut attrs: Vec<String> = Vec::new();
                    if lsub {
                        if info.is_none_or(|f| f.noselect) {
                            attrs.push("\\Noselect".into());
                        }
                        attrs.extend(self.special_use(&vname));
                    } else {
                        attrs.push("\\Subscribed".into());
                        match info {
                            None => attrs.push("\\NonExistent".into()),
                            Some(f) => {
                                if f.noselect {
                                    attrs.push("\\Noselect".into());
                                }
                                if o.ret_children {
                                    attrs.push(children(f).into());
                                }
                            }
                        }
                        if o.ret_special || o.sel_special {
                            attrs.extend(self.special_use(&vname));
                        }
                    }
                    let name = astring_out(&mutf7::encode(&vname));
                    self.out
                        .line(&format!("* {cmd} ({}) \"{sep_s}\" {name}", attrs.join(" ")));
                } else if lsub && vname.contains(sep) {
                    // `%` stops at a level: the level is listed \Noselect (RFC 3501
                    // §6.3.9) when only its child is subscribed.
                    let mut parent = vname.as_str();
                    while let Some(p) = parent.rfind(sep) {
                        parent = &parent[..p];
                        if matches(parent) && !seen.iter().any(|x| x == parent) {
                            seen.push(parent.to_string());
                            let name = astring_out(&mutf7::encode(parent));
                            self.out
                                .line(&format!("* LSUB (\\Noselect) \"{sep_s}\" {name}"));
                            break;
                        }
                    }
                }
            }
            if !lsub && o.recursive {
                // RECURSIVEMATCH (RFC 5258 §3.5): a matching mailbox that is not itself
                // subscribed but has a subscribed descendant the patterns do not match
                // (one they match is listed itself), with `CHILDINFO`.
                for s in &subs {
                    let vname = self.to_ns_name(s);
                    if matches(&vname) {
                        continue;
                    }
                    let mut parent = vname.as_str();
                    while let Some(p) = parent.rfind(sep) {
                        parent = &parent[..p];
                        if !matches(parent) || seen.iter().any(|x| x == parent) {
                            continue;
                        }
                        seen.push(parent.to_string());
                        let mut attrs: Vec<String> = Vec::new();
                        let store_name = self.to_store_name(parent);
                        match folders.iter().find(|f| f.name == store_name) {
                            None => attrs.push("\\NonExistent".into()),
                            Some(f) => {
                                if f.noselect {
                                    attrs.push("\\Noselect".into());
                                }
                                if o.ret_children {
                                    attrs.push(children(f).into());
                                }
                            }
                        }
                        if o.ret_special || o.sel_special {
                            attrs.extend(self.special_use(parent));
                        }
                        let name = astring_out(&mutf7::encode(parent));
                        self.out.line(&format!(
                            "* LIST ({}) \"{sep_s}\" {name} (CHILDINFO (\"SUBSCRIBED\"))",
                            attrs.join(" ")
                        ));
                    }
                }
            }
            return Done::Ok(done.into());
        }
        let mut list: Vec<&FolderInfo> = folders.iter().collect();
        // Dovecot lists a Maildir++ INBOX after the folders.
        if maildirpp && let Some(p) = list.iter().position(|f| f.name == "INBOX") {
            let inbox = list.remove(p);
            list.push(inbox);
        }
        for f in list {
            let vname = self.to_ns_name(&f.name);
            if !matches(&vname) {
                continue;
            }
            let special = self.special_use(&vname);
            if o.sel_special && special.is_empty() {
                continue;
            }
            let subscribed = subs.contains(&f.name);
            let mut attrs: Vec<String> = Vec::new();
            if o.extended {
                if subscribed && (o.ret_subscribed || o.sel_subscribed) {
                    attrs.push("\\Subscribed".into());
                }
                if f.noselect {
                    attrs.push(
                        if maildirpp {
                            "\\NonExistent"
                        } else {
                            "\\Noselect"
                        }
                        .into(),
                    );
                }
                if f.noinferiors {
                    attrs.push("\\NoInferiors".into());
                }
                // As without RETURN: a \NoInferiors mbox file has no children flag.
                if o.ret_children && !f.noinferiors {
                    attrs.push(children(f).into());
                }
                if o.ret_special || o.sel_special {
                    attrs.extend(special);
                }
            } else {
                if f.noselect {
                    attrs.push("\\Noselect".into());
                }
                if f.noinferiors {
                    attrs.push("\\NoInferiors".into());
                } else {
                    attrs.push(children(f).into());
                }
                attrs.extend(special);
            }
            let name = astring_out(&mutf7::encode(&vname));
            self.out
                .line(&format!("* LIST ({}) \"{sep_s}\" {name}", attrs.join(" ")));
            if let Some(items) = o.ret_status.clone()
                && !f.noselect
                && let Ok(line) = self.status_line(&f.name, &items)
            {
                self.out.line(&line);
            }
        }
        Done::Ok(done.into())
    }
}

fn children(f: &FolderInfo) -> &'static str {
    if f.has_children {
        "\\HasChildren"
    } else {
        "\\HasNoChildren"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        let p: Vec<char> = p.chars().collect();
        let n: Vec<char> = n.chars().collect();
        wildmatch(&p, &n, '.')
    }

    #[test]
    fn list_wildcards() {
        assert!(m("*", "a.b.c"));
        assert!(m("%", "abc"));
        assert!(!m("%", "a.b"));
        assert!(m("a.%", "a.b"));
        assert!(!m("a.%", "a.b.c"));
        assert!(m("a*c", "a.b.c"));
        assert!(m("a%c", "abbc"));
        assert!(!m("a%c", "a.c"));
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("INBOX", "INBOX"));
        assert!(m("*b", "ab.b"));
        assert!(m("*.%", "a.b.c"));
        assert!(!m("%.%", "a.b.c"));
        assert_eq!(inbox_case("inbox.Sub", '.'), "INBOX.Sub");
        assert_eq!(inbox_case("inboxes", '.'), "inboxes");
    }

    #[test]
    fn names_out() {
        assert_eq!(astring_out("INBOX"), "INBOX");
        assert_eq!(astring_out("a*b"), "\"a*b\"");
        assert_eq!(astring_out("a\"b"), "\"a\\\"b\"");
        assert_eq!(astring_out(""), "\"\"");
        assert_eq!(astring_out("Sent Items"), "\"Sent Items\"");
    }
}
