//! Group commit: concurrent stores share their directory fsyncs.
//!
//! The expensive part of accepting a message is the directory fsync that
//! makes its rename into `msg/` durable. Concurrent SMTP sessions would
//! each pay for one; instead the thread that wrote and fdatasynced a
//! message renames it into `msg/<bucket>/` itself and adds it to that
//! bucket's pending list (`BucketSync`). The first thread to find no
//! fsync of the bucket under way leads: it fsyncs the directory for every
//! rename pending when the fsync begins, then records each of those
//! messages in the index and answers its session, then does the same for
//! whatever gathered meanwhile, until nothing is pending. The other
//! threads return as soon as they have added their message: no thread
//! waits on another, and no thread of the spool's own stands between a
//! session and its answer (a lone message is renamed, fsynced and
//! answered by the thread that wrote it).
//!
//! The rename into `msg/<bucket>/` is the commit point: before it, a crash
//! leaves a file in `tmp/` that open removes (the client was never told
//! "250"); after it (and the directory fsync), the message is queued. A
//! message written in a slot (reuse.rs) is committed by a hard link
//! instead, the same step for durability (a new name in `msg/<bucket>/`,
//! made durable by the same directory fsync) that leaves the slot's name
//! in `tmp/`; "rename" below stands for both.

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
use crate::reuse::Lent;

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
    /// Committed by a link rather than a rename: `tmp` is a slot lent to
    /// the message (reuse.rs, `Lent`), whose name stays.
    pub link: bool,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<(), SpoolError>>,
}

/// Knobs of the group commit (and of the index flusher).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tuning {
    /// Pause of the leading thread before it takes each batch. Tests use
    /// it to make batching certain; zero in production.
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
    lent: Arc<Lent>,
    max_batch: usize,
    commit_delay: Option<Duration>,
    buckets: Vec<BucketSync<Renamed>>,
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
        lent: Arc<Lent>,
        max_batch: usize,
        tuning: &Tuning,
    ) -> Committer {
        Committer {
            shared: Arc::new(Shared {
                layout,
                index,
                counters,
                lent,
                max_batch: max_batch.max(1),
                commit_delay: tuning.commit_delay,
                buckets: BUCKETS.iter().map(|_| BucketSync::default()).collect(),
                in_flight: Arc::default(),
            }),
        }
    }

    /// The right to commit one message; `None` once stopped.
    pub fn enter(&self) -> Option<Commit> {
        self.shared
            .in_flight
            .enter()
            .then(|| Commit::counted(&self.shared))
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

/// One message's way into the queue (or a leading thread's right to go
/// on committing others), taken while the spool was open. The spool does
/// not close (and an unclosed spool does not let go of its index) while
/// one is alive.
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

/// A message renamed into `msg/`, waiting for its bucket's fsync.
struct Renamed {
    request: Request,
    dest: PathBuf,
    /// Keeps the spool open until the message is answered.
    _commit: Commit,
}

impl Commit {
    /// A commit already counted in `shared.in_flight`.
    fn counted(shared: &Arc<Shared>) -> Commit {
        Commit {
            shared: Some(Arc::clone(shared)),
            in_flight: Arc::clone(&shared.in_flight),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        self.shared.as_ref().expect("set until dropped")
    }

    /// Commits `request` and answers it: rename into `msg/`, the bucket's
    /// shared directory fsync, the index entry. Blocking; it returns at
    /// once after the rename when another thread is fsyncing the bucket
    /// (that thread answers), and otherwise after answering this message
    /// and those that gathered meanwhile.
    pub fn run(self, request: Request) {
        // Should this thread lead, it stays counted in until it has
        // answered everything it took on, its own message included.
        let lead = self.again();
        let shared = lead.shared();
        if request.reply.is_closed() {
            // The caller gave up (its future was dropped) before the commit
            // point: it cannot tell the client "250", so do not queue.
            remove_quietly(&request.tmp);
            shared.given_up(request.id, request.link);
            return;
        }
        let dest = shared.layout.msg_path(request.id);
        // Never over a queued message that has the same id.
        let placed = if request.link {
            fs::hard_link(&request.tmp, &dest)
        } else {
            rename_no_replace(&request.tmp, &dest)
        };
        if let Err(e) = placed {
            remove_quietly(&request.tmp);
            shared.given_up(request.id, request.link);
            let error = if e.kind() == io::ErrorKind::AlreadyExists {
                SpoolError::IdInUse { id: request.id }
            } else {
                SpoolError::io("rename into msg/", &dest, e)
            };
            drop((lead, self));
            let _ = request.reply.send(Err(error));
            return;
        }
        let bucket = Layout::bucket_number(request.id);
        // `msg/<bucket>/`: the directory the rename changed.
        let dir = dest
            .parent()
            .expect("a message path is in its bucket")
            .to_owned();
        let renamed = Renamed {
            request,
            dest,
            _commit: self,
        };
        // Without a directory fsync that began after the rename, the
        // rename may not survive a crash.
        shared.buckets[bucket].join(
            renamed,
            shared.max_batch,
            shared.commit_delay,
            &shared.counters,
            || sync_dir(&dir),
            |renamed, synced| finish(shared, &dir, renamed, synced),
        );
    }

    /// A second count for the thread that holds this one (so it may go
    /// on after this one is dropped), even after a stop began, which
    /// waits for it anyway.
    fn again(&self) -> Commit {
        self.in_flight.enter_again();
        Commit::counted(self.shared())
    }
}

/// Records a message whose bucket was fsynced in the index and answers
/// its session (or takes it back, when the fsync failed).
fn finish(shared: &Shared, dir: &Path, renamed: Renamed, synced: &io::Result<()>) {
    let Renamed {
        request,
        dest,
        _commit: commit,
    } = renamed;
    let result = match synced {
        Err(e) => {
            // The rename may or may not be on disk; the caller will hear
            // "not queued", so take the file back (best effort).
            remove_quietly(&dest);
            shared.given_up(request.id, request.link);
            Err(SpoolError::io("fsync directory", dir, copy_io_error(e)))
        }
        // Not flushed here: the index is rebuilt by a rescan after a
        // crash, so flushing it would only slow every commit down.
        Ok(()) => match shared.index.insert_new(request.id, request.entry) {
            Ok(()) => Ok(()),
            Err(e) => {
                // Report failure consistently: an error means "not
                // queued", so do not leave the file to be found later.
                remove_quietly(&dest);
                shared.given_up(request.id, request.link);
                Err(e)
            }
        },
    };
    drop(commit);
    if request.reply.send(result).is_err() {
        tracing::debug!(id = %request.id, "store() caller left after the commit point; message stays queued");
    }
}

impl Shared {
    /// `request` will not be queued: a slot lent to it goes (its file
    /// was removed, or is being).
    fn given_up(&self, id: QueueId, link: bool) {
        if link {
            self.lent.forget(id);
        }
    }
}

/// The directory fsyncs of one bucket and the renames waiting for them.
struct BucketSync<T> {
    state: Mutex<BucketState<T>>,
}

struct BucketState<T> {
    /// Renamed, waiting for an fsync that begins after they joined.
    pending: Vec<T>,
    /// A thread is fsyncing the bucket (and will take `pending` next).
    leading: bool,
}

impl<T> Default for BucketSync<T> {
    fn default() -> Self {
        BucketSync {
            state: Mutex::new(BucketState {
                pending: Vec::new(),
                leading: false,
            }),
        }
    }
}

impl<T> BucketSync<T> {
    /// Adds `item`, whose rename is done, to the bucket's next fsync. When
    /// no thread is leading, the caller leads: it runs `sync` for at most
    /// `max_batch` of the items pending as it begins and hands each of
    /// them to `finish` with the outcome, again and again until none is
    /// pending. Otherwise it returns at once: the leader finishes `item`.
    fn join(
        &self,
        item: T,
        max_batch: usize,
        commit_delay: Option<Duration>,
        counters: &Counters,
        sync: impl Fn() -> io::Result<()>,
        finish: impl Fn(T, &io::Result<()>),
    ) {
        {
            let mut state = self.state.lock();
            state.pending.push(item);
            if state.leading {
                return;
            }
            state.leading = true;
        }
        // Should `sync` or `finish` panic, the bucket must not stay led by
        // no one: what is pending is dropped (its callers hear that the
        // spool is gone) and the next rename leads again.
        let _unled = Unled(self);
        loop {
            if let Some(delay) = commit_delay {
                thread::sleep(delay);
            }
            let batch: Vec<T> = {
                let mut state = self.state.lock();
                if state.pending.is_empty() {
                    // Under the same lock as the check: a rename added
                    // after it finds no leader and leads.
                    state.leading = false;
                    return;
                }
                let n = state.pending.len().min(max_batch);
                state.pending.drain(..n).collect()
            };
            let synced = sync();
            counters.batches.fetch_add(1, Ordering::Relaxed);
            for item in batch {
                finish(item, &synced);
            }
        }
    }
}

/// Gives up the lead of a bucket when its leader unwinds.
struct Unled<'a, T>(&'a BucketSync<T>);

impl<T> Drop for Unled<'_, T> {
    fn drop(&mut self) {
        if thread::panicking() {
            let mut state = self.0.state.lock();
            state.leading = false;
            state.pending.clear();
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

    /// Counts one more commit for a thread already counted in.
    fn enter_again(&self) {
        self.state.lock().0 += 1;
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

    /// What `finish` saw: the item, and which fsync (by number) answered
    /// it, or that it failed.
    type Finished = Arc<Mutex<Vec<(u32, Result<u64, io::ErrorKind>)>>>;

    /// A rename made while the bucket's fsync runs is not answered by
    /// that fsync but by the next, which the leading thread runs once the
    /// first has ended; the thread that added it returns at once.
    #[test]
    fn a_rename_during_an_fsync_waits_for_the_next() {
        let bucket = Arc::new(BucketSync::<u32>::default());
        let counters = Arc::new(Counters::default());
        let finished: Finished = Arc::default();
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let first = {
            let (bucket, counters, finished) = (
                Arc::clone(&bucket),
                Arc::clone(&counters),
                Arc::clone(&finished),
            );
            thread::spawn(move || {
                bucket.join(
                    1,
                    8,
                    None,
                    &counters,
                    || {
                        started_tx.send(()).unwrap();
                        release_rx.lock().recv().unwrap();
                        Ok(())
                    },
                    |item, synced| {
                        let n = counters.batches.load(Ordering::Relaxed);
                        finished
                            .lock()
                            .push((item, synced.as_ref().map(|()| n).map_err(|e| e.kind())));
                    },
                )
            })
        };
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("the first rename ran no fsync");
        // The first fsync is under way: this rename comes after it began.
        bucket.join(
            2,
            8,
            None,
            &counters,
            || panic!("a second thread fsynced while the first led"),
            |_, _| panic!("a second thread finished while the first led"),
        );
        assert!(
            finished.lock().is_empty(),
            "answered before its fsync ended"
        );
        release.send(()).unwrap(); // the first fsync ends
        release.send(()).unwrap(); // the second, run by the leader
        first.join().unwrap();
        assert_eq!(*finished.lock(), vec![(1, Ok(1)), (2, Ok(2))]);
    }

    /// A leader that panics does not leave its bucket led by no one.
    #[test]
    fn a_panicking_leader_gives_the_bucket_back() {
        let bucket = BucketSync::<u32>::default();
        let counters = Counters::default();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            bucket.join(
                1,
                8,
                None,
                &counters,
                || Ok(()),
                |_, _| panic!("finish failed"),
            );
        }));
        assert!(panicked.is_err());
        let finished = Mutex::new(Vec::new());
        bucket.join(
            2,
            8,
            None,
            &counters,
            || Ok(()),
            |item, _| finished.lock().push(item),
        );
        assert_eq!(*finished.lock(), vec![2]);
    }

    /// Every rename of a batch whose fsync failed hears of it; the next
    /// batch does not.
    #[test]
    fn a_failed_fsync_fails_its_whole_batch_and_only_it() {
        let bucket = Arc::new(BucketSync::<u32>::default());
        let counters = Arc::new(Counters::default());
        let finished: Finished = Arc::default();
        let fail = Arc::new(AtomicU64::new(1));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (bucket, counters, finished, fail) = (
                    Arc::clone(&bucket),
                    Arc::clone(&counters),
                    Arc::clone(&finished),
                    Arc::clone(&fail),
                );
                thread::spawn(move || {
                    bucket.join(
                        i,
                        8,
                        // The leader waits for the others to join.
                        Some(Duration::from_millis(100)),
                        &counters,
                        || match fail.swap(0, Ordering::Relaxed) {
                            1 => Err(io::Error::from_raw_os_error(nix::libc::EIO)),
                            _ => Ok(()),
                        },
                        |item, synced| {
                            finished
                                .lock()
                                .push((item, synced.as_ref().map(|()| 0).map_err(|e| e.kind())));
                        },
                    )
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let finished = finished.lock().clone();
        assert_eq!(finished.len(), 4);
        let failed = finished.iter().filter(|(_, r)| r.is_err()).count();
        let batches = counters.batches.load(Ordering::Relaxed);
        assert!(batches < 4, "{batches} fsyncs for 4 renames");
        // The first batch failed whole: at least the leader's rename and
        // every one that joined during its pause.
        assert!(failed >= 2, "{finished:?}");
        assert_eq!(batches == 1, failed == 4, "{finished:?}");
        bucket.join(
            9,
            8,
            None,
            &counters,
            || Ok(()),
            |item, synced| {
                assert_eq!(item, 9);
                synced.as_ref().unwrap();
            },
        );
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
