//! `dovecot`: start the POP3 service described by a `dovecot.conf` of any era, as Dovecot's
//! master does, with the command line of Dovecot 2.3.19's `dovecot(1)`.
//!
//! Usage: `dovecot [-F] [-c FILE] [-n] [-a] [--help] [--version] [--build-options]
//! [--hostdomain] [reload] [stop]`:
//! * no word: start. The file is checked as doveconf checks it, the login user must exist
//!   (when root), `base_dir/master.pid` must not name a live process (`Fatal: Dovecot is
//!   already running with PID N (read from FILE)`, exit 89; a pid file left by a killed
//!   master is overridden), and every listener is bound; then the master detaches (not with
//!   `-F`), writes `base_dir/master.pid` (`PID\n`, mode 0600) and reports success. The
//!   starting command returns only once the master serves, with its status.
//! * `stop` / `reload`: what `dovecot stop` runs (`doveadm stop`/`reload`): SIGTERM (then
//!   up to 3 s for the master to go) or SIGHUP to the pid in `master.pid`; `Fatal: Dovecot
//!   is not running (read from FILE)`, exit 75, when there is none. Other words are
//!   doveadm commands Postern does not have (doveadm's usage, exit 64).
//! * `-n` / `-a`: `doveconf -n|-a -c FILE`. `--version`: `2.3.19 (Postern VERSION)`;
//!   `--help`: the usage on stderr, exit 0; an unknown option: the usage, exit 89.
//!
//! Config file: `-c FILE`, else [`default_conf_path`] (`/etc/dovecot.conf` when present,
//! else `/etc/dovecot/dovecot.conf`; `dovecot(8)` gives the rule).
//!
//! Listeners come from [`DovecotConf::listeners`] (0.99/1.x `pop3_listen`/`ssl_listen`,
//! 2.x `service pop3-login { inet_listener … }`, `listen`): `*` is IPv4's any address,
//! `::` IPv6's with `IPV6_V6ONLY` (so `listen = *, ::` binds both, as Dovecot does), a name
//! every address it resolves to; `pop3s` listeners speak TLS from the start. Only `pop3`
//! is served from `protocols` today; `imap` is left to the imapd issue.
//!
//! Every start-up failure goes to stderr as Dovecot words it (`Fatal: …`, `doveconf:
//! Fatal: …`, exit 89) and to the log (`log_path`, else syslog facility mail, ident
//! `dovecot`, as `master: Fatal: …`), also those Dovecot itself only prints.
//!
//! `service auth { unix_listener NAME { mode user group } }` sockets (1.x: `auth default {
//! socket listen { client { path … } } }`) speak Dovecot's auth client protocol
//! ([`crate::auth::dovecot_proto`]) from the same passdbs, for Postfix's `smtpd_sasl_type
//! = dovecot`; see [`DovecotConf::auth_client_sockets`] for which listeners count.
//!
//! Processes: this one binds the listeners, then starts one unprivileged login process per
//! protocol served ([`crate::login`], `dovecot/pop3-login` and `dovecot/imap-login`: this
//! executable again, with `--login-process PROTOCOL CTL FD:ssl|plain…` naming the inherited
//! channel and listeners), serves their requests ([`crate::pop3d::serve_login_process`],
//! [`crate::imapd::serve_login_process`]), replaces one that dies and starts new ones on
//! reload while the old ones drain. Logged-in sessions are served by mail processes
//! (`dovecot/imap`, `dovecot/pop3`, running as the mail user: [`crate::login::mailproc`]),
//! one per user identity, started when a session needs one; `reload` leaves them to
//! finish their sessions, `stop` ends them as Dovecot's `shutdown_clients = yes` does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::auth::dovecot::{AuthCache, DovecotAuth};
use crate::config::dovecot::{CONF_V1, CONF_V2, DovecotConf, default_conf_path};
use crate::imapd::ImapState;
use crate::login::handoff::{Channel, Msg};
use crate::login::mailproc::MailProcs;
use crate::login::{DovecotLog, Protocol};
use crate::pop3d::Pop3State;
use crate::sys::detach::{Detached, Readiness, detach};

/// The protocols Postern serves, in Dovecot's order of `protocols` words.
const SERVED: [Protocol; 2] = [Protocol::Pop3, Protocol::Imap];

/// Every service's settings, rebuilt on reload: one auth (passdbs, userdbs, cache) for
/// all, as Dovecot has one auth process.
struct Services {
    log: DovecotLog,
    auth: Arc<DovecotAuth>,
    pop3: Option<Arc<Pop3State>>,
    imap: Option<Arc<ImapState>>,
}

impl Services {
    fn from_conf(conf: &DovecotConf) -> anyhow::Result<Services> {
        let auth = Arc::new(DovecotAuth::from_conf(conf).map_err(|e| anyhow::anyhow!("{e}"))?);
        let cache = AuthCache::from_conf(conf);
        let protocols = conf.protocols();
        let wants = |p: Protocol| protocols.iter().any(|w| w == p.name());
        let pop3 = if wants(Protocol::Pop3) {
            Some(Arc::new(Pop3State::with_auth(
                conf,
                auth.clone(),
                cache.clone(),
            )?))
        } else {
            None
        };
        let imap = if wants(Protocol::Imap) {
            Some(Arc::new(ImapState::with_auth(conf, auth.clone(), cache)?))
        } else {
            None
        };
        Ok(Services {
            log: DovecotLog::from_conf(conf),
            auth,
            pop3,
            imap,
        })
    }

    /// The protocols served, in the order of `protocols`.
    fn served(&self, conf_protocols: &[String]) -> Vec<Protocol> {
        conf_protocols
            .iter()
            .filter_map(|w| Protocol::from_name(w))
            .filter(|p| match p {
                Protocol::Pop3 => self.pop3.is_some(),
                Protocol::Imap => self.imap.is_some(),
            })
            .fold(Vec::new(), |mut v, p| {
                if !v.contains(&p) {
                    v.push(p);
                }
                v
            })
    }
}

/// Dovecot's `FATAL_DEFAULT`.
const FATAL: i32 = 89;
/// doveadm's status for `Dovecot is not running` (EX_TEMPFAIL).
const EX_TEMPFAIL: i32 = 75;
/// doveadm's status for a command it does not know (EX_USAGE).
const EX_USAGE: i32 = 64;

/// The Dovecot version Postern answers for (`dovecot --version`, the start-up line).
pub const DOVECOT_VERSION: &str = "2.3.19";

const USAGE: &str = "Usage: dovecot [-F] [-c <config file>] [-p] [-n] [-a] [--help] [--version]\n       [--build-options] [--hostdomain] [reload] [stop]\n";

/// The parsed command line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Cmdline {
    conf: Option<String>,
    foreground: bool,
    /// `-n` or `-a`: run doveconf.
    doveconf: Option<&'static str>,
    /// What follows the options, each with whether it was written with `--`.
    words: Vec<(String, bool)>,
}

/// Dovecot's own parsing (master/main.c): `--word` loses its dashes and is remembered as
/// such, then getopt(3) with `+Fanp` and the common `c:` option stops at the first word.
/// The error is the text getopt prints.
fn parse_cmdline(args: &[String]) -> Result<Cmdline, String> {
    let mut words: Vec<(String, bool)> = Vec::new();
    let mut rest = args.iter();
    for a in rest.by_ref() {
        if a == "--" {
            break;
        }
        match a.strip_prefix("--") {
            Some(w) => words.push((w.to_string(), true)),
            None => words.push((a.clone(), false)),
        }
    }
    words.extend(rest.map(|a| (a.clone(), false)));
    let mut c = Cmdline::default();
    let mut i = 0;
    while i < words.len() {
        let (w, double) = &words[i];
        if *double || !w.starts_with('-') || w.len() < 2 {
            break;
        }
        let letters: Vec<char> = w[1..].chars().collect();
        let mut j = 0;
        while j < letters.len() {
            match letters[j] {
                'F' => c.foreground = true,
                'a' => c.doveconf = Some("-a"),
                'n' => c.doveconf = Some("-n"),
                'c' => {
                    let inline: String = letters[j + 1..].iter().collect();
                    if !inline.is_empty() {
                        c.conf = Some(inline);
                    } else {
                        i += 1;
                        match words.get(i) {
                            Some((v, false)) => c.conf = Some(v.clone()),
                            Some((v, true)) => c.conf = Some(format!("--{v}")),
                            None => return Err("option requires an argument -- 'c'".into()),
                        }
                    }
                    j = letters.len();
                    continue;
                }
                'p' => {
                    return Err(
                        "-p (ask for the SSL key's password) is not supported by Postern: \
                         the key file must not be encrypted"
                            .into(),
                    );
                }
                other => return Err(format!("invalid option -- '{other}'")),
            }
            j += 1;
        }
        i += 1;
    }
    c.words = words.split_off(i.min(words.len()));
    Ok(c)
}

/// The service a mail process runs for `protocol` ([`crate::login::mailproc::main`]).
fn mail_service(
    protocol: Protocol,
    conf: &DovecotConf,
) -> anyhow::Result<std::sync::Arc<dyn crate::login::mailproc::MailService>> {
    Ok(match protocol {
        Protocol::Pop3 => std::sync::Arc::new(crate::pop3d::Pop3State::from_conf(conf)?),
        Protocol::Imap => std::sync::Arc::new(crate::imapd::ImapState::from_conf(conf)?),
    })
}

/// Entry point: `args` are the arguments after the command name.
pub fn main(args: &[String]) -> i32 {
    if let Some(pos) = args.iter().position(|a| a == "--login-process") {
        return login_process_main(args, pos);
    }
    if let Some(pos) = args.iter().position(|a| a == "--mail-process") {
        return crate::login::mailproc::main(
            Path::new(&conf_arg(&args[..pos])),
            &args[pos + 1..],
            mail_service,
        );
    }
    let cmd = match parse_cmdline(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dovecot: {e}");
            eprint!("{USAGE}");
            return FATAL;
        }
    };
    let defaulted = cmd.conf.is_none();
    let conf_path = cmd
        .conf
        .clone()
        .unwrap_or_else(|| default_conf_path().display().to_string());
    if let Some(flag) = cmd.doveconf {
        return crate::cli::doveconf::main(&[flag.to_string(), "-c".into(), conf_path]);
    }
    match cmd.words.first() {
        None => start(&conf_path, defaulted, cmd.foreground),
        Some((_, false)) => doveadm(&conf_path, &cmd.words),
        Some((w, true)) => match w.as_str() {
            "version" => {
                println!("{DOVECOT_VERSION} (Postern {})", env!("CARGO_PKG_VERSION"));
                0
            }
            "hostdomain" => {
                println!("{}", hostdomain());
                0
            }
            "build-options" => {
                print!("{}", build_options());
                0
            }
            "help" => {
                eprint!("{USAGE}");
                0
            }
            other => {
                eprint!("{USAGE}");
                eprintln!("Fatal: Unknown argument: --{other}");
                FATAL
            }
        },
    }
}

/// `dovecot --build-options`: what this build has, in Dovecot's four lines.
fn build_options() -> String {
    "Build options: ioloop=epoll notify=none rustls io_block_size=8192\n\
     SQL drivers:\n\
     Passdb: pam passwd passwd-file shadow\n\
     Userdb: passwd passwd-file static\n"
        .to_string()
}

/// `dovecot --hostdomain`: the host's canonical name (Dovecot's `my_hostdomain()`), else
/// its name.
fn hostdomain() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    // The canonical name getaddrinfo(AI_CANONNAME) gives (service "0": any port).
    match crate::sys::net::getaddrinfo(&host, "0") {
        Ok((Some(canon), _)) => canon,
        _ => host,
    }
}

/// Where start-up failures go: stderr, and the log (the configured one once the file is
/// read, syslog before).
struct Startup {
    log: DovecotLog,
}

impl Startup {
    /// Whether the log is somewhere else than the screen: syslog without a `/dev/log`
    /// falls back to stderr, where the line has just been printed.
    fn log_apart(&self) -> bool {
        !matches!(self.log, DovecotLog::Stderr)
            && (!matches!(self.log, DovecotLog::Syslog) || Path::new("/dev/log").exists())
    }

    /// `Fatal: TEXT` on stderr, `master: Fatal: TEXT` in the log; returns the exit status.
    fn fatal(&self, text: &str) -> i32 {
        eprintln!("Fatal: {text}");
        if self.log_apart() {
            self.log.fatal(&format!("master: {text}"));
            crate::log::flush();
        }
        FATAL
    }

    /// A doveconf line (`doveconf: Fatal: Error in configuration file …`) as the real
    /// dovecot prints it, logged as the config process's.
    fn doveconf_fatal(&self, line: &str) -> i32 {
        eprintln!("{line}");
        if self.log_apart() {
            let text = line
                .strip_prefix("doveconf: Fatal: ")
                .or_else(|| line.strip_prefix("Fatal: "))
                .unwrap_or(line);
            self.log.fatal(&format!("config: {text}"));
            crate::log::flush();
        }
        FATAL
    }

    fn error(&self, text: &str) {
        eprintln!("Error: {text}");
        if self.log_apart() {
            self.log.error(&format!("master: {text}"));
        }
    }
}

/// What `base_dir/master.pid` says, read as Dovecot's master and doveadm read it: a pid
/// that is neither ours nor gone (`kill(pid, 0)` fails with ESRCH), or `None`. `Err` when
/// the file exists but cannot be read. `note` receives Dovecot's remarks (empty file,
/// invalid pid).
fn pid_file_read(path: &Path, note: &mut dyn FnMut(String)) -> Result<Option<i32>, String> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "open({}) failed: {}",
                path.display(),
                crate::config::error::strerror(&e)
            ));
        }
    };
    if text.is_empty() {
        note(format!("Empty PID file in {}, overriding", path.display()));
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&text);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let Ok(pid) = text.parse::<i32>() else {
        note("PID file contains invalid PID value".to_string());
        return Ok(None);
    };
    if pid <= 0 || pid as u32 == std::process::id() {
        return Ok(None);
    }
    Ok(if process_alive(pid) { Some(pid) } else { None })
}

/// Whether `pid` is a live process: `kill(pid, 0)` does not fail with ESRCH (Dovecot's
/// test), and it is not a zombie waiting for a parent that does not reap (a container's
/// pid 1 may never do it), which Dovecot would take for a running master.
pub fn process_alive(pid: i32) -> bool {
    if matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    ) {
        return false;
    }
    // /proc/PID/stat: `PID (comm) STATE …`; comm may hold spaces and parentheses.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

fn pid_file_of(conf: &DovecotConf) -> PathBuf {
    PathBuf::from(conf.get("base_dir").unwrap_or("/run/dovecot")).join("master.pid")
}

/// Load the file as `dovecot` does, with its wording for a file that is not there.
fn load_conf(path: &str) -> Result<DovecotConf, String> {
    if let Err(e) = std::fs::metadata(path) {
        return Err(format!(
            "Fatal: Error reading configuration: stat({path}) failed: {}",
            crate::config::error::strerror(&e)
        ));
    }
    DovecotConf::load(Path::new(path)).map_err(|e| crate::cli::doveconf::fatal_text(&e))
}

/// `dovecot stop`, `dovecot reload`: what doveadm does for them.
fn doveadm(conf_path: &str, words: &[(String, bool)]) -> i32 {
    let word = words[0].0.as_str();
    if !matches!(word, "stop" | "reload") {
        eprintln!("usage: doveadm [-Dv] [-f <formatter>] <command> [<args>]");
        eprintln!("  reload       ");
        eprintln!("  stop         ");
        eprintln!("(Postern has the doveadm commands stop and reload only)");
        return EX_USAGE;
    }
    if words.len() > 1 {
        let extra: Vec<&str> = words[1..].iter().map(|(w, _)| w.as_str()).collect();
        eprintln!("Error: Extraneous arguments found: {}", extra.join(" "));
        return EX_USAGE;
    }
    let conf = match load_conf(conf_path) {
        Ok(c) => c,
        Err(line) => {
            eprintln!("{line}");
            // doveadm's own fatal status for a file it cannot stat; doveconf's (89) for
            // one doveconf rejects (both seen from the real `dovecot stop`).
            return if line.starts_with("Fatal: Error reading configuration") {
                EX_TEMPFAIL
            } else {
                FATAL
            };
        }
    };
    let pid_file = pid_file_of(&conf);
    let pid = match pid_file_read(&pid_file, &mut |m| eprintln!("Error: {m}")) {
        Ok(Some(pid)) => pid,
        Ok(None) => {
            eprintln!(
                "Fatal: Dovecot is not running (read from {})",
                pid_file.display()
            );
            return EX_TEMPFAIL;
        }
        Err(e) => {
            eprintln!("Fatal: {e}");
            return EX_TEMPFAIL;
        }
    };
    let (sig, signo) = if word == "stop" {
        (nix::sys::signal::Signal::SIGTERM, 15)
    } else {
        (nix::sys::signal::Signal::SIGHUP, 1)
    };
    let target = nix::unistd::Pid::from_raw(pid);
    if let Err(e) = nix::sys::signal::kill(target, sig) {
        eprintln!("Fatal: kill({pid}, {signo}) failed: {}", e.desc());
        return EX_TEMPFAIL;
    }
    if word == "stop" {
        // doveadm: wait a while (3 s) for the process to die.
        for _ in 0..30 {
            if !process_alive(pid) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    0
}

/// Addresses one `listen`/`address` word stands for (Dovecot's `resolve_ip`).
fn resolve_listen(word: &str) -> Result<Vec<IpAddr>, String> {
    match word {
        "*" => return Ok(vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]),
        "::" | "[::]" => return Ok(vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)]),
        _ => {}
    }
    let host = word.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    use std::net::ToSocketAddrs;
    let addrs = (host, 0)
        .to_socket_addrs()
        .map_err(|e| {
            let e = crate::config::error::strerror(&e);
            let e = e
                .strip_prefix("failed to lookup address information: ")
                .unwrap_or(&e)
                .to_string();
            format!("Can't resolve address {word}: {e}")
        })?
        .map(|a| a.ip());
    let mut ips: Vec<IpAddr> = Vec::new();
    for ip in addrs {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        return Err(format!("No IPs for address: {word}"));
    }
    Ok(ips)
}

/// A listening TCP socket as Dovecot's `net_listen_full` makes it: SO_REUSEADDR, IPv6
/// only for an IPv6 address (so `::` and `*` can both be bound), backlog 100.
fn listen_tcp(addr: SocketAddr) -> Result<std::net::TcpListener, nix::errno::Errno> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt,
        socket, sockopt,
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd: OwnedFd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::new(100)?)?;
    Ok(std::net::TcpListener::from(fd))
}

/// Write `base_dir/master.pid` as Dovecot does (`PID\n`; 0600, as its umask leaves it).
fn create_pid_file(path: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .map_err(|e| {
            format!(
                "open({}) failed: {}",
                path.display(),
                crate::config::error::strerror(&e)
            )
        })
}

/// Start the master.
fn start(conf_path: &str, defaulted: bool, foreground: bool) -> i32 {
    let mut st = Startup {
        log: DovecotLog::Syslog,
    };
    let conf = match load_conf(conf_path) {
        Ok(c) => c,
        Err(line) => return st.doveconf_fatal(&line),
    };
    st.log = DovecotLog::from_conf(&conf);
    // As dovecot(1), which runs doveconf's checks first (seen from 2.3.19: this line, 89).
    if let Err(m) = conf.check() {
        return st.doveconf_fatal(&format!(
            "doveconf: Fatal: Error in configuration file {conf_path}: {m}"
        ));
    }
    // As Dovecot 2.3.19 started as root: doveconf's check for `default_login_user`, the
    // master's for a service's own `user`.
    for p in SERVED {
        if !conf.protocols().iter().any(|w| w == p.name()) {
            continue;
        }
        match crate::login::process::login_identity(&conf, p) {
            Ok(_) => {}
            Err(e @ crate::login::process::LoginUserError::Default(_)) => {
                return st.doveconf_fatal(&format!(
                    "doveconf: Fatal: Error in configuration file {conf_path}: {e}"
                ));
            }
            Err(e) => return st.fatal(&e.to_string()),
        }
    }
    let pid_file = pid_file_of(&conf);
    // Remarks on the pid file are printed now and logged once detached: nothing may log
    // through the syslog writer thread before the fork, which the child would not have.
    let mut pid_notes: Vec<String> = Vec::new();
    match pid_file_read(&pid_file, &mut |m| {
        eprintln!("Error: {m}");
        pid_notes.push(m);
    }) {
        Ok(None) => {}
        Ok(Some(pid)) => {
            return st.fatal(&format!(
                "Dovecot is already running with PID {pid} (read from {})",
                pid_file.display()
            ));
        }
        Err(e) => return st.fatal(&e),
    }
    if let Some(dir) = pid_file.parent()
        && !dir.is_dir()
    {
        use std::os::unix::fs::DirBuilderExt;
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
        {
            return st.fatal(&format!(
                "mkdir({}) failed: {}",
                dir.display(),
                crate::config::error::strerror(&e)
            ));
        }
    }
    let state = match Services::from_conf(&conf) {
        Ok(s) => s,
        Err(e) => return st.fatal(&e.to_string()),
    };
    let tls_available = conf.ssl() != "no" && !conf.ssl_cert().is_empty();
    // `service auth { unix_listener … }` owners are checked with the rest of the
    // configuration, before anything is bound (as Dovecot's config check does).
    let mut auth_owners = Vec::new();
    for s in conf.auth_client_sockets() {
        match socket_owner(&s) {
            Ok(o) => auth_owners.push((s, o)),
            Err(m) => return st.fatal(&m),
        }
    }
    // Listeners: as Dovecot's services_create() then services_listen().
    let served = state.served(&conf.protocols());
    let mut binds: Vec<(Protocol, String, SocketAddr, bool)> = Vec::new();
    for &p in &served {
        for l in conf.listeners(p.name()) {
            if l.port == 0 || (l.ssl && !tls_available) {
                continue;
            }
            let words = if l.addresses.is_empty() {
                vec!["*".to_string()]
            } else {
                l.addresses.clone()
            };
            for w in words {
                match resolve_listen(&w) {
                    Ok(ips) => {
                        for ip in ips {
                            binds.push((p, w.clone(), SocketAddr::new(ip, l.port), l.ssl));
                        }
                    }
                    Err(e) => return st.fatal(&format!("service({}) {e}", p.login_service())),
                }
            }
        }
    }
    // Bind before detaching, so that errors reach the admin's terminal.
    let mut listeners: Vec<(Protocol, std::net::TcpListener, bool)> = Vec::new();
    let mut failed = false;
    for (p, word, addr, ssl) in &binds {
        match listen_tcp(*addr) {
            Ok(l) => {
                let _ = l.set_nonblocking(true);
                listeners.push((*p, l, *ssl));
            }
            Err(e) => {
                st.error(&format!(
                    "service({}): listen({word}, {}) failed: {}",
                    p.login_service(),
                    addr.port(),
                    e.desc()
                ));
                failed = true;
            }
        }
    }
    if failed {
        return st.fatal("Failed to start listeners");
    }
    // The auth client sockets (Postfix's `smtpd_sasl_type = dovecot` connects to one),
    // answered from the same passdbs as the POP3 logins.
    let mut auth_listeners = Vec::new();
    for (s, owner) in &auth_owners {
        match crate::auth::dovecot_proto::bind_std(&s.path, s.mode, *owner) {
            Ok(l) => auth_listeners.push(l),
            Err(e) => {
                // Seen from Dovecot 2.3.19: these two lines, status 89.
                st.error(&format!(
                    "bind({}) failed: {}",
                    s.path.display(),
                    crate::config::error::strerror(&e)
                ));
                return st.fatal("Failed to start listeners");
            }
        }
    }
    let mut ready = Readiness::none();
    if !foreground {
        // As Dovecot's daemonize(), but the starting command waits for the report.
        match detach((
            FATAL,
            "Fatal: the master exited during start-up (see the log)",
        )) {
            Ok(Detached::Child(r)) => ready = r,
            Ok(Detached::Parent(code)) => return code,
            Err(e) => return st.fatal(&format!("fork() failed: {}", e.desc())),
        }
    }
    if let Err(e) = create_pid_file(&pid_file) {
        ready.fail(FATAL, &format!("Fatal: {e}"));
        return st.fatal(&e);
    }
    for m in &pid_notes {
        state.log.error(&format!("master: {m}"));
    }
    if defaulted && conf_path == CONF_V1 && Path::new(CONF_V2).exists() {
        state.log.warning(&format!(
            "master: {CONF_V2} is not read: {CONF_V1} (Dovecot 1.x's file) exists and is used instead"
        ));
    }
    for p in conf.protocols() {
        if Protocol::from_name(&p).is_none() && p != "none" {
            state.log.warning(&format!(
                "master: protocol {p} is not served by this version of Postern"
            ));
        }
    }
    let names: Vec<&str> = served.iter().map(|p| p.name()).collect();
    state.log.info(&format!(
        "master: Dovecot v{DOVECOT_VERSION} (Postern {}) starting up for {}",
        env!("CARGO_PKG_VERSION"),
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    ));
    crate::login::limit_malloc_arenas();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = std::fs::remove_file(&pid_file);
            ready.fail(FATAL, &format!("Fatal: tokio: {e}"));
            return st.fatal(&format!("tokio: {e}"));
        }
    };
    let conf_file = PathBuf::from(conf_path);
    rt.block_on(serve(state, conf_file, listeners, auth_listeners, ready));
    let _ = std::fs::remove_file(&pid_file);
    crate::log::flush();
    0
}

/// The settings each part of the master reads, replaced on reload.
struct Watches {
    pop3: tokio::sync::watch::Sender<Option<Arc<Pop3State>>>,
    imap: tokio::sync::watch::Sender<Option<Arc<ImapState>>>,
    auth: tokio::sync::watch::Sender<Arc<DovecotAuth>>,
    log: tokio::sync::watch::Sender<DovecotLog>,
    /// The mail processes serving logged-in sessions.
    procs: Arc<MailProcs>,
}

impl Watches {
    fn send(&self, s: &Services) {
        let _ = self.pop3.send(s.pop3.clone());
        let _ = self.imap.send(s.imap.clone());
        let _ = self.auth.send(s.auth.clone());
        let _ = self.log.send(s.log.clone());
    }
}

/// The master's loop: start a login process per protocol, report readiness, then
/// supervise until SIGTERM.
async fn serve(
    state: Services,
    conf_file: PathBuf,
    listeners: Vec<(Protocol, std::net::TcpListener, bool)>,
    auth_listeners: Vec<std::os::unix::net::UnixListener>,
    mut ready: Readiness,
) {
    let log = tokio::sync::watch::channel(state.log.clone()).0;
    let w = Watches {
        pop3: tokio::sync::watch::channel(state.pop3.clone()).0,
        imap: tokio::sync::watch::channel(state.imap.clone()).0,
        auth: tokio::sync::watch::channel(state.auth.clone()).0,
        procs: MailProcs::new(&conf_file, log.subscribe()),
        log,
    };
    for l in auth_listeners {
        match tokio::net::UnixListener::from_std(l) {
            Ok(l) => {
                let rx = w.auth.subscribe();
                tokio::spawn(crate::auth::dovecot_proto::serve_current(l, move || {
                    rx.borrow().clone()
                }));
            }
            Err(e) => state
                .log
                .error(&format!("master: service(auth): listener: {e}")),
        }
    }
    // One login process per protocol with listeners, as Dovecot's.
    let mut protos: Vec<Protocol> = Vec::new();
    for (p, _, _) in &listeners {
        if !protos.contains(p) {
            protos.push(*p);
        }
    }
    let spawn = |p: Protocol, log: &DovecotLog| {
        let mine: Vec<(&std::net::TcpListener, bool)> = listeners
            .iter()
            .filter(|(q, _, _)| *q == p)
            .map(|(_, l, ssl)| (l, *ssl))
            .collect();
        match spawn_login(&conf_file, p, &mine, &w) {
            Ok(l) => Some(l),
            Err(e) => {
                log.error(&format!(
                    "master: service({}): fork() failed: {e}",
                    p.login_service()
                ));
                None
            }
        }
    };
    // Before the login processes start: the kernel pages out only pages no other
    // process maps, and the login processes map the same start-up code while they read
    // the configuration.
    crate::memory::release_startup_code();
    let mut logins: Vec<(Protocol, Option<LoginProcess>)> =
        protos.iter().map(|p| (*p, spawn(*p, &state.log))).collect();
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        ready.fail(FATAL, "Fatal: signal handlers could not be installed");
        return;
    };
    ready.ok();
    let mut old: Vec<tokio::process::Child> = Vec::new();
    // Old login processes (after a reload) are reaped at the next tick.
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let exited = async {
            let waits = logins.iter_mut().enumerate().filter_map(|(i, (_, l))| {
                l.as_mut().map(|l| {
                    Box::pin(async move { (i, l.child.wait().await.ok()) })
                        as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>
                })
            });
            let v: Vec<_> = waits.collect();
            if v.is_empty() {
                std::future::pending().await
            } else {
                futures_select_all(v).await
            }
        };
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick(), if !old.is_empty() => {}
            (i, status) = exited => {
                // As Dovecot's master: a login process that died is logged and
                // replaced (after a pause, so a crash at start does not spin).
                let log = w.log.borrow().clone();
                let (i, status): (usize, Option<std::process::ExitStatus>) = (i, status);
                let p = logins[i].0;
                let pid = logins[i].1.as_ref().map_or(0, |l| l.pid);
                log.error(&format!(
                    "master: service({}): child {pid} {}",
                    p.login_service(),
                    crate::login::describe_exit(status)
                ));
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                logins[i].1 = spawn(p, &log);
            }
            _ = hup.recv() => {
                // As Dovecot's master: new sessions get the new settings, running
                // ones keep theirs; new login processes serve new clients and the
                // old ones finish those they have. XXX: listeners are not re-bound.
                let log = w.log.borrow().clone();
                log.warning("master: SIGHUP received - reloading configuration");
                match DovecotConf::load(&conf_file)
                    .map_err(|e| e.to_string())
                    .and_then(|c| Services::from_conf(&c).map_err(|e| e.to_string()))
                {
                    Ok(new) => {
                        w.send(&new);
                        // Running sessions keep their processes and settings; new
                        // ones get new processes.
                        w.procs.retire_all();
                        crate::memory::release_startup_code();
                        for (p, l) in logins.iter_mut() {
                            if let Some(fresh) = spawn(*p, &new.log)
                                && let Some(prev) = l.replace(fresh)
                            {
                                let _ = prev.ch.send(&Msg::Drain, None).await;
                                old.push(prev.child);
                            }
                        }
                    }
                    Err(e) => log.error(&format!("master: reload failed: {e}")),
                }
            }
        }
        // Reap old login processes that have finished.
        old.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
    }
    for mut c in old
        .into_iter()
        .chain(logins.into_iter().filter_map(|(_, l)| l.map(|l| l.child)))
    {
        let _ = c.start_kill();
        let _ = c.wait().await;
    }
    // As Dovecot's `shutdown_clients = yes`: logged-in sessions end too.
    w.procs.stop(std::time::Duration::from_secs(5)).await;
    w.log
        .borrow()
        .info(&format!("master: Dovecot v{DOVECOT_VERSION} shutting down"));
}

/// The first of several futures to finish, with its index (what `select_all` does).
async fn futures_select_all<T>(
    mut futs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + '_>>>,
) -> T {
    std::future::poll_fn(move |cx| {
        for f in futs.iter_mut() {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// The `-c FILE` the master gave a process it started, else the default file.
fn conf_arg(args: &[String]) -> String {
    match args.iter().position(|a| a == "-c") {
        Some(i) => args.get(i + 1).cloned().unwrap_or_default(),
        None => default_conf_path().display().to_string(),
    }
}

/// `dovecot -c FILE --login-process PROTO CTL FD:ssl|plain…`: this is a login process the
/// master started.
fn login_process_main(args: &[String], pos: usize) -> i32 {
    let conf_path = conf_arg(&args[..pos]);
    let mut it = args[pos + 1..].iter();
    let Some(protocol) = it.next().and_then(|p| Protocol::from_name(p)) else {
        eprintln!("Fatal: --login-process requires a protocol");
        return FATAL;
    };
    let Some(ctl) = it.next().and_then(|c| c.parse().ok()) else {
        eprintln!("Fatal: --login-process requires a descriptor");
        return FATAL;
    };
    let mut ls = Vec::new();
    for l in it {
        let (fd, kind) = l.split_once(':').unwrap_or((l, "plain"));
        match fd.parse() {
            Ok(fd) => ls.push((fd, kind == "ssl")),
            Err(_) => {
                eprintln!("Fatal: Invalid listener: {l}");
                return FATAL;
            }
        }
    }
    crate::login::process::main(Path::new(&conf_path), protocol, ctl, &ls)
}

/// The owner (uid, gid) a `service auth` unix_listener's `user`/`group` name, or Dovecot's
/// error when one does not exist. `None`: keep this process's.
fn socket_owner(
    s: &crate::config::dovecot::AuthSocket,
) -> Result<Option<crate::auth::dovecot_proto::SocketOwner>, String> {
    let uid = if s.user.is_empty() {
        None
    } else {
        match nix::unistd::User::from_name(&s.user) {
            Ok(Some(u)) => Some(u.uid.as_raw()),
            _ => {
                return Err(format!(
                    "service(auth) User doesn't exist: {} (See service auth {{ unix_listener {} {{ user }} }} setting)",
                    s.user, s.name
                ));
            }
        }
    };
    let gid = if s.group.is_empty() {
        None
    } else {
        match nix::unistd::Group::from_name(&s.group) {
            Ok(Some(g)) => Some(g.gid.as_raw()),
            _ => {
                return Err(format!(
                    "service(auth) Group doesn't exist: {} (See service auth {{ unix_listener {} {{ group }} }} setting)",
                    s.group, s.name
                ));
            }
        }
    };
    Ok((uid.is_some() || gid.is_some()).then_some((uid, gid)))
}

/// A running login process and the service's end of its channel.
struct LoginProcess {
    child: tokio::process::Child,
    /// Kept: the child forgets its id once reaped.
    pid: u32,
    ch: Arc<Channel>,
}

/// Start a login process for `protocol` (this executable, `dovecot/pop3-login` or
/// `dovecot/imap-login` in `ps`) with its listening sockets and a new channel, and serve
/// its requests.
fn spawn_login(
    conf_file: &Path,
    protocol: Protocol,
    listeners: &[(&std::net::TcpListener, bool)],
    w: &Watches,
) -> std::io::Result<LoginProcess> {
    let (ours, theirs) = crate::login::handoff::pair()?;
    let mut args = vec![
        "dovecot".to_string(),
        "-c".to_string(),
        conf_file.display().to_string(),
        "--login-process".to_string(),
        protocol.name().to_string(),
        theirs.as_raw_fd().to_string(),
    ];
    let mut keep = vec![theirs.as_raw_fd()];
    for (l, ssl) in listeners {
        let fd = l.as_raw_fd();
        args.push(format!("{fd}:{}", if *ssl { "ssl" } else { "plain" }));
        keep.push(fd);
    }
    let child = crate::login::mailproc::reexec(
        &format!("dovecot/{}", protocol.login_service()),
        &args,
        keep,
    )?;
    let pid = child.id().unwrap_or(0);
    drop(theirs);
    let ch = Arc::new(Channel::new(ours)?);
    match protocol {
        Protocol::Pop3 => {
            tokio::spawn(crate::pop3d::serve_login_process(
                ch.clone(),
                w.pop3.subscribe(),
                w.procs.clone(),
            ));
        }
        Protocol::Imap => {
            tokio::spawn(crate::imapd::serve_login_process(
                ch.clone(),
                w.imap.subscribe(),
                w.procs.clone(),
            ));
        }
    }
    Ok(LoginProcess { child, pid, ch })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// As Dovecot's getopt: `--version` is a word, `-Fc FILE` a cluster, `-c` needs a file.
    #[test]
    fn command_line_as_dovecot_reads_it() {
        let c = parse_cmdline(&args(&["-F", "-c", "/x.conf"])).unwrap();
        assert!(c.foreground);
        assert_eq!(c.conf.as_deref(), Some("/x.conf"));
        assert!(c.words.is_empty());
        let c = parse_cmdline(&args(&["-Fc/x.conf", "stop"])).unwrap();
        assert_eq!(c.conf.as_deref(), Some("/x.conf"));
        assert_eq!(c.words, vec![("stop".to_string(), false)]);
        let c = parse_cmdline(&args(&["--version"])).unwrap();
        assert_eq!(c.words, vec![("version".to_string(), true)]);
        let c = parse_cmdline(&args(&["-c", "/x", "-n"])).unwrap();
        assert_eq!(c.doveconf, Some("-n"));
        assert_eq!(
            parse_cmdline(&args(&["-h"])),
            Err("invalid option -- 'h'".to_string())
        );
        assert_eq!(
            parse_cmdline(&args(&["-c"])),
            Err("option requires an argument -- 'c'".to_string())
        );
        // Options after the first word are the word's (doveadm's), not dovecot's.
        let c = parse_cmdline(&args(&["reload", "-F"])).unwrap();
        assert!(!c.foreground);
        assert_eq!(c.words.len(), 2);
    }

    #[test]
    fn listen_words() {
        assert_eq!(
            resolve_listen("*").unwrap(),
            vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
        );
        assert_eq!(
            resolve_listen("[::]").unwrap(),
            vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
        );
        assert_eq!(
            resolve_listen("127.0.0.1").unwrap(),
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
        );
        assert!(
            resolve_listen("no-such-host.invalid")
                .unwrap_err()
                .starts_with("Can't resolve address no-such-host.invalid: ")
        );
    }

    /// `listen = *, ::`: both bound on one port, the IPv6 socket IPv6-only.
    #[test]
    fn any_v4_and_any_v6_bind_together() {
        let v4 = listen_tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)).unwrap();
        let port = v4.local_addr().unwrap().port();
        match listen_tcp(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)) {
            Ok(v6) => assert_eq!(v6.local_addr().unwrap().port(), port),
            // A host without IPv6 cannot make the socket at all.
            Err(e) => assert_eq!(e, nix::errno::Errno::EAFNOSUPPORT),
        }
        let again = listen_tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
        assert_eq!(again.unwrap_err(), nix::errno::Errno::EADDRINUSE);
    }

    #[test]
    fn pid_file_as_dovecot_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.pid");
        let mut notes = Vec::new();
        assert_eq!(pid_file_read(&p, &mut |m| notes.push(m)), Ok(None));
        std::fs::write(&p, "").unwrap();
        assert_eq!(pid_file_read(&p, &mut |m| notes.push(m)), Ok(None));
        std::fs::write(&p, "garbage\n").unwrap();
        assert_eq!(pid_file_read(&p, &mut |m| notes.push(m)), Ok(None));
        assert_eq!(
            notes,
            vec![
                format!("Empty PID file in {}, overriding", p.display()),
                "PID file contains invalid PID value".to_string()
            ]
        );
        // Our own pid does not count; a live process does; a reaped one does not.
        std::fs::write(&p, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(pid_file_read(&p, &mut |_| {}), Ok(None));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&p, format!("{}\n", child.id())).unwrap();
        assert_eq!(pid_file_read(&p, &mut |_| {}), Ok(Some(child.id() as i32)));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(pid_file_read(&p, &mut |_| {}), Ok(None));
    }
}
