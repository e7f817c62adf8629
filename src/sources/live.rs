//! The live source: a connection to Plex's notification websocket
//! (`/:/websockets/notifications`, PLEX_PROTOCOL §7) that turns "something was just watched"
//! into a check of that item at once, so a finished episode reaches the tracker in seconds
//! whatever `[poll] schedule` says — without Plex Pass.
//!
//! The notifications are triggers, not plays: they carry no account and no "watched" flag.
//! - A `playing` notification whose session is `stopped` or `paused` at a view offset of at
//!   least `[live] watched_threshold` × the item's duration (from `/library/metadata/<key>`,
//!   cached briefly) reads the history since shortly before (history rows carry the account)
//!   and journals that item's rows with source `live`. So does the first one of a session
//!   and item still `playing` past the threshold (a player that vanishes sends no stop), and
//!   a session that moves on to another item ends the previous one (a player that plays the
//!   next episode may send no stop for the last).
//! - A `timeline` entry of a processed library episode (state 5) or the end of a
//!   `library.refresh.items` activity reads the item's metadata and, when it was viewed just
//!   now (`viewCount`, `lastViewedAt`), journals the owner's play with the same
//!   `library:<ratingKey>:<lastViewedAt>` key the library scan uses.
//!
//! Every play goes through the store's one ingest path, so a live play, its history row and
//! its webhook are one play (history keys and the dedupe window), one export.
//!
//! The connection is bounded (message size, connect timeout, pings with an idle limit),
//! reconnects with exponential backoff and jitter (`reconnect_min`..`reconnect_max`), reports
//! a 401 on the upgrade as the same "token rejected" state the poller reports, and starts
//! again at once when `[live]`, the Plex URL or the Plex token changes ([`Wakeups::live`]).
//! The token travels in the `X-Plex-Token` header only, never in the URL or a log line.
//!
//! [`Wakeups::live`]: crate::state::Wakeups::live

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use plexsync_plugin_api::PlaySource;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

use crate::accounts::{OWNER_ID, pms_key};
use crate::model::{Activity, Play, PlexShow, now_secs};
use crate::plex::history::HistoryQuery;
use crate::plex::{PlexClient, PlexError, encode_segment};
use crate::state::{Shared, TokenWitness};
use crate::store::ops::MappedPlays;

/// The notification endpoint (the plural path python-plexapi and Home Assistant use).
pub const PATH: &str = "/:/websockets/notifications";
/// The largest message or frame read; a notification is a few hundred bytes.
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// A ping this often keeps NATs open and proves the connection alive.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Nothing at all (no message, no pong) for this long: the connection is dead.
const IDLE_LIMIT: Duration = Duration::from_secs(75);
/// An item's duration is asked once per session end and kept this long.
const DURATION_TTL: Duration = Duration::from_secs(600);
/// The same session end (or library item) is checked once within this window: Plex repeats
/// `paused` while a player sits paused, and an activity sends several updates.
const SESSION_DEDUPE: Duration = Duration::from_secs(600);
const LIBRARY_DEDUPE: Duration = Duration::from_secs(10);
/// The history row of a stop can land a moment after the notification: retry this often.
const HISTORY_RETRIES: &[Duration] = &[
    Duration::ZERO,
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];
/// A library change journals a view only this recent: a refresh of an item watched long
/// ago is not news (the library scan and `plexsync sync` handle old views).
const LIBRARY_RECENT: i64 = 3600;
/// Checks running at once; more wait in a queue (a history check can hold its slot ~15 s).
const MAX_CHECKS: usize = 4;
/// Checks waiting at most, one per key. Beyond it (a flood of distinct sessions or items) the
/// oldest waiting check is dropped with a warning; the next poll covers it when polls are on.
const MAX_WAITING: usize = 256;
/// A connection that lived this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

// ---- notifications (pure) ----

/// One websocket message, as far as the live source cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    Playing(Vec<PlaySession>),
    Timeline(Vec<TimelineEntry>),
    Activity(Vec<ActivityEvent>),
    /// Any other type (`update.statechange`, `provider.content.change`, `status`, …).
    Other(String),
}

impl Notification {
    /// The `type` label of `plexsync_live_messages_total`: its index in the metrics array.
    pub fn metric_index(&self) -> usize {
        match self {
            Notification::Playing(_) => 0,
            Notification::Timeline(_) => 1,
            Notification::Activity(_) => 2,
            Notification::Other(_) => 3,
        }
    }
}

/// `PlaySessionStateNotification`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaySession {
    pub session_key: String,
    pub rating_key: Option<String>,
    /// Milliseconds.
    pub view_offset: Option<u64>,
    /// `playing`, `paused`, `stopped`, `buffering`.
    pub state: String,
}

/// `TimelineEntry`.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    pub identifier: String,
    /// `itemID`: the item's ratingKey.
    pub item_id: Option<String>,
    /// Numeric metadata type (4 = episode).
    pub kind: Option<i64>,
    /// 0 created … 5 processed, 9 deleted.
    pub state: Option<i64>,
    pub metadata_state: Option<String>,
}

/// `ActivityNotification`.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityEvent {
    /// `started`, `updated`, `ended`.
    pub event: String,
    /// `Activity.type`, e.g. `library.refresh.items`.
    pub kind: String,
    /// `Activity.Context.key`, e.g. `/library/metadata/513`.
    pub key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no NotificationContainer type")]
    NoType,
}

/// Parse one message: `{"NotificationContainer": {"type": …, "<Payload>": […]}}` (the bare
/// container is taken too). Ids come as strings or numbers; unknown fields are ignored.
pub fn parse(text: &str) -> Result<Notification, ParseError> {
    let v: Value = serde_json::from_str(text)?;
    parse_value(&v)
}

pub fn parse_value(v: &Value) -> Result<Notification, ParseError> {
    let c = v.get("NotificationContainer").unwrap_or(v);
    let kind = c
        .get("type")
        .and_then(Value::as_str)
        .ok_or(ParseError::NoType)?;
    let items = |name: &str| -> Vec<&Value> {
        c.get(name)
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    };
    Ok(match kind {
        "playing" => Notification::Playing(
            items("PlaySessionStateNotification")
                .into_iter()
                .filter_map(|p| {
                    Some(PlaySession {
                        session_key: text(p, "sessionKey").unwrap_or_default(),
                        rating_key: text(p, "ratingKey")
                            .or_else(|| text(p, "key").and_then(|k| metadata_id(&k))),
                        view_offset: int(p, "viewOffset").and_then(|o| u64::try_from(o).ok()),
                        state: text(p, "state")?,
                    })
                })
                .collect(),
        ),
        "timeline" => Notification::Timeline(
            items("TimelineEntry")
                .into_iter()
                .map(|t| TimelineEntry {
                    identifier: text(t, "identifier").unwrap_or_default(),
                    item_id: text(t, "itemID"),
                    kind: int(t, "type"),
                    state: int(t, "state"),
                    metadata_state: text(t, "metadataState"),
                })
                .collect(),
        ),
        "activity" => Notification::Activity(
            items("ActivityNotification")
                .into_iter()
                .filter_map(|a| {
                    let act = a.get("Activity")?;
                    Some(ActivityEvent {
                        event: text(a, "event").unwrap_or_default(),
                        kind: text(act, "type").unwrap_or_default(),
                        key: act.get("Context").and_then(|c| text(c, "key")),
                    })
                })
                .collect(),
        ),
        other => Notification::Other(other.chars().take(64).collect()),
    })
}

/// A non-empty string, or a number as text.
fn text(v: &Value, k: &str) -> Option<String> {
    match v.get(k)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An integer, or a string holding one.
fn int(v: &Value, k: &str) -> Option<i64> {
    match v.get(k)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `/library/metadata/513` → `513`; anything longer (`…/children`) is not one item.
pub fn metadata_id(key: &str) -> Option<String> {
    let id = key.strip_prefix("/library/metadata/")?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| id.to_string())
}

/// How far a session's item went, as a notification says. Ordered: a stop after a pause at
/// the same offset is news (Plex may count the view only at the stop), a pause after a stop
/// is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SessionState {
    /// Still playing: a check only past a known threshold, once per session and item.
    Playing,
    Paused,
    /// Stopped, or the session moved on to another item.
    Stopped,
}

/// What one notification asks the live source to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// A session ended, paused or plays on: is it past the threshold? Then read the history.
    SessionEnd {
        session_key: String,
        rating_key: String,
        view_offset: u64,
        state: SessionState,
    },
    /// A library item changed: read its metadata.
    LibraryItem { rating_key: String },
}

/// The checks a notification asks for (pure).
pub fn checks(n: &Notification) -> Vec<Check> {
    match n {
        Notification::Playing(sessions) => sessions
            .iter()
            .filter_map(|s| {
                let state = match s.state.as_str() {
                    "stopped" => SessionState::Stopped,
                    "paused" => SessionState::Paused,
                    "playing" => SessionState::Playing,
                    // Buffering says nothing about how far it got.
                    _ => return None,
                };
                Some(Check::SessionEnd {
                    session_key: s.session_key.clone(),
                    rating_key: s.rating_key.clone()?,
                    view_offset: s.view_offset?,
                    state,
                })
            })
            .collect(),
        Notification::Timeline(entries) => entries
            .iter()
            .filter(|t| {
                t.identifier == "com.plexapp.plugins.library"
                    && t.kind == Some(4)
                    && t.state == Some(5)
                    && t.metadata_state.as_deref() != Some("deleted")
            })
            .filter_map(|t| {
                Some(Check::LibraryItem {
                    rating_key: t.item_id.clone()?,
                })
            })
            .collect(),
        Notification::Activity(events) => events
            .iter()
            .filter(|a| a.kind == "library.refresh.items" && a.event == "ended")
            .filter_map(|a| {
                Some(Check::LibraryItem {
                    rating_key: metadata_id(a.key.as_deref()?)?,
                })
            })
            .collect(),
        Notification::Other(_) => Vec::new(),
    }
}

/// What each session of one connection played last: session key → (rating key, view offset,
/// when). Per connection: Plex reuses session keys after a restart.
#[derive(Debug, Default)]
pub struct Sessions(HashMap<String, (String, u64, Instant)>);

/// Sessions tracked at most; beyond it the ones quiet longest are forgotten (a session
/// that plays sends a notification every few seconds).
const SESSIONS_KEPT: usize = 1024;

impl Sessions {
    /// Note a session's notification; when the session moved on to another item without
    /// a stop, the end of the previous item at its last known offset.
    pub fn track(&mut self, s: &PlaySession) -> Option<Check> {
        let (Some(rk), Some(offset)) = (s.rating_key.as_ref(), s.view_offset) else {
            return None;
        };
        let ended = match self.0.get(&s.session_key) {
            Some((prev, prev_offset, _)) if prev != rk => Some(Check::SessionEnd {
                session_key: s.session_key.clone(),
                rating_key: prev.clone(),
                view_offset: *prev_offset,
                state: SessionState::Stopped,
            }),
            _ => None,
        };
        if s.state == "stopped" {
            self.0.remove(&s.session_key);
        } else if s.session_key.len() + rk.len() <= KEY_MAX {
            if self.0.len() >= SESSIONS_KEPT && !self.0.contains_key(&s.session_key) {
                self.0.retain(|_, (_, _, at)| at.elapsed() < SESSION_DEDUPE);
                if self.0.len() >= SESSIONS_KEPT {
                    self.0.clear();
                }
            }
            self.0
                .insert(s.session_key.clone(), (rk.clone(), offset, Instant::now()));
        }
        ended
    }
}

/// Whether `offset` ms is at least `threshold` of `duration` ms.
pub fn past_threshold(offset: u64, duration: u64, threshold: f32) -> bool {
    duration > 0 && offset as f64 >= f64::from(threshold) * duration as f64
}

/// The websocket URL of a Plex base URL: ws:// for http://, wss:// for https://.
pub fn ws_url(plex_url: &str) -> Result<String, String> {
    let base = plex_url.trim().trim_end_matches('/');
    let (scheme, rest) = base
        .split_once("://")
        .ok_or_else(|| "the Plex URL has no scheme".to_string())?;
    let ws = match scheme.to_ascii_lowercase().as_str() {
        "http" => "ws",
        "https" => "wss",
        other => {
            return Err(format!(
                "the Plex URL's scheme {other:?} is not http or https"
            ));
        }
    };
    Ok(format!("{ws}://{rest}{PATH}"))
}

/// The delay before reconnect `attempt` (1-based): `min` doubled per attempt up to `max`,
/// the upper half jittered by `r` ∈ [0, 1] so many daemons that lost one Plex do not come
/// back in step; never below `min`.
pub fn reconnect_delay(attempt: u32, min: Duration, max: Duration, r: f64) -> Duration {
    let exp = min.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let d = exp.min(max);
    let half = d / 2;
    (half + half.mul_f64(r.clamp(0.0, 1.0))).max(min.min(max))
}

fn jitter() -> f64 {
    crate::secrets::random_bytes::<4>()
        .map(u32::from_le_bytes)
        .map(|r| f64::from(r) / f64::from(u32::MAX))
        .unwrap_or(0.5)
}

// ---- the connection ----

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("Plex refused the token (401 on {PATH})")]
    Rejected,
    #[error("{0}")]
    Other(String),
}

/// The TLS settings of wss://: rustls with the platform verifier, as the Plex HTTP client.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    crate::install_tls_provider();
    let cfg = rustls::ClientConfig::builder()
        .with_platform_verifier()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

async fn connect(shared: &Shared) -> Result<Ws, ConnectError> {
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let cfg = shared.config();
    let url = ws_url(&cfg.plex.url).map_err(ConnectError::Other)?;
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::Other(format!("bad websocket URL: {e}")))?;
    let h = req.headers_mut();
    if let Some(t) = shared.secret("plex-token") {
        let mut v = HeaderValue::from_str(t.expose())
            .map_err(|_| ConnectError::Other("the Plex token is not a header value".into()))?;
        v.set_sensitive(true);
        h.insert("X-Plex-Token", v);
    }
    if let Ok(v) = HeaderValue::from_str(shared.plex_client_id()) {
        h.insert("X-Plex-Client-Identifier", v);
    }
    h.insert("X-Plex-Product", HeaderValue::from_static("plexsync"));
    h.insert(
        "User-Agent",
        HeaderValue::from_static(concat!("plexsync/", env!("CARGO_PKG_VERSION"))),
    );
    let connector = if url.starts_with("wss://") {
        tokio_tungstenite::Connector::Rustls(tls_config().map_err(ConnectError::Other)?)
    } else {
        tokio_tungstenite::Connector::Plain
    };
    let ws_cfg = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let timeout = cfg.plex.timeout.min(Duration::from_secs(10));
    let attempt =
        tokio_tungstenite::connect_async_tls_with_config(req, Some(ws_cfg), true, Some(connector));
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(ConnectError::Other(format!(
            "no websocket within {}",
            plexsync_plugin_api::values::human(timeout)
        ))),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) if resp.status().as_u16() == 401 => {
            Err(ConnectError::Rejected)
        }
        Ok(Err(tungstenite::Error::Http(resp))) => Err(ConnectError::Other(format!(
            "Plex answered the websocket upgrade with HTTP {}",
            resp.status()
        ))),
        Ok(Err(e)) => Err(ConnectError::Other(format!("websocket: {e}"))),
    }
}

/// Why a connection ended.
enum Ended {
    /// Plex closed it, it broke, or it went quiet.
    Dropped(String),
    /// The settings changed: connect again at once.
    Restart,
    Shutdown,
}

/// Run the live source until the daemon stops: connect, read, reconnect.
pub async fn live_task(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let checker = Checker::new(shared.clone());
    let mut attempt = 0u32;
    let mut connections = 0u64;
    // The server the checker's memory is about.
    let mut server: Option<String> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let cfg = shared.config();
        if server.as_deref().is_some_and(|u| u != cfg.plex.url) {
            tracing::info!(plex = %cfg.plex.url, "live: another Plex server; what was checked on the last one is forgotten");
            checker.forget();
        }
        server = Some(cfg.plex.url.clone());
        if !cfg.live.enabled {
            shared.with_live_status(|s| {
                s.connected = false;
                s.connected_since = None;
            });
            tokio::select! {
                _ = shared.wake.live.notified() => {}
                _ = shutdown.changed() => {}
            }
            attempt = 0;
            continue;
        }
        let restart = match connect(&shared).await {
            Ok(ws) => {
                connections += 1;
                if connections > 1 {
                    shared
                        .board
                        .metrics
                        .live_reconnects
                        .fetch_add(1, Ordering::Relaxed);
                }
                let since = now_secs();
                shared.with_live_status(|s| {
                    s.connected = true;
                    s.connected_since = Some(since);
                    s.last_error = None;
                    if connections > 1 {
                        s.reconnects += 1;
                    }
                });
                // The upgrade needed the token: a rejection noted earlier is over.
                let st = shared.status();
                if st.plex_token_rejected
                    || st.plex_error_kind == Some(crate::model::PollFailure::TokenRejected)
                {
                    shared.note_plex_ok(TokenWitness::Live);
                }
                tracing::info!(plex = %cfg.plex.url, "live: connected to Plex's notifications");
                let opened = Instant::now();
                let ended = read(&shared, ws, &checker, &mut shutdown).await;
                shared.with_live_status(|s| {
                    s.connected = false;
                    s.connected_since = None;
                });
                if opened.elapsed() >= STABLE_AFTER {
                    attempt = 0;
                }
                match ended {
                    Ended::Shutdown => break,
                    Ended::Restart => {
                        tracing::info!("live: settings changed; connecting again");
                        attempt = 0;
                        true
                    }
                    Ended::Dropped(why) => {
                        tracing::warn!(reason = %why, "live: connection to Plex lost");
                        shared.with_live_status(|s| s.last_error = Some(why));
                        false
                    }
                }
            }
            Err(e) => {
                if matches!(e, ConnectError::Rejected) {
                    shared.note_plex_error(&PlexError::Unauthorized {
                        endpoint: PATH.into(),
                    });
                }
                tracing::warn!(error = %e, "live: cannot connect to Plex's notifications");
                shared.with_live_status(|s| s.last_error = Some(e.to_string()));
                false
            }
        };
        if restart {
            continue;
        }
        attempt = attempt.saturating_add(1);
        let cfg = shared.config();
        let d = reconnect_delay(
            attempt,
            cfg.live.reconnect_min,
            cfg.live.reconnect_max,
            jitter(),
        );
        tracing::debug!(
            delay_ms = d.as_millis() as u64,
            attempt,
            "live: reconnecting"
        );
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            // New settings or a new token: try now.
            _ = shared.wake.live.notified() => { attempt = 0; }
            _ = shutdown.changed() => {}
        }
    }
    shared.with_live_status(|s| {
        s.connected = false;
        s.connected_since = None;
    });
}

/// Read one connection until it ends; each notification's checks go to the [`Checker`].
async fn read(
    shared: &Shared,
    ws: Ws,
    checker: &Checker,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Ended {
    let (mut sink, mut stream) = ws.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_rx = Instant::now();
    let mut sessions = Sessions::default();
    let ended = loop {
        tokio::select! {
            msg = stream.next() => {
                let msg = match msg {
                    None => break Ended::Dropped("Plex closed the connection".into()),
                    Some(Err(e)) => break Ended::Dropped(format!("websocket: {e}")),
                    Some(Ok(m)) => m,
                };
                last_rx = Instant::now();
                match msg {
                    Message::Text(t) => on_text(shared, checker, &mut sessions, t.as_str()),
                    Message::Binary(b) => match std::str::from_utf8(&b) {
                        Ok(t) => on_text(shared, checker, &mut sessions, t),
                        Err(_) => count(shared, 3),
                    },
                    Message::Close(_) => break Ended::Dropped("Plex closed the connection".into()),
                    // Pings are answered by tungstenite itself; pongs only prove life.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
            _ = ping.tick() => {
                if last_rx.elapsed() >= IDLE_LIMIT {
                    break Ended::Dropped(format!(
                        "nothing from Plex for {} s (not even a pong)",
                        IDLE_LIMIT.as_secs()
                    ));
                }
                let send = sink.send(Message::Ping(Vec::new().into()));
                match tokio::time::timeout(Duration::from_secs(10), send).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Ended::Dropped(format!("websocket ping: {e}")),
                    Err(_) => break Ended::Dropped("websocket ping timed out".into()),
                }
            }
            _ = shared.wake.live.notified() => break Ended::Restart,
            _ = shutdown.changed() => break Ended::Shutdown,
        }
    };
    // A polite close where the connection still works; bounded, it may not.
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    ended
}

fn count(shared: &Shared, i: usize) {
    shared.board.metrics.live_messages[i].fetch_add(1, Ordering::Relaxed);
    shared.with_live_status(|s| s.last_message_at = Some(now_secs()));
}

fn on_text(shared: &Shared, checker: &Checker, sessions: &mut Sessions, text: &str) {
    match parse(text) {
        Ok(n) => {
            count(shared, n.metric_index());
            if let Notification::Playing(list) = &n {
                for s in list {
                    if let Some(c) = sessions.track(s) {
                        checker.submit(c);
                    }
                }
            }
            for c in checks(&n) {
                checker.submit(c);
            }
        }
        Err(e) => {
            count(shared, 3);
            tracing::debug!(error = %e, "live: a message that is not a notification");
        }
    }
}

// ---- the checks ----

/// Runs checks in the background (at most [`MAX_CHECKS`] at once, one per key; the rest
/// wait their turn in a queue) so reading never waits, and remembers what it checked so
/// repeats are skipped.
#[derive(Clone)]
struct Checker {
    shared: Arc<Shared>,
    queue: Arc<std::sync::Mutex<Queue>>,
    seen: Arc<Seen>,
    tried: Arc<Tried>,
    durations: Arc<Durations>,
}

/// Check key → when it was checked (a session end: when its history row was found).
type Seen = std::sync::Mutex<HashMap<String, Instant>>;

/// Session-end key → how far it had gone (state, view offset) when a check last found no
/// history row for it, and when. Only a notification that repeats that point is skipped
/// (Plex resends `paused` while a player sits paused); one that went further is checked
/// again, because Plex counts a view at its own moment, often only at the stop.
type Tried = std::sync::Mutex<HashMap<String, (Instant, SessionState, u64)>>;

/// The checks running and waiting. A key is running or waiting, never both, and waits once.
#[derive(Default)]
struct Queue {
    /// Key of a check running now → the newest notification for that key that came while
    /// it ran, checked when it ends: never two checks of one key at once, and none lost.
    running: HashMap<String, Option<Check>>,
    /// Checks waiting for a slot, oldest first (at most [`MAX_WAITING`]).
    waiting: std::collections::VecDeque<(String, Check)>,
}

/// The map, also after a panic elsewhere poisoned it: these maps hold no invariant a panic
/// could break half way, and a live source that stops checking for good is worse.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `key` was checked within `window`.
fn recently(seen: &Seen, key: &str, window: Duration) -> bool {
    lock(seen).get(key).is_some_and(|t| t.elapsed() < window)
}

/// Checks remembered at most; a flood of notifications (a library scan, a hostile server)
/// beyond it forgets the oldest instead of growing the map.
const SEEN_KEPT: usize = 4096;

/// The longest check key kept (`s:<sessionKey>:<ratingKey>`); Plex's are a few dozen bytes.
const KEY_MAX: usize = 256;

fn remember(seen: &Seen, key: String) {
    if key.len() > KEY_MAX {
        return;
    }
    let mut s = lock(seen);
    if s.len() >= SEEN_KEPT {
        // Each kind of check is forgotten after its own window.
        s.retain(|k, t| {
            let window = if k.starts_with("l:") {
                LIBRARY_DEDUPE
            } else {
                SESSION_DEDUPE
            };
            t.elapsed() < window
        });
    }
    if s.len() >= SEEN_KEPT {
        let mut by_age: Vec<(Instant, String)> = s.iter().map(|(k, t)| (*t, k.clone())).collect();
        by_age.sort_unstable();
        for (_, k) in by_age.into_iter().take(SEEN_KEPT / 2) {
            s.remove(&k);
        }
    }
    s.insert(key, Instant::now());
}

/// Whether a session end says more than the last check of its key that found no row.
fn news(tried: &Tried, key: &str, state: SessionState, offset: u64) -> bool {
    match lock(tried).get(key) {
        Some((at, s, o)) if at.elapsed() < SESSION_DEDUPE => offset > *o || state > *s,
        _ => true,
    }
}

/// A check of `key` at (`state`, `offset`) found no history row.
fn note_tried(tried: &Tried, key: &str, state: SessionState, offset: u64) {
    let mut t = lock(tried);
    if t.len() >= SEEN_KEPT {
        t.retain(|_, (at, ..)| at.elapsed() < SESSION_DEDUPE);
    }
    if t.len() >= SEEN_KEPT {
        // A flood of distinct sessions: forgetting costs at most a repeated check.
        t.clear();
    }
    let e = t
        .entry(key.to_string())
        .or_insert((Instant::now(), state, offset));
    *e = (Instant::now(), e.1.max(state), e.2.max(offset));
}

/// The dedupe key of a check and how long a done check of it is remembered.
fn check_key(check: &Check) -> (String, Duration) {
    match check {
        Check::SessionEnd {
            session_key,
            rating_key,
            ..
        } => (format!("s:{session_key}:{rating_key}"), SESSION_DEDUPE),
        Check::LibraryItem { rating_key } => (format!("l:{rating_key}"), LIBRARY_DEDUPE),
    }
}

impl Checker {
    fn new(shared: Arc<Shared>) -> Self {
        Checker {
            shared,
            queue: Arc::new(std::sync::Mutex::new(Queue::default())),
            seen: Arc::new(std::sync::Mutex::new(HashMap::new())),
            tried: Arc::new(std::sync::Mutex::new(HashMap::new())),
            durations: Arc::new(std::sync::Mutex::new(HashMap::new())),
        }
    }

    /// Forget what was checked and cached: its keys (session and rating keys) are one
    /// server's, and `[plex] url` now names another, whose same keys mean other items.
    fn forget(&self) {
        lock(&self.seen).clear();
        lock(&self.tried).clear();
        lock(&self.durations).clear();
    }

    /// Whether `check` still asks for anything: not done within its window, and for a
    /// session end, further than its last check that found no row.
    fn wanted(&self, key: &str, window: Duration, check: &Check) -> bool {
        if recently(&self.seen, key, window) {
            return false;
        }
        match check {
            // Playing past the threshold asks once per session and item: a later
            // `playing` is no news after a check that found no row (its pause or stop is).
            Check::SessionEnd {
                state: SessionState::Playing,
                ..
            } => lock(&self.tried)
                .get(key)
                .is_none_or(|(at, ..)| at.elapsed() >= SESSION_DEDUPE),
            Check::SessionEnd {
                view_offset, state, ..
            } => news(&self.tried, key, *state, *view_offset),
            Check::LibraryItem { .. } => true,
        }
    }

    /// Whether the item's cached metadata already says this session end is short of the
    /// threshold or not an episode: then it is not even queued (a playing session sends a
    /// notification every few seconds).
    fn known_short(&self, check: &Check) -> bool {
        let Check::SessionEnd {
            rating_key,
            view_offset,
            ..
        } = check
        else {
            return false;
        };
        let threshold = self.shared.config().live.watched_threshold;
        match cached_item(&self.durations, rating_key) {
            Some(Item::Other) => true,
            Some(Item::Episode(Some(d))) => !past_threshold(*view_offset, d, threshold),
            // No duration to compare with: a pause or stop is read anyway, a session
            // still playing never (see `session_end`).
            Some(Item::Episode(None)) => matches!(
                check,
                Check::SessionEnd {
                    state: SessionState::Playing,
                    ..
                }
            ),
            None => false,
        }
    }

    fn submit(&self, check: Check) {
        let (key, window) = check_key(&check);
        if key.len() > KEY_MAX {
            tracing::debug!(
                len = key.len(),
                "live: a notification's keys are too long to be Plex's; skipped"
            );
            return;
        }
        if !self.wanted(&key, window, &check) || self.known_short(&check) {
            return;
        }
        {
            let mut q = lock(&self.queue);
            if let Some(next) = q.running.get_mut(&key) {
                // Checked when the running check of this key ends, unless that one
                // finds the row.
                *next = Some(check);
                return;
            }
            if let Some(w) = q.waiting.iter_mut().find(|(k, _)| *k == key) {
                // Still waiting: the newer notification goes in its place.
                w.1 = check;
                return;
            }
            if q.running.len() >= MAX_CHECKS {
                // Every slot is busy (history checks retry for ~15 s): wait for one rather
                // than drop the check, which nothing else would cover with polls off.
                if q.waiting.len() >= MAX_WAITING {
                    if let Some((dropped, _)) = q.waiting.pop_front() {
                        tracing::warn!(
                            dropped = %dropped,
                            waiting = MAX_WAITING,
                            "live: too many checks waiting; the oldest is dropped (the next poll covers it)"
                        );
                    }
                }
                tracing::debug!(check = %key, waiting = q.waiting.len() + 1, "live: every check slot is busy; queued");
                q.waiting.push_back((key, check));
                return;
            }
            q.running.insert(key.clone(), None);
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut slot = Slot {
                queue: &me.queue,
                key: Some(key.clone()),
            };
            let (mut key, mut check) = (key, check);
            loop {
                me.run(&key, check).await;
                match me.next_after(&key) {
                    Some((k, c)) => {
                        slot.key = Some(k.clone());
                        (key, check) = (k, c);
                    }
                    None => {
                        // `next_after` freed the slot.
                        slot.key = None;
                        break;
                    }
                }
            }
        });
    }

    /// What the slot `key`'s check held does next: the notification for `key` that came
    /// while it ran, else the oldest waiting check, as long as it still asks for something.
    /// None: the slot is free.
    fn next_after(&self, key: &str) -> Option<(String, Check)> {
        let mut q = lock(&self.queue);
        if let Some(c) = q.running.get_mut(key).and_then(Option::take) {
            if self.wanted(key, check_key(&c).1, &c) {
                return Some((key.to_string(), c));
            }
        }
        q.running.remove(key);
        while let Some((k, c)) = q.waiting.pop_front() {
            if self.wanted(&k, check_key(&c).1, &c) {
                q.running.insert(k.clone(), None);
                return Some((k, c));
            }
        }
        None
    }

    async fn run(&self, key: &str, check: Check) {
        // A library item is remembered as it starts; a session end only once its history
        // row was found: a pause past the threshold before Plex counted the view, or a
        // check that failed, must not hide the stop that follows.
        if matches!(check, Check::LibraryItem { .. }) {
            remember(&self.seen, key.to_string());
        }
        let shared = &self.shared;
        let metrics = &shared.board.metrics;
        metrics.live_checks.fetch_add(1, Ordering::Relaxed);
        metrics.live_checks_running.fetch_add(1, Ordering::Relaxed);
        let _running = Running(shared.clone());
        let what = match &check {
            Check::SessionEnd { .. } => "session end",
            Check::LibraryItem { .. } => "library change",
        };
        let result = match check {
            Check::SessionEnd {
                rating_key,
                view_offset,
                state,
                ..
            } => session_end(shared, &self.durations, &rating_key, view_offset, state)
                .await
                .map(|outcome| match outcome {
                    SessionOutcome::Found(n) => {
                        remember(&self.seen, key.to_string());
                        lock(&self.tried).remove(key);
                        n
                    }
                    SessionOutcome::NoRow => {
                        tracing::debug!(
                            session = key,
                            view_offset,
                            "live: no history row for this session end yet; a later notification checks again"
                        );
                        note_tried(&self.tried, key, state, view_offset);
                        0
                    }
                    SessionOutcome::Short => 0,
                }),
            Check::LibraryItem { rating_key } => library_item(shared, &rating_key).await,
        };
        match result {
            Ok(0) => tracing::debug!(check = what, "live: nothing new"),
            Ok(n) => tracing::info!(check = what, new = n, "live: plays journaled"),
            Err(e) => {
                if let CheckError::Plex(p @ PlexError::Unauthorized { .. }) = &e {
                    shared.note_plex_error(p);
                }
                tracing::warn!(check = what, error = %e, "live: check failed; the next poll or notification covers it");
            }
        }
    }
}

/// The slot a check task holds for `key`, given back if the task ends without handing it on
/// (a panic in a check): a bug then costs that check, not one of the few slots for good.
struct Slot<'a> {
    queue: &'a std::sync::Mutex<Queue>,
    key: Option<String>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(self.queue).running.remove(&key);
        }
    }
}

/// A check counted as running until its task ends, however it ends.
struct Running(Arc<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0
            .board
            .metrics
            .live_checks_running
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error("{0}")]
    Plex(#[from] PlexError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// An item's metadata element (the first child of its container).
async fn item_meta(
    client: &PlexClient,
    rating_key: &str,
) -> Result<Option<crate::plex::xml::Element>, PlexError> {
    let path = format!("/library/metadata/{}", encode_segment(rating_key));
    let mut root = client.get_container(&path, &[], None).await?;
    Ok(if root.children.is_empty() {
        None
    } else {
        Some(root.children.swap_remove(0))
    })
}

type Durations = std::sync::Mutex<HashMap<String, (Instant, Item)>>;

/// What a stopped item's metadata says, for a session end.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Item {
    /// An episode, with its duration in ms when Plex gives one.
    Episode(Option<u64>),
    /// A movie, a track, a show: no play can come of its stop. (An item Plex answers 404 for
    /// may be an episode deleted since: its history is still read.)
    Other,
}

/// The item's kind and duration when cached and fresh.
fn cached_item(cache: &Durations, rating_key: &str) -> Option<Item> {
    lock(cache)
        .get(rating_key)
        .filter(|(at, _)| at.elapsed() < DURATION_TTL)
        .map(|(_, d)| *d)
}

/// The item's kind and duration: cached, else from its metadata.
async fn duration_of(
    client: &PlexClient,
    cache: &Durations,
    rating_key: &str,
) -> Result<Item, PlexError> {
    if let Some(d) = cached_item(cache, rating_key) {
        return Ok(d);
    }
    let d = match item_meta(client, rating_key)
        .await?
        .filter(|e| e.attr("type").map(str::trim) == Some("episode"))
    {
        Some(e) => Item::Episode(e.attr_int::<u64>("duration")),
        None => Item::Other,
    };
    if let Ok(mut c) = cache.lock() {
        if c.len() > 512 {
            c.retain(|_, (at, _)| at.elapsed() < DURATION_TTL);
        }
        // Still full of fresh entries (a flood): start over rather than grow.
        if c.len() > 2048 {
            c.clear();
        }
        c.insert(rating_key.to_string(), (Instant::now(), d));
    }
    Ok(d)
}

/// The Plex server's machine id: known from the last poll, else asked.
async fn server_id(shared: &Shared, client: &PlexClient) -> Result<String, PlexError> {
    if let Some(id) = shared.status().plex_machine_id {
        return Ok(id);
    }
    let identity = client.identity().await?;
    shared.note_plex_identity(client, &identity);
    Ok(identity.machine_identifier)
}

/// The activity row of a live play: the history source's row (one shape for every source),
/// with the notification that found it as the event.
fn live_activity(play: &Play, event: &str) -> Option<Activity> {
    crate::sources::history::activity_for(play).map(|mut a| {
        a.event = Some(event.into());
        a
    })
}

/// What a session end's check came to.
enum SessionOutcome {
    /// Short of the threshold, or not an episode: nothing to read.
    Short,
    /// Past the threshold, but the item's history has no row (yet) after every retry.
    NoRow,
    /// The item's history rows were read; this many plays were new.
    Found(u64),
}

/// A session stopped or paused at `view_offset`: past the threshold (or when the duration is
/// unknown: a history read is cheap and always correct), read the history since shortly
/// before and journal this item's rows of the synced accounts. Retries a few times: the row
/// can land a moment after the notification.
async fn session_end(
    shared: &Arc<Shared>,
    durations: &Durations,
    rating_key: &str,
    view_offset: u64,
    state: SessionState,
) -> Result<SessionOutcome, CheckError> {
    let client = shared.plex();
    let cfg = shared.config();
    let duration = match duration_of(&client, durations, rating_key).await {
        Ok(Item::Episode(d)) => d,
        // Not an episode: reading the history (up to six times over ~15 s, holding one of
        // the few check slots) could never find a play, and would crowd out real stops.
        Ok(Item::Other) => return Ok(SessionOutcome::Short),
        Err(e @ PlexError::Unauthorized { .. }) => return Err(e.into()),
        Err(e) => {
            tracing::debug!(error = %e, "live: no duration; reading the history anyway");
            None
        }
    };
    match duration {
        Some(d) if !past_threshold(view_offset, d, cfg.live.watched_threshold) => {
            return Ok(SessionOutcome::Short);
        }
        // A session still playing is checked only past a known threshold: reading the
        // history for every playing session of unknown length would be a read per start.
        None if state == SessionState::Playing => return Ok(SessionOutcome::Short),
        _ => {}
    }
    let server = server_id(shared, &client).await?;
    let since = now_secs()
        - cfg.poll.overlap.as_secs() as i64
        - duration.map_or(4 * 3600, |d| (d / 1000) as i64);
    for (i, wait) in HISTORY_RETRIES.iter().enumerate() {
        if !wait.is_zero() {
            tokio::time::sleep(*wait).await;
        }
        let (found, new) = history_check(shared, &client, &server, rating_key, since).await?;
        if found {
            return Ok(SessionOutcome::Found(new));
        }
        tracing::debug!(try_ = i + 1, "live: no history row yet");
    }
    Ok(SessionOutcome::NoRow)
}

/// Pages a live check reads at most. With the item filter the answer is one page; a server
/// that ignores `metadataItemID` sends every item's rows, which are filtered here, and a
/// walk longer than this ends in an error (logged; the next poll covers the rest).
const LIVE_MAX_PAGES: u64 = 20;

/// Read `rating_key`'s history since `since` (all accounts; `metadataItemID` when the key is
/// numeric, as PMS's are) and journal its rows of the synced accounts. Returns (rows of that
/// item found, new plays). A walk that fails part way (a server that ignores paging, more
/// than [`LIVE_MAX_PAGES`] pages, an error) still journals the rows it read, then reports
/// the error.
async fn history_check(
    shared: &Shared,
    client: &PlexClient,
    server: &str,
    rating_key: &str,
    since: i64,
) -> Result<(bool, u64), CheckError> {
    let cfg = shared.config();
    let accounts = shared.accounts();
    let (ids, _) = accounts.resolve(&cfg.plex.accounts);
    let query = HistoryQuery {
        account_id: None,
        viewed_since: since,
        library_section_id: None,
        metadata_item_id: rating_key.parse().ok(),
    };
    let mut pages = client
        .history_pages(&query, cfg.poll.page_size)
        .max_pages(LIVE_MAX_PAGES);
    let mut plays = Vec::new();
    let mut found = false;
    let walked = loop {
        let page = match pages.next_page().await {
            Ok(Some(page)) => page,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        for row in &page.rows {
            if row.rating_key.as_deref() != Some(rating_key) {
                continue;
            }
            found = true;
            if !ids.contains(&row.account_id.unwrap_or(OWNER_ID)) {
                continue;
            }
            if let Some(p) =
                crate::sources::history::row_to_play(row, server, &accounts, PlaySource::Live)
            {
                plays.push(p);
            }
        }
    };
    let mut new = 0;
    if !plays.is_empty() {
        let window = cfg.matching.dedupe_window.as_secs() as i64;
        let counts = shared
            .ingest_batch(
                plays,
                None,
                window,
                |p| live_activity(p, "playing stopped"),
                MappedPlays::InCommit,
            )
            .await?;
        note_new(shared, counts.new);
        new = counts.new;
    }
    walked?;
    Ok((found, new))
}

fn note_new(shared: &Shared, n: u64) {
    if n > 0 {
        shared.board.metrics.plays(PlaySource::Live, n);
        shared.wake.resolve.notify_one();
    }
}

/// A library item changed: when it is an episode the owner viewed just now, journal it.
async fn library_item(shared: &Arc<Shared>, rating_key: &str) -> Result<u64, CheckError> {
    let client = shared.plex();
    let cfg = shared.config();
    let accounts = shared.accounts();
    // Metadata's view state is the token's account's: the owner, as in the library scan.
    if !accounts.resolve(&cfg.plex.accounts).0.contains(&OWNER_ID) {
        return Ok(0);
    }
    let Some(e) = item_meta(&client, rating_key).await? else {
        return Ok(0);
    };
    let Some(ep) = crate::plex::library::parse_episode(&e) else {
        return Ok(0);
    };
    let Some(viewed_at) = ep.last_viewed_at.filter(|_| ep.view_count >= 1) else {
        return Ok(0);
    };
    if viewed_at < now_secs() - LIBRARY_RECENT {
        return Ok(0);
    }
    let (Some(title), Some(season), Some(episode)) =
        (ep.grandparent_title.clone(), ep.season, ep.episode)
    else {
        return Ok(0);
    };
    let server = server_id(shared, &client).await?;
    let play = Play {
        id: 0,
        source: PlaySource::Live,
        account_id: OWNER_ID.to_string(),
        account_key: pms_key(OWNER_ID),
        account_name: accounts.name_of(OWNER_ID).map(str::to_string),
        show: PlexShow {
            server: Some(server),
            rating_key: ep.show_rating_key.clone(),
            title,
            year: None,
            guid: ep.grandparent_guid.clone(),
            episode_guid: None,
        },
        season,
        episode,
        episode_rating_key: Some(ep.rating_key.clone()),
        viewed_at,
        received_at: now_secs(),
        // The library scan's key for a view without a history row: the same view is one play.
        history_key: Some(format!("library:{}:{viewed_at}", ep.rating_key)),
    };
    let window = cfg.matching.dedupe_window.as_secs() as i64;
    let counts = shared
        .ingest_batch(
            vec![play],
            None,
            window,
            |p| live_activity(p, "library change"),
            MappedPlays::InCommit,
        )
        .await?;
    note_new(shared, counts.new);
    Ok(counts.new)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STOPPED: &str = r#"{"NotificationContainer":{"type":"playing","size":1,"PlaySessionStateNotification":[{"sessionKey":"7","clientIdentifier":"abc","guid":"","ratingKey":"9001","url":"","key":"/library/metadata/9001","viewOffset":1350000,"playQueueItemID":12,"state":"stopped"}]}}"#;

    /// A flood of distinct checks keeps the memory of checks bounded, and what was just
    /// checked is still remembered.
    #[test]
    fn the_memory_of_checks_stays_bounded_under_a_flood() {
        let seen: Seen = std::sync::Mutex::new(HashMap::new());
        for i in 0..20_000 {
            remember(&seen, format!("l:{i}"));
        }
        let n = seen.lock().unwrap().len();
        assert!(n <= SEEN_KEPT, "{n} checks remembered");
        assert!(recently(&seen, "l:19999", LIBRARY_DEDUPE));
        remember(&seen, format!("s:{}:1", "x".repeat(KEY_MAX)));
        assert!(!recently(
            &seen,
            &format!("s:{}:1", "x".repeat(KEY_MAX)),
            SESSION_DEDUPE
        ));
    }

    #[test]
    fn playing_stopped_is_a_session_end() {
        let n = parse(STOPPED).unwrap();
        assert_eq!(n.metric_index(), 0);
        assert_eq!(
            checks(&n),
            vec![Check::SessionEnd {
                session_key: "7".into(),
                rating_key: "9001".into(),
                view_offset: 1_350_000,
                state: SessionState::Stopped,
            }]
        );
        // Buffering says nothing; playing asks (past the threshold, once).
        let t = STOPPED.replace("\"stopped\"", "\"buffering\"");
        assert!(checks(&parse(&t).unwrap()).is_empty());
        let t = STOPPED.replace("\"stopped\"", "\"playing\"");
        assert!(matches!(
            checks(&parse(&t).unwrap())[..],
            [Check::SessionEnd {
                state: SessionState::Playing,
                ..
            }]
        ));
        let paused = STOPPED.replace("\"stopped\"", "\"paused\"");
        assert_eq!(checks(&parse(&paused).unwrap()).len(), 1);
    }

    #[test]
    fn ids_may_be_numbers_or_strings_and_the_key_stands_in_for_rating_key() {
        let n = parse(r#"{"NotificationContainer":{"type":"playing","PlaySessionStateNotification":[{"sessionKey":31,"key":"/library/metadata/18662","viewOffset":"5001","state":"stopped"}]}}"#).unwrap();
        assert_eq!(
            checks(&n),
            vec![Check::SessionEnd {
                session_key: "31".into(),
                rating_key: "18662".into(),
                view_offset: 5001,
                state: SessionState::Stopped,
            }]
        );
    }

    #[test]
    fn library_timeline_and_refresh_end_are_library_checks() {
        let t = r#"{"NotificationContainer":{"type":"timeline","size":1,"TimelineEntry":[{"identifier":"com.plexapp.plugins.library","sectionID":2,"itemID":9001,"parentItemID":9000,"rootItemID":8999,"type":4,"title":"Pilot","state":5,"updatedAt":1700000000}]}}"#;
        assert_eq!(
            checks(&parse(t).unwrap()),
            vec![Check::LibraryItem {
                rating_key: "9001".into()
            }]
        );
        // EPG entries, deletions, other states and other types are not.
        for (from, to) in [
            (
                "com.plexapp.plugins.library",
                "tv.plex.providers.epg.onconnect:14",
            ),
            ("\"state\":5", "\"state\":9"),
            ("\"type\":4", "\"type\":1"),
        ] {
            assert!(
                checks(&parse(&t.replace(from, to)).unwrap()).is_empty(),
                "{to}"
            );
        }
        let a = r#"{"NotificationContainer":{"type":"activity","size":1,"ActivityNotification":[{"event":"ended","uuid":"u","Activity":{"uuid":"u","type":"library.refresh.items","cancellable":false,"userID":1,"title":"Refreshing","subtitle":"","progress":100,"Context":{"key":"/library/metadata/513"}}}]}}"#;
        assert_eq!(
            checks(&parse(a).unwrap()),
            vec![Check::LibraryItem {
                rating_key: "513".into()
            }]
        );
        assert!(checks(&parse(&a.replace("ended", "updated")).unwrap()).is_empty());
        // A show's children refresh is not one item.
        assert!(checks(&parse(&a.replace("/513", "/513/children")).unwrap()).is_empty());
    }

    #[test]
    fn other_types_and_junk() {
        let n = parse(r#"{"NotificationContainer":{"type":"update.statechange","size":1,"AutoUpdateNotification":[{"key":"","version":"","state":"done"}]}}"#).unwrap();
        assert_eq!(n, Notification::Other("update.statechange".into()));
        assert_eq!(n.metric_index(), 3);
        assert!(parse("not json").is_err());
        assert!(parse("{}").is_err());
        assert!(parse(r#"{"NotificationContainer":{"type":5}}"#).is_err());
        // A payload of the wrong shape is an empty list, not an error or a panic.
        let n = parse(r#"{"NotificationContainer":{"type":"playing","PlaySessionStateNotification":{"x":1}}}"#).unwrap();
        assert_eq!(n, Notification::Playing(vec![]));
    }

    /// The real captures in ../shared/plex-samples/websocket, read in place.
    #[test]
    fn real_captures_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/plex-samples/websocket");
        if !dir.is_dir() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "{} is missing: CI must provide ../shared",
                dir.display()
            );
            eprintln!("NOTICE: {} not found; skipping this test", dir.display());
            return;
        }
        let lines =
            std::fs::read_to_string(dir.join("notifications_tautulli-issue-logs.jsonl")).unwrap();
        let parsed: Vec<Notification> = lines
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| parse(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(parsed.len(), 11);
        let all: Vec<Check> = parsed.iter().flat_map(checks).collect();
        // Three playing updates (5, 10, 15 s in: short of the threshold, or of unknown
        // length, so no history read comes of them) and one stop (a movie, so its metadata later
        // says it is not an episode); the EPG deletions, subscription activities and the
        // `/children` refresh ask for nothing.
        let playing = |view_offset| Check::SessionEnd {
            session_key: "31".into(),
            rating_key: "18662".into(),
            view_offset,
            state: SessionState::Playing,
        };
        assert_eq!(
            all,
            vec![
                playing(5001),
                playing(10_001),
                playing(15_002),
                Check::SessionEnd {
                    session_key: "112".into(),
                    rating_key: "188653".into(),
                    view_offset: 381_000,
                    state: SessionState::Stopped,
                }
            ]
        );
        let kinds: Vec<usize> = parsed.iter().map(Notification::metric_index).collect();
        assert_eq!(kinds, vec![0, 0, 0, 1, 2, 2, 3, 0, 2, 2, 1]);
        // The PlexTraktSync sequence: bare containers in a JSON array.
        let seq: Value = serde_json::from_str(
            &std::fs::read_to_string(
                dir.join("activity-sequence_library.refresh.items_plextraktsync.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let seq: Vec<Notification> = seq
            .as_array()
            .unwrap()
            .iter()
            .map(|v| parse_value(v).unwrap())
            .collect();
        assert_eq!(seq.len(), 5);
        let all: Vec<Check> = seq.iter().flat_map(checks).collect();
        assert_eq!(
            all,
            vec![Check::LibraryItem {
                rating_key: "513".into()
            }]
        );
    }

    /// A session that moves on to another item without a stop ends the previous item at
    /// its last offset; a stop forgets the session; a session that stays on its item, or
    /// lacks a key or offset, ends nothing.
    #[test]
    fn a_session_that_moves_on_ends_its_previous_item() {
        let ps = |rk: &str, offset: u64, state: &str| PlaySession {
            session_key: "7".into(),
            rating_key: Some(rk.into()),
            view_offset: Some(offset),
            state: state.into(),
        };
        let mut s = Sessions::default();
        assert_eq!(s.track(&ps("100", 5_000, "playing")), None);
        assert_eq!(s.track(&ps("100", 950_000, "playing")), None);
        assert_eq!(s.track(&ps("100", 950_000, "paused")), None);
        assert_eq!(
            s.track(&ps("200", 1_000, "playing")),
            Some(Check::SessionEnd {
                session_key: "7".into(),
                rating_key: "100".into(),
                view_offset: 950_000,
                state: SessionState::Stopped,
            })
        );
        assert_eq!(s.track(&ps("200", 2_000, "stopped")), None);
        // Forgotten at its stop: the next item is no change.
        assert_eq!(s.track(&ps("300", 1_000, "playing")), None);
        let mut no_offset = ps("400", 0, "playing");
        no_offset.view_offset = None;
        assert_eq!(s.track(&no_offset), None);
        // Bounded: a flood of sessions does not grow the table past its cap.
        for i in 0..(3 * SESSIONS_KEPT) {
            let mut p = ps("1", 1, "playing");
            p.session_key = format!("s{i}");
            s.track(&p);
        }
        assert!(s.0.len() <= SESSIONS_KEPT, "{}", s.0.len());
    }

    #[test]
    fn threshold() {
        assert!(past_threshold(900, 1000, 0.9));
        assert!(!past_threshold(899, 1000, 0.9));
        assert!(past_threshold(1000, 1000, 1.0));
        assert!(!past_threshold(5, 0, 0.9));
    }

    #[test]
    fn ws_url_follows_the_scheme_and_never_carries_a_token() {
        assert_eq!(
            ws_url("http://127.0.0.1:32400").unwrap(),
            "ws://127.0.0.1:32400/:/websockets/notifications"
        );
        assert_eq!(
            ws_url("https://plex.example:443/").unwrap(),
            "wss://plex.example:443/:/websockets/notifications"
        );
        assert!(ws_url("ftp://x").is_err());
        assert!(ws_url("plex").is_err());
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_within_bounds() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(300));
        // No jitter (r = 1): 1, 2, 4, … capped at 300.
        let full: Vec<u64> = (1..=12)
            .map(|a| reconnect_delay(a, min, max, 1.0).as_secs())
            .collect();
        assert_eq!(full, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        for a in 1..40 {
            for r in [0.0, 0.25, 0.5, 0.99, 1.0] {
                let d = reconnect_delay(a, min, max, r);
                assert!(d >= min && d <= max, "{a} {r}: {d:?}");
                let top = reconnect_delay(a, min, max, 1.0);
                assert!(d >= top / 2, "{a} {r}: {d:?}");
            }
        }
        // Jitter spreads the delay: r = 0 is half of r = 1 (above the floor).
        assert_eq!(reconnect_delay(5, min, max, 0.0), Duration::from_secs(8));
        // Never below the minimum, even when max < 2·min rounds down.
        assert_eq!(
            reconnect_delay(
                1,
                Duration::from_millis(100),
                Duration::from_millis(100),
                0.0
            ),
            Duration::from_millis(100)
        );
        // Huge attempt numbers do not overflow.
        assert_eq!(reconnect_delay(u32::MAX, min, max, 1.0), max);
    }
}
