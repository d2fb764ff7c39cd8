//! The database the index uses now, or why there is none ([`Slot`]), and
//! the failing of an index.
//!
//! sled 0.34 poisons a database after one failed write: when a flush hits
//! `ENOSPC`, that database returns the error to every later read and
//! write, even once space is back (and reopening it while the disk is
//! still full fails too). Left in place, such an index would refuse every
//! message for good. So the first failed flush *fails* the index: the
//! database is taken out of service at once ([`Slot::fail`]), every
//! index operation answers [`SpoolError::IndexFailed`] (SMTP: `452
//! 4.3.1`), nothing is due, and status says so ([`IndexHealth`]).
//!
//! A reopen (`reopen.rs`) then takes the failed database's journal
//! ([`Slot::take_replay`]), opens the directory again and replays it
//! there; the spool puts the result in service ([`Slot::install`]). A
//! reopen that fails (space is still short) leaves the index failed, its
//! journal kept for the next try.
//!
//! What cannot come back: index writes refused while the index was
//! failed (the callers heard an error: an attempt's outcome is recorded
//! again by the next attempt, a hold was answered as failed), and, if the
//! daemon stops or restarts before a reopen succeeds, the journal itself
//! (the log names the holds among it, [`Slot::shut`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mta_envelope::QueueId;
use parking_lot::RwLock;

use crate::error::SpoolError;
use crate::journal::Op;
use crate::trees::{held_ids, Trees};

/// The state of the index as a whole ([`crate::Spool::index_health`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexHealth {
    /// Set while the index is failed: it cannot be written, mail is
    /// refused with `452 4.3.1` and nothing is delivered from the disk
    /// queue until it is reopened.
    pub failed: Option<IndexFailure>,
    /// Times the index failed since the spool was opened.
    pub failures: u64,
    /// Times it was reopened since.
    pub recoveries: u64,
}

/// Why and since when the index is failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexFailure {
    /// The error that failed it.
    pub cause: String,
    /// The cause is a full file system (or quota).
    pub no_space: bool,
    /// When it failed (ms since the Unix epoch).
    pub since_unix_ms: u64,
}

/// The database the index uses now, or why there is none.
pub(crate) struct Slot {
    state: RwLock<SlotState>,
    failures: AtomicU64,
    recoveries: AtomicU64,
}

enum SlotState {
    Open(Arc<Trees>),
    Failed(Failed),
    Closed,
}

struct Failed {
    failure: IndexFailure,
    /// The failed database, until a reopen has taken its journal.
    retired: Option<Arc<Trees>>,
    /// The writes to replay on the reopened database; `None` when they
    /// are not all known (the journal was full).
    replay: Option<Vec<Op>>,
}

/// How long a reopen waits for the operations still running on the
/// failed database to let go of it (they fail fast: sled refuses them).
const RETIRE_WAIT: Duration = Duration::from_secs(5);

impl Slot {
    /// A slot holding an open database.
    pub fn open(trees: Trees) -> Slot {
        Slot::with(SlotState::Open(Arc::new(trees)))
    }

    /// A slot whose database could not be opened (`error`), with `replay`
    /// to apply once it is.
    pub fn failed(error: &SpoolError, replay: Vec<Op>) -> Slot {
        let slot = Slot::with(SlotState::Failed(Failed {
            failure: failure(error),
            retired: None,
            replay: Some(replay),
        }));
        slot.failures.store(1, Ordering::SeqCst);
        slot
    }

    fn with(state: SlotState) -> Slot {
        Slot {
            state: RwLock::new(state),
            failures: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
        }
    }

    /// The open database, or why there is none.
    pub fn trees(&self) -> Result<Arc<Trees>, SpoolError> {
        match &*self.state.read() {
            SlotState::Open(trees) => Ok(Arc::clone(trees)),
            SlotState::Failed(failed) => Err(SpoolError::IndexFailed {
                cause: failed.failure.cause.clone(),
                no_space: failed.failure.no_space,
            }),
            SlotState::Closed => Err(SpoolError::Closed),
        }
    }

    /// Takes `trees` out of service after `error` (a failed flush): from
    /// now on every operation fails fast until a reopen (`reopen.rs`).
    /// Does nothing if `trees` is no longer the database in use.
    pub fn fail(&self, trees: &Arc<Trees>, error: &SpoolError) {
        let mut state = self.state.write();
        let SlotState::Open(current) = &*state else {
            return;
        };
        if !Arc::ptr_eq(current, trees) {
            return;
        }
        let failure = failure(error);
        tracing::error!(
            error = %failure.cause,
            "the queue index cannot be written: mail gets 452 4.3.1 and the disk queue waits until it is reopened, once space is back; its unsaved changes are kept in memory meanwhile"
        );
        *state = SlotState::Failed(Failed {
            failure,
            retired: Some(Arc::clone(current)),
            replay: Some(Vec::new()),
        });
        self.failures.fetch_add(1, Ordering::SeqCst);
    }

    /// The index's state, for status.
    pub fn health(&self) -> IndexHealth {
        IndexHealth {
            failed: match &*self.state.read() {
                SlotState::Failed(failed) => Some(failed.failure.clone()),
                _ => None,
            },
            failures: self.failures.load(Ordering::SeqCst),
            recoveries: self.recoveries.load(Ordering::SeqCst),
        }
    }

    /// True while the index is failed.
    pub fn is_failed(&self) -> bool {
        matches!(&*self.state.read(), SlotState::Failed(_))
    }

    /// The writes a reopen must replay on the reopened database (`None`
    /// when they are not all known). The failed database's journal is
    /// taken once, after waiting for the operations still holding it
    /// (their writes, refused, are not in it), and kept here for another
    /// try should this reopen fail. [`SpoolError::Closed`] unless the
    /// index is failed.
    pub fn take_replay(&self) -> Result<Option<Vec<Op>>, SpoolError> {
        let retired = match &mut *self.state.write() {
            SlotState::Failed(failed) => failed.retired.take(),
            SlotState::Open(_) => return Err(SpoolError::Closed),
            SlotState::Closed => return Err(SpoolError::Closed),
        };
        if let Some(retired) = retired {
            let began = Instant::now();
            while Arc::strong_count(&retired) > 1 && began.elapsed() < RETIRE_WAIT {
                std::thread::sleep(Duration::from_millis(5));
            }
            let replay = retired.journal.take();
            drop(retired);
            if let SlotState::Failed(failed) = &mut *self.state.write() {
                failed.replay = replay;
            }
        }
        match &*self.state.read() {
            SlotState::Failed(failed) => Ok(failed.replay.clone()),
            _ => Err(SpoolError::Closed),
        }
    }

    /// Puts a reopened database in service.
    pub fn install(&self, trees: Trees) -> Result<(), SpoolError> {
        let mut state = self.state.write();
        if !matches!(&*state, SlotState::Failed(_)) {
            return Err(SpoolError::Closed);
        }
        *state = SlotState::Open(Arc::new(trees));
        self.recoveries.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Closes the slot for good (every later operation gets
    /// [`SpoolError::Closed`]) and lets go of the database. If it was
    /// failed, what it could not save is logged: the next open rebuilds
    /// the index from the spool files, without those changes.
    pub fn shut(&self) {
        let previous = std::mem::replace(&mut *self.state.write(), SlotState::Closed);
        let SlotState::Failed(mut failed) = previous else {
            return;
        };
        let lost = match failed.retired.take() {
            Some(retired) => retired.journal.take(),
            None => failed.replay.take(),
        };
        match lost {
            Some(ops) if ops.is_empty() => {}
            Some(ops) => {
                let held: Vec<String> = held_ids(&ops).iter().map(QueueId::to_string).collect();
                tracing::warn!(
                    changes = ops.len(),
                    held = ?held,
                    "the queue index was not saved: its last changes before the failure are lost (the next start rebuilds it from the spool files); hold these messages again if they are listed"
                );
            }
            None => tracing::warn!(
                "the queue index was not saved: some of its last changes before the failure are lost (the next start rebuilds it from the spool files)"
            ),
        }
    }
}

fn failure(error: &SpoolError) -> IndexFailure {
    IndexFailure {
        cause: error.to_string(),
        no_space: error.is_no_space(),
        since_unix_ms: crate::ids::unix_micros() / 1000,
    }
}
