//! TLSA records (RFC 6698 section 2) as SMTP uses them (RFC 7672 section
//! 3.1): which are usable, and whether one matches a certificate.

use std::fmt;

use ring::digest;
use rustls::pki_types::CertificateDer;

/// Certificate usage DANE-TA (RFC 7218): a trust anchor the chain must
/// lead to.
pub const DANE_TA: u8 = 2;
/// Certificate usage DANE-EE: the server's own certificate or key.
pub const DANE_EE: u8 = 3;

/// One TLSA record: `usage selector matching data`.
#[derive(Clone, PartialEq, Eq)]
pub struct Tlsa {
    /// Certificate usage: 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0: the whole certificate; 1: its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0: the selected data itself; 1: its SHA-256; 2: its SHA-512.
    pub matching: u8,
    /// The association data.
    pub data: Vec<u8>,
}

impl Tlsa {
    /// From the DNS record's data.
    pub fn from_rdata(tlsa: &hickory_resolver::proto::rr::rdata::TLSA) -> Tlsa {
        Tlsa {
            usage: tlsa.cert_usage.into(),
            selector: tlsa.selector.into(),
            matching: tlsa.matching.into(),
            data: tlsa.cert_data.clone(),
        }
    }

    /// True when SMTP can use it (RFC 7672 section 3.1.3): DANE-TA or
    /// DANE-EE, a known selector and matching type, and a digest of the
    /// right length. PKIX-TA and PKIX-EE (0 and 1) are unusable for SMTP,
    /// which has no agreed set of certificate authorities.
    pub fn is_usable(&self) -> bool {
        let length_ok = match self.matching {
            0 => !self.data.is_empty(),
            1 => self.data.len() == digest::SHA256_OUTPUT_LEN,
            2 => self.data.len() == digest::SHA512_OUTPUT_LEN,
            _ => false,
        };
        matches!(self.usage, DANE_TA | DANE_EE) && self.selector <= 1 && length_ok
    }

    /// True when `cert` (DER) is what the record names, by its selector
    /// and matching type. A certificate that cannot be parsed for its
    /// public key matches no selector-1 record.
    pub fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        let selected: Vec<u8> = match self.selector {
            0 => cert.as_ref().to_vec(),
            1 => match webpki::EndEntityCert::try_from(cert) {
                Ok(parsed) => parsed.subject_public_key_info().as_ref().to_vec(),
                Err(_) => return false,
            },
            _ => return false,
        };
        let hashed = match self.matching {
            0 => selected,
            1 => digest::digest(&digest::SHA256, &selected).as_ref().to_vec(),
            2 => digest::digest(&digest::SHA512, &selected).as_ref().to_vec(),
            _ => return false,
        };
        // Public data on both sides: no need for a constant-time compare.
        hashed == self.data
    }
}

impl fmt::Debug for Tlsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Tlsa {
    /// `3 1 1 a1b2...`, as in a zone file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} ", self.usage, self.selector, self.matching)?;
        for byte in &self.data {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data,
        }
    }

    #[test]
    fn only_dane_ta_and_ee_with_known_parameters_are_usable() {
        let sha256 = vec![0; 32];
        assert!(record(3, 1, 1, sha256.clone()).is_usable());
        assert!(record(2, 0, 2, vec![0; 64]).is_usable());
        assert!(record(3, 0, 0, vec![1]).is_usable());
        assert!(!record(1, 1, 1, sha256.clone()).is_usable());
        assert!(!record(0, 0, 1, sha256.clone()).is_usable());
        assert!(!record(3, 2, 1, sha256.clone()).is_usable());
        assert!(!record(3, 1, 3, sha256.clone()).is_usable());
        // A SHA-256 of the wrong length.
        assert!(!record(3, 1, 1, vec![0; 31]).is_usable());
        assert!(!record(3, 0, 0, Vec::new()).is_usable());
    }

    #[test]
    fn each_selector_and_matching_type_matches_its_certificate() {
        let key = rcgen::generate_simple_self_signed(vec!["mx.test".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["mx.test".to_owned()]).unwrap();
        let cert = key.cert.der();
        let spki = key.key_pair.public_key_der();
        let sha256 = |b: &[u8]| digest::digest(&digest::SHA256, b).as_ref().to_vec();
        let sha512 = |b: &[u8]| digest::digest(&digest::SHA512, b).as_ref().to_vec();
        for tlsa in [
            record(3, 0, 0, cert.to_vec()),
            record(3, 0, 1, sha256(cert)),
            record(3, 0, 2, sha512(cert)),
            record(3, 1, 0, spki.clone()),
            record(3, 1, 1, sha256(&spki)),
            record(3, 1, 2, sha512(&spki)),
        ] {
            assert!(tlsa.matches(cert), "{tlsa}");
            assert!(!tlsa.matches(other.cert.der()), "{tlsa}");
        }
        assert_eq!(record(3, 1, 1, vec![0xab, 0x01]).to_string(), "3 1 1 ab01");
    }
}
