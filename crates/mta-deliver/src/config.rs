//! What the client is told: its name, its timeouts, its TLS policy and its
//! limits. Every time and limit the client uses comes from here, so tests
//! can shrink them.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

// The STARTTLS and 8-bit policies and the throttle rule are the
// configuration's own types: what the file says is what the client is
// given, with no copy to keep in step. mta-config is the lower crate (it
// knows nothing of delivery), so the client uses its definitions.
pub use mta_config::{EightBitPolicy, ThrottleRule, TlsPolicy};

/// How long to wait at each step of a session.
///
/// The defaults are the minimums of RFC 5321 section 4.5.3.2; `ehlo` and
/// `quit` are not named there and take 5 minutes and 30 seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect, per address.
    pub connect: Duration,
    /// The 220 greeting (RFC 5321 section 4.5.3.2.1: 5 minutes).
    pub greeting: Duration,
    /// The reply to EHLO or HELO; also STARTTLS and its handshake.
    pub ehlo: Duration,
    /// The reply to MAIL (section 4.5.3.2.2: 5 minutes); also RSET.
    pub mail: Duration,
    /// The reply to each RCPT (section 4.5.3.2.3: 5 minutes).
    pub rcpt: Duration,
    /// The 354 reply to DATA (section 4.5.3.2.4: 2 minutes).
    pub data_init: Duration,
    /// Each write of message text (section 4.5.3.2.5: 3 minutes).
    pub data_block: Duration,
    /// The reply to the final `.` (section 4.5.3.2.6: 10 minutes).
    pub data_end: Duration,
    /// The reply to QUIT.
    pub quit: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        const MIN: u64 = 60;
        Timeouts {
            connect: Duration::from_secs(30),
            greeting: Duration::from_secs(5 * MIN),
            ehlo: Duration::from_secs(5 * MIN),
            mail: Duration::from_secs(5 * MIN),
            rcpt: Duration::from_secs(5 * MIN),
            data_init: Duration::from_secs(2 * MIN),
            data_block: Duration::from_secs(3 * MIN),
            data_end: Duration::from_secs(10 * MIN),
            quit: Duration::from_secs(30),
        }
    }
}

/// Everything [`Client::new`](crate::Client::new) needs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The name given in EHLO and HELO.
    pub helo_name: String,
    /// Timeouts for every wait.
    pub timeouts: Timeouts,
    /// The TLS policy for domains not in `tls_per_domain`.
    pub tls: TlsPolicy,
    /// TLS policy by recipient domain, keys in lowercase.
    pub tls_per_domain: HashMap<String, TlsPolicy>,
    /// PEM trust anchors for [`TlsPolicy::Required`]. Opportunistic TLS
    /// never verifies (RFC 7435). When unset, `Required` cannot succeed:
    /// no system roots are loaded.
    pub ca_file: Option<PathBuf>,
    /// Connections open at once to one destination key, busy and idle,
    /// unless a rule in `throttle` says otherwise.
    pub max_per_destination: usize,
    /// Messages per sliding hour to one recipient domain, unless a rule in
    /// `throttle` says otherwise; 0: no limit.
    pub max_messages_per_hour: u64,
    /// Attempts in a row to one destination key that end in a 4xx reply
    /// before it is backed off; 0: only a 421 backs off.
    pub backoff_after: u32,
    /// How long a back-off lasts; zero: never back off.
    pub backoff_for: Duration,
    /// Rules by pattern: `example.com`, `*.example.com` (its subdomains,
    /// not itself) or `mx:mx1.example.com` (that host, whatever the
    /// domain). See [`Throttles`](crate::Throttles).
    pub throttle: BTreeMap<String, ThrottleRule>,
    /// Messages sent over one connection before it is closed with QUIT.
    pub max_messages_per_connection: usize,
    /// How long a connection waits in the pool for the next message to the
    /// same destination before it is closed with QUIT.
    pub idle_connection_timeout: Duration,
    /// 8-bit text for a server without 8BITMIME.
    pub eightbit_without_8bitmime: EightBitPolicy,
}

impl Default for ClientConfig {
    /// Postfix's defaults where it has one: 20 connections per destination
    /// (`default_destination_concurrency_limit`) and 2 seconds in the
    /// connection cache (`smtp_connection_cache_time_limit`); no hourly
    /// limit; a 5 minute back-off after 5 attempts in a row ending in 4xx.
    fn default() -> Self {
        ClientConfig {
            helo_name: "localhost".to_owned(),
            timeouts: Timeouts::default(),
            tls: TlsPolicy::Opportunistic,
            tls_per_domain: HashMap::new(),
            ca_file: None,
            max_per_destination: 20,
            max_messages_per_hour: 0,
            backoff_after: 5,
            backoff_for: Duration::from_secs(5 * 60),
            throttle: BTreeMap::new(),
            max_messages_per_connection: 100,
            idle_connection_timeout: Duration::from_secs(2),
            eightbit_without_8bitmime: EightBitPolicy::Fail,
        }
    }
}

impl ClientConfig {
    /// The policy for a recipient domain: `tls_per_domain` first (without
    /// regard to case or a trailing dot), else the default.
    pub fn policy_for(&self, domain: &str) -> TlsPolicy {
        if self.tls_per_domain.is_empty() {
            return self.tls;
        }
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.tls_per_domain
            .get(&domain)
            .copied()
            .unwrap_or(self.tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_domain_policy_ignores_case_and_trailing_dot() {
        let mut config = ClientConfig::default();
        config
            .tls_per_domain
            .insert("bank.test".into(), TlsPolicy::Required);
        assert_eq!(config.policy_for("Bank.TEST."), TlsPolicy::Required);
        assert_eq!(config.policy_for("other.test"), TlsPolicy::Opportunistic);
    }
}
