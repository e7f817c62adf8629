//! `sync`: the full watched-state sync, handed to the running daemon (`POST /api/sync`, then
//! followed through `GET /api/sync`), or — with no daemon — run here through the same admin
//! calls served in process, with the resolver running so the summary can say what was parked.

use std::path::Path;

use anyhow::{Result, bail};
use hyper::Method;

use super::{Admin, Reached, load};
use plexsync::api::{SyncRequest, SyncView};
use plexsync::model::SyncStatus;

fn progress_line(st: &SyncStatus) {
    use std::io::Write;
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return;
    }
    let bar = match st.shows_total {
        Some(t) if t > 0 && st.shows_walked <= t => {
            let filled = ((st.shows_walked * 30) / t) as usize;
            format!(
                "[{}{}] {}/{} shows",
                "#".repeat(filled),
                "-".repeat(30 - filled),
                st.shows_walked,
                t
            )
        }
        _ => format!("{} shows", st.shows_walked),
    };
    let mut e = std::io::stderr();
    let _ = write!(
        e,
        "\r{bar}  watched {}  new {}   ",
        st.episodes_watched, st.plays_new
    );
    let _ = e.flush();
}

fn print_summary(st: &SyncStatus, as_json: bool) -> Result<()> {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    if as_json {
        super::print_json(st)?;
    } else if st.dry_run {
        for w in st.would_export.iter().flatten() {
            let to = match &w.tracker_title {
                Some(t) => format!(" → {t}"),
                None => String::new(),
            };
            crate::cli::outln!(
                "would export  {} S{:02}E{:02}{to}",
                w.show,
                w.season,
                w.episode
            );
        }
        for s in st.would_need_a_person.iter().flatten() {
            crate::cli::outln!("needs a person  {s} (no match: would become a conflict)");
        }
        for s in st.undecided_shows.iter().flatten() {
            crate::cli::outln!(
                "not decided     {s} (Plex or a matcher failed just now: the daemon would retry)"
            );
        }
        if st.shows_vanished > 0 {
            crate::cli::outln!(
                "shows vanished: {} (deleted in Plex during the sync; skipped)",
                st.shows_vanished
            );
        }
        crate::cli::outln!(
            "dry run: {} shows walked, {} episodes watched in Plex, {} would be exported, {} already exported, {} show(s) need a person, {} not decided; nothing was stored",
            st.shows_walked,
            st.episodes_watched,
            st.would_export.as_ref().map_or(0, Vec::len),
            st.already_exported,
            st.would_need_a_person.as_ref().map_or(0, Vec::len),
            st.undecided_shows.as_ref().map_or(0, Vec::len)
        );
    } else {
        crate::cli::outln!("shows walked:        {}", st.shows_walked);
        if st.shows_vanished > 0 {
            crate::cli::outln!(
                "shows vanished:      {} (deleted in Plex during the sync; skipped)",
                st.shows_vanished
            );
        }
        crate::cli::outln!(
            "episodes watched:    {} (of {} listed)",
            st.episodes_watched,
            st.episodes_seen
        );
        crate::cli::outln!("new plays:           {}", st.plays_new);
        crate::cli::outln!("already exported:    {}", st.already_exported);
        crate::cli::outln!(
            "parked in conflicts: {} (`plexsync conflicts`)",
            st.parked_in_conflicts
        );
    }
    if let Some(e) = &st.error {
        bail!("sync failed: {e}");
    }
    Ok(())
}

pub async fn sync(
    path: &Path,
    show: Option<String>,
    section: Option<String>,
    dry_run: bool,
    as_json: bool,
) -> Result<()> {
    let cfg = load(path)?;
    let req = SyncRequest {
        show,
        section,
        dry_run,
    };
    let admin = Admin::new(cfg);
    let tick = std::time::Duration::from_millis(250);
    let shared = match admin
        .online_or_offline_state(Method::POST, "sync", Some(serde_json::to_vec(&req)?))
        .await?
    {
        Reached::Offline(shared) => shared,
        Reached::Online(_) => {
            // The running daemon does the work; follow its progress.
            return follow(&admin, as_json).await;
        }
    };
    // No daemon: the same admin calls, served in process, with the resolver (and the
    // catalogue it matches against) running here until the job ends.
    plexsync::logging::init(&admin.config().log.level);
    let catalogue = tokio::spawn(plexsync::pipeline::catalogue_task(shared.clone()));
    let resolver = tokio::spawn(plexsync::pipeline::resolver_task(shared.clone()));
    for _ in 0..100 {
        if shared.catalogue().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _: serde_json::Value = admin.call(Method::POST, "sync", Some(&req)).await?;
    let st = loop {
        let st: SyncView = admin.get("sync").await?;
        let Some(st) = st else {
            bail!("the sync's progress was lost");
        };
        progress_line(&st);
        if !st.running {
            break st;
        }
        tokio::time::sleep(tick).await;
    };
    let _ = shared.shutdown.send(true);
    let _ = resolver.await;
    catalogue.abort();
    print_summary(&st, as_json)
}

async fn follow(admin: &Admin, as_json: bool) -> Result<()> {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let Some(bytes) = admin.online(Method::GET, "sync", None).await? else {
            bail!("the daemon stopped during the sync");
        };
        let st: SyncView = serde_json::from_slice(&bytes)?;
        let Some(st) = st else {
            bail!("the daemon lost the sync's progress");
        };
        progress_line(&st);
        if !st.running {
            return print_summary(&st, as_json);
        }
    }
}
