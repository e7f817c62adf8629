//! The `plexsync` command line: the arguments (clap) and which [`cli`] function runs each
//! command. Commands that change or read state are typed admin calls to the running daemon
//! over its admin socket, or served in process on the store when no daemon answers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

mod cli;

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
    /// Path of plexsync.toml (default: $PLEXSYNC_CONFIG, else /etc/plexsync/plexsync.toml)
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
    /// Recent activity (webhooks, polls, exports), newest first
    Activity {
        #[command(flatten)]
        config: ConfigArg,
        /// Only rows with this outcome
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(plexsync::api::ACTIVITY_STATUS_CHOICES))]
        status: Option<String>,
        /// Only rows from this source
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(plexsync::api::ACTIVITY_SOURCE_CHOICES))]
        source: Option<String>,
        /// Only rows of this Plex account (its name)
        #[arg(long)]
        account: Option<String>,
        /// Text to find in show titles, actions and errors (any case)
        #[arg(long, short = 'q', visible_alias = "q")]
        search: Option<String>,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        page: u32,
        /// Rows a page, 1 to 500 (what the API serves at most)
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=500))]
        per_page: u16,
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
    /// Bring the tracker to Plex's watched state: every episode Plex lists as watched
    Sync {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this show: its ratingKey or its title as Plex lists it
        #[arg(long)]
        show: Option<String>,
        /// Only this library section (its id)
        #[arg(long)]
        section: Option<String>,
        /// Store nothing; print what would be exported and the shows that need a person
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
    /// The effective settings (defaults filled in) and which secrets are stored
    Settings {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
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
    /// The tracker's shows: search its catalogue for the show to map a Plex show to
    Shows {
        #[command(subcommand)]
        cmd: ShowsCmd,
    },
}

#[derive(Subcommand)]
enum ShowsCmd {
    /// Tracker shows whose title resembles QUERY, best first (the matcher's normalisation)
    Search {
        /// What to look for: a title or part of one ("Lucky Man", "lucky", "Shogun (2024)")
        query: String,
        /// Favour shows of this year
        #[arg(long)]
        year: Option<i32>,
        /// At most this many shows (1 to 100)
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=100))]
        limit: u16,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
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
    /// Decide conflicts: the held plays go to the tracker at once (select, create); ignored
    /// plays stay held and are sent if the show is mapped later
    #[command(group(clap::ArgGroup::new("action").required(true).args(["select", "create", "ignore"])))]
    Resolve {
        /// The conflicts: each its id, Plex ratingKey or Plex title (as `conflicts list`
        /// shows); several take --create or --ignore
        #[arg(required = true, num_args = 1..)]
        ids: Vec<String>,
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
    /// Mappings, ignored shows and conflicts: filtered, searched, sorted, a page at a time
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only shows that are ignored (their plays are held)
        #[arg(long, alias = "unmapped", conflicts_with_all = ["conflicts", "mapped"])]
        ignored: bool,
        /// Only shows waiting in a conflict
        #[arg(long, conflicts_with = "mapped")]
        conflicts: bool,
        /// Only shows mapped to a tracker show
        #[arg(long)]
        mapped: bool,
        /// Only shows whose Plex or tracker title contains this (any case or accents)
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
        /// Order: title, updated (newest first) or plays (most first)
        #[arg(long, default_value = "title", value_parser = ["title", "updated", "plays"])]
        sort: String,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        page: u32,
        /// Rows per page (1 to 500)
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=500))]
        per_page: u16,
        #[arg(long)]
        json: bool,
    },
    /// Change a mapping: remap it to another tracker show, or switch its sync off or on.
    /// Mapping an ignored show sends its held plays; so does switching sync back on
    #[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["show", "disable", "enable"])))]
    Set {
        /// The show: its id, the Plex ratingKey or the Plex title, with or without its year
        /// (as `mappings list` shows; a conflict is decided by --show)
        id: String,
        /// Map the Plex show to this tracker show id (a manual mapping; `shows search` finds it)
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
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // Bad arguments exit 1, not clap's 2: 2 is `status`'s "something is at error level".
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    plexsync::footprint::limit_arenas();
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
        // `status` printed its answer; something is at error level (README: exit codes).
        Err(e) if e.downcast_ref::<report::Unhealthy>().is_some() => ExitCode::from(2),
        Err(e) => {
            eprintln!("plexsync: {}", cli::out::printable(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

use cli::{load, operate, report, setup};

async fn dispatch(cli: Cli) -> Result<()> {
    // Every state command is one typed admin call, online or offline alike.
    let admin = |c: &ConfigArg| -> Result<cli::Admin> { Ok(cli::Admin::new(load(&c.config)?)) };
    match cli.cmd {
        Cmd::Run(c) => run(&c.config).await,
        Cmd::Check(c) => setup::check(&c.config).await,
        Cmd::Secret {
            cmd: SecretCmd::Set { name, config },
        } => setup::secret_set(&config.config, &name).await,
        Cmd::WebhookUrl(c) => setup::public_url(&c.config, false).await,
        Cmd::WebUrl(c) => setup::public_url(&c.config, true).await,
        Cmd::Status { config, json } => report::status(&admin(&config)?, json).await,
        Cmd::Settings { config, json } => cli::settings::settings(&admin(&config)?, json).await,
        Cmd::Activity {
            config,
            status,
            source,
            account,
            search,
            page,
            per_page,
            json,
        } => {
            let query = plexsync::api::ActivityQuery {
                status: plexsync::api::ActivityQuery::parse_status(status.as_deref().unwrap_or(""))
                    .map_err(anyhow::Error::msg)?,
                source: plexsync::api::ActivityQuery::parse_source(source.as_deref().unwrap_or(""))
                    .map_err(anyhow::Error::msg)?,
                account,
                q: search,
                page: page as usize,
                per_page: per_page.into(),
            };
            report::activity(&admin(&config)?, &query, json).await
        }
        Cmd::Backfill {
            config,
            since,
            dry_run,
            json,
        } => cli::backfill::backfill(&config.config, &since, dry_run, json).await,
        Cmd::Sync {
            config,
            show,
            section,
            dry_run,
            json,
        } => cli::sync::sync(&config.config, show, section, dry_run, json).await,
        Cmd::Match {
            config,
            catalog,
            queries,
            json,
        } => setup::match_file(&config.config, &catalog, &queries, json).await,
        Cmd::Outbox {
            cmd: OutboxCmd::List { config, json },
        } => report::outbox_list(&admin(&config)?, json).await,
        Cmd::Outbox {
            cmd: OutboxCmd::Retry { config, json },
        } => report::outbox_retry(&admin(&config)?, json).await,
        Cmd::Key {
            cmd: KeyCmd::Generate { file },
        } => setup::key_generate(&file),
        Cmd::Rekey { new_key, config } => setup::rekey(&config.config, &new_key).await,
        Cmd::Conflicts {
            cmd: ConflictsCmd::List { config, json },
        } => operate::conflicts_list(&admin(&config)?, json).await,
        Cmd::Conflicts {
            cmd:
                ConflictsCmd::Resolve {
                    ids,
                    select,
                    create,
                    ignore: _,
                    config,
                    json,
                },
        } => {
            let action = match (select, create) {
                (Some(show), _) => operate::Resolution::Select(show),
                (None, true) => operate::Resolution::Create,
                _ => operate::Resolution::Ignore,
            };
            operate::conflicts_resolve(&admin(&config)?, &ids, action, json).await
        }
        Cmd::Mappings {
            cmd:
                MappingsCmd::List {
                    config,
                    ignored,
                    conflicts,
                    mapped,
                    search,
                    sort,
                    page,
                    per_page,
                    json,
                },
        } => {
            let status = match (ignored, conflicts, mapped) {
                (true, _, _) => "ignored",
                (_, true, _) => "conflict",
                (_, _, true) => "mapped",
                _ => "all",
            };
            let list = operate::MappingsList {
                status,
                search,
                sort,
                page: page as usize,
                per_page: usize::from(per_page),
            };
            operate::mappings_list(&admin(&config)?, &list, json).await
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
            operate::mappings_set(&admin(&config)?, &id, show, sync, json).await
        }
        Cmd::Shows {
            cmd:
                ShowsCmd::Search {
                    query,
                    year,
                    limit,
                    config,
                    json,
                },
        } => operate::shows_search(&admin(&config)?, &query, year, usize::from(limit), json).await,
    }
}

async fn run(path: &Path) -> Result<()> {
    let cfg = load(path)?;
    plexsync::logging::init(&cfg.log.level);
    let listener = plexsync::http::bind_tcp(&cfg.server.listen)
        .await
        .with_context(|| {
            format!(
                "{}: key `server.listen`: cannot listen on {}",
                path.display(),
                cfg.server.listen
            )
        })?;
    // The handlers are installed before the daemon starts answering: a SIGTERM that arrives
    // in between must stop it cleanly, and a SIGHUP reload it once it runs, not kill it with
    // the default action (the hooks hold the SIGHUP stream).
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let hooks = plexsync::daemon::Hooks::from_env();
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    plexsync::daemon::run_with(cfg, listener, shutdown, hooks)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}
