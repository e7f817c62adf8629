//! Test support: fake Plex and fake tracker servers on 127.0.0.1:0 speaking the real wire
//! formats, the daemon run in process through the library entry point (inproc.rs), a driver
//! for the real `plexsync` binary (daemon.rs), and access to the shared Plex samples.
#![allow(dead_code)]

pub mod daemon;
pub mod inproc;
pub mod plex;
pub mod plex_ws;
pub mod tracker;

/// A real new-agent `media.scrobble` capture (of a shared user) in ../shared/plex-samples.
pub const NEW_AGENT_SCROBBLE: &str =
    "webhook/episode_plexagent_media.scrobble_shared-user_guid-array.json";

/// A loopback URL nobody listens on (a tracker or Plex that is down), on a [`reserved_port`]:
/// no other test can be given the port and bring the "dead" URL to life.
pub fn dead_url() -> String {
    format!("http://127.0.0.1:{}/api", reserved_port())
}

/// A loopback port for this test process alone: bound (with SO_REUSEADDR) by a socket that
/// never listens and is held until the process ends. Tests run in parallel, each binding
/// 127.0.0.1:0 and connecting out; a port picked by binding and dropping a listener could be
/// handed to one of them before its user bound it again (or between a daemon's stop and its
/// restart). The kernel hands out neither a bound port for `bind(0)` nor one for `connect`,
/// while a daemon may still listen on it (tokio's listener sets SO_REUSEADDR too, and the
/// held socket is not listening), also again after a restart. Meanwhile a connection to it is
/// refused.
pub fn reserved_port() -> u16 {
    static HELD: Mutex<Vec<tokio::net::TcpSocket>> = Mutex::new(Vec::new());
    let s = tokio::net::TcpSocket::new_v4().expect("a socket");
    s.set_reuseaddr(true).expect("SO_REUSEADDR");
    s.bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("a free port");
    let port = s.local_addr().expect("its address").port();
    HELD.lock().unwrap().push(s);
    port
}

/// What a test's world needs from a running daemon, whichever way it runs: in process
/// ([`inproc::InProc`]) or as the real binary ([`daemon::Daemon`], for the tests that kill it).
#[allow(async_fn_in_trait)]
pub trait Driver {
    fn webhook_url(&self) -> &str;
    fn log(&self) -> String;
    async fn api(&self, method: &str, path: &str) -> serde_json::Value;
    async fn status(&self) -> serde_json::Value {
        self.api("GET", "/api/status").await
    }
}

impl Driver for daemon::Daemon {
    fn webhook_url(&self) -> &str {
        &self.webhook_url
    }
    fn log(&self) -> String {
        daemon::Daemon::log(self)
    }
    async fn api(&self, method: &str, path: &str) -> serde_json::Value {
        daemon::Daemon::api(self, method, path).await
    }
}

impl Driver for inproc::InProc {
    fn webhook_url(&self) -> &str {
        &self.webhook_url
    }
    fn log(&self) -> String {
        inproc::InProc::log(self)
    }
    async fn api(&self, method: &str, path: &str) -> serde_json::Value {
        inproc::InProc::api(self, method, path).await
    }
}

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A request as a fake server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the request (body included) had arrived. Kept in the record itself so a test that
    /// measures gaps between requests reads the time and the request from one list under one
    /// lock; a separately sampled copy of the times can lag the list and disagree with it.
    pub at: Instant,
    /// The connection's upgrade (a websocket request), for the handler to take.
    pub upgrade: Upgrade,
}

/// The HTTP upgrade of a request ([`hyper::upgrade::on`]), taken at most once by a handler
/// that answers 101 (the fake Plex's notification websocket, see [`plex_ws`]).
#[derive(Clone, Default)]
pub struct Upgrade(Arc<Mutex<Option<hyper::upgrade::OnUpgrade>>>);

impl Upgrade {
    pub fn take(&self) -> Option<hyper::upgrade::OnUpgrade> {
        self.0.lock().unwrap().take()
    }
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upgrade")
    }
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub type Handler = Arc<
    dyn Fn(
            Seen,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

/// A tiny HTTP/1 server that can go down (refusing connections) and come back on the same port.
pub struct FakeServer {
    pub addr: SocketAddr,
    handler: Handler,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Open connections, so [`FakeServer::go_down_hard`] can cut keep-alive ones too.
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl FakeServer {
    pub async fn start(handler: Handler) -> Arc<FakeServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = Arc::new(FakeServer {
            addr,
            handler,
            task: Mutex::new(None),
            conns: Arc::new(Mutex::new(Vec::new())),
        });
        s.serve(listener);
        s
    }

    fn serve(&self, listener: TcpListener) {
        let handler = self.handler.clone();
        let conns = self.conns.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let h = handler.clone();
                let conn = tokio::spawn(async move {
                    let svc = service_fn(move |mut req: Request<Incoming>| {
                        let h = h.clone();
                        async move {
                            let upgrade =
                                Upgrade(Arc::new(Mutex::new(Some(hyper::upgrade::on(&mut req)))));
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                query: parts.uri.query().unwrap_or("").to_string(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| {
                                        (k.to_string(), v.to_str().unwrap_or("").to_string())
                                    })
                                    .collect(),
                                body,
                                at: Instant::now(),
                                upgrade,
                            };
                            Ok::<_, Infallible>(h(seen).await)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
                let mut open = conns.lock().unwrap();
                open.retain(|c| !c.is_finished());
                open.push(conn.abort_handle());
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop listening: new connections are refused.
    pub fn go_down(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }

    /// Stop listening and close every open connection (keep-alive ones included), so a
    /// client's pooled connection fails too: a server that is really gone.
    pub fn go_down_hard(&self) {
        self.go_down();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Listen again on the same port.
    pub async fn come_back(&self) {
        for _ in 0..100 {
            if let Ok(l) = TcpListener::bind(self.addr).await {
                self.serve(l);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cannot rebind {}", self.addr);
    }
}

pub fn respond(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.into())))
        .unwrap()
}

/// The shared Plex samples folder, or None (with a notice) when it is absent outside CI.
/// In CI (CI=true) a missing folder fails the test.
pub fn samples() -> Option<PathBuf> {
    shared("plex-samples")
}

/// `../shared/matching`: the real catalogue, DEV queries and crosswalk.
pub fn matching_data() -> Option<PathBuf> {
    shared("matching")
}

/// A folder of `../shared` beside the checkout, read in place. Missing: a failure in CI
/// (`CI=true`), a printed notice and `None` (skip) elsewhere.
fn shared(sub: &str) -> Option<PathBuf> {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared")).join(sub);
    if p.is_dir() {
        return Some(p);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{} is missing: CI must provide ../shared beside the checkout",
            p.display()
        );
    }
    eprintln!("NOTICE: {} not found; skipping this test", p.display());
    None
}

/// A sample of ../shared/plex-samples, parsed. A webhook sample's `Server.uuid` is set to the
/// fake Plex's default machine id ([`plex::MACHINE`]): the samples were captured on other
/// servers, and the daemon asks its own Plex about a play's show only when the play was on
/// that server (a webhook from a friend's server carries the friend's rating keys). Tests of
/// another server's play set `Server.uuid` themselves.
pub fn sample_json(rel: &str) -> serde_json::Value {
    let dir = samples().expect("checked by caller");
    let text = std::fs::read_to_string(dir.join(rel)).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    if rel.starts_with("webhook/") {
        if let Some(uuid) = v.pointer_mut("/Server/uuid") {
            *uuid = serde_json::Value::from(plex::MACHINE);
        }
    }
    v
}

/// Wrap a JSON payload the way Plex posts it: multipart/form-data, a `payload` part with its
/// own Content-Type and no filename, CRLF framing, and optionally a JPEG `thumb` part.
pub fn multipart(payload: &serde_json::Value, thumb: Option<&[u8]>) -> (String, Vec<u8>) {
    let boundary = "------------------------e9b6fd531fc73c30";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"payload\"\r\nContent-Type: application/json\r\n\r\n").as_bytes());
    body.extend_from_slice(serde_json::to_string(payload).unwrap().as_bytes());
    body.extend_from_slice(b"\r\n");
    if let Some(t) = thumb {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"thumb\"; filename=\"image.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").as_bytes());
        body.extend_from_slice(t);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Wait until the daemon has read its Plex server's account list (`plex_accounts_read_at` in
/// `/api/status`; a store that holds one has it from the start). A test whose fake Plex lists
/// the captures' shared user waits for it before posting: a webhook that comes before it is
/// kept under its plex.tv id (`plextv:31646104`), one after under the server's account
/// (`pms:31646104`), and two keys are two viewings to the dedupe.
pub async fn accounts_read<D: Driver>(d: &D) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let st = d.status().await;
        if st["plex_accounts_read_at"].is_i64() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "the daemon did not read Plex's /accounts: {st}\n{}",
                d.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Poll `f` until it returns Some or the timeout passes.
pub async fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A show the title matcher cannot decide: Plex knows it only by title ("The Office", 2003),
/// the tracker has two shows of that title (2001 and 2005). Starts both fakes and writes
/// `dir/plexsync.toml` (title matcher, no polling, the captures' shared user listed and synced
/// so [`NEW_AGENT_SCROBBLE`] re-aimed at the show is held in the conflict); returns the
/// config's text.
pub async fn office_conflict(
    dir: &std::path::Path,
) -> (plex::FakePlex, tracker::FakeTracker, String) {
    let plex = plex::FakePlex::start(vec![plex::FakeShow {
        rating_key: "40275".into(),
        guid: "plex://show/60e81fd8d8000e002d7d2976".into(),
        title: "The Office".into(),
        year: 2003,
        guids: vec![],
    }])
    .await;
    let tracker = tracker::FakeTracker::start(vec![
        serde_json::json!({"id": "office-uk", "title": "The Office", "year": 2001}),
        serde_json::json!({"id": "office-us", "title": "The Office", "year": 2005}),
    ])
    .await;
    plex.list_shared_user();
    let text = daemon::config_with_plex(
        &plex.url(),
        &tracker.url(),
        daemon::SYNC_SHARED_USER,
        "[[matchers]]\nkind = \"title\"\n[poll]\nenabled = false\n",
    );
    std::fs::write(dir.join("plexsync.toml"), &text).expect("write the config");
    (plex, tracker, text)
}

/// POST a sample payload (a path under plex-samples) as Plex does, multipart; the status.
pub async fn post_sample(url: &str, rel: &str) -> u16 {
    let (ct, body) = multipart(&sample_json(rel), None);
    reqwest::Client::new()
        .post(url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("the daemon answers")
        .status()
        .as_u16()
}

/// A reverse proxy on loopback in front of `upstream`, as nginx runs one: `Host` and the body
/// passed on, the client added to `X-Forwarded-For`, no redirect followed, and a 502 page of its
/// own (HTML, not the daemon's JSON) while the upstream does not answer. With `strip`, it is
/// `location /prefix/ { proxy_pass http://upstream/; }` (the daemon sees paths without the
/// prefix); without, `proxy_pass http://upstream;` (the prefix is passed on).
pub async fn reverse_proxy(
    upstream: SocketAddr,
    prefix: &'static str,
    strip: bool,
) -> Arc<FakeServer> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    FakeServer::start(Arc::new(move |seen: Seen| {
        let http = http.clone();
        Box::pin(async move {
            let path = if strip {
                match seen.path.strip_prefix(prefix) {
                    Some(rest) if rest.starts_with('/') => rest.to_string(),
                    _ => return respond(404, "text/html", "<html>nginx: 404 Not Found</html>"),
                }
            } else {
                seen.path.clone()
            };
            let query = if seen.query.is_empty() {
                String::new()
            } else {
                format!("?{}", seen.query)
            };
            let method = reqwest::Method::from_bytes(seen.method.as_bytes()).unwrap();
            let mut out = http.request(method, format!("http://{upstream}{path}{query}"));
            for (k, v) in &seen.headers {
                if !matches!(
                    k.as_str(),
                    "connection" | "content-length" | "x-forwarded-for"
                ) {
                    out = out.header(k, v);
                }
            }
            let xff = match seen.header("x-forwarded-for") {
                Some(prev) => format!("{prev}, 127.0.0.1"),
                None => "127.0.0.1".into(),
            };
            let answer = out
                .header("x-forwarded-for", xff)
                .body(seen.body)
                .send()
                .await;
            let Ok(r) = answer else {
                return respond(
                    502,
                    "text/html",
                    "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
                );
            };
            let mut resp = Response::builder().status(r.status().as_u16());
            for (k, v) in r.headers() {
                if !matches!(
                    k.as_str(),
                    "connection" | "transfer-encoding" | "content-length"
                ) {
                    resp = resp.header(k, v);
                }
            }
            let body = r.bytes().await.unwrap_or_default();
            resp.body(Full::new(body)).unwrap()
        })
    }))
    .await
}
