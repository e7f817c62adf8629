//! The listeners: the TCP socket and the admin unix socket (created 0600). Accepts
//! connections, admits TCP ones through the connection registry ([`super::conns`]: caps per
//! client and in total, oldest idle closed first), serves each with hyper's http1 under the
//! configured header timeout and a 16 KiB head limit, survives running out of descriptors
//! (rate-limited warning, idle connections shed, brief pause), and lets in-flight requests
//! finish on shutdown. What a request means is decided in [`super`].

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, UnixListener};
use tokio::time::Instant;

use super::conns::{self, Caps, Conns, Slot, Throttle};
use super::{Limits, Peer};
use crate::state::Shared;

pub fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    // A stale socket from a killed daemon would make bind fail; only remove a socket.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let l = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Request headers (request line included) are read into a buffer of at most this size; a
/// larger head is answered 431. Plex's webhook heads are well under 1 KiB; 16 KiB bounds what
/// an idle connection can hold (hyper's minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// One `accept failed` / `connection limit` warning per this period, with a count of the
/// ones held back.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Pause accepting after an accept error: short when an idle connection was closed to free a
/// descriptor (its task closes it as soon as it runs), longer when nothing could be freed.
const BACKOFF_FREED: Duration = Duration::from_millis(5);
const BACKOFF_STUCK: Duration = Duration::from_millis(100);

/// Evicted connections not yet closed by their task, past which accepting waits for them: it
/// keeps the descriptors in use near the cap (not cap + however far the accept loop ran
/// ahead of the connection tasks during a flood).
const MAX_CLOSING: usize = 32;

/// The answer to a connection refused because every open connection has a request in
/// progress. Written best effort (never waits): the socket is closed right after.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\n\r\ntoo many connections\n";

/// Accept connections until shutdown, then let in-flight requests finish.
pub async fn serve(shared: Arc<Shared>, tcp: TcpListener, unix: Option<UnixListener>) {
    let graceful = GracefulShutdown::new();
    let limits = Arc::new(Limits::default());
    let conns = Arc::new(Conns::default());
    let mut nofile = conns::nofile_limits().map(|(soft, _)| soft);
    {
        let server = &shared.config().server;
        let caps = Caps::new(
            server.max_connections,
            server.max_connections_per_client,
            nofile,
        );
        if caps.total < server.max_connections {
            tracing::warn!(
                max_connections = server.max_connections,
                fd_limit = nofile.unwrap_or(0),
                open = caps.total,
                "the open-file limit leaves room for fewer connections than max_connections; capping at `open`"
            );
        }
        tracing::info!(
            max_connections = caps.total,
            max_connections_per_client = caps.per_client,
            fd_limit = nofile.unwrap_or(0),
            "connection caps"
        );
    }
    let mut accept_warn = Throttle::new(WARN_EVERY);
    let mut full_warn = Throttle::new(WARN_EVERY);
    let mut shutdown = shared.shutdown.subscribe();
    // While a listener backs off after an error, only its accept is paused: the other keeps
    // being served (the admin socket must stay usable during a TCP flood, and vice versa).
    let mut tcp_pause: Option<Instant> = None;
    let mut unix_pause: Option<Instant> = None;
    loop {
        let draining = conns.closing() >= MAX_CLOSING;
        tokio::select! {
            r = tcp.accept(), if tcp_pause.is_none() && !draining => match r {
                Ok((s, addr)) => {
                    let server = &shared.config().server;
                    let caps = Caps::new(server.max_connections, server.max_connections_per_client, nofile);
                    let client = addr.ip().to_canonical();
                    match conns.admit(client, caps) {
                        Ok(a) => {
                            if a.evicted > 0 {
                                tracing::debug!(client = %client, closed = a.evicted, "closed idle connections to make room");
                                if let Some(held) = full_warn.hit(std::time::Instant::now()) {
                                    tracing::warn!(
                                        client = %client,
                                        open = conns.open(),
                                        from_client = conns.open_from(client),
                                        max_connections = caps.total,
                                        max_connections_per_client = caps.per_client,
                                        suppressed = held,
                                        "connection limit reached; closing the oldest idle connections"
                                    );
                                }
                            }
                            let _ = s.set_nodelay(true);
                            spawn_conn(&shared, &limits, &graceful, Box::new(s), Peer::Tcp(addr), Some(a.slot));
                        }
                        Err(why) => {
                            if let Some(held) = full_warn.hit(std::time::Instant::now()) {
                                tracing::warn!(
                                    client = %client,
                                    open = conns.open(),
                                    reason = ?why,
                                    suppressed = held,
                                    "connection refused: every open connection has a request in progress"
                                );
                            }
                            // Best effort and non-blocking: a refused client must not hold the
                            // accept loop.
                            let _ = s.try_write(REFUSED);
                        }
                    }
                }
                Err(e) => {
                    // EMFILE/ENFILE: the connection waits in the kernel's backlog. Close idle
                    // connections to free descriptors (down to what the limit, re-read now,
                    // leaves room for) and pause briefly, so the loop never spins on it.
                    let freed = if is_out_of_descriptors(&e) {
                        nofile = conns::nofile_limits().map(|(soft, _)| soft);
                        let keep = nofile.map_or(usize::MAX, conns::fd_budget).saturating_sub(1);
                        conns.shed(keep)
                    } else {
                        0
                    };
                    if let Some(held) = accept_warn.hit(std::time::Instant::now()) {
                        tracing::warn!(error = %e, open = conns.open(), closed_idle = freed, suppressed = held, "accept failed");
                    }
                    let pause = if freed > 0 { BACKOFF_FREED } else { BACKOFF_STUCK };
                    tcp_pause = Some(Instant::now() + pause);
                }
            },
            _ = pause_until(tcp_pause) => tcp_pause = None,
            _ = conns.closed_one(), if draining => {}
            r = accept_unix(unix.as_ref()), if unix_pause.is_none() => match r {
                // The admin socket (0600, the CLI's channel) is not capped: only this user can
                // connect, and RESERVED_FDS keeps descriptors free for it.
                Ok(s) => spawn_conn(&shared, &limits, &graceful, Box::new(s), Peer::Unix, None),
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    unix_pause = Some(Instant::now() + BACKOFF_STUCK);
                }
            },
            _ = pause_until(unix_pause) => unix_pause = None,
            _ = shutdown.changed() => break,
        }
    }
    drop(tcp);
    // Idle connections (keep-alive, or still sending headers) would otherwise hold graceful
    // shutdown until their header timeout; requests in progress finish.
    let closed = conns.close_idle();
    tracing::debug!(
        closed,
        open = conns.open(),
        "closed idle connections for shutdown"
    );
    graceful.shutdown().await;
}

/// Serve one connection with hyper's http1. A TCP connection holds its registry slot: the
/// service marks a request in progress (so it is never evicted mid-request), and when the
/// registry closes the slot the connection future is dropped, which closes the socket.
fn spawn_conn(
    shared: &Arc<Shared>,
    limits: &Arc<Limits>,
    graceful: &GracefulShutdown,
    io: Box<dyn ConnIo>,
    peer: Peer,
    slot: Option<Slot>,
) {
    let cfg = shared.config();
    let sh = shared.clone();
    let lim = limits.clone();
    let state = slot.as_ref().map(Slot::state);
    let svc = service_fn(move |req| {
        let sh = sh.clone();
        let lim = lim.clone();
        // Taken when hyper has the request head and hands it over; dropped with the response
        // future (completed, or dropped on shutdown / a closed connection).
        let busy = state.as_ref().map(|s| s.busy());
        async move {
            let _busy = busy;
            Ok::<_, Infallible>(super::handle(sh, &lim, peer, req).await)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.server.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), svc);
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        let Some(mut slot) = slot else {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        };
        tokio::select! {
            r = conn => if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            },
            // Dropping `conn` (the other branch) closes the socket; a request that began in
            // the instant between the registry's idle check and here is cut off, like any
            // request on a connection the client closes.
            _ = slot.closed() => {}
        }
        // `slot` drops after `conn`: the registry forgets the connection once it is closed.
    });
}

fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

async fn pause_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

trait ConnIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> ConnIo for T {}

async fn accept_unix(l: Option<&UnixListener>) -> std::io::Result<tokio::net::UnixStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}
