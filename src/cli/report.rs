//! `status`, `activity` and `outbox`: typed admin answers rendered for people.

use anyhow::Result;
use hyper::Method;

use super::table::{cell, cell_right, fit};
use super::{Admin, outln, print_json, when};
use plexsync::api::{ActivityPage, ActivityQuery, OutboxView, Requeued, Status};
use plexsync::model::Activity;

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

/// Issue 15: the request budget in words: the limits, the wait and the backlog's time.
fn export_budget_line(b: &plexsync::api::ExportBudget) -> String {
    let mut limits = Vec::new();
    if let Some(n) = b.per_minute {
        limits.push(format!("{n}/min"));
    }
    if let Some(n) = b.per_hour {
        limits.push(format!("{n}/h"));
    }
    let mut out = if limits.is_empty() {
        "no budget set".to_string()
    } else {
        format!("budget {}", limits.join(", "))
    };
    if let Some(t) = b.tracker {
        let reset = (t.reset_at - plexsync::model::now_secs()).max(0);
        let of = t.limit.map(|l| format!(" of {l}")).unwrap_or_default();
        out.push_str(&format!(
            "; the tracker allows {}{of} more, reset in {}",
            t.remaining,
            if reset >= 120 {
                format!("{} min", (reset + 59) / 60)
            } else {
                format!("{reset} s")
            }
        ));
    }
    if let Some(t) = b.waiting_until {
        let why = match b.waiting_for.as_deref() {
            Some("tracker") => "the tracker asked to wait (429)",
            _ => "the budget is used up",
        };
        let left = (t - plexsync::model::now_secs()).max(0);
        out.push_str(&format!("; waiting {left} s ({why})"));
    }
    if b.backlog_requests > 0 {
        out.push_str(&format!(
            "; backlog {} request(s), about {}",
            b.backlog_requests,
            match b.backlog_eta_secs {
                Some(s) if s >= 120 => format!("{} min", s.div_ceil(60)),
                Some(s) => format!("{s} s"),
                None => "now".into(),
            }
        ));
    }
    out
}

fn print_status(s: &Status) {
    let r = &s.runtime;
    if s.running {
        outln!(
            "daemon:            running {} (up {} s), listening on {}",
            s.version,
            s.uptime_secs,
            s.listen
        );
    } else {
        outln!("daemon:            not running (answered from the store)");
    }
    match (&s.webhook_url, &s.webhook_url_note) {
        (Some(u), _) => outln!("webhook URL:       {u}"),
        (None, Some(why)) => outln!("webhook URL:       none: {why}"),
        (None, None) => outln!("webhook URL:       -"),
    }
    let server = match (&r.plex_server_name, &r.plex_server) {
        (Some(name), Some(id)) => format!(", server \"{name}\" ({id})"),
        (Some(name), None) => format!(", server \"{name}\""),
        (None, Some(id)) => format!(", server {id}"),
        (None, None) => String::new(),
    };
    outln!(
        "plex:              {}{server} (token {})",
        s.plex_url,
        if s.plex_token_set { "set" } else { "NOT set" },
    );
    // Only a request that needed the token counts as "ok"; a rejection shows once, in health.
    if let Some(t) = r.plex_last_ok_at {
        outln!("plex last ok:      {}", at(Some(t), ""));
    }
    outln!(
        "tracker:           {}, catalogue {} shows (key {})",
        match r.tracker_last_ok_at {
            Some(t) => format!("last ok {}", at(Some(t), "")),
            None => "no answer yet".into(),
        },
        r.catalogue_shows,
        if s.tracker_key_set { "set" } else { "NOT set" },
    );
    outln!("last webhook:      {}", at(r.last_webhook_at, "never"));
    match &r.last_poll {
        None => outln!("last poll:         never"),
        Some(lp) if lp.error.is_some() => outln!(
            "last poll:         {} failed (see health)",
            at(Some(lp.finished_at), "")
        ),
        Some(lp) => outln!(
            "last poll:         {}: {} rows, {} new plays, {} duplicates",
            at(Some(lp.finished_at), ""),
            lp.rows_read,
            lp.plays_new,
            lp.duplicates
        ),
    }
    outln!("live:              {}", live_line(&s.live, s.running));
    for c in &s.cursors {
        outln!(
            "poll cursor:       {} up to {}",
            c.key,
            when(Some(c.viewed_at), false)
        );
    }
    let c = &s.counts;
    outln!("plays journaled:   {}", c.journal);
    outln!("awaiting match:    {}", c.pending_resolution);
    outln!(
        "outbox:            {} episode(s) in {} batch(es){}",
        c.outbox_items,
        c.batches,
        match c.oldest_pending_secs {
            Some(age) => format!(", oldest queued {}", ago(plexsync::model::now_secs() - age)),
            None => String::new(),
        }
    );
    if let Some(b) = s.export_budget.as_ref().filter(|b| b.limited) {
        outln!("exports:           {}", export_budget_line(b));
    }
    outln!("dead letters:      {}", c.dead_letters);
    outln!("open conflicts:    {}", c.conflicts);
    outln!("mappings:          {}", c.mappings);
    outln!(
        "webhook loss:      {} play(s) viewed since {} that polling found and no webhook delivered",
        c.webhook_loss,
        match s.first_started_at {
            Some(t) => format!("first start {}", when(Some(t), false)),
            None => "the first start (none yet)".into(),
        }
    );
    if s.health.is_empty() {
        outln!("health:            all good");
        return;
    }
    outln!("health:");
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
        outln!(
            "  {severity:<8} {component:<10} {} (since {})",
            h.message,
            at(Some(h.since), "")
        );
        if let Some(hint) = &h.hint {
            outln!("  {:<8} {:<10} → {hint}", "", "");
        }
    }
}

pub async fn activity(a: &Admin, query: &ActivityQuery, as_json: bool) -> Result<()> {
    let v: ActivityPage = a
        .get(&format!("activity?{}", query.to_query_string()))
        .await?;
    if as_json {
        return print_json(&v);
    }
    outln!(
        "{} {} {} {} {} {} {}  action / error",
        cell("time (UTC)", 19),
        cell("status", 9),
        cell("source", 8),
        cell("event", 14),
        cell("account", 12),
        cell("show", 44),
        cell_right("tries", 5),
    );
    for row in &v.items {
        outln!("{}", activity_line(row));
    }
    let pages = v.total.div_ceil(query.per_page.max(1)).max(1);
    outln!("page {} of {pages}, {} row(s) in all", v.page, v.total);
    Ok(())
}

/// One activity row as a table line, columns by display width.
fn activity_line(row: &Activity) -> String {
    // Export rows carry both titles; older rows only `show` (for exports a tracker id).
    let mut show = match (&row.title, &row.tracker_title) {
        (Some(t), Some(tt)) if t != tt => format!("{t} → {tt}"),
        (Some(t), _) => t.clone(),
        (None, Some(tt)) => tt.clone(),
        (None, None) => row.show.clone().unwrap_or_default(),
    };
    if let (Some(s), Some(e)) = (row.season, row.episode) {
        show = format!("{} S{s:02}E{e:02}", fit(&show, 37));
    }
    let what = match &row.error {
        Some(e) if row.action.is_empty() => e.clone(),
        Some(e) => format!("{} — {e}", row.action),
        None => row.action.clone(),
    };
    // The event says more than the source only when it differs ("export · export" did not).
    let event = row
        .event
        .as_deref()
        .filter(|e| *e != row.source)
        .unwrap_or("");
    format!(
        "{} {} {} {} {} {} {}  {}",
        cell(when(Some(row.at), true).trim_end_matches('Z'), 19),
        cell(row.status.as_str(), 9),
        cell(&row.source, 8),
        cell(event, 14),
        cell(row.account.as_deref().unwrap_or("-"), 12),
        cell(&show, 44),
        cell_right(&row.attempts.map(|n| n.to_string()).unwrap_or_default(), 5),
        fit(&what, 200)
    )
}

pub async fn outbox_list(a: &Admin, as_json: bool) -> Result<()> {
    let v: OutboxView = a.get("outbox").await?;
    if as_json {
        // The API's answer: `batches` is the listing; `counts` and `dead_letters` as before.
        return print_json(&v);
    }
    let c = &v.counts;
    outln!(
        "pending: {} episode(s) in {} batch(es); dead letters: {}{}",
        c.outbox_items,
        c.batches,
        c.dead_letters,
        if c.unreadable_exports > 0 {
            format!(
                "; {} unreadable row(s) skipped (left in the store; the log names them)",
                c.unreadable_exports
            )
        } else {
            String::new()
        }
    );
    if v.batches.is_empty() {
        return Ok(());
    }
    outln!(
        "{} {} {} {} {}  last error",
        cell_right("batch", 6),
        cell("show", 30),
        cell("episodes", 22),
        cell_right("tries", 5),
        cell("next try (UTC)", 19),
    );
    for b in &v.batches {
        let show = b
            .show_title
            .clone()
            .unwrap_or_else(|| format!("tracker show {}", b.show_id));
        let eps: Vec<String> = b
            .episodes
            .iter()
            .map(|e| format!("S{:02}E{:02}", e.season, e.episode))
            .collect();
        let next = if b.dead {
            "dead letter".to_string()
        } else {
            when(b.next_attempt_at_ms, true)
                .trim_end_matches('Z')
                .to_string()
        };
        outln!(
            "{} {} {} {} {}  {}",
            cell_right(&b.id.to_string(), 6),
            cell(&show, 30),
            cell(&eps.join(", "), 22),
            cell_right(&b.attempts.to_string(), 5),
            cell(&next, 19),
            fit(b.last_error.as_deref().unwrap_or(""), 200)
        );
    }
    if c.dead_letters > 0 {
        outln!("`plexsync outbox retry` sends the dead letters again");
    }
    Ok(())
}

pub async fn outbox_retry(a: &Admin, as_json: bool) -> Result<()> {
    let v: Requeued = a.call(Method::POST, "outbox/retry", None::<&()>).await?;
    if as_json {
        return print_json(&v);
    }
    outln!("requeued {} dead-lettered batch(es)", v.requeued_batches);
    if v.brought_forward > 0 {
        outln!(
            "{} batch(es) waiting out a back-off go now",
            v.brought_forward
        );
    }
    Ok(())
}

/// The live source's line of `plexsync status` (issue 13).
fn live_line(l: &plexsync::api::LiveStatus, running: bool) -> String {
    if !l.enabled {
        return "off ([live] enabled = false)".into();
    }
    if !running {
        return "on (connects when the daemon runs)".into();
    }
    let mut out = if l.connected {
        format!("connected since {}", at(l.connected_since, "?"))
    } else {
        match &l.last_error {
            Some(e) => format!("NOT connected ({e})"),
            None => "connecting".into(),
        }
    };
    out += &format!(
        ", last message {}, {} reconnect(s)",
        at(l.last_message_at, "never"),
        l.reconnects
    );
    out
}
