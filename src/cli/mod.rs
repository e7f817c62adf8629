//! The CLI's commands (part of the binary). Every state command is one typed admin API call
//! through [`Admin`]: to the running daemon over its 0600 socket or, when none answers, served
//! in process by the same handlers on the store ([`plexsync::admin::call`]), so an answer never
//! depends on whether the daemon runs. People get text; `--json` prints the API's answer.

pub mod backfill;
pub mod operate;
pub mod out;
pub mod report;
pub mod settings;
pub mod setup;
pub mod sync;
pub mod table;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use hyper::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use plexsync::admin;
use plexsync::client::{self, ClientError};
use plexsync::config::Config;
use plexsync::daemon::Shared;

#[allow(unused_imports)]
pub(crate) use out::{out, outln};

pub fn load(path: &Path) -> Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Unix seconds (or milliseconds with `millis`) as RFC 3339 UTC, or "never".
///
/// A time past year 9999 (a `viewedAt` in milliseconds read as seconds, which history rows may
/// carry) is shown as its number: RFC 3339 has no form for it.
pub fn when(ts: Option<i64>, millis: bool) -> String {
    /// 9999-12-31T23:59:59Z.
    const LAST: u64 = 253_402_300_799;
    match ts {
        Some(t) => {
            let n = t.max(0) as u64;
            let d = if millis {
                std::time::Duration::from_millis(n)
            } else {
                std::time::Duration::from_secs(n)
            };
            match std::time::UNIX_EPOCH.checked_add(d) {
                Some(at) if d.as_secs() <= LAST => {
                    humantime::format_rfc3339_seconds(at).to_string()
                }
                _ => format!("{t} (past year 9999)"),
            }
        }
        None => "never".into(),
    }
}

/// Print a value as the API's JSON.
pub fn print_json<T: Serialize>(v: &T) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// How much past the daemon's `request_timeout` a read's answer is awaited (a loaded machine).
const READ_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a command waits for the socket of a daemon that holds the store but does not
/// answer yet (it is starting).
const STARTING_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the store could not be opened in process.
pub enum Offline {
    /// A running (or starting) daemon holds it.
    Locked,
    Other(anyhow::Error),
}

/// Where a command's request went ([`Admin::reach`]): the daemon's answer, or what was
/// opened here in its stead.
pub enum Reached<T> {
    Online(Vec<u8>),
    Offline(T),
}

/// Where the CLI's admin calls go: the running daemon, or the store opened in process.
pub struct Admin {
    cfg: Config,
    offline: tokio::sync::OnceCell<Arc<Shared>>,
}

impl Admin {
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            offline: tokio::sync::OnceCell::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Ask the running daemon only; `Ok(None)` when none answers on the socket.
    pub async fn online(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>> {
        if self.offline.get().is_some() {
            return Ok(None);
        }
        let Some(sock) = self.cfg.socket_path() else {
            return Ok(None);
        };
        // A read is answered within the daemon's own request_timeout (a 408 past it); a
        // change is carried out whatever the time, so only a daemon that never answers ends it.
        let wait = if method == Method::GET {
            self.cfg.server.request_timeout + READ_MARGIN
        } else {
            client::CHANGE_WAIT
        };
        match client::request_within(&sock, method.as_str(), &format!("/api/{path}"), body, wait)
            .await
        {
            Ok(b) => Ok(Some(b)),
            Err(ClientError::NotRunning(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// One admin call: the daemon if it runs, else the store. `path` follows `/api/`.
    ///
    /// A daemon that is starting holds the store before its socket answers: then the socket
    /// is asked again for up to [`STARTING_WAIT`] (the store too, in case the daemon stopped)
    /// instead of failing at once.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let body = body.map(serde_json::to_vec).transpose()?;
        match self
            .reach(method.clone(), path, body.clone(), || async {
                self.offline_shared().await.cloned()
            })
            .await?
        {
            Reached::Online(bytes) => {
                serde_json::from_slice(&bytes).context("the daemon sent an unexpected answer")
            }
            Reached::Offline(shared) => {
                let bytes = admin::call(&shared, method, path, body.unwrap_or_default()).await?;
                serde_json::from_slice(&bytes).context("the admin API sent an unexpected answer")
            }
        }
    }

    /// THE way a command finds its daemon or, without one, its store: ask the socket; when
    /// nobody answers, `open` the store here. A daemon that is starting holds the store before
    /// its socket answers (`Offline::Locked`): then both are tried again for up to
    /// [`STARTING_WAIT`] instead of failing at once.
    pub async fn reach<T, F, Fut>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        mut open: F,
    ) -> Result<Reached<T>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Offline>>,
    {
        if let Some(bytes) = self.online(method.clone(), path, body.clone()).await? {
            return Ok(Reached::Online(bytes));
        }
        let deadline = std::time::Instant::now() + STARTING_WAIT;
        loop {
            match open().await {
                Ok(t) => return Ok(Reached::Offline(t)),
                Err(Offline::Locked) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    if let Some(bytes) = self.online(method.clone(), path, body.clone()).await? {
                        return Ok(Reached::Online(bytes));
                    }
                }
                Err(Offline::Locked) => anyhow::bail!(
                    "the store {} is in use by a running daemon, but its admin socket did not answer within {} s (is [admin] socket disabled?)",
                    self.cfg.store_path().display(),
                    STARTING_WAIT.as_secs()
                ),
                Err(Offline::Other(e)) => return Err(e),
            }
        }
    }

    /// The store opened in process (once per process).
    async fn offline_shared(&self) -> Result<&Arc<Shared>, Offline> {
        self.offline
            .get_or_try_init(|| admin::open_offline(self.cfg.clone()))
            .await
            .map_err(|e| match e {
                admin::OfflineError::Daemon(plexsync::daemon::DaemonError::Store(
                    plexsync::store::StoreError::Locked,
                )) => Offline::Locked,
                e => Offline::Other(e.into()),
            })
    }

    /// The daemon, or the store opened in process for a command that runs its job here when no
    /// daemon answers (`sync`, `backfill`; its admin calls then go in process too).
    pub async fn online_or_offline_state(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Reached<Arc<Shared>>> {
        self.reach(method, path, body, || async {
            self.offline_shared().await.cloned()
        })
        .await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }
}

#[cfg(test)]
mod tests {
    use super::when;

    #[test]
    fn times_past_year_9999_are_shown_not_panicked_on() {
        assert_eq!(when(Some(0), false), "1970-01-01T00:00:00Z");
        assert_eq!(when(Some(253_402_300_799), false), "9999-12-31T23:59:59Z");
        assert_eq!(
            when(Some(1_700_000_000_000), false),
            "1700000000000 (past year 9999)"
        );
        assert_eq!(
            when(Some(i64::MAX), false),
            format!("{} (past year 9999)", i64::MAX)
        );
        assert_eq!(when(Some(1_700_000_000_000), true), "2023-11-14T22:13:20Z");
        assert_eq!(when(None, false), "never");
    }
}
