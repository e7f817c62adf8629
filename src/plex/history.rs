//! Watch history (`/status/sessions/history/all`), identity and accounts: the polling side of
//! the Plex client. Rows are parsed leniently — deleted items have no keys, some ids are
//! strings in one PMS version and numbers in another — and a row without a usable `viewedAt`
//! is skipped and counted, never fatal.

use super::xml::Element;
use super::{PlexClient, PlexError};

/// Which history to read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryQuery {
    /// Server account id (`accountID`); None = every account the token may see.
    pub account_id: Option<i64>,
    /// Unix seconds: rows viewed at or after this.
    pub viewed_since: i64,
    pub library_section_id: Option<String>,
}

/// One history row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryRow {
    pub history_key: Option<String>,
    pub rating_key: Option<String>,
    pub key: Option<String>,
    /// The show's ratingKey: `grandparentRatingKey`, else the id in `grandparentKey`.
    pub show_rating_key: Option<String>,
    pub parent_rating_key: Option<String>,
    /// `episode`, `movie`, `track`…
    pub kind: String,
    pub title: String,
    pub grandparent_title: Option<String>,
    pub season: Option<u32>,
    pub episode: Option<u32>,
    pub viewed_at: i64,
    pub account_id: Option<i64>,
    pub device_id: Option<i64>,
    pub library_section_id: Option<String>,
    pub originally_available_at: Option<String>,
}

/// One page of history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryPage {
    pub rows: Vec<HistoryRow>,
    /// `totalSize`, else `size` (unpaged answers carry only `size`).
    pub total: Option<u64>,
    /// Rows on the page that were skipped (no usable `viewedAt`).
    pub skipped: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub machine_identifier: String,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlexAccount {
    pub id: i64,
    pub name: String,
}

/// The id at the end of a `/library/metadata/<id>` path.
pub fn id_from_key(key: &str) -> Option<String> {
    let rest = key.strip_prefix("/library/metadata/")?;
    let id = rest.split('/').next()?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| id.to_string())
}

fn nonempty(e: &Element, name: &str) -> Option<String> {
    e.attr(name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Parse a history `MediaContainer`.
pub fn parse_history(root: &Element) -> Result<HistoryPage, String> {
    if root.name != "MediaContainer" {
        return Err(format!(
            "root element is <{}>, not <MediaContainer>",
            root.name
        ));
    }
    let total = root
        .attr_num::<u64>("totalSize")
        .or_else(|| root.attr_num("size"));
    let mut page = HistoryPage {
        total,
        ..Default::default()
    };
    for e in &root.children {
        let Some(viewed_at) = e.attr_num::<i64>("viewedAt").filter(|v| *v > 0) else {
            page.skipped += 1;
            continue;
        };
        let key = nonempty(e, "key");
        page.rows.push(HistoryRow {
            history_key: nonempty(e, "historyKey"),
            rating_key: nonempty(e, "ratingKey"),
            show_rating_key: nonempty(e, "grandparentRatingKey")
                .or_else(|| e.attr("grandparentKey").and_then(id_from_key)),
            parent_rating_key: nonempty(e, "parentRatingKey")
                .or_else(|| e.attr("parentKey").and_then(id_from_key)),
            key,
            kind: e.attr("type").unwrap_or("").to_string(),
            title: e.attr("title").unwrap_or("").to_string(),
            grandparent_title: nonempty(e, "grandparentTitle"),
            season: e.attr_num("parentIndex"),
            episode: e.attr_num("index"),
            viewed_at,
            account_id: e.attr_num("accountID"),
            device_id: e.attr_num("deviceID"),
            library_section_id: nonempty(e, "librarySectionID"),
            originally_available_at: nonempty(e, "originallyAvailableAt"),
        });
    }
    Ok(page)
}

pub fn parse_identity(root: &Element) -> Option<Identity> {
    Some(Identity {
        machine_identifier: nonempty(root, "machineIdentifier")?,
        version: nonempty(root, "version"),
    })
}

pub fn parse_accounts(root: &Element) -> Vec<PlexAccount> {
    root.children_named("Account")
        .filter_map(|a| {
            Some(PlexAccount {
                id: a.attr_num("id")?,
                name: a.attr("name").unwrap_or("").to_string(),
            })
        })
        .collect()
}

impl PlexClient {
    pub async fn identity(&self) -> Result<Identity, PlexError> {
        let root = self.get_xml("/identity", &[], None).await?;
        parse_identity(&root).ok_or_else(|| PlexError::Malformed {
            endpoint: "/identity".into(),
            message: "no machineIdentifier".into(),
        })
    }

    pub async fn accounts(&self) -> Result<Vec<PlexAccount>, PlexError> {
        let root = self.get_xml("/accounts", &[], None).await?;
        Ok(parse_accounts(&root))
    }

    /// One page of history, oldest first, from `start` (X-Plex-Container-Start/Size headers).
    pub async fn history_page(
        &self,
        q: &HistoryQuery,
        start: u64,
        size: u64,
    ) -> Result<HistoryPage, PlexError> {
        let endpoint = "/status/sessions/history/all";
        // The comparison is part of the query KEY (`viewedAt>=123`), so it is written as is.
        let mut query = vec![
            ("sort", "viewedAt:asc".to_string()),
            ("viewedAt>", q.viewed_since.to_string()),
        ];
        if let Some(a) = q.account_id {
            query.push(("accountID", a.to_string()));
        }
        if let Some(s) = &q.library_section_id {
            query.push(("librarySectionID", s.clone()));
        }
        let root = self.get_xml(endpoint, &query, Some((start, size))).await?;
        parse_history(&root).map_err(|message| PlexError::Malformed {
            endpoint: endpoint.into(),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::xml::parse;
    use super::*;

    fn samples() -> Option<std::path::PathBuf> {
        let p = std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/plex-samples"
        ));
        if p.is_dir() {
            return Some(p);
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{} missing in CI",
            p.display()
        );
        eprintln!("NOTICE: {} not found; skipping", p.display());
        None
    }

    #[test]
    fn real_history_xml_with_deleted_items() {
        let Some(dir) = samples() else { return };
        let text =
            std::fs::read_to_string(dir.join("history/history-all_xml_plexopedia-excerpt.xml"))
                .unwrap();
        let page = parse_history(&parse(&text).unwrap()).unwrap();
        assert_eq!(page.rows.len() as u64 + page.skipped, 4);
        let ep = page.rows.iter().find(|r| r.kind == "episode").unwrap();
        assert!(
            ep.show_rating_key.is_some(),
            "derived from grandparentKey: {ep:?}"
        );
        assert!(ep.season.is_some() && ep.episode.is_some());
        assert!(ep.history_key.is_some());
        // Deleted items: no key / ratingKey, still rows.
        assert!(
            page.rows
                .iter()
                .any(|r| r.rating_key.is_none() && r.key.is_none())
        );
        assert!(page.total.is_some());
    }

    #[test]
    fn real_identity_and_accounts() {
        let Some(dir) = samples() else { return };
        let id = std::fs::read_to_string(dir.join("server/identity_xml_plexopedia-excerpt.xml"))
            .unwrap();
        assert!(
            !parse_identity(&parse(&id).unwrap())
                .unwrap()
                .machine_identifier
                .is_empty()
        );
        for f in [
            "server/accounts_xml_ha.xml",
            "server/accounts_xml_plexopedia-excerpt.xml",
        ] {
            let text = std::fs::read_to_string(dir.join(f)).unwrap();
            let accounts = parse_accounts(&parse(&text).unwrap());
            assert!(accounts.iter().any(|a| a.id == 1), "{f}: {accounts:?}");
            assert!(accounts.iter().any(|a| a.id == 0));
        }
    }

    #[test]
    fn lenient_rows_and_totals() {
        let x = r#"<MediaContainer size="2" totalSize="7"><Video historyKey="/h/1" grandparentKey="/library/metadata/77" type="episode" index="3" parentIndex="2" viewedAt="1700000000" accountID="1" grandparentTitle="S"/><Video historyKey="/h/2" type="episode" viewedAt="" /></MediaContainer>"#;
        let page = parse_history(&parse(x).unwrap()).unwrap();
        assert_eq!(page.total, Some(7));
        assert_eq!(page.skipped, 1);
        assert_eq!(page.rows[0].show_rating_key.as_deref(), Some("77"));
        assert_eq!(
            (page.rows[0].season, page.rows[0].episode),
            (Some(2), Some(3))
        );
        let only_size = parse_history(&parse(r#"<MediaContainer size="3"/>"#).unwrap()).unwrap();
        assert_eq!(only_size.total, Some(3));
        assert!(parse_history(&parse("<html/>").unwrap()).is_err());
        assert_eq!(
            id_from_key("/library/metadata/12/children").as_deref(),
            Some("12")
        );
        assert_eq!(id_from_key("/elsewhere/12"), None);
    }
}
