//! The embedded store: the only module that touches redb.
//!
//! One writer thread owns every write transaction. Callers hand it jobs over a channel; it
//! runs all jobs that are waiting in ONE durable transaction (group commit) and answers each
//! job only after that transaction is on disk — so a webhook answered 200 is never lost, and
//! concurrent webhooks share one fsync. Reads use their own read transactions on any thread.
//!
//! Values are JSON bytes of the types in [`crate::model`] (our encoding, not redb's), with a
//! `schema_version` in the meta table. Jobs must do their reads and checks before their writes:
//! a job that fails with a storage error aborts its whole group (every job in it gets the
//! error), while a job's logical error (e.g. "not found") must leave nothing written.
//!
//! The domain operations (ingest a play, apply a resolution, form and finish export batches…)
//! live in the files by concern (ingest, decisions, outbox, views, secrets, kv; re-exported by
//! [`ops`]); the rest of the daemon calls those, never redb.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};

use redb::{
    Builder, ConcurrencyMode, Database, Durability, ReadOnlyDatabase, ReadTransaction,
    ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

mod decisions;
mod ingest;
mod kv;
pub use kv::CachedCatalogue;
pub mod ops;
mod outbox;
mod secrets;
mod views;

/// The stored format's version. 2: values 0.1.0 cannot read (plays seen by the library scan
/// and the live websocket: `"source": "library"` / `"live"` in journal and dedupe rows). The
/// rows themselves need no rewriting; the number makes a 0.1.0 binary started on this store
/// refuse it at open ("schema version 2 is not supported"), instead of failing group commits
/// on the first row it cannot decode.
pub const SCHEMA_VERSION: u64 = 2;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
/// Plays awaiting the resolver; value = earliest retry time (unix ms).
pub(crate) const PENDING: TableDefinition<u64, i64> = TableDefinition::new("pending");
pub(crate) const DEDUPE: TableDefinition<&str, &[u8]> = TableDefinition::new("dedupe");
pub(crate) const SHOW_INFO: TableDefinition<&str, &[u8]> = TableDefinition::new("show_info");
pub(crate) const CATALOGUE: TableDefinition<&str, &[u8]> = TableDefinition::new("catalogue");
/// The catalogue's extra names ([`crate::alt_titles`]): tracker show id → JSON list of names.
/// A store of an earlier release (0.1.0) has none until the next write open creates
/// it, and a read-only open of such a store reads it as empty.
pub(crate) const CATALOGUE_NAMES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("catalogue_names");
pub(crate) const MAPPINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("mappings");
pub(crate) const CONFLICTS: TableDefinition<&str, &[u8]> = TableDefinition::new("conflicts");
pub(crate) const WATCHED: TableDefinition<&str, &[u8]> = TableDefinition::new("watched");
pub(crate) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
pub(crate) const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("batches");
pub(crate) const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letter");
pub(crate) const ACTIVITY: TableDefinition<u64, &[u8]> = TableDefinition::new("activity");
pub(crate) const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
pub(crate) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("plugin_kv");
/// Poll cursors per (server, account): the newest `viewedAt` whose rows are journaled.
pub(crate) const CURSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("cursors");
/// Plex history keys already journaled (historyKey → play id), so overlapping polls re-read
/// rows without duplicating them.
pub(crate) const HISTORY_KEYS: TableDefinition<&str, u64> = TableDefinition::new("history_keys");

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("store is in use by a running plexsync (use the CLI against the daemon, or stop it)")]
    Locked,
    #[error("storage error: {0}")]
    Storage(String),
    #[error("stored record is corrupt ({0})")]
    Corrupt(String),
    #[error("store writer has stopped")]
    Closed,
    #[error("the store was opened read-only")]
    ReadOnly,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// Storage errors poison the whole group commit; logical ones only their own job.
    fn is_storage(&self) -> bool {
        matches!(self, StoreError::Storage(_) | StoreError::Corrupt(_))
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Storage(e.to_string()) }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

type Completion = Box<dyn FnOnce(Result<()>) + Send>;
/// A job runs in the group's transaction (None when one could not be begun) and returns what
/// to do once the group's fate is known.
type Job = Box<dyn FnOnce(Option<&WriteTransaction>, &mut bool) -> Completion + Send>;

/// Run a job's body, turning a panic into a storage error: the group then aborts and the
/// caller learns its write failed, instead of the panic ending the writer thread that every
/// later write needs (with it gone, every webhook would answer 503 until a restart).
/// Unwind-safe in effect: the transaction is aborted and in-memory deltas are settled as not
/// committed, so nothing half-written is seen afterwards.
fn caught<R>(f: impl FnOnce() -> Result<R>) -> Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|panic| Err(panicked(panic.as_ref())))
}

fn panicked(payload: &(dyn std::any::Any + Send)) -> StoreError {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    StoreError::Storage(format!("a store write panicked: {what}"))
}

enum Db {
    Rw(Arc<RwDb>),
    Ro(ReadOnlyDatabase),
}

/// The writable database, replaceable: after an I/O error (e.g. a full disk) redb refuses
/// every further transaction until the file is closed and opened again, so the writer reopens
/// it rather than answer 503 until the daemon restarts. `None` while a reopen has failed.
struct RwDb {
    path: PathBuf,
    slot: RwLock<Option<Arc<Database>>>,
}

impl RwDb {
    fn get(&self) -> Option<Arc<Database>> {
        self.slot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn current(&self) -> Result<Arc<Database>> {
        self.get().ok_or_else(|| {
            StoreError::Storage("the store is unavailable after an I/O error (disk full?)".into())
        })
    }

    /// Drop our handle and open the file again; redb recovers the last committed state. Fails
    /// (and is retried with the next write) while the disk is still full or a reader still
    /// holds the old handle.
    fn reopen(&self) -> Result<()> {
        let mut slot = self
            .slot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = None;
        // A reader may still hold the old handle (and with it the file lock) for a moment.
        let mut tries = 0;
        let db = loop {
            match builder().create(&self.path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(StoreError::Storage(format!("cannot reopen the store: {e}")));
                }
            }
        };
        *slot = Some(Arc::new(db));
        tracing::info!(path = %self.path.display(), "store reopened after an I/O error");
        Ok(())
    }

    /// A write transaction, reopening the database first when an earlier I/O error left it
    /// refusing writes.
    fn begin_write(&self) -> Result<WriteTransaction> {
        if let Some(db) = self.get() {
            match db.begin_write() {
                Ok(t) => return Ok(t),
                Err(redb::TransactionError::Storage(redb::StorageError::PreviousIo)) => {
                    tracing::warn!("the store had an I/O error; reopening it");
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.reopen()?;
        Ok(self.current()?.begin_write()?)
    }

    /// After a failed group: reopen now if redb refuses further transactions, so readers
    /// (status, the API) work again without waiting for the next write.
    fn heal(&self) {
        let broken = match self.get() {
            None => true,
            Some(db) => matches!(
                db.begin_write(),
                Err(redb::TransactionError::Storage(
                    redb::StorageError::PreviousIo
                ))
            ),
        };
        if broken {
            if let Err(e) = self.reopen() {
                tracing::error!(error = %e, "the store stays unavailable until the next write");
            }
        }
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    path: PathBuf,
    /// Webhook plays waiting for the next group commit (see [`ingest::IngestQueue`]).
    ingest: Arc<ingest::IngestQueue>,
    /// Shows with plays in `pending` (see [`PendingShows`]).
    pending_shows: Arc<PendingShows>,
    /// The exporter's view of `batches` (see [`outbox::BatchIndex`]).
    batch_index: Arc<outbox::BatchIndex>,
    /// Export rows met that do not decode, each logged once (see [`outbox::Unreadable`]).
    unreadable: Arc<outbox::Unreadable>,
    /// Group commits made (durable transactions): `/metrics`, and the tests that count fsyncs
    /// per group.
    commits: Arc<std::sync::atomic::AtomicU64>,
    /// Since when (unix seconds) the writer's commits fail, and the last error: set by a
    /// group that could not commit, cleared by the next that could (see [`Store::write_failure`]).
    write_failure: Arc<WriteFailure>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// See `Inner::write_failure`.
type WriteFailure = std::sync::Mutex<Option<(i64, String)>>;

impl Drop for Inner {
    /// Close cleanly: the writer finishes its queue and lets go of the database, then the last
    /// handle drops here, so redb records a clean shutdown before the process exits (a file
    /// left unclean needs a repair, which a read-only open cannot do).
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(h) = self.writer.take() {
            // Not from the writer itself, nor from its answering thread (which the writer
            // joins on its way out): either would wait for itself.
            let current = std::thread::current();
            if h.thread().id() != current.id() && current.name() != Some("plexsync-acks") {
                let _ = h.join();
            }
        }
    }
}

/// Upper bound of jobs in one group commit, so one transaction stays small.
const MAX_GROUP: usize = 4096;

impl Store {
    /// Open (or create, mode 0600) the store for writing and start its writer thread. An
    /// existing file that group or others may read or write is made private first (with a
    /// warning), or refused when its mode cannot be changed: the store holds the webhook secret
    /// and every play.
    pub fn open(path: &Path) -> Result<Store> {
        let open_err = |message: String| StoreError::Open {
            path: path.to_path_buf(),
            message,
        };
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| open_err(format!("cannot create folder: {e}")))?;
            }
        }
        create_private(path).map_err(|e| open_err(format!("cannot create: {e}")))?;
        make_private(path).map_err(open_err)?;
        let db = builder().create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked,
            other => open_err(other.to_string()),
        })?;
        init_schema(&db).map_err(|e| open_err(e.to_string()))?;
        let pending_shows = db
            .begin_read()
            .map_err(StoreError::from)
            .and_then(|txn| PendingShows::load(&txn))
            .map_err(|e| open_err(format!("cannot read the pending plays: {e}")))?;
        let db = Arc::new(RwDb {
            path: path.to_path_buf(),
            slot: RwLock::new(Some(Arc::new(db))),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let wdb = db.clone();
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let wcommits = commits.clone();
        let write_failure: Arc<WriteFailure> = Arc::default();
        let wfailure = write_failure.clone();
        let writer = std::thread::Builder::new()
            .name("plexsync-store".into())
            .spawn(move || writer_loop(wdb, rx, &wcommits, &wfailure))
            .map_err(|e| open_err(format!("cannot start writer thread: {e}")))?;
        Ok(Store {
            inner: Arc::new(Inner {
                db: Db::Rw(db),
                path: path.to_path_buf(),
                ingest: Arc::default(),
                pending_shows: Arc::new(pending_shows),
                batch_index: Arc::default(),
                unreadable: Arc::default(),
                commits,
                write_failure,
                jobs: Some(tx),
                writer: Some(writer),
            }),
        })
    }

    /// Open an existing store for reading only; `Locked` while a daemon (or another writer)
    /// has it open. The file's mode is left alone (a reader changes nothing; the daemon's next
    /// start tightens it).
    pub fn open_read_only(path: &Path) -> Result<Store> {
        if !path.exists() {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                message: "does not exist (has the daemon ever run with this config?)".into(),
            });
        }
        let open_err = |e: redb::DatabaseError| StoreError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let db = match builder().open_read_only(path) {
            Ok(db) => db,
            // Left unclean by a crash, with no daemon holding it: repair it once (a write
            // open does that), then read. A running daemon keeps it locked, so this never
            // competes with one.
            Err(redb::DatabaseError::RepairAborted) => {
                match builder().create(path) {
                    Ok(db) => drop(db),
                    Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                        return Err(StoreError::Locked);
                    }
                    Err(e) => return Err(open_err(e)),
                }
                builder().open_read_only(path).map_err(open_err)?
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked),
            Err(e) => return Err(open_err(e)),
        };
        Ok(Store {
            inner: Arc::new(Inner {
                db: Db::Ro(db),
                path: path.to_path_buf(),
                ingest: Arc::default(),
                pending_shows: Arc::default(),
                batch_index: Arc::default(),
                unreadable: Arc::default(),
                commits: Arc::default(),
                write_failure: Arc::default(),
                jobs: None,
                writer: None,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether this store's writer thread has ended while the store is open: no write can
    /// succeed any more, so the daemon is not healthy (the watchdog stops and systemd
    /// restarts it). A read-only store has no writer and never reports one dead.
    /// Since when (unix seconds) this store's writes fail to commit, and the last error; None
    /// while they commit (and for a read-only store).
    pub fn write_failure(&self) -> Option<(i64, String)> {
        self.inner
            .write_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn writer_died(&self) -> bool {
        self.inner
            .writer
            .as_ref()
            .is_some_and(std::thread::JoinHandle::is_finished)
    }

    /// Run a read transaction.
    pub fn read<R>(&self, f: impl FnOnce(&ReadTransaction) -> Result<R>) -> Result<R> {
        let txn = match &self.inner.db {
            Db::Rw(db) => db.current()?.begin_read()?,
            Db::Ro(db) => db.begin_read()?,
        };
        f(&txn)
    }

    fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<R> + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<R>>> {
        let jobs = self.inner.jobs.as_ref().ok_or(StoreError::ReadOnly)?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |txn: Option<&WriteTransaction>, poisoned: &mut bool| {
            let out = match txn {
                Some(txn) => caught(|| f(txn)),
                None => Err(StoreError::Storage("no write transaction".into())),
            };
            if let Err(e) = &out {
                if e.is_storage() {
                    *poisoned = true;
                }
            }
            Box::new(move |committed: Result<()>| {
                let _ = tx.send(committed.and(out));
            })
        });
        jobs.send(job).map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Tests: end the writer thread the one way a panic still can — a panic whose payload
    /// panics again whenever it is dropped on the writer thread, so each guard that catches
    /// it panics anew — and wait (bounded) until it is gone.
    #[cfg(test)]
    pub(crate) async fn end_writer_for_test(&self) {
        struct Relentless;
        impl Drop for Relentless {
            fn drop(&mut self) {
                if std::thread::current().name() == Some("plexsync-store") {
                    std::panic::panic_any(Relentless);
                }
            }
        }
        let r: Result<()> = self.write(|_| std::panic::panic_any(Relentless)).await;
        assert!(r.is_err(), "the write that ends the writer fails");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.writer_died() {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer still runs"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Durable group commits since the store was opened.
    pub fn commits(&self) -> u64 {
        self.inner
            .commits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queue a job built by hand (one that answers several callers, like the ingest queue's).
    fn submit_job(&self, job: Job) -> Result<()> {
        let jobs = self.inner.jobs.as_ref().ok_or(StoreError::ReadOnly)?;
        jobs.send(job).map_err(|_| StoreError::Closed)
    }

    /// Run `f` inside the next group commit; resolves once it is durably committed.
    pub async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.submit(f)?.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::write`] for a job that adds plays to `pending` or takes them out: `f` records
    /// what it changed in the show ledger ([`PendingShows`]), which is settled with the group's
    /// outcome before the answer goes out.
    pub(crate) async fn write_pending<R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction, &PendingShows, &mut PendingDelta) -> Result<R>
        + Send
        + 'static,
    ) -> Result<R> {
        let ledger = self.inner.pending_shows.clone();
        let settler = ledger.clone();
        self.write_settled(
            move |txn, delta| f(txn, &ledger, delta),
            move |delta, committed| settler.settle(delta, committed),
        )
        .await
    }

    /// [`Store::write`] for a job that also changes something kept in memory beside the
    /// tables: `f` records the change in a `D`, and `settle` gets it with whether the group
    /// committed, after the commit and before the answer goes out (so the caller, once
    /// answered, sees both).
    pub(crate) async fn write_settled<D: Default + Send + 'static, R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction, &mut D) -> Result<R> + Send + 'static,
        settle: impl FnOnce(D, bool) + Send + 'static,
    ) -> Result<R> {
        let jobs = self.inner.jobs.as_ref().ok_or(StoreError::ReadOnly)?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |txn: Option<&WriteTransaction>, poisoned: &mut bool| {
            let mut delta = D::default();
            let out = match txn {
                Some(txn) => caught(|| f(txn, &mut delta)),
                None => Err(StoreError::Storage("no write transaction".into())),
            };
            if out.as_ref().is_err_and(StoreError::is_storage) {
                *poisoned = true;
            }
            Box::new(move |committed: Result<()>| {
                settle(delta, committed.is_ok());
                let _ = tx.send(committed.and(out));
            })
        });
        jobs.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Blocking variant of [`Store::write`] for the CLI and other non-async callers.
    pub fn write_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.submit(f)?
            .blocking_recv()
            .map_err(|_| StoreError::Closed)?
    }

    /// Queue `f` without waiting for it (best-effort writes such as plugin cache entries).
    pub fn write_detached(&self, f: impl FnOnce(&WriteTransaction) -> Result<()> + Send + 'static) {
        if let Err(e) = self.submit(f) {
            tracing::warn!(error = %e, "detached store write dropped");
        }
    }
}

fn builder() -> Builder {
    let mut b = Builder::new();
    // The working set is small; redb's 1 GiB default would let the page cache grow far past
    // the idle-memory budget of a home-server daemon.
    b.set_cache_size(1024 * 1024);
    // One process at a time: redb's modes that let another process read during writes
    // (`SingleWriter`) force a two-phase commit, two `fdatasync`s a commit where this takes
    // one (pages and header checksummed together). That second flush was a quarter of webhook
    // ingest's time. The CLI reads a running daemon's store through its socket instead
    // (`GET /api/secrets/sealed`, `admin::reach`).
    b.set_concurrency_mode(ConcurrencyMode::ExclusiveWriter);
    b
}

/// Create the file with mode 0600 if it does not exist, so redb never creates it world-readable.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Take group and other bits off an existing store file (0644 → 0600), logging the path and
/// both modes; an error (for the caller to wrap) when the mode cannot be changed, e.g. the
/// file belongs to another user. Silently accepting a world-readable store is not an option.
#[cfg(unix)]
fn make_private(path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    // Owner read/write only: a store file has no business being executable or setuid either.
    let private = mode & 0o600;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(private)).map_err(|e| {
        format!(
            "is readable or writable by group/others (mode {mode:03o}) and its mode cannot be changed ({e}); run `chmod 600 {}` as its owner",
            path.display()
        )
    })?;
    tracing::warn!(
        path = %path.display(),
        old_mode = %format_args!("{mode:03o}"),
        new_mode = %format_args!("{private:03o}"),
        "the store file was open to group/others; made it private"
    );
    Ok(())
}

#[cfg(not(unix))]
fn make_private(_path: &Path) -> std::result::Result<(), String> {
    Ok(())
}

fn init_schema(db: &Database) -> Result<()> {
    let txn = db.begin_write()?;
    {
        // Create every table up front, so read transactions never meet a missing table.
        let mut meta = txn.open_table(META)?;
        txn.open_table(JOURNAL)?;
        txn.open_table(PENDING)?;
        txn.open_table(DEDUPE)?;
        txn.open_table(SHOW_INFO)?;
        txn.open_table(CATALOGUE)?;
        txn.open_table(CATALOGUE_NAMES)?;
        txn.open_table(MAPPINGS)?;
        txn.open_table(CONFLICTS)?;
        txn.open_table(WATCHED)?;
        txn.open_table(OUTBOX)?;
        txn.open_table(BATCHES)?;
        txn.open_table(DEAD)?;
        txn.open_table(ACTIVITY)?;
        txn.open_table(SECRETS)?;
        txn.open_table(KV)?;
        txn.open_table(CURSORS)?;
        txn.open_table(HISTORY_KEYS)?;
        let existing = match meta.get("schema_version")? {
            Some(v) => Some(decode::<u64>(v.value())?),
            None => None,
        };
        match existing {
            None => {
                meta.insert("schema_version", encode(&SCHEMA_VERSION)?.as_slice())?;
            }
            Some(v) if v == SCHEMA_VERSION => {}
            // 1 → 2 changes no row (see SCHEMA_VERSION): the new number is the migration.
            Some(1) => {
                meta.insert("schema_version", encode(&SCHEMA_VERSION)?.as_slice())?;
                tracing::info!(from = 1, to = SCHEMA_VERSION, "store schema migrated");
            }
            Some(v) => {
                return Err(StoreError::Invalid(format!(
                    "store schema version {v} is not supported by this plexsync (expects {SCHEMA_VERSION})"
                )));
            }
        }
    }
    txn.commit()?;
    Ok(())
}

fn writer_loop(
    db: Arc<RwDb>,
    rx: mpsc::Receiver<Job>,
    commits: &std::sync::atomic::AtomicU64,
    failure: &WriteFailure,
) {
    let note = |r: &Result<()>| {
        let mut f = failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match r {
            Ok(()) => *f = None,
            Err(e) => {
                let since = f.as_ref().map_or_else(crate::model::now_secs, |(s, _)| *s);
                *f = Some((since, e.to_string()));
            }
        }
    };
    // Answering a group (waking every waiting task) is left to a second thread, so the writer
    // begins the next group while the last one's callers are woken: the writer is the one
    // serial stage of ingest, and waking 64 tasks costs as much as a tenth of a group's work.
    // Answers still go out only after the group's commit returned.
    let (done_tx, done_rx) = mpsc::channel::<(Vec<Completion>, Result<()>)>();
    let acks = std::thread::Builder::new()
        .name("plexsync-acks".into())
        .spawn(move || {
            while let Ok((completions, result)) = done_rx.recv() {
                answer(completions, &result);
            }
        });
    let acks = match acks {
        Ok(h) => Some((done_tx, h)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the store's answering thread; the writer answers itself");
            None
        }
    };
    let finish = |completions: Vec<Completion>, result: Result<()>| match &acks {
        Some((tx, _)) => {
            if let Err(mpsc::SendError((completions, result))) = tx.send((completions, result)) {
                answer(completions, &result);
            }
        }
        None => answer(completions, &result),
    };
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let mut txn = match db.begin_write() {
            Ok(t) => t,
            Err(err) => {
                tracing::error!(error = %err, jobs = jobs.len(), "cannot begin a write transaction");
                let mut poisoned = true;
                let completions = jobs.into_iter().map(|j| j(None, &mut poisoned)).collect();
                let failed = Err(err);
                note(&failed);
                answer(completions, &failed);
                continue;
            }
        };
        if let Err(e) = txn.set_durability(Durability::Immediate) {
            tracing::error!(error = %e, "cannot set durability");
        }
        let mut poisoned = false;
        let mut completions: Vec<Completion> = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter();
        // A panic that gets past a job's own guard ([`caught`]; hand-built jobs have none)
        // fails the group, not the writer: the jobs not run yet are answered without a
        // transaction, and the group aborts below.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for j in jobs.by_ref() {
                completions.push(j(Some(&txn), &mut poisoned));
            }
        }));
        if let Err(panic) = ran {
            tracing::error!(error = %panicked(panic.as_ref()), "a store job panicked; its group is aborted");
            poisoned = true;
            completions.extend(jobs.map(|j| j(None, &mut poisoned)));
        }
        let result = caught(move || {
            if poisoned {
                txn.abort()
                    .map_err(StoreError::from)
                    .and(Err(StoreError::Storage(
                        "a write in the same transaction failed; nothing was committed".into(),
                    )))
            } else {
                let r = txn.commit().map_err(StoreError::from);
                if r.is_ok() {
                    commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                r
            }
        });
        note(&result);
        if let Err(e) = &result {
            tracing::error!(error = %e, jobs = completions.len(), "store commit failed");
            db.heal();
            // A failed group's completions take back what its jobs listed in memory (the
            // pending ledger's additions, the batch index) before the next group runs: that
            // group hands out the same journal ids again, and a late take-back would drop
            // its plays from the ledger, or leave the failed group's entries naming them.
            answer(completions, &result);
            continue;
        }
        finish(completions, result);
    }
    // Every answer is out before the writer (and with it the database handle) goes.
    if let Some((tx, h)) = acks {
        drop(tx);
        let _ = h.join();
    }
}

fn answer(completions: Vec<Completion>, result: &Result<()>) {
    for c in completions {
        // One caller's settling (in-memory bookkeeping) panicking must not leave the others
        // unanswered, nor end the thread answering them.
        let r = result.clone();
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c(r))) {
            tracing::error!(error = %panicked(panic.as_ref()), "answering a store write panicked");
        }
    }
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    crate::json::to_vec_with(v, 256).map_err(|e| StoreError::Storage(format!("encode: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    crate::json::from_bytes(b).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Read the next value of a named sequence and advance it.
pub(crate) fn next_seq(txn: &WriteTransaction, name: &str) -> Result<u64> {
    next_seq_in(&mut txn.open_table(META)?, name)
}

/// [`next_seq`] on an open `meta` table (a batch opens its tables once).
pub(crate) fn next_seq_in(
    meta: &mut redb::Table<'_, &'static str, &'static [u8]>,
    name: &str,
) -> Result<u64> {
    let key = format!("seq.{name}");
    let cur = match meta.get(key.as_str())? {
        Some(v) => decode::<u64>(v.value())?,
        None => 0,
    };
    let next = cur + 1;
    meta.insert(key.as_str(), encode(&next)?.as_slice())?;
    Ok(next)
}

/// Named sequences for a batch of rows on one open `meta` table: each is read once, counted
/// in memory and written back once by [`Seqs::flush`], instead of a read-decode-encode-write
/// of `meta` per row (two of them per webhook). A batch that does not flush must not commit:
/// its callers poison the group on any error, and flush before their job returns.
#[derive(Default)]
pub(crate) struct Seqs {
    /// (name, last value handed out, changed since read).
    vals: Vec<(&'static str, u64, bool)>,
}

impl Seqs {
    pub(crate) fn next(
        &mut self,
        meta: &redb::Table<'_, &'static str, &'static [u8]>,
        name: &'static str,
    ) -> Result<u64> {
        let i = match self.vals.iter().position(|v| v.0 == name) {
            Some(i) => i,
            None => {
                let cur = match meta.get(format!("seq.{name}").as_str())? {
                    Some(v) => decode::<u64>(v.value())?,
                    None => 0,
                };
                self.vals.push((name, cur, false));
                self.vals.len() - 1
            }
        };
        let v = &mut self.vals[i];
        v.1 += 1;
        v.2 = true;
        Ok(v.1)
    }

    /// Write back every sequence advanced since it was read.
    pub(crate) fn flush(
        &mut self,
        meta: &mut redb::Table<'_, &'static str, &'static [u8]>,
    ) -> Result<()> {
        for v in self.vals.iter_mut().filter(|v| v.2) {
            meta.insert(format!("seq.{}", v.0).as_str(), encode(&v.1)?.as_slice())?;
            v.2 = false;
        }
        Ok(())
    }
}

/// Which plays wait in `pending`, by show, kept in memory beside that table. A new play of a
/// mapped show is resolved in its own commit, and the show's plays still waiting for the
/// resolver are resolved first in that commit, in journal order: the tracker must get a
/// show's episodes in the order they were acknowledged.
///
/// Built from `pending` when the store opens; kept by the jobs that change `pending`. It may
/// hold a play for a moment after it left (never miss one that is there): an added play is
/// listed at once, before its commit (an ingest in the next group must see it), and taken
/// back if that commit fails; a resolved play leaves the list after its commit. Readers check
/// each listed play in their own transaction.
#[derive(Default)]
pub(crate) struct PendingShows(
    std::sync::Mutex<std::collections::HashMap<String, std::collections::BTreeSet<u64>>>,
);

/// What one job changed in [`PendingShows`], settled once its group's fate is known.
#[derive(Default)]
pub(crate) struct PendingDelta {
    added: Vec<(String, u64)>,
    removed: Vec<(String, u64)>,
}

impl PendingDelta {
    /// Play `id` of `show_key` left `pending` (listed until the commit).
    pub(crate) fn remove(&mut self, show_key: String, id: u64) {
        self.removed.push((show_key, id));
    }
}

impl PendingShows {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, std::collections::BTreeSet<u64>>>
    {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// List every play in `pending` under its show.
    fn load(txn: &redb::ReadTransaction) -> Result<PendingShows> {
        let pending = txn.open_table(PENDING)?;
        let journal = txn.open_table(JOURNAL)?;
        let ledger = PendingShows::default();
        {
            let mut shows = ledger.lock();
            for row in pending.iter()? {
                let (id, _) = row?;
                if let Some(v) = journal.get(id.value())? {
                    // One unreadable entry must not keep the store (and every webhook) shut:
                    // left out of the ledger, the play still waits in `pending`, where the
                    // resolver's round reports it.
                    let e: crate::model::JournalEntry = match decode(v.value()) {
                        Ok(e) => e,
                        Err(err) => {
                            tracing::error!(play_id = id.value(), error = %err, "a pending play's journal entry cannot be read; it is left to the resolver");
                            continue;
                        }
                    };
                    shows
                        .entry(e.play.show.key())
                        .or_default()
                        .insert(id.value());
                }
            }
        }
        Ok(ledger)
    }

    /// The plays of `show_key` that may still wait for the resolver, oldest first.
    pub(crate) fn waiting(&self, show_key: &str) -> Vec<u64> {
        self.lock()
            .get(show_key)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Play `id` of `show_key` went to `pending` in the job that holds `delta`.
    pub(crate) fn add(&self, show_key: &str, id: u64, delta: &mut PendingDelta) {
        self.lock()
            .entry(show_key.to_string())
            .or_default()
            .insert(id);
        delta.added.push((show_key.to_string(), id));
    }

    /// The job's group committed (its removals take effect) or did not (its additions go).
    pub(crate) fn settle(&self, delta: PendingDelta, committed: bool) {
        let gone = if committed {
            delta.removed
        } else {
            delta.added
        };
        if gone.is_empty() {
            return;
        }
        let mut shows = self.lock();
        for (key, id) in gone {
            if let std::collections::hash_map::Entry::Occupied(mut e) = shows.entry(key) {
                e.get_mut().remove(&id);
                if e.get().is_empty() {
                    e.remove();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_dropped_store_is_closed_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        let store = Store::open(&p).unwrap();
        store.kv_put_detached("k".into(), b"v".to_vec(), None);
        let clone = store.clone();
        drop(store);
        drop(clone);
        // No repair needed: a read-only open (which cannot repair) succeeds at once.
        assert!(builder().open_read_only(&p).is_ok());
        assert_eq!(
            Store::open_read_only(&p).unwrap().kv_get("k").unwrap(),
            Some(b"v".to_vec())
        );
    }

    use super::*;
    use redb::ReadableTableMetadata;

    fn stored_schema(p: &std::path::Path) -> u64 {
        let db = builder().open(p).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        decode(meta.get("schema_version").unwrap().unwrap().value()).unwrap()
    }

    fn set_schema(p: &std::path::Path, v: u64) {
        let db = builder().open(p).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", encode(&v).unwrap().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }

    /// A 0.1.0 store (version 1) is moved to 2 at open, keeping its rows, so a 0.1.0 binary
    /// started on it afterwards refuses it cleanly; a store from a newer plexsync is refused.
    #[test]
    fn an_older_schema_is_migrated_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        let store = Store::open(&p).unwrap();
        store.kv_put_detached("k".into(), b"v".to_vec(), None);
        drop(store);
        assert_eq!(stored_schema(&p), SCHEMA_VERSION);
        set_schema(&p, 1);
        let store = Store::open(&p).unwrap();
        assert_eq!(store.kv_get("k").unwrap(), Some(b"v".to_vec()));
        drop(store);
        assert_eq!(stored_schema(&p), 2);
        set_schema(&p, SCHEMA_VERSION + 1);
        let err = Store::open(&p).err().expect("a newer store is refused");
        assert!(err.to_string().contains("not supported"), "{err}");
    }

    #[tokio::test]
    async fn batched_sequences_continue_where_a_single_step_left_off() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let first = store.write(|txn| next_seq(txn, "x")).await.unwrap();
        let batch = store
            .write(|txn| {
                let mut meta = txn.open_table(META)?;
                let mut seqs = Seqs::default();
                let ids = [
                    seqs.next(&meta, "x")?,
                    seqs.next(&meta, "y")?,
                    seqs.next(&meta, "x")?,
                ];
                seqs.flush(&mut meta)?;
                Ok(ids)
            })
            .await
            .unwrap();
        assert_eq!((first, batch), (1, [2, 1, 3]));
        // What the batch handed out is recorded: the next step goes on from it.
        let after = store.write(|txn| next_seq(txn, "x")).await.unwrap();
        let y = store.write(|txn| next_seq(txn, "y")).await.unwrap();
        assert_eq!((after, y), (4, 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_answers_every_job_and_readers_see_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let mut handles = Vec::new();
        for i in 0..200u64 {
            let s = store.clone();
            handles.push(tokio::spawn(async move {
                s.write(move |txn| {
                    let id = next_seq(txn, "test")?;
                    txn.open_table(JOURNAL)?
                        .insert(id, format!("{i}").as_bytes())?;
                    Ok(id)
                })
                .await
            }));
        }
        let mut ids = Vec::new();
        for h in handles {
            ids.push(h.await.unwrap().unwrap());
        }
        ids.sort();
        assert_eq!(ids, (1..=200).collect::<Vec<_>>());
        let n = store.read(|t| Ok(t.open_table(JOURNAL)?.len()?)).unwrap();
        assert_eq!(n, 200);
    }

    #[tokio::test]
    async fn storage_error_poisons_the_group_but_logical_error_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let r: Result<()> = store
            .write(|txn| {
                txn.open_table(META)?.insert("x", b"1".as_slice())?;
                Err(StoreError::NotFound("nope".into()))
            })
            .await;
        assert!(matches!(r, Err(StoreError::NotFound(_))));
        let r: Result<()> = store
            .write(|txn| {
                txn.open_table(META)?.insert("y", b"1".as_slice())?;
                Err(StoreError::Storage("disk".into()))
            })
            .await;
        assert!(r.is_err());
        let y = store
            .read(|t| Ok(t.open_table(META)?.get("y")?.is_some()))
            .unwrap();
        assert!(!y, "a poisoned group must not commit");
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let r: Result<()> = store
            .write(|txn| {
                txn.open_table(META)?.insert("x", b"1".as_slice())?;
                panic!("a bug in a job");
            })
            .await;
        // Its group is aborted like one with a storage error (the panic message goes to the
        // panic hook, i.e. the log).
        assert!(
            matches!(r, Err(StoreError::Storage(_))),
            "expected a storage error, got {r:?}"
        );
        assert!(!store.writer_died());
        // The next write is served and committed; the panicking one left nothing.
        store
            .write(|txn| {
                txn.open_table(META)?.insert("y", b"1".as_slice())?;
                Ok(())
            })
            .await
            .unwrap();
        let (x, y) = store
            .read(|t| {
                let meta = t.open_table(META)?;
                Ok((meta.get("x")?.is_some(), meta.get("y")?.is_some()))
            })
            .unwrap();
        assert_eq!((x, y), (false, true));
        // A panic no guard can hold ends the writer, and the store says so.
        store.end_writer_for_test().await;
        assert!(store.write(|_| Ok(())).await.is_err());
    }

    #[test]
    fn store_file_is_private_and_one_process_holds_it_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        let store = Store::open(&p).unwrap();
        store
            .write_blocking(|txn| {
                txn.open_table(META)?.insert("k", b"v".as_slice())?;
                Ok(())
            })
            .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // The writer holds the file alone (one fdatasync a commit): a reader is told so.
        assert!(matches!(Store::open_read_only(&p), Err(StoreError::Locked)));
        drop(store);
        let ro = Store::open_read_only(&p).unwrap();
        let v = ro
            .read(|t| Ok(t.open_table(META)?.get("k")?.map(|g| g.value().to_vec())))
            .unwrap();
        assert_eq!(v.as_deref(), Some(b"v".as_slice()));
        assert!(matches!(Store::open(&p), Err(StoreError::Locked)));
        // Readers share it.
        assert!(Store::open_read_only(&p).is_ok());
    }

    /// Everything logged at `warn` while `f` runs, as fmt lines.
    fn warnings(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(sub, f);
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[cfg(unix)]
    #[test]
    fn an_open_store_file_is_made_private_and_logged() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        drop(Store::open(&p).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();

        // A reader changes nothing and does not fail.
        let log = warnings(|| drop(Store::open_read_only(&p).unwrap()));
        assert_eq!(mode(&p), 0o644);
        assert!(log.is_empty(), "{log}");

        // The writer (the daemon) tightens it and says so, naming the path and the old mode.
        let log = warnings(|| drop(Store::open(&p).unwrap()));
        assert_eq!(mode(&p), 0o600);
        assert!(log.contains("made it private"), "{log}");
        assert!(log.contains(&p.display().to_string()), "{log}");
        assert!(
            log.contains("old_mode=644") && log.contains("new_mode=600"),
            "{log}"
        );

        // Already private: nothing to say. An odd mode loses everything but owner rw.
        assert!(warnings(|| drop(Store::open(&p).unwrap())).is_empty());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o4777)).unwrap();
        drop(Store::open(&p).unwrap());
        assert_eq!(mode(&p), 0o600);
    }
}
