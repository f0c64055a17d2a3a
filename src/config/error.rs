//! Typed configuration errors. Their `Display` text is what the admin reads, worded like the
//! real programs' messages (`/etc/postfix/main.cf, line 3: missing '=' after attribute name:
//! "…"`), so each variant carries the file and, where there is one, the line.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be opened or read: `open /etc/postfix/main.cf: No such file or directory`.
    #[error("open {}: {}", path.display(), strerror(source))]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A syntax or semantic error at a known line.
    #[error("{}, line {line}: {msg}", file.display())]
    AtLine {
        file: PathBuf,
        line: usize,
        msg: String,
    },
    /// An error that concerns a whole file.
    #[error("{}: {msg}", file.display())]
    InFile { file: PathBuf, msg: String },
    /// Anything else, already worded for the admin.
    #[error("{0}")]
    Other(String),
}

impl ConfigError {
    pub fn open(path: &Path, source: std::io::Error) -> Self {
        ConfigError::Open {
            path: path.to_path_buf(),
            source,
        }
    }
    pub fn at_line(file: &Path, line: usize, msg: impl Into<String>) -> Self {
        ConfigError::AtLine {
            file: file.to_path_buf(),
            line,
            msg: msg.into(),
        }
    }
}

/// The C library's text for an I/O error (`No such file or directory`), as Postfix and
/// Dovecot print it: std formats OS errors with glibc's `strerror_r`, so only Rust's
/// ` (os error 2)` suffix is dropped. An error that carries no OS code (a timeout Postern
/// measured itself) is worded as the C library words the matching `errno`, as the smtp
/// client's connect errors are (`connect to …: Connection timed out`).
pub fn strerror(e: &std::io::Error) -> String {
    if e.raw_os_error().is_none() {
        match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                return "Connection timed out".into();
            }
            std::io::ErrorKind::ConnectionRefused => return "Connection refused".into(),
            _ => {}
        }
    }
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}
