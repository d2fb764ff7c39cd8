//! Routing a domain to the hosts that take its mail: MX resolution
//! (RFC 5321 section 5.1), null MX (RFC 7505), address literals (RFC 5321
//! section 4.1.3) and smarthosts.
//!
//! Every name is looked up as absolute (a trailing dot is implied): no
//! search domains, `ndots` plays no part.
//!
//! Outcomes of [`Resolver::mx_targets`]:
//!
//! * MX records: the hosts by preference, lowest first, equal preferences
//!   in random order, each with its AAAA then A addresses. A host that does
//!   not resolve is skipped. If no host resolves: [`ResolveError::Temporary`]
//!   when any host's lookup failed temporarily (timeout, SERVFAIL, ...),
//!   otherwise (every host NXDOMAIN or without addresses)
//!   [`ResolveError::NoAddresses`].
//! * A single MX whose exchange is "." (null MX, RFC 7505):
//!   [`ResolveError::NullMx`]. A "." exchange among other MX records is
//!   ignored (such a domain is misconfigured; the other hosts are tried).
//! * No MX records (NOERROR, no data): the implicit MX, the domain's own
//!   AAAA/A addresses as one [`Target`] whose host is the domain; no
//!   addresses: [`ResolveError::NoAddresses`].
//! * NXDOMAIN (or a name that is not a valid domain):
//!   [`ResolveError::NoSuchDomain`].
//! * Network failure, timeout, SERVFAIL, REFUSED: [`ResolveError::Temporary`].

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig as HickoryConfig,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::dnssec::TrustAnchors;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use tokio::task::JoinSet;
use tracing::debug;

/// One host to try, in order: an MX host (or the domain itself for an
/// implicit MX, or a smarthost) with its addresses, port included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The host name (or IP literal) as routing found it.
    pub host: String,
    /// Its addresses with the outbound port, IPv6 and IPv4 as resolved.
    pub addrs: Vec<SocketAddr>,
}

/// How to reach DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Name servers to query (UDP, with TCP for truncated answers). Empty:
    /// the system's configuration (`/etc/resolv.conf`).
    pub name_servers: Vec<SocketAddr>,
    /// How long to wait for one answer.
    pub timeout: Duration,
    /// How many times a query is sent before giving up (at least once).
    pub attempts: usize,
}

impl Default for ResolverConfig {
    /// The system's name servers, 5 s timeout, 2 attempts.
    fn default() -> Self {
        ResolverConfig {
            name_servers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

/// Why a domain (or host) could not be routed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    #[error("domain does not accept mail (null MX)")]
    NullMx,
    /// The domain does not exist (NXDOMAIN) or is not a valid name.
    #[error("domain not found")]
    NoSuchDomain,
    /// The domain exists but neither it nor its mail exchangers have an
    /// address.
    #[error("no mail exchanger address found")]
    NoAddresses,
    /// DNS failed for now (timeout, network error, SERVFAIL): try later.
    #[error("temporary DNS failure: {0}")]
    Temporary(String),
}

impl ResolveError {
    /// True for everything but [`ResolveError::Temporary`]: retrying will
    /// not help.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, ResolveError::Temporary(_))
    }

    /// The enhanced status code (RFC 3463) for a DSN or a log line.
    pub fn status(&self) -> &'static str {
        match self {
            // RFC 7505 section 4.2
            ResolveError::NullMx => "5.1.10",
            // Bad destination system address
            ResolveError::NoSuchDomain | ResolveError::NoAddresses => "5.1.2",
            // Directory server failure
            ResolveError::Temporary(_) => "4.4.3",
        }
    }
}

/// At most this many MX hosts are looked up for one domain.
const MAX_MX_HOSTS: usize = 32;
/// Responses are cached, but only this many.
const CACHE_SIZE: u64 = 256;
/// Longest time a positive answer stays cached.
const POSITIVE_MAX_TTL: Duration = Duration::from_secs(600);
/// Longest time a negative answer (NXDOMAIN, no data) stays cached.
const NEGATIVE_MAX_TTL: Duration = Duration::from_secs(30);

/// The DNS side of routing. Cheap to clone: clones share the resolver
/// (its connections and cache).
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<TokioResolver>,
    /// Upper bound for one lookup, on top of hickory's own timeouts.
    deadline: Duration,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// What one query found.
enum Answer {
    Records(Vec<RData>),
    NoData,
    NxDomain,
    Failed(String),
}

/// Why a host has no addresses.
enum HostFailure {
    NxDomain,
    NoData,
    Temporary(String),
}

impl Resolver {
    /// A resolver for `config`. With name servers given, only they are
    /// asked and nothing of the system's configuration is read (no
    /// `/etc/resolv.conf`, no hosts file); without, the system's
    /// configuration (and hosts file) is used, with `timeout` and
    /// `attempts` from `config`.
    pub fn new(config: &ResolverConfig) -> Result<Resolver, ResolveError> {
        Resolver::build(config, None)
    }

    /// A resolver for `config` that validates DNSSEC from `anchors` (the
    /// resolver of DANE, `crate::dane`): each record it returns carries
    /// its proof, and a bogus answer is an error.
    pub(crate) fn validating(
        config: &ResolverConfig,
        anchors: Arc<TrustAnchors>,
    ) -> Result<Resolver, ResolveError> {
        Resolver::build(config, Some(anchors))
    }

    fn build(
        config: &ResolverConfig,
        anchors: Option<Arc<TrustAnchors>>,
    ) -> Result<Resolver, ResolveError> {
        let mut builder = if config.name_servers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| {
                ResolveError::Temporary(format!(
                    "cannot read the system resolver configuration: {e}"
                ))
            })?
        } else {
            let servers = config
                .name_servers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            let mut builder = TokioResolver::builder_with_config(
                HickoryConfig::from_parts(None, Vec::new(), servers),
                TokioRuntimeProvider::default(),
            );
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder
        };
        if let Some(anchors) = anchors {
            builder = builder.with_trust_anchor(anchors);
            builder.options_mut().validate = true;
        }
        let attempts = config.attempts.max(1);
        let options = builder.options_mut();
        options.timeout = config.timeout;
        // hickory counts retries after the first try.
        options.attempts = attempts - 1;
        options.try_tcp_on_error = true;
        options.cache_size = CACHE_SIZE;
        options.positive_max_ttl = Some(POSITIVE_MAX_TTL);
        options.negative_max_ttl = Some(NEGATIVE_MAX_TTL);
        options.preserve_intermediates = false;
        let inner = builder
            .build()
            .map_err(|e| ResolveError::Temporary(format!("cannot set up the DNS resolver: {e}")))?;
        // A guard in case a lookup outlives its per-try timeouts (TCP
        // fallback, several servers): every try for every server, doubled.
        // The system's configuration has at most 3 servers (MAXNS).
        let servers = match config.name_servers.len() {
            0 => 3,
            n => n,
        };
        let tries = u32::try_from(attempts.saturating_mul(servers)).unwrap_or(u32::MAX);
        let deadline = config
            .timeout
            .saturating_mul(tries.saturating_mul(2))
            .saturating_add(Duration::from_secs(1));
        Ok(Resolver {
            inner: Arc::new(inner),
            deadline,
        })
    }

    /// Where mail for `domain` goes, in the order to try (see the module
    /// documentation for every outcome). An address literal such as
    /// `[127.0.0.2]` or `[IPv6:::1]` is its own single target, without DNS.
    pub async fn mx_targets(&self, domain: &str, port: u16) -> Result<Vec<Target>, ResolveError> {
        let domain = domain.trim();
        if domain.starts_with('[') {
            let ip = address_literal(domain).ok_or(ResolveError::NoSuchDomain)?;
            return Ok(vec![Target {
                host: domain.to_owned(),
                addrs: vec![SocketAddr::new(ip, port)],
            }]);
        }
        let name = domain_name(domain)?;
        let records = match self.query(&name, RecordType::MX).await {
            Answer::NxDomain => return Err(ResolveError::NoSuchDomain),
            Answer::Failed(reason) => return Err(ResolveError::Temporary(reason)),
            Answer::NoData => Vec::new(),
            Answer::Records(records) => records,
        };
        let mxs: Vec<(u16, Name)> = records
            .into_iter()
            .filter_map(|rdata| match rdata {
                RData::MX(mx) => Some((mx.preference, mx.exchange)),
                _ => None,
            })
            .collect();
        if mxs.is_empty() {
            debug!(%domain, "no MX records: implicit MX");
            return match self.addresses(&name).await {
                Ok(ips) => Ok(vec![Target {
                    host: host_string(&name),
                    addrs: with_port(&ips, port),
                }]),
                Err(HostFailure::NxDomain) => Err(ResolveError::NoSuchDomain),
                Err(HostFailure::NoData) => Err(ResolveError::NoAddresses),
                Err(HostFailure::Temporary(reason)) => Err(ResolveError::Temporary(reason)),
            };
        }
        let total = mxs.len();
        let mxs: Vec<(u16, Name)> = mxs
            .into_iter()
            .filter(|(_, host)| !host.is_root())
            .collect();
        if mxs.is_empty() {
            // RFC 7505: a single MX with exchange "." (several such
            // records say the same thing).
            debug!(%domain, "null MX");
            return Err(ResolveError::NullMx);
        }
        if mxs.len() < total {
            debug!(%domain, "null MX among other MX records: ignored");
        }
        let mut hosts = order_by_preference(mxs, &mut XorShift::seeded());
        let mut seen = HashSet::new();
        hosts.retain(|host| seen.insert(host.to_lowercase()));
        hosts.truncate(MAX_MX_HOSTS);

        // Look the hosts up concurrently, keep them in order.
        let mut lookups = JoinSet::new();
        for (index, host) in hosts.iter().enumerate() {
            let resolver = self.clone();
            let host = host.clone();
            lookups.spawn(async move { (index, resolver.addresses(&host).await) });
        }
        let mut results: Vec<Option<Result<Vec<IpAddr>, HostFailure>>> =
            (0..hosts.len()).map(|_| None).collect();
        while let Some(joined) = lookups.join_next().await {
            match joined {
                Ok((index, result)) => results[index] = Some(result),
                Err(e) => return Err(ResolveError::Temporary(format!("MX host lookup: {e}"))),
            }
        }

        let mut targets = Vec::new();
        let mut temporary = Vec::new();
        for (host, result) in hosts.iter().zip(results) {
            match result {
                Some(Ok(ips)) => targets.push(Target {
                    host: host_string(host),
                    addrs: with_port(&ips, port),
                }),
                Some(Err(HostFailure::Temporary(reason))) => {
                    debug!(%domain, mx = %host, %reason, "MX host lookup failed: skipped");
                    temporary.push(reason);
                }
                Some(Err(HostFailure::NxDomain)) => {
                    debug!(%domain, mx = %host, "MX host does not exist: skipped");
                }
                Some(Err(HostFailure::NoData)) | None => {
                    debug!(%domain, mx = %host, "MX host has no address: skipped");
                }
            }
        }
        if !targets.is_empty() {
            Ok(targets)
        } else if !temporary.is_empty() {
            Err(ResolveError::Temporary(temporary.join("; ")))
        } else {
            Err(ResolveError::NoAddresses)
        }
    }

    /// A smarthost's addresses with `port`. `host` is a name or an IP
    /// address (bare, `[...]` or `[IPv6:...]`); an address needs no DNS.
    pub async fn host_target(&self, host: &str, port: u16) -> Result<Target, ResolveError> {
        let host = host.trim();
        let literal = if host.starts_with('[') {
            Some(address_literal(host).ok_or(ResolveError::NoSuchDomain)?)
        } else {
            host.parse::<IpAddr>().ok()
        };
        if let Some(ip) = literal {
            return Ok(Target {
                host: host.to_owned(),
                addrs: vec![SocketAddr::new(ip, port)],
            });
        }
        let name = domain_name(host)?;
        match self.addresses(&name).await {
            Ok(ips) => Ok(Target {
                host: host_string(&name),
                addrs: with_port(&ips, port),
            }),
            Err(HostFailure::NxDomain) => Err(ResolveError::NoSuchDomain),
            Err(HostFailure::NoData) => Err(ResolveError::NoAddresses),
            Err(HostFailure::Temporary(reason)) => Err(ResolveError::Temporary(reason)),
        }
    }

    /// The TXT records of `name`, each record's strings joined (RFC 7208
    /// section 3.3 joins them so, and MTA-STS records are read alike).
    /// A name without TXT records, or that does not exist: none.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, ResolveError> {
        let name = domain_name(name)?;
        match self.query(&name, RecordType::TXT).await {
            Answer::Records(records) => Ok(records
                .into_iter()
                .filter_map(|rdata| match rdata {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|part| String::from_utf8_lossy(part))
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Answer::NoData | Answer::NxDomain => Ok(Vec::new()),
            Answer::Failed(reason) => Err(ResolveError::Temporary(reason)),
        }
    }

    /// A host's AAAA then A addresses (both asked at once).
    async fn addresses(&self, name: &Name) -> Result<Vec<IpAddr>, HostFailure> {
        let (v6, v4) = tokio::join!(
            self.query(name, RecordType::AAAA),
            self.query(name, RecordType::A)
        );
        let mut ips = Vec::new();
        for answer in [&v6, &v4] {
            if let Answer::Records(records) = answer {
                for rdata in records {
                    let ip = match rdata {
                        RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                        RData::A(a) => IpAddr::V4(a.0),
                        _ => continue,
                    };
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                }
            }
        }
        if !ips.is_empty() {
            return Ok(ips);
        }
        match (v6, v4) {
            (Answer::Failed(reason), _) | (_, Answer::Failed(reason)) => {
                Err(HostFailure::Temporary(reason))
            }
            (Answer::NxDomain, Answer::NxDomain) => Err(HostFailure::NxDomain),
            _ => Err(HostFailure::NoData),
        }
    }

    /// One query as hickory answers it, within the deadline (None: timed
    /// out).
    pub(crate) async fn lookup(
        &self,
        name: &Name,
        record_type: RecordType,
    ) -> Option<Result<Lookup, NetError>> {
        tokio::time::timeout(self.deadline, self.inner.lookup(name.clone(), record_type))
            .await
            .ok()
    }

    /// One query, sorted into what routing cares about.
    async fn query(&self, name: &Name, record_type: RecordType) -> Answer {
        match self.lookup(name, record_type).await {
            None => Answer::Failed(format!("{name} {record_type}: timed out")),
            Some(Ok(lookup)) => {
                let records: Vec<RData> = lookup
                    .answers()
                    .iter()
                    .filter(|record| record.record_type() == record_type)
                    .map(|record| record.data.clone())
                    .collect();
                if records.is_empty() {
                    Answer::NoData
                } else {
                    Answer::Records(records)
                }
            }
            Some(Err(e)) if e.is_nx_domain() => Answer::NxDomain,
            Some(Err(e)) if e.is_no_records_found() => Answer::NoData,
            Some(Err(e)) => {
                debug!(%name, %record_type, error = %e, "DNS lookup failed");
                Answer::Failed(format!("{name} {record_type}: {e}"))
            }
        }
    }
}

/// `domain` as an absolute name; not a valid domain: [`ResolveError::NoSuchDomain`].
pub(crate) fn domain_name(domain: &str) -> Result<Name, ResolveError> {
    if domain.is_empty() || domain == "." {
        return Err(ResolveError::NoSuchDomain);
    }
    let mut name = Name::from_utf8(domain).map_err(|_| ResolveError::NoSuchDomain)?;
    name.set_fqdn(true);
    Ok(name)
}

/// A name as a host for [`Target::host`]: ASCII (A-labels), no trailing dot.
fn host_string(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_owned()
}

/// The address in `[192.0.2.1]`, `[IPv6:2001:db8::1]` (RFC 5321 4.1.3) or,
/// leniently, `[2001:db8::1]`.
fn address_literal(literal: &str) -> Option<IpAddr> {
    let inner = literal.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
            inner[5..].parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        }
        _ => inner.parse::<IpAddr>().ok(),
    }
}

fn with_port(ips: &[IpAddr], port: u16) -> Vec<SocketAddr> {
    ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
}

/// Lowest preference first; within one preference, a random order
/// (RFC 5321 section 5.1).
fn order_by_preference<T>(mut mxs: Vec<(u16, T)>, rng: &mut XorShift) -> Vec<T> {
    mxs.sort_by_key(|(preference, _)| *preference);
    let mut start = 0;
    while start < mxs.len() {
        let preference = mxs[start].0;
        let end = start
            + mxs[start..]
                .iter()
                .take_while(|(p, _)| *p == preference)
                .count();
        // Fisher-Yates on mxs[start..end].
        for i in (start + 1..end).rev() {
            let j = start + rng.below(i - start + 1);
            mxs.swap(i, j);
        }
        start = end;
    }
    mxs.into_iter().map(|(_, host)| host).collect()
}

/// A tiny xorshift64 generator: good enough to spread load over equal MX
/// preferences, not for anything secret.
struct XorShift(u64);

impl XorShift {
    /// Seeded from the clock and a process-wide counter (so two calls in
    /// the same clock tick still differ).
    fn seeded() -> XorShift {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        // One splitmix64 round to spread the bits.
        let mut z = (nanos ^ count.rotate_left(32)).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mta_testkit::dns::{TestDns, Zone};
    use std::net::{Ipv4Addr, UdpSocket};

    const PORT: u16 = 2525;

    fn resolver_for(server: SocketAddr, timeout: Duration) -> Resolver {
        Resolver::new(&ResolverConfig {
            name_servers: vec![server],
            timeout,
            attempts: 1,
        })
        .unwrap()
    }

    async fn serve(zone: Zone) -> (TestDns, Resolver) {
        let dns = TestDns::start(zone).await.unwrap();
        let resolver = resolver_for(dns.addr, Duration::from_secs(5));
        (dns, resolver)
    }

    fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
    }

    fn hosts(targets: &[Target]) -> Vec<&str> {
        targets.iter().map(|t| t.host.as_str()).collect()
    }

    /// A loopback UDP port where nothing ever answers (the socket is kept
    /// open so no ICMP "port unreachable" comes back).
    fn silent_server() -> UdpSocket {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        socket.set_nonblocking(true).unwrap();
        socket
    }

    #[tokio::test]
    async fn mx_by_preference() {
        let (_dns, resolver) = serve(
            Zone::new()
                .mx("example.test", 20, "mx2.example.test")
                .mx("example.test", 10, "mx1.example.test")
                .a("mx1.example.test", Ipv4Addr::new(127, 0, 0, 2))
                .a("mx2.example.test", Ipv4Addr::new(127, 0, 0, 3)),
        )
        .await;
        let targets = resolver.mx_targets("example.test", PORT).await.unwrap();
        assert_eq!(
            targets,
            vec![
                Target {
                    host: "mx1.example.test".into(),
                    addrs: vec![v4(127, 0, 0, 2, PORT)],
                },
                Target {
                    host: "mx2.example.test".into(),
                    addrs: vec![v4(127, 0, 0, 3, PORT)],
                },
            ]
        );
        // A trailing dot changes nothing.
        assert_eq!(
            resolver.mx_targets("example.test.", PORT).await.unwrap(),
            targets
        );
    }

    #[tokio::test]
    async fn equal_preferences_all_present() {
        let (_dns, resolver) = serve(
            Zone::new()
                .mx("example.test", 10, "a.example.test")
                .mx("example.test", 10, "b.example.test")
                .mx("example.test", 5, "first.example.test")
                .a("a.example.test", Ipv4Addr::new(127, 0, 0, 2))
                .a("b.example.test", Ipv4Addr::new(127, 0, 0, 3))
                .a("first.example.test", Ipv4Addr::new(127, 0, 0, 4)),
        )
        .await;
        let targets = resolver.mx_targets("example.test", PORT).await.unwrap();
        assert_eq!(targets.len(), 3);
        assert_eq!(targets[0].host, "first.example.test");
        let mut rest = hosts(&targets[1..]);
        rest.sort_unstable();
        assert_eq!(rest, ["a.example.test", "b.example.test"]);
    }

    #[test]
    fn equal_preferences_are_shuffled() {
        let mut seen = HashSet::new();
        let mut rng = XorShift::seeded();
        for _ in 0..200 {
            let order = order_by_preference(
                vec![(10, "a"), (20, "z"), (10, "b"), (10, "c"), (0, "first")],
                &mut rng,
            );
            assert_eq!(order[0], "first");
            assert_eq!(order[4], "z");
            seen.insert(order[1..4].to_vec());
        }
        // All 6 orders of a, b, c show up.
        assert_eq!(seen.len(), 6);
    }

    #[test]
    fn seeds_differ() {
        assert_ne!(XorShift::seeded().0, XorShift::seeded().0);
    }

    #[tokio::test]
    async fn implicit_mx() {
        let (_dns, resolver) =
            serve(Zone::new().a("example.test", Ipv4Addr::new(127, 0, 0, 7))).await;
        let targets = resolver.mx_targets("example.test", PORT).await.unwrap();
        assert_eq!(
            targets,
            vec![Target {
                host: "example.test".into(),
                addrs: vec![v4(127, 0, 0, 7, PORT)],
            }]
        );
    }

    #[tokio::test]
    async fn null_mx() {
        let (_dns, resolver) = serve(
            Zone::new()
                .null_mx("example.test")
                .a("example.test", Ipv4Addr::new(127, 0, 0, 2)),
        )
        .await;
        let err = resolver.mx_targets("example.test", PORT).await.unwrap_err();
        assert_eq!(err, ResolveError::NullMx);
        assert_eq!(err.status(), "5.1.10");
        assert!(err.is_permanent());
    }

    #[tokio::test]
    async fn nxdomain() {
        let (_dns, resolver) =
            serve(Zone::new().a("other.test", Ipv4Addr::new(127, 0, 0, 2))).await;
        let err = resolver.mx_targets("nowhere.test", PORT).await.unwrap_err();
        assert_eq!(err, ResolveError::NoSuchDomain);
        assert_eq!(err.status(), "5.1.2");
        assert!(err.is_permanent());
    }

    #[tokio::test]
    async fn no_mx_and_no_address() {
        // The name exists (a name below it has records), but has neither
        // MX nor A/AAAA.
        let (_dns, resolver) =
            serve(Zone::new().a("host.example.test", Ipv4Addr::new(127, 0, 0, 2))).await;
        let err = resolver.mx_targets("example.test", PORT).await.unwrap_err();
        assert_eq!(err, ResolveError::NoAddresses);
        assert_eq!(err.status(), "5.1.2");
    }

    #[tokio::test]
    async fn mx_host_that_does_not_resolve_is_skipped() {
        let (_dns, resolver) = serve(
            Zone::new()
                .mx("example.test", 10, "gone.example.test")
                .mx("example.test", 20, "mx.example.test")
                .a("mx.example.test", Ipv4Addr::new(127, 0, 0, 3)),
        )
        .await;
        let targets = resolver.mx_targets("example.test", PORT).await.unwrap();
        assert_eq!(
            targets,
            vec![Target {
                host: "mx.example.test".into(),
                addrs: vec![v4(127, 0, 0, 3, PORT)],
            }]
        );
    }

    #[tokio::test]
    async fn no_mx_host_resolves() {
        let (_dns, resolver) = serve(Zone::new().mx("example.test", 10, "gone1.example.test").mx(
            "example.test",
            20,
            "gone2.example.test",
        ))
        .await;
        let err = resolver.mx_targets("example.test", PORT).await.unwrap_err();
        assert_eq!(err, ResolveError::NoAddresses);
    }

    #[tokio::test]
    async fn aaaa_and_a() {
        let (_dns, resolver) = serve(
            Zone::new()
                .mx("example.test", 10, "mx.example.test")
                .a("mx.example.test", Ipv4Addr::new(127, 0, 0, 2))
                .aaaa("mx.example.test", Ipv6Addr::LOCALHOST),
        )
        .await;
        let targets = resolver.mx_targets("example.test", PORT).await.unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(
            targets[0].addrs,
            vec![
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), PORT),
                v4(127, 0, 0, 2, PORT),
            ]
        );
    }

    #[tokio::test]
    async fn large_answer_falls_back_to_tcp() {
        // 200 A records do not fit a UDP answer: the truncated reply makes
        // the resolver ask again over TCP.
        let mut zone = Zone::new().mx("example.test", 10, "big.example.test");
        for i in 0..200u8 {
            zone = zone.a("big.example.test", Ipv4Addr::new(127, 0, 1, i));
        }
        let (_dns, resolver) = serve(zone).await;
        let targets = resolver.mx_targets("example.test", PORT).await.unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].addrs.len(), 200);
    }

    #[test]
    fn background_server_for_plain_tests() {
        let dns = TestDns::start_in_background(
            Zone::new().a("relay.example.test", Ipv4Addr::new(127, 0, 0, 9)),
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Built outside any runtime, used inside one.
        let resolver = resolver_for(dns.addr, Duration::from_secs(5));
        let target = runtime.block_on(resolver.host_target("relay.example.test", 25));
        assert_eq!(target.unwrap().addrs, vec![v4(127, 0, 0, 9, 25)]);
    }

    #[tokio::test]
    async fn address_literal_needs_no_dns() {
        // Every query would go to this socket: it must stay empty.
        let silent = silent_server();
        let resolver = resolver_for(silent.local_addr().unwrap(), Duration::from_millis(200));
        let targets = resolver.mx_targets("[127.0.0.5]", PORT).await.unwrap();
        assert_eq!(
            targets,
            vec![Target {
                host: "[127.0.0.5]".into(),
                addrs: vec![v4(127, 0, 0, 5, PORT)],
            }]
        );
        let targets = resolver.mx_targets("[IPv6:::1]", PORT).await.unwrap();
        assert_eq!(
            targets[0].addrs,
            vec![SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), PORT)]
        );
        assert_eq!(
            resolver.mx_targets("[300.1.2.3]", PORT).await,
            Err(ResolveError::NoSuchDomain)
        );
        let mut buf = [0u8; 512];
        assert_eq!(
            silent.recv_from(&mut buf).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "a DNS query was sent"
        );
    }

    #[tokio::test]
    async fn no_answer_is_temporary() {
        let silent = silent_server();
        let resolver = resolver_for(silent.local_addr().unwrap(), Duration::from_millis(200));
        let started = std::time::Instant::now();
        let err = resolver.mx_targets("example.test", PORT).await.unwrap_err();
        assert!(matches!(err, ResolveError::Temporary(_)), "{err:?}");
        assert_eq!(err.status(), "4.4.3");
        assert!(!err.is_permanent());
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = resolver
            .host_target("relay.example.test", PORT)
            .await
            .unwrap_err();
        assert!(matches!(err, ResolveError::Temporary(_)), "{err:?}");
    }

    #[tokio::test]
    async fn host_target_ip_and_name() {
        let (_dns, resolver) = serve(
            Zone::new()
                .a("relay.example.test", Ipv4Addr::new(127, 0, 0, 9))
                .aaaa("relay.example.test", Ipv6Addr::LOCALHOST),
        )
        .await;
        assert_eq!(
            resolver.host_target("127.0.0.8", 587).await.unwrap(),
            Target {
                host: "127.0.0.8".into(),
                addrs: vec![v4(127, 0, 0, 8, 587)],
            }
        );
        assert_eq!(
            resolver.host_target("[IPv6:::1]", 25).await.unwrap().addrs,
            vec![SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 25)]
        );
        assert_eq!(
            resolver.host_target("::1", 25).await.unwrap().addrs,
            vec![SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 25)]
        );
        assert_eq!(
            resolver
                .host_target("relay.example.test", 587)
                .await
                .unwrap(),
            Target {
                host: "relay.example.test".into(),
                addrs: vec![
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 587),
                    v4(127, 0, 0, 9, 587),
                ],
            }
        );
        assert_eq!(
            resolver.host_target("missing.example.test", 587).await,
            Err(ResolveError::NoSuchDomain)
        );
    }

    #[tokio::test]
    async fn txt_records() {
        let (_dns, resolver) = serve(
            Zone::new()
                .txt("_mta-sts.example.test", "v=STSv1; id=1")
                .txt("_mta-sts.example.test", "v=spf1 -all")
                .a("example.test", Ipv4Addr::new(127, 0, 0, 2)),
        )
        .await;
        let mut found = resolver.txt("_mta-sts.example.test").await.unwrap();
        found.sort();
        assert_eq!(found, ["v=STSv1; id=1", "v=spf1 -all"]);
        assert!(resolver.txt("example.test").await.unwrap().is_empty());
        assert!(resolver.txt("nowhere.test").await.unwrap().is_empty());
    }

    #[test]
    fn literals() {
        assert_eq!(
            address_literal("[127.0.0.2]"),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        );
        assert_eq!(
            address_literal("[ipv6:::1]"),
            Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(
            address_literal("[::1]"),
            Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(address_literal("[IPv6:127.0.0.1]"), None);
        assert_eq!(address_literal("[127.0.0.2"), None);
        assert_eq!(address_literal("[]"), None);
    }

    #[test]
    fn statuses() {
        assert_eq!(ResolveError::NullMx.status(), "5.1.10");
        assert_eq!(ResolveError::NoSuchDomain.status(), "5.1.2");
        assert_eq!(ResolveError::NoAddresses.status(), "5.1.2");
        assert_eq!(ResolveError::Temporary("x".into()).status(), "4.4.3");
        assert!(ResolveError::NoAddresses.is_permanent());
        assert!(!ResolveError::Temporary("x".into()).is_permanent());
    }
}
