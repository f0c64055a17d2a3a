//! Postfix's `master(8)`: the resident process that owns the listening sockets, starts the
//! other processes of the mail system and watches them.
//!
//! Start-up, in Postfix's order where it has one:
//! 1. read `main.cf`/`master.cf` and choose the log sink ([`crate::log`]); set the umask to
//!    077, as Postfix's master does (every file a daemon makes is private unless it says
//!    otherwise);
//! 2. as root, resolve and check `mail_owner` ([`privs`]);
//! 3. take `queue_directory/pid/master.pid` and `data_directory/master.lock` ([`lock`]),
//!    writing the PID in Postfix's format;
//! 4. give the queue directory Postfix 3.7's owners and modes (`postfix-files`:
//!    [`crate::queue::prepare_tree`]), repairing what an older Postern left as root's, and
//!    make `public/qmgr`;
//! 5. bind every listener of every `inet` service whose command is `smtpd` ([`listen`]);
//! 6. start the processes ([`children`]), each as `ps` then shows it:
//!    * `postern local` (root): the local delivery process, Postfix's local(8) and
//!      virtual(8) (see [`crate::qmgr::local_server`]);
//!    * `postern qmgr` (becomes `mail_owner`): the queue manager with the outbound smtp
//!      client, connected to the local delivery process by a socket pair;
//!    * `postern smtpd` (becomes `mail_owner` once it has read root-only files such as TLS
//!      keys): every smtpd session, on the listening sockets it inherits;
//! 7. log `daemon started -- version 3.7.11 (Postern 0.1.0), configuration DIR` (Postfix's
//!    line with what really runs in parentheses) once the smtpd process
//!    serves, and report readiness (to `postfix start` through a pipe, to systemd through
//!    `$NOTIFY_SOCKET`);
//! 8. watch ([`supervise`]): a process that exits is started again (the queue manager and
//!    the local delivery process as a pair), as Postfix's master restarts its daemons.
//!
//! The master itself stays root, as Postfix's does, and does nothing else: it reads no
//! mail and speaks to no client. The smtpd process also holds the `master.pid` lock, so
//! that `postfix status` says "running" while anything listens; it exits at once when the
//! master goes (its end of a status socket reads end of file). The queue manager finishes
//! the deliveries it started and exits when the master goes; the local delivery process
//! follows it.
//!
//! Signals: `SIGHUP` re-reads both files, has the smtpd process give new connections the new
//! configuration (sessions in progress keep theirs, no listener is closed), tells the queue
//! manager and the local delivery process, then logs `reload -- version 3.7.11,
//! configuration DIR`; `SIGTERM`/`SIGINT` log `terminating on signal 15` (or 2), stop the
//! smtpd process, let the queue manager finish, remove the pid file and exit 0.
//!
//! Parameters read: `queue_directory`, `data_directory`, `mail_owner`, `setgid_group`,
//! `default_privs`, `inet_interfaces`, `inet_protocols`, `default_process_limit`,
//! `mail_version`, the log parameters of [`crate::log`]; from master.cf: type, maxproc,
//! command and `-o` options of each service.
//!
//! Known limits (XXX): only `smtpd` inet services are run (others draw a warning; `unix`
//! services are Postfix-internal and ignored, but a `qmgr`/`oqmgr` line starts the queue
//! manager); all smtpd sessions are tasks of one process, not a process each, so `chroot`,
//! `unpriv` and `wakeup` have no effect; on reload a service keeps the addresses it was
//! bound to, and a service new in master.cf on a privileged port cannot be bound (the
//! smtpd process is `mail_owner`); a reload with a broken main.cf/master.cf keeps the old
//! configuration with a warning where Postfix's master would exit; a reload that needs a
//! root-only file (a new TLS key) keeps that service's previous configuration with a
//! warning. Postfix leaves `master.pid` behind at exit; Postern removes it.

pub mod children;
pub mod listen;
pub mod lock;
pub use crate::sys::privs;
pub mod serve;
pub mod supervise;

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use crate::config::mastercf::MasterService;
use crate::config::postfix::{PostfixConfig, load_config};
use crate::log;

/// The version Postern reports where Postfix reports its own (log lines, `mail_version`).
pub const POSTFIX_VERSION: &str = "3.7.11";

/// How the master was asked to run.
#[derive(Debug, Clone, Default)]
pub struct MasterOptions {
    /// `-c DIR` (else `$MAIL_CONFIG`, else `/etc/postfix`).
    pub config_dir: Option<PathBuf>,
    /// Write `ok\n` here once serving (the `postfix start` parent waits for it).
    pub ready_fd: Option<RawFd>,
}

/// One master.cf `smtpd` inet service, resolved.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub addrs: Vec<SocketAddr>,
    /// Concurrent sessions allowed; `None` = unlimited (maxproc `0`).
    pub limit: Option<usize>,
    pub entry: MasterService,
}

/// The configuration directory as Postfix names it in its log lines.
pub fn config_directory(cfg: &PostfixConfig) -> String {
    cfg.config_dir.display().to_string()
}

/// `version` as the log lines give it (`mail_version`, default 3.7.11).
pub fn mail_version(cfg: &PostfixConfig) -> String {
    cfg.get("mail_version")
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| POSTFIX_VERSION.to_string())
}

/// The `smtpd` inet services of master.cf with their addresses and process limits.
/// Other inet services draw a warning (once, at start-up and reload).
pub fn smtpd_services(cfg: &PostfixConfig, ident: &str) -> Result<Vec<ServiceSpec>, String> {
    smtpd_services_quiet(cfg, ident, false)
}

/// [`smtpd_services`], without the warnings when `quiet` (the smtpd process reads the same
/// master.cf the master has already warned about).
pub fn smtpd_services_quiet(
    cfg: &PostfixConfig,
    ident: &str,
    quiet: bool,
) -> Result<Vec<ServiceSpec>, String> {
    let default_limit = cfg
        .get("default_process_limit")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(100);
    let mut out = Vec::new();
    for s in &cfg.master.services {
        if s.kind != "inet" {
            continue;
        }
        if s.command != "smtpd" {
            if quiet {
                continue;
            }
            log::warning(
                ident,
                &format!(
                    "{}, line {}: service {}: command {} is not implemented by Postern; not started",
                    cfg.master.path.display(),
                    s.line,
                    s.name,
                    s.command
                ),
            );
            continue;
        }
        let svc_cfg = cfg.with_overrides(&s.overrides());
        let addrs = listen::service_addresses(&svc_cfg, &s.name)
            .map_err(|e| format!("{}, line {}: {e}", cfg.master.path.display(), s.line.max(1)))?;
        let limit = match s.maxproc.trim() {
            "-" | "" => Some(default_limit),
            n => match n.parse::<usize>() {
                Ok(0) => None,
                Ok(n) => Some(n),
                Err(_) => {
                    return Err(format!(
                        "{}, line {}: bad process limit: {n}",
                        cfg.master.path.display(),
                        s.line
                    ));
                }
            },
        };
        out.push(ServiceSpec {
            name: s.name.clone(),
            addrs,
            limit,
            entry: s.clone(),
        });
    }
    Ok(out)
}

/// Run the master until SIGTERM; returns the exit status. Errors before serving are
/// logged as `fatal:` and give 1.
pub fn run(opts: &MasterOptions) -> i32 {
    // The readiness pipe is ours alone: close-on-exec at once, so that no child (the queue
    // manager, the smtpd process) inherits its write end and keeps `postfix start` waiting
    // for an end of file that never comes.
    let mut ready = opts.ready_fd.map(|fd| {
        // `postfix start` handed us this descriptor for our exclusive use.
        let f = std::fs::File::from(crate::sys::take_inherited_fd(fd));
        let _ = nix::fcntl::fcntl(
            &f,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        f
    });
    let code = match startup(opts, &mut ready) {
        Ok(state) => supervise::supervise(state),
        Err((ident, e)) => {
            log::fatal(&ident, &e);
            // `postfix start` shows the reason on its terminal, as the real master's
            // start-up errors reach the admin's screen.
            if let Some(mut f) = ready.take() {
                let _ =
                    std::io::Write::write_all(&mut f, format!("fatal: {ident}: {e}\n").as_bytes());
            }
            1
        }
    };
    log::flush();
    code
}

/// Each service with its smtpd instance (built before the smtpd process dropped
/// privileges, so that it could read root-only files such as TLS keys) and its sockets.
pub type StartedServices = Vec<(
    ServiceSpec,
    std::sync::Arc<crate::smtpd::SmtpdService>,
    Vec<std::net::TcpListener>,
)>;

/// Everything set up before watching: locks held, sockets bound, processes started.
pub struct Started {
    pub rt: tokio::runtime::Runtime,
    pub signals: serve::Signals,
    pub cfg: PostfixConfig,
    pub ident: String,
    pub pid_lock: lock::LockFile,
    pub data_lock: lock::LockFile,
    pub children: children::Children,
}

fn startup(
    opts: &MasterOptions,
    ready: &mut Option<std::fs::File>,
) -> Result<Started, (String, String)> {
    let early = |e: String| ("postfix/master".to_string(), e);
    // Postfix's master: everything the mail system makes is private unless it says
    // otherwise (queue files, logs, Maildir folders of deliveries).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // The runtime and the signal streams come first, so that a SIGHUP or SIGTERM that
    // arrives while starting (the port is already open) is acted on, not fatal.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| early(format!("cannot start the runtime: {e}")))?;
    let signals = {
        let _guard = rt.enter();
        serve::Signals::install().map_err(early)?
    };
    let cfg = load_config(opts.config_dir.as_deref()).map_err(early)?;
    let ident = log::ident(&cfg, "master");
    log::set_panic_ident(&ident);
    let err = |e: String| (ident.clone(), e);
    log::configure(&cfg).map_err(err)?;
    for w in &cfg.warnings {
        log::warning(&ident, w);
    }
    let owner = if privs::is_root() {
        Some(privs::mail_owner(&cfg).map_err(err)?)
    } else {
        None
    };

    let queue_dir = PathBuf::from(cfg.get("queue_directory").unwrap_or_default());
    let data_dir = PathBuf::from(cfg.get("data_directory").unwrap_or_default());
    let pid_dir = queue_dir.join("pid");
    make_dir(&queue_dir, 0o755, None).map_err(err)?;
    make_dir(&pid_dir, 0o755, None).map_err(err)?;
    make_dir(&data_dir, 0o700, owner.as_ref().map(|o| (o.uid, o.gid))).map_err(err)?;

    let pid = std::process::id();
    let mut pid_lock = lock::LockFile::acquire(&pid_dir.join("master.pid")).map_err(err)?;
    pid_lock
        .write_pid(pid)
        .map_err(|e| err(format!("write {}: {e}", pid_lock.path.display())))?;
    let mut data_lock = lock::LockFile::acquire(&data_dir.join("master.lock")).map_err(err)?;
    data_lock
        .write_pid(pid)
        .map_err(|e| err(format!("write {}: {e}", data_lock.path.display())))?;
    if let Some(o) = &owner {
        data_lock
            .chown(o.uid, o.gid)
            .map_err(|e| err(format!("chown {}: {e}", data_lock.path.display())))?;
    }

    // The queue as Postfix 3.7's postfix-files lays it out (owners when root).
    let tree_owner = owner
        .as_ref()
        .map(|o| crate::queue::TreeOwner::of(&cfg, o.uid, o.gid));
    match crate::queue::prepare_tree(&queue_dir, tree_owner.as_ref()) {
        Ok(fixed) => {
            for f in fixed {
                log::warning(&ident, &f);
            }
        }
        Err(e) => return Err(err(e)),
    }
    let wants_qmgr = crate::qmgr::wanted(&cfg);
    if wants_qmgr {
        crate::qmgr::make_fifo(&queue_dir, owner.as_ref().map(|o| (o.uid, o.gid)))
            .map_err(|e| err(format!("{}: {e}", queue_dir.join("public/qmgr").display())))?;
    }

    let specs = smtpd_services(&cfg, &ident).map_err(err)?;
    let backlog_base = cfg
        .get("default_process_limit")
        .and_then(|v| v.trim().parse::<i32>().ok())
        .unwrap_or(100);
    let mut listeners = Vec::new();
    for spec in specs {
        let backlog = spec
            .limit
            .and_then(|l| i32::try_from(l).ok())
            .unwrap_or(backlog_base)
            .max(backlog_base);
        let mut ls = Vec::new();
        for a in &spec.addrs {
            ls.push(listen::bind_listener(*a, backlog).map_err(err)?);
        }
        listeners.push((spec.name.clone(), ls));
    }

    let mut children = children::Children::new(&cfg, listeners, &pid_lock);
    if wants_qmgr {
        children.start_delivery();
    }
    if let Err(e) = children.start_smtpd() {
        children.stop();
        return Err(err(e));
    }
    log::info(
        &ident,
        &format!(
            "daemon started -- version {} (Postern {}), configuration {}",
            mail_version(&cfg),
            env!("CARGO_PKG_VERSION"),
            config_directory(&cfg)
        ),
    );
    if let Some(mut f) = ready.take() {
        let _ = std::io::Write::write_all(&mut f, b"ok\n");
    }
    notify_systemd(pid);
    Ok(Started {
        rt,
        signals,
        cfg,
        ident,
        pid_lock,
        data_lock,
        children,
    })
}

/// Create `dir` when missing (mode `mode`, owner `owner`); an existing one is left alone.
fn make_dir(dir: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.as_os_str().is_empty() {
        return Err("empty directory name".into());
    }
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| {
            format!(
                "mkdir {}: {}",
                dir.display(),
                crate::config::error::strerror(&e)
            )
        })?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode));
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// sd_notify(3) `READY=1` when started by systemd with `Type=notify`.
fn notify_systemd(pid: u32) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let msg = format!("READY=1\nMAINPID={pid}\n");
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
            let _ = sock.send_to_addr(msg.as_bytes(), &addr);
        }
    } else {
        let _ = sock.send_to(msg.as_bytes(), Path::new(&path));
    }
}
