//! The wiring: [`run`] opens the shared state ([`crate::state`]), spawns the pipeline tasks
//! (and the conflicts' rematch), the poller, the accounts, reload and retention tasks and the HTTP server, reports to
//! systemd and owns the shutdown. Nothing in the library imports this module; it is the top
//! of the graph.
//! [`run`] is the testable entry point: tests hand it a config, a bound listener on
//! 127.0.0.1:0 and a shutdown future; [`run_with`] also takes the [`Hooks`] that `run` makes
//! from the environment (the sd_notify [`Notifier`], an extra reload trigger).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::notify::Notifier;
// The state's public items stay reachable as `daemon::…` for the binary and the tests.
pub use crate::state::*;

async fn guarded(guard: LiveGuard, task: impl Future<Output = ()>) {
    task.await;
    drop(guard);
}

/// What [`run_with`] takes from outside besides the config, the listener and the shutdown.
#[derive(Debug)]
pub struct Hooks {
    /// Where READY/STATUS/WATCHDOG/STOPPING go.
    pub notifier: Notifier,
    /// Another way to ask for a reload, besides SIGHUP: each `notify_one` re-reads the config
    /// file exactly as SIGHUP does (a daemon in a test process cannot own the process's signal).
    pub reload: Option<Arc<tokio::sync::Notify>>,
    /// SIGHUP, watched from before the daemon starts: until a handler exists SIGHUP's default
    /// action ends the process, and the start can take seconds (a locked store, an exec
    /// program's hello). One arriving during the start is a reload once the daemon runs.
    pub hangup: Option<tokio::signal::unix::Signal>,
}

impl Hooks {
    /// What `plexsync run` uses: the notifier from `$NOTIFY_SOCKET`, reloads on SIGHUP only.
    /// Needs the runtime; `plexsync run` calls it first thing, next to the SIGTERM handler.
    pub fn from_env() -> Hooks {
        let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; reloading needs a restart");
                None
            }
        };
        Hooks {
            notifier: Notifier::from_env(),
            reload: None,
            hangup,
        }
    }
}

/// SIGHUP (`systemctl reload plexsync`), or the injected trigger: re-read the config file; see
/// [`Shared::reload`].
async fn reload_task(
    shared: Arc<Shared>,
    trigger: Option<Arc<tokio::sync::Notify>>,
    mut hangup: Option<tokio::signal::unix::Signal>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let injected = || async {
        match &trigger {
            Some(t) => t.notified().await,
            None => std::future::pending().await,
        }
    };
    loop {
        let hup = async {
            match &mut hangup {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = hup => if r.is_none() { break },
            _ = injected() => {}
            _ = shutdown.changed() => break,
        }
        let path = shared.config().source.clone();
        // Off the runtime's workers: the new matchers index the catalogue, and the swap waits
        // for a publication in progress (see `Shared::reload`).
        let reload = {
            let shared = shared.clone();
            tokio::task::spawn_blocking(move || shared.reload())
        };
        let result = match reload.await {
            Ok(r) => r,
            Err(e) => {
                // The old configuration stays (nothing is swapped before the end); health and
                // `status` must say so, as for a refused file, not report all well.
                tracing::error!(config = %path.display(), error = %e, "configuration reload failed");
                shared.note_reload_refused(format!("the reload failed: {e}"));
                continue;
            }
        };
        match result {
            Ok(restart) if restart.is_empty() => {
                tracing::info!(config = %path.display(), "configuration reloaded")
            }
            Ok(restart) => tracing::warn!(
                config = %path.display(),
                restart_needed = %restart.join(", "),
                "configuration reloaded; changes to these keys take effect after a restart"
            ),
            Err(e) => tracing::error!(
                config = %path.display(),
                error = %e,
                "configuration reload refused; the running configuration stays"
            ),
        }
    }
}

/// Prune old activity rows at start-up and then daily.
async fn retention_task(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let cfg = shared.config().activity.clone();
        let before = crate::model::now_millis() - cfg.retention.as_millis() as i64;
        match shared.store.prune_activity(before, cfg.keep_failed).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned old activity rows"),
            Err(e) => tracing::warn!(error = %e, "cannot prune activity"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(86_400)) => {}
            _ = shutdown.changed() => break,
        }
    }
}

/// Run the daemon until `shutdown` resolves. `listener` is the already-bound webhook/admin
/// TCP listener.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    run_with(config, listener, shutdown, Hooks::from_env()).await
}

/// [`run`] with the [`Hooks`] given rather than taken from the environment.
pub async fn run_with(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    hooks: Hooks,
) -> Result<(), DaemonError> {
    let Hooks {
        notifier,
        reload,
        hangup,
    } = hooks;
    crate::http::raise_nofile_limit();
    let listen_addr = listener
        .local_addr()
        .map_err(|e| DaemonError::Io(e.to_string()))?;
    let socket_path = config.socket_path();
    let shared = open_shared_patiently(config, listen_addr).await?;
    // Only here (and in `plexsync check`) are plugins probed: an exec matcher's program is
    // started and checked now, so a broken one refuses the start.
    shared.probe_plugins().await?;
    // The first start on this store, kept forever: webhook loss counts plays viewed since.
    shared
        .store
        .note_first_start(crate::model::now_secs())
        .await?;

    let unix = match &socket_path {
        Some(p) => Some(
            crate::http::bind_unix(p)
                .map_err(|e| DaemonError::Io(format!("admin socket {}: {e}", p.display())))?,
        ),
        None => None,
    };

    let mut tasks = tokio::task::JoinSet::new();
    let live = |s: &Arc<Shared>| LiveGuard::new(s.clone());
    let (g1, g2, g3, g4, g5) = (
        live(&shared),
        live(&shared),
        live(&shared),
        live(&shared),
        live(&shared),
    );
    tasks.spawn(guarded(g1, crate::pipeline::resolver_task(shared.clone())));
    tasks.spawn(guarded(g2, crate::pipeline::exporter_task(shared.clone())));
    tasks.spawn(guarded(g3, crate::pipeline::catalogue_task(shared.clone())));
    tasks.spawn(guarded(
        g4,
        crate::sources::history::poller_task(shared.clone()),
    ));
    // Whether or not anything polls: webhooks need the server's accounts to tell a shared
    // user's play from the owner's (`[plex] accounts`).
    tasks.spawn(guarded(
        g5,
        crate::sources::accounts::accounts_task(shared.clone()),
    ));
    // The live source is optional (`[live] enabled`), so it is not one of the TASKS the
    // watchdog counts; it idles while disabled and a reload switches it on or off.
    tasks.spawn(crate::sources::live::live_task(shared.clone()));
    // Idle but for a tracker switch (or a restart with another one): open conflicts matched
    // against the old tracker are asked again once the new one's catalogue is read.
    tasks.spawn(crate::pipeline::rematch_task(shared.clone()));
    tasks.spawn(retention_task(shared.clone()));
    tasks.spawn(reload_task(shared.clone(), reload, hangup));
    shared.mark_serving();
    let http = tokio::spawn(crate::http::serve(shared.clone(), listener, unix));

    tracing::info!(
        listen = %listen_addr,
        store = %shared.store.path().display(),
        plex = %shared.config().plex.url,
        "plexsync is running; webhook URL: http://{listen_addr}/webhook/<secret> (see `plexsync webhook-url`)"
    );

    // READY=1 once the poll schedule is set up (config, store, listeners and tasks already
    // are); then ping the watchdog while healthy, until the shutdown signal.
    tokio::pin!(shutdown);
    let scheduled = tokio::time::timeout(
        Duration::from_secs(30),
        shared.wake.poll_scheduled.notified(),
    );
    let stopped_early = tokio::select! {
        r = scheduled => {
            if r.is_err() {
                tracing::warn!("the poll scheduler did not report within 30 s; reporting ready anyway");
            }
            false
        }
        _ = &mut shutdown => true,
    };
    if !stopped_early {
        notifier.ready(&crate::notify::status_line(&shared));
        let healthy = || shared.healthy() && !http.is_finished();
        let status = || crate::notify::status_line(&shared);
        tokio::select! {
            _ = crate::notify::supervise(&notifier, healthy, status) => {}
            _ = &mut shutdown => {}
        }
    }
    notifier.stopping();
    tracing::info!("shutting down");
    let _ = shared.shutdown.send(true);
    // In-flight requests and the current export get a deadline; what does not finish stays
    // pending in the store and is picked up on the next start.
    let deadline = Duration::from_secs(10);
    if tokio::time::timeout(deadline, http).await.is_err() {
        tracing::warn!("HTTP server did not stop within {deadline:?}");
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(deadline, drain).await.is_err() {
        tracing::warn!("pipeline tasks did not stop within {deadline:?}; their work stays pending");
    }
    if let Some(p) = socket_path {
        let _ = std::fs::remove_file(p);
    }
    tracing::info!("stopped");
    Ok(())
}

/// [`open_shared`], waiting up to 10 s while the store is locked: a CLI command started just
/// before the admin socket existed serves itself in process and holds the store for a moment.
async fn open_shared_patiently(
    config: Config,
    listen: std::net::SocketAddr,
) -> Result<Arc<Shared>, DaemonError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match open_shared(config.clone(), listen).await {
            Err(DaemonError::Store(crate::store::StoreError::Locked))
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{SwapPoint, SwapProbe, open_for_test};
    use plexsync_plugin_api::{CatalogShow, Catalogue};
    use std::sync::{Mutex, mpsc};

    #[derive(Clone, Copy, Debug)]
    enum Swap {
        Reload,
        Secret,
    }

    /// A reload (through the reload task, as SIGHUP) or a new secret that has to wait for a
    /// publication in progress waits on a blocking thread: the runtime, one thread here, goes
    /// on running other tasks meanwhile.
    fn a_swap_waiting_for_a_publication_leaves_the_runtime_free(swap: Swap) {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let shared = rt.block_on(open_for_test(dir.path()));
        // The publication stops inside its window (holding the swap lock) until released.
        let (indexed_tx, indexed_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let (waiting_tx, mut waiting_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let probe: SwapProbe = Arc::new(move |at| match at {
            SwapPoint::CatalogueIndexed => {
                let _ = indexed_tx.send(());
                let _ = release_rx.lock().unwrap().recv();
            }
            SwapPoint::Waiting => {
                let _ = waiting_tx.send(());
            }
        });
        shared.set_swap_probe(Some(probe));
        let publisher = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                shared.set_catalogue(Arc::new(Catalogue::new(vec![CatalogShow {
                    id: "1".into(),
                    title: "A".into(),
                    ..Default::default()
                }])))
            })
        };
        indexed_rx.recv().unwrap();

        let (alive_tx, alive_rx) = mpsc::channel::<()>();
        let runtime = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                rt.block_on(async move {
                    let task = match swap {
                        Swap::Reload => {
                            let trigger = Arc::new(tokio::sync::Notify::new());
                            let t = tokio::spawn(reload_task(
                                shared.clone(),
                                Some(trigger.clone()),
                                None,
                            ));
                            trigger.notify_one();
                            t
                        }
                        Swap::Secret => {
                            let shared = shared.clone();
                            tokio::spawn(async move {
                                shared
                                    .set_secret("plex-token", "a-new-token")
                                    .await
                                    .unwrap();
                            })
                        }
                    };
                    waiting_rx.recv().await.unwrap();
                    // Another task runs while the swap waits.
                    tokio::spawn(async {}).await.unwrap();
                    let _ = alive_tx.send(());
                    // The reload task ends at shutdown, once the reload it runs is through.
                    let _ = shared.shutdown.send(true);
                    task.await.unwrap();
                })
            })
        };
        // Only the failing case waits this long.
        let alive = alive_rx.recv_timeout(Duration::from_secs(20));
        release_tx.send(()).unwrap();
        publisher.join().unwrap();
        runtime.join().unwrap();
        shared.set_swap_probe(None);
        assert!(
            alive.is_ok(),
            "{swap:?}: the runtime stalled while the swap waited for the publication"
        );
    }

    #[test]
    fn a_reload_waiting_for_a_publication_leaves_the_runtime_free() {
        a_swap_waiting_for_a_publication_leaves_the_runtime_free(Swap::Reload);
    }

    #[test]
    fn a_secret_change_waiting_for_a_publication_leaves_the_runtime_free() {
        a_swap_waiting_for_a_publication_leaves_the_runtime_free(Swap::Secret);
    }
}
