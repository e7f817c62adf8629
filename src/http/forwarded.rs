//! The client address of a TCP request: the peer, unless the peer is a configured trusted
//! proxy (`[server] trusted_proxies`), in which case the proxy's `X-Forwarded-For` (only when
//! there is none at all, `Forwarded: for=`) names it. Only rate limits, activity rows and logs use this address;
//! access is never granted for an address.
//!
//! The list is read from the right: each trusted proxy appends the address it saw, so the
//! rightmost entry that is not itself a trusted proxy is the first hop nobody we trust vouches
//! for. Entries to its left were written by the client and are ignored.

use std::net::{IpAddr, SocketAddr};

use hyper::HeaderMap;
use ipnet::IpNet;

pub use crate::config::ForwardedHeader;

/// Most entries read from the forwarding headers (a longer chain is cut from the left).
const MAX_HOPS: usize = 32;

pub fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    which: ForwardedHeader,
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    // `auto`: with X-Forwarded-For present at all, our proxy spoke there: `Forwarded` is then
    // the client's own, never read. A named header is the only one read: a proxy writing only
    // `Forwarded` passes the client's own X-Forwarded-For on. An X-Forwarded-For we cannot
    // read (bytes that are not visible ASCII) names nobody, so the client is the peer.
    let xff = match which {
        ForwardedHeader::Auto => headers.contains_key("x-forwarded-for"),
        ForwardedHeader::XForwardedFor => true,
        ForwardedHeader::Forwarded => false,
    };
    let hops: Vec<Option<IpAddr>> = if xff && !headers.contains_key("x-forwarded-for") {
        return peer;
    } else if xff {
        match joined(headers, "x-forwarded-for") {
            Some(v) => v.split(',').map(|h| parse_node(h.trim())).collect(),
            None => return peer,
        }
    } else {
        joined(headers, "forwarded")
            .map(|v| {
                v.split(',')
                    .filter_map(|elem| {
                        elem.split(';').find_map(|pair| {
                            let (k, val) = pair.trim().split_once('=')?;
                            k.trim()
                                .eq_ignore_ascii_case("for")
                                .then(|| parse_node(val.trim()))
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let start = hops.len().saturating_sub(MAX_HOPS);
    for hop in hops[start..].iter().rev() {
        match hop {
            Some(ip) if is_trusted(ip) => continue,
            Some(ip) => return canonical(*ip),
            // An entry we cannot read ("unknown", an obfuscated name, garbage): stop at the
            // last address we can vouch for rather than believe anything further left.
            None => break,
        }
    }
    peer
}

/// All values of a header joined with commas (a proxy may add a second header line).
fn joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let v = v.to_str().ok()?;
        match &mut out {
            Some(s) => {
                s.push(',');
                s.push_str(v);
            }
            None => out = Some(v.to_string()),
        }
    }
    out
}

/// One node: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:80`, optionally quoted.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`, what a dual-stack socket reports) as plain IPv4, so
/// `127.0.0.1/32` in the config matches it.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// HAProxy with `option forwarded` alone writes `Forwarded` and passes the client's own
    /// `X-Forwarded-For` on: named, only the proxy's header is read, so a client cannot pick
    /// its address (and with it a rate-limit bucket, Plex's included).
    #[test]
    fn a_named_header_is_the_only_one_read() {
        let t = nets(&["127.0.0.1/32"]);
        let hs = h(&[
            ("x-forwarded-for", "192.0.2.66"),
            ("forwarded", "for=203.0.113.7"),
        ]);
        let at = |which| client_ip(ip("127.0.0.1"), &hs, &t, which);
        assert_eq!(at(ForwardedHeader::Auto), ip("192.0.2.66"));
        assert_eq!(at(ForwardedHeader::Forwarded), ip("203.0.113.7"));
        assert_eq!(at(ForwardedHeader::XForwardedFor), ip("192.0.2.66"));
        let only_forwarded = h(&[("forwarded", "for=203.0.113.7")]);
        assert_eq!(
            client_ip(
                ip("127.0.0.1"),
                &only_forwarded,
                &t,
                ForwardedHeader::XForwardedFor
            ),
            ip("127.0.0.1"),
            "the named header is missing: the proxy named nobody"
        );
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let hs = h(&[("x-forwarded-for", "9.9.9.9")]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &hs, &[], ForwardedHeader::Auto),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_ip(
                ip("10.0.0.5"),
                &hs,
                &nets(&["127.0.0.1/32"]),
                ForwardedHeader::Auto
            ),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let t = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        // The client forged "6.6.6.6"; our proxies appended what they saw.
        let hs = h(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3")]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &hs, &t, ForwardedHeader::Auto),
            ip("203.0.113.7")
        );
        // Two header lines are one list.
        let hs = h(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.8"),
        ]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &hs, &t, ForwardedHeader::Auto),
            ip("203.0.113.8")
        );
        // All trusted: the peer.
        let hs = h(&[("x-forwarded-for", "10.0.0.1")]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &hs, &t, ForwardedHeader::Auto),
            ip("127.0.0.1")
        );
        // Garbage on the right stops the walk.
        let hs = h(&[("x-forwarded-for", "203.0.113.7, unknown")]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &hs, &t, ForwardedHeader::Auto),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn forwarded_is_read_when_x_forwarded_for_is_absent() {
        let t = nets(&["::1/128", "127.0.0.1/32"]);
        let hs = h(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https, for=127.0.0.1",
        )]);
        assert_eq!(
            client_ip(ip("::1"), &hs, &t, ForwardedHeader::Auto),
            ip("2001:db8::7")
        );
        let hs = h(&[("forwarded", "for=_hidden")]);
        assert_eq!(
            client_ip(ip("::1"), &hs, &t, ForwardedHeader::Auto),
            ip("::1")
        );
    }

    #[test]
    fn an_unreadable_x_forwarded_for_never_falls_back_to_forwarded() {
        let t = nets(&["127.0.0.1/32"]);
        let mut hs = HeaderMap::new();
        hs.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff, 203.0.113.7").unwrap(),
        );
        hs.append("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        assert_eq!(
            client_ip(ip("127.0.0.1"), &hs, &t, ForwardedHeader::Auto),
            ip("127.0.0.1")
        );
        // One unreadable line among readable ones: the same.
        let mut hs = h(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        hs.append("x-forwarded-for", HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(
            client_ip(ip("127.0.0.1"), &hs, &t, ForwardedHeader::Auto),
            ip("127.0.0.1")
        );
        // A readable one wins over Forwarded as before.
        let hs = h(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &hs, &t, ForwardedHeader::Auto),
            ip("203.0.113.7")
        );
        // An empty one names nobody either.
        let hs = h(&[("x-forwarded-for", ""), ("forwarded", "for=6.6.6.6")]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &hs, &t, ForwardedHeader::Auto),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_blocks() {
        let t = nets(&["127.0.0.1/32"]);
        let hs = h(&[("x-forwarded-for", "198.51.100.4:5555")]);
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), &hs, &t, ForwardedHeader::Auto),
            ip("198.51.100.4")
        );
    }
}
