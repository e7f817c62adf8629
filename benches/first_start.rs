//! First-start benchmark (issue 15): a fresh state folder, the tracker serving the real
//! 4,498-show catalogue (../shared/matching/catalogue.jsonl, plus one synthetic show the play
//! belongs to), one webhook sent as soon as the daemon is READY. Prints the time from the
//! process's spawn (and from the webhook's 200) until the play arrives at the tracker, on an
//! idle machine and with every core busy (busy loops beside it, like a build).
//!
//! Compares builds: set `BENCH_OLD_BIN` to an earlier release binary to run it in the same
//! minute (old, new interleaved).
//!
//! Run: `cargo bench --bench first_start` (env: BENCH_RUNS, default 3; BENCH_OLD_BIN).

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use support::{Busy, Daemon, cores, env_usize, load, load_average, ms};

const BOUNDARY: &str = "------------------------e9b6fd531fc73c30";
const CONTENT_TYPE: &str = "multipart/form-data; boundary=------------------------e9b6fd531fc73c30";

/// A `media.scrobble` of synthetic show 0 (ratingKey 10000, tvdb 500000 in the fakes).
fn body(sample: &Value) -> Bytes {
    let rk = support::show_rating_key(0);
    let mut p = sample.clone();
    p["event"] = json!("media.scrobble");
    let m = &mut p["Metadata"];
    m["parentIndex"] = json!(1);
    m["index"] = json!(1);
    m["ratingKey"] = json!("2000000");
    m["grandparentRatingKey"] = json!(rk.to_string());
    m["grandparentKey"] = json!(format!("/library/metadata/{rk}"));
    m["grandparentTitle"] = json!("Show 0");
    m["year"] = json!(2000);
    m["guid"] = json!("com.plexapp.agents.thetvdb://500000/1/1?lang=en");
    m["grandparentGuid"] = json!("com.plexapp.agents.thetvdb://500000?lang=en");
    let mut out = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"payload\"\r\nContent-Type: application/json\r\n\r\n").into_bytes();
    out.extend_from_slice(p.to_string().as_bytes());
    out.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    Bytes::from(out)
}

/// One first start: (spawn → play at the tracker, webhook 200 → play at the tracker, RSS
/// once exported in kB).
async fn first_start(bin: &str, sample: &Value, catalogue: &[Value]) -> (Duration, Duration, u64) {
    let fake = support::fake_with(0, 1, catalogue.to_vec()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::config(&fake, "webhook_rate_limit = 0", "enabled = false");
    let daemon = Daemon::start_bin(bin, dir.path(), &cfg).await;
    let status = daemon.status().await;
    let url: hyper::Uri = status["webhook_url"].as_str().unwrap().parse().unwrap();
    let r = load(&url, CONTENT_TYPE, Arc::new(vec![body(sample)]), 1).await;
    assert_eq!(r.errors, 0, "the webhook was refused");
    let acked = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while fake.episodes() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(fake.episodes() > 0, "the play never reached the tracker");
    let at = fake.first_post_at();
    let (rss, spawned) = (daemon.rss(), daemon.spawned);
    daemon.stop();
    (
        at.saturating_duration_since(spawned),
        at.saturating_duration_since(acked),
        rss,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sample_path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/plex-samples/webhook/episode_legacy-thetvdb_media.resume_owner-id1.json"
    ));
    let (Ok(text), Some(catalogue)) = (
        std::fs::read_to_string(&sample_path),
        support::real_catalogue(),
    ) else {
        eprintln!("needs ../shared/plex-samples and ../shared/matching beside the checkout");
        std::process::exit(2);
    };
    let sample: Value = serde_json::from_str(&text).unwrap();
    let runs = env_usize("BENCH_RUNS", 3).max(1);
    println!(
        "first-start benchmark ({} cores, load average {} before the run): {} catalogue shows, {runs} runs each",
        cores(),
        load_average(),
        catalogue.len() + 1
    );
    for busy in [false, true] {
        let _load = busy.then(|| Busy::start(cores()));
        for (label, bin) in support::binaries() {
            let mut spawn = Vec::new();
            let mut ack = Vec::new();
            let mut rss = Vec::new();
            for _ in 0..runs {
                let (s, a, r) = first_start(&bin, &sample, &catalogue).await;
                spawn.push(s);
                ack.push(a);
                rss.push(r);
            }
            spawn.sort();
            ack.sort();
            println!(
                "  {} {label:<3}  start → play at the tracker: median {} (max {}); its 200 → tracker: median {} (max {}); RSS then {}",
                if busy { "cores busy" } else { "idle      " },
                ms(spawn[runs / 2]),
                ms(spawn[runs - 1]),
                ms(ack[runs / 2]),
                ms(ack[runs - 1]),
                support::mb(rss.iter().sum::<u64>() / runs as u64),
            );
        }
    }
    println!("  load average after: {}", load_average());
}
