//! Export benchmark: 10,000 pending episodes (100 shows of 100 episodes) drained from the outbox
//! to a fast fake tracker on loopback.
//!
//! Seeding: `plexsync backfill` with no daemon running imports 10,000 history rows from the
//! fake Plex, matches them and leaves every episode in the outbox (the CLI does not export).
//! Then the release daemon starts (under a pretend systemd) with the tracker up, and the drain
//! is timed from its `READY=1` to the tracker's answer to the last batch. Prints episodes/s,
//! the requests made (batches of `[outbox] batch_size`, 100) and what the tracker received.
//!
//! Run: `cargo bench --bench export` (env: BENCH_EPISODES, BENCH_SHOWS).

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::{Daemon, bin, cores, env_usize, load_average, mb, ms};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let episodes = env_usize("BENCH_EPISODES", 10_000);
    let shows = env_usize("BENCH_SHOWS", 100);
    let load_before = load_average();
    let fake = support::fake(episodes, shows).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("plexsync.toml");
    // No polling: the drain is the only work the daemon has.
    let cfg_text = support::config(&fake, "", "enabled = false");
    std::fs::write(&cfg, &cfg_text).unwrap();
    support::init_store(&cfg);

    let seed = Command::new(bin())
        .args(["backfill", "--since", "2000-01-01", "--json", "--config"])
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let seeded: serde_json::Value = serde_json::from_slice(&seed.stdout).unwrap_or_default();
    let status = Command::new(bin())
        .args(["status", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let before: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
    let pending = before["counts"]["outbox_items"].as_u64().unwrap_or(0);
    assert_eq!(
        fake.posts(),
        0,
        "the seeding backfill must not export anything"
    );
    let catalogue_gets = fake.counts.catalogue_gets.load(Ordering::SeqCst);

    let daemon = Daemon::start(dir.path(), &cfg_text).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    while fake.distinct() < episodes && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let first = fake.first_post_at();
    let last = fake.last_post_at();
    // The exporter may start before READY is sent: the drain runs from whichever came first.
    let drain = last.saturating_duration_since(first.min(daemon.ready_at));
    // Let the daemon record the last result before reading the store.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = daemon.status().await["counts"].clone();
    let (rss, hwm) = (daemon.rss(), daemon.hwm());
    let (ready, spawned) = (daemon.ready, daemon.spawned);
    daemon.stop();

    println!(
        "export benchmark ({} cores, load average {load_before} before the run)",
        cores()
    );
    println!(
        "  seeded              {} rows of {shows} shows → {} plays matched, {pending} episodes pending in the outbox",
        seeded["rows_read"], seeded["matched"]
    );
    println!(
        "  drained             {} distinct episodes at the tracker in {} (from READY or the first request, whichever came first)",
        fake.distinct(),
        ms(drain)
    );
    println!(
        "  timeline            READY {}, first request {}, last request {} after spawn",
        ms(ready),
        ms(first.saturating_duration_since(spawned)),
        ms(last.saturating_duration_since(spawned))
    );
    println!(
        "  throughput          {:.0} episodes/s",
        fake.distinct() as f64 / drain.as_secs_f64()
    );
    println!(
        "  requests            {} watched POSTs ({} distinct idempotency keys, {} episodes sent), {} catalogue GETs",
        fake.posts(),
        fake.keys(),
        fake.episodes(),
        fake.counts.catalogue_gets.load(Ordering::SeqCst) - catalogue_gets
    );
    println!(
        "  store after         outbox {}, batches {}, dead letters {}, watched {}",
        after["outbox_items"], after["batches"], after["dead_letters"], after["watched"]
    );
    println!("  daemon RSS          {} (peak {})", mb(rss), mb(hwm));
}
