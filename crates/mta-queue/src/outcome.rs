//! What one attempt found for each recipient: the input of `settle.rs`.

use mta_deliver::Outcome;

/// The `remote` of a local (Maildir) delivery: no server, and no
/// Remote-MTA in a DSN.
pub(crate) const LOCAL_REMOTE: &str = "maildir";

/// The result for one recipient.
#[derive(Debug, Clone)]
pub(crate) struct RecipientResult {
    /// The recipient's index in the envelope.
    pub index: usize,
    pub outcome: Outcome,
    /// The server the attempt talked to (`mx1.test[127.0.0.2]:2525`), or
    /// [`LOCAL_REMOTE`].
    pub remote: Option<String>,
    /// TLS version, cipher and verification, when used.
    pub tls: Option<mta_deliver::TlsInfo>,
}
