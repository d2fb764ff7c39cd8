//! Trying targets and addresses in order, and what is said when none works.

mod common;

use common::*;
use mta_deliver::{Client, Destination, Outcome, Target};
use mta_testkit::sink::SinkConfig;

#[tokio::test]
async fn a_refused_connection_moves_on_to_the_next_target() {
    let down = closed_port([127, 0, 0, 20]).await;
    let sink = sink_on([127, 0, 0, 21], SinkConfig::default()).await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination(
        "dest.test",
        vec![target("down.test", down), target("up.test", sink.addr)],
    );
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    assert!(attempt.remote.unwrap().starts_with("up.test[127.0.0.21]"));
}

#[tokio::test]
async fn the_addresses_of_one_target_are_tried_in_order() {
    let down = closed_port([127, 0, 0, 22]).await;
    let sink = sink_on([127, 0, 0, 23], SinkConfig::default()).await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination(
        "dest.test",
        vec![Target {
            host: "mx.test".into(),
            addrs: vec![down, sink.addr],
        }],
    );
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    assert!(attempt.remote.unwrap().starts_with("mx.test[127.0.0.23]"));
}

#[tokio::test]
async fn a_421_greeting_moves_on_to_the_next_target() {
    let busy = sink_on([127, 0, 0, 24], SinkConfig::default()).await;
    busy.set_greeting(421, "4.3.2 too busy");
    let sink = sink_on([127, 0, 0, 25], SinkConfig::default()).await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination(
        "dest.test",
        vec![target("busy.test", busy.addr), target("up.test", sink.addr)],
    );
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    assert_eq!(busy.connections(), 1);
    assert!(busy.messages().is_empty());
    assert_eq!(sink.wait_for_messages(1, WAIT).await.len(), 1);
}

#[tokio::test]
async fn every_target_down_defers_with_the_last_error() {
    let first = closed_port([127, 0, 0, 26]).await;
    let second = closed_port([127, 0, 0, 27]).await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test", "b@dest.test"]);
    let dest = destination(
        "dest.test",
        vec![target("down1.test", first), target("down2.test", second)],
    );
    let attempt = client.deliver(&dest, message(&env, &[0, 1], CONTENT)).await;
    assert_eq!(attempt.outcomes.len(), 2);
    assert_eq!(attempt.remote, None);
    for (_, outcome) in &attempt.outcomes {
        match outcome {
            Outcome::Deferred { status, reason, .. } => {
                assert_eq!(status, "4.4.1");
                assert!(reason.contains("down2.test[127.0.0.27]"), "{reason}");
                assert!(reason.to_lowercase().contains("refused"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(client.connections_open(), 0);
}

#[tokio::test]
async fn a_5xx_greeting_everywhere_defers_with_class_4() {
    let sink = sink_on([127, 0, 0, 28], SinkConfig::default()).await;
    sink.set_greeting(554, "5.7.1 no service for you");
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    match attempt.outcome(0).unwrap() {
        Outcome::Deferred {
            status,
            reason,
            reply,
        } => {
            assert_eq!(status, "4.7.1");
            assert!(
                reason.contains("refused to talk to me: 554 5.7.1"),
                "{reason}"
            );
            // The server's own words, for a DSN's Diagnostic-Code.
            let reply = reply.as_ref().expect("the greeting is kept");
            assert_eq!(reply.text, "554 5.7.1 no service for you");
            assert_eq!(reply.host(), "mx.test");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn no_targets_defers() {
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = Destination {
        key: "mx:dest.test".into(),
        domain: "dest.test".into(),
        targets: vec![],
        published: Default::default(),
    };
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(attempt.outcome(0).unwrap().is_deferred());
}

#[tokio::test]
async fn a_recipient_index_out_of_range_is_deferred_not_a_panic() {
    let sink = sink_on([127, 0, 0, 29], SinkConfig::default()).await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx.test", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[7, 0], CONTENT)).await;
    assert!(attempt.outcome(0).unwrap().is_delivered());
    assert_eq!(attempt.outcome(7).unwrap().status(), "4.3.0");
    let order: Vec<usize> = attempt.outcomes.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, [7, 0]);
}
