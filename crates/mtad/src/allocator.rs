//! mtad's memory allocator: mimalloc, in place of glibc's malloc.
//!
//! A relayed message is a few hundred allocations on several threads
//! (the session's buffers, the TLS handshake's, the store on a writer
//! thread, the delivery), and glibc's malloc spent 6 to 7 % of mtad's
//! CPU in its own code on them, besides waits for the lock of the one
//! arena all threads shared (which mtad had set to keep its memory down
//! after a rescan). With mimalloc's per-thread
//! pages, and the settings below, mtad's CPU per message relayed was 3
//! to 22 % lower in the benchmark's cases (none higher beyond the
//! rounds' spread), and its memory with a million messages queued is
//! lower than glibc's was (see "Performance (issue 15)" in
//! docs/benchmarks.md).
//!
//! Two settings keep its memory down:
//! - no transparent huge pages for this process: with them an idle mtad
//!   was 55 MiB resident instead of 15, and 264 MiB after rescanning a
//!   million spool files;
//! - after the spool's bursts (opening the index, a rescan) the spool
//!   calls `mi_collect`, which returns the pages freed to the system
//!   there and then, not a second later at the next allocation.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sets the allocator up: called first thing in `main`.
pub fn init() {
    // Fails only where the kernel has no such setting (no THP to turn
    // off): nothing to do then.
    let _ = nix::sys::prctl::set_thp_disable(true);
    mta_spool::set_memory_releaser(collect);
}

fn collect() {
    // SAFETY: mi_collect takes no pointer; it frees what mimalloc holds
    // free, from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
