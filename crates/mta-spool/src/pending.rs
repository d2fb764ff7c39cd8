//! Entries of messages just stored that are not yet written to the
//! index's trees.
//!
//! Most messages are delivered at their first attempt, milliseconds after
//! they were stored. Writing their entry to sled at the commit and taking
//! it out again at the delivery (an entry and a membership key in, the
//! same out) was 6 to 7 % of mtad's CPU per relayed message. So a new
//! message's entry waits here ([`Index::insert_new`](crate::index::Index::insert_new)),
//! and is written to the trees by whichever comes first:
//!
//! - the flusher's next round (every 500 ms), which writes the waiting
//!   entries and then flushes: the index on disk is as far behind as it
//!   was before;
//! - any reader of more than one message (a listing, the disk runner's
//!   walk of what is due) and any change but a removal: they take the
//!   trees through `Index::trees`, which writes the waiting entries first,
//!   so what they read is the whole queue (a read of one message's entry
//!   and the question of when the next message is due, which the disk
//!   runner asks on the runtime's threads, look at them where they are);
//! - never, if the message is removed first: its entry just goes.
//!
//! A crash loses nothing by the wait that it would not lose anyway: the
//! trees reach the disk only at a flush, and the rescan after a crash
//! rebuilds every entry from the spool files. The per-queue counts count
//! a waiting entry from the moment it is recorded.
//!
//! Every id waiting here is a new one: the commit's rename refuses an id
//! that has a file, and ids above the open's floor are never the rescan's
//! business, so no other entry of it is in the trees.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use mta_envelope::QueueId;
use parking_lot::Mutex;

use crate::entry::IndexEntry;

/// The waiting entries. Every call for one id is made under that id's
/// index lock, which is what keeps a removal from missing an entry on its
/// way into the trees.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    entries: Mutex<HashMap<QueueId, IndexEntry>>,
    /// `entries.len()`, read without the lock.
    len: AtomicUsize,
}

impl Pending {
    /// Records `id`'s entry.
    pub fn put(&self, id: QueueId, entry: IndexEntry) {
        let mut entries = self.entries.lock();
        entries.insert(id, entry);
        self.len.store(entries.len(), Ordering::SeqCst);
    }

    /// Takes `id`'s entry out, if it is waiting.
    pub fn take(&self, id: QueueId) -> Option<IndexEntry> {
        if self.is_empty() {
            return None;
        }
        let mut entries = self.entries.lock();
        let entry = entries.remove(&id);
        self.len.store(entries.len(), Ordering::SeqCst);
        entry
    }

    /// A copy of `id`'s entry, if it is waiting.
    pub fn get(&self, id: QueueId) -> Option<IndexEntry> {
        if self.is_empty() {
            return None;
        }
        self.entries.lock().get(&id).cloned()
    }

    /// The earliest time a waiting entry is due at (see
    /// [`IndexEntry::scheduled`]).
    pub fn first_scheduled(&self) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        let entries = self.entries.lock();
        entries.values().filter_map(IndexEntry::scheduled).min()
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::SeqCst) == 0
    }

    /// The ids waiting now.
    pub fn ids(&self) -> Vec<QueueId> {
        self.entries.lock().keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::entry::{QueueName, RecipientState};

    fn entry() -> IndexEntry {
        IndexEntry {
            queue: QueueName::Ram,
            arrival: 1,
            next_attempt: 1,
            size: 10,
            recipients: vec![RecipientState::Pending],
            attempts: 0,
            last_errors: BTreeMap::new(),
            delay_notified: false,
            sender: String::new(),
            rcpts: Vec::new(),
            held_since: None,
            held_secs: 0,
            auth: None,
        }
    }

    #[test]
    fn an_entry_is_taken_once() {
        let p = Pending::default();
        assert!(p.is_empty());
        p.put(QueueId::new(7), entry());
        assert!(!p.is_empty());
        assert_eq!(p.ids(), vec![QueueId::new(7)]);
        assert_eq!(p.first_scheduled(), Some(1));
        assert!(p.take(QueueId::new(8)).is_none());
        assert!(p.get(QueueId::new(7)).is_some());
        assert!(p.take(QueueId::new(7)).is_some());
        assert!(p.get(QueueId::new(7)).is_none());
        assert!(p.take(QueueId::new(7)).is_none());
        assert!(p.is_empty());
        assert_eq!(p.first_scheduled(), None);
    }
}
