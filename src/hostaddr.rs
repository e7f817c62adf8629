//! The base URL other machines use to reach this daemon (`[server] public_url`, else the listen
//! address), for the webhook URL and the page's login link. Owns the one rule that a wildcard
//! listen address (`0.0.0.0`, `[::]`) is never printed: Plex cannot post to it, so a real
//! address of one of this host's interfaces is named instead (and which one), or the caller is
//! told to set `public_url`.

use std::net::{IpAddr, SocketAddr};

use crate::config::Config;

/// A base URL (no trailing slash), with a note when it was guessed from an interface.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicBase {
    pub url: String,
    /// Set when the listen address is a wildcard and an interface address was picked.
    pub note: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "[server] listen is {listen}, which is no address Plex can use, and this host has no other \
     address than loopback: set [server] public_url to the URL Plex reaches plexsync at"
)]
pub struct NoAddress {
    listen: SocketAddr,
}

/// The URL base for `listen` under `cfg`.
pub fn public_base(cfg: &Config, listen: SocketAddr) -> Result<PublicBase, NoAddress> {
    choose(
        cfg.server.public_url.as_deref(),
        listen,
        &interface_addresses(),
    )
}

/// The path `public_url` puts the daemon under (`"/plexsync"` for
/// `https://example.net/plexsync/`), without its trailing slash; None at the root. A proxy that
/// passes that prefix on (nginx's `proxy_pass` without a URI part) is then served the same as one
/// that strips it.
pub fn path_prefix(public_url: Option<&str>) -> Option<&str> {
    let u = public_url?;
    let after_scheme = &u[u.find("://")? + 3..];
    let path = &after_scheme[after_scheme.find('/')?..];
    let path = path
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_end_matches('/');
    (!path.is_empty()).then_some(path)
}

fn choose(
    public_url: Option<&str>,
    listen: SocketAddr,
    interfaces: &[(String, IpAddr)],
) -> Result<PublicBase, NoAddress> {
    if let Some(u) = public_url {
        return Ok(PublicBase {
            url: u.trim_end_matches('/').to_string(),
            note: None,
        });
    }
    if !listen.ip().is_unspecified() {
        return Ok(PublicBase {
            url: format!("http://{listen}"),
            note: None,
        });
    }
    // IPv4 first: a `[::]` socket on Linux also takes IPv4, and Plex setups are mostly IPv4.
    // Link-local IPv6 addresses need a zone and are useless in a URL Plex stores.
    let usable = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    };
    let pick = interfaces
        .iter()
        .filter(|(_, ip)| usable(ip))
        .filter(|(_, ip)| listen.is_ipv6() || ip.is_ipv4())
        .min_by_key(|(_, ip)| ip.is_ipv6());
    let Some((name, ip)) = pick else {
        return Err(NoAddress { listen });
    };
    let addr = SocketAddr::new(*ip, listen.port());
    Ok(PublicBase {
        url: format!("http://{addr}"),
        note: Some(format!(
            "[server] listen is {listen}; using {ip}, the address of interface {name}. If Plex \
             reaches this host by another address or name, set [server] public_url"
        )),
    })
}

/// This host's interface addresses (name, address), from getifaddrs(3). Empty on failure.
fn interface_addresses() -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that we only read and then free once with
    // freeifaddrs; every pointer is checked for null before it is dereferenced, and each
    // sockaddr is read as the type its family says.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                .to_string_lossy()
                .into_owned();
            let ip = match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes())
                }
                libc::AF_INET6 => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::from(sa.sin6_addr.s6_addr)
                }
                _ => continue,
            };
            out.push((name, ip));
        }
        libc::freeifaddrs(head);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifs() -> Vec<(String, IpAddr)> {
        vec![
            ("lo".into(), "127.0.0.1".parse().unwrap()),
            ("lo".into(), "::1".parse().unwrap()),
            ("eth0".into(), "fe80::1".parse().unwrap()),
            ("eth0".into(), "2001:db8::5".parse().unwrap()),
            ("eth0".into(), "192.168.1.20".parse().unwrap()),
        ]
    }

    #[test]
    fn the_path_prefix_of_a_public_url() {
        assert_eq!(path_prefix(None), None);
        assert_eq!(path_prefix(Some("https://example.net")), None);
        assert_eq!(path_prefix(Some("https://example.net/")), None);
        assert_eq!(
            path_prefix(Some("https://example.net/plexsync")),
            Some("/plexsync")
        );
        assert_eq!(path_prefix(Some("https://example.net/a/b/")), Some("/a/b"));
        assert_eq!(path_prefix(Some("http://[::1]:8750/p")), Some("/p"));
    }

    #[test]
    fn public_url_wins_and_loses_its_trailing_slash() {
        let b = choose(
            Some("https://sync.example.net/"),
            "0.0.0.0:8750".parse().unwrap(),
            &[],
        )
        .unwrap();
        assert_eq!(b.url, "https://sync.example.net");
        assert_eq!(b.note, None);
    }

    #[test]
    fn a_concrete_listen_address_is_used_as_it_is() {
        let b = choose(None, "127.0.0.1:8750".parse().unwrap(), &ifs()).unwrap();
        assert_eq!(b.url, "http://127.0.0.1:8750");
    }

    #[test]
    fn a_wildcard_is_replaced_by_an_interface_address_and_says_which() {
        let b = choose(None, "0.0.0.0:8750".parse().unwrap(), &ifs()).unwrap();
        assert_eq!(b.url, "http://192.168.1.20:8750");
        let note = b.note.unwrap();
        assert!(
            note.contains("eth0") && note.contains("public_url"),
            "{note}"
        );
        // [::] takes IPv4 too; IPv4 is preferred, link-local never used.
        let b = choose(None, "[::]:8750".parse().unwrap(), &ifs()).unwrap();
        assert_eq!(b.url, "http://192.168.1.20:8750");
        let v6only = vec![
            ("eth0".to_string(), "fe80::1".parse().unwrap()),
            ("eth0".to_string(), "2001:db8::5".parse().unwrap()),
        ];
        let b = choose(None, "[::]:8750".parse().unwrap(), &v6only).unwrap();
        assert_eq!(b.url, "http://[2001:db8::5]:8750");
    }

    #[test]
    fn a_wildcard_without_any_usable_address_is_refused() {
        let lo = vec![("lo".to_string(), "127.0.0.1".parse().unwrap())];
        let e = choose(None, "0.0.0.0:8750".parse().unwrap(), &lo).unwrap_err();
        assert!(e.to_string().contains("public_url"));
        assert!(!e.to_string().contains("http://0.0.0.0"));
    }

    #[test]
    fn the_host_has_interfaces() {
        // Every Linux host has at least loopback.
        assert!(!interface_addresses().is_empty());
    }
}
