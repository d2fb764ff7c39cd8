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
use std::sync::atomic::{AtomicUsize, Ordering};

use mta_envelope::QueueId;
use tokio::sync::Notify;

use crate::job::Job;

/// The line of one memory runner.
#[derive(Default)]
pub(crate) struct Lineup {
    state: Mutex<State>,
    ready: Notify,
    /// Woken once each time a job leaves the line while someone waits
    /// for that: the in-flow control ([`crate::Queue::in_flow`]).
    left: Notify,
    /// How many wait in [`Lineup::wait_for_room`]: with none, a departure
    /// leaves no permit behind for a later waiter to find.
    waiting_for_room: AtomicUsize,
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<QueueId, Job>,
    /// The runner has stopped: nothing more joins.
    closed: bool,
}

/// One waiter counted in [`Lineup::waiting_for_room`] until dropped
/// (its wait may end by a timeout, the future dropped).
struct WaitingForRoom<'a>(&'a AtomicUsize);

impl WaitingForRoom<'_> {
    fn count(n: &AtomicUsize) -> WaitingForRoom<'_> {
        n.fetch_add(1, Ordering::SeqCst);
        WaitingForRoom(n)
    }
}

impl Drop for WaitingForRoom<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
        let job = self.lock().jobs.pop_first().map(|(_, job)| job);
        self.left(job.is_some());
        job
    }

    /// Takes `id`'s job out of the line, when it waits there.
    pub fn take(&self, id: QueueId) -> Option<Job> {
        let job = self.lock().jobs.remove(&id);
        self.left(job.is_some());
        job
    }

    fn left(&self, one: bool) {
        if one && self.waiting_for_room.load(Ordering::SeqCst) > 0 {
            self.left.notify_one();
        }
    }

    /// Waits until a job leaves the line (or has left since the last
    /// waiter was let go; each departure lets one waiter go, in the order
    /// they came), or the line is closed. Returns false at once when the
    /// line is empty (or closed): there was nothing to wait for.
    pub async fn wait_for_room(&self) -> bool {
        // Counted, then registered, then the check: a departure after the
        // check is not lost.
        let _waiting = WaitingForRoom::count(&self.waiting_for_room);
        let left = self.left.notified();
        tokio::pin!(left);
        left.as_mut().enable();
        {
            let state = self.lock();
            if state.jobs.is_empty() || state.closed {
                return false;
            }
        }
        left.await;
        true
    }

    /// True when `id`'s job waits here.
    pub fn contains(&self, id: QueueId) -> bool {
        self.lock().jobs.contains_key(&id)
    }

    /// Closes the line and returns the jobs still in it.
    pub fn close(&self) -> Vec<Job> {
        let mut state = self.lock();
        state.closed = true;
        let jobs = std::mem::take(&mut state.jobs).into_values().collect();
        drop(state);
        self.left.notify_waiters();
        jobs
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::job::tests::{job, Owner};

    /// Whether `wait` is still waiting after a while (paused time: the
    /// runtime moves the clock on as soon as nothing else can run).
    async fn still_waiting(wait: impl std::future::Future<Output = bool>) -> bool {
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_room_goes_at_once_only_when_the_line_is_empty() {
        let owner = Arc::new(Owner::default());
        let line = Lineup::default();
        assert!(!still_waiting(line.wait_for_room()).await, "empty line");
        line.push(job(&owner, QueueId::new(1), true)).ok().unwrap();
        line.push(job(&owner, QueueId::new(2), true)).ok().unwrap();
        assert!(still_waiting(line.wait_for_room()).await);
        // A departure while nobody waits leaves nothing for the next
        // waiter to find.
        assert!(line.pop().is_some());
        assert!(still_waiting(line.wait_for_room()).await);
        assert_eq!(line.waiting_for_room.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn each_departure_lets_one_waiter_go_in_order_and_close_lets_all_go() {
        let owner = Arc::new(Owner::default());
        let line = Arc::new(Lineup::default());
        for id in 1..=3 {
            line.push(job(&owner, QueueId::new(id), true)).ok().unwrap();
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for n in 0..3 {
            let (line, tx) = (line.clone(), tx.clone());
            waiters.push(tokio::spawn(async move {
                line.wait_for_room().await;
                tx.send(n).unwrap();
            }));
            // Each is waiting before the next comes.
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "none goes before a departure");
        assert!(line.take(QueueId::new(2)).is_some());
        assert_eq!(rx.recv().await, Some(0));
        assert!(line.pop().is_some());
        assert_eq!(rx.recv().await, Some(1));
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "one each");
        // The line is closed (the runner stops) with a job left in it.
        assert_eq!(line.close().len(), 1);
        assert_eq!(rx.recv().await, Some(2));
        for w in waiters {
            w.await.unwrap();
        }
    }
}
