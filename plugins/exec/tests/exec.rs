//! Black-box tests of the exec matcher against real programs: the shipped example script and
//! the scripted fixture (tests/fixtures/scripted.py, whose behaviour is chosen by the query's
//! title). Timeouts in these configs are short so every test stays fast.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexsync_plugin_api::{
    CatalogShow, Catalogue, ErrorClass, MatchOutcome, Matcher, MemoryCache, PluginContext,
    PluginError, ShowQuery,
};
use plexsync_plugin_exec::{ExecMatcher, HANG_TIMEOUTS};
use serde_json::{Value, json};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ctx(config: Value) -> PluginContext {
    PluginContext {
        config,
        secrets: Default::default(),
        cache: Arc::new(MemoryCache::default()),
        config_dir: crate_dir(),
    }
}

/// The scripted fixture with extra arguments and a short restart backoff. The request
/// timeout is generous (answers must not time out on a loaded machine) except where a test
/// waits for timeouts on purpose ([`scripted_with_timeout`]).
fn scripted(args: &[&str]) -> Result<ExecMatcher, PluginError> {
    scripted_with_timeout(args, "10s")
}

fn scripted_with_timeout(args: &[&str], timeout: &str) -> Result<ExecMatcher, PluginError> {
    plexsync_plugin_exec::build(&ctx(json!({
        "command": "tests/fixtures/scripted.py",
        "args": args,
        "timeout": timeout,
        "start_timeout": "10s",
        "restart_backoff": "20ms",
    })))
}

fn query(title: &str, rating_key: &str) -> ShowQuery {
    ShowQuery {
        rating_key: Some(rating_key.into()),
        title: title.into(),
        year: None,
        guids: vec![],
    }
}

fn show(id: &str, title: &str, year: Option<i32>) -> CatalogShow {
    CatalogShow {
        id: id.into(),
        title: title.into(),
        year,
        ..Default::default()
    }
}

/// The show id and the fixture's pid (which it reports as the method).
fn definite(o: MatchOutcome) -> (String, String) {
    match o {
        MatchOutcome::Definite {
            show_id, method, ..
        } => (show_id, method),
        other => panic!("expected a definite answer, got {other:?}"),
    }
}

#[tokio::test]
async fn example_script_round_trip() {
    let m = plexsync_plugin_exec::build(&ctx(json!({
        "command": "examples/title_table.py",
        "args": ["examples/title_table.json"],
        "timeout": "2s",
    })))
    .unwrap();
    assert_eq!(m.kind(), "exec");
    m.probe().await.unwrap();
    assert_eq!(m.name(), "title_table");
    m.set_catalogue(Arc::new(Catalogue::new(vec![
        show("1234", "Iketeru Futari", Some(2024)),
        show("7", "Kanon", Some(2006)),
        show("8", "Kanon", Some(2002)),
        show("9", "Aria the Animation", Some(2005)),
    ])));
    let q = |title: &str, year: Option<i32>| ShowQuery {
        rating_key: None,
        title: title.into(),
        year,
        guids: vec![],
    };
    // The user's table.
    assert_eq!(
        m.match_show(&q("Cool Couple", Some(2024))).await.unwrap(),
        MatchOutcome::Definite {
            show_id: "1234".into(),
            confidence: 1.0,
            method: "exec:table".into()
        }
    );
    // The exact title against the catalogue it was sent; the year picks one of two.
    assert_eq!(
        m.match_show(&q("ARIA The Animation", Some(2005)))
            .await
            .unwrap(),
        MatchOutcome::Definite {
            show_id: "9".into(),
            confidence: 0.95,
            method: "exec:exact_title".into()
        }
    );
    assert_eq!(
        definite(m.match_show(&q("kanon", Some(2006))).await.unwrap()).0,
        "7"
    );
    match m.match_show(&q("Kanon", None)).await.unwrap() {
        MatchOutcome::Candidates { candidates } => {
            let ids: Vec<&str> = candidates.iter().map(|c| c.show_id.as_str()).collect();
            assert_eq!(ids, ["7", "8"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        m.match_show(&q("Something Else", None)).await.unwrap(),
        MatchOutcome::NoMatch
    );
    // The table's "Engrenages" points at 987, which is not in this catalogue: refused.
    let e = m.match_show(&q("Engrenages", None)).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    assert!(e.message.contains("not in the catalogue"), "{e}");
    // A new catalogue reaches the program before the next request.
    m.set_catalogue(Arc::new(Catalogue::new(vec![show(
        "42",
        "Something Else",
        None,
    )])));
    assert_eq!(
        definite(m.match_show(&q("something else", None)).await.unwrap()).0,
        "42"
    );
}

#[tokio::test]
async fn hello_and_match_round_trip() {
    let m = scripted(&[]).unwrap();
    // The file name until a hello named it.
    assert_eq!(m.name(), "scripted.py");
    let (id, method) = definite(m.match_show(&query("x", "11")).await.unwrap());
    assert_eq!(m.name(), "scripted");
    assert_eq!(id, "11");
    assert!(method.starts_with("pid:"), "{method}");
    // The same instance serves the next request.
    let (_, again) = definite(m.match_show(&query("y", "12")).await.unwrap());
    assert_eq!(method, again);
}

#[tokio::test]
async fn replies_out_of_order_reach_their_requests() {
    let m = scripted(&[]).unwrap();
    // Start the instance first so both requests go to it.
    m.match_show(&query("warm-up", "1")).await.unwrap();
    let q1 = query("first", "101");
    let q2 = query("second", "102");
    // The fixture holds "first" until "second" arrives, then answers second, then first.
    let (a, b) = tokio::join!(m.match_show(&q1), async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        m.match_show(&q2).await
    });
    assert_eq!(definite(a.unwrap()).0, "101");
    assert_eq!(definite(b.unwrap()).0, "102");
}

#[tokio::test]
async fn error_replies_keep_their_class() {
    let m = scripted(&[]).unwrap();
    let e = m.match_show(&query("error", "1")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("lookup failed"), "{e}");
    let e = m
        .match_show(&query("error-transient", "1"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient);
    // An answer outside the protocol (confidence 7) is a protocol error, not a match.
    let e = m.match_show(&query("bad", "1")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("protocol error"), "{e}");
    // The instance is still fine.
    assert_eq!(
        definite(m.match_show(&query("x", "5")).await.unwrap()).0,
        "5"
    );
}

#[tokio::test]
async fn timeouts_are_transient_and_a_hang_is_killed_and_restarted() {
    let m = scripted_with_timeout(&[], "400ms").unwrap();
    let (_, pid) = eventually_definite(&m, &query("x", "1")).await;
    let t = Instant::now();
    let e = m.match_show(&query("slow", "1")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient);
    assert!(e.message.contains("did not answer within 400 ms"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3));
    // A reply still works between timeouts, and resets the count.
    let (_, same) = eventually_definite(&m, &query("x", "2")).await;
    assert_eq!(pid, same);
    for i in 1..=HANG_TIMEOUTS {
        let e = m.match_show(&query("slow", "1")).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Transient);
        assert_eq!(e.message.contains("killed"), i == HANG_TIMEOUTS, "{e}");
    }
    let (_, new_pid) = eventually_definite(&m, &query("x", "3")).await;
    assert_ne!(pid, new_pid, "a hanging program is replaced");
}

/// Ask until the restart backoff has passed (short in these configs).
async fn eventually_definite(m: &ExecMatcher, q: &ShowQuery) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match m.match_show(q).await {
            Ok(o) => return definite(o),
            Err(e) => {
                assert_eq!(e.class, ErrorClass::Transient, "{e}");
                assert!(Instant::now() < deadline, "never came back: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_program_that_dies_is_restarted_and_pending_requests_fail() {
    let m = scripted(&[]).unwrap();
    m.match_show(&query("warm-up", "1")).await.unwrap();
    // A request in flight when the program dies fails transiently, quickly (not by timeout).
    let slow_query = query("slow", "1");
    let (slow, crash) = tokio::join!(m.match_show(&slow_query), async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        m.match_show(&query("crash", "1")).await
    });
    let slow = slow.unwrap_err();
    let crash = crash.unwrap_err();
    assert_eq!(crash.class, ErrorClass::Transient);
    assert!(crash.message.contains("exited before answering"), "{crash}");
    assert_eq!(slow.class, ErrorClass::Transient);
    assert!(slow.message.contains("exited before answering"), "{slow}");
    // Later requests are served by a new instance.
    let (id, _) = eventually_definite(&m, &query("x", "77")).await;
    assert_eq!(id, "77");
}

#[tokio::test]
async fn a_reply_written_just_before_exiting_is_delivered() {
    let m = scripted(&[]).unwrap();
    let (id, pid) = definite(m.match_show(&query("last-words", "8")).await.unwrap());
    assert_eq!(id, "8");
    let (_, next) = eventually_definite(&m, &query("x", "9")).await;
    assert_ne!(pid, next);
}

#[tokio::test]
async fn dropping_the_matcher_stops_and_reaps_the_program() {
    let m = scripted(&[]).unwrap();
    let (_, method) = definite(m.match_show(&query("x", "1")).await.unwrap());
    let pid: u32 = method.trim_start_matches("pid:").parse().unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists());
    drop(m);
    // Gone entirely: neither running nor a zombie waiting to be reaped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc_dir.exists() {
        assert!(Instant::now() < deadline, "process {pid} still exists");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn wrong_protocol_or_no_hello_is_a_config_error_of_the_probe() {
    for (args, needle) in [
        (&["--protocol", "2"][..], "speaks protocol 2"),
        (&["--garbage-hello"][..], "not a hello"),
        // What it wrote to stderr before dying is quoted.
        (&["--exit"][..], "no database"),
    ] {
        // Building starts nothing, so it cannot know.
        let m = scripted(args).unwrap();
        let e = m.probe().await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Config, "{e}");
        assert_eq!(e.key.as_deref(), Some("command"), "{e}");
        assert!(e.message.contains(needle), "{args:?}: {e}");
        assert!(!m.is_running().await);
    }
    let t = Instant::now();
    let m = plexsync_plugin_exec::build(&ctx(json!({
        "command": "tests/fixtures/scripted.py",
        "args": ["--silent"],
        "start_timeout": "200ms",
    })))
    .unwrap();
    let e = m.probe().await.unwrap_err();
    assert!(e.message.contains("no hello within 200 ms"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3));
    // A missing program is known without starting anything: a build error.
    let e = plexsync_plugin_exec::build(&ctx(json!({"command": "tests/fixtures/missing.py"})))
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Config);
    assert_eq!(e.key.as_deref(), Some("command"));
}

fn starts(marker: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(marker)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn building_starts_nothing_and_the_probed_instance_serves() {
    let dir = std::env::temp_dir().join(format!("plexsync-exec-mark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("starts");
    let _ = std::fs::remove_file(&marker);
    let mark = marker.to_str().unwrap();
    // Built without a runtime's help: no program, no blocking.
    let m = scripted(&["--mark", mark]).unwrap();
    drop(scripted(&["--mark", mark]).unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(starts(&marker).is_empty(), "{:?}", starts(&marker));
    assert!(!m.is_running().await);
    // The probe starts it once; the first request is served by that instance.
    m.probe().await.unwrap();
    assert!(m.is_running().await);
    assert_eq!(starts(&marker).len(), 1);
    m.probe().await.unwrap();
    let (_, method) = definite(m.match_show(&query("x", "1")).await.unwrap());
    assert_eq!(starts(&marker), [method.trim_start_matches("pid:")]);
    // Without a probe, the first request starts it.
    let lazy = scripted(&["--mark", mark]).unwrap();
    assert_eq!(starts(&marker).len(), 1);
    definite(lazy.match_show(&query("y", "2")).await.unwrap());
    assert_eq!(starts(&marker).len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn garbage_lines_are_ignored() {
    let m = scripted(&[]).unwrap();
    // Before its answer the fixture writes: a non-JSON line, a reply to an unknown id, a
    // line without id, a reply without result, a 2 MiB line carrying the right id (over the
    // cap, so dropped unread) and an empty line.
    let (id, _) = definite(m.match_show(&query("garbage", "31")).await.unwrap());
    assert_eq!(id, "31");
    assert_eq!(
        definite(m.match_show(&query("x", "32")).await.unwrap()).0,
        "32"
    );
}

#[tokio::test]
async fn the_catalogue_reaches_a_program_that_asks_for_it() {
    let m = scripted(&["--catalogue"]).unwrap();
    m.set_catalogue(Arc::new(Catalogue::new(vec![
        show("1", "A", None),
        show("2", "B", Some(2000)),
    ])));
    match m.match_show(&query("catalogue", "1")).await.unwrap() {
        MatchOutcome::Candidates { candidates } => {
            let ids: Vec<&str> = candidates.iter().map(|c| c.show_id.as_str()).collect();
            assert_eq!(ids, ["1", "2"]);
        }
        other => panic!("{other:?}"),
    }
    // Without asking, the program gets none.
    let m = scripted(&[]).unwrap();
    m.set_catalogue(Arc::new(Catalogue::new(vec![show("1", "A", None)])));
    assert_eq!(
        m.match_show(&query("catalogue", "1")).await.unwrap(),
        MatchOutcome::Candidates { candidates: vec![] }
    );
}

/// A tracing writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn stderr_lines_are_logged_with_the_plugin_name() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // The test runtime is single-threaded, so the plugin's tasks log on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);
    let m = scripted(&[]).unwrap();
    assert_eq!(
        definite(m.match_show(&query("stderr", "3")).await.unwrap()).0,
        "3"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).to_string();
        if text.contains("scripted says hello on stderr") {
            assert!(text.contains("plugin=scripted"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "stderr line not logged: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The wrapper fixture (tests/fixtures/wrapper.sh runs scripted.py without `exec`), so the
/// matcher answering is the plugin's grandchild.
fn wrapped_with_timeout(timeout: &str) -> ExecMatcher {
    plexsync_plugin_exec::build(&ctx(json!({
        "command": "tests/fixtures/wrapper.sh",
        "timeout": timeout,
        "start_timeout": "10s",
        "restart_backoff": "20ms",
    })))
    .unwrap()
}

/// State letter and parent pid of a process, from /proc/<pid>/stat; None once it is gone.
fn proc_stat(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid …": the fields follow the last ')' (comm may hold anything).
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.to_string();
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether the process still runs. A zombie counts as gone: it runs nothing and holds no
/// pipes; an orphan's zombie waits for init to reap it, which in some containers never comes.
fn running(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != "Z" && state != "X")
}

/// The pid the scripted fixture reports as its method, checked to be a grandchild.
fn grandchild_pid(method: &str) -> u32 {
    let pid: u32 = method.trim_start_matches("pid:").parse().unwrap();
    let (_, ppid) = proc_stat(pid).expect("the matcher runs");
    assert_ne!(ppid, std::process::id(), "the wrapper must be in between");
    pid
}

/// Wait (bounded) until the process no longer runs; kill it if it does not stop, so a failing
/// run leaves no hour-long sleeper behind.
async fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(pid) {
        if Instant::now() > deadline {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("the wrapped matcher {pid} still runs after its wrapper was stopped");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_hang_kill_stops_what_a_wrapper_started() {
    let m = wrapped_with_timeout("400ms");
    let (_, method) = eventually_definite(&m, &query("x", "1")).await;
    let pid = grandchild_pid(&method);
    // "sleep" hangs without reading stdin: only a signal ends it.
    for i in 1..=HANG_TIMEOUTS {
        let e = m.match_show(&query("sleep", "1")).await.unwrap_err();
        assert_eq!(e.message.contains("killed"), i == HANG_TIMEOUTS, "{e}");
    }
    wait_stopped(pid).await;
    // The next instance serves.
    let (_, method) = eventually_definite(&m, &query("x", "2")).await;
    assert_ne!(grandchild_pid(&method), pid);
}

#[tokio::test]
async fn dropping_the_matcher_stops_what_a_wrapper_started() {
    let m = wrapped_with_timeout("300ms");
    let (_, method) = eventually_definite(&m, &query("x", "1")).await;
    let pid = grandchild_pid(&method);
    let e = m.match_show(&query("sleep", "1")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient, "{e}");
    // Closing stdin cannot reach a program that does not read it: the stop must signal.
    drop(m);
    wait_stopped(pid).await;
}
