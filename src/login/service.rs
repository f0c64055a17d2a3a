//! The service side of a login, common to POP3 and IMAP: what Dovecot's auth process
//! and the mail process's start check before a session is served — the password
//! (passdb chain, `auth_cache_*`), the user (userdb), `first_valid_uid` (root's file
//! access is never lent to a session), and `mail_max_userip_connections` (counted per
//! protocol, user and remote address, as Dovecot's anvil counts them). Each protocol
//! words the refusals its own way ([`Refused`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::{DovecotLog, Protocol};
use crate::auth::dovecot::{AuthCache, DovecotAuth, RequestInfo, UserInfo};

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Wrong password or unknown user: the login process answers after
    /// `auth_failure_delay`, and the client may try again.
    Failed,
    /// The userdb could not be asked (Dovecot: "Temporary authentication failure").
    TempFail,
    /// The user may not have mail access here (a uid below `first_valid_uid`): Dovecot's
    /// "Internal error occurred", the reason only in the log.
    Internal,
    /// `mail_max_userip_connections` sessions of this user from this address are open.
    UserIp(u32),
}

/// Logged-in sessions per (user, remote address), against `mail_max_userip_connections`.
#[derive(Debug, Default)]
pub struct UserIp {
    /// 0: no limit.
    pub max: u32,
    counts: Mutex<HashMap<(String, IpAddr), u32>>,
}

impl UserIp {
    pub fn new(max: u32) -> UserIp {
        UserIp {
            max,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Count one more session of `user` from `ip`; `false` (nothing counted) when the
    /// limit is reached.
    pub fn acquire(&self, user: &str, ip: IpAddr) -> bool {
        let Ok(mut m) = self.counts.lock() else {
            return false;
        };
        let n = m.entry((user.to_string(), ip)).or_insert(0);
        if self.max > 0 && *n >= self.max {
            return false;
        }
        *n += 1;
        true
    }

    /// A session counted by [`acquire`](Self::acquire) ended.
    pub fn release(&self, user: &str, ip: IpAddr) {
        if let Ok(mut m) = self.counts.lock() {
            let key = (user.to_string(), ip);
            if let Some(n) = m.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&key);
                }
            }
        }
    }
}

/// The [`Checker`] of a login service's settings (`$st`, POP3's or IMAP's state, which
/// both hold the fields it reads: `auth`, `auth_cache`, `log`, `first_valid_uid`,
/// `userip`) for `$protocol`: one place that says which settings the check uses.
macro_rules! checker_of {
    ($st:expr, $protocol:expr) => {
        $crate::login::service::Checker {
            protocol: $protocol,
            auth: &$st.auth,
            cache: $st.auth_cache.as_ref(),
            log: &$st.log,
            first_valid_uid: $st.first_valid_uid,
            userip: &$st.userip,
        }
    };
}
pub(crate) use checker_of;

/// What the check needs from the service's settings.
pub struct Checker<'a> {
    pub protocol: Protocol,
    pub auth: &'a Arc<DovecotAuth>,
    pub cache: Option<&'a Arc<AuthCache>>,
    pub log: &'a DovecotLog,
    /// `first_valid_uid` (default 500).
    pub first_valid_uid: u32,
    pub userip: &'a UserIp,
}

impl Checker<'_> {
    /// Check `user`'s `pass`, look the user up, check the uid and count the session
    /// against `mail_max_userip_connections` (the caller releases it with
    /// [`UserIp::release`] when the session ends). Returns the user name after
    /// `auth_username_format` and the userdb's answer.
    pub async fn check(
        &self,
        user: &str,
        pass: &str,
        remote: IpAddr,
        session_id: &str,
    ) -> Result<(String, UserInfo), Refused> {
        let service = self.protocol.name();
        let req = move || RequestInfo {
            service: service.into(),
        };
        let auth = self.auth.clone();
        let cache = self.cache.cloned();
        let (u, p) = (user.to_string(), pass.to_string());
        let checked = tokio::task::spawn_blocking(move || {
            let r = auth.verify_plain_cached(cache.as_deref(), &u, &p, &req());
            let info = if r.outcome.is_ok() {
                auth.lookup_user_cached(cache.as_deref(), &r.user, &req())
            } else {
                Ok(None)
            };
            (r, info)
        })
        .await
        .ok();
        let Some((res, info)) = checked else {
            return Err(Refused::Failed);
        };
        if !res.outcome.is_ok() {
            return Err(Refused::Failed);
        }
        let info = match info {
            Ok(Some(i)) => i,
            Ok(None) => {
                // Dovecot: the passdb knew the user, no userdb did.
                self.log.error(&format!(
                    "{}: user {}: userdb lookup: user not found",
                    self.protocol.login_service(),
                    res.user
                ));
                return Err(Refused::Failed);
            }
            Err(e) => {
                self.log
                    .error(&format!("auth: userdb lookup({}): {e}", res.user));
                return Err(Refused::TempFail);
            }
        };
        // Root's file access must never be lent to a session: the userdb must name a
        // uid, at least first_valid_uid (Dovecot's mail-storage-service check).
        if nix::unistd::geteuid().is_root() {
            let uid = info.uid.unwrap_or(0);
            if info.uid.is_none() || uid < self.first_valid_uid {
                // Dovecot's pop3 process names itself with pid and session here; the
                // imap process, failing in its init, with the user only.
                let who = match self.protocol {
                    Protocol::Pop3 => format!(
                        "{service}({})<{}><{session_id}>",
                        res.user,
                        std::process::id()
                    ),
                    Protocol::Imap => format!("{service}({})", res.user),
                };
                self.log.error(&format!(
                    "{who}: Mail access for users with UID {uid} not permitted (see first_valid_uid in config file, uid from userdb lookup).",
                ));
                return Err(Refused::Internal);
            }
        }
        if !self.userip.acquire(&res.user, remote) {
            return Err(Refused::UserIp(self.userip.max));
        }
        Ok((res.user, info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userip_counts_and_releases() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let u = UserIp::new(2);
        assert!(u.acquire("a", ip));
        assert!(u.acquire("a", ip));
        assert!(!u.acquire("a", ip));
        assert!(u.acquire("b", ip));
        u.release("a", ip);
        assert!(u.acquire("a", ip));
        let unlimited = UserIp::new(0);
        for _ in 0..100 {
            assert!(unlimited.acquire("a", ip));
        }
    }
}
