//! MTA-STS (RFC 8461): the policies domains publish for mail sent to
//! them, looked up before delivery to their MX hosts.
//!
//! [`MtaSts::policy`] looks up `_mta-sts.<domain>` TXT (`record.rs`),
//! decides from the cache (`cache.rs`) whether the policy must be fetched
//! again, fetches it over HTTPS (`fetch.rs`) and parses it (`policy.rs`).
//! What a policy then requires of a delivery is the client's
//! [`TlsRequirement`](crate::TlsRequirement).

pub mod cache;
pub mod fetch;
pub mod policy;
pub mod record;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::tls::fetch_config;
use crate::{ClientConfig, ClientError, Resolver};
use cache::{CachedPolicy, Lookup, Next, PolicyCache};
use fetch::Fetcher;
use policy::Mode;
use record::parse_records;

/// Finds the MTA-STS policy of a domain. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MtaSts {
    resolver: Resolver,
    fetcher: Fetcher,
    cache: PolicyCache,
}

impl MtaSts {
    /// The lookup for `config` (`[delivery.mta_sts]`, with the trust
    /// anchors of `[delivery]`), asking `resolver` and keeping policies in
    /// `cache`. None when MTA-STS is disabled. Fails when a CA file
    /// cannot be read.
    pub fn new(
        config: &ClientConfig,
        resolver: Resolver,
        cache: PolicyCache,
    ) -> Result<Option<MtaSts>, ClientError> {
        let delivery = &config.delivery;
        let sts = &delivery.mta_sts;
        if !sts.enabled {
            return Ok(None);
        }
        let tls = fetch_config(
            delivery.system_roots,
            [delivery.ca_file.as_deref(), sts.ca_file.as_deref()],
        )?;
        let fetcher = Fetcher::new(
            Arc::new(tls),
            resolver.clone(),
            sts.port,
            sts.fetch_timeout,
            sts.max_policy_size,
        );
        Ok(Some(MtaSts {
            resolver,
            fetcher,
            cache,
        }))
    }

    /// The cache, to save and to hand to the next generation.
    pub fn cache(&self) -> &PolicyCache {
        &self.cache
    }

    /// The policy in force for `domain`: enforce or testing, or None
    /// (none published, `mode: none`, or none could be had and none is
    /// cached). Never fails: a failure is logged and means no new policy.
    pub async fn policy(&self, domain: &str) -> Option<CachedPolicy> {
        if domain.starts_with('[') {
            // An address literal has no DNS name to publish a policy under.
            return None;
        }
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let lookup = match self.resolver.txt(&format!("_mta-sts.{domain}")).await {
            Ok(records) => Lookup::Answered(parse_records(&records)),
            Err(e) => {
                tracing::debug!(%domain, error = %e, "MTA-STS record lookup failed");
                Lookup::Failed
            }
        };
        let found = match cache::next(self.cache.get(&domain).as_ref(), &lookup, now()) {
            Next::NoPolicy => None,
            Next::UseCached => self.cache.get(&domain),
            Next::Fetch(id) => self.fetch(&domain, id, &lookup).await,
        };
        found.filter(|p| p.policy.mode != Mode::None)
    }

    /// Fetches the policy `id` of `domain`, once for every delivery that
    /// asks at the same time; on failure the fresh cached policy, if any.
    async fn fetch(&self, domain: &str, id: String, lookup: &Lookup) -> Option<CachedPolicy> {
        let _turn = self.cache.fetch_turn(domain).await;
        // Another delivery may have fetched it while this one waited.
        let cached = self.cache.get(domain);
        if cache::next(cached.as_ref(), lookup, now()) == Next::UseCached {
            return cached;
        }
        match self.fetcher.fetch(domain).await {
            Ok(policy) => {
                info!(%domain, %id, mode = %policy.mode, max_age = policy.max_age, mx = ?policy.mx, "MTA-STS policy fetched");
                let fetched = CachedPolicy {
                    domain: domain.to_owned(),
                    id,
                    fetched: now(),
                    policy,
                };
                self.cache.put(fetched.clone());
                Some(fetched)
            }
            Err(e) => {
                let fresh = cached.filter(|c| c.is_fresh(now()));
                match &fresh {
                    Some(c) => {
                        warn!(%domain, %id, error = %e, cached_id = %c.id, "MTA-STS policy fetch failed; the cached policy holds")
                    }
                    None => {
                        warn!(%domain, %id, error = %e, "MTA-STS policy fetch failed; no policy applies")
                    }
                }
                fresh
            }
        }
    }
}

/// Unix seconds.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
