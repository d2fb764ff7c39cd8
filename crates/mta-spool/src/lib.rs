//! The queue directory: durable spool files and the sled index over them.
//!
//! [`Spool`] is the only way into the queue directory. [`Spool::open`]
//! takes the directory's lock and recovers from whatever the last run left
//! (an [`OpenReport`] says what it did); [`Spool::store`] makes a message
//! durable and returns only once it is; [`Spool::close`] marks a clean stop.
//! [`SpoolConfig`] says where and how; every failure is a [`SpoolError`].
//! The index keeps an [`IndexEntry`] per message, naming its
//! [`QueueName`] and a [`RecipientState`] per recipient.
//!
//! The spool files under `msg/` are the truth: one per message, holding
//! the envelope and the content (see `file.rs` for the format). The sled
//! database under `index/` is an index that a full rescan of `msg/` can
//! always rebuild, which is why it is not flushed before a message is
//! acknowledged and why a damaged one is simply set aside.
//!
//! Accepting a message costs one fdatasync of its file plus a share of
//! one directory fsync: a committer thread renames the files of all
//! concurrent stores into `msg/` and fsyncs each directory once per batch
//! (group commit, `commit.rs`). The rename is the commit point.
//!
//! The layout on disk is described in `queue/README.md` at the top of the
//! workspace and in `layout.rs`.
#![deny(missing_docs)]

mod clean;
mod commit;
mod error;
mod file;
mod ids;
mod index;
mod layout;
mod rescan;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use mta_envelope::{Envelope, QueueId};
use tokio::sync::oneshot;

use crate::clean::CleanMarker;
use crate::commit::{Committer, Counters, Request, Tuning};
use crate::ids::IdGenerator;
use crate::index::Index;
use crate::layout::{DirLock, Layout};

pub use crate::error::SpoolError;
pub use crate::index::{IndexEntry, QueueName, RecipientError, RecipientState};

/// Where the queue lives and how it behaves.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    /// The queue directory; created if missing.
    pub dir: PathBuf,
    /// Free bytes (for unprivileged users) below which
    /// [`Spool::has_free_space`] says no.
    pub min_free_space: u64,
    /// Most messages committed by one shared directory fsync (0 counts
    /// as 1).
    pub max_batch: usize,
}

/// What [`Spool::open`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// The last stop was clean: the clean marker was there. (A rescan may
    /// still have run, when the index was missing, damaged or did not
    /// match the marker.)
    pub clean: bool,
    /// Spool files read by a full rescan; 0 if none ran.
    pub rescanned: usize,
    /// Unacknowledged files removed from `tmp/`.
    pub removed_tmp: usize,
    /// Messages in the queue after open.
    pub messages: usize,
    /// Unreadable spool files the rescan moved to `corrupt/`.
    pub corrupt: usize,
    /// The index could not be opened and was moved aside to
    /// `index.damaged-<unix seconds>`.
    pub index_damaged: bool,
}

/// An open queue directory. Cheap to clone; every clone is the same spool,
/// usable from many tasks and threads at once.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    layout: Layout,
    min_free_space: u64,
    ids: IdGenerator,
    counters: Arc<Counters>,
    /// `None` once closed.
    state: Mutex<Option<Open>>,
}

/// What an open spool holds. Fields drop in this order when a spool is
/// dropped without `close()` (a simulated crash, or a daemon dying): the
/// committer finishes first, then sled lets go of its files, and only then
/// is the directory lock released, so a new open never meets a live index.
struct Open {
    committer: Committer,
    index: Index,
    lock: DirLock,
}

impl fmt::Debug for Spool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.layout.root)
            .field("messages", &self.len())
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens (creating if needed) the queue directory. Blocking: call it
    /// before starting to serve, or from `spawn_blocking`.
    ///
    /// Takes the lock (a second open while one is open, in this or another
    /// process, fails with [`SpoolError::Locked`]), removes leftovers in
    /// `tmp/` (never acknowledged), and when the last stop was not clean or
    /// the index is missing or damaged, rebuilds the index by a full rescan
    /// of `msg/`. The clean marker is removed (and the directory fsynced)
    /// as soon as it has been read, before the index is touched, so a later
    /// crash (even one during this open) is detected.
    pub fn open(config: SpoolConfig) -> Result<(Spool, OpenReport), SpoolError> {
        Self::open_with(config, Tuning::default())
    }

    pub(crate) fn open_with(
        config: SpoolConfig,
        tuning: Tuning,
    ) -> Result<(Spool, OpenReport), SpoolError> {
        let layout = Layout::new(&config.dir);
        layout::create_dir_durable(&layout.root)?;
        let lock = DirLock::acquire(&layout.root)?;
        layout.create()?;

        let (removed_tmp, tmp_max_id) = rescan::clear_tmp(&layout)?;
        let marker = clean::read(&layout);
        // Remove the marker before touching the index: from here on a crash
        // (even one during this open, in the middle of a rescan) is
        // detected at the next open and answered by a rescan.
        clean::remove(&layout)?;
        let (index, index_state) = Index::open(&layout)?;

        // Trust the index only after a clean stop, and only if it still
        // holds what it held then: an index deleted, emptied or swapped
        // while the spool was stopped fails this check.
        let mut messages = None;
        if let Some(marker) = marker {
            if index_state.existed && !index_state.damaged {
                let indexed = index.count();
                if indexed == marker.messages {
                    messages = Some(indexed);
                } else {
                    tracing::warn!(
                        indexed,
                        at_close = marker.messages,
                        "queue index does not match the clean marker; rescanning"
                    );
                }
            }
        }
        let clean = marker.is_some();

        let mut rescanned = 0;
        let mut corrupt = 0;
        let mut rescan_max_id = None;
        let messages = match messages {
            Some(n) => n,
            None => {
                let report = rescan::run(&layout, &index, ids::unix_seconds())?;
                rescanned = report.files;
                corrupt = report.corrupt;
                rescan_max_id = report.max_id;
                report.messages
            }
        };

        // Seed ids above everything this directory has seen, whatever the
        // clock says now.
        let floor = [
            index.last_id()?,
            marker.map(|m| m.last_id),
            tmp_max_id,
            rescan_max_id,
        ]
        .into_iter()
        .flatten()
        .map(QueueId::value)
        .max()
        .unwrap_or(0);

        let counters = Arc::new(Counters::default());
        counters.messages.store(messages, Ordering::Relaxed);
        let committer = Committer::start(
            layout.clone(),
            index.clone(),
            Arc::clone(&counters),
            config.max_batch,
            tuning,
        )?;
        let report = OpenReport {
            clean,
            rescanned,
            removed_tmp,
            messages,
            corrupt,
            index_damaged: index_state.damaged,
        };
        tracing::info!(
            dir = %layout.root.display(),
            clean,
            rescanned,
            removed_tmp,
            messages,
            corrupt,
            "spool open"
        );
        let spool = Spool {
            inner: Arc::new(Inner {
                layout,
                min_free_space: config.min_free_space,
                ids: IdGenerator::above(floor),
                counters,
                state: Mutex::new(Some(Open {
                    committer,
                    index,
                    lock,
                })),
            }),
        };
        Ok((spool, report))
    }

    /// A new, unique queue id, strictly above every id handed out before
    /// (in this run or, through the seed taken at open, any earlier one):
    /// max(now in microseconds since the epoch, last id + 1).
    pub fn next_id(&self) -> QueueId {
        self.inner.ids.next()
    }

    /// Makes the message durable and returns only once it is.
    ///
    /// `parts` are concatenated to form the message content (for example
    /// the `Received:` header and the body). The file is written to
    /// `tmp/<id>` and fdatasynced on a blocking thread, then handed to the
    /// committer, which renames it to `msg/<bucket>/<id>`, fsyncs the
    /// bucket directory (shared with the rest of its batch) and records it
    /// in the index.
    ///
    /// On any error nothing is left behind and the message is not queued.
    /// After [`close`](Self::close) this fails with [`SpoolError::Closed`]
    /// without writing anything. If the returned future is dropped before
    /// the commit point the message is not queued either.
    pub async fn store(
        &self,
        id: QueueId,
        envelope: &Envelope,
        parts: &[&[u8]],
    ) -> Result<(), SpoolError> {
        self.store_in(QueueName::Ram, id, envelope, Arc::new(parts.concat()))
            .await
    }

    /// [`store`](Self::store) into a given queue (the bounce queue for the
    /// DSNs the MTA makes, the disk queue for a volatile message), with the
    /// content the caller already owns: it is written as it is, with no
    /// copy, which is why the listener hands it over this way.
    pub async fn store_in(
        &self,
        queue: QueueName,
        id: QueueId,
        envelope: &Envelope,
        content: Arc<Vec<u8>>,
    ) -> Result<(), SpoolError> {
        // Taken here and moved into the blocking task with no await in
        // between: close() waits for every sender to be dropped, so a store
        // that got one is finished before close() returns.
        let sender = self
            .open_state()?
            .committer
            .sender()
            .ok_or(SpoolError::Closed)?;
        self.inner.ids.observe(id);

        let header = file::encode_header(envelope);
        let size = content.len();
        let tmp = self.inner.layout.tmp_path(id);
        let (reply, answer) = oneshot::channel();
        let request = Request {
            id,
            tmp: tmp.clone(),
            entry: IndexEntry {
                queue,
                ..IndexEntry::arrived(envelope, size as u64)
            },
            reply,
        };

        let handed_over = tokio::task::spawn_blocking(move || {
            file::write_new_durable(&tmp, &[&header, &content])?;
            drop(content);
            sender.send(request).map_err(|unsent| {
                // The committer is gone (it only stops after every sender
                // has been dropped, so it must have died): do not leave
                // the file for it.
                let _ = std::fs::remove_file(&unsent.0.tmp);
                SpoolError::Closed
            })
        })
        .await;
        match handed_over {
            Ok(result) => result?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: only happens when the runtime shuts down.
            Err(_) => return Err(SpoolError::Closed),
        }
        // A dropped reply means the committer died mid-batch.
        answer.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// True when the file system of the queue directory has at least
    /// `min_free_space` bytes available to unprivileged users
    /// (`f_bavail * f_frsize` from statvfs). One system call; cheap enough
    /// for every MAIL command.
    pub fn has_free_space(&self) -> Result<bool, SpoolError> {
        let root = &self.inner.layout.root;
        let stat = nix::sys::statvfs::statvfs(root.as_path())
            .map_err(|e| SpoolError::io("statvfs", root, e.into()))?;
        #[allow(clippy::useless_conversion)] // the field types differ between platforms
        let free =
            u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size()));
        Ok(free >= self.inner.min_free_space)
    }

    /// Messages in the queue (a counter, not a walk of the index).
    pub fn len(&self) -> usize {
        self.inner.counters.messages.load(Ordering::Relaxed)
    }

    /// True when no message is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queue ids of every queued message, in id order (from the index).
    pub fn ids(&self) -> Result<Vec<QueueId>, SpoolError> {
        self.index()?.ids()
    }

    /// The index entry of a queued message, if it has one.
    pub fn entry(&self, id: QueueId) -> Result<Option<IndexEntry>, SpoolError> {
        self.index()?.get(id)
    }

    /// Records a message's new state: recipients, queue, next attempt.
    /// Not flushed: a crash may lose the change, and then a recipient may
    /// be tried again, never lost.
    pub fn update(&self, id: QueueId, entry: &IndexEntry) -> Result<(), SpoolError> {
        let index = self.index()?;
        if index.insert(id, entry)? {
            // It was not indexed (removed meanwhile): do not resurrect it.
            index.remove(id)?;
            return Err(SpoolError::NotFound { id });
        }
        Ok(())
    }

    /// Removes a message that is done: its spool file, then its index
    /// entry. The unlink is not fsynced: if a crash undoes it, the message
    /// comes back and is delivered again, which RFC 5321 tolerates and a
    /// lost message is not.
    pub fn remove(&self, id: QueueId) -> Result<(), SpoolError> {
        let index = self.index()?;
        let path = self.inner.layout.msg_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("remove", &path, e)),
        }
        if index.remove(id)? {
            self.inner.counters.messages.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Messages due at or before `now` (unix seconds), earliest first, at
    /// most `limit`.
    pub fn due(&self, now: u64, limit: usize) -> Result<Vec<(QueueId, IndexEntry)>, SpoolError> {
        self.index()?.due(now, limit)
    }

    /// When the earliest queued message is due.
    pub fn first_due(&self) -> Result<Option<u64>, SpoolError> {
        self.index()?.first_due()
    }

    /// Reads a spool file back: the envelope and the message content.
    /// [`SpoolError::NotFound`] when there is no such message;
    /// [`SpoolError::Corrupt`] when the file is not a valid spool file.
    pub fn read(&self, id: QueueId) -> Result<(Envelope, Vec<u8>), SpoolError> {
        drop(self.open_state()?);
        let path = self.inner.layout.msg_path(id);
        file::read_file(&path).map_err(|e| match e {
            SpoolError::Io {
                op: "open", source, ..
            } if source.kind() == std::io::ErrorKind::NotFound => SpoolError::NotFound { id },
            other => other,
        })
    }

    /// Closes the spool: waits for stores in progress, flushes the index,
    /// writes the clean marker (write, fsync the file, fsync the directory)
    /// and releases the lock. Blocking. Afterwards every clone refuses to
    /// store with [`SpoolError::Closed`]. Closing again does nothing.
    ///
    /// If flushing the index fails, no clean marker is written (the next
    /// open rescans) and the error is returned; the lock is released
    /// either way.
    pub fn close(&self) -> Result<(), SpoolError> {
        let open = match self.lock_state().take() {
            Some(open) => open,
            None => return Ok(()),
        };
        let Open {
            mut committer,
            index,
            lock,
        } = open;
        committer.stop();
        index.flush()?;
        let marker = CleanMarker {
            messages: self.len(),
            last_id: self.inner.ids.last(),
        };
        // Drop sled before writing the marker and releasing the lock: the
        // marker promises an index that is complete on disk.
        drop(index);
        clean::write(&self.inner.layout, marker)?;
        drop(lock);
        tracing::info!(dir = %self.inner.layout.root.display(), messages = marker.messages, "spool closed cleanly");
        Ok(())
    }

    /// The queue directory.
    pub fn dir(&self) -> &Path {
        &self.inner.layout.root
    }

    /// Batches committed since open; with concurrent stores it is below
    /// the number of messages stored, which is the point of group commit.
    pub fn commit_batches(&self) -> u64 {
        self.inner.counters.batches.load(Ordering::Relaxed)
    }

    fn lock_state(&self) -> MutexGuard<'_, Option<Open>> {
        // A panic while holding this lock cannot leave `Open` half-changed
        // (it is only taken whole or read), so poisoning is ignored.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open_state(&self) -> Result<OpenGuard<'_>, SpoolError> {
        let guard = self.lock_state();
        if guard.is_none() {
            return Err(SpoolError::Closed);
        }
        Ok(OpenGuard(guard))
    }

    fn index(&self) -> Result<Index, SpoolError> {
        Ok(self.open_state()?.index.clone())
    }
}

/// The state of a spool known to be open.
struct OpenGuard<'a>(MutexGuard<'a, Option<Open>>);

impl std::ops::Deref for OpenGuard<'_> {
    type Target = Open;

    fn deref(&self) -> &Open {
        self.0.as_ref().expect("checked open")
    }
}
