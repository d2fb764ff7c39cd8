//! Connection reuse and the per-destination connection limit.

mod common;

use std::time::Duration;

use common::*;
use mta_deliver::{Client, TlsPolicy};
use mta_testkit::sink::SinkConfig;

#[tokio::test]
async fn messages_in_sequence_share_one_connection() {
    let sink = sink_on([127, 0, 0, 60], SinkConfig::default()).await;
    let mut config = config();
    config.delivery.idle_connection_timeout = Duration::from_secs(5);
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);
    for _ in 0..5 {
        let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
        assert!(attempt.all_delivered(), "{attempt:?}");
    }
    let got = sink.wait_for_messages(5, WAIT).await;
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|m| m.connection == 1));
    assert_eq!(sink.connections(), 1);
    assert_eq!(client.connections_open(), 1);
    assert_eq!(client.connections_idle(), 1);
    // Postfix's check before reuse.
    let rsets = sink.commands().iter().filter(|(_, c)| c == "RSET").count();
    assert_eq!(rsets, 4);
    client.close_idle().await;
    assert_eq!(client.connections_open(), 0);
    assert_eq!(sink.commands().last().unwrap().1, "QUIT");
}

#[tokio::test]
async fn reuse_over_tls_keeps_tls() {
    let sink = sink_on(
        [127, 0, 0, 61],
        SinkConfig {
            tls: true,
            ..SinkConfig::default()
        },
    )
    .await;
    let mut config = config();
    config.delivery.tls = TlsPolicy::Opportunistic;
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("localhost", sink.addr)]);
    for _ in 0..3 {
        let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
        assert!(attempt.all_delivered(), "{attempt:?}");
        assert!(attempt.tls.is_some());
    }
    assert_eq!(sink.connections(), 1);
    assert!(sink.wait_for_messages(3, WAIT).await.iter().all(|m| m.tls));
}

#[tokio::test]
async fn a_connection_carries_at_most_max_messages() {
    let sink = sink_on([127, 0, 0, 62], SinkConfig::default()).await;
    let mut config = config();
    config.delivery.max_messages_per_connection = 2;
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);
    for _ in 0..5 {
        let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
        assert!(attempt.all_delivered(), "{attempt:?}");
    }
    let got = sink.wait_for_messages(5, WAIT).await;
    let per_connection: Vec<usize> = got.iter().map(|m| m.connection).collect();
    assert_eq!(per_connection, [1, 1, 2, 2, 3]);
}

#[tokio::test]
async fn connections_are_not_shared_between_keys() {
    let sink = sink_on([127, 0, 0, 63], SinkConfig::default()).await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@one.test"]);
    let one = destination("one.test", vec![target("mx.test", sink.addr)]);
    let two = destination("two.test", vec![target("mx.test", sink.addr)]);
    for dest in [&one, &two, &one, &two] {
        let attempt = client.deliver(dest, message(&env, &[0], CONTENT)).await;
        assert!(attempt.all_delivered(), "{attempt:?}");
    }
    assert_eq!(sink.connections(), 2);
    let got = sink.wait_for_messages(4, WAIT).await;
    let per_connection: Vec<usize> = got.iter().map(|m| m.connection).collect();
    assert_eq!(per_connection, [1, 2, 1, 2]);
}

#[tokio::test]
async fn idle_connections_are_closed_with_quit_when_they_expire() {
    let sink = sink_on([127, 0, 0, 64], SinkConfig::default()).await;
    let mut config = config();
    config.delivery.idle_connection_timeout = Duration::from_millis(100);
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.connections_open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.connections_open(), 0);
    assert_eq!(sink.commands().last().unwrap().1, "QUIT");

    // The next message opens a new connection.
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    assert_eq!(sink.connections(), 2);
}

#[tokio::test]
async fn a_server_that_closed_an_idle_connection_gets_a_new_one() {
    let sink = sink_on([127, 0, 0, 65], SinkConfig::default()).await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);
    let msg = message(&env, &[0], CONTENT);
    assert!(client.deliver(&dest, msg).await.all_delivered());
    // The sink goes away and another takes its address.
    let addr = sink.addr;
    drop(sink);
    // The old listener closes in the background: retry the bind, bounded.
    let mut tries = 0;
    let sink = loop {
        let started = mta_testkit::sink::Sink::start(SinkConfig {
            addr,
            ..SinkConfig::default()
        })
        .await;
        match started {
            Ok(sink) => break sink,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let attempt = client.deliver(&dest, msg).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    assert_eq!(sink.connections(), 1);
}

/// The RSET that checks an idle connection goes in the same write as
/// MAIL, RCPT and DATA when the server pipelines: no round trip of its
/// own. Without PIPELINING it is a command of its own, answered first.
#[tokio::test]
async fn the_check_of_an_idle_connection_is_pipelined_with_mail() {
    for pipelining in [true, false] {
        let sink = sink_on(
            [127, 0, 0, 67],
            SinkConfig {
                pipelining,
                ..SinkConfig::default()
            },
        )
        .await;
        let client = Client::new(config()).unwrap();
        let env = envelope(&["a@dest.test"]);
        let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);
        for _ in 0..3 {
            let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
            assert!(attempt.all_delivered(), "{attempt:?}");
        }
        let got = sink.wait_for_messages(3, WAIT).await;
        assert!(got.iter().all(|m| m.connection == 1));
        assert!(got.iter().all(|m| m.pipelined == pipelining), "{got:?}");
        let commands: Vec<String> = sink.commands().into_iter().map(|(_, c)| c).collect();
        let rsets: Vec<usize> = (0..commands.len())
            .filter(|&i| commands[i] == "RSET")
            .collect();
        assert_eq!(rsets.len(), 2, "{commands:?}");
        for i in rsets {
            assert!(commands[i + 1].starts_with("MAIL FROM:"), "{commands:?}");
        }
    }
}

/// An idle connection whose server refuses the pipelined RSET (421: it
/// is going away) is dropped and the message goes on a new connection:
/// delivered, not deferred.
#[tokio::test]
async fn a_failed_pipelined_check_sends_the_message_on_a_new_connection() {
    let sink = sink_on([127, 0, 0, 68], SinkConfig::default()).await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);
    let first = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(first.all_delivered(), "{first:?}");
    assert_eq!(client.connections_idle(), 1);

    sink.set_rset_reply(421, "4.3.2 shutting down");
    let second = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(second.all_delivered(), "{second:?}");
    let got = sink.wait_for_messages(2, WAIT).await;
    let per_connection: Vec<usize> = got.iter().map(|m| m.connection).collect();
    assert_eq!(per_connection, [1, 2]);
    assert_eq!(sink.connections(), 2);
}

#[tokio::test]
async fn concurrency_per_destination_is_limited() {
    let sink = sink_on(
        [127, 0, 0, 66],
        SinkConfig {
            data_delay: Duration::from_millis(200),
            ..SinkConfig::default()
        },
    )
    .await;
    let mut config = config();
    config.delivery.max_per_destination = 2;
    let client = Client::new(config).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let client = client.clone();
        let env = env.clone();
        let dest = dest.clone();
        tasks.spawn(async move { client.deliver(&dest, message(&env, &[0], CONTENT)).await });
    }
    let all = tokio::time::timeout(WAIT, async {
        let mut attempts = Vec::new();
        while let Some(attempt) = tasks.join_next().await {
            attempts.push(attempt.unwrap());
        }
        attempts
    })
    .await
    .expect("bounded");
    assert_eq!(all.len(), 6);
    assert!(all.iter().all(|a| a.all_delivered()), "{all:?}");
    assert!(
        sink.max_concurrent_connections() <= 2,
        "{}",
        sink.max_concurrent_connections()
    );
    assert_eq!(sink.max_concurrent_connections(), 2);
    assert_eq!(sink.connections(), 2, "the two connections were reused");
    assert!(client.connections_open() <= 2);
}

#[test]
fn deliver_is_send() {
    fn assert_send<T: Send>(_: T) {}
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![]);
    assert_send(client.deliver(&dest, message(&env, &[0], CONTENT)));
}

/// The sink in its own runtime, for tests that are not async.
#[test]
fn a_background_sink_serves_a_plain_test() {
    let sink = mta_testkit::sink::Sink::start_in_background(SinkConfig {
        addr: "127.0.0.67:0".parse().unwrap(),
        ..SinkConfig::default()
    })
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);
    let attempt = rt.block_on(client.deliver(&dest, message(&env, &[0], CONTENT)));
    assert!(attempt.all_delivered(), "{attempt:?}");
    assert_eq!(sink.wait_for_messages_blocking(1, WAIT).len(), 1);
}
