//! Footprint benchmark: the release binary's size (as built and stripped), its start-up time
//! to `READY=1` (first start on an empty state folder, which creates the store, the key and the
//! webhook secret, then restarts on that store) and its idle RSS, against a fake Plex and
//! tracker on loopback.
//!
//! Then idle RSS with the real 4,498-show catalogue (../shared/matching/catalogue.jsonl) served
//! by the tracker, after its first fetch and after a restart on the cached copy, beside the
//! same without it (one show); with `BENCH_OLD_BIN` set (an earlier release binary) the old
//! build is measured in the same minute, old then new.
//!
//! Run: `cargo bench --bench footprint` (env: BENCH_STARTS, restarts timed, default 10;
//! BENCH_OLD_BIN).

mod support;

use std::process::Command;
use std::time::Duration;

use support::{BIN, Daemon, cores, env_usize, load_average, mb, ms};

/// Where a process's resident pages are, from `/proc/PID/smaps`: the daemon binary's own
/// mapped pages (code and read-only data), anonymous memory (heap, stacks) and the rest
/// (libc, the loader, vdso). The idle figure is the sum; each half has its own lever.
fn breakdown(pid: u32, bin: &str) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| bin.to_string());
    let (mut own, mut other) = (0u64, 0u64);
    let (mut own_anon, mut other_anon) = (0u64, 0u64);
    let mut mapping_is_exe = false;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: "start-end perms offset dev inode [path]".
            mapping_is_exe = f.nth(4) == Some(exe.as_str());
            continue;
        }
        let value: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match first {
            "Rss:" if mapping_is_exe => own += value,
            "Rss:" => other += value,
            "Anonymous:" if mapping_is_exe => own_anon += value,
            "Anonymous:" => other_anon += value,
            _ => {}
        }
    }
    // A mapping's Rss includes its anonymous (copied-on-write) pages: count those as anon.
    format!(
        "binary {}, anon {}, other {}",
        mb(own.saturating_sub(own_anon)),
        mb(own_anon + other_anon),
        mb(other.saturating_sub(other_anon))
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let starts = env_usize("BENCH_STARTS", 10).max(1);
    let load_before = load_average();
    println!(
        "footprint benchmark ({} cores, load average {load_before} before the run)",
        cores()
    );

    let size = std::fs::metadata(BIN).map(|m| m.len()).unwrap_or(0);
    let dir = tempfile::tempdir().unwrap();
    let stripped_path = dir.path().join("plexsync.stripped");
    let stripped = match Command::new("strip")
        .arg("-o")
        .arg(&stripped_path)
        .arg(BIN)
        .status()
    {
        Ok(s) if s.success() => std::fs::metadata(&stripped_path)
            .map(|m| format!("{} bytes ({:.1} MiB)", m.len(), m.len() as f64 / 1048576.0))
            .unwrap_or_else(|e| format!("unknown ({e})")),
        Ok(s) => format!("unknown (strip: {s})"),
        Err(e) => format!("unknown (strip: {e})"),
    };
    println!("  binary              {BIN}");
    println!(
        "  size as built       {size} bytes ({:.1} MiB)",
        size as f64 / 1048576.0
    );
    println!("  size stripped       {stripped}");

    let fake = support::fake(0, 0).await;
    let cfg = support::config(&fake, "", "");
    let state = tempfile::tempdir().unwrap();
    let first = Daemon::start(state.path(), &cfg).await;
    let first_ready = first.ready;
    first.stop();
    let mut times = Vec::new();
    let mut last = None;
    for i in 0..starts {
        let d = Daemon::start(state.path(), &cfg).await;
        times.push(d.ready);
        if i + 1 == starts {
            last = Some(d);
        } else {
            d.stop();
        }
    }
    times.sort();
    println!("  start-up to READY   first start {}", ms(first_ready));
    println!(
        "                      {starts} restarts: min {}, median {}, max {}",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    if let Some(d) = last {
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "  RSS idle (2 s)      {} (peak {})",
            mb(d.rss()),
            mb(d.hwm())
        );
        d.stop();
    }

    let real = support::real_catalogue();
    if real.is_none() {
        println!("  (no ../shared/matching/catalogue.jsonl: catalogue RSS skipped)");
    }
    for (label, bin) in support::binaries() {
        for (what, rows) in [
            ("no catalogue", Vec::new()),
            ("4,498 shows", real.clone().unwrap_or_default()),
        ] {
            if what != "no catalogue" && rows.is_empty() {
                continue;
            }
            let n = rows.len() + 1;
            let fake = support::fake_with(0, 0, rows).await;
            let cfg = support::config(&fake, "", "");
            let state = tempfile::tempdir().unwrap();
            let mut figures = Vec::new();
            for start in ["first start", "restart"] {
                let d = Daemon::start_bin(&bin, state.path(), &cfg).await;
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let st = d.status().await;
                    if st["catalogue_shows"].as_u64() == Some(n as u64)
                        || std::time::Instant::now() > deadline
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                figures.push(format!(
                    "{start} {} (peak {}; {})",
                    mb(d.rss()),
                    mb(d.hwm()),
                    breakdown(d.pid, &bin)
                ));
                d.stop();
            }
            println!(
                "  RSS idle {label:<3} {what:<13} {}  (load average {})",
                figures.join(", "),
                load_average()
            );
        }
    }
}
