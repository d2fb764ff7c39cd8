//! The sled index: which messages are queued, in which queue, when each is
//! next due, and how far each recipient has got.
//!
//! The index exists so the runners can answer "what is due now?" and
//! "what is queued?" without reading spool files. It is never the only
//! copy of anything a message needs to be delivered: a rescan of `msg/`
//! rebuilds it (see `rescan.rs`). That is why a store does not flush
//! sled before acknowledging a message, and why an index that sled cannot
//! open is moved aside rather than repaired.
//!
//! The trees it keeps (entries, the schedule, a membership tree per
//! queue, operator state, histories) and the form of their keys are
//! described in `trees.rs`; an entry itself is in `entry.rs`.
//!
//! The trees are kept in step under a per-id lock (one of 256 stripes):
//! every change of one message (a store, an update, a removal, a rescan's
//! visit) takes its stripe, so the background rescan and the runners can
//! work on the same ids at once without tearing an entry from its keys.
//! sled has no cheap multi-tree atomicity; after a crash the secondary
//! keys may disagree with `messages`, which is why readers check a key
//! against its entry and drop the stale ones (under the same lock), and
//! why the rescan ends with a sweep of them.
//!
//! Per-queue message counts are kept in memory (see [`Shared`]), maintained
//! by every change, seeded from the clean marker after a clean stop and
//! rebuilt by the rescan otherwise: no walk of the index ever counts.
//!
//! [`Index`] is a handle on whichever database is in service ([`Trees`],
//! every write of which is also recorded in a journal until flushed,
//! `journal.rs`), held in a [`Slot`]: a failed flush takes it out of
//! service (`slot.rs`) and a reopen puts a new one in (`reopen.rs`),
//! while the counts and locks stay.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use mta_envelope::QueueId;
use parking_lot::{Mutex, MutexGuard};

use crate::entry::{HistoryRecord, IndexEntry, QueueName, RecipientState, MAX_HISTORY, QUEUES};
use crate::error::SpoolError;
use crate::journal::{JTree, Op};
use crate::layout::Layout;
use crate::pending::Pending;
use crate::slot::{IndexHealth, Slot};
use crate::trees::{
    history_key, history_seq, id_from_key, id_key, open_trees, parse_entry, parse_schedule_key,
    schedule_key, state_key, Trees, TOKEN_KEY,
};

/// An entry before and after a change (`None`: not indexed).
type Change<'a> = (Option<&'a IndexEntry>, Option<&'a IndexEntry>);

/// How the index was found at open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexState {
    /// `index/` existed before this open.
    pub existed: bool,
    /// sled could not open it; it was moved aside and a fresh one made.
    pub damaged: bool,
    /// It could not be opened for want of space: the index starts out
    /// failed, and is opened once space is back (`reopen.rs`).
    pub unavailable: bool,
}

/// Number of per-id lock stripes.
const STRIPES: usize = 256;

/// State shared by every handle on one open index, and kept by the spool
/// after close for the figures it reports.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Per-id locks: every change of one message holds its stripe.
    stripes: Vec<Mutex<()>>,
    /// Messages per queue, in [`QUEUES`] order.
    counts: [AtomicU64; 4],
    /// While a rescan runs: ids up to here were in the queue directory at
    /// open and are counted only once the rescan has visited them.
    floor: AtomicU64,
    /// While a rescan runs: every id below this one has been visited.
    next_unvisited: AtomicU64,
    /// No rescan is counting: every id is counted as it changes.
    all_counted: AtomicBool,
    /// Changes to the index so far (stores, updates, removals, rescan
    /// writes).
    changes: AtomicU64,
    /// `changes` as it was when the last flush started.
    flushed_changes: AtomicU64,
    /// When the last flush ended, in ms since the epoch; 0 = none yet.
    last_flush_ms: AtomicU64,
    /// New messages' entries not yet written to the trees (`pending.rs`).
    pending: Pending,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            counts: Default::default(),
            floor: AtomicU64::new(0),
            next_unvisited: AtomicU64::new(0),
            all_counted: AtomicBool::new(true),
            changes: AtomicU64::new(0),
            flushed_changes: AtomicU64::new(0),
            last_flush_ms: AtomicU64::new(0),
            pending: Pending::default(),
        }
    }
}

impl Shared {
    /// Messages per queue, in [`QUEUES`] order.
    pub fn counts(&self) -> [u64; 4] {
        [0, 1, 2, 3].map(|i| self.counts[i].load(Ordering::SeqCst))
    }

    /// Messages in all queues.
    pub fn len(&self) -> u64 {
        self.counts().iter().sum()
    }

    /// Index changes not yet flushed to disk.
    pub fn changes_since_flush(&self) -> u64 {
        self.changes
            .load(Ordering::SeqCst)
            .saturating_sub(self.flushed_changes.load(Ordering::SeqCst))
    }

    /// When the last flush of this run ended (ms since the epoch).
    pub fn last_flush_ms(&self) -> Option<u64> {
        Some(self.last_flush_ms.load(Ordering::SeqCst)).filter(|&ms| ms != 0)
    }

    /// Whether a change of `id` moves the counts now: yes unless a rescan
    /// is still to visit it (then the visit counts what it finds).
    fn counted(&self, id: QueueId) -> bool {
        self.all_counted.load(Ordering::SeqCst)
            || id.value() > self.floor.load(Ordering::SeqCst)
            || id.value() < self.next_unvisited.load(Ordering::SeqCst)
    }

    /// Moves the counts from `old` to `new`: `old` is taken out if it was
    /// counted, `new` put in if it is.
    fn account(
        &self,
        counted_before: bool,
        counted_after: bool,
        old: Option<&IndexEntry>,
        new: Option<&IndexEntry>,
    ) {
        if let (true, Some(old)) = (counted_before, old) {
            let _ = self.counts[old.queue.slot()].fetch_update(
                Ordering::SeqCst,
                Ordering::SeqCst,
                |n| Some(n.saturating_sub(1)),
            );
        }
        if let (true, Some(new)) = (counted_after, new) {
            self.counts[new.queue.slot()].fetch_add(1, Ordering::SeqCst);
        }
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
    }
}

/// What a rescan's visit of one listed spool file did to its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Visit {
    /// It had no entry; one was added.
    Added,
    /// Its entry was kept as it was.
    Kept,
    /// Its entry was changed: moved out of the RAM queue, or replaced
    /// because it did not match the file.
    Changed,
    /// The file went away (delivered and removed) meanwhile; no entry.
    Vanished,
}

/// What a rescan read from one spool file's header.
#[derive(Debug, Clone)]
pub(crate) struct FileFacts {
    /// The envelope's arrival time.
    pub arrival: u64,
    /// Number of envelope recipients.
    pub recipients: usize,
    /// The envelope sender, as text (empty for `<>`).
    pub sender: String,
    /// The envelope recipients' addresses.
    pub rcpts: Vec<String>,
    /// The user the client authenticated as, if it did.
    pub auth: Option<String>,
    /// Content bytes.
    pub size: u64,
}

/// What a rescan's visits left in the index: every visited id that kept
/// (or got) an entry, with the schedule key and the membership the visit
/// made it have. The closing sweep ([`Index::sweep_stale_keys`]) checks
/// the keys of `schedule` and of the membership trees against it instead
/// of reading each key's entry (with a small page cache, a random read of
/// `messages` per key), and puts back the keys an entry lacks, which the
/// visits did not check. Anything it does not vouch for is checked against the entry
/// itself under the id's lock, as before; a runner that changes an entry
/// after its visit moves its keys under that lock, so a key that matched
/// at the visit and is still there is the entry's own.
///
/// 16 bytes a message while the rescan runs (16 MiB at 1,000,000),
/// freed when it ends.
#[derive(Debug, Default)]
pub(crate) struct Visited {
    /// (id, [`Visited::pack`] of its entry), in id order once sorted.
    seen: Vec<(u64, u64)>,
    sorted: bool,
}

/// A packed entry the sweep cannot vouch for (a schedule time too large
/// to pack): every key of its id is checked under the lock.
const UNKNOWN: u64 = u64::MAX;

/// Schedule times below this are packed (2^60 s: far beyond any clock).
const PACKABLE: u64 = 1 << 60;

impl Visited {
    /// Room for `n` visits.
    pub fn with_capacity(n: usize) -> Visited {
        Visited {
            seen: Vec::with_capacity(n),
            sorted: true,
        }
    }

    /// `entry`'s queue slot, and its schedule time when it has one:
    /// `time << 3 | 4 | slot`, or `slot` when held.
    fn pack(entry: &IndexEntry) -> u64 {
        let slot = entry.queue.slot() as u64;
        match entry.scheduled() {
            None => slot,
            Some(time) if time < PACKABLE => (time << 3) | 4 | slot,
            Some(_) => UNKNOWN,
        }
    }

    /// Notes that the visit of `id` left `entry`.
    fn record(&mut self, id: QueueId, entry: &IndexEntry) {
        if self
            .seen
            .last()
            .is_some_and(|&(last, _)| last >= id.value())
        {
            self.sorted = false;
        }
        self.seen.push((id.value(), Visited::pack(entry)));
    }

    /// Number of visits recorded.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.seen.sort_unstable_by_key(|&(id, _)| id);
            self.seen.dedup_by_key(|&mut (id, _)| id);
            self.sorted = true;
        }
    }

    /// Position of `id` (after [`sort`](Self::sort)).
    fn find(&self, id: QueueId) -> Option<usize> {
        self.seen
            .binary_search_by_key(&id.value(), |&(id, _)| id)
            .ok()
    }

    /// Position of `id`, for ids asked in increasing order: `cursor`
    /// (start at 0) moves on with them, so a walk in id order costs one
    /// pass over the visits.
    fn find_from(&self, id: QueueId, cursor: &mut usize) -> Option<usize> {
        while self
            .seen
            .get(*cursor)
            .is_some_and(|&(seen, _)| seen < id.value())
        {
            *cursor += 1;
        }
        self.seen
            .get(*cursor)
            .is_some_and(|&(seen, _)| seen == id.value())
            .then_some(*cursor)
    }

    /// The schedule key the visit left for position `i`: `Some(None)`
    /// when none (held), `None` when it cannot say.
    fn scheduled(&self, i: usize) -> Option<Option<u64>> {
        match self.seen[i].1 {
            UNKNOWN => None,
            packed if packed & 4 == 0 => Some(None),
            packed => Some(Some(packed >> 3)),
        }
    }

    /// The queue slot the visit left for position `i`, if it can say.
    fn slot(&self, i: usize) -> Option<usize> {
        match self.seen[i].1 {
            UNKNOWN => None,
            packed => Some((packed & 3) as usize),
        }
    }
}

/// What the closing sweep of a rescan did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Swept {
    /// Keys without a matching entry, removed.
    pub removed: u64,
    /// `schedule` and membership keys an entry lacked, put back.
    pub restored: u64,
}

/// The index: a handle on the open database (which a failure replaces,
/// see `slot.rs`) and the figures and locks that outlive it. Cheap to
/// clone; every clone sees the same database.
#[derive(Clone)]
pub(crate) struct Index {
    pub(crate) slot: Arc<Slot>,
    pub(crate) shared: Arc<Shared>,
}

impl Index {
    /// Opens `index/`, creating it when missing. A database sled refuses
    /// is moved aside to `index.damaged-<unix seconds>` (kept for a look,
    /// never deleted) and a fresh one is made; the caller then rescans.
    /// One that cannot be opened for want of space is left alone: the
    /// index starts out failed (`IndexState::unavailable`), and is opened
    /// by [`reopen`](Self::reopen) once space is back.
    ///
    /// The counts start at zero with every id counted: the caller seeds
    /// them ([`set_counts`](Self::set_counts)) or starts a rescan
    /// ([`begin_rescan`](Self::begin_rescan)).
    pub fn open(layout: &Layout, cache: u64) -> Result<(Index, IndexState), SpoolError> {
        let existed = layout.index.symlink_metadata().is_ok();
        let mut state = IndexState {
            existed,
            damaged: false,
            unavailable: false,
        };
        let shared = Arc::new(Shared::default());
        match open_trees(layout, cache) {
            Ok((trees, damaged)) => {
                state.damaged = damaged;
                Ok((Index::with(Slot::open(trees), shared), state))
            }
            Err(e) if e.is_no_space() => {
                tracing::warn!(
                    index = %layout.index.display(),
                    error = %e,
                    "queue index cannot be opened for want of space; mail gets 452 4.3.1 until it can be"
                );
                state.unavailable = true;
                Ok((Index::with(Slot::failed(&e, Vec::new()), shared), state))
            }
            Err(e) => Err(e),
        }
    }

    fn with(slot: Slot, shared: Arc<Shared>) -> Index {
        Index {
            slot: Arc::new(slot),
            shared,
        }
    }

    /// The open database, with the new messages' waiting entries written
    /// to it first (`pending.rs`): what a reader sees is the whole queue.
    /// An error while it is failed or closed (the entries keep waiting).
    /// Never called holding a stripe: it takes them.
    pub(crate) fn trees(&self) -> Result<Arc<Trees>, SpoolError> {
        let t = self.slot.trees()?;
        if !self.shared.pending.is_empty() {
            self.write_pending(&t)?;
        }
        Ok(t)
    }

    /// An error while the index is failed or closed, like any change
    /// would get; writes nothing (not even the waiting entries).
    pub(crate) fn usable(&self) -> Result<(), SpoolError> {
        self.slot.trees().map(drop)
    }

    /// Writes every waiting entry to the trees, one id at a time under its
    /// stripe. An entry leaves the waiting set only once it is in the
    /// trees, so a reader that took its list of waiting ids before (and
    /// waits for the stripe) or after finds it in one place or the other.
    /// One that cannot be written waits on (and the error is returned).
    fn write_pending(&self, t: &Trees) -> Result<(), SpoolError> {
        for id in self.shared.pending.ids() {
            let _stripe = self.lock(id);
            // Removed or written meanwhile: nothing to write.
            let Some(entry) = self.shared.pending.get(id) else {
                continue;
            };
            let (_, old) = self.write_entry(t, id, &entry)?;
            self.shared.pending.take(id);
            // Counted when it was recorded; an entry it replaced (there
            // should be none: `pending.rs`) is counted no more.
            let counted = self.shared.counted(id);
            self.shared.account(counted, counted, old.as_ref(), None);
        }
        Ok(())
    }

    /// The counts and flush figures, shared with every clone.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The index's state, for status.
    pub(crate) fn health(&self) -> IndexHealth {
        self.slot.health()
    }

    /// True while the index is failed (`slot.rs`).
    pub(crate) fn is_failed(&self) -> bool {
        self.slot.is_failed()
    }

    /// Puts a reopened database in service ([`reopen`](Self::reopen)).
    pub(crate) fn install(&self, trees: Trees) -> Result<(), SpoolError> {
        self.slot.install(trees)
    }

    /// Closes the index for good (every later operation gets
    /// [`SpoolError::Closed`]) and lets go of the database. If it was
    /// failed, what it could not save is logged: the next open rebuilds
    /// the index from the spool files, without those changes.
    pub(crate) fn shut(&self) {
        self.slot.shut();
    }

    /// Seeds the per-queue counts (from the clean marker).
    pub fn set_counts(&self, counts: [u64; 4]) {
        for (slot, n) in counts.into_iter().enumerate() {
            self.shared.counts[slot].store(n, Ordering::SeqCst);
        }
    }

    /// A rescan is about to visit every id up to `floor`: those are
    /// counted by the visits, not by the changes made before.
    pub fn begin_rescan(&self, floor: QueueId) {
        self.set_counts([0; 4]);
        self.shared.floor.store(floor.value(), Ordering::SeqCst);
        self.shared.next_unvisited.store(0, Ordering::SeqCst);
        self.shared.all_counted.store(false, Ordering::SeqCst);
    }

    /// The rescan has visited every id up to its floor.
    pub fn finish_counting(&self) {
        self.shared.all_counted.store(true, Ordering::SeqCst);
    }

    fn lock(&self, id: QueueId) -> MutexGuard<'_, ()> {
        // Fibonacci hashing: the top byte of the product spreads even ids
        // that differ only in their high bits.
        let stripe = (id.value().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize;
        self.shared.stripes[stripe % STRIPES].lock()
    }

    /// Brings `schedule` and the membership trees from `old` to `new`
    /// (either may be absent). Caller holds the id's stripe.
    fn move_keys(&self, t: &Trees, id: QueueId, (old, new): Change<'_>) -> Result<(), SpoolError> {
        let new_time = new.and_then(IndexEntry::scheduled);
        if let Some(old) = old {
            if let Some(time) = old.scheduled().filter(|&t| new_time != Some(t)) {
                t.schedule.remove(schedule_key(time, id))?;
            }
            if new.is_none_or(|n| n.queue != old.queue) {
                t.queue_tree(old.queue).remove(id_key(id))?;
            }
        }
        if let Some(new) = new {
            if let Some(time) = new_time {
                t.schedule.insert(schedule_key(time, id), &[][..])?;
            }
            t.queue_tree(new.queue).insert(id_key(id), &[][..])?;
        }
        Ok(())
    }

    /// Like [`move_keys`](Self::move_keys), but trusts no key: makes
    /// `schedule` hold `new`'s key and `id` a member of `new`'s queue tree
    /// only, whatever a crash left. Reads before it writes, so a visit of
    /// an entry whose keys are right writes nothing. Caller holds the id's
    /// stripe.
    fn normalize_keys(
        &self,
        t: &Trees,
        id: QueueId,
        (old, new): Change<'_>,
    ) -> Result<(), SpoolError> {
        fn ensure(tree: &JTree, key: &[u8], present: bool) -> Result<(), SpoolError> {
            if tree.contains_key(key)? != present {
                if present {
                    tree.insert(key, &[][..])?;
                } else {
                    tree.remove(key)?;
                }
            }
            Ok(())
        }
        let new_time = new.and_then(IndexEntry::scheduled);
        if let Some(old) = old {
            if new_time != Some(old.next_attempt) {
                ensure(&t.schedule, &schedule_key(old.next_attempt, id), false)?;
            }
        }
        if let Some(time) = new_time {
            ensure(&t.schedule, &schedule_key(time, id), true)?;
        }
        self.normalize_members(t, id, new)
    }

    /// The membership half of [`normalize_keys`](Self::normalize_keys):
    /// `id` a member of `new`'s queue tree only. Caller holds the id's
    /// stripe.
    fn normalize_members(
        &self,
        t: &Trees,
        id: QueueId,
        new: Option<&IndexEntry>,
    ) -> Result<(), SpoolError> {
        for queue in QUEUES {
            let tree = t.queue_tree(queue);
            let member = new.is_some_and(|n| n.queue == queue);
            if tree.contains_key(id_key(id))? != member {
                if member {
                    tree.insert(id_key(id), &[][..])?;
                } else {
                    tree.remove(id_key(id))?;
                }
            }
        }
        Ok(())
    }

    /// Records a new message (or replaces its entry), keeping the other
    /// trees in step. Returns true when the id was not indexed before.
    /// (Stores use [`insert_new`](Self::insert_new); tests make entries
    /// for files they write themselves with this.)
    #[cfg(test)]
    pub fn insert(&self, id: QueueId, entry: &IndexEntry) -> Result<bool, SpoolError> {
        let t = self.trees()?;
        let _stripe = self.lock(id);
        let (existed, old) = self.write_entry(&t, id, entry)?;
        let counted = self.shared.counted(id);
        self.shared
            .account(counted, counted, old.as_ref(), Some(entry));
        self.shared.changed();
        Ok(!existed)
    }

    /// Records the entry of a message just committed, whose id has never
    /// been indexed: it waits in memory until the trees are next read or
    /// flushed, and is never written if the message is removed first
    /// (`pending.rs`). Counted at once. Refused, like any change, while
    /// the index is failed or closed.
    pub fn insert_new(&self, id: QueueId, entry: IndexEntry) -> Result<(), SpoolError> {
        self.usable()?;
        let _stripe = self.lock(id);
        let counted = self.shared.counted(id);
        self.shared.account(counted, counted, None, Some(&entry));
        self.shared.pending.put(id, entry);
        self.shared.changed();
        Ok(())
    }

    /// Writes `entry` as `id`'s, with its keys; returns whether the id had
    /// an entry and the one it had (`None` if unreadable). On an error the
    /// trees are left as they were. Caller holds the id's stripe.
    fn write_entry(
        &self,
        t: &Trees,
        id: QueueId,
        entry: &IndexEntry,
    ) -> Result<(bool, Option<IndexEntry>), SpoolError> {
        let value = crate::codec::encode(entry);
        let previous = t.messages.insert(id_key(id), value)?;
        let old = previous.as_deref().and_then(parse_entry);
        if let Err(e) = self.move_keys(t, id, (old.as_ref(), Some(entry))) {
            // Keep the trees in step: no message without its keys.
            let _ = match &previous {
                Some(p) => t.messages.insert(id_key(id), p.clone()).map(drop),
                None => t.messages.remove(id_key(id)).map(drop),
            };
            return Err(e);
        }
        Ok((previous.is_some(), old))
    }

    /// Replaces the entry of a message that is indexed;
    /// [`SpoolError::NotFound`] (and nothing written) when it is not.
    pub fn update(&self, id: QueueId, entry: &IndexEntry) -> Result<(), SpoolError> {
        let t = self.trees()?;
        let value = crate::codec::encode(entry);
        let _stripe = self.lock(id);
        if !t.messages.contains_key(id_key(id))? {
            return Err(SpoolError::NotFound { id });
        }
        // The value sled returns is the previous entry: it says which
        // queue (and schedule key) the message leaves.
        let previous = t.messages.insert(id_key(id), value)?;
        let old = previous.as_deref().and_then(parse_entry);
        self.move_keys(&t, id, (old.as_ref(), Some(entry)))?;
        let counted = self.shared.counted(id);
        self.shared
            .account(counted, counted, old.as_ref(), Some(entry));
        self.shared.changed();
        Ok(())
    }

    /// Forgets a message: its entry and its keys. Returns true when it was
    /// indexed.
    pub fn remove(&self, id: QueueId) -> Result<bool, SpoolError> {
        // Not `trees()`: the other waiting entries are not this removal's
        // business, and this one's, if it waits, never needs writing.
        let t = self.slot.trees()?;
        let _stripe = self.lock(id);
        if let Some(old) = self.shared.pending.take(id) {
            let counted = self.shared.counted(id);
            self.shared.account(counted, counted, Some(&old), None);
            self.shared.changed();
            return Ok(true);
        }
        let Some(previous) = t.messages.remove(id_key(id))? else {
            return Ok(false);
        };
        let old = parse_entry(&previous);
        match &old {
            Some(old) => self.move_keys(&t, id, (Some(old), None))?,
            // Unreadable: its schedule key is unknown (a reader drops it
            // when it meets it); its membership can be cleared.
            None => self.normalize_keys(&t, id, (None, None))?,
        }
        self.clear_history(&t, id)?;
        let counted = self.shared.counted(id);
        self.shared.account(counted, counted, old.as_ref(), None);
        self.shared.changed();
        Ok(true)
    }

    /// Appends to a message's history, keeping the newest
    /// [`MAX_HISTORY`] records. Nothing is written for a message that is
    /// not indexed (removed meanwhile).
    pub fn append_history(&self, id: QueueId, records: &[HistoryRecord]) -> Result<(), SpoolError> {
        let t = self.trees()?;
        if records.is_empty() {
            return Ok(());
        }
        let _stripe = self.lock(id);
        if !t.messages.contains_key(id_key(id))? {
            return Ok(());
        }
        let prefix = id_key(id);
        let mut next = match t.history.scan_prefix(prefix).keys().next_back() {
            Some(key) => history_seq(&key?).map_or(0, |n| n.saturating_add(1)),
            None => 0,
        };
        for record in records {
            let value = serde_json::to_vec(record).expect("a history record always serializes");
            t.history.insert(history_key(id, next), value)?;
            next = next.saturating_add(1);
        }
        // Sequence numbers only grow, so the newest MAX_HISTORY are those
        // from `next - MAX_HISTORY` on: drop what is below, without
        // counting what is kept.
        let cutoff = next.saturating_sub(MAX_HISTORY as u32);
        if cutoff > 0 {
            for key in t
                .history
                .range(history_key(id, 0)..history_key(id, cutoff))
                .keys()
            {
                t.history.remove(key?)?;
            }
        }
        self.shared.changed();
        Ok(())
    }

    /// A message's history, oldest first.
    pub fn history(&self, id: QueueId) -> Result<Vec<HistoryRecord>, SpoolError> {
        let t = self.trees()?;
        let mut out = Vec::new();
        for value in t.history.scan_prefix(id_key(id)).values() {
            if let Ok(record) = serde_json::from_slice(&value?) {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Forgets a message's history. Caller holds the id's stripe.
    fn clear_history(&self, t: &Trees, id: QueueId) -> Result<(), SpoolError> {
        for key in t.history.scan_prefix(id_key(id)).keys() {
            t.history.remove(key?)?;
        }
        Ok(())
    }

    /// Up to `limit` entries in id (arrival) order after `after`: a page
    /// of the queue. Unreadable entries are skipped.
    pub fn page(
        &self,
        after: Option<QueueId>,
        limit: usize,
    ) -> Result<Vec<(QueueId, Option<IndexEntry>)>, SpoolError> {
        let t = self.trees()?;
        let start = match after {
            Some(after) => Bound::Excluded(id_key(after)),
            None => Bound::Unbounded,
        };
        let mut out = Vec::with_capacity(limit.min(4096));
        for item in t
            .messages
            .range::<[u8; 8], _>((start, Bound::Unbounded))
            .take(limit)
        {
            let (key, value) = item?;
            if let Some(id) = id_from_key(&key) {
                out.push((id, parse_entry(&value)));
            }
        }
        Ok(out)
    }

    /// A small named value kept beside the queue (operator state such as
    /// paused destinations), flushed to disk before it returns.
    ///
    /// If the flush fails the index has failed (see `slot.rs`), and the
    /// value is undone in the journal too: the caller hears that it was
    /// not saved, so a reopened index must not have it either.
    pub fn save_state(&self, name: &str, value: &[u8]) -> Result<(), SpoolError> {
        let t = self.trees()?;
        let key = state_key(name);
        let previous = t.meta.get(&key)?;
        t.meta.insert(&key, value)?;
        if let Err(e) = self.flush() {
            let key = sled::IVec::from(key);
            let tree = t.meta.id();
            t.journal.record_undo(match previous {
                Some(value) => Op::Put { tree, key, value },
                None => Op::Del { tree, key },
            });
            return Err(e);
        }
        Ok(())
    }

    /// A value saved with [`save_state`](Self::save_state).
    pub fn load_state(&self, name: &str) -> Result<Option<Vec<u8>>, SpoolError> {
        let t = self.trees()?;
        Ok(t.meta.get(state_key(name))?.map(|v| v.to_vec()))
    }

    /// A rescan's visit of a spool file it listed and read: brings the
    /// entry in line with the file, counts it and marks it visited.
    ///
    /// No entry: a new one is added (queue disk, due at `now`, every
    /// recipient pending), only over the absence just read (compare and
    /// swap), and taken back if `file_exists` then says the file went
    /// away (a runner removed the message after the header was read).
    /// An entry with as many recipients as the file: kept, with its
    /// progress, except that the RAM queue (which did not survive) becomes
    /// the disk queue, due at `now`. An entry that does not match the
    /// file (or cannot be read) is replaced by a new one.
    ///
    /// What the visit leaves is noted in `visited`. An entry kept as it
    /// was is not written, and its keys are not read: `schedule` is keyed
    /// by time, so checking one id's key reads a random page (with a
    /// small page cache, a read from disk per file), and the closing
    /// sweep checks every key in one walk of each tree instead.
    pub fn visit_listed(
        &self,
        id: QueueId,
        file: FileFacts,
        now: u64,
        file_exists: impl Fn() -> bool,
        visited: &mut Visited,
    ) -> Result<Visit, SpoolError> {
        let t = self.trees()?;
        let key = id_key(id);
        let _stripe = self.lock(id);
        let counted_before = self.shared.counted(id);
        let fresh = || IndexEntry {
            queue: QueueName::Disk,
            arrival: file.arrival,
            next_attempt: now,
            size: file.size,
            recipients: vec![RecipientState::Pending; file.recipients],
            attempts: 0,
            last_errors: BTreeMap::new(),
            delay_notified: false,
            sender: file.sender.clone(),
            rcpts: file.rcpts.clone(),
            held_since: None,
            held_secs: 0,
            auth: file.auth.clone(),
        };
        // Every writer holds the stripe, so the swap cannot miss; the loop
        // only keeps the rule "never over a value not read just now".
        let (old, new, visit) = loop {
            let current = t.messages.get(key)?;
            let old = current.as_deref().and_then(parse_entry);
            let (new, visit) = match &old {
                None if current.is_none() => (fresh(), Visit::Added),
                None => (fresh(), Visit::Changed),
                Some(o) if o.recipients.len() != file.recipients => (fresh(), Visit::Changed),
                Some(o) => {
                    let mut new = o.clone();
                    if o.queue == QueueName::Ram {
                        new.queue = QueueName::Disk;
                        new.next_attempt = now;
                    }
                    // The file is the truth: an entry of an earlier format
                    // has no user.
                    new.auth.clone_from(&file.auth);
                    let visit = if new == *o {
                        Visit::Kept
                    } else {
                        Visit::Changed
                    };
                    (new, visit)
                }
            };
            if visit == Visit::Kept {
                break (old, new, visit);
            }
            let value = crate::codec::encode(&new);
            if t.messages
                .compare_and_swap(key, current, Some(value))?
                .is_ok()
            {
                self.shared.changed();
                break (old, new, visit);
            }
        };
        // An entry kept as it was has its keys checked by the closing
        // sweep, in one walk of each tree (see `Visited`).
        if visit != Visit::Kept {
            self.normalize_keys(&t, id, (old.as_ref(), Some(&new)))?;
        }
        if visit == Visit::Added && !file_exists() {
            let value = crate::codec::encode(&new);
            let _ = t
                .messages
                .compare_and_swap(key, Some(value), None::<Vec<u8>>)?;
            self.move_keys(&t, id, (Some(&new), None))?;
            self.mark_visited(id);
            return Ok(Visit::Vanished);
        }
        self.shared
            .account(counted_before, true, old.as_ref(), Some(&new));
        self.mark_visited(id);
        visited.record(id, &new);
        Ok(visit)
    }

    /// A rescan's visit of an id that has no spool file (an index entry
    /// not in the listing, or a listed file that turned out corrupt or
    /// gone). Its entry, if any, is removed, unless `file_exists` says a
    /// file appeared meanwhile; then it is kept and counted. Returns true
    /// when an entry was removed.
    pub fn visit_unlisted(
        &self,
        id: QueueId,
        file_exists: impl Fn() -> bool,
        visited: &mut Visited,
    ) -> Result<bool, SpoolError> {
        let t = self.trees()?;
        let key = id_key(id);
        let _stripe = self.lock(id);
        let counted_before = self.shared.counted(id);
        let Some(current) = t.messages.get(key)? else {
            self.mark_visited(id);
            return Ok(false);
        };
        let old = parse_entry(&current);
        let removed = if file_exists() {
            self.normalize_keys(&t, id, (old.as_ref(), old.as_ref()))?;
            self.shared
                .account(counted_before, true, old.as_ref(), old.as_ref());
            if let Some(old) = &old {
                visited.record(id, old);
            }
            false
        } else {
            let swapped = t
                .messages
                .compare_and_swap(key, Some(current), None::<Vec<u8>>)?
                .is_ok();
            if swapped {
                match &old {
                    Some(old) => self.move_keys(&t, id, (Some(old), None))?,
                    None => self.normalize_keys(&t, id, (None, None))?,
                }
                self.clear_history(&t, id)?;
                self.shared
                    .account(counted_before, true, old.as_ref(), None);
                self.shared.changed();
            }
            swapped
        };
        self.mark_visited(id);
        Ok(removed)
    }

    /// A rescan's visit of a listed file it could not read (an I/O
    /// error): whatever entry there is stays as it is, and is counted.
    pub fn visit_unread(&self, id: QueueId, visited: &mut Visited) -> Result<(), SpoolError> {
        let t = self.trees()?;
        let _stripe = self.lock(id);
        let counted_before = self.shared.counted(id);
        if let Some(old) = t.entry(id)? {
            self.normalize_keys(&t, id, (Some(&old), Some(&old)))?;
            self.shared
                .account(counted_before, true, Some(&old), Some(&old));
            visited.record(id, &old);
        }
        self.mark_visited(id);
        Ok(())
    }

    /// Caller holds the id's stripe.
    fn mark_visited(&self, id: QueueId) {
        self.shared
            .next_unvisited
            .fetch_max(id.value().saturating_add(1), Ordering::SeqCst);
    }

    /// Empties `schedule` and the membership trees: for an index without
    /// messages, before the spool is in use.
    pub fn clear_keys(&self) -> Result<(), SpoolError> {
        let t = self.trees()?;
        t.schedule.clear()?;
        for tree in &t.queues {
            tree.clear()?;
        }
        Ok(())
    }

    /// Indexed ids in (`after`, `upto`], in order, at most `limit`.
    pub fn ids_in(
        &self,
        after: Option<QueueId>,
        upto: QueueId,
        limit: usize,
    ) -> Result<Vec<QueueId>, SpoolError> {
        let t = self.trees()?;
        let start = match after {
            Some(after) => Bound::Excluded(id_key(after)),
            None => Bound::Unbounded,
        };
        let mut ids = Vec::new();
        for key in t
            .messages
            .range::<[u8; 8], _>((start, Bound::Included(id_key(upto))))
            .keys()
            .take(limit)
        {
            if let Some(id) = id_from_key(&key?) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Removes `schedule` and membership keys of ids up to `floor` that do
    /// not match their entry (left by a crash), and puts back the
    /// `schedule` key of an entry that lacks it; checks `cancelled` as it
    /// goes and stops early when it says so.
    ///
    /// `visited` is what the rescan's visits left (see [`Visited`]): a key
    /// it vouches for is kept without a read, every other one is checked
    /// against its entry under the id's lock. Each tree is walked once, in
    /// key order.
    pub fn sweep_stale_keys(
        &self,
        floor: QueueId,
        visited: &mut Visited,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Swept, SpoolError> {
        let t = self.trees()?;
        visited.sort();
        let mut swept = Swept::default();
        // Which of each visited entry's keys the walks met.
        const SCHEDULE_MET: u8 = 1;
        const MEMBER_MET: u8 = 2;
        let mut met = vec![0u8; visited.len()];
        for key in t.schedule.iter().keys() {
            if cancelled() {
                return Ok(swept);
            }
            let Some((time, id)) = parse_schedule_key(&key?) else {
                continue;
            };
            if id > floor {
                continue;
            }
            if let Some(i) = visited.find(id) {
                if visited.scheduled(i) == Some(Some(time)) {
                    met[i] |= SCHEDULE_MET;
                    continue;
                }
            }
            if self.drop_stale_schedule_key(&t, time, id)? {
                swept.removed += 1;
            }
        }
        for queue in QUEUES {
            let tree = t.queue_tree(queue);
            let mut cursor = 0;
            for key in tree.range(..=id_key(floor)).keys() {
                if cancelled() {
                    return Ok(swept);
                }
                let Some(id) = id_from_key(&key?) else {
                    continue;
                };
                if let Some(i) = visited.find_from(id, &mut cursor) {
                    if visited.slot(i) == Some(queue.slot()) {
                        met[i] |= MEMBER_MET;
                        continue;
                    }
                }
                let _stripe = self.lock(id);
                if t.entry(id)?.is_none_or(|e| e.queue != queue) {
                    tree.remove(id_key(id))?;
                    swept.removed += 1;
                }
            }
        }
        // Entries whose keys the walks did not all meet: a crash lost one
        // (or a runner has moved the entry on since its visit; then its
        // keys are there and nothing is written).
        for (i, met) in met.into_iter().enumerate() {
            if cancelled() {
                return Ok(swept);
            }
            let schedule_ok = met & SCHEDULE_MET != 0 || visited.scheduled(i) == Some(None);
            if schedule_ok && met & MEMBER_MET != 0 {
                continue;
            }
            let id = QueueId::new(visited.seen[i].0);
            let _stripe = self.lock(id);
            let Some(entry) = t.entry(id)? else {
                continue;
            };
            if let Some(time) = entry.scheduled() {
                let key = schedule_key(time, id);
                if !t.schedule.contains_key(key)? {
                    t.schedule.insert(key, &[][..])?;
                    swept.restored += 1;
                }
            }
            let tree = t.queue_tree(entry.queue);
            if !tree.contains_key(id_key(id))? {
                tree.insert(id_key(id), &[][..])?;
                swept.restored += 1;
            }
        }
        // History of messages that are gone (a crash between the removal
        // of an entry and of its history). A visited entry was there at
        // its visit, and whoever removed it since removed its history.
        let mut last: Option<QueueId> = None;
        let mut cursor = 0;
        for key in t.history.range(..=history_key(floor, u32::MAX)).keys() {
            if cancelled() {
                return Ok(swept);
            }
            let key = key?;
            let Some(id) = key.get(..8).and_then(id_from_key) else {
                continue;
            };
            if last == Some(id) {
                continue;
            }
            last = Some(id);
            if visited.find_from(id, &mut cursor).is_some() {
                continue;
            }
            let _stripe = self.lock(id);
            if !t.messages.contains_key(id_key(id))? {
                self.clear_history(&t, id)?;
                swept.removed += 1;
            }
        }
        Ok(swept)
    }

    /// Removes the schedule key (`time`, `id`) if, under the id's stripe,
    /// it does not match the entry. Returns true when it was removed.
    fn drop_stale_schedule_key(
        &self,
        t: &Trees,
        time: u64,
        id: QueueId,
    ) -> Result<bool, SpoolError> {
        let _stripe = self.lock(id);
        if t.entry(id)?.is_some_and(|e| e.scheduled() == Some(time)) {
            return Ok(false);
        }
        Ok(t.schedule.remove(schedule_key(time, id))?.is_some())
    }

    /// Messages due at or before `now` (unix seconds), earliest first, at
    /// most `limit` of them, leaving out those `skip` names before their
    /// entries are read (and not counting them): a range scan of
    /// `schedule`. Keys that do not match their entry (a crash's
    /// leftovers) are skipped and removed.
    pub fn due(
        &self,
        now: u64,
        limit: usize,
        skip: &dyn Fn(QueueId) -> bool,
    ) -> Result<Vec<(QueueId, IndexEntry)>, SpoolError> {
        let t = self.trees()?;
        let end = schedule_key(now, QueueId::new(u64::MAX));
        let mut out = Vec::new();
        let mut stale = Vec::new();
        for key in t.schedule.range(..=end).keys() {
            if out.len() >= limit {
                break;
            }
            let Some((time, id)) = parse_schedule_key(&key?) else {
                continue;
            };
            if skip(id) {
                continue;
            }
            match t.entry(id)? {
                Some(entry) if entry.scheduled() == Some(time) => out.push((id, entry)),
                _ => stale.push((time, id)),
            }
        }
        for (time, id) in stale {
            self.drop_stale_schedule_key(&t, time, id)?;
        }
        Ok(out)
    }

    /// When the earliest message is due, if any is queued. Stale keys met
    /// on the way are removed.
    pub fn first_due(&self) -> Result<Option<u64>, SpoolError> {
        // The waiting entries are looked at where they are, not written:
        // the disk runner asks this on the runtime's threads.
        let waiting = self.shared.pending.first_scheduled();
        let stored = self.first_stored_due()?;
        Ok(match (waiting, stored) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// [`first_due`](Self::first_due) of the entries in the trees.
    fn first_stored_due(&self) -> Result<Option<u64>, SpoolError> {
        let t = self.slot.trees()?;
        for _ in 0..1000 {
            let Some((key, _)) = t.schedule.first()? else {
                return Ok(None);
            };
            let Some((time, id)) = parse_schedule_key(&key) else {
                return Ok(None);
            };
            if !self.drop_stale_schedule_key(&t, time, id)? {
                return Ok(Some(time));
            }
        }
        Ok(t.schedule
            .first()?
            .and_then(|(key, _)| parse_schedule_key(&key))
            .map(|(time, _)| time))
    }

    /// When the oldest message of `queue` arrived (unix seconds): the
    /// entry of the first key of its membership tree, skipping a few keys
    /// that do not match their entry.
    pub fn oldest(&self, queue: QueueName) -> Result<Option<u64>, SpoolError> {
        let t = self.trees()?;
        for key in t.queue_tree(queue).iter().keys().take(64) {
            let Some(id) = id_from_key(&key?) else {
                continue;
            };
            if let Some(entry) = t.entry(id)?.filter(|e| e.queue == queue) {
                return Ok(Some(entry.arrival));
            }
        }
        Ok(None)
    }

    /// The entry of a message; `None` when it is not indexed or the stored
    /// value cannot be read.
    pub fn get(&self, id: QueueId) -> Result<Option<IndexEntry>, SpoolError> {
        // One id: its waiting entry, if any, is read where it is.
        let t = self.slot.trees()?;
        let _stripe = self.lock(id);
        match self.shared.pending.get(id) {
            Some(entry) => Ok(Some(entry)),
            None => t.entry(id),
        }
    }

    /// Every indexed id, in id order.
    pub fn ids(&self) -> Result<Vec<QueueId>, SpoolError> {
        let t = self.trees()?;
        let mut ids = Vec::new();
        for key in t.messages.iter().keys() {
            if let Some(id) = id_from_key(&key?) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// The largest indexed id.
    pub fn last_id(&self) -> Result<Option<QueueId>, SpoolError> {
        let t = self.trees()?;
        Ok(t.messages.last()?.and_then(|(key, _)| id_from_key(&key)))
    }

    /// The token of the last clean close, if one was recorded.
    pub fn token(&self) -> Result<Option<u64>, SpoolError> {
        let t = self.trees()?;
        Ok(t.meta
            .get(TOKEN_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    /// Records the token of this clean close (flushed with the rest).
    pub fn set_token(&self, token: u64) -> Result<(), SpoolError> {
        let t = self.trees()?;
        t.meta.insert(TOKEN_KEY, &token.to_be_bytes()[..])?;
        Ok(())
    }

    /// Writes everything sled holds in memory to disk, and notes when.
    /// A failed flush fails the index: sled will not write to this
    /// database again (see `slot.rs`).
    pub fn flush(&self) -> Result<(), SpoolError> {
        let t = self.trees()?;
        let seen = self.shared.changes.load(Ordering::SeqCst);
        let mark = t.journal.mark();
        if let Err(e) = t.db.flush() {
            let e = SpoolError::from(e);
            self.slot.fail(&t, &e);
            return Err(e);
        }
        t.journal.flushed(mark);
        self.shared
            .flushed_changes
            .fetch_max(seen, Ordering::SeqCst);
        self.shared
            .last_flush_ms
            .store(crate::ids::unix_micros() / 1000, Ordering::SeqCst);
        Ok(())
    }

    /// Keys in `schedule` (tests check it stays in step).
    #[cfg(test)]
    pub fn schedule_len(&self) -> usize {
        let t = self.trees().unwrap();
        t.schedule.len()
    }

    /// Adds a bare schedule key, as a crash may leave one (tests).
    #[cfg(test)]
    pub fn insert_raw_schedule_key(&self, time: u64, id: QueueId) {
        let t = self.trees().unwrap();
        t.schedule.insert(schedule_key(time, id), &[][..]).unwrap();
    }

    /// Removes the `schedule` and membership keys of `id`, leaving its
    /// entry, as a crash between the writes of one change may (tests).
    #[cfg(test)]
    pub fn remove_raw_keys(&self, id: QueueId) {
        let t = self.trees().unwrap();
        let entry = t.entry(id).unwrap().unwrap();
        t.schedule
            .remove(schedule_key(entry.next_attempt, id))
            .unwrap();
        t.queue_tree(entry.queue).remove(id_key(id)).unwrap();
    }

    /// Adds a bare membership key, as a crash may leave one (tests).
    #[cfg(test)]
    pub fn insert_raw_member(&self, queue: QueueName, id: QueueId) {
        let t = self.trees().unwrap();
        t.queue_tree(queue).insert(id_key(id), &[][..]).unwrap();
    }

    /// Stores `value` as the entry of `id`, byte for byte, leaving the
    /// other trees alone: an entry in an older format, as an earlier
    /// version left it (tests, and the queue fixture's generator).
    #[cfg(test)]
    pub fn insert_raw_entry(&self, id: QueueId, value: &[u8]) {
        let t = self.trees().unwrap();
        t.messages.insert(id_key(id), value).unwrap();
    }

    /// Panics unless every tree agrees with `messages` (tests).
    #[cfg(test)]
    pub fn assert_consistent(&self) {
        let t = self.trees().unwrap();
        let mut entries = std::collections::HashMap::new();
        for item in t.messages.iter() {
            let (key, value) = item.unwrap();
            let id = id_from_key(&key).unwrap();
            entries.insert(id, parse_entry(&value).expect("readable entry"));
        }
        let mut scheduled = 0;
        for key in t.schedule.iter().keys() {
            let (time, id) = parse_schedule_key(&key.unwrap()).unwrap();
            let entry: &IndexEntry = entries.get(&id).expect("schedule key without entry");
            assert_eq!(entry.scheduled(), Some(time), "stale schedule key of {id}");
            scheduled += 1;
        }
        let held = entries
            .values()
            .filter(|e: &&IndexEntry| e.queue == QueueName::Held)
            .count();
        assert_eq!(
            scheduled,
            entries.len() - held,
            "one schedule key per entry not held"
        );
        let mut members = 0;
        for queue in QUEUES {
            for key in t.queue_tree(queue).iter().keys() {
                let id = id_from_key(&key.unwrap()).unwrap();
                let entry = entries.get(&id).expect("membership without entry");
                assert_eq!(entry.queue, queue, "{id} in the wrong queue tree");
                members += 1;
            }
        }
        assert_eq!(members, entries.len(), "one membership per entry");
    }
}
