//! STARTTLS: opportunistic, required and verified, and the failures of
//! each.

mod common;

use std::io::Write;

use common::*;
use mta_deliver::{Attempt, Client, ClientError, Outcome, TlsPolicy, Verification};
use mta_testkit::sink::{Sink, SinkConfig};

fn tls_sink() -> SinkConfig {
    SinkConfig {
        tls: true,
        tls_names: vec!["mx.secure.test".into()],
        ..SinkConfig::default()
    }
}

fn ca_file(pem: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(pem.as_bytes()).unwrap();
    file
}

/// The certificate was not trusted: the message waits (4.7.5), after one
/// connection, and nothing was sent in plaintext.
fn assert_refused_at_the_handshake(attempt: &Attempt, sink: &Sink) {
    match attempt.outcome(0).unwrap() {
        Outcome::Deferred { status, reason, .. } => {
            assert_eq!(status, "4.7.5");
            assert!(reason.contains("TLS handshake"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sink.connections(), 1);
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn opportunistic_tls_is_used_when_offered() {
    let sink = sink_on([127, 0, 0, 40], tls_sink()).await;
    let mut config = config();
    config.delivery.tls = TlsPolicy::Opportunistic;
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("localhost", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    let tls = attempt.tls.expect("TLS used");
    assert!(tls.version.starts_with("TLSv1."), "{tls}");
    assert!(!tls.cipher.is_empty(), "{tls}");
    assert_eq!(
        tls.verified,
        Verification::None,
        "opportunistic TLS verifies nothing"
    );
    let got = sink.wait_for_messages(1, WAIT).await;
    assert!(got[0].tls);
    // EHLO again after TLS (RFC 3207 section 4.2).
    let ehlos = sink
        .commands()
        .iter()
        .filter(|(_, c)| c.starts_with("EHLO"))
        .count();
    assert_eq!(ehlos, 2);
}

/// The certificate is self-signed for other names: opportunistic TLS does
/// not care (RFC 7435).
#[tokio::test]
async fn opportunistic_tls_accepts_any_certificate() {
    let sink = sink_on([127, 0, 0, 41], tls_sink()).await;
    let mut config = config();
    config.delivery.tls = TlsPolicy::Opportunistic;
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("wrong-name.test", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    assert!(attempt.tls.is_some());
}

#[tokio::test]
async fn a_failed_opportunistic_handshake_retries_in_plaintext() {
    let sink = sink_on([127, 0, 0, 42], tls_sink()).await;
    sink.set_break_tls(true);
    let mut config = config();
    config.delivery.tls = TlsPolicy::Opportunistic;
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("localhost", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    assert_eq!(attempt.tls, None);
    assert_eq!(sink.connections(), 2);
    let got = sink.wait_for_messages(1, WAIT).await;
    assert!(!got[0].tls);
}

#[tokio::test]
async fn required_tls_verifies_against_the_ca_file() {
    let sink = sink_on([127, 0, 0, 43], tls_sink()).await;
    let ca = ca_file(&sink.cert_pem().unwrap());
    let mut config = config();
    config
        .delivery
        .tls_policy
        .insert("secure.test".into(), TlsPolicy::Required);
    config.delivery.ca_file = Some(ca.path().to_owned());
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@secure.test"]);
    let dest = destination("Secure.Test", vec![target("mx.secure.test", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    assert_eq!(attempt.tls.unwrap().verified, Verification::Ca);
    assert!(sink.wait_for_messages(1, WAIT).await[0].tls);
    let counts = client.tls_counts();
    assert_eq!(counts.delivered.len(), 1, "{counts:?}");
    assert_eq!(counts.delivered.keys().next().unwrap().0, Verification::Ca);
}

#[tokio::test]
async fn required_tls_without_starttls_defers_and_tries_the_next_host() {
    let plain = sink_on([127, 0, 0, 44], SinkConfig::default()).await;
    let secure = sink_on([127, 0, 0, 45], tls_sink()).await;
    let ca = ca_file(&secure.cert_pem().unwrap());
    let mut config = config();
    config.delivery.tls = TlsPolicy::Required;
    config.delivery.ca_file = Some(ca.path().to_owned());
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@secure.test"]);

    let only_plain = destination("secure.test", vec![target("plain.test", plain.addr)]);
    let attempt = client
        .deliver(&only_plain, message(&env, &[0], CONTENT))
        .await;
    match attempt.outcome(0).unwrap() {
        Outcome::Deferred { status, reason, .. } => {
            assert_eq!(status, "4.7.5");
            assert!(reason.contains("STARTTLS"), "{reason}");
            assert!(reason.contains("plain.test[127.0.0.44]"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(plain.messages().is_empty());

    let both = destination(
        "secure.test",
        vec![
            target("plain.test", plain.addr),
            target("localhost", secure.addr),
        ],
    );
    let attempt = client.deliver(&both, message(&env, &[0], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    assert!(plain.messages().is_empty());
}

#[tokio::test]
async fn required_tls_with_an_untrusted_certificate_defers_without_plaintext() {
    let sink = sink_on([127, 0, 0, 46], tls_sink()).await;
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let ca = ca_file(&other.cert.pem());
    let mut config = config();
    config.delivery.tls = TlsPolicy::Required;
    config.delivery.ca_file = Some(ca.path().to_owned());
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@secure.test"]);
    let dest = destination("secure.test", vec![target("localhost", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert_refused_at_the_handshake(&attempt, &sink);
}

/// Without `ca_file` the system's trust store is used: it does not know
/// the sink's self-signed certificate, so the message waits, and nothing
/// goes in plaintext.
#[tokio::test]
async fn required_tls_without_a_ca_file_verifies_against_the_system_store() {
    let sink = sink_on([127, 0, 0, 50], tls_sink()).await;
    let mut config = config();
    config.delivery.tls = TlsPolicy::Required;
    assert!(config.delivery.system_roots, "on by default");
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@secure.test"]);
    let dest = destination("secure.test", vec![target("mx.secure.test", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert_refused_at_the_handshake(&attempt, &sink);
}

#[tokio::test]
async fn required_tls_without_any_trust_anchor_defers_without_connecting() {
    let sink = sink_on([127, 0, 0, 47], tls_sink()).await;
    let mut config = config();
    config.delivery.tls = TlsPolicy::Required;
    config.delivery.system_roots = false;
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@secure.test"]);
    let dest = destination("secure.test", vec![target("localhost", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    match attempt.outcome(0).unwrap() {
        Outcome::Deferred { status, reason, .. } => {
            assert_eq!(status, "4.7.5");
            assert!(reason.contains("no trust anchor"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sink.connections(), 0);
}

#[tokio::test]
async fn tls_policy_none_stays_in_plaintext() {
    let sink = sink_on([127, 0, 0, 48], tls_sink()).await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("localhost", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    assert_eq!(attempt.tls, None);
    assert!(!sink.commands().iter().any(|(_, c)| c == "STARTTLS"));
}

#[test]
fn a_bad_ca_file_is_a_configuration_error() {
    let mut config = config();
    config.delivery.ca_file = Some("/nonexistent/ca.pem".into());
    assert!(matches!(
        Client::new(config),
        Err(ClientError::CaFile { .. })
    ));
    let empty = ca_file("not a certificate\n");
    let mut config = common::config();
    config.delivery.ca_file = Some(empty.path().to_owned());
    assert!(matches!(
        Client::new(config),
        Err(ClientError::CaFile { .. })
    ));
}

/// A reply smuggled in after the 220 to STARTTLS, before the handshake,
/// must not be read as the answer to the EHLO sent over TLS (the client
/// side of CVE-2011-0411).
#[tokio::test]
async fn plaintext_after_the_starttls_reply_is_discarded() {
    let sink = sink_on([127, 0, 0, 49], tls_sink()).await;
    sink.set_starttls_extra("554 5.7.0 injected before TLS\r\n");
    let mut config = config();
    config.delivery.tls = TlsPolicy::Opportunistic;
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("localhost", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    assert!(attempt.tls.is_some());
    assert_eq!(sink.connections(), 1);
}
