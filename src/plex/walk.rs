//! The one path every paged walk takes ([`Pages`]): the request at the [`Pager`]'s position,
//! the page recorded by the identity of each served item, the items an earlier page already
//! served (the overlap) dropped, then the caller's parser over what is left. History, a
//! section's watched episodes, a section's shows and a show's episodes differ only in the
//! path, the query, the identity attribute and the parser.

use super::history::container_total;
use super::paging::Pager;
use super::xml::Element;
use super::{PlexClient, PlexError};

/// A walk over one paged endpoint, one page of new items at a time.
#[derive(Debug)]
pub struct Pages<'a, T> {
    client: &'a PlexClient,
    path: String,
    query: Vec<(&'static str, String)>,
    /// The attribute that identifies an item (`historyKey`, `ratingKey`).
    id_attr: &'static str,
    pager: Pager,
    parse: fn(&Element) -> Result<T, String>,
}

impl<'a, T> Pages<'a, T> {
    pub(crate) fn new(
        client: &'a PlexClient,
        path: String,
        query: Vec<(&'static str, String)>,
        id_attr: &'static str,
        page_size: u64,
        parse: fn(&Element) -> Result<T, String>,
    ) -> Self {
        Pages {
            client,
            path,
            query,
            id_attr,
            pager: Pager::new(page_size),
            parse,
        }
    }

    /// At most `n` pages; a walk that needs more fails with `Malformed`.
    pub fn max_pages(mut self, n: u64) -> Self {
        self.pager = self.pager.with_max_pages(n);
        self
    }

    /// Where the walk stands (next start, pages read, last total, rows possibly skipped).
    pub fn pager(&self) -> &Pager {
        &self.pager
    }

    /// The next page with items the walk has not read yet (parsed from those items only:
    /// its `size` counts them), or None once the walk is complete. A page may hold only
    /// unusable items. Errors end the walk: a transport or HTTP error as mapped by
    /// `get_container`, `Malformed` for a server that ignores paging, a walk beyond its page
    /// bound, or a page the parser refuses.
    pub async fn next_page(&mut self) -> Result<Option<T>, PlexError> {
        while !self.pager.is_done() {
            let (start, size) = (self.pager.start(), self.pager.size());
            let mut root = self
                .client
                .get_container(&self.path, &self.query, Some((start, size)))
                .await?;
            let ids: Vec<Option<&str>> = root
                .children
                .iter()
                .map(|e| e.attr_nonempty(self.id_attr))
                .collect();
            let step = self
                .pager
                .record(&ids, container_total(&root))
                .map_err(|message| self.malformed(message))?;
            if let Some(gap) = step.gap {
                if gap.rewound {
                    tracing::warn!(
                        endpoint = %self.path,
                        start = gap.start,
                        overlap = gap.overlap,
                        "more rows vanished from a Plex list during the walk than the page overlap covers; reading it again from the start"
                    );
                } else {
                    tracing::warn!(
                        endpoint = %self.path,
                        start = gap.start,
                        overlap = gap.overlap,
                        "rows vanished from a Plex list again during the walk; rows after this point may have been skipped (a poll cursor stays before them)"
                    );
                }
            }
            let mut seen = step.seen.into_iter();
            root.children.retain(|_| !seen.next().unwrap_or(true));
            if !root.children.is_empty() {
                return (self.parse)(&root).map(Some).map_err(|m| self.malformed(m));
            }
            // Nothing new on this page (only the overlap, or a page dropped for a gap): the
            // pager says whether another request follows.
        }
        Ok(None)
    }

    fn malformed(&self, message: String) -> PlexError {
        PlexError::Malformed {
            endpoint: self.path.clone(),
            message,
        }
    }
}
