//! Counters and state that the status report reads while the daemon runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mta_config::Role;
use mta_control::StopProgress;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// Why the listener turned a connection away, or a session was cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `smtp.max_connections` reached: `421 4.7.0` at the banner.
    MaxConnections,
    /// The client has `smtp.max_connections_per_client` sessions open.
    ClientConnections,
    /// The client opened `smtp.max_connection_rate_per_client` sessions
    /// this minute.
    ClientRate,
    /// Injection paused (or the spool down): `421 4.3.2`.
    InjectionPaused,
    /// A stop under way: `421 4.3.2`.
    Stopping,
    /// `accept` failed (EMFILE and the like): the connection waits in
    /// the backlog.
    AcceptError,
    /// No complete command line (or TLS handshake) within `idle_timeout`.
    CommandDeadline,
    /// Message text slower than `smtp.min_data_rate`.
    DataDeadline,
    /// The session reached `smtp.max_session_time`.
    SessionCap,
}

impl Refusal {
    /// Every cause, in the order reports show them.
    pub const ALL: [Refusal; 9] = [
        Refusal::MaxConnections,
        Refusal::ClientConnections,
        Refusal::ClientRate,
        Refusal::InjectionPaused,
        Refusal::Stopping,
        Refusal::AcceptError,
        Refusal::CommandDeadline,
        Refusal::DataDeadline,
        Refusal::SessionCap,
    ];

    /// The name in the status report, the metrics and the log.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::ClientConnections => "client_connections",
            Refusal::ClientRate => "client_rate",
            Refusal::InjectionPaused => "injection_paused",
            Refusal::Stopping => "stopping",
            Refusal::AcceptError => "accept_error",
            Refusal::CommandDeadline => "command_deadline",
            Refusal::DataDeadline => "data_deadline",
            Refusal::SessionCap => "session_cap",
        }
    }
}

/// The largest size hint a new session gets from the last message: a
/// session that reads a small message after a large one holds at most
/// this much (and an eighth) it does not need.
pub const MAX_SIZE_HINT: usize = 128 * 1024;

/// Shared, lock-free counters plus the stop clock.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    sessions_open: AtomicU64,
    /// Sessions open per SMTP role, in `Role::ALL` order.
    sessions_open_by_role: [AtomicU64; 3],
    sessions_in_transaction: AtomicU64,
    accepted_total: AtomicU64,
    /// The size of the last message accepted, at most
    /// [`MAX_SIZE_HINT`]: what a new session expects of its first one.
    recent_size: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    /// MAIL commands held by the in-flow control, and their waits in
    /// microseconds.
    in_flow_waits: AtomicU64,
    in_flow_micros: AtomicU64,
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
            sessions_open_by_role: Default::default(),
            sessions_in_transaction: AtomicU64::new(0),
            accepted_total: AtomicU64::new(0),
            recent_size: AtomicU64::new(0),
            refused: Default::default(),
            in_flow_waits: AtomicU64::new(0),
            in_flow_micros: AtomicU64::new(0),
            stop: Mutex::new(None),
            stop_report: watch::Sender::new(None),
            stop_listeners: TaskTracker::new(),
        }
    }

    /// Counts a connection turned away or a session cut off.
    pub fn refused(&self, cause: Refusal) {
        self.refused[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The refusals since start, by cause.
    pub fn refusals(&self) -> impl Iterator<Item = (Refusal, u64)> + '_ {
        Refusal::ALL
            .into_iter()
            .map(|cause| (cause, self.refused[cause as usize].load(Ordering::Relaxed)))
    }

    /// The refusals as the status report carries them.
    pub fn smtp_refused(&self) -> mta_control::SmtpRefused {
        let mut r = mta_control::SmtpRefused::default();
        for (cause, n) in self.refusals() {
            *match cause {
                Refusal::MaxConnections => &mut r.max_connections,
                Refusal::ClientConnections => &mut r.client_connections,
                Refusal::ClientRate => &mut r.client_rate,
                Refusal::InjectionPaused => &mut r.injection_paused,
                Refusal::Stopping => &mut r.stopping,
                Refusal::AcceptError => &mut r.accept_error,
                Refusal::CommandDeadline => &mut r.command_deadline,
                Refusal::DataDeadline => &mut r.data_deadline,
                Refusal::SessionCap => &mut r.session_cap,
            } = n;
        }
        r
    }

    /// Counts a MAIL command the in-flow control held for `waited`.
    pub fn in_flow_waited(&self, waited: Duration) {
        self.in_flow_waits.fetch_add(1, Ordering::Relaxed);
        self.in_flow_micros
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }

    /// MAIL commands the in-flow control held since start, and their
    /// waits in all, in microseconds.
    pub fn in_flow(&self) -> (u64, u64) {
        (
            self.in_flow_waits.load(Ordering::Relaxed),
            self.in_flow_micros.load(Ordering::Relaxed),
        )
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

    /// Counts a message accepted, of `size` octets as stored.
    pub fn message_accepted(&self, size: usize) {
        self.accepted_total.fetch_add(1, Ordering::Relaxed);
        self.recent_size
            .store(size.min(MAX_SIZE_HINT) as u64, Ordering::Relaxed);
    }

    /// What a new session should expect of its first message's size: the
    /// last message accepted, at most [`MAX_SIZE_HINT`]
    /// (`Session::expect_size`).
    pub fn recent_size(&self) -> usize {
        self.recent_size.load(Ordering::Relaxed) as usize
    }

    /// Sessions open now on one SMTP role.
    pub fn sessions_open_on(&self, role: Role) -> u64 {
        self.sessions_open_by_role[role.index()].load(Ordering::Relaxed)
    }

    /// Counts a session on `role` as open until the guard is dropped.
    pub fn session_opened(&self, role: Role) -> SessionGuard<'_> {
        self.sessions_open.fetch_add(1, Ordering::Relaxed);
        self.sessions_open_by_role[role.index()].fetch_add(1, Ordering::Relaxed);
        SessionGuard {
            stats: self,
            role,
            in_transaction: false,
        }
    }

    /// Starts the stop clock with the session deadline.
    pub fn begin_stop(&self, deadline: Duration) {
        let mut stop = self.stop.lock();
        stop.get_or_insert((Instant::now(), deadline));
    }

    /// Time since the stop began and its deadline, while stopping.
    pub fn stop_clock(&self) -> Option<(Duration, Duration)> {
        let stop = self.stop.lock();
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
    role: Role,
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
        self.stats.sessions_open_by_role[self.role.index()].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_has_its_own_counter() {
        for (i, cause) in Refusal::ALL.into_iter().enumerate() {
            assert_eq!(cause as usize, i, "{cause:?}");
        }
        let stats = Stats::new();
        stats.refused(Refusal::DataDeadline);
        stats.refused(Refusal::DataDeadline);
        let counts: Vec<_> = stats.refusals().filter(|(_, n)| *n > 0).collect();
        assert_eq!(counts, vec![(Refusal::DataDeadline, 2)]);
    }

    #[test]
    fn the_status_report_names_the_causes_as_the_log_does() {
        let stats = Stats::new();
        for (i, cause) in Refusal::ALL.into_iter().enumerate() {
            for _ in 0..=i {
                stats.refused(cause);
            }
        }
        let report = stats.smtp_refused();
        let ours: Vec<_> = stats.refusals().map(|(c, n)| (c.label(), n)).collect();
        assert_eq!(report.by_cause().to_vec(), ours);
    }
}
