//! A fake Plex Media Server: XML answers in the shapes of real PMS responses (see
//! ../shared/plex-samples), built from the project's own fixture values. It checks the
//! `X-Plex-Token` header and answers 401 with PMS's HTML body otherwise.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{FakeServer, Seen, respond};

pub const TOKEN: &str = "fake-plex-token-123";

/// One show the fake knows: its ratingKey, guid, title, year and `<Guid>` ids.
#[derive(Debug, Clone)]
pub struct FakeShow {
    pub rating_key: String,
    pub guid: String,
    pub title: String,
    pub year: i32,
    pub guids: Vec<String>,
}

/// One history row the fake serves (the shape of the Plexopedia capture).
#[derive(Debug, Clone)]
pub struct HistoryFixture {
    pub history_key: String,
    /// None for a deleted item (no key / ratingKey).
    pub rating_key: Option<String>,
    pub show_rating_key: Option<String>,
    pub grandparent_title: String,
    pub season: u32,
    pub episode: u32,
    pub viewed_at: i64,
    pub account_id: i64,
}

/// A scripted answer for the next request(s).
#[derive(Debug, Clone)]
pub enum PlexFault {
    Status(u16),
    /// A 200 with truncated XML.
    Malformed,
}

pub struct PlexState {
    pub shows: HashMap<String, FakeShow>,
    pub requests: Vec<Seen>,
    /// Answer every request with this status (401, 500, …) when set.
    pub fail_with: Option<u16>,
    pub faults: Vec<PlexFault>,
    pub accounts: Vec<(i64, String)>,
    pub history: Vec<HistoryFixture>,
    /// The largest page the server hands out, whatever the client asks.
    pub max_page: u64,
    /// Delay before each history answer (to catch a daemon mid-backfill).
    pub history_delay: std::time::Duration,
    /// Serve truncated XML for this many history requests.
    pub malformed_history: usize,
}

impl Default for PlexState {
    fn default() -> Self {
        PlexState {
            shows: HashMap::new(),
            requests: Vec::new(),
            fail_with: None,
            faults: Vec::new(),
            accounts: vec![(0, String::new()), (1, "icco".into())],
            history: Vec::new(),
            max_page: 50,
            history_delay: std::time::Duration::ZERO,
            malformed_history: 0,
        }
    }
}

pub struct FakePlex {
    pub server: Arc<FakeServer>,
    pub state: Arc<Mutex<PlexState>>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

impl FakePlex {
    pub async fn start(shows: Vec<FakeShow>) -> FakePlex {
        let state = Arc::new(Mutex::new(PlexState {
            shows: shows
                .into_iter()
                .map(|s| (s.rating_key.clone(), s))
                .collect(),
            ..Default::default()
        }));
        let st = state.clone();
        let server = FakeServer::start(Arc::new(move |seen: Seen| {
            let st = st.clone();
            Box::pin(async move {
                let delay = st.lock().unwrap().history_delay;
                if seen.path == "/status/sessions/history/all" && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                handle(&st, seen)
            })
        }))
        .await;
        FakePlex { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn count(&self, path_prefix: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path.starts_with(path_prefix))
            .count()
    }

    pub fn push_history(&self, h: HistoryFixture) {
        self.state.lock().unwrap().history.push(h);
    }

    pub fn fault(&self, f: PlexFault, times: usize) {
        let mut s = self.state.lock().unwrap();
        for _ in 0..times {
            s.faults.push(f.clone());
        }
    }

    pub fn metadata_requests(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path.starts_with("/library/metadata/"))
            .count()
    }
}

const UNAUTHORIZED: &str =
    "<html><head><title>Unauthorized</title></head><body><h1>401 Unauthorized</h1></body></html>";

fn handle(
    st: &Mutex<PlexState>,
    seen: Seen,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let mut s = st.lock().unwrap();
    s.requests.push(seen.clone());
    if let Some(code) = s.fail_with {
        return respond(
            code,
            "text/html",
            format!("<html><head><title>{code}</title></head><body><h1>{code}</h1></body></html>"),
        );
    }
    if !s.faults.is_empty() {
        return match s.faults.remove(0) {
            PlexFault::Status(401) => respond(401, "text/html", UNAUTHORIZED),
            PlexFault::Status(code) => respond(
                code,
                "text/html",
                format!(
                    "<html><head><title>{code}</title></head><body><h1>{code}</h1></body></html>"
                ),
            ),
            PlexFault::Malformed => respond(
                200,
                "text/xml;charset=utf-8",
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MediaContainer size=\"3\"><Video title=\"Trunc",
            ),
        };
    }
    if seen.header("x-plex-token") != Some(TOKEN) {
        return respond(401, "text/html", UNAUTHORIZED);
    }
    if let Some(rk) = seen.path.strip_prefix("/library/metadata/") {
        let Some(show) = s.shows.get(rk) else {
            return respond(
                404,
                "text/html",
                "<html><head><title>Not Found</title></head><body><h1>404 Not Found</h1></body></html>",
            );
        };
        let guids: String = show
            .guids
            .iter()
            .map(|g| format!("<Guid id=\"{}\" />", esc(g)))
            .collect();
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MediaContainer size=\"1\" allowSync=\"1\" identifier=\"com.plexapp.plugins.library\" librarySectionID=\"2\" librarySectionTitle=\"TV Shows\" mediaTagPrefix=\"/system/bundle/media/flags/\">\n<Directory ratingKey=\"{rk}\" key=\"/library/metadata/{rk}/children\" guid=\"{}\" type=\"show\" title=\"{}\" index=\"1\" year=\"{}\" leafCount=\"10\" viewedLeafCount=\"1\" childCount=\"1\">{guids}</Directory>\n</MediaContainer>\n",
            esc(&show.guid),
            esc(&show.title),
            show.year
        );
        return respond(200, "text/xml;charset=utf-8", xml);
    }
    if seen.path == "/accounts" {
        let rows: String = s
            .accounts
            .iter()
            .map(|(id, name)| format!("<Account id=\"{id}\" key=\"/accounts/{id}\" name=\"{}\" defaultAudioLanguage=\"en\" autoSelectAudio=\"1\" defaultSubtitleLanguage=\"en\" subtitleMode=\"0\" thumb=\"\" />", esc(name)))
            .collect();
        return respond(
            200,
            "text/xml;charset=utf-8",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MediaContainer size=\"{}\" identifier=\"com.plexapp.system.accounts\">{rows}</MediaContainer>\n",
                s.accounts.len()
            ),
        );
    }
    if seen.path == "/status/sessions/history/all" && s.malformed_history > 0 {
        s.malformed_history -= 1;
        return respond(
            200,
            "text/xml;charset=utf-8",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MediaContainer size=\"3\"><Video historyKey=\"/status/sessions/history/1\" title=\"Trunc",
        );
    }
    if seen.path == "/status/sessions/history/all" {
        let q = decode(&seen.query);
        let since: i64 = param(&q, "viewedAt>")
            .map(|v| v.parse().expect("viewedAt>=<unix seconds>"))
            .unwrap_or(0);
        let account: Option<i64> = param(&q, "accountID").and_then(|v| v.parse().ok());
        let start: usize = seen
            .header("x-plex-container-start")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let size: u64 = seen
            .header("x-plex-container-size")
            .and_then(|v| v.parse().ok())
            .unwrap_or(s.max_page);
        let mut rows: Vec<&HistoryFixture> = s
            .history
            .iter()
            .filter(|h| h.viewed_at >= since && account.is_none_or(|a| a == h.account_id))
            .collect();
        rows.sort_by_key(|h| h.viewed_at);
        let total = rows.len();
        let page: String = rows
            .iter()
            .skip(start)
            .take(size.min(s.max_page) as usize)
            .map(|h| {
                let keys = match (&h.rating_key, &h.show_rating_key) {
                    (Some(rk), Some(srk)) => format!(" key=\"/library/metadata/{rk}\" ratingKey=\"{rk}\" parentKey=\"/library/metadata/{rk}0\" grandparentKey=\"/library/metadata/{srk}\""),
                    _ => String::new(),
                };
                format!(
                    "<Video historyKey=\"{}\"{keys} librarySectionID=\"2\" title=\"Episode {}\" grandparentTitle=\"{}\" type=\"episode\" thumb=\"/library/metadata/1/thumb/1\" grandparentThumb=\"/library/metadata/1/thumb/1\" index=\"{}\" parentIndex=\"{}\" originallyAvailableAt=\"2014-01-01\" viewedAt=\"{}\" accountID=\"{}\" deviceID=\"4\" />",
                    esc(&h.history_key), h.episode, esc(&h.grandparent_title), h.episode, h.season, h.viewed_at, h.account_id
                )
            })
            .collect();
        return respond(
            200,
            "text/xml;charset=utf-8",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MediaContainer size=\"{}\" totalSize=\"{total}\" offset=\"{start}\">{page}</MediaContainer>\n",
                total
                    .saturating_sub(start)
                    .min(size.min(s.max_page) as usize)
            ),
        );
    }
    if seen.path == "/library/sections" {
        return respond(
            200,
            "text/xml;charset=utf-8",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MediaContainer size=\"1\" allowSync=\"0\" title1=\"Plex Library\"><Directory allowSync=\"1\" art=\"/:/resources/show-fanart.jpg\" filters=\"1\" refreshing=\"0\" thumb=\"/:/resources/show.png\" key=\"2\" type=\"show\" title=\"TV Shows\" agent=\"tv.plex.agents.series\" scanner=\"Plex TV Series\" language=\"en-US\" uuid=\"00000000-0000-0000-0000-000000000002\"><Location id=\"2\" path=\"/data/tv\" /></Directory></MediaContainer>\n",
        );
    }
    if seen.path.starts_with("/library/sections/") && seen.path.ends_with("/all") {
        return respond(
            200,
            "text/xml;charset=utf-8",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MediaContainer size=\"0\" totalSize=\"0\" offset=\"0\"></MediaContainer>\n",
        );
    }
    if seen.path == "/identity" {
        return respond(
            200,
            "text/xml;charset=utf-8",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MediaContainer size=\"0\" claimed=\"1\" machineIdentifier=\"fakeplexmachine0000000000000000000000000\" version=\"1.40.0.0000-000000000\"> </MediaContainer>\n",
        );
    }
    respond(
        404,
        "text/html",
        "<html><head><title>Not Found</title></head><body><h1>404 Not Found</h1></body></html>",
    )
}

fn decode(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let d = pct_decode(p);
            match d.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (d, String::new()),
            }
        })
        .collect()
}

fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
