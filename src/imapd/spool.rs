//! Where an APPENDed message waits until the store takes it: in memory up to 1 MiB, then
//! in an unlinked temporary file (`O_TMPFILE` under `/var/tmp`) that is mapped into
//! memory ([`crate::sys::mem::MappedFile`]) when the message is complete, so a large message costs page cache, not heap
//! (Dovecot streams APPEND literals into the mailbox's own temporary file the same way).

use std::fs::File;
use std::io::Write;

/// In-memory size beyond which the message goes to a file.
const MEM_LIMIT: usize = 1 << 20;

pub(crate) enum Spool {
    Mem(Vec<u8>),
    File { file: File, len: usize },
    Mapped(crate::sys::mem::MappedFile),
}

impl Default for Spool {
    fn default() -> Self {
        Spool::Mem(Vec::new())
    }
}

fn temp_file() -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::var_os("TMPDIR")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| {
            let v = std::path::PathBuf::from("/var/tmp");
            if v.is_dir() { v } else { std::env::temp_dir() }
        });
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&dir)
        .or_else(|_| {
            // No O_TMPFILE on this file system: a named file, unlinked at once.
            let name = dir.join(format!(
                ".postern-append.{}.{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&name)?;
            let _ = std::fs::remove_file(&name);
            Ok(f)
        })
}

impl Spool {
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Spool::Mem(v) => {
                if v.len() + data.len() <= MEM_LIMIT {
                    v.extend_from_slice(data);
                    return Ok(());
                }
                let mut file = temp_file()?;
                file.write_all(v)?;
                file.write_all(data)?;
                let len = v.len() + data.len();
                *self = Spool::File { file, len };
                Ok(())
            }
            Spool::File { file, len } => {
                file.write_all(data)?;
                *len += data.len();
                Ok(())
            }
            Spool::Mapped(_) => Err(std::io::Error::other("spool already complete")),
        }
    }

    /// The message complete: a file is mapped so that [`bytes`](Self::bytes) can see it.
    pub fn finish(self) -> std::io::Result<Spool> {
        match self {
            Spool::File { file, len } => {
                if len == 0 {
                    return Ok(Spool::Mem(Vec::new()));
                }
                // Nothing writes the file after this: the spool is complete and the
                // mapping takes the only handle of an unlinked file.
                Ok(Spool::Mapped(crate::sys::mem::MappedFile::map(file, len)?))
            }
            other => Ok(other),
        }
    }

    /// The bytes of a finished spool.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Spool::Mem(v) => v,
            Spool::File { .. } => &[],
            Spool::Mapped(m) => m.bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_messages_go_to_a_mapped_file() {
        let mut s = Spool::default();
        let chunk = vec![b'x'; 300 * 1024];
        for _ in 0..5 {
            s.write(&chunk).expect("write");
        }
        s.write(b"end").expect("write");
        assert!(matches!(s, Spool::File { .. }));
        let s = s.finish().expect("finish");
        let b = s.bytes();
        assert_eq!(b.len(), 5 * 300 * 1024 + 3);
        assert!(b.ends_with(b"xend"));
        let mut small = Spool::default();
        small.write(b"hello").expect("write");
        assert_eq!(small.finish().expect("finish").bytes(), b"hello");
    }
}
