//! `mailbox_delivery_lock` (local(8)) and `virtual_mailbox_lock` (virtual(8)) against a
//! Postern started with `postfix start`, compared with what the real Postfix 3.7.11 did in
//! the same cases (`compat-fixtures/locks/postfix-3.7.txt`, `scripts/regen-lock-fixtures`):
//! for each configured kind, a lock of that kind held by the test defers the delivery with
//! Postfix's text after `deliver_lock_attempts` tries, and a lock of a kind not configured
//! does not hold it up; a value Postfix refuses is logged with its `fatal:` text and
//! nothing is delivered until the value is fixed (then nothing is lost).
//!
//! Needs root (a system user owning the mailboxes); without root the tests return early.

mod common;
use common::*;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

const QMGR: &str = "qmgr      unix  n       -       n       300     1       qmgr\n";
const USER: &str = "pst-lock";
const KINDS: [&str; 3] = ["flock", "fcntl", "dotlock"];

/// The fixture's lines: `(case, text)`.
fn fixture() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("compat-fixtures/locks/postfix-3.7.txt"))
        .expect("fixture");
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(c, t)| (c.to_string(), t.to_string()))
        .collect()
}

/// An instance with both lock parameters set to `locks` (unless empty), a spool mailbox
/// and a virtual one owned by [`USER`], and Postfix's lock bounds shortened to 2 × 1 s.
fn start(locks: &str) -> (Instance, u32, u32) {
    start_plus(locks, "")
}

/// [`start`] with `extra` main.cf lines.
fn start_plus(locks: &str, extra: &str) -> (Instance, u32, u32) {
    mail_user(USER).expect("user");
    let pw = nix::unistd::User::from_name(USER).unwrap().unwrap();
    let (uid, gid) = (pw.uid.as_raw(), pw.gid.as_raw());
    let set = if locks.is_empty() {
        String::new()
    } else {
        format!("mailbox_delivery_lock = {locks}\nvirtual_mailbox_lock = {locks}\n")
    };
    let inst = Instance::start_with(
        &delivering_main_cf(&format!(
            "recipient_delimiter = +\ndeliver_lock_attempts = 2\ndeliver_lock_delay = 1s\n\
             virtual_mailbox_domains = virt.test\n\
             virtual_mailbox_base = $queue_directory/../vmail\n\
             virtual_mailbox_maps = static:box\nvirtual_uid_maps = static:{uid}\n\
             virtual_gid_maps = static:{gid}\nvirtual_minimum_uid = 1\n{set}{extra}"
        )),
        QMGR,
        |d| {
            use std::os::unix::fs::PermissionsExt;
            for sub in ["mail", "vmail"] {
                std::fs::create_dir_all(d.join(sub)).unwrap();
                std::fs::set_permissions(d.join(sub), std::fs::Permissions::from_mode(0o1777))
                    .unwrap();
            }
        },
    );
    (inst, uid, gid)
}

/// The two mailboxes: the spool one (local) and the virtual one, as the log names them.
fn boxes(inst: &Instance) -> [(&'static str, PathBuf, PathBuf); 2] {
    let d = inst.dir.path();
    [
        ("local", d.join("mail").join(USER), d.join("spool/../mail")),
        ("virtual", d.join("vmail/box"), d.join("spool/../vmail")),
    ]
}

/// A lock of `kind` on `mbox` held by this process until dropped: `flock(2)`, an `fcntl`
/// write lock on the whole file (open-file-description, so that other descriptors of this
/// process do not drop it), or `MBOX.lock` holding this process's live PID.
struct Held {
    _file: File,
    dotlock: Option<PathBuf>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(p) = &self.dotlock {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn hold(kind: &str, mbox: &Path, uid: u32, gid: u32) -> Held {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(mbox)
        .unwrap();
    nix::unistd::chown(mbox, Some(uid.into()), Some(gid.into())).unwrap();
    let mut dotlock = None;
    match kind {
        "flock" => file.try_lock().expect("flock"),
        "fcntl" => {
            postern::sys::lock_whole_file(&file, true, false).expect("fcntl lock");
        }
        _ => {
            let p = PathBuf::from(format!("{}.lock", mbox.display()));
            std::fs::write(&p, format!("{}\n", std::process::id())).unwrap();
            dotlock = Some(p);
        }
    }
    Held {
        _file: file,
        dotlock,
    }
}

fn messages_in(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("From "))
        .count()
}

/// The `dsn=…` part of the status line for `rcpt` (`to=` or `orig_to=`), once logged.
fn status_for(inst: &Instance, rcpt: &str) -> String {
    let needle = format!("<{rcpt}>");
    let log = inst.wait_log_until(Duration::from_secs(60), |l| {
        l.lines()
            .any(|x| x.contains(&needle) && x.contains("status="))
    });
    let line = log
        .lines()
        .find(|x| x.contains(&needle) && x.contains("status="))
        .unwrap_or_else(|| panic!("no status for {rcpt}:\n{log}"));
    line[line.find("dsn=").expect("dsn")..].to_string()
}

/// For one configured kind: every held kind, for local(8) and virtual(8), compared with the
/// fixture's line for the same case.
fn each_held_kind_against(conf: &str) {
    if !is_root() {
        return;
    }
    let fx = fixture();
    // A file named in a .forward (local/file.c), one user per configured kind since the
    // tests run side by side: its home is the user's own, which the user can reach.
    let fuser = format!("pst-lf-{conf}");
    let home = mail_user(&fuser).expect("user");
    let fpw = nix::unistd::User::from_name(&fuser).unwrap().unwrap();
    let file = home.join("file");
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(home.join("file.lock"));
    std::fs::write(home.join(".forward"), format!("{}\n", file.display())).unwrap();
    nix::unistd::chown(&home.join(".forward"), Some(fpw.uid), Some(fpw.gid)).unwrap();
    let (inst, uid, gid) = start(conf);
    let [(_, spool_box, spool), (_, vbox, vmail)] = boxes(&inst);
    let agents = [
        (
            "local",
            spool_box,
            "MAIL",
            spool.display().to_string(),
            (uid, gid),
        ),
        (
            "file",
            file.clone(),
            "FILE",
            file.display().to_string(),
            (fpw.uid.as_raw(), fpw.gid.as_raw()),
        ),
        (
            "virtual",
            vbox,
            "VMAIL",
            vmail.display().to_string(),
            (uid, gid),
        ),
    ];
    let mut sent = [0usize; 3];
    for (i, (agent, mbox, placeholder, logged, (uid, gid))) in agents.into_iter().enumerate() {
        let param = match agent {
            "virtual" => "virtual_mailbox_lock",
            _ => "mailbox_delivery_lock",
        };
        for held in KINDS {
            let rcpt = match agent {
                "local" => format!("{USER}+{conf}-{held}@localhost"),
                "file" => format!("{fuser}+{conf}-{held}@localhost"),
                _ => format!("{conf}-{held}@virt.test"),
            };
            let case = format!("{agent}:{param}={conf}:held={held}");
            let want = fx
                .iter()
                .find(|(c, _)| *c == case)
                .unwrap_or_else(|| panic!("no fixture line for {case}"))
                .1
                .replace(placeholder, &logged);
            let lock = hold(held, &mbox, uid, gid);
            smtp_send(
                inst.port,
                "sender@example.org",
                &[&rcpt],
                &format!("Subject: {case}\n\nbody\n"),
            );
            let got = status_for(&inst, &rcpt);
            drop(lock);
            assert_eq!(got, want, "{case}");
            if got.contains("status=sent") {
                sent[i] += 1;
            }
        }
        // What was sent is in the mailbox, once each.
        assert_eq!(messages_in(&mbox), sent[i], "{agent}");
    }
    // Two of three per agent: only the configured kind holds a delivery up.
    assert_eq!(sent, [2, 2, 2]);
    let _ = std::fs::remove_file(home.join(".forward"));
}

#[test]
fn flock_alone_is_taken_when_named() {
    each_held_kind_against("flock");
}

#[test]
fn fcntl_alone_is_taken_when_named() {
    each_held_kind_against("fcntl");
}

#[test]
fn dotlock_alone_is_taken_when_named() {
    each_held_kind_against("dotlock");
}

/// Postfix's default, `fcntl, dotlock`: both hold a delivery up, flock does not.
#[test]
fn the_default_takes_fcntl_and_dotlock() {
    if !is_root() {
        return;
    }
    let (inst, uid, gid) = start("");
    let (_, mbox, logged) = boxes(&inst)[0].clone();
    let logged = logged.join(USER);
    for (held, want) in [
        (
            "flock",
            "dsn=2.0.0, status=sent (delivered to mailbox)".to_string(),
        ),
        (
            "fcntl",
            format!(
                "dsn=4.2.0, status=deferred (cannot update mailbox {} for user {USER}. unable to lock for exclusive access: Resource temporarily unavailable)",
                logged.display()
            ),
        ),
        (
            "dotlock",
            format!(
                "dsn=4.2.0, status=deferred (cannot update mailbox {p} for user {USER}. unable to create lock file {p}.lock: File exists)",
                p = logged.display()
            ),
        ),
    ] {
        let rcpt = format!("{USER}+default-{held}@localhost");
        let lock = hold(held, &mbox, uid, gid);
        smtp_send(
            inst.port,
            "sender@example.org",
            &[&rcpt],
            "Subject: d\n\nbody\n",
        );
        let got = status_for(&inst, &rcpt);
        drop(lock);
        assert_eq!(got, want, "held {held}");
    }
}

/// The fixture's bad values, one after another (`postconf -e`, `postfix reload`): each is
/// shown by postconf as it is, without a warning, as Postfix's postconf shows it; each
/// delivery logs the agent's `fatal:` line word for word and delivers nothing; with the
/// value fixed, a flush delivers every message once.
#[test]
fn bad_lock_values_are_refused_in_postfix_words_and_lose_nothing() {
    if !is_root() {
        return;
    }
    let fx = fixture();
    let (inst, _, _) = start("");
    let cases: Vec<&str> = fx
        .iter()
        .filter(|(c, _)| !c.contains(":held=") && !c.contains("sun_mailtool"))
        .map(|(c, _)| c.as_str())
        .fold(Vec::new(), |mut v, c| {
            if !v.contains(&c) {
                v.push(c);
            }
            v
        });
    assert!(cases.len() >= 5, "{cases:?}");
    let postconf = |args: &[&str]| {
        std::process::Command::new(BIN)
            .arg("postconf")
            .arg("-c")
            .arg(inst.config_dir())
            .args(args)
            .output()
            .unwrap()
    };
    let [(_, local_box, _), (_, virtual_box, _)] = boxes(&inst);
    let mut counts = [0usize; 2];
    for (n, case) in cases.iter().enumerate() {
        let (agent, setting) = case.split_once(':').unwrap();
        let (param, value) = setting.split_once('=').unwrap();
        let lines: Vec<&str> = fx
            .iter()
            .filter(|(c, _)| c == case)
            .map(|(_, t)| t.as_str())
            .collect();
        let out = postconf(&["-e", &format!("{param} = {value}")]);
        assert!(out.status.success(), "{out:?}");
        let out = inst.postfix(&["reload"]);
        assert!(out.status.success(), "{out:?}");
        // postconf shows it and says nothing else (no warning).
        let out = postconf(&[param]);
        let shown = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let want: Vec<String> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("postconf: "))
            .map(str::to_string)
            .collect();
        assert_eq!(
            shown.lines().map(str::trim_end).collect::<Vec<_>>(),
            want.iter().map(|s| s.trim_end()).collect::<Vec<_>>(),
            "{case}"
        );
        let fatal = lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{agent}: ")))
            .filter(|l| l.starts_with("fatal: "))
            .unwrap_or_else(|| panic!("no fatal line for {case}"));
        let rcpt = match agent {
            "local" => format!("{USER}+bad{n}@localhost"),
            _ => format!("bad{n}@virt.test"),
        };
        smtp_send(
            inst.port,
            "sender@example.org",
            &[&rcpt],
            "Subject: bad\n\nbody\n",
        );
        let got = status_for(&inst, &rcpt);
        // Postfix's queue manager waits for the throttled agent and logs no status;
        // Postern defers with the words for an agent that died (see local(8) BUGS).
        assert_eq!(
            got.split(", ").skip(1).collect::<Vec<_>>().join(", "),
            "status=deferred (unknown mail transport error)",
            "{case}"
        );
        let log = inst.log();
        let needle = format!("postfix/{agent}[");
        assert!(
            log.lines()
                .any(|l| l.contains(&needle) && l.trim_end().ends_with(fatal.trim_end())),
            "{case}: no `{needle}…]: {fatal}`:\n{log}"
        );
        counts[usize::from(agent == "virtual")] += 1;
        // Nothing written.
        assert_eq!(messages_in(&local_box), 0, "{case}");
        assert_eq!(messages_in(&virtual_box), 0, "{case}");
        // The other agent's parameter is Postfix's default again for the next case.
        let out = postconf(&["-e", &format!("{param} = fcntl, dotlock")]);
        assert!(out.status.success(), "{out:?}");
    }
    // Fixed (every case restored its parameter): a flush delivers what waited, once.
    let out = inst.postfix(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let done = || messages_in(&local_box) == counts[0] && messages_in(&virtual_box) == counts[1];
    for _ in 0..30 {
        let out = inst.postfix(&["flush"]);
        assert!(out.status.success(), "{out:?}");
        if poll(Duration::from_secs(5), || done().then_some(())).is_some() {
            break;
        }
    }
    assert_eq!(messages_in(&local_box), counts[0], "{}", inst.log());
    assert_eq!(messages_in(&virtual_box), counts[1], "{}", inst.log());
}

/// The obsolete `sun_mailtool_compatibility = yes` with the default lock value: local(8)
/// warns once in Postfix's words and takes only the dotlock, so a held flock or fcntl lock
/// does not hold the delivery up and a held dotlock does (the fixture's
/// `local:sun_mailtool_compatibility=yes` cases); with `mailbox_delivery_lock = fcntl`
/// nothing is left, which is local(8)'s `fatal:` after the same warning, and nothing is
/// delivered.
#[test]
fn sun_mailtool_compatibility_keeps_only_the_dotlock() {
    if !is_root() {
        return;
    }
    let fx = fixture();
    let case = "local:sun_mailtool_compatibility=yes";
    let (inst, uid, gid) = start_plus("", "sun_mailtool_compatibility = yes\n");
    let (_, mbox, logged) = boxes(&inst)[0].clone();
    let mut sent = 0;
    for held in KINDS {
        let want = fx
            .iter()
            .find(|(c, _)| *c == format!("{case}:held={held}"))
            .unwrap_or_else(|| panic!("no fixture line for {case}:held={held}"))
            .1
            .replace("MAIL", &logged.display().to_string());
        let rcpt = format!("{USER}+mailtool-{held}@localhost");
        let lock = hold(held, &mbox, uid, gid);
        smtp_send(
            inst.port,
            "sender@example.org",
            &[&rcpt],
            "Subject: m\n\nbody\n",
        );
        let got = status_for(&inst, &rcpt);
        drop(lock);
        assert_eq!(got, want, "held {held}");
        sent += usize::from(got.contains("status=sent"));
    }
    assert_eq!(sent, 2);
    assert_eq!(messages_in(&mbox), 2);
    let fixture_lines = |c: &str| -> Vec<String> {
        fx.iter()
            .filter(|(x, _)| x == c)
            .filter_map(|(_, t)| t.strip_prefix("local: "))
            .map(str::to_string)
            .collect()
    };
    let warning = fixture_lines(case);
    assert_eq!(warning.len(), 1, "{warning:?}");
    let log = inst.log();
    let local_lines = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| {
                l.contains("postfix/local[") && (l.contains("warning: ") || l.contains("fatal: "))
            })
            .map(|l| l[l.find("]: ").unwrap() + 3..].to_string())
            .collect()
    };
    // One delivery process: the warning once, before its deliveries.
    assert_eq!(local_lines(&log), warning, "{log}");
    let first_status = log.find("status=").unwrap();
    assert!(log.find(&warning[0]).unwrap() < first_status, "{log}");

    // `fcntl` alone: the warning, then the fatal line, and nothing delivered.
    let case = "local:sun_mailtool_compatibility=yes:mailbox_delivery_lock=fcntl";
    let want = fixture_lines(case);
    assert_eq!(want.len(), 2, "{want:?}");
    let out = std::process::Command::new(BIN)
        .args(["postconf", "-c"])
        .arg(inst.config_dir())
        .args(["-e", "mailbox_delivery_lock = fcntl"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let before = local_lines(&inst.log()).len();
    let out = inst.postfix(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let rcpt = format!("{USER}+mailtool-fatal@localhost");
    smtp_send(
        inst.port,
        "sender@example.org",
        &[&rcpt],
        "Subject: f\n\nbody\n",
    );
    let got = status_for(&inst, &rcpt);
    assert!(
        got.ends_with("status=deferred (unknown mail transport error)"),
        "{got}"
    );
    let lines = local_lines(&inst.log());
    assert_eq!(
        lines[before..lines.len().min(before + 2)],
        want[..],
        "{lines:?}"
    );
    assert_eq!(messages_in(&mbox), 2);
}
