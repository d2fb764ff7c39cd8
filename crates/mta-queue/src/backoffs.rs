//! Destination back-offs outlive a restart: they are saved beside the
//! queue whenever they change, and restored at start. (A back-off that is
//! computed and then forgotten hammers a destination that asked for a
//! pause.)

use mta_deliver::Throttles;
use mta_spool::Spool;

use crate::saved_state::Kept;

/// Restores the saved back-offs into `throttles`, then saves them again
/// each time they change, until the throttles are dropped or the spool
/// closes.
pub(crate) fn restore_and_keep(spool: &Spool, throttles: &Throttles) {
    let kept = throttles.clone();
    Kept {
        name: "backoffs",
        what: "destination back-offs",
    }
    .restore_and_keep(
        spool,
        |saved| throttles.restore(saved),
        throttles.changed(),
        move || kept.backoffs(),
    );
}
