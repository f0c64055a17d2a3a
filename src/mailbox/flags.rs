//! Message flags: IMAP's system flags as a bit set ([`Flags`]), keywords as a set of
//! indexes into a folder's keyword list ([`KeywordSet`]), and how a STORE changes them
//! ([`FlagOp`]). \Recent is no stored flag (see [`super::folder::Message::recent`]).

/// The system flags a message keeps (RFC 3501 §2.3.2), as bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    pub const ANSWERED: Flags = Flags(1);
    pub const FLAGGED: Flags = Flags(2);
    pub const DELETED: Flags = Flags(4);
    pub const SEEN: Flags = Flags(8);
    pub const DRAFT: Flags = Flags(16);
    /// Every flag, in the order Dovecot lists them (`FLAGS (\Answered \Flagged \Deleted
    /// \Seen \Draft)`), with their IMAP names.
    pub const ALL: [(Flags, &'static str); 5] = [
        (Flags::ANSWERED, "\\Answered"),
        (Flags::FLAGGED, "\\Flagged"),
        (Flags::DELETED, "\\Deleted"),
        (Flags::SEEN, "\\Seen"),
        (Flags::DRAFT, "\\Draft"),
    ];

    pub const fn empty() -> Flags {
        Flags(0)
    }
    pub const fn bits(self) -> u8 {
        self.0
    }
    pub const fn from_bits(b: u8) -> Flags {
        Flags(b & 31)
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
    pub const fn difference(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }
    pub fn remove(&mut self, other: Flags) {
        self.0 &= !other.0;
    }

    /// The flag named `name` (`\Seen`, any case); `None` for anything else (`\Recent`
    /// included: it cannot be stored).
    pub fn from_name(name: &str) -> Option<Flags> {
        Flags::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(f, _)| *f)
    }

    /// The IMAP names of the flags set, in Dovecot's order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Flags::ALL
            .into_iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, n)| n)
    }

    /// Maildir's info letters (`D` draft, `F` flagged, `R` replied, `S` seen, `T`
    /// trashed), in ASCII order as Dovecot writes them.
    pub fn maildir_letters(self) -> String {
        let mut s = String::new();
        for (f, c) in [
            (Flags::DRAFT, 'D'),
            (Flags::FLAGGED, 'F'),
            (Flags::ANSWERED, 'R'),
            (Flags::SEEN, 'S'),
            (Flags::DELETED, 'T'),
        ] {
            if self.contains(f) {
                s.push(c);
            }
        }
        s
    }

    /// The flag of a Maildir info letter.
    pub fn from_maildir_letter(c: char) -> Option<Flags> {
        Some(match c {
            'D' => Flags::DRAFT,
            'F' => Flags::FLAGGED,
            'R' => Flags::ANSWERED,
            'S' => Flags::SEEN,
            'T' => Flags::DELETED,
            _ => return None,
        })
    }
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// How a STORE changes flags and keywords (`+FLAGS`, `-FLAGS`, `FLAGS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

/// A set of keywords: indexes into a folder's keyword list
/// ([`super::folder::Folder::keywords`]). The first 64 are bits of one word; a folder
/// with more keywords spills into a boxed vector.
#[derive(Clone, Default)]
pub struct KeywordSet {
    low: u64,
    high: Option<Box<[u64]>>,
}

impl PartialEq for KeywordSet {
    fn eq(&self, other: &KeywordSet) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for KeywordSet {}

impl KeywordSet {
    pub const fn new() -> KeywordSet {
        KeywordSet { low: 0, high: None }
    }

    pub fn is_empty(&self) -> bool {
        self.low == 0 && self.high.as_ref().is_none_or(|h| h.iter().all(|w| *w == 0))
    }

    pub fn contains(&self, i: usize) -> bool {
        if i < 64 {
            return self.low & (1 << i) != 0;
        }
        let (w, b) = ((i - 64) / 64, (i - 64) % 64);
        self.high
            .as_ref()
            .and_then(|h| h.get(w))
            .is_some_and(|x| x & (1 << b) != 0)
    }

    pub fn insert(&mut self, i: usize) {
        if i < 64 {
            self.low |= 1 << i;
            return;
        }
        let (w, b) = ((i - 64) / 64, (i - 64) % 64);
        let h = self.high.get_or_insert_with(Default::default);
        if h.len() <= w {
            let mut v = h.to_vec();
            v.resize(w + 1, 0);
            *h = v.into_boxed_slice();
        }
        h[w] |= 1 << b;
    }

    pub fn remove(&mut self, i: usize) {
        if i < 64 {
            self.low &= !(1 << i);
        } else if let Some(h) = self.high.as_mut() {
            let (w, b) = ((i - 64) / 64, (i - 64) % 64);
            if let Some(x) = h.get_mut(w) {
                *x &= !(1 << b);
            }
        }
    }

    /// The indexes in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        let words =
            std::iter::once(self.low).chain(self.high.as_deref().unwrap_or(&[]).iter().copied());
        words.enumerate().flat_map(|(wi, w)| {
            (0..64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| wi * 64 + b)
        })
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// The set with `other`'s members added.
    pub fn union(&self, other: &KeywordSet) -> KeywordSet {
        let mut s = self.clone();
        for i in other.iter() {
            s.insert(i);
        }
        s
    }

    /// The set without `other`'s members.
    pub fn difference(&self, other: &KeywordSet) -> KeywordSet {
        let mut s = self.clone();
        for i in other.iter() {
            s.remove(i);
        }
        s
    }
}

impl std::fmt::Debug for KeywordSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<usize> for KeywordSet {
    fn from_iter<T: IntoIterator<Item = usize>>(iter: T) -> Self {
        let mut s = KeywordSet::new();
        for i in iter {
            s.insert(i);
        }
        s
    }
}

/// Whether `name` may be a keyword: an IMAP atom (RFC 3501 `flag-keyword`), not a
/// system flag, at most 255 bytes (Dovecot's `mail_max_keyword_length`, 50 by default,
/// is the IMAP layer's to enforce).
pub fn valid_keyword(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('\\')
        && name.bytes().all(|b| {
            b > 0x20
                && b < 0x7f
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_names_and_letters() {
        let f = Flags::SEEN.union(Flags::DRAFT).union(Flags::ANSWERED);
        assert_eq!(
            f.names().collect::<Vec<_>>(),
            ["\\Answered", "\\Seen", "\\Draft"]
        );
        assert_eq!(f.maildir_letters(), "DRS");
        assert_eq!(Flags::from_name("\\seen"), Some(Flags::SEEN));
        assert_eq!(Flags::from_name("\\Recent"), None);
        assert!(
            "DFRST"
                .chars()
                .all(|c| Flags::from_maildir_letter(c).is_some())
        );
    }

    #[test]
    fn keyword_sets_spill_past_64() {
        let mut s = KeywordSet::new();
        s.insert(3);
        s.insert(70);
        s.insert(200);
        assert!(s.contains(70) && s.contains(3) && !s.contains(4));
        assert_eq!(s.iter().collect::<Vec<_>>(), [3, 70, 200]);
        s.remove(70);
        assert_eq!(s.iter().collect::<Vec<_>>(), [3, 200]);
        let t: KeywordSet = [3usize].into_iter().collect();
        assert_eq!(s.difference(&t).iter().collect::<Vec<_>>(), [200]);
        assert!(KeywordSet::new().is_empty());
        assert!(valid_keyword("$Forwarded") && !valid_keyword("a b") && !valid_keyword("\\Seen"));
    }
}
