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
