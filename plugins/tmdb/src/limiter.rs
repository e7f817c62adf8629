//! The outbound rate limiter: at most `n` requests to TMDB in any sliding window of length
//! `window`, shared by every lookup of one matcher, plus a pause that a 429's `Retry-After`
//! imposes on all of them.
//!
//! It is a sliding-window log: it remembers the grant times of the last `n` requests, and the
//! next one may start `window` after the oldest of them. A token bucket or GCRA with a burst
//! of `n` would allow almost `2n` requests inside one window (a full burst, then the refill),
//! which is exactly what TMDB's "40 requests per 10 seconds" forbids.
//!
//! A caller reserves its slot under a short lock and sleeps outside it, so concurrent lookups
//! queue in order without holding the lock across an await.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct RateLimiter {
    max: usize,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Grant times of the most recent requests (at most `max`), oldest first; some may lie in
    /// the future (reserved by callers still sleeping).
    grants: VecDeque<Instant>,
    /// No request before this (set by a 429).
    not_before: Option<Instant>,
}

impl RateLimiter {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        RateLimiter {
            max: (max as usize).max(1),
            window,
            state: Mutex::new(State::default()),
        }
    }

    /// Reserve the next slot for a request wanting to start at `now`; returns when it may.
    /// (Requests go through [`Self::acquire`]; the tests drive the timing here directly.)
    #[cfg(test)]
    pub(crate) fn reserve(&self, now: Instant) -> Instant {
        // A poisoned lock means a panic elsewhere mid-update of plain timestamps; the worst
        // left behind is one slot too early or late, so carry on with the data.
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.reserve_in(&mut s, now)
    }

    fn reserve_in(&self, s: &mut State, now: Instant) -> Instant {
        let mut at = now;
        if let Some(&last) = s.grants.back() {
            // Grants stay in order, so the log stays sorted.
            at = at.max(last);
        }
        if let Some(nb) = s.not_before {
            at = at.max(nb);
        }
        if s.grants.len() >= self.max {
            if let Some(oldest) = s.grants.pop_front() {
                at = at.max(oldest + self.window);
            }
        }
        s.grants.push_back(at);
        at
    }

    /// Hold every request not yet started until `until` (a 429's `Retry-After`).
    pub(crate) fn pause_until(&self, until: Instant) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.not_before = Some(s.not_before.map_or(until, |nb| nb.max(until)));
    }

    /// Wait for a slot, unless a pause holds requests for longer than `max_pause`: then
    /// `Err` with what is left of it, and no slot is taken. A 429's Retry-After beyond what a
    /// lookup may wait out must not park every later lookup (and the resolver awaiting it)
    /// for up to an hour; failing at once lets the host retry the show when TMDB allows.
    pub(crate) async fn acquire(&self, max_pause: Duration) -> Result<(), Duration> {
        let at = self.try_reserve(Instant::now(), max_pause)?;
        tokio::time::sleep_until(at).await;
        Ok(())
    }

    /// [`Self::reserve`], or `Err(remaining)` without reserving while a pause lasts longer
    /// than `max_pause` from `now`. Checked under the same lock as the reservation, so a
    /// pause set meanwhile cannot slip between the check and the slot.
    pub(crate) fn try_reserve(
        &self,
        now: Instant,
        max_pause: Duration,
    ) -> Result<Instant, Duration> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(nb) = s.not_before {
            let remaining = nb.saturating_duration_since(now);
            if remaining > max_pause {
                return Err(remaining);
            }
        }
        Ok(self.reserve_in(&mut s, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_of_n_then_one_per_expired_slot() {
        let l = RateLimiter::new(3, ms(1000));
        let t0 = Instant::now();
        let got: Vec<Duration> = (0..8).map(|_| l.reserve(t0) - t0).collect();
        assert_eq!(
            got,
            vec![
                ms(0),
                ms(0),
                ms(0),
                ms(1000),
                ms(1000),
                ms(1000),
                ms(2000),
                ms(2000)
            ]
        );
    }

    #[test]
    fn never_more_than_n_in_any_window() {
        let l = RateLimiter::new(4, ms(1000));
        let t0 = Instant::now();
        // Requests arrive irregularly, some long after the others.
        let arrivals = [
            0, 10, 20, 300, 310, 900, 1000, 1005, 1500, 3000, 3001, 3002, 3003, 3004,
        ];
        let grants: Vec<Instant> = arrivals.iter().map(|&a| l.reserve(t0 + ms(a))).collect();
        for (i, g) in grants.iter().enumerate() {
            assert!(
                *g >= t0 + ms(arrivals[i]),
                "granted before it was asked for"
            );
            let in_window = grants
                .iter()
                .filter(|h| **h >= *g && **h < *g + ms(1000))
                .count();
            assert!(in_window <= 4, "{in_window} grants in the window from #{i}");
        }
        // Order is kept: a later caller never goes before an earlier one.
        assert!(grants.windows(2).all(|w| w[0] <= w[1]));
        // After a quiet spell the full burst is available again at once.
        assert_eq!(grants[9], t0 + ms(3000));
    }

    #[test]
    fn a_pause_holds_every_later_request() {
        let l = RateLimiter::new(10, ms(1000));
        let t0 = Instant::now();
        assert_eq!(l.reserve(t0), t0);
        l.pause_until(t0 + ms(5000));
        l.pause_until(t0 + ms(2000)); // a shorter pause never shortens a longer one
        assert_eq!(l.reserve(t0 + ms(1)), t0 + ms(5000));
        assert_eq!(l.reserve(t0 + ms(6000)), t0 + ms(6000));
    }

    #[tokio::test]
    async fn acquire_returns_at_once_within_the_burst() {
        let l = RateLimiter::new(2, Duration::from_secs(3600));
        // Two slots are free: neither call may wait (an hour-long wait would hang the test).
        tokio::time::timeout(Duration::from_secs(5), async {
            l.acquire(ms(0)).await.unwrap();
            l.acquire(ms(0)).await.unwrap();
        })
        .await
        .unwrap();
    }

    #[test]
    fn a_pause_longer_than_allowed_is_refused_without_taking_a_slot() {
        let l = RateLimiter::new(1, ms(1000));
        let t0 = Instant::now();
        l.pause_until(t0 + ms(60_000));
        assert_eq!(l.try_reserve(t0, ms(5000)), Err(ms(60_000)));
        assert_eq!(l.try_reserve(t0 + ms(50_000), ms(5000)), Err(ms(10_000)));
        // Within the allowed wait: reserved at the pause's end, and the refusals above took
        // no slot (the one slot of the window is still free).
        assert_eq!(
            l.try_reserve(t0 + ms(56_000), ms(5000)),
            Ok(t0 + ms(60_000))
        );
    }
}
