//! Bytes ↔ text for config files. Config files may hold non-UTF-8 bytes (Latin-1 comments,
//! old GECOS-style values). A file that is valid UTF-8 is read as such; any other file is read
//! byte-for-char (Latin-1), so every byte survives a parse → edit → write cycle unchanged.

/// How a file's bytes were turned into text, so they can be turned back exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Utf8,
    Latin1,
}

pub fn decode(bytes: &[u8]) -> (String, Encoding) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), Encoding::Utf8),
        Err(_) => (bytes.iter().map(|&b| b as char).collect(), Encoding::Latin1),
    }
}

pub fn encode(text: &str, enc: Encoding) -> Vec<u8> {
    match enc {
        Encoding::Utf8 => text.as_bytes().to_vec(),
        // Every char came from one byte (or is ASCII added by us), so this is lossless.
        Encoding::Latin1 => text
            .chars()
            .map(|c| {
                if (c as u32) < 256 {
                    c as u32 as u8
                } else {
                    b'?'
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn latin1_round_trip() {
        let raw = b"name = caf\xe9 \xff\n".to_vec();
        let (t, e) = decode(&raw);
        assert_eq!(e, Encoding::Latin1);
        assert_eq!(encode(&t, e), raw);
    }
    #[test]
    fn utf8_kept() {
        let (t, e) = decode("a = ü\n".as_bytes());
        assert_eq!(e, Encoding::Utf8);
        assert_eq!(t, "a = ü\n");
    }
}
