//! Where things live in the queue directory, and the small file system
//! helpers (directory fsync, the lock) that every other module relies on.
//!
//! Keeping every path in one place means the README's description of the
//! layout can be checked against one file.
//!
//! ```text
//! <dir>/tmp/<id>          being written; removed at open
//! <dir>/msg/<b>/<id>      committed; <b> = last hex digit of the id
//! <dir>/index/            sled database (rebuildable)
//! <dir>/clean             clean-stop marker
//! <dir>/corrupt/<id>      unparsable spool files set aside (rescan, or run time)
//! ```

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use mta_envelope::QueueId;
use nix::fcntl::{Flock, FlockArg};

use crate::error::SpoolError;

/// The sixteen bucket names, one per last hex digit of a queue id.
pub(crate) const BUCKETS: [&str; 16] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f",
];

/// The paths of one queue directory.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// The queue directory itself.
    pub root: PathBuf,
    /// `tmp/`: files being written.
    pub tmp: PathBuf,
    /// `msg/`: committed spool files, in buckets.
    pub msg: PathBuf,
    /// `index/`: the sled database.
    pub index: PathBuf,
    /// `clean`: the clean-stop marker.
    pub clean: PathBuf,
    /// `corrupt/`: spool files a rescan could not read.
    pub corrupt: PathBuf,
}

impl Layout {
    /// The layout under `root`; touches nothing.
    pub fn new(root: &Path) -> Self {
        Layout {
            root: root.to_owned(),
            tmp: root.join("tmp"),
            msg: root.join("msg"),
            index: root.join("index"),
            clean: root.join("clean"),
            corrupt: root.join("corrupt"),
        }
    }

    /// The bucket of a queue id: its last hex digit. Sixteen directories
    /// keep each one at a size directory lookups handle well, and the
    /// low digit of a microsecond clock spreads evenly over them.
    pub fn bucket(id: QueueId) -> &'static str {
        BUCKETS[(id.value() & 0xf) as usize]
    }

    /// `msg/<bucket>/`.
    pub fn bucket_dir(&self, id: QueueId) -> PathBuf {
        self.msg.join(Self::bucket(id))
    }

    /// `msg/<bucket>/<id>`: where a committed message lives.
    pub fn msg_path(&self, id: QueueId) -> PathBuf {
        self.bucket_dir(id).join(id.to_string())
    }

    /// `tmp/<id>`: where a message is written before the commit.
    pub fn tmp_path(&self, id: QueueId) -> PathBuf {
        self.tmp.join(id.to_string())
    }

    /// Creates every directory that is missing. Each directory created is
    /// made durable by an fsync of its parent, or a crash could leave a
    /// spool file whose directory entry never reached the disk.
    pub fn create(&self) -> Result<(), SpoolError> {
        create_dir_durable(&self.root)?;
        create_dir_durable(&self.tmp)?;
        create_dir_durable(&self.msg)?;
        for bucket in BUCKETS {
            create_dir_durable(&self.msg.join(bucket))?;
        }
        Ok(())
    }
}

/// Creates `dir` (and missing parents) if needed, then fsyncs its parent so
/// the new entry survives a crash. An existing non-directory is an error.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<(), SpoolError> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(SpoolError::io(
                "use as directory",
                dir,
                io::Error::from_raw_os_error(nix::libc::ENOTDIR),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(SpoolError::io("stat", dir, e)),
    }
    fs::create_dir_all(dir).map_err(|e| SpoolError::io("create directory", dir, e))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// fsyncs a directory: creating, renaming or removing an entry is only
/// durable once the directory itself has been flushed.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), SpoolError> {
    let f = File::open(dir).map_err(|e| SpoolError::io("open directory", dir, e))?;
    f.sync_all()
        .map_err(|e| SpoolError::io("fsync directory", dir, e))
}

/// The exclusive lock on a queue directory, held while a spool is open.
///
/// It is a `flock` on the directory itself: no lock file to go stale, it
/// dies with the process, and because `flock` locks belong to an open file
/// description a second open in the same process conflicts too.
#[derive(Debug)]
pub(crate) struct DirLock {
    _lock: Flock<File>,
}

impl DirLock {
    /// Takes the lock without waiting; [`SpoolError::Locked`] when it is held.
    pub fn acquire(dir: &Path) -> Result<Self, SpoolError> {
        let f = File::open(dir).map_err(|e| SpoolError::io("open directory", dir, e))?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(DirLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(SpoolError::Locked {
                dir: dir.to_owned(),
            }),
            Err((_, errno)) => Err(SpoolError::io("lock", dir, errno.into())),
        }
    }
}
