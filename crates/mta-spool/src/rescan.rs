//! Full rescan: rebuild the index from the spool files.
//!
//! The spool files are the truth; the index only lets the runners avoid
//! reading them. After a crash (no clean marker) the index may lack
//! messages committed since sled last flushed, or hold entries of files
//! already gone, and an index sled cannot open is replaced by an empty one.
//! Either way, reading `msg/` puts it right.
//!
//! To stay fast with 100,000 queued messages, only the first two lines of
//! each file are read (the envelope; the content size comes from the file
//! size) and the sixteen buckets are read in parallel.
//!
//! A file that cannot be parsed is moved to `corrupt/` with a warning,
//! never deleted: it may still hold someone's mail, and an operator can
//! look at it. It does not stop the open.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;

use mta_envelope::QueueId;

use crate::error::SpoolError;
use crate::file;
use crate::index::{Index, IndexEntry, QueueName, RecipientState};
use crate::layout::{create_dir_durable, fsync_dir, Layout, BUCKETS};

/// What a rescan found.
#[derive(Debug, Default)]
pub(crate) struct Rescan {
    /// Spool files read (queued plus corrupt).
    pub files: usize,
    /// Messages now indexed.
    pub messages: usize,
    /// Files moved to `corrupt/`.
    pub corrupt: usize,
    /// The largest queue id seen, queued or corrupt.
    pub max_id: Option<QueueId>,
}

/// One readable spool file.
struct Found {
    id: QueueId,
    arrival: u64,
    recipients: usize,
    size: u64,
}

/// What reading one bucket gave.
#[derive(Default)]
struct BucketScan {
    found: Vec<Found>,
    corrupt: Vec<(PathBuf, String)>,
    /// Messages filed under the wrong bucket: (id, path).
    misplaced: Vec<(QueueId, PathBuf)>,
    max_id: Option<QueueId>,
}

/// Rescans `msg/` and makes the index match it. `now` (unix seconds)
/// becomes the next attempt of every message: after a restart everything
/// is due, and the runners reschedule from there.
pub(crate) fn run(layout: &Layout, index: &Index, now: u64) -> Result<Rescan, SpoolError> {
    let scans: Vec<Result<BucketScan, SpoolError>> = thread::scope(|scope| {
        let handles: Vec<_> = BUCKETS
            .iter()
            .map(|bucket| scope.spawn(move || scan_bucket(layout, bucket)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bucket scan does not panic"))
            .collect()
    });

    let mut report = Rescan::default();
    let mut found = Vec::new();
    for scan in scans {
        let scan = scan?;
        report.max_id = report.max_id.max(scan.max_id);
        report.files += scan.found.len() + scan.corrupt.len();
        found.extend(scan.found);
        for (path, reason) in scan.corrupt {
            move_to_corrupt(layout, &path, &reason)?;
            report.corrupt += 1;
        }
        for (id, path) in scan.misplaced {
            let dest = layout.msg_path(id);
            if dest.symlink_metadata().is_ok() {
                move_to_corrupt(layout, &path, "in the wrong bucket, and its id is taken")?;
                report.files += 1;
                report.corrupt += 1;
                continue;
            }
            tracing::warn!(from = %path.display(), to = %dest.display(), "spool file in the wrong bucket; moving it");
            rename_durable(&path, &dest)?;
            report.files += 1;
            match file::read_header_only(&dest) {
                Ok((header, size)) => found.push(Found {
                    id,
                    arrival: header.envelope.arrival,
                    recipients: header.envelope.recipients.len(),
                    size,
                }),
                Err(SpoolError::Corrupt { reason, .. }) => {
                    move_to_corrupt(layout, &dest, &reason)?;
                    report.corrupt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
    found.sort_by_key(|f| f.id);

    let mut entries = Vec::with_capacity(found.len());
    for f in &found {
        // Keep per-recipient progress the old index still knows, so a
        // recipient already delivered is not delivered twice. Everything
        // else starts over: the RAM queue did not survive the restart.
        let entry = match index.get(f.id)? {
            Some(old) if old.recipients.len() == f.recipients => IndexEntry {
                queue: QueueName::Disk,
                arrival: f.arrival,
                next_attempt: now,
                size: f.size,
                ..old
            },
            _ => IndexEntry {
                queue: QueueName::Disk,
                arrival: f.arrival,
                next_attempt: now,
                size: f.size,
                recipients: vec![RecipientState::Pending; f.recipients],
                attempts: 0,
                last_errors: Default::default(),
                delay_notified: false,
            },
        };
        entries.push((f.id, entry));
    }
    index.replace_all(&entries)?;
    report.messages = entries.len();
    tracing::info!(
        files = report.files,
        messages = report.messages,
        corrupt = report.corrupt,
        "queue index rebuilt from the spool files"
    );
    Ok(report)
}

/// Reads the headers of every spool file in one bucket.
fn scan_bucket(layout: &Layout, bucket: &str) -> Result<BucketScan, SpoolError> {
    let dir = layout.msg.join(bucket);
    let mut scan = BucketScan::default();
    let entries = fs::read_dir(&dir).map_err(|e| SpoolError::io("read directory", &dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SpoolError::io("read directory", &dir, e))?;
        let path = entry.path();
        let id = match entry.file_name().to_str().map(str::parse::<QueueId>) {
            Some(Ok(id)) => id,
            _ => {
                tracing::warn!(path = %path.display(), "not a spool file name; left alone");
                continue;
            }
        };
        let file_type = entry
            .file_type()
            .map_err(|e| SpoolError::io("stat", &path, e))?;
        if !file_type.is_file() {
            tracing::warn!(path = %path.display(), "not a regular file; left alone");
            continue;
        }
        scan.max_id = scan.max_id.max(Some(id));
        if Layout::bucket(id) != bucket {
            scan.misplaced.push((id, path));
            continue;
        }
        match file::read_header_only(&path) {
            Ok((header, size)) => scan.found.push(Found {
                id,
                arrival: header.envelope.arrival,
                recipients: header.envelope.recipients.len(),
                size,
            }),
            Err(SpoolError::Corrupt { reason, .. }) => scan.corrupt.push((path, reason)),
            Err(e) => return Err(e),
        }
    }
    Ok(scan)
}

/// Moves an unreadable spool file to `corrupt/`, keeping its name (with a
/// counter when that is taken), durably.
fn move_to_corrupt(layout: &Layout, path: &Path, reason: &str) -> Result<(), SpoolError> {
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
        if let Some(Ok(id)) = entry.file_name().to_str().map(str::parse::<QueueId>) {
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
