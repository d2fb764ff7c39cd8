//! Spool files of finished messages, kept to hold the next ones.
//!
//! Creating a file and removing it are the costly part of a message's
//! passage through the file system after its fsyncs: the kernel finds a
//! free inode (ext4 searches past the ones freed recently) and allocates
//! blocks, then frees both again when the message is done. So when a
//! message leaves the queue its file is not unlinked: it is renamed to
//! `tmp/free.N` and the next message is written over it (write,
//! fdatasync: the file's first line gives the content's length, so the
//! file need not be cut to size, see `file.rs`), then committed as every
//! message is, by
//! renaming it into `msg/` and fsyncing that directory. Nothing about
//! durability changes: a message is still written, fdatasynced, renamed
//! into `msg/` and its directory fsynced before the client hears 250.
//!
//! - A message goes in the smallest kept file that holds it, else in the
//!   largest (which grows). A file left more than `file::slack` bytes longer
//!   than its new message is cut to size, so a queued message never takes
//!   much more disk than it needs.
//! - Only files of the spool's own mode are kept (a file from a run with
//!   other modes is unlinked): a message written over one needs no chmod,
//!   which would cost its fdatasync a write of the inode.
//! - Only small files are kept ([`MAX_SIZE`]), at most [`MAX_FILES`] of
//!   them and [`MAX_BYTES`] in all, so the files held cost little disk:
//!   the rest are unlinked. And a disk short of space gets them back: when
//!   the free space falls near `min_free_space` (`Spool::has_free_space`)
//!   or a store meets a full disk, every kept file is unlinked and none is
//!   kept until the space is back, so they are never why mail is refused.
//! - A file renamed away from `msg/` can never come back under its old
//!   name (ids are used once), so a reader that still finds a message's
//!   path after reading it knows that what it read was that message, not
//!   the next one written over it (`Spool::read` and `Spool::envelope`
//!   check; see `file::still_there`).
//! - After a crash, a `free.N` file is no one's message: open clears
//!   `tmp/` of them as of every file there, and `close` removes them.
//!   On a file system that does not order metadata writes (ext4 without
//!   a journal), a crash may bring back the old name of a file that was
//!   reused: it then holds the newer message, which is delivered twice,
//!   the same "at least once" a crash gives a message whose removal was
//!   lost; no message is lost.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

/// Most files kept.
pub(crate) const MAX_FILES: usize = 256;

/// Largest file kept, in bytes.
pub(crate) const MAX_SIZE: u64 = 128 * 1024;

/// Most bytes kept in all.
pub(crate) const MAX_BYTES: u64 = 8 << 20;

/// How the names of kept files begin, in `tmp/`.
pub(crate) const PREFIX: &str = "free.";

/// The kept files.
#[derive(Debug)]
pub(crate) struct FreeFiles {
    /// `tmp/`.
    dir: PathBuf,
    /// The spool files' mode: only files of it are kept.
    mode: u32,
    /// The files and their sizes.
    kept: Mutex<Kept>,
    next: AtomicU64,
    /// Off while the disk is short of space.
    keeping: AtomicBool,
}

#[derive(Debug, Default)]
struct Kept {
    files: Vec<(PathBuf, u64)>,
    bytes: u64,
}

impl Kept {
    fn has_room(&self, size: u64) -> bool {
        self.files.len() < MAX_FILES && self.bytes + size <= MAX_BYTES
    }
}

impl FreeFiles {
    /// None kept yet; they will go in `tmp`, and only files of `mode`.
    pub fn new(tmp: &Path, mode: u32) -> FreeFiles {
        FreeFiles {
            dir: tmp.to_owned(),
            mode,
            kept: Mutex::new(Kept::default()),
            next: AtomicU64::new(0),
            keeping: AtomicBool::new(true),
        }
    }

    /// Takes a finished message's spool file out of `msg/`: keeps it when
    /// it is small and there is room, unlinks it otherwise. An error is
    /// the rename's or the unlink's (`NotFound` when it was gone).
    pub fn retire(&self, path: &Path) -> io::Result<()> {
        if !self.keeping.load(Ordering::Relaxed) || !self.kept.lock().has_room(1) {
            return fs::remove_file(path);
        }
        let meta = fs::symlink_metadata(path)?;
        let size = meta.len();
        let same_mode = meta.permissions().mode() & 0o7777 == self.mode;
        if size > MAX_SIZE || !same_mode || !self.kept.lock().has_room(size) {
            return fs::remove_file(path);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let free = self.dir.join(format!("{PREFIX}{n}"));
        fs::rename(path, &free)?;
        let mut kept = self.kept.lock();
        if kept.has_room(size) && self.keeping.load(Ordering::Relaxed) {
            kept.files.push((free, size));
            kept.bytes += size;
            return Ok(());
        }
        drop(kept);
        // Filled meanwhile: it has left msg/ already, which is what counts.
        let _ = fs::remove_file(&free);
        Ok(())
    }

    /// A kept file to write `need` bytes over, if any, and its size: the
    /// smallest that holds them (of equals, the one kept last, whose
    /// blocks are the likeliest to be cached), else the largest.
    pub fn take(&self, need: u64) -> Option<(PathBuf, u64)> {
        let mut kept = self.kept.lock();
        let mut best: Option<(usize, u64)> = None;
        for (i, &(_, size)) in kept.files.iter().enumerate().rev() {
            let better = match best {
                None => true,
                Some((_, b)) if b < need => size > b,
                Some((_, b)) => size >= need && size < b,
            };
            if better {
                best = Some((i, size));
            }
        }
        let (i, _) = best?;
        let (path, size) = kept.files.swap_remove(i);
        kept.bytes -= size;
        Some((path, size))
    }

    /// Files kept now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.kept.lock().files.len()
    }

    /// Bytes the kept files hold.
    pub fn bytes(&self) -> u64 {
        self.kept.lock().bytes
    }

    /// Whether files are kept at all: not while the disk is short of
    /// space. Turning it off unlinks every kept file.
    pub fn keep(&self, on: bool) {
        let was = self.keeping.swap(on, Ordering::Relaxed);
        if was && !on {
            self.clear();
        }
    }

    /// Unlinks every kept file (at close, and when space runs short).
    pub fn clear(&self) {
        let files = std::mem::take(&mut *self.kept.lock()).files;
        for (path, _) in files {
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a spool file kept for reuse");
                }
            }
        }
    }
}

/// True for the name of a kept file.
pub(crate) fn is_free_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODE: u32 = 0o600;

    /// A directory, its `tmp/`, and the kept files of `tmp/`.
    fn kept_in_tmp() -> (tempfile::TempDir, PathBuf, FreeFiles) {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let free = FreeFiles::new(&tmp, MODE);
        (dir, tmp, free)
    }

    fn file(dir: &Path, name: &str, len: usize) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, vec![b'x'; len]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(MODE)).unwrap();
        path
    }

    #[test]
    fn keeps_small_files_and_unlinks_large_ones() {
        let (dir, tmp, free) = kept_in_tmp();

        let small = file(dir.path(), "small", 4096);
        free.retire(&small).unwrap();
        assert!(!small.exists());
        assert_eq!(free.len(), 1);

        let large = file(dir.path(), "large", MAX_SIZE as usize + 1);
        free.retire(&large).unwrap();
        assert!(!large.exists());
        assert_eq!(free.len(), 1, "a large file is not kept");
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 1);

        let (kept, size) = free.take(100).unwrap();
        assert!(is_free_name(kept.file_name().unwrap().to_str().unwrap()));
        assert_eq!(size, 4096);
        assert_eq!(fs::metadata(&kept).unwrap().len(), 4096);
        assert!(free.take(100).is_none());
    }

    /// A message goes in the smallest file that holds it, else in the
    /// largest.
    #[test]
    fn takes_the_smallest_file_that_fits() {
        let (dir, _tmp, free) = kept_in_tmp();
        for (name, len) in [("a", 3000), ("b", 9000), ("c", 5000), ("d", 7000)] {
            free.retire(&file(dir.path(), name, len)).unwrap();
        }
        assert_eq!(free.take(4000).unwrap().1, 5000);
        assert_eq!(free.take(20000).unwrap().1, 9000, "none fits: the largest");
        assert_eq!(free.take(10).unwrap().1, 3000);
        assert_eq!(free.take(7000).unwrap().1, 7000);
        assert!(free.take(10).is_none());
        assert_eq!(free.bytes(), 0);
    }

    /// A file of another mode (a queue run with other modes) is unlinked:
    /// written over, it would need a chmod.
    #[test]
    fn a_file_of_another_mode_is_not_kept() {
        let (dir, tmp, free) = kept_in_tmp();
        let other = file(dir.path(), "other", 100);
        fs::set_permissions(&other, fs::Permissions::from_mode(0o640)).unwrap();
        free.retire(&other).unwrap();
        assert!(!other.exists());
        assert_eq!(free.len(), 0);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[test]
    fn keeps_at_most_max_files_and_clear_removes_them() {
        let (dir, tmp, free) = kept_in_tmp();
        for n in 0..MAX_FILES + 3 {
            let path = file(dir.path(), &format!("m{n}"), 10);
            free.retire(&path).unwrap();
            assert!(!path.exists());
        }
        assert_eq!(free.len(), MAX_FILES);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), MAX_FILES);
        free.clear();
        assert_eq!(free.len(), 0);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[test]
    fn keeps_at_most_max_bytes() {
        let (dir, _tmp, free) = kept_in_tmp();
        let fit = (MAX_BYTES / MAX_SIZE) as usize;
        for n in 0..fit + 2 {
            let path = file(dir.path(), &format!("m{n}"), MAX_SIZE as usize);
            free.retire(&path).unwrap();
        }
        assert_eq!(free.len(), fit);
        assert_eq!(free.bytes(), fit as u64 * MAX_SIZE);
        free.take(1).unwrap();
        assert_eq!(free.bytes(), (fit as u64 - 1) * MAX_SIZE);
    }

    /// Short of space: every kept file unlinked, and none kept until
    /// space is back.
    #[test]
    fn none_kept_while_space_is_short() {
        let (dir, tmp, free) = kept_in_tmp();
        free.retire(&file(dir.path(), "a", 100)).unwrap();
        assert_eq!(free.len(), 1);
        free.keep(false);
        assert_eq!(free.len(), 0);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        let b = file(dir.path(), "b", 100);
        free.retire(&b).unwrap();
        assert!(!b.exists());
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "unlinked, not kept");
        free.keep(true);
        free.retire(&file(dir.path(), "c", 100)).unwrap();
        assert_eq!(free.len(), 1);
    }

    #[test]
    fn a_file_already_gone_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let free = FreeFiles::new(dir.path(), MODE);
        let e = free.retire(&dir.path().join("none")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(free.len(), 0);
    }

    /// A file read and then renamed away (and perhaps written over) no
    /// longer counts as its message.
    #[test]
    fn a_read_file_renamed_away_meanwhile_is_not_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), "0000000000000001", 10);
        crate::file::still_there(&path).unwrap();
        let free = FreeFiles::new(dir.path(), MODE);
        free.retire(&path).unwrap();
        match crate::file::still_there(&path) {
            Err(crate::error::SpoolError::Io {
                op: "open", source, ..
            }) => {
                assert_eq!(source.kind(), io::ErrorKind::NotFound)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn free_names() {
        assert!(is_free_name("free.0"));
        assert!(is_free_name("free.12345"));
        assert!(!is_free_name("free."));
        assert!(!is_free_name("free.x"));
        assert!(!is_free_name("0006612f745353f3"));
    }
}
