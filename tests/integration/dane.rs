//! DANE (RFC 7672) end to end: the real mtad, the test DNS signing its
//! root zone live with a key made for the test (given to mtad as
//! `[delivery.dane] trust_anchor`), MX hosts with TLSA records at
//! `_<port>._tcp.<mx>`, and SMTP sinks with STARTTLS on 127.0.0.x.

use std::net::SocketAddr;

use mta_testkit::dns::{TestDns, Zone};
use mta_testkit::https::{Answer, PolicyHost};
use mta_testkit::sink::{Sink, SinkConfig, TlsIdentity};
use ring::digest;

use crate::delivery::{ip, sinks, WAIT};
use crate::mta_sts::{outcome, send};
use crate::util::{message, wait_until, Mtad, Workdir};

const MX: &str = "mx1.example.test";

/// The SHA-256 of `data`, for matching type 1.
fn sha256(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, data).as_ref().to_vec()
}

/// A certificate for `names` (self-signed, or issued by `ca`) with its
/// key, as a sink's identity, and its key's SPKI.
fn identity(names: &[&str], ca: Option<&Ca>) -> (TlsIdentity, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    let mut chain = Vec::new();
    match ca {
        Some(ca) => {
            chain.push(
                params
                    .signed_by(&key, &ca.cert, &ca.key)
                    .unwrap()
                    .der()
                    .clone(),
            );
            // RFC 7671 section 5.2.2: the server sends its trust anchor.
            chain.push(ca.cert.der().clone());
        }
        None => chain.push(params.self_signed(&key).unwrap().der().clone()),
    }
    let identity = TlsIdentity {
        chain,
        key_pkcs8: key.serialize_der(),
    };
    (identity, key.public_key_der())
}

/// A test certificate authority.
struct Ca {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "DANE test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca { key, cert }
    }
}

/// A sink on 127.0.0.`last`, with STARTTLS and `identity` when given.
fn sink(last: u8, identity: Option<TlsIdentity>) -> (u16, Sink) {
    let (port, mut all) = sinks(&[ip(last)], || SinkConfig {
        tls: identity.is_some(),
        tls_identity: identity.clone(),
        ..SinkConfig::default()
    });
    (port, all.remove(0))
}

/// `example.test`, its MX `mx1.example.test` at 127.0.0.`last`, and the
/// TLSA records `records` (usage, selector, matching, data) for `port`.
fn zone(last: u8, port: u16, records: &[(u8, u8, u8, Vec<u8>)]) -> Zone {
    let mut zone = Zone::new().mx("example.test", 10, MX).a(MX, ip(last));
    for (usage, selector, matching, data) in records {
        zone = zone.tlsa(
            &format!("_{port}._tcp.{MX}"),
            *usage,
            *selector,
            *matching,
            data,
        );
    }
    zone
}

/// mtad and the signed DNS of one test.
struct Run {
    work: Workdir,
    _dns: TestDns,
    _anchor: tempfile::NamedTempFile,
    mtad: Mtad,
}

/// Signs `zone`, serves it, and starts mtad delivering to `port`, with
/// the zone's key as its trust anchor and `more` in its configuration.
fn start(zone: Zone, port: u16, more: &str) -> Run {
    let zone = zone.signed().unwrap();
    let anchor = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(anchor.path(), zone.trust_anchor().unwrap()).unwrap();
    let dns = TestDns::start_in_background(zone).unwrap();
    let work = Workdir::new();
    configure(&work, dns.addr, port, anchor.path(), more);
    let mtad = Mtad::start(&work);
    Run {
        work,
        _dns: dns,
        _anchor: anchor,
        mtad,
    }
}

fn configure(work: &Workdir, dns: SocketAddr, port: u16, anchor: &std::path::Path, more: &str) {
    work.write_config(
        "",
        &format!(
            "[smtp]\nlisten = [\"127.0.0.1:0\"]\nlocal_domains = [\"local.test\"]\n\
             [delivery]\nport = {port}\nname_servers = [\"{dns}\"]\ndns_timeout = \"2s\"\n\
             system_roots = false\n\
             [delivery.timeouts]\nconnect = \"2s\"\ngreeting = \"5s\"\nehlo = \"5s\"\nmail = \"5s\"\nrcpt = \"5s\"\ndata_init = \"5s\"\ndata_block = \"5s\"\ndata_end = \"5s\"\nquit = \"2s\"\n\
             [delivery.dane]\ntrust_anchor = {:?}\n\
             {more}\n\
             [queue]\nretry_base = \"1h\"\n",
            anchor.display().to_string(),
        ),
    );
}

fn metrics(mtad: &Mtad) -> String {
    let (code, text) = crate::http::request(
        mtad.http.expect("[http] listens"),
        "GET",
        "/metrics",
        None,
        None,
    );
    assert_eq!(code, 200);
    text
}

/// Deferred with 4.7.5 for DANE, `queue show` says why, nothing reached
/// the sink, and the failure is counted.
fn assert_deferred_by_dane(run: &Run, id: &str, sink: &Sink, why: &str) {
    let e = outcome(&run.work, id);
    assert_eq!(e["event"], "deferred", "{e}");
    assert_eq!(e["status"], "4.7.5", "{e}");
    let reply = e["reply"].as_str().unwrap();
    assert!(
        reply.starts_with("DANE policy of example.test: "),
        "{reply}"
    );
    assert!(reply.contains(why), "{reply}");
    assert!(sink.messages().is_empty(), "a message reached the sink");
    let shown = crate::util::queue(&run.work, &["show", id]);
    assert!(shown.contains("DANE policy of example.test"), "{shown}");
    let metrics = metrics(&run.mtad);
    assert!(
        metrics.contains("mta_tls_policy_failures_total{policy=\"dane\",mode=\"enforce\"} 1"),
        "{metrics}"
    );
}

#[test]
fn dane_ee_matching_the_key_delivers_verified_by_dane() {
    // A certificate for another name: DANE-EE checks no name.
    let (identity, spki) = identity(&["other.test"], None);
    let (port, sink) = sink(41, Some(identity));
    let run = start(zone(41, port, &[(3, 1, 1, sha256(&spki))]), port, "");
    let id = send(&run.mtad, "dane-ee");
    let e = outcome(&run.work, &id);
    assert_eq!(e["event"], "delivered", "{e}");
    assert_eq!(e["verified"], "dane", "{e}");
    let tls = e["tls"].as_str().unwrap();
    assert!(tls.starts_with("TLSv1."), "{e}");
    assert!(sink.wait_for_messages_blocking(1, WAIT)[0].tls);
    let metrics = metrics(&run.mtad);
    let line = format!("mta_deliveries_by_tls_total{{verified=\"dane\",tls=\"{tls}\"}} 1");
    assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    assert!(
        metrics.contains("mta_tls_policy_failures_total{policy=\"dane\",mode=\"enforce\"} 0"),
        "{metrics}"
    );
}

#[test]
fn dane_ee_of_the_whole_certificate_delivers_verified_by_dane() {
    let (identity, _) = identity(&[MX], None);
    let cert = identity.chain[0].to_vec();
    let (port, sink) = sink(42, Some(identity));
    let run = start(zone(42, port, &[(3, 0, 1, sha256(&cert))]), port, "");
    let id = send(&run.mtad, "dane-ee 3 0 1");
    let e = outcome(&run.work, &id);
    assert_eq!(e["event"], "delivered", "{e}");
    assert_eq!(e["verified"], "dane", "{e}");
    assert_eq!(sink.wait_for_messages_blocking(1, WAIT).len(), 1);
}

#[test]
fn a_tlsa_record_that_does_not_match_defers_and_sends_nothing() {
    let (identity, _) = identity(&[MX], None);
    let (_, other_spki) = self::identity(&[MX], None);
    let (port, sink) = sink(43, Some(identity));
    let run = start(zone(43, port, &[(3, 1, 1, sha256(&other_spki))]), port, "");
    let id = send(&run.mtad, "no match");
    assert_deferred_by_dane(
        &run,
        &id,
        &sink,
        &format!("no TLSA record of _{port}._tcp.{MX} matches"),
    );
}

#[test]
fn dane_ta_with_a_chain_for_the_mx_name_delivers_verified_by_dane() {
    let ca = Ca::new();
    let (identity, _) = identity(&[MX], Some(&ca));
    let (port, sink) = sink(44, Some(identity));
    let anchor = sha256(&ca.key.public_key_der());
    let run = start(zone(44, port, &[(2, 1, 1, anchor)]), port, "");
    let id = send(&run.mtad, "dane-ta");
    let e = outcome(&run.work, &id);
    assert_eq!(e["event"], "delivered", "{e}");
    assert_eq!(e["verified"], "dane", "{e}");
    assert_eq!(sink.wait_for_messages_blocking(1, WAIT).len(), 1);
}

#[test]
fn dane_ta_with_a_certificate_for_another_name_defers() {
    let ca = Ca::new();
    let (identity, _) = identity(&["mx.elsewhere.test"], Some(&ca));
    let (port, sink) = sink(45, Some(identity));
    let anchor = sha256(&ca.key.public_key_der());
    let run = start(zone(45, port, &[(2, 1, 1, anchor)]), port, "");
    let id = send(&run.mtad, "dane-ta, wrong name");
    assert_deferred_by_dane(&run, &id, &sink, "DANE-TA 2 1 1");
}

/// Secure TLSA records, none usable (PKIX-EE is not for SMTP): TLS is
/// still required, without authentication.
#[test]
fn only_unusable_records_deliver_over_tls_unverified() {
    let (identity, spki) = identity(&[MX], None);
    let (port, sink) = sink(46, Some(identity));
    let run = start(zone(46, port, &[(1, 1, 1, sha256(&spki))]), port, "");
    let id = send(&run.mtad, "encrypt");
    let e = outcome(&run.work, &id);
    assert_eq!(e["event"], "delivered", "{e}");
    assert_eq!(e["verified"], "none", "{e}");
    assert!(e["tls"].as_str().unwrap().starts_with("TLSv1."), "{e}");
    assert!(sink.wait_for_messages_blocking(1, WAIT)[0].tls);
}

/// Unusable records and a server without STARTTLS: not in plaintext.
#[test]
fn only_unusable_records_and_no_starttls_defers() {
    let (port, sink) = sink(47, None);
    let run = start(zone(47, port, &[(1, 1, 1, vec![0; 32])]), port, "");
    let id = send(&run.mtad, "encrypt, no starttls");
    assert_deferred_by_dane(&run, &id, &sink, "did not offer STARTTLS");
}

#[test]
fn usable_records_and_no_starttls_defers() {
    let (port, sink) = sink(48, None);
    let run = start(zone(48, port, &[(3, 1, 1, vec![0; 32])]), port, "");
    let id = send(&run.mtad, "no starttls");
    assert_deferred_by_dane(&run, &id, &sink, "did not offer STARTTLS");
}

/// A signed zone without TLSA records: opportunistic TLS as before, here
/// in plaintext since the sink has no STARTTLS.
#[test]
fn no_tlsa_record_delivers_as_before() {
    let (port, sink) = sink(49, None);
    let run = start(zone(49, port, &[]), port, "");
    let id = send(&run.mtad, "no tlsa");
    let e = outcome(&run.work, &id);
    assert_eq!(e["event"], "delivered", "{e}");
    // Plaintext: the line has no TLS fields.
    assert!(e.get("tls").is_none() && e.get("verified").is_none(), "{e}");
    assert!(!sink.wait_for_messages_blocking(1, WAIT)[0].tls);
}

/// A TLSA record whose signature does not verify (changed after
/// signing): the lookup is bogus, the host is not tried.
#[test]
fn a_bogus_tlsa_lookup_defers() {
    let (identity, spki) = identity(&[MX], None);
    let (port, sink) = sink(50, Some(identity));
    let zone = Zone::new()
        .mx("example.test", 10, MX)
        .a(MX, ip(50))
        .bogus_tlsa(&format!("_{port}._tcp.{MX}"), 3, 1, 1, &sha256(&spki));
    let run = start(zone, port, "");
    let id = send(&run.mtad, "bogus");
    assert_deferred_by_dane(&run, &id, &sink, "TLSA lookup");
    assert_eq!(
        sink.connections(),
        0,
        "a host whose TLSA lookup failed was contacted"
    );
}

/// DANE takes precedence over MTA-STS (RFC 8461 section 2): the policy
/// in enforce mode names another MX host, and would defer; DANE decides.
#[test]
fn dane_decides_over_an_mta_sts_policy() {
    let host = PolicyHost::start(
        "mta-sts.example.test",
        Answer::ok(
            "version: STSv1\r\nmode: enforce\r\nmx: mx.elsewhere.test\r\nmax_age: 86400\r\n",
        ),
    )
    .unwrap();
    let sts_ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(sts_ca.path(), &host.ca_pem).unwrap();
    let (identity, spki) = identity(&[MX], None);
    let (port, sink) = sink(51, Some(identity));
    let zone = zone(51, port, &[(3, 1, 1, sha256(&spki))])
        .txt("_mta-sts.example.test", "v=STSv1; id=1;")
        .a("mta-sts.example.test", ip(1));
    let run = start(
        zone,
        port,
        &format!(
            "[delivery.mta_sts]\nport = {}\nca_file = {:?}\nfetch_timeout = \"5s\"\n",
            host.addr.port(),
            sts_ca.path().display().to_string()
        ),
    );
    let id = send(&run.mtad, "dane and mta-sts");
    let e = outcome(&run.work, &id);
    assert_eq!(e["event"], "delivered", "{e}");
    assert_eq!(e["verified"], "dane", "{e}");
    assert_eq!(sink.wait_for_messages_blocking(1, WAIT).len(), 1);
    // The policy was fetched: it was there to be overruled.
    assert_eq!(host.requests(), 1);
}

/// An explicit `[delivery.tls_policy]` entry wins over DANE, with a
/// warning.
#[test]
fn an_explicit_tls_policy_overrides_dane_with_a_warning() {
    let (identity, _) = identity(&[MX], None);
    let (port, sink) = sink(52, Some(identity));
    let work_zone = zone(52, port, &[(3, 1, 1, vec![0; 32])]);
    let zone = work_zone.signed().unwrap();
    let anchor = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(anchor.path(), zone.trust_anchor().unwrap()).unwrap();
    let dns = TestDns::start_in_background(zone).unwrap();
    let work = Workdir::new();
    configure(&work, dns.addr, port, anchor.path(), "");
    // The entry goes in [delivery], before its subtables.
    let path = work.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen(
        "system_roots = false\n",
        "system_roots = false\ntls_policy = { \"example.test\" = \"opportunistic\" }\n",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let mtad = Mtad::start(&work);
    let id = send(&mtad, "overridden");
    let e = outcome(&work, &id);
    assert_eq!(e["event"], "delivered", "{e}");
    assert_eq!(e["verified"], "none", "{e}");
    assert_eq!(sink.wait_for_messages_blocking(1, WAIT).len(), 1);
    wait_until("the override warning", WAIT, || {
        mtad.log().contains("overrides the DANE TLSA records")
    });
}

/// DANE decides per MX host: the preferred host's TLSA lookup is bogus,
/// so it is not tried; the next host's records match, and it takes the
/// message.
#[test]
fn a_host_whose_tlsa_lookup_failed_is_skipped_for_the_next() {
    // One identity for both: the first host's records never matter.
    let (both, spki) = identity(&[MX, "mx2.example.test"], None);
    let (port, mut all) = sinks(&[ip(53), ip(54)], || SinkConfig {
        tls: true,
        tls_identity: Some(both.clone()),
        ..SinkConfig::default()
    });
    let good = all.remove(1);
    let bad = all.remove(0);
    let zone = Zone::new()
        .mx("example.test", 10, MX)
        .mx("example.test", 20, "mx2.example.test")
        .a(MX, ip(53))
        .a("mx2.example.test", ip(54))
        .bogus_tlsa(&format!("_{port}._tcp.{MX}"), 3, 1, 1, &[0; 32])
        .tlsa(
            &format!("_{port}._tcp.mx2.example.test"),
            3,
            1,
            1,
            &sha256(&spki),
        );
    let run = start(zone, port, "");
    let id = send(&run.mtad, "next host");
    let e = outcome(&run.work, &id);
    assert_eq!(e["event"], "delivered", "{e}");
    assert_eq!(e["verified"], "dane", "{e}");
    assert!(
        e["remote"]
            .as_str()
            .unwrap()
            .starts_with("mx2.example.test["),
        "{e}"
    );
    assert_eq!(good.wait_for_messages_blocking(1, WAIT).len(), 1);
    assert_eq!(
        bad.connections(),
        0,
        "the host whose TLSA lookup failed was contacted"
    );
}

#[test]
fn configtest_warns_when_tls_policy_lowers_published_tlsa_records() {
    let (identity, _) = identity(&[MX], None);
    let (port, _sink) = sink(53, Some(identity));
    let zone = zone(53, port, &[(3, 1, 1, vec![0; 32])]).signed().unwrap();
    let anchor = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(anchor.path(), zone.trust_anchor().unwrap()).unwrap();
    let dns = TestDns::start_in_background(zone).unwrap();
    let work = Workdir::new();
    let lowered = "lowers the DANE TLSA records the MX hosts of example.test publish";
    for (entry, warned) in [("none", true), ("opportunistic", true), ("required", false)] {
        configure(&work, dns.addr, port, anchor.path(), "");
        let path = work.config_path();
        let text = std::fs::read_to_string(&path).unwrap().replacen(
            "system_roots = false\n",
            &format!("system_roots = false\ntls_policy = {{ \"example.test\" = \"{entry}\" }}\n"),
            1,
        );
        std::fs::write(&path, text).unwrap();
        let out = crate::util::init(&work, &["configtest"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert_eq!(err.contains(lowered), warned, "{entry}: {err}");
    }
}

/// A real delegation, as on the Internet: a signed root (the test's trust
/// anchor) delegating `example.test` to an unsigned zone on another
/// server, and a private Unbound as the recursive resolver mtad asks
/// (a test DNS server alone is authoritative for everything and follows
/// no delegation). The root's NSEC proves `example.test` has no DS: the
/// domain is provably unsigned, so DANE does not apply, even to the TLSA
/// record its unsigned zone serves (an attacker could have forged it),
/// and its mail goes as before.
#[test]
fn an_unsigned_domain_under_a_signed_root_is_delivered_as_before() {
    if !crate::util::have(mta_testkit::unbound::UNBOUND, "-V") {
        return;
    }
    let (identity, _) = identity(&[MX], None);
    let (port, sink) = sink(54, Some(identity));
    // The child zone, its own server authoritative for it alone, with its
    // apex NS records as every zone has; its TLSA record matches nothing,
    // so it would defer the mail if DANE took it.
    let child = Zone::new()
        .origin("example.test")
        .ns("example.test", "ns.example.test")
        .mx("example.test", 10, MX)
        .a(MX, ip(54))
        .tlsa(&format!("_{port}._tcp.{MX}"), 3, 1, 1, &[0; 32]);
    let child_dns = TestDns::start_in_background(child).unwrap();
    // A root has NS records at its apex (a resolver primes with them).
    // The control: signed.test lives in the signed root itself, with the
    // same TLSA record that matches nothing, so through the same resolver
    // DANE applies to it and defers its mail.
    const SIGNED_MX: &str = "mx2.signed.test";
    let root = Zone::new()
        .ns(".", "ns.root.test")
        .a("ns.root.test", ip(1))
        .ns("example.test", "ns.example.test")
        .mx("signed.test", 10, SIGNED_MX)
        .a(SIGNED_MX, ip(54))
        .tlsa(&format!("_{port}._tcp.{SIGNED_MX}"), 3, 1, 1, &[0; 32])
        .signed()
        .unwrap();
    let anchor_text = root.trust_anchor().unwrap();
    let anchor = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(anchor.path(), &anchor_text).unwrap();
    let root_dns = TestDns::start_in_background(root).unwrap();
    let resolver_dir = tempfile::tempdir().unwrap();
    let unbound = mta_testkit::unbound::Unbound::start(
        resolver_dir.path(),
        &anchor_text,
        &[(".", root_dns.addr), ("example.test.", child_dns.addr)],
    )
    .unwrap();
    let work = Workdir::new();
    configure(&work, unbound.addr, port, anchor.path(), "");
    let mtad = Mtad::start(&work);
    let id = send(&mtad, "unsigned domain");
    let e = outcome(&work, &id);
    assert_eq!(e["event"], "delivered", "{e}\n{}", mtad.log());
    assert_eq!(e["verified"], "none", "{e}");
    assert_eq!(sink.wait_for_messages_blocking(1, WAIT).len(), 1);
    assert!(
        metrics(&mtad)
            .contains("mta_tls_policy_failures_total{policy=\"dane\",mode=\"enforce\"} 0"),
        "{}",
        metrics(&mtad)
    );

    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let r = c.send_message("alice@local.test", &["bob@signed.test"], &message("signed"));
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    let id = r.text().rsplit(' ').next().unwrap().to_owned();
    let e = outcome(&work, &id);
    assert_eq!(e["event"], "deferred", "{e}");
    assert_eq!(e["status"], "4.7.5", "{e}");
    assert_eq!(sink.messages().len(), 1, "nothing more reached the sink");
}

#[test]
fn configtest_refuses_a_trust_anchor_file_without_a_key() {
    let work = Workdir::new();
    let anchor = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(anchor.path(), "; no key here\n").unwrap();
    configure(&work, "127.0.0.1:9".parse().unwrap(), 25, anchor.path(), "");
    let out = crate::util::init(&work, &["configtest"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("delivery.dane.trust_anchor"), "{err}");
    assert!(
        Mtad::try_start(&work).is_err(),
        "mtad started without a trust anchor"
    );
}
