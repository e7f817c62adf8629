//! The `exec` matcher: the users' escape hatch. It runs an external program and asks it to
//! match shows over JSON lines on the program's stdin/stdout (the protocol is in README.md).
//!
//! This crate owns the program's lifecycle as seen from the matcher chain. Building checks the
//! config only (the program file must exist and be executable) and starts nothing, so offline
//! commands, a stored secret and a reload never run the program. [`Matcher::probe`] — called
//! by the host when the daemon starts and by `plexsync check` — starts it and checks its hello,
//! so a wrong program or protocol version is a config error there; the instance it started
//! stays as the working one. Otherwise the working instance starts lazily on the first
//! request. Then: concurrent requests matched to replies by id, a per-request
//! timeout, restarts with exponential backoff when the program dies or hangs, and the
//! validation of every answer before it reaches the chain. Every failure of the program is a
//! transient error (the chain goes on; the play is retried later), except answers that break
//! the protocol or that the program itself calls permanent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use plexsync_plugin_api::{
    BoxFuture, Catalogue, MatchOutcome, Matcher, PluginContext, PluginError, ShowQuery,
};

mod child;
pub mod config;
pub mod protocol;

use child::{CatalogueSlot, Conn, RequestError};
pub use child::{HANG_TIMEOUTS, PROTOCOL_ENV};
pub use config::ExecConfig;
use protocol::Reply;

/// The `kind` name this matcher is configured under.
pub const KIND: &str = "exec";
/// First restart delay; it doubles with each failure in a row up to `restart_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The working instance and the restart bookkeeping.
#[derive(Default)]
struct Supervisor {
    conn: Option<Arc<Conn>>,
    /// Deaths and failed starts in a row (reset by an instance that answered a request).
    failures: u32,
    /// No new start before this.
    retry_at: Option<Instant>,
}

/// Matches shows by asking an external program.
pub struct ExecMatcher {
    cfg: ExecConfig,
    /// The name from the first hello, once an instance has started.
    hello_name: std::sync::OnceLock<String>,
    /// The program's file name, the name until then.
    file_name: String,
    catalogue: Arc<CatalogueSlot>,
    supervisor: tokio::sync::Mutex<Supervisor>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for ExecMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecMatcher")
            .field("name", &self.name())
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Build the matcher from its config table (`[[matchers]] kind = "exec"`).
pub fn build(ctx: &PluginContext) -> Result<ExecMatcher, PluginError> {
    ExecMatcher::build(ctx)
}

/// The delay before the next start after `failures` failures in a row.
fn backoff(failures: u32, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .min(max)
        .saturating_mul(1 << doublings)
        .min(max)
}

impl ExecMatcher {
    /// Validate the config (the program must be an executable file). Starts nothing: the
    /// program runs from [`Matcher::probe`] or the first request on.
    pub fn build(ctx: &PluginContext) -> Result<ExecMatcher, PluginError> {
        let cfg = ExecConfig::from_context(ctx)?;
        Ok(ExecMatcher {
            file_name: cfg.file_name(),
            cfg,
            hello_name: std::sync::OnceLock::new(),
            catalogue: Arc::new(CatalogueSlot::default()),
            supervisor: tokio::sync::Mutex::new(Supervisor::default()),
            next_id: AtomicU64::new(1),
        })
    }

    /// The program's name: from its hello once an instance started, else its file name.
    pub fn name(&self) -> &str {
        self.hello_name.get().unwrap_or(&self.file_name)
    }

    /// Whether an instance of the program is running now.
    pub async fn is_running(&self) -> bool {
        self.supervisor
            .lock()
            .await
            .conn
            .as_ref()
            .is_some_and(|c| c.is_alive())
    }

    /// Start an instance and keep it as the working one; a program that cannot be started or
    /// says no proper hello is a config error about `command`.
    async fn start_now(&self) -> Result<(), PluginError> {
        let mut s = self.supervisor.lock().await;
        if s.conn.as_ref().is_some_and(|c| c.is_alive()) {
            return Ok(());
        }
        let c = Conn::start(&self.cfg, self.catalogue.clone())
            .await
            .map_err(|why| {
                PluginError::config(format!("{}: {why}", self.cfg.command.display()))
                    .with_key("command")
            })?;
        let _ = self.hello_name.set(c.name.clone());
        tracing::info!(plugin = %c.name, command = %self.cfg.command.display(), "exec program started (probe)");
        s.conn = Some(Arc::new(c));
        s.failures = 0;
        s.retry_at = None;
        Ok(())
    }

    /// The running instance, starting one when there is none and the backoff allows.
    async fn connection(&self) -> Result<Arc<Conn>, PluginError> {
        let mut s = self.supervisor.lock().await;
        if let Some(c) = s.conn.clone() {
            if c.is_alive() {
                return Ok(c);
            }
            s.failures = if c.healthy() {
                1
            } else {
                s.failures.saturating_add(1)
            };
            let wait = backoff(s.failures, self.cfg.restart_backoff);
            s.retry_at = Some(c.died_at().unwrap_or_else(Instant::now) + wait);
            s.conn = None;
            tracing::warn!(plugin = %c.name, failures = s.failures, restart_after_ms = wait.as_millis() as u64, "exec program is gone; it is restarted after the backoff");
        }
        if let Some(at) = s.retry_at {
            let now = Instant::now();
            if now < at {
                return Err(PluginError::transient(format!(
                    "exec program {} is restarting in {} ms",
                    self.name(),
                    (at - now).as_millis()
                )));
            }
        }
        match Conn::start(&self.cfg, self.catalogue.clone()).await {
            Ok(c) => {
                let c = Arc::new(c);
                let _ = self.hello_name.set(c.name.clone());
                tracing::info!(plugin = %c.name, command = %self.cfg.command.display(), "exec program started");
                s.conn = Some(c.clone());
                s.retry_at = None;
                Ok(c)
            }
            Err(why) => {
                s.failures = s.failures.saturating_add(1);
                let wait = backoff(s.failures, self.cfg.restart_backoff);
                s.retry_at = Some(Instant::now() + wait);
                tracing::error!(plugin = %self.name(), error = %why, restart_after_ms = wait.as_millis() as u64, "cannot start the exec program");
                Err(PluginError::transient(format!(
                    "exec program {} cannot be started: {why}",
                    self.name()
                )))
            }
        }
    }

    async fn ask(&self, query: &ShowQuery) -> Result<MatchOutcome, PluginError> {
        let conn = self.connection().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let line = protocol::match_request(id, query);
        let name = &conn.name;
        match conn.request(id, line, self.cfg.timeout).await {
            Ok(Reply::Result(value)) => {
                let catalogue = self.catalogue.current();
                match protocol::outcome(value, &catalogue, &format!("exec:{name}")) {
                    Ok((outcome, unknown)) => {
                        if !unknown.is_empty() {
                            tracing::warn!(plugin = %name, show_ids = ?unknown, show = %query.title, "exec program named candidates that are not in the catalogue; dropped");
                        }
                        Ok(outcome)
                    }
                    Err(why) => {
                        tracing::warn!(plugin = %name, id, error = %why, "exec program broke the protocol");
                        Err(PluginError::permanent(format!(
                            "exec program {name}: protocol error: {why}"
                        )))
                    }
                }
            }
            Ok(Reply::Error(e)) => {
                let message = format!("exec program {name}: {}", e.message);
                Err(if e.transient {
                    PluginError::transient(message)
                } else {
                    PluginError::permanent(message)
                })
            }
            Err(RequestError::Timeout { killed }) => Err(PluginError::transient(format!(
                "exec program {name} did not answer within {} ms{}",
                self.cfg.timeout.as_millis(),
                if killed {
                    " (it timed out repeatedly and was killed)"
                } else {
                    ""
                }
            ))),
            Err(RequestError::Gone) => Err(PluginError::transient(format!(
                "exec program {name} exited before answering"
            ))),
            Err(RequestError::Busy) => Err(PluginError::transient(format!(
                "exec program {name} is not keeping up (too many requests queued)"
            ))),
        }
    }
}

impl Matcher for ExecMatcher {
    fn kind(&self) -> &str {
        KIND
    }

    fn set_catalogue(&self, catalogue: Arc<Catalogue>) {
        if !self.catalogue.set(catalogue) {
            return;
        }
        // Push it now when an instance runs; if the lock is busy (an instance is starting),
        // the writer sends it before the next request anyway.
        if let Ok(s) = self.supervisor.try_lock() {
            if let Some(c) = &s.conn {
                c.notify_catalogue();
            }
        }
    }

    fn match_show<'a>(
        &'a self,
        query: &'a ShowQuery,
    ) -> BoxFuture<'a, Result<MatchOutcome, PluginError>> {
        Box::pin(self.ask(query))
    }

    /// Start the program and check its hello (`plexsync run` and `check` only); the instance
    /// stays as the working one.
    fn probe(&self) -> BoxFuture<'_, Result<(), PluginError>> {
        Box::pin(self.start_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sample.toml is what README.md tells people to paste: it must parse, build (starting
    /// nothing) and pass the probe (which starts the example program for its hello).
    #[tokio::test]
    async fn the_sample_config_parses_builds_and_probes() {
        let text = include_str!("../sample.toml");
        let doc: toml::Table = toml::from_str(text).unwrap();
        let tables = doc["matchers"].as_array().unwrap();
        assert_eq!(tables.len(), 1);
        let mut table = tables[0].as_table().unwrap().clone();
        assert_eq!(table.remove("kind").unwrap().as_str(), Some(KIND));
        let ctx = PluginContext {
            config: serde_json::to_value(&table).unwrap(),
            secrets: Default::default(),
            cache: Arc::new(plexsync_plugin_api::MemoryCache::default()),
            config_dir: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        };
        let m = build(&ctx).unwrap();
        assert_eq!(m.name(), "title_table.py");
        assert!(!m.is_running().await);
        m.probe().await.unwrap();
        assert!(m.is_running().await);
        assert_eq!(m.name(), "title_table");
        assert_eq!(m.cfg.timeout, Duration::from_secs(5));
        assert_eq!(m.cfg.args, ["examples/title_table.json"]);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, max), Duration::from_millis(100));
        assert_eq!(backoff(2, max), Duration::from_millis(200));
        assert_eq!(backoff(4, max), Duration::from_millis(800));
        assert_eq!(backoff(30, max), max);
        assert_eq!(backoff(u32::MAX, max), max);
        // A maximum below the first step caps every delay.
        assert_eq!(
            backoff(1, Duration::from_millis(10)),
            Duration::from_millis(10)
        );
    }
}
