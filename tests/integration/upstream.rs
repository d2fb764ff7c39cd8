//! Issue 4: upstream MTAs retry during downtime, with Debian's Postfix as
//! the real upstream. Postfix (a private instance on loopback) relays to
//! mtad, which mta-init starts and stops on one fixed port; mtad routes
//! the mail on to a sink. While mtad is down, Postfix defers; once it is
//! back and Postfix's queue is flushed, every message reaches the sink
//! exactly once. Nothing leaves loopback: Postfix does no DNS, and mtad's
//! only destination is a configured route to the sink's address.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mta_testkit::sink::{Sink, SinkConfig};

use crate::postfix::{free_port, skip_without_postfix, PrivatePostfix};
use crate::util::{bin, wait_until, Workdir};

/// Generous bounds for a shared 2-core CI machine; a normal run takes a
/// fraction of them.
const WAIT: Duration = Duration::from_secs(30);

/// Messages per phase.
const N: usize = 20;

const FROM: &str = "alice@upstream.test";
const TO: &str = "bob@final.test";

/// mtad under mta-init, on a fixed port; stopped on drop, killed if the
/// clean stop does not work.
struct InitMtad<'a> {
    work: &'a Workdir,
    port: u16,
    /// The PID of the last start, to kill it if a stop does not work.
    pid: Cell<Option<i32>>,
}

impl<'a> InitMtad<'a> {
    /// Writes the config for `port` and starts mtad; None when the port
    /// was taken (the caller picks another one).
    fn start_on(work: &'a Workdir, port: u16, sink: SocketAddr) -> Option<InitMtad<'a>> {
        work.write_config(
            "",
            &format!(
                "[smtp]\nlisten = [\"127.0.0.1:{port}\"]\n\
                 [delivery]\nname_servers = [\"127.0.0.1:9\"]\ndns_timeout = \"1s\"\nidle_connection_timeout = \"1s\"\n\
                 [delivery.routes]\n\"final.test\" = \"{sink}\"\n\
                 [delivery.timeouts]\nconnect = \"5s\"\ngreeting = \"10s\"\nehlo = \"10s\"\nmail = \"10s\"\nrcpt = \"10s\"\ndata_init = \"10s\"\ndata_block = \"10s\"\ndata_end = \"10s\"\nquit = \"5s\"\n\
                 [queue]\nretry_base = \"1s\"\npoll_interval = \"100ms\"\n\
                 [shutdown]\ntimeout = \"5s\"\ndrain_timeout = \"5s\"\n"
            ),
        );
        let mtad = InitMtad {
            work,
            port,
            pid: Cell::new(None),
        };
        match mtad.try_start() {
            Ok(()) => Some(mtad),
            Err(e) if e.contains("cannot listen") => None,
            Err(e) => panic!("mta-init start failed: {e}"),
        }
    }

    /// Starts mtad on a free port.
    fn start(work: &'a Workdir, sink: SocketAddr) -> InitMtad<'a> {
        for _ in 0..10 {
            if let Some(m) = InitMtad::start_on(work, free_port(), sink) {
                return m;
            }
        }
        panic!("no free port for mtad");
    }

    fn try_start(&self) -> Result<(), String> {
        let o = self.init(&["start", "--wait", "30"]);
        // "starting mtad (pid N), log in ...", printed before the wait.
        if let Some(pid) = text(&o)
            .split("starting mtad (pid ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|pid| pid.parse().ok())
        {
            self.pid.set(Some(pid));
        }
        if o.status.success() {
            Ok(())
        } else {
            Err(text(&o))
        }
    }

    /// Starts mtad again on the same port; retries (bounded) while the
    /// port is still held by the previous run.
    fn restart(&self) {
        let began = Instant::now();
        loop {
            match self.try_start() {
                Ok(()) => return,
                Err(e) if e.contains("cannot listen") && began.elapsed() < WAIT => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("mta-init start (again, port {}) failed: {e}", self.port),
            }
        }
    }

    fn stop(&self) {
        let o = self.init(&["stop", "--wait", "30"]);
        assert!(
            o.status.success(),
            "mta-init stop: {}\n--- mtad log ---\n{}",
            text(&o),
            self.log()
        );
        assert!(text(&o).contains("mtad stopped"), "{}", text(&o));
    }

    fn queued(&self) -> u64 {
        let o = self.init(&["status", "--json"]);
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
        v["daemon"]["queued"]
            .as_u64()
            .unwrap_or_else(|| panic!("no daemon.queued: {v}"))
    }

    fn init(&self, args: &[&str]) -> Output {
        Command::new(bin("mta-init"))
            .arg("--config")
            .arg(self.work.config_path())
            .args(args)
            .env_remove("MTA_CONFIG")
            .output()
            .expect("run mta-init")
    }

    /// The daemon's own log (stdout and stderr), for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(self.work.queue().join("mtad.log")).unwrap_or_default()
    }
}

impl Drop for InitMtad<'_> {
    fn drop(&mut self) {
        let _ = self.init(&["stop", "--wait", "20"]);
        // A stop that did not work (or a start that timed out): kill the
        // process we started, if it is still that mtad.
        if let Some(pid) = self.pid.get() {
            let ours = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| cmd.contains(&*self.work.config_path().to_string_lossy()));
            if ours {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A message whose Message-ID and Subject name it.
fn message(phase: &str, n: usize) -> (String, String) {
    let id = format!("{phase}-{n}@upstream.test");
    let content = format!(
        "From: <{FROM}>\r\nTo: <{TO}>\r\nMessage-ID: <{id}>\r\nSubject: upstream {phase} {n}\r\n\r\nHello from phase {phase}, message {n}.\r\n"
    );
    (id, content)
}

/// The Message-IDs the sink received, in order of arrival (duplicates kept).
fn received_ids(sink: &Sink) -> Vec<String> {
    sink.messages()
        .iter()
        .map(|m| {
            assert_eq!(m.rcpt_to, vec![TO.to_owned()]);
            assert_eq!(m.mail_from, FROM);
            let parsed = mail_parser::MessageParser::default()
                .parse(&m.data[..])
                .expect("the sink's message parses");
            parsed
                .message_id()
                .unwrap_or_else(|| panic!("no Message-ID in {}", String::from_utf8_lossy(&m.data)))
                .to_owned()
        })
        .collect()
}

#[test]
fn postfix_retries_while_mtad_is_down_and_every_message_arrives_once() {
    if skip_without_postfix("postfix_retries_while_mtad_is_down_and_every_message_arrives_once") {
        return;
    }
    let began = Instant::now();
    // Declared first, dropped last: the sink, the folders.
    let sink = Sink::start_in_background(SinkConfig {
        addr: SocketAddr::from(([127, 0, 0, 2], 0)),
        ..SinkConfig::default()
    })
    .expect("sink");
    let work = Workdir::new();
    let pf_dir = tempfile::Builder::new()
        .prefix("mta-it-postfix-")
        .tempdir()
        .expect("tempdir");

    let mtad = InitMtad::start(&work, sink.addr);
    let pf = PrivatePostfix::start_on_free_port(
        pf_dir.path(),
        &format!("[127.0.0.1]:{}", mtad.port),
        "",
    );
    let context = |what: &str| {
        format!(
            "{what}\n--- Postfix maillog ---\n{}\n--- mtad log ---\n{}",
            pf.maillog(),
            mtad.log()
        )
    };

    // 1. mtad up: the chain works (and Postfix's processes are warm).
    let (warm_ids, warm): (Vec<String>, Vec<String>) = (0..N).map(|n| message("warm", n)).unzip();
    let warm_queue_ids = pf.submit(FROM, TO, &warm);
    let got = sink.wait_for_messages_blocking(N, WAIT);
    assert_eq!(
        got.len(),
        N,
        "{}",
        context("the warm-up did not reach the sink")
    );
    // Done in mtad too before it stops, so that a stop cannot race a
    // delivery the sink already has.
    wait_until("mtad's queue to empty", WAIT, || mtad.queued() == 0);
    wait_until("Postfix's queue to empty", WAIT, || pf.queue_len() == 0);

    // 2. mtad down: Postfix accepts and defers.
    mtad.stop();
    let (down_ids, down): (Vec<String>, Vec<String>) = (0..N).map(|n| message("down", n)).unzip();
    let down_queue_ids = pf.submit(FROM, TO, &down);
    let not_deferred = || {
        down_queue_ids
            .iter()
            .filter(|id| !pf.statuses(id).iter().any(|(s, _)| s == "deferred"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + WAIT;
    let undeferred = loop {
        let left = not_deferred();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        undeferred.is_empty(),
        "{}",
        context(&format!("Postfix logged no deferral for {undeferred:?}"))
    );
    for id in &down_queue_ids {
        let statuses = pf.statuses(id);
        assert!(
            statuses.iter().all(|(s, _)| s == "deferred"),
            "{}",
            context(&format!(
                "{id} left Postfix while mtad was down: {statuses:?}"
            ))
        );
    }
    let queued: BTreeSet<String> = pf
        .queue()
        .iter()
        .map(|m| m["queue_id"].as_str().expect("queue_id").to_owned())
        .collect();
    assert_eq!(
        queued,
        down_queue_ids.iter().cloned().collect::<BTreeSet<_>>(),
        "Postfix's queue holds exactly the messages sent while mtad was down"
    );
    assert_eq!(sink.messages().len(), N, "mail arrived while mtad was down");

    // 3. mtad back on the same port; Postfix retries at once.
    mtad.restart();
    pf.flush();
    let got = sink.wait_for_messages_blocking(2 * N, WAIT);
    assert_eq!(
        got.len(),
        2 * N,
        "{}",
        context("the deferred messages did not all arrive after the restart")
    );
    wait_until("Postfix's queue to empty", WAIT, || pf.queue_len() == 0);
    wait_until("mtad's queue to empty", WAIT, || mtad.queued() == 0);

    // 4. Exactly once: both queues are empty, so nothing more can come.
    let mut received = received_ids(&sink);
    assert_eq!(received.len(), 2 * N, "duplicates: {received:?}");
    received.sort();
    let mut sent: Vec<String> = warm_ids.iter().chain(&down_ids).cloned().collect();
    sent.sort();
    assert_eq!(
        received, sent,
        "the sink's messages are not the ones sent, once each"
    );
    // Postfix agrees: one successful hand-over per message, to mtad.
    let relay = format!("relay=127.0.0.1[127.0.0.1]:{}", mtad.port);
    for id in warm_queue_ids.iter().chain(&down_queue_ids) {
        let sent: Vec<_> = pf
            .statuses(id)
            .into_iter()
            .filter(|(s, _)| s == "sent")
            .collect();
        assert_eq!(sent.len(), 1, "{}", context(&format!("{id}: {sent:?}")));
        assert!(sent[0].1.contains(&relay), "{}", sent[0].1);
    }

    mtad.stop();
    drop(pf);
    eprintln!(
        "upstream: {} messages through Postfix and mtad in {:.1} s",
        2 * N,
        began.elapsed().as_secs_f64()
    );
}
