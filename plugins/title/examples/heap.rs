//! Heap held by the catalogue and the title index at 4,498 shows: a counting allocator reports
//! the live bytes (and blocks) after each step, so a layout change shows its cost directly.
//!
//! Run: `cargo run --release -p plexsync-plugin-title --example heap`

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use plexsync_plugin_api::{CatalogShow, Catalogue, Matcher};
use plexsync_plugin_title::{TitleConfig, TitleMatcher};

struct Counting;

static BYTES: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        BYTES.fetch_add(l.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        BYTES.fetch_sub(l.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        BYTES.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> (isize, isize) {
    (
        BYTES.load(Ordering::Relaxed),
        BLOCKS.load(Ordering::Relaxed),
    )
}

fn report(what: &str, before: (isize, isize)) -> (isize, isize) {
    let now = live();
    println!(
        "  {what:<28} {:>8.1} KiB in {:>6} blocks",
        (now.0 - before.0) as f64 / 1024.0,
        now.1 - before.1
    );
    now
}

fn main() {
    let path = match std::env::var_os("PLEXSYNC_MATCHING_DATA") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/matching"),
    }
    .join("catalogue.jsonl");
    let text = std::fs::read_to_string(&path).expect("catalogue.jsonl");
    let t0 = live();
    let shows: Vec<CatalogShow> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a show"))
        .collect();
    println!("heap held at {} shows:", shows.len());
    report("CatalogShow records (parsed)", t0);
    // Catalogue::new consumes the parsed records: what is live after it is the catalogue.
    let catalogue = Arc::new(Catalogue::new(shows));
    let t2 = report("Catalogue (shows, id indices)", t0);
    let m = TitleMatcher::new(TitleConfig::default());
    m.set_catalogue(catalogue.clone());
    report("title index", t2);
    report("total", t0);
}
