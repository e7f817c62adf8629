//! The Plex Media Server client: authenticated XML requests and the typed answers the daemon
//! needs. This file owns the transport ([`PlexClient::get_xml`], [`PlexClient::get_container`]),
//! the error type and a show's own external ids ([`PlexClient::show_meta`]); the submodules own
//! the rest:
//!
//! - [`server`]: `/identity`, `/accounts`;
//! - [`history`]: `/status/sessions/history/all` pages and walks;
//! - [`library`]: `/library/sections` and watched-episode scans of a section;
//! - [`paging`]: the pure paging bookkeeping every walker shares;
//! - [`walk`]: the one request-and-record path of every paged walk ([`walk::Pages`]);
//! - [`xml`]: the bounded element tree and lenient attribute readers.
//!
//! Every failure is a [`PlexError`] that says whether it is worth retrying and names the
//! endpoint path (never the query, never the token: the token travels in the `X-Plex-Token`
//! header, and [`PlexClient`]'s `Debug` redacts it).
//!
//! Error mapping, the same for every endpoint: 401 → `Unauthorized`, 404 → `NotFound`,
//! 5xx / 408 / 429 / connection failure / timeout / a body cut short → `Transient`; a 3xx →
//! `Redirected` (redirects are never followed: the token would travel to wherever the
//! `Location` points, another host included); any other non-2xx, a body that is not XML,
//! larger than [`MAX_BODY`], or whose root is not `<MediaContainer>` → `Malformed`.

use std::time::Duration;

use plexsync_plugin_api::Secret;
use serde::{Deserialize, Serialize};

pub mod history;
pub mod library;
pub mod paging;
pub mod server;
#[cfg(test)]
mod test_samples;
#[cfg(test)]
mod test_server;
pub mod walk;
pub mod xml;

pub use history::{HistoryPage, HistoryPages, HistoryQuery, HistoryRow, HistoryWalk};
pub use library::{EpisodePage, EpisodePages, EpisodeWalk, LibraryEpisode, Section};
pub use paging::Pager;
pub use server::{Identity, PlexAccount};
pub use walk::Pages;

/// The largest response body read (64 MiB); a page of 100 history rows is about 60 KiB.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PlexError {
    #[error("Plex token rejected ({endpoint}: 401)")]
    Unauthorized { endpoint: String },
    #[error("Plex has no {endpoint} (404)")]
    NotFound { endpoint: String },
    #[error("Plex unreachable or failing ({endpoint}): {message}")]
    Transient { endpoint: String, message: String },
    #[error("Plex answered {endpoint} with something unusable: {message}")]
    Malformed { endpoint: String, message: String },
    /// A 3xx. Not transient: it is the configured `[plex] url` that is wrong (http that
    /// redirects to https, a proxy path, a moved server), and only a person can fix it.
    /// `location` is the target without query, fragment or user info.
    #[error(
        "Plex redirects {endpoint} to {location} ({status}); redirects are not followed (the token would go along): set [plex] url to the final address"
    )]
    Redirected {
        endpoint: String,
        status: u16,
        location: String,
    },
}

impl PlexError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PlexError::Transient { .. } | PlexError::Unauthorized { .. }
        )
    }
}

/// A show's identity as the Plex server knows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShowMeta {
    pub rating_key: String,
    pub title: Option<String>,
    pub year: Option<i32>,
    /// The show's own `guid` (`plex://show/…` or a legacy agent guid).
    pub guid: Option<String>,
    /// The show's `<Guid id=…>` children: SHOW-level external ids.
    pub guids: Vec<String>,
    /// The library section's title (`librarySectionTitle`), for people deciding a conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
}

#[derive(Clone)]
pub struct PlexClient {
    http: reqwest::Client,
    base: String,
    token: Option<Secret>,
    client_id: String,
}

impl PlexClient {
    /// The server's base URL (`[plex] url`, as the requests use it).
    pub fn base(&self) -> &str {
        &self.base
    }
}

impl std::fmt::Debug for PlexClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlexClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl PlexClient {
    pub fn new(
        base: &str,
        token: Option<Secret>,
        client_id: String,
        timeout: Duration,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            // A followed redirect resends every header, `X-Plex-Token` included, to wherever
            // `Location` points (another host too); the tracker and TMDB clients refuse
            // redirects for the same reason. A 3xx becomes `PlexError::Redirected`.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("plexsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(PlexClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            client_id,
        })
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// GET `path` and parse the XML answer. The query string is built by hand: keys are
    /// written as given, so a Plex filter operator can lead the `=` (the key `viewedAt>` gives
    /// `viewedAt>=123`, operator in the KEY, PLEX_PROTOCOL §3.1); values are percent-encoded.
    /// On the wire the URL parser under reqwest (WHATWG rules) still escapes `>` as `%3E`
    /// (`viewedAt%3E=123`), exactly as python-plexapi's `requests` does; PMS decodes the key.
    /// `page` sends both `X-Plex-Container-Start` and `X-Plex-Container-Size`.
    pub async fn get_xml(
        &self,
        path: &str,
        query: &[(&str, String)],
        page: Option<(u64, u64)>,
    ) -> Result<xml::Element, PlexError> {
        let endpoint = path.to_string();
        let mut url = format!("{}{}", self.base, path);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            url.push('=');
            url.push_str(&encode_segment(v));
        }
        let mut req = self
            .http
            .get(url)
            .header("Accept", "application/xml")
            .header("X-Plex-Client-Identifier", &self.client_id)
            .header("X-Plex-Product", "plexsync")
            .header("X-Plex-Version", env!("CARGO_PKG_VERSION"));
        if let Some(t) = &self.token {
            req = req.header("X-Plex-Token", t.expose());
        }
        if let Some((start, size)) = page {
            req = req
                .header("X-Plex-Container-Start", start.to_string())
                .header("X-Plex-Container-Size", size.to_string());
        }
        let resp = req.send().await.map_err(|e| PlexError::Transient {
            endpoint: endpoint.clone(),
            message: describe_reqwest(&e),
        })?;
        let status = resp.status();
        if status.as_u16() == 401 {
            return Err(PlexError::Unauthorized { endpoint });
        }
        if status.as_u16() == 404 {
            return Err(PlexError::NotFound { endpoint });
        }
        if status.is_redirection() {
            return Err(PlexError::Redirected {
                endpoint,
                status: status.as_u16(),
                location: redirect_target(resp.url(), resp.headers()),
            });
        }
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            return Err(PlexError::Transient {
                endpoint,
                message: format!("HTTP {status}"),
            });
        }
        if !status.is_success() {
            return Err(PlexError::Malformed {
                endpoint,
                message: format!("HTTP {status}"),
            });
        }
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(PlexError::Malformed {
                endpoint,
                message: format!("response larger than {MAX_BODY} bytes"),
            });
        }
        let mut resp = resp;
        let mut body: Vec<u8> = Vec::new();
        loop {
            let chunk = resp.chunk().await.map_err(|e| PlexError::Transient {
                endpoint: endpoint.clone(),
                message: describe_reqwest(&e),
            })?;
            let Some(chunk) = chunk else { break };
            if body.len() + chunk.len() > MAX_BODY {
                return Err(PlexError::Malformed {
                    endpoint,
                    message: format!("response larger than {MAX_BODY} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&body);
        xml::parse(&text).map_err(|e| PlexError::Malformed {
            endpoint,
            message: e.to_string(),
        })
    }

    /// [`get_xml`](Self::get_xml), and the root must be `<MediaContainer>` (an HTML page or
    /// anything else with a 200 is `Malformed`, naming `path`).
    pub async fn get_container(
        &self,
        path: &str,
        query: &[(&str, String)],
        page: Option<(u64, u64)>,
    ) -> Result<xml::Element, PlexError> {
        let root = self.get_xml(path, query, page).await?;
        if root.name != "MediaContainer" {
            return Err(PlexError::Malformed {
                endpoint: path.to_string(),
                message: format!("root element is <{}>, not <MediaContainer>", root.name),
            });
        }
        Ok(root)
    }

    /// The show's metadata with its external ids (`includeGuids=1`).
    pub async fn show_meta(&self, rating_key: &str) -> Result<ShowMeta, PlexError> {
        let path = format!("/library/metadata/{}", encode_segment(rating_key));
        let root = self
            .get_container(&path, &[("includeGuids", "1".into())], None)
            .await?;
        parse_show_meta(&root, rating_key).ok_or_else(|| PlexError::Malformed {
            endpoint: path,
            message: "no show (<Directory type=\"show\">) in MediaContainer".into(),
        })
    }
}

/// The show in a `/library/metadata/<ratingKey>` container; None unless the item is a
/// show-level `<Directory type="show">`. An episode (`<Video>`) or a season carries its own
/// `<Guid>` ids, which a matcher would take for the show's (invariant 4).
pub fn parse_show_meta(root: &xml::Element, rating_key: &str) -> Option<ShowMeta> {
    let item = root
        .children
        .iter()
        .find(|c| c.name == "Directory" && c.attr("type").map(str::trim) == Some("show"))?;
    Some(ShowMeta {
        rating_key: item.attr("ratingKey").unwrap_or(rating_key).to_string(),
        title: item.attr("title").map(str::to_string),
        year: item.attr_num("year"),
        guid: item
            .attr("guid")
            .filter(|g| !g.is_empty())
            .map(str::to_string),
        guids: item
            .children_named("Guid")
            .filter_map(|g| g.attr("id"))
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect(),
        library: item
            .attr("librarySectionTitle")
            .or_else(|| root.attr("librarySectionTitle"))
            .filter(|t| !t.trim().is_empty())
            .map(str::to_string),
    })
}

/// Percent-encode a path segment (rating keys are numeric in practice; be safe anyway).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The longest redirect target echoed in an error.
const MAX_LOCATION: usize = 200;

/// Where a 3xx points, for the error: scheme, host, port and path only, since a query or user
/// info could carry credentials; bounded in length, and only printable ASCII (reqwest hands
/// out a `Location` as text only when it is visible ASCII; the URL parser percent-encodes the
/// rest of the path).
fn redirect_target(from: &reqwest::Url, headers: &reqwest::header::HeaderMap) -> String {
    let Some(location) = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
    else {
        return "(no usable Location header)".into();
    };
    match from.join(location) {
        Ok(mut to) => {
            to.set_query(None);
            to.set_fragment(None);
            // Both only fail for URLs without a host, where there is nothing to remove.
            let _ = to.set_username("");
            let _ = to.set_password(None);
            let mut shown: String = to
                .as_str()
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(MAX_LOCATION)
                .collect();
            if to.as_str().len() > MAX_LOCATION {
                shown.push('…');
            }
            shown
        }
        Err(_) => "(an unparseable Location)".into(),
    }
}

/// A reqwest error in one line, without the URL's query (no secrets travel there, but keep
/// messages short and stable).
pub fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    let mut msg = kind.to_string();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    // The innermost cause says the most ("Connection refused").
    let mut last = None;
    while let Some(s) = src {
        last = Some(s.to_string());
        src = s.source();
    }
    if let Some(l) = last {
        msg.push_str(": ");
        msg.push_str(&l);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_meta_from_new_agent_xml() {
        let x = r#"<MediaContainer size="1"><Directory ratingKey="5" type="show" title="The Office" year="2005" guid="plex://show/5d9c086c46115600200aa2fe"><Guid id="imdb://tt0386676"/><Guid id="tmdb://2316"/><Guid id="tvdb://73244"/></Directory></MediaContainer>"#;
        let m = parse_show_meta(&xml::parse(x).unwrap(), "5").unwrap();
        assert_eq!(
            m.guids,
            vec!["imdb://tt0386676", "tmdb://2316", "tvdb://73244"]
        );
        assert_eq!(m.year, Some(2005));
        assert_eq!(m.library, None);
        let x = r#"<MediaContainer size="1" librarySectionTitle="TV Shows"><Directory ratingKey="5" type="show" title="The Office" year="2005"/></MediaContainer>"#;
        let m = parse_show_meta(&xml::parse(x).unwrap(), "5").unwrap();
        assert_eq!(m.library.as_deref(), Some("TV Shows"));
        assert!(parse_show_meta(&xml::parse("<MediaContainer/>").unwrap(), "5").is_none());
        // An episode or a season is not a show: its ids must not reach the matchers.
        for item in [
            r#"<Video ratingKey="5" type="episode" title="Pilot" guid="plex://episode/1"><Guid id="tmdb://62085"/></Video>"#,
            r#"<Directory ratingKey="5" type="season" title="Season 1"><Guid id="tvdb://30272"/></Directory>"#,
            r#"<Directory ratingKey="5" title="No type"><Guid id="tmdb://1"/></Directory>"#,
        ] {
            let x = format!("<MediaContainer size=\"1\">{item}</MediaContainer>");
            assert!(
                parse_show_meta(&xml::parse(&x).unwrap(), "5").is_none(),
                "{item}"
            );
        }
    }

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use test_server::TestServer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TOKEN: &str = "tok-SECRET-123";

    fn client(url: &str, timeout_ms: u64) -> PlexClient {
        crate::install_tls_provider();
        PlexClient::new(
            url,
            Some(Secret::new(TOKEN.into())),
            "test-client".into(),
            Duration::from_millis(timeout_ms),
        )
        .unwrap()
    }

    fn assert_no_token(e: &PlexError) {
        let shown = format!("{e} | {e:?}");
        assert!(!shown.contains(TOKEN), "token leaked: {shown}");
    }

    #[tokio::test]
    async fn statuses_map_the_same_on_every_endpoint() {
        let srv = TestServer::start(|r| {
            // `code=N` scripts the status; without it: a 200 whose body is an HTML page.
            let code: u16 = r
                .query
                .split('&')
                .find_map(|p| p.strip_prefix("code="))
                .and_then(|c| c.parse().ok())
                .unwrap_or(200);
            (
                code,
                format!(
                    "<html><head><title>{code}</title></head><body><h1>{code}</h1></body></html>"
                ),
            )
        })
        .await;
        let c = client(&srv.url, 5_000);
        for (code, want) in [
            (401, "Unauthorized"),
            (404, "NotFound"),
            (500, "Transient"),
            (503, "Transient"),
            (408, "Transient"),
            (429, "Transient"),
            (400, "Malformed"),
            (403, "Malformed"),
            (200, "Malformed"), // an HTML page with a 200
        ] {
            let e = c
                .get_container(
                    "/status/sessions/history/all",
                    &[("code", code.to_string())],
                    Some((0, 1)),
                )
                .await
                .unwrap_err();
            let got = format!("{e:?}");
            assert!(got.starts_with(want), "{code}: {got}");
            assert!(
                got.contains("/status/sessions/history/all"),
                "names the endpoint: {got}"
            );
            assert!(!got.contains("code="), "no query in errors: {got}");
            assert_no_token(&e);
        }
        // The typed endpoints go through the same mapping (here: an HTML 200 root).
        for e in [
            c.identity().await.unwrap_err(),
            c.accounts().await.unwrap_err(),
            c.show_sections().await.unwrap_err(),
            c.watched_episodes("2", 0, 0, 10).await.unwrap_err(),
            c.show_meta("5").await.unwrap_err(),
        ] {
            assert!(
                matches!(&e, PlexError::Malformed { message, .. } if message.contains("not <MediaContainer>")),
                "{e:?}"
            );
            assert_no_token(&e);
        }
    }

    #[tokio::test]
    async fn malformed_xml_names_the_endpoint() {
        let srv = TestServer::start(|r| {
            let body = match r.path.as_str() {
                "/identity" => r#"<MediaContainer size="0" claimed="1" machineIdentifier="ab"#,
                "/accounts" => r#"<MediaContainer><Account id="1"></MediaContainer>"#,
                "/library/sections" => "not xml",
                _ => r#"<MediaContainer size="0" claimed="1"/>"#,
            };
            (200, body.to_string())
        })
        .await;
        let c = client(&srv.url, 5_000);
        for (e, endpoint) in [
            (c.identity().await.unwrap_err(), "/identity"),
            (c.accounts().await.unwrap_err(), "/accounts"),
            (c.sections().await.unwrap_err(), "/library/sections"),
        ] {
            match &e {
                PlexError::Malformed { endpoint: ep, .. } => assert_eq!(ep, endpoint),
                e => panic!("{endpoint}: {e:?}"),
            }
            assert!(e.to_string().contains(endpoint), "{e}");
            assert_no_token(&e);
        }
    }

    #[tokio::test]
    async fn identity_and_accounts_over_http() {
        let srv = TestServer::start(|r| match r.path.as_str() {
            "/identity" => (200, r#"<?xml version="1.0" encoding="UTF-8"?>
<MediaContainer size="0" claimed="1" machineIdentifier="6a646027a56abb6dbdf72484564db8567c737430" version="1.29.1.6316-f4cdfea9c">
</MediaContainer>"#.into()),
            "/accounts" => (200, r#"<MediaContainer size="2" identifier="com.plexapp.system.accounts"><Account id="0" key="/accounts/0" name=""/><Account id="1" key="/accounts/1" name="PlexUser"/></MediaContainer>"#.into()),
            _ => (404, String::new()),
        })
        .await;
        let c = client(&srv.url, 5_000);
        let id = c.identity().await.unwrap();
        assert!(id.claimed);
        assert_eq!(
            id.machine_identifier,
            "6a646027a56abb6dbdf72484564db8567c737430"
        );
        let a = c.accounts().await.unwrap();
        assert_eq!(a.len(), 2);
        assert!(a[0].is_system());
        let reqs = srv.requests();
        assert!(reqs.iter().all(|r| r.header("X-Plex-Token") == Some(TOKEN)
            && r.header("X-Plex-Client-Identifier") == Some("test-client")
            && r.header("X-Plex-Container-Start").is_none()));
    }

    #[tokio::test]
    async fn unreachable_and_slow_servers_are_transient() {
        // A port nobody listens on.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let c = client(&format!("http://{addr}"), 2_000);
        let e = c.identity().await.unwrap_err();
        assert!(
            matches!(&e, PlexError::Transient { endpoint, .. } if endpoint == "/identity"),
            "{e:?}"
        );
        assert!(e.is_transient());
        assert_no_token(&e);

        // Accepts, never answers: the client's timeout.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let c = client(&format!("http://{addr}"), 300);
        let e = c.accounts().await.unwrap_err();
        assert!(
            matches!(&e, PlexError::Transient { message, .. } if message.contains("timed out")),
            "{e:?}"
        );
        assert_no_token(&e);
        hold.abort();

        let dbg = format!("{c:?}");
        assert!(!dbg.contains(TOKEN) && dbg.contains("redacted"), "{dbg}");
    }

    /// A server that answers every request with `status` and this `Location`, counting them.
    async fn redirector(status: u16, location: String) -> (String, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                h.fetch_add(1, Ordering::SeqCst);
                let location = location.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    let resp = format!(
                        "HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        (url, hits)
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_and_names_its_target() {
        // Where the redirect points: a server that would happily answer, and records.
        let elsewhere = TestServer::start(|_| (200, "<MediaContainer/>".into())).await;
        let port = elsewhere.url.rsplit(':').next().unwrap().to_string();
        for status in [301u16, 302, 303, 307, 308] {
            let (url, hits) = redirector(
                status,
                format!("http://someone:pw@127.0.0.1:{port}/moved/identity?X-Plex-Token=leak#frag"),
            )
            .await;
            let c = client(&url, 5_000);
            let e = c.identity().await.unwrap_err();
            match &e {
                PlexError::Redirected {
                    endpoint,
                    status: got,
                    location,
                } => {
                    assert_eq!(endpoint, "/identity");
                    assert_eq!(*got, status);
                    // The target, without user info, query or fragment.
                    assert_eq!(location, &format!("http://127.0.0.1:{port}/moved/identity"));
                }
                e => panic!("{status}: {e:?}"),
            }
            assert!(!e.is_transient(), "a redirect is the config's fault");
            let shown = e.to_string();
            assert!(
                shown.contains(&format!("127.0.0.1:{port}/moved/identity"))
                    && shown.contains("[plex] url"),
                "{shown}"
            );
            assert!(!shown.contains("leak") && !shown.contains("pw"), "{shown}");
            assert_no_token(&e);
            assert_eq!(hits.load(Ordering::SeqCst), 1, "asked once, not in a loop");
        }
        assert!(
            elsewhere.requests().is_empty(),
            "the redirect target never saw a request (nor the token)"
        );

        // A relative Location is resolved against the request's URL.
        let (url, _) = redirector(302, "/web/index.html".into()).await;
        let e = client(&url, 5_000).accounts().await.unwrap_err();
        assert!(
            matches!(&e, PlexError::Redirected { location, .. } if *location == format!("{url}/web/index.html")),
            "{e:?}"
        );
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("123"), "123");
        assert_eq!(encode_segment("a/b?c"), "a%2Fb%3Fc");
    }
}
