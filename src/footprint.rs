//! The daemon's memory habits, in one place: how many glibc malloc arenas its threads may
//! spread over, and giving freed memory back after a large transient build.
//!
//! glibc gives each thread that meets contention an arena of its own (up to 8 per core), and
//! memory freed in one is kept there for that arena's next use; a catalogue fetched, parsed and
//! indexed on a few threads then leaves megabytes resident that nothing uses. Four arenas, one
//! per hot thread (two runtime workers, the store writer, its answering thread), are enough;
//! after the catalogue build the free pages are returned with `malloc_trim`. Large blocks (the
//! catalogue's encoded copy for the store, a history page) are mapped on their own from a fixed
//! size up, so freeing one gives it back at once: glibc's default raises that threshold each
//! time such a block is freed, until every later one lands in an arena and stays resident.
//!
//! Elsewhere (musl, other systems) both calls are no-ops.

/// Cap the malloc arenas (call once, early, before the runtime starts its threads).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator tunable; M_ARENA_MAX takes any positive count.
        let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
        // SAFETY: as above; a fixed M_MMAP_THRESHOLD also turns off its dynamic growth.
        let ok = ok != 0 && unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) } != 0;
        if !ok {
            tracing::debug!("mallopt refused; glibc's default malloc settings stay");
        }
    }
}

/// Arenas allowed: each of the daemon's hot threads keeps one (two runtime workers, the store
/// writer and its answering thread). With two, the writer shared an arena with a worker:
/// perf during webhook ingest found 11 % of the daemon's samples waiting on or waking the
/// arena locks, and four arenas took 44-47 µs a webhook against 50-53 µs (three interleaved
/// rounds), with idle RSS with the real catalogue unchanged (13.0-13.1 MB both).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 4;

/// Blocks from this size up are mapped on their own (see the module docs).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Return the free pages of every arena to the system (after a large build whose garbage is
/// gone: the catalogue's parse and index).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim walks the allocator's own free lists; no pointer is passed.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
