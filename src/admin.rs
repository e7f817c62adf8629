//! The admin API (`/api/…`): JSON views of the daemon's state and the few commands the CLI
//! sends to a running daemon. Access control happens in [`crate::http`] before routing here.

use std::collections::HashMap;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::state::Shared;

type Resp = hyper::Response<http_body_util::Full<bytes::Bytes>>;

/// Largest admin request body (secret values, small JSON commands).
const MAX_ADMIN_BODY: usize = 64 * 1024;

use crate::api::{ActivityPage, BackfillRequest, OutboxView, PublicUrl, Requeued};
pub use crate::api::{CursorView, Status};
// issue 12, activity and outbox
use crate::api::{ActivityQuery, EpisodeRef, OutboxBatchView};

/// `GET /api/status`. An unreadable store does not fail the answer: it is a health item
/// (with zero counts), so the page and `plexsync status` still say what is wrong.
pub fn status(shared: &Shared) -> Result<Status, crate::store::StoreError> {
    let cfg = shared.config();
    let (webhook_url, webhook_url_note) = match shared.webhook_url() {
        Ok(b) => (Some(b.url), b.note),
        Err(e) => (None, Some(e.to_string())),
    };
    let counts = shared.store.counts().map_err(|e| e.to_string());
    let health = crate::health::compute(shared, counts.as_ref().map_err(Clone::clone));
    Ok(Status {
        running: shared.serving(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: shared.board.started.elapsed().as_secs(),
        listen: shared.listen_addr.to_string(),
        webhook_url,
        webhook_url_note,
        plex_url: cfg.plex.url.clone(),
        plex_token_set: shared.secret("plex-token").is_some(),
        tracker_key_set: shared.secret("tracker-key").is_some(),
        runtime: shared.status(),
        counts: counts.unwrap_or_default(),
        cursors: shared
            .store
            .cursors()
            .unwrap_or_default()
            .into_iter()
            .map(|(key, c)| CursorView {
                key,
                viewed_at: c.viewed_at,
                updated_at: c.updated_at,
            })
            .collect(),
        health,
        first_started_at: shared.store.first_started_at().ok().flatten(),
        live: shared.live_status(),
        export_budget: shared
            .serving()
            .then(|| crate::pipeline::export::budget_status(shared)),
    })
}

/// `{url, note}` of a URL for people to use, or 409 naming what to configure.
fn public_url(r: Result<crate::hostaddr::PublicBase, crate::state::DaemonError>) -> Resp {
    match r {
        Ok(b) => json(
            StatusCode::OK,
            &PublicUrl {
                url: b.url,
                note: b.note,
            },
        ),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

/// A JSON answer (the admin API's only kind; also used by the HTTP layer for login).
pub fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Resp {
    match serde_json::to_vec(v) {
        Ok(b) => {
            let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(b)));
            *r.status_mut() = status;
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode answer: {e}"),
        ),
    }
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Resp {
    json(status, &json!({ "error": msg.to_string() }))
}

pub fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

async fn body(req: Request<Incoming>) -> Result<Vec<u8>, String> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_ADMIN_BODY);
    match limited.collect().await {
        Ok(b) => Ok(b.to_bytes().to_vec()),
        Err(e) => Err(format!(
            "cannot read body (limit {MAX_ADMIN_BODY} bytes): {e}"
        )),
    }
}

/// Start a backfill in the background; refused while one runs.
async fn start_backfill(shared: &Shared, since: i64, dry_run: bool) -> Result<(), &'static str> {
    let Some(me) = shared.self_ref() else {
        return Err("the daemon is shutting down");
    };
    let guard = match me.backfill.clone().try_lock_owned() {
        Ok(g) => g,
        Err(_) => {
            // The last job may have published its summary (running: false) and be about to
            // let go of the lock: a client that saw it finish must not be told it still runs.
            let finishing = shared
                .board
                .backfill_progress
                .lock()
                .ok()
                .and_then(|g| g.as_ref().map(|st| !st.running))
                .unwrap_or(false);
            if !finishing {
                return Err("a backfill is already running");
            }
            tokio::time::timeout(Duration::from_secs(5), me.backfill.clone().lock_owned())
                .await
                .map_err(|_| "a backfill is already running")?
        }
    };
    // Publish "running" before answering, so a client polling right away sees it.
    if let Ok(mut g) = shared.board.backfill_progress.lock() {
        *g = Some(crate::sources::history::BackfillStatus {
            running: true,
            since,
            dry_run,
            ..Default::default()
        });
    }
    tokio::spawn(async move {
        let _guard = guard;
        crate::sources::history::backfill(&me, since, dry_run).await;
    });
    Ok(())
}

/// Start a watched-state sync in the background; refused while one runs (issue 13).
async fn start_sync(shared: &Shared, req: crate::api::SyncRequest) -> Result<(), &'static str> {
    let Some(me) = shared.self_ref() else {
        return Err("the daemon is shutting down");
    };
    let guard = match me.sync.clone().try_lock_owned() {
        Ok(g) => g,
        Err(_) => {
            // As for backfill: a job that published its summary is letting go of the lock.
            let finishing = crate::sources::library::progress(shared).is_some_and(|st| !st.running);
            if !finishing {
                return Err("a sync is running");
            }
            tokio::time::timeout(Duration::from_secs(5), me.sync.clone().lock_owned())
                .await
                .map_err(|_| "a sync is running")?
        }
    };
    // Publish "running" before answering, so a client polling right away sees it.
    crate::sources::library::mark_started(shared, req.dry_run);
    tokio::spawn(async move {
        let _guard = guard;
        crate::sources::library::sync(&me, &req).await;
    });
    Ok(())
}

/// The decisions' handlers: conflicts, mappings, show search (issue 12).
mod decisions;
pub use decisions::{
    MappingQuery, fold, id_from_legacy, key_id, mapping_views, mappings_page, search_shows,
};

/// `GET /api/stats`: unmapped shows, 30 days of activity, sync figures.
pub fn stats(shared: &Shared) -> Result<serde_json::Value, crate::store::StoreError> {
    let maps = shared.store.mappings()?;
    let conflicts = shared.store.conflicts()?;
    let mapped = maps.iter().filter(|m| !m.ignored).count();
    let band = |lo: f32, hi: f32| {
        maps.iter()
            .filter(|m| !m.ignored && m.confidence >= lo && m.confidence < hi)
            .count()
    };
    Ok(json!({
        "unmapped": conflicts.iter().map(|c| json!({
            "id": key_id(&c.key), "title": c.plex.title, "year": c.plex.year, "held_plays": c.held.len()
        })).collect::<Vec<_>>(),
        "days": shared.store.activity_days(crate::model::now_millis(), 30)?,
        "sync": {
            "mappings": maps.len() + conflicts.len(),
            "mapped": mapped,
            "unmapped": conflicts.len() + maps.iter().filter(|m| m.ignored).count(),
            "manually_confirmed": maps.iter().filter(|m| m.manual).count(),
            "high_confidence": band(0.90, f32::INFINITY),
            "medium_confidence": band(0.70, 0.90),
            "low_confidence": band(f32::NEG_INFINITY, 0.70),
            "sync_disabled": maps.iter().filter(|m| !m.sync_enabled && !m.ignored).count(),
        },
    }))
}

/// Prometheus text exposition.
pub fn metrics(shared: &Shared) -> String {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let m = &shared.board.metrics;
    let mut o = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: &[(String, u64)]| {
        let _ = writeln!(
            o,
            "# HELP plexsync_{name} {help}\n# TYPE plexsync_{name} {kind}"
        );
        for (labels, v) in rows {
            let _ = writeln!(o, "plexsync_{name}{labels} {v}");
        }
    };
    let l = |k: &str, v: &str| format!("{{{k}=\"{v}\"}}");
    family(
        "webhooks_total",
        "counter",
        "Webhooks received, by outcome.",
        &["success", "failed", "ignored", "duplicate"]
            .iter()
            .zip(&m.webhooks)
            .map(|(s, c)| (l("status", s), c.load(Relaxed)))
            .collect::<Vec<_>>(),
    );
    family(
        "polls_total",
        "counter",
        "History polls, by result.",
        &[
            (l("result", "ok"), m.polls_ok.load(Relaxed)),
            (l("result", "error"), m.polls_failed.load(Relaxed)),
        ],
    );
    family(
        "plays_total",
        "counter",
        "New plays journaled, by source.",
        &["webhook", "poll", "backfill", "library", "live"]
            .iter()
            .zip(&m.plays)
            .map(|(s, c)| (l("source", s), c.load(Relaxed)))
            .collect::<Vec<_>>(),
    );
    family(
        "exports_total",
        "counter",
        "Export attempts, by result.",
        &[
            (l("result", "delivered"), m.exports_delivered.load(Relaxed)),
            (l("result", "retry"), m.exports_retried.load(Relaxed)),
            (l("result", "dead_letter"), m.exports_dead.load(Relaxed)),
        ],
    );
    family(
        "store_commits_total",
        "counter",
        "Durable store transactions (group commits, each one fdatasync) since the start.",
        &[(String::new(), shared.store.commits())],
    );
    // issue 13: the live source.
    family(
        "live_messages_total",
        "counter",
        "Notifications read from Plex's websocket, by type.",
        &["playing", "timeline", "activity", "other"]
            .iter()
            .zip(&m.live_messages)
            .map(|(s, c)| (l("type", s), c.load(Relaxed)))
            .collect::<Vec<_>>(),
    );
    family(
        "live_reconnects_total",
        "counter",
        "Connections to Plex's websocket made after the first.",
        &[(String::new(), m.live_reconnects.load(Relaxed))],
    );
    family(
        "live_checks_total",
        "counter",
        "Checks of Plex's history started for live notifications (stops, library changes).",
        &[(String::new(), m.live_checks.load(Relaxed))],
    );
    family(
        "live_checks_in_flight",
        "gauge",
        "Live checks running now.",
        &[(String::new(), m.live_checks_running.load(Relaxed))],
    );
    family(
        "live_connected",
        "gauge",
        "Whether the websocket to Plex is open (0/1).",
        &[(String::new(), u64::from(shared.live_status().connected))],
    );
    if let Ok(c) = shared.store.counts() {
        family(
            "outbox_depth",
            "gauge",
            "Episodes waiting for export.",
            &[(String::new(), c.outbox_items)],
        );
        family(
            "outbox_oldest_pending_seconds",
            "gauge",
            "Age of the oldest episode waiting for export.",
            &[(
                String::new(),
                c.oldest_pending_secs.unwrap_or(0).max(0) as u64,
            )],
        );
        family(
            "pending_resolution",
            "gauge",
            "Plays waiting for the matcher chain (not those held in a conflict).",
            &[(String::new(), c.pending_resolution)],
        );
        family(
            "pending_resolution_oldest_seconds",
            "gauge",
            "Age of the oldest play waiting for the matcher chain.",
            &[(
                String::new(),
                c.oldest_unresolved_secs.unwrap_or(0).max(0) as u64,
            )],
        );
        family(
            "dead_letters",
            "gauge",
            "Export batches in the dead letter.",
            &[(String::new(), c.dead_letters)],
        );
        family(
            "conflicts",
            "gauge",
            "Open conflicts.",
            &[(String::new(), c.conflicts)],
        );
        family(
            "webhook_loss_total",
            "counter",
            "Plays found by polling that no webhook delivered.",
            &[(String::new(), c.webhook_loss)],
        );
    }
    // Issue 15: export request latency (histogram), requests in flight, budget waits.
    shared.board.export.render_metrics(&mut o);
    o
}

/// `GET /api/activity`: the typed [`ActivityQuery`]; an unknown status or source is a 400
/// naming the choices.
fn activity(shared: &Shared, q: &HashMap<String, String>) -> Resp {
    // `parse_query` leaves values percent-encoded, so joining them again gives back the
    // query string the typed parser decodes (the same one the CLI serialised).
    let raw = q
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let query = match ActivityQuery::from_query_string(&raw) {
        Ok(query) => query,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match shared
        .store
        .activity(&query.filter(), query.page, query.per_page)
    {
        Ok((items, total)) => json(
            StatusCode::OK,
            &ActivityPage {
                items,
                total,
                page: query.page,
            },
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// `GET /api/outbox`: counts, every batch (pending, then dead) with its show's titles.
fn outbox(shared: &Shared) -> Resp {
    let (counts, list, dead) = match (
        shared.store.counts(),
        shared.store.outbox_batches(),
        shared.store.dead_letters(),
    ) {
        (Ok(c), Ok(l), Ok(d)) => (c, l, d),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, e);
        }
    };
    let catalogue = shared.catalogue();
    let batches = list
        .into_iter()
        .map(|i| {
            let b = i.batch;
            let tracker = catalogue
                .as_ref()
                .and_then(|c| c.get(&b.show_id))
                .map(|s| s.title.to_string());
            OutboxBatchView {
                id: b.id,
                show_title: tracker.or_else(|| i.title.clone()),
                title: i.title,
                show_id: b.show_id,
                episodes: b
                    .items
                    .iter()
                    .map(|it| EpisodeRef {
                        season: it.season,
                        episode: it.episode,
                    })
                    .collect(),
                attempts: b.attempts,
                next_attempt_at_ms: (!i.dead).then_some(b.next_attempt_at),
                last_error: b.last_error,
                dead: i.dead,
            }
        })
        .collect();
    json(
        StatusCode::OK,
        &OutboxView {
            counts,
            batches,
            dead_letters: dead,
        },
    )
}

/// Route an admin request that arrived over HTTP (TCP or the unix socket).
pub async fn route(shared: &Shared, path: &str, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let body = match body(req).await {
        Ok(b) => b,
        Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, e),
    };
    handle(shared, method, path, &query, body).await
}

/// The admin API proper, independent of the transport: the CLI calls it directly on a store
/// it opened itself when no daemon is running, so both paths share every rule.
pub async fn handle(
    shared: &Shared,
    method: Method,
    path: &str,
    q: &HashMap<String, String>,
    body: Vec<u8>,
) -> Resp {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        (Method::GET, ["status"]) => match status(shared) {
            Ok(s) => json(StatusCode::OK, &s),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        },
        (Method::GET, ["webhook-url"]) => public_url(shared.webhook_url()),
        (Method::GET, ["web-url"]) => public_url(shared.web_url()),
        (Method::PUT, ["secrets", name]) => {
            let name = name.to_string();
            let value = match String::from_utf8(body) {
                Ok(v) => zeroize::Zeroizing::new(v),
                Err(_) => return error(StatusCode::BAD_REQUEST, "secret value must be UTF-8 text"),
            };
            match shared.set_secret(&name, value.trim()).await {
                Ok(()) => json(StatusCode::OK, &json!({ "stored": name })),
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            }
        }
        (Method::GET, ["activity"]) => activity(shared, q),
        (Method::GET, ["outbox"]) => outbox(shared),
        (Method::POST, ["outbox", "retry"]) => {
            // A person says the cause is fixed: the dead letters go again, and so does what
            // waits out a back-off (minutes, after a tracker outage), not at its next attempt.
            let retried = async {
                let requeued_batches = shared.store.retry_dead().await?;
                let brought_forward = shared
                    .store
                    .batches_due_now(crate::model::now_millis())
                    .await?;
                Ok::<_, crate::store::StoreError>(Requeued {
                    requeued_batches,
                    brought_forward,
                })
            };
            match retried.await {
                Ok(r) => {
                    shared.wake.export.notify_one();
                    json(StatusCode::OK, &r)
                }
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
            }
        }
        (Method::POST, ["backfill"]) => {
            let r: BackfillRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
            };
            let Some(since) = crate::sources::history::parse_date(&r.since) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("since: {:?} is not a date like 2024-01-31", r.since),
                );
            };
            match start_backfill(shared, since, r.dry_run).await {
                Ok(()) => json(
                    StatusCode::ACCEPTED,
                    &json!({ "started": true, "since": since, "dry_run": r.dry_run }),
                ),
                Err(e) => error(StatusCode::CONFLICT, e),
            }
        }
        (Method::POST, ["poll"]) => {
            // A wake-up for the poller task (one poll at a time); a person asking beats any
            // back-off pause.
            shared.request_poll();
            json(StatusCode::ACCEPTED, &json!({ "poll": "requested" }))
        }
        (Method::GET, ["backfill"]) => {
            let st = shared
                .board
                .backfill_progress
                .lock()
                .ok()
                .and_then(|g| g.clone());
            json(StatusCode::OK, &st)
        }
        // issue 13: the watched-state sync
        (Method::POST, ["sync"]) => {
            let r: crate::api::SyncRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
            };
            match start_sync(shared, r).await {
                Ok(()) => json(StatusCode::ACCEPTED, &json!({ "started": true })),
                Err(e) => error(StatusCode::CONFLICT, e),
            }
        }
        (Method::GET, ["sync"]) => json(
            StatusCode::OK,
            &(crate::sources::library::progress(shared) as crate::api::SyncView),
        ),
        (_, ["sync"]) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        (Method::GET, ["conflicts"]) => decisions::conflicts(shared),
        (Method::POST, ["conflicts", "resolve"]) => decisions::resolve_many(shared, &body).await,
        (Method::POST, ["conflicts", id, "resolve"]) => decisions::resolve(shared, id, &body).await,
        (Method::GET, ["mappings"]) => match MappingQuery::parse(q) {
            Ok(mq) => match mappings_page(shared, &mq) {
                Ok(p) => json(StatusCode::OK, &p),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
            },
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        (Method::PATCH, ["mappings", id]) => decisions::patch_mapping(shared, id, &body).await,
        (Method::GET, ["shows"]) => decisions::shows(shared, q),
        (Method::GET, ["settings"]) => json(StatusCode::OK, &crate::settings::view(shared)),
        (_, ["settings"]) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        (Method::GET, ["stats"]) => match stats(shared) {
            Ok(v) => json(StatusCode::OK, &v),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        },
        (
            _,
            [
                "status" | "webhook-url" | "activity" | "outbox" | "conflicts" | "mappings"
                | "backfill" | "poll" | "shows",
            ],
        )
        | (_, ["conflicts", "resolve"])
        | (_, ["secrets", _])
        | (_, ["outbox", "retry"]) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no admin endpoint /api/{path}"),
        ),
    }
}

/// Errors of the CLI's in-process admin calls ([`open_offline`], [`call`]).
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(
        "no daemon is running and there is no store at {0} yet: start the daemon once (`plexsync run`)"
    )]
    NoStore(String),
    #[error("{0}")]
    Daemon(#[from] crate::state::DaemonError),
    /// The API refused the request; `body` is its error text (what was wrong).
    #[error("{body}")]
    Http { status: u16, body: String },
}

/// Open the daemon's state for the CLI when no daemon runs (it may then own the store): the
/// store, plugins and the cached catalogue with its stored extra names (the catalogue the
/// daemon would search), ready for [`call`]. Open it once per process —
/// redb refuses a second open of the same file.
pub async fn open_offline(
    config: crate::config::Config,
) -> Result<std::sync::Arc<Shared>, OfflineError> {
    let store_path = config.store_path();
    if !store_path.exists() {
        return Err(OfflineError::NoStore(store_path.display().to_string()));
    }
    let listen = config
        .server
        .listen
        .parse()
        .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let shared = crate::state::open_shared(config, listen).await?;
    match shared
        .store
        .load_catalogue_for(&shared.plugins().exporter.instance())
    {
        // With the names the daemon's pass stored: the catalogue the daemon searches.
        Ok(Some(cached)) => shared.set_catalogue(cached.build().1),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the cached catalogue"),
    }
    Ok(shared)
}

/// Serve one admin request in process, answering exactly as the daemon would. `path` is
/// what follows `/api/`, with an optional `?query`; a non-2xx answer is an error.
pub async fn call(
    shared: &Shared,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, OfflineError> {
    let (path, q) = path.split_once('?').unwrap_or((path, ""));
    let resp = handle(shared, method, path, &parse_query(q), body).await;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    if !status.is_success() {
        let body = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        return Err(OfflineError::Http {
            status: status.as_u16(),
            body,
        });
    }
    Ok(bytes)
}
