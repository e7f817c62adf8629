//! What the daemon's tasks share ([`Shared`]): the store, the live config, plugins, catalogue
//! and Plex client (swapped atomically on reload or a secret change), the secrets, the status
//! board, metrics and wake-ups. [`open_shared`] builds it; the wiring that spawns the tasks on
//! it is [`crate::daemon`], which nothing in the library imports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use plexsync_plugin_api::{Catalogue, Secret};
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::accounts::AccountMap;
use crate::config::{Config, ConfigError, table_to_json};
use crate::model::now_secs;
use crate::plex::{PlexClient, PlexError};
use crate::registry::{self, Plugins};
use crate::secrets::{self, MasterKey, SecretError, WEBHOOK_SECRET};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("{0}")]
    Io(String),
    /// The configuration's plugins or the Plex client refuse the secrets (a value they cannot
    /// use): nothing was stored.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NoAddress(#[from] crate::hostaddr::NoAddress),
}

/// Which reader of Plex saw that the token works ([`Shared::note_plex_token_ok`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenWitness {
    Poll,
    Accounts,
    Live,
    /// A show look-up by the resolver.
    Lookup,
}

/// Whether a rejected Plex token is on record (the flag, or the last Plex error's kind).
fn token_rejection_noted(s: &RuntimeStatus) -> bool {
    s.plex_token_rejected || s.plex_error_kind == Some(crate::model::PollFailure::TokenRejected)
}

/// What the daemon knows about its surroundings, for status pages.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct RuntimeStatus {
    pub last_webhook_at: Option<i64>,
    pub plex_last_ok_at: Option<i64>,
    pub plex_error: Option<String>,
    pub plex_error_at: Option<i64>,
    pub tracker_last_ok_at: Option<i64>,
    pub tracker_error: Option<String>,
    pub catalogue_shows: usize,
    pub catalogue_loaded_at: Option<i64>,
    /// When the tracker last answered an empty catalogue that was refused (the current one
    /// with shows kept); cleared by the next catalogue with shows.
    #[serde(default)]
    pub catalogue_refused_empty_at: Option<i64>,
    /// The last history poll: when, and what it did or why it failed.
    pub last_poll: Option<crate::model::PollReport>,
    /// Set while Plex rejects the token (polling pauses with backoff).
    pub plex_token_rejected: bool,
    /// Polls run since start.
    pub polls: u64,
    /// The Plex server as `/identity` describes it (machine id, version).
    pub plex_server: Option<String>,
    /// The last configuration reload (SIGHUP): when, and why it was refused if it was.
    pub config_reloaded_at: Option<i64>,
    pub config_reload_error: Option<String>,
    /// Keys the file changed since the start that take effect only at a restart (the
    /// running daemon still uses their old values), and since when.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_needed: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_needed_since: Option<i64>,
    /// Health inputs (issue 12): when the current run of failures began, and what kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_reload_failed_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plex_error_kind: Option<crate::model::PollFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plex_error_since: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracker_error_kind: Option<crate::model::TrackerErrorKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracker_error_since: Option<i64>,
    /// The last tracker error came from reading its catalogue (not from an export): only a
    /// catalogue read that works again clears a refused key then, and a catalogue read never
    /// clears an export's 401/403 (a key may read shows and still not mark episodes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tracker_error_from_catalogue: bool,
    /// Plex's `friendlyName` (from `GET /`), for headers and status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plex_server_name: Option<String>,
    /// Plex's `machineIdentifier` (`/identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plex_machine_id: Option<String>,
    /// When the server's account list (`/accounts`) was last read, by this run or an earlier
    /// one (the list is kept in the store). None: never read, and until it is, webhooks of
    /// accounts plexsync cannot place are synced whatever `[plex] accounts` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plex_accounts_read_at: Option<i64>,
    /// Why the account-list task's reads fail (not a rejected token, which is
    /// `plex_token_rejected`), and since when; None while they work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts_error_since: Option<i64>,
}

/// `/api/status` → `live`: the connection to Plex's notification websocket
/// ([`crate::sources::live`]), served in `/api/status` as `live`. Times are unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LiveStatus {
    /// `[live] enabled`.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub connected: bool,
    /// When the current connection was made (None while disconnected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_since: Option<i64>,
    /// When the last message (any notification) arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message_at: Option<i64>,
    /// Connections made after the first one since the daemon started.
    #[serde(default)]
    pub reconnects: u64,
    /// Why the last attempt failed or the last connection ended (never a token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Health condition key → when it was first seen (unix s), for the health module.
pub type HealthClock = HashMap<&'static str, i64>;

/// Counters since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Webhooks by outcome: success, failed, ignored, duplicate.
    pub webhooks: [AtomicU64; 4],
    pub polls_ok: AtomicU64,
    pub polls_failed: AtomicU64,
    /// New plays by source: webhook, poll, backfill, library, live.
    pub plays: [AtomicU64; 5],
    pub exports_delivered: AtomicU64,
    pub exports_retried: AtomicU64,
    pub exports_dead: AtomicU64,
    /// Live source (issue 13): websocket messages by type (playing, timeline, activity,
    /// other) and connections made after the first.
    pub live_messages: [AtomicU64; 4],
    pub live_reconnects: AtomicU64,
    /// Live checks (a stop or a library change read against Plex's history) started, and
    /// running now (at most a few at once; more are left to the next poll).
    pub live_checks: AtomicU64,
    pub live_checks_running: AtomicU64,
}

impl Metrics {
    pub fn webhook(&self, status: crate::model::ActivityStatus) {
        use crate::model::ActivityStatus::*;
        let i = match status {
            Success => 0,
            Failed => 1,
            Ignored => 2,
            Duplicate => 3,
        };
        self.webhooks[i].fetch_add(1, Ordering::Relaxed);
    }
    pub fn plays(&self, source: plexsync_plugin_api::PlaySource, n: u64) {
        use plexsync_plugin_api::PlaySource::*;
        let i = match source {
            Webhook => 0,
            Poll => 1,
            Backfill => 2,
            Library => 3,
            Live => 4,
        };
        self.plays[i].fetch_add(n, Ordering::Relaxed);
    }
}

/// Long-lived tasks `/healthz` expects alive: resolver, exporter, catalogue, poller, accounts.
pub const TASKS: usize = 5;

/// Counts a task as alive for as long as it exists.
pub struct LiveGuard(Arc<Shared>);

impl LiveGuard {
    pub fn new(shared: Arc<Shared>) -> Self {
        shared.board.live_tasks.fetch_add(1, Ordering::SeqCst);
        LiveGuard(shared)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.board.live_tasks.fetch_sub(1, Ordering::SeqCst);
    }
}

/// State shared by the HTTP server and the pipeline tasks, in the groups a task reaches for:
/// the store, the live configuration ([`Live`], swapped atomically), the status board
/// ([`Board`]), the wake-ups ([`Wakeups`]) and the cancellation signal (`shutdown`).
pub struct Shared {
    pub store: Store,
    /// Config, plugins, catalogue, Plex client, accounts and secrets: read per unit of work
    /// through the accessors below, replaced whole by a reload or a secret change.
    live: Live,
    /// What the daemon tells about itself.
    pub board: Board,
    /// The tasks' wake-ups: work was committed, or something they depend on changed.
    pub wake: Wakeups,
    /// The cancellation signal: true once the daemon is stopping; every task subscribes.
    pub shutdown: watch::Sender<bool>,
    pub listen_addr: SocketAddr,
    /// Held while a backfill runs: one at a time.
    pub backfill: Arc<tokio::sync::Mutex<()>>,
    /// Held while a watched-state sync runs: one at a time.
    pub sync: Arc<tokio::sync::Mutex<()>>,
    /// Who is deciding an open conflict right now: a person, or the rematch after a tracker
    /// switch. One at a time per conflict ([`ConflictClaims`]).
    pub claims: ConflictClaims,
    /// Shows this process made in the tracker (or found a lost create had made) whose
    /// decision may not be recorded yet: the next create of the same show reuses the id
    /// rather than make a second show ([`CreatedShows`]).
    pub created: CreatedShows,
    /// A weak handle to this state, for work spawned from a request.
    me: std::sync::Weak<Shared>,
    key: MasterKey,
    webhook_secret: Secret,
    plex_client_id: String,
    /// The configuration the daemon started with: what a restart-only key still means.
    started_with: Arc<Config>,
    /// One secret change at a time: each validates against, and replaces, the whole map.
    secret_lock: tokio::sync::Mutex<()>,
    /// Held across every change to what the matchers hold: a catalogue publication (from
    /// handing the matchers the catalogue, which builds their indices, to making it the live
    /// one), a reload's and a secret change's build-and-swap of the plugins. Without it a
    /// reload could build new plugins from the old catalogue while a publication was indexing
    /// the new one on the plugins being replaced: the live matchers kept the old catalogue
    /// for good (a refresh bringing the same shows is skipped). A std mutex: never held
    /// across an `.await`.
    swaps: Mutex<()>,
    /// Test seam: called at the points of [`SwapPoint`], so a test can run a reload inside a
    /// publication's window without sleeping.
    #[cfg(test)]
    swap_probe: Mutex<Option<SwapProbe>>,
}

/// Where [`Shared::swap_probe`] is called.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SwapPoint {
    /// A publication gave every matcher the catalogue and has not made it live yet.
    CatalogueIndexed,
    /// A swap found the lock held and is about to wait for it.
    Waiting,
}

#[cfg(test)]
pub(crate) type SwapProbe = Arc<dyn Fn(SwapPoint) + Send + Sync>;

/// The live configuration and what is built from it; each value is swapped as a whole.
struct Live {
    config: RwLock<Arc<Config>>,
    plugins: RwLock<Arc<Plugins>>,
    catalogue: RwLock<Option<Arc<Catalogue>>>,
    plex: RwLock<Arc<PlexClient>>,
    accounts: RwLock<Arc<AccountMap>>,
    secrets: RwLock<HashMap<String, Secret>>,
}

/// The status board: what the daemon knows about itself and its surroundings, for `status`,
/// `/metrics`, the page, systemd's STATUS line and the watchdog.
pub struct Board {
    status: Mutex<RuntimeStatus>,
    pub metrics: Metrics,
    /// Progress of the running (or last) backfill, for the admin API.
    pub backfill_progress: Mutex<Option<crate::model::BackfillStatus>>,
    /// Progress of the running (or last) watched-state sync, for the admin API.
    pub sync_progress: Mutex<Option<crate::model::SyncStatus>>,
    /// Pipeline tasks currently running (see [`LiveGuard`]).
    pub live_tasks: AtomicUsize,
    /// Set once the HTTP server serves this state (false for the CLI's in-process state).
    serving: std::sync::atomic::AtomicBool,
    pub started: Instant,
    /// When each health condition was first seen (the health module keeps it).
    pub health: Mutex<HealthClock>,
    /// The live source's connection (issue 13), for `/api/status` and `/metrics`.
    pub live: Mutex<LiveStatus>,
    /// The exporter's figures: requests in flight, their latency, the request budget.
    pub export: crate::export_board::ExportBoard,
}

/// Open conflicts being decided right now, by show key: a person's decision (admin
/// `decide`: a *Create new* makes the tracker show over seconds) and the rematch of a
/// conflict of another tracker (pipeline/rematch.rs: look-ups, maybe a show created under
/// `[matching] auto_add_shows`). Each holds the conflict's claim from before it reads the
/// conflict until its write has committed, so neither acts on a conflict the other is
/// deciding: a person waits for the rematch of that one conflict and then finds it as the
/// rematch left it; the rematch passes over a conflict a person holds (and asks again later).
/// In memory: only one daemon process holds the store.
#[derive(Default)]
pub struct ConflictClaims {
    held: Mutex<std::collections::HashSet<String>>,
    released: Notify,
}

/// A held claim on one conflict ([`ConflictClaims`]); released when dropped.
#[must_use = "the claim is released when dropped"]
pub struct ConflictClaim<'a> {
    claims: &'a ConflictClaims,
    key: String,
}

impl ConflictClaims {
    fn held(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The claim on the conflict of `key`, or None while someone else holds it.
    pub fn try_claim(&self, key: &str) -> Option<ConflictClaim<'_>> {
        self.held().insert(key.to_string()).then(|| ConflictClaim {
            claims: self,
            key: key.to_string(),
        })
    }

    /// The claim on the conflict of `key`, once whoever holds it is done.
    pub async fn claim(&self, key: &str) -> ConflictClaim<'_> {
        loop {
            // Listening before the look, so a release between the two is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(c) = self.try_claim(key) {
                return c;
            }
            tracing::debug!(show_key = %key, "the conflict is being decided; waiting for it");
            released.await;
        }
    }
}

impl Drop for ConflictClaim<'_> {
    fn drop(&mut self) {
        self.claims.held().remove(&self.key);
        self.claims.released.notify_waiters();
    }
}

/// Shows created (or found created) in the tracker by this process, by the tracker instance
/// and the create's key (pipeline/resolve.rs `create_key`: TMDB id, else title and year): the
/// tracker's show id. Held in memory because the store may be what failed when the decision
/// that names the show could not be recorded (a full disk). Kept for the process's life, also
/// once a decision naming the show is written: a second conflict of the same show (another
/// server's, decided in the same bulk request) reuses it instead of making another. One entry
/// a show created in a tracker, never more.
#[derive(Default)]
pub struct CreatedShows {
    shows: Mutex<HashMap<(String, String), String>>,
}

impl CreatedShows {
    fn shows(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        self.shows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The show id a create of `key` made in the tracker `instance`, if this process made it.
    pub fn get(&self, instance: &str, key: &str) -> Option<String> {
        self.shows()
            .get(&(instance.to_string(), key.to_string()))
            .cloned()
    }

    pub fn insert(&self, instance: &str, key: &str, show_id: &str) {
        self.shows()
            .insert((instance.to_string(), key.to_string()), show_id.to_string());
    }

    pub fn remove(&self, instance: &str, key: &str) {
        self.shows()
            .remove(&(instance.to_string(), key.to_string()));
    }
}

/// One `Notify` per long-lived task: a writer signals the task that has new work.
#[derive(Default)]
pub struct Wakeups {
    /// New pending plays (webhook, poll, released conflict): the resolver.
    pub resolve: Notify,
    /// A poll was asked for (API, new Plex token, cron tick): the poller.
    pub poll: Notify,
    /// Set with `poll` by an explicit request ([`Shared::request_poll`]): poll even inside a
    /// back-off pause (a cron tick alone waits the pause out).
    pub poll_now: std::sync::atomic::AtomicBool,
    /// New outbox items or a changed exporter: the exporter.
    pub export: Notify,
    /// The tracker changed (reload, a created show): the catalogue task.
    pub catalogue: Notify,
    /// The poll schedule may have changed (reload): the poller re-reads it.
    pub schedule: Notify,
    /// Signalled once the poller has set up its schedule: the last step before READY=1.
    pub poll_scheduled: Notify,
    /// The live source's connection settings changed (`[live]`, the Plex URL, a new Plex
    /// token): it drops its connection and connects again at once (or stops).
    pub live: Notify,
    /// The matchers changed (reload, a new secret): the catalogue enrichment asks them for
    /// names again (pipeline/enrich.rs).
    pub enrich: Notify,
    /// A catalogue was published, or the resolver stored a conflict matched against a tracker
    /// that is no longer the current one: open conflicts of another tracker are matched again
    /// (pipeline/rematch.rs).
    pub conflicts: Notify,
    /// The Plex token or URL changed (a new secret, a reload): the accounts task reads the
    /// server's account list again at once (sources/accounts.rs).
    pub accounts: Notify,
    /// Moves on every change of the tracker's settings (a reload) or key (a new secret): the
    /// exporter sends at once what waits out a back-off earlier failures grew to minutes,
    /// since the change may be their fix (pipeline/export.rs).
    pub tracker_changes: std::sync::atomic::AtomicU64,
    /// When Plex's taking the token again last woke the paused readers.
    pub token_woken_at: std::sync::Mutex<Option<std::time::Instant>>,
    /// A wake-up held back by [`TOKEN_WAKE_EVERY`] is scheduled.
    pub token_wake_deferred: std::sync::atomic::AtomicBool,
}

/// The readers paused by a 401 are woken by another's success at most this often.
const TOKEN_WAKE_EVERY: Duration = Duration::from_secs(60);

fn read<T: Clone>(l: &RwLock<T>) -> T {
    match l.read() {
        Ok(g) => g.clone(),
        // A panic while holding the lock cannot leave these plain values half-written.
        Err(p) => p.into_inner().clone(),
    }
}

fn write<T>(l: &RwLock<T>, v: T) {
    match l.write() {
        Ok(mut g) => *g = v,
        Err(p) => *p.into_inner() = v,
    }
}

impl Shared {
    /// The sources' one way to journal a batch of plays ([`Store::ingest_batch`]): plays that
    /// a stored mapping resolved and queued in that commit wake the exporter (the resolver
    /// never sees them); the caller wakes the resolver for the rest, as it reports them.
    pub async fn ingest_batch(
        &self,
        plays: Vec<crate::model::Play>,
        cursor: Option<(String, i64)>,
        window_secs: i64,
        activity: fn(&crate::model::Play) -> Option<crate::model::Activity>,
        mapped: crate::store::ops::MappedPlays,
    ) -> Result<crate::store::ops::BatchCounts, StoreError> {
        let counts = self
            .store
            .ingest_batch(plays, cursor, window_secs, activity, mapped)
            .await?;
        if counts.queued > 0 {
            self.wake.export.notify_one();
        }
        Ok(counts)
    }

    pub fn self_ref(&self) -> Option<Arc<Shared>> {
        self.me.upgrade()
    }
    pub fn config(&self) -> Arc<Config> {
        read(&self.live.config)
    }
    pub fn plugins(&self) -> Arc<Plugins> {
        read(&self.live.plugins)
    }
    pub fn catalogue(&self) -> Option<Arc<Catalogue>> {
        read(&self.live.catalogue)
    }
    pub fn plex(&self) -> Arc<PlexClient> {
        read(&self.live.plex)
    }
    pub fn accounts(&self) -> Arc<AccountMap> {
        let map = read(&self.live.accounts);
        // Another server's list is not this one's people. `set_accounts` refuses one, but a
        // read of the old server that ends while a reload swaps `[plex] url` can pass its
        // check just before the swap: as good as no list until this server's is read.
        if map
            .server
            .as_deref()
            .is_some_and(|s| s != self.plex().base())
        {
            return Arc::new(AccountMap::default());
        }
        map
    }
    /// Remember the server's accounts (in memory and in the store, for the next start).
    pub fn set_accounts(&self, map: AccountMap) {
        if map
            .server
            .as_deref()
            .is_some_and(|s| s != self.plex().base())
        {
            // Read from the server the config named before a reload: not this one's people.
            tracing::debug!("an account list from the previous Plex server is not used");
            return;
        }
        if let Ok(bytes) = serde_json::to_vec(&map) {
            self.store.kv_put_detached(ACCOUNTS_KEY.into(), bytes, None);
        }
        let read_at = map.fetched_at;
        write(&self.live.accounts, Arc::new(map));
        self.with_status(|s| {
            s.plex_accounts_read_at = Some(read_at);
            // Read, by whichever reader (a poll too): the list's own failure is over.
            s.accounts_error = None;
            s.accounts_error_since = None;
        });
    }
    pub fn status(&self) -> RuntimeStatus {
        self.board
            .status
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }
    fn with_status(&self, f: impl FnOnce(&mut RuntimeStatus)) {
        if let Ok(mut g) = self.board.status.lock() {
            f(&mut g);
        }
    }
    pub fn webhook_secret(&self) -> &Secret {
        &self.webhook_secret
    }
    /// The `X-Plex-Client-Identifier` this daemon sends (the live source sends it too).
    pub fn plex_client_id(&self) -> &str {
        &self.plex_client_id
    }
    /// The live source's connection as it stands (`enabled` as configured now).
    pub fn live_status(&self) -> LiveStatus {
        let mut s = self
            .board
            .live
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default();
        s.enabled = self.config().live.enabled;
        s
    }
    /// Change the live source's connection status (the live source only).
    pub fn with_live_status(&self, f: impl FnOnce(&mut LiveStatus)) {
        if let Ok(mut g) = self.board.live.lock() {
            f(&mut g);
        }
    }
    /// Whether a daemon serves this state (the CLI's offline answers say `running: false`).
    pub fn serving(&self) -> bool {
        self.board.serving.load(Ordering::SeqCst)
    }
    /// Called by the wiring once the HTTP server is started on this state.
    pub fn mark_serving(&self) {
        self.board.serving.store(true, Ordering::SeqCst);
    }
    pub fn secret(&self, name: &str) -> Option<Secret> {
        read(&self.live.secrets).get(name).cloned()
    }

    /// The URL to paste into Plex.
    pub fn webhook_url(&self) -> Result<crate::hostaddr::PublicBase, DaemonError> {
        webhook_url(&self.config(), self.listen_addr, &self.webhook_secret)
    }

    /// The link that logs a browser in to the page (`plexsync web-url`).
    pub fn web_url(&self) -> Result<crate::hostaddr::PublicBase, DaemonError> {
        let token = self.secret(ADMIN_TOKEN).ok_or_else(|| {
            DaemonError::Io("no admin token is stored (it is made at start-up)".into())
        })?;
        web_url(&self.config(), self.listen_addr, &token)
    }

    /// A new browser session for the current admin token, valid for [`SESSION_TTL`]: the
    /// cookie value and the page key that must come with it ([`crate::session`]).
    pub fn mint_session(&self) -> Result<(String, Secret), DaemonError> {
        let token = self
            .secret(ADMIN_TOKEN)
            .ok_or_else(|| DaemonError::Io("no admin token is stored".into()))?;
        Ok(crate::session::mint(
            &self.key,
            &token,
            now_secs() + SESSION_TTL.as_secs() as i64,
        )?)
    }

    /// Whether `cookie` with `page_key` is a live session of the current admin token.
    pub fn session_valid(&self, cookie: &str, page_key: &str) -> bool {
        self.session_expires(cookie, page_key).is_some() && !self.session_revoked(page_key)
    }

    fn session_expires(&self, cookie: &str, page_key: &str) -> Option<i64> {
        let token = self.secret(ADMIN_TOKEN)?;
        crate::session::expires(&self.key, &token, cookie, page_key, now_secs())
    }

    /// Logged out: kept until the session would have expired. An unreadable store counts as
    /// revoked (refusing a session is the safe side; the page asks to log in again).
    fn session_revoked(&self, page_key: &str) -> bool {
        let key = format!("{REVOKED_SESSION}{}", crate::session::handle(page_key));
        !matches!(self.store.kv_get(&key), Ok(None))
    }

    /// End the session of `page_key` (one of `cookies`) for good, across restarts, if it is a
    /// valid one; a logout without a valid session changes nothing stored.
    pub async fn revoke_session(
        &self,
        cookies: &[&str],
        page_key: &str,
    ) -> Result<bool, StoreError> {
        let Some(expires) = cookies
            .iter()
            .find_map(|c| self.session_expires(c, page_key))
        else {
            return Ok(false);
        };
        let key = format!("{REVOKED_SESSION}{}", crate::session::handle(page_key));
        self.store
            .kv_put(key, Vec::new(), Some(expires.saturating_mul(1000)))
            .await?;
        Ok(true)
    }

    /// The tracker's catalogue was fetched again and is the current one, unchanged.
    pub fn note_catalogue_fresh(&self) {
        self.with_status(|s| {
            s.catalogue_loaded_at = Some(now_secs());
            s.catalogue_refused_empty_at = None;
        });
    }

    /// The tracker answered an empty catalogue and the current one was kept.
    pub fn note_catalogue_refused_empty(&self) {
        self.with_status(|s| {
            s.catalogue_refused_empty_at.get_or_insert(now_secs());
        });
    }

    /// Take [`Shared::swaps`] (a panic under it leaves nothing half-done worth refusing for:
    /// each swap writes its values last).
    fn lock_swaps(&self) -> std::sync::MutexGuard<'_, ()> {
        #[cfg(test)]
        match self.swaps.try_lock() {
            Ok(g) => return g,
            Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => self.probe(SwapPoint::Waiting),
        }
        self.swaps.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn probe(&self, at: SwapPoint) {
        let probe = self.swap_probe.lock().ok().and_then(|g| g.clone());
        if let Some(f) = probe {
            f(at);
        }
    }

    #[cfg(test)]
    pub(crate) fn set_swap_probe(&self, f: Option<SwapProbe>) {
        if let Ok(mut g) = self.swap_probe.lock() {
            *g = f;
        }
    }

    /// Make `c` the catalogue: every matcher indexes it (slow: on a blocking thread), then it
    /// is the live one. Under [`Shared::swaps`], so plugins swapped in meanwhile get it too.
    pub fn set_catalogue(&self, c: Arc<Catalogue>) {
        let _swap = self.lock_swaps();
        self.set_catalogue_locked(c);
    }

    /// [`Shared::set_catalogue`] for a catalogue the tracker `instance` answered, unless a
    /// reload has named another tracker since (checked under [`Shared::swaps`], which a reload
    /// holds while it drops the old tracker's catalogue): then nothing changes and it returns
    /// false, and the catalogue task fetches from the new one.
    pub fn set_catalogue_of(&self, c: Arc<Catalogue>, instance: &str) -> bool {
        let _swap = self.lock_swaps();
        if self.plugins().exporter.instance() != instance {
            return false;
        }
        self.set_catalogue_locked(c);
        true
    }

    fn set_catalogue_locked(&self, c: Arc<Catalogue>) {
        for m in &self.plugins().matchers {
            m.set_catalogue(c.clone());
        }
        #[cfg(test)]
        self.probe(SwapPoint::CatalogueIndexed);
        self.with_status(|s| {
            s.catalogue_shows = c.len();
            s.catalogue_loaded_at = Some(now_secs());
            if !c.is_empty() {
                s.catalogue_refused_empty_at = None;
            }
        });
        write(&self.live.catalogue, Some(c));
        // Plays that found no catalogue wait for this (see pipeline::resolve), and so do
        // conflicts matched against another tracker (pipeline::rematch).
        self.wake.resolve.notify_one();
        self.wake.conflicts.notify_one();
    }

    /// Hand every matcher the same catalogue with more names (pipeline/enrich.rs): unlike
    /// [`Shared::set_catalogue`] it is no new load, so the status's load time stays. Only
    /// while `still_current(live catalogue)` holds, checked under [`Shared::swaps`] so a
    /// publication of a newer catalogue cannot come between the check and the swap; returns
    /// whether it published.
    pub fn publish_catalogue(
        &self,
        c: Arc<Catalogue>,
        still_current: impl FnOnce(Option<&Arc<Catalogue>>) -> bool,
    ) -> bool {
        let _swap = self.lock_swaps();
        if !still_current(self.catalogue().as_ref()) {
            return false;
        }
        for m in &self.plugins().matchers {
            m.set_catalogue(c.clone());
        }
        write(&self.live.catalogue, Some(c));
        true
    }

    /// Whether the pipeline tasks and the store's writer run and the daemon is not stopping.
    /// A dead writer fails every write (each webhook answers 503, which Plex never retries),
    /// so it must stop the watchdog pings: systemd then restarts the daemon.
    pub fn healthy(&self) -> bool {
        !*self.shutdown.borrow()
            && self.board.live_tasks.load(Ordering::SeqCst) >= TASKS
            && !self.store.writer_died()
    }

    pub fn note_poll(&self, report: crate::model::PollReport) {
        if report.error.is_some() {
            self.board
                .metrics
                .polls_failed
                .fetch_add(1, Ordering::Relaxed);
        } else {
            self.board.metrics.polls_ok.fetch_add(1, Ordering::Relaxed);
        }
        self.board
            .metrics
            .plays(plexsync_plugin_api::PlaySource::Poll, report.plays_new);
        let rejected = report.failure == Some(crate::model::PollFailure::TokenRejected);
        self.with_status(|s| {
            s.plex_token_rejected = rejected;
            if let Some(e) = &report.error {
                if s.plex_error.is_none() || s.plex_error_kind != report.failure {
                    s.plex_error_since = Some(report.finished_at);
                }
                s.plex_error = Some(e.clone());
                s.plex_error_at = Some(report.finished_at);
                s.plex_error_kind = report.failure;
            } else {
                s.plex_error = None;
                s.plex_error_kind = None;
                s.plex_error_since = None;
            }
            s.last_poll = Some(report);
            s.polls += 1;
        });
    }

    /// Poll now, even inside a back-off pause: a person asked (`POST /api/poll`), or the
    /// Plex token changed.
    pub fn request_poll(&self) {
        self.wake.poll_now.store(true, Ordering::SeqCst);
        self.wake.poll.notify_one();
    }
    /// `client` answered `/identity` with `id`. An answer of the server the config named
    /// before a reload is not this one's identity: a late one would undo the reload's reset,
    /// and the new server's plays would be filed under, and its rating keys looked up as,
    /// the old one's.
    pub fn note_plex_identity(&self, client: &PlexClient, id: &crate::plex::history::Identity) {
        if client.base() != self.plex().base() {
            tracing::debug!(
                server = %id.machine_identifier,
                "an identity from the previous Plex server is not used"
            );
            return;
        }
        let text = match &id.version {
            Some(v) => format!("{} (PMS {v})", id.machine_identifier),
            None => id.machine_identifier.clone(),
        };
        self.with_status(|s| {
            if s.plex_machine_id.as_deref() != Some(id.machine_identifier.as_str()) {
                // Another server: its name is asked again.
                s.plex_server_name = None;
            }
            s.plex_machine_id = Some(id.machine_identifier.clone());
            s.plex_server = Some(text);
        });
    }
    /// Our Plex server's machine id (what a webhook calls `Server.uuid`), once known: noted
    /// from `/identity` by the poller, the live source or the resolver; None while it is not.
    pub fn plex_machine_id(&self) -> Option<String> {
        self.board
            .status
            .lock()
            .ok()
            .and_then(|s| s.plex_machine_id.clone())
    }
    /// The server's `friendlyName`, once known; None while it is not.
    pub fn plex_server_name(&self) -> Option<String> {
        self.status().plex_server_name
    }
    pub fn note_plex_server_name(&self, name: String) {
        self.with_status(|s| s.plex_server_name = Some(name));
    }
    pub fn note_webhook(&self) {
        self.with_status(|s| s.last_webhook_at = Some(now_secs()));
    }
    /// A request that needs the token succeeded: Plex is fine and takes the token. `by`: who
    /// saw it, for [`Self::token_accepted_again`].
    pub fn note_plex_ok(&self, by: TokenWitness) {
        let mut was_rejected = false;
        self.with_status(|s| {
            was_rejected = token_rejection_noted(s);
            s.plex_last_ok_at = Some(now_secs());
            s.plex_error = None;
            s.plex_error_kind = None;
            s.plex_error_since = None;
            s.plex_token_rejected = false;
        });
        if was_rejected {
            self.token_accepted_again(by);
        }
    }
    /// A read of `/accounts` answered: the token is good. An error the last poll met further on
    /// (a history page failing, the store) stays until this poll ends well ([`Shared::note_poll`]),
    /// so health neither drops it for the poll's length nor dates it anew after.
    pub fn note_plex_token_ok(&self, by: TokenWitness) {
        let mut was_rejected = false;
        self.with_status(|s| {
            was_rejected = token_rejection_noted(s);
            s.plex_last_ok_at = Some(now_secs());
            s.plex_token_rejected = false;
            if s.plex_error_kind == Some(crate::model::PollFailure::TokenRejected) {
                s.plex_error = None;
                s.plex_error_kind = None;
                s.plex_error_since = None;
            }
        });
        if was_rejected {
            self.token_accepted_again(by);
        }
    }
    /// Plex takes the token again after a rejection that one reader noted (the token was
    /// fixed on the server's side, or a plex.tv outage ended; a new secret wakes everything by
    /// itself). The other readers each sit out their own pause after a 401 — the poller up to
    /// an hour, the live connection up to `reconnect_max`, the account list up to 10 minutes —
    /// so health would say "fine" while nothing polls: they are woken to go on now.
    fn token_accepted_again(&self, by: TokenWitness) {
        // At most once a minute: readers may disagree for good (a proxy that refuses the
        // websocket's upgrade while plain requests pass), and each one's success would
        // otherwise wake the others past their pauses, round and round.
        // A wake-up held back is deferred, not dropped: a real recovery inside the minute
        // still ends the pauses, a minute later at most.
        {
            let mut last = self
                .wake
                .token_woken_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(wait) = last.and_then(|t| TOKEN_WAKE_EVERY.checked_sub(t.elapsed())) {
                let deferred = &self.wake.token_wake_deferred;
                if !deferred.swap(true, Ordering::SeqCst) {
                    if let (Some(me), Ok(rt)) =
                        (self.self_ref(), tokio::runtime::Handle::try_current())
                    {
                        rt.spawn(async move {
                            tokio::time::sleep(wait).await;
                            me.wake.token_wake_deferred.store(false, Ordering::SeqCst);
                            // Only if the token still works (no reader was refused since).
                            if !token_rejection_noted(&me.status()) {
                                me.token_accepted_again(by);
                            }
                        });
                    } else {
                        deferred.store(false, Ordering::SeqCst);
                    }
                }
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        tracing::info!(by = ?by, "Plex takes the token again: paused readers resume");
        if by != TokenWitness::Poll {
            self.request_poll();
        }
        if by != TokenWitness::Accounts {
            self.wake.accounts.notify_one();
        }
        // A live connection that is up needs no new one (waking it would reconnect it).
        if by != TokenWitness::Live && !self.live_status().connected {
            self.wake.live.notify_one();
        }
    }
    /// The account-list task's last read failed for another reason than the token (a 401 is
    /// [`Self::note_plex_error`]'s): `None` clears it.
    pub fn note_accounts_error(&self, error: Option<String>) {
        let now = now_secs();
        self.with_status(|s| match error {
            Some(e) => {
                if s.accounts_error.is_none() {
                    s.accounts_error_since = Some(now);
                }
                s.accounts_error = Some(e);
            }
            None => {
                s.accounts_error = None;
                s.accounts_error_since = None;
            }
        });
    }
    pub fn note_plex_error(&self, e: &PlexError) {
        use crate::model::PollFailure;
        let kind = match e {
            PlexError::Unauthorized { .. } => PollFailure::TokenRejected,
            PlexError::Malformed { .. } => PollFailure::Malformed,
            _ => PollFailure::Unreachable,
        };
        let now = now_secs();
        self.with_status(|s| {
            if s.plex_error.is_none() || s.plex_error_kind != Some(kind) {
                s.plex_error_since = Some(now);
            }
            s.plex_error = Some(e.to_string());
            s.plex_error_at = Some(now);
            s.plex_error_kind = Some(kind);
            if kind == PollFailure::TokenRejected {
                s.plex_token_rejected = true;
            }
        });
    }
    /// The tracker answered (`None`) or failed with a text only; see [`Self::note_tracker_error`].
    pub fn note_tracker(&self, error: Option<String>) {
        let now = now_secs();
        self.with_status(|s| match error {
            None => {
                s.tracker_last_ok_at = Some(now);
                s.tracker_error = None;
                s.tracker_error_kind = None;
                s.tracker_error_since = None;
                s.tracker_error_from_catalogue = false;
            }
            Some(e) => {
                if s.tracker_error.is_none() {
                    s.tracker_error_since = Some(now);
                }
                s.tracker_error = Some(e);
            }
        });
    }
    /// The tracker plugin failed: the error and its kind (a refused key or an outage), for
    /// health. The run of failures keeps its start while the kind stays the same.
    pub fn note_tracker_error(&self, e: &plexsync_plugin_api::PluginError) {
        self.note_tracker_failure(e, false);
    }

    /// [`Self::note_tracker_error`] for a catalogue read.
    pub fn note_catalogue_error(&self, e: &plexsync_plugin_api::PluginError) {
        self.note_tracker_failure(e, true);
    }

    fn note_tracker_failure(&self, e: &plexsync_plugin_api::PluginError, catalogue: bool) {
        let kind = crate::model::TrackerErrorKind::of(e);
        let now = now_secs();
        self.with_status(|s| {
            if s.tracker_error.is_none() || s.tracker_error_kind != Some(kind) {
                s.tracker_error_since = Some(now);
            }
            s.tracker_error = Some(e.to_string());
            s.tracker_error_kind = Some(kind);
            s.tracker_error_from_catalogue = catalogue;
        });
    }

    /// The tracker's catalogue was read: it answers. An export's refused key (401/403) stays
    /// until an export goes through, since reading shows says nothing of marking episodes.
    pub fn note_catalogue_ok(&self) {
        use crate::model::TrackerErrorKind::{Forbidden, Unauthorized};
        let now = now_secs();
        self.with_status(|s| {
            s.tracker_last_ok_at = Some(now);
            let export_auth = !s.tracker_error_from_catalogue
                && matches!(s.tracker_error_kind, Some(Unauthorized | Forbidden));
            if !export_auth {
                s.tracker_error = None;
                s.tracker_error_kind = None;
                s.tracker_error_since = None;
                s.tracker_error_from_catalogue = false;
            }
        });
    }

    /// Probe the running plugins (see [`registry::probe`]): the daemon's start does this once,
    /// after [`open_shared`]; nothing else that builds plugins (offline commands, a secret, a
    /// reload) does, so none of them starts an exec matcher's program.
    pub async fn probe_plugins(&self) -> Result<(), DaemonError> {
        let (cfg, plugins) = (self.config(), self.plugins());
        registry::probe(&cfg, &plugins).await?;
        Ok(())
    }

    /// Store a secret (encrypted) and make it take effect: plugins and the Plex client are
    /// rebuilt with it (built, not probed: nothing is started).
    /// All or nothing: a value the configuration's plugins or the Plex client would refuse
    /// is refused here, before anything is stored or swapped.
    pub async fn set_secret(&self, name: &str, value: &str) -> Result<(), DaemonError> {
        secrets::check_name(name)?;
        secrets::check_value(name, value)?;
        let _one_at_a_time = self.secret_lock.lock().await;
        let with_secret = || {
            let mut map = read(&self.live.secrets);
            map.insert(name.to_string(), Secret::new(value.to_string()));
            map
        };
        let refused = |e: &dyn std::fmt::Display| {
            DaemonError::Refused(format!("secret {name:?} refused: {e}"))
        };
        // Checked before anything is stored: what is built here is thrown away.
        let cfg = self.config();
        let map = with_secret();
        registry::build(&cfg, &map, Some(&self.store)).map_err(|e| refused(&e))?;
        plex_client(&cfg, &map, &self.plex_client_id).map_err(|e| refused(&e))?;
        let sealed = self.key.seal(name, value)?;
        self.store.put_secret(name.to_string(), sealed).await?;
        // Built again under the swap lock from what is live now: a reload (config) or a
        // publication (catalogue) may have come during the store's write, and plugins built
        // before it would undo theirs. On a blocking thread: the lock may be held for a
        // whole index build, and the matchers index the catalogue again here.
        let secret = Secret::new(value.to_string());
        match self.self_ref() {
            Some(me) => {
                let name = name.to_string();
                tokio::task::spawn_blocking(move || me.swap_in_secret(&name, secret))
                    .await
                    .map_err(|e| DaemonError::Io(format!("applying the secret failed: {e}")))??
            }
            None => self.swap_in_secret(name, secret)?,
        }
        if name == "tracker-key" {
            self.wake.tracker_changes.fetch_add(1, Ordering::SeqCst);
        }
        self.wake.resolve.notify_one();
        self.wake.export.notify_one();
        self.wake.enrich.notify_one();
        // The exporter was built again with the secret: its catalogue is read now, not after
        // the rest of a back-off that earlier refusals (a 401 before the key was set) grew to
        // minutes, so the "tracker refuses the key" condition clears as soon as it is fixed.
        self.wake.catalogue.notify_one();
        // A new Plex token is tried now, not after the rest of a 401 pause; the old token's
        // rejection is forgotten (the poll says at once if this one is refused too).
        if name == "plex-token" {
            self.with_status(|s| {
                if s.plex_token_rejected
                    || s.plex_error_kind == Some(crate::model::PollFailure::TokenRejected)
                {
                    s.plex_token_rejected = false;
                    s.plex_error = None;
                    s.plex_error_kind = None;
                    s.plex_error_since = None;
                }
            });
            self.request_poll();
            // The account list may have been refused with the old token: read it now.
            self.wake.accounts.notify_one();
            // The websocket was opened with the old token: open it again with this one.
            self.wake.live.notify_one();
        }
        tracing::info!(secret = name, "secret updated");
        Ok(())
    }

    /// [`Shared::set_secret`]'s last step, under [`Shared::swaps`]: plugins and the Plex
    /// client built from the live config and secrets with `secret` as `name`, handed the live
    /// catalogue, swapped in. CPU-bound (indices): call it on a blocking thread.
    fn swap_in_secret(&self, name: &str, secret: Secret) -> Result<(), DaemonError> {
        let _swap = self.lock_swaps();
        let cfg = self.config();
        let mut map = read(&self.live.secrets);
        map.insert(name.to_string(), secret);
        // Only a reload during the store's write can make this fail; the secret is stored
        // and applies at the next reload or start that accepts it.
        let refused = |e: &dyn std::fmt::Display| {
            DaemonError::Refused(format!(
                "secret {name:?} is stored, but the configuration reloaded meanwhile refuses it: {e}"
            ))
        };
        let plugins = registry::build(&cfg, &map, Some(&self.store)).map_err(|e| refused(&e))?;
        let plex = plex_client(&cfg, &map, &self.plex_client_id).map_err(|e| refused(&e))?;
        if let Some(c) = self.catalogue() {
            for m in &plugins.matchers {
                m.set_catalogue(c.clone());
            }
        }
        write(&self.live.secrets, map);
        write(&self.live.plugins, Arc::new(plugins));
        write(&self.live.plex, Arc::new(plex));
        Ok(())
    }

    /// The configuration the daemon started with: what the keys only a restart applies are.
    pub fn started_with(&self) -> &Config {
        &self.started_with
    }

    /// A reload was refused (or failed on its way): health shows why until one succeeds.
    pub fn note_reload_refused(&self, why: String) {
        self.with_status(|s| {
            s.config_reload_error = Some(why);
            s.config_reload_failed_at = Some(now_secs());
        });
    }

    /// Re-read the config file (SIGHUP). A valid file takes effect at once — poll schedule
    /// and settings, matchers, tracker settings, limits, accounts — with plugins and the Plex
    /// client rebuilt from it (built, not probed: an exec matcher's program starts with its
    /// first request); an invalid one (or one whose plugins refuse it) is refused and
    /// the running configuration stays. Returns the settings that only a restart applies.
    /// CPU-bound (every matcher indexes the catalogue) and may wait for a publication: call
    /// it on a blocking thread.
    pub fn reload(&self) -> Result<Vec<&'static str>, DaemonError> {
        let old = self.config();
        // Held from reading the secrets and the catalogue the plugins are built with to the
        // swap (see `swaps`); the file is read before.
        let loaded = Config::load(&old.source);
        let swap = self.lock_swaps();
        let result = loaded.map_err(DaemonError::from).and_then(|new| {
            let secrets = read(&self.live.secrets);
            let plugins = registry::build(&new, &secrets, Some(&self.store))?;
            let plex = plex_client(&new, &secrets, &self.plex_client_id)?;
            Ok((new, plugins, plex))
        });
        let (new, plugins, plex) = match result {
            Ok(built) => built,
            Err(e) => {
                self.note_reload_refused(e.to_string());
                return Err(e);
            }
        };
        // Against the start's values, not the last reload's: a second reload of the same
        // file still needs the restart the first one did.
        let boot = &self.started_with;
        let mut restart = Vec::new();
        if new.server.listen != boot.server.listen {
            restart.push("server.listen");
        }
        if new.store_path() != boot.store_path() {
            restart.push("store.path");
        }
        if new.key_path() != boot.key_path() {
            restart.push("secrets.key_file");
        }
        if new.socket_path() != boot.socket_path() {
            restart.push("admin.socket");
        }
        if new.log.level != boot.log.level {
            restart.push("log.level");
        }
        // The id Plex knows this client by is chosen once at start (and stored).
        if new.plex.client_identifier != boot.plex.client_identifier {
            restart.push("plex.client_identifier");
        }
        let plex_moved = new.plex.url != old.plex.url;
        let live_changed = new.live != old.live || plex_moved;
        // A new refresh interval counts too: the catalogue task is asleep for the old one.
        let tracker_changed = new.tracker.plugin.kind != old.tracker.plugin.kind
            || new.tracker.catalogue_refresh != old.tracker.catalogue_refresh
            || table_to_json(&new.tracker.plugin.settings)
                != table_to_json(&old.tracker.plugin.settings);
        // What the exporter talks to the tracker with (a new catalogue interval fixes no
        // failed export): the exporter sends what waits out a back-off (`tracker_changes`).
        let exporter_changed = new.tracker.plugin.kind != old.tracker.plugin.kind
            || table_to_json(&new.tracker.plugin.settings)
                != table_to_json(&old.tracker.plugin.settings);
        // Another tracker: the old one's show ids mean nothing to it, so its catalogue goes and
        // plays wait for the new one's (the catalogue task is woken below) instead of being
        // matched, and auto-mapped for good, against the wrong ids.
        let old_tracker = self.plugins().exporter.instance();
        let new_tracker = plugins.exporter.instance();
        let tracker_moved = old_tracker != new_tracker;
        if tracker_moved {
            tracing::warn!(from = %old_tracker, to = %new_tracker, "the tracker changed: its catalogue is read again before plays are matched; mappings made earlier keep their show ids");
            write(&self.live.catalogue, None);
        } else if let Some(c) = self.catalogue() {
            for m in &plugins.matchers {
                m.set_catalogue(c.clone());
            }
        }
        if plex_moved {
            // The old server's people are not this one's: until its list is read, webhooks of
            // accounts nobody can place are kept, not dropped. Before the new config is seen
            // (and the reload reported), so no webhook reads the new server's settings with the
            // old server's accounts.
            write(&self.live.accounts, Arc::new(AccountMap::default()));
        }
        write(&self.live.config, Arc::new(new));
        write(&self.live.plugins, Arc::new(plugins));
        write(&self.live.plex, Arc::new(plex));
        if tracker_moved {
            // Under the lock: the new tracker's first publication (which takes it) comes after.
            self.with_status(|s| {
                s.catalogue_shows = 0;
                s.catalogue_loaded_at = None;
                s.catalogue_refused_empty_at = None;
            });
        }
        drop(swap);
        self.with_status(|s| {
            s.config_reloaded_at = Some(now_secs());
            s.config_reload_error = None;
            if restart.is_empty() {
                s.restart_needed_since = None;
            } else if s.restart_needed.is_empty() {
                s.restart_needed_since = Some(now_secs());
            }
            s.restart_needed = restart.iter().map(|k| k.to_string()).collect();
            s.config_reload_failed_at = None;
            if plex_moved {
                // Another server, maybe: live plays must not be filed under the old one's
                // id (one viewing would be two plays), so it is asked again.
                s.plex_machine_id = None;
                s.plex_server = None;
                s.plex_server_name = None;
                s.plex_accounts_read_at = None;
            }
        });
        if plex_moved {
            self.request_poll();
            // Another server, maybe, with other accounts.
            self.wake.accounts.notify_one();
        }
        if tracker_changed {
            if exporter_changed {
                self.wake.tracker_changes.fetch_add(1, Ordering::SeqCst);
            }
            self.wake.catalogue.notify_one();
        }
        self.wake.schedule.notify_one();
        self.wake.resolve.notify_one();
        self.wake.export.notify_one();
        self.wake.enrich.notify_one();
        if live_changed {
            self.wake.live.notify_one();
        }
        Ok(restart)
    }
}

const ACCOUNTS_KEY: &str = "host:plex-accounts";

/// `plugin_kv` prefix of a logged-out session's handle ([`crate::session::handle`]).
const REVOKED_SESSION: &str = "host:session-revoked:";

/// The admin token's secret name.
pub const ADMIN_TOKEN: &str = "admin-token";

/// How long a browser stays logged in to the page.
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 86_400);

/// `<public base>/webhook/<secret>`; see [`crate::hostaddr::public_base`].
pub fn webhook_url(
    cfg: &Config,
    listen: SocketAddr,
    secret: &Secret,
) -> Result<crate::hostaddr::PublicBase, DaemonError> {
    let mut b = crate::hostaddr::public_base(cfg, listen)?;
    b.url = format!("{}/webhook/{}", b.url, secret.expose());
    Ok(b)
}

/// `<public base>/#token=<admin token>`: the fragment never leaves the browser (no server or
/// proxy log sees it); the page trades it for a session cookie and forgets it.
pub fn web_url(
    cfg: &Config,
    listen: SocketAddr,
    token: &Secret,
) -> Result<crate::hostaddr::PublicBase, DaemonError> {
    let mut b = crate::hostaddr::public_base(cfg, listen)?;
    b.url = format!("{}/#token={}", b.url, fragment_encode(token.expose()));
    Ok(b)
}

/// Percent-encode everything but RFC 3986's unreserved characters: an admin token may hold any
/// non-space character, and the page reads the fragment up to the first `&` and decodes it.
fn fragment_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Check the secrets against the configuration as the daemon would use them: every value's
/// own rules, then every plugin and the Plex client built with them (built only: no program
/// starts, nothing is asked over the network). `plexsync check`, the offline `secret set` and
/// [`Shared::set_secret`] all ask this, so none says OK for secrets the daemon would refuse
/// at start-up.
pub fn validate_secrets(
    cfg: &Config,
    secrets: &HashMap<String, Secret>,
) -> Result<(), DaemonError> {
    validated_plugins(cfg, secrets).map(drop)
}

/// `plexsync check`: [`validate_secrets`], then the plugins built with them probed as the
/// daemon's start probes them (the exec matcher's program started and its hello checked).
pub async fn check_config(
    cfg: &Config,
    secrets: &HashMap<String, Secret>,
) -> Result<(), DaemonError> {
    let plugins = validated_plugins(cfg, secrets)?;
    registry::probe(cfg, &plugins)
        .await
        .map_err(|e| DaemonError::Refused(e.to_string()))
}

fn validated_plugins(
    cfg: &Config,
    secrets: &HashMap<String, Secret>,
) -> Result<Plugins, DaemonError> {
    // The admin token's length rule applies when one is set; a shorter one stored by an
    // older release still starts the daemon, so it is not held against the config here.
    for (name, value) in secrets {
        if name != WEBHOOK_SECRET && name != ADMIN_TOKEN {
            secrets::check_value(name, value.expose())?;
        }
    }
    let plugins =
        registry::build(cfg, secrets, None).map_err(|e| DaemonError::Refused(e.to_string()))?;
    plex_client(cfg, secrets, "plexsync-check").map_err(|e| DaemonError::Refused(e.to_string()))?;
    Ok(plugins)
}

fn plex_client(
    cfg: &Config,
    secrets: &HashMap<String, Secret>,
    client_id: &str,
) -> Result<PlexClient, DaemonError> {
    PlexClient::new(
        &cfg.plex.url,
        secrets.get("plex-token").cloned(),
        client_id.to_string(),
        cfg.plex.timeout,
    )
    .map_err(|e| DaemonError::Io(format!("cannot build the Plex HTTP client: {e}")))
}

pub use crate::install_tls_provider;

/// Decrypt every stored secret. A secret sealed under another key is a start-up error: the
/// key file changed, and running on would silently drop the user's tokens.
pub fn load_secrets(
    store: &Store,
    key: &MasterKey,
) -> Result<HashMap<String, Secret>, DaemonError> {
    open_secrets(key, store.sealed_secrets()?)
}

/// Open sealed secrets (from the store, or from a running daemon's socket) with `key`.
pub fn open_secrets(
    key: &MasterKey,
    sealed: Vec<(String, crate::secrets::SealedSecret)>,
) -> Result<HashMap<String, Secret>, DaemonError> {
    let mut out = HashMap::new();
    for (name, s) in sealed {
        let plain = key.open(&name, &s)?;
        out.insert(name, plain);
    }
    Ok(out)
}

/// Re-encrypt every stored secret under `new` in one transaction (`plexsync rekey`). Secrets
/// already under `new` (an interrupted earlier run cannot leave any, but a repeated run does)
/// are kept; any secret neither key opens aborts the whole rekey. Returns how many were
/// re-encrypted.
pub async fn rekey(store: &Store, old: &MasterKey, new: &MasterKey) -> Result<usize, DaemonError> {
    let mut sealed = Vec::new();
    for name in store.secret_names()? {
        let Some(s) = store.sealed_secret(&name)? else {
            continue;
        };
        if s.key_id == new.id() {
            continue;
        }
        let plain = old.open(&name, &s)?;
        sealed.push((name.clone(), new.seal(&name, plain.expose())?));
    }
    let n = sealed.len();
    store.replace_secrets(sealed).await?;
    Ok(n)
}

/// The webhook secret, generated (≥ 128 bits) and stored on first use.
pub async fn ensure_webhook_secret(store: &Store, key: &MasterKey) -> Result<Secret, DaemonError> {
    ensure_generated(store, key, WEBHOOK_SECRET).await
}

/// The admin token, generated (256 bits) and stored on first use, so the admin API over TCP
/// is never open for want of a token. `plexsync secret set admin-token` replaces it.
pub async fn ensure_admin_token(store: &Store, key: &MasterKey) -> Result<Secret, DaemonError> {
    ensure_generated(store, key, ADMIN_TOKEN).await
}

/// A random secret under `name`, unless one is stored (then that one; also when another
/// process stored one first).
async fn ensure_generated(
    store: &Store,
    key: &MasterKey,
    name: &'static str,
) -> Result<Secret, DaemonError> {
    if let Some(sealed) = store.sealed_secret(name)? {
        return Ok(key.open(name, &sealed)?);
    }
    let fresh = if name == WEBHOOK_SECRET {
        secrets::hex(&secrets::random_bytes::<24>()?)
    } else {
        secrets::hex(&secrets::random_bytes::<32>()?)
    };
    let sealed = key.seal(name, &fresh)?;
    let s2 = store.clone();
    let stored =
        tokio::task::spawn_blocking(move || s2.put_secret_if_absent_blocking(name.into(), sealed))
            .await
            .map_err(|e| DaemonError::Io(e.to_string()))??;
    Ok(key.open(name, &stored)?)
}

async fn client_identifier(cfg: &Config, store: &Store) -> String {
    if let Some(id) = &cfg.plex.client_identifier {
        return id.clone();
    }
    const KEY: &str = "host:plex-client-identifier";
    if let Ok(Some(v)) = store.kv_get(KEY) {
        if let Ok(s) = String::from_utf8(v) {
            return s;
        }
    }
    let id = format!(
        "plexsync-{}",
        secrets::hex(&secrets::random_bytes::<8>().unwrap_or_default())
    );
    store.kv_put_detached(KEY.into(), id.clone().into_bytes(), None);
    id
}

/// Open the store, decrypt the secrets, build plugins and clients: the state the daemon's
/// tasks share. Also used by CLI commands that run the pipeline without a daemon (backfill,
/// the offline admin calls), so it builds the plugins without probing them; the daemon's
/// start probes them next ([`Shared::probe_plugins`]).
pub async fn open_shared(
    config: Config,
    listen_addr: SocketAddr,
) -> Result<Arc<Shared>, DaemonError> {
    install_tls_provider();
    let store_path = config.store_path();
    let store = tokio::task::spawn_blocking(move || Store::open(&store_path))
        .await
        .map_err(|e| DaemonError::Io(e.to_string()))??;
    let key = MasterKey::load_or_create(&config.key_path(), true)?;
    let mut secrets = load_secrets(&store, &key)?;
    let webhook_secret = ensure_webhook_secret(&store, &key).await?;
    if !secrets.contains_key(ADMIN_TOKEN) {
        let token = ensure_admin_token(&store, &key).await?;
        tracing::info!(
            "generated an admin token for the admin API over TCP; `plexsync web-url` prints a link that logs a browser in"
        );
        secrets.insert(ADMIN_TOKEN.to_string(), token);
    }
    let plugins = registry::build(&config, &secrets, Some(&store))?;
    let plex_client_id = client_identifier(&config, &store).await;
    let plex = plex_client(&config, &secrets, &plex_client_id)?;
    let (shutdown_tx, _) = watch::channel(false);
    // Another server's list (the config names a new one since) is no list for this one: until
    // this server's is read, webhooks of accounts it cannot place are kept, not dropped.
    let accounts: AccountMap = store
        .kv_get(ACCOUNTS_KEY)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<AccountMap>(&b).ok())
        .filter(|m| m.server.as_deref().is_none_or(|s| s == plex.base()))
        .unwrap_or_default();
    let status = RuntimeStatus {
        plex_accounts_read_at: (accounts.fetched_at > 0).then_some(accounts.fetched_at),
        ..Default::default()
    };
    let config = Arc::new(config);
    Ok(Arc::new_cyclic(|me| Shared {
        me: me.clone(),
        store,
        started_with: config.clone(),
        live: Live {
            config: RwLock::new(config),
            plugins: RwLock::new(Arc::new(plugins)),
            catalogue: RwLock::new(None),
            plex: RwLock::new(Arc::new(plex)),
            accounts: RwLock::new(Arc::new(accounts)),
            secrets: RwLock::new(secrets),
        },
        board: Board {
            status: Mutex::new(status),
            metrics: Metrics::default(),
            backfill_progress: Mutex::new(None),
            sync_progress: Mutex::new(None),
            export: Default::default(),
            live_tasks: AtomicUsize::new(0),
            serving: std::sync::atomic::AtomicBool::new(false),
            started: Instant::now(),
            health: Mutex::new(HealthClock::new()),
            live: Mutex::new(LiveStatus::default()),
        },
        key,
        webhook_secret,
        plex_client_id,
        wake: Wakeups::default(),
        shutdown: shutdown_tx,
        listen_addr,
        backfill: Arc::new(tokio::sync::Mutex::new(())),
        sync: Arc::new(tokio::sync::Mutex::new(())),
        claims: ConflictClaims::default(),
        created: CreatedShows::default(),
        secret_lock: tokio::sync::Mutex::new(()),
        swaps: Mutex::new(()),
        #[cfg(test)]
        swap_probe: Mutex::new(None),
    }))
}

/// Tests: the state of a daemon in `dir` (guid and title matchers, nothing reachable, no
/// polling), its config file written there so a reload can read it.
#[cfg(test)]
pub(crate) async fn open_for_test(dir: &std::path::Path) -> Arc<Shared> {
    const CONFIG: &str = r#"[server]
listen = "127.0.0.1:0"
[plex]
url = "http://127.0.0.1:9"
[tracker]
url = "http://127.0.0.1:9"
[admin]
socket = ""
[poll]
enabled = false
[[matchers]]
kind = "guid"
[[matchers]]
kind = "title"
"#;
    let path = dir.join("plexsync.toml");
    std::fs::write(&path, CONFIG).expect("write the test config");
    let cfg = Config::load(&path).expect("the test config loads");
    open_shared(cfg, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the test state opens")
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexsync_plugin_api::{CatalogShow, MatchOutcome, ShowQuery};
    use std::sync::mpsc;
    use std::thread::JoinHandle;

    /// One at a time per conflict: the rematch's `try_claim` passes over a held one, a person's
    /// `claim` waits for its release; other conflicts are free meanwhile.
    #[tokio::test]
    async fn a_conflict_is_claimed_by_one_at_a_time() {
        let claims = Arc::new(ConflictClaims::default());
        let first = claims.try_claim("a").expect("free");
        assert!(claims.try_claim("a").is_none());
        assert!(claims.try_claim("b").is_some());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiter = {
            let claims = claims.clone();
            tokio::spawn(async move {
                let _c = claims.claim("a").await;
                let _ = tx.send(());
            })
        };
        tokio::task::yield_now().await;
        drop(first);
        rx.await
            .expect("the waiter gets the claim once it is released");
        waiter.await.unwrap();
        assert!(claims.try_claim("a").is_some(), "released again");
    }

    /// A list written for another server (a read of the old one ending while a reload moved
    /// `[plex] url`) is never used for this one; this server's list and an earlier release's
    /// list (no server named) are.
    #[tokio::test]
    async fn another_servers_account_list_is_never_read_as_this_ones() {
        let dir = tempfile::tempdir().unwrap();
        let shared = open_for_test(dir.path()).await;
        let list = |server: Option<String>| AccountMap {
            accounts: vec![crate::accounts::Account {
                id: 1,
                name: "owner".into(),
            }],
            fetched_at: 1,
            server,
        };
        let here = shared.plex().base().to_string();
        for (server, used) in [
            (Some("http://elsewhere:32400".to_string()), false),
            (Some(here), true),
            (None, true),
        ] {
            write(&shared.live.accounts, Arc::new(list(server.clone())));
            assert_eq!(
                shared.accounts().accounts.len(),
                usize::from(used),
                "{server:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_dead_store_writer_makes_the_daemon_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let shared = open_for_test(dir.path()).await;
        // As if every pipeline task ran (their guards count them).
        shared.board.live_tasks.store(TASKS, Ordering::SeqCst);
        assert!(shared.healthy());
        shared.store.end_writer_for_test().await;
        assert!(
            !shared.healthy(),
            "no write can succeed: the watchdog must stop"
        );
    }

    /// Rewrite the test config's tracker section and reload it.
    fn reload_with_tracker(shared: &Shared, dir: &std::path::Path, tracker: &str) {
        let path = dir.join("plexsync.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let start = text.find("[tracker]").unwrap();
        let end = start + text[start..].find("[admin]").unwrap();
        let text = format!("{}[tracker]\n{tracker}\n{}", &text[..start], &text[end..]);
        std::fs::write(&path, text).unwrap();
        shared.reload().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_to_another_tracker_drops_the_old_ones_catalogue() {
        let dir = tempfile::tempdir().unwrap();
        let shared = open_for_test(dir.path()).await;
        let first = shared.plugins().exporter.instance();
        shared.set_catalogue(Arc::new(Catalogue::new(vec![show("one", "Old One", 101)])));
        // The same tracker with another timeout: the catalogue stays.
        let s = shared.clone();
        let d = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            reload_with_tracker(&s, &d, "url = \"http://127.0.0.1:9\"\ntimeout = \"7s\"")
        })
        .await
        .unwrap();
        assert_eq!(shared.plugins().exporter.instance(), first);
        assert!(shared.catalogue().is_some_and(|c| c.get("one").is_some()));
        // Another tracker: its catalogue is read before anything is matched.
        let s = shared.clone();
        let d = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            reload_with_tracker(&s, &d, "url = \"http://127.0.0.1:10/other\"")
        })
        .await
        .unwrap();
        assert_ne!(shared.plugins().exporter.instance(), first);
        assert!(shared.catalogue().is_none());
        assert_eq!(shared.status().catalogue_shows, 0);
        // A fetch the old tracker answered, published late, is refused.
        let late = Arc::new(Catalogue::new(vec![show("one", "Old One", 101)]));
        assert!(!shared.set_catalogue_of(late, &first));
        assert!(shared.catalogue().is_none());
        let new = shared.plugins().exporter.instance();
        let fresh = Arc::new(Catalogue::new(vec![show("n1", "New One", 101)]));
        assert!(shared.set_catalogue_of(fresh, &new));
        assert!(shared.catalogue().is_some_and(|c| c.get("n1").is_some()));
    }

    #[tokio::test]
    async fn the_cached_catalogue_is_only_the_tracker_s_that_answered_it() {
        let dir = tempfile::tempdir().unwrap();
        let shared = open_for_test(dir.path()).await;
        let c = Arc::new(Catalogue::new(vec![show("one", "One", 101)]));
        shared
            .store
            .save_catalogue(c, "http://a:80".into())
            .await
            .unwrap();
        let mine = shared.store.load_catalogue_for("http://a:80").unwrap();
        assert_eq!(mine.map(|v| (v.shows.len(), v.tagged)), Some((1, true)));
        assert!(
            shared
                .store
                .load_catalogue_for("http://b:80")
                .unwrap()
                .is_none()
        );
        // An earlier release's copy names no tracker: used, but marked so the next answer is
        // saved with its tracker.
        shared
            .store
            .write(|txn| {
                txn.open_table(crate::store::CATALOGUE)?
                    .remove("instance")?;
                Ok(())
            })
            .await
            .unwrap();
        let old = shared.store.load_catalogue_for("http://b:80").unwrap();
        assert_eq!(old.map(|v| (v.shows.len(), v.tagged)), Some((1, false)));
    }

    fn show(id: &str, title: &str, tvdb: u64) -> CatalogShow {
        CatalogShow {
            id: id.into(),
            title: title.into(),
            tvdb_id: Some(tvdb),
            ..Default::default()
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Swap {
        Reload,
        Secret,
    }

    /// A reload or a secret change that comes while a publication of C2 is indexing it (the
    /// probe runs it there): afterwards every live matcher knows C2's show, and only C2's.
    fn a_swap_inside_a_publication_keeps_the_new_catalogue(swap: Swap) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let shared = rt.block_on(open_for_test(dir.path()));
        shared.set_catalogue(Arc::new(Catalogue::new(vec![show(
            "one",
            "Only In One",
            101,
        )])));
        let before = shared.plugins();

        // Inside C2's window: start the swap on its own thread, and let the publication go on
        // once that swap either finished (what the swap lock prevents) or waits for the lock.
        let (tx, rx) = mpsc::channel::<&'static str>();
        let rx = Mutex::new(rx);
        let other: Arc<Mutex<Option<JoinHandle<()>>>> = Arc::default();
        let probe: SwapProbe = {
            let (weak, other, handle) =
                (Arc::downgrade(&shared), other.clone(), rt.handle().clone());
            Arc::new(move |at| match at {
                SwapPoint::Waiting => tx.send("waiting").unwrap(),
                SwapPoint::CatalogueIndexed => {
                    let (shared, tx, handle) =
                        (weak.upgrade().unwrap(), tx.clone(), handle.clone());
                    *other.lock().unwrap() = Some(std::thread::spawn(move || {
                        match swap {
                            Swap::Reload => drop(shared.reload().unwrap()),
                            Swap::Secret => handle
                                .block_on(shared.set_secret("plex-token", "a-new-token"))
                                .unwrap(),
                        }
                        tx.send("done").unwrap();
                    }));
                    rx.lock().unwrap().recv().unwrap();
                }
            })
        };
        shared.set_swap_probe(Some(probe));
        shared.set_catalogue(Arc::new(Catalogue::new(vec![show(
            "two",
            "Only In Two",
            202,
        )])));
        other.lock().unwrap().take().unwrap().join().unwrap();
        shared.set_swap_probe(None);

        let live = shared.plugins();
        assert!(!Arc::ptr_eq(&live, &before), "{swap:?} swapped no plugins");
        assert_eq!(
            shared.catalogue().unwrap().get("two").unwrap().title,
            "Only In Two"
        );
        for (id, title, tvdb) in [("two", "Only In Two", 202), ("one", "Only In One", 101)] {
            let q = ShowQuery {
                title: title.into(),
                guids: vec![format!("tvdb://{tvdb}")],
                ..Default::default()
            };
            for m in &live.matchers {
                let out = rt.block_on(m.match_show(&q));
                let found =
                    matches!(&out, Ok(MatchOutcome::Definite { show_id, .. }) if show_id == id);
                assert_eq!(
                    found,
                    id == "two",
                    "{swap:?}: matcher {} answered {out:?} for {title:?}",
                    m.kind()
                );
            }
        }
    }

    /// Plex taking the token again wakes the readers a 401 paused, at most once a minute; a
    /// wake-up inside the minute is deferred, not dropped.
    #[tokio::test]
    async fn the_token_taken_again_wakes_the_paused_readers_once_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let shared = open_for_test(dir.path()).await;
        let refused = || {
            shared.note_plex_error(&PlexError::Unauthorized {
                endpoint: "/accounts".into(),
            })
        };
        let poll_asked = || shared.wake.poll_now.swap(false, Ordering::SeqCst);
        refused();
        assert!(shared.status().plex_token_rejected);
        shared.note_plex_token_ok(TokenWitness::Accounts);
        assert!(!shared.status().plex_token_rejected);
        assert!(poll_asked(), "the paused poll is woken");
        // Refused and taken again within the minute: held back, and scheduled.
        refused();
        shared.note_plex_token_ok(TokenWitness::Accounts);
        assert!(!poll_asked(), "not twice in a minute");
        assert!(shared.wake.token_wake_deferred.load(Ordering::SeqCst));
        // A success with no rejection before it wakes nobody.
        shared.note_plex_token_ok(TokenWitness::Live);
        assert!(!poll_asked());
    }

    /// A reload that points at another Plex URL forgets the server's id, so the live source
    /// asks the new server instead of filing its plays under the old one.
    #[tokio::test]
    async fn a_reload_to_another_plex_forgets_the_servers_id() {
        let dir = tempfile::tempdir().unwrap();
        let shared = open_for_test(dir.path()).await;
        let client_a = shared.plex();
        shared.note_plex_identity(
            &client_a,
            &crate::plex::server::Identity {
                machine_identifier: "server-a".into(),
                version: None,
                claimed: true,
            },
        );
        // Unchanged URL: the id stays.
        shared.reload().unwrap();
        assert_eq!(shared.status().plex_machine_id.as_deref(), Some("server-a"));
        let path = shared.config().source.clone();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replacen(
                "url = \"http://127.0.0.1:9\"",
                "url = \"http://127.0.0.1:10\"",
                1,
            ),
        )
        .unwrap();
        shared.reload().unwrap();
        assert_eq!(shared.config().plex.url.as_str(), "http://127.0.0.1:10");
        assert_eq!(shared.status().plex_machine_id, None);
        // The old server's answer to a request made before the reload comes in late.
        shared.note_plex_identity(
            &client_a,
            &crate::plex::server::Identity {
                machine_identifier: "server-a".into(),
                version: None,
                claimed: true,
            },
        );
        assert_eq!(shared.status().plex_machine_id, None);
        shared.note_plex_identity(
            &shared.plex(),
            &crate::plex::server::Identity {
                machine_identifier: "server-b".into(),
                version: None,
                claimed: true,
            },
        );
        assert_eq!(shared.status().plex_machine_id.as_deref(), Some("server-b"));
    }

    /// A changed `client_identifier` cannot take effect without a restart (Plex knows the
    /// client by the one chosen at start): the reload says so instead of reporting success.
    /// A changed catalogue refresh wakes the catalogue task, asleep for the old interval.
    #[tokio::test]
    async fn a_reload_names_what_needs_a_restart_and_wakes_the_catalogue_for_a_new_interval() {
        let dir = tempfile::tempdir().unwrap();
        let shared = open_for_test(dir.path()).await;
        let before = shared.plex_client_id().to_string();
        let path = shared.config().source.clone();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replacen(
                "[plex]\n",
                "[plex]\nclient_identifier = \"another-id\"\n",
                1,
            ),
        )
        .unwrap();
        let restart = shared.reload().unwrap();
        assert!(restart.contains(&"plex.client_identifier"), "{restart:?}");
        assert_eq!(shared.plex_client_id(), before);
        // Status (and with it health) keeps saying so: also after another reload of the
        // same file, until the file is back to what the daemon started with.
        assert_eq!(shared.status().restart_needed, ["plex.client_identifier"]);
        // `settings` shows what the daemon runs with, and the file's value beside it.
        let key = |v: &crate::api::SettingsView| {
            v.settings
                .iter()
                .find(|s| s.key == "plex.client_identifier")
                .cloned()
                .expect("the key")
        };
        let shown = key(&crate::settings::view(&shared));
        assert_ne!(shown.value, serde_json::json!("another-id"), "{shown:?}");
        assert_eq!(shown.after_restart, Some(serde_json::json!("another-id")));
        let again = shared.reload().unwrap();
        assert!(again.contains(&"plex.client_identifier"), "{again:?}");
        assert_eq!(shared.status().restart_needed, ["plex.client_identifier"]);
        std::fs::write(&path, &text).unwrap();
        assert!(shared.reload().unwrap().is_empty());
        assert!(shared.status().restart_needed.is_empty());
        assert_eq!(key(&crate::settings::view(&shared)).after_restart, None);
        std::fs::write(
            &path,
            text.replacen(
                "[plex]\n",
                "[plex]\nclient_identifier = \"another-id\"\n",
                1,
            ),
        )
        .unwrap();
        shared.reload().unwrap();

        // A wake-up stored earlier (none is expected) must not answer for this reload.
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            shared.wake.catalogue.notified(),
        )
        .await;
        let woken = shared.wake.catalogue.notified();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replacen("[tracker]\n", "[tracker]\ncatalogue_refresh = \"10m\"\n", 1),
        )
        .unwrap();
        shared.reload().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), woken)
            .await
            .expect("the catalogue task was not woken");
    }

    /// A key that reads shows but may not mark episodes: the export's 403 stays in status
    /// (and health) through later catalogue reads; a refused catalogue read is cleared by the
    /// next one that works.
    #[tokio::test]
    async fn a_catalogue_read_keeps_an_exports_refused_key() {
        use crate::model::TrackerErrorKind;
        use plexsync_plugin_api::PluginError;
        let dir = tempfile::tempdir().unwrap();
        let shared = open_for_test(dir.path()).await;
        shared.note_tracker_error(&PluginError::permanent(
            "tracker: export: HTTP 403 Forbidden: read-only key",
        ));
        shared.note_catalogue_ok();
        assert_eq!(
            shared.status().tracker_error_kind,
            Some(TrackerErrorKind::Forbidden)
        );
        assert!(shared.status().tracker_last_ok_at.is_some());
        shared.note_tracker(None);
        assert_eq!(shared.status().tracker_error_kind, None);
        shared.note_catalogue_error(&PluginError::permanent(
            "tracker: catalogue: HTTP 401 Unauthorized: no",
        ));
        shared.note_catalogue_ok();
        assert_eq!(shared.status().tracker_error_kind, None);
        // An outage seen by an export is over when the catalogue answers.
        shared.note_tracker_error(&PluginError::transient("tracker: export: timed out"));
        shared.note_catalogue_ok();
        assert_eq!(shared.status().tracker_error, None);
    }

    #[test]
    fn a_reload_inside_a_publication_keeps_the_new_catalogue() {
        a_swap_inside_a_publication_keeps_the_new_catalogue(Swap::Reload);
    }

    #[test]
    fn a_secret_change_inside_a_publication_keeps_the_new_catalogue() {
        a_swap_inside_a_publication_keeps_the_new_catalogue(Swap::Secret);
    }
}
