//! The registry of open TCP connections and the policy that keeps their number bounded, plus
//! the process's file-descriptor limit (raised at start-up, and what it leaves room for).
//!
//! Every accepted TCP connection takes a [`Slot`] before it is served. A new connection past
//! `max_connections_per_client` (keyed by the TCP peer address, never a forwarded header)
//! closes that client's oldest *idle* connection; past `max_connections` the globally oldest
//! idle one. Idle means no request in progress: waiting for a keep-alive request, or still
//! sending its headers (a slowloris). When nothing is idle the new connection is refused. So a
//! flood of idle connections costs an attacker their own older connections, never `/healthz`
//! or a Plex webhook, and the daemon's descriptors and header buffers stay bounded.
//!
//! "Oldest" is accept order. Closing is signalled through the slot: the registry drops the
//! entry's sender, the connection task sees [`Slot::closed`] resolve and drops the hyper
//! connection (which closes the socket). Until that task has run, the evicted connection still
//! holds its descriptor; [`Conns::closing`] counts those so the accept loop can wait for them
//! instead of running ahead of the closes under a flood.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

use crate::ratelimit::client_key;

/// Descriptors kept free for everything that is not an inbound TCP connection: the store,
/// listeners, the admin socket's clients, outbound HTTP (Plex, tracker, TMDB), exec matcher
/// pipes, journald. The connection cap never eats into them.
pub const RESERVED_FDS: u64 = 128;

/// The smallest connection budget whatever the descriptor limit says (config's minimum too).
const MIN_BUDGET: usize = 16;

/// How many connections may be open at once, and from one peer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub total: usize,
    pub per_client: usize,
}

impl Caps {
    /// The configured caps, lowered to what the descriptor limit `soft_nofile` allows.
    pub fn new(max_connections: usize, per_client: usize, soft_nofile: Option<u64>) -> Caps {
        let total = match soft_nofile {
            Some(n) => max_connections.min(fd_budget(n)),
            None => max_connections,
        };
        Caps {
            total,
            per_client: per_client.min(total),
        }
    }
}

/// Connections the descriptor limit leaves room for after [`RESERVED_FDS`].
pub fn fd_budget(soft_nofile: u64) -> usize {
    let b = soft_nofile.saturating_sub(RESERVED_FDS);
    usize::try_from(b).unwrap_or(usize::MAX).max(MIN_BUDGET)
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The client has `per_client` connections and every one has a request in progress.
    ClientFull,
    /// `total` connections are open and every one has a request in progress.
    Full,
}

/// A connection's in-progress requests; the registry only evicts it while this is zero.
#[derive(Debug, Default)]
pub struct ConnState {
    in_progress: AtomicUsize,
}

impl ConnState {
    /// Mark a request in progress until the guard is dropped (the response future completed
    /// or was dropped).
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_progress.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    fn idle(&self) -> bool {
        self.in_progress.load(Ordering::SeqCst) == 0
    }
}

/// A request in progress (see [`ConnState::busy`]).
#[derive(Debug)]
pub struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Entry {
    client: IpAddr,
    state: Arc<ConnState>,
    /// Dropped on eviction: the connection task's receiver then resolves.
    _close: oneshot::Sender<()>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// By id, i.e. by accept order: the first idle entry is the oldest idle connection.
    open: BTreeMap<u64, Entry>,
    per_client: HashMap<IpAddr, usize>,
    /// Evicted, but their task has not closed the socket yet.
    closing: usize,
}

impl Inner {
    /// Evict: the connection leaves the registry and counts as closing until its slot drops.
    fn evict(&mut self, id: u64) {
        if self.remove(id) {
            self.closing += 1;
        }
    }

    fn remove(&mut self, id: u64) -> bool {
        let Some(e) = self.open.remove(&id) else {
            return false;
        };
        if let Some(n) = self.per_client.get_mut(&e.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&e.client);
            }
        }
        true
    }

    fn oldest_idle(&self, client: Option<IpAddr>) -> Option<u64> {
        self.open
            .iter()
            .find(|(_, e)| client.is_none_or(|c| c == e.client) && e.state.idle())
            .map(|(id, _)| *id)
    }

    fn from(&self, client: IpAddr) -> usize {
        self.per_client.get(&client).copied().unwrap_or(0)
    }
}

/// The registry (one per TCP listener).
#[derive(Default)]
pub struct Conns {
    inner: Mutex<Inner>,
    /// One permit per evicted connection that finished closing.
    closed_one: Notify,
}

/// What an admission did besides admitting: how many idle connections it closed.
#[derive(Debug)]
pub struct Admitted {
    pub slot: Slot,
    pub evicted: usize,
}

impl Conns {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves the maps consistent (every update
        // is a single insert/remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admit a connection from `client`, closing idle connections to stay within `caps`.
    pub fn admit(self: &Arc<Self>, client: IpAddr, caps: Caps) -> Result<Admitted, Refused> {
        // One client is an IPv4 address or an IPv6 /64, as for the rate limits.
        let client = client_key(client);
        let mut g = self.lock();
        let mut evicted = 0;
        // `while`, not `if`: after a reload lowered a cap, one admission may close several.
        while g.from(client) >= caps.per_client {
            let id = g.oldest_idle(Some(client)).ok_or(Refused::ClientFull)?;
            g.evict(id);
            evicted += 1;
        }
        while g.open.len() >= caps.total {
            let id = g.oldest_idle(None).ok_or(Refused::Full)?;
            g.evict(id);
            evicted += 1;
        }
        let id = g.next_id;
        g.next_id += 1;
        let state = Arc::new(ConnState::default());
        let (tx, rx) = oneshot::channel();
        g.open.insert(
            id,
            Entry {
                client,
                state: state.clone(),
                _close: tx,
            },
        );
        *g.per_client.entry(client).or_insert(0) += 1;
        Ok(Admitted {
            slot: Slot {
                conns: self.clone(),
                id,
                state,
                closed: rx,
            },
            evicted,
        })
    }

    /// Close the oldest idle connections until at most `keep` are open (at least one when any
    /// is idle); used when accept runs out of descriptors. Returns how many were closed.
    pub fn shed(&self, keep: usize) -> usize {
        let mut g = self.lock();
        let mut closed = 0;
        while closed == 0 || g.open.len() > keep {
            let Some(id) = g.oldest_idle(None) else { break };
            g.evict(id);
            closed += 1;
        }
        closed
    }

    /// Close every idle connection (shutdown: in-flight requests finish, idle ones need not
    /// wait for their header timeout).
    pub fn close_idle(&self) -> usize {
        let mut g = self.lock();
        let idle: Vec<u64> = g
            .open
            .iter()
            .filter(|(_, e)| e.state.idle())
            .map(|(id, _)| *id)
            .collect();
        for id in &idle {
            g.evict(*id);
        }
        idle.len()
    }

    /// Evicted connections whose socket is not closed yet.
    pub fn closing(&self) -> usize {
        self.lock().closing
    }

    /// Resolves after an evicted connection closed its socket (or at once if one did since
    /// the last call: the permit is kept, so checking [`Conns::closing`] first cannot miss it).
    pub async fn closed_one(&self) {
        self.closed_one.notified().await;
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Open connections from `client` (its IPv6 /64).
    pub fn open_from(&self, client: IpAddr) -> usize {
        self.lock().from(client_key(client))
    }
}

/// A registered connection; dropping it unregisters the connection.
#[derive(Debug)]
pub struct Slot {
    conns: Arc<Conns>,
    id: u64,
    state: Arc<ConnState>,
    closed: oneshot::Receiver<()>,
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns").field("open", &self.open()).finish()
    }
}

impl Slot {
    pub fn state(&self) -> Arc<ConnState> {
        self.state.clone()
    }

    /// Resolves once the registry closed this connection to make room.
    pub async fn closed(&mut self) {
        // Only the registry holds the sender, and it never sends: it drops the entry.
        let _ = (&mut self.closed).await;
    }

    /// Whether the registry closed this connection (without waiting).
    #[cfg(test)]
    pub fn is_closed(&mut self) -> bool {
        !matches!(
            self.closed.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        )
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.conns.lock();
        // Still registered: it ended by itself. Otherwise it was evicted and its task, which
        // owns this slot, has now dropped the connection (the slot outlives it).
        if !g.remove(self.id) {
            g.closing = g.closing.saturating_sub(1);
            drop(g);
            self.conns.closed_one.notify_one();
        }
    }
}

/// At most one log line per `every`; counts what it held back so the next line can say so.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(held back since the last line)` when a line may be logged at `now`.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|l| now.saturating_duration_since(l) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The soft and hard RLIMIT_NOFILE, or None when getrlimit fails.
// `rlim_t` is u64 here but 32 bits on some targets: the casts are for those.
#[allow(clippy::unnecessary_cast)]
pub fn nofile_limits() -> Option<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    (rc == 0).then_some((r.rlim_cur as u64, r.rlim_max as u64))
}

/// Raise the soft RLIMIT_NOFILE to the hard limit. systemd starts services with a soft limit
/// of 1024 (kept low for programs that still use select(2)); this daemon uses epoll, and the
/// connection cap (see [`Caps::new`]) keeps it below whatever the limit is anyway. A failure is
/// logged and the daemon runs with what it has.
#[allow(clippy::unnecessary_cast)] // see `nofile_limits`
pub fn raise_nofile_limit() {
    let Some((soft, hard)) = nofile_limits() else {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit (RLIMIT_NOFILE)");
        return;
    };
    // An unlimited hard limit cannot be the soft one (the kernel caps it at fs.nr_open).
    let target = if hard == libc::RLIM_INFINITY as u64 {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(1 << 20)
    } else {
        hard
    };
    if soft >= target {
        tracing::info!(
            soft,
            hard,
            "open-file limit (RLIMIT_NOFILE) already at the hard limit"
        );
        return;
    }
    let r = libc::rlimit {
        rlim_cur: target as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } == 0 {
        tracing::info!(
            before = soft,
            after = target,
            hard,
            "raised the open-file limit (RLIMIT_NOFILE)"
        );
    } else {
        tracing::warn!(
            soft,
            hard,
            error = %std::io::Error::last_os_error(),
            "cannot raise the open-file limit (RLIMIT_NOFILE); connections are capped to fit it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn caps(total: usize, per_client: usize) -> Caps {
        Caps { total, per_client }
    }

    #[test]
    fn within_the_caps_nothing_is_closed() {
        let c = Arc::new(Conns::default());
        let mut slots = Vec::new();
        for i in 0..4 {
            let a = c.admit(ip(1 + i % 2), caps(4, 2)).unwrap();
            assert_eq!(a.evicted, 0);
            slots.push(a.slot);
        }
        assert_eq!(c.open(), 4);
        assert_eq!(c.open_from(ip(1)), 2);
        assert!(slots.iter_mut().all(|s| !s.is_closed()));
        drop(slots);
        assert_eq!(c.open(), 0);
        assert_eq!(c.open_from(ip(1)), 0);
    }

    #[test]
    fn an_ipv6_64_is_one_client() {
        let c = Arc::new(Conns::default());
        let base = u128::from("2001:db8::".parse::<std::net::Ipv6Addr>().unwrap());
        let v6 = |i: u128| IpAddr::V6(std::net::Ipv6Addr::from(base + (i << 24) + i));
        let mut slots = Vec::new();
        let mut evicted = 0;
        for i in 1..=4096 {
            let a = c.admit(v6(i), caps(8192, 128)).unwrap();
            evicted += a.evicted;
            slots.push(a.slot);
        }
        assert_eq!(c.open(), 128, "one client's cap");
        assert_eq!(evicted, 4096 - 128);
        assert_eq!(c.open_from(v6(99_999)), 128);
        // Another /64 is another client.
        let other = IpAddr::V6(std::net::Ipv6Addr::from(base + (1u128 << 64)));
        let o = c.admit(other, caps(8192, 128)).unwrap();
        assert_eq!(o.evicted, 0);
        assert_eq!(c.open_from(other), 1);
    }

    #[test]
    fn over_the_per_client_cap_that_clients_oldest_idle_connection_goes() {
        let c = Arc::new(Conns::default());
        let mut other = c.admit(ip(9), caps(10, 3)).unwrap().slot;
        let mut a: Vec<Slot> = (0..3)
            .map(|_| c.admit(ip(1), caps(10, 3)).unwrap().slot)
            .collect();
        // The oldest of ip(1) has a request in progress: the next oldest goes instead.
        let busy = a[0].state().busy();
        let n = c.admit(ip(1), caps(10, 3)).unwrap();
        assert_eq!(n.evicted, 1);
        assert!(!a[0].is_closed());
        assert!(a[1].is_closed());
        assert!(!a[2].is_closed());
        assert!(
            !other.is_closed(),
            "another client's older idle connection stays"
        );
        assert_eq!(c.open_from(ip(1)), 3);
        drop(busy);
        // Now idle again, the oldest goes first.
        let _m = c.admit(ip(1), caps(10, 3)).unwrap();
        assert!(a[0].is_closed());
        assert!(!a[2].is_closed());
        drop(n);
    }

    #[test]
    fn over_the_global_cap_the_oldest_idle_connection_of_anyone_goes() {
        let c = Arc::new(Conns::default());
        let mut s1 = c.admit(ip(1), caps(3, 3)).unwrap().slot;
        let mut s2 = c.admit(ip(2), caps(3, 3)).unwrap().slot;
        let mut s3 = c.admit(ip(3), caps(3, 3)).unwrap().slot;
        let _b1 = s1.state().busy();
        let a = c.admit(ip(4), caps(3, 3)).unwrap();
        assert_eq!(a.evicted, 1);
        assert!(!s1.is_closed());
        assert!(s2.is_closed());
        assert!(!s3.is_closed());
        assert_eq!(c.open(), 3);
        assert_eq!(c.open_from(ip(2)), 0);
        assert_eq!(c.closing(), 1, "until its task drops the slot");
        // Dropping an evicted slot does not unregister anyone else.
        drop(s2);
        assert_eq!(c.open(), 3);
        assert_eq!(c.closing(), 0);
    }

    #[test]
    fn when_nothing_is_idle_the_new_connection_is_refused() {
        let c = Arc::new(Conns::default());
        let s: Vec<Slot> = (0..2)
            .map(|i| c.admit(ip(i), caps(2, 2)).unwrap().slot)
            .collect();
        let busy: Vec<Busy> = s.iter().map(|s| s.state().busy()).collect();
        assert_eq!(c.admit(ip(7), caps(2, 2)).unwrap_err(), Refused::Full);
        let t = c.admit(ip(0), caps(3, 1));
        assert_eq!(t.unwrap_err(), Refused::ClientFull);
        assert_eq!(c.open(), 2);
        // A request that ends (its guard dropped) makes its connection evictable again.
        drop(busy);
        assert!(c.admit(ip(7), caps(2, 2)).is_ok());
    }

    #[test]
    fn a_lowered_cap_closes_down_to_it_in_one_admission() {
        let c = Arc::new(Conns::default());
        let _s: Vec<Slot> = (0..6)
            .map(|i| c.admit(ip(i), caps(6, 6)).unwrap().slot)
            .collect();
        let a = c.admit(ip(9), caps(3, 3)).unwrap();
        assert_eq!(a.evicted, 4);
        assert_eq!(c.open(), 3);
    }

    #[test]
    fn shed_closes_at_least_one_and_down_to_keep() {
        let c = Arc::new(Conns::default());
        let mut s: Vec<Slot> = (0..5)
            .map(|i| c.admit(ip(i), caps(10, 10)).unwrap().slot)
            .collect();
        assert_eq!(c.shed(10), 1, "one even when under keep");
        assert!(s[0].is_closed());
        assert_eq!(c.shed(2), 2);
        assert!(s[1].is_closed() && s[2].is_closed());
        assert!(!s[3].is_closed());
        let _busy: Vec<Busy> = s[3..].iter().map(|s| s.state().busy()).collect();
        assert_eq!(c.shed(0), 0, "busy connections are never shed");
    }

    #[test]
    fn close_idle_leaves_requests_in_progress() {
        let c = Arc::new(Conns::default());
        let mut s: Vec<Slot> = (0..3)
            .map(|i| c.admit(ip(i), caps(10, 10)).unwrap().slot)
            .collect();
        let _b = s[1].state().busy();
        assert_eq!(c.close_idle(), 2);
        assert!(s[0].is_closed() && !s[1].is_closed() && s[2].is_closed());
        assert_eq!(c.open(), 1);
        assert_eq!(c.closing(), 2);
        drop(s.pop());
        assert_eq!((c.open(), c.closing()), (1, 1));
    }

    #[test]
    fn caps_fit_the_descriptor_limit() {
        assert_eq!(Caps::new(512, 128, Some(1024)), caps(512, 128));
        assert_eq!(Caps::new(4096, 4096, Some(1024)), caps(896, 896));
        assert_eq!(Caps::new(512, 128, Some(200)), caps(72, 72));
        assert_eq!(Caps::new(512, 128, Some(10)), caps(16, 16));
        assert_eq!(Caps::new(512, 128, None), caps(512, 128));
    }

    #[test]
    fn throttle_logs_once_per_period_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(10));
        assert_eq!(t.hit(t0), Some(0));
        assert_eq!(t.hit(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.hit(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.hit(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(t.hit(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.hit(t0 + Duration::from_secs(25)), Some(1));
    }
}
