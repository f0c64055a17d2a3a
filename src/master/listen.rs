//! Listening sockets for master.cf `inet` services, resolved as Postfix's master does
//! (master/master_ent.c, util/inet_addr_local.c):
//!
//! * service name `host:port` or `[v6addr]:port`: that address only (a host name is looked
//!   up and every address of it is used);
//! * bare `port`: the port on each address of `inet_interfaces` (`all` = the wildcard
//!   address of each protocol, `loopback-only` = 127.0.0.1 and ::1, or a list of addresses
//!   and host names, separated by commas or spaces), filtered by `inet_protocols`
//!   (`all`, `ipv4`, `ipv6`);
//! * the port is a number or a name from `/etc/services` (`smtp` → 25, `submission` → 587),
//!   with the usual mail ports built in when the file lacks them.
//!
//! Sockets get `SO_REUSEADDR`, IPv6 ones `IPV6_V6ONLY` (so `0.0.0.0` and `::` coexist),
//! and the listen backlog Postfix uses: the larger of the service's process limit and
//! `default_process_limit`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
    sockopt,
};

use crate::config::postfix::PostfixConfig;

/// Which protocols `inet_protocols` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    pub v4: bool,
    pub v6: bool,
}

/// `inet_protocols` (`all` uses IPv6 only when the kernel has it).
pub fn protocols(cfg: &PostfixConfig) -> Result<Protocols, String> {
    let value = cfg.get("inet_protocols").unwrap_or_else(|| "all".into());
    let mut p = Protocols {
        v4: false,
        v6: false,
    };
    for w in words(&value) {
        match w.to_ascii_lowercase().as_str() {
            "all" => {
                p.v4 = true;
                p.v6 = ipv6_available();
            }
            "ipv4" => p.v4 = true,
            "ipv6" => p.v6 = true,
            other => return Err(format!("bad inet_protocols value: {other}")),
        }
    }
    if !p.v4 && !p.v6 {
        return Err("inet_protocols: no protocols enabled".into());
    }
    Ok(p)
}

fn ipv6_available() -> bool {
    socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .is_ok()
}

fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
}

/// A port number or an `/etc/services` name for tcp.
pub fn resolve_port(service: &str) -> Result<u16, String> {
    if let Ok(n) = service.parse::<u16>() {
        return Ok(n);
    }
    if let Ok(text) = std::fs::read_to_string("/etc/services") {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut it = line.split_whitespace();
            let (Some(name), Some(pp)) = (it.next(), it.next()) else {
                continue;
            };
            let Some((port, proto)) = pp.split_once('/') else {
                continue;
            };
            if proto == "tcp" && (name == service || it.any(|alias| alias == service)) {
                return port
                    .parse()
                    .map_err(|_| format!("bad port in /etc/services: {pp}"));
            }
        }
    }
    match service {
        "smtp" => Ok(25),
        "submission" => Ok(587),
        "smtps" | "submissions" | "urd" => Ok(465),
        "lmtp" => Ok(24),
        _ => Err(format!("unknown service: {service}/tcp")),
    }
}

/// The addresses a master.cf inet service name listens on.
pub fn service_addresses(cfg: &PostfixConfig, name: &str) -> Result<Vec<SocketAddr>, String> {
    let protos = protocols(cfg)?;
    let (host, port) = split_host_port(name);
    let port = resolve_port(port)?;
    let ips: Vec<IpAddr> = match host {
        Some(h) if !h.is_empty() && h != "*" => host_addresses(h)?,
        Some(_) => wildcard(protos),
        None => interface_addresses(cfg, protos)?,
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    for ip in ips {
        if (ip.is_ipv4() && protos.v4) || (ip.is_ipv6() && protos.v6) {
            let sa = SocketAddr::new(ip, port);
            if !out.contains(&sa) {
                out.push(sa);
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "service {name}: no local interface found for the enabled inet_protocols"
        ));
    }
    Ok(out)
}

/// `host:port`, `[v6]:port` or bare `port`.
fn split_host_port(name: &str) -> (Option<&str>, &str) {
    if let Some(rest) = name.strip_prefix('[')
        && let Some((h, p)) = rest.split_once("]:")
    {
        return (Some(h), p);
    }
    match name.rsplit_once(':') {
        Some((h, p)) => (Some(h), p),
        None => (None, name),
    }
}

fn wildcard(p: Protocols) -> Vec<IpAddr> {
    let mut v = Vec::new();
    if p.v4 {
        v.push(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }
    if p.v6 {
        v.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }
    v
}

fn host_addresses(host: &str) -> Result<Vec<IpAddr>, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let addrs = (bare, 0u16)
        .to_socket_addrs()
        .map_err(|e| format!("{host}: host not found: {e}"))?;
    let mut v: Vec<IpAddr> = Vec::new();
    for a in addrs {
        if !v.contains(&a.ip()) {
            v.push(a.ip());
        }
    }
    Ok(v)
}

/// `inet_interfaces`: `all`, `loopback-only`, or addresses and host names.
fn interface_addresses(cfg: &PostfixConfig, p: Protocols) -> Result<Vec<IpAddr>, String> {
    let value = cfg.get("inet_interfaces").unwrap_or_else(|| "all".into());
    let mut out = Vec::new();
    for w in words(&value) {
        match w.to_ascii_lowercase().as_str() {
            "all" => out.extend(wildcard(p)),
            "loopback-only" => {
                out.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
                out.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
            }
            _ => out.extend(host_addresses(w)?),
        }
    }
    Ok(out)
}

/// Bind and listen on `addr` (non-blocking, close-on-exec).
pub fn bind_listener(addr: SocketAddr, backlog: i32) -> Result<std::net::TcpListener, String> {
    // Postfix's inet_listen.c wording: `bind 127.0.0.1 port 25: Address already in use`.
    let fail = |what: &str, e: nix::Error| {
        format!("{what} {} port {}: {}", addr.ip(), addr.port(), e.desc())
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd: OwnedFd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| fail("socket", e))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| fail("setsockopt", e))?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(|e| fail("setsockopt", e))?;
    }
    let sa = SockaddrStorage::from(addr);
    bind(fd.as_raw_fd(), &sa).map_err(|e| fail("bind", e))?;
    let backlog = Backlog::new(backlog.clamp(1, 4096)).unwrap_or(Backlog::MAXCONN);
    listen(&fd, backlog).map_err(|e| fail("listen", e))?;
    Ok(std::net::TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("127.0.0.1:2525"),
            (Some("127.0.0.1"), "2525")
        );
        assert_eq!(split_host_port("[::1]:2525"), (Some("::1"), "2525"));
        assert_eq!(split_host_port("smtp"), (None, "smtp"));
        assert_eq!(
            split_host_port("localhost:smtp"),
            (Some("localhost"), "smtp")
        );
    }

    #[test]
    fn ports() {
        assert_eq!(resolve_port("2525"), Ok(2525));
        assert_eq!(resolve_port("smtp"), Ok(25));
        assert_eq!(resolve_port("submission"), Ok(587));
        assert!(resolve_port("no-such-service-x").is_err());
    }
}
