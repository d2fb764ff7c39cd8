//! One open sled database and its trees ([`Trees`]), the form of their
//! keys, and the opening of `index/` ([`open_trees`]): what the index
//! (`index.rs`) keeps its entries in, and what a reopen (`reopen.rs`)
//! puts back in service.
//!
//! Trees:
//! - `messages`: key = queue id (8 bytes big-endian), value = the
//!   [`IndexEntry`] in its stored form (`codec.rs`: a format byte and
//!   postcard; JSON from earlier versions is still read). Big-endian
//!   keys make sled's order the id order.
//! - `schedule`: key = next attempt (8 bytes big-endian, unix seconds) ++
//!   queue id (8 bytes big-endian), empty value; kept in step with
//!   `messages` so "what is due now" is a range scan.
//! - `queue:ram`, `queue:bounce`, `queue:disk`: key = queue id, empty
//!   value; one key per message, in the tree of its queue. Ids grow with
//!   the acceptance time, so a tree's first key is its oldest message.
//! - `queue:held`: the same for messages held by the operator; they have
//!   no `schedule` key, so they are never due.
//! - `meta`: `clean-token`, the token of the last clean close (see
//!   `clean.rs`), which lets a clean open trust the index in O(1); and
//!   `state:<name>`, small operator state (paused destinations, back-offs).
//! - `history`: key = queue id ++ sequence number (4 bytes big-endian),
//!   value = JSON of [`HistoryRecord`](crate::HistoryRecord): what each
//!   attempt did to each recipient. Informational: a rescan cannot
//!   rebuild it.
//!
//! Every write to a tree is also recorded in the database's journal
//! until a flush covers it (`journal.rs`).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use mta_envelope::QueueId;
use nix::fcntl::{Flock, FlockArg};

use crate::entry::{IndexEntry, QueueName, QUEUES};
use crate::error::SpoolError;
use crate::journal::{JTree, Journal, Op};
use crate::layout::{fsync_dir, Layout};

/// The `meta` key holding the token of the last clean close.
pub(crate) const TOKEN_KEY: &[u8] = b"clean-token";

/// The `messages` key of a queue id.
pub(crate) fn id_key(id: QueueId) -> [u8; 8] {
    id.value().to_be_bytes()
}

/// The `schedule` key of a message due at `next_attempt`.
pub(crate) fn schedule_key(next_attempt: u64, id: QueueId) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&next_attempt.to_be_bytes());
    key[8..].copy_from_slice(&id.value().to_be_bytes());
    key
}

/// The queue id of a `messages` or membership key.
pub(crate) fn id_from_key(key: &[u8]) -> Option<QueueId> {
    Some(QueueId::new(u64::from_be_bytes(key.try_into().ok()?)))
}

/// (next attempt, id) of a `schedule` key.
pub(crate) fn parse_schedule_key(key: &[u8]) -> Option<(u64, QueueId)> {
    let time = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    Some((time, id_from_key(key.get(8..)?)?))
}

/// The `history` key of record `seq` of a message.
pub(crate) fn history_key(id: QueueId, seq: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&id_key(id));
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number of a `history` key.
pub(crate) fn history_seq(key: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(key.get(8..12)?.try_into().ok()?))
}

/// The `meta` key of a saved state value.
pub(crate) fn state_key(name: &str) -> Vec<u8> {
    format!("state:{name}").into_bytes()
}

/// An entry read back from its stored form (`codec.rs`); `None` when it
/// cannot be read.
pub(crate) fn parse_entry(bytes: &[u8]) -> Option<IndexEntry> {
    crate::codec::decode(bytes)
}

/// Handles on one open sled database and its trees, every write
/// recorded in its journal (`journal.rs`).
pub(crate) struct Trees {
    pub(crate) db: sled::Db,
    pub(crate) journal: Arc<Journal>,
    pub(crate) messages: JTree,
    pub(crate) schedule: JTree,
    /// Membership trees, in [`QUEUES`] order.
    pub(crate) queues: [JTree; 4],
    pub(crate) meta: JTree,
    pub(crate) history: JTree,
}

/// The journal's number for a queue's membership tree (`journal.rs`).
fn queue_tree_id(queue: QueueName) -> u8 {
    2 + queue.slot() as u8
}

/// The name of a queue's membership tree.
fn tree_name(queue: QueueName) -> &'static str {
    match queue {
        QueueName::Ram => "queue:ram",
        QueueName::Bounce => "queue:bounce",
        QueueName::Disk => "queue:disk",
        QueueName::Held => "queue:held",
    }
}

/// The ids that a journal's writes put in the held queue.
pub(crate) fn held_ids(ops: &[Op]) -> Vec<QueueId> {
    let held = queue_tree_id(QueueName::Held);
    ops.iter()
        .filter_map(|op| match op {
            Op::Put { tree, key, .. } if *tree == held => id_from_key(key),
            _ => None,
        })
        .collect()
}

impl Trees {
    /// Opens (creating) the database at `path`.
    pub(crate) fn open_at(path: &Path, cache: u64) -> Result<Trees, sled::Error> {
        // sled's own periodic flush is off: the spool's flusher thread
        // (`flush.rs`) flushes at the same pace and knows when it did.
        let mut config = sled::Config::new().path(path).flush_every_ms(None);
        if cache > 0 {
            config = config.cache_capacity(cache);
        }
        let db = config.open()?;
        let journal = Arc::new(Journal::default());
        let tree = |name: &str, id: u8| -> Result<JTree, sled::Error> {
            Ok(JTree::new(db.open_tree(name)?, id, Arc::clone(&journal)))
        };
        let queue = |q: QueueName| tree(tree_name(q), queue_tree_id(q));
        Ok(Trees {
            messages: tree("messages", 0)?,
            schedule: tree("schedule", 1)?,
            queues: QUEUES
                .map(queue)
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?
                .try_into()
                .unwrap_or_else(|_| unreachable!("four queues")),
            meta: tree("meta", 6)?,
            history: tree("history", 7)?,
            journal,
            db,
        })
    }

    /// Every tree, for a replay.
    pub(crate) fn all(&self) -> Vec<&JTree> {
        let mut all = vec![&self.messages, &self.schedule];
        all.extend(self.queues.iter());
        all.push(&self.meta);
        all.push(&self.history);
        all
    }

    /// The largest indexed id.
    pub(crate) fn last_id(&self) -> Result<Option<QueueId>, SpoolError> {
        Ok(self.messages.last()?.and_then(|(key, _)| id_from_key(&key)))
    }

    pub(crate) fn queue_tree(&self, queue: QueueName) -> &JTree {
        &self.queues[queue.slot()]
    }

    /// The entry of a message; `None` when it is not indexed or the stored
    /// value cannot be read.
    pub(crate) fn entry(&self, id: QueueId) -> Result<Option<IndexEntry>, SpoolError> {
        Ok(self
            .messages
            .get(id_key(id))?
            .as_deref()
            .and_then(parse_entry))
    }
}

/// Opens `index/` (creating it): waits for a sled lock a database of
/// this process just dropped may still hold, and moves a database sled
/// refuses aside to `index.damaged-<unix seconds>` (never deleted), then
/// makes a fresh one. Returns the trees and whether that happened. A
/// failure for want of space is returned as it is, the index left where
/// it is: it is not damaged, and opens once space is back.
pub(crate) fn open_trees(layout: &Layout, cache: u64) -> Result<(Trees, bool), SpoolError> {
    if layout.index.symlink_metadata().is_ok() {
        wait_for_sled_lock(&layout.index)?;
    }
    match Trees::open_at(&layout.index, cache) {
        Ok(trees) => Ok((trees, false)),
        Err(e) => {
            let e = SpoolError::from(e);
            if e.is_no_space() {
                return Err(e);
            }
            let aside = damaged_path(&layout.root);
            tracing::warn!(
                index = %layout.index.display(),
                moved_to = %aside.display(),
                error = %e,
                "queue index cannot be opened; moving it aside and rebuilding from the spool files"
            );
            std::fs::rename(&layout.index, &aside)
                .map_err(|e| SpoolError::io("move damaged index", &layout.index, e))?;
            fsync_dir(&layout.root)?;
            Ok((Trees::open_at(&layout.index, cache)?, true))
        }
    }
}

/// Writes a fresh sled snapshot of the closed index at `layout.index`
/// (the patched sled's `Config::write_snapshot`, see
/// `crates/third-party/sled/PATCHES.md`). sled writes snapshots only
/// while it opens a database, after reading every log message written
/// since the last one: without this, the first open after a run that
/// wrote much (seeding a million messages, a rescan) replays all of it,
/// and only the open after that is quick. Called by a clean close, once
/// the database is dropped and flushed; what it reads is what the next
/// open would read, and a failure leaves that work to the next open.
pub(crate) fn write_snapshot(layout: &Layout) -> Result<(), SpoolError> {
    wait_for_sled_lock(&layout.index)?;
    sled::Config::new()
        .path(&layout.index)
        .flush_every_ms(None)
        .write_snapshot()?;
    Ok(())
}

/// How long open waits for a sled lock still held by a database closed a
/// moment ago in this process (sled releases it from its own threads).
const SLED_LOCK_WAIT: Duration = Duration::from_secs(5);

/// `index.damaged-<unix seconds>`, with a counter when that name is taken.
fn damaged_path(root: &Path) -> PathBuf {
    let secs = crate::ids::unix_seconds();
    let mut path = root.join(format!("index.damaged-{secs}"));
    let mut n = 1;
    while path.symlink_metadata().is_ok() {
        path = root.join(format!("index.damaged-{secs}-{n}"));
        n += 1;
    }
    path
}

/// Waits until nobody holds sled's lock on `index/db`.
///
/// We hold the queue directory lock, so no other spool can be using the
/// index; a lock still held is a database of this process that was just
/// dropped and whose sled threads have not let go yet. Without the wait,
/// sled's refusal would look like damage and the index would be moved
/// aside for nothing.
fn wait_for_sled_lock(index: &Path) -> Result<(), SpoolError> {
    let db = index.join("db");
    let step = Duration::from_millis(10);
    let mut waited = Duration::ZERO;
    loop {
        let file = match File::open(&db) {
            Ok(f) => f,
            // No db file (or index/ is not a directory): nothing to wait
            // for; sled::open will judge it.
            Err(_) => return Ok(()),
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(_unlocked_on_drop) => return Ok(()),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if waited < SLED_LOCK_WAIT => {
                thread::sleep(step);
                waited += step;
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(SpoolError::Locked {
                    dir: index.to_owned(),
                })
            }
            Err((_, errno)) => return Err(SpoolError::io("lock", &db, io::Error::from(errno))),
        }
    }
}
