//! The one error type of the crate.
//!
//! Callers mostly need two answers from an error: "is this a full disk?"
//! (SMTP answers `452 4.3.1` rather than `451`) and "which file, doing
//! what?" for the log. So I/O errors carry the operation and the path, and
//! [`SpoolError::is_no_space`] looks through them.

use std::io;
use std::path::{Path, PathBuf};

use mta_envelope::QueueId;

/// Everything that can go wrong in the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Another open spool (in this process or another one) holds the queue
    /// directory.
    #[error("queue directory {} is in use by another open spool", dir.display())]
    Locked {
        /// The queue directory.
        dir: PathBuf,
    },
    /// A system call on a file or directory failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `"fdatasync"`.
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// A spool file (or the clean marker) does not have the expected format.
    #[error("corrupt spool file {}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The sled index failed.
    #[error("queue index: {0}")]
    Index(#[from] sled::Error),
    /// The index failed (a write to it did not reach the disk) and has
    /// not been reopened yet; see [`Spool::index_health`](crate::Spool::index_health).
    #[error("the queue index is out of service until it can be reopened: {cause}")]
    IndexFailed {
        /// The error that failed it.
        cause: String,
        /// That error was a full file system.
        no_space: bool,
    },
    /// The spool was closed; nothing more is written.
    #[error("the spool is closed")]
    Closed,
    /// No spool file has this queue id.
    #[error("no message {id} in the queue")]
    NotFound {
        /// The queue id asked for.
        id: QueueId,
    },
    /// `store` was given a queue id that already names a message.
    #[error("queue id {id} is already in use")]
    IdInUse {
        /// The queue id.
        id: QueueId,
    },
}

impl SpoolError {
    /// True when the error comes from a full file system (`ENOSPC`) or an
    /// exhausted quota (`EDQUOT`): a temporary condition the client should
    /// hear as such.
    pub fn is_no_space(&self) -> bool {
        let source = match self {
            SpoolError::IndexFailed { no_space, .. } => return *no_space,
            SpoolError::Io { source, .. } => source,
            SpoolError::Index(sled::Error::Io(source)) => source,
            _ => return false,
        };
        if source.kind() == io::ErrorKind::StorageFull {
            return true;
        }
        matches!(
            source.raw_os_error(),
            Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EDQUOT
        )
    }

    /// Wraps an I/O error with the operation and the path.
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        SpoolError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// A copy of an I/O error that keeps what matters (the OS error code, or
/// the kind and message): one failed directory fsync fails every message of
/// the batch, and each caller gets its own error value.
pub(crate) fn copy_io_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}
