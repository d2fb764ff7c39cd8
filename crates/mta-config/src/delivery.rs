//! `[queue]` and `[delivery]`: the runners, the retry schedule and the
//! outbound SMTP client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// How the ram queue holds a message before its first attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    /// On disk before 250 (the default): nothing acknowledged is ever lost.
    #[default]
    Durable,
    /// 250 as soon as the message is in memory; written to the disk queue
    /// only when its first attempt defers, or on a clean stop. Faster, and
    /// lost on a crash.
    Volatile,
}

/// `[queue]`: the three runners and the retry schedule.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Durable or volatile acceptance.
    pub mode: QueueMode,
    /// First attempts of accepted mail at once.
    pub ram_concurrency: usize,
    /// First attempts of our own DSNs at once.
    pub bounce_concurrency: usize,
    /// Retries at once.
    pub disk_concurrency: usize,
    /// Attempt n is due ((n-1) x retry_base)² seconds after arrival, with
    /// retry_base in seconds: 20s gives qmail's 0, 400, 1600, 3600 s...
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// Random spread added to each retry, as a fraction of the wait.
    pub retry_jitter: f64,
    /// How long a message may stay queued (RFC 5321 section 4.5.4.1
    /// suggests 4-5 days); then one last attempt, then a 4.4.7 DSN.
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// Longest the disk runner sleeps before looking for due messages.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Send a delay notice (`Action: delayed`) once a message has waited
    /// this long; unset, none are sent.
    #[serde(with = "humantime_serde")]
    pub delay_notice_after: Option<Duration>,
    /// Where DSNs that cannot be returned go (reports on failed `<>`
    /// mail), and the From of our DSNs when it has a domain. Default: the
    /// local `postmaster` mailbox (delivered as `RCPT TO:<postmaster>`
    /// is), DSNs from `postmaster@<hostname>`. An address that routes
    /// nowhere is a configuration error.
    pub postmaster: Option<String>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            mode: QueueMode::Durable,
            ram_concurrency: 200,
            bounce_concurrency: 50,
            disk_concurrency: 200,
            retry_base: Duration::from_secs(20),
            retry_jitter: 0.05,
            lifetime: Duration::from_secs(5 * 24 * 3600),
            poll_interval: Duration::from_secs(1),
            delay_notice_after: None,
            postmaster: None,
        }
    }
}

impl QueueConfig {
    pub(crate) fn check(&self, problem: &mut impl FnMut(&str, String)) {
        for (key, value) in [
            ("queue.ram_concurrency", self.ram_concurrency),
            ("queue.bounce_concurrency", self.bounce_concurrency),
            ("queue.disk_concurrency", self.disk_concurrency),
        ] {
            if value == 0 {
                problem(key, "must be at least 1".into());
            }
        }
        if self.retry_base.is_zero() {
            problem("queue.retry_base", "must be longer than zero".into());
        }
        if !(0.0..=1.0).contains(&self.retry_jitter) {
            problem("queue.retry_jitter", "must be between 0 and 1".into());
        }
        if self.lifetime.is_zero() {
            problem("queue.lifetime", "must be longer than zero".into());
        }
        if self.poll_interval.is_zero() {
            problem("queue.poll_interval", "must be longer than zero".into());
        }
    }
}

// The policies and the throttle rule below are what the file says and
// also what the SMTP client (mta-deliver) is given: defined here once,
// since the configuration is the lower of the two crates (it depends on
// no delivery code), and mta-deliver re-exports them.

/// Whether and how to use STARTTLS (RFC 3207) with other servers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsPolicy {
    /// Never, even when offered.
    None,
    /// When offered, without checking the certificate (RFC 7435
    /// opportunistic security); falls back to plaintext if the handshake
    /// fails.
    #[default]
    Opportunistic,
    /// Always: STARTTLS must be offered and the certificate must verify
    /// against the configured roots; otherwise the address counts as
    /// failed and the message waits.
    Required,
}

/// What becomes of 8-bit text (any octet above 127) for a next hop that
/// does not offer 8BITMIME.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EightBitPolicy {
    /// It fails with 5.6.3 and a DSN (RFC 6152 section 3: the client must
    /// not send it; converting it to 7 bits is the other choice).
    #[default]
    Fail,
    /// It is sent anyway, without the BODY parameter, as sendmail's pass8
    /// and Exim do: for a next hop that takes it without saying so.
    Send,
}

/// `[delivery.timeouts]`: how long the client waits at each step of a
/// session.
///
/// The defaults are the minimums of RFC 5321 section 4.5.3.2; `ehlo` and
/// `quit` are not named there and take 5 minutes and 30 seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryTimeouts {
    /// TCP connect, per address.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// The 220 greeting (RFC 5321 section 4.5.3.2.1: 5 minutes).
    #[serde(with = "humantime_serde")]
    pub greeting: Duration,
    /// The reply to EHLO or HELO; also STARTTLS and its handshake.
    #[serde(with = "humantime_serde")]
    pub ehlo: Duration,
    /// The reply to MAIL (section 4.5.3.2.2: 5 minutes); also RSET.
    #[serde(with = "humantime_serde")]
    pub mail: Duration,
    /// The reply to each RCPT (section 4.5.3.2.3: 5 minutes).
    #[serde(with = "humantime_serde")]
    pub rcpt: Duration,
    /// The 354 reply to DATA (section 4.5.3.2.4: 2 minutes).
    #[serde(with = "humantime_serde")]
    pub data_init: Duration,
    /// Each write of message text (section 4.5.3.2.5: 3 minutes).
    #[serde(with = "humantime_serde")]
    pub data_block: Duration,
    /// The reply to the final `.` (section 4.5.3.2.6: 10 minutes).
    #[serde(with = "humantime_serde")]
    pub data_end: Duration,
    /// The reply to QUIT.
    #[serde(with = "humantime_serde")]
    pub quit: Duration,
}

impl Default for DeliveryTimeouts {
    fn default() -> Self {
        let m = |minutes: u64| Duration::from_secs(minutes * 60);
        DeliveryTimeouts {
            connect: Duration::from_secs(30),
            greeting: m(5),
            ehlo: m(5),
            mail: m(5),
            rcpt: m(5),
            data_init: m(2),
            data_block: m(3),
            data_end: m(10),
            quit: Duration::from_secs(30),
        }
    }
}

/// `[delivery.throttle."PATTERN"]`: limits for the domains or the host
/// the pattern names. What is unset (None) falls back to the `[delivery]`
/// default (`max_per_destination`, `max_messages_per_hour`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleRule {
    /// Connections at once: to each destination of a domain pattern, or
    /// to the host of an `mx:` pattern, busy and idle.
    pub max_connections: Option<usize>,
    /// Messages per sliding hour: shared by every domain a pattern
    /// matches, or to the host of an `mx:` pattern; 0: no limit.
    pub max_messages_per_hour: Option<u64>,
}

/// Why a throttle pattern is not one: None when it is.
fn bad_pattern(pattern: &str) -> Option<String> {
    let (name, what) = if let Some(host) = pattern.strip_prefix("mx:") {
        (host, "a host name after mx:")
    } else if let Some(domain) = pattern.strip_prefix("*.") {
        (domain, "a domain after *.")
    } else {
        (pattern, "a domain")
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Some(format!("{pattern:?}: {what} is needed"));
    }
    // An mx: host may also be an address literal, as a route can be.
    let host_literal = pattern.starts_with("mx:")
        && name.starts_with('[')
        && name.ends_with(']')
        && name[1..name.len() - 1].parse::<std::net::IpAddr>().is_ok();
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if host_literal || labels_ok {
        None
    } else {
        Some(format!(
            "{pattern:?} is not a pattern: \"example.com\", \"*.example.com\" or \"mx:mx1.example.com\" \
             (letters, digits, '-', '_' and '.' between non-empty labels)"
        ))
    }
}

/// `[delivery]`: where mail goes and how it gets there.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// The port of other MTAs (25); tests point it at their sinks.
    pub port: u16,
    /// DNS servers to ask; empty means the system's (`/etc/resolv.conf`).
    pub name_servers: Vec<SocketAddr>,
    /// How long one DNS query may take.
    #[serde(with = "humantime_serde")]
    pub dns_timeout: Duration,
    /// The name we give in EHLO; default: `hostname`.
    pub helo_name: Option<String>,
    /// The STARTTLS policy for every domain not listed in `tls_policy`.
    pub tls: TlsPolicy,
    /// STARTTLS policy by recipient domain.
    pub tls_policy: BTreeMap<String, TlsPolicy>,
    /// PEM file of certificate authorities that `required` trusts, beside
    /// the system's (`system_roots`).
    pub ca_file: Option<PathBuf>,
    /// `required` trusts the system's trust store (Debian's
    /// ca-certificates, or `SSL_CERT_FILE`/`SSL_CERT_DIR` when set).
    pub system_roots: bool,
    /// Connections at once to one destination, unless a `throttle` rule
    /// says otherwise.
    pub max_per_destination: usize,
    /// Messages per sliding hour to one recipient domain, unless a
    /// `throttle` rule says otherwise; 0: no limit.
    pub max_messages_per_hour: u64,
    /// Attempts in a row to one destination that end in a 4xx reply
    /// before it is backed off; 0: only a 421 backs off.
    pub backoff_after: u32,
    /// How long a back-off lasts: no connection to the destination, its
    /// mail deferred with 4.4.5. 0: never back off.
    #[serde(with = "humantime_serde")]
    pub backoff_for: Duration,
    /// Limits by pattern: `example.com` (that domain), `*.example.com`
    /// (its subdomains), `mx:mx1.example.com` (that MX or relay host,
    /// whatever the domain).
    pub throttle: BTreeMap<String, ThrottleRule>,
    /// Messages sent over one connection before it is closed.
    pub max_messages_per_connection: usize,
    /// How long a connection waits for the next message to its destination.
    #[serde(with = "humantime_serde")]
    pub idle_connection_timeout: Duration,
    /// Fixed routes: recipient domain to `host:port` (a smarthost), used
    /// instead of MX lookup.
    pub routes: BTreeMap<String, String>,
    /// 8-bit text for a next hop without 8BITMIME: fail (RFC 6152) or
    /// send anyway.
    pub eightbit_without_8bitmime: EightBitPolicy,
    /// Protocol timeouts.
    pub timeouts: DeliveryTimeouts,
    /// MTA-STS (RFC 8461): whether published policies are honoured, and
    /// how they are fetched.
    pub mta_sts: MtaStsConfig,
    /// DANE (RFC 7672): whether TLSA records are looked up and honoured,
    /// and the DNSSEC trust anchors they are validated with.
    pub dane: DaneConfig,
}

/// `[delivery.dane]`: DANE for SMTP (RFC 7672) on delivery to MX hosts,
/// with a DNSSEC-validating resolver.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaneConfig {
    /// Look up TLSA records of MX hosts whose DNS is signed, and apply
    /// them.
    pub enabled: bool,
    /// A file of DNSKEY records (zone file form, e.g. `. 3600 IN DNSKEY
    /// 257 3 8 ...`) to validate DNSSEC from; unset: the root zone's
    /// keys built into the resolver (hickory's).
    pub trust_anchor: Option<PathBuf>,
}

impl Default for DaneConfig {
    fn default() -> Self {
        DaneConfig {
            enabled: true,
            trust_anchor: None,
        }
    }
}

impl DaneConfig {
    fn check(&self, problem: &mut impl FnMut(&str, String)) {
        if let Some(path) = &self.trust_anchor {
            if !path.is_file() {
                problem(
                    "delivery.dane.trust_anchor",
                    format!("{} is not a readable file", path.display()),
                );
            }
        }
    }
}

/// `[delivery.mta_sts]`: MTA-STS (RFC 8461) for outbound delivery to MX
/// hosts. The port and `ca_file` exist for private deployments and tests;
/// on the Internet the policy is fetched from port 443 and verified
/// against the system's trust store.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MtaStsConfig {
    /// Look up, fetch and apply the policies that domains publish.
    pub enabled: bool,
    /// The HTTPS port of `mta-sts.<domain>` (RFC 8461 section 3.3: 443).
    pub port: u16,
    /// PEM trust anchors for the policy fetch, beside the system's
    /// (`[delivery] system_roots`) and `[delivery] ca_file`.
    pub ca_file: Option<PathBuf>,
    /// How long one policy fetch may take, connection to last byte
    /// (RFC 8461 section 3.3 suggests a minute at most).
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// The largest policy body accepted, in bytes (RFC 8461 section 3.3:
    /// 64 KB).
    pub max_policy_size: usize,
}

impl Default for MtaStsConfig {
    fn default() -> Self {
        MtaStsConfig {
            enabled: true,
            port: 443,
            ca_file: None,
            fetch_timeout: Duration::from_secs(60),
            max_policy_size: 64 * 1024,
        }
    }
}

impl MtaStsConfig {
    fn check(&self, problem: &mut impl FnMut(&str, String)) {
        if self.port == 0 {
            problem("delivery.mta_sts.port", "must not be 0".into());
        }
        if self.fetch_timeout.is_zero() {
            problem(
                "delivery.mta_sts.fetch_timeout",
                "must be longer than zero".into(),
            );
        }
        if self.max_policy_size == 0 {
            problem(
                "delivery.mta_sts.max_policy_size",
                "must be at least 1".into(),
            );
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                problem(
                    "delivery.mta_sts.ca_file",
                    format!("{} is not a readable file", ca.display()),
                );
            }
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            port: 25,
            name_servers: Vec::new(),
            dns_timeout: Duration::from_secs(10),
            helo_name: None,
            tls: TlsPolicy::Opportunistic,
            tls_policy: BTreeMap::new(),
            ca_file: None,
            system_roots: true,
            max_per_destination: 20,
            max_messages_per_hour: 0,
            backoff_after: 5,
            backoff_for: Duration::from_secs(5 * 60),
            throttle: BTreeMap::new(),
            max_messages_per_connection: 100,
            idle_connection_timeout: Duration::from_secs(5),
            routes: BTreeMap::new(),
            eightbit_without_8bitmime: EightBitPolicy::Fail,
            timeouts: DeliveryTimeouts::default(),
            mta_sts: MtaStsConfig::default(),
            dane: DaneConfig::default(),
        }
    }
}

impl DeliveryConfig {
    pub(crate) fn check(&self, problem: &mut impl FnMut(&str, String)) {
        if self.port == 0 {
            problem("delivery.port", "must not be 0".into());
        }
        if self.max_per_destination == 0 {
            problem("delivery.max_per_destination", "must be at least 1".into());
        }
        if self.max_messages_per_connection == 0 {
            problem(
                "delivery.max_messages_per_connection",
                "must be at least 1".into(),
            );
        }
        let mut seen = BTreeMap::new();
        for (pattern, rule) in &self.throttle {
            let key = format!("delivery.throttle.{pattern:?}");
            if let Some(why) = bad_pattern(pattern) {
                problem(&key, why);
            } else {
                let same = pattern.trim_end_matches('.').to_ascii_lowercase();
                if let Some(first) = seen.insert(same, pattern) {
                    problem(&key, format!("the same pattern as {first:?}"));
                }
            }
            if rule.max_connections == Some(0) {
                problem(
                    &format!("{key}.max_connections"),
                    "must be at least 1".into(),
                );
            }
        }
        for (domain, route) in &self.routes {
            let ok = route.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                problem(
                    "delivery.routes",
                    format!("{domain} = {route:?}: a route is \"host:port\""),
                );
            }
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                problem(
                    "delivery.ca_file",
                    format!("{} is not a readable file", ca.display()),
                );
            }
        }
        self.mta_sts.check(problem);
        self.dane.check(problem);
    }
}
