//! MTA-STS policies outlive a restart (RFC 8461 section 5.1: a cached
//! policy holds until its `max_age`, so an attacker who blocks the fetch
//! after a restart does not undo it): saved beside the queue whenever a
//! policy is fetched, and restored at start.

use std::time::{SystemTime, UNIX_EPOCH};

use mta_deliver::PolicyCache;
use mta_spool::Spool;

use crate::saved_state::Kept;

/// Restores the saved policies into `cache`, then saves the fresh ones
/// each time one is fetched, until the spool closes.
pub(crate) fn restore_and_keep(spool: &Spool, cache: &PolicyCache) {
    let kept = cache.clone();
    Kept {
        name: "mta-sts",
        what: "MTA-STS policies",
    }
    .restore_and_keep(
        spool,
        |saved| cache.restore(saved),
        cache.changed(),
        move || kept.saved(now()),
    );
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
