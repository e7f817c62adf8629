//! Health: the one place that decides what needs a person's attention. [`evaluate`] is a pure
//! function of what the daemon knows (the status board's [`RuntimeStatus`], the store's
//! counts, which secrets are set, a few settings) and lists the conditions that hold now;
//! [`Clock`] (kept in the status board) remembers when each condition was first seen, so
//! `since` does not move on every poll; [`compute`] puts both together for `/api/status`.
//! The page's banner, its dot and `plexsync status` (and its exit code) all read this list.

use std::collections::HashMap;
use std::time::Duration;

use plexsync_plugin_api::PluginError;
use serde::{Deserialize, Serialize};

use crate::model::PollFailure;
use crate::state::{RuntimeStatus, Shared};
use crate::store::ops::Counts;

/// How bad a condition is. Ordered worst first (`Error < Warning < Info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Plays stop flowing (or the daemon is down): `plexsync status` exits 2.
    Error,
    /// Something degrades or waits for a person, but plays are not lost.
    Warning,
    Info,
}

/// What a condition is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Daemon,
    Plex,
    Tracker,
    Exports,
    Conflicts,
    /// Plays waiting for the matcher chain.
    Matching,
    Store,
    Config,
}

/// One entry of `/api/status`'s `health` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthItem {
    pub component: Component,
    pub severity: Severity,
    pub message: String,
    /// When the condition began (unix seconds).
    pub since: i64,
    /// What to do about it, often a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

pub use crate::model::TrackerErrorKind;

/// Classify a tracker plugin's error (see [`TrackerErrorKind::of`]).
pub fn classify_tracker(e: &PluginError) -> TrackerErrorKind {
    TrackerErrorKind::of(e)
}

pub const TRACKER_KEY_HINT: &str = "store the key: plexsync secret set tracker-key";
pub const PLEX_TOKEN_HINT: &str = "store a valid token: plexsync secret set plex-token";

/// A tracker error in words a person can act on (activity rows, dead letters).
pub fn tracker_error_text(e: &PluginError) -> String {
    match classify_tracker(e) {
        TrackerErrorKind::Unauthorized => {
            "the tracker refused the key (401): store one with `plexsync secret set tracker-key`"
                .into()
        }
        TrackerErrorKind::Forbidden => {
            "the tracker refused the key (403): it may not do this; store another with `plexsync secret set tracker-key`"
                .into()
        }
        _ => e.to_string(),
    }
}

/// Everything [`evaluate`] looks at.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub now: i64,
    /// A daemon serves this state (false: the CLI answered from the store).
    pub running: bool,
    pub uptime_secs: u64,
    pub runtime: &'a RuntimeStatus,
    /// The store's counts, or why they could not be read.
    pub counts: Result<&'a Counts, String>,
    pub plex_token_set: bool,
    /// Whether the configured exporter may use a `tracker-key`.
    pub tracker_key_wanted: bool,
    pub tracker_key_set: bool,
    pub catalogue_refresh: Duration,
    /// The longest an export retry waits ([outbox] max_backoff).
    pub export_max_backoff: Duration,
    /// A running daemon with a pipeline task (or its HTTP server) stopped: what `/healthz`
    /// answers 503 for and the systemd watchdog stops pinging for.
    pub tasks_stopped: bool,
    /// Since when the store's writes fail to commit, and the last error (a full disk).
    pub store_write_failure: Option<(i64, String)>,
}

/// A condition that holds now: a stable key (for [`Clock`]), the item, and when it began if
/// the inputs know (else the clock's first sighting stands).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub key: &'static str,
    pub item: HealthItem,
    pub began: Option<i64>,
}

/// How long after start a missing catalogue is worth a warning (the first fetch is running).
const CATALOGUE_GRACE_SECS: u64 = 120;
/// A catalogue older than this many refresh intervals is stale (fetches keep failing).
const CATALOGUE_STALE_INTERVALS: u32 = 3;

/// The conditions that hold, in no particular order ([`Clock::stamp`] sorts them).
/// How long a play may wait for the matcher chain before health says so: the resolver's
/// back-off reaches 15 minutes, so an hour is several failed rounds, not one slow one.
const UNRESOLVED_TOO_OLD: i64 = 3600;

pub fn evaluate(i: &Inputs) -> Vec<Condition> {
    let mut out = Vec::new();
    let mut add = |key: &'static str,
                   component: Component,
                   severity: Severity,
                   message: String,
                   hint: Option<&str>,
                   began: Option<i64>| {
        out.push(Condition {
            key,
            item: HealthItem {
                component,
                severity,
                message,
                since: began.unwrap_or(i.now),
                hint: hint.map(str::to_string),
            },
            began,
        })
    };
    let r = i.runtime;
    use Component::*;
    use Severity::*;

    if !i.running {
        add(
            "daemon.down",
            Daemon,
            Error,
            "the daemon is not running (this answer comes from the store)".into(),
            Some("start it: systemctl start plexsync (or plexsync run)"),
            None,
        );
    }

    if i.running && i.tasks_stopped {
        add(
            "daemon.task_stopped",
            Daemon,
            Error,
            "a pipeline task of the daemon has stopped: plays may not be journaled, matched or exported (/healthz answers 503)".into(),
            Some("the log says why; restart it: systemctl restart plexsync (under systemd the watchdog does)"),
            None,
        );
    }

    // Plex.
    if r.plex_token_rejected {
        let message = if i.plex_token_set {
            "Plex rejects the token (401): polling, show look-ups and the account list wait for a valid one"
        } else {
            "Plex rejects requests without a token (401) and none is stored: polling, show look-ups and the account list wait for one"
        };
        add(
            "plex.token_rejected",
            Plex,
            Error,
            message.into(),
            Some(PLEX_TOKEN_HINT),
            r.plex_error_since.or(r.plex_error_at),
        );
    } else {
        if !i.plex_token_set {
            add(
                "plex.no_token",
                Plex,
                Warning,
                "no Plex token is stored: most servers refuse history polling and show look-ups without one".into(),
                Some(PLEX_TOKEN_HINT),
                None,
            );
        }
        if let Some(e) = &r.plex_error {
            let began = r.plex_error_since.or(r.plex_error_at);
            match r.plex_error_kind {
                Some(PollFailure::Store) => {} // reported under the store below
                Some(PollFailure::Malformed) => add(
                    "plex.malformed",
                    Plex,
                    Warning,
                    format!("Plex answered with something unusable: {e}"),
                    None,
                    began,
                ),
                _ => add(
                    "plex.unreachable",
                    Plex,
                    Error,
                    format!("Plex is unreachable or failing: {e}"),
                    Some("check [plex] url and that the server runs; polling retries on its own"),
                    began,
                ),
            }
        } else if let Some(e) = &r.accounts_error {
            // Only the account list's reader met it (polling off, or between polls): one
            // condition per cause, so not beside plex.unreachable above.
            let message = if r.plex_accounts_read_at.is_some() {
                format!(
                    "the Plex server's account list cannot be read ({e}): webhooks go on with the list read before"
                )
            } else {
                format!(
                    "the Plex server's account list cannot be read ({e}): until it is, webhooks of accounts plexsync cannot place are synced whatever [plex] accounts says"
                )
            };
            add(
                "plex.accounts_unread",
                Plex,
                Warning,
                message,
                Some(
                    "check [plex] url and that the server runs; the list is read again on its own",
                ),
                r.accounts_error_since,
            );
        }
    }

    // The tracker.
    let key_refused = matches!(
        r.tracker_error_kind,
        Some(TrackerErrorKind::Unauthorized | TrackerErrorKind::Forbidden)
    );
    if let Some(e) = &r.tracker_error {
        let began = r.tracker_error_since;
        match r.tracker_error_kind {
            Some(TrackerErrorKind::Unauthorized) => add(
                "tracker.unauthorized",
                Tracker,
                Error,
                if i.tracker_key_set {
                    "the tracker refuses the key (401): exports and catalogue updates stop".into()
                } else {
                    "the tracker wants a key (401) and none is stored: exports and catalogue updates stop".into()
                },
                Some(TRACKER_KEY_HINT),
                began,
            ),
            Some(TrackerErrorKind::Forbidden) => add(
                "tracker.forbidden",
                Tracker,
                Error,
                "the tracker refuses the key (403): it may not do this".into(),
                Some(TRACKER_KEY_HINT),
                began,
            ),
            Some(TrackerErrorKind::Refused) => add(
                "tracker.refused",
                Tracker,
                Warning,
                format!("the tracker refused a request: {e}"),
                None,
                began,
            ),
            Some(TrackerErrorKind::Config) => add(
                "tracker.config",
                Tracker,
                Error,
                format!("the tracker plugin's settings are refused: {e}"),
                Some("fix [tracker] in the config, then systemctl reload plexsync"),
                began,
            ),
            Some(TrackerErrorKind::Unreachable) | None => add(
                "tracker.unreachable",
                Tracker,
                Error,
                format!("the tracker is unreachable or failing: {e}"),
                Some("exports wait and retry on their own; check [tracker] url and that it runs"),
                began,
            ),
        }
    }
    if i.tracker_key_wanted && !i.tracker_key_set && !key_refused {
        add(
            "tracker.no_key",
            Tracker,
            Warning,
            "no tracker key is stored".into(),
            Some(TRACKER_KEY_HINT),
            None,
        );
    }
    if i.running {
        match r.catalogue_loaded_at {
            None if i.uptime_secs >= CATALOGUE_GRACE_SECS => add(
                "tracker.no_catalogue",
                Tracker,
                Warning,
                "no tracker catalogue is loaded yet: matching waits for it".into(),
                None,
                None,
            ),
            None => {}
            Some(at) => {
                let stale = (i.catalogue_refresh * CATALOGUE_STALE_INTERVALS).as_secs() as i64;
                if i.now - at > stale {
                    add(
                        "tracker.catalogue_stale",
                        Tracker,
                        Warning,
                        format!(
                            "the tracker catalogue is {} old: refreshing it fails",
                            age(i.now - at)
                        ),
                        None,
                        Some(at + stale),
                    );
                }
                if let Some(refused) = r.catalogue_refused_empty_at {
                    add(
                        "tracker.catalogue_refused_empty",
                        Tracker,
                        Warning,
                        format!(
                            "the tracker answered an empty catalogue; the last one ({} shows) is kept until it answers with shows again",
                            r.catalogue_shows
                        ),
                        None,
                        Some(refused),
                    );
                }
                if r.catalogue_shows == 0 {
                    add(
                        "tracker.catalogue_empty",
                        Tracker,
                        Warning,
                        "the tracker's catalogue is empty: no show can match".into(),
                        None,
                        Some(at),
                    );
                }
            }
        }
    }

    // The store, exports, conflicts.
    match &i.counts {
        Err(e) => add(
            "store.unreadable",
            Store,
            Error,
            format!("the store cannot be read: {e}"),
            None,
            None,
        ),
        Ok(c) => {
            if c.dead_letters > 0 {
                add(
                    "exports.dead",
                    Exports,
                    Error,
                    format!(
                        "{} export batch(es) failed for good (dead letters): those plays did not reach the tracker",
                        c.dead_letters
                    ),
                    Some("fix the cause, then: plexsync outbox retry"),
                    c.oldest_dead_letter_at,
                );
            }
            // Rows the exporter skips (each logged once, by table and key): nothing retries
            // them, so only a person can; every other show's exports go on meanwhile.
            if c.unreadable_exports > 0 {
                add(
                    "exports.unreadable",
                    Exports,
                    Warning,
                    format!(
                        "{} export row(s) in the store cannot be read: they are skipped and left as they are, so their episodes do not reach the tracker; the other exports go on",
                        c.unreadable_exports
                    ),
                    Some(
                        "the log names each row (\"an export row in the store cannot be read\", with its table and key): journalctl -u plexsync",
                    ),
                    None,
                );
            }
            let too_old = export_too_old(i.export_max_backoff).as_secs() as i64;
            if let Some(oldest) = c.oldest_pending_secs.filter(|&s| s > too_old) {
                add(
                    "exports.old",
                    Exports,
                    Warning,
                    format!(
                        "the oldest pending export has waited {} ({} episode(s) pending)",
                        age(oldest),
                        c.outbox_items
                    ),
                    Some("see the tracker's health; plexsync outbox list"),
                    Some(i.now - oldest + too_old),
                );
            }
            // A matcher that keeps failing (an exec program that crashes, a TMDB outage) leaves
            // plays waiting with no end: retried with back-off, never turned into a conflict.
            if let Some(oldest) = c.oldest_unresolved_secs.filter(|&s| s > UNRESOLVED_TOO_OLD) {
                add(
                    "matching.stuck",
                    Matching,
                    Warning,
                    format!(
                        "{} play(s) have waited {} to be matched: a matcher keeps failing, or there is no catalogue",
                        c.pending_resolution,
                        age(oldest)
                    ),
                    Some("the log says why (\"matching deferred\"): journalctl -u plexsync"),
                    Some(i.now - oldest + UNRESOLVED_TOO_OLD),
                );
            }
            if c.conflicts > 0 {
                add(
                    "conflicts.open",
                    Conflicts,
                    Warning,
                    format!(
                        "{} show(s) need a decision: their plays are held until then",
                        c.conflicts
                    ),
                    Some("plexsync conflicts list"),
                    c.oldest_conflict_at,
                );
            }
        }
    }
    if let Some((since, e)) = &i.store_write_failure {
        add(
            "store.write",
            Store,
            Error,
            format!(
                "the store cannot commit writes ({e}): webhooks are refused (503) and nothing new is recorded"
            ),
            Some("check the disk (space, permissions) of [store] path"),
            Some(*since),
        );
    }
    if let Some(lp) = &r.last_poll {
        if lp.failure == Some(PollFailure::Store) {
            add(
                "store.poll",
                Store,
                Error,
                format!(
                    "the store could not commit a poll: {}",
                    lp.error.as_deref().unwrap_or("")
                ),
                Some("check the disk (space, permissions) of [store] path"),
                Some(lp.finished_at),
            );
        }
    }

    // The configuration.
    if !r.restart_needed.is_empty() {
        add(
            "config.restart",
            Config,
            Warning,
            format!(
                "the file changes {} since the start: in effect only after a restart (the daemon still uses the old values)",
                r.restart_needed.join(", ")
            ),
            Some("systemctl restart plexsync"),
            r.restart_needed_since,
        );
    }
    if let Some(e) = &r.config_reload_error {
        add(
            "config.reload",
            Config,
            Error,
            format!("the configuration reload was refused; the running configuration stays: {e}"),
            Some("fix the file (plexsync check), then systemctl reload plexsync"),
            r.config_reload_failed_at,
        );
    }
    out
}

/// An export waiting longer than this is worth a warning: past every retry's backoff, with
/// an hour's slack.
pub fn export_too_old(max_backoff: Duration) -> Duration {
    (max_backoff * 3).max(Duration::from_secs(3600))
}

/// `90 s`, `12 min`, `5 h`, `3 d`.
fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..120 => format!("{s} s"),
        120..7_200 => format!("{} min", s / 60),
        7_200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// When each condition was first seen, by condition key (kept in the status board as
/// `HealthClock`; a plain map so the state needs nothing of this module).
#[derive(Debug)]
pub struct Clock<'a> {
    pub first_seen: &'a mut HashMap<&'static str, i64>,
}

impl Clock<'_> {
    /// Date the conditions and sort them worst first. A condition's `since` is when it began
    /// if the inputs know, else when this clock first saw it, and it never moves later while
    /// the condition lasts (inputs that date it from the latest event, a failed poll's end or
    /// the oldest export still waiting, would make it creep); conditions that no longer hold
    /// are forgotten, so one that comes back starts anew.
    pub fn stamp(&mut self, conditions: Vec<Condition>, now: i64) -> Vec<HealthItem> {
        self.first_seen
            .retain(|k, _| conditions.iter().any(|c| c.key == *k));
        let mut items: Vec<HealthItem> = conditions
            .into_iter()
            .map(|c| {
                let first = self
                    .first_seen
                    .entry(c.key)
                    .or_insert(c.began.unwrap_or(now));
                *first = (*first).min(c.began.unwrap_or(*first));
                HealthItem {
                    since: *first,
                    ..c.item
                }
            })
            .collect();
        items.sort_by(|a, b| {
            (a.severity, a.component, a.since).cmp(&(b.severity, b.component, b.since))
        });
        items
    }
}

/// The health list of this state, for `/api/status`.
pub fn compute(shared: &Shared, counts: Result<&Counts, String>) -> Vec<HealthItem> {
    let cfg = shared.config();
    let runtime = shared.status();
    let now = crate::model::now_secs();
    let inputs = Inputs {
        now,
        running: shared.serving(),
        uptime_secs: shared.board.started.elapsed().as_secs(),
        runtime: &runtime,
        counts,
        plex_token_set: shared.secret("plex-token").is_some(),
        tracker_key_wanted: crate::registry::exporter_secrets(&cfg).contains(&"tracker-key"),
        tracker_key_set: shared.secret("tracker-key").is_some(),
        catalogue_refresh: cfg.tracker.catalogue_refresh,
        export_max_backoff: cfg.outbox.max_backoff,
        tasks_stopped: shared.serving() && !shared.healthy() && !*shared.shutdown.borrow(),
        store_write_failure: shared.store.write_failure(),
    };
    let conditions = evaluate(&inputs);
    let mut map = match shared.board.health.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    Clock {
        first_seen: &mut map,
    }
    .stamp(conditions, now)
}

/// Whether any item is at error level (`plexsync status` exits 2).
pub fn any_error(items: &[HealthItem]) -> bool {
    items.iter().any(|h| h.severity == Severity::Error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PollReport;

    const NOW: i64 = 1_765_000_000;

    fn healthy_counts() -> Counts {
        Counts::default()
    }

    fn inputs<'a>(r: &'a RuntimeStatus, c: &'a Counts) -> Inputs<'a> {
        Inputs {
            now: NOW,
            running: true,
            uptime_secs: 600,
            runtime: r,
            counts: Ok(c),
            plex_token_set: true,
            tracker_key_wanted: true,
            tracker_key_set: true,
            catalogue_refresh: Duration::from_secs(3600),
            export_max_backoff: Duration::from_secs(1800),
            tasks_stopped: false,
            store_write_failure: None,
        }
    }

    #[test]
    fn failing_store_writes_are_an_error_since_the_first() {
        let (r, c) = (fine(), healthy_counts());
        let mut i = inputs(&r, &c);
        i.store_write_failure = Some((NOW - 30, "No space left on device".into()));
        let found = evaluate(&i);
        let w = found
            .iter()
            .find(|c| c.key == "store.write")
            .expect("the failing writes");
        assert_eq!(w.item.severity, Severity::Error);
        assert!(
            w.item.message.contains("No space left"),
            "{}",
            w.item.message
        );
        assert_eq!(w.began, Some(NOW - 30));
    }

    /// Export rows the store cannot read are a warning (the other exports go on), and no
    /// longer the whole store "cannot be read".
    #[test]
    fn unreadable_export_rows_are_a_warning() {
        let r = fine();
        let mut c = healthy_counts();
        assert!(!keys(&evaluate(&inputs(&r, &c))).contains(&"exports.unreadable"));
        c.unreadable_exports = 2;
        let found = evaluate(&inputs(&r, &c));
        let w = found
            .iter()
            .find(|c| c.key == "exports.unreadable")
            .expect("the unreadable rows");
        assert_eq!(w.item.severity, Severity::Warning);
        assert_eq!(w.item.component, Component::Exports);
        assert!(
            w.item.message.starts_with("2 export row(s)"),
            "{}",
            w.item.message
        );
        assert!(w.item.hint.as_deref().unwrap().contains("journalctl"));
    }

    #[test]
    fn plays_waiting_long_for_the_matchers_are_a_warning() {
        let r = fine();
        let mut c = healthy_counts();
        c.pending_resolution = 3;
        c.oldest_unresolved_secs = Some(600);
        assert!(!keys(&evaluate(&inputs(&r, &c))).contains(&"matching.stuck"));
        c.oldest_unresolved_secs = Some(2 * 86_400);
        let found = evaluate(&inputs(&r, &c));
        let stuck = found
            .iter()
            .find(|c| c.key == "matching.stuck")
            .expect("the waiting plays");
        assert_eq!(stuck.item.severity, Severity::Warning);
        assert!(
            stuck.item.message.contains("3 play(s)"),
            "{}",
            stuck.item.message
        );
        assert_eq!(stuck.began, Some(NOW - 2 * 86_400 + UNRESOLVED_TOO_OLD));
    }

    #[test]
    fn keys_waiting_for_a_restart_are_a_warning() {
        let mut r = fine();
        r.restart_needed = vec!["store.path".into(), "log.level".into()];
        r.restart_needed_since = Some(NOW - 5);
        let c = healthy_counts();
        let found = evaluate(&inputs(&r, &c));
        let item = found
            .iter()
            .find(|c| c.key == "config.restart")
            .expect("the restart");
        assert_eq!(item.item.severity, Severity::Warning);
        assert!(
            item.item.message.contains("store.path, log.level"),
            "{}",
            item.item.message
        );
        assert_eq!(item.began, Some(NOW - 5));
    }

    /// `/healthz` says 503 for a stopped task: `status`, the page and its exit code say so too.
    #[test]
    fn a_stopped_task_is_an_error() {
        let (r, c) = (fine(), healthy_counts());
        let mut i = inputs(&r, &c);
        assert!(!keys(&evaluate(&i)).contains(&"daemon.task_stopped"));
        i.tasks_stopped = true;
        let found = evaluate(&i);
        let item = &found
            .iter()
            .find(|c| c.key == "daemon.task_stopped")
            .expect("the stopped task")
            .item;
        assert_eq!(item.severity, Severity::Error);
        assert!(item.message.contains("stopped"), "{}", item.message);
    }

    fn fine() -> RuntimeStatus {
        RuntimeStatus {
            catalogue_shows: 10,
            catalogue_loaded_at: Some(NOW - 60),
            plex_last_ok_at: Some(NOW - 5),
            tracker_last_ok_at: Some(NOW - 5),
            ..Default::default()
        }
    }

    fn keys(c: &[Condition]) -> Vec<&'static str> {
        let mut k: Vec<_> = c.iter().map(|c| c.key).collect();
        k.sort();
        k
    }

    #[test]
    fn all_good_is_an_empty_list() {
        let (r, c) = (fine(), healthy_counts());
        assert!(evaluate(&inputs(&r, &c)).is_empty());
    }

    #[test]
    fn a_stopped_daemon_is_an_error_and_skips_runtime_checks() {
        let r = RuntimeStatus::default();
        let c = healthy_counts();
        let mut i = inputs(&r, &c);
        i.running = false;
        let got = evaluate(&i);
        assert_eq!(keys(&got), vec!["daemon.down"]);
        assert_eq!(got[0].item.severity, Severity::Error);
        assert!(got[0].item.message.contains("not running"));
    }

    #[test]
    fn an_unreadable_account_list_is_a_warning_unless_plex_is_already_reported() {
        let mut r = RuntimeStatus {
            accounts_error: Some("connection refused".into()),
            accounts_error_since: Some(NOW - 40),
            ..fine()
        };
        let c = healthy_counts();
        let got = evaluate(&inputs(&r, &c));
        let item = got
            .iter()
            .find(|c| c.key == "plex.accounts_unread")
            .expect("the condition");
        assert_eq!(item.item.severity, Severity::Warning);
        assert_eq!(item.item.since, NOW - 40);
        assert!(
            item.item.message.contains("until it is"),
            "{}",
            item.item.message
        );
        r.plex_accounts_read_at = Some(NOW - 3600);
        let got = evaluate(&inputs(&r, &c));
        let item = got
            .iter()
            .find(|c| c.key == "plex.accounts_unread")
            .unwrap();
        assert!(
            item.item.message.contains("read before"),
            "{}",
            item.item.message
        );
        // The poll already says Plex is down: one condition for one cause.
        r.plex_error = Some("connection refused".into());
        r.plex_error_kind = Some(PollFailure::Unreachable);
        let keys: Vec<&str> = evaluate(&inputs(&r, &c)).iter().map(|c| c.key).collect();
        assert!(keys.contains(&"plex.unreachable"), "{keys:?}");
        assert!(!keys.contains(&"plex.accounts_unread"), "{keys:?}");
        r.plex_error = None;
        r.plex_error_kind = None;
        r.plex_token_rejected = true;
        let keys: Vec<&str> = evaluate(&inputs(&r, &c)).iter().map(|c| c.key).collect();
        assert!(!keys.contains(&"plex.accounts_unread"), "{keys:?}");
    }

    #[test]
    fn plex_token_rejected_once_with_the_hint_and_its_start() {
        let r = RuntimeStatus {
            plex_token_rejected: true,
            plex_error: Some("Plex token rejected".into()),
            plex_error_kind: Some(PollFailure::TokenRejected),
            plex_error_since: Some(NOW - 100),
            plex_error_at: Some(NOW - 3),
            ..fine()
        };
        let c = healthy_counts();
        let got = evaluate(&inputs(&r, &c));
        assert_eq!(
            keys(&got),
            vec!["plex.token_rejected"],
            "no second Plex item"
        );
        assert_eq!(got[0].item.since, NOW - 100);
        assert_eq!(got[0].item.hint.as_deref(), Some(PLEX_TOKEN_HINT));
    }

    #[test]
    fn plex_unreachable_and_malformed() {
        let mut r = RuntimeStatus {
            plex_error: Some("connection refused".into()),
            plex_error_kind: Some(PollFailure::Unreachable),
            plex_error_at: Some(NOW - 7),
            ..fine()
        };
        let c = healthy_counts();
        let got = evaluate(&inputs(&r, &c));
        assert_eq!(keys(&got), vec!["plex.unreachable"]);
        assert_eq!(got[0].item.severity, Severity::Error);
        assert_eq!(got[0].item.since, NOW - 7);
        r.plex_error_kind = Some(PollFailure::Malformed);
        let got = evaluate(&inputs(&r, &c));
        assert_eq!(got[0].item.severity, Severity::Warning);
    }

    #[test]
    fn missing_secrets_are_warnings() {
        let (r, c) = (fine(), healthy_counts());
        let mut i = inputs(&r, &c);
        i.plex_token_set = false;
        i.tracker_key_set = false;
        let got = evaluate(&i);
        assert_eq!(keys(&got), vec!["plex.no_token", "tracker.no_key"]);
        assert!(got.iter().all(|c| c.item.severity == Severity::Warning));
        // An exporter that uses no key: nothing to say.
        i.tracker_key_wanted = false;
        assert_eq!(keys(&evaluate(&i)), vec!["plex.no_token"]);
    }

    #[test]
    fn tracker_401_403_and_outage_are_told_apart() {
        let c = healthy_counts();
        // Without a stored key: a refused key is one item (no separate "no key" warning).
        for (kind, key, hint) in [
            (
                TrackerErrorKind::Unauthorized,
                vec!["tracker.unauthorized"],
                Some(TRACKER_KEY_HINT),
            ),
            (
                TrackerErrorKind::Forbidden,
                vec!["tracker.forbidden"],
                Some(TRACKER_KEY_HINT),
            ),
            (
                TrackerErrorKind::Unreachable,
                vec!["tracker.no_key", "tracker.unreachable"],
                None,
            ),
        ] {
            let r = RuntimeStatus {
                tracker_error: Some("tracker: export: HTTP 401 Unauthorized".into()),
                tracker_error_kind: Some(kind),
                tracker_error_since: Some(NOW - 50),
                ..fine()
            };
            let mut i = inputs(&r, &c);
            i.tracker_key_set = false;
            let got = evaluate(&i);
            assert_eq!(keys(&got), key, "{kind:?}");
            let main = got.iter().find(|c| c.key != "tracker.no_key").unwrap();
            assert_eq!(main.item.severity, Severity::Error);
            assert_eq!(main.item.since, NOW - 50);
            if let Some(h) = hint {
                assert_eq!(main.item.hint.as_deref(), Some(h));
            }
        }
    }

    #[test]
    fn classify_plugin_errors() {
        let e = PluginError::permanent(
            "tracker: export: HTTP 401 Unauthorized: {\"error\": \"unauthorized\"}",
        );
        assert_eq!(classify_tracker(&e), TrackerErrorKind::Unauthorized);
        assert!(tracker_error_text(&e).contains("plexsync secret set tracker-key"));
        assert!(!tracker_error_text(&e).contains("{\"error\""));
        let e = PluginError::permanent("tracker: catalogue: HTTP 403 Forbidden: no");
        assert_eq!(classify_tracker(&e), TrackerErrorKind::Forbidden);
        let e = PluginError::permanent("tracker: export: HTTP 404 Not Found: show 401");
        assert_eq!(classify_tracker(&e), TrackerErrorKind::Refused);
        // A body that quotes another status says nothing of this answer's.
        let e = PluginError::permanent(
            "tracker: export: HTTP 422 Unprocessable Entity: {\"error\":\"upstream HTTP 401\"}",
        );
        assert_eq!(classify_tracker(&e), TrackerErrorKind::Refused);
        assert_eq!(tracker_error_text(&e), e.to_string());
        let e = PluginError::transient("tracker: export: HTTP 503 Service Unavailable");
        assert_eq!(classify_tracker(&e), TrackerErrorKind::Unreachable);
    }

    #[test]
    fn catalogue_missing_stale_and_empty() {
        let c = healthy_counts();
        let r = RuntimeStatus {
            catalogue_loaded_at: None,
            ..fine()
        };
        let mut i = inputs(&r, &c);
        assert_eq!(keys(&evaluate(&i)), vec!["tracker.no_catalogue"]);
        i.uptime_secs = 5;
        assert!(evaluate(&i).is_empty(), "the first fetch gets its time");
        let r = RuntimeStatus {
            catalogue_loaded_at: Some(NOW - 4 * 3600),
            catalogue_shows: 0,
            ..fine()
        };
        let got = evaluate(&inputs(&r, &c));
        assert_eq!(
            keys(&got),
            vec!["tracker.catalogue_empty", "tracker.catalogue_stale"]
        );
        let stale = got
            .iter()
            .find(|c| c.key == "tracker.catalogue_stale")
            .unwrap();
        assert_eq!(stale.item.since, NOW - 4 * 3600 + 3 * 3600);
        assert!(stale.item.message.contains("4 h"), "{}", stale.item.message);
    }

    #[test]
    fn a_refused_empty_catalogue_is_a_warning_since_the_refusal() {
        let c = healthy_counts();
        let r = RuntimeStatus {
            catalogue_refused_empty_at: Some(NOW - 30),
            ..fine()
        };
        let got = evaluate(&inputs(&r, &c));
        assert_eq!(keys(&got), vec!["tracker.catalogue_refused_empty"]);
        assert_eq!(got[0].item.since, NOW - 30);
        assert!(
            got[0].item.message.contains("10 shows"),
            "{}",
            got[0].item.message
        );
    }

    #[test]
    fn exports_conflicts_store_config() {
        let r = RuntimeStatus {
            config_reload_error: Some("file:3: key `poll.schedule`: bad".into()),
            config_reload_failed_at: Some(NOW - 9),
            last_poll: Some(PollReport {
                finished_at: NOW - 2,
                error: Some("disk full".into()),
                failure: Some(PollFailure::Store),
                ..Default::default()
            }),
            plex_error: Some("disk full".into()),
            plex_error_kind: Some(PollFailure::Store),
            ..fine()
        };
        let c = Counts {
            dead_letters: 2,
            conflicts: 3,
            outbox_items: 4,
            oldest_pending_secs: Some(3 * 86_400),
            oldest_dead_letter_at: Some(NOW - 7200),
            oldest_conflict_at: Some(NOW - 86_400),
            ..Default::default()
        };
        let got = evaluate(&inputs(&r, &c));
        assert_eq!(
            keys(&got),
            vec![
                "config.reload",
                "conflicts.open",
                "exports.dead",
                "exports.old",
                "store.poll"
            ]
        );
        let by = |k: &str| &got.iter().find(|c| c.key == k).unwrap().item;
        assert_eq!(
            by("exports.dead").hint.as_deref(),
            Some("fix the cause, then: plexsync outbox retry")
        );
        assert_eq!(by("exports.old").severity, Severity::Warning);
        assert_eq!(by("exports.old").since, NOW - 3 * 86_400 + 5400);
        assert!(by("conflicts.open").message.starts_with("3 show(s)"));
        // Dated by the store's rows, not by when this process first saw them.
        assert_eq!(by("exports.dead").since, NOW - 7200);
        assert_eq!(by("conflicts.open").since, NOW - 86_400);
        assert_eq!(
            by("conflicts.open").hint.as_deref(),
            Some("plexsync conflicts list")
        );
        assert!(by("config.reload").message.contains("poll.schedule"));
        assert_eq!(by("config.reload").since, NOW - 9);
        // An unreadable store.
        let mut i = inputs(&r, &c);
        i.counts = Err("io".into());
        assert!(keys(&evaluate(&i)).contains(&"store.unreadable"));
    }

    /// A store that keeps failing polls: each failed poll dates the condition from its own
    /// end, but `since` stays at the first.
    #[test]
    fn since_does_not_creep_while_a_condition_lasts() {
        let mut map = HashMap::new();
        let mut clock = Clock {
            first_seen: &mut map,
        };
        let c = healthy_counts();
        let failed_poll = |at: i64| {
            let mut r = fine();
            r.last_poll = Some(crate::model::PollReport {
                failure: Some(PollFailure::Store),
                error: Some("disk full".into()),
                finished_at: at,
                ..Default::default()
            });
            r
        };
        let since = |got: Vec<HealthItem>| {
            got.into_iter()
                .find(|h| h.component == Component::Store)
                .expect("the store item")
                .since
        };
        let r = failed_poll(NOW - 600);
        assert_eq!(
            since(clock.stamp(evaluate(&inputs(&r, &c)), NOW)),
            NOW - 600
        );
        let r = failed_poll(NOW);
        assert_eq!(
            since(clock.stamp(evaluate(&inputs(&r, &c)), NOW + 5)),
            NOW - 600
        );
    }

    #[test]
    fn the_clock_keeps_first_sightings_and_sorts_worst_first() {
        let mut map = HashMap::new();
        let mut clock = Clock {
            first_seen: &mut map,
        };
        let c = Counts {
            conflicts: 1,
            dead_letters: 1,
            ..Default::default()
        };
        let r = fine();
        let got = clock.stamp(evaluate(&inputs(&r, &c)), NOW);
        assert_eq!(got[0].severity, Severity::Error, "{got:?}");
        assert_eq!(got[0].component, Component::Exports);
        assert_eq!(got[1].component, Component::Conflicts);
        assert!(got.iter().all(|h| h.since == NOW));
        // A later look: same since.
        let got = clock.stamp(evaluate(&inputs(&r, &c)), NOW + 30);
        assert!(got.iter().all(|h| h.since == NOW), "{got:?}");
        // Cleared, then back: a new since.
        let none = Counts {
            conflicts: 1,
            ..Default::default()
        };
        clock.stamp(evaluate(&inputs(&r, &none)), NOW + 60);
        let got = clock.stamp(evaluate(&inputs(&r, &c)), NOW + 90);
        let dead = got
            .iter()
            .find(|h| h.component == Component::Exports)
            .unwrap();
        assert_eq!(dead.since, NOW + 90);
        let conflicts = got
            .iter()
            .find(|h| h.component == Component::Conflicts)
            .unwrap();
        assert_eq!(conflicts.since, NOW, "held the whole time");
    }

    #[test]
    fn items_serialise_as_the_contract_says() {
        let h = HealthItem {
            component: Component::Tracker,
            severity: Severity::Error,
            message: "m".into(),
            since: 5,
            hint: None,
        };
        assert_eq!(
            serde_json::to_value(&h).unwrap(),
            serde_json::json!({"component": "tracker", "severity": "error", "message": "m", "since": 5})
        );
    }
}
