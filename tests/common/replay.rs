//! Running a replay script (`scripts/guide-replay`, `scripts/swap-replay`) as CI runs it
//! and judging its transcript: every expected step reported once, and passed (or skipped
//! with the one message allowed), the exit status in step with the results, and the host
//! as it was (the paths the replay changes in its scratch root unchanged here, no mount,
//! process or temp directory of the scratch root left).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The state of one host path: kind, link target or content, mode and owner.
pub fn path_state(p: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(p) {
        Err(e) => format!("absent ({})", e.kind()),
        Ok(m) => {
            let what = if m.file_type().is_symlink() {
                format!("link -> {:?}", std::fs::read_link(p).ok())
            } else if m.is_dir() {
                let mut names: Vec<String> = std::fs::read_dir(p)
                    .map(|rd| {
                        rd.filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                names.sort();
                format!("dir {names:?}")
            } else {
                let bytes = std::fs::read(p).unwrap_or_default();
                format!("file {} bytes {:x}", bytes.len(), fnv(&bytes))
            };
            format!("{what} mode {:o} {}:{}", m.mode(), m.uid(), m.gid())
        }
    }
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100000001b3)
    })
}

/// The user the replay creates, as the host's /etc/passwd has it (or not).
fn host_user(name: &str) -> Option<String> {
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .map(str::to_string)
}

/// The state of `paths` (and of each entry of `dirs`), of the user alice and of the host
/// name: what a replay changes inside its scratch root.
pub fn host_snapshot(paths: &[&str], dirs: &[&str]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for p in paths.iter().chain(dirs) {
        m.insert(p.to_string(), path_state(p));
    }
    m.insert("passwd: alice".into(), format!("{:?}", host_user("alice")));
    m.insert(
        "hostname".into(),
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default(),
    );
    m
}

/// Processes whose root directory lies under `dir` (a chroot into the scratch root).
pub fn processes_rooted_in(dir: &str) -> Vec<String> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(root) = std::fs::read_link(e.path().join("root"))
            && root.starts_with(dir)
        {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            v.push(format!(
                "{name}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    v
}

/// Run `scripts/SCRIPT --binary <the built postern>` with a time limit; the whole process
/// group is killed past it. Returns the exit status and the transcript (stdout, then
/// stderr).
pub fn run_replay(script: &str, limit: Duration) -> (Option<i32>, String) {
    run_replay_with(script, &[], limit)
}

/// [`run_replay`] with more arguments for the script.
pub fn run_replay_with(script: &str, args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script);
    let mut child = Command::new(&path)
        .arg("--binary")
        .arg(super::BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", path.display()));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = super::wait_exit(&mut child, limit);
    if status.is_none() {
        let group = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
    }
    let mut text = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let e = err_reader.join().unwrap_or_default();
    if !e.is_empty() {
        text.push_str("\n(stderr)\n");
        text.push_str(&String::from_utf8_lossy(&e));
    }
    match status {
        Some(st) => (st.code(), text),
        None => (
            None,
            text + &format!("\n(killed after {} s)", limit.as_secs()),
        ),
    }
}

/// What is wrong with a transcript: each of `steps` must be reported exactly once and
/// pass, or be skipped when `skips` allows it for that step (its text must start with the
/// allowed message); no other step may appear; the exit status must be 1 when a step
/// failed, else 0.
pub fn transcript_problems(
    transcript: &str,
    code: Option<i32>,
    steps: &[&str],
    skips: &[(&str, &str)],
) -> Vec<String> {
    let mut problems = Vec::new();
    // Each step's result line: "[PASS] id — …", "[FAIL] id — …", "[SKIP] id — …".
    let mut results: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for line in transcript.lines() {
        for verdict in ["PASS", "FAIL", "SKIP"] {
            if let Some(rest) = line.strip_prefix(&format!("[{verdict}] ")) {
                let (id, text) = rest.split_once(" — ").unwrap_or((rest, ""));
                results.entry(id).or_default().push((verdict, text));
            }
        }
    }
    for id in steps {
        match results.get(id).map(Vec::as_slice) {
            Some([("PASS", _)]) => {}
            Some([("SKIP", text)])
                if skips
                    .iter()
                    .any(|(s, msg)| s == id && text.starts_with(msg)) => {}
            Some([(verdict, text)]) => problems.push(format!("step {id}: {verdict}: {text}")),
            Some(many) => problems.push(format!("step {id} reported {} times", many.len())),
            None => problems.push(format!("step {id}: no result")),
        }
    }
    for id in results.keys() {
        if !steps.contains(id) {
            problems.push(format!("unexpected step {id}"));
        }
    }
    let failed = results
        .values()
        .flatten()
        .any(|(verdict, _)| *verdict == "FAIL");
    if code != Some(if failed { 1 } else { 0 }) {
        problems.push(format!(
            "exit status {code:?} does not match the steps (a step failed: {failed})"
        ));
    }
    problems
}

/// What the replay left on the host: changed paths (`before` against `after`), and the
/// scratch directory the transcript names ("scratch: DIR …") still there, mounted, or
/// the root of a process.
pub fn host_problems(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    transcript: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (k, v) in before {
        if after.get(k) != Some(v) {
            problems.push(format!(
                "host changed: {k}: before {v}, after {:?}",
                after.get(k)
            ));
        }
    }
    match transcript
        .lines()
        .find_map(|l| l.strip_prefix("scratch: "))
        .and_then(|l| l.split_whitespace().next())
    {
        None => problems.push("the transcript does not name its scratch directory".into()),
        Some(dir) => {
            if Path::new(dir).exists() {
                problems.push(format!("scratch directory {dir} left on the host"));
            }
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            for m in mounts.lines().filter(|l| l.contains(dir)) {
                problems.push(format!("mount left on the host: {m}"));
            }
            for p in processes_rooted_in(dir) {
                problems.push(format!("process left in the scratch root: {p}"));
            }
        }
    }
    problems
}

/// The queue directories whose entries must not change on the host (every replay).
pub const QUEUE_DIRS: &[&str] = &[
    "/var/spool/postfix/maildrop",
    "/var/spool/postfix/incoming",
    "/var/spool/postfix/active",
    "/var/spool/postfix/deferred",
    "/var/spool/postfix/defer",
    "/var/spool/postfix/private",
    "/var/spool/postfix/public",
];

/// The whole test of a replay, as CI runs it: root only (namespaces, overlay, chroot;
/// otherwise it says it is skipped and passes), `scripts/SCRIPT ARGS…` within `limit`,
/// every one of `steps` reported once and passed, and the host left as it was (each of
/// `host_paths` and [`QUEUE_DIRS`] unchanged, no mount or process of the scratch root
/// left). `test` names the test file in the skip message, `what` the replay in the
/// failure message.
pub fn assert_replay(
    test: &str,
    what: &str,
    script: &str,
    args: &[&str],
    limit: Duration,
    steps: &[&str],
    host_paths: &[&str],
) {
    if !super::is_root() {
        eprintln!("skipped: tests/{test} needs root (namespaces, overlay, chroot)");
        return;
    }
    let before = host_snapshot(host_paths, QUEUE_DIRS);
    let (code, transcript) = run_replay_with(script, args, limit);
    let after = host_snapshot(host_paths, QUEUE_DIRS);
    println!("{transcript}");

    let mut problems = transcript_problems(&transcript, code, steps, &[]);
    problems.extend(host_problems(&before, &after, &transcript));
    assert!(
        problems.is_empty(),
        "the {what} replay failed:\n  {}\n(transcript above)",
        problems.join("\n  ")
    );
}
