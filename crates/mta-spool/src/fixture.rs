//! The queue fixtures `tests/fixtures/queue-v1` and `queue-v2`: queue
//! directories as a release leaves them after a clean stop, kept in the
//! tree so that later versions prove they open and deliver them (the
//! integration test `tests/integration/queue_fixture.rs`). `queue-v1` was
//! written before spool file format 2 (its spool files are `MTA-SPOOL 1`);
//! `queue-v2` by the release that brought format 2.
//!
//! [`write_queue_fixture`] made them and documents how; it is ignored,
//! because a fixture must stay what its release wrote, not what the code
//! of the day writes. Run it again only to start a new fixture
//! (`cargo test -p mta-spool -- --ignored write_queue_fixture`), under a
//! new name ([`NEWEST`]), keeping the old ones.
//!
//! Everything goes through the spool's own writes (`store`, `store_in`,
//! `update`, `append_history`, `save_state`, `close`), the calls the
//! daemon makes, except two entries rewritten in the older encodings the
//! index still reads (`codec.rs`): format 1 and the JSON of earlier
//! versions, the latter without the addresses it did not have yet. The
//! operator state is written in the JSON the queue crate saves:
//! `paused-domains` (a set of domains) and `backoffs`
//! (`mta_deliver::Backoff`: key, until, cause).
//!
//! The messages, by subject (`fixture <name>`), each with recipients the
//! test routes to a sink on loopback (`example.test`, `paused.test`,
//! `backoff.test`) or to a local Maildir (`local.test`):
//!
//! "current" is the index entry format of the fixture's release: format 2
//! in `queue-v1`, format 3 in `queue-v2`.
//!
//! | name | queue | entry | state |
//! |---|---|---|---|
//! | `ram` | ram | current | never attempted (two recipients, RET, ENVID, NOTIFY, ORCPT) |
//! | `partly` | disk | current | `done@` delivered, `later@` deferred with a reply |
//! | `v1` | disk | format 1 | deferred once |
//! | `json` | disk | JSON, no addresses | deferred twice |
//! | `bounce` | bounce | current | a DSN from `<>`, never attempted |
//! | `held` | held | current | held by the operator after one attempt |
//! | `paused` | disk | current | deferred: `paused.test` is paused |
//! | `backoff` | disk | current | deferred: `mx:backoff.test` is backed off until 2100 |
//! | `local` | ram | current | for `bob@local.test` (Maildir) |
//!
//! Every time in it is the moment it was made (or an hour or minutes
//! before), so when a test runs they are in the past: what is scheduled
//! is due at once, and the test's lifetime must be long enough that
//! nothing has expired (the back-off's end, 2100-01-01, is the one time
//! in the future).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mta_envelope::{Envelope, Mailbox, Notify, Origin, QueueId, Recipient, Ret, ReversePath};

use crate::entry::{HistoryRecord, IndexEntry, QueueName, RecipientError, RecipientState};
use crate::{Spool, SpoolConfig};

/// The fixtures, oldest first: the first line of their spool files, and
/// the index entry format their writer used besides format 1 and JSON.
const FIXTURES: [(&str, &str, u8); 2] = [
    ("queue-v1", "MTA-SPOOL 1\n", 2),
    ("queue-v2", "MTA-SPOOL 2 ", 3),
];

/// The fixture [`write_queue_fixture`] writes.
const NEWEST: &str = "queue-v2";

/// Where a fixture lives in the workspace.
fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// The back-off's end: 2100-01-01T00:00:00Z.
const BACKOFF_UNTIL: u64 = 4_102_444_800;

fn mailbox(address: &str) -> Mailbox {
    let (local, domain) = address.split_once('@').expect("an address with a domain");
    Mailbox {
        local: local.into(),
        domain: domain.into(),
    }
}

fn recipient(address: &str) -> Recipient {
    Recipient {
        address: mailbox(address),
        notify: None,
        orcpt: None,
    }
}

fn envelope(sender: Option<&str>, recipients: &[&str], arrival: u64) -> Envelope {
    Envelope {
        sender: sender.map_or(ReversePath::Null, |s| ReversePath::Mailbox(mailbox(s))),
        recipients: recipients.iter().map(|r| recipient(r)).collect(),
        body: Default::default(),
        smtputf8: false,
        ret: None,
        envid: None,
        origin: Origin {
            client_ip: "127.0.0.1".parse().expect("an address"),
            helo: "client.test".into(),
            protocol: "ESMTP".into(),
            tls: None,
            auth: None,
        },
        arrival,
    }
}

/// A message's content as mtad stores it: its `Received:` header, then
/// the text as received (CRLF, not dot-stuffed; one line starts with a
/// dot, which the relay must stuff and the sink unstuff).
fn content(name: &str, to: &str) -> Vec<u8> {
    format!(
        "Received: from client.test ([127.0.0.1])\r\n\tby mx.test with ESMTP id fixture-{name}\r\n\t\
         for <{to}>; Thu, 1 Jan 2026 00:00:00 +0000\r\n\
         From: sender@client.test\r\nTo: {to}\r\nSubject: fixture {name}\r\n\
         Message-ID: <{name}@fixture.test>\r\n\r\n\
         The {name} message of the queue fixture.\r\n.a line that starts with a dot\r\nEnd.\r\n"
    )
    .into_bytes()
}

fn error(status: &str, reason: &str, reply: Option<&str>) -> RecipientError {
    RecipientError {
        status: status.into(),
        reason: reason.into(),
        remote: reply.map(|_| "mx1.example.test[127.0.0.2]:25".into()),
        reply: reply.map(Into::into),
    }
}

fn record(time: u64, attempt: u32, recipient: usize, event: &str, status: &str) -> HistoryRecord {
    HistoryRecord {
        time,
        attempt,
        recipient,
        event: event.into(),
        status: status.into(),
        reply: format!("{event} ({status})"),
        remote: None,
    }
}

/// Stores one message and returns its id and its entry as stored.
async fn store(
    spool: &Spool,
    queue: QueueName,
    envelope: &Envelope,
    name: &str,
) -> (QueueId, IndexEntry) {
    let id = spool.next_id();
    let to = envelope.recipients[0].address.to_string();
    spool
        .store_in(queue, id, envelope, Arc::new(content(name, &to)))
        .await
        .expect("store");
    let entry = spool.entry(id).expect("read").expect("indexed");
    (id, entry)
}

/// The entry after `attempts` attempts, the next one due at `next`.
fn attempted(mut entry: IndexEntry, attempts: u32, next: u64) -> IndexEntry {
    entry.queue = QueueName::Disk;
    entry.attempts = attempts;
    entry.next_attempt = next;
    entry
}

#[tokio::test]
#[ignore = "made the fixture once; run again only for a new fixture"]
async fn write_queue_fixture() {
    let dir = fixture_dir(NEWEST);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("remove the old fixture");
    }
    let (spool, _) = Spool::open(SpoolConfig {
        dir: dir.clone(),
        min_free_space: 0,
        max_batch: 16,
        rescan_rate: 0,
        writers: 8,
        index_cache: 0,
    })
    .expect("open");
    let now = crate::ids::unix_micros() / 1_000_000;
    let arrival = now - 3600;
    let index = spool.index().expect("index");

    // Accepted, never attempted (the ram runner was paused at the stop).
    let mut ram = envelope(
        Some("carol@client.test"),
        &["ram1@example.test", "ram2@example.test"],
        arrival,
    );
    ram.ret = Some(Ret::Hdrs);
    ram.envid = Some("fixture-ram".into());
    ram.recipients[0].notify = Some(Notify::Never);
    ram.recipients[1].orcpt = Some("rfc822;ram2@example.test".into());
    store(&spool, QueueName::Ram, &ram, "ram").await;

    // One recipient delivered, one deferred with the server's reply.
    let partly = envelope(
        Some("dave@client.test"),
        &["done@example.test", "later@example.test"],
        arrival,
    );
    let (id, entry) = store(&spool, QueueName::Ram, &partly, "partly").await;
    let mut entry = attempted(entry, 1, now - 60);
    entry.recipients[0] = RecipientState::Delivered;
    entry.last_errors = BTreeMap::from([(
        1,
        error(
            "4.2.0",
            "host mx1.example.test[127.0.0.2]:25 said: 451 4.2.0 busy (in reply to RCPT TO command)",
            Some("451 4.2.0 busy"),
        ),
    )]);
    spool.update(id, &entry).expect("update");
    spool
        .append_history(
            id,
            &[
                record(arrival + 1, 1, 0, "delivered", "2.0.0"),
                record(arrival + 1, 1, 1, "deferred", "4.2.0"),
            ],
        )
        .expect("history");

    // Format 1: deferred once, its last error without a reply.
    let v1 = envelope(Some("erin@client.test"), &["v1@example.test"], arrival);
    let (id, entry) = store(&spool, QueueName::Ram, &v1, "v1").await;
    let mut entry = attempted(entry, 1, now - 60);
    entry.last_errors = BTreeMap::from([(
        0,
        error(
            "4.4.1",
            "connection to mx1.example.test[127.0.0.2]:25 refused",
            None,
        ),
    )]);
    spool.update(id, &entry).expect("update");
    spool
        .append_history(id, &[record(arrival + 1, 1, 0, "deferred", "4.4.1")])
        .expect("history");
    index.insert_raw_entry(id, &crate::codec::encode_v1(&entry));

    // JSON of a version before the addresses were kept in the entry.
    let json = envelope(Some("frank@client.test"), &["json@example.test"], arrival);
    let (id, entry) = store(&spool, QueueName::Ram, &json, "json").await;
    let mut entry = attempted(entry, 2, now - 60);
    entry.last_errors = BTreeMap::from([(
        0,
        error("4.4.2", "connection to mx1.example.test timed out", None),
    )]);
    spool.update(id, &entry).expect("update");
    entry.sender = String::new();
    entry.rcpts = Vec::new();
    let old = serde_json::to_vec(&entry).expect("JSON");
    assert!(!String::from_utf8_lossy(&old).contains("rcpts"));
    index.insert_raw_entry(id, &old);

    // A DSN of ours, from <>, in the bounce queue.
    let bounce = envelope(None, &["dave@example.test"], arrival);
    store(&spool, QueueName::Bounce, &bounce, "bounce").await;

    // Held by the operator after one attempt: no schedule key.
    let held = envelope(Some("grace@client.test"), &["held@example.test"], arrival);
    let (id, entry) = store(&spool, QueueName::Ram, &held, "held").await;
    let mut entry = attempted(entry, 1, now - 60);
    entry.queue = QueueName::Held;
    entry.held_since = Some(now - 600);
    spool.update(id, &entry).expect("update");
    spool
        .append_history(id, &[record(now - 600, 0, 0, "held", "")])
        .expect("history");

    // Deferred because its domain is paused.
    let paused = envelope(Some("heidi@client.test"), &["someone@paused.test"], arrival);
    let (id, entry) = store(&spool, QueueName::Ram, &paused, "paused").await;
    let mut entry = attempted(entry, 1, now - 60);
    entry.last_errors = BTreeMap::from([(
        0,
        error(
            "4.3.2",
            "delivery to paused.test is paused by the operator",
            None,
        ),
    )]);
    spool.update(id, &entry).expect("update");
    spool
        .save_state("paused-domains", br#"["paused.test"]"#)
        .expect("state");

    // Deferred because its destination is backed off.
    let backoff = envelope(Some("ivan@client.test"), &["x@backoff.test"], arrival);
    let (id, entry) = store(&spool, QueueName::Ram, &backoff, "backoff").await;
    let mut entry = attempted(entry, 1, now - 60);
    let cause = "host mx.backoff.test[127.0.0.2]:25 said: 421 4.7.0 too many connections \
                 (in reply to MAIL FROM command)";
    entry.last_errors = BTreeMap::from([(
        0,
        error("4.7.0", cause, Some("421 4.7.0 too many connections")),
    )]);
    spool.update(id, &entry).expect("update");
    let backoffs = serde_json::json!([{
        "key": "mx:backoff.test",
        "until": BACKOFF_UNTIL,
        "cause": cause,
    }]);
    spool
        .save_state("backoffs", backoffs.to_string().as_bytes())
        .expect("state");

    // For a local Maildir.
    let local = envelope(Some("judy@client.test"), &["bob@local.test"], arrival);
    store(&spool, QueueName::Ram, &local, "local").await;

    index.assert_consistent();
    spool.close().expect("a clean close");
}

/// The fixtures keep what they are for: each entry format, a clean
/// marker, the saved state, and spool files of their version. (Read
/// straight from their sled files, on a copy.)
#[test]
fn the_fixtures_hold_every_entry_format_and_a_clean_stop() {
    for (name, first_line, current) in FIXTURES {
        let copy = tempfile::tempdir().expect("tempdir");
        let queue = copy.path().join("queue");
        mta_testkit::copy_tree(&fixture_dir(name), &queue);
        assert!(queue.join("clean").is_file(), "{name}: no clean marker");
        let db = sled::open(queue.join("index")).expect("the fixture's index opens");
        let messages = db.open_tree("messages").expect("messages");
        let mut formats: Vec<u8> = messages
            .iter()
            .values()
            .map(|v| v.expect("a value")[0])
            .collect();
        formats.sort_unstable();
        formats.dedup();
        assert_eq!(
            formats,
            vec![1, current, b'{'],
            "{name}: format 1, {current} and JSON"
        );
        let meta = db.open_tree("meta").expect("meta");
        assert!(meta.get("clean-token").expect("read").is_some(), "{name}");
        for state in ["state:paused-domains", "state:backoffs"] {
            assert!(meta.get(state).expect("read").is_some(), "{name}: {state}");
        }
        let mut files = 0;
        for bucket in std::fs::read_dir(queue.join("msg")).expect("msg/") {
            for file in std::fs::read_dir(bucket.expect("bucket").path()).expect("bucket") {
                let bytes = std::fs::read(file.expect("file").path()).expect("read");
                assert!(bytes.starts_with(first_line.as_bytes()), "{name}");
                files += 1;
            }
        }
        assert_eq!(files, 9, "{name}");
    }
}
