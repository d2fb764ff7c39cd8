//! Who owns the queue directory and who else may read it.
//!
//! A daemon started as root prepares the directory before it switches to
//! its own user ([`prepare`]): it creates it, gives it its mode, and hands
//! the whole tree to that user when the top is not the user's already (a
//! queue written by an earlier run as root, or by another user). The mode
//! of the queue directory then decides every other mode in it
//! (`layout.rs`): private (0700, files 0600), or readable by its group
//! (0750, files 0640).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::SpoolError;
use crate::layout::{set_mode, Modes};

/// How a queue directory is to be owned and shared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// The uid and gid to hand the tree to; `None` leaves ownership as
    /// it is (a daemon that does not switch users).
    pub owner: Option<(u32, u32)>,
    /// Directories 0750 and files 0640 (the owning group may read),
    /// rather than 0700 and 0600.
    pub group_readable: bool,
}

/// Creates the queue directory if needed (missing parents 0755), sets its
/// mode, and hands it to [`Access::owner`]. Call before
/// [`Spool::open`](crate::Spool::open), while still privileged; cheap
/// unless the tree changes hands, which walks it once.
pub fn prepare(dir: &Path, access: &Access) -> Result<(), SpoolError> {
    create_parents(dir)?;
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(SpoolError::io("create directory", dir, e)),
    }
    let modes = if access.group_readable {
        Modes::GROUP_READABLE
    } else {
        Modes::PRIVATE
    };
    set_mode(dir, modes.dir)?;
    if let Some((uid, gid)) = access.owner {
        let meta = fs::metadata(dir).map_err(|e| SpoolError::io("stat", dir, e))?;
        if (meta.uid(), meta.gid()) != (uid, gid) {
            tracing::info!(dir = %dir.display(), uid, gid, "handing the queue directory over to mtad's user");
            chown_tree(dir, uid, gid)?;
        }
    }
    Ok(())
}

/// Missing parents of `dir`, 0755 whatever the umask: they are the
/// operator's directories, and the daemon's user must get through them.
fn create_parents(dir: &Path) -> Result<(), SpoolError> {
    let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    if parent.exists() {
        return Ok(());
    }
    create_parents(parent)?;
    match fs::DirBuilder::new().mode(0o755).create(parent) {
        Ok(()) => set_mode(parent, 0o755),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(SpoolError::io("create directory", parent, e)),
    }
}

/// `chown -R`, following no symbolic link below `dir` (`dir` itself may
/// be one).
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), SpoolError> {
    let list = |d: &Path| -> Result<Vec<PathBuf>, SpoolError> {
        fs::read_dir(d)
            .and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect())
            .map_err(|e| SpoolError::io("list", d, e))
    };
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .map_err(|e| SpoolError::io("chown", dir, e))?;
    let mut todo = list(dir)?;
    while let Some(path) = todo.pop() {
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
            .map_err(|e| SpoolError::io("chown", &path, e))?;
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            todo.extend(list(&path)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_loose_queue_directory_is_tightened_and_its_mode_rules_the_rest() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("a/b/queue");
        prepare(&dir, &Access::default()).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&top.path().join("a")), 0o755);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&dir, &Access::default()).unwrap();
        assert_eq!(mode(&dir), 0o700);
        prepare(
            &dir,
            &Access {
                owner: None,
                group_readable: true,
            },
        )
        .unwrap();
        assert_eq!(mode(&dir), 0o750);
        assert_eq!(Modes::of(&dir).unwrap(), Modes::GROUP_READABLE);
    }
}
