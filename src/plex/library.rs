//! Library scans: the server's sections (`GET /library/sections`) and the watched episodes of a
//! show section (`GET /library/sections/{id}/all?type=4…`), paged like history; for the full
//! watched-state sync, a section's shows (`…/all?type=2`) and a show's episodes
//! (`GET /library/metadata/{id}/allLeaves`), one page at a time so a walk never holds the
//! library.
//!
//! Why the scan exists: a manual "mark as watched" is reported to write no history row (and
//! to fire no webhook) — PLEX_PROTOCOL §1.3 and §3.2 mark this **[open]**; the brief for this
//! module says PMS ≥ 1.40 behaves so. Listing episodes whose `lastViewedAt` moved catches
//! those views. The section listing shows the watched state of the TOKEN's account (the owner
//! for an admin token), not of other users.

use super::history::{container_total, id_from_key};
use super::walk::Pages;
use super::xml::Element;
use super::{PlexClient, PlexError, encode_segment};

/// One `<Directory>` of `/library/sections`.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// The section id (`key`), e.g. `2`.
    pub key: String,
    pub title: String,
    /// `type`: `show`, `movie`, `artist`, `photo`.
    pub kind: String,
    /// e.g. `tv.plex.agents.series`, `com.plexapp.agents.thetvdb`.
    pub agent: Option<String>,
}

impl Section {
    pub fn is_show(&self) -> bool {
        self.kind == "show"
    }
}

/// One watched episode from a section listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LibraryEpisode {
    pub rating_key: String,
    /// `grandparentRatingKey`, else the id in `grandparentKey`.
    pub show_rating_key: Option<String>,
    pub grandparent_title: Option<String>,
    /// The show's guid (`plex://show/…` or a legacy agent guid).
    pub grandparent_guid: Option<String>,
    /// `parentIndex`.
    pub season: Option<u32>,
    /// `index`.
    pub episode: Option<u32>,
    /// `viewCount`; 0 when absent.
    pub view_count: u64,
    /// `lastViewedAt`, unix seconds; None when absent or not positive.
    pub last_viewed_at: Option<i64>,
}

/// One page of a section listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpisodePage {
    pub rows: Vec<LibraryEpisode>,
    /// `totalSize`, else `size` (see [`container_total`]).
    pub total: Option<u64>,
    /// Items served on the page: `rows.len() + skipped`.
    pub size: u64,
    /// Items that are not episodes or have no `ratingKey`.
    pub skipped: u64,
}

/// A whole walk over one section ([`PlexClient::watched_episodes_all`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpisodeWalk {
    pub rows: Vec<LibraryEpisode>,
    pub skipped: u64,
    pub pages: u64,
    pub total: Option<u64>,
}

/// Every `<Directory>` with a `key` in a `/library/sections` container.
pub fn parse_sections(root: &Element) -> Vec<Section> {
    root.children_named("Directory")
        .filter_map(|d| {
            Some(Section {
                key: d.attr_nonempty("key")?.to_string(),
                title: d.attr("title").unwrap_or("").to_string(),
                kind: d.attr_nonempty("type").unwrap_or("").to_string(),
                agent: d.attr_nonempty("agent").map(str::to_string),
            })
        })
        .collect()
}

/// Only the TV sections (`type="show"`).
pub fn show_sections_of(sections: Vec<Section>) -> Vec<Section> {
    sections.into_iter().filter(Section::is_show).collect()
}

/// One listing element as an episode; None for other types or an episode without ratingKey.
pub fn parse_episode(e: &Element) -> Option<LibraryEpisode> {
    if e.attr("type").map(str::trim) != Some("episode") {
        return None;
    }
    Some(LibraryEpisode {
        rating_key: e.attr_nonempty("ratingKey")?.to_string(),
        show_rating_key: e
            .attr_nonempty("grandparentRatingKey")
            .map(str::to_string)
            .or_else(|| e.attr("grandparentKey").and_then(id_from_key)),
        grandparent_title: e.attr_nonempty("grandparentTitle").map(str::to_string),
        grandparent_guid: e.attr_nonempty("grandparentGuid").map(str::to_string),
        season: e.attr_int("parentIndex"),
        episode: e.attr_int("index"),
        view_count: e.attr_int("viewCount").unwrap_or(0),
        last_viewed_at: e.attr_int::<i64>("lastViewedAt").filter(|t| *t > 0),
    })
}

/// A section listing container (the root name is the caller's to check).
pub fn parse_episodes(root: &Element) -> EpisodePage {
    let mut page = EpisodePage {
        total: container_total(root),
        size: root.children.len() as u64,
        ..Default::default()
    };
    for e in &root.children {
        match parse_episode(e) {
            Some(ep) => page.rows.push(ep),
            None => page.skipped += 1,
        }
    }
    page
}

/// The query of a watched-episode listing: episodes (`type=4`) with their `<Guid>`s, oldest
/// view first, `viewCount>=1` and `lastViewedAt>=<since>` (operators in the keys).
pub fn watched_query(since: i64) -> Vec<(&'static str, String)> {
    vec![
        ("type", "4".to_string()),
        ("includeGuids", "1".to_string()),
        ("sort", "lastViewedAt:asc".to_string()),
        ("viewCount>", "1".to_string()),
        ("lastViewedAt>", since.max(0).to_string()),
    ]
}

/// A section's watched episodes page by page ([`PlexClient::watched_episode_pages`]), or a
/// show's episodes ([`PlexClient::show_episode_pages`]): the one paged walk of [`super::walk`],
/// items identified by `ratingKey`, rules as for history.
pub type EpisodePages<'a> = Pages<'a, EpisodePage>;

/// A section's shows page by page ([`PlexClient::show_pages`]).
pub type ShowPages<'a> = Pages<'a, ShowPage>;

fn section_path(section: &str) -> String {
    format!("/library/sections/{}/all", encode_segment(section))
}

fn leaves_path(show: &str) -> String {
    format!("/library/metadata/{}/allLeaves", encode_segment(show))
}

/// One show of a section listing (`/library/sections/{id}/all?type=2`) or of its metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LibraryShow {
    pub rating_key: String,
    pub title: String,
    pub year: Option<i32>,
    /// The show's own guid (`plex://show/…` or a legacy agent guid).
    pub guid: Option<String>,
    /// `librarySectionID` (element or container), when given.
    pub section: Option<String>,
}

/// One page of a section's show listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShowPage {
    pub rows: Vec<LibraryShow>,
    pub total: Option<u64>,
    /// Items served on the page (shows or not).
    pub size: u64,
}

/// One element as a show (`type="show"` with a ratingKey and a title); None otherwise.
pub fn parse_show(e: &Element, root: &Element) -> Option<LibraryShow> {
    if e.attr("type").map(str::trim) != Some("show") {
        return None;
    }
    Some(LibraryShow {
        rating_key: e.attr_nonempty("ratingKey")?.to_string(),
        title: e.attr_nonempty("title")?.to_string(),
        year: e.attr_num("year"),
        guid: e.attr_nonempty("guid").map(str::to_string),
        section: e
            .attr_nonempty("librarySectionID")
            .or_else(|| root.attr_nonempty("librarySectionID"))
            .map(str::to_string),
    })
}

/// A show listing container.
pub fn parse_shows(root: &Element) -> ShowPage {
    ShowPage {
        rows: root
            .children
            .iter()
            .filter_map(|e| parse_show(e, root))
            .collect(),
        total: container_total(root),
        size: root.children.len() as u64,
    }
}

/// A section's shows (`type=2`), in title order so pages are stable.
pub fn shows_query() -> Vec<(&'static str, String)> {
    vec![
        ("type", "2".to_string()),
        ("sort", "titleSort:asc".to_string()),
    ]
}

impl PlexClient {
    /// Every section of the server (`GET /library/sections`).
    pub async fn sections(&self) -> Result<Vec<Section>, PlexError> {
        let root = self.get_container("/library/sections", &[], None).await?;
        Ok(parse_sections(&root))
    }

    /// The server's TV sections.
    pub async fn show_sections(&self) -> Result<Vec<Section>, PlexError> {
        Ok(show_sections_of(self.sections().await?))
    }

    /// One page of a section's watched episodes whose `lastViewedAt` is at or after `since`
    /// (unix seconds), oldest first, from `start` (X-Plex-Container-Start/Size).
    pub async fn watched_episodes(
        &self,
        section: &str,
        since: i64,
        start: u64,
        size: u64,
    ) -> Result<EpisodePage, PlexError> {
        let path = section_path(section);
        let root = self
            .get_container(&path, &watched_query(since), Some((start, size)))
            .await?;
        Ok(parse_episodes(&root))
    }

    /// Walk a section's watched episodes page by page.
    pub fn watched_episode_pages(
        &self,
        section: &str,
        since: i64,
        page_size: u64,
    ) -> EpisodePages<'_> {
        Pages::new(
            self,
            section_path(section),
            watched_query(since),
            "ratingKey",
            page_size,
            |root| Ok(parse_episodes(root)),
        )
    }

    /// Walk a TV section's shows page by page (title order).
    pub fn show_pages(&self, section: &str, page_size: u64) -> ShowPages<'_> {
        Pages::new(
            self,
            section_path(section),
            shows_query(),
            "ratingKey",
            page_size,
            |root| Ok(parse_shows(root)),
        )
    }

    /// Walk a show's episodes, watched or not, page by page (`allLeaves`); a show Plex no
    /// longer has is `NotFound`.
    pub fn show_episode_pages(&self, show: &str, page_size: u64) -> EpisodePages<'_> {
        Pages::new(
            self,
            leaves_path(show),
            Vec::new(),
            "ratingKey",
            page_size,
            |root| Ok(parse_episodes(root)),
        )
    }

    /// One page of a TV section's shows.
    pub async fn show_page(
        &self,
        section: &str,
        start: u64,
        size: u64,
    ) -> Result<ShowPage, PlexError> {
        let root = self
            .get_container(&section_path(section), &shows_query(), Some((start, size)))
            .await?;
        Ok(parse_shows(&root))
    }

    /// One page of a show's episodes, watched or not (`/library/metadata/{id}/allLeaves`).
    pub async fn show_episodes(
        &self,
        show: &str,
        start: u64,
        size: u64,
    ) -> Result<EpisodePage, PlexError> {
        let root = self
            .get_container(&leaves_path(show), &[], Some((start, size)))
            .await?;
        Ok(parse_episodes(&root))
    }

    /// The show with this ratingKey; None when Plex has no such item or it is not a show.
    pub async fn library_show(&self, rating_key: &str) -> Result<Option<LibraryShow>, PlexError> {
        let path = format!("/library/metadata/{}", encode_segment(rating_key));
        match self.get_container(&path, &[], None).await {
            Ok(root) => Ok(root.children.iter().find_map(|e| parse_show(e, &root))),
            Err(PlexError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// All watched episodes of a section since `since`.
    pub async fn watched_episodes_all(
        &self,
        section: &str,
        since: i64,
        page_size: u64,
    ) -> Result<EpisodeWalk, PlexError> {
        let mut pages = self.watched_episode_pages(section, since, page_size);
        let mut walk = EpisodeWalk::default();
        while let Some(page) = pages.next_page().await? {
            walk.skipped += page.skipped;
            walk.rows.extend(page.rows);
        }
        walk.pages = pages.pager().pages();
        walk.total = pages.pager().total();
        Ok(walk)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_samples::sample;
    use super::super::test_server::TestServer;
    use super::super::xml::parse;
    use super::*;

    #[test]
    fn real_sections_keep_only_shows_in_the_helper() {
        let Some(text) = sample("server/library-sections_xml_ha.xml") else {
            return;
        };
        let all = parse_sections(&parse(&text).unwrap());
        let kinds: Vec<_> = all.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds, vec!["movie", "show", "artist"]);
        assert_eq!(
            show_sections_of(all),
            vec![Section {
                key: "2".into(),
                title: "TV Shows".into(),
                kind: "show".into(),
                agent: Some("com.plexapp.agents.thetvdb".into()),
            }]
        );
    }

    #[test]
    fn real_show_listing_has_no_episode_rows() {
        // `/library/sections/2/all` without type=4: one show Directory. Not an episode: skipped.
        let Some(text) = sample("metadata/section-all_shows_legacy-thetvdb_ha.xml") else {
            return;
        };
        let page = parse_episodes(&parse(&text).unwrap());
        assert_eq!(
            (page.rows.len(), page.skipped, page.size, page.total),
            (0, 1, 1, Some(1))
        );
    }

    #[test]
    fn real_episode_element() {
        let Some(text) =
            sample("metadata/season-children_episode_plexagent_xml_plexopedia-excerpt.xml")
        else {
            return;
        };
        let page = parse_episodes(&parse(&text).unwrap());
        assert_eq!(
            page.rows,
            vec![LibraryEpisode {
                rating_key: "275481".into(),
                show_rating_key: Some("275479".into()),
                grandparent_title: Some("The Joy of Painting".into()),
                grandparent_guid: Some("plex://show/5d9c086e3c3f87001f34fc00".into()),
                season: Some(1),
                episode: Some(1),
                view_count: 0,
                last_viewed_at: None,
            }]
        );
        assert_eq!(page.total, Some(13));
    }

    #[test]
    fn own_listing_with_mixed_items() {
        let x = r#"<MediaContainer size="4" totalSize="9" offset="0"><Video ratingKey="9" type="episode" grandparentKey="/library/metadata/5" grandparentTitle="S" grandparentGuid="" index="2" parentIndex="1" viewCount="3" lastViewedAt="1700000000"><Guid id="tvdb://1"/></Video><Video type="episode" index="1"/><Directory type="season" ratingKey="4"/><Video ratingKey="10" type="episode" lastViewedAt="0"/></MediaContainer>"#;
        let p = parse_episodes(&parse(x).unwrap());
        assert_eq!(
            (p.rows.len(), p.skipped, p.size, p.total),
            (2, 2, 4, Some(9))
        );
        let e = &p.rows[0];
        assert_eq!(e.show_rating_key.as_deref(), Some("5"));
        assert_eq!((e.view_count, e.last_viewed_at), (3, Some(1_700_000_000)));
        assert_eq!(e.grandparent_guid, None);
        assert_eq!((p.rows[1].view_count, p.rows[1].last_viewed_at), (0, None));
        let sections = parse_sections(
            &parse(r#"<MediaContainer><Directory type="show" title="no key"/></MediaContainer>"#)
                .unwrap(),
        );
        assert!(sections.is_empty());
    }

    #[test]
    fn watched_query_has_operators_in_keys() {
        let q = watched_query(-3);
        assert!(q.contains(&("viewCount>", "1".to_string())));
        assert!(q.contains(&("lastViewedAt>", "0".to_string())));
        assert!(q.contains(&("type", "4".to_string())));
    }

    #[tokio::test]
    async fn walks_a_section_page_by_page() {
        let srv = TestServer::start(|r| {
            if r.path == "/library/sections" {
                return (
                    200,
                    r#"<MediaContainer size="2"><Directory key="1" type="movie" title="M"/><Directory key="2" type="show" title="TV" agent="tv.plex.agents.series"/></MediaContainer>"#.into(),
                );
            }
            if r.path != "/library/sections/2/all" {
                return (404, "<html><body>404</body></html>".into());
            }
            let start = r.num_header("X-Plex-Container-Start").unwrap_or(0);
            let size = r.num_header("X-Plex-Container-Size").unwrap_or(1000).min(4);
            let n = 10u64;
            let rows: String = (start..(start + size).min(n))
                .map(|i| format!(r#"<Video ratingKey="{}" type="episode" grandparentRatingKey="5" grandparentTitle="S" index="{}" parentIndex="1" viewCount="1" lastViewedAt="{}"></Video>"#, 100 + i, i + 1, 1_700_000_000 + i))
                .collect();
            (200, format!(r#"<MediaContainer size="{}" totalSize="{n}" offset="{start}">{rows}</MediaContainer>"#, (start + size).min(n) - start.min(n)))
        })
        .await;
        crate::install_tls_provider();
        let c = PlexClient::new(
            &srv.url,
            None,
            "t".into(),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        let shows = c.show_sections().await.unwrap();
        assert_eq!(shows.len(), 1);
        let walk = c
            .watched_episodes_all(&shows[0].key, 1_600_000_000, 50)
            .await
            .unwrap();
        assert_eq!((walk.rows.len(), walk.pages, walk.total), (10, 3, Some(10)));
        let reqs = srv.requests();
        let q = &reqs[1].query;
        for part in [
            "type=4",
            "includeGuids=1",
            "sort=lastViewedAt%3Aasc",
            "viewCount%3E=1",
            "lastViewedAt%3E=1600000000",
        ] {
            assert!(
                q.contains(part) || q.contains(&part.replace("%3E", ">")),
                "{part} in {q}"
            );
        }
        let err = c.watched_episodes("9", 0, 0, 10).await.unwrap_err();
        assert!(
            matches!(&err, PlexError::NotFound { endpoint } if endpoint == "/library/sections/9/all"),
            "{err:?}"
        );
    }
}
