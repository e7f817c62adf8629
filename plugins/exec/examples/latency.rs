//! Prints figures for the exec matcher driving the shipped example program
//! (examples/title_table.py): build time (config only), the probe (starting the working
//! instance and reading its hello, as `plexsync run` does), the first request, sequential round trips (p50 / p99), throughput with requests in flight
//! concurrently, and the cost of handing the program a large catalogue.
//!
//! `cargo run --release -p plexsync-plugin-exec --example latency`
//! (env `N`, default 5000 requests; `CONCURRENCY`, default 16; `SHOWS`, default 50000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use plexsync_plugin_api::{CatalogShow, Catalogue, Matcher, MemoryCache, PluginContext, ShowQuery};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn catalogue(n: usize) -> Catalogue {
    Catalogue::new(
        (0..n)
            .map(|i| CatalogShow {
                id: i.to_string(),
                title: format!("Show number {i}"),
                year: Some(1990 + (i % 35) as i32),
                tmdb_id: Some(i as u64 + 1),
                ..Default::default()
            })
            .collect(),
    )
}

fn query(i: usize) -> ShowQuery {
    ShowQuery {
        rating_key: Some(i.to_string()),
        title: format!("Show number {}", i % 1000),
        year: None,
        guids: vec![],
    }
}

#[tokio::main]
async fn main() {
    let n = env("N", 5000).max(1);
    let concurrency = env("CONCURRENCY", 16).max(1);
    let shows = env("SHOWS", 50_000);
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let ctx = PluginContext {
        config: serde_json::json!({"command": "examples/title_table.py", "timeout": "30s"}),
        secrets: Default::default(),
        cache: Arc::new(MemoryCache::default()),
        config_dir: dir,
    };

    let t = Instant::now();
    let m = Arc::new(plexsync_plugin_exec::build(&ctx).expect("build"));
    println!("build (config only, starts nothing): {:?}", t.elapsed());
    let t = Instant::now();
    m.probe().await.expect("probe");
    println!(
        "probe (start, hello; the instance stays): {:?}",
        t.elapsed()
    );

    m.set_catalogue(Arc::new(catalogue(1000)));
    let t = Instant::now();
    m.match_show(&query(0)).await.expect("first request");
    println!(
        "first request (sends the 1,000-show catalogue): {:?}",
        t.elapsed()
    );

    let mut times = Vec::with_capacity(n);
    let t = Instant::now();
    for i in 0..n {
        let s = Instant::now();
        m.match_show(&query(i)).await.expect("request");
        times.push(s.elapsed());
    }
    let total = t.elapsed();
    times.sort();
    println!(
        "sequential: {n} requests in {total:?} ({:.0}/s), p50 {:?}, p99 {:?}, max {:?}",
        n as f64 / total.as_secs_f64(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );

    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let m = m.clone();
        tasks.spawn(async move {
            let mut i = w;
            while i < n {
                m.match_show(&query(i)).await.expect("request");
                i += concurrency;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task");
    }
    let total = t.elapsed();
    println!(
        "concurrent ({concurrency} in flight): {n} requests in {total:?} ({:.0}/s)",
        n as f64 / total.as_secs_f64()
    );

    let big = Arc::new(catalogue(shows));
    let bytes = plexsync_plugin_exec::protocol::catalogue_notification(&big).len();
    let t = Instant::now();
    m.set_catalogue(big);
    m.match_show(&query(1))
        .await
        .expect("request after catalogue");
    println!(
        "catalogue of {shows} shows ({:.1} MB line) sent, indexed by the program and one match answered: {:?}",
        bytes as f64 / 1e6,
        t.elapsed()
    );
}
