//! The test kit: what the integration tests share, so that each test file keeps only its
//! scenarios.
//!
//! - the built binary ([`BIN`], [`postern`]) and the repository's fixtures;
//! - [`wait`]: the one poll loop ([`wait_until`], [`wait_for`], [`poll`], [`wait_port`],
//!   [`wait_file`], [`wait_text`], [`wait_exit`]), never a fixed sleep;
//! - [`host`]: [`have`] a program, [`is_root`], [`free_port`], `/proc` readers, Python,
//!   a self-signed certificate;
//! - [`clients`]: raw SMTP and POP3 clients ([`Smtp`], [`Pop`], [`connect_from`]);
//! - [`instance`]: Postern mail systems started with `postfix start` ([`Instance`],
//!   [`Daemon`]);
//! - [`daemons`]: other programs started as their admins start them, Postern's or the
//!   real ones (saslauthd);
//! - test users ([`TestUser`], [`mail_user`], [`test_mail_owner`]);
//! - [`replay`]: running the guide and swap replay scripts;
//! - [`sink`]: a scripted SMTP peer for the outbound side ([`Sink`]).
//!
//! Every test binary compiles the whole kit and uses a part of it, hence `dead_code`
//! is allowed here.
#![allow(dead_code)]

pub mod clients;
pub mod daemons;
pub mod host;
pub mod instance;
pub mod replay;
pub mod sink;
pub mod wait;

// Each test binary uses some of these.
#[allow(unused_imports)]
pub use {clients::*, daemons::*, host::*, instance::*, sink::*, wait::*};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The built `postern` binary (one binary for every command; argv[0] or the first
/// argument picks the command).
pub const BIN: &str = env!("CARGO_BIN_EXE_postern");

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `postern CMD ARGS…` from the repository root (fixtures use relative paths).
pub fn postern(cmd: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg(cmd)
        .args(args)
        .current_dir(repo_root())
        .env("LANG", "C")
        .env_remove("MAIL_CONFIG")
        .output()
        .expect("run postern")
}

/// Distinct stderr lines, sorted: the real postconf prints some warnings several times
/// and in hash-table order, so tests compare the set (see compat-fixtures/README.md).
pub fn line_set(s: &[u8]) -> BTreeSet<String> {
    // Fixtures made by running /usr/sbin/postconf carry that path as the program name.
    String::from_utf8_lossy(s)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix("/usr/sbin/").unwrap_or(l).to_string())
        .collect()
}

/// The lines where a script's output differs from the real program's recorded in a
/// fixture, each as a `Postfix:`/`Postern:` pair (lines compared in order; the counts are
/// the caller's to compare).
pub fn fixture_line_diffs(want: &str, got: &str) -> Vec<String> {
    want.lines()
        .zip(got.lines())
        .filter(|(w, g)| w != g)
        .map(|(w, g)| format!("Postfix: {w}\nPostern: {g}"))
        .collect()
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

pub fn read_rc(p: &Path) -> i32 {
    String::from_utf8_lossy(&read(p))
        .trim()
        .parse()
        .expect("rc file")
}

/// Fixture directories under `compat-fixtures/<kind>/`, sorted.
pub fn fixture_dirs(kind: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo_root().join("compat-fixtures").join(kind))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The user services run as in tests: when root, a system user created on demand
/// (idempotent); otherwise the invoking user.
pub fn test_mail_owner() -> String {
    if nix::unistd::Uid::effective().is_root() {
        let name = "postern-test";
        if nix::unistd::User::from_name(name).ok().flatten().is_none() {
            let _ = std::process::Command::new("useradd")
                .args(["-r", "-M", "-s", "/usr/sbin/nologin", name])
                .status();
        }
        name.to_string()
    } else {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| "nobody".into())
    }
}

/// A system user with a known password (root only), removed on drop. `method` is
/// chpasswd's `-c` value (`YESCRYPT`, `SHA512`).
pub struct TestUser(pub String);

impl TestUser {
    pub fn create(name: &str, password: &str, method: &str) -> Option<TestUser> {
        use std::io::Write;
        if !nix::unistd::Uid::effective().is_root() {
            return None;
        }
        let _ = std::process::Command::new("userdel").arg(name).output();
        let ok = std::process::Command::new("useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return None;
        }
        let mut c = std::process::Command::new("chpasswd")
            .args(["-c", method])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        c.stdin
            .take()?
            .write_all(format!("{name}:{password}\n").as_bytes())
            .ok()?;
        c.wait().ok()?.success().then(|| TestUser(name.to_string()))
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel").arg(&self.0).output();
    }
}

/// The uid and gid the mail sessions of a test run as: when root, the system user `name`
/// (created if missing: no home, no shell; idempotent); otherwise the invoking user's.
pub fn user_ids(name: &str) -> (u32, u32) {
    if nix::unistd::geteuid().is_root() {
        if nix::unistd::User::from_name(name).ok().flatten().is_none() {
            let _ = Command::new("useradd")
                .args(["-M", "-s", "/usr/sbin/nologin", name])
                .output();
        }
        if let Ok(Some(u)) = nix::unistd::User::from_name(name) {
            return (u.uid.as_raw(), u.gid.as_raw());
        }
    }
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

static MAIL_USERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A local system user with a home directory, created once and kept (idempotent), for tests
/// that deliver mail to it; `None` when not root.
pub fn mail_user(name: &str) -> Option<PathBuf> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let _g = MAIL_USERS.lock().unwrap_or_else(|p| p.into_inner());
    if nix::unistd::User::from_name(name).ok().flatten().is_none() {
        let _ = Command::new("useradd")
            .args(["-m", "-s", "/usr/sbin/nologin", name])
            .status();
    }
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| u.dir)
}

/// Run `cmd` as `cmd | head -1` runs it: standard output on a pipe (made small, 4 KB, so
/// that the command is still writing), one line read, then the reading end closed. Returns
/// the line, the exit status and standard error.
pub fn head_1(cmd: &mut Command) -> (String, std::process::ExitStatus, String) {
    use std::io::{BufRead, Read};
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    // SAFETY: fcntl on a pipe descriptor we own.
    unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&w),
            libc::F_SETPIPE_SZ,
            4096,
        )
    };
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(w))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // `cmd` holds the parent's copy of the write end until dropped by the caller; the
    // Stdio moved into the child's setup is closed in this process after spawn.
    let mut reader = std::io::BufReader::new(std::fs::File::from(r));
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    drop(reader);
    let mut err = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    let st = child.wait().expect("wait");
    (line, st, err)
}

/// What the POP3/IMAP tests log in to: alice's home under `dir` (`home/alice`, with
/// `mail/` and the mbox INBOX `inbox` holding `mbox`) and a passwd-file `dir/passwd`
/// giving her the password `secret`; the home and mailbox owned by `ids` (the mail user),
/// `dir` searchable by all (the mail process runs as that user).
pub fn alice_mbox_home(dir: &Path, mbox: &str, (uid, gid): (u32, u32)) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let home = dir.join("home/alice");
    std::fs::create_dir_all(home.join("mail")).expect("mkdir");
    std::fs::write(dir.join("passwd"), "alice:{PLAIN}secret::::::\n").expect("passwd");
    std::fs::write(home.join("inbox"), mbox).expect("inbox");
    for p in [
        dir.join("home"),
        home.clone(),
        home.join("mail"),
        home.join("inbox"),
    ] {
        let _ = nix::unistd::chown(
            &p,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        );
    }
}
