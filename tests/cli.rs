//! The CLI as a person uses it (issue 12, item 8), against the real binary, online (daemon
//! running) and offline (the store served in process): activity filters answer the same both
//! ways; unknown enumeration values are refused with the choices; a closed stdout ends a
//! command quietly; export retries are one activity row with its attempts; `outbox list`
//! lists batches; `outbox retry --json`; a command right after start succeeds; errors say what
//! was wrong, not "daemon answered 400".

mod support;

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::daemon::{self, BIN, Daemon};
use support::plex::{FakePlex, FakeShow, TOKEN};
use support::tracker::{FakeTracker, Fault, Gate};
use support::{eventually, multipart, sample_json, samples};

const LEGACY: &str = "webhook/episode_legacy-thetvdb_media.resume_owner-id1.json";
const WAIT: Duration = Duration::from_secs(30);

fn scrobble(season: u32, episode: u32) -> Value {
    let mut p = sample_json(LEGACY);
    p["event"] = json!("media.scrobble");
    p["Metadata"]["parentIndex"] = json!(season);
    p["Metadata"]["index"] = json!(episode);
    p["Metadata"]["ratingKey"] = json!(format!("9{season:03}{episode:03}"));
    p["Metadata"]["guid"] = json!(format!(
        "com.plexapp.agents.thetvdb://301376/{season}/{episode}?lang=en"
    ));
    p
}

fn json_of(o: &Output, what: &str) -> Value {
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{what}: {e}: {}", String::from_utf8_lossy(&o.stdout)))
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

struct World {
    _dir: tempfile::TempDir,
    _plex: FakePlex,
    tracker: FakeTracker,
    cfg: std::path::PathBuf,
    cfg_text: String,
}

/// Fakes for "Be Cool, Scooby-Doo!" (mapped by tvdb id), the Plex token stored; no daemon yet.
async fn world() -> World {
    plexsync::daemon::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let plex = FakePlex::start(vec![FakeShow {
        rating_key: "56850".into(),
        guid: "com.plexapp.agents.thetvdb://301376?lang=en".into(),
        title: "Be Cool, Scooby-Doo!".into(),
        year: 2015,
        guids: vec![],
    }])
    .await;
    let tracker = FakeTracker::start(vec![
        json!({"id": "scooby", "title": "Be Cool Scooby (tracker)", "year": 2015, "tvdb_id": 301376}),
    ])
    .await;
    let cfg_text = daemon::config(&plex.url(), &tracker.url(), "[poll]\nenabled = false\n")
        .replace("[server]\n", "[server]\nwebhook_rate_limit = 100000\n")
        .replace("max_attempts = 50", "max_attempts = 4");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    assert!(
        daemon::cli(&cfg, &["secret", "set", "plex-token"], Some(TOKEN))
            .status
            .success()
    );
    World {
        _dir: dir,
        _plex: plex,
        tracker,
        cfg,
        cfg_text,
    }
}

async fn post(d: &Daemon, s: u32, e: u32) {
    let (ct, body) = multipart(&scrobble(s, e), None);
    let r = reqwest::Client::new()
        .post(&d.webhook_url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

async fn export_rows(d: &Daemon) -> Vec<Value> {
    d.api("GET", "/api/activity?source=export&per_page=500")
        .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// The activity listings compared online and offline.
const ACTIVITY_READS: &[&[&str]] = &[
    &["activity", "--json"],
    &["activity", "--status", "all", "--json"],
    &["activity", "--status", "success", "--json"],
    &["activity", "--status", "failed", "--json"],
    &["activity", "--source", "export", "--json"],
    &[
        "activity", "--source", "webhook", "--status", "all", "--json",
    ],
    &["activity", "--account", "ICCO", "--json"],
    &["activity", "-q", "scooby", "--json"],
    &[
        "activity", "--search", "TRACKER", "--source", "export", "--json",
    ],
    &["activity", "-q", "no such text anywhere", "--json"],
    &["activity", "--per-page", "2", "--page", "2", "--json"],
    &["outbox", "list", "--json"],
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_outbox_and_errors_online_and_offline() {
    if samples().is_none() {
        return;
    }
    let w = world().await;
    let mut d = Daemon::start(w._dir.path(), &w.cfg_text).await;
    eventually("the catalogue", WAIT, || {
        (w.tracker.state.lock().unwrap().requests >= 1).then_some(())
    })
    .await;

    // 1. Three failed attempts of one batch: ONE export row, its attempts counted. The
    // fourth (the last) is held at the tracker while the row is read, so the row is read
    // still retrying however slow the machine is; it then fails too.
    w.tracker.set_sticky(Some(Fault::Status(503, None)));
    let last = Gate::default();
    for _ in 0..3 {
        w.tracker.push_watched_fault(Fault::Status(503, None));
    }
    w.tracker
        .push_watched_fault(Fault::HeldThen(last.clone(), 503));
    post(&d, 1, 1).await;
    eventually("three attempts, the fourth at the tracker", WAIT, || {
        (last.arrived() >= 1).then_some(())
    })
    .await;
    let rows = export_rows(&d).await;
    assert_eq!(
        rows.len(),
        1,
        "one row per batch, not per attempt: {rows:#?}"
    );
    let r = &rows[0];
    assert_eq!(r["attempts"], 3, "{r}");
    assert_eq!(r["status"], "failed");
    assert_eq!(r["title"], "Be Cool, Scooby-Doo!");
    assert_eq!(r["tracker_title"], "Be Cool Scooby (tracker)");
    assert_eq!(r["event"], "retrying", "not `export · export`");
    let action = r["action"].as_str().unwrap();
    assert!(
        action.contains("export of 1 episode failed (attempt") && action.contains(" of 4)"),
        "{action}"
    );

    // 2. Out of attempts: the dead letter is listed as a batch, with title and attempts.
    last.open();
    eventually("the dead letter", WAIT, || {
        (w.tracker.posts().len() >= 4).then_some(())
    })
    .await;
    let mut ob = json_of(&d.cli(&["outbox", "list", "--json"], None), "outbox list");
    for _ in 0..200 {
        if ob["batches"][0]["dead"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        ob = json_of(&d.cli(&["outbox", "list", "--json"], None), "outbox list");
    }
    let b = &ob["batches"][0];
    assert_eq!(b["dead"], true, "{ob}");
    assert_eq!(b["show_title"], "Be Cool Scooby (tracker)", "{ob}");
    assert_eq!(b["title"], "Be Cool, Scooby-Doo!", "{ob}");
    assert_eq!(b["attempts"], 4, "{ob}");
    assert_eq!(b["episodes"], json!([{"season": 1, "episode": 1}]), "{ob}");
    assert!(b["last_error"].as_str().unwrap().contains("503"), "{ob}");
    assert_eq!(ob["dead_letters"].as_array().map(Vec::len), Some(1), "{ob}");
    let listed = text(&d.cli(&["outbox", "list"], None));
    assert!(
        listed.contains("Be Cool Scooby (tracker)")
            && listed.contains("S01E01")
            && listed.contains("dead letter")
            && listed.contains("503"),
        "{listed}"
    );
    let rows = export_rows(&d).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["event"], "dead_letter");
    assert_eq!(rows[0]["attempts"], 4);

    // A pending batch shows too, with its next try.
    post(&d, 1, 2).await;
    let pending = eventually("a pending batch", WAIT, || {
        let o = d.cli(&["outbox", "list", "--json"], None);
        let v: Value = serde_json::from_slice(&o.stdout).ok()?;
        let b = v["batches"]
            .as_array()?
            .iter()
            .find(|b| b["dead"] == false)?
            .clone();
        Some(b)
    })
    .await;
    assert!(pending["next_attempt_at_ms"].is_i64(), "{pending}");

    // 3. `outbox retry --json`; then the tracker recovers and everything arrives.
    w.tracker.set_sticky(None);
    let rq = json_of(&d.cli(&["outbox", "retry", "--json"], None), "retry");
    assert_eq!(rq["requeued_batches"], 1, "{rq}");
    // The pending batch goes now too, unless its next try came first (a 500 ms back-off).
    assert!(
        rq["brought_forward"] == 0 || rq["brought_forward"] == 1,
        "{rq}"
    );
    eventually("both episodes delivered", WAIT, || {
        (w.tracker.applied() >= 2).then_some(())
    })
    .await;
    eventually("the outbox empty", WAIT, || {
        let o = d.cli(&["outbox", "list", "--json"], None);
        let v: Value = serde_json::from_slice(&o.stdout).ok()?;
        (v["batches"].as_array()?.is_empty()).then_some(())
    })
    .await;

    // 4. Invalid enumeration values: refused (clap; exit 1, the usage-error code) with the choices listed.
    for (flag, bad, choice) in [
        ("--status", "fail", "failed"),
        ("--status", "bogus", "duplicate"),
        ("--source", "bogus", "export"),
    ] {
        let o = d.cli(&["activity", flag, bad], None);
        assert_eq!(o.status.code(), Some(1), "{flag} {bad}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(bad) && e.contains(choice), "{flag} {bad}: {e}");
        assert!(o.stdout.is_empty());
    }
    // The API refuses the same with 400 naming the choices.
    for q in ["status=fail", "source=bogus", "page=x"] {
        match plexsync::client::request(&d.socket(), "GET", &format!("/api/activity?{q}"), None)
            .await
        {
            Err(plexsync::client::ClientError::Http { status, body }) => {
                assert_eq!(status, 400, "{q}");
                if q.starts_with("status") {
                    assert!(
                        body.contains("success, failed, ignored, duplicate"),
                        "{body}"
                    );
                }
                if q.starts_with("source") {
                    assert!(body.contains("webhook, poll, backfill, export"), "{body}");
                }
            }
            other => panic!("{q}: {other:?}"),
        }
    }

    // 5. The human table: titles, account, attempts.
    let table = text(&d.cli(&["activity", "--source", "export"], None));
    assert!(
        table.contains("Be Cool, Scooby-Doo! → Be Cool Scoo") && table.contains("icco"),
        "{table}"
    );
    let line = table
        .lines()
        .find(|l| l.contains("dead_letter"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains(" 4  export of 1 episode gave up after 4"),
        "{line}"
    );
    assert!(!table.contains("export · export"));

    // 6. Online and offline answer the same; filters do what they say.
    let online: Vec<Value> = ACTIVITY_READS
        .iter()
        .map(|a| json_of(&d.cli(a, None), &a.join(" ")))
        .collect();
    let bad_on = d.cli(
        &["conflicts", "resolve", "no-such-conflict", "--ignore"],
        None,
    );
    assert_eq!(d.stop(), Some(0));
    for (args, on) in ACTIVITY_READS.iter().zip(&online) {
        let off = json_of(&daemon::cli(&w.cfg, args, None), &args.join(" "));
        assert_eq!(&off, on, "`plexsync {}` online vs offline", args.join(" "));
    }
    let total = |i: usize| online[i]["total"].as_u64().unwrap();
    assert!(total(0) >= 4, "{}", online[0]);
    assert_eq!(total(0), total(1), "--status all is every row");
    assert_eq!(total(2) + total(3), total(0), "success + failed here");
    assert!(
        online[3]["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "failed")
    );
    assert!(
        online[4]["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["source"] == "export")
    );
    assert!(total(4) >= 2, "{}", online[4]);
    assert!(total(6) >= total(4), "the account's rows: {}", online[6]);
    assert_eq!(
        total(7),
        total(0),
        "every row names the show: {}",
        online[7]
    );
    assert_eq!(total(8), total(4), "tracker title found, case-insensitive");
    assert_eq!(total(9), 0);
    assert_eq!(online[10]["items"].as_array().unwrap().len(), 2);
    assert_eq!(online[10]["page"], 2);

    // 7. Errors say what was wrong, the same words online and offline.
    let bad_off = daemon::cli(
        &w.cfg,
        &["conflicts", "resolve", "no-such-conflict", "--ignore"],
        None,
    );
    assert!(!bad_on.status.success() && !bad_off.status.success());
    for e in [stderr(&bad_on), stderr(&bad_off)] {
        assert!(!e.contains("answered"), "{e}");
        assert!(!e.contains("400") && !e.contains("404"), "{e}");
    }
    assert_eq!(stderr(&bad_on), stderr(&bad_off));
}

/// Run `plexsync ARGS`, close its stdout after reading `keep` bytes; (exit code, stderr).
fn closed_stdout(cfg: &std::path::Path, args: &[&str], keep: usize) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(cfg)
        .env_remove("STATE_DIRECTORY")
        .env_remove("RUNTIME_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    if keep > 0 {
        let mut buf = vec![0u8; keep];
        let _ = out.read_exact(&mut buf);
    }
    drop(out);
    let o = child.wait_with_output().unwrap();
    (o.status.code(), stderr(&o))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_a_command_quietly() {
    if samples().is_none() {
        return;
    }
    let w = world().await;
    let d = Daemon::start(w._dir.path(), &w.cfg_text).await;
    // Enough rows that the JSON outgrows a pipe's buffer (64 KiB): the write must hit the
    // closed pipe, not fit in the buffer before the reader goes. The plays' own rows alone
    // must do it: how many export rows there are depends on how the exporter batched them.
    for e in 1..=200 {
        post(&d, 2, e).await;
    }
    let json = d.cli(&["activity", "--json", "--per-page", "500"], None);
    assert!(json.stdout.len() > 70_000, "{} bytes", json.stdout.len());
    let cases: &[(&[&str], usize)] = &[
        (&["activity", "--json", "--per-page", "500"], 0),
        (&["activity", "--json", "--per-page", "500"], 1),
        (&["activity", "--per-page", "500"], 0),
        (&["activity", "--per-page", "500"], 200),
        (&["outbox", "list", "--json"], 0),
    ];
    let mut runs = 0;
    for round in 0..5 {
        for (args, keep) in cases {
            let (code, err) = closed_stdout(&w.cfg, args, *keep);
            assert!(!err.contains("panicked"), "round {round} {args:?}: {err}");
            assert!(
                !err.contains("Broken pipe"),
                "round {round} {args:?}: {err}"
            );
            assert_eq!(code, Some(0), "round {round} {args:?}: {err}");
            runs += 1;
        }
    }
    assert_eq!(runs, 25);
    drop(d);
    // Offline the same.
    for keep in [0, 1] {
        let (code, err) = closed_stdout(&w.cfg, &["activity", "--json", "--per-page", "500"], keep);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(code, Some(0), "{err}");
    }
}

/// `plexsync run` on `cfg` as a process of its own (no systemd folders), its log to `log`.
fn spawn_run(cfg: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(cfg)
        .env_remove("STATE_DIRECTORY")
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_right_after_start_succeeds() {
    if samples().is_none() {
        return;
    }
    let w = world().await;
    let dir = w._dir.path();
    for round in 0..10 {
        let mut child = spawn_run(&w.cfg, &dir.join(format!("start-{round}.log")));
        // No waiting for the socket: the command runs while the daemon starts.
        let o = daemon::cli(&w.cfg, &["status", "--json"], None);
        let log_text =
            || std::fs::read_to_string(dir.join(format!("start-{round}.log"))).unwrap_or_default();
        // 0 or 2 (status's "something needs attention", e.g. answered from the store an
        // instant before the daemon took it); 1 would be the command failing.
        assert!(
            matches!(o.status.code(), Some(0 | 2)),
            "round {round}: {}\ndaemon:\n{}",
            stderr(&o),
            log_text()
        );
        let st: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(st["counts"].is_object(), "{st}");
        // And the daemon came up regardless of who opened the store first.
        let running = eventually("the daemon answers", WAIT, || {
            if let Some(s) = child.try_wait().unwrap() {
                panic!("round {round}: the daemon exited with {s}:\n{}", log_text());
            }
            let o = daemon::cli(&w.cfg, &["status", "--json"], None);
            let v: Value = serde_json::from_slice(&o.stdout).ok()?;
            (v["running"] == true).then_some(v)
        })
        .await;
        assert_eq!(running["running"], true);
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let code = child.wait().unwrap();
        assert!(code.success(), "round {round}: {code}\n{}", log_text());
    }
}

/// A daemon that accepted the connection and never answers (stopped with SIGSTOP, wedged):
/// a read gives up past the daemon's own `request_timeout`, exits 1 and names the socket,
/// instead of hanging a cron check for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_never_answers_does_not_hang_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let text = daemon::config("http://127.0.0.1:9", "http://127.0.0.1:9", "")
        .replace("[server]\n", "[server]\nrequest_timeout = \"1s\"\n");
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, &text).unwrap();
    // Bound and listening (the kernel queues the connection), never accepted.
    let _mute = std::os::unix::net::UnixListener::bind(dir.path().join("plexsync.sock")).unwrap();
    let started = std::time::Instant::now();
    let cfg2 = cfg.clone();
    let o = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || daemon::cli(&cfg2, &["status", "--json"], None)),
    )
    .await
    .expect("the CLI gave up by itself")
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("plexsync.sock") && err.contains("did not answer"),
        "{err}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited out the timeout first"
    );
}

/// `activity --per-page` past what the API serves (500) is refused, naming the flag and the
/// range, instead of quietly showing 500 rows under a page count made for the number asked.
#[test]
fn activity_per_page_is_checked_against_the_apis_range() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(
        &cfg,
        daemon::config("http://127.0.0.1:9", "http://127.0.0.1:9", ""),
    )
    .unwrap();
    for bad in ["1000", "0"] {
        let o = daemon::cli(&cfg, &["activity", "--per-page", bad], None);
        assert_eq!(o.status.code(), Some(1), "{bad}: {o:?}");
        let err = stderr(&o);
        assert!(
            err.contains("--per-page") && err.contains("1..=500"),
            "{err}"
        );
    }
}

/// `secret set`, `webhook-url` and `web-url` run while the daemon starts (it holds the store
/// while its exec matcher says hello, its socket not up yet) wait for the daemon, as every
/// other command does, instead of failing with "is [admin] socket disabled?".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_commands_wait_for_a_starting_daemon() {
    if samples().is_none() {
        return;
    }
    let w = world().await;
    let dir = w._dir.path();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugins/exec/tests/fixtures/scripted.py");
    let marker = dir.join("matcher-started");
    let wrapper = dir.join("slow-matcher.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ntouch '{}'\nsleep 3\nexec python3 '{}' \"$@\"\n",
            marker.display(),
            fixture.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg_text = format!(
        "{}\n[[matchers]]\nkind = \"exec\"\ncommand = \"{}\"\nstart_timeout = \"20s\"\n",
        w.cfg_text,
        wrapper.display()
    );
    std::fs::write(&w.cfg, &cfg_text).unwrap();
    let mut child = spawn_run(&w.cfg, &dir.join("daemon.log"));
    // The daemon holds the store and waits for its matcher's hello: the socket is not up.
    eventually("the matcher started", WAIT, || {
        marker.exists().then_some(())
    })
    .await;
    let daemon_log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    let o = daemon::cli(&w.cfg, &["secret", "set", "plex-token"], Some(TOKEN));
    assert!(
        o.status.success() && text(&o).contains("running daemon"),
        "{o:?}\n{}",
        daemon_log()
    );
    for cmd in ["webhook-url", "web-url"] {
        let o = daemon::cli(&w.cfg, &[cmd], None);
        assert!(o.status.success(), "{cmd}: {o:?}\n{}", daemon_log());
        assert!(text(&o).starts_with("http://"), "{cmd}: {}", text(&o));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success(), "{}", daemon_log());
}
