//! A fake Plex Media Server for black-box tests: XML answers in the shapes of real PMS
//! responses (see ../shared/plex-samples), built from the project's own fixture values.
//!
//! What it serves:
//! - `/library/metadata/<ratingKey>`: the [`FakeShow`]s (with `<Guid>` children);
//! - `/status/sessions/history/all`: the history list ([`FakePlex::push_history`]) in the shape
//!   of the Plexopedia capture, honouring `viewedAt>=`, `accountID`, `librarySectionID`,
//!   `metadataItemID` (the item, or the episodes of a season or show),
//!   `sort=viewedAt:asc|desc` and `X-Plex-Container-Start/Size` (headers or query args), with
//!   a page size the server enforces ([`PlexState::max_page`], 50 by default). Without paging
//!   headers the answer is unpaged (only `size`, as in the capture);
//! - the library walk of `plexsync sync`: `/library/sections/<id>/all?type=2` (the shows that
//!   have episodes in [`PlexState::watched`]), `/library/metadata/<show>/allLeaves` (all their
//!   episodes, watched or not, paged) and `/library/metadata/<episode>`;
//! - `/accounts` ([`PlexState::accounts`]), `/identity` (no token needed, as on PMS),
//!   `/library/sections` ([`PlexState::sections`], one show section by default) and
//!   `/library/sections/<id>/all?type=4…` (the watched-episode list,
//!   [`FakePlex::push_watched`], honouring `viewCount>=`, `lastViewedAt>=`, `sort` and paging).
//!
//! Faults: `state.fail_with` (every request), [`FakePlex::fail_next`] /
//! [`FakePlex::malformed_next`] (the next n requests, any path), their `_on(path_prefix)`
//! forms, `state.malformed_history`, a wrong token (401 with PMS's HTML body),
//! `state.ignore_container_start` (a server that ignores paging), `state.history_delay` and
//! [`FakePlex::remove_history_after`] (history rows deleted between two pages).
//! A filter the fake cannot read (e.g. the operator sent in the value, `viewedAt=%3E%3D1`)
//! is a 400, so client bugs fail loudly. Every request is recorded ([`FakePlex::count`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;

use super::{FakeServer, Seen, respond};

pub const TOKEN: &str = "fake-plex-token-123";

/// The fake's `/identity` machine id unless a test sets [`PlexState::machine_identifier`];
/// [`super::sample_json`] re-aims webhook samples at it (see there).
pub const MACHINE: &str = "fakeplexmachine0000000000000000000000000";

/// One show the fake knows: its ratingKey, guid, title, year and `<Guid>` ids.
#[derive(Debug, Clone)]
pub struct FakeShow {
    pub rating_key: String,
    pub guid: String,
    pub title: String,
    pub year: i32,
    pub guids: Vec<String>,
}

/// A history row, the short form (an episode of a show). Converted to a [`HistoryEntry`]
/// with title `Episode <n>`, library section 2, device 4.
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

/// One history row the fake serves, every attribute under control.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// `/status/sessions/history/<id>`.
    pub history_key: String,
    /// `key`/`ratingKey` (None: a deleted item).
    pub rating_key: Option<String>,
    /// `grandparentKey` = `/library/metadata/<id>` (history rows have no grandparentRatingKey).
    pub show_rating_key: Option<String>,
    /// `parentKey` = `/library/metadata/<id>`.
    pub season_rating_key: Option<String>,
    /// `type`: `episode`, `movie`, `track`.
    pub kind: String,
    pub title: String,
    pub grandparent_title: Option<String>,
    /// `parentIndex`.
    pub season: Option<u32>,
    /// `index`.
    pub episode: Option<u32>,
    /// None: the attribute is left out (a row the client must skip).
    pub viewed_at: Option<i64>,
    pub account_id: i64,
    pub device_id: Option<i64>,
    pub library_section_id: String,
    pub originally_available_at: Option<String>,
}

impl HistoryEntry {
    /// An episode view with all keys; the episode's ratingKey is
    /// `<show><season:03><episode:03>`, the season's `<show><season:03>`.
    pub fn episode(
        id: u64,
        show_rating_key: &str,
        show_title: &str,
        season: u32,
        episode: u32,
        viewed_at: i64,
        account_id: i64,
    ) -> HistoryEntry {
        HistoryEntry {
            history_key: format!("/status/sessions/history/{id}"),
            rating_key: Some(format!("{show_rating_key}{season:03}{episode:03}")),
            show_rating_key: Some(show_rating_key.to_string()),
            season_rating_key: Some(format!("{show_rating_key}{season:03}")),
            kind: "episode".into(),
            title: format!("Episode {episode}"),
            grandparent_title: Some(show_title.to_string()),
            season: Some(season),
            episode: Some(episode),
            viewed_at: Some(viewed_at),
            account_id,
            device_id: Some(4),
            library_section_id: "2".into(),
            originally_available_at: Some("2014-01-01".into()),
        }
    }

    /// A movie view.
    pub fn movie(id: u64, rating_key: &str, title: &str, viewed_at: i64, account_id: i64) -> Self {
        HistoryEntry {
            history_key: format!("/status/sessions/history/{id}"),
            rating_key: Some(rating_key.to_string()),
            show_rating_key: None,
            season_rating_key: None,
            kind: "movie".into(),
            title: title.to_string(),
            grandparent_title: None,
            season: None,
            episode: None,
            viewed_at: Some(viewed_at),
            account_id,
            device_id: Some(4),
            library_section_id: "1".into(),
            originally_available_at: None,
        }
    }

    /// The item was deleted from the library since: no key, ratingKey, parentKey,
    /// grandparentKey (the row keeps its history key, title, type, time and account).
    pub fn deleted(mut self) -> Self {
        self.rating_key = None;
        self.show_rating_key = None;
        self.season_rating_key = None;
        self
    }

    /// Leave `viewedAt` out.
    pub fn without_viewed_at(mut self) -> Self {
        self.viewed_at = None;
        self
    }
}

impl From<HistoryFixture> for HistoryEntry {
    fn from(h: HistoryFixture) -> HistoryEntry {
        // The short form has keys only when both ids are known.
        let (rating_key, show_rating_key, season_rating_key) =
            match (h.rating_key, h.show_rating_key) {
                (Some(rk), Some(srk)) => (Some(rk.clone()), Some(srk), Some(format!("{rk}0"))),
                _ => (None, None, None),
            };
        HistoryEntry {
            history_key: h.history_key,
            rating_key,
            show_rating_key,
            season_rating_key,
            kind: "episode".into(),
            title: format!("Episode {}", h.episode),
            grandparent_title: Some(h.grandparent_title),
            season: Some(h.season),
            episode: Some(h.episode),
            viewed_at: Some(h.viewed_at),
            account_id: h.account_id,
            device_id: Some(4),
            library_section_id: "2".into(),
            originally_available_at: Some("2014-01-01".into()),
        }
    }
}

/// One episode of a section listing (`/library/sections/<id>/all?type=4`).
#[derive(Debug, Clone)]
pub struct WatchedEpisodeFixture {
    /// The section id it belongs to.
    pub section: String,
    pub rating_key: String,
    pub show_rating_key: String,
    pub season_rating_key: String,
    pub grandparent_title: String,
    pub grandparent_guid: String,
    pub title: String,
    pub season: u32,
    pub episode: u32,
    /// 0 = unwatched (filtered out by `viewCount>=1`).
    pub view_count: u64,
    /// None: never viewed (no attribute).
    pub last_viewed_at: Option<i64>,
    /// The episode's `<Guid>` children (served with `includeGuids=1`).
    pub guids: Vec<String>,
}

impl WatchedEpisodeFixture {
    /// A watched (viewCount 1) episode in section 2.
    pub fn new(
        rating_key: &str,
        show_rating_key: &str,
        show_title: &str,
        season: u32,
        episode: u32,
        last_viewed_at: i64,
    ) -> WatchedEpisodeFixture {
        WatchedEpisodeFixture {
            section: "2".into(),
            rating_key: rating_key.to_string(),
            show_rating_key: show_rating_key.to_string(),
            season_rating_key: format!("{show_rating_key}{season:03}"),
            grandparent_title: show_title.to_string(),
            grandparent_guid: format!("plex://show/{show_rating_key:0>24}"),
            title: format!("Episode {episode}"),
            season,
            episode,
            view_count: 1,
            last_viewed_at: Some(last_viewed_at),
            guids: Vec::new(),
        }
    }
}

/// One library section of `/library/sections`.
#[derive(Debug, Clone)]
pub struct SectionFixture {
    pub key: String,
    /// `show`, `movie`, `artist`.
    pub kind: String,
    pub title: String,
    pub agent: String,
}

impl SectionFixture {
    pub fn shows(key: &str, title: &str) -> SectionFixture {
        SectionFixture {
            key: key.to_string(),
            kind: "show".into(),
            title: title.to_string(),
            agent: "tv.plex.agents.series".into(),
        }
    }
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
    /// Faults for the next requests, whatever their path (first first).
    pub faults: Vec<PlexFault>,
    /// Faults for the next requests whose path starts with the prefix.
    pub path_faults: Vec<(String, PlexFault)>,
    /// `/accounts`: (id, name). Default: the system account 0 and the owner 1.
    pub accounts: Vec<(i64, String)>,
    pub history: Vec<HistoryEntry>,
    /// The largest page the server hands out, whatever the client asks.
    pub max_page: u64,
    /// Delay before each history answer (to catch a daemon mid-backfill).
    pub history_delay: std::time::Duration,
    /// Serve truncated XML for this many history requests.
    pub malformed_history: usize,
    /// Serve this many history requests normally before `malformed_history` applies (a
    /// page in the middle of a run breaks).
    pub malformed_history_skip: usize,
    /// Delay before each `/library/metadata/<show>/allLeaves` answer (a sync that takes time).
    pub library_delay: std::time::Duration,
    /// Requests whose path starts with the prefix are answered this much later.
    pub path_delays: Vec<(String, std::time::Duration)>,
    /// Requests that began one of those delays.
    pub delays_begun: usize,
    /// Serve every paged list from item 0 whatever X-Plex-Container-Start says.
    pub ignore_container_start: bool,
    /// `(n, k)`: once the next `n` history answers are served, the `k` oldest history rows
    /// (by `viewedAt`) are removed, as a person deleting entries while a walk reads on
    /// ([`FakePlex::remove_history_after`]).
    pub history_removal: Option<(usize, usize)>,
    /// The removal that starts counting once [`PlexState::history_removal`] is done.
    pub history_removal_next: Option<(usize, usize)>,
    /// Before the how-manieth next show listing (`…/all?type=2`) is served, the first N shows
    /// of the listing (and their episodes) are deleted: shows deleted during a `sync` walk.
    pub show_removal: Option<(usize, usize)>,
    /// `/library/sections`. Default: one show section, key 2.
    pub sections: Vec<SectionFixture>,
    /// Episodes of the section listings.
    pub watched: Vec<WatchedEpisodeFixture>,
    /// `/identity`.
    pub machine_identifier: String,
    pub version: String,
    pub claimed: bool,
    /// The root `/` container's `friendlyName` (needs the token, as on PMS).
    pub friendly_name: String,
}

impl Default for PlexState {
    fn default() -> Self {
        PlexState {
            shows: HashMap::new(),
            requests: Vec::new(),
            fail_with: None,
            faults: Vec::new(),
            path_faults: Vec::new(),
            accounts: vec![(0, String::new()), (1, "icco".into())],
            history: Vec::new(),
            max_page: 50,
            history_delay: std::time::Duration::ZERO,
            malformed_history: 0,
            malformed_history_skip: 0,
            ignore_container_start: false,
            history_removal: None,
            history_removal_next: None,
            show_removal: None,
            library_delay: std::time::Duration::ZERO,
            path_delays: Vec::new(),
            delays_begun: 0,
            sections: vec![SectionFixture::shows("2", "TV Shows")],
            watched: Vec::new(),
            machine_identifier: MACHINE.into(),
            version: "1.40.0.0000-000000000".into(),
            claimed: true,
            friendly_name: "Fake Plex".into(),
        }
    }
}

pub struct FakePlex {
    pub server: Arc<FakeServer>,
    pub state: Arc<Mutex<PlexState>>,
    /// The notification websocket (issue 13, see support/plex_ws.rs).
    pub ws: Arc<super::plex_ws::Notifications>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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
        let ws = Arc::new(super::plex_ws::Notifications::default());
        let ws2 = ws.clone();
        let server = FakeServer::start(Arc::new(move |seen: Seen| {
            let st = st.clone();
            let ws = ws2.clone();
            Box::pin(async move {
                if seen.path == super::plex_ws::PATH {
                    return super::plex_ws::route(&st, &ws, seen);
                }
                let (delay, library_delay, path_delay) = {
                    let mut s = st.lock().unwrap();
                    let path_delay = s
                        .path_delays
                        .iter()
                        .find(|(p, _)| seen.path.starts_with(p.as_str()))
                        .map(|(_, d)| *d);
                    if path_delay.is_some() {
                        s.delays_begun += 1;
                    }
                    (s.history_delay, s.library_delay, path_delay)
                };
                if let Some(d) = path_delay {
                    tokio::time::sleep(d).await;
                }
                if seen.path == "/status/sessions/history/all" && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if seen.path.ends_with("/allLeaves") && !library_delay.is_zero() {
                    tokio::time::sleep(library_delay).await;
                }
                handle(&st, seen)
            })
        }))
        .await;
        FakePlex { server, state, ws }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Requests whose path starts with `path_prefix`.
    pub fn count(&self, path_prefix: &str) -> usize {
        self.requests_to(path_prefix).len()
    }

    /// The requests whose path starts with `path_prefix`, oldest first.
    pub fn requests_to(&self, path_prefix: &str) -> Vec<Seen> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }

    /// Add a history row ([`HistoryFixture`] or [`HistoryEntry`]).
    pub fn push_history(&self, h: impl Into<HistoryEntry>) {
        self.state.lock().unwrap().history.push(h.into());
    }

    /// Once the next `answers` history answers are served, remove the `rows` oldest history
    /// rows: rows a walk has read vanish before its next page.
    pub fn remove_history_after(&self, answers: usize, rows: usize) {
        self.state.lock().unwrap().history_removal = Some((answers, rows));
    }

    /// A second removal like [`Self::remove_history_after`], counted from the first one's.
    pub fn remove_history_again_after(&self, answers: usize, rows: usize) {
        self.state.lock().unwrap().history_removal_next = Some((answers, rows));
    }

    /// Delete the first `shows` shows of the listing (with their episodes) just before the
    /// `nth` next show listing is served.
    pub fn remove_shows_before(&self, nth: usize, shows: usize) {
        self.state.lock().unwrap().show_removal = Some((nth, shows));
    }

    /// Add an episode to its section's listing.
    pub fn push_watched(&self, e: WatchedEpisodeFixture) {
        self.state.lock().unwrap().watched.push(e);
    }

    /// Add the real captures' shared user ([`SHARED_USER`]) to `/accounts`. A test that has
    /// its plays synced also selects it in `[plex] accounts` ([`super::daemon::SYNC_SHARED_USER`]).
    pub fn list_shared_user(&self) {
        let (id, name) = SHARED_USER;
        self.state.lock().unwrap().accounts.push((id, name.into()));
    }

    /// Replace `/accounts`.
    pub fn set_accounts(&self, accounts: &[(i64, &str)]) {
        self.state.lock().unwrap().accounts = accounts
            .iter()
            .map(|(id, name)| (*id, name.to_string()))
            .collect();
    }

    /// Answer the next `times` requests (any path) with `f`.
    pub fn fault(&self, f: PlexFault, times: usize) {
        let mut s = self.state.lock().unwrap();
        for _ in 0..times {
            s.faults.push(f.clone());
        }
    }

    /// Answer the next `times` requests (any path) with `status` and PMS's HTML error body,
    /// then recover, e.g. `fail_next(500, 2)`.
    pub fn fail_next(&self, status: u16, times: usize) {
        self.fault(PlexFault::Status(status), times);
    }

    /// Serve truncated XML (with a 200) for the next `times` requests (any path).
    pub fn malformed_next(&self, times: usize) {
        self.fault(PlexFault::Malformed, times);
    }

    /// [`fail_next`](Self::fail_next) for requests whose path starts with `path_prefix` only.
    pub fn fail_next_on(&self, path_prefix: &str, status: u16, times: usize) {
        let mut s = self.state.lock().unwrap();
        for _ in 0..times {
            s.path_faults
                .push((path_prefix.to_string(), PlexFault::Status(status)));
        }
    }

    /// Answer every request whose path starts with `path_prefix` `d` later (a slow look-up).
    pub fn delay_on(&self, path_prefix: &str, d: std::time::Duration) {
        self.state
            .lock()
            .unwrap()
            .path_delays
            .push((path_prefix.to_string(), d));
    }

    /// How many requests have begun a [`delay_on`](Self::delay_on) delay.
    pub fn delays_begun(&self) -> usize {
        self.state.lock().unwrap().delays_begun
    }

    /// Drop every fault still queued (any path): the server works again.
    pub fn clear_faults(&self) {
        let mut s = self.state.lock().unwrap();
        s.faults.clear();
        s.path_faults.clear();
    }

    /// [`malformed_next`](Self::malformed_next) for requests whose path starts with
    /// `path_prefix` only.
    pub fn malformed_next_on(&self, path_prefix: &str, times: usize) {
        let mut s = self.state.lock().unwrap();
        for _ in 0..times {
            s.path_faults
                .push((path_prefix.to_string(), PlexFault::Malformed));
        }
    }

    pub fn metadata_requests(&self) -> usize {
        self.count("/library/metadata/")
    }
}

type Resp = hyper::Response<Full<Bytes>>;

const XML: &str = "text/xml;charset=utf-8";
const DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
const UNAUTHORIZED: &str =
    "<html><head><title>Unauthorized</title></head><body><h1>401 Unauthorized</h1></body></html>";

fn error_page(code: u16) -> Resp {
    if code == 401 {
        return respond(401, "text/html", UNAUTHORIZED);
    }
    let title = match code {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    respond(
        code,
        "text/html",
        format!(
            "<html><head><title>{title}</title></head><body><h1>{code} {title}</h1></body></html>"
        ),
    )
}

fn fault_response(f: PlexFault) -> Resp {
    match f {
        PlexFault::Status(code) => error_page(code),
        PlexFault::Malformed => respond(
            200,
            XML,
            format!("{DECL}<MediaContainer size=\"3\"><Video title=\"Trunc"),
        ),
    }
}

/// A 200 XML answer with PMS's paging headers when the answer is a page.
fn xml_page(body: String, paging: Option<(usize, usize)>) -> Resp {
    let mut b = hyper::Response::builder()
        .status(200)
        .header("content-type", XML)
        .header("X-Plex-Protocol", "1.0");
    if let Some((start, total)) = paging {
        b = b
            .header("X-Plex-Container-Start", start.to_string())
            .header("X-Plex-Container-Total-Size", total.to_string());
    }
    b.body(Full::new(Bytes::from(body))).unwrap()
}

fn handle(st: &Mutex<PlexState>, seen: Seen) -> Resp {
    let mut s = st.lock().unwrap();
    s.requests.push(seen.clone());
    if let Some(code) = s.fail_with {
        return error_page(code);
    }
    if let Some(i) = s
        .path_faults
        .iter()
        .position(|(p, _)| seen.path.starts_with(p.as_str()))
    {
        let (_, f) = s.path_faults.remove(i);
        return fault_response(f);
    }
    if !s.faults.is_empty() {
        let f = s.faults.remove(0);
        return fault_response(f);
    }
    let q = decode(&seen.query);
    // PMS answers /identity without a token.
    if seen.path == "/identity" {
        return xml_page(
            format!(
                "{DECL}<MediaContainer size=\"0\" claimed=\"{}\" machineIdentifier=\"{}\" version=\"{}\">\n</MediaContainer>\n",
                u8::from(s.claimed),
                esc(&s.machine_identifier),
                esc(&s.version)
            ),
            None,
        );
    }
    let token = seen
        .header("x-plex-token")
        .or_else(|| param(&q, "X-Plex-Token"));
    if token != Some(TOKEN) {
        return error_page(401);
    }
    if let Some(rk) = seen.path.strip_prefix("/library/metadata/") {
        // Library walk (issue 13): a show's episodes, an episode, a show known by its episodes.
        if let Some(r) = library_metadata(&s, rk, &seen, &q) {
            return r;
        }
        return metadata(&s, rk);
    }
    match seen.path.as_str() {
        "/accounts" => return accounts(&s),
        "/" => {
            return xml_page(
                format!(
                    "{DECL}<MediaContainer size=\"1\" friendlyName=\"{}\" machineIdentifier=\"{}\" version=\"{}\">\n<Directory count=\"1\" key=\"library\" title=\"library\" />\n</MediaContainer>\n",
                    esc(&s.friendly_name),
                    esc(&s.machine_identifier),
                    esc(&s.version)
                ),
                None,
            );
        }
        "/status/sessions/history/all" => {
            if s.malformed_history > 0 && s.malformed_history_skip > 0 {
                s.malformed_history_skip -= 1;
            } else if s.malformed_history > 0 {
                s.malformed_history -= 1;
                return respond(
                    200,
                    XML,
                    format!(
                        "{DECL}<MediaContainer size=\"3\"><Video historyKey=\"/status/sessions/history/1\" title=\"Trunc"
                    ),
                );
            }
            let answer = history(&s, &seen, &q);
            remove_history_when_due(&mut s);
            return answer;
        }
        "/library/sections" => return sections(&s),
        _ => {}
    }
    if let Some(section) = seen
        .path
        .strip_prefix("/library/sections/")
        .and_then(|r| r.strip_suffix("/all"))
    {
        if param(&q, "type") == Some("2") {
            remove_shows_when_due(&mut s);
        }
        return section_all(&s, section, &seen, &q);
    }
    error_page(404)
}

fn metadata(s: &PlexState, rk: &str) -> Resp {
    let Some(show) = s.shows.get(rk) else {
        return error_page(404);
    };
    let guids: String = show
        .guids
        .iter()
        .map(|g| format!("<Guid id=\"{}\" />", esc(g)))
        .collect();
    let xml = format!(
        "{DECL}<MediaContainer size=\"1\" allowSync=\"1\" identifier=\"com.plexapp.plugins.library\" librarySectionID=\"2\" librarySectionTitle=\"TV Shows\" mediaTagPrefix=\"/system/bundle/media/flags/\">\n<Directory ratingKey=\"{rk}\" key=\"/library/metadata/{rk}/children\" guid=\"{}\" type=\"show\" title=\"{}\" index=\"1\" year=\"{}\" leafCount=\"10\" viewedLeafCount=\"1\" childCount=\"1\">{guids}</Directory>\n</MediaContainer>\n",
        esc(&show.guid),
        esc(&show.title),
        show.year
    );
    xml_page(xml, None)
}

fn accounts(s: &PlexState) -> Resp {
    let rows: String = s
        .accounts
        .iter()
        .map(|(id, name)| format!("<Account id=\"{id}\" key=\"/accounts/{id}\" name=\"{}\" defaultAudioLanguage=\"en\" autoSelectAudio=\"1\" defaultSubtitleLanguage=\"en\" subtitleMode=\"0\" thumb=\"\" />\n", esc(name)))
        .collect();
    xml_page(
        format!(
            "{DECL}<MediaContainer size=\"{}\" identifier=\"com.plexapp.system.accounts\">\n{rows}</MediaContainer>\n",
            s.accounts.len()
        ),
        None,
    )
}

fn sections(s: &PlexState) -> Resp {
    let dirs: String = s
        .sections
        .iter()
        .map(|d| {
            let k = esc(&d.key);
            format!(
                "<Directory allowSync=\"1\" art=\"/:/resources/{kind}-fanart.jpg\" composite=\"/library/sections/{k}/composite/1605461424\" filters=\"1\" refreshing=\"0\" thumb=\"/:/resources/{kind}.png\" key=\"{k}\" type=\"{kind}\" title=\"{}\" agent=\"{}\" scanner=\"Plex TV Series\" language=\"en-US\" uuid=\"00000000-0000-0000-0000-{k:0>12}\" updatedAt=\"1602523323\" createdAt=\"1429510140\" scannedAt=\"1605461424\" content=\"1\" directory=\"1\" contentChangedAt=\"117133678\" hidden=\"0\">\n<Location id=\"{k}\" path=\"/data/{k}\" />\n</Directory>\n",
                esc(&d.title),
                esc(&d.agent),
                kind = esc(&d.kind),
            )
        })
        .collect();
    xml_page(
        format!(
            "{DECL}<MediaContainer size=\"{}\" allowSync=\"0\" identifier=\"com.plexapp.plugins.library\" mediaTagPrefix=\"/system/bundle/media/flags/\" mediaTagVersion=\"1603922053\" title1=\"Plex Library\">\n{dirs}</MediaContainer>\n",
            s.sections.len()
        ),
        None,
    )
}

/// Paging as PMS does it: `Some((start, size))` from headers or query args, None = unpaged.
fn paging(
    seen: &Seen,
    q: &[(String, String)],
    s: &PlexState,
) -> Result<Option<(usize, usize)>, ()> {
    let get = |name: &str| seen.header(name).or_else(|| param(q, name));
    let start = get("X-Plex-Container-Start");
    let size = get("X-Plex-Container-Size");
    if start.is_none() && size.is_none() {
        return Ok(None);
    }
    let start: usize = match start {
        Some(v) => v.trim().parse().map_err(|_| ())?,
        None => 0,
    };
    let size: u64 = match size {
        Some(v) => v.trim().parse().map_err(|_| ())?,
        None => s.max_page,
    };
    let start = if s.ignore_container_start { 0 } else { start };
    Ok(Some((start, size.min(s.max_page) as usize)))
}

/// A `key>=N` filter: the operator is in the KEY (`key>` = `N`). The operator in the value
/// (`key=>=N`) or an unreadable number is an error (Err), absence is None.
fn at_least(q: &[(String, String)], key: &str) -> Result<Option<i64>, ()> {
    if param(q, key).is_some() {
        return Err(());
    }
    match param(q, &format!("{key}>")) {
        Some(v) => v.trim().parse().map(Some).map_err(|_| ()),
        None => Ok(None),
    }
}

/// `sort=<field>:asc|desc` (default asc); Err for another field.
fn descending(q: &[(String, String)], field: &str) -> Result<bool, ()> {
    let Some(sort) = param(q, "sort") else {
        return Ok(false);
    };
    let first = sort.split(',').next().unwrap_or("");
    match first.split_once(':') {
        None if first == field => Ok(false),
        Some((f, dir)) if f == field && (dir == "asc" || dir == "desc") => Ok(dir == "desc"),
        _ => Err(()),
    }
}

fn history(s: &PlexState, seen: &Seen, q: &[(String, String)]) -> Resp {
    let (Ok(since), Ok(desc), Ok(page)) = (
        at_least(q, "viewedAt"),
        descending(q, "viewedAt"),
        paging(seen, q, s),
    ) else {
        return error_page(400);
    };
    let account: Option<i64> = match param(q, "accountID") {
        Some(v) => match v.parse() {
            Ok(a) => Some(a),
            Err(_) => return error_page(400),
        },
        None => None,
    };
    let section = param(q, "librarySectionID");
    // PMS: the item itself, or the episodes of a season or show with that id.
    let item: Option<String> = match param(q, "metadataItemID") {
        Some(v) => match v.parse::<u64>() {
            Ok(id) => Some(id.to_string()),
            Err(_) => return error_page(400),
        },
        None => None,
    };
    let since = since.unwrap_or(i64::MIN);
    let mut rows: Vec<&HistoryEntry> = s
        .history
        .iter()
        .filter(|h| h.viewed_at.is_none_or(|v| v >= since))
        .filter(|h| account.is_none_or(|a| a == h.account_id))
        .filter(|h| section.is_none_or(|sec| sec == h.library_section_id))
        .filter(|h| {
            item.as_deref().is_none_or(|id| {
                [&h.rating_key, &h.season_rating_key, &h.show_rating_key]
                    .iter()
                    .any(|k| k.as_deref() == Some(id))
            })
        })
        .collect();
    rows.sort_by_key(|h| h.viewed_at.unwrap_or(0));
    if desc {
        rows.reverse();
    }
    let total = rows.len();
    let (start, take) = page.unwrap_or((0, total));
    let items: Vec<String> = rows
        .iter()
        .skip(start)
        .take(take)
        .map(|h| history_row(h))
        .collect();
    let attrs = match page {
        Some(_) => format!(
            "size=\"{}\" totalSize=\"{total}\" offset=\"{start}\"",
            items.len()
        ),
        None => format!("size=\"{total}\""),
    };
    xml_page(
        format!(
            "{DECL}<MediaContainer {attrs}>\n{}</MediaContainer>\n",
            items.concat()
        ),
        page.map(|(start, _)| (start, total)),
    )
}

/// Count a served history answer against [`PlexState::history_removal`]; remove the rows
/// when it comes due.
fn remove_history_when_due(s: &mut PlexState) {
    match s.history_removal {
        Some((n, rows)) if n <= 1 => {
            s.history_removal = s.history_removal_next.take();
            s.history.sort_by_key(|h| h.viewed_at.unwrap_or(0));
            let rows = rows.min(s.history.len());
            s.history.drain(..rows);
        }
        Some((n, rows)) => s.history_removal = Some((n - 1, rows)),
        None => {}
    }
}

/// Count a show listing about to be served against [`PlexState::show_removal`]; delete the
/// shows when it comes due.
fn remove_shows_when_due(s: &mut PlexState) {
    match s.show_removal {
        Some((n, shows)) if n <= 1 => {
            s.show_removal = None;
            let gone: std::collections::HashSet<String> = library_shows(s, None)
                .iter()
                .take(shows)
                .map(|(e, _)| e.show_rating_key.clone())
                .collect();
            s.watched.retain(|e| !gone.contains(&e.show_rating_key));
        }
        Some((n, shows)) => s.show_removal = Some((n - 1, shows)),
        None => {}
    }
}

/// One row in the attribute order of the Plexopedia capture.
fn history_row(h: &HistoryEntry) -> String {
    let mut a = format!("<Video historyKey=\"{}\"", esc(&h.history_key));
    if let Some(rk) = &h.rating_key {
        a += &format!(" key=\"/library/metadata/{0}\" ratingKey=\"{0}\"", esc(rk));
    }
    a += &format!(" librarySectionID=\"{}\"", esc(&h.library_section_id));
    if let Some(p) = &h.season_rating_key {
        a += &format!(" parentKey=\"/library/metadata/{}\"", esc(p));
    }
    if let Some(g) = &h.show_rating_key {
        a += &format!(" grandparentKey=\"/library/metadata/{}\"", esc(g));
    }
    a += &format!(" title=\"{}\"", esc(&h.title));
    if let Some(t) = &h.grandparent_title {
        a += &format!(" grandparentTitle=\"{}\"", esc(t));
    }
    a += &format!(" type=\"{}\"", esc(&h.kind));
    if let Some(rk) = &h.rating_key {
        a += &format!(" thumb=\"/library/metadata/{}/thumb/-1\"", esc(rk));
    }
    if let Some(p) = &h.season_rating_key {
        a += &format!(
            " parentThumb=\"/library/metadata/{}/thumb/1659190874\"",
            esc(p)
        );
    }
    if let Some(g) = &h.show_rating_key {
        a += &format!(
            " grandparentThumb=\"/library/metadata/{0}/thumb/1668149194\" grandparentArt=\"/library/metadata/{0}/art/1668149194\"",
            esc(g)
        );
    }
    if let Some(e) = h.episode {
        a += &format!(" index=\"{e}\"");
    }
    if let Some(p) = h.season {
        a += &format!(" parentIndex=\"{p}\"");
    }
    if let Some(d) = &h.originally_available_at {
        a += &format!(" originallyAvailableAt=\"{}\"", esc(d));
    }
    if let Some(v) = h.viewed_at {
        a += &format!(" viewedAt=\"{v}\"");
    }
    a += &format!(" accountID=\"{}\"", h.account_id);
    if let Some(d) = h.device_id {
        a += &format!(" deviceID=\"{d}\"");
    }
    a + " />\n"
}

fn section_all(s: &PlexState, section: &str, seen: &Seen, q: &[(String, String)]) -> Resp {
    let Some(sec) = s.sections.iter().find(|d| d.key == section) else {
        return error_page(404);
    };
    if param(q, "type") == Some("2") {
        return match paging(seen, q, s) {
            Ok(page) => show_listing(s, sec, page),
            Err(()) => error_page(400),
        };
    }
    let (Ok(min_views), Ok(since), Ok(desc), Ok(page)) = (
        at_least(q, "viewCount"),
        at_least(q, "lastViewedAt"),
        descending(q, "lastViewedAt"),
        paging(seen, q, s),
    ) else {
        return error_page(400);
    };
    if param(q, "type") != Some("4") {
        // Only the show and episode listings are modelled.
        return error_page(400);
    }
    let with_guids = param(q, "includeGuids") == Some("1");
    let mut eps: Vec<&WatchedEpisodeFixture> = s
        .watched
        .iter()
        .filter(|e| e.section == section)
        .filter(|e| min_views.is_none_or(|m| e.view_count as i64 >= m))
        .filter(|e| since.is_none_or(|t| e.last_viewed_at.is_some_and(|v| v >= t)))
        .collect();
    eps.sort_by_key(|e| e.last_viewed_at.unwrap_or(0));
    if desc {
        eps.reverse();
    }
    let total = eps.len();
    let (start, take) = page.unwrap_or((0, total));
    let items: String = eps
        .iter()
        .skip(start)
        .take(take)
        .map(|e| episode_item(e, with_guids))
        .collect();
    let served = total.saturating_sub(start).min(take);
    let attrs = match page {
        Some(_) => format!("size=\"{served}\" totalSize=\"{total}\" offset=\"{start}\""),
        None => format!("size=\"{total}\""),
    };
    xml_page(
        format!(
            "{DECL}<MediaContainer {attrs} allowSync=\"1\" art=\"/:/resources/show-fanart.jpg\" identifier=\"com.plexapp.plugins.library\" librarySectionID=\"{k}\" librarySectionTitle=\"{t}\" librarySectionUUID=\"00000000-0000-0000-0000-{k:0>12}\" mediaTagPrefix=\"/system/bundle/media/flags/\" mediaTagVersion=\"1677707382\" mixedParents=\"1\" nocache=\"1\" thumb=\"/:/resources/show.png\" title1=\"{t}\" title2=\"All Episodes\" viewGroup=\"episode\">\n{items}</MediaContainer>\n",
            k = esc(&sec.key),
            t = esc(&sec.title),
        ),
        page.map(|(start, _)| (start, total)),
    )
}

/// The shows of the library, as a walk sees them (issue 13): every show with an episode in
/// [`PlexState::watched`] (watched or not), ordered by title, with the guid and year of the
/// matching [`FakeShow`] when there is one.
fn library_shows<'a>(
    s: &'a PlexState,
    section: Option<&str>,
) -> Vec<(&'a WatchedEpisodeFixture, Option<&'a FakeShow>)> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<_> = s
        .watched
        .iter()
        .filter(|e| section.is_none_or(|k| e.section == k))
        .filter(|e| seen.insert(e.show_rating_key.as_str()))
        .map(|e| (e, s.shows.get(&e.show_rating_key)))
        .collect();
    out.sort_by(|a, b| {
        a.0.grandparent_title
            .cmp(&b.0.grandparent_title)
            .then(a.0.show_rating_key.cmp(&b.0.show_rating_key))
    });
    out
}

fn show_item(e: &WatchedEpisodeFixture, show: Option<&FakeShow>) -> String {
    let rk = esc(&e.show_rating_key);
    let guid = show.map_or(e.grandparent_guid.as_str(), |s| s.guid.as_str());
    let year = show.map_or(String::new(), |s| format!(" year=\"{}\"", s.year));
    format!(
        "<Directory ratingKey=\"{rk}\" key=\"/library/metadata/{rk}/children\" guid=\"{}\" type=\"show\" title=\"{}\" librarySectionID=\"{}\"{year} leafCount=\"1\" childCount=\"1\" />\n",
        esc(guid),
        esc(&e.grandparent_title),
        esc(&e.section),
    )
}

/// `/library/sections/<id>/all?type=2`: the section's shows, paged.
fn show_listing(s: &PlexState, sec: &SectionFixture, page: Option<(usize, usize)>) -> Resp {
    let shows = library_shows(s, Some(&sec.key));
    let total = shows.len();
    let (start, take) = page.unwrap_or((0, total));
    let items: String = shows
        .iter()
        .skip(start)
        .take(take)
        .map(|(e, f)| show_item(e, *f))
        .collect();
    let served = total.saturating_sub(start).min(take);
    let attrs = match page {
        Some(_) => format!("size=\"{served}\" totalSize=\"{total}\" offset=\"{start}\""),
        None => format!("size=\"{total}\""),
    };
    xml_page(
        format!(
            "{DECL}<MediaContainer {attrs} allowSync=\"1\" identifier=\"com.plexapp.plugins.library\" librarySectionID=\"{}\" librarySectionTitle=\"{}\" title1=\"{}\" viewGroup=\"show\">\n{items}</MediaContainer>\n",
            esc(&sec.key),
            esc(&sec.title),
            esc(&sec.title),
        ),
        page.map(|(start, _)| (start, total)),
    )
}

/// `/library/metadata/<show>/allLeaves` (every episode of a show, paged), an episode's
/// `/library/metadata/<episode>`, and a show known only by its episodes. None: not a library
/// item of [`PlexState::watched`] (the [`FakeShow`] answer applies).
fn library_metadata(
    s: &PlexState,
    rest: &str,
    seen: &Seen,
    q: &[(String, String)],
) -> Option<Resp> {
    if let Some(show) = rest.strip_suffix("/allLeaves") {
        let Ok(page) = paging(seen, q, s) else {
            return Some(error_page(400));
        };
        let eps: Vec<&WatchedEpisodeFixture> = s
            .watched
            .iter()
            .filter(|e| e.show_rating_key == show)
            .collect();
        if eps.is_empty() {
            return Some(error_page(404));
        }
        let total = eps.len();
        let (start, take) = page.unwrap_or((0, total));
        let items: String = eps
            .iter()
            .skip(start)
            .take(take)
            .map(|e| episode_item(e, false))
            .collect();
        let served = total.saturating_sub(start).min(take);
        let attrs = match page {
            Some(_) => format!("size=\"{served}\" totalSize=\"{total}\" offset=\"{start}\""),
            None => format!("size=\"{total}\""),
        };
        let e = eps[0];
        return Some(xml_page(
            format!(
                "{DECL}<MediaContainer {attrs} allowSync=\"1\" identifier=\"com.plexapp.plugins.library\" key=\"{}\" librarySectionID=\"{}\" mixedParents=\"1\" title1=\"{}\" title2=\"All episodes\" viewGroup=\"episode\">\n{items}</MediaContainer>\n",
                esc(&e.show_rating_key),
                esc(&e.section),
                esc(&e.grandparent_title),
            ),
            page.map(|(start, _)| (start, total)),
        ));
    }
    if let Some(e) = s.watched.iter().find(|e| e.rating_key == rest) {
        return Some(xml_page(
            format!(
                "{DECL}<MediaContainer size=\"1\" allowSync=\"1\" identifier=\"com.plexapp.plugins.library\" librarySectionID=\"{}\">\n{}</MediaContainer>\n",
                esc(&e.section),
                episode_item(e, true)
            ),
            None,
        ));
    }
    if s.shows.contains_key(rest) {
        return None;
    }
    let e = s.watched.iter().find(|e| e.show_rating_key == rest)?;
    Some(xml_page(
        format!(
            "{DECL}<MediaContainer size=\"1\" allowSync=\"1\" identifier=\"com.plexapp.plugins.library\" librarySectionID=\"{}\" librarySectionTitle=\"TV Shows\">\n{}</MediaContainer>\n",
            esc(&e.section),
            show_item(e, None)
        ),
        None,
    ))
}

/// One episode in the shape of the Plexopedia season-children capture.
fn episode_item(e: &WatchedEpisodeFixture, with_guids: bool) -> String {
    let (rk, prk, grk) = (
        esc(&e.rating_key),
        esc(&e.season_rating_key),
        esc(&e.show_rating_key),
    );
    let mut a = format!(
        "<Video ratingKey=\"{rk}\" key=\"/library/metadata/{rk}\" parentRatingKey=\"{prk}\" grandparentRatingKey=\"{grk}\" guid=\"plex://episode/{rk:0>24}\" parentGuid=\"plex://season/{prk:0>24}\" grandparentGuid=\"{}\" type=\"episode\" title=\"{}\" grandparentKey=\"/library/metadata/{grk}\" parentKey=\"/library/metadata/{prk}\" librarySectionTitle=\"TV Shows\" librarySectionID=\"{}\" grandparentTitle=\"{}\" parentTitle=\"Season {}\" index=\"{}\" parentIndex=\"{}\"",
        esc(&e.grandparent_guid),
        esc(&e.title),
        esc(&e.section),
        esc(&e.grandparent_title),
        e.season,
        e.episode,
        e.season,
    );
    if e.view_count > 0 {
        a += &format!(" viewCount=\"{}\"", e.view_count);
    }
    if let Some(t) = e.last_viewed_at {
        a += &format!(" lastViewedAt=\"{t}\"");
    }
    a += &format!(
        " thumb=\"/library/metadata/{rk}/thumb/1674982811\" duration=\"1681271\" originallyAvailableAt=\"1983-01-11\" addedAt=\"1619709963\" updatedAt=\"1674982811\">\n"
    );
    if with_guids {
        for g in &e.guids {
            a += &format!("<Guid id=\"{}\" />\n", esc(g));
        }
    }
    a + "</Video>\n"
}

/// Query pairs: split on the first `=`, then percent-decode key and value apart, so
/// `viewedAt%3E=5` and `viewedAt>=5` both give (`viewedAt>`, `5`).
fn decode(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (pct_decode(k), pct_decode(v)),
            None => (pct_decode(p), String::new()),
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
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The fake checked against the real client (`plexsync::plex`). These run in every test binary
/// that includes `support` (they take milliseconds).
mod self_tests {
    use std::time::Duration;

    use plexsync::plex::history::HistoryQuery;
    use plexsync::plex::{PlexClient, PlexError};
    use plexsync_plugin_api::Secret;

    use super::*;

    fn client(plex: &FakePlex, token: &str) -> PlexClient {
        plexsync::daemon::install_tls_provider();
        PlexClient::new(
            &plex.url(),
            Some(Secret::new(token.into())),
            "fake-plex-self-test".into(),
            Duration::from_secs(5),
        )
        .unwrap()
    }

    const T0: i64 = 1_700_000_000;

    #[tokio::test]
    async fn fake_history_pages_filters_and_shapes() {
        let plex = FakePlex::start(vec![]).await;
        for i in 0..120u64 {
            plex.push_history(HistoryEntry::episode(
                i,
                "871",
                "Mighty Machines",
                1 + (i / 40) as u32,
                1 + (i % 40) as u32,
                T0 + i as i64 * 60,
                1,
            ));
        }
        plex.push_history(HistoryEntry::episode(500, "871", "M", 9, 9, T0, 3972737));
        plex.push_history(HistoryEntry::movie(501, "218860", "Captain & Co", T0 + 1, 1).deleted());
        plex.push_history(
            HistoryEntry::episode(502, "871", "M", 9, 8, T0 + 2, 1).without_viewed_at(),
        );
        plex.push_history(HistoryEntry::episode(503, "871", "M", 9, 7, T0 - 10, 1));
        let c = client(&plex, TOKEN);
        let q = HistoryQuery {
            account_id: Some(1),
            viewed_since: T0,
            library_section_id: None,
            metadata_item_id: None,
        };
        let walk = c.history_all(&q, 100).await.unwrap();
        // 120 episodes + the deleted movie; the row without viewedAt is served and skipped;
        // the other account and the older row are filtered by the server.
        assert_eq!((walk.rows.len(), walk.skipped), (121, 1));
        assert_eq!(walk.total, Some(122));
        assert_eq!(plex.count("/status/sessions/history/all"), 3, "pages of 50");
        assert!(
            walk.rows
                .windows(2)
                .all(|w| w[0].viewed_at <= w[1].viewed_at)
        );
        let deleted = walk.rows.iter().find(|r| r.kind == "movie").unwrap();
        assert_eq!((&deleted.rating_key, &deleted.key), (&None, &None));
        assert_eq!(deleted.title, "Captain & Co");
        let ep = walk
            .rows
            .iter()
            .find(|r| r.history_key.as_deref() == Some("/status/sessions/history/41"))
            .unwrap();
        assert_eq!(ep.show_rating_key.as_deref(), Some("871"));
        assert_eq!(
            (ep.season, ep.episode, ep.account_id),
            (Some(2), Some(2), Some(1))
        );
        assert_eq!(ep.rating_key.as_deref(), Some("871002002"));
        assert_eq!(ep.parent_rating_key.as_deref(), Some("871002"));
        let reqs = plex.requests_to("/status/sessions/history/all");
        assert!(
            reqs[0].query.contains(&format!("viewedAt%3E={T0}")),
            "{}",
            reqs[0].query
        );
        // Page two starts 8 rows before the end of page one (the client's overlap).
        assert_eq!(reqs[1].header("x-plex-container-start"), Some("42"));

        // The short fixture form still works and keeps its shape.
        plex.push_history(HistoryFixture {
            history_key: "/status/sessions/history/900".into(),
            rating_key: Some("60900".into()),
            show_rating_key: Some("56850".into()),
            grandparent_title: "Be Cool, Scooby-Doo!".into(),
            season: 1,
            episode: 14,
            viewed_at: T0 + 100_000,
            account_id: 1,
        });
        let q = HistoryQuery {
            viewed_since: T0 + 100_000,
            ..Default::default()
        };
        let page = c.history_page(&q, 0, 10).await.unwrap();
        assert_eq!(page.rows.len(), 1);
        assert_eq!(page.rows[0].show_rating_key.as_deref(), Some("56850"));
        assert_eq!(page.rows[0].title, "Episode 14");

        // Unpaged (no X-Plex-Container-* headers): everything, `size` only.
        let root = c
            .get_xml(
                "/status/sessions/history/all",
                &[("sort", "viewedAt:desc".into())],
                None,
            )
            .await
            .unwrap();
        assert_eq!(root.children.len(), 125);
        assert_eq!(root.attr("totalSize"), None);
        assert_eq!(root.attr("size"), Some("125"));
        assert_eq!(
            root.children[0].attr("historyKey"),
            Some("/status/sessions/history/900"),
            "desc"
        );
    }

    #[tokio::test]
    async fn fake_rejects_an_operator_in_the_value() {
        let plex = FakePlex::start(vec![]).await;
        let c = client(&plex, TOKEN);
        let e = c
            .get_xml(
                "/status/sessions/history/all",
                &[("viewedAt", ">=5".into())],
                Some((0, 10)),
            )
            .await
            .unwrap_err();
        assert!(format!("{e}").contains("400"), "{e}");
    }

    #[tokio::test]
    async fn fake_faults_and_tokens() {
        let plex = FakePlex::start(vec![]).await;
        let c = client(&plex, TOKEN);
        plex.fail_next(500, 2);
        for _ in 0..2 {
            assert!(matches!(
                c.accounts().await,
                Err(PlexError::Transient { .. })
            ));
        }
        assert_eq!(c.accounts().await.unwrap().len(), 2, "recovered");
        plex.malformed_next(1);
        assert!(matches!(
            c.accounts().await,
            Err(PlexError::Malformed { .. })
        ));
        plex.fail_next_on("/accounts", 404, 1);
        let id = c.identity().await.unwrap();
        assert_eq!(
            id.machine_identifier,
            "fakeplexmachine0000000000000000000000000"
        );
        assert!(id.claimed);
        assert!(matches!(
            c.accounts().await,
            Err(PlexError::NotFound { .. })
        ));
        plex.malformed_next_on("/status/", 1);
        assert!(c.identity().await.is_ok());
        let e = c
            .history_page(&HistoryQuery::default(), 0, 5)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, PlexError::Malformed { endpoint, .. } if endpoint == "/status/sessions/history/all")
        );

        let wrong = client(&plex, "not-the-token");
        assert!(
            wrong.identity().await.is_ok(),
            "PMS serves /identity without a token"
        );
        let e = wrong.accounts().await.unwrap_err();
        assert!(matches!(e, PlexError::Unauthorized { .. }));
        assert!(!format!("{e:?} {wrong:?}").contains("not-the-token"));

        plex.set_accounts(&[(0, ""), (1, "owner"), (3972737, "Kids")]);
        let a = c.accounts().await.unwrap();
        assert_eq!(
            a.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![0, 1, 3972737]
        );
        assert_eq!(plex.count("/accounts"), 7);

        plex.state.lock().unwrap().ignore_container_start = true;
        for i in 0..80 {
            plex.push_history(HistoryEntry::episode(
                i,
                "5",
                "S",
                1,
                1 + i as u32,
                T0 + i as i64,
                1,
            ));
        }
        let e = c
            .history_all(&HistoryQuery::default(), 50)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("ignored X-Plex-Container-Start"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn fake_sections_and_watched_episodes() {
        let plex = FakePlex::start(vec![]).await;
        plex.state.lock().unwrap().max_page = 2;
        plex.state.lock().unwrap().sections.insert(
            0,
            SectionFixture {
                key: "1".into(),
                kind: "movie".into(),
                title: "Movies".into(),
                agent: "tv.plex.agents.movie".into(),
            },
        );
        for e in 1..=5u32 {
            let mut w = WatchedEpisodeFixture::new(
                &format!("70{e}"),
                "56850",
                "Be Cool, Scooby-Doo!",
                1,
                e,
                T0 + e as i64,
            );
            w.guids = vec![format!("tvdb://{e}")];
            plex.push_watched(w);
        }
        let mut unwatched =
            WatchedEpisodeFixture::new("799", "56850", "Be Cool, Scooby-Doo!", 2, 1, T0);
        unwatched.view_count = 0;
        unwatched.last_viewed_at = None;
        plex.push_watched(unwatched);
        let mut old =
            WatchedEpisodeFixture::new("798", "56850", "Be Cool, Scooby-Doo!", 2, 2, T0 - 100);
        old.view_count = 2;
        plex.push_watched(old);

        let c = client(&plex, TOKEN);
        assert_eq!(c.sections().await.unwrap().len(), 2);
        let shows = c.show_sections().await.unwrap();
        assert_eq!(shows.len(), 1);
        assert_eq!(
            (shows[0].key.as_str(), shows[0].agent.as_deref()),
            ("2", Some("tv.plex.agents.series"))
        );
        let walk = c.watched_episodes_all("2", T0 + 2, 50).await.unwrap();
        let keys: Vec<_> = walk.rows.iter().map(|r| r.rating_key.as_str()).collect();
        assert_eq!(keys, vec!["702", "703", "704", "705"]);
        // Pages of 2 (the fake's cap): each next page asks for one row of the last again.
        assert_eq!((walk.pages, walk.total), (3, Some(4)));
        let r = &walk.rows[0];
        assert_eq!(r.show_rating_key.as_deref(), Some("56850"));
        assert_eq!(
            (r.season, r.episode, r.view_count, r.last_viewed_at),
            (Some(1), Some(2), 1, Some(T0 + 2))
        );
        assert!(
            r.grandparent_guid
                .as_deref()
                .unwrap()
                .starts_with("plex://show/")
        );
        let all = c.watched_episodes_all("2", 0, 50).await.unwrap();
        assert_eq!(all.rows.len(), 6, "viewCount>=1 drops the unwatched one");
        let q = &plex.requests_to("/library/sections/2/all")[0].query;
        assert!(
            q.contains("type=4") && q.contains("includeGuids=1") && q.contains("viewCount%3E=1"),
            "{q}"
        );
        assert!(matches!(
            c.watched_episodes("9", 0, 0, 5).await,
            Err(PlexError::NotFound { .. })
        ));
    }
}

/// The shared (non-owner) user who played the new-agent scrobble sample
/// (`support::NEW_AGENT_SCROBBLE`): its `Account` (plex.tv id, title). PMS lists a shared user
/// under that same number in `/accounts` (PLEX_PROTOCOL.md §5). Not listed by default: a daemon
/// that has read the default `/accounts` does not sync its plays (`[plex] accounts` defaults to
/// the owner).
pub const SHARED_USER: (i64, &str) = (31_646_104, "播放");

/// The show of the new-agent scrobble sample (`support::NEW_AGENT_SCROBBLE`), as the fake
/// server describes it: ratingKey 40275 with its show-level guids.
pub fn baki_hanma() -> FakeShow {
    FakeShow {
        rating_key: "40275".into(),
        guid: "plex://show/60e81fd8d8000e002d7d2976".into(),
        title: "Baki Hanma".into(),
        year: 2021,
        guids: vec![
            "imdb://tt14409596".into(),
            "tmdb://108757".into(),
            "tvdb://397934".into(),
        ],
    }
}
