//! Errors of building a [`Client`](crate::Client). Delivery itself never
//! fails as a Rust error: every problem becomes an
//! [`Outcome`](crate::Outcome).

use std::path::PathBuf;

/// The configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `ca_file` cannot be read or holds no certificate.
    #[error("ca_file {}: {reason}", path.display())]
    CaFile {
        /// The file named in the configuration.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A `throttle` pattern is not `example.com`, `*.example.com` or
    /// `mx:host`.
    #[error("throttle pattern {pattern:?}: {reason}")]
    Throttle {
        /// The pattern as configured.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `[delivery.dane] trust_anchor` cannot be read or holds no DNSKEY
    /// record.
    #[error("[delivery.dane] trust_anchor {}: {reason}", path.display())]
    TrustAnchor {
        /// The file named in the configuration.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The validating resolver of DANE cannot be set up.
    #[error("DANE resolver: {0}")]
    Resolver(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}
