//! The PID file: written once the daemon is ready, removed on a clean exit.
//!
//! Mode 0644, as PID files are: a number is no secret, and by default it
//! sits in the queue directory, which only mtad's user (and its group)
//! can enter. It is written after mtad has switched users, so that user
//! must be able to write its directory (the queue directory is).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A written PID file; removed when dropped.
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes our PID atomically (a temporary file renamed into place), so a
    /// reader never sees a half-written number.
    ///
    /// After a restart (this same process, executed again) the file names
    /// us already and is kept as it is: nothing to write, so a restart
    /// comes back up even on a full disk.
    pub fn write(path: &Path) -> Result<PidFile> {
        let ours = std::process::id().to_string();
        if std::fs::read_to_string(path).is_ok_and(|text| text.trim() == ours) {
            return Ok(PidFile {
                path: path.to_owned(),
            });
        }
        let tmp = path.with_extension("pid.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
            .context("setting the PID file's mode")?;
        writeln!(f, "{}", std::process::id()).context("writing the PID file")?;
        f.sync_all().context("syncing the PID file")?;
        std::fs::rename(&tmp, path).with_context(|| format!("creating {}", path.display()))?;
        Ok(PidFile {
            path: path.to_owned(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
