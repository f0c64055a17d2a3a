//! The header cache of a folder (Dovecot's `dovecot.index.cache` idea): `postern.cache`
//! beside `postern.index` keeps each message's header as `FETCH BODY[HEADER]` sends it,
//! by UID, so header fetches, ENVELOPE and SORT read one file instead of opening every
//! message (Maildir) or seeking through the mbox, in this session and the next ones.
//!
//! A message's bytes never change once it has its UID, so an entry is never stale while
//! the UIDVALIDITY is the same: a Maildir message's file is never rewritten, and an mbox
//! rewritten (by Postern, Dovecot or mutt: flags, expunges) moves messages but keeps
//! each one's UID (`X-UID`) and visible bytes; entries are keyed by UID, not by offset,
//! as Dovecot's cache is. An mbox message's entry also carries the message's size, and
//! an entry whose size is not the message's (the message was edited in place, keeping
//! its `X-UID`) is not used. The file is read whole when the folder is first asked
//! for a header (never through a symlink, at most [`MAX_FILE`] bytes); a file that does
//! not parse, or has another UIDVALIDITY, is ignored and rebuilt; the headers are held
//! only while a command runs. New entries are written
//! at the end of the command that read them: the whole file anew, with the live
//! messages only, renamed over the old one as the mail user. Format: a line
//! `POSTERN-CACHE 2 UIDVALIDITY`, then per message a line `UID LENGTH SIZE` (`SIZE`:
//! the message's RFC822.SIZE, or `-` when not known, as for a Maildir message whose
//! size was not asked for) and the header's bytes. A version 1 file (Maildir only, no
//! sizes) is read as one with no sizes.

use std::collections::HashMap;

/// The file's name in the folder's index directory.
pub const FILE: &str = "postern.cache";

/// Larger files are ignored (and not written).
pub const MAX_FILE: u64 = 256 << 20;

/// A cached header and the size of its message when known.
type Entry = (Option<u64>, Vec<u8>);

/// One folder's cached headers.
#[derive(Debug, Default)]
pub struct HeaderCache {
    loaded: bool,
    uid_validity: u32,
    headers: HashMap<u32, Entry>,
    /// Entries added since the file was read or written.
    dirty: bool,
}

impl HeaderCache {
    /// Parses the file's bytes; `None` when they are not a cache of `uid_validity`.
    fn parse(data: &[u8], uid_validity: u32) -> Option<HashMap<u32, Entry>> {
        let mut pos = data.iter().position(|&b| b == b'\n')? + 1;
        let first = std::str::from_utf8(&data[..pos - 1]).ok()?;
        let mut w = first.split(' ');
        if w.next()? != "POSTERN-CACHE" {
            return None;
        }
        let sized = match w.next()? {
            "1" => false,
            "2" => true,
            _ => return None,
        };
        if w.next()?.parse::<u32>().ok()? != uid_validity {
            return None;
        }
        let mut map = HashMap::new();
        while pos < data.len() {
            let end = pos + data[pos..].iter().position(|&b| b == b'\n')?;
            let line = std::str::from_utf8(&data[pos..end]).ok()?;
            let mut w = line.split(' ');
            let (uid, len): (u32, usize) = (w.next()?.parse().ok()?, w.next()?.parse().ok()?);
            let size = match (sized, w.next()) {
                (false, None) | (true, Some("-")) => None,
                (true, Some(n)) => Some(n.parse().ok()?),
                (false, Some(_)) | (true, None) => return None,
            };
            if w.next().is_some() {
                return None;
            }
            let start = end + 1;
            let stop = start.checked_add(len)?;
            if stop > data.len() {
                return None;
            }
            map.insert(uid, (size, data[start..stop].to_vec()));
            pos = stop;
        }
        Some(map)
    }

    /// The header of `uid`, reading the file on first use. An entry whose message size
    /// is not the message's now is not used.
    pub fn get(&mut self, folder: &crate::mailbox::Folder, uid: u32) -> Option<&[u8]> {
        self.load(folder);
        let (size, h) = self.headers.get(&uid)?;
        match (size, folder.get(uid)) {
            (Some(s), Some(m)) if m.size_known() && m.size != *s => None,
            _ => Some(h.as_slice()),
        }
    }

    fn load(&mut self, folder: &crate::mailbox::Folder) {
        let validity = folder.uid_validity();
        if self.loaded && self.uid_validity == validity {
            return;
        }
        self.loaded = true;
        self.uid_validity = validity;
        self.dirty = false;
        self.headers = folder
            .read_cache_file(FILE, MAX_FILE)
            .and_then(|d| Self::parse(&d, validity))
            .unwrap_or_default();
    }

    /// Remember the header of `uid` (written by [`save`](Self::save)).
    pub fn put(&mut self, folder: &crate::mailbox::Folder, uid: u32, header: &[u8]) {
        self.load(folder);
        let size = folder.get(uid).filter(|m| m.size_known()).map(|m| m.size);
        self.headers.insert(uid, (size, header.to_vec()));
        self.dirty = true;
    }

    /// Write the file if entries were added (the folder's live messages' only), and
    /// let go of the headers held: a session does not keep a folder's headers in
    /// memory between commands (the next one reads the file again).
    pub fn save(&mut self, folder: &crate::mailbox::Folder) -> std::io::Result<()> {
        let r = self.write(folder);
        self.loaded = false;
        self.headers = HashMap::new();
        r
    }

    fn write(&mut self, folder: &crate::mailbox::Folder) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        let live: std::collections::HashSet<u32> = folder
            .messages()
            .iter()
            .filter(|m| !m.expunged)
            .map(|m| m.uid)
            .collect();
        self.headers.retain(|u, _| live.contains(u));
        let mut uids: Vec<u32> = self.headers.keys().copied().collect();
        uids.sort_unstable();
        let mut out = format!("POSTERN-CACHE 2 {}\n", self.uid_validity).into_bytes();
        for u in uids {
            let (size, h) = &self.headers[&u];
            let size = size.map_or("-".to_string(), |s| s.to_string());
            out.extend_from_slice(format!("{u} {} {size}\n", h.len()).as_bytes());
            out.extend_from_slice(h);
        }
        if out.len() as u64 > MAX_FILE {
            return Ok(());
        }
        folder.write_cache_file(FILE, &out)
    }
}

/// A message's header with the empty line that ends it (the whole message when it has
/// no body).
pub fn header_only(raw: &[u8]) -> &[u8] {
    let mut pos = 0;
    while let Some(e) = raw[pos..].iter().position(|&b| b == b'\n') {
        let line = &raw[pos..pos + e + 1];
        pos += e + 1;
        if line == b"\n" || line == b"\r\n" {
            return &raw[..pos];
        }
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_writes_and_refuses_the_rest() {
        let data = b"POSTERN-CACHE 1 7\n3 5\nA: b\n10 0\n";
        let m = HeaderCache::parse(data, 7).expect("parsed");
        assert_eq!(m[&3], (None, b"A: b\n".to_vec()));
        assert_eq!(m[&10], (None, Vec::new()));
        assert!(HeaderCache::parse(data, 8).is_none(), "other UIDVALIDITY");
        let v2 = b"POSTERN-CACHE 2 7\n3 5 120\nA: b\n10 0 -\n";
        let m = HeaderCache::parse(v2, 7).expect("parsed");
        assert_eq!(m[&3], (Some(120), b"A: b\n".to_vec()));
        assert_eq!(m[&10], (None, Vec::new()));
        assert!(HeaderCache::parse(b"POSTERN-CACHE 2 7\n3 5\nA: b\n", 7).is_none());
        assert!(HeaderCache::parse(b"POSTERN-CACHE 1 7\n3 5 9\nA: b\n", 7).is_none());
        assert!(HeaderCache::parse(b"POSTERN-CACHE 3 7\n", 7).is_none());
        assert!(HeaderCache::parse(b"POSTERN-CACHE 1 7\n3 50\nA: b\n", 7).is_none());
        assert!(HeaderCache::parse(b"junk", 7).is_none());
        assert!(HeaderCache::parse(b"POSTERN-CACHE 1 7\n3 x\n", 7).is_none());
        assert_eq!(header_only(b"A: b\r\n\r\nbody"), b"A: b\r\n\r\n");
    }
}
