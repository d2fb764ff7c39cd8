//! Private keys: a PEM file as `openssl genpkey` (PKCS#8, RSA or Ed25519)
//! or `openssl genrsa` (PKCS#1) writes it.
//!
//! RSA keys of 2048 bits and more sign with ring (as rustls does). ring
//! refuses smaller ones; RFC 8301 still allows 1024 bits, so those sign
//! with RustCrypto's `rsa`, and loading them warns. Under 1024 bits a key
//! is refused (RFC 8301 section 3.2).

use std::path::Path;

use mail_auth::common::crypto::{Algorithm, CryptoError, Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::Writable;
use mta_config::DkimAlgorithm;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use crate::error::DkimError;

/// RFC 8301 section 3.2: signers MUST use at least 1024 bits.
pub const MIN_RSA_BITS: usize = 1024;
/// RFC 8301 section 3.2: signers SHOULD use at least 2048 bits.
pub const GOOD_RSA_BITS: usize = 2048;

/// A private key ready to sign.
pub(crate) enum PrivateKey {
    /// RSA of 2048 bits or more, with ring.
    Rsa(RsaKey<Sha256>),
    /// RSA of 1024 to 2047 bits, with RustCrypto's `rsa`.
    SmallRsa(SmallRsaKey),
    /// Ed25519 (RFC 8463), with ring.
    Ed25519(Ed25519Key),
}

/// A key as loaded from its file.
pub(crate) struct LoadedKey {
    pub key: PrivateKey,
    pub algorithm: DkimAlgorithm,
    /// The RSA modulus's size; 256 for Ed25519.
    pub bits: usize,
}

/// Reads and checks the key at `path`.
pub(crate) fn load(path: &Path) -> Result<LoadedKey, DkimError> {
    let pem = std::fs::read(path).map_err(|source| DkimError::Read {
        path: path.to_owned(),
        source,
    })?;
    let bad = |why: String| DkimError::Key {
        path: path.to_owned(),
        why,
    };
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| bad(format!("no PEM private key in it ({e})")))?;
    match &der {
        PrivateKeyDer::Pkcs8(pkcs8) => {
            if let Ok(key) = Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der()) {
                return Ok(LoadedKey {
                    key: PrivateKey::Ed25519(key),
                    algorithm: DkimAlgorithm::Ed25519Sha256,
                    bits: 256,
                });
            }
            let rsa = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8.secret_pkcs8_der())
                .map_err(|_| bad("not an RSA or Ed25519 private key".into()))?;
            rsa_key(rsa, &der).map_err(bad)
        }
        PrivateKeyDer::Pkcs1(pkcs1) => {
            let rsa = rsa::RsaPrivateKey::from_pkcs1_der(pkcs1.secret_pkcs1_der())
                .map_err(|e| bad(format!("not an RSA private key ({e})")))?;
            rsa_key(rsa, &der).map_err(bad)
        }
        _ => Err(bad(
            "an EC key: DKIM signs with RSA (rsa-sha256) or Ed25519 (ed25519-sha256)".into(),
        )),
    }
}

fn rsa_key(rsa: rsa::RsaPrivateKey, der: &PrivateKeyDer<'_>) -> Result<LoadedKey, String> {
    let bits = rsa.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "an RSA key of {bits} bits: RFC 8301 needs at least {MIN_RSA_BITS} (2048 advised)"
        ));
    }
    let key = if bits >= GOOD_RSA_BITS {
        PrivateKey::Rsa(RsaKey::from_key_der(der.clone_key()).map_err(|e| e.to_string())?)
    } else {
        PrivateKey::SmallRsa(SmallRsaKey(rsa::pkcs1v15::SigningKey::new(rsa)))
    };
    Ok(LoadedKey {
        key,
        algorithm: DkimAlgorithm::RsaSha256,
        bits,
    })
}

/// An RSA key ring will not sign with (1024 to 2047 bits).
pub(crate) struct SmallRsaKey(rsa::pkcs1v15::SigningKey<rsa::sha2::Sha256>);

impl SigningKey for SmallRsaKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        use rsa::signature::{SignatureEncoding, Signer};
        let mut data = Vec::with_capacity(256);
        input.write(&mut data);
        let signature = self
            .0
            .try_sign(&data)
            .map_err(|e| mail_auth::Error::Crypto(CryptoError::Library(e.to_string())))?;
        Ok(signature.to_vec())
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::RsaSha256
    }
}
