//! Operator tools on a live daemon: `mta-init queue list|show|summary|
//! flush|hold|release|delete`, paused domains, throttles and back-off,
//! and the HTTP API. Real mtad, real DNS (hickory-server) and SMTP sinks
//! on 127.0.0.x; nothing leaves loopback.

use std::net::SocketAddr;
use std::time::Duration;

use mta_testkit::dns::Zone;
use mta_testkit::sink::SinkConfig;
use serde_json::Value;

use crate::delivery::{event, ip, sinks, Setup, WAIT};
use crate::http::request;
use crate::util::{init, list, queue, status_json, text, wait_until};

/// Deferred mail stays put: the next retry is an hour away.
const SLOW_RETRIES: &str = "[queue]\nretry_base = \"1h\"\npoll_interval = \"100ms\"\n";

/// `a.test` at 127.0.0.2, `b.test` at 127.0.0.3.
fn two_domains() -> Zone {
    Zone::new()
        .mx("a.test", 10, "mx.a.test")
        .a("mx.a.test", ip(2))
        .mx("b.test", 10, "mx.b.test")
        .a("mx.b.test", ip(3))
}

fn ids(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

fn find<'a>(messages: &'a [Value], id: &str) -> &'a Value {
    messages
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {messages:?}"))
}

/// Waits for the delivery log to show `name` for `id` (and recipient).
fn wait_event(s: &Setup, name: &str, id: &str, recipient: Option<&str>) -> Value {
    s.wait_log(&format!("{name} {id} {recipient:?}"), |e| {
        event(e, name, id) && recipient.is_none_or(|r| e["recipient"] == r)
    })
}

/// `[http] token` where a test uses the queue API.
const TOKEN: &str = "s3cret-token-for-tests";

fn http(s: &Setup) -> SocketAddr {
    s.mtad.http.expect("an http address is announced")
}

#[test]
fn list_show_and_summary_with_filters_on_the_cli_and_over_http() {
    let (port, sinks) = sinks(&[ip(2), ip(3)], SinkConfig::default);
    sinks[0].set_default_rcpt_reply(451, "4.2.0 a is busy");
    sinks[1].set_default_rcpt_reply(451, "4.2.0 b is busy");
    // The queue API is off without a token.
    let s = Setup::start(
        two_domains(),
        port,
        &format!("{SLOW_RETRIES}[http]\nlisten = [\"127.0.0.1:0\"]\ntoken = \"{TOKEN}\"\n"),
    );
    let first = s.send("alice@x.test", &["one@a.test"], "first");
    let second = s.send("bob@y.test", &["two@b.test", "three@a.test"], "second");
    wait_event(&s, "deferred", &first, None);
    wait_event(&s, "deferred", &second, Some("two@b.test"));
    wait_event(&s, "deferred", &second, Some("three@a.test"));

    let all = list(&s.work, &[]);
    assert_eq!(
        ids(&all),
        vec![first.clone(), second.clone()],
        "oldest first"
    );
    let m = find(&all, &first);
    assert_eq!(m["queue"], "disk");
    assert_eq!(m["sender"], "alice@x.test");
    assert_eq!(m["attempts"], 1);
    assert!(m["next_attempt"].as_u64().is_some(), "{m}");
    let r = &m["recipients"][0];
    assert_eq!(r["address"], "one@a.test");
    assert_eq!(r["status"], "deferred");
    assert_eq!(r["attempts"], 1);
    assert!(
        r["last_reply"].as_str().unwrap().contains("a is busy"),
        "{r}"
    );
    assert_eq!(
        find(&all, &second)["recipients"].as_array().unwrap().len(),
        2
    );

    // Filters.
    assert_eq!(
        ids(&list(&s.work, &["--domain", "A.test"])),
        vec![first.clone(), second.clone()]
    );
    assert_eq!(
        ids(&list(&s.work, &["--domain", "b.test"])),
        vec![second.clone()]
    );
    assert_eq!(
        ids(&list(&s.work, &["--sender", "bob@y.test"])),
        vec![second.clone()]
    );
    assert_eq!(
        ids(&list(&s.work, &["--sender", "@x.test"])),
        vec![first.clone()]
    );
    assert_eq!(ids(&list(&s.work, &["--queue", "disk"])).len(), 2);
    assert!(list(&s.work, &["--queue", "held"]).is_empty());
    assert_eq!(ids(&list(&s.work, &["--status", "deferred"])).len(), 2);
    assert!(list(&s.work, &["--status", "delivered"]).is_empty());
    assert!(list(&s.work, &["--older-than", "1h"]).is_empty());
    let bad = init(&s.work, &["queue", "list", "--queue", "nowhere"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        text(&bad).contains("no queue \"nowhere\""),
        "{}",
        text(&bad)
    );

    // The mailq-like text, paged one message at a time.
    let out = queue(&s.work, &["list", "--page", "1"]);
    assert!(out.contains(&first) && out.contains(&second), "{out}");
    assert!(out.contains("three@a.test"), "{out}");
    assert!(out.contains("in 2 messages."), "{out}");

    // show: envelope, history, headers; the body only when asked.
    let shown = queue(&s.work, &["show", &first]);
    assert!(shown.contains("HISTORY"), "{shown}");
    assert!(shown.contains("attempt 1"), "{shown}");
    assert!(shown.contains("a is busy"), "{shown}");
    assert!(shown.contains("Subject: first"), "{shown}");
    assert!(!shown.contains("Hello."), "{shown}");
    let with_body = queue(&s.work, &["show", "--body", &first]);
    assert!(with_body.contains("Hello."), "{with_body}");
    let missing = init(&s.work, &["queue", "show", "0000000000000001"]);
    assert_eq!(missing.status.code(), Some(3), "{}", text(&missing));

    // summary: per domain of recipients still to deliver.
    let summary: Value = serde_json::from_str(&queue(&s.work, &["summary", "--json"])).unwrap();
    assert_eq!(summary["total"]["messages"], 2, "{summary}");
    assert_eq!(summary["domains"][0]["domain"], "a.test", "{summary}");
    assert_eq!(summary["domains"][0]["messages"], 2, "{summary}");
    assert_eq!(summary["domains"][1]["domain"], "b.test", "{summary}");
    assert_eq!(
        summary["domains"][1]["buckets"][0], 1,
        "just arrived: {summary}"
    );
    let table = queue(&s.work, &["summary"]);
    assert!(
        table.contains("TOTAL") && table.contains("a.test"),
        "{table}"
    );

    // The same over HTTP.
    let (code, body) = request(
        http(&s),
        "GET",
        "/api/queue?domain=b.test",
        Some(TOKEN),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        ids(page["messages"].as_array().unwrap()),
        vec![second.clone()]
    );
    let (code, body) = request(
        http(&s),
        "GET",
        &format!("/api/queue/{first}"),
        Some(TOKEN),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let detail: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["message"]["id"], first.as_str());
    assert_eq!(detail["history"][0]["event"], "deferred", "{detail}");
    let (code, _) = request(
        http(&s),
        "GET",
        "/api/queue/0000000000000001",
        Some(TOKEN),
        None,
    );
    assert_eq!(code, 404);
    let (code, body) = request(http(&s), "GET", "/api/queue/summary", Some(TOKEN), None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["total"]["messages"],
        2
    );
    assert_eq!(sinks[0].messages().len() + sinks[1].messages().len(), 0);
}

#[test]
fn flush_makes_a_deferred_message_go_now() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    sinks[0].set_default_rcpt_reply(451, "4.2.0 not now");
    let s = Setup::start(two_domains(), port, SLOW_RETRIES);
    let id = s.send("alice@x.test", &["one@a.test"], "flush me");
    wait_event(&s, "deferred", &id, None);
    sinks[0].set_default_rcpt_reply(250, "2.1.5 ok");
    // Without the flush it would wait an hour.
    let out = queue(&s.work, &["flush", &id]);
    assert!(out.contains("1 of 1 message flushed"), "{out}");
    let got = sinks[0].wait_for_messages_blocking(1, WAIT);
    assert_eq!(got[0].rcpt_to, vec!["one@a.test".to_owned()]);
    wait_until("an empty queue", WAIT, || list(&s.work, &[]).is_empty());
    let gone = init(&s.work, &["queue", "flush", &id]);
    assert_eq!(gone.status.code(), Some(3), "{}", text(&gone));
}

#[test]
fn hold_stops_attempts_and_release_resumes_them() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    sinks[0].set_default_rcpt_reply(451, "4.2.0 not now");
    // Retries 2 s after arrival, no jitter: the held message (sent first)
    // would be due no later than the free one.
    let s = Setup::start(
        two_domains(),
        port,
        "[queue]\nretry_base = \"2s\"\nretry_jitter = 0.0\npoll_interval = \"100ms\"\n",
    );
    let held = s.send("alice@x.test", &["held@a.test"], "held");
    let free = s.send("alice@x.test", &["free@a.test"], "free");
    wait_event(&s, "deferred", &held, None);
    wait_event(&s, "deferred", &free, None);

    let out = queue(&s.work, &["hold", &held]);
    assert!(out.contains("1 of 1 message held"), "{out}");
    let listed = list(&s.work, &["--queue", "held"]);
    assert_eq!(ids(&listed), vec![held.clone()]);
    assert!(listed[0].get("next_attempt").is_none(), "{}", listed[0]);
    let attempts = listed[0]["attempts"].clone();
    let (_, status) = status_json(&s.work);
    assert_eq!(status["daemon"]["held"], 1, "{status}");
    let out = queue(&s.work, &["flush", &held]);
    assert!(out.contains("1 unchanged"), "a flush leaves it held: {out}");

    // The free one is retried on schedule and delivered; the held one,
    // due as early, is not attempted.
    sinks[0].set_default_rcpt_reply(250, "2.1.5 ok");
    wait_event(&s, "delivered", &free, None);
    wait_until("no attempt in flight", WAIT, || {
        let (_, v) = status_json(&s.work);
        v["daemon"]["runners"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["in_flight"] == 0)
    });
    let rcpts: Vec<String> = sinks[0]
        .messages()
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    assert_eq!(
        rcpts,
        vec!["free@a.test".to_owned()],
        "the held message was attempted"
    );
    assert_eq!(find(&list(&s.work, &[]), &held)["attempts"], attempts);

    let out = queue(&s.work, &["release", &held]);
    assert!(out.contains("1 of 1 message released"), "{out}");
    wait_event(&s, "delivered", &held, None);
    wait_until("an empty queue", WAIT, || list(&s.work, &[]).is_empty());
    let events: Vec<String> = s
        .log()
        .iter()
        .filter(|e| e["queue_id"] == held.as_str())
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events.first().map(String::as_str), Some("received"));
    assert_eq!(
        &events[events.len() - 3..],
        ["held", "released", "delivered"],
        "{events:?}"
    );
}

#[test]
fn delete_with_and_without_a_bounce_and_by_domain() {
    let (port, sinks) = sinks(&[ip(2), ip(3)], SinkConfig::default);
    sinks[0].set_default_rcpt_reply(451, "4.2.0 not now");
    sinks[1].set_default_rcpt_reply(451, "4.2.0 not now");
    let s = Setup::start(two_domains(), port, SLOW_RETRIES);
    let quiet = s.send("alice@local.test", &["quiet@a.test"], "quiet");
    let loud = s.send("alice@local.test", &["loud@a.test"], "loud");
    let split = s.send("alice@local.test", &["stay@a.test", "go@b.test"], "split");
    wait_event(&s, "deferred", &quiet, None);
    wait_event(&s, "deferred", &loud, None);
    wait_event(&s, "deferred", &split, Some("stay@a.test"));
    wait_event(&s, "deferred", &split, Some("go@b.test"));

    let out = queue(&s.work, &["delete", &quiet]);
    assert!(out.contains("1 of 1 message deleted"), "{out}");
    assert!(out.contains("0 DSNs"), "{out}");
    let out = queue(&s.work, &["delete", "--bounce", &loud]);
    assert!(out.contains("1 DSN sent"), "{out}");
    let dsn = s.wait_maildir("local.test", "alice", 1);
    let text = std::fs::read_to_string(&dsn[0]).unwrap();
    assert!(
        text.contains("deleted from the queue by the operator"),
        "{text}"
    );
    assert!(text.contains("loud@a.test"), "{text}");
    assert!(!text.contains("quiet@a.test"), "{text}");
    // The DSN's Maildir file is written before its queue entry goes:
    // wait for that, so that the listing below sees only `split`.
    wait_until("the DSN to leave the queue", WAIT, || {
        ids(&list(&s.work, &[])) == vec![split.clone()]
    });

    // By domain: only those recipients go; the message stays for the rest.
    let out = queue(&s.work, &["delete", "--domain", "b.test"]);
    assert!(out.contains("1 of 1 message deleted"), "{out}");
    assert!(out.contains("1 recipient removed"), "{out}");
    let left = list(&s.work, &[]);
    assert_eq!(ids(&left), vec![split.clone()]);
    let statuses: Vec<&str> = left[0]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["deferred", "failed"]);
    assert_eq!(
        s.maildir_messages("local.test", "alice").len(),
        1,
        "no bounce asked"
    );
    let deleted: Vec<Value> = s
        .log()
        .into_iter()
        .filter(|e| e["event"] == "deleted")
        .collect();
    assert_eq!(deleted.len(), 3, "{deleted:?}");
    assert_eq!(sinks[0].messages().len() + sinks[1].messages().len(), 0);
}

#[test]
fn a_delete_during_an_attempt_happens_when_the_attempt_ends() {
    let (port, sinks) = sinks(&[ip(2)], || SinkConfig {
        data_delay: Duration::from_secs(2),
        ..SinkConfig::default()
    });
    sinks[0].set_data_reply(451, "4.3.0 later");
    let s = Setup::start(two_domains(), port, SLOW_RETRIES);
    let id = s.send("alice@x.test", &["slow@a.test"], "slow");
    wait_until("the attempt to reach DATA", WAIT, || {
        sinks[0].commands().iter().any(|(_, line)| line == "DATA")
    });
    let out = queue(&s.work, &["delete", &id]);
    assert!(out.contains("0 of 1 message deleted"), "{out}");
    assert!(out.contains("1 being delivered now"), "{out}");
    // A hold asked for after the delete waits too, and must not undo it.
    let out = queue(&s.work, &["hold", &id]);
    assert!(out.contains("1 being delivered now"), "{out}");
    // The attempt ends (deferred), then the delete is carried out.
    let deferred = wait_event(&s, "deferred", &id, None);
    let deleted = wait_event(&s, "deleted", &id, None);
    assert!(deleted["ts"].as_f64() >= deferred["ts"].as_f64());
    wait_until("an empty queue", WAIT, || list(&s.work, &[]).is_empty());
}

#[test]
fn a_throttle_caps_concurrent_connections_at_the_sink() {
    let (port, sinks) = sinks(&[ip(2)], || SinkConfig {
        data_delay: Duration::from_millis(300),
        ..SinkConfig::default()
    });
    let s = Setup::start(
        two_domains(),
        port,
        "[delivery.throttle.\"a.test\"]\nmax_connections = 2\n",
    );
    let mut c = s.mtad.connect();
    c.cmd("EHLO client.test", "250");
    for i in 0..8 {
        let to = format!("user{i}@a.test");
        let r = c.send_message("alice@x.test", &[&to], &crate::util::message("burst"));
        assert_eq!(r.code, 250, "{}", r.text());
    }
    c.cmd("QUIT", "221");
    let got = sinks[0].wait_for_messages_blocking(8, WAIT);
    assert_eq!(got.len(), 8);
    let most = sinks[0].max_concurrent_connections();
    assert!((1..=2).contains(&most), "{most} connections at once");
}

#[test]
fn a_421_backs_the_destination_off_and_the_back_off_survives_reload_and_restart() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    sinks[0].set_greeting(421, "4.3.2 too busy, go away");
    let mut s = Setup::start_with(two_domains(), port, "backoff_for = \"1h\"\n", SLOW_RETRIES);
    let first = s.send("alice@x.test", &["one@a.test"], "first");
    let e = wait_event(&s, "deferred", &first, None);
    assert!(e["reply"].as_str().unwrap().contains("too busy"), "{e}");
    assert_eq!(sinks[0].connections(), 1);
    let (_, status) = status_json(&s.work);
    let backoffs = status["daemon"]["backoffs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(backoffs.len(), 1, "{status}");
    assert_eq!(backoffs[0]["key"], "mx:a.test");
    let (code, metrics) = request(http(&s), "GET", "/metrics", None, None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("\nmta_destinations_backed_off 1\n"),
        "{metrics}"
    );

    // The next message is deferred without a connection.
    let second = s.send("alice@x.test", &["two@a.test"], "second");
    let e = wait_event(&s, "deferred", &second, None);
    assert_eq!(e["status"], "4.4.5", "{e}");
    assert_eq!(sinks[0].connections(), 1);

    // A graceful restart keeps it...
    let o = init(&s.work, &["graceful"]);
    assert!(o.status.success(), "{}", text(&o));
    let third = s.send("alice@x.test", &["three@a.test"], "third");
    assert_eq!(wait_event(&s, "deferred", &third, None)["status"], "4.4.5");
    // ...and so does a restart (a new process image).
    let o = init(&s.work, &["restart"]);
    assert!(o.status.success(), "{}", text(&o));
    s.mtad.await_ready_again();
    let fourth = s.send("alice@x.test", &["four@a.test"], "fourth");
    assert_eq!(wait_event(&s, "deferred", &fourth, None)["status"], "4.4.5");
    assert_eq!(sinks[0].connections(), 1, "the back-off was forgotten");
}

#[test]
fn a_paused_domain_keeps_its_mail_until_resumed_even_across_a_restart() {
    let (port, sinks) = sinks(&[ip(2), ip(3)], SinkConfig::default);
    let mut s = Setup::start(two_domains(), port, SLOW_RETRIES);
    let o = init(&s.work, &["pause", "delivery", "--domain", "a.test"]);
    assert!(o.status.success(), "{}", text(&o));
    let id = s.send("alice@x.test", &["kept@a.test", "sent@b.test"], "paused");
    let got = sinks[1].wait_for_messages_blocking(1, WAIT);
    assert_eq!(got[0].rcpt_to, vec!["sent@b.test".to_owned()]);
    let e = wait_event(&s, "deferred", &id, Some("kept@a.test"));
    assert_eq!(e["status"], "4.3.2");
    assert!(e["reply"].as_str().unwrap().contains("paused"), "{e}");
    assert_eq!(sinks[0].connections(), 0);

    let o = init(&s.work, &["restart"]);
    assert!(o.status.success(), "{}", text(&o));
    s.mtad.await_ready_again();
    let (_, status) = status_json(&s.work);
    assert_eq!(status["daemon"]["paused_domains"][0], "a.test", "{status}");
    assert_eq!(ids(&list(&s.work, &[])), vec![id.clone()]);

    let o = init(&s.work, &["resume", "delivery", "--domain", "a.test"]);
    assert!(text(&o).contains("1 message due now"), "{}", text(&o));
    let got = sinks[0].wait_for_messages_blocking(1, WAIT);
    assert_eq!(got[0].rcpt_to, vec!["kept@a.test".to_owned()]);
    wait_until("an empty queue", WAIT, || list(&s.work, &[]).is_empty());
}

#[test]
fn the_http_api_wants_the_bearer_token_and_steers_the_queue() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    sinks[0].set_default_rcpt_reply(451, "4.2.0 not now");
    let s = Setup::start(
        two_domains(),
        port,
        &format!("{SLOW_RETRIES}[http]\nlisten = [\"127.0.0.1:0\"]\ntoken = \"{TOKEN}\"\n"),
    );
    let addr = http(&s);
    let id = s.send("alice@x.test", &["one@a.test"], "api");
    wait_event(&s, "deferred", &id, None);

    for path in ["/api/queue", "/status", "/metrics"] {
        assert_eq!(request(addr, "GET", path, None, None).0, 401, "{path}");
        assert_eq!(
            request(addr, "GET", path, Some("wrong-token-wrong-token"), None).0,
            401
        );
        assert_eq!(
            request(addr, "GET", path, Some(TOKEN), None).0,
            200,
            "{path}"
        );
    }
    let post = |path: &str, json: &str| request(addr, "POST", path, Some(TOKEN), Some(json));

    let (code, body) = post("/api/queue/hold", &format!("{{\"id\":\"{id}\"}}"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["done"],
        1,
        "{body}"
    );
    assert_eq!(ids(&list(&s.work, &["--queue", "held"])), vec![id.clone()]);
    let (code, body) = post("/api/queue/release", "{\"all\":true}");
    assert_eq!(code, 200, "{body}");

    let (code, body) = post("/api/pause/delivery", "{\"domain\":\"b.test\"}");
    assert_eq!(code, 200, "{body}");
    let (_, status) = status_json(&s.work);
    assert_eq!(status["daemon"]["paused_domains"][0], "b.test", "{status}");
    let (code, body) = post("/api/resume/delivery", "{\"domain\":\"b.test\"}");
    assert_eq!(code, 200, "{body}");

    let (code, body) = post("/api/queue/flush", "{}");
    assert_eq!(code, 400, "no selection: {body}");
    // Released, it is due now: the delete may meet its attempt, and then
    // happens when the attempt ends.
    let (code, body) = post("/api/queue/delete", &format!("{{\"id\":\"{id}\"}}"));
    assert_eq!(code, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["matched"], 1, "{body}");
    wait_until("an empty queue", WAIT, || list(&s.work, &[]).is_empty());
    let (code, _) = post("/api/queue/delete", &format!("{{\"id\":\"{id}\"}}"));
    assert_eq!(code, 404);
}

#[test]
fn a_paused_domain_still_counts_the_lifetime() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    let s = Setup::start(
        two_domains(),
        port,
        "[queue]\nretry_base = \"1s\"\nlifetime = \"2s\"\npoll_interval = \"100ms\"\n",
    );
    let o = init(&s.work, &["pause", "delivery", "--domain", "a.test"]);
    assert!(o.status.success(), "{}", text(&o));
    let id = s.send("alice@local.test", &["late@a.test"], "too late");
    let e = wait_event(&s, "expired", &id, None);
    assert_eq!(e["status"], "4.4.7");
    let dsn = s.wait_maildir("local.test", "alice", 1);
    let text = std::fs::read_to_string(&dsn[0]).unwrap();
    assert!(
        text.contains("paused"),
        "the DSN gives the last cause: {text}"
    );
    assert_eq!(sinks[0].connections(), 0);
}

#[test]
fn an_hourly_limit_defers_what_is_over_it_without_a_connection() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    let s = Setup::start(
        two_domains(),
        port,
        &format!("{SLOW_RETRIES}[delivery.throttle.\"a.test\"]\nmax_messages_per_hour = 2\n"),
    );
    let first = s.send("alice@x.test", &["one@a.test"], "one");
    wait_event(&s, "delivered", &first, None);
    let second = s.send("alice@x.test", &["two@a.test"], "two");
    wait_event(&s, "delivered", &second, None);
    let connections = sinks[0].connections();
    let third = s.send("alice@x.test", &["three@a.test"], "three");
    let e = wait_event(&s, "deferred", &third, None);
    assert_eq!(e["status"], "4.4.5", "{e}");
    assert!(e["reply"].as_str().unwrap().contains("per hour"), "{e}");
    assert_eq!(
        sinks[0].connections(),
        connections,
        "no connection over the limit"
    );
    assert_eq!(sinks[0].messages().len(), 2);
    assert_eq!(ids(&list(&s.work, &[])), vec![third]);
}
