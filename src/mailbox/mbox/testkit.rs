//! What the mbox tests share: boxes as Postfix and Dovecot leave them and odd ones, the
//! rewrite's plan as [`MboxBox::update`] makes it, the streaming rewrite checked against
//! the whole-buffer one, and POP3's UPDATE state on a box.

use super::index::*;
use super::meta::*;
use super::rewrite::*;
use super::scan::*;
use super::*;
use crate::mailbox::flags::Flags;
use std::collections::{HashMap, HashSet};

/// `peek` over a byte slice (for [`scan`] of test data).
pub(super) fn peek_of(data: &[u8]) -> impl Fn(u64, &mut [u8]) -> usize + '_ {
    move |off: u64, buf: &mut [u8]| {
        let off = (off as usize).min(data.len());
        let n = buf.len().min(data.len() - off);
        buf[..n].copy_from_slice(&data[off..off + n]);
        n
    }
}

/// POP3's UPDATE state on a box: the messages at `seen` get \Seen (`Status: RO`),
/// those at `gone` are deleted.
pub(super) fn commit(mb: &mut MboxBox, gone: &[usize], seen: &[usize]) {
    let mut ch: HashMap<u32, MboxFlags> = HashMap::new();
    for &i in seen {
        let m = &mb.messages[i];
        if gone.contains(&i) || m.flags.contains(Flags::SEEN) {
            continue;
        }
        let names = m.keywords.iter().map(|k| mb.keywords[k].clone()).collect();
        ch.insert(m.uid, (m.flags.union(Flags::SEEN), true, names));
    }
    let ex: HashSet<u32> = gone.iter().map(|&i| mb.messages[i].uid).collect();
    mb.update(&ch, &ex, true).expect("update");
}

/// The plan [`MboxBox::update`] makes: messages at `read` get \Seen (and, every
/// second one, the keyword `work`), those not kept go, UIDs are given where missing.
/// Returns (UIDVALIDITY, last UID, UIDs, base keywords, metadata).
pub(super) fn plan_parts(
    raws: &[Raw],
    read: &[bool],
) -> (u32, u32, Vec<u32>, String, Vec<Option<Meta>>) {
    let (validity, last, uids, _) = assign_uids(raws, Some(1_700_000_000));
    let mut metas = Vec::new();
    let mut extra: Vec<String> = Vec::new();
    for (i, (r, &u)) in raws.iter().zip(&uids).enumerate() {
        let reading = read.get(i).copied().unwrap_or(false) && !r.flags.contains(Flags::SEEN);
        let m = if r.pseudo {
            None
        } else if reading {
            let mut k = r.keywords.clone();
            if i % 2 == 1 && !k.iter().any(|x| x == "work") {
                k.push("work".into());
                extra.push("work".into());
            }
            Some(Meta {
                uid: u,
                flags: Some((r.flags.union(Flags::SEEN), true, k)),
            })
        } else if r.uid != Some(u) {
            Some(Meta {
                uid: u,
                flags: None,
            })
        } else {
            None
        };
        metas.push(m);
    }
    let rest = raws
        .first()
        .map(|r| r.imapbase_rest.clone())
        .unwrap_or_default();
    let base = keyword_list(&rest, extra.iter()).join(" ");
    (validity, last, uids, base, metas)
}

pub(super) const PSEUDO: &str = "From MAILER-DAEMON  Sat Nov 28 09:00:00 2026\nDate: Sat, 28 Nov 2026 09:00:00 +0000\nFrom: Mail System Internal Data <MAILER-DAEMON@host>\nSubject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\nX-IMAP: 1700000000 0000000003\nStatus: RO\n\nThis text is part of the internal format of your mail folder.\n\nFrom a  Sat Nov 28 10:00:00 2026\nSubject: x\nX-UID: 3\n\nbody\n\nFrom b  Sat Nov 28 10:01:00 2026\nSubject: y\n\nnew\n\n";

/// Mboxes for the in-place rewrite: as Postfix and Dovecot leave them, and odd ones.
pub(super) fn rewrite_cases() -> Vec<Vec<u8>> {
    // A header larger than the rewrite's buffer, in many lines and in one.
    let many: String = (0..3000)
        .map(|i| format!("X-Trace-{i}: hop {i}\n"))
        .collect();
    let one = format!("X-Long: {}\n", "y".repeat(REWRITE_BUFFER + 100));
    let body: String = (0..2000)
        .map(|i| format!("line {i} of the body\n"))
        .collect();
    let mut cases: Vec<Vec<u8>> = vec![
        BOX.to_vec(),
        PSEUDO.as_bytes().to_vec(),
        b"".to_vec(),
        b"no message here\n".to_vec(),
        b"garbage\nFrom a  x\nSubject: x\n\nbody\nFrom inside\nend".to_vec(),
        // Truncated: in the header, in the From line, in the body.
        b"From a  x\nSubject: x\n\nbody\n\nFrom b  y\nSubject: y".to_vec(),
        b"From a  x\nSubject: x\n\nbody\n\nFrom b".to_vec(),
        b"From a  x\nSubject: x\n\nbody\n\nFrom b  y\nSubject: y\n\nhalf a li".to_vec(),
        b"From a  x\nSubject: x\n\nbody\n".to_vec(),
        b"From a  x\nSubject: x\n\nbody".to_vec(),
        b"From a\n".to_vec(),
        b"From a\n\n".to_vec(),
        b"From a\nS: 1\n\n\n".to_vec(),
        b"From a  x\n\nFrom b  y\n\n\n\nFrom c\n\n".to_vec(),
        b"From a  x\n\nbody only\n\nFrom b  y\nSubject: y\n\n\n\nblank lines\n\n\n".to_vec(),
        // CRLF line ends throughout.
        b"From a  x\r\nSubject: x\r\nX-UID: 3\r\n\r\nbody\r\n\r\nFrom b  y\r\nSubject: y\r\nStatus: O\r\n\r\nz\r\n\r\n".to_vec(),
        b"From a  x\r\nSubject: x\r\n\r\nbody\r\n\r\nFrom b  y\r\nSubject: y\r\n\r\nz".to_vec(),
        // A header the end of the file cut in a lone CR.
        b"From a  x\nSubject: x\n\nbody\n\nFrom b  y\nSubject: y\nX-UID: 9\n\r".to_vec(),
        b"From a  x\n\r".to_vec(),
        // Metadata: Dovecot's, stale, out of order, with continuation lines.
        b"From a  x\nSubject: x\nX-IMAPbase: 1795876603 0000000007 $Junk work\nX-UID: 7         \nStatus: RO\nX-Keywords: work\n\nbody\n\nFrom b  y\nSubject: y\n\nnew\n\n".to_vec(),
        b"From a  x\nSubject: x\nStatus: O\nX-IMAPbase: 1795876603 0000000009\nX-UID: 4\n\nbody\n\nFrom b  y\nStatus: RO\nX-UID: 9\n\nold\n\nFrom c  z\nX-UID: 5\nStatus: R\n\nstale uid\n\n".to_vec(),
        b"From a  x\nX-IMAPbase: 1 0000000002\n\tcontinued\nX-UID: 2\nX-Keywords: a\n b\nStatus: RO\n\tmore\nSubject: x\n\nbody\n\nFrom b  y\nX-UID: 1\n\nlower uid\n".to_vec(),
        b"From a  x\nX-IMAP: 5 0000000001\nSubject: x\n\nnot first, so no pseudo\n\nFrom b  y\nX-IMAP: 6 0000000002\n\nsecond\n\n".to_vec(),
        format!("From a  x\nSubject: big\n{many}\n{body}\nFrom b  y\n{one}Subject: long\n\n{body}\nFrom c  z\nSubject: c\n\n{body}").into_bytes(),
        format!("From a  x\nSubject: big\n{many}{one}").into_bytes(),
    ];
    // Metadata as this rewrite leaves it: unchanged unless messages go or are read;
    // the last message without its final newline, then with it.
    let stable = "From a  x\nSubject: x\nStatus: O\nX-IMAPbase: 5 0000000002\nX-UID: 1\n\nbody\n\nFrom b  y\nStatus: O\nX-UID: 2\n\nend";
    cases.push(stable.as_bytes().to_vec());
    cases.push(format!("{stable}\n\n").into_bytes());
    cases.push(format!("{stable}\n\nFrom c  z\nSubject: new\n\nc\n\n").into_bytes());
    // Many messages, some already with metadata, some seen.
    let mut big = String::from("prefix text\n");
    for i in 0..12 {
        big += &format!("From s{i}  Sat Nov 28 10:00:00 2026\nSubject: {i}\n");
        if i == 0 {
            big += "X-IMAPbase: 1700000000 0000000006\n";
        }
        if i < 6 {
            big += &format!("X-UID: {}\n", i + 1);
        }
        if i % 3 == 0 {
            big += "Status: RO\n";
        }
        big += &format!("\n{}\n", &body[..(i * 97) % body.len()]);
    }
    cases.push(big.into_bytes());
    cases
}

/// [`rewrite_in_place`] through a `cap`-byte buffer over a file holding `data` leaves
/// the file as [`write_back`] of [`rewrite`] does.
pub(super) fn check_in_place(dir: &Path, data: &[u8], keep: &[bool], read: &[bool], cap: usize) {
    let raws = parse(data);
    let (validity, last, uids, base, metas) = plan_parts(&raws, read);
    let plan = Plan {
        validity,
        last,
        base_keywords: &base,
        keep,
        meta: &metas,
        uids: &uids,
    };
    let want = rewrite(data, &raws, &plan);
    let open = |p: &Path, write: bool| {
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(p)
            .expect("open")
    };
    let reference = dir.join("reference");
    std::fs::write(&reference, data).expect("write");
    write_back(&open(&reference, true), &reference, data, &want).expect("write_back");
    assert!(std::fs::read(&reference).expect("read") == want);
    let p = dir.join("inbox");
    std::fs::write(&p, data).expect("write");
    // Unchanged: nothing is written, not even by `set_len` (a read-only descriptor).
    let writable = want != data;
    let f = open(&p, writable);
    let found = scan(&mut std::io::BufReader::with_capacity(cap, &f), &|o, b| {
        peek_file(&f, o, b)
    })
    .expect("scan");
    assert_eq!(found.raws.len(), raws.len());
    let done = rewrite_in_place(&f, &found, &plan, cap).expect("rewrite_in_place");
    // Room is made first: no old byte is ever held only in memory.
    assert_eq!(
        done.peak_queue,
        0,
        "keep {keep:?}, read {read:?}, buffer {cap}: {:?} {done:?}",
        String::from_utf8_lossy(data)
    );
    let got = std::fs::read(&p).expect("read");
    if got != want {
        panic!(
            "buffer {cap}, keep {keep:?}, read {read:?}:\n{:?}\n  got ({} bytes)\n{:?}\n  wanted ({} bytes)\n{:?}",
            String::from_utf8_lossy(data),
            got.len(),
            String::from_utf8_lossy(&got),
            want.len(),
            String::from_utf8_lossy(&want)
        );
    }
}

pub(super) const BOX: &[u8] = b"From bob@example.org  Sat Nov 28 10:00:00 2026\nFrom: bob@example.org\nSubject: one\n\nhello\n.dot line\n\nFrom bob@example.org  Sat Nov 28 10:01:00 2026\nFrom: bob@example.org\nSubject: two\n\nsecond body\n>From quoted\n\n";
