//! Messages per sliding hour per authenticated user: what keeps a stolen
//! password from turning the server into a spam cannon before anyone
//! notices.
//!
//! Counted as mta-deliver's throttle counts a destination's hour: the
//! times of the user's messages in the last hour, oldest first. The SMTP
//! layer reserves one at MAIL FROM (as Postfix's anvil counts
//! `smtpd_client_message_rate_limit`), so an aborted transaction still
//! counts; past the limit MAIL gets a temporary refusal (450 4.7.1) until
//! the oldest message of the hour ages out.
//!
//! Default: 200 messages an hour (a person sends far fewer; a mailing
//! script needs its own per-user limit). Memory is bounded by
//! `max_users` users, those idle for an hour dropped first, then the
//! least recently seen. Time is a parameter (`now`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::name::name_key;

/// The length of the window.
const HOUR: Duration = Duration::from_secs(3600);

/// Per-user message limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateSettings {
    /// Messages per sliding hour for a user without its own limit;
    /// 0: no limit. Default 200.
    pub messages_per_hour: u32,
    /// Limits of particular users (0: none for that user), by name.
    pub per_user: HashMap<String, u32>,
    /// Users remembered at most. Default 10,000.
    pub max_users: usize,
}

impl Default for RateSettings {
    fn default() -> Self {
        RateSettings {
            messages_per_hour: 200,
            per_user: HashMap::new(),
            max_users: 10_000,
        }
    }
}

/// A message refused by the hourly limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimited {
    /// The limit in force.
    pub limit: u32,
    /// When the next message may go.
    pub retry_after: Duration,
}

#[derive(Debug)]
struct State {
    settings: RateSettings,
    /// `per_user` by [`name_key`].
    limits: HashMap<String, u32>,
    windows: HashMap<String, (VecDeque<Instant>, Instant)>,
}

impl State {
    fn limit(&self, key: &str) -> u32 {
        self.limits
            .get(key)
            .copied()
            .unwrap_or(self.settings.messages_per_hour)
    }

    fn make_room(&mut self, now: Instant) {
        let max = self.settings.max_users.max(1);
        if self.windows.len() < max {
            return;
        }
        self.windows.retain(|_, (times, _)| {
            times
                .back()
                .is_some_and(|&t| now.saturating_duration_since(t) < HOUR)
        });
        if self.windows.len() < max {
            return;
        }
        let mut by_age: Vec<(Instant, String)> = self
            .windows
            .iter()
            .map(|(k, (_, seen))| (*seen, k.clone()))
            .collect();
        by_age.sort();
        for (_, key) in by_age.into_iter().take((max / 8).max(1)) {
            self.windows.remove(&key);
        }
    }
}

/// The hourly counts of every user; shared by the sessions and kept
/// across a reload.
#[derive(Debug)]
pub struct MessageRate {
    state: Mutex<State>,
}

impl MessageRate {
    /// Counts with these limits.
    pub fn new(settings: RateSettings) -> Self {
        let limits = keyed(&settings);
        MessageRate {
            state: Mutex::new(State {
                settings,
                limits,
                windows: HashMap::new(),
            }),
        }
    }

    /// New limits (at a reload); the counts are kept.
    pub fn set_settings(&self, settings: RateSettings) {
        let mut state = self.state.lock();
        state.limits = keyed(&settings);
        state.settings = settings;
    }

    /// Counts one message of `user` now, or says why it may not go.
    pub fn reserve(&self, user: &str, now: Instant) -> Result<(), RateLimited> {
        let mut state = self.state.lock();
        let key = name_key(user).into_owned();
        let limit = state.limit(&key);
        if limit == 0 {
            return Ok(());
        }
        if !state.windows.contains_key(&key) {
            state.make_room(now);
        }
        let (times, seen) = state
            .windows
            .entry(key)
            .or_insert_with(|| (VecDeque::new(), now));
        *seen = now;
        while times
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= HOUR)
        {
            times.pop_front();
        }
        if times.len() >= limit as usize {
            // The limit may have been lowered: the message that frees a
            // place is the one `limit` places from the end.
            let freeing = times[times.len() - limit as usize];
            return Err(RateLimited {
                limit,
                retry_after: HOUR.saturating_sub(now.saturating_duration_since(freeing)),
            });
        }
        times.push_back(now);
        Ok(())
    }

    /// Messages of `user` in the hour before `now`.
    pub fn last_hour(&self, user: &str, now: Instant) -> usize {
        let state = self.state.lock();
        state.windows.get(&*name_key(user)).map_or(0, |(times, _)| {
            times
                .iter()
                .filter(|&&t| now.saturating_duration_since(t) < HOUR)
                .count()
        })
    }

    /// Users remembered now.
    pub fn users(&self) -> usize {
        self.state.lock().windows.len()
    }
}

fn keyed(settings: &RateSettings) -> HashMap<String, u32> {
    settings
        .per_user
        .iter()
        .map(|(user, &limit)| (name_key(user).into_owned(), limit))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(default: u32, per_user: &[(&str, u32)]) -> RateSettings {
        RateSettings {
            messages_per_hour: default,
            per_user: per_user.iter().map(|(u, l)| (u.to_string(), *l)).collect(),
            max_users: 100,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_sliding_hour() {
        let rate = MessageRate::new(settings(3, &[]));
        let t0 = Instant::now();
        // (seconds after t0, allowed, retry_after when refused)
        let table: &[(u64, bool, u64)] = &[
            (0, true, 0),
            (600, true, 0),
            (1200, true, 0),
            (1800, false, 1800),
            (3599, false, 1),
            // The first ages out at 3600.
            (3600, true, 0),
            (3601, false, 599),
            (4200, true, 0),
        ];
        for &(at, allowed, retry) in table {
            let got = rate.reserve("joe", t0 + secs(at));
            if allowed {
                assert_eq!(got, Ok(()), "at {at}");
            } else {
                assert_eq!(
                    got,
                    Err(RateLimited {
                        limit: 3,
                        retry_after: secs(retry)
                    }),
                    "at {at}"
                );
            }
        }
        assert_eq!(rate.last_hour("joe", t0 + secs(4200)), 3);
    }

    #[test]
    fn per_user_limits_and_names() {
        let rate = MessageRate::new(settings(1, &[("Bulk@Example.com", 0), ("two", 2)]));
        let t0 = Instant::now();
        for _ in 0..50 {
            assert_eq!(rate.reserve("Bulk@EXAMPLE.com", t0), Ok(()));
        }
        assert!(rate.reserve("two", t0).is_ok());
        assert!(rate.reserve("two", t0).is_ok());
        assert!(rate.reserve("two", t0).is_err());
        assert!(rate.reserve("joe@example.com", t0).is_ok());
        // The same user by domain case; another by local part case.
        assert!(rate.reserve("joe@EXAMPLE.com", t0).is_err());
        assert!(rate.reserve("Joe@example.com", t0).is_ok());
        // No limit at all.
        let free = MessageRate::new(settings(0, &[]));
        for _ in 0..1000 {
            assert!(free.reserve("joe", t0).is_ok());
        }
        assert_eq!(free.users(), 0);
    }

    #[test]
    fn a_lowered_limit_counts_what_was_sent() {
        let rate = MessageRate::new(settings(10, &[]));
        let t0 = Instant::now();
        for n in 0..5 {
            rate.reserve("joe", t0 + secs(n * 60)).unwrap();
        }
        rate.set_settings(settings(2, &[]));
        // Two places free when the 4th message (at 180 s) ages out.
        assert_eq!(
            rate.reserve("joe", t0 + secs(600)),
            Err(RateLimited {
                limit: 2,
                retry_after: secs(3600 + 180 - 600)
            })
        );
    }

    #[test]
    fn users_are_bounded() {
        let mut s = settings(5, &[]);
        s.max_users = 8;
        let rate = MessageRate::new(s);
        let t0 = Instant::now();
        for n in 0..100u64 {
            rate.reserve(&format!("user{n}"), t0 + secs(n)).unwrap();
            assert!(rate.users() <= 8, "at {n}");
        }
        // The most recent users kept their counts.
        assert_eq!(rate.last_hour("user99", t0 + secs(100)), 1);
        assert_eq!(rate.last_hour("user0", t0 + secs(100)), 0);
    }
}
