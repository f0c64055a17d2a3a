//! Lookup tables that fail, and bad patterns, answered as Postfix 3.7 answers them: each
//! scenario of `compat-fixtures/lookup/` (recorded from the real Postfix by
//! `scripts/regen-lookup-fixtures`) is played against Postern started with `postfix start`,
//! and the SMTP replies must be the recorded ones and every recorded log line must be in
//! Postern's log. A table that cannot be read must never be taken for an empty one: the
//! sender keeps the mail (4xx) or it stays in the queue (deferred), and nothing is
//! delivered.
//!
//! Where Postern's log differs from Postfix's on purpose, [`differs`] says so for that line:
//! Postern names the file it failed to open (`access`, not `access.db`, for a `hash:` table
//! it reads through its text source and `access.postern.lmdb`); it has no trivial-rewrite
//! process that looks up `*` when it starts or resolves the sender at MAIL FROM; and its
//! cleanup runs at delivery, so a canonical or virtual alias table that fails defers the
//! queued recipient instead of leaving the message in maildrop.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

const QMGR: &str = "pickup unix n - n 60 1 pickup\nqmgr unix n - n 300 1 qmgr\n\
                    local unix - n n - - local\nerror unix - - n - - error\n";

fn fixtures() -> PathBuf {
    repo_root().join("compat-fixtures/lookup")
}

/// base.cf then the scenario's lines; a later line replaces an earlier one for its
/// parameter (the regen script builds Postfix's main.cf the same way).
fn merged_main_cf(dir: &Path, scenario: &Path) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    let text = std::fs::read_to_string(fixtures().join("base.cf")).unwrap()
        + &std::fs::read_to_string(scenario.join("main.cf")).unwrap();
    for l in text.lines() {
        let Some((k, _)) = l.split_once('=') else {
            continue;
        };
        let k = k.trim().to_string();
        lines.retain(|(key, _)| *key != k);
        lines.push((k, l.replace("@DIR@", &dir.display().to_string())));
    }
    lines.into_iter().map(|(_, l)| l + "\n").collect()
}

/// Postfix's log line without time, host and pid, with the instance directory, queue IDs
/// and delays masked (as the regen script masks them).
fn mask(line: &str, dir: &Path, ids: &[String]) -> String {
    let mut l = line.to_string();
    // "Mmm dd hh:mm:ss host "
    let mut parts = l.splitn(5, ' ').collect::<Vec<_>>();
    if parts.len() == 5 && parts[0].len() == 3 {
        // "Dec  7" has an empty field for the space-padded day.
        if parts[1].is_empty() {
            parts = l.splitn(6, ' ').collect::<Vec<_>>();
            l = parts.last().copied().unwrap_or_default().to_string();
        } else {
            l = parts[4].to_string();
        }
    }
    if let Some((ident, rest)) = l.split_once(": ")
        && let Some((name, pid)) = ident.split_once('[')
        && pid.ends_with(']')
    {
        l = format!("{name}: {rest}");
    }
    l = l.replace(&dir.display().to_string(), "@DIR@");
    for id in ids {
        l = l.replace(id.as_str(), "QUEUEID");
    }
    if let Some(i) = l.find("delay=") {
        let end = l[i..].find(", dsn=").map(|e| i + e).unwrap_or(l.len());
        l.replace_range(i..end, "delay=*, delays=*");
    }
    l
}

fn queue_ids(log: &str) -> Vec<String> {
    let mut ids = BTreeSet::new();
    for w in log.split([' ', ':', '\n']) {
        if (10..=11).contains(&w.len())
            && w.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            && w.bytes().any(|b| b.is_ascii_digit())
        {
            ids.insert(w.to_string());
        }
    }
    ids.into_iter().collect()
}

/// The part of a recorded line compared with Postern's: lines of the roles Postern plays
/// inside another process (trivial-rewrite and cleanup in smtpd and the queue manager, and
/// the services that only read main.cf) are compared by their text alone.
fn comparable(line: &str) -> String {
    let (ident, text) = line.split_once(": ").unwrap_or(("", line));
    // Postern names the file it could not open: the text source of a hash: table.
    let text = text.replace(".db: ", ": ");
    match ident {
        "postfix/smtpd" | "postfix/local" | "postfix/error" => format!("{ident}: {text}"),
        _ => text,
    }
}

/// Recorded lines Postern does not log, and why.
fn differs(scenario: &str, line: &str) -> Option<&'static str> {
    if line.contains("lookup error for \"*\"") {
        return Some("trivial-rewrite looks up the transport_maps wildcard when it starts");
    }
    if scenario == "transport-maps-missing" && line.contains("lookup error for \"a@b.c\"") {
        return Some("Postfix's smtpd resolves the sender at MAIL FROM; the reply is the same");
    }
    if scenario.starts_with("cleanup-")
        && (line.contains("message not accepted")
            || line.contains("postfix/smtpd: error")
            || line.contains("queue file write error"))
    {
        return Some("Postern's cleanup runs at delivery: the recipient is deferred instead");
    }
    None
}

struct Played {
    transcript: Vec<String>,
    log: String,
}

fn play(scenario: &Path) -> (Daemon, Played) {
    let mut d = Daemon::new("", QMGR);
    let dir = d.path().to_path_buf();
    let base = std::fs::read_to_string(d.config_dir().join("main.cf")).unwrap();
    std::fs::write(
        d.config_dir().join("main.cf"),
        base + &merged_main_cf(&dir, scenario),
    )
    .unwrap();
    for script in [fixtures().join("base-setup.sh"), scenario.join("setup.sh")] {
        if script.exists() {
            let out = d.admin(&format!("sh {}", script.display()));
            assert!(out.status.success(), "{}: {out:?}", script.display());
        }
    }
    d.start();
    let mut transcript = Vec::new();
    let dialogue = std::fs::read_to_string(scenario.join("dialogue")).unwrap();
    let lines: Vec<&str> = dialogue.lines().collect();
    let mut conn: Option<Smtp> = None;
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        i += 1;
        if let Some(rcpt) = l.strip_prefix("!sendmail ") {
            let out = d.admin(&format!(
                "printf 'Subject: injected\\n\\nbody\\n' | sendmail -f sender@mail.example.test {rcpt}"
            ));
            assert!(out.status.success(), "sendmail: {out:?}");
            continue;
        }
        if let Some(want) = l.strip_prefix("!wait ") {
            let log = d.wait_log(want);
            assert!(log.contains(want), "waited for {want:?}:\n{log}");
            continue;
        }
        let c = conn.get_or_insert_with(|| {
            let mut c = Smtp::connect(d.port);
            for r in c.reply() {
                transcript.push(format!("S: {r}"));
            }
            c
        });
        transcript.push(format!("C: {l}"));
        c.send(&format!("{l}\r\n"));
        let reply = c.reply();
        let data_ok = l == "DATA" && reply.last().is_some_and(|r| r.starts_with("354"));
        for r in reply {
            transcript.push(format!("S: {r}"));
        }
        if data_ok {
            while i < lines.len() && lines[i] != "." {
                transcript.push(format!("C: {}", lines[i]));
                c.send(&format!("{}\r\n", lines[i]));
                i += 1;
            }
        }
    }
    let connected = conn.is_some();
    drop(conn);
    // The log is written after the replies: wait for smtpd's last line of the session.
    let log = if connected {
        d.wait_log("disconnect from")
    } else {
        d.log()
    };
    (d, Played { transcript, log })
}

fn check(name: &str) {
    let scenario = fixtures().join(name);
    let (d, played) = play(&scenario);
    let dir = d.path().to_path_buf();
    let ids = queue_ids(&played.log);
    let got_transcript: Vec<String> = played
        .transcript
        .iter()
        .map(|l| mask(l, &dir, &ids))
        .collect();
    let want_transcript: Vec<String> = std::fs::read_to_string(scenario.join("transcript"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        got_transcript, want_transcript,
        "{name}: replies differ from Postfix's\n{}",
        played.log
    );
    // Each of Postern's lines, with its log name and by its text alone; and the lines
    // Postfix logged that Postern did not.
    let want_log = std::fs::read_to_string(scenario.join("maillog")).unwrap();
    let compare = |log: &str| {
        let ids = queue_ids(log);
        let got: BTreeSet<String> = log
            .lines()
            .flat_map(|l| {
                let l = mask(l, &dir, &ids);
                let text = l.split_once(": ").map(|(_, t)| t.to_string());
                [Some(comparable(&l)), text].into_iter().flatten()
            })
            .collect();
        let missing: Vec<String> = want_log
            .lines()
            .filter(|want| differs(name, want).is_none() && !got.contains(&comparable(want)))
            .map(str::to_string)
            .collect();
        (got, missing)
    };
    // The queue manager logs after the session ended: wait for Postfix's lines (10 s).
    let log = poll(Duration::from_secs(10), || {
        let log = d.log();
        compare(&log).1.is_empty().then_some(log)
    })
    .unwrap_or_else(|| d.log());
    let played = Played { log, ..played };
    let (got, missing) = compare(&played.log);
    assert!(
        missing.is_empty(),
        "{name}: Postfix logged these and Postern did not:\n{}\n--- Postern's log:\n{}",
        missing.join("\n"),
        played.log
    );
    // Postern's cleanup runs in the queue manager: the queued recipient is deferred with
    // cleanup's words, and the message stays in the queue.
    if let Some(title) = match name {
        "cleanup-virtual-missing" => {
            Some("virtual_alias_maps map lookup problem for postern-fx@mail.example.test")
        }
        "cleanup-canonical-missing" => {
            Some("canonical_maps map lookup problem for sender@mail.example.test")
        }
        _ => None,
    } {
        let want = format!(
            "postfix/error: QUEUEID: to=<postern-fx@mail.example.test>, relay=none, delay=*, delays=*, dsn=4.3.0, status=deferred ({title})"
        );
        assert!(got.contains(&want), "{name}: no {want:?}\n{}", played.log);
        let q = d.admin("mailq");
        let listing = String::from_utf8_lossy(&q.stdout).into_owned();
        assert!(listing.contains(&format!("({title})")), "{listing}");
        assert!(listing.ends_with("in 1 Request.\n"), "{listing}");
    }
    // Nothing is ever delivered when a table fails.
    let mail = std::fs::read_dir(dir.join("mail"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(mail, 0, "{name}: something was delivered\n{}", played.log);
}

macro_rules! scenarios {
    ($($test:ident => $dir:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check($dir);
            }
        )*
    };
}

scenarios! {
    access_missing => "access-missing",
    access_unsupported_type => "access-unsupported-type",
    helo_access_missing => "helo-access-missing",
    sender_access_missing => "sender-access-missing",
    client_access_cidr_missing => "client-access-cidr-missing",
    cidr_table_bad_rules => "cidr-table-bad-rules",
    regexp_bad_rule => "regexp-bad-rule",
    mynetworks_bad_mask => "mynetworks-bad-mask",
    mynetworks_host_bits => "mynetworks-host-bits",
    mynetworks_bad_network => "mynetworks-bad-network",
    mynetworks_bad_mask_value => "mynetworks-bad-mask-value",
    mynetworks_junk_skipped => "mynetworks-junk-skipped",
    mynetworks_bad_after_match => "mynetworks-bad-after-match",
    mynetworks_file => "mynetworks-file",
    mynetworks_missing_file => "mynetworks-missing-file",
    mynetworks_table_missing => "mynetworks-table-missing",
    alias_maps_missing => "alias-maps-missing",
    virtual_alias_maps_missing => "virtual-alias-maps-missing",
    canonical_maps_missing => "canonical-maps-missing",
    transport_maps_missing => "transport-maps-missing",
    relay_domains_missing => "relay-domains-missing",
    mydestination_missing => "mydestination-missing",
    local_alias_missing => "local-alias-missing",
    qmgr_transport_missing => "qmgr-transport-missing",
    cleanup_virtual_missing => "cleanup-virtual-missing",
    cleanup_canonical_missing => "cleanup-canonical-missing",
}

/// Every scenario directory has its test above.
#[test]
fn every_scenario_is_tested() {
    let src = std::fs::read_to_string(repo_root().join("tests/lookup_failures.rs")).unwrap();
    for e in std::fs::read_dir(fixtures()).unwrap() {
        let p = e.unwrap().path();
        if p.join("main.cf").exists() {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                src.contains(&format!("=> \"{name}\"")),
                "no test for scenario {name}"
            );
        }
    }
}
