//! What the client is told: its name, its timeouts, its TLS policy and its
//! limits. Every time and limit the client uses comes from here, so tests
//! can shrink them.

// The STARTTLS and 8-bit policies, the throttle rule, the timeouts and
// the limits are the configuration's own types: what `[delivery]` says is
// what the client is given, with no copy to keep in step. mta-config is
// the lower crate (it knows nothing of delivery), so the client uses its
// definitions.
pub use mta_config::{
    DeliveryConfig, DeliveryTimeouts as Timeouts, EightBitPolicy, ThrottleRule, TlsPolicy,
};

/// Everything [`Client::new`](crate::Client::new) needs: the name it
/// gives and the `[delivery]` section as the operator wrote it.
///
/// Of that section the client reads the timeouts, the TLS policies and
/// `ca_file`, the limits (`max_per_destination`, `max_messages_per_hour`,
/// `backoff_after`, `backoff_for`, `throttle`), the connection cache
/// (`max_messages_per_connection`, `idle_connection_timeout`) and
/// `eightbit_without_8bitmime`; `mta_sts` is [`MtaSts`](crate::MtaSts)'s
/// (with `ca_file` and `system_roots` for its fetch); the rest (port,
/// name servers, routes) is the resolver's. `ca_file` holds the PEM trust anchors for
/// [`TlsPolicy::Required`]; opportunistic TLS never verifies (RFC 7435),
/// and without one `Required` cannot succeed: no system roots are
/// loaded.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The name given in EHLO and HELO.
    pub helo_name: String,
    /// `[delivery]`.
    pub delivery: DeliveryConfig,
}

impl Default for ClientConfig {
    /// `localhost` and `[delivery]`'s defaults: 20 connections per
    /// destination (Postfix's `default_destination_concurrency_limit`), no
    /// hourly limit, a 5 minute back-off after 5 attempts in a row ending
    /// in 4xx.
    fn default() -> Self {
        ClientConfig {
            helo_name: "localhost".to_owned(),
            delivery: DeliveryConfig::default(),
        }
    }
}

impl ClientConfig {
    /// The policy for a recipient domain: `tls_policy` first (without
    /// regard to case or a trailing dot), else the default.
    /// A published policy (MTA-STS) may ask for more: see
    /// [`Client::requirement`](crate::Client::requirement).
    pub fn policy_for(&self, domain: &str) -> TlsPolicy {
        self.explicit_policy(domain).unwrap_or(self.delivery.tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_domain_policy_ignores_case_and_trailing_dot() {
        let mut config = ClientConfig::default();
        config
            .delivery
            .tls_policy
            .insert("bank.test".into(), TlsPolicy::Required);
        assert_eq!(config.policy_for("Bank.TEST."), TlsPolicy::Required);
        assert_eq!(config.policy_for("other.test"), TlsPolicy::Opportunistic);
    }
}
