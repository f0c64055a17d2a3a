//! The guide (TUTORIAL.md) replayed on a scratch copy of this Debian box with Postern
//! swapped in: `scripts/guide-replay`, run as CI runs it, with each of its steps asserted.
//!
//! The script builds a scratch root (private mount, network, pid and UTS namespaces, an
//! overlay over `/`, chroot), sets the box up as Debian's packages do, writes the guide's
//! files word for word, runs `scripts/install --initscripts`, starts saslauthd, dovecot and
//! postfix through their init scripts and replays the guide's checks over real sockets:
//! `testsaslauthd`, the POP3 dialogue, EHLO as Postfix 3.7.11 gives it for that main.cf,
//! relay refused for a foreign client (454 4.7.1 from Debian's smtpd_relay_restrictions),
//! SMTP AUTH while smtpd cannot reach saslauthd's socket (Postfix's reply and Cyrus's log
//! line), then `adduser postfix sasl` as Debian documents and relay allowed after AUTH
//! PLAIN to a loopback SMTP sink, local mail read back over POP3 and IMAP. Then the swap back
//! on the same box and mail (issue 14's "there and back"): Postern defers a message while
//! the sink is down; `scripts/swap-out --force` refuses the guide's main.cf (the wrapped
//! column-0 line the real Postfix cannot read) and, once the admin indents it, puts the
//! packages back; the real saslauthd, Dovecot and Postfix start with `service NAME start`
//! without a fatal line from Postfix, the real Postfix delivers Postern's deferred message
//! and new local mail, the real Dovecot gives Postern's UIDLs and reads the same messages.
//! The expected replies in the script were recorded from the real Postfix in the same
//! scratch root.
//!
//! Root only (namespaces, chroot, useradd in the scratch root): otherwise the test says it
//! is skipped and passes. This test also checks for itself that the host is left as it
//! was: the files the replay writes in the scratch root are unchanged on the host, no
//! mount or process of the scratch root remains, and its temp directory is gone.

mod common;
use common::replay::assert_replay;

use std::time::Duration;

/// Every step of the replay, in order. All must pass (`imap-read` too, now that Postern
/// serves IMAP). The
/// `ref-` steps check that the real programs give the replies the replay expects.
const STEPS: &[&str] = &[
    "box-postfix",
    "box-user",
    "ref-testsaslauthd",
    "ref-ehlo",
    "ref-relay-denied",
    "install",
    "sasl-start",
    "testsaslauthd",
    "dovecot-start",
    "pop3-login",
    "postfix-check",
    "postfix-start",
    "ehlo",
    "relay-denied",
    "auth-unreachable",
    "postfix-restart",
    "relay-auth",
    "relay-delivered",
    "local-accepted",
    "local-delivered",
    "pop3-read",
    "imap-read",
    "postern-deferred",
    "postern-uidl",
    "postfix-stop",
    "dovecot-stop",
    "sasl-stop",
    "stopped",
    "swap-out-refused",
    "swap-out",
    "real-start",
    "real-flush",
    "real-uidl",
    "ref-pop3-read",
    "ref-imap-read",
    "real-local",
    "real-stop",
    "host-clean",
];

/// What the replay changes inside its scratch root; each must be the same on the host
/// afterwards (present or absent, link target, content).
const HOST_PATHS: &[&str] = &[
    "/etc/postfix/main.cf",
    "/etc/dovecot.conf",
    "/usr/lib/sasl2/smtpd.conf",
    "/usr/sbin/postern",
    "/usr/sbin/postfix",
    "/usr/sbin/postfix.distrib",
    "/usr/local/sbin/postconf",
    "/var/lib/postern",
    "/etc/default/saslauthd",
    "/usr/sbin/dovecot",
    "/usr/sbin/saslauthd",
    "/usr/sbin/testsaslauthd",
    "/usr/sbin/postdrop",
    "/usr/sbin/sendmail",
    "/usr/lib/postern",
    "/etc/init.d/postfix",
    "/etc/init.d/dovecot",
    "/etc/init.d/saslauthd",
    "/etc/alternatives/mta",
    "/etc/mailname",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/aliases.db",
    "/var/mail/alice",
    "/home/alice",
    "/usr/sbin/policy-rc.d",
    "/var/spool/postfix/pid/master.pid",
    // The scratch root's syslog socket must stay in its own /dev (a listener on the host's
    // /dev/log changes what other tests see on stderr).
    "/dev/log",
];

#[test]
fn guide_replayed_on_a_scratch_debian_box() {
    assert_replay(
        "guide.rs",
        "guide",
        "guide-replay",
        &[],
        Duration::from_secs(300),
        STEPS,
        HOST_PATHS,
    );
}
