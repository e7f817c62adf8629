//! The admin surface as an attacker meets it (issue 10): every request over TCP needs a
//! credential — through a reverse proxy on the same host and straight from loopback alike —
//! browser sessions follow the CSRF rules, a DNS-rebound Host is refused while listening on
//! loopback, forwarded addresses are believed only from trusted proxies (two clients behind
//! the proxy get two rate-limit buckets), a secret the plugins would refuse is never stored,
//! and `webhook-url` never prints a wildcard address.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use support::daemon::{self, Daemon};
use support::plex::TOKEN;
use support::{NEW_AGENT_SCROBBLE, multipart, sample_json, samples};
use tokio::net::TcpListener;

/// A reverse proxy like `nginx proxy_pass http://127.0.0.1:PORT` with
/// `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for`: it forwards every request
/// to the daemon from its own loopback address. The outside client's address, which a real
/// proxy takes from its socket, comes from the test's `x-test-client` header.
struct Proxy {
    addr: SocketAddr,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let http = http.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let http = http.clone();
                        let upstream = upstream.clone();
                        async move { Ok::<_, Infallible>(forward(&http, &upstream, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Proxy { addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn forward(
    http: &reqwest::Client,
    upstream: &str,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut out = http.request(parts.method.clone(), format!("http://{upstream}{path}"));
    let mut client = "127.0.0.1".to_string();
    for (k, v) in &parts.headers {
        match k.as_str() {
            "host" | "connection" | "content-length" => {}
            "x-test-client" => client = v.to_str().unwrap().to_string(),
            _ => out = out.header(k, v),
        }
    }
    let xff = match parts.headers.get("x-forwarded-for") {
        Some(prev) => format!("{}, {client}", prev.to_str().unwrap()),
        None => client,
    };
    let r = out
        .header("x-forwarded-for", xff)
        .body(body)
        .send()
        .await
        .unwrap();
    let mut resp = Response::builder().status(r.status().as_u16());
    for (k, v) in r.headers() {
        resp = resp.header(k, v);
    }
    resp.body(Full::new(r.bytes().await.unwrap())).unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A daemon holding one conflict (The Office), with the Plex token stored, and its fakes.
struct Setup {
    d: Daemon,
    conflict: String,
    _plex: support::plex::FakePlex,
    _tracker: support::tracker::FakeTracker,
}

async fn with_conflict(dir: &std::path::Path, extra_server: &str) -> Setup {
    let (plex, tracker, cfg_text) = support::office_conflict(dir).await;
    let cfg_text = cfg_text.replace("[server]\n", &format!("[server]\n{extra_server}"));
    std::fs::write(dir.join("plexsync.toml"), &cfg_text).unwrap();
    assert!(
        daemon::cli(
            &dir.join("plexsync.toml"),
            &["secret", "set", "plex-token"],
            Some(TOKEN)
        )
        .status
        .success()
    );
    let d = Daemon::start(dir, &cfg_text).await;
    support::accounts_read(&d).await;
    assert_eq!(
        support::post_sample(&d.webhook_url, NEW_AGENT_SCROBBLE).await,
        200
    );
    let mut conflicts = Value::Null;
    for _ in 0..1200 {
        conflicts = d.api("GET", "/api/conflicts").await;
        if conflicts["total"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let id = conflicts["items"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a conflict: {conflicts}\n{}", d.log()))
        .to_string();
    Setup {
        d,
        conflict: id,
        _plex: plex,
        _tracker: tracker,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_a_credential_through_a_proxy_and_from_loopback() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let setup = with_conflict(dir.path(), "").await;
    let (d, conflict) = (&setup.d, setup.conflict.clone());
    let proxy = Proxy::start(d.addr.clone()).await;
    let http = reqwest::Client::new();
    let direct = |p: &str| format!("http://{}{p}", d.addr);
    let attempts: Vec<(&str, String, &str)> = vec![
        ("GET", "/api/webhook-url".into(), ""),
        ("GET", "/api/web-url".into(), ""),
        ("GET", "/api/status".into(), ""),
        (
            "PUT",
            "/api/secrets/plex-token".into(),
            "attacker-token-0001",
        ),
        (
            "PUT",
            "/api/secrets/admin-token".into(),
            "attacker-admin-token-0001",
        ),
        ("POST", "/api/backfill".into(), r#"{"since":"2020-01-01"}"#),
        ("POST", "/api/poll".into(), "{}"),
        ("POST", "/api/outbox/retry".into(), "{}"),
        (
            "POST",
            format!("/api/conflicts/{conflict}/resolve"),
            r#"{"action":"ignore"}"#,
        ),
        ("GET", "/metrics".into(), ""),
        ("GET", "/api/secrets/sealed".into(), ""),
    ];
    for (method, path, body) in &attempts {
        for (channel, url) in [("proxy", proxy.url(path)), ("loopback", direct(path))] {
            for bearer in [None, Some("not-the-admin-token")] {
                let mut req = http
                    .request(method.parse().unwrap(), &url)
                    .header("content-type", "application/json")
                    .body(body.to_string());
                if let Some(b) = bearer {
                    req = req.bearer_auth(b);
                }
                let r = req.send().await.unwrap();
                assert_eq!(
                    r.status().as_u16(),
                    401,
                    "{method} {path} via {channel} with {bearer:?}"
                );
                let text = r.text().await.unwrap();
                assert!(!text.contains("/webhook/"), "{text}");
            }
        }
    }
    // Nothing changed: the conflict is open, no secret was replaced, no job ran.
    assert_eq!(d.api("GET", "/api/conflicts").await["total"], 1);
    assert!(!d.log().contains("secret updated"), "{}", d.log());
    assert_eq!(d.status().await["polls"], 0);
    // /healthz stays open (for load balancers); the page itself holds no data.
    assert_eq!(
        http.get(proxy.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    // The admin token works from anywhere, for the API and /metrics.
    let token = d.admin_token().await;
    assert!(token.len() >= 32, "a generated token has 256 bits");
    for path in ["/api/status", "/metrics", "/api/webhook-url"] {
        let r = http
            .get(proxy.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    // `secret set admin-token` replaces it: the old one stops working at once.
    let new_token = "a-new-admin-token-for-scripts-42";
    let o = d.cli(&["secret", "set", "admin-token"], Some(new_token));
    assert!(o.status.success(), "{}", stderr(&o));
    let status = |t: &str| {
        http.get(direct("/api/status"))
            .bearer_auth(t.to_string())
            .send()
    };
    assert_eq!(status(&token).await.unwrap().status().as_u16(), 401);
    assert_eq!(status(new_token).await.unwrap().status().as_u16(), 200);
    // The CLI needs nothing over the 0600 socket.
    let o = d.cli(&["status"], None);
    // 2: answered, with an error in health.
    assert!(matches!(o.status.code(), Some(0 | 2)), "{}", stderr(&o));
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sessions_need_the_token_once_and_same_origin_json_after() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let setup = with_conflict(dir.path(), "").await;
    let (d, conflict) = (&setup.d, setup.conflict.clone());
    let http = reqwest::Client::new();
    let base = format!("http://{}", d.addr);
    let token = d.admin_token().await;
    let login = |origin: Option<&str>, ct: &str, body: String| {
        let mut r = http
            .post(format!("{base}/api/login"))
            .header("content-type", ct)
            .body(body);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    let good = json!({ "token": token }).to_string();
    let wrong = json!({ "token": "wrong-wrong-wrong-wrong" }).to_string();
    assert_eq!(
        login(Some(&base), "application/json", wrong)
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        login(None, "application/json", good.clone())
            .await
            .unwrap()
            .status()
            .as_u16(),
        403,
        "a login without Origin"
    );
    assert_eq!(
        login(
            Some("http://evil.example"),
            "application/json",
            good.clone()
        )
        .await
        .unwrap()
        .status()
        .as_u16(),
        403,
        "a login from another origin"
    );
    assert_eq!(
        login(Some(&base), "text/plain", good.clone())
            .await
            .unwrap()
            .status()
            .as_u16(),
        415,
        "a login that is not JSON"
    );
    let r = login(Some(&base), "application/json", good).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    assert!(!set_cookie.contains(&token), "the cookie is not the token");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    // Every other server on this host gets the cookie (browsers do not isolate cookies by
    // port), but not the page key, which only the page's origin holds: the cookie alone
    // opens nothing, not even a read, and another session's key does not fit it.
    for path in ["/api/web-url", "/api/status", "/metrics"] {
        let r = http
            .get(format!("{base}{path}"))
            .header("cookie", cookie.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} with a bare cookie");
    }
    let answer: Value = r.json().await.unwrap();
    let page_key = answer["page_key"].as_str().unwrap().to_string();
    assert!(page_key.len() >= 32, "{answer}");
    assert!(
        !cookie.contains(&page_key),
        "the cookie does not carry its page key"
    );

    let other: Value = login(
        Some(&base),
        "application/json",
        json!({ "token": token }).to_string(),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let r = http
        .get(format!("{base}/api/web-url"))
        .header("cookie", cookie.clone())
        .header("x-plexsync-page-key", other["page_key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "another session's page key");

    // Reads need the cookie and its page key.
    let get = |c: &str| {
        http.get(format!("{base}/api/status"))
            .header("cookie", c.to_string())
            .header("x-plexsync-page-key", page_key.clone())
            .send()
    };
    assert_eq!(get(&cookie).await.unwrap().status().as_u16(), 200);
    // Another server on this host may set a `plexsync_session` of its own, which the
    // browser sends first (a longer Path): ours is still found among them.
    let r = http
        .get(format!("{base}/api/status"))
        .header(
            "cookie",
            format!("plexsync_session=00.11; theirs=1; {cookie}"),
        )
        .header("x-plexsync-page-key", page_key.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "the second plexsync_session");
    // A proxy's own Basic auth passed on upstream does not hide the session.
    let r = http
        .get(format!("{base}/api/status"))
        .header("cookie", cookie.clone())
        .header("x-plexsync-page-key", page_key.clone())
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Changes need the page's own Origin and a JSON body; a cross-site fetch is refused.
    let post = |origin: Option<&str>, ct: &str, site: Option<&str>| {
        let mut r = http
            .post(format!("{base}/api/conflicts/{conflict}/resolve"))
            .header("cookie", cookie.clone())
            .header("x-plexsync-page-key", page_key.clone())
            .header("content-type", ct)
            .body(r#"{"action":"ignore"}"#);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(s) = site {
            r = r.header("sec-fetch-site", s);
        }
        r.send()
    };
    let refused: Vec<(Option<&str>, &str, Option<&str>, u16)> = vec![
        (None, "application/json", None, 403),
        (Some("http://evil.example"), "application/json", None, 403),
        (Some("null"), "application/json", None, 403),
        (Some(&base), "text/plain", None, 415),
        (Some(&base), "application/x-www-form-urlencoded", None, 415),
        (Some(&base), "application/json", Some("cross-site"), 403),
        (Some(&base), "application/json", Some("same-site"), 403),
    ];
    for (origin, ct, site, status) in refused {
        let r = post(origin, ct, site).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{origin:?} {ct} {site:?}");
    }
    assert_eq!(d.api("GET", "/api/conflicts").await["total"], 1);
    // A preflight gets no CORS permission.
    let r = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/api/conflicts/{conflict}/resolve"),
        )
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!r.status().is_success());
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // The page's own request goes through.
    let r = post(Some(&base), "application/json", Some("same-origin"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    assert_eq!(d.api("GET", "/api/conflicts").await["total"], 0);

    // A new admin token ends every session.
    let o = d.cli(
        &["secret", "set", "admin-token"],
        Some("another-admin-token-7777"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(get(&cookie).await.unwrap().status().as_u16(), 401);
    // Logging out follows the browser rules: another site's page cannot log the user out.
    let logout = |origin: Option<&str>, ct: &str, site: Option<&str>| {
        let mut r = http
            .post(format!("{base}/api/logout"))
            .header("cookie", cookie.clone())
            .header("content-type", ct);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(s) = site {
            r = r.header("sec-fetch-site", s);
        }
        r.send()
    };
    let refused: Vec<(Option<&str>, &str, Option<&str>, u16)> = vec![
        (None, "application/json", None, 403),
        (Some("http://evil.example"), "application/json", None, 403),
        (Some(&base), "text/plain", None, 415),
        (Some(&base), "application/json", Some("same-site"), 403),
    ];
    for (origin, ct, site, status) in refused {
        let r = logout(origin, ct, site).await.unwrap();
        assert_eq!(
            r.status().as_u16(),
            status,
            "logout {origin:?} {ct} {site:?}"
        );
        assert!(r.headers().get("set-cookie").is_none(), "{origin:?}");
    }
    // The page's own logout clears the cookie.
    let r = logout(Some(&base), "application/json", Some("same-origin"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_host_name_is_refused_on_loopback_but_webhooks_pass() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let setup = with_conflict(dir.path(), "").await;
    let d = &setup.d;
    let token = d.admin_token().await;
    let http = reqwest::Client::new();
    let port = d.addr.rsplit(':').next().unwrap().to_string();
    let get = |path: &str, host: String| {
        http.get(format!("http://{}{path}", d.addr))
            .header("host", host)
            .bearer_auth(&token)
            .send()
    };
    for path in ["/", "/api/status", "/healthz", "/metrics"] {
        for host in ["evil.example".to_string(), format!("evil.example:{port}")] {
            let r = get(path, host.clone()).await.unwrap();
            assert_eq!(r.status().as_u16(), 421, "{path} for {host}");
        }
        for host in [
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            "localhost".into(),
        ] {
            let r = get(path, host.clone()).await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{path} for {host}");
        }
    }
    // The webhook is authenticated by its secret, whatever name Plex used.
    let (ct, body) = multipart(&sample_json(NEW_AGENT_SCROBBLE), None);
    let r = http
        .post(&d.webhook_url)
        .header("host", "plex-reaches-me-as.example:32400")
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// One webhook through the proxy as `client`; the status.
async fn hook_via(http: &reqwest::Client, url: &str, client: &str) -> u16 {
    let (ct, body) = multipart(&sample_json(NEW_AGENT_SCROBBLE), None);
    http.post(url)
        .header("content-type", ct)
        .header("x-test-client", client)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_client_has_its_own_bucket() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let limits = "webhook_rate_limit = 60\nwebhook_rate_burst = 10\n";
    let mut setup = with_conflict(
        dir.path(),
        &format!("{limits}trusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]\n"),
    )
    .await;
    let d = &mut setup.d;
    let proxy = Proxy::start(d.addr.clone()).await;
    let http = reqwest::Client::new();
    let webhook_path = d
        .webhook_url
        .strip_prefix(&format!("http://{}", d.addr))
        .unwrap()
        .to_string();
    let flood = |n: usize| {
        let http = http.clone();
        let url = proxy.url("/webhook/not-the-secret");
        async move {
            let mut limited = 0;
            for _ in 0..n {
                let r = http
                    .post(&url)
                    .header("x-test-client", "203.0.113.9")
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                if r.status().as_u16() == 429 {
                    limited += 1;
                }
            }
            limited
        }
    };
    // One client hammers a wrong path until it is limited…
    assert!(flood(40).await > 0, "the flooding client is limited");
    // …while Plex, another client behind the same proxy, is served every time.
    let plex = proxy.url(&webhook_path);
    for i in 0..10 {
        assert_eq!(
            hook_via(&http, &plex, "198.51.100.7").await,
            200,
            "webhook {i}"
        );
    }
    // Activity rows and logs name the real clients.
    let rows = d.activity().await;
    assert!(
        rows.iter()
            .any(|r| r["source"] == "webhook" && r["client"] == "198.51.100.7"),
        "{rows:?}"
    );
    assert!(
        d.log().contains("client=203.0.113.9"),
        "the limit warning names the client"
    );

    // Without trusted_proxies the header is not believed: everyone behind the proxy is one
    // client, and the flood limits Plex too (what the setting exists for).
    let untrusted = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("trusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]\n", "");
    std::fs::write(&d.config, untrusted).unwrap();
    d.restart().await;
    let proxy = Proxy::start(d.addr.clone()).await;
    let webhook_path = d
        .webhook_url
        .strip_prefix(&format!("http://{}", d.addr))
        .unwrap()
        .to_string();
    let url = proxy.url("/webhook/not-the-secret");
    let mut flooded = 0;
    for _ in 0..40 {
        let r = http
            .post(&url)
            .header("x-test-client", "203.0.113.9")
            .header("x-forwarded-for", "198.51.100.7")
            .body("{}")
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 429 {
            flooded += 1;
        }
    }
    assert!(flooded > 0);
    let plex = proxy.url(&webhook_path);
    let mut refused = 0;
    for _ in 0..10 {
        if hook_via(&http, &plex, "198.51.100.7").await == 429 {
            refused += 1;
        }
    }
    assert!(refused > 0, "one shared bucket when no proxy is trusted");
    assert!(
        !d.log().contains("client=198.51.100.7") || d.log().contains("client=127.0.0.1"),
        "a forged X-Forwarded-For is not believed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_secret_is_never_stored_and_check_reads_the_stored_ones() {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = support::plex::FakePlex::start(vec![]).await;
    let tracker = support::tracker::FakeTracker::start(vec![]).await;
    let cfg_text = daemon::config(&plex.url(), &tracker.url(), "[poll]\nenabled = false\n");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let mut d = Daemon::start(dir.path(), &cfg_text).await;
    for (name, value) in [
        ("tracker-key", "abc\ndef"),
        ("plex-token", "tok\r\nX-Injected: 1"),
        ("tmdb-key", "k\u{1b}[2J"),
        ("admin-token", "short"),
    ] {
        let err = plexsync::client::request(
            &d.socket(),
            "PUT",
            &format!("/api/secrets/{name}"),
            Some(value.as_bytes().to_vec()),
        )
        .await
        .expect_err("refused");
        // The client's message is the API's reason; the status travels beside it.
        let plexsync::client::ClientError::Http { status, body: msg } = err else {
            panic!("{name}: {err}");
        };
        assert_eq!(status, 400, "{name}: {msg}");
        assert!(msg.contains(name), "the error names the secret: {msg}");
    }
    let st = d.status().await;
    assert_eq!(st["tracker_key_set"], false);
    assert_eq!(st["plex_token_set"], false);
    // The daemon still restarts, and `check` agrees with it.
    d.restart().await;
    assert_eq!(d.stop(), Some(0));
    let o = daemon::cli(&cfg, &["check"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("stored secret(s) checked"),
        "{}",
        stdout(&o)
    );

    // Offline, the same rules: exit 1, a message naming the secret, nothing stored.
    let o = daemon::cli(&cfg, &["secret", "set", "tracker-key"], Some("abc\ndef"));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("tracker-key"), "{}", stderr(&o));
    assert!(stderr(&o).contains("control character"), "{}", stderr(&o));
    let o = daemon::cli(&cfg, &["secret", "set", "tracker-key"], Some("good-key-1"));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = daemon::cli(&cfg, &["status", "--json"], None);
    // 2: answered; a stopped daemon is an error in health.
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // `check` reads the stored secrets: under another key file they cannot open, and the
    // daemon would not start, so check does not say OK.
    another_key_file(dir.path());
    let o = daemon::cli(&cfg, &["check"], None);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("stored secrets"), "{}", stderr(&o));
}

/// A running daemon holds its store alone (one `fdatasync` a commit), so `check` gets the
/// stored secrets sealed over the 0600 socket and opens them with the key file here. The same
/// request with the admin token over TCP is refused, and the socket's answer holds no value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_a_running_daemons_secrets_sealed_and_over_the_socket_only() {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = support::plex::FakePlex::start(vec![]).await;
    let tracker = support::tracker::FakeTracker::start(vec![]).await;
    let cfg_text = daemon::config(&plex.url(), &tracker.url(), "[poll]\nenabled = false\n");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let mut d = Daemon::start(dir.path(), &cfg_text).await;
    const VALUE: &str = "trk-SEALED-5c1e9a7b3d2f4e60";
    let o = d.cli(&["secret", "set", "tracker-key"], Some(VALUE));
    assert!(o.status.success(), "{}", stderr(&o));

    // The store is the daemon's alone.
    assert!(matches!(
        plexsync::store::Store::open_read_only(&dir.path().join("plexsync.redb")),
        Err(plexsync::store::StoreError::Locked)
    ));
    let sealed = d.api("GET", "/api/secrets/sealed").await;
    let names: Vec<&str> = sealed["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(names.contains(&"tracker-key"), "{sealed}");
    assert!(!sealed.to_string().contains(VALUE), "{sealed}");
    let o = daemon::cli(&cfg, &["check"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("OK ({} stored secret(s) checked)", names.len())),
        "{}",
        stdout(&o)
    );

    // Not over TCP, even with the admin token.
    let token = d.admin_token().await;
    let r = reqwest::Client::new()
        .get(format!("http://{}/api/secrets/sealed", d.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(!r.text().await.unwrap().contains("ciphertext"));

    // The key file here opens them, not the daemon: under another key, check says no.
    let key = another_key_file(dir.path());
    let o = daemon::cli(&cfg, &["check"], None);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("stored secrets"), "{}", stderr(&o));
    std::fs::rename(dir.path().join("saved.key"), &key).unwrap();
    assert_eq!(d.stop(), Some(0));
}

/// When the secrets cannot be had, `check` says why at once: a daemon of an earlier release
/// (no sealed route: 405, as its catch-all answers) holds the store, or the store is held with
/// `[admin] socket` off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_at_once_why_a_held_stores_secrets_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("old.sock");
    let store_path = dir.path().join("plexsync.redb");
    // A store with a secret, held by this process as a daemon would hold it.
    let held = plexsync::store::Store::open(&store_path).unwrap();
    let key = plexsync::secrets::MasterKey::load_or_create(&dir.path().join("plexsync.key"), true)
        .unwrap();
    held.put_secret(
        "tracker-key".into(),
        key.seal("tracker-key", "k-1").unwrap(),
    )
    .await
    .unwrap();
    // An earlier release's daemon on the socket.
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<Incoming>| async {
                    let mut r = Response::new(Full::new(Bytes::from_static(
                        b"method GET not allowed on /api/secrets/sealed\n",
                    )));
                    *r.status_mut() = hyper::StatusCode::METHOD_NOT_ALLOWED;
                    Ok::<_, Infallible>(r)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let base = "[server]\nlisten = \"127.0.0.1:0\"\n[plex]\nurl = \"http://127.0.0.1:9\"\n[tracker]\nurl = \"http://127.0.0.1:9\"\n[poll]\nenabled = false\n[[matchers]]\nkind = \"guid\"\n";
    let check = |admin: String| {
        let cfg = dir.path().join("plexsync.toml");
        std::fs::write(&cfg, format!("{base}[admin]\n{admin}\n")).unwrap();
        let started = std::time::Instant::now();
        let o = daemon::cli(&cfg, &["check"], None);
        (o, started.elapsed())
    };
    let (o, took) =
        tokio::task::block_in_place(|| check(format!("socket = \"{}\"", sock.display())));
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("earlier release"), "{}", stderr(&o));
    assert!(stderr(&o).contains("restart"), "{}", stderr(&o));
    assert!(took < Duration::from_secs(8), "{took:?}");
    let (o, took) = tokio::task::block_in_place(|| check("socket = \"\"".into()));
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("[admin] socket is off"),
        "{}",
        stderr(&o)
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
    drop(held);
}

/// Put the key file aside (as `saved.key`) and a valid key file of another key in its place.
fn another_key_file(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("plexsync.key");
    std::fs::rename(&key, dir.join("saved.key")).unwrap();
    std::fs::write(&key, [9u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    key
}

#[test]
fn webhook_url_never_names_a_wildcard_address() {
    let dir = tempfile::tempdir().unwrap();
    for listen in ["0.0.0.0:8750", "[::]:8750"] {
        let cfg = dir.path().join("plexsync.toml");
        std::fs::write(
            &cfg,
            daemon::config("http://127.0.0.1:1", "http://127.0.0.1:1", "").replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"{listen}\""),
            ),
        )
        .unwrap();
        for cmd in ["webhook-url", "web-url"] {
            let o = daemon::cli(&cfg, &[cmd], None);
            if o.status.success() {
                let url = stdout(&o);
                assert!(
                    !url.contains("0.0.0.0") && !url.contains("[::]"),
                    "{cmd}: {url}"
                );
                assert!(
                    url.starts_with("http://") && url.contains(":8750/"),
                    "{url}"
                );
                // Says which address it picked, and how to choose another.
                assert!(stderr(&o).contains("interface"), "{}", stderr(&o));
                assert!(stderr(&o).contains("public_url"), "{}", stderr(&o));
            } else {
                // A host with loopback only: refused with what to set.
                assert!(stderr(&o).contains("public_url"), "{}", stderr(&o));
                assert!(!stdout(&o).contains("0.0.0.0"));
            }
        }
        // With public_url, that is the URL.
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "[server]\n",
            "[server]\npublic_url = \"https://sync.example.net/\"\n",
        );
        std::fs::write(&cfg, text).unwrap();
        let o = daemon::cli(&cfg, &["webhook-url"], None);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).starts_with("https://sync.example.net/webhook/"),
            "{}",
            stdout(&o)
        );
    }
}

/// nginx's `proxy_pass http://127.0.0.1:8750;` (no URI part) passes the `public_url` prefix on:
/// the daemon serves the page, the admin API and webhooks under it as well, and sends a bare
/// prefix to its slash so the page's relative links stay under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_passes_the_public_url_prefix_on_reaches_every_route() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let port = support::reserved_port();
    let proxy = support::reverse_proxy(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "/plexsync",
        false,
    )
    .await;
    let extra = format!("public_url = \"{}/plexsync/\"\n", proxy.url());
    let (plex, tracker, cfg_text) = support::office_conflict(dir.path()).await;
    let cfg_text = cfg_text
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace("[server]\n", &format!("[server]\n{extra}"));
    std::fs::write(dir.path().join("plexsync.toml"), &cfg_text).unwrap();
    let d = Daemon::start(dir.path(), &cfg_text).await;
    let base = format!("{}/plexsync", proxy.url());
    assert!(
        d.webhook_url.starts_with(&format!("{base}/webhook/")),
        "{}",
        d.webhook_url
    );
    assert_eq!(
        support::post_sample(&d.webhook_url, NEW_AGENT_SCROBBLE).await,
        200,
        "{}",
        d.log()
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token = d.admin_token().await;
    let status = http
        .get(format!("{base}/api/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    let st: Value = status.json().await.unwrap();
    assert_eq!(st["counts"]["journal"], 1, "{st}");
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<title>"));
    let bare = http.get(&base).send().await.unwrap();
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "/plexsync/");
    // Without the prefix (a proxy that strips it) every route answers as before.
    let direct = http
        .get(format!("http://127.0.0.1:{port}/api/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    drop((plex, tracker));
}

/// Log out ends that session on the server, not only in the browser: a copy of its cookie and
/// page key opens nothing afterwards, also after a restart, while another session goes on. A
/// session cannot read the admin token (`/api/web-url`), and an auth proxy's own Bearer token
/// beside a session does not lock the page out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_ends_that_session_for_good_and_a_session_cannot_read_the_admin_token() {
    if samples().is_none() {
        return;
    }
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let mut setup = with_conflict(dir.path(), "").await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", setup.d.addr);
    let token = setup.d.admin_token().await;
    let login = || async {
        let r = http
            .post(format!("{base}/api/login"))
            .header("content-type", "application/json")
            .header("origin", &base)
            .body(json!({ "token": token }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let cookie = r.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_string();
        let key = r.json::<Value>().await.unwrap()["page_key"]
            .as_str()
            .unwrap()
            .to_string();
        (cookie, key)
    };
    let (a_cookie, a_key) = login().await;
    let (b_cookie, b_key) = login().await;
    let get = |path: &str, cookie: &str, key: &str, bearer: Option<&str>| {
        let mut r = http
            .get(format!("{base}{path}"))
            .header("cookie", cookie.to_string())
            .header("x-plexsync-page-key", key.to_string());
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        r.send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(get("/api/status", &a_cookie, &a_key, None).await.unwrap()),
        200
    );
    let r = get("/api/web-url", &a_cookie, &a_key, None).await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(!r.text().await.unwrap().contains(&token));
    assert_eq!(
        status(
            get(
                "/api/status",
                &a_cookie,
                &a_key,
                Some("eyJhbGciOiJSUzI1NiJ9.proxy.id-token")
            )
            .await
            .unwrap()
        ),
        200,
        "an auth proxy's Bearer beside a session"
    );
    assert_eq!(
        status(
            get("/api/status", "", "", Some("not-the-admin-token"))
                .await
                .unwrap()
        ),
        401,
        "a wrong Bearer alone"
    );
    let out = http
        .post(format!("{base}/api/logout"))
        .header("content-type", "application/json")
        .header("origin", &base)
        .header("cookie", a_cookie.clone())
        .header("x-plexsync-page-key", a_key.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(out.status().as_u16(), 200);
    assert_eq!(
        status(get("/api/status", &a_cookie, &a_key, None).await.unwrap()),
        401
    );
    assert_eq!(
        status(get("/api/status", &b_cookie, &b_key, None).await.unwrap()),
        200
    );
    setup.d.restart().await;
    let base = format!("http://{}", setup.d.addr);
    for (cookie, key, want) in [(&a_cookie, &a_key, 401), (&b_cookie, &b_key, 200)] {
        let r = http
            .get(format!("{base}/api/status"))
            .header("cookie", cookie.clone())
            .header("x-plexsync-page-key", key.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "after a restart");
    }
}
