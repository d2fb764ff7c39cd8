//! The three runner loops and their counters.
//!
//! ram and bounce take jobs from a channel (messages already in memory);
//! disk asks the spool's index what is due. All three start each attempt
//! as a task once a slot of their concurrency limit is free, and none
//! starts an attempt while paused or once the stop has begun.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mta_spool::{QueueName, Spool};
use serde::Serialize;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, error, warn};

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

/// The ram and bounce runners: first attempts from memory.
pub(crate) async fn memory_loop(
    inner: Arc<Inner>,
    queue: QueueName,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let runner = inner.runner(queue);
    runner.started.store(true, Ordering::Relaxed);
    loop {
        let job = tokio::select! {
            biased;
            () = inner.stopping.cancelled() => break,
            job = jobs.recv() => match job { Some(job) => job, None => break },
        };
        match runner.slot(&inner).await {
            Some(permit) => start_attempt(&inner, queue, job, permit),
            None => {
                spill(&inner, job).await;
                break;
            }
        }
    }
    runner.started.store(false, Ordering::Relaxed);
    // Whatever is still waiting: durable messages are on disk already and
    // the disk runner takes them after the next start; volatile ones are
    // written to the disk queue now.
    jobs.close();
    while let Some(job) = jobs.recv().await {
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
    match store_on_disk(&inner.spool, &job, &entry).await {
        Ok(()) => {
            inner.spilled.fetch_add(1, Ordering::Relaxed);
            debug!(queue_id = %job.id, "volatile message spilled to the disk queue")
        }
        Err(e) => {
            error!(queue_id = %job.id, error = %e, "LOST: could not spill a volatile message to disk")
        }
    }
}

/// Writes a volatile message to the disk queue with `entry` as its state.
pub(crate) async fn store_on_disk(
    spool: &Spool,
    job: &Job,
    entry: &mta_spool::IndexEntry,
) -> Result<(), mta_spool::SpoolError> {
    spool
        .store_in(QueueName::Disk, job.id, &job.envelope, job.content.clone())
        .await?;
    spool.update(job.id, entry)
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
        let (envelope, content) = match read {
            Ok(Ok(message)) => message,
            Ok(Err(mta_spool::SpoolError::NotFound { .. })) => {
                // Removed meanwhile (its index entry is stale).
                let _ = inner.spool.remove(id);
                continue;
            }
            Ok(Err(e)) => {
                error!(queue_id = %id, error = %e, "cannot read a queued message; it stays queued");
                continue;
            }
            Err(e) => {
                error!(queue_id = %id, error = %e, "reading a queued message panicked");
                continue;
            }
        };
        let job = Job {
            id,
            envelope,
            content: Arc::new(content),
            entry,
            on_disk: true,
            _claim: claim,
        };
        start_attempt(inner, QueueName::Disk, job, permit);
        started += 1;
    }
    Ok(started)
}

/// How long the disk runner may sleep: until the next message is due, at
/// most `poll`.
fn next_wait(spool: &Spool, poll: Duration) -> Duration {
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
