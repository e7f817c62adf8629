//! The daemon's memory habits, in one place: its allocator, and giving freed memory back after
//! a large transient build.
//!
//! The binary allocates with mimalloc (`#[global_allocator]` in main.rs). Each thread has its
//! own heap and frees to another thread's heap without a lock, so the two runtime workers, the
//! store writer and its answering thread — which hand every webhook's buffers to one another —
//! never wait on an allocator lock. With glibc's malloc (two arenas, capped for memory's sake)
//! a webhook spent about 15 % of its CPU in malloc/free and in the futex wake-ups of arena
//! locks; mimalloc takes a fifth off the daemon's CPU per webhook (README, Performance).
//!
//! Two of its habits are changed, first thing in `main` ([`configure`]):
//! - no transparent huge pages: mimalloc asks for them on its arenas, and a 2 MiB page for a
//!   few KiB of live heap added 14 MB to idle RSS. It is built without that request (the
//!   `no_thp` feature; its first arena exists before `main`), and the process opts out of THP
//!   (`PR_SET_THP_DISABLE`) for a system whose THP setting is `always`;
//! - freed pages are given back to the system at once (purge delay 0) instead of a second
//!   later, so RSS after a burst falls back with the heap.
//!
//! The glibc settings stay for what still allocates through libc (and for in-process tests,
//! which run on the system allocator): two arenas, and large blocks mapped on their own from a
//! fixed size up, so freeing one gives it back at once (glibc's default raises that threshold
//! each time such a block is freed, until every later one stays resident in an arena).
//!
//! Elsewhere (musl, other systems) the libc calls are no-ops.

/// Set the allocators' habits (call once, first thing, before the runtime starts its threads).
pub fn configure() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes a flag and three zero arguments; it only sets a
        // flag on this process (kept across fork and exec).
        let thp = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if thp != 0 {
            tracing::debug!("prctl(PR_SET_THP_DISABLE) refused; huge pages stay allowed");
        }
    }
    // SAFETY: mi_option_set stores a tunable; an unknown option is ignored by mimalloc.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
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

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (include/mimalloc.h of the version
/// in Cargo.lock; the crate exports no constant for it). A unit test checks its default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// glibc arenas allowed: the daemon's hot threads (two runtime workers) each keep one.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// Blocks from this size up are mapped on their own (see the module docs).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Return the free pages of both allocators to the system (after a large build whose garbage
/// is gone: the catalogue's parse and index).
pub fn release_free_memory() {
    // SAFETY: mi_collect walks mimalloc's own heaps; no pointer is passed.
    unsafe { libmimalloc_sys::mi_collect(true) };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim walks the allocator's own free lists; no pointer is passed.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    /// The option number is the purge delay's: its default is 1000 (ms, src/options.c of the
    /// mimalloc in Cargo.lock), and the options beside it default to 1 and 0. Read before
    /// anything in this process sets it.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: mi_option_get only reads a tunable.
        let v = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(v, 1000);
    }
}
