//! Which addresses a client-chosen URL (an asynchronous task's webhook) may reach: the gateway refuses
//! a non-public IP literal when the task is submitted, r1-center checks every address a name resolves
//! to before it calls, both with this one rule.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is an address on the public internet: not loopback, private, link-local (the cloud
/// metadata service), carrier-grade NAT, unspecified, broadcast, multicast, documentation, benchmarking
/// or reserved space, in IPv4 or IPv6 (IPv4-mapped IPv6 checked as its IPv4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)) // documentation
}

/// The host of an `http://` or `https://` URL, without the brackets of an IPv6 literal; `None` when
/// `url` is not such a URL.
pub fn http_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => host_port.split(':').next()?,
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_from_http_urls_only() {
        assert_eq!(http_host("https://hooks.example.com/r1?x=1"), Some("hooks.example.com"));
        assert_eq!(http_host("http://10.0.0.5:8080/hook"), Some("10.0.0.5"));
        assert_eq!(http_host("http://user:pw@127.0.0.1/"), Some("127.0.0.1"));
        assert_eq!(http_host("http://[::1]:9/x"), Some("::1"));
        assert_eq!(http_host("ftp://example.com/"), None);
        assert_eq!(http_host("http:///nohost"), None);
    }
}
