//! Bounded connections and memory against the real binary, started as systemd would (soft
//! RLIMIT_NOFILE 1024): a flood of idle connections (from several loopback addresses, some
//! keep-alive) never locks out `/healthz` or a Plex webhook; the per-client and global caps
//! hold; thousands of unfinished 60 KB request heads keep the daemon's RSS bounded; running out
//! of descriptors is survived (one rate-limited warning); stalled login bodies holding every
//! slot are cut off by their own deadline; the daemon stays healthy and stops cleanly. Every wait is for a condition, never for a fixed time.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::daemon::{self, Daemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// The two tests each open over a thousand connections: one at a time, so that neither's
/// one-second answers compete with the other's flood on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The soft limit systemd gives services by default.
const SYSTEMD_SOFT_NOFILE: u64 = 1024;

/// Raise this test process's soft RLIMIT_NOFILE to its hard limit (it holds thousands of
/// sockets); returns the hard limit.
fn raise_own_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    r.rlim_cur = r.rlim_max;
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0);
    r.rlim_max
}

fn config() -> String {
    daemon::config(
        &support::dead_url(),
        &support::dead_url(),
        "[poll]\nenabled = false\n",
    )
    // No rate limit: this test is about connections, not requests. A long header timeout, so
    // that only the caps close the idle connections, however slow the machine.
    .replace(
        "[server]\n",
        "[server]\nwebhook_rate_limit = 0\nadmin_rate_limit = 0\nheader_timeout = \"300s\"\n",
    )
}

async fn connect_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((src, 0)))?;
    s.connect(to).await
}

fn vm_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Idle connections held open by the test; each task counts itself out when the daemon closes
/// its connection.
struct Flood {
    open: Arc<AtomicUsize>,
    by_source: Vec<(Ipv4Addr, Arc<AtomicUsize>)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Flood {
    /// `per_source` connections from each of `sources`; every `keepalive_every`-th one first
    /// completes a request and then idles as a keep-alive connection, the others send nothing
    /// (a connection that has not finished its headers).
    async fn open(
        to: SocketAddr,
        sources: &[Ipv4Addr],
        per_source: usize,
        keepalive_every: usize,
    ) -> Flood {
        let open = Arc::new(AtomicUsize::new(0));
        let mut by_source = Vec::new();
        let mut tasks = Vec::new();
        for &src in sources {
            let mine = Arc::new(AtomicUsize::new(0));
            by_source.push((src, mine.clone()));
            for i in 0..per_source {
                let mut s = connect_from(src, to)
                    .await
                    .unwrap_or_else(|e| panic!("connect from {src}: {e}"));
                open.fetch_add(1, Ordering::SeqCst);
                mine.fetch_add(1, Ordering::SeqCst);
                let (open, mine) = (open.clone(), mine.clone());
                let keepalive = i % keepalive_every == 0;
                tasks.push(tokio::spawn(async move {
                    if keepalive {
                        let _ = s
                            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                            .await;
                    }
                    // Read (the keep-alive answer) until the daemon closes the connection.
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                    mine.fetch_sub(1, Ordering::SeqCst);
                }));
            }
        }
        Flood {
            open,
            by_source,
            tasks,
        }
    }

    fn open_now(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn max_from_one_source(&self) -> usize {
        self.by_source
            .iter()
            .map(|(_, n)| n.load(Ordering::SeqCst))
            .max()
            .unwrap_or(0)
    }

    /// Close every connection still open (dropping the sockets).
    fn close(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// `n` loopback addresses 127.0.`third`.1…n (never 127.0.0.1, which /healthz comes from).
fn sources(third: u8, n: u8) -> Vec<Ipv4Addr> {
    (1..=n).map(|i| Ipv4Addr::new(127, 0, third, i)).collect()
}

/// GET /healthz on a new connection from 127.0.0.1: (status, how long it took).
async fn healthz(addr: &str) -> (u16, Duration) {
    let t = Instant::now();
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .expect("the daemon answers /healthz");
    (r.status().as_u16(), t.elapsed())
}

/// A real Plex webhook on a new connection: (status, how long it took); None without samples.
async fn webhook(url: &str) -> Option<(u16, Duration)> {
    support::samples()?;
    let t = Instant::now();
    let status = support::post_sample(url, support::NEW_AGENT_SCROBBLE).await;
    Some((status, t.elapsed()))
}

async fn assert_served_within_a_second(d: &Daemon, when: &str) {
    let (status, took) = healthz(&d.addr).await;
    assert_eq!(status, 200, "/healthz {when}");
    assert!(
        took < Duration::from_secs(1),
        "/healthz {when} took {took:?}"
    );
    if let Some((status, took)) = webhook(&d.webhook_url).await {
        assert_eq!(status, 200, "webhook {when}\n{}", d.log());
        assert!(
            took < Duration::from_secs(1),
            "webhook {when} took {took:?}"
        );
    }
    eprintln!("{when}: /healthz and a webhook answered 200 ({took:?} for the webhook)");
}

/// Send `head` (a whole request head) on a new connection; the answer's status code.
async fn status_of(to: SocketAddr, head: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(to).await.ok()?;
    s.write_all(head).await.ok()?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    std::str::from_utf8(answer.get(9..12)?).ok()?.parse().ok()
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// A warning rate-limited to one per 10 s appeared, and no more often than that over `since`.
fn assert_rate_limited(log: &str, needle: &str, since: Instant) {
    let n = count(log, needle);
    let allowed = 1 + since.elapsed().as_secs() as usize / 10;
    assert!(
        (1..=allowed).contains(&n),
        "{n} \"{needle}\" warnings in {:?}:\n{log}",
        since.elapsed()
    );
}

/// What became of a client that sent an unfinished 60 KB request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loris {
    /// Answered 431 once its head passed the 16 KiB buffer.
    TooLarge,
    /// Closed without an answer: evicted to make room (or cut by the header timeout).
    Closed,
    /// Something else came back.
    Other,
    /// Sent all 60 KB and was never cut off.
    Unfinished,
}

/// Connect from `src`, send a 12 KiB head start at once, then dribble the rest of a 60 KB
/// header 1 KiB at a time; stop at the daemon's answer or close. Bounded: 48 rounds.
async fn loris(src: Ipv4Addr, to: SocketAddr, connects: Arc<tokio::sync::Semaphore>) -> Loris {
    let permit = connects.acquire_owned().await;
    let Ok(mut s) = connect_from(src, to).await else {
        return Loris::Closed;
    };
    drop(permit);
    let mut head = b"POST /webhook/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ".to_vec();
    head.resize(12 * 1024, b'a');
    if s.write_all(&head).await.is_err() {
        return Loris::Closed;
    }
    let mut buf = [0u8; 256];
    for _ in 0..48 {
        // Pacing, not synchronisation: the daemon's answer (or close) ends the loop early.
        match tokio::time::timeout(Duration::from_millis(250), s.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => return Loris::Closed,
            Ok(Ok(n)) if buf[..n].starts_with(b"HTTP/1.1 431") => return Loris::TooLarge,
            Ok(Ok(_)) => return Loris::Other,
        }
        if s.write_all(&[b'a'; 1024]).await.is_err() {
            return Loris::Closed;
        }
    }
    Loris::Unfinished
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_floods_and_unfinished_heads_never_lock_out_healthz_or_a_webhook() {
    let _serial = SERIAL.lock().await;
    plexsync::daemon::install_tls_provider();
    let hard = raise_own_nofile();
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let mut d =
        Daemon::start_with_nofile(dir.path(), &config(), Some((SYSTEMD_SOFT_NOFILE, hard))).await;
    let pid = d.pid().expect("running");
    let to: SocketAddr = d.addr.parse().unwrap();
    // The daemon raised its soft limit to the hard one, and says so.
    assert!(
        d.log()
            .contains("raised the open-file limit (RLIMIT_NOFILE)")
            || hard <= SYSTEMD_SOFT_NOFILE,
        "{}",
        d.log()
    );
    let base_rss = vm_rss_kb(pid).unwrap();

    // The request head buffer is 16 KiB: a 15,000-byte header is served, 17 KiB is 431.
    for (pad, expect) in [(15_000, 200), (17 * 1024, 431)] {
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(pad)
        );
        assert_eq!(
            status_of(to, head.as_bytes()).await,
            Some(expect),
            "{pad} B"
        );
    }

    // 1,100 idle connections from five addresses (220 each, 1 in 10 keep-alive): the per-client
    // cap (128) and then the global cap (512) close the oldest idle ones.
    let flood = Flood::open(to, &sources(3, 5), 220, 10).await;
    support::eventually(
        "the caps to close the surplus idle connections",
        Duration::from_secs(30),
        || (flood.open_now() == 512 && flood.max_from_one_source() <= 128).then_some(()),
    )
    .await;
    let fds = open_fds(pid);
    eprintln!("1,100 idle connections: 512 stay open; the daemon holds {fds} descriptors");
    assert!(fds < SYSTEMD_SOFT_NOFILE as usize, "{fds} descriptors");
    assert_served_within_a_second(&d, "during an idle flood of 1,100").await;
    assert_eq!(count(&d.log(), "Too many open files"), 0, "{}", d.log());
    // Eviction warnings are rate-limited: one per 10 s, not one per closed connection.
    assert_rate_limited(&d.log(), "connection limit reached", t0);
    flood.close();
    support::eventually(
        "the daemon to close the flood's connections",
        Duration::from_secs(30),
        || (open_fds(pid) < 64).then_some(()),
    )
    .await;

    // 3,000 clients sending unfinished 60 KB heads from 30 addresses (100 each: the global
    // cap does the work). Sample the daemon's RSS until every client is done.
    let idle_rss = vm_rss_kb(pid).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let (mut peak_rss, mut peak_fds) = (0u64, 0usize);
            while !done.load(Ordering::SeqCst) {
                peak_rss = peak_rss.max(vm_rss_kb(pid).unwrap_or(0));
                peak_fds = peak_fds.max(open_fds(pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (peak_rss, peak_fds)
        })
    };
    let connects = Arc::new(tokio::sync::Semaphore::new(64));
    let srcs = sources(1, 30);
    let started = Instant::now();
    let clients: Vec<JoinHandle<Loris>> = (0..3000)
        .map(|i| tokio::spawn(loris(srcs[i % srcs.len()], to, connects.clone())))
        .collect();
    let mut outcomes = std::collections::BTreeMap::new();
    for c in clients {
        *outcomes
            .entry(format!("{:?}", c.await.unwrap()))
            .or_insert(0usize) += 1;
    }
    done.store(true, Ordering::SeqCst);
    let (peak_rss, peak_fds) = sampler.await.unwrap();
    eprintln!(
        "3,000 unfinished 60 KB heads in {:?}: {outcomes:?}; RSS {base_rss} kB at start, \
         {idle_rss} kB before, peak {peak_rss} kB; peak {peak_fds} descriptors",
        started.elapsed()
    );
    assert!(
        peak_rss < 160 * 1024,
        "RSS peaked at {peak_rss} kB (limit 160 MB)"
    );
    assert_eq!(outcomes.get("Unfinished"), None, "every head is cut off");
    assert_eq!(outcomes.get("Other"), None, "{outcomes:?}");

    // Healthy afterwards, no panic, and a clean stop.
    assert_served_within_a_second(&d, "after 3,000 unfinished heads").await;
    let log = d.log();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(count(&log, "Too many open files"), 0, "{log}");
    assert_eq!(d.stop(), Some(0), "{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_follows_a_descriptor_limit_that_cannot_be_raised_or_is_lowered() {
    let _serial = SERIAL.lock().await;
    plexsync::daemon::install_tls_provider();
    raise_own_nofile();
    let dir = tempfile::tempdir().unwrap();
    // Caps above what 1024 descriptors allow; the hard limit leaves nothing to raise.
    let cfg = config().replace(
        "[server]\n",
        "[server]\nmax_connections = 4096\nmax_connections_per_client = 4096\n",
    );
    let t0 = Instant::now();
    let mut d = Daemon::start_with_nofile(
        dir.path(),
        &cfg,
        Some((SYSTEMD_SOFT_NOFILE, SYSTEMD_SOFT_NOFILE)),
    )
    .await;
    let pid = d.pid().expect("running");
    let to: SocketAddr = d.addr.parse().unwrap();
    let log = d.log();
    assert!(log.contains("already at the hard limit"), "{log}");
    assert!(log.contains("capping at `open`"), "{log}");

    // 1,024 descriptors less the 128 kept for everything else: 896 connections.
    let flood = Flood::open(to, &sources(2, 5), 220, 10).await;
    support::eventually(
        "the fd-derived cap to close the surplus",
        Duration::from_secs(30),
        || (flood.open_now() == 896).then_some(()),
    )
    .await;
    assert_served_within_a_second(&d, "at the fd-derived cap").await;
    assert_eq!(count(&d.log(), "accept failed"), 0, "{}", d.log());

    assert_rate_limited(&d.log(), "connection limit reached", t0);
    flood.close();
    support::eventually(
        "the daemon to close the flood's connections",
        Duration::from_secs(30),
        || (open_fds(pid) < 64).then_some(()),
    )
    .await;

    // Running out of descriptors: 600 idle connections (under the cap: nothing is evicted, so
    // the daemon's descriptors are numbered densely from 0), then the soft limit is lowered to
    // 256 under the daemon's feet. The next accept fails with EMFILE (the kernel hands out the
    // lowest free number, and none is below 256); the daemon sheds idle connections down to
    // what 256 leaves room for, pauses briefly and serves the waiting connection. One warning.
    let flood = Flood::open(to, &sources(4, 5), 120, 10).await;
    support::eventually(
        "the daemon to hold the 600 connections",
        Duration::from_secs(30),
        || (open_fds(pid) >= 600).then_some(()),
    )
    .await;
    let r = libc::rlimit {
        rlim_cur: 256,
        rlim_max: SYSTEMD_SOFT_NOFILE as libc::rlim_t,
    };
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &r,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let lowered = Instant::now();
    for _ in 0..3 {
        assert_served_within_a_second(&d, "after the limit was lowered to 256").await;
    }
    support::eventually("the surplus to be shed", Duration::from_secs(30), || {
        (flood.open_now() < 256 - 128).then_some(())
    })
    .await;
    let log = d.log();
    assert_rate_limited(&log, "accept failed", lowered);
    assert!(log.contains("Too many open files"), "{log}");
    eprintln!(
        "soft limit lowered to 256 with {} descriptors open: {} idle connections left",
        600,
        flood.open_now()
    );
    assert!(!log.contains("panicked"), "{log}");
    // SIGTERM with idle connections still open (header timeout 300 s): they are closed at
    // once, and the daemon stops within its deadline.
    assert!(flood.open_now() > 0);
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    let log = d.log();
    assert!(!log.contains("did not stop within"), "{log}");
    support::eventually(
        "the flood to see its connections closed",
        Duration::from_secs(30),
        || (flood.open_now() == 0).then_some(()),
    )
    .await;
    flood.close();
}

/// A client that sends a whole login head with `Expect: 100-continue`, waits for the daemon to
/// start reading the body (its `100 Continue`: the request is in progress from then on), sends
/// one byte of the 8000 it declared and stalls. Returns what the daemon answered at last.
async fn slow_login(to: SocketAddr, started: Arc<tokio::sync::Barrier>) -> String {
    let mut s = TcpStream::connect(to).await.expect("connect");
    let head = format!(
        "POST /api/login HTTP/1.1\r\nHost: {to}\r\nOrigin: http://{to}\r\n\
         Content-Type: application/json\r\nContent-Length: 8000\r\nExpect: 100-continue\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("send the head");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap_or(0);
        assert!(n > 0, "closed before 100 Continue");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    s.write_all(b"{").await.expect("send one byte");
    started.wait().await;
    answer.clear();
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_login_bodies_do_not_hold_every_connection() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config().replace(
        "[server]\n",
        "[server]\nmax_connections = 16\nmax_connections_per_client = 16\n",
    );
    let d = Daemon::start(dir.path(), &cfg).await;
    let to: SocketAddr = d.addr.parse().unwrap();
    // Every slot holds a login whose body the daemon is waiting for.
    let started = Arc::new(tokio::sync::Barrier::new(17));
    let tasks: Vec<JoinHandle<String>> = (0..16)
        .map(|_| tokio::spawn(slow_login(to, started.clone())))
        .collect();
    started.wait().await;
    let t = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    assert_eq!(
        status_of(to, head).await,
        Some(503),
        "every connection has a request in progress\n{}",
        d.log()
    );
    // The old code held them for the whole request_timeout (30 s).
    let within = Duration::from_secs(15);
    loop {
        if status_of(to, head).await == Some(200) {
            break;
        }
        assert!(
            t.elapsed() < within,
            "/healthz still refused after {within:?}\n{}",
            d.log()
        );
        // Pacing between attempts, not synchronisation.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("/healthz got through after {:?}", t.elapsed());
    for task in tasks {
        let answer = task.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    assert!(d.log().contains("login body too slow"), "{}", d.log());
}
