//! Webhook ingest benchmark: starts the release `plexsync` binary against a minimal fake Plex
//! and tracker on loopback, then posts real sample webhooks (the legacy-agent capture from
//! ../shared/plex-samples, made a `media.scrobble`, each for a distinct season/episode so none
//! is a duplicate) over keep-alive connections and prints throughput, latency percentiles and
//! memory. Every 200 counted is a play in a durable redb commit.
//!
//! The same load then goes to a bare hyper http1 server that answers 200 without doing any work
//! (this bench binary re-executed as a separate process, on a 2-worker runtime like the
//! daemon's): the ceiling this machine and this load generator allow. Both are printed with
//! their ratio.
//!
//! The same load goes once more to a daemon whose store is on tmpfs (`/dev/shm`), where
//! `fdatasync` costs nothing: what durability itself costs here, as against the rest of the
//! pipeline. Every 200 there is still a redb commit, just not one that reaches a disk.
//!
//! Run: `cargo bench --bench webhook_ingest` (env: BENCH_N, BENCH_CONCURRENCY).

mod support;

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use support::{Daemon, LoadResult, cores, env_usize, load, load_average, mb, ms};

/// Set in the re-executed child: serve as the bare server instead of benchmarking.
const BARE_ENV: &str = "PLEXSYNC_BENCH_BARE_HYPER";
const BOUNDARY: &str = "------------------------e9b6fd531fc73c30";
const CONTENT_TYPE: &str = "multipart/form-data; boundary=------------------------e9b6fd531fc73c30";

fn main() {
    if std::env::var_os(BARE_ENV).is_some() {
        bare_server();
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}

/// The ceiling: accept, read the request body, answer 200 "ok". Prints its address on stdout
/// and serves until killed.
fn bare_server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", l.local_addr().unwrap());
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
}

fn body_for(sample: &Value, i: usize) -> Bytes {
    let mut p = sample.clone();
    p["event"] = json!("media.scrobble");
    p["Metadata"]["parentIndex"] = json!(1 + i / 50);
    p["Metadata"]["index"] = json!(1 + i % 50);
    p["Metadata"]["ratingKey"] = json!(format!("{}", 100_000 + i));
    let mut out = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"payload\"\r\nContent-Type: application/json\r\n\r\n").into_bytes();
    out.extend_from_slice(p.to_string().as_bytes());
    out.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    Bytes::from(out)
}

/// CPU seconds a process has used, split into its store writer thread and the rest.
#[derive(Default)]
struct Cpu {
    store: f64,
    other: f64,
}

impl Cpu {
    fn total(&self) -> f64 {
        self.store + self.other
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            store: self.store - before.store,
            other: self.other - before.other,
        }
    }
}

/// utime + stime of every thread of `pid` (`/proc/<pid>/task/*/stat`), by thread name. Threads
/// that ended in between are missed, so it is a lower bound; the daemon's threads live on.
fn thread_cpu(pid: u32) -> Cpu {
    let tick = 100.0; // USER_HZ on Linux
    let mut cpu = Cpu::default();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return cpu;
    };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: comm may hold spaces, so split after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After the comm: state is field 3, utime 14, stime 15 (1-based in proc(5)).
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
            .sum();
        if comm == "plexsync-store" {
            cpu.store += ticks / tick;
        } else {
            cpu.other += ticks / tick;
        }
    }
    cpu
}

fn print_run(name: &str, r: &LoadResult) {
    println!(
        "  {name:<19} {} requests, {} errors, {:.2} s: {}",
        r.requests,
        r.errors,
        r.elapsed.as_secs_f64(),
        r.summary()
    );
}

async fn bench() {
    let sample_path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/plex-samples/webhook/episode_legacy-thetvdb_media.resume_owner-id1.json"
    ));
    let Ok(text) = std::fs::read_to_string(&sample_path) else {
        eprintln!(
            "needs {} (the shared Plex samples beside the checkout)",
            sample_path.display()
        );
        std::process::exit(2);
    };
    let sample: Value = serde_json::from_str(&text).unwrap();
    let n = env_usize("BENCH_N", 20_000);
    let conc = env_usize("BENCH_CONCURRENCY", 64);
    let load_before = load_average();

    let fake = support::fake(0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    // One client posting as fast as it can: the load, not a flood to refuse.
    let cfg = support::config(&fake, "webhook_rate_limit = 0", "");
    let daemon = Daemon::start(dir.path(), &cfg).await;
    let ready = daemon.ready;
    let status = daemon.status().await;
    let url: hyper::Uri = status["webhook_url"].as_str().unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = daemon.rss();

    let bodies = Arc::new((0..n).map(|i| body_for(&sample, i)).collect::<Vec<_>>());
    let commits_before = daemon.commits().await;
    let cpu_before = thread_cpu(daemon.pid);
    let ingest = load(&url, CONTENT_TYPE, bodies.clone(), conc).await;
    let cpu = thread_cpu(daemon.pid).since(&cpu_before);
    let commits = match (commits_before, daemon.commits().await) {
        (Some(a), Some(b)) if b > a => Some(b - a),
        _ => None,
    };
    let after_rss = daemon.rss();
    let peak_rss = daemon.hwm();
    let journaled = daemon.status().await["counts"]["journal"]
        .as_u64()
        .unwrap_or(0);
    daemon.stop();

    // The same load with the store on tmpfs, when the machine has one.
    let shm = std::path::Path::new("/dev/shm");
    let on_tmpfs = if shm.is_dir() {
        let dir = tempfile::Builder::new()
            .prefix("plexsync-bench")
            .tempdir_in(shm)
            .unwrap();
        let daemon = Daemon::start(dir.path(), &cfg).await;
        let status = daemon.status().await;
        let url: hyper::Uri = status["webhook_url"].as_str().unwrap().parse().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = thread_cpu(daemon.pid);
        let r = load(&url, CONTENT_TYPE, bodies.clone(), conc).await;
        let cpu = thread_cpu(daemon.pid).since(&before);
        daemon.stop();
        Some((r, cpu))
    } else {
        None
    };

    // The ceiling, in its own process like the daemon.
    let mut bare = Command::new(std::env::current_exe().unwrap())
        .env(BARE_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(bare.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let bare_url: hyper::Uri = format!("http://{}/webhook/x", line.trim()).parse().unwrap();
    let bare_before = thread_cpu(bare.id());
    let ceiling = load(&bare_url, CONTENT_TYPE, bodies, conc).await;
    let bare_cpu = thread_cpu(bare.id()).since(&bare_before);
    let _ = bare.kill();
    let _ = bare.wait();

    println!(
        "webhook ingest benchmark ({} cores, load average {load_before} before the run)",
        cores()
    );
    println!("  load                {n} webhooks over {conc} keep-alive connections");
    print_run("plexsync", &ingest);
    println!("  durably journaled   {journaled}");
    if let Some(c) = commits {
        // Exports' writes are commits too, so this is a lower bound of a group's webhooks.
        println!(
            "  store commits       {c} during the load: {:.1} webhooks a commit",
            n as f64 / c as f64
        );
    }
    println!(
        "  plexsync CPU        {:.0} µs a webhook (store writer {:.0} µs, the rest {:.0} µs)",
        cpu.total() / n as f64 * 1e6,
        cpu.store / n as f64 * 1e6,
        cpu.other / n as f64 * 1e6
    );
    match &on_tmpfs {
        Some((r, cpu)) => {
            print_run("plexsync, tmpfs", r);
            println!(
                "  tmpfs CPU           {:.0} µs a webhook (store writer {:.0} µs); durable / tmpfs throughput {:.0}%",
                cpu.total() / n as f64 * 1e6,
                cpu.store / n as f64 * 1e6,
                100.0 * ingest.throughput() / r.throughput()
            );
        }
        None => println!("  plexsync, tmpfs     not measured: no /dev/shm"),
    }
    print_run("bare hyper (ceiling)", &ceiling);
    println!(
        "  bare hyper CPU      {:.0} µs a request",
        bare_cpu.total() / n as f64 * 1e6
    );
    println!(
        "  plexsync / ceiling  throughput {:.0}%, p50 latency x{:.1}, p99 latency x{:.1}",
        100.0 * ingest.throughput() / ceiling.throughput(),
        ingest.pct(0.5).as_secs_f64() / ceiling.pct(0.5).as_secs_f64(),
        ingest.pct(0.99).as_secs_f64() / ceiling.pct(0.99).as_secs_f64()
    );
    if let Some((r, _)) = &on_tmpfs {
        println!(
            "  tmpfs / ceiling     throughput {:.0}%",
            100.0 * r.throughput() / ceiling.throughput()
        );
    }
    println!("  start-up to READY   {}", ms(ready));
    println!("  RSS idle            {}", mb(idle_rss));
    println!(
        "  RSS after load      {} (peak {})",
        mb(after_rss),
        mb(peak_rss)
    );
}
