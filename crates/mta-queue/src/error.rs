//! Why an operator's queue command could not be carried out, and what
//! kind of failure that is, so the edge (mtad) can tell a bad request
//! from a full disk without reading the words.

use mta_spool::SpoolError;

/// The kind of a [`SteerError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong: a bad id, filter or selection.
    Invalid,
    /// No such message.
    NotFound,
    /// The message is in a state that prevents the request (its queued
    /// copy is unreadable).
    Conflict,
    /// The queue cannot do it now: spool I/O failed, the disk is full.
    Unavailable,
    /// A bug: a blocking task panicked.
    Internal,
}

/// A queue command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// No message with that id is queued.
    #[error("no message {0} in the queue")]
    NotFound(String),
    /// The request itself is wrong (a bad id, filter or selection).
    #[error("{0}")]
    Invalid(String),
    /// The message's state prevents the request.
    #[error("{0}")]
    Conflict(String),
    /// The queue cannot carry it out now (no DSN could be queued: a full
    /// disk?).
    #[error("{0}")]
    Unavailable(String),
    /// The queue could not be read or written.
    #[error("queue: {0}")]
    Spool(#[from] SpoolError),
    /// A blocking task failed.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for SteerError {
    fn from(e: crate::store::StoreError) -> SteerError {
        match e {
            crate::store::StoreError::Spool(e) => SteerError::Spool(e),
            e @ crate::store::StoreError::Panicked(_) => SteerError::Internal(e.to_string()),
        }
    }
}

impl SteerError {
    /// What kind of failure it is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SteerError::NotFound(_) => ErrorKind::NotFound,
            SteerError::Invalid(_) => ErrorKind::Invalid,
            SteerError::Conflict(_) => ErrorKind::Conflict,
            SteerError::Unavailable(_) | SteerError::Spool(_) => ErrorKind::Unavailable,
            SteerError::Internal(_) => ErrorKind::Internal,
        }
    }
}
