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
        #[arg(long, default_value_t = 1)]
        page: usize,
        #[arg(long, default_value_t = 50)]
        per_page: usize,
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
        #[arg(long)]
        json: bool,
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
                page,
                per_page,
            };
            report::activity(&admin(&config)?, &query, json).await
        }
        Cmd::Backfill {
            config,
            since,
            dry_run,
            json,
        } => cli::backfill::backfill(&config.config, &since, dry_run, json).await,
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
                    id,
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
            operate::conflicts_resolve(&admin(&config)?, &id, action, json).await
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
            operate::mappings_list(&admin(&config)?, filter, json).await
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
    // in between must stop it cleanly, not kill it with the default action.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    plexsync::daemon::run(cfg, listener, shutdown)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}
