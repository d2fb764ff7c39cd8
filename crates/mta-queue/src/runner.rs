//! One runner's concurrency limit, pause switch, line and counters (the
//! loops that drive them are in `dispatch.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use mta_spool::QueueName;
use serde::Serialize;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::lineup::Lineup;

/// Counters of one runner.
#[derive(Debug, Default)]
pub(crate) struct RunnerStats {
    in_flight: AtomicU64,
    attempts: AtomicU64,
    delivered: AtomicU64,
    deferred: AtomicU64,
    failed: AtomicU64,
}

impl RunnerStats {
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts an attempt started; it is in flight until the guard is
    /// dropped, however its task ends (a panic included).
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.attempts.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn count(&self, delivered: u64, deferred: u64, failed: u64) {
        self.delivered.fetch_add(delivered, Ordering::Relaxed);
        self.deferred.fetch_add(deferred, Ordering::Relaxed);
        self.failed.fetch_add(failed, Ordering::Relaxed);
    }
}

/// One attempt in flight; counted out when dropped.
pub(crate) struct InFlight(Arc<RunnerStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One runner's limit, switch and counters.
pub(crate) struct Runner {
    name: QueueName,
    pub(crate) limit: usize,
    slots: Arc<Semaphore>,
    paused: watch::Sender<bool>,
    pub(crate) started: AtomicBool,
    stats: Arc<RunnerStats>,
    /// Jobs handed to a memory runner, waiting for a slot or a resume.
    pub(crate) lineup: Lineup,
}

/// What `status` shows of a runner.
#[derive(Debug, Clone, Serialize)]
pub struct RunnerStatus {
    /// ram, bounce or disk.
    pub name: &'static str,
    /// Its loop is running (false once the stop began).
    pub started: bool,
    /// Paused by the operator.
    pub paused: bool,
    /// Attempts running now.
    pub in_flight: u64,
    /// The concurrency limit.
    pub limit: usize,
    /// Attempts started since the daemon started.
    pub attempts: u64,
    /// Recipients delivered.
    pub delivered: u64,
    /// Recipients deferred.
    pub deferred: u64,
    /// Recipients failed.
    pub failed: u64,
}

impl Runner {
    pub fn new(name: QueueName, limit: usize) -> Runner {
        Runner {
            name,
            limit,
            slots: Arc::new(Semaphore::new(limit)),
            paused: watch::Sender::new(false),
            started: AtomicBool::new(false),
            stats: Arc::default(),
            lineup: Lineup::default(),
        }
    }

    pub fn stats(&self) -> &Arc<RunnerStats> {
        &self.stats
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    pub fn status(&self, running: bool) -> RunnerStatus {
        let s = &self.stats;
        RunnerStatus {
            name: self.name.as_str(),
            started: running && self.started.load(Ordering::Relaxed),
            paused: *self.paused.borrow(),
            in_flight: s.in_flight(),
            limit: self.limit,
            attempts: s.attempts.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            deferred: s.deferred.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
        }
    }

    /// Waits until the runner is not paused; false once the stop has
    /// begun.
    pub async fn unpaused(&self, stopping: &CancellationToken) -> bool {
        let mut paused = self.paused.subscribe();
        tokio::select! {
            biased;
            () = stopping.cancelled() => false,
            r = paused.wait_for(|p| !*p) => r.is_ok(),
        }
    }

    /// Waits until the runner is not paused and has a free slot; None once
    /// the stop has begun.
    pub async fn slot(&self, stopping: &CancellationToken) -> Option<OwnedSemaphorePermit> {
        if !self.unpaused(stopping).await {
            return None;
        }
        tokio::select! {
            biased;
            () = stopping.cancelled() => None,
            permit = self.slots.clone().acquire_owned() => permit.ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_attempt_is_counted_out() {
        let runner = Runner::new(QueueName::Disk, 2);
        let stats = runner.stats().clone();
        let guard = stats.start();
        assert_eq!(runner.stats().in_flight(), 1);
        let attempt = std::thread::spawn(move || {
            let _in_flight = guard;
            panic!("an attempt that panics");
        });
        assert!(attempt.join().is_err());
        assert_eq!(runner.stats().in_flight(), 0);
        assert_eq!(runner.status(true).attempts, 1);
    }
}
