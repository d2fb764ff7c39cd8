//! The queue's one async handle over the spool, and the line between
//! blocking and async drawn once.
//!
//! Calls that read a spool file, rename one (set aside), walk the index (due, pages), or flush it (saved state) run on
//! the blocking pool. A few calls stay inline on the async thread that
//! makes them, because they are cheap by construction, and each says why
//! below; the issue after this one wants fewer thread hand-offs, not
//! more, so nothing cheap is moved:
//!
//! - `entry`, `update`, `append_history`, `history` and `first_due` are
//!   single-key sled operations (or one short prefix range) on the index,
//!   which sled serves from its page cache; `update` and `append_history`
//!   are not flushed (the spool's flusher writes changes out every half
//!   second), so they are an in-memory insert plus sled's log buffer;
//! - `next_id` is an atomic counter;
//! - `remove` is one unlink, not fsynced (measured: see the method);
//! - `store_in` is async in the spool already (one of the spool's writer
//!   threads does the writing and the fsyncs).
//!
//! Code that is itself blocking by contract (the listing, run by the
//! daemon on the blocking pool; the loads at start) uses the spool
//! through [`Store::blocking`].

use mta_envelope::{Envelope, QueueId};
use mta_spool::{IndexEntry, ListPage, Spool, SpoolError};

/// A spool call on the blocking pool failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The spool said no.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The blocking task panicked (a bug).
    #[error("a blocking spool task failed: {0}")]
    Panicked(String),
}

/// The spool, for async code.
#[derive(Clone)]
pub(crate) struct Store {
    spool: Spool,
}

impl Store {
    pub fn new(spool: Spool) -> Store {
        Store { spool }
    }

    /// The spool itself, for code that runs off the async threads.
    pub fn blocking(&self) -> &Spool {
        &self.spool
    }

    /// Runs `f` on the blocking pool; a panic in it becomes an error.
    async fn off<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Spool) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let spool = self.spool.clone();
        match tokio::task::spawn_blocking(move || f(&spool)).await {
            Ok(done) => Ok(done?),
            Err(e) => Err(StoreError::Panicked(e.to_string())),
        }
    }

    // Inline: cheap (see the module doc).

    /// A message's index entry. Inline: one sled read.
    pub fn entry(&self, id: QueueId) -> Result<Option<IndexEntry>, SpoolError> {
        self.spool.entry(id)
    }

    /// Records a message's new state. Inline: an unflushed sled insert.
    pub fn update(&self, id: QueueId, entry: &IndexEntry) -> Result<(), SpoolError> {
        self.spool.update(id, entry)
    }

    /// Adds to a message's history. Inline: unflushed sled inserts.
    pub fn append_history(
        &self,
        id: QueueId,
        records: &[mta_spool::HistoryRecord],
    ) -> Result<(), SpoolError> {
        self.spool.append_history(id, records)
    }

    /// When the first scheduled message is due. Inline: the first key of
    /// the schedule tree.
    pub fn first_due(&self) -> Result<Option<u64>, SpoolError> {
        self.spool.first_due()
    }

    /// Removes a message that is done. Inline: one unlink, not fsynced
    /// (the spool's contract: a crash that undoes it delivers twice), and
    /// two sled removes. Measured on this ext4 at about 20 µs per unlink
    /// (2,000 files of 1 KiB, under load), which is the order of a hand-off
    /// to the blocking pool; inline, the message also leaves the index as
    /// soon as its attempt is committed, with no wait for a pool thread.
    pub fn remove(&self, id: QueueId) -> Result<(), SpoolError> {
        self.spool.remove(id)
    }

    /// A new queue id. Inline: an atomic counter.
    pub fn next_id(&self) -> QueueId {
        self.spool.next_id()
    }

    /// Stores a message in `queue`. Async in the spool already.
    pub async fn store_in(
        &self,
        queue: mta_spool::QueueName,
        id: QueueId,
        envelope: &Envelope,
        content: std::sync::Arc<Vec<u8>>,
    ) -> Result<(), SpoolError> {
        self.spool.store_in(queue, id, envelope, content).await
    }

    // On the blocking pool.

    /// Reads a message's spool file.
    pub async fn read(&self, id: QueueId) -> Result<(Envelope, Vec<u8>), StoreError> {
        self.off(move |s| s.read(id)).await
    }

    /// Reads the envelope from a message's spool file.
    pub async fn envelope(&self, id: QueueId) -> Result<Envelope, StoreError> {
        self.off(move |s| s.envelope(id)).await
    }

    /// Sets a corrupt spool file aside (a rename).
    pub async fn set_aside_corrupt(&self, id: QueueId, reason: String) -> Result<(), StoreError> {
        self.off(move |s| s.set_aside_corrupt(id, &reason)).await
    }

    /// The messages due at `now`, at most `limit`, leaving out (and not
    /// counting) those `skip` names (an index walk).
    pub async fn due_unless(
        &self,
        now: u64,
        limit: usize,
        skip: impl Fn(QueueId) -> bool + Send + 'static,
    ) -> Result<Vec<(QueueId, IndexEntry)>, StoreError> {
        self.off(move |s| s.due_unless(now, limit, &skip)).await
    }

    /// One page of the index (a walk of up to `scan` entries).
    pub async fn list(
        &self,
        after: Option<QueueId>,
        limit: usize,
        scan: usize,
        keep: impl FnMut(QueueId, &IndexEntry) -> bool + Send + 'static,
    ) -> Result<ListPage, StoreError> {
        self.off(move |s| s.list(after, limit, scan, keep)).await
    }

    /// Saves a named state durably (the index is flushed: an fsync).
    pub async fn save_state(&self, name: &'static str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.off(move |s| s.save_state(name, &bytes)).await
    }
}
