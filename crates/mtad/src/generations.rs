//! Queue runner generations: a graceful restart starts new runners with
//! the new configuration while the old ones finish the attempts they have
//! under way. The two share the set of messages in flight, so nothing is
//! attempted twice; status adds their counters up so they never go back.

use parking_lot::{Mutex, RwLock};
use std::time::Duration;

use mta_queue::{Queue, RunnerStatus};

pub struct Generations {
    current: RwLock<Queue>,
    /// Older generations still draining.
    retired: Mutex<Vec<Queue>>,
    /// Counters of the generations that are done, ram, bounce, disk.
    carried: Mutex<Vec<RunnerStatus>>,
}

impl Generations {
    pub fn new(queue: Queue) -> Generations {
        Generations {
            current: RwLock::new(queue),
            retired: Mutex::default(),
            carried: Mutex::default(),
        }
    }

    /// The runners new work goes to.
    pub fn current(&self) -> Queue {
        self.current.read().clone()
    }

    /// Makes `next` current and lets the old generation finish its
    /// attempts (until `drain`) in the background.
    pub fn replace(self: &std::sync::Arc<Self>, next: Queue, drain: Duration) {
        let old = std::mem::replace(&mut *self.current.write(), next);
        self.retired.lock().push(old.clone());
        let this = self.clone();
        tokio::spawn(async move {
            old.shutdown(drain).await;
            this.retire(&old);
        });
    }

    /// Folds a drained generation's counters into the carried ones.
    fn retire(&self, old: &Queue) {
        let mut retired = self.retired.lock();
        let Some(position) = retired.iter().position(|q| q.same(old)) else {
            return;
        };
        retired.remove(position);
        let mut carried = self.carried.lock();
        add_counts(&mut carried, &old.status());
    }

    /// The runners' rows, counters summed over every generation; state and
    /// limits are the current generation's.
    pub fn status(&self) -> Vec<RunnerStatus> {
        let mut rows = self.current().status();
        for old in self.retired.lock().iter() {
            for (row, o) in rows.iter_mut().zip(old.status()) {
                row.in_flight += o.in_flight;
                row.attempts += o.attempts;
                row.delivered += o.delivered;
                row.deferred += o.deferred;
                row.failed += o.failed;
            }
        }
        let carried = self.carried.lock();
        for (row, c) in rows.iter_mut().zip(carried.iter()) {
            row.attempts += c.attempts;
            row.delivered += c.delivered;
            row.deferred += c.deferred;
            row.failed += c.failed;
        }
        rows
    }

    /// Attempts under way in every generation.
    pub fn in_flight(&self) -> u64 {
        self.status().iter().map(|r| r.in_flight).sum()
    }

    /// DSNs queued, every generation.
    pub fn dsns_queued(&self) -> u64 {
        let retired: u64 = self.retired.lock().iter().map(Queue::dsns_queued).sum();
        self.current().dsns_queued() + retired
    }

    /// DSNs dropped (the postmaster's own copy failed), every generation
    /// still known.
    pub fn dsns_dropped(&self) -> u64 {
        let retired: u64 = self.retired.lock().iter().map(Queue::dsns_dropped).sum();
        self.current().dsns_dropped() + retired
    }

    /// Deliveries by TLS and policy failures, every generation still
    /// known.
    pub fn tls_counts(&self) -> mta_deliver::TlsCounts {
        let mut counts = self.current().tls_counts();
        for retired in self.retired.lock().iter() {
            counts.add(&retired.tls_counts());
        }
        counts
    }

    /// Delivery-log lines dropped (a full disk), every generation still
    /// known.
    pub fn delivery_log_dropped(&self) -> u64 {
        let retired: u64 = self
            .retired
            .lock()
            .iter()
            .map(Queue::delivery_log_dropped)
            .sum();
        self.current().delivery_log_dropped() + retired
    }

    /// Volatile messages spilled to disk, every generation still known.
    pub fn spilled(&self) -> u64 {
        let retired: u64 = self.retired.lock().iter().map(Queue::spilled).sum();
        self.current().spilled() + retired
    }

    /// Stops every generation: no new attempts; those in flight may finish
    /// until `drain`, then are cut short.
    pub async fn shutdown(&self, drain: Duration) {
        let mut all = vec![self.current()];
        all.extend(self.retired.lock().iter().cloned());
        let stops: Vec<_> = all
            .into_iter()
            .map(|q| tokio::spawn(async move { q.shutdown(drain).await }))
            .collect();
        for stop in stops {
            let _ = stop.await;
        }
    }
}

fn add_counts(into: &mut Vec<RunnerStatus>, from: &[RunnerStatus]) {
    if into.is_empty() {
        into.extend(from.iter().cloned().map(|mut r| {
            r.in_flight = 0;
            r
        }));
        return;
    }
    for (row, o) in into.iter_mut().zip(from) {
        row.attempts += o.attempts;
        row.delivered += o.delivered;
        row.deferred += o.deferred;
        row.failed += o.failed;
    }
}
