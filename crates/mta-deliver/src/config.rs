//! What the client is told: its name, its timeouts, its TLS policy and its
//! limits. Every time and limit the client uses comes from here, so tests
//! can shrink them.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

/// Whether and how to use STARTTLS (RFC 3207) with a destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TlsPolicy {
    /// Never use STARTTLS, even when offered.
    None,
    /// Use STARTTLS when offered, without checking the certificate
    /// (RFC 7435 opportunistic security); fall back to plaintext when the
    /// handshake fails.
    #[default]
    Opportunistic,
    /// STARTTLS must be offered and the certificate must verify against the
    /// configured roots; otherwise the address counts as failed.
    Required,
}

/// What becomes of 8-bit text (any octet above 127) for a server that
/// does not offer 8BITMIME.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EightBitPolicy {
    /// The recipients fail with 5.6.3 (RFC 6152 section 3: the client
    /// must not send it; it may convert it to 7 bits or report a failure).
    #[default]
    Fail,
    /// It is sent anyway, without the BODY parameter, as sendmail's pass8
    /// and Exim do.
    Send,
}

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

/// Limits for what one `throttle` pattern matches; what is None comes
/// from the defaults in [`ClientConfig`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThrottleRule {
    /// Connections at once: to each destination key of a matching domain,
    /// or to the host of an `mx:` rule.
    pub max_connections: Option<usize>,
    /// Messages per sliding hour, shared by everything the pattern matches;
    /// 0: no limit.
    pub max_messages_per_hour: Option<u64>,
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
