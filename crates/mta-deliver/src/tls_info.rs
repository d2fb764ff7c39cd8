//! What protected one delivery: the TLS version and cipher, and whether
//! the server's certificate was verified, and on whose word.

use std::fmt;

/// Who required the certificate check that a connection passed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verification {
    /// Not verified: opportunistic TLS (RFC 7435) takes any certificate.
    #[default]
    None,
    /// The operator's `required` policy: verified against the trust
    /// anchors for the host's name.
    Ca,
    /// The domain's MTA-STS policy in enforce mode (RFC 8461): the host
    /// matched the policy and its certificate was verified for its name.
    MtaSts,
    /// DANE (RFC 7672): the certificate matched the host's DNSSEC-signed
    /// TLSA records.
    Dane,
}

impl Verification {
    /// Its word in the delivery log and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Verification::None => "none",
            Verification::Ca => "ca",
            Verification::MtaSts => "mta-sts",
            Verification::Dane => "dane",
        }
    }

    /// Every value, in order, for the metrics.
    pub const ALL: [Verification; 4] = [
        Verification::None,
        Verification::Ca,
        Verification::MtaSts,
        Verification::Dane,
    ];
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TLS of one connection, as the delivery log shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// Who had the certificate verified, if anyone.
    pub verified: Verification,
}

impl TlsInfo {
    /// The TLS of `conn`, verified on `verified`'s word.
    pub fn of(conn: &rustls::CommonState, verified: Verification) -> TlsInfo {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            Some(v) => format!("{v:?}"),
            None => "TLS".to_owned(),
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        TlsInfo {
            version,
            cipher,
            verified,
        }
    }
}

impl fmt::Display for TlsInfo {
    /// `TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384, verified by mta-sts`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} with cipher {}", self.version, self.cipher)?;
        match self.verified {
            Verification::None => f.write_str(", not verified"),
            v => write!(f, ", verified by {v}"),
        }
    }
}
