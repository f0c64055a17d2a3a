//! The recorded IMAP transcripts of `compat-fixtures/imap/` (what the real Dovecot 2.3.19
//! answered, recorded by `scripts/regen-imap-fixtures`): a file of `C: N` / `S: N` records,
//! each a length line and that many bytes. Read by the unit tests of the reader, the login
//! stage and the session, and by the differential checks of `imapd::message::compat`; with
//! the one normaliser of replies compared with Dovecot's ([`normalize`], also `tests/imap.rs`'s).

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

/// A reply's lines normalized for comparing two servers' answers (`tests/imap.rs` live,
/// the unit tests' replay of `session.txt`): timings, UIDVALIDITY/APPENDUID/COPYUID/
/// HIGHESTMODSEQ and MODSEQ values (Postern's MODSEQs are its own,
/// `man/postern-mailbox.5`), capability lists (Postern leaves out what it does not
/// serve), and the order of LIST/LSUB/STATUS lines (readdir order on Dovecot's side).
pub fn normalize(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut list_block: Vec<String> = Vec::new();
    let re = |s: &str| -> String {
        let mut s = s.to_string();
        if let Some(p) = s.find(" (0.")
            && let Some(e) = s[p..].find("secs)")
        {
            s.replace_range(p..p + e + 5, "");
        }
        for key in ["UIDVALIDITY ", "APPENDUID ", "COPYUID ", "HIGHESTMODSEQ "] {
            let mut from = 0;
            while let Some(i) = s[from..].find(key) {
                let st = from + i + key.len();
                let end = st + s[st..].bytes().take_while(u8::is_ascii_digit).count();
                s.replace_range(st..end, "N");
                from = st + 1;
            }
        }
        let mut from = 0;
        while let Some(i) = s[from..].find("MODSEQ (") {
            let st = from + i + 8;
            let end = st + s[st..].bytes().take_while(u8::is_ascii_digit).count();
            s.replace_range(st..end, "N");
            from = st + 1;
        }
        if let Some(i) = s.find("[CAPABILITY ")
            && let Some(e) = s[i..].find(']')
        {
            s.replace_range(i..i + e + 1, "[CAPABILITY …]");
        }
        if s.starts_with("* CAPABILITY ") {
            s = "* CAPABILITY …".into();
        }
        // Documented difference (imapd(8)): Dovecot adds \Marked/\UnMarked to an mbox
        // folder file only while its list index is being refreshed (in the session that
        // changed the folder); Postern never does, as Dovecot's fresh sessions.
        if s.starts_with("* LIST ") {
            s = s.replace(" \\Marked", "").replace(" \\UnMarked", "");
        }
        s
    };
    for l in lines {
        let l = re(l);
        if l.starts_with("* LIST ") || l.starts_with("* LSUB ") || l.starts_with("* STATUS ") {
            list_block.push(l);
            continue;
        }
        list_block.sort();
        out.append(&mut list_block);
        out.push(l);
    }
    list_block.sort();
    out.append(&mut list_block);
    out
}
