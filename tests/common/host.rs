//! What the tests ask of the host: whether a program is installed, whether they run as
//! root, a free loopback port, processes as `/proc` shows them, Python, a certificate.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Whether `prog` is on `PATH` (tests that need Debian's swaks, saslauthd, pflogsumm…
/// say so and return early without it).
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A loopback port nothing listens on now (bind port 0, read it, close it): tests run in
/// parallel, each on its own ports.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Whether `pid` runs and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')),
        Err(_) => false,
    }
}

/// `/proc/PID/status` fields as lists of words (empty when the process is gone).
pub fn proc_status(pid: u32) -> BTreeMap<String, Vec<String>> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.split_whitespace().map(str::to_string).collect(),
            )
        })
        .collect()
}

/// One `/proc/PID/status` field as its words joined by single spaces (`""` when absent).
pub fn proc_field(pid: u32, field: &str) -> String {
    proc_status(pid)
        .get(field)
        .map(|v| v.join(" "))
        .unwrap_or_default()
}

/// The command line of `pid`, its arguments joined by spaces.
pub fn cmdline(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

/// The children of `pid` (zombies included) with their command lines.
pub fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(st) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let ppid = st
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|x| x.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push((p, cmdline(p)));
        }
    }
    out
}

/// `python3 -c SCRIPT`: standard output, standard error, exit code (-1 when killed).
pub fn python(script: &str) -> (String, String, i32) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3");
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
        out.status.code().unwrap_or(-1),
    )
}

/// A self-signed certificate for `host` written to `dir/cert.pem` and `dir/key.pem`;
/// their paths.
pub fn make_cert(dir: &Path, host: &str) -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).expect("cert");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.key_pair.serialize_pem()).expect("write key");
    (cert.display().to_string(), key.display().to_string())
}

/// The socket inode of the server's end of the connection from local port `client_port`
/// to `server_port` (from /proc/net/tcp).
pub fn server_socket_inode(server_port: u16, client_port: u16) -> Option<u64> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let port = |a: &str| u16::from_str_radix(a.rsplit(':').next()?, 16).ok();
        (port(f.get(1)?)? == server_port && port(f.get(2)?)? == client_port)
            .then(|| f.get(9)?.parse().ok())
            .flatten()
    })
}

/// The processes holding socket `inode` open.
pub fn holders(inode: u64) -> Vec<u32> {
    let want = format!("socket:[{inode}]");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let fds = std::fs::read_dir(e.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten();
        if fds
            .filter_map(|f| std::fs::read_link(f.path()).ok())
            .any(|l| l.to_string_lossy() == want)
        {
            out.push(pid);
        }
    }
    out
}

/// The one process holding the server's end of the connection from local port
/// `client_port` to `server_port`, once only one holds it (the login process lets go
/// just after the reply), within 10 s.
pub fn sole_holder(server_port: u16, client_port: u16) -> Option<u32> {
    let inode = server_socket_inode(server_port, client_port)?;
    super::poll(std::time::Duration::from_secs(10), || {
        let h = holders(inode);
        (h.len() == 1).then(|| h[0])
    })
}

/// What /proc says a process runs as: the four uids (real, effective, saved, fs), the
/// four gids, the supplementary groups (sorted by the kernel), each as words.
pub fn credentials(pid: u32) -> (Vec<String>, Vec<String>, Vec<String>) {
    let st = proc_status(pid);
    let get = |k: &str| st.get(k).cloned().unwrap_or_default();
    (get("Uid"), get("Gid"), get("Groups"))
}

/// Every thread of `pid` runs with the uids `uid` (real, effective, saved and
/// filesystem, from `/proc/PID/task/*/status`): a process that dropped its privileges did
/// so in all its threads, not only the first. `what` names the process in the failure.
pub fn assert_every_thread_uid(pid: u32, uid: u32, what: &str) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    for t in tasks.flatten() {
        let st = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let uids = st
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap_or_default();
        assert_eq!(
            uids.split_whitespace().skip(1).collect::<Vec<_>>(),
            vec![uid.to_string(); 4],
            "Uid of thread {} of the {what}",
            t.file_name().to_string_lossy()
        );
    }
}

/// The process title (`argv[0]`) of `pid`.
pub fn cmdline_of(pid: u32) -> String {
    cmdline(pid)
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string()
}
