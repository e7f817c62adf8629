//! systemd's service notification protocol (`sd_notify(3)`), by hand: `READY=1`, `STATUS=`,
//! `WATCHDOG=1` and `STOPPING=1` datagrams to `$NOTIFY_SOCKET` (a path, or an abstract-namespace
//! name starting with `@`), and [`supervise`], the loop that pings the watchdog only while the
//! daemon reports itself healthy and keeps the status line current.
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd, or `Type=` other than `notify`) every call
//! is a no-op. A notification that cannot be sent is logged and otherwise ignored: systemd
//! notices a missing `READY=1` or watchdog ping by itself.

use std::ffi::OsStr;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::PollConfig;
use crate::state::Shared;

/// Longest `STATUS=` text sent; error messages can be long and systemd shows one line.
const MAX_STATUS_CHARS: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET {addr:?}: {reason}")]
    Address { addr: String, reason: String },
    #[error("cannot create a datagram socket: {0}")]
    Socket(std::io::Error),
    #[error("WATCHDOG_USEC {0:?} is not a positive number of microseconds")]
    WatchdogUsec(String),
    #[error("WATCHDOG_PID {0:?} is not a process id")]
    WatchdogPid(String),
}

struct Target {
    sock: UnixDatagram,
    addr: SocketAddr,
}

/// Sends notifications to the service manager, if there is one.
pub struct Notifier {
    target: Option<Target>,
    /// `WATCHDOG_USEC`, when the watchdog is enabled for this process.
    watchdog: Option<Duration>,
    /// A failed send is logged once, not on every watchdog tick.
    send_failed: AtomicBool,
    /// The last `STATUS=` sent: an unchanged line is not sent again.
    last_status: Mutex<String>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("enabled", &self.target.is_some())
            .field("watchdog", &self.watchdog)
            .finish()
    }
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
            send_failed: AtomicBool::new(false),
            last_status: Mutex::new(String::new()),
        }
    }

    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`. A malformed variable is
    /// logged and disables only what it configures.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let target = match connect(socket.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "systemd notifications disabled");
                None
            }
        };
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        let watchdog = match watchdog_timeout(usec.as_deref(), pid.as_deref(), std::process::id()) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "systemd watchdog disabled");
                None
            }
        };
        Notifier {
            target,
            // Pings without a socket to send them to would be pointless.
            watchdog: watchdog.filter(|_| socket.is_some()),
            send_failed: AtomicBool::new(false),
            last_status: Mutex::new(String::new()),
        }
    }

    /// Notifications to the socket at `addr` (a path, or `@name`: what `$NOTIFY_SOCKET` holds),
    /// with watchdog pings every half `watchdog` when given: a service manager stand-in, for
    /// a daemon run in process.
    pub fn to_socket(addr: &OsStr, watchdog: Option<Duration>) -> Result<Notifier, NotifyError> {
        Ok(Notifier {
            target: connect(Some(addr))?,
            watchdog,
            send_failed: AtomicBool::new(false),
            last_status: Mutex::new(String::new()),
        })
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to ping the watchdog: half its timeout, as `sd_watchdog_enabled(3)` advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// Start-up is complete.
    pub fn ready(&self, status: &str) {
        let line = one_line(status);
        self.send(&format!("READY=1\nSTATUS={line}"));
        self.remember(line);
    }

    /// A line a person reads in `systemctl status`; sent only when it changed.
    pub fn status(&self, status: &str) {
        let line = one_line(status);
        let unchanged = self.last_status.lock().is_ok_and(|last| *last == line);
        if !unchanged {
            self.send(&format!("STATUS={line}"));
            self.remember(line);
        }
    }

    fn remember(&self, line: String) {
        if let Ok(mut last) = self.last_status.lock() {
            *last = line;
        }
    }

    /// The daemon is alive and well.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send("WATCHDOG=1");
        }
    }

    /// Shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: finishing in-flight work");
    }

    fn send(&self, msg: &str) {
        let Some(t) = &self.target else { return };
        match t.sock.send_to_addr(msg.as_bytes(), &t.addr) {
            Ok(_) => {
                if self.send_failed.swap(false, Ordering::Relaxed) {
                    tracing::info!("systemd notifications are delivered again");
                }
            }
            Err(e) => {
                if !self.send_failed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot notify systemd");
                }
            }
        }
    }
}

/// `STATUS=` takes one line; newlines would start new assignments.
fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_STATUS_CHARS)
        .collect();
    if s.chars().count() > MAX_STATUS_CHARS {
        out.push('…');
    }
    out
}

/// The socket and address for `$NOTIFY_SOCKET`; `None` when unset or empty.
fn connect(var: Option<&OsStr>) -> Result<Option<Target>, NotifyError> {
    let Some(var) = var.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let addr = address(var)?;
    let sock = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
    // A full receive queue must not stall the daemon; the message is dropped instead.
    sock.set_nonblocking(true).map_err(NotifyError::Socket)?;
    Ok(Some(Target { sock, addr }))
}

/// A filesystem path, or `@name` for Linux's abstract namespace.
fn address(var: &OsStr) -> Result<SocketAddr, NotifyError> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = var.as_bytes();
    let bad = |reason: String| NotifyError::Address {
        addr: var.to_string_lossy().into_owned(),
        reason,
    };
    match bytes.first() {
        Some(b'/') => {
            SocketAddr::from_pathname(std::path::Path::new(var)).map_err(|e| bad(e.to_string()))
        }
        Some(b'@') => abstract_address(&bytes[1..]).map_err(bad),
        _ => Err(bad(
            "neither an absolute path nor an @abstract socket name".into()
        )),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_address(name: &[u8]) -> Result<SocketAddr, String> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name).map_err(|e| e.to_string())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_address(_name: &[u8]) -> Result<SocketAddr, String> {
    Err("abstract socket names exist only on Linux".into())
}

/// The watchdog timeout for this process: `WATCHDOG_USEC`, unless `WATCHDOG_PID` names
/// another process (the variables leaked from a parent).
fn watchdog_timeout(
    usec: Option<&str>,
    pid: Option<&str>,
    my_pid: u32,
) -> Result<Option<Duration>, NotifyError> {
    let Some(usec) = usec.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    if let Some(pid) = pid.filter(|p| !p.is_empty()) {
        let pid: u32 = pid
            .trim()
            .parse()
            .map_err(|_| NotifyError::WatchdogPid(pid.to_string()))?;
        if pid != my_pid {
            return Ok(None);
        }
    }
    match usec.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(Duration::from_micros(n))),
        _ => Err(NotifyError::WatchdogUsec(usec.to_string())),
    }
}

/// How often the status line is refreshed when there is no watchdog to pace it.
const STATUS_REFRESH: Duration = Duration::from_secs(10);

/// Runs until dropped: pings the watchdog while `healthy()` holds and sends `status()`
/// whenever it changes. (SIGHUP belongs to the daemon's reload task.)
pub async fn supervise(
    notifier: &Notifier,
    healthy: impl Fn() -> bool,
    status: impl Fn() -> String,
) {
    let period = notifier
        .watchdog_interval()
        .unwrap_or(STATUS_REFRESH)
        .max(Duration::from_millis(10));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_healthy = true;
    loop {
        ticks.tick().await;
        if !notifier.enabled() {
            continue;
        }
        let ok = healthy();
        let text = if ok {
            notifier.watchdog();
            status()
        } else {
            "unhealthy: a pipeline task or the HTTP server has stopped; watchdog pings withheld"
                .to_string()
        };
        if ok != was_healthy {
            if ok {
                tracing::info!("healthy again; watchdog pings resume");
            } else {
                tracing::error!(
                    "a pipeline task or the HTTP server has stopped; withholding watchdog pings so systemd restarts the service"
                );
            }
            was_healthy = ok;
        }
        notifier.status(&text);
    }
}

/// The daemon's state in one line for `systemctl status`: "listening on 127.0.0.1:8750,
/// 2 matchers, polling every 5 min", then what is wrong, if anything.
pub fn status_line(shared: &Shared) -> String {
    let cfg = shared.config();
    let matchers = shared.plugins().matchers.len();
    let mut line = format!(
        "listening on {}, {} matcher{}, {}",
        shared.listen_addr,
        matchers,
        if matchers == 1 { "" } else { "s" },
        polling(&cfg.poll)
    );
    let st = shared.status();
    if let Some(e) = &st.tracker_error {
        line.push_str(&format!("; tracker unreachable: {e}"));
    }
    if st.plex_token_rejected {
        line.push_str("; Plex token rejected");
    } else if let Some(e) = &st.plex_error {
        line.push_str(&format!("; {e}"));
    }
    line
}

/// "polling every 5 min" for the common cron shapes, else the expression itself.
fn polling(poll: &PollConfig) -> String {
    if !poll.enabled {
        return "polling off".into();
    }
    let f: Vec<&str> = poll.schedule.split_whitespace().collect();
    let every = |field: &str| {
        field
            .strip_prefix("*/")
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n > 0)
    };
    let fixed = |field: &str| field.parse::<u32>().is_ok();
    let rest_any = |from: usize| f[from..].iter().all(|x| *x == "*");
    if f.len() == 6 {
        if let Some(n) = every(f[0]).filter(|_| rest_any(1)) {
            return format!("polling every {n} s");
        }
        if fixed(f[0]) && rest_any(2) {
            if let Some(n) = every(f[1]) {
                return format!("polling every {n} min");
            }
            if f[1] == "*" {
                return "polling every minute".into();
            }
        }
        if fixed(f[0]) && fixed(f[1]) && rest_any(3) {
            if let Some(n) = every(f[2]) {
                return format!("polling every {n} h");
            }
            if f[2] == "*" {
                return "polling hourly".into();
            }
        }
    }
    format!("polling on `{}` (UTC)", poll.schedule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn receiver() -> (tempfile::TempDir, UnixDatagram, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (dir, sock, path)
    }

    fn recv_text(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn notifier(socket: &OsStr, watchdog: Option<Duration>) -> Notifier {
        Notifier {
            target: connect(Some(socket)).unwrap(),
            watchdog,
            send_failed: AtomicBool::new(false),
            last_status: Mutex::new(String::new()),
        }
    }

    #[test]
    fn sends_the_protocol_lines_to_a_path_socket() {
        let (_dir, rx, path) = receiver();
        let n = notifier(path.as_os_str(), Some(Duration::from_secs(2)));
        n.ready("listening on x\nand more");
        assert_eq!(recv_text(&rx), "READY=1\nSTATUS=listening on x and more");
        n.status("listening on x and more");
        n.status("tracker unreachable: refused");
        assert_eq!(recv_text(&rx), "STATUS=tracker unreachable: refused");
        n.watchdog();
        assert_eq!(recv_text(&rx), "WATCHDOG=1");
        n.stopping();
        assert!(recv_text(&rx).starts_with("STOPPING=1\n"));
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(1)));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_namespace_sockets_work() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("plexsync-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = notifier(OsStr::new(&format!("@{name}")), None);
        n.ready("up");
        assert_eq!(recv_text(&rx), "READY=1\nSTATUS=up");
    }

    #[test]
    fn no_socket_means_no_op_and_bad_addresses_are_errors() {
        assert!(connect(None).unwrap().is_none());
        assert!(connect(Some(OsStr::new(""))).unwrap().is_none());
        let e = connect(Some(OsStr::new("relative/path"))).err().unwrap();
        assert!(e.to_string().contains("relative/path"), "{e}");
        let long = format!("/{}", "x".repeat(200));
        assert!(connect(Some(OsStr::new(&long))).is_err());
        // Disabled: every call returns quietly.
        let n = Notifier::disabled();
        n.ready("x");
        n.watchdog();
        n.stopping();
        assert!(!n.enabled());
        assert_eq!(n.watchdog_interval(), None);
    }

    #[test]
    fn a_missing_receiver_is_not_an_error_for_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let n = notifier(dir.path().join("gone.sock").as_os_str(), None);
        n.ready("x");
        assert!(n.send_failed.load(Ordering::Relaxed));
    }

    #[test]
    fn watchdog_variables() {
        let me = 4242;
        assert_eq!(watchdog_timeout(None, None, me).unwrap(), None);
        assert_eq!(
            watchdog_timeout(Some("3000000"), None, me).unwrap(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            watchdog_timeout(Some("3000000"), Some("4242"), me).unwrap(),
            Some(Duration::from_secs(3))
        );
        // Meant for another process: not ours to ping.
        assert_eq!(
            watchdog_timeout(Some("3000000"), Some("1"), me).unwrap(),
            None
        );
        assert!(matches!(
            watchdog_timeout(Some("0"), None, me),
            Err(NotifyError::WatchdogUsec(_))
        ));
        assert!(matches!(
            watchdog_timeout(Some("soon"), None, me),
            Err(NotifyError::WatchdogUsec(_))
        ));
        assert!(matches!(
            watchdog_timeout(Some("1000"), Some("me"), me),
            Err(NotifyError::WatchdogPid(_))
        ));
    }

    #[test]
    fn long_status_is_cut() {
        let s = one_line(&"e".repeat(1000));
        assert_eq!(s.chars().count(), MAX_STATUS_CHARS + 1);
        assert!(s.ends_with('…'));
    }

    fn poll(enabled: bool, schedule: &str) -> PollConfig {
        PollConfig {
            enabled,
            schedule: schedule.into(),
            ..PollConfig::default()
        }
    }

    #[test]
    fn schedules_in_words() {
        assert_eq!(polling(&poll(true, "0 */5 * * * *")), "polling every 5 min");
        assert_eq!(polling(&poll(true, "*/30 * * * * *")), "polling every 30 s");
        assert_eq!(polling(&poll(true, "0 * * * * *")), "polling every minute");
        assert_eq!(polling(&poll(true, "0 0 */2 * * *")), "polling every 2 h");
        assert_eq!(polling(&poll(true, "0 15 * * * *")), "polling hourly");
        assert_eq!(
            polling(&poll(true, "0 0 3 * * Mon")),
            "polling on `0 0 3 * * Mon` (UTC)"
        );
        assert_eq!(polling(&poll(false, "0 */5 * * * *")), "polling off");
    }

    #[tokio::test]
    async fn supervise_pings_only_while_healthy() {
        let (_dir, rx, path) = receiver();
        let n = notifier(path.as_os_str(), Some(Duration::from_millis(100)));
        let healthy = AtomicBool::new(true);
        let seen = tokio::task::spawn_blocking(move || {
            let mut seen = Vec::new();
            let until = Instant::now() + Duration::from_secs(3);
            rx.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = [0u8; 4096];
            while Instant::now() < until {
                if let Ok(n) = rx.recv(&mut buf) {
                    seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
            seen
        });
        let run = supervise(
            &n,
            || healthy.load(Ordering::SeqCst),
            || "all fine".to_string(),
        );
        let flip = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            healthy.store(false, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2800)).await;
        };
        tokio::select! {
            _ = run => unreachable!("supervise runs forever"),
            _ = flip => {}
        }
        let seen = seen.await.unwrap();
        let unhealthy_at = seen
            .iter()
            .position(|m| m.starts_with("STATUS=unhealthy"))
            .unwrap_or_else(|| panic!("no unhealthy status in {seen:?}"));
        assert!(seen[..unhealthy_at].iter().any(|m| m == "WATCHDOG=1"));
        assert!(seen[..unhealthy_at].iter().any(|m| m == "STATUS=all fine"));
        // Status lines are sent on change only, and no ping follows the failure.
        assert_eq!(
            seen.iter().filter(|m| *m == "STATUS=all fine").count(),
            1,
            "{seen:?}"
        );
        assert!(
            !seen[unhealthy_at..].iter().any(|m| m == "WATCHDOG=1"),
            "{seen:?}"
        );
    }
}
