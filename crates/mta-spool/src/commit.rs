//! Group commit: concurrent stores share their directory fsyncs.
//!
//! The expensive part of accepting a message is the directory fsync that
//! makes its rename into `msg/` durable. Concurrent SMTP sessions would
//! each pay for one; instead the thread that wrote and fdatasynced a
//! message renames it into `msg/<bucket>/` itself and then joins that
//! bucket's next directory fsync (`BucketSync`, leader and followers).
//! The first thread to find no fsync of the bucket under way leads: it
//! runs the fsync for every rename that joined before it started, while
//! the renames that come in meanwhile gather for the next one, led by one
//! of their own threads as soon as this one ends. A message is answered
//! by its own thread once an fsync that started after its rename has
//! ended and the message is in the index: no thread of the spool's own
//! stands between the session and its answer.
//!
//! The rename into `msg/<bucket>/` is the commit point: before it, a crash
//! leaves a file in `tmp/` that open removes (the client was never told
//! "250"); after it (and the directory fsync), the message is queued.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use mta_envelope::QueueId;
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::entry::IndexEntry;
use crate::error::{copy_io_error, SpoolError};
use crate::index::Index;
use crate::layout::{fsync_dir, Layout, BUCKETS};

/// Counters shared by the spool handles and the committing threads. (The
/// message counts are the index's own, kept under its per-id locks.)
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Directory fsyncs run by commits so far (each one commits a batch).
    pub batches: AtomicU64,
}

/// One message to commit: its data is already durable in `tmp`.
#[derive(Debug)]
pub(crate) struct Request {
    /// The queue id.
    pub id: QueueId,
    /// The fdatasynced temporary file.
    pub tmp: PathBuf,
    /// What to record in the index once committed.
    pub entry: IndexEntry,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<(), SpoolError>>,
}

/// Knobs of the group commit (and of the index flusher).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tuning {
    /// Pause of a batch's leader before it closes the batch and fsyncs.
    /// Tests use it to make batching certain; zero in production.
    pub commit_delay: Option<Duration>,
    /// How often the index is flushed; `None` for the default
    /// (`flush::FLUSH_EVERY`).
    pub flush_every: Option<Duration>,
}

/// Commits messages for an open spool: hands out [`Commit`]s while open,
/// and on stop waits for those handed out to finish.
#[derive(Debug)]
pub(crate) struct Committer {
    shared: Arc<Shared>,
}

/// What every commit needs, shared by the threads that commit.
struct Shared {
    layout: Layout,
    index: Index,
    counters: Arc<Counters>,
    max_batch: usize,
    commit_delay: Option<Duration>,
    buckets: Vec<BucketSync>,
    in_flight: Arc<InFlight>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl Committer {
    /// A committer for the spool in `layout` whose index is `index`.
    pub fn new(
        layout: Layout,
        index: Index,
        counters: Arc<Counters>,
        max_batch: usize,
        tuning: &Tuning,
    ) -> Committer {
        Committer {
            shared: Arc::new(Shared {
                layout,
                index,
                counters,
                max_batch: max_batch.max(1),
                commit_delay: tuning.commit_delay,
                buckets: BUCKETS.iter().map(|_| BucketSync::default()).collect(),
                in_flight: Arc::default(),
            }),
        }
    }

    /// The right to commit one message; `None` once stopped.
    pub fn enter(&self) -> Option<Commit> {
        self.shared.in_flight.enter().then(|| Commit {
            shared: Some(Arc::clone(&self.shared)),
            in_flight: Arc::clone(&self.shared.in_flight),
        })
    }

    /// Hands out no more [`Commit`]s and waits until every one handed out
    /// has committed (or failed) or been dropped.
    pub fn stop(&mut self) {
        self.shared.in_flight.stop_and_wait();
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One message's way into the queue, taken while the spool was open. The
/// spool does not close (and an unclosed spool does not let go of its
/// index) while one is alive.
#[derive(Debug)]
pub(crate) struct Commit {
    /// `None` only while dropping.
    shared: Option<Arc<Shared>>,
    in_flight: Arc<InFlight>,
}

impl Drop for Commit {
    fn drop(&mut self) {
        // Let go of the index before counting out: once the count is
        // zero the spool may drop its own and release the lock.
        self.shared = None;
        self.in_flight.leave();
    }
}

impl Commit {
    /// Commits `request` and answers it: rename into `msg/`, the bucket's
    /// shared directory fsync, the index entry. Blocking.
    pub fn run(self, request: Request) {
        let result = self.commit(&request);
        // Counted out before the answer: a caller that closes or drops
        // the spool once answered finds no commit under way.
        drop(self);
        if request.reply.send(result).is_err() {
            tracing::debug!(id = %request.id, "store() caller left after the commit point; message stays queued");
        }
    }

    fn commit(&self, request: &Request) -> Result<(), SpoolError> {
        let shared = self.shared.as_ref().expect("set until dropped");
        if request.reply.is_closed() {
            // The caller gave up (its future was dropped) before the commit
            // point: it cannot tell the client "250", so do not queue.
            remove_quietly(&request.tmp);
            return Err(SpoolError::Closed);
        }
        let dest = shared.layout.msg_path(request.id);
        // Never over a queued message that has the same id.
        if let Err(e) = rename_no_replace(&request.tmp, &dest) {
            remove_quietly(&request.tmp);
            return Err(if e.kind() == io::ErrorKind::AlreadyExists {
                SpoolError::IdInUse { id: request.id }
            } else {
                SpoolError::io("rename into msg/", &dest, e)
            });
        }
        // Without a directory fsync that began after the rename, the
        // rename may not survive a crash.
        let dir = shared.layout.bucket_dir(request.id);
        let synced = shared.buckets[Layout::bucket_number(request.id)].sync_after_rename(
            || sync_dir(&dir),
            shared.max_batch,
            shared.commit_delay,
            &shared.counters,
        );
        if let Err(e) = synced {
            // The rename may or may not be on disk; the caller will hear
            // "not queued", so take the file back (best effort).
            remove_quietly(&dest);
            return Err(SpoolError::io("fsync directory", &dir, e));
        }
        // Not flushed here: the index is rebuilt by a rescan after a
        // crash, so flushing it would only slow every commit down.
        if let Err(e) = shared.index.insert(request.id, &request.entry) {
            // Report failure consistently: an error means "not queued", so
            // do not leave the file to be found later.
            remove_quietly(&dest);
            return Err(e);
        }
        Ok(())
    }
}

/// The directory fsyncs of one bucket, shared by the renames that wait
/// for them. Renames join the open batch; the first thread to find no
/// fsync under way leads it, the others sleep until it ends. A batch
/// holds at most `max_batch` renames; a rename that finds it full waits
/// for the next.
#[derive(Default)]
struct BucketSync {
    state: Mutex<SyncState>,
    /// Woken when a batch ends, by the parity of its number: the threads
    /// of the batch after it sleep on the other one and stay asleep.
    ended: [Condvar; 2],
    /// Woken when the open batch closes and a new one opens.
    opened: Condvar,
}

struct SyncState {
    /// The number of the open batch, which the next rename joins.
    open: u64,
    /// Renames in the open batch.
    members: usize,
    /// The last batch whose fsync has ended.
    done: u64,
    /// A leader is gathering or fsyncing the open batch or the one
    /// before it.
    leading: bool,
    /// Recent batches whose fsync failed, with the error.
    failed: VecDeque<(u64, io::Error)>,
}

impl Default for SyncState {
    fn default() -> Self {
        SyncState {
            // Batch 0 is the one that "ended" before any began.
            open: 1,
            members: 0,
            done: 0,
            leading: false,
            failed: VecDeque::new(),
        }
    }
}

/// Failed batches remembered for the threads still to wake up and ask.
const FAILURES_KEPT: usize = 64;

impl BucketSync {
    /// Waits until a `sync` (an fsync of the bucket's directory) that
    /// began after the caller's rename has ended, running it if no other
    /// thread is, and returns its outcome.
    fn sync_after_rename(
        &self,
        sync: impl FnOnce() -> io::Result<()>,
        max_batch: usize,
        commit_delay: Option<Duration>,
        counters: &Counters,
    ) -> io::Result<()> {
        let mut state = self.state.lock();
        while state.members >= max_batch {
            self.opened.wait(&mut state);
        }
        let batch = state.open;
        state.members += 1;
        loop {
            if state.done >= batch {
                return state.outcome(batch);
            }
            if !state.leading {
                break;
            }
            self.ended[(batch % 2) as usize].wait(&mut state);
        }
        // Lead: the batch stays open (others join it) until the fsync
        // starts.
        state.leading = true;
        if let Some(delay) = commit_delay {
            drop(state);
            thread::sleep(delay);
            state = self.state.lock();
        }
        state.open += 1;
        state.members = 0;
        self.opened.notify_all();
        drop(state);

        let result = sync();
        counters.batches.fetch_add(1, Ordering::Relaxed);

        let mut state = self.state.lock();
        state.done = batch;
        state.leading = false;
        if let Err(e) = &result {
            state.failed.push_back((batch, copy_io_error(e)));
            if state.failed.len() > FAILURES_KEPT {
                state.failed.pop_front();
            }
        }
        self.ended[(batch % 2) as usize].notify_all();
        // One thread of the next batch (if any is waiting) leads it.
        self.ended[((batch + 1) % 2) as usize].notify_one();
        result
    }
}

impl SyncState {
    /// The outcome of the ended batch `batch`, as its leader saw it.
    fn outcome(&self, batch: u64) -> io::Result<()> {
        match self.failed.iter().find(|(b, _)| *b == batch) {
            Some((_, e)) => Err(copy_io_error(e)),
            // A failure pushed out of the list by newer ones is still a
            // failure; only batches older than every one kept can be that.
            None if self.failed.len() == FAILURES_KEPT
                && self.failed.front().is_some_and(|(b, _)| *b > batch) =>
            {
                Err(io::Error::other("directory fsync failed"))
            }
            None => Ok(()),
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fsync_dir(dir).map_err(|e| match e {
        SpoolError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    })
}

/// Counts the commits under way, and stops handing out new ones.
#[derive(Debug, Default)]
struct InFlight {
    state: Mutex<(usize, bool)>,
    idle: Condvar,
}

impl InFlight {
    /// Counts one more commit; false once stopped.
    fn enter(&self) -> bool {
        let mut state = self.state.lock();
        if state.1 {
            return false;
        }
        state.0 += 1;
        true
    }

    fn leave(&self) {
        let mut state = self.state.lock();
        state.0 -= 1;
        if state.0 == 0 {
            self.idle.notify_all();
        }
    }

    fn stop_and_wait(&self) {
        let mut state = self.state.lock();
        state.1 = true;
        while state.0 > 0 {
            self.idle.wait(&mut state);
        }
    }
}

/// Renames `from` to `to` unless `to` exists (`AlreadyExists` then): one
/// `renameat2(RENAME_NOREPLACE)` where the file system has it. Elsewhere
/// a check, then the rename: ids are unique within a run and above every
/// earlier run's, and only the spool creates files in `msg/`, while it
/// holds the directory lock, so nothing can come in between.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use nix::errno::Errno;
        use nix::fcntl::{renameat2, RenameFlags};
        match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            // Not on this file system (or kernel): the portable way.
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    match fs::symlink_metadata(to) {
        Ok(_) => return Err(io::ErrorKind::AlreadyExists.into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::rename(from, to)
}

/// Best-effort removal on an error path, where the original error matters
/// more than a failure to clean up.
fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove file after a failed store");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A rename made while the bucket's fsync runs is not answered by
    /// that fsync but by the next, which its own thread leads.
    #[test]
    fn a_rename_during_an_fsync_waits_for_the_next() {
        let bucket = Arc::new(BucketSync::default());
        let counters = Arc::new(Counters::default());
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let first = {
            let (bucket, counters) = (Arc::clone(&bucket), Arc::clone(&counters));
            thread::spawn(move || {
                bucket.sync_after_rename(
                    || {
                        started_tx.send(()).unwrap();
                        release_rx.recv().unwrap();
                        Ok(())
                    },
                    8,
                    None,
                    &counters,
                )
            })
        };
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("the first rename ran no fsync");
        // The first fsync is under way: this rename comes after it began.
        let (ran_tx, ran) = mpsc::channel();
        let second = {
            let (bucket, counters) = (Arc::clone(&bucket), Arc::clone(&counters));
            thread::spawn(move || {
                bucket.sync_after_rename(
                    || {
                        ran_tx.send(()).unwrap();
                        Ok(())
                    },
                    8,
                    None,
                    &counters,
                )
            })
        };
        // The second thread cannot be answered while the first fsync
        // runs, and cannot start its own before it ends.
        assert!(ran.recv_timeout(Duration::from_millis(100)).is_err());
        assert!(!second.is_finished());
        release.send(()).unwrap();
        first.join().unwrap().unwrap();
        second.join().unwrap().unwrap();
        ran.try_recv()
            .expect("the second rename ran no fsync of its own");
        assert_eq!(counters.batches.load(Ordering::Relaxed), 2);
    }

    /// Every rename of a batch whose fsync failed hears of it; the next
    /// batch does not.
    #[test]
    fn a_failed_fsync_fails_its_whole_batch_and_only_it() {
        let bucket = Arc::new(BucketSync::default());
        let counters = Arc::new(Counters::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (bucket, counters) = (Arc::clone(&bucket), Arc::clone(&counters));
                thread::spawn(move || {
                    bucket.sync_after_rename(
                        || Err(io::Error::from_raw_os_error(nix::libc::EIO)),
                        8,
                        // The leader waits for the others to join.
                        Some(Duration::from_millis(100)),
                        &counters,
                    )
                })
            })
            .collect();
        for t in threads {
            let e = t.join().unwrap().unwrap_err();
            assert_eq!(e.raw_os_error(), Some(nix::libc::EIO));
        }
        let batches = counters.batches.load(Ordering::Relaxed);
        assert!(batches < 4, "{batches} fsyncs for 4 renames");
        bucket
            .sync_after_rename(|| Ok(()), 8, None, &counters)
            .unwrap();
    }

    #[test]
    fn rename_no_replace_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();
        let e = rename_no_replace(&a, &b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&a).unwrap(), b"a");
        assert_eq!(fs::read(&b).unwrap(), b"b");
        rename_no_replace(&a, &c).unwrap();
        assert!(!a.exists());
        assert_eq!(fs::read(&c).unwrap(), b"a");
    }
}
