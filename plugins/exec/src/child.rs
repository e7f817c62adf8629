//! One running instance of the external program: spawning it, reading its hello, and the four
//! tasks that serve it — a writer (requests and catalogue to stdin), a reader (replies from
//! stdout, routed by id to the waiting requests), a stderr forwarder (lines to the log) and a
//! supervisor that owns the process, kills it when asked or when the plugin is dropped, and
//! reaps it. A failed start says why, with what the program wrote to stderr before it.
//!
//! The program leads a process group of its own and every stop signals the whole group: a
//! wrapper (`./run.sh` without `exec`, `uv run`, `bash wrapper.sh`) makes the real matcher a
//! grandchild, which would otherwise outlive a kill, keep our pipes open and leak one copy
//! per restart.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use plexsync_plugin_api::Catalogue;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};

use crate::config::ExecConfig;
use crate::protocol::{
    self, Hello, Incoming, LineRead, MAX_LINE, MAX_STDERR_LINE, PROTOCOL, Reply, read_line_capped,
};

/// Environment variable telling the program which protocol version the plugin speaks.
pub const PROTOCOL_ENV: &str = "PLEXSYNC_MATCHER_PROTOCOL";
/// Lines waiting for the writer. When the program stops reading, requests fail fast as
/// "busy" instead of piling up in memory.
const QUEUE: usize = 256;
/// This many timeouts in a row mean the program hangs: it is killed and later restarted.
pub const HANG_TIMEOUTS: u32 = 3;
/// How long a program whose stdin was closed (the plugin was dropped or the probe is done)
/// may take to exit on its own before it is killed.
const GRACE: Duration = Duration::from_millis(500);
/// How long the program's group has between SIGTERM and SIGKILL when it is stopped.
const TERM_GRACE: Duration = Duration::from_millis(500);
/// How long, after the program exited, its stdout may take to deliver what is left in it.
const DRAIN: Duration = Duration::from_millis(200);
/// How much of what a program wrote to stderr before its hello a failed start quotes.
const START_STDERR: usize = 2048;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent across a panic (single inserts and removals).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The catalogue shared by the plugin and its writer tasks, with a generation number so a
/// writer knows whether its program has seen the newest one.
#[derive(Default)]
pub struct CatalogueSlot {
    inner: Mutex<(u64, Arc<Catalogue>)>,
}

impl CatalogueSlot {
    /// Store a new catalogue; returns false (and keeps the generation) when it is the same as
    /// the current one, so a periodic refresh that changed nothing is not resent to the
    /// program (a large catalogue is megabytes of JSON).
    pub fn set(&self, catalogue: Arc<Catalogue>) -> bool {
        let mut g = lock(&self.inner);
        if g.0 > 0 && (Arc::ptr_eq(&g.1, &catalogue) || *g.1 == *catalogue) {
            return false;
        }
        g.0 += 1;
        g.1 = catalogue;
        true
    }
    pub fn current(&self) -> Arc<Catalogue> {
        lock(&self.inner).1.clone()
    }
    fn newer_than(&self, generation: u64) -> Option<(u64, Arc<Catalogue>)> {
        let g = lock(&self.inner);
        (g.0 > generation).then(|| (g.0, g.1.clone()))
    }
}

enum Outgoing {
    Line(Vec<u8>),
    /// The catalogue changed: send it now rather than before the next request.
    Catalogue,
}

/// Requests waiting for their reply. Once `closed` (the program is gone) nothing new waits.
#[derive(Default)]
struct Pending {
    closed: bool,
    map: HashMap<u64, oneshot::Sender<Reply>>,
}

/// Liveness shared by the tasks of one program instance.
#[derive(Default)]
struct Life {
    dead: AtomicBool,
    died_at: Mutex<Option<Instant>>,
}

/// Declare the instance gone and fail every waiting request (their receivers see the
/// senders dropped). Dead first, so a request failing here already sees the instance dead.
fn shut(life: &Life, pending: &Mutex<Pending>) {
    if !life.dead.swap(true, Ordering::SeqCst) {
        *lock(&life.died_at) = Some(Instant::now());
    }
    let mut p = lock(pending);
    p.closed = true;
    p.map.clear();
}

/// The program's process group (its pgid is the program's pid: it was started as a group
/// leader). Dropping it SIGKILLs the group, so nothing the program started outlives it
/// however its owner ends, a runtime shutting down included.
struct Group(libc::pid_t);

impl Group {
    fn of(child: &tokio::process::Child) -> Option<Group> {
        // id() is None only once the child has been reaped; right after spawn it is known.
        child
            .id()
            .and_then(|pid| libc::pid_t::try_from(pid).ok())
            .map(Group)
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: killpg only sends a signal and touches no memory. An empty group answers
        // ESRCH, which is what "already gone" means here. The pgid cannot name someone
        // else's group while any member lives (the kernel keeps the number in use); once
        // the group is empty, reuse would need the pid space to wrap in between.
        unsafe {
            libc::killpg(self.0, signal);
        }
    }

    /// SIGTERM to the group, up to `TERM_GRACE` for the program to exit, then SIGKILL for
    /// whatever is left (a grandchild ignoring SIGTERM too); the program is reaped.
    async fn stop(
        &self,
        child: &mut tokio::process::Child,
    ) -> std::io::Result<std::process::ExitStatus> {
        self.signal(libc::SIGTERM);
        let status = match tokio::time::timeout(TERM_GRACE, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                self.signal(libc::SIGKILL);
                child.wait().await
            }
        };
        self.signal(libc::SIGKILL);
        status
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    Timeout { killed: bool },
    Gone,
    Busy,
}

/// A running program. Dropping it closes the program's stdin and stops it (killing it after
/// a grace period); the supervisor task reaps it either way.
pub struct Conn {
    pub name: String,
    tx: mpsc::Sender<Outgoing>,
    pending: Arc<Mutex<Pending>>,
    life: Arc<Life>,
    /// Set by the first reply: the program speaks the protocol.
    healthy: AtomicBool,
    timeouts: AtomicU32,
    /// Sending kills at once; dropping (with the Conn) stops gracefully.
    kill: Mutex<Option<oneshot::Sender<()>>>,
}

/// Removes a request's entry from the pending map however the request ends (reply, timeout,
/// or the caller's future being dropped).
struct PendingGuard<'a> {
    pending: &'a Mutex<Pending>,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(self.pending).map.remove(&self.id);
    }
}

impl Conn {
    /// Spawn the program and wait (up to `start_timeout`) for its hello.
    pub async fn start(cfg: &ExecConfig, catalogue: Arc<CatalogueSlot>) -> Result<Conn, String> {
        let mut child = tokio::process::Command::new(&cfg.command)
            .args(&cfg.args)
            .envs(&cfg.env)
            .env(PROTOCOL_ENV, PROTOCOL.to_string())
            .current_dir(&cfg.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so a stop reaches what it starts (see the module doc) and a
            // terminal's Ctrl-C reaches only the daemon, which stops it in order.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", cfg.command.display()))?;
        let Some(group) = Group::of(&child) else {
            return Err("the program exited before it could be watched".into());
        };
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = group.stop(&mut child).await;
            return Err("the program's pipes are missing".into());
        };
        // The stderr forwarder runs from the start, so a program failing before its hello is
        // explained in the log (and in the error); it learns the program's name once the
        // hello arrives.
        let log_name = Arc::new(OnceLock::new());
        let early = Arc::new(Mutex::new(Vec::new()));
        let forwarder = tokio::spawn(forward_stderr(
            stderr,
            log_name.clone(),
            cfg.file_name(),
            early.clone(),
        ));
        let mut stdout = BufReader::new(stdout);
        let mut buf = Vec::new();
        let first = tokio::time::timeout(
            cfg.start_timeout,
            read_line_capped(&mut stdout, &mut buf, MAX_LINE),
        )
        .await;
        let hello = match first {
            Ok(Ok(LineRead::Line)) => protocol::parse_hello(&buf).map_err(|e| e.to_string()),
            Ok(Ok(LineRead::Eof)) => {
                let status = tokio::time::timeout(GRACE, child.wait()).await;
                Err(match status {
                    Ok(Ok(s)) => format!("it exited before its hello ({s})"),
                    _ => "it closed its stdout before its hello".into(),
                })
            }
            Ok(Ok(LineRead::TooLong { len })) => {
                Err(format!("its first line is {len} bytes, over the cap"))
            }
            Ok(Err(e)) => Err(format!("reading its hello failed: {e}")),
            Err(_) => Err(format!(
                "it wrote no hello within {} ms (`start_timeout`)",
                cfg.start_timeout.as_millis()
            )),
        };
        let hello: Hello = match hello {
            Ok(h) => h,
            Err(why) => {
                // stop() also waits for it: no zombie. Its stderr then ends, so the forwarder
                // has read all there is (bounded, in case something outside its group holds
                // the pipe).
                let _ = group.stop(&mut child).await;
                let _ = tokio::time::timeout(DRAIN, forwarder).await;
                let said = std::mem::take(&mut *lock(&early));
                let said = String::from_utf8_lossy(&said);
                return Err(if said.trim().is_empty() {
                    why
                } else {
                    format!("{why}; its stderr: {}", said.trim())
                });
            }
        };
        let name = hello
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| cfg.file_name());
        let _ = log_name.set(name.clone());
        let (tx, rx) = mpsc::channel(QUEUE);
        let (kill_tx, kill_rx) = oneshot::channel();
        let pending = Arc::new(Mutex::new(Pending::default()));
        let life = Arc::new(Life::default());
        tokio::spawn(write_stdin(
            stdin,
            rx,
            hello.catalogue.then_some(catalogue),
            name.clone(),
            life.clone(),
            pending.clone(),
        ));
        let (drained_tx, drained_rx) = oneshot::channel::<()>();
        tokio::spawn(read_stdout(
            stdout,
            name.clone(),
            life.clone(),
            pending.clone(),
            drained_tx,
        ));
        tokio::spawn(supervise(
            child,
            group,
            kill_rx,
            drained_rx,
            name.clone(),
            life.clone(),
            pending.clone(),
        ));
        Ok(Conn {
            name,
            tx,
            pending,
            life,
            healthy: AtomicBool::new(false),
            timeouts: AtomicU32::new(0),
            kill: Mutex::new(Some(kill_tx)),
        })
    }

    pub fn is_alive(&self) -> bool {
        !self.life.dead.load(Ordering::SeqCst)
    }

    pub fn died_at(&self) -> Option<Instant> {
        *lock(&self.life.died_at)
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// Ask the writer to send the new catalogue now (it would otherwise go before the next
    /// request). Best effort: a full queue just defers it.
    pub fn notify_catalogue(&self) {
        let _ = self.tx.try_send(Outgoing::Catalogue);
    }

    /// Kill the program now; its waiting requests fail.
    pub fn kill(&self) {
        if let Some(k) = lock(&self.kill).take() {
            let _ = k.send(());
        }
    }

    /// Send one request line (carrying `id`) and wait up to `timeout` for the reply.
    pub async fn request(
        &self,
        id: u64,
        line: Vec<u8>,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut p = lock(&self.pending);
            if p.closed {
                return Err(RequestError::Gone);
            }
            p.map.insert(id, tx);
        }
        let _guard = PendingGuard {
            pending: &self.pending,
            id,
        };
        self.tx
            .try_send(Outgoing::Line(line))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => RequestError::Busy,
                mpsc::error::TrySendError::Closed(_) => RequestError::Gone,
            })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => {
                self.timeouts.store(0, Ordering::SeqCst);
                self.healthy.store(true, Ordering::SeqCst);
                Ok(reply)
            }
            Ok(Err(_)) => Err(RequestError::Gone),
            Err(_) => {
                let n = self.timeouts.fetch_add(1, Ordering::SeqCst) + 1;
                let killed = n >= HANG_TIMEOUTS;
                if killed {
                    tracing::warn!(plugin = %self.name, timeouts = n, "exec program timed out repeatedly; killing it (it is restarted after the backoff)");
                    self.kill();
                }
                Err(RequestError::Timeout { killed })
            }
        }
    }
}

async fn write_stdin(
    mut stdin: ChildStdin,
    mut rx: mpsc::Receiver<Outgoing>,
    catalogue: Option<Arc<CatalogueSlot>>,
    name: String,
    life: Arc<Life>,
    pending: Arc<Mutex<Pending>>,
) {
    let mut sent_generation = 0;
    let mut next = None;
    loop {
        // The newest catalogue always goes before the next request, so the program never
        // matches against a catalogue older than the host's.
        if let Some(slot) = &catalogue {
            if let Some((generation, cat)) = slot.newer_than(sent_generation) {
                let line = protocol::catalogue_notification(&cat);
                if let Err(e) = write(&mut stdin, &line).await {
                    tracing::warn!(plugin = %name, error = %e, "cannot write to the exec program");
                    break;
                }
                tracing::debug!(plugin = %name, shows = cat.len(), "catalogue sent to the exec program");
                sent_generation = generation;
            }
        }
        if let Some(Outgoing::Line(line)) = next.take() {
            if let Err(e) = write(&mut stdin, &line).await {
                tracing::warn!(plugin = %name, error = %e, "cannot write to the exec program");
                break;
            }
        }
        match rx.recv().await {
            // The plugin dropped this instance: closing stdin tells the program to exit.
            None => return,
            Some(msg) => next = Some(msg),
        }
    }
    // A program that does not read its stdin cannot be talked to: give it up.
    shut(&life, &pending);
}

async fn write(stdin: &mut ChildStdin, line: &[u8]) -> std::io::Result<()> {
    stdin.write_all(line).await?;
    stdin.flush().await
}

async fn read_stdout(
    mut stdout: BufReader<ChildStdout>,
    name: String,
    life: Arc<Life>,
    pending: Arc<Mutex<Pending>>,
    // Dropped when this task ends: tells the supervisor every reply has been routed.
    _drained: oneshot::Sender<()>,
) {
    let mut buf = Vec::new();
    loop {
        match read_line_capped(&mut stdout, &mut buf, MAX_LINE).await {
            Ok(LineRead::Eof) => break,
            Err(e) => {
                tracing::warn!(plugin = %name, error = %e, "cannot read from the exec program");
                break;
            }
            Ok(LineRead::TooLong { len }) => {
                tracing::warn!(plugin = %name, bytes = len, max = MAX_LINE, "exec program wrote a line over the cap; ignored");
            }
            Ok(LineRead::Line) => {
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match protocol::parse_incoming(&buf) {
                    Incoming::Reply { id, reply } => {
                        let waiting = lock(&pending).map.remove(&id);
                        match waiting {
                            Some(tx) => {
                                let _ = tx.send(reply);
                            }
                            None => {
                                tracing::warn!(plugin = %name, id, "exec program answered an unknown or timed-out request; ignored")
                            }
                        }
                    }
                    Incoming::Other(what) => {
                        tracing::warn!(plugin = %name, line = %what, "exec program wrote a line that is no reply; ignored");
                    }
                    Incoming::Garbage(what) => {
                        tracing::warn!(plugin = %name, error = %what, "exec program wrote a line that is not JSON; ignored");
                    }
                }
            }
        }
    }
    // Its stdout is closed: no reply can come any more.
    shut(&life, &pending);
}

async fn forward_stderr(
    stderr: ChildStderr,
    name: Arc<OnceLock<String>>,
    fallback: String,
    // Filled (bounded) until the hello, for the error of a failed start.
    early: Arc<Mutex<Vec<u8>>>,
) {
    let mut stderr = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        let cut = match read_line_capped(&mut stderr, &mut buf, MAX_STDERR_LINE).await {
            Ok(LineRead::Line) => false,
            Ok(LineRead::TooLong { .. }) => true,
            Ok(LineRead::Eof) | Err(_) => return,
        };
        if buf.is_empty() {
            continue;
        }
        if name.get().is_none() {
            let mut kept = lock(&early);
            let room = START_STDERR.saturating_sub(kept.len());
            if room > 0 {
                if !kept.is_empty() {
                    kept.push(b' ');
                }
                kept.extend_from_slice(&buf[..buf.len().min(room)]);
            }
        }
        let text = String::from_utf8_lossy(&buf);
        let plugin = name.get().unwrap_or(&fallback);
        tracing::info!(plugin = %plugin, line = %text, cut, "exec program stderr");
    }
}

async fn supervise(
    mut child: tokio::process::Child,
    group: Group,
    mut kill_rx: oneshot::Receiver<()>,
    drained: oneshot::Receiver<()>,
    name: String,
    life: Arc<Life>,
    pending: Arc<Mutex<Pending>>,
) {
    let (status, stopped) = tokio::select! {
        status = child.wait() => {
            // Whatever it started goes with it: a new instance replaces the whole group.
            group.signal(libc::SIGKILL);
            (status, false)
        }
        order = &mut kill_rx => {
            if order.is_err() {
                // The plugin was dropped and the writer closed stdin: let the program finish
                // on its own for a moment.
                if let Ok(status) = tokio::time::timeout(GRACE, child.wait()).await {
                    group.signal(libc::SIGKILL);
                    shut(&life, &pending);
                    log_exit(&name, status, true);
                    return;
                }
            }
            // stop() signals the whole group and waits, so the program is reaped.
            (group.stop(&mut child).await, true)
        }
    };
    // Replies the program wrote just before exiting may still be in the pipe: let the reader
    // route them before the waiting requests are failed. Bounded, in case something outside
    // the program's group inherited stdout and keeps the pipe open.
    let _ = tokio::time::timeout(DRAIN, drained).await;
    shut(&life, &pending);
    log_exit(&name, status, stopped);
}

fn log_exit(name: &str, status: std::io::Result<std::process::ExitStatus>, stopped: bool) {
    match status {
        Ok(s) if stopped => tracing::info!(plugin = %name, status = %s, "exec program stopped"),
        Ok(s) => tracing::warn!(plugin = %name, status = %s, "exec program exited"),
        Err(e) => tracing::warn!(plugin = %name, error = %e, "cannot wait for the exec program"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_catalogue_is_not_resent() {
        let slot = CatalogueSlot::default();
        let show = |id: &str| plexsync_plugin_api::CatalogShow {
            id: id.into(),
            title: "T".into(),
            ..Default::default()
        };
        // Even an empty first catalogue counts: the program learns it has nothing.
        assert!(slot.set(Arc::new(Catalogue::default())));
        assert_eq!(slot.newer_than(0).map(|(g, _)| g), Some(1));
        assert!(slot.set(Arc::new(Catalogue::new(vec![show("1")]))));
        assert!(!slot.set(Arc::new(Catalogue::new(vec![show("1")]))));
        assert!(slot.newer_than(2).is_none());
        assert!(slot.set(Arc::new(Catalogue::new(vec![show("2")]))));
        assert_eq!(slot.newer_than(2).map(|(g, c)| (g, c.len())), Some((3, 1)));
    }
}
