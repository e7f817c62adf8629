//! Sealed secrets (`secrets` table): read, list, put (async and blocking), put-if-absent for
//! generated secrets, and replace-all-at-once for a rekey. Values stay sealed here; opening
//! them is `crate::secrets`' job.

use redb::{ReadableTable, WriteTransaction};

use super::ops::get_json;
use super::*;
use crate::secrets::SealedSecret;

impl Store {
    pub fn sealed_secret(&self, name: &str) -> Result<Option<SealedSecret>> {
        self.read(|txn| get_json(&txn.open_table(SECRETS)?, name))
    }

    /// Every stored secret, still sealed, by name.
    pub fn sealed_secrets(&self) -> Result<Vec<(String, SealedSecret)>> {
        self.read(|txn| {
            let t = txn.open_table(SECRETS)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_string(), decode(v.value())?));
            }
            Ok(out)
        })
    }

    pub fn secret_names(&self) -> Result<Vec<String>> {
        self.read(|txn| {
            let t = txn.open_table(SECRETS)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                out.push(row?.0.value().to_string());
            }
            Ok(out)
        })
    }

    pub async fn put_secret(&self, name: String, sealed: SealedSecret) -> Result<()> {
        self.write(move |txn| put_secret_in(txn, &name, &sealed))
            .await
    }

    pub fn put_secret_blocking(&self, name: String, sealed: SealedSecret) -> Result<()> {
        self.write_blocking(move |txn| put_secret_in(txn, &name, &sealed))
    }

    /// Replace every given secret in one transaction (a rekey): all or nothing.
    pub async fn replace_secrets(&self, sealed: Vec<(String, SealedSecret)>) -> Result<()> {
        self.write(move |txn| {
            for (name, s) in &sealed {
                put_secret_in(txn, name, s)?;
            }
            Ok(())
        })
        .await
    }

    /// Store `sealed` under `name` unless a value exists; returns the value that is stored.
    pub fn put_secret_if_absent_blocking(
        &self,
        name: String,
        sealed: SealedSecret,
    ) -> Result<SealedSecret> {
        self.write_blocking(move |txn| {
            let mut t = txn.open_table(SECRETS)?;
            if let Some(existing) = get_json::<SealedSecret>(&t, &name)? {
                return Ok(existing);
            }
            t.insert(name.as_str(), encode(&sealed)?.as_slice())?;
            Ok(sealed)
        })
    }
}

fn put_secret_in(txn: &WriteTransaction, name: &str, sealed: &SealedSecret) -> Result<()> {
    txn.open_table(SECRETS)?
        .insert(name, encode(sealed)?.as_slice())?;
    Ok(())
}
