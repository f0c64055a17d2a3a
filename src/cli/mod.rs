//! Command front ends. Each is a thin layer over the library modules; each keeps the flags,
//! output and exit codes of the Postfix/Dovecot/Cyrus command it replaces.

pub mod doveconf;
pub mod dovecot;
pub mod mailq;
pub mod postcat;
pub mod postconf;
pub mod postconf_master;
pub mod postdrop;
pub mod postfix;
pub mod postfix_check;
pub mod postmap;
pub mod postqueue;
pub mod postsuper;
pub mod sandbox;
pub mod saslauthd;
pub mod sendmail;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

/// The names `postern` answers to, as installed (one binary, many links).
pub const COMMANDS: &[&str] = &[
    "postconf",
    "postfix",
    "sendmail",
    "mailq",
    "newaliases",
    "postqueue",
    "postsuper",
    "postmap",
    "postalias",
    "postcat",
    "postdrop",
    "dovecot",
    "doveconf",
    "saslauthd",
    "testsaslauthd",
];

/// Commands that print and then end, whose output is often piped into `head` or `less`:
/// they get the default `SIGPIPE` disposition back, so that a reader going away ends them
/// quietly as it ends the C programs they replace (`postconf | head -1`). Rust starts every
/// program with `SIGPIPE` ignored, which turns that into a panic in `print!`. The daemons
/// (`postfix`, `dovecot`, `saslauthd`, the queue manager) and `sendmail` (which writes to
/// pipes and sockets of other processes) keep it ignored, as Postfix's daemons do, and
/// handle `EPIPE` as an error; `postern sandbox` handles it itself (it must stop what it
/// started first).
const PRINTING_COMMANDS: &[&str] = &[
    "postconf",
    "doveconf",
    "postmap",
    "postalias",
    "postcat",
    "mailq",
    "postqueue",
    "testsaslauthd",
];

/// Restore the default `SIGPIPE` disposition (see [`PRINTING_COMMANDS`]).
pub fn default_sigpipe() {
    crate::sys::default_sigpipe();
}

/// Pick the command from `argv[0]` (its file name), or from the first argument when called
/// as `postern`, and run it with the remaining arguments (`args[0]` is the command name).
pub fn dispatch(args: Vec<OsString>) -> ExitCode {
    let argv0 = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "postern".into());
    // Fedora installs alternatives such as `sendmail.postfix`, `mailq.postfix`.
    let base = argv0.strip_suffix(".postfix").unwrap_or(&argv0).to_string();
    let (name, rest): (String, Vec<OsString>) = if COMMANDS.contains(&base.as_str()) {
        (base, args.into_iter().skip(1).collect())
    } else {
        let mut it = args.into_iter().skip(1);
        match it.next() {
            None => {
                eprint!("{}", usage());
                return ExitCode::from(1);
            }
            Some(first) => {
                let first = first.to_string_lossy().into_owned();
                match first.as_str() {
                    "-h" | "--help" | "help" | "-V" | "--version" => default_sigpipe(),
                    _ => {}
                }
                match first.as_str() {
                    "-h" | "--help" | "help" => {
                        print!("{}", usage());
                        return ExitCode::SUCCESS;
                    }
                    "-V" | "--version" => {
                        print!("{}", version_text());
                        return ExitCode::SUCCESS;
                    }
                    _ => {}
                }
                // The mail system's own processes, started by the master.
                if ["qmgr", "local", "smtpd"].contains(&first.as_str()) {
                    crate::log::install_panic_hook(&format!("postfix/{first}"));
                }
                if first == "qmgr" {
                    let rest: Vec<String> = it.map(|a| a.to_string_lossy().into_owned()).collect();
                    return ExitCode::from(crate::qmgr::main(&rest) as u8);
                }
                if first == "local" {
                    let rest: Vec<String> = it.map(|a| a.to_string_lossy().into_owned()).collect();
                    return ExitCode::from(crate::qmgr::local_server::main(&rest) as u8);
                }
                if first == "smtpd" {
                    let rest: Vec<String> = it.map(|a| a.to_string_lossy().into_owned()).collect();
                    return ExitCode::from(crate::master::serve::main(&rest) as u8);
                }
                if first == "sandbox" {
                    let rest: Vec<String> = it.map(|a| a.to_string_lossy().into_owned()).collect();
                    return ExitCode::from(sandbox::main(&rest) as u8);
                }
                if !COMMANDS.contains(&first.as_str()) {
                    eprintln!("postern: unknown command: {first}");
                    eprint!("{}", usage());
                    return ExitCode::from(1);
                }
                (first, it.collect())
            }
        }
    };
    let rest: Vec<String> = rest
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if PRINTING_COMMANDS.contains(&name.as_str()) {
        default_sigpipe();
    }
    crate::log::install_panic_hook(&format!("postfix/{name}"));
    let code = match name.as_str() {
        "postconf" => postconf::main(&rest),
        "postfix" => postfix::main(&rest),
        "doveconf" => doveconf::main(&rest),
        "dovecot" => dovecot::main(&rest),
        "postmap" => postmap::postmap_main(&rest),
        "postalias" => postmap::postalias_main(&rest),
        "sendmail" => sendmail::main(&rest),
        "newaliases" => sendmail::newaliases_main(&rest),
        "mailq" => mailq::mailq_main(&rest),
        "postqueue" => postqueue::postqueue_main(&rest),
        "postsuper" => postsuper::postsuper_main(&rest),
        "postcat" => postcat::postcat_main(&rest),
        "postdrop" => postdrop::main(&rest),
        "saslauthd" => crate::cli::saslauthd::saslauthd_main(&rest),
        "testsaslauthd" => crate::cli::saslauthd::testsaslauthd_main(&rest),
        other => {
            eprintln!(
                "postern: {other}: not implemented yet in this version of Postern (see README.md)"
            );
            75 // EX_TEMPFAIL: nothing was done
        }
    };
    ExitCode::from(code as u8)
}

/// One line on each command for `postern --help`: what it is and which program's flags it
/// takes.
const COMMAND_HELP: &[(&str, &str)] = &[
    (
        "postconf",
        "show or edit main.cf and master.cf (Postfix's postconf)",
    ),
    (
        "postfix",
        "start, stop, reload, check the mail system (Postfix's postfix)",
    ),
    (
        "sendmail",
        "submit a message from the command line (Postfix's sendmail)",
    ),
    ("mailq", "list the mail queue (sendmail -bp)"),
    ("newaliases", "rebuild the aliases database (sendmail -bi)"),
    (
        "postqueue",
        "list or flush the mail queue (Postfix's postqueue)",
    ),
    (
        "postsuper",
        "delete, hold, release, requeue queued mail (Postfix's postsuper)",
    ),
    (
        "postmap",
        "build or query a lookup table (Postfix's postmap)",
    ),
    (
        "postalias",
        "build or query an aliases table (Postfix's postalias)",
    ),
    ("postcat", "show a queue file (Postfix's postcat)"),
    (
        "postdrop",
        "write a message into maildrop/ (Postfix's postdrop)",
    ),
    (
        "dovecot",
        "POP3 server and Dovecot auth socket (Dovecot's dovecot)",
    ),
    (
        "doveconf",
        "show the Dovecot configuration (Dovecot's doveconf)",
    ),
    (
        "saslauthd",
        "password checks for SMTP AUTH (Cyrus saslauthd)",
    ),
    (
        "testsaslauthd",
        "ask saslauthd to check a password (Cyrus testsaslauthd)",
    ),
];

/// `postern --version`: Postern's own version and the versions whose behaviour it keeps
/// (`mail_version` and the banners keep saying Postfix 3.7.11, as scripts compare them).
pub fn version_text() -> String {
    format!(
        "postern {} (compatible with Postfix 3.7.11, Dovecot 2.3.19, Cyrus SASL 2.1.28)\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn usage() -> String {
    let mut s = String::from(
        "usage: postern COMMAND [ARGS...]\n       (or call the binary by the command's name: a link named sendmail runs sendmail)\n       postern --version\n\ncommands:\n",
    );
    for c in COMMANDS {
        let what = COMMAND_HELP
            .iter()
            .find(|(n, _)| n == c)
            .map(|(_, w)| *w)
            .unwrap_or("");
        s.push_str(&format!("  {c:<15} {what}\n"));
    }
    s.push_str(
        "  sandbox [DIR]   run the whole mail system on loopback ports, configured in DIR\n",
    );
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_command_has_a_help_line() {
        for c in super::COMMANDS {
            assert!(
                super::COMMAND_HELP.iter().any(|(n, _)| n == c),
                "{c} has no line in postern --help"
            );
        }
    }
}
