//! Restart, graceful restart and the signals, against the real binaries:
//! a restart refuses no connection and loses nothing; HUP restarts now,
//! USR1 reloads without dropping a session; a bad configuration is
//! refused with the server untouched; deliveries in flight at a stop
//! complete or end deferred.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mta_testkit::sink::{Sink, SinkConfig};
use nix::sys::signal::Signal;

use crate::util::{
    init, message, signal, spool_contents, status_json, text, wait_until, Client, Mtad, Workdir,
};

const WAIT: Duration = Duration::from_secs(30);

/// Mail for `local.test` goes to the workdir's Maildir.
fn local_config(work: &Workdir, extra: &str) {
    work.write_config(
        "",
        &format!(
            "[smtp]\nlisten = [\"127.0.0.1:0\"]\nlocal_domains = [\"local.test\"]\n\
             [shutdown]\ntimeout = \"5s\"\ndrain_timeout = \"5s\"\n{extra}"
        ),
    );
}

/// Subjects of the messages in `user@local.test`'s Maildir, with counts.
fn maildir_subjects(work: &Workdir, user: &str) -> BTreeMap<String, usize> {
    let dir = work
        .path()
        .join("maildir/local.test")
        .join(user)
        .join("Maildir/new");
    let mut subjects = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let body = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if let Some(subject) = body
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .map(str::to_owned)
        {
            *subjects.entry(subject).or_default() += 1;
        }
    }
    subjects
}

fn instance(work: &Workdir) -> String {
    let (_, v) = status_json(work);
    v["daemon"]["instance"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// What the load generator saw.
#[derive(Default)]
struct Load {
    /// Connections refused or reset before the greeting.
    refused: AtomicU64,
    /// Greetings other than 220 (a 421 is a refusal too).
    turned_away: AtomicU64,
    /// Subjects of the messages that got 250.
    accepted: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// One client: connects, sends up to three messages per session, quits,
/// again, until told to stop (at most 2,000 sessions).
fn client_loop(addr: SocketAddr, load: Arc<Load>, n: usize) {
    for session in 0..2000 {
        if load.stop.load(Ordering::Relaxed) {
            return;
        }
        let stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(20)) {
            Ok(s) => s,
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
                    ),
                    "connect: {e}"
                );
                load.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let Some(mut c) = Client::from_stream(stream) else {
            load.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if c.banner.code != 220 {
            load.turned_away.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if c.try_cmd("EHLO client.test").is_none_or(|r| r.code != 250) {
            continue;
        }
        for i in 0..3 {
            let subject = format!("load {n}-{session}-{i}");
            match c.try_send_message("a@b.test", &["u@local.test"], &message(&subject)) {
                Some(r) if r.code == 250 => load.accepted.lock().unwrap().push(subject),
                // 421: the server is restarting; this session is over.
                _ => break,
            }
        }
        let _ = c.try_cmd("QUIT");
    }
}

#[test]
fn restart_under_load_refuses_no_connection_and_delivers_everything() {
    let work = Workdir::new();
    local_config(&work, "");
    let mut mtad = Mtad::start(&work);
    let pid = mtad.pid();
    let before = instance(&work);
    let load = Arc::new(Load::default());
    let clients: Vec<_> = (0..4)
        .map(|n| {
            let load = load.clone();
            let addr = mtad.addr;
            std::thread::spawn(move || client_loop(addr, load, n))
        })
        .collect();
    let accepted = || load.accepted.lock().unwrap().len();
    wait_until("mail flowing before the restart", WAIT, || accepted() >= 30);

    let out = init(&work, &["restart"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("restarted"), "{}", text(&out));
    let again = mtad.await_ready_again();
    assert_eq!(again, mtad.addr, "the listening socket was handed over");
    assert_eq!(mtad.pid(), pid);
    assert_ne!(instance(&work), before, "a new image runs");

    let at_restart = accepted();
    wait_until("mail flowing after the restart", WAIT, || {
        accepted() >= at_restart + 30
    });
    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    assert_eq!(
        load.refused.load(Ordering::Relaxed),
        0,
        "refused connections"
    );
    assert_eq!(
        load.turned_away.load(Ordering::Relaxed),
        0,
        "connections greeted with other than 220"
    );

    // Every message that got 250 is delivered, once.
    let sent = load.accepted.lock().unwrap().clone();
    let delivered = || maildir_subjects(&work, "u").len() >= sent.len();
    if !crate::util::eventually(WAIT, delivered) {
        let got = maildir_subjects(&work, "u");
        let missing: Vec<_> = sent.iter().filter(|s| !got.contains_key(*s)).collect();
        panic!(
            "{} of {} accepted messages never delivered: {missing:?}\nstatus: {}",
            missing.len(),
            sent.len(),
            status_json(&work).1
        );
    }
    let got = maildir_subjects(&work, "u");
    for subject in &sent {
        assert_eq!(got.get(subject), Some(&1), "{subject}");
    }
    assert!(mtad.terminate().success());
}

#[test]
fn hup_restarts_now_keeping_pid_port_and_queue() {
    let work = Workdir::new();
    work.write_config("", "[shutdown]\ntimeout = \"60s\"\n");
    let mut mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let kept = c.send_message("a@b.test", &["x@remote.test"], &message("kept"));
    assert_eq!(kept.head(), "250 2.0.0");
    c.cmd("MAIL FROM:<a@b.test>", "250");
    let before = instance(&work);
    signal(mtad.pid(), Signal::SIGHUP);
    // Restart now: the open transaction hears 421 at once, not after the
    // 60 s deadline.
    assert_eq!(c.reply().head(), "421 4.3.2");
    let addr = mtad.await_ready_again();
    assert_eq!(addr, mtad.addr);
    assert_ne!(instance(&work), before);
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let r = c.send_message("a@b.test", &["x@remote.test"], &message("after"));
    assert_eq!(r.head(), "250 2.0.0");
    let (_, v) = status_json(&work);
    assert_eq!(v["daemon"]["queued"], 2, "{v}");
    assert_eq!(v["daemon"]["spool_open"]["clean"], true, "{v}");
    assert!(mtad.terminate().success());
    assert_eq!(spool_contents(&work.queue()).len(), 2);
}

#[test]
fn usr1_reloads_settings_for_new_sessions_and_keeps_open_ones() {
    let work = Workdir::new();
    work.write_config("", "");
    let mtad = Mtad::start(&work);
    let mut old = mtad.connect();
    assert!(old.banner.text().contains("mx.test"));
    old.cmd("EHLO client.test", "250");
    old.cmd("MAIL FROM:<a@b.test>", "250");

    // A new hostname, and the delivery log rotated away.
    let config = std::fs::read_to_string(work.config_path()).unwrap();
    std::fs::write(
        work.config_path(),
        config.replace("hostname = \"mx.test\"", "hostname = \"mx2.test\""),
    )
    .unwrap();
    let log = work.queue().join("delivery.log");
    let rotated = work.queue().join("delivery.log.1");
    std::fs::rename(&log, &rotated).unwrap();

    signal(mtad.pid(), Signal::SIGUSR1);
    wait_until("the reload", WAIT, || {
        status_json(&work).1["daemon"]["reloads"] == 1
    });

    // The open session goes on, with its transaction.
    old.cmd("RCPT TO:<x@remote.test>", "250");
    old.cmd("DATA", "354");
    old.send(message("old session").as_bytes());
    old.send(b".\r\n");
    assert_eq!(old.reply().head(), "250 2.0.0");
    // A new session gets the new settings.
    let mut new = mtad.connect();
    assert!(
        new.banner.text().contains("mx2.test"),
        "{}",
        new.banner.text()
    );
    new.cmd("EHLO client.test", "250");
    let r = new.send_message("a@b.test", &["x@remote.test"], &message("new"));
    assert_eq!(r.head(), "250 2.0.0");
    let id = r.text().rsplit(' ').next().unwrap().to_owned();
    // The new delivery log is a new file.
    wait_until("the new delivery log", WAIT, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains(&id))
    });
    assert!(!std::fs::read_to_string(&rotated).unwrap().contains(&id));
    assert!(mtad.terminate().success());
}

#[test]
fn bad_config_restart_graceful_and_hup_are_refused_and_the_server_keeps_serving() {
    let work = Workdir::new();
    work.write_config("", "");
    let out = init(&work, &["start"]);
    assert!(out.status.success(), "{}", text(&out));
    let (_, v) = status_json(&work);
    let before = v["daemon"]["instance"].as_str().unwrap().to_owned();
    let pid = v["pid"].as_i64().unwrap() as i32;
    let addr: SocketAddr = v["daemon"]["listen"][0].as_str().unwrap().parse().unwrap();

    let good = std::fs::read_to_string(work.config_path()).unwrap();
    std::fs::write(
        work.config_path(),
        good.replace("[smtp]\n", "[smtp]\nmax_recipients = \"many\"\n"),
    )
    .unwrap();
    for verb in ["restart", "graceful"] {
        let out = init(&work, &[verb]);
        assert_eq!(out.status.code(), Some(78), "{verb}: {}", text(&out));
        let said = text(&out);
        assert!(said.contains("refused"), "{said}");
        assert!(said.contains("untouched"), "{said}");
        assert!(said.contains("max_recipients"), "{said}");
    }
    // HUP with the bad file: the daemon refuses it too, and says so.
    signal(pid, Signal::SIGHUP);
    let log = work.queue().join("mtad.log");
    wait_until("the refusal in the daemon log", WAIT, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("restart refused"))
    });
    // The old server still serves.
    let mut c = Client::connect(addr);
    c.cmd("EHLO client.test", "250");
    let r = c.send_message("a@b.test", &["x@remote.test"], &message("still"));
    assert_eq!(r.head(), "250 2.0.0");

    std::fs::write(work.config_path(), good).unwrap();
    let (_, v) = status_json(&work);
    assert_eq!(v["daemon"]["instance"], before.as_str(), "the same image");
    assert_eq!(v["daemon"]["reloads"], 0);
    let out = init(&work, &["graceful"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(status_json(&work).1["daemon"]["reloads"], 1);
    let out = init(&work, &["stop"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// mtad relaying `remote.test` to a sink that takes `delay` over each
/// message's final reply.
fn slow_sink_config(work: &Workdir, sink: &Sink, drain: &str) {
    work.write_config(
        "",
        &format!(
            "[shutdown]\ntimeout = \"5s\"\ndrain_timeout = \"{drain}\"\n\
             [queue]\nretry_base = \"1s\"\nretry_jitter = 0.0\npoll_interval = \"100ms\"\n\
             [delivery]\nname_servers = [\"127.0.0.1:9\"]\n\
             [delivery.routes]\n\"remote.test\" = \"{}\"\n",
            sink.addr
        ),
    );
}

fn send_three(mtad: &Mtad, tag: &str) -> Vec<String> {
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let subjects: Vec<String> = (0..3).map(|i| format!("{tag} {i}")).collect();
    for s in &subjects {
        let r = c.send_message("a@b.test", &["x@remote.test"], &message(s));
        assert_eq!(r.head(), "250 2.0.0");
    }
    c.cmd("QUIT", "221");
    subjects
}

fn in_flight(work: &Workdir) -> u64 {
    let (_, v) = status_json(work);
    v["daemon"]["runners"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r["in_flight"].as_u64()).sum())
        .unwrap_or(0)
}

fn sink_subjects(sink: &Sink) -> Vec<String> {
    sink.messages()
        .iter()
        .filter_map(|m| {
            String::from_utf8_lossy(&m.data)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
        })
        .collect()
}

#[test]
fn stop_with_deliveries_in_flight_completes_or_defers_them_and_start_delivers_the_rest() {
    let sink = Sink::start_in_background(SinkConfig {
        data_delay: Duration::from_secs(2),
        ..SinkConfig::default()
    })
    .expect("sink");
    let work = Workdir::new();

    // A drain deadline long enough: the attempts in flight complete.
    slow_sink_config(&work, &sink, "20s");
    let mtad = Mtad::start(&work);
    let first = send_three(&mtad, "completes");
    wait_until("three attempts in flight", WAIT, || in_flight(&work) == 3);
    let out = init(&work, &["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("deliveries in flight") || text(&out).contains("stopped"));
    drop(mtad);
    assert!(
        spool_contents(&work.queue()).is_empty(),
        "all three completed"
    );
    for s in &first {
        assert!(sink_subjects(&sink).contains(s), "{s}");
    }

    // A short one: they are cut short and stay queued, deferred.
    slow_sink_config(&work, &sink, "200ms");
    let mtad = Mtad::start(&work);
    let second = send_three(&mtad, "deferred");
    wait_until("three attempts in flight", WAIT, || in_flight(&work) == 3);
    let out = init(&work, &["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    drop(mtad);
    assert_eq!(
        spool_contents(&work.queue()).len(),
        3,
        "cut short, still queued"
    );

    // After the next start, all are delivered.
    slow_sink_config(&work, &sink, "20s");
    let mtad = Mtad::start(&work);
    wait_until("the queue to empty", WAIT, || {
        status_json(&work).1["daemon"]["queued"] == 0
    });
    let got = sink_subjects(&sink);
    for s in &second {
        assert!(got.contains(s), "{s} never arrived: {got:?}");
    }
    drop(mtad);
}

#[test]
fn svc_and_pause_take_services_down_and_up_with_their_dependants() {
    let work = Workdir::new();
    work.write_config("", "");
    let mtad = Mtad::start(&work);
    let svc = |args: &[&str]| {
        let out = init(&work, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        text(&out)
    };
    let service = |name: &str| -> String {
        let (_, v) = status_json(&work);
        let rows = v["daemon"]["services"].as_array().unwrap().clone();
        let row = rows.iter().find(|s| s["name"] == name).expect(name);
        row["state"].as_str().unwrap().to_owned()
    };

    // Injection paused: a new connection hears 421 4.3.2; resumed: 220.
    svc(&["pause", "injection"]);
    assert_eq!(mtad.connect().banner.head(), "421 4.3.2");
    assert_eq!(service("smtp"), "paused");
    svc(&["resume", "injection"]);
    assert_eq!(mtad.connect().banner.code, 220);

    // The listener down: connections are refused; up again on the same
    // port.
    svc(&["svc", "down", "smtp"]);
    assert_eq!(
        TcpStream::connect(mtad.addr)
            .map(drop)
            .map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionRefused)
    );
    assert_eq!(service("smtp"), "down");
    svc(&["svc", "up", "smtp"]);
    assert_eq!(mtad.connect().banner.code, 220);

    // The HTTP server, restarted and taken down.
    let http = mtad.http.expect("http address");
    svc(&["svc", "restart", "http"]);
    assert!(TcpStream::connect(http).is_ok());
    svc(&["svc", "down", "http"]);
    assert!(TcpStream::connect(http).is_err());
    assert_eq!(service("http"), "down");
    svc(&["svc", "up", "http"]);
    assert!(TcpStream::connect(http).is_ok());

    // The spool down pauses its dependants: new mail hears 421, the
    // runners are down; up resumes them.
    let said = svc(&["svc", "down", "spool"]);
    assert!(said.contains("spool down"), "{said}");
    assert_eq!(mtad.connect().banner.head(), "421 4.3.2");
    assert_eq!(service("spool"), "down");
    assert_eq!(service("disk-runner"), "down");
    assert_eq!(service("ram-runner"), "down");
    svc(&["svc", "up", "spool"]);
    assert_eq!(service("disk-runner"), "up");
    assert_eq!(mtad.connect().banner.code, 220);

    // One runner down and up; a runner the operator took down stays down
    // when the spool comes back.
    svc(&["svc", "down", "disk"]);
    svc(&["svc", "down", "spool"]);
    svc(&["svc", "up", "spool"]);
    assert_eq!(service("disk-runner"), "down");
    assert_eq!(service("ram-runner"), "up");
    svc(&["svc", "up", "disk"]);
    assert_eq!(service("disk-runner"), "up");

    let out = init(&work, &["svc", "down", "nonesuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("the services are"), "{}", text(&out));
    drop(mtad);
}

#[test]
fn reopen_logs_reopens_the_daemon_log() {
    let work = Workdir::new();
    work.write_config("", "");
    let out = init(&work, &["start"]);
    assert!(out.status.success(), "{}", text(&out));
    let log = work.queue().join("mtad.log");
    let rotated = work.queue().join("mtad.log.1");
    wait_until("the daemon log", WAIT, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("ready"))
    });
    std::fs::rename(&log, &rotated).unwrap();
    let out = init(&work, &["reopen-logs"]);
    assert!(out.status.success(), "{}", text(&out));
    // The stop is written to the new file.
    let out = init(&work, &["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    let new = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(new.contains("stopped cleanly"), "{new}");
    assert!(!std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("stopped cleanly"));
    // Not running: nothing to reopen, still success (for logrotate).
    let out = init(&work, &["reopen-logs"]);
    assert!(out.status.success(), "{}", text(&out));
}
