//! The webhook intake: a webhook play is acknowledged once it is durable in the
//! [acknowledgement log](super::acklog), and journaled into redb right after, by the same
//! `ingest` step as every other source.
//!
//! Two threads. `plexsync-intake` takes every play queued since its last round, appends them
//! with ONE `fdatasync`, answers their callers and hands them on. `plexsync-apply` journals
//! what it was handed as one store job (so in one group commit) that also records the last
//! record journaled (`meta["acklog.applied"]`); then each play's outcome (new, or the same
//! viewing as play #n) goes to whoever waits for it. The acknowledgement no longer waits for
//! the journal's transaction, so a burst is answered at the speed of a sequential append.
//!
//! Bounds and failure: at most [`MAX_BACKLOG`] plays are acknowledged and not yet journaled
//! (then new plays wait); while journaling fails for a storage reason (a full disk), new plays
//! are refused (503) and the backlog is retried with a growing pause; a play whose own stored
//! rows are corrupt is left out with an error in the log, so it cannot hold up the rest. A
//! daemon stopped or killed with a backlog journals it from the log at its next open
//! ([`replay`]), exactly once, because `acklog.applied` moves in the same transactions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use super::acklog::{self, LogFile, Read};
use super::ingest::{Ingested, Tables, ingest_in};
use super::{Completion, Job, META, Result, StoreError, decode, encode};
use crate::model::{Activity, Play};

/// Plays acknowledged and not yet journaled, at most; beyond it, acknowledging waits for the
/// journal. About 1 KB of memory each.
pub(super) const MAX_BACKLOG: u64 = 16_384;
/// Plays journaled in one store job, at most (a backlog is journaled in several).
const MAX_APPLY: usize = 4096;
/// Past this size the log waits for the journal to catch up and is then rewound, so it never
/// grows without bound under a load that never lets up.
const MAX_LOG: u64 = 64 << 20;
/// The `meta` key of the last record journaled.
pub(super) const APPLIED: &str = "acklog.applied";

/// A play acknowledged by [`super::Store::accept_play`].
pub struct Accepted {
    /// Its number in the acknowledgement log.
    pub seq: u64,
    /// What journaling it found: a new play or the same viewing as an earlier one.
    pub outcome: oneshot::Receiver<Result<Ingested>>,
}

/// A record's payload.
#[derive(Serialize)]
struct EntryRef<'a> {
    play: &'a Play,
    activity: &'a Activity,
    window: i64,
}

#[derive(Deserialize)]
struct Entry {
    play: Play,
    activity: Activity,
    window: i64,
}

/// An acknowledged play on its way into the journal.
pub(super) struct Item {
    seq: u64,
    play: Play,
    activity: Activity,
    window: i64,
    outcome: Option<oneshot::Sender<Result<Ingested>>>,
}

struct Waiting {
    payload: Vec<u8>,
    item: Item,
    answer: oneshot::Sender<Result<u64>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    stop: bool,
}

/// What the store handle, the intake thread and the apply thread share.
pub(super) struct Intake {
    queue: Mutex<Queue>,
    /// Wakes the intake thread: plays queued, backlog room, or stop.
    cv: Condvar,
    /// The last record acknowledged.
    accepted: AtomicU64,
    /// The last record journaled by a durable commit.
    applied: watch::Sender<u64>,
    /// Why journaling fails, while it does.
    failing: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Intake {
    /// Start the two threads on an open log whose records up to `applied` are journaled.
    pub(super) fn start(
        log: LogFile,
        applied: u64,
        jobs: mpsc::Sender<Job>,
    ) -> std::io::Result<(Arc<Intake>, Vec<JoinHandle<()>>)> {
        let intake = Arc::new(Intake {
            queue: Mutex::default(),
            cv: Condvar::new(),
            accepted: AtomicU64::new(applied),
            applied: watch::Sender::new(applied),
            failing: Mutex::default(),
        });
        let (to_apply, handed) = mpsc::channel::<Vec<Item>>();
        let i = intake.clone();
        let applier = std::thread::Builder::new()
            .name("plexsync-apply".into())
            .spawn(move || apply_loop(&i, &handed, &jobs))?;
        let i = intake.clone();
        let acceptor = std::thread::Builder::new()
            .name("plexsync-intake".into())
            .spawn(move || accept_loop(&i, log, &to_apply));
        match acceptor {
            Ok(a) => Ok((intake, vec![a, applier])),
            Err(e) => {
                // The apply thread ends once its channel is gone.
                let _ = applier.join();
                Err(e)
            }
        }
    }

    /// Queue a play for the next append; resolves with its record number once it is durable.
    pub(super) async fn accept(
        &self,
        play: Play,
        activity: Activity,
        window: i64,
    ) -> Result<Accepted> {
        let payload = encode(&EntryRef {
            play: &play,
            activity: &activity,
            window,
        })?;
        let (outcome_tx, outcome) = oneshot::channel();
        let (answer, rx) = oneshot::channel();
        {
            let mut q = lock(&self.queue);
            if q.stop {
                return Err(StoreError::Closed);
            }
            q.waiting.push(Waiting {
                payload,
                item: Item {
                    seq: 0,
                    play,
                    activity,
                    window,
                    outcome: Some(outcome_tx),
                },
                answer,
            });
        }
        self.cv.notify_one();
        let seq = rx.await.map_err(|_| StoreError::Closed)??;
        Ok(Accepted { seq, outcome })
    }

    /// Wait until every play acknowledged before the call is journaled, or `limit` passes;
    /// false when it passed.
    pub(super) async fn caught_up(&self, limit: Duration) -> bool {
        let target = self.accepted.load(Ordering::Acquire);
        let mut rx = self.applied.subscribe();
        if *rx.borrow() >= target {
            return true;
        }
        matches!(
            tokio::time::timeout(limit, rx.wait_for(|a| *a >= target)).await,
            Ok(Ok(_))
        )
    }

    /// Answer what is queued, journal what is acknowledged, and end both threads (the store
    /// joins them).
    pub(super) fn stop(&self) {
        lock(&self.queue).stop = true;
        self.cv.notify_all();
    }

    fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    fn stopping(&self) -> bool {
        lock(&self.queue).stop
    }

    /// Record that everything up to `seq` is journaled and wake the intake thread (it may be
    /// waiting for backlog room).
    fn publish_applied(&self, seq: u64) {
        self.applied.send_if_modified(|a| {
            let moved = seq > *a;
            *a = (*a).max(seq);
            moved
        });
        let _q = lock(&self.queue);
        self.cv.notify_all();
    }
}

fn accept_loop(intake: &Intake, mut log: LogFile, to_apply: &mpsc::Sender<Vec<Item>>) {
    loop {
        let batch = {
            let mut q = lock(&intake.queue);
            loop {
                if q.stop && q.waiting.is_empty() {
                    return;
                }
                let accepted = intake.accepted.load(Ordering::Acquire);
                let behind = accepted.saturating_sub(intake.applied());
                let room = behind < MAX_BACKLOG && (log.len() < MAX_LOG || behind == 0);
                if !q.waiting.is_empty() && (room || q.stop) {
                    break;
                }
                q = intake.cv.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
            std::mem::take(&mut q.waiting)
        };
        let refuse = |batch: Vec<Waiting>, e: StoreError| {
            for w in batch {
                let _ = w.answer.send(Err(e.clone()));
            }
        };
        if let Some(why) = lock(&intake.failing).clone() {
            refuse(
                batch,
                StoreError::Storage(format!("plays cannot be journaled right now: {why}")),
            );
            continue;
        }
        let accepted = intake.accepted.load(Ordering::Acquire);
        if log.len() >= acklog::REWIND_AT && intake.applied() >= accepted {
            log.rewind();
        }
        match log.append(batch.iter().map(|w| w.payload.as_slice())) {
            Ok(first) => {
                let mut items = Vec::with_capacity(batch.len());
                let mut answers = Vec::with_capacity(batch.len());
                for (seq, mut w) in (first..).zip(batch) {
                    w.item.seq = seq;
                    items.push(w.item);
                    answers.push((w.answer, seq));
                }
                let last = first + answers.len() as u64 - 1;
                intake.accepted.store(last, Ordering::Release);
                // Gone only while the store closes: the plays are in the log, and the next
                // open journals them.
                let _ = to_apply.send(items);
                for (answer, seq) in answers {
                    let _ = answer.send(Ok(seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, plays = batch.len(), "cannot write the acknowledgement log");
                refuse(
                    batch,
                    StoreError::Storage(format!("cannot write the acknowledgement log: {e}")),
                );
            }
        }
    }
}

fn apply_loop(intake: &Intake, handed: &mpsc::Receiver<Vec<Item>>, jobs: &mpsc::Sender<Job>) {
    let mut carry: Vec<Item> = Vec::new();
    loop {
        if carry.is_empty() {
            match handed.recv() {
                Ok(items) => carry = items,
                Err(_) => return,
            }
        }
        while carry.len() < MAX_APPLY {
            match handed.try_recv() {
                Ok(more) => carry.extend(more),
                Err(_) => break,
            }
        }
        let rest = if carry.len() > MAX_APPLY {
            carry.split_off(MAX_APPLY)
        } else {
            Vec::new()
        };
        let batch = std::mem::replace(&mut carry, rest);
        if !apply_batch(intake, batch, jobs) {
            // The store is closing and journaling keeps failing: what is left stays in the
            // log for the next open.
            let left = carry.len() + handed.try_iter().map(|v| v.len()).sum::<usize>();
            tracing::warn!(
                plays = left,
                "acknowledged plays stay in the acknowledgement log; they are journaled at the next start"
            );
            return;
        }
    }
}

/// What one journaling job gives back to the apply thread.
struct Applied {
    committed: Result<()>,
    outcomes: Vec<Result<Ingested>>,
    items: Vec<Item>,
}

/// Journal `batch` (retrying while the store fails); false when it gave up because the store
/// is closing.
fn apply_batch(intake: &Intake, mut batch: Vec<Item>, jobs: &mpsc::Sender<Job>) -> bool {
    let Some(last) = batch.last().map(|i| i.seq) else {
        return true;
    };
    let mut pause = Duration::from_millis(10);
    let mut tries_while_stopping = 0;
    let mut failures = 0u32;
    loop {
        let (tx, rx) = mpsc::sync_channel::<Applied>(1);
        let job = journal_job(batch, last, tx);
        if jobs.send(job).is_err() {
            return false;
        }
        let Ok(done) = rx.recv() else {
            return false;
        };
        batch = done.items;
        if done.committed.is_ok() {
            *lock(&intake.failing) = None;
            // First, so whoever hears an outcome finds the store caught up to it.
            intake.publish_applied(last);
            for (item, out) in batch.iter_mut().zip(done.outcomes) {
                if let Some(tx) = item.outcome.take() {
                    let _ = tx.send(out);
                }
            }
            return true;
        }
        // A play whose own stored rows are corrupt fails every time: leave it out, say so.
        let bad = done
            .outcomes
            .iter()
            .position(|o| matches!(o, Err(StoreError::Corrupt(_))));
        if let Some(i) = bad {
            let mut item = batch.remove(i);
            let err = done.outcomes.into_iter().nth(i).and_then(Result::err);
            let why = err.map(|e| e.to_string()).unwrap_or_default();
            tracing::error!(seq = item.seq, show = %item.play.show.title, season = item.play.season, episode = item.play.episode, error = %why, "an acknowledged webhook play cannot be journaled: its stored rows are corrupt");
            if let Some(tx) = item.outcome.take() {
                let _ = tx.send(Err(StoreError::Corrupt(why)));
            }
            continue;
        }
        let why = match &done.committed {
            Err(e) => e.to_string(),
            Ok(()) => String::new(),
        };
        failures += 1;
        if failures == 1 {
            // Another job of the same group may have failed it: once more at once before
            // anything is refused.
            continue;
        }
        if lock(&intake.failing).is_none() {
            tracing::error!(error = %why, plays = batch.len(), "cannot journal acknowledged webhook plays; retrying, and refusing new ones meanwhile");
        }
        *lock(&intake.failing) = Some(why);
        if intake.stopping() {
            tries_while_stopping += 1;
            if tries_while_stopping > 3 {
                return false;
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// The store job that journals `batch` and records `last` as journaled, in one transaction.
fn journal_job(batch: Vec<Item>, last: u64, tx: mpsc::SyncSender<Applied>) -> Job {
    Box::new(move |txn: Option<&WriteTransaction>, poisoned: &mut bool| {
        let (outcomes, prepared) = match txn {
            Some(txn) => journal_in(txn, &batch, last),
            None => (
                Vec::new(),
                Err(StoreError::Storage("no write transaction".into())),
            ),
        };
        if prepared.is_err() {
            *poisoned = true;
        }
        let c: Completion = Box::new(move |committed: Result<()>| {
            let _ = tx.send(Applied {
                committed: prepared.and(committed),
                outcomes,
                items: batch,
            });
        });
        c
    })
}

/// Journal the items on tables opened once and move the applied mark to `last`. The second
/// value is Err when the transaction must not commit.
fn journal_in(
    txn: &WriteTransaction,
    batch: &[Item],
    last: u64,
) -> (Vec<Result<Ingested>>, Result<()>) {
    let mut tables = match Tables::open(txn) {
        Ok(t) => t,
        Err(e) => return (Vec::new(), Err(e)),
    };
    let mut failed = None;
    let mut outcomes = Vec::with_capacity(batch.len());
    for it in batch {
        let out = ingest_in(
            &mut tables,
            it.play.clone(),
            Some(it.activity.clone()),
            it.window,
        );
        if let Err(e) = &out {
            if e.is_storage() && failed.is_none() {
                failed = Some(e.clone());
            }
        }
        outcomes.push(out);
    }
    let finished = tables.finish();
    let marked = txn
        .open_table(META)
        .map_err(StoreError::from)
        .and_then(|mut m| {
            m.insert(APPLIED, encode(&last)?.as_slice())?;
            Ok(())
        });
    let result = match failed {
        Some(e) => Err(e),
        None => finished.and(marked),
    };
    (outcomes, result)
}

/// At open: journal the log's records the store has not (a daemon stopped or killed with a
/// backlog), exactly once, in one durable transaction; returns the last record journaled.
pub(super) fn replay(db: &Database, records: Vec<Read>) -> Result<u64> {
    let applied = {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        match redb::ReadableTable::get(&meta, APPLIED)? {
            Some(v) => decode::<u64>(v.value())?,
            None => 0,
        }
    };
    let todo: Vec<Read> = records.into_iter().filter(|r| r.seq > applied).collect();
    let Some(last) = todo.last().map(|r| r.seq) else {
        return Ok(applied);
    };
    let mut items = Vec::with_capacity(todo.len());
    for r in todo {
        match serde_json::from_slice::<Entry>(&r.payload) {
            Ok(e) => items.push(Item {
                seq: r.seq,
                play: e.play,
                activity: e.activity,
                window: e.window,
                outcome: None,
            }),
            Err(e) => {
                tracing::error!(seq = r.seq, error = %e, "an acknowledgement log record cannot be read; left out");
            }
        }
    }
    // All at once; should a play's stored rows be corrupt, one transaction per play, leaving
    // out those that fail.
    let all_at_once = replay_txn(db, &items, last);
    let journaled = match all_at_once {
        Ok(n) => n,
        Err(e) if e.is_storage() && !matches!(e, StoreError::Corrupt(_)) => return Err(e),
        Err(_) => {
            let mut n = 0;
            for it in &items {
                match replay_txn(db, std::slice::from_ref(it), it.seq) {
                    Ok(k) => n += k,
                    Err(StoreError::Corrupt(why)) => {
                        tracing::error!(seq = it.seq, show = %it.play.show.title, error = %why, "an acknowledged webhook play cannot be journaled: its stored rows are corrupt");
                    }
                    Err(e) => return Err(e),
                }
            }
            replay_txn(db, &[], last)?;
            n
        }
    };
    tracing::info!(
        plays = journaled,
        last_record = last,
        "journaled acknowledged webhook plays left in the acknowledgement log"
    );
    Ok(last)
}

/// Whether the acknowledgement log beside the store at `path` holds records the store has not
/// journaled (what a killed daemon leaves behind).
pub(super) fn unjournaled(db: &impl ReadableDatabase, path: &std::path::Path) -> Result<bool> {
    let last = acklog::last_seq(&acklog::path_for(path))
        .map_err(|e| StoreError::Storage(format!("acknowledgement log: {e}")))?;
    let Some(last) = last else {
        return Ok(false);
    };
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let applied = match redb::ReadableTable::get(&meta, APPLIED)? {
        Some(v) => decode::<u64>(v.value())?,
        None => 0,
    };
    Ok(last > applied)
}

fn replay_txn(db: &Database, items: &[Item], last: u64) -> Result<usize> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Storage(e.to_string()))?;
    let (outcomes, result) = journal_in(&txn, items, last);
    if let Some(Err(e)) = outcomes.iter().find(|o| o.is_err()) {
        let e = e.clone();
        txn.abort()?;
        return Err(e);
    }
    if let Err(e) = result {
        txn.abort()?;
        return Err(e);
    }
    txn.commit()?;
    Ok(outcomes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::ops::fixtures::{act, play};

    fn record(episode: u32) -> Vec<u8> {
        let mut p = play(1000);
        p.episode = episode;
        encode(&EntryRef {
            play: &p,
            activity: &act(),
            window: 300,
        })
        .unwrap()
    }

    /// Plays acknowledged and not journaled when the daemon died are journaled at the next
    /// open, exactly once however often the store is opened after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_plays_left_in_the_log_are_journaled_once_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let s = Store::open(&path).unwrap();
        for e in 1..=3 {
            let mut p = play(1000);
            p.episode = e;
            s.ingest_play(p, act(), 300).await.unwrap();
        }
        drop(s);
        // What a kill between the log's fdatasync and the journal's commit leaves: two more
        // records acknowledged, journaled nowhere.
        let (mut log, before) = LogFile::open(&acklog::path_for(&path)).unwrap();
        assert_eq!(before.len(), 3);
        let extra = [record(4), record(5)];
        assert_eq!(log.append(extra.iter().map(Vec::as_slice)).unwrap(), 4);
        drop(log);
        // A reader with no daemon holding the store sees them too (it has them journaled).
        let ro = Store::open_read_only(&path).unwrap();
        assert_eq!(ro.counts().unwrap().journal, 5);
        drop(ro);
        for _ in 0..2 {
            let s = Store::open(&path).unwrap();
            assert_eq!(s.counts().unwrap().journal, 5);
            let (_, rows) = s.activity(&Default::default(), 1, 1).unwrap();
            assert_eq!(rows, 5);
            drop(s);
        }
        // Numbering goes on after what was journaled.
        let s = Store::open(&path).unwrap();
        let mut p = play(1000);
        p.episode = 6;
        let a = s.accept_play(p, act(), 300).await.unwrap();
        assert_eq!(a.seq, 6);
        assert_eq!(a.outcome.await.unwrap().unwrap(), Ingested::New(6));
    }

    /// The log is rewound once everything in it is journaled and it has grown past the mark,
    /// and what it leaves behind is not journaled again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_is_rewound_when_caught_up_and_stale_records_stay_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let s = Store::open(&path).unwrap();
        let mut n = 0u32;
        while std::fs::metadata(acklog::path_for(&path)).unwrap().len() < acklog::REWIND_AT {
            n += 1;
            let mut p = play(1000);
            p.episode = n;
            s.ingest_play(p, act(), 300).await.unwrap();
        }
        let size = std::fs::metadata(acklog::path_for(&path)).unwrap().len();
        n += 1;
        let mut p = play(1000);
        p.episode = n;
        s.ingest_play(p, act(), 300).await.unwrap();
        assert_eq!(
            std::fs::metadata(acklog::path_for(&path)).unwrap().len(),
            size,
            "the last play went to the start of the file"
        );
        drop(s);
        let (_, chain) = LogFile::open(&acklog::path_for(&path)).unwrap();
        assert_eq!(chain.len(), 1, "only the record written after the rewind");
        let s = Store::open(&path).unwrap();
        assert_eq!(s.counts().unwrap().journal, u64::from(n));
    }
}
