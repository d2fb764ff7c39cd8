//! Shared pieces of the client tests: envelopes, destinations and a client
//! with short timeouts. Everything stays on 127.0.0.0/8.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use mta_deliver::{
    ClientConfig, DeliveryConfig, Destination, OutboundMessage, Target, Timeouts, TlsPolicy,
};
use mta_envelope::{BodyType, Envelope, Mailbox, Origin, Recipient, ReversePath};
use mta_testkit::sink::{Sink, SinkConfig};

/// Every test's outer bound.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn mailbox(address: &str) -> Mailbox {
    let (local, domain) = address.rsplit_once('@').expect("an address with @");
    Mailbox {
        local: local.into(),
        domain: domain.into(),
    }
}

pub fn envelope(recipients: &[&str]) -> Envelope {
    Envelope {
        sender: ReversePath::Mailbox(mailbox("sender@origin.test")),
        recipients: recipients
            .iter()
            .map(|r| Recipient {
                address: mailbox(r),
                notify: None,
                orcpt: None,
            })
            .collect(),
        body: BodyType::SevenBit,
        smtputf8: false,
        ret: None,
        envid: None,
        origin: Origin {
            client_ip: "127.0.0.1".parse().unwrap(),
            helo: "origin.test".into(),
            protocol: "ESMTP".into(),
            tls: None,
            auth: None,
        },
        arrival: 0,
    }
}

pub const CONTENT: &[u8] = b"From: sender@origin.test\r\nSubject: hello\r\n\r\nHello.\r\n";

/// What one transaction sends: `envelope`'s recipients at `recipients`
/// (indexes into its list) and `content`.
pub fn message<'a>(
    envelope: &'a Envelope,
    recipients: &'a [usize],
    content: &'a [u8],
) -> OutboundMessage<'a> {
    OutboundMessage {
        envelope,
        recipients,
        content,
    }
}

/// Short timeouts so that a broken test fails fast.
pub fn config() -> ClientConfig {
    let t = Duration::from_secs(5);
    ClientConfig {
        helo_name: "client.test".into(),
        delivery: DeliveryConfig {
            timeouts: Timeouts {
                connect: Duration::from_secs(2),
                greeting: t,
                ehlo: t,
                mail: t,
                rcpt: t,
                data_init: t,
                data_block: t,
                data_end: t,
                quit: t,
            },
            tls: TlsPolicy::None,
            // What the client's tests were written against: Postfix's
            // `smtp_connection_cache_time_limit`.
            idle_connection_timeout: Duration::from_secs(2),
            ..DeliveryConfig::default()
        },
    }
}

pub fn target(host: &str, addr: SocketAddr) -> Target {
    Target {
        host: host.into(),
        addrs: vec![addr],
    }
}

pub fn destination(domain: &str, targets: Vec<Target>) -> Destination {
    Destination {
        key: format!("mx:{domain}"),
        domain: domain.into(),
        targets,
        published: Default::default(),
    }
}

/// A sink on `ip`, any port.
pub async fn sink_on(ip: [u8; 4], config: SinkConfig) -> Sink {
    Sink::start(SinkConfig {
        addr: SocketAddr::from((ip, 0)),
        ..config
    })
    .await
    .expect("sink starts")
}

/// An address on `ip` where nothing listens: bound, then closed.
pub async fn closed_port(ip: [u8; 4]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}
