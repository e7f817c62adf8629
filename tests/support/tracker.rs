//! A fake tracker implementing the README's tracker API contract exactly: `GET /shows`,
//! `POST /shows/{id}/watched` (keeps existing watched dates, recomputes totals, honours
//! Idempotency-Key by replaying the first answer), `POST /shows`. Faults can be scripted:
//! a status for the next N requests, a hang, or going down (refused connections).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::{FakeServer, Seen, respond};

/// Episodes per season the fake knows; anything past this is `unknown`.
pub const EPISODES_PER_SEASON: u32 = 50;
pub const SEASONS: u32 = 20;

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this status (with optional Retry-After seconds).
    Status(u16, Option<u64>),
    /// Sleep this long before answering normally.
    Hang(Duration),
    /// Do what the request asks at once, but answer only after this long: a client that gives
    /// up first misses the answer to a change that was made. For creates (`create_faults`);
    /// the request is counted twice.
    AnswerLate(Duration),
    /// Wait until the test opens the gate, then answer normally.
    Held(Gate),
    /// Wait until the test opens the gate, then answer this status.
    HeldThen(Gate, u16),
}

/// A request held by [`Fault::Held`] until [`Gate::open`]: a test sees it arrive
/// ([`Gate::arrived`]) and lets it go when it chooses, without sleeping.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    arrived: Arc<std::sync::atomic::AtomicUsize>,
    open: Arc<tokio::sync::Notify>,
    opened: Arc<std::sync::atomic::AtomicBool>,
}

impl Gate {
    /// How many requests reached the gate.
    pub fn arrived(&self) -> usize {
        self.arrived.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Let every held request (and any later one) through.
    pub fn open(&self) {
        self.opened.store(true, std::sync::atomic::Ordering::SeqCst);
        self.open.notify_waiters();
    }

    async fn pass(&self) {
        let open = self.open.notified();
        tokio::pin!(open);
        open.as_mut().enable();
        self.arrived
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if !self.opened.load(std::sync::atomic::Ordering::SeqCst) {
            open.await;
        }
    }
}

#[derive(Default)]
pub struct TrackerState {
    pub shows: Vec<Value>,
    /// (show id, season, episode) → watched_at as sent.
    pub watched: BTreeMap<(String, u32, u32), String>,
    /// Idempotency-Key → the answer first given to it.
    pub replies: HashMap<String, Value>,
    /// Every POST /shows/{id}/watched body, in order.
    pub watched_posts: Vec<Seen>,
    /// How many watched POSTs actually changed state (not replays).
    pub applied: usize,
    /// Faults for the next requests, front first.
    pub faults: Vec<Fault>,
    /// Faults for the next watched POSTs only, front first (before `sticky`).
    pub watched_faults: Vec<Fault>,
    /// Fault for every watched POST until cleared.
    pub sticky: Option<Fault>,
    /// Faults for the next show creates (`POST /shows`) only, front first.
    pub create_faults: Vec<Fault>,
    /// Show creates (`POST /shows`) received, answered or faulted.
    pub creates: usize,
    pub requests: usize,
    pub next_id: u64,
    pub expected_key: Option<String>,
    /// Watched POSTs being answered right now, the most at once, and how often two of the
    /// same show overlapped (issue 15: bounded in flight, one request per show at a time).
    pub in_flight: usize,
    pub max_in_flight: usize,
    pub shows_in_flight: HashMap<String, usize>,
    pub same_show_overlaps: usize,
    /// A rate limiter like a real tracker's API keys have (see [`FakeTracker::set_budget`]).
    pub budget: Option<FakeBudget>,
    /// Watched POSTs refused by that limiter.
    pub over_budget: usize,
}

/// A fixed-window limit on watched POSTs, announced with `X-RateLimit-*` on every answer;
/// past it a 429 that says when the window resets but has no `Retry-After`.
#[derive(Debug, Clone)]
pub struct FakeBudget {
    pub limit: u64,
    pub window: Duration,
    used: u64,
    started: Option<std::time::Instant>,
}

/// Counts a watched POST as in flight until its answer is made (every return path).
struct InFlight {
    st: Arc<Mutex<TrackerState>>,
    show: String,
}

impl InFlight {
    fn enter(st: &Arc<Mutex<TrackerState>>, path: &str) -> InFlight {
        let show = path
            .trim_end_matches("/watched")
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        let mut s = st.lock().unwrap();
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        let n = s.shows_in_flight.entry(show.clone()).or_default();
        *n += 1;
        if *n > 1 {
            s.same_show_overlaps += 1;
        }
        InFlight {
            st: st.clone(),
            show,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.st.lock().unwrap_or_else(|p| p.into_inner());
        s.in_flight -= 1;
        if let Some(n) = s.shows_in_flight.get_mut(&self.show) {
            *n -= 1;
        }
    }
}

pub struct FakeTracker {
    pub server: Arc<FakeServer>,
    pub state: Arc<Mutex<TrackerState>>,
}

impl FakeTracker {
    pub async fn start(shows: Vec<Value>) -> FakeTracker {
        let state = Arc::new(Mutex::new(TrackerState {
            shows,
            next_id: 90_000,
            ..Default::default()
        }));
        let st = state.clone();
        let server = FakeServer::start(Arc::new(move |seen: Seen| {
            let st = st.clone();
            Box::pin(async move { handle(st, seen).await })
        }))
        .await;
        FakeTracker { server, state }
    }

    /// The base URL to configure as `[tracker] url`.
    pub fn url(&self) -> String {
        format!("{}/api/plexsync", self.server.url())
    }

    pub fn watched(&self) -> BTreeMap<(String, u32, u32), String> {
        self.state.lock().unwrap().watched.clone()
    }

    /// Show creates (`POST /shows`) received so far.
    pub fn creates(&self) -> usize {
        self.state.lock().unwrap().creates
    }

    pub fn applied(&self) -> usize {
        self.state.lock().unwrap().applied
    }

    pub fn posts(&self) -> Vec<Seen> {
        self.state.lock().unwrap().watched_posts.clone()
    }

    pub fn push_fault(&self, f: Fault) {
        self.state.lock().unwrap().faults.push(f);
    }

    /// Faults for the next watched POSTs only (front first), before the sticky one.
    pub fn push_watched_fault(&self, f: Fault) {
        self.state.lock().unwrap().watched_faults.push(f);
    }

    pub fn set_sticky(&self, f: Option<Fault>) {
        self.state.lock().unwrap().sticky = f;
    }

    /// Allow `limit` watched POSTs per `window` (fixed windows from the first request).
    pub fn set_budget(&self, limit: u64, window: Duration) {
        self.state.lock().unwrap().budget = Some(FakeBudget {
            limit,
            window,
            used: 0,
            started: None,
        });
    }

    pub fn over_budget(&self) -> usize {
        self.state.lock().unwrap().over_budget
    }
}

/// Count a watched POST against the budget: `Some((allowed, remaining, reset secs))`.
fn spend(st: &Arc<Mutex<TrackerState>>) -> Option<(bool, u64, u64, u64)> {
    let mut s = st.lock().unwrap();
    let b = s.budget.as_mut()?;
    let now = std::time::Instant::now();
    let started = *b.started.get_or_insert(now);
    let started = if now - started >= b.window {
        b.used = 0;
        b.started = Some(now);
        now
    } else {
        started
    };
    let allowed = b.used < b.limit;
    if allowed {
        b.used += 1;
    }
    let reset = (started + b.window - now).as_secs_f64().ceil() as u64;
    let out = (allowed, b.limit, b.limit - b.used, reset);
    if !allowed {
        s.over_budget += 1;
    }
    Some(out)
}

async fn handle(
    st: Arc<Mutex<TrackerState>>,
    seen: Seen,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let watched = seen.method == "POST" && seen.path.ends_with("/watched");
    if seen.method == "POST" && seen.path.ends_with("/shows") {
        st.lock().unwrap().creates += 1;
    }
    let budget = if watched { spend(&st) } else { None };
    let mut r = match budget {
        Some((false, ..)) => {
            let mut s = st.lock().unwrap();
            s.requests += 1;
            s.watched_posts.push(seen.clone());
            respond(429, "application/json", "{\"error\":\"rate limited\"}")
        }
        _ => handle_inner(st, seen).await,
    };
    if let Some((_, limit, remaining, reset)) = budget {
        let h = r.headers_mut();
        h.insert("x-ratelimit-limit", limit.into());
        h.insert("x-ratelimit-remaining", remaining.into());
        h.insert("x-ratelimit-reset", reset.into());
    }
    r
}

async fn handle_inner(
    st: Arc<Mutex<TrackerState>>,
    seen: Seen,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let _in_flight = (seen.method == "POST" && seen.path.ends_with("/watched"))
        .then(|| InFlight::enter(&st, &seen.path));
    let fault = {
        let mut s = st.lock().unwrap();
        s.requests += 1;
        if seen.method == "POST" && seen.path.ends_with("/watched") {
            // Every attempt counts, answered or faulted.
            s.watched_posts.push(seen.clone());
        }
        if !s.faults.is_empty() {
            Some(s.faults.remove(0))
        } else if seen.method == "POST"
            && seen.path.ends_with("/shows")
            && !s.create_faults.is_empty()
        {
            Some(s.create_faults.remove(0))
        } else if seen.method == "POST"
            && seen.path.ends_with("/watched")
            && !s.watched_faults.is_empty()
        {
            Some(s.watched_faults.remove(0))
        } else if seen.method == "POST" && seen.path.ends_with("/watched") {
            s.sticky.clone()
        } else {
            None
        }
    };
    match fault {
        Some(Fault::Status(code, retry)) => {
            let mut r = respond(
                code,
                "application/json",
                format!("{{\"error\":\"fault {code}\"}}"),
            );
            if let Some(secs) = retry {
                r.headers_mut()
                    .insert("retry-after", secs.to_string().parse().unwrap());
            }
            return r;
        }
        Some(Fault::Hang(d)) => tokio::time::sleep(d).await,
        Some(Fault::Held(gate)) => gate.pass().await,
        Some(Fault::HeldThen(gate, code)) => {
            gate.pass().await;
            return respond(
                code,
                "application/json",
                format!("{{\"error\":\"fault {code}\"}}"),
            );
        }
        Some(Fault::AnswerLate(d)) => {
            let r = Box::pin(handle_inner(st, seen)).await;
            tokio::time::sleep(d).await;
            return r;
        }
        None => {}
    }
    let mut s = st.lock().unwrap();
    if let Some(k) = &s.expected_key {
        let ok = seen.header("authorization") == Some(&format!("Bearer {k}"));
        if !ok {
            return respond(401, "application/json", "{\"error\":\"unauthorized\"}");
        }
    }
    let Some(rest) = seen.path.strip_prefix("/api/plexsync") else {
        return respond(404, "application/json", "{\"error\":\"not found\"}");
    };
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    match (seen.method.as_str(), segs.as_slice()) {
        ("GET", ["shows"]) => respond(
            200,
            "application/json",
            serde_json::to_vec(&s.shows).unwrap(),
        ),
        ("POST", ["shows"]) => {
            let v: Value = match serde_json::from_slice(&seen.body) {
                Ok(v) => v,
                Err(_) => return respond(400, "application/json", "{\"error\":\"bad json\"}"),
            };
            s.next_id += 1;
            let id = s.next_id.to_string();
            let mut show = v.clone();
            show["id"] = json!(id);
            s.shows.push(show);
            respond(
                201,
                "application/json",
                serde_json::to_vec(&json!({ "id": id })).unwrap(),
            )
        }
        ("POST", ["shows", id, "watched"]) => {
            let id = id.to_string();
            let key = seen.header("idempotency-key").map(str::to_string);
            if let Some(k) = &key {
                if let Some(prev) = s.replies.get(k) {
                    return respond(200, "application/json", serde_json::to_vec(prev).unwrap());
                }
            }
            if !s.shows.iter().any(|sh| {
                sh["id"].as_str() == Some(&id)
                    || sh["id"].as_u64().map(|n| n.to_string()) == Some(id.clone())
            }) {
                return respond(404, "application/json", "{\"error\":\"no such show\"}");
            }
            let body: Value = match serde_json::from_slice(&seen.body) {
                Ok(v) => v,
                Err(_) => return respond(400, "application/json", "{\"error\":\"bad json\"}"),
            };
            let Some(eps) = body["episodes"].as_array() else {
                return respond(422, "application/json", "{\"error\":\"episodes missing\"}");
            };
            let (mut marked, mut already) = (0u64, 0u64);
            let mut unknown = Vec::new();
            for e in eps {
                let (Some(season), Some(episode), Some(at)) = (
                    e["season"].as_u64(),
                    e["episode"].as_u64(),
                    e["watched_at"].as_str(),
                ) else {
                    return respond(422, "application/json", "{\"error\":\"bad episode\"}");
                };
                let (season, episode) = (season as u32, episode as u32);
                if season > SEASONS || episode == 0 || episode > EPISODES_PER_SEASON {
                    unknown.push(json!({ "season": season, "episode": episode }));
                    continue;
                }
                let k = (id.clone(), season, episode);
                // A watched date already set (possibly by hand) is never overwritten.
                match s.watched.entry(k) {
                    std::collections::btree_map::Entry::Occupied(_) => already += 1,
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(at.to_string());
                        marked += 1;
                    }
                }
            }
            s.applied += 1;
            let watched_episodes = s.watched.keys().filter(|(sid, _, _)| *sid == id).count();
            let reply = json!({
                "marked": marked,
                "already_watched": already,
                "unknown": unknown,
                "watched_episodes": watched_episodes,
                "total_episodes": SEASONS * EPISODES_PER_SEASON,
            });
            if let Some(k) = key {
                s.replies.insert(k, reply.clone());
            }
            respond(200, "application/json", serde_json::to_vec(&reply).unwrap())
        }
        _ => respond(404, "application/json", "{\"error\":\"not found\"}"),
    }
}
