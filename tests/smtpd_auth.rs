//! SMTP AUTH end to end: Postern's smtpd against the real Cyrus `saslauthd -a shadow`
//! (Debian's sasl2-bin) and against Postern's own saslauthd, with swaks; the AUTH lines
//! with and without `broken_sasl_auth_clients`; `noplaintext` before and after STARTTLS.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A saslauthd (real or Postern's) in its own process group on `dir/mux`; killed on drop.
struct Saslauthd(std::process::Child);

impl Saslauthd {
    fn start(program: &[&str], dir: &Path) -> Saslauthd {
        use std::os::unix::process::CommandExt;
        let child = Command::new(program[0])
            .args(&program[1..])
            .process_group(0)
            .args(["-a", "shadow", "-d", "-n", "2", "-m"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start saslauthd");
        for _ in 0..200 {
            if dir.join("mux").exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        Saslauthd(child)
    }
}

impl Drop for Saslauthd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

fn main_cf(mux: &Path, extra: &str) -> String {
    format!(
        "myhostname = mail.example.com\nmydestination = $myhostname\nmynetworks = 127.0.0.1/32\n\
         local_recipient_maps =\nsmtpd_sasl_auth_enable = yes\nbroken_sasl_auth_clients = yes\n\
         smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination\n\
         {extra}\n# saslauthd: {}\n",
        mux.display()
    )
}

fn write_sasl(dir: &Path, mux: &Path) {
    std::fs::create_dir_all(dir.join("sasl")).unwrap();
    std::fs::write(
        dir.join("sasl/smtpd.conf"),
        format!(
            "pwcheck_method: saslauthd\nmech_list: plain login\nsaslauthd_path: {}\n",
            mux.display()
        ),
    )
    .unwrap();
}

fn swaks(port: u16, mech: &str, user: &str, pw: &str) -> String {
    let out = Command::new("swaks")
        .args([
            "--server",
            &format!("127.0.0.1:{port}"),
            "--from",
            "roamer@example.org",
            "--to",
            "friend@example.net",
            "--auth",
            mech,
            "--auth-user",
            user,
            "--auth-password",
            pw,
            "--quit-after",
            "RCPT",
        ])
        .output()
        .expect("swaks");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn run_against(saslauthd: &[&str], user: &str) {
    let sock = tempfile::tempdir().unwrap();
    let _ = Command::new("chmod")
        .args(["755", sock.path().to_str().unwrap()])
        .status();
    let _d = Saslauthd::start(saslauthd, sock.path());
    let mux = sock.path().join("mux");
    let inst = Instance::start_with(&main_cf(&mux, ""), "", |d| write_sasl(d, &mux));
    for mech in ["PLAIN", "LOGIN"] {
        let ok = swaks(inst.port, mech, user, "S3cret-pw");
        assert!(
            ok.contains("<-  235 2.7.0 Authentication successful"),
            "{mech}: {ok}"
        );
        assert!(
            ok.contains("<-  250 2.1.5 Ok"),
            "relay after AUTH {mech}: {ok}"
        );
        let bad = swaks(inst.port, mech, user, "wrong");
        assert!(
            bad.contains("<** 535 5.7.8 Error: authentication failed: authentication failure"),
            "{mech}: {bad}"
        );
    }
    let log = inst.wait_log("SASL LOGIN authentication failed");
    assert!(
        log.contains("warning: localhost[127.0.0.1]: SASL PLAIN authentication failed: authentication failure"),
        "{log}"
    );
    assert!(
        !log.contains("S3cret-pw") && !log.contains("wrong"),
        "password in log"
    );
}

#[test]
fn smtpd_against_the_real_cyrus_saslauthd() {
    if !have("saslauthd") || !have("swaks") {
        panic!("needs sasl2-bin and swaks (installed by .ci/run)");
    }
    let Some(u) = TestUser::create("pstsmtpa", "S3cret-pw", "YESCRYPT") else {
        eprintln!("skipped: needs root to create a system user");
        return;
    };
    run_against(&["/usr/sbin/saslauthd"], &u.0);
}

#[test]
fn smtpd_against_posterns_saslauthd() {
    let Some(u) = TestUser::create("pstsmtpb", "S3cret-pw", "SHA512") else {
        eprintln!("skipped: needs root to create a system user");
        return;
    };
    run_against(&[env!("CARGO_BIN_EXE_postern"), "saslauthd"], &u.0);
}

#[test]
fn auth_lines_and_noplaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let mux = tmp.path().join("mux");
    // Without broken_sasl_auth_clients: no AUTH= line.
    let inst = Instance::start_with(
        &main_cf(&mux, "").replace("broken_sasl_auth_clients = yes\n", ""),
        "",
        |d| write_sasl(d, &mux),
    );
    let mut c = Smtp::connect(inst.port);
    c.line();
    let e = c.cmd("EHLO x");
    assert!(e.contains(&"250-AUTH PLAIN LOGIN".to_string()), "{e:?}");
    assert!(!e.iter().any(|l| l.starts_with("250-AUTH=")), "{e:?}");
    drop(inst);
    // noplaintext: PLAIN and LOGIN hidden before TLS, offered after STARTTLS
    // (smtpd_sasl_tls_security_options allows them).
    let ck = rcgen::generate_simple_self_signed(vec!["mail.example.com".to_string()]).unwrap();
    let cert = tmp.path().join("cert.pem");
    let key = tmp.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let _ = Command::new("chmod")
        .args(["-R", "755", tmp.path().to_str().unwrap()])
        .status();
    let _ = Command::new("chmod")
        .args(["644", key.to_str().unwrap()])
        .status();
    let inst = Instance::start_with(
        &main_cf(
            &mux,
            &format!(
                "smtpd_sasl_security_options = noanonymous, noplaintext\n\
                 smtpd_sasl_tls_security_options = noanonymous\n\
                 smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n",
                cert.display(),
                key.display()
            ),
        ),
        "",
        |d| write_sasl(d, &mux),
    );
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)
s.ehlo('x')
print('before', s.esmtp_features.get('auth'))
s.starttls(context=ctx)
s.ehlo('x')
print('after', s.esmtp_features.get('auth'))
s.quit()
"#,
        port = inst.port
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("before None"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("after  PLAIN LOGIN") || text.contains("after PLAIN LOGIN"),
        "{text}"
    );
}
