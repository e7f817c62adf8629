//! `conflicts`, `mappings` and `shows`: list what needs a person, decide (one show or several
//! at once), search the tracker's catalogue for the right show, remap, switch sync off and on.
//! A show is named by the short id the lists print, its Plex ratingKey or its Plex title
//! (case- and accent-insensitive, with or without its year: `"Lucky Man (2016)"`).

use anyhow::{Result, bail};
use hyper::Method;

use super::table::{cell, cell_right, fit};
use super::{Admin, outln, print_json, when};
use plexsync::admin::fold;
use plexsync::api::{
    BulkResolveRequest, BulkResolved, ConflictView, Items, MAX_PER_PAGE, MappingChange,
    MappingChanged, MappingPage, MappingStatus, MappingView, PlexShowView, ResolveAction,
    ResolveRequest, Resolved, ShowHit, ShowId,
};

/// What `conflicts resolve` decides.
pub enum Resolution {
    Select(String),
    Create,
    Ignore,
}

/// "Title (year)", without doubling a year the title already ends with ("Shōgun (2024)").
pub fn label(title: &str, year: Option<i32>) -> String {
    match year {
        Some(y) if !title.trim_end().ends_with(&format!("({y})")) => format!("{title} ({y})"),
        _ => title.to_string(),
    }
}

fn plex_label(p: &PlexShowView) -> String {
    label(&p.title, p.year)
}

/// A URL query value, percent-encoded.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

/// Find the one item `given` names: its API id (or the long id of earlier releases, which
/// the API still accepts), the Plex ratingKey, or the Plex title — folded, with or without
/// the year the list prints after it.
fn pick<'a, T: Named>(items: &'a [T], given: &str, what: &str, list_cmd: &str) -> Result<&'a T> {
    let given = given.trim();
    let legacy = plexsync::admin::id_from_legacy(given);
    if let Some(exact) = items
        .iter()
        .find(|i| i.id() == given || legacy.as_deref() == Some(i.id()))
    {
        return Ok(exact);
    }
    let by_key: Vec<&T> = items
        .iter()
        .filter(|i| i.plex().rating_key.as_deref() == Some(given))
        .collect();
    let hits = if by_key.is_empty() {
        let want = fold(given);
        items
            .iter()
            .filter(|i| {
                let p = i.plex();
                !want.is_empty()
                    && (fold(&p.title) == want
                        || fold(&plex_label(p)) == want
                        || fold(without_year(&p.title)) == want)
            })
            .collect()
    } else {
        by_key
    };
    match hits.as_slice() {
        [one] => Ok(one),
        [] => bail!("no {what} matches {given:?}; `{list_cmd}` shows them"),
        many => bail!(
            "{given:?} matches {} {what}s: {}; use the id",
            many.len(),
            many.iter()
                .map(|i| format!("{} {}", i.id(), plex_label(i.plex())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The title without a trailing "(YYYY)" it may carry ("Shōgun (2024)" → "Shōgun").
fn without_year(title: &str) -> &str {
    let t = title.trim_end();
    match t.strip_suffix(')').and_then(|r| r.rsplit_once('(')) {
        Some((head, y)) if y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()) => head.trim_end(),
        _ => t,
    }
}

/// "tmdb 1234 · tvdb 79456 · imdb tt0446579", or "-".
fn ids_text(tmdb: Option<u64>, tvdb: Option<u64>, imdb: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(t) = tmdb {
        parts.push(format!("tmdb {t}"));
    }
    if let Some(t) = tvdb {
        parts.push(format!("tvdb {t}"));
    }
    if let Some(t) = imdb {
        parts.push(format!("imdb {t}"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" · ")
    }
}

pub async fn conflicts_list(a: &Admin, as_json: bool) -> Result<()> {
    let v: Items<ConflictView> = a.get("conflicts").await?;
    if as_json {
        return print_json(&v);
    }
    if v.items.is_empty() {
        outln!("no open conflicts");
        return Ok(());
    }
    for c in &v.items {
        let p = &c.plex;
        outln!("{}  [id {}]", plex_label(p), c.id);
        outln!(
            "  plex:    ratingKey {} · library {} · {}",
            p.rating_key.as_deref().unwrap_or("-"),
            p.library.as_deref().unwrap_or("-"),
            ids_text(p.tmdb_id, p.tvdb_id, p.imdb_id.as_deref())
        );
        let span = match (c.first_play_at, c.last_play_at) {
            (Some(f), Some(l)) if f != l => {
                format!(
                    ", first {} last {}",
                    when(Some(f), false),
                    when(Some(l), false)
                )
            }
            (Some(f), _) => format!(", {}", when(Some(f), false)),
            _ => String::new(),
        };
        outln!("  held:    {} play(s){span}", c.held_plays);
        if !c.reason.is_empty() {
            outln!("  why:     {}", fit(&c.reason, 100));
        }
        if let Some(w) = &c.waiting {
            outln!("  waiting: {}", fit(w, 140));
        } else if c.candidates.is_empty() {
            outln!(
                "  no candidates: `plexsync shows search` finds a show for --select; --create adds it, --ignore holds its plays"
            );
        }
        for k in &c.candidates {
            outln!(
                "  {} {} {} {} [{}]",
                cell_right(&format!("{:.0}%", f64::from(k.score) * 100.0), 4),
                cell(&k.show_id, 12),
                cell(&label(k.title.as_deref().unwrap_or("-"), k.year), 36),
                cell(&ids_text(k.tmdb_id, k.tvdb_id, k.imdb_id.as_deref()), 34),
                k.method
            );
        }
    }
    outln!(
        "{} open conflict(s). Decide with `plexsync conflicts resolve ID|ratingKey|title --select SHOW_ID | --create | --ignore` (several ids: --create or --ignore)",
        v.items.len()
    );
    Ok(())
}

fn request(action: &Resolution) -> ResolveRequest {
    match action {
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
    }
}

/// Decide one conflict, or several at once (`--create` / `--ignore`).
pub async fn conflicts_resolve(
    a: &Admin,
    given: &[String],
    action: Resolution,
    as_json: bool,
) -> Result<()> {
    let all: Items<ConflictView> = a.get("conflicts").await?;
    let mut picked = Vec::with_capacity(given.len());
    for g in given {
        picked.push(pick(
            &all.items,
            g,
            "open conflict",
            "plexsync conflicts list",
        )?);
    }
    if let [conflict] = picked.as_slice() {
        let v: Resolved = a
            .call(
                Method::POST,
                &format!("conflicts/{}/resolve", conflict.id),
                Some(&request(&action)),
            )
            .await?;
        if as_json {
            return print_json(&v);
        }
        let show = plex_label(&conflict.plex);
        match action {
            Resolution::Ignore => outln!(
                "{show}: ignored; its {} held play(s) stay journaled and are sent if you map it later (`plexsync mappings set {} --show SHOW_ID`)",
                v.plays_released,
                conflict.id
            ),
            _ => outln!(
                "{show}: mapped; {} held play(s) released, {} episode(s) queued for the tracker",
                v.plays_released,
                v.episodes_queued
            ),
        }
        return Ok(());
    }
    let action = match action {
        Resolution::Select(_) => {
            bail!(
                "--select names one show: decide one conflict at a time (several ids take --create or --ignore)"
            )
        }
        Resolution::Create => ResolveAction::Create,
        Resolution::Ignore => ResolveAction::Ignore,
    };
    // One show named twice (by id and by title, not side by side) is decided once.
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<String> = picked
        .iter()
        .map(|c| c.id.clone())
        .filter(|id| seen.insert(id.clone()))
        .collect();
    let v: BulkResolved = a
        .call(
            Method::POST,
            "conflicts/resolve",
            Some(&BulkResolveRequest { ids, action }),
        )
        .await?;
    let failed = v.items.iter().filter(|i| !i.ok).count();
    if as_json {
        print_json(&v)?;
    } else {
        for i in &v.items {
            let show = picked
                .iter()
                .find(|c| c.id == i.id)
                .map_or_else(|| i.id.clone(), |c| plex_label(&c.plex));
            match &i.error {
                None => outln!(
                    "{}  {}: {} play(s) released, {} episode(s) queued",
                    cell(&i.id, 12),
                    show,
                    i.plays_released,
                    i.episodes_queued
                ),
                Some(e) => outln!("{}  {}: failed: {e}", cell(&i.id, 12), show),
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} conflict(s) were not decided", v.items.len());
    }
    Ok(())
}

/// What `mappings list` asks for.
pub struct MappingsList {
    pub status: &'static str,
    pub search: Option<String>,
    pub sort: String,
    pub page: usize,
    pub per_page: usize,
}

pub async fn mappings_list(a: &Admin, l: &MappingsList, as_json: bool) -> Result<()> {
    let mut path = format!(
        "mappings?status={}&sort={}&page={}&per_page={}",
        l.status,
        encode(&l.sort),
        l.page,
        l.per_page
    );
    if let Some(q) = &l.search {
        path.push_str(&format!("&q={}", encode(q)));
    }
    let v: MappingPage = a.get(&path).await?;
    if as_json {
        return print_json(&v);
    }
    outln!(
        "{} {} {} {} {} {} {}",
        cell("id", 12),
        cell("ratingKey", 9),
        cell("plex show", 34),
        cell("tracker show", 34),
        cell("method", 10),
        cell("sync", 4),
        cell_right("plays", 6),
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
        let plays = match m.held_plays {
            Some(h) => format!("{h} held"),
            None => m.plays_synced.to_string(),
        };
        outln!(
            "{} {} {} {} {} {} {}",
            cell(&m.id, 12),
            cell(m.plex.rating_key.as_deref().unwrap_or("-"), 9),
            cell(&plex_label(&m.plex), 34),
            cell(&tracker, 34),
            cell(m.method.as_deref().unwrap_or("-"), 10),
            cell(
                match m.status {
                    MappingStatus::Mapped if m.sync_enabled => "on",
                    _ => "off",
                },
                4
            ),
            cell_right(&plays, 6),
        );
    }
    let pages = v.total.div_ceil(l.per_page.max(1)).max(1);
    outln!("{} row(s) · page {} of {pages}", v.total, v.page);
    Ok(())
}

/// Every row of the listing (all pages), for naming one by id, ratingKey or title.
async fn all_rows(a: &Admin) -> Result<Vec<MappingView>> {
    let mut rows = Vec::new();
    for page in 1.. {
        let v: MappingPage = a
            .get(&format!(
                "mappings?status=all&page={page}&per_page={MAX_PER_PAGE}"
            ))
            .await?;
        let n = v.items.len();
        rows.extend(v.items);
        if n < MAX_PER_PAGE || rows.len() >= v.total {
            break;
        }
    }
    Ok(rows)
}

pub async fn mappings_set(
    a: &Admin,
    given: &str,
    show: Option<String>,
    sync: Option<bool>,
    as_json: bool,
) -> Result<()> {
    let rows = all_rows(a).await?;
    let mapping = pick(&rows, given, "mapping", "plexsync mappings list")?;
    if mapping.status == MappingStatus::Conflict && show.is_none() {
        bail!(
            "{} waits in a conflict: choose its show with --show SHOW_ID (`plexsync shows search` finds it)",
            plex_label(&mapping.plex)
        );
    }
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
    let released = if v.plays_released > 0 || v.episodes_queued > 0 {
        format!(
            "; {} held play(s) released, {} episode(s) queued for the tracker",
            v.plays_released, v.episodes_queued
        )
    } else {
        String::new()
    };
    outln!(
        "{} → tracker show {} ({}), sync {}{released}",
        plex_label(&mapping.plex),
        v.show_id,
        v.method,
        if v.sync_enabled { "on" } else { "off" }
    );
    Ok(())
}

pub async fn shows_search(
    a: &Admin,
    query: &str,
    year: Option<i32>,
    limit: usize,
    as_json: bool,
) -> Result<()> {
    let mut path = format!("shows?q={}&limit={limit}", encode(query));
    if let Some(y) = year {
        path.push_str(&format!("&year={y}"));
    }
    let v: Items<ShowHit> = a.get(&path).await?;
    if as_json {
        return print_json(&v);
    }
    if v.items.is_empty() {
        outln!("no tracker show resembles {query:?}");
        return Ok(());
    }
    outln!(
        "{} {} {} {}",
        cell("show id", 12),
        cell("title", 40),
        cell("ids", 40),
        cell_right("score", 5)
    );
    for s in &v.items {
        outln!(
            "{} {} {} {}",
            cell(&s.id, 12),
            cell(&label(&s.title, s.year), 40),
            cell(&ids_text(s.tmdb_id, s.tvdb_id, s.imdb_id.as_deref()), 40),
            cell_right(&format!("{:.0}%", f64::from(s.score) * 100.0), 5)
        );
    }
    outln!(
        "{} show(s). Map with `plexsync conflicts resolve ID --select SHOW_ID` or `plexsync mappings set ID --show SHOW_ID`",
        v.items.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, rk: &str, title: &str, year: Option<i32>) -> ConflictView {
        ConflictView {
            id: id.into(),
            plex: PlexShowView {
                rating_key: Some(rk.into()),
                title: title.into(),
                year,
                library: None,
                guids: vec![],
                tmdb_id: None,
                tvdb_id: None,
                imdb_id: None,
            },
            reason: String::new(),
            held_plays: 0,
            first_play_at: None,
            last_play_at: None,
            created_at: 0,
            updated_at: 0,
            candidates: vec![],
            waiting: None,
        }
    }

    #[test]
    fn a_show_is_named_by_id_rating_key_or_title_with_or_without_its_year() {
        let rows = vec![
            row("aaaaaaaaaaaa", "11", "Lucky Man", Some(2016)),
            row("bbbbbbbbbbbb", "12", "Shōgun (2024)", Some(2024)),
            row("cccccccccccc", "13", "Kanon", Some(2002)),
            row("dddddddddddd", "14", "Kanon", Some(2006)),
        ];
        let id = |g: &str| pick(&rows, g, "x", "l").map(|r| r.id.clone());
        assert_eq!(id("Lucky Man").unwrap(), "aaaaaaaaaaaa");
        assert_eq!(id("lucky man (2016)").unwrap(), "aaaaaaaaaaaa");
        assert_eq!(id(" LUCKY MAN ").unwrap(), "aaaaaaaaaaaa");
        assert_eq!(id("shogun").unwrap(), "bbbbbbbbbbbb");
        assert_eq!(id("12").unwrap(), "bbbbbbbbbbbb");
        assert_eq!(id("dddddddddddd").unwrap(), "dddddddddddd");
        assert_eq!(id("Kanon (2006)").unwrap(), "dddddddddddd");
        let e = id("Kanon").unwrap_err().to_string();
        assert!(e.contains("matches 2") && e.contains("Kanon (2002)"), "{e}");
        assert!(id("Lucky").is_err());
    }

    #[test]
    fn a_year_the_title_carries_is_not_doubled() {
        assert_eq!(label("Shōgun (2024)", Some(2024)), "Shōgun (2024)");
        assert_eq!(label("Lucky Man", Some(2016)), "Lucky Man (2016)");
        assert_eq!(label("Lucky Man", None), "Lucky Man");
        assert_eq!(encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
