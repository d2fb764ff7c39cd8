//! A full disk never wedges mtad (issue 10, point 2), on a real tmpfs
//! filled to the byte. Once the queue index cannot be written, mtad says
//! so (`status`, `/metrics`), refuses mail with `452 4.3.1`, reopens the
//! index by itself once space returns (holds and paused domains intact),
//! and a restart meanwhile comes back up. Maildir deliveries and
//! delivery-log lines on a full disk defer or are counted, and the
//! runners go on.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mta_testkit::sink::{Sink, SinkConfig};
use serde_json::Value;

use crate::storage::tmpfs;
use crate::util::{init, status_json, text, wait_until, Client, Mtad, Workdir};

const WAIT: Duration = Duration::from_secs(30);

/// 100 KB of content with a subject that names it.
fn big_message(subject: &str) -> String {
    let line = format!("{}\r\n", "x".repeat(98));
    format!(
        "From: a@b.test\r\nTo: x@remote.test\r\nSubject: {subject}\r\n\r\n{}",
        line.repeat(1000)
    )
}

/// A sink on 127.0.0.2 that answers 451 for `later@...` and anything at
/// `churn.test` (so those messages wait in the disk queue) and takes the
/// rest.
fn sink() -> Sink {
    let sink = Sink::start_in_background(SinkConfig {
        addr: SocketAddr::from(([127, 0, 0, 2], 0)),
        ..SinkConfig::default()
    })
    .expect("sink");
    sink.set_rcpt_reply("later@", 451, "4.2.0 not now");
    sink.set_rcpt_reply("@churn.test", 451, "4.2.0 not now");
    sink
}

/// The config: queue (and delivery log) on the tmpfs, `remote.test`,
/// `paused.test` and `churn.test` routed to the sink (whose 451s must not
/// back the others off), a 1 MiB free-space floor checked often, deferred
/// mail retried in an hour.
fn config(work: &Workdir, sink: &Sink, extra: &str) {
    work.write_config(
        "",
        &format!(
            "[smtp]\nlisten = [\"127.0.0.1:0\"]\nlocal_domains = [\"local.test\"]\n\
             [shutdown]\ntimeout = \"5s\"\ndrain_timeout = \"5s\"\n\
             [delivery]\nname_servers = [\"127.0.0.1:9\"]\ndns_timeout = \"1s\"\nbackoff_after = 0\n\
             [delivery.routes]\n\"remote.test\" = \"{0}\"\n\"paused.test\" = \"{0}\"\n\"churn.test\" = \"{0}\"\n\
             [queue]\nretry_base = \"1h\"\npoll_interval = \"100ms\"\n{extra}",
            sink.addr
        ),
    );
    let text = std::fs::read_to_string(work.config_path())
        .unwrap()
        .replace(
            "min_free_space = 0",
            "min_free_space = \"1MiB\"\nfree_space_check_interval = \"100ms\"",
        );
    std::fs::write(work.config_path(), text).unwrap();
}

/// Sends one message on a connection of its own; the final reply.
fn send(addr: SocketAddr, to: &str, content: &str) -> crate::util::Reply {
    let mut c = Client::connect(addr);
    c.cmd("EHLO client.test", "250");
    let r = c
        .try_send_message("a@b.test", &[to], content)
        .expect("the server answers");
    let _ = c.try_cmd("QUIT");
    r
}

/// The queue id in `250 2.0.0 Ok: queued as ID`.
fn queue_id(r: &crate::util::Reply) -> String {
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    r.text().rsplit(' ').next().unwrap().to_owned()
}

/// `mta-init ARGS`, which must succeed; its output.
fn ok(work: &Workdir, args: &[&str]) -> String {
    let o = init(work, args);
    assert!(o.status.success(), "mta-init {args:?}: {}", text(&o));
    text(&o)
}

/// The ids in `mta-init queue list --json ARGS`.
fn listed(work: &Workdir, args: &[&str]) -> Vec<String> {
    let mut all = vec!["queue", "list", "--json"];
    all.extend_from_slice(args);
    ok(work, &all)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `id` has been attempted once (and deferred).
fn wait_attempted(work: &Workdir, id: &str) {
    wait_until(&format!("{id} attempted"), WAIT, || {
        let o = init(work, &["queue", "list", "--json"]);
        String::from_utf8_lossy(&o.stdout).lines().any(|l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|m| m["id"] == id && m["attempts"].as_u64() >= Some(1))
        })
    });
}

/// The spool service's row in `status --json`.
fn spool_service(status: &Value) -> Value {
    status["daemon"]["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "spool").cloned())
        .unwrap_or(Value::Null)
}

/// The value of an unlabelled metric in `/metrics`.
fn metric(http: SocketAddr, name: &str) -> Option<u64> {
    let (code, body) = crate::http::request(http, "GET", "/metrics", None, None);
    assert_eq!(code, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Writes a file until the file system is full, to the last byte it
/// gives.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let buf = vec![0u8; chunk];
        while f.write(&buf).is_ok_and(|n| n > 0) {}
    }
    let _ = f.sync_all();
}

fn subjects(sink: &Sink) -> std::collections::BTreeSet<String> {
    sink.messages()
        .iter()
        .filter_map(|m| {
            String::from_utf8_lossy(&m.data)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
        })
        .collect()
}

/// Sends `n` big messages until the free-space floor refuses them;
/// returns the subjects accepted.
fn fill_with_mail(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut accepted = Vec::new();
    let mut c = Client::connect(addr);
    c.cmd("EHLO client.test", "250");
    let mut refused = 0;
    for i in 0..n {
        let subject = format!("bulk-{i}");
        let r = c
            .try_send_message("a@b.test", &["x@remote.test"], &big_message(&subject))
            .expect("the server answers");
        match r.head().as_str() {
            "250 2.0.0" => accepted.push(subject),
            "452 4.3.1" => {
                // A session's refusals count as its errors: go on in a
                // new one.
                refused += 1;
                let _ = c.try_cmd("QUIT");
                c = Client::connect(addr);
                c.cmd("EHLO client.test", "250");
            }
            other => panic!("unexpected reply {other}: {}", r.text()),
        }
    }
    let _ = c.try_cmd("QUIT");
    assert!(refused > 0, "the disk never filled up");
    accepted
}

/// Waits until the daemon says the spool is degraded because its index
/// is out of service, and checks the overall status and the metric say
/// so too.
fn wait_degraded(work: &Workdir, mtad: &Mtad) -> Value {
    let mut spool = Value::Null;
    wait_until(
        "status to say the queue index is out of service",
        WAIT,
        || {
            spool = spool_service(&status_json(work).1);
            spool["state"] == "degraded"
                && spool["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("queue index"))
        },
    );
    let o = init(work, &["status"]);
    assert!(
        text(&o).contains("OVERALL STATUS: degraded"),
        "{}",
        text(&o)
    );
    if let Some(http) = mtad.http {
        assert_eq!(metric(http, "mta_spool_degraded"), Some(1));
    }
    spool
}

/// Messages that wait in the disk queue for [`churn_until_degraded`]: 30
/// to `churn.test`, each attempted once (deferred).
fn churn_messages(work: &Workdir, addr: SocketAddr) {
    let ids: Vec<String> = (0..30)
        .map(|i| {
            queue_id(&send(
                addr,
                "x@churn.test",
                &crate::util::message(&format!("churn-{i}")),
            ))
        })
        .collect();
    wait_until("the churn messages attempted", WAIT, || {
        let o = init(work, &["queue", "list", "--json", "--domain", "churn.test"]);
        let attempted = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["attempts"].as_u64() >= Some(1))
            .count();
        attempted == ids.len()
    });
}

/// Holds and releases the churn messages, each round rewriting their
/// index entries and adding to their histories, until the full disk
/// cannot take the index's next flush. (One small change may still fit in
/// what the index's log file had allocated; dozens of kilobytes do not.)
fn churn_until_degraded(work: &Workdir) {
    let index_failed = || {
        spool_service(&status_json(work).1)["detail"]
            .as_str()
            .is_some_and(|d| d.contains("queue index"))
    };
    for round in 0..400 {
        let verb = if round % 2 == 0 { "hold" } else { "release" };
        // Refused once the index has failed: that is the point.
        let _ = init(work, &["queue", verb, "--domain", "churn.test"]);
        if index_failed() {
            return;
        }
    }
    panic!("the queue index never failed on the full disk");
}

/// Waits until the index has no unsaved change (the flusher wrote it).
fn wait_index_saved(work: &Workdir) {
    wait_until("the queue index saved", WAIT, || {
        let (_, v) = status_json(work);
        v["daemon"]["runners"].as_array().is_some_and(|runners| {
            runners
                .iter()
                .all(|r| r["schedule_unsaved_changes"] == 0 && r["schedule_saved_ms_ago"].is_u64())
        })
    });
}

/// Sends until a message is accepted again; its subject.
fn wait_accepting(addr: SocketAddr, subject: &str) {
    wait_until("mail to be accepted again", WAIT, || {
        let mut c = Client::connect(addr);
        c.cmd("EHLO client.test", "250");
        let r = c.try_send_message("a@b.test", &["x@remote.test"], &big_message(subject));
        let _ = c.try_cmd("QUIT");
        r.is_some_and(|r| r.code == 250)
    });
}

#[test]
fn a_full_disk_heals_by_itself_and_keeps_holds_and_paused_domains() {
    let work = Workdir::new();
    let Some(_fs) = tmpfs(&work.queue(), "20m") else {
        return;
    };
    let sink = sink();
    config(&work, &sink, "");
    let mtad = Mtad::start(&work);

    // Operator state: two messages waiting in the disk queue, one held
    // now (flushed to the index long before the disk fills) and one held
    // once the disk is full (if the index fails before that change
    // reaches the disk, only the reopen's replay keeps it); and a paused
    // domain with a message waiting for it.
    let held_early = queue_id(&send(
        mtad.addr,
        "later@remote.test",
        &big_message("held-early"),
    ));
    let held_late = queue_id(&send(
        mtad.addr,
        "later@remote.test",
        &big_message("held-late"),
    ));
    ok(&work, &["pause", "delivery", "--domain", "paused.test"]);
    let paused = queue_id(&send(mtad.addr, "x@paused.test", &big_message("paused")));
    for id in [&held_early, &held_late, &paused] {
        wait_attempted(&work, id);
    }
    ok(&work, &["queue", "hold", &held_early]);
    churn_messages(&work, mtad.addr);

    // Delivery paused: about half of 400 messages of 100 KB fit above the
    // floor, then 452 4.3.1.
    ok(&work, &["pause", "delivery"]);
    let mut accepted = fill_with_mail(mtad.addr, 400);
    assert!(accepted.len() > 50, "only {} accepted", accepted.len());

    // The rest of the file system, to the byte; then an index change
    // that the next flush cannot write.
    wait_index_saved(&work);
    let filler = work.queue().join("filler");
    fill(&filler);
    ok(&work, &["queue", "hold", &held_late]);
    churn_until_degraded(&work);
    let spool = wait_degraded(&work, &mtad);
    assert!(
        spool["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("No space left on device"),
        "the cause is named: {spool}"
    );
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<a@b.test>", "452 4.3.1");
    c.cmd("QUIT", "221");

    // Delivery resumes and space comes back: the index is reopened by
    // itself and mail is accepted again within seconds.
    ok(&work, &["resume", "delivery"]);
    std::fs::remove_file(&filler).unwrap();
    wait_accepting(mtad.addr, "after");
    accepted.push("after".to_owned());
    wait_until("status to say up again", WAIT, || {
        let (code, v) = status_json(&work);
        code == 0 && v["overall"] == "up" && spool_service(&v)["state"] == "up"
    });
    if let Some(http) = mtad.http {
        assert_eq!(metric(http, "mta_spool_degraded"), Some(0));
        assert!(metric(http, "mta_spool_index_recoveries_total") >= Some(1));
    }

    // Every accepted message reaches the sink.
    let all_there = || {
        let got = subjects(&sink);
        accepted.iter().all(|s| got.contains(s))
    };
    if !crate::util::eventually(Duration::from_secs(60), all_there) {
        let got = subjects(&sink);
        let missing: Vec<_> = accepted.iter().filter(|s| !got.contains(*s)).collect();
        panic!(
            "{} of {} accepted messages never delivered: {missing:?}\nstatus: {}",
            missing.len(),
            accepted.len(),
            status_json(&work).1
        );
    }

    // The holds and the paused domain survived the recovery: neither the
    // held messages nor the paused domain's went out.
    let held = listed(&work, &["--queue", "held"]);
    assert!(
        held.contains(&held_early),
        "{held_early} not held: {held:?}"
    );
    assert!(held.contains(&held_late), "{held_late} not held: {held:?}");
    let (_, status) = status_json(&work);
    assert_eq!(
        status["daemon"]["paused_domains"][0], "paused.test",
        "{status}"
    );
    assert!(listed(&work, &[]).contains(&paused));
    let got = subjects(&sink);
    assert!(!got.contains("paused"), "the paused domain's mail went out");
}

#[test]
fn restart_while_the_index_cannot_be_written_comes_back_up() {
    let work = Workdir::new();
    let Some(_fs) = tmpfs(&work.queue(), "20m") else {
        return;
    };
    let sink = sink();
    config(&work, &sink, "");
    let mut mtad = Mtad::start(&work);
    let held = queue_id(&send(mtad.addr, "later@remote.test", &big_message("held")));
    let other = queue_id(&send(mtad.addr, "later@remote.test", &big_message("other")));
    wait_attempted(&work, &held);
    wait_attempted(&work, &other);
    ok(&work, &["queue", "hold", &held]);
    churn_messages(&work, mtad.addr);
    ok(&work, &["pause", "delivery"]);
    let mut accepted: Vec<String> = (0..20)
        .map(|i| {
            let subject = format!("kept-{i}");
            queue_id(&send(mtad.addr, "x@remote.test", &big_message(&subject)));
            subject
        })
        .collect();

    // The hold is on disk; then the index fails on the next change. (A
    // restart before space is back loses the index changes that were
    // only in memory: they go with the process, and the log names the
    // holds among them.)
    wait_index_saved(&work);
    let filler = work.queue().join("filler");
    fill(&filler);
    ok(&work, &["queue", "hold", &other]);
    churn_until_degraded(&work);
    wait_degraded(&work, &mtad);

    // The restart cannot save the index; the next image comes up anyway
    // and serves a new connection.
    let o = init(&work, &["restart"]);
    assert!(o.status.success(), "{}", text(&o));
    let addr = mtad.await_ready_again();
    let mut c = Client::connect(addr);
    assert_eq!(c.banner.code, 220, "{}", c.banner.text());
    c.cmd("EHLO client.test", "250");
    c.cmd("QUIT", "221");

    // Space comes back: mail is accepted, everything kept is delivered,
    // and the hold made long before the failure is still there.
    std::fs::remove_file(&filler).unwrap();
    wait_accepting(addr, "after-restart");
    accepted.push("after-restart".to_owned());
    wait_until("status to say up again", WAIT, || {
        let (code, v) = status_json(&work);
        code == 0 && v["overall"] == "up"
    });
    let all_there = || {
        let got = subjects(&sink);
        accepted.iter().all(|s| got.contains(s))
    };
    if !crate::util::eventually(Duration::from_secs(60), all_there) {
        let got = subjects(&sink);
        let missing: Vec<_> = accepted.iter().filter(|s| !got.contains(*s)).collect();
        panic!(
            "{} of {} accepted messages never delivered: {missing:?}\nstatus: {}",
            missing.len(),
            accepted.len(),
            status_json(&work).1
        );
    }
    let held_now = listed(&work, &["--queue", "held"]);
    assert!(held_now.contains(&held), "{held} not held: {held_now:?}");
    assert!(mtad.terminate().success());
}

#[test]
fn maildir_and_log_on_a_full_disk_defer_and_count_while_delivery_goes_on() {
    let work = Workdir::new();
    let full = work.path().join("full");
    let Some(_fs) = tmpfs(&full, "1m") else {
        return;
    };
    let sink = sink();
    let root = full.join("maildir");
    let log = full.join("delivery.log");
    config(
        &work,
        &sink,
        &format!(
            "[maildir]\nroot = {:?}\n[log]\ndelivery_log = {:?}\n",
            root.display().to_string(),
            log.display().to_string()
        ),
    );
    let mtad = Mtad::start(&work);
    let filler = full.join("filler");
    fill(&filler);

    // Local delivery on the full disk: deferred with 4.3.1, kept queued.
    let local = queue_id(&send(
        mtad.addr,
        "bob@local.test",
        &crate::util::message("local"),
    ));
    wait_attempted(&work, &local);
    let shown: Value =
        serde_json::from_str(&ok(&work, &["queue", "show", "--json", &local])).unwrap();
    let rcpt = &shown["message"]["recipients"][0];
    assert_eq!(rcpt["status"], "deferred", "{shown}");
    assert!(
        shown.to_string().contains("4.3.1"),
        "the deferral says the mail system is full: {shown}"
    );

    // The runners go on: remote mail is delivered meanwhile, and the log
    // lines that could not be written are counted.
    let remote = send(mtad.addr, "x@remote.test", &crate::util::message("remote"));
    assert_eq!(remote.head(), "250 2.0.0");
    wait_until("the remote message delivered", WAIT, || {
        subjects(&sink).contains("remote")
    });
    wait_until("dropped log lines counted", WAIT, || {
        status_json(&work).1["daemon"]["delivery_log_dropped"].as_u64() > Some(0)
    });
    if let Some(http) = mtad.http {
        assert!(metric(http, "mta_delivery_log_dropped_total") > Some(0));
    }

    // Space back: a flush delivers the local message, and the log works.
    std::fs::remove_file(&filler).unwrap();
    ok(&work, &["queue", "flush", &local]);
    wait_until("the local message in its Maildir", WAIT, || {
        std::fs::read_dir(root.join("local.test/bob/Maildir/new")).is_ok_and(|d| d.count() == 1)
    });
    wait_until("the delivery logged", WAIT, || {
        std::fs::read_to_string(&log).is_ok_and(|t| {
            t.lines()
                .any(|l| l.contains(&local) && l.contains("\"delivered\""))
        })
    });
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).is_ok()));
}

#[test]
fn a_stop_that_cannot_save_the_index_exits_75_and_the_next_start_rescans() {
    let work = Workdir::new();
    let Some(_fs) = tmpfs(&work.queue(), "20m") else {
        return;
    };
    let sink = sink();
    config(&work, &sink, "");
    let mtad = Mtad::start(&work);
    churn_messages(&work, mtad.addr);
    ok(&work, &["pause", "delivery"]);
    let kept: Vec<String> = (0..5)
        .map(|i| {
            let subject = format!("kept-{i}");
            queue_id(&send(mtad.addr, "x@remote.test", &big_message(&subject)));
            subject
        })
        .collect();
    wait_index_saved(&work);
    let filler = work.queue().join("filler");
    fill(&filler);
    churn_until_degraded(&work);
    wait_degraded(&work, &mtad);

    // The stop cannot save the index: it stops anyway, and says so, to
    // the operator who asked and in its exit code.
    let mut mtad = mtad;
    let o = init(&work, &["stop"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("could not be saved") && !text(&o).contains("schedules on disk"),
        "{}",
        text(&o)
    );
    let status = mtad.wait_exit();
    assert_eq!(status.code(), Some(75), "{status:?}");
    assert!(!work.queue().join("clean").exists());

    // The next start rescans the spool files and delivers what was kept.
    std::fs::remove_file(&filler).unwrap();
    let _mtad = Mtad::start(&work);
    let (_, v) = status_json(&work);
    assert_eq!(v["daemon"]["spool_open"]["clean"], false, "{v}");
    wait_until("the kept messages delivered", WAIT, || {
        let got = subjects(&sink);
        kept.iter().all(|s| got.contains(s))
    });
}
