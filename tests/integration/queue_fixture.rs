//! A queue written by an earlier release opens and delivers: each fixture
//! (`tests/fixtures/queue-v1`, spool files of version 1, and `queue-v2`,
//! of version 2; made by `crates/mta-spool/src/fixture.rs`, which lists
//! what they hold) is copied to a scratch directory and the real mtad
//! started on it, with a DNS server and an SMTP sink on loopback.
//!
//! Every time in the fixture is the moment it was made, so by the time
//! this runs its messages arrived long ago: the lifetime here is a
//! hundred years, so that none of them has expired (with the default of
//! five days every pending recipient would fail with 4.4.7 after one
//! last attempt), and no delay notice is configured. The back-off it
//! saved lasts until 2100.

use std::collections::BTreeMap;
use std::path::Path;

use mta_testkit::dns::{TestDns, Zone};
use mta_testkit::sink::{Received, SinkConfig};

use crate::delivery::{delivery_log, event, ip, sinks, WAIT};
use crate::util::{init, list, queue, status_json, text, wait_until, Mtad, Workdir};

/// A fixture, in the workspace.
fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// One spool file of the fixture, read as the format says (`queue/README.md`):
/// the first line, the envelope as JSON, the content (to the end of the
/// file in version 1, as long as the first line says in version 2).
struct Stored {
    id: String,
    sender: String,
    recipients: Vec<String>,
    content: Vec<u8>,
}

fn address(v: &serde_json::Value) -> String {
    format!(
        "{}@{}",
        v["local"].as_str().expect("local part"),
        v["domain"].as_str().expect("domain")
    )
}

/// The fixture's messages by name (the `fixture <name>` subject).
fn stored_messages(name: &str) -> BTreeMap<String, Stored> {
    let mut out = BTreeMap::new();
    for bucket in std::fs::read_dir(fixture(name).join("msg")).expect("msg/") {
        for file in std::fs::read_dir(bucket.expect("bucket").path()).expect("bucket") {
            let file = file.expect("file");
            let bytes = std::fs::read(file.path()).expect("read");
            let mut parts = bytes.splitn(3, |&b| b == b'\n');
            let first = std::str::from_utf8(parts.next().expect("first line")).expect("ASCII");
            let envelope: serde_json::Value =
                serde_json::from_slice(parts.next().expect("envelope")).expect("envelope JSON");
            let rest = parts.next().expect("content");
            let content = match first.strip_prefix("MTA-SPOOL 2 ") {
                Some(len) => rest[..len.parse::<usize>().expect("a length")].to_vec(),
                None => {
                    assert_eq!(first, "MTA-SPOOL 1");
                    rest.to_vec()
                }
            };
            let sender = match &envelope["sender"]["mailbox"] {
                serde_json::Value::Null => String::new(),
                m => address(m),
            };
            let recipients = envelope["recipients"]
                .as_array()
                .expect("recipients")
                .iter()
                .map(|r| address(&r["address"]))
                .collect();
            let name = String::from_utf8_lossy(&content)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: fixture ").map(str::to_owned))
                .expect("a fixture subject");
            let id = file.file_name().into_string().expect("an id");
            let stored = Stored {
                id,
                sender,
                recipients,
                content,
            };
            out.insert(name, stored);
        }
    }
    out
}
/// `name` reached the sink once, for `rcpts` (its own recipients), from
/// its sender, with the text as stored.
fn delivered_once(
    by_name: &BTreeMap<String, Vec<&Received>>,
    stored: &BTreeMap<String, Stored>,
    name: &str,
    rcpts: &[&str],
) {
    let copies = by_name
        .get(name)
        .unwrap_or_else(|| panic!("{name} not delivered: {by_name:?}"));
    assert_eq!(copies.len(), 1, "{name} delivered more than once");
    let r = copies[0];
    assert_eq!(r.rcpt_to, rcpts, "{name}");
    assert!(
        rcpts
            .iter()
            .all(|a| stored[name].recipients.contains(&a.to_string())),
        "{name}: not its recipients"
    );
    assert_eq!(r.mail_from, stored[name].sender, "{name}");
    assert_eq!(
        String::from_utf8_lossy(&r.data),
        String::from_utf8_lossy(&stored[name].content),
        "{name}: the text as stored"
    );
    assert_eq!(r.data, stored[name].content, "{name}");
}

/// What the sink received, by fixture name.
fn received_by_name(got: &[Received]) -> BTreeMap<String, Vec<&Received>> {
    let mut out: BTreeMap<String, Vec<&Received>> = BTreeMap::new();
    for r in got {
        let name = String::from_utf8_lossy(&r.data)
            .lines()
            .find_map(|l| l.strip_prefix("Subject: fixture ").map(str::to_owned))
            .unwrap_or_else(|| panic!("not a fixture message: {r:?}"));
        out.entry(name).or_default().push(r);
    }
    out
}

#[test]
fn a_queue_of_the_first_release_opens_and_delivers() {
    opens_and_delivers("queue-v1");
}

#[test]
fn a_queue_of_spool_file_format_2_opens_and_delivers() {
    opens_and_delivers("queue-v2");
}

fn opens_and_delivers(name: &str) {
    let stored = stored_messages(name);
    assert_eq!(stored.len(), 9, "{:?}", stored.keys());
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    let sink = &sinks[0];
    let zone = Zone::new()
        .mx("example.test", 10, "mx1.example.test")
        .a("mx1.example.test", ip(2))
        .mx("paused.test", 10, "mx.paused.test")
        .a("mx.paused.test", ip(2))
        .mx("backoff.test", 10, "mx.backoff.test")
        .a("mx.backoff.test", ip(2));
    let dns = TestDns::start_in_background(zone).expect("test DNS server");
    let work = Workdir::new();
    mta_testkit::copy_tree(&fixture(name), &work.queue());
    let maildir = work.path().join("maildir");
    work.write_config(
        "",
        &format!(
            "[smtp]\nlisten = [\"127.0.0.1:0\"]\nlocal_domains = [\"local.test\"]\n\
             [maildir]\nroot = {:?}\n\
             [delivery]\nport = {port}\nname_servers = [\"{}\"]\ndns_timeout = \"2s\"\n\
             {NO_DANE}\n\
             [queue]\nlifetime = \"100years\"\nretry_base = \"1h\"\npoll_interval = \"100ms\"\n",
            maildir.display().to_string(),
            dns.addr,
            NO_DANE = crate::delivery::NO_DANE,
        ),
    );
    let mtad = Mtad::start(&work);

    // The clean stop is recognized and the index trusted as it is.
    let (_, status) = status_json(&work);
    let daemon = &status["daemon"];
    assert_eq!(daemon["spool_open"]["last_stop"], "clean", "{status}");
    assert_eq!(daemon["spool_open"]["index"], "trusted", "{status}");
    assert_eq!(daemon["spool_open"]["rescanned"], 0, "{status}");
    // The operator's state: a paused domain, a back-off, a held message.
    assert_eq!(
        daemon["paused_domains"],
        serde_json::json!(["paused.test"]),
        "{status}"
    );
    assert_eq!(daemon["backoffs"][0]["key"], "mx:backoff.test", "{status}");
    assert_eq!(daemon["backoffs"][0]["until"], 4_102_444_800u64, "{status}");
    assert_eq!(daemon["held"], 1, "{status}");

    // What is due goes out: every pending recipient once, with the text
    // as stored; a recipient delivered before is not sent again.
    let got = sink.wait_for_messages_blocking(5, WAIT);
    let local = maildir.join("local.test/bob/Maildir/new");
    wait_until("the local message", WAIT, || {
        std::fs::read_dir(&local).is_ok_and(|d| d.count() == 1)
    });
    let by_name = received_by_name(&got);
    let expect = |name: &str, rcpts: &[&str]| delivered_once(&by_name, &stored, name, rcpts);
    expect("ram", &["ram1@example.test", "ram2@example.test"]);
    expect("partly", &["later@example.test"]);
    expect("v1", &["v1@example.test"]);
    expect("json", &["json@example.test"]);
    expect("bounce", &["dave@example.test"]);
    assert_eq!(stored["bounce"].sender, "", "a DSN from <>");
    let file = std::fs::read_dir(&local)
        .expect("Maildir")
        .next()
        .expect("one file")
        .expect("entry")
        .path();
    let lf = String::from_utf8_lossy(&stored["local"].content).replace("\r\n", "\n");
    assert_eq!(
        std::fs::read_to_string(file).expect("read"),
        format!("Return-Path: <judy@client.test>\nDelivered-To: bob@local.test\n{lf}")
    );

    // The paused domain and the backed-off destination are deferred
    // without a connection; the held message is not attempted.
    let log_path = work.queue().join("delivery.log");
    let deferred = |name: &str| {
        let id = &stored[name].id;
        let mut found = None;
        wait_until(&format!("{name} deferred"), WAIT, || {
            found = delivery_log(&log_path)
                .into_iter()
                .find(|e| event(e, "deferred", id));
            found.is_some()
        });
        found.expect("found")
    };
    let e = deferred("paused");
    assert_eq!(e["status"], "4.3.2", "{e}");
    let e = deferred("backoff");
    assert_eq!(e["status"], "4.4.5", "{e}");
    assert!(
        e["reply"]
            .as_str()
            .unwrap_or_default()
            .contains("local back-off"),
        "{e}"
    );
    let held = list(&work, &["--queue", "held"]);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["id"], stored["held"].id.as_str());

    // Released and resumed, they go out too; the back-off holds.
    let out = queue(&work, &["release", &stored["held"].id]);
    assert!(out.contains("1 of 1 message released"), "{out}");
    let o = init(&work, &["resume", "delivery", "--domain", "paused.test"]);
    assert!(o.status.success(), "{}", text(&o));
    let got = sink.wait_for_messages_blocking(7, WAIT);
    let by_name = received_by_name(&got);
    let expect = |name: &str, rcpts: &[&str]| delivered_once(&by_name, &stored, name, rcpts);
    expect("held", &["held@example.test"]);
    expect("paused", &["someone@paused.test"]);
    wait_until("only the backed-off message left", WAIT, || {
        let left = list(&work, &[]);
        left.len() == 1 && left[0]["id"] == stored["backoff"].id.as_str()
    });
    let got = sink.messages();
    assert_eq!(got.len(), 7, "{got:?}");
    assert!(
        !got.iter()
            .flat_map(|r| &r.rcpt_to)
            .any(|a| a == "done@example.test" || a.ends_with("@backoff.test")),
        "{got:?}"
    );
    assert!(mtad.terminate().success());
}
