//! Replacing a file whole, atomically and durably, under a lock.
//!
//! The new content goes to a temporary file in the same directory (so the
//! rename cannot cross file systems), which is given mode 0640 whatever
//! the umask and the owner asked for, fsynced, renamed over the old file,
//! and then the directory is fsynced so the rename itself survives a
//! crash. A reader (mtad on `graceful`) sees the old file or the new one,
//! never half of one.
//!
//! The lock is `flock(2)` on a sibling file, `<name>.lock`: the file
//! itself is replaced by each edit, so a lock on it would be on an inode
//! that the next editor no longer opens.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::AuthError;

/// The mode of the users file: the owner (root) writes, the group (mtad's)
/// reads, nobody else.
pub const FILE_MODE: u32 = 0o640;

/// An exclusive lock on `<path>.lock`, held until dropped.
#[derive(Debug)]
pub(crate) struct EditLock {
    _file: File,
}

/// Takes the edit lock of `path`, waiting for another editor to finish.
pub(crate) fn lock(path: &Path) -> Result<EditLock, AuthError> {
    let lock_path = sibling(path, ".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .open(&lock_path)
        .map_err(|e| AuthError::io(&lock_path, "open the lock file", e))?;
    // An edit holds it for a read and a write of a small file (the hash is
    // made before), so waiting is short.
    file.lock()
        .map_err(|e| AuthError::io(&lock_path, "lock", e))?;
    Ok(EditLock { _file: file })
}

/// `path` with `suffix` added to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `content`. The new file gets mode 0640 and the
/// owner `owner` when given, else the old file's owner and group (when
/// there is an old file and they differ from ours).
pub(crate) fn replace(
    path: &Path,
    content: &[u8],
    owner: Option<(u32, u32)>,
) -> Result<(), AuthError> {
    let owner = match owner {
        Some(owner) => Some(owner),
        None => match std::fs::metadata(path) {
            Ok(meta) => Some((meta.uid(), meta.gid())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(AuthError::io(path, "stat", e)),
        },
    };
    let tmp = sibling(path, &format!(".tmp.{}", std::process::id()));
    let written = write_new(&tmp, content, owner);
    let renamed = written.and_then(|()| {
        std::fs::rename(&tmp, path).map_err(|e| AuthError::io(path, "rename over", e))
    });
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let dir = parent(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuthError::io(dir, "fsync the directory", e))
}

/// Writes the temporary file: content, mode, owner, fsync.
fn write_new(tmp: &Path, content: &[u8], owner: Option<(u32, u32)>) -> Result<(), AuthError> {
    // A temporary file left by an editor that crashed with our pid.
    let _ = std::fs::remove_file(tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(tmp)
        .map_err(|e| AuthError::io(tmp, "create", e))?;
    // The umask may have taken bits off the mode given at creation.
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .map_err(|e| AuthError::io(tmp, "chmod", e))?;
    if let Some((uid, gid)) = owner {
        let meta = file.metadata().map_err(|e| AuthError::io(tmp, "stat", e))?;
        if (meta.uid(), meta.gid()) != (uid, gid) {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                .map_err(|e| AuthError::io(tmp, "chown", e))?;
        }
    }
    file.write_all(content)
        .map_err(|e| AuthError::io(tmp, "write", e))?;
    file.sync_all().map_err(|e| AuthError::io(tmp, "fsync", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_and_parents() {
        assert_eq!(
            sibling(Path::new("/etc/mta/users"), ".lock"),
            Path::new("/etc/mta/users.lock")
        );
        assert_eq!(
            sibling(Path::new("users"), ".tmp.1"),
            Path::new("users.tmp.1")
        );
        assert_eq!(parent(Path::new("users")), Path::new("."));
        assert_eq!(parent(Path::new("/etc/mta/users")), Path::new("/etc/mta"));
    }

    #[test]
    fn replace_sets_the_mode_whatever_the_umask_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        replace(&path, b"new\n", None).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, FILE_MODE);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["users"]);
    }

    #[test]
    fn replace_keeps_the_old_owner_or_takes_the_given_one() {
        if !nix_root() {
            eprintln!("skipped: chown to another user needs root");
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "old\n").unwrap();
        std::os::unix::fs::chown(&path, Some(4242), Some(4343)).unwrap();
        replace(&path, b"kept\n", None).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
        replace(&path, b"given\n", Some((0, 4444))).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 4444));
        let fresh = dir.path().join("fresh");
        replace(&fresh, b"x\n", Some((0, 4545))).unwrap();
        let meta = std::fs::metadata(&fresh).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (0, 4545, FILE_MODE)
        );
    }

    #[test]
    fn a_failed_replace_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails.
        let path = dir.path().join("users");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), "x").unwrap();
        let err = replace(&path, b"new\n", None).unwrap_err();
        assert!(err.to_string().contains("rename over"), "{err}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["users"]);
    }

    /// Whether this process is root (from /proc, to need no libc crate).
    fn nix_root() -> bool {
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }
}
