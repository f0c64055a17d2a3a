//! The guide (TUTORIAL.md) replayed on a scratch copy of this Debian box with Postern
//! swapped in: `scripts/guide-replay`, run as CI runs it, with each of its steps asserted.
//!
//! The script builds a scratch root (private mount, network, pid and UTS namespaces, an
//! overlay over `/`, chroot), sets the box up as Debian's packages do, writes the guide's
//! files word for word, runs `scripts/install --initscripts`, starts saslauthd, dovecot and
//! postfix through their init scripts and replays the guide's checks over real sockets:
//! `testsaslauthd`, the POP3 dialogue, EHLO as Postfix 3.7.11 gives it for that main.cf,
//! relay refused for a foreign client (454 4.7.1 from Debian's smtpd_relay_restrictions),
//! SMTP AUTH while smtpd cannot reach saslauthd's socket (Postfix's reply and Cyrus's log
//! line), then `adduser postfix sasl` as Debian documents and relay allowed after AUTH
//! PLAIN to a loopback SMTP sink, local mail read back over POP3 and IMAP.
//! The expected replies in the script were recorded from the real Postfix in the same
//! scratch root.
//!
//! Root only (namespaces, chroot, useradd in the scratch root): otherwise the test says it
//! is skipped and passes. This test also checks for itself that the host is left as it
//! was: the files the replay writes in the scratch root are unchanged on the host, no
//! mount or process of the scratch root remains, and its temp directory is gone.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every step of the replay, in order. All must pass (`imap-read` too, now that Postern
/// serves IMAP). The
/// `ref-` steps check that the real programs give the replies the replay expects.
const STEPS: &[&str] = &[
    "box-postfix",
    "box-user",
    "ref-testsaslauthd",
    "ref-ehlo",
    "ref-relay-denied",
    "install",
    "sasl-start",
    "testsaslauthd",
    "dovecot-start",
    "pop3-login",
    "postfix-check",
    "postfix-start",
    "ehlo",
    "relay-denied",
    "auth-unreachable",
    "postfix-restart",
    "relay-auth",
    "relay-delivered",
    "local-accepted",
    "local-delivered",
    "pop3-read",
    "imap-read",
    "postfix-stop",
    "dovecot-stop",
    "sasl-stop",
    "stopped",
    "ref-pop3-read",
    "ref-imap-read",
    "host-clean",
];

/// What the replay changes inside its scratch root; each must be the same on the host
/// afterwards (present or absent, link target, content).
const HOST_PATHS: &[&str] = &[
    "/etc/postfix/main.cf",
    "/etc/dovecot.conf",
    "/usr/lib/sasl2/smtpd.conf",
    "/usr/sbin/postern",
    "/usr/sbin/postfix",
    "/usr/sbin/dovecot",
    "/usr/sbin/saslauthd",
    "/usr/sbin/testsaslauthd",
    "/usr/sbin/postdrop",
    "/usr/sbin/sendmail",
    "/usr/lib/postern",
    "/etc/init.d/postfix",
    "/etc/init.d/dovecot",
    "/etc/init.d/saslauthd",
    "/etc/alternatives/mta",
    "/etc/mailname",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/aliases.db",
    "/var/mail/alice",
    "/home/alice",
    "/usr/sbin/policy-rc.d",
    "/var/spool/postfix/pid/master.pid",
];

/// The queue directories whose entries must not change on the host.
const HOST_DIRS: &[&str] = &[
    "/var/spool/postfix/maildrop",
    "/var/spool/postfix/incoming",
    "/var/spool/postfix/active",
    "/var/spool/postfix/deferred",
    "/var/spool/postfix/defer",
    "/var/spool/postfix/private",
    "/var/spool/postfix/public",
];

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The state of one host path: kind, link target or content, mode and owner.
fn path_state(p: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(p) {
        Err(e) => format!("absent ({})", e.kind()),
        Ok(m) => {
            let what = if m.file_type().is_symlink() {
                format!("link -> {:?}", std::fs::read_link(p).ok())
            } else if m.is_dir() {
                let mut names: Vec<String> = std::fs::read_dir(p)
                    .map(|rd| {
                        rd.filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                names.sort();
                format!("dir {names:?}")
            } else {
                let bytes = std::fs::read(p).unwrap_or_default();
                format!("file {} bytes {:x}", bytes.len(), fnv(&bytes))
            };
            format!("{what} mode {:o} {}:{}", m.mode(), m.uid(), m.gid())
        }
    }
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100000001b3)
    })
}

/// The user the replay creates, as the host's /etc/passwd has it (or not).
fn host_user(name: &str) -> Option<String> {
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .map(str::to_string)
}

fn host_snapshot() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for p in HOST_PATHS.iter().chain(HOST_DIRS) {
        m.insert(p.to_string(), path_state(p));
    }
    m.insert("passwd: alice".into(), format!("{:?}", host_user("alice")));
    m.insert(
        "hostname".into(),
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default(),
    );
    m
}

/// Processes whose root directory lies under `dir` (a chroot into the scratch root).
fn processes_rooted_in(dir: &str) -> Vec<String> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(root) = std::fs::read_link(e.path().join("root"))
            && root.starts_with(dir)
        {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            v.push(format!(
                "{name}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    v
}

/// Run the replay with a time limit; the whole process group is killed past it.
fn run_replay() -> (Option<i32>, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/guide-replay");
    let mut child = Command::new(&script)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_postern"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("run scripts/guide-replay");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let limit = Instant::now() + Duration::from_secs(300);
    let status = loop {
        match child.try_wait().expect("wait for guide-replay") {
            Some(st) => break Some(st),
            None if Instant::now() > limit => {
                // SAFETY: kill(2) on the child's own process group.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let mut text = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let e = err_reader.join().unwrap_or_default();
    if !e.is_empty() {
        text.push_str("\n(stderr)\n");
        text.push_str(&String::from_utf8_lossy(&e));
    }
    match status {
        Some(st) => (st.code(), text),
        None => (None, text + "\n(killed after 300 s)"),
    }
}

#[test]
fn guide_replayed_on_a_scratch_debian_box() {
    if !is_root() {
        eprintln!("skipped: tests/guide.rs needs root (namespaces, overlay, chroot)");
        return;
    }
    let before = host_snapshot();
    let (code, transcript) = run_replay();
    let after = host_snapshot();
    println!("{transcript}");

    let mut problems = Vec::new();
    // Each step's result line: "[PASS] id — …", "[FAIL] id — …", "[SKIP] id — …".
    let mut results: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for line in transcript.lines() {
        for verdict in ["PASS", "FAIL", "SKIP"] {
            if let Some(rest) = line.strip_prefix(&format!("[{verdict}] ")) {
                let (id, text) = rest.split_once(" — ").unwrap_or((rest, ""));
                results.entry(id).or_default().push((verdict, text));
            }
        }
    }
    for id in STEPS {
        match results.get(id).map(Vec::as_slice) {
            Some([("PASS", _)]) => {}
            Some([(verdict, text)]) => problems.push(format!("step {id}: {verdict}: {text}")),
            Some(many) => problems.push(format!("step {id} reported {} times", many.len())),
            None => problems.push(format!("step {id}: no result")),
        }
    }
    for id in results.keys() {
        if !STEPS.contains(id) {
            problems.push(format!("unexpected step {id}"));
        }
    }
    let failed = results
        .values()
        .flatten()
        .any(|(verdict, _)| *verdict == "FAIL");
    if code != Some(if failed { 1 } else { 0 }) {
        problems.push(format!(
            "exit status {code:?} does not match the steps (a step failed: {failed})"
        ));
    }

    // The host: untouched files, and nothing of the scratch root left.
    for (k, v) in &before {
        if after.get(k) != Some(v) {
            problems.push(format!(
                "host changed: {k}: before {v}, after {:?}",
                after.get(k)
            ));
        }
    }
    match transcript
        .lines()
        .find_map(|l| l.strip_prefix("scratch: "))
        .and_then(|l| l.split_whitespace().next())
    {
        None => problems.push("the transcript does not name its scratch directory".into()),
        Some(dir) => {
            if Path::new(dir).exists() {
                problems.push(format!("scratch directory {dir} left on the host"));
            }
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            for m in mounts.lines().filter(|l| l.contains(dir)) {
                problems.push(format!("mount left on the host: {m}"));
            }
            for p in processes_rooted_in(dir) {
                problems.push(format!("process left in the scratch root: {p}"));
            }
        }
    }

    assert!(
        problems.is_empty(),
        "the guide replay failed:\n  {}\n(transcript above)",
        problems.join("\n  ")
    );
}
