//! Library scans: show sections and their episodes with a watched state. PMS ≥ 1.40 writes no
//! history row when a person marks an episode watched by hand, so the poller also lists
//! episodes whose `lastViewedAt` moved.

use super::history::id_from_key;
use super::xml::Element;
use super::{PlexClient, PlexError, encode_segment};

#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub key: String,
    pub title: String,
    pub kind: String,
    pub agent: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LibraryEpisode {
    pub rating_key: String,
    pub show_rating_key: Option<String>,
    pub grandparent_title: Option<String>,
    pub grandparent_guid: Option<String>,
    pub season: Option<u32>,
    pub episode: Option<u32>,
    pub view_count: u64,
    pub last_viewed_at: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpisodePage {
    pub rows: Vec<LibraryEpisode>,
    pub total: Option<u64>,
}

pub fn parse_sections(root: &Element) -> Vec<Section> {
    root.children_named("Directory")
        .filter_map(|d| {
            Some(Section {
                key: d.attr("key")?.to_string(),
                title: d.attr("title").unwrap_or("").to_string(),
                kind: d.attr("type").unwrap_or("").to_string(),
                agent: d.attr("agent").map(str::to_string),
            })
        })
        .collect()
}

pub fn parse_episodes(root: &Element) -> EpisodePage {
    let rows = root
        .children
        .iter()
        .filter(|e| e.attr("type") == Some("episode"))
        .filter_map(|e| {
            Some(LibraryEpisode {
                rating_key: e.attr("ratingKey")?.to_string(),
                show_rating_key: e
                    .attr("grandparentRatingKey")
                    .map(str::to_string)
                    .or_else(|| e.attr("grandparentKey").and_then(id_from_key)),
                grandparent_title: e.attr("grandparentTitle").map(str::to_string),
                grandparent_guid: e
                    .attr("grandparentGuid")
                    .filter(|g| !g.is_empty())
                    .map(str::to_string),
                season: e.attr_num("parentIndex"),
                episode: e.attr_num("index"),
                view_count: e.attr_num("viewCount").unwrap_or(0),
                last_viewed_at: e.attr_num::<i64>("lastViewedAt").filter(|t| *t > 0),
            })
        })
        .collect();
    EpisodePage {
        rows,
        total: root.attr_num("totalSize").or_else(|| root.attr_num("size")),
    }
}

impl PlexClient {
    /// The server's TV sections.
    pub async fn show_sections(&self) -> Result<Vec<Section>, PlexError> {
        let root = self.get_xml("/library/sections", &[], None).await?;
        Ok(parse_sections(&root)
            .into_iter()
            .filter(|s| s.kind == "show")
            .collect())
    }

    /// Watched episodes of a section whose `lastViewedAt` is at or after `since`, oldest first.
    pub async fn watched_episodes(
        &self,
        section: &str,
        since: i64,
        start: u64,
        size: u64,
    ) -> Result<EpisodePage, PlexError> {
        let path = format!("/library/sections/{}/all", encode_segment(section));
        let query = [
            ("type", "4".to_string()),
            ("includeGuids", "1".to_string()),
            ("sort", "lastViewedAt:asc".to_string()),
            ("viewCount>", "1".to_string()),
            ("lastViewedAt>", since.to_string()),
        ];
        let root = self.get_xml(&path, &query, Some((start, size))).await?;
        if root.name != "MediaContainer" {
            return Err(PlexError::Malformed {
                endpoint: path,
                message: format!("root element is <{}>, not <MediaContainer>", root.name),
            });
        }
        Ok(parse_episodes(&root))
    }
}

#[cfg(test)]
mod tests {
    use super::super::xml::parse;
    use super::*;

    #[test]
    fn sections_and_watched_episodes() {
        let dir = std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/plex-samples"
        ));
        if dir.is_dir() {
            let text =
                std::fs::read_to_string(dir.join("server/library-sections_xml_ha.xml")).unwrap();
            let s = parse_sections(&parse(&text).unwrap());
            assert!(s.iter().any(|s| s.kind == "show"), "{s:?}");
        } else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "shared samples missing in CI"
            );
        }
        let x = r#"<MediaContainer size="1" totalSize="1"><Video ratingKey="9" type="episode" grandparentRatingKey="5" grandparentTitle="S" grandparentGuid="plex://show/x" index="2" parentIndex="1" viewCount="1" lastViewedAt="1700000000"/><Directory type="season"/></MediaContainer>"#;
        let p = parse_episodes(&parse(x).unwrap());
        assert_eq!(p.rows.len(), 1);
        assert_eq!(p.rows[0].last_viewed_at, Some(1_700_000_000));
        assert_eq!(p.total, Some(1));
    }
}
