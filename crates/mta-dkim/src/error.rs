//! What can go wrong with keys and signatures.

use std::path::PathBuf;

/// A DKIM key could not be used, or a signature not made.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    /// The key file cannot be read.
    #[error("cannot read the DKIM key {path}: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file holds no usable key.
    #[error("the DKIM key {path}: {why}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why it cannot be used.
        why: String,
    },
    /// Signing failed (the crypto library refused).
    #[error("DKIM signing with {domain} {selector}: {why}")]
    Sign {
        /// `d=`.
        domain: String,
        /// `s=`.
        selector: String,
        /// Why.
        why: String,
    },
    /// A new key could not be made.
    #[error("cannot make a DKIM key: {0}")]
    Generate(String),
}
