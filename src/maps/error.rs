//! Lookup-table errors, worded as Postfix words them (`open database /etc/postfix/access.db:
//! No such file or directory`, `regexp map /etc/postfix/x, line 3: …`).

use std::path::{Path, PathBuf};

use crate::config::error::strerror;

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// A table file could not be opened: `open database FILE: No such file or directory`.
    #[error("open database {}: {}", path.display(), strerror(source))]
    OpenDatabase {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A plain file could not be opened or read: `open FILE: …`.
    #[error("open {}: {}", path.display(), strerror(source))]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A fatal error at a known line of a table file.
    #[error("{}, line {line}: {msg}", file.display())]
    AtLine {
        file: PathBuf,
        line: usize,
        msg: String,
    },
    /// The table could not answer this lookup (Postfix `DICT_ERR_RETRY`). An empty `msg`
    /// (the `fail:` table) logs nothing of its own.
    #[error("table {spec}: lookup error: {msg}")]
    Lookup { spec: String, msg: String },
    /// The table could not be opened: every lookup fails, in the words of Postfix's
    /// `dict_surrogate.c` (`hash:/etc/postfix/access is unavailable. open database
    /// /etc/postfix/access: No such file or directory`).
    #[error("{spec} is unavailable. {reason}")]
    Unavailable { spec: String, reason: String },
    /// Anything else, already worded for the admin.
    #[error("{0}")]
    Other(String),
}

impl MapError {
    /// The warning the table itself logs when a lookup fails (Postfix's surrogate logs
    /// `… is unavailable. …` on each lookup; `fail:` logs nothing).
    pub fn table_warning(&self) -> Option<String> {
        match self {
            MapError::Lookup { msg, .. } if msg.is_empty() => None,
            other => Some(other.to_string()),
        }
    }
    pub fn open(path: &Path, source: std::io::Error) -> Self {
        MapError::Open {
            path: path.to_path_buf(),
            source,
        }
    }
    pub fn open_database(path: &Path, source: std::io::Error) -> Self {
        MapError::OpenDatabase {
            path: path.to_path_buf(),
            source,
        }
    }
}
