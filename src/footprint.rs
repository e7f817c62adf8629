//! The daemon's memory habits, in one place: how many glibc malloc arenas its threads may
//! spread over, and giving freed memory back after a large transient build.
//!
//! glibc gives each thread that meets contention an arena of its own (up to 8 per core), and
//! memory freed in one is kept there for that arena's next use; a catalogue fetched, parsed and
//! indexed on a few threads then leaves megabytes resident that nothing uses. Two arenas are
//! plenty for a daemon whose hot path is two runtime workers and one store writer; after the
//! catalogue build the free pages are returned with `malloc_trim`.
//!
//! Elsewhere (musl, other systems) both calls are no-ops.

/// Cap the malloc arenas (call once, early, before the runtime starts its threads).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator tunable; M_ARENA_MAX takes any positive count.
        let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
        if ok == 0 {
            tracing::debug!("mallopt(M_ARENA_MAX) refused; the default arenas stay");
        }
    }
}

/// Arenas allowed: the daemon's hot threads (two runtime workers) each keep one.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

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
