//! Queue id allocation.
//!
//! An id is the acceptance time in microseconds, bumped when needed so ids
//! are strictly increasing: they sort in arrival order, name files that
//! never collide, and spread over the sixteen buckets by their low digit.
//! Because the generator is seeded above the largest id already on disk,
//! a clock stepping back (or a restart within the same microsecond) cannot
//! hand out an id twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use mta_envelope::QueueId;

/// Hands out strictly increasing ids; safe to share between threads.
#[derive(Debug)]
pub(crate) struct IdGenerator {
    last: AtomicU64,
}

impl IdGenerator {
    /// A generator whose ids are all above `floor`.
    pub fn above(floor: u64) -> Self {
        IdGenerator {
            last: AtomicU64::new(floor),
        }
    }

    /// The last id handed out (or the seed, if none was).
    pub fn last(&self) -> QueueId {
        QueueId::new(self.last.load(Ordering::Relaxed))
    }

    /// Makes sure later ids are above `id` (one stored under an id this
    /// generator did not hand out).
    pub fn observe(&self, id: QueueId) {
        self.last.fetch_max(id.value(), Ordering::Relaxed);
    }

    /// max(now in microseconds, last id + 1).
    pub fn next(&self) -> QueueId {
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = unix_micros().max(last.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return QueueId::new(next),
                Err(actual) => last = actual,
            }
        }
    }
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
