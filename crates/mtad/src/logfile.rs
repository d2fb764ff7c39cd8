//! The daemon log: standard output and standard error pointed at a file
//! that can be reopened after rotation (`mtad --log-file`, which
//! `mta-init start` passes). Mode 0640: it names senders and recipients.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The log file's path, kept to reopen it.
#[derive(Debug, Clone)]
pub struct LogFile {
    path: PathBuf,
}

impl LogFile {
    /// Opens `path` for appending and makes it standard output and standard
    /// error.
    pub fn open(path: &Path) -> std::io::Result<LogFile> {
        let log = LogFile {
            path: path.to_owned(),
        };
        log.reopen()?;
        Ok(log)
    }

    /// Opens the path again (logrotate has renamed the old file) and
    /// points standard output and standard error at the new file. Writes
    /// already under way finish in the old one.
    pub fn reopen(&self) -> std::io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&self.path)?;
        // 0640 whatever the umask; an older file loses looser bits. Best
        // effort: the file may be someone else's that we may only write.
        let mode = file.metadata()?.permissions().mode() & 0o7777;
        let want = if file.metadata()?.len() == 0 {
            0o640
        } else {
            mode & 0o640
        };
        if mode != want {
            let _ = file.set_permissions(std::fs::Permissions::from_mode(want));
        }
        for target in [1, 2] {
            nix::unistd::dup2(file.as_raw_fd(), target).map_err(std::io::Error::from)?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
