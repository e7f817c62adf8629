//! `status`, `activity` and `outbox`: typed admin answers rendered for people.

use anyhow::Result;
use hyper::Method;

use super::{Admin, print_json, when};
use plexsync::api::{ActivityPage, OutboxView, Requeued, Status};

/// `plexsync status` found something at error level: it printed the answer and exits 2.
#[derive(Debug)]
pub struct Unhealthy;

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("something needs attention (see health)")
    }
}

impl std::error::Error for Unhealthy {}

/// `plexsync status`: the answer (text or `--json`), then the exit code: Ok (0) when nothing
/// is at error level, [`Unhealthy`] (2) otherwise — a stopped daemon included.
pub async fn status(a: &Admin, as_json: bool) -> Result<()> {
    let s: Status = a.get("status").await?;
    if as_json {
        print_json(&s)?;
    } else {
        print_status(&s);
    }
    if plexsync::health::any_error(&s.health) {
        return Err(Unhealthy.into());
    }
    Ok(())
}

/// "5 min ago"-style age of a unix time, for people.
fn ago(ts: i64) -> String {
    let s = (plexsync::model::now_secs() - ts).max(0);
    match s {
        0..120 => format!("{s} s ago"),
        120..7_200 => format!("{} min ago", s / 60),
        7_200..172_800 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// A time that may be unknown: "2025-… (5 min ago)", or `none`.
fn at(ts: Option<i64>, none: &str) -> String {
    match ts {
        Some(t) => format!("{} ({})", when(Some(t), false), ago(t)),
        None => none.to_string(),
    }
}

fn print_status(s: &Status) {
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
    let server = match (&r.plex_server_name, &r.plex_server) {
        (Some(name), Some(id)) => format!(", server \"{name}\" ({id})"),
        (Some(name), None) => format!(", server \"{name}\""),
        (None, Some(id)) => format!(", server {id}"),
        (None, None) => String::new(),
    };
    println!(
        "plex:              {}{server} (token {})",
        s.plex_url,
        if s.plex_token_set { "set" } else { "NOT set" },
    );
    // Only a request that needed the token counts as "ok"; a rejection shows once, in health.
    if let Some(t) = r.plex_last_ok_at {
        println!("plex last ok:      {}", at(Some(t), ""));
    }
    println!(
        "tracker:           {}, catalogue {} shows (key {})",
        match r.tracker_last_ok_at {
            Some(t) => format!("last ok {}", at(Some(t), "")),
            None => "no answer yet".into(),
        },
        r.catalogue_shows,
        if s.tracker_key_set { "set" } else { "NOT set" },
    );
    println!("last webhook:      {}", at(r.last_webhook_at, "never"));
    match &r.last_poll {
        None => println!("last poll:         never"),
        Some(lp) if lp.error.is_some() => println!(
            "last poll:         {} failed (see health)",
            at(Some(lp.finished_at), "")
        ),
        Some(lp) => println!(
            "last poll:         {}: {} rows, {} new plays, {} duplicates",
            at(Some(lp.finished_at), ""),
            lp.rows_read,
            lp.plays_new,
            lp.duplicates
        ),
    }
    for c in &s.cursors {
        println!(
            "poll cursor:       {} up to {}",
            c.key,
            when(Some(c.viewed_at), false)
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
            Some(age) => format!(", oldest queued {}", ago(plexsync::model::now_secs() - age)),
            None => String::new(),
        }
    );
    println!("dead letters:      {}", c.dead_letters);
    println!("open conflicts:    {}", c.conflicts);
    println!("mappings:          {}", c.mappings);
    println!(
        "webhook loss:      {} play(s) viewed since {} that polling found and no webhook delivered",
        c.webhook_loss,
        match s.first_started_at {
            Some(t) => format!("first start {}", when(Some(t), false)),
            None => "the first start (none yet)".into(),
        }
    );
    if s.health.is_empty() {
        println!("health:            all good");
        return;
    }
    println!("health:");
    for h in &s.health {
        let severity = match h.severity {
            plexsync::api::Severity::Error => "ERROR",
            plexsync::api::Severity::Warning => "WARNING",
            plexsync::api::Severity::Info => "INFO",
        };
        let component = serde_json::to_value(h.component)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        println!(
            "  {severity:<8} {component:<10} {} (since {})",
            h.message,
            at(Some(h.since), "")
        );
        if let Some(hint) = &h.hint {
            println!("  {:<8} {:<10} → {hint}", "", "");
        }
    }
}

pub async fn activity(a: &Admin, status: Option<&str>, page: usize, as_json: bool) -> Result<()> {
    let status = status.unwrap_or("");
    let v: ActivityPage = a
        .get(&format!("activity?page={page}&status={status}"))
        .await?;
    if as_json {
        return print_json(&v);
    }
    println!(
        "{:<20} {:<9} {:<10} {:<16} {:<30} {:>8}  action / error",
        "time (UTC)", "status", "source", "event", "show", "ms"
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
        println!(
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
    println!("page {}, {} row(s) in all", v.page, v.total);
    Ok(())
}

pub async fn outbox_list(a: &Admin, as_json: bool) -> Result<()> {
    let v: OutboxView = a.get("outbox").await?;
    if as_json {
        return print_json(&v);
    }
    let c = &v.counts;
    println!(
        "pending: {} episode(s) in {} batch(es); dead letters: {}",
        c.outbox_items, c.batches, c.dead_letters
    );
    for b in &v.dead_letters {
        println!(
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
    println!("requeued {} dead-lettered batch(es)", v.requeued_batches);
    Ok(())
}
