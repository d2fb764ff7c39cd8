//! The sled index: which messages are queued, in which queue, when each is
//! next due, and how far each recipient has got.
//!
//! The index exists so the runners can answer "what is due now?" and
//! "what is queued?" without reading spool files. It is never the only
//! copy of anything a message needs to be delivered: a full rescan of
//! `msg/` rebuilds it (see `rescan.rs`). That is why the committer does not
//! flush sled before acknowledging a message, and why an index that sled
//! cannot open is moved aside rather than repaired.
//!
//! Trees:
//! - `messages`: key = queue id (8 bytes big-endian), value = JSON of
//!   [`IndexEntry`]. Big-endian keys make sled's order the id order.
//! - `schedule`: key = next attempt (8 bytes big-endian, unix seconds) ++
//!   queue id (8 bytes big-endian), empty value; kept in step with
//!   `messages` so "what is due now" is a range scan.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use mta_envelope::{Envelope, QueueId};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::SpoolError;
use crate::layout::{fsync_dir, Layout};

/// Which queue a message waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueName {
    /// Just accepted; the first delivery attempt works from memory.
    Ram,
    /// A delivery status notification waiting to be sent.
    Bounce,
    /// Waiting for a retry, read back from the spool file when due.
    Disk,
}

/// How far delivery to one recipient has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientState {
    /// Not delivered yet; will be tried (again).
    Pending,
    /// Delivered; never tried again.
    Delivered,
    /// Failed permanently; never tried again.
    Failed,
}

/// What the index knows about one queued message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The queue it waits in.
    pub queue: QueueName,
    /// When it was accepted, in seconds since the Unix epoch.
    pub arrival: u64,
    /// When it is next due, in seconds since the Unix epoch.
    pub next_attempt: u64,
    /// Bytes of message content (the spool file without its header).
    pub size: u64,
    /// One state per recipient, in envelope order.
    pub recipients: Vec<RecipientState>,
    /// Delivery attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// The last temporary error of each recipient still pending, by
    /// envelope index: what a delay notice or the final 4.4.7 DSN reports.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_errors: BTreeMap<usize, RecipientError>,
    /// A delay notice has been sent; one is enough.
    #[serde(default)]
    pub delay_notified: bool,
}

/// The last error seen for one recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientError {
    /// The enhanced status code, e.g. `4.4.1`.
    pub status: String,
    /// The remote reply or the local cause.
    pub reason: String,
    /// The remote host that said it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

impl IndexEntry {
    /// The entry of a message just accepted: in the RAM queue, due at once,
    /// every recipient pending.
    pub fn arrived(envelope: &Envelope, size: u64) -> Self {
        IndexEntry {
            queue: QueueName::Ram,
            arrival: envelope.arrival,
            next_attempt: envelope.arrival,
            size,
            recipients: vec![RecipientState::Pending; envelope.recipients.len()],
            attempts: 0,
            last_errors: BTreeMap::new(),
            delay_notified: false,
        }
    }
}

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

fn id_from_key(key: &[u8]) -> Option<QueueId> {
    Some(QueueId::new(u64::from_be_bytes(key.try_into().ok()?)))
}

/// How the index was found at open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexState {
    /// `index/` existed before this open.
    pub existed: bool,
    /// sled could not open it; it was moved aside and a fresh one made.
    pub damaged: bool,
}

/// Handles on the open sled database and its trees (cheap to clone).
#[derive(Clone)]
pub(crate) struct Index {
    db: sled::Db,
    messages: sled::Tree,
    schedule: sled::Tree,
}

/// How long open waits for a sled lock still held by a database closed a
/// moment ago in this process (sled releases it from its own threads).
const SLED_LOCK_WAIT: Duration = Duration::from_secs(5);

impl Index {
    /// Opens `index/`, creating it when missing. A database sled refuses
    /// is moved aside to `index.damaged-<unix seconds>` (kept for a look,
    /// never deleted) and a fresh one is made; the caller then rescans.
    pub fn open(layout: &Layout) -> Result<(Index, IndexState), SpoolError> {
        let existed = layout.index.symlink_metadata().is_ok();
        if existed {
            wait_for_sled_lock(&layout.index)?;
        }
        match Self::open_at(&layout.index) {
            Ok(index) => Ok((
                index,
                IndexState {
                    existed,
                    damaged: false,
                },
            )),
            Err(e) => {
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
                let index = Self::open_at(&layout.index)?;
                Ok((
                    index,
                    IndexState {
                        existed,
                        damaged: true,
                    },
                ))
            }
        }
    }

    fn open_at(path: &Path) -> Result<Index, sled::Error> {
        let db = sled::Config::new().path(path).open()?;
        let messages = db.open_tree("messages")?;
        let schedule = db.open_tree("schedule")?;
        Ok(Index {
            db,
            messages,
            schedule,
        })
    }

    /// Records a message (or replaces its entry), keeping `schedule` in
    /// step. Returns true when the id was not indexed before.
    pub fn insert(&self, id: QueueId, entry: &IndexEntry) -> Result<bool, SpoolError> {
        let value = serde_json::to_vec(entry).expect("an index entry always serializes");
        let previous = self.messages.insert(id_key(id), value)?;
        if let Some(old) = previous.as_deref().and_then(parse_entry) {
            if old.next_attempt != entry.next_attempt {
                self.schedule.remove(schedule_key(old.next_attempt, id))?;
            }
        }
        if let Err(e) = self
            .schedule
            .insert(schedule_key(entry.next_attempt, id), &[][..])
        {
            // Keep the trees in step: no message without a schedule entry.
            let _ = self.messages.remove(id_key(id));
            return Err(e.into());
        }
        Ok(previous.is_none())
    }

    /// Forgets a message: its entry and its schedule key. Returns true
    /// when it was indexed.
    pub fn remove(&self, id: QueueId) -> Result<bool, SpoolError> {
        let Some(old) = self.messages.remove(id_key(id))? else {
            return Ok(false);
        };
        if let Some(entry) = parse_entry(&old) {
            self.schedule.remove(schedule_key(entry.next_attempt, id))?;
        }
        Ok(true)
    }

    /// Messages due at or before `now` (unix seconds), earliest first, at
    /// most `limit` of them: a range scan of `schedule`.
    pub fn due(&self, now: u64, limit: usize) -> Result<Vec<(QueueId, IndexEntry)>, SpoolError> {
        let end = schedule_key(now, QueueId::new(u64::MAX));
        let mut out = Vec::new();
        for key in self.schedule.range(..=end).keys() {
            if out.len() >= limit {
                break;
            }
            let key = key?;
            let Some(id) = id_from_key(&key[8..]) else {
                continue;
            };
            if let Some(entry) = self.get(id)? {
                out.push((id, entry));
            }
        }
        Ok(out)
    }

    /// When the earliest message is due, if any is queued.
    pub fn first_due(&self) -> Result<Option<u64>, SpoolError> {
        Ok(self.schedule.first()?.and_then(|(key, _)| {
            key.get(..8)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
        }))
    }

    /// The entry of a message; `None` when it is not indexed or the stored
    /// value cannot be read.
    pub fn get(&self, id: QueueId) -> Result<Option<IndexEntry>, SpoolError> {
        Ok(self
            .messages
            .get(id_key(id))?
            .as_deref()
            .and_then(parse_entry))
    }

    /// Every indexed id, in id order.
    pub fn ids(&self) -> Result<Vec<QueueId>, SpoolError> {
        let mut ids = Vec::new();
        for key in self.messages.iter().keys() {
            if let Some(id) = id_from_key(&key?) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// How many messages are indexed. Walks the tree: for open only; the
    /// spool keeps a counter after that.
    pub fn count(&self) -> usize {
        self.messages.len()
    }

    /// The largest indexed id.
    pub fn last_id(&self) -> Result<Option<QueueId>, SpoolError> {
        Ok(self.messages.last()?.and_then(|(key, _)| id_from_key(&key)))
    }

    /// Makes both trees hold exactly `entries` (sorted or not): entries of
    /// ids not listed are removed, `schedule` is rebuilt from scratch.
    pub fn replace_all(&self, entries: &[(QueueId, IndexEntry)]) -> Result<(), SpoolError> {
        let keep: std::collections::HashSet<u64> =
            entries.iter().map(|(id, _)| id.value()).collect();
        // Plain inserts, not a sled::Batch: the rebuild needs no atomicity
        // (a crash part way leaves no clean marker, so it is redone) and
        // large batches are several times slower in sled 0.34.
        for key in self.messages.iter().keys() {
            let key = key?;
            let listed = id_from_key(&key).is_some_and(|id| keep.contains(&id.value()));
            if !listed {
                self.messages.remove(key)?;
            }
        }
        for (id, entry) in entries {
            let value = serde_json::to_vec(entry).expect("an index entry always serializes");
            self.messages.insert(id_key(*id), value)?;
        }
        self.schedule.clear()?;
        for (id, entry) in entries {
            self.schedule
                .insert(schedule_key(entry.next_attempt, *id), &[][..])?;
        }
        Ok(())
    }

    /// Keys in `schedule` (tests check it stays in step).
    #[cfg(test)]
    pub fn schedule_len(&self) -> usize {
        self.schedule.len()
    }

    /// Writes everything sled holds in memory to disk.
    pub fn flush(&self) -> Result<(), SpoolError> {
        self.db.flush()?;
        Ok(())
    }
}

fn parse_entry(bytes: &[u8]) -> Option<IndexEntry> {
    serde_json::from_slice(bytes).ok()
}

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
