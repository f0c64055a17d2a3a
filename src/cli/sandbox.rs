//! `postern sandbox [--check-only] [DIR]`: an embedded default configuration for trying
//! Postern without root and without touching `/etc`: a Postfix `main.cf`/`master.cf`
//! (loopback listener on a free high port, queue under DIR), a Cyrus SASL `smtpd.conf` and a
//! Dovecot 2.x `dovecot.conf` (POP3/IMAP on free loopback ports). It writes the files, checks
//! them the way `postfix check` does, prints the settings with `postconf -n`, and then runs
//! the mail system in the foreground (`postfix -c DIR start-fg`; Ctrl-C stops it).
//!
//! Known limit: of the services, SMTP (smtpd, with the durable queue) runs today; POP3 and
//! IMAP listeners come with their issues, the dovecot.conf is written for them already.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(10025)
}

fn current_user() -> String {
    // Postfix refuses to run its services as root, or as default_privs (`nobody`): as root
    // the sandbox uses the `postfix` account if there is one, else a system account
    // `postern`, created here as a package install would.
    if nix::unistd::Uid::effective().is_root() {
        for name in ["postfix", "postern"] {
            if nix::unistd::User::from_name(name).ok().flatten().is_some() {
                return name.into();
            }
        }
        let _ = std::process::Command::new("useradd")
            .args(["-r", "-M", "-s", "/usr/sbin/nologin", "postern"])
            .status();
        return "postern".into();
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "nobody".into())
}

/// Write the sandbox configuration into `dir`; returns the SMTP, POP3 and IMAP ports.
pub fn write_config(dir: &Path) -> std::io::Result<(u16, u16, u16)> {
    let (smtp, pop3, imap) = (free_port(), free_port(), free_port());
    let user = current_user();
    let d = dir.display();
    for sub in ["spool", "data", "mail", "sasl"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::write(
        dir.join("main.cf"),
        format!(
            "# Postern sandbox: loopback only, no root needed.\n\
             compatibility_level = 3.7\n\
             myhostname = sandbox.localdomain\n\
             mydestination = $myhostname, localhost.$mydomain, localhost\n\
             inet_interfaces = loopback-only\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             queue_directory = {d}/spool\n\
             data_directory = {d}/data\n\
             mail_spool_directory = {d}/mail\n\
             mail_owner = {user}\n\
             cyrus_sasl_config_path = {d}/sasl\n\
             smtpd_sasl_auth_enable = yes\n\
             broken_sasl_auth_clients = yes\n\
             smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated,\n    \
             reject_unauth_destination\n\
             alias_maps = hash:/etc/aliases\n\
             maillog_file = /dev/stdout\n\
             # Mail for other domains stays deferred: a sandbox sends nothing to the\n\
             # Internet. Remove this line (or set relayhost) to try outbound SMTP.\n\
             default_transport = retry:4.7.0 the Postern sandbox sends no mail out\n"
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
             smtp      unix  -       -       n       -       -       smtp\n"
        ),
    )?;
    std::fs::write(
        dir.join("sasl/smtpd.conf"),
        format!(
            "pwcheck_method: saslauthd\nmech_list: plain login\nsaslauthd_path: {d}/saslauthd/mux\n"
        ),
    )?;
    std::fs::write(
        dir.join("dovecot.conf"),
        format!(
            "# Postern sandbox (Dovecot 2.x syntax)\n\
             protocols = pop3 imap\n\
             listen = 127.0.0.1\n\
             mail_location = mbox:~/mail:INBOX={d}/mail/%u\n\
             ssl = no\n\
             service pop3-login {{\n  inet_listener pop3 {{\n    port = {pop3}\n  }}\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    port = {imap}\n  }}\n}}\n"
        ),
    )?;
    Ok((smtp, pop3, imap))
}

pub fn main(args: &[String]) -> i32 {
    let check_only = args.iter().any(|a| a == "--check-only");
    let dir: PathBuf = match args.iter().find(|a| !a.starts_with("--")) {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("postern-sandbox-{}", std::process::id())),
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("postern: sandbox: mkdir {}: {e}", dir.display());
        return 1;
    }
    let (smtp, pop3, imap) = match write_config(&dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("postern: sandbox: write {}: {e}", dir.display());
            return 1;
        }
    };
    println!("Postern sandbox configuration in {}", dir.display());
    println!("  SMTP 127.0.0.1:{smtp}  POP3 127.0.0.1:{pop3}  IMAP 127.0.0.1:{imap}");
    println!();
    println!("$ postconf -c {} -n", dir.display());
    let d = dir.display().to_string();
    let rc = super::postconf::main(&["-c".into(), d.clone(), "-n".into()]);
    if rc != 0 {
        return rc;
    }
    println!();
    println!("$ postfix -c {} check", dir.display());
    let rc = super::postfix_check::run_with(&dir, Some(&dir.join("dovecot.conf")));
    if rc != 0 || check_only {
        return rc;
    }
    if nix::unistd::Uid::effective().is_root() {
        let _ = std::process::Command::new("chown")
            .args(["-R", &current_user(), &d])
            .status();
    }
    println!();
    println!(
        "Starting: postfix -c {d} start-fg   (try: swaks --server 127.0.0.1:{smtp} --to root@localhost)"
    );
    println!(
        "Mail for root@localhost is delivered to {d}/mail/root. POP3/IMAP ({pop3}/{imap}) are not started by the sandbox. Mail for other domains is deferred (default_transport = retry:…)."
    );
    super::postfix::main(&["-c".into(), d, "start-fg".into()])
}
