//! The DSNs mtad writes, read back with an independent parser: Python's
//! `email` package (`parse_dsn.py` prints what it finds as JSON).
//!
//! Issue 11, points 1, 3 and 4: a success notice for mail relayed to a
//! next hop that reports DSNs itself (RFC 3461 section 5.2.1: none from
//! us), `relayed` rather than `delivered` for a next hop that does not
//! (section 5.2.2), no file path in a local success notice, the remote
//! reply itself after `smtp;` with the host in `Remote-MTA` (RFC 3464
//! sections 2.3.5 and 2.3.6), no `smtp;` for what no server said, and
//! double bounces that reach a postmaster with the default configuration,
//! or are counted when they cannot.

use std::path::{Path, PathBuf};
use std::process::Command;

use mta_testkit::dns::Zone;
use mta_testkit::sink::SinkConfig;
use serde_json::Value;

use crate::delivery::{event, example_zone, ip, sinks, Setup, WAIT};
use crate::util::{init, message, status_json, text, wait_until, Workdir};

/// The DSN in `file` as Python's `email` package reads it: see
/// `parse_dsn.py` for the fields. None when python3 is missing outside CI
/// (the caller skips, saying so).
fn parse_dsn(file: &Path) -> Option<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/parse_dsn.py");
    let out = match Command::new("python3").arg(&script).arg(file).output() {
        Ok(out) => out,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "python3 is missing in CI ({e}): tests/install-peers.sh installs it"
            );
            eprintln!(
                "skipped: python3 is not installed ({e}); tests/install-peers.sh installs it"
            );
            return None;
        }
    };
    assert!(
        out.status.success(),
        "parse_dsn.py {}: {}\n--- the message ---\n{}",
        file.display(),
        text(&out),
        std::fs::read_to_string(file).unwrap_or_default()
    );
    Some(serde_json::from_slice(&out.stdout).expect("parse_dsn.py prints JSON"))
}

/// One field of the first recipient block, or "" when absent.
fn rcpt_field<'a>(dsn: &'a Value, name: &str) -> &'a str {
    dsn["recipients"][0][name].as_str().unwrap_or("")
}

/// Sends one message from `from` to each `(recipient, RCPT parameters)`;
/// returns its queue id.
fn send_with(s: &Setup, from: &str, to: &[(&str, &str)], subject: &str) -> String {
    let mut c = s.mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd(&format!("MAIL FROM:<{from}>"), "250");
    for (rcpt, params) in to {
        c.cmd(&format!("RCPT TO:<{rcpt}> {params}"), "250");
    }
    c.cmd("DATA", "354");
    c.send(message(subject).as_bytes());
    c.send(b".\r\n");
    let r = c.reply();
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    c.cmd("QUIT", "221");
    r.text().rsplit(' ').next().unwrap().to_owned()
}

fn queued(work: &Workdir) -> u64 {
    status_json(work).1["daemon"]["queued"]
        .as_u64()
        .expect("daemon.queued")
}

/// Waits until nothing is queued: the message and every DSN made for it
/// are done (a DSN is queued before its message leaves the queue).
fn wait_empty(s: &Setup) {
    wait_until("an empty queue", WAIT, || queued(&s.work) == 0);
}

fn only_file(files: Vec<PathBuf>) -> PathBuf {
    assert_eq!(files.len(), 1, "{files:#?}");
    files.into_iter().next().unwrap()
}

/// Issue 11, point 1: with NOTIFY=SUCCESS to a next hop that announced
/// DSN, mtad passed NOTIFY on (right: the next hop reports now) and also
/// wrote an `Action: delivered` notice of its own; the sender got two.
#[test]
fn notify_success_to_a_dsn_next_hop_leaves_the_notice_to_it() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    assert!(SinkConfig::default().dsn, "the sink announces DSN");
    sinks[0].set_rcpt_reply("gone@", 550, "5.1.1 gone");
    let s = Setup::start(example_zone(), port, "");
    let id = send_with(
        &s,
        "alice@local.test",
        &[("bob@example.test", "NOTIFY=SUCCESS,FAILURE")],
        "relayed with dsn",
    );
    let got = sinks[0].wait_for_messages_blocking(1, WAIT);
    assert_eq!(got[0].rcpt_to, ["bob@example.test"]);
    assert!(
        got[0].rcpt_params[0].contains("NOTIFY=SUCCESS,FAILURE"),
        "NOTIFY is passed on: {:?}",
        got[0].rcpt_params
    );
    s.wait_log("delivered", |e| event(e, "delivered", &id));
    wait_empty(&s);
    assert!(
        !s.log().iter().any(|e| event(e, "bounced", &id)),
        "a DSN was made for mail the next hop reports on"
    );
    // A failure after it does make one: the only notice alice gets.
    let control = send_with(
        &s,
        "alice@local.test",
        &[("gone@example.test", "NOTIFY=FAILURE")],
        "control",
    );
    s.wait_maildir("local.test", "alice", 1);
    wait_empty(&s);
    let file = only_file(s.maildir_messages("local.test", "alice"));
    let Some(dsn) = parse_dsn(&file) else { return };
    assert_eq!(dsn["per_message"]["X-Queue-ID"], control.as_str(), "{dsn}");
    assert_eq!(
        rcpt_field(&dsn, "Final-Recipient"),
        "rfc822; gone@example.test"
    );
    assert_eq!(rcpt_field(&dsn, "Action"), "failed");
}

/// Issue 11, point 1: to a next hop without DSN, mtad owes the success
/// notice, and it must say `relayed` (RFC 3461 section 5.2.2, RFC 3464
/// section 2.3.3), not `delivered`.
#[test]
fn notify_success_to_a_next_hop_without_dsn_is_reported_as_relayed() {
    let (port, sinks) = sinks(&[ip(2)], || SinkConfig {
        dsn: false,
        ..SinkConfig::default()
    });
    let s = Setup::start(example_zone(), port, "");
    send_with(
        &s,
        "alice@local.test",
        &[("bob@example.test", "NOTIFY=SUCCESS")],
        "relayed without dsn",
    );
    let got = sinks[0].wait_for_messages_blocking(1, WAIT);
    assert_eq!(got[0].rcpt_params, [""], "no DSN parameters to this hop");
    let file = only_file(s.wait_maildir("local.test", "alice", 1));
    let Some(dsn) = parse_dsn(&file) else { return };
    assert_eq!(dsn["report_type"], "delivery-status", "{dsn}");
    assert_eq!(dsn["recipients"].as_array().unwrap().len(), 1, "{dsn}");
    assert_eq!(
        rcpt_field(&dsn, "Final-Recipient"),
        "rfc822; bob@example.test"
    );
    assert_eq!(rcpt_field(&dsn, "Action"), "relayed", "{dsn}");
    assert_eq!(rcpt_field(&dsn, "Status"), "2.0.0", "{dsn}");
    assert_eq!(rcpt_field(&dsn, "Remote-MTA"), "dns; mx1.example.test");
    assert!(
        rcpt_field(&dsn, "Diagnostic-Code").starts_with("smtp; 250 2.0.0 Ok"),
        "{dsn}"
    );
}

/// Issue 11, points 1 and 3: a local delivery's success notice says
/// `delivered`, and never shows where the message was written (it said
/// `delivered to maildir /var/spool/...`).
#[test]
fn local_delivery_success_notice_says_delivered_and_shows_no_path() {
    let s = Setup::start(Zone::new(), 25, "");
    send_with(
        &s,
        "alice@local.test",
        &[("carol@local.test", "NOTIFY=SUCCESS")],
        "local success",
    );
    s.wait_maildir("local.test", "carol", 1);
    let file = only_file(s.wait_maildir("local.test", "alice", 1));
    let raw = std::fs::read_to_string(&file).unwrap();
    let work = s.work.path().display().to_string();
    assert!(!raw.contains(&work), "the DSN discloses a path:\n{raw}");
    assert!(
        !raw.to_ascii_lowercase().contains("/maildir"),
        "the DSN discloses a path:\n{raw}"
    );
    let Some(dsn) = parse_dsn(&file) else { return };
    assert_eq!(
        rcpt_field(&dsn, "Final-Recipient"),
        "rfc822; carol@local.test"
    );
    assert_eq!(rcpt_field(&dsn, "Action"), "delivered", "{dsn}");
    assert_eq!(rcpt_field(&dsn, "Status"), "2.0.0", "{dsn}");
    assert_eq!(rcpt_field(&dsn, "Remote-MTA"), "", "{dsn}");
    assert!(!rcpt_field(&dsn, "Diagnostic-Code").contains('/'), "{dsn}");
    assert!(!dsn["text"].as_str().unwrap().contains('/'), "{dsn}");
    // The operator's delivery log keeps where it went.
    let log = s.log();
    let delivered = log
        .iter()
        .find(|e| e["event"] == "delivered" && e["recipient"] == "carol@local.test")
        .expect("delivered event");
    assert!(
        delivered["reply"].as_str().unwrap_or("").contains(&work),
        "{delivered}"
    );
}

/// Issue 11, point 3: a remote refusal was written `smtp; host
/// mx.example[192.0.2.1]:25 said: 550 5.1.1 ...`; RFC 3464 wants the reply
/// itself after `smtp;`, a multi-line one joined as Postfix joins it, and
/// the host in `Remote-MTA`.
#[test]
fn a_remote_refusal_is_written_as_the_reply_itself_with_the_host_apart() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    sinks[0].set_rcpt_reply(
        "nobody@",
        550,
        "5.1.1 <nobody@example.test>: Recipient address rejected:\n5.1.1 User unknown in virtual mailbox table",
    );
    let s = Setup::start(example_zone(), port, "");
    let id = send_with(
        &s,
        "alice@local.test",
        &[("nobody@example.test", "")],
        "refused",
    );
    let file = only_file(s.wait_maildir("local.test", "alice", 1));
    let Some(dsn) = parse_dsn(&file) else { return };
    assert_eq!(rcpt_field(&dsn, "Action"), "failed", "{dsn}");
    assert_eq!(rcpt_field(&dsn, "Status"), "5.1.1", "{dsn}");
    assert_eq!(
        rcpt_field(&dsn, "Diagnostic-Code"),
        "smtp; 550-5.1.1 <nobody@example.test>: Recipient address rejected: \
         550 5.1.1 User unknown in virtual mailbox table",
        "{dsn}"
    );
    assert_eq!(rcpt_field(&dsn, "Remote-MTA"), "dns; mx1.example.test");
    // The operator's log keeps Postfix's whole sentence.
    let failed = s.wait_log("failed", |e| event(e, "failed", &id));
    let reply = failed["reply"].as_str().unwrap_or("");
    assert!(
        reply.starts_with("host mx1.example.test[127.0.0.2]")
            && reply.ends_with("(in reply to RCPT TO command)"),
        "{failed}"
    );
}

/// Issue 11, point 3: what no server said is not an SMTP reply: a DNS
/// failure (here a null MX, RFC 7505) has no `smtp;` Diagnostic-Code and
/// no Remote-MTA; the Status carries the code.
#[test]
fn a_dns_failure_is_not_written_as_an_smtp_reply() {
    let s = Setup::start(Zone::new().null_mx("nomail.test"), 25, "");
    send_with(
        &s,
        "alice@local.test",
        &[("x@nomail.test", "")],
        "no mail here",
    );
    let file = only_file(s.wait_maildir("local.test", "alice", 1));
    let Some(dsn) = parse_dsn(&file) else { return };
    assert_eq!(rcpt_field(&dsn, "Action"), "failed", "{dsn}");
    assert_eq!(rcpt_field(&dsn, "Status"), "5.1.10", "{dsn}");
    assert_eq!(rcpt_field(&dsn, "Remote-MTA"), "", "{dsn}");
    let diagnostic = rcpt_field(&dsn, "Diagnostic-Code");
    assert!(
        diagnostic.is_empty() || diagnostic.starts_with("X-Local; "),
        "{dsn}"
    );
    assert!(
        diagnostic.contains("nomail.test"),
        "the cause is named: {dsn}"
    );
}

/// Issue 11, point 4: `[queue] postmaster` defaulted to
/// `postmaster@<hostname>`, which is not a local domain unless
/// configured: the report about a failed `<>` message was lost with one
/// ERROR line. With the defaults it now reaches the local postmaster
/// mailbox (`<maildir root>/<hostname>/postmaster`, where mail to the
/// bare `<postmaster>` goes).
#[test]
fn a_failed_null_sender_message_reaches_the_default_postmaster() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    sinks[0].set_default_rcpt_reply(550, "5.1.1 gone");
    let s = Setup::start(example_zone(), port, "");
    let id = send_with(&s, "", &[("bob@example.test", "")], "a bounce that bounces");
    let file = only_file(s.wait_maildir("mx.test", "postmaster", 1));
    let bounced: Vec<Value> = s
        .log()
        .into_iter()
        .filter(|e| event(e, "bounced", &id))
        .collect();
    assert_eq!(bounced.len(), 1, "{bounced:?}");
    assert_eq!(bounced[0]["recipient"], "postmaster");
    let Some(dsn) = parse_dsn(&file) else { return };
    assert_eq!(
        rcpt_field(&dsn, "Final-Recipient"),
        "rfc822; bob@example.test"
    );
    assert_eq!(rcpt_field(&dsn, "Action"), "failed", "{dsn}");
    assert_eq!(rcpt_field(&dsn, "Status"), "5.1.1", "{dsn}");
    assert_eq!(rcpt_field(&dsn, "Diagnostic-Code"), "smtp; 550 5.1.1 gone");
    assert!(
        dsn["from"].as_str().unwrap().contains("@mx.test>"),
        "the From is an address with a domain: {dsn}"
    );
}

/// Issue 11, point 4: a notice that cannot be delivered to anyone (the
/// postmaster's own copy failed) is dropped; that is now counted in
/// `status` and `/metrics`, not only in one ERROR line.
#[test]
fn dropped_notices_are_counted_in_status_and_metrics() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    sinks[0].set_default_rcpt_reply(550, "5.1.1 gone");
    let s = Setup::start(
        example_zone(),
        port,
        "[queue]\npostmaster = \"pm@example.test\"\n",
    );
    let id = send_with(&s, "", &[("bob@example.test", "")], "lost for good");
    s.wait_log("failed", |e| event(e, "failed", &id));
    let dropped = || status_json(&s.work).1["daemon"]["dsns_dropped"].as_u64();
    wait_until("one dropped notice in status", WAIT, || {
        dropped() == Some(1)
    });
    let o = init(&s.work, &["status"]);
    let shown = text(&o);
    assert!(
        shown
            .lines()
            .any(|l| l.contains("notices dropped") && l.contains('1')),
        "{shown}"
    );
    let http = s.mtad.http.expect("the HTTP server listens");
    let (code, body) = crate::http::request(http, "GET", "/metrics", None, None);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.lines().any(|l| l == "mta_dsns_dropped_total 1"),
        "{body}"
    );
    wait_empty(&s);
}

/// Issue 11, point 4: a configured postmaster that routes nowhere (our
/// own host name, not a local domain: the MX lookup would send it back
/// here) fails the configuration check, as it would lose double bounces.
#[test]
fn configtest_refuses_a_postmaster_that_routes_nowhere() {
    let work = Workdir::new();
    for (postmaster, ok) in [
        ("postmaster@mx.test", false),
        ("postmaster@localhost", true),
        ("postmaster", true),
        ("hostmaster@example.org", true),
        ("not an address", false),
    ] {
        work.write_config(
            "",
            &format!("[queue]\nretry_base = \"1h\"\npostmaster = \"{postmaster}\"\n"),
        );
        let o = init(&work, &["configtest"]);
        let t = text(&o);
        if ok {
            assert!(o.status.success(), "{postmaster}: {t}");
        } else {
            assert_eq!(o.status.code(), Some(78), "{postmaster}: {t}");
            assert!(t.contains("queue.postmaster"), "{postmaster}: {t}");
        }
    }
}

/// Issue 11, point 3, for notices made from what the queue kept of the
/// last attempt: a delay notice and the final 4.4.7 failure quote the
/// server's last reply itself (it was `smtp; host ... said: ...`).
#[test]
fn delay_and_expiry_notices_quote_the_last_reply_itself() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    sinks[0].set_default_rcpt_reply(451, "4.2.1 mailbox busy");
    // A delay notice after a second; the lifetime is the default's.
    let s = Setup::start(
        example_zone(),
        port,
        "[queue]\nretry_base = \"1s\"\npoll_interval = \"100ms\"\ndelay_notice_after = \"1s\"\n",
    );
    send_with(&s, "alice@local.test", &[("bob@example.test", "")], "slow");
    let file = only_file(s.wait_maildir("local.test", "alice", 1));
    if let Some(dsn) = parse_dsn(&file) {
        assert_eq!(rcpt_field(&dsn, "Action"), "delayed", "{dsn}");
        assert_eq!(rcpt_field(&dsn, "Status"), "4.2.1", "{dsn}");
        assert_eq!(
            rcpt_field(&dsn, "Diagnostic-Code"),
            "smtp; 451 4.2.1 mailbox busy"
        );
        assert_eq!(rcpt_field(&dsn, "Remote-MTA"), "dns; mx1.example.test");
        assert!(!rcpt_field(&dsn, "Will-Retry-Until").is_empty(), "{dsn}");
    }
    drop(s);

    // Expiry after three seconds.
    let s = Setup::start(
        example_zone(),
        port,
        "[queue]\nretry_base = \"1s\"\nlifetime = \"3s\"\npoll_interval = \"100ms\"\n",
    );
    send_with(
        &s,
        "alice@local.test",
        &[("bob@example.test", "")],
        "too late",
    );
    let file = only_file(s.wait_maildir("local.test", "alice", 1));
    let Some(dsn) = parse_dsn(&file) else { return };
    assert_eq!(rcpt_field(&dsn, "Action"), "failed", "{dsn}");
    assert_eq!(rcpt_field(&dsn, "Status"), "4.4.7", "{dsn}");
    assert_eq!(
        rcpt_field(&dsn, "Diagnostic-Code"),
        "smtp; 451 4.2.1 mailbox busy"
    );
    assert_eq!(rcpt_field(&dsn, "Remote-MTA"), "dns; mx1.example.test");
    assert!(
        dsn["text"]
            .as_str()
            .unwrap()
            .contains("Delivery time expired."),
        "{dsn}"
    );
}
