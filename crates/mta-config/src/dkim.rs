//! `[dkim]`: DKIM signing of outbound mail (RFC 6376), one `[[dkim.sign]]`
//! table per signature.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[dkim]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DkimConfig {
    /// The signatures: a message gets every table whose `domain` is its
    /// From: domain (two tables for one domain dual-sign).
    pub sign: Vec<DkimSign>,
}

/// A signing algorithm (RFC 8301: rsa-sha256; RFC 8463: ed25519-sha256).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum DkimAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
    /// Ed25519 over SHA-256.
    #[serde(rename = "ed25519-sha256")]
    Ed25519Sha256,
}

impl DkimAlgorithm {
    /// The name `a=` and the configuration use.
    pub fn as_str(self) -> &'static str {
        match self {
            DkimAlgorithm::RsaSha256 => "rsa-sha256",
            DkimAlgorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }
}

/// The header fields signed by default (relaxed/relaxed). `From`,
/// `Subject`, `To` and `Date` are over-signed: one more time than the
/// message has them, so none can be added after signing.
pub const DEFAULT_SIGNED_HEADERS: &[&str] = &[
    "From",
    "From",
    "Subject",
    "Subject",
    "To",
    "To",
    "Date",
    "Date",
    "Cc",
    "Reply-To",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Sender",
];

/// One `[[dkim.sign]]` table: one signature.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimSign {
    /// `d=`: the signing domain, matched against the From: domain.
    pub domain: String,
    /// `s=`: the selector (`<selector>._domainkey.<domain>` holds the
    /// public key).
    pub selector: String,
    /// The private key: a PEM file as `openssl genpkey` (PKCS#8) or
    /// `openssl genrsa` (PKCS#1) writes it.
    pub key: PathBuf,
    /// Must match the key's type when given; otherwise taken from it.
    #[serde(default)]
    pub algorithm: Option<DkimAlgorithm>,
    /// Also sign mail whose From: domain is a subdomain of `domain`
    /// (DMARC's relaxed alignment), unless a table names it exactly.
    #[serde(default)]
    pub subdomains: bool,
    /// `x=`: signatures expire this long after signing. Unset: never.
    #[serde(default, with = "humantime_serde::option")]
    pub expire: Option<Duration>,
    /// The header fields to sign, a name given twice being over-signed.
    /// Default: [`DEFAULT_SIGNED_HEADERS`].
    #[serde(default)]
    pub headers: Option<Vec<String>>,
}

impl DkimSign {
    /// The header fields this table signs.
    pub fn signed_headers(&self) -> Vec<String> {
        match &self.headers {
            Some(h) => h.clone(),
            None => DEFAULT_SIGNED_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
        }
    }
}

impl DkimConfig {
    pub(crate) fn check(&self, problem: &mut impl FnMut(&str, String)) {
        let mut seen = BTreeSet::new();
        for (i, table) in self.sign.iter().enumerate() {
            let at = |key: &str| format!("dkim.sign[{i}].{key}");
            if !is_domain(&table.domain) {
                problem(
                    &at("domain"),
                    format!("{:?} is not a domain name", table.domain),
                );
            }
            if !is_domain(&table.selector) {
                problem(
                    &at("selector"),
                    format!(
                        "{:?} is not a selector (labels of letters, digits and '-', separated by '.')",
                        table.selector
                    ),
                );
            }
            if !seen.insert((
                table.domain.to_ascii_lowercase(),
                table.selector.to_ascii_lowercase(),
            )) {
                problem(
                    &at("selector"),
                    format!(
                        "{} and {} are given twice: one key per selector",
                        table.domain, table.selector
                    ),
                );
            }
            if !table.key.is_file() {
                problem(
                    &at("key"),
                    format!("{} is not a readable file", table.key.display()),
                );
            }
            if table.expire.is_some_and(|e| e.as_secs() == 0) {
                problem(&at("expire"), "must be at least one second".into());
            }
            if let Some(headers) = &table.headers {
                if !headers.iter().any(|h| h.eq_ignore_ascii_case("from")) {
                    problem(
                        &at("headers"),
                        "must include From (RFC 6376 section 5.4)".into(),
                    );
                }
                if let Some(bad) = headers
                    .iter()
                    .find(|h| h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':'))
                {
                    problem(
                        &at("headers"),
                        format!("{bad:?} is not a header field name"),
                    );
                }
            }
        }
    }
}

/// A DNS name of LDH labels (a selector is one too).
fn is_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_domain("example.com"));
        assert!(is_domain("s2026"));
        assert!(!is_domain(""));
        assert!(!is_domain("a..b"));
        assert!(!is_domain("-a.b"));
        assert!(!is_domain("a b"));
    }

    #[test]
    fn default_headers_over_sign_the_four() {
        for name in ["From", "Subject", "To", "Date"] {
            assert_eq!(
                DEFAULT_SIGNED_HEADERS
                    .iter()
                    .filter(|h| **h == name)
                    .count(),
                2,
                "{name}"
            );
        }
    }
}
