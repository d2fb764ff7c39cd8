//! The rustls client configurations for STARTTLS (RFC 3207), built once per
//! [`Client`](crate::Client), with the `ring` provider as the rest of the
//! project uses.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::dane::tlsa::Tlsa;
use crate::dane::verifier::DaneVerifier;
use crate::ClientError;

/// The two configurations a client may need.
#[derive(Debug)]
pub(crate) struct TlsConfigs {
    /// For opportunistic TLS: any certificate is accepted.
    pub opportunistic: Arc<ClientConfig>,
    /// For required TLS: the certificate must chain to a trust anchor,
    /// the system's or `ca_file`'s. None when there is none: required TLS
    /// then always fails.
    pub verified: Option<Arc<ClientConfig>>,
    /// The verifier of `verified`, to check a certificate that
    /// opportunistic TLS accepted (an MTA-STS policy in testing mode).
    pub verifier: Option<Arc<WebPkiServerVerifier>>,
    /// The crypto of every configuration, for those made per host (DANE).
    provider: Arc<CryptoProvider>,
}

impl TlsConfigs {
    /// The configurations, with the trust anchors of `ca_file` and, when
    /// `system_roots`, of the system's store (read once, here).
    pub fn new(ca_file: Option<&Path>, system_roots: bool) -> Result<TlsConfigs, ClientError> {
        let system = if system_roots {
            system_anchors()
        } else {
            Vec::new()
        };
        let roots = trust_anchors(system, ca_file)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let opportunistic = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider.clone())))
            .with_no_client_auth();
        let (verified, verifier) = if roots.is_empty() {
            (None, None)
        } else {
            let verifier = webpki_verifier(roots, provider.clone())?;
            let config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .with_webpki_verifier(verifier.clone())
                .with_no_client_auth();
            (Some(Arc::new(config)), Some(verifier))
        };
        Ok(TlsConfigs {
            opportunistic: Arc::new(opportunistic),
            verified,
            verifier,
            provider,
        })
    }

    /// The configuration for a DANE host: its certificate must match one
    /// of the usable TLSA `records` published at `owner`.
    pub fn dane(&self, owner: &str, records: Vec<Tlsa>) -> Result<Arc<ClientConfig>, ClientError> {
        let verifier = DaneVerifier::new(owner.to_owned(), records, self.provider.clone());
        let config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

fn webpki_verifier(
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, ClientError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| ClientError::Tls(rustls::Error::General(e.to_string())))
}

/// The configuration of the MTA-STS policy fetch (RFC 8461 section 3.3:
/// HTTPS with a valid certificate): the system's anchors when
/// `system_roots`, and every CA file given. Without any anchor, every
/// fetch fails (and so no policy applies).
pub(crate) fn fetch_config<'a>(
    system_roots: bool,
    ca_files: impl IntoIterator<Item = Option<&'a Path>>,
) -> Result<ClientConfig, ClientError> {
    let mut roots = RootCertStore::empty();
    if system_roots {
        roots.add_parsable_certificates(system_anchors());
    }
    for path in ca_files.into_iter().flatten() {
        roots.roots.extend(load_roots(path)?.roots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = if roots.is_empty() {
        tracing::warn!("no trust anchor for the MTA-STS policy fetch: no policy can be fetched");
        builder
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()
    } else {
        builder
            .with_webpki_verifier(webpki_verifier(roots, provider)?)
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The system's trust anchors (rustls-native-certs: the bundle openssl-probe
/// finds, e.g. Debian's /etc/ssl/certs/ca-certificates.crt, or
/// `SSL_CERT_FILE` and `SSL_CERT_DIR` when set). What cannot be read is
/// logged, not fatal: `ca_file` may be all an operator wants.
fn system_anchors() -> Vec<CertificateDer<'static>> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "cannot read part of the system's trust store");
    }
    found.certs
}

/// `system` and `ca_file`'s certificates in one root store; a `ca_file`
/// that cannot be read or holds no certificate is an error. Logs how
/// many of each.
fn trust_anchors(
    system: Vec<CertificateDer<'static>>,
    ca_file: Option<&Path>,
) -> Result<RootCertStore, ClientError> {
    let mut roots = match ca_file {
        Some(path) => load_roots(path)?,
        None => RootCertStore::empty(),
    };
    let from_file = roots.len();
    let (from_system, unusable) = roots.add_parsable_certificates(system);
    tracing::info!(
        from_system,
        unusable,
        from_file,
        "trust anchors for verified TLS"
    );
    Ok(roots)
}

/// Reads the PEM certificates of `path` into a root store.
fn load_roots(path: &Path) -> Result<RootCertStore, ClientError> {
    let bad = |reason: String| ClientError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad(format!(
            "no usable certificate ({ignored} could not be parsed)"
        )));
    }
    Ok(roots)
}

/// The name sent in SNI and checked in the certificate: the target's host
/// name when it is a DNS name, else its IP address (rustls sends no SNI
/// for an address, as RFC 6066 section 3 asks).
pub(crate) fn server_name(host: &str, ip: IpAddr) -> ServerName<'static> {
    let host = host.trim_end_matches('.');
    if host.parse::<IpAddr>().is_err() && !host.starts_with('[') {
        if let Ok(name) = ServerName::try_from(host.to_owned()) {
            return name;
        }
    }
    ServerName::IpAddress(ip.into())
}

/// A TLS session in words: `TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384`.
/// The one wording, for either side (a `ClientConnection` or a
/// `ServerConnection` is a [`rustls::CommonState`] underneath): the
/// client's delivery log and the server's `Received:` header and logs.
pub fn describe_session(conn: &rustls::CommonState) -> String {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(v) => format!("{v:?}"),
        None => "TLS".to_owned(),
    };
    match conn.negotiated_cipher_suite() {
        Some(suite) => format!("{version} with cipher {:?}", suite.suite()),
        None => version,
    }
}

/// Accepts any server certificate.
///
/// This is deliberate: opportunistic STARTTLS between MTAs (RFC 7435,
/// "Opportunistic Security: Some Protection Most of the Time") encrypts
/// against passive eavesdroppers and must not fail on a self-signed,
/// expired or misnamed certificate, since the alternative is plaintext.
/// Most MX hosts have no certificate a sender could verify (RFC 7672
/// section 1.3). Where authentication matters the policy is
/// [`TlsPolicy::Required`](crate::TlsPolicy::Required), which verifies.
///
/// The handshake signatures are still checked, so the peer proves it holds
/// the key of the certificate it sent.
#[derive(Debug)]
pub struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl AcceptAnyCertificate {
    /// Checks the handshake signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> AcceptAnyCertificate {
        AcceptAnyCertificate(provider)
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_is_the_host_name_unless_it_is_an_address() {
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(
            server_name("mx1.test.", ip),
            ServerName::try_from("mx1.test").unwrap()
        );
        assert_eq!(
            server_name("[127.0.0.2]", ip),
            ServerName::IpAddress(ip.into())
        );
        assert_eq!(
            server_name("127.0.0.2", ip),
            ServerName::IpAddress(ip.into())
        );
    }

    #[test]
    fn the_policy_fetch_without_any_anchor_is_built_and_trusts_nothing() {
        let config = fetch_config(false, [None, None]).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        let err = fetch_config(false, [None, Some(Path::new("/nonexistent/ca.pem"))]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_missing_ca_file_is_an_error() {
        let err = TlsConfigs::new(Some(Path::new("/nonexistent/ca.pem")), false).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    fn self_signed(name: &str) -> rcgen::CertifiedKey {
        rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap()
    }

    /// `ca_file` adds to the system's anchors; neither: no anchor, and
    /// no verified configuration.
    #[test]
    fn ca_file_adds_to_the_system_anchors() {
        let system = [self_signed("a.test"), self_signed("b.test")];
        let file = self_signed("c.test");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, file.cert.pem()).unwrap();
        let ders = || {
            system
                .iter()
                .map(|c| c.cert.der().clone())
                .collect::<Vec<_>>()
        };

        assert_eq!(trust_anchors(ders(), Some(&path)).unwrap().len(), 3);
        assert_eq!(trust_anchors(ders(), None).unwrap().len(), 2);
        assert_eq!(trust_anchors(Vec::new(), Some(&path)).unwrap().len(), 1);
        assert!(trust_anchors(Vec::new(), None).unwrap().is_empty());
        assert!(TlsConfigs::new(None, false).unwrap().verified.is_none());
        assert!(TlsConfigs::new(Some(&path), false)
            .unwrap()
            .verified
            .is_some());
    }
}
