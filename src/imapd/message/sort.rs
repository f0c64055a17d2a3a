//! SORT (RFC 5256 §2, SORT=DISPLAY of RFC 5957) and THREAD (RFC 5256 §3: ORDEREDSUBJECT,
//! REFERENCES; REFS) as Dovecot 2.3 orders them (`index-sort.c`, `index-thread*.c`,
//! `imap-base-subject.c`):
//! - ties are broken by message number, ascending even under REVERSE;
//! - DATE is the Date header's UTC time, the internal date when it is missing or broken;
//! - FROM/TO/CC compare the first address's mailbox (a group's name for a group),
//!   DISPLAYFROM/DISPLAYTO its decoded display name or else `mailbox@domain`;
//! - SUBJECT compares the base subject (encoded words decoded, white space packed,
//!   `Re:`/`Fwd:`/`[blob]` leaders, `(fwd)` trailers and `[Fwd: …]` wrappers removed).
//!
//! Known limits (XXX): strings are compared upper-cased, not in Dovecot's decomposed
//! titlecase; REFS threads like REFERENCES without the subject merge (Dovecot sorts REFS
//! threads by their newest message; the recorded corpus does not tell them apart); the
//! thread tree is built recursively, so a reference chain of tens of thousands of
//! messages needs a deep stack.

use super::mime::{self, Message};
use super::rfc822;
use super::search::{MessageMeta, decode_header, parse_rfc822_date};
use crate::imap::reader::Arg;
use std::cmp::Ordering;
use std::collections::HashMap;

/// One sort criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortKey {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
    DisplayFrom,
    DisplayTo,
}

/// Parses the criteria list (`(REVERSE DATE SUBJECT)`), with Dovecot's errors.
pub fn parse_criteria(arg: &Arg) -> Result<Vec<(SortKey, bool)>, String> {
    let list = arg.list().ok_or("Invalid sort argument")?;
    let mut out = Vec::new();
    let mut reverse = false;
    for a in list {
        let w = a
            .atom()
            .ok_or("Invalid sort argument")?
            .to_ascii_uppercase();
        let k = match w.as_str() {
            "REVERSE" => {
                reverse = !reverse;
                continue;
            }
            "ARRIVAL" => SortKey::Arrival,
            "CC" => SortKey::Cc,
            "DATE" => SortKey::Date,
            "FROM" => SortKey::From,
            "SIZE" => SortKey::Size,
            "SUBJECT" => SortKey::Subject,
            "TO" => SortKey::To,
            "DISPLAYFROM" => SortKey::DisplayFrom,
            "DISPLAYTO" => SortKey::DisplayTo,
            _ => return Err(format!("Unknown sort argument: {w}")),
        };
        out.push((k, reverse));
        reverse = false;
    }
    if out.is_empty() {
        return Err("Invalid sort argument".into());
    }
    Ok(out)
}

/// RFC 5256 §2.1 base subject, upper-cased.
pub fn base_subject(subject: &[u8]) -> String {
    let decoded = decode_header(subject).to_uppercase();
    // Pack white space.
    let mut s = String::with_capacity(decoded.len());
    let mut ws = false;
    for c in decoded.chars() {
        if matches!(c, ' ' | '\t' | '\r' | '\n') {
            if !ws {
                s.push(' ');
            }
            ws = true;
        } else {
            s.push(c);
            ws = false;
        }
    }
    let mut start = 0usize;
    loop {
        // Trailers: spaces and "(FWD)".
        loop {
            if s.len() > start && s.ends_with(' ') {
                s.pop();
            } else if s.len() >= start + 5 && s.ends_with("(FWD)") {
                s.truncate(s.len() - 5);
            } else {
                break;
            }
        }
        loop {
            let mut found = remove_leader(&s, &mut start);
            if s[start..].starts_with('[')
                && let Some(after) = blob_end(&s, start)
                && after < s.len()
            {
                start = after;
                found = true;
            }
            if !found {
                break;
            }
        }
        if s[start..].starts_with("[FWD:") && s.ends_with(']') {
            s.pop();
            start += 5;
            continue;
        }
        break;
    }
    s[start..].to_string()
}

fn blob_end(s: &str, at: usize) -> Option<usize> {
    let b = s.as_bytes();
    if b.get(at) != Some(&b'[') {
        return None;
    }
    let mut i = at + 1;
    while i < b.len() && b[i] != b'[' && b[i] != b']' {
        i += 1;
    }
    if b.get(i) != Some(&b']') {
        return None;
    }
    i += 1;
    if b.get(i) == Some(&b' ') {
        i += 1;
    }
    Some(i)
}

fn remove_leader(s: &str, start: &mut usize) -> bool {
    let b = s.as_bytes();
    let mut d = *start;
    let mut ret = false;
    if b.get(d) == Some(&b' ') {
        d += 1;
        *start = d;
        ret = true;
    }
    while b.get(d) == Some(&b'[') {
        match blob_end(s, d) {
            Some(e) => d = e,
            None => return ret,
        }
    }
    let rest = &s[d..];
    if rest.starts_with("RE") {
        d += 2;
    } else if rest.starts_with("FWD") {
        d += 3;
    } else if rest.starts_with("FW") {
        d += 2;
    } else {
        return ret;
    }
    if b.get(d) == Some(&b' ') {
        d += 1;
    }
    if b.get(d) == Some(&b'[') {
        match blob_end(s, d) {
            Some(e) => d = e,
            None => return ret,
        }
    }
    if b.get(d) != Some(&b':') {
        return ret;
    }
    *start = d + 1;
    true
}

fn field(m: &Message, name: &str) -> Option<Vec<u8>> {
    mime::fields(m.root.header(&m.raw))
        .into_iter()
        .find(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
        .map(|f| f.value)
}

/// The sent date (UTC seconds), the internal date when missing or broken.
pub fn sent_date(m: &Message, meta: &MessageMeta) -> i64 {
    header_date(m).unwrap_or(meta.internal_date)
}

/// The Date header's time (UTC seconds), if it has one that parses.
pub fn header_date(m: &Message) -> Option<i64> {
    mime::fields(m.root.header(&m.raw))
        .into_iter()
        .rfind(|f| f.name.eq_ignore_ascii_case(b"Date"))
        .and_then(|f| parse_rfc822_date(&f.value))
        .map(|(t, _)| t)
}

fn first_address(m: &Message, name: &str) -> Option<rfc822::Address> {
    field(m, name).and_then(|v| rfc822::parse_addresses(&v).into_iter().next())
}

fn sort_string(m: &Message, key: SortKey) -> String {
    let up = |b: &[u8]| String::from_utf8_lossy(b).to_uppercase();
    match key {
        SortKey::From | SortKey::To | SortKey::Cc => {
            let name = match key {
                SortKey::From => "From",
                SortKey::To => "To",
                _ => "Cc",
            };
            first_address(m, name)
                .and_then(|a| a.mailbox)
                .map(|mb| up(&mb))
                .unwrap_or_default()
        }
        SortKey::DisplayFrom | SortKey::DisplayTo => {
            let Some(a) = first_address(
                m,
                if key == SortKey::DisplayFrom {
                    "From"
                } else {
                    "To"
                },
            ) else {
                return String::new();
            };
            match a
                .name
                .as_ref()
                .map(|n| decode_header(n))
                .filter(|n| !n.is_empty())
            {
                Some(n) => n.to_uppercase(),
                None => {
                    let mut s = a.mailbox.map(|mb| up(&mb)).unwrap_or_default();
                    if let Some(d) = a.domain {
                        s.push('@');
                        s.push_str(&up(&d));
                    }
                    s
                }
            }
        }
        SortKey::Subject => field(m, "Subject")
            .map(|s| base_subject(&s))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Sorts the messages (their message numbers in the result order).
pub fn sort(msgs: &[(&Message, &MessageMeta)], criteria: &[(SortKey, bool)]) -> Vec<u32> {
    sort_cached(msgs, criteria, &mut SortCache::default())
}

/// A sort key's value for one message.
#[derive(Debug, Clone)]
pub enum KeyValue {
    Num(i64),
    Str(String),
}

/// The header-derived sort keys (sent date, base subject, addresses …) of messages by
/// UID: a message never changes, so a session computes each at most once per selection
/// (Dovecot keeps them in its index cache).
pub type SortCache = std::collections::HashMap<(u32, SortKey), KeyValue>;

/// [`sort`], taking and keeping the header-derived keys in `cache`.
pub fn sort_cached(
    msgs: &[(&Message, &MessageMeta)],
    criteria: &[(SortKey, bool)],
    cache: &mut SortCache,
) -> Vec<u32> {
    // The keys not kept yet, first; then rows that borrow the kept strings.
    for (m, meta) in msgs {
        for &(k, _) in criteria {
            match k {
                SortKey::Arrival | SortKey::Size => {}
                SortKey::Date => {
                    cache
                        .entry((meta.uid, k))
                        .or_insert_with(|| KeyValue::Num(sent_date(m, meta)));
                }
                _ => {
                    cache
                        .entry((meta.uid, k))
                        .or_insert_with(|| KeyValue::Str(sort_string(m, k)));
                }
            }
        }
    }
    let cache = &*cache;
    struct Row<'a> {
        seq: u32,
        strings: Vec<&'a str>,
        nums: Vec<i64>,
    }
    let rows: Vec<Row> = msgs
        .iter()
        .map(|(_, meta)| {
            let mut strings = Vec::new();
            let mut nums = Vec::new();
            for &(k, _) in criteria {
                match k {
                    SortKey::Arrival => nums.push(meta.internal_date),
                    SortKey::Size => nums.push(meta.size as i64),
                    SortKey::Date => nums.push(match cache.get(&(meta.uid, k)) {
                        Some(KeyValue::Num(n)) => *n,
                        _ => 0,
                    }),
                    _ => strings.push(match cache.get(&(meta.uid, k)) {
                        Some(KeyValue::Str(s)) => s.as_str(),
                        _ => "",
                    }),
                }
            }
            Row {
                seq: meta.seq,
                strings,
                nums,
            }
        })
        .collect();
    let mut idx: Vec<usize> = (0..rows.len()).collect();
    idx.sort_by(|&a, &b| {
        let (ra, rb) = (&rows[a], &rows[b]);
        let (mut si, mut ni) = (0, 0);
        for &(k, rev) in criteria {
            let o = match k {
                SortKey::Arrival | SortKey::Date | SortKey::Size => {
                    ni += 1;
                    ra.nums[ni - 1].cmp(&rb.nums[ni - 1])
                }
                _ => {
                    si += 1;
                    ra.strings[si - 1].cmp(rb.strings[si - 1])
                }
            };
            let o = if rev { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        ra.seq.cmp(&rb.seq)
    });
    idx.into_iter().map(|i| rows[i].seq).collect()
}

/// A thread tree node: a message number (0 for a missing parent) and its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    pub seq: u32,
    pub children: Vec<Thread>,
}

/// The THREAD algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    OrderedSubject,
    References,
    Refs,
}

impl Algorithm {
    pub fn parse(name: &str) -> Option<Algorithm> {
        match name.to_ascii_uppercase().as_str() {
            "ORDEREDSUBJECT" => Some(Algorithm::OrderedSubject),
            "REFERENCES" => Some(Algorithm::References),
            "REFS" => Some(Algorithm::Refs),
            _ => None,
        }
    }
}

fn msg_ids(v: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(lt) = v[i..].iter().position(|&c| c == b'<') {
        let s = i + lt;
        match v[s..].iter().position(|&c| c == b'>') {
            Some(gt) => {
                let id: Vec<u8> = v[s + 1..s + gt]
                    .iter()
                    .copied()
                    .filter(|c| !c.is_ascii_whitespace())
                    .collect();
                if id.contains(&b'@') {
                    out.push(id);
                }
                i = s + gt + 1;
            }
            None => break,
        }
    }
    out
}

/// Threads the messages (RFC 5256 §3).
pub fn thread(msgs: &[(&Message, &MessageMeta)], alg: Algorithm) -> Vec<Thread> {
    let n = msgs.len();
    let dates: Vec<i64> = msgs.iter().map(|(m, meta)| sent_date(m, meta)).collect();
    let subjects: Vec<String> = msgs
        .iter()
        .map(|(m, _)| {
            field(m, "Subject")
                .map(|s| base_subject(&s))
                .unwrap_or_default()
        })
        .collect();
    let by_date = |a: &usize, b: &usize| {
        dates[*a]
            .cmp(&dates[*b])
            .then(msgs[*a].1.seq.cmp(&msgs[*b].1.seq))
    };
    if alg == Algorithm::OrderedSubject {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|a, b| subjects[*a].cmp(&subjects[*b]).then_with(|| by_date(a, b)));
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for i in order {
            match groups.last_mut() {
                Some(g) if subjects[g[0]] == subjects[i] => g.push(i),
                _ => groups.push(vec![i]),
            }
        }
        groups.sort_by(|a, b| by_date(&a[0], &b[0]));
        return groups
            .into_iter()
            .map(|g| Thread {
                seq: msgs[g[0]].1.seq,
                children: g[1..]
                    .iter()
                    .map(|&i| Thread {
                        seq: msgs[i].1.seq,
                        children: vec![],
                    })
                    .collect(),
            })
            .collect();
    }
    // Containers: messages first, then missing ids.
    let mut id_of: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut cmsg: Vec<Option<usize>> = Vec::new();
    let mut parent: Vec<Option<usize>> = Vec::new();
    let container = |id: &[u8],
                     id_of: &mut HashMap<Vec<u8>, usize>,
                     cmsg: &mut Vec<Option<usize>>,
                     parent: &mut Vec<Option<usize>>|
     -> usize {
        if let Some(&c) = id_of.get(id) {
            return c;
        }
        cmsg.push(None);
        parent.push(None);
        id_of.insert(id.to_vec(), cmsg.len() - 1);
        cmsg.len() - 1
    };
    let mut own: Vec<usize> = Vec::with_capacity(n);
    for (i, (m, _)) in msgs.iter().enumerate() {
        let mid = field(m, "Message-ID")
            .map(|v| msg_ids(&v))
            .and_then(|v| v.into_iter().next());
        let c = match mid {
            Some(id) if id_of.get(&id).is_none_or(|&c| cmsg[c].is_none()) => {
                container(&id, &mut id_of, &mut cmsg, &mut parent)
            }
            _ => {
                cmsg.push(None);
                parent.push(None);
                cmsg.len() - 1
            }
        };
        cmsg[c] = Some(i);
        own.push(c);
    }
    let is_ancestor = |parent: &Vec<Option<usize>>, a: usize, mut b: usize| -> bool {
        let mut steps = 0;
        loop {
            if a == b {
                return true;
            }
            match parent[b] {
                Some(p) if steps < parent.len() => {
                    b = p;
                    steps += 1;
                }
                _ => return false,
            }
        }
    };
    for (i, (m, _)) in msgs.iter().enumerate() {
        let mut refs = field(m, "References")
            .map(|v| msg_ids(&v))
            .unwrap_or_default();
        if refs.is_empty()
            && let Some(irt) = field(m, "In-Reply-To")
                .map(|v| msg_ids(&v))
                .and_then(|v| v.into_iter().next())
        {
            refs.push(irt);
        }
        let mut prev: Option<usize> = None;
        for r in &refs {
            let c = container(r, &mut id_of, &mut cmsg, &mut parent);
            if let Some(p) = prev
                && parent[c].is_none()
                && !is_ancestor(&parent, c, p)
            {
                parent[c] = Some(p);
            }
            prev = Some(c);
        }
        let me = own[i];
        if let Some(p) = prev {
            // A parent that would close a loop (the message is its own ancestor through
            // others' References) leaves the message a root, as Dovecot's thread
            // links (imaptest's thread script: (3 2)(1)).
            parent[me] = (!is_ancestor(&parent, me, p)).then_some(p);
        } else {
            parent[me] = None;
        }
    }
    // Build trees.
    let total = cmsg.len();
    let mut kids: Vec<Vec<usize>> = vec![Vec::new(); total];
    let mut roots = Vec::new();
    for (c, p) in parent.iter().enumerate().take(total) {
        match *p {
            Some(p) => kids[p].push(c),
            None => roots.push(c),
        }
    }
    // Prune empty containers (RFC 5256 §3 step 4), bottom-up and iteratively.
    fn build(
        c: usize,
        cmsg: &[Option<usize>],
        kids: &[Vec<usize>],
        msgs: &[(&Message, &MessageMeta)],
    ) -> Vec<Thread> {
        let mut children: Vec<Thread> = Vec::new();
        for &k in &kids[c] {
            children.extend(build(k, cmsg, kids, msgs));
        }
        match cmsg[c] {
            Some(i) => vec![Thread {
                seq: msgs[i].1.seq,
                children,
            }],
            None if children.len() == 1 => children,
            None if children.is_empty() => vec![],
            None => vec![Thread { seq: 0, children }],
        }
    }
    let mut trees: Vec<Thread> = roots
        .iter()
        .flat_map(|&r| build(r, &cmsg, &kids, msgs))
        .collect();
    let seq_index: HashMap<u32, usize> = msgs
        .iter()
        .enumerate()
        .map(|(i, (_, m))| (m.seq, i))
        .collect();
    let date_of = |t: &Thread| -> (i64, u32) {
        // A dummy sorts by its first child's date.
        let mut t = t;
        while t.seq == 0 && !t.children.is_empty() {
            t = &t.children[0];
        }
        seq_index
            .get(&t.seq)
            .map_or((0, t.seq), |&i| (dates[i], t.seq))
    };
    fn sort_children(t: &mut Thread, key: &dyn Fn(&Thread) -> (i64, u32)) {
        let mut stack = vec![t];
        while let Some(t) = stack.pop() {
            t.children.sort_by_key(|c| key(c));
            for c in t.children.iter_mut() {
                stack.push(c);
            }
        }
    }
    for t in trees.iter_mut() {
        sort_children(t, &date_of);
    }
    if alg == Algorithm::References {
        // Step 5: merge roots with the same base subject.
        let subj_of = |t: &Thread| -> String {
            let mut t = t;
            while t.seq == 0 && !t.children.is_empty() {
                t = &t.children[0];
            }
            seq_index
                .get(&t.seq)
                .map(|&i| subjects[i].clone())
                .unwrap_or_default()
        };
        let mut merged: Vec<Thread> = Vec::new();
        let mut by_subject: HashMap<String, usize> = HashMap::new();
        for t in trees {
            let s = subj_of(&t);
            if s.is_empty() {
                merged.push(t);
                continue;
            }
            match by_subject.get(&s) {
                Some(&at) => {
                    let existing = &mut merged[at];
                    let t_is_reply = seq_index.get(&t.seq).is_some_and(|&i| {
                        field(msgs[i].0, "Subject").is_some_and(|v| {
                            base_subject(&v) != decode_header(&v).to_uppercase().trim()
                        })
                    });
                    if existing.seq == 0 {
                        existing.children.push(t);
                    } else if t.seq == 0 {
                        let old = std::mem::replace(existing, t);
                        existing.children.push(old);
                    } else if t_is_reply {
                        existing.children.push(t);
                    } else {
                        let old = std::mem::replace(
                            existing,
                            Thread {
                                seq: 0,
                                children: vec![],
                            },
                        );
                        existing.children = vec![old, t];
                    }
                    sort_children(existing, &date_of);
                }
                None => {
                    by_subject.insert(s, merged.len());
                    merged.push(t);
                }
            }
        }
        trees = merged;
    }
    trees.sort_by_key(|t| date_of(t));
    trees
}

/// `(1 (2)(3 4))…` as a THREAD response writes threads.
pub fn thread_string(trees: &[Thread]) -> String {
    fn one(t: &Thread, out: &mut String) {
        // A chain of single children is written flat: (1 2 3); branches as (1 (2)(3)).
        let mut t = t;
        if t.seq != 0 {
            out.push_str(&t.seq.to_string());
        }
        while t.children.len() == 1 {
            t = &t.children[0];
            if !out.ends_with('(') {
                out.push(' ');
            }
            out.push_str(&t.seq.to_string());
        }
        if t.children.len() > 1 {
            if !out.ends_with('(') {
                out.push(' ');
            }
            for c in &t.children {
                out.push('(');
                one(c, out);
                out.push(')');
            }
        }
    }
    let mut out = String::new();
    for t in trees {
        out.push('(');
        one(t, &mut out);
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects() {
        assert_eq!(
            base_subject(b"Re: Fwd: [list] Re: addresses (fwd)"),
            "ADDRESSES"
        );
        assert_eq!(base_subject(b"re: RE:  Lunch tomorrow?"), "LUNCH TOMORROW?");
        assert_eq!(base_subject(b"[list] lunch tomorrow?"), "LUNCH TOMORROW?");
        assert_eq!(base_subject(b"[Fwd: Re: x]"), "X");
        assert_eq!(base_subject(b"(no subject)"), "(NO SUBJECT)");
    }
}
