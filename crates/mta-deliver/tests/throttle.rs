//! Throttles against the sink: connections at once by domain and by MX
//! host, messages per hour, back-off after a 421 and after 4xx endings in
//! a row, and a new client generation that keeps all of it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mta_deliver::{
    Attempt, Client, ClientConfig, Destination, Outcome, ServerSignal, ThrottleRule,
};
use mta_envelope::Envelope;
use mta_testkit::sink::SinkConfig;

fn with_rule(
    mut config: ClientConfig,
    pattern: &str,
    max_connections: Option<usize>,
    max_messages_per_hour: Option<u64>,
) -> ClientConfig {
    config.delivery.throttle.insert(
        pattern.into(),
        ThrottleRule {
            max_connections,
            max_messages_per_hour,
        },
    );
    config
}

async fn send(client: &Client, dest: &Destination, env: &Envelope) -> Attempt {
    client.deliver(dest, message(env, &[0], CONTENT)).await
}

/// Every recipient deferred with 4.4.5 by a local throttle, the reason
/// saying `what`.
fn assert_held_back(attempt: &Attempt, what: &str) {
    assert!(!attempt.outcomes.is_empty());
    for (_, outcome) in &attempt.outcomes {
        match outcome {
            Outcome::Deferred { status, reason, .. } => {
                assert_eq!(status, "4.4.5", "{reason}");
                assert!(reason.starts_with("local "), "{reason}");
                assert!(reason.contains(what), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(attempt.remote, None);
    assert_eq!(attempt.server, ServerSignal::Silent);
}

/// `n` deliveries at once, to each of `dests` in turn, over `clients` in
/// turn; every attempt, within [`WAIT`].
async fn at_once(clients: &[&Client], dests: &[Destination], n: usize) -> Vec<Attempt> {
    let env = envelope(&["a@dest.test"]);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let client = clients[i % clients.len()].clone();
        let dest = dests[i % dests.len()].clone();
        let env = env.clone();
        tasks.spawn(async move { send(&client, &dest, &env).await });
    }
    tokio::time::timeout(WAIT, async {
        let mut attempts = Vec::new();
        while let Some(attempt) = tasks.join_next().await {
            attempts.push(attempt.unwrap());
        }
        attempts
    })
    .await
    .expect("bounded")
}

#[tokio::test]
async fn a_domain_rule_limits_connections_at_once() {
    let sink = sink_on(
        [127, 0, 0, 80],
        SinkConfig {
            data_delay: Duration::from_millis(200),
            ..SinkConfig::default()
        },
    )
    .await;
    // The default allows 20; the rule for the domain, 2.
    let config = with_rule(config(), "Dest.Test", Some(2), None);
    assert_eq!(config.delivery.max_per_destination, 20);
    let client = Client::new(config).unwrap();
    let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);
    let all = at_once(&[&client], &[dest], 10).await;
    assert_eq!(all.len(), 10);
    assert!(all.iter().all(Attempt::all_delivered), "{all:?}");
    assert_eq!(sink.wait_for_messages(10, WAIT).await.len(), 10);
    assert_eq!(sink.max_concurrent_connections(), 2);
    assert!(client.connections_open() <= 2);
}

#[tokio::test]
async fn an_mx_rule_limits_connections_to_the_host_whatever_the_domain() {
    let sink = sink_on(
        [127, 0, 0, 81],
        SinkConfig {
            data_delay: Duration::from_millis(100),
            ..SinkConfig::default()
        },
    )
    .await;
    let mut config = with_rule(config(), "mx:MX.shared.test", Some(1), None);
    config.delivery.timeouts.connect = WAIT;
    let client = Client::new(config).unwrap();
    // Two destination keys, one host (named with a trailing dot, as MX
    // records give it).
    let dests = [
        destination("one.test", vec![target("mx.shared.test.", sink.addr)]),
        destination("two.test", vec![target("mx.shared.test.", sink.addr)]),
    ];
    let all = at_once(&[&client], &dests, 8).await;
    assert!(all.iter().all(Attempt::all_delivered), "{all:?}");
    assert_eq!(sink.wait_for_messages(8, WAIT).await.len(), 8);
    assert_eq!(sink.max_concurrent_connections(), 1);
    assert!(
        sink.connections() >= 2,
        "each key needs a connection of its own"
    );
    assert!(client.connections_open() <= 1);
}

#[tokio::test]
async fn an_mx_rule_hourly_limit_sends_the_rest_to_the_next_host() {
    let first = sink_on([127, 0, 0, 87], SinkConfig::default()).await;
    let second = sink_on([127, 0, 0, 88], SinkConfig::default()).await;
    let config = with_rule(config(), "mx:mx1.test", None, Some(1));
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination(
        "dest.test",
        vec![
            target("mx1.test", first.addr),
            target("mx2.test", second.addr),
        ],
    );
    for _ in 0..3 {
        let attempt = send(&client, &dest, &env).await;
        assert!(attempt.all_delivered(), "{attempt:?}");
    }
    assert_eq!(first.wait_for_messages(1, WAIT).await.len(), 1);
    assert_eq!(second.wait_for_messages(2, WAIT).await.len(), 2);
    let rates = client.throttles().snapshot().rates;
    assert_eq!(rates.len(), 1, "{rates:?}");
    assert_eq!(
        (rates[0].bucket.as_str(), rates[0].last_hour, rates[0].limit),
        ("mx:mx1.test", 1, 1)
    );
}

#[tokio::test]
async fn a_421_backs_the_destination_off_for_backoff_for() {
    let sink = sink_on([127, 0, 0, 82], SinkConfig::default()).await;
    sink.set_greeting(421, "4.7.0 too busy, come back later");
    let mut config = config();
    config.delivery.backoff_for = Duration::from_millis(300);
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);

    let started = Instant::now();
    let attempt = send(&client, &dest, &env).await;
    assert_eq!(attempt.outcome(0).unwrap().status(), "4.7.0", "{attempt:?}");
    assert!(
        matches!(&attempt.server, ServerSignal::Closing { reply } if reply.contains("421 4.7.0")),
        "{attempt:?}"
    );
    assert_eq!(sink.connections(), 1);

    // Held back without a connection, the reason naming the key and the
    // reply that caused it.
    let attempt = send(&client, &dest, &env).await;
    assert_held_back(&attempt, "mx:dest.test is not tried until");
    assert_held_back(&attempt, "421 4.7.0 too busy, come back later");
    assert_eq!(sink.connections(), 1);
    let snapshot = client.throttles().snapshot();
    assert_eq!(snapshot.backoffs.len(), 1);
    assert_eq!(snapshot.backoffs[0].key, "mx:dest.test");

    // The server is back; the back-off ends by itself.
    sink.set_greeting(220, "localhost ESMTP");
    let delivered = loop {
        let attempt = send(&client, &dest, &env).await;
        if attempt.all_delivered() {
            break started.elapsed();
        }
        assert_held_back(&attempt, "mx:dest.test");
        assert_eq!(sink.connections(), 1);
        assert!(started.elapsed() < WAIT, "still backed off");
        // Waiting for the clock, not for another task.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(delivered >= Duration::from_millis(300), "{delivered:?}");
    assert_eq!(sink.connections(), 2);
    assert!(client.throttles().backoffs().is_empty());
}

/// A 4xx at the end of data or to every RCPT ends an attempt in 4xx (a
/// 4xx to MAIL has a test of its own below).
#[tokio::test]
async fn attempts_ending_in_4xx_back_off_after_backoff_after_in_a_row() {
    let sink = sink_on([127, 0, 0, 83], SinkConfig::default()).await;
    let mut config = config();
    config.delivery.backoff_after = 3;
    config.delivery.backoff_for = Duration::from_secs(3600);
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);
    let deferred_by_server = |attempt: &Attempt| {
        assert_eq!(attempt.outcome(0).unwrap().status(), "4.3.0", "{attempt:?}");
        assert!(
            matches!(attempt.server, ServerSignal::Transient { .. }),
            "{attempt:?}"
        );
    };

    sink.set_data_reply(451, "4.3.0 queue full");
    deferred_by_server(&send(&client, &dest, &env).await);
    deferred_by_server(&send(&client, &dest, &env).await);
    // A success in between starts the count again.
    sink.set_data_reply(250, "2.0.0 Ok: queued");
    let attempt = send(&client, &dest, &env).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    assert_eq!(attempt.server, ServerSignal::Answered);

    sink.set_data_reply(451, "4.3.0 queue full");
    deferred_by_server(&send(&client, &dest, &env).await);
    sink.set_data_reply(250, "2.0.0 Ok: queued");
    sink.set_default_rcpt_reply(451, "4.3.0 mailbox busy");
    deferred_by_server(&send(&client, &dest, &env).await);
    assert!(client.throttles().backoffs().is_empty(), "two in a row");
    deferred_by_server(&send(&client, &dest, &env).await);

    let commands = sink.commands().len();
    let attempt = send(&client, &dest, &env).await;
    assert_held_back(&attempt, "3 attempts in a row ended in 4xx");
    assert_held_back(&attempt, "451 4.3.0 mailbox busy");
    assert_eq!(sink.commands().len(), commands, "nothing sent");
}

#[tokio::test]
async fn a_new_client_generation_keeps_the_backoff() {
    let sink = sink_on([127, 0, 0, 84], SinkConfig::default()).await;
    sink.set_greeting(421, "4.3.2 shutting down");
    let old = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);
    assert!(send(&old, &dest, &env)
        .await
        .outcome(0)
        .unwrap()
        .is_deferred());
    let changed = old.throttles().changed();
    assert_eq!(old.throttles().backoffs().len(), 1);

    // A reload: a new configuration, the same throttles.
    sink.set_greeting(220, "localhost ESMTP");
    let throttles = old.throttles().clone();
    drop(old);
    let mut reloaded = config();
    reloaded.helo_name = "reloaded.test".into();
    let new = Client::with_throttles(reloaded, throttles).unwrap();
    let attempt = send(&new, &dest, &env).await;
    assert_held_back(&attempt, "4.3.2 shutting down");
    assert_eq!(sink.connections(), 1);
    assert!(
        !changed.has_changed().unwrap(),
        "a reload changes no back-off"
    );

    // Saved and restored, as across a restart.
    let saved = new.throttles().backoffs();
    let restarted = Client::new(config()).unwrap();
    restarted.throttles().restore(saved);
    assert_held_back(&send(&restarted, &dest, &env).await, "mx:dest.test");
    assert_eq!(sink.connections(), 1);
}

#[tokio::test]
async fn two_client_generations_together_stay_within_the_connection_limit() {
    let sink = sink_on(
        [127, 0, 0, 85],
        SinkConfig {
            data_delay: Duration::from_millis(100),
            ..SinkConfig::default()
        },
    )
    .await;
    let mut config = config();
    config.delivery.max_per_destination = 1;
    // Closed after each message, so that neither generation keeps the one
    // slot idle in its own pool.
    config.delivery.idle_connection_timeout = Duration::ZERO;
    let old = Client::new(config.clone()).unwrap();
    let new = Client::with_throttles(config, old.throttles().clone()).unwrap();
    let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);
    let all = at_once(&[&old, &new], &[dest], 6).await;
    assert!(all.iter().all(Attempt::all_delivered), "{all:?}");
    assert_eq!(sink.wait_for_messages(6, WAIT).await.len(), 6);
    assert_eq!(sink.max_concurrent_connections(), 1);
}

#[tokio::test]
async fn the_hourly_limit_defers_without_connecting() {
    let sink = sink_on([127, 0, 0, 86], SinkConfig::default()).await;
    let mut config = config();
    config.delivery.max_messages_per_hour = 3;
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);

    // A message that found no server does not count.
    let down = destination(
        "dest.test",
        vec![target("down.test", closed_port([127, 0, 0, 89]).await)],
    );
    assert_eq!(
        send(&client, &down, &env)
            .await
            .outcome(0)
            .unwrap()
            .status(),
        "4.4.1"
    );

    for _ in 0..3 {
        let attempt = send(&client, &dest, &env).await;
        assert!(attempt.all_delivered(), "{attempt:?}");
    }
    let commands = sink.commands().len();
    let connections = sink.connections();
    let attempt = send(&client, &dest, &env).await;
    assert_held_back(&attempt, "at most 3 messages per hour to dest.test");
    assert_eq!(sink.commands().len(), commands, "nothing sent");
    assert_eq!(sink.connections(), connections);
    assert_eq!(sink.wait_for_messages(3, WAIT).await.len(), 3);

    // The default limit is per domain.
    let other = destination("other.test", vec![target("mx.test", sink.addr)]);
    assert!(send(&client, &other, &env).await.all_delivered());
    let rates = client.throttles().snapshot().rates;
    let counts: Vec<_> = rates
        .iter()
        .map(|r| (r.bucket.as_str(), r.last_hour, r.limit))
        .collect();
    assert_eq!(counts, [("dest.test", 3, 3), ("other.test", 1, 3)]);
}

#[tokio::test]
async fn mail_refused_with_4xx_backs_off_after_backoff_after_in_a_row() {
    let sink = sink_on([127, 0, 0, 90], SinkConfig::default()).await;
    let mut config = config();
    config.delivery.backoff_after = 2;
    config.delivery.backoff_for = Duration::from_secs(3600);
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);

    sink.set_mail_reply(452, "4.3.1 insufficient system storage");
    for _ in 0..2 {
        let attempt = send(&client, &dest, &env).await;
        assert_eq!(attempt.outcome(0).unwrap().status(), "4.3.1", "{attempt:?}");
        assert!(
            matches!(attempt.server, ServerSignal::Transient { .. }),
            "{attempt:?}"
        );
    }
    assert_eq!(sink.messages().len(), 0);
    let commands = sink.commands().len();
    let attempt = send(&client, &dest, &env).await;
    assert_held_back(&attempt, "insufficient system storage");
    assert_eq!(sink.commands().len(), commands, "nothing sent");
}
