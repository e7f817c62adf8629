//! Backfill benchmark: 100,000 history rows of 2,000 shows, served by a fake Plex on loopback
//! in PMS's XML shape (paged with X-Plex-Container-Start/Size, pages of 1,000), imported through
//! the journal, dedupe, the matcher chain (guid + title) and into the outbox. Two runs, each on
//! a fresh store:
//!
//! 1. handed to a running daemon (started under a pretend systemd, so start-up is timed to
//!    `READY=1`): idle RSS, then `plexsync backfill` asks the daemon to do it; rows/s, and the
//!    daemon's RSS after it and its peak; the daemon exports meanwhile, so the run goes on until
//!    the fake tracker has every episode (end to end).
//! 2. `plexsync backfill` with no daemon running (the CLI runs the pipeline itself, no export):
//!    rows/s and the CLI's peak RSS.
//!
//! Run: `cargo bench --bench backfill` (env: BENCH_ROWS, BENCH_SHOWS).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Daemon, bin, cores, env_usize, kb, load_average, mb, ms};

const SINCE: &str = "2000-01-01";

fn run_backfill(cfg: &std::path::Path) -> std::process::Child {
    Command::new(bin())
        .args(["backfill", "--since", SINCE, "--json", "--config"])
        .arg(cfg)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn summary(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn print_summary(s: &serde_json::Value) {
    println!(
        "    rows read {}, plays new {}, matched {}, parked {}, still matching {}",
        s["rows_read"], s["plays_new"], s["matched"], s["parked"], s["waiting"]
    );
    if let Some(e) = s["error"].as_str() {
        println!("    ERROR {e}");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows = env_usize("BENCH_ROWS", 100_000);
    let shows = env_usize("BENCH_SHOWS", 2_000);
    let load_before = load_average();
    let fake = support::fake(rows, shows).await;
    let cfg_text = support::config(&fake, "", "");

    println!(
        "backfill benchmark ({} cores, load average {load_before} before the run)",
        cores()
    );
    println!("  history rows        {rows} of {shows} shows (pages of 1000)");

    // 1. Through a running daemon.
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &cfg_text).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = daemon.rss();
    let t0 = Instant::now();
    let out = run_backfill(&dir.path().join("plexsync.toml"))
        .wait_with_output()
        .unwrap();
    let imported = t0.elapsed();
    let (rss_after, hwm_after) = (daemon.rss(), daemon.hwm());
    let exported_then = fake.episodes();
    let deadline = Instant::now() + Duration::from_secs(300);
    while fake.distinct() < rows && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drained = fake.last_post_at().saturating_duration_since(t0);
    let (rss_drained, hwm_drained) = (daemon.rss(), daemon.hwm());
    let counts = daemon.status().await["counts"].clone();
    let ready = daemon.ready;
    daemon.stop();

    println!("  via the daemon (`plexsync backfill` hands it to `plexsync run`):");
    print_summary(&summary(&out));
    println!(
        "    imported            {:.2} s, {:.0} rows/s (journaled, matched, in the outbox; the CLI polls progress every 250 ms)",
        imported.as_secs_f64(),
        rows as f64 / imported.as_secs_f64()
    );
    println!(
        "    exported meanwhile  {exported_then} episodes; all {} at the tracker after {:.2} s ({:.0} rows/s end to end, {} requests)",
        fake.distinct(),
        drained.as_secs_f64(),
        rows as f64 / drained.as_secs_f64(),
        fake.posts()
    );
    println!(
        "    store after         journal {}, outbox {}, batches {}, dead letters {}, conflicts {}",
        counts["journal"],
        counts["outbox_items"],
        counts["batches"],
        counts["dead_letters"],
        counts["conflicts"]
    );
    println!("    start-up to READY   {}", ms(ready));
    println!("    daemon RSS idle     {}", mb(idle));
    println!(
        "    daemon RSS          {} after the import (peak {}), {} after the export (peak {})",
        mb(rss_after),
        mb(hwm_after),
        mb(rss_drained),
        mb(hwm_drained)
    );
    drop(dir);

    // 2. No daemon: the CLI runs the pipeline (journal → match → outbox) itself.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    support::init_store(&cfg);
    let t0 = Instant::now();
    let mut child = run_backfill(&cfg);
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
    let status = Command::new(bin())
        .args(["status", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
    println!("  without a daemon (the CLI runs the pipeline; no export):");
    print_summary(&summary(&out));
    println!("    outbox episodes     {}", st["counts"]["outbox_items"]);
    println!(
        "    elapsed             {:.2} s, {:.0} rows/s (whole command: start, import, match, into the outbox)",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64()
    );
    println!("    CLI peak RSS        {}", mb(peak));
}
