//! A small length-prefixed encoding for what travels between Postern's own processes (a
//! delivery request and its per-recipient results, a forked child's answer): each field is
//! a 4-byte little-endian length and its bytes. Only Postern reads what Postern writes, so
//! there is no versioning; a message that does not decode is refused whole.

/// Builds one message.
#[derive(Debug, Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn new() -> Enc {
        Enc(Vec::new())
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Enc {
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(&b[..len as usize]);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Enc {
        self.bytes(s.as_bytes())
    }

    pub fn u64(&mut self, n: u64) -> &mut Enc {
        self.str(&n.to_string())
    }
}

/// Reads one message, field by field.
#[derive(Debug)]
pub struct Dec<'a>(pub &'a [u8]);

impl<'a> Dec<'a> {
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let b = self.0.get(4..4usize.checked_add(len)?)?;
        self.0 = &self.0[4 + len..];
        Some(b)
    }

    pub fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.string()?.parse().ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A value that travels between Postern's processes.
pub trait Wire: Sized {
    fn put(&self, e: &mut Enc);
    fn get(d: &mut Dec<'_>) -> Option<Self>;
}

impl Wire for String {
    fn put(&self, e: &mut Enc) {
        e.str(self);
    }
    fn get(d: &mut Dec<'_>) -> Option<Self> {
        d.string()
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn put(&self, e: &mut Enc) {
        e.u64(self.len() as u64);
        for x in self {
            x.put(e);
        }
    }
    fn get(d: &mut Dec<'_>) -> Option<Self> {
        let n = d.u64()?;
        // Each element takes at least one field: never trust a count the data cannot hold.
        if n > d.0.len() as u64 {
            return None;
        }
        (0..n).map(|_| T::get(d)).collect()
    }
}

impl Wire for crate::log::Captured {
    fn put(&self, e: &mut Enc) {
        e.str(&self.severity)
            .str(&self.ident)
            .u64(u64::from(self.pid))
            .str(&self.text);
    }
    fn get(d: &mut Dec<'_>) -> Option<Self> {
        Some(crate::log::Captured {
            severity: d.string()?,
            ident: d.string()?,
            pid: u32::try_from(d.u64()?).ok()?,
            text: d.string()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_roundtrip_and_truncation_is_refused() {
        let v = vec!["a".to_string(), String::new(), "ü\0x".to_string()];
        let mut e = Enc::new();
        v.put(&mut e);
        e.u64(42);
        let mut d = Dec(&e.0);
        assert_eq!(Vec::<String>::get(&mut d), Some(v));
        assert_eq!(d.u64(), Some(42));
        assert!(d.is_empty());
        let cut = &e.0[..e.0.len() - 1];
        let mut d = Dec(cut);
        let _ = Vec::<String>::get(&mut d);
        assert_eq!(d.u64(), None);
        // A count larger than the data is refused, not allocated.
        let mut e = Enc::new();
        e.u64(u64::MAX);
        assert_eq!(Vec::<String>::get(&mut Dec(&e.0)), None);
    }
}
