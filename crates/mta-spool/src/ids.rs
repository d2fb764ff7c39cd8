//! Queue id allocation.
//!
//! An id is the acceptance time in microseconds, bumped when needed so ids
//! are strictly increasing: they sort in arrival order, name files that
//! never collide, and spread over the sixteen buckets by their low digit.
//! Because the generator is seeded above the largest id already on disk,
//! a clock stepping back (or a restart within the same microsecond) cannot
//! hand out an id twice.
//!
//! The low digit (the bucket, `Layout::bucket`) is not left to chance:
//! every id handed out in the same window of 2^16 microseconds (about
//! 65 ms) is bumped by up to 15 microseconds to end in that window's digit,
//! and the digit moves on with the window. Messages accepted together are
//! committed together, so they land in one bucket and share its directory
//! fsyncs, rather than each paying for one in a bucket of its own; over
//! any second the sixteen
//! buckets still fill evenly. Nothing reads a bucket from anything but the
//! id, so queues written before keep working.

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

    /// max(now in microseconds, last id + 1), bumped to the digit of
    /// now's window.
    pub fn next(&self) -> QueueId {
        self.next_at(unix_micros)
    }

    fn next_at(&self, clock: impl Fn() -> u64) -> QueueId {
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let now = clock();
            let next = in_window(now.max(last.saturating_add(1)), now);
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

/// Bits of microseconds under a bucket window: 2^16 us, about 65 ms.
const WINDOW_BITS: u32 = 16;

/// The smallest value from `candidate` on whose low hex digit is that of
/// the window `now` falls in.
fn in_window(candidate: u64, now: u64) -> u64 {
    let digit = (now >> WINDOW_BITS) & 0xf;
    let bump = digit.wrapping_sub(candidate & 0xf) & 0xf;
    candidate.saturating_add(bump)
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn ids_of_one_window_share_its_digit_and_still_increase() {
        let window = 1 << WINDOW_BITS;
        let start = 1_800_000_000_000_000u64 / (16 * window) * (16 * window) + 5 * window;
        let now = Cell::new(start);
        let ids = IdGenerator::above(start - 1000);
        let mut last = 0;
        for step in 0..1000 {
            // 2 microseconds apart: faster than one id per 16.
            now.set(start + step * 2);
            let id = ids.next_at(|| now.get()).value();
            assert!(id > last, "{id} after {last}");
            assert_eq!(id & 0xf, 5, "the window's digit");
            assert!(id >= now.get() && id - now.get() < 16 * 1000);
            last = id;
        }
    }

    #[test]
    fn the_digit_moves_on_with_the_window() {
        let window = 1u64 << WINDOW_BITS;
        let start = 1_800_000_000_000_000u64 / (16 * window) * (16 * window);
        let ids = IdGenerator::above(0);
        let mut digits = Vec::new();
        for w in 0..16 {
            let now = start + w * window + 12_345;
            let id = ids.next_at(|| now).value();
            assert!((now..now + 16).contains(&id), "close to the time");
            digits.push(id & 0xf);
        }
        assert_eq!(digits, (0..16).collect::<Vec<_>>(), "every bucket in turn");
    }

    #[test]
    fn above_a_floor_and_after_an_observed_id() {
        let ids = IdGenerator::above(u64::from(u32::MAX) << 20);
        let id = ids.next().value();
        assert!(id > u64::from(u32::MAX) << 20);
        ids.observe(QueueId::new(id + 1000));
        assert!(ids.next().value() > id + 1000);
    }
}
