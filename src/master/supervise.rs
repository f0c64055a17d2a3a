//! The master's loop once everything runs: signals, the smtpd process's status lines, and
//! processes that exit (started again after a pause, as Postfix's master restarts a daemon
//! that died, logging `warning: process PATH pid N exit status S`).

use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;

use super::{Started, config_directory, load_config, mail_version};
use crate::log;

/// How long a process that died is left down before it is started again; one that ran for
/// less than this is waited for this long again (Postfix throttles such a service).
const RESTART_PAUSE: Duration = Duration::from_secs(2);

/// Watch until SIGTERM/SIGINT. Returns the exit status.
pub fn supervise(started: Started) -> i32 {
    let Started {
        rt,
        signals,
        cfg,
        ident,
        pid_lock,
        data_lock,
        mut children,
    } = started;
    rt.block_on(async {
        let super::serve::Signals {
            mut hup,
            mut term,
            mut int,
        } = signals;
        let mut cfg = cfg;
        let mut lines = status_lines(&mut children);
        // SIGHUPs whose `reloaded` the smtpd process has not sent yet, with their deadline.
        let mut pending: Vec<Instant> = Vec::new();
        let mut restart_smtpd: Option<Instant> = None;
        let mut restart_delivery: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let signo = loop {
            tokio::select! {
                _ = hup.recv() => {
                    match load_config(Some(&cfg.config_dir)) {
                        Ok(new_cfg) => {
                            if let Err(e) = log::configure(&new_cfg) {
                                log::warning(&ident, &format!(
                                    "reload: {e}; keeping the previous log settings"
                                ));
                            }
                            for w in &new_cfg.warnings {
                                log::warning(&ident, w);
                            }
                            cfg = new_cfg;
                        }
                        Err(e) => log::warning(
                            &ident,
                            &format!("reload: {e}; keeping the previous configuration"),
                        ),
                    }
                    match &children.smtpd {
                        Some(p) => {
                            super::children::signal(&p.child, libc::SIGHUP);
                            pending.push(Instant::now() + Duration::from_secs(10));
                        }
                        None => reloaded(&ident, &cfg, &mut children),
                    }
                }
                _ = term.recv() => break libc::SIGTERM,
                _ = int.recv() => break libc::SIGINT,
                line = next_line(&mut lines) => {
                    match line {
                        Some(l) if l.trim_end() == "reloaded" => {
                            if !pending.is_empty() {
                                pending.remove(0);
                            }
                            reloaded(&ident, &cfg, &mut children);
                        }
                        Some(_) => {}
                        None => {
                            // The smtpd process is gone (its exit is logged by the tick).
                            lines = None;
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    while pending.first().is_some_and(|d| *d <= now) {
                        pending.remove(0);
                        reloaded(&ident, &cfg, &mut children);
                    }
                    for (name, pid, how, lived) in children.exited() {
                        // As Postfix's master: only an abnormal end is worth a warning (the
                        // local delivery process ends normally after the queue manager).
                        if how != "exit status 0" {
                            log::warning(&ident, &format!(
                                "process {} {name} pid {pid} {how}", children.exe_display()
                            ));
                        }
                        let wait = if lived < RESTART_PAUSE { RESTART_PAUSE * 5 } else { RESTART_PAUSE };
                        match name {
                            "smtpd" => {
                                lines = None;
                                children.status = None;
                                restart_smtpd.get_or_insert(now + wait);
                            }
                            _ => {
                                // The queue manager and the local delivery process share a
                                // channel: both start again together. The survivor is told to
                                // finish (its input closes) and is left to end on its own.
                                for p in [children.qmgr.as_mut(), children.local.as_mut()]
                                    .into_iter()
                                    .flatten()
                                {
                                    p.stdin = None;
                                }
                                children.qmgr = None;
                                children.local = None;
                                restart_delivery.get_or_insert(now + wait);
                            }
                        }
                    }
                    if restart_smtpd.is_some_and(|t| t <= now) {
                        restart_smtpd = None;
                        match children.start_smtpd() {
                            Ok(()) => lines = status_lines(&mut children),
                            Err(e) => {
                                log::warning(&ident, &format!("smtpd process: {e}"));
                                restart_smtpd = Some(now + RESTART_PAUSE * 5);
                            }
                        }
                    }
                    if restart_delivery.is_some_and(|t| t <= now) {
                        restart_delivery = None;
                        children.start_delivery();
                    }
                }
            }
        };
        log::info(&ident, &format!("terminating on signal {signo}"));
    });
    children.stop();
    rt.shutdown_background();
    pid_lock.remove();
    drop(data_lock);
    0
}

/// The reload is done where it matters: log it, tell the queue manager and the local
/// delivery process.
fn reloaded(
    ident: &str,
    cfg: &crate::config::postfix::PostfixConfig,
    children: &mut super::children::Children,
) {
    log::info(
        ident,
        &format!(
            "reload -- version {}, configuration {}",
            mail_version(cfg),
            config_directory(cfg)
        ),
    );
    children.notify_reload();
}

type Lines = tokio::io::Lines<tokio::io::BufReader<tokio::net::UnixStream>>;

/// The smtpd process's status lines, read asynchronously from a clone of the master's end.
fn status_lines(children: &mut super::children::Children) -> Option<Lines> {
    let s = children.status.as_ref()?.try_clone().ok()?;
    s.set_nonblocking(true).ok()?;
    let s = tokio::net::UnixStream::from_std(s).ok()?;
    Some(tokio::io::BufReader::new(s).lines())
}

async fn next_line(lines: &mut Option<Lines>) -> Option<String> {
    match lines {
        Some(l) => l.next_line().await.ok().flatten(),
        None => std::future::pending().await,
    }
}
