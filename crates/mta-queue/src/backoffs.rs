//! Destination back-offs outlive a restart: they are saved beside the
//! queue whenever they change, and restored at start. (A back-off that is
//! computed and then forgotten hammers a destination that asked for a
//! pause.)

use mta_deliver::{Backoff, Throttles};
use mta_spool::Spool;
use tracing::{info, warn};

/// The saved-state name of the back-offs.
const STATE: &str = "backoffs";

/// Restores the saved back-offs into `throttles`, then saves them again
/// each time they change, until the throttles are dropped or the spool
/// closes.
pub(crate) fn restore_and_keep(spool: &Spool, throttles: &Throttles) {
    match spool.load_state(STATE) {
        Ok(Some(bytes)) => match serde_json::from_slice::<Vec<Backoff>>(&bytes) {
            Ok(saved) => {
                if !saved.is_empty() {
                    info!(count = saved.len(), "destination back-offs restored");
                }
                throttles.restore(saved);
            }
            Err(e) => warn!(error = %e, "saved back-offs unreadable; none restored"),
        },
        Ok(None) => {}
        Err(e) => warn!(error = %e, "cannot read the saved back-offs"),
    }
    let mut changed = throttles.changed();
    let throttles = throttles.clone();
    let spool = spool.clone();
    // Notified when a failed queue index is reopened: a save it refused
    // is made then, or the back-off would be lost at the next restart.
    let reopened = spool.index_recovered();
    tokio::spawn(async move {
        let mut unsaved = false;
        loop {
            tokio::select! {
                changes = changed.changed() => if changes.is_err() { break },
                () = reopened.notified(), if unsaved => {}
            }
            let now = throttles.backoffs();
            let bytes = serde_json::to_vec(&now).expect("back-offs serialize");
            let saving = spool.clone();
            let saved = tokio::task::spawn_blocking(move || saving.save_state(STATE, &bytes)).await;
            unsaved = !matches!(saved, Ok(Ok(())));
            match saved {
                Ok(Ok(())) => {}
                Ok(Err(mta_spool::SpoolError::Closed)) => break,
                Ok(Err(e)) => warn!(error = %e, "cannot save the destination back-offs"),
                Err(e) => warn!(error = %e, "saving the back-offs failed"),
            }
        }
    });
}
