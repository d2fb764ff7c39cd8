//! Lookups through the validating resolver, sorted by what DANE needs to
//! know of them: secure (RFC 4033 section 5: an unbroken chain of
//! signatures from a trust anchor), insecure (provably unsigned), or
//! failed (bogus, SERVFAIL, timeout).

use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use crate::Resolver;

/// What one validated query found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Checked {
    /// Signed and validated: the records of the asked type, none when the
    /// name or the type provably does not exist (a secure denial).
    Secure(Vec<RData>),
    /// Answered from an unsigned zone (or through one): no DNSSEC
    /// protection, whatever the answer.
    Insecure,
    /// Bogus, indeterminate, or no answer at all: why.
    Failed(String),
}

/// Asks `resolver` (which validates) for `name`'s `record_type`.
pub(crate) async fn query(resolver: &Resolver, name: &Name, record_type: RecordType) -> Checked {
    let result = match resolver.lookup(name, record_type).await {
        None => return Checked::Failed(format!("{name} {record_type}: timed out")),
        Some(result) => result,
    };
    match result {
        Ok(lookup) => {
            let answers: Vec<&Record> = lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() != RecordType::RRSIG)
                .collect();
            if answers.iter().any(|r| r.proof == Proof::Bogus) {
                return bogus(name, record_type);
            }
            // RFC 4035 section 4.3: the DNSSEC records needed could not
            // be had, so the answer may be forged; an attacker who drops
            // them must not turn DANE off.
            if answers.iter().any(|r| r.proof == Proof::Indeterminate) {
                return Checked::Failed(format!(
                    "{name} {record_type}: DNSSEC status indeterminate"
                ));
            }
            if answers.is_empty() || !answers.iter().all(|r| r.proof == Proof::Secure) {
                return Checked::Insecure;
            }
            Checked::Secure(
                answers
                    .into_iter()
                    .filter(|r| r.record_type() == record_type)
                    .map(|r| r.data.clone())
                    .collect(),
            )
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(none))) => {
            // The validator marked the denial's NSEC or NSEC3 records; a
            // denial without a secure one is an unsigned zone's.
            let denied = none.authorities.iter().flat_map(|a| a.iter()).any(|r| {
                matches!(r.record_type(), RecordType::NSEC | RecordType::NSEC3)
                    && r.proof == Proof::Secure
            });
            if denied {
                Checked::Secure(Vec::new())
            } else {
                Checked::Insecure
            }
        }
        Err(NetError::Dns(DnsError::DnssecBogus)) => bogus(name, record_type),
        Err(NetError::Dns(DnsError::Nsec {
            proof: Proof::Bogus,
            ..
        })) => bogus(name, record_type),
        Err(NetError::Dns(DnsError::Nsec { .. })) => Checked::Insecure,
        Err(e) => Checked::Failed(format!("{name} {record_type}: {e}")),
    }
}

fn bogus(name: &Name, record_type: RecordType) -> Checked {
    Checked::Failed(format!(
        "{name} {record_type}: DNSSEC validation failed (bogus)"
    ))
}
