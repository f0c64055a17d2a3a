//! Postfix `master.cf`. (Placeholder interface: the grammar and the `postconf -M/-F/-P`
//! output are being written; see issue 2.)

use std::path::{Path, PathBuf};

use super::ConfigError;

/// One service entry (one logical line of master.cf).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterService {
    /// Service name, e.g. `smtp`, `submission`, `127.0.0.1:2525`.
    pub name: String,
    /// `inet`, `unix`, `unix-dgram`, `fifo` or `pass`.
    pub kind: String,
    pub private: String,
    pub unpriv: String,
    pub chroot: String,
    pub wakeup: String,
    pub maxproc: String,
    /// The command name (`smtpd`, `smtp`, `pipe`, …).
    pub command: String,
    /// Arguments after the command, `{ … }` groups already unwrapped into single arguments.
    pub args: Vec<String>,
    /// First physical line (1-based).
    pub line: usize,
}

impl MasterService {
    /// The `-o name=value` overrides, in order.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut it = self.args.iter();
        while let Some(a) = it.next() {
            let opt = if a == "-o" {
                it.next().cloned()
            } else {
                a.strip_prefix("-o").map(str::to_string)
            };
            if let Some(o) = opt
                && let Some((n, v)) = o.split_once('=')
            {
                out.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        out
    }
}

#[derive(Debug, Clone, Default)]
pub struct MasterCf {
    pub path: PathBuf,
    pub services: Vec<MasterService>,
    pub warnings: Vec<String>,
}

pub fn read(path: &Path) -> Result<MasterCf, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::open(path, e))?;
    parse(&text, path)
}

pub fn parse(_text: &str, path: &Path) -> Result<MasterCf, ConfigError> {
    Ok(MasterCf {
        path: path.to_path_buf(),
        ..Default::default()
    })
}
