//! glibc's allocator, told to keep the memory it frees.
//!
//! Boulder allocates and frees buffers of a few hundred KiB per batch (a guest's
//! answer lifted out of its memory, a body of line protocol). With glibc's defaults
//! such a buffer is either mapped and unmapped on every call (above the mmap
//! threshold) or handed back to the kernel when it sits at the top of the heap
//! (above the trim threshold), and every page of the next one faults in again: in
//! the chain benchmark that was a fifth of all CPU time, and how much varied from
//! run to run as glibc moved its thresholds. Fixed thresholds keep freed memory for
//! reuse; the peak resident size is what it was, it is just not given back between
//! batches.

/// Allocations up to this size come from the heap, not a fresh mapping each.
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// Free memory at the top of a heap is returned to the kernel only beyond this.
pub const TRIM_THRESHOLD: usize = 64 << 20;

/// Sets the thresholds. Call once, early in `main`, before threads start.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes two of glibc's tuning parameters; it is
        // called before other threads allocate.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
        }
    }
}
