//! The HTTP server: the only module that listens on sockets. It serves the Plex webhook route
//! (`POST /webhook/<secret>`), the admin API under `/api` and `/healthz`, on the TCP listener
//! and on the admin unix socket (created 0600, for the CLI).
//!
//! Webhook answers follow DESIGN.md: 200 only once the play is durably journaled; 400 / 404 /
//! 405 / 413 / 415 with a one-line reason; 503 when the store cannot commit. Every request that
//! passed the secret check leaves an activity row.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use subtle::ConstantTimeEq;

use crate::model::ActivityStatus;
use crate::ratelimit::{Limiter, Rate, Verdict};
use crate::sources::webhook::{self, WebhookLog, multipart};
use crate::state::Shared;

type Resp = Response<Full<Bytes>>;

use crate::admin::json;

pub mod access;
mod conns;
pub mod forwarded;
mod listen;
pub use conns::raise_nofile_limit;
pub use listen::{bind_unix, serve};

/// Bind the TCP listener for `run` (the daemon's only TCP socket; tests bind 127.0.0.1:0).
pub async fn bind_tcp(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// A client address for logs: the IP, or the admin socket.
struct Client(Option<IpAddr>);

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => write!(f, "{ip}"),
            None => f.write_str("admin-socket"),
        }
    }
}

/// The channel a request came on: the admin unix socket (0600: its permissions are the
/// credential) or TCP (every admin request needs a token or session, see [`access`]).
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Unix,
    Tcp(SocketAddr),
}

/// The inbound rate limiters, one per route family.
#[derive(Default)]
pub(crate) struct Limits {
    pub(crate) webhook: Limiter,
    pub(crate) admin: Limiter,
}

fn text(status: StatusCode, msg: impl Into<String>) -> Resp {
    let mut body = msg.into();
    body.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// 429 with `Retry-After` (whole seconds, at least 1) when `client` is over `rate`. The
/// unix socket (`client` None) is not limited.
fn limited(
    limiter: &Limiter,
    client: Option<IpAddr>,
    rate: Rate,
    route: &'static str,
) -> Option<Resp> {
    let client = client?;
    match limiter.check(client, rate) {
        Verdict::Allow => None,
        Verdict::Limit { retry_after, first } => {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            if first {
                tracing::warn!(client = %client, route, per_minute = rate.per_minute, burst = rate.burst, "client over the rate limit; answering 429");
            } else {
                tracing::debug!(client = %client, route, "rate limited");
            }
            let mut r = text(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many requests; retry in {secs} s"),
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Some(r)
        }
    }
}

/// `prefix` asked without its trailing slash: 308 to `prefix/`, where the page's relative
/// links resolve under the prefix.
fn see_other_slash(prefix: &str) -> Resp {
    let mut r = text(StatusCode::PERMANENT_REDIRECT, format!("see {prefix}/"));
    if let Ok(v) = HeaderValue::from_str(&format!("{prefix}/")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    limits: &Limits,
    peer: Peer,
    req: Request<Incoming>,
) -> Resp {
    let cfg = shared.config();
    let server = &cfg.server;
    let raw = req.uri().path();
    let path = match crate::hostaddr::path_prefix(server.public_url.as_deref()) {
        Some(prefix) => match raw.strip_prefix(prefix) {
            // The page's links are relative to its own address, so it must end in '/'.
            Some("") => return see_other_slash(prefix),
            Some(rest) if rest.starts_with('/') => rest,
            _ => raw,
        },
        None => raw,
    }
    .to_string();
    // The CLI over the admin socket waits for a change's real answer (a bulk "create" may
    // wait on the tracker for minutes): the socket is the daemon's own user, not a client
    // that could hold the connection open; the CLI bounds its own wait (src/client.rs).
    let socket_change =
        matches!(peer, Peer::Unix) && !matches!(*req.method(), Method::GET | Method::HEAD);
    let timeout = server.request_timeout;
    // The client's address for limits and logs: the peer, or what a trusted proxy says.
    let client = match peer {
        Peer::Tcp(a) => Some(forwarded::client_ip(
            forwarded::canonical(a.ip()),
            req.headers(),
            &server.trusted_proxies,
            server.forwarded_header,
        )),
        Peer::Unix => None,
    };
    if path.starts_with("/webhook") {
        // Before the secret check, so guessing secrets is limited too.
        if let Some(r) = limited(&limits.webhook, client, server.webhook_rate(), "webhook") {
            return r;
        }
    } else if path.starts_with("/api/") || path == "/metrics" {
        if let Some(r) = limited(&limits.admin, client, server.admin_rate(), "admin") {
            return r;
        }
    }
    let fut = async {
        if let Some(secret) = path.strip_prefix("/webhook/") {
            return webhook(&shared, client, secret, req).await;
        }
        if path == "/webhook" || path == "/webhook/" {
            return text(StatusCode::NOT_FOUND, "not found");
        }
        if let Peer::Tcp(_) = peer {
            let host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
            });
            if !access::host_allowed(shared.listen_addr, server.public_url.as_deref(), host) {
                let shown: String = host.unwrap_or("").chars().take(100).collect();
                tracing::warn!(client = %Client(client), host = %shown, path = %path, "request for another host refused (DNS rebinding?)");
                return text(
                    StatusCode::MISDIRECTED_REQUEST,
                    "421 Misdirected Request: this daemon listens on loopback and answers only to localhost, 127.0.0.1, [::1] or the [server] public_url host",
                );
            }
        }
        if path == "/healthz" {
            return healthz(&shared);
        }
        if path == "/" || path == "/index.html" {
            return page();
        }
        if path == "/api/login" {
            return login(&shared, client, req).await;
        }
        if path == "/api/logout" {
            return logout(&shared, client, req.method(), req.headers()).await;
        }
        if path == "/metrics" || path.starts_with("/api/") {
            match access::authenticate(&shared, peer, req.method(), req.headers()) {
                Err((status, why)) => {
                    tracing::warn!(client = %Client(client), path = %path, status = status.as_u16(), reason = why, "admin request refused");
                    return text(status, why);
                }
                // A session stands for the admin token without being it: a copied cookie
                // must not turn into the token, which never expires.
                Ok(access::Credential::Session) if path == "/api/web-url" => {
                    tracing::warn!(client = %Client(client), path = %path, "a browser session asked for the admin token; refused");
                    return text(
                        StatusCode::FORBIDDEN,
                        "a browser session cannot read the admin token; run `plexsync web-url` on the host",
                    );
                }
                Ok(_) => {}
            }
        }
        if path == "/metrics" {
            let mut r = text(StatusCode::OK, crate::admin::metrics(&shared));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return r;
        }
        if path == "/api/secrets/sealed" {
            return sealed_secrets(&shared, peer, client, req.method());
        }
        if let Some(rest) = path.strip_prefix("/api/") {
            if req.method() == Method::GET || req.method() == Method::HEAD {
                return crate::admin::route(&shared, rest, req).await;
            }
            // A change runs to its end even when its request does not (the request timeout
            // below, a client that gave up): a tracker show created for a conflict must be
            // recorded as its decision, not left behind to be created again.
            let (s, rest) = (shared.clone(), rest.to_string());
            let change = tokio::spawn(async move { crate::admin::route(&s, &rest, req).await });
            return match change.await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, path = %path, "an admin change failed");
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the change failed; see the log",
                    )
                }
            };
        }
        text(StatusCode::NOT_FOUND, "not found")
    };
    if socket_change {
        return fut.await;
    }
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(path = %redact_path(&path), "request took too long");
            text(StatusCode::REQUEST_TIMEOUT, "request took too long")
        }
    }
}

/// Largest login body: `{"token": "..."}` with a token of at most 4 KiB.
const MAX_LOGIN_BODY: usize = 8 * 1024;

/// How long a login body may take to arrive. The login is the one request whose body is read
/// before any credential is checked, and a connection with a request in progress is never
/// closed to make room: without a deadline of its own, a few clients trickling login bodies
/// would hold every connection slot for the whole `request_timeout` (30 s by default) without
/// knowing anything. A real login body is under 100 bytes and arrives with its headers.
const LOGIN_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `POST /api/login` with `{"token": "<admin token>"}` (JSON, from the page's own origin):
/// sets the session cookie and answers the page key that must come with it.
async fn login(shared: &Shared, client: Option<IpAddr>, req: Request<Incoming>) -> Resp {
    if req.method() != Method::POST {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "POST the token as JSON");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if let Err((status, why)) = access::browser_request_ok(shared, req.method(), req.headers()) {
        tracing::warn!(client = %Client(client), status = status.as_u16(), reason = why, "login refused");
        return text(status, why);
    }
    let https = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o.starts_with("https://"));
    let read = http_body_util::Limited::new(req.into_body(), MAX_LOGIN_BODY).collect();
    let body = match tokio::time::timeout(LOGIN_BODY_TIMEOUT, read).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => return text(StatusCode::PAYLOAD_TOO_LARGE, "login body too large"),
        Err(_) => {
            tracing::warn!(client = %Client(client), timeout_s = LOGIN_BODY_TIMEOUT.as_secs(), "login body too slow; answering 408");
            let mut r = text(
                StatusCode::REQUEST_TIMEOUT,
                "the login body took too long to arrive",
            );
            // The rest of the body is not read: the connection cannot carry another request.
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    #[derive(serde::Deserialize)]
    struct Login {
        token: String,
    }
    let given = match serde_json::from_slice::<Login>(&body) {
        Ok(l) => zeroize::Zeroizing::new(l.token),
        Err(_) => return text(StatusCode::BAD_REQUEST, "expected {\"token\": \"...\"}"),
    };
    let ok = shared
        .secret(crate::state::ADMIN_TOKEN)
        .is_some_and(|t| bool::from(given.trim().as_bytes().ct_eq(t.expose().as_bytes())));
    if !ok {
        tracing::warn!(client = %Client(client), "login with a wrong admin token");
        return text(StatusCode::UNAUTHORIZED, "wrong admin token");
    }
    let (cookie, page_key) = match shared.mint_session() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a session");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot start a session");
        }
    };
    tracing::info!(client = %Client(client), "browser logged in");
    // The page keeps the page key in localStorage and sends it with every request: the
    // cookie alone reaches other servers on this host (any port) and is worth nothing there.
    let mut r = json(
        StatusCode::OK,
        &serde_json::json!({ "logged_in": true, "page_key": page_key.expose() }),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let attrs = format!(
        "{}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        crate::session::COOKIE,
        crate::state::SESSION_TTL.as_secs(),
        if https { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&attrs) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /api/logout`: forget the session cookie. It needs no credential (it only takes access
/// away), but it follows the browser rules of every state change, so another site's page cannot
/// log the user out behind their back.
async fn logout(
    shared: &Shared,
    client: Option<IpAddr>,
    method: &Method,
    headers: &hyper::HeaderMap,
) -> Resp {
    if method != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "POST to log out");
    }
    if let Err((status, why)) = access::browser_request_ok(shared, method, headers) {
        tracing::warn!(client = %Client(client), status = status.as_u16(), reason = why, "logout refused");
        return text(status, why);
    }
    // The cookie is stateless, so clearing it in this browser is not enough: a copy of it (and
    // its page key) would open the API until it expires. The session is recorded as ended.
    let (cookies, page_key) = access::session_parts(headers);
    if let Some(page_key) = page_key {
        match shared.revoke_session(&cookies, page_key).await {
            Ok(true) => tracing::info!(client = %Client(client), "browser session ended"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(client = %Client(client), error = %e, "cannot record the end of a session");
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot end the session ({e}); try again"),
                );
            }
        }
    }
    let mut r = json(StatusCode::OK, &serde_json::json!({ "logged_in": false }));
    let attrs = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        crate::session::COOKIE
    );
    if let Ok(v) = HeaderValue::from_str(&attrs) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// The stored secrets, sealed, for the CLI on this host ([`crate::api::SealedSecrets`]). The
/// 0600 socket only: its caller is the daemon's user, who may read the store and the key
/// anyway; a token over TCP (perhaps through a proxy) gets no ciphertext to take away.
fn sealed_secrets(shared: &Shared, peer: Peer, client: Option<IpAddr>, method: &Method) -> Resp {
    if let Peer::Tcp(_) = peer {
        tracing::warn!(client = %Client(client), "sealed secrets asked for over TCP; refused");
        return text(
            StatusCode::FORBIDDEN,
            "403 Forbidden: the sealed secrets are served on the admin socket only",
        );
    }
    if *method != Method::GET {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 Method Not Allowed: GET only",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    match shared.store.sealed_secrets() {
        Ok(rows) => {
            let body = crate::api::SealedSecrets {
                secrets: rows
                    .into_iter()
                    .map(|(name, sealed)| crate::api::NamedSealed { name, sealed })
                    .collect(),
            };
            json(StatusCode::OK, &body)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the sealed secrets");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("503 Service Unavailable: cannot read the stored secrets: {e}"),
            )
        }
    }
}

/// Paths are logged without the webhook secret.
fn redact_path(p: &str) -> String {
    if p.starts_with("/webhook/") {
        "/webhook/<secret>".into()
    } else {
        p.to_string()
    }
}

fn healthz(shared: &Shared) -> Resp {
    if *shared.shutdown.borrow() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if !shared.healthy() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "a pipeline task has stopped",
        );
    }
    text(StatusCode::OK, "ok")
}

/// The web page: one self-contained file compiled into the binary (no build step, no CDN).
const INDEX_HTML: &str = include_str!("web/index.html");

fn page() -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(INDEX_HTML.as_bytes())));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn webhook(
    shared: &Shared,
    client: Option<IpAddr>,
    secret: &str,
    req: Request<Incoming>,
) -> Resp {
    let started = Instant::now();
    let expected = shared.webhook_secret();
    if !bool::from(secret.as_bytes().ct_eq(expected.expose().as_bytes())) {
        tracing::warn!(client = %Client(client), "webhook with a wrong secret");
        return text(StatusCode::NOT_FOUND, "not found");
    }
    shared.note_webhook();
    let mut log = WebhookLog::new(started, client);
    let (status, reason) = match receive(shared, &mut log, req).await {
        Ok(resp) => return resp,
        Err(e) => e,
    };
    tracing::warn!(client = %Client(client), status = status.as_u16(), error = %reason, event = log.event.as_deref().unwrap_or(""), "webhook rejected");
    shared.board.metrics.webhook(ActivityStatus::Failed);
    let row = log.row(
        ActivityStatus::Failed,
        format!("rejected with {}", status.as_u16()),
        Some(reason.clone()),
    );
    if let Err(e) = shared.store.record_activity(row).await {
        tracing::error!(error = %e, "cannot record activity");
    }
    let mut r = text(
        status,
        format!(
            "{} {}: {reason}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    r
}

type Reject = (StatusCode, String);

fn reject(status: StatusCode, msg: impl std::fmt::Display) -> Reject {
    (status, msg.to_string())
}

/// The most a rejected request's remaining body is read (and thrown away) before answering.
const DRAIN_MAX: usize = 16 * 1024 * 1024;

/// Read and discard what the client is still sending, up to [`DRAIN_MAX`] (the whole-request
/// timeout bounds the time).
async fn drain(body: &mut Incoming) {
    let mut left = DRAIN_MAX;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(chunk) = frame.into_data() {
            if chunk.len() >= left {
                break;
            }
            left -= chunk.len();
        }
    }
}

/// The webhook's JSON payload from a multipart or plain JSON body, within the limits.
async fn read_payload(
    body: &mut Incoming,
    ct: &str,
    max_body: usize,
    max_payload: usize,
) -> Result<Vec<u8>, Reject> {
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mut total = 0usize;
    let payload = match media.as_str() {
        "multipart/form-data" => {
            let boundary = multipart::boundary_from_content_type(ct)
                .map_err(|e| reject(StatusCode::BAD_REQUEST, e))?;
            let mut parser = multipart::MultipartParser::new(
                &boundary,
                multipart::Limits {
                    max_part_bytes: max_payload,
                    max_header_bytes: 8 * 1024,
                    max_parts: 16,
                },
            );
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    reject(StatusCode::BAD_REQUEST, format!("cannot read body: {e}"))
                })?;
                if let Ok(chunk) = frame.into_data() {
                    total += chunk.len();
                    if total > max_body {
                        return Err(reject(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("body exceeds the {max_body}-byte limit"),
                        ));
                    }
                    parser.feed(&chunk).map_err(multipart_reject)?;
                }
            }
            parser.finish().map_err(multipart_reject)?.payload
        }
        "application/json" => {
            let mut buf = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    reject(StatusCode::BAD_REQUEST, format!("cannot read body: {e}"))
                })?;
                if let Ok(chunk) = frame.into_data() {
                    total += chunk.len();
                    if total > max_payload {
                        return Err(reject(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("JSON body exceeds the {max_payload}-byte payload limit"),
                        ));
                    }
                    buf.extend_from_slice(&chunk);
                }
            }
            buf
        }
        "" => {
            return Err(reject(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "missing Content-Type; expected multipart/form-data or application/json",
            ));
        }
        other => {
            return Err(reject(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Type {other} not supported; expected multipart/form-data or application/json"
                ),
            ));
        }
    };
    Ok(payload)
}

/// Read, parse and journal one webhook. Errors are answered by the caller.
async fn receive(
    shared: &Shared,
    log: &mut WebhookLog,
    req: Request<Incoming>,
) -> Result<Resp, Reject> {
    if req.method() != Method::POST {
        return Err(reject(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed; Plex POSTs webhooks", req.method()),
        ));
    }
    let cfg = shared.config();
    let max_body = cfg.server.max_body_bytes;
    let max_payload = cfg.server.max_payload_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut body = req.into_body();
    let read = match declared {
        Some(len) if len > max_body as u64 => Err(reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body of {len} bytes exceeds the {max_body}-byte limit"),
        )),
        _ => read_payload(&mut body, &ct, max_body, max_payload).await,
    };
    let payload_bytes = match read {
        Ok(b) => b,
        Err(r) => {
            // Let a client that is still sending finish, so it reads our answer instead of
            // a connection reset; a huge declared body is not worth waiting for.
            if declared.is_none_or(|len| len <= DRAIN_MAX as u64) {
                drain(&mut body).await;
            }
            return Err(r);
        }
    };
    let outcome = webhook::ingest(shared, &payload_bytes, log)
        .await
        .map_err(|e| match e {
            webhook::Refused::Payload(m) => {
                reject(StatusCode::BAD_REQUEST, format!("payload: {m}"))
            }
            webhook::Refused::Store(m) => reject(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot record: {m}"),
            ),
        })?;
    Ok(match outcome {
        webhook::Outcome::Journaled(id) => text(StatusCode::OK, format!("journaled as play {id}")),
        webhook::Outcome::Duplicate(id) => text(StatusCode::OK, format!("duplicate of play {id}")),
        webhook::Outcome::Ignored => text(StatusCode::OK, "ignored"),
        webhook::Outcome::NotSynced => text(StatusCode::OK, "ignored: account not synced"),
        webhook::Outcome::StoreFailed(e) => {
            let mut r = text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("503 Service Unavailable: cannot store the play ({e}); retry later"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            r
        }
    })
}

fn multipart_reject(e: multipart::MultipartError) -> Reject {
    if e.is_too_large() {
        reject(StatusCode::PAYLOAD_TOO_LARGE, format!("multipart: {e}"))
    } else {
        reject(StatusCode::BAD_REQUEST, format!("multipart: {e}"))
    }
}
