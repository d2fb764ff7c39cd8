//! DANE for SMTP (RFC 7672): the TLSA records of a domain's MX hosts,
//! looked up through a DNSSEC-validating resolver before delivery.
//!
//! [`Dane::policy`] asks the validating resolver (`dnssec.rs`) whether
//! the domain's MX records are secure (section 2.2.1); if they are, for
//! each MX host whose addresses are secure too (section 2.2.2), it looks
//! up `_<port>._tcp.<host>` TLSA (`tlsa.rs`, section 2.2.3). What it
//! finds, by host, is a [`DanePolicy`]; the client's
//! [`TlsRequirement::Dane`](crate::TlsRequirement::Dane) enforces it
//! with `verifier.rs`.
//!
//! The routing resolver (`mx.rs`) stays as it is and still chooses the
//! hosts: a second, validating resolver answers only DANE's questions,
//! so a DNSSEC problem never stops delivery to a domain that does not
//! use DANE, and one that does defers with 4.7.5 instead.

pub(crate) mod dnssec;
pub mod tlsa;
pub(crate) mod verifier;

use std::collections::BTreeMap;
use std::sync::Arc;

use hickory_resolver::proto::dnssec::TrustAnchors;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::mx::domain_name;
use crate::throttle::normalize;
use crate::{ClientError, ResolverConfig, Target};
use dnssec::{query, Checked};
use tlsa::Tlsa;

/// What DANE requires of the MX hosts of one domain: only the hosts with
/// secure TLSA records (or whose lookup failed) are listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DanePolicy {
    /// The recipient domain.
    pub domain: String,
    /// By MX host (lower case, no trailing dot).
    pub hosts: BTreeMap<String, HostTlsa>,
}

/// The secure TLSA records of one MX host, sorted by what they require.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostTlsa {
    /// Usable records: TLS is required and the certificate must match
    /// one of them.
    Usable {
        /// `_25._tcp.mx.example.com`.
        owner: String,
        /// The usable records (unusable ones left out).
        records: Vec<Tlsa>,
    },
    /// Secure records, none usable (RFC 7672 section 2.2: TLS is still
    /// required, without authentication, Postfix's "encrypt").
    Unusable,
    /// The lookup failed (bogus, SERVFAIL, timeout): the host is not
    /// tried (section 2.2.3), with this reason.
    Failed(String),
}

impl DanePolicy {
    /// What DANE says of `host`; None: DANE does not apply to it.
    pub fn host(&self, host: &str) -> Option<&HostTlsa> {
        self.hosts.get(&normalize(host))
    }

    /// True when some host has usable records (an explicit `tls_policy`
    /// overriding it is worth a warning).
    pub fn has_usable(&self) -> bool {
        self.hosts
            .values()
            .any(|h| matches!(h, HostTlsa::Usable { .. }))
    }
}

/// The DANE lookups. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Dane {
    resolver: crate::Resolver,
    port: u16,
}

impl Dane {
    /// The lookups for `[delivery.dane]` (None when disabled), asking the
    /// name servers of `resolver` with DNSSEC validation from the
    /// configured trust anchors (the root's when unset), for TLSA of
    /// `port`. Fails when the trust anchor file cannot be read.
    pub fn new(
        config: &mta_config::DaneConfig,
        resolver: &ResolverConfig,
        port: u16,
    ) -> Result<Option<Dane>, ClientError> {
        if !config.enabled {
            return Ok(None);
        }
        let anchors = match &config.trust_anchor {
            Some(path) => TrustAnchors::from_file(path).map_err(|e| ClientError::TrustAnchor {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            None => TrustAnchors::default(),
        };
        if anchors.is_empty() {
            return Err(ClientError::TrustAnchor {
                path: config.trust_anchor.clone().unwrap_or_default(),
                reason: "no DNSKEY record".into(),
            });
        }
        let resolver = crate::Resolver::validating(resolver, Arc::new(anchors))
            .map_err(|e| ClientError::Resolver(e.to_string()))?;
        Ok(Some(Dane { resolver, port }))
    }

    /// What DANE requires for delivery to `domain` through `targets` (its
    /// MX hosts, as routing found them). None when DANE does not apply:
    /// the MX records are not signed, or no host has secure TLSA records.
    /// Never fails: a failed lookup is a host's [`HostTlsa::Failed`].
    pub async fn policy(&self, domain: &str, targets: &[Target]) -> Option<DanePolicy> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let name = domain_name(&domain).ok()?;
        let mut hosts = BTreeMap::new();
        match query(&self.resolver, &name, RecordType::MX).await {
            Checked::Insecure => {
                debug!(%domain, "MX records not signed: no DANE");
                return None;
            }
            Checked::Failed(reason) => {
                // RFC 7672 section 2.2.1: a bogus MX lookup is a failure,
                // not a reason to go on without DANE.
                warn!(%domain, %reason, "DNSSEC lookup of the MX records failed");
                for target in targets {
                    hosts.insert(
                        normalize(&target.host),
                        HostTlsa::Failed(format!("DNSSEC lookup of the MX records: {reason}")),
                    );
                }
            }
            Checked::Secure(_) => {
                // The hosts at once, as routing looks them up.
                let mut lookups = JoinSet::new();
                for target in targets {
                    let dane = self.clone();
                    let host = normalize(&target.host);
                    lookups.spawn(async move {
                        let found = dane.host(&host).await;
                        (host, found)
                    });
                }
                while let Some(joined) = lookups.join_next().await {
                    match joined {
                        Ok((host, Some(found))) => {
                            hosts.insert(host, found);
                        }
                        Ok((_, None)) => {}
                        Err(e) => {
                            // A lookup that panicked: no host is tried
                            // without knowing what DANE says of it.
                            for target in targets {
                                hosts.entry(normalize(&target.host)).or_insert_with(|| {
                                    HostTlsa::Failed(format!("TLSA lookup: {e}"))
                                });
                            }
                        }
                    }
                }
            }
        }
        if hosts.is_empty() {
            return None;
        }
        debug!(%domain, ?hosts, "DANE applies");
        Some(DanePolicy { domain, hosts })
    }

    /// What DANE says of one MX host whose MX record was secure.
    async fn host(&self, host: &str) -> Option<HostTlsa> {
        let name = domain_name(host).ok()?;
        // Section 2.2.2: TLSA only for a host whose addresses are secure.
        let (v6, v4) = tokio::join!(
            query(&self.resolver, &name, RecordType::AAAA),
            query(&self.resolver, &name, RecordType::A)
        );
        for answer in [&v6, &v4] {
            match answer {
                Checked::Insecure => {
                    debug!(%host, "addresses not signed: no DANE for the host");
                    return None;
                }
                Checked::Failed(reason) => {
                    return Some(HostTlsa::Failed(format!(
                        "DNSSEC lookup of the host's addresses: {reason}"
                    )));
                }
                Checked::Secure(_) => {}
            }
        }
        let owner = tlsa_owner(self.port, &name)?;
        let shown = owner.to_ascii().trim_end_matches('.').to_owned();
        match query(&self.resolver, &owner, RecordType::TLSA).await {
            Checked::Insecure => None,
            Checked::Secure(records) if records.is_empty() => None,
            Checked::Secure(records) => {
                let all: Vec<Tlsa> = records
                    .iter()
                    .filter_map(|r| match r {
                        RData::TLSA(tlsa) => Some(Tlsa::from_rdata(tlsa)),
                        _ => None,
                    })
                    .collect();
                let usable: Vec<Tlsa> = all.iter().filter(|r| r.is_usable()).cloned().collect();
                Some(if usable.is_empty() {
                    debug!(owner = %shown, records = ?all, "no usable TLSA record: TLS required, not authenticated");
                    HostTlsa::Unusable
                } else {
                    HostTlsa::Usable {
                        owner: shown,
                        records: usable,
                    }
                })
            }
            Checked::Failed(reason) => {
                warn!(owner = %shown, %reason, "TLSA lookup failed");
                Some(HostTlsa::Failed(format!("TLSA lookup: {reason}")))
            }
        }
    }
}

/// `_<port>._tcp.<host>` (RFC 6698 section 3).
fn tlsa_owner(port: u16, host: &Name) -> Option<Name> {
    let prefix = Name::from_ascii(format!("_{port}._tcp")).ok()?;
    prefix.append_domain(host).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_name_has_the_port() {
        let host = domain_name("mx.example.test").unwrap();
        assert_eq!(
            tlsa_owner(2525, &host).unwrap().to_ascii(),
            "_2525._tcp.mx.example.test."
        );
    }
}
