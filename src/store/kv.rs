//! Caches that can be fetched again: the plugins' key-value store with expiry (`plugin_kv`,
//! also the host's remembered Plex accounts), Plex show info (`show_info`) and the tracker's
//! show catalogue (`catalogue`).

use std::sync::Arc;

use plexsync_plugin_api::{CatalogShow, Catalogue};
use serde::{Deserialize, Serialize};

use super::ops::get_json;
use super::*;
use crate::model::{now_millis, now_secs};

/// The store's copy of the tracker catalogue ([`Store::load_catalogue_for`]).
pub struct CachedCatalogue {
    pub shows: Vec<CatalogShow>,
    /// It names the tracker that answered it (every copy since the tracker switch fix).
    pub tagged: bool,
}

impl Store {
    /// Cache the tracker's catalogue: the shows and when they were fetched, in one
    /// transaction. The stored shape (a JSON array under `shows`) is every release's.
    /// `instance` is the tracker that answered it ([`plexsync_plugin_api::Exporter::instance`]).
    pub async fn save_catalogue(&self, catalogue: Arc<Catalogue>, instance: String) -> Result<()> {
        self.write(move |txn| {
            let bytes = encode(&catalogue.shows())?;
            let mut t = txn.open_table(CATALOGUE)?;
            t.insert("shows", bytes.as_slice())?;
            t.insert("fetched_at", encode(&now_secs())?.as_slice())?;
            t.insert("instance", encode(&instance)?.as_slice())?;
            Ok(())
        })
        .await
    }

    /// The cached catalogue, if the tracker `instance` answered it: another tracker's show ids
    /// mean nothing to this one (the config now names another). A copy an earlier release
    /// cached names no tracker and counts as this one's; `tagged` is false for it, so the
    /// caller saves the next answer with its tracker whatever it holds.
    pub fn load_catalogue_for(&self, instance: &str) -> Result<Option<CachedCatalogue>> {
        self.read(|txn| {
            let t = txn.open_table(CATALOGUE)?;
            let tagged = match get_json::<String>(&t, "instance")? {
                Some(cached) if cached != instance => {
                    tracing::info!(cached = %cached, tracker = %instance, "the cached catalogue is another tracker's; not used");
                    return Ok(None);
                }
                Some(_) => true,
                None => false,
            };
            Ok(get_json(&t, "shows")?.map(|shows| CachedCatalogue { shows, tagged }))
        })
    }

    /// The tracker the cached catalogue names (None: no copy, or an earlier release's copy
    /// that names none).
    pub fn catalogue_instance(&self) -> Result<Option<String>> {
        self.read(|txn| get_json::<String>(&txn.open_table(CATALOGUE)?, "instance"))
    }

    /// Cached show info from Plex (its guids), keyed by [`PlexShow::key`].
    pub fn show_info<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.read(|txn| get_json(&txn.open_table(SHOW_INFO)?, key))
    }

    pub async fn put_show_info<T: Serialize + Send + 'static>(
        &self,
        key: String,
        v: T,
    ) -> Result<()> {
        self.write(move |txn| {
            txn.open_table(SHOW_INFO)?
                .insert(key.as_str(), encode(&v)?.as_slice())?;
            Ok(())
        })
        .await
    }

    /// Plugin cache read (expired entries read as absent).
    pub fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let entry: Option<KvEntry> = self.read(|txn| get_json(&txn.open_table(KV)?, key))?;
        Ok(entry.and_then(|e| match e.expires_at_ms {
            Some(t) if t <= now_millis() => None,
            _ => Some(e.value),
        }))
    }

    /// [`Store::kv_put_detached`], answered after the durable commit (a revocation must not
    /// be lost to a crash right after the logout was answered).
    pub async fn kv_put(
        &self,
        key: String,
        value: Vec<u8>,
        expires_at_ms: Option<i64>,
    ) -> Result<()> {
        self.write(move |txn| put_kv(txn, &key, value, expires_at_ms))
            .await
    }

    pub fn kv_put_detached(&self, key: String, value: Vec<u8>, expires_at_ms: Option<i64>) {
        self.write_detached(move |txn| put_kv(txn, &key, value, expires_at_ms));
    }
}

fn put_kv(
    txn: &WriteTransaction,
    key: &str,
    value: Vec<u8>,
    expires_at_ms: Option<i64>,
) -> Result<()> {
    let entry = encode(&KvEntry {
        value,
        expires_at_ms,
    })?;
    txn.open_table(KV)?.insert(key, entry.as_slice())?;
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct KvEntry {
    value: Vec<u8>,
    expires_at_ms: Option<i64>,
}
