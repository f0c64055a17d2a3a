//! The recorded IMAP transcripts of `compat-fixtures/imap/` (what the real Dovecot 2.3.19
//! answered, recorded by `scripts/regen-imap-fixtures`): a file of `C: N` / `S: N` records,
//! each a length line and that many bytes. Read by the unit tests of the reader, the login
//! stage and the session, and by the differential checks of `imapd::message::compat`.

/// The C:/S: records of a fixture file.
pub fn records(data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    let field = |i: &mut usize, prefix: &[u8]| -> Vec<u8> {
        assert_eq!(&data[*i..*i + 3], prefix);
        let nl = *i
            + data[*i..]
                .iter()
                .position(|&c| c == b'\n')
                .expect("length line");
        let n: usize = std::str::from_utf8(&data[*i + 3..nl])
            .expect("utf8")
            .parse()
            .expect("length");
        let v = data[nl + 1..nl + 1 + n].to_vec();
        *i = nl + 1 + n + 1;
        v
    };
    while i < data.len() {
        let c = field(&mut i, b"C: ");
        let s = field(&mut i, b"S: ");
        out.push((c, s));
    }
    out
}
