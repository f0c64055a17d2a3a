//! `mailq` (= `postqueue -p`, `sendmail -bp`) and `postqueue -j`: the queue listings, with
//! Postfix 3.7's output.
//!
//! `mailq` lists `maildrop/`, `active/` (`*` after the ID), `incoming/`, `deferred/` and
//! `hold/` (`!`) in that order, as Postfix 3.7's showq does, each message as `ID SIZE
//! ARRIVAL SENDER`, then the recipients of its defer log (for a message in any queue) with
//! their reasons (right-aligned in 78 columns, each printed once for consecutive recipients
//! sharing it), then the recipients still pending that the log does not name, after a
//! `(reason unavailable)` line when the log named any; `-- N Kbytes in M Requests.` at the
//! end (the sum of the message sizes shown, as Postfix 3.7 counts), or `Mail queue is
//! empty`. Files are listed in directory order, as Postfix's showq does.
//!
//! `postqueue -j` prints one JSON object per message as Postfix 3.7 does (`queue_name`,
//! `queue_id`, `arrival_time`, `message_size`, `forced_expire`, `sender`, `recipients` with
//! `address` and, for a recipient named in the defer log, `delay_reason`).
//!
//! Checked byte for byte against the real Postfix 3.7.11 (`compat-fixtures/mailq*`, recorded
//! by `scripts/regen-mailq-fixtures`). `mailq` reads the queue directly (Postfix asks the
//! `showq` service), so it needs read access to the queue (root or `mail_owner`).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::postqueue::load;
use crate::config::postfix::PostfixConfig;
use crate::qmgr::defer::{self, DeferRef};
use crate::queue::file::{Summary, summary};
use crate::queue::header::quote_822_local_cow;
use crate::queue::store::QueueDir;

pub(super) use crate::sys::time::asctime;

/// The queues `mailq` and `postqueue -j` list, in their order, with whether each is hashed
/// and the mark `mailq` puts after the ID.
const LISTED: [(&str, bool, &str); 5] = [
    ("maildrop", false, ""),
    ("active", true, "*"),
    ("incoming", true, ""),
    ("deferred", true, ""),
    ("hold", true, "!"),
];

/// One listed message, borrowed from the reader's buffers: what the listing shows of its
/// queue file ([`summary`]), the size `mailq` shows (the content size the size record holds,
/// the file's size for a file without one), its defer log's entries.
struct Listed<'a> {
    id: &'a str,
    msg: Summary<'a>,
    size: u64,
    deferred: Vec<DeferRef<'a>>,
}

/// Reads the messages of a queue for a listing: each directory (and each `defer/H/`
/// directory of the defer logs) opened once and its files opened relative to it, one
/// `fstat` and one `read` per queue file into a buffer kept from file to file, only the
/// envelope's sender, arrival, size and pending recipients taken from it
/// ([`crate::queue::file::summary`]), the defer log read into another kept buffer and its
/// entries borrowed from it (issue 18: 13 system calls per message at first, 8 now, no
/// path walks, and a handful of allocations per message instead of some fifty).
struct Reader<'a> {
    queue_directory: &'a Path,
    /// `defer/H/` by the ID's first byte (`None`: cannot be opened).
    defer_dirs: HashMap<u8, Option<QueueDir>>,
    buf: Vec<u8>,
    text: String,
}

impl<'a> Reader<'a> {
    fn new(queue_directory: &'a Path) -> Self {
        Reader {
            queue_directory,
            defer_dirs: HashMap::new(),
            buf: Vec::with_capacity(64 * 1024),
            text: String::with_capacity(4096),
        }
    }

    /// The messages of the queue directory `dir` (and of its subdirectories one level
    /// down, when `descend`), in directory order as [`crate::queue::store::scan_dir`] lists
    /// them, each read as its directory's entry comes (issue 18: no list of every file of
    /// the queue is built first; that list was half of `mailq`'s peak memory on 100,000
    /// messages); files that are not complete queue files (not regular, without `u+x`, or
    /// not read by [`summary`]) are left out.
    fn each(
        &mut self,
        dir: &Path,
        descend: bool,
        f: &mut dyn FnMut(Listed<'_>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        // Opened for the first queue file met, once.
        let mut qd: Option<Option<QueueDir>> = None;
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(id) = name.to_str() else {
                continue;
            };
            if descend && e.file_type().is_ok_and(|t| t.is_dir()) {
                self.each(&e.path(), false, f)?;
                continue;
            }
            if crate::queue::QueueId::parse(id).is_none() {
                continue;
            }
            let Some(qd) = qd.get_or_insert_with(|| QueueDir::open(dir).ok()) else {
                return Ok(());
            };
            self.one(qd, id, f)?;
        }
        Ok(())
    }

    /// The queue file `id` of the open directory `qd`, handed to `f` when it is complete.
    fn one(
        &mut self,
        qd: &QueueDir,
        id: &str,
        f: &mut dyn FnMut(Listed<'_>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let Reader {
            queue_directory,
            defer_dirs,
            buf,
            text,
        } = self;
        let Ok(file) = qd.open_file(id) else {
            return Ok(());
        };
        let Ok(meta) = file.metadata() else {
            return Ok(());
        };
        // As `queue::file::read_open_queue_file`: a regular file, marked complete.
        if !meta.is_file() || meta.permissions().mode() & 0o100 == 0 {
            return Ok(());
        }
        buf.clear();
        buf.reserve(meta.len() as usize);
        // Up to the size just read: one read, no size probe.
        if file.take(meta.len()).read_to_end(buf).is_err() {
            return Ok(());
        }
        let Ok(msg) = summary(buf) else {
            return Ok(());
        };
        let size = if msg.message_size > 0 {
            msg.message_size
        } else {
            meta.len()
        };
        let deferred = if read_defer_log(queue_directory, defer_dirs, text, id) {
            defer::log_entries(text).collect()
        } else {
            Vec::new()
        };
        f(Listed {
            id,
            msg,
            size,
            deferred,
        })
    }
}

/// Read the defer log of `id` into `text` ([`defer::read_log`]'s file, opened relative to
/// its `defer/H/`, opened once); false when there is none or it cannot be read as text.
fn read_defer_log(
    queue_directory: &Path,
    defer_dirs: &mut HashMap<u8, Option<QueueDir>>,
    text: &mut String,
    id: &str,
) -> bool {
    let Some(&first) = id.as_bytes().first() else {
        return false;
    };
    let qd = defer_dirs.entry(first).or_insert_with(|| {
        let log = defer::log_path(queue_directory, id);
        log.parent().and_then(|dir| QueueDir::open(dir).ok())
    });
    let Some(qd) = qd else {
        return false;
    };
    let Ok(file) = qd.open_file(id) else {
        return false;
    };
    text.clear();
    // Into the buffer kept between messages: no size probe per file.
    file.take(u64::MAX).read_to_string(text).is_ok()
}

/// `n` spaces.
fn pad(line: &mut Vec<u8>, n: usize) {
    line.resize(line.len() + n, b' ');
}

/// `s` then spaces up to `width` characters (`{:<width$}`).
fn left(line: &mut Vec<u8>, s: &str, width: usize) {
    line.extend_from_slice(s.as_bytes());
    pad(line, width.saturating_sub(s.chars().count()));
}

/// `v` right-aligned in `width` columns (`{:>width$}`).
fn right_u64(line: &mut Vec<u8>, v: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = v;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    pad(line, width.saturating_sub(digits.len() - i));
    line.extend_from_slice(&digits[i..]);
}

/// The first `width` characters of `s`, padded to `width` (`{:<width$.width$}`).
fn left_cut(line: &mut Vec<u8>, s: &str, width: usize) {
    let mut n = 0;
    for c in s.chars().take(width) {
        line.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        n += 1;
    }
    pad(line, width - n);
}

/// One recipient line of a `mailq` listing, after a `(reason)` line where its reason (empty:
/// none) differs from the previous recipient's, as Postfix's postqueue (`showq_compat.c`)
/// does: the defer log's recipients come first with their reasons, then the pending
/// recipients it does not name, without one, so `(reason unavailable)` is printed where the
/// reasons end (and never for a message without a defer log).
fn write_recipient<'a>(
    line: &mut Vec<u8>,
    last_reason: &mut &'a str,
    reason: &'a str,
    recipient: &str,
) {
    if reason != *last_reason {
        let show = if reason.is_empty() {
            "reason unavailable"
        } else {
            reason
        };
        pad(line, 76usize.saturating_sub(show.len()));
        line.push(b'(');
        line.extend_from_slice(show.as_bytes());
        line.extend_from_slice(b")\n");
        *last_reason = reason;
    }
    // `{:<11} {:>7} {:<20} {}` of three empty strings and the recipient.
    pad(line, 11 + 1 + 7 + 1 + 20 + 1);
    line.extend_from_slice(recipient.as_bytes());
    line.push(b'\n');
}

/// Whether `address` is one of a defer log's recipients: a look along the entries (one to
/// three, nearly always), a set built once for a message whose log names many.
struct InLog<'a> {
    entries: &'a [DeferRef<'a>],
    set: Option<HashSet<&'a str>>,
}

impl<'a> InLog<'a> {
    fn new(entries: &'a [DeferRef<'a>]) -> Self {
        let set = (entries.len() > 16).then(|| entries.iter().map(|e| e.recipient).collect());
        InLog { entries, set }
    }

    fn contains(&self, address: &str) -> bool {
        match &self.set {
            Some(s) => s.contains(address),
            None => self.entries.iter().any(|e| e.recipient == address),
        }
    }
}

/// Write the `mailq` listing of the queue under `queue_directory` to `out`, a queue at a
/// time (so the listing of a large queue starts before all of it is read), a message's
/// lines in one write to `out`; stops at the first write error (the reader went away).
pub fn write_queue(queue_directory: &Path, out: &mut dyn Write) -> std::io::Result<()> {
    let mut count = 0usize;
    let mut total: u64 = 0;
    let mut reader = Reader::new(queue_directory);
    let mut line: Vec<u8> = Vec::with_capacity(1024);
    for (queue, hashed, status) in LISTED {
        reader.each(&queue_directory.join(queue), hashed, &mut |m| {
            line.clear();
            if count == 0 {
                left(&mut line, "-Queue ID-", 11);
                line.push(b' ');
                left(&mut line, "--Size--", 7);
                line.push(b' ');
                left(&mut line, "----Arrival Time----", 20);
                line.extend_from_slice(b" -Sender/Recipient-------\n");
            } else {
                line.push(b'\n');
            }
            count += 1;
            total += m.size;
            // `{:<11} {:>7} {:<20.20} {}` of ID and mark, size, arrival and a space, sender.
            line.extend_from_slice(m.id.as_bytes());
            line.extend_from_slice(status.as_bytes());
            let shown = m.id.chars().count() + status.chars().count();
            pad(&mut line, 11usize.saturating_sub(shown));
            line.push(b' ');
            right_u64(&mut line, m.size, 7);
            line.push(b' ');
            left_cut(&mut line, &(asctime(m.msg.arrival) + " "), 20);
            line.push(b' ');
            if m.msg.sender.is_empty() {
                line.extend_from_slice(b"MAILER-DAEMON");
            } else {
                line.extend_from_slice(quote_822_local_cow(&m.msg.sender).as_bytes());
            }
            line.push(b'\n');
            // As Postfix's showq and postqueue (showq_compat.c): the defer log's
            // recipients with their reasons, then the queue file's pending recipients
            // not in it, without one; a `(reason)` line wherever the reason changes,
            // `(reason unavailable)` where it changes to none.
            let mut last_reason = "";
            for e in &m.deferred {
                write_recipient(&mut line, &mut last_reason, e.reason, e.recipient);
            }
            let in_log = InLog::new(&m.deferred);
            for r in &m.msg.pending {
                let a = quote_822_local_cow(r);
                if !in_log.contains(&a) {
                    write_recipient(&mut line, &mut last_reason, "", &a);
                }
            }
            out.write_all(&line)
        })?;
    }
    if count == 0 {
        out.write_all(b"Mail queue is empty\n")?;
    } else {
        writeln!(
            out,
            "\n-- {} Kbytes in {} Request{}.",
            total / 1024,
            count,
            if count == 1 { "" } else { "s" }
        )?;
    }
    out.flush()
}

/// `s` as a JSON string as Postfix's `postqueue -j` writes it (`quote_for_json`).
fn json_str(o: &mut String, s: &str) {
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '\u{8}' => o.push_str("\\b"),
            '\u{c}' => o.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write as _;
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
}

/// Write the `postqueue -j` listing to `out`, one JSON object per message in `mailq`
/// order (as [`write_queue`]), each in one write to `out`.
pub fn write_queue_json(queue_directory: &Path, out: &mut dyn Write) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut reader = Reader::new(queue_directory);
    let mut line = String::with_capacity(1024);
    for (queue, hashed, _) in LISTED {
        // XXX hold/ is listed without its subdirectories here, as before; mailq descends.
        // Postfix 3.7 (seen here) lists hold/H/ID, for -p and -j alike, only when `hold`
        // is in hash_queue_names (showq opens each file by its hashed path).
        let hashed = hashed && queue != "hold";
        reader.each(&queue_directory.join(queue), hashed, &mut |m| {
            let arrival = m
                .msg
                .arrival
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            line.clear();
            line.push_str("{\"queue_name\": ");
            json_str(&mut line, queue);
            line.push_str(", \"queue_id\": ");
            json_str(&mut line, m.id);
            let _ = write!(
                line,
                ", \"arrival_time\": {arrival}, \"message_size\": {}, \"forced_expire\": false, \"sender\": ",
                m.size
            );
            if m.msg.sender.is_empty() {
                json_str(&mut line, "MAILER-DAEMON");
            } else {
                json_str(&mut line, &quote_822_local_cow(&m.msg.sender));
            }
            line.push_str(", \"recipients\": [");
            // The defer log's recipients with their reasons, then the pending ones not
            // shown yet (each address once).
            let mut shown: HashSet<std::borrow::Cow<'_, str>> = HashSet::new();
            let mut first = true;
            let mut sep = |line: &mut String| {
                if !first {
                    line.push_str(", ");
                }
                first = false;
            };
            for e in &m.deferred {
                sep(&mut line);
                line.push_str("{\"address\": ");
                json_str(&mut line, e.recipient);
                line.push_str(", \"delay_reason\": ");
                json_str(&mut line, e.reason);
                line.push('}');
                shown.insert(std::borrow::Cow::Borrowed(e.recipient));
            }
            for r in &m.msg.pending {
                let a = quote_822_local_cow(r);
                if !shown.contains(&a) {
                    sep(&mut line);
                    line.push_str("{\"address\": ");
                    json_str(&mut line, &a);
                    line.push('}');
                    shown.insert(std::borrow::Cow::Owned(a.into_owned()));
                }
            }
            line.push_str("]}\n");
            out.write_all(line.as_bytes())
        })?;
    }
    out.flush()
}

/// `mailq [-c DIR]` (also `sendmail -bp`).
pub fn mailq_main(args: &[String]) -> i32 {
    let mut dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-C" || a == "-c" {
            dir = it.next().map(PathBuf::from);
        }
    }
    let Some(cfg) = load(dir, "mailq") else {
        return 75;
    };
    print_queue(&cfg)
}

pub(super) fn print_queue(cfg: &PostfixConfig) -> i32 {
    let qdir = PathBuf::from(cfg.get("queue_directory").unwrap_or_default().trim());
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    // A reader that went away (`mailq | head`) ends the listing quietly.
    let _ = write_queue(&qdir, &mut out);
    0
}
