//! The fake Plex's notification websocket (`/:/websockets/notifications`): the HTTP upgrade
//! answered by hand (101, `Sec-WebSocket-Accept`), then tokio-tungstenite's server side on
//! the upgraded connection. Tests push notification JSON to every open socket
//! ([`Notifications::push`]), and cut the sockets as a Plex restart does
//! ([`Notifications::drop_all`]: the TCP connection closes without a close frame).
//! The token and `fail_with` are checked like every other route (401 with PMS's HTML body).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::Seen;

pub const PATH: &str = "/:/websockets/notifications";

/// The open sockets of one fake Plex.
pub struct Notifications {
    tx: broadcast::Sender<String>,
    /// Upgrades answered with 101 since start.
    accepted: AtomicUsize,
    /// Sockets open now.
    open: Arc<AtomicUsize>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Every request to the websocket path (kept apart from [`super::plex::PlexState`]'s
    /// `requests`, which other tests read as "what the HTTP client asked").
    seen: Mutex<Vec<Seen>>,
}

impl Default for Notifications {
    fn default() -> Self {
        Notifications {
            tx: broadcast::channel(256).0,
            accepted: AtomicUsize::new(0),
            open: Arc::new(AtomicUsize::new(0)),
            tasks: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
        }
    }
}

/// Decrements the open count when a socket's task ends (also when aborted).
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Notifications {
    /// Send one text message (notification JSON) to every open socket; how many got it.
    pub fn push(&self, json: &str) -> usize {
        self.tx.send(json.to_string()).unwrap_or(0)
    }

    /// Close every open socket's TCP connection at once (no close frame): Plex restarting.
    pub fn drop_all(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// The upgrade requests seen (answered or refused), oldest first.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Answer an upgrade request: 400 without the websocket headers, else 101 and a socket
    /// that forwards [`push`](Self::push)ed messages and answers pings.
    pub fn upgrade(self: &Arc<Self>, seen: &Seen) -> hyper::Response<Full<Bytes>> {
        let key = seen.header("sec-websocket-key").map(str::to_string);
        let is_ws = seen
            .header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        let (Some(key), true, Some(on_upgrade)) = (key, is_ws, seen.upgrade.take()) else {
            return super::respond(400, "text/plain", "not a websocket request");
        };
        self.accepted.fetch_add(1, Ordering::SeqCst);
        self.open.fetch_add(1, Ordering::SeqCst);
        let guard = OpenGuard(self.open.clone());
        let mut rx = self.tx.subscribe();
        let task = tokio::spawn(async move {
            let _guard = guard;
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            let (mut sink, mut stream) = ws.split();
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Ok(text) => {
                            if sink.send(Message::text(text)).await.is_err() {
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => break,
                    },
                    m = stream.next() => match m {
                        // tungstenite queues the pong; a flush sends it.
                        Some(Ok(Message::Ping(_))) => {
                            if sink.flush().await.is_err() {
                                break;
                            }
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => {}
                    },
                }
            }
        });
        {
            let mut tasks = self.tasks.lock().unwrap();
            tasks.retain(|t| !t.is_finished());
            tasks.push(task.abort_handle());
        }
        hyper::Response::builder()
            .status(101)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
            .body(Full::new(Bytes::new()))
            .unwrap()
    }
}

/// The websocket route of the fake Plex: recorded ([`Notifications::requests`]), `fail_with`
/// and a wrong token answered as PMS does (401, HTML), else the upgrade.
pub fn route(
    st: &Mutex<super::plex::PlexState>,
    ws: &Arc<Notifications>,
    seen: Seen,
) -> hyper::Response<Full<Bytes>> {
    ws.seen.lock().unwrap().push(seen.clone());
    let s = st.lock().unwrap();
    let status = match s.fail_with {
        Some(code) => Some(code),
        None if seen.header("x-plex-token") != Some(super::plex::TOKEN) => Some(401),
        None => None,
    };
    drop(s);
    match status {
        Some(code) => super::respond(
            code,
            "text/html",
            format!("<html><head><title>{code}</title></head><body><h1>{code}</h1></body></html>"),
        ),
        None => ws.upgrade(&seen),
    }
}
