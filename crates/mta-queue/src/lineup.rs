//! The jobs handed to a memory runner (ram, bounce) that have not started.
//!
//! They wait here while the runner is paused or every slot is busy, in id
//! (arrival) order and reachable by id. A message waiting here is not in
//! flight: an operator's hold or delete takes its job out and acts at
//! once. (Issue 10: the runner used to hold waiting jobs out of reach, so
//! with delivery paused a hold or delete waited for an attempt that had
//! not begun, and the mail went out on resume.)
//!
//! A job carries its message's claim, so whoever takes it out of the
//! line (the runner, to attempt it; an operator, to act on it) owns the
//! message; the two can never both have it.

use parking_lot::{Mutex, MutexGuard};
use std::collections::BTreeMap;

use mta_envelope::QueueId;
use tokio::sync::Notify;

use crate::job::Job;

/// The line of one memory runner.
#[derive(Default)]
pub(crate) struct Lineup {
    state: Mutex<State>,
    ready: Notify,
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<QueueId, Job>,
    /// The runner has stopped: nothing more joins.
    closed: bool,
}

impl Lineup {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Puts a job in line; gives it back once the runner has stopped.
    // By value, as it came (as mpsc's SendError does): the caller spills it.
    #[allow(clippy::result_large_err)]
    pub fn push(&self, job: Job) -> Result<(), Job> {
        let mut state = self.lock();
        if state.closed {
            return Err(job);
        }
        state.jobs.insert(job.id, job);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Returns once a job waits (it may be taken by an operator before
    /// the runner gets to it: [`pop`](Self::pop) says).
    pub async fn wait(&self) {
        loop {
            // A push between this check and the wait leaves a permit.
            let notified = self.ready.notified();
            if !self.lock().jobs.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// The first job in line.
    pub fn pop(&self) -> Option<Job> {
        self.lock().jobs.pop_first().map(|(_, job)| job)
    }

    /// Takes `id`'s job out of the line, when it waits there.
    pub fn take(&self, id: QueueId) -> Option<Job> {
        self.lock().jobs.remove(&id)
    }

    /// True when `id`'s job waits here.
    pub fn contains(&self, id: QueueId) -> bool {
        self.lock().jobs.contains_key(&id)
    }

    /// Closes the line and returns the jobs still in it.
    pub fn close(&self) -> Vec<Job> {
        let mut state = self.lock();
        state.closed = true;
        std::mem::take(&mut state.jobs).into_values().collect()
    }
}
