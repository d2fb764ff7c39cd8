//! Giving memory back to the system after a burst of short-lived
//! allocations: at the end of an open (sled reads its snapshot whole and
//! drops it once the page table is built) and of a rescan (a million
//! envelopes parsed on short-lived threads). Without it an allocator may
//! keep tens of MiB free but resident at 1,000,000 messages, until it
//! next has a reason to look.
//!
//! The spool does not know the process's allocator: a program with one
//! of its own says how to release its memory (`set_memory_releaser`;
//! mtad does, for mimalloc). Otherwise glibc's `malloc_trim` is called.

use std::sync::OnceLock;

static RELEASER: OnceLock<fn()> = OnceLock::new();

/// Makes `release` what the spool calls after a burst of allocations,
/// instead of glibc's `malloc_trim`: for a program that replaced the
/// global allocator. The first call wins; returns whether this was it.
pub fn set_memory_releaser(release: fn()) -> bool {
    RELEASER.set(release).is_ok()
}

/// Gives the memory the allocator holds free back to the system. Costs
/// a walk of the allocator's free lists: milliseconds.
pub(crate) fn release_free_memory() {
    if let Some(release) = RELEASER.get() {
        release();
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer of ours; it works on malloc's
    // own arenas under their locks and may be called from any thread at
    // any time.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn count() {
        CALLS.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn a_registered_releaser_replaces_malloc_trim_and_the_first_wins() {
        // The only test that registers one. Other tests of this crate may
        // call release_free_memory at any time: count from here, and
        // expect at least our own call.
        assert!(set_memory_releaser(count));
        assert!(!set_memory_releaser(|| {}));
        let before = CALLS.load(Ordering::SeqCst);
        release_free_memory();
        assert!(CALLS.load(Ordering::SeqCst) > before);
    }
}
