//! MTA-STS policies outlive a restart (RFC 8461 section 5.1: a cached
//! policy holds until its `max_age`, so an attacker who blocks the fetch
//! after a restart does not undo it): saved beside the queue whenever a
//! policy is fetched, and restored at start.

use std::time::{SystemTime, UNIX_EPOCH};

use mta_deliver::{CachedPolicy, PolicyCache};
use mta_spool::Spool;
use tracing::{info, warn};

/// The saved-state name of the policies.
const STATE: &str = "mta-sts";

/// Restores the saved policies into `cache`, then saves the fresh ones
/// each time one is fetched, until the spool closes.
pub(crate) fn restore_and_keep(spool: &Spool, cache: &PolicyCache) {
    match spool.load_state(STATE) {
        Ok(Some(bytes)) => match serde_json::from_slice::<Vec<CachedPolicy>>(&bytes) {
            Ok(saved) => {
                if !saved.is_empty() {
                    info!(count = saved.len(), "MTA-STS policies restored");
                }
                cache.restore(saved);
            }
            Err(e) => warn!(error = %e, "saved MTA-STS policies unreadable; none restored"),
        },
        Ok(None) => {}
        Err(e) => warn!(error = %e, "cannot read the saved MTA-STS policies"),
    }
    let mut changed = cache.changed();
    let cache = cache.clone();
    let spool = spool.clone();
    // Notified when a failed queue index is reopened: a save it refused
    // is made then.
    let reopened = spool.index_recovered();
    tokio::spawn(async move {
        let mut unsaved = false;
        loop {
            tokio::select! {
                changes = changed.changed() => if changes.is_err() { break },
                () = reopened.notified(), if unsaved => {}
            }
            let bytes = serde_json::to_vec(&cache.saved(now())).expect("policies serialize");
            let saving = spool.clone();
            let saved = tokio::task::spawn_blocking(move || saving.save_state(STATE, &bytes)).await;
            unsaved = !matches!(saved, Ok(Ok(())));
            match saved {
                Ok(Ok(())) => {}
                Ok(Err(mta_spool::SpoolError::Closed)) => break,
                Ok(Err(e)) => warn!(error = %e, "cannot save the MTA-STS policies"),
                Err(e) => warn!(error = %e, "saving the MTA-STS policies failed"),
            }
        }
    });
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
