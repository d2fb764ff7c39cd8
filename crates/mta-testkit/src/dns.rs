//! A real authoritative DNS server on loopback, for tests.
//!
//! [`TestDns`] serves the records of a [`Zone`] over UDP and TCP on one
//! port of 127.0.0.1, with hickory-server. It is authoritative for the
//! root zone, so it answers every name:
//!
//! * a name with records of the asked type gets them;
//! * a name that exists (it has some record, or a name below it does) but
//!   has none of the asked type gets NOERROR with no answers (so "MX
//!   missing, A present" is the implicit-MX case);
//! * any other name gets NXDOMAIN.
//!
//! Negative answers carry an SOA whose minimum (negative TTL) is 0, so a
//! resolver has no reason to cache them.
//!
//! A [`Zone::signed`] zone is signed live with DNSSEC (hickory-server's
//! signer, an ECDSA P-256 key made for the test, NSEC for denials): a
//! validating resolver given [`Zone::trust_anchor`] (the root's DNSKEY
//! in a file) finds every answer secure, except the records a test
//! spoiled on purpose ([`Zone::bogus_tlsa`]).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use mta_testkit::dns::{TestDns, Zone};
//! let zone = Zone::new()
//!     .mx("example.test", 10, "mx1.example.test")
//!     .a("mx1.example.test", "127.0.0.2".parse().unwrap());
//! let dns = TestDns::start(zone).await?;
//! // point a resolver at dns.addr (127.0.0.1:port, UDP and TCP)
//! # drop(dns); Ok(()) }
//! ```

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use hickory_proto::dnssec::crypto::EcdsaSigningKey;
use hickory_proto::dnssec::rdata::{DNSSECRData, DNSKEY};
use hickory_proto::dnssec::{Algorithm, DnssecSigner, SigningKey};
use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_proto::rr::rdata::{A, AAAA, MX, NS, SOA, TLSA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::dnssec::NxProofKind;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;
use rustls::pki_types::PrivatePkcs8KeyDer;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;

/// TTL of every served record, in seconds.
const RECORD_TTL: u32 = 60;
/// Serial of the (single, root) zone.
const SERIAL: u32 = 1;
/// How long the server keeps an idle TCP connection open.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times to look for a port free for both UDP and TCP.
const BIND_ATTEMPTS: usize = 20;

/// One record of a [`Zone`], as given by the test.
#[derive(Clone, Debug)]
enum Data {
    Mx {
        preference: u16,
        exchange: String,
    },
    NullMx,
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Txt(String),
    Ns(String),
    Tlsa {
        usage: u8,
        selector: u8,
        matching: u8,
        data: Vec<u8>,
        /// Changed after signing, so its signature does not verify.
        bogus: bool,
    },
}

/// Records a test serves. Names are absolute or relative to nothing:
/// "example.test" means "example.test.".
#[derive(Default, Clone, Debug)]
pub struct Zone {
    records: Vec<(String, Data)>,
    /// The PKCS#8 key the root zone is signed with, when signed.
    signing_key: Option<Arc<Vec<u8>>>,
    /// The zone's apex: the root unless [`Zone::origin`] says otherwise.
    origin: Option<String>,
}

/// How long the live signatures last.
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The signing algorithm (RFC 6605), which every validator supports.
const ALGORITHM: Algorithm = Algorithm::ECDSAP256SHA256;

impl Zone {
    /// An empty zone: every name is NXDOMAIN.
    pub fn new() -> Zone {
        Zone::default()
    }

    /// `domain MX preference host`.
    pub fn mx(mut self, domain: &str, preference: u16, host: &str) -> Zone {
        self.records.push((
            domain.to_owned(),
            Data::Mx {
                preference,
                exchange: host.to_owned(),
            },
        ));
        self
    }

    /// A null MX (RFC 7505): `domain MX 0 .`.
    pub fn null_mx(mut self, domain: &str) -> Zone {
        self.records.push((domain.to_owned(), Data::NullMx));
        self
    }

    /// A zone whose apex is `name` rather than the root: the server is
    /// authoritative for `name` and below only, as a delegated child
    /// zone's server is (it answers its apex NS and SOA itself). Only
    /// names at or below `name` may be added.
    pub fn origin(mut self, name: &str) -> Zone {
        self.origin = Some(name.to_owned());
        self
    }

    fn apex(&self) -> io::Result<Name> {
        match &self.origin {
            Some(name) => absolute(name),
            None => Ok(Name::root()),
        }
    }

    /// `name NS host`: a delegation (to a zone another server serves;
    /// only a recursive resolver, `unbound::Unbound`, follows it).
    pub fn ns(mut self, name: &str, host: &str) -> Zone {
        self.records
            .push((name.to_owned(), Data::Ns(host.to_owned())));
        self
    }

    /// `host A ip`.
    pub fn a(mut self, host: &str, ip: Ipv4Addr) -> Zone {
        self.records.push((host.to_owned(), Data::A(ip)));
        self
    }

    /// `host AAAA ip`.
    pub fn aaaa(mut self, host: &str, ip: Ipv6Addr) -> Zone {
        self.records.push((host.to_owned(), Data::Aaaa(ip)));
        self
    }

    /// `name TXT "text"` (one string; several records: call it again).
    pub fn txt(mut self, name: &str, text: &str) -> Zone {
        self.records
            .push((name.to_owned(), Data::Txt(text.to_owned())));
        self
    }

    /// `name TLSA usage selector matching data` (RFC 6698), e.g. at
    /// `_25._tcp.mx.example.test`.
    pub fn tlsa(mut self, name: &str, usage: u8, selector: u8, matching: u8, data: &[u8]) -> Zone {
        self.records.push((
            name.to_owned(),
            Data::Tlsa {
                usage,
                selector,
                matching,
                data: data.to_vec(),
                bogus: false,
            },
        ));
        self
    }

    /// A TLSA record that is changed after the zone is signed: in a
    /// signed zone its signature does not verify, so a validating
    /// resolver finds it bogus.
    pub fn bogus_tlsa(
        mut self,
        name: &str,
        usage: u8,
        selector: u8,
        matching: u8,
        data: &[u8],
    ) -> Zone {
        self.records.push((
            name.to_owned(),
            Data::Tlsa {
                usage,
                selector,
                matching,
                data: data.to_vec(),
                bogus: true,
            },
        ));
        self
    }

    /// The zone signed with DNSSEC, with a key made now.
    pub fn signed(mut self) -> io::Result<Zone> {
        let key = EcdsaSigningKey::generate_pkcs8(ALGORITHM)
            .map_err(|e| io::Error::other(format!("cannot make a DNSSEC key: {e}")))?;
        self.signing_key = Some(Arc::new(key.secret_pkcs8_der().to_vec()));
        Ok(self)
    }

    /// For a signed zone, its key as a trust anchor file's content: the
    /// root's DNSKEY record (`. 3600 IN DNSKEY 257 3 13 ...`). None when
    /// the zone is not signed.
    pub fn trust_anchor(&self) -> Option<String> {
        let key = self.signing_key()?.ok()?;
        let public = key.to_public_key().ok()?;
        let record = Record::from_rdata(
            Name::root(),
            3600,
            RData::DNSSEC(DNSSECRData::DNSKEY(DNSKEY::from_key(&public))),
        );
        Some(format!("{record}\n"))
    }

    fn signing_key(&self) -> Option<io::Result<EcdsaSigningKey>> {
        let der = self.signing_key.as_ref()?;
        Some(
            EcdsaSigningKey::from_pkcs8(&PrivatePkcs8KeyDer::from(der.as_slice()), ALGORITHM)
                .map_err(|e| io::Error::other(format!("bad DNSSEC key: {e}"))),
        )
    }

    /// The hickory records, SOA of the root zone first.
    fn to_records(&self) -> io::Result<Vec<Record>> {
        let soa = SOA::new(
            absolute("ns.test")?,
            absolute("hostmaster.test")?,
            SERIAL,
            3600,
            600,
            86400,
            0,
        );
        let mut records = vec![Record::from_rdata(
            self.apex()?,
            RECORD_TTL,
            RData::SOA(soa),
        )];
        for (owner, data) in &self.records {
            let rdata = match data {
                Data::Mx {
                    preference,
                    exchange,
                } => RData::MX(MX::new(*preference, absolute(exchange)?)),
                Data::NullMx => RData::MX(MX::new(0, Name::root())),
                Data::A(ip) => RData::A(A::from(*ip)),
                Data::Aaaa(ip) => RData::AAAA(AAAA::from(*ip)),
                Data::Txt(text) => RData::TXT(TXT::new(vec![text.clone()])),
                Data::Ns(host) => RData::NS(NS(absolute(host)?)),
                Data::Tlsa {
                    usage,
                    selector,
                    matching,
                    data,
                    ..
                } => RData::TLSA(TLSA::new(
                    CertUsage::from(*usage),
                    Selector::from(*selector),
                    Matching::from(*matching),
                    data.clone(),
                )),
            };
            records.push(Record::from_rdata(absolute(owner)?, RECORD_TTL, rdata));
        }
        Ok(records)
    }

    /// A catalog with one zone handler, authoritative for the root.
    fn catalog(&self) -> io::Result<Catalog> {
        let proofs = self.signing_key.as_ref().map(|_| NxProofKind::Nsec);
        let mut handler: InMemoryZoneHandler =
            InMemoryZoneHandler::empty(self.apex()?, ZoneType::Primary, AxfrPolicy::Deny, proofs);
        for record in self.to_records()? {
            let text = record.to_string();
            if !handler.upsert_mut(record, SERIAL) {
                return Err(invalid(format!("cannot add record to test zone: {text}")));
            }
        }
        if let Some(key) = self.signing_key() {
            let key = key?;
            let dnskey = DNSKEY::from_key(&key.to_public_key().map_err(io::Error::other)?);
            let signer = DnssecSigner::new(dnskey, Box::new(key), self.apex()?, SIGNATURE_LIFETIME);
            handler
                .add_zone_signing_key_mut(signer)
                .map_err(|e| io::Error::other(format!("cannot add the zone key: {e}")))?;
            handler
                .secure_zone_mut()
                .map_err(|e| io::Error::other(format!("cannot sign the test zone: {e}")))?;
            self.spoil(&mut handler)?;
        }
        let mut catalog = Catalog::new();
        let handler: Arc<dyn ZoneHandler> = Arc::new(handler);
        catalog.upsert(LowerName::from(self.apex()?), vec![handler]);
        Ok(catalog)
    }
}

impl Zone {
    /// Changes the data of every bogus TLSA record of a signed zone,
    /// keeping the signature made for the data as it was.
    fn spoil(&self, handler: &mut InMemoryZoneHandler) -> io::Result<()> {
        for (owner, data) in &self.records {
            let Data::Tlsa { bogus: true, .. } = data else {
                continue;
            };
            let key = RrKey::new(LowerName::from(absolute(owner)?), RecordType::TLSA);
            let records = handler.records_get_mut();
            let Some(set) = records.get(&key) else {
                return Err(invalid(format!("no TLSA record at {owner} to spoil")));
            };
            let mut spoiled = (**set).clone();
            let changed = spoiled
                .records_without_rrsigs()
                .cloned()
                .map(|mut record| {
                    if let RData::TLSA(tlsa) = &mut record.data {
                        match tlsa.cert_data.first_mut() {
                            Some(byte) => *byte ^= 0xff,
                            None => tlsa.cert_data.push(0),
                        }
                    }
                    record
                })
                .collect();
            spoiled.set_records(changed);
            records.insert(key, Arc::new(spoiled));
        }
        Ok(())
    }
}

/// `name` as an absolute DNS name ("a.test" and "a.test." are the same).
fn absolute(name: &str) -> io::Result<Name> {
    let mut parsed =
        Name::from_utf8(name).map_err(|e| invalid(format!("bad DNS name {name:?}: {e}")))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Where the server runs.
enum Runner {
    /// Tasks on the caller's runtime: dropping the server aborts them.
    InRuntime(Option<Server<Catalog>>),
    /// A thread with its own runtime, stopped through the channel.
    Background {
        stop: Option<oneshot::Sender<()>>,
        thread: Option<thread::JoinHandle<()>>,
    },
}

/// A running authoritative server for a [`Zone`]; stops when dropped.
pub struct TestDns {
    /// `127.0.0.1:port`, UDP and TCP on the same port.
    pub addr: SocketAddr,
    runner: Runner,
}

impl fmt::Debug for TestDns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDns").field("addr", &self.addr).finish()
    }
}

impl TestDns {
    /// Binds UDP and TCP on one port of 127.0.0.1 and serves `zone` from
    /// tasks on the current tokio runtime (call it from inside one, e.g.
    /// a `#[tokio::test]`).
    pub async fn start(zone: Zone) -> io::Result<TestDns> {
        let (server, addr) = serve(&zone).await?;
        Ok(TestDns {
            addr,
            runner: Runner::InRuntime(Some(server)),
        })
    }

    /// Like [`TestDns::start`] but on its own thread with its own tokio
    /// runtime, for plain `#[test]`s (for example ones that run the daemon
    /// as a separate process). The thread lives until the value is dropped.
    pub fn start_in_background(zone: Zone) -> io::Result<TestDns> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<SocketAddr>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name("test-dns".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match serve(&zone).await {
                        Ok((server, addr)) => {
                            let _ = ready_tx.send(Ok(addr));
                            // Until TestDns is dropped (or forgotten: then
                            // the sender is dropped too).
                            let _ = stop_rx.await;
                            drop(server);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })?;
        let addr = match ready_rx.recv() {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(io::Error::other("test DNS thread died while starting"));
            }
        };
        Ok(TestDns {
            addr,
            runner: Runner::Background {
                stop: Some(stop_tx),
                thread: Some(thread),
            },
        })
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        match &mut self.runner {
            Runner::InRuntime(server) => {
                if let Some(server) = server.take() {
                    // Stop accepting, then drop the server: its join set
                    // aborts every listener and connection task.
                    server.shutdown_token().cancel();
                    drop(server);
                }
            }
            Runner::Background { stop, thread } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}

/// Builds the catalog, binds the sockets and starts serving on the current
/// runtime.
async fn serve(zone: &Zone) -> io::Result<(Server<Catalog>, SocketAddr)> {
    let catalog = zone.catalog()?;
    let (udp, tcp) = bind_pair().await?;
    let addr = udp.local_addr()?;
    let mut server = Server::new(catalog);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_TIMEOUT, 64);
    Ok((server, addr))
}

/// A UDP socket on 127.0.0.1:0 and a TCP listener on the same port; if
/// the port is taken for TCP, tries another.
async fn bind_pair() -> io::Result<(UdpSocket, TcpListener)> {
    let mut last_error = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free port for test DNS")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_builds_records() {
        let zone = Zone::new()
            .mx("example.test", 10, "mx1.example.test.")
            .null_mx("null.test")
            .a("mx1.example.test", Ipv4Addr::new(127, 0, 0, 2))
            .aaaa("mx1.example.test", Ipv6Addr::LOCALHOST);
        let records = zone.to_records().unwrap();
        assert_eq!(records.len(), 5);
        assert!(records.iter().all(|r| r.name.is_fqdn()));
        assert!(zone.catalog().is_ok());
    }

    #[test]
    fn bad_name_is_an_error() {
        let zone = Zone::new().a("bad..name", Ipv4Addr::LOCALHOST);
        assert_eq!(
            zone.to_records().unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[tokio::test]
    async fn binds_udp_and_tcp_on_one_loopback_port() {
        let dns = TestDns::start(Zone::new()).await.unwrap();
        assert!(dns.addr.ip().is_loopback());
        assert_ne!(dns.addr.port(), 0);
        // The TCP side accepts connections on the same port.
        tokio::net::TcpStream::connect(dns.addr).await.unwrap();
    }

    #[test]
    fn background_server_starts_and_stops() {
        let dns = TestDns::start_in_background(Zone::new()).unwrap();
        let addr = dns.addr;
        std::net::TcpStream::connect(addr).unwrap();
        drop(dns);
    }
}
