//! The three runner loops: which job starts when.
//!
//! ram and bounce take jobs from their line (`lineup.rs`: messages
//! already in memory, waiting where an operator can reach them); disk
//! asks the spool's index what is due. All three start each attempt as a
//! task once a slot of their concurrency limit is free, and none starts
//! an attempt while paused or once the stop has begun.
//!
//! An attempt's walk: `attempt::deliver` (the outcomes), then
//! `settle::settle` (the decision, pure), then `commit::commit` (the
//! effects, DSNs first).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mta_envelope::unix_now;
use mta_spool::{QueueName, SpoolError};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, error, warn};

use crate::attempt;
use crate::commit::commit;
use crate::inner::Inner;
use crate::job::Job;
use crate::schedule::random_unit;
use crate::settle::{settle, Attempted};
use crate::store::{Store, StoreError};
use crate::unreadable::{envelope_from_index, Unreadable};

/// Runs one attempt as a task holding `permit`.
fn start_attempt(inner: &Arc<Inner>, queue: QueueName, job: Job, permit: OwnedSemaphorePermit) {
    let in_flight = inner.runner(queue).stats().start();
    let task_inner = inner.clone();
    inner.tasks.spawn(async move {
        let inner = task_inner;
        let job = Arc::new(job);
        let results = attempt::deliver(&inner, &job).await;
        let message = Attempted {
            entry: &job.entry,
            envelope: &job.envelope,
            corrupt: match &job.unreadable {
                Some(Unreadable::Corrupt(reason)) => Some(reason),
                _ => None,
            },
        };
        let settlement = settle(
            message,
            &results,
            &inner.settings,
            unix_now(),
            random_unit(),
        );
        commit(&inner, queue, &job, settlement).await;
        // The claim goes (and the actions waiting for it run) before the
        // attempt is counted out.
        drop(job);
        drop(in_flight);
        drop(permit);
    });
}

/// The ram and bounce runners: first attempts from memory. A job stays
/// in line until a slot is free (and the runner is not paused), so an
/// operator can still take it out.
pub(crate) async fn memory_loop(inner: Arc<Inner>, queue: QueueName) {
    let runner = inner.runner(queue);
    loop {
        tokio::select! {
            biased;
            () = inner.stopping.cancelled() => break,
            () = runner.lineup.wait() => {}
        }
        let Some(permit) = runner.slot(&inner.stopping).await else {
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
    match inner.store_on_disk(&job, &entry).await {
        Ok(()) => {
            inner.spilled.fetch_add(1, Ordering::Relaxed);
            debug!(queue_id = %job.id, "volatile message spilled to the disk queue")
        }
        Err(e) => {
            error!(queue_id = %job.id, error = %e, "LOST: could not spill a volatile message to disk")
        }
    }
}

/// The disk runner: retries whatever the index says is due.
pub(crate) async fn disk_loop(inner: Arc<Inner>) {
    let runner = &inner.disk;
    // Woken after each batch of a background rescan: what it indexed is
    // due now.
    let rescanned = inner.store.blocking().rescan_notify();
    while !inner.stopping.is_cancelled() {
        // Paused, it starts nothing, so it does not walk the schedule
        // either (with the ram runner paused too, every message would be
        // walked past, claimed by it, once a poll).
        if !runner.unpaused(&inner.stopping).await {
            break;
        }
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
        let wait = next_wait(&inner.store, inner.settings.poll_interval);
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
async fn take_due(inner: &Arc<Inner>) -> Result<usize, StoreError> {
    let now = unix_now();
    // Claimed messages (ram attempts, attempts under way) may fill the
    // front of the schedule: the walk passes over them before reading
    // their entries and does not count them. (A message claimed or let go
    // during the walk is found by the claim below or by the next poll.)
    let claims = inner.clone();
    let due = inner
        .store
        .due_unless(now, inner.disk.limit, move |id| {
            claims.steering.claims.is_claimed(id)
        })
        .await?;
    let mut started = 0;
    for (id, _) in due {
        let Some(claim) = inner.claim(id) else {
            continue;
        };
        // The walk's copy of the entry may be stale: an attempt that ended
        // between the walk and the claim has moved the message on (its
        // next attempt, a delay notice sent). Only the entry as it is now,
        // under the claim, counts, and only if the message is still due.
        let entry = match inner.store.entry(id) {
            Ok(Some(entry)) if entry.scheduled().is_some_and(|at| at <= now) => entry,
            Ok(_) => continue,
            Err(e) => {
                warn!(queue_id = %id, error = %e, "disk runner cannot read an index entry");
                continue;
            }
        };
        let Some(permit) = inner.disk.slot(&inner.stopping).await else {
            break;
        };
        let read = inner.store.read(id).await;
        let unreadable = match &read {
            Ok(_) => None,
            Err(StoreError::Spool(SpoolError::NotFound { .. })) => {
                // Removed meanwhile (its index entry is stale).
                let _ = inner.store.remove(id);
                continue;
            }
            // Logged once per attempt, not once per round of this loop:
            // the attempt moves the message on (unreadable.rs).
            Err(StoreError::Spool(e @ SpoolError::Corrupt { .. })) => {
                error!(queue_id = %id, error = %e, "the queued copy of a message is unreadable: its recipients fail (5.3.0), its sender gets a DSN, the file goes to corrupt/");
                Some(Unreadable::of(e))
            }
            Err(StoreError::Spool(e)) => {
                warn!(queue_id = %id, error = %e, "cannot read a queued message: its recipients are deferred (4.3.0) until the next attempt");
                Some(Unreadable::of(e))
            }
            Err(e @ StoreError::Panicked(_)) => {
                error!(queue_id = %id, error = %e, "cannot read a queued message (the read panicked): its recipients are deferred (4.3.0) until the next attempt");
                Some(Unreadable::Failed(e.to_string()))
            }
        };
        let (envelope, content) = match read {
            Ok(message) => message,
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
            claim,
        };
        start_attempt(inner, QueueName::Disk, job, permit);
        started += 1;
    }
    Ok(started)
}

/// How long the disk runner may sleep: until the next message is due, at
/// most `poll`.
fn next_wait(store: &Store, poll: Duration) -> Duration {
    match store.first_due() {
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
