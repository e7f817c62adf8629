//! Where plays come from. Each source turns what Plex says into [`crate::model::Play`]s and
//! journals them through the one ingest path of the store (`ingest_play`, `ingest_batch`):
//! webhooks (parsed here, received by [`crate::http`]), the watch-history poll and backfill
//! ([`history`]), and the library's watched state (the poller's scan and `plexsync sync`,
//! [`library`]), and Plex's notification websocket ([`live`]). [`accounts`] keeps the server's
//! account list that tells whose play a webhook is. Everything after the journal is
//! [`crate::pipeline`].

pub mod accounts;
pub mod history;
pub mod library;
pub mod live;
pub mod webhook;
