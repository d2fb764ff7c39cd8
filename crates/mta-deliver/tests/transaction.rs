//! One transaction against the sink: recipients accepted and refused,
//! end-of-data replies, pipelining, dot-stuffing, SIZE, SMTPUTF8, DSN.

mod common;

use std::time::Duration;

use common::*;
use mta_deliver::{Client, Delivery, Outcome};
use mta_envelope::{BodyType, Notify, Ret};
use mta_testkit::sink::SinkConfig;

#[tokio::test]
async fn a_message_is_delivered() {
    let sink = sink_on([127, 0, 0, 2], SinkConfig::default()).await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["rcpt@dest.test"]);
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert_eq!(attempt.outcomes.len(), 1);
    let (index, outcome) = &attempt.outcomes[0];
    assert_eq!(*index, 0);
    assert!(
        matches!(outcome, Outcome::Delivered { reply, delivery: Delivery::RelayedWithDsn } if reply.starts_with("250 2.0.0")),
        "the sink offers DSN, so it reports from now on: {outcome:?}"
    );
    assert_eq!(
        attempt.remote.as_deref(),
        Some(format!("mx1.test[127.0.0.2]:{}", sink.addr.port()).as_str())
    );
    assert_eq!(attempt.tls, None);
    let got = sink.wait_for_messages(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "sender@origin.test");
    assert_eq!(got[0].rcpt_to, ["rcpt@dest.test"]);
    assert_eq!(got[0].data, CONTENT);
    assert!(got[0]
        .mail_params
        .contains(&format!("SIZE={}", CONTENT.len())));
    let ehlo = sink
        .commands()
        .into_iter()
        .find(|(_, c)| c.starts_with("EHLO"));
    assert_eq!(ehlo.unwrap().1, "EHLO client.test");
}

#[tokio::test]
async fn each_recipient_gets_its_own_outcome() {
    let sink = sink_on([127, 0, 0, 3], SinkConfig::default()).await;
    sink.set_rcpt_reply("unknown@", 550, "5.1.1 no such user");
    sink.set_rcpt_reply("later@", 451, "4.3.0 try again later");
    let client = Client::new(config()).unwrap();
    let env = envelope(&["ok@dest.test", "unknown@dest.test", "later@dest.test"]);
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let attempt = client
        .deliver(&dest, message(&env, &[0, 1, 2], CONTENT))
        .await;
    assert!(attempt.outcome(0).unwrap().is_delivered(), "{attempt:?}");
    match attempt.outcome(1).unwrap() {
        Outcome::Failed {
            status,
            reason,
            reply,
        } => {
            assert_eq!(status, "5.1.1");
            assert!(reason.contains("550 5.1.1 no such user"), "{reason}");
            assert!(reason.contains("in reply to RCPT TO command"), "{reason}");
            assert!(reason.contains("mx1.test[127.0.0.3]"), "{reason}");
            // The DSN quotes the reply alone, and the host apart.
            let reply = reply.as_ref().expect("the server's reply is kept");
            assert_eq!(reply.text, "550 5.1.1 no such user");
            assert_eq!(reply.host(), "mx1.test");
        }
        other => panic!("{other:?}"),
    }
    match attempt.outcome(2).unwrap() {
        Outcome::Deferred { status, reply, .. } => {
            assert_eq!(status, "4.3.0");
            assert_eq!(
                reply.as_ref().map(|r| r.text.as_str()),
                Some("451 4.3.0 try again later")
            );
        }
        other => panic!("{other:?}"),
    }
    let got = sink.wait_for_messages(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, ["ok@dest.test"]);
}

/// RFC 3461 section 5.2.2: to a server without DSN nothing of NOTIFY goes
/// along, and the outcome says the success notice is still ours.
#[tokio::test]
async fn a_server_without_dsn_leaves_the_success_notice_to_us() {
    let sink = sink_on(
        [127, 0, 0, 3],
        SinkConfig {
            dsn: false,
            ..SinkConfig::default()
        },
    )
    .await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["ok@dest.test"]);
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(
        matches!(
            attempt.outcome(0),
            Some(Outcome::Delivered {
                delivery: Delivery::Relayed,
                ..
            })
        ),
        "{attempt:?}"
    );
    assert!(!attempt.dsn);
}

#[tokio::test]
async fn only_the_listed_recipients_are_sent() {
    let sink = sink_on([127, 0, 0, 3], SinkConfig::default()).await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test", "b@dest.test", "c@dest.test"]);
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[2, 0], CONTENT)).await;
    let indexes: Vec<usize> = attempt.outcomes.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, [2, 0]);
    assert!(attempt.all_delivered());
    let got = sink.wait_for_messages(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, ["c@dest.test", "a@dest.test"]);
}

/// Lockstep: with every RCPT refused, RSET is sent instead of DATA.
#[tokio::test]
async fn no_accepted_recipient_means_rset_not_data() {
    let sink = sink_on(
        [127, 0, 0, 4],
        SinkConfig {
            pipelining: false,
            ..SinkConfig::default()
        },
    )
    .await;
    sink.set_default_rcpt_reply(550, "5.1.1 nobody here");
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test", "b@dest.test"]);
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0, 1], CONTENT)).await;
    assert!(
        attempt.outcomes.iter().all(|(_, o)| o.is_failed()),
        "{attempt:?}"
    );
    let commands: Vec<String> = sink.commands().into_iter().map(|(_, c)| c).collect();
    assert!(!commands.iter().any(|c| c == "DATA"), "{commands:?}");
    assert_eq!(
        commands.last().map(String::as_str),
        Some("RSET"),
        "{commands:?}"
    );
    assert!(sink.messages().is_empty());
}

/// Pipelined: DATA went with the RCPTs and is refused; RSET follows and
/// nothing is delivered.
#[tokio::test]
async fn no_accepted_recipient_when_pipelining_resets_too() {
    let sink = sink_on([127, 0, 0, 4], SinkConfig::default()).await;
    sink.set_default_rcpt_reply(450, "4.2.0 mailbox busy");
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert_eq!(attempt.outcome(0).unwrap().status(), "4.2.0");
    assert!(attempt.outcome(0).unwrap().is_deferred());
    let commands: Vec<String> = sink.commands().into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        commands.last().map(String::as_str),
        Some("RSET"),
        "{commands:?}"
    );
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn end_of_data_4xx_defers_and_5xx_fails() {
    let sink = sink_on([127, 0, 0, 5], SinkConfig::default()).await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test", "b@dest.test"]);
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let msg = message(&env, &[0, 1], CONTENT);

    sink.set_data_reply(451, "4.3.0 queue full");
    let attempt = client.deliver(&dest, msg).await;
    for (_, outcome) in &attempt.outcomes {
        match outcome {
            Outcome::Deferred { status, reason, .. } => {
                assert_eq!(status, "4.3.0");
                assert!(
                    reason.contains("in reply to end of DATA command"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    sink.set_data_reply(554, "5.7.1 spam");
    let attempt = client.deliver(&dest, msg).await;
    assert!(attempt
        .outcomes
        .iter()
        .all(|(_, o)| o.is_failed() && o.status() == "5.7.1"));
    assert!(sink.messages().is_empty());
    // Both transactions ended cleanly: one connection did both.
    assert_eq!(sink.connections(), 1);
}

#[tokio::test]
async fn pipelining_is_used_when_offered() {
    let sink = sink_on([127, 0, 0, 6], SinkConfig::default()).await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test", "b@dest.test"]);
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0, 1], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    let got = sink.wait_for_messages(1, WAIT).await;
    assert!(got[0].pipelined);
}

#[tokio::test]
async fn lockstep_without_pipelining() {
    let sink = sink_on(
        [127, 0, 0, 6],
        SinkConfig {
            pipelining: false,
            ..SinkConfig::default()
        },
    )
    .await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test", "b@dest.test"]);
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0, 1], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    let got = sink.wait_for_messages(1, WAIT).await;
    assert!(!got[0].pipelined);
    assert_eq!(got[0].rcpt_to.len(), 2);
}

#[tokio::test]
async fn dot_stuffing_round_trips() {
    let sink = sink_on([127, 0, 0, 7], SinkConfig::default()).await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let content = b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nmiddle . dot\r\n.";
    let attempt = client.deliver(&dest, message(&env, &[0], content)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    let got = sink.wait_for_messages(1, WAIT).await;
    // The missing final CRLF is added; every dot arrives as it was.
    let mut expected = content.to_vec();
    expected.extend_from_slice(b"\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got[0].data),
        String::from_utf8_lossy(&expected)
    );
}

#[tokio::test]
async fn a_message_over_the_size_limit_fails_without_being_sent() {
    let sink = sink_on(
        [127, 0, 0, 8],
        SinkConfig {
            size_limit: Some(20),
            ..SinkConfig::default()
        },
    )
    .await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test", "b@dest.test"]);
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let attempt = client.deliver(&dest, message(&env, &[0, 1], CONTENT)).await;
    for (_, outcome) in &attempt.outcomes {
        match outcome {
            Outcome::Failed { status, reason, .. } => {
                assert_eq!(status, "5.3.4");
                assert!(reason.contains("size limit 20"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(!sink.commands().iter().any(|(_, c)| c.starts_with("MAIL")));
}

#[tokio::test]
async fn smtputf8_needed_but_not_offered_fails() {
    let sink = sink_on(
        [127, 0, 0, 9],
        SinkConfig {
            smtputf8: false,
            ..SinkConfig::default()
        },
    )
    .await;
    let client = Client::new(config()).unwrap();
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);

    // A UTF-8 address: 5.6.7. UTF-8 in the header section: 5.6.9.
    let mut utf8_header = envelope(&["a@dest.test"]);
    utf8_header.smtputf8 = true;
    let non_ascii = envelope(&["j\u{f6}rg@dest.test"]);
    let header = "From: sender@origin.test\r\nSubject: Gr\u{fc}\u{df}e\r\n\r\nHello.\r\n";
    for (env, content, status) in [
        (&non_ascii, CONTENT, "5.6.7"),
        (&utf8_header, header.as_bytes(), "5.6.9"),
    ] {
        let attempt = client.deliver(&dest, message(env, &[0], content)).await;
        let outcome = attempt.outcome(0).unwrap();
        assert!(
            outcome.is_failed() && outcome.status() == status,
            "{outcome:?}"
        );
    }
    assert!(sink.messages().is_empty());
    assert!(!sink.commands().iter().any(|(_, c)| c.starts_with("MAIL")));
}

#[tokio::test]
async fn a_flagged_ascii_message_goes_without_smtputf8_when_not_offered() {
    let sink = sink_on(
        [127, 0, 0, 9],
        SinkConfig {
            smtputf8: false,
            ..SinkConfig::default()
        },
    )
    .await;
    let client = Client::new(config()).unwrap();
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let mut flagged = envelope(&["a@dest.test", "j\u{f6}rg@dest.test"]);
    flagged.smtputf8 = true;
    let attempt = client
        .deliver(&dest, message(&flagged, &[0, 1], CONTENT))
        .await;
    assert!(attempt.outcome(0).unwrap().is_delivered(), "{attempt:?}");
    assert_eq!(attempt.outcome(1).unwrap().status(), "5.6.7", "{attempt:?}");
    let got = sink.wait_for_messages(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, ["a@dest.test"]);
    assert!(!got[0].mail_params.contains("SMTPUTF8"), "{:?}", got[0]);
}

#[tokio::test]
async fn smtputf8_is_sent_when_offered() {
    let sink = sink_on([127, 0, 0, 9], SinkConfig::default()).await;
    let client = Client::new(config()).unwrap();
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let env = envelope(&["j\u{f6}rg@dest.test"]);
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    let got = sink.wait_for_messages(1, WAIT).await;
    assert!(got[0].mail_params.contains("SMTPUTF8"));
    assert_eq!(got[0].rcpt_to, ["j\u{f6}rg@dest.test"]);
}

#[tokio::test]
async fn dsn_parameters_are_passed_when_advertised() {
    let sink = sink_on([127, 0, 0, 10], SinkConfig::default()).await;
    let client = Client::new(config()).unwrap();
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let mut env = envelope(&["a@dest.test", "b@dest.test"]);
    env.ret = Some(Ret::Hdrs);
    env.envid = Some("env id+1".into());
    env.body = BodyType::EightBitMime;
    env.recipients[0].notify = Some(Notify::On {
        success: true,
        failure: true,
        delay: false,
    });
    env.recipients[0].orcpt = Some("rfc822;a+x@orig.test".into());
    env.recipients[1].notify = Some(Notify::Never);
    let attempt = client.deliver(&dest, message(&env, &[0, 1], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    assert!(attempt.dsn);
    let got = sink.wait_for_messages(1, WAIT).await;
    let mail = &got[0].mail_params;
    assert!(mail.contains("RET=HDRS"), "{mail}");
    assert!(mail.contains("ENVID=env+20id+2B1"), "{mail}");
    assert!(mail.contains("BODY=8BITMIME"), "{mail}");
    assert_eq!(
        got[0].rcpt_params,
        [
            "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bx@orig.test",
            "NOTIFY=NEVER"
        ]
    );
}

/// The sink refuses DSN parameters it did not advertise (555), so this
/// also checks that none are sent.
#[tokio::test]
async fn dsn_parameters_are_left_out_when_not_advertised() {
    let sink = sink_on(
        [127, 0, 0, 10],
        SinkConfig {
            dsn: false,
            ..SinkConfig::default()
        },
    )
    .await;
    let client = Client::new(config()).unwrap();
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let mut env = envelope(&["a@dest.test"]);
    env.ret = Some(Ret::Full);
    env.envid = Some("id".into());
    env.recipients[0].notify = Some(Notify::Never);
    env.recipients[0].orcpt = Some("rfc822;a@dest.test".into());
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    assert!(!attempt.dsn);
    let got = sink.wait_for_messages(1, WAIT).await;
    assert!(!got[0].mail_params.contains("RET"));
    assert_eq!(got[0].rcpt_params, [""]);
}

#[tokio::test]
async fn helo_when_ehlo_is_refused() {
    let sink = sink_on([127, 0, 0, 11], SinkConfig::default()).await;
    sink.set_ehlo_reply(502, "5.5.1 EHLO not implemented");
    let client = Client::new(config()).unwrap();
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let mut env = envelope(&["a@dest.test"]);
    env.ret = Some(Ret::Full);
    let attempt = client.deliver(&dest, message(&env, &[0], CONTENT)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    let got = sink.wait_for_messages(1, WAIT).await;
    // No extensions after HELO: no SIZE, no RET, lockstep.
    assert_eq!(got[0].mail_params, "");
    assert!(!got[0].pipelined);
    assert!(sink.commands().iter().any(|(_, c)| c == "HELO client.test"));
}

#[tokio::test]
async fn a_slow_end_of_data_reply_defers() {
    let sink = sink_on(
        [127, 0, 0, 12],
        SinkConfig {
            data_delay: Duration::from_secs(3),
            ..SinkConfig::default()
        },
    )
    .await;
    let mut config = config();
    config.delivery.timeouts.data_end = Duration::from_millis(300);
    let client = Client::new(config).unwrap();
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let env = envelope(&["a@dest.test"]);
    let attempt = tokio::time::timeout(WAIT, client.deliver(&dest, message(&env, &[0], CONTENT)))
        .await
        .expect("bounded by the data_end timeout");
    match attempt.outcome(0).unwrap() {
        Outcome::Deferred { status, reason, .. } => {
            assert_eq!(status, "4.4.2");
            assert!(reason.contains("timed out"), "{reason}");
            assert!(reason.contains("may be sent more than once"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // A connection that timed out is not kept.
    assert_eq!(client.connections_idle(), 0);
}

#[tokio::test]
async fn a_large_message_arrives_intact() {
    let sink = sink_on([127, 0, 0, 13], SinkConfig::default()).await;
    let client = Client::new(config()).unwrap();
    let env = envelope(&["a@dest.test"]);
    let dest = destination("dest.test", vec![target("mx1.test", sink.addr)]);
    let mut content = b"Subject: big\r\n\r\n".to_vec();
    for n in 0..20_000 {
        // Lines of varying length, some starting with a dot, so that dots
        // fall on write boundaries too.
        if n % 3 == 0 {
            content.push(b'.');
        }
        content.extend(std::iter::repeat_n(b'x', n % 37));
        content.extend_from_slice(b"\r\n");
    }
    let attempt = client.deliver(&dest, message(&env, &[0], &content)).await;
    assert!(attempt.all_delivered(), "{attempt:?}");
    let got = sink.wait_for_messages(1, WAIT).await;
    assert_eq!(got[0].data.len(), content.len());
    assert!(got[0].data == content);
}
