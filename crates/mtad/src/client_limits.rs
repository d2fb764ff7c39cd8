//! Per-client connection limits, as Postfix's anvil keeps them: sessions
//! at once and new sessions per minute from one client.
//!
//! Without them one address can take every slot of `max_connections`
//! (50 connections that each trickle a byte now and then) and lock all
//! other senders out. A client is an IPv4 address, or an IPv6 /64 (one
//! host usually holds a whole /64, so counting single IPv6 addresses would
//! limit nothing); an IPv4-mapped IPv6 address is its IPv4 address.
//! Clients in the exemption list (by default the relay networks) are not
//! counted at all.
//!
//! The rate is counted in a fixed minute that starts at a client's first
//! admitted connection, as anvil does, so an entry is a few counters with
//! no allocation of its own. An entry goes when its client has no session
//! open and its minute is over: when its last session ends, or at a sweep
//! of the whole map at most once a minute, so the map holds the clients of
//! about the last two minutes and no more.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// The unit of `max_connection_rate_per_client`.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Who a limit counts: an IPv4 address or an IPv6 /64, as the AUTH
/// failure limits count them too.
pub use mta_auth::ClientKey;

/// An IPv4-mapped IPv6 address (a dual-stack listener) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The limits in force, from the current settings.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Sessions at once per client; 0: no limit.
    pub max_connections: usize,
    /// New sessions per minute per client; 0: no limit.
    pub max_rate: u32,
    /// Clients not limited.
    pub exemptions: Vec<IpNet>,
}

impl Limits {
    fn exempt(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.exemptions.iter().any(|n| n.contains(&ip))
    }
}

/// Which per-client limit refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    /// `max_connections_per_client`.
    Connections,
    /// `max_connection_rate_per_client`.
    Rate,
}

/// A connection refused by a per-client limit.
#[derive(Debug)]
pub struct Refused {
    pub over: Over,
    pub client: ClientKey,
    /// The first refusal since this client was last admitted: worth a
    /// log line; the ones after it are not.
    pub first: bool,
}

#[derive(Debug)]
struct Client {
    open: usize,
    window_start: Instant,
    admitted_in_window: u32,
    refusing: bool,
}

impl Client {
    /// Starts a new minute when the last one is over.
    fn roll(&mut self, now: Instant) {
        if now.saturating_duration_since(self.window_start) >= RATE_WINDOW {
            self.window_start = now;
            self.admitted_in_window = 0;
        }
    }

    /// Nothing to remember: no session open and no rate to keep counting.
    fn idle(&self, now: Instant) -> bool {
        self.open == 0
            && (self.admitted_in_window == 0
                || now.saturating_duration_since(self.window_start) >= RATE_WINDOW)
    }
}

#[derive(Debug)]
struct Clients {
    map: HashMap<ClientKey, Client>,
    last_sweep: Instant,
}

/// The per-client counts, shared by every listener and kept across a
/// graceful restart (sessions of the old settings hold their permits).
#[derive(Debug)]
pub struct ClientLimits {
    clients: Mutex<Clients>,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            clients: Mutex::new(Clients {
                map: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }
}

/// One admitted session; its client's count goes down when dropped.
#[derive(Debug)]
pub struct ClientPermit {
    owner: Option<(Arc<ClientLimits>, ClientKey)>,
}

impl ClientLimits {
    /// Admits a new session from `ip`, or says which limit refuses it.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &Limits,
        now: Instant,
    ) -> Result<ClientPermit, Refused> {
        if limits.exempt(ip) || (limits.max_connections == 0 && limits.max_rate == 0) {
            return Ok(ClientPermit { owner: None });
        }
        let key = ClientKey::of(ip);
        let mut clients = self.clients.lock();
        if now.saturating_duration_since(clients.last_sweep) >= RATE_WINDOW {
            clients.map.retain(|_, c| !c.idle(now));
            clients.last_sweep = now;
        }
        let client = clients.map.entry(key).or_insert(Client {
            open: 0,
            window_start: now,
            admitted_in_window: 0,
            refusing: false,
        });
        client.roll(now);
        let over = if limits.max_connections > 0 && client.open >= limits.max_connections {
            Some(Over::Connections)
        } else if limits.max_rate > 0 && client.admitted_in_window >= limits.max_rate {
            Some(Over::Rate)
        } else {
            None
        };
        if let Some(over) = over {
            let first = !client.refusing;
            client.refusing = true;
            return Err(Refused {
                over,
                client: key,
                first,
            });
        }
        client.open += 1;
        if limits.max_rate > 0 {
            client.admitted_in_window += 1;
        }
        client.refusing = false;
        drop(clients);
        Ok(ClientPermit {
            owner: Some((self.clone(), key)),
        })
    }

    /// Clients remembered now.
    pub fn tracked(&self) -> usize {
        self.clients.lock().map.len()
    }

    fn release(&self, key: ClientKey, now: Instant) {
        let mut clients = self.clients.lock();
        if let Some(client) = clients.map.get_mut(&key) {
            client.open = client.open.saturating_sub(1);
            if client.idle(now) {
                clients.map.remove(&key);
            }
        }
    }
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        if let Some((limits, key)) = self.owner.take() {
            limits.release(key, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn limits(max_connections: usize, max_rate: u32) -> Limits {
        Limits {
            max_connections,
            max_rate,
            exemptions: vec!["127.0.0.1/32".parse().unwrap()],
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn concurrent_sessions_are_limited_per_client() {
        let cl = Arc::new(ClientLimits::default());
        let l = limits(2, 0);
        let now = Instant::now();
        let a = cl.admit(ip("192.0.2.1"), &l, now).unwrap();
        let _b = cl.admit(ip("192.0.2.1"), &l, now).unwrap();
        let refused = cl.admit(ip("192.0.2.1"), &l, now).unwrap_err();
        assert_eq!(refused.over, Over::Connections);
        assert!(refused.first);
        assert!(!cl.admit(ip("192.0.2.1"), &l, now).unwrap_err().first);
        // Another client is not affected.
        let _c = cl.admit(ip("192.0.2.2"), &l, now).unwrap();
        drop(a);
        let _d = cl.admit(ip("192.0.2.1"), &l, now).unwrap();
    }

    #[test]
    fn new_sessions_per_minute_are_limited_per_client() {
        let cl = Arc::new(ClientLimits::default());
        let l = limits(0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            drop(cl.admit(ip("192.0.2.1"), &l, t0).unwrap());
        }
        let refused = cl.admit(ip("192.0.2.1"), &l, t0).unwrap_err();
        assert_eq!(refused.over, Over::Rate);
        cl.admit(ip("192.0.2.9"), &l, t0).unwrap();
        // The minute is over: admitted again.
        cl.admit(ip("192.0.2.1"), &l, t0 + RATE_WINDOW).unwrap();
    }

    #[test]
    fn exempt_clients_are_never_limited_nor_remembered() {
        let cl = Arc::new(ClientLimits::default());
        let l = limits(1, 1);
        let now = Instant::now();
        let permits: Vec<_> = (0..10)
            .map(|_| cl.admit(ip("127.0.0.1"), &l, now).unwrap())
            .collect();
        // Mapped IPv4 (a dual-stack listener) is the same client.
        let _mapped = cl.admit(ip("::ffff:127.0.0.1"), &l, now).unwrap();
        assert_eq!(cl.tracked(), 0);
        drop(permits);
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        let cl = Arc::new(ClientLimits::default());
        let l = limits(1, 0);
        let now = Instant::now();
        let _a = cl.admit(ip("2001:db8:1:2::1"), &l, now).unwrap();
        let refused = cl.admit(ip("2001:db8:1:2:ffff::9"), &l, now).unwrap_err();
        assert_eq!(refused.client.to_string(), "2001:db8:1:2::/64");
        let _other_64 = cl.admit(ip("2001:db8:1:3::1"), &l, now).unwrap();
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        assert_eq!(
            ClientKey::of(ip("::ffff:192.0.2.7")),
            ClientKey::of(ip("192.0.2.7"))
        );
        assert_eq!(
            ClientKey::of(ip("::ffff:192.0.2.7")).to_string(),
            "192.0.2.7"
        );
    }

    #[test]
    fn the_map_forgets_clients_with_nothing_to_remember() {
        let cl = Arc::new(ClientLimits::default());
        let l = limits(5, 0);
        let t0 = Instant::now();
        // Without a rate limit, an entry goes with its last session.
        let p = cl.admit(ip("192.0.2.1"), &l, t0).unwrap();
        assert_eq!(cl.tracked(), 1);
        drop(p);
        assert_eq!(cl.tracked(), 0);

        // With one, it stays until its minute is over, then a sweep
        // removes it.
        let l = limits(5, 10);
        for i in 0..100u8 {
            drop(
                cl.admit(IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)), &l, t0)
                    .unwrap(),
            );
        }
        assert_eq!(cl.tracked(), 100);
        let _p = cl
            .admit(
                ip("192.0.2.200"),
                &l,
                t0 + RATE_WINDOW + Duration::from_secs(1),
            )
            .unwrap();
        assert_eq!(cl.tracked(), 1);
    }

    #[test]
    fn no_limits_remember_nothing() {
        let cl = Arc::new(ClientLimits::default());
        let _p = cl
            .admit(ip("192.0.2.1"), &limits(0, 0), Instant::now())
            .unwrap();
        assert_eq!(cl.tracked(), 0);
    }
}
