//! Building a queue file (the `cleanup` side) and reading it back (for the queue manager,
//! `postcat`, `mailq`). The layout is Postfix 3.7's, as `postcat -v` shows for a message
//! received by Postfix's smtpd; `man/postern-queue.5` documents it.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::header::{self, header_name};
use super::record::{self, rec_type};

/// DSN NOTIFY bits as Postfix stores them in `notify_flags=` (`global/dsn_mask.h`).
pub const DSN_NOTIFY_NEVER: u32 = 1;
pub const DSN_NOTIFY_SUCCESS: u32 = 2;
pub const DSN_NOTIFY_FAILURE: u32 = 4;
pub const DSN_NOTIFY_DELAY: u32 = 8;
/// DSN RET values as stored in `ret_flags=`.
pub const DSN_RET_FULL: u32 = 1;
pub const DSN_RET_HDRS: u32 = 2;
/// SMTPUTF8 bits in the sixth field of the size record (`global/smtputf8.h`).
pub const SMTPUTF8_FLAG_REQUESTED: u32 = 1;
pub const SMTPUTF8_FLAG_HEADER: u32 = 2;
pub const SMTPUTF8_FLAG_SENDER: u32 = 4;
pub const SMTPUTF8_FLAG_RECIPIENT: u32 = 8;

const NOTIFY_NAMES: [(&str, u32); 4] = [
    ("NEVER", DSN_NOTIFY_NEVER),
    ("SUCCESS", DSN_NOTIFY_SUCCESS),
    ("FAILURE", DSN_NOTIFY_FAILURE),
    ("DELAY", DSN_NOTIFY_DELAY),
];

/// `NOTIFY=SUCCESS,FAILURE` → bits; unknown words are ignored (smtpd has checked the syntax).
pub fn notify_mask(s: &str) -> u32 {
    s.split(',')
        .filter_map(|w| {
            NOTIFY_NAMES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(w.trim()))
                .map(|(_, b)| *b)
        })
        .fold(0, |a, b| a | b)
}

/// Bits → `SUCCESS,FAILURE` (Postfix's `dsn_notify_str()` order); `None` for 0.
pub fn notify_str(mask: u32) -> Option<String> {
    let words: Vec<&str> = NOTIFY_NAMES
        .iter()
        .filter(|(_, b)| mask & b != 0)
        .map(|(n, _)| *n)
        .collect();
    (!words.is_empty()).then(|| words.join(","))
}

/// The size of the fixed-width size record: six `%15ld` fields and five spaces.
const SIZE_RECORD_LEN: usize = 6 * 15 + 5;

/// Everything a queue file holds, as the writer is given it.
pub(super) struct FileSpec<'a> {
    pub queue_id: &'a str,
    pub arrival: SystemTime,
    pub sender: &'a str,
    pub recipients: Vec<FileRecipient<'a>>,
    pub rewrite_local: bool,
    pub envid: Option<&'a str>,
    pub ret: Option<u32>,
    pub encoding: Option<&'static str>,
    pub smtputf8: u32,
    pub attrs: Vec<(&'static str, String)>,
    /// Content lines without line ends.
    pub lines: Vec<Vec<u8>>,
    pub line_length_limit: usize,
    /// When to send a delay warning (`arrival + delay_warning_time`), as Postfix's cleanup
    /// writes it: a fixed-width `W` record the queue manager sets to 0 once warned.
    pub warn_time: Option<u64>,
}

pub(super) struct FileRecipient<'a> {
    pub address: &'a str,
    pub orcpt: String,
    pub notify: u32,
}

fn fixed_size_record(fields: [u64; 6]) -> Vec<u8> {
    let s = fields
        .iter()
        .map(|f| format!("{f:15}"))
        .collect::<Vec<_>>()
        .join(" ");
    debug_assert_eq!(s.len(), SIZE_RECORD_LEN);
    s.into_bytes()
}

fn attr(out: &mut Vec<u8>, name: &str, value: &str) {
    let mut data = Vec::with_capacity(name.len() + value.len() + 1);
    data.extend_from_slice(name.as_bytes());
    data.push(b'=');
    data.extend_from_slice(value.as_bytes());
    record::put(out, rec_type::ATTR, &data);
}

/// Serialise a queue file in Postfix's record layout (called by [`super::cleanup`] only,
/// the one builder of queue files).
pub(super) fn build(spec: &FileSpec<'_>) -> Vec<u8> {
    let content_bytes: usize = spec.lines.iter().map(|l| l.len() + 4).sum();
    let mut out = Vec::with_capacity(1024 + content_bytes);
    // Placeholder size record, rewritten below once the offsets are known. Its length is
    // fixed, so the rewrite cannot move anything.
    record::put(&mut out, rec_type::SIZE, &fixed_size_record([0; 6]));
    let d = spec.arrival.duration_since(UNIX_EPOCH).unwrap_or_default();
    record::put(
        &mut out,
        rec_type::TIME,
        format!("{} {}", d.as_secs(), d.subsec_micros()).as_bytes(),
    );
    if let Some(w) = spec.warn_time {
        record::put(&mut out, rec_type::WARN, format!("{w:15}").as_bytes());
    }
    attr(&mut out, "create_time", &d.as_secs().to_string());
    attr(&mut out, "log_ident", spec.queue_id);
    attr(
        &mut out,
        "rewrite_context",
        if spec.rewrite_local {
            "local"
        } else {
            "remote"
        },
    );
    if let Some(envid) = spec.envid {
        attr(&mut out, "envelope_id", envid);
    }
    if let Some(ret) = spec.ret {
        attr(&mut out, "ret_flags", &ret.to_string());
    }
    record::put(&mut out, rec_type::FROM, spec.sender.as_bytes());
    if let Some(enc) = spec.encoding {
        attr(&mut out, "encoding", enc);
    }
    for (name, value) in &spec.attrs {
        attr(&mut out, name, value);
    }
    let mut qmgr_opts = 0u32;
    for r in &spec.recipients {
        if r.notify != 0 {
            attr(&mut out, "notify_flags", &r.notify.to_string());
            qmgr_opts |= r.notify << 1;
        }
        attr(&mut out, "dsn_orig_rcpt", &r.orcpt);
        record::put(&mut out, rec_type::ORCP, r.address.as_bytes());
        record::put(&mut out, rec_type::RCPT, r.address.as_bytes());
    }
    record::put(&mut out, rec_type::MESG, b"");
    let data_offset = out.len();
    let limit = spec.line_length_limit.max(1);
    for line in &spec.lines {
        let mut rest: &[u8] = line;
        while rest.len() > limit {
            record::put(&mut out, rec_type::CONT, &rest[..limit]);
            rest = &rest[limit..];
        }
        record::put(&mut out, rec_type::NORM, rest);
    }
    let xtra_offset = out.len();
    record::put(&mut out, rec_type::XTRA, b"");
    if let Some(enc) = spec.encoding {
        attr(&mut out, "encoding", enc);
    }
    record::put(&mut out, rec_type::END, b"");
    let seg = (xtra_offset - data_offset) as u64;
    let size = fixed_size_record([
        seg,
        data_offset as u64,
        spec.recipients.len() as u64,
        u64::from(qmgr_opts),
        seg,
        u64::from(spec.smtputf8),
    ]);
    // Type byte and one length byte (95 < 128), then the data.
    out[2..2 + SIZE_RECORD_LEN].copy_from_slice(&size);
    out
}

/// Limits and settings the content pass applies (`cleanup`'s header processing).
pub(crate) struct CleanupRules<'a> {
    pub received: Vec<String>,
    pub add_missing: bool,
    pub queue_id: &'a str,
    pub long_ids: bool,
    pub myhostname: &'a str,
    pub sender: &'a str,
    pub arrival: SystemTime,
    pub header_size_limit: usize,
    pub undisclosed_recipients_header: &'a str,
}

/// What the content pass found.
pub(crate) struct Cleaned {
    pub lines: Vec<Vec<u8>>,
    /// Number of `Received:` headers, ours included.
    pub hops: usize,
    pub header_8bit: bool,
    /// The Message-Id (value) seen or added, for the `message-id=<…>` log line.
    pub message_id: Option<String>,
    /// Headers cut at `header_size_limit`.
    pub truncated_headers: usize,
}

/// Split SMTP content into lines: CRLF or bare LF ends a line (Postfix 3.7's smtpd accepts
/// both); a final line without line end is kept.
pub(crate) fn split_lines(message: &[u8]) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        lines.push(line.to_vec());
        rest = next;
    }
    lines
}

/// Apply what Postfix's smtpd and cleanup do to the content: `From ` lines at the start become
/// `X-Mailbox-Line:` headers; content that starts with white space gets an empty line first
/// (so it is not taken as a continuation of our `Received:`); the `Received:` header is
/// prepended; missing `Message-Id:`, `Date:`, `From:` (and `To:` when
/// `undisclosed_recipients_header` is set) are added at the end of the header block for local
/// clients or with `always_add_missing_headers`; each header is cut at `header_size_limit`.
pub(crate) fn cleanup_content(message: &[u8], rules: &CleanupRules<'_>) -> Cleaned {
    let input = split_lines(message);
    let mut smtpd_lines: Vec<Vec<u8>> = rules
        .received
        .iter()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    let mut first = true;
    for line in input {
        if first {
            let stripped = line.iter().position(|&b| b != b'>').unwrap_or(line.len());
            if line[stripped..].starts_with(b"From ") {
                let mut l = b"X-Mailbox-Line: ".to_vec();
                l.extend_from_slice(&line);
                smtpd_lines.push(l);
                continue;
            }
            first = false;
            if matches!(line.first(), Some(b' ' | b'\t')) {
                smtpd_lines.push(Vec::new());
            }
        }
        smtpd_lines.push(line);
    }

    // Cleanup: walk the header block.
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(smtpd_lines.len() + 4);
    let mut hops = 0;
    let mut header_8bit = false;
    let (mut seen_mid, mut seen_date, mut seen_from, mut seen_to) = (false, false, false, false);
    let mut message_id = None;
    let mut truncated_headers = 0;
    let mut iter = smtpd_lines.into_iter().peekable();
    while let Some(line) = iter.peek() {
        let Some(name) = header_name(line) else {
            break;
        };
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let mut logical: Vec<Vec<u8>> = Vec::new();
        if let Some(l) = iter.next() {
            logical.push(l);
        }
        while let Some(next) = iter.peek() {
            if matches!(next.first(), Some(b' ' | b'\t')) {
                if let Some(l) = iter.next() {
                    logical.push(l);
                }
            } else {
                break;
            }
        }
        // header_size_limit: keep whole lines up to the limit, cut the line that crosses it.
        let mut size = 0usize;
        let mut kept = Vec::with_capacity(logical.len());
        let mut cut = false;
        for l in logical {
            if size + l.len() > rules.header_size_limit {
                let room = rules.header_size_limit.saturating_sub(size);
                if room > 0 {
                    kept.push(l[..room].to_vec());
                }
                cut = true;
                break;
            }
            size += l.len() + 1;
            kept.push(l);
        }
        if cut {
            truncated_headers += 1;
        }
        match name.as_str() {
            "received" => hops += 1,
            "message-id" => {
                seen_mid = true;
                let v = header_value(&kept);
                message_id = Some(v);
            }
            "date" => seen_date = true,
            "from" => seen_from = true,
            "to" | "cc" | "bcc" => seen_to = true,
            _ => {}
        }
        if kept.iter().any(|l| !l.is_ascii()) {
            header_8bit = true;
        }
        out.extend(kept);
    }
    if rules.add_missing {
        if !seen_mid {
            let mid = if rules.long_ids {
                format!("{}@{}", rules.queue_id, rules.myhostname)
            } else {
                format!(
                    "{}.{}@{}",
                    header::message_id_stamp(rules.arrival),
                    rules.queue_id,
                    rules.myhostname
                )
            };
            out.push(format!("Message-Id: <{mid}>").into_bytes());
            message_id = Some(format!("<{mid}>"));
        }
        if !seen_date {
            out.push(format!("Date: {}", header::mail_date(rules.arrival)).into_bytes());
        }
        if !seen_from {
            let from = if rules.sender.is_empty() {
                "MAILER-DAEMON".to_string()
            } else {
                header::quote_822_local(rules.sender)
            };
            out.push(format!("From: {from}").into_bytes());
        }
        if !seen_to && !rules.undisclosed_recipients_header.is_empty() {
            out.push(rules.undisclosed_recipients_header.as_bytes().to_vec());
        }
    }
    // XXX Like Postfix's MIME engine, a non-header line ends the header block without a
    // separator being inserted.
    out.extend(iter);
    Cleaned {
        lines: out,
        hops,
        header_8bit,
        message_id,
        truncated_headers,
    }
}

fn header_value(lines: &[Vec<u8>]) -> String {
    let joined: Vec<u8> = lines.join(&b" "[..]);
    let s = String::from_utf8_lossy(&joined);
    match s.split_once(':') {
        Some((_, v)) => v.split_whitespace().collect::<Vec<_>>().join(" "),
        None => String::new(),
    }
}

/// A recipient as stored in a queue file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecipient {
    /// The recipient address (Postfix's internal, unquoted form).
    pub address: String,
    /// The `O` record: the address before any rewriting.
    pub original: Option<String>,
    /// `dsn_orig_rcpt=`: the DSN ORCPT, `rfc822;addr` (xtext-decoded).
    pub orcpt: Option<String>,
    /// `notify_flags=` as bits (`DSN_NOTIFY_*`), 0 when NOTIFY was not given.
    pub notify_flags: u32,
    /// Whether the queue manager has marked this recipient done (`D` record).
    pub done: bool,
    /// File offset of the `R`/`D` record's type byte, for [`mark_recipient_done`].
    pub offset: u64,
}

impl QueuedRecipient {
    /// NOTIFY as the client wrote it, canonical order: `SUCCESS,FAILURE`.
    pub fn notify(&self) -> Option<String> {
        notify_str(self.notify_flags)
    }
}

/// A queue file as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// From the file name (or `log_ident=` when the name is not an ID).
    pub queue_id: String,
    /// Arrival time (the `T` record).
    pub arrival: SystemTime,
    /// Envelope sender, `""` for `<>`.
    pub sender: String,
    pub recipients: Vec<QueuedRecipient>,
    /// `envelope_id=` (DSN ENVID, xtext-decoded).
    pub envid: Option<String>,
    /// `ret_flags=` (`DSN_RET_FULL`/`DSN_RET_HDRS`), 0 when RET was not given.
    pub ret_flags: u32,
    /// `encoding=`: `7bit` or `8bit` (from BODY=), if given.
    pub encoding: Option<String>,
    /// SMTPUTF8 flags from the size record (`SMTPUTF8_FLAG_*`).
    pub smtputf8: u32,
    /// `rewrite_context=`: `local` or `remote`.
    pub rewrite_context: Option<String>,
    /// Every named attribute of the envelope in file order (client info for logs:
    /// `client_name`, `client_address`, `client_port`, `helo_name`, `protocol_name`,
    /// `sasl_method`, `sasl_username`, `log_*`, …; the per-recipient ones excluded).
    pub attributes: Vec<(String, String)>,
    /// Message content with LF line ends, as a local delivery agent writes it.
    pub content: Vec<u8>,
    /// The size record: message segment size, data offset, recipient count, qmgr options,
    /// content length.
    pub message_size: u64,
    pub data_offset: u64,
    pub rcpt_count: u64,
    pub qmgr_opts: u64,
}

impl QueuedMessage {
    /// A named envelope attribute (last one wins, as in Postfix).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Recipients not yet done.
    pub fn pending(&self) -> impl Iterator<Item = &QueuedRecipient> {
        self.recipients.iter().filter(|r| !r.done)
    }
}

/// Why a queue file could not be read.
#[derive(Debug)]
pub enum QueueFileError {
    /// Still being written, or cut short by a crash: mode without the owner-execute bit
    /// (Postfix's "not ready" convention), or no end record. The queue manager skips such a
    /// file; `postsuper` removes it when it is old.
    Incomplete(String),
    /// Not a queue file the reader understands; the queue manager moves it to `corrupt/`.
    Corrupt(String),
    Io(std::io::Error),
}

impl fmt::Display for QueueFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueFileError::Incomplete(s) => write!(f, "incomplete queue file: {s}"),
            QueueFileError::Corrupt(s) => write!(f, "corrupt queue file: {s}"),
            QueueFileError::Io(e) => write!(f, "queue file: {e}"),
        }
    }
}

impl std::error::Error for QueueFileError {}

impl From<std::io::Error> for QueueFileError {
    fn from(e: std::io::Error) -> Self {
        QueueFileError::Io(e)
    }
}

/// Read a queue file. Files that are not ready (mode without `u+x`) or have no end record are
/// [`QueueFileError::Incomplete`].
pub fn read_queue_file(path: &Path) -> Result<QueuedMessage, QueueFileError> {
    read_open_queue_file(File::open(path)?, path)
}

/// [`read_queue_file`] for a file already open (opened relative to its directory by a
/// queue scan, [`super::store::QueueDir`]); `path` names it in errors and its last
/// component is the queue ID. One `fstat` and one `read` of the file's size.
pub fn read_open_queue_file(f: File, path: &Path) -> Result<QueuedMessage, QueueFileError> {
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(QueueFileError::Corrupt(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    if meta.permissions().mode() & 0o100 == 0 {
        return Err(QueueFileError::Incomplete(format!(
            "{}: not ready (mode {:o})",
            path.display(),
            meta.permissions().mode() & 0o7777
        )));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    // Up to the size just read: no second fstat and seek for a size hint.
    f.take(meta.len()).read_to_end(&mut buf)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    parse(&buf, name).map_err(|e| match e {
        QueueFileError::Incomplete(s) => {
            QueueFileError::Incomplete(format!("{}: {s}", path.display()))
        }
        QueueFileError::Corrupt(s) => QueueFileError::Corrupt(format!("{}: {s}", path.display())),
        other => other,
    })
}

fn utf8(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// One record of a queue file as [`walk`] reports it, after checking it.
enum Item<'a> {
    Size {
        message_size: u64,
        data_offset: u64,
        rcpt_count: u64,
        qmgr_opts: u64,
        smtputf8: u32,
    },
    Time(SystemTime),
    From(&'a [u8]),
    Attr(&'a [u8]),
    Orcp(&'a [u8]),
    Rcpt {
        data: &'a [u8],
        done: bool,
        offset: u64,
    },
    /// A content record: `N` (`cont` false) or `L` (a line continued in the next record).
    Content {
        data: &'a [u8],
        cont: bool,
    },
    /// The `X` record ending the content.
    Xtra,
}

/// The numbers of a size, time or pointer record (`Cow`: no copy when, as always, it is
/// ASCII).
fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// The one reading of a queue file's records (for [`parse`] and [`summary`], so both accept
/// and refuse the same files): the record structure, the segments and the record types
/// each allows, the size, time and pointer records; `on` gets each record it accepts, in
/// file order. The errors are [`parse`]'s.
fn walk<'a>(buf: &'a [u8], mut on: impl FnMut(Item<'a>)) -> Result<(), QueueFileError> {
    #[derive(PartialEq)]
    enum Seg {
        Envelope,
        Content,
        Extracted,
    }
    let mut seg = Seg::Envelope;
    let mut seen_size = false;
    let mut seen_sender = false;
    let mut seen_end = false;
    let zero_pointer = |data: &[u8]| {
        // Postfix's cleanup reserves pointer records for later edits; a zero pointer
        // means "nothing here". XXX Non-zero pointers (header/milter edits made by a real
        // Postfix) are not followed.
        let target = text(data).trim().parse::<u64>().unwrap_or(1);
        if target != 0 {
            return Err(QueueFileError::Corrupt(
                "pointer records (Postfix edits) are not supported".into(),
            ));
        }
        Ok(())
    };
    for rec in record::records(buf) {
        let rec = rec.map_err(|e| match e {
            record::RecordError::Truncated { .. } => QueueFileError::Incomplete(e.to_string()),
            record::RecordError::BadLength { .. } => QueueFileError::Corrupt(e.to_string()),
        })?;
        if seen_end {
            return Err(QueueFileError::Corrupt(format!(
                "data after end record at offset {}",
                rec.offset
            )));
        }
        if !seen_size && rec.kind != rec_type::SIZE {
            return Err(QueueFileError::Corrupt(
                "first record is not a size record".into(),
            ));
        }
        match (&seg, rec.kind) {
            (Seg::Envelope, rec_type::SIZE) => {
                // Every field a number; the first six kept (no vector per file).
                let mut fields = [0u64; 6];
                let mut n = 0;
                for f in text(rec.data).split_whitespace() {
                    let v = f
                        .parse::<u64>()
                        .map_err(|_| QueueFileError::Corrupt("bad size record".into()))?;
                    if n < fields.len() {
                        fields[n] = v;
                    }
                    n += 1;
                }
                if n < 3 {
                    return Err(QueueFileError::Corrupt("short size record".into()));
                }
                on(Item::Size {
                    message_size: fields[0],
                    data_offset: fields[1],
                    rcpt_count: fields[2],
                    qmgr_opts: fields[3],
                    smtputf8: fields[5] as u32,
                });
                seen_size = true;
            }
            (Seg::Envelope, rec_type::TIME) => {
                let s = text(rec.data);
                let mut it = s.split_whitespace();
                let secs = it.next().and_then(|v| v.parse::<u64>().ok());
                let usecs = it.next().and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
                // `checked_add`: seconds past what a SystemTime holds are as bad as no
                // number (`UNIX_EPOCH + …` panicked on them, found by fuzzing).
                match secs.and_then(|secs| {
                    UNIX_EPOCH.checked_add(Duration::new(secs, usecs.min(999_999) * 1000))
                }) {
                    Some(t) => on(Item::Time(t)),
                    None => return Err(QueueFileError::Corrupt("bad time record".into())),
                }
            }
            (Seg::Envelope, rec_type::FROM) => {
                on(Item::From(rec.data));
                seen_sender = true;
            }
            (Seg::Envelope, rec_type::ATTR) => on(Item::Attr(rec.data)),
            (Seg::Envelope, rec_type::ORCP) => on(Item::Orcp(rec.data)),
            (Seg::Envelope, rec_type::RCPT | rec_type::DONE) => on(Item::Rcpt {
                data: rec.data,
                done: rec.kind == rec_type::DONE,
                offset: rec.offset,
            }),
            (Seg::Envelope, rec_type::PTR) => zero_pointer(rec.data)?,
            (Seg::Envelope, rec_type::WARN | rec_type::FULL | rec_type::FLGS) => {}
            (Seg::Envelope, rec_type::MESG) => seg = Seg::Content,
            (Seg::Content, rec_type::NORM | rec_type::CONT) => on(Item::Content {
                data: rec.data,
                cont: rec.kind == rec_type::CONT,
            }),
            (Seg::Content, rec_type::PTR) => zero_pointer(rec.data)?,
            (Seg::Content, rec_type::XTRA) => {
                on(Item::Xtra);
                seg = Seg::Extracted;
            }
            (Seg::Extracted, rec_type::END) => seen_end = true,
            (Seg::Extracted, _) => {}
            (_, kind) => {
                return Err(QueueFileError::Corrupt(format!(
                    "unexpected record type {:?} at offset {}",
                    kind as char, rec.offset
                )));
            }
        }
    }
    if !seen_end {
        return Err(QueueFileError::Incomplete("no end record".into()));
    }
    if !seen_sender {
        return Err(QueueFileError::Corrupt("no sender record".into()));
    }
    Ok(())
}

/// Parse queue file bytes; `name` is the file name (the queue ID).
pub fn parse(buf: &[u8], name: &str) -> Result<QueuedMessage, QueueFileError> {
    let mut msg = QueuedMessage {
        queue_id: name.to_string(),
        arrival: UNIX_EPOCH,
        sender: String::new(),
        recipients: Vec::new(),
        envid: None,
        ret_flags: 0,
        encoding: None,
        smtputf8: 0,
        rewrite_context: None,
        attributes: Vec::new(),
        content: Vec::new(),
        message_size: 0,
        data_offset: 0,
        rcpt_count: 0,
        qmgr_opts: 0,
    };
    let mut pending_orig: Option<String> = None;
    let mut pending_orcpt: Option<String> = None;
    let mut pending_notify = 0u32;
    let mut prev_cont = false;
    walk(buf, |item| match item {
        Item::Size {
            message_size,
            data_offset,
            rcpt_count,
            qmgr_opts,
            smtputf8,
        } => {
            msg.message_size = message_size;
            msg.data_offset = data_offset;
            msg.rcpt_count = rcpt_count;
            msg.qmgr_opts = qmgr_opts;
            msg.smtputf8 = smtputf8;
        }
        Item::Time(t) => msg.arrival = t,
        Item::From(data) => msg.sender = utf8(data),
        Item::Attr(data) => {
            let s = utf8(data);
            let (n, v) = s.split_once('=').unwrap_or((s.as_str(), ""));
            match n {
                "notify_flags" => pending_notify = v.parse().unwrap_or(0),
                "dsn_orig_rcpt" => pending_orcpt = Some(v.to_string()),
                "envelope_id" => msg.envid = Some(v.to_string()),
                "ret_flags" => msg.ret_flags = v.parse().unwrap_or(0),
                "encoding" => msg.encoding = Some(v.to_string()),
                "rewrite_context" => msg.rewrite_context = Some(v.to_string()),
                _ => msg.attributes.push((n.to_string(), v.to_string())),
            }
        }
        Item::Orcp(data) => pending_orig = Some(utf8(data)),
        Item::Rcpt { data, done, offset } => msg.recipients.push(QueuedRecipient {
            address: utf8(data),
            original: pending_orig.take(),
            orcpt: pending_orcpt.take(),
            notify_flags: std::mem::take(&mut pending_notify),
            done,
            offset,
        }),
        Item::Content { data, cont } => {
            msg.content.extend_from_slice(data);
            if !cont {
                msg.content.push(b'\n');
            }
            prev_cont = cont;
        }
        Item::Xtra => {
            if prev_cont {
                msg.content.push(b'\n');
            }
        }
    })?;
    if msg.queue_id.is_empty()
        && let Some(id) = msg.attr("log_ident")
    {
        msg.queue_id = id.to_string();
    }
    Ok(msg)
}

/// What a queue listing shows of a queue file (`mailq`, `postqueue -j`), borrowed from its
/// bytes: nothing of the content, the attributes or the done recipients is copied.
#[derive(Debug, PartialEq)]
pub struct Summary<'a> {
    /// The size record's message segment size (0 when it says none).
    pub message_size: u64,
    pub arrival: SystemTime,
    /// Envelope sender, `""` for `<>`.
    pub sender: std::borrow::Cow<'a, str>,
    /// The recipients not yet done, in file order.
    pub pending: Vec<std::borrow::Cow<'a, str>>,
}

/// [`parse`] for a listing: the same files accepted and refused (one [`walk`]), the same
/// values for what [`Summary`] holds, a fraction of the allocations (issue 18: `mailq`
/// on 100,000 messages spent a fifth of its time in the allocator for the attributes and
/// the content it never showed).
pub fn summary(buf: &[u8]) -> Result<Summary<'_>, QueueFileError> {
    let mut s = Summary {
        message_size: 0,
        arrival: UNIX_EPOCH,
        sender: std::borrow::Cow::Borrowed(""),
        pending: Vec::new(),
    };
    walk(buf, |item| match item {
        Item::Size { message_size, .. } => s.message_size = message_size,
        Item::Time(t) => s.arrival = t,
        Item::From(data) => s.sender = String::from_utf8_lossy(data),
        Item::Rcpt {
            data, done: false, ..
        } => s.pending.push(String::from_utf8_lossy(data)),
        _ => {}
    })?;
    Ok(s)
}

/// Mark one recipient delivered, in place: the `R` type byte at `offset` becomes `D`, as
/// Postfix's queue manager does, then the file is synced (fdatasync), so a restart after a
/// crash does not deliver to that recipient again.
/// The delay-warning record of a queue file: `(offset, time)`, time 0 once warned.
pub fn warn_record(path: &Path) -> Option<(u64, u64)> {
    let buf = std::fs::read(path).ok()?;
    for rec in record::records(&buf) {
        let rec = rec.ok()?;
        match rec.kind {
            rec_type::WARN => {
                let t = std::str::from_utf8(rec.data).ok()?.trim().parse().ok()?;
                return Some((rec.offset, t));
            }
            rec_type::MESG => return None,
            _ => {}
        }
    }
    None
}

/// Set the delay-warning record at `offset` to 0 (warning sent), in place, as Postfix's
/// queue manager does.
pub fn clear_warn_record(path: &Path, offset: u64) -> Result<(), QueueFileError> {
    let buf = std::fs::read(path)?;
    let rec = record::records(&buf[offset as usize..])
        .next()
        .and_then(|r| r.ok())
        .filter(|r| r.kind == rec_type::WARN)
        .ok_or_else(|| {
            QueueFileError::Corrupt(format!(
                "{}: offset {offset} holds no warning record",
                path.display()
            ))
        })?;
    let data_at = offset + (rec.data.as_ptr() as u64 - buf[offset as usize..].as_ptr() as u64);
    let len = rec.data.len();
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    std::os::unix::fs::FileExt::write_all_at(&f, format!("{:>len$}", 0).as_bytes(), data_at)?;
    f.sync_data()?;
    Ok(())
}

pub fn mark_recipient_done(path: &Path, offset: u64) -> Result<(), QueueFileError> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, offset)?;
    match byte[0] {
        rec_type::DONE => return Ok(()),
        rec_type::RCPT => {}
        other => {
            return Err(QueueFileError::Corrupt(format!(
                "{}: offset {offset} holds record type {:?}, not a recipient",
                path.display(),
                other as char
            )));
        }
    }
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(&[rec_type::DONE])?;
    f.sync_data()?;
    Ok(())
}
