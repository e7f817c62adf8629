//! The `plexsync` command line: parses arguments and calls into the library. Commands that
//! change or read state talk to the running daemon over its admin socket and fall back to the
//! store file when no daemon answers.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use plexsync::client::{self, ClientError};
use plexsync::config::Config;
use plexsync::secrets::MasterKey;
use plexsync::store::Store;

mod operate;

#[derive(Parser)]
#[command(
    name = "plexsync",
    version,
    about = "Keeps a self-hosted TV tracker in step with what people watch on Plex"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Path of plexsync.toml
    #[arg(
        long,
        short,
        default_value = "/etc/plexsync/plexsync.toml",
        env = "PLEXSYNC_CONFIG"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon (the systemd service)
    Run(ConfigArg),
    /// Validate the config file; errors name the line and key
    Check(ConfigArg),
    /// Manage stored secrets (encrypted in the store)
    Secret {
        #[command(subcommand)]
        cmd: SecretCmd,
    },
    /// Print the URL to paste into Plex (Settings → Webhooks)
    WebhookUrl(ConfigArg),
    /// Print a link that logs a browser in to the web page (it holds the admin token)
    WebUrl(ConfigArg),
    /// Show the daemon's status
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Recent activity (webhooks, exports)
    Activity {
        #[command(flatten)]
        config: ConfigArg,
        /// success, failed, ignored or duplicate
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: usize,
        #[arg(long)]
        json: bool,
    },
    /// Import the Plex watch history since a date through the pipeline
    Backfill {
        #[command(flatten)]
        config: ConfigArg,
        /// First day to import, YYYY-MM-DD (UTC)
        #[arg(long)]
        since: String,
        /// Store nothing; print what would be exported
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Offline dry run of the matcher chain on JSON-lines queries against a catalogue file
    Match {
        #[command(flatten)]
        config: ConfigArg,
        /// Catalogue, one show per line: {"id", "title", "year", "tmdb_id", "tvdb_id", "imdb_id", "original_title", "aliases"}
        #[arg(long)]
        catalog: PathBuf,
        /// Queries, one per line: {"qid", "title", "year", "guids"}
        #[arg(long)]
        queries: PathBuf,
        /// Print the summary as JSON too
        #[arg(long)]
        json: bool,
    },
    /// The export outbox
    Outbox {
        #[command(subcommand)]
        cmd: OutboxCmd,
    },
    /// The master key that encrypts stored secrets
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Re-encrypt every stored secret under a new key, in one transaction (daemon stopped)
    Rekey {
        /// The new key file (e.g. from `plexsync key generate`)
        #[arg(long, value_name = "FILE")]
        new_key: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Shows no matcher could map with confidence: list them, decide
    Conflicts {
        #[command(subcommand)]
        cmd: ConflictsCmd,
    },
    /// Plex show → tracker show mappings: list, remap, enable or disable sync
    Mappings {
        #[command(subcommand)]
        cmd: MappingsCmd,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Write a new random 32-byte key to FILE (mode 0600; never overwrites)
    Generate { file: PathBuf },
}

#[derive(Subcommand)]
enum ConflictsCmd {
    /// Open conflicts, newest first, with their candidates
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Decide a conflict: the held plays go to the tracker at once (select, create)
    #[command(group(clap::ArgGroup::new("action").required(true).args(["select", "create", "ignore"])))]
    Resolve {
        /// The conflict: its id, the Plex ratingKey or the Plex title (as `conflicts list` shows)
        id: String,
        /// Map the show to this tracker show id
        #[arg(long, value_name = "SHOW_ID")]
        select: Option<String>,
        /// Create the show in the tracker and map it
        #[arg(long)]
        create: bool,
        /// Never sync this show (its plays are kept, not sent)
        #[arg(long)]
        ignore: bool,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum MappingsCmd {
    /// Every mapping (or only the unmapped / conflicted shows)
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only shows that are ignored (not synced)
        #[arg(long, conflicts_with = "conflicts")]
        unmapped: bool,
        /// Only shows waiting in a conflict
        #[arg(long)]
        conflicts: bool,
        #[arg(long)]
        json: bool,
    },
    /// Change a mapping: remap it to another tracker show, or switch its sync off or on
    #[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["show", "disable", "enable"])))]
    Set {
        /// The mapping: its id, the Plex ratingKey or the Plex title (as `mappings list` shows)
        id: String,
        /// Map the Plex show to this tracker show id (a manual mapping)
        #[arg(long, value_name = "SHOW_ID")]
        show: Option<String>,
        /// Stop syncing this show
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Sync this show again
        #[arg(long)]
        enable: bool,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SecretCmd {
    /// Read a secret from stdin and store it: plex-token, tracker-key, tmdb-key, admin-token
    Set {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum OutboxCmd {
    /// Pending and dead-lettered exports
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Move dead-lettered exports back to pending
    Retry {
        #[command(flatten)]
        config: ConfigArg,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plexsync: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plexsync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn init_logging(cfg: &Config) {
    plexsync::logging::init(&cfg.log.level);
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Run(c) => run(&c.config).await,
        Cmd::Check(c) => {
            let cfg = load(&c.config)?;
            plexsync::daemon::install_tls_provider();
            // The stored secrets too: a config that cannot start with them is not OK.
            let secrets = stored_secrets(&cfg).with_context(|| {
                format!(
                    "{}: the stored secrets cannot be read",
                    cfg.store_path().display()
                )
            })?;
            plexsync::daemon::validate_secrets(&cfg, &secrets)
                .map_err(|e| anyhow::anyhow!("{}: {e}", c.config.display()))?;
            println!(
                "{}: OK ({} stored secret(s) checked)",
                c.config.display(),
                secrets.len()
            );
            Ok(())
        }
        Cmd::Secret {
            cmd: SecretCmd::Set { name, config },
        } => secret_set(&config.config, &name).await,
        Cmd::WebhookUrl(c) => webhook_url(&c.config).await,
        Cmd::WebUrl(c) => web_url(&c.config).await,
        Cmd::Status { config, json } => status(&config.config, json).await,
        Cmd::Activity {
            config,
            status,
            page,
            json,
        } => activity(&config.config, status, page, json).await,
        Cmd::Backfill {
            config,
            since,
            dry_run,
            json,
        } => backfill(&config.config, &since, dry_run, json).await,
        Cmd::Match {
            config,
            catalog,
            queries,
            json,
        } => {
            let cfg = load(&config.config)?;
            plexsync::daemon::install_tls_provider();
            let secrets = offline_secrets(&cfg);
            let stdout = std::io::stdout();
            let summary = plexsync::matching::run_file(
                &cfg,
                &secrets,
                &catalog,
                &queries,
                &mut stdout.lock(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                eprint!("{}", summary.human());
            }
            Ok(())
        }
        Cmd::Outbox {
            cmd: OutboxCmd::List { config, json },
        } => outbox_list(&config.config, json).await,
        Cmd::Outbox {
            cmd: OutboxCmd::Retry { config },
        } => outbox_retry(&config.config).await,
        Cmd::Key {
            cmd: KeyCmd::Generate { file },
        } => {
            let key = plexsync::secrets::generate_key_file(&file)?;
            println!(
                "wrote a new key to {} (mode 0600), key id {}",
                file.display(),
                key.id()
            );
            Ok(())
        }
        Cmd::Rekey { new_key, config } => rekey(&config.config, &new_key).await,
        Cmd::Conflicts {
            cmd: ConflictsCmd::List { config, json },
        } => operate::conflicts_list(&operate::Admin::new(load(&config.config)?), json).await,
        Cmd::Conflicts {
            cmd:
                ConflictsCmd::Resolve {
                    id,
                    select,
                    create,
                    ignore,
                    config,
                    json,
                },
        } => {
            let action = match (select, create, ignore) {
                (Some(show), _, _) => operate::Resolution::Select(show),
                (None, true, _) => operate::Resolution::Create,
                _ => operate::Resolution::Ignore,
            };
            operate::conflicts_resolve(
                &operate::Admin::new(load(&config.config)?),
                &id,
                action,
                json,
            )
            .await
        }
        Cmd::Mappings {
            cmd:
                MappingsCmd::List {
                    config,
                    unmapped,
                    conflicts,
                    json,
                },
        } => {
            let filter = match (unmapped, conflicts) {
                (true, _) => "unmapped",
                (_, true) => "conflicts",
                _ => "all",
            };
            operate::mappings_list(&operate::Admin::new(load(&config.config)?), filter, json).await
        }
        Cmd::Mappings {
            cmd:
                MappingsCmd::Set {
                    id,
                    show,
                    disable,
                    enable,
                    config,
                    json,
                },
        } => {
            let sync = match (disable, enable) {
                (true, _) => Some(false),
                (_, true) => Some(true),
                _ => None,
            };
            operate::mappings_set(
                &operate::Admin::new(load(&config.config)?),
                &id,
                show,
                sync,
                json,
            )
            .await
        }
    }
}

async fn run(path: &Path) -> Result<()> {
    let cfg = load(path)?;
    init_logging(&cfg);
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| {
            format!(
                "{}: key `server.listen`: cannot listen on {}",
                path.display(),
                cfg.server.listen
            )
        })?;
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM");
                    return std::future::pending().await;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    plexsync::daemon::run(cfg, listener, shutdown)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn socket(cfg: &Config) -> Option<PathBuf> {
    cfg.socket_path()
}

/// Ask the daemon; `Ok(None)` when it is not running.
async fn ask(
    cfg: &Config,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Option<serde_json::Value>> {
    let Some(sock) = socket(cfg) else {
        return Ok(None);
    };
    match client::request(&sock, method, path, body).await {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).context("daemon sent invalid JSON")?,
        )),
        Err(ClientError::NotRunning(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn open_rw(cfg: &Config) -> Result<Store> {
    Store::open(&cfg.store_path()).map_err(|e| match e {
        plexsync::store::StoreError::Locked => anyhow::anyhow!(
            "the store {} is in use by a running daemon, but its admin socket does not answer (is [admin] socket disabled?)",
            cfg.store_path().display()
        ),
        e => e.into(),
    })
}

async fn secret_set(path: &Path, name: &str) -> Result<()> {
    let cfg = load(path)?;
    plexsync::secrets::check_name(name)?;
    let mut value = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut value)
        .context("cannot read the secret from stdin")?;
    let value = value.trim();
    if value.is_empty() {
        bail!("no secret on stdin (e.g. `printf %s \"$TOKEN\" | plexsync secret set {name}`)");
    }
    plexsync::secrets::check_value(name, value)?;
    if ask(
        &cfg,
        "PUT",
        &format!("/api/secrets/{name}"),
        Some(value.as_bytes().to_vec()),
    )
    .await?
    .is_some()
    {
        println!("stored {name} (the running daemon uses it now)");
        return Ok(());
    }
    let key = MasterKey::load_or_create(&cfg.key_path(), true)?;
    let store = open_rw(&cfg)?;
    // All or nothing, as the daemon does it: refused by the plugins means not stored.
    let mut secrets = plexsync::daemon::load_secrets(&store, &key)?;
    secrets.insert(
        name.to_string(),
        plexsync_plugin_api::Secret::new(value.to_string()),
    );
    plexsync::daemon::install_tls_provider();
    plexsync::daemon::validate_secrets(&cfg, &secrets)
        .map_err(|e| anyhow::anyhow!("{name} not stored: {e}"))?;
    store
        .put_secret(name.to_string(), key.seal(name, value)?)
        .await?;
    println!("stored {name}");
    Ok(())
}

async fn rekey(path: &Path, new_key: &Path) -> Result<()> {
    let cfg = load(path)?;
    let new = MasterKey::load_or_create(new_key, false)?;
    let old = MasterKey::load_or_create(&cfg.key_path(), false)?;
    if old.id() == new.id() {
        bail!(
            "--new-key {} is the key in use ({}); generate another with `plexsync key generate FILE`",
            new_key.display(),
            cfg.key_path().display()
        );
    }
    let store = match Store::open(&cfg.store_path()) {
        Err(plexsync::store::StoreError::Locked) => bail!(
            "the daemon is running; stop it first (`systemctl stop plexsync`): its key cannot change under it"
        ),
        other => other?,
    };
    let n = plexsync::daemon::rekey(&store, &old, &new).await?;
    println!(
        "re-encrypted {n} secret(s) under key {} (was {}).",
        new.id(),
        old.id()
    );
    println!(
        "Now make {} the key: point [secrets] key_file at it (or replace {} with it, or the systemd credential), then start the daemon.",
        new_key.display(),
        cfg.key_path().display()
    );
    Ok(())
}

/// Print a URL for people (stdout) and, when it was guessed, which address it uses (stderr).
fn print_url(url: &str, note: Option<&str>) {
    println!("{url}");
    if let Some(n) = note {
        eprintln!("plexsync: note: {n}");
    }
}

async fn webhook_url(path: &Path) -> Result<()> {
    let cfg = load(path)?;
    if let Some(v) = ask(&cfg, "GET", "/api/webhook-url", None).await? {
        print_url(v["url"].as_str().unwrap_or_default(), v["note"].as_str());
        return Ok(());
    }
    let key = MasterKey::load_or_create(&cfg.key_path(), true)?;
    let store = open_rw(&cfg)?;
    let secret = plexsync::daemon::ensure_webhook_secret(&store, &key).await?;
    let listen = cfg.server.listen.parse().context("server.listen")?;
    let b = plexsync::daemon::webhook_url(&cfg, listen, &secret)?;
    print_url(&b.url, b.note.as_deref());
    Ok(())
}

async fn web_url(path: &Path) -> Result<()> {
    let cfg = load(path)?;
    if let Some(v) = ask(&cfg, "GET", "/api/web-url", None).await? {
        print_url(v["url"].as_str().unwrap_or_default(), v["note"].as_str());
        return Ok(());
    }
    let key = MasterKey::load_or_create(&cfg.key_path(), true)?;
    let store = open_rw(&cfg)?;
    let token = plexsync::daemon::ensure_admin_token(&store, &key).await?;
    let listen = cfg.server.listen.parse().context("server.listen")?;
    let b = plexsync::daemon::web_url(&cfg, listen, &token)?;
    print_url(&b.url, b.note.as_deref());
    Ok(())
}

async fn status(path: &Path, as_json: bool) -> Result<()> {
    let cfg = load(path)?;
    let v = match ask(&cfg, "GET", "/api/status", None).await? {
        Some(v) => v,
        None => {
            let store = Store::open_read_only(&cfg.store_path())?;
            serde_json::json!({ "running": false, "counts": store.counts()? })
        }
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string();
    let t = |k: &str| match v.get(k).and_then(|x| x.as_i64()) {
        Some(ts) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(ts.max(0) as u64),
        )
        .to_string(),
        None => "never".into(),
    };
    if v.get("running") == Some(&serde_json::Value::Bool(false)) {
        println!("daemon:            not running");
    } else {
        println!(
            "daemon:            running {} (up {} s), listening on {}",
            s("version"),
            v["uptime_secs"],
            s("listen")
        );
        println!("webhook URL:       {}", s("webhook_url"));
        println!(
            "plex:              {} (token {}), last ok {}",
            s("plex_url"),
            if v["plex_token_set"] == true {
                "set"
            } else {
                "NOT set"
            },
            t("plex_last_ok_at")
        );
        if let Some(e) = v.get("plex_error").and_then(|x| x.as_str()) {
            println!("plex error:        {e}");
        }
        println!(
            "tracker:           last ok {}, catalogue {} shows",
            t("tracker_last_ok_at"),
            v["catalogue_shows"]
        );
        if let Some(e) = v.get("tracker_error").and_then(|x| x.as_str()) {
            println!("tracker error:     {e}");
        }
        println!("last webhook:      {}", t("last_webhook_at"));
        let lp = &v["last_poll"];
        if lp.is_null() {
            println!("last poll:         never");
        } else {
            let when = lp["finished_at"].as_i64().map_or("-".to_string(), |ts| {
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(ts.max(0) as u64),
                )
                .to_string()
            });
            match lp["error"].as_str() {
                Some(e) => println!("last poll:         {when} FAILED: {e}"),
                None => println!(
                    "last poll:         {when}: {} rows, {} new plays, {} duplicates",
                    lp["rows_read"], lp["plays_new"], lp["duplicates"]
                ),
            }
        }
        for c in v["cursors"].as_array().into_iter().flatten() {
            let at = c["viewed_at"].as_i64().unwrap_or(0);
            println!(
                "poll cursor:       {} up to {}",
                c["key"].as_str().unwrap_or("-"),
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(at.max(0) as u64)
                )
            );
        }
        if v["plex_token_rejected"] == true {
            println!(
                "                   Plex token rejected: polling is paused; `plexsync secret set plex-token`"
            );
        }
    }
    let c = &v["counts"];
    println!("plays journaled:   {}", c["journal"]);
    println!("awaiting match:    {}", c["pending_resolution"]);
    println!(
        "outbox:            {} episode(s) in {} batch(es), oldest {} s",
        c["outbox_items"], c["batches"], c["oldest_pending_secs"]
    );
    println!("dead letters:      {}", c["dead_letters"]);
    println!("open conflicts:    {}", c["conflicts"]);
    println!("mappings:          {}", c["mappings"]);
    println!(
        "webhook loss:      {} play(s) found by polling that no webhook delivered",
        c["webhook_loss"]
    );
    Ok(())
}

async fn activity(path: &Path, status: Option<String>, page: usize, as_json: bool) -> Result<()> {
    let cfg = load(path)?;
    let q = format!(
        "/api/activity?page={page}&status={}",
        status.clone().unwrap_or_default()
    );
    let v = match ask(&cfg, "GET", &q, None).await? {
        Some(v) => v,
        None => {
            let store = Store::open_read_only(&cfg.store_path())?;
            let (items, total) = store.activity(status.as_deref(), None, page, 50)?;
            serde_json::json!({ "items": items, "total": total, "page": page })
        }
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<9} {:<10} {:<16} {:<30} {:>8}  action / error",
        "time (UTC)", "status", "source", "event", "show", "ms"
    );
    for a in v["items"].as_array().into_iter().flatten() {
        let at = a["at"].as_i64().unwrap_or(0);
        let when = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(at.max(0) as u64),
        )
        .to_string();
        let mut show = a["show"].as_str().unwrap_or("").to_string();
        if let (Some(s), Some(e)) = (a["season"].as_u64(), a["episode"].as_u64()) {
            show = format!("{show} S{s:02}E{e:02}");
        }
        let what = match a["error"].as_str() {
            Some(e) => format!("{} — {e}", a["action"].as_str().unwrap_or("")),
            None => a["action"].as_str().unwrap_or("").to_string(),
        };
        println!(
            "{:<20} {:<9} {:<10} {:<16} {:<30} {:>8.1}  {}",
            when.trim_end_matches('Z'),
            a["status"].as_str().unwrap_or(""),
            a["source"].as_str().unwrap_or(""),
            a["event"].as_str().unwrap_or(""),
            show.chars().take(30).collect::<String>(),
            a["duration_ms"].as_f64().unwrap_or(0.0),
            what
        );
    }
    println!("page {page}, {} row(s) in all", v["total"]);
    Ok(())
}

async fn outbox_list(path: &Path, as_json: bool) -> Result<()> {
    let cfg = load(path)?;
    let v = match ask(&cfg, "GET", "/api/outbox", None).await? {
        Some(v) => v,
        None => {
            let store = Store::open_read_only(&cfg.store_path())?;
            serde_json::json!({ "counts": store.counts()?, "dead_letters": store.dead_letters()? })
        }
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let c = &v["counts"];
    println!(
        "pending: {} episode(s) in {} batch(es); dead letters: {}",
        c["outbox_items"], c["batches"], c["dead_letters"]
    );
    for b in v["dead_letters"].as_array().into_iter().flatten() {
        println!(
            "  dead batch {} show {} — {} episode(s), {} attempt(s): {}",
            b["id"],
            b["show_id"].as_str().unwrap_or(""),
            b["items"].as_array().map_or(0, |i| i.len()),
            b["attempts"],
            b["last_error"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

async fn outbox_retry(path: &Path) -> Result<()> {
    let cfg = load(path)?;
    let n = match ask(&cfg, "POST", "/api/outbox/retry", None).await? {
        Some(v) => v["requeued_batches"].as_u64().unwrap_or(0) as usize,
        None => open_rw(&cfg)?.retry_dead().await?,
    };
    println!("requeued {n} dead-lettered batch(es)");
    Ok(())
}

fn progress_line(st: &plexsync::poller::BackfillStatus) {
    use std::io::Write;
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return;
    }
    let bar = match st.total {
        Some(t) if t > 0 => {
            let filled = ((st.rows_read.min(t) * 30) / t) as usize;
            format!(
                "[{}{}] {}/{} rows",
                "#".repeat(filled),
                "-".repeat(30 - filled),
                st.rows_read,
                t
            )
        }
        _ => format!("{} rows", st.rows_read),
    };
    let mut e = std::io::stderr();
    let _ = write!(e, "\r{bar}  new {}  dup {}   ", st.plays_new, st.duplicates);
    let _ = e.flush();
}

fn print_backfill(st: &plexsync::poller::BackfillStatus, as_json: bool) -> Result<()> {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(st)?);
    } else if st.dry_run {
        for w in &st.would_export {
            println!(
                "would export  {} (tracker show {})  S{:02}E{:02}",
                w.show, w.show_id, w.season, w.episode
            );
        }
        for s in &st.unmatched_shows {
            println!("no match      {s} (would become a conflict)");
        }
        println!(
            "dry run: {} rows read, {} episode(s) would be exported, {} show(s) without a match; nothing was stored",
            st.rows_read,
            st.would_export.len(),
            st.unmatched_shows.len()
        );
    } else {
        println!("rows read:    {}", st.rows_read);
        println!("plays new:    {}", st.plays_new);
        println!(
            "duplicates:   {} (+{} already imported)",
            st.duplicates, st.already_imported
        );
        println!("matched:      {}", st.matched);
        println!(
            "parked:       {} (in conflicts: `plexsync status`)",
            st.parked
        );
        if st.waiting > 0 {
            println!("still matching: {} (the daemon finishes them)", st.waiting);
        }
    }
    if let Some(e) = &st.error {
        bail!("backfill failed: {e}");
    }
    Ok(())
}

async fn backfill(path: &Path, since: &str, dry_run: bool, as_json: bool) -> Result<()> {
    let cfg = load(path)?;
    if plexsync::poller::parse_date(since).is_none() {
        bail!("--since: {since:?} is not a date like 2024-01-31");
    }
    let body = serde_json::json!({ "since": since, "dry_run": dry_run }).to_string();
    if ask(&cfg, "POST", "/api/backfill", Some(body.into_bytes()))
        .await?
        .is_some()
    {
        // The running daemon does the work; follow its progress.
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            let v = ask(&cfg, "GET", "/api/backfill", None)
                .await?
                .context("the daemon stopped during the backfill")?;
            let st: plexsync::poller::BackfillStatus = serde_json::from_value(v)?;
            progress_line(&st);
            if !st.running {
                return print_backfill(&st, as_json);
            }
        }
    }
    // No daemon: run the pipeline here until the imported plays are matched.
    init_logging(&cfg);
    let since_ts = plexsync::poller::parse_date(since).context("since")?;
    let listen = "127.0.0.1:0".parse().context("address")?;
    let shared = plexsync::daemon::open_shared(cfg, listen)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let catalogue = tokio::spawn(plexsync::pipeline::catalogue_task(shared.clone()));
    let resolver = tokio::spawn(plexsync::pipeline::resolver_task(shared.clone()));
    let _guard = shared.backfill.lock().await;
    let watcher = {
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                if let Some(st) = s.backfill_progress.lock().ok().and_then(|g| g.clone()) {
                    progress_line(&st);
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        })
    };
    // Matching needs the tracker catalogue: wait briefly for the cached or fetched copy.
    for _ in 0..100 {
        if shared.catalogue().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let st = plexsync::poller::backfill(&shared, since_ts, dry_run).await;
    watcher.abort();
    let _ = shared.shutdown.send(true);
    let _ = resolver.await;
    catalogue.abort();
    print_backfill(&st, as_json)
}

/// The secrets in the store (none when there is no store yet); works while a daemon runs.
fn stored_secrets(
    cfg: &Config,
) -> Result<std::collections::HashMap<String, plexsync_plugin_api::Secret>> {
    if !cfg.store_path().exists() {
        return Ok(Default::default());
    }
    let store = Store::open_read_only(&cfg.store_path())?;
    let key = MasterKey::load_or_create(&cfg.key_path(), false)?;
    Ok(plexsync::daemon::load_secrets(&store, &key)?)
}

/// Secrets for offline commands: read from the store when it exists and the key opens it
/// (works while the daemon runs: the store opens read-only). None otherwise.
fn offline_secrets(cfg: &Config) -> std::collections::HashMap<String, plexsync_plugin_api::Secret> {
    match stored_secrets(cfg) {
        Ok(s) => s,
        Err(e) => {
            // Say so: a matcher without its key (tmdb) answers nothing, which would otherwise
            // look like a matching result.
            eprintln!(
                "plexsync: note: cannot read the stored secrets ({e:#}); plugins run without them"
            );
            Default::default()
        }
    }
}
