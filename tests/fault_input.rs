//! Fault test: a corpus of malformed and hostile webhook requests (truncated multipart, two
//! boundaries, huge parts, wrong content types, invalid UTF-8, deeply nested JSON, numbers out
//! of range, missing fields, wrong secrets, raw protocol garbage, slowloris) — each gets the
//! status README.md "Webhook endpoint" documents, nothing is stored, and the daemon stays
//! healthy and keeps serving others meanwhile.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::daemon::{self, Daemon};
use support::multipart;
use support::plex::{FakePlex, TOKEN};
use support::tracker::FakeTracker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A scrobble of our own (not a sample): every field the daemon needs, nothing more.
fn good() -> Value {
    json!({
        "event": "media.scrobble",
        "user": true,
        "owner": true,
        "Account": {"id": 1, "title": "owner"},
        "Server": {"title": "srv", "uuid": "0123456789abcdef"},
        "Metadata": {
            "librarySectionType": "show",
            "ratingKey": "1001",
            "parentRatingKey": "1000",
            "grandparentRatingKey": "999",
            "guid": "com.plexapp.agents.thetvdb://301376/1/1?lang=en",
            "grandparentGuid": "com.plexapp.agents.thetvdb://301376?lang=en",
            "type": "episode",
            "title": "Pilot",
            "grandparentTitle": "Corpus Show",
            "index": 1,
            "parentIndex": 1,
            "lastViewedAt": 1585962956,
            "year": 2015
        }
    })
}

fn with(mut v: Value, path: &[&str], new: Value) -> Value {
    let mut cur = &mut v;
    for p in &path[..path.len() - 1] {
        cur = &mut cur[*p];
    }
    cur[path[path.len() - 1]] = new;
    v
}

fn without(mut v: Value, path: &[&str]) -> Value {
    let mut cur = &mut v;
    for p in &path[..path.len() - 1] {
        cur = &mut cur[*p];
    }
    cur.as_object_mut().unwrap().remove(path[path.len() - 1]);
    v
}

fn json_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// One part with the given name and raw content, CRLF framed.
fn part(boundary: &str, name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\nContent-Type: application/json\r\n\r\n"
    )
    .into_bytes();
    b.extend_from_slice(content);
    b.extend_from_slice(b"\r\n");
    b
}

fn close(boundary: &str) -> Vec<u8> {
    format!("--{boundary}--\r\n").into_bytes()
}

struct Case {
    name: &'static str,
    method: &'static str,
    /// None: the right webhook URL; Some: a path on the daemon.
    path: Option<String>,
    content_type: Option<String>,
    extra_headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    expect: u16,
}

fn case(name: &'static str, ct: &str, body: Vec<u8>, expect: u16) -> Case {
    Case {
        name,
        method: "POST",
        path: None,
        content_type: Some(ct.to_string()),
        extra_headers: vec![],
        body,
        expect,
    }
}

fn corpus(secret: &str) -> Vec<Case> {
    const MP: &str = "multipart/form-data; boundary=B0undary";
    const B: &str = "B0undary";
    let payload = json_body(&good());
    let mp = |content: &[u8]| {
        let mut b = part(B, "payload", content);
        b.extend(close(B));
        b
    };
    let mut v = vec![
        // Secrets and routes.
        Case {
            path: Some("/webhook/wrong".into()),
            ..case("wrong secret", "application/json", payload.clone(), 404)
        },
        Case {
            path: Some("/webhook/".into()),
            ..case("empty secret", "application/json", payload.clone(), 404)
        },
        Case {
            path: Some("/webhook".into()),
            ..case("no secret", "application/json", payload.clone(), 404)
        },
        Case {
            path: Some(format!("/webhook/{}", &secret[..secret.len() - 1])),
            ..case(
                "secret minus a char",
                "application/json",
                payload.clone(),
                404,
            )
        },
        Case {
            path: Some(format!("/webhook/{secret}0")),
            ..case(
                "secret plus a char",
                "application/json",
                payload.clone(),
                404,
            )
        },
        Case {
            path: Some(format!("/webhook/{secret}/extra")),
            ..case(
                "secret with a suffix path",
                "application/json",
                payload.clone(),
                404,
            )
        },
        Case {
            path: Some(format!("/webhook/{}", secret.to_uppercase())),
            ..case(
                "secret in the wrong case",
                "application/json",
                payload.clone(),
                404,
            )
        },
        // Methods.
        Case {
            method: "GET",
            ..case("GET", "application/json", vec![], 405)
        },
        Case {
            method: "PUT",
            ..case("PUT", "application/json", payload.clone(), 405)
        },
        Case {
            method: "DELETE",
            ..case("DELETE", "application/json", vec![], 405)
        },
        Case {
            method: "PATCH",
            ..case("PATCH", "application/json", payload.clone(), 405)
        },
        // Content types.
        case("text/plain", "text/plain", payload.clone(), 415),
        Case {
            content_type: None,
            ..case("no content type", "", payload.clone(), 415)
        },
        case("application/xml", "application/xml", payload.clone(), 415),
        case(
            "form-urlencoded",
            "application/x-www-form-urlencoded",
            b"payload=%7B%7D".to_vec(),
            415,
        ),
        case(
            "multipart/mixed",
            "multipart/mixed; boundary=B0undary",
            mp(&payload),
            415,
        ),
        case(
            "json with a suffix",
            "application/json-seq",
            payload.clone(),
            415,
        ),
        // Multipart framing.
        case(
            "multipart without boundary",
            "multipart/form-data",
            mp(&payload),
            400,
        ),
        case(
            "empty boundary",
            "multipart/form-data; boundary=",
            mp(&payload),
            400,
        ),
        case(
            "two boundary parameters",
            "multipart/form-data; boundary=B0undary; boundary=other",
            mp(&payload),
            400,
        ),
        case(
            "boundary over 70 characters",
            &format!("multipart/form-data; boundary={}", "b".repeat(80)),
            mp(&payload),
            400,
        ),
        case(
            "body framed by another boundary",
            "multipart/form-data; boundary=other",
            mp(&payload),
            400,
        ),
        case(
            "truncated mid-payload",
            MP,
            mp(&payload)[..120].to_vec(),
            400,
        ),
        case(
            "no closing delimiter",
            MP,
            part(B, "payload", &payload),
            400,
        ),
        case("empty multipart body", MP, vec![], 400),
        case(
            "no payload part",
            MP,
            {
                let mut b = part(B, "thumb", b"\xff\xd8\xff");
                b.extend(close(B));
                b
            },
            400,
        ),
        case(
            "two payload parts",
            MP,
            {
                let mut b = part(B, "payload", &payload);
                b.extend(part(B, "payload", &payload));
                b.extend(close(B));
                b
            },
            400,
        ),
        case(
            "a part header over 8 KiB",
            MP,
            {
                let mut b = format!(
                "--{B}\r\nContent-Disposition: form-data; name=\"payload\"\r\nX-Junk: {}\r\n\r\n",
                "j".repeat(9000)
            )
            .into_bytes();
                b.extend_from_slice(&payload);
                b.extend_from_slice(b"\r\n");
                b.extend(close(B));
                b
            },
            413, // over the parser's 8 KiB part-header limit: "too large"
        ),
        case(
            "seventeen parts",
            MP,
            {
                let mut b = Vec::new();
                for i in 0..17 {
                    b.extend(part(B, &format!("p{i}"), b"x"));
                }
                b.extend(close(B));
                b
            },
            413, // over the 16-part limit: "too large"
        ),
        case(
            "payload part over max_payload_bytes",
            MP,
            mp(&json_body(&with(
                good(),
                &["Metadata", "summary"],
                json!("s".repeat(300 * 1024)),
            ))),
            413,
        ),
        case(
            "thumb part over max_body_bytes",
            MP,
            {
                let mut b = part(B, "payload", &payload);
                b.extend(part(B, "thumb", &vec![0xffu8; 3 * 1024 * 1024]));
                b.extend(close(B));
                b
            },
            413,
        ),
        case(
            "invalid UTF-8 in the multipart payload",
            MP,
            mp(b"{\"event\": \"media.scrobble\xff\xfe\"}"),
            400,
        ),
        // JSON.
        case(
            "truncated JSON",
            "application/json",
            payload[..payload.len() / 2].to_vec(),
            400,
        ),
        case("empty JSON body", "application/json", vec![], 400),
        case(
            "invalid UTF-8 in JSON",
            "application/json",
            b"{\"event\": \"\xc3\x28\"}".to_vec(),
            400,
        ),
        case("a JSON array", "application/json", b"[1,2,3]".to_vec(), 400),
        case(
            "a JSON string",
            "application/json",
            b"\"media.scrobble\"".to_vec(),
            400,
        ),
        case("JSON null", "application/json", b"null".to_vec(), 400),
        case(
            "arrays nested 100,000 deep",
            "application/json",
            format!(
                "{{\"event\":{}{}}}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            )
            .into_bytes(),
            400,
        ),
        case(
            "objects nested 200 deep",
            "application/json",
            format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200)).into_bytes(),
            400,
        ),
        case(
            "JSON body over max_payload_bytes",
            "application/json",
            json_body(&with(
                good(),
                &["Metadata", "summary"],
                json!("s".repeat(300 * 1024)),
            )),
            413,
        ),
        case(
            "empty event",
            "application/json",
            json_body(&with(good(), &["event"], json!(""))),
            400,
        ),
        case(
            "event is a number",
            "application/json",
            json_body(&with(good(), &["event"], json!(7))),
            200, // `event` is read leniently (string or number); "7" is ignored
        ),
        // Missing fields on a scrobbled episode.
        case(
            "no Metadata",
            "application/json",
            json_body(&without(good(), &["Metadata"])),
            400,
        ),
        case(
            "no Metadata.type",
            "application/json",
            json_body(&without(good(), &["Metadata", "type"])),
            400,
        ),
        case(
            "no Account",
            "application/json",
            json_body(&without(good(), &["Account"])),
            400,
        ),
        case(
            "no Account.id",
            "application/json",
            json_body(&without(good(), &["Account", "id"])),
            400,
        ),
        case(
            "no grandparentTitle",
            "application/json",
            json_body(&without(good(), &["Metadata", "grandparentTitle"])),
            400,
        ),
        case(
            "no parentIndex",
            "application/json",
            json_body(&without(good(), &["Metadata", "parentIndex"])),
            200,
        ),
        case(
            "no index",
            "application/json",
            json_body(&without(good(), &["Metadata", "index"])),
            200,
        ),
        // Out of range or of the wrong type.
        case(
            "season 1e30",
            "application/json",
            json_body(&with(good(), &["Metadata", "parentIndex"], json!(1e30))),
            400,
        ),
        case(
            "season -1",
            "application/json",
            json_body(&with(good(), &["Metadata", "parentIndex"], json!(-1))),
            400,
        ),
        case(
            "episode 2^32",
            "application/json",
            json_body(&with(
                good(),
                &["Metadata", "index"],
                json!(4_294_967_296u64),
            )),
            400,
        ),
        case(
            "episode 100001",
            "application/json",
            json_body(&with(good(), &["Metadata", "index"], json!(100_001))),
            400,
        ),
        case(
            "episode as an object",
            "application/json",
            json_body(&with(good(), &["Metadata", "index"], json!({"n": 1}))),
            400,
        ),
        case(
            "lastViewedAt 1e20",
            "application/json",
            json_body(&with(good(), &["Metadata", "lastViewedAt"], json!(1e20))),
            400,
        ),
        case(
            "year 99999",
            "application/json",
            json_body(&with(good(), &["Metadata", "year"], json!(99_999))),
            400,
        ),
        case(
            "ratingKey path traversal",
            "application/json",
            json_body(&with(
                good(),
                &["Metadata", "grandparentRatingKey"],
                json!("../../accounts"),
            )),
            400,
        ),
        case(
            "Account.id as an object",
            "application/json",
            json_body(&with(good(), &["Account", "id"], json!({"id": 1}))),
            400,
        ),
        // Lying about the length: refused before reading.
        Case {
            extra_headers: vec![("x-test", "content-length below".into())],
            ..case(
                "huge declared body",
                "application/json",
                vec![b' '; 3 * 1024 * 1024],
                413,
            )
        },
        // Not errors, but hostile-looking: answered 200 and ignored.
        case(
            "a scrobbled movie",
            "application/json",
            json_body(&with(good(), &["Metadata", "type"], json!("movie"))),
            200,
        ),
        case(
            "an unknown event",
            "application/json",
            json_body(&with(good(), &["event"], json!("media.explode"))),
            200,
        ),
    ];
    // A UTF-8 BOM before otherwise valid JSON of an ignored event is accepted.
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend(json_body(&with(good(), &["event"], json!("media.pause"))));
    v.push(case("UTF-8 BOM", "application/json", bom, 200));
    v
}

/// Send raw bytes; the status of the answer, or None when the server closed without one.
async fn raw(addr: &str, bytes: &[u8], wait: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_corpus_gets_the_documented_statuses_and_the_daemon_stays_healthy() {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![]).await;
    let tracker = FakeTracker::start(vec![]).await;
    let cfg_text = daemon::config(&plex.url(), &tracker.url(), "[poll]\nenabled = false\n").replace(
        "[server]\n",
        "[server]\nwebhook_rate_limit = 100000\nwebhook_rate_burst = 100000\nheader_timeout = \"1s\"\nrequest_timeout = \"2s\"\n",
    );
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    let mut d = Daemon::start(dir.path(), &cfg_text).await;
    let secret = d.webhook_url.rsplit('/').next().unwrap().to_string();
    let base = format!("http://{}", d.addr);
    let http = reqwest::Client::new();

    let cases = corpus(&secret);
    let n = cases.len();
    let mut wrong = Vec::new();
    for c in cases {
        let url = match &c.path {
            Some(p) => format!("{base}{p}"),
            None => d.webhook_url.clone(),
        };
        let mut req = http.request(c.method.parse().unwrap(), &url).body(c.body);
        if let Some(ct) = &c.content_type {
            req = req.header("content-type", ct);
        }
        for (k, v) in &c.extra_headers {
            req = req.header(*k, v);
        }
        let got = match req.send().await {
            Ok(r) => r.status().as_u16(),
            // The daemon may answer 413 and close before a huge body is sent.
            Err(e) => {
                wrong.push(format!("{}: request failed: {e}", c.name));
                continue;
            }
        };
        if got != c.expect {
            wrong.push(format!("{}: expected {}, got {got}", c.name, c.expect));
        }
    }

    // Raw protocol abuse.
    let addr = d.addr.clone();
    let hook = format!("/webhook/{secret}");
    let raw_cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        ("garbage request line", b"HELLO THERE\r\n\r\n".to_vec(), Some(400)),
        (
            "a broken chunked body",
            format!("POST {hook} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nxx\r\n0\r\n\r\n").into_bytes(),
            Some(400),
        ),
        (
            "request headers of 300 KB",
            format!("POST {hook} HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "x".repeat(300_000)).into_bytes(),
            Some(431),
        ),
    ];
    for (name, bytes, expect) in raw_cases {
        let got = raw(&addr, &bytes, Duration::from_secs(5)).await;
        if got != expect {
            wrong.push(format!("{name}: expected {expect:?}, got {got:?}"));
        }
    }

    // A body that trickles in: cut off at request_timeout (2 s) with 408.
    let started = Instant::now();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        format!("POST {hook} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{").as_bytes(),
    )
    .await
    .unwrap();
    let trickle = tokio::spawn(async move {
        let mut buf = Vec::new();
        for _ in 0..40 {
            if s.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut b = [0u8; 512];
            if let Ok(Ok(k)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await
            {
                if k == 0 {
                    break;
                }
                buf.extend_from_slice(&b[..k]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&buf).to_string()
    });
    let answer = trickle.await.unwrap();
    if !answer.starts_with("HTTP/1.1 408") {
        wrong.push(format!("slow body: expected 408, got {answer:?}"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut off near request_timeout"
    );

    // Slowloris: 20 clients dribble header bytes; each is cut off by header_timeout (1 s)
    // while an honest client is served meanwhile.
    let mut lorises = Vec::new();
    // Each loris says when it is connected and dribbling, so the honest client goes only then.
    let (dribbling, mut all_dribbling) = tokio::sync::mpsc::channel::<()>(20);
    for i in 0..20 {
        let addr = addr.clone();
        let dribbling = dribbling.clone();
        lorises.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut s = TcpStream::connect(&addr).await.unwrap();
            let _ = s
                .write_all(format!("POST /webhook/x{i} HTTP/1.1\r\nHost: a\r\nX-A: ").as_bytes())
                .await;
            let _ = dribbling.send(()).await;
            let mut b = [0u8; 256];
            loop {
                if started.elapsed() > Duration::from_secs(10) {
                    return (false, String::new());
                }
                if s.write_all(b"a").await.is_err() {
                    return (true, String::new());
                }
                match tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return (true, String::new()),
                    Ok(Ok(k)) => return (true, String::from_utf8_lossy(&b[..k]).to_string()),
                    Err(_) => {}
                }
            }
        }));
    }
    drop(dribbling);
    for _ in 0..20 {
        all_dribbling.recv().await.expect("every loris connects");
    }
    let t = Instant::now();
    let r = http
        .post(&d.webhook_url)
        .header("content-type", "application/json")
        .body(json_body(&good()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "served during the slowloris");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    for l in lorises {
        let (cut, answer) = l.await.unwrap();
        if !cut {
            wrong.push("slowloris: a dribbling client was never cut off".into());
        }
        if !(answer.is_empty() || answer.starts_with("HTTP/1.1 408")) {
            wrong.push(format!("slowloris: unexpected answer {answer:?}"));
        }
    }

    assert!(
        wrong.is_empty(),
        "{} of {n} corpus cases (+ raw) answered wrongly:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Healthy, nothing stored but the one honest play; no panic in the log.
    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let st = d.status().await;
    assert_eq!(st["counts"]["journal"], 1, "{st}");
    let (ct, body) = multipart(&with(good(), &["Metadata", "index"], json!(2)), None);
    let r = http
        .post(&d.webhook_url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(!d.log().contains("panicked"), "{}", d.log());
    assert_eq!(d.stop(), Some(0), "clean exit after the corpus");
}
