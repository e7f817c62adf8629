//! The admin API (`/api/…`): JSON views of the daemon's state and the few commands the CLI
//! sends to a running daemon. Access control happens in [`crate::http`] before routing here.

use std::collections::HashMap;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::state::Shared;
use crate::store::ops::ConflictDecision;

type Resp = hyper::Response<http_body_util::Full<bytes::Bytes>>;

/// Largest admin request body (secret values, small JSON commands).
const MAX_ADMIN_BODY: usize = 64 * 1024;

use crate::api::{
    ActivityPage, BackfillRequest, CandidateView, ConflictView, Items, MappingChange,
    MappingChanged, MappingStatus, MappingView, OutboxView, PlexShowView, PublicUrl, Requeued,
    ResolveAction, ResolveRequest, Resolved, TrackerShowView,
};
pub use crate::api::{CursorView, Status};
// issue 12, activity and outbox
use crate::api::{ActivityQuery, EpisodeRef, OutboxBatchView};

pub fn status(shared: &Shared) -> Result<Status, crate::store::StoreError> {
    let cfg = shared.config();
    let (webhook_url, webhook_url_note) = match shared.webhook_url() {
        Ok(b) => (Some(b.url), b.note),
        Err(e) => (None, Some(e.to_string())),
    };
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
        counts: shared.store.counts()?,
        cursors: shared
            .store
            .cursors()?
            .into_iter()
            .map(|(key, c)| CursorView {
                key,
                viewed_at: c.viewed_at,
                updated_at: c.updated_at,
            })
            .collect(),
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

/// Opaque, URL-safe id of a show key (keys contain `/`).
pub fn key_id(key: &str) -> String {
    crate::secrets::hex(key.as_bytes())
}

pub fn id_key(id: &str) -> Option<String> {
    if id.len() > 2048 {
        return None;
    }
    String::from_utf8(crate::secrets::unhex(id)?).ok()
}

fn tracker_show(shared: &Shared, id: &str) -> TrackerShowView {
    match shared.catalogue().as_ref().and_then(|c| c.get(id).cloned()) {
        Some(s) => TrackerShowView {
            id: s.id,
            title: Some(s.title),
            year: s.year,
        },
        None => TrackerShowView {
            id: id.to_string(),
            title: None,
            year: None,
        },
    }
}

fn plex_show(p: &crate::model::PlexShow, guids: &[String]) -> PlexShowView {
    PlexShowView {
        rating_key: p.rating_key.clone(),
        title: p.title.clone(),
        year: p.year,
        guids: guids.to_vec(),
    }
}

fn conflict_view(shared: &Shared, c: &crate::model::Conflict) -> ConflictView {
    let cat = shared.catalogue();
    let candidates = c
        .candidates
        .iter()
        .map(|k| {
            let show = cat.as_ref().and_then(|cat| cat.get(&k.show_id).cloned());
            CandidateView {
                show_id: k.show_id.clone(),
                title: show.as_ref().map(|s| s.title.clone()),
                year: show.as_ref().and_then(|s| s.year),
                score: k.score,
                method: k.method.clone(),
            }
        })
        .collect();
    ConflictView {
        id: key_id(&c.key),
        plex: plex_show(&c.plex, &c.query.guids),
        reason: c.reason.clone(),
        held_plays: c.held.len(),
        created_at: c.created_at,
        updated_at: c.updated_at,
        candidates,
    }
}

/// `GET /api/mappings?filter=all|unmapped|conflicts`.
pub fn mappings(
    shared: &Shared,
    filter: &str,
) -> Result<Vec<MappingView>, crate::store::StoreError> {
    let mut out = Vec::new();
    if filter == "all" || filter == "unmapped" {
        for m in shared.store.mappings()? {
            if filter == "unmapped" && !m.ignored {
                continue;
            }
            let sync = shared.store.show_sync(&m.show_id)?;
            out.push(MappingView {
                id: key_id(&m.plex.key()),
                plex: plex_show(&m.plex, &m.plex.query().guids),
                tracker: (!m.ignored).then(|| tracker_show(shared, &m.show_id)),
                status: if m.ignored {
                    MappingStatus::Ignored
                } else {
                    MappingStatus::Mapped
                },
                method: Some(m.method.clone()),
                confidence: Some(m.confidence),
                manual: m.manual,
                sync_enabled: m.sync_enabled,
                held_plays: None,
                plays_synced: sync.plays_synced,
                last_synced_at: sync.last_synced_at,
            });
        }
    }
    for c in shared.store.conflicts()? {
        out.push(MappingView {
            id: key_id(&c.key),
            plex: plex_show(&c.plex, &c.query.guids),
            tracker: None,
            status: MappingStatus::Conflict,
            method: None,
            confidence: c.candidates.first().map(|k| k.score),
            manual: false,
            sync_enabled: false,
            held_plays: Some(c.held.len()),
            plays_synced: 0,
            last_synced_at: None,
        });
    }
    Ok(out)
}

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
        &["webhook", "poll", "backfill"]
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
    o
}

async fn resolve(shared: &Shared, id: &str, body: &[u8]) -> Resp {
    let Some(key) = id_key(id) else {
        return error(StatusCode::NOT_FOUND, "no such conflict");
    };
    let r: ResolveRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let conflict = match shared.store.conflict(&key) {
        Ok(Some(c)) => c,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such open conflict"),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let decision = match r.action {
        ResolveAction::Select => {
            let Some(show_id) = r.show_id.and_then(crate::api::ShowId::into_id) else {
                return error(StatusCode::BAD_REQUEST, "select needs a show_id");
            };
            if let Some(cat) = shared.catalogue() {
                if cat.get(&show_id).is_none() {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("show_id {show_id:?} is not in the tracker's catalogue"),
                    );
                }
            }
            ConflictDecision::Select {
                show_id,
                method: "manual".into(),
            }
        }
        ResolveAction::Create => {
            match crate::pipeline::create_show(shared, &conflict.query).await {
                Ok(Some(id)) => ConflictDecision::Select {
                    show_id: id,
                    method: "created".into(),
                },
                Ok(None) => {
                    // A person asked for it: create from the title even without a TMDB id.
                    let show = plexsync_plugin_api::NewShow {
                        title: conflict.query.title.clone(),
                        year: conflict.query.year,
                        ..Default::default()
                    };
                    match shared.plugins().exporter.create_show(&show).await {
                        Ok(id) => {
                            shared.wake.catalogue.notify_one();
                            ConflictDecision::Select {
                                show_id: id,
                                method: "created".into(),
                            }
                        }
                        Err(e) => {
                            return error(
                                StatusCode::BAD_GATEWAY,
                                format!("the tracker did not create the show: {e}"),
                            );
                        }
                    }
                }
                Err(e) => {
                    return error(
                        StatusCode::BAD_GATEWAY,
                        format!("the tracker did not create the show: {e}"),
                    );
                }
            }
        }
        ResolveAction::Ignore => ConflictDecision::Ignore,
    };
    match shared.store.resolve_conflict(key, decision).await {
        Ok((released, queued)) => {
            tracing::info!(show = %conflict.plex.title, released, queued, action = ?r.action, "conflict resolved");
            shared.wake.export.notify_one();
            json(
                StatusCode::OK,
                &Resolved {
                    resolved: true,
                    plays_released: released,
                    episodes_queued: queued,
                },
            )
        }
        Err(crate::store::StoreError::NotFound(m)) => error(StatusCode::NOT_FOUND, m),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn patch_mapping(shared: &Shared, id: &str, body: &[u8]) -> Resp {
    let Some(key) = id_key(id) else {
        return error(StatusCode::NOT_FOUND, "no such mapping");
    };
    let r: MappingChange = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let show_id = match r.show_id.map(crate::api::ShowId::into_id) {
        None => None,
        Some(Some(s)) => Some(s),
        Some(None) => return error(StatusCode::BAD_REQUEST, "show_id must be a tracker show id"),
    };
    if let (Some(id), Some(cat)) = (&show_id, shared.catalogue()) {
        if cat.get(id).is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                format!("show_id {id:?} is not in the tracker's catalogue"),
            );
        }
    }
    if show_id.is_none() && r.sync_enabled.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "nothing to change: send sync_enabled and/or show_id",
        );
    }
    match shared
        .store
        .update_mapping(key, show_id, r.sync_enabled)
        .await
    {
        Ok(m) => json(
            StatusCode::OK,
            &MappingChanged {
                id: id.to_string(),
                show_id: m.show_id,
                sync_enabled: m.sync_enabled,
                method: m.method,
            },
        ),
        Err(crate::store::StoreError::NotFound(m)) => error(StatusCode::NOT_FOUND, m),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
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
                .map(|s| s.title.clone());
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
        (Method::POST, ["outbox", "retry"]) => match shared.store.retry_dead().await {
            Ok(n) => {
                shared.wake.export.notify_one();
                json(
                    StatusCode::OK,
                    &Requeued {
                        requeued_batches: n,
                    },
                )
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        },
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
            // A wake-up for the poller task; it runs one poll at a time.
            shared.wake.poll.notify_one();
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
        (Method::GET, ["conflicts"]) => match shared.store.conflicts() {
            Ok(mut c) => {
                c.sort_by(|a, b| {
                    b.updated_at
                        .cmp(&a.updated_at)
                        .then(b.created_at.cmp(&a.created_at))
                });
                let items: Vec<_> = c.iter().map(|c| conflict_view(shared, c)).collect();
                json(
                    StatusCode::OK,
                    &Items {
                        total: items.len(),
                        items,
                    },
                )
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        },
        (Method::POST, ["conflicts", id, "resolve"]) => resolve(shared, id, &body).await,
        (Method::GET, ["mappings"]) => {
            let filter = q.get("filter").map(String::as_str).unwrap_or("all");
            if !matches!(filter, "all" | "unmapped" | "conflicts") {
                return error(
                    StatusCode::BAD_REQUEST,
                    "filter must be all, unmapped or conflicts",
                );
            }
            match mappings(shared, filter) {
                Ok(items) => json(
                    StatusCode::OK,
                    &Items {
                        total: items.len(),
                        items,
                    },
                ),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
            }
        }
        (Method::PATCH, ["mappings", id]) => patch_mapping(shared, id, &body).await,
        (Method::GET, ["stats"]) => match stats(shared) {
            Ok(v) => json(StatusCode::OK, &v),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        },
        (
            _,
            [
                "status" | "webhook-url" | "activity" | "outbox" | "conflicts" | "mappings"
                | "backfill" | "poll",
            ],
        )
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
/// store, plugins and the cached catalogue, ready for [`call`]. Open it once per process —
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
    match shared.store.load_catalogue() {
        Ok(Some(shows)) => shared.set_catalogue(std::sync::Arc::new(
            plexsync_plugin_api::Catalogue::new(shows),
        )),
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
