//! Rescan: bring the index in line with the spool files, in the
//! background.
//!
//! The spool files are the truth; the index only lets the runners avoid
//! reading them. After a crash (no clean marker) the index may lack
//! messages committed since sled last flushed, or hold entries of files
//! already gone, and an index sled cannot open is replaced by an empty one.
//! Either way, reading `msg/` puts it right.
//!
//! So that a large queue does not hold up the start, the work is split:
//!
//! - At open, synchronously and cheaply, [`list`] reads the sixteen bucket
//!   directories (names only, no file is opened) to learn which ids have a
//!   file, and the largest one: the id generator starts above it, so
//!   every message stored from then on has an id above the listing's
//!   *floor* and is never the rescan's business. A file in the wrong
//!   bucket is moved to its own (or to `corrupt/` if its id is taken).
//! - Then [`Rescan::start`] runs the rest on a thread while the spool
//!   already accepts and delivers. It goes through the listed ids in
//!   order, in batches: reads the first two lines of each file (the
//!   envelope; the content size comes from the file size; the batch is
//!   read in parallel, and while one batch is visited the next one is
//!   read), then visits every id of the batch's range, listed or indexed,
//!   under that id's index lock (`Index::visit_*`): a file without an
//!   entry gets one, added only if still absent; an entry keeps its
//!   per-recipient progress (so a recipient already delivered is not
//!   delivered again) and leaves the RAM queue, which did not survive; an
//!   entry without a file (up to the floor) is removed. After each batch
//!   the disk runner is woken, so what is due is delivered before the
//!   rescan ends.
//! - Last, the sweep (`Index::sweep_stale_keys`) walks `schedule` and
//!   the membership trees once each: keys the crash left without a
//!   matching entry are removed, and keys an entry lacks are put back.
//!   An entry the visit kept as it was is neither written nor has its
//!   keys read during the visit: `schedule` is keyed by time, so one
//!   id's key is a random page (with the small page cache, a read from
//!   the index's log per file, which was most of a rescan's time). The
//!   visits note what each entry should have (`Visited`, 16 bytes a
//!   message, freed at the end), and the sweep compares every key with
//!   that in one walk; what it cannot vouch for is checked against the
//!   entry under the id's lock, as a runner would. So an entry whose
//!   `schedule` key a crash lost is due again once the sweep has run,
//!   not when its batch is visited.
//! - A rate limit (`SpoolConfig::rescan_rate`, files per second) paces the
//!   batches so a rescan does not starve delivery of disk bandwidth.
//! - The message counts are rebuilt as the rescan visits: an id up to the
//!   floor counts once visited, a new one at once (see `index.rs`).
//! - `close()` cancels the thread and waits for it. An unfinished rescan
//!   means no clean marker, so the next open rescans again; a crash
//!   mid-rescan likewise (the marker was removed at open). Every step is
//!   safe to redo.
//!
//! A file that cannot be parsed is moved to `corrupt/` with a warning,
//! never deleted: it may still hold someone's mail, and an operator can
//! look at it. A file that cannot be read at all (an I/O error) is left
//! where it is, with whatever entry it has, and the rescan counts as
//! unfinished.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mta_envelope::QueueId;
use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

use crate::error::SpoolError;
use crate::file;
use crate::index::{FileFacts, Index, Visit, Visited};
use crate::layout::{create_dir_durable, fsync_dir, Layout, BUCKETS};

/// Files per batch when no rate limit applies.
const MAX_BATCH: usize = 1024;

/// Batches smaller than this are read by the rescan thread alone.
const PARALLEL_FROM: usize = 64;

/// What the listing at open found.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Ids of the spool files, sorted, each in its own bucket.
    pub ids: Vec<QueueId>,
    /// The largest id seen, including files set aside.
    pub max_id: Option<QueueId>,
    /// Misplaced files whose id was taken, moved to `corrupt/`.
    pub corrupt: usize,
}

/// The names in one bucket.
#[derive(Default)]
struct BucketList {
    ids: Vec<QueueId>,
    /// Files filed under the wrong bucket: (id, path).
    misplaced: Vec<(QueueId, PathBuf)>,
    max_id: Option<QueueId>,
}

/// Lists `msg/` (directory reads only, the sixteen buckets in parallel)
/// and moves misplaced files to their bucket.
pub(crate) fn list(layout: &Layout) -> Result<Listing, SpoolError> {
    let lists: Vec<Result<BucketList, SpoolError>> = thread::scope(|scope| {
        let handles: Vec<_> = BUCKETS
            .iter()
            .map(|bucket| scope.spawn(move || list_bucket(layout, bucket)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bucket listing does not panic"))
            .collect()
    });
    let mut listing = Listing::default();
    let mut misplaced = Vec::new();
    for list in lists {
        let list = list?;
        listing.max_id = listing.max_id.max(list.max_id);
        listing.ids.extend(list.ids);
        misplaced.extend(list.misplaced);
    }
    for (id, path) in misplaced {
        let dest = layout.msg_path(id);
        if dest.symlink_metadata().is_ok() {
            move_to_corrupt(layout, &path, "in the wrong bucket, and its id is taken")?;
            listing.corrupt += 1;
            continue;
        }
        tracing::warn!(from = %path.display(), to = %dest.display(), "spool file in the wrong bucket; moving it");
        rename_durable(&path, &dest)?;
        listing.ids.push(id);
    }
    listing.ids.sort_unstable();
    listing.ids.dedup();
    Ok(listing)
}

/// Reads the names in one bucket.
fn list_bucket(layout: &Layout, bucket: &str) -> Result<BucketList, SpoolError> {
    let dir = layout.msg.join(bucket);
    let mut list = BucketList::default();
    let entries = fs::read_dir(&dir).map_err(|e| SpoolError::io("read directory", &dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SpoolError::io("read directory", &dir, e))?;
        let id = match entry.file_name().to_str().map(str::parse::<QueueId>) {
            Some(Ok(id)) => id,
            _ => {
                tracing::warn!(path = %entry.path().display(), "not a spool file name; left alone");
                continue;
            }
        };
        // From the directory entry itself on most file systems: no stat.
        let file_type = entry
            .file_type()
            .map_err(|e| SpoolError::io("stat", &entry.path(), e))?;
        if !file_type.is_file() {
            tracing::warn!(path = %entry.path().display(), "not a regular file; left alone");
            continue;
        }
        list.max_id = list.max_id.max(Some(id));
        if Layout::bucket(id) != bucket {
            list.misplaced.push((id, entry.path()));
        } else {
            list.ids.push(id);
        }
    }
    Ok(list)
}

/// How far the background rescan has got ([`Spool::rescan_progress`](crate::Spool::rescan_progress)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RescanProgress {
    /// Still running.
    pub running: bool,
    /// Spool files listed at open.
    pub files_total: u64,
    /// Spool files read so far.
    pub files_done: u64,
    /// Index entries added for files the index did not know.
    pub messages_added: u64,
    /// Index entries removed because their file was gone.
    pub stale_removed: u64,
    /// Unparsable spool files moved to `corrupt/`.
    pub corrupt: u64,
    /// Spool files that could not be read (an I/O error): left where they
    /// are, and the next open rescans again.
    pub failed: u64,
    /// Time since the rescan started, or its whole run once it ended.
    pub elapsed: Duration,
}

/// The rescan's state, shared by its thread and the spool handles.
#[derive(Debug)]
pub(crate) struct Progress {
    files_total: u64,
    files_done: AtomicU64,
    added: AtomicU64,
    stale: AtomicU64,
    corrupt: AtomicU64,
    failed: AtomicU64,
    /// Ran to the end with every file read.
    complete: AtomicBool,
    started: Instant,
    /// `Some(elapsed)` once the thread has ended.
    ended: Mutex<Option<Duration>>,
    ended_signal: Condvar,
    cancel: Mutex<bool>,
    cancel_signal: Condvar,
}

impl Progress {
    fn new(files_total: u64) -> Progress {
        Progress {
            files_total,
            files_done: AtomicU64::new(0),
            added: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            complete: AtomicBool::new(false),
            started: Instant::now(),
            ended: Mutex::new(None),
            ended_signal: Condvar::new(),
            cancel: Mutex::new(false),
            cancel_signal: Condvar::new(),
        }
    }

    /// A copy of the figures.
    pub fn snapshot(&self) -> RescanProgress {
        let ended = *self.ended.lock();
        RescanProgress {
            running: ended.is_none(),
            files_total: self.files_total,
            files_done: self.files_done.load(Ordering::SeqCst),
            messages_added: self.added.load(Ordering::SeqCst),
            stale_removed: self.stale.load(Ordering::SeqCst),
            corrupt: self.corrupt.load(Ordering::SeqCst),
            failed: self.failed.load(Ordering::SeqCst),
            elapsed: ended.unwrap_or_else(|| self.started.elapsed()),
        }
    }

    /// Blocks until the thread has ended.
    pub fn wait(&self) {
        let mut ended = self.ended.lock();
        self.ended_signal
            .wait_while(&mut ended, |ended| ended.is_none());
    }

    fn cancelled(&self) -> bool {
        *self.cancel.lock()
    }

    fn cancel(&self) {
        *self.cancel.lock() = true;
        self.cancel_signal.notify_all();
    }

    /// Sleeps for `pause` unless cancelled first; returns true when
    /// cancelled.
    fn sleep(&self, pause: Duration) -> bool {
        let mut cancel = self.cancel.lock();
        self.cancel_signal
            .wait_while_for(&mut cancel, |cancelled| !*cancelled, pause);
        *cancel
    }

    fn end(&self) {
        let mut ended = self.ended.lock();
        *ended = Some(self.started.elapsed());
        self.ended_signal.notify_all();
    }
}

/// Marks the rescan ended however its thread leaves (a panic included)
/// and wakes the disk runner one last time.
struct EndGuard<'a> {
    progress: &'a Progress,
    notify: &'a Notify,
}

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        self.progress.end();
        wake(self.notify);
    }
}

/// Wakes the waiting disk runner, or the next one to wait.
fn wake(notify: &Notify) {
    notify.notify_waiters();
    notify.notify_one();
}

/// The running (or finished) rescan thread.
pub(crate) struct Rescan {
    progress: Arc<Progress>,
    thread: Option<thread::JoinHandle<()>>,
}

/// What the rescan thread works with.
struct Job {
    layout: Layout,
    index: Index,
    ids: Vec<QueueId>,
    floor: QueueId,
    rate: u64,
    progress: Arc<Progress>,
    notify: Arc<Notify>,
}

impl Rescan {
    /// Starts the rescan of the listed `ids` (every id up to `floor` is
    /// its business; the index must be in rescan counting mode, see
    /// `Index::begin_rescan`). `rate` is files per second, 0 for no limit;
    /// `notify` is woken after each batch and at the end.
    pub fn start(
        layout: Layout,
        index: Index,
        ids: Vec<QueueId>,
        floor: QueueId,
        rate: u64,
        notify: Arc<Notify>,
    ) -> Result<Rescan, SpoolError> {
        let progress = Arc::new(Progress::new(ids.len() as u64));
        let job = Job {
            layout,
            index,
            ids,
            floor,
            rate,
            progress: Arc::clone(&progress),
            notify,
        };
        let thread = thread::Builder::new()
            .name("spool-rescan".into())
            .spawn(move || {
                job.run();
                // The listing, the visits' notes and the batches' envelopes
                // are freed by now.
                crate::memory::release_free_memory();
            })
            .map_err(|e| SpoolError::io("start rescan thread", &PathBuf::new(), e))?;
        Ok(Rescan {
            progress,
            thread: Some(thread),
        })
    }

    /// The shared figures.
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Cancels the rescan if it still runs and waits for its thread.
    /// Returns true when it had finished its work: every file indexed.
    pub fn stop(&mut self) -> bool {
        self.progress.cancel();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("spool rescan thread panicked");
            }
        }
        self.progress.complete.load(Ordering::SeqCst)
    }
}

impl Drop for Rescan {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What reading one listed file gave.
enum Read {
    Found(FileFacts),
    Corrupt(String),
    /// No longer there (delivered and removed since the listing).
    Gone,
    Failed(SpoolError),
    /// Not read: the rescan was cancelled.
    Skipped,
}

impl Job {
    fn run(self) {
        let _end = EndGuard {
            progress: &self.progress,
            notify: &self.notify,
        };
        tracing::info!(
            files = self.ids.len(),
            rate = self.rate,
            "rescanning the spool files in the background"
        );
        match self.rescan() {
            Ok(complete) => {
                self.progress.complete.store(complete, Ordering::SeqCst);
                let p = self.progress.snapshot();
                if complete {
                    tracing::info!(
                        files = p.files_done,
                        added = p.messages_added,
                        stale_removed = p.stale_removed,
                        corrupt = p.corrupt,
                        elapsed_ms = p.elapsed.as_millis() as u64,
                        "queue index brought in line with the spool files"
                    );
                } else if p.failed > 0 {
                    tracing::error!(
                        failed = p.failed,
                        "rescan could not read some spool files; they stay where they are and the next start rescans"
                    );
                } else {
                    tracing::info!(
                        files_done = p.files_done,
                        files = p.files_total,
                        "rescan stopped before the end; the next start rescans"
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "rescan failed; the next start rescans");
            }
        }
    }

    /// Returns Ok(true) when every file was read and every id visited.
    fn rescan(&self) -> Result<bool, SpoolError> {
        let progress = &*self.progress;
        let batch = match self.rate {
            0 => MAX_BATCH,
            // About twenty batches a second.
            rate => usize::try_from(rate / 20)
                .unwrap_or(MAX_BATCH)
                .clamp(1, MAX_BATCH),
        };
        let threads = thread::available_parallelism()
            .map_or(4, |n| n.get())
            .clamp(1, 8);
        let mut after: Option<QueueId> = None;
        let mut visited = Visited::with_capacity(self.ids.len());
        let chunks: Vec<&[QueueId]> = self.ids.chunks(batch).collect();
        let finished = thread::scope(|scope| -> Result<bool, SpoolError> {
            // The next batch's files are read while this one is visited.
            let mut ahead: Option<thread::ScopedJoinHandle<'_, Vec<Read>>> = None;
            for (n, chunk) in chunks.iter().enumerate() {
                if progress.cancelled() {
                    return Ok(false);
                }
                let reads = match ahead.take() {
                    Some(reading) => reading.join().expect("header reading does not panic"),
                    None => self.read_headers(chunk, threads),
                };
                if let Some(&next) = chunks.get(n + 1) {
                    ahead = Some(scope.spawn(move || self.read_headers(next, threads)));
                }
                if progress.cancelled() {
                    return Ok(false);
                }
                let upto = *chunk.last().expect("chunks are not empty");
                let indexed = self.index.ids_in(after, upto, usize::MAX)?;
                if !self.visit(chunk, reads, &indexed, &mut visited)? {
                    return Ok(false);
                }
                after = Some(upto);
                wake(&self.notify);
                if self.pace() {
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        if !finished {
            return Ok(false);
        }
        // Entries above the last file, up to the floor: files gone.
        loop {
            if progress.cancelled() {
                return Ok(false);
            }
            let stale = self.index.ids_in(after, self.floor, MAX_BATCH)?;
            let Some(&last) = stale.last() else {
                break;
            };
            if !self.visit(&[], Vec::new(), &stale, &mut visited)? {
                return Ok(false);
            }
            after = Some(last);
        }
        self.index.finish_counting();
        wake(&self.notify);
        let swept = self
            .index
            .sweep_stale_keys(self.floor, &mut visited, &|| progress.cancelled())?;
        drop(visited);
        if swept.removed > 0 {
            tracing::info!(keys = swept.removed, "stale queue index keys removed");
        }
        if swept.restored > 0 {
            tracing::info!(keys = swept.restored, "missing queue index keys put back");
        }
        if progress.cancelled() {
            return Ok(false);
        }
        Ok(progress.failed.load(Ordering::SeqCst) == 0)
    }

    /// Reads the headers of a batch, in parallel when it is large.
    fn read_headers(&self, chunk: &[QueueId], threads: usize) -> Vec<Read> {
        if chunk.len() < PARALLEL_FROM || threads <= 1 {
            return chunk.iter().map(|&id| self.read_one(id)).collect();
        }
        let part = chunk.len().div_ceil(threads);
        thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .chunks(part)
                .map(|ids| {
                    scope.spawn(move || ids.iter().map(|&id| self.read_one(id)).collect::<Vec<_>>())
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("header reading does not panic"))
                .collect()
        })
    }

    fn read_one(&self, id: QueueId) -> Read {
        if self.progress.cancelled() {
            return Read::Skipped;
        }
        let path = self.layout.msg_path(id);
        let read = match file::read_header_only(&path) {
            Ok((header, size)) => {
                let (sender, rcpts) = crate::entry::addresses(&header.envelope);
                Read::Found(FileFacts {
                    arrival: header.envelope.arrival,
                    recipients: header.envelope.recipients.len(),
                    sender,
                    rcpts,
                    auth: header.envelope.origin.auth,
                    size,
                })
            }
            Err(SpoolError::Corrupt { reason, .. }) => Read::Corrupt(reason),
            Err(SpoolError::Io {
                op: "open", source, ..
            }) if source.kind() == io::ErrorKind::NotFound => Read::Gone,
            Err(e) => Read::Failed(e),
        };
        self.progress.files_done.fetch_add(1, Ordering::SeqCst);
        read
    }

    /// Visits, in id order, the listed ids of a batch (with what reading
    /// them gave) and the indexed ids of its range. Returns false when
    /// cancelled.
    fn visit(
        &self,
        listed: &[QueueId],
        reads: Vec<Read>,
        indexed: &[QueueId],
        visited: &mut Visited,
    ) -> Result<bool, SpoolError> {
        let progress = &*self.progress;
        let now = crate::ids::unix_seconds();
        let exists = |id: QueueId| move || self.layout.msg_path(id).symlink_metadata().is_ok();
        let mut listed = listed.iter().copied().zip(reads).peekable();
        let mut indexed = indexed.iter().copied().peekable();
        loop {
            if progress.cancelled() {
                return Ok(false);
            }
            let next_listed = listed.peek().map(|(id, _)| *id);
            let next_indexed = indexed.peek().copied();
            let (id, read) = match (next_listed, next_indexed) {
                (None, None) => return Ok(true),
                (Some(l), Some(i)) if i < l => (indexed.next().expect("peeked"), None),
                (Some(l), i) => {
                    if i == Some(l) {
                        indexed.next();
                    }
                    let (_, read) = listed.next().expect("peeked");
                    (l, Some(read))
                }
                (None, Some(_)) => (indexed.next().expect("peeked"), None),
            };
            match read {
                Some(Read::Found(facts)) => {
                    match self
                        .index
                        .visit_listed(id, facts, now, exists(id), visited)?
                    {
                        Visit::Added => {
                            progress.added.fetch_add(1, Ordering::SeqCst);
                        }
                        Visit::Kept | Visit::Changed | Visit::Vanished => {}
                    }
                }
                Some(Read::Corrupt(reason)) => {
                    let path = self.layout.msg_path(id);
                    match move_to_corrupt(&self.layout, &path, &reason) {
                        Ok(()) => {
                            progress.corrupt.fetch_add(1, Ordering::SeqCst);
                            if self.index.visit_unlisted(id, exists(id), visited)? {
                                progress.stale.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(e) => {
                            tracing::error!(path = %path.display(), error = %e, "cannot set a corrupt spool file aside");
                            progress.failed.fetch_add(1, Ordering::SeqCst);
                            self.index.visit_unread(id, visited)?;
                        }
                    }
                }
                Some(Read::Failed(e)) => {
                    tracing::error!(queue_id = %id, error = %e, "cannot read a spool file; left as it is");
                    progress.failed.fetch_add(1, Ordering::SeqCst);
                    self.index.visit_unread(id, visited)?;
                }
                Some(Read::Skipped) => return Ok(false),
                Some(Read::Gone) | None => {
                    if self.index.visit_unlisted(id, exists(id), visited)? {
                        progress.stale.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
    }

    /// Waits as long as the rate limit asks after the files read so far.
    /// Returns true when cancelled meanwhile.
    fn pace(&self) -> bool {
        if self.rate == 0 {
            return self.progress.cancelled();
        }
        let done = self.progress.files_done.load(Ordering::SeqCst);
        let target = Duration::from_secs_f64(done as f64 / self.rate as f64);
        match target.checked_sub(self.progress.started.elapsed()) {
            Some(pause) if !pause.is_zero() => self.progress.sleep(pause),
            _ => self.progress.cancelled(),
        }
    }
}

/// Moves an unreadable spool file to `corrupt/`, keeping its name (with a
/// counter when that is taken), durably.
pub(crate) fn move_to_corrupt(
    layout: &Layout,
    path: &Path,
    reason: &str,
) -> Result<(), SpoolError> {
    create_dir_durable(&layout.corrupt)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut dest = layout.corrupt.join(&name);
    let mut n = 1;
    while dest.symlink_metadata().is_ok() {
        dest = layout.corrupt.join(format!("{name}.{n}"));
        n += 1;
    }
    tracing::warn!(
        path = %path.display(),
        moved_to = %dest.display(),
        reason,
        "corrupt spool file set aside"
    );
    rename_durable(path, &dest)
}

/// Renames and fsyncs both directories: the new entry first, so a crash in
/// between leaves the file under at least one name.
fn rename_durable(from: &Path, to: &Path) -> Result<(), SpoolError> {
    fs::rename(from, to).map_err(|e| SpoolError::io("rename", from, e))?;
    for dir in [to.parent(), from.parent()].into_iter().flatten() {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Removes everything left in `tmp/`: those messages never reached the
/// commit point, so no client was told they were accepted. Returns how
/// many entries were removed and the largest queue id among them (so new
/// ids stay above it).
pub(crate) fn clear_tmp(layout: &Layout) -> Result<(usize, Option<QueueId>), SpoolError> {
    let dir = &layout.tmp;
    let mut removed = 0;
    let mut max_id = None;
    let entries = fs::read_dir(dir).map_err(|e| SpoolError::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SpoolError::io("read directory", dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_str().is_some_and(crate::reuse::is_free_name) {
            // A finished message's file kept for reuse, or the second
            // name of a queued one (reuse.rs): no one's mail.
            match fs::remove_file(&path) {
                Ok(()) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(SpoolError::io("remove", &path, e)),
            }
        }
        if let Some(Ok(id)) = name.to_str().map(str::parse::<QueueId>) {
            max_id = max_id.max(Some(id));
        }
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let result = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match result {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("remove", &path, e)),
        }
    }
    if removed > 0 {
        tracing::info!(removed, "removed unacknowledged files from tmp/");
        // Not needed for correctness (anything that reappears after a
        // crash is removed again), but keeps the count honest.
        fsync_dir(dir)?;
    }
    Ok((removed, max_id))
}
