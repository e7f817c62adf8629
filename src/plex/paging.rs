//! Paging over Plex list endpoints (`X-Plex-Container-Start` / `X-Plex-Container-Size`): the
//! pure bookkeeping shared by every walker in this module tree (the one request-and-record
//! path is [`super::walk`]), kept free of I/O so its arithmetic is tested on its own.
//!
//! Rules (PLEX_PROTOCOL §3.3):
//! - the next page starts after the items the server actually served (a server may cap the
//!   page size below what was asked, so the requested size is never used to advance), less an
//!   overlap of up to [`OVERLAP`] items of the page just read (a quarter of it on small
//!   pages), asked for again on top of the page size;
//! - the overlap is recognised by row identity (history key, rating key): items the previous
//!   page served are handed back as already seen ([`Step::seen`]), so they are not counted
//!   twice; when rows read before vanish from the list between two requests (a person deletes
//!   history while a walk runs), the overlap shows how far the list shifted and nothing is
//!   skipped;
//! - an overlap that shows none of the rows it should (more than [`OVERLAP`] rows vanished) is
//!   a [`Gap`]: the walk starts over from the first item, once; a second gap is read past,
//!   and the walk says rows may have been skipped ([`Pager::may_have_skipped`]);
//! - the total is `totalSize`, else `size` (an unpaged answer carries only `size`);
//! - stop on an empty page, once the page reaches the total, or on a page with nothing new
//!   while the total is unknown;
//! - a page that begins with the same row as the previous one means the server ignored
//!   `X-Plex-Container-Start`: that is an error, not a reason to loop;
//! - the number of pages is bounded ([`DEFAULT_MAX_PAGES`] unless the caller says otherwise).

use std::collections::HashSet;

/// The page bound when the caller sets none: 10 000 pages (a million rows at 100 a page).
pub const DEFAULT_MAX_PAGES: u64 = 10_000;

/// The most items of a page asked for again at the start of the next one. Fewer on small
/// pages: a quarter of what the page served, at least one, and always fewer than it served
/// (so at least one item of every page is new).
pub const OVERLAP: u64 = 8;

/// Where a walk over a paged endpoint stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Pager {
    start: u64,
    size: u64,
    /// Items of the last page the next request asks for again (0 on the first page).
    overlap: u64,
    pages: u64,
    max_pages: u64,
    total: Option<u64>,
    last_first: Option<String>,
    /// The identities the last page served: what the next page may repeat.
    known: HashSet<String>,
    /// Whether any of the items the next request asks for again has an identity (without
    /// one, an overlap that shows nothing known proves nothing).
    overlap_known: bool,
    rewound: bool,
    unsure: bool,
    done: bool,
}

/// What one served page means for the walk ([`Pager::record`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Fetch another page.
    pub more: bool,
    /// One flag per served item: true when the walk already read it (the overlap, or the
    /// whole page when the walk starts over), so the caller drops it.
    pub seen: Vec<bool>,
    /// The page showed none of the rows its overlap asked for again.
    pub gap: Option<Gap>,
}

/// More rows vanished between two requests than the overlap covers: rows after the last page
/// may have moved below the next start. For the walker's warning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gap {
    /// `X-Plex-Container-Start` of the page that showed it.
    pub start: u64,
    /// The items that page asked for again.
    pub overlap: u64,
    /// The walk starts over from the first item (the first gap of a walk); false: it reads
    /// on, and rows may have been skipped.
    pub rewound: bool,
}

impl Pager {
    /// A walk from the first item, asking for `page_size` items a page (0 is taken as 1:
    /// PMS answers `X-Plex-Container-Size: 0` with the total only).
    pub fn new(page_size: u64) -> Pager {
        Pager {
            start: 0,
            size: page_size.max(1),
            overlap: 0,
            pages: 0,
            max_pages: DEFAULT_MAX_PAGES,
            total: None,
            last_first: None,
            known: HashSet::new(),
            overlap_known: false,
            rewound: false,
            unsure: false,
            done: false,
        }
    }

    /// At most `n` pages (at least 1); a walk that needs more fails instead.
    pub fn with_max_pages(mut self, n: u64) -> Pager {
        self.max_pages = n.max(1);
        self
    }

    /// `X-Plex-Container-Start` for the next request (once done: where the list ended).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// `X-Plex-Container-Size` for the next request: the page size plus the overlap, so a
    /// server that serves what is asked brings `page_size` new items a page.
    pub fn size(&self) -> u64 {
        self.size.saturating_add(self.overlap)
    }

    /// Items of the last page the next request asks for again.
    pub fn overlap(&self) -> u64 {
        self.overlap
    }

    /// Pages recorded so far (every request, the ones a gap made void included).
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

    /// Rows may have been skipped: a second [`Gap`] in this walk, which it read past. A
    /// caller that moves a cursor must not move it past what it had read before that page.
    pub fn may_have_skipped(&self) -> bool {
        self.unsure
    }

    /// Record a served page: the identity of every served item in order (history key, rating
    /// key; None for an item without one — its element is still counted), and the page's
    /// total. `Ok` says which items are new and whether to fetch another page; `Err` = the
    /// server misbehaves (ignores paging) or the walk exceeds its page bound. After a step
    /// with `more == false` or an error the pager stays done.
    pub fn record(&mut self, ids: &[Option<&str>], total: Option<u64>) -> Result<Step, String> {
        let served = ids.len() as u64;
        if self.done {
            return Ok(Step {
                more: false,
                seen: vec![true; ids.len()],
                gap: None,
            });
        }
        self.pages += 1;
        let (asked_start, asked_overlap) = (self.start, self.overlap);
        if served > 0 {
            if let Some(t) = total {
                self.total = Some(t);
            }
        }
        let first = ids.first().copied().flatten();
        if let Some(f) = first {
            if self.pages > 1 && self.last_first.as_deref() == Some(f) {
                self.done = true;
                return Err(format!(
                    "the server ignored X-Plex-Container-Start: the page at {asked_start} \
                     begins with the same row ({f}) as the previous page"
                ));
            }
        }
        let known = std::mem::take(&mut self.known);
        let seen: Vec<bool> = ids
            .iter()
            .map(|id| id.is_some_and(|i| known.contains(i)))
            .collect();
        let fresh = seen.iter().filter(|s| !**s).count() as u64;
        // An empty page gaps too: the overlap rows should have come back, so a list that ends
        // before them has lost rows, and rows after them may have moved below this start.
        let gap = asked_overlap > 0 && self.overlap_known && fresh == served;
        let mut step = Step {
            more: true,
            seen,
            gap: None,
        };
        if gap && !self.rewound {
            // Rows only ever move toward the start when others vanish, so the first item is
            // the one place no row can have moved past. Starting over costs the pages read so
            // far once (re-read rows are no-ops for their readers); it is done once a walk,
            // because a list that keeps losing rows (a person clearing history) would
            // otherwise restart it for ever. This page is dropped whole: handing out its rows
            // could move a cursor past the ones that slipped below its start.
            self.rewound = true;
            step.gap = Some(Gap {
                start: asked_start,
                overlap: asked_overlap,
                rewound: true,
            });
            step.seen = vec![true; ids.len()];
            self.start = 0;
            self.overlap = 0;
            self.overlap_known = false;
            self.last_first = None;
            return self.bounded(step, asked_start);
        }
        if gap {
            self.unsure = true;
            step.gap = Some(Gap {
                start: asked_start,
                overlap: asked_overlap,
                rewound: false,
            });
        }
        let end = asked_start.saturating_add(served);
        self.start = end;
        self.overlap = 0;
        if served == 0
            || self.total.is_some_and(|t| end >= t)
            || (fresh == 0 && self.total.is_none())
        {
            // The list ended: empty, the total reached, or (no total) only rows read before.
            self.done = true;
            step.more = false;
            return Ok(step);
        }
        // A quarter of the page at most: a server that caps its pages at the page size serves
        // no more than that however much is asked, and every overlap item is one new row less
        // (more vanished rows than this are the gap path's, which is slower but as safe). At
        // least one, and always below `served`, so every request starts at least one item
        // later than the last one did and the walk always moves on.
        let k = OVERLAP.min((served / 4).max(1)).min(served - 1);
        let tail = &ids[(served - k) as usize..];
        self.overlap = k;
        self.start = end - k;
        self.overlap_known = tail.iter().any(Option::is_some);
        self.known = ids.iter().flatten().map(|s| s.to_string()).collect();
        self.last_first = first.map(str::to_string);
        self.bounded(step, end)
    }

    /// `step`, unless the walk has used its page bound (`read`: items read, for the error).
    fn bounded(&mut self, step: Step, read: u64) -> Result<Step, String> {
        if self.pages >= self.max_pages {
            self.done = true;
            return Err(format!(
                "more than {} pages ({} items read, total {})",
                self.max_pages,
                read,
                self.total
                    .map_or_else(|| "unknown".to_string(), |t| t.to_string())
            ));
        }
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|i| format!("/h/{i}")).collect()
    }

    /// Record a page of `rows` (all with identities).
    fn rec(p: &mut Pager, rows: &[String], total: Option<u64>) -> Result<Step, String> {
        let ids: Vec<Option<&str>> = rows.iter().map(|s| Some(s.as_str())).collect();
        p.record(&ids, total)
    }

    /// What a walk read: the new rows in order, the gaps, the requests as (start, size).
    #[derive(Debug, Default)]
    struct Walked {
        fresh: Vec<String>,
        gaps: Vec<Gap>,
        requests: Vec<(u64, u64)>,
    }

    /// Walk `list` like a server that caps pages at `cap` and (with `total`) reports its
    /// length; `between(pages recorded, list)` runs before each request (rows vanish there).
    fn walk(
        p: &mut Pager,
        mut list: Vec<String>,
        cap: u64,
        total: bool,
        mut between: impl FnMut(u64, &mut Vec<String>),
    ) -> Result<Walked, String> {
        let mut w = Walked::default();
        while !p.is_done() {
            between(p.pages(), &mut list);
            w.requests.push((p.start(), p.size()));
            let page: Vec<String> = list
                .iter()
                .skip(p.start() as usize)
                .take(p.size().min(cap) as usize)
                .cloned()
                .collect();
            let step = rec(p, &page, total.then_some(list.len() as u64))?;
            assert_eq!(step.seen.len(), page.len());
            w.gaps.extend(step.gap);
            w.fresh.extend(
                page.iter()
                    .zip(&step.seen)
                    .filter(|(_, seen)| !**seen)
                    .map(|(r, _)| r.clone()),
            );
            assert_eq!(step.more, !p.is_done());
        }
        Ok(w)
    }

    #[test]
    fn advances_by_what_was_served_and_stops_at_the_total() {
        // Asked for 100, the server caps pages at 50; 120 rows in all.
        let mut p = Pager::new(100);
        assert_eq!((p.start(), p.size()), (0, 100));
        let step = rec(&mut p, &keys(0..50), Some(120)).unwrap();
        assert!(step.more && step.seen.iter().all(|s| !s));
        // The next page starts 8 rows before the end of this one and asks for them on top.
        assert_eq!((p.start(), p.size(), p.overlap()), (42, 108, 8));
        let step = rec(&mut p, &keys(42..92), Some(120)).unwrap();
        assert_eq!(step.seen.iter().filter(|s| **s).count(), 8);
        assert!(step.seen[..8].iter().all(|s| *s) && step.more);
        assert_eq!(p.start(), 84);
        let step = rec(&mut p, &keys(84..120), Some(120)).unwrap();
        assert!(!step.more && step.gap.is_none());
        assert!(p.is_done());
        assert_eq!((p.start(), p.pages(), p.total()), (120, 3, Some(120)));
        // Done stays done, and hands nothing out.
        let step = rec(&mut p, &keys(500..505), Some(500)).unwrap();
        assert!(!step.more && step.seen.iter().all(|s| *s));
        assert_eq!(p.pages(), 3);
    }

    #[test]
    fn exact_multiple_stops_without_an_extra_request() {
        // The overlap is asked for on top of the page size: a server that serves what is
        // asked needs no more requests than without it.
        let mut p = Pager::new(50);
        let w = walk(&mut p, keys(0..100), 1000, true, |_, _| {}).unwrap();
        assert_eq!(w.requests, vec![(0, 50), (42, 58)]);
        assert_eq!(w.fresh, keys(0..100));
        let mut p = Pager::new(50);
        let w = walk(&mut p, keys(0..120), 1000, true, |_, _| {}).unwrap();
        assert_eq!(w.requests, vec![(0, 50), (42, 58), (92, 58)]);
        assert_eq!(w.fresh, keys(0..120));
    }

    #[test]
    fn without_a_total_a_page_of_only_rows_read_before_ends_the_walk() {
        let mut p = Pager::new(10);
        let w = walk(&mut p, keys(0..20), 1000, false, |_, _| {}).unwrap();
        // A quarter of a page of 10 again (2, then 3 of 12); the last request gets back only
        // the overlap: the list ends there.
        assert_eq!(w.requests, vec![(0, 10), (8, 12), (17, 13)]);
        assert_eq!(w.fresh, keys(0..20));
        assert!(w.gaps.is_empty() && !p.may_have_skipped());
        assert_eq!((p.start(), p.pages(), p.total()), (20, 3, None));
    }

    #[test]
    fn empty_first_page_stops() {
        let mut p = Pager::new(10);
        let step = rec(&mut p, &[], None).unwrap();
        assert!(!step.more && step.gap.is_none() && p.is_done());
    }

    #[test]
    fn unpaged_answer_with_only_size_is_one_page() {
        // A server that ignores paging and sends everything: size == all rows.
        let mut p = Pager::new(50);
        let step = rec(&mut p, &keys(0..3693), Some(3693)).unwrap();
        assert!(!step.more && p.is_done());
    }

    #[test]
    fn a_server_that_ignores_start_is_an_error_not_a_loop() {
        let mut p = Pager::new(50);
        assert!(rec(&mut p, &keys(0..50), Some(1000)).unwrap().more);
        // Asked from 42, served from 0 again: the same first row.
        let err = rec(&mut p, &keys(0..50), Some(1000)).unwrap_err();
        assert!(err.contains("ignored X-Plex-Container-Start"), "{err}");
        assert!(err.contains("page at 42"), "{err}");
        assert!(p.is_done());
        // The same without a total.
        let mut p = Pager::new(5);
        assert!(rec(&mut p, &keys(0..5), None).unwrap().more);
        assert!(rec(&mut p, &keys(0..5), None).is_err());
    }

    #[test]
    fn rows_without_identity_do_not_trip_the_guard() {
        let mut p = Pager::new(1);
        assert!(p.record(&[None], Some(3)).unwrap().more);
        assert!(p.record(&[None], Some(3)).unwrap().more);
        assert!(!p.record(&[None], Some(3)).unwrap().more);
        // Pages of rows without identity overlap blind: nothing is taken for seen, no gap,
        // and the walk ends on the empty page.
        let mut p = Pager::new(3);
        assert!(p.record(&[None; 3], None).unwrap().more);
        assert_eq!((p.start(), p.size()), (2, 4));
        let step = p.record(&[None; 4], None).unwrap();
        assert!(step.more && step.seen.iter().all(|s| !s) && step.gap.is_none());
        let step = p.record(&[], None).unwrap();
        assert!(!step.more && step.gap.is_none() && !p.may_have_skipped());
    }

    #[test]
    fn page_count_is_bounded() {
        let mut p = Pager::new(1).with_max_pages(3);
        assert!(p.record(&[Some("a")], None).unwrap().more);
        assert!(p.record(&[Some("b")], None).unwrap().more);
        let err = p.record(&[Some("c")], None).unwrap_err();
        assert!(err.contains("more than 3 pages"), "{err}");
        // Finishing exactly on the bound is not an error.
        let mut p = Pager::new(1).with_max_pages(2);
        assert!(p.record(&[Some("a")], Some(2)).unwrap().more);
        assert!(!p.record(&[Some("b")], Some(2)).unwrap().more);
        // A list that keeps losing rows cannot keep a walk going past its bound either.
        let mut p = Pager::new(5).with_max_pages(20);
        let err = walk(&mut p, keys(0..10_000), 1000, false, |_, l| {
            l.drain(..l.len().min(20));
        })
        .unwrap_err();
        assert!(err.contains("more than 20 pages"), "{err}");
    }

    #[test]
    fn zero_page_size_is_one() {
        assert_eq!(Pager::new(0).size(), 1);
        assert_eq!(Pager::new(0).with_max_pages(0).max_pages, 1);
    }

    #[test]
    fn a_later_page_without_total_keeps_the_known_total() {
        let mut p = Pager::new(2);
        assert!(rec(&mut p, &keys(0..2), Some(3)).unwrap().more);
        // Asked from 1 (one row again): served /h/1 and /h/2, the total reached.
        let step = rec(&mut p, &keys(1..3), None).unwrap();
        assert_eq!((step.more, step.seen), (false, vec![true, false]));
        assert_eq!(p.total(), Some(3));
    }

    #[test]
    fn rows_read_and_then_removed_shift_the_list_but_nothing_is_skipped() {
        // 100 rows, pages of 20 (an overlap of 5, then 6); after the first page three of its
        // rows are removed, after the second two more: every later row moved toward the start.
        for total in [true, false] {
            let mut p = Pager::new(20);
            let w = walk(&mut p, keys(0..100), 1000, total, |pages, l| match pages {
                1 => drop(l.drain(0..3)),
                2 => drop(l.drain(3..5)),
                _ => {}
            })
            .unwrap();
            assert_eq!(w.fresh, keys(0..100), "total: {total}");
            assert!(w.gaps.is_empty() && !p.may_have_skipped());
            if total {
                // No extra request for the shift: the total (95 by then) ends the walk after
                // as many requests as 100 rows take without removals.
                assert_eq!(w.requests.len(), 5, "{:?}", w.requests);
            }
        }
        // The old walk (start += served) would have missed rows 20..23 and 40..42.
    }

    #[test]
    fn a_server_capping_pages_below_the_overlap_still_moves_on() {
        // Pages of 3 served: the overlap is 2 and every page brings one new row at least.
        let mut p = Pager::new(50);
        let w = walk(&mut p, keys(0..10), 3, true, |_, _| {}).unwrap();
        assert_eq!(w.fresh, keys(0..10));
        assert!(w.requests.windows(2).all(|r| r[1].0 > r[0].0));
        // A page of only rows read before while the total says more: not the end.
        let mut p = Pager::new(4);
        assert!(rec(&mut p, &keys(0..4), Some(100)).unwrap().more);
        assert_eq!(p.start(), 3);
        let step = rec(&mut p, &keys(3..4), Some(100)).unwrap();
        assert!(step.more && step.seen.iter().all(|s| *s));
        assert_eq!(p.start(), 4, "still moving on");
    }

    #[test]
    fn more_rows_removed_than_the_overlap_starts_the_walk_over_once() {
        for total in [true, false] {
            let mut p = Pager::new(10);
            let w = walk(&mut p, keys(0..40), 1000, total, |pages, l| {
                if pages == 1 {
                    // All ten rows read, and the two after them.
                    l.drain(0..12);
                }
            })
            .unwrap();
            assert_eq!(
                w.gaps,
                vec![Gap {
                    start: 8,
                    overlap: 2,
                    rewound: true
                }],
                "total: {total}"
            );
            // The gap page (from 8: rows 20..) is dropped; the walk starts over at 0.
            assert_eq!(w.requests[2], (0, 10));
            let mut want = keys(0..10);
            want.extend(keys(12..40));
            assert_eq!(w.fresh, want, "total: {total}");
            assert!(!p.may_have_skipped());
        }
    }

    #[test]
    fn an_empty_page_where_the_overlap_should_be_is_a_gap() {
        // No total: page two asks for the last 2 rows again and gets nothing — the list lost
        // them, and rows after them may have moved below 8.
        let mut p = Pager::new(10);
        assert!(rec(&mut p, &keys(0..10), None).unwrap().more);
        let step = rec(&mut p, &[], None).unwrap();
        assert!(step.more);
        assert_eq!(
            step.gap,
            Some(Gap {
                start: 8,
                overlap: 2,
                rewound: true
            })
        );
        assert_eq!((p.start(), p.size()), (0, 10));
        // From the start again: the rows that are left, then the end.
        let step = rec(&mut p, &keys(20..23), None).unwrap();
        assert!(step.more && step.seen.iter().all(|s| !s));
        let step = rec(&mut p, &keys(21..23), None).unwrap();
        assert!(!step.more && step.seen.iter().all(|s| *s));
    }

    #[test]
    fn a_second_gap_reads_on_and_says_rows_may_have_been_skipped() {
        let mut p = Pager::new(10);
        let w = walk(&mut p, keys(0..100), 1000, true, |pages, l| {
            if pages == 1 || pages == 4 {
                l.drain(0..12);
            }
        })
        .unwrap();
        assert_eq!(w.gaps.len(), 2, "{:?}", w.gaps);
        assert!(w.gaps[0].rewound && !w.gaps[1].rewound);
        assert!(p.may_have_skipped());
        // It still ends, at the (shrunk) total.
        assert_eq!(p.start(), 76);
    }
}
