//! What TLS one delivery must have, and who says so.
//!
//! Precedence, strongest word first: the operator's explicit
//! `[delivery.tls_policy]` entry for the domain, then a policy the domain
//! publishes (DANE before MTA-STS, RFC 8461 section 2), then `[delivery]
//! tls`. An explicit entry that overrides a published enforce policy or
//! usable TLSA records is logged (once per policy id, once per domain for
//! DANE): the operator may not know the domain asks for more.
//!
//! DANE decides per MX host: a host with secure TLSA records follows
//! them whatever MTA-STS says; a host without follows the rest of the
//! precedence (MTA-STS, then `[delivery] tls`).

use std::collections::HashSet;

use parking_lot::Mutex;

use crate::dane::tlsa::Tlsa;
use crate::dane::{DanePolicy, HostTlsa};
use crate::sts::cache::CachedPolicy;
use crate::sts::policy::Mode;
use crate::{ClientConfig, TlsPolicy, Verification};

/// What a domain publishes about TLS for mail to it, as looked up for one
/// delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Its MTA-STS policy in force (enforce or testing).
    pub mta_sts: Option<CachedPolicy>,
    /// What DANE requires of its MX hosts, when their TLSA records are
    /// signed.
    pub dane: Option<DanePolicy>,
}

/// The TLS one delivery must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsRequirement {
    /// The configuration's policy: an explicit `tls_policy` entry or
    /// `[delivery] tls`.
    Configured(TlsPolicy),
    /// A published policy that must hold: only the hosts it names, over
    /// TLS with a certificate valid for the host's name.
    Enforced(HostPolicy),
    /// A published policy in testing mode: delivery as configured, and
    /// what the policy would have refused is logged.
    Testing {
        /// The configured policy delivery follows.
        configured: TlsPolicy,
        /// The policy checked without being enforced.
        policy: HostPolicy,
    },
    /// DANE (RFC 7672) for the hosts its policy lists, `others` for the
    /// rest.
    Dane {
        /// The TLSA records by host.
        policy: DanePolicy,
        /// The requirement of a host without TLSA records (never `Dane`).
        others: Box<TlsRequirement>,
    },
}

/// What one host of a destination must offer.
#[derive(Clone, Copy, Debug)]
pub(crate) enum HostRule<'a> {
    /// DANE with usable records: TLS, and a certificate matching them.
    Dane {
        /// `_25._tcp.mx.example.com`.
        owner: &'a str,
        /// The usable records.
        records: &'a [Tlsa],
    },
    /// DANE with only unusable records: TLS without authentication.
    Encrypt,
    /// DANE's lookup failed: not tried, for this reason.
    Failed(&'a str),
    /// Another requirement (never `Dane`).
    Other(&'a TlsRequirement),
}

/// A published policy's rule for the hosts of one domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPolicy {
    /// Who published it (what a verified connection is labelled).
    pub source: Verification,
    /// The policy domain.
    pub domain: String,
    /// The hosts it allows (MTA-STS `mx` patterns, RFC 8461 section 4.1).
    pub mx: Vec<String>,
}

impl HostPolicy {
    /// True when `host` may take the domain's mail.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.mx
            .iter()
            .any(|pattern| crate::sts::policy::mx_matches(pattern, host))
    }

    /// `MTA-STS policy of example.com`, the start of every reason.
    pub fn name(&self) -> String {
        let kind = match self.source {
            Verification::Dane => "DANE",
            _ => "MTA-STS",
        };
        format!("{kind} policy of {}", self.domain)
    }
}

impl TlsRequirement {
    /// The label of a connection that meets the requirement's
    /// certificate check; None when no check is required (or, for DANE,
    /// when it depends on the host: see `for_host`).
    pub fn verification(&self) -> Option<Verification> {
        match self {
            TlsRequirement::Configured(TlsPolicy::Required) => Some(Verification::Ca),
            TlsRequirement::Enforced(policy) => Some(policy.source),
            TlsRequirement::Configured(_)
            | TlsRequirement::Testing { .. }
            | TlsRequirement::Dane { .. } => None,
        }
    }

    /// What `host` must offer.
    pub(crate) fn for_host(&self, host: &str) -> HostRule<'_> {
        let TlsRequirement::Dane { policy, others } = self else {
            return HostRule::Other(self);
        };
        match policy.host(host) {
            Some(HostTlsa::Usable { owner, records }) => HostRule::Dane { owner, records },
            Some(HostTlsa::Unusable) => HostRule::Encrypt,
            Some(HostTlsa::Failed(reason)) => HostRule::Failed(reason),
            None => HostRule::Other(others),
        }
    }
}

/// Explicit entries already warned about, by domain and policy id.
#[derive(Debug, Default)]
pub(crate) struct OverrideWarnings(Mutex<HashSet<(String, String)>>);

impl ClientConfig {
    /// The explicit `tls_policy` entry for `domain`, without regard to
    /// case or a trailing dot.
    pub fn explicit_policy(&self, domain: &str) -> Option<TlsPolicy> {
        let domain = domain.trim_end_matches('.');
        self.delivery
            .tls_policy
            .iter()
            .find(|(d, _)| d.trim_end_matches('.').eq_ignore_ascii_case(domain))
            .map(|(_, p)| *p)
    }
}

/// The requirement for `domain`, given what it publishes.
pub(crate) fn requirement(
    config: &ClientConfig,
    domain: &str,
    published: &Published,
    warned: &OverrideWarnings,
) -> TlsRequirement {
    let sts = published.mta_sts.as_ref();
    if let Some(explicit) = config.explicit_policy(domain) {
        if let Some(dane) = published.dane.as_ref().filter(|d| d.has_usable()) {
            if warned
                .0
                .lock()
                .insert((dane.domain.clone(), "dane".to_owned()))
            {
                tracing::warn!(
                    %domain,
                    tls_policy = ?explicit,
                    "[delivery.tls_policy] overrides the DANE TLSA records the domain's MX hosts publish"
                );
            }
        }
        if let Some(p) = sts.filter(|p| p.policy.mode == Mode::Enforce) {
            if warned.0.lock().insert((p.domain.clone(), p.id.clone())) {
                tracing::warn!(
                    %domain,
                    tls_policy = ?explicit,
                    mta_sts_id = %p.id,
                    "[delivery.tls_policy] overrides the MTA-STS policy in enforce mode that the domain publishes"
                );
            }
        }
        return TlsRequirement::Configured(explicit);
    }
    let others = published_sts(config, sts);
    match &published.dane {
        Some(policy) if !policy.hosts.is_empty() => TlsRequirement::Dane {
            policy: policy.clone(),
            others: Box::new(others),
        },
        _ => others,
    }
}

/// The requirement of MTA-STS, or `[delivery] tls` without a policy.
fn published_sts(config: &ClientConfig, sts: Option<&CachedPolicy>) -> TlsRequirement {
    let Some(p) = sts else {
        return TlsRequirement::Configured(config.delivery.tls);
    };
    let policy = HostPolicy {
        source: Verification::MtaSts,
        domain: p.domain.clone(),
        mx: p.policy.mx.clone(),
    };
    match p.policy.mode {
        Mode::Enforce => TlsRequirement::Enforced(policy),
        Mode::Testing => TlsRequirement::Testing {
            configured: config.delivery.tls,
            policy,
        },
        Mode::None => TlsRequirement::Configured(config.delivery.tls),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sts::policy::Policy;

    fn published(mode: Mode) -> Published {
        Published {
            mta_sts: Some(CachedPolicy {
                domain: "example.test".into(),
                id: "1".into(),
                fetched: 0,
                policy: Policy {
                    mode,
                    max_age: 86400,
                    mx: vec!["*.example.test".into()],
                },
            }),
            dane: None,
        }
    }

    fn dane(host: &str, found: HostTlsa) -> DanePolicy {
        DanePolicy {
            domain: "example.test".into(),
            hosts: [(host.to_owned(), found)].into(),
        }
    }

    #[test]
    fn dane_decides_for_its_hosts_and_mta_sts_for_the_others() {
        let warned = OverrideWarnings::default();
        let mut config = ClientConfig::default();
        let record = Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![0; 32],
        };
        let mut both = published(Mode::Enforce);
        both.dane = Some(dane(
            "mx1.example.test",
            HostTlsa::Usable {
                owner: "_25._tcp.mx1.example.test".into(),
                records: vec![record.clone()],
            },
        ));
        let req = requirement(&config, "example.test", &both, &warned);
        assert!(matches!(
            req.for_host("MX1.example.test."),
            HostRule::Dane { records, .. } if records == [record.clone()]
        ));
        assert!(matches!(
            req.for_host("mx2.example.test"),
            HostRule::Other(TlsRequirement::Enforced(p)) if p.source == Verification::MtaSts
        ));
        both.dane = Some(dane("mx1.example.test", HostTlsa::Unusable));
        let req = requirement(&config, "example.test", &both, &warned);
        assert!(matches!(
            req.for_host("mx1.example.test"),
            HostRule::Encrypt
        ));
        both.dane = Some(dane("mx1.example.test", HostTlsa::Failed("bogus".into())));
        let req = requirement(&config, "example.test", &both, &warned);
        assert!(matches!(
            req.for_host("mx1.example.test"),
            HostRule::Failed("bogus")
        ));
        // An explicit entry wins over DANE too, warned about once.
        both.dane = Some(dane(
            "mx1.example.test",
            HostTlsa::Usable {
                owner: "_25._tcp.mx1.example.test".into(),
                records: vec![record],
            },
        ));
        config
            .delivery
            .tls_policy
            .insert("example.test".into(), TlsPolicy::Opportunistic);
        assert_eq!(
            requirement(&config, "example.test", &both, &warned),
            TlsRequirement::Configured(TlsPolicy::Opportunistic)
        );
        assert!(warned
            .0
            .lock()
            .contains(&("example.test".to_owned(), "dane".to_owned())));
    }

    #[test]
    fn precedence() {
        let warned = OverrideWarnings::default();
        let mut config = ClientConfig::default();
        let enforce = published(Mode::Enforce);
        // No policy: [delivery] tls.
        assert_eq!(
            requirement(&config, "example.test", &Published::default(), &warned),
            TlsRequirement::Configured(TlsPolicy::Opportunistic)
        );
        // MTA-STS over [delivery] tls.
        let TlsRequirement::Enforced(policy) =
            requirement(&config, "example.test", &enforce, &warned)
        else {
            panic!("not enforced");
        };
        assert!(policy.allows("mx1.example.test."));
        assert!(!policy.allows("mx.other.test"));
        assert_eq!(policy.name(), "MTA-STS policy of example.test");
        assert!(matches!(
            requirement(&config, "example.test", &published(Mode::Testing), &warned),
            TlsRequirement::Testing {
                configured: TlsPolicy::Opportunistic,
                ..
            }
        ));
        // An explicit entry over MTA-STS, warned about once.
        config
            .delivery
            .tls_policy
            .insert("Example.TEST.".into(), TlsPolicy::None);
        assert_eq!(
            requirement(&config, "example.test", &enforce, &warned),
            TlsRequirement::Configured(TlsPolicy::None)
        );
        assert_eq!(warned.0.lock().len(), 1);
        requirement(&config, "example.test", &enforce, &warned);
        assert_eq!(warned.0.lock().len(), 1);
    }

    #[test]
    fn what_counts_as_verified() {
        assert_eq!(
            TlsRequirement::Configured(TlsPolicy::Required).verification(),
            Some(Verification::Ca)
        );
        assert_eq!(
            TlsRequirement::Configured(TlsPolicy::Opportunistic).verification(),
            None
        );
    }
}
