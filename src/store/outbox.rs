//! The outbox: waiting export items formed into fixed `batches` (each with the idempotency key
//! every attempt reuses), due batches, finishing an attempt (delivered → `watched` marked
//! exported; transient → rescheduled; permanent or out of attempts → `dead_letter`), and the
//! dead letters and their manual retry (with a new key).

use std::collections::BTreeMap;

use redb::ReadableTable;

use super::ops::{get_json, put_activity, watched_key};
use super::*;
use crate::model::{Activity, ActivityStatus, Batch, OutboxItem, Watched, now_millis, now_secs};

/// How a finished export attempt went.
#[derive(Debug, Clone)]
pub enum BatchOutcome {
    Delivered { marked: u64, already: u64 },
    Transient { error: String, retry_at_ms: i64 },
    Permanent { error: String },
}

impl Store {
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
}
