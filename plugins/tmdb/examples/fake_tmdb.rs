//! A fake TMDB serving a crosswalk file, so a person can reproduce the matching figures of
//! README.md without a TMDB account:
//!
//! ```sh
//! cargo run -p plexsync-plugin-tmdb --example fake_tmdb -- \
//!     ../shared/matching/tmdb_crosswalk.jsonl 127.0.0.1:8799 fake-key
//! ```
//!
//! It answers `GET /3/find/{id}?external_source=tvdb_id|imdb_id` in TMDB's shape for the key
//! given (as `api_key` or `Authorization: Bearer`), until interrupted; `/tv/{id}` answers
//! the crosswalk's series without names (the crosswalk holds ids only) and 404 for others. The crosswalk is read
//! in place (one `{"tmdb_id", "tvdb_id", "imdb_id"}` per line).

#[path = "../tests/support/fake_tmdb.rs"]
mod fake_tmdb;

use std::path::PathBuf;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [crosswalk, addr, key] = args.as_slice() else {
        eprintln!("usage: fake_tmdb CROSSWALK.jsonl ADDR KEY   (e.g. 127.0.0.1:8799 fake-key)");
        return ExitCode::from(2);
    };
    let rows = match fake_tmdb::read_crosswalk(&PathBuf::from(crosswalk)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fake_tmdb: {e}");
            return ExitCode::FAILURE;
        }
    };
    let n = rows.len();
    let fake = match fake_tmdb::start_on(addr, rows, key, None).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake_tmdb: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "fake TMDB with {n} crosswalk rows: api_url = \"{}\"",
        fake.url
    );
    if tokio::signal::ctrl_c().await.is_err() {
        eprintln!("fake_tmdb: cannot wait for Ctrl-C");
    }
    println!("served {} requests", fake.count());
    ExitCode::SUCCESS
}
