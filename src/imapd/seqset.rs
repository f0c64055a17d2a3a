//! Sequence sets (RFC 3501 §9 `sequence-set`): numbers, ranges in either order, `*`, and
//! `$` (SEARCHRES, RFC 5182), parsed and resolved as Dovecot 2.3's `imap_seq_set_parse`
//! and `imap_search_get_seqset` do: a message number beyond the mailbox (or `*` in an
//! empty one) is `BAD … Invalid messageset` for FETCH/STORE/COPY/MOVE, and nothing for
//! SEARCH; a UID set never fails (absent UIDs are ignored, `N:*` always holds the last
//! UID). Ranges are kept as given; memory is bounded by the command line.

use std::ops::RangeInclusive;

/// Dovecot's `BAD … Invalid messageset`: a message number the mailbox does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidMessageset;

/// One end of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqNum {
    Num(u32),
    /// `*`: the largest number in use.
    Star,
}

/// A parsed sequence set, or `$`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqSet {
    Ranges(Vec<(SeqNum, SeqNum)>),
    /// `$`: the result the last `SEARCH RETURN (SAVE)` saved.
    Saved,
}

fn num(s: &[u8]) -> Option<SeqNum> {
    if s == b"*" {
        return Some(SeqNum::Star);
    }
    if s.is_empty() || s.len() > 10 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v: u64 = std::str::from_utf8(s).ok()?.parse().ok()?;
    match u32::try_from(v) {
        Ok(n) if n > 0 => Some(SeqNum::Num(n)),
        _ => None,
    }
}

impl SeqSet {
    /// Parses `1:3,7,9:*` or `$`; `None` is Dovecot's "Invalid messageset".
    pub fn parse(s: &[u8]) -> Option<SeqSet> {
        if s == b"$" {
            return Some(SeqSet::Saved);
        }
        let mut ranges = Vec::new();
        for part in s.split(|&c| c == b',') {
            let mut it = part.splitn(2, |&c| c == b':');
            let a = num(it.next()?)?;
            let b = match it.next() {
                Some(x) => num(x)?,
                None => a,
            };
            ranges.push((a, b));
        }
        Some(SeqSet::Ranges(ranges))
    }

    /// Whether `s` looks like a sequence set (SEARCH tells a set from a key by this).
    pub fn looks_like(s: &[u8]) -> bool {
        s == b"$"
            || (!s.is_empty()
                && s.iter()
                    .all(|&c| c.is_ascii_digit() || matches!(c, b':' | b',' | b'*')))
    }

    /// Message-number ranges for a mailbox of `count` messages, normalized (low..=high).
    /// `Err(InvalidMessageset)` when a number is beyond `count` (Dovecot's Invalid messageset for
    /// FETCH/STORE/COPY); `saved` is what `$` stands for (message numbers).
    pub fn resolve_msgnums(
        &self,
        count: u32,
        saved: &[u32],
    ) -> Result<Vec<RangeInclusive<u32>>, InvalidMessageset> {
        match self {
            SeqSet::Saved => Ok(saved.iter().map(|&n| n..=n).collect()),
            SeqSet::Ranges(rs) => {
                let mut out = Vec::with_capacity(rs.len());
                for &(a, b) in rs {
                    let a = resolve(a, count);
                    let b = resolve(b, count);
                    if a == 0 || b == 0 || a > count || b > count {
                        return Err(InvalidMessageset);
                    }
                    out.push(a.min(b)..=a.max(b));
                }
                Ok(out)
            }
        }
    }

    /// Whether message `n` (or UID `n`) is in the set, with `*` = `last` (the mailbox's
    /// message count or its highest UID; 0 when empty). For SEARCH: numbers beyond the
    /// mailbox simply match nothing.
    pub fn contains(&self, n: u32, last: u32, saved: &[u32]) -> bool {
        match self {
            SeqSet::Saved => saved.binary_search(&n).is_ok(),
            SeqSet::Ranges(rs) => rs.iter().any(|&(a, b)| {
                let a = resolve(a, last);
                let b = resolve(b, last);
                (a.min(b)..=a.max(b)).contains(&n)
            }),
        }
    }
}

fn resolve(n: SeqNum, last: u32) -> u32 {
    match n {
        SeqNum::Num(v) => v,
        SeqNum::Star => last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_resolve() {
        let s = SeqSet::parse(b"1:3,7,9:*").unwrap();
        assert_eq!(s.resolve_msgnums(10, &[]), Ok(vec![1..=3, 7..=7, 9..=10]));
        assert_eq!(
            SeqSet::parse(b"5:2").unwrap().resolve_msgnums(5, &[]),
            Ok(vec![2..=5])
        );
        for bad in [&b"0"[..], b"1:0", b"x", b"", b"1,", b"4294967296", b"1::2"] {
            assert_eq!(SeqSet::parse(bad), None, "{bad:?}");
        }
        assert_eq!(SeqSet::parse(b"$"), Some(SeqSet::Saved));
    }

    #[test]
    fn empty_mailbox_as_dovecot() {
        // FETCH 1:4294967295 / 1 / * on an empty mailbox: BAD Invalid messageset.
        for s in [&b"1:4294967295"[..], b"1", b"*"] {
            assert_eq!(
                SeqSet::parse(s).unwrap().resolve_msgnums(0, &[]),
                Err(InvalidMessageset)
            );
        }
        // SEARCH 1:4294967295 and UID FETCH 1:* just find nothing.
        let s = SeqSet::parse(b"1:4294967295").unwrap();
        assert!(s.contains(4, 4, &[]));
        // N:* holds the last UID even when N is larger.
        assert!(SeqSet::parse(b"559:*").unwrap().contains(20, 20, &[]));
    }
}
