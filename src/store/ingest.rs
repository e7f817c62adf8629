//! Ingest: journal a play, or recognise it as the same viewing (`dedupe`, across sources) or
//! as a history row read before (`history_keys`), and advance poll cursors (`cursors`) in the
//! same transaction as the page they cover. Owns the `journal` and `pending` inserts of a new
//! play and the `webhook_loss` counter.

use plexsync_plugin_api::PlaySource;
use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::{Deserialize, Serialize};

use tokio::sync::oneshot;

use super::decisions::{Applied, WatchTables, take_along};
use super::ops::get_json;
use super::*;
use crate::model::{Activity, ActivityStatus, JournalEntry, Mapping, Play, PlayState, now_secs};
use std::collections::HashMap;

/// The viewings of one episode by one account, newest first: the newest in the row's own
/// fields (the row's shape before `earlier` existed, so older rows read as they are).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DedupeEntry {
    viewed_at: i64,
    play_id: u64,
    /// Every source that has reported this viewing.
    #[serde(default)]
    sources: Vec<PlaySource>,
    /// Older viewings, newest first: a history row read late (a paused poll, a backfill)
    /// finds its own viewing, not only the newest, so a rewatch does not make it a new play.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    earlier: Vec<Viewing>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Viewing {
    viewed_at: i64,
    play_id: u64,
    #[serde(default)]
    sources: Vec<PlaySource>,
}

/// Viewings of one episode remembered for deduplication; older ones are forgotten (a play
/// read again that long after is a new play, as before there was a list).
const VIEWINGS_KEPT: usize = 8;

impl DedupeEntry {
    fn into_viewings(self) -> Vec<Viewing> {
        let mut all = Vec::with_capacity(1 + self.earlier.len());
        all.push(Viewing {
            viewed_at: self.viewed_at,
            play_id: self.play_id,
            sources: self.sources,
        });
        all.extend(self.earlier);
        all
    }

    /// The row for `viewings` (not empty): newest first, at most [`VIEWINGS_KEPT`].
    fn from_viewings(mut viewings: Vec<Viewing>) -> Option<DedupeEntry> {
        viewings.sort_by_key(|v| std::cmp::Reverse(v.viewed_at));
        viewings.truncate(VIEWINGS_KEPT);
        let mut it = viewings.into_iter();
        let head = it.next()?;
        Some(DedupeEntry {
            viewed_at: head.viewed_at,
            play_id: head.play_id,
            sources: head.sources,
            earlier: it.collect(),
        })
    }
}

/// The answer to [`Store::ingest_play`].
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// A new play, journaled under this id and pending: the resolver decides where it goes.
    New(u64),
    /// A new play, journaled under this id and resolved in the same commit by its show's
    /// stored mapping; `queued`: its episode went to the outbox (the exporter has work).
    Resolved { id: u64, queued: bool },
    /// The same viewing was already journaled as this play.
    Duplicate(u64),
    /// This exact history row was journaled before (an overlapping poll read it again).
    AlreadySeen(u64),
}

/// What ingest does with a new play of a show that already has a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappedPlays {
    /// Resolve it in the commit that journals it: a webhook or a live stop, one play or a few,
    /// reaches the tracker sooner, and the resolver never reads it.
    InCommit,
    /// Leave it to the resolver: a history page or a library walk is imported page by page,
    /// and resolving in each page's commit would lengthen the import's serial step instead
    /// of letting the resolver work beside it (a 100,000-row backfill took 12 % longer so).
    ToResolver,
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
    /// Of the new plays, how many were resolved in the same commit by a stored mapping.
    pub resolved: u64,
    /// Of those, how many put an episode in the outbox.
    pub queued: u64,
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
        self.ingest_queued(play, activity, window_secs).await
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
        mapped: MappedPlays,
    ) -> Result<BatchCounts> {
        self.write_pending(move |txn, ledger, delta| {
            let mut counts = BatchCounts::default();
            let mut tables = Tables::open(txn)?;
            let mut failed = None;
            for play in plays {
                let a = activity(&play);
                match ingest_in(&mut tables, ledger, delta, play, a, window_secs, mapped) {
                    Ok(Ingested::New(id)) => {
                        counts.new += 1;
                        counts.new_ids.push(id);
                    }
                    Ok(Ingested::Resolved { id, queued }) => {
                        counts.new += 1;
                        counts.new_ids.push(id);
                        counts.resolved += 1;
                        counts.queued += u64::from(queued);
                    }
                    Ok(Ingested::Duplicate(_)) => counts.duplicates += 1,
                    Ok(Ingested::AlreadySeen(_)) => counts.already_seen += 1,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            // Even on an error: ids already used by written rows must be recorded.
            tables.finish()?;
            if let Some(e) = failed {
                return Err(e);
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

    /// Remember when a daemon first started on this store (written once, kept forever);
    /// returns the stored time. `webhook_loss` counts only plays viewed since then.
    pub async fn note_first_start(&self, at: i64) -> Result<i64> {
        self.write(move |txn| {
            let journaled = txn.open_table(JOURNAL)?.len()? > 0;
            let mut meta = txn.open_table(META)?;
            let stored = match meta.get(FIRST_START)? {
                Some(v) => Some(decode::<i64>(v.value())?),
                None => None,
            };
            match stored {
                Some(t) => Ok(t),
                None => {
                    meta.insert(FIRST_START, encode(&at)?.as_slice())?;
                    // A journal without a first start is an earlier release's store: 0.1.0
                    // counted history from before its install as webhook loss. The count is
                    // shown as "since the first start", so it starts over with it, in the
                    // same write.
                    if journaled {
                        meta.insert(WEBHOOK_LOSS, encode(&0u64)?.as_slice())?;
                    }
                    Ok(at)
                }
            }
        })
        .await
    }

    /// When a daemon first started on this store; None before the first start.
    pub fn first_started_at(&self) -> Result<Option<i64>> {
        self.read(|txn| match txn.open_table(META)?.get(FIRST_START)? {
            Some(v) => Ok(Some(decode::<i64>(v.value())?)),
            None => Ok(None),
        })
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
}

/// The tables an ingest writes, opened once for a whole batch of plays: redb's `open_table` is
/// a good part of one play's cost, and every play of a burst shares the group's transaction.
struct Tables<'t> {
    hkeys: redb::Table<'t, &'static str, u64>,
    dedupe: redb::Table<'t, &'static str, &'static [u8]>,
    journal: redb::Table<'t, u64, &'static [u8]>,
    pending: redb::Table<'t, u64, i64>,
    activity: redb::Table<'t, u64, &'static [u8]>,
    mappings: redb::Table<'t, &'static str, &'static [u8]>,
    /// `watched`, `outbox`, and the `meta` table with its sequences (journal, activity,
    /// outbox ids), shared with the resolution of plays whose show is mapped.
    watch: WatchTables<'t>,
    /// Mappings read in this batch, by show key (None: the show has none). Nothing else
    /// writes `mappings` while one job holds these tables, so a batch reads each show once.
    mapped: HashMap<String, Option<Mapping>>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self> {
        Ok(Tables {
            hkeys: txn.open_table(HISTORY_KEYS)?,
            dedupe: txn.open_table(DEDUPE)?,
            journal: txn.open_table(JOURNAL)?,
            pending: txn.open_table(PENDING)?,
            activity: txn.open_table(ACTIVITY)?,
            mappings: txn.open_table(MAPPINGS)?,
            watch: WatchTables::open(txn)?,
            mapped: HashMap::new(),
        })
    }

    /// Write back the sequences advanced (before the job that opened the tables returns).
    fn finish(self) -> Result<()> {
        self.watch.finish()
    }

    /// [`put_activity`] on the open tables.
    fn put_activity(&mut self, mut a: Activity) -> Result<u64> {
        let id = self.watch.seqs.next(&self.watch.meta, "activity")?;
        a.id = id;
        self.activity.insert(id, encode(&a)?.as_slice())?;
        Ok(id)
    }

    /// The stored mapping of a show, read once a batch.
    fn mapping(&mut self, show_key: &str) -> Result<Option<&Mapping>> {
        if !self.mapped.contains_key(show_key) {
            let m: Option<Mapping> = get_json(&self.mappings, show_key)?;
            self.mapped.insert(show_key.to_string(), m);
        }
        Ok(self.mapped.get(show_key).and_then(Option::as_ref))
    }
}

/// One webhook play waiting in the [`IngestQueue`].
struct Queued {
    play: Play,
    activity: Activity,
    window: i64,
    answer: oneshot::Sender<Result<Ingested>>,
}

/// Webhook plays waiting for the writer. A burst of webhooks becomes ONE store job that takes
/// every play queued by the time it runs (not when it was queued), so the plays share one
/// opening of the tables besides the group's one commit; each caller still gets its own answer,
/// after that commit. `scheduled`: a drain job is queued and has not yet taken the plays.
#[derive(Default)]
pub(super) struct IngestQueue {
    state: std::sync::Mutex<(Vec<Queued>, bool)>,
}

impl IngestQueue {
    /// Plays queued and not yet taken by a drain job.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().0.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<Queued>, bool)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store {
    /// Queue a webhook play for the next group commit; see [`IngestQueue`].
    async fn ingest_queued(&self, play: Play, activity: Activity, window: i64) -> Result<Ingested> {
        if self.inner.jobs.is_none() {
            return Err(StoreError::ReadOnly);
        }
        let (answer, rx) = oneshot::channel();
        let queue = &self.inner.ingest;
        let schedule = {
            let mut q = queue.lock();
            q.0.push(Queued {
                play,
                activity,
                window,
                answer,
            });
            !std::mem::replace(&mut q.1, true)
        };
        if schedule {
            let q = queue.clone();
            let ledger = self.inner.pending_shows.clone();
            let job: Job = Box::new(move |txn: Option<&WriteTransaction>, poisoned: &mut bool| {
                let items = {
                    let mut g = q.lock();
                    g.1 = false;
                    // The next burst starts with room for one as large as this: a queue grown
                    // from empty reallocates (and copies its plays) at 1, 2, 4 … 32, on the
                    // webhook's own thread. At most 64 kept (~45 KB while idle).
                    let room = g.0.len().clamp(16, 64);
                    std::mem::replace(&mut g.0, Vec::with_capacity(room))
                };
                let mut delta = PendingDelta::default();
                let answers = drain_in(txn, items, poisoned, &ledger, &mut delta);
                Box::new(move |committed: Result<()>| {
                    ledger.settle(delta, committed.is_ok());
                    for (tx, out) in answers {
                        let _ = tx.send(committed.clone().and(out));
                    }
                })
            });
            if let Err(e) = self.submit_job(job) {
                // The writer is gone: nobody will take the queue, so answer it here.
                let items = {
                    let mut g = queue.lock();
                    g.1 = false;
                    std::mem::take(&mut g.0)
                };
                for it in items {
                    let _ = it.answer.send(Err(e.clone()));
                }
            }
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

type Answer = (oneshot::Sender<Result<Ingested>>, Result<Ingested>);

/// Journal the queued plays in order on tables opened once. A storage error poisons the group
/// (every caller gets an error, nothing is committed), as it would for separate jobs.
fn drain_in(
    txn: Option<&WriteTransaction>,
    items: Vec<Queued>,
    poisoned: &mut bool,
    ledger: &PendingShows,
    delta: &mut PendingDelta,
) -> Vec<Answer> {
    let mut tables = match txn.map(Tables::open) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            *poisoned = true;
            return items
                .into_iter()
                .map(|it| (it.answer, Err(e.clone())))
                .collect();
        }
        None => None,
    };
    let answers: Vec<Answer> = items
        .into_iter()
        .map(|it| {
            let out = match tables.as_mut() {
                Some(t) => ingest_in(
                    t,
                    ledger,
                    delta,
                    it.play,
                    Some(it.activity),
                    it.window,
                    MappedPlays::InCommit,
                ),
                None => Err(StoreError::Storage("no write transaction".into())),
            };
            if out.as_ref().is_err_and(StoreError::is_storage) {
                *poisoned = true;
            }
            (it.answer, out)
        })
        .collect();
    match tables.map(Tables::finish) {
        Some(Err(e)) => {
            // The ids handed out were not recorded: nothing of the group may commit.
            *poisoned = true;
            answers
                .into_iter()
                .map(|(tx, _)| (tx, Err(e.clone())))
                .collect()
        }
        _ => answers,
    }
}

fn ingest_in(
    t: &mut Tables<'_>,
    ledger: &PendingShows,
    delta: &mut PendingDelta,
    mut play: Play,
    activity: Option<Activity>,
    window: i64,
    mapped: MappedPlays,
) -> Result<Ingested> {
    if let Some(hk) = &play.history_key {
        if let Some(id) = t.hkeys.get(hk.as_str())? {
            return Ok(Ingested::AlreadySeen(id.value()));
        }
    }
    let key = play.dedupe_key();
    let mut viewings = get_json::<DedupeEntry>(&t.dedupe, &key)?
        .map(DedupeEntry::into_viewings)
        .unwrap_or_default();
    let same = viewings
        .iter()
        .enumerate()
        .filter(|(_, v)| (play.viewed_at - v.viewed_at).abs() <= window)
        .min_by_key(|(_, v)| (play.viewed_at - v.viewed_at).abs())
        .map(|(i, _)| i);
    if let Some(i) = same {
        let prev = &mut viewings[i];
        let play_id = prev.play_id;
        let new_source = !prev.sources.contains(&play.source);
        if new_source {
            prev.sources.push(play.source);
        }
        let known: Vec<String> = prev.sources.iter().map(|s| s.to_string()).collect();
        if new_source {
            if let Some(row) = DedupeEntry::from_viewings(viewings) {
                t.dedupe.insert(key.as_str(), encode(&row)?.as_slice())?;
            }
        }
        if let Some(hk) = &play.history_key {
            t.hkeys.insert(hk.as_str(), play_id)?;
        }
        // One viewing, one play: the original play (and its activity row) learns that
        // this source saw it too; nothing is queued again.
        let seen = if new_source {
            add_source(t, play_id, play.source)?
        } else {
            None
        };
        let seen: Vec<String> = seen.unwrap_or(known);
        if let Some(mut a) = activity {
            a.status = ActivityStatus::Duplicate;
            a.action = format!(
                "same viewing as play #{} (seen by {})",
                play_id,
                seen.join(", ")
            );
            a.play_id = Some(play_id);
            a.sources = seen;
            t.put_activity(a)?;
        }
        return Ok(Ingested::Duplicate(play_id));
    }
    let id = t.watch.seqs.next(&t.watch.meta, "journal")?;
    play.id = id;
    if let Some(hk) = &play.history_key {
        t.hkeys.insert(hk.as_str(), id)?;
    }
    viewings.push(Viewing {
        viewed_at: play.viewed_at,
        play_id: id,
        sources: vec![play.source],
    });
    if let Some(row) = DedupeEntry::from_viewings(viewings) {
        t.dedupe.insert(key.as_str(), encode(&row)?.as_slice())?;
    }
    if counts_as_webhook_loss(&t.watch.meta, &play)? {
        bump_counter(&mut t.watch.meta, "webhook_loss", 1)?;
    }
    let source = play.source;
    let activity_id = match activity {
        Some(mut a) => {
            a.play_id = Some(id);
            if a.action.is_empty() {
                a.action = format!("journaled as play #{id} ({source})");
            }
            a.sources = vec![source.to_string()];
            Some(t.put_activity(a)?)
        }
        None => None,
    };
    // A show with a stored mapping needs no matcher: the play is resolved in this commit
    // exactly as the resolver's round would resolve it (the mapping is the word), without
    // a second commit, a `pending` row and a second write of its journal entry. The show's
    // plays still waiting for the resolver go first, by the same rule, so the tracker gets
    // the show's episodes in acknowledgement order.
    let show_key = play.show.key();
    let mapping = match mapped {
        MappedPlays::InCommit => t.mapping(&show_key)?.cloned(),
        MappedPlays::ToResolver => None,
    };
    let resolved = match mapping {
        Some(m) => {
            let mut queued = false;
            for earlier in ledger.waiting(&show_key) {
                queued |= take_along(
                    &mut t.journal,
                    &mut t.pending,
                    &mut t.watch,
                    delta,
                    earlier,
                    &show_key,
                    &m,
                )? == Some(Applied::Queued);
            }
            let (state, applied) = t.watch.follow_mapping(&play, &m)?;
            Some((state, queued || applied == Applied::Queued))
        }
        None => None,
    };
    let (state, answer) = match resolved {
        Some((state, queued)) => (state, Ingested::Resolved { id, queued }),
        None => {
            t.pending.insert(id, 0i64)?;
            ledger.add(&show_key, id, delta);
            (PlayState::Pending, Ingested::New(id))
        }
    };
    let entry = JournalEntry {
        play,
        state,
        sources: vec![source],
        activity_id,
    };
    t.journal.insert(id, encode(&entry)?.as_slice())?;
    Ok(answer)
}

/// Record that `source` saw the viewing journaled as `play_id`: on its journal entry and on
/// the entry's activity row (when the row is still kept). Returns the sources now known, or
/// None when the play is not in the journal any more.
fn add_source(t: &mut Tables<'_>, play_id: u64, source: PlaySource) -> Result<Option<Vec<String>>> {
    let mut entry: JournalEntry = match t.journal.get(play_id)? {
        Some(v) => decode(v.value())?,
        None => return Ok(None),
    };
    if entry.sources.is_empty() {
        // Written before sources were kept: its own source saw it first.
        entry.sources.push(entry.play.source);
    }
    if !entry.sources.contains(&source) {
        entry.sources.push(source);
    }
    t.journal.insert(play_id, encode(&entry)?.as_slice())?;
    let names: Vec<String> = entry.sources.iter().map(|s| s.to_string()).collect();
    if let Some(aid) = entry.activity_id {
        let row: Option<Activity> = match t.activity.get(aid)? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        if let Some(mut row) = row {
            row.sources = names.clone();
            t.activity.insert(aid, encode(&row)?.as_slice())?;
        }
    }
    Ok(Some(names))
}

/// The `meta` key of the first start's time.
const FIRST_START: &str = "first_started_at";

/// The `meta` key of the `webhook_loss` counter ([`bump_counter`]'s `counter.<name>`).
pub(super) const WEBHOOK_LOSS: &str = "counter.webhook_loss";

/// A play found by polling and not (yet) by any webhook is the webhook-loss signal — but only
/// if a webhook could have reported it: viewed after the daemon first started (history from
/// before the install is not loss), read from history (a backfill never counts; a watched
/// mark set by hand in the library sends no webhook at all).
fn counts_as_webhook_loss(
    meta: &redb::Table<'_, &'static str, &'static [u8]>,
    play: &Play,
) -> Result<bool> {
    if play.source != PlaySource::Poll
        || play
            .history_key
            .as_deref()
            .is_some_and(|k| k.starts_with("library:"))
    {
        return Ok(false);
    }
    let first_start = match meta.get(FIRST_START)? {
        Some(v) => decode::<i64>(v.value())?,
        None => return Ok(false),
    };
    Ok(play.viewed_at >= first_start)
}

fn bump_counter(
    meta: &mut redb::Table<'_, &'static str, &'static [u8]>,
    name: &str,
    by: u64,
) -> Result<u64> {
    let key = format!("counter.{name}");
    let cur = match meta.get(key.as_str())? {
        Some(v) => decode::<u64>(v.value())?,
        None => 0,
    };
    let next = cur + by;
    meta.insert(key.as_str(), encode(&next)?.as_slice())?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ops::fixtures::{act, corrupt_dedupe_row, play, store_mapping};
    use crate::store::ops::{Applied, BatchOutcome, Resolution};

    /// Health's "plays wait to be matched" reads the age of the oldest play in `pending`
    /// (journal ids grow with time), from when it was received.
    #[tokio::test]
    async fn counts_give_the_age_of_the_oldest_play_waiting_for_the_resolver() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        assert_eq!(s.counts().unwrap().oldest_unresolved_secs, None);
        let now = crate::model::now_secs();
        let mut old = play(now - 7200);
        old.received_at = now - 7000;
        s.ingest_play(old, act(), 0).await.unwrap();
        let mut newer = play(now - 60);
        newer.episode = 3;
        s.ingest_play(newer, act(), 0).await.unwrap();
        let c = s.counts().unwrap();
        assert_eq!(c.pending_resolution, 2);
        let age = c.oldest_unresolved_secs.expect("an age");
        assert!((7000..7010).contains(&age), "{age}");
    }

    #[tokio::test]
    async fn webhook_loss_counts_only_polled_plays_viewed_since_the_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let polled = |viewed_at: i64, episode: u32, source: PlaySource, hk: Option<&str>| {
            let mut p = play(viewed_at);
            p.source = source;
            p.episode = episode;
            p.history_key = hk.map(str::to_string);
            p
        };
        // Before any start: nothing counts.
        s.ingest_play(polled(500, 1, PlaySource::Poll, None), act(), 0)
            .await
            .unwrap();
        assert_eq!(s.counts().unwrap().webhook_loss, 0);
        assert_eq!(s.first_started_at().unwrap(), None);
        assert_eq!(s.note_first_start(1000).await.unwrap(), 1000);
        assert_eq!(
            s.note_first_start(5000).await.unwrap(),
            1000,
            "written once"
        );
        assert_eq!(s.first_started_at().unwrap(), Some(1000));
        for (i, (viewed_at, source, hk)) in [
            (999, PlaySource::Poll, None),      // before the first start
            (2000, PlaySource::Backfill, None), // a backfill
            (2000, PlaySource::Poll, Some("library:7:2000")), // a hand-set mark
            (2000, PlaySource::Webhook, None),  // a webhook
            (1000, PlaySource::Poll, Some("/h/1")), // counts
        ]
        .into_iter()
        .enumerate()
        {
            let p = polled(viewed_at, 10 + i as u32, source, hk);
            s.ingest_play(p, act(), 0).await.unwrap();
        }
        assert_eq!(s.counts().unwrap().webhook_loss, 1);
    }

    #[tokio::test]
    async fn the_first_start_on_an_earlier_releases_store_starts_webhook_loss_over() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        // As 0.1.0 left it: plays journaled, loss counted, no first start recorded.
        s.ingest_play(play(500), act(), 0).await.unwrap();
        s.write(|txn| {
            bump_counter(&mut txn.open_table(META)?, "webhook_loss", 2)?;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(s.counts().unwrap().webhook_loss, 2);
        assert_eq!(s.note_first_start(1000).await.unwrap(), 1000);
        assert_eq!(s.counts().unwrap().webhook_loss, 0);
        // Later starts leave the count alone.
        s.write(|txn| {
            bump_counter(&mut txn.open_table(META)?, "webhook_loss", 1)?;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(s.note_first_start(5000).await.unwrap(), 1000);
        assert_eq!(s.counts().unwrap().webhook_loss, 1);
    }

    /// Keep the writer busy inside a group until the returned sender sends.
    async fn hold_writer(
        s: &Store,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<()>>,
    ) {
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let s = s.clone();
        let blocker = tokio::spawn(async move {
            s.write(move |_| {
                let _ = started_tx.send(());
                let _ = hold_rx.recv();
                Ok(())
            })
            .await
        });
        started_rx.await.unwrap();
        (hold_tx, blocker)
    }

    /// A burst queued while the writer is busy goes in ONE drain job and one durable commit;
    /// every caller gets its own answer (distinct ids; the same viewing twice in one batch is
    /// a duplicate of the first), and each answer is readable once it is given.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_queued_burst_is_one_commit_with_an_answer_each() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        // Hold the writer inside a group until the burst is queued.
        let (hold_tx, blocker) = hold_writer(&s).await;
        let before = s.commits();
        let mut calls = Vec::new();
        for i in 0..100u32 {
            let s2 = s.clone();
            let mut p = play(1000);
            // 0 and 1 are the same viewing; the rest are other episodes.
            p.episode = if i == 1 { 0 } else { i };
            calls.push(tokio::spawn(
                async move { s2.ingest_play(p, act(), 300).await },
            ));
            // Queue in order, so play 0 is journaled before its duplicate.
            while s.inner.ingest.len() < i as usize + 1 {
                tokio::task::yield_now().await;
            }
        }
        hold_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        let mut new = Vec::new();
        let mut dups = Vec::new();
        for c in calls {
            match c.await.unwrap().unwrap() {
                Ingested::New(id) => {
                    assert!(
                        s.journal_entry(id).unwrap().is_some(),
                        "answered before visible"
                    );
                    new.push(id);
                }
                Ingested::Duplicate(id) => dups.push(id),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(new, (1..=99).collect::<Vec<_>>());
        assert_eq!(dups, vec![1]);
        assert_eq!(
            s.commits() - before,
            2,
            "the held group, then the whole burst in one"
        );
        let (_, rows) = s.activity(&Default::default(), 1, 1).unwrap();
        assert_eq!(rows, 100, "one activity row a webhook, in the same commit");
    }

    /// A storage error in one queued play fails every play of the group and commits none.
    #[tokio::test]
    async fn a_failed_drain_answers_every_caller_and_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        s.ingest_play(play(1000), act(), 300).await.unwrap();
        // A corrupt dedupe row for the next play's viewing.
        let mut bad = play(5000);
        bad.episode = 7;
        corrupt_dedupe_row(&s, &bad).await;
        let mut good = play(5000);
        good.episode = 8;
        let (hold_tx, blocker) = hold_writer(&s).await;
        let (s1, s2) = (s.clone(), s.clone());
        let a = tokio::spawn(async move { s1.ingest_play(good, act(), 300).await });
        let b = tokio::spawn(async move { s2.ingest_play(bad, act(), 300).await });
        while s.inner.ingest.len() < 2 {
            tokio::task::yield_now().await;
        }
        hold_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert!(b.is_err());
        assert!(a.is_err(), "same group as the failed play: {a:?}");
        assert_eq!(
            s.counts().unwrap().journal,
            1,
            "nothing of the group committed"
        );
        let mut again = play(5000);
        again.episode = 8;
        assert!(matches!(
            s.ingest_play(again, act(), 300).await.unwrap(),
            Ingested::New(_)
        ));
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
        let (rows, total) = s.activity(&Default::default(), 1, 50).unwrap();
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

    fn mapping(show_id: &str, ignored: bool, sync_enabled: bool) -> Mapping {
        Mapping {
            plex: play(0).show,
            show_id: show_id.into(),
            method: "guid".into(),
            confidence: 1.0,
            manual: false,
            sync_enabled,
            created_at: 0,
            ignored,
            updated_at: None,
        }
    }

    /// A new play of a show with a stored mapping is resolved in its own commit, as the
    /// resolver's round would resolve it: watched, queued, never pending; the same episode
    /// viewed again counts as a play and queues nothing. A play of an unmapped show stays
    /// pending for the resolver.
    #[tokio::test]
    async fn a_play_of_a_mapped_show_is_resolved_in_its_own_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let mut unmapped = play(1000);
        unmapped.show.rating_key = Some("11".into());
        assert_eq!(
            s.ingest_play(unmapped, act(), 300).await.unwrap(),
            Ingested::New(1)
        );
        store_mapping(&s, mapping("42", false, true)).await;
        let mut p = play(2000);
        p.episode = 3;
        let before = s.commits();
        assert_eq!(
            s.ingest_play(p, act(), 300).await.unwrap(),
            Ingested::Resolved {
                id: 2,
                queued: true
            }
        );
        assert_eq!(
            s.commits() - before,
            1,
            "journaled and resolved in one commit"
        );
        let e = s.journal_entry(2).unwrap().unwrap();
        assert_eq!(
            e.state,
            PlayState::Resolved {
                show_id: "42".into()
            }
        );
        assert_eq!(s.watched("42", 1, 3).unwrap().unwrap().plays, 1);
        let c = s.counts().unwrap();
        assert_eq!(
            c.pending_resolution, 1,
            "only the play from before the mapping"
        );
        assert_eq!(c.outbox_items, 1);
        assert_eq!(
            s.due_pending(i64::MAX, 10)
                .unwrap()
                .iter()
                .map(|p| p.id)
                .collect::<Vec<_>>(),
            vec![1]
        );
        // The same episode again, outside the dedupe window: a second play, nothing queued.
        let mut again = play(9000);
        again.episode = 3;
        assert_eq!(
            s.ingest_play(again, act(), 300).await.unwrap(),
            Ingested::Resolved {
                id: 3,
                queued: false
            }
        );
        assert_eq!(s.watched("42", 1, 3).unwrap().unwrap().plays, 2);
        assert_eq!(s.counts().unwrap().outbox_items, 1);
    }

    /// An ignored show's play is journaled as ignored; a show with sync off is counted
    /// watched and sends nothing. Neither waits for the resolver.
    #[tokio::test]
    async fn an_ignored_or_unsynced_mapping_queues_nothing() {
        for (ignored, sync, state) in [
            (true, true, PlayState::Ignored),
            (
                false,
                false,
                PlayState::Resolved {
                    show_id: "42".into(),
                },
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let s = Store::open(&dir.path().join("s.redb")).unwrap();
            store_mapping(&s, mapping("42", ignored, sync)).await;
            assert_eq!(
                s.ingest_play(play(1000), act(), 300).await.unwrap(),
                Ingested::Resolved {
                    id: 1,
                    queued: false
                }
            );
            assert_eq!(s.journal_entry(1).unwrap().unwrap().state, state);
            let c = s.counts().unwrap();
            assert_eq!((c.pending_resolution, c.outbox_items), (0, 0));
            assert_eq!(s.watched("42", 1, 2).unwrap().is_some(), !ignored);
        }
    }

    /// A batch (a history page) resolves its plays of mapped shows in the same commit and
    /// says how many it resolved and queued; a duplicate in it is still a duplicate.
    #[tokio::test]
    async fn a_batch_counts_what_its_commit_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        store_mapping(&s, mapping("42", false, true)).await;
        let mut other = play(1000);
        other.show.rating_key = Some("11".into());
        let mut plays = vec![other];
        for ep in [1, 2, 2] {
            let mut p = play(1000);
            p.episode = ep;
            plays.push(p);
        }
        let c = s
            .ingest_batch(plays.clone(), None, 300, |_| None, MappedPlays::InCommit)
            .await
            .unwrap();
        assert_eq!((c.new, c.duplicates, c.resolved, c.queued), (3, 1, 2, 2));
        assert_eq!(c.new_ids, vec![1, 2, 3]);
        assert_eq!(
            s.counts().unwrap().pending_resolution,
            1,
            "the unmapped show"
        );
        // A bulk import leaves every play to the resolver, mapped show or not.
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        store_mapping(&s, mapping("42", false, true)).await;
        let c = s
            .ingest_batch(plays, None, 300, |_| None, MappedPlays::ToResolver)
            .await
            .unwrap();
        assert_eq!((c.new, c.duplicates, c.resolved, c.queued), (3, 1, 0, 0));
        assert_eq!(s.counts().unwrap().pending_resolution, 3);
    }

    /// Plays of a show still waiting for the resolver when its mapping is stored are resolved
    /// first, in journal order, in the commit of the show's next play: the tracker gets the
    /// show's episodes in acknowledgement order, and the resolver's late decision for one of
    /// them is stale.
    #[tokio::test]
    async fn a_new_play_of_a_mapped_show_takes_its_waiting_plays_along_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let ep = |e: u32, at: i64| {
            let mut p = play(at);
            p.episode = e;
            p
        };
        assert_eq!(
            s.ingest_play(ep(1, 1000), act(), 300).await.unwrap(),
            Ingested::New(1)
        );
        assert_eq!(
            s.ingest_play(ep(2, 2000), act(), 300).await.unwrap(),
            Ingested::New(2)
        );
        // Another show's waiting play is not touched.
        let mut other = ep(1, 2000);
        other.show.rating_key = Some("11".into());
        assert_eq!(
            s.ingest_play(other, act(), 300).await.unwrap(),
            Ingested::New(3)
        );
        store_mapping(&s, mapping("42", false, true)).await;
        let before = s.commits();
        assert_eq!(
            s.ingest_play(ep(3, 3000), act(), 300).await.unwrap(),
            Ingested::Resolved {
                id: 4,
                queued: true
            }
        );
        assert_eq!(s.commits() - before, 1);
        for id in [1, 2] {
            assert_eq!(
                s.journal_entry(id).unwrap().unwrap().state,
                PlayState::Resolved {
                    show_id: "42".into()
                }
            );
        }
        assert_eq!(
            s.counts().unwrap().pending_resolution,
            1,
            "the other show's"
        );
        let late = Resolution::Mapped {
            show_id: "42".into(),
            mapping: None,
        };
        assert_eq!(
            s.apply_resolutions(vec![(1, late)]).await.unwrap(),
            vec![Applied::Stale]
        );
        s.form_batches(100).await.unwrap();
        let batches = s.due_batches(i64::MAX, 10).unwrap();
        assert_eq!(batches.len(), 1);
        let eps: Vec<u32> = batches[0].items.iter().map(|i| i.episode).collect();
        assert_eq!(eps, vec![1, 2, 3], "acknowledgement order");
    }

    /// A play listed as waiting in a group that did not commit is taken back.
    #[tokio::test]
    async fn a_failed_group_takes_back_its_waiting_plays() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        store_mapping(&s, mapping("42", false, true)).await;
        // An unmapped show's play goes to `pending`, then a corrupt row fails the group.
        let mut unmapped = play(1000);
        unmapped.show.rating_key = Some("11".into());
        let mut bad = play(5000);
        bad.episode = 7;
        corrupt_dedupe_row(&s, &bad).await;
        assert!(
            s.ingest_batch(
                vec![unmapped, bad],
                None,
                300,
                |_| None,
                MappedPlays::InCommit
            )
            .await
            .is_err()
        );
        assert!(
            s.inner.pending_shows.waiting("srv/11").is_empty(),
            "taken back"
        );
        assert_eq!(s.counts().unwrap().journal, 0);
    }

    /// A failed group is answered, and its waiting plays taken back, even while the
    /// answering thread is still busy with an earlier group: the next group hands out the
    /// same journal ids again, so the take-back must come first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_group_is_taken_back_before_the_next_group() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        store_mapping(&s, mapping("42", false, true)).await;
        // A history page of the mapped show (left to the resolver) will fail on a corrupt row.
        let mut bad = play(5000);
        bad.episode = 7;
        corrupt_dedupe_row(&s, &bad).await;
        // The answering thread is held inside an earlier group's settle.
        let (entered_tx, entered_rx) = oneshot::channel::<()>();
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let held = {
            let s = s.clone();
            tokio::spawn(async move {
                s.write_settled(
                    |_, _: &mut ()| Ok(()),
                    move |_, _| {
                        let _ = entered_tx.send(());
                        let _ = gate_rx.recv();
                    },
                )
                .await
            })
        };
        entered_rx.await.unwrap();
        let failed = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            s.ingest_batch(
                vec![play(1000), bad],
                None,
                300,
                |_| None,
                MappedPlays::ToResolver,
            ),
        )
        .await
        .expect("a failed group is answered without waiting for earlier groups' answers");
        assert!(failed.is_err());
        assert!(s.inner.pending_shows.waiting("srv/10").is_empty());
        let _ = gate_tx.send(());
        held.await.unwrap().unwrap();
    }

    /// A ledger entry that names another show's play (however it got there) does not take
    /// that play along with this show's mapping.
    #[tokio::test]
    async fn a_waiting_play_is_taken_along_only_for_its_own_show() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        store_mapping(&s, mapping("42", false, true)).await;
        let mut other = play(1000);
        other.show.rating_key = Some("11".into());
        assert_eq!(
            s.ingest_play(other, act(), 300).await.unwrap(),
            Ingested::New(1)
        );
        s.inner
            .pending_shows
            .add("srv/10", 1, &mut PendingDelta::default());
        let mut mine = play(2000);
        mine.episode = 3;
        assert!(matches!(
            s.ingest_play(mine, act(), 300).await.unwrap(),
            Ingested::Resolved { id: 2, .. }
        ));
        assert_eq!(
            s.journal_entry(1).unwrap().unwrap().state,
            PlayState::Pending,
            "show 11's play waits for its own show's answer"
        );
    }

    /// A history page read late (after a rewatch) finds each row's own viewing: two
    /// viewings a day apart, each seen by a webhook and then by the poll, are two plays.
    #[tokio::test]
    async fn a_late_history_row_finds_its_own_viewing_behind_a_rewatch() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let first = s.ingest_play(play(1000), act(), 300).await.unwrap();
        let second = s.ingest_play(play(87_400), act(), 300).await.unwrap();
        assert_eq!((first, second), (Ingested::New(1), Ingested::New(2)));
        let polled = |at: i64, hk: &str| {
            let mut p = play(at);
            p.source = PlaySource::Poll;
            p.history_key = Some(hk.into());
            p
        };
        let counts = s
            .ingest_batch(
                vec![polled(1010, "h1"), polled(87_410, "h2")],
                None,
                300,
                |_| None,
                MappedPlays::ToResolver,
            )
            .await
            .unwrap();
        assert_eq!((counts.new, counts.duplicates), (0, 2), "{counts:?}");
        assert_eq!(s.counts().unwrap().journal, 2);
        // Each journal entry learned that the poll saw it too.
        for id in [1, 2] {
            let e = s.journal_entry(id).unwrap().unwrap();
            assert_eq!(
                e.sources,
                vec![PlaySource::Webhook, PlaySource::Poll],
                "#{id}"
            );
        }
        // A third viewing much later is a new play, and the first two are still known.
        let third = s.ingest_play(play(200_000), act(), 300).await.unwrap();
        assert_eq!(third, Ingested::New(3));
        let again = s.ingest_play(play(1020), act(), 300).await.unwrap();
        assert_eq!(again, Ingested::Duplicate(1));
    }

    /// The ledger of waiting shows is rebuilt from `pending` when the store opens.
    #[tokio::test]
    async fn the_waiting_shows_are_counted_again_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let s = Store::open(&path).unwrap();
            s.ingest_play(play(1000), act(), 300).await.unwrap();
        }
        let s = Store::open(&path).unwrap();
        store_mapping(&s, mapping("42", false, true)).await;
        let mut p = play(2000);
        p.episode = 3;
        assert_eq!(
            s.ingest_play(p, act(), 300).await.unwrap(),
            Ingested::Resolved {
                id: 2,
                queued: true
            }
        );
        assert_eq!(s.counts().unwrap().pending_resolution, 0);
        assert_eq!(
            s.counts().unwrap().outbox_items,
            2,
            "the play from before the restart too"
        );
    }

    /// A pending play whose journal entry cannot be read does not keep the store from
    /// opening; the other waiting plays are still listed.
    #[tokio::test]
    async fn an_unreadable_pending_entry_does_not_keep_the_store_shut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let s = Store::open(&path).unwrap();
            s.ingest_play(play(1000), act(), 300).await.unwrap();
            let mut p = play(2000);
            p.episode = 2;
            s.ingest_play(p, act(), 300).await.unwrap();
            s.write(|txn| {
                txn.open_table(JOURNAL)?
                    .insert(1, b"{not json".as_slice())?;
                Ok(())
            })
            .await
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.inner.pending_shows.waiting("srv/10"), vec![2]);
    }
}
