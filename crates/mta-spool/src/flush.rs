//! The index flusher: a thread that writes the index to disk every half
//! second (sled's own periodic flush is turned off in its favour).
//!
//! The index is never flushed on the acceptance path (the spool files are
//! the truth), but schedule changes (attempts made, recipients delivered,
//! next retry times) only survive a crash once flushed. Flushing them
//! continuously keeps what a crash can lose to the last half second, and
//! keeps `close()` short: it only has to flush what changed since. Because
//! the spool runs the flush itself, it knows when the index last reached
//! the disk and how many changes have happened since
//! ([`ScheduleSaved`](crate::ScheduleSaved)).
//!
//! A flush that fails takes the index out of service (`slot.rs`): sled
//! will not write that database again.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::SpoolError;
use crate::index::Index;

/// How often the index is flushed, unless tests say otherwise.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// The flusher thread; stopped (and joined) by `stop` or on drop.
pub(crate) struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Flusher {
    /// Starts flushing `index` every `every`.
    pub fn start(index: Index, every: Duration) -> Result<Flusher, SpoolError> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("spool-flush".into())
            .spawn(move || run(&index, &signal, every))
            .map_err(|e| SpoolError::io("start index flusher thread", &PathBuf::new(), e))?;
        Ok(Flusher {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (a flush under way finishes).
    pub fn stop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock() = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("spool index flusher thread panicked");
            }
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(index: &Index, stop: &(Mutex<bool>, Condvar), every: Duration) {
    let (stopped, wake) = stop;
    let mut guard = stopped.lock();
    loop {
        wake.wait_while_for(&mut guard, |stopped| !*stopped, every);
        if *guard {
            return;
        }
        drop(guard);
        // Every round, idle or not: a flush with nothing to write is a
        // check of two counters, and it is also how a write sled made by
        // itself (it reorganises pages on reads too) is found to have
        // failed. A failed flush fails the index (`slot.rs`), which says
        // so in the log once; a failed index is not flushed until it is
        // reopened.
        if !index.is_failed() {
            let _ = index.flush();
        }
        guard = stopped.lock();
    }
}
