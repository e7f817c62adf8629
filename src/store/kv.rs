//! Caches that can be fetched again: the plugins' key-value store with expiry (`plugin_kv`,
//! also the host's remembered Plex accounts), Plex show info (`show_info`), the tracker's
//! show catalogue (`catalogue`) and its extra names (`catalogue_names`, [`AltTitles`]): read
//! together by [`Store::load_catalogue_for`], so every reader builds the same catalogue.

use std::sync::Arc;

use plexsync_plugin_api::{CatalogShow, Catalogue};
use serde::{Deserialize, Serialize};

use super::ops::get_json;
use super::*;
use crate::alt_titles::AltTitles;
use crate::model::{now_millis, now_secs};

/// The store's copy of the tracker catalogue ([`Store::load_catalogue_for`]).
pub struct CachedCatalogue {
    /// The tracker's shows as it answered them, without the extra names.
    pub shows: Vec<CatalogShow>,
    /// The extra names last stored for them ([`Store::save_alt_titles`]), read in the same
    /// transaction.
    pub names: AltTitles,
    /// It names the tracker that answered it (every copy since the tracker switch fix).
    pub tagged: bool,
}

impl CachedCatalogue {
    /// The tracker's shows as stored (`base`, what a fetch is compared with and what the
    /// names pass starts from) and the catalogue the matchers index: `base` with the stored
    /// names ([`AltTitles::catalogue`]). The daemon's start and the CLI offline both build
    /// theirs here. CPU-bound: call it off the runtime's workers.
    pub fn build(self) -> (Arc<Catalogue>, Arc<Catalogue>, AltTitles) {
        let base = Arc::new(Catalogue::new(self.shows));
        let named = self.names.catalogue(&base);
        (base, named, self.names)
    }
}

/// CATALOGUE's row naming the tracker whose catalogue the stored extra names were found for.
const NAMES_INSTANCE: &str = "names_instance";

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
            let Some(shows) = get_json(&t, "shows")? else {
                return Ok(None);
            };
            let names = read_alt_titles(txn, &t, instance)?;
            Ok(Some(CachedCatalogue {
                shows,
                names,
                tagged,
            }))
        })
    }

    /// The extra names stored for the catalogue of tracker `instance` (none for another
    /// tracker's, or before any were stored).
    pub fn alt_titles_for(&self, instance: &str) -> Result<AltTitles> {
        self.read(|txn| read_alt_titles(txn, &txn.open_table(CATALOGUE)?, instance))
    }

    /// Store `names` as the catalogue's extra names, replacing all the earlier ones (a show
    /// left out loses its names), in one transaction; only while the stored catalogue is
    /// recorded as tracker `instance`'s: false, and nothing written, when another tracker's
    /// is stored, or an earlier release's copy that names none (its shows may be another
    /// tracker's: names stored beside it would be read with it by id).
    pub async fn save_alt_titles(&self, names: AltTitles, instance: String) -> Result<bool> {
        self.write(move |txn| {
            let mut cat = txn.open_table(CATALOGUE)?;
            if get_json::<String>(&cat, "instance")?.as_deref() != Some(instance.as_str()) {
                return Ok(false);
            }
            let mut t = txn.open_table(CATALOGUE_NAMES)?;
            // Read and compared first: only the rows that changed are written.
            let mut stale: Vec<String> = Vec::new();
            let mut same: std::collections::HashSet<String> = std::collections::HashSet::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let id = k.value();
                let kept = names.get(id);
                if kept.is_empty() {
                    stale.push(id.to_string());
                } else if decode::<Vec<String>>(v.value()).is_ok_and(|old| old == kept) {
                    same.insert(id.to_string());
                }
            }
            for id in &stale {
                t.remove(id.as_str())?;
            }
            for (id, list) in names.iter() {
                if !same.contains(id) {
                    t.insert(id, encode(&list)?.as_slice())?;
                }
            }
            cat.insert(NAMES_INSTANCE, encode(&instance)?.as_slice())?;
            Ok(true)
        })
        .await
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

/// The extra names of the catalogue in `cat` (CATALOGUE, read in `txn`) when they were found
/// for tracker `instance`. A store without the table (an earlier release's, opened read-only)
/// has none; a row that does not decode is skipped; the bounds of [`AltTitles::add`] hold
/// whatever the rows say.
fn read_alt_titles(
    txn: &ReadTransaction,
    cat: &impl ReadableTable<&'static str, &'static [u8]>,
    instance: &str,
) -> Result<AltTitles> {
    let mut names = AltTitles::default();
    if get_json::<String>(cat, NAMES_INSTANCE)?.as_deref() != Some(instance) {
        return Ok(names);
    }
    let t = match txn.open_table(CATALOGUE_NAMES) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(names),
        Err(e) => return Err(e.into()),
    };
    for row in t.iter()? {
        let (k, v) = row?;
        match decode::<Vec<String>>(v.value()) {
            Ok(list) => {
                for n in &list {
                    names.add(k.value(), "", n);
                }
            }
            Err(e) => {
                tracing::warn!(show_id = %k.value(), error = %e, "a stored catalogue name row does not decode; skipped")
            }
        }
    }
    Ok(names)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shows() -> Vec<CatalogShow> {
        ["Spiral", "Other"]
            .iter()
            .enumerate()
            .map(|(i, t)| CatalogShow {
                id: (i + 1).to_string(),
                title: (*t).to_string(),
                ..Default::default()
            })
            .collect()
    }

    #[tokio::test]
    async fn the_names_are_stored_beside_the_catalogue_and_read_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let catalogue = Arc::new(Catalogue::new(shows()));
        // No catalogue recorded as this tracker's yet (none at all, or an earlier release's
        // untagged copy, which may be another tracker's): nothing is stored beside it.
        let mut early = AltTitles::default();
        early.add("1", "Spiral", "Engrenages");
        assert!(!store.save_alt_titles(early, "a".into()).await.unwrap());
        assert!(store.alt_titles_for("a").unwrap().is_empty());
        store
            .save_catalogue(catalogue.clone(), "a".into())
            .await
            .unwrap();
        assert!(
            store
                .load_catalogue_for("a")
                .unwrap()
                .unwrap()
                .names
                .is_empty()
        );
        let mut names = AltTitles::default();
        names.add("1", "Spiral", "Engrenages");
        assert!(
            store
                .save_alt_titles(names.clone(), "a".into())
                .await
                .unwrap()
        );
        let cached = store.load_catalogue_for("a").unwrap().unwrap();
        assert_eq!(cached.names, names);
        assert!(cached.shows.iter().all(|s| s.alt_titles.is_empty()));
        let (base, named, _) = cached.build();
        assert!(base.get("1").unwrap().alt_titles.is_empty());
        assert_eq!(named.get("1").unwrap().alt_titles.to_vec(), ["Engrenages"]);
        // Not while another tracker's catalogue is stored; that one has none.
        assert!(
            !store
                .save_alt_titles(names.clone(), "b".into())
                .await
                .unwrap()
        );
        store.save_catalogue(catalogue, "b".into()).await.unwrap();
        assert!(store.alt_titles_for("b").unwrap().is_empty());
        // A new set replaces the old one whole.
        let mut other = AltTitles::default();
        other.add("2", "Other", "Autre");
        assert!(
            store
                .save_alt_titles(other.clone(), "b".into())
                .await
                .unwrap()
        );
        assert_eq!(store.alt_titles_for("b").unwrap(), other);
        assert!(store.alt_titles_for("a").unwrap().is_empty());
    }

    #[test]
    fn a_store_without_the_names_table_reads_none() {
        // As 0.1.0 left it: a catalogue, no `catalogue_names` table; opened read-only, so
        // nothing creates the table.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        let write = |rows: &[(&str, Vec<u8>)]| {
            let db = builder().create(&p).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(CATALOGUE).unwrap();
                for (k, v) in rows {
                    t.insert(*k, v.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        };
        let a = encode(&"a").unwrap();
        write(&[
            ("shows", encode(&shows()).unwrap()),
            ("instance", a.clone()),
        ]);
        let read = || {
            let ro = Store::open_read_only(&p).unwrap();
            let c = ro.load_catalogue_for("a").unwrap().unwrap();
            assert_eq!(c.shows.len(), 2);
            assert!(c.names.is_empty());
            assert!(ro.alt_titles_for("a").unwrap().is_empty());
        };
        read();
        // Even a copy that says its names are this tracker's, when the table is missing.
        write(&[(NAMES_INSTANCE, a)]);
        read();
    }
}
