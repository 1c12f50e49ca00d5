//! Gives freed heap back to the kernel.
//!
//! glibc's allocator keeps what a program frees for reuse, in one arena per
//! thread that allocated it, and returns memory to the kernel only from the
//! top of each heap. The agent's first list and sync allocate the whole
//! cluster several times over (JSON, objects, desired state, netlink
//! batches) on tokio's threads and the sync thread, then free most of it:
//! without a trim that memory stays in the process's RSS for good.
//! `malloc_trim(0)` returns every whole free page of every arena
//! (`MADV_DONTNEED`). Other C libraries: nothing to do.

/// Returns free heap pages to the kernel; whether any were returned.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks and trims the allocator's own
        // arenas; it takes no pointer.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn trimming_after_freeing_is_safe() {
        let v: Vec<Vec<u8>> = (0..1000).map(|_| vec![1u8; 4096]).collect();
        drop(v);
        super::trim();
        // Still a working allocator.
        let after: Vec<u32> = (0..10).collect();
        assert_eq!(after.iter().sum::<u32>(), 45);
    }
}
