//! Process control: the queue manager's `main` (privileges dropped, the queue lock, the
//! master's pipe), the FIFO `public/qmgr` it is woken through, the scan loop over
//! `maildrop/`, `incoming/`, `deferred/` and the workers, and pickup(8) of `maildrop/`.

use super::*;

pub(super) enum Event {
    Reload,
    Wake { flush: bool },
}

/// `postern qmgr -c DIR`: the queue manager process. Returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let mut config_dir = None;
    let mut it = args.iter().skip_while(|a| a.as_str() == "qmgr");
    while let Some(a) = it.next() {
        if a == "-c" {
            config_dir = it.next().map(PathBuf::from);
        }
    }
    let cfg = match crate::config::postfix::load_config(config_dir.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            log::fatal("postfix/qmgr", &e);
            log::flush();
            return 1;
        }
    };
    if let Err(e) = log::configure(&cfg) {
        eprintln!("postfix/qmgr: fatal: {e}");
        return 1;
    }
    // Started as root by the master: become mail_owner for good before touching anything
    // (Postfix's qmgr runs unprivileged; deliveries that need root go to the local
    // delivery process, crate::qmgr::local_server).
    if crate::sys::privs::is_root() {
        let dropped =
            crate::sys::privs::mail_owner(&cfg).and_then(|o| crate::sys::privs::drop_to(&o));
        if let Err(e) = dropped {
            log::fatal(&log::ident(&cfg, "qmgr"), &e);
            log::flush();
            return 1;
        }
    }
    local_client::init_from_env();
    let settings = Arc::new(QmgrSettings::from_config(&cfg));
    // One queue manager per queue: a new one (after a master crash and restart) waits here
    // until the old one has finished the deliveries it had started.
    let _lock = match lock_queue(&settings.queue_directory) {
        Ok(f) => f,
        Err(e) => {
            log::fatal(
                &settings.ident_qmgr,
                &format!(
                    "lock {}: {e}",
                    settings.queue_directory.join("pid/qmgr.lock").display()
                ),
            );
            log::flush();
            return 1;
        }
    };
    match crate::queue::Queue::open(&cfg) {
        Ok(q) => {
            let _ = QUEUE.set(q);
        }
        Err(e) => log::warning(
            &settings.ident_qmgr,
            &format!("cannot open the queue: {e:#}"),
        ),
    }
    let (tx, rx) = mpsc::channel::<Event>();
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut b = [0u8; 64];
            loop {
                match stdin.read(&mut b) {
                    Ok(0) | Err(_) => {
                        // The master is gone: let deliveries in progress finish (so that each
                        // delivered recipient is also marked done), then stop.
                        let _all = DELIVERING.write();
                        log::flush();
                        std::process::exit(0);
                    }
                    Ok(n) => {
                        if b[..n].contains(&b'R') {
                            let _ = tx.send(Event::Reload);
                        }
                    }
                }
            }
        });
    }
    let listening = start_fifo_listener(&settings.queue_directory, tx);
    let code = run(settings, config_dir, rx, listening);
    log::flush();
    code
}

/// The environment variable naming the descriptor of `pid/qmgr.lock` that the master
/// opened for this queue manager (the `pid/` directory is root's).
pub const LOCK_FD_ENV: &str = "POSTERN_QMGR_LOCK_FD";

pub(super) fn lock_queue(queue_directory: &Path) -> std::io::Result<std::fs::File> {
    let inherited = std::env::var(LOCK_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|fd| *fd > 2);
    let f = match inherited {
        // The master opened this descriptor for us alone.
        Some(fd) => {
            let f = std::fs::File::from(crate::sys::take_inherited_fd(fd));
            let _ = nix::fcntl::fcntl(
                &f,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            f
        }
        None => {
            let dir = queue_directory.join("pid");
            std::fs::create_dir_all(&dir)?;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join("qmgr.lock"))?
        }
    };
    loop {
        match f.lock() {
            Ok(()) => return Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Whether the FIFO is listened on (otherwise the queue is polled every `QUEUE_POLL`).
pub(super) fn start_fifo_listener(queue_directory: &Path, tx: mpsc::Sender<Event>) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    // The master makes public/qmgr (mail_owner's, 0622) before starting us; this covers a
    // queue manager started without it.
    let fifo = match make_fifo(queue_directory, None) {
        Ok(f) => f,
        Err(e) => {
            log::warning(
                "postfix/qmgr",
                &format!("{}: {e}", queue_directory.join("public/qmgr").display()),
            );
            return false;
        }
    };
    // Opened read-write so that it never reads end of file when writers come and go.
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&fifo)
    else {
        return false;
    };
    std::thread::spawn(move || {
        let mut b = [0u8; 256];
        while let Ok(n) = f.read(&mut b) {
            if n == 0 {
                break;
            }
            let _ = tx.send(Event::Wake {
                flush: b[..n].contains(&crate::queue::trigger::FLUSH_DEAD),
            });
        }
    });
    true
}

/// Make `queue_directory/public/qmgr`, the FIFO that `postqueue -f`, `postfix flush` and
/// `sendmail` write to: mode 0622, owned by `owner` (uid, gid) when given, as Postfix's
/// master makes its fifo services with mail_owner's ids. Anything else found there (the
/// real Postfix's `qmgr` is a UNIX-domain socket) is replaced; a FIFO is kept, its owner
/// and mode set. `public/` itself must exist.
pub fn make_fifo(queue_directory: &Path, owner: Option<(u32, u32)>) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let fifo = queue_directory.join("public").join("qmgr");
    match std::fs::symlink_metadata(&fifo) {
        Ok(m) if m.file_type().is_fifo() => {
            if let Some((uid, gid)) = owner
                && (m.uid() != uid || m.gid() != gid)
            {
                std::os::unix::fs::lchown(&fifo, Some(uid), Some(gid))?;
            }
            if m.mode() & 0o7777 != 0o622 {
                std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o622))?;
            }
            return Ok(fifo);
        }
        Ok(_) => std::fs::remove_file(&fifo)?,
        Err(_) => {}
    }
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622))
        .map_err(std::io::Error::from)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(&fifo, Some(uid), Some(gid))?;
    }
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o622))?;
    Ok(fifo)
}

/// One message handed to a worker: its path in `active/`.
pub(super) struct Job {
    path: PathBuf,
    id: String,
}

pub(super) fn run(
    mut settings: Arc<QmgrSettings>,
    config_dir: Option<PathBuf>,
    rx: mpsc::Receiver<Event>,
    listening: bool,
) -> i32 {
    let qdir = settings.queue_directory.clone();
    for q in ["active", "deferred", "incoming", "maildrop"] {
        let _ = std::fs::create_dir_all(qdir.join(q));
    }
    let in_progress: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let shared: Arc<Mutex<Arc<QmgrSettings>>> = Arc::new(Mutex::new(settings.clone()));
    let _ = JOBS.set(job_tx.clone());
    let spawn = {
        let job_rx = job_rx.clone();
        let shared = shared.clone();
        let in_progress = in_progress.clone();
        move || {
            let job_rx = job_rx.clone();
            let shared = shared.clone();
            let in_progress = in_progress.clone();
            std::thread::spawn(move || {
                loop {
                    let job = match job_rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let s = match shared.lock() {
                        Ok(s) => s.clone(),
                        Err(p) => p.into_inner().clone(),
                    };
                    let postponed = {
                        let _delivering = DELIVERING.read();
                        process(&s, &job.path)
                    };
                    match postponed {
                        // Still in progress: it comes back when the destination frees.
                        Some((key, limit)) => s.limiter.park(key, limit, job),
                        None => {
                            if let Ok(mut set) = in_progress.lock() {
                                set.remove(&job.id);
                            }
                        }
                    }
                    if worker_surplus() {
                        return;
                    }
                }
            });
        }
    };
    {
        let mut p = POOL.lock().unwrap_or_else(|e| e.into_inner());
        p.target = settings.concurrency;
        p.running = settings.concurrency;
    }
    for _ in 0..settings.concurrency {
        spawn();
    }
    let _ = SPAWN_WORKER.set(Box::new(spawn));
    // Files left in active/ by a crash are resumed first (their done recipients stay done).
    let submit = |path: PathBuf, id: String| {
        let fresh = in_progress
            .lock()
            .map(|mut s| s.insert(id.clone()))
            .unwrap_or(false);
        if fresh {
            let _ = job_tx.send(Job { path, id });
        }
    };
    for (id, path) in list_queue(&qdir.join("active"), false) {
        submit(path, id);
    }
    let mut last_deferred_scan = SystemTime::UNIX_EPOCH;
    // incoming/ and maildrop/ are scanned when a writer wakes us (the queue writer after
    // each group commit, pickup's submitters, postqueue), and every FALLBACK_SCAN anyway.
    let mut scan_new = true;
    let mut last_new_scan = std::time::Instant::now();
    loop {
        if scan_new {
            last_new_scan = std::time::Instant::now();
            for (id, path) in list_queue(&qdir.join("maildrop"), false) {
                pickup(&settings, &path, &qdir, &id);
            }
            for (id, path) in list_queue(&qdir.join("incoming"), false) {
                if let Some(p) = activate(&path, &qdir, &id) {
                    submit(p, id);
                }
            }
        }
        settings.limiter.kick();
        let new_every = if listening {
            FALLBACK_SCAN.min(settings.queue_run_delay)
        } else {
            QUEUE_POLL
        };
        let deferred_in = last_deferred_scan
            .elapsed()
            .map(|e| settings.queue_run_delay.saturating_sub(e))
            .unwrap_or_default();
        let mut timeout = new_every
            .saturating_sub(last_new_scan.elapsed())
            .min(deferred_in);
        if settings.limiter.has_parked() {
            timeout = timeout.min(QUEUE_POLL);
        }
        let mut flush = false;
        scan_new = false;
        let mut event = rx.recv_timeout(timeout);
        loop {
            match event {
                Ok(Event::Reload) => {
                    // Every table is read again, as Postfix's daemons are restarted (a table
                    // that could not be opened is tried again at once).
                    crate::maps::cache::global().clear();
                    if let Ok(cfg) = crate::config::postfix::load_config(config_dir.as_deref()) {
                        let _ = log::configure(&cfg);
                        let mut fresh = QmgrSettings::from_config(&cfg);
                        fresh.limiter = settings.limiter.clone();
                        settings = Arc::new(fresh);
                        if let Ok(mut s) = shared.lock() {
                            *s = settings.clone();
                        }
                    }
                }
                Ok(Event::Wake { flush: f }) => {
                    scan_new = true;
                    flush |= f;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return 0,
            }
            // Wake-ups that came meanwhile are taken with this one: one scan for them all.
            event = match rx.try_recv() {
                Ok(e) => Ok(e),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => Err(mpsc::RecvTimeoutError::Disconnected),
            };
        }
        if last_new_scan.elapsed() >= new_every {
            scan_new = true;
        }
        let due = last_deferred_scan
            .elapsed()
            .map(|e| e >= settings.queue_run_delay)
            .unwrap_or(true);
        if flush || due {
            last_deferred_scan = SystemTime::now();
            let now = SystemTime::now();
            for (id, path) in list_queue(&qdir.join("deferred"), true) {
                let ready = flush
                    || std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .map(|t| t <= now)
                        .unwrap_or(true);
                if ready && let Some(p) = activate(&path, &qdir, &id) {
                    submit(p, id);
                }
            }
        }
    }
}

/// Queue files (named like queue IDs) in `dir`, one level of hash subdirectories when
/// `hashed`.
pub fn list_queue(dir: &Path, hashed: bool) -> Vec<(String, PathBuf)> {
    let mut out = crate::queue::store::scan_dir(dir, hashed);
    out.sort();
    out
}

/// pickup(8): a complete file in `maildrop/` belongs to the user who submitted it (mode
/// 0744, readable by the mail system), or is one of the mail system's own that `postsuper
/// -r` requeued (its defer, bounce and trace logs are removed first, see
/// [`crate::queue::store::Store::requeue`]); copy it into a queue file of the mail system's own
/// in `incoming/` under the same queue ID (written under a temporary name, `u+x`, fsynced,
/// renamed without replacing, directory fsynced), then remove it, as Postfix's pickup
/// hands the file to cleanup and removes it after cleanup has queued it. A crash between
/// the two steps delivers the message twice, Postfix's window too. Logs `ID: uid=N
/// from=<sender>`.
pub(super) fn pickup(s: &QmgrSettings, path: &Path, qdir: &Path, id: &str) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_file() || meta.mode() & 0o100 == 0 {
        return;
    }
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) => {
            log::warning(
                &s.ident_pickup,
                &format!("{id}: read {}: {e}", path.display()),
            );
            return;
        }
    };
    let own = meta.uid() == nix::unistd::geteuid().as_raw();
    let (from, message_id, data) = match crate::queue::file::parse(&data, id) {
        Ok(m) => {
            let data = if own {
                data
            } else {
                // Someone else's: rebuilt from what a user may say.
                crate::queue::cleanup::maildrop_copy(
                    &m,
                    crate::queue::file::warn_record(path).map(|(_, w)| w),
                )
            };
            (m.sender.clone(), message_id(&m.content), data)
        }
        Err(QueueFileError::Incomplete(_)) => return,
        Err(e) => {
            log::warning(&s.ident_pickup, &format!("{id}: {e}; moved to corrupt"));
            let _ = Store::new(qdir).corrupt(path, id);
            return;
        }
    };
    // The mail system's own file: a message requeued by `postsuper -r`, which leaves its
    // logs where they were. Postfix's cleanup would give it a new queue ID and remove any
    // log of that ID; Postern keeps the ID, so the old logs go now, before the message is
    // in incoming/ (a crash in between leaves the file here, to be picked up again).
    if own {
        Store::new(qdir).remove_logs(id);
    }
    let incoming = qdir.join("incoming");
    let dest = incoming.join(id);
    let copy = || -> std::io::Result<()> {
        let mtime = meta.modified()?;
        crate::queue::store::write_durable(
            &incoming,
            id,
            &data,
            crate::queue::store::OWN,
            Some(mtime),
        )
    };
    match copy() {
        Ok(()) => {}
        Err(e) => {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                log::warning(
                    &s.ident_pickup,
                    &format!(
                        "{id}: incoming/{id} exists; {} left for later",
                        path.display()
                    ),
                );
            } else {
                log::warning(
                    &s.ident_pickup,
                    &format!("{id}: copy to {}: {e}", dest.display()),
                );
            }
            return;
        }
    }
    if let Err(e) = std::fs::remove_file(path) {
        log::warning(
            &s.ident_pickup,
            &format!("{id}: remove {}: {e}", path.display()),
        );
    }
    log::info(
        &s.ident_pickup,
        &format!("{id}: uid={} from=<{from}>", meta.uid()),
    );
    // Postfix's pickup hands the file to cleanup, which logs the Message-ID (sendmail and
    // postdrop already added one when the message had none).
    if let Some(mid) = message_id {
        log::info(&s.ident_cleanup, &format!("{id}: message-id={mid}"));
    }
}

/// The Message-ID header's value (unfolded, trimmed) in a message's header section.
pub(super) fn message_id(content: &[u8]) -> Option<String> {
    let mut found: Option<String> = None;
    for line in content.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(v) = found.as_mut() {
                v.push(' ');
                v.push_str(String::from_utf8_lossy(line).trim());
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        if line.len() > 11 && line[..11].eq_ignore_ascii_case(b"message-id:") {
            found = Some(String::from_utf8_lossy(&line[11..]).trim().to_string());
        }
    }
    found.filter(|v| !v.is_empty())
}

/// Move a complete file into `active/`; incomplete files stay where they are.
pub(super) fn activate(path: &Path, qdir: &Path, id: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.permissions().mode() & 0o100 == 0 {
        return None;
    }
    // Never replace a file already in active/ under the same name (a queue ID reused while
    // its first message is still being delivered would otherwise be lost).
    match Store::new(qdir).activate(path, id) {
        Ok(dest) => Some(dest),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            log::warning(
                "postfix/qmgr",
                &format!(
                    "{id}: active/{id} exists; {} left for later",
                    path.display()
                ),
            );
            None
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::maincf;
    use crate::config::mastercf::MasterCf;
    use crate::config::postfix::PostfixConfig;
    use crate::queue::{Envelope, QueueSettings, Recipient, cleanup::Origin};

    /// The records of a queue file, one `TYPE data` line each (the size record's fields
    /// and the content as they are).
    fn records(file: &[u8]) -> String {
        let mut out = String::new();
        for r in crate::queue::record::records(file) {
            let r = r.expect("record");
            let mut data = String::from_utf8_lossy(r.data).into_owned();
            // Added by the submitter's cleanup in the local time zone: only their names.
            if let Some((h, _)) = data.split_once(':')
                && matches!(h, "Message-Id" | "Date")
            {
                data = h.to_string();
            }
            out.push_str(&format!("{} {data}\n", r.kind as char));
        }
        out
    }

    /// A file `postsuper -r` requeued (the mail system's own, in `maildrop/`, its defer,
    /// bounce and trace logs left where they were, as Postfix's postsuper leaves them) is
    /// taken into `incoming/` under its ID without them: Postfix's cleanup gives the
    /// message a new ID with no log; here the ID stays, so its old logs go.
    #[test]
    fn a_requeued_file_is_picked_up_without_its_old_logs() {
        let d = tempfile::tempdir().expect("tempdir");
        let q = d.path();
        let id = "4ABCDEF123";
        for dir in ["maildrop", "incoming", "defer/4", "bounce/4", "trace/4"] {
            std::fs::create_dir_all(q.join(dir)).expect("mkdir");
        }
        let main = maincf::parse(
            &format!(
                "myhostname = mail.example.test\nqueue_directory = {}\n",
                q.display()
            ),
            std::path::Path::new("/nonexistent/main.cf"),
        )
        .expect("main.cf");
        let cfg = PostfixConfig::from_main(main, MasterCf::default());
        let built = QueueSettings::from_config(&cfg)
            .expect("settings")
            .build_file(
                id,
                &Envelope {
                    sender: "s@example.org".into(),
                    recipients: vec![Recipient {
                        address: "r@example.com".into(),
                        ..Recipient::default()
                    }],
                    ..Envelope::default()
                },
                Origin::Notice,
                b"Subject: x\n\nbody\n",
                std::time::SystemTime::now(),
            )
            .expect("built");
        let file = q.join("maildrop").join(id);
        crate::queue::store::write_durable(
            &q.join("maildrop"),
            id,
            &built.data,
            crate::queue::store::OWN,
            None,
        )
        .expect("requeued file");
        for log in ["defer", "bounce", "trace"] {
            std::fs::write(q.join(log).join("4").join(id), "old\n").expect("log");
        }
        super::pickup(&super::QmgrSettings::from_config(&cfg), &file, q, id);
        assert!(!file.exists());
        assert_eq!(
            std::fs::read(q.join("incoming").join(id)).expect("picked up"),
            built.data
        );
        for log in ["defer", "bounce", "trace"] {
            assert!(!q.join(log).join("4").join(id).exists(), "{log} log left");
        }
    }

    /// A user's maildrop file as `sendmail` builds it (cleanup's `Origin::Local`, at a fixed
    /// time), with the DSN fields, SMTPUTF8 and a body type a file handed to postdrop can
    /// carry, is rebuilt by pickup with the records it had before pickup's copy went through
    /// `queue::cleanup` (recorded from the copy built by hand in `qmgr::daemon`).
    #[test]
    fn a_users_maildrop_file_is_rebuilt_with_the_same_records() {
        let main = maincf::parse(
            "myhostname = mail.example.test\nqueue_directory = /nonexistent\n\
             delay_warning_time = 4h\n",
            std::path::Path::new("/nonexistent/main.cf"),
        )
        .expect("main.cf");
        let cfg = PostfixConfig::from_main(main, MasterCf::default());
        let s = QueueSettings::from_config(&cfg).expect("settings");
        let arrival =
            std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_796_000_000_123_456);
        let received = vec![
            "Received: by mail.example.test (Postfix, from userid 1000)".to_string(),
            "\tid 4ABCDEF123; Mon,  1 Dec 2026 10:00:00 +0000 (UTC)".to_string(),
        ];
        let env = Envelope {
            sender: "user@mail.example.test".into(),
            recipients: vec![
                Recipient {
                    address: "a@example.com".into(),
                    orcpt: Some("rfc822;A@Example.com".into()),
                    notify: Some("SUCCESS,DELAY".into()),
                },
                Recipient {
                    address: "odd user@example.org".into(),
                    ..Recipient::default()
                },
            ],
            body_type: Some("8BITMIME".into()),
            smtputf8: true,
            ret: Some("HDRS".into()),
            envid: Some("env-1".into()),
            ..Envelope::default()
        };
        let message = "Subject: caf\u{e9}\nTo: a@example.com\n\nline one\n\nline three\n";
        let built = s
            .build_file(
                "4ABCDEF123",
                &env,
                Origin::Local {
                    received: &received,
                },
                message.as_bytes(),
                arrival,
            )
            .expect("built");
        let m = crate::queue::file::parse(&built.data, "4ABCDEF123").expect("parsed");
        let copy = crate::queue::cleanup::maildrop_copy(&m, Some(1_796_014_400));
        assert_eq!(records(&copy), EXPECTED, "{}", records(&copy));
        // Without a warning time, and with a recipient already marked done: the same
        // records without those (the size record counts one recipient).
        let mut m = m;
        m.recipients[1].done = true;
        let copy = crate::queue::cleanup::maildrop_copy(&m, None);
        let got = records(&copy);
        let size: Vec<&str> = got
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(size.get(3), Some(&"1"), "{got}");
        let want: String = EXPECTED
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with('W') && !l.contains("odd user"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(got.split_once('\n').map(|x| x.1), Some(want.as_str()));
    }

    /// Recorded from the copy pickup built by hand in `qmgr::daemon` before
    /// `queue::cleanup` built it.
    const EXPECTED: &str = "\
C             310             473               2              20             310               3
T 1796000000 123456
W      1796014400
A create_time=1796000000
A log_ident=4ABCDEF123
A rewrite_context=local
A envelope_id=env-1
A ret_flags=2
S user@mail.example.test
A encoding=8bit
A log_message_origin=local
A notify_flags=10
A dsn_orig_rcpt=rfc822;A@Example.com
O a@example.com
R a@example.com
A dsn_orig_rcpt=rfc822;\"odd user\"@example.org
O odd user@example.org
R odd user@example.org
M 
N Received: by mail.example.test (Postfix, from userid 1000)
N \tid 4ABCDEF123; Mon,  1 Dec 2026 10:00:00 +0000 (UTC)
N Subject: caf\u{e9}
N To: a@example.com
N Message-Id
N Date
N From: user@mail.example.test
N 
N line one
N 
N line three
X 
A encoding=8bit
E 
";
}
