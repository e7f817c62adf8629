//! `status`, `activity` and `outbox`: typed admin answers rendered for people.

use anyhow::Result;
use hyper::Method;

use super::{Admin, print_json, when};
use plexsync::api::{ActivityPage, OutboxView, Requeued, Status};

pub async fn status(a: &Admin, as_json: bool) -> Result<()> {
    let s: Status = a.get("status").await?;
    if as_json {
        return print_json(&s);
    }
    let r = &s.runtime;
    if s.running {
        println!(
            "daemon:            running {} (up {} s), listening on {}",
            s.version, s.uptime_secs, s.listen
        );
    } else {
        println!("daemon:            not running (answered from the store)");
    }
    match (&s.webhook_url, &s.webhook_url_note) {
        (Some(u), _) => println!("webhook URL:       {u}"),
        (None, Some(why)) => println!("webhook URL:       none: {why}"),
        (None, None) => println!("webhook URL:       -"),
    }
    println!(
        "plex:              {} (token {}), last ok {}",
        s.plex_url,
        if s.plex_token_set { "set" } else { "NOT set" },
        when(r.plex_last_ok_at, false)
    );
    if let Some(e) = &r.plex_error {
        println!("plex error:        {e}");
    }
    println!(
        "tracker:           last ok {}, catalogue {} shows",
        when(r.tracker_last_ok_at, false),
        r.catalogue_shows
    );
    if let Some(e) = &r.tracker_error {
        println!("tracker error:     {e}");
    }
    println!("last webhook:      {}", when(r.last_webhook_at, false));
    match &r.last_poll {
        None => println!("last poll:         never"),
        Some(lp) => match &lp.error {
            Some(e) => println!(
                "last poll:         {} FAILED: {e}",
                when(Some(lp.finished_at), false)
            ),
            None => println!(
                "last poll:         {}: {} rows, {} new plays, {} duplicates",
                when(Some(lp.finished_at), false),
                lp.rows_read,
                lp.plays_new,
                lp.duplicates
            ),
        },
    }
    for c in &s.cursors {
        println!(
            "poll cursor:       {} up to {}",
            c.key,
            when(Some(c.viewed_at), false)
        );
    }
    if r.plex_token_rejected {
        println!(
            "                   Plex token rejected: polling is paused; `plexsync secret set plex-token`"
        );
    }
    let c = &s.counts;
    println!("plays journaled:   {}", c.journal);
    println!("awaiting match:    {}", c.pending_resolution);
    println!(
        "outbox:            {} episode(s) in {} batch(es){}",
        c.outbox_items,
        c.batches,
        match c.oldest_pending_secs {
            Some(age) => format!(", oldest {age} s"),
            None => String::new(),
        }
    );
    println!("dead letters:      {}", c.dead_letters);
    println!("open conflicts:    {}", c.conflicts);
    println!("mappings:          {}", c.mappings);
    println!(
        "webhook loss:      {} play(s) found by polling that no webhook delivered",
        c.webhook_loss
    );
    Ok(())
}

pub async fn activity(a: &Admin, status: Option<&str>, page: usize, as_json: bool) -> Result<()> {
    let status = status.unwrap_or("");
    let v: ActivityPage = a
        .get(&format!("activity?page={page}&status={status}"))
        .await?;
    if as_json {
        return print_json(&v);
    }
    crate::cli::outln!(
        "{:<20} {:<9} {:<10} {:<16} {:<30} {:>8}  action / error",
        "time (UTC)",
        "status",
        "source",
        "event",
        "show",
        "ms"
    );
    for row in &v.items {
        let mut show = row.show.clone().unwrap_or_default();
        if let (Some(s), Some(e)) = (row.season, row.episode) {
            show = format!("{show} S{s:02}E{e:02}");
        }
        let what = match &row.error {
            Some(e) => format!("{} — {e}", row.action),
            None => row.action.clone(),
        };
        let status = serde_json::to_value(row.status)?;
        crate::cli::outln!(
            "{:<20} {:<9} {:<10} {:<16} {:<30} {:>8.1}  {}",
            when(Some(row.at), true).trim_end_matches('Z'),
            status.as_str().unwrap_or(""),
            row.source,
            row.event.as_deref().unwrap_or(""),
            show.chars().take(30).collect::<String>(),
            row.duration_ms,
            what
        );
    }
    crate::cli::outln!("page {}, {} row(s) in all", v.page, v.total);
    Ok(())
}

pub async fn outbox_list(a: &Admin, as_json: bool) -> Result<()> {
    let v: OutboxView = a.get("outbox").await?;
    if as_json {
        return print_json(&v);
    }
    let c = &v.counts;
    crate::cli::outln!(
        "pending: {} episode(s) in {} batch(es); dead letters: {}",
        c.outbox_items,
        c.batches,
        c.dead_letters
    );
    for b in &v.dead_letters {
        crate::cli::outln!(
            "  dead batch {} show {} — {} episode(s), {} attempt(s): {}",
            b.id,
            b.show_id,
            b.items.len(),
            b.attempts,
            b.last_error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

pub async fn outbox_retry(a: &Admin) -> Result<()> {
    let v: Requeued = a.call(Method::POST, "outbox/retry", None::<&()>).await?;
    crate::cli::outln!("requeued {} dead-lettered batch(es)", v.requeued_batches);
    Ok(())
}
