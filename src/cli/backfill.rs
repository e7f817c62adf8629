//! `backfill`: handed to the running daemon (`POST /api/backfill`, then followed through
//! `GET /api/backfill`), or — with no daemon — run here through the same admin calls served in
//! process, with the resolver running so the summary can say what was matched and parked.

use std::path::Path;

use anyhow::{Context, Result, bail};
use hyper::Method;

use super::{Admin, Reached, load};
use plexsync::api::BackfillRequest;

fn progress_line(st: &plexsync::sources::history::BackfillStatus) {
    use std::io::Write;
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return;
    }
    // Several accounts: Plex totals one at a time, so the bar appears only once the total
    // over all of them is known (on the last account); before that, a plain count.
    let bar = match st.total {
        Some(t) if t > 0 && st.rows_read <= t => {
            let filled = ((st.rows_read * 30) / t) as usize;
            format!(
                "[{}{}] {}/{} rows",
                "#".repeat(filled),
                "-".repeat(30 - filled),
                st.rows_read,
                t
            )
        }
        _ if st.accounts > 1 => format!(
            "{} rows (account {} of {})",
            st.rows_read, st.account, st.accounts
        ),
        _ => format!("{} rows", st.rows_read),
    };
    let mut e = std::io::stderr();
    let _ = write!(e, "\r{bar}  new {}  dup {}   ", st.plays_new, st.duplicates);
    let _ = e.flush();
}

fn print_backfill(st: &plexsync::sources::history::BackfillStatus, as_json: bool) -> Result<()> {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    if as_json {
        super::print_json(st)?;
    } else if st.dry_run {
        for w in &st.would_export {
            let tracker = match &w.tracker_title {
                Some(t) => format!("{t} (tracker show {})", w.show_id),
                None => format!("tracker show {}", w.show_id),
            };
            crate::cli::outln!(
                "would export  {} S{:02}E{:02} → {tracker}",
                w.show,
                w.season,
                w.episode
            );
        }
        for s in &st.unmatched_shows {
            crate::cli::outln!("no match      {s} (would become a conflict)");
        }
        for s in &st.undecided_shows {
            crate::cli::outln!(
                "not decided   {s} (Plex or a matcher failed just now: the daemon would retry)"
            );
        }
        crate::cli::outln!(
            "dry run: {} rows read, {} episode(s) would be exported, {} show(s) without a match, {} not decided; nothing was stored",
            st.rows_read,
            st.would_export.len(),
            st.unmatched_shows.len(),
            st.undecided_shows.len()
        );
    } else {
        crate::cli::outln!("rows read:    {}", st.rows_read);
        crate::cli::outln!("plays new:    {}", st.plays_new);
        crate::cli::outln!(
            "duplicates:   {} (+{} already imported)",
            st.duplicates,
            st.already_imported
        );
        crate::cli::outln!("matched:      {}", st.matched);
        crate::cli::outln!(
            "parked:       {} (in conflicts: `plexsync status`)",
            st.parked
        );
        if st.waiting > 0 {
            crate::cli::outln!("still matching: {} (the daemon finishes them)", st.waiting);
        }
    }
    if !as_json {
        if st.rows_may_be_missed {
            crate::cli::outln!("warning: {}", plexsync::sources::history::MAY_BE_MISSED);
        }
        for name in &st.unknown_accounts {
            crate::cli::outln!(
                "unknown account: {name} ([plex] accounts names it, Plex does not list it: its history was not read)"
            );
        }
    }
    if let Some(e) = &st.error {
        bail!("backfill failed: {e}");
    }
    Ok(())
}

pub async fn backfill(path: &Path, since: &str, dry_run: bool, as_json: bool) -> Result<()> {
    let cfg = load(path)?;
    if plexsync::sources::history::parse_date(since).is_none() {
        bail!("--since: {since:?} is not a date like 2024-01-31");
    }
    let req = BackfillRequest {
        since: since.to_string(),
        dry_run,
    };
    let admin = Admin::new(cfg);
    let shared = match admin
        .online_or_offline_state(Method::POST, "backfill", Some(serde_json::to_vec(&req)?))
        .await?
    {
        Reached::Offline(shared) => shared,
        Reached::Online(_) => {
            // The running daemon does the work; follow its progress.
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                let bytes = admin
                    .online(Method::GET, "backfill", None)
                    .await?
                    .context("the daemon stopped during the backfill")?;
                let st: plexsync::api::BackfillView = serde_json::from_slice(&bytes)?;
                let st = st.context("the daemon lost the backfill's progress")?;
                progress_line(&st);
                if !st.running {
                    return print_backfill(&st, as_json);
                }
            }
        }
    };
    // No daemon: the same admin calls, served in process on the store (which, as for every
    // offline command, must exist: a backfill never creates a store and a new master key),
    // with the resolver (and the catalogue it matches against) running here until the job
    // ends. The daemon exports the new plays when it next runs.
    plexsync::logging::init(&admin.config().log.level);
    let catalogue = tokio::spawn(plexsync::pipeline::catalogue_task(shared.clone()));
    let resolver = tokio::spawn(plexsync::pipeline::resolver_task(shared.clone()));
    // Matching needs the tracker catalogue: wait briefly for the cached or fetched copy.
    for _ in 0..100 {
        if shared.catalogue().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _: serde_json::Value = admin.call(Method::POST, "backfill", Some(&req)).await?;
    let st = loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let st: plexsync::api::BackfillView = admin.get("backfill").await?;
        let st = st.context("the backfill's progress was lost")?;
        progress_line(&st);
        if !st.running {
            break st;
        }
    };
    // The job publishes its summary before it records the activity row; it lets go of the
    // lock after that, and only then may the store close.
    drop(shared.backfill.lock().await);
    let _ = shared.shutdown.send(true);
    let _ = resolver.await;
    catalogue.abort();
    print_backfill(&st, as_json)
}
