//! Postern swapped into a Debian box that runs the real Postfix, Dovecot and saslauthd,
//! and swapped back: `scripts/swap-replay` (which runs `scripts/swap-in` and
//! `scripts/swap-out` in a scratch copy of this box), run as CI runs it, with each of its
//! steps asserted.
//!
//! On the same mail: a message the real Postfix 3.7.11 deferred (its relay host down) is
//! delivered by Postern after the swap-in (`postqueue -f`); a message Postern deferred is
//! delivered by the real Postfix after the swap-out; an alias and a virtual alias table
//! deliver on both sides (Postern's own indexes built by swap-in, Postfix's `.db` rebuilt
//! by swap-out); POP3 UIDLs read the same through the real Dovecot, Postern and the real
//! Dovecot again, and IMAP UIDs and flags through the real Dovecot before and after and
//! through Postern. Also checked: the commands diverted (dpkg-divert) with the
//! packages' mailq/newaliases untouched, Postern's units winning over Debian's (the
//! generator's postfix@-.service masked), update-rc.d accepting each init script, `man
//! postfix`/`dovecot`/`smtpd` showing Postern's pages, an upgrade of the postfix package
//! (repacked as a newer version and installed with dpkg -i) leaving the swap in place, and
//! swap-out refusing (and changing nothing) while the real Postfix cannot read main.cf,
//! after swap-out every touched file as before (`dpkg --verify` as before, diversions,
//! rc links, units, and the queue's directories, sockets and FIFOs with their owners and
//! modes: Postern keeps Postfix's postfix-files layout), the real daemons running without
//! a fatal line from Postfix or a warning from its postfix-script.
//!
//! The Fedora/RHEL path (`scripts/swap-replay-fedora`: the mta alternative with Fedora's
//! own `alternatives` and `chkconfig`, which Debian does not package) runs when
//! `POSTERN_FEDORA_TOOLS` names a directory holding them built from source
//! (fedora-sysv/chkconfig: `make alternatives chkconfig`); otherwise that test says it is
//! skipped.
//!
//! Root only (namespaces, chroot, packages' files in the scratch root): otherwise the test
//! says it is skipped and passes. The host must be left as it was (checked here too).

mod common;
use common::replay::assert_replay;

use std::time::Duration;

/// Every step of the replay, in order. All must pass.
const STEPS: &[&str] = &[
    "box-postfix",
    "box-user",
    "box-mail",
    "real-start",
    "real-testsaslauthd",
    "real-deferred",
    "real-local",
    "real-listing",
    "swap-in",
    "swapped-commands",
    "swapped-boot",
    "update-rc.d",
    "swapped-man",
    "postern-running",
    "postern-queue",
    "postern-testsaslauthd",
    "postern-pop3-uidl",
    "postern-imap",
    "postern-flush",
    "postern-local",
    "postern-deferred",
    "postern-pop3-new",
    "apt-upgrade",
    "swap-out-refused",
    "swap-out",
    "restored-files",
    "restored-packages",
    "real-back",
    "real-maps",
    "real-flush",
    "real-local-back",
    "real-listing-back",
    "real-testsaslauthd-back",
    "real-stop",
    "host-clean",
];

/// What the replay changes inside its scratch root; each must be the same on the host
/// afterwards.
const HOST_PATHS: &[&str] = &[
    "/usr/sbin/postern",
    "/usr/sbin/postfix",
    "/usr/sbin/postfix.distrib",
    "/usr/sbin/postconf",
    "/usr/local/sbin/postconf",
    "/usr/sbin/sendmail",
    "/usr/sbin/sendmail.distrib",
    "/usr/bin/mailq",
    "/usr/bin/newaliases",
    "/usr/lib/sendmail",
    "/usr/sbin/postdrop",
    "/usr/sbin/postlog",
    "/usr/sbin/dovecot",
    "/usr/sbin/saslauthd",
    "/usr/lib/postern",
    "/var/lib/postern",
    "/etc/init.d/postfix",
    "/etc/init.d/dovecot",
    "/etc/init.d/saslauthd",
    "/etc/systemd/system/postfix.service",
    "/etc/systemd/system/postfix@-.service",
    "/etc/systemd/system/dovecot.socket",
    "/etc/rc2.d",
    "/etc/default/saslauthd",
    "/etc/aliases",
    "/etc/aliases.db",
    "/etc/postfix/main.cf",
    "/etc/postfix/virtual",
    "/usr/share/man/man1/postfix.1.gz",
    "/usr/share/man/man1/postfix.distrib.1.gz",
    "/var/lib/dpkg/diversions",
    "/var/mail/alice",
    "/home/alice",
    "/etc/mailname",
    "/etc/hostname",
    "/etc/hosts",
    "/usr/sbin/policy-rc.d",
    "/var/spool/postfix/pid/master.pid",
    // The scratch root's syslog socket must stay in its own /dev (a listener on the host's
    // /dev/log changes what other tests see on stderr).
    "/dev/log",
    "/var/spool/postfix/pid/qmgr.lock",
    "/etc/alternatives/mta",
    "/var/lib/alternatives",
    "/usr/sbin/alternatives",
    "/usr/sbin/chkconfig",
    "/etc/pam.d/smtp",
    "/usr/sbin/sendmail.postfix",
];

#[test]
fn swapped_in_and_back_on_a_scratch_debian_box() {
    assert_replay(
        "swap.rs",
        "swap",
        "swap-replay",
        &[],
        Duration::from_secs(400),
        STEPS,
        HOST_PATHS,
    );
}

/// The steps of `scripts/swap-replay-fedora`, in order.
const FEDORA_STEPS: &[&str] = &[
    "box-postfix",
    "box-user",
    "fedora-mta",
    "swap-in",
    "swapped-alternative",
    "swapped-boot",
    "upgrade-keeps",
    "swap-out",
    "restored-files",
    "host-clean",
];

#[test]
fn fedora_mta_alternative_swapped_in_and_back() {
    let Some(tools) = std::env::var_os("POSTERN_FEDORA_TOOLS") else {
        eprintln!(
            "skipped: POSTERN_FEDORA_TOOLS does not name a directory with Fedora's alternatives and chkconfig"
        );
        return;
    };
    let tools = tools.to_string_lossy().into_owned();
    assert_replay(
        "swap.rs",
        "Fedora swap",
        "swap-replay-fedora",
        &["--tools", &tools],
        Duration::from_secs(300),
        FEDORA_STEPS,
        HOST_PATHS,
    );
}
