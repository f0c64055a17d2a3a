//! Privileges (DESIGN.md §3). Started as root, the master stays root (as Postfix's); the
//! processes that serve mail become `mail_owner` for good with [`drop_to`] (supplementary
//! groups from the group file, then gid, then uid, as Postfix's daemons do through
//! `chroot_uid()`): the smtpd process after reading root-only files, the queue manager at
//! once, postsuper. Delivery processes become the recipient with
//! [`crate::sys::child::run_as`] instead (the one group, as Postfix's `set_ugid()`).
//! Started as anyone else, everything stays that user.
//!
//! The checks and their wording are Postfix 3.7's (global/mail_params.c), as the real
//! `postfix` command prints them:
//! `file /etc/postfix/main.cf: parameter mail_owner: unknown user name value: X`,
//! `… parameter mail_owner: user root has privileged user ID`,
//! `… parameters default_privs and mail_owner specify the same user nobody`.

use std::ffi::CString;

use nix::unistd::{Gid, Uid, User};

use crate::config::postfix::PostfixConfig;

/// The account services run as.
#[derive(Debug, Clone)]
pub struct MailOwner {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Whether this process runs with root's effective uid.
pub fn is_root() -> bool {
    Uid::effective().is_root()
}

fn main_cf(cfg: &PostfixConfig) -> String {
    cfg.config_dir.join("main.cf").display().to_string()
}

fn lookup(name: &str) -> Option<User> {
    User::from_name(name).ok().flatten()
}

/// Resolve and check `mail_owner` (and `default_privs` against it) as Postfix does.
pub fn mail_owner(cfg: &PostfixConfig) -> Result<MailOwner, String> {
    let file = main_cf(cfg);
    let name = cfg.get("mail_owner").unwrap_or_default().trim().to_string();
    let Some(user) = lookup(&name) else {
        return Err(format!(
            "file {file}: parameter mail_owner: unknown user name value: {name}"
        ));
    };
    if user.uid.is_root() {
        return Err(format!(
            "file {file}: parameter mail_owner: user {name} has privileged user ID"
        ));
    }
    if user.gid.as_raw() == 0 {
        return Err(format!(
            "file {file}: parameter mail_owner: user {name} has privileged group ID"
        ));
    }
    let privs = cfg
        .get("default_privs")
        .unwrap_or_default()
        .trim()
        .to_string();
    if let Some(p) = lookup(&privs)
        && p.uid == user.uid
    {
        return Err(format!(
            "file {file}: parameters default_privs and mail_owner specify the same user {name}"
        ));
    }
    Ok(MailOwner {
        name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    })
}

/// Become `owner` for good: supplementary groups, gid, uid; then make sure root cannot be
/// regained.
pub fn drop_to(owner: &MailOwner) -> Result<(), String> {
    let cname = CString::new(owner.name.as_bytes())
        .map_err(|_| format!("bad user name: {}", owner.name))?;
    let gid = Gid::from_raw(owner.gid);
    let uid = Uid::from_raw(owner.uid);
    nix::unistd::initgroups(&cname, gid)
        .map_err(|e| format!("initgroups({}): {}", owner.name, e.desc()))?;
    nix::unistd::setgid(gid).map_err(|e| format!("setgid({}): {}", owner.gid, e.desc()))?;
    nix::unistd::setuid(uid).map_err(|e| format!("setuid({}): {}", owner.uid, e.desc()))?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() || Uid::effective() != uid {
        return Err(format!("unable to drop privileges to {}", owner.name));
    }
    Ok(())
}
