//! The CLI's client for a running daemon: HTTP/1.1 over the admin unix socket.
//!
//! `NotRunning` means nobody answers on the socket, so the CLI may open the store itself.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no daemon is listening on {0}")]
    NotRunning(String),
    /// The API refused the request; `body` is its error text (what was wrong), the same
    /// words the in-process call gives.
    #[error("{body}")]
    Http { status: u16, body: String },
    #[error("talking to the daemon failed: {0}")]
    Io(String),
}

/// Longest wait for a read's answer: past the daemon's own `request_timeout` (30 s by
/// default), a daemon that accepted and does not answer is stopped or wedged.
pub const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(90);

/// Longest wait for a change's answer: the daemon carries a change out whatever the time (a
/// bulk "create" waits on the tracker for each show), so this only ends a wait on a daemon
/// that will never answer.
pub const CHANGE_WAIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// One request to the daemon; returns the body of a 2xx answer. Bounded: [`READ_WAIT`] for a
/// GET, [`CHANGE_WAIT`] for a change, so a stopped (SIGSTOP) or wedged daemon that accepted
/// the connection cannot hang a script for ever.
pub async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Vec<u8>, ClientError> {
    let wait = if method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD") {
        READ_WAIT
    } else {
        CHANGE_WAIT
    };
    request_within(socket, method, path, body, wait).await
}

/// [`request`] with its own bound on the whole exchange.
pub async fn request_within(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    wait: std::time::Duration,
) -> Result<Vec<u8>, ClientError> {
    match tokio::time::timeout(wait, exchange(socket, method, path, body)).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Io(format!(
            "{}: the daemon accepted the connection but did not answer within {} s (stopped or stuck?)",
            socket.display(),
            wait.as_secs()
        ))),
    }
}

async fn exchange(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Vec<u8>, ClientError> {
    let stream = match tokio::net::UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning(socket.display().to_string()));
        }
        Err(e) => return Err(ClientError::Io(format!("{}: {e}", socket.display()))),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Io(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "plexsync")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| ClientError::Io(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Io(e.to_string()))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Io(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        let msg = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        return Err(ClientError::Http {
            status: status.as_u16(),
            body: msg,
        });
    }
    Ok(bytes.to_vec())
}
