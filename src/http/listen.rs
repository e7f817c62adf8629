//! The listeners: the TCP socket and the admin unix socket (created 0600). Accepts
//! connections, serves each with hyper's http1 under the configured header timeout, and lets
//! in-flight requests finish on shutdown. What a request means is decided in [`super`].

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, UnixListener};

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

/// Accept connections until shutdown, then let in-flight requests finish.
pub async fn serve(shared: Arc<Shared>, tcp: TcpListener, unix: Option<UnixListener>) {
    let graceful = GracefulShutdown::new();
    let limits = Arc::new(Limits::default());
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted: Option<(Box<dyn ConnIo>, Peer)> = tokio::select! {
            r = tcp.accept() => match r {
                Ok((s, addr)) => {
                    let _ = s.set_nodelay(true);
                    Some((Box::new(s), Peer::Tcp(addr)))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    None
                }
            },
            r = accept_unix(unix.as_ref()) => match r {
                Ok(s) => Some((Box::new(s), Peer::Unix)),
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    None
                }
            },
            _ = shutdown.changed() => break,
        };
        let Some((io, peer)) = accepted else { continue };
        let cfg = shared.config();
        let sh = shared.clone();
        let lim = limits.clone();
        let svc = service_fn(move |req| {
            let sh = sh.clone();
            let lim = lim.clone();
            async move { Ok::<_, Infallible>(super::handle(sh, &lim, peer, req).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.server.header_timeout)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(io), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(tcp);
    graceful.shutdown().await;
}

trait ConnIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> ConnIo for T {}

async fn accept_unix(l: Option<&UnixListener>) -> std::io::Result<tokio::net::UnixStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}
