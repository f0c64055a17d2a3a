//! Dovecot's metadata in an mbox's headers, hidden from clients: the first message
//! carries `X-IMAPbase: UIDVALIDITY LAST-UID [keywords]` (the box's keyword names), each
//! message `X-UID: UID`, `Status:` (`R` \Seen, `O` no longer \Recent), `X-Status:` (`A`
//! \Answered, `F` \Flagged, `T` \Draft, `D` \Deleted, in that order) and `X-Keywords:`
//! (names). A box that never saw Dovecot gets UIDVALIDITY = the current time and UIDs 1,
//! 2, … written into the headers the way Dovecot 2.3's POP3 writes them (`X-IMAPbase` and
//! `X-UID` at the end of the header, no `Status:` until a flag changes), so that either
//! server can take over and keeps the numbering. A header that is rewritten (new flags, a
//! UID, the first message's `X-IMAPbase`) gets all its metadata anew at its end in
//! Dovecot's order (`X-IMAPbase`, `X-UID`, `Status`, `X-Status`, `X-Keywords`: Dovecot
//! reads `X-Keywords` by `X-IMAPbase`'s list, so that must come first); a session that
//! changes a message's flags also writes `O`. Headers of messages that do not change are
//! copied as they are.
//!
//! Padding, as Dovecot 2.3 writes it (`mbox_sync_try_rewrite()`,
//! `mbox_sync_headers_add_space()` in `src/lib-storage/index/mbox/mbox-sync-rewrite.c`,
//! `MBOX_HEADER_PADDING` = 50 in `mbox-storage.h`): a header whose metadata no longer
//! fits in its old size gets 50 spaces at the end of its `X-Keywords` line, or `X-UID`
//! without keywords (`X-UID: 1` and 50 spaces for each message of a fresh box); a header
//! that fits keeps its old size, the difference in spaces where the padding was (so
//! marking a padded message read takes the 11 bytes of `Status: RO` from its padding,
//! and the file does not grow). The padding is reused, never added to.
//!
//! Here: reading the fields ([`note_field`], [`parse_header`]), giving UIDs
//! ([`assign_uids`]), writing the fields ([`meta_lines`], [`fit_header`]).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::mailbox::flags::Flags;

use super::rewrite::LINE_HEAD;
use super::scan::{Raw, SCAN_KEEP, header_name};

/// Headers Dovecot hides from clients (`mbox_hide_headers`'s built-in list).
pub(super) const HIDDEN: &[&str] = &[
    "x-imapbase",
    "x-imap",
    "x-uid",
    "status",
    "x-status",
    "x-keywords",
    "content-length",
];

/// Spaces Dovecot leaves for later in-place rewrites when a header must grow
/// (`MBOX_HEADER_PADDING`, `src/lib-storage/index/mbox/mbox-storage.h`).
pub(super) const HEADER_PADDING: usize = 50;

/// The spaces after a rewritten header's `X-UID` (or `X-Keywords`, or the pseudo
/// message's `X-IMAP`): a header of `natural` bytes without padding that fits in its
/// `old` size keeps that size, the rest in spaces (Dovecot's `mbox_sync_try_rewrite()`
/// taking from or adding to the padding); one that does not fit gets [`HEADER_PADDING`]
/// fresh spaces (Dovecot's `mbox_sync_rewrite()` after `mbox_sync_headers_remove_space()`,
/// for a run of messages that ends at the end of the file, as UIDs given to new mail do).
pub(super) fn header_padding(old: usize, natural: usize) -> usize {
    if natural <= old {
        old - natural
    } else {
        HEADER_PADDING
    }
}

/// The metadata header a continuation line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cont {
    Other,
    Keywords,
    Base,
}

pub(super) fn header_value(line: &[u8]) -> &str {
    let colon = line.iter().position(|&b| b == b':').unwrap_or(0);
    std::str::from_utf8(&line[(colon + 1).min(line.len())..])
        .unwrap_or("")
        .trim()
}

/// Take Dovecot's metadata from the header field `name` (lower case) whose line begins
/// with `text`, in message number `index` of the file; `cont` says what a continuation
/// line that follows continues.
pub(super) fn note_field(raw: &mut Raw, name: &str, text: &[u8], index: usize, cont: &mut Cont) {
    *cont = Cont::Other;
    match name {
        "x-uid" => raw.uid = header_value(text).parse().ok(),
        "x-imapbase" | "x-imap" => {
            raw.pseudo = name == "x-imap" && index == 0;
            let mut w = header_value(text).split_whitespace();
            let v = w.next().and_then(|v| v.parse().ok());
            let last = w.next().and_then(|v| v.parse().ok());
            if let (Some(v), Some(last)) = (v, last) {
                raw.imapbase = Some((v, last));
                raw.imapbase_rest = w.collect::<Vec<_>>().join(" ");
                *cont = Cont::Base;
            }
        }
        "status" => {
            raw.has_status = true;
            let v = header_value(text);
            if v.contains('R') {
                raw.flags.insert(Flags::SEEN);
            } else {
                raw.flags.remove(Flags::SEEN);
            }
            raw.old = v.contains('O');
        }
        "x-status" => {
            for c in header_value(text).chars() {
                match c {
                    'A' => raw.flags.insert(Flags::ANSWERED),
                    'F' => raw.flags.insert(Flags::FLAGGED),
                    'T' => raw.flags.insert(Flags::DRAFT),
                    'D' => raw.flags.insert(Flags::DELETED),
                    _ => {}
                }
            }
        }
        "x-keywords" => {
            raw.keywords = header_value(text)
                .split_whitespace()
                .map(String::from)
                .collect();
            let line = text.strip_suffix(b"\n").unwrap_or(text);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            raw.kw_padded = line.ends_with(b" ");
            *cont = Cont::Keywords;
        }
        "content-length" if raw.content_length.is_none() => {
            // Dovecot's `parse_content_length`: digits, then only white space.
            let v =
                std::str::from_utf8(&text[text.iter().position(|&b| b == b':').unwrap_or(0) + 1..])
                    .unwrap_or("");
            let v = v.trim_start_matches([' ', '\t']);
            let digits = v.len() - v.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits > 0 && v[digits..].trim().is_empty() {
                raw.content_length = v[..digits].parse().ok();
            }
        }
        _ => {}
    }
}

/// A continuation line (`text`) of the field `cont` says.
pub(super) fn note_continuation(raw: &mut Raw, text: &[u8], cont: Cont) {
    let words = || {
        std::str::from_utf8(text)
            .unwrap_or("")
            .split_whitespace()
            .map(String::from)
    };
    match cont {
        Cont::Keywords => raw.keywords.extend(words()),
        Cont::Base => {
            for w in words() {
                if !raw.imapbase_rest.is_empty() {
                    raw.imapbase_rest.push(' ');
                }
                raw.imapbase_rest.push_str(&w);
            }
        }
        Cont::Other => {}
    }
}

/// UIDs for each message: a stored `X-UID` is kept while the UIDs go up; others get the
/// next free UID, as Dovecot's mbox sync assigns them. A box without `X-IMAPbase` takes
/// UIDVALIDITY `fresh` (Postern's index keeps the one of an empty box) or the current
/// time. Returns (UIDVALIDITY, last UID, UIDs, whether the headers must be rewritten).
pub(super) fn assign_uids(raws: &[Raw], fresh: Option<u32>) -> (u32, u32, Vec<u32>, bool) {
    let base = raws.first().and_then(|r| r.imapbase);
    let (validity, mut last) = match base {
        Some((v, l)) => (v, l),
        None => (fresh.unwrap_or_else(now_validity), 0),
    };
    let mut dirty = base.is_none() && !raws.is_empty();
    let mut prev = 0u32;
    let mut uids = Vec::with_capacity(raws.len());
    for r in raws {
        if r.pseudo {
            uids.push(0);
            continue;
        }
        let uid = match r.uid {
            Some(u) if u > prev && u <= last => u,
            _ => {
                dirty = true;
                last += 1;
                last
            }
        };
        prev = uid;
        uids.push(uid);
    }
    (validity, last, uids, dirty)
}

/// A UIDVALIDITY from the clock (as Dovecot gives a box it never saw).
pub(super) fn now_validity() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
        .max(1)
}

/// New metadata for a message the rewrite changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Meta {
    pub(super) uid: u32,
    /// New flags, `O` (no longer \\Recent) and keyword names; `None`: `Status:`,
    /// `X-Status:` and `X-Keywords:` stay as they are.
    pub(super) flags: Option<(Flags, bool, Vec<String>)>,
}

/// Whether a rewritten header drops the field `name`: all of Dovecot's metadata fields,
/// written anew at the header's end in Dovecot's order (Dovecot reads `X-Keywords` by
/// the list of `X-IMAPbase`, which must come first).
/// A `Content-Length:` that did not hold when the file was read ([`Raw::cl_stale`]) is
/// dropped too (it is hidden from clients): once the rewrite moved what follows, the
/// stale length could come to hold and swallow the next message.
pub(super) fn drops(name: Option<&str>, raw: &Raw) -> bool {
    match name {
        Some("x-uid" | "x-imapbase" | "x-imap") => true,
        // The pseudo message keeps its own (`Status: RO`).
        Some("status" | "x-status" | "x-keywords") => !raw.pseudo,
        Some("content-length") => raw.cl_stale,
        _ => false,
    }
}

/// The metadata a rewritten header gets: the message's own flags unless new ones are
/// given.
pub(super) fn resolve(meta: Meta, r: &Raw) -> Meta {
    match meta.flags {
        Some(_) => meta,
        None => Meta {
            uid: meta.uid,
            flags: Some((r.flags, r.old, r.keywords.clone())),
        },
    }
}

/// The `X-IMAPbase:` line of a box's first message (the pseudo message's `X-IMAP:`
/// when `pseudo`), without its newline: UIDVALIDITY, the last UID in ten digits, the
/// keyword names.
pub(super) fn imapbase_line(pseudo: bool, validity: u32, last: u32, keywords: &str) -> String {
    let sep = if keywords.is_empty() { "" } else { " " };
    let name = if pseudo { "X-IMAP" } else { "X-IMAPbase" };
    format!("{name}: {validity} {last:010}{sep}{keywords}")
}

/// The metadata lines written at the end of a rewritten header, `pad` spaces included:
/// `X-IMAPbase:` (the first message) or `X-IMAP:` (the pseudo message), `X-UID:`,
/// `Status:` (`R` seen, `O` not recent), `X-Status:` (`A` `F` `T` `D`, Dovecot's order),
/// `X-Keywords:`. The padding goes after `X-Keywords` when there is one, else after
/// `X-UID` (Dovecot's `mbox_sync_headers_add_space()`).
pub(super) fn meta_lines(
    base: Option<&str>,
    pseudo: bool,
    meta: &Meta,
    pad: usize,
    pad_on_keywords: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + pad);
    if let Some(b) = base {
        out.extend_from_slice(b.as_bytes());
        if pseudo {
            out.resize(out.len() + pad, b' ');
        }
        out.push(b'\n');
    }
    if pseudo {
        return out;
    }
    let kw = meta.flags.as_ref().is_some_and(|f| !f.2.is_empty());
    let kw_pad = kw && pad_on_keywords;
    out.extend_from_slice(format!("X-UID: {}", meta.uid).as_bytes());
    if !kw_pad {
        out.resize(out.len() + pad, b' ');
    }
    out.push(b'\n');
    if let Some((flags, old, keywords)) = &meta.flags {
        let mut status = String::new();
        if flags.contains(Flags::SEEN) {
            status.push('R');
        }
        if *old {
            status.push('O');
        }
        if !status.is_empty() {
            out.extend_from_slice(format!("Status: {status}\n").as_bytes());
        }
        let mut x = String::new();
        for (f, c) in [
            (Flags::ANSWERED, 'A'),
            (Flags::FLAGGED, 'F'),
            (Flags::DRAFT, 'T'),
            (Flags::DELETED, 'D'),
        ] {
            if flags.contains(f) {
                x.push(c);
            }
        }
        if !x.is_empty() {
            out.extend_from_slice(format!("X-Status: {x}\n").as_bytes());
        }
        if kw {
            out.extend_from_slice(b"X-Keywords: ");
            out.extend_from_slice(keywords.join(" ").as_bytes());
            if kw_pad {
                out.resize(out.len() + pad, b' ');
            }
            out.push(b'\n');
        }
    }
    out
}

/// The keyword names of `X-IMAPbase` (`rest`), then those of `extra` not in it.
pub(super) fn keyword_list<'a>(rest: &str, extra: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut list: Vec<String> = rest.split_whitespace().map(String::from).collect();
    for k in extra {
        if !list.contains(k) {
            list.push(k.clone());
        }
    }
    list
}

/// The metadata of one header (`hdr`: its lines, without the `From ` line and the
/// empty line), as [`scan`] notes it; `index` 0 for the file's first message.
pub(super) fn parse_header(hdr: &[u8], index: usize) -> Raw {
    let mut raw = Raw::default();
    let mut cont = Cont::Other;
    for line in hdr.split_inclusive(|&b| b == b'\n') {
        let text = &line[..line.len().min(SCAN_KEEP)];
        if text.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            note_continuation(&mut raw, text, cont);
        } else {
            match header_name(text) {
                Some(n) => note_field(&mut raw, &n, text, index, &mut cont),
                None => cont = Cont::Other,
            }
        }
    }
    raw
}

/// The header `hdr` (complete lines) with its metadata written anew as the rewrite
/// writes it (`base`: the `X-IMAPbase` line of the first message), padded to the old
/// size; `None` if it does not fit.
pub(super) fn fit_header(
    hdr: &[u8],
    raw: &Raw,
    meta: &Meta,
    base: Option<&str>,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(hdr.len());
    let mut dropping = false;
    for line in hdr.split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            let head = &line[..line.len().min(LINE_HEAD)];
            dropping = drops(header_name(head).as_deref(), raw);
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        return None;
    }
    let natural = out.len() + meta_lines(base, raw.pseudo, meta, 0, false).len();
    if natural > hdr.len() {
        return None;
    }
    out.extend_from_slice(&meta_lines(
        base,
        raw.pseudo,
        meta,
        hdr.len() - natural,
        raw.kw_padded,
    ));
    Some(out)
}

#[cfg(test)]
mod tests {
    //! Tests of Dovecot's metadata and padding kept and reused.

    use super::super::testkit::*;
    use super::super::{append::*, index::*, *};

    /// Dovecot's padding is reused, never added to: opening a padded box again changes
    /// nothing, a new message gets its own 50 spaces and the others stay as they were,
    /// marking a message read takes from its padding, and a box written without padding
    /// (by Postern before it padded) is left as it is.
    #[test]
    fn padding_is_reused_not_grown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        std::fs::write(&p, BOX).expect("write");
        MboxBox::open(&p, &MboxOptions::default(), None).expect("open");
        let padded = std::fs::read(&p).expect("read");
        assert_eq!(padded.len(), BOX.len() + 34 + 2 * (9 + 50));
        for _ in 0..3 {
            let mut mb = MboxBox::open(&p, &MboxOptions::default(), None).expect("open");
            commit(&mut mb, &[], &[]);
            assert!(std::fs::read(&p).expect("read") == padded);
        }
        let o = MboxOptions::default();
        deliver_mbox(&p, "carol@example.org", b"Subject: three\n\nthird\n", &o).expect("deliver");
        let mut mb = MboxBox::open(&p, &o, None).expect("open");
        let text = std::fs::read(&p).expect("read");
        // Only the last UID in `X-IMAPbase` changed before the new message.
        let was = String::from_utf8(padded.clone()).expect("utf-8");
        let was = was.replace(" 0000000002\n", " 0000000003\n");
        assert!(text.starts_with(was.as_bytes()));
        let tail = format!("Subject: three\nX-UID: 3{}\n\nthird\n\n", " ".repeat(50));
        assert!(text.ends_with(tail.as_bytes()));
        commit(&mut mb, &[], &[0, 1, 2]);
        let read = std::fs::read_to_string(&p).expect("read");
        assert_eq!(read.len(), text.len());
        assert_eq!(read.matches("Status: RO\n").count(), 3, "{read}");
        assert_eq!(
            read.matches(&format!("{}\nStatus", " ".repeat(39))).count(),
            3
        );
        // Unpadded metadata needs no change: nothing is written.
        let old = b"From a  x\nSubject: x\nX-IMAPbase: 5 0000000002\nX-UID: 1\n\nbody\n\nFrom b  y\nX-UID: 2\n\nend\n\n";
        std::fs::write(&p, old).expect("write");
        MboxBox::open(&p, &o, None).expect("open");
        assert_eq!(std::fs::read(&p).expect("read"), old);
    }

    #[test]
    fn fresh_metadata_then_expunge_keeps_base() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        std::fs::write(&p, BOX).expect("write");
        let mut mb = MboxBox::open(&p, &MboxOptions::default(), None).expect("open");
        assert_eq!(
            mb.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(mb.messages[0].size, 57);
        let text = std::fs::read_to_string(&p).expect("read");
        // As Dovecot 2.3.19 writes it: 50 spaces after each `X-UID`, none elsewhere.
        assert!(text.contains(&format!(
            "Subject: one\nX-IMAPbase: {} 0000000002\nX-UID: 1{}\n\nhello",
            mb.uid_validity,
            " ".repeat(50)
        )));
        assert!(text.contains(&format!("Subject: two\nX-UID: 2{}\n\n", " ".repeat(50))));
        deliver_mbox(
            &p,
            "carol@example.org",
            b"Subject: three\n\nFrom here\n",
            &MboxOptions::default(),
        )
        .expect("deliver");
        commit(&mut mb, &[0], &[]);
        let again = MboxBox::open(&p, &MboxOptions::default(), None).expect("reopen");
        assert_eq!(again.uid_validity, mb.uid_validity);
        assert_eq!(
            again.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
            [2, 3]
        );
        let m = again.read(1).expect("read");
        assert_eq!(m, b"Subject: three\n\n>From here\n");
        assert!(
            !std::fs::read_to_string(&p)
                .expect("read")
                .contains("Subject: one")
        );
    }

    #[test]
    fn dovecot_metadata_kept() {
        // As Dovecot 2.3 left it: padding after X-UID, keywords in X-IMAPbase; then a
        // message appended by Postfix without X-UID.
        let data = "From a  Sat Nov 28 10:00:00 2026\nSubject: x\nX-IMAPbase: 1795876603 0000000007 $Junk work\nX-UID: 7         \nStatus: RO\nX-Keywords: work\n\nbody\n\nFrom b  Sat Nov 28 10:01:00 2026\nSubject: y\n\nnew\n\n";
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        std::fs::write(&p, data).expect("write");
        let mb = MboxBox::open(&p, &MboxOptions::default(), None).expect("open");
        assert_eq!(mb.uid_validity, 1795876603);
        assert_eq!(
            mb.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
            [7, 8]
        );
        assert_eq!(mb.read(0).expect("read"), b"Subject: x\n\nbody\n");
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(
            text.contains("X-IMAPbase: 1795876603 0000000008 $Junk work\n"),
            "{text}"
        );
        assert!(text.contains("Status: RO\nX-Keywords: work\n"), "{text}");
        // Dovecot's padding stays as it was; the new message gets its own.
        assert!(text.contains("$Junk work\nX-UID: 7         \n"), "{text}");
        let fifty = " ".repeat(50);
        assert!(
            text.contains(&format!("Subject: y\nX-UID: 8{fifty}\n\nnew\n")),
            "{text}"
        );
    }

    #[test]
    fn pseudo_message_is_not_a_message() {
        let data = "From MAILER-DAEMON  Sat Nov 28 09:00:00 2026\nDate: Sat, 28 Nov 2026 09:00:00 +0000\nFrom: Mail System Internal Data <MAILER-DAEMON@host>\nSubject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\nX-IMAP: 1700000000 0000000003\nStatus: RO\n\nThis text is part of the internal format of your mail folder.\n\nFrom a  Sat Nov 28 10:00:00 2026\nSubject: x\nX-UID: 3\n\nbody\n\nFrom b  Sat Nov 28 10:01:00 2026\nSubject: y\n\nnew\n\n";
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        std::fs::write(&p, data).expect("write");
        let mut mb = MboxBox::open(&p, &MboxOptions::default(), None).expect("open");
        assert_eq!(mb.uid_validity, 1700000000);
        assert_eq!(
            mb.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(mb.read(1).expect("read"), b"Subject: y\n\nnew\n");
        commit(&mut mb, &[0], &[]);
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(text.contains("X-IMAP: 1700000000 0000000004\n"), "{text}");
        assert!(!text.contains("X-IMAPbase"), "{text}");
        assert!(!text.contains("Subject: x"), "{text}");
        let again = MboxBox::open(&p, &MboxOptions::default(), None).expect("open");
        assert_eq!(
            again.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
            [4]
        );
    }
}
