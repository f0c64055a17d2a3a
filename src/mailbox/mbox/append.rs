//! Writing new messages at the end of an mbox: Postfix's `local(8)` delivery
//! ([`deliver_mbox`]: `>From ` quoting, no metadata; [`deliver_mbox_batch`]: several such
//! deliveries under one hold of the locks and one fsync, each with its own result), Dovecot's IMAP APPEND and COPY
//! ([`append`]: unquoted, with `Content-Length:` and the metadata, UIDs given first), and
//! moving a whole mbox's messages into another ([`move_all`]). Each is done under the write
//! locks, fsynced, and the file truncated back to its old size on failure.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::SystemTime;

use crate::mailbox::MailboxError;
use crate::mailbox::flags::Flags;
use crate::sys::time::asctime;

use super::meta::{
    HEADER_PADDING, HIDDEN, Meta, assign_uids, imapbase_line, keyword_list, meta_lines,
};
use super::rewrite::{Plan, REWRITE_BUFFER, rewrite_in_place};
use super::scan::{header_name, scan_file};
use super::{MboxOptions, open_locked, touch_if_same};

/// `asctime(3)` of the local time, as Postfix puts it in the `From ` line.
pub(super) fn asctime_now() -> String {
    asctime(SystemTime::now())
}

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

/// One message of a group commit ([`deliver_mbox_batch`]): the `From ` line's sender, the
/// message, and the size the mailbox may reach with it (`mailbox_size_limit`; 0: none).
pub struct MboxDelivery<'a> {
    pub from_line_sender: &'a str,
    pub message: &'a [u8],
    pub size_limit: u64,
}

/// Group commit of local deliveries to one mbox: every message of `batch` appended, in
/// order, under one hold of the locks, then one fsync for them all, as the queue writer
/// commits queue files (issue 18). Each message gets its own result, and a failed one
/// takes no other with it: one that would pass its `size_limit` (the box's size counted
/// with the messages appended before it) is refused with `EFBIG` and not written, one whose
/// write fails is cut off again (the file truncated back to where it began) and the next
/// ones go on after it. Only the fsync is shared: when it fails, every message of the batch
/// is cut off and fails with its error, so that none is reported delivered unless it is on
/// stable storage. When the box cannot be opened or locked, every message fails alike.
/// With one message this is [`deliver_mbox`] with the size check made under the lock.
pub fn deliver_mbox_batch(
    path: &Path,
    batch: &[MboxDelivery<'_>],
    opts: &MboxOptions,
) -> Vec<Result<(), MailboxError>> {
    let all = |e: MailboxError| batch.iter().map(|_| Err(e.duplicate())).collect();
    if batch.is_empty() {
        return Vec::new();
    }
    let locked = match open_locked(path, opts, true) {
        Ok(l) => l,
        Err(e) => return all(e),
    };
    let file = &locked.file;
    let start = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return all(MailboxError::io(path, e)),
    };
    let mut len = start;
    let mut out = Vec::with_capacity(batch.len());
    for d in batch {
        let mut data = Vec::new();
        // As deliver_mbox: a box whose last message lacks its final newline or the empty
        // separator line gets them first.
        if len > 0 {
            let n = len.min(2) as usize;
            let mut tail = [0u8; 2];
            if let Err(e) = file.read_exact_at(&mut tail[..n], len - n as u64) {
                out.push(Err(MailboxError::io(path, e)));
                continue;
            }
            let tail = &tail[..n];
            if !tail.ends_with(b"\n") {
                data.extend_from_slice(b"\n\n");
            } else if tail != b"\n\n" && n == 2 {
                data.push(b'\n');
            }
        }
        data.extend_from_slice(&format_for_append(d.from_line_sender, d.message));
        if d.size_limit > 0 && len.saturating_add(data.len() as u64) > d.size_limit {
            out.push(Err(MailboxError::io(
                path,
                std::io::Error::from_raw_os_error(libc::EFBIG),
            )));
            continue;
        }
        match file.write_all_at(&data, len) {
            Ok(()) => {
                len += data.len() as u64;
                out.push(Ok(()));
            }
            Err(e) => {
                let _ = file.set_len(len);
                out.push(Err(MailboxError::io(path, e)));
            }
        }
    }
    if len == start {
        return out;
    }
    if let Err(e) = file.sync_all() {
        let _ = file.set_len(start);
        let _ = file.sync_all();
        let e = MailboxError::io(path, e);
        for r in &mut out {
            if r.is_ok() {
                *r = Err(e.duplicate());
            }
        }
    }
    out
}

/// The `From ` line date as Dovecot writes it for a saved message (`mbox_from_create()`:
/// local time, the day in two digits): `Wed Jan 01 10:00:00 2020`.
pub(super) fn dovecot_from_date(t: i64) -> String {
    crate::sys::time::ctime_text(t, true)
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
pub(super) fn format_saved(m: &MboxSave, base: Option<&str>, uid: u32) -> Vec<u8> {
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
        let base = (!has_messages && k == 0)
            .then(|| imapbase_line(false, validity, new_last, &base_keywords));
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
