//! Counters and state that the status report reads while the daemon runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mta_control::StopProgress;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// Shared, lock-free counters plus the stop clock.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    sessions_open: AtomicU64,
    sessions_in_transaction: AtomicU64,
    accepted_total: AtomicU64,
    stop: Mutex<Option<(Instant, Duration)>>,
    /// The figures of the whole stop, once the queue is saved.
    stop_report: watch::Sender<Option<StopProgress>>,
    /// Clients that asked for the stop and wait for those figures.
    stop_listeners: TaskTracker,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            started: Instant::now(),
            sessions_open: AtomicU64::new(0),
            sessions_in_transaction: AtomicU64::new(0),
            accepted_total: AtomicU64::new(0),
            stop: Mutex::new(None),
            stop_report: watch::Sender::new(None),
            stop_listeners: TaskTracker::new(),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn sessions_open(&self) -> u64 {
        self.sessions_open.load(Ordering::Relaxed)
    }

    pub fn sessions_in_transaction(&self) -> u64 {
        self.sessions_in_transaction.load(Ordering::Relaxed)
    }

    pub fn accepted_total(&self) -> u64 {
        self.accepted_total.load(Ordering::Relaxed)
    }

    pub fn message_accepted(&self) {
        self.accepted_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a session as open until the guard is dropped.
    pub fn session_opened(&self) -> SessionGuard<'_> {
        self.sessions_open.fetch_add(1, Ordering::Relaxed);
        SessionGuard {
            stats: self,
            in_transaction: false,
        }
    }

    /// Starts the stop clock with the session deadline.
    pub fn begin_stop(&self, deadline: Duration) {
        let mut stop = self.stop.lock().expect("stop clock lock");
        stop.get_or_insert((Instant::now(), deadline));
    }

    /// Time since the stop began and its deadline, while stopping.
    pub fn stop_clock(&self) -> Option<(Duration, Duration)> {
        let stop = self.stop.lock().expect("stop clock lock");
        stop.map(|(began, deadline)| (began.elapsed(), deadline))
    }

    /// A client that asked for a stop and will wait for its figures;
    /// taken before the stop is ordered, so the stop waits for it.
    pub fn stop_listener(&self) -> StopListener {
        StopListener {
            report: self.stop_report.subscribe(),
            _listening: self.stop_listeners.token(),
        }
    }

    /// Hands the figures of the stop to the clients waiting for them and
    /// gives them (at most `wait`) to write them out: polling `status`
    /// during a quick stop can miss what it did (issue 10: `stop` spilled
    /// 50 volatile messages and said "0 spilled from memory").
    pub async fn publish_stop_report(&self, report: StopProgress, wait: Duration) {
        self.stop_report.send_replace(Some(report));
        self.stop_listeners.close();
        let _ = tokio::time::timeout(wait, self.stop_listeners.wait()).await;
    }
}

/// Waits for the figures of the stop; the stop waits for it to be
/// dropped (or for its deadline).
pub struct StopListener {
    report: watch::Receiver<Option<StopProgress>>,
    _listening: tokio_util::task::task_tracker::TaskTrackerToken,
}

impl StopListener {
    /// The figures, once the queue is saved; None if the daemon goes
    /// without them.
    pub async fn report(&mut self) -> Option<StopProgress> {
        self.report
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|r| r.clone())
    }
}

/// One open session, and whether it is in a transaction.
pub struct SessionGuard<'a> {
    stats: &'a Stats,
    in_transaction: bool,
}

impl SessionGuard<'_> {
    /// Records whether the session is in the middle of a transaction.
    pub fn set_in_transaction(&mut self, now: bool) {
        if now != self.in_transaction {
            let counter = &self.stats.sessions_in_transaction;
            if now {
                counter.fetch_add(1, Ordering::Relaxed);
            } else {
                counter.fetch_sub(1, Ordering::Relaxed);
            }
            self.in_transaction = now;
        }
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.set_in_transaction(false);
        self.stats.sessions_open.fetch_sub(1, Ordering::Relaxed);
    }
}
