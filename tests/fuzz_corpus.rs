//! Replays the fuzz corpus on stable, without cargo-fuzz: every committed seed in
//! `fuzz/corpus/<target>/` and every kept finding in `fuzz/regressions/<target>/` goes through
//! the same harness function the fuzz target calls (`plexsync::fuzzing`), so a fixed crash
//! stays fixed in CI. The real Plex captures in `../shared/plex-samples` are replayed in place,
//! shaped as `fuzz/seed-from-samples.sh` shapes them.

use std::path::{Path, PathBuf};

use plexsync::fuzzing;

/// A harness: bytes in, a panic on a broken invariant.
type Harness = fn(&[u8]);

const TARGETS: [(&str, Harness); 3] = [
    ("webhook_multipart", fuzzing::webhook_multipart),
    ("webhook_json", fuzzing::webhook_json),
    ("plex_xml", fuzzing::plex_xml),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none when the folder does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Runs `harness` on `data`, naming `what` if it panics.
fn replay(harness: Harness, what: &str, data: &[u8]) {
    if std::panic::catch_unwind(|| harness(data)).is_err() {
        panic!("fuzz harness failed on {what}");
    }
}

#[test]
fn committed_seeds_and_kept_findings_replay_cleanly() {
    for (target, harness) in TARGETS {
        let seeds = files(&fuzz_dir().join("corpus").join(target));
        // The seeds are part of the repository; an empty folder means they went missing.
        assert!(
            seeds.len() >= 3,
            "fuzz/corpus/{target} has {} seeds, expected at least 3",
            seeds.len()
        );
        for path in &seeds {
            let data = std::fs::read(path).unwrap();
            assert!(data.len() <= 64 * 1024, "{} is over 64 KiB", path.display());
            replay(harness, &path.display().to_string(), &data);
        }
        // Inputs a fuzz run once failed on (none so far; see fuzz/README.md).
        for path in files(&fuzz_dir().join("regressions").join(target)) {
            replay(
                harness,
                &path.display().to_string(),
                &std::fs::read(&path).unwrap(),
            );
        }
    }
}

/// `../shared/plex-samples`, or None (with a NOTICE) when absent outside CI.
fn samples() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/plex-samples");
    if p.is_dir() {
        return Some(p);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{} is missing: CI must provide ../shared beside the checkout",
            p.display()
        );
    }
    eprintln!(
        "NOTICE: {} not found; skipping the sample replay",
        p.display()
    );
    None
}

fn with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect()
}

#[test]
fn real_plex_samples_replay_cleanly() {
    let Some(dir) = samples() else { return };

    let payloads = with_ext(&dir.join("webhook"), "json");
    assert!(
        !payloads.is_empty(),
        "no webhook samples in {}",
        dir.display()
    );
    for path in &payloads {
        let json = std::fs::read(path).unwrap();
        replay(fuzzing::webhook_json, &path.display().to_string(), &json);
        let mut body = b"multipart/form-data; boundary=plexsync-seed-boundary\r\n--plexsync-seed-boundary\r\nContent-Disposition: form-data; name=\"payload\"\r\n\r\n".to_vec();
        body.extend_from_slice(&json);
        body.extend_from_slice(b"\r\n--plexsync-seed-boundary--\r\n");
        replay(
            fuzzing::webhook_multipart,
            &path.display().to_string(),
            &body,
        );
    }

    let headers = std::fs::read_to_string(
        dir.join("webhook/episode_plexagent_media.pause_shared-user.headers.txt"),
    )
    .unwrap();
    let ct = headers
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type:"))
        .unwrap()
        .trim();
    let raw = std::fs::read(
        dir.join("webhook/episode_plexagent_media.pause_shared-user.multipart-body.txt"),
    )
    .unwrap();
    let mut lf = format!("{ct}\n").into_bytes();
    lf.extend_from_slice(&raw);
    replay(
        fuzzing::webhook_multipart,
        "the raw multipart body (LF)",
        &lf,
    );
    let mut crlf = format!("{ct}\r\n").into_bytes();
    for &b in &raw {
        if b == b'\n' {
            crlf.push(b'\r');
        }
        crlf.push(b);
    }
    replay(
        fuzzing::webhook_multipart,
        "the raw multipart body (CRLF)",
        &crlf,
    );

    let mut xml = 0;
    for sub in ["history", "metadata", "server"] {
        for path in with_ext(&dir.join(sub), "xml") {
            replay(
                fuzzing::plex_xml,
                &path.display().to_string(),
                &std::fs::read(&path).unwrap(),
            );
            xml += 1;
        }
    }
    assert!(xml > 0, "no XML samples in {}", dir.display());
}
