//! Brute-force limits on AUTH: failures counted per client and per user
//! name, slowing and then locking out whoever keeps failing.
//!
//! Two keys for each failure: the client (an IPv4 address, or an IPv6
//! /64, since one host usually holds a whole /64; an IPv4-mapped IPv6
//! address is its IPv4 address), which stops one machine guessing many
//! passwords or spraying one password over many users; and the user name
//! (as [`name_key`] compares names), which stops a botnet guessing one
//! user's password from many addresses. Each key has its own
//! [`Thresholds`]: after `delay_after` failures within `window`, the
//! reply to each further failure is held back by `delay` (the SMTP layer
//! sleeps before its 535); at `lockout_after` failures within `window`
//! the key is locked out for `lockout_for`: every AUTH from that client,
//! or for that user, gets `421 4.7.0` and the connection is closed, right
//! password or not.
//!
//! A user lockout also locks out the real user: anyone can lock a known
//! name by failing often enough. That is why the user thresholds are
//! higher than the client ones by default (a guesser is stopped by its
//! client key long before), and why the lockout is short.
//!
//! A success forgives the user's own failures (its typos), not the
//! client's: otherwise one account an attacker holds would reset its
//! count between guesses at other users.
//!
//! Memory is bounded: at most `max_entries` keys of each kind; when full,
//! the key touched longest ago goes first (expired ones before all).
//! Time is a parameter (`now`), so the tests need no sleeps.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::name::{name_key, MAX_NAME_LEN};

/// The key of a user name: as [`name_key`] compares it, cut at
/// [`MAX_NAME_LEN`] bytes so that a flood of long made-up names cannot
/// make the entries large (no user has a longer name).
fn user_key(user: &str) -> String {
    let key = name_key(user);
    let mut end = key.len().min(MAX_NAME_LEN);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    key[..end].to_owned()
}

/// Who a client limit counts: an IPv4 address or an IPv6 /64 (the same
/// grouping as mtad's per-client connection limits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An IPv4 address (IPv4-mapped IPv6 included).
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6Net(u64),
}

impl ClientKey {
    /// The client a peer address belongs to.
    pub fn of(ip: IpAddr) -> ClientKey {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(v4),
            IpAddr::V6(v6) => ClientKey::V6Net((u128::from(v6) >> 64) as u64),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::V4(v4) => write!(f, "{v4}"),
            ClientKey::V6Net(net) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*net) << 64)),
        }
    }
}

/// When one key is slowed down and locked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Failures within `window` after which each failure's reply is
    /// delayed; 0: never delayed.
    pub delay_after: u32,
    /// How long a failure's reply is held back then.
    pub delay: Duration,
    /// The window failures are counted in.
    pub window: Duration,
    /// Failures within `window` that lock the key out; 0: never.
    pub lockout_after: u32,
    /// How long a lockout lasts.
    pub lockout_for: Duration,
}

/// The brute-force limits.
///
/// Defaults, per client: from the 3rd failure in 15 minutes each reply is
/// delayed 2 s (what Dovecot does to every failure), at 10 the client is
/// locked out for 15 minutes (fail2ban's classic 5 to 10 tries per 10
/// minutes, a ban of the same order). Per user: delayed from the 5th, a
/// lockout at 30 failures in 15 minutes, for 5 minutes (see the module
/// documentation). At most 10,000 keys of each kind (a few hundred KiB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimiterSettings {
    /// Per client (IPv4 address or IPv6 /64).
    pub client: Thresholds,
    /// Per user name.
    pub user: Thresholds,
    /// Keys remembered of each kind, at most.
    pub max_entries: usize,
}

impl Default for LimiterSettings {
    fn default() -> Self {
        LimiterSettings {
            client: Thresholds {
                delay_after: 3,
                delay: Duration::from_secs(2),
                window: Duration::from_secs(15 * 60),
                lockout_after: 10,
                lockout_for: Duration::from_secs(15 * 60),
            },
            user: Thresholds {
                delay_after: 5,
                delay: Duration::from_secs(2),
                window: Duration::from_secs(15 * 60),
                lockout_after: 30,
                lockout_for: Duration::from_secs(5 * 60),
            },
            max_entries: 10_000,
        }
    }
}

/// Which key a lockout is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Locked {
    /// The client.
    Client(ClientKey),
    /// The user name (as [`name_key`] compares it).
    User(String),
}

/// A lockout in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lockout {
    /// On what.
    pub on: Locked,
    /// Time left.
    pub remaining: Duration,
}

/// What to do after a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Penalty {
    /// Hold the failure's reply back this long (zero: none).
    pub delay: Duration,
    /// This failure locked the client or the user out: answer 421 4.7.0
    /// and close rather than 535.
    pub lockout: Option<Lockout>,
}

/// Counts for /metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimiterCounts {
    /// Failures recorded.
    pub failures: u64,
    /// Lockouts started (one per key locked).
    pub lockouts: u64,
    /// Attempts refused because of a lockout in force.
    pub refused: u64,
    /// Successes recorded.
    pub successes: u64,
}

/// What is known of one key.
#[derive(Debug, Default)]
struct Entry {
    /// Failure times within the window, oldest first, at most
    /// `max(delay_after, lockout_after)` of them.
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
    last_seen: Option<Instant>,
}

impl Entry {
    fn locked(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .filter(|&until| until > now)
            .map(|until| until - now)
    }

    fn forget_old(&mut self, window: Duration, now: Instant) {
        while self
            .failures
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= window)
        {
            self.failures.pop_front();
        }
    }

    /// Nothing left to remember.
    fn idle(&self, window: Duration, now: Instant) -> bool {
        self.locked(now).is_none()
            && self
                .failures
                .back()
                .is_none_or(|&t| now.saturating_duration_since(t) >= window)
    }
}

/// The entries of one kind of key, bounded.
#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Entry>,
    thresholds: Thresholds,
    max_entries: usize,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(thresholds: Thresholds, max_entries: usize) -> Self {
        Table {
            entries: HashMap::new(),
            thresholds,
            max_entries: max_entries.max(1),
        }
    }

    fn locked(&self, key: &K, now: Instant) -> Option<Duration> {
        self.entries.get(key).and_then(|e| e.locked(now))
    }

    /// Records a failure; returns the delay owed and whether this failure
    /// started a lockout (with its length).
    fn fail(&mut self, key: &K, now: Instant) -> (Duration, Option<Duration>) {
        let t = self.thresholds;
        if !self.entries.contains_key(key) {
            self.make_room(now);
        }
        let entry = self.entries.entry(key.clone()).or_default();
        entry.last_seen = Some(now);
        entry.forget_old(t.window, now);
        entry.failures.push_back(now);
        let keep = t.delay_after.max(t.lockout_after).max(1) as usize;
        while entry.failures.len() > keep {
            entry.failures.pop_front();
        }
        let count = entry.failures.len() as u32;
        let delay = if t.delay_after > 0 && count >= t.delay_after {
            t.delay
        } else {
            Duration::ZERO
        };
        let lockout = (t.lockout_after > 0
            && count >= t.lockout_after
            && entry.locked(now).is_none())
        .then(|| {
            entry.locked_until = Some(now + t.lockout_for);
            // A lockout served starts a fresh count.
            entry.failures.clear();
            t.lockout_for
        });
        (delay, lockout)
    }

    fn forgive(&mut self, key: &K) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.failures.clear();
        }
    }

    /// Makes room for one more entry: drops idle ones, and when that is
    /// not enough, the eighth touched longest ago (so the scan is paid
    /// once per many insertions).
    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < self.max_entries {
            return;
        }
        let window = self.thresholds.window;
        self.entries.retain(|_, e| !e.idle(window, now));
        if self.entries.len() < self.max_entries {
            return;
        }
        let mut by_age: Vec<(Option<Instant>, K)> = self
            .entries
            .iter()
            .map(|(k, e)| (e.last_seen, k.clone()))
            .collect();
        by_age.sort_by_key(|(seen, _)| *seen);
        let drop = (self.max_entries / 8).max(1);
        for (_, key) in by_age.into_iter().take(drop) {
            self.entries.remove(&key);
        }
    }
}

#[derive(Debug)]
struct State {
    clients: Table<ClientKey>,
    users: Table<String>,
    counts: LimiterCounts,
}

/// The failure counts, shared by every SMTP session (and kept across a
/// graceful restart, so a reload does not forgive a guesser).
#[derive(Debug)]
pub struct FailureLimiter {
    state: Mutex<State>,
}

impl FailureLimiter {
    /// Limits with these settings.
    pub fn new(settings: &LimiterSettings) -> Self {
        FailureLimiter {
            state: Mutex::new(State {
                clients: Table::new(settings.client, settings.max_entries),
                users: Table::new(settings.user, settings.max_entries),
                counts: LimiterCounts::default(),
            }),
        }
    }

    /// New thresholds (at a reload); what is counted is kept.
    pub fn set_settings(&self, settings: &LimiterSettings) {
        let mut state = self.state.lock();
        state.clients.thresholds = settings.client;
        state.clients.max_entries = settings.max_entries.max(1);
        state.users.thresholds = settings.user;
        state.users.max_entries = settings.max_entries.max(1);
    }

    /// Before a check: a lockout of this client or user in force (the
    /// client's first), which the SMTP layer answers with 421 4.7.0
    /// without checking the password.
    pub fn check(&self, client: IpAddr, user: &str, now: Instant) -> Option<Lockout> {
        let mut state = self.state.lock();
        let client = ClientKey::of(client);
        let user = user_key(user);
        let lockout = if let Some(remaining) = state.clients.locked(&client, now) {
            Some(Lockout {
                on: Locked::Client(client),
                remaining,
            })
        } else {
            state.users.locked(&user, now).map(|remaining| Lockout {
                on: Locked::User(user),
                remaining,
            })
        };
        if lockout.is_some() {
            state.counts.refused += 1;
        }
        lockout
    }

    /// At connect, before any AUTH: how long this client's own lockout
    /// has left, if it is locked out (a user's lockout needs the name, so
    /// it is not seen here). Counted among the refusals, as a locked-out
    /// AUTH is.
    pub fn client_locked(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let mut state = self.state.lock();
        let remaining = state.clients.locked(&ClientKey::of(client), now);
        if remaining.is_some() {
            state.counts.refused += 1;
        }
        remaining
    }

    /// After a rejected password: counts it for the client and the user,
    /// and says how long to hold the reply back and whether to lock out
    /// now.
    pub fn record_failure(&self, client: IpAddr, user: &str, now: Instant) -> Penalty {
        let mut state = self.state.lock();
        let client = ClientKey::of(client);
        let user = user_key(user);
        state.counts.failures += 1;
        let (client_delay, client_lockout) = state.clients.fail(&client, now);
        let (user_delay, user_lockout) = state.users.fail(&user, now);
        state.counts.lockouts +=
            u64::from(client_lockout.is_some()) + u64::from(user_lockout.is_some());
        let lockout = match (client_lockout, user_lockout) {
            (Some(remaining), _) => Some(Lockout {
                on: Locked::Client(client),
                remaining,
            }),
            (None, Some(remaining)) => Some(Lockout {
                on: Locked::User(user),
                remaining,
            }),
            (None, None) => None,
        };
        Penalty {
            delay: client_delay.max(user_delay),
            lockout,
        }
    }

    /// After an accepted password: forgives the user's failures (not the
    /// client's; see the module documentation).
    pub fn record_success(&self, _client: IpAddr, user: &str, _now: Instant) {
        let mut state = self.state.lock();
        state.counts.successes += 1;
        let user = user_key(user);
        state.users.forgive(&user);
    }

    /// The counts so far.
    pub fn counts(&self) -> LimiterCounts {
        self.state.lock().counts
    }

    /// Keys remembered now (clients, users), for the status and tests.
    pub fn entries(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.clients.entries.len(), state.users.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn user_keys_are_bounded() {
        assert_eq!(user_key("Joe@Example.COM"), "Joe@example.com");
        let long = "é".repeat(1000);
        let key = user_key(&long);
        assert!(key.len() <= MAX_NAME_LEN && key.len() >= MAX_NAME_LEN - 1);
        assert!(long.starts_with(&key));
    }

    #[test]
    fn client_keys_table() {
        let table = [
            ("192.0.2.1", "192.0.2.1"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
            ("2001:db8:1:2::99", "2001:db8:1:2::/64"),
            ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ];
        for (addr, key) in table {
            assert_eq!(ClientKey::of(ip(addr)).to_string(), key, "{addr}");
        }
        assert_eq!(
            ClientKey::of(ip("2001:db8::1")),
            ClientKey::of(ip("2001:db8::ffff:1"))
        );
    }

    /// One client, one user: the delays and the lockout as failures come,
    /// step by step, with the default thresholds.
    #[test]
    fn defaults_step_by_step() {
        let limiter = FailureLimiter::new(&LimiterSettings::default());
        let t0 = Instant::now();
        let c = ip("192.0.2.7");
        // (failure number, delay, client locked out by it)
        let mut got = Vec::new();
        for n in 1..=10u64 {
            let now = t0 + secs(n);
            assert_eq!(limiter.check(c, "joe", now), None, "before failure {n}");
            let p = limiter.record_failure(c, "joe", now);
            got.push((
                n,
                p.delay.as_secs(),
                p.lockout.map(|l| l.remaining.as_secs()),
            ));
        }
        let want: Vec<(u64, u64, Option<u64>)> = vec![
            (1, 0, None),
            (2, 0, None),
            (3, 2, None),
            (4, 2, None),
            (5, 2, None),
            (6, 2, None),
            (7, 2, None),
            (8, 2, None),
            (9, 2, None),
            (10, 2, Some(900)),
        ];
        assert_eq!(got, want);
        let at = t0 + secs(11);
        assert_eq!(
            limiter.check(c, "anyone", at),
            Some(Lockout {
                on: Locked::Client(ClientKey::of(c)),
                remaining: secs(899)
            })
        );
        // The same /64's other hosts are the same client; others are not.
        let v6 = FailureLimiter::new(&LimiterSettings::default());
        for n in 0..10 {
            v6.record_failure(ip(&format!("2001:db8::{n}")), &format!("u{n}"), t0);
        }
        assert!(v6.check(ip("2001:db8::ffff"), "x", t0).is_some());
        assert!(v6.check(ip("2001:db8:0:1::1"), "x", t0).is_none());
        // Served: the lockout ends, and the count starts again.
        let after = t0 + secs(10 + 900);
        assert_eq!(limiter.check(c, "joe", after), None);
        let p = limiter.record_failure(c, "joe", after);
        assert_eq!((p.delay, p.lockout), (Duration::ZERO, None));
        assert_eq!(
            limiter.counts(),
            LimiterCounts {
                failures: 11,
                lockouts: 1,
                refused: 1,
                successes: 0
            }
        );
    }

    fn small() -> LimiterSettings {
        LimiterSettings {
            client: Thresholds {
                delay_after: 2,
                delay: secs(1),
                window: secs(60),
                lockout_after: 4,
                lockout_for: secs(100),
            },
            user: Thresholds {
                delay_after: 3,
                delay: secs(3),
                window: secs(60),
                lockout_after: 5,
                lockout_for: secs(50),
            },
            max_entries: 100,
        }
    }

    #[test]
    fn client_locked_sees_the_client_lockout_only() {
        let limiter = FailureLimiter::new(&small());
        let t0 = Instant::now();
        let c = ip("192.0.2.1");
        // Five failures for one user from many clients lock the user, not
        // a client: nothing to see at connect.
        for n in 0..5 {
            limiter.record_failure(ip(&format!("198.51.100.{n}")), "joe", t0);
        }
        assert_eq!(limiter.client_locked(ip("198.51.100.0"), t0), None);
        // Four from one client lock it out for 100 s.
        for n in 0..4 {
            assert_eq!(limiter.client_locked(c, t0 + secs(n)), None);
            limiter.record_failure(c, &format!("u{n}"), t0 + secs(n));
        }
        assert_eq!(limiter.client_locked(c, t0 + secs(10)), Some(secs(93)));
        assert_eq!(limiter.client_locked(ip("192.0.2.2"), t0 + secs(10)), None);
        assert_eq!(limiter.client_locked(c, t0 + secs(103)), None, "over");
        assert_eq!(limiter.counts().refused, 1);
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let limiter = FailureLimiter::new(&small());
        let t0 = Instant::now();
        let c = ip("192.0.2.1");
        // One failure a minute never reaches two in the window.
        for n in 0..10 {
            let p = limiter.record_failure(c, &format!("u{n}"), t0 + secs(60 * n));
            assert_eq!(p.delay, Duration::ZERO, "failure {n}");
        }
        // Two 59 s apart do.
        let t1 = t0 + secs(10_000);
        limiter.record_failure(c, "a", t1);
        assert_eq!(limiter.record_failure(c, "b", t1 + secs(59)).delay, secs(1));
    }

    /// Many clients guessing one user: the user key locks, for everyone.
    #[test]
    fn a_distributed_guess_locks_the_user() {
        let limiter = FailureLimiter::new(&small());
        let t0 = Instant::now();
        let mut penalties = Vec::new();
        for n in 0..5 {
            let p = limiter.record_failure(ip(&format!("198.51.100.{n}")), "Joe@Example.com", t0);
            penalties.push((p.delay.as_secs(), p.lockout.map(|l| l.on)));
        }
        assert_eq!(
            penalties,
            [
                (0, None),
                (0, None),
                (3, None),
                (3, None),
                (3, Some(Locked::User("Joe@example.com".into())))
            ]
        );
        let lockout = limiter.check(ip("203.0.113.9"), "Joe@EXAMPLE.COM", t0 + secs(1));
        assert_eq!(
            lockout,
            Some(Lockout {
                on: Locked::User("Joe@example.com".into()),
                remaining: secs(49)
            })
        );
        assert_eq!(
            limiter.check(ip("203.0.113.9"), "joe@example.com", t0),
            None
        );
    }

    #[test]
    fn a_success_forgives_the_user_not_the_client() {
        let limiter = FailureLimiter::new(&small());
        let t0 = Instant::now();
        let c = ip("192.0.2.1");
        for name in ["joe", "joe", "joe"] {
            limiter.record_failure(c, name, t0);
        }
        limiter.record_success(c, "joe", t0);
        // The client has 4 failures now: locked. The user's count
        // restarted at 1: no delay of its own.
        let p = limiter.record_failure(c, "joe", t0);
        assert!(matches!(
            p.lockout,
            Some(Lockout {
                on: Locked::Client(_),
                ..
            })
        ));
        let p = limiter.record_failure(ip("192.0.2.2"), "joe", t0);
        assert_eq!((p.delay, p.lockout), (Duration::ZERO, None));
        assert_eq!(limiter.counts().successes, 1);
    }

    #[test]
    fn zero_thresholds_never_delay_or_lock() {
        let mut settings = small();
        settings.client = Thresholds {
            delay_after: 0,
            lockout_after: 0,
            ..settings.client
        };
        settings.user = settings.client;
        let limiter = FailureLimiter::new(&settings);
        let t0 = Instant::now();
        for _ in 0..100 {
            let p = limiter.record_failure(ip("192.0.2.1"), "joe", t0);
            assert_eq!((p.delay, p.lockout), (Duration::ZERO, None));
        }
        assert_eq!(limiter.check(ip("192.0.2.1"), "joe", t0), None);
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_go_first() {
        let mut settings = small();
        settings.max_entries = 16;
        let limiter = FailureLimiter::new(&settings);
        let t0 = Instant::now();
        // Lock out one client first; then 1,000 others fail once each,
        // later and within the window, so none is idle.
        let locked = ip("192.0.2.1");
        for _ in 0..4 {
            limiter.record_failure(locked, "x", t0);
        }
        for n in 0..1000u32 {
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            limiter.record_failure(
                addr,
                &format!("user{n}"),
                t0 + Duration::from_millis(u64::from(n) + 1),
            );
            let (clients, users) = limiter.entries();
            assert!(clients <= 16 && users <= 16, "{clients} {users} at {n}");
        }
        // The oldest (the locked client) was evicted; the newest is kept.
        let late = t0 + secs(2);
        assert_eq!(limiter.check(locked, "y", late), None);
        let newest = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 999));
        // Its second failure: delayed only if its first was kept.
        assert_eq!(limiter.record_failure(newest, "z", late).delay, secs(1));
    }

    #[test]
    fn idle_entries_go_before_recent_ones() {
        let mut settings = small();
        settings.max_entries = 4;
        let limiter = FailureLimiter::new(&settings);
        let t0 = Instant::now();
        let recent = ip("192.0.2.200");
        for n in 0..3u8 {
            limiter.record_failure(IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)), "u", t0);
        }
        limiter.record_failure(recent, "u", t0 + secs(100));
        // The first three are out of their window at 120 s: they go, the
        // recent one stays with its count.
        let t1 = t0 + secs(120);
        limiter.record_failure(ip("198.51.100.1"), "v", t1);
        assert_eq!(limiter.entries().0, 2);
        assert_eq!(limiter.record_failure(recent, "w", t1).delay, secs(1));
    }

    #[test]
    fn new_settings_keep_the_counts() {
        let limiter = FailureLimiter::new(&small());
        let t0 = Instant::now();
        let c = ip("192.0.2.1");
        limiter.record_failure(c, "a", t0);
        let mut stricter = small();
        stricter.client.lockout_after = 2;
        limiter.set_settings(&stricter);
        assert!(limiter.record_failure(c, "b", t0).lockout.is_some());
    }
}
