//! trivial-rewrite's `resolve` for the queue manager: which delivery agent and next-hop a
//! (rewritten) recipient goes to.
//!
//! The address class comes from the same domain-list code smtpd uses
//! ([`super::Addresses::class_of`]): `mydestination` (and `[ip]` literals of this
//! host) → `local_transport`, `virtual_alias_domains` → bounce (`User unknown in virtual alias
//! table`: the address was not rewritten by `virtual_alias_maps`), `virtual_mailbox_domains` →
//! `virtual_transport`, `relay_domains` → `relay_transport`, anything else →
//! `default_transport`. The next-hop is, in decreasing precedence, the one in `transport_maps`,
//! the one in the `*_transport` parameter, `relayhost` (relay and default transports only), the
//! recipient domain. A `transport_maps` entry with an empty transport keeps the class's
//! transport; with an empty next-hop, the class's next-hop.
//!
//! The transport name is a master.cf service; the service's command says which agent runs it
//! (`smtp`, `local`, `virtual`, `error`, `discard`, `retry`). A name that master.cf does not
//! define is taken as the agent of the same name when Postern has one (so a minimal master.cf
//! still delivers); otherwise the recipient is deferred, as Postfix defers mail for a
//! transport whose service is missing.

use std::collections::HashMap;

use super::{AddressClass, Addresses, LookupFailed};
use crate::config::postfix::PostfixConfig;

/// Where one recipient goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Local,
    Virtual,
    /// smtp(8) under master.cf service `service`, to `nexthop`.
    Smtp {
        service: String,
        nexthop: String,
    },
    /// error(8): the next-hop is the text (`[d.s.n ]text`).
    Error(String),
    /// retry(8): defer with the next-hop as text.
    Retry(String),
    /// discard(8): the next-hop is the text.
    Discard(String),
    /// A transport with no agent here (master.cf command `pipe`, `lmtp`, …): deferred.
    Unavailable(String),
    /// A domain list could not be searched (Postfix's `RESOLVE_FLAG_FAIL`): deferred with
    /// `address resolver failure`.
    Failed,
}

/// The parameters resolve reads, and master.cf's service → command map.
#[derive(Debug, Clone)]
pub struct Resolver {
    addresses: Addresses,
    local_transport: String,
    virtual_transport: String,
    relay_transport: String,
    default_transport: String,
    relayhost: String,
    myhostname: String,
    /// master.cf `unix` services: name → command.
    services: HashMap<String, String>,
}

/// Split `transport:nexthop` (a bare name has an empty next-hop).
pub fn split_transport(v: &str) -> (String, String) {
    let v = v.trim();
    match v.split_once(':') {
        Some((t, n)) => (t.trim().to_string(), n.trim().to_string()),
        None => (v.to_string(), String::new()),
    }
}

impl Resolver {
    pub fn from_config(cfg: &PostfixConfig) -> Resolver {
        let g = |n: &str| cfg.get(n).unwrap_or_default().trim().to_string();
        let services = cfg
            .master
            .services
            .iter()
            .filter(|s| s.kind == "unix")
            .map(|s| (s.name.clone(), s.command.clone()))
            .collect();
        Resolver {
            addresses: Addresses::from_config(cfg),
            local_transport: g("local_transport"),
            virtual_transport: g("virtual_transport"),
            relay_transport: g("relay_transport"),
            default_transport: g("default_transport"),
            relayhost: g("relayhost"),
            myhostname: g("myhostname"),
            services,
        }
    }

    /// The address class of `addr`'s domain, as smtpd and trivial-rewrite see it; `Err`
    /// when a domain list could not be searched. What the lookups logged (trivial-rewrite's
    /// `relay_domains: hash:/x: table lookup problem`, `relay_domains lookup failure`) is
    /// added to `warnings` (an `error: ` entry is an error line).
    pub fn class_of(
        &self,
        addr: &str,
        warnings: &mut Vec<String>,
    ) -> Result<AddressClass, LookupFailed> {
        self.addresses.class_of(addr, warnings)
    }

    /// trivial-rewrite's resolve of `addr` ([`Addresses::resolve`]): the recipient it is
    /// delivered as, its class and flags.
    pub fn rewrite(
        &self,
        addr: &str,
        warnings: &mut Vec<String>,
    ) -> Result<super::rewrite::Resolved, LookupFailed> {
        self.addresses.resolve(addr, warnings)
    }

    /// The agent (master.cf command) of transport `name`.
    pub fn agent_of<'a>(&'a self, name: &'a str) -> &'a str {
        match self.services.get(name) {
            // error(8) run under the service name `retry` is retry(8): it defers instead
            // of bouncing (Postfix's error.c looks at its service name; Debian's master.cf
            // has `retry unix - - n - - error`).
            Some(cmd) if cmd == "error" && name == "retry" => "retry",
            Some(cmd) => cmd.as_str(),
            None => match name {
                "relay" => "smtp",
                other => other,
            },
        }
    }

    /// Resolve `addr`; `table` is the `transport_maps` result for it, if any. Warnings of
    /// the domain lists' tables go to `warnings`.
    pub fn resolve(
        &self,
        addr: &str,
        table: Option<(String, String)>,
        warnings: &mut Vec<String>,
    ) -> Route {
        let Ok(class) = self.class_of(addr, warnings) else {
            return Route::Failed;
        };
        self.route_resolved(addr, class, table)
    }

    /// [`Resolver::resolve`] for an address already resolved (its class known, as
    /// [`super::rewrite::Resolved`] gives it): the transport and next-hop, without
    /// resolving the address again.
    pub fn route_resolved(
        &self,
        addr: &str,
        class: AddressClass,
        table: Option<(String, String)>,
    ) -> Route {
        let domain = addr
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or("")
            .to_ascii_lowercase();
        let relay_or = |d: &str| {
            if self.relayhost.is_empty() {
                d.to_string()
            } else {
                self.relayhost.clone()
            }
        };
        let (spec, default_nexthop) = match class {
            AddressClass::Local => (&self.local_transport, self.myhostname.clone()),
            AddressClass::VirtualAlias if table.is_none() => {
                return Route::Error("5.1.1 User unknown in virtual alias table".into());
            }
            AddressClass::VirtualAlias => (&self.default_transport, relay_or(&domain)),
            AddressClass::VirtualMailbox => (&self.virtual_transport, domain.clone()),
            AddressClass::Relay => (&self.relay_transport, relay_or(&domain)),
            AddressClass::Default => (&self.default_transport, relay_or(&domain)),
        };
        let (mut transport, mut explicit) = split_transport(spec);
        if let Some((t, n)) = table {
            if !t.is_empty() {
                // A new transport does not inherit the class transport's own next-hop.
                transport = t;
                explicit = n;
            } else if !n.is_empty() {
                explicit = n;
            }
        }
        // error(8) and retry(8) get only an explicit next-hop (their text): an empty one
        // gives "Address is undeliverable", as recorded from Postfix 3.7.
        let nexthop =
            if explicit.is_empty() && !matches!(self.agent_of(&transport), "error" | "retry") {
                default_nexthop
            } else {
                explicit
            };
        match self.agent_of(&transport) {
            "local" => Route::Local,
            "virtual" => Route::Virtual,
            "smtp" => Route::Smtp {
                service: transport.clone(),
                nexthop,
            },
            "error" => Route::Error(nexthop),
            "retry" => Route::Retry(nexthop),
            "discard" => Route::Discard(nexthop),
            _ => Route::Unavailable(transport.clone()),
        }
    }

    /// The master.cf services whose agent is smtp(8), plus `smtp` and `relay` themselves.
    pub fn smtp_services(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .services
            .iter()
            .filter(|(_, c)| c.as_str() == "smtp")
            .map(|(n, _)| n.clone())
            .collect();
        for n in ["smtp", "relay"] {
            if !v.iter().any(|x| x == n) {
                v.push(n.to_string());
            }
        }
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(main_cf: &str, master_cf: &str) -> Resolver {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.cf"), main_cf).unwrap();
        std::fs::write(dir.path().join("master.cf"), master_cf).unwrap();
        let cfg = PostfixConfig::load(&crate::config::postfix::LoadOptions {
            config_dir: Some(dir.path().to_path_buf()),
            overrides: Vec::new(),
        })
        .unwrap();
        Resolver::from_config(&cfg)
    }

    impl Resolver {
        /// `resolve` for tables that cannot fail.
        fn route(&self, addr: &str, table: Option<(String, String)>) -> Route {
            let mut w = Vec::new();
            let r = self.resolve(addr, table, &mut w);
            assert!(w.is_empty(), "{w:?}");
            r
        }
    }

    const MASTER: &str = "smtp inet n - n - - smtpd\nsmtp unix - - n - - smtp\n\
        relay unix - - n - - smtp\nlocal unix - n n - - local\nvirtual unix - n n - - virtual\n\
        error unix - - n - - error\ndiscard unix - - n - - discard\n\
        slow unix - - n - - smtp\nmaildrop unix - n n - - pipe flags=DRhu user=vmail argv=/bin/true\n";

    #[test]
    fn classes_pick_transports_and_nexthops() {
        let r = resolver(
            "myhostname = mx.example.test\nmydestination = example.test\n\
             relay_domains = relayed.test\nvirtual_mailbox_domains = v.test\n\
             virtual_alias_domains = va.test\n",
            MASTER,
        );
        assert_eq!(r.route("u@example.test", None), Route::Local);
        assert_eq!(r.route("u@v.test", None), Route::Virtual);
        assert_eq!(
            r.route("u@va.test", None),
            Route::Error("5.1.1 User unknown in virtual alias table".into())
        );
        assert_eq!(
            r.route("u@relayed.test", None),
            Route::Smtp {
                service: "relay".into(),
                nexthop: "relayed.test".into()
            }
        );
        assert_eq!(
            r.route("u@Elsewhere.Test", None),
            Route::Smtp {
                service: "smtp".into(),
                nexthop: "elsewhere.test".into()
            }
        );
    }

    #[test]
    fn relayhost_and_transport_maps_set_the_nexthop() {
        let r = resolver(
            "myhostname = mx.example.test\nmydestination = example.test\n\
             relayhost = [smtp.isp.test]:587\n",
            MASTER,
        );
        assert_eq!(
            r.route("u@elsewhere.test", None),
            Route::Smtp {
                service: "smtp".into(),
                nexthop: "[smtp.isp.test]:587".into()
            }
        );
        // transport_maps: transport and next-hop, transport only, next-hop only.
        assert_eq!(
            r.route(
                "u@elsewhere.test",
                Some(("slow".into(), "[127.0.0.1]:2526".into()))
            ),
            Route::Smtp {
                service: "slow".into(),
                nexthop: "[127.0.0.1]:2526".into()
            }
        );
        assert_eq!(
            r.route("u@elsewhere.test", Some(("relay".into(), String::new()))),
            Route::Smtp {
                service: "relay".into(),
                nexthop: "[smtp.isp.test]:587".into()
            }
        );
        assert_eq!(
            r.route("u@example.test", Some(("smtp".into(), "[10.0.0.1]".into()))),
            Route::Smtp {
                service: "smtp".into(),
                nexthop: "[10.0.0.1]".into()
            }
        );
        assert_eq!(
            r.route("u@elsewhere.test", Some(("maildrop".into(), String::new()))),
            Route::Unavailable("maildrop".into())
        );
        assert_eq!(
            r.route(
                "u@elsewhere.test",
                Some(("error".into(), "5.7.1 no".into()))
            ),
            Route::Error("5.7.1 no".into())
        );
    }

    #[test]
    fn default_transport_with_nexthop() {
        let r = resolver(
            "myhostname = mx.example.test\nmydestination = example.test\n\
             default_transport = smtp:[gw.test]\nrelayhost = [ignored.test]\n",
            MASTER,
        );
        assert_eq!(
            r.route("u@elsewhere.test", None),
            Route::Smtp {
                service: "smtp".into(),
                nexthop: "[gw.test]".into()
            }
        );
        assert_eq!(
            r.smtp_services(),
            vec!["relay".to_string(), "slow".into(), "smtp".into()]
        );
    }
}
