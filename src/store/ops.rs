//! The store's domain operations, each one atomic step of the pipeline run in a group commit,
//! live by concern: `ingest.rs` (journal, dedupe, history keys, poll cursors), `decisions.rs`
//! (pending plays, resolutions, conflicts, mappings), `outbox.rs` (batches, dead letters,
//! retry), `views.rs` (counts, activity, read-only lookups), `secrets.rs` (sealed secrets) and
//! `kv.rs` (plugin cache, show info, catalogue).
//!
//! This module is the path the rest of the daemon names their types by, and holds the helpers
//! they share: JSON rows (`get_json`, `all_json`), activity rows and watched-episode keys.
//! The table definitions, `encode`/`decode` and `next_seq` are in the store's `mod.rs`.

pub use super::decisions::{Applied, ConflictDecision, MappingUpdate, PlayTimes, Resolution};
pub use super::ingest::{BatchCounts, Cursor, Ingested, MappedPlays};
pub use super::outbox::{BatchInfo, BatchOutcome, FormPlan, OutboxProbe};
pub use super::views::{ActivityFilter, Counts, DayStats, ShowSync};

use redb::{ReadableTable, WriteTransaction};

use super::*;
use crate::model::Activity;

pub(super) fn watched_key(show_id: &str, season: u32, episode: u32) -> String {
    let mut k = String::with_capacity(show_id.len() + 16);
    k.push_str(show_id);
    k.push('\u{1f}');
    crate::model::push_decimal(&mut k, season, 6);
    k.push('\u{1f}');
    crate::model::push_decimal(&mut k, episode, 6);
    k
}

pub(super) fn put_activity(txn: &WriteTransaction, mut a: Activity) -> Result<u64> {
    let id = next_seq(txn, "activity")?;
    a.id = id;
    txn.open_table(ACTIVITY)?
        .insert(id, encode(&a)?.as_slice())?;
    Ok(id)
}

pub(super) fn get_json<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>> {
    match table.get(key)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

pub(super) fn all_json<T: serde::de::DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for row in t.iter()? {
        out.push(decode(row?.1.value())?);
    }
    Ok(out)
}

/// Rows the unit tests beside each operation share.
#[cfg(test)]
pub(super) mod fixtures {
    use crate::model::{Activity, ActivityStatus, Play, PlexShow};
    use plexsync_plugin_api::PlaySource;

    pub(crate) fn play(viewed_at: i64) -> Play {
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

    pub(crate) fn act() -> Activity {
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
            title: None,
            tracker_title: None,
            attempts: None,
            batch_id: None,
            sources: Vec::new(),
        }
    }

    /// Store `m` as the mapping of its show, as a person's decision or the resolver would.
    pub(crate) async fn store_mapping(s: &super::Store, m: crate::model::Mapping) {
        s.write(move |txn| {
            txn.open_table(super::MAPPINGS)?
                .insert(m.plex.key().as_str(), super::encode(&m)?.as_slice())?;
            Ok(())
        })
        .await
        .unwrap();
    }

    /// Make the dedupe row of `p`'s viewing unreadable, so journaling `p` is a storage error.
    pub(crate) async fn corrupt_dedupe_row(s: &super::Store, p: &Play) {
        let key = p.dedupe_key();
        s.write(move |txn| {
            txn.open_table(super::DEDUPE)?
                .insert(key.as_str(), b"not json".as_slice())?;
            Ok(())
        })
        .await
        .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::watched_key;
    use crate::store::ops::fixtures::play;

    /// The keys are stored: built by hand, they must stay exactly what `format!` built.
    #[test]
    fn store_keys_are_the_ones_format_built() {
        for (s, e) in [
            (0, 0),
            (1, 9),
            (10, 123_456),
            (7, 1_234_567),
            (u32::MAX, 42),
        ] {
            assert_eq!(
                watched_key("show-1", s, e),
                format!("show-1\u{1f}{s:06}\u{1f}{e:06}")
            );
            let mut p = play(1);
            (p.season, p.episode) = (s, e);
            assert_eq!(p.dedupe_key(), format!("1\u{1f}srv/10\u{1f}{s}\u{1f}{e}"));
            p.account_key = "acct".into();
            p.show.server = None;
            assert_eq!(p.dedupe_key(), format!("acct\u{1f}-/10\u{1f}{s}\u{1f}{e}"));
        }
    }
}
