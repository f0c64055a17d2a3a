//! The mail log, in Postfix's formats, so that pflogsumm, logwatch and fail2ban's postfix
//! filters read Postern's lines unchanged.
//!
//! Two sinks, chosen by [`configure`] from `main.cf`, as Postfix 3.7 does:
//!
//! * `maillog_file` set (e.g. `/dev/stdout` or `/var/log/postfix.log`): lines are appended
//!   exactly as Postfix's `postlogd` writes them (util/msg_logger.c):
//!   `Nov 28 14:00:26 host postfix/master[3637]: daemon started -- …`, i.e. `strftime("%b %d
//!   %H:%M:%S")` in local time (day zero-padded), the first label of `myhostname`, then
//!   `ident[pid]: text`. The path must start with one of `maillog_file_prefixes`, else
//!   Postfix's `maillog_file value '…' does not match any prefix in maillog_file_prefixes`.
//! * otherwise syslog through the `/dev/log` datagram socket, as glibc's `syslog(3)` formats
//!   it for Postfix (checked against a socket listening on /dev/log): `<22>Nov 28 14:01:39
//!   postfix/master[5113]: text` (RFC 3164 without the host field, day space-padded); the
//!   facility from `syslog_facility` (default `mail`). Without `/dev/log` the lines go to
//!   stderr.
//!
//! Severities map as Postfix's msg_syslog.c does: info → `LOG_INFO`, `warning: ` →
//! `LOG_WARNING`, `error: ` → `LOG_ERR`, `fatal: ` → `LOG_CRIT`.
//!
//! The ident (`postfix/smtpd`, `postfix/submission/smtpd`) is passed by the caller; build it
//! with [`ident`] from the service's configuration so that a master.cf `-o syslog_name=…`
//! applies. Commands run by an admin also echo each line to stderr as `ident: text` when
//! stderr is a terminal ([`set_stderr_echo`]), which is what Postfix's commands do.
//!
//! Callers never block on I/O: lines go over a channel to one writer thread. [`flush`] waits
//! until everything sent before it has been written (call it before exiting).
//!
//! Two other modes serve processes that fork without exec (the local delivery process,
//! [`crate::qmgr::local_server`]), where a thread of the parent must not be relied on:
//! [`set_direct`] (before the first line) writes each line at once in the calling thread,
//! so the process has no writer thread; [`start_capture`] (in a forked child) keeps lines
//! in memory for [`take_captured`], and the parent logs them with the child's PID
//! ([`emit_as`]).
//!
//! Known limits: no `maillog_file_rotate_suffix` / `postfix logrotate`; a `/dev/log` that is a
//! stream socket (some old syslog-ng setups) is not supported; lines longer than 2000
//! characters are not cut as `MSG_LOGGER_RECLEN` would.

use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::postfix::PostfixConfig;

/// Where lines go.
#[derive(Debug)]
enum Sink {
    /// `/dev/log` (reconnected on error), with the facility code (`mail` = 2).
    Syslog {
        facility: u8,
        socket: Option<UnixDatagram>,
    },
    /// `maillog_file`, with the first label of `myhostname`.
    File { file: File, host: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Severity {
    Info,
    Warning,
    Error,
    Fatal,
    /// A bug (Postfix's `msg_panic`): `panic: `, `LOG_CRIT`.
    Panic,
    /// No prefix, this syslog level: lines whose text carries its own severity word
    /// (Dovecot's `master: Fatal: …`).
    Plain(u8),
}

impl Severity {
    fn prefix(self) -> &'static str {
        match self {
            Severity::Info => "",
            Severity::Warning => "warning: ",
            Severity::Error => "error: ",
            Severity::Fatal => "fatal: ",
            Severity::Panic => "panic: ",
            Severity::Plain(_) => "",
        }
    }
    /// syslog(3) priority level.
    fn level(self) -> u8 {
        match self {
            Severity::Info => 6,
            Severity::Warning => 4,
            Severity::Error => 3,
            Severity::Fatal | Severity::Panic => 2,
            Severity::Plain(level) => level,
        }
    }
}

enum Msg {
    Line {
        severity: Severity,
        ident: String,
        pid: u32,
        time: SystemTime,
        text: String,
    },
    Reconfigure(Sink),
    /// Same `maillog_file`, possibly another `myhostname`.
    SetHost(String),
    Flush(Sender<()>),
}

struct Logger {
    tx: Mutex<Sender<Msg>>,
    echo: std::sync::atomic::AtomicBool,
    /// The `maillog_file` now open, so that a reload keeps it instead of reopening it
    /// (after the master dropped privileges it may not be allowed to).
    file: Mutex<Option<String>>,
}

fn logger() -> &'static Logger {
    static LOGGER: OnceLock<Logger> = OnceLock::new();
    LOGGER.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        let sink = Sink::Syslog {
            facility: 2,
            socket: None,
        };
        // If the thread cannot be spawned the receiver is dropped and sends fail; `emit`
        // then writes to stderr itself, so nothing is lost silently.
        let _ = std::thread::Builder::new()
            .name(WRITER_THREAD.into())
            .spawn(move || writer(rx, sink));
        Logger {
            tx: Mutex::new(tx),
            echo: std::sync::atomic::AtomicBool::new(false),
            file: Mutex::new(None),
        }
    })
}

/// Log one informational line under `ident` (e.g. `postfix/smtpd`).
pub fn info(ident: &str, text: &str) {
    emit(Severity::Info, ident, text);
}

/// Log a warning: Postfix prefixes the text with `warning: `.
pub fn warning(ident: &str, text: &str) {
    emit(Severity::Warning, ident, text);
}

/// Log an error (`error: `) that does not end the program.
pub fn error(ident: &str, text: &str) {
    emit(Severity::Error, ident, text);
}

/// Log an error that ends the operation (`fatal: `), without exiting. Callers that exit next
/// should call [`flush`] first.
pub fn fatal(ident: &str, text: &str) {
    emit(Severity::Fatal, ident, text);
}

/// The name of the writer thread.
const WRITER_THREAD: &str = "maillog";

/// The ident [`install_panic_hook`]'s lines carry; see [`set_panic_ident`].
static PANIC_IDENT: Mutex<String> = Mutex::new(String::new());

/// Name this process's panics as `ident` (a daemon calls it once it knows its
/// `syslog_name`).
pub fn set_panic_ident(ident: &str) {
    *PANIC_IDENT.lock().unwrap_or_else(|p| p.into_inner()) = ident.to_string();
}

/// Send every panic of this process (any thread: an SMTP session, a queue manager worker)
/// to the mail log, as Postfix's `msg_panic()` logs its own: `ident[pid]: panic: text`,
/// at `LOG_CRIT`, here with the source location: `panic: src/x.rs:10:5: message`. The
/// standard hook still runs after (stderr, which is /dev/null for a background master).
/// A panic in a thread ends that thread (a session: its connection), not the process.
pub fn install_panic_hook(ident: &str) {
    set_panic_ident(ident);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".into());
        let at = info
            .location()
            .map(|l| format!("{}:{}:{}: ", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let text = format!("{at}{what}").replace(['\r', '\n'], " ");
        let ident = PANIC_IDENT
            .try_lock()
            .map(|g| g.clone())
            .unwrap_or_else(|_| "postfix/postern".into());
        emit(Severity::Panic, &ident, &text);
        // Not from the writer thread itself (it would wait for itself).
        if std::thread::current().name() != Some(WRITER_THREAD) {
            flush();
        }
        previous(info);
    }));
}

/// A line kept by [`start_capture`]: severity word (`info`, `warning`, `error`, `fatal`),
/// ident, PID of the process that logged it, text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub severity: String,
    pub ident: String,
    pub pid: u32,
    pub text: String,
}

/// The synchronous sink of [`set_direct`].
static DIRECT: OnceLock<Mutex<Sink>> = OnceLock::new();
/// Lines kept since [`start_capture`] (in a forked child: a fresh lock no other thread of
/// the child can hold).
static CAPTURE: Mutex<Option<Vec<Captured>>> = Mutex::new(None);
static CAPTURING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Write every line in the calling thread, without a writer thread. Call before the first
/// line is logged; a later [`configure`] replaces the sink in place.
pub fn set_direct() {
    let _ = DIRECT.set(Mutex::new(Sink::Syslog {
        facility: 2,
        socket: None,
    }));
}

/// Keep every line from now on in memory (see [`take_captured`]) instead of writing it.
/// For a child forked from a process whose writer thread did not come along.
pub fn start_capture() {
    let mut g = CAPTURE.lock().unwrap_or_else(|p| p.into_inner());
    *g = Some(Vec::new());
    CAPTURING.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The lines kept since [`start_capture`] (capture goes on).
pub fn take_captured() -> Vec<Captured> {
    let mut g = CAPTURE.lock().unwrap_or_else(|p| p.into_inner());
    g.as_mut().map(std::mem::take).unwrap_or_default()
}

fn severity_word(s: Severity) -> String {
    match s {
        Severity::Info => "info".into(),
        Severity::Warning => "warning".into(),
        Severity::Error => "error".into(),
        Severity::Fatal => "fatal".into(),
        Severity::Panic => "panic".into(),
        Severity::Plain(level) => format!("plain{level}"),
    }
}

/// Log a line another process captured, with that process's PID (`severity` as in
/// [`Captured`]; an unknown word logs as info).
pub fn emit_as(c: &Captured) {
    let severity = match c.severity.as_str() {
        "warning" => Severity::Warning,
        "error" => Severity::Error,
        "fatal" => Severity::Fatal,
        "panic" => Severity::Panic,
        w => match w.strip_prefix("plain").and_then(|l| l.parse().ok()) {
            Some(level) => Severity::Plain(level),
            None => Severity::Info,
        },
    };
    emit_pid(severity, &c.ident, c.pid, &c.text);
}

/// Log `text` as written (no Postfix severity prefix, no `[pid]` after the ident) at syslog
/// `level` (`LOG_INFO` 6, `LOG_WARNING` 4, `LOG_ERR` 3, `LOG_CRIT` 2): Dovecot's lines
/// carry their own level word (`dovecot: master: Fatal: …`).
pub fn plain(level: u8, ident: &str, text: &str) {
    emit(Severity::Plain(level), ident, text);
}

fn emit(severity: Severity, ident: &str, text: &str) {
    emit_pid(severity, ident, pid(), text);
}

static PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static PID_CACHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on, log lines carry a PID asked of the kernel once ([`forget_pid`] must run
/// in every child after a `fork()`: `crate::sys::pid` registers that).
pub fn cache_pid() {
    PID_CACHED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Drop the cached PID (a `fork()` child handler: one atomic store).
pub fn forget_pid() {
    PID.store(0, std::sync::atomic::Ordering::Relaxed);
}

/// This process's ID for a log line: cached once [`cache_pid`] was called, else asked.
fn pid() -> u32 {
    use std::sync::atomic::Ordering;
    if !PID_CACHED.load(Ordering::Relaxed) {
        return std::process::id();
    }
    match PID.load(Ordering::Relaxed) {
        0 => {
            let p = std::process::id();
            PID.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

fn emit_pid(severity: Severity, ident: &str, pid: u32, text: &str) {
    if CAPTURING.load(std::sync::atomic::Ordering::SeqCst) {
        let mut g = CAPTURE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = g.as_mut() {
            v.push(Captured {
                severity: severity_word(severity),
                ident: ident.to_string(),
                pid,
                text: text.to_string(),
            });
            return;
        }
    }
    if let Some(d) = DIRECT.get() {
        let mut sink = d.lock().unwrap_or_else(|p| p.into_inner());
        write_line(&mut sink, severity, ident, pid, SystemTime::now(), text);
        return;
    }
    let lg = logger();
    if lg.echo.load(std::sync::atomic::Ordering::Relaxed) {
        // Postfix's msg_vstream output: `postfix/postfix-script: fatal: text`.
        eprintln!("{ident}: {}{text}", severity.prefix());
    }
    let msg = Msg::Line {
        severity,
        ident: ident.to_string(),
        pid,
        time: SystemTime::now(),
        text: text.to_string(),
    };
    let sent = match lg.tx.lock() {
        Ok(tx) => tx.send(msg).is_ok(),
        Err(_) => false,
    };
    if !sent {
        eprintln!("{ident}[{pid}]: {}{text}", severity.prefix());
    }
}

/// The log ident for `program` in a service configured by `cfg`: `$syslog_name/program`
/// (`postfix/smtpd`, or `postfix/submission/smtpd` under `-o syslog_name=postfix/submission`).
pub fn ident(cfg: &PostfixConfig, program: &str) -> String {
    let name = syslog_name(cfg);
    if program.is_empty() {
        name
    } else {
        format!("{name}/{program}")
    }
}

/// `syslog_name`, default `postfix`.
pub fn syslog_name(cfg: &PostfixConfig) -> String {
    match cfg.get("syslog_name") {
        Some(n) if !n.trim().is_empty() => n.trim().to_string(),
        _ => "postfix".to_string(),
    }
}

/// Echo each line to stderr as `ident: text` (Postfix's commands do this when stderr is a
/// terminal).
pub fn set_stderr_echo(on: bool) {
    logger()
        .echo
        .store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether commands echo their log lines to stderr: when stderr is a terminal, as Postfix's
/// commands do, or when `POSTERN_STDERR=1` asks for it (the init scripts set it, so that
/// what `postfix start` says reaches the screen though their output is captured).
pub fn stderr_is_tty() -> bool {
    if std::env::var_os("POSTERN_STDERR").is_some_and(|v| v == "1") {
        return true;
    }
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// Choose the sink from `maillog_file`, `maillog_file_prefixes`, `syslog_facility` and
/// `myhostname`. The returned error is Postfix's fatal text (without `fatal: `); the sink is
/// then left as it was.
pub fn configure(cfg: &PostfixConfig) -> Result<(), String> {
    let file = cfg.get("maillog_file").unwrap_or_default();
    let file = file.trim().to_string();
    if let Some(d) = DIRECT.get() {
        let sink = sink_for(cfg, &file)?;
        *d.lock().unwrap_or_else(|p| p.into_inner()) = sink;
        return Ok(());
    }
    let lg = logger();
    let mut current = match lg.file.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let msg = if !file.is_empty() && current.as_deref() == Some(file.as_str()) {
        Msg::SetHost(first_label(cfg))
    } else {
        let sink = sink_for(cfg, &file)?;
        *current = (!file.is_empty()).then_some(file);
        Msg::Reconfigure(sink)
    };
    if let Ok(tx) = lg.tx.lock() {
        let _ = tx.send(msg);
    }
    Ok(())
}

/// The first label of `myhostname`, as the maillog file shows the host.
fn first_label(cfg: &PostfixConfig) -> String {
    let host = cfg.get("myhostname").unwrap_or_default();
    host.trim().split('.').next().unwrap_or("").to_string()
}

/// Postfix's check of `maillog_file` against `maillog_file_prefixes` (maillog_client.c: a
/// plain string prefix, items split on commas and white space).
pub fn maillog_prefix_ok(cfg: &PostfixConfig, file: &str) -> Result<(), String> {
    let prefixes = cfg.get("maillog_file_prefixes").unwrap_or_default();
    let ok = prefixes
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .any(|p| file.starts_with(p));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "maillog_file value '{file}' does not match any prefix in maillog_file_prefixes"
        ))
    }
}

fn sink_for(cfg: &PostfixConfig, file: &str) -> Result<Sink, String> {
    if !file.is_empty() {
        maillog_prefix_ok(cfg, file)?;
        let f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(file)
            .map_err(|e| {
                format!(
                    "open logfile '{file}': {}",
                    crate::config::error::strerror(&e)
                )
            })?;
        return Ok(Sink::File {
            file: f,
            host: first_label(cfg),
        });
    }
    let fac_name = cfg.get("syslog_facility").unwrap_or_default();
    let facility = facility_code(fac_name.trim())
        .ok_or_else(|| format!("unknown syslog facility: {}", fac_name.trim()))?;
    Ok(Sink::Syslog {
        facility,
        socket: None,
    })
}

/// syslog facility names as syslog(3) knows them (Postfix accepts the same).
fn facility_code(name: &str) -> Option<u8> {
    let code = match name {
        "" | "mail" => 2,
        "kern" => 0,
        "user" => 1,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "lpr" => 6,
        "news" => 7,
        "uucp" => 8,
        "cron" => 9,
        "authpriv" => 10,
        "ftp" => 11,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    };
    Some(code)
}

/// Wait (at most two seconds) until every line logged before this call is written.
pub fn flush() {
    if let Some(d) = DIRECT.get() {
        if let Sink::File { file, .. } = &mut *d.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = file.flush();
        }
        return;
    }
    if CAPTURING.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let (tx, rx) = mpsc::channel();
    let sent = match logger().tx.lock() {
        Ok(t) => t.send(Msg::Flush(tx)).is_ok(),
        Err(_) => false,
    };
    if sent {
        let _ = rx.recv_timeout(Duration::from_secs(2));
    }
}

/// The writer thread: every line already waiting when it wakes goes out in one `write(2)`
/// to `maillog_file` (syslog datagrams stay one per line), so that a burst of lines costs
/// one wake-up and one system call instead of one each (issue 18).
fn writer(rx: Receiver<Msg>, mut sink: Sink) {
    /// The most lines gathered into one write.
    const BATCH: usize = 256;
    let mut pending: Vec<u8> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(msg) = next {
            match msg {
                Msg::Line {
                    severity,
                    ident,
                    pid,
                    time,
                    text,
                } => match &mut sink {
                    Sink::File { host, .. } => {
                        pending.extend_from_slice(
                            file_line(host, severity, &ident, pid, time, &text).as_bytes(),
                        );
                    }
                    Sink::Syslog { .. } => {
                        write_line(&mut sink, severity, &ident, pid, time, &text);
                    }
                },
                other => {
                    flush_pending(&mut sink, &mut pending);
                    match other {
                        Msg::Reconfigure(s) => sink = s,
                        Msg::SetHost(h) => {
                            if let Sink::File { host, .. } = &mut sink {
                                *host = h;
                            }
                        }
                        Msg::Flush(ack) => {
                            if let Sink::File { file, .. } = &mut sink {
                                let _ = file.flush();
                            }
                            let _ = ack.send(());
                        }
                        Msg::Line { .. } => {}
                    }
                }
            }
            n += 1;
            next = if n < BATCH { rx.try_recv().ok() } else { None };
        }
        flush_pending(&mut sink, &mut pending);
    }
}

/// Write the lines gathered for `maillog_file`.
fn flush_pending(sink: &mut Sink, pending: &mut Vec<u8>) {
    if pending.is_empty() {
        return;
    }
    if let Sink::File { file, .. } = sink
        && file.write_all(pending).is_err()
    {
        eprint!("{}", String::from_utf8_lossy(pending));
    }
    pending.clear();
}

/// One line of `maillog_file`, with its newline (Dovecot's log process opens syslog without
/// `LOG_PID`: `dovecot: pop3-login: …`).
fn file_line(
    host: &str,
    severity: Severity,
    ident: &str,
    pid: u32,
    time: SystemTime,
    text: &str,
) -> String {
    let body = match severity {
        Severity::Plain(_) => format!("{ident}: {text}"),
        _ => format!("{ident}[{pid}]: {}{text}", severity.prefix()),
    };
    format!("{} {host} {body}\n", timestamp(time, true))
}

fn write_line(
    sink: &mut Sink,
    severity: Severity,
    ident: &str,
    pid: u32,
    time: SystemTime,
    text: &str,
) {
    // Dovecot's log process opens syslog without LOG_PID: `dovecot: pop3-login: …`.
    let body = || match severity {
        Severity::Plain(_) => format!("{ident}: {text}"),
        _ => format!("{ident}[{pid}]: {}{text}", severity.prefix()),
    };
    match sink {
        Sink::File { file, host } => {
            let line = file_line(host, severity, ident, pid, time, text);
            if file.write_all(line.as_bytes()).is_err() {
                eprint!("{line}");
            }
        }
        Sink::Syslog { facility, socket } => {
            let pri = u32::from(*facility) * 8 + u32::from(severity.level());
            let body = body();
            let dgram = format!("<{pri}>{} {body}", timestamp(time, false));
            if !syslog_send(socket, dgram.as_bytes()) {
                eprintln!("{body}");
            }
        }
    }
}

/// Send one datagram to /dev/log, reconnecting once (syslogd restarted).
fn syslog_send(socket: &mut Option<UnixDatagram>, data: &[u8]) -> bool {
    for _ in 0..2 {
        if socket.is_none() {
            let Ok(s) = UnixDatagram::unbound() else {
                return false;
            };
            if s.connect(Path::new("/dev/log")).is_err() {
                return false;
            }
            *socket = Some(s);
        }
        if let Some(s) = socket.as_ref() {
            if s.send(data).is_ok() {
                return true;
            }
            *socket = None;
        }
    }
    false
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Mmm dd hh:mm:ss` in local time: day zero-padded (`%d`, msg_logger.c) for the maillog
/// file, space-padded (`%e`, glibc syslog) for syslog.
fn timestamp(time: SystemTime, zero_pad_day: bool) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let t = i64::try_from(secs).unwrap_or(0);
    let Some(tm) = crate::sys::time::local(t) else {
        return format!("Jan {} 00:00:00", if zero_pad_day { "01" } else { " 1" });
    };
    let month = MONTHS
        .get(usize::try_from(tm.tm_mon).unwrap_or(0))
        .copied()
        .unwrap_or("Jan");
    if zero_pad_day {
        format!(
            "{month} {:02} {:02}:{:02}:{:02}",
            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec
        )
    } else {
        format!(
            "{month} {:>2} {:02}:{:02}:{:02}",
            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_shapes() {
        // 2026-11-03 04:05:06 UTC; only the shape is checked (local time zone varies).
        let t = UNIX_EPOCH + Duration::from_secs(1_793_678_706);
        let z = timestamp(t, true);
        let s = timestamp(t, false);
        assert_eq!(z.len(), 15, "{z}");
        assert_eq!(s.len(), 15, "{s}");
        assert!(MONTHS.contains(&&z[..3]));
        assert_eq!(&z[3..4], " ");
        assert!(z.as_bytes()[4].is_ascii_digit());
    }

    #[test]
    fn facilities() {
        assert_eq!(facility_code("mail"), Some(2));
        assert_eq!(facility_code("local7"), Some(23));
        assert_eq!(facility_code("bogus"), None);
    }

    #[test]
    fn syslog_lines_postfix_with_pid_dovecot_without() {
        let (a, b) = UnixDatagram::pair().expect("socketpair");
        let mut sink = Sink::Syslog {
            facility: 2,
            socket: Some(a),
        };
        let t = SystemTime::now();
        let mut buf = [0u8; 512];
        write_line(&mut sink, Severity::Warning, "postfix/smtpd", 42, t, "x");
        let n = b.recv(&mut buf).expect("recv");
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(got.starts_with("<20>"), "{got}");
        assert!(got.ends_with(" postfix/smtpd[42]: warning: x"), "{got}");
        // Dovecot's log process: openlog("dovecot", LOG_NDELAY, facility), no pid.
        write_line(
            &mut sink,
            Severity::Plain(6),
            "dovecot",
            42,
            t,
            "pop3-login: Login: y",
        );
        let n = b.recv(&mut buf).expect("recv");
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(got.starts_with("<22>"), "{got}");
        assert!(got.ends_with(" dovecot: pop3-login: Login: y"), "{got}");
    }
}
