//! mta-init whose reader goes away (`mta-init status | head -1`): it ends
//! quietly, with its own exit code, never a panic (exit 101 and a
//! backtrace), and does what it was asked to.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{bin, init, message, status_json, text, Client, Mtad, Workdir};

/// A pipe whose reading end is already closed: every write to the other
/// end fails with EPIPE, as after `| head -1` has read its line.
fn pipe_without_reader() -> Stdio {
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    drop(reader);
    Stdio::from(writer)
}

fn command(work: &Workdir, args: &[&str]) -> Command {
    let mut c = Command::new(bin("mta-init"));
    c.arg("--config")
        .arg(work.config_path())
        .args(args)
        .env_remove("MTA_CONFIG");
    c
}

/// `mta-init ARGS` writing into a pipe nobody reads.
fn into_closed_pipe(work: &Workdir, args: &[&str]) -> Output {
    command(work, args)
        .stdout(pipe_without_reader())
        .stderr(Stdio::piped())
        .output()
        .expect("run mta-init")
}

fn assert_quiet(args: &[&str], o: &Output, code: i32) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{args:?}: {err}"
    );
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
}

/// Queues `n` messages with three recipients each (they stay queued).
fn queue_messages(mtad: &Mtad, n: usize) {
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let to = ["x@remote.test", "y@remote.test", "z@remote.test"];
    for i in 0..n {
        let r = c.send_message("a@b.test", &to, &message(&format!("m{i}")));
        assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    }
    c.cmd("QUIT", "221");
}

/// Issue 10, point 9: `mta-init status | head -1` ended with exit 101 and
/// `failed printing to stdout: Broken pipe`.
#[test]
fn every_command_ends_quietly_when_its_reader_is_gone() {
    let work = Workdir::new();
    work.write_config("", "");
    let mut mtad = Mtad::start(&work);
    queue_messages(&mtad, 3);
    let id = {
        let o = init(&work, &["queue", "list", "--json"]);
        let first = String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .map(str::to_owned)
            .expect("a listed message");
        serde_json::from_str::<serde_json::Value>(&first).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    for (args, code) in [
        (&["configtest"][..], 0),
        (&["status"], 0),
        (&["status", "--json"], 0),
        (&["queue", "list"], 0),
        (&["queue", "list", "--json"], 0),
        (&["queue", "summary"], 0),
        (&["queue", "summary", "--json"], 0),
        (&["queue", "show", &id], 0),
        (&["queue", "show", "--json", &id], 0),
        (&["queue", "flush", "--all"], 0),
        (&["pause", "delivery"], 0),
        (&["resume", "delivery"], 0),
        (&["reopen-logs"], 0),
    ] {
        let o = into_closed_pipe(&work, args);
        assert_quiet(args, &o, code);
    }
    // A stop whose reader is gone still stops, and says nothing.
    let o = into_closed_pipe(&work, &["stop", "--wait", "30"]);
    assert_quiet(&["stop"], &o, 0);
    assert!(mtad.wait_exit().success());
    let o = into_closed_pipe(&work, &["status"]);
    assert_quiet(&["status"], &o, 3);
}

/// A listing bigger than a pipe's buffer, whose reader leaves after one
/// line: mta-init stops fetching pages and exits 0, and the daemon goes
/// on answering.
#[test]
fn a_long_listing_stops_when_its_reader_leaves() {
    let work = Workdir::new();
    work.write_config("", "");
    let mtad = Mtad::start(&work);
    queue_messages(&mtad, 250);
    for json in [false, true] {
        let mut args = vec!["queue", "list", "--page", "10"];
        if json {
            args.push("--json");
        }
        let mut child = command(&work, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mta-init");
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        lines.read_line(&mut first).unwrap();
        assert!(!first.is_empty(), "{args:?}: no output");
        drop(lines);
        let began = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "{args:?}: mta-init did not end after its reader left"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let o = Output {
            status,
            stdout: Vec::new(),
            stderr: {
                let mut err = Vec::new();
                std::io::Read::read_to_end(&mut child.stderr.take().unwrap(), &mut err).unwrap();
                err
            },
        };
        assert_quiet(&args, &o, 0);
    }
    let (code, v) = status_json(&work);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["daemon"]["queued"], 250, "{v}");
    let o = init(&work, &["queue", "list", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 250);
    assert_eq!(Client::connect(mtad.addr).banner.code, 220);
}
