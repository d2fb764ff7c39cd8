//! Paused destination domains: kept queued without a connection
//! (`attempt.rs` defers their recipients with 4.3.2), saved in the spool
//! so that a pause outlives a restart.

use std::collections::BTreeSet;

use tracing::{info, warn};

use crate::actions::{Action, ActionReport, Selection};
use crate::error::SteerError;
use crate::inner::Inner;
use crate::listing::domain as normalize_domain;
use crate::operator::Operator;

/// The saved-state name of the paused domains.
const PAUSED_STATE: &str = "paused-domains";

/// Loads the paused domains saved by an earlier run (at start, before
/// the runners take work).
pub(crate) fn load_paused(inner: &Inner) {
    match inner.store.blocking().load_state(PAUSED_STATE) {
        Ok(Some(bytes)) => match serde_json::from_slice::<BTreeSet<String>>(&bytes) {
            Ok(domains) => {
                if !domains.is_empty() {
                    info!(domains = ?domains, "delivery to these domains stays paused");
                }
                inner.steering.set_paused(domains);
            }
            Err(e) => warn!(error = %e, "saved paused domains unreadable; none paused"),
        },
        Ok(None) => {}
        Err(e) => warn!(error = %e, "cannot read the saved paused domains"),
    }
}

impl Operator {
    /// Pauses delivery to a domain (kept across restarts). True when it
    /// was not paused already.
    pub async fn pause_domain(&self, domain: &str) -> Result<bool, SteerError> {
        let inner = &self.inner;
        let domain = normalize_domain(domain)?;
        let mut domains: BTreeSet<String> = inner.steering.paused_domains().into_iter().collect();
        let added = domains.insert(domain.clone());
        save_paused(inner, &domains).await?;
        inner.steering.set_paused(domains);
        info!(domain, "delivery paused by the operator");
        Ok(added)
    }

    /// Resumes delivery to a domain; its messages are due at once. Returns
    /// whether it was paused, and what the flush did.
    pub async fn resume_domain(&self, domain: &str) -> Result<(bool, ActionReport), SteerError> {
        let inner = &self.inner;
        let domain = normalize_domain(domain)?;
        let mut domains: BTreeSet<String> = inner.steering.paused_domains().into_iter().collect();
        let removed = domains.remove(&domain);
        save_paused(inner, &domains).await?;
        inner.steering.set_paused(domains);
        info!(domain, "delivery resumed by the operator");
        let report = self
            .act(Action::Flush, &Selection::Domain(domain), false)
            .await?;
        Ok((removed, report))
    }

    /// The domains whose delivery is paused, sorted.
    pub fn paused_domains(&self) -> Vec<String> {
        self.inner.steering.paused_domains()
    }
}

async fn save_paused(inner: &Inner, domains: &BTreeSet<String>) -> Result<(), SteerError> {
    let bytes = serde_json::to_vec(domains).expect("a set of strings serializes");
    Ok(inner.store.save_state(PAUSED_STATE, bytes).await?)
}
