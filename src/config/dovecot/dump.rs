//! The `# …` header `doveconf` prints before the settings (`doveconf.c` main(),
//! `sysinfo-get.c`): version and file, the OS (uname, distribution, file system of
//! `mail_location`) and the host name.
//!
//! Dovecot adds a `# Pigeonhole version …` line when its Sieve plugin's settings module is
//! installed; Postern serves no Sieve, so it prints none (as Dovecot does on a box without
//! Pigeonhole). Like the OS and host lines it depends on the machine, and the fixture
//! comparisons leave it out.

use std::path::Path;

/// The version line doveconf starts with.
pub const VERSION_LINE: &str = "# 2.3.19.1 (9b53102964): ";

/// The first line, printed before the file is parsed (so it is there even when parsing
/// fails).
pub fn version_line(file: &str) -> String {
    format!("{VERSION_LINE}{file}\n")
}

/// The lines after the file is parsed: OS and host name.
pub fn header(mail_location: &str) -> String {
    let mut s = String::new();
    if let Ok(u) = nix::sys::utsname::uname() {
        let sys = u.sysname().to_string_lossy().into_owned();
        let distro = if sys == "Linux" {
            distro()
        } else {
            String::new()
        };
        s.push_str(&format!(
            "# OS: {} {} {} {} {}\n",
            sys,
            u.release().to_string_lossy(),
            u.machine().to_string_lossy(),
            distro,
            filesystem(mail_location)
        ));
    }
    if let Ok(h) = nix::unistd::gethostname() {
        s.push_str(&format!("# Hostname: {}\n", h.to_string_lossy()));
    }
    s
}

fn read_small(path: &str) -> Option<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(1024)
        .read_to_end(&mut buf)
        .ok()?;
    if buf.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// `distro_get()`: `/etc/lsb-release` DISTRIB_DESCRIPTION, else the first release file found.
fn distro() -> String {
    if let Some(data) = read_small("/etc/lsb-release")
        && let Some(line) = data.lines().find(|l| l.starts_with("DISTRIB_DESCRIPTION="))
    {
        let v = &line[20..];
        return match v.strip_prefix('"') {
            Some(q) => q
                .rsplit_once('"')
                .map(|(a, _)| a)
                .unwrap_or(q)
                .replace('\\', ""),
            None => v.to_string(),
        };
    }
    let files = [
        ("", "/etc/redhat-release"),
        ("", "/etc/SuSE-release"),
        ("", "/etc/mandriva-release"),
        ("", "/etc/fedora-release"),
        ("", "/etc/sourcemage-release"),
        ("", "/etc/slackware-version"),
        ("", "/etc/gentoo-release"),
        ("Debian ", "/etc/debian_version"),
    ];
    for (prefix, f) in files {
        if let Some(data) = read_small(f) {
            return format!("{prefix}{}", data.split('\n').next().unwrap_or(""));
        }
    }
    String::new()
}

/// `filesystem_get()`: the mount type under a `/path/%u`-style mail_location.
fn filesystem(mail_location: &str) -> String {
    let path = match mail_location.split_once(':') {
        Some((_, rest)) => rest.split(':').next().unwrap_or(""),
        None => mail_location,
    };
    if path.starts_with('~') {
        return String::new();
    }
    let path = path.split('%').next().unwrap_or("");
    if path.len() <= 1 {
        return String::new();
    }
    mount_type(Path::new(path)).unwrap_or_default()
}

fn mount_type(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let mut found = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 3 {
            continue;
        }
        let dir = f[1].replace("\\040", " ");
        if std::fs::metadata(&dir).map(|m| m.dev()).ok() == Some(dev) {
            found = Some(f[2].to_string());
        }
    }
    found
}
