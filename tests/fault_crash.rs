//! Crash soak: the real binary is SIGKILLed at random moments while webhooks arrive at a steady
//! rate and a backfill reads history from the fake Plex; it is restarted each time. At the end
//! every webhook that got a 200 is a play in the store, the fake tracker holds every watched
//! episode with its effect applied exactly once (one idempotency key per episode, every key
//! applied once), and neither the outbox nor the dead letter holds anything.
//!
//! CI runs a bounded form (5 kills, 200 webhooks, 150 history rows). The long form:
//!
//! ```sh
//! PLEXSYNC_SOAK_KILLS=25 PLEXSYNC_SOAK_WEBHOOKS=3000 PLEXSYNC_SOAK_ROWS=1000 \
//!   cargo test --release --test fault_crash -- --nocapture
//! ```
//!
//! (`scripts/crash-soak.sh` runs exactly that.) The kill moments come from a seeded xorshift
//! RNG; the seed is printed and `PLEXSYNC_SOAK_SEED=<n>` replays a run's schedule.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::daemon::{self, Daemon};
use support::plex::{FakePlex, FakeShow, HistoryFixture, TOKEN};
use support::tracker::{EPISODES_PER_SEASON, FakeTracker, SEASONS};
use support::{multipart, sample_json, samples};

const LEGACY: &str = "webhook/episode_legacy-thetvdb_media.resume_owner-id1.json";
/// 2020-04-04T01:15:56Z.
const VIEWED: i64 = 1_585_962_956;
/// Distinct (season, episode) pairs the fake tracker knows per show.
const PER_SHOW: usize = (SEASONS * EPISODES_PER_SEASON) as usize;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: no crate needed, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Webhook `i` → (show index, season, episode): distinct per webhook.
fn episode_of(i: usize) -> (usize, u32, u32) {
    let j = i % PER_SHOW;
    (
        i / PER_SHOW,
        (j / EPISODES_PER_SEASON as usize) as u32 + 1,
        (j % EPISODES_PER_SEASON as usize) as u32 + 1,
    )
}

fn show_rating_key(k: usize) -> String {
    format!("{}", 70_000 + k)
}

fn show_tvdb(k: usize) -> u64 {
    500_000 + k as u64
}

fn show_title(k: usize) -> String {
    format!("Soak Show {k}")
}

fn webhook(base: &Value, i: usize) -> Value {
    let (k, s, e) = episode_of(i);
    let tvdb = show_tvdb(k);
    let mut p = base.clone();
    p["event"] = json!("media.scrobble");
    let m = &mut p["Metadata"];
    m["grandparentRatingKey"] = json!(show_rating_key(k));
    m["grandparentKey"] = json!(format!("/library/metadata/{}", show_rating_key(k)));
    m["parentRatingKey"] = json!(format!("{}{s:03}", 70_000 + k));
    m["ratingKey"] = json!(format!("{}{s:03}{e:03}", 70_000 + k));
    m["key"] = json!(format!("/library/metadata/{}{s:03}{e:03}", 70_000 + k));
    m["grandparentGuid"] = json!(format!("com.plexapp.agents.thetvdb://{tvdb}?lang=en"));
    m["parentGuid"] = json!(format!("com.plexapp.agents.thetvdb://{tvdb}/{s}?lang=en"));
    m["guid"] = json!(format!(
        "com.plexapp.agents.thetvdb://{tvdb}/{s}/{e}?lang=en"
    ));
    m["grandparentTitle"] = json!(show_title(k));
    m["parentIndex"] = json!(s);
    m["index"] = json!(e);
    m["lastViewedAt"] = json!(VIEWED + i as i64);
    p
}

fn history_row(n: u32) -> HistoryFixture {
    HistoryFixture {
        history_key: format!("/status/sessions/history/{n}"),
        rating_key: Some(format!("{}", 60_000 + n)),
        show_rating_key: Some("56850".into()),
        grandparent_title: "Be Cool, Scooby-Doo!".into(),
        season: 1 + n / EPISODES_PER_SEASON,
        episode: 1 + n % EPISODES_PER_SEASON,
        viewed_at: VIEWED + n as i64 * 10,
        account_id: 1,
    }
}

#[derive(Default)]
struct Outcome {
    /// Webhook index → the answer's body, for every 200.
    acked: BTreeMap<usize, String>,
    /// Webhooks that got no answer (daemon dead) or a 503.
    unacked: usize,
    /// Anything else: a failure of the test.
    unexpected: Vec<(usize, u16, String)>,
}

async fn start_backfill(d: &Daemon) {
    let body = json!({"since": "2000-01-01"}).to_string().into_bytes();
    // 409 while one runs is fine; the point is that one is running when the next kill comes.
    let _ = plexsync::client::request(&d.socket(), "POST", "/api/backfill", Some(body)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_acknowledged_play_and_applies_each_once() {
    if samples().is_none() {
        return;
    }
    let kills = env_num("PLEXSYNC_SOAK_KILLS", 5);
    let n = env_num("PLEXSYNC_SOAK_WEBHOOKS", 200) as usize;
    let rows = env_num("PLEXSYNC_SOAK_ROWS", 150).min(PER_SHOW as u64) as u32;
    let interval = env_num("PLEXSYNC_SOAK_INTERVAL_MS", 12);
    let seed = env_num(
        "PLEXSYNC_SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    )
    .max(1);
    println!(
        "crash soak: PLEXSYNC_SOAK_SEED={seed} kills={kills} webhooks={n} rows={rows} interval={interval}ms"
    );
    let mut rng = Rng(seed);
    let t0 = std::time::Instant::now();

    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let shows = n.div_ceil(PER_SHOW);
    let mut plex_shows = vec![FakeShow {
        rating_key: "56850".into(),
        guid: "com.plexapp.agents.thetvdb://301376?lang=en".into(),
        title: "Be Cool, Scooby-Doo!".into(),
        year: 2015,
        guids: vec![],
    }];
    let mut catalogue = vec![
        json!({"id": "scooby", "title": "Be Cool, Scooby-Doo!", "year": 2015, "tvdb_id": 301376}),
    ];
    for k in 0..shows {
        plex_shows.push(FakeShow {
            rating_key: show_rating_key(k),
            guid: format!("com.plexapp.agents.thetvdb://{}?lang=en", show_tvdb(k)),
            title: show_title(k),
            year: 2015,
            guids: vec![],
        });
        catalogue.push(json!({"id": format!("w{k}"), "title": show_title(k), "year": 2015, "tvdb_id": show_tvdb(k)}));
    }
    let plex = FakePlex::start(plex_shows).await;
    for r in 0..rows {
        plex.push_history(history_row(r));
    }
    // Slow pages, so a backfill (and the start-up poll) is often mid-way when the kill comes.
    plex.state.lock().unwrap().history_delay = Duration::from_millis(120);
    let tracker = FakeTracker::start(catalogue).await;
    let poll = "[poll]\nschedule = \"0 0 0 1 1 *\"\ninitial_lookback = \"36500d\"\nretry_backoff = \"200ms\"\nlibrary_scan = false\n";
    let cfg_text = daemon::config(&plex.url(), &tracker.url(), poll).replace(
        "[server]\n",
        "[server]\nwebhook_rate_limit = 100000\nwebhook_rate_burst = 100000\n",
    );
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let out = daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN));
    assert!(out.status.success());
    let mut d = Daemon::start(dir.path(), &cfg_text).await;
    start_backfill(&d).await;

    // Two posters share the webhooks at a steady rate; the URL changes with each restart.
    let url = Arc::new(Mutex::new(d.webhook_url.clone()));
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let base = sample_json(LEGACY);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut posters = Vec::new();
    for lane in 0..2usize {
        let (url, outcome, base, http) = (url.clone(), outcome.clone(), base.clone(), http.clone());
        posters.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(interval * 2));
            for i in (lane..n).step_by(2) {
                tick.tick().await;
                let (ct, body) = multipart(&webhook(&base, i), None);
                let target = url.lock().unwrap().clone();
                let r = http
                    .post(&target)
                    .header("content-type", ct)
                    .body(body)
                    .send()
                    .await;
                let answer = match r {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        Some((s, r.text().await))
                    }
                    Err(_) => None,
                };
                let mut o = outcome.lock().unwrap();
                match answer {
                    Some((200, Ok(text))) => {
                        o.acked.insert(i, text);
                    }
                    // A 200 whose body was cut by the kill never reached Plex as an answer.
                    Some((200, Err(_))) | Some((503, _)) | None => o.unacked += 1,
                    Some((s, text)) => o.unexpected.push((i, s, text.unwrap_or_default())),
                }
            }
        }));
    }

    // The killer: random gaps sized so the kills spread over the posting time.
    let span = (n as u64 * interval).max(1000);
    let max_gap = (2 * span / kills.max(1)).max(200);
    for k in 0..kills {
        let gap = rng.range(50, max_gap);
        tokio::time::sleep(Duration::from_millis(gap)).await;
        d.kill();
        let down = rng.range(0, 150);
        tokio::time::sleep(Duration::from_millis(down)).await;
        d.restart().await;
        *url.lock().unwrap() = d.webhook_url.clone();
        println!("kill {}/{kills} after {gap} ms, down {down} ms", k + 1);
        start_backfill(&d).await;
    }
    for p in posters {
        p.await.unwrap();
    }
    println!("posting and kills done after {:?}", t0.elapsed());

    // Let the last backfill run to its end, unhurried.
    plex.state.lock().unwrap().history_delay = Duration::ZERO;
    let outcome = std::mem::take(&mut *outcome.lock().unwrap());
    assert!(
        outcome.unexpected.is_empty(),
        "unexpected answers: {:?}",
        outcome.unexpected
    );
    println!(
        "webhooks: {} acknowledged, {} not (daemon down or 503)",
        outcome.acked.len(),
        outcome.unacked
    );
    assert!(!outcome.acked.is_empty(), "some webhooks were acknowledged");
    // One whole backfill after the last kill: wait for the running one, then run one more.
    let mut complete = false;
    for _ in 0..2 {
        start_backfill(&d).await;
        for _ in 0..600 {
            let b = d.api("GET", "/api/backfill").await;
            if b["running"] == false {
                complete = b["error"].is_null() && b["rows_read"].as_u64() == Some(rows as u64);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(
        complete,
        "a backfill ran to its end after the last kill (seed {seed})"
    );

    println!("backfill complete after {:?}", t0.elapsed());

    // Every acknowledged webhook and every history row reach the tracker.
    let mut expected: BTreeSet<(String, u32, u32)> = outcome
        .acked
        .keys()
        .map(|&i| {
            let (k, s, e) = episode_of(i);
            (format!("w{k}"), s, e)
        })
        .collect();
    for r in 0..rows {
        let h = history_row(r);
        expected.insert(("scooby".into(), h.season, h.episode));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let w = tracker.watched();
        let missing = expected.iter().filter(|k| !w.contains_key(*k)).count();
        let st = d.status().await;
        let c = &st["counts"];
        if missing == 0 && c["outbox_items"] == 0 && c["pending_resolution"] == 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{missing} acknowledged episodes never reached the tracker; status {st}\n(seed {seed})"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    println!("tracker caught up after {:?}", t0.elapsed());

    // The store holds a play for every acknowledged webhook (activity rows are written in the
    // same transaction as the play).
    let mut stored: HashSet<(String, u64, u64)> = HashSet::new();
    for page in 1.. {
        let path = format!("/api/activity?source=webhook&per_page=500&page={page}");
        let act = d.api("GET", &path).await;
        let items = act["items"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        stored.extend(items.iter().filter(|a| a["play_id"].is_u64()).map(|a| {
            (
                a["show"].as_str().unwrap_or("").to_string(),
                a["season"].as_u64().unwrap_or(0),
                a["episode"].as_u64().unwrap_or(0),
            )
        }));
    }
    for (&i, body) in &outcome.acked {
        let (k, s, e) = episode_of(i);
        assert!(
            body.contains("journaled as play"),
            "webhook {i}: {body} (seed {seed})"
        );
        assert!(
            stored.contains(&(show_title(k), s as u64, e as u64)),
            "webhook {i} got a 200 but is not in the store (seed {seed})"
        );
    }

    // Exactly once: each episode went out under one idempotency key, and each key was applied
    // once (a resend after a kill is answered from the key's first reply).
    let mut key_of: HashMap<(String, u64, u64), String> = HashMap::new();
    let mut keys = HashSet::new();
    for p in tracker.posts() {
        let Ok(body) = serde_json::from_slice::<Value>(&p.body) else {
            continue; // cut off mid-send by a kill; never applied
        };
        let key = p.header("idempotency-key").unwrap().to_string();
        let show = p.path.split('/').nth(4).unwrap_or("").to_string();
        keys.insert(key.clone());
        for e in body["episodes"].as_array().unwrap() {
            let ep = (
                show.clone(),
                e["season"].as_u64().unwrap(),
                e["episode"].as_u64().unwrap(),
            );
            if let Some(k) = key_of.insert(ep.clone(), key.clone()) {
                assert_eq!(
                    k, key,
                    "episode {ep:?} was sent in two batches (seed {seed})"
                );
            }
        }
    }
    let watched = tracker.watched();
    assert_eq!(
        tracker.applied(),
        keys.len(),
        "every batch applied exactly once (seed {seed})"
    );
    for k in watched.keys() {
        let ok = k.0 == "scooby" || {
            // Only webhooks that were posted (acknowledged or not) may be there.
            k.0.strip_prefix('w')
                .and_then(|s| s.parse::<usize>().ok())
                .is_some_and(|show| show < shows)
        };
        assert!(ok, "unexpected episode at the tracker: {k:?}");
    }
    assert!(watched.len() >= expected.len());
    assert!(watched.len() <= n + rows as usize);

    // Clean stop, then the store read offline: nothing left in the outbox or dead letter.
    assert_eq!(d.stop(), Some(0));
    let out = d.cli(&["status", "--json"], None);
    assert!(
        matches!(out.status.code(), Some(0 | 2)), // 2: health has an error (not running)
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &st["counts"];
    assert_eq!(c["outbox_items"], 0, "{st}");
    assert_eq!(c["batches"], 0, "{st}");
    assert_eq!(c["dead_letters"], 0, "{st}");
    assert_eq!(c["conflicts"], 0, "{st}");
    assert_eq!(c["pending_resolution"], 0, "{st}");
    assert_eq!(c["watched"].as_u64(), Some(watched.len() as u64), "{st}");
    let journal = c["journal"].as_u64().unwrap();
    assert!(
        journal >= (outcome.acked.len() + rows as usize) as u64,
        "journal {journal}: every acknowledged play and every history row"
    );
    assert!(journal <= (n + rows as usize) as u64);
    let out = d.cli(&["outbox", "list", "--json"], None);
    assert!(out.status.success());
    let ob: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ob["dead_letters"].as_array().map(Vec::len), Some(0), "{ob}");
    // Offline, the activity log agrees: no webhook failed (an unanswered one leaves no row).
    let out = d.cli(&["activity", "--json", "--status", "failed"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed_webhooks: Vec<&Value> = failed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["source"] == "webhook")
        .collect();
    assert!(failed_webhooks.is_empty(), "{failed_webhooks:?}");
    println!(
        "end state: {} journaled, {} watched at the tracker, {} batches applied, {} posts",
        journal,
        watched.len(),
        tracker.applied(),
        tracker.posts().len()
    );
}
