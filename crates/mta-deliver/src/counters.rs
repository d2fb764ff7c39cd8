//! Counts of deliveries by how well they were protected, and of the
//! deliveries a published policy held back, for `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::Verification;

/// The counters of one client generation.
#[derive(Debug, Default)]
pub(crate) struct TlsCounters {
    /// Recipients delivered, by verification and TLS version (`none`
    /// in plaintext).
    delivered: Mutex<BTreeMap<(Verification, String), u64>>,
    /// Deliveries deferred because an MTA-STS policy in enforce mode
    /// could not be met.
    mta_sts_failures: AtomicU64,
    /// Deliveries an MTA-STS policy in testing mode would have refused.
    mta_sts_testing_failures: AtomicU64,
    /// Deliveries deferred because DANE could not be met (no host with
    /// matching TLS, or a failed TLSA lookup).
    dane_failures: AtomicU64,
}

/// What the counters say, for the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsCounts {
    /// Recipients delivered, by (verification, TLS version or `none`).
    pub delivered: BTreeMap<(Verification, String), u64>,
    /// Deliveries deferred by an MTA-STS policy in enforce mode.
    pub mta_sts_failures: u64,
    /// Deliveries an MTA-STS policy in testing mode would have refused.
    pub mta_sts_testing_failures: u64,
    /// Deliveries deferred by DANE.
    pub dane_failures: u64,
}

impl TlsCounts {
    /// Adds `other` (another generation's).
    pub fn add(&mut self, other: &TlsCounts) {
        for (key, n) in &other.delivered {
            *self.delivered.entry(key.clone()).or_default() += n;
        }
        self.mta_sts_failures += other.mta_sts_failures;
        self.mta_sts_testing_failures += other.mta_sts_testing_failures;
        self.dane_failures += other.dane_failures;
    }
}

impl TlsCounters {
    pub fn delivered(&self, verified: Verification, version: Option<&str>, recipients: u64) {
        if recipients == 0 {
            return;
        }
        let version = version.unwrap_or("none").to_owned();
        *self
            .delivered
            .lock()
            .entry((verified, version))
            .or_default() += recipients;
    }

    pub fn policy_failure(&self, testing: bool) {
        let counter = if testing {
            &self.mta_sts_testing_failures
        } else {
            &self.mta_sts_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dane_failure(&self) {
        self.dane_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> TlsCounts {
        TlsCounts {
            delivered: self.delivered.lock().clone(),
            mta_sts_failures: self.mta_sts_failures.load(Ordering::Relaxed),
            mta_sts_testing_failures: self.mta_sts_testing_failures.load(Ordering::Relaxed),
            dane_failures: self.dane_failures.load(Ordering::Relaxed),
        }
    }
}
