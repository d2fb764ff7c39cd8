//! State that outlives a restart (destination back-offs, MTA-STS
//! policies): restored from the spool's saved state at start, then saved
//! again each time it changes, until the spool closes.

use mta_spool::Spool;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{info, warn};

/// One kind of saved state: its name in the spool and in the log.
pub(crate) struct Kept {
    /// The saved-state name (`state:<name>`).
    pub name: &'static str,
    /// What the log calls it ("destination back-offs").
    pub what: &'static str,
}

impl Kept {
    /// Hands what was saved to `restore`, then saves `snapshot()` each
    /// time `changed` says so (and again when a failed queue index is
    /// reopened, if a save was refused), until `changed`'s sender is
    /// dropped or the spool closes.
    pub(crate) fn restore_and_keep<T>(
        self,
        spool: &Spool,
        restore: impl FnOnce(Vec<T>),
        mut changed: watch::Receiver<u64>,
        snapshot: impl Fn() -> Vec<T> + Send + 'static,
    ) where
        T: Serialize + DeserializeOwned,
    {
        let Kept { name, what } = self;
        match spool.load_state(name) {
            Ok(Some(bytes)) => match serde_json::from_slice::<Vec<T>>(&bytes) {
                Ok(saved) => {
                    if !saved.is_empty() {
                        info!(count = saved.len(), "{what} restored");
                    }
                    restore(saved);
                }
                Err(e) => warn!(error = %e, "saved {what} unreadable; none restored"),
            },
            Ok(None) => {}
            Err(e) => warn!(error = %e, "cannot read the saved {what}"),
        }
        let spool = spool.clone();
        // Notified when a failed queue index is reopened: a save it
        // refused is made then, or the state would be lost at the next
        // restart.
        let reopened = spool.index_recovered();
        tokio::spawn(async move {
            let mut unsaved = false;
            loop {
                tokio::select! {
                    changes = changed.changed() => if changes.is_err() { break },
                    () = reopened.notified(), if unsaved => {}
                }
                let bytes = serde_json::to_vec(&snapshot()).expect("saved state serializes");
                let saving = spool.clone();
                let saved =
                    tokio::task::spawn_blocking(move || saving.save_state(name, &bytes)).await;
                unsaved = !matches!(saved, Ok(Ok(())));
                match saved {
                    Ok(Ok(())) => {}
                    Ok(Err(mta_spool::SpoolError::Closed)) => break,
                    Ok(Err(e)) => warn!(error = %e, "cannot save the {what}"),
                    Err(e) => warn!(error = %e, "saving the {what} failed"),
                }
            }
        });
    }
}
