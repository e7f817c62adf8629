//! Paging over Plex list endpoints (`X-Plex-Container-Start` / `X-Plex-Container-Size`): the
//! pure bookkeeping shared by every walker in this module tree, kept free of I/O so its
//! arithmetic is tested on its own.
//!
//! Rules (PLEX_PROTOCOL §3.3):
//! - the next page starts after the items the server actually served (a server may cap the
//!   page size below what was asked, so the requested size is never used to advance);
//! - the total is `totalSize`, else `size` (an unpaged answer carries only `size`);
//! - stop on an empty page, or once `start >= total`;
//! - a page that begins with the same row as the previous one means the server ignored
//!   `X-Plex-Container-Start`: that is an error, not a reason to loop;
//! - the number of pages is bounded ([`DEFAULT_MAX_PAGES`] unless the caller says otherwise).

/// The page bound when the caller sets none: 10 000 pages (a million rows at 100 a page).
pub const DEFAULT_MAX_PAGES: u64 = 10_000;

/// Where a walk over a paged endpoint stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Pager {
    start: u64,
    size: u64,
    pages: u64,
    max_pages: u64,
    total: Option<u64>,
    last_first: Option<String>,
    done: bool,
}

impl Pager {
    /// A walk from the first item, asking for `page_size` items a page (0 is taken as 1:
    /// PMS answers `X-Plex-Container-Size: 0` with the total only).
    pub fn new(page_size: u64) -> Pager {
        Pager {
            start: 0,
            size: page_size.max(1),
            pages: 0,
            max_pages: DEFAULT_MAX_PAGES,
            total: None,
            last_first: None,
            done: false,
        }
    }

    /// At most `n` pages (at least 1); a walk that needs more fails instead.
    pub fn with_max_pages(mut self, n: u64) -> Pager {
        self.max_pages = n.max(1);
        self
    }

    /// `X-Plex-Container-Start` for the next request.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// `X-Plex-Container-Size` for the next request.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Pages recorded so far.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The last total the server reported.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Record a served page: `served` item elements (parsed or skipped), the identity of its
    /// first row when it has one (history key, rating key), and the page's total.
    /// `Ok(true)` = fetch another page; `Ok(false)` = the walk is complete; `Err` = the server
    /// misbehaves (ignores paging) or the walk exceeds its page bound. After `Ok(false)` or an
    /// error the pager stays done.
    pub fn record(
        &mut self,
        served: u64,
        first: Option<&str>,
        total: Option<u64>,
    ) -> Result<bool, String> {
        if self.done {
            return Ok(false);
        }
        self.pages += 1;
        if served == 0 {
            self.done = true;
            return Ok(false);
        }
        if let Some(f) = first {
            if self.pages > 1 && self.last_first.as_deref() == Some(f) {
                self.done = true;
                return Err(format!(
                    "the server ignored X-Plex-Container-Start: the page at {} begins with the \
                     same row ({f}) as the previous page",
                    self.start
                ));
            }
        }
        self.last_first = first.map(str::to_string);
        self.start = self.start.saturating_add(served);
        if total.is_some() {
            self.total = total;
        }
        if self.total.is_some_and(|t| self.start >= t) {
            self.done = true;
            return Ok(false);
        }
        if self.pages >= self.max_pages {
            self.done = true;
            return Err(format!(
                "more than {} pages ({} items read, total {})",
                self.max_pages,
                self.start,
                self.total
                    .map_or_else(|| "unknown".to_string(), |t| t.to_string())
            ));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_by_what_was_served_and_stops_at_the_total() {
        // Asked for 100, the server caps pages at 50; 120 rows in all.
        let mut p = Pager::new(100);
        assert_eq!((p.start(), p.size()), (0, 100));
        assert_eq!(p.record(50, Some("/h/0"), Some(120)), Ok(true));
        assert_eq!(p.start(), 50);
        assert_eq!(p.record(50, Some("/h/50"), Some(120)), Ok(true));
        assert_eq!(p.start(), 100);
        assert_eq!(p.record(20, Some("/h/100"), Some(120)), Ok(false));
        assert!(p.is_done());
        assert_eq!((p.start(), p.pages(), p.total()), (120, 3, Some(120)));
        // Done stays done.
        assert_eq!(p.record(5, Some("/h/x"), Some(500)), Ok(false));
        assert_eq!(p.pages(), 3);
    }

    #[test]
    fn exact_multiple_stops_without_an_extra_request() {
        let mut p = Pager::new(50);
        assert_eq!(p.record(50, Some("a"), Some(100)), Ok(true));
        assert_eq!(p.record(50, Some("b"), Some(100)), Ok(false));
        assert_eq!(p.pages(), 2);
    }

    #[test]
    fn empty_page_stops_even_without_a_total() {
        let mut p = Pager::new(10);
        assert_eq!(p.record(10, Some("a"), None), Ok(true));
        assert_eq!(p.record(10, Some("b"), None), Ok(true));
        assert_eq!(p.record(0, None, None), Ok(false));
        assert_eq!((p.start(), p.pages(), p.total()), (20, 3, None));
    }

    #[test]
    fn unpaged_answer_with_only_size_is_one_page() {
        // A server that ignores paging and sends everything: size == all rows.
        let mut p = Pager::new(50);
        assert_eq!(p.record(3693, Some("/h/1"), Some(3693)), Ok(false));
    }

    #[test]
    fn a_server_that_ignores_start_is_an_error_not_a_loop() {
        let mut p = Pager::new(50);
        assert_eq!(p.record(50, Some("/h/1"), Some(1000)), Ok(true));
        let err = p.record(50, Some("/h/1"), Some(1000)).unwrap_err();
        assert!(err.contains("ignored X-Plex-Container-Start"), "{err}");
        assert!(p.is_done());
    }

    #[test]
    fn rows_without_identity_do_not_trip_the_guard() {
        let mut p = Pager::new(1);
        assert_eq!(p.record(1, None, Some(3)), Ok(true));
        assert_eq!(p.record(1, None, Some(3)), Ok(true));
        assert_eq!(p.record(1, None, Some(3)), Ok(false));
    }

    #[test]
    fn page_count_is_bounded() {
        let mut p = Pager::new(1).with_max_pages(3);
        assert_eq!(p.record(1, Some("a"), None), Ok(true));
        assert_eq!(p.record(1, Some("b"), None), Ok(true));
        let err = p.record(1, Some("c"), None).unwrap_err();
        assert!(err.contains("more than 3 pages"), "{err}");
        // Finishing exactly on the bound is not an error.
        let mut p = Pager::new(1).with_max_pages(2);
        assert_eq!(p.record(1, Some("a"), Some(2)), Ok(true));
        assert_eq!(p.record(1, Some("b"), Some(2)), Ok(false));
    }

    #[test]
    fn zero_page_size_is_one() {
        assert_eq!(Pager::new(0).size(), 1);
        assert_eq!(Pager::new(0).with_max_pages(0).max_pages, 1);
    }

    #[test]
    fn a_later_page_without_total_keeps_the_known_total() {
        let mut p = Pager::new(2);
        assert_eq!(p.record(2, Some("a"), Some(3)), Ok(true));
        assert_eq!(p.record(1, Some("c"), None), Ok(false));
    }
}
