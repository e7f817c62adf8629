//! The Plex Media Server client: authenticated XML requests and the typed answers the daemon
//! needs (a show's own external ids today; identity, accounts and history for polling).
//!
//! Every failure is a [`PlexError`] that says whether it is worth retrying and names the
//! endpoint (never the token: it travels in the `X-Plex-Token` header, not the URL).

use std::time::Duration;

use plexsync_plugin_api::Secret;
use serde::{Deserialize, Serialize};

pub mod history;
pub mod library;
pub mod xml;

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
}

#[derive(Clone)]
pub struct PlexClient {
    http: reqwest::Client,
    base: String,
    token: Option<Secret>,
    client_id: String,
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

    /// GET `path` and parse the XML answer. Query keys are written as given, so a Plex filter
    /// operator can lead the `=`: the key `viewedAt>` gives `viewedAt>=123`. Values are
    /// percent-encoded. `page` sends
    /// X-Plex-Container-Start/Size.
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
        let text = resp.text().await.map_err(|e| PlexError::Transient {
            endpoint: endpoint.clone(),
            message: describe_reqwest(&e),
        })?;
        xml::parse(&text).map_err(|e| PlexError::Malformed {
            endpoint,
            message: e.to_string(),
        })
    }

    /// The show's metadata with its external ids (`includeGuids=1`).
    pub async fn show_meta(&self, rating_key: &str) -> Result<ShowMeta, PlexError> {
        let path = format!("/library/metadata/{}", encode_segment(rating_key));
        let root = self
            .get_xml(&path, &[("includeGuids", "1".into())], None)
            .await?;
        parse_show_meta(&root, rating_key).ok_or_else(|| PlexError::Malformed {
            endpoint: path,
            message: "no Directory/Video element in MediaContainer".into(),
        })
    }
}

pub fn parse_show_meta(root: &xml::Element, rating_key: &str) -> Option<ShowMeta> {
    let item = root
        .children
        .iter()
        .find(|c| c.name == "Directory" || c.name == "Video")?;
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
        assert!(parse_show_meta(&xml::parse("<MediaContainer/>").unwrap(), "5").is_none());
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("123"), "123");
        assert_eq!(encode_segment("a/b?c"), "a%2Fb%3Fc");
    }
}
