//! The webhook source: Plex's `media.scrobble` posts → journaled plays. [`multipart`] extracts
//! the `payload` part from a streamed multipart/form-data body and [`payload`] models the JSON
//! (both pure, no I/O); [`ingest`] turns a payload into a [`Play`], applies the account
//! selection and journals it with its activity row. Receiving the request (secret, limits,
//! body, status codes) is [`crate::http`]'s.

pub mod multipart;
pub mod payload;

use std::net::IpAddr;
use std::time::Instant;

use crate::model::{Activity, ActivityStatus, Play, PlexShow, now_millis, now_secs};
use crate::state::Shared;
use crate::store::ops::Ingested;

/// What one webhook request is, for its activity row; filled in as the payload is read.
pub struct WebhookLog {
    started: Instant,
    client: Option<IpAddr>,
    pub event: Option<String>,
    account: Option<String>,
    show: Option<String>,
    season: Option<u32>,
    episode: Option<u32>,
}

impl WebhookLog {
    pub fn new(started: Instant, client: Option<IpAddr>) -> Self {
        Self {
            started,
            client,
            event: None,
            account: None,
            show: None,
            season: None,
            episode: None,
        }
    }

    pub fn row(&self, status: ActivityStatus, action: String, error: Option<String>) -> Activity {
        Activity {
            id: 0,
            at: now_millis(),
            source: "webhook".into(),
            event: self.event.clone(),
            account: self.account.clone(),
            show: self.show.clone(),
            season: self.season,
            episode: self.episode,
            status,
            action,
            error,
            duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            play_id: None,
            client: self.client.map(|c| c.to_string()),
            title: self.show.clone(),
            tracker_title: None,
            attempts: None,
            batch_id: None,
            sources: Vec::new(),
        }
    }
}

/// What became of an accepted payload.
#[derive(Debug)]
pub enum Outcome {
    /// A new play, durably journaled.
    Journaled(u64),
    /// The same viewing was already journaled (by a webhook or the history poll).
    Duplicate(u64),
    /// Not a watched episode (another event or media type); logged as ignored.
    Ignored,
    /// An account `[plex] accounts` does not sync; logged as ignored.
    NotSynced,
    /// The store could not commit the play: nothing was acknowledged.
    StoreFailed(String),
}

/// Why a payload was refused before anything was journaled.
#[derive(Debug)]
pub enum Refused {
    /// Malformed or incomplete payload (the reason names the field).
    Payload(String),
    /// The activity row of an ignored payload could not be stored.
    Store(String),
}

/// Parse, classify and journal one webhook payload.
pub async fn ingest(
    shared: &Shared,
    payload_json: &[u8],
    log: &mut WebhookLog,
) -> Result<Outcome, Refused> {
    let p = payload::parse_payload(payload_json).map_err(|e| Refused::Payload(e.to_string()))?;
    log.event = Some(p.event.clone());
    log.account = p
        .account
        .as_ref()
        .and_then(|a| a.title.as_deref())
        .map(str::to_owned);
    let ep = payload::to_play(&p).map_err(|e| Refused::Payload(e.to_string()))?;
    let Some(ep) = ep else {
        log.show = p
            .metadata
            .as_ref()
            .and_then(|m| m.grandparent_title.as_deref().or(m.title.as_deref()))
            .map(str::to_owned);
        let row = log.row(ActivityStatus::Ignored, payload::ignored_because(&p), None);
        record_ignored(shared, row).await?;
        return Ok(Outcome::Ignored);
    };
    log.show = Some(ep.show_title.clone());
    log.season = Some(ep.season);
    log.episode = Some(ep.episode);
    let cfg = shared.config();
    let now = now_secs();
    let play = Play {
        id: 0,
        source: plexsync_plugin_api::PlaySource::Webhook,
        account_id: ep.account_id.clone(),
        account_key: shared
            .accounts()
            .webhook_key(&ep.account_id, ep.account_title.as_deref()),
        account_name: ep.account_title.clone(),
        show: PlexShow {
            server: ep.server_uuid.clone(),
            rating_key: ep.show_rating_key.clone(),
            title: ep.show_title.clone(),
            // The payload's `year` is the episode's; the show's first-air year comes from Plex.
            year: None,
            guid: ep.show_guid.clone(),
            episode_guid: ep.episode_guid.clone(),
        },
        season: ep.season,
        episode: ep.episode,
        episode_rating_key: ep.episode_rating_key.clone(),
        viewed_at: ep.viewed_at.unwrap_or(now),
        received_at: now,
        history_key: None,
    };
    if !shared
        .accounts()
        .is_selected(&play.account_key, &cfg.plex.accounts)
    {
        let who = play
            .account_name
            .clone()
            .unwrap_or_else(|| play.account_id.clone());
        let row = log.row(
            ActivityStatus::Ignored,
            format!("ignored: account {who} is not synced ([plex] accounts)"),
            None,
        );
        record_ignored(shared, row).await?;
        return Ok(Outcome::NotSynced);
    }
    let row = log.row(ActivityStatus::Success, String::new(), None);
    let window = cfg.matching.dedupe_window.as_secs() as i64;
    Ok(match shared.store.ingest_play(play, row, window).await {
        Ok(answer @ (Ingested::New(id) | Ingested::Resolved { id, .. })) => {
            tracing::info!(play_id = id, show = %ep.show_title, rating_key = ep.show_rating_key.as_deref().unwrap_or(""), season = ep.season, episode = ep.episode, "webhook play journaled");
            match answer {
                Ingested::Resolved { queued: true, .. } => shared.wake.export.notify_one(),
                Ingested::Resolved { queued: false, .. } => {}
                _ => shared.wake.resolve.notify_one(),
            }
            shared.board.metrics.webhook(ActivityStatus::Success);
            shared
                .board
                .metrics
                .plays(plexsync_plugin_api::PlaySource::Webhook, 1);
            Outcome::Journaled(id)
        }
        Ok(Ingested::Duplicate(id) | Ingested::AlreadySeen(id)) => {
            tracing::info!(play_id = id, show = %ep.show_title, season = ep.season, episode = ep.episode, "duplicate webhook");
            shared.board.metrics.webhook(ActivityStatus::Duplicate);
            Outcome::Duplicate(id)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot journal a webhook play");
            Outcome::StoreFailed(e.to_string())
        }
    })
}

async fn record_ignored(shared: &Shared, row: Activity) -> Result<(), Refused> {
    shared
        .store
        .record_activity(row)
        .await
        .map_err(|e| Refused::Store(e.to_string()))?;
    shared.board.metrics.webhook(ActivityStatus::Ignored);
    Ok(())
}
