//! The spool's own threads for storing messages: write, fdatasync,
//! rename and, for whichever finds its bucket idle, the directory fsync
//! (commit.rs).
//!
//! Stores used to go to tokio's blocking pool, which starts a thread for
//! every task that finds none idle (up to 512) and shares one mutex among
//! all of them. With 20 sessions storing at once that meant 20 or more
//! threads, each woken for one message and put back to sleep after it:
//! about one futex wake, one wait and two context switches per message
//! besides the I/O, and the mutex contended enough to spin. Here a fixed
//! number of threads (`spool.writers`) take stores from one queue; a
//! thread that finishes a store while others wait takes the next one
//! without sleeping, so a busy spool wakes fewer threads than it stores
//! messages, and nothing else in the daemon (a slow pipe delivery, a long
//! queue listing) can hold the threads stores need.
//!
//! A store never waits for another store (the thread fsyncing a bucket
//! answers the messages renamed meanwhile; the others return at once), so
//! a small pool cannot deadlock; it only bounds how many files are being
//! written and fsynced at once. A job that panics is caught: its thread
//! goes on, and the caller, whose answer was dropped with the job, hears
//! that the spool is gone.
//!
//! How many threads run is set by the disk, up to `spool.writers`. A
//! store that finds none idle starts one while fewer than [`EAGER`] run;
//! beyond that, only when the store at the head of the queue has waited
//! [`GROW_AFTER`] already, which on a disk whose fsyncs take a fraction of
//! a millisecond seldom happens: the few threads there keep taking the
//! next store without sleeping, where one thread per session would each
//! be woken for one message (measured in docs/benchmarks.md). On a disk
//! whose fsyncs take milliseconds stores do wait that long, and the pool
//! grows, one thread per store that finds the queue so late, until the
//! fsyncs in flight keep up or the limit is reached. Threads end after
//! [`IDLE`] without work.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

/// How long a thread with nothing to do waits before it ends.
pub(crate) const IDLE: Duration = Duration::from_secs(10);

/// Threads started as soon as a store finds none idle.
pub(crate) const EAGER: usize = 8;

/// Beyond [`EAGER`] threads, how long the store at the head of the queue
/// must have waited for a new store to start another thread: ten times
/// what a write and fdatasync of a small message take on an SSD or a
/// virtio disk, less than one fsync on a spinning disk. (At 1 ms the pool
/// grew to its limit on a busy two-CPU machine anyway: there stores wait
/// for a CPU, not for the disk, and more threads only add wake-ups.)
pub(crate) const GROW_AFTER: Duration = Duration::from_millis(5);

type Job = Box<dyn FnOnce() + Send>;

/// The pool. Dropping it lets its threads end once the queue is empty.
pub(crate) struct Writers {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    max: usize,
    growth: Growth,
    idle: Duration,
}

/// When a store that finds no thread idle starts one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Growth {
    /// Always while fewer than this many threads run.
    pub eager: usize,
    /// Beyond that, when the head of the queue has waited this long.
    pub after: Duration,
}

impl Growth {
    const DEFAULT: Growth = Growth {
        eager: EAGER,
        after: GROW_AFTER,
    };
}

#[derive(Default)]
struct State {
    /// Stores not yet taken by a thread, each with when it was queued.
    jobs: VecDeque<(Instant, Job)>,
    /// Threads running, working or waiting.
    threads: usize,
    /// Threads waiting for work and not yet called.
    waiting: usize,
    /// Calls made to waiting threads and not yet taken up by one.
    called: usize,
    /// The pool was dropped: threads end when the queue is empty.
    closed: bool,
}

impl Writers {
    /// A pool of at most `max` threads (0 counts as 1).
    pub(crate) fn new(max: usize) -> Writers {
        Writers::with(max, Growth::DEFAULT, IDLE)
    }

    /// [`new`](Self::new), growing as `growth` says and with threads
    /// ending after `idle` without work.
    pub(crate) fn with(max: usize, growth: Growth, idle: Duration) -> Writers {
        Writers {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                max: max.max(1),
                growth,
                idle,
            }),
        }
    }

    /// Runs `job` on one of the pool's threads, as soon as one is free.
    /// Never blocks. If no thread runs and none can be started (the
    /// system refused one), the job runs here rather than never.
    pub(crate) fn run(&self, job: impl FnOnce() + Send + 'static) {
        let shared = &self.shared;
        let now = Instant::now();
        let mut state = shared.state.lock();
        state.jobs.push_back((now, Box::new(job)));
        if state.waiting > 0 {
            state.waiting -= 1;
            state.called += 1;
            drop(state);
            shared.work.notify_one();
            return;
        }
        if !shared.grows(&state, now) {
            // A thread finishing its store takes this one next.
            return;
        }
        state.threads += 1;
        drop(state);
        let worker = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || worker.work());
        if let Err(e) = spawned {
            let mut state = shared.state.lock();
            state.threads -= 1;
            if state.threads > 0 {
                return;
            }
            tracing::warn!(error = %e, "cannot start a spool writer thread; storing on the caller's");
            let stranded: Vec<Job> = state.jobs.drain(..).map(|(_, job)| job).collect();
            drop(state);
            for job in stranded {
                run_caught(job);
            }
        }
    }

    /// Threads running now (for tests).
    #[cfg(test)]
    pub(crate) fn threads(&self) -> usize {
        self.shared.state.lock().threads
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.work.notify_all();
    }
}

impl Shared {
    /// Whether a store queued at `now` that found no thread idle starts
    /// one (see the module's comment).
    fn grows(&self, state: &State, now: Instant) -> bool {
        if state.threads >= self.max {
            return false;
        }
        if state.threads < self.growth.eager {
            return true;
        }
        let head = state.jobs.front().map_or(now, |(queued, _)| *queued);
        now.saturating_duration_since(head) >= self.growth.after
    }

    /// A thread's life: jobs while there are any, then a wait for a call.
    fn work(&self) {
        let mut state = self.state.lock();
        loop {
            if let Some((_, job)) = state.jobs.pop_front() {
                MutexGuard::unlocked(&mut state, || run_caught(job));
                continue;
            }
            if state.closed || !self.wait(&mut state) {
                state.threads -= 1;
                return;
            }
        }
    }

    /// Waits to be called; false when [`IDLE`] passed with no call or the
    /// pool was dropped (the caller then ends the thread).
    fn wait(&self, state: &mut MutexGuard<'_, State>) -> bool {
        state.waiting += 1;
        loop {
            let timed_out = self.work.wait_for(state, self.idle).timed_out();
            if state.called > 0 {
                // Whoever called counted this thread out of `waiting`.
                state.called -= 1;
                return true;
            }
            if timed_out || state.closed {
                state.waiting -= 1;
                return false;
            }
        }
    }
}

/// Runs a job, catching a panic so that its thread goes on. What the job
/// held is dropped in the unwinding, its reply sender among it.
fn run_caught(job: Job) {
    if catch_unwind(AssertUnwindSafe(job)).is_err() {
        tracing::error!("a spool writer job panicked; its message was not stored");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Instant;

    /// Waits (5 s at most) until `done` holds.
    fn until(mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            thread::yield_now();
        }
        done()
    }

    #[test]
    fn no_more_threads_than_the_limit_and_every_job_runs() {
        let pool = Writers::new(3);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let (done_tx, done_rx) = mpsc::channel();
        for i in 0..10 {
            let (running, most, release_rx, done_tx) = (
                running.clone(),
                most.clone(),
                release_rx.clone(),
                done_tx.clone(),
            );
            pool.run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                release_rx.lock().unwrap().recv().unwrap();
                running.fetch_sub(1, Ordering::SeqCst);
                done_tx.send(i).unwrap();
            });
        }
        // Three jobs hold the three threads; the other seven queue.
        assert!(until(|| running.load(Ordering::SeqCst) == 3));
        assert_eq!(pool.threads(), 3);
        for _ in 0..10 {
            release_tx.send(()).unwrap();
        }
        let mut done: Vec<i32> = (0..10)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        done.sort();
        assert_eq!(done, (0..10).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn beyond_the_eager_threads_the_pool_grows_only_for_a_late_queue() {
        let growth = Growth {
            eager: 2,
            after: Duration::from_millis(50),
        };
        let pool = Writers::with(8, growth, IDLE);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let (done_tx, done_rx) = mpsc::channel();
        let started = Arc::new(AtomicUsize::new(0));
        let submit = |i: i32| {
            let (release_rx, done_tx, started) =
                (release_rx.clone(), done_tx.clone(), started.clone());
            pool.run(move || {
                started.fetch_add(1, Ordering::SeqCst);
                release_rx.lock().unwrap().recv().unwrap();
                done_tx.send(i).unwrap();
            });
        };
        // Two stores hold the two eager threads; the next one, heading a
        // fresh queue, waits for them rather than start a third.
        submit(0);
        submit(1);
        assert!(until(|| started.load(Ordering::SeqCst) == 2));
        submit(2);
        assert_eq!(pool.threads(), 2);
        // Once the head of the queue has waited `after` (the time that
        // passes is what is tested), the next store starts a thread,
        // which takes the head.
        thread::sleep(growth.after);
        submit(3);
        assert_eq!(pool.threads(), 3);
        assert!(until(|| started.load(Ordering::SeqCst) == 3));
        for _ in 0..4 {
            release_tx.send(()).unwrap();
        }
        let mut done: Vec<i32> = (0..4)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        done.sort();
        assert_eq!(done, (0..4).collect::<Vec<_>>());
        assert_eq!(pool.threads(), 3);
    }

    #[test]
    fn a_waiting_thread_is_called_rather_than_a_new_one_started() {
        let pool = Writers::new(8);
        for _ in 0..5 {
            let (tx, rx) = mpsc::channel();
            pool.run(move || tx.send(()).unwrap());
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
            // The thread is back waiting before the next job comes.
            assert!(until(|| pool.shared.state.lock().waiting == 1));
        }
        assert_eq!(pool.threads(), 1);
    }

    #[test]
    fn a_panicking_job_leaves_the_pool_working() {
        let pool = Writers::new(1);
        pool.run(|| panic!("a job that fails"));
        let (tx, rx) = mpsc::channel();
        pool.run(move || tx.send(7).unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 7);
        assert_eq!(pool.threads(), 1);
    }

    #[test]
    fn idle_threads_end_and_new_ones_start_when_work_comes() {
        let pool = Writers::with(2, Growth::DEFAULT, Duration::from_millis(20));
        let (tx, rx) = mpsc::channel();
        for _ in 0..2 {
            let tx = tx.clone();
            pool.run(move || tx.send(()).unwrap());
        }
        for _ in 0..2 {
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        assert!(until(|| pool.threads() == 0), "idle threads did not end");
        pool.run(move || tx.send(()).unwrap());
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn dropping_the_pool_ends_its_threads_after_the_queued_jobs() {
        let pool = Writers::new(1);
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let (tx, rx) = mpsc::channel();
        pool.run(move || gate_rx.recv().unwrap());
        for i in 0..3 {
            let tx = tx.clone();
            pool.run(move || tx.send(i).unwrap());
        }
        let shared = Arc::clone(&pool.shared);
        drop(pool);
        gate_tx.send(()).unwrap();
        let got: Vec<i32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, vec![0, 1, 2]);
        assert!(until(|| shared.state.lock().threads == 0));
    }
}
