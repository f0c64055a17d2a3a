//! Privilege separation and the queue's owners, as Postfix has them (root only; the tests
//! that need the real Postfix 3.7 skip without /usr/sbin/postfix).
//!
//! * Started with `postfix start` as root, `/proc` shows: the master root; the process
//!   holding an inbound SMTP session `mail_owner` (its uid, gid and groups); the process
//!   holding an outbound SMTP connection to a loopback sink `mail_owner`; the local
//!   delivery process root; every mailbox, file and command delivery the recipient's (or
//!   `default_privs`'s for an alias owned by root): the files end owned by them, and a
//!   command records its own credentials and those of the delivering process that ran it
//!   (uid, gid, and the one group: Postfix 3.7's local(8) gives a command `Groups:` with
//!   the recipient's gid alone, checked here with the real one by hand).
//! * The queue tree (owners, groups, modes, file types) after the same operations is the
//!   same as a real Postfix 3.7.11's: after start, after a local delivery, a deferral, a
//!   bounce, a hold (postsuper), after a submission by a user through postdrop while the
//!   mail system is down, and after the pickup that follows.
//! * The real Postfix starts cleanly on a queue Postern ran on, with mail Postern deferred,
//!   and delivers that mail.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn have_real_postfix() -> bool {
    Path::new("/usr/sbin/postfix").exists() && Path::new("/usr/lib/postfix/sbin/master").exists()
}

// ---------------------------------------------------------------------------------------
// /proc

/// The inode of the TCP socket from `local` port to `remote` port (IPv4 loopback).
fn tcp_inode(local: u16, remote: u16) -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |a: &str| {
        a.split_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && port(f[1]) == Some(local) && port(f[2]) == Some(remote))
            .then(|| f[9].to_string())
    })
}

/// The processes holding a descriptor of socket `inode`.
fn holders(inode: &str) -> Vec<u32> {
    let want = format!("socket:[{inode}]");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == &*want))
        {
            out.push(pid);
        }
    }
    out
}

/// The one process holding the TCP connection `local` → `remote`, waiting up to 10 s for
/// it to appear.
fn holder_of(local: u16, remote: u16) -> u32 {
    wait_for(
        Duration::from_secs(10),
        format_args!("a process holds the connection {local}->{remote}"),
        || {
            let h = holders(&tcp_inode(local, remote)?);
            assert!(
                h.len() < 2,
                "several processes hold {local}->{remote}: {h:?}"
            );
            h.first().copied()
        },
    )
}

/// The uid, gid and groups `name` has once it became itself with initgroups(3) (as a
/// Postfix daemon does for mail_owner).
fn ids(name: &str) -> (String, String, Vec<String>) {
    let u = nix::unistd::User::from_name(name).unwrap().unwrap();
    let groups = Command::new("id").args(["-G", name]).output().unwrap();
    let mut g: Vec<String> = String::from_utf8_lossy(&groups.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    g.sort();
    (u.uid.to_string(), u.gid.to_string(), g)
}

/// Assert that process `pid` runs as `uid`/`gid` (real, effective, saved and filesystem
/// ids alike) with exactly the supplementary groups `groups`.
fn assert_creds(what: &str, pid: u32, uid: &str, gid: &str, groups: &[String]) {
    // A child is forked as root and gives its ids up at its start: a look taken just after
    // `postfix start` returns may come before that (seen once for the queue manager).
    // Wait a while for the ids wanted, then compare whatever is there.
    let _ = poll(Duration::from_secs(10), || {
        (proc_status(pid)["Uid"] == vec![uid; 4]).then_some(())
    });
    let st = proc_status(pid);
    assert_eq!(st["Uid"], vec![uid; 4], "{what} (pid {pid}): Uid");
    assert_eq!(st["Gid"], vec![gid; 4], "{what} (pid {pid}): Gid");
    let mut have = st.get("Groups").cloned().unwrap_or_default();
    have.sort();
    let mut want = groups.to_vec();
    want.sort();
    assert_eq!(have, want, "{what} (pid {pid}): Groups");
}

// ---------------------------------------------------------------------------------------
// Test 1: who runs what

/// A recording command: writes its own `Uid/Gid/Groups` and those of the delivering
/// process above it (the first ancestor whose command line names postern) to DIR/NAME.
const RECORDER: &str = r#"#!/bin/sh
out="$2/$1"
{
  grep -E '^(Uid|Gid|Groups):' /proc/$$/status
  p=$PPID
  while [ "$p" -gt 1 ]; do
    if tr '\0' ' ' < /proc/$p/cmdline | grep -q postern; then
      echo "agent: $(tr '\0' ' ' < /proc/$p/cmdline)"
      grep -E '^(Uid|Gid|Groups):' /proc/$p/status | sed 's/^/agent /'
      break
    fi
    p=$(awk '/^PPid:/ {print $2}' /proc/$p/status)
  done
} > "$out.tmp" && mv "$out.tmp" "$out"
cat > /dev/null
"#;

/// `/proc/PID/status` fields: name → words.
type Fields = BTreeMap<String, Vec<String>>;

/// What a recording showed: (own fields, the delivering process's fields, its command).
fn read_record(path: &Path) -> (Fields, Fields, String) {
    let text = wait_for(
        Duration::from_secs(20),
        format_args!("{} written", path.display()),
        || std::fs::read_to_string(path).ok(),
    );
    let mut own = BTreeMap::new();
    let mut agent = BTreeMap::new();
    let mut agent_cmd = String::new();
    for l in text.lines() {
        if let Some(c) = l.strip_prefix("agent: ") {
            agent_cmd = c.to_string();
        } else if let Some(rest) = l.strip_prefix("agent ") {
            if let Some((k, v)) = rest.split_once(':') {
                agent.insert(
                    k.to_string(),
                    v.split_whitespace().map(str::to_string).collect(),
                );
            }
        } else if let Some((k, v)) = l.split_once(':') {
            own.insert(
                k.to_string(),
                v.split_whitespace().map(str::to_string).collect(),
            );
        }
    }
    (own, agent, agent_cmd)
}

fn assert_record(what: &str, path: &Path, user: &str) {
    let (uid, gid, _) = ids(user);
    let (own, agent, agent_cmd) = read_record(path);
    // Postfix's set_ugid(): uid, gid, and that one group.
    assert_eq!(own["Uid"], vec![uid.clone(); 4], "{what}: command Uid");
    assert_eq!(own["Gid"], vec![gid.clone(); 4], "{what}: command Gid");
    assert_eq!(own["Groups"], vec![gid.clone()], "{what}: command Groups");
    assert!(
        agent_cmd.contains(" local -c "),
        "{what}: ran by {agent_cmd:?}"
    );
    assert_eq!(agent["Uid"], vec![uid; 4], "{what}: delivering process Uid");
    assert_eq!(
        agent["Gid"],
        vec![gid.clone(); 4],
        "{what}: delivering process Gid"
    );
    assert_eq!(
        agent["Groups"],
        vec![gid],
        "{what}: delivering process Groups"
    );
}

fn assert_owner(path: &Path, user: &str, mode: u32) {
    use std::os::unix::fs::MetadataExt;
    let (uid, gid, _) = ids(user);
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        (m.uid().to_string(), m.gid().to_string(), m.mode() & 0o7777),
        (uid, gid, mode),
        "{} owner/mode",
        path.display()
    );
}

#[test]
fn every_process_and_every_mailbox_write_has_postfix_s_owner() {
    if !is_root() {
        eprintln!("skipped: not root");
        return;
    }
    let (Some(home_b), Some(_), Some(_)) = (
        mail_user("postern-pb"),
        mail_user("postern-pa"),
        mail_user("postern-pc"),
    ) else {
        return;
    };
    let sink = Sink::start_on("127.0.0.1", 0, SinkMode::Accept, true);
    let d = Daemon::new("", "");
    let dir = d.path().to_path_buf();
    // The spool as Fedora and this Daemon do not have it: root's, 0755, so that root makes
    // the mbox and its dotlock and the recipient writes (Postfix's local/mailbox.c).
    let spool = dir.join("rootspool");
    std::fs::create_dir(&spool).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rec_dir = dir.join("records");
    std::fs::create_dir(&rec_dir).unwrap();
    std::fs::set_permissions(&rec_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let files = dir.join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::set_permissions(&files, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let rec = dir.join("rec.sh");
    std::fs::write(&rec, RECORDER).unwrap();
    std::fs::set_permissions(&rec, std::fs::Permissions::from_mode(0o755)).unwrap();
    let vmail = dir.join("vmail");
    std::fs::create_dir(&vmail).unwrap();
    let (pc_uid, pc_gid, _) = ids("postern-pc");
    std::os::unix::fs::chown(&vmail, pc_uid.parse().ok(), pc_gid.parse().ok()).unwrap();
    let etc = d.config_dir();
    std::fs::write(
        etc.join("aliases"),
        format!(
            "pcmd: \"|{} alias {}\"\npfile: {}\n",
            rec.display(),
            rec_dir.display(),
            files.join("pfile.mbox").display()
        ),
    )
    .unwrap();
    // postern-pb forwards to a command (run as postern-pb) and keeps a copy.
    std::fs::write(
        home_b.join(".forward"),
        format!(
            "\\postern-pb, \"|{} forward {}\"\n",
            rec.display(),
            rec_dir.display()
        ),
    )
    .unwrap();
    let (pb_uid, pb_gid, _) = ids("postern-pb");
    std::os::unix::fs::chown(
        home_b.join(".forward"),
        pb_uid.parse().ok(),
        pb_gid.parse().ok(),
    )
    .unwrap();
    let mut main = std::fs::read_to_string(etc.join("main.cf")).unwrap();
    main.push_str(&format!(
        "compatibility_level = 3.6\nmyhostname = mail.example.test\n\
         mydestination = $myhostname, localhost\nmail_spool_directory = {spool}\n\
         alias_maps = hash:{etc}/aliases\nalias_database = hash:{etc}/aliases\n\
         relayhost = [127.0.0.1]:{sink}\n\
         virtual_mailbox_domains = v.example.test\nvirtual_mailbox_base = {vmail}\n\
         virtual_mailbox_maps = inline:{{ pc@v.example.test=pc/ }}\n\
         virtual_uid_maps = static:{pc_uid}\nvirtual_gid_maps = static:{pc_gid}\n",
        spool = spool.display(),
        etc = etc.display(),
        sink = sink.port,
        vmail = vmail.display(),
    ));
    std::fs::write(etc.join("main.cf"), main).unwrap();
    let mut master = std::fs::read_to_string(etc.join("master.cf")).unwrap();
    master.push_str("qmgr unix n - n 300 1 qmgr\n");
    std::fs::write(etc.join("master.cf"), master).unwrap();
    let out = d.admin("postalias aliases");
    assert!(out.status.success(), "{out:?}");
    let mut d = d;
    d.start();

    let pid = std::fs::read_to_string(dir.join("spool/pid/master.pid"))
        .unwrap()
        .trim()
        .parse::<u32>()
        .unwrap();
    let owner = test_mail_owner();
    let (ouid, ogid, ogroups) = ids(&owner);
    // The master: root, as Postfix's.
    assert_eq!(proc_status(pid)["Uid"], vec!["0"; 4], "master");
    let kids = children_of(pid);
    let kid = |word: &str| {
        kids.iter()
            .find(|(_, c)| c.contains(&format!(" {word} -c ")))
            .unwrap_or_else(|| panic!("no {word} process among {kids:?}"))
            .0
    };
    assert_creds("queue manager", kid("qmgr"), &ouid, &ogid, &ogroups);
    assert_eq!(
        proc_status(kid("local"))["Uid"],
        vec!["0"; 4],
        "local delivery process"
    );

    // An inbound session: held by the smtpd process, as mail_owner.
    let mut c = Smtp::connect(d.port);
    assert!(c.line().starts_with("220"));
    let client_port = c.w.local_addr().unwrap().port();
    let smtpd = holder_of(d.port, client_port);
    assert!(cmdline(smtpd).contains(" smtpd -c "), "{}", cmdline(smtpd));
    assert_creds("inbound SMTP session", smtpd, &ouid, &ogid, &ogroups);
    c.cmd("QUIT");

    // An outbound connection: held by the queue manager (its smtp client), as mail_owner.
    let send = |to: &str, subject: &str| {
        smtp_send(
            d.port,
            "sender@example.org",
            &[to],
            &format!("Subject: {subject}\n\n{subject}\n"),
        )
    };
    send("someone@remote.example", "outbound-token");
    assert_eq!(sink.next(), "connected");
    let out_port = {
        let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let hex = format!(":{:04X}", sink.port);
        text.lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 2 && f[2].ends_with(&hex))
                    .then(|| f[1].rsplit(':').next().map(|p| u16::from_str_radix(p, 16)))
            })
            .flatten()
            .flatten()
            .next()
            .expect("the outbound connection in /proc/net/tcp")
    };
    let smtp = holder_of(out_port, sink.port);
    assert!(cmdline(smtp).contains(" qmgr -c "), "{}", cmdline(smtp));
    assert_creds("outbound SMTP connection", smtp, &ouid, &ogid, &ogroups);
    sink.release();
    sink.wait_message("outbound-token");
    d.wait_log("relay=127.0.0.1[127.0.0.1]");

    // Mailbox writes, files and commands.
    send("postern-pa@mail.example.test", "to-pa");
    send("postern-pb@mail.example.test", "to-pb");
    send("pcmd@mail.example.test", "to-pcmd");
    send("pfile@mail.example.test", "to-pfile");
    send("pc@v.example.test", "to-pc");
    wait_file(&spool.join("postern-pa"));
    assert_owner(&spool.join("postern-pa"), "postern-pa", 0o600);
    assert_record(".forward command", &rec_dir.join("forward"), "postern-pb");
    wait_file(&spool.join("postern-pb"));
    assert_owner(&spool.join("postern-pb"), "postern-pb", 0o600);
    // Aliases owned by root run as default_privs (nobody), as Postfix's.
    assert_record("alias command", &rec_dir.join("alias"), "nobody");
    wait_file(&files.join("pfile.mbox"));
    assert_owner(&files.join("pfile.mbox"), "nobody", 0o600);
    let md = vmail.join("pc/new");
    wait_file(&md);
    let msg = wait_for(Duration::from_secs(20), "a virtual delivery", || {
        std::fs::read_dir(&md)
            .unwrap()
            .flatten()
            .next()
            .map(|e| e.path())
    });
    assert_owner(&msg, "postern-pc", 0o600);
    assert_owner(&vmail.join("pc"), "postern-pc", 0o700);
    let log = d.wait_log("to=<pc@v.example.test>");
    for to in ["postern-pa", "postern-pb", "pcmd", "pfile"] {
        assert!(
            log.contains(&format!("to=<{to}@mail.example.test>, relay=local")),
            "{to}:\n{log}"
        );
    }
    assert!(!log.contains("status=deferred"), "{log}");
    assert!(!log.contains("status=bounced"), "{log}");
    // Nothing root's in the queue but pid/.
    assert_no_root_files(&dir.join("spool"));
}

/// Every entry below `spool` but `pid/` and `spool` itself belongs to someone else than
/// root (Postfix: mail_owner's, maildrop files the submitter's).
fn assert_no_root_files(spool: &Path) {
    use std::os::unix::fs::MetadataExt;
    let out = Command::new("find")
        .arg(spool)
        .args(["-mindepth", "1", "-path"])
        .arg(spool.join("pid"))
        .args(["-prune", "-o", "-user", "root", "-print"])
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "root's in the queue: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(std::fs::metadata(spool.join("pid")).unwrap().uid(), 0);
}

#[test]
fn mailbox_command_runs_as_the_recipient_with_its_group_only() {
    if !is_root() {
        eprintln!("skipped: not root");
        return;
    }
    let Some(_) = mail_user("postern-pd") else {
        return;
    };
    // A supplementary group the recipient has, which its deliveries must not carry
    // (Postfix's set_ugid: setgroups(1, &gid)).
    let _ = Command::new("groupadd").args(["-f", "postern-px"]).status();
    let _ = Command::new("usermod")
        .args(["-a", "-G", "postern-px", "postern-pd"])
        .status();
    let d = Daemon::new("", "qmgr unix n - n 300 1 qmgr\n");
    let dir = d.path().to_path_buf();
    let rec_dir = dir.join("records");
    std::fs::create_dir(&rec_dir).unwrap();
    std::fs::set_permissions(&rec_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let rec = dir.join("rec.sh");
    std::fs::write(&rec, RECORDER).unwrap();
    std::fs::set_permissions(&rec, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut main = std::fs::read_to_string(d.config_dir().join("main.cf")).unwrap();
    main.push_str(&format!(
        "compatibility_level = 3.6\nmyhostname = mail.example.test\n\
         mydestination = $myhostname, localhost\nalias_maps =\n\
         mailbox_command = {} mbcmd {}\n",
        rec.display(),
        rec_dir.display()
    ));
    std::fs::write(d.config_dir().join("main.cf"), main).unwrap();
    let mut d = d;
    d.start();
    smtp_send(
        d.port,
        "sender@example.org",
        &["postern-pd@mail.example.test"],
        "Subject: mbcmd\n\nx\n",
    );
    assert_record("mailbox_command", &rec_dir.join("mbcmd"), "postern-pd");
    d.wait_log("delivered to command");
}

// ---------------------------------------------------------------------------------------
// Tests 2 and 3: the queue tree beside the real Postfix's

/// The services a delivering Postfix needs (Debian's master.cf without chroot).
const REAL_SERVICES: &str = "pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
";

/// One mail system (the real Postfix or Postern) on a directory of its own, started and
/// driven as root with `postfix -c DIR/etc`; `mail_owner = postfix`, `setgid_group =
/// postdrop`, the real packages' users.
struct Sys {
    _dir: Option<tempfile::TempDir>,
    root: PathBuf,
    etc: PathBuf,
    port: u16,
    real: bool,
    /// For the real sendmail/postdrop: a copy of /etc/postfix whose main.cf allows `etc`
    /// (bind-mounted over /etc/postfix in a private mount namespace).
    meta: PathBuf,
}

impl Sys {
    /// `queue` (and `data`) given: use that queue instead of a new one (test 3).
    fn new(real: bool, relay_port: u16, queue: Option<&Path>) -> Sys {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let etc = root.join("etc");
        for sub in ["etc", "mail", "bin"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::set_permissions(root.join("mail"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        let (spool, data) = match queue {
            Some(q) => (q.join("spool"), q.join("data")),
            None => (root.join("spool"), root.join("data")),
        };
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&spool).unwrap();
        let _ = Command::new("chown").arg("postfix").arg(&data).status();
        // The log file exists, mail_owner's: the real postsuper, which works as
        // mail_owner, writes to it before postlogd runs.
        let maillog = root.join("maillog");
        std::fs::write(&maillog, "").unwrap();
        let _ = Command::new("chown")
            .arg("postfix:postfix")
            .arg(&maillog)
            .status();
        let port = free_port();
        let mut main = format!(
            "queue_directory = {spool}\ndata_directory = {data}\nmail_owner = postfix\n\
             setgid_group = postdrop\nmaillog_file = {r}/maillog\nmaillog_file_prefixes = {r}\n\
             inet_interfaces = 127.0.0.1\nmyhostname = mail.example.test\n\
             mydestination = $myhostname, localhost\ncompatibility_level = 3.6\n\
             mail_spool_directory = {r}/mail\nalias_maps =\nalias_database =\n\
             local_recipient_maps =\nrelayhost = [127.0.0.1]:{relay_port}\nbiff = no\n",
            spool = spool.display(),
            data = data.display(),
            r = root.display(),
        );
        let mut master = format!("127.0.0.1:{port} inet n - n - - smtpd\n");
        if real {
            master.push_str(REAL_SERVICES);
        } else {
            master.push_str("qmgr unix n - n 300 1 qmgr\n");
            // An installed postdrop: a set-group-ID copy of the binary.
            let pd = root.join("bin/postdrop");
            std::fs::copy(BIN, &pd).unwrap();
            let g = nix::unistd::Group::from_name("postdrop").unwrap().unwrap();
            nix::unistd::chown(&pd, Some(nix::unistd::Uid::from_raw(0)), Some(g.gid)).unwrap();
            std::fs::set_permissions(&pd, std::fs::Permissions::from_mode(0o2755)).unwrap();
            main.push_str(&format!("command_directory = {}/bin\n", root.display()));
        }
        std::fs::write(etc.join("main.cf"), main).unwrap();
        std::fs::write(etc.join("master.cf"), master).unwrap();
        let meta = root.join("meta");
        if real {
            let _ = Command::new("cp")
                .args(["-a", "/etc/postfix"])
                .arg(&meta)
                .status();
            std::fs::write(
                meta.join("main.cf"),
                format!("alternate_config_directories = {}\n", etc.display()),
            )
            .unwrap();
        }
        Sys {
            _dir: Some(dir),
            root,
            etc,
            port,
            real,
            meta,
        }
    }

    fn spool(&self) -> PathBuf {
        let main = std::fs::read_to_string(self.etc.join("main.cf")).unwrap();
        let q = main
            .lines()
            .find_map(|l| l.strip_prefix("queue_directory = "))
            .unwrap();
        PathBuf::from(q)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("maillog")).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str) -> String {
        wait_text(&self.root.join("maillog"), needle, Duration::from_secs(30))
    }

    /// A Postfix command (`postfix`, `postsuper`, `sendmail`) of this mail system, as root
    /// or, with `user`, as that user. The real one runs in a private mount namespace with
    /// `self.meta` over /etc/postfix (its set-group-ID programs read only that main.cf).
    fn command(&self, name: &str, args: &[&str], user: Option<&str>) -> Command {
        if self.real {
            let mut c = Command::new("unshare");
            c.args(["-m", "sh", "-c"]);
            let mut script = String::from("mount --bind \"$0\" /etc/postfix && exec ");
            if let Some(u) = user {
                script.push_str(&format!("setpriv --reuid={u} --regid={u} --init-groups "));
            }
            script.push_str(&format!("/usr/sbin/{name} \"$@\""));
            c.arg(script).arg(&self.meta).args(args);
            c.env("MAIL_CONFIG", &self.etc);
            c
        } else {
            let mut c = Command::new(BIN);
            c.arg(name).args(args);
            if let Some(u) = user {
                let u = nix::unistd::User::from_name(u).unwrap().unwrap();
                c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
            }
            c.env("MAIL_CONFIG", &self.etc);
            c
        }
    }

    fn run(&self, name: &str, args: &[&str], user: Option<&str>, input: &[u8]) -> Output {
        let mut c = self.command(name, args, user);
        let mut child = c
            .env("LANG", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    fn postfix(&self, what: &str) -> Output {
        let etc = self.etc.display().to_string();
        self.run("postfix", &["-c", &etc, what], None, b"")
    }

    fn start(&self) {
        let out = self.postfix("start");
        assert!(out.status.success(), "{out:?}\n{}", self.log());
        // Listening once start returns.
        if poll(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()
        })
        .is_none()
        {
            panic!("not listening:\n{}", self.log());
        }
    }

    fn stop(&self) {
        let out = self.postfix("stop");
        assert!(out.status.success(), "{out:?}\n{}", self.log());
        // The real master's children go away with it; wait for the port to close.
        wait_port_closed(self.port, Duration::from_secs(10));
    }

    /// Queue files in `queue` (hash directories included).
    fn count(&self, queue: &str) -> usize {
        let out = Command::new("find")
            .arg(self.spool().join(queue))
            .args(["-type", "f"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    }

    /// Wait until deferred/ and hold/ hold `deferred` and `hold` files and nothing is in
    /// flight (incoming, active, maildrop empty).
    fn settle(&self, deferred: usize, hold: usize) {
        let mut now = (0, 0, 0);
        let settled = poll(Duration::from_secs(60), || {
            now = (
                self.count("deferred"),
                self.count("hold"),
                self.count("incoming") + self.count("active") + self.count("maildrop"),
            );
            (now == (deferred, hold, 0)).then_some(())
        });
        assert!(
            settled.is_some(),
            "queue did not settle ({} real={}): {now:?}\n{}",
            self.root.display(),
            self.real,
            self.log()
        );
        // Defer logs are written before the move to deferred/; give the writers a moment
        // past the last move.
        std::thread::sleep(Duration::from_millis(300));
    }

    /// The queue tree as `(owner:group mode type path)` lines with queue IDs and hash
    /// directories normalized, sorted, without what differs by design: `pid/` contents
    /// (the real master's per-service files), sockets and FIFOs (the real Postfix's
    /// `public/qmgr` and `private/*` are UNIX-domain sockets, Postern's `public/qmgr` a
    /// FIFO) and empty hash directories (which exist for the queue IDs each system
    /// happened to use; the others are listed once each).
    fn tree(&self) -> Vec<String> {
        let spool = self.spool();
        let out = Command::new("find")
            .arg(&spool)
            .args(["-printf", "%u:%g %m %y %P\\n"])
            .output()
            .unwrap();
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let path = f.get(3).copied().unwrap_or("");
                let ty = f.get(2).copied().unwrap_or("");
                !(path.starts_with("pid/") || ty == "s" || ty == "p")
            })
            .filter(|l| {
                // Empty hash directories.
                let f: Vec<&str> = l.split(' ').collect();
                let path = f.get(3).copied().unwrap_or("");
                let parts: Vec<&str> = path.split('/').collect();
                !(f.get(2) == Some(&"d")
                    && parts.len() == 2
                    && parts[1].len() == 1
                    && std::fs::read_dir(spool.join(path))
                        .map(|mut r| r.next().is_none())
                        .unwrap_or(false))
            })
            .map(|l| {
                let f: Vec<&str> = l.splitn(4, ' ').collect();
                let path: Vec<String> = f[3]
                    .split('/')
                    .enumerate()
                    .map(|(i, p)| {
                        if i > 0 && p.len() == 1 {
                            "H".to_string()
                        } else if p.len() >= 10 && p.chars().all(|c| c.is_ascii_alphanumeric()) {
                            "ID".to_string()
                        } else {
                            p.to_string()
                        }
                    })
                    .collect();
                format!("{} {} {} {}", f[0], f[1], f[2], path.join("/"))
            })
            .collect();
        lines.sort();
        // How many hash directories there are depends on the queue IDs' first letters:
        // each kind once.
        lines.dedup_by(|a, b| a == b && a.contains(" d ") && a.ends_with("/H"));
        lines
    }
}

impl Drop for Sys {
    fn drop(&mut self) {
        let _ = self.postfix("stop");
    }
}

/// SMTP to `sys`, returning the queue ID.
fn sys_send(sys: &Sys, to: &str, subject: &str) -> String {
    smtp_send(
        sys.port,
        "postern-qa@mail.example.test",
        &[to],
        &format!("Subject: {subject}\n\n{subject}\n"),
    )
}

/// The same operations on a mail system; the tree after each step.
fn scenario(sys: &Sys) -> Vec<(&'static str, Vec<String>)> {
    let mut trees = Vec::new();
    sys.start();
    trees.push(("after start", sys.tree()));
    // A local delivery, a deferral (the relay is down), a bounce (an unknown local user;
    // the notice goes to a local sender), and a message put on hold.
    sys_send(sys, "postern-qa@mail.example.test", "local");
    sys_send(sys, "far@remote.example", "deferred");
    sys_send(sys, "nosuchuser@mail.example.test", "bounce");
    let held = sys_send(sys, "other@remote.example", "held");
    sys.settle(2, 0);
    let out = sys.run("postsuper", &["-h", &held], None, b"");
    assert!(out.status.success(), "{out:?}");
    sys.settle(1, 1);
    trees.push(("after delivery, deferral, bounce, hold", sys.tree()));
    // A submission by a user while the mail system is down: it waits in maildrop/.
    sys.stop();
    let etc = sys.etc.display().to_string();
    let out = sys.run(
        "sendmail",
        &[
            "-C",
            &etc,
            "-f",
            "postern-qa@mail.example.test",
            "third@remote.example",
        ],
        Some("postern-qa"),
        b"Subject: postdrop\n\nfrom a user\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sys.count("maildrop"), 1);
    trees.push(("after a user's sendmail while down", sys.tree()));
    // Started again: picked up, deferred; released from hold.
    sys.start();
    sys.settle(2, 1);
    trees.push(("after pickup", sys.tree()));
    let out = sys.run("postsuper", &["-H", "ALL"], None, b"");
    assert!(out.status.success(), "{out:?}");
    sys.settle(3, 0);
    trees.push(("after postsuper -H", sys.tree()));
    // Requeued while down: the files wait in maildrop/.
    sys.stop();
    let out = sys.run("postsuper", &["-r", "ALL"], None, b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sys.count("maildrop"), 3);
    trees.push(("after postsuper -r while down", sys.tree()));
    trees
}

#[test]
fn queue_tree_is_the_real_postfix_s_after_the_same_operations() {
    if !is_root() || !have_real_postfix() {
        eprintln!("skipped: needs root and the real Postfix");
        return;
    }
    let Some(_) = mail_user("postern-qa") else {
        return;
    };
    let closed = free_port();
    let real = Sys::new(true, closed, None);
    let ours = Sys::new(false, closed, None);
    let a = scenario(&real);
    let b = scenario(&ours);
    assert_eq!(a.len(), b.len());
    // What the steps must have made (so that equal trees mean something).
    let has = |i: usize, line: &str| a[i].1.iter().any(|l| l == line);
    assert!(has(0, "postfix:postdrop 710 d public"), "{:#?}", a[0]);
    assert!(has(1, "postfix:postfix 700 f deferred/H/ID"), "{:#?}", a[1]);
    assert!(has(1, "postfix:postfix 600 f defer/H/ID"), "{:#?}", a[1]);
    assert!(has(1, "postfix:postfix 700 f hold/ID"), "{:#?}", a[1]);
    assert!(
        has(2, "postern-qa:postdrop 744 f maildrop/ID"),
        "{:#?}",
        a[2]
    );
    for ((step, t_real), (_, t_ours)) in a.iter().zip(b.iter()) {
        // `postsuper -r` included: both leave the defer logs and the mode as they were
        // (compat-fixtures/postsuper-moves/); Postern's pickup removes the logs later.
        assert_eq!(
            t_ours,
            t_real,
            "queue tree {step} (left: Postern, right: the real Postfix 3.7)\nPostern's log:\n{}",
            ours.log()
        );
    }
}

#[test]
fn the_real_postfix_starts_on_postern_s_queue_and_delivers_its_deferred_mail() {
    if !is_root() || !have_real_postfix() {
        eprintln!("skipped: needs root and the real Postfix");
        return;
    }
    let Some(_) = mail_user("postern-qa") else {
        return;
    };
    let relay = free_port();
    let ours = Sys::new(false, relay, None);
    ours.start();
    sys_send(&ours, "far@remote.example", "postern-deferred-token");
    sys_send(&ours, "postern-qa@mail.example.test", "local-one");
    ours.settle(1, 0);
    ours.stop();
    // What an older Postern, whose queue manager ran as root, left behind: public/ root's
    // and 0755, the deferred file and its defer log root's. Postern puts it right at start.
    let spool = ours.spool();
    let chown_root = |p: &Path| {
        let out = Command::new("chown")
            .arg("-R")
            .arg("root:root")
            .arg(p)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    chown_root(&spool.join("public"));
    std::fs::set_permissions(spool.join("public"), std::fs::Permissions::from_mode(0o755)).unwrap();
    chown_root(&spool.join("deferred"));
    chown_root(&spool.join("defer"));
    ours.start();
    // The master logs the repairs before it reports ready; the log file is read back until
    // each line is there (a failed repair still fails the assertion after the wait).
    for q in ["public", "deferred", "defer"] {
        let log = ours.wait_log(&format!("{}: set Postfix's", spool.join(q).display()));
        assert!(
            log.contains(&format!("{}: set Postfix's", spool.join(q).display())),
            "{q} not repaired:\n{log}"
        );
    }
    ours.stop();
    assert_no_root_files(&spool);
    // The real Postfix on the same queue and data directories.
    let queue = ours.spool().parent().unwrap().to_path_buf();
    let real = Sys::new(true, relay, Some(&queue));
    real.start();
    let log = real.wait_log("daemon started");
    for bad in [
        "not owned by",
        "Permission denied",
        "fatal:",
        "writable",
        "startup failed",
    ] {
        assert!(
            !log.contains(bad),
            "the real Postfix on Postern's queue: {bad}\n{log}"
        );
    }
    let sink = Sink::start_on("127.0.0.1", relay, SinkMode::Accept, false);
    let out = real.postfix("flush");
    assert!(out.status.success(), "{out:?}");
    let msg = sink.wait_message("postern-deferred-token");
    assert!(msg.contains("Subject: postern-deferred-token"), "{msg}");
    // (Postfix's postsuper renames a short queue ID that does not match its file's inode
    // number, so the ID is the real Postfix's own by now.)
    let want = format!("to=<far@remote.example>, relay=127.0.0.1[127.0.0.1]:{relay}");
    let log = real.wait_log(&want);
    assert!(
        log.lines()
            .any(|l| l.contains(&want) && l.contains("status=sent")),
        "{log}"
    );
    real.stop();
    // And back: Postern starts on the queue the real Postfix left (its public/qmgr is a
    // socket), and `postfix flush` reaches its queue manager again.
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(spool.join("public/qmgr"))
            .unwrap()
            .file_type()
            .is_socket()
    );
    ours.start();
    assert!(
        std::fs::symlink_metadata(spool.join("public/qmgr"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let out = ours.postfix("flush");
    assert!(out.status.success(), "{out:?}");
    ours.stop();
    assert_no_root_files(&spool);
}

// ---------------------------------------------------------------------------------------
// Test 4: the local delivery process is no oracle

/// Send a delivery request on the local delivery process's channel `ctl` and read the
/// outcomes back, as the queue manager does (a batch of one request: the channel carries a
/// list of requests and answers with one reply per request, issue 18's group commit).
fn ask(ctl: i32, req: &postern::qmgr::local_server::Request) -> Vec<postern::delivery::Outcome> {
    use nix::sys::socket::{
        AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair,
    };
    use postern::sys::wire::{Dec, Enc, Wire};
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut e = Enc::new();
    vec![req.clone()].put(&mut e);
    let (mine, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let fds = [theirs.as_raw_fd()];
    sendmsg::<()>(
        ctl,
        &[std::io::IoSlice::new(&e.0)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    drop(theirs);
    let mut data = Vec::new();
    std::fs::File::from(mine).read_to_end(&mut data).unwrap();
    let mut replies =
        Vec::<postern::qmgr::local_server::Reply>::get(&mut Dec(&data)).expect("an answer");
    assert_eq!(replies.len(), 1, "one reply per request");
    replies.remove(0).outcomes
}

#[test]
fn a_compromised_queue_manager_gets_no_file_written_but_mail_delivered() {
    use postern::delivery::Status;
    use postern::qmgr::local_server::{Agent, Request};
    if !is_root() {
        eprintln!("skipped: not root");
        return;
    }
    let Some(_) = mail_user("postern-pe") else {
        return;
    };
    let d = Daemon::new("", "qmgr unix n - n 300 1 qmgr\n");
    let dir = d.path().to_path_buf();
    let etc = d.config_dir();
    // Everything for mail.example.test waits (retry:) while the test takes a real queue
    // file; then the table is emptied and the address is local again. smtpd refuses a
    // retry: recipient at RCPT (450, as Postfix's reject_unlisted_recipient does) unless
    // that check is off.
    std::fs::write(etc.join("transport"), "mail.example.test retry:\n").unwrap();
    let mut main = std::fs::read_to_string(etc.join("main.cf")).unwrap();
    main.push_str(&format!(
        "compatibility_level = 3.6\nmyhostname = mail.example.test\n\
         smtpd_reject_unlisted_recipient = no\n\
         mydestination = $myhostname, localhost\nalias_maps =\n\
         transport_maps = hash:{}/transport\nmail_spool_directory = {}/mail\n",
        etc.display(),
        dir.display()
    ));
    std::fs::write(etc.join("main.cf"), main).unwrap();
    assert!(d.admin("postmap transport").status.success());
    let mut d = d;
    d.start();
    let id = smtp_send(
        d.port,
        "sender@example.org",
        &["postern-pe@mail.example.test"],
        "Subject: forged\n\nforged\n",
    );
    d.wait_log("status=deferred");
    let spool = dir.join("spool");
    // The delivery agent's `status=deferred` comes before the queue manager moves the file
    // from active/ to deferred/ (as in Postfix): wait for the move.
    let deferred = spool.join("deferred").join(&id[..1]).join(&id);
    let _ = poll(Duration::from_secs(30), || deferred.exists().then_some(()));
    let queued = std::fs::read(&deferred).unwrap();
    std::fs::write(etc.join("transport"), "").unwrap();
    assert!(d.admin("postmap transport").status.success());

    // The queue manager's end of its channel, taken from the running process (as code
    // running as mail_owner inside it could use it).
    let master: u32 = std::fs::read_to_string(spool.join("pid/master.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let qmgr = children_of(master)
        .into_iter()
        .find(|(_, c)| c.contains(" qmgr -c "))
        .expect("qmgr")
        .0;
    let env = std::fs::read(format!("/proc/{qmgr}/environ")).unwrap();
    let fd: i32 = String::from_utf8_lossy(&env)
        .split('\0')
        .find_map(|v| v.strip_prefix("POSTERN_LOCAL_FD="))
        .expect("the channel")
        .parse()
        .unwrap();
    // SAFETY: plain syscalls; the descriptors are checked.
    let ctl = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, qmgr as libc::pid_t, 0) as i32;
        assert!(pidfd >= 0, "pidfd_open");
        libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as i32
    };
    assert!(ctl >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());

    let owner = nix::unistd::User::from_name(&test_mail_owner())
        .unwrap()
        .unwrap();
    let active = spool.join("active");
    let plant = |name: &str, uid: u32| {
        let p = active.join(name);
        std::fs::write(&p, &queued).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&p, Some(uid), Some(owner.gid.as_raw())).unwrap();
        p
    };
    let offset = postern::queue::read_queue_file(&spool.join("deferred").join(&id[..1]).join(&id))
        .unwrap()
        .recipients[0]
        .offset;
    let req = |queue_id: &str, offset: u64, target: &str| Request {
        agent: Agent::Local,
        queue_id: queue_id.to_string(),
        offset,
        target: target.to_string(),
    };
    let refused = |o: &[postern::delivery::Outcome], why: &str| {
        assert_eq!(o.len(), 1, "{o:?}");
        assert_eq!(o[0].status, Status::Deferred, "{o:?}");
        assert!(
            o[0].text.starts_with("delivery request rejected: ") && o[0].text.contains(why),
            "{o:?}"
        );
    };
    // Not a queue ID: no path is ever built from it.
    refused(
        &ask(
            ctl,
            &req("../../../etc/shadow", 0, "postern-pe@mail.example.test"),
        ),
        "bad queue ID",
    );
    // A symbolic link in active/ is not followed.
    std::os::unix::fs::symlink("/etc/shadow", active.join("4AB2C3D4E5")).unwrap();
    refused(
        &ask(
            ctl,
            &req("4AB2C3D4E5", offset, "postern-pe@mail.example.test"),
        ),
        "4AB2C3D4E5",
    );
    // A file that is not mail_owner's (planted by someone else) is refused.
    plant("4AB2C3D4E6", 0);
    refused(
        &ask(
            ctl,
            &req("4AB2C3D4E6", offset, "postern-pe@mail.example.test"),
        ),
        "owned by uid 0",
    );
    // The queue manager's own file: only what the recipient resolves to is delivered.
    plant("4AB2C3D4E7", owner.uid.as_raw());
    for target in [
        "root@mail.example.test",
        "|touch /tmp/postern-pwned@mail.example.test",
        "/etc/passwd@mail.example.test",
        "postern-pe@other.example",
    ] {
        refused(
            &ask(ctl, &req("4AB2C3D4E7", offset, target)),
            "does not resolve",
        );
    }
    refused(
        &ask(
            ctl,
            &req("4AB2C3D4E7", offset + 1, "postern-pe@mail.example.test"),
        ),
        "no such recipient",
    );
    assert!(!Path::new("/tmp/postern-pwned").exists());
    // What it may do is what any SMTP client may: mail to the local recipient.
    let o = ask(
        ctl,
        &req("4AB2C3D4E7", offset, "postern-pe@mail.example.test"),
    );
    assert_eq!(o.len(), 1, "{o:?}");
    assert_eq!(o[0].status, Status::Sent, "{o:?}");
    let mbox = dir.join("mail/postern-pe");
    assert!(
        std::fs::read_to_string(&mbox)
            .unwrap()
            .contains("Subject: forged")
    );
    assert_owner(&mbox, "postern-pe", 0o600);
    for f in ["4AB2C3D4E5", "4AB2C3D4E6", "4AB2C3D4E7"] {
        let _ = std::fs::remove_file(active.join(f));
    }
    // SAFETY: our own descriptor.
    unsafe { libc::close(ctl) };
}
