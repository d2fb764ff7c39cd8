//! Per-destination throttles and back-off: how much we send, and when we
//! stop sending, to one destination.
//!
//! Three limits, by rule ([`ThrottleRule`]) or by the defaults in
//! `[delivery]` ([`DeliveryConfig`]):
//!
//! - connections at once to one destination key (busy and idle), and, for
//!   an `mx:HOST` rule, to that host whatever the domain;
//! - messages per sliding hour, counted when a transaction starts, in one
//!   bucket per rule pattern (`*.example.com` is one bucket for all its
//!   subdomains), per domain for the default, per host for `mx:HOST`;
//! - back-off: a destination key whose attempts end in 4xx
//!   `backoff_after` times in a row, or with any 421 (RFC 5321 section
//!   3.8: the server is closing the channel, typically "too many
//!   connections"), gets no connection for `backoff_for`; its mail is
//!   deferred with 4.4.5 meanwhile. Hammering a server that asked for a
//!   pause is how a sender earns a block list entry.
//!
//! [`Throttles`] holds all of it and is shared by client generations: a
//! graceful reload builds a new `Client` with
//! [`Client::with_throttles`](crate::Client::with_throttles), and a
//! back-off, a connection count or an hourly count must not be forgotten
//! on the way. Back-offs can also be saved and restored across a restart
//! ([`Throttles::backoffs`], [`Throttles::restore`],
//! [`Throttles::changed`]).
//!
//! Time is a parameter inside (`now`), so the unit tests do not sleep.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::limits::{Gate, Gates};
use crate::{ClientError, DeliveryConfig, ServerSignal, ThrottleRule};

/// The length of the sliding window of `max_messages_per_hour`.
const HOUR: Duration = Duration::from_secs(3600);

/// Lowercase, without a trailing dot: how names are compared.
pub(crate) fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A back-off in force: no connection to `key` until `until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// The destination key, e.g. `mx:example.com` or
    /// `relay:smart.test:2525`.
    pub key: String,
    /// When it ends, in Unix seconds (rounded up).
    pub until: u64,
    /// The reply that caused it, e.g. `host mx1.example.com[192.0.2.1]:25
    /// said: 421 4.7.0 too many connections (in reply to MAIL FROM
    /// command)`.
    pub cause: String,
}

/// One hourly bucket, for the status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RateWindow {
    /// The rule pattern (`*.example.com`, `mx:mx1.example.com`) or, under
    /// the default limit, the recipient domain.
    pub bucket: String,
    /// Messages whose transaction started in the last hour.
    pub last_hour: usize,
    /// The limit now in force; 0: none.
    pub limit: u64,
}

/// What [`Throttles::snapshot`] shows: the back-offs in force and the
/// hourly counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ThrottleSnapshot {
    /// Back-offs in force, by key.
    pub backoffs: Vec<Backoff>,
    /// Buckets that counted a message in the last hour, by name.
    pub rates: Vec<RateWindow>,
}

/// The rules of one configuration, ready for lookup.
#[derive(Debug)]
struct Rules {
    max_connections: usize,
    max_messages_per_hour: u64,
    backoff_after: u32,
    backoff_for: Duration,
    /// `example.com`.
    exact: HashMap<String, ThrottleRule>,
    /// `*.example.com` as (`.example.com`, pattern, rule), longest first.
    suffixes: Vec<(String, String, ThrottleRule)>,
    /// `mx:host` by host.
    hosts: HashMap<String, ThrottleRule>,
}

impl Rules {
    fn new(config: &DeliveryConfig) -> Result<Rules, ClientError> {
        let mut rules = Rules {
            max_connections: config.max_per_destination,
            max_messages_per_hour: config.max_messages_per_hour,
            backoff_after: config.backoff_after,
            backoff_for: config.backoff_for,
            exact: HashMap::new(),
            suffixes: Vec::new(),
            hosts: HashMap::new(),
        };
        for (pattern, rule) in &config.throttle {
            let bad = |reason: &str| ClientError::Throttle {
                pattern: pattern.clone(),
                reason: reason.to_owned(),
            };
            let name = normalize(pattern);
            if let Some(host) = name.strip_prefix("mx:") {
                if host.is_empty() {
                    return Err(bad("a host name is needed after mx:"));
                }
                rules.hosts.insert(host.to_owned(), *rule);
            } else if let Some(domain) = name.strip_prefix("*.") {
                if domain.is_empty() || domain.contains('*') {
                    return Err(bad("a domain is needed after *."));
                }
                rules
                    .suffixes
                    .push((format!(".{domain}"), format!("*.{domain}"), *rule));
            } else if name.is_empty() || name.contains('*') {
                return Err(bad(
                    "a pattern is example.com, *.example.com or mx:mx1.example.com",
                ));
            } else {
                rules.exact.insert(name, *rule);
            }
        }
        rules
            .suffixes
            .sort_by_key(|(suffix, _, _)| std::cmp::Reverse(suffix.len()));
        Ok(rules)
    }

    /// The rule for a recipient domain (normalized): exact first, then the
    /// longest `*.` suffix; with its pattern.
    fn rule_for(&self, domain: &str) -> Option<(String, &ThrottleRule)> {
        if let Some(rule) = self.exact.get(domain) {
            return Some((domain.to_owned(), rule));
        }
        self.suffixes
            .iter()
            .find(|(suffix, _, _)| domain.ends_with(suffix.as_str()))
            .map(|(_, pattern, rule)| (pattern.clone(), rule))
    }

    /// Connections at once to one destination key for `domain`.
    fn connection_limit(&self, domain: &str) -> usize {
        self.rule_for(domain)
            .and_then(|(_, rule)| rule.max_connections)
            .unwrap_or(self.max_connections)
            .max(1)
    }

    /// The hourly bucket of `domain` and its limit, when there is one.
    fn domain_rate(&self, domain: &str) -> Option<(String, u64)> {
        let (bucket, limit) = match self.rule_for(domain) {
            Some((
                pattern,
                ThrottleRule {
                    max_messages_per_hour: Some(n),
                    ..
                },
            )) => (pattern, *n),
            _ => (domain.to_owned(), self.max_messages_per_hour),
        };
        (limit > 0).then_some((bucket, limit))
    }

    /// The limit of a bucket under these rules, for the status.
    fn bucket_limit(&self, bucket: &str) -> u64 {
        let rule = if let Some(host) = bucket.strip_prefix("mx:") {
            self.hosts.get(host)
        } else if bucket.starts_with("*.") {
            self.suffixes
                .iter()
                .find(|(_, pattern, _)| pattern == bucket)
                .map(|(_, _, rule)| rule)
        } else {
            self.exact.get(bucket)
        };
        match rule {
            Some(ThrottleRule {
                max_messages_per_hour: Some(n),
                ..
            }) => *n,
            _ if bucket.starts_with("mx:") || bucket.starts_with("*.") => 0,
            _ => self.max_messages_per_hour,
        }
    }
}

/// What is known of one destination key.
#[derive(Debug, Default)]
struct KeyState {
    /// Attempts in a row that ended in 4xx.
    transient: u32,
    /// The back-off in force, if any.
    backoff: Option<Active>,
}

#[derive(Clone, Debug)]
struct Active {
    until: SystemTime,
    cause: String,
}

#[derive(Debug, Default)]
struct State {
    /// Send times in the last hour, oldest first, by bucket; only buckets
    /// with a limit are kept, so each holds at most its limit.
    windows: HashMap<String, VecDeque<SystemTime>>,
    keys: HashMap<String, KeyState>,
}

impl State {
    /// The window of `bucket` without the times older than an hour.
    fn window(&mut self, bucket: &str, now: SystemTime) -> &mut VecDeque<SystemTime> {
        let window = self.windows.entry(bucket.to_owned()).or_default();
        while window.front().is_some_and(|&t| t + HOUR <= now) {
            window.pop_front();
        }
        window
    }
}

#[derive(Debug)]
struct Inner {
    rules: RwLock<Arc<Rules>>,
    state: Mutex<State>,
    /// Connections by destination key.
    keys: Gates,
    /// Connections by `mx:` rule host.
    hosts: Gates,
    /// Counts changes to the back-off table.
    changed: watch::Sender<u64>,
}

/// The throttles and back-offs of the outbound client, shared by every
/// client generation that is given it. Cheap to clone: clones share
/// everything.
#[derive(Clone, Debug)]
pub struct Throttles {
    inner: Arc<Inner>,
}

/// Messages counted in hourly windows, taken back unless
/// [`commit`](Reservation::commit)ted: a message counts only when its
/// transaction starts.
#[derive(Debug)]
pub(crate) struct Reservation {
    inner: Arc<Inner>,
    entries: Vec<(String, SystemTime)>,
}

impl Reservation {
    /// Takes `other`'s entries over.
    pub fn absorb(&mut self, mut other: Reservation) {
        self.entries.append(&mut other.entries);
    }

    /// The messages count for good.
    pub fn commit(mut self) {
        self.entries.clear();
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.entries.is_empty() {
            return;
        }
        let mut state = self.inner.state.lock();
        for (bucket, at) in self.entries.drain(..) {
            if let Some(window) = state.windows.get_mut(&bucket) {
                if let Some(i) = window.iter().rposition(|&t| t == at) {
                    window.remove(i);
                }
            }
        }
    }
}

/// Unix seconds, rounded up.
fn unix_seconds(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A duration to the second, at least one, for reasons.
fn rounded(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1)))
}

impl Throttles {
    /// Empty throttles with the rules of `config`. Fails on a pattern that
    /// is not one (the configuration's check reports those first).
    pub fn new(config: &DeliveryConfig) -> Result<Throttles, ClientError> {
        Ok(Throttles {
            inner: Arc::new(Inner {
                rules: RwLock::new(Arc::new(Rules::new(config)?)),
                state: Mutex::new(State::default()),
                keys: Gates::default(),
                hosts: Gates::default(),
                changed: watch::Sender::new(0),
            }),
        })
    }

    /// Replaces the rules with those of a new configuration, keeping every
    /// count and back-off. Connections already open stay open; new limits
    /// apply to the next connection (and to those already waiting).
    pub fn set_rules(&self, config: &DeliveryConfig) -> Result<(), ClientError> {
        let rules = Rules::new(config)?;
        *self.inner.rules.write() = Arc::new(rules);
        self.inner.keys.wake_all();
        self.inner.hosts.wake_all();
        Ok(())
    }

    fn rules(&self) -> Arc<Rules> {
        self.inner.rules.read().clone()
    }

    /// The back-offs in force, to save them (e.g. in the spool).
    pub fn backoffs(&self) -> Vec<Backoff> {
        self.backoffs_at(SystemTime::now())
    }

    fn backoffs_at(&self, now: SystemTime) -> Vec<Backoff> {
        let state = self.inner.state.lock();
        let mut out: Vec<Backoff> = state
            .keys
            .iter()
            .filter_map(|(key, s)| {
                let active = s.backoff.as_ref().filter(|a| a.until > now)?;
                Some(Backoff {
                    key: key.clone(),
                    until: unix_seconds(active.until),
                    cause: active.cause.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Takes back saved back-offs, e.g. after a restart; those already
    /// over are dropped. A back-off in force that ends later is kept.
    pub fn restore(&self, backoffs: Vec<Backoff>) {
        self.restore_at(backoffs, SystemTime::now());
    }

    fn restore_at(&self, backoffs: Vec<Backoff>, now: SystemTime) {
        let mut changed = false;
        let mut state = self.inner.state.lock();
        for b in backoffs {
            let until = UNIX_EPOCH + Duration::from_secs(b.until);
            if until <= now {
                continue;
            }
            let key = state.keys.entry(b.key).or_default();
            if key.backoff.as_ref().is_some_and(|a| a.until >= until) {
                continue;
            }
            key.backoff = Some(Active {
                until,
                cause: b.cause,
            });
            changed = true;
        }
        drop(state);
        if changed {
            self.notify_changed();
        }
    }

    /// A receiver whose value goes up whenever the back-off table changes
    /// (a back-off starts, ends or is restored): save
    /// [`backoffs`](Self::backoffs) when it does.
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    fn notify_changed(&self) {
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The back-offs in force and the hourly counts, for the status.
    pub fn snapshot(&self) -> ThrottleSnapshot {
        self.snapshot_at(SystemTime::now())
    }

    fn snapshot_at(&self, now: SystemTime) -> ThrottleSnapshot {
        let rules = self.rules();
        let backoffs = self.backoffs_at(now);
        let mut state = self.inner.state.lock();
        let buckets: Vec<String> = state.windows.keys().cloned().collect();
        let mut rates: Vec<RateWindow> = buckets
            .into_iter()
            .filter_map(|bucket| {
                let last_hour = state.window(&bucket, now).len();
                (last_hour > 0).then(|| RateWindow {
                    limit: rules.bucket_limit(&bucket),
                    bucket,
                    last_hour,
                })
            })
            .collect();
        rates.sort_by(|a, b| a.bucket.cmp(&b.bucket));
        ThrottleSnapshot { backoffs, rates }
    }

    /// Why `key` gets no connection now, if it is backed off.
    pub(crate) fn backed_off(&self, key: &str, now: SystemTime) -> Option<String> {
        let mut state = self.inner.state.lock();
        let s = state.keys.get_mut(key)?;
        let active = s.backoff.as_ref()?;
        if active.until <= now {
            s.backoff = None;
            drop(state);
            self.notify_changed();
            return None;
        }
        let left = active.until.duration_since(now).unwrap_or_default();
        Some(format!(
            "local back-off: {key} is not tried until {} ({} from now) after: {}",
            humantime::format_rfc3339_seconds(active.until),
            rounded(left),
            active.cause,
        ))
    }

    /// Counts how an attempt to `key` ended: a 4xx ending counts towards
    /// the back-off, a 421 backs off at once, an answer resets the count.
    pub(crate) fn record(&self, key: &str, signal: &ServerSignal, now: SystemTime) {
        let rules = self.rules();
        let mut state = self.inner.state.lock();
        let cause = match signal {
            ServerSignal::Silent => return,
            ServerSignal::Answered => {
                if let Some(s) = state.keys.get_mut(key) {
                    s.transient = 0;
                }
                return;
            }
            ServerSignal::Closing { reply } => reply.clone(),
            ServerSignal::Transient { reply } => {
                let s = state.keys.entry(key.to_owned()).or_default();
                s.transient = s.transient.saturating_add(1);
                if rules.backoff_after == 0 || s.transient < rules.backoff_after {
                    return;
                }
                format!(
                    "{} attempts in a row ended in 4xx, the last: {reply}",
                    s.transient
                )
            }
        };
        let s = state.keys.entry(key.to_owned()).or_default();
        s.transient = 0;
        if rules.backoff_for.is_zero() {
            return;
        }
        let until = now + rules.backoff_for;
        if s.backoff.as_ref().is_some_and(|a| a.until >= until) {
            return;
        }
        tracing::info!(
            key,
            until = %humantime::format_rfc3339_seconds(until),
            %cause,
            "destination backed off"
        );
        s.backoff = Some(Active { until, cause });
        drop(state);
        self.notify_changed();
    }

    /// Counts one message for `domain` in its hourly bucket, or says why
    /// it may not go now.
    pub(crate) fn reserve_domain(
        &self,
        domain: &str,
        now: SystemTime,
    ) -> Result<Reservation, String> {
        let rate = self.rules().domain_rate(&normalize(domain));
        self.reserve(rate, now)
    }

    /// The same for an `mx:` rule host (normalized); an empty reservation
    /// when it has no hourly limit.
    pub(crate) fn reserve_host(&self, host: &str, now: SystemTime) -> Result<Reservation, String> {
        let rate = self
            .rules()
            .hosts
            .get(host)
            .and_then(|rule| rule.max_messages_per_hour)
            .filter(|&n| n > 0)
            .map(|n| (format!("mx:{host}"), n));
        self.reserve(rate, now)
    }

    fn reserve(&self, rate: Option<(String, u64)>, now: SystemTime) -> Result<Reservation, String> {
        let mut reservation = Reservation {
            inner: self.inner.clone(),
            entries: Vec::new(),
        };
        let Some((bucket, limit)) = rate else {
            return Ok(reservation);
        };
        let mut state = self.inner.state.lock();
        let window = state.window(&bucket, now);
        if window.len() as u64 >= limit {
            let next = window
                .front()
                .and_then(|&t| (t + HOUR).duration_since(now).ok())
                .unwrap_or_default();
            return Err(format!(
                "local throttle: at most {limit} messages per hour to {bucket}; \
                 the next may go in {}",
                rounded(next)
            ));
        }
        window.push_back(now);
        drop(state);
        reservation.entries.push((bucket, now));
        Ok(reservation)
    }

    /// Connections at once to one destination key of `domain`.
    pub(crate) fn connection_limit(&self, domain: &str) -> usize {
        self.rules().connection_limit(&normalize(domain))
    }

    /// The gate counting connections to a destination key.
    pub(crate) fn key_gate(&self, key: &str) -> Arc<Gate> {
        self.inner.keys.get(key)
    }

    /// The `mx:` rule of a host (normalized), if any.
    pub(crate) fn host_rule(&self, host: &str) -> Option<ThrottleRule> {
        self.rules().hosts.get(host).copied()
    }

    /// The gate counting connections to an `mx:` rule host.
    pub(crate) fn host_gate(&self, host: &str) -> Arc<Gate> {
        self.inner.hosts.get(host)
    }

    /// Forgets what no longer matters: unused gates, hours gone by, and
    /// back-offs that are over.
    pub(crate) fn prune(&self, now: SystemTime) {
        self.inner.keys.prune();
        self.inner.hosts.prune();
        let mut state = self.inner.state.lock();
        let buckets: Vec<String> = state.windows.keys().cloned().collect();
        for bucket in buckets {
            if state.window(&bucket, now).is_empty() {
                state.windows.remove(&bucket);
            }
        }
        let mut ended = false;
        state.keys.retain(|_, s| {
            if s.backoff.as_ref().is_some_and(|a| a.until <= now) {
                s.backoff = None;
                ended = true;
            }
            s.backoff.is_some() || s.transient > 0
        });
        drop(state);
        if ended {
            self.notify_changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rules: &[(&str, Option<usize>, Option<u64>)]) -> DeliveryConfig {
        DeliveryConfig {
            max_per_destination: 20,
            max_messages_per_hour: 0,
            backoff_after: 3,
            backoff_for: Duration::from_secs(300),
            throttle: rules
                .iter()
                .map(|&(p, c, m)| {
                    (
                        p.to_owned(),
                        ThrottleRule {
                            max_connections: c,
                            max_messages_per_hour: m,
                        },
                    )
                })
                .collect(),
            ..DeliveryConfig::default()
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn transient(n: u32) -> ServerSignal {
        ServerSignal::Transient {
            reply: format!("host mx[127.0.0.1]:25 said: 451 4.3.0 busy {n}"),
        }
    }

    #[test]
    fn rules_match_exact_then_the_longest_suffix_then_the_default() {
        let t = Throttles::new(&config(&[
            ("Example.COM.", Some(2), None),
            ("*.example.com", Some(3), None),
            ("*.eu.example.com", Some(4), None),
            ("mx:MX1.example.net.", Some(5), None),
        ]))
        .unwrap();
        assert_eq!(t.connection_limit("example.com"), 2);
        assert_eq!(t.connection_limit("EXAMPLE.com."), 2);
        assert_eq!(t.connection_limit("a.example.com"), 3);
        assert_eq!(t.connection_limit("b.a.example.com"), 3);
        assert_eq!(t.connection_limit("x.eu.example.com"), 4);
        assert_eq!(t.connection_limit("eu.example.com"), 3);
        assert_eq!(t.connection_limit("notexample.com"), 20);
        assert_eq!(t.connection_limit("example.org"), 20);
        assert_eq!(
            t.host_rule("mx1.example.net").unwrap().max_connections,
            Some(5)
        );
        assert_eq!(t.host_rule("example.net"), None);
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "*.", "mx:", "a*.test", "*.*.test"] {
            let err = Throttles::new(&config(&[(bad, Some(1), None)])).unwrap_err();
            assert!(matches!(err, ClientError::Throttle { .. }), "{bad:?}");
        }
    }

    #[test]
    fn the_hourly_window_slides() {
        let t = Throttles::new(&config(&[("*.example.com", None, Some(3))])).unwrap();
        let mut held = Vec::new();
        for s in 0..3 {
            held.push(t.reserve_domain("a.example.com", at(s * 10)).unwrap());
        }
        // One bucket for every subdomain.
        let err = t.reserve_domain("b.example.com", at(100)).unwrap_err();
        assert!(
            err.contains("at most 3 messages per hour to *.example.com"),
            "{err}"
        );
        assert!(err.contains("next may go in 58m 20s"), "{err}");
        held.into_iter().for_each(Reservation::commit);
        assert!(t.reserve_domain("b.example.com", at(3599)).is_err());
        // An hour after the first, one more may go.
        t.reserve_domain("b.example.com", at(3600))
            .unwrap()
            .commit();
        assert!(t.reserve_domain("b.example.com", at(3605)).is_err());
        // The apex is not matched by *.: no limit.
        for s in 0..10 {
            t.reserve_domain("example.com", at(s)).unwrap().commit();
        }
        assert_eq!(
            t.snapshot_at(at(3605)).rates,
            [RateWindow {
                bucket: "*.example.com".into(),
                last_hour: 3,
                limit: 3,
            }]
        );
    }

    #[test]
    fn a_reservation_not_committed_is_taken_back() {
        let t = Throttles::new(&DeliveryConfig {
            max_messages_per_hour: 1,
            ..config(&[])
        })
        .unwrap();
        let first = t.reserve_domain("a.test", at(0)).unwrap();
        assert!(t.reserve_domain("a.test", at(1)).is_err());
        // Per domain under the default.
        t.reserve_domain("b.test", at(1)).unwrap().commit();
        drop(first);
        t.reserve_domain("a.test", at(2)).unwrap().commit();
        assert!(t.reserve_domain("A.test.", at(3)).is_err());
    }

    #[test]
    fn host_rules_count_by_host() {
        let t = Throttles::new(&config(&[
            ("mx:mx1.test", None, Some(1)),
            ("mx:mx2.test", Some(1), None),
        ]))
        .unwrap();
        t.reserve_host("mx1.test", at(0)).unwrap().commit();
        let err = t.reserve_host("mx1.test", at(1)).unwrap_err();
        assert!(err.contains("to mx:mx1.test"), "{err}");
        // No hourly limit: nothing counted.
        for s in 0..5 {
            t.reserve_host("mx2.test", at(s)).unwrap().commit();
            t.reserve_host("other.test", at(s)).unwrap().commit();
        }
        let rates = t.snapshot_at(at(2)).rates;
        assert_eq!(rates.len(), 1);
        assert_eq!(rates[0].bucket, "mx:mx1.test");
    }

    #[test]
    fn consecutive_4xx_endings_back_off_and_an_answer_resets_the_count() {
        let t = Throttles::new(&config(&[])).unwrap();
        let key = "mx:a.test";
        t.record(key, &transient(1), at(0));
        t.record(key, &transient(2), at(1));
        t.record(key, &ServerSignal::Answered, at(2));
        t.record(key, &transient(3), at(3));
        t.record(key, &ServerSignal::Silent, at(4));
        t.record(key, &transient(4), at(5));
        assert_eq!(t.backed_off(key, at(6)), None);
        t.record(key, &transient(5), at(10));
        let reason = t.backed_off(key, at(11)).expect("backed off");
        assert!(reason.contains("mx:a.test"), "{reason}");
        assert!(
            reason.contains("3 attempts in a row ended in 4xx"),
            "{reason}"
        );
        assert!(reason.contains("451 4.3.0 busy 5"), "{reason}");
        assert!(reason.contains("4m 59s from now"), "{reason}");
        assert!(reason.contains("2023-11-14T22:18:30Z"), "{reason}");
        // Other keys are not affected.
        assert_eq!(t.backed_off("mx:b.test", at(11)), None);
        // It ends by itself.
        assert!(t.backed_off(key, at(309)).is_some());
        assert_eq!(t.backed_off(key, at(310)), None);
        // And the count starts again.
        t.record(key, &transient(6), at(311));
        assert_eq!(t.backed_off(key, at(312)), None);
    }

    #[test]
    fn a_421_backs_off_at_once_even_with_backoff_after_0() {
        let t = Throttles::new(&DeliveryConfig {
            backoff_after: 0,
            ..config(&[])
        })
        .unwrap();
        for n in 0..10 {
            t.record("mx:a.test", &transient(n), at(0));
        }
        assert_eq!(t.backed_off("mx:a.test", at(1)), None);
        let mut changed = t.changed();
        assert!(!changed.has_changed().unwrap());
        t.record(
            "mx:a.test",
            &ServerSignal::Closing {
                reply: "host mx said: 421 4.7.0 too many connections".into(),
            },
            at(1),
        );
        assert!(changed.has_changed().unwrap());
        changed.mark_unchanged();
        let reason = t.backed_off("mx:a.test", at(2)).unwrap();
        assert!(
            reason.contains("421 4.7.0 too many connections"),
            "{reason}"
        );
        // Over: the table changes again when the end is noticed.
        t.prune(at(400));
        assert!(changed.has_changed().unwrap());
        assert!(t.backoffs_at(at(400)).is_empty());
    }

    #[test]
    fn backoff_for_zero_never_backs_off() {
        let t = Throttles::new(&DeliveryConfig {
            backoff_for: Duration::ZERO,
            ..config(&[])
        })
        .unwrap();
        let closing = ServerSignal::Closing {
            reply: "421".into(),
        };
        t.record("mx:a.test", &closing, at(0));
        assert_eq!(t.backed_off("mx:a.test", at(0)), None);
    }

    #[test]
    fn backoffs_are_exported_and_restored() {
        let t = Throttles::new(&config(&[])).unwrap();
        let closing = ServerSignal::Closing {
            reply: "host mx said: 421 go away".into(),
        };
        t.record("mx:a.test", &closing, at(0));
        let saved = t.backoffs_at(at(1));
        assert_eq!(
            saved,
            [Backoff {
                key: "mx:a.test".into(),
                until: 1_700_000_300,
                cause: "host mx said: 421 go away".into(),
            }]
        );
        let json = serde_json::to_string(&saved).unwrap();
        let back: Vec<Backoff> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, saved);

        let fresh = Throttles::new(&config(&[])).unwrap();
        let mut changed = fresh.changed();
        let mut list = back.clone();
        list.push(Backoff {
            key: "mx:old.test".into(),
            until: 1_700_000_000,
            cause: "over".into(),
        });
        fresh.restore_at(list, at(100));
        assert!(changed.has_changed().unwrap());
        changed.mark_unchanged();
        assert!(fresh.backed_off("mx:a.test", at(100)).is_some());
        assert_eq!(fresh.backed_off("mx:old.test", at(100)), None);
        assert_eq!(fresh.backoffs_at(at(100)), saved);
        // Restoring what is already known changes nothing.
        fresh.restore_at(back, at(101));
        assert!(!changed.has_changed().unwrap());
        assert_eq!(fresh.snapshot_at(at(101)).backoffs, saved);
    }

    #[test]
    fn new_rules_keep_the_state() {
        let t = Throttles::new(&DeliveryConfig {
            max_messages_per_hour: 2,
            ..config(&[])
        })
        .unwrap();
        t.reserve_domain("a.test", at(0)).unwrap().commit();
        t.record(
            "mx:a.test",
            &ServerSignal::Closing {
                reply: "421".into(),
            },
            at(0),
        );
        let slot = t.key_gate("mx:a.test").try_acquire(1).unwrap();
        let clone = t.clone();
        clone
            .set_rules(&DeliveryConfig {
                max_messages_per_hour: 1,
                ..config(&[("a.test", Some(1), None)])
            })
            .unwrap();
        assert!(t.reserve_domain("a.test", at(1)).is_err());
        assert!(t.backed_off("mx:a.test", at(1)).is_some());
        assert_eq!(t.connection_limit("a.test"), 1);
        assert!(t.key_gate("mx:a.test").try_acquire(1).is_none());
        drop(slot);
    }

    #[test]
    fn unix_seconds_round_up() {
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_millis(1500)), 2);
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_secs(2)), 2);
    }
}
