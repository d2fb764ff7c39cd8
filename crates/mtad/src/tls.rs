//! The rustls server configuration for STARTTLS.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::crypto::ring::Ticketer;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, SupportedCipherSuite};

/// `TLSv1.3 with cipher TLS13_AES_128_GCM_SHA256`, for `Received:` and
/// logs: the SMTP client's wording, shared, so that the two sides of a
/// relay describe TLS alike.
pub use mta_deliver::describe_session as describe;

/// Loads the certificate chain and key named in the configuration.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{}: no certificate found",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading private key {}", key.display()))?;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = preferred_suites(provider.cipher_suites);
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("certificate and key do not match")?;
    config.ignore_client_order = true;
    // Resumption that holds at any connection rate: a ticket carries its
    // session sealed under this process's keys (rotated every six hours
    // by rustls), instead of naming an entry in rustls's default cache of
    // 256 sessions, which 1,000 connections a second would turn over in
    // a quarter of a second. One ticket per handshake, not two: an SMTP
    // client keeps one session per destination (Postfix's smtp_tls
    // session cache), and the second ticket was a cost on every
    // connection for nobody.
    config.ticketer = Ticketer::new().context("TLS session ticket keys")?;
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// rustls's cipher suites in the server's order of preference, which
/// wins over the client's: within each protocol version, the suites that
/// hash with SHA-256 before those that hash with SHA-384. A handshake
/// hashes its transcript and derives its keys with its suite's hash, and
/// current x86-64 and ARM processors have instructions for SHA-256 but
/// not for SHA-384; AES-128-GCM with SHA-256 is also the suite every TLS
/// 1.3 client implements (RFC 8446 section 9.1). The same suites as
/// rustls's defaults: none added, none dropped.
fn preferred_suites(mut suites: Vec<SupportedCipherSuite>) -> Vec<SupportedCipherSuite> {
    // A stable sort: rustls's order otherwise.
    suites.sort_by_key(hashes_with_sha384);
    suites
}

fn hashes_with_sha384(suite: &SupportedCipherSuite) -> bool {
    // Every suite's name ends with its hash (RFC 8446 B.4, RFC 5289).
    suite
        .suite()
        .as_str()
        .is_some_and(|name| name.ends_with("_SHA384"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CipherSuite;

    #[test]
    fn sha256_suites_come_first_and_none_is_lost() {
        let defaults = rustls::crypto::ring::default_provider().cipher_suites;
        let ordered = preferred_suites(defaults.clone());
        let names = |suites: &[SupportedCipherSuite]| {
            let mut names: Vec<_> = suites.iter().map(|s| u16::from(s.suite())).collect();
            names.sort_unstable();
            names
        };
        assert_eq!(names(&ordered), names(&defaults));
        assert_eq!(ordered[0].suite(), CipherSuite::TLS13_AES_128_GCM_SHA256);
        let first = ordered
            .iter()
            .position(hashes_with_sha384)
            .expect("a SHA-384 suite");
        assert!(
            ordered[first..].iter().all(hashes_with_sha384),
            "{ordered:?}"
        );
        assert!(hashes_with_sha384(
            &rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384
        ));
        assert!(!hashes_with_sha384(
            &rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256
        ));
    }
}
