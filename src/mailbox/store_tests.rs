//! Tests of the store and folder views on each layout: mbox, Maildir++, Maildir
//! `LAYOUT=fs`.

use super::*;
use std::path::Path;

/// The three layouts, each in its own directory under `d`.
fn stores(d: &Path) -> Vec<(&'static str, MailStore)> {
    let mk = |loc: &str| {
        let l = MailLocation::expand(loc, "alice", &d.display().to_string()).expect("location");
        MailStore::open(
            l,
            None,
            StoreOptions {
                sender: "alice@example.org".into(),
                ..StoreOptions::default()
            },
        )
    };
    vec![
        ("mbox", mk("mbox:~/mail:INBOX=~/inbox")),
        ("maildir++", mk("maildir:~/Maildir")),
        ("fs", mk("maildir:~/fsdir:LAYOUT=fs")),
    ]
}

/// A message as local delivery gets it (no `From ` line in the body: mbox delivery
/// quotes it as `>From `).
fn plain(subject: &str) -> Vec<u8> {
    format!("From: bob@example.org\nSubject: {subject}\n\nbody of {subject}\n").into_bytes()
}

fn msg(subject: &str) -> Vec<u8> {
    format!(
        "From: bob@example.org\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\nFrom the desk\r\n"
    )
    .into_bytes()
}

fn new<'a>(data: &'a [u8], flags: Flags, kw: &[&str], date: Option<i64>) -> NewMessage<'a> {
    NewMessage {
        data,
        flags,
        keywords: kw.iter().map(|k| k.to_string()).collect(),
        internal_date: date,
    }
}

fn names(store: &MailStore) -> Vec<String> {
    store
        .list()
        .expect("list")
        .into_iter()
        .map(|f| f.name)
        .collect()
}

#[test]
fn folders_create_list_rename_delete() {
    let d = tempfile::tempdir().expect("tempdir");
    for (what, s) in stores(d.path()) {
        let sep = s.separator();
        let j = |a: &str, b: &str| format!("{a}{sep}{b}");
        s.create("Work").expect(what);
        s.create(&j("Lists", "rust")).expect(what);
        s.create("Entwürfe").expect(what);
        assert!(
            matches!(s.create("Work"), Err(MailboxError::AlreadyExists(_))),
            "{what}"
        );
        assert!(
            matches!(s.create("inbox"), Err(MailboxError::AlreadyExists(_))),
            "{what}"
        );
        let list = s.list().expect(what);
        assert_eq!(list[0].name, "INBOX", "{what}");
        let get = |n: &str| list.iter().find(|f| f.name == n).cloned();
        let lists = get("Lists").expect(what);
        assert!(lists.noselect && lists.has_children, "{what}: {lists:?}");
        let rust = get(&j("Lists", "rust")).expect(what);
        assert!(!rust.noselect, "{what}");
        assert_eq!(rust.noinferiors, what == "mbox", "{what}");
        assert!(get("Entwürfe").is_some(), "{what}: {list:?}");
        // On disk in modified UTF-7, as Dovecot stores folder names.
        let disk = s.paths("Entwürfe").mailbox;
        assert!(
            disk.to_string_lossy().contains("Entw&APw-rfe"),
            "{what}: {disk:?}"
        );
        // Names that could leave the root or alias another folder.
        for bad in [
            "../x",
            &j("a", ".."),
            "~root",
            &format!("{sep}abs"),
            &j("a", ""),
        ] {
            if !bad.ends_with(sep) {
                assert!(s.create(bad).is_err(), "{what}: {bad}");
            }
            assert!(s.select(bad, Access::ReadOnly).is_err(), "{what}: {bad}");
        }
        if sep == '.' {
            assert!(matches!(s.create("x/y"), Err(MailboxError::InvalidName(_))));
        }
        if what == "mbox" {
            // An mbox file has no children.
            let e = s.create("Work/sub").expect_err("under a file");
            assert_eq!(e.to_string(), "Mailbox doesn't allow inferior mailboxes");
            // A directory level only, as `CREATE foo/` makes.
            s.create("Empty/").expect("dir");
            let l = s.list().expect("list");
            let e = l.iter().find(|f| f.name == "Empty").expect("Empty");
            assert!(e.noselect && !e.has_children, "{e:?}");
            let e = s.delete("Lists").expect_err("children");
            assert_eq!(e.to_string(), "Mailbox has children, delete them first");
            s.delete("Empty").expect("empty dir");
        }
        // Rename takes the children along.
        s.rename("Lists", "Groups").expect(what);
        let n = names(&s);
        assert!(
            n.contains(&j("Groups", "rust")) && !n.iter().any(|x| x.starts_with("Lists")),
            "{what}: {n:?}"
        );
        assert!(
            matches!(
                s.rename("Work", &j("Groups", "rust")),
                Err(MailboxError::AlreadyExists(_))
            ),
            "{what}"
        );
        assert!(
            matches!(s.rename("Nope", "Other"), Err(MailboxError::NotFound(_))),
            "{what}"
        );
        // Delete.
        assert_eq!(
            s.delete("INBOX").expect_err(what).to_string(),
            "INBOX can't be deleted"
        );
        s.delete("Work").expect(what);
        assert!(!names(&s).contains(&"Work".to_string()), "{what}");
        assert!(
            matches!(s.delete("Work"), Err(MailboxError::NotFound(_))),
            "{what}"
        );
        assert!(
            matches!(
                s.select("Work", Access::ReadOnly),
                Err(MailboxError::NotFound(_))
            ),
            "{what}"
        );
    }
}

#[test]
fn subscriptions_as_dovecot_writes_them() {
    let d = tempfile::tempdir().expect("tempdir");
    for (what, s) in stores(d.path()) {
        let sep = s.separator();
        let sub = format!("a{sep}b");
        s.create(&sub).expect(what);
        s.create("Entwürfe").expect(what);
        s.set_subscribed(&sub, true).expect(what);
        s.set_subscribed("Entwürfe", true).expect(what);
        s.set_subscribed("inbox", true).expect(what);
        s.set_subscribed(&sub, true).expect(what);
        assert_eq!(
            s.subscriptions().expect(what),
            [sub.as_str(), "Entwürfe", "INBOX"],
            "{what}"
        );
        assert!(matches!(
            s.set_subscribed("missing", true),
            Err(MailboxError::NotFound(_))
        ));
        s.set_subscribed("Entwürfe", false).expect(what);
        let file = match s.location().format {
            Format::Mbox => s.location().root.join(".subscriptions"),
            Format::Maildir => s.location().root.join("subscriptions"),
        };
        assert_eq!(
            std::fs::read_to_string(file).expect(what),
            "V\t2\n\na\tb\nINBOX\n",
            "{what}"
        );
    }
}

#[test]
fn append_then_read_flags_keywords_dates() {
    let d = tempfile::tempdir().expect("tempdir");
    for (what, s) in stores(d.path()) {
        s.create("Box").expect(what);
        let a = msg("one");
        let b = msg("two");
        let got = s
            .append(
                "Box",
                &[
                    new(
                        &a,
                        Flags::SEEN,
                        &["$Forwarded", "work"],
                        Some(1_577_872_800),
                    ),
                    new(&b, Flags::empty(), &[], None),
                ],
            )
            .expect(what);
        assert_eq!(got.uids, [1, 2], "{what}");
        let mut f = s.select("Box", Access::ReadOnly).expect(what);
        assert_eq!(f.uid_validity(), got.uid_validity, "{what}");
        assert_eq!(f.uid_next(), 3, "{what}");
        // A Maildir's dates are read when asked for (sizes too, unless the file names
        // carry them, as Postern's and Dovecot's saves write `,W=`); an mbox has them.
        let maildir = f.is_maildir();
        assert!(
            f.messages().iter().all(|m| m.date_known() != maildir),
            "{what}"
        );
        assert!(f.resolve(0..2, true, true).is_empty(), "{what}");
        // Recorded in the index: another view knows them without reading the files.
        let g = s.select("Box", Access::ReadOnly).expect(what);
        assert!(
            g.messages()
                .iter()
                .all(|m| m.size_known() && m.date_known()),
            "{what}"
        );
        assert_eq!(g.messages(), f.messages(), "{what}");
        let m = f.messages();
        assert_eq!(m.len(), 2, "{what}");
        assert_eq!(m[0].flags, Flags::SEEN, "{what}");
        assert_eq!(
            f.keyword_names(&m[0]).collect::<Vec<_>>(),
            ["$Forwarded", "work"],
            "{what}"
        );
        assert_eq!(m[0].internal_date, 1_577_872_800, "{what}");
        assert!(m[1].flags.is_empty() && m[1].keywords.is_empty(), "{what}");
        // Stored with LF line ends; the size counts CRLF (RFC822.SIZE = what IMAP sends).
        let body = f.read(1).expect(what);
        let lf: Vec<u8> = String::from_utf8_lossy(&a)
            .replace("\r\n", "\n")
            .into_bytes();
        assert_eq!(body, lf, "{what}: {}", String::from_utf8_lossy(&body));
        assert_eq!(m[0].size as usize, a.len(), "{what}");
        assert!(m.iter().all(|x| x.recent), "{what}: EXAMINE shows \\Recent");
        // An invalid keyword is refused before anything is written.
        assert!(
            s.append("Box", &[new(&a, Flags::empty(), &["a b"], None)])
                .is_err()
        );
        assert!(matches!(
            s.append("Missing", &[new(&a, Flags::empty(), &[], None)]),
            Err(MailboxError::NotFound(_))
        ));
    }
}

#[test]
fn store_flags_modseq_and_unchangedsince() {
    let d = tempfile::tempdir().expect("tempdir");
    for (what, s) in stores(d.path()) {
        let (a, b) = (msg("a"), msg("b"));
        s.append(
            "INBOX",
            &[
                new(&a, Flags::empty(), &[], None),
                new(&b, Flags::empty(), &[], None),
            ],
        )
        .expect(what);
        let mut f = s.select("INBOX", Access::ReadWrite).expect(what);
        let mut g = s.select("INBOX", Access::ReadWrite).expect(what);
        let m0 = f.highest_modseq();
        assert!(
            m0 > 1_000_000_000,
            "{what}: MODSEQs start at the time: {m0}"
        );
        let r = f
            .store(
                &[1],
                FlagOp::Add,
                Flags::SEEN.union(Flags::FLAGGED),
                &["$Label1"],
                None,
            )
            .expect(what);
        assert_eq!(r.changed, [1], "{what}");
        let m = f.get(1).expect(what).clone();
        assert_eq!(m.flags, Flags::SEEN.union(Flags::FLAGGED), "{what}");
        assert!(m.modseq > m0 && f.highest_modseq() >= m.modseq, "{what}");
        // The view's own change is not news to itself.
        assert!(
            f.sync(SyncMode::Full).expect(what).flags.is_empty(),
            "{what}"
        );
        // The other view learns it, with the same MODSEQ.
        let ch = g.sync(SyncMode::Full).expect(what);
        assert_eq!(ch.flags, [1], "{what}");
        assert!(ch.keywords_added, "{what}");
        assert_eq!(g.get(1).expect(what).modseq, m.modseq, "{what}");
        assert_eq!(
            g.keyword_names(g.get(1).expect(what)).collect::<Vec<_>>(),
            ["$Label1"],
            "{what}"
        );
        // Unchanged: no new MODSEQ.
        let r = f
            .store(&[1], FlagOp::Add, Flags::SEEN, &[], None)
            .expect(what);
        assert!(r.changed.is_empty(), "{what}");
        // UNCHANGEDSINCE: message 1 changed after m0, message 2 did not.
        let r = g
            .store(&[1, 2], FlagOp::Replace, Flags::DELETED, &[], Some(m0))
            .expect(what);
        assert_eq!((r.changed, r.modified), (vec![2], vec![1]), "{what}");
        let r = g
            .store(&[1], FlagOp::Remove, Flags::FLAGGED, &["$Label1"], None)
            .expect(what);
        assert_eq!(r.changed, [1], "{what}");
        assert_eq!(g.get(1).expect(what).flags, Flags::SEEN, "{what}");
        let ch = f.sync(SyncMode::Full).expect(what);
        assert_eq!(ch.flags, [1, 2], "{what}");
        assert_eq!(f.get(2).expect(what).flags, Flags::DELETED, "{what}");
        // A read-only view refuses changes.
        let mut ro = s.select("INBOX", Access::ReadOnly).expect(what);
        assert!(
            ro.store(&[1], FlagOp::Add, Flags::DRAFT, &[], None)
                .is_err()
        );
        assert!(ro.expunge(None).is_err());
    }
}

#[test]
fn expunge_reported_in_imap_order_and_deferred() {
    let d = tempfile::tempdir().expect("tempdir");
    for (what, s) in stores(d.path()) {
        let bodies: Vec<Vec<u8>> = (0..5).map(|i| msg(&format!("m{i}"))).collect();
        let msgs: Vec<NewMessage> = bodies
            .iter()
            .map(|b| new(b, Flags::empty(), &[], None))
            .collect();
        s.append("INBOX", &msgs).expect(what);
        let mut f = s.select("INBOX", Access::ReadWrite).expect(what);
        let mut g = s.select("INBOX", Access::ReadWrite).expect(what);
        let mut h = s.select("INBOX", Access::ReadOnly).expect(what);
        let m1 = f.highest_modseq();
        f.store(&[2, 3, 5], FlagOp::Add, Flags::DELETED, &[], None)
            .expect(what);
        // UID EXPUNGE of 2 and 5 only (3 keeps \Deleted).
        let gone = f.expunge(Some(&[2, 5])).expect(what);
        assert_eq!(gone, [(2, 2), (4, 5)], "{what}");
        let gone = f.expunge(None).expect(what);
        assert_eq!(gone, [(2, 3)], "{what}");
        assert_eq!(
            f.messages().iter().map(|m| m.uid).collect::<Vec<_>>(),
            [1, 4],
            "{what}"
        );
        // Another view: ascending, each number counting the ones before it.
        let ch = g.sync(SyncMode::Full).expect(what);
        assert_eq!(ch.expunged, [(2, 2), (2, 3), (3, 5)], "{what}");
        // Held back while the session may not report expunges.
        let ch = h.sync(SyncMode::NoExpunges).expect(what);
        assert!(ch.expunged.is_empty(), "{what}");
        assert_eq!(h.messages().len(), 5, "{what}");
        assert!(
            h.get(2).expect(what).expunged && !h.get(1).expect(what).expunged,
            "{what}"
        );
        assert!(
            matches!(h.read(2), Err(MailboxError::Expunged(2))),
            "{what}"
        );
        let ch = h.sync(SyncMode::Full).expect(what);
        assert_eq!(ch.expunged, [(2, 2), (2, 3), (3, 5)], "{what}");
        // QRESYNC: what vanished since a MODSEQ.
        assert_eq!(h.vanished_since(m1, (1, u32::MAX)), [2, 3, 5], "{what}");
        assert_eq!(h.vanished_since(m1, (3, 4)), [3], "{what}");
        assert!(
            h.vanished_since(h.highest_modseq(), (1, u32::MAX))
                .is_empty(),
            "{what}"
        );
    }
}

#[test]
fn recent_goes_to_one_session() {
    let d = tempfile::tempdir().expect("tempdir");
    for (what, s) in stores(d.path()) {
        let a = msg("a");
        s.append("INBOX", &[new(&a, Flags::empty(), &[], None)])
            .expect(what);
        let ro = s.select("INBOX", Access::ReadOnly).expect(what);
        assert_eq!(ro.status().recent, 1, "{what}");
        let mut first = s.select("INBOX", Access::ReadWrite).expect(what);
        assert_eq!(first.status().recent, 1, "{what}");
        let mut second = s.select("INBOX", Access::ReadWrite).expect(what);
        assert_eq!(second.status().recent, 0, "{what}");
        assert_eq!(s.status("INBOX", false).expect(what).recent, 0, "{what}");
        // New mail: recent in the first view that syncs.
        let b = msg("b");
        s.append("INBOX", &[new(&b, Flags::empty(), &[], None)])
            .expect(what);
        let ch = second.sync(SyncMode::Full).expect(what);
        assert_eq!(ch.new_messages, 1, "{what}");
        assert!(
            ch.recent_changed && second.get(2).expect(what).recent,
            "{what}"
        );
        let ch = first.sync(SyncMode::Full).expect(what);
        assert_eq!(ch.new_messages, 1, "{what}");
        assert!(!first.get(2).expect(what).recent, "{what}");
    }
}

#[test]
fn copy_and_move_give_new_uids() {
    let d = tempfile::tempdir().expect("tempdir");
    for (what, s) in stores(d.path()) {
        s.create("Archive").expect(what);
        let bodies: Vec<Vec<u8>> = (0..3).map(|i| msg(&format!("c{i}"))).collect();
        let msgs: Vec<NewMessage> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                new(
                    b,
                    if i == 1 {
                        Flags::ANSWERED
                    } else {
                        Flags::empty()
                    },
                    &["kw"],
                    Some(1_600_000_000 + i as i64),
                )
            })
            .collect();
        s.append("INBOX", &msgs).expect(what);
        let mut f = s.select("INBOX", Access::ReadWrite).expect(what);
        let c = f.copy(&[1, 2], "Archive").expect(what);
        assert_eq!(c.uids, [(1, 1), (2, 2)], "{what}");
        let (c, gone) = f.move_to(&[3], "Archive").expect(what);
        assert_eq!(c.uids, [(3, 3)], "{what}");
        assert_eq!(gone, [(3, 3)], "{what}");
        assert_eq!(f.messages().len(), 2, "{what}");
        let mut a = s.select("Archive", Access::ReadOnly).expect(what);
        a.resolve(0..3, false, true);
        assert_eq!(a.uid_validity(), c.uid_validity, "{what}");
        let m = a.messages();
        assert_eq!(m.len(), 3, "{what}");
        assert_eq!(m[1].flags, Flags::ANSWERED, "{what}");
        assert_eq!(a.keyword_names(&m[1]).collect::<Vec<_>>(), ["kw"], "{what}");
        assert_eq!(m[2].internal_date, 1_600_000_002, "{what}");
        assert_eq!(a.read(3).expect(what), f_read_lf(&bodies[2]), "{what}");
        assert!(
            matches!(f.copy(&[1], "Nowhere"), Err(MailboxError::NotFound(_))),
            "{what}"
        );
        // Copy into the selected folder itself: new messages at the next sync.
        let c = f.copy(&[1], "INBOX").expect(what);
        assert_eq!(c.uids, [(1, 4)], "{what}");
        assert_eq!(
            f.sync(SyncMode::Full).expect(what).new_messages,
            1,
            "{what}"
        );
    }
}

fn f_read_lf(b: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(b)
        .replace("\r\n", "\n")
        .into_bytes()
}

/// Local delivery appends while two views are open; another program changes flags and
/// deletes messages behind their back: each sync reports what changed.
#[test]
fn sync_sees_delivery_and_foreign_changes() {
    let d = tempfile::tempdir().expect("tempdir");
    for (what, s) in stores(d.path()) {
        let inbox = s.location().inbox.clone();
        let deliver = |subject: &str| match s.location().format {
            Format::Mbox => deliver_mbox(
                &inbox,
                "bob@example.org",
                &plain(subject),
                &MboxOptions::default(),
            )
            .map(|_| ()),
            Format::Maildir => deliver_maildir(&inbox, &plain(subject)).map(|_| ()),
        };
        deliver("first").expect(what);
        let mut f = s.select("INBOX", Access::ReadWrite).expect(what);
        let mut g = s.select("INBOX", Access::ReadWrite).expect(what);
        assert_eq!(f.messages().len(), 1, "{what}");
        assert!(f.sync(SyncMode::Full).expect(what).is_empty(), "{what}");
        deliver("second").expect(what);
        deliver("third").expect(what);
        for v in [&mut f, &mut g] {
            let ch = v.sync(SyncMode::Full).expect(what);
            assert_eq!(ch.new_messages, 2, "{what}");
            assert_eq!(
                v.messages().iter().map(|m| m.uid).collect::<Vec<_>>(),
                [1, 2, 3],
                "{what}"
            );
        }
        // Another program marks message 2 read and deletes message 1.
        let before = f.get(2).expect(what).modseq;
        match s.location().format {
            Format::Mbox => {
                let text = std::fs::read_to_string(&inbox).expect("read");
                let i = text.find("Subject: second\n").expect("second");
                let text = format!("{}Status: RO\n{}", &text[..i], &text[i..]);
                // Drop the first message (up to the second From line).
                let second = text.find("\n\nFrom bob").expect("From") + 2;
                let first_base: String = text[..second]
                    .lines()
                    .find(|l| l.starts_with("X-IMAPbase:"))
                    .map(|l| format!("{l}\n"))
                    .unwrap_or_default();
                let rest = &text[second..];
                let j = rest.find('\n').expect("line") + 1;
                let text = format!("{}{first_base}{}", &rest[..j], &rest[j..]);
                std::fs::write(&inbox, text).expect("write");
            }
            Format::Maildir => {
                let find = |subject: &str| {
                    std::fs::read_dir(inbox.join("cur"))
                        .expect("cur")
                        .flatten()
                        .map(|e| e.path())
                        .find(|p| {
                            std::fs::read_to_string(p)
                                .is_ok_and(|t| t.contains(&format!("Subject: {subject}\n")))
                        })
                        .expect("file")
                };
                std::fs::remove_file(find("first")).expect("rm");
                let second = find("second");
                std::fs::rename(&second, format!("{}S", second.display())).expect("mv");
            }
        }
        for v in [&mut f, &mut g] {
            let ch = v.sync(SyncMode::Full).expect(what);
            assert_eq!(ch.expunged, [(1, 1)], "{what}");
            assert_eq!(ch.flags, [2], "{what}");
            assert_eq!(v.get(2).expect(what).flags, Flags::SEEN, "{what}");
            assert!(v.get(2).expect(what).modseq > before, "{what}");
        }
        assert_eq!(
            f.get(2).expect(what).modseq,
            g.get(2).expect(what).modseq,
            "{what}"
        );
        assert_eq!(f.read(3).expect(what), plain("third"), "{what}");
        // Nothing more: a few stats.
        assert!(f.sync(SyncMode::Full).expect(what).is_empty(), "{what}");
    }
}

/// The folder is deleted and created again by someone else: a new UIDVALIDITY.
#[test]
fn recreated_folder_changes_uidvalidity() {
    let d = tempfile::tempdir().expect("tempdir");
    for (what, s) in stores(d.path()) {
        s.create("Box").expect(what);
        let a = msg("a");
        s.append("Box", &[new(&a, Flags::empty(), &[], None)])
            .expect(what);
        let mut f = s.select("Box", Access::ReadWrite).expect(what);
        let v = f.uid_validity();
        s.delete("Box").expect(what);
        s.create("Box").expect(what);
        s.append("Box", &[new(&a, Flags::empty(), &[], None)])
            .expect(what);
        let ch = f.sync(SyncMode::Full).expect(what);
        assert!(ch.uid_validity_changed, "{what}");
        assert_ne!(f.uid_validity(), v, "{what}");
    }
}

/// A folder reached through a symlink is neither listed nor opened.
#[test]
fn symlinked_folders_refused() {
    let d = tempfile::tempdir().expect("tempdir");
    let outside = d.path().join("outside");
    std::fs::create_dir_all(outside.join("cur")).expect("mkdir");
    std::fs::create_dir_all(outside.join("new")).expect("mkdir");
    std::fs::create_dir_all(outside.join("tmp")).expect("mkdir");
    std::fs::write(
        d.path().join("outside-mbox"),
        "From a  Sat Nov 28 10:00:00 2026\nSubject: x\n\nsecret\n\n",
    )
    .expect("w");
    for (what, s) in stores(d.path()) {
        s.create("Real").expect(what);
        let root = s.location().root.clone();
        let (link, target) = match (s.location().format, s.location().layout) {
            (Format::Mbox, _) => (root.join("Evil"), d.path().join("outside-mbox")),
            (Format::Maildir, Layout::MaildirPlusPlus) => (root.join(".Evil"), outside.clone()),
            (Format::Maildir, Layout::Fs) => (root.join("Evil"), outside.clone()),
        };
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(!names(&s).contains(&"Evil".to_string()), "{what}");
        assert!(
            matches!(
                s.select("Evil", Access::ReadOnly),
                Err(MailboxError::Unsafe(..))
            ),
            "{what}"
        );
        assert!(
            s.append("Evil", &[new(b"x", Flags::empty(), &[], None)])
                .is_err(),
            "{what}"
        );
    }
}

/// Two read-write views change flags and expunge while local delivery appends, each in
/// a thread of its own: no message is lost or numbered twice, and in the end both views
/// and a fresh one agree on every message's UID, flags and MODSEQ.
#[test]
fn concurrent_views_and_delivery_converge() {
    let d = tempfile::tempdir().expect("tempdir");
    for (what, s) in stores(d.path()) {
        let inbox = s.location().inbox.clone();
        let format = s.location().format;
        const N: usize = 40;
        let deliverer = std::thread::spawn(move || {
            for i in 0..N {
                let m = plain(&format!("mail {i}"));
                match format {
                    Format::Mbox => {
                        deliver_mbox(&inbox, "bob@example.org", &m, &MboxOptions::default())
                            .expect("deliver")
                    }
                    Format::Maildir => {
                        deliver_maildir(&inbox, &m).expect("deliver");
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
        });
        let worker = |s: MailStore, flag: Flags, expunging: bool| {
            std::thread::spawn(move || {
                let mut f = s.select("INBOX", Access::ReadWrite).expect("select");
                let mut expunged = 0;
                for round in 0..60 {
                    f.sync(SyncMode::Full).expect("sync");
                    let uids: Vec<u32> = f.messages().iter().map(|m| m.uid).collect();
                    if let Some(&u) = uids.get(round % uids.len().max(1)) {
                        f.store(&[u], FlagOp::Add, flag, &[], None).expect("store");
                    }
                    if expunging && round % 7 == 3 && uids.len() > 2 {
                        f.store(&[uids[1]], FlagOp::Add, Flags::DELETED, &[], None)
                            .expect("store");
                        expunged += f.expunge(None).expect("expunge").len();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                (f, expunged)
            })
        };
        let a = worker(s.clone(), Flags::SEEN, true);
        let b = worker(s.clone(), Flags::FLAGGED, false);
        deliverer.join().expect("deliverer");
        let (mut fa, gone) = a.join().expect("a");
        let (mut fb, _) = b.join().expect("b");
        fa.sync(SyncMode::Full).expect(what);
        fb.sync(SyncMode::Full).expect(what);
        let fc = s.select("INBOX", Access::ReadOnly).expect(what);
        let state = |f: &Folder| -> Vec<(u32, Flags, u64)> {
            f.messages()
                .iter()
                .map(|m| (m.uid, m.flags, m.modseq))
                .collect()
        };
        assert_eq!(fc.messages().len(), N - gone, "{what}: {:?}", state(&fc));
        assert_eq!(state(&fa), state(&fc), "{what}");
        assert_eq!(state(&fb), state(&fc), "{what}");
        let uids: Vec<u32> = fc.messages().iter().map(|m| m.uid).collect();
        assert!(uids.windows(2).all(|w| w[0] < w[1]), "{what}: {uids:?}");
        assert!(fc.messages().iter().all(|m| m.modseq > 0), "{what}");
        assert_eq!(fa.highest_modseq(), fc.highest_modseq(), "{what}");
        // Every message still there reads as delivered.
        for m in fc.messages() {
            let body = fc.read(m.uid).expect(what);
            assert!(
                body.starts_with(b"From: bob@example.org\nSubject: mail "),
                "{what}"
            );
        }
    }
}

/// A message file deleted under a view (another program expunged it) reads as expunged,
/// with its UID; the next sync reports it.
#[test]
fn message_deleted_under_the_view_is_expunged() {
    let d = tempfile::tempdir().expect("tempdir");
    for (what, s) in stores(d.path()) {
        if s.location().format != Format::Maildir {
            continue;
        }
        let a = msg("a");
        s.append(
            "INBOX",
            &[
                new(&a, Flags::empty(), &[], None),
                new(&a, Flags::empty(), &[], None),
            ],
        )
        .expect(what);
        let mut f = s.select("INBOX", Access::ReadWrite).expect(what);
        let cur = s.location().inbox.join("cur");
        let victim = std::fs::read_dir(&cur)
            .expect("cur")
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                f.maildir_base(2)
                    .is_some_and(|b| p.to_string_lossy().contains(b))
            })
            .expect("file of uid 2");
        std::fs::remove_file(victim).expect("rm");
        assert!(
            matches!(f.read(2), Err(MailboxError::Expunged(2))),
            "{what}"
        );
        assert!(f.read(1).is_ok(), "{what}");
        assert_eq!(
            f.sync(SyncMode::Full).expect(what).expunged,
            [(2, 2)],
            "{what}"
        );
    }
}

/// A message file deleted before its size or date was ever read (no `,S=`/`,W=` in its
/// name, nothing in the index): resolving them marks it expunged in the view, as any
/// message expunged under it (FETCH answers `[EXPUNGEISSUED]`), not a failure (which
/// IMAP answers `NO [SERVERBUG]`); the next sync reports it.
#[test]
fn message_deleted_before_its_size_was_read_is_expunged() {
    let d = tempfile::tempdir().expect("tempdir");
    for (what, s) in stores(d.path()) {
        if s.location().format != Format::Maildir {
            continue;
        }
        let inbox = s.location().inbox.clone();
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(inbox.join(sub)).expect("mkdir");
        }
        for n in 1..=2 {
            let name = format!("17000000{n:02}.M{n}P1.host:2,");
            std::fs::write(inbox.join("cur").join(name), plain("x")).expect("write");
        }
        let mut f = s.select("INBOX", Access::ReadWrite).expect(what);
        let base = f.maildir_base(2).expect("uid 2").to_string();
        let victim = std::fs::read_dir(inbox.join("cur"))
            .expect("cur")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains(&base))
            .expect("file of uid 2");
        std::fs::remove_file(victim).expect("rm");
        assert!(f.resolve(0..2, true, true).is_empty(), "{what}");
        assert!(f.get(2).expect("uid 2").expunged, "{what}");
        assert!(!f.get(1).expect("uid 1").expunged, "{what}");
        assert_eq!(
            f.sync(SyncMode::Full).expect(what).expunged,
            [(2, 2)],
            "{what}"
        );
    }
}

/// A folder whose directory the user may read but not write (an archive) opens read-only
/// without Postern's index: messages, flags and sync work, MODSEQs are 0.
#[test]
fn read_only_folder_without_index() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (_, s) = stores(d.path()).remove(1);
    let a = msg("a");
    s.append("INBOX", &[new(&a, Flags::SEEN, &[], None)])
        .expect("append");
    // Everything readable by others, nothing writable; Postern's index removed.
    let root = s.location().root.clone();
    std::fs::remove_file(root.join("postern.index")).expect("rm index");
    let _ = std::process::Command::new("chmod")
        .arg("-R")
        .arg("a+rX,go-w")
        .arg(&root)
        .status();
    let nobody = MailStore::open(
        s.location().clone(),
        Some((65534, 65534)),
        StoreOptions::default(),
    );
    let mut f = nobody.select("INBOX", Access::ReadOnly).expect("select");
    assert_eq!(f.messages().len(), 1);
    assert_eq!(f.messages()[0].flags, Flags::SEEN);
    assert_eq!(f.messages()[0].modseq, 0);
    assert_eq!(f.read(1).expect("read"), f_read_lf(&a));
    assert!(f.sync(SyncMode::Full).expect("sync").is_empty());
    assert!(!root.join("postern.index").exists());
}
