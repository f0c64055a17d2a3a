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

/// A diagnostic as Postfix prints it (`msg_output.c` passes every message through
/// `printable()`): each byte that is not printable ASCII (control characters, tabs,
/// non-ASCII bytes) becomes `?`. `enc` says how many bytes a character had in the file, so
/// `é` from a UTF-8 file is `??` and from a Latin-1 file `?`, as with the real program.
pub fn printable(msg: &str, enc: Encoding) -> String {
    let mut out = String::with_capacity(msg.len());
    for c in msg.chars() {
        if (' '..='~').contains(&c) {
            out.push(c);
        } else {
            let n = match enc {
                Encoding::Latin1 if (c as u32) < 256 => 1,
                _ => c.len_utf8(),
            };
            out.extend(std::iter::repeat_n('?', n));
        }
    }
    out
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
    fn printable_like_postfix() {
        assert_eq!(printable("a\u{e9}\tb\u{1}", Encoding::Utf8), "a???b?");
        assert_eq!(printable("a\u{e9}\u{ff}", Encoding::Latin1), "a??");
    }
    #[test]
    fn utf8_kept() {
        let (t, e) = decode("a = ü\n".as_bytes());
        assert_eq!(e, Encoding::Utf8);
        assert_eq!(t, "a = ü\n");
    }
}
