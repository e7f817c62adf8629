//! Watched-state sync memory benchmark: a library of BENCH_EPISODES watched episodes (50,000 by
//! default, 100 per show) served by the test suite's fake Plex (shows `type=2`, `allLeaves`,
//! pages of 50 as PMS caps them), walked by `plexsync sync` with no daemon (the CLI runs the
//! job and the resolver in process). Prints the CLI's peak RSS (VmHWM) for a tenth of the
//! library and for the whole, so the growth per 10,000 episodes shows whether the walk holds
//! the library (it should not: one page of shows and one page of episodes at a time).
//!
//! Two modes: a dry run (the walk alone: nothing is stored) and a real run (the walk journals
//! every episode and the resolver parks them, so the store — and redb's page cache — grows
//! with the library, as for a backfill).
//!
//! Run: `cargo bench --bench sync_memory` (env: BENCH_EPISODES).

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::process::{Command, Stdio};
use std::time::Instant;

use support::plex::{FakePlex, TOKEN, WatchedEpisodeFixture};
use support::tracker::FakeTracker;

fn episodes(n: usize) -> Vec<WatchedEpisodeFixture> {
    (0..n)
        .map(|i| {
            let show = format!("{}", 100_000 + i / 100);
            WatchedEpisodeFixture::new(
                &format!("{}", 1_000_000 + i),
                &show,
                &format!("Show {show}"),
                1 + (i % 100 / 25) as u32,
                1 + (i % 25) as u32,
                1_600_000_000 + i as i64,
            )
        })
        .collect()
}

fn hwm_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// One offline sync over `n` episodes on a fresh store: (seconds, peak RSS in KiB, summary).
async fn run(n: usize, dry_run: bool) -> (f64, u64, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![]).await;
    plex.state.lock().unwrap().watched = episodes(n);
    let tracker = FakeTracker::start(vec![]).await;
    let cfg_text = support::daemon::config(
        &plex.url(),
        &tracker.url(),
        "[poll]\nschedule = \"0 0 0 1 1 *\"\nlibrary_scan = false\n[log]\nlevel = \"warn\"\n",
    )
    .replace("[log]\nlevel = \"debug\"\n", "");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let c = cfg.clone();
    let out = tokio::task::spawn_blocking(move || {
        support::daemon::cli(&c, &["secret", "set", "plex-token"], Some(TOKEN))
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let started = Instant::now();
    let mut args = vec!["sync", "--json", "--config"];
    if dry_run {
        args.insert(1, "--dry-run");
    }
    let child = Command::new(support::daemon::BIN)
        .args(&args)
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waiter = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    let mut peak = 0;
    while !waiter.is_finished() {
        if let Some(k) = hwm_kb(pid) {
            peak = peak.max(k);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let out = waiter.await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    (
        secs,
        peak,
        serde_json::from_slice(&out.stdout).unwrap_or_default(),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = std::env::var("BENCH_EPISODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000usize);
    println!(
        "watched-state sync memory benchmark (offline `plexsync sync`, fake Plex on loopback)"
    );
    for dry_run in [true, false] {
        let what = if dry_run {
            "dry run (walk only, stores nothing)"
        } else {
            "real run (walk + journal + resolver)"
        };
        println!("  {what}:");
        let mut rows = Vec::new();
        for size in [n / 10, n] {
            let (secs, peak, s) = run(size, dry_run).await;
            println!(
                "    {size:>7} episodes: {:.1} s, peak RSS {:.1} MiB; walked {} shows, {} watched, {} new plays{}",
                secs,
                peak as f64 / 1024.0,
                s["shows_walked"],
                s["episodes_watched"],
                s["plays_new"],
                s["error"]
                    .as_str()
                    .map(|e| format!(", ERROR {e}"))
                    .unwrap_or_default()
            );
            rows.push((size, peak));
        }
        let (a, b) = (rows[0], rows[1]);
        let per_10k = (b.1 as f64 - a.1 as f64) / 1024.0 / ((b.0 - a.0) as f64 / 10_000.0);
        println!("    peak RSS growth: {per_10k:.2} MiB per 10,000 episodes");
    }
}
