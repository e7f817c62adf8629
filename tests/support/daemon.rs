//! Drives the real `plexsync` binary: writes a config into a temp folder, starts `plexsync run`,
//! finds its port through the admin socket, kills (SIGKILL) and restarts it, runs CLI commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_plexsync");

/// `[plex]` lines ([`config_with_plex`]) that sync the owner and the real captures' shared user
/// ([`super::plex::SHARED_USER`], who must be listed: [`super::plex::FakePlex::list_shared_user`]):
/// for tests that post `support::NEW_AGENT_SCROBBLE` to be about something else than whose
/// plays are synced.
pub const SYNC_SHARED_USER: &str = "accounts = [1, \"播放\"]\n";

/// A config for tests: listen on an ephemeral port, fast retries.
pub fn config(plex_url: &str, tracker_url: &str, extra: &str) -> String {
    config_with_plex(plex_url, tracker_url, "", extra)
}

/// [`config`] with `plex` (lines of keys) added to its `[plex]` table.
pub fn config_with_plex(plex_url: &str, tracker_url: &str, plex: &str, extra: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"

[plex]
url = "{plex_url}"
timeout = "2s"
{plex}
[tracker]
url = "{tracker_url}"
timeout = "2s"

[outbox]
initial_backoff = "100ms"
max_backoff = "500ms"
max_attempts = 50

[log]
level = "debug"

[[matchers]]
kind = "guid"
{extra}"#
    )
}

pub struct Daemon {
    pub dir: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    pub addr: String,
    pub webhook_url: String,
    starts: u32,
    /// RLIMIT_NOFILE (soft, hard) set in the daemon before exec; None: inherited.
    nofile: Option<(u64, u64)>,
}

impl Daemon {
    /// Write `config_text` to `dir/plexsync.toml` and start the daemon.
    pub async fn start(dir: &Path, config_text: &str) -> Daemon {
        Self::start_with_nofile(dir, config_text, None).await
    }

    /// [`Daemon::start`] with the daemon's RLIMIT_NOFILE set to (soft, hard), as systemd does.
    pub async fn start_with_nofile(
        dir: &Path,
        config_text: &str,
        nofile: Option<(u64, u64)>,
    ) -> Daemon {
        let mut d = Self::new(dir, config_text, nofile);
        d.spawn().await;
        d
    }

    /// Write the config and start the daemon without waiting for it to come up, for tests
    /// that act during the start; [`Daemon::wait_up`] waits for it.
    pub fn launch(dir: &Path, config_text: &str) -> Daemon {
        let mut d = Self::new(dir, config_text, None);
        d.launch_child();
        d
    }

    fn new(dir: &Path, config_text: &str, nofile: Option<(u64, u64)>) -> Daemon {
        let config = dir.join("plexsync.toml");
        std::fs::write(&config, config_text).unwrap();
        Daemon {
            dir: dir.to_path_buf(),
            config,
            child: None,
            addr: String::new(),
            webhook_url: String::new(),
            starts: 0,
            nofile,
        }
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("plexsync.sock")
    }

    pub fn log(&self) -> String {
        let mut all = String::new();
        for i in 1..=self.starts {
            all.push_str(
                &std::fs::read_to_string(self.dir.join(format!("daemon-{i}.log")))
                    .unwrap_or_default(),
            );
        }
        all
    }

    async fn spawn(&mut self) {
        self.launch_child();
        self.wait_up().await;
    }

    fn launch_child(&mut self) {
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.join(format!("daemon-{}.log", self.starts))).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&self.config)
            .env_remove("STATE_DIRECTORY")
            .env_remove("RUNTIME_DIRECTORY")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env("RUST_LOG", "plexsync=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .nofile(self.nofile)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Wait (up to 20 s) until the daemon answers on its admin socket; panics with its log if
    /// it exits first.
    pub async fn wait_up(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(b) =
                plexsync::client::request(&self.socket(), "GET", "/api/status", None).await
            {
                let v: Value = serde_json::from_slice(&b).unwrap();
                self.addr = v["listen"].as_str().unwrap().to_string();
                self.webhook_url = v["webhook_url"].as_str().unwrap().to_string();
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "daemon exited with {status} during start-up:\n{}",
                    self.log()
                );
            }
            if tokio::time::Instant::now() > deadline {
                panic!("daemon did not come up:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
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

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        unsafe_sigterm(c.id());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                panic!("daemon did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send a signal (`HUP`, `TERM`, …) to the running daemon.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("the daemon runs").id();
        let _ = Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status();
    }

    /// Wait for the daemon to exit by itself (after a signal); returns the exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                panic!("daemon did not exit in {within:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Run a CLI command against this daemon's config.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        cli(&self.config, args, stdin)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

trait NofileExt {
    fn nofile(&mut self, limits: Option<(u64, u64)>) -> &mut Self;
}

impl NofileExt for Command {
    /// setrlimit(RLIMIT_NOFILE) in the child between fork and exec.
    fn nofile(&mut self, limits: Option<(u64, u64)>) -> &mut Self {
        let Some((soft, hard)) = limits else {
            return self;
        };
        use std::os::unix::process::CommandExt;
        let r = libc::rlimit {
            rlim_cur: soft as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: setrlimit is async-signal-safe and touches only `r`, copied into the closure.
        unsafe {
            self.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        }
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// Run `plexsync ARGS --config CONFIG` with optional stdin.
pub fn cli(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("STATE_DIRECTORY")
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}
