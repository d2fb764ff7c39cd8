//! mta-init against the real binaries: start, status, stop, stale PID
//! files, refusals, and a stop that lets open transactions finish.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::util::{
    bin, init, message, spool_contents, status_json, text, Client, Workdir, IO_TIMEOUT,
};

fn smtp_addr(work: &Workdir) -> SocketAddr {
    let (_, v) = status_json(work);
    v["daemon"]["listen"][0]
        .as_str()
        .expect("listen address")
        .parse()
        .unwrap()
}

/// Stops whatever a test started, even when it fails half-way.
struct StopOnDrop<'a>(&'a Workdir);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        // The PID before the stop: if the stop fails (the bug under test,
        // say), the daemon must not outlive the test.
        let pid = std::fs::read_to_string(self.0.queue().join("mtad.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        let stopped = init(self.0, &["stop", "--wait", "20"]).status.success();
        if let (false, Some(pid)) = (stopped, pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn start_status_stop_status() {
    let work = Workdir::new();
    work.write_config("", "");
    let _guard = StopOnDrop(&work);

    let o = init(&work, &["start"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("OVERALL STATUS: up"), "{}", text(&o));
    let pid_file = work.queue().join("mtad.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let o = init(&work, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    for want in ["SERVICES", "smtp", "spool", "QUEUE", "OVERALL STATUS: up"] {
        assert!(t.contains(want), "status lacks {want}:\n{t}");
    }
    let (code, v) = status_json(&work);
    assert_eq!(code, 0);
    assert_eq!(v["overall"], "up");
    assert_eq!(v["pid"], pid);

    // A second start refuses and leaves the first alone.
    let o = init(&work, &["start"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("already running"), "{}", text(&o));

    // Mail goes in, then a clean stop.
    let mut c = Client::connect(smtp_addr(&work));
    c.cmd("EHLO client.test", "250");
    assert_eq!(
        c.send_message("a@b.test", &["x@remote.test"], &message("before stop"))
            .head(),
        "250 2.0.0"
    );
    c.cmd("QUIT", "221");

    let o = init(&work, &["stop"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("mtad stopped"), "{}", text(&o));
    assert!(!pid_file.exists(), "PID file left behind");
    let o = init(&work, &["status"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("OVERALL STATUS: down"));
    // Stopping what is stopped is not an error.
    assert!(init(&work, &["stop"]).status.success());
    assert_eq!(spool_contents(&work.queue()).len(), 1);
}

#[test]
fn stale_pid_file_is_reported_then_replaced() {
    let work = Workdir::new();
    work.write_config("", "");
    let _guard = StopOnDrop(&work);
    std::fs::create_dir_all(work.queue()).unwrap();
    // The PID of a process that has exited.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(work.queue().join("mtad.pid"), format!("{dead_pid}\n")).unwrap();

    let o = init(&work, &["status"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("dead but PID file"), "{}", text(&o));
    let (code, v) = status_json(&work);
    assert_eq!((code, v["overall"].as_str()), (1, Some("down")));

    let o = init(&work, &["start"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("stale PID file"), "{}", text(&o));
    assert_eq!(init(&work, &["status"]).status.code(), Some(0));
}

#[test]
fn failed_start_reports_the_daemons_own_error() {
    let work = Workdir::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    work.write_config("", &format!("[smtp]\nlisten = [\"127.0.0.1:{port}\"]\n"));
    let o = init(&work, &["start"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("failed to start") && t.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{t}"
    );
    assert_eq!(init(&work, &["status"]).status.code(), Some(3));
}

#[test]
fn bad_config_is_a_clear_error_with_line_and_column() {
    let work = Workdir::new();
    std::fs::write(work.config_path(), "[smtp]\nmax_recipents = 5\n").unwrap();
    let o = init(&work, &["start"]);
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("mta.toml") && t.contains("line 2, column 1") && t.contains("max_recipents"),
        "{t}"
    );
}

#[test]
fn stop_lets_an_open_transaction_finish_then_says_421() {
    let work = Workdir::new();
    work.write_config("", "[shutdown]\ntimeout = \"20s\"\n");
    let _guard = StopOnDrop(&work);
    assert!(init(&work, &["start"]).status.success());
    let addr = smtp_addr(&work);

    let mut busy = Client::connect(addr);
    busy.cmd("EHLO client.test", "250");
    busy.cmd("MAIL FROM:<a@b.test>", "250");
    busy.cmd("RCPT TO:<x@remote.test>", "250");
    let mut idle = Client::connect(addr);
    idle.cmd("EHLO client.test", "250");

    // mta-init stop, its output read line by line as it comes.
    let mut stopper = Command::new(bin("mta-init"))
        .arg("--config")
        .arg(work.config_path())
        .arg("stop")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = BufReader::new(stopper.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    // The idle session is told at once.
    let r = idle.reply();
    assert_eq!(r.head(), "421 4.3.2", "{}", r.text());
    // The stop has begun: a new connection is told to come back later.
    let mut late = Client::connect(addr);
    assert_eq!(late.banner.head(), "421 4.3.2", "{}", late.banner.text());
    assert!(late.is_closed());
    // mta-init says what the stop waits for: the open transaction.
    let mut said = Vec::new();
    while !said.iter().any(|l: &String| l.contains("waiting:")) {
        let line = lines
            .recv_timeout(IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("no progress line ({e}); said so far: {said:?}"));
        said.push(line);
    }
    let waiting = said.last().unwrap();
    assert!(waiting.contains("1 in a transaction"), "{waiting}");
    // The transaction in progress still completes and gets its 250.
    busy.cmd("DATA", "354");
    busy.send(message("finished during stop").as_bytes());
    busy.send(b".\r\n");
    assert_eq!(busy.reply().head(), "250 2.0.0");
    assert_eq!(busy.reply().head(), "421 4.3.2");
    assert!(busy.is_closed());

    let status = stopper.wait().unwrap();
    said.extend(lines.iter());
    assert!(status.success(), "{said:?}");
    assert!(
        said.iter().any(|l| l.starts_with("mtad stopped in")),
        "{said:?}"
    );
    let stored = spool_contents(&work.queue());
    assert_eq!(stored.len(), 1);
}

#[test]
fn stop_deadline_closes_sessions_that_do_not_finish() {
    let work = Workdir::new();
    work.write_config("", "[shutdown]\ntimeout = \"500ms\"\n");
    let _guard = StopOnDrop(&work);
    assert!(init(&work, &["start"]).status.success());
    let mut stuck = Client::connect(smtp_addr(&work));
    stuck.cmd("EHLO client.test", "250");
    stuck.cmd("MAIL FROM:<a@b.test>", "250");
    stuck.cmd("RCPT TO:<x@remote.test>", "250");
    stuck.cmd("DATA", "354");
    stuck.send(b"Subject: never finished\r\n\r\npartial");
    let o = init(&work, &["stop"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(stuck.reply().head(), "421 4.3.2");
    // Nothing half-received was kept.
    assert!(spool_contents(&work.queue()).is_empty());
}

#[test]
fn configtest_says_syntax_ok_or_lists_every_error_with_its_place() {
    let work = Workdir::new();
    work.write_config("", "");
    let o = init(&work, &["configtest"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "Syntax OK");

    std::fs::write(work.config_path(), "[smtp]\nlisten = []\nmax_errors = 0\n").unwrap();
    let o = init(&work, &["configtest"]);
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    let t = text(&o);
    let file = work.config_path().display().to_string();
    assert!(t.contains(&format!("{file}:2:1: smtp.listen")), "{t}");
    assert!(t.contains(&format!("{file}:3:1: smtp.max_errors")), "{t}");
}
