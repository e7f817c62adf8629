//! Which Plex account a play belongs to, whatever path reported it.
//!
//! Webhooks carry the plex.tv account id (the owner is `1` only on old servers), history rows
//! carry the server's own account id (the owner is always `1`). Both become one canonical key,
//! `pms:<server account id>`, through the server's `/accounts` list: the owner by id 1, others
//! by name (a webhook's `Account.title` is the name `/accounts` lists). An account the map
//! cannot place keeps `plextv:<id>`.

use serde::{Deserialize, Serialize};

/// One entry of the server's `/accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: i64,
    pub name: String,
}

/// A `[plex] accounts` entry: a server account id or a name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum AccountSel {
    Id(i64),
    Name(String),
}

/// The server's accounts, as last fetched (persisted so it survives restarts without Plex).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountMap {
    pub accounts: Vec<Account>,
    pub fetched_at: i64,
    /// The Plex server (its `[plex] url`) the list was read from: another server's list says
    /// nothing about who is on this one. None in a list an earlier release stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

pub const OWNER_ID: i64 = 1;

pub fn pms_key(id: i64) -> String {
    format!("pms:{id}")
}

impl AccountMap {
    pub fn is_known(&self) -> bool {
        !self.accounts.is_empty()
    }

    fn by_name(&self, name: &str) -> Option<&Account> {
        let n = name.trim();
        // id 0 is the server's own system account, never a person.
        self.accounts
            .iter()
            .find(|a| a.id != 0 && !n.is_empty() && a.name.trim().eq_ignore_ascii_case(n))
    }

    /// The canonical key of a webhook's `Account` (id as sent, title).
    pub fn webhook_key(&self, account_id: &str, title: Option<&str>) -> String {
        if account_id.trim() == "1" {
            return pms_key(OWNER_ID);
        }
        if let Some(a) = title.and_then(|t| self.by_name(t)) {
            return pms_key(a.id);
        }
        format!("plextv:{}", account_id.trim())
    }

    /// The server account ids that `sel` names (default: the owner). Names not on the server
    /// are returned as errors so a typo is reported, not silently ignored.
    pub fn resolve(&self, sel: &[AccountSel]) -> (Vec<i64>, Vec<String>) {
        if sel.is_empty() {
            return (vec![OWNER_ID], Vec::new());
        }
        let mut ids = Vec::new();
        let mut unknown = Vec::new();
        for s in sel {
            match s {
                AccountSel::Id(id) => ids.push(*id),
                AccountSel::Name(n) => match self.by_name(n) {
                    Some(a) => ids.push(a.id),
                    None => unknown.push(n.clone()),
                },
            }
        }
        ids.sort_unstable();
        ids.dedup();
        (ids, unknown)
    }

    /// Whether a play with this canonical key is synced. Unknown accounts (map not fetched
    /// yet) are kept: dropping an acknowledged play is worse than syncing one too many.
    pub fn is_selected(&self, key: &str, sel: &[AccountSel]) -> bool {
        let (ids, _) = self.resolve(sel);
        if ids.iter().any(|id| pms_key(*id) == key) {
            return true;
        }
        !self.is_known() && key.starts_with("plextv:")
    }

    pub fn name_of(&self, id: i64) -> Option<&str> {
        self.accounts
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> AccountMap {
        AccountMap {
            accounts: vec![
                Account {
                    id: 0,
                    name: String::new(),
                },
                Account {
                    id: 1,
                    name: "icco".into(),
                },
                Account {
                    id: 3972737,
                    name: "Kids".into(),
                },
            ],
            fetched_at: 1,
            server: None,
        }
    }

    #[test]
    fn owner_is_one_key_whether_plex_sends_1_or_the_plextv_id() {
        let m = map();
        assert_eq!(m.webhook_key("1", Some("icco")), "pms:1");
        assert_eq!(m.webhook_key("639131", Some("icco")), "pms:1");
        assert_eq!(m.webhook_key("639131", Some("ICCO ")), "pms:1");
        assert_eq!(m.webhook_key("19267583", Some("kids")), "pms:3972737");
        assert_eq!(m.webhook_key("42", Some("stranger")), "plextv:42");
        assert_eq!(m.webhook_key("42", Some("")), "plextv:42");
    }

    #[test]
    fn selection_defaults_to_the_owner_and_reports_unknown_names() {
        let m = map();
        assert_eq!(m.resolve(&[]), (vec![1], vec![]));
        let (ids, unknown) = m.resolve(&[
            AccountSel::Name("Kids".into()),
            AccountSel::Id(1),
            AccountSel::Name("nope".into()),
        ]);
        assert_eq!(ids, vec![1, 3972737]);
        assert_eq!(unknown, vec!["nope".to_string()]);
        assert!(m.is_selected("pms:1", &[]));
        assert!(!m.is_selected("pms:3972737", &[]));
        assert!(!m.is_selected("plextv:42", &[]));
        assert!(AccountMap::default().is_selected("plextv:42", &[]));
    }
}
