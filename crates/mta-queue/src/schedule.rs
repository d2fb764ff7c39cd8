//! When a deferred message is tried again, and when it expires.
//!
//! qmail's schedule, which GreenArrow keeps: attempt n is due
//! ((n-1) x base)² seconds after arrival, base = 20 s by default, so 0, 400,
//! 1600, 3600... seconds. A little jitter spreads retries of messages that
//! arrived together. A message never outlives its lifetime: once the next
//! attempt would fall after arrival + lifetime, the last attempt is made
//! at that moment, and if it defers too, the message fails with 4.4.7.

use std::time::Duration;

/// The retry schedule and lifetime.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The base of the quadratic schedule.
    pub base: Duration,
    /// Random spread, as a fraction of the wait.
    pub jitter: f64,
    /// How long a message may stay queued.
    pub lifetime: Duration,
}

/// What to do with a message that still has pending recipients after
/// `attempts` attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this unix time.
    RetryAt(u64),
    /// The lifetime is over and the last attempt was made: fail with 4.4.7.
    Expire,
}

impl Schedule {
    /// Seconds after arrival at which attempt `n` (1-based) is due, before
    /// jitter.
    pub fn offset(&self, n: u32) -> f64 {
        let step = f64::from(n.saturating_sub(1)) * self.base.as_secs_f64();
        step * step
    }

    /// The next step for a message that arrived at `arrival` and has had
    /// `attempts` attempts, the last one ending at `now`. `random` is in
    /// [0, 1) and drives the jitter.
    pub fn next(&self, arrival: u64, attempts: u32, now: u64, random: f64) -> Next {
        let expiry = arrival.saturating_add(self.lifetime.as_secs());
        if now >= expiry {
            // This attempt was the last one.
            return Next::Expire;
        }
        let offset = self.offset(attempts + 1);
        let previous = self.offset(attempts);
        let spread = (offset - previous) * self.jitter * random;
        let due = arrival as f64 + offset + spread;
        let due = (due.ceil() as u64).max(now);
        Next::RetryAt(due.min(expiry))
    }
}

/// A cheap random number in [0, 1) for jitter and shuffling; not for
/// anything that needs real randomness.
pub fn random_unit() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            | 1;
    }
    // xorshift64
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qmail() -> Schedule {
        Schedule {
            base: Duration::from_secs(20),
            jitter: 0.0,
            lifetime: Duration::from_secs(5 * 86_400),
        }
    }

    #[test]
    fn qmail_offsets() {
        let s = qmail();
        let offsets: Vec<f64> = (1..=5).map(|n| s.offset(n)).collect();
        assert_eq!(offsets, [0.0, 400.0, 1600.0, 3600.0, 6400.0]);
    }

    #[test]
    fn next_attempt_follows_the_schedule() {
        let s = qmail();
        assert_eq!(s.next(1000, 1, 1000, 0.0), Next::RetryAt(1400));
        assert_eq!(s.next(1000, 2, 1400, 0.0), Next::RetryAt(2600));
        // An attempt that ran late is not scheduled in the past.
        assert_eq!(s.next(1000, 1, 5000, 0.0), Next::RetryAt(5000));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let s = Schedule {
            jitter: 0.1,
            ..qmail()
        };
        for r in [0.0, 0.5, 0.999] {
            let Next::RetryAt(t) = s.next(0, 2, 400, r) else {
                panic!()
            };
            assert!((1600..=1720).contains(&t), "{t}");
        }
    }

    #[test]
    fn last_attempt_at_expiry_then_expire() {
        let s = Schedule {
            lifetime: Duration::from_secs(1000),
            ..qmail()
        };
        // After attempt 2 (at 400) the next would be 1600: past the
        // lifetime, so the last attempt is at 1000.
        assert_eq!(s.next(0, 2, 400, 0.0), Next::RetryAt(1000));
        assert_eq!(s.next(0, 3, 1000, 0.0), Next::Expire);
    }

    #[test]
    fn random_unit_is_in_range() {
        for _ in 0..1000 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r));
        }
    }
}
