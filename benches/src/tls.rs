//! TLS for the generator's connections: STARTTLS (RFC 3207) on a plain
//! connection, or implicit TLS from the first byte (RFC 8314, port 465).
//!
//! The benchmark measures what a server pays per session, so the client
//! makes a full handshake every time: session resumption is off (a
//! resumed session would skip the server's key exchange and signature,
//! and whether a server resumes is a setting, not a cost). The server's
//! certificate is not verified: the generator only ever connects to
//! loopback, to servers the benchmark set up with a throw-away
//! self-signed certificate; the handshake signature is still checked,
//! so the server does the same private-key work as for a verifying
//! client.

use std::fmt;
use std::sync::Arc;

use mta_deliver::AcceptAnyCertificate;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

/// How a connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain SMTP throughout.
    #[default]
    None,
    /// EHLO, STARTTLS, then EHLO again over TLS (RFC 3207).
    StartTls,
    /// TLS from the first byte; the greeting comes over TLS (RFC 8314).
    Implicit,
}

impl TlsMode {
    /// Whether the connection ends up under TLS.
    pub fn is_tls(self) -> bool {
        self != TlsMode::None
    }
}

impl fmt::Display for TlsMode {
    /// `none`, `STARTTLS`, `implicit TLS`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::None => "none",
            TlsMode::StartTls => "STARTTLS",
            TlsMode::Implicit => "implicit TLS",
        })
    }
}

/// The client configuration every TLS connection of a run shares: the
/// `ring` provider (as the rest of the workspace), safe default
/// versions, any certificate, no resumption.
pub fn client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new(provider)))
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The name given to the handshake: the server's IP address (rustls
/// sends no SNI for an address, as RFC 6066 section 3 asks).
pub fn server_name(addr: std::net::SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert!(TlsMode::StartTls.is_tls() && TlsMode::Implicit.is_tls());
        assert!(!TlsMode::None.is_tls());
        assert_eq!(TlsMode::Implicit.to_string(), "implicit TLS");
        assert_eq!(TlsMode::default(), TlsMode::None);
    }
}
