//! Backfill benchmark: 100,000 history rows of 2,000 shows, served by a fake Plex on loopback
//! in PMS's XML shape (paged with X-Plex-Container-Start/Size), imported with the release
//! binary's `plexsync backfill` (no daemon running: the CLI runs the pipeline) through the
//! journal, dedupe, the matcher chain and into the outbox. Prints rows/s and peak RSS.
//!
//! Run: `cargo bench --bench backfill` (env: BENCH_ROWS, BENCH_SHOWS).

use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const BASE: i64 = 1_600_000_000;

fn history_page(rows: usize, shows: usize, start: usize, size: usize) -> String {
    let mut out = String::with_capacity(size * 400);
    let end = (start + size).min(rows);
    out.push_str(&format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MediaContainer size=\"{}\" totalSize=\"{rows}\" offset=\"{start}\">",
        end.saturating_sub(start)
    ));
    for i in start..end {
        let show = i % shows;
        let n = i / shows;
        let (season, episode) = (1 + n / 25, 1 + n % 25);
        out.push_str(&format!(
            "<Video historyKey=\"/status/sessions/history/{i}\" key=\"/library/metadata/{ep}\" ratingKey=\"{ep}\" parentKey=\"/library/metadata/{sk}1\" grandparentKey=\"/library/metadata/{sk}\" librarySectionID=\"2\" title=\"Episode {episode}\" grandparentTitle=\"Show {show}\" type=\"episode\" index=\"{episode}\" parentIndex=\"{season}\" viewedAt=\"{}\" accountID=\"1\" deviceID=\"4\" />",
            BASE + i as i64,
            ep = 1_000_000 + i,
            sk = 10_000 + show,
        ));
    }
    out.push_str("</MediaContainer>\n");
    out
}

async fn fakes(rows: usize, shows: usize) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let catalogue: Arc<String> = Arc::new(
        serde_json::to_string(
            &(0..shows)
                .map(|s| json!({"id": format!("t{s}"), "title": format!("Show {s}"), "year": 2000 + (s % 20), "tvdb_id": 500_000 + s}))
                .collect::<Vec<_>>(),
        )
        .unwrap(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let catalogue = catalogue.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let catalogue = catalogue.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let header = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<usize>().ok())
                        };
                        let (start, size) = (
                            header("x-plex-container-start").unwrap_or(0),
                            header("x-plex-container-size").unwrap_or(100),
                        );
                        let _ = req.into_body().collect().await;
                        let body = if path == "/identity" {
                            "<MediaContainer size=\"0\" machineIdentifier=\"benchmachine\" version=\"1.40.0\"/>".to_string()
                        } else if path == "/accounts" {
                            "<MediaContainer size=\"2\"><Account id=\"0\" name=\"\"/><Account id=\"1\" name=\"owner\"/></MediaContainer>".to_string()
                        } else if path == "/status/sessions/history/all" {
                            history_page(rows, shows, start, size)
                        } else if let Some(rk) = path.strip_prefix("/library/metadata/") {
                            let show: usize = rk.parse::<usize>().unwrap_or(10_000) - 10_000;
                            format!(
                                "<MediaContainer size=\"1\"><Directory ratingKey=\"{rk}\" guid=\"com.plexapp.agents.thetvdb://{}?lang=en\" type=\"show\" title=\"Show {show}\" year=\"{}\"/></MediaContainer>",
                                500_000 + show,
                                2000 + show % 20
                            )
                        } else if path.ends_with("/shows") {
                            catalogue.to_string()
                        } else {
                            "<MediaContainer size=\"0\"/>".to_string()
                        };
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows = env_usize("BENCH_ROWS", 100_000);
    let shows = env_usize("BENCH_SHOWS", 2_000);
    let fake = fakes(rows, shows).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(
        &cfg,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n[plex]\nurl = \"{fake}\"\n[tracker]\nurl = \"{fake}/api\"\n[poll]\npage_size = 1000\n[log]\nlevel = \"warn\"\n[[matchers]]\nkind = \"guid\"\n[[matchers]]\nkind = \"title\"\n"),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_plexsync");
    let t0 = Instant::now();
    let mut child = Command::new(bin)
        .args(["backfill", "--since", "2000-01-01", "--json", "--config"])
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    loop {
        peak = peak.max(kb(pid, "VmHWM:"));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t0.elapsed();
    let out = child.wait_with_output().unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    // The outbox after the run, read from the store.
    let status = Command::new(bin)
        .args(["status", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();

    println!(
        "backfill benchmark ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("  history rows        {rows} of {shows} shows (pages of 1000)");
    println!("  rows read           {}", summary["rows_read"]);
    println!("  plays new           {}", summary["plays_new"]);
    println!(
        "  matched / parked    {} / {}",
        summary["matched"], summary["parked"]
    );
    println!("  outbox episodes     {}", st["counts"]["outbox_items"]);
    println!(
        "  elapsed             {:.2} s (whole command: start, import, match, into the outbox)",
        elapsed.as_secs_f64()
    );
    println!(
        "  throughput          {:.0} rows/s",
        rows as f64 / elapsed.as_secs_f64()
    );
    println!("  peak RSS            {:.1} MB", peak as f64 / 1024.0);
    if let Some(e) = summary["error"].as_str() {
        println!("  ERROR               {e}");
    }
}
