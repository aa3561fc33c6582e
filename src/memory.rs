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

/// Asks the kernel never to back this process's memory with transparent huge pages
/// (`prctl(PR_SET_THP_DISABLE)`, Linux 3.15 and later; it covers every thread, and
/// later `madvise(MADV_HUGEPAGE)` calls no longer take effect). Call it first thing in
/// `main`.
///
/// x264 built for x86 Linux (`HAVE_THP`) places each buffer of 1.75 MiB or more on
/// 2 MiB boundaries and advises huge pages for it, so each 1280x720 picture buffer is
/// resident in whole 2 MiB pages, padding included: about 7 MiB of the camera's ~57 MiB
/// RSS at one viewer (docs/performance.md, "Huge pages"), for no CPU saving measurable
/// at 720p30. Returns whether the kernel took the request.
pub fn refuse_huge_pages() -> bool {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes integers only and changes one flag of
    // this process's memory map.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
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

    #[test]
    fn the_kernel_takes_the_refusal_of_huge_pages() {
        assert!(
            super::refuse_huge_pages(),
            "prctl(PR_SET_THP_DISABLE) refused"
        );
        // SAFETY: PR_GET_THP_DISABLE takes integers only and reads one flag.
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(flag, 1);
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        assert!(status.contains("THP_enabled:\t0"), "{status}");
    }
}
