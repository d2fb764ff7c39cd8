//! New keys for `mta-init dkim keygen`, and the DNS record that
//! publishes each (RFC 6376 section 3.6.1; RFC 8463 for Ed25519).

use base64::Engine as _;
use mta_config::DkimAlgorithm;
use ring::signature::KeyPair as _;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

use crate::error::DkimError;
use crate::key::{GOOD_RSA_BITS, MIN_RSA_BITS};

/// PKCS#8 v1 of an Ed25519 key, up to its 32-octet seed: SEQUENCE {
/// version 0, AlgorithmIdentifier { 1.3.101.112 }, OCTET STRING {
/// OCTET STRING (32) } }.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A new key pair.
pub struct NewKey {
    /// The private key, PKCS#8 PEM (as `openssl genpkey` writes it).
    pub pem: String,
    /// The TXT record's value: `v=DKIM1; k=...; p=...`.
    pub record: String,
}

/// Makes a key: Ed25519, or RSA of `rsa_bits` (at least 1024).
pub fn generate(algorithm: DkimAlgorithm, rsa_bits: usize) -> Result<NewKey, DkimError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    match algorithm {
        DkimAlgorithm::Ed25519Sha256 => {
            // PKCS#8 version 1 (RFC 8410), as OpenSSL writes and reads
            // it; ring's own form (version 2) OpenSSL 3 refuses.
            let mut seed = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
                .map_err(|e| DkimError::Generate(e.to_string()))?;
            let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
                .map_err(|e| DkimError::Generate(e.to_string()))?;
            let mut der = ED25519_PKCS8_V1_PREFIX.to_vec();
            der.extend_from_slice(&seed);
            seed.fill(0);
            Ok(NewKey {
                pem: pem("PRIVATE KEY", &der),
                record: format!(
                    "v=DKIM1; k=ed25519; p={}",
                    b64.encode(pair.public_key().as_ref())
                ),
            })
        }
        DkimAlgorithm::RsaSha256 => {
            if rsa_bits < MIN_RSA_BITS {
                return Err(DkimError::Generate(format!(
                    "{rsa_bits} bits: RFC 8301 needs at least {MIN_RSA_BITS} ({GOOD_RSA_BITS} advised)"
                )));
            }
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, rsa_bits)
                .map_err(|e| DkimError::Generate(e.to_string()))?;
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| DkimError::Generate(e.to_string()))?;
            let public = rsa::RsaPublicKey::from(&key)
                .to_public_key_der()
                .map_err(|e| DkimError::Generate(e.to_string()))?;
            Ok(NewKey {
                pem: pem.to_string(),
                record: format!("v=DKIM1; k=rsa; p={}", b64.encode(public.as_bytes())),
            })
        }
    }
}

/// The record as a zone-file line, the value split into strings of at
/// most 255 octets (a TXT record's strings are that long at most; the
/// resolver joins them).
pub fn zone_line(selector: &str, domain: &str, record: &str) -> String {
    let strings: Vec<String> = record
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    let name = format!("{selector}._domainkey.{}.", domain.trim_end_matches('.'));
    if strings.len() == 1 {
        format!("{name} IN TXT {}", strings[0])
    } else {
        format!("{name} IN TXT ( {} )", strings.join(" "))
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_records_are_one_string() {
        let line = zone_line("s1", "example.com", "v=DKIM1; k=ed25519; p=abc");
        assert_eq!(
            line,
            "s1._domainkey.example.com. IN TXT \"v=DKIM1; k=ed25519; p=abc\""
        );
    }

    #[test]
    fn long_records_are_split_at_255_octets() {
        let record = format!("v=DKIM1; k=rsa; p={}", "A".repeat(600));
        let line = zone_line("s", "d.test", &record);
        let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 3);
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(strings.concat(), record);
    }

    #[test]
    fn rsa_under_1024_bits_is_refused() {
        assert!(generate(DkimAlgorithm::RsaSha256, 512).is_err());
    }
}
