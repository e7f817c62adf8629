//! Setting up: `check`, `secret set`, `webhook-url`, `web-url`, `key generate`, `rekey`.
//! Secrets are checked against the configuration (every plugin and the Plex client built with
//! them) before anything is stored, online and offline alike.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use hyper::Method;

use super::{Admin, Offline, Reached, load};
use plexsync::api::PublicUrl;
use plexsync::config::Config;
use plexsync::secrets::MasterKey;
use plexsync::store::Store;

/// The key and the store, opened here (created on a first run: these commands may be the first
/// ever run). A daemon holding the store is `Locked`: [`Admin::reach`] then waits for its socket.
async fn open_rw(cfg: &Config) -> Result<(MasterKey, Store), Offline> {
    let key =
        MasterKey::load_or_create(&cfg.key_path(), true).map_err(|e| Offline::Other(e.into()))?;
    match Store::open(&cfg.store_path()) {
        Ok(store) => Ok((key, store)),
        Err(plexsync::store::StoreError::Locked) => Err(Offline::Locked),
        Err(e) => Err(Offline::Other(e.into())),
    }
}

pub async fn secret_set(path: &Path, name: &str) -> Result<()> {
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
    let admin = Admin::new(cfg);
    let cfg = admin.config();
    let (key, store) = match admin
        .reach(
            Method::PUT,
            &format!("secrets/{name}"),
            Some(value.as_bytes().to_vec()),
            || open_rw(cfg),
        )
        .await?
    {
        Reached::Online(_) => {
            crate::cli::outln!("stored {name} (the running daemon uses it now)");
            return Ok(());
        }
        Reached::Offline(opened) => opened,
    };
    // All or nothing, as the daemon does it: refused by the plugins means not stored.
    let mut secrets = plexsync::daemon::load_secrets(&store, &key)?;
    secrets.insert(
        name.to_string(),
        plexsync_plugin_api::Secret::new(value.to_string()),
    );
    plexsync::daemon::install_tls_provider();
    plexsync::daemon::validate_secrets(cfg, &secrets)
        .map_err(|e| anyhow::anyhow!("{name} not stored: {e}"))?;
    store
        .put_secret(name.to_string(), key.seal(name, value)?)
        .await?;
    crate::cli::outln!("stored {name}");
    Ok(())
}

pub async fn rekey(path: &Path, new_key: &Path) -> Result<()> {
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
    crate::cli::outln!(
        "re-encrypted {n} secret(s) under key {} (was {}).",
        new.id(),
        old.id()
    );
    crate::cli::outln!(
        "Now make {} the key: point [secrets] key_file at it (or replace {} with it, or the systemd credential), then start the daemon.",
        new_key.display(),
        cfg.key_path().display()
    );
    Ok(())
}

/// Print a URL for people (stdout) and, when it was guessed, which address it uses (stderr).
fn print_url(url: &str, note: Option<&str>) {
    crate::cli::outln!("{url}");
    if let Some(n) = note {
        eprintln!("plexsync: note: {n}");
    }
}

/// The URL for Plex (`web` false) or the page's login link (`web` true): from the running
/// daemon, else from the store (created, with its generated secret, if this is the first
/// command run). Both come from the same function of the config and the secret.
pub async fn public_url(path: &Path, web: bool) -> Result<()> {
    let admin = Admin::new(load(path)?);
    let endpoint = if web { "web-url" } else { "webhook-url" };
    let cfg = admin.config();
    let (key, store) = match admin
        .reach(Method::GET, endpoint, None, || open_rw(cfg))
        .await?
    {
        Reached::Online(bytes) => {
            let u: PublicUrl =
                serde_json::from_slice(&bytes).context("the daemon sent an unexpected answer")?;
            print_url(&u.url, u.note.as_deref());
            return Ok(());
        }
        Reached::Offline(opened) => opened,
    };
    let listen = cfg.server.listen.parse().context("server.listen")?;
    let b = if web {
        let token = plexsync::daemon::ensure_admin_token(&store, &key).await?;
        plexsync::daemon::web_url(cfg, listen, &token)?
    } else {
        let secret = plexsync::daemon::ensure_webhook_secret(&store, &key).await?;
        plexsync::daemon::webhook_url(cfg, listen, &secret)?
    };
    print_url(&b.url, b.note.as_deref());
    Ok(())
}

/// `plexsync check`: the config, then the stored secrets against it, then the plugins probed
/// as the daemon's start probes them.
pub async fn check(path: &Path) -> Result<()> {
    let cfg = load(path)?;
    plexsync::daemon::install_tls_provider();
    let secrets = stored_secrets(&cfg).await.with_context(|| {
        format!(
            "{}: the stored secrets cannot be read",
            cfg.store_path().display()
        )
    })?;
    plexsync::daemon::check_config(&cfg, &secrets)
        .await
        .map_err(|e| {
            // Config errors already start with `file:line:`; others get the file.
            let msg = e.to_string();
            if msg.starts_with(&path.display().to_string()) {
                anyhow::anyhow!("{msg}")
            } else {
                anyhow::anyhow!("{}: {msg}", path.display())
            }
        })?;
    crate::cli::outln!(
        "{}: OK ({} stored secret(s) checked)",
        path.display(),
        secrets.len()
    );
    Ok(())
}

pub fn key_generate(file: &Path) -> Result<()> {
    let key = plexsync::secrets::generate_key_file(file)?;
    crate::cli::outln!(
        "wrote a new key to {} (mode 0600), key id {}",
        file.display(),
        key.id()
    );
    Ok(())
}

/// `plexsync match`: the configured chain offline on JSON lines.
pub async fn match_file(path: &Path, catalog: &Path, queries: &Path, as_json: bool) -> Result<()> {
    let cfg = load(path)?;
    plexsync::daemon::install_tls_provider();
    let secrets = offline_secrets(&cfg).await;
    let stdout = std::io::stdout();
    let summary =
        plexsync::matching::run_file(&cfg, &secrets, catalog, queries, &mut stdout.lock())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    if as_json {
        crate::cli::outln!("{}", serde_json::to_string(&summary)?);
    } else {
        eprint!("{}", summary.human());
    }
    Ok(())
}

/// The stored secrets, opened with the key file (none when there is no store yet). A running
/// daemon holds its store alone, so they come sealed over its socket; without one, from the
/// store opened read-only. Either way the key file here opens them.
async fn stored_secrets(
    cfg: &Config,
) -> Result<std::collections::HashMap<String, plexsync_plugin_api::Secret>> {
    let admin = Admin::new(cfg.clone());
    let read = || async {
        if !cfg.store_path().exists() {
            return Ok(None);
        }
        match Store::open_read_only(&cfg.store_path()) {
            Ok(store) => store
                .sealed_secrets()
                .map(Some)
                .map_err(|e| Offline::Other(e.into())),
            // No socket to wait for: say so now, not after the wait for a starting daemon.
            Err(plexsync::store::StoreError::Locked) if cfg.socket_path().is_none() => {
                Err(Offline::Other(anyhow::anyhow!(
                    "the store {} is in use by a running daemon and [admin] socket is off, so its secrets cannot be read here; stop the daemon, or turn the socket on",
                    cfg.store_path().display()
                )))
            }
            Err(plexsync::store::StoreError::Locked) => Err(Offline::Locked),
            Err(e) => Err(Offline::Other(e.into())),
        }
    };
    let reached = admin
        .reach(Method::GET, "secrets/sealed", None, read)
        .await
        .map_err(|e| match e.downcast_ref::<plexsync::client::ClientError>() {
            // A daemon of an earlier release (the binary upgraded, the service not restarted)
            // has no such route, and holds the store.
            Some(plexsync::client::ClientError::Http {
                status: 404 | 405, ..
            }) => anyhow::anyhow!(
                "the running daemon is an earlier release that cannot hand its secrets to this one; restart it (`systemctl restart plexsync`) and run this again"
            ),
            _ => e,
        })?;
    let sealed = match reached {
        Reached::Online(bytes) => {
            let s: plexsync::api::SealedSecrets =
                serde_json::from_slice(&bytes).context("the daemon sent an unexpected answer")?;
            s.secrets.into_iter().map(|n| (n.name, n.sealed)).collect()
        }
        Reached::Offline(Some(rows)) => rows,
        Reached::Offline(None) => return Ok(Default::default()),
    };
    if sealed.is_empty() {
        return Ok(Default::default());
    }
    let key = MasterKey::load_or_create(&cfg.key_path(), false)?;
    Ok(plexsync::daemon::open_secrets(&key, sealed)?)
}

/// Secrets for offline commands: the stored ones when the key opens them (from the running
/// daemon, or the store). None otherwise.
async fn offline_secrets(
    cfg: &Config,
) -> std::collections::HashMap<String, plexsync_plugin_api::Secret> {
    match stored_secrets(cfg).await {
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
