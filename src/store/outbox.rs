//! The outbox: waiting export items formed into fixed `batches` (each with the idempotency key
//! every attempt reuses), due batches, finishing an attempt (delivered → `watched` marked
//! exported; transient → rescheduled; permanent or out of attempts → `dead_letter`), and the
//! dead letters and their manual retry (with a new key). A row of these tables that does not
//! decode is skipped and left as it is ([`Unreadable`]), so it never stops the other shows;
//! nor does one fail the recording of an attempt (`finish_batch_titled`), which would leave
//! its batch due and sent again for ever.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::{ReadableTable, ReadableTableMetadata};

use super::ops::{get_json, put_activity, watched_key};
use super::*;
use crate::model::{
    Activity, ActivityStatus, Batch, JournalEntry, OutboxItem, Watched, now_millis, now_secs,
};

/// How a finished export attempt went.
#[derive(Debug, Clone)]
pub enum BatchOutcome {
    Delivered {
        marked: u64,
        already: u64,
    },
    /// Answered, but these episodes of the batch are unknown to the tracker (an episode that
    /// aired an hour ago and is not in its database yet, a wrong season): the others are
    /// delivered; these are never counted as exported and go to the dead letter at once,
    /// named in its error (`plexsync outbox retry` sends them again). Retrying them on their
    /// own would hold every later export of the show behind them (a show's batches go in
    /// order).
    Partly {
        marked: u64,
        already: u64,
        unknown: Vec<(u32, u32)>,
    },
    Transient {
        error: String,
        retry_at_ms: i64,
    },
    /// The tracker asked for quiet (a 429 or 503 with a wait): not a verdict on this batch,
    /// so it does not count as an attempt. A day's quota used up would otherwise send a batch
    /// to the dead letter after `max_attempts` hourly waits, and its show's later episodes
    /// would overtake it.
    Paused {
        error: String,
        retry_at_ms: i64,
    },
    Permanent {
        error: String,
    },
}

/// Which waiting outbox items [`Store::form_batches_with`] turns into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormPlan {
    /// Only batches of exactly `batch_size` episodes; part-full ones stay in the outbox.
    pub full_only: bool,
    /// At most this many batches (the fullest first).
    pub max_batches: usize,
}

impl FormPlan {
    pub const ALL: FormPlan = FormPlan {
        full_only: false,
        max_batches: usize::MAX,
    };
}

/// See [`Store::outbox_probe`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxProbe {
    pub items: u64,
    pub newest_id: Option<u64>,
    /// Plays still waiting for resolution: more may be about to arrive.
    pub resolving: u64,
}

/// The fields of a `batches` row the exporter's scans look at, read without building its
/// episodes (serde skips the rest of the row).
#[derive(serde::Deserialize)]
struct BatchHead {
    show_id: String,
    next_attempt_at: i64,
}

/// The exporter's view of `batches`: each row's show and next attempt, by batch id (queue
/// order), kept in memory. A round asks for the next due batch of each show; reading that
/// from the table meant parsing every formed batch with its episodes, and a burst of one show
/// queues hundreds of them (perf: a seventh of the daemon's CPU at 13k webhooks/s).
///
/// Built from the table at its first use and kept by the jobs that write `batches`, settled
/// after their group's commit. A group that did not commit may still have reached the disk
/// (an I/O error on its last sync), so it does not guess: the index is dropped and rebuilt
/// from the table at the next use. A rebuild begins its read under the lock, so a commit
/// whose settling waits on that lock is applied after it (again, harmlessly, if the read
/// already saw it). Readers take each listed row from their own transaction and skip one
/// that is gone.
#[derive(Default)]
pub(crate) struct BatchIndex(Mutex<Option<BTreeMap<u64, BatchSlot>>>);

#[derive(Clone)]
struct BatchSlot {
    show: Arc<str>,
    next_attempt_at: i64,
}

/// What one job changed in `batches`: a row written (its head) or removed, in order.
#[derive(Default)]
pub(crate) struct BatchDelta(Vec<(u64, Option<BatchSlot>)>);

impl BatchDelta {
    /// The row written at key `id` (the key, not the row's `id` field: rows written before
    /// ids were stored say 0).
    fn put(&mut self, id: u64, b: &Batch) {
        self.0.push((
            id,
            Some(BatchSlot {
                show: Arc::from(b.show_id.as_str()),
                next_attempt_at: b.next_attempt_at,
            }),
        ));
    }

    fn gone(&mut self, id: u64) {
        self.0.push((id, None));
    }
}

impl BatchIndex {
    fn lock(&self) -> MutexGuard<'_, Option<BTreeMap<u64, BatchSlot>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn settle(&self, delta: BatchDelta, committed: bool) {
        let mut index = self.lock();
        if !committed {
            *index = None;
            return;
        }
        if let Some(map) = index.as_mut() {
            for (id, slot) in delta.0 {
                match slot {
                    Some(s) => map.insert(id, s),
                    None => map.remove(&id),
                };
            }
        }
    }

    /// Run `f` on the current index and a read transaction begun under its lock.
    fn with<R>(
        &self,
        store: &Store,
        f: impl FnOnce(&mut BTreeMap<u64, BatchSlot>, &redb::ReadTransaction) -> Result<R>,
    ) -> Result<R> {
        let mut index = self.lock();
        store.read(|txn| {
            let map = match index.as_mut() {
                Some(map) => map,
                None => index.insert(BatchIndex::build(txn, &store.inner.unreadable)?),
            };
            f(map, txn)
        })
    }

    fn build(
        txn: &redb::ReadTransaction,
        unreadable: &Unreadable,
    ) -> Result<BTreeMap<u64, BatchSlot>> {
        let mut map = BTreeMap::new();
        let mut shows: HashSet<Arc<str>> = HashSet::new();
        for row in txn.open_table(BATCHES)?.iter()? {
            let (id, v) = row?;
            let head: BatchHead = match decode(v.value()) {
                Ok(h) => h,
                Err(e) => {
                    unreadable.note(BATCHES_TABLE, id.value(), &e);
                    continue;
                }
            };
            let show = match shows.get(head.show_id.as_str()) {
                Some(s) => s.clone(),
                None => {
                    let s: Arc<str> = Arc::from(head.show_id);
                    shows.insert(s.clone());
                    s
                }
            };
            map.insert(
                id.value(),
                BatchSlot {
                    show,
                    next_attempt_at: head.next_attempt_at,
                },
            );
        }
        Ok(map)
    }
}

/// Each show's oldest batch, oldest first: the only one of its show that may go. A batch
/// waiting out a retry holds its show's later batches back, so the tracker gets a show's
/// episodes in the order they were watched even across failures.
fn heads(index: &BTreeMap<u64, BatchSlot>) -> impl Iterator<Item = (u64, &BatchSlot)> {
    let mut shows: HashSet<&str> = HashSet::new();
    index
        .iter()
        .filter(move |(_, slot)| shows.insert(&slot.show))
        .map(|(id, slot)| (*id, slot))
}

/// Table names as [`Unreadable`] logs them.
pub(crate) const OUTBOX_TABLE: &str = "outbox";
pub(crate) const BATCHES_TABLE: &str = "batches";
pub(crate) const DEAD_TABLE: &str = "dead_letter";

/// Export rows (`outbox` items, `batches`, `dead_letter`) that do not decode (a corrupt or
/// foreign value), by table and key. Such a row stays in the store as it is (a person can
/// look at it; nothing is deleted on a guess) and every job that scans its table skips it,
/// so one bad row never stops the other shows' exports nor `outbox retry`. Each is logged the
/// first time a job meets it, not on every scan: the exporter forms batches many times a
/// second in a burst. `counts` says how many there are (`unreadable_exports`), and health
/// warns while there are any.
#[derive(Default)]
pub(crate) struct Unreadable(Mutex<HashSet<(&'static str, u64)>>);

impl Unreadable {
    /// Note that row `key` of `table` does not decode: logged if it is the first time.
    pub(crate) fn note(&self, table: &'static str, key: u64, e: &StoreError) {
        let first = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((table, key));
        if first {
            tracing::error!(
                table,
                key,
                error = %e,
                "an export row in the store cannot be read: it is left as it is and skipped, and the other shows' exports go on"
            );
        }
    }

    #[cfg(test)]
    fn noted(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Store {
    /// Move waiting outbox items into batches of at most `batch_size` episodes per show, each
    /// with a fresh idempotency key that every attempt of that batch will reuse.
    pub async fn form_batches(&self, batch_size: usize) -> Result<usize> {
        self.form_batches_with(batch_size, FormPlan::ALL).await
    }

    /// [`form_batches`](Self::form_batches) as the exporter plans it: only full batches while
    /// plays keep arriving (`full_only`; the rest of a show waits in the outbox for more), and
    /// at most `max_batches` (the fullest first, then the oldest) when the request budget is
    /// short. A show's items always go in queue order: its first chunk is at least as full
    /// and older than the next, so a later chunk is never taken without the earlier one.
    /// Items not taken stay in the outbox, unbatched: a batch, once formed, never changes.
    pub async fn form_batches_with(&self, batch_size: usize, plan: FormPlan) -> Result<usize> {
        let size = batch_size.max(1);
        let unreadable = self.inner.unreadable.clone();
        self.write_batches(move |txn, delta| {
            let mut outbox = txn.open_table(OUTBOX)?;
            // Grouped by show from each row read borrowed (nothing built): a backfill's outbox
            // holds 100,000 items, and holding them all decoded here was ~8 MB of the daemon's
            // peak. Only the items taken are decoded in full, below.
            let mut by_show: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            for row in outbox.iter()? {
                let (id, v) = row?;
                // Its show is unknown: skipped (left in the table), every show goes on.
                let show: OutboxShape<'_> = match crate::json::from_bytes(v.value()) {
                    Ok(s) => s,
                    Err(e) => {
                        unreadable.note(
                            OUTBOX_TABLE,
                            id.value(),
                            &StoreError::Corrupt(e.to_string()),
                        );
                        continue;
                    }
                };
                match by_show.get_mut(show.show_id.as_ref()) {
                    Some(ids) => ids.push(id.value()),
                    None => {
                        by_show.insert(show.show_id.into_owned(), vec![id.value()]);
                    }
                }
            }
            let mut chunks: Vec<&[u64]> = Vec::new();
            for ids in by_show.values() {
                chunks.extend(
                    ids.chunks(size)
                        .filter(|c| !plan.full_only || c.len() == size),
                );
            }
            chunks.sort_by_key(|c| (std::cmp::Reverse(c.len()), c[0]));
            chunks.truncate(plan.max_batches);
            // Batch ids follow queue order, so a show's batches are sent oldest first.
            chunks.sort_by_key(|c| c[0]);
            let now = now_millis();
            let mut batches = txn.open_table(BATCHES)?;
            let mut formed = 0;
            for chunk in &chunks {
                let mut items = Vec::with_capacity(chunk.len());
                for &id in chunk.iter() {
                    let decoded = match outbox.get(id)? {
                        Some(v) => decode::<OutboxItem>(v.value()),
                        None => continue,
                    };
                    match decoded {
                        Ok(item) => {
                            outbox.remove(id)?;
                            items.push(item);
                        }
                        // Left in the table as an unreadable row; the rest go on.
                        Err(e) => unreadable.note(OUTBOX_TABLE, id, &e),
                    }
                }
                if items.is_empty() {
                    continue;
                }
                let id = next_seq(txn, "batch")?;
                let key = crate::secrets::hex(
                    &crate::secrets::random_bytes::<16>()
                        .map_err(|e| StoreError::Storage(e.to_string()))?,
                );
                let b = Batch {
                    id,
                    show_id: items[0].show_id.clone(),
                    idempotency_key: key,
                    items,
                    attempts: 0,
                    next_attempt_at: now,
                    last_error: None,
                    created_at: now_secs(),
                    activity_id: None,
                    dead_at: None,
                    due_early_from: None,
                };
                batches.insert(id, encode(&b)?.as_slice())?;
                delta.put(id, &b);
                formed += 1;
            }
            Ok(formed)
        })
        .await
    }

    /// A cheap look at the unbatched outbox for the exporter's coalescing: how many items wait
    /// and the newest item's id (ids only grow, so a larger one means more arrived).
    pub fn outbox_probe(&self) -> Result<OutboxProbe> {
        self.read(|txn| {
            let t = txn.open_table(OUTBOX)?;
            Ok(OutboxProbe {
                items: t.len()?,
                newest_id: t.last()?.map(|(k, _)| k.value()),
                resolving: txn.open_table(PENDING)?.len()?,
            })
        })
    }

    /// Requests the backlog needs at least: every formed batch, plus each show's unbatched
    /// items in batches of `batch_size` (for the budget's time estimate).
    pub fn backlog_requests(&self, batch_size: usize) -> Result<u64> {
        self.read(|txn| {
            let mut per_show: BTreeMap<String, u64> = BTreeMap::new();
            for row in txn.open_table(OUTBOX)?.iter()? {
                let (id, v) = row?;
                match decode::<OutboxItem>(v.value()) {
                    Ok(item) => *per_show.entry(item.show_id).or_default() += 1,
                    Err(e) => self.inner.unreadable.note(OUTBOX_TABLE, id.value(), &e),
                }
            }
            let size = batch_size.max(1) as u64;
            let unbatched: u64 = per_show.values().map(|n| n.div_ceil(size)).sum();
            Ok(txn.open_table(BATCHES)?.len()? + unbatched)
        })
    }

    /// Batches whose next attempt is due, every one (oldest first), read from the table.
    #[cfg(test)]
    pub fn due_batches(&self, now_ms: i64, limit: usize) -> Result<Vec<Batch>> {
        self.read(|txn| {
            let mut out = Vec::new();
            for row in txn.open_table(BATCHES)?.iter()? {
                let b: Batch = decode(row?.1.value())?;
                if b.next_attempt_at <= now_ms {
                    out.push(b);
                }
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// What the exporter can send now: of each show not in `busy` (shows with a request in
    /// flight, whose next batch waits for it), its oldest batch when that is due (a later one
    /// waits behind it, see [`heads`]); at most `limit`, oldest first. Only those rows are
    /// read and decoded (see [`BatchIndex`]).
    pub fn next_due_batches(
        &self,
        now_ms: i64,
        limit: usize,
        busy: &HashSet<String>,
    ) -> Result<Vec<Batch>> {
        self.inner.batch_index.with(self, |index, txn| {
            let mut ids = Vec::new();
            for (id, slot) in heads(index) {
                if ids.len() >= limit {
                    break;
                }
                if slot.next_attempt_at <= now_ms && !busy.contains(&*slot.show) {
                    ids.push(id);
                }
            }
            let t = txn.open_table(BATCHES)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(v) = t.get(id)? {
                    let mut b: Batch = match decode(v.value()) {
                        Ok(b) => b,
                        Err(e) => {
                            // Out of the index until it is rebuilt: one bad row must not
                            // hold back every show, nor wake the exporter for it every round.
                            self.inner.unreadable.note(BATCHES_TABLE, id, &e);
                            index.remove(&id);
                            continue;
                        }
                    };
                    // The key is the id (rows from before ids were stored say 0).
                    b.id = id;
                    out.push(b);
                }
            }
            Ok(out)
        })
    }

    /// Earliest next attempt among the batches that may go next (each show's oldest).
    pub fn next_batch_at(&self) -> Result<Option<i64>> {
        self.inner.batch_index.with(self, |index, _| {
            Ok(heads(index).map(|(_, s)| s.next_attempt_at).min())
        })
    }

    /// Make every waiting batch whose next attempt lies after `now_ms` due at `now_ms` (the
    /// cause of its back-off was fixed: another tracker URL or key), keeping its key and its
    /// attempts. Dead letters are not touched (`outbox retry` is a person's). Returns how many
    /// were brought forward. A row that does not decode is left as it is.
    pub async fn batches_due_now(&self, now_ms: i64) -> Result<usize> {
        let unreadable = self.inner.unreadable.clone();
        self.write_batches(move |txn, delta| {
            let mut t = txn.open_table(BATCHES)?;
            let mut later: Vec<(u64, Batch)> = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                match decode::<Batch>(v.value()) {
                    Ok(b) if b.next_attempt_at > now_ms => later.push((k.value(), b)),
                    Ok(_) => {}
                    Err(e) => unreadable.note(BATCHES_TABLE, k.value(), &e),
                }
            }
            for (id, mut b) in later.iter().cloned() {
                b.id = id;
                b.due_early_from = Some(b.due_early_from.unwrap_or(b.next_attempt_at));
                b.next_attempt_at = now_ms;
                t.insert(id, encode(&b)?.as_slice())?;
                delta.put(id, &b);
            }
            Ok(later.len())
        })
        .await
    }

    /// [`Store::write_settled`] for a job that writes `batches`, keeping [`BatchIndex`].
    async fn write_batches<R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction, &mut BatchDelta) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let index = self.inner.batch_index.clone();
        self.write_settled(f, move |delta, committed| index.settle(delta, committed))
            .await
    }

    /// Record how an attempt went: delivered → gone from the outbox and marked exported;
    /// transient → rescheduled, or dead-lettered after `max_attempts`; permanent → dead letter.
    pub async fn finish_batch(
        &self,
        batch_id: u64,
        outcome: BatchOutcome,
        max_attempts: u32,
        duration_ms: f64,
    ) -> Result<()> {
        self.finish_batch_titled(batch_id, outcome, max_attempts, duration_ms, None)
            .await
    }

    /// [`finish_batch`](Self::finish_batch), naming the tracker show on the activity row.
    /// A batch has ONE activity row, replaced on every attempt (moved to the newest id so the
    /// log stays in time order) and carrying the attempt count: retries do not pile up rows.
    ///
    /// A row of this batch that does not decode never fails the recording: an error here
    /// leaves the batch due as it was, so the exporter would send it again and again, for
    /// ever, and the error would abort every other write of its group commit. The batch's
    /// own row is left in the table and taken out of the exporter's index (not sent again,
    /// counted as unreadable); a `watched` row of one of its episodes is left as it is, not
    /// marked exported (named on the activity row); a journal row only loses its names on
    /// the activity row. A storage error (a full disk) still fails it, and the batch goes
    /// again with its key.
    pub async fn finish_batch_titled(
        &self,
        batch_id: u64,
        outcome: BatchOutcome,
        max_attempts: u32,
        duration_ms: f64,
        tracker_title: Option<String>,
    ) -> Result<()> {
        let unreadable = self.inner.unreadable.clone();
        self.write_batches(move |txn, delta| {
            let mut batches = txn.open_table(BATCHES)?;
            let decoded: Result<Batch> = match batches.get(batch_id)? {
                Some(v) => decode(v.value()),
                None => return Ok(()),
            };
            let mut b = match decoded {
                Ok(b) => b,
                Err(e) => {
                    // Readable when it was sent, not now. What the tracker answered cannot
                    // be put on a row nobody can read: left as it is, out of the index.
                    tracing::error!(
                        batch_id,
                        outcome = outcome.kind(),
                        error = %e,
                        "the outcome of an export cannot be recorded: its batch can no longer be read; it is left in the store and not sent again"
                    );
                    unreadable.note(BATCHES_TABLE, batch_id, &e);
                    delta.gone(batch_id);
                    return Ok(());
                }
            };
            // The key is the id (rows from before ids were stored say 0).
            b.id = batch_id;
            batches.remove(batch_id)?;
            delta.gone(batch_id);
            drop(batches);
            // A try brought forward (`batches_due_now`) that failed as before tested a fix
            // that was none: no attempt counted, and the wait it cut short resumes. Repeated
            // reloads or `outbox retry` during an outage so never push a batch to the dead
            // letter sooner.
            let early = b.due_early_from.take();
            let tested_early = early.is_some() && matches!(outcome, BatchOutcome::Transient { .. });
            let outcome = match (outcome, early) {
                (BatchOutcome::Transient { error, retry_at_ms }, Some(until)) => {
                    BatchOutcome::Paused {
                        error,
                        retry_at_ms: retry_at_ms.max(until),
                    }
                }
                (o, _) => o,
            };
            if !matches!(outcome, BatchOutcome::Paused { .. }) {
                b.attempts += 1;
            }
            let n = b.items.len();
            let eps = if n == 1 {
                "1 episode".to_string()
            } else {
                format!("{n} episodes")
            };
            // Where the batch goes after this attempt: None = delivered (gone).
            enum Next {
                Gone,
                Retry,
                Dead,
            }
            // Unknown episodes that are not in this batch say nothing about it.
            let outcome = match outcome {
                BatchOutcome::Partly {
                    marked,
                    already,
                    ref unknown,
                    ..
                } if !b
                    .items
                    .iter()
                    .any(|it| unknown.contains(&(it.season, it.episode))) =>
                {
                    BatchOutcome::Delivered { marked, already }
                }
                o => o,
            };
            let (status, event, action, error, next) = match outcome {
                BatchOutcome::Partly {
                    marked,
                    already,
                    unknown,
                } => {
                    let (left, sent): (Vec<OutboxItem>, Vec<OutboxItem>) = b
                        .items
                        .drain(..)
                        .partition(|it| unknown.contains(&(it.season, it.episode)));
                    let unmarked = mark_exported(txn, &sent, batch_id)?;
                    let names: Vec<String> = left
                        .iter()
                        .map(|i| format!("S{:02}E{:02}", i.season, i.episode))
                        .collect();
                    let error = format!(
                        "the tracker does not know {} (yet?)",
                        names.join(", ")
                    );
                    b.items = left;
                    b.last_error = Some(error.clone());
                    // The tracker may keep its answer under the old key and replay it.
                    b.idempotency_key = crate::secrets::hex(
                        &crate::secrets::random_bytes::<16>()
                            .map_err(|e| StoreError::Storage(e.to_string()))?,
                    );
                    (
                        ActivityStatus::Failed,
                        "dead_letter",
                        format!(
                            "exported {} of {eps}: {marked} marked watched, {already} already watched; {} unknown to the tracker: dead letter (`plexsync outbox retry` sends it again once the tracker knows it){}",
                            sent.len(),
                            names.join(", "),
                            unmarked_note(&unmarked)
                        ),
                        Some(error),
                        Next::Dead,
                    )
                }
                BatchOutcome::Delivered { marked, already } => {
                    let unmarked = mark_exported(txn, &b.items, batch_id)?;
                    let tries = if b.attempts > 1 {
                        format!(" on attempt {}", b.attempts)
                    } else {
                        String::new()
                    };
                    (
                        ActivityStatus::Success,
                        "delivered",
                        format!(
                            "exported {eps}{tries}: {marked} marked watched, {already} already watched{}",
                            unmarked_note(&unmarked)
                        ),
                        None,
                        Next::Gone,
                    )
                }
                BatchOutcome::Paused { error, retry_at_ms } => {
                    b.next_attempt_at = retry_at_ms;
                    b.last_error = Some(error.clone());
                    let secs = ((retry_at_ms - now_millis()).max(0) + 999) / 1000;
                    (
                        ActivityStatus::Failed,
                        "retrying",
                        if tested_early {
                            format!(
                                "export of {eps} brought forward failed as before (not counted as an attempt); next try in {secs} s"
                            )
                        } else {
                            format!(
                                "export of {eps} waits: the tracker asked for quiet (not counted as an attempt); next try in {secs} s"
                            )
                        },
                        Some(error),
                        Next::Retry,
                    )
                }
                BatchOutcome::Transient { error, retry_at_ms } if b.attempts < max_attempts => {
                    b.next_attempt_at = retry_at_ms;
                    b.last_error = Some(error.clone());
                    let secs = ((retry_at_ms - now_millis()).max(0) + 999) / 1000;
                    (
                        ActivityStatus::Failed,
                        "retrying",
                        format!(
                            "export of {eps} failed (attempt {} of {max_attempts}); next try in {secs} s",
                            b.attempts
                        ),
                        Some(error),
                        Next::Retry,
                    )
                }
                BatchOutcome::Transient { error, .. } | BatchOutcome::Permanent { error } => {
                    b.last_error = Some(error.clone());
                    (
                        ActivityStatus::Failed,
                        "dead_letter",
                        format!(
                            "export of {eps} gave up after {} attempt(s): dead letter (`plexsync outbox retry` sends it again)",
                            b.attempts
                        ),
                        Some(error),
                        Next::Dead,
                    )
                }
            };
            let (title, account) = batch_names(txn, &b)?;
            if let Some(old) = b.activity_id.take() {
                txn.open_table(ACTIVITY)?.remove(old)?;
            }
            let single = b.items.first().filter(|_| n == 1);
            let row_id = put_activity(
                txn,
                Activity {
                    id: 0,
                    at: now_millis(),
                    source: "export".into(),
                    event: Some(event.into()),
                    account,
                    show: Some(b.show_id.clone()),
                    season: single.map(|i| i.season),
                    episode: single.map(|i| i.episode),
                    status,
                    action,
                    error,
                    duration_ms,
                    play_id: single.map(|i| i.play_id),
                    client: None,
                    title,
                    tracker_title,
                    attempts: Some(b.attempts),
                    batch_id: Some(b.id),
                    sources: Vec::new(),
                },
            )?;
            b.activity_id = Some(row_id);
            match next {
                Next::Gone => {}
                Next::Retry => {
                    txn.open_table(BATCHES)?
                        .insert(batch_id, encode(&b)?.as_slice())?;
                    delta.put(batch_id, &b);
                }
                Next::Dead => {
                    b.dead_at = Some(now_secs());
                    txn.open_table(DEAD)?
                        .insert(batch_id, encode(&b)?.as_slice())?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Move every dead-lettered batch back to pending with a new idempotency key. A dead
    /// letter that does not decode stays where it is (see [`Unreadable`]); the others go.
    pub async fn retry_dead(&self) -> Result<usize> {
        let unreadable = self.inner.unreadable.clone();
        self.write_batches(move |txn, delta| {
            let mut dead = txn.open_table(DEAD)?;
            let mut moved = Vec::new();
            for row in dead.iter()? {
                let (k, v) = row?;
                match decode::<Batch>(v.value()) {
                    Ok(b) => moved.push((k.value(), b)),
                    Err(e) => unreadable.note(DEAD_TABLE, k.value(), &e),
                }
            }
            for (id, _) in &moved {
                dead.remove(*id)?;
            }
            drop(dead);
            let mut batches = txn.open_table(BATCHES)?;
            let now = now_millis();
            for (id, mut b) in moved.iter().cloned() {
                b.attempts = 0;
                b.next_attempt_at = now;
                // A person's retry starts a new round: its attempts get a row of their own,
                // the old row keeps saying how the first round ended.
                b.activity_id = None;
                // A new key: the tracker may have cached its refusal under the old one.
                b.idempotency_key = crate::secrets::hex(
                    &crate::secrets::random_bytes::<16>()
                        .map_err(|e| StoreError::Storage(e.to_string()))?,
                );
                b.id = id;
                batches.insert(id, encode(&b)?.as_slice())?;
                delta.put(id, &b);
            }
            Ok(moved.len())
        })
        .await
    }

    /// The dead letters that decode (the others are counted in `counts`, see [`Unreadable`]).
    pub fn dead_letters(&self) -> Result<Vec<Batch>> {
        self.read(|txn| {
            let t = txn.open_table(DEAD)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                match decode(v.value()) {
                    Ok(b) => out.push(b),
                    Err(e) => self.inner.unreadable.note(DEAD_TABLE, k.value(), &e),
                }
            }
            Ok(out)
        })
    }
}

/// A batch as `outbox list` shows it: pending or dead, with the Plex show's title.
#[derive(Debug, Clone)]
pub struct BatchInfo {
    pub batch: Batch,
    pub dead: bool,
    /// The Plex title of the batch's plays (from the journal), when known.
    pub title: Option<String>,
}

impl Store {
    /// Every batch, pending first (by next attempt) then dead letters, with show titles; the
    /// rows that do not decode are left out (counted in `counts`, see [`Unreadable`]).
    pub fn outbox_batches(&self) -> Result<Vec<BatchInfo>> {
        self.read(|txn| {
            let mut out = Vec::new();
            for (table, name, dead) in [(BATCHES, BATCHES_TABLE, false), (DEAD, DEAD_TABLE, true)] {
                let t = txn.open_table(table)?;
                let mut part = Vec::new();
                for row in t.iter()? {
                    let (k, v) = row?;
                    let b: Batch = match decode(v.value()) {
                        Ok(b) => b,
                        Err(e) => {
                            self.inner.unreadable.note(name, k.value(), &e);
                            continue;
                        }
                    };
                    let title = first_play_title(txn, &b)?;
                    part.push(BatchInfo {
                        batch: b,
                        dead,
                        title,
                    });
                }
                if !dead {
                    part.sort_by_key(|i| (i.batch.next_attempt_at, i.batch.id));
                }
                out.extend(part);
            }
            Ok(out)
        })
    }
}

/// An outbox row as [`OutboxItem`] reads it, borrowed: forming batches checks every row's
/// shape and groups it by show without building the item. A row this refuses is exactly one
/// `OutboxItem` refuses (test `the_outbox_shape_refuses_what_the_item_refuses`), so a row is
/// unreadable in one place: never grouped, never taking a batch's place.
#[derive(serde::Deserialize)]
#[allow(dead_code)] // read to check the row's shape; only `show_id` is used
struct OutboxShape<'a> {
    play_id: u64,
    #[serde(borrow)]
    show_id: std::borrow::Cow<'a, str>,
    season: u32,
    episode: u32,
    watched_at: i64,
    queued_at: i64,
    #[serde(borrow, default)]
    title: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    account: Option<std::borrow::Cow<'a, str>>,
}

/// The Plex title of a batch's plays: kept with its items, or (items queued before they kept
/// it) the first that the journal still has.
fn first_play_title(txn: &redb::ReadTransaction, b: &Batch) -> Result<Option<String>> {
    if let Some(t) = b.items.iter().find_map(|it| it.title.clone()) {
        return Ok(Some(t));
    }
    let j = txn.open_table(JOURNAL)?;
    for it in &b.items {
        if let Some(v) = j.get(it.play_id)? {
            // A title only: an entry that does not decode does not fail the listing.
            match decode::<JournalEntry>(v.value()) {
                Ok(e) => return Ok(Some(e.play.show.title)),
                Err(e) => {
                    tracing::warn!(play_id = it.play_id, error = %e, "a play's journal entry cannot be read; listed without its title");
                }
            }
        }
    }
    Ok(None)
}

impl BatchOutcome {
    /// The outcome's name, for logs.
    fn kind(&self) -> &'static str {
        match self {
            BatchOutcome::Delivered { .. } => "delivered",
            BatchOutcome::Partly { .. } => "partly",
            BatchOutcome::Transient { .. } => "transient",
            BatchOutcome::Paused { .. } => "paused",
            BatchOutcome::Permanent { .. } => "permanent",
        }
    }
}

/// Mark the `watched` rows of `items` exported (the tracker has them). A row that does not
/// decode is left as it is and not marked (logged, and returned as `S01E02` for the activity
/// row): the delivery is still recorded, since failing it would send the batch again for ever
/// and the row's mark is unreadable either way.
fn mark_exported(
    txn: &WriteTransaction,
    items: &[OutboxItem],
    batch_id: u64,
) -> Result<Vec<String>> {
    let mut watched = txn.open_table(WATCHED)?;
    let now = now_secs();
    let mut unmarked = Vec::new();
    for it in items {
        let k = watched_key(&it.show_id, it.season, it.episode);
        match get_json::<Watched>(&watched, &k) {
            Ok(Some(mut w)) => {
                w.exported_at = Some(now);
                watched.insert(k.as_str(), encode(&w)?.as_slice())?;
            }
            Ok(None) => {}
            Err(e @ StoreError::Corrupt(_)) => {
                tracing::error!(
                    batch_id,
                    key = %k,
                    error = %e,
                    "an exported episode's watched row cannot be read; it is left as it is, not marked exported"
                );
                unmarked.push(format!("S{:02}E{:02}", it.season, it.episode));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(unmarked)
}

/// The activity row's words for episodes whose `watched` row could not be marked.
fn unmarked_note(unmarked: &[String]) -> String {
    if unmarked.is_empty() {
        return String::new();
    }
    format!(
        "; the watched record of {} cannot be read: left as it is, not marked exported",
        unmarked.join(", ")
    )
}

/// The Plex title and the account(s) of a batch's plays, for its activity row: from the items
/// themselves, or for an item queued before they kept them, from its play's journal entry
/// (read for those three fields only, borrowed). This runs on the writer for every exported
/// episode, where parsing each journal entry was a third of the export's bookkeeping.
fn batch_names(txn: &WriteTransaction, b: &Batch) -> Result<(Option<String>, Option<String>)> {
    use std::borrow::Cow;
    #[derive(serde::Deserialize)]
    struct Entry<'a> {
        #[serde(borrow)]
        play: Names<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Names<'a> {
        #[serde(borrow)]
        account_id: Cow<'a, str>,
        #[serde(borrow, default)]
        account_name: Option<Cow<'a, str>>,
        #[serde(borrow)]
        show: Show<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Show<'a> {
        #[serde(borrow)]
        title: Cow<'a, str>,
    }
    let j = txn.open_table(JOURNAL)?;
    let mut title = None;
    let mut accounts: Vec<String> = Vec::new();
    let add = |who: Cow<'_, str>, accounts: &mut Vec<String>| {
        if !accounts.iter().any(|a| *a == who) {
            accounts.push(who.into_owned());
        }
    };
    for it in &b.items {
        if let (Some(t), Some(a)) = (&it.title, &it.account) {
            title.get_or_insert_with(|| t.clone());
            add(Cow::Borrowed(a.as_str()), &mut accounts);
            continue;
        }
        if let Some(v) = j.get(it.play_id)? {
            // Names only: a journal entry that does not decode loses them, not the outcome
            // (failing here would leave the batch due, sent again for ever).
            let e: Entry<'_> = match crate::json::from_bytes(v.value()) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(
                        batch_id = b.id,
                        play_id = it.play_id,
                        error = %e,
                        "a play's journal entry cannot be read; the export's activity row goes without its names"
                    );
                    continue;
                }
            };
            title.get_or_insert_with(|| e.play.show.title.into_owned());
            add(
                e.play.account_name.unwrap_or(e.play.account_id),
                &mut accounts,
            );
        }
    }
    let account = (!accounts.is_empty()).then(|| accounts.join(", "));
    Ok((title, account))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ops::fixtures::{act, play};
    use crate::store::ops::{ActivityFilter, Resolution};

    #[tokio::test]
    async fn retries_of_a_batch_are_one_activity_row_with_its_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let mut p = play(1000);
        p.account_name = Some("alice".into());
        s.ingest_play(p, act(), 300).await.unwrap();
        let m = Resolution::Mapped {
            show_id: "42".into(),
            mapping: None,
        };
        s.apply_resolution(1, m).await.unwrap();
        s.form_batches(100).await.unwrap();
        let export = ActivityFilter {
            source: Some(crate::model::ActivitySource::Export),
            ..Default::default()
        };
        for attempt in 1..=3u32 {
            let b = s.due_batches(i64::MAX, 10).unwrap().remove(0);
            s.finish_batch_titled(
                b.id,
                BatchOutcome::Transient {
                    error: "tracker answered 503".into(),
                    retry_at_ms: 0,
                },
                5,
                1.0,
                Some("The Show".into()),
            )
            .await
            .unwrap();
            let (rows, total) = s.activity(&export, 1, 50).unwrap();
            assert_eq!(total, 1, "attempt {attempt}: one row per batch");
            assert_eq!(rows[0].attempts, Some(attempt));
            assert_eq!(rows[0].status, ActivityStatus::Failed);
            assert!(
                rows[0].action.contains(&format!("attempt {attempt} of 5")),
                "{}",
                rows[0].action
            );
        }
        let b = s.due_batches(i64::MAX, 10).unwrap().remove(0);
        s.finish_batch_titled(
            b.id,
            BatchOutcome::Delivered {
                marked: 1,
                already: 0,
            },
            5,
            1.0,
            Some("The Show".into()),
        )
        .await
        .unwrap();
        let (rows, total) = s.activity(&export, 1, 50).unwrap();
        assert_eq!(total, 1);
        let r = &rows[0];
        assert_eq!(r.status, ActivityStatus::Success);
        assert_eq!(r.attempts, Some(4));
        assert_eq!(r.title.as_deref(), Some("Show"));
        assert_eq!(r.tracker_title.as_deref(), Some("The Show"));
        assert_eq!(r.account.as_deref(), Some("alice"));
        assert_eq!((r.season, r.episode), (Some(1), Some(2)));
        assert_eq!(r.event.as_deref(), Some("delivered"));
        assert!(
            r.action.starts_with("exported 1 episode on attempt 4"),
            "{}",
            r.action
        );
        // The row moved to the newest id: the log stays in time order.
        let (all, _) = s.activity(&ActivityFilter::default(), 1, 50).unwrap();
        assert_eq!(all[0].id, r.id);
        assert!(s.outbox_batches().unwrap().is_empty());
    }

    #[tokio::test]
    async fn outbox_batches_lists_pending_and_dead_with_titles() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        s.ingest_play(play(1000), act(), 300).await.unwrap();
        let m = Resolution::Mapped {
            show_id: "42".into(),
            mapping: None,
        };
        s.apply_resolution(1, m).await.unwrap();
        s.form_batches(100).await.unwrap();
        let list = s.outbox_batches().unwrap();
        assert_eq!(list.len(), 1);
        assert!(!list[0].dead);
        assert_eq!(list[0].title.as_deref(), Some("Show"));
        let id = list[0].batch.id;
        s.finish_batch(
            id,
            BatchOutcome::Permanent {
                error: "422".into(),
            },
            5,
            1.0,
        )
        .await
        .unwrap();
        let list = s.outbox_batches().unwrap();
        assert_eq!(list.len(), 1);
        assert!(list[0].dead);
        assert_eq!(list[0].batch.attempts, 1);
        assert_eq!(list[0].batch.last_error.as_deref(), Some("422"));
        // Health dates the dead letters from when this one went dead.
        let dead_at = list[0].batch.dead_at.expect("dated");
        assert!((now_secs() - dead_at).abs() < 60, "{dead_at}");
        assert_eq!(s.counts().unwrap().oldest_dead_letter_at, Some(dead_at));
    }

    #[tokio::test]
    async fn waiting_batches_are_brought_forward_and_dead_letters_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        for (i, show) in [(1u64, "42"), (2, "43")] {
            let mut p = play(1000 + i as i64);
            p.episode = i as u32;
            s.ingest_play(p, act(), 300).await.unwrap();
            let m = Resolution::Mapped {
                show_id: show.into(),
                mapping: None,
            };
            s.apply_resolution(i, m).await.unwrap();
        }
        s.form_batches(100).await.unwrap();
        let none = HashSet::new();
        let due = s.next_due_batches(i64::MAX, 64, &none).unwrap();
        assert_eq!(due.len(), 2);
        let far = now_millis() + 3_600_000;
        let (waiting, dead) = (due[0].clone(), due[1].clone());
        s.finish_batch(
            waiting.id,
            BatchOutcome::Transient {
                error: "connection refused".into(),
                retry_at_ms: far,
            },
            5,
            1.0,
        )
        .await
        .unwrap();
        s.finish_batch(
            dead.id,
            BatchOutcome::Permanent {
                error: "404".into(),
            },
            5,
            1.0,
        )
        .await
        .unwrap();
        let now = now_millis();
        assert!(s.next_due_batches(now, 64, &none).unwrap().is_empty());
        assert_eq!(s.batches_due_now(now).await.unwrap(), 1);
        let due = s.next_due_batches(now, 64, &none).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].id, waiting.id);
        // Same key, same attempts: the same request as before, only sooner.
        assert_eq!(due[0].idempotency_key, waiting.idempotency_key);
        assert_eq!(due[0].attempts, 1);
        assert_eq!(s.dead_letters().unwrap().len(), 1);
        assert_eq!(s.batches_due_now(now).await.unwrap(), 0);
        // The try fails as before: no attempt counted, and the cut wait resumes.
        s.finish_batch(
            waiting.id,
            BatchOutcome::Transient {
                error: "connection refused".into(),
                retry_at_ms: now + 1000,
            },
            5,
            1.0,
        )
        .await
        .unwrap();
        let b = s
            .outbox_batches()
            .unwrap()
            .into_iter()
            .find(|b| b.batch.id == waiting.id)
            .expect("still waiting");
        assert!(!b.dead);
        assert_eq!(b.batch.attempts, 1);
        assert_eq!(b.batch.next_attempt_at, far);
        assert_eq!(b.batch.due_early_from, None);
    }

    #[tokio::test]
    async fn planned_forming_keeps_show_order_and_leaves_the_rest_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        // Show "a": 5 episodes, show "b": 2, queued interleaved.
        let mut id = 0;
        for (show, n) in [("a", 5u32), ("b", 2)] {
            for e in 0..n {
                id += 1;
                let mut p = play(1000 + id as i64);
                p.episode = e + 1;
                p.show.rating_key = Some(format!("rk-{show}"));
                s.ingest_play(p, act(), 300).await.unwrap();
                let m = Resolution::Mapped {
                    show_id: show.into(),
                    mapping: None,
                };
                s.apply_resolution(id, m).await.unwrap();
            }
        }
        assert_eq!(s.outbox_probe().unwrap().items, 7);
        assert_eq!(s.backlog_requests(2).unwrap(), 3 + 1);
        // Only full batches of 2: a gets two, b one; a's fifth episode waits.
        let full = FormPlan {
            full_only: true,
            max_batches: usize::MAX,
        };
        assert_eq!(s.form_batches_with(2, full).await.unwrap(), 3);
        let probe = s.outbox_probe().unwrap();
        assert_eq!(probe.items, 1);
        let batches = s.due_batches(i64::MAX, 10).unwrap();
        let eps = |show: &str| -> Vec<Vec<u32>> {
            batches
                .iter()
                .filter(|b| b.show_id == show)
                .map(|b| b.items.iter().map(|i| i.episode).collect())
                .collect()
        };
        assert_eq!(eps("a"), vec![vec![1, 2], vec![3, 4]]);
        assert_eq!(eps("b"), vec![vec![1, 2]]);
        // With a request of "a" in flight, only "b" can go; a limit counts what can go.
        let busy: HashSet<String> = ["a".to_string()].into();
        let free = s.next_due_batches(i64::MAX, 1, &busy).unwrap();
        assert_eq!(free.len(), 1);
        assert_eq!(free[0].show_id, "b");
        assert_eq!(free[0].items.len(), 2);
        assert!(
            s.next_due_batches(0, 10, &HashSet::new())
                .unwrap()
                .is_empty(),
            "none due yet at 0"
        );
        assert!(s.next_batch_at().unwrap().is_some());
        // A limited plan takes the fullest first; the lone leftover goes last.
        assert_eq!(
            s.form_batches_with(
                2,
                FormPlan {
                    full_only: false,
                    max_batches: 1
                }
            )
            .await
            .unwrap(),
            1
        );
        assert_eq!(s.outbox_probe().unwrap().items, 0);
        assert_eq!(s.form_batches(2).await.unwrap(), 0);
        let last = s.due_batches(i64::MAX, 10).unwrap().pop().unwrap();
        assert_eq!((last.show_id.as_str(), last.items.len()), ("a", 1));
        assert_eq!(last.items[0].episode, 5);
    }

    /// Queue `n` episodes of each show in `shows` (mapped to the show's own name) and form
    /// them into batches of `size`.
    async fn queued(s: &Store, shows: &[&str], n: u32, size: usize) {
        enqueued(s, shows, n).await;
        s.form_batches(size).await.unwrap();
    }

    /// [`queued`] without forming batches: the episodes wait in the outbox.
    async fn enqueued(s: &Store, shows: &[&str], n: u32) {
        let mut id = s.counts().unwrap().journal;
        for show in shows {
            for e in 0..n {
                id += 1;
                let mut p = play(1000 + id as i64);
                p.episode = e + 1;
                p.show.rating_key = Some(format!("rk-{show}"));
                s.ingest_play(p, act(), 300).await.unwrap();
                let m = Resolution::Mapped {
                    show_id: (*show).into(),
                    mapping: None,
                };
                s.apply_resolution(id, m).await.unwrap();
            }
        }
    }

    /// A tracker that answers 2xx but does not know one of the episodes: the others are
    /// exported, that one is never counted as exported; it goes to the dead letter (new
    /// idempotency key), where a person's retry sends it again.
    #[tokio::test]
    async fn an_episode_the_tracker_does_not_know_is_a_dead_letter_not_exported() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        queued(&s, &["a"], 2, 10).await;
        let none = HashSet::new();
        let b = s.next_due_batches(i64::MAX, 10, &none).unwrap().remove(0);
        assert_eq!(b.items.len(), 2);
        let partly = || BatchOutcome::Partly {
            marked: 1,
            already: 0,
            unknown: vec![(1, 2), (7, 7)],
        };
        s.finish_batch(b.id, partly(), 10, 1.0).await.unwrap();
        assert!(s.watched("a", 1, 1).unwrap().unwrap().exported_at.is_some());
        assert!(s.watched("a", 1, 2).unwrap().unwrap().exported_at.is_none());
        assert!(s.next_due_batches(i64::MAX, 10, &none).unwrap().is_empty());
        let list = s.outbox_batches().unwrap();
        assert_eq!(list.len(), 1);
        assert!(list[0].dead);
        let dead = &list[0].batch;
        assert_eq!(
            dead.items.iter().map(|i| i.episode).collect::<Vec<_>>(),
            vec![2]
        );
        assert_ne!(dead.idempotency_key, b.idempotency_key);
        assert!(dead.last_error.as_deref().unwrap().contains("S01E02"));
        // A person's retry sends just that episode again.
        assert_eq!(s.retry_dead().await.unwrap(), 1);
        let again = s.next_due_batches(i64::MAX, 10, &none).unwrap();
        assert_eq!(again[0].items.len(), 1);
        s.finish_batch(again[0].id, partly(), 10, 1.0)
            .await
            .unwrap();
        assert!(s.watched("a", 1, 2).unwrap().unwrap().exported_at.is_none());
        // Unknown episodes of another batch say nothing about this one.
        let mut p = play(9000);
        p.episode = 5;
        p.show.rating_key = Some("rk-b".into());
        s.ingest_play(p, act(), 300).await.unwrap();
        let id = s.counts().unwrap().journal;
        let m = Resolution::Mapped {
            show_id: "b".into(),
            mapping: None,
        };
        s.apply_resolution(id, m).await.unwrap();
        s.form_batches(10).await.unwrap();
        let b2 = s.next_due_batches(i64::MAX, 10, &none).unwrap().remove(0);
        assert_eq!(b2.show_id, "b");
        s.finish_batch(b2.id, partly(), 10, 1.0).await.unwrap();
        assert!(s.next_due_batches(i64::MAX, 10, &none).unwrap().is_empty());
    }

    fn ids_and_shows(batches: &[Batch]) -> Vec<(u64, String)> {
        batches.iter().map(|b| (b.id, b.show_id.clone())).collect()
    }

    /// The exporter gets each show's oldest due batch, not the show's whole queue; a
    /// delivered batch makes room for the next, a rescheduled one holds its show's next back.
    #[tokio::test]
    async fn the_next_due_batch_of_each_show_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        queued(&s, &["a", "b"], 6, 2).await;
        let all = s.due_batches(i64::MAX, 100).unwrap();
        assert_eq!(all.len(), 6);
        let (a, b): (Vec<&Batch>, Vec<&Batch>) = all.iter().partition(|b| b.show_id == "a");
        let none = HashSet::new();
        let next = s.next_due_batches(i64::MAX, 64, &none).unwrap();
        assert_eq!(
            ids_and_shows(&next),
            vec![(a[0].id, "a".into()), (b[0].id, "b".into())]
        );
        assert_eq!(next[0], *a[0], "the row as stored");
        assert_eq!(s.next_due_batches(i64::MAX, 1, &none).unwrap().len(), 1);
        let busy: HashSet<String> = ["a".to_string()].into();
        assert_eq!(
            ids_and_shows(&s.next_due_batches(i64::MAX, 64, &busy).unwrap()),
            vec![(b[0].id, "b".into())]
        );

        let delivered = BatchOutcome::Delivered {
            marked: 2,
            already: 0,
        };
        s.finish_batch(a[0].id, delivered, 5, 1.0).await.unwrap();
        let later = now_millis() + 60_000;
        let retry = BatchOutcome::Transient {
            error: "503".into(),
            retry_at_ms: later,
        };
        s.finish_batch(b[0].id, retry, 5, 1.0).await.unwrap();
        let now = now_millis();
        assert_eq!(
            ids_and_shows(&s.next_due_batches(now, 64, &none).unwrap()),
            vec![(a[1].id, "a".into())],
            "b's next batch waits behind the one waiting to retry"
        );
        assert_eq!(s.next_batch_at().unwrap(), Some(a[1].next_attempt_at));
        for done in [a[1].id, a[2].id] {
            let delivered = BatchOutcome::Delivered {
                marked: 2,
                already: 0,
            };
            s.finish_batch(done, delivered, 5, 1.0).await.unwrap();
        }
        assert!(s.next_due_batches(now, 64, &none).unwrap().is_empty());
        assert_eq!(
            s.next_batch_at().unwrap(),
            Some(later),
            "nothing wakes the exporter before the retry"
        );
        assert!(
            s.next_due_batches(i64::MAX, 64, &none)
                .unwrap()
                .iter()
                .all(|x| x.id != b[0].id || x.next_attempt_at == later),
            "the rescheduled batch is read as stored"
        );
    }

    /// The index is built from the table: after a restart, and after a group that did not
    /// commit (whose batches are not there).
    #[tokio::test]
    async fn the_batch_index_follows_the_table_across_reopen_and_failed_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let none = HashSet::new();
        let first = {
            let s = Store::open(&path).unwrap();
            queued(&s, &["a"], 4, 2).await;
            s.next_due_batches(i64::MAX, 64, &none).unwrap()
        };
        let s = Store::open(&path).unwrap();
        assert_eq!(s.next_due_batches(i64::MAX, 64, &none).unwrap(), first);
        s.retry_dead().await.unwrap();

        // An episode of show "c" waits in the outbox; forming it shares a group with a job
        // that fails, so neither commits.
        let mut p = play(9000);
        p.episode = 40;
        p.show.rating_key = Some("rk-c".into());
        s.ingest_play(p, act(), 300).await.unwrap();
        let id = s.counts().unwrap().journal;
        let m = Resolution::Mapped {
            show_id: "c".into(),
            mapping: None,
        };
        s.apply_resolution(id, m).await.unwrap();
        assert!(in_a_failing_group(&s, s.form_batches(2)).await.is_err());
        assert_eq!(s.next_due_batches(i64::MAX, 64, &none).unwrap(), first);
        assert_eq!(s.outbox_probe().unwrap().items, 1);
        // The next forming is seen at once.
        s.form_batches(2).await.unwrap();
        let next = s.next_due_batches(i64::MAX, 64, &none).unwrap();
        assert_eq!(next.len(), 2);
        assert_eq!((next[0].id, next[1].show_id.as_str()), (first[0].id, "c"));
    }

    fn raw_batch(id: u64, show: &str, next_attempt_at: i64) -> Batch {
        Batch {
            id,
            show_id: show.into(),
            idempotency_key: format!("k{id}"),
            items: vec![OutboxItem {
                play_id: id,
                show_id: show.into(),
                season: 1,
                episode: id as u32,
                watched_at: 1_700_000_000,
                queued_at: 1_700_000_000,
                title: None,
                account: None,
            }],
            attempts: 0,
            next_attempt_at,
            last_error: None,
            created_at: 1_700_000_000,
            activity_id: None,
            dead_at: None,
            due_early_from: None,
        }
    }

    /// Write `rows` into `batches` as they are (bypassing the index), then reopen the store so
    /// its index is built from the table.
    async fn store_with_rows(path: &std::path::Path, rows: Vec<(u64, Vec<u8>)>) -> Store {
        {
            let s = Store::open(path).unwrap();
            s.write(move |txn| {
                let mut t = txn.open_table(BATCHES)?;
                for (k, v) in &rows {
                    t.insert(*k, v.as_slice())?;
                }
                Ok(())
            })
            .await
            .unwrap();
        }
        Store::open(path).unwrap()
    }

    /// A row whose stored `id` is 0 (or anything but its key) is known by its key: after a
    /// failed attempt it is offered again, and its show's later batches wait behind it.
    #[tokio::test]
    async fn a_batch_row_without_its_id_is_known_by_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let rows = vec![
            (7, encode(&raw_batch(0, "a", 0)).unwrap()),
            (8, encode(&raw_batch(8, "a", 0)).unwrap()),
        ];
        let s = store_with_rows(&dir.path().join("s.redb"), rows).await;
        let none = HashSet::new();
        let ids = |s: &Store| -> Vec<u64> {
            s.next_due_batches(i64::MAX, 64, &none)
                .unwrap()
                .iter()
                .map(|b| b.id)
                .collect()
        };
        assert_eq!(ids(&s), vec![7]);
        let retry = BatchOutcome::Transient {
            error: "503".into(),
            retry_at_ms: 0,
        };
        s.finish_batch(7, retry, 5, 1.0).await.unwrap();
        assert_eq!(
            ids(&s),
            vec![7],
            "retried under its key, still first of its show"
        );
        assert_eq!(s.next_batch_at().unwrap(), Some(0));
        let delivered = BatchOutcome::Delivered {
            marked: 1,
            already: 0,
        };
        s.finish_batch(7, delivered, 5, 1.0).await.unwrap();
        assert_eq!(ids(&s), vec![8]);
    }

    /// A `batches` row that does not decode stays in the table but holds back no other
    /// batch, and does not keep the exporter waking for it.
    #[tokio::test]
    async fn an_unreadable_batch_row_holds_back_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let rows = vec![
            // Its head reads, its episodes do not.
            (
                1,
                br#"{"show_id":"a","next_attempt_at":0,"items":"?"}"#.to_vec(),
            ),
            (2, encode(&raw_batch(2, "b", 5)).unwrap()),
            // Nothing reads.
            (3, b"\xff not json".to_vec()),
            (4, encode(&raw_batch(4, "a", 5)).unwrap()),
        ];
        let s = store_with_rows(&dir.path().join("s.redb"), rows).await;
        let none = HashSet::new();
        let first = s.next_due_batches(i64::MAX, 64, &none).unwrap();
        assert_eq!(ids_and_shows(&first), vec![(2, "b".into())]);
        assert_eq!(
            s.next_batch_at().unwrap(),
            Some(5),
            "the bad rows wake nothing"
        );
        let next = s.next_due_batches(i64::MAX, 64, &none).unwrap();
        assert_eq!(ids_and_shows(&next), vec![(2, "b".into()), (4, "a".into())]);
        let kept = s.read(|txn| Ok(txn.open_table(BATCHES)?.len()?)).unwrap();
        assert_eq!(kept, 4, "the bad rows are left in the store");
    }

    /// Write `bytes` as row `key` of `table`, as they are: a corrupt or foreign value.
    async fn plant(
        s: &Store,
        table: TableDefinition<'static, u64, &'static [u8]>,
        key: u64,
        bytes: &'static [u8],
    ) {
        s.write(move |txn| {
            txn.open_table(table)?.insert(key, bytes)?;
            Ok(())
        })
        .await
        .unwrap();
    }

    fn raw_rows(
        s: &Store,
        table: TableDefinition<'static, u64, &'static [u8]>,
    ) -> Vec<(u64, Vec<u8>)> {
        s.read(|txn| {
            let mut out = Vec::new();
            for row in txn.open_table(table)?.iter()? {
                let (k, v) = row?;
                out.push((k.value(), v.value().to_vec()));
            }
            Ok(out)
        })
        .unwrap()
    }

    /// An `outbox` item that does not decode (its show unknown) stops no show's batches: it
    /// is skipped and left in the table, logged once, and counted where status looks.
    #[tokio::test]
    async fn an_unreadable_outbox_item_holds_back_no_show() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        // Before every real item in queue order, and one of a shape no release wrote.
        plant(&s, OUTBOX, 0, b"{not json").await;
        enqueued(&s, &["a", "b"], 2).await;
        plant(&s, OUTBOX, 1_000_000, br#"{"show_id":7}"#).await;
        assert_eq!(s.outbox_probe().unwrap().items, 6);
        assert_eq!(s.backlog_requests(10).unwrap(), 2);
        assert_eq!(s.form_batches(10).await.unwrap(), 2);
        let none = HashSet::new();
        let due = s.next_due_batches(i64::MAX, 10, &none).unwrap();
        assert_eq!(
            due.iter()
                .map(|b| (b.show_id.as_str(), b.items.len()))
                .collect::<Vec<_>>(),
            vec![("a", 2), ("b", 2)]
        );
        // Left as they were; the next forming skips them again (logged once each).
        let left: Vec<u64> = raw_rows(&s, OUTBOX).into_iter().map(|r| r.0).collect();
        assert_eq!(left, vec![0, 1_000_000]);
        assert_eq!(s.form_batches(10).await.unwrap(), 0);
        assert_eq!(s.inner.unreadable.noted(), 2);
        let c = s.counts().unwrap();
        assert_eq!(c.unreadable_exports, 2);
        assert_eq!((c.outbox_items, c.batches), (4, 2));
        // A show queued after them goes too.
        enqueued(&s, &["c"], 1).await;
        assert_eq!(s.form_batches(10).await.unwrap(), 1);
    }

    /// Rows of every shape: the borrowed check and the item's own decoding agree.
    #[test]
    fn the_outbox_shape_refuses_what_the_item_refuses() {
        let good = encode(&OutboxItem {
            play_id: 1,
            show_id: "a\"b".into(),
            season: 1,
            episode: 2,
            watched_at: 3,
            queued_at: 4,
            title: Some("T".into()),
            account: None,
        })
        .unwrap();
        let rows: Vec<&[u8]> = vec![
            &good,
            br#"{"play_id":1,"show_id":"a","season":1,"episode":2,"watched_at":3,"queued_at":4}"#,
            br#"{"show_id":"a"}"#,
            br#"{"play_id":1,"show_id":"a","season":-1,"episode":2,"watched_at":3,"queued_at":4}"#,
            br#"{"play_id":1,"show_id":"a","season":1,"episode":2,"watched_at":3,"queued_at":4,"title":7}"#,
            br#"{"play_id":"1","show_id":"a","season":1,"episode":2,"watched_at":3,"queued_at":4}"#,
            br#"{"play_id":1,"show_id":7,"season":1,"episode":2,"watched_at":3,"queued_at":4}"#,
            br#"{"play_id":1,"show_id":"a","season":1,"episode":2,"watched_at":3,"queued_at":4,"x":[1]}"#,
            b"{not json",
        ];
        for r in rows {
            assert_eq!(
                serde_json::from_slice::<OutboxShape<'_>>(r).is_ok(),
                decode::<OutboxItem>(r).is_ok(),
                "{}",
                String::from_utf8_lossy(r)
            );
        }
    }

    /// A row with a show id but not an item's shape takes no batch's place: not under a
    /// tight budget (one batch a round), not in a full-only round's count.
    #[tokio::test]
    async fn a_partly_readable_outbox_row_takes_no_place() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        plant(&s, OUTBOX, 0, br#"{"show_id":"a"}"#).await;
        enqueued(&s, &["b"], 1).await;
        let one = FormPlan {
            full_only: false,
            max_batches: 1,
        };
        assert_eq!(s.form_batches_with(10, one).await.unwrap(), 1);
        let none = HashSet::new();
        let due = s.next_due_batches(i64::MAX, 10, &none).unwrap();
        assert_eq!(due[0].show_id, "b");
        // Full-only, size 2: the show's one good item and the bad row are not a full batch.
        plant(&s, OUTBOX, 1, br#"{"show_id":"c"}"#).await;
        enqueued(&s, &["c"], 1).await;
        let full = FormPlan {
            full_only: true,
            max_batches: usize::MAX,
        };
        assert_eq!(s.form_batches_with(2, full).await.unwrap(), 0);
        // A show with two good items is full.
        enqueued(&s, &["d"], 2).await;
        assert_eq!(s.form_batches_with(2, full).await.unwrap(), 1);
        let due = s.next_due_batches(i64::MAX, 10, &none).unwrap();
        assert!(due.iter().all(|b| b.show_id != "c"), "{due:?}");
        assert_eq!(
            due.iter().find(|b| b.show_id == "d").unwrap().items.len(),
            2
        );
    }

    /// A dead letter that does not decode stays where it is; `outbox retry` sends the others
    /// again, and the listings and counts leave it out (counted apart).
    #[tokio::test]
    async fn an_unreadable_dead_letter_does_not_stop_outbox_retry() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        queued(&s, &["a", "b"], 1, 10).await;
        let none = HashSet::new();
        for b in s.next_due_batches(i64::MAX, 10, &none).unwrap() {
            let refused = BatchOutcome::Permanent {
                error: "422".into(),
            };
            s.finish_batch(b.id, refused, 5, 1.0).await.unwrap();
        }
        plant(&s, DEAD, 1_000, b"\xff not json").await;
        let c = s.counts().unwrap();
        assert_eq!((c.dead_letters, c.unreadable_exports), (2, 1));
        assert_eq!(s.dead_letters().unwrap().len(), 2);
        assert_eq!(s.outbox_batches().unwrap().len(), 2);
        assert_eq!(s.retry_dead().await.unwrap(), 2);
        let again = s.next_due_batches(i64::MAX, 10, &none).unwrap();
        assert_eq!(again.len(), 2, "both shows go again");
        let dead = raw_rows(&s, DEAD);
        assert_eq!(
            dead,
            vec![(1_000, b"\xff not json".to_vec())],
            "left as it was"
        );
        assert!(s.dead_letters().unwrap().is_empty());
        let c = s.counts().unwrap();
        assert_eq!((c.dead_letters, c.batches, c.unreadable_exports), (0, 2, 1));
        // A second retry finds nothing to move and still fails nothing.
        assert_eq!(s.retry_dead().await.unwrap(), 0);
    }

    /// Run the store write `job` in one group commit with a job that fails with a storage
    /// error (a full disk), so nothing of the group commits. The writer is held inside a
    /// group of its own until both are queued, `job` first: they form its next group
    /// whatever the threads' timing.
    async fn in_a_failing_group<R>(
        s: &Store,
        job: impl std::future::Future<Output = Result<R>>,
    ) -> Result<R> {
        let (started_tx, started) = std::sync::mpsc::channel();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        s.write_detached(move |_| {
            let _ = started_tx.send(());
            let _ = gate.recv();
            Ok(())
        });
        started.recv().expect("the writer runs the held group");
        let mut job = std::pin::pin!(job);
        let mut failing = std::pin::pin!(s.write(|_| -> Result<()> {
            Err(StoreError::Storage("No space left on device".into()))
        }));
        // One poll each queues its job behind the held group, in this order.
        std::future::poll_fn(|cx| {
            assert!(job.as_mut().poll(cx).is_pending());
            assert!(failing.as_mut().poll(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        let _ = release.send(());
        let (out, failed) = tokio::join!(job, failing);
        assert!(failed.is_err());
        out
    }

    fn export_rows(s: &Store) -> Vec<Activity> {
        let export = ActivityFilter {
            source: Some(crate::model::ActivitySource::Export),
            ..Default::default()
        };
        s.activity(&export, 1, 50).unwrap().0
    }

    /// A batch whose plays' journal entries cannot be read (its activity row's names come
    /// from them) still has every outcome recorded: rescheduled, then delivered and gone,
    /// not left due to be sent again for ever.
    #[tokio::test]
    async fn a_batch_whose_journal_entries_cannot_be_read_is_still_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        queued(&s, &["a"], 2, 10).await;
        let none = HashSet::new();
        let b = s.next_due_batches(i64::MAX, 10, &none).unwrap().remove(0);
        // Items as a release before names were kept with them queued them: the names come
        // from the journal, and one entry cannot be read.
        let mut old = b.clone();
        for it in &mut old.items {
            (it.title, it.account) = (None, None);
        }
        s.write(move |txn| {
            txn.open_table(BATCHES)?
                .insert(old.id, encode(&old)?.as_slice())?;
            Ok(())
        })
        .await
        .unwrap();
        let play = b.items[0].play_id;
        s.write(move |txn| {
            txn.open_table(JOURNAL)?
                .insert(play, b"{not json".as_slice())?;
            Ok(())
        })
        .await
        .unwrap();
        let later = now_millis() + 60_000;
        let retry = BatchOutcome::Transient {
            error: "503".into(),
            retry_at_ms: later,
        };
        s.finish_batch(b.id, retry, 5, 1.0).await.unwrap();
        assert!(
            s.next_due_batches(now_millis(), 10, &none)
                .unwrap()
                .is_empty()
        );
        assert_eq!(s.next_batch_at().unwrap(), Some(later));
        let again = s.next_due_batches(i64::MAX, 10, &none).unwrap().remove(0);
        assert_eq!(
            (again.attempts, &again.idempotency_key),
            (1, &b.idempotency_key)
        );
        let delivered = BatchOutcome::Delivered {
            marked: 2,
            already: 0,
        };
        s.finish_batch(b.id, delivered, 5, 1.0).await.unwrap();
        assert!(s.next_due_batches(i64::MAX, 10, &none).unwrap().is_empty());
        assert_eq!(s.next_batch_at().unwrap(), None);
        assert!(s.outbox_batches().unwrap().is_empty());
        for e in [1, 2] {
            assert!(s.watched("a", 1, e).unwrap().unwrap().exported_at.is_some());
        }
        let rows = export_rows(&s);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].event.as_deref(), Some("delivered"));
        // The other play still names the show and account.
        assert_eq!(rows[0].title.as_deref(), Some("Show"));
        assert!(rows[0].account.is_some(), "{:?}", rows[0]);
        // The entry is left as it was.
        let kept = s
            .read(move |txn| {
                Ok(txn
                    .open_table(JOURNAL)?
                    .get(play)?
                    .map(|v| v.value().to_vec()))
            })
            .unwrap();
        assert_eq!(kept.as_deref(), Some(b"{not json".as_slice()));
    }

    /// Items keep their play's show title and account, so the export's activity row (and the
    /// outbox listing) names them without the journal: here every entry of the batch is
    /// unreadable.
    #[tokio::test]
    async fn a_batch_names_its_plays_from_its_items() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        queued(&s, &["a"], 2, 10).await;
        let none = HashSet::new();
        let b = s.next_due_batches(i64::MAX, 10, &none).unwrap().remove(0);
        assert!(
            b.items
                .iter()
                .all(|it| it.title.as_deref() == Some("Show") && it.account.is_some()),
            "{b:?}"
        );
        let plays: Vec<u64> = b.items.iter().map(|it| it.play_id).collect();
        s.write(move |txn| {
            let mut j = txn.open_table(JOURNAL)?;
            for p in &plays {
                j.insert(*p, b"{not json".as_slice())?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let listed = s.outbox_batches().unwrap();
        assert_eq!(listed[0].title.as_deref(), Some("Show"), "{listed:?}");
        let delivered = BatchOutcome::Delivered {
            marked: 2,
            already: 0,
        };
        s.finish_batch(b.id, delivered, 5, 1.0).await.unwrap();
        let rows = export_rows(&s);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].title.as_deref(), Some("Show"));
        assert_eq!(rows[0].account, b.items[0].account, "{:?}", rows[0]);
    }

    /// A delivered batch one of whose episodes' `watched` row cannot be read is recorded as
    /// delivered: the other episode marked exported, that row left as it is (not marked),
    /// and the activity row says so. A refused batch in the same state goes to the dead
    /// letter as usual.
    #[tokio::test]
    async fn a_delivered_batch_whose_watched_row_cannot_be_read_is_recorded_and_the_row_left() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        queued(&s, &["a", "b"], 2, 10).await;
        for show in ["a", "b"] {
            let k = watched_key(show, 1, 1);
            s.write(move |txn| {
                txn.open_table(WATCHED)?
                    .insert(k.as_str(), b"\xff not json".as_slice())?;
                Ok(())
            })
            .await
            .unwrap();
        }
        let none = HashSet::new();
        let due = s.next_due_batches(i64::MAX, 10, &none).unwrap();
        let delivered = BatchOutcome::Delivered {
            marked: 2,
            already: 0,
        };
        s.finish_batch(due[0].id, delivered, 5, 1.0).await.unwrap();
        let refused = BatchOutcome::Permanent {
            error: "422".into(),
        };
        s.finish_batch(due[1].id, refused, 5, 1.0).await.unwrap();
        assert!(s.next_due_batches(i64::MAX, 10, &none).unwrap().is_empty());
        assert!(s.watched("a", 1, 2).unwrap().unwrap().exported_at.is_some());
        assert!(s.watched("a", 1, 1).is_err(), "left as it was");
        let raw = s
            .read(|txn| {
                let t = txn.open_table(WATCHED)?;
                Ok(t.get(watched_key("a", 1, 1).as_str())?
                    .map(|v| v.value().to_vec()))
            })
            .unwrap();
        assert_eq!(raw.as_deref(), Some(b"\xff not json".as_slice()));
        let rows = export_rows(&s);
        let row = rows
            .iter()
            .find(|r| r.show.as_deref() == Some("a"))
            .unwrap();
        assert_eq!(row.event.as_deref(), Some("delivered"));
        assert!(
            row.action
                .contains("the watched record of S01E01 cannot be read"),
            "{}",
            row.action
        );
        let dead = s.dead_letters().unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].show_id, "b");
        assert_eq!(s.counts().unwrap().unreadable_exports, 0);
    }

    /// A batch row that no longer decodes when its answer comes (it did when it was sent)
    /// is left in the table and not offered again, nor does it fail the recording.
    #[tokio::test]
    async fn a_batch_row_unreadable_when_its_outcome_comes_is_left_and_not_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        queued(&s, &["a"], 1, 10).await;
        let none = HashSet::new();
        let b = s.next_due_batches(i64::MAX, 10, &none).unwrap().remove(0);
        let id = b.id;
        s.write(move |txn| {
            txn.open_table(BATCHES)?
                .insert(id, b"{not json".as_slice())?;
            Ok(())
        })
        .await
        .unwrap();
        let delivered = BatchOutcome::Delivered {
            marked: 1,
            already: 0,
        };
        s.finish_batch(id, delivered, 5, 1.0).await.unwrap();
        assert!(s.next_due_batches(i64::MAX, 10, &none).unwrap().is_empty());
        assert_eq!(
            s.next_batch_at().unwrap(),
            None,
            "nothing wakes the exporter for it"
        );
        let kept = s.read(|txn| Ok(txn.open_table(BATCHES)?.len()?)).unwrap();
        assert_eq!(kept, 1, "left in the store");
        assert_eq!(s.counts().unwrap().unreadable_exports, 1);
    }

    /// A write that cannot commit (a storage error: a full disk) is not such a case: the
    /// batch stays due as it was, same key, no attempt counted, and goes again.
    #[tokio::test]
    async fn an_outcome_the_store_cannot_commit_leaves_the_batch_due_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        queued(&s, &["a"], 1, 10).await;
        let none = HashSet::new();
        let b = s.next_due_batches(i64::MAX, 10, &none).unwrap().remove(0);
        let delivered = BatchOutcome::Delivered {
            marked: 1,
            already: 0,
        };
        let finished = in_a_failing_group(&s, s.finish_batch(b.id, delivered, 5, 1.0)).await;
        assert!(finished.is_err());
        let again = s.next_due_batches(i64::MAX, 10, &none).unwrap();
        assert_eq!(again, vec![b.clone()], "due as it was");
        assert!(s.watched("a", 1, 1).unwrap().unwrap().exported_at.is_none());
        let delivered = BatchOutcome::Delivered {
            marked: 1,
            already: 0,
        };
        s.finish_batch(b.id, delivered, 5, 1.0).await.unwrap();
        assert!(s.next_due_batches(i64::MAX, 10, &none).unwrap().is_empty());
    }
}
