//! The index's unflushed writes, kept in memory so that a reopened index
//! loses none of them.
//!
//! sled 0.34 poisons a database after one failed write: once a flush hits
//! `ENOSPC` (or any other I/O error), every later read and write of that
//! database returns the error, even after space is back. The only way out
//! is to drop it and open the directory again, which gives back what the
//! last successful flush wrote; what changed since would be lost, and
//! among it may be a hold the operator has just made.
//!
//! So every write to an index tree is also recorded here, as the raw key
//! and value it put or removed ([`JTree`]), and a successful flush forgets
//! what it made durable ([`Journal::flushed`]). When the index has to be
//! reopened, the recorded writes are replayed in order on the reopened
//! database ([`replay`]). Each is a blind put or delete of a whole value,
//! so replaying one that did reach the disk changes nothing, and the
//! result is the index as it was in memory when it failed.
//!
//! The record is bounded ([`MAX_BYTES`]): if flushes cannot keep up with
//! the writes, it stops recording and counts as incomplete until a flush
//! has covered every write it missed. An incomplete record is not
//! replayed (the rescan that follows a reopen still brings the index in
//! line with the spool files; what is lost is what a crash would lose).

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::Arc;

use parking_lot::Mutex;
use sled::IVec;

/// Most bytes of keys and values kept; in normal running the record holds
/// half a second of writes (the flusher's pace), far less than this.
pub(crate) const MAX_BYTES: usize = 64 << 20;

/// Bytes counted for one recorded write besides its key and value.
const OP_OVERHEAD: usize = 48;

/// One write to one tree.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// `key` was set to `value`.
    Put { tree: u8, key: IVec, value: IVec },
    /// `key` was removed.
    Del { tree: u8, key: IVec },
    /// The tree was emptied.
    Clear { tree: u8 },
}

impl Op {
    fn bytes(&self) -> usize {
        OP_OVERHEAD
            + match self {
                Op::Put { key, value, .. } => key.len() + value.len(),
                Op::Del { key, .. } => key.len(),
                Op::Clear { .. } => 0,
            }
    }
}

#[derive(Debug, Default)]
struct State {
    /// (sequence number, write), oldest first.
    ops: VecDeque<(u64, Op)>,
    bytes: usize,
    /// The sequence number of the next write.
    next: u64,
    /// The last write that was not recorded (the record was full).
    last_unrecorded: Option<u64>,
    /// Every write numbered below this one is on disk.
    flushed_below: u64,
}

/// The writes made since the last successful flush began.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    state: Mutex<State>,
}

impl Journal {
    /// Records a write the database has just made (in memory). Numbered
    /// after the write, so a flush that starts after its number was taken
    /// finds the write done.
    fn record(&self, op: Op) {
        let mut state = self.state.lock();
        let seq = state.next;
        state.next += 1;
        let bytes = op.bytes();
        if state.bytes + bytes > MAX_BYTES {
            state.last_unrecorded = Some(seq);
            return;
        }
        state.bytes += bytes;
        state.ops.push_back((seq, op));
    }

    /// Taken before a flush starts: every write numbered below it is done,
    /// so the flush makes it durable.
    pub fn mark(&self) -> u64 {
        self.state.lock().next
    }

    /// A flush that began at `mark` succeeded: forget what it covered.
    pub fn flushed(&self, mark: u64) {
        let mut state = self.state.lock();
        while state.ops.front().is_some_and(|(seq, _)| *seq < mark) {
            if let Some((_, op)) = state.ops.pop_front() {
                state.bytes -= op.bytes();
            }
        }
        state.flushed_below = state.flushed_below.max(mark);
    }

    /// The writes not known to be on disk, oldest first; `None` when some
    /// of them were not recorded.
    pub fn take(&self) -> Option<Vec<Op>> {
        let mut state = self.state.lock();
        let complete = state
            .last_unrecorded
            .is_none_or(|seq| seq < state.flushed_below);
        let ops: Vec<Op> = state.ops.drain(..).map(|(_, op)| op).collect();
        state.bytes = 0;
        complete.then_some(ops)
    }

    /// Records a write that was not made on the database but must be
    /// replayed as if it had (the undoing of a write whose flush failed).
    pub fn record_undo(&self, op: Op) {
        self.record(op);
    }
}

/// A sled tree whose writes are recorded in a [`Journal`]. Reads go to
/// the tree itself (through `Deref`); the writes the index makes
/// (`insert`, `remove`, `compare_and_swap`, `clear`) are these.
#[derive(Clone)]
pub(crate) struct JTree {
    tree: sled::Tree,
    id: u8,
    journal: Arc<Journal>,
}

impl Deref for JTree {
    type Target = sled::Tree;

    fn deref(&self) -> &sled::Tree {
        &self.tree
    }
}

impl JTree {
    /// `tree`, recording as tree number `id`.
    pub fn new(tree: sled::Tree, id: u8, journal: Arc<Journal>) -> JTree {
        JTree { tree, id, journal }
    }

    /// The number replays know this tree by.
    pub fn id(&self) -> u8 {
        self.id
    }

    fn noted<T>(&self, result: sled::Result<T>, op: impl FnOnce() -> Op) -> sled::Result<T> {
        if result.is_ok() {
            self.journal.record(op());
        }
        result
    }

    /// `sled::Tree::insert`, recorded.
    pub fn insert<K: AsRef<[u8]>, V: Into<IVec>>(
        &self,
        key: K,
        value: V,
    ) -> sled::Result<Option<IVec>> {
        let key = IVec::from(key.as_ref());
        let value: IVec = value.into();
        let result = self.tree.insert(key.clone(), value.clone());
        self.noted(result, || Op::Put {
            tree: self.id,
            key,
            value,
        })
    }

    /// `sled::Tree::remove`, recorded.
    pub fn remove<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<Option<IVec>> {
        let key = IVec::from(key.as_ref());
        let result = self.tree.remove(key.clone());
        self.noted(result, || Op::Del { tree: self.id, key })
    }

    /// `sled::Tree::compare_and_swap`, recorded when it swapped.
    pub fn compare_and_swap<K, OV, NV>(
        &self,
        key: K,
        old: Option<OV>,
        new: Option<NV>,
    ) -> sled::Result<Result<(), sled::CompareAndSwapError>>
    where
        K: AsRef<[u8]>,
        OV: AsRef<[u8]>,
        NV: Into<IVec>,
    {
        let key = IVec::from(key.as_ref());
        let new: Option<IVec> = new.map(Into::into);
        let result = self.tree.compare_and_swap(key.clone(), old, new.clone());
        if let Ok(Ok(())) = &result {
            self.journal.record(match new {
                Some(value) => Op::Put {
                    tree: self.id,
                    key,
                    value,
                },
                None => Op::Del { tree: self.id, key },
            });
        }
        result
    }

    /// `sled::Tree::clear`, recorded.
    pub fn clear(&self) -> sled::Result<()> {
        let result = self.tree.clear();
        self.noted(result, || Op::Clear { tree: self.id })
    }
}

/// Replays `ops` on `trees` (indexed by their ids), in order, without
/// recording them.
pub(crate) fn replay(trees: &[&JTree], ops: &[Op]) -> sled::Result<()> {
    let tree = |id: u8| {
        trees
            .iter()
            .find(|t| t.id == id)
            .map(|t| &t.tree)
            .expect("every recorded tree id names a tree")
    };
    for op in ops {
        match op {
            Op::Put {
                tree: id,
                key,
                value,
            } => {
                tree(*id).insert(key, value.clone())?;
            }
            Op::Del { tree: id, key } => {
                tree(*id).remove(key)?;
            }
            Op::Clear { tree: id } => tree(*id).clear()?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(db: &sled::Db, name: &str, id: u8, journal: &Arc<Journal>) -> JTree {
        JTree::new(db.open_tree(name).unwrap(), id, Arc::clone(journal))
    }

    #[test]
    fn replay_gives_back_the_state_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::default());
        let db = sled::Config::new().temporary(true).open().unwrap();
        let a = tree(&db, "a", 0, &journal);
        let b = tree(&db, "b", 1, &journal);
        a.insert(b"k1", &b"old"[..]).unwrap();
        let mark = journal.mark();
        journal.flushed(mark);
        a.insert(b"k1", &b"new"[..]).unwrap();
        a.insert(b"k2", &b"v2"[..]).unwrap();
        a.remove(b"k2").unwrap();
        b.insert(b"x", &b"1"[..]).unwrap();
        assert!(a
            .compare_and_swap(b"k3", None::<&[u8]>, Some(&b"v3"[..]))
            .unwrap()
            .is_ok());
        // A swap that does not happen is not recorded.
        assert!(a
            .compare_and_swap(b"k3", None::<&[u8]>, Some(&b"other"[..]))
            .unwrap()
            .is_err());
        let ops = journal.take().expect("complete");
        assert_eq!(ops.len(), 5, "{ops:?}");

        // The state of the last flush, plus the replay.
        let other = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .unwrap();
        let journal2 = Arc::new(Journal::default());
        let a2 = tree(&other, "a", 0, &journal2);
        let b2 = tree(&other, "b", 1, &journal2);
        a2.insert(b"k1", &b"old"[..]).unwrap();
        replay(&[&a2, &b2], &ops).unwrap();
        assert_eq!(a2.get(b"k1").unwrap().unwrap(), &b"new"[..]);
        assert!(a2.get(b"k2").unwrap().is_none());
        assert_eq!(a2.get(b"k3").unwrap().unwrap(), &b"v3"[..]);
        assert_eq!(b2.get(b"x").unwrap().unwrap(), &b"1"[..]);
        // Replaying twice changes nothing.
        replay(&[&a2, &b2], &ops).unwrap();
        assert_eq!(a2.get(b"k1").unwrap().unwrap(), &b"new"[..]);
    }

    #[test]
    fn a_flush_forgets_what_it_covered_and_a_full_record_is_incomplete() {
        let journal = Arc::new(Journal::default());
        let db = sled::Config::new().temporary(true).open().unwrap();
        let a = tree(&db, "a", 0, &journal);
        a.insert(b"k1", &b"v"[..]).unwrap();
        let mark = journal.mark();
        a.insert(b"k2", &b"v"[..]).unwrap();
        journal.flushed(mark);
        assert_eq!(journal.take().unwrap().len(), 1);

        // Over the bound: writes go unrecorded, and the record is
        // incomplete until a flush covers them.
        let big = vec![0u8; MAX_BYTES / 2];
        for key in [b"b1", b"b2", b"b3"] {
            a.insert(key, big.clone()).unwrap();
        }
        assert!(journal.take().is_none(), "a write was not recorded");
        a.insert(b"k3", &b"v"[..]).unwrap();
        assert!(journal.take().is_none(), "still incomplete before a flush");
        journal.flushed(journal.mark());
        a.insert(b"k4", &b"v"[..]).unwrap();
        assert_eq!(journal.take().unwrap().len(), 1, "complete again");
    }
}
