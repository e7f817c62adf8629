//! Decisions: where a pending play goes. The resolver's queue (`pending`), applying its
//! resolution in one transaction (mapping + `watched` + `outbox`, a conflict, ignored, or a
//! retry time), the `conflicts` and `mappings` tables, and a person's decisions: resolving a
//! conflict (releasing its held plays) and editing a mapping.

use redb::{ReadableTable, WriteTransaction};

use super::ops::{all_json, get_json, watched_key};
use super::*;
use crate::model::{
    Conflict, JournalEntry, Mapping, OutboxItem, Play, PlayState, Watched, now_secs,
};

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

/// How many plays and when the first and last were viewed (unix seconds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlayTimes {
    pub count: usize,
    pub first: Option<i64>,
    pub last: Option<i64>,
}

impl PlayTimes {
    fn add(&mut self, at: i64) {
        self.count += 1;
        self.first = Some(self.first.map_or(at, |f| f.min(at)));
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }
}

/// What [`Store::update_mapping`] did.
#[derive(Debug, Clone)]
pub struct MappingUpdate {
    /// The mapping as stored.
    pub mapping: Mapping,
    /// Held plays (ignored, or recorded while sync was off) now counted for the show.
    pub plays_released: usize,
    /// Episodes of them queued for the tracker.
    pub episodes_queued: usize,
}

/// What a person decided for a conflict.
#[derive(Debug, Clone)]
pub enum ConflictDecision {
    /// Map the show to this tracker show (chosen, or just created); `sync`: whether its plays
    /// go to the tracker (off: they are recorded as watched and held, as for a mapping whose
    /// sync is turned off).
    Select {
        show_id: String,
        method: String,
        sync: bool,
    },
    /// Never sync this show; its plays stay in the journal as ignored.
    Ignore,
}

impl Store {
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

    /// Give an open conflict new candidates (the chain's answer once it knows more names),
    /// unless a person decided it meanwhile or it is another tracker's than `tracker` (matched
    /// again since it was read, or not yet). Returns whether it was written.
    pub async fn set_conflict_candidates(
        &self,
        key: String,
        tracker: String,
        candidates: Vec<plexsync_plugin_api::Candidate>,
    ) -> Result<bool> {
        self.write(move |txn| {
            let mut conflicts = txn.open_table(CONFLICTS)?;
            let Some(mut c) = get_json::<Conflict>(&conflicts, &key)? else {
                return Ok(false);
            };
            // One that names no tracker is the current one's (see `Conflict::tracker`).
            if c.tracker.as_deref().is_some_and(|t| t != tracker) {
                return Ok(false);
            }
            c.candidates = candidates;
            c.updated_at = now_secs();
            conflicts.insert(key.as_str(), encode(&c)?.as_slice())?;
            Ok(true)
        })
        .await
    }

    /// Tag every conflict that names no tracker (stored by an earlier release) with `tracker`,
    /// the one its candidates were matched against. Returns how many were tagged.
    pub async fn tag_conflicts(&self, tracker: String) -> Result<usize> {
        self.write(move |txn| {
            let mut conflicts = txn.open_table(CONFLICTS)?;
            let untagged: Vec<Conflict> = all_json::<Conflict>(&conflicts)?
                .into_iter()
                .filter(|c| c.tracker.is_none())
                .collect();
            for mut c in untagged.iter().cloned() {
                c.tracker = Some(tracker.clone());
                conflicts.insert(c.key.as_str(), encode(&c)?.as_slice())?;
            }
            Ok(untagged.len())
        })
        .await
    }

    /// An open conflict matched again against `tracker`'s catalogue that still needs a person:
    /// its candidates and reason replaced (the old ones name another tracker's shows), tagged
    /// with `tracker`. Only while it is open and still tagged `from` (as it was read): a person's
    /// decision or another pass meanwhile is the newer word. Returns whether it was written.
    pub async fn rematch_conflict(
        &self,
        key: String,
        from: Option<String>,
        tracker: String,
        candidates: Vec<plexsync_plugin_api::Candidate>,
        reason: String,
    ) -> Result<bool> {
        self.write(move |txn| {
            let mut conflicts = txn.open_table(CONFLICTS)?;
            let Some(mut c) = get_json::<Conflict>(&conflicts, &key)? else {
                return Ok(false);
            };
            if c.tracker != from {
                return Ok(false);
            }
            c.candidates = candidates;
            c.reason = reason;
            c.tracker = Some(tracker);
            c.updated_at = now_secs();
            conflicts.insert(key.as_str(), encode(&c)?.as_slice())?;
            Ok(true)
        })
        .await
    }

    /// An open conflict the matcher chain now maps (matched again against the current
    /// tracker's catalogue): as the resolver maps a show, `mapping` (automatic) is stored and
    /// the held plays are recorded as watched and queued, in one transaction. Only while it is
    /// open, still tagged `from` and the show has no mapping; None otherwise (a person decided
    /// it meanwhile: left alone). Returns (plays released, episodes queued).
    pub async fn map_conflict(
        &self,
        key: String,
        from: Option<String>,
        mapping: Mapping,
    ) -> Result<Option<(usize, usize)>> {
        self.write(move |txn| {
            let mut conflicts = txn.open_table(CONFLICTS)?;
            let Some(c) = get_json::<Conflict>(&conflicts, &key)? else {
                return Ok(None);
            };
            if c.tracker != from || get_json::<Mapping>(&txn.open_table(MAPPINGS)?, &key)?.is_some()
            {
                return Ok(None);
            }
            conflicts.remove(key.as_str())?;
            drop(conflicts);
            let (show_id, sync) = (mapping.show_id.clone(), mapping.sync_enabled);
            txn.open_table(MAPPINGS)?
                .insert(key.as_str(), encode(&mapping)?.as_slice())?;
            release_held(txn, c.held, &show_id, false, sync).map(Some)
        })
        .await
    }

    pub fn mappings(&self) -> Result<Vec<Mapping>> {
        self.read(|txn| all_json(&txn.open_table(MAPPINGS)?))
    }

    /// Every mapping with the show key it is stored under (which the listing's ids name; a
    /// mapping's own `plex.key()` may differ once the year was filled in from Plex).
    pub fn mapping_entries(&self) -> Result<Vec<(String, Mapping)>> {
        self.read(|txn| {
            let t = txn.open_table(MAPPINGS)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_string(), decode(v.value())?));
            }
            Ok(out)
        })
    }

    /// First and last viewing time among these plays (a conflict's held plays).
    pub fn play_times(&self, ids: &[u64]) -> Result<PlayTimes> {
        self.read(|txn| {
            let j = txn.open_table(JOURNAL)?;
            let mut out = PlayTimes::default();
            for id in ids {
                if let Some(v) = j.get(*id)? {
                    out.add(decode::<JournalEntry>(v.value())?.play.viewed_at);
                }
            }
            Ok(out)
        })
    }

    /// The plays held (journaled as ignored) per show key, for the given keys: one pass over
    /// the journal, so callers ask only when some show is ignored.
    pub fn ignored_plays(
        &self,
        keys: &std::collections::HashSet<String>,
    ) -> Result<std::collections::HashMap<String, PlayTimes>> {
        let mut out = std::collections::HashMap::new();
        if keys.is_empty() {
            return Ok(out);
        }
        self.read(|txn| {
            for row in txn.open_table(JOURNAL)?.iter()? {
                let e: JournalEntry = decode(row?.1.value())?;
                if e.state != PlayState::Ignored {
                    continue;
                }
                let k = e.play.show.key();
                if keys.contains(&k) {
                    out.entry(k)
                        .or_insert_with(PlayTimes::default)
                        .add(e.play.viewed_at);
                }
            }
            Ok(out)
        })
    }

    /// Apply many decisions in one transaction. A play that is gone or no longer pending is
    /// `Stale`; it does not spoil the others.
    pub async fn apply_resolutions(&self, items: Vec<(u64, Resolution)>) -> Result<Vec<Applied>> {
        Ok(self
            .apply_resolutions_while(items, || true)
            .await?
            .unwrap_or_default())
    }

    /// [`Store::apply_resolutions`], only if `still()` holds when the write runs (asked in the
    /// write transaction, so nothing it guards can change between the question and the
    /// commit); None, and nothing written, when it does not.
    pub async fn apply_resolutions_while(
        &self,
        items: Vec<(u64, Resolution)>,
        still: impl Fn() -> bool + Send + 'static,
    ) -> Result<Option<Vec<Applied>>> {
        if items.is_empty() {
            return Ok(Some(Vec::new()));
        }
        self.write_pending(move |txn, ledger, delta| {
            if !still() {
                return Ok(None);
            }
            // One opening of the tables for the whole batch: in redb `open_table` costs about
            // as much as a play's own rows, and a burst resolves hundreds of plays at once.
            let mut t = ApplyTables::open(txn)?;
            let mut out = Vec::with_capacity(items.len());
            let mut failed = None;
            for (id, r) in items {
                match t.apply(id, r, ledger, delta) {
                    Err(StoreError::NotFound(_)) => out.push(Applied::Stale),
                    Ok(a) => out.push(a),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            // Even on an error: ids handed out and used by rows already written must be
            // recorded, or a later row would take the same id.
            t.finish()?;
            match failed {
                Some(e) => Err(e),
                None => Ok(Some(out)),
            }
        })
        .await
    }

    /// Apply the resolver's decision for one play.
    pub async fn apply_resolution(&self, play_id: u64, r: Resolution) -> Result<Applied> {
        self.write_pending(move |txn, ledger, delta| {
            let mut t = ApplyTables::open(txn)?;
            let applied = t.apply(play_id, r, ledger, delta);
            t.finish()?;
            applied
        })
        .await
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
            let (show_id, ignored, method, sync) = match &decision {
                ConflictDecision::Select {
                    show_id,
                    method,
                    sync,
                } => (show_id.clone(), false, method.clone(), *sync),
                ConflictDecision::Ignore => (String::new(), true, "ignored".to_string(), false),
            };
            let mapping = Mapping {
                plex: c.plex.clone(),
                show_id: show_id.clone(),
                method,
                confidence: 1.0,
                manual: true,
                sync_enabled: sync,
                created_at: now_secs(),
                ignored,
                updated_at: Some(now_secs()),
            };
            txn.open_table(MAPPINGS)?
                .insert(key.as_str(), encode(&mapping)?.as_slice())?;
            release_held(txn, c.held, &show_id, ignored, sync)
        })
        .await
    }

    /// Point a mapping at another tracker show (a person's choice) or turn its sync on/off.
    ///
    /// No decision a person can undo drops a play: mapping an ignored show turns its sync on
    /// (unless `sync_enabled` says otherwise) and releases every play journaled as ignored —
    /// from before and after the ignore — into `watched` + `outbox`; turning sync back on
    /// queues the episodes recorded while it was off. Both in this one transaction, and
    /// episodes already exported or already on their way are not sent again.
    pub async fn update_mapping(
        &self,
        key: String,
        show_id: Option<String>,
        sync_enabled: Option<bool>,
    ) -> Result<MappingUpdate> {
        self.write(move |txn| {
            let mut t = txn.open_table(MAPPINGS)?;
            let mut m: Mapping = get_json(&t, &key)?
                .ok_or_else(|| StoreError::NotFound(format!("no mapping {key:?}")))?;
            let was_ignored = m.ignored;
            let was_syncing = m.sync_enabled && !m.ignored;
            if let Some(id) = show_id {
                m.show_id = id;
                m.method = "manual".into();
                m.confidence = 1.0;
                m.manual = true;
                if m.ignored {
                    m.ignored = false;
                    m.sync_enabled = true;
                }
            }
            if let Some(on) = sync_enabled {
                if m.ignored {
                    // Its sync means nothing while it is ignored, and saving it would answer
                    // as if something changed.
                    return Err(StoreError::Invalid(
                        "this show is ignored: choose a tracker show for it first (show_id; `--show` on the command line)".into(),
                    ));
                }
                m.sync_enabled = on;
            }
            m.updated_at = Some(now_secs());
            t.insert(key.as_str(), encode(&m)?.as_slice())?;
            drop(t);
            let (mut released, mut queued) = (0, 0);
            let decided = !m.ignored && !m.show_id.is_empty();
            if decided && (was_ignored || (!was_syncing && m.sync_enabled)) {
                (released, queued) = release_plays(txn, &key, &m.show_id, m.sync_enabled)?;
            }
            Ok(MappingUpdate {
                mapping: m,
                plays_released: released,
                episodes_queued: queued,
            })
        })
        .await
    }
}

/// A decided conflict's held plays (still parked): marked ignored, or recorded as watched
/// under `show_id` (queued unless `sync` is off or the episode was known watched). Returns
/// (plays released, episodes queued).
fn release_held(
    txn: &WriteTransaction,
    held: Vec<u64>,
    show_id: &str,
    ignored: bool,
    sync: bool,
) -> Result<(usize, usize)> {
    let (mut released, mut queued) = (0, 0);
    for id in held {
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
            if record_watched(txn, &entry.play, show_id, sync)? == Applied::Queued {
                queued += 1;
            }
            entry.state = PlayState::Resolved {
                show_id: show_id.to_string(),
            };
            journal = txn.open_table(JOURNAL)?;
        }
        journal.insert(id, encode(&entry)?.as_slice())?;
    }
    Ok((released, queued))
}

/// The plays of show `key` a person's earlier decision held back, now that it maps to
/// `show_id`: those journaled as ignored become resolved (counted in `watched`), and with
/// `sync` every episode of the show not yet exported nor waiting in the outbox, a batch or
/// the dead letter is queued. Returns (plays released, episodes queued).
fn release_plays(
    txn: &WriteTransaction,
    key: &str,
    show_id: &str,
    sync: bool,
) -> Result<(usize, usize)> {
    // The journal is scanned rather than a list kept on the mapping: it is the one record
    // of every play (stores of earlier releases included), and a decision is rare.
    let mut held: Vec<JournalEntry> = Vec::new();
    // Episodes of other tracker shows this show was mapped to before (a remap while its sync
    // was off), by show: what was sent there, or is on its way, stays there.
    let mut elsewhere: std::collections::HashMap<String, std::collections::HashSet<(u32, u32)>> =
        std::collections::HashMap::new();
    for row in txn.open_table(JOURNAL)?.iter()? {
        let (k, v) = row?;
        // A play whose entry cannot be read cannot be released: it is left as it is, and a
        // person's decision for this show (or any other) still goes through.
        let Some(e) = readable::<JournalEntry>("journal", k.value(), v.value()) else {
            continue;
        };
        if e.play.show.key() != key {
            continue;
        }
        let ours = match &e.state {
            PlayState::Ignored => true,
            PlayState::Resolved { show_id: s } if sync && s == show_id => true,
            PlayState::Resolved { show_id: s } if sync => {
                let episode = (e.play.season, e.play.episode);
                let sent = match elsewhere.get(s) {
                    Some(set) => set,
                    None => {
                        let set = sent_or_on_its_way(txn, s)?;
                        elsewhere.entry(s.clone()).or_insert(set)
                    }
                };
                !sent.contains(&episode)
            }
            _ => false,
        };
        if ours {
            held.push(e);
        }
    }
    // The first viewing of an episode is the one its watched date comes from.
    held.sort_by_key(|e| (e.play.viewed_at, e.play.id));
    let mut covered = if sync {
        on_its_way(txn, show_id)?
    } else {
        std::collections::HashSet::new()
    };
    let (mut released, mut queued) = (0, 0);
    for mut e in held {
        let episode = (e.play.season, e.play.episode);
        let moved = matches!(&e.state, PlayState::Resolved { show_id: s } if s != show_id);
        if e.state == PlayState::Ignored || moved {
            released += 1;
            if record_watched(txn, &e.play, show_id, sync)? == Applied::Queued {
                covered.insert(episode);
                queued += 1;
            }
            e.state = PlayState::Resolved {
                show_id: show_id.to_string(),
            };
            txn.open_table(JOURNAL)?
                .insert(e.play.id, encode(&e)?.as_slice())?;
        }
        if !sync || covered.contains(&episode) {
            continue;
        }
        let k = watched_key(show_id, e.play.season, e.play.episode);
        let w: Option<Watched> = get_json(&txn.open_table(WATCHED)?, &k)?;
        match w {
            Some(w) if w.exported_at.is_some() => {}
            Some(_) => {
                queue_export(txn, &e.play, show_id)?;
                queued += 1;
            }
            None => {
                if record_watched(txn, &e.play, show_id, true)? == Applied::Queued {
                    queued += 1;
                }
            }
        }
        covered.insert(episode);
    }
    Ok((released, queued))
}

/// Episodes of `show_id` already waiting for export: in the outbox, a batch or the dead
/// letter (whose retry is a person's `outbox retry`).
fn on_its_way(
    txn: &WriteTransaction,
    show_id: &str,
) -> Result<std::collections::HashSet<(u32, u32)>> {
    let mut out = std::collections::HashSet::new();
    // A row that cannot be read says nothing about its show: skipped (the exporter skips it
    // too), at worst an episode in it is queued once more, which the tracker answers as
    // already watched.
    for row in txn.open_table(OUTBOX)?.iter()? {
        let (k, v) = row?;
        let Some(i) = readable::<OutboxItem>("outbox", k.value(), v.value()) else {
            continue;
        };
        if i.show_id == show_id {
            out.insert((i.season, i.episode));
        }
    }
    for (name, table) in [("batches", BATCHES), ("dead_letter", DEAD)] {
        for row in txn.open_table(table)?.iter()? {
            let (k, v) = row?;
            let Some(b) = readable::<crate::model::Batch>(name, k.value(), v.value()) else {
                continue;
            };
            if b.show_id == show_id {
                out.extend(b.items.iter().map(|i| (i.season, i.episode)));
            }
        }
    }
    Ok(out)
}

/// A row scanned by a decision, decoded; None (logged) when it does not decode.
fn readable<T: serde::de::DeserializeOwned>(
    table: &'static str,
    key: u64,
    bytes: &[u8],
) -> Option<T> {
    match decode(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(table, key, error = %e, "a row that cannot be read is skipped by a mapping decision; it is left as it is");
            None
        }
    }
}

/// Episodes of `show_id` exported already, or waiting in the outbox, a batch or the dead
/// letter.
fn sent_or_on_its_way(
    txn: &WriteTransaction,
    show_id: &str,
) -> Result<std::collections::HashSet<(u32, u32)>> {
    let mut out = on_its_way(txn, show_id)?;
    let prefix = watched_key(show_id, 0, 0);
    let prefix = &prefix[..=show_id.len()];
    for row in txn.open_table(WATCHED)?.range(prefix..)? {
        let (k, v) = row?;
        let Some(rest) = k.value().strip_prefix(prefix) else {
            break;
        };
        let Some(w) = readable::<Watched>("watched", 0, v.value()) else {
            continue;
        };
        if w.exported_at.is_some() {
            if let Some((s, e)) = rest.split_once('\u{1f}') {
                if let (Ok(s), Ok(e)) = (s.parse(), e.parse()) {
                    out.insert((s, e));
                }
            }
        }
    }
    Ok(out)
}

/// The tables a resolution writes, opened once for a batch of plays.
struct ApplyTables<'t> {
    journal: redb::Table<'t, u64, &'static [u8]>,
    pending: redb::Table<'t, u64, i64>,
    mappings: redb::Table<'t, &'static str, &'static [u8]>,
    conflicts: redb::Table<'t, &'static str, &'static [u8]>,
    watch: WatchTables<'t>,
}

/// The tables counting a watched episode and queueing its export. Ingest holds one too (a new
/// play of a mapped show is resolved in its own commit), and shares its `meta` and sequences:
/// a transaction opens a table once.
pub(super) struct WatchTables<'t> {
    watched: redb::Table<'t, &'static str, &'static [u8]>,
    pub(super) meta: redb::Table<'t, &'static str, &'static [u8]>,
    outbox: redb::Table<'t, u64, &'static [u8]>,
    pub(super) seqs: Seqs,
}

impl<'t> WatchTables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Result<Self> {
        Ok(WatchTables {
            watched: txn.open_table(WATCHED)?,
            meta: txn.open_table(META)?,
            outbox: txn.open_table(OUTBOX)?,
            seqs: Seqs::default(),
        })
    }

    /// Write back the sequences advanced (before the job that opened the tables returns).
    pub(super) fn finish(mut self) -> Result<()> {
        self.seqs.flush(&mut self.meta)
    }

    /// A play of a show with a stored mapping goes where the mapping says: ignored, or
    /// resolved to its tracker show (counted watched, queued unless the episode was known
    /// watched or sync is off). The one rule for the resolver's rounds and for ingest.
    pub(super) fn follow_mapping(
        &mut self,
        play: &Play,
        m: &Mapping,
    ) -> Result<(PlayState, Applied)> {
        if m.ignored {
            return Ok((PlayState::Ignored, Applied::Ignored));
        }
        let applied = self.record(play, &m.show_id, m.sync_enabled)?;
        Ok((
            PlayState::Resolved {
                show_id: m.show_id.clone(),
            },
            applied,
        ))
    }

    /// Count the play against the tracker episode and queue an export when the episode was
    /// not known watched before.
    fn record(&mut self, play: &Play, show_id: &str, sync: bool) -> Result<Applied> {
        let k = watched_key(show_id, play.season, play.episode);
        let known = match self.watched.get(k.as_str())? {
            Some(v) => match decode::<Watched>(v.value()) {
                Ok(w) => Some(w),
                Err(e) => {
                    // Left as it is (nothing deleted on a guess) and counted as watched, so
                    // the episode is not queued twice; the play itself is journaled, and the
                    // group (other webhooks, a person's decision) goes through.
                    tracing::warn!(key = %k, error = %e, "a watched record cannot be read: left as it is, the episode is not queued again");
                    return Ok(Applied::AlreadyWatched);
                }
            },
            None => None,
        };
        match known {
            Some(mut w) => {
                w.plays += 1;
                w.first_watched_at = w.first_watched_at.min(play.viewed_at);
                self.watched.insert(k.as_str(), encode(&w)?.as_slice())?;
                Ok(Applied::AlreadyWatched)
            }
            None => {
                self.watched.insert(
                    k.as_str(),
                    encode(&Watched {
                        first_watched_at: play.viewed_at,
                        plays: 1,
                        exported_at: None,
                    })?
                    .as_slice(),
                )?;
                if !sync {
                    return Ok(Applied::AlreadyWatched);
                }
                self.queue_export(play, show_id)?;
                Ok(Applied::Queued)
            }
        }
    }

    /// Put the play's episode in the outbox for `show_id`.
    fn queue_export(&mut self, play: &Play, show_id: &str) -> Result<()> {
        let id = self.seqs.next(&self.meta, "outbox")?;
        let item = OutboxItem {
            play_id: play.id,
            show_id: show_id.to_string(),
            season: play.season,
            episode: play.episode,
            watched_at: play.viewed_at,
            queued_at: now_secs(),
            title: Some(play.show.title.clone()),
            account: Some(
                play.account_name
                    .clone()
                    .unwrap_or_else(|| play.account_id.clone()),
            ),
        };
        self.outbox.insert(id, encode(&item)?.as_slice())?;
        Ok(())
    }
}

impl<'t> ApplyTables<'t> {
    fn finish(self) -> Result<()> {
        self.watch.finish()
    }

    fn open(txn: &'t WriteTransaction) -> Result<Self> {
        Ok(ApplyTables {
            journal: txn.open_table(JOURNAL)?,
            pending: txn.open_table(PENDING)?,
            mappings: txn.open_table(MAPPINGS)?,
            conflicts: txn.open_table(CONFLICTS)?,
            watch: WatchTables::open(txn)?,
        })
    }

    /// Apply the resolver's decision for one play (`Stale` when it is no longer pending).
    fn apply(
        &mut self,
        play_id: u64,
        r: Resolution,
        ledger: &PendingShows,
        delta: &mut PendingDelta,
    ) -> Result<Applied> {
        let mut entry: JournalEntry = match self.journal.get(play_id)? {
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
        let key = entry.play.show.key();
        let current: Option<Mapping> = get_json(&self.mappings, &key)?;
        // The show's earlier plays still waiting (one deferred by a retry is not in this
        // round) follow the same mapping first, in journal order.
        let follows = match (&r, &current) {
            (Resolution::Retry { .. }, _) => None,
            (_, Some(m)) => Some(m),
            (Resolution::Mapped { mapping, .. }, None) => mapping.as_ref(),
            _ => None,
        };
        if let Some(m) = follows {
            for earlier in ledger.waiting(&key) {
                if earlier >= play_id {
                    break;
                }
                take_along(
                    &mut self.journal,
                    &mut self.pending,
                    &mut self.watch,
                    delta,
                    earlier,
                    &key,
                    m,
                )?;
            }
        }
        // A mapping stored since the decision was made (a person's, or the resolver's own for
        // an earlier play of the show) is the newer word: the play follows it.
        let (state, applied) = match (r, &current) {
            (Resolution::Retry { not_before_ms }, _) => {
                self.pending.insert(play_id, not_before_ms)?;
                return Ok(Applied::Deferred);
            }
            (_, Some(m)) => self.watch.follow_mapping(&entry.play, m)?,
            (Resolution::Ignored, None) => (PlayState::Ignored, Applied::Ignored),
            (Resolution::Conflict(mut c), None) => {
                if let Some(mut existing) = get_json::<Conflict>(&self.conflicts, &c.key)? {
                    // The stored conflict is the word: the resolver's copy may be older than
                    // candidates written since (the alternative-titles pass), which it must
                    // not undo. This play only joins it.
                    existing.held.push(play_id);
                    existing.updated_at = existing.updated_at.max(c.updated_at);
                    c = existing;
                } else {
                    c.held = vec![play_id];
                }
                self.conflicts
                    .insert(c.key.as_str(), encode(&c)?.as_slice())?;
                (PlayState::Parked { conflict: c.key }, Applied::Parked)
            }
            (Resolution::Mapped { show_id, mapping }, None) => {
                let sync = match &mapping {
                    Some(m) => {
                        self.mappings.insert(key.as_str(), encode(m)?.as_slice())?;
                        m.sync_enabled
                    }
                    None => true,
                };
                let a = self.watch.record(&entry.play, &show_id, sync)?;
                (PlayState::Resolved { show_id }, a)
            }
        };
        entry.state = state;
        self.pending.remove(play_id)?;
        delta.remove(key, play_id);
        self.journal.insert(play_id, encode(&entry)?.as_slice())?;
        Ok(applied)
    }
}

/// [`WatchTables::record`] for the rare paths (a person's decision) that hold other tables.
fn record_watched(
    txn: &WriteTransaction,
    play: &Play,
    show_id: &str,
    sync: bool,
) -> Result<Applied> {
    let mut t = WatchTables::open(txn)?;
    let applied = t.record(play, show_id, sync);
    t.finish()?;
    applied
}

/// [`WatchTables::queue_export`] for the rare paths.
fn queue_export(txn: &WriteTransaction, play: &Play, show_id: &str) -> Result<()> {
    let mut t = WatchTables::open(txn)?;
    let queued = t.queue_export(play, show_id);
    t.finish()?;
    queued
}

/// Resolve an earlier play of `show_key` that still waits in `pending` by the show's mapping,
/// as the resolver's round would (None when it is not waiting any more, or is not this show's:
/// the ledger only points, the journal says). Ingest and the resolver both call it before a
/// newer play of the show follows the mapping, so the show's episodes reach the outbox in
/// the order they were acknowledged.
pub(super) fn take_along(
    journal: &mut redb::Table<'_, u64, &'static [u8]>,
    pending: &mut redb::Table<'_, u64, i64>,
    watch: &mut WatchTables<'_>,
    delta: &mut PendingDelta,
    play_id: u64,
    show_key: &str,
    m: &Mapping,
) -> Result<Option<Applied>> {
    if pending.get(play_id)?.is_none() {
        return Ok(None);
    }
    let mut entry: JournalEntry = match journal.get(play_id)? {
        Some(v) => decode(v.value())?,
        None => return Ok(None),
    };
    if entry.state != PlayState::Pending || entry.play.show.key() != show_key {
        return Ok(None);
    }
    let (state, applied) = watch.follow_mapping(&entry.play, m)?;
    entry.state = state;
    pending.remove(play_id)?;
    journal.insert(play_id, encode(&entry)?.as_slice())?;
    delta.remove(show_key.to_string(), play_id);
    Ok(Some(applied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ops::Ingested;
    use crate::store::ops::fixtures::{act, play};

    /// The resolver's own mapping of the fixture show to tracker show 42.
    fn resolvers_mapping() -> Mapping {
        Mapping {
            plex: play(0).show,
            show_id: "42".into(),
            method: "guid".into(),
            confidence: 1.0,
            manual: false,
            sync_enabled: true,
            created_at: 0,
            ignored: false,
            updated_at: None,
        }
    }

    /// A play the resolver deferred (a retry time in the future keeps it out of the round)
    /// still goes to the outbox before the show's later plays once the show is mapped.
    #[tokio::test]
    async fn a_deferred_play_goes_before_the_later_ones_when_its_show_is_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        for e in 1..=2 {
            let mut p = play(1000 * i64::from(e));
            p.episode = e;
            s.ingest_play(p, act(), 300).await.unwrap();
        }
        let later = Resolution::Retry {
            not_before_ms: i64::MAX,
        };
        assert_eq!(
            s.apply_resolution(1, later).await.unwrap(),
            Applied::Deferred
        );
        let due: Vec<u64> = s
            .due_pending(crate::model::now_millis(), 10)
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(due, vec![2]);
        let mapping = resolvers_mapping();
        let mapped = Resolution::Mapped {
            show_id: "42".into(),
            mapping: Some(mapping),
        };
        s.apply_resolution(2, mapped).await.unwrap();
        let mut p = play(3000);
        p.episode = 3;
        assert!(matches!(
            s.ingest_play(p, act(), 300).await.unwrap(),
            Ingested::Resolved { .. }
        ));
        assert_eq!(s.counts().unwrap().pending_resolution, 0);
        s.form_batches(100).await.unwrap();
        let batches = s.due_batches(i64::MAX, 10).unwrap();
        let eps: Vec<u32> = batches
            .iter()
            .flat_map(|b| b.items.iter().map(|i| i.episode))
            .collect();
        assert_eq!(eps, vec![1, 2, 3], "acknowledgement order");
    }

    /// A decision applied after a mapping was stored for its show (a person's, or one an
    /// earlier play of the same write created): the mapping wins.
    #[tokio::test]
    async fn a_late_decision_follows_the_mapping_stored_since() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        // Four plays pending before any mapping is stored (the last one is decided at the end).
        for (i, at) in [1000, 5000, 9000, 20_000].into_iter().enumerate() {
            let mut p = play(at);
            p.episode = if i == 3 { 9 } else { i as u32 + 1 };
            s.ingest_play(p, act(), 300).await.unwrap();
        }
        let conflict = Conflict {
            key: "srv/10".into(),
            plex: play(0).show,
            query: Default::default(),
            candidates: vec![],
            held: vec![],
            created_at: 0,
            updated_at: 0,
            reason: "test".into(),
            tracker: None,
        };
        // The first play maps the show (the resolver's own mapping).
        let mapping = resolvers_mapping();
        let applied = s
            .apply_resolutions(vec![
                (
                    1,
                    Resolution::Mapped {
                        show_id: "42".into(),
                        mapping: Some(mapping),
                    },
                ),
                // Decided before that mapping was stored: a conflict, and "ignored".
                (2, Resolution::Conflict(conflict)),
                (3, Resolution::Ignored),
            ])
            .await
            .unwrap();
        assert_eq!(applied, vec![Applied::Queued; 3]);
        assert!(s.conflict("srv/10").unwrap().is_none());
        assert_eq!(s.due_pending(i64::MAX, 10).unwrap().len(), 1);
        // A person's "ignore" since: a play decided "mapped" before it is held as ignored.
        let mut m = s.mapping("srv/10").unwrap().unwrap();
        m.ignored = true;
        crate::store::ops::fixtures::store_mapping(&s, m).await;
        let decided = Resolution::Mapped {
            show_id: "42".into(),
            mapping: None,
        };
        assert_eq!(
            s.apply_resolution(4, decided).await.unwrap(),
            Applied::Ignored
        );
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
            tracker: None,
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
                    sync: true,
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
            .unwrap()
            .mapping;
        assert!(!m.sync_enabled);
    }

    /// Unreadable rows elsewhere in the journal and the export tables (a corrupt or foreign
    /// value) do not stop a person's decision: the show's plays are released all the same.
    #[tokio::test]
    async fn a_decision_goes_through_beside_rows_that_cannot_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        s.ingest_play(play(1000), act(), 300).await.unwrap();
        assert_eq!(
            s.apply_resolution(1, Resolution::Conflict(conflict(vec![])))
                .await
                .unwrap(),
            Applied::Parked
        );
        s.write(|txn| {
            // The episode's own watched record under the show it is mapped to below.
            txn.open_table(WATCHED)?
                .insert(watched_key("42", 1, 2).as_str(), b"{".as_slice())?;
            txn.open_table(JOURNAL)?
                .insert(900, b"{not json".as_slice())?;
            txn.open_table(OUTBOX)?.insert(901, b"[".as_slice())?;
            txn.open_table(BATCHES)?.insert(902, b"7".as_slice())?;
            txn.open_table(DEAD)?.insert(903, b"".as_slice())?;
            Ok(())
        })
        .await
        .unwrap();
        let (released, queued) = s
            .resolve_conflict(
                "srv/10".into(),
                ConflictDecision::Select {
                    show_id: "42".into(),
                    method: "manual".into(),
                    sync: true,
                },
            )
            .await
            .unwrap();
        // The play is released; its episode counts as watched (its record is left as it is),
        // so it is not queued on a guess.
        assert_eq!((released, queued), (1, 0));
        // Sync off and on again (the same scans): still fine.
        s.update_mapping("srv/10".into(), None, Some(false))
            .await
            .unwrap();
        let u = s
            .update_mapping("srv/10".into(), Some("43".into()), Some(true))
            .await
            .unwrap();
        assert!(u.mapping.sync_enabled && u.mapping.show_id == "43");
    }

    fn conflict(held: Vec<u64>) -> Conflict {
        Conflict {
            key: "srv/10".into(),
            plex: play(0).show,
            query: Default::default(),
            candidates: vec![],
            held,
            created_at: 0,
            updated_at: 0,
            reason: "test".into(),
            tracker: None,
        }
    }

    fn episode(viewed_at: i64, e: u32) -> crate::model::Play {
        let mut p = play(viewed_at);
        p.episode = e;
        p
    }

    /// A play joining an open conflict keeps the candidates written since the resolver read
    /// it (the alternative-titles pass), rather than the resolver's older copy.
    #[tokio::test]
    async fn a_play_joining_a_conflict_keeps_its_newer_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        s.ingest_play(episode(1000, 1), act(), 300).await.unwrap();
        s.ingest_play(episode(2000, 2), act(), 300).await.unwrap();
        let cand = |id: &str| plexsync_plugin_api::Candidate {
            show_id: id.into(),
            score: 0.5,
            method: "title_year".into(),
        };
        let mut old = conflict(vec![]);
        old.candidates = vec![cand("old")];
        s.apply_resolution(1, Resolution::Conflict(old.clone()))
            .await
            .unwrap();
        assert!(
            s.set_conflict_candidates("srv/10".into(), "t".into(), vec![cand("new")])
                .await
                .unwrap()
        );
        s.apply_resolution(2, Resolution::Conflict(old))
            .await
            .unwrap();
        let c = s.conflict("srv/10").unwrap().unwrap();
        assert_eq!(c.held, vec![1, 2]);
        assert_eq!(c.candidates.len(), 1);
        assert_eq!(c.candidates[0].show_id, "new");
    }

    /// A conflict matched again against another tracker: its candidates are replaced only
    /// while it is still the old tracker's, it is mapped (held plays queued) only while open,
    /// and a person's decision meanwhile is left alone.
    #[tokio::test]
    async fn a_conflict_of_another_tracker_is_matched_again_unless_decided() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        s.ingest_play(episode(1000, 1), act(), 300).await.unwrap();
        s.apply_resolution(1, Resolution::Conflict(conflict(vec![])))
            .await
            .unwrap();
        // An earlier release's conflict names no tracker: tagged once, then left.
        assert_eq!(s.tag_conflicts("a".into()).await.unwrap(), 1);
        assert_eq!(s.tag_conflicts("b".into()).await.unwrap(), 0);
        let cand = |id: &str| plexsync_plugin_api::Candidate {
            show_id: id.into(),
            score: 0.5,
            method: "title_year".into(),
        };
        // The enrichment of tracker B does not merge into A's candidates.
        assert!(
            !s.set_conflict_candidates("srv/10".into(), "b".into(), vec![cand("b1")])
                .await
                .unwrap()
        );
        // Matched again by a pass that read it as another tracker's: not written.
        assert!(
            !s.rematch_conflict(
                "srv/10".into(),
                Some("z".into()),
                "b".into(),
                vec![cand("b1")],
                "r".into()
            )
            .await
            .unwrap()
        );
        assert!(
            s.rematch_conflict(
                "srv/10".into(),
                Some("a".into()),
                "b".into(),
                vec![cand("b1")],
                "r".into()
            )
            .await
            .unwrap()
        );
        let c = s.conflict("srv/10").unwrap().unwrap();
        assert_eq!((c.tracker.as_deref(), c.candidates.len()), (Some("b"), 1));
        assert_eq!(c.candidates[0].show_id, "b1");
        // Mapped on C, as read on B: the held play is recorded and queued.
        let mut m = resolvers_mapping();
        m.show_id = "c1".into();
        assert_eq!(
            s.map_conflict("srv/10".into(), Some("a".into()), m.clone())
                .await
                .unwrap(),
            None,
            "read before B's pass: stale"
        );
        assert_eq!(
            s.map_conflict("srv/10".into(), Some("b".into()), m.clone())
                .await
                .unwrap(),
            Some((1, 1))
        );
        assert!(s.conflict("srv/10").unwrap().is_none());
        assert!(!s.mapping("srv/10").unwrap().unwrap().manual);

        // A person decided another show's conflict before the pass wrote: left alone.
        let mut p = episode(2000, 1);
        p.show.rating_key = Some("11".into());
        s.ingest_play(p.clone(), act(), 300).await.unwrap();
        let mut other = conflict(vec![]);
        other.key = p.show.key();
        other.plex = p.show.clone();
        other.tracker = Some("a".into());
        s.apply_resolution(2, Resolution::Conflict(other.clone()))
            .await
            .unwrap();
        s.resolve_conflict(other.key.clone(), ConflictDecision::Ignore)
            .await
            .unwrap();
        assert_eq!(
            s.map_conflict(other.key.clone(), Some("a".into()), m)
                .await
                .unwrap(),
            None
        );
        assert!(
            !s.rematch_conflict(
                other.key.clone(),
                Some("a".into()),
                "b".into(),
                vec![],
                "r".into()
            )
            .await
            .unwrap()
        );
        assert!(s.mapping(&other.key).unwrap().unwrap().ignored);
    }

    /// Deciding a conflict with sync off (`mappings set ID --show X --disable`) makes the
    /// mapping with sync off in the same write: its held plays are recorded, not queued.
    #[tokio::test]
    async fn a_conflict_decided_with_sync_off_queues_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        s.ingest_play(episode(1000, 1), act(), 300).await.unwrap();
        s.ingest_play(episode(2000, 2), act(), 300).await.unwrap();
        for id in [1, 2] {
            s.apply_resolution(id, Resolution::Conflict(conflict(vec![])))
                .await
                .unwrap();
        }
        let (released, queued) = s
            .resolve_conflict(
                "srv/10".into(),
                ConflictDecision::Select {
                    show_id: "42".into(),
                    method: "manual".into(),
                    sync: false,
                },
            )
            .await
            .unwrap();
        assert_eq!((released, queued), (2, 0));
        assert!(!s.mapping("srv/10").unwrap().unwrap().sync_enabled);
        assert_eq!(s.form_batches(100).await.unwrap(), 0, "nothing queued");
        // Turned on later, both go.
        let u = s
            .update_mapping("srv/10".into(), None, Some(true))
            .await
            .unwrap();
        assert_eq!(u.episodes_queued, 2);
    }

    /// Remapped to another tracker show while its sync was off: what was watched meanwhile
    /// (recorded under the old show, never sent) goes to the new show once sync is on, and
    /// what was sent to the old one stays there.
    #[tokio::test]
    async fn a_remap_while_sync_is_off_keeps_what_was_watched_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        s.ingest_play(episode(1000, 1), act(), 300).await.unwrap();
        s.apply_resolution(1, Resolution::Conflict(conflict(vec![])))
            .await
            .unwrap();
        s.resolve_conflict(
            "srv/10".into(),
            ConflictDecision::Select {
                show_id: "42".into(),
                method: "manual".into(),
                sync: true,
            },
        )
        .await
        .unwrap();
        // E1 goes to 42 and is delivered.
        assert_eq!(s.form_batches(100).await.unwrap(), 1);
        let b = s
            .next_due_batches(i64::MAX, 10, &Default::default())
            .unwrap();
        s.finish_batch(
            b[0].id,
            crate::store::ops::BatchOutcome::Delivered {
                marked: 1,
                already: 0,
            },
            10,
            1.0,
        )
        .await
        .unwrap();
        s.update_mapping("srv/10".into(), None, Some(false))
            .await
            .unwrap();
        // E2 watched while sync is off: recorded under 42, not sent.
        s.ingest_play(episode(2000, 2), act(), 300).await.unwrap();
        let u = s
            .update_mapping("srv/10".into(), Some("43".into()), None)
            .await
            .unwrap();
        assert_eq!(u.episodes_queued, 0, "sync is still off");
        let u = s
            .update_mapping("srv/10".into(), None, Some(true))
            .await
            .unwrap();
        assert_eq!(
            u.episodes_queued, 1,
            "E2 goes to the new show, E1 stays with 42"
        );
        assert_eq!(s.form_batches(100).await.unwrap(), 1);
        let b = s
            .next_due_batches(i64::MAX, 10, &Default::default())
            .unwrap();
        assert_eq!(b[0].show_id, "43");
        assert_eq!(
            b[0].items.iter().map(|i| i.episode).collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(
            s.journal_entry(2).unwrap().unwrap().state,
            PlayState::Resolved {
                show_id: "43".into()
            }
        );
    }

    /// Sync on or off means nothing for an ignored show: refused, and nothing is stored.
    #[tokio::test]
    async fn sync_on_an_ignored_show_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        s.ingest_play(episode(1000, 1), act(), 300).await.unwrap();
        s.apply_resolution(1, Resolution::Conflict(conflict(vec![])))
            .await
            .unwrap();
        s.resolve_conflict("srv/10".into(), ConflictDecision::Ignore)
            .await
            .unwrap();
        let e = s
            .update_mapping("srv/10".into(), None, Some(true))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, StoreError::Invalid(m) if m.contains("show_id")),
            "{e}"
        );
        let m = s.mapping("srv/10").unwrap().unwrap();
        assert!(m.ignored && !m.sync_enabled);
    }

    #[tokio::test]
    async fn mapping_an_ignored_show_releases_every_held_play() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        s.ingest_play(episode(1000, 1), act(), 300).await.unwrap();
        s.apply_resolution(1, Resolution::Conflict(conflict(vec![])))
            .await
            .unwrap();
        let (released, _) = s
            .resolve_conflict("srv/10".into(), ConflictDecision::Ignore)
            .await
            .unwrap();
        assert_eq!(released, 1);
        // Plays after the ignore are journaled and held too: the stored mapping says
        // "ignored", so ingest resolves them in the same commit.
        for (id, p) in [(2, episode(2000, 2)), (3, episode(3000, 1))] {
            assert_eq!(
                s.ingest_play(p, act(), 300).await.unwrap(),
                Ingested::Resolved { id, queued: false }
            );
            assert_eq!(
                s.journal_entry(id).unwrap().unwrap().state,
                PlayState::Ignored
            );
        }
        let held = s
            .ignored_plays(&["srv/10".to_string()].into_iter().collect())
            .unwrap();
        assert_eq!(held["srv/10"].count, 3);
        assert_eq!(held["srv/10"].first, Some(1000));
        assert_eq!(held["srv/10"].last, Some(3000));

        let u = s
            .update_mapping("srv/10".into(), Some("42".into()), None)
            .await
            .unwrap();
        assert!(u.mapping.sync_enabled && !u.mapping.ignored);
        // Three plays, two episodes: E1 (twice) and E2 go out once each.
        assert_eq!((u.plays_released, u.episodes_queued), (3, 2));
        assert!(
            s.ignored_plays(&["srv/10".to_string()].into_iter().collect())
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.watched("42", 1, 1).unwrap().unwrap().first_watched_at,
            1000
        );
        assert_eq!(s.watched("42", 1, 1).unwrap().unwrap().plays, 2);
        assert_eq!(s.form_batches(100).await.unwrap(), 1);
        // Doing it again releases nothing and queues nothing twice.
        let u = s
            .update_mapping("srv/10".into(), Some("42".into()), Some(true))
            .await
            .unwrap();
        assert_eq!((u.plays_released, u.episodes_queued), (0, 0));
    }

    #[tokio::test]
    async fn turning_sync_back_on_sends_what_was_watched_while_off() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let mapping = Mapping {
            plex: play(0).show,
            show_id: "42".into(),
            method: "title".into(),
            confidence: 1.0,
            manual: false,
            sync_enabled: true,
            created_at: 0,
            ignored: false,
            updated_at: None,
        };
        s.ingest_play(episode(1000, 1), act(), 300).await.unwrap();
        let mapped = |m: Option<Mapping>| Resolution::Mapped {
            show_id: "42".into(),
            mapping: m,
        };
        assert_eq!(
            s.apply_resolution(1, mapped(Some(mapping))).await.unwrap(),
            Applied::Queued
        );
        s.update_mapping("srv/10".into(), None, Some(false))
            .await
            .unwrap();
        s.ingest_play(episode(2000, 2), act(), 300).await.unwrap();
        s.ingest_play(episode(2500, 2), act(), 300).await.unwrap();
        s.apply_resolution(2, mapped(None)).await.unwrap();
        s.apply_resolution(3, mapped(None)).await.unwrap();
        assert!(s.watched("42", 1, 2).unwrap().is_some());
        let u = s
            .update_mapping("srv/10".into(), None, Some(true))
            .await
            .unwrap();
        // E1 is already in the outbox; only E2 (watched while off) is queued, once.
        assert_eq!((u.plays_released, u.episodes_queued), (0, 1));
        assert_eq!(s.counts().unwrap().outbox_items, 2);
    }
}
