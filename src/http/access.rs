//! Who may use the admin surface (`/api`, `/metrics`, the page's data), decided per request by
//! its channel and credential, never by where it comes from (DESIGN.md, "No ambient trust"):
//!
//! - the admin unix socket (0600: only the daemon's user can connect) needs nothing else;
//! - over TCP, from loopback too: `Authorization: Bearer <admin-token>`, or the page's session
//!   cookie with its page key header ([`crate::session`]: a cookie reaches every server on the
//!   same host, whatever its port; the page key only the page's own origin holds); a browser
//!   request with the cookie must also look like the
//!   page's own (same-origin `Origin` and a JSON body on every state change, no cross-site
//!   `Sec-Fetch-Site`), since a browser attaches cookies to requests other pages make;
//! - while the listener is on loopback, the `Host` must name loopback or the `public_url`
//!   host, so a DNS-rebound name (`evil.example` resolving to 127.0.0.1) gets nothing.
//!
//! The webhook route is authenticated by the secret in its path and checked in [`super`].

use std::net::{IpAddr, SocketAddr};

use hyper::header::{self, HeaderMap};
use hyper::{Method, StatusCode};
use subtle::ConstantTimeEq;

use super::Peer;
use crate::state::{ADMIN_TOKEN, Shared};

/// How a request proved itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The admin unix socket.
    Socket,
    /// `Authorization: Bearer` with the admin token.
    Bearer,
    /// The page's session cookie.
    Session,
}

/// A refusal: status and a one-line reason for the client and the log.
pub type Refusal = (StatusCode, &'static str);

const NO_CREDENTIAL: &str = "the admin API needs a credential: `Authorization: Bearer <admin token>`, or log in to the page (`plexsync web-url` prints a link)";

const NO_PAGE_KEY: &str = "a session cookie without the page's key (X-Plexsync-Page-Key): the page sends it; if this browser lost it, log in again (`plexsync web-url` prints a link)";

/// Authenticate a request to the admin surface.
pub fn authenticate(
    shared: &Shared,
    peer: Peer,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Credential, Refusal> {
    if let Peer::Unix = peer {
        return Ok(Credential::Socket);
    }
    // Only a Bearer credential is ours: a proxy in front may use Basic auth of its own and
    // pass that header on, and the page's session must still work behind it.
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let (cookies, page_key) = session_parts(headers);
    if let Some(given) = bearer {
        match shared.secret(ADMIN_TOKEN) {
            Some(token) if bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) => {
                return Ok(Credential::Bearer);
            }
            // An auth proxy in front (oauth2-proxy, a forward-auth) may pass a Bearer token
            // of its own upstream: with a session cookie, the session decides.
            _ if !cookies.is_empty() => {}
            _ => return Err((StatusCode::UNAUTHORIZED, "wrong admin token")),
        }
    }
    if cookies.is_empty() {
        return Err((StatusCode::UNAUTHORIZED, NO_CREDENTIAL));
    }
    // The browser rules first: they hold for any cookie-carrying request, with or without
    // the page key, and say why another site's page is refused.
    browser_request_ok(shared, method, headers)?;
    let Some(page_key) = page_key else {
        return Err((StatusCode::UNAUTHORIZED, NO_PAGE_KEY));
    };
    if !cookies.iter().any(|c| shared.session_valid(c, page_key)) {
        return Err((
            StatusCode::UNAUTHORIZED,
            "the session has expired, the admin token changed or the page key is not this session's: log in again",
        ));
    }
    Ok(Credential::Session)
}

/// The session cookie values a request carries (every one sent, not just the first: another
/// server on this host can set a cookie of the same name that browsers send before ours;
/// bounded, as each costs a decryption) and its page key.
pub fn session_parts(headers: &HeaderMap) -> (Vec<&str>, Option<&str>) {
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(crate::session::from_header)
        .take(crate::session::MAX_TRIED)
        .collect();
    let page_key = headers
        .get(crate::session::PAGE_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    (cookies, page_key)
}

/// The rules a cookie-carrying (browser) request must meet, also for the login itself.
pub fn browser_request_ok(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // "same-site" includes other ports of the same host: another local web app's page.
    if fetch_site.eq_ignore_ascii_case("cross-site") || fetch_site.eq_ignore_ascii_case("same-site")
    {
        return Err((
            StatusCode::FORBIDDEN,
            "refused: a request from another site's page",
        ));
    }
    if matches!(*method, Method::GET | Method::HEAD) {
        return Ok(());
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Err((
            StatusCode::FORBIDDEN,
            "refused: a browser request that changes something must carry its Origin",
        ));
    };
    if !same_origin(shared, origin, headers) {
        return Err((
            StatusCode::FORBIDDEN,
            "refused: the request's Origin is not this page",
        ));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "refused: a browser request that changes something must send Content-Type: application/json",
        ));
    }
    Ok(())
}

/// Whether `origin` (`scheme://host[:port]`) is the page's own: the `Host` the browser
/// connected to, or the configured `public_url` (a proxy may pass its own Host upstream).
fn same_origin(shared: &Shared, origin: &str, headers: &HeaderMap) -> bool {
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
        return true;
    }
    shared
        .config()
        .server
        .public_url
        .as_deref()
        .is_some_and(|u| {
            let u = u.trim_end_matches('/');
            // Compare scheme + authority only; public_url may carry a path prefix.
            let base = match u.split_once("://") {
                Some((scheme, rest)) => {
                    format!("{scheme}://{}", rest.split('/').next().unwrap_or(""))
                }
                None => return false,
            };
            base.eq_ignore_ascii_case(origin)
        })
}

/// The DNS-rebinding check: while `listen` is a loopback address, the request must name
/// loopback (`localhost`, `127.0.0.1`, `[::1]`, any port) or the `public_url` host.
pub fn host_allowed(listen: SocketAddr, public_url: Option<&str>, host: Option<&str>) -> bool {
    if !listen.ip().is_loopback() {
        return true;
    }
    let Some(name) = host.map(host_name) else {
        return false;
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return true;
    }
    public_url
        .and_then(|u| u.split_once("://"))
        .map(|(_, rest)| host_name(rest.split('/').next().unwrap_or("")))
        .is_some_and(|h| !h.is_empty() && h.eq_ignore_ascii_case(name))
}

/// `name` of `name:port`, `[v6]:port`, `[v6]`, `name`.
fn host_name(authority: &str) -> &str {
    let a = authority.trim();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match a.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_loopback_only_loopback_names_and_the_public_host_pass() {
        let lo: SocketAddr = "127.0.0.1:8750".parse().unwrap();
        for ok in [
            "localhost",
            "localhost:8750",
            "LOCALHOST:1",
            "127.0.0.1:8750",
            "127.0.0.1",
            "[::1]:8750",
            "[::1]",
        ] {
            assert!(host_allowed(lo, None, Some(ok)), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8750",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "",
            "192.168.1.2:8750",
        ] {
            assert!(!host_allowed(lo, None, Some(bad)), "{bad}");
        }
        assert!(!host_allowed(lo, None, None));
        let public = Some("https://sync.example.net/plexsync");
        assert!(host_allowed(lo, public, Some("sync.example.net")));
        assert!(host_allowed(lo, public, Some("sync.example.net:443")));
        assert!(!host_allowed(lo, public, Some("evil.example")));
    }

    #[test]
    fn off_loopback_the_host_is_not_checked() {
        let any: SocketAddr = "0.0.0.0:8750".parse().unwrap();
        assert!(host_allowed(any, None, Some("evil.example")));
    }
}
