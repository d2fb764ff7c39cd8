//! The configured signatures, and which of them a message gets.

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use mta_config::{DkimAlgorithm, DkimSign};

use crate::error::DkimError;
use crate::key::{self, PrivateKey, SmallRsaKey, GOOD_RSA_BITS};

/// Every `[[dkim.sign]]` table with its key loaded; immutable, replaced
/// whole at a graceful restart (a key rotation is a reload).
#[derive(Default)]
pub struct Signers {
    keys: Vec<DomainKey>,
}

/// One signature: a domain, a selector and a key.
struct DomainKey {
    /// Lower case.
    domain: String,
    selector: String,
    subdomains: bool,
    algorithm: DkimAlgorithm,
    bits: usize,
    signer: Prepared,
}

/// mail-auth's signer is generic over the key type.
enum Prepared {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    SmallRsa(DkimSigner<SmallRsaKey, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// What [`Signers::load`] read: the signers and advice on their keys.
pub struct Loaded {
    /// Ready to sign.
    pub signers: Signers,
    /// One line per key worth a warning (an RSA key under 2048 bits).
    pub warnings: Vec<String>,
}

/// The signatures made for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The `DKIM-Signature:` header fields, each folded and ending in
    /// CRLF, to put above the message's first header field.
    pub fields: String,
    /// Who signed, in the order of `fields`.
    pub by: Vec<SignedBy>,
}

/// One signature's `d=` and `s=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBy {
    /// `d=`.
    pub domain: String,
    /// `s=`.
    pub selector: String,
}

impl std::fmt::Display for SignedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.domain, self.selector)
    }
}

impl std::fmt::Debug for Signers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.describe()).finish()
    }
}

impl Signers {
    /// Loads every table's key; the first key that cannot be used is the
    /// error (never a silent unsigned send).
    pub fn load(tables: &[DkimSign]) -> Result<Loaded, DkimError> {
        let mut keys = Vec::with_capacity(tables.len());
        let mut warnings = Vec::new();
        for table in tables {
            let loaded = key::load(&table.key)?;
            if let Some(wanted) = table.algorithm {
                if wanted != loaded.algorithm {
                    return Err(DkimError::Key {
                        path: table.key.clone(),
                        why: format!(
                            "algorithm is {} but the key is for {}",
                            wanted.as_str(),
                            loaded.algorithm.as_str()
                        ),
                    });
                }
            }
            if loaded.algorithm == DkimAlgorithm::RsaSha256 && loaded.bits < GOOD_RSA_BITS {
                warnings.push(format!(
                    "dkim: the key of {} selector {} ({}) has {} bits: RFC 8301 advises at least \
                     {GOOD_RSA_BITS}, and receivers may ignore shorter ones",
                    table.domain,
                    table.selector,
                    table.key.display(),
                    loaded.bits
                ));
            }
            let domain = table.domain.trim_end_matches('.').to_ascii_lowercase();
            let headers = table.signed_headers();
            let expire = table.expire.map(|e| e.as_secs());
            let signer = match loaded.key {
                PrivateKey::Rsa(k) => Prepared::Rsa(build(k, &domain, table, headers, expire)),
                PrivateKey::SmallRsa(k) => {
                    Prepared::SmallRsa(build(k, &domain, table, headers, expire))
                }
                PrivateKey::Ed25519(k) => {
                    Prepared::Ed25519(build(k, &domain, table, headers, expire))
                }
            };
            keys.push(DomainKey {
                domain,
                selector: table.selector.clone(),
                subdomains: table.subdomains,
                algorithm: loaded.algorithm,
                bits: loaded.bits,
                signer,
            });
        }
        Ok(Loaded {
            signers: Signers { keys },
            warnings,
        })
    }

    /// No signature configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// One line per key, for the log at start and reload:
    /// `example.com s2026 ed25519-sha256 256 bits`.
    pub fn describe(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| {
                format!(
                    "{} {} {} {} bits{}",
                    k.domain,
                    k.selector,
                    k.algorithm.as_str(),
                    k.bits,
                    if k.subdomains {
                        " (and subdomains)"
                    } else {
                        ""
                    }
                )
            })
            .collect()
    }

    /// Whether mail from `from_domain` gets a signature.
    pub fn signs_for(&self, from_domain: &str) -> bool {
        !self.chosen(from_domain).is_empty()
    }

    /// The keys for mail whose From: domain is `from_domain`: the tables
    /// naming it exactly; else those of its nearest parent domain that
    /// sign for subdomains.
    fn chosen(&self, from_domain: &str) -> Vec<&DomainKey> {
        let from = from_domain.trim_end_matches('.').to_ascii_lowercase();
        let exact: Vec<_> = self.keys.iter().filter(|k| k.domain == from).collect();
        if !exact.is_empty() {
            return exact;
        }
        let mut parent = from.as_str();
        while let Some((_, rest)) = parent.split_once('.') {
            let found: Vec<_> = self
                .keys
                .iter()
                .filter(|k| k.subdomains && k.domain == rest)
                .collect();
            if !found.is_empty() {
                return found;
            }
            parent = rest;
        }
        Vec::new()
    }

    /// Signs the message made of `chunks` (header and body, in order) with
    /// every key for `from_domain`; `None` when there is none. CPU work
    /// (an RSA-2048 signature is about a millisecond, and the body is
    /// hashed): call it off the async workers.
    pub fn sign(&self, from_domain: &str, chunks: &[&[u8]]) -> Result<Option<Signed>, DkimError> {
        let chosen = self.chosen(from_domain);
        if chosen.is_empty() {
            return Ok(None);
        }
        let mut fields = String::new();
        let mut by = Vec::with_capacity(chosen.len());
        for key in chosen {
            let signature = match &key.signer {
                Prepared::Rsa(s) => s.sign_chained(chunks.iter().copied()),
                Prepared::SmallRsa(s) => s.sign_chained(chunks.iter().copied()),
                Prepared::Ed25519(s) => s.sign_chained(chunks.iter().copied()),
            }
            .map_err(|e| DkimError::Sign {
                domain: key.domain.clone(),
                selector: key.selector.clone(),
                why: e.to_string(),
            })?;
            fields.push_str(&signature.to_header());
            by.push(SignedBy {
                domain: key.domain.clone(),
                selector: key.selector.clone(),
            });
        }
        Ok(Some(Signed { fields, by }))
    }
}

fn build<K: SigningKey>(
    key: K,
    domain: &str,
    table: &DkimSign,
    headers: Vec<String>,
    expire: Option<u64>,
) -> DkimSigner<K, Done> {
    let signer = DkimSigner::from_key(key)
        .domain(domain)
        .selector(table.selector.as_str())
        .headers(headers)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed);
    match expire {
        Some(secs) => signer.expiration(secs),
        None => signer,
    }
}
