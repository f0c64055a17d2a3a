//! Mail processes (Dovecot's `imap` and `pop3` processes): logged-in sessions are served
//! by processes that run as the mail user, not by the root service.
//!
//! After the service has checked a login (passdb, userdb, `first_valid_uid`,
//! `mail_max_userip_connections`: [`super::service`]), the session goes, with the
//! client's descriptor (or the login process's proxy of a TLS client), to the mail
//! process of its [`Identity`] over a [`handoff`](super::handoff) channel
//! ([`Msg::Session`]). There is one such process per (protocol, identity): uid, gid,
//! saved gid and supplementary groups. Dovecot forks one per connection
//! (`service_count = 1`, `client_limit = 1`); Postern's serves every session of the
//! identity (users sharing a uid, such as virtual users under one `vmail` uid, share
//! it), which keeps the memory of 1,000 idle IMAP clients near one process's, and it
//! exits when its last session has ended. The master learns of each session's end
//! ([`Msg::Ended`]) to count `mail_max_userip_connections`, and of a killed process by
//! waiting for it (`master: Error: service(imap): child PID killed with signal 9`, as
//! Dovecot logs it; the process's sessions are forgotten, other processes go on).
//!
//! The process is this executable again (`dovecot/imap`, `dovecot/pop3` in `ps`, with
//! `--mail-process PROTO CTL UID GID SAVED_GID GROUPS` naming its channel and identity).
//! It reads the configuration while still root, then takes the identity for good before
//! it reads any mailbox: `setgroups`, `setresgid`, `setresuid`, and checks that root
//! cannot come back. The identity is Dovecot 2.3.19's (seen in /proc of its `imap` and
//! `pop3` processes): the userdb's uid and gid as real, effective, saved and filesystem
//! ids, except that the saved gid is `mail_privileged_group`'s when set (the group a
//! spool dotlock is made with, [`crate::mailbox::lock`]); supplementary groups: the gid,
//! `default_internal_group` (the services' `extra_groups`), `mail_access_groups`, and
//! with a userdb's `system_groups_user` (`userdb passwd` gives it) that user's groups.
//! Log lines go to the master over the channel ([`super::handoff::relay_logs_to`]),
//! as the login process's do. Which service serves the sessions (POP3's or IMAP's state
//! and session code, [`MailService`]) the caller names ([`main`]'s loader, given by
//! `cli::dovecot`), so the host stays below both services. Not started as root, everything runs as the invoking user
//! (the same processes, no switch).
//!
//! `dovecot reload`: running mail processes keep their settings and sessions, new
//! sessions go to new processes. `dovecot stop` (Dovecot's `shutdown_clients = yes`):
//! SIGTERM to each mail process, which ends its sessions as Dovecot does (`* BYE Server
//! shutting down.`, `-ERR [SYS/TEMP] Server shutting down.`, `Disconnected: Server
//! shutting down.` in the log), then exits.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::handoff::{Channel, Credentials, LoginRequest, Msg};
use super::{DovecotLog, Protocol};
use crate::auth::dovecot::UserInfo;
use crate::config::dovecot::DovecotConf;

/// The credentials a mail process runs with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// The saved gid: `mail_privileged_group`'s, else the gid.
    pub saved_gid: u32,
    /// Supplementary groups, sorted, without duplicates.
    pub groups: Vec<u32>,
}

/// The settings that make an [`Identity`] from a userdb answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupsConf {
    /// `default_internal_group` (default `dovecot`), when the group exists: Dovecot's
    /// `extra_groups` of the imap and pop3 services.
    pub internal_gid: Option<u32>,
    /// `mail_access_groups`.
    pub access_gids: Vec<u32>,
    /// `mail_privileged_group`.
    pub privileged_gid: Option<u32>,
}

fn group_id(name: &str) -> Option<u32> {
    name.parse().ok().or_else(|| {
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    })
}

impl GroupsConf {
    pub fn from_conf(conf: &DovecotConf, privileged_gid: Option<u32>) -> anyhow::Result<Self> {
        let internal = conf
            .get("default_internal_group")
            .unwrap_or("dovecot")
            .trim();
        let mut access_gids = Vec::new();
        for name in conf
            .get("mail_access_groups")
            .unwrap_or("")
            .split([',', ' '])
            .filter(|w| !w.is_empty())
        {
            match group_id(name) {
                Some(g) => access_gids.push(g),
                // Dovecot's words when the mail process starts.
                None => anyhow::bail!("mail_access_groups: Unknown group name '{name}'"),
            }
        }
        Ok(GroupsConf {
            internal_gid: if internal.is_empty() {
                None
            } else {
                group_id(internal)
            },
            access_gids,
            privileged_gid,
        })
    }

    /// The identity the mail process of `info`'s user takes. Without a uid or gid from
    /// the userdb (only possible when not root: the service refuses such a login as
    /// root) this process's own are used.
    pub fn identity(&self, info: &UserInfo) -> Identity {
        let uid = info.uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
        let gid = info
            .gid
            .or(info.uid)
            .unwrap_or_else(|| nix::unistd::getegid().as_raw());
        let mut groups = vec![gid];
        groups.extend(self.internal_gid);
        groups.extend(&self.access_gids);
        if let Some((_, name)) = info.extra.iter().find(|(k, _)| k == "system_groups_user")
            && let Ok(cname) = std::ffi::CString::new(name.as_str())
            && let Ok(gs) = nix::unistd::getgrouplist(&cname, gid.into())
        {
            groups.extend(gs.into_iter().map(|g| g.as_raw()));
        }
        groups.sort_unstable();
        groups.dedup();
        Identity {
            uid,
            gid,
            saved_gid: self.privileged_gid.unwrap_or(gid),
            groups,
        }
    }
}

/// Called by the master when a session it handed over has ended (or its process died):
/// releases the session's `mail_max_userip_connections` count.
pub type Release = Box<dyn FnOnce() + Send>;

/// A running mail process, as the master keeps it.
struct Proc {
    key: (Protocol, Identity),
    ch: Arc<Channel>,
    /// The sessions it serves, by session id.
    sessions: HashMap<String, Release>,
}

#[derive(Default)]
struct Inner {
    /// By pid.
    procs: HashMap<u32, Proc>,
    /// The process new sessions of an identity go to.
    current: HashMap<(Protocol, Identity), u32>,
}

/// The master's side: the running mail processes, started on demand.
pub struct MailProcs {
    conf_file: PathBuf,
    log: tokio::sync::watch::Receiver<DovecotLog>,
    inner: Mutex<Inner>,
    stopping: AtomicBool,
}

impl MailProcs {
    /// `log` is where the processes' log lines are written (the current settings').
    pub fn new(conf_file: &Path, log: tokio::sync::watch::Receiver<DovecotLog>) -> Arc<Self> {
        Arc::new(MailProcs {
            conf_file: conf_file.to_path_buf(),
            log,
            inner: Mutex::new(Inner::default()),
            stopping: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After the service sent the verdict Taken (`sent`: it reached the login process):
    /// hand the client to the mail process of the user's identity, the user's
    /// `mail_max_userip_connections` slot released when the session ends; a verdict that
    /// never arrived releases it now.
    pub async fn hand_taken(
        self: &Arc<Self>,
        protocol: Protocol,
        sent: bool,
        userip: &Arc<super::service::UserIp>,
        groups: &GroupsConf,
        (req, user, info, fd): (LoginRequest, String, UserInfo, OwnedFd),
    ) {
        let remote = req.remote.ip();
        if !sent {
            userip.release(&user, remote);
            return;
        }
        let id = groups.identity(&info);
        let (slots, user2) = (userip.clone(), user.clone());
        let release = Box::new(move || slots.release(&user2, remote));
        self.hand(protocol, id, req, user, info, fd, release).await;
    }

    /// Hand a logged-in session to the mail process of `id` (started if there is none).
    /// `release` runs when the session has ended. On failure the client's descriptor is
    /// closed, `release` has run and the error is logged.
    #[allow(clippy::too_many_arguments)]
    pub async fn hand(
        self: &Arc<Self>,
        protocol: Protocol,
        id: Identity,
        mut req: LoginRequest,
        user: String,
        info: UserInfo,
        fd: OwnedFd,
        release: Release,
    ) {
        // The password stays with the service.
        if let Credentials::Plain { pass, .. } = &mut req.creds {
            pass.clear();
        }
        let sid = req.session_id.clone();
        let key = (protocol, id);
        let started = {
            let mut inner = self.lock();
            match inner.current.get(&key).copied() {
                Some(pid) if inner.procs.contains_key(&pid) => {
                    let p = inner.procs.get_mut(&pid).expect("checked");
                    p.sessions.insert(sid.clone(), release);
                    Ok((pid, p.ch.clone()))
                }
                _ => match self.spawn(&key) {
                    Ok((pid, ch, child)) => {
                        let mut sessions = HashMap::new();
                        sessions.insert(sid.clone(), release);
                        inner.procs.insert(
                            pid,
                            Proc {
                                key: key.clone(),
                                ch: ch.clone(),
                                sessions,
                            },
                        );
                        inner.current.insert(key.clone(), pid);
                        tokio::spawn(self.clone().read_from(pid, ch.clone()));
                        tokio::spawn(self.clone().wait_for(pid, protocol, child));
                        Ok((pid, ch))
                    }
                    Err(e) => Err((e, release)),
                },
            }
        };
        let (pid, ch) = match started {
            Ok(x) => x,
            Err((e, release)) => {
                self.log.borrow().error(&format!(
                    "master: service({}): fork() failed: {e}",
                    protocol.name()
                ));
                release();
                return;
            }
        };
        let msg = Msg::Session { req, user, info };
        if ch.send(&msg, Some(fd.as_raw_fd())).await.is_err() {
            // The process is gone (its waiter forgets the rest).
            self.ended(pid, &sid);
        }
    }

    /// Start a mail process for `key`: its channel and the child.
    fn spawn(
        &self,
        key: &(Protocol, Identity),
    ) -> std::io::Result<(u32, Arc<Channel>, tokio::process::Child)> {
        let (protocol, id) = key;
        let (ours, theirs) = super::handoff::pair()?;
        let groups: Vec<String> = id.groups.iter().map(u32::to_string).collect();
        let args = vec![
            "dovecot".to_string(),
            "-c".to_string(),
            self.conf_file.display().to_string(),
            "--mail-process".to_string(),
            protocol.name().to_string(),
            theirs.as_raw_fd().to_string(),
            id.uid.to_string(),
            id.gid.to_string(),
            id.saved_gid.to_string(),
            if groups.is_empty() {
                "-".to_string()
            } else {
                groups.join(",")
            },
        ];
        let child = reexec(
            &format!("dovecot/{}", protocol.name()),
            &args,
            vec![theirs.as_raw_fd()],
        )?;
        let pid = child.id().unwrap_or(0);
        drop(theirs);
        Ok((pid, Arc::new(Channel::new(ours)?), child))
    }

    /// The master's reader of one mail process's channel: log lines, ended sessions.
    async fn read_from(self: Arc<Self>, pid: u32, ch: Arc<Channel>) {
        while let Ok(Some((msg, _fd))) = ch.recv().await {
            match msg {
                Msg::Log { level, text } => self.log.borrow().line(&level, &text),
                Msg::Ended { session_id } => self.ended(pid, &session_id),
                _ => {}
            }
        }
    }

    /// Session `sid` of process `pid` ended: release it; a process left without
    /// sessions takes no new ones and is told to go (the end of its channel).
    fn ended(&self, pid: u32, sid: &str) {
        let release = {
            let mut inner = self.lock();
            let Some(p) = inner.procs.get_mut(&pid) else {
                return;
            };
            let r = p.sessions.remove(sid);
            if p.sessions.is_empty() {
                p.ch.shutdown_write();
                let key = p.key.clone();
                if inner.current.get(&key) == Some(&pid) {
                    inner.current.remove(&key);
                }
            }
            r
        };
        if let Some(r) = release {
            r();
        }
    }

    /// Wait for process `pid` to exit; log it as Dovecot's master does when it did not
    /// exit cleanly, and forget its sessions.
    async fn wait_for(
        self: Arc<Self>,
        pid: u32,
        protocol: Protocol,
        mut child: tokio::process::Child,
    ) {
        let status = child.wait().await.ok();
        let releases: Vec<Release> = {
            let mut inner = self.lock();
            let Some(p) = inner.procs.remove(&pid) else {
                return;
            };
            if inner.current.get(&p.key) == Some(&pid) {
                inner.current.remove(&p.key);
            }
            p.sessions.into_values().collect()
        };
        let clean = status.is_some_and(|s| s.success());
        if !clean && !self.stopping.load(Ordering::Relaxed) {
            self.log.borrow().error(&format!(
                "master: service({}): child {pid} {}",
                protocol.name(),
                super::describe_exit(status)
            ));
        }
        for r in releases {
            r();
        }
    }

    /// Reload: the running processes keep their sessions (and settings) but take no new
    /// ones; those without sessions go now.
    pub fn retire_all(&self) {
        let mut inner = self.lock();
        inner.current.clear();
        for p in inner.procs.values() {
            if p.sessions.is_empty() {
                p.ch.shutdown_write();
            }
        }
    }

    /// Stop (Dovecot's `shutdown_clients = yes`): SIGTERM to every mail process, which
    /// ends its sessions; SIGKILL to those still there after `patience`.
    pub async fn stop(&self, patience: Duration) {
        self.stopping.store(true, Ordering::Relaxed);
        let pids: Vec<u32> = {
            let mut inner = self.lock();
            inner.current.clear();
            inner.procs.keys().copied().collect()
        };
        for pid in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let until = std::time::Instant::now() + patience;
        while !self.lock().procs.is_empty() && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left: Vec<u32> = self.lock().procs.keys().copied().collect();
        for pid in left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// The pids of the running mail processes (for tests of this module's users).
    pub fn pids(&self) -> Vec<u32> {
        self.lock().procs.keys().copied().collect()
    }
}

/// Start this executable again as `arg0` (the process title `ps` shows) with `args`,
/// leaving the descriptors `keep` open in it (all others are close-on-exec).
pub fn reexec(
    arg0: &str,
    args: &[String],
    keep: Vec<RawFd>,
) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.arg0(arg0).args(args);
    crate::sys::child::keep_on_exec(cmd.as_std_mut(), keep);
    cmd.spawn()
}

// ---------------------------------------------------------------------------------------
// The mail process's side.

/// `dovecot stop` reached this process: sessions end with Dovecot's shutdown words.
/// A service whose logged-in sessions a mail process serves ([`crate::pop3d`],
/// [`crate::imapd`]). The layer above both (`cli::dovecot`) names them to [`main`] through a
/// [`ServiceLoader`], so this process host knows neither.
pub trait MailService: Send + Sync + 'static {
    /// Whether each session is a thread of its own (IMAP: its I/O blocks) rather than a task
    /// on the runtime's workers (POP3). A threaded service gets a current-thread runtime,
    /// which only reads the channel.
    fn threads(&self) -> bool;
    /// Start serving one handed-over session (called on the runtime, so a task may be
    /// spawned); `guard` reports the session's end when dropped.
    fn start(
        self: Arc<Self>,
        req: LoginRequest,
        fd: OwnedFd,
        user: String,
        info: UserInfo,
        guard: SessionGuard,
    );
}

/// Builds the service of a protocol from the configuration, while still root.
pub type ServiceLoader = fn(Protocol, &DovecotConf) -> anyhow::Result<Arc<dyn MailService>>;

static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Whether this mail process is shutting down (a session whose input ended asks, to say
/// `Server shutting down.` instead of `Connection closed`).
pub fn shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::Relaxed)
}

/// The sessions of this mail process: a duplicate of each one's socket (to end its input
/// at shutdown), and the channel to report their ends on.
struct Served {
    ch: Arc<Channel>,
    sockets: Mutex<HashMap<String, OwnedFd>>,
    count: AtomicUsize,
    gone: tokio::sync::Notify,
}

/// A session of this mail process; dropping it reports the session's end to the master.
pub struct SessionGuard {
    served: Arc<Served>,
    session_id: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Ok(mut s) = self.served.sockets.lock() {
            s.remove(&self.session_id);
        }
        self.served.ch.send_blocking(
            &Msg::Ended {
                session_id: std::mem::take(&mut self.session_id),
            },
            Duration::from_secs(5),
        );
        self.served.count.fetch_sub(1, Ordering::SeqCst);
        self.served.gone.notify_waiters();
        crate::memory::trim_heap();
    }
}

/// Take `id` for good: groups, then gids, then uids; root must not come back. Checked
/// from the kernel's view afterwards.
fn become_identity(id: &Identity) -> Result<(), String> {
    use nix::unistd::{Gid, Uid, getresgid, getresuid, setgroups, setresgid, setresuid};
    let groups: Vec<Gid> = id.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&groups).map_err(|e| format!("setgroups({:?}): {e}", id.groups))?;
    let (gid, saved) = (Gid::from_raw(id.gid), Gid::from_raw(id.saved_gid));
    setresgid(gid, gid, saved).map_err(|e| format!("setresgid({}): {e}", id.gid))?;
    let uid = Uid::from_raw(id.uid);
    setresuid(uid, uid, uid).map_err(|e| format!("setresuid({}): {e}", id.uid))?;
    let u = getresuid().map_err(|e| e.to_string())?;
    let g = getresgid().map_err(|e| e.to_string())?;
    let fs = crate::sys::fsid::current();
    if (u.real, u.effective, u.saved) != (uid, uid, uid)
        || (g.real, g.effective, g.saved) != (gid, gid, saved)
        || fs != (id.uid, id.gid)
    {
        return Err(format!("credentials not as set: {u:?} {g:?} fs {fs:?}"));
    }
    if id.uid != 0
        && (nix::unistd::setuid(Uid::from_raw(0)).is_ok()
            || nix::unistd::seteuid(Uid::from_raw(0)).is_ok())
    {
        return Err("root privileges could not be dropped".into());
    }
    Ok(())
}

/// `dovecot -c FILE --mail-process PROTO CTL UID GID SAVED_GID GROUPS`: this is a mail
/// process the master started. Returns the exit status.
pub fn main(conf_path: &Path, args: &[String], load: ServiceLoader) -> i32 {
    let fatal = |m: &str| {
        eprintln!("Fatal: {m}");
        89
    };
    let mut it = args.iter();
    let Some(protocol) = it.next().and_then(|p| Protocol::from_name(p)) else {
        return fatal("--mail-process requires a protocol");
    };
    let num = |v: Option<&String>| v.and_then(|s| s.parse::<u32>().ok());
    let (Some(ctl), Some(uid), Some(gid), Some(saved_gid), Some(groups)) = (
        num(it.next()),
        num(it.next()),
        num(it.next()),
        num(it.next()),
        it.next(),
    ) else {
        return fatal("--mail-process: CTL UID GID SAVED_GID GROUPS expected");
    };
    let groups: Vec<u32> = groups.split(',').filter_map(|g| g.parse().ok()).collect();
    let id = Identity {
        uid,
        gid,
        saved_gid,
        groups,
    };
    // The master left this descriptor open for this process and named it on the command
    // line; nothing else here owns it.
    let ctl = crate::sys::take_inherited_fd(ctl as RawFd);
    let svc = protocol.name();
    let conf = match DovecotConf::load(conf_path) {
        Ok(c) => c,
        Err(e) => return fatal(&format!("{svc}: {e}")),
    };
    // Settings read while root (the configuration may be root's alone).
    let st = match load(protocol, &conf) {
        Ok(s) => s,
        Err(e) => return fatal(&format!("{svc}: {e}")),
    };
    drop(conf);
    // Start-up code out of memory while still root (the kernel pages out a file's pages
    // only for its owner or a writer), as the login process does.
    crate::memory::release_startup_code();
    if nix::unistd::geteuid().is_root()
        && let Err(e) = become_identity(&id)
    {
        return fatal(&format!("{svc}: {e}"));
    }
    super::limit_malloc_arenas();
    // Every session of the identity is served here (two descriptors each, and its
    // mailbox's): the soft descriptor limit goes up to the hard one, as Dovecot's master
    // sizes a service's limit for its clients.
    crate::sys::raise_nofile_limit();
    // IMAP sessions run on threads of their own: one runtime thread reads the channel.
    // POP3 sessions are tasks: the runtime's workers serve them.
    let rt = if st.threads() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => return fatal(&format!("{svc}: tokio: {e}")),
    };
    rt.block_on(async move {
        let ch = match Channel::new(ctl) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                eprintln!("Fatal: {svc}: {e}");
                return;
            }
        };
        super::handoff::relay_logs_to(ch.clone());
        let served = Arc::new(Served {
            ch: ch.clone(),
            sockets: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
            gone: tokio::sync::Notify::new(),
        });
        {
            let served = served.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut term) = signal(SignalKind::terminate()) else {
                    return;
                };
                term.recv().await;
                // Each session's input ends; it answers with the shutdown words.
                SHUTTING_DOWN.store(true, Ordering::Relaxed);
                if let Ok(s) = served.sockets.lock() {
                    for fd in s.values() {
                        let _ = nix::sys::socket::shutdown(
                            fd.as_raw_fd(),
                            nix::sys::socket::Shutdown::Read,
                        );
                    }
                }
                // Then the process goes once the last one has said goodbye (the master
                // kills what is left after a while).
                loop {
                    let gone = served.gone.notified();
                    if served.count.load(Ordering::SeqCst) == 0 {
                        std::process::exit(0);
                    }
                    gone.await;
                }
            });
        }
        loop {
            match ch.recv().await {
                Ok(Some((Msg::Session { req, user, info }, Some(fd)))) => {
                    let sid = req.session_id.clone();
                    if let Ok(dup) = fd.try_clone()
                        && let Ok(mut s) = served.sockets.lock()
                    {
                        s.insert(sid.clone(), dup);
                    }
                    served.count.fetch_add(1, Ordering::SeqCst);
                    let guard = SessionGuard {
                        served: served.clone(),
                        session_id: sid,
                    };
                    st.clone().start(req, fd, user, info, guard);
                }
                Ok(Some(_)) => {}
                // The master has no more sessions for this process (or is gone).
                Ok(None) | Err(_) => break,
            }
        }
        loop {
            let gone = served.gone.notified();
            if served.count.load(Ordering::SeqCst) == 0 {
                break;
            }
            gone.await;
        }
    });
    0
}

/// `first_valid_uid` (default 500).
pub fn first_valid_uid(conf: &DovecotConf) -> u32 {
    conf.get("first_valid_uid")
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

/// The mbox settings sessions open mailboxes with: `mbox_lock_timeout`,
/// `mbox_dotlock_change_timeout`, `mbox_read_locks`, `mbox_write_locks`,
/// `mail_privileged_group`.
pub fn mbox_options(conf: &DovecotConf) -> anyhow::Result<crate::mailbox::MboxOptions> {
    let time = |key: &str, default: u64| {
        std::time::Duration::from_secs(
            conf.get(key)
                .and_then(|v| crate::config::dovecot::settings::parse_time(v).ok())
                .unwrap_or(default),
        )
    };
    // Debian's defaults (upstream's write list is `dotlock fcntl`). Lists Dovecot refuses
    // are not an error here: as in Dovecot, a session meets it at its first mbox lock
    // (Maildir users never do).
    let (read, write, invalid) = match crate::mailbox::lock::session_locks(
        conf.get("mbox_read_locks").unwrap_or("fcntl"),
        conf.get("mbox_write_locks").unwrap_or("fcntl dotlock"),
    ) {
        Ok((r, w)) => (r, w, None),
        Err(e) => (Default::default(), Default::default(), Some(e)),
    };
    Ok(crate::mailbox::MboxOptions {
        lock_timeout: time("mbox_lock_timeout", 300),
        // A session's dotlock is stale once unchanged this long (Dovecot's
        // `file_dotlock_create()` stale_timeout); one whose process is gone at once.
        stale_lock_time: time("mbox_dotlock_change_timeout", 120),
        dotlock: write.dotlock,
        flock: write.flock,
        fcntl: write.fcntl,
        lockf: write.lockf,
        read_locks: read,
        lock_settings_error: invalid,
        privileged_gid: privileged_gid(conf)?,
        ..Default::default()
    })
}

/// `mail_privileged_group` resolved to its gid (Dovecot refuses to start with a group that
/// does not exist: `mail_privileged_group: Unknown group name 'X'`).
fn privileged_gid(conf: &DovecotConf) -> anyhow::Result<Option<u32>> {
    let name = conf.get("mail_privileged_group").unwrap_or("").trim();
    if name.is_empty() {
        return Ok(None);
    }
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(Some(gid));
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(Some(g.gid.as_raw())),
        _ => Err(anyhow::anyhow!(
            "mail_privileged_group: Unknown group name '{name}'"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(uid: u32, gid: u32, extra: &[(&str, &str)]) -> UserInfo {
        UserInfo {
            user: "u".into(),
            uid: Some(uid),
            gid: Some(gid),
            home: None,
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Dovecot 2.3.19's imap process as /proc shows it: `Groups: 107 1013` for a static
    /// userdb (107: the `dovecot` group), the saved gid `mail_privileged_group`'s, and
    /// `mail_access_groups` added.
    #[test]
    fn identity_as_dovecot_gives_it() {
        let g = GroupsConf {
            internal_gid: Some(107),
            access_gids: vec![],
            privileged_gid: None,
        };
        let id = g.identity(&info(1013, 1013, &[]));
        assert_eq!(
            id,
            Identity {
                uid: 1013,
                gid: 1013,
                saved_gid: 1013,
                groups: vec![107, 1013]
            }
        );
        let g = GroupsConf {
            internal_gid: Some(107),
            access_gids: vec![8],
            privileged_gid: Some(8),
        };
        let id = g.identity(&info(1013, 1013, &[]));
        assert_eq!((id.saved_gid, id.groups), (8, vec![8, 107, 1013]));
        // system_groups_user: initgroups(3)'s list for that user and the gid, merged.
        let g = GroupsConf::default();
        let id = g.identity(&info(1013, 1013, &[("system_groups_user", "root")]));
        let cname = std::ffi::CString::new("root").expect("name");
        let want = nix::unistd::getgrouplist(&cname, 1013.into()).expect("getgrouplist");
        assert!(id.groups.contains(&1013), "{:?}", id.groups);
        for g in want {
            assert!(id.groups.contains(&g.as_raw()), "{g} in {:?}", id.groups);
        }
    }

    #[test]
    fn unknown_access_group_refused() {
        let c = DovecotConf::from_str(
            "mail_access_groups = no-such-group-here\n",
            Path::new("t.conf"),
        )
        .expect("conf");
        assert_eq!(
            GroupsConf::from_conf(&c, None).err().map(|e| e.to_string()),
            Some("mail_access_groups: Unknown group name 'no-such-group-here'".into())
        );
    }
}
