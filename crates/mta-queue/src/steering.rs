//! State shared by every generation of runners (a graceful restart
//! starts new ones beside the old): the claim set, the paused domains,
//! and the volatile messages held in memory only.
//!
//! Volatile messages are registered here ([`InMemory`]) from their
//! acceptance until their job is dropped or written to disk, so that
//! listings, counts, `show`, hold and delete reach them like the others.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mta_envelope::{Envelope, QueueId};
use mta_spool::IndexEntry;
use parking_lot::{Mutex, RwLock};

use crate::claims::ClaimSet;

/// A volatile message held in memory only: what listings, counts and
/// `show` need of it while it has no spool file.
#[derive(Clone)]
pub(crate) struct InMemory {
    pub entry: IndexEntry,
    pub envelope: Envelope,
    pub content: Arc<Vec<u8>>,
}

/// What the generations share.
#[derive(Default)]
pub(crate) struct Steering {
    /// The messages in flight and the actions waiting for them.
    pub claims: ClaimSet,
    paused: RwLock<BTreeSet<String>>,
    memory: Mutex<BTreeMap<QueueId, InMemory>>,
}

impl Steering {
    /// Delivery to `domain` is paused.
    pub fn is_paused(&self, domain: &str) -> bool {
        let paused = self.paused.read();
        !paused.is_empty() && paused.contains(&domain.trim_end_matches('.').to_ascii_lowercase())
    }

    /// The paused domains, sorted.
    pub fn paused_domains(&self) -> Vec<String> {
        self.paused.read().iter().cloned().collect()
    }

    /// Replaces the set of paused domains.
    pub fn set_paused(&self, domains: BTreeSet<String>) {
        *self.paused.write() = domains;
    }

    /// Registers (or updates) a volatile message held in memory only.
    pub fn remember(&self, id: QueueId, message: InMemory) {
        self.memory.lock().insert(id, message);
    }

    /// The message is on disk now, or gone.
    pub fn forget(&self, id: QueueId) {
        self.memory.lock().remove(&id);
    }

    /// Volatile messages in memory.
    pub fn in_memory(&self) -> usize {
        self.memory.lock().len()
    }

    /// One volatile message in memory.
    pub fn remembered(&self, id: QueueId) -> Option<InMemory> {
        self.memory.lock().get(&id).cloned()
    }

    /// The first `limit` volatile messages in memory with an id in
    /// (`after`, `upto`] that `keep` says yes to, in id order.
    pub fn remembered_in(
        &self,
        after: Option<QueueId>,
        upto: Option<QueueId>,
        limit: usize,
        mut keep: impl FnMut(&IndexEntry) -> bool,
    ) -> Vec<(QueueId, IndexEntry)> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let lower = after.map_or(Unbounded, Excluded);
        let upper = upto.map_or(Unbounded, Included);
        self.memory
            .lock()
            .range((lower, upper))
            .filter(|(_, m)| keep(&m.entry))
            .take(limit)
            .map(|(id, m)| (*id, m.entry.clone()))
            .collect()
    }
}
