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
//!
//! Modes are explicit, whatever the umask: the queue holds other people's
//! mail. Directories are 0700 and files 0600, or 0750 and 0640 when the
//! queue directory itself grants its group read and search (mtad sets it
//! so with a configured `group`, see `permissions.rs`). The directories
//! are set to that mode at every open, so a queue an earlier version left
//! 0755 is tightened.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mta_envelope::QueueId;
use nix::fcntl::{Flock, FlockArg};

use crate::error::SpoolError;

/// The sixteen bucket names, one per last hex digit of a queue id.
pub(crate) const BUCKETS: [&str; 16] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f",
];

/// The modes of what the spool creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Modes {
    /// Directories.
    pub dir: u32,
    /// Spool files, the clean marker, the index's files.
    pub file: u32,
}

impl Modes {
    /// Only the owner.
    pub const PRIVATE: Modes = Modes {
        dir: 0o700,
        file: 0o600,
    };
    /// The owner, and the group for reading.
    pub const GROUP_READABLE: Modes = Modes {
        dir: 0o750,
        file: 0o640,
    };

    /// The modes a queue directory asks for: group-readable when the
    /// directory grants its group read and search, private otherwise.
    pub fn of(root: &Path) -> Result<Modes, SpoolError> {
        let mode = fs::metadata(root)
            .map_err(|e| SpoolError::io("stat", root, e))?
            .permissions()
            .mode();
        Ok(if mode & 0o050 == 0o050 {
            Modes::GROUP_READABLE
        } else {
            Modes::PRIVATE
        })
    }
}

/// Gives `path` exactly `mode` (permission bits only) unless it has it.
/// A symbolic link is followed (a queue directory may be one).
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), SpoolError> {
    let meta = fs::metadata(path).map_err(|e| SpoolError::io("stat", path, e))?;
    if meta.permissions().mode() & 0o7777 == mode {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| SpoolError::io("chmod", path, e))
}

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
    /// The modes of what the spool creates ([`Modes::of`] the root, at
    /// open).
    pub modes: Modes,
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
            modes: Modes::PRIVATE,
        }
    }

    /// The bucket of a queue id: its last hex digit. Sixteen directories
    /// keep each one at a size directory lookups handle well, and the
    /// low digit of a microsecond clock spreads evenly over them.
    pub fn bucket(id: QueueId) -> &'static str {
        BUCKETS[Self::bucket_number(id)]
    }

    /// The position of `id`'s bucket in [`BUCKETS`].
    pub fn bucket_number(id: QueueId) -> usize {
        (id.value() & 0xf) as usize
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

    /// Creates every directory that is missing and gives each one
    /// [`modes`](Self::modes)' mode (the root first, so nothing inside is
    /// reachable while the rest is set). Each directory created is made
    /// durable by an fsync of its parent, or a crash could leave a spool
    /// file whose directory entry never reached the disk.
    pub fn create(&self) -> Result<(), SpoolError> {
        let buckets = BUCKETS.iter().map(|b| self.msg.join(b));
        let dirs = [&self.root, &self.tmp, &self.msg, &self.corrupt]
            .into_iter()
            .cloned()
            .chain(buckets);
        for dir in dirs {
            create_dir_durable(&dir)?;
            set_mode(&dir, self.modes.dir)?;
        }
        Ok(())
    }

    /// Gives everything under `index/` the spool's modes: the index
    /// library creates its files with the umask's modes, and they hold
    /// every sender and recipient address.
    pub fn secure_index(&self) -> Result<(), SpoolError> {
        let mut todo = vec![self.index.clone()];
        while let Some(dir) = todo.pop() {
            set_mode(&dir, self.modes.dir)?;
            let entries = fs::read_dir(&dir).map_err(|e| SpoolError::io("list", &dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| SpoolError::io("list", &dir, e))?;
                let path = entry.path();
                match entry.file_type() {
                    Ok(t) if t.is_dir() => todo.push(path),
                    Ok(t) if t.is_file() => set_mode(&path, self.modes.file)?,
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Creates `dir` (0700; missing parents with the umask's modes) if needed,
/// then fsyncs its parent so the new entry survives a crash. An existing
/// non-directory is an error.
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
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        fs::create_dir_all(parent).map_err(|e| SpoolError::io("create directory", parent, e))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(SpoolError::io("create directory", dir, e)),
    }
    if let Some(parent) = parent {
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
