//! The stop, passed to every task rather than kept in a global (as
//! mini-redis passes its shutdown), and the orders that start one.

use tokio_util::sync::CancellationToken;

/// How a stop treats sessions and deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// SIGTERM: sessions get 421 at once, attempts are cut short.
    Now,
    /// `mta-init stop`: sessions may finish their transaction, attempts
    /// may finish, each until its deadline.
    Normal,
    /// SIGWINCH: sessions go on until they quit, attempts run, all until
    /// `shutdown.graceful_timeout`.
    Graceful,
}

/// A stop or restart asked for while running.
#[derive(Clone, Copy, Debug)]
pub enum Order {
    Stop(StopKind),
    /// Stop (now, or with the usual deadlines), then start again with
    /// the sockets handed over.
    Restart(StopKind),
}

/// The stop, passed to every task rather than kept in a global.
#[derive(Clone, Default)]
pub struct Shutdown {
    /// The listeners take no new session: they turn connections away
    /// with 421, or, in a restart, leave them in the backlog.
    pub listen_end: CancellationToken,
    /// Set (before `listen_end`) when the stop is a restart.
    pub handover: CancellationToken,
    /// Idle sessions get 421; sessions in a transaction may finish it.
    pub stopping: CancellationToken,
    /// The deadline passed: every session gets 421 now.
    pub deadline: CancellationToken,
    /// The sessions are done: the listening sockets close.
    pub listeners_closed: CancellationToken,
}
