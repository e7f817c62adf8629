//! `conflicts` and `mappings`: list what needs a person, decide, remap, switch sync off and on.
//! A show is named by the id the list prints, its Plex ratingKey or its Plex title.

use anyhow::{Result, bail};
use hyper::Method;

use super::{Admin, print_json};
use plexsync::api::{
    ConflictView, Items, MappingChange, MappingChanged, MappingStatus, MappingView, PlexShowView,
    ResolveAction, ResolveRequest, Resolved, ShowId,
};

/// What `conflicts resolve` decides.
pub enum Resolution {
    Select(String),
    Create,
    Ignore,
}

fn label(title: &str, year: Option<i32>) -> String {
    match year {
        // Plex titles of remakes often carry the year already: "Shōgun (2024)".
        Some(y) if !title.ends_with(&format!("({y})")) => format!("{title} ({y})"),
        _ => title.to_string(),
    }
}

fn plex_label(p: &PlexShowView) -> String {
    label(&p.title, p.year)
}

/// Something `pick` can find by id, Plex ratingKey or Plex title.
trait Named {
    fn id(&self) -> &str;
    fn plex(&self) -> &PlexShowView;
}

impl Named for ConflictView {
    fn id(&self) -> &str {
        &self.id
    }
    fn plex(&self) -> &PlexShowView {
        &self.plex
    }
}

impl Named for MappingView {
    fn id(&self) -> &str {
        &self.id
    }
    fn plex(&self) -> &PlexShowView {
        &self.plex
    }
}

/// Find the one item `given` names: its API id, the Plex ratingKey or the Plex title.
fn pick<'a, T: Named>(items: &'a [T], given: &str, what: &str, list_cmd: &str) -> Result<&'a T> {
    if let Some(exact) = items.iter().find(|i| i.id() == given) {
        return Ok(exact);
    }
    let hits: Vec<&T> = items
        .iter()
        .filter(|i| {
            i.plex().rating_key.as_deref() == Some(given)
                || i.plex().title.eq_ignore_ascii_case(given.trim())
        })
        .collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => bail!("no {what} matches {given:?}; `{list_cmd}` shows them"),
        many => bail!(
            "{given:?} matches {} {what}s ({}); use the id",
            many.len(),
            many.iter().map(|i| i.id()).collect::<Vec<_>>().join(", ")
        ),
    }
}

pub async fn conflicts_list(a: &Admin, as_json: bool) -> Result<()> {
    let v: Items<ConflictView> = a.get("conflicts").await?;
    if as_json {
        return print_json(&v);
    }
    if v.items.is_empty() {
        println!("no open conflicts");
        return Ok(());
    }
    for c in &v.items {
        println!(
            "{}  (ratingKey {}, {} held play(s))",
            plex_label(&c.plex),
            c.plex.rating_key.as_deref().unwrap_or("-"),
            c.held_plays
        );
        println!("  id:     {}", c.id);
        if !c.reason.is_empty() {
            println!("  why:    {}", c.reason);
        }
        if c.candidates.is_empty() {
            println!("  no candidates: --create adds it to the tracker, --ignore never syncs it");
        }
        for k in &c.candidates {
            println!(
                "  {:>5.1}%  show {:<10} {}  [{}]",
                f64::from(k.score) * 100.0,
                k.show_id,
                label(k.title.as_deref().unwrap_or("-"), k.year),
                k.method
            );
        }
    }
    println!(
        "{} open conflict(s). Decide with `plexsync conflicts resolve <ratingKey|title|id> --select SHOW_ID | --create | --ignore`",
        v.items.len()
    );
    Ok(())
}

pub async fn conflicts_resolve(
    a: &Admin,
    given: &str,
    action: Resolution,
    as_json: bool,
) -> Result<()> {
    let all: Items<ConflictView> = a.get("conflicts").await?;
    let conflict = pick(
        &all.items,
        given,
        "open conflict",
        "plexsync conflicts list",
    )?;
    let body = match &action {
        Resolution::Select(show) => ResolveRequest {
            action: ResolveAction::Select,
            show_id: Some(ShowId::Text(show.clone())),
        },
        Resolution::Create => ResolveRequest {
            action: ResolveAction::Create,
            show_id: None,
        },
        Resolution::Ignore => ResolveRequest {
            action: ResolveAction::Ignore,
            show_id: None,
        },
    };
    let v: Resolved = a
        .call(
            Method::POST,
            &format!("conflicts/{}/resolve", conflict.id),
            Some(&body),
        )
        .await?;
    if as_json {
        return print_json(&v);
    }
    let show = plex_label(&conflict.plex);
    match action {
        Resolution::Ignore => println!(
            "{show}: ignored; its {} held play(s) are kept and never sent",
            v.plays_released
        ),
        _ => println!(
            "{show}: mapped; {} held play(s) released, {} episode(s) queued for the tracker",
            v.plays_released, v.episodes_queued
        ),
    }
    Ok(())
}

pub async fn mappings_list(a: &Admin, filter: &str, as_json: bool) -> Result<()> {
    let v: Items<MappingView> = a.get(&format!("mappings?filter={filter}")).await?;
    if as_json {
        return print_json(&v);
    }
    println!(
        "{:<10} {:<34} {:<34} {:<10} {:>5} {:<6} {:<4} {:>6}",
        "ratingKey", "plex show", "tracker show", "method", "conf", "manual", "sync", "synced"
    );
    for m in &v.items {
        let tracker = match &m.tracker {
            None => format!("({})", m.status.as_str()),
            Some(t) => format!(
                "{} {}",
                t.id,
                label(t.title.as_deref().unwrap_or("-"), t.year)
            ),
        };
        let clip = |s: String| s.chars().take(34).collect::<String>();
        println!(
            "{:<10} {:<34} {:<34} {:<10} {:>5} {:<6} {:<4} {:>6}",
            m.plex.rating_key.as_deref().unwrap_or("-"),
            clip(plex_label(&m.plex)),
            clip(tracker),
            m.method.as_deref().unwrap_or("-"),
            m.confidence.map_or("-".into(), |c| format!("{c:.2}")),
            if m.manual { "yes" } else { "no" },
            if m.sync_enabled { "on" } else { "off" },
            m.plays_synced
        );
    }
    println!("{} row(s)", v.items.len());
    Ok(())
}

pub async fn mappings_set(
    a: &Admin,
    given: &str,
    show: Option<String>,
    sync: Option<bool>,
    as_json: bool,
) -> Result<()> {
    let all: Items<MappingView> = a.get("mappings?filter=all").await?;
    let decided: Vec<MappingView> = all
        .items
        .into_iter()
        .filter(|m| m.status != MappingStatus::Conflict)
        .collect();
    let mapping = pick(&decided, given, "mapping", "plexsync mappings list")?;
    let body = MappingChange {
        sync_enabled: sync,
        show_id: show.map(ShowId::Text),
    };
    let v: MappingChanged = a
        .call(
            Method::PATCH,
            &format!("mappings/{}", mapping.id),
            Some(&body),
        )
        .await?;
    if as_json {
        return print_json(&v);
    }
    println!(
        "{} → tracker show {} ({}), sync {}",
        plex_label(&mapping.plex),
        v.show_id,
        v.method,
        if v.sync_enabled { "on" } else { "off" }
    );
    Ok(())
}
