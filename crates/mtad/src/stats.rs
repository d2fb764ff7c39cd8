//! Counters and state that the status report reads while the daemon runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shared, lock-free counters plus the stop clock.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    sessions_open: AtomicU64,
    sessions_in_transaction: AtomicU64,
    accepted_total: AtomicU64,
    stop: Mutex<Option<(Instant, Duration)>>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            started: Instant::now(),
            sessions_open: AtomicU64::new(0),
            sessions_in_transaction: AtomicU64::new(0),
            accepted_total: AtomicU64::new(0),
            stop: Mutex::new(None),
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
