//! The deadlines of one SMTP session, which a client trickling bytes
//! cannot push back.
//!
//! A timeout per read, which every byte resets, let a client sending one
//! byte every few seconds hold its connection slot for ever; fifty of them
//! locked every other sender out. So, as Postfix with
//! `smtpd_per_request_deadline` and `smtpd_min_data_rate`:
//!
//! - a command line must be complete within `idle_timeout` of the moment
//!   the server starts waiting for it (after the banner, after the reply
//!   to the command before), whatever arrives meanwhile;
//! - message text (DATA, a BDAT chunk) starts with `idle_timeout`, and
//!   every n octets received move the deadline on by n / `min_data_rate`
//!   seconds, never to more than `idle_timeout` ahead: a message at the
//!   minimum rate or faster gets through whatever its size, a trickle
//!   falls behind;
//! - the whole session ends at `max_session_time`.

use std::time::{Duration, Instant};

/// Which deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// A command line (or the TLS handshake) took too long.
    Command,
    /// Message text came slower than the minimum rate.
    Data,
    /// The session reached its cap.
    Session,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Command,
    Text,
}

/// The clock of one session.
#[derive(Debug)]
pub struct Deadlines {
    idle: Duration,
    min_rate: u64,
    session_end: Instant,
    phase: Phase,
    until: Instant,
}

impl Deadlines {
    /// Starts the session's clock at `now`, waiting for a command.
    pub fn new(idle: Duration, min_rate: u64, max_session: Duration, now: Instant) -> Deadlines {
        Deadlines {
            idle,
            min_rate: min_rate.max(1),
            session_end: now + max_session,
            phase: Phase::Command,
            until: now + idle,
        }
    }

    /// The server starts waiting for a command: after the banner, after
    /// a reply.
    pub fn await_command(&mut self, now: Instant) {
        self.phase = Phase::Command;
        self.until = now + self.idle;
    }

    /// Message text begins.
    pub fn await_text(&mut self, now: Instant) {
        self.phase = Phase::Text;
        self.until = now + self.idle;
    }

    /// True while message text is awaited.
    pub fn in_text(&self) -> bool {
        self.phase == Phase::Text
    }

    /// `octets` arrived at `now`: message text earns time at the minimum
    /// rate, up to `idle_timeout` ahead; a command line earns nothing.
    pub fn received(&mut self, octets: usize, now: Instant) {
        if self.phase == Phase::Text {
            let earned = Duration::from_secs_f64(octets as f64 / self.min_rate as f64);
            self.until = (self.until + earned).min(now + self.idle);
        }
    }

    /// The next deadline and what passing it means.
    pub fn next(&self) -> (Instant, Expired) {
        if self.session_end <= self.until {
            (self.session_end, Expired::Session)
        } else {
            let which = match self.phase {
                Phase::Command => Expired::Command,
                Phase::Text => Expired::Data,
            };
            (self.until, which)
        }
    }

    /// The deadline for a step that is neither a command nor text (the
    /// TLS handshake): `idle_timeout` from `now`, within the session cap.
    pub fn handshake(&self, now: Instant) -> (Instant, Expired) {
        let until = now + self.idle;
        if self.session_end <= until {
            (self.session_end, Expired::Session)
        } else {
            (until, Expired::Command)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(300);
    const HOUR: Duration = Duration::from_secs(3600);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_command_deadline_does_not_move_with_the_bytes() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(IDLE, 500, HOUR, t0);
        for i in 1..100 {
            d.received(1, t0 + secs(2.0 * i as f64));
        }
        assert_eq!(d.next(), (t0 + IDLE, Expired::Command));
        d.await_command(t0 + secs(10.0));
        assert_eq!(d.next(), (t0 + secs(10.0) + IDLE, Expired::Command));
    }

    #[test]
    fn text_earns_time_at_the_minimum_rate_only() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(IDLE, 500, HOUR, t0);
        d.await_text(t0);
        // One octet every 2 s earns 2 ms each: the trickle falls behind.
        let mut now = t0;
        while now < t0 + IDLE + secs(2.0) {
            now += secs(2.0);
            d.received(1, now);
        }
        let (until, which) = d.next();
        assert_eq!(which, Expired::Data);
        assert!(until < now, "the trickle kept its session");
        assert!(until < t0 + IDLE + secs(1.0));
    }

    #[test]
    fn text_at_the_minimum_rate_never_runs_out() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(IDLE, 500, Duration::from_secs(100_000), t0);
        d.await_text(t0);
        // 25 MiB at 600 octets a second: 12 hours, always ahead.
        let mut now = t0;
        for _ in 0..(25 * 1024 * 1024 / 600) {
            now += secs(1.0);
            d.received(600, now);
            assert!(d.next().0 > now);
        }
    }

    #[test]
    fn time_earned_is_capped_at_idle_timeout_ahead() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(IDLE, 500, HOUR, t0);
        d.await_text(t0);
        // A fast burst banks nothing beyond idle_timeout.
        d.received(10 * 1024 * 1024, t0 + secs(1.0));
        assert_eq!(d.next(), (t0 + secs(1.0) + IDLE, Expired::Data));
    }

    #[test]
    fn the_session_cap_comes_first_when_it_is_nearer() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(IDLE, 500, secs(400.0), t0);
        assert_eq!(d.next().1, Expired::Command);
        d.await_command(t0 + secs(200.0));
        assert_eq!(d.next(), (t0 + secs(400.0), Expired::Session));
        assert_eq!(
            d.handshake(t0 + secs(200.0)),
            (t0 + secs(400.0), Expired::Session)
        );
        assert_eq!(d.handshake(t0), (t0 + IDLE, Expired::Command));
    }
}
