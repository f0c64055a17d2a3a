//! mbox: one file, each message introduced by a `From SENDER  DATE` line and followed by
//! an empty line. Local delivery writes body lines that begin with `From ` as `>From `
//! (Postfix's `local(8)` quoting; readers do not unquote, Dovecot neither); messages saved
//! by IMAP APPEND and COPY are written as Dovecot 2.3 writes them, unquoted, with a
//! `Content-Length:` that says where the body ends. A `From ` line after an empty line
//! starts a message unless the previous message's `Content-Length:` holds and reaches
//! past it (Dovecot's `istream_raw_mbox_is_valid_from()`).
//!
//! Dovecot's metadata lives in the messages' headers, hidden from clients: the first
//! message carries `X-IMAPbase: UIDVALIDITY LAST-UID [keywords]` (the box's keyword
//! names), each message `X-UID: UID`, `Status:` (`R` \Seen, `O` no longer \Recent),
//! `X-Status:` (`A` \Answered, `F` \Flagged, `T` \Draft, `D` \Deleted, in that order)
//! and `X-Keywords:` (names). A box that never saw Dovecot gets UIDVALIDITY = the current
//! time and UIDs 1, 2, … written into the headers the way Dovecot 2.3's POP3 writes them
//! (`X-IMAPbase` and `X-UID` at the end of the header, no `Status:` until a flag changes),
//! so that either server can take over and keeps the numbering. A header that is
//! rewritten (new flags, a UID, the first message's `X-IMAPbase`) gets all its metadata
//! anew at its end in Dovecot's order (`X-IMAPbase`, `X-UID`, `Status`, `X-Status`,
//! `X-Keywords`: Dovecot reads `X-Keywords` by `X-IMAPbase`'s list, so that must come
//! first); a session that changes a message's flags also writes `O`. Headers of messages
//! that do not change are copied as they are.
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
//! Rewrites (metadata, expunge) happen in place under the write locks ([`super::lock`]),
//! from the first changed byte on, then `ftruncate` and `fsync`, as Dovecot does; the file
//! keeps its inode, owner and mode. A header is streamed line by line, never held whole:
//! a message without an end-of-header line (50 MB without an empty line) costs no more
//! memory than one with. A rewrite that leaves the size as it was also moves the file's
//! time to the next second (`touch_if_same`): Dovecot's index notices a changed mbox by
//! size and time in seconds.
//!
//! Known differences: Dovecot gives a run of messages that lack space the padding of the
//! whole run spread over them, writes `Status: O` lazily into any header it rewrites
//! once a session has seen the messages (Postern only into the headers whose flags a
//! session changes: Postern keeps \Recent in its index), and requires a `From ` line to
//! carry a date to start a message (Postern: any `From ` line after an empty line).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::MailboxError;
use super::flags::{Flags, KeywordSet};
use super::lock::{DotLock, dotlock, fcntl_lock};

/// How an mbox is locked and checked.
#[derive(Debug, Clone)]
pub struct MboxOptions {
    /// Take the `NAME.lock` dotlock as well as `fcntl` (both by default; Dovecot's
    /// `mbox_write_locks` names `dotlock`).
    pub dotlock: bool,
    /// Dovecot's `mail_privileged_group`, resolved: the group a dotlock the user may not
    /// create in the INBOX's directory is created with (`/var/mail` root:mail 0775).
    pub privileged_gid: Option<u32>,
    /// The mail root (`mail_location`'s first path). Dovecot locks with the privileged
    /// group only an INBOX outside it; `None`: no root known (delivery), allowed.
    pub mail_root: Option<PathBuf>,
    /// Where a dotlock that could not be created is reported (Dovecot's `Error: Mailbox
    /// INBOX: file_dotlock_create(…) failed: Permission denied (…)`); the operation then
    /// goes on under `fcntl` alone, as Dovecot's does.
    pub lock_errors: Option<super::lock::LockErrors>,
    /// How long to wait for each lock (Dovecot's `mbox_lock_timeout`, 5 min).
    pub lock_timeout: Duration,
    /// For delivery: Postfix's `deliver_lock_attempts` × `deliver_lock_delay` instead of
    /// `lock_timeout`, and Postfix's words when the lock cannot be had
    /// ([`MailboxError::LockFailed`]).
    pub delivery_lock: Option<super::lock::DeliveryLock>,
    /// `stale_lock_time`: a dotlock older than this is removed (one whose process is gone
    /// at once).
    pub stale_lock_time: Duration,
    /// For delivery: the uid the file must belong to (`None`: not checked).
    pub expected_owner: Option<u32>,
    /// For delivery: the mode of a newly created file.
    pub create_mode: u32,
}

impl Default for MboxOptions {
    fn default() -> Self {
        MboxOptions {
            dotlock: true,
            privileged_gid: None,
            mail_root: None,
            lock_errors: None,
            lock_timeout: Duration::from_secs(300),
            delivery_lock: None,
            stale_lock_time: super::lock::STALE_DOTLOCK,
            expected_owner: None,
            create_mode: 0o600,
        }
    }
}

/// Both write locks on an open mbox; released on drop (the dotlock is removed, the
/// fcntl lock goes with the file).
struct Locked {
    file: File,
    _dot: Option<DotLock>,
}

fn open_locked(path: &Path, opts: &MboxOptions, create: bool) -> Result<Locked, MailboxError> {
    let dot = if opts.dotlock {
        Some(dotlock(path, opts)?)
    } else {
        None
    };
    let file = open_file(path, true, create, opts)?;
    check_file(&file, path, opts)?;
    match opts.delivery_lock {
        Some(d) => super::lock::fcntl_lock_delivery(&file, path, d)?,
        None => fcntl_lock(&file, path, true, opts.lock_timeout)?,
    }
    Ok(Locked { file, _dot: dot })
}

/// Open the mbox without following a symlink, for reading and, with `write`, writing
/// (created if `create`).
fn open_file(
    path: &Path,
    write: bool,
    create: bool,
    opts: &MboxOptions,
) -> Result<File, MailboxError> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .create(write && create)
        .mode(opts.create_mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                MailboxError::Unsafe(path.to_path_buf(), "is a symbolic link".into())
            } else {
                MailboxError::io(path, e)
            }
        })
}

/// Refuse anything but a plain file with one link, owned as expected, and still the file
/// the path names (Postfix's `safe_open` checks).
fn check_file(file: &File, path: &Path, opts: &MboxOptions) -> Result<(), MailboxError> {
    let st = file.metadata().map_err(|e| MailboxError::io(path, e))?;
    let unsafe_ = |why: &str| MailboxError::Unsafe(path.to_path_buf(), why.to_string());
    if !st.file_type().is_file() {
        return Err(unsafe_("is not a regular file"));
    }
    if st.nlink() != 1 {
        return Err(unsafe_("has more than one hard link"));
    }
    if let Some(uid) = opts.expected_owner
        && st.uid() != uid
    {
        return Err(unsafe_(&format!("is owned by uid {}, not {uid}", st.uid())));
    }
    let lst = std::fs::symlink_metadata(path).map_err(|e| MailboxError::io(path, e))?;
    if lst.dev() != st.dev() || lst.ino() != st.ino() {
        return Err(unsafe_("was replaced while being opened"));
    }
    Ok(())
}

/// `asctime(3)` of the local time, as Postfix puts it in the `From ` line.
fn asctime_now() -> String {
    asctime(SystemTime::now())
}

use crate::sys::time::asctime;

/// The bytes Postfix's `local(8)` appends for one message: the `From ` line, the message
/// with LF line ends and `From ` lines quoted, a final newline and the empty separator line.
pub fn format_for_append(from_line_sender: &str, message: &[u8]) -> Vec<u8> {
    let sender = if from_line_sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        from_line_sender
    };
    let mut out = format!("From {sender}  {}\n", asctime_now()).into_bytes();
    out.reserve(message.len() + 64);
    for line in message.split_inclusive(|&b| b == b'\n') {
        let body = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        if body.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(body);
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// Append `message` to the mbox at `path` under the dotlock and an `fcntl` lock, fsync it,
/// and truncate the file back to its old size on any failure. The file is created (mode
/// `opts.create_mode`) if missing; a symlink, a non-regular or hard-linked file, or one not
/// owned by `opts.expected_owner` is refused.
pub fn deliver_mbox(
    path: &Path,
    from_line_sender: &str,
    message: &[u8],
    opts: &MboxOptions,
) -> Result<(), MailboxError> {
    let locked = open_locked(path, opts, true)?;
    let file = &locked.file;
    let old_len = file
        .metadata()
        .map_err(|e| MailboxError::io(path, e))?
        .len();
    let mut data = Vec::new();
    // A box whose last message lacks its final newline or the empty separator line (a
    // truncated write by another program) gets them, so that our `From ` line starts a
    // message for every reader.
    if old_len > 0 {
        let n = old_len.min(2) as usize;
        let mut tail = [0u8; 2];
        file.read_exact_at(&mut tail[..n], old_len - n as u64)
            .map_err(|e| MailboxError::io(path, e))?;
        let tail = &tail[..n];
        if !tail.ends_with(b"\n") {
            data.extend_from_slice(b"\n\n");
        } else if tail != b"\n\n" && n == 2 {
            data.push(b'\n');
        }
    }
    data.extend_from_slice(&format_for_append(from_line_sender, message));
    let res = file
        .write_all_at(&data, old_len)
        .and_then(|()| file.sync_all());
    if let Err(e) = res {
        let _ = file.set_len(old_len);
        let _ = file.sync_all();
        return Err(MailboxError::io(path, e));
    }
    Ok(())
}

/// Headers Dovecot hides from clients (`mbox_hide_headers`'s built-in list).
const HIDDEN: &[&str] = &[
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
const HEADER_PADDING: usize = 50;

/// The spaces after a rewritten header's `X-UID` (or `X-Keywords`, or the pseudo
/// message's `X-IMAP`): a header of `natural` bytes without padding that fits in its
/// `old` size keeps that size, the rest in spaces (Dovecot's `mbox_sync_try_rewrite()`
/// taking from or adding to the padding); one that does not fit gets [`HEADER_PADDING`]
/// fresh spaces (Dovecot's `mbox_sync_rewrite()` after `mbox_sync_headers_remove_space()`,
/// for a run of messages that ends at the end of the file, as UIDs given to new mail do).
fn header_padding(old: usize, natural: usize) -> usize {
    if natural <= old {
        old - natural
    } else {
        HEADER_PADDING
    }
}

/// The metadata header a continuation line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cont {
    Other,
    Keywords,
    Base,
}

/// One message as found in the file.
#[derive(Debug, Clone, Default)]
struct Raw {
    /// Offset of the `From ` line.
    from_start: usize,
    /// Offset of the first header line.
    hdr_start: usize,
    /// Offset of the empty line that ends the header (or `end` if there is none).
    hdr_end: usize,
    /// End of the message's content (the separator empty line excluded).
    end: usize,
    uid: Option<u32>,
    imapbase: Option<(u32, u32)>,
    /// What follows UIDVALIDITY and LAST-UID in `X-IMAPbase` (Dovecot's keyword names).
    imapbase_rest: String,
    has_status: bool,
    /// System flags: `Status:` `R`, `X-Status:` `A` `F` `T` `D`.
    flags: Flags,
    /// `Status:` holds `O`: no longer \\Recent (Dovecot's `MBOX_NONRECENT_KLUDGE`).
    old: bool,
    /// `X-Keywords:` names.
    keywords: Vec<String>,
    /// The `X-Keywords:` line ends in spaces: Dovecot's padding is there.
    kw_padded: bool,
    /// `Content-Length:` (the first, if its value is a number).
    content_length: Option<u64>,
    /// UW-IMAP's and Dovecot's pseudo message (`X-IMAP:` in the first message: "DON'T
    /// DELETE THIS MESSAGE -- FOLDER INTERNAL DATA"): holds the metadata, is no message.
    pseudo: bool,
    /// The `From ` line's time (Unix seconds; 0 when it has none).
    date: i64,
}

fn header_name(line: &[u8]) -> Option<String> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    Some(String::from_utf8_lossy(name).to_ascii_lowercase())
}

fn header_value(line: &[u8]) -> &str {
    let colon = line.iter().position(|&b| b == b':').unwrap_or(0);
    std::str::from_utf8(&line[(colon + 1).min(line.len())..])
        .unwrap_or("")
        .trim()
}

/// Take Dovecot's metadata from the header field `name` (lower case) whose line begins
/// with `text`, in message number `index` of the file; `cont` says what a continuation
/// line that follows continues.
fn note_field(raw: &mut Raw, name: &str, text: &[u8], index: usize, cont: &mut Cont) {
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
fn note_continuation(raw: &mut Raw, text: &[u8], cont: Cont) {
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

/// Whether a message whose body starts at `body` and has `Content-Length: len` ends
/// there: at `body + len` the file has the separator line and a `From ` line, or its
/// last newline (Dovecot's `istream_raw_mbox_is_valid_from()`, which then takes the
/// length as given, so that a `From ` line inside the body, not quoted, stays body, as
/// Dovecot's appends write them). `peek` reads the file at an offset.
fn content_length_holds(body: u64, len: u64, peek: &dyn Fn(u64, &mut [u8]) -> usize) -> bool {
    let mut buf = [0u8; 8];
    let n = peek(body.saturating_add(len), &mut buf);
    let b = &buf[..n];
    b == b"\n" || b == b"\r\n" || b.starts_with(b"\nFrom ") || b.starts_with(b"\r\nFrom ")
}

/// The time of a `From ` line (`From SENDER  Sat Nov 28 10:00:00 2026`, also with a
/// numeric zone before or after the year, or `Sat, 28 Nov 2026 10:00:00`), in local time
/// unless a zone is given, as Dovecot's `mbox_from_parse()` reads it; `None` if the line
/// has no such date.
pub fn from_line_time(line: &[u8]) -> Option<i64> {
    const MONTHS: [&[u8]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    let mut s = line.strip_prefix(b"From ")?;
    while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        s = &s[..s.len() - 1];
    }
    // The sender: a quoted local part may hold spaces.
    let mut i = 0;
    if s.first() == Some(&b'"') {
        i = 1;
        let mut esc = false;
        while i < s.len() && (s[i] != b'"' || esc) {
            esc = s[i] == b'\\';
            i += 1;
        }
        i += 1;
    }
    while i < s.len() && s[i] != b' ' {
        i += 1;
    }
    while i < s.len() && s[i] == b' ' {
        i += 1;
    }
    let d = s.get(i..)?;
    let digit = |k: usize| {
        d.get(k)
            .filter(|c| c.is_ascii_digit())
            .map(|c| i64::from(c - b'0'))
    };
    let month = |at: &[u8]| -> Option<i64> {
        let m = at.get(..3)?.to_ascii_lowercase();
        MONTHS
            .iter()
            .position(|x| *x == m.as_slice())
            .map(|p| p as i64)
    };
    let mut p;
    let (mon, day, year_first);
    let mut year = None;
    // "Thu Nov 29 22:33:52 2001" or "Thu, 29 Nov 2001 22:33:52".
    if let Some(m) = d
        .get(4..)
        .and_then(month)
        .filter(|_| d.get(7) == Some(&b' '))
    {
        mon = m;
        p = 8;
        if d.get(p) == Some(&b' ') {
            p += 1;
        }
        if d.get(p + 1) == Some(&b' ') {
            day = digit(p)?;
            p += 2;
        } else {
            day = digit(p)? * 10 + digit(p + 1)?;
            if d.get(p + 2) != Some(&b' ') {
                return None;
            }
            p += 3;
        }
        year_first = false;
    } else {
        p = 5;
        let mut dd = digit(p)?;
        p += 1;
        if let Some(x) = digit(p) {
            dd = dd * 10 + x;
            p += 1;
        }
        if d.get(p) != Some(&b' ') {
            return None;
        }
        p += 1;
        mon = month(d.get(p..)?)?;
        if d.get(p + 3) != Some(&b' ') {
            return None;
        }
        p += 4;
        year = Some(digit(p)? * 1000 + digit(p + 1)? * 100 + digit(p + 2)? * 10 + digit(p + 3)?);
        p += 5;
        day = dd;
        year_first = true;
    }
    let hour = digit(p)? * 10 + digit(p + 1)?;
    if d.get(p + 2) != Some(&b':') {
        return None;
    }
    let min = digit(p + 3)? * 10 + digit(p + 4)?;
    p += 5;
    let mut sec = 0;
    if d.get(p) == Some(&b':') {
        sec = digit(p + 1)? * 10 + digit(p + 2)?;
        p += 3;
    }
    let mut zone: Option<i64> = None;
    let numeric_zone = |at: usize| -> Option<i64> {
        let sign = match d.get(at)? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let v = (digit(at + 1)? * 10 + digit(at + 2)?) * 3600
            + (digit(at + 3)? * 10 + digit(at + 4)?) * 60;
        Some(sign * v)
    };
    if !year_first {
        if d.get(p) != Some(&b' ') {
            return None;
        }
        p += 1;
        if digit(p).is_none() || digit(p + 3).is_none() {
            // A zone (numeric or named) before the year.
            if let Some(z) = numeric_zone(p) {
                zone = Some(z);
            }
            while p < d.len() && d[p] != b' ' {
                p += 1;
            }
            p += 1;
        }
        year = Some(digit(p)? * 1000 + digit(p + 1)? * 100 + digit(p + 2)? * 10 + digit(p + 3)?);
        p += 4;
    }
    if zone.is_none() && d.get(p) == Some(&b' ') {
        zone = numeric_zone(p + 1);
    }
    let year = year?;
    let day = day.max(1);
    match zone {
        Some(z) => {
            Some(days_from_civil(year, mon + 1, day) * 86400 + hour * 3600 + min * 60 + sec - z)
        }
        None => {
            let mut tm = crate::sys::time::blank_tm();
            tm.tm_year = (year - 1900) as libc::c_int;
            tm.tm_mon = mon as libc::c_int;
            tm.tm_mday = day as libc::c_int;
            tm.tm_hour = hour as libc::c_int;
            tm.tm_min = min as libc::c_int;
            tm.tm_sec = sec as libc::c_int;
            tm.tm_isdst = -1;
            crate::sys::time::mktime(&mut tm)
        }
    }
}

/// Days from 1970-01-01 to the civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The `From ` line date as Dovecot writes it for a saved message (`mbox_from_create()`:
/// local time, the day in two digits): `Wed Jan 01 10:00:00 2020`.
fn dovecot_from_date(t: i64) -> String {
    crate::sys::time::ctime_text(t, true)
}

/// Split an mbox into messages (the whole-file reference for [`scan`]): the first
/// `From ` line, and later a `From ` line after an empty line, starts one, unless the
/// previous message's `Content-Length:` holds and reaches past it. An empty line right
/// before a message's start is the separator, no part of a message; the header ends at
/// the first other empty line. Bytes before the first `From ` line are not a message.
#[cfg(test)]
fn parse(data: &[u8]) -> Vec<Raw> {
    let peek = |off: u64, buf: &mut [u8]| -> usize {
        let off = (off as usize).min(data.len());
        let n = buf.len().min(data.len() - off);
        buf[..n].copy_from_slice(&data[off..off + n]);
        n
    };
    let mut out: Vec<Raw> = Vec::new();
    let mut pos = 0;
    let mut prev_empty = true;
    // The empty line just read in a header: it ends the header unless a message starts
    // after it (then it is the separator).
    let mut pending: Option<usize> = None;
    let mut in_header = false;
    let mut cont = Cont::Other;
    let mut no_start_before = 0usize;
    let mut last_line = (0usize, 0usize);
    while pos < data.len() {
        let eol = data[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i + 1)
            .unwrap_or(data.len());
        let line = &data[pos..eol];
        last_line = (pos, line.len());
        let empty = line == b"\n" || line == b"\r\n";
        let starts =
            (prev_empty || out.is_empty()) && pos >= no_start_before && line.starts_with(b"From ");
        if starts {
            if let Some(r) = out.last_mut() {
                let end = pos.saturating_sub(1).max(r.hdr_start);
                if in_header {
                    r.hdr_end = end;
                }
                r.end = end;
            }
            out.push(Raw {
                from_start: pos,
                hdr_start: eol,
                hdr_end: eol,
                end: eol,
                date: from_line_time(&line[..line.len().min(SCAN_KEEP)]).unwrap_or(0),
                ..Raw::default()
            });
            in_header = true;
            pending = None;
            cont = Cont::Other;
        } else if in_header && !out.is_empty() {
            let index = out.len() - 1;
            let r = &mut out[index];
            if let Some(p) = pending.take() {
                // The empty line ended the header: this line is body.
                r.hdr_end = p;
                in_header = false;
                if let Some(n) = r.content_length
                    && content_length_holds(pos as u64, n, &peek)
                {
                    no_start_before = pos + n as usize + 1;
                }
            } else if empty {
                pending = Some(pos);
            } else {
                let text = &line[..line.len().min(SCAN_KEEP)];
                if text.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                    note_continuation(r, text, cont);
                } else {
                    match header_name(text) {
                        Some(n) => note_field(r, &n, text, index, &mut cont),
                        None => cont = Cont::Other,
                    }
                }
            }
        }
        prev_empty = empty;
        pos = eol;
    }
    if let Some(r) = out.last_mut() {
        let mut end = data.len();
        // A final `\n` line after another line of the message is its separator.
        let (lp, ll) = last_line;
        let final_sep = prev_empty && ll == 1 && lp > r.hdr_start;
        if final_sep {
            end -= 1;
        }
        if let Some(p) = pending
            && in_header
            && !(final_sep && p == lp)
        {
            r.hdr_end = p;
            in_header = false;
        }
        if in_header {
            r.hdr_end = end;
        }
        r.end = end;
    }
    out
}

/// Longest line prefix [`scan`] keeps: header names and Dovecot's metadata values are
/// short; a longer line is still measured to the byte.
const SCAN_KEEP: usize = 8192;

/// One line as [`scan`] reads it: its length, its first bytes, how it ends.
struct ScanLine {
    len: usize,
    /// The first [`SCAN_KEEP`] bytes.
    head: Vec<u8>,
    /// The line ends with LF.
    lf: bool,
    /// The line ends with CRLF.
    crlf: bool,
}

impl ScanLine {
    fn is_empty_line(&self) -> bool {
        (self.len == 1 && self.lf) || (self.len == 2 && self.crlf)
    }
}

/// Read the next line of `r` into `line` (bounded memory: only its first bytes are kept).
fn next_line(r: &mut impl std::io::BufRead, line: &mut ScanLine) -> std::io::Result<bool> {
    line.len = 0;
    line.head.clear();
    line.lf = false;
    line.crlf = false;
    let mut last = 0u8;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(line.len > 0);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let chunk = &buf[..take];
        let room = SCAN_KEEP.saturating_sub(line.head.len());
        line.head.extend_from_slice(&chunk[..room.min(take)]);
        if done {
            let before = if take >= 2 { chunk[take - 2] } else { last };
            line.lf = true;
            line.crlf = before == b'\r';
        }
        last = chunk[take - 1];
        line.len += take;
        r.consume(take);
        if done {
            return Ok(true);
        }
    }
}

/// What [`scan`] finds: the messages as [`parse`] would split them, each message's
/// size as clients see it ([`visible`], CRLF-counted) and its `From ` line.
struct Scan {
    raws: Vec<Raw>,
    sizes: Vec<u64>,
    from_lines: Vec<FromLine>,
    /// The bytes read: the file's length.
    len: usize,
}

/// A message being scanned.
struct ScanMsg {
    raw: Raw,
    in_header: bool,
    hiding: bool,
    cont: Cont,
    size: u64,
}

impl ScanMsg {
    /// Account for `len` bytes of the line `l` at `pos` (`len` < `l.len` when the line is
    /// cut by the separator: the CR of a CRLF separator line).
    fn add(&mut self, l: &ScanLine, pos: usize, len: usize, index: usize) {
        let whole = len == l.len;
        // The size on the wire: each LF not preceded by CR counts twice.
        let wire = len as u64 + u64::from(whole && l.lf && !l.crlf);
        if !self.in_header {
            self.size += wire;
            return;
        }
        if whole && l.is_empty_line() {
            self.raw.hdr_end = pos;
            self.in_header = false;
            self.size += wire;
            return;
        }
        let text = &l.head[..len.min(l.head.len())];
        let continuation = text.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if continuation {
            note_continuation(&mut self.raw, text, self.cont);
        } else {
            let name = header_name(text);
            self.hiding = name.as_deref().is_some_and(|n| HIDDEN.contains(&n));
            match name {
                Some(n) => note_field(&mut self.raw, &n, text, index, &mut self.cont),
                None => self.cont = Cont::Other,
            }
        }
        if !self.hiding {
            self.size += wire;
        }
    }

    fn finish(mut self, end: usize, out: &mut Scan) {
        if self.in_header {
            self.raw.hdr_end = end;
        }
        self.raw.end = end;
        out.raws.push(self.raw);
        out.sizes.push(self.size);
    }
}

/// [`scan`] over a whole file, from its start (positional reads: the descriptor's offset
/// is neither used nor moved).
fn scan_file(file: &File) -> std::io::Result<Scan> {
    struct At<'a> {
        file: &'a File,
        pos: u64,
    }
    impl std::io::Read for At<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.file.read_at(buf, self.pos)?;
            self.pos += n as u64;
            Ok(n)
        }
    }
    let peek = |off: u64, buf: &mut [u8]| peek_file(file, off, buf);
    scan(
        &mut std::io::BufReader::with_capacity(SCAN_BUFFER, At { file, pos: 0 }),
        &peek,
    )
}

/// Read `buf.len()` bytes of `file` at `off`, or as many as it has there.
fn peek_file(file: &File, off: u64, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// [`parse`] and the sizes of [`visible`] in one pass over a reader, holding one line
/// prefix at a time instead of the whole mbox: how a session indexes the INBOX. `peek`
/// reads the same file at an offset (to check a `Content-Length:`).
fn scan(
    r: &mut impl std::io::BufRead,
    peek: &dyn Fn(u64, &mut [u8]) -> usize,
) -> std::io::Result<Scan> {
    let mut out = Scan {
        raws: Vec::new(),
        sizes: Vec::new(),
        from_lines: Vec::new(),
        len: 0,
    };
    let mut line = ScanLine {
        len: 0,
        head: Vec::with_capacity(256),
        lf: false,
        crlf: false,
    };
    // The previous line when it was empty: it ends the message if a `From ` line follows.
    let mut pending: Option<(usize, ScanLine)> = None;
    let mut cur: Option<ScanMsg> = None;
    let mut pos = 0usize;
    let mut prev_empty = true;
    let mut no_start_before = 0usize;
    while next_line(r, &mut line)? {
        let starts = (prev_empty || cur.is_none() && out.raws.is_empty())
            && pos >= no_start_before
            && line.head.starts_with(b"From ");
        if starts {
            if let Some(mut m) = cur.take() {
                // The separator line is no part of the message, but for the CR of a
                // CRLF one (as `parse` cuts it).
                let mut end = pos.saturating_sub(1);
                if let Some((ppos, p)) = pending.take() {
                    if p.len > 1 {
                        m.add(&p, ppos, p.len - 1, out.raws.len());
                    }
                    end = end.max(m.raw.hdr_start);
                }
                m.finish(end, &mut out);
            }
            pending = None;
            let hdr_start = pos + line.len;
            out.from_lines.push(FromLine::of(&line.head));
            cur = Some(ScanMsg {
                raw: Raw {
                    from_start: pos,
                    hdr_start,
                    hdr_end: hdr_start,
                    end: hdr_start,
                    date: from_line_time(&line.head).unwrap_or(0),
                    ..Raw::default()
                },
                in_header: true,
                hiding: false,
                cont: Cont::Other,
                size: 0,
            });
        } else if let Some(m) = cur.as_mut() {
            let index = out.raws.len();
            if let Some((ppos, p)) = pending.take() {
                let was_header = m.in_header;
                m.add(&p, ppos, p.len, index);
                if was_header
                    && !m.in_header
                    && let Some(n) = m.raw.content_length
                    && content_length_holds(pos as u64, n, peek)
                {
                    no_start_before = pos + n as usize + 1;
                }
            }
            if line.is_empty_line() {
                let kept = ScanLine {
                    len: line.len,
                    head: line.head.clone(),
                    lf: line.lf,
                    crlf: line.crlf,
                };
                pending = Some((pos, kept));
            } else {
                m.add(&line, pos, line.len, index);
            }
        }
        prev_empty = line.is_empty_line();
        pos += line.len;
    }
    if let Some(mut m) = cur.take() {
        let mut end = pos;
        if let Some((ppos, p)) = pending.take() {
            // A final `\n\n` ends the last message with its separator line, as in `parse`.
            if p.len == 1 && ppos > m.raw.hdr_start {
                end -= 1;
            } else {
                m.add(&p, ppos, p.len, out.raws.len());
            }
        }
        m.finish(end, &mut out);
    }
    out.len = pos;
    Ok(out)
}

/// The message's content with the hidden headers (and their continuation lines) removed.
fn visible(data: &[u8], raw: &Raw) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.end - raw.hdr_start);
    let mut p = raw.hdr_start;
    let mut hiding = false;
    while p < raw.hdr_end {
        let eol = data[p..raw.hdr_end]
            .iter()
            .position(|&b| b == b'\n')
            .map(|j| p + j + 1)
            .unwrap_or(raw.hdr_end);
        let line = &data[p..eol];
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            hiding = header_name(line).is_some_and(|n| HIDDEN.contains(&n.as_str()));
        }
        if !hiding {
            out.extend_from_slice(line);
        }
        p = eol;
    }
    out.extend_from_slice(&data[raw.hdr_end..raw.end]);
    out
}

/// UIDs for each message: a stored `X-UID` is kept while the UIDs go up; others get the
/// next free UID, as Dovecot's mbox sync assigns them. A box without `X-IMAPbase` takes
/// UIDVALIDITY `fresh` (Postern's index keeps the one of an empty box) or the current
/// time. Returns (UIDVALIDITY, last UID, UIDs, whether the headers must be rewritten).
fn assign_uids(raws: &[Raw], fresh: Option<u32>) -> (u32, u32, Vec<u32>, bool) {
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
fn now_validity() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
        .max(1)
}

/// New metadata for a message the rewrite changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Meta {
    uid: u32,
    /// New flags, `O` (no longer \\Recent) and keyword names; `None`: `Status:`,
    /// `X-Status:` and `X-Keywords:` stay as they are.
    flags: Option<(Flags, bool, Vec<String>)>,
}

/// What a rewrite makes of the messages: UIDVALIDITY, last UID and keyword list for
/// `X-IMAPbase`, which messages stay, and the new metadata of the messages that change;
/// the others are copied as they are (Dovecot's layout and padding kept).
struct Plan<'a> {
    validity: u32,
    last: u32,
    /// The keyword names after UIDVALIDITY and the last UID in `X-IMAPbase`.
    base_keywords: &'a str,
    keep: &'a [bool],
    /// Per message (as scanned): `Some` for those whose metadata is written anew.
    meta: &'a [Option<Meta>],
    /// Per message: its UID (`X-UID` of the first message, rewritten for `X-IMAPbase`).
    uids: &'a [u32],
}

impl Plan<'_> {
    /// Whether message `i` (the first kept one when `first`) is rewritten, and with what.
    fn meta_of(&self, raws: &[Raw], i: usize, first: bool) -> Option<Meta> {
        if let Some(m) = self.meta.get(i).cloned().flatten() {
            return Some(m);
        }
        let r = &raws[i];
        let base_same = i == 0
            && r.imapbase == Some((self.validity, self.last))
            && r.imapbase_rest == self.base_keywords;
        if first && !base_same {
            return Some(Meta {
                uid: self.uids.get(i).copied().unwrap_or(0),
                flags: None,
            });
        }
        None
    }
}

/// Whether a rewritten header drops the field `name`: all of Dovecot's metadata fields,
/// written anew at the header's end in Dovecot's order (Dovecot reads `X-Keywords` by
/// the list of `X-IMAPbase`, which must come first).
fn drops(name: Option<&str>, pseudo: bool) -> bool {
    match name {
        Some("x-uid" | "x-imapbase" | "x-imap") => true,
        // The pseudo message keeps its own (`Status: RO`).
        Some("status" | "x-status" | "x-keywords") => !pseudo,
        _ => false,
    }
}

/// The metadata a rewritten header gets: the message's own flags unless new ones are
/// given.
fn resolve(meta: Meta, r: &Raw) -> Meta {
    match meta.flags {
        Some(_) => meta,
        None => Meta {
            uid: meta.uid,
            flags: Some((r.flags, r.old, r.keywords.clone())),
        },
    }
}

/// The metadata lines written at the end of a rewritten header, `pad` spaces included:
/// `X-IMAPbase:` (the first message) or `X-IMAP:` (the pseudo message), `X-UID:`,
/// `Status:` (`R` seen, `O` not recent), `X-Status:` (`A` `F` `T` `D`, Dovecot's order),
/// `X-Keywords:`. The padding goes after `X-Keywords` when there is one, else after
/// `X-UID` (Dovecot's `mbox_sync_headers_add_space()`).
fn meta_lines(
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

/// The `X-IMAPbase:` (or pseudo message's `X-IMAP:`) line, without its newline.
fn base_line(plan: &Plan, pseudo: bool) -> String {
    let sep = if plan.base_keywords.is_empty() {
        ""
    } else {
        " "
    };
    let name = if pseudo { "X-IMAP" } else { "X-IMAPbase" };
    format!(
        "{name}: {} {:010}{sep}{}",
        plan.validity, plan.last, plan.base_keywords
    )
}

/// The file's new contents (the whole-buffer reference for [`rewrite_in_place`]).
#[cfg(test)]
fn rewrite(data: &[u8], raws: &[Raw], plan: &Plan) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(&data[..raws.first().map(|r| r.from_start).unwrap_or(data.len())]);
    let mut first = true;
    for (i, r) in raws.iter().enumerate() {
        if !plan.keep[i] && !r.pseudo {
            continue;
        }
        let meta = plan.meta_of(raws, i, first);
        let is_first = first;
        first = false;
        let Some(meta) = meta else {
            // Unchanged: as it is, but for a missing final newline.
            out.extend_from_slice(&data[r.from_start..r.end]);
            if !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            out.push(b'\n');
            continue;
        };
        let meta = resolve(meta, r);
        out.extend_from_slice(&data[r.from_start..r.hdr_start]);
        let hdr_out = out.len();
        let mut p = r.hdr_start;
        let mut dropping = false;
        while p < r.hdr_end {
            let eol = data[p..r.hdr_end]
                .iter()
                .position(|&b| b == b'\n')
                .map(|j| p + j + 1)
                .unwrap_or(r.hdr_end);
            let line = &data[p..eol];
            let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
            if !continuation {
                let head = &line[..line.len().min(LINE_HEAD)];
                dropping = drops(header_name(head).as_deref(), r.pseudo);
            }
            if !dropping {
                out.extend_from_slice(line);
                if !line.ends_with(b"\n") {
                    out.push(b'\n');
                }
            }
            p = eol;
        }
        let kept = out.len() - hdr_out;
        let base = is_first.then(|| base_line(plan, r.pseudo));
        let natural = kept + meta_lines(base.as_deref(), r.pseudo, &meta, 0, false).len();
        let old = r.hdr_end - r.hdr_start;
        let pad = header_padding(old, natural);
        // Fresh padding goes after `X-Keywords`, reused padding stays where it was.
        let on_kw = natural > old || r.kw_padded;
        out.extend_from_slice(&meta_lines(base.as_deref(), r.pseudo, &meta, pad, on_kw));
        // A message without an end-of-headers line gets none: as in Dovecot's rewrite,
        // only the separator line follows its headers, so its size does not change.
        out.extend_from_slice(&data[r.hdr_end..r.end]);
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out
}

/// Write `new` over `old` in `file` from the first differing byte, truncate, fsync (the
/// whole-buffer reference for [`rewrite_in_place`]).
#[cfg(test)]
fn write_back(file: &File, path: &Path, old: &[u8], new: &[u8]) -> Result<(), MailboxError> {
    if old == new {
        return Ok(());
    }
    let same = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    file.write_all_at(&new[same..], same as u64)
        .and_then(|()| file.set_len(new.len() as u64))
        .and_then(|()| file.sync_all())
        .map_err(|e| MailboxError::io(path, e))
}

/// I/O buffer of the in-place rewrite.
const REWRITE_BUFFER: usize = 64 * 1024;

/// The start of a header line the rewrite looks at: enough for the names it drops
/// (`Content-Length:` is the longest) and a continuation's leading space.
const LINE_HEAD: usize = 32;

/// as ranges of old bytes (taken in increasing order) and new bytes. Nothing is written
/// until the first byte that differs; an old range already at its place is not copied.
/// Old bytes the output is about to overwrite but that are still to be copied are kept in
/// `queue` first: that holds at most as many bytes as the output has grown by so far.
struct InPlace<'a> {
    file: &'a File,
    old_len: u64,
    buf: usize,
    /// Length of the output so far.
    out: u64,
    /// The file holds the output up to here; `pend` is the output from `w` to `out`.
    w: u64,
    pend: Vec<u8>,
    /// Old bytes before `c` are needed no more.
    c: u64,
    /// `queue` holds the old bytes from `c` to `r`; from `r` on, the file still holds them.
    r: u64,
    queue: std::collections::VecDeque<u8>,
    /// Something differs (before that, the output is the old file's beginning).
    writing: bool,
    /// The output's last byte.
    last: Option<u8>,
    tmp: Vec<u8>,
    cmp: Vec<u8>,
    /// The most bytes `queue` held, the largest other buffer, and the bytes written.
    peak: usize,
    peak_buf: usize,
    written: u64,
}

impl<'a> InPlace<'a> {
    fn new(file: &'a File, old_len: u64, buf: usize) -> InPlace<'a> {
        InPlace {
            file,
            old_len,
            buf: buf.max(1),
            out: 0,
            w: 0,
            pend: Vec::new(),
            c: 0,
            r: 0,
            queue: std::collections::VecDeque::new(),
            writing: false,
            last: None,
            tmp: Vec::new(),
            cmp: Vec::new(),
            peak: 0,
            peak_buf: 0,
            written: 0,
        }
    }

    /// The old bytes before `pos` are needed no more (an error if some were given up).
    fn skip_to(&mut self, pos: u64) -> std::io::Result<()> {
        if pos < self.c {
            return Err(std::io::Error::other("mbox rewrite: ranges out of order"));
        }
        if pos == self.c {
            return Ok(());
        }
        let gone = (pos.min(self.r) - self.c) as usize;
        self.queue.drain(..gone);
        self.c = pos;
        self.r = self.r.max(pos);
        Ok(())
    }

    /// Append the next `n` old bytes to `dst`.
    fn take(&mut self, n: usize, dst: &mut Vec<u8>) -> std::io::Result<()> {
        let queued = n.min(self.queue.len());
        dst.extend(self.queue.drain(..queued));
        self.c += queued as u64;
        if queued < n {
            // The queue is empty: `r == c`, and the file still holds the old bytes there.
            let start = dst.len();
            dst.resize(start + n - queued, 0);
            self.file.read_exact_at(&mut dst[start..], self.c)?;
            self.c += (n - queued) as u64;
            self.r = self.c;
        }
        Ok(())
    }

    /// The old bytes from `a` to `b` (not yet given up: `a >= c`) into `dst`, without
    /// taking them: from the queue, then from the file, which holds them from `r` on.
    fn peek(&mut self, a: u64, b: u64, dst: &mut Vec<u8>) -> std::io::Result<()> {
        dst.clear();
        if a < self.c {
            return Err(std::io::Error::other("mbox rewrite: ranges out of order"));
        }
        if a < self.r {
            let from = (a - self.c) as usize;
            let to = (b.min(self.r) - self.c) as usize;
            dst.extend(self.queue.range(from..to));
        }
        let f = a.max(self.r);
        if f < b {
            let start = dst.len();
            dst.resize(start + (b - f) as usize, 0);
            self.file.read_exact_at(&mut dst[start..], f)?;
        }
        self.peak_buf = self.peak_buf.max(dst.len());
        Ok(())
    }

    /// The old line that starts at `a` (ending after its LF, or at `limit`): its end, its
    /// first [`LINE_HEAD`] bytes, whether it ends with LF. Reads `buf` bytes at a time.
    fn line_at(&mut self, a: u64, limit: u64) -> std::io::Result<(u64, Vec<u8>, bool)> {
        let mut chunk = std::mem::take(&mut self.cmp);
        let mut head = Vec::new();
        let mut p = a;
        let found = loop {
            if p >= limit {
                break (limit, false);
            }
            let n = (limit - p).min(self.buf as u64);
            self.peek(p, p + n, &mut chunk)?;
            let room = LINE_HEAD.saturating_sub(head.len());
            let lf = chunk.iter().position(|&b| b == b'\n');
            let upto = lf.map_or(chunk.len(), |i| i + 1);
            head.extend_from_slice(&chunk[..room.min(upto)]);
            if let Some(i) = lf {
                break (p + i as u64 + 1, true);
            }
            p += n;
        };
        self.cmp = chunk;
        Ok((found.0, head, found.1))
    }

    /// Output the old bytes from `a` to `b`.
    fn copy(&mut self, a: u64, b: u64) -> std::io::Result<()> {
        self.skip_to(a)?;
        if a >= b {
            return Ok(());
        }
        if a == self.out {
            // Already in place.
            self.flush()?;
            self.skip_to(b)?;
            self.out = b;
            self.w = b;
            let mut one = [0u8];
            self.file.read_exact_at(&mut one, b - 1)?;
            self.last = Some(one[0]);
            return Ok(());
        }
        let mut chunk = std::mem::take(&mut self.tmp);
        while self.c < b {
            chunk.clear();
            let n = (b - self.c).min(self.buf as u64) as usize;
            self.take(n, &mut chunk)?;
            self.emit(&chunk)?;
        }
        self.tmp = chunk;
        Ok(())
    }

    /// Output `bytes`.
    fn emit(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.last = bytes.last().copied();
        if !self.writing {
            // Nothing written yet: the file is the old one; skip what is the same.
            let avail = self
                .old_len
                .saturating_sub(self.out)
                .min(bytes.len() as u64) as usize;
            let mut same = 0;
            while same < avail {
                let n = (avail - same).min(self.buf);
                self.cmp.resize(n, 0);
                self.file
                    .read_exact_at(&mut self.cmp, self.out + same as u64)?;
                let m = self
                    .cmp
                    .iter()
                    .zip(&bytes[same..same + n])
                    .take_while(|(x, y)| x == y)
                    .count();
                same += m;
                if m < n {
                    break;
                }
            }
            self.out += same as u64;
            self.w = self.out;
            bytes = &bytes[same..];
            if bytes.is_empty() {
                return Ok(());
            }
            self.writing = true;
        }
        self.pend.extend_from_slice(bytes);
        self.out += bytes.len() as u64;
        if self.pend.len() >= self.buf {
            self.flush()?;
        }
        Ok(())
    }

    /// Write `pend`, once the old bytes it covers that are still needed are queued.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.pend.is_empty() {
            return Ok(());
        }
        let need = self.out.min(self.old_len);
        while self.r < need {
            let n = (need - self.r).min(self.buf as u64) as usize;
            self.cmp.resize(n, 0);
            self.file.read_exact_at(&mut self.cmp, self.r)?;
            self.queue.extend(&self.cmp);
            self.r += n as u64;
        }
        self.peak = self.peak.max(self.queue.len());
        self.peak_buf = self.peak_buf.max(self.pend.len());
        self.file.write_all_at(&self.pend, self.w)?;
        self.written += self.pend.len() as u64;
        self.w = self.out;
        self.pend.clear();
        Ok(())
    }

    /// Write the rest, cut the file to the output's length and fsync, if anything changed.
    fn finish(mut self) -> std::io::Result<Rewritten> {
        self.flush()?;
        let done = Rewritten {
            peak_queue: self.peak,
            peak_buffer: self.peak_buf,
            written: self.written,
        };
        if !self.writing && self.out == self.old_len {
            return Ok(done);
        }
        self.file.set_len(self.out)?;
        self.file.sync_all()?;
        Ok(done)
    }
}

/// What [`rewrite_in_place`] did: the most old bytes it held at once, the bytes it wrote.
#[derive(Debug)]
struct Rewritten {
    #[cfg_attr(not(test), allow(dead_code))]
    peak_queue: usize,
    /// The largest read or write buffer.
    #[cfg_attr(not(test), allow(dead_code))]
    peak_buffer: usize,
    #[cfg_attr(not(test), allow(dead_code))]
    written: u64,
}

/// [`rewrite`]'s output written over the file `found` was scanned from, in place from the
/// first changed byte, then truncated and fsynced ([`write_back`] of it). Memory: about
/// three `buf`-byte buffers (headers are read line by line, a long line `buf` bytes at a
/// time, so a header without end costs no more), the metadata lines written, and the old
/// bytes the output has overtaken (at most what the file has grown by so far, only
/// inserted headers make it grow), never the file nor one message.
fn rewrite_in_place(
    file: &File,
    found: &Scan,
    plan: &Plan,
    buf: usize,
) -> std::io::Result<Rewritten> {
    let raws = &found.raws;
    let Some(r0) = raws.first() else {
        return Ok(Rewritten {
            peak_queue: 0,
            peak_buffer: 0,
            written: 0,
        });
    };
    let mut io = InPlace::new(file, found.len as u64, buf);
    io.copy(0, r0.from_start as u64)?;
    let mut first = true;
    for (i, r) in raws.iter().enumerate() {
        if !plan.keep[i] && !r.pseudo {
            continue;
        }
        let meta = plan.meta_of(raws, i, first);
        let is_first = first;
        first = false;
        let Some(meta) = meta else {
            io.copy(r.from_start as u64, r.end as u64)?;
            if io.last != Some(b'\n') {
                io.emit(b"\n")?;
            }
            io.emit(b"\n")?;
            continue;
        };
        let meta = resolve(meta, r);
        io.copy(r.from_start as u64, r.hdr_start as u64)?;
        // The header line by line, never whole: runs of kept lines are copied (in place
        // when they did not move), Dovecot's metadata lines dropped.
        let (hs, he) = (r.hdr_start as u64, r.hdr_end as u64);
        let mut kept = 0usize;
        let mut run: Option<u64> = None;
        let mut dropping = false;
        let mut lf = true;
        let mut p = hs;
        while p < he {
            let (eol, head, ends_lf) = io.line_at(p, he)?;
            let continuation = head.first().is_some_and(|b| *b == b' ' || *b == b'\t');
            if !continuation {
                dropping = drops(header_name(&head).as_deref(), r.pseudo);
            }
            if dropping {
                if let Some(a) = run.take() {
                    io.copy(a, p)?;
                }
            } else {
                run.get_or_insert(p);
                kept += (eol - p) as usize;
                lf = ends_lf;
            }
            p = eol;
        }
        if let Some(a) = run.take() {
            io.copy(a, he)?;
            // Only the last line, cut by the end of the file, can lack its newline.
            if !lf {
                io.emit(b"\n")?;
                kept += 1;
            }
        }
        let base = is_first.then(|| base_line(plan, r.pseudo));
        let natural = kept + meta_lines(base.as_deref(), r.pseudo, &meta, 0, false).len();
        let old = r.hdr_end - r.hdr_start;
        let pad = header_padding(old, natural);
        let on_kw = natural > old || r.kw_padded;
        io.emit(&meta_lines(base.as_deref(), r.pseudo, &meta, pad, on_kw))?;
        io.copy(r.hdr_end as u64, r.end as u64)?;
        if io.last != Some(b'\n') {
            io.emit(b"\n")?;
        }
        io.emit(b"\n")?;
    }
    io.finish()
}

/// A message's `From ` line as a session remembers it, to notice a file rewritten under
/// it: the length and CRC-32 of its first [`SCAN_KEEP`] bytes (8 bytes per message
/// instead of a copy of the line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FromLine {
    len: u32,
    crc: u32,
}

impl FromLine {
    fn of(line: &[u8]) -> FromLine {
        FromLine {
            len: line.len() as u32,
            crc: crc32fast::hash(line),
        }
    }

    /// `data` starts with this line.
    fn starts(&self, data: &[u8]) -> bool {
        data.get(..self.len as usize)
            .is_some_and(|l| crc32fast::hash(l) == self.crc)
    }
}

/// Where one message is in the file (offsets), and its `From ` line.
#[derive(Debug, Clone)]
struct Spot {
    from_start: usize,
    hdr_start: usize,
    hdr_end: usize,
    end: usize,
    from_line: FromLine,
}

/// One message of an indexed mbox.
#[derive(Debug, Clone)]
pub struct MboxMsg {
    pub uid: u32,
    /// `Status:` `R`, `X-Status:` `A` `F` `T` `D`.
    pub flags: Flags,
    /// `Status:` has `O`: a session has seen the message (it is no longer \\Recent).
    pub old: bool,
    /// `X-Keywords:`, as indexes into [`MboxBox::keywords`].
    pub keywords: KeywordSet,
    /// Size as clients see it: CRLF line ends, Dovecot's hidden headers left out.
    pub size: u64,
    /// The `From ` line's time (Unix seconds).
    pub date: i64,
    spot: Spot,
}

/// New flags of a message: system flags, `O` (no longer \\Recent), keyword names.
pub type MboxFlags = (Flags, bool, Vec<String>);

/// An indexed mbox: where its messages are, their UIDs and flags; never its contents.
#[derive(Debug)]
pub struct MboxBox {
    pub path: PathBuf,
    pub uid_validity: u32,
    /// One more than the last UID given (`X-IMAPbase`'s second field).
    pub uid_next: u32,
    /// Keyword names: `X-IMAPbase`'s list, then other names messages carry.
    pub keywords: Vec<String>,
    /// `X-IMAPbase`'s keyword list as the file has it.
    base_keywords: String,
    /// The file's first message is the pseudo message (`X-IMAP`).
    pseudo: bool,
    pub messages: Vec<MboxMsg>,
    /// The file as it was indexed (`None`: there was no file).
    pub stamp: Option<super::FileStamp>,
    opts: MboxOptions,
    /// UIDVALIDITY for a box without `X-IMAPbase` (an empty one).
    validity_hint: Option<u32>,
}

#[cfg(test)]
thread_local! {
    /// How many updates took the fast way (tests).
    static FAST_UPDATES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Buffer of the reader that indexes an mbox.
const SCAN_BUFFER: usize = 32 * 1024;

/// The keyword names of `X-IMAPbase` (`rest`), then those of `extra` not in it.
fn keyword_list<'a>(rest: &str, extra: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut list: Vec<String> = rest.split_whitespace().map(String::from).collect();
    for k in extra {
        if !list.contains(k) {
            list.push(k.clone());
        }
    }
    list
}

impl MboxBox {
    /// A mailbox with no messages and no file.
    pub fn empty() -> MboxBox {
        MboxBox {
            path: PathBuf::new(),
            uid_validity: 0,
            uid_next: 1,
            keywords: Vec::new(),
            base_keywords: String::new(),
            pseudo: false,
            messages: Vec::new(),
            stamp: None,
            opts: MboxOptions::default(),
            validity_hint: None,
        }
    }

    /// Index the mbox under its read lock; when messages have no UIDs yet, again under
    /// the write locks, storing UIDs for them. A missing file is an empty mailbox (with
    /// UIDVALIDITY `validity_hint`, or the time). The file is read and rewritten through
    /// bounded buffers, never held whole.
    pub fn open(
        path: &Path,
        opts: &MboxOptions,
        validity_hint: Option<u32>,
    ) -> Result<MboxBox, MailboxError> {
        let mut mb = MboxBox {
            path: path.to_path_buf(),
            opts: opts.clone(),
            validity_hint,
            ..MboxBox::empty()
        };
        mb.refresh()?;
        Ok(mb)
    }

    /// Index the file again (after [`super::FileStamp`] says it changed).
    pub fn refresh(&mut self) -> Result<(), MailboxError> {
        let path = self.path.clone();
        if std::fs::symlink_metadata(&path).is_err() {
            self.uid_validity = self.validity_hint.unwrap_or_else(now_validity);
            self.uid_next = 1;
            self.keywords.clear();
            self.messages.clear();
            self.stamp = None;
            return Ok(());
        }
        let io = |e| MailboxError::io(&path, e);
        // First under the read lock alone (Dovecot's `mbox_read_locks`), so sessions
        // opening the same mbox do not wait for each other; the write locks only when
        // messages need UIDs written.
        let reading = open_file(&path, false, false, &self.opts)?;
        check_file(&reading, &path, &self.opts)?;
        fcntl_lock(&reading, &path, false, self.opts.lock_timeout)?;
        let mut stamp = super::FileStamp::of_file(&reading);
        let mut found = scan_file(&reading).map_err(io)?;
        let (mut validity, mut last, mut uids, dirty) =
            assign_uids(&found.raws, self.validity_hint);
        drop(reading);
        if dirty {
            let l = open_locked(&path, &self.opts, false)?;
            let before = l.file.metadata().map_err(io)?;
            found = scan_file(&l.file).map_err(io)?;
            let dirty;
            (validity, last, uids, dirty) = assign_uids(&found.raws, self.validity_hint);
            if dirty {
                let meta: Vec<Option<Meta>> = found
                    .raws
                    .iter()
                    .zip(&uids)
                    .map(|(r, &u)| {
                        (!r.pseudo && r.uid != Some(u)).then_some(Meta {
                            uid: u,
                            flags: None,
                        })
                    })
                    .collect();
                let keep = vec![true; found.raws.len()];
                let rest = found.raws[0].imapbase_rest.clone();
                let plan = Plan {
                    validity,
                    last,
                    base_keywords: &rest,
                    keep: &keep,
                    meta: &meta,
                    uids: &uids,
                };
                rewrite_in_place(&l.file, &found, &plan, REWRITE_BUFFER).map_err(io)?;
                touch_if_same(&l.file, &before);
                found = scan_file(&l.file).map_err(io)?;
                (validity, last, uids, _) = assign_uids(&found.raws, self.validity_hint);
            }
            stamp = super::FileStamp::of_file(&l.file);
        }
        self.build(found, validity, last, uids);
        self.stamp = stamp;
        Ok(())
    }

    /// Take the scanned messages as the box's.
    fn build(&mut self, found: Scan, validity: u32, last: u32, uids: Vec<u32>) {
        let Scan {
            raws,
            sizes,
            from_lines,
            ..
        } = found;
        let rest = raws
            .first()
            .map(|r| r.imapbase_rest.clone())
            .unwrap_or_default();
        self.keywords = keyword_list(&rest, raws.iter().flat_map(|r| r.keywords.iter()));
        self.base_keywords = rest;
        self.pseudo = raws.first().is_some_and(|r| r.pseudo);
        self.uid_validity = validity;
        self.uid_next = last.saturating_add(1);
        self.messages = Vec::with_capacity(raws.len());
        for (((r, uid), size), from_line) in raws.into_iter().zip(uids).zip(sizes).zip(from_lines) {
            if r.pseudo {
                continue;
            }
            let keywords = r
                .keywords
                .iter()
                .filter_map(|k| self.keywords.iter().position(|x| x == k))
                .collect();
            self.messages.push(MboxMsg {
                uid,
                flags: r.flags,
                old: r.old,
                keywords,
                size,
                date: r.date,
                spot: Spot {
                    from_start: r.from_start,
                    hdr_start: r.hdr_start,
                    hdr_end: r.hdr_end,
                    end: r.end,
                    from_line,
                },
            });
        }
    }

    /// Find the messages again after another session (or Dovecot, or a mail client)
    /// rewrote the file: each message's offsets are taken anew by its `X-UID`, under a
    /// read lock. A message no longer there keeps its old place (and then reads as
    /// expunged); the list of messages does not change.
    pub fn resync(&mut self) -> Result<(), MailboxError> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
            .map_err(|e| MailboxError::io(&self.path, e))?;
        fcntl_lock(&file, &self.path, false, self.opts.lock_timeout)?;
        let found = scan_file(&file).map_err(|e| MailboxError::io(&self.path, e))?;
        if found.raws.first().and_then(|r| r.imapbase).map(|b| b.0) != Some(self.uid_validity) {
            return Ok(());
        }
        let at: std::collections::HashMap<u32, usize> = found
            .raws
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.pseudo)
            .filter_map(|(i, r)| r.uid.map(|u| (u, i)))
            .collect();
        for m in self.messages.iter_mut() {
            if let Some(&i) = at.get(&m.uid) {
                let r = &found.raws[i];
                m.spot = Spot {
                    from_start: r.from_start,
                    hdr_start: r.hdr_start,
                    hdr_end: r.hdr_end,
                    end: r.end,
                    from_line: found.from_lines[i],
                };
            }
        }
        Ok(())
    }

    /// Where message `index` is, to be opened by [`MboxMessage::open`] on another thread.
    pub fn message(&self, index: usize) -> Option<MboxMessage> {
        Some(MboxMessage {
            path: self.path.clone(),
            spot: self.messages.get(index)?.spot.clone(),
            lock_timeout: self.opts.lock_timeout,
        })
    }

    /// Message `index` as clients see it (whole; see [`MboxMessage::open`] for a reader).
    pub fn read(&self, index: usize) -> Result<Vec<u8>, MailboxError> {
        let m = self
            .message(index)
            .ok_or_else(|| MailboxError::Format(format!("no message {}", index + 1)))?;
        let mut r = m.open()?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut out)
            .map_err(|e| MailboxError::io(&self.path, e))?;
        Ok(out)
    }

    /// The fast way to change flags, as Dovecot's in-place header update: when the file
    /// is as this box last read it (same inode, size and time, under the write locks),
    /// no keyword is new to `X-IMAPbase`, and each changed header still fits in its old
    /// size, only those headers are written (the same bytes the full rewrite would
    /// write: their metadata anew, the padding taking the difference). `false`: the
    /// full rewrite is needed.
    fn update_headers(
        &mut self,
        file: &File,
        before: &std::fs::Metadata,
        changes: &std::collections::HashMap<u32, MboxFlags>,
    ) -> Result<bool, MailboxError> {
        let io = |e| MailboxError::io(&self.path, e);
        if self.stamp != super::FileStamp::of_file(file) || self.stamp.is_none() {
            return Ok(false);
        }
        let base: Vec<&str> = self.base_keywords.split_whitespace().collect();
        if changes
            .values()
            .flat_map(|c| c.2.iter())
            .any(|k| !base.contains(&k.as_str()))
        {
            return Ok(false);
        }
        let mut writes: Vec<(u64, Vec<u8>, usize)> = Vec::with_capacity(changes.len());
        for (uid, new) in changes {
            let Ok(j) = self.messages.binary_search_by_key(uid, |m| m.uid) else {
                return Ok(false);
            };
            let sp = &self.messages[j].spot;
            // Only a header that ends with its empty line, and not a huge one.
            if sp.hdr_end >= sp.end || sp.hdr_end - sp.from_start > REWRITE_BUFFER {
                return Ok(false);
            }
            let mut head = vec![0u8; sp.hdr_end - sp.from_start];
            file.read_exact_at(&mut head, sp.from_start as u64)
                .map_err(io)?;
            if !sp.from_line.starts(&head) {
                return Ok(false);
            }
            let hdr = &head[sp.hdr_start - sp.from_start..];
            let first = j == 0 && !self.pseudo;
            let raw = parse_header(hdr, if first { 0 } else { 1 });
            if raw.uid != Some(*uid) {
                return Ok(false);
            }
            if (raw.flags, raw.old, &raw.keywords) == (new.0, new.1, &new.2) {
                continue;
            }
            let meta = Meta {
                uid: *uid,
                flags: Some(new.clone()),
            };
            let base_line = first.then(|| {
                let sep = if self.base_keywords.is_empty() {
                    ""
                } else {
                    " "
                };
                format!(
                    "X-IMAPbase: {} {:010}{sep}{}",
                    self.uid_validity,
                    self.uid_next.saturating_sub(1),
                    self.base_keywords
                )
            });
            if first && raw.imapbase != Some((self.uid_validity, self.uid_next.saturating_sub(1))) {
                return Ok(false);
            }
            let Some(out) = fit_header(hdr, &raw, &meta, base_line.as_deref()) else {
                return Ok(false);
            };
            writes.push((sp.hdr_start as u64, out, j));
        }
        for (at, bytes, _) in &writes {
            file.write_all_at(bytes, *at).map_err(io)?;
        }
        if !writes.is_empty() {
            file.sync_all().map_err(io)?;
            touch_if_same(file, before);
        }
        for (_, _, j) in writes {
            let uid = self.messages[j].uid;
            if let Some((flags, old, kws)) = changes.get(&uid) {
                let keywords = kws
                    .iter()
                    .filter_map(|k| self.keywords.iter().position(|x| x == k))
                    .collect();
                let m = &mut self.messages[j];
                m.flags = *flags;
                m.old = *old;
                m.keywords = keywords;
            }
        }
        self.stamp = super::FileStamp::of_file(file);
        #[cfg(test)]
        FAST_UPDATES.with(|c| c.set(c.get() + 1));
        Ok(true)
    }

    /// Change the flags of the messages in `changes` and delete those in `expunge` (by
    /// UID), in one rewrite under the write locks, then index the file again. What was
    /// delivered or changed by others since the box was indexed stays as they left it.
    /// Keyword names new to the box are added to `X-IMAPbase`'s list. Without `rescan`
    /// the box is not indexed again (its stamp is dropped, so a later look at the file
    /// reads it anew): a POP3 session ending.
    pub fn update(
        &mut self,
        changes: &std::collections::HashMap<u32, MboxFlags>,
        expunge: &std::collections::HashSet<u32>,
        rescan: bool,
    ) -> Result<(), MailboxError> {
        if changes.is_empty() && expunge.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let io = |e| MailboxError::io(&path, e);
        let locked = open_locked(&path, &self.opts, false)?;
        let before = locked.file.metadata().map_err(io)?;
        if expunge.is_empty() && self.update_headers(&locked.file, &before, changes)? {
            return Ok(());
        }
        let found = scan_file(&locked.file).map_err(io)?;
        let (validity, last, uids, _) = assign_uids(&found.raws, self.validity_hint);
        if validity != self.uid_validity {
            return Err(MailboxError::Format(format!(
                "{}: UIDVALIDITY changed under the session",
                path.display()
            )));
        }
        let rest = found
            .raws
            .first()
            .map(|r| r.imapbase_rest.clone())
            .unwrap_or_default();
        let base_keywords =
            keyword_list(&rest, changes.values().flat_map(|c| c.2.iter())).join(" ");
        let keep: Vec<bool> = uids.iter().map(|u| !expunge.contains(u)).collect();
        let meta: Vec<Option<Meta>> = found
            .raws
            .iter()
            .zip(&uids)
            .map(|(r, &u)| {
                if r.pseudo {
                    return None;
                }
                match changes.get(&u) {
                    Some(c) if (r.flags, r.old, &r.keywords) != (c.0, c.1, &c.2) => Some(Meta {
                        uid: u,
                        flags: Some(c.clone()),
                    }),
                    _ if r.uid != Some(u) => Some(Meta {
                        uid: u,
                        flags: None,
                    }),
                    _ => None,
                }
            })
            .collect();
        let plan = Plan {
            validity,
            last,
            base_keywords: &base_keywords,
            keep: &keep,
            meta: &meta,
            uids: &uids,
        };
        rewrite_in_place(&locked.file, &found, &plan, REWRITE_BUFFER).map_err(io)?;
        touch_if_same(&locked.file, &before);
        if !rescan {
            self.stamp = None;
            return Ok(());
        }
        let stamp = super::FileStamp::of_file(&locked.file);
        let found = scan_file(&locked.file).map_err(io)?;
        let (validity, last, uids, _) = assign_uids(&found.raws, self.validity_hint);
        self.build(found, validity, last, uids);
        self.stamp = stamp;
        Ok(())
    }
}

/// The metadata of one header (`hdr`: its lines, without the `From ` line and the
/// empty line), as [`scan`] notes it; `index` 0 for the file's first message.
fn parse_header(hdr: &[u8], index: usize) -> Raw {
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
fn fit_header(hdr: &[u8], raw: &Raw, meta: &Meta, base: Option<&str>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(hdr.len());
    let mut dropping = false;
    for line in hdr.split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            let head = &line[..line.len().min(LINE_HEAD)];
            dropping = drops(header_name(head).as_deref(), raw.pseudo);
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

/// After a rewrite that left the file's size as it was, make sure its modification time
/// (in seconds) changed too: Dovecot's index notices a changed mbox by mtime and size
/// only (`mbox_sync_has_changed()`), so a same-size rewrite within the second Dovecot last
/// looked would go unseen. Dovecot itself waits for the next second; the time is set to
/// the next second instead (at most one second ahead of the clock), with the clock's
/// nanoseconds, so that Postern sessions, which compare times to the nanosecond, never
/// see two states of the file with one time.
fn touch_if_same(file: &File, before: &std::fs::Metadata) {
    let Ok(after) = file.metadata() else {
        return;
    };
    if after.len() != before.len() || after.mtime() != before.mtime() {
        return;
    }
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let t = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: (before.mtime() + 1) as libc::time_t,
            tv_nsec: ns as _,
        },
    ];
    // SAFETY: the descriptor is open; `t` holds two valid timespecs.
    unsafe { libc::futimens(std::os::fd::AsRawFd::as_raw_fd(file), t.as_ptr()) };
}

/// Move every message of the mbox `from` to the end of the mbox `to` (created if
/// missing), then empty `from`, both under their write locks: renaming an INBOX that
/// cannot be renamed (a spool directory the user cannot write).
pub fn move_all(from: &Path, to: &Path, opts: &MboxOptions) -> Result<(), MailboxError> {
    let src = open_locked(from, opts, false)?;
    let dst = open_locked(to, opts, true)?;
    let io = |p: &Path, e| MailboxError::io(p, e);
    let len = dst.file.metadata().map_err(|e| io(to, e))?.len();
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut &src.file, &mut data).map_err(|e| io(from, e))?;
    if len > 0 && !data.is_empty() {
        data.insert(0, b'\n');
    }
    let res = dst
        .file
        .write_all_at(&data, len)
        .and_then(|()| dst.file.sync_all());
    if let Err(e) = res {
        let _ = dst.file.set_len(len);
        return Err(io(to, e));
    }
    src.file
        .set_len(0)
        .and_then(|()| src.file.sync_all())
        .map_err(|e| io(from, e))
}

/// A message to save into an mbox ([`append`]).
#[derive(Debug, Clone)]
pub struct MboxSave<'a> {
    pub data: &'a [u8],
    pub flags: Flags,
    pub keywords: Vec<String>,
    /// The internal date (the `From ` line's time).
    pub date: i64,
    /// The `From ` line's sender.
    pub sender: String,
}

/// The bytes Dovecot 2.3 writes for a saved message (`mbox-save.c`): the `From ` line
/// (Dovecot's date format), the message's header without Dovecot's metadata fields or
/// `From ` lines, `X-IMAPbase` when it is the box's first message, `X-UID`, `Status`,
/// `X-Status`, `X-Keywords` with 50 spaces of padding, `Content-Length` of the body,
/// then the body as it is (not `>From`-quoted: the length says where it ends); CRLF line
/// ends stored as LF.
fn format_saved(m: &MboxSave, base: Option<&str>, uid: u32) -> Vec<u8> {
    let sender = if m.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        &m.sender
    };
    let mut out = format!("From {sender}  {}\n", dovecot_from_date(m.date)).into_bytes();
    out.reserve(m.data.len() + 160);
    // The header: up to the first empty line (or the whole message).
    let mut pos = 0;
    let mut body_at = m.data.len();
    let mut header_ended = false;
    let mut hiding = false;
    while pos < m.data.len() {
        let eol = m.data[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i + 1)
            .unwrap_or(m.data.len());
        let line = &m.data[pos..eol];
        if line == b"\n" || line == b"\r\n" {
            body_at = eol;
            header_ended = true;
            break;
        }
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            hiding = line.starts_with(b"From ")
                || header_name(line).is_some_and(|n| HIDDEN.contains(&n.as_str()));
        }
        if !hiding {
            let text = line
                .strip_suffix(b"\r\n")
                .or_else(|| line.strip_suffix(b"\n"))
                .unwrap_or(line);
            out.extend_from_slice(text);
            out.push(b'\n');
        }
        pos = eol;
    }
    if let Some(b) = base {
        out.extend_from_slice(b.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(format!("X-UID: {uid}\nStatus: ").as_bytes());
    if m.flags.contains(Flags::SEEN) {
        out.push(b'R');
    }
    out.push(b'\n');
    let meta = meta_lines(
        None,
        false,
        &Meta {
            uid,
            flags: Some((m.flags, false, Vec::new())),
        },
        0,
        false,
    );
    // `X-Status:` as the rewrite writes it (the lines after `X-UID`/`Status`).
    for l in meta.split_inclusive(|&b| b == b'\n') {
        if l.starts_with(b"X-Status:") {
            out.extend_from_slice(l);
        }
    }
    out.extend_from_slice(b"X-Keywords:");
    for k in &m.keywords {
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
    }
    out.resize(out.len() + HEADER_PADDING, b' ');
    out.push(b'\n');
    let mut body = Vec::with_capacity(m.data.len().saturating_sub(body_at));
    for line in m.data[body_at.min(m.data.len())..].split_inclusive(|&b| b == b'\n') {
        match line.strip_suffix(b"\r\n") {
            Some(l) => {
                body.extend_from_slice(l);
                body.push(b'\n');
            }
            None => body.extend_from_slice(line),
        }
    }
    if !body.is_empty() && !body.ends_with(b"\n") {
        body.push(b'\n');
    }
    // A message that is all header (no empty line): Dovecot's mbox-save gives it a body
    // of one empty line (`Content-Length: 1`), so clients see the header end.
    if !header_ended {
        body = b"\n".to_vec();
    }
    out.extend_from_slice(format!("Content-Length: {}\n\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    out.push(b'\n');
    out
}

/// Save `msgs` at the end of the mbox at `path` (created if missing) under its write
/// locks, as Dovecot's IMAP APPEND and COPY do: messages without UIDs get theirs first,
/// `X-IMAPbase`'s last UID (and keyword list) is updated in the first message, then the
/// messages are appended with the next UIDs, fsynced, and the file truncated back on
/// failure. Returns the box's UIDVALIDITY and the new UIDs.
pub fn append(
    path: &Path,
    opts: &MboxOptions,
    validity_hint: Option<u32>,
    msgs: &[MboxSave],
) -> Result<(u32, Vec<u32>), MailboxError> {
    let io = |e| MailboxError::io(path, e);
    let locked = open_locked(path, opts, true)?;
    let file = &locked.file;
    let before = file.metadata().map_err(io)?;
    let found = scan_file(file).map_err(io)?;
    let (validity, last, uids, _) = assign_uids(&found.raws, validity_hint);
    let rest = found
        .raws
        .first()
        .map(|r| r.imapbase_rest.clone())
        .unwrap_or_default();
    let base_keywords = keyword_list(&rest, msgs.iter().flat_map(|m| m.keywords.iter())).join(" ");
    let new_last = last.saturating_add(msgs.len() as u32);
    let has_messages = !found.raws.is_empty();
    if has_messages {
        let keep = vec![true; found.raws.len()];
        let meta: Vec<Option<Meta>> = found
            .raws
            .iter()
            .zip(&uids)
            .map(|(r, &u)| {
                (!r.pseudo && r.uid != Some(u)).then_some(Meta {
                    uid: u,
                    flags: None,
                })
            })
            .collect();
        let plan = Plan {
            validity,
            last: new_last,
            base_keywords: &base_keywords,
            keep: &keep,
            meta: &meta,
            uids: &uids,
        };
        rewrite_in_place(file, &found, &plan, REWRITE_BUFFER).map_err(io)?;
    }
    let len = file.metadata().map_err(io)?.len();
    let mut data = Vec::new();
    // A box whose last message lacks its final newline or the separator line gets them.
    if len > 0 {
        let mut tail = [0u8; 2];
        let n = len.min(2) as usize;
        file.read_exact_at(&mut tail[..n], len - n as u64)
            .map_err(io)?;
        let tail = &tail[..n];
        if !tail.ends_with(b"\n") {
            data.extend_from_slice(b"\n\n");
        } else if tail != b"\n\n" && n == 2 {
            data.push(b'\n');
        }
    }
    let mut new_uids = Vec::with_capacity(msgs.len());
    for (k, m) in msgs.iter().enumerate() {
        let uid = last + 1 + k as u32;
        let base = (!has_messages && k == 0).then(|| {
            let sep = if base_keywords.is_empty() { "" } else { " " };
            format!("X-IMAPbase: {validity} {new_last:010}{sep}{base_keywords}")
        });
        data.extend_from_slice(&format_saved(m, base.as_deref(), uid));
        new_uids.push(uid);
    }
    let res = file.write_all_at(&data, len).and_then(|()| file.sync_all());
    if let Err(e) = res {
        let _ = file.set_len(len);
        let _ = file.sync_all();
        return Err(io(e));
    }
    touch_if_same(file, &before);
    Ok((validity, new_uids))
}

/// One mbox message, ready to be opened for reading.
#[derive(Debug, Clone)]
pub struct MboxMessage {
    path: PathBuf,
    spot: Spot,
    lock_timeout: Duration,
}

impl MboxMessage {
    /// Open the message: its header with Dovecot's hidden fields removed, then the body
    /// read from the file as the reader is read. The file is held under an `fcntl` read
    /// lock (Dovecot's `mbox_read_locks`) while the reader lives; if it was rewritten by
    /// someone else since the mailbox was opened, this fails rather than return another
    /// message.
    pub fn open(&self) -> Result<super::MessageReader, MailboxError> {
        self.open_waiting(self.lock_timeout)
    }

    /// [`open`](Self::open), waiting at most `timeout` for the read lock.
    pub fn open_waiting(&self, timeout: Duration) -> Result<super::MessageReader, MailboxError> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)
            .map_err(|e| MailboxError::io(&self.path, e))?;
        self.read_from(file, timeout)
    }

    /// See [`super::MessageRef::open_if_owned`]: the mbox opened with this thread's ids
    /// when it is a regular file owned by `uid` (`None` otherwise), then as
    /// [`open_waiting`](Self::open_waiting) with no wait for the lock.
    pub fn open_if_owned(&self, uid: u32) -> Option<Result<super::MessageReader, MailboxError>> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)
            .ok()?;
        let st = file.metadata().ok()?;
        if !st.file_type().is_file() || std::os::unix::fs::MetadataExt::uid(&st) != uid {
            return None;
        }
        Some(self.read_from(file, Duration::ZERO))
    }

    /// Lock `file` (this mbox) for reading and check the message is where it was.
    fn read_from(
        &self,
        file: std::fs::File,
        timeout: Duration,
    ) -> Result<super::MessageReader, MailboxError> {
        let sp = &self.spot;
        fcntl_lock(&file, &self.path, false, timeout)?;
        let changed = || {
            MailboxError::Format(format!(
                "{}: mailbox changed under the session",
                self.path.display()
            ))
        };
        let mut head = vec![0u8; sp.hdr_end - sp.from_start];
        file.read_exact_at(&mut head, sp.from_start as u64)
            .map_err(|_| changed())?;
        if !sp.from_line.starts(&head) {
            return Err(changed());
        }
        let raw = Raw {
            hdr_start: sp.hdr_start - sp.from_start,
            hdr_end: head.len(),
            end: head.len(),
            ..Raw::default()
        };
        let head = visible(&head, &raw);
        Ok(super::MessageReader::new(
            head,
            file,
            sp.hdr_end as u64,
            sp.end as u64,
            self.path.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::crlf_size;
    use std::collections::{HashMap, HashSet};

    /// `peek` over a byte slice (for [`scan`] of test data).
    fn peek_of(data: &[u8]) -> impl Fn(u64, &mut [u8]) -> usize + '_ {
        move |off: u64, buf: &mut [u8]| {
            let off = (off as usize).min(data.len());
            let n = buf.len().min(data.len() - off);
            buf[..n].copy_from_slice(&data[off..off + n]);
            n
        }
    }

    /// POP3's UPDATE state on a box: the messages at `seen` get \Seen (`Status: RO`),
    /// those at `gone` are deleted.
    fn commit(mb: &mut MboxBox, gone: &[usize], seen: &[usize]) {
        let mut ch: HashMap<u32, MboxFlags> = HashMap::new();
        for &i in seen {
            let m = &mb.messages[i];
            if gone.contains(&i) || m.flags.contains(Flags::SEEN) {
                continue;
            }
            let names = m.keywords.iter().map(|k| mb.keywords[k].clone()).collect();
            ch.insert(m.uid, (m.flags.union(Flags::SEEN), true, names));
        }
        let ex: HashSet<u32> = gone.iter().map(|&i| mb.messages[i].uid).collect();
        mb.update(&ch, &ex, true).expect("update");
    }

    /// The plan [`MboxBox::update`] makes: messages at `read` get \Seen (and, every
    /// second one, the keyword `work`), those not kept go, UIDs are given where missing.
    /// Returns (UIDVALIDITY, last UID, UIDs, base keywords, metadata).
    fn plan_parts(raws: &[Raw], read: &[bool]) -> (u32, u32, Vec<u32>, String, Vec<Option<Meta>>) {
        let (validity, last, uids, _) = assign_uids(raws, Some(1_700_000_000));
        let mut metas = Vec::new();
        let mut extra: Vec<String> = Vec::new();
        for (i, (r, &u)) in raws.iter().zip(&uids).enumerate() {
            let reading = read.get(i).copied().unwrap_or(false) && !r.flags.contains(Flags::SEEN);
            let m = if r.pseudo {
                None
            } else if reading {
                let mut k = r.keywords.clone();
                if i % 2 == 1 && !k.iter().any(|x| x == "work") {
                    k.push("work".into());
                    extra.push("work".into());
                }
                Some(Meta {
                    uid: u,
                    flags: Some((r.flags.union(Flags::SEEN), true, k)),
                })
            } else if r.uid != Some(u) {
                Some(Meta {
                    uid: u,
                    flags: None,
                })
            } else {
                None
            };
            metas.push(m);
        }
        let rest = raws
            .first()
            .map(|r| r.imapbase_rest.clone())
            .unwrap_or_default();
        let base = keyword_list(&rest, extra.iter()).join(" ");
        (validity, last, uids, base, metas)
    }

    /// `scan` (bounded reads) finds what `parse` + `visible` find over the whole file,
    /// on every box these tests use and on edge cases: CRLF separators, no final
    /// newline, no end-of-headers line, text before the first message, hidden headers
    /// with continuation lines, a line longer than the kept prefix.
    #[test]
    fn scan_agrees_with_parse() {
        let long = format!("X-Long: {}\n", "y".repeat(3 * SCAN_KEEP));
        let cases: Vec<Vec<u8>> = vec![
            BOX.to_vec(),
            b"".to_vec(),
            b"garbage\nFrom a  Sat Nov 28 10:00:00 2026\nSubject: x\n\nbody\nFrom inside\nend".to_vec(),
            b"From a  x\r\nSubject: x\r\nX-UID: 3\r\n\r\nbody\r\n\r\nFrom b  y\r\nSubject: y\r\n\r\nz\r\n\r\n".to_vec(),
            b"From a  x\nSubject: x\nX-UID: 3\n\nFrom b  y\nX-Keywords: a\n b\nSubject: y\n".to_vec(),
            b"From a  x\n\nFrom b  y\n\n\n\nFrom c\n\n".to_vec(),
            b"From a  x\nX-IMAP: 1 0000000003\nStatus: RO\n\ntext\n\nFrom b\nX-UID: 3\nStatus: O\n\nnew\n\n".to_vec(),
            format!("From a  x\nSubject: s\n{long}X-UID: 9\n\n{long}\n").into_bytes(),
            b"From a\n".to_vec(),
            b"From a\n\n".to_vec(),
            b"From a\nS: 1\n\n\n".to_vec(),
        ];
        for data in cases.iter().chain(&rewrite_cases()) {
            // A one-byte buffer puts every line across reads.
            for cap in [1, 7, 1 << 16] {
                check_scan(data, cap);
            }
        }
    }

    /// `scan` through a buffer of `cap` bytes finds what `parse` + `visible` find.
    fn check_scan(data: &[u8], cap: usize) {
        let raws = parse(data);
        let got = scan(
            &mut std::io::BufReader::with_capacity(cap, data),
            &peek_of(data),
        )
        .expect("scan");
        let text = String::from_utf8_lossy(data);
        assert_eq!(got.len, data.len(), "{text:?}");
        assert_eq!(got.raws.len(), raws.len(), "{text:?}");
        for (i, (a, b)) in got.raws.iter().zip(&raws).enumerate() {
            let what = format!("message {i} of {text:?} (buffer {cap})");
            assert_eq!(
                (a.from_start, a.hdr_start, a.hdr_end, a.end),
                (b.from_start, b.hdr_start, b.hdr_end, b.end),
                "{what}"
            );
            assert_eq!((a.uid, a.imapbase, a.pseudo), (b.uid, b.imapbase, b.pseudo));
            assert_eq!(
                (a.has_status, a.flags, a.old),
                (b.has_status, b.flags, b.old),
                "{what}"
            );
            assert_eq!(
                (&a.keywords, a.content_length, a.date),
                (&b.keywords, b.content_length, b.date),
                "{what}"
            );
            assert_eq!(a.imapbase_rest, b.imapbase_rest, "{what}");
            assert_eq!(got.sizes[i], crlf_size(&visible(data, b)), "{what}");
            assert!(got.from_lines[i].starts(&data[b.from_start..]));
        }
    }

    const PSEUDO: &str = "From MAILER-DAEMON  Sat Nov 28 09:00:00 2026\nDate: Sat, 28 Nov 2026 09:00:00 +0000\nFrom: Mail System Internal Data <MAILER-DAEMON@host>\nSubject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\nX-IMAP: 1700000000 0000000003\nStatus: RO\n\nThis text is part of the internal format of your mail folder.\n\nFrom a  Sat Nov 28 10:00:00 2026\nSubject: x\nX-UID: 3\n\nbody\n\nFrom b  Sat Nov 28 10:01:00 2026\nSubject: y\n\nnew\n\n";

    /// Mboxes for the in-place rewrite: as Postfix and Dovecot leave them, and odd ones.
    fn rewrite_cases() -> Vec<Vec<u8>> {
        // A header larger than the rewrite's buffer, in many lines and in one.
        let many: String = (0..3000)
            .map(|i| format!("X-Trace-{i}: hop {i}\n"))
            .collect();
        let one = format!("X-Long: {}\n", "y".repeat(REWRITE_BUFFER + 100));
        let body: String = (0..2000)
            .map(|i| format!("line {i} of the body\n"))
            .collect();
        let mut cases: Vec<Vec<u8>> = vec![
            BOX.to_vec(),
            PSEUDO.as_bytes().to_vec(),
            b"".to_vec(),
            b"no message here\n".to_vec(),
            b"garbage\nFrom a  x\nSubject: x\n\nbody\nFrom inside\nend".to_vec(),
            // Truncated: in the header, in the From line, in the body.
            b"From a  x\nSubject: x\n\nbody\n\nFrom b  y\nSubject: y".to_vec(),
            b"From a  x\nSubject: x\n\nbody\n\nFrom b".to_vec(),
            b"From a  x\nSubject: x\n\nbody\n\nFrom b  y\nSubject: y\n\nhalf a li".to_vec(),
            b"From a  x\nSubject: x\n\nbody\n".to_vec(),
            b"From a  x\nSubject: x\n\nbody".to_vec(),
            b"From a\n".to_vec(),
            b"From a\n\n".to_vec(),
            b"From a\nS: 1\n\n\n".to_vec(),
            b"From a  x\n\nFrom b  y\n\n\n\nFrom c\n\n".to_vec(),
            b"From a  x\n\nbody only\n\nFrom b  y\nSubject: y\n\n\n\nblank lines\n\n\n".to_vec(),
            // CRLF line ends throughout.
            b"From a  x\r\nSubject: x\r\nX-UID: 3\r\n\r\nbody\r\n\r\nFrom b  y\r\nSubject: y\r\nStatus: O\r\n\r\nz\r\n\r\n".to_vec(),
            b"From a  x\r\nSubject: x\r\n\r\nbody\r\n\r\nFrom b  y\r\nSubject: y\r\n\r\nz".to_vec(),
            // Metadata: Dovecot's, stale, out of order, with continuation lines.
            b"From a  x\nSubject: x\nX-IMAPbase: 1795876603 0000000007 $Junk work\nX-UID: 7         \nStatus: RO\nX-Keywords: work\n\nbody\n\nFrom b  y\nSubject: y\n\nnew\n\n".to_vec(),
            b"From a  x\nSubject: x\nStatus: O\nX-IMAPbase: 1795876603 0000000009\nX-UID: 4\n\nbody\n\nFrom b  y\nStatus: RO\nX-UID: 9\n\nold\n\nFrom c  z\nX-UID: 5\nStatus: R\n\nstale uid\n\n".to_vec(),
            b"From a  x\nX-IMAPbase: 1 0000000002\n\tcontinued\nX-UID: 2\nX-Keywords: a\n b\nStatus: RO\n\tmore\nSubject: x\n\nbody\n\nFrom b  y\nX-UID: 1\n\nlower uid\n".to_vec(),
            b"From a  x\nX-IMAP: 5 0000000001\nSubject: x\n\nnot first, so no pseudo\n\nFrom b  y\nX-IMAP: 6 0000000002\n\nsecond\n\n".to_vec(),
            format!("From a  x\nSubject: big\n{many}\n{body}\nFrom b  y\n{one}Subject: long\n\n{body}\nFrom c  z\nSubject: c\n\n{body}").into_bytes(),
            format!("From a  x\nSubject: big\n{many}{one}").into_bytes(),
        ];
        // Metadata as this rewrite leaves it: unchanged unless messages go or are read;
        // the last message without its final newline, then with it.
        let stable = "From a  x\nSubject: x\nStatus: O\nX-IMAPbase: 5 0000000002\nX-UID: 1\n\nbody\n\nFrom b  y\nStatus: O\nX-UID: 2\n\nend";
        cases.push(stable.as_bytes().to_vec());
        cases.push(format!("{stable}\n\n").into_bytes());
        cases.push(format!("{stable}\n\nFrom c  z\nSubject: new\n\nc\n\n").into_bytes());
        // Many messages, some already with metadata, some seen.
        let mut big = String::from("prefix text\n");
        for i in 0..12 {
            big += &format!("From s{i}  Sat Nov 28 10:00:00 2026\nSubject: {i}\n");
            if i == 0 {
                big += "X-IMAPbase: 1700000000 0000000006\n";
            }
            if i < 6 {
                big += &format!("X-UID: {}\n", i + 1);
            }
            if i % 3 == 0 {
                big += "Status: RO\n";
            }
            big += &format!("\n{}\n", &body[..(i * 97) % body.len()]);
        }
        cases.push(big.into_bytes());
        cases
    }

    /// [`rewrite_in_place`] through a `cap`-byte buffer over a file holding `data` leaves
    /// the file as [`write_back`] of [`rewrite`] does.
    fn check_in_place(dir: &Path, data: &[u8], keep: &[bool], read: &[bool], cap: usize) {
        let raws = parse(data);
        let (validity, last, uids, base, metas) = plan_parts(&raws, read);
        let plan = Plan {
            validity,
            last,
            base_keywords: &base,
            keep,
            meta: &metas,
            uids: &uids,
        };
        let want = rewrite(data, &raws, &plan);
        let open = |p: &Path, write: bool| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .open(p)
                .expect("open")
        };
        let reference = dir.join("reference");
        std::fs::write(&reference, data).expect("write");
        write_back(&open(&reference, true), &reference, data, &want).expect("write_back");
        assert!(std::fs::read(&reference).expect("read") == want);
        let p = dir.join("inbox");
        std::fs::write(&p, data).expect("write");
        // Unchanged: nothing is written, not even by `set_len` (a read-only descriptor).
        let writable = want != data;
        let f = open(&p, writable);
        let found = scan(&mut std::io::BufReader::with_capacity(cap, &f), &|o, b| {
            peek_file(&f, o, b)
        })
        .expect("scan");
        assert_eq!(found.raws.len(), raws.len());
        rewrite_in_place(&f, &found, &plan, cap).expect("rewrite_in_place");
        let got = std::fs::read(&p).expect("read");
        if got != want {
            panic!(
                "buffer {cap}, keep {keep:?}, read {read:?}:\n{:?}\n  got ({} bytes)\n{:?}\n  wanted ({} bytes)\n{:?}",
                String::from_utf8_lossy(data),
                got.len(),
                String::from_utf8_lossy(&got),
                want.len(),
                String::from_utf8_lossy(&want)
            );
        }
    }

    /// The in-place rewrite writes what the whole-buffer one wrote, for every box above,
    /// expunging and marking seen any messages, through buffers small enough to cut lines
    /// and headers anywhere.
    #[test]
    fn rewrite_in_place_as_whole_buffer_rewrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        for data in rewrite_cases() {
            let n = parse(&data).len();
            let mut masks: Vec<(Vec<bool>, Vec<bool>)> = Vec::new();
            let bits = |m: u32| {
                (0..n)
                    .map(|i| m >> (i % 32) & 1 == 1)
                    .collect::<Vec<bool>>()
            };
            if n <= 4 {
                for k in 0..1u32 << n {
                    for r in [0, u32::MAX, 0x5555_5555] {
                        masks.push((bits(k), bits(r)));
                    }
                }
            } else {
                let all = (1u64 << n.min(32)) - 1;
                let all = all as u32;
                for k in [
                    all,
                    0,
                    all - 1,
                    all >> 1,
                    all & !(1 << (n / 2)),
                    0x5555_5555,
                    0xaaaa_aaaa,
                ] {
                    for r in [0, all, 0x3333_3333] {
                        masks.push((bits(k), bits(r)));
                    }
                }
            }
            // Without `read` at all, as `open` calls it.
            masks.push((vec![true; n], Vec::new()));
            let small = data.len() < 20_000;
            for (keep, read) in &masks {
                for cap in [1, 2, 7, 64, 4096, REWRITE_BUFFER] {
                    if cap < 64 && !small {
                        continue;
                    }
                    check_in_place(dir.path(), &data, keep, read, cap);
                }
            }
        }
    }

    /// Rewriting holds about as many bytes as the file grows by, not the file: UIDs added
    /// to messages with large bodies, then an expunge at the front that shifts them all.
    #[test]
    fn rewrite_in_place_memory_is_bounded() {
        let body: String = (0..20_000).map(|i| format!("body line {i}\n")).collect();
        let mut data = Vec::new();
        for i in 0..20 {
            data.extend_from_slice(format!("From s{i}  x\nSubject: {i}\n\n{body}\n").as_bytes());
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        std::fs::write(&p, &data).expect("write");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .expect("open");
        let found = scan_file(&f).expect("scan");
        let (validity, last, uids, base, metas) = plan_parts(&found.raws, &[]);
        let keep = vec![true; 20];
        let plan = Plan {
            validity,
            last,
            base_keywords: &base,
            keep: &keep,
            meta: &metas,
            uids: &uids,
        };
        let done = rewrite_in_place(&f, &found, &plan, REWRITE_BUFFER).expect("rewrite");
        let (queued, moved) = (done.peak_queue, done.written);
        let grown = std::fs::metadata(&p).expect("stat").len() - data.len() as u64;
        assert!(data.len() > 20 * REWRITE_BUFFER && moved > 10 * REWRITE_BUFFER as u64);
        assert!(queued as u64 <= grown, "{queued} queued, grown by {grown}");
        // Expunge the first message: the rest moves back, nothing is queued.
        let mut mb = MboxBox::open(&p, &MboxOptions::default(), None).expect("open");
        assert_eq!(mb.messages.len(), 20);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .expect("open");
        let found = scan_file(&f).expect("scan");
        let (validity, last, uids, base, metas) = plan_parts(&found.raws, &[]);
        let mut keep = vec![true; 20];
        keep[0] = false;
        let plan = Plan {
            validity,
            last,
            base_keywords: &base,
            keep: &keep,
            meta: &metas,
            uids: &uids,
        };
        let done = rewrite_in_place(&f, &found, &plan, REWRITE_BUFFER).expect("rewrite");
        let queued = done.peak_queue;
        assert_eq!(queued, 0);
        mb.resync().expect("resync");
        assert_eq!(
            mb.read(19).expect("read"),
            format!("Subject: 19\n\n{body}").as_bytes()
        );
    }

    /// A message whose header never ends (no empty line: several MB of header lines, then
    /// a 1 MB line cut by the end of the file) is rewritten through the usual buffers,
    /// never held whole, and to the byte as the whole-buffer rewrite: when UIDs are
    /// given, and when the message before it goes and it moves back.
    #[test]
    fn header_without_end_is_streamed() {
        let mut data = b"From a  x\nSubject: a\n\nbody\n\nFrom b  y\nSubject: b\n".to_vec();
        for i in 0..60_000 {
            data.extend_from_slice(format!("X-Line-{i}: {}\n", "z".repeat(60)).as_bytes());
        }
        data.extend_from_slice(b"X-UID: 7\n");
        data.extend_from_slice(format!("X-Last: {}", "w".repeat(1 << 20)).as_bytes());
        assert!(data.len() > 5 << 20);
        let raws = parse(&data);
        assert_eq!(raws.len(), 2);
        assert_eq!(raws[1].hdr_end, data.len());
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        for keep in [[true, true], [false, true]] {
            std::fs::write(&p, &data).expect("write");
            let (validity, last, uids, base, metas) = plan_parts(&raws, &[]);
            let plan = Plan {
                validity,
                last,
                base_keywords: &base,
                keep: &keep,
                meta: &metas,
                uids: &uids,
            };
            let want = rewrite(&data, &raws, &plan);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .expect("open");
            let found = scan_file(&f).expect("scan");
            let done = rewrite_in_place(&f, &found, &plan, REWRITE_BUFFER).expect("rewrite");
            let got = std::fs::read(&p).expect("read");
            assert!(
                got == want,
                "keep {keep:?}: {} bytes, want {}",
                got.len(),
                want.len()
            );
            let grown = (got.len() as u64).saturating_sub(data.len() as u64);
            assert!(
                done.peak_queue as u64 <= grown,
                "{done:?}, grown by {grown}"
            );
            assert!(done.peak_buffer <= 2 * REWRITE_BUFFER, "{done:?}");
            // The old `X-UID` line was dropped, the new one written at the header's end.
            assert_eq!(
                got.windows(7).filter(|w| w == b"X-UID: ").count(),
                keep.iter().filter(|k| **k).count()
            );
        }
    }

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

    /// The owner fast path reads a message as `open` does, only from a regular mbox of
    /// the given owner that is not a symlink.
    #[test]
    fn open_if_owned_only_for_the_owners_mbox() {
        use std::io::Read;
        let me = nix::unistd::geteuid().as_raw();
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        std::fs::write(&p, BOX).expect("write");
        let mb = MboxBox::open(&p, &MboxOptions::default(), None).expect("open");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let m = mb.message(1).expect("message");
        m.open().expect("open").read_to_end(&mut a).expect("read");
        m.open_if_owned(me)
            .expect("own file")
            .expect("reader")
            .read_to_end(&mut b)
            .expect("read");
        assert_eq!(a, b);
        assert!(m.open_if_owned(me + 1).is_none(), "other owner");
        let real = dir.path().join("real");
        std::fs::rename(&p, &real).expect("mv");
        std::os::unix::fs::symlink(&real, &p).expect("ln");
        assert!(m.open_if_owned(me).is_none(), "symlink");
    }

    #[test]
    fn commit_marks_seen_and_reader_streams() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        std::fs::write(&p, BOX).expect("write");
        let mut mb = MboxBox::open(&p, &MboxOptions::default(), None).expect("open");
        // Read through a reader in small pieces: the same bytes as a whole read.
        let mut r = mb.message(0).expect("message").open().expect("reader");
        let mut got = Vec::new();
        let mut piece = [0u8; 3];
        loop {
            let n = std::io::Read::read(&mut r, &mut piece).expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
        }
        drop(r);
        assert_eq!(
            got,
            b"From: bob@example.org\nSubject: one\n\nhello\n.dot line\n"
        );
        let before = std::fs::metadata(&p).expect("stat").len();
        commit(&mut mb, &[], &[0]);
        let text = std::fs::read_to_string(&p).expect("read");
        // `Status: RO` takes 11 of the 50 spaces, as in Dovecot: the file keeps its size.
        let pad = |n: usize| " ".repeat(n);
        assert!(
            text.contains(&format!("X-UID: 1{}\nStatus: RO\n\nhello", pad(39))),
            "{text}"
        );
        assert!(
            text.contains(&format!("Subject: two\nX-UID: 2{}\n\nsecond", pad(50))),
            "{text}"
        );
        assert_eq!(text.len() as u64, before);
        // Seen twice changes nothing; delete the other one.
        let mut again = MboxBox::open(&p, &MboxOptions::default(), None).expect("open");
        commit(&mut again, &[1], &[0]);
        let text = std::fs::read_to_string(&p).expect("read");
        assert_eq!(text.matches("Status: RO").count(), 1, "{text}");
        assert!(!text.contains("second"), "{text}");
    }

    const BOX: &[u8] = b"From bob@example.org  Sat Nov 28 10:00:00 2026\nFrom: bob@example.org\nSubject: one\n\nhello\n.dot line\n\nFrom bob@example.org  Sat Nov 28 10:01:00 2026\nFrom: bob@example.org\nSubject: two\n\nsecond body\n>From quoted\n\n";

    #[test]
    fn sizes_as_dovecot_reports_them() {
        let raws = parse(BOX);
        assert_eq!(raws.len(), 2);
        assert_eq!(crlf_size(&visible(BOX, &raws[0])), 57);
        assert_eq!(crlf_size(&visible(BOX, &raws[1])), 66);
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
    fn symlink_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("t");
        std::fs::write(&target, b"").expect("write");
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let e = deliver_mbox(&link, "a", b"x\n", &MboxOptions::default());
        assert!(matches!(e, Err(MailboxError::Unsafe(..))), "{e:?}");
    }

    #[test]
    fn waits_for_dotlock_and_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        let lock = dir.path().join("inbox.lock");
        std::fs::write(&lock, b"").expect("lock");
        let short = MboxOptions {
            lock_timeout: Duration::from_millis(300),
            ..MboxOptions::default()
        };
        let e = deliver_mbox(&p, "a", b"x\n", &short);
        assert!(matches!(e, Err(MailboxError::Locked(_))), "{e:?}");
        assert!(lock.exists(), "someone else's lock is left alone");
        let l2 = lock.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            std::fs::remove_file(l2).expect("unlock");
        });
        deliver_mbox(&p, "a", b"x\n", &MboxOptions::default()).expect("after unlock");
        t.join().expect("join");
        assert!(!lock.exists());
    }

    #[test]
    fn waits_for_fcntl_lock_of_another_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        std::fs::write(&p, b"").expect("create");
        let ready = dir.path().join("ready");
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import fcntl,time\nf=open('{}','r+')\nfcntl.lockf(f,fcntl.LOCK_EX)\nopen('{}','w').close()\ntime.sleep(0.8)",
                p.display(),
                ready.display()
            ))
            .spawn()
            .expect("python3");
        while !ready.exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let t0 = std::time::Instant::now();
        deliver_mbox(&p, "a", b"x\n", &MboxOptions::default()).expect("deliver");
        assert!(t0.elapsed() >= Duration::from_millis(300), "did not wait");
        let _ = child.wait();
    }

    #[test]
    fn truncated_last_message_and_stray_from_lines() {
        // No final newline, a `From ` line in a body not preceded by an empty line, and
        // text before the first message.
        let data =
            b"garbage\nFrom a  Sat Nov 28 10:00:00 2026\nSubject: x\n\nbody\nFrom inside\nend";
        let raws = parse(data);
        assert_eq!(raws.len(), 1);
        assert_eq!(
            visible(data, &raws[0]),
            b"Subject: x\n\nbody\nFrom inside\nend"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("inbox");
        std::fs::write(&p, data).expect("write");
        deliver_mbox(&p, "b", b"Subject: y\n\nnext\n", &MboxOptions::default()).expect("deliver");
        let mb = MboxBox::open(&p, &MboxOptions::default(), None).expect("open");
        assert_eq!(mb.messages.len(), 2);
        assert_eq!(
            mb.read(0).expect("read"),
            b"Subject: x\n\nbody\nFrom inside\nend\n"
        );
        assert_eq!(mb.read(1).expect("read"), b"Subject: y\n\nnext\n");
        assert!(std::fs::read(&p).expect("read").starts_with(b"garbage\n"));
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
    /// The fast in-place header update writes what the full rewrite writes: every box of
    /// the rewrite tests, each message's flags changed in turn, once each way.
    #[test]
    fn header_update_as_full_rewrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pa, pb) = (dir.path().join("a"), dir.path().join("b"));
        let mut fast_taken = 0;
        for data in rewrite_cases() {
            std::fs::write(&pa, &data).expect("write");
            std::fs::write(&pb, &data).expect("write");
            let o = MboxOptions::default();
            let hint = Some(1_700_000_000);
            let mut a = MboxBox::open(&pa, &o, hint).expect("open");
            let mut b = MboxBox::open(&pb, &o, hint).expect("open");
            assert!(std::fs::read(&pa).expect("a") == std::fs::read(&pb).expect("b"));
            for i in 0..a.messages.len() {
                let m = a.messages[i].clone();
                let kws: Vec<String> = a
                    .base_keywords
                    .split_whitespace()
                    .take(i % 2)
                    .map(String::from)
                    .collect();
                let flags = if i % 3 == 0 {
                    m.flags.union(Flags::SEEN).union(Flags::FLAGGED)
                } else {
                    Flags::DELETED
                };
                let ch: HashMap<u32, MboxFlags> = [(m.uid, (flags, true, kws))].into();
                let before = FAST_UPDATES.with(|c| c.get());
                a.update(&ch, &HashSet::new(), true).expect("update a");
                fast_taken += FAST_UPDATES.with(|c| c.get()) - before;
                b.stamp = None;
                b.update(&ch, &HashSet::new(), true).expect("update b");
                let (ta, tb) = (
                    std::fs::read(&pa).expect("a"),
                    std::fs::read(&pb).expect("b"),
                );
                assert!(
                    ta == tb,
                    "message {i} of {:?}:\n  fast\n{:?}\n  full\n{:?}",
                    String::from_utf8_lossy(&data),
                    String::from_utf8_lossy(&ta),
                    String::from_utf8_lossy(&tb)
                );
                let got: Vec<(u32, Flags, bool)> =
                    a.messages.iter().map(|m| (m.uid, m.flags, m.old)).collect();
                let want: Vec<(u32, Flags, bool)> =
                    b.messages.iter().map(|m| (m.uid, m.flags, m.old)).collect();
                assert_eq!(got, want);
            }
        }
        assert!(fast_taken > 20, "{fast_taken}");
    }
}
