//! Test-only access to the shared, real Plex samples in `../shared/plex-samples`, read in
//! place (never copied into the repository).
//!
//! A missing folder fails the test when `CI=true` and is a printed notice otherwise.

use std::path::PathBuf;

/// The samples folder, or None (with a notice) outside CI.
pub fn dir() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/plex-samples"
    ));
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
        "NOTICE: {} not found; skipping this sample test",
        p.display()
    );
    None
}

/// The text of one sample (path relative to `plex-samples/`), None when the folder is absent.
/// A missing file inside a present folder is a failure.
pub fn sample(rel: &str) -> Option<String> {
    let d = dir()?;
    let p = d.join(rel);
    Some(
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("cannot read sample {}: {e}", p.display())),
    )
}
