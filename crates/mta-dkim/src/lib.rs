//! DKIM signing of outbound mail (RFC 6376; Ed25519 by RFC 8463; key
//! sizes by RFC 8301), on Stalwart's `mail-auth`.
//!
//! - [`Signers`]: the `[[dkim.sign]]` tables with their keys loaded
//!   ([`Signers::load`], at start and at each graceful restart), and
//!   which keys a message gets: those of its From: domain
//!   ([`from_domain`]), or of a parent domain that signs for
//!   subdomains. [`Signers::sign`] returns the `DKIM-Signature:` fields
//!   to put on top of the message (relaxed/relaxed, the configured
//!   header fields with From, Subject, To and Date over-signed).
//! - [`generate`] and [`zone_line`]: `mta-init dkim keygen`.
//!
//! Which messages are signed at all (mail from relay networks,
//! authenticated users and local programs, and mtad's DSNs; never mail
//! merely relayed in) is the daemon's decision; this crate signs what it
//! is given.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use mta_config::{DkimAlgorithm, DkimSign};
//! let key = mta_dkim::generate(DkimAlgorithm::Ed25519Sha256, 0).unwrap();
//! # let path = dir.path().join("k.pem");
//! std::fs::write(&path, &key.pem).unwrap();
//! let table = DkimSign {
//!     domain: "example.com".into(),
//!     selector: "s1".into(),
//!     key: path,
//!     algorithm: None,
//!     subdomains: false,
//!     expire: None,
//!     headers: None,
//! };
//! let signers = mta_dkim::Signers::load(&[table]).unwrap().signers;
//! let message = b"From: joe@example.com\r\nSubject: hi\r\n\r\nHello\r\n";
//! let domain = mta_dkim::from_domain(message).unwrap();
//! let signed = signers.sign(&domain, &[message]).unwrap().unwrap();
//! assert!(signed.fields.starts_with("DKIM-Signature: "));
//! assert_eq!(signed.by[0].to_string(), "example.com:s1");
//! ```

mod author;
mod error;
mod found;
mod key;
mod keygen;
mod signers;

pub use author::from_domain;
pub use error::DkimError;
pub use found::signatures_on_top;
pub use key::{GOOD_RSA_BITS, MIN_RSA_BITS};
pub use keygen::{generate, zone_line, NewKey};
pub use signers::{Loaded, Signed, SignedBy, Signers};
