//! Dovecot's auth client protocol served by Postern ([`postern::auth::dovecot_proto`]),
//! with the real Postfix 3.7 as the client: a private `postfix -c DIR start-fg` with
//! `smtpd_sasl_type = dovecot` and `smtpd_sasl_path` pointing at Postern's socket, and
//! swaks doing SMTP AUTH PLAIN and LOGIN with right and wrong passwords. Needs root, the
//! `postfix` package (and its `postfix` user) and swaks; skips otherwise.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern::auth::dovecot::DovecotAuth;
use postern::auth::dovecot_proto;
use postern::config::dovecot::DovecotConf;

fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

struct Postfix {
    conf: std::path::PathBuf,
    child: std::process::Child,
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .output();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn swaks(port: u16, mech: &str, user: &str, pw: &str) -> String {
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--auth", mech, "--auth-user", user, "--auth-password", pw])
        .args(["--quit-after", "AUTH", "--timeout", "20"])
        .output()
        .expect("swaks");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn real_postfix_authenticates_through_posterns_auth_socket() {
    let root = nix::unistd::geteuid().is_root();
    if !root
        || !have("postfix")
        || !have("swaks")
        || nix::unistd::User::from_name("postfix")
            .ok()
            .flatten()
            .is_none()
    {
        eprintln!("skipped: needs root, postfix and swaks");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let users = dir.join("users");
    let sha = postern::auth::crypt::hash(b"Crypt-pw", "$6$").expect("hash");
    std::fs::write(
        &users,
        format!("alice:{{PLAIN}}secret:1000:1000::/home/alice::\nbob:{{SHA512-CRYPT}}{sha}:1001:1001::/home/bob::\n"),
    )
    .expect("users");
    let conf = DovecotConf::from_str(
        &format!(
            "auth_mechanisms = plain login\npassdb {{\n  driver = passwd-file\n  args = {}\n}}\n",
            users.display()
        ),
        Path::new("dovecot.conf"),
    )
    .expect("conf");
    let mut auth = DovecotAuth::from_conf(&conf).expect("auth");
    auth.failure_delay = Duration::from_millis(100);
    let auth = Arc::new(auth);
    let socket = dir.join("auth-socket");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(async { dovecot_proto::bind(&socket, 0o666) })
        .expect("bind");
    rt.spawn(dovecot_proto::serve(listener, auth));

    // A private Postfix whose smtpd asks Postern's socket.
    let port = free_port();
    let pconf = dir.join("conf");
    let queue = dir.join("queue");
    let data = dir.join("data");
    for d in [&pconf, &queue, &data] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let st = Command::new("chown")
        .arg("postfix")
        .arg(&data)
        .status()
        .expect("chown");
    assert!(st.success());
    std::fs::write(
        pconf.join("main.cf"),
        format!(
            "compatibility_level = 3.6\nqueue_directory = {q}\ndata_directory = {d}\nmail_owner = postfix\n\
             inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmyhostname = postern-test.example\n\
             maillog_file_prefixes = {t}\nmaillog_file = {t}/maillog\n\
             smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = {s}\n\
             smtpd_tls_security_level = none\nsmtpd_relay_restrictions = permit_sasl_authenticated, reject\n",
            q = queue.display(),
            d = data.display(),
            t = dir.display(),
            s = socket.display()
        ),
    )
    .expect("main.cf");
    std::fs::write(
        pconf.join("master.cf"),
        format!(
            "127.0.0.1:{port} inet n - n - - smtpd\npostlog unix-dgram n - n - 1 postlogd\n\
             proxymap unix - - n - - proxymap\nanvil unix - - n - 1 anvil\n"
        ),
    )
    .expect("master.cf");
    let child = Command::new("postfix")
        .arg("-c")
        .arg(&pconf)
        .arg("start-fg")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("postfix");
    let _pf = Postfix {
        conf: pconf.clone(),
        child,
    };
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "postfix did not listen: {}",
            std::fs::read_to_string(dir.join("maillog")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = swaks(port, "PLAIN", "alice", "secret");
    assert!(out.contains("250-AUTH PLAIN LOGIN"), "{out}");
    assert!(
        out.contains("<-  235 2.7.0 Authentication successful"),
        "{out}"
    );
    let out = swaks(port, "LOGIN", "bob", "Crypt-pw");
    assert!(
        out.contains("<-  235 2.7.0 Authentication successful"),
        "{out}"
    );
    let out = swaks(port, "PLAIN", "alice", "wrong");
    assert!(
        out.contains("<** 535 5.7.8 Error: authentication failed:"),
        "{out}"
    );
    let out = swaks(port, "LOGIN", "nobody", "x");
    assert!(
        out.contains("<** 535 5.7.8 Error: authentication failed:"),
        "{out}"
    );
    let log = std::fs::read_to_string(dir.join("maillog")).unwrap_or_default();
    assert!(log.contains("SASL PLAIN authentication failed"), "{log}");
    assert!(
        !log.contains("secret") && !log.contains("Crypt-pw"),
        "no password in the log"
    );
}
