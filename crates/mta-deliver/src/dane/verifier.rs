//! The certificate check of a DANE host (RFC 7672 section 3.1, RFC 7671
//! section 5): a rustls [`ServerCertVerifier`] that matches the server's
//! certificates against the host's usable TLSA records.
//!
//! * DANE-EE (3 x x): the server's own certificate (or key) matches; no
//!   name, expiry or chain check (RFC 7672 section 3.1.1).
//! * DANE-TA (2 x x): a certificate the server sent in its chain matches,
//!   and the server's certificate chains up to it (webpki, with that
//!   certificate as the only anchor), is in date and is valid for the MX
//!   host name, the reference identifier of RFC 7672 section 3.2.2.
//!
//! The handshake signatures are checked as usual, so the peer proves it
//! holds the key of the certificate that matched.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use super::tlsa::{Tlsa, DANE_EE, DANE_TA};

/// Matches a server's certificate against the TLSA records of its host.
#[derive(Debug)]
pub(crate) struct DaneVerifier {
    /// `_25._tcp.mx.example.com`, for the reasons.
    owner: String,
    /// The usable records.
    records: Vec<Tlsa>,
    provider: Arc<CryptoProvider>,
}

/// Why no record matched: the sentence the delivery log shows.
#[derive(Debug)]
struct NoMatch(String);

impl fmt::Display for NoMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoMatch {}

impl DaneVerifier {
    /// A verifier for the usable `records` published at `owner`.
    pub fn new(owner: String, records: Vec<Tlsa>, provider: Arc<CryptoProvider>) -> DaneVerifier {
        DaneVerifier {
            owner,
            records,
            provider,
        }
    }

    /// The chain check of DANE-TA with `anchor` as the only trust anchor.
    fn chain_to(
        &self,
        anchor: &CertificateDer<'_>,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), String> {
        let mut roots = RootCertStore::empty();
        roots
            .add(anchor.clone().into_owned())
            .map_err(|e| format!("the matched trust anchor is not usable: {e}"))?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| e.to_string())?;
        verifier
            .verify_server_cert(end_entity, intermediates, server_name, &[], now)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .records
            .iter()
            .any(|r| r.usage == DANE_EE && r.matches(end_entity))
        {
            return Ok(ServerCertVerified::assertion());
        }
        let mut problems = Vec::new();
        for record in self.records.iter().filter(|r| r.usage == DANE_TA) {
            // RFC 7671 section 5.2.2: the server sends the trust anchor
            // in its chain, so that a record of its key can be matched.
            for anchor in intermediates.iter().filter(|c| record.matches(c)) {
                match self.chain_to(anchor, end_entity, intermediates, server_name, now) {
                    Ok(()) => return Ok(ServerCertVerified::assertion()),
                    Err(problem) => problems.push(format!("DANE-TA {record}: {problem}")),
                }
            }
        }
        let reason = if problems.is_empty() {
            format!(
                "no TLSA record of {} matches the certificate chain",
                self.owner
            )
        } else {
            format!(
                "the certificate does not verify with the TLSA records of {}: {}",
                self.owner,
                problems.join("; ")
            )
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(NoMatch(reason))),
        )))
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::digest;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn spki_sha256(key: &rcgen::KeyPair) -> Vec<u8> {
        digest::digest(&digest::SHA256, &key.public_key_der())
            .as_ref()
            .to_vec()
    }

    fn verify(
        verifier: &DaneVerifier,
        chain: &[CertificateDer<'static>],
        name: &str,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verifier.verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
    }

    /// A CA and a certificate it issued for `name`, as a chain (leaf, CA).
    fn issued(name: &str) -> (rcgen::KeyPair, Vec<CertificateDer<'static>>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca_cert, &ca_key)
            .unwrap();
        (ca_key, vec![leaf.der().clone(), ca_cert.der().clone()])
    }

    #[test]
    fn dane_ee_matches_the_key_whatever_the_name() {
        let key = rcgen::generate_simple_self_signed(vec!["other.test".to_owned()]).unwrap();
        let chain = vec![key.cert.der().clone()];
        let record = Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: spki_sha256(&key.key_pair),
        };
        let verifier = DaneVerifier::new("_25._tcp.mx.test".into(), vec![record], provider());
        assert!(verify(&verifier, &chain, "mx.test").is_ok());

        let stranger = rcgen::generate_simple_self_signed(vec!["mx.test".to_owned()]).unwrap();
        let err = verify(&verifier, &[stranger.cert.der().clone()], "mx.test").unwrap_err();
        assert!(
            err.to_string()
                .contains("no TLSA record of _25._tcp.mx.test matches"),
            "{err}"
        );
    }

    #[test]
    fn dane_ta_needs_a_chain_to_the_anchor_and_the_mx_name() {
        let (ca_key, chain) = issued("mx.test");
        let record = Tlsa {
            usage: 2,
            selector: 1,
            matching: 1,
            data: spki_sha256(&ca_key),
        };
        let verifier =
            DaneVerifier::new("_25._tcp.mx.test".into(), vec![record.clone()], provider());
        assert!(verify(&verifier, &chain, "mx.test").is_ok());
        // The name is the MX host's.
        let err = verify(&verifier, &chain, "other.test").unwrap_err();
        assert!(err.to_string().contains("DANE-TA 2 1 1"), "{err}");
        // Another CA's certificate for the right name.
        let (_, stranger) = issued("mx.test");
        assert!(verify(&verifier, &stranger, "mx.test").is_err());
        // A DANE-TA record does not make the anchor's key an end entity.
        let ee_only = DaneVerifier::new(
            "_25._tcp.mx.test".into(),
            vec![Tlsa { usage: 3, ..record }],
            provider(),
        );
        assert!(verify(&ee_only, &chain, "mx.test").is_err());
    }
}
