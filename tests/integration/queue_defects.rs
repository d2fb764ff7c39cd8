//! The queue's own defects (issue 10, points 3 to 5), each against the
//! real mtad and mta-init: a spool file that goes bad behind a clean
//! index, operator actions on messages waiting in a paused runner, and
//! volatile messages that must be counted, listed, steered and spilled
//! like the others.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use mta_testkit::sink::SinkConfig;
use serde_json::Value;

use crate::delivery::{example_zone, ip, sinks, Setup, WAIT};
use crate::util::{init, list, queue, status_json, text, wait_until, Client, Workdir};

fn ids(messages: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = messages
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// `mta-init ARGS`, which must succeed; its output.
fn run(work: &Workdir, args: &[&str]) -> String {
    let o = init(work, args);
    assert!(o.status.success(), "mta-init {args:?}: {}", text(&o));
    text(&o)
}

/// A daemon started with `mta-init start`, stopped (or, failing that,
/// killed) when the test ends however it ends.
struct Started<'a>(&'a Workdir);

impl<'a> Started<'a> {
    fn start(work: &'a Workdir) -> Started<'a> {
        run(work, &["start"]);
        Started(work)
    }

    /// `mta-init stop`, which must succeed; its output.
    fn stop(self) -> String {
        let out = run(self.0, &["stop"]);
        std::mem::forget(self);
        out
    }

    fn smtp(&self) -> SocketAddr {
        let (_, v) = status_json(self.0);
        v["daemon"]["listen"][0]
            .as_str()
            .expect("listen address")
            .parse()
            .unwrap()
    }

    /// The admin HTTP address, from the `http` row of the status.
    fn http(&self) -> SocketAddr {
        let (_, v) = status_json(self.0);
        let row = v["daemon"]["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "http")
            .cloned()
            .expect("an http service");
        row["detail"]
            .as_str()
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{e}: {row}"))
    }
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.0.queue().join("mtad.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        let stopped = init(self.0, &["stop", "--wait", "30"]).status.success();
        if let (false, Some(pid)) = (stopped, pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Sends one message per subject over one session; returns the ids.
fn send_all(addr: SocketAddr, from: &str, to: &[&str], subjects: &[String]) -> Vec<String> {
    let mut c = Client::connect(addr);
    c.cmd("EHLO client.test", "250");
    let ids = subjects
        .iter()
        .map(|subject| {
            let r = c.send_message(from, to, &crate::util::message(subject));
            assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
            r.text().rsplit(' ').next().unwrap().to_owned()
        })
        .collect();
    c.cmd("QUIT", "221");
    ids
}

fn delivery_log(work: &Workdir) -> Vec<Value> {
    crate::delivery::delivery_log(&work.queue().join("delivery.log"))
}

/// Waits for `n` delivery-log events `name` about `id`.
fn wait_events(work: &Workdir, name: &str, id: &str, n: usize) {
    wait_until(&format!("{n} {name} events for {id}"), WAIT, || {
        delivery_log(work)
            .iter()
            .filter(|e| e["event"] == name && e["queue_id"] == id)
            .count()
            >= n
    });
}

/// Lines of the daemon log that mention `id` and one of `words`.
fn log_lines(work: &Workdir, id: &str, words: &[&str]) -> Vec<String> {
    std::fs::read_to_string(work.queue().join("mtad.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(id) && words.iter().any(|w| l.contains(w)))
        .map(str::to_owned)
        .collect()
}

/// `msg/<last hex digit>/<id>`: where a queued message's file lives.
fn spool_file(work: &Workdir, id: &str) -> PathBuf {
    let bucket = &id[id.len() - 1..];
    work.queue().join("msg").join(bucket).join(id)
}

fn maildir_new(work: &Workdir, domain: &str, user: &str) -> Vec<PathBuf> {
    let dir = work
        .path()
        .join("maildir")
        .join(domain)
        .join(user)
        .join("Maildir/new");
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// A queue whose mail to `remote.test` stays deferred (a closed port)
/// for an hour, with a local domain for the DSNs.
fn deferring_config(work: &Workdir, queue: &str) {
    work.write_config(
        "",
        &format!(
            "[smtp]\nlisten = [\"127.0.0.1:0\"]\nlocal_domains = [\"local.test\"]\n\
             [queue]\nretry_base = \"1h\"\npoll_interval = \"100ms\"\n{queue}\n"
        ),
    );
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Makes the disk runner go round a few times and waits until it has:
/// a second message is flushed and deferred again. Whatever the runner
/// does once per round (such as retrying an unreadable file) has then
/// happened several times over.
fn let_the_disk_runner_go_round(work: &Workdir, addr: SocketAddr) {
    let other = send_all(
        addr,
        "bob@local.test",
        &["y@remote.test"],
        &["other".into()],
    );
    let other = &other[0];
    wait_events(work, "deferred", other, 1);
    for round in 2..=3 {
        queue(work, &["flush", other]);
        wait_events(work, "deferred", other, round);
    }
}

/// Issue 10, point 3: after a clean stop, a spool file that went bad was
/// logged once a second ("cannot read a queued message; it stays
/// queued") for ever, never moved, never expired, and its sender never
/// heard of it; `queue show` failed on it. Now the first failed read
/// sets it aside in `corrupt/`, fails its recipients with 5.3.0 in a DSN
/// built from the index (the content is gone), and counts it in status
/// and metrics.
#[test]
fn a_corrupt_spool_file_behind_a_clean_index_is_set_aside_once_and_bounced() {
    let work = Workdir::new();
    deferring_config(&work, "");
    let (id, shown) = {
        let daemon = Started::start(&work);
        let ids = send_all(
            daemon.smtp(),
            "alice@local.test",
            &["x@remote.test", "y@remote.test"],
            &["soon corrupt".into(), "shown corrupt".into()],
        );
        for id in &ids {
            wait_events(&work, "deferred", id, 2);
        }
        daemon.stop();
        (ids[0].clone(), ids[1].clone())
    };
    // Damage both behind the clean index: the envelope line is cut short.
    let file = spool_file(&work, &id);
    let original = std::fs::read(&file).unwrap();
    std::fs::write(&file, &original[..20]).unwrap();
    std::fs::write(spool_file(&work, &shown), &original[..20]).unwrap();

    let daemon = Started::start(&work);
    // Due now (the next retry was an hour away); the flush reads only
    // the index.
    let out = queue(&work, &["flush", &id]);
    assert!(out.contains("1 of 1 message flushed"), "{out}");
    let aside = work.queue().join("corrupt").join(&id);
    wait_until("the file in corrupt/", WAIT, || aside.exists());
    assert!(!file.exists(), "still in msg/");
    assert_eq!(std::fs::read(&aside).unwrap(), &original[..20]);

    // The file is moved before its index entry goes: the listing may
    // show it a moment longer.
    wait_until("the message gone from the listing", WAIT, || {
        !ids(&list(&work, &[])).contains(&id)
    });
    let show = init(&work, &["queue", "show", &id]);
    assert_eq!(show.status.code(), Some(3), "{}", text(&show));
    assert!(text(&show).contains("no message"), "{}", text(&show));

    // `show` is a read too: it says what is wrong and sets the file aside
    // without waiting for the schedule.
    let show = init(&work, &["queue", "show", &shown]);
    assert_eq!(show.status.code(), Some(1), "{}", text(&show));
    assert!(
        text(&show).contains("unreadable") && text(&show).contains("being set aside"),
        "{}",
        text(&show)
    );
    wait_until("the shown file in corrupt/", WAIT, || {
        work.queue().join("corrupt").join(&shown).exists()
    });
    let (_, status) = status_json(&work);
    assert_eq!(status["daemon"]["corrupt_files"], 2, "{status}");
    let (code, metrics) = crate::http::request(daemon.http(), "GET", "/metrics", None, None);
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics.contains("\nmta_corrupt_spool_files_total 2\n"),
        "{metrics}"
    );

    // The sender hears of both recipients, without the lost content.
    wait_until("the DSNs in alice's Maildir", WAIT, || {
        maildir_new(&work, "local.test", "alice").len() == 2
    });
    let dsns: Vec<String> = maildir_new(&work, "local.test", "alice")
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let dsn = dsns
        .iter()
        .find(|d| d.contains(&id))
        .unwrap_or_else(|| panic!("no DSN for {id}: {dsns:#?}"));
    for want in [
        "Status: 5.3.0",
        "Final-Recipient: rfc822; x@remote.test",
        "Final-Recipient: rfc822; y@remote.test",
        "unreadable",
    ] {
        assert!(dsn.contains(want), "DSN lacks {want:?}:\n{dsn}");
    }
    assert!(!dsn.contains("soon corrupt"), "{dsn}");
    let failed = delivery_log(&work)
        .into_iter()
        .filter(|e| e["event"] == "failed" && e["queue_id"] == id.as_str())
        .count();
    assert_eq!(failed, 2);

    // Logged once, not once per round of the disk runner.
    let_the_disk_runner_go_round(&work, daemon.smtp());
    let lines = log_lines(&work, &id, &["cannot read", "unreadable"]);
    assert_eq!(lines.len(), 1, "{lines:#?}");
}

/// Issue 10, point 3, the other half: a spool file that cannot be read
/// for a reason that may pass (an I/O error, here a directory where the
/// file should be) is not set aside. It was retried on every round of
/// the disk runner; now the read counts as a deferred attempt (4.3.0)
/// and the next one waits for the schedule.
#[test]
fn an_unreadable_spool_file_is_deferred_on_the_schedule_not_retried_in_a_loop() {
    let work = Workdir::new();
    deferring_config(&work, "");
    let id = {
        let daemon = Started::start(&work);
        let id = send_all(
            daemon.smtp(),
            "alice@local.test",
            &["x@remote.test"],
            &["unreadable for a while".into()],
        )
        .remove(0);
        wait_events(&work, "deferred", &id, 1);
        daemon.stop();
        id
    };
    let file = spool_file(&work, &id);
    let kept = work.path().join("kept");
    std::fs::rename(&file, &kept).unwrap();
    std::fs::create_dir(&file).unwrap();

    let daemon = Started::start(&work);
    queue(&work, &["flush", &id]);
    wait_events(&work, "deferred", &id, 2);
    let_the_disk_runner_go_round(&work, daemon.smtp());
    let lines = log_lines(&work, &id, &["cannot read"]);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let listed = list(&work, &[]);
    let m = listed
        .iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {listed:?}"));
    assert_eq!(m["attempts"], 2, "{m}");
    assert!(
        m["next_attempt"].as_u64().unwrap() > unix_now() + 600,
        "the schedule moved on: {m}"
    );
    let reply = m["recipients"][0]["last_reply"].as_str().unwrap();
    assert!(reply.starts_with("4.3.0"), "{m}");
    assert!(!work.queue().join("corrupt").join(&id).exists());

    // Readable again: its next attempt goes as any other (deferred by the
    // closed port, as before), and no DSN was made.
    std::fs::remove_dir(&file).unwrap();
    std::fs::rename(&kept, &file).unwrap();
    queue(&work, &["flush", &id]);
    wait_events(&work, "deferred", &id, 3);
    assert!(maildir_new(&work, "local.test", "alice").is_empty());
}

/// `pause delivery` (of `runner`, or all), 3 messages, then `action`
/// with --all: it must act on all 3 at once. Returns the setup, the
/// sink and the ids.
fn three_waiting(
    runner: Option<&str>,
    action: &str,
) -> (Setup, mta_testkit::sink::Sink, Vec<String>) {
    let (port, mut sinks) = sinks(&[ip(2)], SinkConfig::default);
    let s = Setup::start(
        example_zone(),
        port,
        "[queue]\nretry_base = \"1h\"\npoll_interval = \"100ms\"\n",
    );
    let mut pause = vec!["pause", "delivery"];
    pause.extend(runner.iter().flat_map(|r| ["--runner", r]));
    run(&s.work, &pause);
    let subjects: Vec<String> = (1..=3).map(|n| format!("waiting {n}")).collect();
    let ids = send_all(
        s.mtad.addr,
        "alice@local.test",
        &["bob@example.test"],
        &subjects,
    );
    let out = queue(&s.work, &[action, "--all"]);
    let verb = if action == "delete" {
        "deleted"
    } else {
        "held"
    };
    assert!(
        out.contains(&format!("3 of 3 messages {verb}")),
        "{runner:?}: {out}"
    );
    assert!(!out.contains("being delivered"), "{out}");
    let mut resume = vec!["resume", "delivery"];
    resume.extend(runner.iter().flat_map(|r| ["--runner", r]));
    run(&s.work, &resume);
    (s, sinks.remove(0), ids)
}

/// Sends one more message and waits for it at the sink: by then the
/// runners have been resumed long enough to send what they would have.
fn only_the_marker_arrives(s: &Setup, sink: &mta_testkit::sink::Sink, already: usize) {
    s.send("alice@local.test", &["bob@example.test"], "marker");
    let got = sink.wait_for_messages_blocking(already + 1, WAIT);
    let subjects: Vec<String> = got
        .iter()
        .map(|m| {
            let data = String::from_utf8_lossy(&m.data).into_owned();
            data.lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        subjects.iter().filter(|s| s.starts_with("waiting")).count(),
        already,
        "{subjects:?}"
    );
    assert!(subjects.contains(&"marker".to_owned()), "{subjects:?}");
}

/// Issue 10, point 4: with delivery paused, `queue delete --all` said
/// "0 of 3 messages deleted; 3 being delivered now" and all 3 went out on
/// resume. A message waiting in a paused runner is not in flight.
#[test]
fn a_delete_reaches_messages_waiting_in_a_paused_runner() {
    for runner in [None, Some("ram")] {
        let (s, sink, waiting) = three_waiting(runner, "delete");
        only_the_marker_arrives(&s, &sink, 0);
        for id in &waiting {
            let show = init(&s.work, &["queue", "show", id]);
            assert_eq!(show.status.code(), Some(3), "{}", text(&show));
        }
    }
}

/// Issue 10, point 4, with hold: held at once, not sent on resume, sent
/// once released.
#[test]
fn a_hold_reaches_messages_waiting_in_a_paused_runner() {
    for runner in [None, Some("ram")] {
        let (s, sink, waiting) = three_waiting(runner, "hold");
        assert_eq!(
            ids(&list(&s.work, &["--queue", "held"])),
            ids_sorted(&waiting)
        );
        only_the_marker_arrives(&s, &sink, 0);
        let out = queue(&s.work, &["release", "--all"]);
        assert!(out.contains("3 of 3 messages released"), "{out}");
        sink.wait_for_messages_blocking(4, WAIT);
        wait_until("an empty queue", WAIT, || list(&s.work, &[]).is_empty());
    }
}

/// Issue 10, point 5: in volatile mode with delivery paused, 50 accepted
/// messages showed as "0 messages queued", were missing from `queue
/// list`, could be neither held nor deleted, and `stop` wrote all 50 to
/// disk yet said "0 spilled from memory".
#[test]
fn volatile_messages_are_counted_listed_steered_and_spilled_truthfully() {
    let work = Workdir::new();
    deferring_config(&work, "mode = \"volatile\"");
    let (held, kept) = {
        let daemon = Started::start(&work);
        run(&work, &["pause", "delivery"]);
        let subjects: Vec<String> = (0..50).map(|n| format!("volatile {n}")).collect();
        let all = send_all(
            daemon.smtp(),
            "alice@local.test",
            &["x@remote.test"],
            &subjects,
        );

        let (_, status) = status_json(&work);
        assert_eq!(status["daemon"]["queued"], 50, "{status}");
        assert_eq!(status["daemon"]["in_memory"], 50, "{status}");
        let listed = list(&work, &[]);
        assert_eq!(ids(&listed), ids_sorted(&all));
        assert!(
            listed
                .iter()
                .all(|m| m["in_memory"] == true && m["queue"] == "ram"),
            "{listed:?}"
        );
        let text_list = queue(&work, &["list"]);
        assert!(text_list.contains("in memory"), "{text_list}");
        let shown = queue(&work, &["show", &all[0]]);
        assert!(shown.contains("Subject: volatile 0"), "{shown}");

        for id in &all[..10] {
            let out = queue(&work, &["hold", id]);
            assert!(out.contains("1 of 1 message held"), "{out}");
        }
        for id in &all[10..15] {
            let out = queue(&work, &["delete", id]);
            assert!(out.contains("1 of 1 message deleted"), "{out}");
        }
        let listed = list(&work, &[]);
        assert_eq!(listed.len(), 45, "{listed:?}");
        assert_eq!(
            ids(&list(&work, &["--queue", "held"])),
            ids_sorted(&all[..10])
        );
        let (_, status) = status_json(&work);
        assert_eq!(status["daemon"]["queued"], 45, "{status}");
        assert_eq!(status["daemon"]["in_memory"], 35, "{status}");
        assert_eq!(status["daemon"]["held"], 10, "{status}");

        let out = daemon.stop();
        assert!(out.contains("35 spilled from memory"), "{out}");
        assert!(out.contains("45 messages queued"), "{out}");
        (all[..10].to_vec(), [&all[..10], &all[15..]].concat())
    };

    let _daemon = Started::start(&work);
    let (_, status) = status_json(&work);
    assert_eq!(status["daemon"]["in_memory"], 0, "{status}");
    assert_eq!(ids(&list(&work, &[])), ids_sorted(&kept));
    assert_eq!(
        ids(&list(&work, &["--queue", "held"])),
        ids_sorted(&held),
        "the held ones are still held"
    );
}

fn ids_sorted(ids: &[String]) -> Vec<String> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids
}
