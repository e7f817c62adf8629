//! Watch history: `GET /status/sessions/history/all` (PLEX_PROTOCOL §3), one page at a time
//! ([`PlexClient::history_page`]), page by page with the paging rules of [`super::paging`]
//! (overlapping pages, so rows removed during a walk skip nothing: [`super::walk`])
//! ([`PlexClient::history_pages`]), or all at once ([`PlexClient::history_all`]).
//!
//! Rows are parsed leniently: rows of items since deleted from the library have no
//! `key`/`ratingKey` and are kept with those fields `None`; ids are strings in one PMS version
//! and numbers in another; a row without a usable `viewedAt` is skipped and counted on its
//! page, never fatal. History rows carry no `guid` and no `grandparentRatingKey`: the show's
//! ratingKey comes from `grandparentKey` (`/library/metadata/<id>`).
//!
//! Identity and accounts moved to [`super::server`]; they are re-exported here for callers
//! that import them from this module.

use super::walk::Pages;
use super::xml::Element;
use super::{PlexClient, PlexError};

pub use super::server::{Identity, PlexAccount, parse_accounts, parse_identity};

/// The history endpoint, as named in errors.
pub const HISTORY_ENDPOINT: &str = "/status/sessions/history/all";

/// Which history to read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryQuery {
    /// Server account id (`accountID`); None = every account the token may see (an admin
    /// token sees all accounts, any other token only its own).
    pub account_id: Option<i64>,
    /// Unix seconds: rows viewed at or after this (`viewedAt>=`). Negative values are sent
    /// as 0.
    pub viewed_since: i64,
    /// `librarySectionID`; None = all sections.
    pub library_section_id: Option<String>,
    /// `metadataItemID`: one item's rows (an episode's, or a season's or show's episodes);
    /// None = every item.
    pub metadata_item_id: Option<u64>,
}

/// One history row (one view).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryRow {
    /// `/status/sessions/history/<id>`: unique per view, the dedup key.
    pub history_key: Option<String>,
    /// None for a deleted item.
    pub rating_key: Option<String>,
    /// None for a deleted item.
    pub key: Option<String>,
    /// The show's ratingKey: `grandparentRatingKey`, else the id in `grandparentKey`.
    pub show_rating_key: Option<String>,
    /// The season's ratingKey: `parentRatingKey`, else the id in `parentKey`.
    pub parent_rating_key: Option<String>,
    /// `type`: `episode`, `movie`, `track`… (empty when absent).
    pub kind: String,
    pub title: String,
    /// The show's title (episodes).
    pub grandparent_title: Option<String>,
    /// `parentIndex` (episodes: the season number).
    pub season: Option<u32>,
    /// `index` (episodes: the episode number).
    pub episode: Option<u32>,
    /// `viewedAt`, unix seconds (> 0).
    pub viewed_at: i64,
    /// `accountID`: the PMS account id (owner = 1), see `/accounts`.
    pub account_id: Option<i64>,
    pub device_id: Option<i64>,
    pub library_section_id: Option<String>,
    /// Air date `YYYY-MM-DD`.
    pub originally_available_at: Option<String>,
}

/// One page of history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryPage {
    pub rows: Vec<HistoryRow>,
    /// `totalSize`, else `size` (unpaged answers carry only `size`).
    pub total: Option<u64>,
    /// Items the server served on this page: `rows.len() + skipped`. The next page starts
    /// this many items later (the `size` attribute is not trusted for that).
    pub size: u64,
    /// Rows on the page that were skipped (no usable `viewedAt`).
    pub skipped: u64,
}

/// A whole walk over history ([`PlexClient::history_all`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryWalk {
    pub rows: Vec<HistoryRow>,
    /// Rows skipped on all pages (no usable `viewedAt`).
    pub skipped: u64,
    /// Requests made (the final empty page, if any, included).
    pub pages: u64,
    /// The last total the server reported.
    pub total: Option<u64>,
}

/// The id at the end of a `/library/metadata/<id>` path (`…/<id>/children` too).
pub fn id_from_key(key: &str) -> Option<String> {
    let rest = key.trim().strip_prefix("/library/metadata/")?;
    let id = rest.split('/').next()?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| id.to_string())
}

fn owned(e: &Element, name: &str) -> Option<String> {
    e.attr_nonempty(name).map(str::to_string)
}

/// One history element as a row; None when it has no usable `viewedAt`.
pub fn parse_history_row(e: &Element) -> Option<HistoryRow> {
    let viewed_at = e.attr_int::<i64>("viewedAt").filter(|v| *v > 0)?;
    Some(HistoryRow {
        history_key: owned(e, "historyKey"),
        rating_key: owned(e, "ratingKey"),
        key: owned(e, "key"),
        show_rating_key: owned(e, "grandparentRatingKey")
            .or_else(|| e.attr("grandparentKey").and_then(id_from_key)),
        parent_rating_key: owned(e, "parentRatingKey")
            .or_else(|| e.attr("parentKey").and_then(id_from_key)),
        kind: e.attr_nonempty("type").unwrap_or("").to_string(),
        title: e.attr("title").unwrap_or("").to_string(),
        grandparent_title: owned(e, "grandparentTitle"),
        season: e.attr_int("parentIndex"),
        episode: e.attr_int("index"),
        viewed_at,
        account_id: e.attr_int("accountID"),
        device_id: e.attr_int("deviceID"),
        library_section_id: owned(e, "librarySectionID"),
        originally_available_at: owned(e, "originallyAvailableAt"),
    })
}

/// A container's total: `totalSize`, else `size` (an unpaged answer carries only `size`,
/// which then counts everything). Exception: a container with an `offset` attribute says it is
/// one page of a paged answer (PLEX_PROTOCOL §3.3), so without `totalSize` its `size` counts
/// only that page and the total is unknown (None): the walk then ends on an empty page
/// instead of after the first page.
pub fn container_total(root: &Element) -> Option<u64> {
    if let Some(t) = root.attr_int::<u64>("totalSize") {
        return Some(t);
    }
    if root.attr("offset").is_some() {
        return None;
    }
    root.attr_int("size")
}

/// Parse a history `MediaContainer`: every child element is one served item.
pub fn parse_history(root: &Element) -> Result<HistoryPage, String> {
    if root.name != "MediaContainer" {
        return Err(format!(
            "root element is <{}>, not <MediaContainer>",
            root.name
        ));
    }
    let mut page = HistoryPage {
        total: container_total(root),
        size: root.children.len() as u64,
        ..Default::default()
    };
    for e in &root.children {
        match parse_history_row(e) {
            Some(row) => page.rows.push(row),
            None => page.skipped += 1,
        }
    }
    Ok(page)
}

/// The query string of a history request, in order: `sort`, `viewedAt>` (→ `viewedAt>=N`),
/// then the optional `accountID`, `librarySectionID` and `metadataItemID`.
pub fn history_query(q: &HistoryQuery) -> Vec<(&'static str, String)> {
    let mut query = vec![
        ("sort", "viewedAt:asc".to_string()),
        // The comparison is part of the query KEY (`viewedAt>=123`); get_xml writes keys as is.
        ("viewedAt>", q.viewed_since.max(0).to_string()),
    ];
    if let Some(a) = q.account_id {
        query.push(("accountID", a.to_string()));
    }
    if let Some(s) = &q.library_section_id {
        query.push(("librarySectionID", s.clone()));
    }
    if let Some(id) = q.metadata_item_id {
        query.push(("metadataItemID", id.to_string()));
    }
    query
}

/// History page by page ([`PlexClient::history_pages`]): the one paged walk of
/// [`super::walk`], rows identified by `historyKey`. Its pages hold only rows the walk has not
/// read before; a page may hold only skipped rows (`rows` empty, `skipped > 0`).
pub type HistoryPages<'a> = Pages<'a, HistoryPage>;

impl PlexClient {
    /// One page of history, oldest first: `sort=viewedAt:asc`, `viewedAt>=<since>`, optional
    /// `accountID` / `librarySectionID`, paged with `X-Plex-Container-Start: start` and
    /// `X-Plex-Container-Size: size` (the server may serve fewer).
    pub async fn history_page(
        &self,
        q: &HistoryQuery,
        start: u64,
        size: u64,
    ) -> Result<HistoryPage, PlexError> {
        let root = self
            .get_container(HISTORY_ENDPOINT, &history_query(q), Some((start, size)))
            .await?;
        parse_history(&root).map_err(|message| PlexError::Malformed {
            endpoint: HISTORY_ENDPOINT.into(),
            message,
        })
    }

    /// Walk history from the first row, asking `page_size` rows a page; see
    /// [`Pages::next_page`]. For callers that commit page by page.
    pub fn history_pages(&self, q: &HistoryQuery, page_size: u64) -> HistoryPages<'_> {
        Pages::new(
            self,
            HISTORY_ENDPOINT.into(),
            history_query(q),
            "historyKey",
            page_size,
            parse_history,
        )
    }

    /// Every history row matching `q`, read page by page (stops on an empty page or once the
    /// total is reached; a server that ignores paging, or more than
    /// [`paging::DEFAULT_MAX_PAGES`](super::paging::DEFAULT_MAX_PAGES) pages, is `Malformed`).
    pub async fn history_all(
        &self,
        q: &HistoryQuery,
        page_size: u64,
    ) -> Result<HistoryWalk, PlexError> {
        let mut pages = self.history_pages(q, page_size);
        let mut walk = HistoryWalk::default();
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
    fn real_history_xml_with_deleted_items() {
        let Some(text) = sample("history/history-all_xml_plexopedia-excerpt.xml") else {
            return;
        };
        let page = parse_history(&parse(&text).unwrap()).unwrap();
        // Unpaged answer: only `size` (3693), which is then the total.
        assert_eq!(page.total, Some(3693));
        assert_eq!((page.size, page.skipped, page.rows.len()), (4, 0, 4));

        let movie = &page.rows[0];
        assert_eq!(movie.kind, "movie");
        assert_eq!(movie.rating_key.as_deref(), Some("218860"));
        assert_eq!(movie.key.as_deref(), Some("/library/metadata/218860"));
        assert_eq!(movie.show_rating_key, None);

        let ep = &page.rows[1];
        assert_eq!(
            ep,
            &HistoryRow {
                history_key: Some("/status/sessions/history/2".into()),
                rating_key: Some("917".into()),
                key: Some("/library/metadata/917".into()),
                show_rating_key: Some("871".into()),
                parent_rating_key: Some("916".into()),
                kind: "episode".into(),
                title: "At the Garbage Dump".into(),
                grandparent_title: Some("Mighty Machines".into()),
                season: Some(1),
                episode: Some(7),
                viewed_at: 1_419_652_401,
                account_id: Some(1),
                device_id: None,
                library_section_id: Some("4".into()),
                originally_available_at: Some("1998-01-25".into()),
            }
        );

        // Deleted items: no key / ratingKey, still rows with their history key and time.
        for deleted in &page.rows[2..] {
            assert_eq!((&deleted.key, &deleted.rating_key), (&None, &None));
            assert!(deleted.history_key.is_some());
            assert!(deleted.viewed_at > 0);
            assert_eq!(deleted.account_id, Some(1));
        }
        assert_eq!(page.rows[3].title, "Thomas and Friends Best of Percy");
    }

    #[test]
    fn total_size_wins_over_size() {
        let x = r#"<MediaContainer size="2" totalSize="7" offset="0"><Video historyKey="/h/1" viewedAt="1700000000"/><Video historyKey="/h/2" viewedAt="1700000001"/></MediaContainer>"#;
        let page = parse_history(&parse(x).unwrap()).unwrap();
        assert_eq!((page.total, page.size), (Some(7), 2));
        let only_size = parse_history(&parse(r#"<MediaContainer size="3"/>"#).unwrap()).unwrap();
        assert_eq!((only_size.total, only_size.size), (Some(3), 0));
        let neither = parse_history(&parse(r#"<MediaContainer/>"#).unwrap()).unwrap();
        assert_eq!(neither.total, None);
        let a_page = r#"<MediaContainer size="2" offset="50"/>"#;
        assert_eq!(parse_history(&parse(a_page).unwrap()).unwrap().total, None);
        let junk = parse_history(&parse(r#"<MediaContainer totalSize="x" size="4"/>"#).unwrap());
        assert_eq!(junk.unwrap().total, Some(4));
    }

    #[test]
    fn missing_or_bad_viewed_at_is_skipped_and_counted() {
        let x = r#"<MediaContainer size="5" totalSize="5">
            <Video historyKey="/h/1" grandparentKey="/library/metadata/77" type="episode" index="3" parentIndex="2" viewedAt="1700000000" accountID="1" grandparentTitle="S"/>
            <Video historyKey="/h/2" type="episode" viewedAt=""/>
            <Video historyKey="/h/3" type="episode"/>
            <Video historyKey="/h/4" type="episode" viewedAt="yesterday"/>
            <Video historyKey="/h/5" type="episode" viewedAt="0"/>
        </MediaContainer>"#;
        let page = parse_history(&parse(x).unwrap()).unwrap();
        assert_eq!((page.rows.len(), page.skipped, page.size), (1, 4, 5));
        let r = &page.rows[0];
        assert_eq!(r.show_rating_key.as_deref(), Some("77"));
        assert_eq!((r.season, r.episode), (Some(2), Some(3)));
    }

    #[test]
    fn lenient_ids_and_numbers() {
        let x = r#"<MediaContainer><Video historyKey=" /h/1 " grandparentRatingKey="55" grandparentKey="/library/metadata/77" parentRatingKey="" parentKey="/library/metadata/76" type="episode" index=" 3 " parentIndex="2.0" viewedAt="1700000000.0" accountID="+1" deviceID="x" librarySectionID="2" key="" ratingKey="  "/><Track viewedAt="1700000002" parentIndex="-1"/></MediaContainer>"#;
        let page = parse_history(&parse(x).unwrap()).unwrap();
        let r = &page.rows[0];
        assert_eq!(r.history_key.as_deref(), Some("/h/1"));
        assert_eq!(
            r.show_rating_key.as_deref(),
            Some("55"),
            "grandparentRatingKey first"
        );
        assert_eq!(
            r.parent_rating_key.as_deref(),
            Some("76"),
            "blank → from parentKey"
        );
        assert_eq!((r.season, r.episode), (Some(2), Some(3)));
        assert_eq!(r.viewed_at, 1_700_000_000);
        assert_eq!((r.account_id, r.device_id), (Some(1), None));
        assert_eq!((&r.key, &r.rating_key), (&None, &None));
        let t = &page.rows[1];
        assert_eq!(
            (t.kind.as_str(), t.season, t.title.as_str()),
            ("", None, "")
        );
    }

    #[test]
    fn not_a_media_container() {
        let err = parse_history(&parse("<html><body/></html>").unwrap()).unwrap_err();
        assert!(err.contains("<html>"), "{err}");
    }

    #[test]
    fn keys_from_paths() {
        assert_eq!(id_from_key("/library/metadata/12").as_deref(), Some("12"));
        assert_eq!(
            id_from_key("/library/metadata/12/children").as_deref(),
            Some("12")
        );
        assert_eq!(id_from_key("/elsewhere/12"), None);
        assert_eq!(id_from_key("/library/metadata/"), None);
        assert_eq!(id_from_key("/library/metadata/1%2F2"), None);
    }

    #[test]
    fn query_keys_carry_the_operator() {
        let q = HistoryQuery {
            account_id: Some(1),
            viewed_since: -5,
            library_section_id: Some("2".into()),
            metadata_item_id: Some(60001),
        };
        assert_eq!(
            history_query(&q),
            vec![
                ("sort", "viewedAt:asc".to_string()),
                ("viewedAt>", "0".to_string()),
                ("accountID", "1".to_string()),
                ("librarySectionID", "2".to_string()),
                ("metadataItemID", "60001".to_string()),
            ]
        );
        assert_eq!(history_query(&HistoryQuery::default()).len(), 2);
    }

    /// A paging history server over `n` rows, page size capped at `cap`.
    fn history_xml(n: u64, start: u64, size: u64, cap: u64, total_attr: bool) -> String {
        let take = size.min(cap).min(n.saturating_sub(start));
        let rows: String = (start..start + take)
            .map(|i| {
                format!(
                    r#"<Video historyKey="/status/sessions/history/{i}" key="/library/metadata/{}" ratingKey="{}" grandparentKey="/library/metadata/9" type="episode" index="{}" parentIndex="1" viewedAt="{}" accountID="1"/>"#,
                    1000 + i,
                    1000 + i,
                    i + 1,
                    1_700_000_000 + i
                )
            })
            .collect();
        let total = if total_attr {
            format!(r#" totalSize="{n}""#)
        } else {
            String::new()
        };
        format!(r#"<MediaContainer size="{take}"{total} offset="{start}">{rows}</MediaContainer>"#)
    }

    fn client(url: &str) -> PlexClient {
        crate::install_tls_provider();
        PlexClient::new(
            url,
            Some(plexsync_plugin_api::Secret::new("tok-SECRET-123".into())),
            "test-client".into(),
            std::time::Duration::from_secs(5),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn walks_all_pages_with_headers_and_a_capped_server() {
        let srv = TestServer::start(|r| {
            let start = r.num_header("X-Plex-Container-Start").unwrap_or(0);
            let size = r.num_header("X-Plex-Container-Size").unwrap_or(1000);
            (200, history_xml(120, start, size, 50, true))
        })
        .await;
        let c = client(&srv.url);
        let q = HistoryQuery {
            account_id: Some(1),
            viewed_since: 1_700_000_000,
            library_section_id: None,
            metadata_item_id: None,
        };
        let walk = c.history_all(&q, 100).await.unwrap();
        assert_eq!(walk.rows.len(), 120);
        assert_eq!((walk.pages, walk.total, walk.skipped), (3, Some(120), 0));
        let keys: std::collections::HashSet<_> =
            walk.rows.iter().map(|r| r.history_key.clone()).collect();
        assert_eq!(keys.len(), 120, "no row twice, none lost");
        let reqs = srv.requests();
        assert_eq!(reqs.len(), 3);
        let starts: Vec<_> = reqs
            .iter()
            .map(|r| r.num_header("X-Plex-Container-Start").unwrap())
            .collect();
        // Each page from 8 rows before the end of the last one (the overlap, asked for on top
        // of the page size); no more requests than without it.
        assert_eq!(starts, vec![0, 42, 84]);
        let sizes: Vec<_> = reqs
            .iter()
            .map(|r| r.num_header("X-Plex-Container-Size").unwrap())
            .collect();
        assert_eq!(sizes, vec![100, 108, 108]);
        assert_eq!(reqs[0].path, HISTORY_ENDPOINT);
        // The operator stays in the key; `>` is escaped by the URL parser, `=` is not.
        let q = &reqs[0].query;
        assert!(
            q.contains("viewedAt%3E=1700000000") || q.contains("viewedAt>=1700000000"),
            "{q}"
        );
        assert!(q.contains("accountID=1"), "{q}");
        assert!(q.starts_with("sort=viewedAt%3Aasc&"), "{q}");
        assert!(!q.contains("tok-SECRET"), "token travels as a header: {q}");
        assert_eq!(reqs[0].header("X-Plex-Token"), Some("tok-SECRET-123"));
    }

    #[tokio::test]
    async fn stops_on_an_empty_page_without_total() {
        // A paged answer (`offset`) without totalSize: its `size` is the page's, so the total
        // is unknown and only an empty page ends the walk.
        let srv = TestServer::start(|r| {
            let start = r.num_header("X-Plex-Container-Start").unwrap_or(0);
            let size = r.num_header("X-Plex-Container-Size").unwrap_or(1000);
            (200, history_xml(25, start, size, 10, false))
        })
        .await;
        let walk = client(&srv.url)
            .history_all(&HistoryQuery::default(), 10)
            .await
            .unwrap();
        assert_eq!((walk.rows.len(), walk.pages, walk.total), (25, 4, None));
        let starts: Vec<_> = srv
            .requests()
            .iter()
            .map(|r| r.num_header("X-Plex-Container-Start").unwrap())
            .collect();
        // Overlapping by 2, then 3; the last page holds only rows read before: the end.
        assert_eq!(starts, vec![0, 8, 16, 23]);

        // No `offset`, no totalSize: `size` is the total (an unpaged answer), one request.
        let srv = TestServer::start(|r| {
            let size = r.num_header("X-Plex-Container-Size").unwrap_or(1000);
            let x = history_xml(25, 0, size, 1000, false);
            (200, x.replacen(r#" offset="0""#, "", 1))
        })
        .await;
        let walk = client(&srv.url)
            .history_all(&HistoryQuery::default(), 100)
            .await
            .unwrap();
        assert_eq!((walk.rows.len(), walk.pages, walk.total), (25, 1, Some(25)));
    }

    #[tokio::test]
    async fn a_server_ignoring_start_is_an_error() {
        let srv = TestServer::start(|r| {
            let size = r.num_header("X-Plex-Container-Size").unwrap_or(1000);
            (200, history_xml(500, 0, size, 50, true))
        })
        .await;
        let c = client(&srv.url);
        let err = c
            .history_all(&HistoryQuery::default(), 50)
            .await
            .unwrap_err();
        match &err {
            PlexError::Malformed { endpoint, message } => {
                assert_eq!(endpoint, HISTORY_ENDPOINT);
                assert!(
                    message.contains("ignored X-Plex-Container-Start"),
                    "{message}"
                );
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(srv.requests().len(), 2);

        // Page by page: the first page is handed out, the second is the error, then None.
        let mut pages = c.history_pages(&HistoryQuery::default(), 50).max_pages(5);
        assert_eq!(pages.next_page().await.unwrap().unwrap().rows.len(), 50);
        assert!(pages.next_page().await.is_err());
        assert!(pages.next_page().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn page_count_is_bounded() {
        let srv = TestServer::start(|r| {
            let start = r.num_header("X-Plex-Container-Start").unwrap_or(0);
            (200, history_xml(1000, start, 1, 1, true))
        })
        .await;
        let c = client(&srv.url);
        let mut pages = c.history_pages(&HistoryQuery::default(), 1).max_pages(3);
        for _ in 0..2 {
            assert!(pages.next_page().await.unwrap().is_some());
        }
        let err = pages.next_page().await.unwrap_err();
        assert!(err.to_string().contains("more than 3 pages"), "{err}");
        assert_eq!(srv.requests().len(), 3);
    }

    #[tokio::test]
    async fn a_page_of_only_skipped_rows_does_not_end_the_walk() {
        // Three rows, two without a usable viewedAt, served two at a time from `start`.
        let srv = TestServer::start(|r| {
            let start = r.num_header("X-Plex-Container-Start").unwrap_or(0) as usize;
            let all = [
                r#"<Video historyKey="/h/a"/>"#,
                r#"<Video historyKey="/h/b" viewedAt="x"/>"#,
                r#"<Video historyKey="/h/c" viewedAt="1700000000"/>"#,
            ];
            let page: Vec<&str> = all.iter().skip(start).take(2).copied().collect();
            let body = format!(
                r#"<MediaContainer size="{}" totalSize="3" offset="{start}">{}</MediaContainer>"#,
                page.len(),
                page.concat()
            );
            (200, body)
        })
        .await;
        let walk = client(&srv.url)
            .history_all(&HistoryQuery::default(), 2)
            .await
            .unwrap();
        // The skipped row /h/b is the overlap of page two: known by its history key, not
        // counted twice.
        assert_eq!((walk.rows.len(), walk.skipped, walk.pages), (1, 2, 2));
        let starts: Vec<_> = srv
            .requests()
            .iter()
            .map(|r| r.num_header("X-Plex-Container-Start").unwrap())
            .collect();
        assert_eq!(starts, vec![0, 1], "advanced past the skipped rows too");
    }

    #[tokio::test]
    async fn malformed_pages_name_the_endpoint() {
        for body in [
            r#"<MediaContainer size="3"><Video title="Trunc"#,
            "<html><head><title>Oops</title></head><body></body></html>",
            "",
        ] {
            let b = body.to_string();
            let srv = TestServer::start(move |_| (200, b.clone())).await;
            let err = client(&srv.url)
                .history_page(&HistoryQuery::default(), 0, 10)
                .await
                .unwrap_err();
            match &err {
                PlexError::Malformed { endpoint, .. } => assert_eq!(endpoint, HISTORY_ENDPOINT),
                e => panic!("{body:?}: {e:?}"),
            }
            assert!(!err.is_transient());
            assert!(!format!("{err} {err:?}").contains("tok-SECRET"));
        }
    }
}
