//! Mailbox names from the client checked as Dovecot 2.3 checks them before any file is
//! touched (`mail-storage.c` `mailbox_verify_name`, `mailbox-list.c`
//! `mailbox_list_is_valid_fs_name`), with its reply texts: no escape from the user's mail
//! root through `/`, `~`, `..`, a leading separator, or doubled separators.
//!
//! [`check`] takes the name as sent (modified UTF-7), the namespace separator (`.` for
//! Maildir++, `/` for mbox) and the mailbox-list separator (what the layout uses on disk),
//! and returns the decoded UTF-8 name or the text after `NO ` that Dovecot sends.
//! CREATE first drops one trailing separator (RFC 3501 §6.3.3), as Dovecot does.

use super::mutf7;

/// Dovecot's reply for a name that is not modified UTF-7.
pub const NOT_MUTF7: &str = "Mailbox name is not valid mUTF-7.";

/// Checks `name` (as sent); `Ok` is the UTF-8 name, `Err` the reply text after `NO `.
pub fn check(name: &[u8], ns_sep: char, list_sep: char) -> Result<String, String> {
    if !mutf7::is_valid(name) {
        return Err(NOT_MUTF7.to_string());
    }
    let vname = mutf7::decode(name).ok_or_else(|| NOT_MUTF7.to_string())?;
    if vname.eq_ignore_ascii_case("INBOX") {
        return Ok(vname);
    }
    let cannot = |t: &str| format!("[CANNOT] Invalid mailbox name: {t}.");
    if ns_sep != list_sep && vname.contains(list_sep) {
        return Err(format!(
            "[CANNOT] Character not allowed in mailbox name: '{list_sep}'."
        ));
    }
    if vname.starts_with(ns_sep) {
        return Err(cannot("Begins with hierarchy separator"));
    }
    let mut prev = false;
    for c in vname.chars() {
        if c == ns_sep {
            if prev {
                return Err(cannot("Has adjacent hierarchy separators"));
            }
            prev = true;
        } else {
            prev = false;
        }
    }
    if prev {
        return Err(cannot("Ends with hierarchy separator"));
    }
    // The storage name: namespace separators become the list's.
    let storage: String = vname
        .chars()
        .map(|c| if c == ns_sep { list_sep } else { c })
        .collect();
    if storage.is_empty() {
        return Err(cannot("Name is empty"));
    }
    if list_sep != '/' && storage.contains('/') {
        return Err(cannot("Name must not have '/' characters"));
    }
    if storage.starts_with('/') {
        return Err(cannot("Begins with '/'"));
    }
    if storage.starts_with('~') {
        return Err(cannot("Begins with '~'"));
    }
    for part in storage.split('/') {
        match part {
            "" => return Err(cannot("Has adjacent '/' chars")),
            "." => return Err(cannot("Contains '.' part")),
            ".." => return Err(cannot("Contains '..' part")),
            _ => {}
        }
    }
    Ok(vname)
}

/// CREATE's name: one trailing separator dropped, then [`check`].
pub fn check_create(name: &[u8], ns_sep: char, list_sep: char) -> Result<String, String> {
    let mut sep = [0u8; 4];
    let sep = ns_sep.encode_utf8(&mut sep).as_bytes();
    let name = name
        .strip_suffix(sep)
        .filter(|n| !n.is_empty())
        .unwrap_or(name);
    check(name, ns_sep, list_sep)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every CREATE of compat-fixtures/imap/session.txt (Maildir++, separator `.`) that
    /// the name check decides, against Dovecot's recorded reply.
    #[test]
    fn create_replies_match_recorded_dovecot() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("compat-fixtures/imap/session.txt");
        let data = std::fs::read(path).expect("session fixture");
        let mut checked = 0;
        for (cmd, resp) in crate::imap::fixture::records(&data) {
            let Some(pos) = cmd.windows(8).position(|w| w == b" CREATE ") else {
                continue;
            };
            let tag = String::from_utf8_lossy(&cmd[..pos]).into_owned();
            let args = crate::imap::reader::parse_args(&cmd[pos + 8..]).expect("args");
            let name = args[0].astring().expect("name");
            let resp = String::from_utf8_lossy(&resp).into_owned();
            let theirs = resp.trim_end();
            match check_create(name, '.', '.') {
                Err(e) => assert_eq!(
                    theirs,
                    format!("{tag} NO {e}"),
                    "{}",
                    String::from_utf8_lossy(name)
                ),
                // Valid names: Dovecot created them or found them there already.
                Ok(_) => assert!(
                    theirs.ends_with("OK Create completed.") || theirs.contains("[ALREADYEXISTS]"),
                    "{theirs}"
                ),
            }
            checked += 1;
        }
        assert!(checked >= 15, "{checked}");
    }

    #[test]
    fn mbox_layout_names() {
        assert!(
            check(b"../x", '/', '/')
                .unwrap_err()
                .contains("Contains '..' part")
        );
        assert!(
            check(b"a/../b", '/', '/')
                .unwrap_err()
                .contains("Contains '..' part")
        );
        assert!(
            check(b"/etc/passwd", '/', '/')
                .unwrap_err()
                .contains("Begins with hierarchy separator")
        );
        assert!(check(b"a.b", '/', '/').is_ok());
        assert_eq!(check(b"inbox", '/', '/').as_deref(), Ok("inbox"));
    }
}
