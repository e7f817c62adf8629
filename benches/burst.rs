//! Burst benchmark (issue 15): 1,000 real-shaped webhooks over 200 shows (the legacy-agent
//! capture from ../shared/plex-samples made a `media.scrobble`, show `i % 200`, a distinct
//! episode each) posted to the release daemon, once one at a time and once over 16 keep-alive
//! connections, each on a fresh store; then lone plays, one every 500 ms.
//!
//! Prints what the tracker feels: the watched POSTs the burst took (and that every play arrived
//! once), when the last one arrived after the last 200 against the target of
//! max(1 s, 25 % of the burst), and a lone play's time from its 200 to the tracker.
//!
//! Run: `cargo bench --bench burst` (env: BENCH_WEBHOOKS, BENCH_SHOWS, BENCH_LONE).

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use support::{Daemon, cores, env_usize, load, load_average, ms};

const BOUNDARY: &str = "------------------------e9b6fd531fc73c30";
const CONTENT_TYPE: &str = "multipart/form-data; boundary=------------------------e9b6fd531fc73c30";

/// Webhook `i`: show `i % shows` (ratingKey 10000 + show, tvdb 500000 + show in the fakes),
/// episode `i / shows` of it.
fn body_for(sample: &Value, i: usize, shows: usize) -> Bytes {
    let show = i % shows;
    let (season, episode) = (1 + (i / shows) / 25, 1 + (i / shows) % 25);
    let rk = support::show_rating_key(show);
    let mut p = sample.clone();
    p["event"] = json!("media.scrobble");
    let m = &mut p["Metadata"];
    m["parentIndex"] = json!(season);
    m["index"] = json!(episode);
    m["ratingKey"] = json!(format!("{}", 2_000_000 + i));
    m["grandparentRatingKey"] = json!(rk.to_string());
    m["grandparentKey"] = json!(format!("/library/metadata/{rk}"));
    m["grandparentTitle"] = json!(format!("Show {show}"));
    m["year"] = json!(2000 + show % 20);
    m["guid"] = json!(format!(
        "com.plexapp.agents.thetvdb://{}/{season}/{episode}?lang=en",
        500_000 + show
    ));
    m["grandparentGuid"] = json!(format!(
        "com.plexapp.agents.thetvdb://{}?lang=en",
        500_000 + show
    ));
    let mut out = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"payload\"\r\nContent-Type: application/json\r\n\r\n").into_bytes();
    out.extend_from_slice(p.to_string().as_bytes());
    out.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    Bytes::from(out)
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
    let n = env_usize("BENCH_WEBHOOKS", 1_000);
    let shows = env_usize("BENCH_SHOWS", 200);
    let lone = env_usize("BENCH_LONE", 10);
    println!(
        "burst benchmark ({} cores, load average {} before the run): {n} webhooks over {shows} shows",
        cores(),
        load_average()
    );
    for conc in [1, 16] {
        let fake = support::fake(0, shows).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = support::config(&fake, "webhook_rate_limit = 0", "enabled = false");
        let daemon = Daemon::start(dir.path(), &cfg).await;
        let status = daemon.status().await;
        let url: hyper::Uri = status["webhook_url"].as_str().unwrap().parse().unwrap();
        // Let the catalogue load first: the burst measures exports, not the first start.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let bodies = Arc::new(
            (0..n)
                .map(|i| body_for(&sample, i, shows))
                .collect::<Vec<_>>(),
        );
        let t0 = Instant::now();
        let r = load(&url, CONTENT_TYPE, bodies, conc).await;
        let last_200 = Instant::now();
        let burst = last_200 - t0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while fake.distinct() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let after = fake.last_post_at().saturating_duration_since(last_200);
        let target = Duration::from_secs(1).max(burst / 4);
        let posts = fake.posts();
        println!(
            "  {conc:>2} at a time       {} webhooks ({} errors) in {}; {} distinct episodes at the tracker in {posts} requests ({} episodes sent); last arrival {} after the last 200 (target ≤ {}: {})",
            r.requests,
            r.errors,
            ms(burst),
            fake.distinct(),
            fake.episodes(),
            ms(after),
            ms(target),
            if after <= target { "met" } else { "MISSED" }
        );
        if conc == 1 {
            // Lone plays on the idle daemon: 200 → at the tracker.
            let mut lat = Vec::new();
            for k in 0..lone {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let before = fake.posts();
                let body = Arc::new(vec![body_for(&sample, n + k * shows, shows)]);
                let r = load(&url, CONTENT_TYPE, body, 1).await;
                let answered = Instant::now();
                let deadline = Instant::now() + Duration::from_secs(10);
                while fake.posts() == before && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                if r.errors == 0 && fake.posts() > before {
                    lat.push(fake.last_post_at().saturating_duration_since(answered));
                }
            }
            lat.sort();
            if !lat.is_empty() {
                println!(
                    "  lone play           {} plays, one request each ({} requests): 200 → tracker median {}, max {}",
                    lat.len(),
                    fake.posts() - posts,
                    ms(lat[lat.len() / 2]),
                    ms(*lat.last().unwrap())
                );
            }
        }
        daemon.stop();
    }
}
