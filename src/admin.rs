//! The admin API (`/api/…`): JSON views of the daemon's state and the few commands the CLI
//! sends to a running daemon. Access control happens in [`crate::http`] before routing here.

use std::collections::HashMap;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Serialize;
use serde_json::json;

use crate::daemon::{RuntimeStatus, Shared};
use crate::http::json;
use crate::store::ops::Counts;

type Resp = hyper::Response<http_body_util::Full<bytes::Bytes>>;

/// Largest admin request body (secret values, small JSON commands).
const MAX_ADMIN_BODY: usize = 64 * 1024;

#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub uptime_secs: u64,
    pub listen: String,
    pub webhook_url: String,
    pub plex_url: String,
    pub plex_token_set: bool,
    pub tracker_key_set: bool,
    #[serde(flatten)]
    pub runtime: RuntimeStatus,
    pub counts: Counts,
}

pub fn status(shared: &Shared) -> Result<Status, crate::store::StoreError> {
    let cfg = shared.config();
    Ok(Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: shared.started.elapsed().as_secs(),
        listen: shared.listen_addr.to_string(),
        webhook_url: shared.webhook_url(),
        plex_url: cfg.plex.url.clone(),
        plex_token_set: shared.secret("plex-token").is_some(),
        tracker_key_set: shared.secret("tracker-key").is_some(),
        runtime: shared.status(),
        counts: shared.store.counts()?,
    })
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Resp {
    json(status, &json!({ "error": msg.to_string() }))
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
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
fn start_backfill(shared: &Shared, since: i64, dry_run: bool) -> Result<(), &'static str> {
    let Some(me) = shared.self_ref() else {
        return Err("the daemon is shutting down");
    };
    let Ok(guard) = me.backfill.clone().try_lock_owned() else {
        return Err("a backfill is already running");
    };
    // Publish "running" before answering, so a client polling right away sees it.
    if let Ok(mut g) = shared.backfill_progress.lock() {
        *g = Some(crate::poller::BackfillStatus {
            running: true,
            since,
            dry_run,
            ..Default::default()
        });
    }
    tokio::spawn(async move {
        let _guard = guard;
        crate::poller::backfill(&me, since, dry_run).await;
    });
    Ok(())
}

pub async fn route(shared: &Shared, path: &str, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        (Method::GET, ["status"]) => match status(shared) {
            Ok(s) => json(StatusCode::OK, &s),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        },
        (Method::GET, ["webhook-url"]) => {
            json(StatusCode::OK, &json!({ "url": shared.webhook_url() }))
        }
        (Method::PUT, ["secrets", name]) => {
            let name = name.to_string();
            let value = match body(req).await {
                Ok(b) => b,
                Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, e),
            };
            let value = match String::from_utf8(value) {
                Ok(v) => zeroize::Zeroizing::new(v),
                Err(_) => return error(StatusCode::BAD_REQUEST, "secret value must be UTF-8 text"),
            };
            match shared.set_secret(&name, value.trim()).await {
                Ok(()) => json(StatusCode::OK, &json!({ "stored": name })),
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            }
        }
        (Method::GET, ["activity"]) => {
            let q = query(&req);
            let page = q
                .get("page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(1usize)
                .max(1);
            let per_page = q
                .get("per_page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(50usize);
            let status = q
                .get("status")
                .filter(|s| !s.is_empty() && s.as_str() != "all");
            let source = q
                .get("source")
                .filter(|s| !s.is_empty() && s.as_str() != "all");
            match shared.store.activity(
                status.map(|s| s.as_str()),
                source.map(|s| s.as_str()),
                page,
                per_page,
            ) {
                Ok((items, total)) => json(
                    StatusCode::OK,
                    &json!({ "items": items, "total": total, "page": page }),
                ),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
            }
        }
        (Method::GET, ["outbox"]) => match (shared.store.counts(), shared.store.dead_letters()) {
            (Ok(c), Ok(dead)) => json(
                StatusCode::OK,
                &json!({ "counts": c, "dead_letters": dead }),
            ),
            (Err(e), _) | (_, Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        },
        (Method::POST, ["outbox", "retry"]) => match shared.store.retry_dead().await {
            Ok(n) => {
                shared.export_wake.notify_one();
                json(StatusCode::OK, &json!({ "requeued_batches": n }))
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        },
        (Method::POST, ["backfill"]) => {
            let b = match body(req).await {
                Ok(b) => b,
                Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, e),
            };
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Req {
                since: String,
                #[serde(default)]
                dry_run: bool,
            }
            let r: Req = match serde_json::from_slice(&b) {
                Ok(r) => r,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
            };
            let Some(since) = crate::poller::parse_date(&r.since) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("since: {:?} is not a date like 2024-01-31", r.since),
                );
            };
            match start_backfill(shared, since, r.dry_run) {
                Ok(()) => json(
                    StatusCode::ACCEPTED,
                    &json!({ "started": true, "since": since, "dry_run": r.dry_run }),
                ),
                Err(e) => error(StatusCode::CONFLICT, e),
            }
        }
        (Method::POST, ["poll"]) => {
            // A wake-up for the poller task; it runs one poll at a time.
            shared.poll_wake.notify_one();
            json(StatusCode::ACCEPTED, &json!({ "poll": "requested" }))
        }
        (Method::GET, ["backfill"]) => {
            let st = shared.backfill_progress.lock().ok().and_then(|g| g.clone());
            json(StatusCode::OK, &st)
        }
        (Method::GET, ["conflicts"]) => match shared.store.conflicts() {
            Ok(c) => json(StatusCode::OK, &c),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        },
        (Method::GET, ["mappings"]) => match shared.store.mappings() {
            Ok(m) => json(StatusCode::OK, &m),
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
