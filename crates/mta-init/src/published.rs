//! `configtest`'s look at what the domains of `[delivery.tls_policy]`
//! publish: an explicit entry wins over a domain's published policy
//! (DANE's TLSA records, an MTA-STS policy), so an entry weaker than what
//! the domain asks for is worth a warning.
//!
//! Only `configtest` asks (the DNS, and the policy host over HTTPS): it is
//! what an operator runs after editing the file. mtad logs the same
//! warning when it delivers to such a domain.

use std::time::Duration;

use mta_config::Config;
use mta_deliver::dane::Dane;
use mta_deliver::sts::policy::Mode;
use mta_deliver::{ClientConfig, MtaSts, PolicyCache, Resolver, ResolverConfig, TlsPolicy};

/// How long the look at one domain may take.
const PER_DOMAIN: Duration = Duration::from_secs(15);

/// One warning per `tls_policy` entry below `required` whose domain's MX
/// hosts publish usable DANE TLSA records, or whose domain publishes an
/// MTA-STS policy in enforce mode.
pub fn lowered_policies(config: &Config) -> Vec<String> {
    let delivery = &config.delivery;
    let weak: Vec<(&String, &TlsPolicy)> = delivery
        .tls_policy
        .iter()
        .filter(|(_, p)| **p != TlsPolicy::Required)
        .collect();
    if weak.is_empty() || !(delivery.mta_sts.enabled || delivery.dane.enabled) {
        return Vec::new();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return vec![format!("cannot check the published policies: {e}")],
    };
    runtime.block_on(async {
        let resolver_config = ResolverConfig {
            name_servers: delivery.name_servers.clone(),
            timeout: delivery.dns_timeout,
            attempts: 2,
        };
        let resolver = match Resolver::new(&resolver_config) {
            Ok(r) => r,
            Err(e) => return vec![format!("cannot check the published policies: {e}")],
        };
        let client = ClientConfig {
            helo_name: config.hostname.clone(),
            delivery: delivery.clone(),
        };
        let sts = match MtaSts::new(&client, resolver.clone(), PolicyCache::default()) {
            Ok(sts) => sts,
            Err(e) => return vec![format!("cannot check the published policies: {e}")],
        };
        let dane = match Dane::new(&delivery.dane, &resolver_config, delivery.port) {
            Ok(dane) => dane,
            Err(e) => return vec![format!("cannot check the published policies: {e}")],
        };
        let mut warnings = Vec::new();
        for (domain, policy) in weak {
            let name = policy_name(*policy);
            if let Some(dane) = &dane {
                let published = async {
                    let targets = resolver.mx_targets(domain, delivery.port).await.ok()?;
                    dane.policy(domain, &targets).await
                };
                if let Ok(Some(found)) = tokio::time::timeout(PER_DOMAIN, published).await {
                    if found.has_usable() {
                        warnings.push(format!(
                            "delivery.tls_policy: {domain} = {name:?} lowers the DANE TLSA records \
                             the MX hosts of {domain} publish: its mail will go without the \
                             verified TLS they ask for"
                        ));
                        continue;
                    }
                }
            }
            let Some(sts) = &sts else { continue };
            let found = tokio::time::timeout(PER_DOMAIN, sts.policy(domain)).await;
            if let Ok(Some(cached)) = found {
                if cached.policy.mode == Mode::Enforce {
                    warnings.push(format!(
                        "delivery.tls_policy: {domain} = {name:?} lowers the MTA-STS policy {domain} \
                         publishes (enforce, id {}): its mail will go without the verified TLS \
                         it asks for",
                        cached.id
                    ));
                }
            }
        }
        warnings
    })
}

fn policy_name(policy: TlsPolicy) -> &'static str {
    match policy {
        TlsPolicy::None => "none",
        TlsPolicy::Opportunistic => "opportunistic",
        TlsPolicy::Required => "required",
    }
}

/// Reads `[delivery.dane] trust_anchor` as mtad will at start (a file
/// that is there but holds no usable DNSKEY record stops mtad): an error
/// for `configtest` and `restart`.
pub fn check_dane_anchor(config: &Config) -> Result<(), String> {
    let delivery = &config.delivery;
    if !delivery.dane.enabled || delivery.dane.trust_anchor.is_none() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot check delivery.dane.trust_anchor: {e}"))?;
    let resolver = ResolverConfig {
        name_servers: delivery.name_servers.clone(),
        timeout: delivery.dns_timeout,
        attempts: 2,
    };
    runtime.block_on(async {
        Dane::new(&delivery.dane, &resolver, delivery.port)
            .map(|_| ())
            .map_err(|e| format!("delivery.dane.trust_anchor: {e}"))
    })
}
