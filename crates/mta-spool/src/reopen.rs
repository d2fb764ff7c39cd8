//! The reopening of an index that failed (`slot.rs` says why an index
//! fails and what that does).
//!
//! [`Index::reopen`] opens the directory again, which gives back what
//! the last successful flush wrote, replays on it the writes made since
//! (the failed database's journal, `journal.rs`: holds, releases,
//! schedules, histories), flushes, and hands back the database; the
//! spool installs it ([`Index::install`]) and rescans the spool files,
//! which are the truth, to settle what the failure left half-done (a
//! message delivered and unlinked whose entry could not be removed, keys
//! a failed write left out of step). A reopen that fails (space is still
//! short) leaves the index failed, its journal kept for the next try.

use crate::error::SpoolError;
use crate::index::Index;
use crate::layout::Layout;
use crate::trees::{open_trees, Trees};

/// What [`Index::reopen`] did.
pub(crate) struct Reopened {
    /// The reopened database, replayed and flushed, to install.
    pub trees: Trees,
    /// Writes replayed; `None` when the journal was incomplete and none
    /// were.
    pub replayed: Option<usize>,
    /// The directory could not be opened at all and was moved aside: the
    /// rescan rebuilds the index from the spool files alone.
    pub damaged: bool,
}

impl Index {
    /// Opens the failed index's directory again and replays on it the
    /// writes the failed database had not flushed; the result is flushed
    /// and returned for [`install`](Self::install). On an error (space is
    /// still short, or the failed database is still held) the index stays
    /// failed and keeps what it has to replay.
    pub(crate) fn reopen(&self, layout: &Layout, cache: u64) -> Result<Reopened, SpoolError> {
        // The failed database's journal, once: wait for the operations
        // still holding it (their writes, refused, are not in it).
        let replay = self.slot.take_replay()?;

        let (trees, damaged) = open_trees(layout, cache)?;
        if let Some(ops) = &replay {
            crate::journal::replay(&trees.all(), ops)?;
        }
        trees.db.flush()?;
        Ok(Reopened {
            trees,
            replayed: replay.map(|ops| ops.len()),
            damaged,
        })
    }
}
