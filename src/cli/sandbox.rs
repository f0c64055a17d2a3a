//! `postern sandbox [--check-only] [DIR]`: the whole mail system on loopback ports, for
//! trying Postern without touching `/etc` — SMTP with AUTH (Postfix's smtpd), Cyrus
//! saslauthd, and Dovecot's POP3 and IMAP — run as root or as any user, with a mail user
//! and password it makes up and prints.
//!
//! What it does, in order:
//! 1. Writes into DIR (default: a new `postern-sandbox-PID` in the temp directory) a
//!    Postfix `main.cf`/`master.cf`, a Dovecot 2.x `dovecot.conf`, the passwd-file `users`
//!    (the mail user `sandbox`, a random password stored as a SHA512-CRYPT hash), the
//!    virtual mailbox table `vmailbox` and an `aliases` table. Ports are free loopback
//!    ports picked at each run.
//! 2. Shows `postconf -n` and checks the files as `postfix check` and `doveconf -n` do
//!    (`--check-only` stops here).
//! 3. Starts the daemons the way admins start them, each detached:
//!    `saslauthd -a rimap -O 127.0.0.1/IMAPPORT -m DIR/saslauthd`, `dovecot -c
//!    DIR/dovecot.conf`, `postfix -c DIR start` — saslauthd and Dovecot first, so that
//!    smtpd offers AUTH only with a password check behind it.
//! 4. Asks the IMAP port for a greeting: what runs is printed as it is (an IMAP port that
//!    does not answer is said so, with `DIR/dovecot.log` to look at), with a ready-to-paste
//!    command for each service (`swaks … --auth-user`, `curl pop3://`, `curl imap://`,
//!    `testsaslauthd`), then follows `DIR/maillog` and `DIR/dovecot.log` on the terminal.
//! 5. On SIGINT (Ctrl-C), SIGTERM or SIGHUP — or when standard output goes away
//!    (`postern sandbox | head -1`) or one of the daemons dies — stops everything it started
//!    (`postfix stop`, `dovecot stop`, SIGTERM to saslauthd), waits until no process of the
//!    sandbox is left, and says where the files are. Nothing in DIR is removed.
//!
//! How the password is checked, and why: the sandbox user is not a system user (no root
//! is needed to make one, and `/etc` stays untouched), so every check goes to the
//! passwd-file `DIR/users` through Dovecot. POP3 and IMAP read it as a `passdb
//! passwd-file`. smtpd asks Dovecot too, through the auth socket `postern dovecot` opens
//! for it (`smtpd_sasl_type = dovecot`, `service auth { unix_listener }`): the setup
//! Postfix's SASL_README gives first for Dovecot, and one that works whatever Dovecot
//! serves. Cyrus saslauthd can only check a user that is not a system user with `-a
//! rimap`, an IMAP LOGIN at the IMAP server: it runs so, pointed at the sandbox's IMAP
//! port (were IMAP not answering it would say `NO`, and the sandbox says so rather than
//! printing a command that fails).
//!
//! Mail for `sandbox@sandbox.test` is delivered by virtual(8) to the mbox `DIR/vmail/sandbox`
//! (`virtual_mailbox_domains`), where Dovecot's `mail_location` reads it. Mail for
//! `USER@localhost` goes to `DIR/mail/USER` (local(8)); mail for other domains stays in
//! the queue (`default_transport = retry:…`: the sandbox sends nothing out).
//!
//! Privileges: not root, every process runs as the invoking user, and mailboxes belong to
//! it. As root, the services need an unprivileged account: `postfix` if the system has
//! one, else `postern`, which the sandbox creates (`useradd --system`) after saying so;
//! that account is `mail_owner` and owns the sandbox user's mailbox; Dovecot's login
//! process runs as `dovenull` (else the same account).
//!
//! Known limits: the ports are picked free but not held, so another program may take one
//! before the daemons bind it (the start then fails and says which); saslauthd logs to
//! syslog only, as Cyrus's does without `-d`.

use std::io::{Read, Seek, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// The sandbox's mail user and its domain.
const MAIL_USER: &str = "sandbox";
const MAIL_DOMAIN: &str = "sandbox.test";

const USAGE: &str = "usage: postern sandbox [--check-only] [DIR]

Run the whole mail system on loopback ports: Postfix's SMTP with AUTH, Cyrus saslauthd
and Dovecot's POP3 and IMAP, configured in DIR (default: a new
directory in the temp directory), with a mail user and password it prints. Works as root
or as any user; touches nothing outside DIR (as root without a `postfix` account it
creates the system account `postern`, and says so first). Ctrl-C stops everything it
started; the files stay in DIR.

  --check-only   write the configuration and check it, start nothing
  -h, --help     this text
";

/// The signal that asked the sandbox to stop (0: none yet).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
}

fn stop_requested() -> bool {
    STOP_SIGNAL.load(Ordering::SeqCst) != 0
}

/// Standard output went away (`EPIPE`): stop, then end as a Unix tool does.
struct Gone;

/// Standard output, written line by line and flushed, so that a reader that went away is
/// noticed at the next line (Rust's `println!` would panic instead).
struct Out;

impl Out {
    fn line(&self, s: &str) -> Result<(), Gone> {
        let mut o = std::io::stdout().lock();
        o.write_all(s.as_bytes())
            .and_then(|_| o.write_all(b"\n"))
            .and_then(|_| o.flush())
            .map_err(|_| Gone)
    }

    /// Whether the reader of a pipe on standard output has gone (`POLLERR`), or a terminal
    /// hung up, without writing anything.
    fn closed(&self) -> bool {
        crate::sys::stdout_gone()
    }
}

/// Who the services run as.
#[derive(Debug, Clone)]
struct Identity {
    root: bool,
    /// `mail_owner`, and the owner of the sandbox user's mailbox.
    account: String,
    uid: u32,
    gid: u32,
    /// As root: the user of Dovecot's login process.
    login_user: Option<String>,
    /// Whose local mail `USER@localhost` is (the invoking user).
    local_user: String,
}

/// Where the sandbox lives, and the binary that runs its daemons: all that stopping needs.
struct Place {
    dir: PathBuf,
    exe: PathBuf,
}

impl Place {
    fn d(&self) -> String {
        self.dir.display().to_string()
    }
    fn dovecot_conf(&self) -> PathBuf {
        self.dir.join("dovecot.conf")
    }
    fn auth_socket(&self) -> PathBuf {
        self.dir.join("run/auth-postfix")
    }
    fn saslauthd_dir(&self) -> PathBuf {
        self.dir.join("saslauthd")
    }
    fn master_pid_file(&self) -> PathBuf {
        self.dir.join("spool/pid/master.pid")
    }
    fn dovecot_pid_file(&self) -> PathBuf {
        self.dir.join("run/master.pid")
    }
    fn saslauthd_pid_file(&self) -> PathBuf {
        self.saslauthd_dir().join("saslauthd.pid")
    }

    /// `postern NAME ARGS…` as a child, shown in `ps` under the command's own name.
    fn command(&self, name: &str, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg0(name).args(args).stdin(Stdio::null());
        c
    }
}

/// The sandbox's place, ports and secrets.
struct Sandbox {
    place: Place,
    smtp: u16,
    pop3: u16,
    imap: u16,
    password: String,
    id: Identity,
}

impl std::ops::Deref for Sandbox {
    type Target = Place;
    fn deref(&self) -> &Place {
        &self.place
    }
}

pub fn main(args: &[String]) -> i32 {
    let mut check_only = false;
    let mut dir: Option<PathBuf> = None;
    for a in args {
        match a.as_str() {
            "-h" | "--help" => {
                crate::cli::default_sigpipe();
                print!("{USAGE}");
                return 0;
            }
            "--check-only" => check_only = true,
            o if o.starts_with('-') => {
                eprintln!("postern: sandbox: unknown option: {o}");
                eprint!("{USAGE}");
                return 1;
            }
            d if dir.is_none() => dir = Some(PathBuf::from(d)),
            d => {
                eprintln!("postern: sandbox: one directory only (got {d} too)");
                eprint!("{USAGE}");
                return 1;
            }
        }
    }
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("postern-sandbox-{}", std::process::id()))
    });
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    {
        use nix::sys::signal::Signal;
        // on_signal only stores into an atomic, which is async-signal-safe.
        crate::sys::on_signals(
            &[Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP],
            on_signal,
        );
    }
    let out = Out;
    let mut started = false;
    match run(&dir, check_only, &out, &mut started) {
        Ok(code) => code,
        Err(Gone) => {
            // The reader went away (`| head -1`): stop what runs, then end as Unix tools
            // end on a closed pipe, quietly, by SIGPIPE.
            if started && let Ok(exe) = std::env::current_exe() {
                stop_all(&Place { dir, exe }, None);
            }
            crate::cli::default_sigpipe();
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGPIPE);
            141
        }
    }
}

fn run(dir: &Path, check_only: bool, out: &Out, started: &mut bool) -> Result<i32, Gone> {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("postern: sandbox: cannot find the postern binary: {e}");
            return Ok(1);
        }
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!(
            "postern: sandbox: mkdir {}: {}",
            dir.display(),
            crate::config::error::strerror(&e)
        );
        return Ok(1);
    }
    let id = match identity(out)? {
        Ok(i) => i,
        Err(e) => {
            eprintln!("postern: sandbox: {e}");
            return Ok(1);
        }
    };
    let (smtp, pop3, imap) = free_ports();
    let sb = Sandbox {
        place: Place {
            dir: dir.to_path_buf(),
            exe,
        },
        smtp,
        pop3,
        imap,
        password: new_password(),
        id,
    };
    if let Some(what) = already_running(&sb) {
        eprintln!(
            "postern: sandbox: {what} already runs in {}: stop it first (Ctrl-C in its terminal)",
            sb.d()
        );
        return Ok(1);
    }
    if let Err(e) = write_config(&sb) {
        eprintln!(
            "postern: sandbox: write {}: {}",
            sb.d(),
            crate::config::error::strerror(&e)
        );
        return Ok(1);
    }
    let d = sb.d();
    out.line(&format!(
        "Postern sandbox in {d}: loopback ports only; mail for other domains stays queued."
    ))?;
    out.line("")?;
    out.line(&format!("$ postconf -c {d} -n"))?;
    let pc = sb.command("postconf", &["-c", &d, "-n"]).output();
    match pc {
        Ok(o) if o.status.success() => {
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                out.line(l)?;
            }
        }
        Ok(o) => {
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
            return Ok(o.status.code().unwrap_or(1));
        }
        Err(e) => {
            eprintln!("postern: sandbox: postconf: {e}");
            return Ok(1);
        }
    }
    out.line(&format!("$ postfix -c {d} check"))?;
    let rc = super::postfix_check::run_with(&sb.dir, Some(&sb.dovecot_conf()));
    if rc != 0 {
        return Ok(rc);
    }
    let dc = sb.dovecot_conf().display().to_string();
    out.line(&format!("$ doveconf -c {dc} -n >/dev/null"))?;
    match sb.command("doveconf", &["-c", &dc, "-n"]).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
            return Ok(o.status.code().unwrap_or(1));
        }
        Err(e) => {
            eprintln!("postern: sandbox: doveconf: {e}");
            return Ok(1);
        }
    }
    if check_only {
        return Ok(0);
    }
    if sb.id.root
        && let Err(e) = give_to_account(&sb)
    {
        eprintln!(
            "postern: sandbox: chown: {}",
            crate::config::error::strerror(&e)
        );
        return Ok(1);
    }
    // Follow the logs from here on (earlier runs in DIR left theirs).
    let mut tails = vec![
        Tail::new(sb.dir.join("maillog")),
        Tail::new(sb.dir.join("dovecot.log")),
    ];
    out.line("")?;
    *started = true;
    let ok = start_all(&sb, out)?;
    if !ok || stop_requested() {
        for t in &mut tails {
            t.drain(out)?;
        }
        stop_all(&sb, Some(out));
        if !ok {
            eprintln!(
                "postern sandbox: the start failed; what had started is stopped. The files stay \
                 in {d} (logs: {d}/maillog, {d}/dovecot.log)."
            );
        }
        return Ok(if ok { 0 } else { 1 });
    }
    let imap_served = imap_answers(sb.imap);
    print_summary(&sb, imap_served, out)?;
    // Serve until asked to stop.
    let mut last_check = Instant::now();
    let why = loop {
        for t in &mut tails {
            t.drain(out)?;
        }
        if stop_requested() {
            break None;
        }
        if out.closed() {
            return Err(Gone);
        }
        if last_check.elapsed() >= Duration::from_secs(1) {
            last_check = Instant::now();
            if let Some(dead) = dead_daemon(&sb) {
                break Some(dead);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for t in &mut tails {
        t.drain(out)?;
    }
    out.line("")?;
    match why {
        None => out.line(&format!(
            "postern sandbox: {}: stopping everything it started",
            signal_name(STOP_SIGNAL.load(Ordering::SeqCst))
        ))?,
        Some(dead) => out.line(&format!(
            "postern sandbox: {dead} is no longer running (see the log above): stopping the rest"
        ))?,
    }
    let clean = stop_all(&sb, Some(out));
    out.line(&format!(
        "The files stay in {d}: main.cf, master.cf, dovecot.conf, users; maillog and dovecot.log; \
         spool/ (the queue), vmail/{MAIL_USER} (the sandbox user's mailbox), mail/ (local mailboxes). \
         Remove them with: rm -rf {d}"
    ))?;
    Ok(if why.is_none() && clean { 0 } else { 1 })
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// Three free loopback ports, distinct (held together while picked).
fn free_ports() -> (u16, u16, u16) {
    let ls: Vec<TcpListener> = (0..3)
        .filter_map(|_| TcpListener::bind("127.0.0.1:0").ok())
        .collect();
    let p: Vec<u16> = ls
        .iter()
        .filter_map(|l| l.local_addr().ok().map(|a| a.port()))
        .collect();
    match p.as_slice() {
        [a, b, c] => (*a, *b, *c),
        _ => (10025, 10110, 10143),
    }
}

/// 16 letters and digits from the system's random source (safe in a URL and a shell).
fn new_password() -> String {
    use ring::rand::SecureRandom;
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut b = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No random source: the time is a poor secret, but the services are on loopback.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = t.to_le_bytes();
    }
    b.iter()
        .map(|x| CHARS[usize::from(*x) % CHARS.len()] as char)
        .collect()
}

/// Who runs the services. As root without a `postfix` or `postern` account, `postern` is
/// created (after saying so); `Err` when that fails.
fn identity(out: &Out) -> Result<Result<Identity, String>, Gone> {
    use nix::unistd::{Uid, User};
    let invoking = User::from_uid(Uid::current())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| Uid::current().to_string());
    if !Uid::effective().is_root() {
        return Ok(Ok(Identity {
            root: false,
            account: invoking.clone(),
            uid: Uid::current().as_raw(),
            gid: nix::unistd::Gid::current().as_raw(),
            login_user: None,
            local_user: invoking,
        }));
    }
    let lookup = |n: &str| User::from_name(n).ok().flatten();
    // Postfix refuses to run its services as root, or as default_privs (`nobody`).
    let account = match lookup("postfix").or_else(|| lookup("postern")) {
        Some(u) => u,
        None => {
            let shell = ["/usr/sbin/nologin", "/sbin/nologin", "/bin/false"]
                .into_iter()
                .find(|s| Path::new(s).exists())
                .unwrap_or("/bin/false");
            let args = [
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                shell,
                "postern",
            ];
            out.line(
                "postern sandbox: as root the mail services need an unprivileged account, and \
                 this system has neither `postfix` nor `postern`.",
            )?;
            out.line(&format!(
                "postern sandbox: creating the system account `postern`: useradd {} \
                 (remove it later with: userdel postern)",
                args.join(" ")
            ))?;
            match Command::new("useradd").args(args).status() {
                Ok(s) if s.success() => {}
                Ok(s) => return Ok(Err(format!("useradd postern failed ({s})"))),
                Err(e) => return Ok(Err(format!("useradd: {e}"))),
            }
            match lookup("postern") {
                Some(u) => u,
                None => return Ok(Err("useradd postern: the account is not there".into())),
            }
        }
    };
    let login_user = if lookup("dovenull").is_some() {
        "dovenull".to_string()
    } else {
        account.name.clone()
    };
    Ok(Ok(Identity {
        root: true,
        account: account.name.clone(),
        uid: account.uid.as_raw(),
        gid: account.gid.as_raw(),
        login_user: Some(login_user),
        local_user: invoking,
    }))
}

/// A daemon of an earlier sandbox still running in the same directory.
fn already_running(sb: &Place) -> Option<String> {
    if let Some(pid) = crate::master::lock::running_pid(&sb.master_pid_file()) {
        return Some(format!("a Postfix master (pid {pid})"));
    }
    for (what, f) in [
        ("a dovecot", sb.dovecot_pid_file()),
        ("a saslauthd", sb.saslauthd_pid_file()),
    ] {
        if let Some(pid) = pid_from(&f).filter(|p| alive(*p)) {
            return Some(format!("{what} (pid {pid})"));
        }
    }
    None
}

fn pid_from(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Write the configuration into the sandbox directory.
fn write_config(sb: &Sandbox) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = &sb.dir;
    let d = sb.d();
    let id = &sb.id;
    for sub in [
        "spool",
        "data",
        "mail",
        "vmail",
        "run",
        "home",
        "home/sandbox/mail",
    ] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    // Local mailboxes are created by each recipient, as in /var/mail.
    std::fs::set_permissions(dir.join("mail"), std::fs::Permissions::from_mode(0o1777))?;
    let min_uid = if id.uid < 100 {
        format!("virtual_minimum_uid = {}\n", id.uid)
    } else {
        String::new()
    };
    std::fs::write(
        dir.join("main.cf"),
        format!(
            "# Postern sandbox (written by `postern sandbox` at each run): loopback only.\n\
             compatibility_level = 3.7\n\
             myhostname = mail.{MAIL_DOMAIN}\n\
             mydestination = $myhostname, localhost\n\
             inet_interfaces = loopback-only\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             queue_directory = {d}/spool\n\
             data_directory = {d}/data\n\
             mail_owner = {account}\n\
             maillog_file = {d}/maillog\n\
             maillog_file_prefixes = {d}\n\
             alias_maps = texthash:{d}/aliases\n\
             mail_spool_directory = {d}/mail\n\
             # The sandbox user's domain: virtual(8) delivers to {d}/vmail/{MAIL_USER},\n\
             # where Dovecot's POP3 and IMAP read it (dovecot.conf mail_location).\n\
             virtual_mailbox_domains = {MAIL_DOMAIN}\n\
             virtual_mailbox_base = {d}/vmail\n\
             virtual_mailbox_maps = texthash:{d}/vmailbox\n\
             virtual_uid_maps = static:{uid}\n\
             virtual_gid_maps = static:{gid}\n\
             {min_uid}\
             # SMTP AUTH: smtpd asks Dovecot's auth socket (the passwd-file {d}/users).\n\
             smtpd_sasl_auth_enable = yes\n\
             smtpd_sasl_type = dovecot\n\
             smtpd_sasl_path = {sock}\n\
             broken_sasl_auth_clients = yes\n\
             smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated,\n    \
             reject_unauth_destination\n\
             # Mail for other domains stays deferred: a sandbox sends nothing to the\n\
             # Internet. Remove this line (or set relayhost) to try outbound SMTP.\n\
             default_transport = retry:4.7.0 the Postern sandbox sends no mail out\n",
            account = id.account,
            uid = id.uid,
            gid = id.gid,
            sock = sb.auth_socket().display(),
        ),
    )?;
    std::fs::write(
        dir.join("master.cf"),
        format!(
            "# service type  private unpriv  chroot  wakeup  maxproc command + args\n\
             127.0.0.1:{smtp} inet n - n - - smtpd\n\
             pickup    unix  n       -       n       60      1       pickup\n\
             cleanup   unix  n       -       n       -       0       cleanup\n\
             qmgr      unix  n       -       n       300     1       qmgr\n\
             local     unix  -       n       n       -       -       local\n\
             virtual   unix  -       n       n       -       -       virtual\n\
             smtp      unix  -       -       n       -       -       smtp\n\
             retry     unix  -       -       n       -       -       error\n\
             postlog   unix-dgram n  -       n       -       1       postlogd\n",
            smtp = sb.smtp
        ),
    )?;
    std::fs::write(
        dir.join("aliases"),
        format!("postmaster: {}\n", id.local_user),
    )?;
    std::fs::write(
        dir.join("vmailbox"),
        format!("{MAIL_USER}@{MAIL_DOMAIN} {MAIL_USER}\n"),
    )?;
    let hash = crate::auth::crypt::hash(sb.password.as_bytes(), "$6$")
        .map(|h| format!("{{SHA512-CRYPT}}{h}"))
        .ok_or_else(|| std::io::Error::other("crypt(3) could not hash the password"))?;
    let users = dir.join("users");
    std::fs::write(
        &users,
        format!(
            "{MAIL_USER}:{hash}:{}:{}::{d}/home/{MAIL_USER}::\n",
            id.uid, id.gid
        ),
    )?;
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600))?;
    let root_only = match &id.login_user {
        Some(login) => format!(
            "# As root: login processes run as {login}, mail as {account}.\n\
             default_login_user = {login}\n\
             default_internal_user = {account}\n\
             first_valid_uid = {uid}\n",
            account = id.account,
            uid = id.uid
        ),
        None => String::new(),
    };
    let socket_owner = if id.root {
        format!("    user = {}\n", id.account)
    } else {
        String::new()
    };
    std::fs::write(
        sb.dovecot_conf(),
        format!(
            "# Postern sandbox (Dovecot 2.x syntax), written by `postern sandbox` at each run.\n\
             protocols = pop3 imap\n\
             listen = 127.0.0.1\n\
             base_dir = {d}/run\n\
             log_path = {d}/dovecot.log\n\
             ssl = no\n\
             {root_only}\
             auth_mechanisms = plain login\n\
             # Log in as `{MAIL_USER}` or `{MAIL_USER}@{MAIL_DOMAIN}`.\n\
             auth_username_format = %Ln\n\
             passdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
             mail_location = mbox:~/mail:INBOX={d}/vmail/%u\n\
             service pop3-login {{\n  inet_listener pop3 {{\n    port = {pop3}\n  }}\n  \
             inet_listener pop3s {{\n    port = 0\n  }}\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    port = {imap}\n  }}\n  \
             inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
             # The socket Postfix's smtpd asks (smtpd_sasl_type = dovecot).\n\
             service auth {{\n  unix_listener {sock} {{\n    mode = 0660\n{socket_owner}  }}\n}}\n",
            pop3 = sb.pop3,
            imap = sb.imap,
            sock = sb.auth_socket().display(),
        ),
    )?;
    Ok(())
}

/// As root: the queue, the data directory and the sandbox user's mail belong to the
/// unprivileged account (as Postfix's own directories belong to `postfix`).
fn give_to_account(sb: &Sandbox) -> std::io::Result<()> {
    fn chown_tree(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(p)?;
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
        if meta.is_dir() {
            for e in std::fs::read_dir(p)? {
                chown_tree(&e?.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    for sub in ["spool", "data", "vmail", "home"] {
        chown_tree(&sb.dir.join(sub), sb.id.uid, sb.id.gid)?;
    }
    Ok(())
}

/// Start saslauthd, dovecot and postfix, in that order, each as an admin would. `false`
/// when one failed (its message is on stderr).
fn start_all(sb: &Sandbox, out: &Out) -> Result<bool, Gone> {
    let d = sb.d();
    let sasl_dir = sb.saslauthd_dir().display().to_string();
    let rimap = format!("127.0.0.1/{}", sb.imap);
    let dc = sb.dovecot_conf().display().to_string();
    let steps: [(&str, Vec<&str>, PathBuf); 3] = [
        (
            "saslauthd",
            vec!["-a", "rimap", "-O", &rimap, "-m", &sasl_dir],
            sb.saslauthd_pid_file(),
        ),
        ("dovecot", vec!["-c", &dc], sb.dovecot_pid_file()),
        ("postfix", vec!["-c", &d, "start"], sb.master_pid_file()),
    ];
    for (name, args, pid_file) in steps {
        if stop_requested() {
            return Ok(true);
        }
        out.line(&format!("$ {name} {}", args.join(" ")))?;
        let st = sb
            .command(name, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status();
        match st {
            Ok(s) if s.success() => {}
            Ok(s) => {
                let hint = if name == "saslauthd" {
                    " (saslauthd logs to syslog: journalctl -t saslauthd)"
                } else if name == "postfix" {
                    " (see the log: maillog)"
                } else {
                    ""
                };
                eprintln!("postern sandbox: {name} did not start ({s}){hint}");
                return Ok(false);
            }
            Err(e) => {
                eprintln!("postern sandbox: {name}: {e}");
                return Ok(false);
            }
        }
        // Each detached daemon writes its pid file once it runs.
        let t = Instant::now();
        while pid_from(&pid_file).is_none_or(|p| p == 0) {
            if t.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "postern sandbox: {name} started but wrote no {}",
                    pid_file.display()
                );
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(true)
}

/// Whether something answers the IMAP port with an IMAP greeting.
fn imap_answers(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let t = Instant::now();
    let mut s = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => break s,
            Err(_) if t.elapsed() < Duration::from_millis(500) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(_) => return false,
        }
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 512];
    let mut got = Vec::new();
    while !got.contains(&b'\n') && got.len() < buf.len() {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let _ = s.write_all(b"a LOGOUT\r\n");
    got.starts_with(b"* OK")
}

fn print_summary(sb: &Sandbox, imap_served: bool, out: &Out) -> Result<(), Gone> {
    let d = sb.d();
    let pw = &sb.password;
    let exe = sb.exe.display();
    let mux = sb.saslauthd_dir().join("mux");
    let mux = mux.display();
    let as_whom = if sb.id.root {
        format!("root, services as {}", sb.id.account)
    } else {
        sb.id.account.clone()
    };
    out.line("")?;
    out.line(&format!("Running ({as_whom}):"))?;
    out.line(&format!(
        "  SMTP       127.0.0.1:{}  smtpd; AUTH PLAIN LOGIN checked by Dovecot ({})",
        sb.smtp,
        sb.auth_socket().display()
    ))?;
    out.line(&format!("  POP3       127.0.0.1:{}  dovecot", sb.pop3))?;
    if imap_served {
        out.line(&format!("  IMAP       127.0.0.1:{}  dovecot", sb.imap))?;
    } else {
        out.line(&format!(
            "  IMAP       127.0.0.1:{}  not answering (see {}/dovecot.log)",
            sb.imap,
            sb.d()
        ))?;
    }
    out.line(&format!(
        "  saslauthd  {mux}  -a rimap: a password is right when the IMAP server at 127.0.0.1:{} \
         accepts it{}",
        sb.imap,
        if imap_served {
            ""
        } else {
            " (so it answers NO while IMAP does not answer)"
        }
    ))?;
    out.line("")?;
    out.line(&format!(
        "Mail user: {MAIL_USER}@{MAIL_DOMAIN}, login {MAIL_USER}, password {pw} \
         (in {d}/users as a SHA512-CRYPT hash)"
    ))?;
    out.line("")?;
    out.line("Try, from another terminal:")?;
    out.line(&format!(
        "  swaks --server 127.0.0.1:{} --to {MAIL_USER}@{MAIL_DOMAIN} --auth-user {MAIL_USER} --auth-password {pw}",
        sb.smtp
    ))?;
    out.line(&format!(
        "  curl pop3://{MAIL_USER}:{pw}@127.0.0.1:{}/1",
        sb.pop3
    ))?;
    let imap_cmd = format!(
        "curl 'imap://{MAIL_USER}:{pw}@127.0.0.1:{}/INBOX;MAILINDEX=1'",
        sb.imap
    );
    let sasl_cmd = format!("{exe} testsaslauthd -f {mux} -u {MAIL_USER} -p {pw}");
    if imap_served {
        out.line(&format!("  {imap_cmd}"))?;
        out.line(&format!("  {sasl_cmd}"))?;
    } else {
        out.line("Once IMAP answers (these fail until then):")?;
        out.line(&format!("  # {imap_cmd}"))?;
        out.line(&format!("  # {sasl_cmd}"))?;
    }
    out.line("")?;
    out.line(&format!(
        "Mail to {}@localhost is delivered to {d}/mail/{}; mail for other domains waits in \
         {d}/spool (default_transport = retry).",
        sb.id.local_user, sb.id.local_user
    ))?;
    out.line(&format!(
        "Logs: {d}/maillog (Postfix), {d}/dovecot.log (Dovecot), syslog (saslauthd). \
         New lines follow; Ctrl-C stops everything."
    ))?;
    out.line("")?;
    Ok(())
}

/// Follows one log file from where it ended when the sandbox started.
struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn new(path: PathBuf) -> Tail {
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Tail {
            path,
            offset,
            partial: Vec::new(),
        }
    }

    /// Print the complete lines added since the last call.
    fn drain(&mut self, out: &Out) -> Result<(), Gone> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Ok(());
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            self.offset = 0; // truncated or replaced
        }
        if len == self.offset || f.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let n = f.take(1 << 20).read_to_end(&mut buf).unwrap_or(0);
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf[..n]);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            out.line(String::from_utf8_lossy(&line[..line.len() - 1]).trim_end_matches('\r'))?;
        }
        Ok(())
    }
}

/// The daemon that stopped running, if one did.
fn dead_daemon(sb: &Place) -> Option<&'static str> {
    if crate::master::lock::running_pid(&sb.master_pid_file()).is_none() {
        return Some("the Postfix master");
    }
    if !pid_from(&sb.dovecot_pid_file()).is_some_and(alive) {
        return Some("dovecot");
    }
    if !pid_from(&sb.saslauthd_pid_file()).is_some_and(alive) {
        return Some("saslauthd");
    }
    None
}

/// Stop everything started in the sandbox directory, as an admin would (`postfix stop`,
/// `dovecot stop`, SIGTERM to saslauthd), then wait until no Postern process of the
/// sandbox is left; one still there after 10 s is killed. Progress goes to `out` when
/// given. Returns whether everything ended by itself.
fn stop_all(sb: &Place, out: Option<&Out>) -> bool {
    let say = |s: &str| {
        if let Some(o) = out {
            let _ = o.line(s);
        }
    };
    let d = sb.d();
    let dc = sb.dovecot_conf().display().to_string();
    // Quietly: "not running" is no news when a start failed half-way.
    if crate::master::lock::running_pid(&sb.master_pid_file()).is_some() {
        say(&format!("$ postfix -c {d} stop"));
        let _ = sb
            .command("postfix", &["-c", &d, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if pid_from(&sb.dovecot_pid_file()).is_some_and(alive) {
        say(&format!("$ dovecot -c {dc} stop"));
        let _ = sb
            .command("dovecot", &["-c", &dc, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if let Some(pid) = pid_from(&sb.saslauthd_pid_file()).filter(|p| alive(*p)) {
        say(&format!("$ kill {pid}    # saslauthd"));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let t = Instant::now();
    loop {
        let left = sandbox_processes(sb);
        if left.is_empty() {
            say("postern sandbox: every process it started has ended.");
            return true;
        }
        if t.elapsed() > Duration::from_secs(10) {
            for (pid, cmd) in &left {
                say(&format!(
                    "postern sandbox: pid {pid} ({cmd}) did not end: killing it"
                ));
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Postern processes (this executable) other than this one whose arguments name the
/// sandbox directory: the daemons and their children (`qmgr -c DIR`,
/// `dovecot/pop3-login … -c DIR/dovecot.conf`, `saslauthd … -m DIR/saslauthd`).
fn sandbox_processes(sb: &Place) -> Vec<(i32, String)> {
    let me = std::process::id().to_string();
    let exe = sb.exe.display().to_string();
    let dir = sb.d();
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(link) = std::fs::read_link(e.path().join("exe")) else {
            continue;
        };
        let link = link.display().to_string();
        if link.trim_end_matches(" (deleted)") != exe {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let names_dir = args
            .iter()
            .any(|a| a == &dir || a.starts_with(&format!("{dir}/")));
        // Zombies have no arguments left; they are gone for this purpose.
        if names_dir && let Ok(pid) = name.parse() {
            found.push((pid, args.join(" ").trim().to_string()));
        }
    }
    found
}
