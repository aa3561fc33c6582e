//! The process's heap, as the kernel sees it (the one module that calls the C library's
//! allocator).
//!
//! glibc keeps memory that was freed inside its arenas, so a burst of large buffers (a
//! flood of 64 KiB messages, say) leaves the resident set at its peak long after the
//! buffers are gone. Trimming after such a burst gives it back.

/// Returns free heap pages to the kernel (`malloc_trim(3)`: the top of each arena and,
/// since glibc 2.8, whole free pages inside them). Takes a few milliseconds on a heap
/// of tens of MiB; call it after a burst, not on a hot path. Returns whether any memory
/// was released.
pub fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointers and may be called from any thread.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Arenas glibc may create (`M_ARENA_MAX`) unless `$MALLOC_ARENA_MAX` says otherwise.
const ARENAS: libc::c_int = 2;

/// Caps glibc's malloc arenas at [`ARENAS`]; call first thing in `main`, before any
/// thread starts. glibc gives each new thread that meets a locked arena one of its own,
/// up to 8 per core, and memory freed in one arena is not reused by another. Every
/// capture restart starts new GStreamer streaming threads, so the soak's RSS grew with
/// each one: +16 MiB over eight restarts in 9 minutes with glibc's default, +6.6 MiB
/// (and levelling off) with two arenas (docs/reliability.md, "Soak"). A camera has two
/// or four cores and a handful of busy threads, so two arenas cost no measurable
/// contention. An explicit `$MALLOC_ARENA_MAX` (glibc's own tunable) is left alone.
/// Returns whether the cap was set.
pub fn limit_arenas() -> bool {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return false;
    }
    // SAFETY: mallopt takes two integers and changes allocator settings only; called
    // before other threads exist.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) == 1 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_arena_cap_and_trim_runs() {
        // The suite never sets $MALLOC_ARENA_MAX, so the cap is ours to set.
        assert!(std::env::var_os("MALLOC_ARENA_MAX").is_none());
        assert!(super::limit_arenas(), "mallopt(M_ARENA_MAX) refused");
        let _ = super::trim();
    }
}
