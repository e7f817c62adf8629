//! Runs the daemon in the test process through the library's entry point,
//! `plexsync::daemon::run_with(config, listener, shutdown, hooks)`, with the same surface as
//! the binary driver ([`super::daemon::Daemon`]) so test bodies read the same.
//!
//! Each daemon gets its own multi-thread tokio runtime on its own thread. Every thread of that
//! runtime (workers and blocking pool) starts with a thread-default tracing dispatcher that
//! writes the binary's stderr lines (`plexsync::logging::lines_subscriber`, control characters
//! escaped) into this daemon's buffer, so `log()` reads what `plexsync run` would have written,
//! daemon by daemon, although several run in one process. (Threads the daemon starts by
//! itself outside its runtime, like the store's writer thread, log nowhere.)
//!
//! Start-up is complete when the daemon sends `READY=1` to its own notify socket (the
//! injected sd_notify notifier), stop is the injected shutdown future, and a reload is the
//! injected trigger (the same `Shared::reload` path SIGHUP takes; the process's signals are
//! not the daemon's to take when several run in it). What needs a process — SIGKILL, SIGTERM,
//! RLIMIT_NOFILE, systemd's environment — stays with the binary driver.
//!
//! CLI commands still run the real binary against the daemon's unix socket.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plexsync::daemon::Hooks;
use plexsync::notify::Notifier;
use serde_json::Value;
use tokio::sync::{Notify, oneshot};

/// The filter the binary driver sets through RUST_LOG.
const DIRECTIVES: &str = "plexsync=debug,info";
const START_WITHIN: Duration = Duration::from_secs(30);
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// One daemon's log: every start appends to it, like the binary driver's log files.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the daemon sent to its notify socket, in order.
#[derive(Clone, Default)]
pub struct Notes(Arc<Mutex<Vec<String>>>);

impl Notes {
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn count(&self, f: impl Fn(&str) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|m| f(m)).count()
    }
}

/// A daemon started by [`InProc::start`] and still running.
struct Running {
    /// Dropping it (or sending) is the shutdown.
    stop: oneshot::Sender<()>,
    /// `run_with`'s result, sent after the daemon's runtime has shut down (its store closed).
    done: oneshot::Receiver<Result<(), String>>,
    reload: Arc<Notify>,
}

pub struct InProc {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub addr: String,
    pub webhook_url: String,
    log: LogBuf,
    notes: Notes,
    running: Option<Running>,
    starts: u32,
    stops: usize,
}

thread_local! {
    /// The thread-default dispatcher of a daemon runtime's thread, kept for its lifetime.
    static LOG_GUARD: std::cell::RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { std::cell::RefCell::new(None) };
}

impl InProc {
    /// Write `config_text` to `dir/plexsync.toml` and start the daemon in process.
    pub async fn start(dir: &Path, config_text: &str) -> InProc {
        let config = dir.join("plexsync.toml");
        std::fs::write(&config, config_text).unwrap();
        let mut d = InProc {
            dir: dir.to_path_buf(),
            config,
            addr: String::new(),
            webhook_url: String::new(),
            log: LogBuf::default(),
            notes: Notes::default(),
            running: None,
            starts: 0,
            stops: 0,
        };
        d.spawn().await;
        d
    }

    async fn spawn(&mut self) {
        assert!(self.running.is_none(), "the daemon already runs");
        self.starts += 1;
        plexsync::daemon::install_tls_provider();
        let cfg = plexsync::config::Config::load(&self.config)
            .unwrap_or_else(|e| panic!("the test config does not load: {e}"));
        // Bound here (ephemeral port) and handed over, as `plexsync run` does after binding.
        let listener = std::net::TcpListener::bind(&cfg.server.listen).unwrap();
        listener.set_nonblocking(true).unwrap();
        self.addr = listener.local_addr().unwrap().to_string();

        // The service manager stand-in: a datagram socket the notifier sends to.
        let notify_path = self.dir.join(format!("notify-{}.sock", self.starts));
        let _ = std::fs::remove_file(&notify_path);
        let notify_sock = UnixDatagram::bind(&notify_path).unwrap();
        notify_sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let notifier = Notifier::to_socket(notify_path.as_os_str(), None).unwrap();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let notes = self.notes.clone();
        // Held by the daemon's thread while it runs.
        let alive = Arc::new(());
        let daemon_alive = alive.clone();
        std::thread::Builder::new()
            .name("inproc-notify".into())
            .spawn(move || {
                let mut ready = Some(ready_tx);
                let mut buf = vec![0u8; 4096];
                loop {
                    match notify_sock.recv(&mut buf) {
                        Ok(n) => {
                            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                            let is_ready = msg.lines().any(|l| l == "READY=1");
                            let stopping = msg.lines().any(|l| l == "STOPPING=1");
                            notes.0.lock().unwrap().push(msg);
                            if is_ready {
                                if let Some(r) = ready.take() {
                                    let _ = r.send(());
                                }
                            }
                            if stopping {
                                return;
                            }
                        }
                        // Timeout: stop listening once the daemon's thread is gone.
                        Err(_) => {
                            if Arc::strong_count(&alive) == 1 {
                                return;
                            }
                        }
                    }
                }
            })
            .unwrap();

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel();
        let reload = Arc::new(Notify::new());
        let hooks = Hooks {
            notifier,
            reload: Some(reload.clone()),
            // A daemon inside the test process cannot own the process's SIGHUP.
            hangup: None,
        };
        let dispatch = tracing::Dispatch::new(plexsync::logging::lines_subscriber(DIRECTIVES, {
            let log = self.log.clone();
            move || log.clone()
        }));
        std::thread::Builder::new()
            .name(format!("inproc-daemon-{}", self.starts))
            .spawn(move || {
                let _alive = daemon_alive;
                let _main_guard = tracing::dispatcher::set_default(&dispatch);
                let on_start = dispatch.clone();
                let rt = tokio::runtime::Builder::new_multi_thread()
                    // What `plexsync run` uses.
                    .worker_threads(2)
                    .enable_all()
                    .thread_name("inproc-daemon-rt")
                    .on_thread_start(move || {
                        let g = tracing::dispatcher::set_default(&on_start);
                        LOG_GUARD.with(|c| *c.borrow_mut() = Some(g));
                    })
                    .on_thread_stop(|| LOG_GUARD.with(|c| drop(c.borrow_mut().take())))
                    .build()
                    .unwrap();
                let r = rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let shutdown = async {
                        let _ = stop_rx.await;
                    };
                    plexsync::daemon::run_with(cfg, listener, shutdown, hooks).await
                });
                rt.shutdown_timeout(Duration::from_secs(10));
                let _ = done_tx.send(r.map_err(|e| e.to_string()));
            })
            .unwrap();

        let mut running = Running {
            stop: stop_tx,
            done: done_rx,
            reload,
        };
        tokio::select! {
            r = ready_rx => if r.is_err() {
                panic!("the daemon's notifier went away before READY=1:\n{}", self.log());
            },
            r = &mut running.done => panic!(
                "the daemon stopped during start-up ({:?}):\n{}",
                r.map_err(|_| "it panicked"),
                self.log()
            ),
            _ = tokio::time::sleep(START_WITHIN) => {
                panic!("the daemon did not report READY=1 in {START_WITHIN:?}:\n{}", self.log())
            }
        }
        self.running = Some(running);
        // The log reaches this daemon's buffer (logged before READY=1, on the daemon's task).
        assert!(
            self.log().matches("plexsync is running").count() == self.starts as usize,
            "the daemon's log is not captured:\n{}",
            self.log()
        );
        let st = self.status().await;
        assert_eq!(st["listen"].as_str(), Some(self.addr.as_str()), "{st}");
        self.webhook_url = st["webhook_url"].as_str().unwrap().to_string();
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("plexsync.sock")
    }

    /// Everything the daemon logged, over all its starts.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.0.lock().unwrap()).into_owned()
    }

    /// What it sent to the service manager (READY=1, STATUS=…, STOPPING=1), over all starts.
    pub fn notes(&self) -> Notes {
        self.notes.clone()
    }

    pub async fn api(&self, method: &str, path: &str) -> Value {
        let b = plexsync::client::request(&self.socket(), method, path, None)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()));
        serde_json::from_slice(&b).unwrap()
    }

    /// The admin token (made at first start), read over the socket like `plexsync web-url`.
    pub async fn admin_token(&self) -> String {
        let v = self.api("GET", "/api/web-url").await;
        let url = v["url"].as_str().unwrap_or_default();
        url.split_once("#token=")
            .map(|(_, t)| t.to_string())
            .unwrap_or_else(|| panic!("no token in the web-url {url}"))
    }

    pub async fn status(&self) -> Value {
        self.api("GET", "/api/status").await
    }

    pub async fn activity(&self) -> Vec<Value> {
        self.api("GET", "/api/activity?per_page=500").await["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Re-read the config file, as SIGHUP does (the same reload task and `Shared::reload`).
    pub fn reload(&self) {
        self.running
            .as_ref()
            .expect("the daemon runs")
            .reload
            .notify_one();
    }

    /// The shutdown (what SIGTERM does in the binary): wait until `run_with` has returned and
    /// the daemon's runtime is gone, its store closed. Some(0) for a clean stop, like the
    /// binary's exit code; None when it was not running.
    pub async fn stop(&mut self) -> Option<i32> {
        let Running { stop, done, .. } = self.running.take()?;
        let _ = stop.send(());
        self.stops += 1;
        match tokio::time::timeout(STOP_WITHIN, done).await {
            Ok(Ok(Ok(()))) => {
                // STOPPING=1 was sent before the daemon returned (its reading may lag).
                let (notes, stops) = (self.notes.clone(), self.stops);
                super::eventually("STOPPING=1", Duration::from_secs(5), || {
                    (notes.count(|m| m.contains("STOPPING=1")) >= stops).then_some(())
                })
                .await;
                Some(0)
            }
            Ok(Ok(Err(e))) => {
                eprintln!("the daemon stopped with an error: {e}");
                Some(1)
            }
            Ok(Err(_)) => panic!("the daemon's thread panicked:\n{}", self.log()),
            Err(_) => panic!(
                "the daemon did not stop in {STOP_WITHIN:?}:\n{}",
                self.log()
            ),
        }
    }

    /// A clean stop (if running) and a new start on the same folder and store.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// Run a CLI command (the real binary) against this daemon's config.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        super::daemon::cli(&self.config, args, stdin)
    }
}

impl Drop for InProc {
    /// The shutdown begins (the sender drops); the daemon's thread finishes on its own, so a
    /// test's runtime is never blocked here while the daemon still talks to its fakes.
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop.send(());
        }
    }
}
