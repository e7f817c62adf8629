//! Domain operations on the store: each is one atomic step of the pipeline (ingest a play,
//! apply a resolution, form / finish export batches, …), run in a group commit.

use std::collections::BTreeMap;

use plexsync_plugin_api::{CatalogShow, PlaySource};
use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::*;
use crate::model::{
    Activity, ActivityStatus, Batch, Conflict, JournalEntry, Mapping, OutboxItem, Play, PlayState,
    Watched, now_millis, now_secs,
};
use crate::secrets::SealedSecret;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DedupeEntry {
    viewed_at: i64,
    play_id: u64,
    /// Every source that has reported this viewing.
    #[serde(default)]
    sources: Vec<PlaySource>,
}

/// The answer to [`Store::ingest_play`].
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// A new play, journaled under this id.
    New(u64),
    /// The same viewing was already journaled as this play.
    Duplicate(u64),
    /// This exact history row was journaled before (an overlapping poll read it again).
    AlreadySeen(u64),
}

/// A poll cursor: rows with `viewedAt` up to here are journaled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    pub viewed_at: i64,
    pub updated_at: i64,
}

/// What [`Store::ingest_batch`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BatchCounts {
    pub new: u64,
    pub duplicates: u64,
    pub already_seen: u64,
    pub new_ids: Vec<u64>,
}

/// What the resolver decided for a pending play.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// Mapped; `mapping` is stored when the show had none yet.
    Mapped {
        show_id: String,
        mapping: Option<Mapping>,
    },
    /// Needs a person: held in the show's conflict.
    Conflict(Conflict),
    /// The show is ignored by a person's decision.
    Ignored,
    /// Could not decide now (Plex/tracker unreachable, no catalogue yet): try again later.
    Retry { not_before_ms: i64 },
}

/// What applying a resolution did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Recorded as watched and queued for export.
    Queued,
    /// Recorded as watched; the episode was already watched (or sync is off): nothing to send.
    AlreadyWatched,
    Parked,
    Ignored,
    Deferred,
    /// The play was not pending any more (resolved concurrently).
    Stale,
}

/// How a finished export attempt went.
#[derive(Debug, Clone)]
pub enum BatchOutcome {
    Delivered { marked: u64, already: u64 },
    Transient { error: String, retry_at_ms: i64 },
    Permanent { error: String },
}

/// What a person decided for a conflict.
#[derive(Debug, Clone)]
pub enum ConflictDecision {
    /// Map the show to this tracker show (chosen, or just created).
    Select { show_id: String, method: String },
    /// Never sync this show; its plays stay in the journal as ignored.
    Ignore,
}

/// Per-day activity for the stats view.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DayStats {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub total: u64,
    pub success: u64,
    pub failed: u64,
    pub ignored: u64,
    pub duplicate: u64,
    pub avg_duration_ms: f64,
    pub max_duration_ms: f64,
}

/// Exported-episode figures of one tracker show.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShowSync {
    pub plays_synced: u64,
    pub last_synced_at: Option<i64>,
}

/// Counts for status pages.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    pub journal: u64,
    pub pending_resolution: u64,
    pub outbox_items: u64,
    pub batches: u64,
    pub dead_letters: u64,
    pub conflicts: u64,
    pub mappings: u64,
    pub watched: u64,
    /// Age in seconds of the oldest play waiting for export.
    pub oldest_pending_secs: Option<i64>,
    /// Plays found by polling that no webhook had delivered.
    pub webhook_loss: u64,
}

fn watched_key(show_id: &str, season: u32, episode: u32) -> String {
    format!("{show_id}\u{1f}{season:06}\u{1f}{episode:06}")
}

fn put_activity(txn: &WriteTransaction, mut a: Activity) -> Result<u64> {
    let id = next_seq(txn, "activity")?;
    a.id = id;
    txn.open_table(ACTIVITY)?
        .insert(id, encode(&a)?.as_slice())?;
    Ok(id)
}

fn get_json<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>> {
    match table.get(key)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

impl Store {
    /// Journal a play (or recognise it as a duplicate) and record its activity row, in one
    /// durable step. `window_secs`: the same account/show/episode viewed within this many
    /// seconds is the same viewing.
    pub async fn ingest_play(
        &self,
        play: Play,
        activity: Activity,
        window_secs: i64,
    ) -> Result<Ingested> {
        self.write(move |txn| ingest_in(txn, play, Some(activity), window_secs))
            .await
    }

    /// Journal many plays and, in the same transaction, advance a poll cursor — so the cursor
    /// never moves past a row that is not durably journaled. `activity(play)` builds the row
    /// for a new play or a cross-source duplicate (None: no row).
    pub async fn ingest_batch(
        &self,
        plays: Vec<Play>,
        cursor: Option<(String, i64)>,
        window_secs: i64,
        activity: fn(&Play) -> Option<Activity>,
    ) -> Result<BatchCounts> {
        self.write(move |txn| {
            let mut counts = BatchCounts::default();
            for play in plays {
                let a = activity(&play);
                match ingest_in(txn, play, a, window_secs)? {
                    Ingested::New(id) => {
                        counts.new += 1;
                        counts.new_ids.push(id);
                    }
                    Ingested::Duplicate(_) => counts.duplicates += 1,
                    Ingested::AlreadySeen(_) => counts.already_seen += 1,
                }
            }
            if let Some((key, viewed_at)) = cursor {
                let mut t = txn.open_table(CURSORS)?;
                let cur: Option<Cursor> = get_json(&t, &key)?;
                let next = cur.map_or(viewed_at, |c| c.viewed_at.max(viewed_at));
                t.insert(
                    key.as_str(),
                    encode(&Cursor {
                        viewed_at: next,
                        updated_at: now_secs(),
                    })?
                    .as_slice(),
                )?;
            }
            Ok(counts)
        })
        .await
    }

    pub fn cursor(&self, key: &str) -> Result<Option<Cursor>> {
        self.read(|txn| get_json(&txn.open_table(CURSORS)?, key))
    }

    pub fn cursors(&self) -> Result<Vec<(String, Cursor)>> {
        self.read(|txn| {
            let t = txn.open_table(CURSORS)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_string(), decode(v.value())?));
            }
            Ok(out)
        })
    }

    /// Record an activity row on its own.
    pub async fn record_activity(&self, a: Activity) -> Result<u64> {
        self.write(move |txn| put_activity(txn, a)).await
    }

    /// Plays waiting for the resolver whose retry time has come, oldest first.
    pub fn due_pending(&self, now_ms: i64, limit: usize) -> Result<Vec<Play>> {
        self.read(|txn| {
            let pending = txn.open_table(PENDING)?;
            let journal = txn.open_table(JOURNAL)?;
            let mut out = Vec::new();
            for row in pending.iter()? {
                let (id, not_before) = row?;
                if not_before.value() > now_ms {
                    continue;
                }
                if let Some(v) = journal.get(id.value())? {
                    let e: JournalEntry = decode(v.value())?;
                    out.push(e.play);
                }
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// The earliest retry time among pending plays, if any.
    pub fn next_pending_at(&self) -> Result<Option<i64>> {
        self.read(|txn| {
            let pending = txn.open_table(PENDING)?;
            let mut min: Option<i64> = None;
            for row in pending.iter()? {
                let (_, t) = row?;
                min = Some(min.map_or(t.value(), |m: i64| m.min(t.value())));
            }
            Ok(min)
        })
    }

    pub fn mapping(&self, show_key: &str) -> Result<Option<Mapping>> {
        self.read(|txn| get_json(&txn.open_table(MAPPINGS)?, show_key))
    }

    pub fn conflict(&self, show_key: &str) -> Result<Option<Conflict>> {
        self.read(|txn| get_json(&txn.open_table(CONFLICTS)?, show_key))
    }

    pub fn conflicts(&self) -> Result<Vec<Conflict>> {
        self.read(|txn| all_json(&txn.open_table(CONFLICTS)?))
    }

    pub fn mappings(&self) -> Result<Vec<Mapping>> {
        self.read(|txn| all_json(&txn.open_table(MAPPINGS)?))
    }

    /// Apply many decisions in one transaction. A play that is gone or no longer pending is
    /// `Stale`; it does not spoil the others.
    pub async fn apply_resolutions(&self, items: Vec<(u64, Resolution)>) -> Result<Vec<Applied>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |txn| {
            let mut out = Vec::with_capacity(items.len());
            for (id, r) in items {
                out.push(match apply_in(txn, id, r) {
                    Err(StoreError::NotFound(_)) => Applied::Stale,
                    other => other?,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Apply the resolver's decision for one play.
    pub async fn apply_resolution(&self, play_id: u64, r: Resolution) -> Result<Applied> {
        self.write(move |txn| apply_in(txn, play_id, r)).await
    }

    /// Move waiting outbox items into batches of at most `batch_size` episodes per show, each
    /// with a fresh idempotency key that every attempt of that batch will reuse.
    pub async fn form_batches(&self, batch_size: usize) -> Result<usize> {
        self.write(move |txn| {
            let mut outbox = txn.open_table(OUTBOX)?;
            let mut by_show: BTreeMap<String, Vec<OutboxItem>> = BTreeMap::new();
            let mut ids = Vec::new();
            for row in outbox.iter()? {
                let (id, v) = row?;
                let item: OutboxItem = decode(v.value())?;
                ids.push(id.value());
                by_show.entry(item.show_id.clone()).or_default().push(item);
            }
            if ids.is_empty() {
                return Ok(0);
            }
            for id in ids {
                outbox.remove(id)?;
            }
            drop(outbox);
            let now = now_millis();
            let mut formed = 0;
            for (show_id, items) in by_show {
                for chunk in items.chunks(batch_size.max(1)) {
                    let id = next_seq(txn, "batch")?;
                    let key = crate::secrets::hex(
                        &crate::secrets::random_bytes::<16>()
                            .map_err(|e| StoreError::Storage(e.to_string()))?,
                    );
                    let b = Batch {
                        id,
                        show_id: show_id.clone(),
                        idempotency_key: key,
                        items: chunk.to_vec(),
                        attempts: 0,
                        next_attempt_at: now,
                        last_error: None,
                        created_at: now_secs(),
                    };
                    txn.open_table(BATCHES)?
                        .insert(id, encode(&b)?.as_slice())?;
                    formed += 1;
                }
            }
            Ok(formed)
        })
        .await
    }

    /// Batches whose next attempt is due.
    pub fn due_batches(&self, now_ms: i64, limit: usize) -> Result<Vec<Batch>> {
        self.read(|txn| {
            let t = txn.open_table(BATCHES)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (_, v) = row?;
                let b: Batch = decode(v.value())?;
                if b.next_attempt_at <= now_ms {
                    out.push(b);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    /// Earliest next attempt among batches.
    pub fn next_batch_at(&self) -> Result<Option<i64>> {
        self.read(|txn| {
            let t = txn.open_table(BATCHES)?;
            let mut min: Option<i64> = None;
            for row in t.iter()? {
                let (_, v) = row?;
                let b: Batch = decode(v.value())?;
                min = Some(min.map_or(b.next_attempt_at, |m: i64| m.min(b.next_attempt_at)));
            }
            Ok(min)
        })
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
        self.write(move |txn| {
            let mut batches = txn.open_table(BATCHES)?;
            let mut b: Batch = match batches.get(batch_id)? {
                Some(v) => decode(v.value())?,
                None => return Ok(()),
            };
            b.attempts += 1;
            let n = b.items.len() as u32;
            let (status, action, error) = match outcome {
                BatchOutcome::Delivered { marked, already } => {
                    batches.remove(batch_id)?;
                    drop(batches);
                    let mut watched = txn.open_table(WATCHED)?;
                    let now = now_secs();
                    for it in &b.items {
                        let k = watched_key(&it.show_id, it.season, it.episode);
                        if let Some(mut w) = get_json::<Watched>(&watched, &k)? {
                            w.exported_at = Some(now);
                            watched.insert(k.as_str(), encode(&w)?.as_slice())?;
                        }
                    }
                    (
                        ActivityStatus::Success,
                        format!(
                            "exported {n} episode(s): {marked} marked, {already} already watched"
                        ),
                        None,
                    )
                }
                BatchOutcome::Transient { error, retry_at_ms } if b.attempts < max_attempts => {
                    b.next_attempt_at = retry_at_ms;
                    b.last_error = Some(error.clone());
                    batches.insert(batch_id, encode(&b)?.as_slice())?;
                    (
                        ActivityStatus::Failed,
                        format!(
                            "export attempt {} of {n} episode(s) failed; retrying",
                            b.attempts
                        ),
                        Some(error),
                    )
                }
                BatchOutcome::Transient { error, .. } | BatchOutcome::Permanent { error } => {
                    batches.remove(batch_id)?;
                    drop(batches);
                    b.last_error = Some(error.clone());
                    txn.open_table(DEAD)?
                        .insert(batch_id, encode(&b)?.as_slice())?;
                    (
                        ActivityStatus::Failed,
                        format!(
                            "{n} episode(s) moved to the dead letter after {} attempt(s)",
                            b.attempts
                        ),
                        Some(error),
                    )
                }
            };
            put_activity(
                txn,
                Activity {
                    id: 0,
                    at: now_millis(),
                    source: "export".into(),
                    event: Some("export".into()),
                    account: None,
                    show: Some(b.show_id.clone()),
                    season: None,
                    episode: None,
                    status,
                    action,
                    error,
                    duration_ms,
                    play_id: None,
                    client: None,
                },
            )?;
            Ok(())
        })
        .await
    }

    /// Move every dead-lettered batch back to pending with a new idempotency key.
    pub async fn retry_dead(&self) -> Result<usize> {
        self.write(|txn| {
            let mut dead = txn.open_table(DEAD)?;
            let mut moved = Vec::new();
            while let Some((k, v)) = dead.pop_first()? {
                moved.push((k.value(), decode::<Batch>(v.value())?));
            }
            drop(dead);
            let mut batches = txn.open_table(BATCHES)?;
            let now = now_millis();
            for (id, mut b) in moved.iter().cloned() {
                b.attempts = 0;
                b.next_attempt_at = now;
                // A new key: the tracker may have cached its refusal under the old one.
                b.idempotency_key = crate::secrets::hex(
                    &crate::secrets::random_bytes::<16>()
                        .map_err(|e| StoreError::Storage(e.to_string()))?,
                );
                batches.insert(id, encode(&b)?.as_slice())?;
            }
            Ok(moved.len())
        })
        .await
    }

    pub fn dead_letters(&self) -> Result<Vec<Batch>> {
        self.read(|txn| {
            let t = txn.open_table(DEAD)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                out.push(decode(row?.1.value())?);
            }
            Ok(out)
        })
    }

    pub fn watched(&self, show_id: &str, season: u32, episode: u32) -> Result<Option<Watched>> {
        self.read(|txn| {
            get_json(
                &txn.open_table(WATCHED)?,
                &watched_key(show_id, season, episode),
            )
        })
    }

    /// Of these plays: how many are resolved to a show, parked in a conflict, still pending.
    pub fn play_outcomes(&self, ids: &[u64]) -> Result<(u64, u64, u64)> {
        self.read(|txn| {
            let j = txn.open_table(JOURNAL)?;
            let (mut matched, mut parked, mut waiting) = (0, 0, 0);
            for id in ids {
                if let Some(v) = j.get(*id)? {
                    match decode::<JournalEntry>(v.value())?.state {
                        PlayState::Resolved { .. } => matched += 1,
                        PlayState::Parked { .. } => parked += 1,
                        PlayState::Pending => waiting += 1,
                        PlayState::Ignored => {}
                    }
                }
            }
            Ok((matched, parked, waiting))
        })
    }

    /// Apply a person's decision: the conflict goes, the decision becomes a (manual) mapping
    /// future plays reuse, and the held plays are released — recorded as watched and queued
    /// for export (select) or marked ignored (ignore). Returns (plays released, episodes queued).
    pub async fn resolve_conflict(
        &self,
        key: String,
        decision: ConflictDecision,
    ) -> Result<(usize, usize)> {
        self.write(move |txn| {
            let mut conflicts = txn.open_table(CONFLICTS)?;
            let c: Conflict = get_json(&conflicts, &key)?
                .ok_or_else(|| StoreError::NotFound(format!("no open conflict {key:?}")))?;
            conflicts.remove(key.as_str())?;
            drop(conflicts);
            let (show_id, ignored, method) = match &decision {
                ConflictDecision::Select { show_id, method } => {
                    (show_id.clone(), false, method.clone())
                }
                ConflictDecision::Ignore => (String::new(), true, "ignored".to_string()),
            };
            let mapping = Mapping {
                plex: c.plex.clone(),
                show_id: show_id.clone(),
                method,
                confidence: 1.0,
                manual: true,
                sync_enabled: !ignored,
                created_at: now_secs(),
                ignored,
            };
            txn.open_table(MAPPINGS)?
                .insert(key.as_str(), encode(&mapping)?.as_slice())?;
            let (mut released, mut queued) = (0, 0);
            for id in c.held {
                let mut journal = txn.open_table(JOURNAL)?;
                let Some(v) = journal.get(id)? else { continue };
                let mut entry: JournalEntry = decode(v.value())?;
                drop(v);
                if !matches!(entry.state, PlayState::Parked { .. }) {
                    continue;
                }
                released += 1;
                if ignored {
                    entry.state = PlayState::Ignored;
                } else {
                    drop(journal);
                    if record_watched(txn, &entry.play, &show_id, true)? == Applied::Queued {
                        queued += 1;
                    }
                    entry.state = PlayState::Resolved {
                        show_id: show_id.clone(),
                    };
                    journal = txn.open_table(JOURNAL)?;
                }
                journal.insert(id, encode(&entry)?.as_slice())?;
            }
            Ok((released, queued))
        })
        .await
    }

    /// Point a mapping at another tracker show (a person's choice) or turn its sync on/off.
    /// Returns the mapping as stored.
    pub async fn update_mapping(
        &self,
        key: String,
        show_id: Option<String>,
        sync_enabled: Option<bool>,
    ) -> Result<Mapping> {
        self.write(move |txn| {
            let mut t = txn.open_table(MAPPINGS)?;
            let mut m: Mapping = get_json(&t, &key)?
                .ok_or_else(|| StoreError::NotFound(format!("no mapping {key:?}")))?;
            if let Some(id) = show_id {
                m.show_id = id;
                m.method = "manual".into();
                m.confidence = 1.0;
                m.manual = true;
                m.ignored = false;
            }
            if let Some(on) = sync_enabled {
                m.sync_enabled = on;
            }
            t.insert(key.as_str(), encode(&m)?.as_slice())?;
            Ok(m)
        })
        .await
    }

    /// Exported episodes of a tracker show and when the last one was delivered.
    pub fn show_sync(&self, show_id: &str) -> Result<ShowSync> {
        self.read(|txn| {
            let t = txn.open_table(WATCHED)?;
            let start = format!("{show_id}\u{1f}");
            let end = format!("{show_id}\u{20}");
            let mut out = ShowSync::default();
            for row in t.range(start.as_str()..end.as_str())? {
                let w: Watched = decode(row?.1.value())?;
                if let Some(at) = w.exported_at {
                    out.plays_synced += 1;
                    out.last_synced_at = Some(out.last_synced_at.map_or(at, |l: i64| l.max(at)));
                }
            }
            Ok(out)
        })
    }

    /// Activity per day (UTC) for the last `days` days, newest first.
    pub fn activity_days(&self, now_ms: i64, days: i64) -> Result<Vec<DayStats>> {
        let since = now_ms - days * 86_400_000;
        self.read(|txn| {
            let t = txn.open_table(ACTIVITY)?;
            let mut by_day: BTreeMap<i64, (DayStats, f64)> = BTreeMap::new();
            for row in t.iter()?.rev() {
                let a: Activity = decode(row?.1.value())?;
                if a.at < since {
                    break;
                }
                let day = a.at.div_euclid(86_400_000);
                let (d, sum) = by_day.entry(day).or_insert_with(|| {
                    (
                        DayStats {
                            day: day_string(day),
                            ..Default::default()
                        },
                        0.0,
                    )
                });
                d.total += 1;
                match a.status {
                    ActivityStatus::Success => d.success += 1,
                    ActivityStatus::Failed => d.failed += 1,
                    ActivityStatus::Ignored => d.ignored += 1,
                    ActivityStatus::Duplicate => d.duplicate += 1,
                }
                *sum += a.duration_ms;
                d.max_duration_ms = d.max_duration_ms.max(a.duration_ms);
            }
            Ok(by_day
                .into_values()
                .rev()
                .map(|(mut d, sum)| {
                    d.avg_duration_ms = if d.total > 0 {
                        sum / d.total as f64
                    } else {
                        0.0
                    };
                    d
                })
                .collect())
        })
    }

    /// Delete activity rows older than `before_ms` (failed ones too unless `keep_failed`).
    pub async fn prune_activity(&self, before_ms: i64, keep_failed: bool) -> Result<u64> {
        self.write(move |txn| {
            let mut t = txn.open_table(ACTIVITY)?;
            let mut doomed = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let a: Activity = decode(v.value())?;
                if a.at >= before_ms {
                    break;
                }
                if keep_failed && a.status == ActivityStatus::Failed {
                    continue;
                }
                doomed.push(k.value());
            }
            for k in &doomed {
                t.remove(*k)?;
            }
            Ok(doomed.len() as u64)
        })
        .await
    }

    pub fn journal_entry(&self, play_id: u64) -> Result<Option<JournalEntry>> {
        self.read(|txn| match txn.open_table(JOURNAL)?.get(play_id)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        })
    }

    /// Activity rows, newest first, filtered; returns (rows of the page, total matching).
    pub fn activity(
        &self,
        status: Option<&str>,
        source: Option<&str>,
        page: usize,
        per_page: usize,
    ) -> Result<(Vec<Activity>, usize)> {
        let per_page = per_page.clamp(1, 500);
        let skip = page.saturating_sub(1) * per_page;
        self.read(|txn| {
            let t = txn.open_table(ACTIVITY)?;
            let mut total = 0;
            let mut items = Vec::new();
            for row in t.iter()?.rev() {
                let a: Activity = decode(row?.1.value())?;
                if status.is_some_and(|s| s != a.status.as_str())
                    || source.is_some_and(|s| s != a.source)
                {
                    continue;
                }
                if total >= skip && items.len() < per_page {
                    items.push(a);
                }
                total += 1;
            }
            Ok((items, total))
        })
    }

    pub fn counts(&self) -> Result<Counts> {
        self.read(|txn| {
            let outbox = txn.open_table(OUTBOX)?;
            let batches = txn.open_table(BATCHES)?;
            let mut oldest: Option<i64> = None;
            for row in outbox.iter()? {
                let it: OutboxItem = decode(row?.1.value())?;
                oldest = Some(oldest.map_or(it.queued_at, |o: i64| o.min(it.queued_at)));
            }
            let mut batch_items = 0u64;
            for row in batches.iter()? {
                let b: Batch = decode(row?.1.value())?;
                batch_items += b.items.len() as u64;
                for it in &b.items {
                    oldest = Some(oldest.map_or(it.queued_at, |o: i64| o.min(it.queued_at)));
                }
            }
            Ok(Counts {
                journal: txn.open_table(JOURNAL)?.len()?,
                pending_resolution: txn.open_table(PENDING)?.len()?,
                outbox_items: outbox.len()? + batch_items,
                batches: batches.len()?,
                dead_letters: txn.open_table(DEAD)?.len()?,
                conflicts: txn.open_table(CONFLICTS)?.len()?,
                mappings: txn.open_table(MAPPINGS)?.len()?,
                watched: txn.open_table(WATCHED)?.len()?,
                oldest_pending_secs: oldest.map(|o| (now_secs() - o).max(0)),
                webhook_loss: match txn.open_table(META)?.get("counter.webhook_loss")? {
                    Some(v) => decode(v.value())?,
                    None => 0,
                },
            })
        })
    }

    pub async fn save_catalogue(&self, shows: Vec<CatalogShow>) -> Result<()> {
        self.write(move |txn| {
            let bytes = encode(&shows)?;
            txn.open_table(CATALOGUE)?
                .insert("shows", bytes.as_slice())?;
            txn.open_table(CATALOGUE)?
                .insert("fetched_at", encode(&now_secs())?.as_slice())?;
            Ok(())
        })
        .await
    }

    pub fn load_catalogue(&self) -> Result<Option<Vec<CatalogShow>>> {
        self.read(|txn| get_json(&txn.open_table(CATALOGUE)?, "shows"))
    }

    /// Cached show info from Plex (its guids), keyed by [`PlexShow::key`].
    pub fn show_info<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.read(|txn| get_json(&txn.open_table(SHOW_INFO)?, key))
    }

    pub async fn put_show_info<T: Serialize + Send + 'static>(
        &self,
        key: String,
        v: T,
    ) -> Result<()> {
        self.write(move |txn| {
            txn.open_table(SHOW_INFO)?
                .insert(key.as_str(), encode(&v)?.as_slice())?;
            Ok(())
        })
        .await
    }

    pub fn sealed_secret(&self, name: &str) -> Result<Option<SealedSecret>> {
        self.read(|txn| get_json(&txn.open_table(SECRETS)?, name))
    }

    pub fn secret_names(&self) -> Result<Vec<String>> {
        self.read(|txn| {
            let t = txn.open_table(SECRETS)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                out.push(row?.0.value().to_string());
            }
            Ok(out)
        })
    }

    pub async fn put_secret(&self, name: String, sealed: SealedSecret) -> Result<()> {
        self.write(move |txn| put_secret_in(txn, &name, &sealed))
            .await
    }

    pub fn put_secret_blocking(&self, name: String, sealed: SealedSecret) -> Result<()> {
        self.write_blocking(move |txn| put_secret_in(txn, &name, &sealed))
    }

    /// Replace every given secret in one transaction (a rekey): all or nothing.
    pub async fn replace_secrets(&self, sealed: Vec<(String, SealedSecret)>) -> Result<()> {
        self.write(move |txn| {
            for (name, s) in &sealed {
                put_secret_in(txn, name, s)?;
            }
            Ok(())
        })
        .await
    }

    /// Store `sealed` under `name` unless a value exists; returns the value that is stored.
    pub fn put_secret_if_absent_blocking(
        &self,
        name: String,
        sealed: SealedSecret,
    ) -> Result<SealedSecret> {
        self.write_blocking(move |txn| {
            let mut t = txn.open_table(SECRETS)?;
            if let Some(existing) = get_json::<SealedSecret>(&t, &name)? {
                return Ok(existing);
            }
            t.insert(name.as_str(), encode(&sealed)?.as_slice())?;
            Ok(sealed)
        })
    }

    /// Plugin cache read (expired entries read as absent).
    pub fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let entry: Option<KvEntry> = self.read(|txn| get_json(&txn.open_table(KV)?, key))?;
        Ok(entry.and_then(|e| match e.expires_at_ms {
            Some(t) if t <= now_millis() => None,
            _ => Some(e.value),
        }))
    }

    pub fn kv_put_detached(&self, key: String, value: Vec<u8>, expires_at_ms: Option<i64>) {
        self.write_detached(move |txn| {
            txn.open_table(KV)?.insert(
                key.as_str(),
                encode(&KvEntry {
                    value,
                    expires_at_ms,
                })?
                .as_slice(),
            )?;
            Ok(())
        });
    }
}

#[derive(Serialize, Deserialize)]
struct KvEntry {
    value: Vec<u8>,
    expires_at_ms: Option<i64>,
}

/// `YYYY-MM-DD` of a day number since the epoch (civil-from-days).
fn day_string(day: i64) -> String {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn put_secret_in(txn: &WriteTransaction, name: &str, sealed: &SealedSecret) -> Result<()> {
    txn.open_table(SECRETS)?
        .insert(name, encode(sealed)?.as_slice())?;
    Ok(())
}

fn all_json<T: serde::de::DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for row in t.iter()? {
        out.push(decode(row?.1.value())?);
    }
    Ok(out)
}

fn ingest_in(
    txn: &WriteTransaction,
    mut play: Play,
    activity: Option<Activity>,
    window: i64,
) -> Result<Ingested> {
    let mut hkeys = txn.open_table(HISTORY_KEYS)?;
    if let Some(hk) = &play.history_key {
        if let Some(id) = hkeys.get(hk.as_str())? {
            return Ok(Ingested::AlreadySeen(id.value()));
        }
    }
    let key = play.dedupe_key();
    let mut dedupe = txn.open_table(DEDUPE)?;
    let prev: Option<DedupeEntry> = get_json(&dedupe, &key)?;
    if let Some(mut prev) = prev {
        if (play.viewed_at - prev.viewed_at).abs() <= window {
            let new_source = !prev.sources.contains(&play.source);
            if new_source {
                prev.sources.push(play.source);
                dedupe.insert(key.as_str(), encode(&prev)?.as_slice())?;
            }
            if let Some(hk) = &play.history_key {
                hkeys.insert(hk.as_str(), prev.play_id)?;
            }
            drop((dedupe, hkeys));
            if let Some(mut a) = activity {
                a.status = ActivityStatus::Duplicate;
                let seen: Vec<String> = prev.sources.iter().map(|s| s.to_string()).collect();
                a.action = format!(
                    "same viewing as play #{} (seen by {})",
                    prev.play_id,
                    seen.join(", ")
                );
                a.play_id = Some(prev.play_id);
                put_activity(txn, a)?;
            }
            return Ok(Ingested::Duplicate(prev.play_id));
        }
    }
    let id = next_seq(txn, "journal")?;
    play.id = id;
    if let Some(hk) = &play.history_key {
        hkeys.insert(hk.as_str(), id)?;
    }
    dedupe.insert(
        key.as_str(),
        encode(&DedupeEntry {
            viewed_at: play.viewed_at,
            play_id: id,
            sources: vec![play.source],
        })?
        .as_slice(),
    )?;
    drop((dedupe, hkeys));
    if play.source != PlaySource::Webhook {
        // Found by polling and not (yet) by any webhook: the webhook-loss signal.
        bump_counter(txn, "webhook_loss", 1)?;
    }
    let source = play.source;
    let entry = JournalEntry {
        play,
        state: PlayState::Pending,
    };
    txn.open_table(JOURNAL)?
        .insert(id, encode(&entry)?.as_slice())?;
    txn.open_table(PENDING)?.insert(id, 0i64)?;
    if let Some(mut a) = activity {
        a.play_id = Some(id);
        if a.action.is_empty() {
            a.action = format!("journaled as play #{id} ({source})");
        }
        put_activity(txn, a)?;
    }
    Ok(Ingested::New(id))
}

fn bump_counter(txn: &WriteTransaction, name: &str, by: u64) -> Result<u64> {
    let mut meta = txn.open_table(META)?;
    let key = format!("counter.{name}");
    let cur = match meta.get(key.as_str())? {
        Some(v) => decode::<u64>(v.value())?,
        None => 0,
    };
    let next = cur + by;
    meta.insert(key.as_str(), encode(&next)?.as_slice())?;
    Ok(next)
}

fn apply_in(txn: &WriteTransaction, play_id: u64, r: Resolution) -> Result<Applied> {
    let mut journal = txn.open_table(JOURNAL)?;
    let mut entry: JournalEntry = match journal.get(play_id)? {
        Some(v) => decode(v.value())?,
        None => {
            return Err(StoreError::NotFound(format!(
                "play #{play_id} is not in the journal"
            )));
        }
    };
    if entry.state != PlayState::Pending {
        return Ok(Applied::Stale);
    }
    let mut pending = txn.open_table(PENDING)?;
    let applied = match r {
        Resolution::Retry { not_before_ms } => {
            pending.insert(play_id, not_before_ms)?;
            return Ok(Applied::Deferred);
        }
        Resolution::Ignored => {
            entry.state = PlayState::Ignored;
            Applied::Ignored
        }
        Resolution::Conflict(mut c) => {
            let mut conflicts = txn.open_table(CONFLICTS)?;
            if let Some(existing) = get_json::<Conflict>(&conflicts, &c.key)? {
                let mut held = existing.held;
                held.push(play_id);
                c.held = held;
                c.created_at = existing.created_at;
            } else {
                c.held = vec![play_id];
            }
            conflicts.insert(c.key.as_str(), encode(&c)?.as_slice())?;
            entry.state = PlayState::Parked { conflict: c.key };
            Applied::Parked
        }
        Resolution::Mapped { show_id, mapping } => {
            let mut mappings = txn.open_table(MAPPINGS)?;
            let key = entry.play.show.key();
            let current: Option<Mapping> = get_json(&mappings, &key)?;
            let sync = match (&current, &mapping) {
                (Some(m), _) => m.sync_enabled,
                (None, Some(m)) => {
                    mappings.insert(key.as_str(), encode(m)?.as_slice())?;
                    m.sync_enabled
                }
                (None, None) => true,
            };
            drop(mappings);
            let a = record_watched(txn, &entry.play, &show_id, sync)?;
            entry.state = PlayState::Resolved { show_id };
            a
        }
    };
    pending.remove(play_id)?;
    journal.insert(play_id, encode(&entry)?.as_slice())?;
    Ok(applied)
}

/// Count the play against the tracker episode and queue an export when the episode was not
/// known watched before.
fn record_watched(
    txn: &WriteTransaction,
    play: &Play,
    show_id: &str,
    sync: bool,
) -> Result<Applied> {
    let mut watched = txn.open_table(WATCHED)?;
    let k = watched_key(show_id, play.season, play.episode);
    match get_json::<Watched>(&watched, &k)? {
        Some(mut w) => {
            w.plays += 1;
            w.first_watched_at = w.first_watched_at.min(play.viewed_at);
            watched.insert(k.as_str(), encode(&w)?.as_slice())?;
            Ok(Applied::AlreadyWatched)
        }
        None => {
            watched.insert(
                k.as_str(),
                encode(&Watched {
                    first_watched_at: play.viewed_at,
                    plays: 1,
                    exported_at: None,
                })?
                .as_slice(),
            )?;
            drop(watched);
            if !sync {
                return Ok(Applied::AlreadyWatched);
            }
            let id = next_seq(txn, "outbox")?;
            let item = OutboxItem {
                play_id: play.id,
                show_id: show_id.to_string(),
                season: play.season,
                episode: play.episode,
                watched_at: play.viewed_at,
                queued_at: now_secs(),
            };
            txn.open_table(OUTBOX)?
                .insert(id, encode(&item)?.as_slice())?;
            Ok(Applied::Queued)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PlexShow;
    use plexsync_plugin_api::PlaySource;

    fn play(viewed_at: i64) -> Play {
        Play {
            id: 0,
            source: PlaySource::Webhook,
            account_id: "1".into(),
            account_key: String::new(),
            account_name: None,
            show: PlexShow {
                server: Some("srv".into()),
                rating_key: Some("10".into()),
                title: "Show".into(),
                year: Some(2001),
                guid: None,
                episode_guid: None,
            },
            season: 1,
            episode: 2,
            episode_rating_key: None,
            viewed_at,
            received_at: viewed_at,
            history_key: None,
        }
    }

    fn act() -> Activity {
        Activity {
            id: 0,
            at: 0,
            source: "webhook".into(),
            event: None,
            account: None,
            show: None,
            season: None,
            episode: None,
            status: ActivityStatus::Success,
            action: String::new(),
            error: None,
            duration_ms: 0.0,
            play_id: None,
            client: None,
        }
    }

    #[test]
    fn days_format() {
        assert_eq!(day_string(0), "1970-01-01");
        assert_eq!(day_string(19_723), "2024-01-01");
        assert_eq!(day_string(19_782), "2024-02-29");
    }

    #[tokio::test]
    async fn resolving_a_conflict_releases_its_plays_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let mut p2 = play(5000);
        p2.episode = 3;
        s.ingest_play(play(1000), act(), 300).await.unwrap();
        s.ingest_play(p2, act(), 300).await.unwrap();
        let c = |held| Conflict {
            key: "srv/10".into(),
            plex: play(0).show,
            query: Default::default(),
            candidates: vec![],
            held,
            created_at: 0,
            updated_at: 0,
            reason: "test".into(),
        };
        assert_eq!(
            s.apply_resolution(1, Resolution::Conflict(c(vec![])))
                .await
                .unwrap(),
            Applied::Parked
        );
        assert_eq!(
            s.apply_resolution(2, Resolution::Conflict(c(vec![])))
                .await
                .unwrap(),
            Applied::Parked
        );
        assert_eq!(s.conflict("srv/10").unwrap().unwrap().held, vec![1, 2]);
        let (released, queued) = s
            .resolve_conflict(
                "srv/10".into(),
                ConflictDecision::Select {
                    show_id: "42".into(),
                    method: "manual".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!((released, queued), (2, 2));
        assert!(s.conflict("srv/10").unwrap().is_none());
        let m = s.mapping("srv/10").unwrap().unwrap();
        assert!(m.manual && m.show_id == "42");
        assert!(
            s.resolve_conflict("srv/10".into(), ConflictDecision::Ignore)
                .await
                .is_err()
        );
        assert_eq!(s.form_batches(100).await.unwrap(), 1);
        let m = s
            .update_mapping("srv/10".into(), None, Some(false))
            .await
            .unwrap();
        assert!(!m.sync_enabled);
    }

    #[tokio::test]
    async fn dedupe_window_and_rewatch() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let a = s.ingest_play(play(1000), act(), 300).await.unwrap();
        assert_eq!(a, Ingested::New(1));
        let b = s.ingest_play(play(1200), act(), 300).await.unwrap();
        assert_eq!(b, Ingested::Duplicate(1));
        let c = s
            .ingest_play(play(1000 + 86400 * 3), act(), 300)
            .await
            .unwrap();
        assert_eq!(c, Ingested::New(2));
        let (rows, total) = s.activity(None, None, 1, 50).unwrap();
        assert_eq!(total, 3);
        assert_eq!(rows[0].play_id, Some(2));
        assert_eq!(rows[1].status, ActivityStatus::Duplicate);
        assert_eq!(s.due_pending(i64::MAX, 10).unwrap().len(), 2);

        // First resolution queues an export; the re-watch only counts.
        let m = Resolution::Mapped {
            show_id: "42".into(),
            mapping: None,
        };
        assert_eq!(
            s.apply_resolution(1, m.clone()).await.unwrap(),
            Applied::Queued
        );
        assert_eq!(
            s.apply_resolution(2, m.clone()).await.unwrap(),
            Applied::AlreadyWatched
        );
        assert_eq!(s.apply_resolution(2, m).await.unwrap(), Applied::Stale);
        assert_eq!(s.watched("42", 1, 2).unwrap().unwrap().plays, 2);
        assert_eq!(s.form_batches(100).await.unwrap(), 1);
        let due = s.due_batches(i64::MAX, 10).unwrap();
        assert_eq!(due.len(), 1);
        let key = due[0].idempotency_key.clone();
        s.finish_batch(
            due[0].id,
            BatchOutcome::Transient {
                error: "503".into(),
                retry_at_ms: 0,
            },
            3,
            1.0,
        )
        .await
        .unwrap();
        let again = s.due_batches(i64::MAX, 10).unwrap();
        assert_eq!(again[0].idempotency_key, key, "retries reuse the key");
        assert_eq!(again[0].attempts, 1);
        s.finish_batch(
            again[0].id,
            BatchOutcome::Permanent {
                error: "422".into(),
            },
            3,
            1.0,
        )
        .await
        .unwrap();
        assert_eq!(s.dead_letters().unwrap().len(), 1);
        assert_eq!(s.retry_dead().await.unwrap(), 1);
        let back = s.due_batches(i64::MAX, 10).unwrap();
        assert_eq!(back.len(), 1);
        s.finish_batch(
            back[0].id,
            BatchOutcome::Delivered {
                marked: 1,
                already: 0,
            },
            3,
            1.0,
        )
        .await
        .unwrap();
        assert!(
            s.watched("42", 1, 2)
                .unwrap()
                .unwrap()
                .exported_at
                .is_some()
        );
        let c = s.counts().unwrap();
        assert_eq!((c.outbox_items, c.batches, c.dead_letters), (0, 0, 0));
    }
}
