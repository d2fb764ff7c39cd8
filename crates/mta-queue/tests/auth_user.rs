//! The authenticated user (SMTP AUTH, RFC 4954), kept in the envelope's
//! `origin.auth`, as the operator and the delivery log see it: real
//! runners on a real spool in a temporary directory, the message handed
//! over as the listener hands it (`claim`, `store`, `accepted`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mta_envelope::{BodyType, Envelope, Mailbox, Origin, QueueId, Recipient, ReversePath};
use mta_queue::schedule::Schedule;
use mta_queue::{Action, Filter, Queue, QueueSettings, Selection, Settings};
use mta_spool::{Spool, SpoolConfig};

/// Runners on a spool: `local.test` is ours (Maildir under `dir`),
/// `remote.test` goes to a loopback port nothing listens on, so its
/// recipients defer at once.
fn settings(dir: &Path) -> QueueSettings {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    QueueSettings {
        attempts: Settings {
            hostname: "mx.test".into(),
            postmaster: "postmaster".into(),
            dsn_from: "MAILER-DAEMON@mx.test".into(),
            port: 25,
            maildir_root: dir.join("maildirs"),
            schedule: Schedule {
                base: Duration::from_secs(3600),
                jitter: 0.0,
                lifetime: Duration::from_secs(86_400),
            },
            delay_notice_after: None,
            volatile: false,
            poll_interval: Duration::from_secs(3600),
            dkim: Default::default(),
        },
        delivery_log: dir.join("delivery.log"),
        client: Default::default(),
        resolver: Default::default(),
        local_domains: vec!["local.test".into()],
        routes: BTreeMap::from([("remote.test".into(), closed.to_string())]),
        ram_concurrency: 4,
        bounce_concurrency: 1,
        disk_concurrency: 1,
    }
}

fn envelope(sender: ReversePath, rcpts: &[(&str, &str)], auth: Option<&str>) -> Envelope {
    Envelope {
        sender,
        recipients: rcpts
            .iter()
            .map(|(local, domain)| Recipient {
                address: Mailbox::new(*local, *domain),
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
            helo: "client.test".into(),
            protocol: if auth.is_some() { "ESMTPA" } else { "ESMTP" }.into(),
            tls: None,
            auth: auth.map(str::to_owned),
        },
        arrival: mta_envelope::unix_now(),
    }
}

/// The user reaches the listing, `show` and every delivery-log line of
/// its message (received, delivered, deferred, the operator's held); a
/// message without one shows and logs none.
#[test]
fn the_authenticated_user_is_listed_shown_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let (spool, _) = Spool::open(SpoolConfig {
        dir: dir.path().join("queue"),
        min_free_space: 0,
        max_batch: 8,
        rescan_rate: 0,
        writers: 8,
        index_cache: 0,
    })
    .unwrap();
    let queue = Queue::start(settings(dir.path()), spool.clone()).unwrap();
    let authed = envelope(
        ReversePath::Mailbox(Mailbox::new("alice", "example.test")),
        &[("bob", "local.test"), ("x", "remote.test")],
        Some("alice@example.test"),
    );
    let anonymous = envelope(ReversePath::Null, &[("y", "remote.test")], None);
    let mut ids = Vec::new();
    for env in [authed, anonymous] {
        let id = spool.next_id();
        let claim = queue.claim(id);
        let content = Arc::new(b"Subject: t\r\n\r\nhi\r\n".to_vec());
        rt.block_on(spool.store(id, &env, &[&content])).unwrap();
        queue.accepted(claim, env, content, true);
        ids.push(id);
    }
    let operator = queue.operator();
    // Bounded: the attempts are a Maildir write and a refused connection
    // on loopback.
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let page = operator.list(&Filter::default(), None, 10).unwrap();
        if page.messages.len() == 2 && page.messages.iter().all(|m| m.attempts == 1) {
            break page.messages;
        }
        assert!(Instant::now() < deadline, "no first attempts: {page:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let users: Vec<_> = rows.iter().map(|m| m.auth.as_deref()).collect();
    assert_eq!(users, [Some("alice@example.test"), None]);
    let shown = operator.show(ids[0], false).unwrap();
    assert_eq!(shown.message.auth.as_deref(), Some("alice@example.test"));
    assert_eq!(operator.show(ids[1], false).unwrap().message.auth, None);
    // The operator's lines too.
    let held = rt
        .block_on(operator.act(Action::Hold, &Selection::All, false))
        .unwrap();
    assert_eq!(held.done, 2);

    // `show` takes the user from the spool file, the truth, even when the
    // entry has none (as one of format 2 has not).
    let mut entry = spool.entry(ids[0]).unwrap().unwrap();
    entry.auth = None;
    spool.update(ids[0], &entry).unwrap();
    let listed = operator.list(&Filter::default(), None, 10).unwrap();
    assert_eq!(listed.messages[0].auth, None);
    let shown = operator.show(ids[0], false).unwrap();
    assert_eq!(shown.message.auth.as_deref(), Some("alice@example.test"));

    rt.block_on(queue.shutdown(Duration::from_secs(5)));
    let log = std::fs::read_to_string(dir.path().join("delivery.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |id: QueueId| {
        let id = id.to_string();
        let mut events: Vec<_> = lines
            .iter()
            .filter(|l| l["queue_id"] == id.as_str())
            .map(|l| {
                (
                    l["event"].as_str().unwrap().to_owned(),
                    l.get("auth").and_then(|a| a.as_str()).map(str::to_owned),
                )
            })
            .collect();
        events.sort();
        events
    };
    let alice = || Some("alice@example.test".to_owned());
    let events = |list: &[&str], user: fn() -> Option<String>| {
        list.iter()
            .map(|e| (e.to_string(), user()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of(ids[0]),
        events(&["deferred", "delivered", "held", "received"], alice),
        "{log}"
    );
    assert_eq!(
        of(ids[1]),
        events(&["deferred", "held", "received"], || None),
        "{log}"
    );
    spool.close().unwrap();
}
