//! The server's account list (`GET /accounts`), kept whether or not anything polls.
//!
//! A webhook names a shared user by plex.tv id and title; only this list tells it apart from the
//! owner and lets `[plex] accounts` decide ([`crate::accounts`]). Until a first read succeeds,
//! the selection keeps every account it cannot place (an acknowledged play is not dropped on a
//! guess), so the list must not wait for a poll: with `[poll] enabled = false` none ever runs.
//! [`accounts_task`] reads it at start, again at once when the Plex token or URL changes
//! (`Wakeups::accounts`: a new secret, a reload), and every [`REFRESH`]. A failed read keeps
//! the last list and is retried with backoff ([`RETRY_FIRST`], doubling up to [`RETRY_MAX`]).
//! Every reader of the list — this task, the poll, backfill, the watched-state sync — goes
//! through [`refresh_accounts`], which remembers it in memory and in the store.

use std::sync::Arc;
use std::time::Duration;

use crate::accounts::{Account, AccountMap};
use crate::model::now_secs;
use crate::plex::{PlexClient, PlexError};
use crate::state::{Shared, TokenWitness};

/// How often the list is read again while nothing asks sooner (accounts change rarely).
pub const REFRESH: Duration = Duration::from_secs(6 * 3600);
/// The first wait after a failed read; it doubles with each failure in a row (with jitter).
pub const RETRY_FIRST: Duration = Duration::from_secs(2);
/// The longest wait between two failed reads.
pub const RETRY_MAX: Duration = Duration::from_secs(600);

/// Who is on the server: read `/accounts` and remember it (in memory, and in the store for the
/// next start) for webhooks, the poll and backfill.
pub async fn refresh_accounts(
    shared: &Shared,
    client: &PlexClient,
) -> Result<AccountMap, PlexError> {
    let accounts = client.accounts().await?;
    let map = AccountMap {
        accounts: accounts
            .into_iter()
            .map(|a| Account {
                id: a.id,
                name: a.name,
            })
            .collect(),
        fetched_at: now_secs(),
        server: Some(client.base().to_string()),
    };
    shared.set_accounts(map.clone());
    Ok(map)
}

/// Keep the account list fresh for as long as the daemon runs (see the module's doc). A
/// failure is logged and retried; nothing here ends the task but the shutdown.
pub async fn accounts_task(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let client = shared.plex();
        let read = tokio::select! {
            r = refresh_accounts(&shared, &client) => r,
            _ = shutdown.changed() => break,
        };
        let wait = match read {
            Ok(map) => {
                // The list needs the token: it is good (a rejection this task or another
                // noted is over, and the readers it paused go on; other Plex errors are the
                // poll's or the resolver's to clear).
                // Only the configured server's answer says anything of its token (a read
                // under way when a reload named another server is not).
                if client.base() == shared.plex().base() {
                    shared.note_plex_token_ok(TokenWitness::Accounts);
                    shared.note_accounts_error(None);
                }
                let people = map.accounts.iter().filter(|a| a.id != 0).count();
                if failures > 0 {
                    tracing::info!(
                        accounts = people,
                        failed_before = failures,
                        "read the Plex server's accounts after failures"
                    );
                } else {
                    tracing::info!(accounts = people, "read the Plex server's accounts");
                }
                failures = 0;
                REFRESH
            }
            Err(e) => {
                // A rejected token is health's to show at once, also where nothing polls (a
                // webhook-only setup would otherwise learn of it only from a play that waits).
                let current = client.base() == shared.plex().base();
                if !current {
                    // The server before a reload: nothing of the configured one.
                } else if matches!(e, PlexError::Unauthorized { .. }) {
                    shared.note_plex_error(&e);
                    shared.note_accounts_error(None);
                } else {
                    // Health's to show too: with polling off, nothing else reads Plex.
                    shared.note_accounts_error(Some(e.to_string()));
                }
                failures = failures.saturating_add(1);
                let d = crate::pipeline::backoff(failures, RETRY_FIRST, RETRY_MAX);
                let retry_in_ms = d.as_millis() as u64;
                if shared.accounts().is_known() {
                    tracing::warn!(
                        error = %e,
                        attempt = failures,
                        retry_in_ms,
                        "cannot read the Plex server's accounts; webhooks go on with the list read before"
                    );
                } else {
                    tracing::warn!(
                        error = %e,
                        attempt = failures,
                        retry_in_ms,
                        "cannot read the Plex server's accounts; until it is read, webhooks of accounts plexsync cannot place are synced"
                    );
                }
                d
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.wake.accounts.notified() => {
                // Another token or server: read at once, and a fresh run of retries.
                failures = 0;
            }
            _ = shutdown.changed() => break,
        }
    }
}
