//! DANE lookups (RFC 7672 section 2.2) against a real DNS server on
//! 127.0.0.1 that signs its root zone live, validated from that zone's
//! key: secure TLSA records, unusable ones, none, bogus ones, and zones
//! that are not signed.

use std::net::Ipv4Addr;
use std::time::Duration;

use mta_deliver::dane::tlsa::Tlsa;
use mta_deliver::{Dane, DanePolicy, HostTlsa, ResolverConfig, Target};
use mta_testkit::dns::{TestDns, Zone};

const PORT: u16 = 2525;
const SPKI: [u8; 32] = [7; 32];

/// The MX of `example.test` and its host.
fn zone() -> Zone {
    Zone::new()
        .mx("example.test", 10, "mx.example.test")
        .a("mx.example.test", Ipv4Addr::new(127, 0, 0, 2))
}

fn target() -> Vec<Target> {
    vec![Target {
        host: "mx.example.test".into(),
        addrs: vec![(Ipv4Addr::new(127, 0, 0, 2), PORT).into()],
    }]
}

/// The DANE policy of `example.test` as `zone` (signed or not) says,
/// validated from `anchor` (the zone's own key when None).
async fn policy_with(zone: Zone, anchor: Option<String>) -> Option<DanePolicy> {
    policy_targets(zone, anchor, &target()).await
}

async fn policy_targets(
    zone: Zone,
    anchor: Option<String>,
    targets: &[Target],
) -> Option<DanePolicy> {
    let anchor = anchor
        .or_else(|| zone.trust_anchor())
        .expect("a trust anchor");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), anchor).unwrap();
    let dns = TestDns::start(zone).await.unwrap();
    let config = mta_config::DaneConfig {
        enabled: true,
        trust_anchor: Some(file.path().to_owned()),
    };
    let resolver = ResolverConfig {
        name_servers: vec![dns.addr],
        timeout: Duration::from_secs(2),
        attempts: 1,
    };
    let dane = Dane::new(&config, &resolver, PORT).unwrap().unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        dane.policy("example.test", targets),
    )
    .await
    .expect("the lookup ends")
}

async fn policy(zone: Zone) -> Option<DanePolicy> {
    policy_with(zone, None).await
}

fn host(policy: &Option<DanePolicy>) -> &HostTlsa {
    policy
        .as_ref()
        .expect("DANE applies")
        .host("mx.example.test")
        .expect("the MX host is listed")
}

#[tokio::test]
async fn secure_usable_records_are_found_and_unusable_ones_left_out() {
    let zone = zone()
        .tlsa("_2525._tcp.mx.example.test", 3, 1, 1, &SPKI)
        .tlsa("_2525._tcp.mx.example.test", 1, 1, 1, &SPKI)
        .signed()
        .unwrap();
    let found = policy(zone).await;
    assert_eq!(
        host(&found),
        &HostTlsa::Usable {
            owner: "_2525._tcp.mx.example.test".into(),
            records: vec![Tlsa {
                usage: 3,
                selector: 1,
                matching: 1,
                data: SPKI.to_vec(),
            }],
        }
    );
}

#[tokio::test]
async fn only_unusable_records_still_mean_tls() {
    let zone = zone()
        .tlsa("_2525._tcp.mx.example.test", 1, 1, 1, &SPKI)
        .signed()
        .unwrap();
    assert_eq!(host(&policy(zone).await), &HostTlsa::Unusable);
}

/// A signed zone without TLSA records for a host (a secure denial) is no
/// DANE for that host; a domain with none at all is not DANE's.
#[tokio::test]
async fn a_host_without_tlsa_records_in_a_signed_zone_is_not_listed() {
    let zone = zone()
        .mx("example.test", 20, "mx2.example.test")
        .a("mx2.example.test", Ipv4Addr::new(127, 0, 0, 3))
        .tlsa("_2525._tcp.mx.example.test", 3, 1, 1, &SPKI)
        .signed()
        .unwrap();
    let mut targets = target();
    targets.push(Target {
        host: "mx2.example.test".into(),
        addrs: vec![(Ipv4Addr::new(127, 0, 0, 3), PORT).into()],
    });
    let found = policy_targets(zone, None, &targets)
        .await
        .expect("DANE applies");
    assert!(matches!(
        found.host("mx.example.test"),
        Some(HostTlsa::Usable { .. })
    ));
    assert_eq!(found.host("mx2.example.test"), None, "{found:?}");
    assert_eq!(found.hosts.len(), 1);

    assert_eq!(policy(zone_without_tlsa()).await, None);
}

fn zone_without_tlsa() -> Zone {
    zone().signed().unwrap()
}

#[tokio::test]
async fn a_record_changed_after_signing_is_a_failed_lookup() {
    let zone = zone()
        .bogus_tlsa("_2525._tcp.mx.example.test", 3, 1, 1, &SPKI)
        .signed()
        .unwrap();
    let found = policy(zone).await;
    let HostTlsa::Failed(reason) = host(&found) else {
        panic!("not failed: {found:?}");
    };
    assert!(reason.contains("TLSA lookup"), "{reason}");
}

/// Records signed with another key than the one trusted: nothing
/// validates, and DANE fails rather than going on without it.
#[tokio::test]
async fn a_zone_signed_by_an_untrusted_key_fails() {
    let other = Zone::new().signed().unwrap().trust_anchor().unwrap();
    let signed = zone()
        .tlsa("_2525._tcp.mx.example.test", 3, 1, 1, &SPKI)
        .signed()
        .unwrap();
    let found = policy_with(signed, Some(other.clone())).await;
    assert!(matches!(host(&found), HostTlsa::Failed(_)), "{found:?}");
    // So is an unsigned zone (the test DNS's root, unless signed).
    let unsigned = zone().tlsa("_2525._tcp.mx.example.test", 3, 1, 1, &SPKI);
    let found = policy_with(unsigned, Some(other)).await;
    assert!(matches!(host(&found), HostTlsa::Failed(_)), "{found:?}");
}
