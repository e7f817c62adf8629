//! Per-client token buckets for inbound HTTP (the webhook route and the admin API each have
//! one limiter). Pure bookkeeping: [`crate::http`] asks, answers 429 with `Retry-After`.
//!
//! A client is an IPv4 address or an IPv6 /64 ([`client_key`]). Memory is bounded: at most
//! [`MAX_CLIENTS`] clients are tracked; idle full buckets are
//! dropped first, and when every slot is busy, new addresses share one overflow bucket (so a
//! flood from many addresses is limited as a whole instead of growing the table).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most client addresses tracked at once.
pub const MAX_CLIENTS: usize = 4096;

/// The key a client is counted under, here and by the connection caps: an IPv4 address (an
/// IPv4-mapped IPv6 one as its IPv4 address), or an IPv6 address's /64. One IPv6 host is
/// routinely given a whole /64 (SLAAC, privacy addresses), so keyed by /128 a single client
/// could take every slot of the table and escape its own limit with each new address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)))),
        v4 => v4,
    }
}

/// A limit: `per_minute` requests a minute on average, up to `burst` at once. `per_minute`
/// 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Already told the log that this client is limited (until it recovers).
    warned: bool,
}

/// What [`Limiter::check`] decided.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Allow,
    /// Refused; retry after this long. `first` is true once per limited episode, so the
    /// caller logs a warning once instead of once per request.
    Limit {
        retry_after: Duration,
        first: bool,
    },
}

/// One limiter; the key `None` is the shared overflow bucket.
#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<Option<IpAddr>, Bucket>>,
}

impl Limiter {
    /// Take one token for `client`.
    pub fn check(&self, client: IpAddr, rate: Rate) -> Verdict {
        self.check_at(client, rate, Instant::now())
    }

    fn check_at(&self, client: IpAddr, rate: Rate, now: Instant) -> Verdict {
        if rate.per_minute == 0 {
            return Verdict::Allow;
        }
        let burst = f64::from(rate.burst.max(1));
        let per_sec = f64::from(rate.per_minute) / 60.0;
        let Ok(mut map) = self.buckets.lock() else {
            // A panic elsewhere while holding the lock: fail open rather than refuse Plex.
            return Verdict::Allow;
        };
        let mut key = Some(client_key(client));
        if !map.contains_key(&key) && map.len() >= MAX_CLIENTS {
            // Forget clients whose bucket has refilled: they lose nothing.
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * per_sec < burst
            });
            if map.len() >= MAX_CLIENTS {
                key = None;
            }
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
            warned: false,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.warned = false;
            return Verdict::Allow;
        }
        let wait = ((1.0 - b.tokens) / per_sec).max(0.001);
        let first = !b.warned;
        b.warned = true;
        Verdict::Limit {
            retry_after: Duration::from_secs_f64(wait),
            first,
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn a_burst_then_the_average_rate() {
        let l = Limiter::default();
        let rate = Rate {
            per_minute: 60,
            burst: 5,
        };
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.check_at(IP, rate, t0), Verdict::Allow);
        }
        match l.check_at(IP, rate, t0) {
            Verdict::Limit { retry_after, first } => {
                assert!(first);
                assert!(
                    (retry_after.as_secs_f64() - 1.0).abs() < 0.01,
                    "{retry_after:?}"
                );
            }
            v => panic!("{v:?}"),
        }
        // Only the first refusal of an episode asks for a warning.
        assert!(matches!(
            l.check_at(IP, rate, t0),
            Verdict::Limit { first: false, .. }
        ));
        // One token a second comes back.
        assert_eq!(
            l.check_at(IP, rate, t0 + Duration::from_millis(1000)),
            Verdict::Allow
        );
        assert!(matches!(
            l.check_at(IP, rate, t0 + Duration::from_millis(1000)),
            Verdict::Limit { first: true, .. }
        ));
        // Other clients have their own bucket.
        let other = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(l.check_at(other, rate, t0), Verdict::Allow);
    }

    #[test]
    fn zero_means_unlimited() {
        let l = Limiter::default();
        let rate = Rate {
            per_minute: 0,
            burst: 0,
        };
        for _ in 0..10_000 {
            assert_eq!(l.check(IP, rate), Verdict::Allow);
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn the_table_is_bounded_and_overflow_shares_a_bucket() {
        let l = Limiter::default();
        let rate = Rate {
            per_minute: 1,
            burst: 1,
        };
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 100) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            let _ = l.check_at(ip, rate, t0);
        }
        assert!(l.tracked() <= MAX_CLIENTS + 1);
        // The overflow bucket is spent: a new address is limited.
        let late = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));
        assert!(matches!(l.check_at(late, rate, t0), Verdict::Limit { .. }));
        // Once buckets refill, idle clients are forgotten and new ones get their own.
        let later = t0 + Duration::from_secs(120);
        assert_eq!(l.check_at(late, rate, later), Verdict::Allow);
        assert!(l.tracked() < 10);
    }

    #[test]
    fn an_ipv6_64_is_one_client() {
        let l = Limiter::default();
        let rate = Rate {
            per_minute: 1,
            burst: 1,
        };
        let t0 = Instant::now();
        let base = u128::from("2001:db8::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            l.check_at(IpAddr::V6(Ipv6Addr::from(base + 1)), rate, t0),
            Verdict::Allow
        );
        for i in 2..(MAX_CLIENTS as u128 + 2) {
            let ip = IpAddr::V6(Ipv6Addr::from(base + (i << 20) + i));
            assert!(
                matches!(l.check_at(ip, rate, t0), Verdict::Limit { .. }),
                "{ip}"
            );
        }
        assert_eq!(l.tracked(), 1);
        // Another /64 and an IPv4 client are others; a mapped IPv4 address is its IPv4 one.
        let next = IpAddr::V6(Ipv6Addr::from(base + (1u128 << 64)));
        assert_eq!(l.check_at(next, rate, t0), Verdict::Allow);
        assert_eq!(l.check_at(IP, rate, t0), Verdict::Allow);
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert!(matches!(
            l.check_at(mapped, rate, t0),
            Verdict::Limit { .. }
        ));
        assert_eq!(l.tracked(), 3);
    }
}
