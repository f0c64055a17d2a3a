//! Name service calls std does not offer: the reverse lookup of an address
//! (`getnameinfo` with `NI_NAMEREQD`, as Postfix's smtpd_peer.c asks it) and the
//! canonical name with the addresses of a host (`getaddrinfo` with `AI_CANONNAME`, as
//! Cyrus saslauthd's rimap asks it). Both block: call them off the async runtime.

use std::ffi::{CStr, CString};
use std::net::SocketAddr;

/// The PTR name of `ip` through the system resolver (`None` when there is none).
pub fn name_of(ip: std::net::IpAddr) -> Option<String> {
    let sa: SocketAddr = (ip, 0).into();
    let mut host = [0 as libc::c_char; 1025];
    let (storage, len) = socket_addr_to_raw(&sa);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes; `host` is a writable buffer
    // of the size we pass; NI_NAMEREQD makes getnameinfo fail rather than print the address.
    let rc = unsafe {
        libc::getnameinfo(
            &storage as *const libc::sockaddr_storage as *const libc::sockaddr,
            len,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: getnameinfo wrote a NUL-terminated string into `host`.
    let c = unsafe { CStr::from_ptr(host.as_ptr()) };
    Some(c.to_string_lossy().to_string())
}

fn socket_addr_to_raw(sa: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match sa {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe {
                std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin);
            }
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe {
                std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6);
            }
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

/// `getaddrinfo(host, service)` for TCP, any family: the canonical name and the
/// addresses, or `gai_strerror`'s text.
pub fn getaddrinfo(host: &str, service: &str) -> Result<(Option<String>, Vec<SocketAddr>), String> {
    let (Ok(h), Ok(s)) = (CString::new(host), CString::new(service)) else {
        return Err("Name or service not known".into());
    };
    // SAFETY: `hints` is plain data zeroed and then filled; getaddrinfo allocates the list
    // it returns, which is read here and freed with freeaddrinfo exactly once.
    unsafe {
        let mut hints: libc::addrinfo = std::mem::zeroed();
        hints.ai_family = libc::AF_UNSPEC;
        hints.ai_socktype = libc::SOCK_STREAM;
        hints.ai_flags = libc::AI_CANONNAME;
        let mut res: *mut libc::addrinfo = std::ptr::null_mut();
        let rc = libc::getaddrinfo(h.as_ptr(), s.as_ptr(), &hints, &mut res);
        if rc != 0 {
            let msg = CStr::from_ptr(libc::gai_strerror(rc))
                .to_string_lossy()
                .into_owned();
            return Err(msg);
        }
        let mut canon = None;
        let mut addrs = Vec::new();
        let mut p = res;
        while !p.is_null() {
            let ai = &*p;
            if canon.is_none() && !ai.ai_canonname.is_null() {
                canon = Some(
                    CStr::from_ptr(ai.ai_canonname)
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            match ai.ai_family {
                libc::AF_INET if !ai.ai_addr.is_null() => {
                    let sin = &*(ai.ai_addr as *const libc::sockaddr_in);
                    let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    addrs.push(SocketAddr::from((ip, u16::from_be(sin.sin_port))));
                }
                libc::AF_INET6 if !ai.ai_addr.is_null() => {
                    let sin6 = &*(ai.ai_addr as *const libc::sockaddr_in6);
                    let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                    addrs.push(SocketAddr::V6(std::net::SocketAddrV6::new(
                        ip,
                        u16::from_be(sin6.sin6_port),
                        sin6.sin6_flowinfo,
                        sin6.sin6_scope_id,
                    )));
                }
                _ => {}
            }
            p = ai.ai_next;
        }
        libc::freeaddrinfo(res);
        Ok((canon, addrs))
    }
}
