//! Queue IDs in Postfix's two formats (`get_mail_queue_id()` in Postfix's `mail_queue.c`,
//! macros in `mail_queue.h`).
//!
//! * short (`enable_long_queue_ids = no`): the microseconds of the time of day as five
//!   upper-case hex digits, then the queue file's inode number in hex: `98E8398C186` is
//!   µs `0x98E83`, inode `0x98C186`.
//! * long (`enable_long_queue_ids = yes`): seconds in base 52 (six digits), microseconds in
//!   base 52 (four digits), `z`, then the inode number in base 51 — `4jcBmg5NZzz1SRsB`. The
//!   alphabet is digits and consonants (Postfix's `safe_ultostr()`); the inode part cannot
//!   contain `z`, which is what makes the separator findable.
//!
//! As Postfix, the inode part is the inode number of the queue file: [`super::Queue::new_queue_id`]
//! creates the (empty) file under a temporary name in `incoming/` when it hands the ID out
//! (smtpd logs it at the first accepted RCPT; the group-commit thread writes that file
//! later), so the ID is unique among live queue files without looking in any queue
//! directory, and `postsuper -s` finds names that match their inodes. A process that may not
//! create files in `incoming/`, and writers that name their own file (bounces, sendmail's
//! maildrop file: [`super::Queue::new_queue_id_unfiled`]), get a per-process counter in the
//! range of real inode numbers instead, checked against the queue files of that name; a
//! rename (or name) that refuses to replace an existing file guards the commit in both
//! cases.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A queue ID, e.g. `3F2A81C0B2` (short form) or `4jcBmg5NZzz1SRsB` (long form).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(String);

impl QueueId {
    /// Wrap an existing ID, checking it has only characters Postfix's `mail_queue_id_ok()`
    /// accepts (letters and digits), so it is safe as a file name.
    pub fn parse(s: &str) -> Option<QueueId> {
        if !s.is_empty() && s.len() <= 100 && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Some(QueueId(s.to_string()))
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the long form (has the `z` separator after the ten time digits).
    pub fn is_long(&self) -> bool {
        self.0.len() > 10 && self.0[10..].starts_with('z')
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for QueueId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Postfix's "safe" alphabet: digits and consonants, so that no word is spelled.
const SAFE_CHARS: &[u8; 52] = b"0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz";

/// `safe_ultostr()`: `val` in `base` (≤ 52), most significant digit first, left-padded with
/// `0` to `pad` digits.
fn safe_ultostr(mut val: u64, base: u64, pad: usize) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(SAFE_CHARS[(val % base) as usize]);
        val /= base;
        if val == 0 {
            break;
        }
    }
    while digits.len() < pad {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8_lossy(&digits).into_owned()
}

/// Build a queue ID from a time and an inode-like number.
pub fn format_queue_id(now: SystemTime, inum: u64, long: bool) -> QueueId {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let usec = u64::from(d.subsec_micros());
    if long {
        QueueId(format!(
            "{}{}z{}",
            safe_ultostr(d.as_secs(), 52, 6),
            safe_ultostr(usec, 52, 4),
            safe_ultostr(inum, 51, 0)
        ))
    } else {
        QueueId(format!("{usec:05X}{inum:X}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn short_form_matches_postfix() {
        // Seen with Postfix 3.7.11: file inode 10011014 (0x98C186), µs 626307 (0x98E83).
        let t = UNIX_EPOCH + Duration::new(1_795_874_445, 626_307_000);
        assert_eq!(
            format_queue_id(t, 10_011_014, false).as_str(),
            "98E8398C186"
        );
    }

    #[test]
    fn long_form_matches_postfix() {
        // Seen with Postfix 3.7.11 (enable_long_queue_ids = yes): 4jcBmg5NZzz1SRsB for
        // seconds 1795874531, µs 758731, inode 10010953.
        let t = UNIX_EPOCH + Duration::new(1_795_874_531, 758_731_000);
        let id = format_queue_id(t, 10_010_953, true);
        assert_eq!(id.as_str(), "4jcBmg5NZzz1SRsB");
        assert!(id.is_long());
    }

    #[test]
    fn parse_rejects_paths() {
        assert!(QueueId::parse("../etc").is_none());
        assert!(QueueId::parse(".tmp").is_none());
        assert!(QueueId::parse("98E8398C186").is_some());
    }
}
