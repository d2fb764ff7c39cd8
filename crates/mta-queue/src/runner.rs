//! The three runner loops and their counters.
//!
//! ram and bounce take jobs from their line (`lineup.rs`: messages
//! already in memory, waiting where an operator can reach them); disk
//! asks the spool's index what is due. All three start each attempt as a
//! task once a slot of their concurrency limit is free, and none starts
//! an attempt while paused or once the stop has begun.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mta_spool::QueueName;
use serde::Serialize;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, error, warn};

use crate::lineup::Lineup;
use crate::unreadable::{envelope_from_index, Unreadable};
use crate::{unix_now, Inner, Job};

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

    pub fn count(&self, delivered: u64, deferred: u64, failed: u64) {
        self.delivered.fetch_add(delivered, Ordering::Relaxed);
        self.deferred.fetch_add(deferred, Ordering::Relaxed);
        self.failed.fetch_add(failed, Ordering::Relaxed);
    }
}

/// One runner's limit, switch and counters.
pub(crate) struct Runner {
    name: QueueName,
    limit: usize,
    slots: Arc<Semaphore>,
    paused: watch::Sender<bool>,
    started: AtomicBool,
    stats: RunnerStats,
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
            stats: RunnerStats::default(),
            lineup: Lineup::default(),
        }
    }

    pub fn stats(&self) -> &RunnerStats {
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

    /// Waits until the runner is not paused and has a free slot; None once
    /// the stop has begun.
    async fn slot(&self, inner: &Inner) -> Option<OwnedSemaphorePermit> {
        let mut paused = self.paused.subscribe();
        tokio::select! {
            biased;
            () = inner.stopping.cancelled() => return None,
            r = paused.wait_for(|p| !*p) => { r.ok()?; }
        }
        tokio::select! {
            biased;
            () = inner.stopping.cancelled() => None,
            permit = self.slots.clone().acquire_owned() => permit.ok(),
        }
    }
}

/// Runs one attempt as a task holding `permit`.
fn start_attempt(inner: &Arc<Inner>, queue: QueueName, job: Job, permit: OwnedSemaphorePermit) {
    let runner = inner.runner(queue);
    runner.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    runner.stats.attempts.fetch_add(1, Ordering::Relaxed);
    let inner = inner.clone();
    let task_inner = inner.clone();
    inner.tasks.spawn(async move {
        crate::attempt::run(&task_inner, queue, job).await;
        task_inner
            .runner(queue)
            .stats
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
        drop(permit);
    });
}

/// The ram and bounce runners: first attempts from memory. A job stays
/// in line until a slot is free (and the runner is not paused), so an
/// operator can still take it out.
pub(crate) async fn memory_loop(inner: Arc<Inner>, queue: QueueName) {
    let runner = inner.runner(queue);
    runner.started.store(true, Ordering::Relaxed);
    loop {
        tokio::select! {
            biased;
            () = inner.stopping.cancelled() => break,
            () = runner.lineup.wait() => {}
        }
        let Some(permit) = runner.slot(&inner).await else {
            break;
        };
        // None: an operator took it meanwhile; the slot is free again.
        if let Some(job) = runner.lineup.pop() {
            start_attempt(&inner, queue, job, permit);
        }
    }
    runner.started.store(false, Ordering::Relaxed);
    // Whatever is still waiting: durable messages are on disk already and
    // the disk runner takes them after the next start; volatile ones are
    // written to the disk queue now.
    for job in runner.lineup.close() {
        spill(&inner, job).await;
    }
}

/// Makes sure a job that will not be attempted now is in the disk queue.
pub(crate) async fn spill(inner: &Inner, job: Job) {
    if job.on_disk {
        return;
    }
    let mut entry = job.entry.clone();
    entry.queue = QueueName::Disk;
    match store_on_disk(inner, &job, &entry).await {
        Ok(()) => {
            inner.spilled.fetch_add(1, Ordering::Relaxed);
            debug!(queue_id = %job.id, "volatile message spilled to the disk queue")
        }
        Err(e) => {
            error!(queue_id = %job.id, error = %e, "LOST: could not spill a volatile message to disk")
        }
    }
}

/// Writes a volatile message to the spool with `entry` as its state (the
/// disk or the held queue); it is then no longer only in memory.
pub(crate) async fn store_on_disk(
    inner: &Inner,
    job: &Job,
    entry: &mta_spool::IndexEntry,
) -> Result<(), mta_spool::SpoolError> {
    // Stored in the disk queue first, then moved (to the held queue, say)
    // by the update; the claim keeps the disk runner off it meanwhile.
    inner
        .spool
        .store_in(QueueName::Disk, job.id, &job.envelope, job.content.clone())
        .await?;
    inner.steering.forget(job.id);
    inner.spool.update(job.id, entry)
}

/// The disk runner: retries whatever the index says is due.
pub(crate) async fn disk_loop(inner: Arc<Inner>) {
    let runner = &inner.disk;
    runner.started.store(true, Ordering::Relaxed);
    // Woken after each batch of a background rescan: what it indexed is
    // due now.
    let rescanned = inner.spool.rescan_notify();
    while !inner.stopping.is_cancelled() {
        let started = match take_due(&inner).await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "disk runner cannot read the queue index");
                0
            }
        };
        if started > 0 {
            continue;
        }
        let wait = next_wait(&inner.spool, inner.settings.poll_interval);
        tokio::select! {
            () = inner.stopping.cancelled() => break,
            () = inner.disk_wake.notified() => {}
            () = rescanned.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
    runner.started.store(false, Ordering::Relaxed);
}

/// Starts attempts for due messages not claimed elsewhere; returns how
/// many it started.
async fn take_due(inner: &Arc<Inner>) -> Result<usize, mta_spool::SpoolError> {
    let now = unix_now();
    // Claimed messages (ram attempts, attempts under way) may fill the
    // front of the schedule; look past them.
    let limit = inner.disk.limit + inner.claimed();
    let due = inner.spool.due(now, limit)?;
    let mut started = 0;
    for (id, entry) in due {
        let Some(claim) = inner.claim(id) else {
            continue;
        };
        let Some(permit) = inner.disk.slot(inner).await else {
            break;
        };
        let spool = inner.spool.clone();
        let read = tokio::task::spawn_blocking(move || spool.read(id)).await;
        let unreadable = match &read {
            Ok(Ok(_)) => None,
            Ok(Err(mta_spool::SpoolError::NotFound { .. })) => {
                // Removed meanwhile (its index entry is stale).
                let _ = inner.spool.remove(id);
                continue;
            }
            // Logged once per attempt, not once per round of this loop:
            // the attempt moves the message on (unreadable.rs).
            Ok(Err(e @ mta_spool::SpoolError::Corrupt { .. })) => {
                error!(queue_id = %id, error = %e, "the queued copy of a message is unreadable: its recipients fail (5.3.0), its sender gets a DSN, the file goes to corrupt/");
                Some(Unreadable::of(e))
            }
            Ok(Err(e)) => {
                warn!(queue_id = %id, error = %e, "cannot read a queued message: its recipients are deferred (4.3.0) until the next attempt");
                Some(Unreadable::of(e))
            }
            Err(e) => {
                error!(queue_id = %id, error = %e, "cannot read a queued message (the read panicked): its recipients are deferred (4.3.0) until the next attempt");
                Some(Unreadable::Failed(e.to_string()))
            }
        };
        let (envelope, content) = match read {
            Ok(Ok(message)) => message,
            _ => (
                envelope_from_index(&entry, &inner.settings.hostname),
                Vec::new(),
            ),
        };
        let job = Job {
            id,
            envelope,
            content: Arc::new(content),
            entry,
            on_disk: true,
            unreadable,
            _claim: claim,
        };
        start_attempt(inner, QueueName::Disk, job, permit);
        started += 1;
    }
    Ok(started)
}

/// How long the disk runner may sleep: until the next message is due, at
/// most `poll`.
fn next_wait(spool: &mta_spool::Spool, poll: Duration) -> Duration {
    match spool.first_due() {
        Ok(Some(due)) => {
            let now = unix_now();
            if due > now {
                Duration::from_secs(due - now).min(poll)
            } else {
                // Due but claimed by a running attempt: look again soon.
                poll
            }
        }
        _ => poll,
    }
}
