//! Inbound protection: per-client rate limits on the webhook route and the admin API (429 with
//! Retry-After, before the secret check), the unix socket unaffected, limits reloadable. The
//! daemon runs in process (support/inproc.rs); its reload is the one SIGHUP triggers.

mod support;

use support::daemon;
use support::inproc::InProc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_the_limit_gets_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let limits = "webhook_rate_limit = 60\nwebhook_rate_burst = 3\nadmin_rate_limit = 60\nadmin_rate_burst = 2\n";
    let cfg_text = daemon::config(
        "http://127.0.0.1:9",
        "http://127.0.0.1:9/api",
        "[poll]\nenabled = false\n",
    )
    .replace("[server]\n", &format!("[server]\n{limits}"));
    let mut d = InProc::start(dir.path(), &cfg_text).await;
    let http = reqwest::Client::new();
    // Guessing secrets counts: three wrong guesses use up the burst…
    let guess = format!("http://{}/webhook/guess", d.addr);
    for _ in 0..3 {
        let r = http.post(&guess).body("{}").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404);
    }
    // …and the right secret is then refused too, until a token comes back.
    let r = http
        .post(&d.webhook_url)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&after), "one token a second: {after}");
    assert!(r.text().await.unwrap().contains("too many requests"));
    // The admin API has its own bucket.
    let status = format!("http://{}/api/status", d.addr);
    let token = d.admin_token().await;
    for _ in 0..2 {
        assert_eq!(
            http.get(&status)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
            200
        );
    }
    assert_eq!(
        http.get(&status)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        429
    );
    // The CLI's unix socket is not limited; /healthz neither.
    for _ in 0..5 {
        d.status().await;
    }
    let health = format!("http://{}/healthz", d.addr);
    assert_eq!(
        http.get(&health).send().await.unwrap().status().as_u16(),
        200
    );
    // One warning per limited client, not one per request.
    let warned = d
        .log()
        .lines()
        .filter(|l| l.contains("over the rate limit"))
        .count();
    assert_eq!(warned, 2, "{}", d.log());

    // Limits reload: 0 turns them off.
    let off = cfg_text.replace("webhook_rate_limit = 60", "webhook_rate_limit = 0");
    std::fs::write(&d.config, &off).unwrap();
    d.reload();
    support::eventually("the reload", std::time::Duration::from_secs(10), || {
        d.log().contains("configuration reloaded").then_some(())
    })
    .await;
    for _ in 0..10 {
        let r = http.post(&guess).body("{}").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404);
    }
    assert_eq!(d.stop().await, Some(0));
}
