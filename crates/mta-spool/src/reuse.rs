//! Spool files of finished messages, kept to hold the next ones.
//!
//! Creating a file and removing it are the costly part of a message's
//! passage through the file system after its fsyncs: the kernel finds a
//! free inode (ext4 searches past the ones freed recently) and allocates
//! blocks, then frees both again when the message is done. So a file is
//! not unlinked when its message is done: it is kept, as `tmp/free.N`,
//! and the next message is written over it (write, fdatasync: the file's
//! first line gives the content's length, so the file need not be cut to
//! size, see `file.rs`), then committed as every message is: a new name
//! in `msg/`, that directory fsynced. Nothing about durability changes: a
//! message is still written, fdatasynced, named in `msg/` and its
//! directory fsynced before the client hears 250.
//!
//! - A small message is written in a slot, a file named `tmp/free.N`
//!   (a kept one, else a new one), and committed by a hard link into
//!   `msg/`, so while it is queued its file has both names (`Lent`). When
//!   it is done, unlinking its `msg/` name frees the file: `tmp/` itself
//!   never changes. (A rename into `tmp/` would: and ext4 without a
//!   journal makes the next fdatasync of a file given a new name since
//!   its last fsync write that name's directory as well, one more write
//!   to wait for before the next message's 250.) At most [`MAX_LENT`]
//!   messages hold a slot at once. Other messages (large ones, those
//!   beyond that many, any while files are not kept) are written as
//!   `tmp/<id>` (or in a kept file) and renamed into `msg/`; done, a
//!   small one of them is renamed to a `free.N` name.
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
//! - A file leaves `msg/` for good: its name there is never given again
//!   (ids are used once), and a file is written over only once it has no
//!   name left in `msg/` (a slot whose `msg/` name went some other way,
//!   set aside as corrupt, is never written over). So a reader that still
//!   finds a message's path after reading it knows that what it read was
//!   that message, not the next one written over it (`Spool::read` and
//!   `Spool::envelope` check; see `file::still_there`).
//! - After a crash, a `free.N` name is no one's mail (a queued message
//!   keeps its name in `msg/`): open clears `tmp/` of them as of every
//!   file there, and `close` removes them. On a file system that does
//!   not order metadata writes (ext4 without a journal), a crash may
//!   bring back the `msg/` name of a file that was reused: it then holds
//!   the newer message, which is delivered twice, the same "at least
//!   once" a crash gives a message whose removal was lost; no message is
//!   lost.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use mta_envelope::QueueId;
use parking_lot::Mutex;

/// Most files kept.
pub(crate) const MAX_FILES: usize = 256;

/// Largest file kept, in bytes.
pub(crate) const MAX_SIZE: u64 = 128 * 1024;

/// Most bytes kept in all.
pub(crate) const MAX_BYTES: u64 = 8 << 20;

/// Most messages lent a slot at once. A queue that holds more (a backlog
/// deferred for hours, a million seeded messages) commits the rest by a
/// rename: `tmp/` never holds more than this many second names, the record
/// of them stays small, and `close` unlinks them in moments.
pub(crate) const MAX_LENT: usize = 4096;

/// How the names of kept files begin, in `tmp/`.
pub(crate) const PREFIX: &str = "free.";

/// The kept files.
#[derive(Debug)]
pub(crate) struct FreeFiles {
    /// `tmp/`.
    dir: PathBuf,
    /// Files of queued messages linked under a `free.N` name as well.
    lent: Arc<Lent>,
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
    /// The messages committed by a link (commit.rs) are recorded in
    /// `lent`.
    pub fn new(tmp: &Path, mode: u32, lent: Arc<Lent>) -> FreeFiles {
        FreeFiles {
            dir: tmp.to_owned(),
            lent,
            mode,
            kept: Mutex::new(Kept::default()),
            next: AtomicU64::new(0),
            keeping: AtomicBool::new(true),
        }
    }

    /// Takes the spool file of finished message `id` out of `msg/` (its
    /// `path`): keeps it when it is small and there is room, unlinks it
    /// otherwise. An error is the rename's or the unlink's (`NotFound`
    /// when it was gone).
    ///
    /// A file still linked under its `free.N` name in `tmp/` (it was
    /// committed by a link) only loses its name in `msg/`: then nothing
    /// in `tmp/` changes. Were it renamed into `tmp/` instead, the next
    /// fdatasync of the file would write `tmp/` too: ext4 without a
    /// journal syncs the directory of a name added since the file's last
    /// fsync (`ext4_sync_parent`), a further write to wait for.
    pub fn retire(&self, id: QueueId, path: &Path) -> io::Result<()> {
        if let Some(slot) = self.lent.take_back(id) {
            if let Err(e) = fs::remove_file(path) {
                // Gone from msg/ some other way (set aside, say): what the
                // file holds is not ours to write over.
                remove_quietly(&slot);
                return Err(e);
            }
            match self.keepable(&slot) {
                Ok(Some(size)) => self.push(slot, size),
                _ => remove_quietly(&slot),
            }
            return Ok(());
        }
        let Some(size) = self.keepable(path)? else {
            return fs::remove_file(path);
        };
        let free = self.next_name();
        fs::rename(path, &free)?;
        self.push(free, size);
        Ok(())
    }

    /// The size of the file at `path` when it may be kept: files are kept,
    /// there is room for it, it is small and of the spool's mode.
    fn keepable(&self, path: &Path) -> io::Result<Option<u64>> {
        if !self.keeping.load(Ordering::Relaxed) || !self.kept.lock().has_room(1) {
            return Ok(None);
        }
        let meta = fs::symlink_metadata(path)?;
        let size = meta.len();
        let same_mode = meta.permissions().mode() & 0o7777 == self.mode;
        let keep = size <= MAX_SIZE && same_mode && self.kept.lock().has_room(size);
        Ok(keep.then_some(size))
    }

    /// Keeps the file at `free`, of `size` bytes, unless files stopped
    /// being kept or room ran out meanwhile: then it is unlinked (it has
    /// left `msg/` already, which is what counts).
    fn push(&self, free: PathBuf, size: u64) {
        let mut kept = self.kept.lock();
        if kept.has_room(size) && self.keeping.load(Ordering::Relaxed) {
            kept.files.push((free, size));
            kept.bytes += size;
            return;
        }
        drop(kept);
        remove_quietly(&free);
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

    /// A name in `tmp/` for a new file that will be kept once its message
    /// is done, when files are kept and one of `size` bytes may be: the
    /// message is then committed by a link (commit.rs), and this name
    /// stays its second one until then. `None` otherwise.
    pub fn new_slot(&self, size: u64) -> Option<PathBuf> {
        (self.keeping.load(Ordering::Relaxed) && size <= MAX_SIZE).then(|| self.next_name())
    }

    fn next_name(&self) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{PREFIX}{n}"))
    }

    /// The record of the messages committed by a link.
    pub fn lent(&self) -> &Lent {
        &self.lent
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

    /// Unlinks every kept file (at close, and when space runs short). The
    /// `tmp/` names of queued messages stay until they are done (or the
    /// next open clears `tmp/`).
    pub fn clear(&self) {
        let files = std::mem::take(&mut *self.kept.lock()).files;
        for (path, _) in files {
            remove_quietly(&path);
        }
    }
}

/// The queued messages whose file has a second name in `tmp/`, a
/// `free.N` slot: written there, they were committed by a link into
/// `msg/` (commit.rs) rather than a rename, so that when they are done
/// unlinking the `msg/` name frees the file for the next message
/// ([`FreeFiles::retire`]). A slot is written over only once its message
/// has no name left in `msg/`: a reader that still finds the path of a
/// message after reading it knows it read that message.
#[derive(Debug, Default)]
pub(crate) struct Lent(Mutex<HashMap<QueueId, PathBuf>>);

impl Lent {
    /// Records that `id` is being stored in `slot`: before the commit, as
    /// the message may be done as soon as it is committed. False, and
    /// nothing recorded, when [`MAX_LENT`] messages hold slots, or `id`
    /// has one already (a second store under a queued message's id, which
    /// its commit will refuse): the message is then committed by a rename.
    #[must_use]
    pub fn lend(&self, id: QueueId, slot: PathBuf) -> bool {
        let mut lent = self.0.lock();
        if lent.len() >= MAX_LENT || lent.contains_key(&id) {
            return false;
        }
        lent.insert(id, slot);
        true
    }

    /// The slot of `id`, no longer recorded.
    fn take_back(&self, id: QueueId) -> Option<PathBuf> {
        self.0.lock().remove(&id)
    }

    /// `id` will not be done the usual way (its store failed, or its file
    /// was set aside): its slot's name is unlinked, and the file lives on
    /// under any other name it has.
    pub fn forget(&self, id: QueueId) {
        if let Some(slot) = self.take_back(id) {
            remove_quietly(&slot);
        }
    }

    /// Unlinks the slot names of every message recorded (at close: the
    /// messages stay in `msg/`).
    pub fn release_all(&self) {
        let slots = std::mem::take(&mut *self.0.lock());
        for slot in slots.into_values() {
            remove_quietly(&slot);
        }
    }

    /// Messages recorded.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.lock().len()
    }
}

/// Unlinks `path` (a kept file, or a slot's name), reporting failures
/// other than its absence.
fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a spool file kept for reuse");
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

    /// A message never lent a slot.
    const ID: QueueId = QueueId::new(1);

    /// A directory, its `tmp/`, and the kept files of `tmp/`.
    fn kept_in_tmp() -> (tempfile::TempDir, PathBuf, FreeFiles) {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let free = FreeFiles::new(&tmp, MODE, Arc::default());
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
        free.retire(ID, &small).unwrap();
        assert!(!small.exists());
        assert_eq!(free.len(), 1);

        let large = file(dir.path(), "large", MAX_SIZE as usize + 1);
        free.retire(ID, &large).unwrap();
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
            free.retire(ID, &file(dir.path(), name, len)).unwrap();
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
        free.retire(ID, &other).unwrap();
        assert!(!other.exists());
        assert_eq!(free.len(), 0);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[test]
    fn keeps_at_most_max_files_and_clear_removes_them() {
        let (dir, tmp, free) = kept_in_tmp();
        for n in 0..MAX_FILES + 3 {
            let path = file(dir.path(), &format!("m{n}"), 10);
            free.retire(ID, &path).unwrap();
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
            free.retire(ID, &path).unwrap();
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
        free.retire(ID, &file(dir.path(), "a", 100)).unwrap();
        assert_eq!(free.len(), 1);
        free.keep(false);
        assert_eq!(free.len(), 0);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        let b = file(dir.path(), "b", 100);
        free.retire(ID, &b).unwrap();
        assert!(!b.exists());
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "unlinked, not kept");
        free.keep(true);
        free.retire(ID, &file(dir.path(), "c", 100)).unwrap();
        assert_eq!(free.len(), 1);
    }

    #[test]
    fn a_file_already_gone_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let free = FreeFiles::new(dir.path(), MODE, Arc::default());
        let e = free.retire(ID, &dir.path().join("none")).unwrap_err();
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
        let free = FreeFiles::new(dir.path(), MODE, Arc::default());
        free.retire(ID, &path).unwrap();
        match crate::file::still_there(&path) {
            Err(crate::error::SpoolError::Io {
                op: "open", source, ..
            }) => {
                assert_eq!(source.kind(), io::ErrorKind::NotFound)
            }
            other => panic!("{other:?}"),
        }
    }

    /// A file committed by a link (its slot lent to the message) loses
    /// only its `msg/` name when the message is done, and is then written
    /// over; one whose `msg/` name went some other way is never written
    /// over: its slot name is unlinked and the file lives on elsewhere.
    #[test]
    fn a_lent_slot_is_kept_by_unlinking_its_msg_name_only() {
        use std::os::unix::fs::MetadataExt;

        let (dir, tmp, free) = kept_in_tmp();
        let id = QueueId::new(7);
        let slot = free.new_slot(10).unwrap();
        assert!(is_free_name(slot.file_name().unwrap().to_str().unwrap()));
        fs::write(&slot, b"message 7").unwrap();
        fs::set_permissions(&slot, fs::Permissions::from_mode(MODE)).unwrap();
        let msg = dir.path().join("0000000000000007");
        fs::hard_link(&slot, &msg).unwrap();
        assert!(free.lent().lend(id, slot.clone()));
        let inode = fs::metadata(&msg).unwrap().ino();

        free.retire(id, &msg).unwrap();
        assert!(!msg.exists());
        assert_eq!(free.lent().len(), 0);
        let (kept, size) = free.take(5).unwrap();
        assert_eq!((&kept, size), (&slot, 9), "the slot itself, kept");
        assert_eq!(fs::metadata(&kept).unwrap().ino(), inode);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 1);

        // Set aside (moved out of msg/) while lent: the slot goes, and
        // the file stays whole under its new name.
        let id = QueueId::new(8);
        let msg = dir.path().join("0000000000000008");
        fs::hard_link(&kept, &msg).unwrap();
        assert!(free.lent().lend(id, kept.clone()));
        let aside = dir.path().join("aside");
        fs::rename(&msg, &aside).unwrap();
        let e = free.retire(id, &msg).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(!kept.exists(), "the slot's name unlinked");
        assert!(free.take(1).is_none(), "and not kept");
        assert_eq!(fs::read(&aside).unwrap(), b"message 7");

        // Forgotten (a store that failed, a file set aside): the slot's
        // name goes.
        let slot = free.new_slot(10).unwrap();
        fs::write(&slot, b"x").unwrap();
        assert!(free.lent().lend(QueueId::new(9), slot.clone()));
        assert!(
            !free.lent().lend(QueueId::new(9), tmp.join("other")),
            "one slot per id"
        );
        free.lent().forget(QueueId::new(9));
        assert!(!slot.exists());

        // At close, the slots of messages still queued lose their names
        // in tmp/; the messages keep theirs.
        let slot = free.new_slot(10).unwrap();
        fs::write(&slot, b"y").unwrap();
        let msg = dir.path().join("000000000000000a");
        fs::hard_link(&slot, &msg).unwrap();
        assert!(free.lent().lend(QueueId::new(10), slot.clone()));
        free.lent().release_all();
        assert!(!slot.exists());
        assert_eq!(fs::read(&msg).unwrap(), b"y");
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }

    /// At most MAX_LENT messages hold a slot.
    #[test]
    fn at_most_max_lent_slots() {
        let lent = Lent::default();
        for n in 0..MAX_LENT as u64 {
            assert!(lent.lend(QueueId::new(n), PathBuf::from(format!("free.{n}"))));
        }
        assert!(!lent.lend(QueueId::new(u64::MAX), PathBuf::from("free.x")));
        lent.take_back(QueueId::new(0)).unwrap();
        assert!(lent.lend(QueueId::new(u64::MAX), PathBuf::from("free.x")));
        assert_eq!(lent.len(), MAX_LENT);
    }

    /// No slot for a file that will not be kept: too large, or while
    /// files are not kept.
    #[test]
    fn new_slots_only_for_files_that_may_be_kept() {
        let (_dir, _tmp, free) = kept_in_tmp();
        assert!(free.new_slot(MAX_SIZE).is_some());
        assert!(free.new_slot(MAX_SIZE + 1).is_none());
        free.keep(false);
        assert!(free.new_slot(10).is_none());
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
