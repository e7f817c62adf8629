//! Webhook ingest benchmark: starts the release `plexsync` binary against a minimal fake Plex
//! and tracker on loopback, measures its idle RSS, then posts real sample webhooks (the
//! legacy-agent capture from ../shared/plex-samples, made a `media.scrobble`, each with a
//! distinct account/season/episode so none is a duplicate) over keep-alive connections and
//! prints throughput, latency percentiles and memory.
//!
//! Run: `cargo bench --bench webhook_ingest` (env: BENCH_N, BENCH_CONCURRENCY).

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A fake Plex + tracker in one server: show metadata, the catalogue, and 200 for every export.
async fn fakes() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let path = req.uri().path().to_string();
                    let _ = req.into_body().collect().await;
                    let body = if path.starts_with("/library/metadata/") {
                        "<MediaContainer size=\"1\"><Directory ratingKey=\"56850\" guid=\"com.plexapp.agents.thetvdb://301376?lang=en\" type=\"show\" title=\"Be Cool, Scooby-Doo!\" year=\"2015\"></Directory></MediaContainer>".to_string()
                    } else if path.ends_with("/shows") {
                        json!([{"id": "scooby", "title": "Be Cool, Scooby-Doo!", "year": 2015, "tvdb_id": 301376}]).to_string()
                    } else {
                        json!({"marked": 1, "already_watched": 0, "unknown": [], "watched_episodes": 1, "total_episodes": 1000}).to_string()
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn body_for(sample: &Value, i: usize) -> Vec<u8> {
    let mut p = sample.clone();
    p["event"] = json!("media.scrobble");
    p["Account"]["id"] = json!(1000 + i / 1000);
    p["Metadata"]["parentIndex"] = json!(1 + (i % 1000) / 50);
    p["Metadata"]["index"] = json!(1 + i % 50);
    p["Metadata"]["ratingKey"] = json!(format!("{}", 100_000 + i));
    let b = "------------------------e9b6fd531fc73c30";
    let mut out = format!("--{b}\r\nContent-Disposition: form-data; name=\"payload\"\r\nContent-Type: application/json\r\n\r\n").into_bytes();
    out.extend_from_slice(p.to_string().as_bytes());
    out.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    out
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sample_path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/plex-samples/webhook/episode_legacy-thetvdb_media.resume_owner-id1.json"
    ));
    let Ok(text) = std::fs::read_to_string(&sample_path) else {
        eprintln!(
            "needs {} (the shared Plex samples beside the checkout)",
            sample_path.display()
        );
        std::process::exit(2);
    };
    let sample: Value = serde_json::from_str(&text).unwrap();
    let n = env_usize("BENCH_N", 20_000);
    let conc = env_usize("BENCH_CONCURRENCY", 64);

    let fake = fakes().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n# One client posting as fast as it can: the load, not a flood to refuse.\nwebhook_rate_limit = 0\n[plex]\nurl = \"{fake}\"\n[tracker]\nurl = \"{fake}/api\"\n[log]\nlevel = \"warn\"\n[[matchers]]\nkind = \"guid\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_plexsync"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let sock = dir.path().join("plexsync.sock");
    let started = Instant::now();
    let status: Value = loop {
        if let Ok(b) = plexsync::client::request(&sock, "GET", "/api/status", None).await {
            break serde_json::from_slice(&b).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "daemon did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ready = started.elapsed();
    let url: hyper::Uri = status["webhook_url"].as_str().unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kb(pid, "VmRSS:");

    let bodies: Vec<Vec<u8>> = (0..n).map(|i| body_for(&sample, i)).collect();
    let bodies = std::sync::Arc::new(bodies);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
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
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= bodies.len() {
                    break;
                }
                let req = Request::post(url.path())
                    .header("host", authority.as_str())
                    .header(
                        "content-type",
                        "multipart/form-data; boundary=------------------------e9b6fd531fc73c30",
                    )
                    .body(Full::new(Bytes::from(bodies[i].clone())))
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
    let mut lat = Vec::with_capacity(n);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    let elapsed = t0.elapsed();
    lat.sort();
    let after_rss = rss_kb(pid, "VmRSS:");
    let peak_rss = rss_kb(pid, "VmHWM:");
    let st: Value = serde_json::from_slice(
        &plexsync::client::request(&sock, "GET", "/api/status", None)
            .await
            .unwrap(),
    )
    .unwrap();
    let journaled = st["counts"]["journal"].as_u64().unwrap_or(0);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();

    println!(
        "webhook ingest benchmark ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("  requests            {n} ({conc} keep-alive connections), errors {errors}");
    println!("  durably journaled   {journaled}");
    println!("  elapsed             {:.2} s", elapsed.as_secs_f64());
    println!(
        "  throughput          {:.0} webhooks/s",
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  latency             p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(&lat, 0.50).as_secs_f64() * 1e3,
        pct(&lat, 0.90).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!("  start-up to ready   {:.0} ms", ready.as_secs_f64() * 1e3);
    println!("  RSS idle            {:.1} MB", idle_rss as f64 / 1024.0);
    println!(
        "  RSS after load      {:.1} MB (peak {:.1} MB)",
        after_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
}
