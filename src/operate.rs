//! The CLI's `conflicts` and `mappings` commands (part of the binary, not the library).
//!
//! Each command is one admin API call: sent to the running daemon over its socket, or, when no
//! daemon answers, served by [`plexsync::admin::offline`] on the store directly, so both paths
//! obey the same rules. People get tables; `--json` prints the API's answer as is.

use anyhow::{Context, Result, bail};
use hyper::Method;
use std::sync::Arc;

use plexsync::admin;
use plexsync::client::{self, ClientError};
use plexsync::config::Config;
use plexsync::daemon::Shared;
use serde_json::{Value, json};

/// What `conflicts resolve` decides.
pub enum Resolution {
    Select(String),
    Create,
    Ignore,
}

/// Where the CLI's admin calls go: the running daemon, or the store opened in process.
pub struct Admin {
    cfg: Config,
    offline: tokio::sync::OnceCell<Arc<Shared>>,
}

impl Admin {
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            offline: tokio::sync::OnceCell::new(),
        }
    }

    /// One admin call: the daemon if it runs, else the store. `path` follows `/api/`.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let body = body.map(|b| b.to_string().into_bytes());
        if self.offline.get().is_none() {
            if let Some(sock) = self.cfg.socket_path() {
                match client::request(
                    &sock,
                    method.as_str(),
                    &format!("/api/{path}"),
                    body.clone(),
                )
                .await
                {
                    Ok(b) => {
                        return serde_json::from_slice(&b).context("the daemon sent invalid JSON");
                    }
                    Err(ClientError::NotRunning(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let shared = self
            .offline
            .get_or_try_init(|| admin::open_offline(self.cfg.clone()))
            .await
            .map_err(|e| match e {
                admin::OfflineError::Daemon(plexsync::daemon::DaemonError::Store(
                    plexsync::store::StoreError::Locked,
                )) => anyhow::anyhow!(
                    "the store {} is in use by a running daemon, but its admin socket does not answer (is [admin] socket disabled?)",
                    self.cfg.store_path().display()
                ),
                e => e.into(),
            })?;
        let bytes = admin::call(shared, method, path, body.unwrap_or_default()).await?;
        serde_json::from_slice(&bytes).context("the admin API sent invalid JSON")
    }

    async fn items(&self, path: &str) -> Result<Vec<Value>> {
        let v = self.call(Method::GET, path, None).await?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn show_label(title: &Value, year: &Value) -> String {
    match year.as_i64() {
        Some(y) => format!("{} ({y})", text(title)),
        None => text(title),
    }
}

/// Find the one item `given` names: its API id, the Plex ratingKey or the Plex title.
fn pick<'a>(items: &'a [Value], given: &str, what: &str, list_cmd: &str) -> Result<&'a Value> {
    if let Some(exact) = items.iter().find(|i| i["id"].as_str() == Some(given)) {
        return Ok(exact);
    }
    let hits: Vec<&Value> = items
        .iter()
        .filter(|i| {
            i["plex"]["rating_key"].as_str() == Some(given)
                || i["plex"]["title"]
                    .as_str()
                    .is_some_and(|t| t.eq_ignore_ascii_case(given.trim()))
        })
        .collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => bail!("no {what} matches {given:?}; `{list_cmd}` shows them"),
        many => bail!(
            "{given:?} matches {} {what}s ({}); use the id",
            many.len(),
            many.iter()
                .map(|i| text(&i["id"]))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub async fn conflicts_list(a: &Admin, as_json: bool) -> Result<()> {
    let v = a.call(Method::GET, "conflicts", None).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let items = v["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("no open conflicts");
        return Ok(());
    }
    for c in &items {
        let p = &c["plex"];
        println!(
            "{}  (ratingKey {}, {} held play(s))",
            show_label(&p["title"], &p["year"]),
            text(&p["rating_key"]),
            c["held_plays"]
        );
        println!("  id:     {}", text(&c["id"]));
        if let Some(r) = c["reason"].as_str() {
            println!("  why:    {r}");
        }
        let cands = c["candidates"].as_array().cloned().unwrap_or_default();
        if cands.is_empty() {
            println!("  no candidates: --create adds it to the tracker, --ignore never syncs it");
        }
        for k in cands {
            println!(
                "  {:>5.1}%  show {:<10} {}  [{}]",
                k["score"].as_f64().unwrap_or(0.0) * 100.0,
                text(&k["show_id"]),
                show_label(&k["title"], &k["year"]),
                text(&k["method"])
            );
        }
    }
    println!(
        "{} open conflict(s). Decide with `plexsync conflicts resolve <ratingKey|title|id> --select SHOW_ID | --create | --ignore`",
        items.len()
    );
    Ok(())
}

pub async fn conflicts_resolve(
    a: &Admin,
    given: &str,
    action: Resolution,
    as_json: bool,
) -> Result<()> {
    let all = a.items("conflicts").await?;
    let conflict = pick(&all, given, "open conflict", "plexsync conflicts list")?;
    let id = text(&conflict["id"]);
    let body = match &action {
        Resolution::Select(show) => json!({ "action": "select", "show_id": show }),
        Resolution::Create => json!({ "action": "create" }),
        Resolution::Ignore => json!({ "action": "ignore" }),
    };
    let v = a
        .call(Method::POST, &format!("conflicts/{id}/resolve"), Some(body))
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let show = show_label(&conflict["plex"]["title"], &conflict["plex"]["year"]);
    match action {
        Resolution::Ignore => println!(
            "{show}: ignored; its {} held play(s) are kept and never sent",
            v["plays_released"]
        ),
        _ => println!(
            "{show}: mapped; {} held play(s) released, {} episode(s) queued for the tracker",
            v["plays_released"], v["episodes_queued"]
        ),
    }
    Ok(())
}

pub async fn mappings_list(a: &Admin, filter: &str, as_json: bool) -> Result<()> {
    let v = a
        .call(Method::GET, &format!("mappings?filter={filter}"), None)
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let items = v["items"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<10} {:<34} {:<34} {:<10} {:>5} {:<6} {:<4} {:>6}",
        "ratingKey", "plex show", "tracker show", "method", "conf", "manual", "sync", "synced"
    );
    for m in &items {
        let p = &m["plex"];
        let t = &m["tracker"];
        let tracker = if t.is_null() {
            format!("({})", text(&m["status"]))
        } else {
            format!("{} {}", text(&t["id"]), show_label(&t["title"], &t["year"]))
        };
        let clip = |s: String| s.chars().take(34).collect::<String>();
        println!(
            "{:<10} {:<34} {:<34} {:<10} {:>5} {:<6} {:<4} {:>6}",
            text(&p["rating_key"]),
            clip(show_label(&p["title"], &p["year"])),
            clip(tracker),
            text(&m["method"]),
            m["confidence"]
                .as_f64()
                .map_or("-".into(), |c| format!("{:.2}", c)),
            if m["manual"] == true { "yes" } else { "no" },
            if m["sync_enabled"] == true {
                "on"
            } else {
                "off"
            },
            m["plays_synced"]
        );
    }
    println!("{} row(s)", items.len());
    Ok(())
}

pub async fn mappings_set(
    a: &Admin,
    given: &str,
    show: Option<String>,
    sync: Option<bool>,
    as_json: bool,
) -> Result<()> {
    let all: Vec<Value> = a
        .items("mappings?filter=all")
        .await?
        .into_iter()
        .filter(|m| m["status"] != "conflict")
        .collect();
    let mapping = pick(&all, given, "mapping", "plexsync mappings list")?;
    let id = text(&mapping["id"]);
    let mut body = serde_json::Map::new();
    if let Some(s) = show {
        body.insert("show_id".into(), Value::String(s));
    }
    if let Some(on) = sync {
        body.insert("sync_enabled".into(), Value::Bool(on));
    }
    let v = a
        .call(
            Method::PATCH,
            &format!("mappings/{id}"),
            Some(Value::Object(body)),
        )
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{} → tracker show {} ({}), sync {}",
        show_label(&mapping["plex"]["title"], &mapping["plex"]["year"]),
        text(&v["show_id"]),
        text(&v["method"]),
        if v["sync_enabled"] == true {
            "on"
        } else {
            "off"
        }
    );
    Ok(())
}
