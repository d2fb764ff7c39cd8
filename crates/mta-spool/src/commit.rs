//! Group commit: one thread makes batches of messages durable together.
//!
//! The expensive part of accepting a message is the directory fsync that
//! makes its rename into `msg/` durable. Concurrent SMTP sessions would
//! each pay for one; instead every `store()` hands its already-fdatasynced
//! temporary file to this thread, which takes the first request waiting,
//! then whatever else has queued up meanwhile (up to `max_batch`), renames
//! them all, fsyncs each bucket directory touched once for the whole batch,
//! records them in the index and only then replies to each. While it
//! fsyncs, the next batch gathers in the channel.
//!
//! The rename into `msg/<bucket>/` is the commit point: before it, a crash
//! leaves a file in `tmp/` that open removes (the client was never told
//! "250"); after it (and the directory fsync), the message is queued.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use mta_envelope::QueueId;
use tokio::sync::oneshot;

use crate::entry::IndexEntry;
use crate::error::{copy_io_error, SpoolError};
use crate::index::Index;
use crate::layout::{fsync_dir, Layout, BUCKETS};

/// Counters shared by the spool handles and the committer thread. (The
/// message counts are the index's own, kept under its per-id locks.)
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Batches committed so far.
    pub batches: AtomicU64,
}

/// One message waiting for the commit: its data is already durable in
/// `tmp`.
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

/// Knobs of the committer (and of the index flusher).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tuning {
    /// Pause after the first request of a batch before draining the
    /// channel. Tests use it to make batching certain; zero in production.
    pub commit_delay: Option<Duration>,
    /// How often the index is flushed; `None` for the default
    /// (`flush::FLUSH_EVERY`).
    pub flush_every: Option<Duration>,
}

/// The committer thread and the sending end of its channel.
#[derive(Debug)]
pub(crate) struct Committer {
    sender: Option<mpsc::Sender<Request>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Committer {
    /// Starts the thread.
    pub fn start(
        layout: Layout,
        index: Index,
        counters: Arc<Counters>,
        max_batch: usize,
        tuning: Tuning,
    ) -> Result<Committer, SpoolError> {
        let (sender, receiver) = mpsc::channel();
        let max_batch = max_batch.max(1);
        let thread = thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || run(receiver, &layout, &index, &counters, max_batch, &tuning))
            .map_err(|e| SpoolError::io("start committer thread", &PathBuf::new(), e))?;
        Ok(Committer {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// A sender for one request; `None` once stopped.
    pub fn sender(&self) -> Option<mpsc::Sender<Request>> {
        self.sender.clone()
    }

    /// Stops taking requests and waits for the thread to finish. The thread
    /// ends once every sender is gone and the channel is empty, so stores
    /// that already hold a sender are committed (or fail) before this
    /// returns.
    pub fn stop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("spool committer thread panicked");
            }
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    receiver: mpsc::Receiver<Request>,
    layout: &Layout,
    index: &Index,
    counters: &Counters,
    max_batch: usize,
    tuning: &Tuning,
) {
    let syncers = DirSyncers::start(layout);
    // Block for the first request; then take only what is already waiting,
    // so a lone message is never held back waiting for company.
    while let Ok(first) = receiver.recv() {
        if let Some(delay) = tuning.commit_delay {
            thread::sleep(delay);
        }
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        counters.batches.fetch_add(1, Ordering::Relaxed);
        commit_batch(layout, index, &syncers, batch);
    }
}

/// One long-lived thread per bucket directory that fsyncs it on request.
///
/// A batch's buckets are flushed at the same time, so on a disk with slow
/// flushes a batch spread over four buckets waits for about one flush, not
/// four; and because the threads live as long as the committer, no thread
/// is started per flush (starting them per batch cost more CPU than it
/// saved on a fast disk: see docs/benchmarks.md).
struct DirSyncers {
    senders: BTreeMap<&'static str, mpsc::Sender<SyncReply>>,
}

/// Where a bucket's thread sends the result of one fsync.
type SyncReply = mpsc::Sender<(&'static str, io::Result<()>)>;

impl DirSyncers {
    fn start(layout: &Layout) -> DirSyncers {
        let mut senders = BTreeMap::new();
        for bucket in BUCKETS {
            let dir = layout.msg.join(bucket);
            let (tx, rx) = mpsc::channel::<SyncReply>();
            let spawned = thread::Builder::new()
                .name(format!("spool-fsync-{bucket}"))
                .spawn(move || {
                    for reply in rx {
                        let _ = reply.send((bucket, sync_dir(&dir)));
                    }
                });
            // Without its thread a bucket is fsynced by the committer itself.
            if spawned.is_ok() {
                senders.insert(bucket, tx);
            }
        }
        DirSyncers { senders }
    }

    /// Fsyncs every directory in `buckets` at once and waits for all.
    fn sync(
        &self,
        layout: &Layout,
        buckets: &[&'static str],
    ) -> BTreeMap<&'static str, io::Result<()>> {
        if let [only] = buckets {
            return BTreeMap::from([(*only, sync_dir(&layout.msg.join(only)))]);
        }
        let (tx, rx) = mpsc::channel();
        let mut results = BTreeMap::new();
        let mut asked = 0;
        for &bucket in buckets {
            match self.senders.get(bucket).map(|s| s.send(tx.clone())) {
                Some(Ok(())) => asked += 1,
                _ => {
                    results.insert(bucket, sync_dir(&layout.msg.join(bucket)));
                }
            }
        }
        drop(tx);
        for (bucket, result) in rx.iter().take(asked) {
            results.insert(bucket, result);
        }
        // A thread that died took its request with it: report the flush as
        // failed rather than pretend it happened.
        for &bucket in buckets {
            results
                .entry(bucket)
                .or_insert_with(|| Err(io::Error::other("directory fsync thread is gone")));
        }
        results
    }
}

fn sync_dir(dir: &std::path::Path) -> io::Result<()> {
    fsync_dir(dir).map_err(|e| match e {
        SpoolError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    })
}

/// Commits one batch and answers every request in it.
fn commit_batch(layout: &Layout, index: &Index, syncers: &DirSyncers, batch: Vec<Request>) {
    let mut renamed = Vec::with_capacity(batch.len());
    for request in batch {
        if request.reply.is_closed() {
            // The caller gave up (its future was dropped) before the commit
            // point: it cannot tell the client "250", so do not queue.
            remove_quietly(&request.tmp);
            continue;
        }
        let dest = layout.msg_path(request.id);
        // Never over a queued message that has the same id.
        match rename_no_replace(&request.tmp, &dest) {
            Ok(()) => renamed.push((request, dest)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                remove_quietly(&request.tmp);
                let _ = request
                    .reply
                    .send(Err(SpoolError::IdInUse { id: request.id }));
            }
            Err(e) => {
                remove_quietly(&request.tmp);
                let _ = request
                    .reply
                    .send(Err(SpoolError::io("rename into msg/", &dest, e)));
            }
        }
    }

    // One fsync per bucket directory for the whole batch: this is what the
    // batch shares. Without it the renames may not survive a crash.
    let mut buckets: Vec<&'static str> =
        renamed.iter().map(|(r, _)| Layout::bucket(r.id)).collect();
    buckets.sort_unstable();
    buckets.dedup();
    let synced = syncers.sync(layout, &buckets);

    for (request, dest) in renamed {
        let bucket = Layout::bucket(request.id);
        let result = match &synced[bucket] {
            Err(e) => {
                // The rename may or may not be on disk; the caller will hear
                // "not queued", so take the file back (best effort).
                remove_quietly(&dest);
                Err(SpoolError::io(
                    "fsync directory",
                    &layout.msg.join(bucket),
                    copy_io_error(e),
                ))
            }
            // Not flushed here: the index is rebuilt by a rescan after a
            // crash, so flushing it would only slow every commit down.
            Ok(()) => match index.insert(request.id, &request.entry) {
                Ok(_) => Ok(()),
                Err(e) => {
                    // Report failure consistently: an error means "not
                    // queued", so do not leave the file to be found later.
                    remove_quietly(&dest);
                    Err(e)
                }
            },
        };
        if request.reply.send(result).is_err() {
            tracing::debug!(id = %request.id, "store() caller left after the commit point; message stays queued");
        }
    }
}

/// Renames `from` to `to` unless `to` exists (`AlreadyExists` then): one
/// `renameat2(RENAME_NOREPLACE)` where the file system has it. Elsewhere
/// a check, then the rename: only the committer creates files in `msg/`,
/// and only while the spool holds the directory lock, so nothing can come
/// in between.
fn rename_no_replace(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
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
fn remove_quietly(path: &std::path::Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove file after a failed store");
        }
    }
}

#[cfg(test)]
mod rename_tests {
    use super::*;

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
