//! The errors of loading and editing a users file.

use std::io;
use std::path::PathBuf;

use crate::name::NameProblem;

/// Why a users file could not be loaded or changed.
///
/// A bad line is not an error of loading: it is a [`Warning`](crate::Warning)
/// and the rest of the file still loads.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file could not be read, written, locked, renamed or synced.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done, e.g. "read", "rename over".
        action: &'static str,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// `add` of a name the file already has.
    #[error("user {0:?} already exists")]
    UserExists(String),
    /// `passwd` or `del` of a name the file does not have.
    #[error("no user {0:?}")]
    NoSuchUser(String),
    /// A user name that cannot be written as one `name:hash` line.
    #[error("user name {name:?} refused: {problem}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// A password that could never be used (empty, a NUL byte, too long).
    #[error("password refused: {0}")]
    BadPassword(&'static str),
    /// Hashing a new password failed (the system's random source, or
    /// parameters the argon2 crate refuses).
    #[error("hashing the password failed: {0}")]
    Hash(String),
    /// An entry of `[auth] senders` that is neither an address nor
    /// `@domain`.
    #[error("[auth] senders: user {user:?}: {entry:?} is not an address or @domain")]
    BadSender {
        /// The user of the entry.
        user: String,
        /// The entry.
        entry: String,
    },
}

impl AuthError {
    /// An I/O error with the path and the action it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        AuthError::Io {
            path: path.into(),
            action,
            source,
        }
    }
}
