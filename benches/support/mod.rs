//! Pieces the benchmarks share: one fake server on loopback that is both a minimal Plex (identity,
//! accounts, paged watch history in PMS's XML shape, show metadata) and a fast tracker (catalogue,
//! `POST /shows/{id}/watched` answered at once and counted), the release daemon started under a
//! pretend systemd (`$NOTIFY_SOCKET`, so start-up is timed to its `READY=1`), a keep-alive HTTP
//! load generator, and memory figures from `/proc/<pid>/status`.
//!
//! Each bench uses a part of this, hence the module-wide `dead_code` allowance.
#![allow(dead_code)]

use std::collections::HashSet;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_plexsync");

/// Create the store a CLI run without a daemon needs (offline commands refuse to create one,
/// "start the daemon once"): setting a secret creates the store and its key and nothing else.
/// The fake Plex takes any token.
pub fn init_store(cfg: &Path) {
    use std::io::Write;
    let mut child = Command::new(bin())
        .args(["secret", "set", "plex-token", "--config"])
        .arg(cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("plexsync secret set");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(b"bench-token").expect("the token on stdin");
    }
    assert!(
        child.wait().expect("plexsync secret set").success(),
        "plexsync secret set failed"
    );
}

/// The daemon binary under test: this build's, or `BENCH_BIN` (an older release's, for
/// scripts/side-by-side.sh).
pub fn bin() -> &'static str {
    static B: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        std::env::var("BENCH_BIN")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| BIN.to_string())
    })
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `/proc/<pid>/status` field in kB (`VmRSS:`, `VmHWM:`); 0 once the process is gone.
pub fn kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

/// The one-minute load average, to print beside figures taken on a shared machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Show `s` of the synthetic library: Plex ratingKey, tracker id, tvdb id, title, year.
pub fn show_rating_key(s: usize) -> usize {
    10_000 + s
}

const BASE_VIEWED_AT: i64 = 1_600_000_000;

/// The ratingKey of the real webhook capture's show (the legacy-agent "Be Cool, Scooby-Doo!").
const SAMPLE_SHOW_KEY: &str = "56850";

/// One history page of the rows viewed at or after `since` (row `i` is viewed at
/// `BASE_VIEWED_AT + i`, oldest first, as `sort=viewedAt:asc` asks): row `i` is show
/// `i % shows`, episode `i / shows` of it (25 a season).
pub fn history_page(rows: usize, shows: usize, since: i64, start: usize, size: usize) -> String {
    let first = usize::try_from(since - BASE_VIEWED_AT)
        .unwrap_or(0)
        .min(rows);
    let total = rows - first;
    let mut out = String::with_capacity(size * 400);
    let (start, end) = ((first + start).min(rows), (first + start + size).min(rows));
    out.push_str(&format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MediaContainer size=\"{}\" totalSize=\"{total}\" offset=\"{}\">",
        end - start,
        start - first
    ));
    for i in start..end {
        let show = i % shows;
        let n = i / shows;
        let (season, episode) = (1 + n / 25, 1 + n % 25);
        out.push_str(&format!(
            "<Video historyKey=\"/status/sessions/history/{i}\" key=\"/library/metadata/{ep}\" ratingKey=\"{ep}\" parentKey=\"/library/metadata/{sk}1\" grandparentKey=\"/library/metadata/{sk}\" librarySectionID=\"2\" title=\"Episode {episode}\" grandparentTitle=\"Show {show}\" type=\"episode\" index=\"{episode}\" parentIndex=\"{season}\" viewedAt=\"{}\" accountID=\"1\" deviceID=\"4\" />",
            BASE_VIEWED_AT + i as i64,
            ep = 1_000_000 + i,
            sk = show_rating_key(show),
        ));
    }
    out.push_str("</MediaContainer>\n");
    out
}

/// What the fake tracker has received.
#[derive(Default)]
pub struct TrackerCounts {
    /// `POST /shows/{id}/watched` requests.
    pub posts: AtomicUsize,
    /// Episodes in them (replays included).
    pub episodes: AtomicUsize,
    /// `GET /shows` requests.
    pub catalogue_gets: AtomicUsize,
    /// Distinct idempotency keys (a retried batch repeats its key).
    pub keys: Mutex<HashSet<String>>,
    /// Distinct (show, season, episode) received.
    pub distinct: Mutex<HashSet<(String, u64, u64)>>,
    /// Nanoseconds since `Fake::epoch` of the first and the last watched POST (arrival).
    pub first_post_ns: AtomicU64,
    pub last_post_ns: AtomicU64,
}

pub struct Fake {
    pub url: String,
    pub epoch: Instant,
    pub counts: Arc<TrackerCounts>,
}

impl Fake {
    /// `[tracker] url` for the daemon.
    pub fn tracker_url(&self) -> String {
        format!("{}/api/plexsync", self.url)
    }

    pub fn first_post_at(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.counts.first_post_ns.load(Ordering::SeqCst))
    }

    pub fn last_post_at(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.counts.last_post_ns.load(Ordering::SeqCst))
    }

    pub fn episodes(&self) -> usize {
        self.counts.episodes.load(Ordering::SeqCst)
    }

    pub fn posts(&self) -> usize {
        self.counts.posts.load(Ordering::SeqCst)
    }

    pub fn distinct(&self) -> usize {
        self.counts.distinct.lock().unwrap().len()
    }

    pub fn keys(&self) -> usize {
        self.counts.keys.lock().unwrap().len()
    }
}

/// Start the fake Plex + tracker: `rows` history rows of `shows` shows, the same `shows` (plus
/// the webhook capture's show) in the tracker's catalogue, matched by tvdb id.
pub async fn fake(rows: usize, shows: usize) -> Fake {
    fake_with(rows, shows, Vec::new()).await
}

/// The real 4,498-show catalogue (../shared/matching/catalogue.jsonl) as catalogue rows, or
/// None when the shared data is not beside the checkout.
pub fn real_catalogue() -> Option<Vec<Value>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/matching/catalogue.jsonl"
    );
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// [`fake`] whose catalogue starts with `extra` rows (e.g. [`real_catalogue`]) before the
/// synthetic shows.
pub async fn fake_with(rows: usize, shows: usize, extra: Vec<Value>) -> Fake {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut cat: Vec<Value> = extra;
    cat.extend((0..shows).map(|s| json!({"id": format!("t{s}"), "title": format!("Show {s}"), "year": 2000 + (s % 20), "tvdb_id": 500_000 + s})));
    cat.push(
        json!({"id": "scooby", "title": "Be Cool, Scooby-Doo!", "year": 2015, "tvdb_id": 301376}),
    );
    let catalogue = Bytes::from(serde_json::to_string(&cat).unwrap());
    let counts = Arc::new(TrackerCounts::default());
    let epoch = Instant::now();
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            let (catalogue, counts) = (catalogue.clone(), c.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (catalogue, counts) = (catalogue.clone(), counts.clone());
                    async move {
                        Ok::<_, Infallible>(
                            answer(req, rows, shows, catalogue, &counts, epoch).await,
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Fake {
        url: format!("http://{addr}"),
        epoch,
        counts,
    }
}

async fn answer(
    req: Request<Incoming>,
    rows: usize,
    shows: usize,
    catalogue: Bytes,
    counts: &TrackerCounts,
    epoch: Instant,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let num = |n: &str| header(n).and_then(|v| v.parse::<usize>().ok());
    let (start, size) = (
        num("x-plex-container-start").unwrap_or(0),
        num("x-plex-container-size").unwrap_or(100),
    );
    let key = header("idempotency-key");
    // `viewedAt>=N` (the comparison is part of the key); 0 when absent.
    let since = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| {
            kv.strip_prefix("viewedAt%3E=")
                .or(kv.strip_prefix("viewedAt>="))
        })
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = if let Some(rest) = path.strip_prefix("/api/plexsync/") {
        if rest == "shows" {
            counts.catalogue_gets.fetch_add(1, Ordering::SeqCst);
            return Response::new(Full::new(catalogue));
        }
        let show = rest
            .strip_prefix("shows/")
            .and_then(|r| r.strip_suffix("/watched"))
            .unwrap_or("")
            .to_string();
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        let eps = v["episodes"].as_array().cloned().unwrap_or_default();
        {
            let mut d = counts.distinct.lock().unwrap();
            for e in &eps {
                d.insert((
                    show.clone(),
                    e["season"].as_u64().unwrap_or(0),
                    e["episode"].as_u64().unwrap_or(0),
                ));
            }
        }
        if let Some(k) = key {
            counts.keys.lock().unwrap().insert(k);
        }
        counts.episodes.fetch_add(eps.len(), Ordering::SeqCst);
        let now = epoch.elapsed().as_nanos().max(1) as u64;
        let _ = counts
            .first_post_ns
            .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
        counts.last_post_ns.store(now, Ordering::SeqCst);
        counts.posts.fetch_add(1, Ordering::SeqCst);
        json!({"marked": eps.len(), "already_watched": 0, "unknown": [], "watched_episodes": eps.len(), "total_episodes": 1000}).to_string()
    } else if path == "/identity" {
        "<MediaContainer size=\"0\" machineIdentifier=\"benchmachine\" version=\"1.40.0\"/>".into()
    } else if path == "/accounts" {
        "<MediaContainer size=\"2\"><Account id=\"0\" name=\"\"/><Account id=\"1\" name=\"owner\"/></MediaContainer>".into()
    } else if path == "/status/sessions/history/all" {
        history_page(rows, shows, since, start, size)
    } else if let Some(rk) = path.strip_prefix("/library/metadata/") {
        if rk == SAMPLE_SHOW_KEY {
            "<MediaContainer size=\"1\"><Directory ratingKey=\"56850\" guid=\"com.plexapp.agents.thetvdb://301376?lang=en\" type=\"show\" title=\"Be Cool, Scooby-Doo!\" year=\"2015\"></Directory></MediaContainer>".into()
        } else {
            let show = rk.parse::<usize>().unwrap_or(10_000).saturating_sub(10_000);
            format!(
                "<MediaContainer size=\"1\"><Directory ratingKey=\"{rk}\" guid=\"com.plexapp.agents.thetvdb://{}?lang=en\" type=\"show\" title=\"Show {show}\" year=\"{}\"/></MediaContainer>",
                500_000 + show,
                2000 + show % 20
            )
        }
    } else {
        "<MediaContainer size=\"0\"/>".into()
    };
    Response::new(Full::new(Bytes::from(text)))
}

/// A config for the daemon against `fake`: `server` lines go into `[server]`, `poll` lines into
/// `[poll]`.
pub fn config(fake: &Fake, server: &str, poll: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n[plex]\nurl = \"{}\"\n[tracker]\nurl = \"{}\"\n[poll]\npage_size = 1000\n{poll}\n[live]\nenabled = false\n[log]\nlevel = \"warn\"\n[[matchers]]\nkind = \"guid\"\n[[matchers]]\nkind = \"title\"\n",
        fake.url,
        fake.tracker_url()
    )
}

/// The release daemon, started as systemd would start a `Type=notify` service.
pub struct Daemon {
    pub child: Child,
    pub pid: u32,
    /// Process spawn → `READY=1` on `$NOTIFY_SOCKET`.
    pub ready: Duration,
    pub spawned: Instant,
    pub ready_at: Instant,
    pub sock: PathBuf,
    /// Reads (and drops) the daemon's later notifications, so its sends never find the
    /// socket gone or its queue full.
    notify: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// Write `cfg` into `dir`, start `plexsync run`, wait for `READY=1`.
    pub async fn start(dir: &Path, cfg: &str) -> Daemon {
        Self::start_bin(bin(), dir, cfg).await
    }

    /// [`Daemon::start`] of another build of the binary (an old release, to compare).
    pub async fn start_bin(bin: &str, dir: &Path, cfg: &str) -> Daemon {
        let cfg_path = dir.join("plexsync.toml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let notify_path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
        let spawned = Instant::now();
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&cfg_path)
            .env_remove("RUST_LOG")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut buf = vec![0u8; 4096];
        let ready_at = loop {
            let n = tokio::time::timeout(Duration::from_secs(30), notify.recv(&mut buf))
                .await
                .expect("the daemon sent no READY=1 within 30 s")
                .unwrap();
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                break Instant::now();
            }
        };
        let notify = tokio::spawn(async move { while notify.recv(&mut buf).await.is_ok() {} });
        Daemon {
            child,
            pid,
            ready: ready_at - spawned,
            spawned,
            ready_at,
            sock: dir.join("plexsync.sock"),
            notify,
        }
    }

    pub fn rss(&self) -> u64 {
        kb(self.pid, "VmRSS:")
    }

    pub fn hwm(&self) -> u64 {
        kb(self.pid, "VmHWM:")
    }

    pub async fn status(&self) -> Value {
        let b = plexsync::client::request(&self.sock, "GET", "/api/status", None)
            .await
            .unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    /// Durable store commits so far (`plexsync_store_commits_total`); None from a build that
    /// does not count them.
    pub async fn commits(&self) -> Option<u64> {
        let b = plexsync::client::request(&self.sock, "GET", "/metrics", None)
            .await
            .ok()?;
        String::from_utf8_lossy(&b)
            .lines()
            .find_map(|l| l.strip_prefix("plexsync_store_commits_total "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let _ = self.child.wait();
        self.notify.abort();
    }
}

/// Client-side figures of one load run.
pub struct LoadResult {
    pub requests: usize,
    pub errors: usize,
    pub elapsed: Duration,
    /// Sorted.
    pub latencies: Vec<Duration>,
}

impl LoadResult {
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn pct(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }

    pub fn summary(&self) -> String {
        format!(
            "{:.0} req/s; p50 {}, p90 {}, p99 {}, max {}",
            self.throughput(),
            ms(self.pct(0.50)),
            ms(self.pct(0.90)),
            ms(self.pct(0.99)),
            ms(self.latencies.last().copied().unwrap_or_default())
        )
    }
}

/// POST every body once to `url` over `conc` keep-alive connections (each sends its next
/// request when the previous answer is in), timing each request.
pub async fn load(
    url: &hyper::Uri,
    content_type: &'static str,
    bodies: Arc<Vec<Bytes>>,
    conc: usize,
) -> LoadResult {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (bodies, next, url) = (bodies.clone(), next.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let authority = url.authority().unwrap().clone();
            let stream = tokio::net::TcpStream::connect(authority.as_str())
                .await
                .unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut lat = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= bodies.len() {
                    break;
                }
                let req = Request::post(url.path())
                    .header("host", authority.as_str())
                    .header("content-type", content_type)
                    .body(Full::new(bodies[i].clone()))
                    .unwrap();
                let t = Instant::now();
                match sender.send_request(req).await {
                    Ok(r) => {
                        let ok = r.status().is_success();
                        let _ = r.into_body().collect().await;
                        lat.push(t.elapsed());
                        if !ok {
                            errors += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut latencies = Vec::with_capacity(bodies.len());
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = t0.elapsed();
    latencies.sort();
    LoadResult {
        requests: bodies.len(),
        errors,
        elapsed,
        latencies,
    }
}

/// The builds to compare: `old` from `$BENCH_OLD_BIN` when set (a release binary of an
/// earlier commit), then this checkout's `new`.
pub fn binaries() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Ok(old) = std::env::var("BENCH_OLD_BIN") {
        if !old.is_empty() {
            out.push(("old", old));
        }
    }
    out.push(("new", BIN.to_string()));
    out
}

/// Busy loops on every core until dropped: "a build running beside it".
pub struct Busy {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Busy {
    pub fn start(n: usize) -> Busy {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                })
            })
            .collect();
        Busy { stop, threads }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
