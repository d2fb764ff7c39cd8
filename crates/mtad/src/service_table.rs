//! Each service's switches (down, paused) and its running accept loops:
//! what `svc`, `pause` and the status report read and set. Only state
//! here; starting and stopping the services is `services.rs`, pausing
//! delivery `pausing.rs`.

use std::sync::atomic::{AtomicBool, Ordering};

use mta_config::Role;
use mta_control::Runner;
use mta_spool::QueueName;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::shutdown::Shutdown;

/// The queue runners, in the order the status report shows them.
pub const RUNNERS: [QueueName; 3] = [QueueName::Ram, QueueName::Bounce, QueueName::Disk];

/// The accept loops (or HTTP server tasks) of one service.
pub struct Loops {
    pub down: CancellationToken,
    pub tasks: Vec<JoinHandle<()>>,
}

impl Loops {
    /// Stops the loops and waits for them.
    pub async fn stop(self) {
        self.down.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

#[derive(Default)]
pub struct Services {
    injection_paused: AtomicBool,
    /// `svc down` per SMTP role, in `Role::ALL` order.
    pub smtp_down: [AtomicBool; 3],
    pub http_down: AtomicBool,
    pub spool_down: AtomicBool,
    /// `svc down` per runner, ram, bounce, disk.
    pub runner_down: [AtomicBool; 3],
    /// `pause delivery` per runner.
    pub runner_paused: [AtomicBool; 3],
    /// The accept loops per SMTP role, in `Role::ALL` order.
    pub smtp: [Mutex<Option<Loops>>; 3],
    pub http: Mutex<Option<Loops>>,
    /// What restarting the listener needs.
    pub smtp_with: Mutex<Option<(Shutdown, TaskTracker)>>,
    pub http_with: Mutex<Option<Shutdown>>,
    /// One change at a time (svc, pause, reload).
    pub changing: tokio::sync::Mutex<()>,
}

/// A service's state for the status report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    Down,
    Paused,
    /// Running, short of what it needs.
    Degraded,
}

impl Services {
    /// New connections are turned away with 421.
    pub fn injection_blocked(&self) -> bool {
        self.injection_paused.load(Ordering::Relaxed) || self.spool_down()
    }

    pub fn spool_down(&self) -> bool {
        self.spool_down.load(Ordering::Relaxed)
    }

    pub fn smtp_state(&self, role: Role) -> State {
        if self.smtp_down[role.index()].load(Ordering::Relaxed) {
            State::Down
        } else if self.injection_blocked() {
            State::Paused
        } else {
            State::Up
        }
    }

    pub fn http_state(&self) -> State {
        if self.http_down.load(Ordering::Relaxed) {
            State::Down
        } else {
            State::Up
        }
    }

    /// The spool's state, given whether it is short of what it needs
    /// (`Context::spool_trouble`).
    pub fn spool_state(&self, troubled: bool) -> State {
        if self.spool_down() {
            State::Down
        } else if troubled {
            State::Degraded
        } else {
            State::Up
        }
    }

    pub fn runner_state(&self, queue: QueueName) -> State {
        let i = index(queue);
        if self.runner_down[i].load(Ordering::Relaxed) || self.spool_down() {
            State::Down
        } else if self.runner_paused[i].load(Ordering::Relaxed) {
            State::Paused
        } else {
            State::Up
        }
    }

    /// `pause injection` / `resume injection`.
    pub fn set_injection_paused(&self, paused: bool) {
        self.injection_paused.store(paused, Ordering::Relaxed);
        info!(
            paused,
            "injection {}",
            if paused { "paused" } else { "resumed" }
        );
    }
}

/// The queue a runner delivers from.
pub fn queue_of(runner: Runner) -> QueueName {
    match runner {
        Runner::Ram => QueueName::Ram,
        Runner::Bounce => QueueName::Bounce,
        Runner::Disk => QueueName::Disk,
    }
}

/// A runner's slot in the per-runner switches.
pub fn index(q: QueueName) -> usize {
    match q {
        QueueName::Ram => 0,
        QueueName::Bounce => 1,
        // Held messages have no runner: released, the disk runner takes
        // them.
        QueueName::Disk | QueueName::Held => 2,
    }
}
