//! The policies known, and when to fetch again (RFC 8461 sections 3.3 and
//! 5.1).
//!
//! A policy is kept for its `max_age` from the time it was fetched. The
//! TXT record is looked up for every delivery (the resolver caches it for
//! its TTL): a new id fetches the policy again; the same id uses the
//! cached one while it is fresh. No record, or a DNS failure, does not
//! end a fresh cached policy (section 5.1: otherwise an attacker who
//! strips the record strips the policy); a failed fetch does not either.
//!
//! The cache outlives a restart: the queue saves [`PolicyCache::saved`]
//! whenever [`PolicyCache::changed`] says so, and restores it at start.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::policy::Policy;
use super::record::Record;

/// A policy as fetched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPolicy {
    /// The policy domain, lower case, without a trailing dot.
    pub domain: String,
    /// The TXT record's id when it was fetched.
    pub id: String,
    /// When it was fetched, in Unix seconds.
    pub fetched: u64,
    /// The policy.
    pub policy: Policy,
}

impl CachedPolicy {
    /// True until `max_age` seconds after the fetch.
    pub fn is_fresh(&self, now: u64) -> bool {
        now < self.fetched.saturating_add(u64::from(self.policy.max_age))
    }
}

/// What the DNS said about `_mta-sts.<domain>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The record set, read.
    Answered(Record),
    /// The lookup failed (timeout, SERVFAIL).
    Failed,
}

/// What to do for one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// The cached policy holds.
    UseCached,
    /// Fetch the policy with this id.
    Fetch(String),
    /// The domain has no policy in force.
    NoPolicy,
}

/// Decides from the cached policy (if any), the DNS lookup and the time.
pub fn next(cached: Option<&CachedPolicy>, lookup: &Lookup, now: u64) -> Next {
    let fresh = cached.filter(|c| c.is_fresh(now));
    match (lookup, fresh) {
        (Lookup::Answered(Record::Published(id)), Some(c)) if *id == c.id => Next::UseCached,
        (Lookup::Answered(Record::Published(id)), _) => Next::Fetch(id.clone()),
        (_, Some(_)) => Next::UseCached,
        (_, None) => Next::NoPolicy,
    }
}

/// The cached policies by domain; cheap to clone (clones share it). A
/// graceful restart hands it to the next generation.
#[derive(Clone, Debug, Default)]
pub struct PolicyCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    policies: Mutex<HashMap<String, CachedPolicy>>,
    /// One fetch per domain at a time: the others wait for it.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    changed: watch::Sender<u64>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            policies: Mutex::default(),
            fetching: Mutex::default(),
            changed: watch::Sender::new(0),
        }
    }
}

impl PolicyCache {
    /// The cached policy of `domain` (lower case), fresh or not.
    pub fn get(&self, domain: &str) -> Option<CachedPolicy> {
        self.inner.policies.lock().get(domain).cloned()
    }

    /// Keeps `policy`, replacing the domain's previous one.
    pub fn put(&self, policy: CachedPolicy) {
        self.inner
            .policies
            .lock()
            .insert(policy.domain.clone(), policy);
        self.notify_changed();
    }

    /// The policies still fresh at `now`, to save; stale ones are
    /// forgotten.
    pub fn saved(&self, now: u64) -> Vec<CachedPolicy> {
        let mut policies = self.inner.policies.lock();
        policies.retain(|_, p| p.is_fresh(now));
        let mut saved: Vec<_> = policies.values().cloned().collect();
        saved.sort_by(|a, b| a.domain.cmp(&b.domain));
        saved
    }

    /// Takes saved policies back (at start); a domain already known keeps
    /// the later fetch.
    pub fn restore(&self, saved: Vec<CachedPolicy>) {
        let mut policies = self.inner.policies.lock();
        for p in saved {
            match policies.get(&p.domain) {
                Some(known) if known.fetched >= p.fetched => {}
                _ => {
                    policies.insert(p.domain.clone(), p);
                }
            }
        }
    }

    /// Goes up whenever a policy is fetched: save [`saved`](Self::saved)
    /// then.
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    fn notify_changed(&self) {
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits for any fetch of `domain` under way, and holds off others
    /// until the guard is dropped.
    pub(crate) async fn fetch_turn(&self, domain: &str) -> FetchTurn {
        let lock = self
            .inner
            .fetching
            .lock()
            .entry(domain.to_owned())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        FetchTurn {
            cache: self.clone(),
            domain: domain.to_owned(),
            _guard: guard,
            lock,
        }
    }
}

/// The one fetch of a domain under way; forgets its lock when no one
/// else waits for it.
pub(crate) struct FetchTurn {
    cache: PolicyCache,
    domain: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for FetchTurn {
    fn drop(&mut self) {
        let mut fetching = self.cache.inner.fetching.lock();
        // This turn's handle, the map's and the guard's: no one waits.
        if Arc::strong_count(&self.lock) <= 3 {
            fetching.remove(&self.domain);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::policy::Mode;
    use super::*;

    fn cached(id: &str, fetched: u64, max_age: u32) -> CachedPolicy {
        CachedPolicy {
            domain: "example.test".into(),
            id: id.into(),
            fetched,
            policy: Policy {
                mode: Mode::Enforce,
                max_age,
                mx: vec!["mx.example.test".into()],
            },
        }
    }

    fn published(id: &str) -> Lookup {
        Lookup::Answered(Record::Published(id.into()))
    }

    #[test]
    fn the_same_id_uses_the_fresh_cache() {
        let c = cached("1", 1000, 100);
        assert_eq!(next(Some(&c), &published("1"), 1099), Next::UseCached);
    }

    #[test]
    fn a_new_id_fetches_again() {
        let c = cached("1", 1000, 100);
        assert_eq!(
            next(Some(&c), &published("2"), 1001),
            Next::Fetch("2".into())
        );
        assert_eq!(next(None, &published("2"), 1001), Next::Fetch("2".into()));
    }

    #[test]
    fn max_age_expired_fetches_again() {
        let c = cached("1", 1000, 100);
        assert_eq!(
            next(Some(&c), &published("1"), 1100),
            Next::Fetch("1".into())
        );
    }

    #[test]
    fn no_record_or_a_dns_failure_keeps_a_fresh_policy_only() {
        let c = cached("1", 1000, 100);
        for lookup in [Lookup::Answered(Record::Absent), Lookup::Failed] {
            assert_eq!(next(Some(&c), &lookup, 1050), Next::UseCached);
            assert_eq!(next(Some(&c), &lookup, 1100), Next::NoPolicy);
            assert_eq!(next(None, &lookup, 1050), Next::NoPolicy);
        }
    }

    #[test]
    fn saved_keeps_fresh_policies_and_restore_keeps_the_later() {
        let cache = PolicyCache::default();
        let mut changed = cache.changed();
        cache.put(cached("1", 1000, 100));
        assert!(changed.has_changed().unwrap());
        changed.mark_unchanged();
        let mut other = cached("9", 1000, 10);
        other.domain = "other.test".into();
        cache.put(other);
        assert_eq!(cache.saved(1050), vec![cached("1", 1000, 100)]);
        assert!(cache.get("other.test").is_none());

        let fresh = PolicyCache::default();
        fresh.put(cached("2", 2000, 100));
        fresh.restore(vec![cached("1", 1000, 100)]);
        assert_eq!(fresh.get("example.test").unwrap().id, "2");
        let empty = PolicyCache::default();
        empty.restore(vec![cached("1", 1000, 100)]);
        assert_eq!(empty.get("example.test").unwrap().id, "1");
    }

    #[tokio::test]
    async fn one_fetch_per_domain_at_a_time() {
        let cache = PolicyCache::default();
        let first = cache.fetch_turn("a.test").await;
        let waiting = {
            let cache = cache.clone();
            tokio::spawn(async move {
                let _turn = cache.fetch_turn("a.test").await;
            })
        };
        // Another domain is not held up.
        drop(cache.fetch_turn("b.test").await);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert!(cache.inner.fetching.lock().is_empty());
    }
}
