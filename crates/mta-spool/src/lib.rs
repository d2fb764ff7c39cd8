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
//! database under `index/` is an index that a rescan of `msg/` can always
//! rebuild, which is why it is not flushed before a message is
//! acknowledged and why a damaged one is simply set aside.
//!
//! Opening and closing cost the same with ten queued messages or a
//! million. After a clean stop the index is trusted on the strength of a
//! token it shares with the clean marker (`clean.rs`), not by counting it,
//! and the message counts come from the marker. After a crash (or with a
//! missing, damaged or foreign index) open only lists the file names and
//! returns; the rescan that reads the files runs on a thread while the
//! spool already accepts and delivers ([`Spool::rescan_progress`],
//! `rescan.rs`). The index is flushed every half second by a thread of
//! its own (`flush.rs`, [`Spool::schedule_saved`]), so close only flushes
//! what changed since.
//!
//! Accepting a message costs one fdatasync of its file plus a share of
//! one directory fsync: the thread that wrote the file renames it into
//! `msg/` and adds it to that directory's pending list; the thread that
//! finds no fsync of the directory under way runs one for everything
//! pending, answers those messages and goes on while more gather (group
//! commit, `commit.rs`). The rename is the commit point.
//!
//! Status figures are cheap enough to poll: message counts per queue are
//! kept in memory as the index changes, and a queue's oldest message is
//! the first key of a small per-queue tree ([`Spool::queue_stats`]).
//!
//! The layout on disk is described in `queue/README.md` at the top of the
//! workspace and in `layout.rs`. Every directory and file gets an explicit
//! mode, whatever the umask: private to the owner, or readable by the
//! group when the queue directory is ([`prepare`], [`Access`]).
#![deny(missing_docs)]

mod clean;
mod codec;
mod commit;
mod entry;
mod error;
mod file;
mod flush;
mod ids;
mod index;
mod journal;
mod layout;
mod memory;
mod pending;
mod permissions;
mod reopen;
mod rescan;
mod reuse;
mod slot;
mod trees;
mod writers;

#[cfg(test)]
mod fixture;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mta_envelope::{Envelope, QueueId};
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{oneshot, Notify};

use crate::clean::CleanMarker;
use crate::commit::{Committer, Counters, Request, Tuning};
use crate::entry::QUEUES;
use crate::flush::Flusher;
use crate::ids::IdGenerator;
use crate::index::Index;
use crate::layout::{DirLock, Layout, Modes};
use crate::rescan::Rescan;

pub use crate::entry::{
    HistoryRecord, IndexEntry, QueueName, RecipientError, RecipientState, MAX_HISTORY,
};
pub use crate::error::SpoolError;
pub use crate::memory::set_memory_releaser;
pub use crate::permissions::{prepare, Access};
pub use crate::rescan::RescanProgress;
pub use crate::slot::{IndexFailure, IndexHealth};

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
    /// Spool files per second a background rescan may read (0: no limit).
    pub rescan_rate: u64,
    /// Most threads writing and fsyncing messages at once (0 counts as
    /// 1); a store that finds them all busy waits for the first free.
    pub writers: usize,
    /// Bytes of memory the index may keep as its page cache (0: the
    /// index library's default, 1 GiB).
    pub index_cache: u64,
}

/// What [`Spool::open`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// The last stop was clean: a clean marker (of the current format)
    /// was there. (A rescan may still run, when the index was missing,
    /// damaged or not the one the marker was written for: see
    /// [`index`](Self::index).)
    pub clean: bool,
    /// What the last run left: nothing (a new queue), a clean stop, or
    /// an unclean one.
    pub last_stop: LastStop,
    /// Whether the index was trusted as the last clean stop saved it, and
    /// if not, why it is checked or rebuilt from the spool files.
    pub index: IndexOrigin,
    /// A rescan was started in the background
    /// ([`Spool::rescan_progress`] follows it).
    pub rescan: bool,
    /// Spool files listed for the background rescan; 0 if none runs.
    pub rescanned: usize,
    /// Unacknowledged files removed from `tmp/`.
    pub removed_tmp: usize,
    /// Messages counted at open: all of them after a clean stop; with a
    /// rescan, it starts at 0 and grows as the rescan visits the files
    /// ([`Spool::len`]).
    pub messages: usize,
    /// Spool files moved to `corrupt/` during open (a misplaced file
    /// whose id was taken). Those the rescan sets aside are counted in
    /// [`RescanProgress::corrupt`].
    pub corrupt: usize,
    /// The index could not be opened and was moved aside to
    /// `index.damaged-<unix seconds>`.
    pub index_damaged: bool,
    /// The index could not be opened for want of space: the spool opened
    /// with its index failed ([`Spool::index_health`]) and refuses mail
    /// until [`Spool::recover_index`] opens it and rescans.
    pub index_unavailable: bool,
}

/// What [`Spool::open`] found of the previous run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LastStop {
    /// Nothing of an earlier run: no clean marker, no index, no spool
    /// file, nothing left in `tmp/`. A new queue directory.
    New,
    /// A clean marker: the last run closed the spool.
    Clean,
    /// No clean marker, but an earlier run's index or files: it was
    /// killed, crashed, lost power, or stopped without saving its index
    /// (a full disk, or a stop during a rescan).
    NotClean,
}

/// Where the index this run starts from comes from.
///
/// Only [`Trusted`](Self::Trusted) keeps everything the index alone
/// holds (message histories, holds, paused domains, back-offs) as the
/// last stop left it; [`Checked`](Self::Checked) keeps them up to the
/// last flush before the crash; the others start without them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexOrigin {
    /// The index the last clean stop saved (its token matches the clean
    /// marker's): trusted as it is, no rescan.
    Trusted,
    /// The index of an unclean stop, kept and brought in line with the
    /// spool files by a rescan.
    Checked,
    /// A new queue: a new, empty index, and no spool file to read.
    Created,
    /// There was no index, though the queue had been used: rebuilt from
    /// the spool files.
    Missing,
    /// There was an index, but not the one the last clean stop saved
    /// (emptied, replaced or restored from elsewhere while stopped):
    /// rebuilt from the spool files.
    Replaced,
    /// The index could not be opened; it was set aside as
    /// `index.damaged-<unix seconds>` and rebuilt from the spool files.
    Damaged,
    /// The index could not be opened for want of space: the spool runs
    /// degraded until [`Spool::recover_index`] opens it and rescans.
    Unavailable,
}

/// One queue's figures ([`Spool::queue_stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStats {
    /// Which queue.
    pub queue: QueueName,
    /// Messages in it.
    pub messages: u64,
    /// When its oldest message arrived (unix seconds); `None` when empty
    /// (or the spool is closed).
    pub oldest_arrival: Option<u64>,
}

/// How much of the index (the delivery schedule and state) is on disk
/// ([`Spool::schedule_saved`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduleSaved {
    /// When the last flush of the index ended (ms since the Unix epoch);
    /// `None` before the first one of this run.
    pub last_flush_unix_ms: Option<u64>,
    /// Index changes (stores, updates, removals, rescan writes) made since
    /// the last flush started: what a crash now could lose from the index
    /// (never from the spool files).
    pub changes_since_flush: u64,
}

/// A page of the queue ([`Spool::list`]).
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    /// The messages kept, in id (arrival) order.
    pub items: Vec<(QueueId, IndexEntry)>,
    /// Where the next page starts (pass it as `after`); `None` at the end
    /// of the queue.
    pub next: Option<QueueId>,
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
    rescan_rate: u64,
    index_cache: u64,
    ids: IdGenerator,
    counters: Arc<Counters>,
    /// The index's counts and flush figures; outlive the index.
    figures: Arc<index::Shared>,
    /// The figures of the last rescan started (at open, or after the
    /// index was reopened).
    rescan: Mutex<Option<Arc<rescan::Progress>>>,
    /// Woken after each rescan batch and at its end.
    rescan_notify: Arc<Notify>,
    /// Spool files set aside in `corrupt/` by open and by
    /// [`Spool::set_aside_corrupt`] (the rescan counts its own).
    corrupt: AtomicU64,
    /// One reopen of a failed index at a time.
    recovering: Mutex<()>,
    /// Woken when a failed index is back in service.
    recovered: Arc<Notify>,
    /// `None` once closed.
    state: Mutex<Option<Open>>,
    /// Spool files of finished messages, kept for the next ones.
    free: reuse::FreeFiles,
    /// The threads that store messages (writers.rs).
    writers: writers::Writers,
}

/// What an open spool holds. Fields drop in this order when a spool is
/// dropped without `close()` (a simulated crash, or a daemon dying): the
/// rescan is cancelled and the stores under way finish first, then the flusher
/// stops, then sled lets go of its files, and only then is the directory
/// lock released, so a new open never meets a live index.
struct Open {
    rescan: Option<Rescan>,
    committer: Committer,
    flusher: Flusher,
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
    /// Opens (creating if needed) the queue directory. Blocking, but
    /// short whatever the size of the queue: call it before starting to
    /// serve, or from `spawn_blocking`.
    ///
    /// Takes the lock (a second open while one is open, in this or another
    /// process, fails with [`SpoolError::Locked`]) and removes leftovers in
    /// `tmp/` (never acknowledged). After a clean stop whose index is the
    /// one the clean marker names, that is all. Otherwise (a crash, or the
    /// index missing, damaged or replaced) it lists the names of the spool
    /// files (no file is read) so new queue ids start above them all, and
    /// starts a rescan on a thread of its own that brings the index in
    /// line with the files while the spool is in use; see
    /// [`rescan_progress`](Self::rescan_progress). The clean marker is
    /// removed (and the directory fsynced) as soon as it has been read,
    /// before the index is touched, so a later crash (even one during this
    /// open or the rescan) is detected.
    pub fn open(config: SpoolConfig) -> Result<(Spool, OpenReport), SpoolError> {
        Self::open_with(config, Tuning::default())
    }

    pub(crate) fn open_with(
        config: SpoolConfig,
        tuning: Tuning,
    ) -> Result<(Spool, OpenReport), SpoolError> {
        let mut layout = Layout::new(&config.dir);
        layout::create_dir_durable(&layout.root)?;
        layout.modes = Modes::of(&layout.root)?;
        let lock = DirLock::acquire(&layout.root)?;
        layout.create()?;

        let (removed_tmp, tmp_max_id) = rescan::clear_tmp(&layout)?;
        let marker = clean::read(&layout);
        // Remove the marker before touching the index: from here on a crash
        // (even one during this open, or during the rescan) is detected at
        // the next open and answered by a rescan.
        clean::remove(&layout)?;
        let (index, index_state) = Index::open(&layout, config.index_cache)?;
        // sled has read its snapshot whole and dropped it.
        memory::release_free_memory();
        layout.secure_index()?;

        // Trust the index only after a clean stop, and only if it is the
        // index that stop flushed: one deleted, emptied, swapped or
        // restored while the spool was stopped lacks the marker's token.
        // O(1): no walk of the index.
        let available = !index_state.unavailable;
        let mut trusted = None;
        if let Some(marker) = marker {
            if available && index_state.existed && !index_state.damaged {
                if index.token()? == Some(marker.token) {
                    trusted = Some(marker);
                } else {
                    tracing::warn!(
                        "queue index is not the one the clean marker was written for; rescanning"
                    );
                }
            }
        }
        let clean = marker.is_some();

        let mut listing = None;
        let mut listed_max = None;
        let mut corrupt = 0;
        match trusted {
            Some(marker) => index.set_counts(marker.counts),
            None => {
                let listed = rescan::list(&layout)?;
                corrupt = listed.corrupt;
                listed_max = listed.max_id;
                if !available {
                    // No index to rescan into yet: recover_index opens
                    // it and rescans, once space is back.
                } else if listed.ids.is_empty() && index.last_id()?.is_none() {
                    // No file and no entry (a new queue directory, or an
                    // empty one): nothing to rescan. Keys a crash may have
                    // left in the other trees go with a clear.
                    index.clear_keys()?;
                } else {
                    listing = Some(listed);
                }
            }
        }

        // Seed ids above everything this directory has seen, whatever the
        // clock says now. With a rescan this is also its floor: every id
        // above it is a message of this run, which the rescan leaves alone.
        let floor = [
            if available { index.last_id()? } else { None },
            marker.map(|m| m.last_id),
            tmp_max_id,
            listed_max,
        ]
        .into_iter()
        .flatten()
        .map(QueueId::value)
        .max()
        .unwrap_or(0);
        if listing.is_some() {
            index.begin_rescan(QueueId::new(floor));
        }
        let messages = index.shared().len() as usize;

        let counters = Arc::new(Counters::default());
        let lent = Arc::new(reuse::Lent::default());
        let committer = Committer::new(
            layout.clone(),
            index.clone(),
            Arc::clone(&counters),
            Arc::clone(&lent),
            config.max_batch,
            &tuning,
        );
        let flusher = Flusher::start(
            index.clone(),
            tuning.flush_every.unwrap_or(flush::FLUSH_EVERY),
        )?;
        let rescan_notify = Arc::new(Notify::new());
        let rescanned = listing.as_ref().map_or(0, |l| l.ids.len());
        let rescan = match listing {
            Some(listing) => Some(Rescan::start(
                layout.clone(),
                index.clone(),
                listing.ids,
                QueueId::new(floor),
                config.rescan_rate,
                Arc::clone(&rescan_notify),
            )?),
            None => None,
        };
        let earlier_run = index_state.existed || removed_tmp > 0 || listed_max.is_some();
        let last_stop = match (clean, earlier_run) {
            (true, _) => LastStop::Clean,
            (false, true) => LastStop::NotClean,
            (false, false) => LastStop::New,
        };
        let index_origin = if index_state.unavailable {
            IndexOrigin::Unavailable
        } else if index_state.damaged {
            IndexOrigin::Damaged
        } else if trusted.is_some() {
            IndexOrigin::Trusted
        } else if !index_state.existed {
            if last_stop == LastStop::New {
                IndexOrigin::Created
            } else {
                IndexOrigin::Missing
            }
        } else if clean {
            IndexOrigin::Replaced
        } else {
            IndexOrigin::Checked
        };
        let report = OpenReport {
            clean,
            last_stop,
            index: index_origin,
            rescan: rescan.is_some(),
            rescanned,
            removed_tmp,
            messages,
            corrupt,
            index_damaged: index_state.damaged,
            index_unavailable: index_state.unavailable,
        };
        tracing::info!(
            dir = %layout.root.display(),
            clean,
            last_stop = ?last_stop,
            index = ?index_origin,
            rescan = report.rescan,
            rescanned,
            removed_tmp,
            messages,
            corrupt,
            index_unavailable = index_state.unavailable,
            "spool open"
        );
        let spool = Spool {
            inner: Arc::new(Inner {
                free: reuse::FreeFiles::new(&layout.tmp, layout.modes.file, lent),
                writers: writers::Writers::new(config.writers),
                layout,
                min_free_space: config.min_free_space,
                rescan_rate: config.rescan_rate,
                index_cache: config.index_cache,
                ids: IdGenerator::above(floor),
                counters,
                figures: Arc::clone(index.shared()),
                rescan: Mutex::new(rescan.as_ref().map(|r| Arc::clone(r.progress()))),
                rescan_notify,
                corrupt: AtomicU64::new(corrupt as u64),
                recovering: Mutex::new(()),
                recovered: Arc::new(Notify::new()),
                state: Mutex::new(Some(Open {
                    rescan,
                    committer,
                    flusher,
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
    /// the `Received:` header and the body). On one of the spool's writer
    /// threads the file is written to `tmp/<id>` (or over a kept file) and fdatasynced,
    /// renamed to `msg/<bucket>/<id>`, made durable by a fsync of the
    /// bucket directory (shared with the other stores under way) and
    /// recorded in the index.
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
        // Taken here and moved into the writer's job with no await in
        // between: close() waits for every commit handed out to be dropped,
        // so a store that got one is finished before close() returns.
        let commit = {
            let open = self.open_state()?;
            // A failed index cannot record the message: refuse it before
            // writing anything.
            open.index.usable()?;
            open.committer.enter().ok_or(SpoolError::Closed)?
        };
        self.inner.ids.observe(id);

        let size = content.len();
        let header = file::encode_header(envelope, size);
        let need = (header.len() + size) as u64;
        // Over a finished message's file when one is kept (reuse.rs),
        // else a new file: under a slot's name when it may be kept
        // afterwards. A message in a slot is committed by a link, so the
        // slot keeps its name (reuse.rs, `Lent`).
        let reused = self.inner.free.take(need);
        let (tmp, slot) = match &reused {
            Some((path, _)) => (path.clone(), true),
            None => match self.inner.free.new_slot(need) {
                Some(slot) => (slot, true),
                None => (self.inner.layout.tmp_path(id), false),
            },
        };
        let link = slot && self.inner.free.lent().lend(id, tmp.clone());
        let mode = self.inner.layout.modes.file;
        let (reply, answer) = oneshot::channel();
        let request = Request {
            id,
            tmp: tmp.clone(),
            entry: IndexEntry {
                queue,
                ..IndexEntry::arrived(envelope, size as u64)
            },
            link,
            reply,
        };

        // One writer thread writes, syncs and renames the message; it, or
        // the thread already fsyncing the bucket, answers the session: one
        // hand-off there and one back (writers.rs, commit.rs).
        let spool = Arc::clone(&self.inner);
        self.inner.writers.run(move || {
            let written = match reused {
                Some((path, old)) => file::write_over_durable(&path, old, &[&header, &content]),
                None => file::write_new_durable(&tmp, &[&header, &content], mode),
            };
            drop(content);
            if let Err(e) = &written {
                if link {
                    spool.free.lent().forget(id);
                }
                if e.is_no_space() {
                    // Kept files hold space: give it back (reuse.rs).
                    spool.free.keep(false);
                }
            }
            // Nothing of the spool is held once the caller is answered:
            // it may close or drop the spool then.
            drop(spool);
            match written {
                Ok(()) => commit.run(request),
                Err(e) => {
                    drop(commit);
                    let _ = request.reply.send(Err(e));
                }
            }
        });
        // A dropped reply means the job panicked (writers.rs catches it).
        answer.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// True when the file system of the queue directory has at least
    /// `min_free_space` bytes available to unprivileged users
    /// (`f_bavail * f_frsize` from statvfs). One system call; cheap enough
    /// for every MAIL command.
    pub fn has_free_space(&self) -> Result<bool, SpoolError> {
        let root = &self.inner.layout.root;
        let available = || -> Result<u64, SpoolError> {
            let stat = nix::sys::statvfs::statvfs(root.as_path())
                .map_err(|e| SpoolError::io("statvfs", root, e.into()))?;
            #[allow(clippy::useless_conversion)] // the field types differ between platforms
            Ok(u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size())))
        };
        let mut free = available()?;
        // Files kept for reuse (reuse.rs) only while space is ample: near
        // the floor they go, and their space with them.
        let ample = free
            >= self
                .inner
                .min_free_space
                .saturating_add(2 * reuse::MAX_BYTES);
        let held = self.inner.free.bytes();
        self.inner.free.keep(ample);
        if !ample && held > 0 {
            free = available()?;
        }
        Ok(free >= self.inner.min_free_space)
    }

    /// Messages in the queue (a counter, not a walk of the index). While a
    /// rescan runs it counts what the rescan has visited so far plus what
    /// this run stored.
    pub fn len(&self) -> usize {
        self.inner.figures.len() as usize
    }

    /// True when no message is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queue ids of every indexed message, in id order (from the index;
    /// while a rescan runs, files it has not reached yet may be missing).
    pub fn ids(&self) -> Result<Vec<QueueId>, SpoolError> {
        self.index()?.ids()
    }

    /// The index entry of a queued message, if it has one.
    pub fn entry(&self, id: QueueId) -> Result<Option<IndexEntry>, SpoolError> {
        self.index()?.get(id)
    }

    /// Records a message's new state: recipients, queue, next attempt.
    /// [`SpoolError::NotFound`] (and nothing written) when the message is
    /// not indexed (removed meanwhile). Not flushed: a crash may lose the
    /// change (the flusher writes changes out every half second), and then
    /// a recipient may be tried again, never lost.
    pub fn update(&self, id: QueueId, entry: &IndexEntry) -> Result<(), SpoolError> {
        self.index()?.update(id, entry)
    }

    /// Removes a message that is done: its spool file (kept in `tmp/` for
    /// the next message when small, see `reuse.rs`, else unlinked), then
    /// its index entry. The removal is not fsynced: if a crash undoes it,
    /// the message comes back and is delivered again, which RFC 5321
    /// tolerates and a lost message is not.
    pub fn remove(&self, id: QueueId) -> Result<(), SpoolError> {
        let index = self.index()?;
        let path = self.inner.layout.msg_path(id);
        match self.inner.free.retire(id, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("remove", &path, e)),
        }
        index.remove(id)?;
        Ok(())
    }

    /// Sets aside a queued message whose spool file is corrupt (a read
    /// failed with [`SpoolError::Corrupt`]): the file goes to `corrupt/`
    /// as a rescan would move it (never deleted: an operator may still
    /// recover the mail), then the index entry is removed, so the message
    /// is no longer queued. The caller has reported its recipients first.
    ///
    /// The entry goes even when the file cannot be moved (the error is
    /// returned): a file left in `msg/` without an entry is set aside by
    /// the next rescan, whereas an entry kept would be read, fail and be
    /// reported again at every attempt.
    pub fn set_aside_corrupt(&self, id: QueueId, reason: &str) -> Result<(), SpoolError> {
        let index = self.index()?;
        let path = self.inner.layout.msg_path(id);
        // Counted before the move, and uncounted if it does not happen:
        // whoever sees the file in corrupt/ (the move's directory fsyncs
        // come after the rename) sees it counted.
        self.inner.corrupt.fetch_add(1, Ordering::Relaxed);
        let moved = rescan::move_to_corrupt(&self.inner.layout, &path, reason);
        // Gone meanwhile: a rescan set it aside first, and counted it.
        let gone = matches!(&moved, Err(SpoolError::Io { op: "rename", source, .. })
            if source.kind() == std::io::ErrorKind::NotFound);
        if gone || (moved.is_err() && path.symlink_metadata().is_ok()) {
            self.inner.corrupt.fetch_sub(1, Ordering::Relaxed);
        }
        let moved = if gone { Ok(()) } else { moved };
        // Wherever the file is now, its slot in tmp/ is no longer free to
        // be written over.
        self.inner.free.lent().forget(id);
        index.remove(id)?;
        moved
    }

    /// Spool files set aside in `corrupt/` since open: by open itself, by
    /// the rescan, and by [`set_aside_corrupt`](Self::set_aside_corrupt).
    pub fn corrupt_set_aside(&self) -> u64 {
        let rescan = self.rescan_figures().map_or(0, |p| p.snapshot().corrupt);
        self.inner.corrupt.load(Ordering::Relaxed) + rescan
    }

    /// A page of the queue in id (arrival) order, after `after`: entries
    /// `keep` says yes to, at most `limit` of them, looking at no more than
    /// `max_scan` entries (so a filter that matches little still answers
    /// in bounded time; `next` then says where to go on). An entry without
    /// its addresses (written by an older version) gets them from its
    /// spool file's header before `keep` sees it. Memory is bounded by
    /// the page, never the queue.
    pub fn list(
        &self,
        after: Option<QueueId>,
        limit: usize,
        max_scan: usize,
        mut keep: impl FnMut(QueueId, &IndexEntry) -> bool,
    ) -> Result<ListPage, SpoolError> {
        let index = self.index()?;
        let mut page = ListPage::default();
        let mut cursor = after;
        let mut scanned = 0;
        while scanned < max_scan && page.items.len() < limit {
            let batch = index.page(cursor, 256.min(max_scan - scanned).max(1))?;
            if batch.is_empty() {
                return Ok(page);
            }
            for (id, entry) in batch {
                scanned += 1;
                cursor = Some(id);
                let Some(mut entry) = entry else { continue };
                if !entry.has_addresses() {
                    match self.envelope(id) {
                        Ok(envelope) => entry.fill_addresses(&envelope),
                        Err(_) => continue,
                    }
                }
                if keep(id, &entry) {
                    page.items.push((id, entry));
                    if page.items.len() >= limit {
                        break;
                    }
                }
            }
        }
        page.next = cursor;
        Ok(page)
    }

    /// The envelope of a queued message, from its spool file's header
    /// (the content is not read).
    pub fn envelope(&self, id: QueueId) -> Result<Envelope, SpoolError> {
        drop(self.open_state()?);
        let path = self.inner.layout.msg_path(id);
        file::read_header_only(&path)
            .and_then(|(header, _)| file::still_there(&path).map(|()| header.envelope))
            .map_err(|e| missing_as_not_found(e, id))
    }

    /// Appends records to a message's history (kept in the index, at most
    /// [`MAX_HISTORY`] per message; removed with the message). Not
    /// flushed, as [`update`](Self::update).
    pub fn append_history(&self, id: QueueId, records: &[HistoryRecord]) -> Result<(), SpoolError> {
        self.index()?.append_history(id, records)
    }

    /// A message's history, oldest first. Informational: a rescan after
    /// a lost index cannot rebuild it.
    pub fn history(&self, id: QueueId) -> Result<Vec<HistoryRecord>, SpoolError> {
        self.index()?.history(id)
    }

    /// Saves a small named value beside the queue (operator state that
    /// must survive a restart: paused destinations, back-offs), durably.
    pub fn save_state(&self, name: &str, value: &[u8]) -> Result<(), SpoolError> {
        self.index()?.save_state(name, value)
    }

    /// A value saved with [`save_state`](Self::save_state). Lost (None)
    /// if the index is lost: it is not in the spool files.
    pub fn load_state(&self, name: &str) -> Result<Option<Vec<u8>>, SpoolError> {
        self.index()?.load_state(name)
    }

    /// Messages due at or before `now` (unix seconds), earliest first, at
    /// most `limit`. None while the index is failed: an attempt could not
    /// record what it did, and would be made again and again.
    pub fn due(&self, now: u64, limit: usize) -> Result<Vec<(QueueId, IndexEntry)>, SpoolError> {
        self.due_unless(now, limit, &|_| false)
    }

    /// As [`due`](Self::due), leaving out the messages `skip` names
    /// before their entries are read, and not counting them against
    /// `limit`: the disk runner's walk passes over the messages attempts
    /// have claimed (a ram backlog of thousands) at the cost of a lookup
    /// in its own set each, not an index read.
    pub fn due_unless(
        &self,
        now: u64,
        limit: usize,
        skip: &dyn Fn(QueueId) -> bool,
    ) -> Result<Vec<(QueueId, IndexEntry)>, SpoolError> {
        match self.index()?.due(now, limit, skip) {
            Err(SpoolError::IndexFailed { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// When the earliest queued message is due (none while the index is
    /// failed, as [`due`](Self::due)).
    pub fn first_due(&self) -> Result<Option<u64>, SpoolError> {
        match self.index()?.first_due() {
            Err(SpoolError::IndexFailed { .. }) => Ok(None),
            other => other,
        }
    }

    /// Messages and the oldest arrival of each queue: ram, bounce, disk,
    /// held, in that order. Cheap (counters and one short tree lookup per
    /// queue), so status may poll it. While a rescan runs the figures
    /// cover what it has visited so far.
    pub fn queue_stats(&self) -> Vec<QueueStats> {
        let counts = self.inner.figures.counts();
        let index = self.index().ok();
        QUEUES
            .iter()
            .map(|&queue| QueueStats {
                queue,
                messages: counts[queue.slot()],
                oldest_arrival: index
                    .as_ref()
                    .and_then(|index| index.oldest(queue).ok().flatten()),
            })
            .collect()
    }

    /// When the index last reached the disk and how many changes it has
    /// had since.
    pub fn schedule_saved(&self) -> ScheduleSaved {
        ScheduleSaved {
            last_flush_unix_ms: self.inner.figures.last_flush_ms(),
            changes_since_flush: self.inner.figures.changes_since_flush(),
        }
    }

    /// Flushes the index to disk now (blocking), as the flusher does every
    /// half second; [`schedule_saved`](Self::schedule_saved) then shows
    /// it. Writes no clean marker: only [`close`](Self::close) does.
    pub fn flush(&self) -> Result<(), SpoolError> {
        self.index()?.flush()
    }

    fn rescan_figures(&self) -> Option<Arc<rescan::Progress>> {
        self.inner.rescan.lock().clone()
    }

    /// Whether the index is in service, and how often it failed and was
    /// reopened. Cheap: status may poll it.
    pub fn index_health(&self) -> IndexHealth {
        match self.open_state() {
            Ok(open) => open.index.health(),
            Err(_) => IndexHealth::default(),
        }
    }

    /// Notified when a failed index is back in service
    /// ([`recover_index`](Self::recover_index)): what could not be saved
    /// while it was failed can be saved again. Wakes every task waiting at
    /// that moment and leaves one permit for the next.
    pub fn index_recovered(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.recovered)
    }

    /// Reopens a failed index (see [`index_health`](Self::index_health)):
    /// opens its directory again, replays the changes the failed database
    /// held in memory, puts it back in service and rescans the spool
    /// files in the background to settle what the failure left half-done.
    /// Blocking. Returns Ok(false) when the index is not failed, and an
    /// error (the index staying failed, ready for another try) when it
    /// cannot be reopened yet, typically because space is still short.
    /// The daemon calls it whenever its free-space check finds space.
    pub fn recover_index(&self) -> Result<bool, SpoolError> {
        self.reopen_index(true)
    }

    fn reopen_index(&self, rescan: bool) -> Result<bool, SpoolError> {
        let _one_at_a_time = self.inner.recovering.lock();
        let index = self.index()?;
        if !index.is_failed() {
            return Ok(false);
        }
        let layout = &self.inner.layout;
        // The rescan of the failed index, if one ran, ended on its errors.
        let stale = self
            .lock_state()
            .as_mut()
            .and_then(|open| open.rescan.take());
        drop(stale);
        let listing = if rescan {
            Some(rescan::list(layout)?)
        } else {
            None
        };
        let reopened = index.reopen(layout, self.inner.index_cache)?;
        let floor = [
            reopened.trees.last_id()?,
            Some(self.inner.ids.last()),
            listing.as_ref().and_then(|l| l.max_id),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(QueueId::new(0));
        let (replayed, damaged) = (reopened.replayed, reopened.damaged);

        let mut state = self.lock_state();
        let Some(open) = state.as_mut() else {
            return Err(SpoolError::Closed);
        };
        if let Some(listing) = listing {
            index.begin_rescan(floor);
            index.install(reopened.trees)?;
            let started = Rescan::start(
                layout.clone(),
                index.clone(),
                listing.ids,
                floor,
                self.inner.rescan_rate,
                Arc::clone(&self.inner.rescan_notify),
            )
            .inspect_err(|_| {
                // No rescan to count the queue (no thread could be
                // started): count every change again, from zero.
                index.finish_counting();
            })?;
            let earlier = self
                .inner
                .rescan
                .lock()
                .replace(Arc::clone(started.progress()));
            // What the earlier rescan set aside stays counted.
            if let Some(earlier) = earlier {
                self.inner
                    .corrupt
                    .fetch_add(earlier.snapshot().corrupt, Ordering::Relaxed);
            }
            open.rescan = Some(started);
        } else {
            index.install(reopened.trees)?;
        }
        drop(state);
        self.inner.recovered.notify_waiters();
        self.inner.recovered.notify_one();
        tracing::info!(
            replayed = ?replayed,
            damaged,
            rescan,
            "queue index reopened: accepting and delivering mail again"
        );
        if replayed.is_none() {
            tracing::warn!("some index changes made just before the failure were not kept; the rescan restores what the spool files hold");
        }
        Ok(true)
    }

    /// How far the background rescan has got; `None` when this open
    /// needed none (a clean stop with its own index).
    pub fn rescan_progress(&self) -> Option<RescanProgress> {
        self.rescan_figures().map(|p| p.snapshot())
    }

    /// Blocks until the background rescan has ended (finished, failed or
    /// cancelled by [`close`](Self::close)); returns at once when there is
    /// none. For tests and tools: never call it from an async task.
    pub fn wait_rescan(&self) {
        if let Some(progress) = self.rescan_figures() {
            progress.wait();
        }
    }

    /// Notified after each batch of the background rescan and at its end:
    /// new entries may be due. It wakes every task waiting on it at that
    /// moment and leaves one permit for the next wait, so the disk runner
    /// never misses a wake-up. Never notified when there is no rescan.
    pub fn rescan_notify(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.rescan_notify)
    }

    /// Reads a spool file back: the envelope and the message content.
    /// [`SpoolError::NotFound`] when there is no such message;
    /// [`SpoolError::Corrupt`] when the file is not a valid spool file.
    pub fn read(&self, id: QueueId) -> Result<(Envelope, Vec<u8>), SpoolError> {
        drop(self.open_state()?);
        let path = self.inner.layout.msg_path(id);
        file::read_file(&path)
            .and_then(|read| file::still_there(&path).map(|()| read))
            .map_err(|e| missing_as_not_found(e, id))
    }

    /// Closes the spool: stops the background rescan if it still runs,
    /// waits for stores in progress, flushes the index, writes the clean
    /// marker (write, fsync the file, fsync the directory) and releases
    /// the lock. Blocking; its cost does not grow with the queue (what
    /// changed since the flusher's last round is flushed, nothing is
    /// walked). Afterwards every clone refuses to store with
    /// [`SpoolError::Closed`]. Closing again does nothing.
    ///
    /// A rescan cut short (or one that could not read every file) means
    /// no clean marker: the index is flushed as far as it got and the next
    /// open rescans. A failed index ([`index_health`](Self::index_health))
    /// is reopened if it can be, and then flushed without a marker (the
    /// next open rescans). If the index cannot be saved, no clean marker
    /// is written and the error is returned ([`SpoolError::IndexFailed`]
    /// or the flush's), after everything was let go of: the spool is
    /// closed either way, and the next open rebuilds the index from the
    /// spool files.
    pub fn close(&self) -> Result<(), SpoolError> {
        let open = match self.lock_state().take() {
            Some(open) => open,
            None => return Ok(()),
        };
        let Open {
            rescan,
            mut committer,
            mut flusher,
            index,
            lock,
        } = open;
        let rescan_done = match rescan {
            Some(mut rescan) => rescan.stop(),
            None => true,
        };
        committer.stop();
        flusher.stop();
        self.inner.free.clear();
        self.inner.free.lent().release_all();
        // A failed index gets one more chance (space may be back), with
        // no rescan: the next open does that.
        let mut reopened = false;
        if index.is_failed() {
            let _one_at_a_time = self.inner.recovering.lock();
            match index
                .reopen(&self.inner.layout, self.inner.index_cache)
                .and_then(|r| index.install(r.trees))
            {
                Ok(()) => reopened = true,
                Err(e) => tracing::warn!(error = %e, "the queue index still cannot be reopened"),
            }
        }
        let clean = rescan_done && !reopened;
        let token = clean::new_token();
        let saved = if clean {
            index.set_token(token).and_then(|()| index.flush())
        } else {
            index.flush()
        };
        // Let go of sled before writing the marker and releasing the
        // lock: the marker promises an index that is complete on disk.
        index.shut();
        drop(index);
        if let Err(e) = saved {
            drop(lock);
            tracing::error!(dir = %self.inner.layout.root.display(), error = %e, "spool closed without saving the queue index; the next open rebuilds it from the spool files");
            return Err(e);
        }
        if !clean {
            drop(lock);
            tracing::info!(dir = %self.inner.layout.root.display(), "spool closed before a rescan ended; the next open rescans");
            return Ok(());
        }
        // So that the next open reads a snapshot, not this run's log.
        if let Err(e) = trees::write_snapshot(&self.inner.layout) {
            tracing::warn!(error = %e, "queue index snapshot not written; the next open reads the index's log instead");
        }
        let marker = CleanMarker {
            token,
            counts: self.inner.figures.counts(),
            last_id: self.inner.ids.last(),
        };
        clean::write(&self.inner.layout, marker)?;
        drop(lock);
        tracing::info!(dir = %self.inner.layout.root.display(), messages = marker.messages(), "spool closed cleanly");
        Ok(())
    }

    /// The queue directory.
    pub fn dir(&self) -> &Path {
        &self.inner.layout.root
    }

    /// Batches committed since open (one directory fsync each); with
    /// concurrent stores it is below the number of messages stored, which
    /// is the point of group commit.
    pub fn commit_batches(&self) -> u64 {
        self.inner.counters.batches.load(Ordering::Relaxed)
    }

    fn lock_state(&self) -> MutexGuard<'_, Option<Open>> {
        // parking_lot's locks do not poison: a panic while holding this
        // one cannot leave `Open` half-changed anyway (it is only taken
        // whole or read).
        self.inner.state.lock()
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

/// A spool file that could not be opened because it is not there is
/// [`SpoolError::NotFound`]: no such message.
fn missing_as_not_found(e: SpoolError, id: QueueId) -> SpoolError {
    match e {
        SpoolError::Io {
            op: "open", source, ..
        } if source.kind() == std::io::ErrorKind::NotFound => SpoolError::NotFound { id },
        other => other,
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
