//! The real binary under a pretend systemd: notifications arrive on `$NOTIFY_SOCKET` in the
//! right order (READY=1 only once the admin socket answers, STATUS=, WATCHDOG=1 pings,
//! STOPPING=1 after SIGTERM), and `$JOURNAL_STREAM` is honoured only when it names stderr.

mod support;

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::daemon::{BIN, config};

/// Plex and the tracker are unreachable on purpose: the daemon must come up anyway and say so.
const NOWHERE: &str = "http://127.0.0.1:9";

fn spawn(dir: &Path, env: &[(&str, &str)]) -> Child {
    let cfg = dir.join("plexsync.toml");
    std::fs::write(&cfg, config(NOWHERE, NOWHERE, "")).unwrap();
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .env_remove("STATE_DIRECTORY")
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("JOURNAL_STREAM")
        .env("RUST_LOG", "plexsync=debug,info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, dir: &Path) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("daemon did not stop on SIGTERM:\n{}", log(dir));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the daemon if an assertion fails before it was stopped.
struct Reap(Option<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Datagrams until `until` matches one (returned last) or the deadline passes.
fn collect_until(
    sock: &UnixDatagram,
    seen: &mut Vec<String>,
    within: Duration,
    until: impl Fn(&str) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 8192];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = until(&msg);
            seen.push(msg);
            if hit {
                return true;
            }
        }
    }
    false
}

#[tokio::test]
async fn notifies_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut child = Reap(Some(spawn(
        dir.path(),
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            // Pings every 0.5 s.
            ("WATCHDOG_USEC", "1000000"),
        ],
    )));

    let mut seen = Vec::new();
    let ready = collect_until(&sock, &mut seen, Duration::from_secs(30), |m| {
        m.lines().any(|l| l == "READY=1")
    });
    assert!(ready, "no READY=1 in {seen:?}\n{}", log(dir.path()));
    // Ready means the listeners are up: the admin socket answers right away.
    let status = plexsync::client::request(
        &dir.path().join("plexsync.sock"),
        "GET",
        "/api/status",
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("admin socket not up at READY=1: {e}"));
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    let ready_msg = seen.last().unwrap().clone();
    let listen = status["listen"].as_str().unwrap();
    assert!(
        ready_msg.contains(&format!(
            "STATUS=listening on {listen}, 1 matcher, polling every 5 min"
        )),
        "{ready_msg:?}"
    );
    assert!(
        !seen[..seen.len() - 1]
            .iter()
            .any(|m| m.contains("WATCHDOG=1")),
        "a watchdog ping before READY=1: {seen:?}"
    );

    let pinged = collect_until(&sock, &mut seen, Duration::from_secs(10), |m| {
        m == "WATCHDOG=1"
    });
    assert!(pinged, "no WATCHDOG=1 in {seen:?}\n{}", log(dir.path()));
    // The unreachable tracker shows up in the status line (already at READY=1, or later).
    let says_unreachable = |m: &str| {
        m.lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("tracker unreachable"))
    };
    let told = seen.iter().any(|m| says_unreachable(m))
        || collect_until(&sock, &mut seen, Duration::from_secs(20), says_unreachable);
    assert!(told, "no tracker status in {seen:?}\n{}", log(dir.path()));

    sigterm(child.0.as_ref().unwrap());
    let stopping = collect_until(&sock, &mut seen, Duration::from_secs(20), |m| {
        m.lines().any(|l| l == "STOPPING=1")
    });
    assert!(stopping, "no STOPPING=1 in {seen:?}\n{}", log(dir.path()));
    let mut c = child.0.take().unwrap();
    assert_eq!(
        wait_exit(&mut c, dir.path()),
        Some(0),
        "{}",
        log(dir.path())
    );
}

#[tokio::test]
async fn a_watchdog_meant_for_another_process_is_not_pinged() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut child = Reap(Some(spawn(
        dir.path(),
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
            // PID 1 is never the daemon.
            ("WATCHDOG_PID", "1"),
        ],
    )));
    let mut seen = Vec::new();
    assert!(
        collect_until(&sock, &mut seen, Duration::from_secs(30), |m| m
            .starts_with("READY=1")),
        "no READY=1 in {seen:?}\n{}",
        log(dir.path())
    );
    // Five watchdog periods of silence.
    collect_until(&sock, &mut seen, Duration::from_secs(1), |_| false);
    assert!(!seen.iter().any(|m| m == "WATCHDOG=1"), "{seen:?}");
    sigterm(child.0.as_ref().unwrap());
    let mut c = child.0.take().unwrap();
    assert_eq!(wait_exit(&mut c, dir.path()), Some(0));
}

#[test]
fn journal_stream_naming_stderr_selects_the_journal() {
    let journald = Path::new("/run/systemd/journal/socket").exists();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("daemon.log");
    // stderr goes to daemon.log; name exactly that file in JOURNAL_STREAM, as systemd does.
    let cfg = dir.path().join("plexsync.toml");
    std::fs::write(&cfg, config(NOWHERE, NOWHERE, "")).unwrap();
    let run = |journal_stream: &str| {
        let stderr = std::fs::File::create(&log_path).unwrap();
        let meta = stderr.metadata().unwrap();
        let stream = if journal_stream == "self" {
            format!("{}:{}", meta.dev(), meta.ino())
        } else {
            journal_stream.to_string()
        };
        let mut child = Reap(Some(
            Command::new(BIN)
                .args(["run", "--config"])
                .arg(&cfg)
                .env_remove("STATE_DIRECTORY")
                .env_remove("RUNTIME_DIRECTORY")
                .env_remove("CREDENTIALS_DIRECTORY")
                .env_remove("NOTIFY_SOCKET")
                .env("JOURNAL_STREAM", stream)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap(),
        ));
        // Wait for the start-up line (or the fallback notice) to be written.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !log(dir.path()).contains("plexsync is running") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if journald {
            // With a real journald the lines go there: give the daemon time, then stop it.
            std::thread::sleep(Duration::from_secs(2));
        }
        sigterm(child.0.as_ref().unwrap());
        let mut c = child.0.take().unwrap();
        assert_eq!(
            wait_exit(&mut c, dir.path()),
            Some(0),
            "{}",
            log(dir.path())
        );
        log(dir.path())
    };

    // A JOURNAL_STREAM that is not stderr's (inherited by a child) keeps plain stderr lines.
    let plain = run("1:1");
    assert!(plain.contains("plexsync is running"), "{plain}");
    assert!(!plain.contains("journald"), "{plain}");

    let under_systemd = run("self");
    if journald {
        // Native journal records: nothing on stderr.
        assert!(
            !under_systemd.contains("plexsync is running"),
            "{under_systemd}"
        );
        println!("NOTICE: journald runs here; the daemon's records went to the journal");
    } else {
        // Detected, but there is no journald here: a clear notice, then plain lines.
        assert!(
            under_systemd.contains("journald does not take native messages"),
            "{under_systemd}"
        );
        assert!(
            under_systemd.contains("plexsync is running"),
            "{under_systemd}"
        );
    }
}

#[test]
fn the_packaged_config_is_valid_and_agrees_with_the_unit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = root.join("packaging/plexsync.toml");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = std::fs::read_to_string(root.join("packaging/plexsync.service")).unwrap();
    let toml = std::fs::read_to_string(&config).unwrap();
    let unit_value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
            .to_string()
    };
    // The unit starts the daemon on the config the package installs.
    assert_eq!(
        unit_value("ExecStart"),
        "/usr/bin/plexsync run --config /etc/plexsync/plexsync.toml"
    );
    // The credential's source is the key file that commands run by root use.
    let credential = unit_value("LoadCredential");
    let (name, source) = credential.split_once(':').unwrap();
    assert_eq!(name, "plexsync.key");
    assert!(toml.contains(&format!("key_file = \"{source}\"")), "{toml}");
    // Store and socket live in the folders systemd creates for the service.
    let state = unit_value("StateDirectory");
    let runtime = unit_value("RuntimeDirectory");
    assert!(
        toml.contains(&format!("path = \"/var/lib/{state}/")),
        "{toml}"
    );
    assert!(
        toml.contains(&format!("socket = \"/run/{runtime}/")),
        "{toml}"
    );
    // The sandbox lets the daemon do what it does: getifaddrs(3) (the webhook URL's address
    // with a wildcard listen) needs netlink; exec matchers run in it, and JIT runtimes (Node,
    // the JVM) abort under MemoryDenyWriteExecute, which children inherit.
    let families = unit_value("RestrictAddressFamilies");
    for f in ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"] {
        assert!(
            families.split_whitespace().any(|x| x == f),
            "{f} in {families}"
        );
    }
    assert!(
        !unit
            .lines()
            .any(|l| l.starts_with("MemoryDenyWriteExecute=yes")),
        "MemoryDenyWriteExecute would break JIT exec matchers"
    );
}
