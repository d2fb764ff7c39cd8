//! MTA-STS lookups against a real DNS server and a real HTTPS policy host
//! on 127.0.0.1: what RFC 8461 section 3.3 asks of the fetch (a verified
//! certificate, 200 only, no redirect, a size and a time limit), and the
//! cache when a fetch fails.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;
use mta_deliver::sts::policy::Mode;
use mta_deliver::{CachedPolicy, MtaSts, PolicyCache, Resolver, ResolverConfig};
use mta_testkit::dns::{TestDns, Zone};
use mta_testkit::https::{Answer, PolicyHost};

const POLICY: &str = "version: STSv1\nmode: enforce\nmx: *.example.test\nmax_age: 86400\n";

struct Setup {
    _dns: TestDns,
    host: PolicyHost,
    _ca: tempfile::NamedTempFile,
    sts: MtaSts,
    cache: PolicyCache,
}

/// `example.test` publishing policy id `1`, its policy host answering
/// `answer` with a certificate for `cert_name`, and a lookup trusting the
/// host's CA only.
async fn setup(cert_name: &str, answer: Answer) -> Setup {
    let dns = TestDns::start(
        Zone::new()
            .txt("_mta-sts.example.test", "v=STSv1; id=1;")
            .a("mta-sts.example.test", Ipv4Addr::LOCALHOST),
    )
    .await
    .unwrap();
    let host = PolicyHost::start(cert_name, answer).unwrap();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &host.ca_pem).unwrap();
    let mut config = config();
    config.delivery.system_roots = false;
    let sts = &mut config.delivery.mta_sts;
    sts.port = host.addr.port();
    sts.ca_file = Some(ca.path().to_owned());
    sts.fetch_timeout = Duration::from_secs(2);
    sts.max_policy_size = 1000;
    let resolver = Resolver::new(&ResolverConfig {
        name_servers: vec![dns.addr],
        timeout: Duration::from_secs(2),
        attempts: 1,
    })
    .unwrap();
    let cache = PolicyCache::default();
    let sts = MtaSts::new(&config, resolver, cache.clone())
        .unwrap()
        .expect("enabled by default");
    Setup {
        _dns: dns,
        host,
        _ca: ca,
        sts,
        cache,
    }
}

#[tokio::test]
async fn a_policy_is_fetched_once_and_cached() {
    let s = setup("mta-sts.example.test", Answer::ok(POLICY)).await;
    let found = s.sts.policy("Example.TEST.").await.expect("a policy");
    assert_eq!(found.domain, "example.test");
    assert_eq!(found.id, "1");
    assert_eq!(found.policy.mode, Mode::Enforce);
    assert_eq!(found.policy.mx, ["*.example.test"]);
    assert_eq!(s.sts.policy("example.test").await, Some(found));
    assert_eq!(s.host.requests(), 1);
}

#[tokio::test]
async fn a_domain_without_a_record_has_no_policy_and_nothing_is_fetched() {
    let s = setup("mta-sts.example.test", Answer::ok(POLICY)).await;
    assert_eq!(s.sts.policy("other.test").await, None);
    assert_eq!(s.sts.policy("[127.0.0.1]").await, None);
    assert_eq!(s.host.requests(), 0);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let mut answer = Answer::ok("");
    answer.status = 302;
    answer.headers = vec![("location".into(), "/.well-known/mta-sts.txt?again".into())];
    let s = setup("mta-sts.example.test", answer).await;
    assert_eq!(s.sts.policy("example.test").await, None);
    assert_eq!(s.host.requests(), 1);
}

#[tokio::test]
async fn only_200_counts() {
    let mut answer = Answer::ok(POLICY);
    answer.status = 203;
    let s = setup("mta-sts.example.test", answer).await;
    assert_eq!(s.sts.policy("example.test").await, None);
}

#[tokio::test]
async fn a_policy_over_the_size_limit_is_refused() {
    let big = format!("{POLICY}{}", "x: y\n".repeat(300));
    let s = setup("mta-sts.example.test", Answer::ok(&big)).await;
    assert_eq!(s.sts.policy("example.test").await, None);
    s.host.set_answer(Answer::ok(POLICY));
    assert!(s.sts.policy("example.test").await.is_some());
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let s = setup("www.example.test", Answer::ok(POLICY)).await;
    assert_eq!(s.sts.policy("example.test").await, None);
    assert_eq!(s.host.requests(), 0, "a request went to an unverified host");
}

#[tokio::test]
async fn a_fetch_that_takes_too_long_is_given_up() {
    let mut answer = Answer::ok(POLICY);
    answer.delay = Duration::from_secs(30);
    let s = setup("mta-sts.example.test", answer).await;
    let started = Instant::now();
    assert_eq!(s.sts.policy("example.test").await, None);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_failed_fetch_leaves_a_fresh_cached_policy_in_force() {
    let mut s = setup("mta-sts.example.test", Answer::ok(POLICY)).await;
    s.host.stop();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let old = CachedPolicy {
        domain: "example.test".into(),
        // An older id: the record's new one asks for a fetch, which fails.
        id: "0".into(),
        fetched: now - 10,
        policy: mta_deliver::sts::policy::Policy::parse(POLICY.as_bytes()).unwrap(),
    };
    s.cache.put(old.clone());
    assert_eq!(s.sts.policy("example.test").await, Some(old.clone()));
    // Past its max_age, it is gone with the failed fetch.
    let expired = CachedPolicy {
        fetched: now - 86_400,
        ..old
    };
    s.cache.put(expired);
    assert_eq!(s.sts.policy("example.test").await, None);
}
